/*
 * dirty-uffd.c: dirty tracking by userfaultfd write-protect in asynchronous
 * mode, harvested with the PAGEMAP_SCAN ioctl. See dirty.h.
 *
 *   init   userfaultfd + UFFDIO_API(WP_ASYNC | WP_HUGETLBFS_SHMEM |
 *          WP_UNPOPULATED), register every block in WP mode, open
 *          /proc/self/pagemap and check PAGEMAP_SCAN works
 *   start  UFFDIO_WRITEPROTECT every block: present pages lose write
 *          access, absent ones get a write-protect marker, so the first
 *          write to any page after start is caught (and, in async mode,
 *          resolved by the kernel with no message to read)
 *   sync   PAGEMAP_SCAN with PM_SCAN_WP_MATCHING: report the pages whose
 *          category is PAGE_IS_WRITTEN and write-protect them again in the
 *          same walk, so a store racing with the scan is seen now or next
 *   stop   UFFDIO_WRITEPROTECT with mode 0: everything writable again
 *
 * The kernel headers here (6.1) predate WP_ASYNC and PAGEMAP_SCAN (6.7), so
 * the constants and structs are defined below when missing.
 *
 * Quirk (machine.md): a completed scan may return walk_end short of the
 * range end, and restarting from walk_end would report pages again. So a
 * scan is continued only when the output vector came back full.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "machine/dirty.h"

#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1u << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1u << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1u << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

#ifndef PAGEMAP_SCAN
#define PAGE_IS_WPALLOWED (1ull << 0)
#define PAGE_IS_WRITTEN   (1ull << 1)
#define PAGE_IS_FILE      (1ull << 2)
#define PAGE_IS_PRESENT   (1ull << 3)

struct page_region {
    uint64_t start;
    uint64_t end;
    uint64_t categories;
};

struct pm_scan_arg {
    uint64_t size;
    uint64_t flags;
    uint64_t start;
    uint64_t end;
    uint64_t walk_end;
    uint64_t vec;
    uint64_t vec_len;
    uint64_t max_pages;
    uint64_t category_inverted;
    uint64_t category_mask;
    uint64_t category_anyof_mask;
    uint64_t return_mask;
};

#define PM_SCAN_WP_MATCHING   (1ull << 0)
#define PM_SCAN_CHECK_WPASYNC (1ull << 1)
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

#define UFFD_FEATURES (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_HUGETLBFS_SHMEM | \
                       UFFD_FEATURE_WP_UNPOPULATED)
#define SCAN_VEC_LEN 4096

typedef struct UffdTracker {
    int uffd;
    int pagemap;
    bool registered[FY_MACHINE_MAX_RAM];
    pthread_mutex_t lock;           /* one scan at a time: vec is shared */
    struct page_region *vec;
} UffdTracker;

static int uffd_open(FyError **errp)
{
    /* User-mode-only works without privileges; async write-protect never
     * delivers messages, so nothing is lost by it. */
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0 && errno == EINVAL)
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        fy_error_setg_errno(errp, errno, "userfaultfd");
        return -1;
    }
    struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURES };
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        fy_error_setg_errno(errp, errno, "UFFDIO_API with async write-protect "
                            "(features 0x%x)", (unsigned)UFFD_FEATURES);
        close(fd);
        return -1;
    }
    return fd;
}

static int uffd_wp_range(UffdTracker *u, const FyRamBlock *b, bool protect,
                         FyError **errp)
{
    struct uffdio_writeprotect wp = {
        .range = { .start = (uintptr_t)b->host, .len = b->used_length },
        .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };
    while (ioctl(u->uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
        if (errno == EINTR || errno == EAGAIN)
            continue;
        fy_error_setg_errno(errp, errno, "block '%s': UFFDIO_WRITEPROTECT (%s)",
                            b->idstr, protect ? "protect" : "unprotect");
        return -1;
    }
    return 0;
}

/* Scan block b: set the written pages' bits in bitmap and protect them. */
static int uffd_scan(UffdTracker *u, const FyRamBlock *b, unsigned long *bitmap,
                     FyError **errp)
{
    uint64_t base = (uintptr_t)b->host, end = base + b->used_length;
    uint64_t start = base;
    while (start < end) {
        struct pm_scan_arg arg = {
            .size = sizeof(arg),
            .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
            .start = start,
            .end = end,
            .vec = (uintptr_t)u->vec,
            .vec_len = SCAN_VEC_LEN,
            .category_mask = PAGE_IS_WRITTEN,
            .return_mask = PAGE_IS_WRITTEN,
        };
        int n = ioctl(u->pagemap, PAGEMAP_SCAN, &arg);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            fy_error_setg_errno(errp, errno, "block '%s': PAGEMAP_SCAN at offset "
                                "0x%" PRIx64, b->idstr, start - base);
            return -1;
        }
        for (int i = 0; i < n; i++) {
            const struct page_region *r = &u->vec[i];
            if (r->start < base || r->end > end || r->end < r->start) {
                fy_error_setg(errp, "block '%s': PAGEMAP_SCAN returned a region "
                              "outside the block", b->idstr);
                return -1;
            }
            fy_bitmap_set_range(bitmap, (r->start - base) / FY_TARGET_PAGE_SIZE,
                                (r->end - r->start) / FY_TARGET_PAGE_SIZE);
        }
        /* Continue only from a full vector (see the quirk above). */
        if ((uint64_t)n < SCAN_VEC_LEN || arg.walk_end <= start ||
            arg.walk_end >= end)
            break;
        start = arg.walk_end;
    }
    return 0;
}

