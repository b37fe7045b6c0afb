/*
 * ram-load.c: the receiving half of the RAM section (QEMU's ram_load).
 *
 * The stream is hostile. Every record is `be64 offset|flags`; the flags are
 * the low bits below the page size, so the offset is page aligned by
 * construction and is then checked against the block's used_length before
 * any byte lands. Accepted records:
 *   MEM_SIZE        the block list: each named block must exist here with
 *                   the same used_length, none twice, the sizes must add up
 *                   to the announced total, and every local block must be
 *                   listed (the destination refuses a different machine)
 *   ZERO [CONTINUE] fill byte must be 0; the page is cleared only if it is
 *                   not known to be zero already, so untouched destination
 *                   memory is never faulted in
 *   PAGE [CONTINUE] read straight into guest memory
 *   XBZRLE [CONT.]  a delta against the page here (ram-converge.c)
 *   MULTIFD_FLUSH   with multifd, wait until every channel's SYNC is in
 *                   place (ram-multifd.c); nothing to do without
 *   EOS             end of this section's records
 * Anything else: "Unknown combination of migration flags: 0x..".
 * The loop is bounded by the stream: every record consumes bytes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ram/bitmap.h"
#include "ram/ram-converge.h"
#include "ram/ram-int.h"
#include "ram/ram-multifd.h"
#include "ram/ram-prefault.h"

/* A name from the stream, made safe to print. */
static void printable(char out[256], const char *in, int len)
{
    for (int i = 0; i < len && i < 255; i++)
        out[i] = (in[i] >= 0x20 && in[i] < 0x7f) ? in[i] : '?';
    out[len < 255 ? len : 255] = 0;
}

static RamBlockMig *find_block(FyRamState *rs, const char *id, int len)
{
    for (int i = 0; i < rs->nblocks; i++) {
        const char *name = rs->blocks[i].rb->idstr;
        if ((size_t)len == strlen(name) && !memcmp(name, id, (size_t)len))
            return &rs->blocks[i];
    }
    return NULL;
}

static int unknown_block(const char *id, int len, FyError **errp)
{
    char safe[256];
    printable(safe, id, len);
    fy_error_setg(errp, "Unknown ramblock '%s', cannot accept migration", safe);
    return -1;
}

static int stream_failed(FyStream *f, const char *what, FyError **errp)
{
    fy_stream_check(f, errp);
    fy_error_prepend(errp, "%s: ", what);
    return -1;
}

static int check_listed_all(FyRamState *rs, FyError **errp)
{
    for (int i = 0; i < rs->nblocks; i++) {
        const RamBlockMig *b = &rs->blocks[i];
        if (!b->listed) {
            fy_error_setg(errp, "RAM block '%s' (0x%" PRIx64 " bytes) exists "
                          "here but the stream has no such block",
                          b->rb->idstr, b->rb->used_length);
            return -1;
        }
    }
    return 0;
}

static int load_one_listed_block(FyRamState *rs, FyStream *f, uint64_t *left,
                                 uint64_t total, FyError **errp)
{
    char id[256];
    int len = fy_get_counted_string(f, id);
    uint64_t length = fy_get_be64(f);
    uint64_t gpa = rs->opt.ignore_shared ? fy_get_be64(f) : 0;
    if (len < 0 || fy_stream_error(f))
        return stream_failed(f, "reading the RAM block list", errp);

    RamBlockMig *b = find_block(rs, id, len);
    if (!b)
        return unknown_block(id, len, errp);
    FyRamBlock *rb = b->rb;
    if (b->listed) {
        fy_error_setg(errp, "RAM block '%s' is listed twice", rb->idstr);
        return -1;
    }
    if (length != rb->used_length) {
        fy_error_setg(errp, "RAM block '%s' size mismatch: stream has 0x%"
                      PRIx64 " local has 0x%" PRIx64, rb->idstr, length,
                      rb->used_length);
        return -1;
    }
    if (length > *left) {
        fy_error_setg(errp, "RAM block sizes add up to more than the total "
                      "0x%" PRIx64 " the stream announced (at block '%s')",
                      total, rb->idstr);
        return -1;
    }
    if (b->ignored && gpa != rb->mr_addr) {
        fy_error_setg(errp, "Mismatched GPAs for block '%s': stream has 0x%"
                      PRIx64 " local has 0x%" PRIx64, rb->idstr, gpa,
                      rb->mr_addr);
        return -1;
    }
    b->listed = true;
    *left -= length;
    return 0;
}

