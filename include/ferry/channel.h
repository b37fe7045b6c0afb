/*
 * channel.h: byte channels that carry a migration stream (QIOChannel's role).
 *
 * A channel is a small vtable over one transport: fd, file (with a start
 * offset), unix socket, tcp (IPv4/IPv6), exec (a shell command's stdin or
 * stdout), and an in-memory buffer for tests. The stream layer (stream.h)
 * sits on top and never knows which one it has.
 *
 * Conventions:
 * - readv/writev return bytes moved (> 0), 0 for end of file (read only),
 *   FY_IO_AGAIN when a non-blocking channel would block, or -1 with *errp set.
 *   Every error message carries the channel's name and strerror.
 * - Unix-socket channels can carry file descriptors (SCM_RIGHTS) alongside
 *   bytes, for local handover of RAM; other channels refuse fds.
 * - A channel is used by one thread at a time, except shutdown(), which any
 *   thread may call to unblock a reader or writer (this is how cancel and
 *   yank work).
 */
#ifndef FERRY_CHANNEL_H
#define FERRY_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "ferry/error.h"

#define FY_IO_AGAIN (-2)

typedef struct FyChannel FyChannel;

enum {
    FY_CHANNEL_FEATURE_FD_PASS  = 1 << 0, /* SCM_RIGHTS */
    FY_CHANNEL_FEATURE_SHUTDOWN = 1 << 1,
    FY_CHANNEL_FEATURE_SEEKABLE = 1 << 2, /* file: pread/pwrite at offsets */
    FY_CHANNEL_FEATURE_ZEROCOPY = 1 << 3, /* MSG_ZEROCOPY capable socket */
    FY_CHANNEL_FEATURE_DUPLEX   = 1 << 4, /* one socket both ways: a dup of it
                                             is the return path */
};

typedef enum {
    FY_SHUTDOWN_READ  = 1,
    FY_SHUTDOWN_WRITE = 2,
    FY_SHUTDOWN_BOTH  = 3,
} FyShutdownHow;

typedef struct FyChannelOps {
    /* fds/nfds: optional; on input *nfds is the room in fds, on output the count. */
    ssize_t (*readv)(FyChannel *c, const struct iovec *iov, int iovcnt,
                     int *fds, size_t *nfds, FyError **errp);
    ssize_t (*writev)(FyChannel *c, const struct iovec *iov, int iovcnt,
                      const int *fds, size_t nfds, FyError **errp);
    int (*shutdown)(FyChannel *c, FyShutdownHow how, FyError **errp);
    int (*set_blocking)(FyChannel *c, bool blocking, FyError **errp);
    /* Release resources; for exec, also reap the child. */
    int (*close)(FyChannel *c, FyError **errp);
} FyChannelOps;

struct FyChannel {
    const FyChannelOps *ops;
    char *name;        /* for messages: "tcp:127.0.0.1:4444", "file:/tmp/x" ... */
    int rfd, wfd;      /* the fds to poll for reading / writing (-1 if none) */
    unsigned features; /* FY_CHANNEL_FEATURE_* */
    bool blocking;
    void *priv;
};

/* Generic entry points (dispatch through ops; loop on EINTR). */
ssize_t fy_channel_readv(FyChannel *c, const struct iovec *iov, int iovcnt,
                         FyError **errp);
ssize_t fy_channel_writev(FyChannel *c, const struct iovec *iov, int iovcnt,
                          FyError **errp);
ssize_t fy_channel_readv_fds(FyChannel *c, const struct iovec *iov, int iovcnt,
                             int *fds, size_t *nfds, FyError **errp);
ssize_t fy_channel_writev_fds(FyChannel *c, const struct iovec *iov, int iovcnt,
                              const int *fds, size_t nfds, FyError **errp);
/* Read/write exactly len bytes (blocking; waits with poll if non-blocking).
 * read_all returns 0 on success, 1 on clean EOF before the first byte, -1 on
 * error (a partial read before EOF is an error that says how much arrived). */
int fy_channel_read_all(FyChannel *c, void *buf, size_t len, FyError **errp);
int fy_channel_write_all(FyChannel *c, const void *buf, size_t len, FyError **errp);
int fy_channel_writev_all(FyChannel *c, struct iovec *iov, int iovcnt, FyError **errp);
/* Wait until a non-blocking channel can be read (or written). timeout_ms
 * < 0: forever. Returns 1 when ready, 0 on timeout, -1 with *errp set. */
int fy_channel_wait(FyChannel *c, bool for_write, int timeout_ms, FyError **errp);
int fy_channel_shutdown(FyChannel *c, FyShutdownHow how, FyError **errp);
int fy_channel_set_blocking(FyChannel *c, bool blocking, FyError **errp);
/* Close and free. Returns -1 with *errp set if closing reported an error
 * (e.g. an exec child that exited non-zero). NULL is a no-op. */
int fy_channel_close(FyChannel *c, FyError **errp);

/* Allocate a channel with the given ops/name (for implementations). */
FyChannel *fy_channel_alloc(const FyChannelOps *ops, const char *name_fmt, ...)
    FY_PRINTF(2, 3);

/* ---- Constructors ---- */

/* Wrap an fd that the caller hands over (closed on fy_channel_close). */
FyChannel *fy_channel_fd_new(int fd, const char *name, FyError **errp);

/* Open a file. For writing, O_CREAT|O_TRUNC unless offset > 0 (then the
 * bytes before offset are kept). Reads and writes start at offset. */
FyChannel *fy_channel_file_open(const char *path, bool for_write, uint64_t offset,
                                FyError **errp);

/* Run `/bin/sh -c cmd`. for_write: we write to its stdin; else read its stdout.
 * Closing waits for the child; a non-zero exit becomes a close error. */
FyChannel *fy_channel_exec_new(const char *cmd, bool for_write, FyError **errp);

/* In-memory channel: a growable byte buffer. Writes append; reads consume
 * from the read position. Optional initial contents are copied. */
FyChannel *fy_channel_mem_new(const void *data, size_t len);
/* Borrow the bytes written so far (valid until the next write/close). */
const uint8_t *fy_channel_mem_data(FyChannel *c, size_t *len);

/* Two connected in-memory-like channels backed by a socketpair(AF_UNIX):
 * useful for tests of return paths and fd passing. */
int fy_channel_socketpair(FyChannel **a, FyChannel **b, FyError **errp);

#endif
