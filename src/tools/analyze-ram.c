/*
 * analyze-ram.c: the "ram" section (QEMU's RAM format, version 4).
 *
 * Records are `be64 offset|flags` (flags in the bits below the page size),
 * then `u8 len + idstr` unless CONTINUE says "the block of the previous
 * record", then by kind:
 *   MEM_SIZE       the block list: per block idstr + be64 used_length
 *                  [+ be64 page size (postcopy, odd page sizes)]
 *                  [+ be64 GPA (x-ignore-shared)] [+ mapped-ram header]
 *   ZERO           one fill byte (0 in every sane stream)
 *   PAGE           the page
 *   COMPRESS_PAGE  be32 len + zlib data (QEMU < 9.1 "compress")
 *   XBZRLE         u8 1, be16 len, the delta against the page's last version
 *   MULTIFD_FLUSH  nothing (multifd pages travel on other channels)
 *   EOS            end of this section
 *
 * The page index keeps, per page, the pass it was last sent in and what it
 * holds (nothing yet, a fill byte, data in the store): it counts resent
 * pages and passes, and says what the previous version of a page is when
 * an XBZRLE record arrives. Page contents themselves are kept only when
 * asked for (-x, -m), in the store (analyze-store.c).
 *
 * The hot path (PAGE with the buffer full) is one be64 load, a few compares
 * and a pointer bump: no call per byte, no copy unless storing.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "analyze-int.h"

enum {
    F_FULL = 0x001, F_ZERO = 0x002, F_MEM_SIZE = 0x004, F_PAGE = 0x008,
    F_EOS = 0x010, F_CONTINUE = 0x020, F_XBZRLE = 0x040, F_HOOK = 0x080,
    F_COMPRESS = 0x100, F_MULTIFD_FLUSH = 0x200,
};

#define LEAF (1u << AN_IDX_LEAF_BITS)

static bool storing(const An *a)
{
    return a->o.extract_dir || a->o.dump_memory;
}

int an_ram_init(An *a)
{
    AnRam *R = &a->ram;
    free(R->page);
    free(R->page2);
    R->page = calloc(1, R->ps);
    R->page2 = calloc(1, R->ps);
    if (!R->page || !R->page2) {
        an_fail(a, 0, "out of memory");
        return -1;
    }
    return 0;
}

void an_ram_free(An *a)
{
    AnRam *R = &a->ram;
    for (int i = 0; i < R->nblocks; i++) {
        AnBlock *b = R->blocks[i];
        for (size_t l = 0; l < b->nleaves; l++)
            free(b->leaf[l]);
        free(b->leaf);
        if (b->store_fd >= 0)
            close(b->store_fd);
        free(b->store_path);
        free(b);
    }
    R->nblocks = 0;
    memset(R->bhead, 0, sizeof(R->bhead));
    free(R->order);
    free(R->page);
    free(R->page2);
    free(R->run_buf);
    R->order = NULL;
    R->page = R->page2 = R->run_buf = NULL;
}

/* ---- page index ---- */

static uint64_t idx_get(const AnBlock *b, uint64_t pg)
{
    size_t li = (size_t)(pg >> AN_IDX_LEAF_BITS);
    if (!b->leaf || !b->leaf[li])
        return 0;
    return b->leaf[li][pg & (LEAF - 1)];
}

static uint64_t *idx_slot(An *a, AnBlock *b, uint64_t pg)
{
    size_t li = (size_t)(pg >> AN_IDX_LEAF_BITS);
    if (!b->leaf) {
        b->nleaves = (size_t)((b->npages + LEAF - 1) >> AN_IDX_LEAF_BITS);
        b->leaf = calloc(b->nleaves ? b->nleaves : 1, sizeof(*b->leaf));
        if (!b->leaf)
            return NULL;
    }
    if (!b->leaf[li]) {
        b->leaf[li] = calloc(LEAF, sizeof(uint64_t));
        if (!b->leaf[li])
            return NULL;
    }
    (void)a;
    return &b->leaf[li][pg & (LEAF - 1)];
}

#define E_PASS(e) ((e) >> 16)
#define E_KIND(e) (((e) >> 8) & 0xff)
#define E_FILL(e) ((e) & 0xff)

