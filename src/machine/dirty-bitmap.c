/*
 * dirty-bitmap.c: the software dirty bitmap backend. See dirty.h.
 *
 * One bitmap per block, one bit per 4 KiB page, set by the vCPUs. sync
 * skips zero words with a plain load and takes the others with an atomic
 * exchange, so harvesting 4 GiB of RAM reads 128 KiB of bitmap. The machine
 * then waits out running vCPU batches before returning (see dirty.h).
 */
#include <stdlib.h>

#include "machine/dirty.h"

static int bitmap_init(FyDirtyTracker *t, FyError **errp)
{
    for (int i = 0; i < t->nblocks; i++) {
        uint64_t pages = t->blocks[i]->used_length / FY_TARGET_PAGE_SIZE;
        t->soft[i] = calloc(FY_BITMAP_LONGS(pages), sizeof(atomic_ulong));
        if (!t->soft[i]) {
            fy_error_setg(errp, "block '%s': out of memory for the bitmap",
                          t->blocks[i]->idstr);
            return -1;
        }
    }
    return 0;
}

/* Forget what was recorded before: from now on only new stores count. */
static int bitmap_start(FyDirtyTracker *t, FyError **errp)
{
    for (int i = 0; i < t->nblocks; i++) {
        uint64_t words = FY_BITMAP_LONGS(t->blocks[i]->used_length / FY_TARGET_PAGE_SIZE);
        for (uint64_t w = 0; w < words; w++)
            atomic_store_explicit(&t->soft[i][w], 0, memory_order_relaxed);
    }
    atomic_thread_fence(memory_order_seq_cst);
    return 0;
}

static void bitmap_stop(FyDirtyTracker *t)
{
}

static int bitmap_sync(FyDirtyTracker *t, int block, unsigned long *bitmap,
                       FyError **errp)
{
    atomic_ulong *bm = t->soft[block];
    uint64_t words = FY_BITMAP_LONGS(t->blocks[block]->used_length / FY_TARGET_PAGE_SIZE);
    for (uint64_t w = 0; w < words; w++) {
        if (atomic_load_explicit(&bm[w], memory_order_relaxed) == 0)
            continue;
        bitmap[w] |= atomic_exchange_explicit(&bm[w], 0, memory_order_seq_cst);
    }
    return 0;
}

static void bitmap_cleanup(FyDirtyTracker *t)
{
    for (int i = 0; i < t->nblocks; i++) {
        free(t->soft[i]);
        t->soft[i] = NULL;
    }
}

const FyDirtyOps fy_dirty_bitmap_ops = {
    .name = "bitmap",
    .vcpu_marks = true,
    .init = bitmap_init,
    .start = bitmap_start,
    .stop = bitmap_stop,
    .sync = bitmap_sync,
    .cleanup = bitmap_cleanup,
};
