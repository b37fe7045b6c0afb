/*
 * cvm.h: reference-VM pairs for the convergence tests.
 *
 * A Cvm is a FyMachine (real vCPU threads running a workload, real dirty
 * tracking, real devices) with its own FySaveState, FyMigration and
 * monitor, so a source and a destination live in one process and migrate
 * over a real unix socket. The destination does not start after the load
 * (autostart off), so both sides can be compared while stopped: every
 * RAM block's digest and the device state JSON.
 *
 * The per-vCPU dirty counter given to calc-dirty-rate and the dirty limit
 * is the vCPU's step count: with the writing workloads one step is one
 * store, which is what a dirty ring counts at most.
 */
#ifndef FERRY_TESTS_CVM_H
#define FERRY_TESTS_CVM_H

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "ferry/converge.h"
#include "ferry/hmp.h"
#include "ferry/machine.h"
#include "ferry/qmp.h"
#include "t.h"

#define CVM_MAX_EVENTS 512

typedef struct Cvm {
    const char *name;
    FyMachine *m;
    FySaveState *ss;
    FyMigration *mig;
    FyMonitor *mon;
    pthread_mutex_t ev_lock;
    int nevents;
    char events[CVM_MAX_EVENTS][64];
} Cvm;

static inline uint64_t cvm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline void cvm_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static inline void cvm_event(void *opaque, const char *name, json_t *data)
{
    Cvm *vm = opaque;
    pthread_mutex_lock(&vm->ev_lock);
    if (vm->nevents < CVM_MAX_EVENTS) {
        json_t *st = json_object_get(data, "status");
        snprintf(vm->events[vm->nevents++], 64, "%s:%s", name,
                 json_is_string(st) ? json_string_value(st) : "");
    }
    pthread_mutex_unlock(&vm->ev_lock);
}

static inline int cvm_count_events(Cvm *vm, const char *prefix)
{
    int n = 0;
    pthread_mutex_lock(&vm->ev_lock);
    for (int i = 0; i < vm->nevents; i++)
        n += !strncmp(vm->events[i], prefix, strlen(prefix));
    pthread_mutex_unlock(&vm->ev_lock);
    return n;
}

static inline uint64_t cvm_vcpu_pages(void *opaque, int vcpu)
{
    return fy_machine_vcpu_steps(opaque, vcpu);
}

static inline FyMachineConfig cvm_config(FyWorkload w, int vcpus,
                                         uint64_t ram_mib, uint64_t rate)
{
    FyMachineConfig c;
    fy_machine_config_init(&c);
    c.ram[0].size = ram_mib << 20;
    c.vcpus = vcpus;
    c.workload = w;
    c.seed = 42;
    c.dirty_rate = rate;
    return c;
}

static inline Cvm *cvm_new(const char *name, const FyMachineConfig *c)
{
    FyError *err = NULL;
    Cvm *vm = calloc(1, sizeof(*vm));
    vm->name = name;
    pthread_mutex_init(&vm->ev_lock, NULL);
    vm->m = fy_machine_new(c, &err);
    vm->ss = vm->m ? fy_savevm_new(FY_MACHINE_TYPE) : NULL;
    if (!vm->ss || fy_machine_register_state(vm->m, vm->ss, &err) < 0) {
        printf("# %s: %s\n", name, err ? fy_error_msg(err) : "no machine");
        abort();
    }
    void *op;
    const FyVMOps *ops = fy_machine_vm_ops(vm->m, &op);
    vm->mig = fy_migration_new(vm->ss, fy_machine_ram_list(vm->m), ops, op);
    vm->mon = vm->mig ? fy_monitor_new(vm->mig, vm->ss) : NULL;
    if (!vm->mon)
        abort();
    fy_migration_set_event_handler(vm->mig, cvm_event, vm);
    fy_migration_set_autostart(vm->mig, false);
    fy_dirtyrate_set_vcpu_counter(fy_migration_dirtyrate(vm->mig),
                                  cvm_vcpu_pages, vm->m);
    return vm;
}

static inline void cvm_free(Cvm *vm)
{
    if (!vm)
        return;
    fy_monitor_free(vm->mon);
    fy_migration_free(vm->mig);
    fy_savevm_free(vm->ss);
    fy_machine_free(vm->m);
    pthread_mutex_destroy(&vm->ev_lock);
    free(vm);
}

static inline void cvm_start(Cvm *vm)
{
    FyError *err = NULL;
    if (fy_machine_start(vm->m, &err) < 0) {
        printf("# start %s: %s\n", vm->name, fy_error_msg(err));
        fy_error_free(err);
    }
}

/* ---- QMP and HMP through the monitor ---- */

/* Run a QMP command; returns its value, or NULL with the error in *emsg
 * (malloc'ed) when emsg is given. args is consumed. */
static inline json_t *cvm_qmp(Cvm *vm, const char *name, json_t *args,
                              char **emsg)
{
    json_t *ret = NULL;
    FyError *err = NULL;
    if (fy_monitor_execute(vm->mon, name, args, &ret, &err) != FY_QMP_OK) {
        if (emsg)
            *emsg = strdup(fy_error_msg(err));
        else
            printf("# %s %s: %s\n", vm->name, name, fy_error_msg(err));
        ret = NULL;
    }
    fy_error_free(err);
    json_decref(args);
    return ret;
}

