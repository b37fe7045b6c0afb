/*
 * postcopy-save.c: the sending half of the RAM section in postcopy (QEMU's
 * ram_postcopy_send_discard_bitmap, ram_save_queue_pages and the postcopy
 * branch of ram_save_iterate / ram_save_complete).
 *
 * Phases on the source (the VM is stopped from the switch on, so every
 * page holds its final contents and may be sent straight from guest
 * memory, once or twice, in any order):
 *
 *   precopy     ram-save.c; has_postcopy() is true so the switch leaves
 *               RAM iterating
 *   switch      send_discards: final dirty sync, then for every page still
 *               to send a POSTCOPY_RAM_DISCARD range (the destination drops
 *               the copy it has, which is older)
 *   postcopy    iterate: requested pages first (flushed at once), then
 *               background pages in scan order, at most `bandwidth` bytes/s
 *               of them; requested pages are never held back
 *   complete    whatever is still dirty, then EOS
 *
 * Invariants (postcopy phase):
 * - bmap bit set = the destination may lack the page; only cleared by
 *   taking it atomically (take_bit) just before the page is put, so a page
 *   is put by whichever thread took it (main sender or preempt sender),
 *   and rs->dirty_pages (atomic here) counts the set bits.
 * - A requested page is put whatever its bit says: the destination asked
 *   because it does not have it (it may be in flight; duplicates are
 *   harmless, placement finds the page there and leaves it).
 * - Recovery replaces bmap with "not received" from the destination's
 *   bitmap while both senders are stopped.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ram/bitmap.h"
#include "ram/postcopy-int.h"
#include "ram/ram-int.h"

#define ITERATE_MAX_MS 50        /* leave the loop this often, as precopy */
#define WINDOW_NS 100000000ull   /* bandwidth accounting window */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static RamPostcopy *pc_get(FyRamState *rs)
{
    if (!rs->pc)
        rs->pc = calloc(1, sizeof(*rs->pc));
    return rs->pc;
}

void fy_ram_postcopy_free(FyRamState *rs)
{
    if (!rs->pc)
        return;
    free(rs->pc->page);
    free(rs->pc);
    rs->pc = NULL;
}

void fy_ram_postcopy_enable(FyRamState *rs, bool on)
{
    RamPostcopy *pc = on ? pc_get(rs) : rs->pc;
    if (pc)
        pc->enabled = on;
}

bool fy_ram_postcopy_enabled(FyRamState *rs)
{
    return rs->pc && rs->pc->enabled;
}

bool fy_ram_has_postcopy(void *opaque)
{
    return fy_ram_postcopy_enabled(opaque);
}

bool fy_ram_postcopy_sending(FyRamState *rs)
{
    return rs->pc && rs->pc->sending;
}

/* ---- bits ---- */

/* Clear bit and say whether it was set (and so whether we own the page). */
static bool take_bit(unsigned long *map, uint64_t bit)
{
    unsigned long m = 1ul << (bit % FY_BITS_PER_LONG);
    return __atomic_fetch_and(&map[bit / FY_BITS_PER_LONG], ~m,
                              __ATOMIC_RELAXED) & m;
}

/* fy_find_next_bit over words another thread clears concurrently. */
static uint64_t find_next_atomic(const unsigned long *map, uint64_t nbits,
                                 uint64_t start)
{
    while (start < nbits) {
        uint64_t w = start / FY_BITS_PER_LONG;
        unsigned long word = __atomic_load_n(&map[w], __ATOMIC_RELAXED) &
                             (~0ul << (start % FY_BITS_PER_LONG));
        if (word) {
            uint64_t bit = w * FY_BITS_PER_LONG + (uint64_t)__builtin_ctzl(word);
            return bit < nbits ? bit : nbits;
        }
        start = (w + 1) * FY_BITS_PER_LONG;
    }
    return nbits;
}

static uint64_t count_bits(const unsigned long *map, uint64_t nbits)
{
    uint64_t n = 0;
    for (size_t w = 0; w < FY_BITMAP_LONGS(nbits); w++)
        n += (uint64_t)__builtin_popcountl(map[w]);
    return n;
}

