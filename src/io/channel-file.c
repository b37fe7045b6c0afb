/*
 * channel-file.c: a file as a migration channel ("file:PATH[,offset=N]").
 *
 * The stream starts N bytes into the file, so a manager can keep its own
 * header in front. Writing with N > 0 keeps those first N bytes (no
 * O_TRUNC) and cuts whatever an earlier, longer stream left after them;
 * reading with N beyond the end of the file is an error at open, not a
 * silent empty stream.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io-int.h"

static int position(int fd, const char *path, bool for_write, uint64_t offset,
                    FyError **errp)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        fy_error_setg_errno(errp, errno, "file:%s: stat", path);
        return -1;
    }
    if (offset > (uint64_t)INT64_MAX) {
        fy_error_setg(errp, "file:%s: offset %" PRIu64 " is too large", path,
                      offset);
        return -1;
    }
    if (!for_write && S_ISREG(st.st_mode) && offset > (uint64_t)st.st_size) {
        fy_error_setg(errp, "file:%s: offset %" PRIu64 " is past the end of "
                      "the file (%lld bytes)", path, offset,
                      (long long)st.st_size);
        return -1;
    }
    if (for_write && S_ISREG(st.st_mode) && (uint64_t)st.st_size > offset &&
        ftruncate(fd, (off_t)offset) < 0) {
        fy_error_setg_errno(errp, errno, "file:%s: truncate to offset %" PRIu64,
                            path, offset);
        return -1;
    }
    if (offset && lseek(fd, (off_t)offset, SEEK_SET) < 0) {
        fy_error_setg_errno(errp, errno, "file:%s: seek to offset %" PRIu64,
                            path, offset);
        return -1;
    }
    return 0;
}

FyChannel *fy_channel_file_open(const char *path, bool for_write, uint64_t offset,
                                FyError **errp)
{
    int flags = for_write ? O_WRONLY | O_CREAT : O_RDONLY;
    if (for_write && offset == 0)
        flags |= O_TRUNC;
    int fd = open(path, flags | O_CLOEXEC, 0600);
    if (fd < 0) {
        fy_error_setg_errno(errp, errno, "file:%s: open for %s", path,
                            for_write ? "writing" : "reading");
        return NULL;
    }
    if (position(fd, path, for_write, offset, errp) < 0) {
        close(fd);
        return NULL;
    }
    FyChannel *c = fy_fd_channel_new(for_write ? -1 : fd, for_write ? fd : -1,
                                     errp, "file:%s", path);
    if (!c)
        close(fd);
    return c;
}
