/*
 * ram-converge.c: XBZRLE in the RAM section, and the dirty-page count that
 * calc-dirty-rate borrows from a running migration.
 *
 * XBZRLE on the sender (QEMU's save_xbzrle_page and friends):
 *
 *   save_setup     the cache (xbzrle.h) is made, empty; block bases give
 *                  every page a key unique over all blocks
 *   first pass     pages go as PAGE/ZERO; nothing is cached (QEMU also
 *                  waits for the end of the bulk stage)
 *   sync >= 2      "active": each non-zero dirty page goes through
 *                  fy_xbzrle_save_page(): a miss is put as a PAGE (the
 *                  cache's copy when it took one), a hit as an XBZRLE
 *                  record, an overflow as a PAGE, an unchanged page not at
 *                  all; a ZERO page is cached as zeros
 *   final stage    the VM is stopped (seen at the last sync): the cache is
 *                  not updated any more, encoding goes on
 *   cleanup        the cache goes; its counters stay for query-migrate
 *
 * Invariant while active: for every page in the cache, the cache holds
 * exactly what the destination holds. It holds because every page the
 * sender puts after activation goes through this file (PAGEs that the
 * cache took are sent from the cache's copy, with a copy into the stream,
 * never by reference to guest memory that may change before the flush),
 * and ZERO pages overwrite their cache entry.
 *
 * Locks: `mu` guards the configuration, the cache pointer and the saved
 * counters against other threads (QMP: resize, query). Only the migration
 * thread creates and frees the cache, so it reads the pointer without
 * `mu`; per page it holds the cache's own lock, which a resize also takes.
 * Lock order: mu, then the cache lock.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/converge.h"
#include "ram/bitmap.h"
#include "ram/ram-converge.h"
#include "ram/ram-int.h"

#define PS FY_TARGET_PAGE_SIZE

struct FyRamConv {
    pthread_mutex_t mu;
    bool on;                      /* (mu) XBZRLE at the next save_setup */
    uint64_t cache_size;          /* (mu) */
    FyXbzrleCache *cache;         /* (mu) written by the sender only */
    bool have_stats;              /* (mu) */
    FyXbzrleStats last;           /* (mu) counters of the last run */

    /* the sender's (migration thread) */
    bool active;                  /* encoding: the second sync has been */
    bool last_stage;              /* the VM is stopped: cache frozen */
    uint64_t generation;          /* dirty-sync count */
    uint64_t base[FY_RAMBLOCK_MAX];
    uint64_t xb_pages;            /* pages sent neither PAGE nor ZERO */
    uint64_t handled_prev;
    uint8_t *out;                 /* one page: the encoding */

    uint64_t reported;            /* atomic: dirty pages the syncs reported */
};

FyRamConv *fy_ram_conv_new(void)
{
    FyRamConv *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    pthread_mutex_init(&c->mu, NULL);
    c->cache_size = FY_XBZRLE_DEFAULT_CACHE_SIZE;
    return c;
}

