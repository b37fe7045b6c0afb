/*
 * channel.c: the transport-independent half of channels: dispatch, short
 * reads and writes, and waiting on non-blocking channels.
 *
 * Implementations loop on EINTR themselves and turn EAGAIN into FY_IO_AGAIN;
 * the *_all helpers here turn FY_IO_AGAIN into a poll() and go on, so they
 * behave the same on blocking and non-blocking channels.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/channel.h"

FyChannel *fy_channel_alloc(const FyChannelOps *ops, const char *name_fmt, ...)
{
    FyChannel *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    va_list ap;
    va_start(ap, name_fmt);
    if (vasprintf(&c->name, name_fmt, ap) < 0)
        c->name = NULL;
    va_end(ap);
    if (!c->name) {
        free(c);
        return NULL;
    }
    c->ops = ops;
    c->rfd = c->wfd = -1;
    c->blocking = true;
    return c;
}

ssize_t fy_channel_readv_fds(FyChannel *c, const struct iovec *iov, int iovcnt,
                             int *fds, size_t *nfds, FyError **errp)
{
    if (!c->ops->readv) {
        fy_error_setg(errp, "%s: channel cannot be read", c->name);
        return -1;
    }
    if (nfds && *nfds && !(c->features & FY_CHANNEL_FEATURE_FD_PASS)) {
        *nfds = 0;
        fds = NULL;
        nfds = NULL;
    }
    return c->ops->readv(c, iov, iovcnt, fds, nfds, errp);
}

ssize_t fy_channel_writev_fds(FyChannel *c, const struct iovec *iov, int iovcnt,
                              const int *fds, size_t nfds, FyError **errp)
{
    if (!c->ops->writev) {
        fy_error_setg(errp, "%s: channel cannot be written", c->name);
        return -1;
    }
    if (nfds && !(c->features & FY_CHANNEL_FEATURE_FD_PASS)) {
        fy_error_setg(errp, "%s: channel cannot pass file descriptors", c->name);
        return -1;
    }
    return c->ops->writev(c, iov, iovcnt, fds, nfds, errp);
}

ssize_t fy_channel_readv(FyChannel *c, const struct iovec *iov, int iovcnt,
                         FyError **errp)
{
    return fy_channel_readv_fds(c, iov, iovcnt, NULL, NULL, errp);
}

ssize_t fy_channel_writev(FyChannel *c, const struct iovec *iov, int iovcnt,
                          FyError **errp)
{
    return fy_channel_writev_fds(c, iov, iovcnt, NULL, 0, errp);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int fy_channel_wait(FyChannel *c, bool for_write, int timeout_ms, FyError **errp)
{
    int fd = for_write ? c->wfd : c->rfd;
    if (fd < 0)
        return 1; /* nothing to poll: the next call will say what it can */
    struct pollfd p = { .fd = fd, .events = for_write ? POLLOUT : POLLIN };
    int64_t deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : 0;
    for (;;) {
        int left = -1;
        if (timeout_ms >= 0) {
            int64_t d = deadline - now_ms();
            left = d > 0 ? (int)d : 0;
        }
        int r = poll(&p, 1, left);
        if (r > 0)
            return 1; /* POLLHUP/POLLERR too: the read or write reports it */
        if (r == 0)
            return 0;
        if (errno != EINTR) {
            fy_error_setg_errno(errp, errno, "%s: poll", c->name);
            return -1;
        }
    }
}

/* A non-blocking channel said "again": wait until it can go on. */
static int channel_wait(FyChannel *c, bool for_write, FyError **errp)
{
    return fy_channel_wait(c, for_write, -1, errp) < 0 ? -1 : 0;
}

int fy_channel_read_all(FyChannel *c, void *buf, size_t len, FyError **errp)
{
    size_t done = 0;
    while (done < len) {
        struct iovec iov = { (char *)buf + done, len - done };
        ssize_t n = fy_channel_readv(c, &iov, 1, errp);
        if (n == FY_IO_AGAIN) {
            if (channel_wait(c, false, errp) < 0)
                return -1;
            continue;
        }
        if (n < 0)
            return -1;
        if (n == 0) {
            if (done == 0)
                return 1;
            fy_error_setg(errp, "%s: end of stream after %zu of %zu bytes",
                          c->name, done, len);
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

int fy_channel_writev_all(FyChannel *c, struct iovec *iov, int iovcnt,
                          FyError **errp)
{
    while (iovcnt > 0) {
        /* Skip emptied entries so a short write resumes mid-vector. */
        if (iov->iov_len == 0) {
            iov++;
            iovcnt--;
            continue;
        }
        int cnt = iovcnt > IOV_MAX ? IOV_MAX : iovcnt;
        ssize_t n = fy_channel_writev(c, iov, cnt, errp);
        if (n == FY_IO_AGAIN) {
            if (channel_wait(c, true, errp) < 0)
                return -1;
            continue;
        }
        if (n < 0)
            return -1;
        size_t left = (size_t)n;
        while (left && iovcnt) {
            if (left >= iov->iov_len) {
                left -= iov->iov_len;
                iov->iov_len = 0;
                iov++;
                iovcnt--;
            } else {
                iov->iov_base = (char *)iov->iov_base + left;
                iov->iov_len -= left;
                left = 0;
            }
        }
    }
    return 0;
}

int fy_channel_write_all(FyChannel *c, const void *buf, size_t len, FyError **errp)
{
    struct iovec iov = { (void *)buf, len };
    return fy_channel_writev_all(c, &iov, 1, errp);
}

int fy_channel_shutdown(FyChannel *c, FyShutdownHow how, FyError **errp)
{
    if (!c->ops->shutdown) {
        fy_error_setg(errp, "%s: channel cannot be shut down", c->name);
        return -1;
    }
    return c->ops->shutdown(c, how, errp);
}

int fy_channel_set_blocking(FyChannel *c, bool blocking, FyError **errp)
{
    if (!c->ops->set_blocking) {
        c->blocking = blocking;
        return 0;
    }
    int r = c->ops->set_blocking(c, blocking, errp);
    if (r == 0)
        c->blocking = blocking;
    return r;
}

int fy_channel_close(FyChannel *c, FyError **errp)
{
    if (!c)
        return 0;
    int r = c->ops->close ? c->ops->close(c, errp) : 0;
    free(c->name);
    free(c);
    return r;
}
