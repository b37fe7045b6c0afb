/*
 * postcopy-wire.c: postcopy's messages in QEMU's encoding.
 *
 * Return path (destination -> source; `be16 type, be16 len, payload`):
 *   REQ_PAGES_ID  be64 start, be32 len, u8 n, name[n]   (len == 13 + n)
 *   REQ_PAGES     be64 start, be32 len                  (len == 12)
 *   RECV_BITMAP   u8 n, name[n]; then, outside the message's length, the
 *                 body: be64 size, size bytes, be64 0x0123456789abcdef
 * The bitmap bytes are QEMU's bitmap converted to little-endian longs, so
 * bit i of the block is bit (i % 8) of byte (i / 8), whatever the host; the
 * size is ceil(nbits / 8) rounded up to 8 (QEMU pads for 32-bit peers).
 *
 * Commands (source -> destination):
 *   POSTCOPY_ADVISE  be64 OR of the migrating blocks' page sizes, be64
 *                    target page size; both must match the destination
 *   RECV_BITMAP      u8 n, name[n]
 *
 * Everything decoded here is hostile: lengths are compared with what the
 * type allows before a byte is used, and the bitmap body is sized from
 * the local block, never from the stream.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "migration/migration-int.h"
#include "ram/postcopy-int.h"

_Static_assert((int)FY_RP_MSG_REQ_PAGES_ID == (int)MIG_RP_MSG_REQ_PAGES_ID, "RP type");
_Static_assert((int)FY_RP_MSG_REQ_PAGES == (int)MIG_RP_MSG_REQ_PAGES, "RP type");
_Static_assert((int)FY_RP_MSG_RECV_BITMAP == (int)MIG_RP_MSG_RECV_BITMAP, "RP type");
_Static_assert((int)FY_RP_MSG_RESUME_ACK == (int)MIG_RP_MSG_RESUME_ACK, "RP type");

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- REQ_PAGES / REQ_PAGES_ID ---- */

void fy_postcopy_req_encoder_reset(FyPostcopyReqEncoder *e)
{
    e->have_last = false;
    e->last[0] = 0;
}

int fy_postcopy_encode_req_pages(FyPostcopyReqEncoder *e, const char *idstr,
                                 uint64_t start, uint32_t len,
                                 uint8_t buf[FY_POSTCOPY_REQ_MAX], uint16_t *type)
{
    size_t n = strlen(idstr);
    if (n > 255)
        return -1;
    put_be64(buf, start);
    put_be32(buf + 8, len);
    if (e->have_last && strcmp(e->last, idstr) == 0) {
        *type = FY_RP_MSG_REQ_PAGES;
        return 12;
    }
    buf[12] = (uint8_t)n;
    memcpy(buf + 13, idstr, n);
    memcpy(e->last, idstr, n + 1);
    e->have_last = true;
    *type = FY_RP_MSG_REQ_PAGES_ID;
    return (int)(13 + n);
}

int fy_postcopy_decode_req_pages(uint16_t type, const uint8_t *payload,
                                 size_t len, char idstr[256], uint64_t *start,
                                 uint32_t *rlen, FyError **errp)
{
    idstr[0] = 0;
    if (type == FY_RP_MSG_REQ_PAGES) {
        if (len != 12) {
            fy_error_setg(errp, "return path REQ_PAGES: length %zu (expected 12)",
                          len);
            return -1;
        }
    } else if (type == FY_RP_MSG_REQ_PAGES_ID) {
        if (len < 13 || len != 13 + (size_t)payload[12]) {
            fy_error_setg(errp, "return path REQ_PAGES_ID: length %zu does not "
                          "match 13 + the RAM block name length %d", len,
                          len >= 13 ? payload[12] : -1);
            return -1;
        }
        if (payload[12] == 0) {
            fy_error_setg(errp, "return path REQ_PAGES_ID: empty RAM block name");
            return -1;
        }
        memcpy(idstr, payload + 13, payload[12]);
        idstr[payload[12]] = 0;
    } else {
        fy_error_setg(errp, "return path: message type %u is not a page request",
                      type);
        return -1;
    }
    *start = get_be64(payload);
    *rlen = get_be32(payload + 8);
    return 0;
}

/* ---- u8 n + name ---- */

int fy_postcopy_encode_block_name(const char *idstr, uint8_t buf[256])
{
    size_t n = strlen(idstr);
    if (n > 255)
        return -1;
    buf[0] = (uint8_t)n;
    memcpy(buf + 1, idstr, n);
    return (int)n + 1;
}

int fy_postcopy_decode_block_name(const uint8_t *payload, size_t len,
                                  char idstr[256], FyError **errp)
{
    if (len < 2 || len != 1 + (size_t)payload[0]) {
        fy_error_setg(errp, "RAM block name: length %zu does not match 1 + the "
                      "name length %d (names are not empty)", len,
                      len ? payload[0] : -1);
        return -1;
    }
    memcpy(idstr, payload + 1, payload[0]);
    idstr[payload[0]] = 0;
    if (strlen(idstr) != payload[0]) {
        fy_error_setg(errp, "RAM block name contains a NUL byte");
        return -1;
    }
    return 0;
}

