/*
 * channel-file.c: a regular file as a channel, starting at an offset so a
 * manager can keep its own header in front of the stream (file:PATH,offset=N).
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "ferry/channel.h"

extern const FyChannelOps fy_channel_fd_ops;
void fy_channel_fd_probe(FyChannel *c);

FyChannel *fy_channel_file_open(const char *path, bool for_write, uint64_t offset,
                                FyError **errp)
{
    /* Keep what precedes the offset: truncating would destroy it. */
    int flags = for_write ? O_WRONLY | O_CREAT | (offset ? 0 : O_TRUNC) : O_RDONLY;
    int fd = open(path, flags | O_CLOEXEC, 0600);
    if (fd < 0) {
        fy_error_setg_errno(errp, errno, "file:%s: open", path);
        return NULL;
    }
    if (for_write && offset && ftruncate(fd, (off_t)offset) < 0) {
        fy_error_setg_errno(errp, errno, "file:%s: truncate to offset %llu", path,
                            (unsigned long long)offset);
        close(fd);
        return NULL;
    }
    if (offset && lseek(fd, (off_t)offset, SEEK_SET) < 0) {
        fy_error_setg_errno(errp, errno, "file:%s: seek to offset %llu", path,
                            (unsigned long long)offset);
        close(fd);
        return NULL;
    }
    FyChannel *c = fy_channel_alloc(&fy_channel_fd_ops, "file:%s", path);
    if (!c) {
        fy_error_setg(errp, "file:%s: out of memory", path);
        close(fd);
        return NULL;
    }
    c->rfd = c->wfd = fd;
    c->features |= FY_CHANNEL_FEATURE_SEEKABLE;
    return c;
}
