/*
 * zerocopy.c: zero-copy-send, pages leave with MSG_ZEROCOPY.
 *
 * sendmsg(MSG_ZEROCOPY) pins the pages and returns before the kernel has
 * read them; each successful call gets the next 32-bit notification id,
 * and when the kernel is done with a range of them it queues one message
 * on the socket's error queue (origin SO_EE_ORIGIN_ZEROCOPY, ids
 * ee_info..ee_data; ee_code SO_EE_CODE_ZEROCOPY_COPIED when it copied
 * after all, as it always does on loopback).
 *
 * Invariant: done <= sent; every send with id < done has released its
 * pages. Guest memory may change while a send is in flight, which is fine
 * for the same reason as in QEMU: a page written after the dirty sync that
 * queued it is dirty again and goes once more in a later round. What must
 * hold is that, when a sync returns, everything sent before it is on its
 * way; so the send thread waits for done == sent at every sync (flush).
 *
 * The channel's fd is used directly: the FyChannel API has no zero-copy
 * write. The send thread is the only user of the fd for writing, as the
 * channel contract requires.
 */
#include <errno.h>
#include <inttypes.h>
#include <time.h> /* before linux/errqueue.h, which uses struct timespec */
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "multifd/multifd-int.h"

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif

/* Give up on completions that do not come for this long. */
#define ZC_FLUSH_TIMEOUT_MS 30000

int mfd_zc_init(MfdZeroCopy *z, FyChannel *c, FyError **errp)
{
    int one = 1, type = 0, domain = 0;
    socklen_t len = sizeof(type);

    memset(z, 0, sizeof(*z));
    z->fd = c->wfd;
    if (z->fd < 0 || getsockopt(z->fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
        fy_error_setg(errp, "zero-copy-send: %s is not a socket", c->name);
        return -1;
    }
    len = sizeof(domain);
    if (getsockopt(z->fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 ||
        (domain != AF_INET && domain != AF_INET6) || type != SOCK_STREAM) {
        fy_error_setg(errp, "zero-copy-send: %s is not a tcp socket (only tcp "
                      "has MSG_ZEROCOPY)", c->name);
        return -1;
    }
    if (setsockopt(z->fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) < 0) {
        fy_error_setg_errno(errp, errno, "zero-copy-send: %s: SO_ZEROCOPY",
                            c->name);
        return -1;
    }
    return 0;
}

/* Read one message from the error queue. 1: read one, 0: queue empty. */
static int reap_one(MfdZeroCopy *z, FyChannel *c, FyError **errp)
{
    union {
        char buf[CMSG_SPACE(sizeof(struct sock_extended_err) + 64)];
        struct cmsghdr align;
    } cbuf;
    struct msghdr msg = { .msg_control = cbuf.buf,
                          .msg_controllen = sizeof(cbuf.buf) };

    ssize_t r;
    do {
        r = recvmsg(z->fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        fy_error_setg_errno(errp, errno, "zero-copy-send: %s: reading the "
                            "error queue", c->name);
        return -1;
    }
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (!((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR) ||
              (cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR)))
            continue;
        struct sock_extended_err ee;
        memcpy(&ee, CMSG_DATA(cm), sizeof(ee));
        if (ee.ee_origin != SO_EE_ORIGIN_ZEROCOPY)
            continue;
        if (ee.ee_errno) {
            fy_error_setg_errno(errp, (int)ee.ee_errno, "zero-copy-send: %s",
                                c->name);
            return -1;
        }
        /* ids are 32-bit and wrap; the range is inclusive. */
        uint32_t n = ee.ee_data - ee.ee_info + 1;
        z->done += n;
        if (ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED)
            z->copied += n;
    }
    return 1;
}

int mfd_zc_reap(MfdZeroCopy *z, FyChannel *c, FyError **errp)
{
    int r;
    while ((r = reap_one(z, c, errp)) > 0)
        ;
    return r;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait up to 100 ms for the error queue (poll reports it as POLLERR). */
static void wait_errqueue(int fd)
{
    struct pollfd p = { .fd = fd, .events = 0 };
    (void)poll(&p, 1, 100);
}

int mfd_zc_flush(MfdZeroCopy *z, FyChannel *c, const int *stop, FyError **errp)
{
    int64_t deadline = now_ms() + ZC_FLUSH_TIMEOUT_MS;
    for (;;) {
        if (mfd_zc_reap(z, c, errp) < 0)
            return -1;
        if (z->done >= z->sent)
            return 0;
        if (__atomic_load_n(stop, __ATOMIC_ACQUIRE)) {
            fy_error_setg(errp, "zero-copy-send: %s: stopped while waiting for "
                          "%" PRIu64 " sends to complete", c->name,
                          z->sent - z->done);
            return -1;
        }
        if (now_ms() > deadline) {
            fy_error_setg(errp, "zero-copy-send: %s: %" PRIu64 " sends not "
                          "completed after %d s", c->name, z->sent - z->done,
                          ZC_FLUSH_TIMEOUT_MS / 1000);
            return -1;
        }
        wait_errqueue(z->fd);
    }
}

/* One sendmsg, zero-copy if the kernel lets us. ENOBUFS means the limit
 * on pinned or option memory is reached: wait for completions to release
 * some, and when none are outstanding (the limit is below one send) send
 * this one the ordinary way. */
static ssize_t send_some(MfdZeroCopy *z, FyChannel *c, struct iovec *iov,
                         int iovcnt, FyError **errp)
{
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };
    bool zc = true;
    for (;;) {
        ssize_t n = sendmsg(z->fd, &msg, MSG_NOSIGNAL | (zc ? MSG_ZEROCOPY : 0));
        if (n >= 0) {
            if (zc && n > 0)
                z->sent++;
            return n;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (fy_channel_wait(c, true, -1, errp) < 0)
                return -1;
            continue;
        }
        if (errno == ENOBUFS && zc) {
            if (mfd_zc_reap(z, c, errp) < 0)
                return -1;
            if (z->done < z->sent)
                wait_errqueue(z->fd);
            else
                zc = false;
            continue;
        }
        fy_error_setg_errno(errp, errno, "%s: write", c->name);
        return -1;
    }
}

int mfd_zc_writev_all(MfdZeroCopy *z, FyChannel *c, struct iovec *iov,
                      int iovcnt, FyError **errp)
{
    while (iovcnt > 0) {
        if (iov->iov_len == 0) {
            iov++;
            iovcnt--;
            continue;
        }
        ssize_t n = send_some(z, c, iov, iovcnt, errp);
        if (n < 0)
            return -1;
        size_t left = (size_t)n;
        while (left && iovcnt) {
            size_t k = left < iov->iov_len ? left : iov->iov_len;
            iov->iov_base = (uint8_t *)iov->iov_base + k;
            iov->iov_len -= k;
            left -= k;
            if (iov->iov_len == 0) {
                iov++;
                iovcnt--;
            }
        }
    }
    return mfd_zc_reap(z, c, errp);
}