/* ---- received bitmap ---- */

static uint64_t bitmap_bytes(uint64_t nbits)
{
    return ((nbits + 7) / 8 + 7) & ~(uint64_t)7;
}

size_t fy_postcopy_recv_bitmap_body_len(uint64_t nbits)
{
    return (size_t)(8 + bitmap_bytes(nbits) + 8);
}

static uint8_t bitmap_byte(const unsigned long *map, uint64_t nbits, uint64_t j)
{
    if (j * 8 >= nbits)
        return 0;
    unsigned long w = __atomic_load_n(&map[j / sizeof(unsigned long)],
                                      __ATOMIC_RELAXED);
    uint8_t v = (uint8_t)(w >> (8 * (j % sizeof(unsigned long))));
    if (nbits - j * 8 < 8)
        v &= (uint8_t)((1u << (nbits - j * 8)) - 1);
    return v;
}

void fy_postcopy_recv_bitmap_encode(const unsigned long *map, uint64_t nbits,
                                    uint8_t *out)
{
    uint64_t size = bitmap_bytes(nbits);
    put_be64(out, size);
    for (uint64_t j = 0; j < size; j++)
        out[8 + j] = bitmap_byte(map, nbits, j);
    put_be64(out + 8 + size, FY_POSTCOPY_RECV_BITMAP_ENDING);
}

/* Bits past nbits in the padding are ignored, as QEMU ignores them. */
static void bytes_to_map(const uint8_t *bytes, uint64_t nbits, unsigned long *map)
{
    memset(map, 0, FY_BITMAP_LONGS(nbits) * sizeof(unsigned long));
    for (uint64_t j = 0; j * 8 < nbits; j++) {
        unsigned long v = bytes[j];
        if (nbits - j * 8 < 8)
            v &= (1ul << (nbits - j * 8)) - 1;
        map[j / sizeof(unsigned long)] |= v << (8 * (j % sizeof(unsigned long)));
    }
}

static int check_size(uint64_t size, uint64_t nbits, FyError **errp)
{
    if (size != bitmap_bytes(nbits)) {
        fy_error_setg(errp, "received bitmap: size %" PRIu64 " bytes, expected %"
                      PRIu64 " for %" PRIu64 " pages", size, bitmap_bytes(nbits),
                      nbits);
        return -1;
    }
    return 0;
}

static int check_end(uint64_t mark, FyError **errp)
{
    if (mark != FY_POSTCOPY_RECV_BITMAP_ENDING) {
        fy_error_setg(errp, "received bitmap: end marker 0x%016" PRIx64
                      ", expected 0x%016llx", mark, FY_POSTCOPY_RECV_BITMAP_ENDING);
        return -1;
    }
    return 0;
}

int fy_postcopy_recv_bitmap_decode(const uint8_t *body, size_t len, uint64_t nbits,
                                   unsigned long *map, FyError **errp)
{
    if (len < 8) {
        fy_error_setg(errp, "received bitmap: %zu bytes, too short for its size",
                      len);
        return -1;
    }
    uint64_t size = get_be64(body);
    if (check_size(size, nbits, errp) < 0)
        return -1;
    if (len != 8 + size + 8) {
        fy_error_setg(errp, "received bitmap: %zu bytes, expected %" PRIu64, len,
                      8 + size + 8);
        return -1;
    }
    if (check_end(get_be64(body + 8 + size), errp) < 0)
        return -1;
    bytes_to_map(body + 8, nbits, map);
    return 0;
}

int fy_postcopy_recv_bitmap_read(FyStream *rp, const FyRamBlock *rb,
                                 unsigned long *map, FyError **errp)
{
    uint64_t nbits = rb->used_length >> FY_TARGET_PAGE_BITS;
    FyError *err = NULL;
    uint64_t size = fy_get_be64(rp);
    if (fy_stream_check(rp, &err) == 0 && check_size(size, nbits, &err) == 0) {
        uint8_t *bytes = malloc(size ? size : 1);
        if (!bytes) {
            fy_error_setg(&err, "out of memory for a bitmap of %" PRIu64 " bytes",
                          size);
        } else {
            fy_get_buffer(rp, bytes, size);
            uint64_t mark = fy_get_be64(rp);
            if (fy_stream_check(rp, &err) == 0 && check_end(mark, &err) == 0)
                bytes_to_map(bytes, nbits, map);
            free(bytes);
        }
    }
    if (err) {
        fy_error_prepend(&err, "RAM block '%s': ", rb->idstr);
        fy_error_propagate(errp, err);
        return -1;
    }
    return 0;
}