static void dirty_dec(FyRamState *rs)
{
    uint64_t left = __atomic_sub_fetch(&rs->dirty_pages, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&rs->st_remaining, left << FY_TARGET_PAGE_BITS,
                     __ATOMIC_RELAXED);
}

/* ---- putting pages ---- */

static void put_header(FyStream *f, const FyRamBlock *rb,
                       const FyRamBlock **last, uint64_t offset_flags)
{
    if (rb == *last) {
        fy_put_be64(f, offset_flags | RAM_SAVE_FLAG_CONTINUE);
        return;
    }
    fy_put_be64(f, offset_flags);
    fy_put_counted_string(f, rb->idstr);
    *last = rb;
}

/* One target page, as ZERO when it is known or found to be zero. */
static void put_page(FyRamState *rs, FyStream *f, RamBlockMig *b,
                     uint64_t page, const FyRamBlock **last)
{
    uint64_t offset = page << FY_TARGET_PAGE_BITS;
    const uint8_t *p = b->rb->host + offset;
    uint64_t before = fy_stream_offset(f);
    bool zero = rs->opt.detect_zero &&
                ((b->zero_map && fy_test_bit(b->zero_map, page)) ||
                 fy_buffer_is_zero(p, FY_TARGET_PAGE_SIZE));

    if (zero) {
        put_header(f, b->rb, last, offset | RAM_SAVE_FLAG_ZERO);
        fy_put_byte(f, 0);
        __atomic_fetch_add(&rs->st_duplicate, 1, __ATOMIC_RELAXED);
    } else {
        put_header(f, b->rb, last, offset | RAM_SAVE_FLAG_PAGE);
        fy_put_page(f, p, FY_TARGET_PAGE_SIZE);
        __atomic_fetch_add(&rs->st_normal, 1, __ATOMIC_RELAXED);
    }
    __atomic_fetch_add(&rs->pc->st_bytes, fy_stream_offset(f) - before,
                       __ATOMIC_RELAXED);
}

static RamBlockMig *mig_block(FyRamState *rs, const FyRamBlock *rb)
{
    for (int i = 0; i < rs->nblocks; i++)
        if (rs->blocks[i].rb == rb)
            return rs->blocks[i].bmap ? &rs->blocks[i] : NULL;
    return NULL;
}

int fy_ram_postcopy_send_urgent(FyRamState *rs, FyStream *f,
                                const FyPostcopyReq *req,
                                const FyRamBlock **last, FyError **errp)
{
    RamBlockMig *b = mig_block(rs, req->rb);
    if (!b) {
        fy_error_setg(errp, "postcopy: the destination asked for RAM block "
                      "'%s', which this migration does not send",
                      req->rb->idstr);
        return -1;
    }
    /* The queue checked the range against the block. */
    uint64_t first = req->offset >> FY_TARGET_PAGE_BITS;
    uint64_t end = first + (req->len >> FY_TARGET_PAGE_BITS);
    for (uint64_t page = first; page < end && page < b->pages; page++) {
        if (take_bit(b->bmap, page))
            dirty_dec(rs);
        put_page(rs, f, b, page, last);
        __atomic_fetch_add(&rs->pc->st_urgent, 1, __ATOMIC_RELAXED);
    }
    __atomic_fetch_add(&rs->pc->st_requests, 1, __ATOMIC_RELAXED);
    return fy_stream_check(f, errp);
}

/* Every queued request, then one flush so they leave now. */
static int serve_queue(FyRamState *rs, FyStream *f, const FyRamBlock **last,
                       FyError **errp)
{
    FyPostcopyReq req;
    bool sent = false;
    while (fy_postcopy_req_queue_pop(rs->pc->q, &req)) {
        if (fy_ram_postcopy_send_urgent(rs, f, &req, last, errp) < 0)
            return -1;
        sent = true;
    }
    if (sent)
        fy_stream_flush(f);
    return fy_stream_check(f, errp);
}

/* The next page still to send after the scan position. Returns 1 if a page
 * was put, 0 when none is left. */
