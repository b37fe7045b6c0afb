/*
 * savevm-test.h: devices, handler entries and byte helpers shared by the
 * savevm tests.
 *
 * Devices: "cpu" (vmsd v3 with a subsection), "allkinds" (every field kind,
 * from tests/vmstate/allkinds.h), "blob" (a legacy save_state/load_state
 * pair: be32 len + len bytes, len <= 64) and "iter" (an iterative entry:
 * each section body is records `be32 index, be64 value` ended by
 * be32 0xffffffff; the START body also carries be32 count first).
 *
 * Streams are built with Buf, a byte builder, so expected bytes are written
 * from the format facts rather than by the code under test.
 */
#ifndef FERRY_TESTS_SAVEVM_TEST_H
#define FERRY_TESTS_SAVEVM_TEST_H

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/channel.h"
#include "ferry/savevm.h"
#include "ferry/stream.h"
#include "ferry/vmstate.h"
#include "t.h"
#include "vmstate/allkinds.h"

/* ---- byte builder ---- */

typedef struct Buf {
    uint8_t *d;
    size_t len, cap;
} Buf;

static inline void buf_raw(Buf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->d = realloc(b->d, b->cap);
    }
    if (n)
        memcpy(b->d + b->len, p, n);
    b->len += n;
}
static inline void buf_u8(Buf *b, uint8_t v) { buf_raw(b, &v, 1); }
static inline void buf_be16(Buf *b, uint16_t v)
{
    uint8_t x[2] = { v >> 8, v };
    buf_raw(b, x, 2);
}
static inline void buf_be32(Buf *b, uint32_t v)
{
    uint8_t x[4] = { v >> 24, v >> 16, v >> 8, v };
    buf_raw(b, x, 4);
}
static inline void buf_be64(Buf *b, uint64_t v)
{
    buf_be32(b, (uint32_t)(v >> 32));
    buf_be32(b, (uint32_t)v);
}
/* u8 length + bytes */
static inline void buf_str(Buf *b, const char *s)
{
    buf_u8(b, (uint8_t)strlen(s));
    buf_raw(b, s, strlen(s));
}
static inline void buf_free(Buf *b)
{
    free(b->d);
    memset(b, 0, sizeof(*b));
}

/* Header + minimal configuration for machine type mt. */
static inline void buf_header(Buf *b, const char *mt)
{
    buf_be32(b, QEMU_VM_FILE_MAGIC);
    buf_be32(b, QEMU_VM_FILE_VERSION);
    buf_u8(b, QEMU_VM_CONFIGURATION);
    buf_be32(b, (uint32_t)strlen(mt));
    buf_raw(b, mt, strlen(mt));
}
static inline void buf_full_header(Buf *b, uint32_t id, const char *idstr,
                                   uint32_t instance, uint32_t version)
{
    buf_u8(b, QEMU_VM_SECTION_FULL);
    buf_be32(b, id);
    buf_str(b, idstr);
    buf_be32(b, instance);
    buf_be32(b, version);
}
static inline void buf_footer(Buf *b, uint32_t id)
{
    buf_u8(b, QEMU_VM_SECTION_FOOTER);
    buf_be32(b, id);
}

/* ---- streams in memory ---- */

typedef struct MemOut {
    FyChannel *c;
    FyStream *f;
} MemOut;

static inline MemOut mem_out(void)
{
    MemOut m;
    m.c = fy_channel_mem_new(NULL, 0);
    m.f = fy_stream_new_output(m.c, false);
    return m;
}

/* Flush, copy the bytes into *out, close. */
static inline void mem_out_finish(MemOut *m, Buf *out)
{
    size_t len = 0;
    fy_stream_flush(m->f);
    const uint8_t *d = fy_channel_mem_data(m->c, &len);
    memset(out, 0, sizeof(*out));
    buf_raw(out, d, len);
    fy_stream_close(m->f, NULL);
    fy_channel_close(m->c, NULL);
}

