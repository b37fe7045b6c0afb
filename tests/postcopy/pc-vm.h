/*
 * pc-vm.h: reference VMs (FyMachine) wired to the real migration engine
 * (FyMigration over unix sockets) for the postcopy end-to-end tests in one
 * process: a source, a destination and, for checking, a VM that never
 * migrated. The machine's workload is deterministic, so "the destination
 * run to step S equals a fresh VM run to step S" proves that every page
 * and device the destination got was the source's.
 */
#ifndef PC_VM_H
#define PC_VM_H

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "ferry/machine.h"
#include "ferry/migration.h"
#include "pc-test.h"
#include "t.h"

#define PV_MAX_EVENTS 128

typedef struct PcVm {
    FyMachine *mach;
    FySaveState *ss;
    FyMigration *mig;
    pthread_mutex_t ev_lock;
    int nev;
    char ev[PV_MAX_EVENTS][32];  /* MIGRATION statuses in order */
} PcVm;

static void pv_event(void *opaque, const char *name, json_t *data)
{
    PcVm *v = opaque;
    if (strcmp(name, "MIGRATION"))
        return;
    const char *s = json_string_value(json_object_get(data, "status"));
    pthread_mutex_lock(&v->ev_lock);
    if (s && v->nev < PV_MAX_EVENTS)
        snprintf(v->ev[v->nev++], sizeof(v->ev[0]), "%s", s);
    pthread_mutex_unlock(&v->ev_lock);
}

static inline FyMachineConfig pv_config(FyWorkload w, uint64_t ram_mib,
                                        uint64_t wss_mib, uint64_t rate)
{
    FyMachineConfig c;
    fy_machine_config_init(&c);
    c.ram[0].size = ram_mib << 20;
    c.vcpus = 2;
    c.workload = w;
    c.seed = 11;
    c.working_set = wss_mib << 20;
    c.dirty_rate = rate;
    c.timer_period_ns = 200000;
    return c;
}

static inline void pv_err(const char *what, FyError *err)
{
    printf("# %s: %s\n", what, err ? fy_error_msg(err) : "(no error)");
    fy_error_free(err);
}

static inline bool pv_init(PcVm *v, const FyMachineConfig *c)
{
    FyError *err = NULL;
    memset(v, 0, sizeof(*v));
    pthread_mutex_init(&v->ev_lock, NULL);
    v->mach = fy_machine_new(c, &err);
    v->ss = fy_savevm_new(FY_MACHINE_TYPE);
    if (!v->mach || !v->ss || fy_machine_register_state(v->mach, v->ss, &err) < 0) {
        pv_err("machine", err);
        return false;
    }
    void *op;
    const FyVMOps *ops = fy_machine_vm_ops(v->mach, &op);
    v->mig = fy_migration_new(v->ss, fy_machine_ram_list(v->mach), ops, op);
    if (!v->mig)
        return false;
    fy_migration_set_event_handler(v->mig, pv_event, v);
    fy_migration_set_capability(v->mig, "events", true, NULL);
    return true;
}

static inline void pv_free(PcVm *v)
{
    fy_migration_free(v->mig);
    fy_savevm_free(v->ss);
    fy_machine_free(v->mach);
    pthread_mutex_destroy(&v->ev_lock);
}

static inline void pv_cap(PcVm *v, const char *name, bool on)
{
    FyError *err = NULL;
    if (fy_migration_set_capability(v->mig, name, on, &err) < 0)
        T_FAIL("capability %s: %s", name, fy_error_msg(err));
    fy_error_free(err);
}

static inline void pv_params(PcVm *v, const char *json)
{
    FyError *err = NULL;
    json_t *j = json_loads(json, 0, NULL);
    if (!j || fy_migration_set_parameters(v->mig, j, &err) < 0)
        T_FAIL("parameters %s: %s", json, err ? fy_error_msg(err) : "bad JSON");
    fy_error_free(err);
    json_decref(j);
}

static inline bool pv_saw(PcVm *v, const char *status)
{
    pthread_mutex_lock(&v->ev_lock);
    bool seen = false;
    for (int i = 0; i < v->nev && !seen; i++)
        seen = !strcmp(v->ev[i], status);
    pthread_mutex_unlock(&v->ev_lock);
    return seen;
}