static int send_next_dirty(FyRamState *rs, FyStream *f, const FyRamBlock **last)
{
    while (__atomic_load_n(&rs->dirty_pages, __ATOMIC_RELAXED)) {
        bool found = false;
        for (int step = 0; step <= rs->nblocks && !found; step++) {
            RamBlockMig *b = &rs->blocks[rs->scan_block];
            uint64_t page = b->bmap
                ? find_next_atomic(b->bmap, b->pages, rs->scan_page) : b->pages;
            if (page < b->pages) {
                found = true;
                rs->scan_page = page + 1;
                if (take_bit(b->bmap, page)) {
                    dirty_dec(rs);
                    put_page(rs, f, b, page, last);
                    return 1;
                }
                /* the preempt sender took it just now: look further */
            } else {
                rs->scan_block = (rs->scan_block + 1) % rs->nblocks;
                rs->scan_page = 0;
            }
        }
        if (!found)
            return 0;
    }
    return 0;
}

/* ---- bandwidth of the background stream ---- */

static bool budget_spent(RamPostcopy *pc)
{
    if (!pc->bandwidth)
        return false;
    uint64_t now = now_ns();
    if (now - pc->win_start_ns >= WINDOW_NS) {
        pc->win_start_ns = now;
        pc->win_bytes = 0;
    }
    return pc->win_bytes >= pc->bandwidth / 10;
}

uint64_t fy_ram_postcopy_throttle_ms(FyRamState *rs)
{
    RamPostcopy *pc = rs->pc;
    if (!pc || !budget_spent(pc))
        return 0;
    uint64_t left = pc->win_start_ns + WINDOW_NS - now_ns();
    return left / 1000000 + 1;
}

void fy_ram_postcopy_set_bandwidth(FyRamState *rs, uint64_t bandwidth)
{
    if (rs->pc)
        rs->pc->bandwidth = bandwidth;
}

/* ---- the phases ---- */

static int emit_discard(void *opaque, const uint8_t *payload, uint16_t len,
                        FyError **errp)
{
    FyStream *f = opaque;
    fy_savevm_command_send(f, MIG_CMD_POSTCOPY_RAM_DISCARD, len, payload);
    return fy_stream_check(f, errp);
}

int fy_ram_postcopy_send_discards(FyRamState *rs, FyStream *f, FyError **errp)
{
    uint64_t must = 0, can = 0;
    if (!rs->save_active) {
        fy_error_setg(errp, "postcopy: RAM discards without a running save");
        return -1;
    }
    /* With the VM stopped, this sync finds the last pages written. */
    fy_ram_pending_exact(rs, &must, &can);
    if (rs->save_err) {
        fy_error_propagate(errp, rs->save_err);
        rs->save_err = NULL;
        return -1;
    }
    for (int i = 0; i < rs->nblocks; i++) {
        RamBlockMig *b = &rs->blocks[i];
        if (b->ignored || !b->bmap)
            continue;
        rs->dirty_pages += fy_postcopy_chunk_hostpages(b->rb, b->bmap, b->pages);
        if (fy_postcopy_discard_build(b->rb, b->bmap, b->pages,
                                      FY_POSTCOPY_DISCARD_QEMU_RANGES,
                                      emit_discard, f, errp) < 0) {
            fy_error_prepend(errp, "postcopy: discards of RAM block '%s': ",
                             b->rb->idstr);
            return -1;
        }
    }
    stat_set(&rs->st_remaining, rs->dirty_pages << FY_TARGET_PAGE_BITS);
    return 0;
}

int fy_ram_postcopy_begin(FyRamState *rs, FyPostcopyReqQueue *q, bool preempt,
                          uint64_t bandwidth, FyError **errp)
{
    RamPostcopy *pc = rs->pc;
    if (!pc || !pc->enabled || !rs->save_active) {
        fy_error_setg(errp, "postcopy: the RAM section is not ready for "
                      "postcopy (capability off or no save under way)");
        return -1;
    }
    pc->q = q;
    pc->preempt = preempt;
    pc->bandwidth = bandwidth;
    pc->win_start_ns = now_ns();
    pc->win_bytes = 0;
    pc->st_bytes = pc->st_urgent = pc->st_requests = 0;
    pc->sending = true;
    return 0;
}

void fy_ram_postcopy_end(FyRamState *rs)
{
    if (rs->pc) {
        rs->pc->sending = false;
        rs->pc->q = NULL;
    }
}

