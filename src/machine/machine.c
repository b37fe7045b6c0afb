/*
 * machine.c: the FyMachine object: creation, run control (start, stop,
 * run_until), device registration, state dump and statistics. See
 * machine.h for the lifecycle and machine-int.h for threads and locks.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "machine/machine-int.h"

static void cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

static int machine_check_config(const FyMachineConfig *c, FyError **errp)
{
    if (c->vcpus < 1 || c->vcpus > FY_MACHINE_MAX_VCPUS) {
        fy_error_setg(errp, "machine: %d vCPUs (1..%d)", c->vcpus, FY_MACHINE_MAX_VCPUS);
        return -1;
    }
    if ((unsigned)c->workload > FY_WORKLOAD_HOTSPOT) {
        fy_error_setg(errp, "machine: unknown workload %d", (int)c->workload);
        return -1;
    }
    if ((unsigned)c->dirty_track > FY_DIRTY_UFFD_WP) {
        fy_error_setg(errp, "machine: unknown dirty tracking %d", (int)c->dirty_track);
        return -1;
    }
    return 0;
}

static int machine_create_vcpus(FyMachine *m, FyError **errp)
{
    uint64_t total = m->gmap.end[m->nblocks - 1];
    uint64_t ws = m->cfg.working_set ? m->cfg.working_set / FY_TARGET_PAGE_SIZE : total;
    if (ws > total) {
        fy_error_setg(errp, "machine: working set of %" PRIu64 " bytes is larger "
                      "than RAM (%" PRIu64 " bytes)", m->cfg.working_set,
                      total * FY_TARGET_PAGE_SIZE);
        return -1;
    }
    m->ws_pages = ws;
    m->nvcpus = m->cfg.vcpus;
    m->vcpus = calloc((size_t)m->nvcpus, sizeof(FyVCpu));
    if (!m->vcpus) {
        fy_error_setg(errp, "machine: out of memory for %d vCPUs", m->nvcpus);
        return -1;
    }
    uint64_t n = (uint64_t)m->nvcpus;
    for (int i = 0; i < m->nvcpus; i++) {
        FyVCpu *v = &m->vcpus[i];
        uint64_t lo = ws * (uint64_t)i / n, hi = ws * (uint64_t)(i + 1) / n;
        fy_cpu_reset(v, &m->cfg, (uint32_t)i, lo, hi - lo);
        v->m = m;
        v->target = UINT64_MAX;
        v->parked = true;
    }
    for (int i = 0; i < m->nvcpus; i++) {
        int err = pthread_create(&m->vcpus[i].thread, NULL, fy_vcpu_thread, &m->vcpus[i]);
        if (err) {
            fy_error_setg_errno(errp, err, "machine: creating vCPU thread %d", i);
            return -1;
        }
        m->vcpus[i].thread_started = true;
    }
    return 0;
}

FyMachine *fy_machine_new(const FyMachineConfig *c, FyError **errp)
{
    if (machine_check_config(c, errp) < 0)
        return NULL;
    FyMachine *m = calloc(1, sizeof(*m));
    if (!m) {
        fy_error_setg(errp, "machine: out of memory");
        return NULL;
    }
    m->cfg = *c;
    m->cfg.serial[sizeof(m->cfg.serial) - 1] = '\0';
    pthread_mutex_init(&m->lock, NULL);
    cond_init_monotonic(&m->cond);
    pthread_cond_init(&m->parked_cond, NULL);
    pthread_mutex_init(&m->dev_lock, NULL);
    cond_init_monotonic(&m->dev_cond);
    fy_serial_reset(&m->serial);
    fy_clock_init(&m->clock);
    fy_timer_init(&m->timer, &m->clock);

    if (fy_machine_ram_create(m, errp) < 0)
        goto fail;
    m->dirty = fy_dirty_new(m->cfg.dirty_track, m->list.blocks, m->nblocks, errp);
    if (!m->dirty)
        goto fail;
    for (int i = 0; i < m->nblocks; i++)
        m->gmap.soft[i] = m->dirty->soft[i];
    m->chr = fy_chardev_open(m->cfg.serial, errp);
    if (!m->chr)
        goto fail;
    if (machine_create_vcpus(m, errp) < 0)
        goto fail;
    int err = pthread_create(&m->io_thread, NULL, fy_iothread, m);
    if (err) {
        fy_error_setg_errno(errp, err, "machine: creating the I/O thread");
        goto fail;
    }
    m->io_started = true;
    return m;

fail:
    fy_machine_free(m);
    return NULL;
}

void fy_machine_free(FyMachine *m)
{
    if (!m)
        return;
    fy_machine_stop(m, NULL);
    pthread_mutex_lock(&m->lock);
    m->quit = true;
    atomic_store(&m->go, false);
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    for (int i = 0; m->vcpus && i < m->nvcpus; i++) {
        if (m->vcpus[i].thread_started)
            pthread_join(m->vcpus[i].thread, NULL);
    }
    pthread_mutex_lock(&m->dev_lock);
    m->io_quit = true;
    pthread_cond_broadcast(&m->dev_cond);
    pthread_mutex_unlock(&m->dev_lock);
    fy_chardev_shutdown(m->chr);
    if (m->io_started)
        pthread_join(m->io_thread, NULL);
    fy_chardev_close(m->chr);
    fy_dirty_free(m->dirty); /* also undoes uffd write-protection */
    fy_machine_ram_destroy(m);
    free(m->vcpus);
    fy_clock_destroy(&m->clock);
    pthread_cond_destroy(&m->dev_cond);
    pthread_mutex_destroy(&m->dev_lock);
    pthread_cond_destroy(&m->parked_cond);
    pthread_cond_destroy(&m->cond);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

