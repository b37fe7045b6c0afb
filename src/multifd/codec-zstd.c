/*
 * codec-zstd.c: multifd-compression=zstd, QEMU's multifd-zstd.c format.
 *
 * One zstd frame per channel that never ends: pages go in with
 * ZSTD_e_continue and the last page of a packet with ZSTD_e_flush, which
 * closes a block so the packet's chunk decodes on its own given the
 * earlier ones (the window spans packets). The receiver keeps one
 * decompression context per channel likewise.
 *
 * The frame header is the sender's to choose, so the decoder's window is
 * capped (ZSTD_d_windowLogMax 25, the window of level 20, QEMU's highest
 * multifd-zstd-level): a hostile header cannot make us allocate more than
 * 32 MiB per channel. As with zlib, a chunk must give exactly n pages.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "multifd/multifd-int.h"

#define ZSTD_WINDOW_LOG_MAX 25

static int zstd_init(MfdCodec *c, bool sender, int level, FyError **errp)
{
    size_t r;
    if (sender) {
        if (level < 0 || level > 20) {
            fy_error_setg(errp, "zstd: multifd-zstd-level %d is not in 0..20",
                          level);
            return -1;
        }
        ZSTD_CCtx *cc = ZSTD_createCCtx();
        c->state = cc;
        if (!cc) {
            fy_error_setg(errp, "zstd: out of memory for a compression context");
            return -1;
        }
        r = ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level);
        c->cap = ZSTD_compressBound(FY_MULTIFD_PACKET_SIZE) + 1024;
        c->page = malloc(MFD_PAGE);
    } else {
        ZSTD_DCtx *dc = ZSTD_createDCtx();
        c->state = dc;
        if (!dc) {
            fy_error_setg(errp, "zstd: out of memory for a decompression context");
            return -1;
        }
        r = ZSTD_DCtx_setParameter(dc, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG_MAX);
        c->cap = FY_MULTIFD_COMPRESSED_MAX;
    }
    if (ZSTD_isError(r)) {
        fy_error_setg(errp, "zstd: setting up the context: %s",
                      ZSTD_getErrorName(r));
        return -1;
    }
    c->buf = malloc(c->cap);
    if (!c->buf || (sender && !c->page)) {
        fy_error_setg(errp, "zstd: out of memory for the %zu-byte buffer", c->cap);
        return -1;
    }
    return 0;
}

static void zstd_fini(MfdCodec *c)
{
    if (c->sender)
        ZSTD_freeCCtx(c->state);
    else
        ZSTD_freeDCtx(c->state);
    c->state = NULL;
}

static int zstd_compress(MfdCodec *c, uint8_t *const *pages, uint32_t n,
                         size_t *len, FyError **errp)
{
    ZSTD_outBuffer out = { c->buf, c->cap, 0 };

    for (uint32_t i = 0; i < n; i++) {
        ZSTD_EndDirective op = i + 1 == n ? ZSTD_e_flush : ZSTD_e_continue;
        memcpy(c->page, pages[i], MFD_PAGE);
        ZSTD_inBuffer in = { c->page, MFD_PAGE, 0 };
        for (;;) {
            size_t r = ZSTD_compressStream2(c->state, &out, &in, op);
            if (ZSTD_isError(r)) {
                fy_error_setg(errp, "zstd: compression failed: %s",
                              ZSTD_getErrorName(r));
                return -1;
            }
            /* continue: done once the page is taken in; flush: done when
             * nothing is left to flush (r == 0). */
            if (in.pos == in.size && (op == ZSTD_e_continue || r == 0))
                break;
            if (out.pos == out.size) {
                fy_error_setg(errp, "zstd: %u pages compress to more than "
                              "%zu bytes", n, c->cap);
                return -1;
            }
        }
    }
    *len = out.pos;
    return 0;
}

/* Decompress until out is full (0) or the input gives no more (1). */
static int zstd_fill(ZSTD_DCtx *dc, ZSTD_inBuffer *in, ZSTD_outBuffer *out,
                     const char *what, FyError **errp)
{
    while (out->pos < out->size) {
        size_t in_before = in->pos, out_before = out->pos;
        size_t r = ZSTD_decompressStream(dc, out, in);
        if (ZSTD_isError(r)) {
            fy_error_setg(errp, "zstd: decompression failed in %s: %s", what,
                          ZSTD_getErrorName(r));
            return -1;
        }
        if (in->pos == in_before && out->pos == out_before)
            return 1;
    }
    return 0;
}

static int zstd_decompress(MfdCodec *c, size_t len, uint8_t *const *pages,
                           uint32_t n, FyError **errp)
{
    ZSTD_inBuffer in = { c->buf, len, 0 };
    char what[48];

    for (uint32_t i = 0; i < n; i++) {
        ZSTD_outBuffer out = { pages[i], MFD_PAGE, 0 };
        snprintf(what, sizeof(what), "page %u of %u", i, n);
        int r = zstd_fill(c->state, &in, &out, what, errp);
        if (r < 0)
            return -1;
        if (r > 0) {
            fy_error_setg(errp, "zstd: the %zu compressed bytes end after %u "
                          "of %u pages (%zu bytes into page %u)", len, i, n,
                          out.pos, i);
            return -1;
        }
    }
    /* Block framing may remain; a decoded byte may not. */
    uint8_t probe;
    ZSTD_outBuffer out = { &probe, 1, 0 };
    int r = zstd_fill(c->state, &in, &out, "the data after the last page", errp);
    if (r < 0)
        return -1;
    if (r == 0) {
        fy_error_setg(errp, "zstd: the compressed data holds more than the "
                      "%u pages the packet lists", n);
        return -1;
    }
    if (in.pos != in.size) {
        fy_error_setg(errp, "zstd: %zu bytes of compressed data are left "
                      "after the last page", in.size - in.pos);
        return -1;
    }
    return 0;
}

const MfdCodecOps mfd_codec_zstd = {
    .name = "zstd",
    .init = zstd_init,
    .fini = zstd_fini,
    .compress = zstd_compress,
    .decompress = zstd_decompress,
};
