/*
 * packet.c: MultiFDPacket_t, the header in front of every batch of pages
 * (layout at the top of include/ferry/multifd.h), and the checks a
 * destination makes before it believes any of it.
 *
 * The checks run in wire order and stop at the first bad field, so the
 * message names the first thing that is wrong. Nothing from the packet is
 * used to size an allocation: every count is bounded by the 128-entry
 * offset array and every byte count by FY_MULTIFD_COMPRESSED_MAX.
 */
#include <inttypes.h>
#include <string.h>

#include "multifd/multifd-int.h"

static const char *const compression_names[] = {
    [FY_MULTIFD_COMPRESSION_NONE] = "none",
    [FY_MULTIFD_COMPRESSION_ZLIB] = "zlib",
    [FY_MULTIFD_COMPRESSION_ZSTD] = "zstd",
};

const char *fy_multifd_compression_name(FyMultifdCompression c)
{
    if ((unsigned)c >= sizeof(compression_names) / sizeof(compression_names[0]))
        return NULL;
    return compression_names[c];
}

int fy_multifd_compression_parse(const char *name)
{
    for (size_t i = 0; i < sizeof(compression_names) / sizeof(compression_names[0]);
         i++) {
        if (name && !strcmp(name, compression_names[i]))
            return (int)i;
    }
    return -1;
}

uint32_t mfd_compression_flag(FyMultifdCompression c)
{
    switch (c) {
    case FY_MULTIFD_COMPRESSION_ZLIB:
        return FY_MULTIFD_FLAG_ZLIB;
    case FY_MULTIFD_COMPRESSION_ZSTD:
        return FY_MULTIFD_FLAG_ZSTD;
    default:
        return FY_MULTIFD_FLAG_NOCOMP;
    }
}

/* Name of the method a packet's compression bits select, for messages. */
static const char *flag_method(uint32_t bits)
{
    switch (bits) {
    case FY_MULTIFD_FLAG_NOCOMP: return "none";
    case FY_MULTIFD_FLAG_ZLIB:   return "zlib";
    case FY_MULTIFD_FLAG_ZSTD:   return "zstd";
    case FY_MULTIFD_FLAG_QPL:    return "qpl";
    case FY_MULTIFD_FLAG_UADK:   return "uadk";
    case FY_MULTIFD_FLAG_QATZIP: return "qatzip";
    default:                     return "unknown";
    }
}

void fy_multifd_packet_encode(const FyMultifdPacket *p,
                              uint8_t out[FY_MULTIFD_PACKET_LEN])
{
    memset(out, 0, FY_MULTIFD_PACKET_LEN);
    mfd_put_be32(out + 0, p->magic);
    mfd_put_be32(out + 4, p->version);
    mfd_put_be32(out + 8, p->flags);
    mfd_put_be32(out + 12, p->pages_alloc);
    mfd_put_be32(out + 16, p->normal_pages);
    mfd_put_be32(out + 20, p->next_packet_size);
    mfd_put_be64(out + 24, p->packet_num);
    mfd_put_be32(out + 32, p->zero_pages);
    /* 36..63: unused32[1], unused64[3] stay zero. */
    size_t n = strnlen(p->ramblock, sizeof(p->ramblock));
    memcpy(out + 64, p->ramblock, n);
    uint64_t count = (uint64_t)p->normal_pages + p->zero_pages;
    if (count > MFD_PAGES)
        count = MFD_PAGES;
    for (uint64_t i = 0; i < count; i++)
        mfd_put_be64(out + FY_MULTIFD_PACKET_FIXED_LEN + 8 * i, p->offset[i]);
}

void fy_multifd_packet_decode(const uint8_t in[FY_MULTIFD_PACKET_LEN],
                              FyMultifdPacket *p)
{
    p->magic = mfd_get_be32(in + 0);
    p->version = mfd_get_be32(in + 4);
    p->flags = mfd_get_be32(in + 8);
    p->pages_alloc = mfd_get_be32(in + 12);
    p->normal_pages = mfd_get_be32(in + 16);
    p->next_packet_size = mfd_get_be32(in + 20);
    p->packet_num = mfd_get_be64(in + 24);
    p->zero_pages = mfd_get_be32(in + 32);
    memcpy(p->ramblock, in + 64, sizeof(p->ramblock));
    for (uint32_t i = 0; i < MFD_PAGES; i++)
        p->offset[i] = mfd_get_be64(in + FY_MULTIFD_PACKET_FIXED_LEN + 8 * i);
}

static int check_header(const FyMultifdPacket *p, FyError **errp)
{
    if (p->magic != FY_MULTIFD_MAGIC) {
        fy_error_setg(errp, "field 'magic' = 0x%08x, expected 0x%08x",
                      p->magic, FY_MULTIFD_MAGIC);
        return -1;
    }
    if (p->version != FY_MULTIFD_VERSION) {
        fy_error_setg(errp, "field 'version' = %u, expected %u", p->version,
                      FY_MULTIFD_VERSION);
        return -1;
    }
    return 0;
}