/* MEM_SIZE: at most one pass over the local blocks, each listed once. */
static int load_mem_size(FyRamState *rs, FyStream *f, uint64_t total,
                         FyError **errp)
{
    uint64_t left = total;
    for (int i = 0; i < rs->nblocks; i++)
        rs->blocks[i].listed = false;
    while (left) {
        if (load_one_listed_block(rs, f, &left, total, errp) < 0)
            return -1;
    }
    return check_listed_all(rs, errp);
}

static RamBlockMig *block_from_stream(FyRamState *rs, FyStream *f,
                                      unsigned flags, FyError **errp)
{
    if (flags & RAM_SAVE_FLAG_CONTINUE) {
        if (!rs->last_recv)
            fy_error_setg(errp, "page record says CONTINUE but no block was "
                          "named before it");
        return rs->last_recv;
    }
    char id[256];
    int len = fy_get_counted_string(f, id);
    if (len < 0) {
        stream_failed(f, "reading a RAM block name", errp);
        return NULL;
    }
    RamBlockMig *b = find_block(rs, id, len);
    if (!b) {
        unknown_block(id, len, errp);
        return NULL;
    }
    if (b->ignored) {
        fy_error_setg(errp, "RAM block '%s' is shared and not migrated "
                      "(x-ignore-shared), but the stream sends its pages",
                      b->rb->idstr);
        return NULL;
    }
    rs->last_recv = b;
    return b;
}

static int load_zero(FyRamState *rs, FyStream *f, RamBlockMig *b,
                     uint64_t offset, FyError **errp)
{
    uint8_t fill = fy_get_byte(f);
    if (fy_stream_error(f))
        return stream_failed(f, "reading a zero page", errp);
    if (fill) {
        fy_error_setg(errp, "zero page at offset 0x%" PRIx64 " of RAM block "
                      "'%s' has fill byte 0x%02x (must be 0)", offset,
                      b->rb->idstr, fill);
        return -1;
    }
    uint64_t page = offset >> FY_TARGET_PAGE_BITS;
    uint8_t *host = b->rb->host + offset;
    if (ram_zero_test(b->zero_map, page)) {
        stat_add(&rs->st_zero_skipped, 1);
    } else {
        if (!fy_buffer_is_zero(host, FY_TARGET_PAGE_SIZE))
            memset(host, 0, FY_TARGET_PAGE_SIZE);
        ram_zero_set(b->zero_map, page);
    }
    stat_add(&rs->st_loaded_zero, 1);
    return 0;
}

static int load_page(FyRamState *rs, FyStream *f, unsigned flags,
                     uint64_t offset, FyError **errp)
{
    RamBlockMig *b = block_from_stream(rs, f, flags, errp);
    if (!b)
        return -1;
    if (offset >= b->rb->used_length) {
        fy_error_setg(errp, "page offset 0x%" PRIx64 " is past the end of RAM "
                      "block '%s' (0x%" PRIx64 " bytes)", offset, b->rb->idstr,
                      b->rb->used_length);
        return -1;
    }
    if (rs->pc) {
        int r = fy_ram_postcopy_load_hook(rs, f, b->rb, flags, offset, errp);
        if (r <= 0)
            return r;
    }
    if ((flags & ~RAM_SAVE_FLAG_CONTINUE) == RAM_SAVE_FLAG_ZERO)
        return load_zero(rs, f, b, offset, errp);
    if ((flags & ~RAM_SAVE_FLAG_CONTINUE) == RAM_SAVE_FLAG_XBZRLE)
        return fy_ram_conv_load_xbzrle(rs, f, b, offset, errp);

    fy_ram_prefault_page(rs, b, offset,
                         ram_zero_test(b->zero_map, offset >> FY_TARGET_PAGE_BITS));
    ram_zero_clear(b->zero_map, offset >> FY_TARGET_PAGE_BITS);
    fy_get_buffer(f, b->rb->host + offset, FY_TARGET_PAGE_SIZE);
    if (fy_stream_error(f))
        return stream_failed(f, "reading a page", errp);
    stat_add(&rs->st_loaded_normal, 1);
    return 0;
}

