/*
 * dirtylimit.c: per-vCPU dirty page limits (QEMU's set-vcpu-dirty-limit,
 * cancel-vcpu-dirty-limit, query-vcpu-dirty-limit and the dirty-limit
 * capability's use of them).
 *
 * The VM enforces a limit (FyVMOps.set_dirty_limit: the vCPU's writes are
 * paced at that many MB/s), so a vCPU that does not write is never slowed,
 * unlike CPU throttling. This file keeps the table of limits, and while any
 * limit is set ("in service") a sampler thread reads each vCPU's dirty
 * counter (fy_dirtyrate_vcpu_pages) every x-vcpu-dirty-limit-period ms to
 * report current rates (it then runs until the FyDirtyLimit is freed).
 *
 *   limit table   v[i].limit MB/s (0 = none), v[i].by_mig: set by the
 *                 dirty-limit capability, removed when the migration ends
 *   rates         v[i].rate: MB/s over the last period; v[i].natural: the
 *                 last rate seen while the vCPU had no limit
 *
 * QEMU's query-migrate members, which it derives from the KVM dirty ring,
 * are derived here the same way with a ring of 4096 pages (16 MiB):
 *   dirty-limit-ring-full-time      time to fill a ring at the highest
 *                                   rate seen: 16 MiB / rate (us)
 *   dirty-limit-throttle-time-per-round
 *                                   the most any vCPU sleeps per ring-full
 *                                   round to hold its limit: 16 MiB / limit
 *                                   - 16 MiB / natural rate (us)
 *
 * Locks: mu guards everything; the VM hook is called with mu held (it only
 * stores a number), the dirty counter without it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "migration/converge.h"

#define MAX_VCPUS 4096
#define RING_MIB 16ull      /* 4096 pages of 4 KiB */

typedef struct VcpuLimit {
    uint64_t limit;         /* MB/s, 0 = none */
    bool by_mig;
    uint64_t rate;          /* MB/s, last period */
    uint64_t natural;       /* MB/s, last period without a limit */
    uint64_t last_pages;
    bool have_last;
} VcpuLimit;

struct FyDirtyLimit {
    const FyVMOps *vm;
    void *vm_opaque;
    FyDirtyRate *dr;

    pthread_mutex_t mu;
    pthread_cond_t cond;       /* CLOCK_MONOTONIC */
    int n;
    VcpuLimit *v;
    uint64_t period_ms;
    uint64_t max_rate;
    uint64_t last_ms;
    bool thread_on, quit;
    pthread_t thread;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

FyDirtyLimit *fy_dirtylimit_new(const FyVMOps *vm, void *vm_opaque,
                                FyDirtyRate *dr)
{
    FyDirtyLimit *dl = calloc(1, sizeof(*dl));
    if (!dl)
        return NULL;
    dl->vm = vm;
    dl->vm_opaque = vm_opaque;
    dl->dr = dr;
    dl->period_ms = 1000;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&dl->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&dl->mu, NULL);
    return dl;
}

void fy_dirtylimit_free(FyDirtyLimit *dl)
{
    if (!dl)
        return;
    pthread_mutex_lock(&dl->mu);
    dl->quit = true;
    pthread_cond_broadcast(&dl->cond);
    bool join = dl->thread_on;
    pthread_mutex_unlock(&dl->mu);
    if (join)
        pthread_join(dl->thread, NULL);
    pthread_cond_destroy(&dl->cond);
    pthread_mutex_destroy(&dl->mu);
    free(dl->v);
    free(dl);
}

bool fy_dirtylimit_supported(FyDirtyLimit *dl)
{
    return dl->vm && dl->vm->set_dirty_limit;
}

/* The table, sized from the VM's vCPU count the first time (mu held). */
static int ensure_table(FyDirtyLimit *dl, FyError **errp)
{
    if (dl->v)
        return 0;
    int n = dl->vm->vcpu_count ? dl->vm->vcpu_count(dl->vm_opaque) : 1;
    if (n < 1 || n > MAX_VCPUS) {
        fy_error_setg(errp, "the VM reports %d vCPUs (1 to %d supported)", n,
                      MAX_VCPUS);
        return -1;
    }
    dl->v = calloc((size_t)n, sizeof(*dl->v));
    if (!dl->v) {
        fy_error_setg_errno(errp, ENOMEM, "dirty limit table");
        return -1;
    }
    dl->n = n;
    return 0;
}

/* ---- the sampler ---- */

static void sample(FyDirtyLimit *dl)
{
    uint64_t now = now_ms();
    uint64_t dt = now - dl->last_ms;
    dl->last_ms = now;
    for (int i = 0; i < dl->n; i++) {
        uint64_t pages;
        VcpuLimit *v = &dl->v[i];
        pthread_mutex_unlock(&dl->mu);
        bool ok = fy_dirtyrate_vcpu_pages(dl->dr, i, &pages);
        pthread_mutex_lock(&dl->mu);
        if (!ok || !dl->v)
            return;
        if (v->have_last && dt && pages >= v->last_pages) {
            uint64_t mib = ((pages - v->last_pages) * FY_TARGET_PAGE_SIZE) >> 20;
            v->rate = mib * 1000 / dt;
            if (!v->limit)
                v->natural = v->rate;
            if (v->rate > dl->max_rate)
                dl->max_rate = v->rate;
        }
        v->last_pages = pages;
        v->have_last = true;
    }
}

