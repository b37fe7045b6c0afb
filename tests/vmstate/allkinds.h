/*
 * allkinds.h: a test device that uses every field kind and macro of
 * vmstate.h at once, with nested subsections, so round-trip, truncation and
 * corruption tests exercise the whole loader.
 *
 * Pointers point into the device itself (vstore, e_store) except the two
 * VMS_ALLOC fields, which the loader allocates; allkinds_free() frees them.
 */
#ifndef FERRY_TESTS_ALLKINDS_H
#define FERRY_TESTS_ALLKINDS_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/vmstate.h"

typedef struct Inner {
    uint32_t x;
    int16_t y;
} Inner;

typedef struct Elem {
    uint8_t tag;
    uint64_t val;
} Elem;

typedef struct AllKinds {
    int8_t i8;
    int16_t i16;
    int32_t i32;
    int64_t i64;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    bool flag;
    double d;
    uint8_t a8[3];
    uint16_t a16[3];
    uint32_t a32[3];
    uint64_t a64[2];
    int32_t ai32[2];
    int64_t ai64[2];
    bool abool[3];
    double af64[2];
    uint8_t n8;
    uint16_t v8[5];
    uint16_t n16;
    uint32_t v16[4];
    uint32_t n32;
    uint64_t v32[4];
    uint8_t buf[7];
    uint32_t vlen;
    uint8_t *vbuf;
    uint8_t vstore[32];
    uint32_t alen;
    uint8_t *abuf;
    Inner inner;
    Inner inners[3];
    uint32_t nelems;
    Elem elems[4];
    Elem *ptr;
    Elem *nullp;
    Elem *ptrs[4];
    Elem e_store[4];
    uint32_t since2;
    bool has_opt;
    uint32_t opt;
    uint32_t hidden;     /* travels only through the WITH_TMP temporary */
    uint32_t cfg_size;   /* _EQUAL */
    uint32_t ncaps;
    uint16_t *caps;      /* VARRAY_UINT32_ALLOC */
    uint64_t extra;      /* subsection allkinds/extra is sent when non-zero */
    uint8_t deep;
    int32_t always_v;
} AllKinds;

typedef struct AllKindsTmp {
    AllKinds *parent;
    uint32_t wire;
} AllKindsTmp;

static int allkinds_tmp_pre_save(void *opaque, FyError **errp)
{
    AllKindsTmp *t = opaque;
    t->wire = t->parent->hidden ^ 0xdeadbeefu;
    return 0;
}

static int allkinds_tmp_post_load(void *opaque, int version_id, FyError **errp)
{
    AllKindsTmp *t = opaque;
    t->parent->hidden = t->wire ^ 0xdeadbeefu;
    return 0;
}

static bool allkinds_has_opt(void *opaque, int version_id)
{
    return ((AllKinds *)opaque)->has_opt;
}

static bool allkinds_u8_ok(void *opaque, int version_id)
{
    return ((AllKinds *)opaque)->u8 < 200;
}

static bool allkinds_extra_needed(void *opaque)
{
    return ((AllKinds *)opaque)->extra != 0;
}

static const VMStateDescription vmstate_inner = {
    .name = "inner",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_UINT32(x, Inner),
        VMSTATE_INT16(y, Inner),
        VMSTATE_END_OF_LIST(),
    },
};

static const VMStateDescription vmstate_elem = {
    .name = "elem",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_UINT8(tag, Elem),
        VMSTATE_UINT64(val, Elem),
        VMSTATE_END_OF_LIST(),
    },
};

static const VMStateDescription vmstate_allkinds_tmp = {
    .name = "allkinds/tmp",
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_save = allkinds_tmp_pre_save,
    .post_load = allkinds_tmp_post_load,
    .fields = (const VMStateField[]){
        VMSTATE_UINT32(wire, AllKindsTmp),
        VMSTATE_END_OF_LIST(),
    },
};

static const VMStateDescription vmstate_allkinds_deep = {
    .name = "allkinds/extra/deep",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_UINT8(deep, AllKinds),
        VMSTATE_END_OF_LIST(),
    },
};