static inline FyStream *mem_in(const void *data, size_t len)
{
    return fy_stream_new_input(fy_channel_mem_new(data, len), true);
}

/* Load data[0..len) into s; returns the loader's result, *msg gets a copy
 * of the error message (or NULL). */
static inline int load_buf(FySaveState *s, const void *data, size_t len,
                           const FyLoadHooks *hooks, FyLoadResult *res,
                           char **msg)
{
    FyStream *f = mem_in(data, len);
    FyError *err = NULL;
    int ret = fy_loadvm_state(s, f, hooks, res, &err);
    if (msg)
        *msg = err ? strdup(fy_error_msg(err)) : NULL;
    fy_error_free(err);
    fy_stream_close(f, NULL);
    return ret;
}

/* ---- "cpu": a plain vmsd with a subsection ---- */

typedef struct Cpu {
    uint32_t regs[4];
    uint64_t pc;
    bool halted;
    bool fpu_used;
    uint64_t fpr[2];
} Cpu;

static inline bool cpu_fpu_needed(void *opaque)
{
    return ((Cpu *)opaque)->fpu_used;
}

/* Receiving the subsection means the source used the FPU. */
static inline int cpu_fpu_post_load(void *opaque, int version_id, FyError **errp)
{
    ((Cpu *)opaque)->fpu_used = true;
    return 0;
}

static inline int cpu_pre_load(void *opaque, FyError **errp)
{
    ((Cpu *)opaque)->fpu_used = false;
    return 0;
}

static const VMStateDescription vmstate_cpu_fpu = {
    .name = "cpu/fpu",
    .version_id = 1,
    .minimum_version_id = 1,
    .needed = cpu_fpu_needed,
    .post_load = cpu_fpu_post_load,
    .fields = (const VMStateField[]){
        VMSTATE_UINT64_ARRAY(fpr, Cpu, 2),
        VMSTATE_END_OF_LIST(),
    },
};

static const VMStateDescription vmstate_cpu = {
    .name = "cpu",
    .version_id = 3,
    .minimum_version_id = 1,
    .pre_load = cpu_pre_load,
    .fields = (const VMStateField[]){
        VMSTATE_UINT32_ARRAY(regs, Cpu, 4),
        VMSTATE_UINT64(pc, Cpu),
        VMSTATE_BOOL(halted, Cpu),
        VMSTATE_END_OF_LIST(),
    },
    .subsections = (const VMStateDescription *const[]){
        &vmstate_cpu_fpu,
        NULL,
    },
};

static inline void cpu_fill(Cpu *c, unsigned seed)
{
    memset(c, 0, sizeof(*c));
    for (int i = 0; i < 4; i++)
        c->regs[i] = seed * 0x01010101u + (uint32_t)i;
    c->pc = 0xffff0000ull + seed;
    c->halted = seed & 1;
    c->fpu_used = seed & 2;
    c->fpr[0] = seed * 7ull;
    c->fpr[1] = ~(uint64_t)seed;
}

/* ---- "blob": a legacy handler pair ---- */

typedef struct Blob {
    uint32_t len;
    uint8_t data[64];
    int loaded_version;
} Blob;

static inline int blob_save(FyStream *f, void *opaque, FyError **errp)
{
    Blob *b = opaque;
    fy_put_be32(f, b->len);
    fy_put_buffer(f, b->data, b->len);
    return 0;
}

static inline int blob_load(FyStream *f, void *opaque, int version_id,
                            FyError **errp)
{
    Blob *b = opaque;
    uint32_t len = fy_get_be32(f);
    if (fy_stream_error(f))
        return -1;
    if (len > sizeof(b->data)) {
        fy_error_setg(errp, "blob length %u exceeds %zu", len, sizeof(b->data));
        return -1;
    }
    b->len = len;
    fy_get_buffer(f, b->data, len);
    b->loaded_version = version_id;
    return fy_stream_error(f) ? -1 : 0;
}

static const SaveVMHandlers blob_handlers = {
    .save_state = blob_save,
    .load_state = blob_load,
};