/* Record that page pg now holds kind/fill; returns the previous entry. */
static int note_page(An *a, AnBlock *b, uint64_t pg, unsigned kind, uint8_t fill,
                     uint64_t *old_out, uint64_t off)
{
    AnRam *R = &a->ram;
    uint64_t *slot = idx_slot(a, b, pg);
    if (!slot) {
        an_fail(a, off, "out of memory indexing pages");
        return -1;
    }
    uint64_t old = *slot;
    if (R->passes == 0)
        R->passes = 1;
    if (old) {
        R->resent++;
        if (E_PASS(old) == R->passes)
            R->passes++; /* a page sent twice in one pass: a new pass began */
    } else if (a->o.dump_memory) {
        if (R->norder == R->order_cap) {
            size_t ncap = R->order_cap ? R->order_cap * 2 : 4096;
            void *n = realloc(R->order, ncap * sizeof(*R->order));
            if (!n) {
                an_fail(a, off, "out of memory listing pages");
                return -1;
            }
            R->order = n;
            R->order_cap = ncap;
        }
        R->order[R->norder][0] = (uint64_t)b->index;
        R->order[R->norder][1] = pg;
        R->norder++;
    }
    *slot = R->passes << 16 | (uint64_t)kind << 8 | fill;
    *old_out = old;
    return 0;
}

/* The page's current contents into buf (from its index entry and store). */
static int load_page(An *a, AnBlock *b, uint64_t pg, uint64_t entry, uint8_t *buf)
{
    uint32_t ps = a->ram.ps;
    switch (E_KIND(entry)) {
    case PG_DATA:
        if (b->store_fd >= 0)
            return an_store_read(a, b, pg * ps, buf, ps);
        memset(buf, 0, ps);
        return 0;
    case PG_ZERO:
        memset(buf, E_FILL(entry), ps);
        return 0;
    default:
        /* never sent: a destination's fresh RAM is zero */
        memset(buf, 0, ps);
        return 0;
    }
}

static int page_data(An *a, AnBlock *b, uint64_t pg, const uint8_t *p, uint64_t off)
{
    uint64_t old;
    if (note_page(a, b, pg, PG_DATA, 0, &old, off) < 0)
        return -1;
    if (b->store_fd >= 0)
        return an_store_write(a, b, pg * a->ram.ps, p, a->ram.ps);
    return 0;
}

static int page_zero(An *a, AnBlock *b, uint64_t pg, uint8_t fill, uint64_t off)
{
    uint64_t old;
    if (note_page(a, b, pg, PG_ZERO, fill, &old, off) < 0)
        return -1;
    if (b->store_fd < 0)
        return 0;
    bool was_zero = E_KIND(old) == PG_NONE ||
                    (E_KIND(old) == PG_ZERO && E_FILL(old) == 0);
    if (fill == 0 && was_zero)
        return 0; /* the store is sparse: already zero */
    memset(a->ram.page, fill, a->ram.ps);
    return an_store_write(a, b, pg * a->ram.ps, a->ram.page, a->ram.ps);
}

/* ---- XBZRLE ---- */

/* ULEB128 of at most 14 bits: one byte below 0x80, else two. */
static int uleb_small(const uint8_t *p, size_t avail, uint32_t *n)
{
    if (!(p[0] & 0x80)) {
        *n = p[0];
        return 1;
    }
    if (avail < 2 || (p[1] & 0x80))
        return -1;
    *n = (uint32_t)(p[0] & 0x7f) | (uint32_t)p[1] << 7;
    return 2;
}

int an_xbzrle_decode(const uint8_t *src, size_t slen, uint8_t *dst, size_t dlen,
                     char *why, size_t whysz)
{
    size_t i = 0, d = 0;
    while (i < slen) {
        uint32_t n;
        int k;
        if (slen - i < 2) {
            snprintf(why, whysz, "the zero run at byte %zu has no data run after it", i);
            return -1;
        }
        k = uleb_small(src + i, slen - i, &n);
        if (k < 0) {
            snprintf(why, whysz, "the run length at byte %zu is longer than 14 bits", i);
            return -1;
        }
        if (i && !n) {
            snprintf(why, whysz, "empty zero run at byte %zu", i);
            return -1;
        }
        i += (size_t)k;
        d += n;
        if (d > dlen) {
            snprintf(why, whysz, "a zero run goes to byte %zu of a %zu-byte page", d, dlen);
            return -1;
        }
        if (slen - i < 2) {
            snprintf(why, whysz, "the data run at byte %zu is cut short", i);
            return -1;
        }
        k = uleb_small(src + i, slen - i, &n);
        if (k < 0) {
            snprintf(why, whysz, "the run length at byte %zu is longer than 14 bits", i);
            return -1;
        }
        if (!n) {
            snprintf(why, whysz, "empty data run at byte %zu", i);
            return -1;
        }
        i += (size_t)k;
        if (d + n > dlen) {
            snprintf(why, whysz, "a data run goes to byte %zu of a %zu-byte page",
                     d + n, dlen);
            return -1;
        }
        if (i + n > slen) {
            snprintf(why, whysz, "a data run of %u bytes at byte %zu goes past the "
                     "%zu encoded bytes", n, i, slen);
            return -1;
        }
        memcpy(dst + d, src + i, n);
        d += n;
        i += n;
    }
    return 0;
}