/* One record. Returns 1 at EOS, 0 to go on, -1 on error. */
static int load_record(FyRamState *rs, FyStream *f, FyError **errp)
{
    uint64_t addr = fy_get_be64(f);
    if (fy_stream_error(f))
        return stream_failed(f, "reading a record header", errp);
    unsigned flags = (unsigned)(addr & (FY_TARGET_PAGE_SIZE - 1));
    uint64_t offset = addr & ~(uint64_t)(FY_TARGET_PAGE_SIZE - 1);

    if (rs->pc && fy_ram_postcopy_check_flags(rs, flags, errp) < 0)
        return -1;
    switch (flags) {
    case RAM_SAVE_FLAG_EOS:
        return 1;
    case RAM_SAVE_FLAG_MEM_SIZE:
        return load_mem_size(rs, f, offset, errp);
    case RAM_SAVE_FLAG_MULTIFD_FLUSH:
        return fy_ram_mfd_load_flush(rs, errp);
    case RAM_SAVE_FLAG_ZERO:
    case RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE:
    case RAM_SAVE_FLAG_PAGE:
    case RAM_SAVE_FLAG_PAGE | RAM_SAVE_FLAG_CONTINUE:
    case RAM_SAVE_FLAG_XBZRLE:
    case RAM_SAVE_FLAG_XBZRLE | RAM_SAVE_FLAG_CONTINUE:
        return load_page(rs, f, flags, offset, errp);
    default:
        fy_error_setg(errp, "Unknown combination of migration flags: 0x%x",
                      flags);
        return -1;
    }
}

int fy_ram_load_state(FyStream *f, void *opaque, int version_id, FyError **errp)
{
    FyRamState *rs = opaque;

    if (!rs->load_active) {
        fy_error_setg(errp, "RAM section arrived before load setup");
        return -1;
    }
    if (version_id != FY_RAM_SECTION_VERSION) {
        fy_error_setg(errp, "RAM section version %d is not supported "
                      "(expected %d)", version_id, FY_RAM_SECTION_VERSION);
        return -1;
    }
    for (;;) {
        uint64_t at = fy_stream_offset(f);
        int r = load_record(rs, f, errp);
        if (r < 0) {
            fy_error_prepend(errp, "RAM record at stream offset %" PRIu64 ": ",
                             at);
            return -1;
        }
        if (r > 0)
            return 0;
    }
}

int fy_ram_load_setup(void *opaque, FyError **errp)
{
    FyRamState *rs = opaque;

    fy_ram_load_cleanup(rs);
    if (fy_ram_snapshot_blocks(rs, errp) < 0)
        return -1;
    rs->load_active = true; /* from here load_cleanup undoes what follows */
    for (int i = 0; i < rs->nblocks; i++) {
        RamBlockMig *b = &rs->blocks[i];
        if (b->ignored)
            continue;
        b->zero_map = fy_bitmap_new(b->pages);
        if (!b->zero_map) {
            fy_error_setg(errp, "out of memory for the page map of RAM block "
                          "'%s'", b->rb->idstr);
            fy_ram_load_cleanup(rs);
            return -1;
        }
        fy_ram_zero_map_init(b);
    }
    rs->last_recv = NULL;
    stat_set(&rs->st_loaded_normal, 0);
    stat_set(&rs->st_loaded_zero, 0);
    stat_set(&rs->st_zero_skipped, 0);
    fy_ram_mfd_load_setup(rs);
    fy_ram_prefault_start(rs);
    return 0;
}

int fy_ram_load_cleanup(void *opaque)
{
    FyRamState *rs = opaque;
    fy_ram_mfd_load_cleanup(rs); /* before the zero maps go */
    fy_ram_prefault_stop(rs);
    if (!rs->load_active)
        return 0;
    for (int i = 0; i < rs->nblocks; i++) {
        free(rs->blocks[i].zero_map);
        rs->blocks[i].zero_map = NULL;
    }
    rs->load_active = false;
    rs->last_recv = NULL;
    return 0;
}
