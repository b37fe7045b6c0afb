/*
 * test_vmstate_desc.c: the JSON VM description (QEMU's shape, checked to the
 * byte) and the vmstate_to_json debug dump.
 */
#include <stdio.h>

#include "allkinds.h"
#include "vmstate-test.h"

typedef struct Sub2 {
    uint8_t q;
    uint8_t r;
} Sub2;

typedef struct DescDev {
    uint32_t a32[4];
    Inner inner;
    Inner inners[3];
    Sub2 subs[2];
    uint8_t n1;
    uint16_t v1[4];
    uint8_t n0;
    uint16_t v0[4];
    Elem *ptrs[5];
    Elem store[3];
    uint16_t tarr[2];
    uint32_t hidden;
    uint32_t vlen;
    uint8_t *vbuf;
    uint8_t vstore[8];
    uint8_t last;
} DescDev;

typedef struct DescTmp {
    DescDev *parent;
    uint32_t wire;
} DescTmp;

static int desc_tmp_pre_save(void *opaque, FyError **errp)
{
    DescTmp *t = opaque;
    t->wire = t->parent->hidden + 1;
    return 0;
}

static int desc_tmp_post_load(void *opaque, int version_id, FyError **errp)
{
    DescTmp *t = opaque;
    t->parent->hidden = t->wire - 1;
    return 0;
}

static bool always(void *opaque, int version_id) { return true; }

static const VMStateDescription vmstate_sub2_more = {
    .name = "sub2/more", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){ VMSTATE_UINT8(r, Sub2), VMSTATE_END_OF_LIST() },
};

static const VMStateDescription vmstate_sub2 = {
    .name = "sub2", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){ VMSTATE_UINT8(q, Sub2), VMSTATE_END_OF_LIST() },
    .subsections = (const VMStateDescription *const[]){ &vmstate_sub2_more, NULL },
};

static const VMStateDescription vmstate_desc_tmp = {
    .name = "desc/tmp", .version_id = 1, .minimum_version_id = 1,
    .pre_save = desc_tmp_pre_save, .post_load = desc_tmp_post_load,
    .fields = (const VMStateField[]){ VMSTATE_UINT32(wire, DescTmp),
                                      VMSTATE_END_OF_LIST() },
};

static const VMStateDescription vmstate_desc_last = {
    .name = "desc/last", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){ VMSTATE_UINT8(last, DescDev),
                                      VMSTATE_END_OF_LIST() },
};

static const VMStateDescription vmstate_desc = {
    .name = "desc", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_UINT32_ARRAY(a32, DescDev, 4),
        VMSTATE_UNUSED(3),
        VMSTATE_STRUCT(inner, DescDev, vmstate_inner, Inner),
        VMSTATE_UNUSED(2),
        VMSTATE_STRUCT_ARRAY(inners, DescDev, 3, vmstate_inner, Inner),
        VMSTATE_STRUCT_ARRAY(subs, DescDev, 2, vmstate_sub2, Sub2),
        VMSTATE_UINT8(n1, DescDev),
        VMSTATE_VARRAY_UINT8(v1, DescDev, n1, vmstate_info_uint16, uint16_t),
        VMSTATE_UINT8(n0, DescDev),
        VMSTATE_VARRAY_UINT8(v0, DescDev, n0, vmstate_info_uint16, uint16_t),
        VMSTATE_ARRAY_OF_POINTER_TO_STRUCT(ptrs, DescDev, 5, vmstate_elem, Elem),
        /* an array whose presence is decided at run time: never compressed */
        { .name = "tarr", .info = &vmstate_info_uint16, .size = sizeof(uint16_t),
          .num = 2, .flags = VMS_ARRAY, .offset = offsetof(DescDev, tarr),
          .field_exists = always },
        VMSTATE_WITH_TMP(DescDev, DescTmp, vmstate_desc_tmp),
        VMSTATE_UINT32(vlen, DescDev),
        VMSTATE_VBUFFER_UINT32(vbuf, DescDev, vlen, 8),
        VMSTATE_END_OF_LIST(),
    },
    .subsections = (const VMStateDescription *const[]){ &vmstate_desc_last, NULL },
};