static int page_xbzrle(An *a, AnRd *r, AnBlock *b, uint64_t pg, uint64_t off)
{
    AnRam *R = &a->ram;
    uint64_t roff = rd_off(r);
    if (!rd_need(r, 3)) {
        an_fail(a, roff, "XBZRLE page: expected its header (u8 0x01, be16 "
                "length), found end of stream");
        return -1;
    }
    const uint8_t *h = rd_cur(r);
    if (h[0] != 0x01) {
        an_fail(a, roff, "XBZRLE page at 0x%" PRIx64 " of '%s': expected encoding "
                "flag 0x01, found 0x%02x (QEMU: \"Failed to load XBZRLE page - "
                "wrong compression!\")", pg * R->ps, b->label, h[0]);
        return -1;
    }
    size_t len = ld_be16(h + 1);
    if (len > R->ps) {
        an_fail(a, roff + 1, "XBZRLE page at 0x%" PRIx64 " of '%s': expected at "
                "most %u encoded bytes, found length %zu (QEMU: \"Failed to load "
                "XBZRLE page - len overflow!\")", pg * R->ps, b->label, R->ps, len);
        return -1;
    }
    r->pos += 3;
    if (!rd_need(r, len)) {
        an_fail(a, roff + 3, "XBZRLE page: expected %zu encoded bytes, found end "
                "of stream", len);
        return -1;
    }
    const uint8_t *src = rd_cur(r);
    uint64_t old = idx_get(b, pg);
    if (b->store_fd >= 0) {
        if (load_page(a, b, pg, old, R->page) < 0)
            return -1;
    } else {
        memset(R->page, 0, R->ps);
    }
    char why[200];
    if (an_xbzrle_decode(src, len, R->page, R->ps, why, sizeof(why)) < 0) {
        an_fail(a, roff + 3, "XBZRLE page at 0x%" PRIx64 " of '%s': %s (QEMU: "
                "\"Failed to load XBZRLE page - decode error!\")", pg * R->ps,
                b->label, why);
        return -1;
    }
    r->pos += len;
    R->xbzrle++;
    b->xbzrle++;
    R->xbzrle_bytes += 3 + len;
    if (E_KIND(old) == PG_NONE && R->xbzrle_nobase++ == 0)
        an_note(a, "XBZRLE page at 0x%" PRIx64 " of '%s' (stream offset %" PRIu64
                ") has no earlier version in the stream; decoded against zeros",
                pg * R->ps, b->label, off);
    uint64_t prev;
    if (note_page(a, b, pg, PG_DATA, 0, &prev, off) < 0)
        return -1;
    if (b->store_fd >= 0)
        return an_store_write(a, b, pg * R->ps, R->page, R->ps);
    return 0;
}