void fy_ram_conv_free(FyRamConv *c)
{
    if (!c)
        return;
    fy_xbzrle_cache_free(c->cache);
    free(c->out);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ---- configuration and counters (any thread) ---- */

int fy_ram_xbzrle_configure(FyRamState *rs, bool on, uint64_t cache_size,
                            FyError **errp)
{
    FyRamConv *c = rs->conv;
    int ret = 0;

    if (fy_xbzrle_cache_size_check(cache_size, PS, errp) < 0)
        return -1;
    pthread_mutex_lock(&c->mu);
    if (c->cache && cache_size != c->cache_size)
        ret = fy_xbzrle_cache_resize(c->cache, cache_size, errp);
    if (ret == 0) {
        c->on = on;
        c->cache_size = cache_size;
    }
    pthread_mutex_unlock(&c->mu);
    return ret;
}

bool fy_ram_xbzrle_get_stats(FyRamState *rs, FyXbzrleStats *out)
{
    FyRamConv *c = rs->conv;
    pthread_mutex_lock(&c->mu);
    bool have = c->cache || c->have_stats;
    if (c->cache)
        fy_xbzrle_get_stats(c->cache, out);
    else if (c->have_stats)
        *out = c->last;
    pthread_mutex_unlock(&c->mu);
    return have;
}

uint64_t fy_ram_dirty_pages_reported(FyRamState *rs)
{
    return __atomic_load_n(&rs->conv->reported, __ATOMIC_RELAXED);
}

/* ---- the sender ---- */

int fy_ram_conv_save_setup(FyRamState *rs, FyError **errp)
{
    FyRamConv *c = rs->conv;
    uint64_t base = 0;

    c->active = c->last_stage = false;
    c->generation = 0;
    c->xb_pages = c->handled_prev = 0;
    __atomic_store_n(&c->reported, 0, __ATOMIC_RELAXED);
    for (int i = 0; i < rs->nblocks; i++) {
        c->base[i] = base;
        base += rs->blocks[i].rb->used_length;
    }

    pthread_mutex_lock(&c->mu);
    bool on = c->on;
    uint64_t size = c->cache_size;
    c->have_stats = false;
    pthread_mutex_unlock(&c->mu);
    if (!on)
        return 0;

    if (!c->out && !(c->out = malloc(PS))) {
        fy_error_setg(errp, "XBZRLE: out of memory for the encoding buffer");
        return -1;
    }
    FyXbzrleCache *x = fy_xbzrle_cache_new(size, PS, errp);
    if (!x) {
        fy_error_prepend(errp, "capability 'xbzrle': ");
        return -1;
    }
    pthread_mutex_lock(&c->mu);
    c->cache = x;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

void fy_ram_conv_save_cleanup(FyRamState *rs)
{
    FyRamConv *c = rs->conv;
    pthread_mutex_lock(&c->mu);
    FyXbzrleCache *x = c->cache;
    if (x) {
        fy_xbzrle_get_stats(x, &c->last);
        c->have_stats = true;
        c->cache = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    fy_xbzrle_cache_free(x);
    c->active = false;
}

static uint64_t count_reported(FyRamState *rs)
{
    uint64_t n = 0;
    for (int i = 0; i < rs->nblocks; i++) {
        const RamBlockMig *b = &rs->blocks[i];
        if (b->ignored || !b->synced)
            continue;
        for (size_t w = 0; w < FY_BITMAP_LONGS(b->pages); w++)
            n += (uint64_t)__builtin_popcountl(b->synced[w]);
    }
    return n;
}

void fy_ram_conv_synced(FyRamState *rs)
{
    FyRamConv *c = rs->conv;

    __atomic_fetch_add(&c->reported, count_reported(rs), __ATOMIC_RELAXED);
    c->generation = stat_get(&rs->st_sync_count);
    if (rs->vm->is_running && !rs->vm->is_running(rs->vm_opaque))
        c->last_stage = true;
    if (!c->cache)
        return;
    c->active = c->generation >= 2;

    uint64_t handled = stat_get(&rs->st_normal) + stat_get(&rs->st_duplicate) +
                       c->xb_pages;
    fy_xbzrle_lock(c->cache);
    fy_xbzrle_update_rates(c->cache, handled - c->handled_prev);
    fy_xbzrle_unlock(c->cache);
    c->handled_prev = handled;
}

bool fy_ram_conv_save_page(FyRamState *rs, FyStream *f, RamBlockMig *b,
                           uint64_t page)
{
    FyRamConv *c = rs->conv;
    FyXbzrleCache *x = c->cache;
    if (!x || !c->active)
        return false;

    uint64_t offset = page << FY_TARGET_PAGE_BITS;
    const uint8_t *p = b->rb->host + offset;
    uint64_t key = c->base[b - rs->blocks] + offset;
    bool named = b != rs->last_sent;
    FyXbzrleResult r;

    fy_xbzrle_lock(x);
    fy_xbzrle_save_page(x, key, p, c->generation, c->last_stage, c->out, &r);
    switch (r.outcome) {
    case FY_XBZRLE_UNCHANGED:
        c->xb_pages++;
        break;
    case FY_XBZRLE_ENCODED:
        fy_ram_put_record_header(rs, f, b, offset | RAM_SAVE_FLAG_XBZRLE);
        if (named)
            fy_xbzrle_account_header(x, 1 + strlen(b->rb->idstr));
        fy_put_byte(f, ENCODING_FLAG_XBZRLE);
        fy_put_be16(f, (uint16_t)r.len);
        fy_put_buffer(f, r.data, r.len);
        c->xb_pages++;
        break;
    case FY_XBZRLE_MISS:
    case FY_XBZRLE_OVERFLOW:
        fy_ram_put_record_header(rs, f, b, offset | RAM_SAVE_FLAG_PAGE);
        /* The cache's copy must leave now: the lock is dropped below. The
         * guest page itself may go by reference (it is not cached). */
        if (r.data == p)
            fy_put_page(f, p, PS);
        else
            fy_put_buffer(f, r.data, PS);
        stat_add(&rs->st_normal, 1);
        break;
    }
    fy_xbzrle_unlock(x);
    return true;
}

void fy_ram_conv_zero_page(FyRamState *rs, RamBlockMig *b, uint64_t page)
{
    FyRamConv *c = rs->conv;
    FyXbzrleCache *x = c->cache;
    if (!x || !c->active || c->last_stage)
        return;
    uint64_t key = c->base[b - rs->blocks] + (page << FY_TARGET_PAGE_BITS);
    fy_xbzrle_lock(x);
    fy_xbzrle_cache_zero_page(x, key, c->generation);
    fy_xbzrle_unlock(x);
}

/* ---- the receiver ---- */

int fy_ram_conv_load_xbzrle(FyRamState *rs, FyStream *f, RamBlockMig *b,
                            uint64_t offset, FyError **errp)
{
    uint8_t scratch[PS];
    (void)rs;
    /* The page may stop being zero: take it out of the zero map first. */
    if (b->zero_map)
        fy_clear_bit(b->zero_map, offset >> FY_TARGET_PAGE_BITS);
    if (fy_xbzrle_load_record(f, scratch, b->rb->host + offset, PS,
                              errp) < 0) {
        fy_error_prepend(errp, "XBZRLE page at offset 0x%" PRIx64 " of RAM "
                         "block '%s': ", offset, b->rb->idstr);
        return -1;
    }
    return 0;
}
