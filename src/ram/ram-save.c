/*
 * ram-save.c: the sending half of the RAM section (QEMU's ram_save_*).
 *
 * Dirty pages are found with a word-at-a-time scan that resumes where the
 * previous one stopped and wraps around the blocks, so every dirty page is
 * reached once per pass. A page is put either as
 *   be64 offset|ZERO [+ idstr]  u8 0          (an all-zero page), or
 *   be64 offset|PAGE [+ idstr]  4096 bytes    (queued by address: the stream
 *                                              sends it from guest memory at
 *                                              the next flush, no copy)
 * Because the bytes leave at flush time, a page written by a vCPU between
 * queue and flush goes out newer than it was scanned; that is harmless: the
 * write also set the page dirty in the VM's log, the next sync puts it back
 * in the bitmap, and the final pass runs with the vCPUs stopped.
 *
 * Pages that were never populated (memfd holes, unpopulated private
 * memory) are known zero at setup and go out as ZERO without being read:
 * reading a memfd hole would allocate a page on the source (see ram-int.h
 * for why this stays correct while the VM runs).
 *
 * Dirty sync (migration_bitmap_sync): FyVMOps.dirty_log_sync ORs the pages
 * written since the last sync into a scratch bitmap per block, which is
 * merged into the pages to send and taken out of the zero map; the count of
 * newly dirty pages over periods of at least a second gives
 * dirty-pages-rate.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ram/bitmap.h"
#include "ram/ram-converge.h"
#include "ram/ram-int.h"
#include "ram/ram-multifd.h"

#define ITERATE_MAX_MS 50 /* QEMU's MAX_WAIT: leave the loop this often */
#define SYNC_RATE_PERIOD_MS 1000

static void free_bitmaps(FyRamState *rs)
{
    for (int i = 0; i < rs->nblocks; i++) {
        RamBlockMig *b = &rs->blocks[i];
        free(b->bmap);
        free(b->synced);
        free(b->zero_map);
        b->bmap = b->synced = b->zero_map = NULL;
    }
}

/* One block: the VM's log into `synced`, then merged. Returns the number of
 * pages that became dirty, or -1. */
static int64_t sync_block(FyRamState *rs, RamBlockMig *b, FyError **errp)
{
    size_t words = FY_BITMAP_LONGS(b->pages);
    FyError *err = NULL;

    memset(b->synced, 0, words * sizeof(unsigned long));
    if (rs->vm->dirty_log_sync(rs->vm_opaque, b->rb, b->synced, &err) < 0) {
        if (!err)
            fy_error_setg(&err, "the VM reported a failure");
        fy_error_prepend(&err, "dirty sync of RAM block '%s': ", b->rb->idstr);
        fy_error_propagate(errp, err);
        return -1;
    }
    if (b->pages % FY_BITS_PER_LONG) /* nothing past the last page */
        b->synced[words - 1] &= (1ul << (b->pages % FY_BITS_PER_LONG)) - 1;
    int64_t fresh = 0;
    for (size_t w = 0; w < words; w++) {
        unsigned long d = b->synced[w];
        if (!d)
            continue;
        fresh += __builtin_popcountl(d & ~b->bmap[w]);
        b->bmap[w] |= d;
        b->zero_map[w] &= ~d;
    }
    return fresh;
}

static int bitmap_sync(FyRamState *rs, FyError **errp)
{
    uint64_t fresh = 0;
    for (int i = 0; rs->vm->dirty_log_sync && i < rs->nblocks; i++) {
        if (rs->blocks[i].ignored)
            continue;
        int64_t n = sync_block(rs, &rs->blocks[i], errp);
        if (n < 0)
            return -1;
        fresh += (uint64_t)n;
    }
    rs->dirty_pages += fresh;
    rs->period_dirty += fresh;

    uint64_t now = fy_ram_now_ms();
    if (now - rs->period_start_ms >= SYNC_RATE_PERIOD_MS) {
        stat_set(&rs->st_dirty_rate,
                 rs->period_dirty * 1000 / (now - rs->period_start_ms));
        rs->period_start_ms = now;
        rs->period_dirty = 0;
    }
    stat_set(&rs->st_remaining, rs->dirty_pages << FY_TARGET_PAGE_BITS);
    uint64_t count = stat_get(&rs->st_sync_count) + 1;
    stat_set(&rs->st_sync_count, count);
    fy_ram_conv_synced(rs);
    fy_ram_mfd_dirty_synced(rs);
    if (rs->sync_fn)
        rs->sync_fn(rs->sync_opaque, count);
    return 0;
}

