/*
 * io-int.h: what the channel implementations in src/io/ share.
 *
 * fd, file, socket and exec channels are all "fd channels": the same
 * readv/writev over rfd/wfd, with a small FdChan in c->priv that says what
 * kind of descriptor it is (so writes to a pipe never raise SIGPIPE, and
 * exec can reap its child).
 */
#ifndef FERRY_IO_INT_H
#define FERRY_IO_INT_H

#include <stdbool.h>
#include <sys/types.h>

#include "ferry/channel.h"

#define FY_FD_PASS_MAX 16 /* descriptors in one SCM_RIGHTS message */

typedef struct FdChan {
    bool is_socket;  /* shutdown(2) and MSG_NOSIGNAL work */
    bool is_pipe;    /* writes need SIGPIPE held off */
    bool shut_read;  /* shutdown asked on a descriptor shutdown(2) can't do */
    bool shut_write;
    pid_t pid;       /* exec: the child, 0 otherwise */
    bool killed;     /* exec: we killed the child after a shutdown */
} FdChan;

extern const FyChannelOps fy_fd_ops;

/* A new fd channel on rfd/wfd (either may be -1), features probed from the
 * descriptor. Takes the descriptors only on success. */
FyChannel *fy_fd_channel_new(int rfd, int wfd, FyError **errp,
                             const char *name_fmt, ...) FY_PRINTF(4, 5);

/* fd:N: a channel on a duplicate of fd; the caller keeps fd. */
FyChannel *fy_channel_fd_dup(int fd, const char *name, FyError **errp);

/* The fd ops, for channels that override only some of them. */
ssize_t fy_fd_readv(FyChannel *c, const struct iovec *iov, int iovcnt,
                    int *fds, size_t *nfds, FyError **errp);
ssize_t fy_fd_writev(FyChannel *c, const struct iovec *iov, int iovcnt,
                     const int *fds, size_t nfds, FyError **errp);
int fy_fd_shutdown(FyChannel *c, FyShutdownHow how, FyError **errp);
int fy_fd_set_blocking(FyChannel *c, bool blocking, FyError **errp);
/* Closes the descriptors and frees the FdChan. */
int fy_fd_close(FyChannel *c, FyError **errp);

/* Socket helpers (channel-socket.c). */
void fy_socket_tune(int fd, int family);
/* "tcp:1.2.3.4:5" / "tcp:[::1]:5" / "unix:/path" for a bound socket. */
char *fy_socket_address(int fd);

#endif