static const VMStateDescription vmstate_allkinds_extra = {
    .name = "allkinds/extra",
    .version_id = 1,
    .minimum_version_id = 1,
    .needed = allkinds_extra_needed,
    .fields = (const VMStateField[]){
        VMSTATE_UINT64(extra, AllKinds),
        VMSTATE_END_OF_LIST(),
    },
    .subsections = (const VMStateDescription *const[]){
        &vmstate_allkinds_deep,
        NULL,
    },
};

static const VMStateDescription vmstate_allkinds_always = {
    .name = "allkinds/always",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_INT32(always_v, AllKinds),
        VMSTATE_END_OF_LIST(),
    },
};

static const VMStateDescription vmstate_allkinds = {
    .name = "allkinds",
    .version_id = 2,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_INT8(i8, AllKinds),
        VMSTATE_INT16(i16, AllKinds),
        VMSTATE_INT32(i32, AllKinds),
        VMSTATE_INT64(i64, AllKinds),
        VMSTATE_UINT8(u8, AllKinds),
        VMSTATE_UINT16(u16, AllKinds),
        VMSTATE_UINT32(u32, AllKinds),
        VMSTATE_UINT64(u64, AllKinds),
        VMSTATE_BOOL(flag, AllKinds),
        VMSTATE_FLOAT64(d, AllKinds),
        VMSTATE_UINT8_ARRAY(a8, AllKinds, 3),
        VMSTATE_UINT16_ARRAY(a16, AllKinds, 3),
        VMSTATE_UINT32_ARRAY(a32, AllKinds, 3),
        VMSTATE_UINT64_ARRAY(a64, AllKinds, 2),
        VMSTATE_INT32_ARRAY(ai32, AllKinds, 2),
        VMSTATE_INT64_ARRAY(ai64, AllKinds, 2),
        VMSTATE_BOOL_ARRAY(abool, AllKinds, 3),
        VMSTATE_FLOAT64_ARRAY(af64, AllKinds, 2),
        VMSTATE_UINT8(n8, AllKinds),
        VMSTATE_VARRAY_UINT8(v8, AllKinds, n8, vmstate_info_uint16, uint16_t),
        VMSTATE_UINT16(n16, AllKinds),
        VMSTATE_VARRAY_UINT16(v16, AllKinds, n16, vmstate_info_uint32, uint32_t),
        VMSTATE_UINT32(n32, AllKinds),
        VMSTATE_VARRAY_UINT32(v32, AllKinds, n32, vmstate_info_uint64, uint64_t),
        VMSTATE_BUFFER(buf, AllKinds),
        VMSTATE_UINT32(vlen, AllKinds),
        VMSTATE_VBUFFER_UINT32(vbuf, AllKinds, vlen, 32),
        VMSTATE_UINT32(alen, AllKinds),
        VMSTATE_VBUFFER_ALLOC_UINT32(abuf, AllKinds, alen, 64),
        VMSTATE_STRUCT(inner, AllKinds, vmstate_inner, Inner),
        VMSTATE_STRUCT_ARRAY(inners, AllKinds, 3, vmstate_inner, Inner),
        VMSTATE_UINT32(nelems, AllKinds),
        VMSTATE_STRUCT_VARRAY_UINT32(elems, AllKinds, nelems, vmstate_elem, Elem),
        VMSTATE_STRUCT_POINTER(ptr, AllKinds, vmstate_elem, Elem),
        VMSTATE_STRUCT_POINTER(nullp, AllKinds, vmstate_elem, Elem),
        VMSTATE_ARRAY_OF_POINTER_TO_STRUCT(ptrs, AllKinds, 4, vmstate_elem, Elem),
        VMSTATE_UINT32_V(since2, AllKinds, 2),
        VMSTATE_BOOL(has_opt, AllKinds),
        VMSTATE_UINT32_TEST(opt, AllKinds, allkinds_has_opt),
        VMSTATE_VALIDATE("u8 below 200", allkinds_u8_ok),
        VMSTATE_UNUSED(5),
        VMSTATE_WITH_TMP(AllKinds, AllKindsTmp, vmstate_allkinds_tmp),
        VMSTATE_UINT32_EQUAL(cfg_size, AllKinds, "the config sizes must match"),
        VMSTATE_UINT32(ncaps, AllKinds),
        VMSTATE_VARRAY_UINT32_ALLOC(caps, AllKinds, ncaps, 8, vmstate_info_uint16,
                                    uint16_t),
        VMSTATE_END_OF_LIST(),
    },
    .subsections = (const VMStateDescription *const[]){
        &vmstate_allkinds_extra,
        &vmstate_allkinds_always,
        NULL,
    },
};

