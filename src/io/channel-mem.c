/*
 * channel-mem.c: an in-memory channel for tests and tools. Writes append to
 * a growable buffer; reads consume from a read position. Never blocks, so
 * a read past the end is end of file. Shutdown makes reads see EOF and
 * writes fail with EPIPE, like a socket.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/channel.h"

typedef struct {
    uint8_t *data;
    size_t len, cap, rpos;
    bool shut_read, shut_write;
} MemChannel;

static ssize_t mem_readv(FyChannel *c, const struct iovec *iov, int iovcnt,
                         int *fds, size_t *nfds, FyError **errp)
{
    MemChannel *m = c->priv;
    if (nfds)
        *nfds = 0;
    if (m->shut_read)
        return 0;
    size_t done = 0;
    for (int i = 0; i < iovcnt && m->rpos < m->len; i++) {
        size_t n = m->len - m->rpos;
        if (n > iov[i].iov_len)
            n = iov[i].iov_len;
        if (!n)
            continue;
        memcpy(iov[i].iov_base, m->data + m->rpos, n);
        m->rpos += n;
        done += n;
    }
    return (ssize_t)done;
}

static int mem_reserve(MemChannel *m, size_t extra)
{
    if (m->len + extra <= m->cap)
        return 0;
    if (extra > SIZE_MAX / 4 - m->len)
        return -1;
    size_t cap = m->cap ? m->cap : 4096;
    while (cap < m->len + extra)
        cap *= 2;
    uint8_t *d = realloc(m->data, cap);
    if (!d)
        return -1;
    m->data = d;
    m->cap = cap;
    return 0;
}

static ssize_t mem_writev(FyChannel *c, const struct iovec *iov, int iovcnt,
                          const int *fds, size_t nfds, FyError **errp)
{
    MemChannel *m = c->priv;
    if (m->shut_write) {
        fy_error_setg_errno(errp, EPIPE, "%s: write", c->name);
        return -1;
    }
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (mem_reserve(m, total) < 0) {
        fy_error_setg(errp, "%s: out of memory growing to %zu bytes", c->name,
                      m->len + total);
        return -1;
    }
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len)
            memcpy(m->data + m->len, iov[i].iov_base, iov[i].iov_len);
        m->len += iov[i].iov_len;
    }
    return (ssize_t)total;
}

static int mem_shutdown(FyChannel *c, FyShutdownHow how, FyError **errp)
{
    MemChannel *m = c->priv;
    if (how & FY_SHUTDOWN_READ)
        m->shut_read = true;
    if (how & FY_SHUTDOWN_WRITE)
        m->shut_write = true;
    return 0;
}

static int mem_close(FyChannel *c, FyError **errp)
{
    MemChannel *m = c->priv;
    free(m->data);
    free(m);
    return 0;
}

static const FyChannelOps mem_ops = {
    .readv = mem_readv,
    .writev = mem_writev,
    .shutdown = mem_shutdown,
    .close = mem_close,
};

FyChannel *fy_channel_mem_new(const void *data, size_t len)
{
    FyChannel *c = fy_channel_alloc(&mem_ops, "memory");
    MemChannel *m = c ? calloc(1, sizeof(*m)) : NULL;
    if (!m) {
        free(c ? c->name : NULL);
        free(c);
        return NULL;
    }
    c->priv = m;
    c->features = FY_CHANNEL_FEATURE_SHUTDOWN;
    if (len && mem_reserve(m, len) < 0) {
        fy_channel_close(c, NULL);
        return NULL;
    }
    if (len) {
        memcpy(m->data, data, len);
        m->len = len;
    }
    return c;
}

const uint8_t *fy_channel_mem_data(FyChannel *c, size_t *len)
{
    MemChannel *m = c->priv;
    *len = m->len;
    return m->data;
}
