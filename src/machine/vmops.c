/*
 * vmops.c: the machine as the migration engine sees it (FyVMOps).
 */
#include "machine/machine-int.h"

static int vm_stop(void *opaque, FyError **errp)
{
    return fy_machine_stop(opaque, errp);
}

static int vm_start(void *opaque, FyError **errp)
{
    return fy_machine_start(opaque, errp);
}

static bool vm_is_running(void *opaque)
{
    return fy_machine_is_running(opaque);
}

static int vm_dirty_log_start(void *opaque, FyError **errp)
{
    FyMachine *m = opaque;
    if (m->dirty->ops->start(m->dirty, errp) < 0) {
        fy_error_prepend(errp, "dirty log start (%s): ", m->dirty->ops->name);
        return -1;
    }
    if (m->dirty->ops->vcpu_marks) {
        atomic_store(&m->soft_log, true);
        /* A batch that began before the store above may not mark: wait it out. */
        fy_machine_quiesce_batches(m);
    }
    atomic_store(&m->dirty_on, true);
    return 0;
}

static void vm_dirty_log_stop(void *opaque)
{
    FyMachine *m = opaque;
    atomic_store(&m->dirty_on, false);
    atomic_store(&m->soft_log, false);
    m->dirty->ops->stop(m->dirty);
}

static int vm_dirty_log_sync(void *opaque, FyRamBlock *block, unsigned long *bitmap,
                             FyError **errp)
{
    FyMachine *m = opaque;
    /* Off, nothing is recorded: "no page written" would be a lie. */
    if (!atomic_load(&m->dirty_on)) {
        fy_error_setg(errp, "dirty log sync of block '%s': dirty logging is not "
                      "started", block ? block->idstr : "(null)");
        return -1;
    }
    for (int i = 0; i < m->nblocks; i++) {
        if (block != &m->blocks[i])
            continue;
        if (m->dirty->ops->sync(m->dirty, i, bitmap, errp) < 0)
            return -1;
        /* vCPUs skip marking pages whose bit they see set: a batch that
         * skipped a bit just harvested must end before the caller reads
         * the page (dirty.h). */
        if (m->dirty->ops->vcpu_marks)
            fy_machine_quiesce_batches(m);
        return 0;
    }
    fy_error_setg(errp, "dirty log sync: RAM block '%s' is not this machine's",
                  block ? block->idstr : "(null)");
    return -1;
}

static void vm_set_throttle(void *opaque, int percent)
{
    FyMachine *m = opaque;
    if (percent < 0)
        percent = 0;
    if (percent > 99)
        percent = 99;
    atomic_store(&m->throttle_pct, percent);
}

static void vm_set_dirty_limit(void *opaque, int vcpu, uint64_t mbps)
{
    FyMachine *m = opaque;
    /* MiB/s to 4 KiB pages/s; saturate rather than wrap. */
    uint64_t pps = mbps > (UINT64_MAX >> 8) ? UINT64_MAX : mbps << 8;
    for (int i = 0; i < m->nvcpus; i++) {
        if (vcpu < 0 || vcpu == i)
            atomic_store(&m->vcpus[i].limit_pps, pps);
    }
}

static int vm_vcpu_count(void *opaque)
{
    return fy_machine_vcpu_count(opaque);
}

static const FyVMOps machine_vm_ops = {
    .stop = vm_stop,
    .start = vm_start,
    .is_running = vm_is_running,
    .dirty_log_start = vm_dirty_log_start,
    .dirty_log_stop = vm_dirty_log_stop,
    .dirty_log_sync = vm_dirty_log_sync,
    .set_throttle = vm_set_throttle,
    .set_dirty_limit = vm_set_dirty_limit,
    .vcpu_count = vm_vcpu_count,
};

const FyVMOps *fy_machine_vm_ops(FyMachine *m, void **opaque)
{
    if (opaque)
        *opaque = m;
    return &machine_vm_ops;
}