static void desc_dev_init(DescDev *d)
{
    memset(d, 0, sizeof(*d));
    for (int i = 0; i < 4; i++)
        d->a32[i] = (uint32_t)(i + 1);
    d->inner = (Inner){ 7, -7 };
    for (int i = 0; i < 3; i++)
        d->inners[i] = (Inner){ (uint32_t)(10 + i), (int16_t)-i };
    d->subs[0] = (Sub2){ 1, 2 };
    d->subs[1] = (Sub2){ 3, 4 };
    d->n1 = 1;
    d->v1[0] = 0x4242;
    d->n0 = 0;
    d->store[0] = (Elem){ 1, 1000 };
    d->store[1] = (Elem){ 2, 2000 };
    d->store[2] = (Elem){ 3, 3000 };
    d->ptrs[0] = &d->store[0];
    d->ptrs[1] = NULL;
    d->ptrs[2] = NULL;
    d->ptrs[3] = &d->store[1];
    d->ptrs[4] = &d->store[2];
    d->tarr[0] = 5;
    d->tarr[1] = 6;
    d->hidden = 41;
    d->vlen = 5;
    d->vbuf = d->vstore;
    memcpy(d->vstore, "\x01\x02\xab\xcd\xef", 5);
    d->last = 9;
}

#define ELEM_DESC "{\"vmsd_name\":\"elem\",\"version\":1,\"fields\":[" \
    "{\"name\":\"tag\",\"type\":\"uint8\",\"size\":1},"                   \
    "{\"name\":\"val\",\"type\":\"uint64\",\"size\":8}]}"
#define INNER_DESC "{\"vmsd_name\":\"inner\",\"version\":1,\"fields\":[" \
    "{\"name\":\"x\",\"type\":\"uint32\",\"size\":4},"                     \
    "{\"name\":\"y\",\"type\":\"int16\",\"size\":2}]}"
#define SUB2_DESC "{\"vmsd_name\":\"sub2\",\"version\":1,\"fields\":["   \
    "{\"name\":\"q\",\"type\":\"uint8\",\"size\":1}],\"subsections\":["   \
    "{\"vmsd_name\":\"sub2/more\",\"version\":1,\"fields\":["             \
    "{\"name\":\"r\",\"type\":\"uint8\",\"size\":1}]}]}"

static const char expected_desc[] =
    "{\"vmsd_name\":\"desc\",\"version\":1,\"fields\":["
    "{\"name\":\"a32\",\"array_len\":4,\"type\":\"uint32\",\"size\":4},"
    "{\"name\":\"unused[0]\",\"type\":\"unused_buffer\",\"size\":3},"
    "{\"name\":\"inner\",\"type\":\"struct\",\"struct\":" INNER_DESC ",\"size\":6},"
    "{\"name\":\"unused[1]\",\"type\":\"unused_buffer\",\"size\":2},"
    "{\"name\":\"inners\",\"array_len\":3,\"type\":\"struct\",\"struct\":" INNER_DESC
    ",\"size\":6},"
    "{\"name\":\"subs\",\"index\":0,\"type\":\"struct\",\"struct\":" SUB2_DESC
    ",\"size\":17},"
    "{\"name\":\"subs\",\"index\":1,\"type\":\"struct\",\"struct\":" SUB2_DESC
    ",\"size\":17},"
    "{\"name\":\"n1\",\"type\":\"uint8\",\"size\":1},"
    "{\"name\":\"v1\",\"type\":\"uint16\",\"size\":2},"
    "{\"name\":\"n0\",\"type\":\"uint8\",\"size\":1},"
    "{\"name\":\"ptrs\",\"type\":\"struct\",\"struct\":" ELEM_DESC ",\"size\":9},"
    "{\"name\":\"ptrs\",\"array_len\":2,\"type\":\"nullptr\",\"size\":1},"
    "{\"name\":\"ptrs\",\"array_len\":2,\"type\":\"struct\",\"struct\":" ELEM_DESC
    ",\"size\":9},"
    "{\"name\":\"tarr\",\"index\":0,\"type\":\"uint16\",\"size\":2},"
    "{\"name\":\"tarr\",\"index\":1,\"type\":\"uint16\",\"size\":2},"
    "{\"name\":\"tmp\",\"type\":\"tmp\",\"vmsd_name\":\"desc/tmp\",\"version\":1,"
    "\"fields\":[{\"name\":\"wire\",\"type\":\"uint32\",\"size\":4}],\"size\":4},"
    "{\"name\":\"vlen\",\"type\":\"uint32\",\"size\":4},"
    "{\"name\":\"vbuf\",\"type\":\"buffer\",\"size\":5}],"
    "\"subsections\":[{\"vmsd_name\":\"desc/last\",\"version\":1,\"fields\":["
    "{\"name\":\"last\",\"type\":\"uint8\",\"size\":1}]}]}";