void fy_ram_put_record_header(FyRamState *rs, FyStream *f, RamBlockMig *b,
                              uint64_t offset_flags)
{
    if (b == rs->last_sent) {
        fy_put_be64(f, offset_flags | RAM_SAVE_FLAG_CONTINUE);
        return;
    }
    fy_put_be64(f, offset_flags);
    fy_put_counted_string(f, b->rb->idstr);
    rs->last_sent = b;
}

static void save_page(FyRamState *rs, FyStream *f, RamBlockMig *b,
                      uint64_t page)
{
    uint64_t offset = page << FY_TARGET_PAGE_BITS;
    const uint8_t *p = b->rb->host + offset;

    if (fy_ram_mfd_save_page(rs, f, b, page))
        return; /* queued to a multifd channel */
    bool zero = rs->opt.detect_zero &&
                (fy_test_bit(b->zero_map, page) ||
                 fy_buffer_is_zero(p, FY_TARGET_PAGE_SIZE));
    if (zero) {
        fy_ram_put_record_header(rs, f, b, offset | RAM_SAVE_FLAG_ZERO);
        fy_put_byte(f, 0);
        stat_add(&rs->st_duplicate, 1);
        fy_ram_conv_zero_page(rs, b, page);
    } else if (!fy_ram_conv_save_page(rs, f, b, page)) {
        fy_ram_put_record_header(rs, f, b, offset | RAM_SAVE_FLAG_PAGE);
        fy_put_page(f, p, FY_TARGET_PAGE_SIZE);
        stat_add(&rs->st_normal, 1);
    }
}

/* Put the next dirty page after the scan position. Returns 1 if a page was
 * put, 0 when no block has a dirty page. */
static int find_and_save_page(FyRamState *rs, FyStream *f)
{
    if (!rs->dirty_pages)
        return 0;
    /* nblocks + 1 steps: the start block is visited again from page 0. */
    for (int step = 0; step <= rs->nblocks; step++) {
        RamBlockMig *b = &rs->blocks[rs->scan_block];
        if (b->bmap) {
            uint64_t page = fy_find_next_bit(b->bmap, b->pages, rs->scan_page);
            if (page < b->pages) {
                fy_clear_bit(b->bmap, page);
                rs->dirty_pages--;
                rs->scan_page = page + 1;
                save_page(rs, f, b, page);
                return 1;
            }
        }
        rs->scan_block = (rs->scan_block + 1) % rs->nblocks;
        rs->scan_page = 0;
    }
    return 0;
}

static int take_save_err(FyRamState *rs, FyError **errp)
{
    if (!rs->save_err)
        return 0;
    fy_error_propagate(errp, rs->save_err);
    rs->save_err = NULL;
    return -1;
}

static int finish_section(FyRamState *rs, FyStream *f, uint64_t start_off,
                          FyError **errp)
{
    fy_put_be64(f, RAM_SAVE_FLAG_EOS);
    stat_add(&rs->st_section_bytes, fy_stream_offset(f) - start_off);
    stat_set(&rs->st_remaining, rs->dirty_pages << FY_TARGET_PAGE_BITS);
    return fy_stream_check(f, errp);
}

static int alloc_bitmaps(FyRamState *rs, uint64_t *total,
                         uint64_t *total_with_ignored, FyError **errp)
{
    *total = *total_with_ignored = 0;
    rs->dirty_pages = 0;
    for (int i = 0; i < rs->nblocks; i++) {
        RamBlockMig *b = &rs->blocks[i];
        *total_with_ignored += b->rb->used_length;
        if (b->ignored)
            continue;
        b->bmap = fy_bitmap_new(b->pages);
        b->synced = fy_bitmap_new(b->pages);
        b->zero_map = fy_bitmap_new(b->pages);
        if (!b->bmap || !b->synced || !b->zero_map) {
            fy_error_setg(errp, "out of memory for the dirty bitmap of RAM "
                          "block '%s'", b->rb->idstr);
            return -1;
        }
        /* Every page is dirty at first: the first pass sends all of RAM. */
        fy_bitmap_fill(b->bmap, b->pages);
        rs->dirty_pages += b->pages;
        *total += b->rb->used_length;
    }
    return 0;
}

static void reset_counters(FyRamState *rs, uint64_t total)
{
    rs->scan_block = 0;
    rs->scan_page = 0;
    rs->last_sent = NULL;
    rs->period_start_ms = fy_ram_now_ms();
    rs->period_dirty = 0;
    stat_set(&rs->st_total, total);
    stat_set(&rs->st_duplicate, 0);
    stat_set(&rs->st_normal, 0);
    stat_set(&rs->st_sync_count, 0);
    stat_set(&rs->st_dirty_rate, 0);
    stat_set(&rs->st_section_bytes, 0);
}

/* Dirty log on, zero map from the memory as it is now, first sync. The
 * order matters: a write after the log starts is either seen by the zero
 * map (the page is populated) or cleared from it by a sync. */
