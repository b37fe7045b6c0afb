/*
 * pc-test.h: what the postcopy tests share: memfd-backed "guest RAM"
 * blocks as the reference VM makes them (MAP_SHARED shmem), and a
 * deterministic page pattern standing for the source's RAM.
 */
#ifndef PC_TEST_H
#define PC_TEST_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ferry/postcopy.h"
#include "ferry/ramblock.h"

static inline int pc_block_init(FyRamBlock *rb, const char *name, uint64_t size)
{
    memset(rb, 0, sizeof(*rb));
    snprintf(rb->idstr, sizeof(rb->idstr), "%s", name);
    rb->fd = memfd_create(name, MFD_CLOEXEC);
    if (rb->fd < 0 || ftruncate(rb->fd, (off_t)size) < 0)
        return -1;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, rb->fd, 0);
    if (p == MAP_FAILED)
        return -1;
    rb->host = p;
    rb->used_length = size;
    rb->page_size = FY_TARGET_PAGE_SIZE;
    rb->shared = false;   /* the VM's private RAM, even if memfd-backed */
    return 0;
}

static inline void pc_block_fini(FyRamBlock *rb)
{
    if (rb->host)
        munmap(rb->host, rb->used_length);
    if (rb->fd >= 0)
        close(rb->fd);
    rb->host = NULL;
    rb->fd = -1;
}

/* The source's content of page `page` of block number `blk`: every 8 bytes
 * say where they are, so a misplaced page is caught. Pages with
 * page % 7 == 3 are all zero (sent as ZERO records). */
static inline bool pc_page_is_zero(int blk, uint64_t page)
{
    (void)blk;
    return page % 7 == 3;
}

static inline void pc_fill_page(uint8_t *dst, int blk, uint64_t page)
{
    if (pc_page_is_zero(blk, page)) {
        memset(dst, 0, FY_TARGET_PAGE_SIZE);
        return;
    }
    uint64_t *w = (uint64_t *)dst;
    for (size_t i = 0; i < FY_TARGET_PAGE_SIZE / 8; i++)
        w[i] = ((uint64_t)(blk + 1) << 56) ^ (page << 16) ^ i ^ 0x5a5a5a5a00000000ull;
}

static inline pid_t pc_gettid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

static inline uint64_t pc_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void pc_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

#endif