static int uffd_init(FyDirtyTracker *t, FyError **errp)
{
    UffdTracker *u = calloc(1, sizeof(*u));
    if (!u) {
        fy_error_setg(errp, "out of memory");
        return -1;
    }
    t->priv = u;
    u->uffd = u->pagemap = -1;
    pthread_mutex_init(&u->lock, NULL);
    u->vec = calloc(SCAN_VEC_LEN, sizeof(*u->vec));
    if (!u->vec) {
        fy_error_setg(errp, "out of memory");
        return -1;
    }
    u->uffd = uffd_open(errp);
    if (u->uffd < 0)
        return -1;
    for (int i = 0; i < t->nblocks; i++) {
        FyRamBlock *b = t->blocks[i];
        if (b->page_size != FY_TARGET_PAGE_SIZE) {
            fy_error_setg(errp, "block '%s': page size %" PRIu64 " (only 4 KiB "
                          "pages are tracked)", b->idstr, b->page_size);
            return -1;
        }
        struct uffdio_register reg = {
            .range = { .start = (uintptr_t)b->host, .len = b->used_length },
            .mode = UFFDIO_REGISTER_MODE_WP,
        };
        if (ioctl(u->uffd, UFFDIO_REGISTER, &reg) < 0) {
            fy_error_setg_errno(errp, errno, "block '%s': UFFDIO_REGISTER (WP)",
                                b->idstr);
            return -1;
        }
        u->registered[i] = true;
    }
    u->pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (u->pagemap < 0) {
        fy_error_setg_errno(errp, errno, "open /proc/self/pagemap");
        return -1;
    }
    /* A read-only look at one page proves the ioctl exists here. */
    if (t->nblocks > 0) {
        struct pm_scan_arg arg = {
            .size = sizeof(arg),
            .flags = PM_SCAN_CHECK_WPASYNC,
            .start = (uintptr_t)t->blocks[0]->host,
            .end = (uintptr_t)t->blocks[0]->host + FY_TARGET_PAGE_SIZE,
            .vec = (uintptr_t)u->vec,
            .vec_len = 1,
            .category_mask = PAGE_IS_WRITTEN,
            .return_mask = PAGE_IS_WRITTEN,
        };
        if (ioctl(u->pagemap, PAGEMAP_SCAN, &arg) < 0) {
            fy_error_setg_errno(errp, errno, "PAGEMAP_SCAN on /proc/self/pagemap");
            return -1;
        }
    }
    return 0;
}

static int uffd_start(FyDirtyTracker *t, FyError **errp)
{
    UffdTracker *u = t->priv;
    for (int i = 0; i < t->nblocks; i++) {
        if (uffd_wp_range(u, t->blocks[i], true, errp) < 0)
            return -1;
    }
    return 0;
}

static void uffd_stop(FyDirtyTracker *t)
{
    UffdTracker *u = t->priv;
    for (int i = 0; i < t->nblocks; i++)
        uffd_wp_range(u, t->blocks[i], false, NULL);
}

static int uffd_sync(FyDirtyTracker *t, int block, unsigned long *bitmap,
                     FyError **errp)
{
    UffdTracker *u = t->priv;
    pthread_mutex_lock(&u->lock);
    int ret = uffd_scan(u, t->blocks[block], bitmap, errp);
    pthread_mutex_unlock(&u->lock);
    return ret;
}

static void uffd_cleanup(FyDirtyTracker *t)
{
    UffdTracker *u = t->priv;
    if (!u)
        return;
    for (int i = 0; i < t->nblocks; i++) {
        if (!u->registered[i])
            continue;
        struct uffdio_range r = { .start = (uintptr_t)t->blocks[i]->host,
                                  .len = t->blocks[i]->used_length };
        ioctl(u->uffd, UFFDIO_UNREGISTER, &r);
    }
    if (u->uffd >= 0)
        close(u->uffd);
    if (u->pagemap >= 0)
        close(u->pagemap);
    free(u->vec);
    pthread_mutex_destroy(&u->lock);
    free(u);
    t->priv = NULL;
}

const FyDirtyOps fy_dirty_uffd_ops = {
    .name = "uffd-wp",
    .vcpu_marks = false,
    .init = uffd_init,
    .start = uffd_start,
    .stop = uffd_stop,
    .sync = uffd_sync,
    .cleanup = uffd_cleanup,
};