int fy_postcopy_dest_recv_bitmap(FyPostcopyDest *d, const char *idstr,
                                 uint8_t **body, size_t *len, FyError **errp)
{
    PcBlock *b = fy_pc_block_by_name(d, idstr);
    if (!b || b->ignored) {
        fy_error_setg(errp, "received bitmap: RAM block '%s' is %s", idstr,
                      b ? "not migrated (x-ignore-shared)" : "unknown");
        return -1;
    }
    *len = fy_postcopy_recv_bitmap_body_len(b->pages);
    *body = malloc(*len);
    if (!*body) {
        fy_error_setg(errp, "received bitmap: out of memory for RAM block '%s'",
                      idstr);
        return -1;
    }
    fy_postcopy_recv_bitmap_encode(b->recv, b->pages, *body);
    return 0;
}

int fy_postcopy_dest_send_recv_bitmap(FyPostcopyDest *d, FyStream *rp,
                                      const char *idstr, FyError **errp)
{
    uint8_t name[256], *body;
    size_t len;
    int n = fy_postcopy_encode_block_name(idstr, name);
    if (n < 0) {
        fy_error_setg(errp, "received bitmap: RAM block name '%.40s...' is too "
                      "long", idstr);
        return -1;
    }
    if (fy_postcopy_dest_recv_bitmap(d, idstr, &body, &len, errp) < 0)
        return -1;
    fy_put_be16(rp, FY_RP_MSG_RECV_BITMAP);
    fy_put_be16(rp, (uint16_t)n);
    fy_put_buffer(rp, name, (size_t)n);
    fy_put_buffer(rp, body, len);
    free(body);
    fy_stream_flush(rp);
    if (fy_stream_check(rp, errp) < 0) {
        fy_error_prepend(errp, "sending the received bitmap of RAM block '%s': ",
                         idstr);
        return -1;
    }
    return 0;
}

/* ---- RESUME_ACK, and the source's view of a received bitmap ---- */

void fy_postcopy_encode_resume_ack(uint8_t buf[4])
{
    put_be32(buf, FY_POSTCOPY_RESUME_ACK_VALUE);
}

int fy_postcopy_check_resume_ack(const uint8_t *payload, size_t len, FyError **errp)
{
    if (len != 4) {
        fy_error_setg(errp, "return path RESUME_ACK: length %zu (expected 4)", len);
        return -1;
    }
    uint32_t v = get_be32(payload);
    if (v != FY_POSTCOPY_RESUME_ACK_VALUE) {
        fy_error_setg(errp, "return path RESUME_ACK: value %u (expected %u)", v,
                      FY_POSTCOPY_RESUME_ACK_VALUE);
        return -1;
    }
    return 0;
}

uint64_t fy_postcopy_dirty_from_received(const unsigned long *received,
                                         unsigned long *dirty, uint64_t nbits)
{
    size_t words = FY_BITMAP_LONGS(nbits);
    uint64_t n = 0;
    for (size_t i = 0; i < words; i++) {
        unsigned long w = ~received[i];
        if (i == words - 1 && nbits % FY_BITS_PER_LONG)
            w &= (1ul << (nbits % FY_BITS_PER_LONG)) - 1;
        dirty[i] = w;
        n += (uint64_t)__builtin_popcountl(w);
    }
    return n;
}

/* ---- POSTCOPY_ADVISE ---- */

static uint64_t pagesize_summary(const FyRamList *ram, bool ignore_shared)
{
    uint64_t summary = 0;
    for (int i = 0; i < ram->count && i < FY_RAMBLOCK_MAX; i++)
        if (!(ignore_shared && ram->blocks[i]->shared))
            summary |= ram->blocks[i]->page_size;
    return summary;
}

void fy_postcopy_advise_encode(const FyRamList *ram, bool ignore_shared,
                               uint8_t out[16])
{
    put_be64(out, pagesize_summary(ram, ignore_shared));
    put_be64(out + 8, FY_TARGET_PAGE_SIZE);
}

int fy_postcopy_advise_check(const FyRamList *ram, bool ignore_shared,
                             const uint8_t *payload, size_t len, FyError **errp)
{
    if (len == 0)
        return 0;
    if (len != 16) {
        fy_error_setg(errp, "POSTCOPY_ADVISE: length %zu (expected 0 or 16)", len);
        return -1;
    }
    uint64_t remote = get_be64(payload), local = pagesize_summary(ram, ignore_shared);
    uint64_t tps = get_be64(payload + 8);
    if (remote != local) {
        fy_error_setg(errp, "POSTCOPY_ADVISE: postcopy needs matching RAM page "
                      "sizes (source 0x%" PRIx64 ", destination 0x%" PRIx64 ")",
                      remote, local);
        return -1;
    }
    if (tps != FY_TARGET_PAGE_SIZE) {
        fy_error_setg(errp, "POSTCOPY_ADVISE: postcopy needs matching target page "
                      "sizes (source %" PRIu64 ", destination %u)", tps,
                      FY_TARGET_PAGE_SIZE);
        return -1;
    }
    return 1;
}
