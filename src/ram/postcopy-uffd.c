/*
 * postcopy-uffd.c: the userfaultfd calls postcopy makes, each a thin
 * wrapper that turns errno into a message or a simple result.
 *
 * UFFDIO_API may be called once per fd, so the features the kernel offers
 * are probed on a throwaway fd first (as QEMU does), and the real fd asks
 * for exactly what the RAM blocks need.
 *
 * Placement never overwrites: UFFDIO_COPY / UFFDIO_ZEROPAGE fail with
 * EEXIST when the page is there already. The kernel wakes the waiters of a
 * range only when it filled it, so on EEXIST the range is woken by hand:
 * a thread may have faulted before the page appeared some other way.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ram/postcopy-int.h"

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

int fy_uffd_open(FyError **errp)
{
    int fd = (int)syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0)
        return fd;
    int err = errno;
    /* Unprivileged processes may be refused the syscall but allowed the
     * device (its permissions decide). */
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev >= 0) {
        fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        int err2 = errno;
        close(dev);
        if (fd >= 0)
            return fd;
        err = err2;
    }
    fy_error_setg_errno(errp, err, "postcopy-ram: cannot open a userfaultfd "
                        "(needs root, vm.unprivileged_userfaultfd=1 or access "
                        "to /dev/userfaultfd)");
    return -1;
}

int fy_uffd_api(int fd, uint64_t features, uint64_t *supported, FyError **errp)
{
    struct uffdio_api api = { .api = UFFD_API, .features = features };
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        fy_error_setg_errno(errp, errno, "postcopy-ram: UFFDIO_API with "
                            "features 0x%llx", (unsigned long long)features);
        return -1;
    }
    if (supported)
        *supported = api.features;
    return 0;
}

int fy_uffd_probe(uint64_t *supported, FyError **errp)
{
    int fd = fy_uffd_open(errp);
    if (fd < 0)
        return -1;
    int r = fy_uffd_api(fd, 0, supported, errp);
    close(fd);
    return r;
}

void fy_uffd_feature_names(uint64_t mask, char *buf, size_t size)
{
    static const struct { uint64_t bit; const char *name; } names[] = {
        { UFFD_FEATURE_MISSING_HUGETLBFS, "MISSING_HUGETLBFS" },
        { UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM" },
        { UFFD_FEATURE_THREAD_ID, "THREAD_ID" },
    };
    size_t at = 0;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (!(mask & names[i].bit) || at >= size)
            continue;
        int n = snprintf(buf + at, size - at, "%s%s", at ? ", " : "",
                         names[i].name);
        at += n > 0 ? (size_t)n : 0;
        mask &= ~names[i].bit;
    }
    if (mask && at < size)
        snprintf(buf + at, size - at, "%s0x%llx", at ? ", " : "",
                 (unsigned long long)mask);
}

int fy_uffd_register_missing(int fd, void *addr, uint64_t len, uint64_t *ioctls,
                             FyError **errp)
{
    struct uffdio_register reg = {
        .range = { .start = (uintptr_t)addr, .len = len },
        .mode = UFFDIO_REGISTER_MODE_MISSING,
    };
    if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0) {
        fy_error_setg_errno(errp, errno, "UFFDIO_REGISTER (missing) of %llu "
                            "bytes", (unsigned long long)len);
        return -1;
    }
    *ioctls = reg.ioctls;
    return 0;
}

int fy_uffd_unregister(int fd, void *addr, uint64_t len, FyError **errp)
{
    struct uffdio_range r = { .start = (uintptr_t)addr, .len = len };
    if (ioctl(fd, UFFDIO_UNREGISTER, &r) < 0) {
        fy_error_setg_errno(errp, errno, "UFFDIO_UNREGISTER of %llu bytes",
                            (unsigned long long)len);
        return -1;
    }
    return 0;
}

int fy_uffd_wake(int fd, void *addr, uint64_t len)
{
    struct uffdio_range r = { .start = (uintptr_t)addr, .len = len };
    return ioctl(fd, UFFDIO_WAKE, &r) < 0 ? -1 : 0;
}

int fy_uffd_copy(int fd, void *dst, const void *src, uint64_t len)
{
    uint64_t done = 0;
    while (done < len) {
        struct uffdio_copy c = {
            .dst = (uintptr_t)dst + done, .src = (uintptr_t)src + done,
            .len = len - done, .mode = 0,
        };
        if (ioctl(fd, UFFDIO_COPY, &c) == 0)
            return 0;
        if (errno == EEXIST) {
            /* Nothing was woken by the failed copy: wake by hand. */
            fy_uffd_wake(fd, dst, len);
            return 1;
        }
        /* EAGAIN: the address space changed under the copy; c.copy says
         * how far it got. */
        if (errno != EAGAIN)
            return -1;
        if (c.copy > 0)
            done += (uint64_t)c.copy;
    }
    return 0;
}

int fy_uffd_zeropage(int fd, void *dst, uint64_t len)
{
    for (;;) {
        struct uffdio_zeropage z = {
            .range = { .start = (uintptr_t)dst, .len = len }, .mode = 0,
        };
        if (ioctl(fd, UFFDIO_ZEROPAGE, &z) == 0)
            return 0;
        if (errno == EEXIST) {
            fy_uffd_wake(fd, dst, len);
            return 1;
        }
        if (errno != EAGAIN)
            return -1;
        if (z.zeropage > 0) {
            dst = (uint8_t *)dst + z.zeropage;
            len -= (uint64_t)z.zeropage;
            if (!len)
                return 0;
        }
    }
}
