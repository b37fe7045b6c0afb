/*
 * ramblock.h: guest RAM as the migration code sees it, and the VM hooks.
 *
 * A RAM block is a named, page-aligned region of host memory (`pc.ram`),
 * usually backed by a memfd so it can be handed over to a local destination
 * by fd. The migration code never touches the VM's internals: it reaches the
 * VM only through FyVMOps (stop, start, dirty tracking, throttling), so any
 * program that owns RAM and devices can embed the engine.
 */
#ifndef FERRY_RAMBLOCK_H
#define FERRY_RAMBLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"

#define FY_TARGET_PAGE_BITS 12
#define FY_TARGET_PAGE_SIZE (1u << FY_TARGET_PAGE_BITS)
#define FY_RAMBLOCK_MAX 64

typedef struct FyRamBlock {
    char idstr[256];
    uint8_t *host;          /* mapping of used_length bytes */
    uint64_t used_length;   /* bytes; a multiple of the page size */
    uint64_t page_size;     /* host page size of the backing (4 KiB or 2 MiB) */
    int fd;                 /* memfd backing, or -1 */
    uint64_t fd_offset;
    uint64_t mr_addr;       /* guest-physical address (sent with x-ignore-shared) */
    bool shared;            /* MAP_SHARED backing (x-ignore-shared skips it) */
} FyRamBlock;

typedef struct FyRamList {
    int count;
    FyRamBlock *blocks[FY_RAMBLOCK_MAX];
} FyRamList;

FyRamBlock *fy_ram_list_find(const FyRamList *l, const char *idstr);
uint64_t fy_ram_list_total(const FyRamList *l);

/* Bitmaps are arrays of unsigned long, one bit per target page, bit set =
 * dirty; bit i of word w is page w * BITS_PER_LONG + i. */
#define FY_BITS_PER_LONG (8 * sizeof(unsigned long))
#define FY_BITMAP_LONGS(nbits) (((nbits) + FY_BITS_PER_LONG - 1) / FY_BITS_PER_LONG)

/* How migration drives the VM. Every function is optional except stop/start. */
typedef struct FyVMOps {
    /* Stop vCPUs (and device activity); returns once they are stopped. */
    int (*stop)(void *opaque, FyError **errp);
    int (*start)(void *opaque, FyError **errp);
    bool (*is_running)(void *opaque);
    /* Dirty tracking: start marks every page dirty from now on as written;
     * sync ORs the pages written since the previous sync into `bitmap` for
     * that block and clears the VM's own record. */
    int (*dirty_log_start)(void *opaque, FyError **errp);
    void (*dirty_log_stop)(void *opaque);
    int (*dirty_log_sync)(void *opaque, FyRamBlock *block, unsigned long *bitmap,
                          FyError **errp);
    /* Throttle vCPUs to (100 - percent)% of their time; 0 = off. */
    void (*set_throttle)(void *opaque, int percent);
    /* Per-vCPU dirty limit in MB/s (0 = none); vcpu < 0 = all. */
    void (*set_dirty_limit)(void *opaque, int vcpu, uint64_t mbps);
    int (*vcpu_count)(void *opaque);
} FyVMOps;

#endif
