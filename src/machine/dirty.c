/*
 * dirty.c: choosing and owning a dirty tracking backend. See dirty.h.
 */
#include <stdlib.h>

#include "machine/dirty.h"

FyDirtyTracker *fy_dirty_new(FyDirtyTrack kind, FyRamBlock *const *blocks,
                             int nblocks, FyError **errp)
{
    const FyDirtyOps *ops;
    switch (kind) {
    case FY_DIRTY_BITMAP: ops = &fy_dirty_bitmap_ops; break;
    case FY_DIRTY_UFFD_WP: ops = &fy_dirty_uffd_ops; break;
    default:
        fy_error_setg(errp, "dirty tracking: unknown backend %d", (int)kind);
        return NULL;
    }
    FyDirtyTracker *t = calloc(1, sizeof(*t));
    if (!t) {
        fy_error_setg(errp, "dirty tracking: out of memory");
        return NULL;
    }
    t->ops = ops;
    t->nblocks = nblocks;
    for (int i = 0; i < nblocks; i++)
        t->blocks[i] = blocks[i];
    if (ops->init(t, errp) < 0) {
        fy_error_prepend(errp, "dirty tracking '%s': ", ops->name);
        fy_dirty_free(t);
        return NULL;
    }
    return t;
}

void fy_dirty_free(FyDirtyTracker *t)
{
    if (!t)
        return;
    if (t->ops->cleanup)
        t->ops->cleanup(t);
    free(t);
}

void fy_bitmap_set_range(unsigned long *bm, uint64_t first, uint64_t n)
{
    uint64_t end = first + n;
    while (first < end && first % FY_BITS_PER_LONG) {
        bm[first / FY_BITS_PER_LONG] |= 1ul << (first % FY_BITS_PER_LONG);
        first++;
    }
    while (first + FY_BITS_PER_LONG <= end) {
        bm[first / FY_BITS_PER_LONG] = ~0ul;
        first += FY_BITS_PER_LONG;
    }
    while (first < end) {
        bm[first / FY_BITS_PER_LONG] |= 1ul << (first % FY_BITS_PER_LONG);
        first++;
    }
}
