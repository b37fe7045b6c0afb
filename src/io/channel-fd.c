/*
 * channel-fd.c: a channel over file descriptors: pipes, sockets, files.
 *
 * The same ops serve every fd-backed transport (fd:, file:, unix:, tcp:,
 * exec:); constructors elsewhere only open the descriptor. What differs is
 * probed once from the descriptor and kept in FdChan:
 *   socket  shutdown(2) wakes a blocked reader/writer in another thread;
 *           sends use MSG_NOSIGNAL; AF_UNIX sockets also pass descriptors
 *           (SCM_RIGHTS) and any socket has a return path (a dup of it).
 *   pipe    writes hold SIGPIPE off, so a dead reader is an EPIPE error to
 *           report, not a signal that kills the process.
 *   other   shutdown is only remembered: later reads see EOF, writes EPIPE.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/io-int.h"

static ssize_t recv_with_fds(FyChannel *c, const struct iovec *iov, int iovcnt,
                             int *fds, size_t *nfds, FyError **errp)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * FY_FD_PASS_MAX)];
        struct cmsghdr align;
    } cbuf;
    struct msghdr msg = { .msg_iov = (struct iovec *)iov,
                          .msg_iovlen = (size_t)iovcnt,
                          .msg_control = cbuf.buf,
                          .msg_controllen = sizeof(cbuf.buf) };
    size_t room = *nfds;
    *nfds = 0;
    ssize_t n = recvmsg(c->rfd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0)
        return -1;
    bool dropped = false;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int in[FY_FD_PASS_MAX];
        if (k > FY_FD_PASS_MAX)
            k = FY_FD_PASS_MAX;
        memcpy(in, CMSG_DATA(cm), k * sizeof(int));
        for (size_t i = 0; i < k; i++) {
            if (*nfds < room) {
                fds[(*nfds)++] = in[i];
            } else {
                close(in[i]); /* more than the caller has room for */
                dropped = true;
            }
        }
    }
    if (dropped || (msg.msg_flags & MSG_CTRUNC)) {
        for (size_t i = 0; i < *nfds; i++)
            close(fds[i]);
        *nfds = 0;
        fy_error_setg(errp, "%s: read: peer sent more file descriptors than "
                      "expected (room for %zu)", c->name, room);
        errno = 0;
        return -2;
    }
    return n;
}

