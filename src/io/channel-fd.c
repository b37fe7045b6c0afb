/*
 * channel-fd.c: a channel over one file descriptor: pipes, sockets, files.
 * Sockets gain shutdown(2) and, for AF_UNIX, descriptor passing.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ferry/channel.h"

#define FD_PASS_MAX 16

static ssize_t fd_readv(FyChannel *c, const struct iovec *iov, int iovcnt,
                        int *fds, size_t *nfds, FyError **errp)
{
    for (;;) {
        ssize_t n;
        if (fds && nfds && *nfds) {
            char cbuf[CMSG_SPACE(sizeof(int) * FD_PASS_MAX)];
            struct msghdr msg = { .msg_iov = (struct iovec *)iov,
                                  .msg_iovlen = (size_t)iovcnt,
                                  .msg_control = cbuf,
                                  .msg_controllen = sizeof(cbuf) };
            size_t room = *nfds;
            *nfds = 0;
            n = recvmsg(c->rfd, &msg, MSG_CMSG_CLOEXEC);
            if (n >= 0) {
                for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm;
                     cm = CMSG_NXTHDR(&msg, cm)) {
                    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                        continue;
                    size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                    int *in = (int *)CMSG_DATA(cm);
                    for (size_t i = 0; i < k; i++) {
                        if (*nfds < room)
                            fds[(*nfds)++] = in[i];
                        else
                            close(in[i]); /* more than asked for: refuse */
                    }
                }
            }
        } else {
            n = readv(c->rfd, iov, iovcnt);
        }
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return FY_IO_AGAIN;
        fy_error_setg_errno(errp, errno, "%s: read", c->name);
        return -1;
    }
}

static ssize_t fd_writev(FyChannel *c, const struct iovec *iov, int iovcnt,
                         const int *fds, size_t nfds, FyError **errp)
{
    if (nfds > FD_PASS_MAX) {
        fy_error_setg(errp, "%s: %zu descriptors in one message (at most %d)",
                      c->name, nfds, FD_PASS_MAX);
        return -1;
    }
    for (;;) {
        ssize_t n;
        if (nfds || (c->features & FY_CHANNEL_FEATURE_SHUTDOWN)) {
            char cbuf[CMSG_SPACE(sizeof(int) * FD_PASS_MAX)];
            struct msghdr msg = { .msg_iov = (struct iovec *)iov,
                                  .msg_iovlen = (size_t)iovcnt };
            if (nfds) {
                memset(cbuf, 0, sizeof(cbuf));
                msg.msg_control = cbuf;
                msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
                struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
                cm->cmsg_level = SOL_SOCKET;
                cm->cmsg_type = SCM_RIGHTS;
                cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
                memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
            }
            /* MSG_NOSIGNAL: a dead peer is an error to report, not SIGPIPE. */
            n = sendmsg(c->wfd, &msg, MSG_NOSIGNAL);
        } else {
            n = writev(c->wfd, iov, iovcnt);
        }
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return FY_IO_AGAIN;
        fy_error_setg_errno(errp, errno, "%s: write", c->name);
        return -1;
    }
}

static int fd_shutdown(FyChannel *c, FyShutdownHow how, FyError **errp)
{
    int h = how == FY_SHUTDOWN_READ ? SHUT_RD
          : how == FY_SHUTDOWN_WRITE ? SHUT_WR : SHUT_RDWR;
    if (shutdown(c->rfd, h) < 0 && errno != ENOTCONN) {
        fy_error_setg_errno(errp, errno, "%s: shutdown", c->name);
        return -1;
    }
    return 0;
}

static int fd_set_blocking(FyChannel *c, bool blocking, FyError **errp)
{
    int fds[2] = { c->rfd, c->wfd };
    for (int i = 0; i < 2; i++) {
        if (fds[i] < 0 || (i == 1 && fds[1] == fds[0]))
            continue;
        int fl = fcntl(fds[i], F_GETFL);
        if (fl < 0 || fcntl(fds[i], F_SETFL,
                            blocking ? fl & ~O_NONBLOCK : fl | O_NONBLOCK) < 0) {
            fy_error_setg_errno(errp, errno, "%s: set %sblocking", c->name,
                                blocking ? "" : "non-");
            return -1;
        }
    }
    return 0;
}

static int fd_close(FyChannel *c, FyError **errp)
{
    int r = 0;
    if (c->rfd >= 0 && close(c->rfd) < 0) {
        fy_error_setg_errno(errp, errno, "%s: close", c->name);
        r = -1;
    }
    if (c->wfd >= 0 && c->wfd != c->rfd)
        close(c->wfd);
    return r;
}

const FyChannelOps fy_channel_fd_ops = {
    .readv = fd_readv,
    .writev = fd_writev,
    .shutdown = fd_shutdown,
    .set_blocking = fd_set_blocking,
    .close = fd_close,
};

/* Sockets get shutdown; unix sockets also get descriptor passing. */
void fy_channel_fd_probe(FyChannel *c);
void fy_channel_fd_probe(FyChannel *c)
{
    struct stat st;
    if (fstat(c->rfd, &st) == 0 && S_ISSOCK(st.st_mode)) {
        c->features |= FY_CHANNEL_FEATURE_SHUTDOWN;
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getsockname(c->rfd, (struct sockaddr *)&ss, &len) == 0 &&
            ss.ss_family == AF_UNIX)
            c->features |= FY_CHANNEL_FEATURE_FD_PASS;
    } else if (fstat(c->rfd, &st) == 0 && S_ISREG(st.st_mode)) {
        c->features |= FY_CHANNEL_FEATURE_SEEKABLE;
    }
}

FyChannel *fy_channel_fd_new(int fd, const char *name, FyError **errp)
{
    if (fd < 0) {
        fy_error_setg(errp, "%s: invalid file descriptor %d", name, fd);
        return NULL;
    }
    if (fcntl(fd, F_GETFD) < 0) {
        fy_error_setg_errno(errp, errno, "%s: file descriptor %d", name, fd);
        return NULL;
    }
    FyChannel *c = fy_channel_alloc(&fy_channel_fd_ops, "%s", name);
    if (!c) {
        fy_error_setg(errp, "%s: out of memory", name);
        return NULL;
    }
    c->rfd = c->wfd = fd;
    fy_channel_fd_probe(c);
    return c;
}

int fy_channel_socketpair(FyChannel **a, FyChannel **b, FyError **errp)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        fy_error_setg_errno(errp, errno, "socketpair");
        return -1;
    }
    *a = fy_channel_fd_new(sv[0], "socketpair:0", errp);
    *b = *a ? fy_channel_fd_new(sv[1], "socketpair:1", errp) : NULL;
    if (!*a || !*b) {
        if (*a)
            fy_channel_close(*a, NULL);
        else
            close(sv[0]);
        close(sv[1]);
        *a = *b = NULL;
        return -1;
    }
    return 0;
}