static int page_compressed(An *a, AnRd *r, AnBlock *b, uint64_t pg, uint64_t off)
{
    AnRam *R = &a->ram;
    uint64_t roff = rd_off(r);
    if (!rd_need(r, 4)) {
        an_fail(a, roff, "compressed page: expected be32 length, found end of stream");
        return -1;
    }
    uint32_t len = ld_be32(rd_cur(r));
    uLong bound = compressBound(R->ps);
    if (len > bound) {
        an_fail(a, roff, "compressed page: expected at most %lu bytes, found length "
                "%u (QEMU: \"Invalid compressed data length\")", bound, len);
        return -1;
    }
    r->pos += 4;
    if (!rd_need(r, len)) {
        an_fail(a, roff + 4, "compressed page: expected %u bytes, found end of "
                "stream", len);
        return -1;
    }
    uLongf out = R->ps;
    int zr = uncompress(R->page, &out, rd_cur(r), len);
    if (zr != Z_OK || out != R->ps) {
        an_fail(a, roff + 4, "compressed page at 0x%" PRIx64 " of '%s': zlib "
                "says %s, %lu of %u bytes", pg * R->ps, b->label,
                zr == Z_OK ? "ok" : zError(zr), (unsigned long)out, R->ps);
        return -1;
    }
    r->pos += len;
    R->compressed++;
    b->compressed++;
    R->compressed_bytes += 4 + len;
    return page_data(a, b, pg, R->page, off);
}

/* ---- MEM_SIZE ---- */

/* Block names hash into R->bhead/bnext (index + 1, 0 ends a chain): a
 * stream may list thousands of blocks and name one in every record. */
static unsigned name_hash(const char *name, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)name[i]) * 16777619u;
    return h & (AN_BLOCK_HASH - 1);
}

static AnBlock *block_by_name(AnRam *R, const char *name, size_t len)
{
    if (R->last && strlen(R->last->name) == len && !memcmp(R->last->name, name, len))
        return R->last;
    for (int i = R->bhead[name_hash(name, len)]; i; i = R->bnext[i - 1]) {
        AnBlock *b = R->blocks[i - 1];
        if (strlen(b->name) == len && !memcmp(b->name, name, len))
            return b;
    }
    return NULL;
}

AnBlock *an_ram_block(An *a, const uint8_t *name, size_t len)
{
    return block_by_name(&a->ram, (const char *)name, len);
}

static void index_block(AnRam *R, AnBlock *b)
{
    unsigned h = name_hash(b->name, strlen(b->name));
    R->bnext[b->index] = R->bhead[h];
    R->bhead[h] = (int16_t)(b->index + 1);
}

static bool is_page_size(uint64_t v)
{
    return v >= 4096 && v <= (1ull << 30) && !(v & (v - 1));
}

/* Forward to stream offset `to` (mapped-ram regions). */
static int skip_to(An *a, AnRd *r, uint64_t to, const char *what)
{
    uint64_t cur = rd_off(r);
    if (to < cur) {
        an_fail(a, cur, "mapped-ram: %s at offset %" PRIu64 " lies before the "
                "current position", what, to);
        return -1;
    }
    if (rd_skip(r, to - cur) != to - cur) {
        an_fail(a, rd_off(r), "mapped-ram: expected %s at offset %" PRIu64
                ", found end of stream", what, to);
        return -1;
    }
    return 0;
}

/* mapped-ram: the block's bitmap and pages sit at fixed file offsets; the
 * stream goes on after them. */
