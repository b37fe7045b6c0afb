/*
 * postcopy-load.c: the receiving half of the RAM section in postcopy (the
 * postcopy branch of QEMU's ram_load, and its preempt-channel reader).
 *
 *   advised    (POSTCOPY_ADVISE .. LISTEN) records load as in precopy; each
 *              PAGE/ZERO is reported received first, so LISTEN keeps it
 *   placing    (from LISTEN) guest RAM is registered with userfaultfd: a
 *              write to a missing page would block the loader on its own
 *              fault. PAGE is read into a buffer off guest RAM and placed
 *              with one UFFDIO_COPY, ZERO with UFFDIO_ZEROPAGE; any record
 *              other than PAGE, ZERO, EOS and MULTIFD_FLUSH is refused.
 *
 * Reporting a page received before it is loaded is safe: the bits are only
 * read at LISTEN, by this same thread, after the load finished, and a load
 * that fails fails the migration.
 *
 * The preempt channel carries bare records (no sections): `be64
 * offset|flags`, `u8 n + idstr` unless CONTINUE, then the page or the fill
 * byte. Every field is checked before use, as on the main stream.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ram/postcopy-int.h"
#include "ram/ram-int.h"

void fy_ram_postcopy_attach(FyRamState *rs, FyPostcopyDest *d)
{
    if (!d && !rs->pc)
        return;
    if (!rs->pc)
        rs->pc = calloc(1, sizeof(*rs->pc));
    if (!rs->pc)
        return; /* nothing is marked: LISTEN then asks for every page */
    rs->pc->d = d;
    rs->pc->placing = false;
}

void fy_ram_postcopy_set_placing(FyRamState *rs, bool on)
{
    if (rs->pc && rs->pc->d)
        rs->pc->placing = on;
}

static int place(FyPostcopyDest *d, FyStream *f, const FyRamBlock *rb,
                 unsigned flags, uint64_t offset, uint8_t *buf, FyError **errp)
{
    if (rb->page_size != FY_TARGET_PAGE_SIZE) {
        fy_error_setg(errp, "postcopy: RAM block '%s' has %" PRIu64 "-byte "
                      "pages; ferry places only 4 KiB pages", rb->idstr,
                      rb->page_size);
        return -1;
    }
    int r;
    if ((flags & ~RAM_SAVE_FLAG_CONTINUE) == RAM_SAVE_FLAG_ZERO) {
        uint8_t fill = fy_get_byte(f);
        if (fy_stream_check(f, errp) < 0)
            return -1;
        if (fill) {
            fy_error_setg(errp, "zero page at offset 0x%" PRIx64 " of RAM block "
                          "'%s' has fill byte 0x%02x (must be 0)", offset,
                          rb->idstr, fill);
            return -1;
        }
        r = fy_postcopy_dest_place_zero_page(d, rb, offset, errp);
    } else {
        fy_get_buffer(f, buf, FY_TARGET_PAGE_SIZE);
        if (fy_stream_check(f, errp) < 0)
            return -1;
        r = fy_postcopy_dest_place_page(d, rb, offset, buf, errp);
    }
    return r < 0 ? -1 : 0;
}

int fy_ram_postcopy_load_hook(FyRamState *rs, FyStream *f, const FyRamBlock *rb,
                              unsigned flags, uint64_t offset, FyError **errp)
{
    RamPostcopy *pc = rs->pc;
    if (!pc || !pc->d)
        return 1;
    if (!pc->placing) {
        fy_postcopy_dest_mark_received(pc->d, rb, offset, FY_TARGET_PAGE_SIZE);
        return 1;
    }
    if (!pc->page && !(pc->page = malloc(FY_TARGET_PAGE_SIZE))) {
        fy_error_setg(errp, "postcopy: out of memory for a page buffer");
        return -1;
    }
    if (place(pc->d, f, rb, flags, offset, pc->page, errp) < 0)
        return -1;
    if (flags & RAM_SAVE_FLAG_ZERO)
        __atomic_fetch_add(&rs->st_loaded_zero, 1, __ATOMIC_RELAXED);
    else
        __atomic_fetch_add(&rs->st_loaded_normal, 1, __ATOMIC_RELAXED);
    return 0;
}