int fy_ram_postcopy_iterate(FyStream *f, FyRamState *rs, FyError **errp)
{
    RamPostcopy *pc = rs->pc;
    uint64_t start_off = fy_stream_offset(f);
    uint64_t start_ms = fy_ram_now_ms();
    const FyRamBlock *last = NULL;
    int done = 0;

    for (unsigned n = 1;; n++) {
        if (!pc->preempt && serve_queue(rs, f, &last, errp) < 0)
            return -1;
        if (budget_spent(pc))
            break;
        uint64_t before = fy_stream_offset(f);
        if (!send_next_dirty(rs, f, &last)) {
            done = 1;
            break;
        }
        pc->win_bytes += fy_stream_offset(f) - before;
        if (fy_stream_error(f))
            break;
        if (n % 64 == 0 && fy_ram_now_ms() - start_ms > ITERATE_MAX_MS)
            break;
    }
    fy_put_be64(f, RAM_SAVE_FLAG_EOS);
    __atomic_fetch_add(&rs->st_section_bytes, fy_stream_offset(f) - start_off,
                       __ATOMIC_RELAXED);
    if (fy_stream_check(f, errp) < 0)
        return -1;
    return done;
}

int fy_ram_save_complete_postcopy(FyStream *f, void *opaque, FyError **errp)
{
    FyRamState *rs = opaque;
    uint64_t start_off = fy_stream_offset(f);
    const FyRamBlock *last = NULL;

    if (!fy_ram_postcopy_sending(rs)) {
        fy_error_setg(errp, "postcopy: RAM completion outside the postcopy "
                      "phase");
        return -1;
    }
    while (!fy_stream_error(f) && send_next_dirty(rs, f, &last))
        ;
    fy_put_be64(f, RAM_SAVE_FLAG_EOS);
    __atomic_fetch_add(&rs->st_section_bytes, fy_stream_offset(f) - start_off,
                       __ATOMIC_RELAXED);
    return fy_stream_check(f, errp);
}

/* ---- recovery ---- */

int fy_ram_postcopy_reload_bitmap(FyRamState *rs, FyStream *rp,
                                  const char *idstr, FyError **errp)
{
    RamBlockMig *b = NULL;
    for (int i = 0; i < rs->nblocks && !b; i++)
        if (!strcmp(rs->blocks[i].rb->idstr, idstr) && rs->blocks[i].bmap)
            b = &rs->blocks[i];
    if (!b) {
        fy_error_setg(errp, "received bitmap for RAM block '%s', which this "
                      "migration does not send", idstr);
        return -1;
    }
    unsigned long *recv = fy_bitmap_new(b->pages);
    if (!recv) {
        fy_error_setg(errp, "out of memory for the received bitmap of RAM "
                      "block '%s'", idstr);
        return -1;
    }
    int r = fy_postcopy_recv_bitmap_read(rp, b->rb, recv, errp);
    if (r == 0) {
        uint64_t had = count_bits(b->bmap, b->pages);
        uint64_t now = fy_postcopy_dirty_from_received(recv, b->bmap, b->pages);
        uint64_t left = __atomic_load_n(&rs->dirty_pages, __ATOMIC_RELAXED)
                        - had + now;
        __atomic_store_n(&rs->dirty_pages, left, __ATOMIC_RELAXED);
        stat_set(&rs->st_remaining, left << FY_TARGET_PAGE_BITS);
        rs->scan_block = 0;
        rs->scan_page = 0;
    }
    free(recv);
    return r;
}

uint64_t fy_ram_postcopy_pending_pages(FyRamState *rs)
{
    return __atomic_load_n(&rs->dirty_pages, __ATOMIC_RELAXED);
}

void fy_ram_postcopy_get_stats(FyRamState *rs, FyRamPostcopyStats *out)
{
    memset(out, 0, sizeof(*out));
    if (!rs->pc)
        return;
    out->bytes = __atomic_load_n(&rs->pc->st_bytes, __ATOMIC_RELAXED);
    out->urgent_pages = __atomic_load_n(&rs->pc->st_urgent, __ATOMIC_RELAXED);
    out->requests = __atomic_load_n(&rs->pc->st_requests, __ATOMIC_RELAXED);
}
