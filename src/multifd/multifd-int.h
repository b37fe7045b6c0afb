/*
 * multifd-int.h: what the multifd files share.
 *
 *   handshake.c  MultiFDInit_t               packet.c   MultiFDPacket_t
 *   zero-page.c  buffer_is_zero               codec-*.c  zlib / zstd streams
 *   zerocopy.c   MSG_ZEROCOPY and completions send.c / recv.c  the threads
 */
#ifndef FERRY_MULTIFD_INT_H
#define FERRY_MULTIFD_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "ferry/multifd.h"

#define MFD_PAGE   FY_TARGET_PAGE_SIZE
#define MFD_PAGES  FY_MULTIFD_PAGES_PER_PACKET

/* ---- big-endian fields ---- */
static inline void mfd_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void mfd_put_be64(uint8_t *p, uint64_t v)
{
    mfd_put_be32(p, (uint32_t)(v >> 32));
    mfd_put_be32(p + 4, (uint32_t)v);
}

static inline uint32_t mfd_get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t mfd_get_be64(const uint8_t *p)
{
    return (uint64_t)mfd_get_be32(p) << 32 | mfd_get_be32(p + 4);
}

/* Counters read by the stats calls while the threads add to them. */
static inline void mfd_stat_add(uint64_t *p, uint64_t v)
{
    __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

static inline uint64_t mfd_stat_get(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* The compression flag bits of a method. */
uint32_t mfd_compression_flag(FyMultifdCompression c);

/* ---- codecs: one persistent compression stream per channel ----
 * Sender: compress() reads n target pages (each copied to a private page
 * first, since guest memory may change under the compressor) and leaves
 * the chunk in buf[0..*len). Receiver: the chunk is put in buf[0..len) by
 * the caller; decompress() fills exactly n pages and fails if the chunk
 * holds less or more than that. Errors read "zlib: ..." / "zstd: ...". */
typedef struct MfdCodec MfdCodec;

typedef struct MfdCodecOps {
    const char *name;
    int (*init)(MfdCodec *c, bool sender, int level, FyError **errp);
    void (*fini)(MfdCodec *c);
    int (*compress)(MfdCodec *c, uint8_t *const *pages, uint32_t n,
                    size_t *len, FyError **errp);
    int (*decompress)(MfdCodec *c, size_t len, uint8_t *const *pages,
                      uint32_t n, FyError **errp);
} MfdCodecOps;

struct MfdCodec {
    const MfdCodecOps *ops; /* NULL: no compression */
    bool sender;
    void *state;            /* z_stream, ZSTD_CCtx or ZSTD_DCtx */
    uint8_t *buf;           /* the compressed chunk */
    size_t cap;
    uint8_t *page;          /* sender: the page being compressed */
};

extern const MfdCodecOps mfd_codec_zlib;
extern const MfdCodecOps mfd_codec_zstd;

/* NONE leaves c->ops NULL and allocates nothing. */
int mfd_codec_init(MfdCodec *c, FyMultifdCompression kind, bool sender,
                   int level, FyError **errp);
void mfd_codec_fini(MfdCodec *c);

/* ---- zero copy (zerocopy.c) ----
 * MSG_ZEROCOPY on the channel's socket: sendmsg() returns before the
 * kernel has read the pages, and the error queue later says which sends
 * are done. sent/done count sendmsg calls; copied counts completions the
 * kernel served by copying (loopback always does). */
typedef struct MfdZeroCopy {
    int fd;
    uint64_t sent;
    uint64_t done;
    uint64_t copied;
} MfdZeroCopy;

int mfd_zc_init(MfdZeroCopy *z, FyChannel *c, FyError **errp);
/* Write all of iov (modified) with MSG_ZEROCOPY; reaps completions as it
 * goes. */
int mfd_zc_writev_all(MfdZeroCopy *z, FyChannel *c, struct iovec *iov,
                      int iovcnt, FyError **errp);
/* Collect the completions already queued (never blocks). */
int mfd_zc_reap(MfdZeroCopy *z, FyChannel *c, FyError **errp);
/* Wait until every send has completed. *stop (read atomically) != 0 ends
 * the wait early with an error. */
int mfd_zc_flush(MfdZeroCopy *z, FyChannel *c, const int *stop,
                 FyError **errp);

/* ---- channel helpers ---- */
/* Read all of iov (modified); 1 on EOF before the first byte, 0 when done,
 * -1 with *errp (a short read before EOF says how much arrived). */
int mfd_readv_all(FyChannel *c, struct iovec *iov, int iovcnt, FyError **errp);

/* Fill iov with one entry per run of adjacent pages; returns the count. */
int mfd_page_iov(struct iovec *iov, uint8_t *host, const uint64_t *offsets,
                 uint32_t n);

#endif