ssize_t fy_fd_readv(FyChannel *c, const struct iovec *iov, int iovcnt,
                    int *fds, size_t *nfds, FyError **errp)
{
    FdChan *fc = c->priv;
    size_t room = nfds ? *nfds : 0;
    if (nfds)
        *nfds = 0;
    if (c->rfd < 0) {
        fy_error_setg(errp, "%s: read: channel is write-only", c->name);
        return -1;
    }
    if (fc->shut_read)
        return 0;
    for (;;) {
        ssize_t n;
        if (fds && room) {
            *nfds = room;
            n = recv_with_fds(c, iov, iovcnt, fds, nfds, errp);
            if (n == -2)
                return -1;
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

/* writev to a pipe without SIGPIPE: hold the signal off in this thread and
 * swallow the one our write raised (never one that was already pending). */
static ssize_t pipe_writev(int fd, const struct iovec *iov, int iovcnt)
{
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE);
    ssize_t n = writev(fd, iov, iovcnt);
    int e = errno;
    if (n < 0 && e == EPIPE && !was_pending) {
        const struct timespec zero = { 0, 0 };
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = e;
    return n;
}

static ssize_t send_with_fds(FyChannel *c, const struct iovec *iov, int iovcnt,
                             const int *fds, size_t nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * FY_FD_PASS_MAX)];
        struct cmsghdr align;
    } cbuf;
    struct msghdr msg = { .msg_iov = (struct iovec *)iov,
                          .msg_iovlen = (size_t)iovcnt };
    if (nfds) {
        memset(cbuf.buf, 0, sizeof(cbuf.buf));
        msg.msg_control = cbuf.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    /* MSG_NOSIGNAL: a dead peer is an error to report, not SIGPIPE. */
    return sendmsg(c->wfd, &msg, MSG_NOSIGNAL);
}

ssize_t fy_fd_writev(FyChannel *c, const struct iovec *iov, int iovcnt,
                     const int *fds, size_t nfds, FyError **errp)
{
    FdChan *fc = c->priv;
    if (c->wfd < 0) {
        fy_error_setg(errp, "%s: write: channel is read-only", c->name);
        return -1;
    }
    if (nfds > FY_FD_PASS_MAX) {
        fy_error_setg(errp, "%s: write: %zu file descriptors in one message "
                      "(at most %d)", c->name, nfds, FY_FD_PASS_MAX);
        return -1;
    }
    if (fc->shut_write) {
        fy_error_setg_errno(errp, EPIPE, "%s: write", c->name);
        return -1;
    }
    for (;;) {
        ssize_t n;
        if (fc->is_socket)
            n = send_with_fds(c, iov, iovcnt, fds, nfds);
        else if (fc->is_pipe)
            n = pipe_writev(c->wfd, iov, iovcnt);
        else
            n = writev(c->wfd, iov, iovcnt);
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

int fy_fd_shutdown(FyChannel *c, FyShutdownHow how, FyError **errp)
{
    FdChan *fc = c->priv;
    if (how & FY_SHUTDOWN_READ)
        fc->shut_read = true;
    if (how & FY_SHUTDOWN_WRITE)
        fc->shut_write = true;
    if (!fc->is_socket)
        return 0;
    int h = how == FY_SHUTDOWN_READ ? SHUT_RD
          : how == FY_SHUTDOWN_WRITE ? SHUT_WR : SHUT_RDWR;
    int fd = c->rfd >= 0 ? c->rfd : c->wfd;
    if (shutdown(fd, h) < 0 && errno != ENOTCONN) {
        fy_error_setg_errno(errp, errno, "%s: shutdown", c->name);
        return -1;
    }
    return 0;
}

static int set_nonblock(int fd, bool nonblock)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    int want = nonblock ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
    return want == fl ? 0 : fcntl(fd, F_SETFL, want);
}

int fy_fd_set_blocking(FyChannel *c, bool blocking, FyError **errp)
{
    int fds[2] = { c->rfd, c->wfd };
    for (int i = 0; i < 2; i++) {
        if (fds[i] < 0 || (i == 1 && fds[1] == fds[0]))
            continue;
        if (set_nonblock(fds[i], !blocking) < 0) {
            fy_error_setg_errno(errp, errno, "%s: set %sblocking", c->name,
                                blocking ? "" : "non-");
            return -1;
        }
    }
    return 0;
}

int fy_fd_close(FyChannel *c, FyError **errp)
{
    int r = 0;
    /* close(2) errors matter for files: a deferred write error shows here. */
    if (c->wfd >= 0 && c->wfd != c->rfd && close(c->wfd) < 0 && errno != EINTR) {
        fy_error_setg_errno(errp, errno, "%s: close", c->name);
        r = -1;
    }
    if (c->rfd >= 0 && close(c->rfd) < 0 && errno != EINTR) {
        fy_error_setg_errno(errp, errno, "%s: close", c->name);
        r = -1;
    }
    c->rfd = c->wfd = -1;
    free(c->priv);
    c->priv = NULL;
    return r;
}

const FyChannelOps fy_fd_ops = {
    .readv = fy_fd_readv,
    .writev = fy_fd_writev,
    .shutdown = fy_fd_shutdown,
    .set_blocking = fy_fd_set_blocking,
    .close = fy_fd_close,
};

static void probe(FyChannel *c, FdChan *fc)
{
    struct stat st;
    int fd = c->rfd >= 0 ? c->rfd : c->wfd;
    if (fstat(fd, &st) < 0)
        return;
    if (S_ISSOCK(st.st_mode)) {
        fc->is_socket = true;
        c->features |= FY_CHANNEL_FEATURE_SHUTDOWN | FY_CHANNEL_FEATURE_DUPLEX;
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
            ss.ss_family == AF_UNIX)
            c->features |= FY_CHANNEL_FEATURE_FD_PASS;
    } else if (S_ISFIFO(st.st_mode)) {
        fc->is_pipe = true;
    } else if (S_ISREG(st.st_mode)) {
        c->features |= FY_CHANNEL_FEATURE_SEEKABLE;
    }
    if (fcntl(fd, F_GETFL) & O_NONBLOCK)
        c->blocking = false;
}

FyChannel *fy_fd_channel_new(int rfd, int wfd, FyError **errp,
                             const char *name_fmt, ...)
{
    char *name = NULL;
    va_list ap;
    va_start(ap, name_fmt);
    if (vasprintf(&name, name_fmt, ap) < 0)
        name = NULL;
    va_end(ap);
    FyChannel *c = name ? fy_channel_alloc(&fy_fd_ops, "%s", name) : NULL;
    FdChan *fc = c ? calloc(1, sizeof(*fc)) : NULL;
    if (!fc) {
        fy_error_setg(errp, "%s: out of memory", name ? name : "channel");
        if (c)
            fy_channel_close(c, NULL);
        free(name);
        return NULL;
    }
    free(name);
    c->priv = fc;
    c->rfd = rfd;
    c->wfd = wfd;
    probe(c, fc);
    return c;
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
    return fy_fd_channel_new(fd, fd, errp, "%s", name);
}

FyChannel *fy_channel_fd_dup(int fd, const char *name, FyError **errp)
{
    int dfd = fd < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dfd < 0) {
        fy_error_setg_errno(errp, fd < 0 ? EBADF : errno,
                            "%s: file descriptor %d", name, fd);
        return NULL;
    }
    FyChannel *c = fy_fd_channel_new(dfd, dfd, errp, "%s", name);
    if (!c)
        close(dfd);
    return c;
}

int fy_channel_socketpair(FyChannel **a, FyChannel **b, FyError **errp)
{
    int sv[2];
    *a = *b = NULL;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        fy_error_setg_errno(errp, errno, "socketpair");
        return -1;
    }
    *a = fy_channel_fd_new(sv[0], "socketpair:0", errp);
    *b = *a ? fy_channel_fd_new(sv[1], "socketpair:1", errp) : NULL;
    if (!*b) {
        if (*a)
            fy_channel_close(*a, NULL);
        else
            close(sv[0]);
        close(sv[1]);
        *a = NULL;
        return -1;
    }
    return 0;
}
