/*
 * workload.h: the guest programs. One step is one 64-bit store (idle: no
 * store) into the vCPU's own slice of the working set.
 *
 *   sweep    page = slice_start + pos; pos = (pos + 1) % slice_pages;
 *            the u64 at word (page % 512) of that page += 1
 *   random   r = rng(); page = slice_start + r * slice_pages >> 64;
 *            word (r & 511) = r ^ steps
 *   hotspot  r = rng(); 90% (r & 0xffff < 58982): page in the hot set,
 *            else in the whole slice; word (r >> 16 & 511) = r ^ steps
 *   idle     nothing
 *
 * Guest pages are numbered linearly over the RAM blocks laid end to end.
 */
#ifndef FERRY_MACHINE_WORKLOAD_H
#define FERRY_MACHINE_WORKLOAD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "machine/cpu.h"

/* Linear guest page -> block. */
typedef struct FyGuestMap {
    int nblocks;
    uint8_t *host[FY_MACHINE_MAX_RAM];
    uint64_t first[FY_MACHINE_MAX_RAM];  /* first linear page of the block */
    uint64_t end[FY_MACHINE_MAX_RAM];    /* one past its last */
    atomic_ulong *soft[FY_MACHINE_MAX_RAM];
} FyGuestMap;

/* Run n steps. mark: set the software dirty bit of every page stored to.
 * Returns the number of stores. */
uint64_t fy_workload_run(FyVCpu *v, const FyGuestMap *g, uint64_t n, bool mark);

#endif
