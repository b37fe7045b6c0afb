/*
 * ram.h: the "ram" iterative section, in QEMU's RAM section format (v4).
 *
 * A FyRamState sends and receives the guest RAM of one VM: the RAM blocks of
 * a FyRamList, reached through FyVMOps for dirty tracking. It registers one
 * entry, ("ram", instance 0, version 4), in a FySaveState, and from then on
 * the savevm writer and loader drive it:
 *
 *   save_setup     dirty bitmaps (every page dirty), dirty log on, first
 *                  sync, then `be64 total|MEM_SIZE` + (idstr, used_length
 *                  [, GPA with x-ignore-shared]) per block + EOS
 *   iterate        dirty pages as PAGE (sent from guest memory, no copy) or
 *                  ZERO records until the rate limit or 50 ms, then EOS
 *   pending        dirty pages x page size; exact does a dirty sync first
 *   complete       final sync with the VM stopped, every dirty page, EOS
 *   load           MEM_SIZE checked against the local blocks (names, sizes),
 *                  every record's block and offset checked before use
 *
 * Records are `be64 offset|flags`, then `u8 len + idstr` unless CONTINUE
 * says "same block as the previous record". The first record of every
 * section names its block, so each section decodes on its own.
 */
#ifndef FERRY_RAM_H
#define FERRY_RAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/multifd.h"
#include "ferry/ramblock.h"
#include "ferry/savevm.h"

/* RAM_SAVE_FLAG_* (QEMU migration/ram.c): the low bits of a record's be64. */
enum {
    RAM_SAVE_FLAG_FULL          = 0x001, /* obsolete, refused */
    RAM_SAVE_FLAG_ZERO          = 0x002,
    RAM_SAVE_FLAG_MEM_SIZE      = 0x004,
    RAM_SAVE_FLAG_PAGE          = 0x008,
    RAM_SAVE_FLAG_EOS           = 0x010,
    RAM_SAVE_FLAG_CONTINUE      = 0x020,
    RAM_SAVE_FLAG_XBZRLE        = 0x040,
    RAM_SAVE_FLAG_HOOK          = 0x080,
    RAM_SAVE_FLAG_COMPRESS_PAGE = 0x100,
    RAM_SAVE_FLAG_MULTIFD_FLUSH = 0x200,
};

#define FY_RAM_SECTION_VERSION 4

typedef struct FyRamState FyRamState;

typedef struct FyRamOptions {
    /* x-ignore-shared: shared blocks are listed (with their GPA) but their
     * pages are not sent; the destination maps the same memory. */
    bool ignore_shared;
    /* zero-page-detection != none: all-zero pages go as ZERO records. */
    bool detect_zero;
} FyRamOptions;

/* Counters; read at any time from any thread (each value is atomic, the set
 * is not a snapshot). Sizes in bytes. */
typedef struct FyRamStats {
    uint64_t total;             /* RAM that migrates (ignored blocks excluded) */
    uint64_t remaining;         /* dirty and not yet sent */
    uint64_t duplicate;         /* pages sent as ZERO */
    uint64_t normal;            /* pages sent as PAGE */
    uint64_t dirty_sync_count;
    uint64_t dirty_pages_rate;  /* pages/s, over the last period of >= 1 s */
    uint64_t section_bytes;     /* bytes the RAM section put on the stream */
    uint64_t loaded_normal;     /* destination: PAGE records loaded */
    uint64_t loaded_zero;       /* destination: ZERO records loaded */
    uint64_t zero_skipped;      /* destination: ZERO pages already zero here */
} FyRamStats;

/* Called after every dirty sync with the new dirty-sync-count (QEMU emits
 * MIGRATION_PASS there). Runs on the thread that synced. */
typedef void (*FyRamSyncFn)(void *opaque, uint64_t sync_count);

FyRamState *fy_ram_new(FyRamList *ram, const FyVMOps *vm, void *vm_opaque);
/* Unregisters nothing: unregister from the FySaveState first. */
void fy_ram_free(FyRamState *rs);
/* Register ("ram", 0, version 4) in ss. */
int fy_ram_register(FyRamState *rs, FySaveState *ss, FyError **errp);
/* Takes effect at the next save_setup / load_setup. */
void fy_ram_set_options(FyRamState *rs, const FyRamOptions *o);
void fy_ram_set_sync_notify(FyRamState *rs, FyRamSyncFn fn, void *opaque);
void fy_ram_get_stats(FyRamState *rs, FyRamStats *out);

/* True when len bytes at buf are all zero (len a multiple of 64 is fastest).
 * Exits at the first non-zero 64-byte run, so a typical data page costs a
 * few nanoseconds. */
bool fy_buffer_is_zero(const void *buf, size_t len);

/* ---- multifd (ram-multifd.c) ----
 * Pages of the next save go to s instead of the main stream (NULL: off),
 * with zero pages handled as zero_detect says; the next load waits at
 * RAM_SAVE_FLAG_MULTIFD_FLUSH for r's channels (NULL: off). The caller
 * owns s and r and keeps them until the save / load is cleaned up. A
 * receive object for the RAM loader is created with start_disabled: load
 * setup enables it once the loader's maps are ready. -1: out of memory. */
int fy_ram_set_multifd_send(FyRamState *rs, FyMultifdSend *s,
                            FyMultifdZeroDetect zero_detect);
int fy_ram_set_multifd_recv(FyRamState *rs, FyMultifdRecv *r);
/* For FyMultifdRecvHooks: keep the loader's map of zero pages right. */
bool fy_ram_multifd_page_known_zero(FyRamState *rs, FyRamBlock *rb,
                                    uint64_t offset);
void fy_ram_multifd_pages_done(FyRamState *rs, FyRamBlock *rb,
                               const uint64_t *normal, uint32_t n_normal,
                               const uint64_t *zero, uint32_t n_zero);

#endif