static int mapped_ram_block(An *a, AnRd *r, AnBlock *b)
{
    AnRam *R = &a->ram;
    uint64_t off = rd_off(r);
    if (!rd_need(r, 28)) {
        an_fail(a, off, "mapped-ram header of '%s': expected 28 bytes, found end "
                "of stream", b->label);
        return -1;
    }
    const uint8_t *h = rd_cur(r);
    uint32_t ver = ld_be32(h);
    uint64_t ps = ld_be64(h + 4), bm = ld_be64(h + 12), pages = ld_be64(h + 20);
    if (ver != 1) {
        an_fail(a, off, "mapped-ram header of '%s': expected version 1, found %u",
                b->label, ver);
        return -1;
    }
    if (ps != R->ps) {
        an_fail(a, off + 4, "mapped-ram header of '%s': expected page size %u, "
                "found %" PRIu64, b->label, R->ps, ps);
        return -1;
    }
    r->pos += 28;
    b->mapped_ram = true;
    b->mr_bitmap_off = bm;
    b->mr_pages_off = pages;
    if (a->cap_ignore_shared && bm == 0 && pages == 0)
        return 0; /* a shared block: nothing in the file */
    if (pages < bm || b->length > UINT64_MAX - pages) {
        an_fail(a, off, "mapped-ram header of '%s': pages at %" PRIu64 " before "
                "the bitmap at %" PRIu64, b->label, pages, bm);
        return -1;
    }
    size_t bmlen = (size_t)((b->npages + 7) / 8);
    if (bm + bmlen > pages) {
        an_fail(a, off, "mapped-ram header of '%s': the bitmap (%zu bytes at %"
                PRIu64 ") runs into the pages at %" PRIu64, b->label, bmlen, bm, pages);
        return -1;
    }
    if (skip_to(a, r, bm, "the bitmap") < 0)
        return -1;
    /* read the bitmap in chunks: its size is bounded by what the stream has */
    uint8_t *bits = NULL;
    size_t have = 0;
    while (have < bmlen) {
        size_t chunk = bmlen - have < (1u << 20) ? bmlen - have : (1u << 20);
        uint8_t *nb = realloc(bits, have + chunk);
        if (!nb) {
            free(bits);
            an_fail(a, rd_off(r), "out of memory reading a mapped-ram bitmap");
            return -1;
        }
        bits = nb;
        if (!rd_copy(r, bits + have, chunk)) {
            free(bits);
            an_fail(a, rd_off(r), "mapped-ram bitmap of '%s': expected %zu bytes, "
                    "found end of stream", b->label, bmlen);
            return -1;
        }
        have += chunk;
    }
    int ret = skip_to(a, r, pages, "the pages");
    for (uint64_t pg = 0; ret == 0 && pg < b->npages; pg++) {
        uint64_t poff = rd_off(r);
        if (!rd_need(r, R->ps)) {
            an_fail(a, poff, "mapped-ram page %" PRIu64 " of '%s': expected %u "
                    "bytes, found end of stream", pg, b->label, R->ps);
            ret = -1;
            break;
        }
        if (bits[pg / 8] >> (pg % 8) & 1) {
            R->mapped++;
            b->mapped++;
            R->data_bytes += R->ps;
            ret = page_data(a, b, pg, rd_cur(r), poff);
        }
        r->pos += R->ps;
    }
    free(bits);
    return ret;
}

static int mem_size(An *a, AnRd *r, uint64_t total, uint64_t off)
{
    AnRam *R = &a->ram;
    if (total > AN_MAX_RAM) {
        an_fail(a, off, "MEM_SIZE record: expected at most %llu bytes of RAM, found "
                "0x%" PRIx64, (unsigned long long)AN_MAX_RAM, total);
        return -1;
    }
    R->total = total;
    R->have_mem_size = true;
    uint64_t left = total;
    while (left) {
        uint64_t boff = rd_off(r);
        int len = rd_peek(r, 0);
        if (len < 0 || !rd_need(r, 1 + (size_t)len + 8)) {
            an_fail(a, boff, "MEM_SIZE record: expected a block (u8 len, idstr, "
                    "be64 length) with 0x%" PRIx64 " bytes still to list, found end "
                    "of stream", left);
            return -1;
        }
        const uint8_t *p = rd_cur(r);
        char label[300];
        an_printable(label, sizeof(label), p + 1, (size_t)len);
        if (len == 0 || memchr(p + 1, 0, (size_t)len)) {
            an_fail(a, boff, "MEM_SIZE record: expected a RAM block name, found %s "
                    "(QEMU: \"Unknown ramblock\")", len ? "a name with a NUL byte"
                                                        : "an empty name");
            return -1;
        }
        uint64_t length = ld_be64(p + 1 + len);
        if (length > left) {
            an_fail(a, boff + 1 + (uint64_t)len, "MEM_SIZE record: block '%s' is "
                    "0x%" PRIx64 " bytes but only 0x%" PRIx64 " of the total 0x%"
                    PRIx64 " are left", label, length, left, total);
            return -1;
        }
        if (length % R->ps) {
            an_fail(a, boff + 1 + (uint64_t)len, "MEM_SIZE record: block '%s' "
                    "length 0x%" PRIx64 " is not a multiple of the page size %u",
                    label, length, R->ps);
            return -1;
        }
        AnBlock *b = block_by_name(R, (const char *)p + 1, (size_t)len);
        if (b && b->length != length) {
            an_fail(a, boff, "MEM_SIZE record: block '%s' announced again with "
                    "length 0x%" PRIx64 " (was 0x%" PRIx64 ")", label, length,
                    b->length);
            return -1;
        }
        if (!b) {
            if (R->nblocks == AN_MAX_BLOCKS) {
                an_fail(a, boff, "MEM_SIZE record: more than %d RAM blocks",
                        AN_MAX_BLOCKS);
                return -1;
            }
            b = calloc(1, sizeof(*b));
            if (!b) {
                an_fail(a, boff, "out of memory");
                return -1;
            }
            b->index = R->nblocks;
            memcpy(b->name, p + 1, (size_t)len);
            snprintf(b->label, sizeof(b->label), "%s", label);
            b->length = length;
            b->npages = length / R->ps;
            b->store_fd = -1;
            R->blocks[R->nblocks++] = b;
            index_block(R, b);
            if (storing(a) && an_store_open(a, b) < 0)
                return -1;
        }
        r->pos += 1 + (size_t)len + 8;
        R->header_bytes += 1 + (size_t)len + 8;
        left -= length;
        if (a->postcopy_advised && rd_need(r, 8) && is_page_size(ld_be64(rd_cur(r)))) {
            b->remote_page_size = ld_be64(rd_cur(r));
            b->has_remote_page_size = true;
            r->pos += 8;
            R->header_bytes += 8;
        }
        if (a->cap_ignore_shared) {
            if (!rd_need(r, 8)) {
                an_fail(a, rd_off(r), "MEM_SIZE record: expected the GPA of '%s' "
                        "(x-ignore-shared), found end of stream", label);
                return -1;
            }
            b->mr_addr = ld_be64(rd_cur(r));
            b->has_mr_addr = true;
            r->pos += 8;
            R->header_bytes += 8;
        }
        if (a->cap_mapped_ram && mapped_ram_block(a, r, b) < 0)
            return -1;
    }
    return 0;
}