static bool postcopy_record(unsigned flags)
{
    switch (flags) {
    case RAM_SAVE_FLAG_EOS:
    case RAM_SAVE_FLAG_MULTIFD_FLUSH:
    case RAM_SAVE_FLAG_ZERO:
    case RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE:
    case RAM_SAVE_FLAG_PAGE:
    case RAM_SAVE_FLAG_PAGE | RAM_SAVE_FLAG_CONTINUE:
        return true;
    default:
        return false;
    }
}

int fy_ram_postcopy_check_flags(FyRamState *rs, unsigned flags, FyError **errp)
{
    if (!rs->pc || !rs->pc->placing || postcopy_record(flags))
        return 0;
    fy_error_setg(errp, "record flags 0x%x during postcopy: only PAGE, ZERO "
                  "and EOS records may follow POSTCOPY_LISTEN", flags);
    return -1;
}

/* ---- the preempt channel ---- */

static const FyRamBlock *preempt_block(FyPostcopyDest *d, FyStream *f,
                                       unsigned flags, const FyRamBlock **last,
                                       FyError **errp)
{
    if (flags & RAM_SAVE_FLAG_CONTINUE) {
        if (!*last)
            fy_error_setg(errp, "page record says CONTINUE but no block was "
                          "named before it");
        return *last;
    }
    char id[256];
    int len = fy_get_counted_string(f, id);
    if (len < 0) {
        fy_stream_check(f, errp);
        fy_error_prepend(errp, "reading a RAM block name: ");
        return NULL;
    }
    const FyRamBlock *rb = (size_t)len == strlen(id)
                           ? fy_ram_list_find(d->ram, id) : NULL;
    if (!rb) {
        for (int i = 0; i < len; i++)
            if (id[i] < 0x20 || id[i] > 0x7e)
                id[i] = '?';
        fy_error_setg(errp, "Unknown ramblock '%s', cannot accept migration",
                      id);
        return NULL;
    }
    *last = rb;
    return rb;
}

static int preempt_record(FyPostcopyDest *d, FyStream *f, uint8_t *buf,
                          const FyRamBlock **last, FyError **errp)
{
    uint64_t addr = fy_get_be64(f);
    if (fy_stream_check(f, errp) < 0)
        return -1;
    unsigned flags = (unsigned)(addr & (FY_TARGET_PAGE_SIZE - 1));
    uint64_t offset = addr & ~(uint64_t)(FY_TARGET_PAGE_SIZE - 1);
    if (flags == RAM_SAVE_FLAG_EOS)
        return 0;
    if (!postcopy_record(flags) || flags == RAM_SAVE_FLAG_MULTIFD_FLUSH) {
        fy_error_setg(errp, "record flags 0x%x on the postcopy-preempt "
                      "channel (only PAGE, ZERO and EOS)", flags);
        return -1;
    }
    const FyRamBlock *rb = preempt_block(d, f, flags, last, errp);
    if (!rb)
        return -1;
    if (offset >= rb->used_length) {
        fy_error_setg(errp, "page offset 0x%" PRIx64 " is past the end of RAM "
                      "block '%s' (0x%" PRIx64 " bytes)", offset, rb->idstr,
                      rb->used_length);
        return -1;
    }
    return place(d, f, rb, flags, offset, buf, errp);
}

int fy_postcopy_dest_load_preempt(FyPostcopyDest *d, FyStream *f, FyError **errp)
{
    uint8_t *buf = malloc(FY_TARGET_PAGE_SIZE);
    const FyRamBlock *last = NULL;
    int r = 0;
    if (!buf) {
        fy_error_setg(errp, "postcopy-preempt: out of memory for a page buffer");
        return -1;
    }
    for (;;) {
        uint64_t at = fy_stream_offset(f);
        if (fy_peek_byte(f, 0) < 0) {
            /* a clean end of stream leaves no error behind */
            r = fy_stream_check(f, errp);
            if (r < 0)
                fy_error_prepend(errp, "postcopy-preempt channel: ");
            break;
        }
        if (preempt_record(d, f, buf, &last, errp) < 0) {
            fy_error_prepend(errp, "postcopy-preempt channel, record at stream "
                             "offset %" PRIu64 ": ", at);
            r = -1;
            break;
        }
    }
    free(buf);
    return r;
}