static void test_vmdesc_shape(void)
{
    DescDev s;
    FyError *err = NULL;
    Bytes b;
    json_t *desc = json_object();

    desc_dev_init(&s);
    /* The caller (savevm) puts the section's name and instance first. */
    json_object_set_new(desc, "name", json_string("desc"));
    json_object_set_new(desc, "instance_id", json_integer(0));
    T_EQ_INT(save_bytes(&vmstate_desc, &s, desc, &b, &err), 0);
    if (err)
        T_FAIL("%s", fy_error_msg(err));
    json_object_del(desc, "name");
    json_object_del(desc, "instance_id");
    char *got = json_dumps(desc, JSON_COMPACT);
    T_EQ_STR(got, expected_desc);
    free(got);

    /* Decoding the stream with the description alone, as
     * analyze-migration.py does, consumes exactly the bytes written. */
    char why[256];
    long used = desc_walk(desc, b.data, b.len, why, sizeof(why));
    if (used < 0)
        T_FAIL("description walk failed: %s", why);
    T_EQ_INT(used, (long)b.len);

    /* And the stream loads back. */
    DescDev d;
    memset(&d, 0, sizeof(d));
    d.ptrs[0] = &d.store[0];
    d.ptrs[3] = &d.store[1];
    d.ptrs[4] = &d.store[2];
    d.vbuf = d.vstore;
    size_t consumed = 0;
    T_EQ_INT(load_bytes(&vmstate_desc, &d, 1, b.data, b.len, &consumed, &err), 0);
    T_EQ_INT(consumed, b.len);
    T_EQ_INT(d.hidden, 41);
    json_decref(desc);
    bytes_free(&b);
    fy_error_free(err);
}