static int start_tracking(FyRamState *rs, FyError **errp)
{
    if (rs->vm->dirty_log_start) {
        if (rs->vm->dirty_log_start(rs->vm_opaque, errp) < 0) {
            fy_error_prepend(errp, "starting dirty page tracking: ");
            return -1;
        }
        rs->dirty_log_on = true;
    }
    for (int i = 0; i < rs->nblocks; i++) {
        if (!rs->blocks[i].ignored)
            fy_ram_zero_map_init(&rs->blocks[i]);
    }
    return bitmap_sync(rs, errp);
}

int fy_ram_save_setup(FyStream *f, void *opaque, FyError **errp)
{
    FyRamState *rs = opaque;
    uint64_t start_off = fy_stream_offset(f);
    uint64_t total, total_with_ignored;

    fy_ram_save_cleanup(rs);
    if (fy_ram_snapshot_blocks(rs, errp) < 0)
        return -1;
    if (!rs->vm->dirty_log_sync && rs->vm->is_running &&
        rs->vm->is_running(rs->vm_opaque)) {
        fy_error_setg(errp, "the VM is running but has no dirty page "
                      "tracking (FyVMOps.dirty_log_sync): stop it first");
        return -1;
    }
    rs->save_active = true; /* from here save_cleanup undoes what follows */
    if (alloc_bitmaps(rs, &total, &total_with_ignored, errp) < 0)
        return -1;
    reset_counters(rs, total);
    if (fy_ram_conv_save_setup(rs, errp) < 0)
        return -1;
    if (start_tracking(rs, errp) < 0)
        return -1;

    fy_put_be64(f, total_with_ignored | RAM_SAVE_FLAG_MEM_SIZE);
    for (int i = 0; i < rs->nblocks; i++) {
        FyRamBlock *rb = rs->blocks[i].rb;
        fy_put_counted_string(f, rb->idstr);
        fy_put_be64(f, rb->used_length);
        if (rs->opt.ignore_shared)
            fy_put_be64(f, rb->mr_addr);
    }
    return finish_section(rs, f, start_off, errp);
}

int fy_ram_save_iterate(FyStream *f, void *opaque, FyError **errp)
{
    FyRamState *rs = opaque;
    uint64_t start_off = fy_stream_offset(f);
    uint64_t start_ms = fy_ram_now_ms();
    int done = 0;

    if (take_save_err(rs, errp) < 0)
        return -1;
    if (rs->pc && fy_ram_postcopy_sending(rs))
        return fy_ram_postcopy_iterate(f, rs, errp);
    rs->last_sent = NULL;
    for (unsigned n = 1; !fy_stream_rate_limit_exceeded(f); n++) {
        if (!find_and_save_page(rs, f)) {
            done = 1;
            break;
        }
        if (n % 64 == 0 && fy_ram_now_ms() - start_ms > ITERATE_MAX_MS)
            break;
    }
    if (finish_section(rs, f, start_off, errp) < 0)
        return -1;
    return done;
}

int fy_ram_save_complete(FyStream *f, void *opaque, FyError **errp)
{
    FyRamState *rs = opaque;
    uint64_t start_off = fy_stream_offset(f);

    if (take_save_err(rs, errp) < 0)
        return -1;
    if (!rs->save_active) {
        fy_error_setg(errp, "RAM completion without setup");
        return -1;
    }
    rs->last_sent = NULL;
    /* The vCPUs are stopped: this sync finds the last pages. */
    if (bitmap_sync(rs, errp) < 0)
        return -1;
    while (!fy_stream_error(f) && find_and_save_page(rs, f))
        ;
    fy_ram_mfd_save_complete(rs, f);
    return finish_section(rs, f, start_off, errp);
}

void fy_ram_pending_estimate(void *opaque, uint64_t *must, uint64_t *can)
{
    FyRamState *rs = opaque;
    *must += rs->dirty_pages << FY_TARGET_PAGE_BITS;
    (void)can;
}

void fy_ram_pending_exact(void *opaque, uint64_t *must, uint64_t *can)
{
    FyRamState *rs = opaque;
    if (rs->save_active && !rs->save_err)
        bitmap_sync(rs, &rs->save_err);
    fy_ram_pending_estimate(rs, must, can);
}

void fy_ram_save_cleanup(void *opaque)
{
    FyRamState *rs = opaque;
    if (!rs->save_active)
        return;
    if (rs->dirty_log_on && rs->vm->dirty_log_stop)
        rs->vm->dirty_log_stop(rs->vm_opaque);
    rs->dirty_log_on = false;
    fy_ram_conv_save_cleanup(rs);
    free_bitmaps(rs);
    fy_error_free(rs->save_err);
    rs->save_err = NULL;
    rs->save_active = false;
    rs->dirty_pages = 0;
}
