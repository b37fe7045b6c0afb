/*
 * fuzz-vm.h: the VM the loader fuzzer loads into, shared with the seed
 * generator so that the seeds are valid streams for it.
 *
 * Entries (all QEMU-shaped):
 *   "ram"      iterative handler, START/PART/END: body = records
 *              `be32 index, be64 value` ended by be32 0xffffffff; the first
 *              body of a load carries be32 count (<= FV_ITER_MAX) first
 *   "allkinds" x2  every VMState field kind, nested subsections
 *              (tests/vmstate/allkinds.h)
 *   "timer"    a small vmsd with a higher priority and a subsection
 *   "blob"     legacy save_state/load_state: be32 len (<= 64) + bytes
 * Configuration: machine "pc-q35-7.2", page bits 16 (legacy 12),
 * x-ignore-shared on, uuid validated -- so every configuration subsection
 * is parsed and checked.
 */
#ifndef FERRY_FUZZ_VM_H
#define FERRY_FUZZ_VM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/channel.h"
#include "ferry/savevm.h"
#include "ferry/stream.h"
#include "vmstate/allkinds.h"

#define FV_ITER_MAX 256
#define FV_EOS 0xffffffffu

typedef struct FvIter {
    uint32_t count, next, per_round;
    uint64_t vals[FV_ITER_MAX];
    int loads;
} FvIter;

typedef struct FvTimer {
    int64_t deadline;
    uint32_t period;
    bool armed;
    uint16_t ticks[4];
} FvTimer;

typedef struct FvBlob {
    uint32_t len;
    uint8_t data[64];
} FvBlob;

typedef struct FuzzVm {
    FySaveState *s;
    FvIter iter;
    AllKinds ak[2];
    FvTimer timer;
    FvBlob blob;
} FuzzVm;

/* ---- "ram" ---- */

static inline void fv_iter_send(FyStream *f, FvIter *it, uint32_t n)
{
    for (uint32_t i = 0; i < n && it->next < it->count; i++, it->next++) {
        fy_put_be32(f, it->next);
        fy_put_be64(f, it->vals[it->next]);
    }
    fy_put_be32(f, FV_EOS);
}

static inline int fv_iter_setup(FyStream *f, void *opaque, FyError **errp)
{
    FvIter *it = opaque;
    it->next = 0;
    fy_put_be32(f, it->count);
    fy_put_be32(f, FV_EOS);
    return 0;
}

static inline int fv_iter_iterate(FyStream *f, void *opaque, FyError **errp)
{
    FvIter *it = opaque;
    fv_iter_send(f, it, it->per_round);
    return it->next >= it->count;
}

static inline int fv_iter_complete(FyStream *f, void *opaque, FyError **errp)
{
    fv_iter_send(f, opaque, FV_ITER_MAX);
    return 0;
}

static inline int fv_iter_load_setup(void *opaque, FyError **errp)
{
    ((FvIter *)opaque)->loads = 0;
    return 0;
}

static inline int fv_iter_load(FyStream *f, void *opaque, int version_id,
                               FyError **errp)
{
    FvIter *it = opaque;
    if (it->loads++ == 0) {
        uint32_t n = fy_get_be32(f);
        if (n > FV_ITER_MAX) {
            fy_error_setg(errp, "ram: count %u exceeds %d", n, FV_ITER_MAX);
            return -1;
        }
        it->count = n;
    }
    for (;;) {
        uint32_t idx = fy_get_be32(f);
        if (fy_stream_error(f))
            return -1;
        if (idx == FV_EOS)
            return 0;
        if (idx >= it->count) {
            fy_error_setg(errp, "ram: index %u out of range", idx);
            return -1;
        }
        it->vals[idx] = fy_get_be64(f);
    }
}

static inline bool fv_has_postcopy(void *opaque)
{
    return true;
}

static const SaveVMHandlers fv_iter_handlers = {
    .save_setup = fv_iter_setup,
    .save_live_iterate = fv_iter_iterate,
    .save_live_complete_precopy = fv_iter_complete,
    .save_live_complete_postcopy = fv_iter_complete,
    .has_postcopy = fv_has_postcopy,
    .load_setup = fv_iter_load_setup,
    .load_state = fv_iter_load,
};

/* ---- "timer" ---- */

static inline bool fv_timer_armed(void *opaque)
{
    return ((FvTimer *)opaque)->armed;
}