/* The description of the all-kinds device decodes its stream too. */
static void test_vmdesc_allkinds_walk(void)
{
    AllKinds s;
    FyError *err = NULL;
    Bytes b;
    json_t *desc = json_object();
    char why[256];

    allkinds_init(&s);
    allkinds_fill(&s, 3);
    T_EQ_INT(save_bytes(&vmstate_allkinds, &s, desc, &b, &err), 0);
    long used = desc_walk(desc, b.data, b.len, why, sizeof(why));
    if (used < 0)
        T_FAIL("description walk failed: %s", why);
    T_EQ_INT(used, (long)b.len);

    /* Types are QEMU's info names. */
    json_t *fields = json_object_get(desc, "fields");
    size_t i;
    json_t *f;
    int seen = 0;
    json_array_foreach(fields, i, f) {
        const char *name = json_string_value(json_object_get(f, "name"));
        const char *type = json_string_value(json_object_get(f, "type"));
        if (strcmp(name, "cfg_size") == 0) {
            T_EQ_STR(type, "uint32 equal");
            seen++;
        } else if (strcmp(name, "unused") == 0) {
            T_EQ_STR(type, "unused_buffer");
            T_EQ_INT(json_integer_value(json_object_get(f, "size")), 5);
            seen++;
        } else if (strcmp(name, "nullp") == 0) {
            T_EQ_STR(type, "nullptr");
            T_EQ_INT(json_integer_value(json_object_get(f, "size")), 1);
            seen++;
        } else if (strcmp(name, "d") == 0) {
            T_EQ_STR(type, "float64");
            seen++;
        } else if (strcmp(name, "opt") == 0) {
            T_EQ_STR(type, "uint32");
            T_ASSERT(json_object_get(f, "array_len") == NULL);
            seen++;
        }
        T_ASSERT(strcmp(name, "u8 below 200") != 0); /* VALIDATE: no entry */
    }
    T_EQ_INT(seen, 5);
    json_decref(desc);
    allkinds_free(&s);
    bytes_free(&b);
    fy_error_free(err);
}

static void test_to_json_values(void)
{
    DescDev s;
    desc_dev_init(&s);
    json_t *j = vmstate_to_json(&vmstate_desc, &s);
    char *got = json_dumps(j, JSON_COMPACT);
    T_EQ_STR(got,
        "{\"a32\":[1,2,3,4],"
        "\"inner\":{\"x\":7,\"y\":-7},"
        "\"inners\":[{\"x\":10,\"y\":0},{\"x\":11,\"y\":-1},{\"x\":12,\"y\":-2}],"
        "\"subs\":[{\"q\":1,\"sub2/more\":{\"r\":2}},{\"q\":3,\"sub2/more\":{\"r\":4}}],"
        "\"n1\":1,\"v1\":[16962],\"n0\":0,\"v0\":[],"
        "\"ptrs\":[{\"tag\":1,\"val\":1000},null,null,{\"tag\":2,\"val\":2000},"
        "{\"tag\":3,\"val\":3000}],"
        "\"tarr\":[5,6],"
        "\"tmp\":{\"wire\":42},"
        "\"vlen\":5,\"vbuf\":\"0102abcdef\","
        "\"desc/last\":{\"last\":9}}");
    free(got);
    json_decref(j);

    /* A count above the array's capacity is shown, not followed. */
    s.n1 = 200;
    j = vmstate_to_json(&vmstate_desc, &s);
    T_EQ_STR(json_string_value(json_object_get(j, "v1")),
             "<error: count 200 exceeds capacity 4>");
    json_decref(j);

    /* Large uint64, booleans, floats. */
    AllKinds a;
    allkinds_init(&a);
    allkinds_fill(&a, 4);
    a.d = 1.5;
    j = vmstate_to_json(&vmstate_allkinds, &a);
    T_EQ_STR(json_string_value(json_object_get(j, "u64")), "0xfedcba9876543210");
    T_ASSERT(json_is_true(json_object_get(j, "flag")));
    T_ASSERT(json_real_value(json_object_get(j, "d")) == 1.5);
    T_EQ_INT(json_integer_value(json_object_get(j, "i8")), -5);
    T_EQ_STR(json_string_value(json_object_get(j, "buf")), "a0a1a2a3a4a5a6");
    T_ASSERT(json_is_null(json_object_get(j, "nullp")));
    T_ASSERT(json_object_get(j, "unused") == NULL);
    T_ASSERT(json_object_get(json_object_get(j, "allkinds/extra"),
                             "allkinds/extra/deep") != NULL);
    json_decref(j);
    allkinds_free(&a);
}

int main(void)
{
    T_RUN(test_vmdesc_shape);
    T_RUN(test_vmdesc_allkinds_walk);
    T_RUN(test_to_json_values);
    return t_done();
}