/* ---- "iter": an iterative handler entry ---- */

#define ITER_MAX 64
#define ITER_EOS 0xffffffffu

typedef struct Iter {
    uint32_t count;          /* values to send (source) / announced (dest) */
    uint64_t vals[ITER_MAX];
    uint32_t next;           /* source: next index to send */
    uint32_t per_round;      /* source: values per iteration */
    bool active;
    bool iterate_active;
    /* call counters */
    int setups, iterates, completes, cleanups;
    int load_setups, load_cleanups, loads;
    int load_types[3];       /* START, PART, END as seen by load_state */
} Iter;

static inline void iter_send(FyStream *f, Iter *it, uint32_t n)
{
    for (uint32_t i = 0; i < n && it->next < it->count; i++, it->next++) {
        fy_put_be32(f, it->next);
        fy_put_be64(f, it->vals[it->next]);
    }
    fy_put_be32(f, ITER_EOS);
}

static inline int iter_save_setup(FyStream *f, void *opaque, FyError **errp)
{
    Iter *it = opaque;
    it->setups++;
    it->next = 0;
    fy_put_be32(f, it->count);
    fy_put_be32(f, ITER_EOS);
    return 0;
}

static inline int iter_save_iterate(FyStream *f, void *opaque, FyError **errp)
{
    Iter *it = opaque;
    it->iterates++;
    iter_send(f, it, it->per_round);
    return it->next >= it->count ? 1 : 0;
}

static inline int iter_save_complete(FyStream *f, void *opaque, FyError **errp)
{
    Iter *it = opaque;
    it->completes++;
    iter_send(f, it, ITER_MAX);
    return 0;
}

static inline void iter_cleanup(void *opaque)
{
    ((Iter *)opaque)->cleanups++;
}

static inline void iter_pending(void *opaque, uint64_t *must, uint64_t *can)
{
    Iter *it = opaque;
    *must += (uint64_t)(it->count - it->next) * 12;
    *can += 1;
}

static inline bool iter_is_active(void *opaque)
{
    return ((Iter *)opaque)->active;
}

static inline bool iter_is_active_iterate(void *opaque)
{
    return ((Iter *)opaque)->iterate_active;
}

/* A new load: the next body is a START again. */
static inline int iter_load_setup(void *opaque, FyError **errp)
{
    ((Iter *)opaque)->load_setups++;
    ((Iter *)opaque)->loads = 0;
    return 0;
}

static inline int iter_load_cleanup(void *opaque)
{
    ((Iter *)opaque)->load_cleanups++;
    return 0;
}

/* START carries the count first; every body ends with ITER_EOS. The loader
 * cannot tell START from PART, so the count comes only on the first load. */
static inline int iter_load(FyStream *f, void *opaque, int version_id,
                            FyError **errp)
{
    Iter *it = opaque;
    if (it->loads++ == 0) {
        uint32_t n = fy_get_be32(f);
        if (n > ITER_MAX) {
            fy_error_setg(errp, "iter: count %u exceeds %d", n, ITER_MAX);
            return -1;
        }
        it->count = n;
    }
    for (;;) {
        uint32_t idx = fy_get_be32(f);
        if (fy_stream_error(f))
            return -1;
        if (idx == ITER_EOS)
            return 0;
        if (idx >= it->count) {
            fy_error_setg(errp, "iter: index %u out of range (count %u)", idx,
                          it->count);
            return -1;
        }
        it->vals[idx] = fy_get_be64(f);
    }
}

static const SaveVMHandlers iter_handlers = {
    .save_setup = iter_save_setup,
    .save_live_iterate = iter_save_iterate,
    .save_live_complete_precopy = iter_save_complete,
    .save_cleanup = iter_cleanup,
    .state_pending_estimate = iter_pending,
    .state_pending_exact = iter_pending,
    .is_active = iter_is_active,
    .is_active_iterate = iter_is_active_iterate,
    .load_setup = iter_load_setup,
    .load_state = iter_load,
    .load_cleanup = iter_load_cleanup,
};

