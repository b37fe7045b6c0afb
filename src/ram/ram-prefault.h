/*
 * ram-prefault.h: populate fresh destination RAM ahead of the precopy
 * loader (ram-prefault.c).
 */
#ifndef FERRY_RAM_PREFAULT_H
#define FERRY_RAM_PREFAULT_H

#include <stdbool.h>
#include <stdint.h>

#include "ram/ram-int.h"

/* Load setup: start the worker (none if the kernel or the blocks do not
 * allow it; never fails: prefaulting is only a speed-up). */
void fy_ram_prefault_start(FyRamState *rs);
/* Load cleanup: drop what is queued, wait for the worker and free it. */
void fy_ram_prefault_stop(FyRamState *rs);

void fy_ram_prefault_note(FyRamState *rs, RamBlockMig *b, uint64_t offset);

/* The loader is about to place a PAGE at offset of b; was_zero: the zero
 * map said the page was still known zero (untouched). Cheap when off. */
static inline void fy_ram_prefault_page(FyRamState *rs, RamBlockMig *b,
                                        uint64_t offset, bool was_zero)
{
    if (rs->pf && was_zero && !rs->pc)
        fy_ram_prefault_note(rs, b, offset);
}

#endif
