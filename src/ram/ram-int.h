/*
 * ram-int.h: what the RAM section's sender (ram-save.c), receiver
 * (ram-load.c) and object (ram.c) share.
 *
 * Threads: the save and load hooks run on the migration (or incoming)
 * thread, one at a time; fy_ram_get_stats() may run anywhere, so the
 * counters it reads are written with atomic stores (stat_set/stat_add) and
 * everything else is private to the migrating thread.
 *
 * Sender invariants:
 * - blocks[] is a snapshot of the RAM list taken at save_setup; the list
 *   must not change while a migration runs.
 * - bmap has a bit set for every page that must still be sent; bits are
 *   only set by a dirty sync and only cleared when the page is put.
 * - dirty_pages == the number of set bits over all bitmaps.
 * - last_sent is the block the previous record named (for CONTINUE); it is
 *   reset at the start of each section.
 * - zero_map (sender): a set bit means the page was zero at the last dirty
 *   sync and has not been written since, as far as the syncs have told: it
 *   is built from the never-populated pages after dirty logging started,
 *   and every sync clears the bits of the pages the VM wrote. A page with
 *   its bit set goes out as ZERO without being read, so an untouched source
 *   page is never faulted in. Safe because a write after a sync is in the
 *   VM's log, and the next sync both clears the bit and queues the page.
 * Receiver invariant:
 * - zero_map has a bit set for every page known to be all zero on this
 *   side: set at load_setup for pages that were never populated, set after
 *   a ZERO record is applied, cleared when a PAGE lands there.
 * Each side owns the blocks' bitmaps only while it is active (save_active,
 * load_active); a FyRamState never sends and receives at once.
 */
#ifndef FERRY_RAM_INT_H
#define FERRY_RAM_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/ram.h"

typedef struct RamMultifd RamMultifd;
typedef struct RamPrefault RamPrefault;

typedef struct RamBlockMig {
    FyRamBlock *rb;
    uint64_t pages;          /* used_length >> FY_TARGET_PAGE_BITS */
    bool ignored;            /* x-ignore-shared and a shared block */
    unsigned long *bmap;     /* save: pages still to send */
    unsigned long *synced;   /* save: what one dirty sync reported */
    unsigned long *zero_map; /* pages known to be zero (see above) */
    bool listed;             /* load: named by the stream's MEM_SIZE */
} RamBlockMig;

struct FyRamState {
    FyRamList *ram;
    const FyVMOps *vm;
    void *vm_opaque;
    FyRamOptions opt;
    FyRamSyncFn sync_fn;
    void *sync_opaque;
    struct FyRamConv *conv;   /* XBZRLE, dirty count (ram-converge.c) */
    struct RamMultifd *mfd;   /* multifd channels (ram-multifd.c) */

    int nblocks;
    RamBlockMig blocks[FY_RAMBLOCK_MAX];

    /* save side */
    bool save_active;
    bool dirty_log_on;
    FyError *save_err;        /* a sync failure in a hook that cannot fail */
    uint64_t dirty_pages;
    int scan_block;
    uint64_t scan_page;
    RamBlockMig *last_sent;
    uint64_t period_start_ms; /* dirty-pages-rate period */
    uint64_t period_dirty;

    /* load side */
    bool load_active;
    RamBlockMig *last_recv;
    struct RamPrefault *pf;   /* prefault worker (ram-prefault.c), or NULL */

    /* counters (atomic) */
    uint64_t st_total, st_remaining, st_duplicate, st_normal;
    uint64_t st_sync_count, st_dirty_rate, st_section_bytes;
    uint64_t st_loaded_normal, st_loaded_zero, st_zero_skipped;

    struct RamPostcopy *pc;   /* postcopy-ram state (postcopy-int.h), or NULL */
};

static inline void stat_set(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

static inline void stat_add(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + v,
                     __ATOMIC_RELAXED);
}

static inline uint64_t stat_get(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

uint64_t fy_ram_now_ms(void);

/* ram-save.c: `be64 offset|flags`, plus the block id unless CONTINUE
 * applies (the previous record named the same block). */
void fy_ram_put_record_header(FyRamState *rs, FyStream *f, RamBlockMig *b,
                              uint64_t offset_flags);

/* Snapshot the RAM list into blocks[]; checks each block's shape. */
int fy_ram_snapshot_blocks(FyRamState *rs, FyError **errp);

/* ram-save.c */
int fy_ram_save_setup(FyStream *f, void *opaque, FyError **errp);
int fy_ram_save_iterate(FyStream *f, void *opaque, FyError **errp);
int fy_ram_save_complete(FyStream *f, void *opaque, FyError **errp);
void fy_ram_pending_estimate(void *opaque, uint64_t *must, uint64_t *can);
void fy_ram_pending_exact(void *opaque, uint64_t *must, uint64_t *can);
void fy_ram_save_cleanup(void *opaque);

/* ram-load.c */
int fy_ram_load_setup(void *opaque, FyError **errp);
int fy_ram_load_state(FyStream *f, void *opaque, int version_id, FyError **errp);
int fy_ram_load_cleanup(void *opaque);

/* ram-zero-map.c: which destination pages are certainly zero already. */
void fy_ram_zero_map_init(RamBlockMig *b);

/* postcopy-save.c, postcopy-load.c: the section in postcopy. The load hook
 * sees every PAGE/ZERO record after its block and offset are checked:
 * returns 1 to load it as usual, 0 when it placed the page, -1 on error. */
bool fy_ram_has_postcopy(void *opaque);
bool fy_ram_postcopy_sending(FyRamState *rs);
int fy_ram_postcopy_iterate(FyStream *f, FyRamState *rs, FyError **errp);
int fy_ram_save_complete_postcopy(FyStream *f, void *opaque, FyError **errp);
int fy_ram_postcopy_load_hook(FyRamState *rs, FyStream *f, const FyRamBlock *rb,
                              unsigned flags, uint64_t offset, FyError **errp);
int fy_ram_postcopy_check_flags(FyRamState *rs, unsigned flags, FyError **errp);
void fy_ram_postcopy_free(FyRamState *rs);

#endif