static inline void pv_print_events(PcVm *v, const char *who)
{
    pthread_mutex_lock(&v->ev_lock);
    printf("# %s events:", who);
    for (int i = 0; i < v->nev; i++)
        printf(" %s", v->ev[i]);
    printf("\n");
    pthread_mutex_unlock(&v->ev_lock);
}

/* query-migrate's integer at path "a" or "a.b"; -1 if absent. */
static inline int64_t pv_query_int(PcVm *v, const char *a, const char *b)
{
    json_t *q = fy_migration_query(v->mig);
    json_t *x = json_object_get(q, a);
    if (b)
        x = json_object_get(x, b);
    int64_t r = json_is_integer(x) ? (int64_t)json_integer_value(x) : -1;
    json_decref(q);
    return r;
}

static inline char *pv_query_str(PcVm *v, const char *key)
{
    json_t *q = fy_migration_query(v->mig);
    const char *s = json_string_value(json_object_get(q, key));
    char *r = s ? strdup(s) : NULL;
    json_decref(q);
    return r;
}

static inline bool pv_wait_status(PcVm *v, FyMigStatus s, int ms)
{
    bool ok = fy_migration_wait_for(v->mig, s, ms);
    if (!ok) {
        char *e = pv_query_str(v, "error-desc");
        T_FAIL("status %s, expected %s (error-desc: %s)",
               fy_mig_status_name(fy_migration_status(v->mig)),
               fy_mig_status_name(s), e ? e : "none");
        free(e);
    }
    return ok;
}

static inline void pv_path(char *buf, size_t len, const char *tag)
{
    static int n;
    snprintf(buf, len, "unix:/tmp/ferry-pc-%d-%s-%d.sock", (int)getpid(), tag, n++);
}

static inline void pv_digests(FyMachine *m, char *out, size_t len)
{
    FyRamList *l = fy_machine_ram_list(m);
    out[0] = '\0';
    for (int i = 0; i < l->count; i++) {
        char hex[FY_MACHINE_DIGEST_LEN];
        if (fy_machine_ram_digest(m, l->blocks[i]->idstr, hex, NULL) < 0)
            strcpy(hex, "error");
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s=%s;", l->blocks[i]->idstr, hex);
    }
}

static inline uint64_t pv_max_steps(FyMachine *m)
{
    uint64_t s = 0;
    for (int i = 0; i < fy_machine_vcpu_count(m); i++)
        if (fy_machine_vcpu_steps(m, i) > s)
            s = fy_machine_vcpu_steps(m, i);
    return s;
}

static inline int pv_run_until(FyMachine *m, uint64_t steps)
{
    FyError *err = NULL;
    int r = fy_machine_run_until(m, steps, &err);
    if (r < 0)
        pv_err("run_until", err);
    return r;
}

/* The destination, stopped, run on to a step count must equal a VM that
 * never migrated run to the same count: RAM and vCPU state. */
static inline void pv_expect_reference(FyMachine *dst, const FyMachineConfig *c,
                                       uint64_t extra)
{
    uint64_t steps = pv_max_steps(dst) + extra;
    FyMachine *ref = fy_machine_new(c, NULL);
    T_ASSERT(ref);
    if (!ref)
        return;
    T_EQ_INT(pv_run_until(dst, steps), 0);
    T_EQ_INT(pv_run_until(ref, steps), 0);
    char dd[512], dr[512];
    pv_digests(dst, dd, sizeof(dd));
    pv_digests(ref, dr, sizeof(dr));
    T_EQ_STR(dd, dr);
    json_t *jd = fy_machine_state_json(dst), *jr = fy_machine_state_json(ref);
    for (int i = 0; i < c->vcpus; i++) {
        json_t *a = json_array_get(json_object_get(jd, "cpu"), (size_t)i);
        json_t *b = json_array_get(json_object_get(jr, "cpu"), (size_t)i);
        T_ASSERT(a && b && json_equal(json_object_get(a, "regs"),
                                      json_object_get(b, "regs")));
        T_ASSERT(a && b && json_equal(json_object_get(a, "rng"),
                                      json_object_get(b, "rng")));
    }
    json_decref(jd);
    json_decref(jr);
    fy_machine_free(ref);
}

#endif
