/*
 * postcopy-discard.c: POSTCOPY_RAM_DISCARD, both ends.
 *
 * Payload (savevm.c qemu_savevm_send_postcopy_ram_discard): u8 version 0,
 * u8 n, name[n], u8 0, then (be64 start, be64 length) pairs. Start and
 * length are in bytes (postcopy_discard_send_range multiplies the page
 * numbers by the target page size), and the destination discards whole
 * host pages (ram_block_discard_range insists on page_size alignment), so
 * the source first widens partly dirty huge pages to whole ones
 * (postcopy_chunk_hostpages).
 *
 * Destination: the payload is hostile. It is parsed, then every range is
 * checked against its block, and only then are the ranges punched out and
 * their received bits cleared, so a bad payload changes nothing. Discards
 * come between ADVISE and LISTEN only (QEMU's "wrong postcopy state").
 *
 * Source: runs of set bits become ranges; a payload holds as many as its
 * be16 length allows (or fewer, on request).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ram/bitmap.h"
#include "ram/postcopy-int.h"

#define HEADER_LEN(n) (3 + (size_t)(n))
#define MAX_PAYLOAD 0xffffu

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

int fy_postcopy_discard_parse(const uint8_t *p, size_t len,
                              FyPostcopyDiscard *out, FyError **errp)
{
    memset(out, 0, sizeof(*out));
    /* version, name length, a name of at least one byte, nil, one range */
    if (len < 1 + 1 + 1 + 1 + 16) {
        fy_error_setg(errp, "POSTCOPY_RAM_DISCARD: length %zu is too short "
                      "(at least 20)", len);
        return -1;
    }
    if (p[0] != FY_POSTCOPY_DISCARD_VERSION) {
        fy_error_setg(errp, "POSTCOPY_RAM_DISCARD: version %u (expected %u)",
                      p[0], FY_POSTCOPY_DISCARD_VERSION);
        return -1;
    }
    size_t n = p[1];
    if (n == 0 || HEADER_LEN(n) > len) {
        fy_error_setg(errp, "POSTCOPY_RAM_DISCARD: RAM block name length %zu "
                      "does not fit the %zu byte payload", n, len);
        return -1;
    }
    memcpy(out->idstr, p + 2, n);
    out->idstr[n] = 0;
    if (strlen(out->idstr) != n) {
        fy_error_setg(errp, "POSTCOPY_RAM_DISCARD: RAM block name contains a "
                      "NUL byte");
        return -1;
    }
    if (p[2 + n] != 0) {
        fy_error_setg(errp, "POSTCOPY_RAM_DISCARD: missing nil after the RAM "
                      "block name '%s' (found 0x%02x)", out->idstr, p[2 + n]);
        return -1;
    }
    size_t rest = len - HEADER_LEN(n);
    if (rest == 0 || rest % 16) {
        fy_error_setg(errp, "POSTCOPY_RAM_DISCARD: %zu bytes of ranges for RAM "
                      "block '%s' (a non-zero multiple of 16)", rest, out->idstr);
        return -1;
    }
    out->count = (unsigned)(rest / 16);
    out->ranges = p + HEADER_LEN(n);
    return 0;
}

void fy_postcopy_discard_range(const FyPostcopyDiscard *pd, unsigned i,
                               uint64_t *start, uint64_t *length)
{
    *start = get_be64(pd->ranges + 16 * (size_t)i);
    *length = get_be64(pd->ranges + 16 * (size_t)i + 8);
}

static int check_range(const FyRamBlock *rb, unsigned i, uint64_t start,
                       uint64_t length, FyError **errp)
{
    const char *why = NULL;
    if (length == 0)
        why = "is empty";
    else if (start % rb->page_size || length % rb->page_size)
        why = "is not aligned to the block's page size";
    else if (start >= rb->used_length || length > rb->used_length - start)
        why = "runs past the end of the block";
    if (!why)
        return 0;
    fy_error_setg(errp, "POSTCOPY_RAM_DISCARD: range %u (start 0x%" PRIx64
                  ", length 0x%" PRIx64 ") of RAM block '%s' %s (0x%" PRIx64
                  " bytes, pages of 0x%" PRIx64 ")", i, start, length, rb->idstr,
                  why, rb->used_length, rb->page_size);
    return -1;
}

int fy_postcopy_dest_discard(FyPostcopyDest *d, const uint8_t *payload,
                             size_t len, FyError **errp)
{
    FyPostcopyDiscard pd;
    FyPostcopyDestState s = fy_pc_state(d);
    if (s != FY_POSTCOPY_DEST_ADVISED) {
        fy_error_setg(errp, "POSTCOPY_RAM_DISCARD: in postcopy state %s "
                      "(only between ADVISE and LISTEN)",
                      s == FY_POSTCOPY_DEST_NEW ? "new" : "listening or later");
        return -1;
    }
    if (fy_postcopy_discard_parse(payload, len, &pd, errp) < 0)
        return -1;
    PcBlock *b = fy_pc_block_by_name(d, pd.idstr);
    if (!b || b->ignored) {
        fy_error_setg(errp, "POSTCOPY_RAM_DISCARD: RAM block '%s' is %s",
                      pd.idstr, b ? "not migrated (x-ignore-shared)" : "unknown");
        return -1;
    }
    uint64_t start, length;
    for (unsigned i = 0; i < pd.count; i++) {
        fy_postcopy_discard_range(&pd, i, &start, &length);
        if (check_range(b->rb, i, start, length, errp) < 0)
            return -1;
    }
    for (unsigned i = 0; i < pd.count; i++) {
        fy_postcopy_discard_range(&pd, i, &start, &length);
        if (fy_pc_discard_backing(b, start, length, errp) < 0)
            return -1;
        uint64_t n = fy_pc_bits_clear(b->recv, start >> FY_TARGET_PAGE_BITS,
                                      length >> FY_TARGET_PAGE_BITS);
        __atomic_fetch_sub(&d->received, n, __ATOMIC_RELAXED);
    }
    return 0;
}

