/*
 * mfd-test.h: what the multifd tests and the benchmark share: RAM blocks
 * on memfds (as the reference VM has them), page contents that look like
 * real memory, and connected channel pairs over socketpairs, unix or tcp
 * sockets.
 */
#ifndef FERRY_TESTS_MFD_TEST_H
#define FERRY_TESTS_MFD_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ferry/multifd.h"
#include "ferry/uri.h"

#define PG 4096u

static inline int mfd_block_init(FyRamBlock *rb, const char *name, size_t len)
{
    memset(rb, 0, sizeof(*rb));
    snprintf(rb->idstr, sizeof(rb->idstr), "%s", name);
    rb->fd = memfd_create(name, MFD_CLOEXEC);
    if (rb->fd < 0 || ftruncate(rb->fd, (off_t)len) < 0)
        return -1;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, rb->fd, 0);
    if (p == MAP_FAILED)
        return -1;
    rb->host = p;
    rb->used_length = len;
    rb->page_size = PG;
    rb->shared = true;
    return 0;
}

static inline void mfd_block_fini(FyRamBlock *rb)
{
    if (rb->host)
        munmap(rb->host, rb->used_length);
    if (rb->fd >= 0)
        close(rb->fd);
    rb->host = NULL;
    rb->fd = -1;
}

static inline uint64_t mfd_rand(uint64_t *s)
{
    /* xorshift64*: deterministic, so a failure reproduces. */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

/* Give a page contents: 0 zero, 1 text-like (compresses), 2 random, 3 a
 * single non-zero byte somewhere (tests the zero check), 4 sparse words. */
static inline void mfd_fill_page(uint8_t *p, int kind, uint64_t *seed)
{
    switch (kind) {
    case 0:
        memset(p, 0, PG);
        break;
    case 1: {
        static const char words[] = "the quick brown fox jumps over the lazy "
                                    "dog; multifd packs pages; ";
        size_t off = mfd_rand(seed) % (sizeof(words) - 1);
        for (size_t i = 0; i < PG; i++)
            p[i] = (uint8_t)words[(off + i) % (sizeof(words) - 1)];
        p[mfd_rand(seed) % PG] ^= (uint8_t)mfd_rand(seed);
        break;
    }
    case 2:
        for (size_t i = 0; i < PG; i += 8) {
            uint64_t v = mfd_rand(seed);
            memcpy(p + i, &v, 8);
        }
        break;
    case 3:
        memset(p, 0, PG);
        p[mfd_rand(seed) % PG] = (uint8_t)(1 + mfd_rand(seed) % 255);
        break;
    default:
        memset(p, 0, PG);
        for (int i = 0; i < 16; i++) {
            uint64_t v = mfd_rand(seed);
            memcpy(p + (mfd_rand(seed) % (PG / 8)) * 8, &v, 8);
        }
        break;
    }
}

/* n connected pairs: src[i] writes, dst[i] reads. kind: "pair" (socketpair),
 * "unix" or "tcp" (a listener; accepted channels may come in any order, so
 * dst[] is in accept order). */
static inline int mfd_connect(const char *kind, int n, FyChannel **src,
                              FyChannel **dst, FyError **errp)
{
    if (!strcmp(kind, "pair")) {
        for (int i = 0; i < n; i++)
            if (fy_channel_socketpair(&src[i], &dst[i], errp) < 0)
                return -1;
        return 0;
    }
    char uri[128];
    if (!strcmp(kind, "unix"))
        snprintf(uri, sizeof(uri), "unix:/tmp/ferry-mfd-test-%d.sock", (int)getpid());
    else
        snprintf(uri, sizeof(uri), "tcp:127.0.0.1:0");
    if (!strcmp(kind, "unix"))
        unlink(uri + 5);
    FyListener *l = fy_listener_new(uri, errp);
    if (!l)
        return -1;
    int r = 0;
    for (int i = 0; i < n && r == 0; i++) {
        src[i] = fy_channel_open_outgoing(fy_listener_address(l), errp);
        if (!src[i])
            r = -1;
    }
    for (int i = 0; i < n && r == 0; i++) {
        dst[i] = fy_listener_accept(l, 5000, errp);
        if (!dst[i])
            r = -1;
    }
    fy_listener_free(l);
    if (!strcmp(kind, "unix"))
        unlink(uri + 5);
    return r;
}

#endif