/* The block a page record is for: the previous one (CONTINUE) or named. */
static AnBlock *record_block(An *a, AnRd *r, unsigned flags, uint64_t off)
{
    AnRam *R = &a->ram;
    if (flags & F_CONTINUE) {
        if (!R->last)
            an_fail(a, off, "RAM record says CONTINUE but no block was named "
                    "before it (QEMU: \"Ack, bad migration stream!\")");
        return R->last;
    }
    int len = rd_peek(r, 0);
    if (len < 0 || !rd_need(r, 1 + (size_t)len)) {
        an_fail(a, rd_off(r), "RAM record: expected a block name, found end of "
                "stream");
        return NULL;
    }
    const uint8_t *p = rd_cur(r);
    AnBlock *b = block_by_name(R, (const char *)p + 1, (size_t)len);
    if (!b) {
        char label[300];
        an_printable(label, sizeof(label), p + 1, (size_t)len);
        an_fail(a, rd_off(r), "RAM record: expected a block listed in MEM_SIZE, "
                "found '%s' (QEMU: \"Can't find block %s\")", label, label);
        return NULL;
    }
    r->pos += 1 + (size_t)len;
    R->header_bytes += 1 + (size_t)len;
    R->last = b;
    return b;
}

int an_ram_section(An *a, AnRd *r, AnSection *s)
{
    AnRam *R = &a->ram;
    const uint32_t ps = R->ps;
    const uint64_t mask = ps - 1;
    (void)s;
    R->sections++;
    for (;;) {
        uint64_t off = rd_off(r);
        if (!rd_need(r, 8)) {
            an_fail(a, off, "expected a RAM record (be64 offset|flags), found end "
                    "of stream");
            return -1;
        }
        uint64_t v = ld_be64(rd_cur(r));
        r->pos += 8;
        R->header_bytes += 8;
        unsigned flags = (unsigned)(v & mask);
        uint64_t addr = v & ~mask;
        AnBlock *b = NULL;
        uint64_t pg = 0;

        if (flags & (F_ZERO | F_PAGE | F_COMPRESS | F_XBZRLE)) {
            b = record_block(a, r, flags, off);
            if (!b)
                return -1;
            if (addr >= b->length) {
                an_fail(a, off, "RAM record: expected an offset below 0x%" PRIx64
                        " (the size of '%s'), found 0x%" PRIx64 " (QEMU: \"Illegal "
                        "RAM offset\")", b->length, b->label, addr);
                return -1;
            }
            pg = addr / ps;
        }
        switch (flags & ~F_CONTINUE) {
        case F_PAGE:
            if (!rd_need(r, ps)) {
                an_fail(a, rd_off(r), "page 0x%" PRIx64 " of '%s': expected %u "
                        "bytes, found end of stream", addr, b->label, ps);
                return -1;
            }
            R->normal++;
            b->normal++;
            R->data_bytes += ps;
            if (page_data(a, b, pg, rd_cur(r), off) < 0)
                return -1;
            r->pos += ps;
            break;
        case F_ZERO: {
            int fill = rd_peek(r, 0);
            if (fill < 0) {
                an_fail(a, rd_off(r), "zero page 0x%" PRIx64 " of '%s': expected "
                        "its fill byte, found end of stream", addr, b->label);
                return -1;
            }
            r->pos++;
            R->header_bytes++;
            R->zero++;
            b->zero++;
            if (fill) {
                if (!R->zero_nonzero_fill)
                    an_note(a, "stream offset %" PRIu64 ": zero page 0x%" PRIx64
                            " of '%s' has fill byte 0x%02x (QEMU 7.2 fills the "
                            "page with it; newer QEMU refuses it)", off, addr,
                            b->label, fill);
                R->zero_nonzero_fill++;
            }
            if (page_zero(a, b, pg, (uint8_t)fill, off) < 0)
                return -1;
            break;
        }
        case F_XBZRLE:
            if (page_xbzrle(a, r, b, pg, off) < 0)
                return -1;
            break;
        case F_COMPRESS:
            if (page_compressed(a, r, b, pg, off) < 0)
                return -1;
            break;
        case F_MEM_SIZE:
            if (mem_size(a, r, addr, off) < 0)
                return -1;
            break;
        case F_MULTIFD_FLUSH:
            R->flushes++;
            break;
        case F_EOS:
            R->eos++;
            return 0;
        case F_HOOK:
            R->hooks++;
            an_fail(a, off, "RAM record with the HOOK flag (0x80): RDMA's "
                    "control hook, which only an RDMA migration has");
            return -1;
        case F_FULL:
            an_fail(a, off, "RAM record with the FULL flag (0x01), obsolete since "
                    "2009");
            return -1;
        default:
            an_fail(a, off, "RAM record: expected one of ZERO, PAGE, XBZRLE, "
                    "MEM_SIZE, EOS, MULTIFD_FLUSH, found flags 0x%x (QEMU: "
                    "\"Unknown combination of migration flags: 0x%x\")", flags,
                    flags);
            return -1;
        }
    }
}

