/*
 * dirty.h: dirty page tracking backends behind one small interface.
 *
 * Contract (FyVMOps): start arms tracking, so that every store made after
 * start returns is recorded; sync(block) ORs into the caller's bitmap the
 * pages of that block written since the previous sync (or start) and
 * clears the record; stop disarms. A page written while a sync runs is
 * reported by this sync or the next one, never lost.
 *
 * "bitmap": a software bitmap per block, set by the vCPUs after each store.
 * A vCPU skips the atomic OR when the page's bit is already set (a plain
 * load; the locked OR would serialize the stores' cache misses and cost 3x
 * on random stores). That is safe only because of how sync ends: it takes
 * each non-zero word with an atomic exchange, then the machine waits until
 * every vCPU batch that was running has ended (batch ends are release
 * stores after the batch's data stores). So a store whose mark was skipped
 * because the bit was set is in a batch that either ends before sync
 * returns (its data is visible to the caller, who reads the page after
 * sync) or saw the bit after the exchange, i.e. a later mark that the next
 * sync reports. Arming the vCPUs (start) also waits out running batches.
 *
 * "uffd-wp": userfaultfd write-protect in asynchronous mode: the kernel
 * resolves a write to a protected page itself and leaves the page
 * "written" (uffd-wp bit clear); PAGEMAP_SCAN on /proc/self/pagemap reports
 * written pages and write-protects them again in one atomic walk. The vCPUs
 * do nothing.
 */
#ifndef FERRY_MACHINE_DIRTY_H
#define FERRY_MACHINE_DIRTY_H

#include <stdatomic.h>
#include <stdbool.h>

#include "ferry/machine.h"

typedef struct FyDirtyTracker FyDirtyTracker;

typedef struct FyDirtyOps {
    const char *name;
    bool vcpu_marks;    /* the vCPUs set bits in tracker->soft[] */
    int (*init)(FyDirtyTracker *t, FyError **errp);
    int (*start)(FyDirtyTracker *t, FyError **errp);
    void (*stop)(FyDirtyTracker *t);
    int (*sync)(FyDirtyTracker *t, int block, unsigned long *bitmap, FyError **errp);
    void (*cleanup)(FyDirtyTracker *t);
} FyDirtyOps;

struct FyDirtyTracker {
    const FyDirtyOps *ops;
    int nblocks;
    FyRamBlock *blocks[FY_MACHINE_MAX_RAM];
    atomic_ulong *soft[FY_MACHINE_MAX_RAM];   /* bitmap backend */
    void *priv;                               /* backend state */
};

extern const FyDirtyOps fy_dirty_bitmap_ops;
extern const FyDirtyOps fy_dirty_uffd_ops;

FyDirtyTracker *fy_dirty_new(FyDirtyTrack kind, FyRamBlock *const *blocks,
                             int nblocks, FyError **errp);
void fy_dirty_free(FyDirtyTracker *t);

/* vCPU side of the bitmap backend, after the store. The load is seq_cst
 * (a plain load on x86) so that, with the batch start's seq_cst store, a
 * sync that cleared this word afterwards sees the batch as running. */
static inline void fy_dirty_mark_page(atomic_ulong *bm, uint64_t page)
{
    atomic_ulong *w = &bm[page / FY_BITS_PER_LONG];
    unsigned long bit = 1ul << (page % FY_BITS_PER_LONG);
    if (!(atomic_load_explicit(w, memory_order_seq_cst) & bit))
        atomic_fetch_or_explicit(w, bit, memory_order_release);
}

/* Set bits [first, first + n) of a bitmap. */
void fy_bitmap_set_range(unsigned long *bm, uint64_t first, uint64_t n);

#endif