const FyMachineConfig *fy_machine_config(const FyMachine *m)
{
    return &m->cfg;
}

/* ---- run control ---- */

static void devices_start(FyMachine *m)
{
    pthread_mutex_lock(&m->dev_lock);
    if (!m->dev_running) {
        fy_clock_start(&m->clock);
        fy_serial_vm_start(&m->serial, fy_host_ns());
        m->dev_running = true;
        pthread_cond_broadcast(&m->dev_cond);
    }
    pthread_mutex_unlock(&m->dev_lock);
}

static void devices_stop(FyMachine *m)
{
    pthread_mutex_lock(&m->dev_lock);
    if (m->dev_running) {
        m->dev_running = false;
        fy_clock_stop(&m->clock);
        /* What the guest would read from the count register now. */
        m->timer.count = fy_timer_count(&m->timer, fy_clock_get_ns(&m->clock));
    }
    pthread_mutex_unlock(&m->dev_lock);
}

static bool all_parked_locked(const FyMachine *m)
{
    for (int i = 0; i < m->nvcpus; i++) {
        if (!m->vcpus[i].parked)
            return false;
    }
    return true;
}

int fy_machine_start(FyMachine *m, FyError **errp)
{
    pthread_mutex_lock(&m->lock);
    if (m->running) {
        pthread_mutex_unlock(&m->lock);
        return 0;
    }
    devices_start(m);
    m->running = true;
    atomic_store(&m->go, true);
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

int fy_machine_stop(FyMachine *m, FyError **errp)
{
    pthread_mutex_lock(&m->lock);
    m->running = false;
    atomic_store(&m->go, false);
    pthread_cond_broadcast(&m->cond);
    pthread_cond_broadcast(&m->parked_cond); /* run_until waiters notice */
    while (!all_parked_locked(m))
        pthread_cond_wait(&m->parked_cond, &m->lock);
    devices_stop(m);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

bool fy_machine_is_running(FyMachine *m)
{
    pthread_mutex_lock(&m->lock);
    bool r = m->running;
    pthread_mutex_unlock(&m->lock);
    return r;
}

static bool all_reached_locked(FyMachine *m, uint64_t steps)
{
    for (int i = 0; i < m->nvcpus; i++) {
        FyVCpu *v = &m->vcpus[i];
        if (!v->parked || atomic_load(&v->steps_pub) < steps)
            return false;
    }
    return true;
}

int fy_machine_run_until(FyMachine *m, uint64_t steps, FyError **errp)
{
    pthread_mutex_lock(&m->lock);
    if (m->running) {
        pthread_mutex_unlock(&m->lock);
        fy_error_setg(errp, "run_until: the machine is running; stop it first");
        return -1;
    }
    for (int i = 0; i < m->nvcpus; i++) {
        uint64_t s = atomic_load(&m->vcpus[i].steps_pub);
        if (s > steps) {
            pthread_mutex_unlock(&m->lock);
            fy_error_setg(errp, "run_until %" PRIu64 ": vCPU %d is already at step %"
                          PRIu64, steps, i, s);
            return -1;
        }
    }
    for (int i = 0; i < m->nvcpus; i++)
        m->vcpus[i].target = steps;
    pthread_mutex_unlock(&m->lock);

    fy_machine_start(m, NULL);
    int ret = 0;
    pthread_mutex_lock(&m->lock);
    while (m->running && !all_reached_locked(m, steps))
        pthread_cond_wait(&m->parked_cond, &m->lock);
    if (!m->running) {
        fy_error_setg(errp, "run_until %" PRIu64 ": the machine was stopped first",
                      steps);
        ret = -1;
    }
    pthread_mutex_unlock(&m->lock);
    fy_machine_stop(m, NULL);
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < m->nvcpus; i++)
        m->vcpus[i].target = UINT64_MAX;
    pthread_mutex_unlock(&m->lock);
    return ret;
}

void fy_machine_quiesce_batches(FyMachine *m)
{
    for (int i = 0; i < m->nvcpus; i++) {
        FyVCpu *v = &m->vcpus[i];
        uint64_t s = atomic_load(&v->batch_seq);
        if (!(s & 1))
            continue;
        while (atomic_load(&v->batch_seq) == s)
            sched_yield();
    }
}

/* ---- queries ---- */

int fy_machine_vcpu_count(const FyMachine *m)
{
    return m->nvcpus;
}

uint64_t fy_machine_vcpu_steps(FyMachine *m, int vcpu)
{
    if (vcpu < 0 || vcpu >= m->nvcpus)
        return 0;
    return atomic_load(&m->vcpus[vcpu].steps_pub);
}

uint64_t fy_machine_clock_ns(FyMachine *m)
{
    return fy_clock_get_ns(&m->clock);
}

void fy_machine_get_stats(FyMachine *m, FyMachineStats *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < m->nvcpus; i++) {
        FyVCpu *v = &m->vcpus[i];
        out->steps += atomic_load(&v->steps_pub);
        out->stores += atomic_load(&v->stat_stores);
        out->throttle_ns += atomic_load(&v->stat_throttle_ns);
        out->pace_ns += atomic_load(&v->stat_pace_ns);
        out->run_ns += atomic_load(&v->stat_run_ns);
    }
    pthread_mutex_lock(&m->dev_lock);
    out->serial_bytes = m->serial.sent;
    out->timer_fired = m->timer.fired;
    pthread_mutex_unlock(&m->dev_lock);
}