static inline void iter_init(Iter *it, uint32_t count, uint32_t per_round)
{
    memset(it, 0, sizeof(*it));
    it->count = count;
    it->per_round = per_round;
    it->active = true;
    it->iterate_active = true;
    for (uint32_t i = 0; i < count; i++)
        it->vals[i] = 0x1000000000000000ull * (i % 15) + i * 0x9e3779b9ull;
}

/* ---- a whole VM ---- */

typedef struct Vm {
    FySaveState *s;
    Cpu cpu[2];
    AllKinds ak[2];
    Blob blob;
    Iter iter;
} Vm;

/* Registers: iter, cpu (ANY) x2, allkinds (ANY) x2, blob. The source gets
 * values (seed != 0), the destination zeros with the same pointer layout. */
static inline void vm_init(Vm *vm, const char *machine, unsigned seed)
{
    FyError *err = NULL;
    memset(vm, 0, sizeof(*vm));
    vm->s = fy_savevm_new(machine);
    iter_init(&vm->iter, seed ? 40 : 0, 7);
    for (int i = 0; i < 2; i++) {
        allkinds_init(&vm->ak[i]);
        if (seed) {
            cpu_fill(&vm->cpu[i], seed + (unsigned)i);
            allkinds_fill(&vm->ak[i], seed + (unsigned)i);
        }
    }
    if (seed) {
        vm->blob.len = 13;
        for (int i = 0; i < 13; i++)
            vm->blob.data[i] = (uint8_t)(seed + (unsigned)i * 3);
    }
    fy_register_savevm_live(vm->s, "iter", 0, 1, &iter_handlers, &vm->iter, &err);
    for (int i = 0; i < 2; i++) {
        fy_register_vmstate(vm->s, "cpu", FY_INSTANCE_ANY, &vmstate_cpu,
                            &vm->cpu[i], &err);
        fy_register_vmstate(vm->s, "allkinds", FY_INSTANCE_ANY,
                            &vmstate_allkinds, &vm->ak[i], &err);
    }
    fy_register_savevm_live(vm->s, "blob", 0, 2, &blob_handlers, &vm->blob, &err);
    if (err) {
        T_FAIL("vm_init: %s", fy_error_msg(err));
        fy_error_free(err);
    }
}

static inline void vm_free(Vm *vm)
{
    for (int i = 0; i < 2; i++)
        allkinds_free(&vm->ak[i]);
    fy_savevm_free(vm->s);
}

/* Save the whole VM with fy_savevm_save_all. */
static inline int vm_save(Vm *vm, Buf *out, char **msg)
{
    MemOut m = mem_out();
    FyError *err = NULL;
    int ret = fy_savevm_save_all(vm->s, m.f, &err);
    if (msg)
        *msg = err ? strdup(fy_error_msg(err)) : NULL;
    fy_error_free(err);
    mem_out_finish(&m, out);
    return ret;
}

static inline bool json_same(json_t *a, json_t *b)
{
    bool eq = a && b && json_equal(a, b);
    json_decref(a);
    json_decref(b);
    return eq;
}

/* Destination device state equals the source's. */
static inline void vm_assert_equal(Vm *src, Vm *dst)
{
    for (int i = 0; i < 2; i++) {
        T_ASSERT(json_same(vmstate_to_json(&vmstate_cpu, &src->cpu[i]),
                           vmstate_to_json(&vmstate_cpu, &dst->cpu[i])));
        T_ASSERT(json_same(vmstate_to_json(&vmstate_allkinds, &src->ak[i]),
                           vmstate_to_json(&vmstate_allkinds, &dst->ak[i])));
    }
    T_EQ_INT(dst->blob.len, src->blob.len);
    T_EQ_MEM(dst->blob.data, src->blob.data, src->blob.len);
    T_EQ_INT(dst->iter.count, src->iter.count);
    T_EQ_MEM(dst->iter.vals, src->iter.vals, sizeof(src->iter.vals));
}

#endif
