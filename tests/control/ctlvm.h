/*
 * ctlvm.h: a tiny VM for the control-layer tests: one RAM block of
 * anonymous memory filled with a pattern, one VMState device, stop/start
 * flags, and a monitor with the VM commands a real program registers
 * (stop, cont, query-status, quit, x-ferry-ram-digest). No vCPU runs: the
 * control tests check commands, formatting and protocol; migration under
 * a dirtying guest is the e2e tests' job.
 */
#ifndef FERRY_TESTS_CTLVM_H
#define FERRY_TESTS_CTLVM_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "ferry/hmp.h"
#include "ferry/migration.h"
#include "ferry/qmp.h"

#define CTL_RAM_SIZE (4u << 20)

typedef struct CtlDev {
    uint32_t counter;
    uint64_t regs[2];
} CtlDev;

static const VMStateDescription vmstate_ctldev = {
    .name = "ctldev",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32(counter, CtlDev),
        VMSTATE_UINT64_ARRAY(regs, CtlDev, 2),
        VMSTATE_END_OF_LIST()
    },
};

typedef struct CtlVM {
    FyRamBlock block;
    FyRamList list;
    unsigned long *log;
    CtlDev dev;
    FySaveState *ss;
    FyMigration *mig;
    FyMonitor *mon;
    pthread_mutex_t lock;
    bool running;
    int quits;
} CtlVM;

static inline int ctl_stop(void *opaque, FyError **errp)
{
    CtlVM *vm = opaque;
    pthread_mutex_lock(&vm->lock);
    bool was = vm->running;
    vm->running = false;
    pthread_mutex_unlock(&vm->lock);
    if (was && vm->mon)
        fy_monitor_emit_event(vm->mon, "STOP", NULL);
    return 0;
}

static inline int ctl_start(void *opaque, FyError **errp)
{
    CtlVM *vm = opaque;
    pthread_mutex_lock(&vm->lock);
    bool was = vm->running;
    vm->running = true;
    pthread_mutex_unlock(&vm->lock);
    if (!was && vm->mon)
        fy_monitor_emit_event(vm->mon, "RESUME", NULL);
    return 0;
}

static inline bool ctl_is_running(void *opaque)
{
    CtlVM *vm = opaque;
    pthread_mutex_lock(&vm->lock);
    bool r = vm->running;
    pthread_mutex_unlock(&vm->lock);
    return r;
}

static inline int ctl_log_start(void *opaque, FyError **errp)
{
    return 0;
}

static inline void ctl_log_stop(void *opaque)
{
}

/* Nothing writes RAM while migrating, so nothing is ever dirty again. */
static inline int ctl_log_sync(void *opaque, FyRamBlock *b,
                               unsigned long *bitmap, FyError **errp)
{
    return 0;
}

static const FyVMOps ctl_ops = {
    .stop = ctl_stop,
    .start = ctl_start,
    .is_running = ctl_is_running,
    .dirty_log_start = ctl_log_start,
    .dirty_log_stop = ctl_log_stop,
    .dirty_log_sync = ctl_log_sync,
};

/* ---- the VM's own monitor commands ---- */

static inline json_t *ctl_cmd_stop(void *opaque, json_t *args, FyError **errp)
{
    return ctl_stop(opaque, errp) < 0 ? NULL : json_object();
}

static inline json_t *ctl_cmd_cont(void *opaque, json_t *args, FyError **errp)
{
    CtlVM *vm = opaque;
    FyMigStatus s = fy_migration_status(vm->mig);
    if (s == MIGRATION_STATUS_SETUP || s == MIGRATION_STATUS_ACTIVE) {
        fy_error_setg(errp, "a migration is in progress");
        return NULL;
    }
    return ctl_start(opaque, errp) < 0 ? NULL : json_object();
}

static inline json_t *ctl_cmd_status(void *opaque, json_t *args,
                                     FyError **errp)
{
    CtlVM *vm = opaque;
    bool r = ctl_is_running(vm);
    FyMigStatus s = fy_migration_status(vm->mig);
    const char *st = r ? "running"
        : s == MIGRATION_STATUS_COMPLETED ? "postmigrate" : "paused";
    return json_pack("{s:b,s:b,s:s}", "running", r, "singlestep", 0, "status",
                     st);
}