FyRamList *fy_machine_ram_list(FyMachine *m)
{
    return &m->list;
}

/* ---- device state ---- */

int fy_machine_register_state(FyMachine *m, FySaveState *ss, FyError **errp)
{
    for (int i = 0; i < m->nvcpus; i++) {
        if (fy_register_vmstate(ss, "cpu", i, &vmstate_cpu, &m->vcpus[i], errp) < 0)
            return -1;
    }
    /* The clock before the timer: the timer's post_load checks its deadline
     * against the loaded guest time. */
    if (fy_register_vmstate(ss, "serial", 0, &vmstate_serial, &m->serial, errp) < 0 ||
        fy_register_vmstate(ss, "clock", 0, &vmstate_clock, &m->clock, errp) < 0 ||
        fy_register_vmstate(ss, "ferry-timer", 0, &vmstate_ferry_timer, &m->timer,
                            errp) < 0)
        return -1;
    return 0;
}

json_t *fy_machine_state_json(FyMachine *m)
{
    if (fy_machine_is_running(m))
        return NULL;
    json_t *o = json_object();
    json_t *cpus = json_array();
    if (!o || !cpus)
        goto oom;
    json_object_set_new(o, "cpu", cpus);
    for (int i = 0; i < m->nvcpus; i++) {
        json_t *c = vmstate_to_json(&vmstate_cpu, &m->vcpus[i]);
        if (!c || json_array_append_new(cpus, c) < 0)
            goto oom;
    }
    json_t *s = vmstate_to_json(&vmstate_serial, &m->serial);
    json_t *c = vmstate_to_json(&vmstate_clock, &m->clock);
    json_t *t = vmstate_to_json(&vmstate_ferry_timer, &m->timer);
    if (json_object_set_new(o, "serial", s) < 0 ||
        json_object_set_new(o, "clock", c) < 0 ||
        json_object_set_new(o, "ferry-timer", t) < 0)
        goto oom;
    return o;
oom:
    json_decref(o);
    return NULL;
}