static int check_flags(const FyMultifdPacket *p, const FyMultifdCheck *chk,
                       FyError **errp)
{
    const uint32_t known = FY_MULTIFD_FLAG_SYNC | FY_MULTIFD_FLAG_COMPRESSION_MASK;
    uint32_t comp = p->flags & FY_MULTIFD_FLAG_COMPRESSION_MASK;
    uint32_t want = mfd_compression_flag(chk->compression);

    if (p->flags & FY_MULTIFD_FLAG_DEVICE_STATE) {
        fy_error_setg(errp, "field 'flags' = 0x%x: device state packets are "
                      "not supported", p->flags);
        return -1;
    }
    if (p->flags & ~known) {
        fy_error_setg(errp, "field 'flags' = 0x%x has unknown bits 0x%x",
                      p->flags, p->flags & ~known);
        return -1;
    }
    /* QEMU's SYNC-only packets carry no compression bits: check them only
     * when there is something to decompress or they are set at all. */
    bool has_pages = p->normal_pages || p->zero_pages;
    if (comp != want && (has_pages || comp != 0)) {
        fy_error_setg(errp, "field 'flags' = 0x%x says compression %s, but "
                      "multifd-compression here is %s", p->flags,
                      flag_method(comp),
                      fy_multifd_compression_name(chk->compression));
        return -1;
    }
    return 0;
}

static int check_counts(const FyMultifdPacket *p, const FyMultifdCheck *chk,
                        FyError **errp)
{
    if (p->pages_alloc > MFD_PAGES) {
        fy_error_setg(errp, "field 'pages_alloc' = %u exceeds %u pages per "
                      "packet", p->pages_alloc, MFD_PAGES);
        return -1;
    }
    if (p->normal_pages > p->pages_alloc) {
        fy_error_setg(errp, "field 'normal_pages' = %u exceeds pages_alloc = %u",
                      p->normal_pages, p->pages_alloc);
        return -1;
    }
    if (p->zero_pages > p->pages_alloc - p->normal_pages) {
        fy_error_setg(errp, "field 'zero_pages' = %u exceeds pages_alloc - "
                      "normal_pages = %u", p->zero_pages,
                      p->pages_alloc - p->normal_pages);
        return -1;
    }
    /* Without normal pages nothing follows the header, whatever the field
     * says: QEMU 7.2 leaves the previous packet's size in SYNC packets. */
    if (p->normal_pages == 0)
        return 0;
    uint64_t raw = (uint64_t)p->normal_pages * MFD_PAGE;
    if (chk->compression == FY_MULTIFD_COMPRESSION_NONE) {
        if (p->next_packet_size != raw) {
            fy_error_setg(errp, "field 'next_packet_size' = %u, but %u normal "
                          "pages are %" PRIu64 " bytes", p->next_packet_size,
                          p->normal_pages, raw);
            return -1;
        }
        return 0;
    }
    if (p->next_packet_size > FY_MULTIFD_COMPRESSED_MAX) {
        fy_error_setg(errp, "field 'next_packet_size' = %u exceeds the %u "
                      "bytes a compressed packet may have",
                      p->next_packet_size, FY_MULTIFD_COMPRESSED_MAX);
        return -1;
    }
    if (p->next_packet_size == 0) {
        fy_error_setg(errp, "field 'next_packet_size' = 0 with %u normal pages",
                      p->normal_pages);
        return -1;
    }
    return 0;
}

static int check_offsets(const FyMultifdPacket *p, const FyRamBlock *rb,
                         FyError **errp)
{
    uint32_t n = p->normal_pages + p->zero_pages;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t off = p->offset[i];
        if (off % MFD_PAGE || rb->used_length < MFD_PAGE ||
            off > rb->used_length - MFD_PAGE) {
            fy_error_setg(errp, "field 'offset[%u]' = 0x%" PRIx64 " (a %s "
                          "page) is %s RAM block '%s' of 0x%" PRIx64 " bytes",
                          i, off, i < p->normal_pages ? "normal" : "zero",
                          off % MFD_PAGE ? "not page-aligned in" : "outside",
                          rb->idstr, rb->used_length);
            return -1;
        }
    }
    return 0;
}

int fy_multifd_packet_check(const FyMultifdPacket *p, const FyMultifdCheck *chk,
                            FyRamBlock **block, FyError **errp)
{
    *block = NULL;
    if (check_header(p, errp) < 0 || check_flags(p, chk, errp) < 0 ||
        check_counts(p, chk, errp) < 0)
        return -1;
    if (!p->normal_pages && !p->zero_pages)
        return 0; /* QEMU leaves a stale block name in SYNC packets */
    if (!memchr(p->ramblock, 0, sizeof(p->ramblock))) {
        fy_error_setg(errp, "field 'ramblock' is not NUL-terminated");
        return -1;
    }
    FyRamBlock *rb = fy_ram_list_find(chk->ram, p->ramblock);
    if (!rb) {
        fy_error_setg(errp, "field 'ramblock' = '%s' is not a RAM block here",
                      p->ramblock);
        return -1;
    }
    if (!rb->host) {
        fy_error_setg(errp, "field 'ramblock' = '%s': that RAM block is not "
                      "mapped here", p->ramblock);
        return -1;
    }
    if (check_offsets(p, rb, errp) < 0)
        return -1;
    *block = rb;
    return 0;
}