static inline json_t *ctl_cmd_quit(void *opaque, json_t *args, FyError **errp)
{
    CtlVM *vm = opaque;
    pthread_mutex_lock(&vm->lock);
    vm->quits++;
    pthread_mutex_unlock(&vm->lock);
    return json_object();
}

/* FNV-1a over the block: enough to tell two small test VMs apart. */
static inline json_t *ctl_cmd_digest(void *opaque, json_t *args,
                                     FyError **errp)
{
    CtlVM *vm = opaque;
    uint64_t h = 1469598103934665603ull;
    for (uint64_t i = 0; i < vm->block.used_length; i++)
        h = (h ^ vm->block.host[i]) * 1099511628211ull;
    char hex[17];
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)h);
    return json_pack("[{s:s,s:I,s:s}]", "idstr", vm->block.idstr, "length",
                     (json_int_t)vm->block.used_length, "digest", hex);
}

static inline CtlVM *ctl_new(const char *machine_type, uint32_t seed)
{
    CtlVM *vm = calloc(1, sizeof(*vm));
    pthread_mutex_init(&vm->lock, NULL);
    FyRamBlock *b = &vm->block;
    snprintf(b->idstr, sizeof(b->idstr), "pc.ram");
    b->used_length = CTL_RAM_SIZE;
    b->page_size = FY_TARGET_PAGE_SIZE;
    b->fd = -1;
    b->host = mmap(NULL, CTL_RAM_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b->host == MAP_FAILED)
        abort();
    for (uint64_t p = 0; seed && p < CTL_RAM_SIZE / FY_TARGET_PAGE_SIZE; p++) {
        if (p % 4 == 0)
            continue;
        uint32_t *w = (uint32_t *)(b->host + p * FY_TARGET_PAGE_SIZE);
        for (size_t k = 0; k < FY_TARGET_PAGE_SIZE / 4; k += 37)
            w[k] = seed ^ (uint32_t)(p * 2654435761u + k);
    }
    vm->dev.counter = seed;
    vm->dev.regs[0] = seed * 7ull;
    vm->dev.regs[1] = seed * 13ull;
    vm->list.count = 1;
    vm->list.blocks[0] = b;
    vm->ss = fy_savevm_new(machine_type);
    if (fy_register_vmstate(vm->ss, "ctldev", 0, &vmstate_ctldev, &vm->dev,
                            NULL) < 0)
        abort();
    vm->mig = fy_migration_new(vm->ss, &vm->list, &ctl_ops, vm);
    vm->mon = fy_monitor_new(vm->mig, vm->ss);
    if (!vm->mig || !vm->mon)
        abort();
    fy_monitor_register(vm->mon, "stop", "", ctl_cmd_stop, vm, NULL);
    fy_monitor_register(vm->mon, "cont", "", ctl_cmd_cont, vm, NULL);
    fy_monitor_register(vm->mon, "query-status", "", ctl_cmd_status, vm, NULL);
    fy_monitor_register(vm->mon, "quit", "", ctl_cmd_quit, vm, NULL);
    fy_monitor_register(vm->mon, "x-ferry-ram-digest", "", ctl_cmd_digest, vm,
                        NULL);
    return vm;
}

static inline void ctl_free(CtlVM *vm)
{
    fy_monitor_free(vm->mon);
    fy_migration_free(vm->mig);
    fy_savevm_free(vm->ss);
    munmap(vm->block.host, vm->block.used_length);
    pthread_mutex_destroy(&vm->lock);
    free(vm);
}

/* Run a QMP command in-process; returns the value or NULL, *err set. */
static inline json_t *ctl_qmp(CtlVM *vm, const char *name, json_t *args,
                              char **err)
{
    json_t *ret = NULL;
    FyError *e = NULL;
    *err = NULL;
    if (fy_monitor_execute(vm->mon, name, args, &ret, &e) != FY_QMP_OK) {
        *err = strdup(fy_error_msg(e));
        fy_error_free(e);
    }
    json_decref(args);
    return ret;
}

static inline void ctl_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

#endif
