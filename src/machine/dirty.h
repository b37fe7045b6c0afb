/*
 * dirty.h: dirty page tracking backends behind one small interface.
 *
 * Contract (FyVMOps): start arms tracking, so that every store made after
 * start returns is recorded; sync(block) ORs into the caller's bitmap the
 * pages of that block written since the previous sync (or start) and
 * clears the record; stop disarms. A page written while a sync runs is
 * reported by this sync or the next one, never lost.
 *
 * "bitmap": a software bitmap per block. The vCPUs set a page's bit with an
 * atomic OR after the store itself (release), and sync takes each non-zero
 * word with an atomic exchange (acquire), so a harvested bit always comes
 * with its data visible. Arming the vCPUs is the machine's job (it makes
 * sure no vCPU is mid-batch with logging off once start returns).
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

/* vCPU side of the bitmap backend: after the store. */
static inline void fy_dirty_mark_page(atomic_ulong *bm, uint64_t page)
{
    atomic_fetch_or_explicit(&bm[page / FY_BITS_PER_LONG],
                             1ul << (page % FY_BITS_PER_LONG),
                             memory_order_release);
}

/* Set bits [first, first + n) of a bitmap. */
void fy_bitmap_set_range(unsigned long *bm, uint64_t first, uint64_t n);

#endif
