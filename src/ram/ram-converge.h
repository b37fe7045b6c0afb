/*
 * ram-converge.h: the RAM section's hooks for convergence (XBZRLE pages and
 * the dirty-page count a dirty-rate measurement borrows), called from
 * ram-save.c, ram-load.c and ram.c. See ram-converge.c.
 */
#ifndef FERRY_RAM_CONVERGE_H
#define FERRY_RAM_CONVERGE_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/stream.h"

typedef struct FyRamState FyRamState;
typedef struct RamBlockMig RamBlockMig;
typedef struct FyRamConv FyRamConv;

FyRamConv *fy_ram_conv_new(void);
void fy_ram_conv_free(FyRamConv *c);

/* save_setup, before the first dirty sync: make the XBZRLE cache if on. */
int fy_ram_conv_save_setup(FyRamState *rs, FyError **errp);
/* save_cleanup: free the cache, keep its counters for query-migrate. */
void fy_ram_conv_save_cleanup(FyRamState *rs);
/* After every dirty sync (migration thread): count the pages the VM
 * reported, start a new XBZRLE generation, update the rates. */
void fy_ram_conv_synced(FyRamState *rs);
/* A dirty page that is not zero: with XBZRLE active, put it (as XBZRLE, a
 * PAGE, or nothing when unchanged) and return true; else return false and
 * the caller puts it as a PAGE. */
bool fy_ram_conv_save_page(FyRamState *rs, FyStream *f, RamBlockMig *b,
                           uint64_t page);
/* A page just put as ZERO: the cache learns it (QEMU's
 * xbzrle_cache_zero_page), so the destination and the cache agree. */
void fy_ram_conv_zero_page(FyRamState *rs, RamBlockMig *b, uint64_t page);
/* Load the body of an XBZRLE record into b at offset (checked by the
 * caller to be inside the block). */
int fy_ram_conv_load_xbzrle(FyRamState *rs, FyStream *f, RamBlockMig *b,
                            uint64_t offset, FyError **errp);

#endif
