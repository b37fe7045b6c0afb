/*
 * run-ramfile.c: `ferry run --ram-file PATH`: guest RAM filled from a file
 * before the VM first runs (a stand-in for a guest that booted and filled
 * its memory; scripts/bench uses random contents).
 *
 * The file is laid over the RAM blocks end to end in their order ("pc.ram"
 * first), the way the workloads number guest pages. A shorter file leaves
 * the rest zero; a longer one is refused. Holes in a sparse file are
 * skipped (SEEK_DATA), so they stay holes in the memfd and cost nothing;
 * the data is read(2) straight into the mapping: no bounce buffer.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#include "run-int.h"

/* Read [off, end) of the file into the guest at linear byte `off`. */
static int fill_range(FyRamList *l, int fd, const char *path, uint64_t off,
                      uint64_t end, FyError **errp)
{
    uint64_t base = 0;
    for (int i = 0; i < l->count && off < end; i++) {
        FyRamBlock *b = l->blocks[i];
        uint64_t bend = base + b->used_length;
        while (off < end && off < bend) {
            uint64_t stop = end < bend ? end : bend;
            size_t want = stop - off > (1u << 30) ? (1u << 30) : stop - off;
            ssize_t n = pread(fd, b->host + (off - base), want, (off_t)off);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                fy_error_setg_errno(errp, errno, "--ram-file %s: read at "
                                    "offset %" PRIu64, path, off);
                return -1;
            }
            if (n == 0) {
                fy_error_setg(errp, "--ram-file %s: the file shrank under us "
                              "(end of file at offset %" PRIu64 ")", path, off);
                return -1;
            }
            off += (uint64_t)n;
        }
        base = bend;
    }
    return 0;
}

int run_vm_fill_ram(RunVM *rv, const char *path, FyError **errp)
{
    FyRamList *l = fy_machine_ram_list(rv->machine);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fy_error_setg_errno(errp, errno, "--ram-file %s", path);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        fy_error_setg_errno(errp, errno, "--ram-file %s: stat", path);
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        fy_error_setg(errp, "--ram-file %s: not a regular file", path);
        close(fd);
        return -1;
    }
    uint64_t size = (uint64_t)st.st_size, ram = fy_ram_list_total(l);
    if (size > ram) {
        fy_error_setg(errp, "--ram-file %s: %" PRIu64 " bytes, more than the "
                      "guest's %" PRIu64 " bytes of RAM", path, size, ram);
        close(fd);
        return -1;
    }
    int ret = 0;
    for (uint64_t off = 0; off < size && ret == 0;) {
        off_t d = lseek(fd, (off_t)off, SEEK_DATA);
        if (d < 0) {
            if (errno == ENXIO)
                break;          /* the rest is a hole */
            d = (off_t)off;     /* no SEEK_DATA here: all data */
        }
        off_t h = lseek(fd, d, SEEK_HOLE);
        uint64_t end = h < 0 || (uint64_t)h > size ? size : (uint64_t)h;
        if ((uint64_t)d >= end)
            break;
        ret = fill_range(l, fd, path, (uint64_t)d, end, errp);
        off = end;
    }
    close(fd);
    return ret;
}
