/*
 * ram.c: the FyRamState object: registration as ("ram", 0, 4), options,
 * counters and the snapshot of the RAM list a migration works on.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ram/bitmap.h"
#include "ram/ram-converge.h"
#include "ram/ram-int.h"
#include "ram/ram-multifd.h"

uint64_t fy_ram_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const SaveVMHandlers ram_handlers = {
    .save_setup = fy_ram_save_setup,
    .save_live_iterate = fy_ram_save_iterate,
    .save_live_complete_precopy = fy_ram_save_complete,
    .state_pending_estimate = fy_ram_pending_estimate,
    .state_pending_exact = fy_ram_pending_exact,
    .save_cleanup = fy_ram_save_cleanup,
    .has_postcopy = fy_ram_has_postcopy,
    .save_live_complete_postcopy = fy_ram_save_complete_postcopy,
    .load_setup = fy_ram_load_setup,
    .load_state = fy_ram_load_state,
    .load_cleanup = fy_ram_load_cleanup,
};

FyRamState *fy_ram_new(FyRamList *ram, const FyVMOps *vm, void *vm_opaque)
{
    FyRamState *rs = calloc(1, sizeof(*rs));
    if (!rs)
        return NULL;
    rs->ram = ram;
    rs->vm = vm;
    rs->vm_opaque = vm_opaque;
    rs->opt.detect_zero = true;
    rs->conv = fy_ram_conv_new();
    if (!rs->conv) {
        free(rs);
        return NULL;
    }
    return rs;
}

void fy_ram_free(FyRamState *rs)
{
    if (!rs)
        return;
    fy_ram_save_cleanup(rs);
    fy_ram_load_cleanup(rs);
    fy_ram_conv_free(rs->conv);
    fy_ram_mfd_free(rs);
    fy_ram_postcopy_free(rs);
    free(rs);
}

int fy_ram_register(FyRamState *rs, FySaveState *ss, FyError **errp)
{
    return fy_register_savevm_live(ss, "ram", 0, FY_RAM_SECTION_VERSION,
                                   &ram_handlers, rs, errp);
}

void fy_ram_set_options(FyRamState *rs, const FyRamOptions *o)
{
    rs->opt = *o;
}

void fy_ram_set_sync_notify(FyRamState *rs, FyRamSyncFn fn, void *opaque)
{
    rs->sync_fn = fn;
    rs->sync_opaque = opaque;
}

void fy_ram_get_stats(FyRamState *rs, FyRamStats *out)
{
    out->total = stat_get(&rs->st_total);
    out->remaining = stat_get(&rs->st_remaining);
    out->duplicate = stat_get(&rs->st_duplicate);
    out->normal = stat_get(&rs->st_normal);
    out->dirty_sync_count = stat_get(&rs->st_sync_count);
    out->dirty_pages_rate = stat_get(&rs->st_dirty_rate);
    out->section_bytes = stat_get(&rs->st_section_bytes);
    out->loaded_normal = stat_get(&rs->st_loaded_normal);
    out->loaded_zero = stat_get(&rs->st_loaded_zero);
    out->zero_skipped = stat_get(&rs->st_zero_skipped);
}

int fy_ram_snapshot_blocks(FyRamState *rs, FyError **errp)
{
    const FyRamList *l = rs->ram;
    if (rs->save_active || rs->load_active) {
        fy_error_setg(errp, "the RAM section is already in use by another "
                      "migration");
        return -1;
    }
    if (!l || l->count < 0 || l->count > FY_RAMBLOCK_MAX) {
        fy_error_setg(errp, "RAM list has %d blocks (at most %d)",
                      l ? l->count : -1, FY_RAMBLOCK_MAX);
        return -1;
    }
    for (int i = 0; i < l->count; i++) {
        FyRamBlock *rb = l->blocks[i];
        size_t idlen = rb ? strnlen(rb->idstr, sizeof(rb->idstr)) : 0;
        if (!rb || !rb->host || idlen == 0 || idlen > 255) {
            fy_error_setg(errp, "RAM block %d is not usable (no memory, or "
                          "its name is empty or longer than 255 bytes)", i);
            return -1;
        }
        if (rb->used_length == 0 || rb->used_length % FY_TARGET_PAGE_SIZE) {
            fy_error_setg(errp, "RAM block '%s': used_length 0x%" PRIx64
                          " is not a positive multiple of the page size",
                          rb->idstr, rb->used_length);
            return -1;
        }
        for (int j = 0; j < i; j++) {
            if (!strcmp(l->blocks[j]->idstr, rb->idstr)) {
                fy_error_setg(errp, "two RAM blocks are named '%s'", rb->idstr);
                return -1;
            }
        }
    }
    memset(rs->blocks, 0, sizeof(rs->blocks));
    rs->nblocks = l->count;
    for (int i = 0; i < l->count; i++) {
        RamBlockMig *b = &rs->blocks[i];
        b->rb = l->blocks[i];
        b->pages = b->rb->used_length >> FY_TARGET_PAGE_BITS;
        b->ignored = rs->opt.ignore_shared && b->rb->shared;
    }
    return 0;
}