static inline bool cvm_qmp_ok(Cvm *vm, const char *name, json_t *args)
{
    json_t *r = cvm_qmp(vm, name, args, NULL);
    json_decref(r);
    return r != NULL;
}

static inline char *cvm_hmp(Cvm *vm, const char *line)
{
    bool failed = false;
    char *out = fy_hmp_execute(vm->mon, line, false, &failed);
    if (failed)
        printf("# hmp '%s' failed: %s", line, out ? out : "");
    return out;
}

static inline bool cvm_params(Cvm *vm, const char *json)
{
    json_t *p = json_loads(json, 0, NULL);
    if (!p) {
        printf("# bad JSON in test: %s\n", json);
        return false;
    }
    return cvm_qmp_ok(vm, "migrate-set-parameters", p);
}

static inline bool cvm_cap(Cvm *vm, const char *cap, bool on)
{
    return cvm_qmp_ok(vm, "migrate-set-capabilities",
                      json_pack("{s:[{s:s,s:b}]}", "capabilities",
                                "capability", cap, "state", on));
}

/* query-migrate's value at a path of up to three keys (NULL-terminated). */
static inline json_t *cvm_q(json_t *q, const char *a, const char *b,
                            const char *c)
{
    json_t *v = json_object_get(q, a);
    if (b)
        v = json_object_get(v, b);
    if (b && c)
        v = json_object_get(v, c);
    return v;
}

static inline long long cvm_qint(Cvm *vm, const char *a, const char *b,
                                 const char *c)
{
    json_t *q = fy_migration_query(vm->mig);
    json_t *v = cvm_q(q, a, b, c);
    long long r = json_is_integer(v) ? json_integer_value(v)
                  : json_is_true(v) ? 1 : json_is_false(v) ? 0 : -1;
    json_decref(q);
    return r;
}

static inline void cvm_print_error(Cvm *vm)
{
    json_t *q = fy_migration_query(vm->mig);
    const char *e = json_string_value(json_object_get(q, "error-desc"));
    if (e)
        printf("# %s error-desc: %s\n", vm->name, e);
    json_decref(q);
}

/* ---- migrating ---- */

static inline void cvm_begin(Cvm *src, Cvm *dst, char *path, size_t len)
{
    static int n;
    FyError *err = NULL;
    char uri[200];
    snprintf(path, len, "/tmp/ferry-cvm-%d-%d.sock", (int)getpid(), n++);
    snprintf(uri, sizeof(uri), "unix:%s", path);
    if (fy_migrate_incoming(dst->mig, uri, &err) < 0 ||
        fy_migrate(src->mig, uri, false, &err) < 0) {
        printf("# migrate: %s\n", fy_error_msg(err));
        fy_error_free(err);
    }
}

/* Wait for both ends; true when both completed. */
static inline bool cvm_finish(Cvm *src, Cvm *dst, const char *path,
                              int timeout_ms)
{
    FyMigStatus s = fy_migration_wait(src->mig, timeout_ms);
    if (s != MIGRATION_STATUS_COMPLETED && s != MIGRATION_STATUS_FAILED &&
        s != MIGRATION_STATUS_CANCELLED) {
        printf("# %s still %s: cancelling\n", src->name,
               fy_mig_status_name(s));
        fy_migrate_cancel(src->mig, NULL);
        fy_migration_wait(src->mig, timeout_ms);
    }
    FyMigStatus d = fy_migration_wait(dst->mig, timeout_ms);
    cvm_print_error(src);
    cvm_print_error(dst);
    unlink(path);
    return s == MIGRATION_STATUS_COMPLETED && d == MIGRATION_STATUS_COMPLETED;
}

/* Poll until pred(vm) holds, the migration ended, or timeout. Waiting
 * only: tests assert on what they see afterwards, not on how long it
 * took. */
static inline bool cvm_wait(Cvm *vm, bool (*pred)(Cvm *), int timeout_ms)
{
    uint64_t end = cvm_now_ms() + (uint64_t)timeout_ms;
    while (cvm_now_ms() < end) {
        if (pred(vm))
            return true;
        FyMigStatus s = fy_migration_status(vm->mig);
        if (s == MIGRATION_STATUS_COMPLETED || s == MIGRATION_STATUS_FAILED ||
            s == MIGRATION_STATUS_CANCELLED)
            return pred(vm);
        cvm_sleep_ms(20);
    }
    return false;
}

/* RAM digests and device state of two stopped machines. */
static inline bool cvm_same(Cvm *a, Cvm *b)
{
    FyRamList *la = fy_machine_ram_list(a->m);
    bool same = true;
    for (int i = 0; i < la->count; i++) {
        char ha[FY_MACHINE_DIGEST_LEN], hb[FY_MACHINE_DIGEST_LEN];
        if (fy_machine_ram_digest(a->m, la->blocks[i]->idstr, ha, NULL) < 0 ||
            fy_machine_ram_digest(b->m, la->blocks[i]->idstr, hb, NULL) < 0 ||
            strcmp(ha, hb)) {
            printf("# RAM block '%s' differs\n", la->blocks[i]->idstr);
            same = false;
        }
    }
    json_t *ja = fy_machine_state_json(a->m), *jb = fy_machine_state_json(b->m);
    if (!ja || !jb || !json_equal(ja, jb)) {
        printf("# device state differs\n");
        same = false;
    }
    json_decref(ja);
    json_decref(jb);
    return same;
}

#endif