/* ---- source ---- */

uint64_t fy_postcopy_chunk_hostpages(const FyRamBlock *rb, unsigned long *map,
                                     uint64_t nbits)
{
    uint64_t k = rb->page_size >> FY_TARGET_PAGE_BITS, added = 0;
    if (k <= 1)
        return 0;
    for (uint64_t p = fy_find_next_bit(map, nbits, 0); p < nbits;
         p = fy_find_next_bit(map, nbits, p)) {
        uint64_t hp = p - p % k, end = hp + k < nbits ? hp + k : nbits;
        for (uint64_t i = hp; i < end; i++) {
            if (!fy_test_bit(map, i)) {
                fy_set_bit(map, i);
                added++;
            }
        }
        p = end;
    }
    return added;
}

/* First clear bit at or after start, or nbits. */
static uint64_t next_zero_bit(const unsigned long *map, uint64_t nbits, uint64_t start)
{
    while (start < nbits) {
        unsigned long w = ~map[start / FY_BITS_PER_LONG] >> (start % FY_BITS_PER_LONG);
        if (w) {
            uint64_t bit = start + (uint64_t)__builtin_ctzl(w);
            return bit < nbits ? bit : nbits;
        }
        start += FY_BITS_PER_LONG - start % FY_BITS_PER_LONG;
    }
    return nbits;
}

typedef struct DiscardOut {
    const FyRamBlock *rb;
    uint8_t *buf;
    size_t header, len;
    unsigned ranges, max_ranges;
    long emitted;
    FyPostcopyEmitFn emit;
    void *opaque;
} DiscardOut;

static int flush_payload(DiscardOut *o, FyError **errp)
{
    if (!o->ranges)
        return 0;
    if (o->emit(o->opaque, o->buf, (uint16_t)o->len, errp) < 0)
        return -1;
    o->emitted++;
    o->ranges = 0;
    o->len = o->header;
    return 0;
}

static int add_range(DiscardOut *o, uint64_t first, uint64_t end, FyError **errp)
{
    uint64_t k = o->rb->page_size >> FY_TARGET_PAGE_BITS;
    if (first % k || end % k) {
        fy_error_setg(errp, "postcopy discard: RAM block '%s' pages [%" PRIu64
                      ", %" PRIu64 ") split huge pages of %" PRIu64 " target "
                      "pages (chunk the bitmap first)", o->rb->idstr, first, end, k);
        return -1;
    }
    put_be64(o->buf + o->len, first << FY_TARGET_PAGE_BITS);
    put_be64(o->buf + o->len + 8, (end - first) << FY_TARGET_PAGE_BITS);
    o->len += 16;
    if (++o->ranges == o->max_ranges)
        return flush_payload(o, errp);
    return 0;
}

long fy_postcopy_discard_build(const FyRamBlock *rb, const unsigned long *map,
                               uint64_t nbits, unsigned max_ranges,
                               FyPostcopyEmitFn emit, void *opaque, FyError **errp)
{
    size_t n = strlen(rb->idstr);
    if (n == 0 || n > 255) {
        fy_error_setg(errp, "postcopy discard: RAM block name '%.40s' has %zu "
                      "bytes (1..255)", rb->idstr, n);
        return -1;
    }
    unsigned fit = (unsigned)((MAX_PAYLOAD - HEADER_LEN(n)) / 16);
    DiscardOut o = {
        .rb = rb, .header = HEADER_LEN(n), .len = HEADER_LEN(n),
        .max_ranges = max_ranges && max_ranges < fit ? max_ranges : fit,
        .emit = emit, .opaque = opaque,
    };
    o.buf = malloc(o.header + 16 * (size_t)o.max_ranges);
    if (!o.buf) {
        fy_error_setg(errp, "postcopy discard: out of memory");
        return -1;
    }
    o.buf[0] = FY_POSTCOPY_DISCARD_VERSION;
    o.buf[1] = (uint8_t)n;
    memcpy(o.buf + 2, rb->idstr, n);
    o.buf[2 + n] = 0;

    int r = 0;
    for (uint64_t p = fy_find_next_bit(map, nbits, 0); p < nbits && r == 0;) {
        uint64_t end = next_zero_bit(map, nbits, p);
        r = add_range(&o, p, end, errp);
        p = fy_find_next_bit(map, nbits, end);
    }
    if (r == 0)
        r = flush_payload(&o, errp);
    free(o.buf);
    return r < 0 ? -1 : o.emitted;
}