static void *sampler(void *arg)
{
    FyDirtyLimit *dl = arg;
    pthread_setname_np(pthread_self(), "fy-dirtylimit");
    pthread_mutex_lock(&dl->mu);
    dl->last_ms = now_ms();
    sample(dl);
    while (!dl->quit) {
        uint64_t due = dl->last_ms + dl->period_ms;
        struct timespec ts = { (time_t)(due / 1000),
                               (long)(due % 1000) * 1000000L };
        while (!dl->quit && now_ms() < due &&
               pthread_cond_timedwait(&dl->cond, &dl->mu, &ts) != ETIMEDOUT)
            ;
        if (!dl->quit)
            sample(dl);
    }
    pthread_mutex_unlock(&dl->mu);
    return NULL;
}

/* Start sampling (mu held); no-op when already sampling. */
static void start_sampler(FyDirtyLimit *dl)
{
    if (dl->thread_on || dl->quit)
        return;
    if (pthread_create(&dl->thread, NULL, sampler, dl) == 0)
        dl->thread_on = true;
}

/* ---- limits ---- */

static int check_cpu(FyDirtyLimit *dl, bool has_cpu, int64_t cpu,
                     FyError **errp)
{
    if (!fy_dirtylimit_supported(dl)) {
        fy_error_setg(errp, "Dirty page limit not supported by this VM "
                      "(it has no FyVMOps.set_dirty_limit)");
        return -1;
    }
    if (ensure_table(dl, errp) < 0)
        return -1;
    if (has_cpu && (cpu < 0 || cpu >= dl->n)) {
        fy_error_setg(errp, "incorrect cpu index specified");
        return -1;
    }
    return 0;
}

static void apply(FyDirtyLimit *dl, bool has_cpu, int64_t cpu, uint64_t mbps,
                  bool by_mig)
{
    for (int i = 0; i < dl->n; i++) {
        if (has_cpu && i != cpu)
            continue;
        dl->v[i].limit = mbps;
        dl->v[i].by_mig = mbps && by_mig;
    }
    dl->vm->set_dirty_limit(dl->vm_opaque, has_cpu ? (int)cpu : -1, mbps);
}

int fy_dirtylimit_set(FyDirtyLimit *dl, bool has_cpu, int64_t cpu,
                      uint64_t mbps, bool by_migration, FyError **errp)
{
    pthread_mutex_lock(&dl->mu);
    int ret = check_cpu(dl, has_cpu, cpu, errp);
    if (ret == 0) {
        apply(dl, has_cpu, cpu, mbps, by_migration);
        if (mbps)
            start_sampler(dl);
    }
    pthread_mutex_unlock(&dl->mu);
    return ret;
}

int fy_dirtylimit_cancel(FyDirtyLimit *dl, bool has_cpu, int64_t cpu,
                         FyError **errp)
{
    return fy_dirtylimit_set(dl, has_cpu, cpu, 0, false, errp);
}

/* Only the capability's limits: the user's own stay. */
void fy_dirtylimit_cancel_migration(FyDirtyLimit *dl)
{
    pthread_mutex_lock(&dl->mu);
    for (int i = 0; dl->v && i < dl->n; i++) {
        if (dl->v[i].by_mig)
            apply(dl, true, i, 0, false);
    }
    pthread_mutex_unlock(&dl->mu);
}

uint64_t fy_dirtylimit_uniform(FyDirtyLimit *dl)
{
    pthread_mutex_lock(&dl->mu);
    uint64_t l = dl->n ? dl->v[0].limit : 0;
    for (int i = 1; i < dl->n; i++) {
        if (dl->v[i].limit != l)
            l = 0;
    }
    pthread_mutex_unlock(&dl->mu);
    return l;
}

void fy_dirtylimit_set_period(FyDirtyLimit *dl, uint64_t ms)
{
    pthread_mutex_lock(&dl->mu);
    dl->period_ms = ms ? ms : 1;
    pthread_cond_broadcast(&dl->cond);
    pthread_mutex_unlock(&dl->mu);
}

json_t *fy_dirtylimit_query(FyDirtyLimit *dl)
{
    json_t *list = json_array();
    pthread_mutex_lock(&dl->mu);
    for (int i = 0; list && i < dl->n; i++) {
        const VcpuLimit *v = &dl->v[i];
        if (!v->limit)
            continue;
        json_array_append_new(list, json_pack("{s:i,s:I,s:I}", "cpu-index", i,
                                              "limit-rate", (json_int_t)v->limit,
                                              "current-rate",
                                              (json_int_t)v->rate));
    }
    pthread_mutex_unlock(&dl->mu);
    return list;
}

/* Microseconds to dirty a ring's worth of pages at mbps. */
static uint64_t ring_us(uint64_t mbps)
{
    return mbps ? RING_MIB * 1000000ull / mbps : 0;
}

uint64_t fy_dirtylimit_throttle_us_per_round(FyDirtyLimit *dl)
{
    uint64_t max = 0;
    pthread_mutex_lock(&dl->mu);
    for (int i = 0; i < dl->n; i++) {
        const VcpuLimit *v = &dl->v[i];
        if (!v->limit || v->natural <= v->limit)
            continue;
        uint64_t us = ring_us(v->limit) - ring_us(v->natural);
        if (us > max)
            max = us;
    }
    pthread_mutex_unlock(&dl->mu);
    return max;
}

uint64_t fy_dirtylimit_ring_full_us(FyDirtyLimit *dl)
{
    pthread_mutex_lock(&dl->mu);
    uint64_t r = ring_us(dl->max_rate);
    pthread_mutex_unlock(&dl->mu);
    return r;
}

/* Sampling before any limit is set gives the natural rates that the
 * throttle time is measured against (the capability starts it early). */
void fy_dirtylimit_start_sampling(FyDirtyLimit *dl)
{
    pthread_mutex_lock(&dl->mu);
    if (fy_dirtylimit_supported(dl) && ensure_table(dl, NULL) == 0)
        start_sampler(dl);
    pthread_mutex_unlock(&dl->mu);
}
