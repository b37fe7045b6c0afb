/*
 * zero-map.c: which destination pages are certainly all zero before any
 * page arrives.
 *
 * Why: a ZERO record must leave the page zero, but reading a page to check
 * it faults it in, and for memfd (shmem) memory even a read fault allocates
 * a page. A fresh destination is mostly untouched, so knowing which pages
 * were never populated saves both the fault and the memory.
 *
 * How (conservative: any doubt means "maybe not zero", which only costs a
 * read):
 * - memfd backing: the file's data extents (SEEK_DATA/SEEK_HOLE, which
 *   count swapped-out shmem pages as data) may hold bytes; holes are zero.
 * - private mapping: a page that is present or swapped in /proc/self/pagemap
 *   may hold bytes; an unpopulated private anonymous page reads as zero.
 * - shared anonymous memory: no cheap answer, every page is checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "ram/bitmap.h"
#include "ram/ram-int.h"

#define PM_PRESENT (1ull << 63)
#define PM_SWAP    (1ull << 62)
#define PAGEMAP_BATCH 512

/* Clear the pages of [data, hole) (file offsets relative to the block). */
static void clear_extent(RamBlockMig *b, uint64_t data, uint64_t hole)
{
    uint64_t first = data >> FY_TARGET_PAGE_BITS;
    uint64_t last = (hole + FY_TARGET_PAGE_SIZE - 1) >> FY_TARGET_PAGE_BITS;
    if (last > b->pages)
        last = b->pages;
    if (first < last)
        fy_bitmap_clear_range(b->zero_map, first, last);
}

static bool clear_file_data(RamBlockMig *b)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", b->rb->fd);
    /* A file description of our own, so the owner's file offset stays. */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    off_t start = (off_t)b->rb->fd_offset;
    off_t end = start + (off_t)b->rb->used_length;
    bool ok = true;
    for (off_t pos = start; pos < end;) {
        off_t data = lseek(fd, pos, SEEK_DATA);
        if (data < 0) {
            ok = (errno == ENXIO); /* no data after pos */
            break;
        }
        if (data >= end)
            break;
        off_t hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0) {
            ok = false;
            break;
        }
        if (hole > end)
            hole = end;
        clear_extent(b, (uint64_t)(data - start), (uint64_t)(hole - start));
        pos = hole;
    }
    close(fd);
    return ok;
}

static bool clear_populated(RamBlockMig *b)
{
    if (sysconf(_SC_PAGESIZE) != FY_TARGET_PAGE_SIZE)
        return false;
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    uint64_t base = (uint64_t)(uintptr_t)b->rb->host >> FY_TARGET_PAGE_BITS;
    uint64_t ent[PAGEMAP_BATCH];
    bool ok = true;
    for (uint64_t p = 0; p < b->pages && ok;) {
        uint64_t n = b->pages - p < PAGEMAP_BATCH ? b->pages - p : PAGEMAP_BATCH;
        ssize_t r = pread(fd, ent, n * sizeof(ent[0]),
                          (off_t)((base + p) * sizeof(ent[0])));
        if (r != (ssize_t)(n * sizeof(ent[0]))) {
            ok = false;
            break;
        }
        for (uint64_t i = 0; i < n; i++) {
            if (ent[i] & (PM_PRESENT | PM_SWAP))
                fy_clear_bit(b->zero_map, p + i);
        }
        p += n;
    }
    close(fd);
    return ok;
}

void fy_ram_zero_map_init(RamBlockMig *b)
{
    const FyRamBlock *rb = b->rb;
    bool ok;

    fy_bitmap_fill(b->zero_map, b->pages);
    if (rb->shared)
        ok = rb->fd >= 0 && clear_file_data(b);
    else
        ok = (rb->fd < 0 || clear_file_data(b)) && clear_populated(b);
    if (!ok)
        fy_bitmap_zero(b->zero_map, b->pages);
}