/* Pointer layout shared by source and destination; no values. */
static inline void allkinds_init(AllKinds *s)
{
    memset(s, 0, sizeof(*s));
    s->vbuf = s->vstore;
    s->ptr = &s->e_store[0];
    s->nullp = NULL;
    s->ptrs[0] = &s->e_store[1];
    s->ptrs[1] = NULL;
    s->ptrs[2] = NULL;
    s->ptrs[3] = &s->e_store[2];
    s->cfg_size = 4096;
}

static inline uint32_t allkinds_next(uint32_t *x)
{
    *x = *x * 1103515245u + 12345u;
    return *x;
}

static inline uint64_t allkinds_next64(uint32_t *x)
{
    uint64_t hi = allkinds_next(x);
    return (hi << 32) | allkinds_next(x);
}

/* Deterministic, non-trivial values (negative numbers, NaN payload, -0.0). */
static inline void allkinds_fill(AllKinds *s, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 1;
#define NEXT() allkinds_next(&x)
    s->i8 = -5;
    s->i16 = -1234;
    s->i32 = -123456789;
    s->i64 = -1234567890123456789ll;
    s->u8 = 199;
    s->u16 = 0xbeef;
    s->u32 = NEXT();
    s->u64 = 0xfedcba9876543210ull;
    s->flag = true;
    uint64_t nan_bits = 0x7ff8dead0000beefull;
    memcpy(&s->d, &nan_bits, sizeof(s->d));
    for (int i = 0; i < 3; i++) {
        s->a8[i] = (uint8_t)NEXT();
        s->a16[i] = (uint16_t)NEXT();
        s->a32[i] = NEXT();
        s->abool[i] = i != 1;
    }
    for (int i = 0; i < 2; i++) {
        s->a64[i] = allkinds_next64(&x);
        s->ai32[i] = -(int32_t)(NEXT() >> 1);
        s->ai64[i] = -(int64_t)NEXT() * 1000;
    }
    s->af64[0] = -0.0;
    s->af64[1] = 3.25;
    s->n8 = 3;
    for (int i = 0; i < 5; i++)
        s->v8[i] = i < 3 ? (uint16_t)NEXT() : 0;
    s->n16 = 4;
    for (int i = 0; i < 4; i++)
        s->v16[i] = NEXT();
    s->n32 = 2;
    s->v32[0] = 0x1111111122222222ull;
    s->v32[1] = 0x3333333344444444ull;
    for (int i = 0; i < 7; i++)
        s->buf[i] = (uint8_t)(0xa0 + i);
    s->vlen = 10;
    for (int i = 0; i < 10; i++)
        s->vstore[i] = (uint8_t)NEXT();
    s->alen = 5;
    free(s->abuf);
    s->abuf = malloc(5);
    memcpy(s->abuf, "hello", 5);
    s->inner.x = NEXT();
    s->inner.y = -7;
    for (int i = 0; i < 3; i++) {
        s->inners[i].x = NEXT();
        s->inners[i].y = (int16_t)(i - 1);
    }
    s->nelems = 2;
    for (int i = 0; i < 2; i++) {
        s->elems[i].tag = (uint8_t)(10 + i);
        s->elems[i].val = NEXT();
    }
    for (int i = 0; i < 4; i++) {
        s->e_store[i].tag = (uint8_t)(20 + i);
        s->e_store[i].val = allkinds_next64(&x);
    }
    s->since2 = 22;
    s->has_opt = true;
    s->opt = 0x0badf00d;
    s->hidden = NEXT();
    s->ncaps = 3;
    free(s->caps);
    s->caps = malloc(3 * sizeof(uint16_t));
    for (int i = 0; i < 3; i++)
        s->caps[i] = (uint16_t)(100 + i);
    s->extra = 0x0102030405060708ull;
    s->deep = 0x42;
    s->always_v = -99;
#undef NEXT
}

static inline void allkinds_free(AllKinds *s)
{
    free(s->abuf);
    free(s->caps);
    s->abuf = NULL;
    s->caps = NULL;
}

#endif
