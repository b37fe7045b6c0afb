/*
 * ram-multifd.h: the RAM section's side of multifd (ram-multifd.c), for
 * ram-save.c, ram-load.c and ram.c.
 *
 * The destination's zero_map is shared with the multifd receive threads
 * (which clear the bits of pages they fill and set those of zero pages), so
 * every change to it while loading goes through the atomic helpers here.
 */
#ifndef FERRY_RAM_MULTIFD_H
#define FERRY_RAM_MULTIFD_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/multifd.h"
#include "ferry/stream.h"
#include "ram/ram-int.h"

static inline bool ram_zero_test(const unsigned long *map, uint64_t page)
{
    unsigned long w = __atomic_load_n(&map[page / FY_BITS_PER_LONG],
                                      __ATOMIC_RELAXED);
    return (w >> (page % FY_BITS_PER_LONG)) & 1;
}

static inline void ram_zero_set(unsigned long *map, uint64_t page)
{
    __atomic_fetch_or(&map[page / FY_BITS_PER_LONG],
                      1ul << (page % FY_BITS_PER_LONG), __ATOMIC_RELAXED);
}

static inline void ram_zero_clear(unsigned long *map, uint64_t page)
{
    __atomic_fetch_and(&map[page / FY_BITS_PER_LONG],
                       ~(1ul << (page % FY_BITS_PER_LONG)), __ATOMIC_RELAXED);
}

/* ---- save (the migration thread) ---- */
/* True when multifd took the page (queued it, or failed and set f's
 * error); false when the caller puts it on the main stream (multifd off,
 * or a zero page under zero-page-detection legacy). */
bool fy_ram_mfd_save_page(FyRamState *rs, FyStream *f, RamBlockMig *b,
                          uint64_t page);
/* A dirty sync happened: a page already queued may be queued again, so the
 * next record must wait for a multifd sync (see ram-multifd.c). */
void fy_ram_mfd_dirty_synced(FyRamState *rs);
/* The last pages are queued: sync and put MULTIFD_FLUSH. */
void fy_ram_mfd_save_complete(FyRamState *rs, FyStream *f);

/* ---- load ---- */
/* RAM_SAVE_FLAG_MULTIFD_FLUSH: wait for every channel's SYNC. */
int fy_ram_mfd_load_flush(FyRamState *rs, FyError **errp);
void fy_ram_mfd_load_setup(FyRamState *rs);
void fy_ram_mfd_load_cleanup(FyRamState *rs);

void fy_ram_mfd_free(FyRamState *rs);

#endif