int an_ram_finish(An *a)
{
    return an_store_flush(a);
}

json_t *an_ram_sizes(An *a)
{
    json_t *o = json_object();
    for (int i = 0; i < a->ram.nblocks; i++) {
        AnBlock *b = a->ram.blocks[i];
        json_t *key = an_json_bytes_string((const uint8_t *)b->name, strlen(b->name));
        json_object_set_new(o, json_string_value(key),
                            json_sprintf("0x%016" PRIx64, b->length));
        json_decref(key);
    }
    return o;
}

int an_ram_print_memory(An *a, FILE *out, int indent)
{
    AnRam *R = &a->ram;
    static const char hex[] = "0123456789abcdef";
    char *line = malloc((size_t)R->ps * 3 + 1);
    if (!line)
        return -1;
    if (an_store_flush(a) < 0) {
        free(line);
        return -1;
    }
    for (size_t i = 0; i < R->norder; i++) {
        AnBlock *b = R->blocks[R->order[i][0]];
        uint64_t pg = R->order[i][1];
        uint64_t e = idx_get(b, pg);
        char key[600];
        snprintf(key, sizeof(key), "%s (0x%016" PRIx64 ")", b->name, pg * R->ps);
        for (int k = 0; k < indent; k++)
            fputs("    ", out);
        an_json_print_string(out, key, strlen(key));
        fputs(": ", out);
        if (E_KIND(e) == PG_ZERO) {
            fprintf(out, "\"Filled with 0x%02x\"", (unsigned)E_FILL(e));
        } else {
            if (load_page(a, b, pg, e, R->page) < 0) {
                free(line);
                return -1;
            }
            size_t o = 0;
            for (uint32_t k = 0; k < R->ps; k++) {
                line[o++] = hex[R->page[k] >> 4];
                line[o++] = hex[R->page[k] & 15];
                line[o++] = ' ';
            }
            line[o - 1] = '\0';
            fprintf(out, "\"%s\"", line);
        }
        fputs(i + 1 < R->norder ? ",\n" : "\n", out);
    }
    free(line);
    return 0;
}