static const VMStateDescription fv_vmstate_timer_ticks = {
    .name = "timer/ticks",
    .version_id = 2,
    .minimum_version_id = 1,
    .needed = fv_timer_armed,
    .fields = (const VMStateField[]){
        VMSTATE_UINT16_ARRAY(ticks, FvTimer, 4),
        VMSTATE_END_OF_LIST(),
    },
};

static const VMStateDescription fv_vmstate_timer = {
    .name = "timer",
    .version_id = 3,
    .minimum_version_id = 2,
    .priority = MIG_PRI_IOMMU,
    .fields = (const VMStateField[]){
        VMSTATE_INT64(deadline, FvTimer),
        VMSTATE_UINT32_V(period, FvTimer, 3),
        VMSTATE_BOOL(armed, FvTimer),
        VMSTATE_END_OF_LIST(),
    },
    .subsections = (const VMStateDescription *const[]){
        &fv_vmstate_timer_ticks,
        NULL,
    },
};

/* ---- "blob" ---- */

static inline int fv_blob_save(FyStream *f, void *opaque, FyError **errp)
{
    FvBlob *b = opaque;
    fy_put_be32(f, b->len);
    fy_put_buffer(f, b->data, b->len);
    return 0;
}

static inline int fv_blob_load(FyStream *f, void *opaque, int version_id,
                               FyError **errp)
{
    FvBlob *b = opaque;
    uint32_t len = fy_get_be32(f);
    if (fy_stream_error(f))
        return -1;
    if (len > sizeof(b->data)) {
        fy_error_setg(errp, "blob: length %u exceeds %zu", len, sizeof(b->data));
        return -1;
    }
    b->len = len;
    fy_get_buffer(f, b->data, len);
    return fy_stream_error(f) ? -1 : 0;
}

static const SaveVMHandlers fv_blob_handlers = {
    .save_state = fv_blob_save,
    .load_state = fv_blob_load,
};

/* ---- the VM ---- */

static inline void fuzz_vm_config(FySaveVMConfig *c)
{
    c->target_page_bits = 16;
    c->legacy_page_bits = 12;
    c->cap_x_ignore_shared = true;
    c->validate_uuid = true;
    for (int i = 0; i < 16; i++)
        c->uuid[i] = (uint8_t)(0x10 + i);
}

/* seed 0: a destination (zeros); otherwise a source with values. Returns
 * -1 if the registry refused something (a bug). */
static inline int fuzz_vm_init(FuzzVm *vm, unsigned seed)
{
    int ret = 0;
    memset(vm, 0, sizeof(*vm));
    vm->s = fy_savevm_new("pc-q35-7.2");
    if (!vm->s)
        return -1;
    fuzz_vm_config(fy_savevm_config(vm->s));
    for (int i = 0; i < 2; i++) {
        allkinds_init(&vm->ak[i]);
        if (seed)
            allkinds_fill(&vm->ak[i], seed + (unsigned)i);
    }
    if (seed) {
        vm->iter.count = 100;
        vm->iter.per_round = 17;
        for (uint32_t i = 0; i < vm->iter.count; i++)
            vm->iter.vals[i] = (uint64_t)seed * 0x9e3779b97f4a7c15ull + i;
        vm->timer.deadline = -12345;
        vm->timer.period = 1000;
        vm->timer.armed = true;
        vm->timer.ticks[2] = 7;
        vm->blob.len = 9;
        memcpy(vm->blob.data, "blobdata!", 9);
    }
    FyError *err = NULL;
    ret |= fy_register_savevm_live(vm->s, "ram", 0, 4, &fv_iter_handlers,
                                   &vm->iter, &err);
    ret |= fy_register_vmstate(vm->s, "allkinds", FY_INSTANCE_ANY,
                               &vmstate_allkinds, &vm->ak[0], &err);
    ret |= fy_register_vmstate(vm->s, "timer", 0, &fv_vmstate_timer,
                               &vm->timer, &err);
    ret |= fy_register_vmstate(vm->s, "allkinds", FY_INSTANCE_ANY,
                               &vmstate_allkinds, &vm->ak[1], &err);
    ret |= fy_register_savevm_live(vm->s, "blob", 0, 1, &fv_blob_handlers,
                                   &vm->blob, &err);
    fy_error_free(err);
    return ret ? -1 : 0;
}

static inline void fuzz_vm_free(FuzzVm *vm)
{
    for (int i = 0; i < 2; i++)
        allkinds_free(&vm->ak[i]);
    fy_savevm_free(vm->s);
}

#endif
