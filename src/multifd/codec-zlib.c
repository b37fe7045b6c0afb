/*
 * codec-zlib.c: multifd-compression=zlib, QEMU's multifd-zlib.c format.
 *
 * One deflate stream per channel, opened at setup and never reset: each
 * page is fed with Z_NO_FLUSH and the last page of a packet with
 * Z_SYNC_FLUSH, which ends the packet's chunk on a byte boundary (an empty
 * stored block 00 00 ff ff) so the receiver can inflate it whole. Later
 * chunks refer back into earlier ones (the 32 KiB window), so the receiver
 * keeps one inflate stream per channel too.
 *
 * Receiving, a chunk must give exactly n pages: fewer is "ends after", and
 * more (a byte still comes out after the last page) is refused, so a
 * hostile chunk can neither leave pages unwritten nor spill into the next
 * packet.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "multifd/multifd-int.h"

static const char *zmsg(const z_stream *zs, int ret)
{
    if (zs->msg)
        return zs->msg;
    switch (ret) {
    case Z_BUF_ERROR:    return "no progress possible";
    case Z_MEM_ERROR:    return "out of memory";
    case Z_STREAM_ERROR: return "inconsistent stream state";
    case Z_DATA_ERROR:   return "corrupted data";
    case Z_NEED_DICT:    return "a preset dictionary is needed";
    case Z_STREAM_END:   return "the stream ended";
    default:             return "unexpected return code";
    }
}

static int zlib_init(MfdCodec *c, bool sender, int level, FyError **errp)
{
    z_stream *zs = calloc(1, sizeof(*zs));
    if (!zs) {
        fy_error_setg(errp, "zlib: out of memory");
        return -1;
    }
    c->state = zs;
    int ret;
    if (sender) {
        if (level < 0 || level > 9) {
            fy_error_setg(errp, "zlib: multifd-zlib-level %d is not in 0..9",
                          level);
            return -1;
        }
        ret = deflateInit(zs, level);
        /* A sync flush after each page run costs a few bytes of framing;
         * compressBound covers a single flush, the margin the rest. */
        c->cap = compressBound(FY_MULTIFD_PACKET_SIZE) + 1024;
        c->page = malloc(MFD_PAGE);
    } else {
        ret = inflateInit(zs);
        c->cap = FY_MULTIFD_COMPRESSED_MAX;
    }
    if (ret != Z_OK) {
        fy_error_setg(errp, "zlib: %s failed: %s",
                      sender ? "deflateInit" : "inflateInit", zmsg(zs, ret));
        free(zs);
        c->state = NULL;
        return -1;
    }
    c->buf = malloc(c->cap);
    if (!c->buf || (sender && !c->page)) {
        fy_error_setg(errp, "zlib: out of memory for the %zu-byte buffer", c->cap);
        return -1;
    }
    return 0;
}

static void zlib_fini(MfdCodec *c)
{
    z_stream *zs = c->state;
    if (!zs)
        return;
    if (c->sender)
        deflateEnd(zs);
    else
        inflateEnd(zs);
    free(zs);
    c->state = NULL;
}

static int zlib_compress(MfdCodec *c, uint8_t *const *pages, uint32_t n,
                         size_t *len, FyError **errp)
{
    z_stream *zs = c->state;
    size_t out = 0;

    for (uint32_t i = 0; i < n; i++) {
        int flush = i + 1 == n ? Z_SYNC_FLUSH : Z_NO_FLUSH;
        memcpy(c->page, pages[i], MFD_PAGE);
        zs->next_in = c->page;
        zs->avail_in = MFD_PAGE;
        for (;;) {
            zs->next_out = c->buf + out;
            zs->avail_out = (uInt)(c->cap - out);
            int ret = deflate(zs, flush);
            out = c->cap - zs->avail_out;
            if (ret != Z_OK && ret != Z_BUF_ERROR) {
                fy_error_setg(errp, "zlib: deflate failed: %s", zmsg(zs, ret));
                return -1;
            }
            /* Done with this page once its input is in and, for the sync
             * flush, deflate had output room left (so it finished). */
            if (zs->avail_in == 0 && (flush == Z_NO_FLUSH || zs->avail_out))
                break;
            if (out == c->cap) {
                fy_error_setg(errp, "zlib: %u pages compress to more than "
                              "%zu bytes", n, c->cap);
                return -1;
            }
        }
    }
    *len = out;
    return 0;
}

/* Inflate until out is full or no progress is possible. */
static int inflate_into(z_stream *zs, uint8_t *out, size_t len, FyError **errp,
                        const char *what)
{
    zs->next_out = out;
    zs->avail_out = (uInt)len;
    while (zs->avail_out) {
        int ret = inflate(zs, Z_SYNC_FLUSH);
        if (ret == Z_BUF_ERROR)
            return 1; /* input used up */
        if (ret != Z_OK) {
            fy_error_setg(errp, "zlib: inflate failed in %s: %s", what,
                          zmsg(zs, ret));
            return -1;
        }
        if (zs->avail_in == 0 && zs->avail_out)
            return 1;
    }
    return 0;
}

static int zlib_decompress(MfdCodec *c, size_t len, uint8_t *const *pages,
                           uint32_t n, FyError **errp)
{
    z_stream *zs = c->state;
    char what[48];

    zs->next_in = c->buf;
    zs->avail_in = (uInt)len;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(what, sizeof(what), "page %u of %u", i, n);
        int r = inflate_into(zs, pages[i], MFD_PAGE, errp, what);
        if (r < 0)
            return -1;
        if (r > 0) {
            fy_error_setg(errp, "zlib: the %zu compressed bytes end after "
                          "%u of %u pages (%u bytes into page %u)", len, i, n,
                          (unsigned)(MFD_PAGE - zs->avail_out), i);
            return -1;
        }
    }
    /* Whatever is left may only be framing (the sync flush's empty block):
     * it must give no byte of output. */
    uint8_t probe;
    int r = inflate_into(zs, &probe, 1, errp, "the data after the last page");
    if (r < 0)
        return -1;
    if (r == 0) {
        fy_error_setg(errp, "zlib: the compressed data holds more than the "
                      "%u pages the packet lists", n);
        return -1;
    }
    if (zs->avail_in) {
        fy_error_setg(errp, "zlib: %u bytes of compressed data are left after "
                      "the last page", zs->avail_in);
        return -1;
    }
    return 0;
}

const MfdCodecOps mfd_codec_zlib = {
    .name = "zlib",
    .init = zlib_init,
    .fini = zlib_fini,
    .compress = zlib_compress,
    .decompress = zlib_decompress,
};
