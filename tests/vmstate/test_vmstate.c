/*
 * test_vmstate.c: VMState save/load through a real stream on a memory
 * channel: golden bytes, every field kind round-tripping, versions,
 * subsections, hooks, and the load-side checks with their messages.
 */
#include <stdarg.h>
#include <stdio.h>

#include "allkinds.h"
#include "vmstate-test.h"

/* ---- golden bytes, computed by hand ---- */

typedef struct Golden {
    uint16_t a;
    bool b;
    uint32_t arr[2];
    uint8_t x;
} Golden;

static const VMStateDescription vmstate_golden_sub = {
    .name = "golden/sub",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_UINT8(x, Golden),
        VMSTATE_END_OF_LIST(),
    },
};

static const VMStateDescription vmstate_golden = {
    .name = "golden",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_UINT16(a, Golden),
        VMSTATE_BOOL(b, Golden),
        VMSTATE_UINT32_ARRAY(arr, Golden, 2),
        VMSTATE_END_OF_LIST(),
    },
    .subsections = (const VMStateDescription *const[]){
        &vmstate_golden_sub,
        NULL,
    },
};

static void test_golden_bytes(void)
{
    Golden g = { .a = 0x1234, .b = true, .arr = { 0x01020304, 0xa0b0c0d0 },
                 .x = 0x7f };
    static const uint8_t expected[] = {
        0x12, 0x34,                                     /* a */
        0x01,                                           /* b */
        0x01, 0x02, 0x03, 0x04, 0xa0, 0xb0, 0xc0, 0xd0, /* arr */
        0x05, 0x0a, 'g', 'o', 'l', 'd', 'e', 'n', '/', 's', 'u', 'b',
        0x00, 0x00, 0x00, 0x01,                         /* version */
        0x7f,                                           /* x */
    };
    FyError *err = NULL;
    Bytes b;
    json_t *desc = json_object();

    T_EQ_INT(save_bytes(&vmstate_golden, &g, desc, &b, &err), 0);
    T_ASSERT(err == NULL);
    T_EQ_INT(b.len, sizeof(expected));
    if (b.len == sizeof(expected))
        T_EQ_MEM(b.data, expected, sizeof(expected));

    char *s = json_dumps(desc, JSON_COMPACT);
    T_EQ_STR(s,
        "{\"vmsd_name\":\"golden\",\"version\":1,\"fields\":["
        "{\"name\":\"a\",\"type\":\"uint16\",\"size\":2},"
        "{\"name\":\"b\",\"type\":\"bool\",\"size\":1},"
        "{\"name\":\"arr\",\"array_len\":2,\"type\":\"uint32\",\"size\":4}],"
        "\"subsections\":[{\"vmsd_name\":\"golden/sub\",\"version\":1,\"fields\":["
        "{\"name\":\"x\",\"type\":\"uint8\",\"size\":1}]}]}");
    free(s);

    /* And back: every byte consumed, every value restored. */
    Golden d = { 0 };
    size_t used = 0;
    T_EQ_INT(load_bytes(&vmstate_golden, &d, 1, expected, sizeof(expected), &used,
                        &err), 0);
    T_ASSERT(err == NULL);
    T_EQ_INT(used, sizeof(expected));
    T_EQ_INT(d.a, 0x1234);
    T_EQ_INT(d.b, 1);
    T_EQ_INT(d.arr[0], 0x01020304);
    T_EQ_INT(d.arr[1], 0xa0b0c0d0u);
    T_EQ_INT(d.x, 0x7f);

    json_t *j = vmstate_to_json(&vmstate_golden, &d);
    s = json_dumps(j, JSON_COMPACT);
    T_EQ_STR(s, "{\"a\":4660,\"b\":true,\"arr\":[16909060,2695938256],"
                "\"golden/sub\":{\"x\":127}}");
    free(s);
    json_decref(j);
    json_decref(desc);
    bytes_free(&b);
    fy_error_free(err);
}

/* ---- every field kind ---- */

static void check_allkinds_equal(const AllKinds *s, const AllKinds *d)
{
    json_t *js = vmstate_to_json(&vmstate_allkinds, (void *)s);
    json_t *jd = vmstate_to_json(&vmstate_allkinds, (void *)d);
    T_ASSERT(js && jd);
    if (!json_equal(js, jd)) {
        char *a = json_dumps(js, JSON_COMPACT), *b = json_dumps(jd, JSON_COMPACT);
        T_FAIL("device state differs:\n# src %s\n# dst %s", a, b);
        free(a);
        free(b);
    }
    json_decref(js);
    json_decref(jd);
    /* What JSON cannot show exactly. */
    T_EQ_MEM(&s->d, &d->d, sizeof(double));          /* NaN payload */
    T_ASSERT(signbit(d->af64[0]) && d->af64[0] == 0); /* -0.0 */
    T_EQ_INT(d->hidden, s->hidden);                   /* via WITH_TMP */
}

static void test_roundtrip_allkinds(void)
{
    AllKinds s, d;
    FyError *err = NULL;
    Bytes b;

    allkinds_init(&s);
    allkinds_fill(&s, 1);
    T_EQ_INT(save_bytes(&vmstate_allkinds, &s, NULL, &b, &err), 0);
    T_ASSERT(err == NULL);

    allkinds_init(&d);
    memset(d.vstore, 0xee, sizeof(d.vstore));
    d.opt = 1;
    size_t used = 0;
    T_EQ_INT(load_bytes(&vmstate_allkinds, &d, 2, b.data, b.len, &used, &err), 0);
    if (err)
        T_FAIL("%s", fy_error_msg(err));
    T_EQ_INT(used, b.len);
    check_allkinds_equal(&s, &d);

    /* Details the JSON comparison covers, asserted directly as well. */
    T_EQ_INT(d.i64, -1234567890123456789ll);
    T_EQ_INT(d.u64 >> 32, 0xfedcba98u);
    T_EQ_INT(d.n8, 3);
    T_EQ_INT(d.v8[2], s.v8[2]);
    T_EQ_INT(d.v8[3], 0);
    T_EQ_MEM(d.vstore, s.vstore, 10);
    T_EQ_INT(d.vstore[10], 0xee); /* nothing past vlen */
    T_ASSERT(d.abuf != NULL);
    if (d.abuf)
        T_EQ_MEM(d.abuf, "hello", 5);
    T_EQ_INT(d.elems[1].val, s.elems[1].val);
    T_EQ_INT(d.e_store[0].val, s.e_store[0].val); /* through ptr */
    T_ASSERT(d.nullp == NULL);
    T_EQ_INT(d.e_store[2].tag, 22);               /* through ptrs[3] */
    T_EQ_INT(d.since2, 22);
    T_EQ_INT(d.opt, 0x0badf00d);
    T_ASSERT(d.caps != NULL);
    if (d.caps)
        T_EQ_INT(d.caps[2], 102);
    T_EQ_INT(d.extra, s.extra);
    T_EQ_INT(d.deep, 0x42);
    T_EQ_INT(d.always_v, -99);

    allkinds_free(&s);
    allkinds_free(&d);
    bytes_free(&b);
    fy_error_free(err);
}

/* Optional parts switched off: no subsection, no _TEST field, empty
 * VARRAY and buffers; the destination keeps its own values for them. */
static void test_roundtrip_optional_off(void)
{
    AllKinds s, d, s_on;
    FyError *err = NULL;
    Bytes b, b_on;

    allkinds_init(&s);
    allkinds_fill(&s, 2);
    allkinds_init(&s_on);
    allkinds_fill(&s_on, 2);
    s.extra = 0;
    s.has_opt = false;
    s.n16 = 0;
    s.vlen = 0;
    s.alen = 0;
    s.ncaps = 0;
    T_EQ_INT(save_bytes(&vmstate_allkinds, &s, NULL, &b, &err), 0);
    T_EQ_INT(save_bytes(&vmstate_allkinds, &s_on, NULL, &b_on, &err), 0);
    /* extra (2+14+4+8) + deep (2+19+4+1) + opt 4 + v16 16 + vbuf 10 +
     * abuf 5 + caps 6 */
    T_EQ_INT(b_on.len - b.len, 28 + 26 + 4 + 16 + 10 + 5 + 6);

    allkinds_init(&d);
    d.extra = 77;
    d.deep = 9;
    d.opt = 555;
    d.abuf = malloc(3);
    T_EQ_INT(load_bytes(&vmstate_allkinds, &d, 2, b.data, b.len, NULL, &err), 0);
    if (err)
        T_FAIL("%s", fy_error_msg(err));
    T_EQ_INT(d.extra, 77); /* subsection not sent: untouched */
    T_EQ_INT(d.deep, 9);
    T_EQ_INT(d.opt, 555);  /* _TEST false: untouched */
    T_ASSERT(d.abuf == NULL); /* ALLOC with size 0 releases */
    T_EQ_INT(d.n16, 0);
    allkinds_free(&s);
    allkinds_free(&s_on);
    allkinds_free(&d);
    bytes_free(&b);
    bytes_free(&b_on);
    fy_error_free(err);
}

/* ---- versions ---- */

typedef struct Serial {
    uint8_t lcr;
    uint16_t divider;
    uint32_t fifo_level;  /* since version 3 */
    uint64_t timeout_ns;  /* since version 4 */
} Serial;

#define SERIAL_FIELDS                                                          \
    VMSTATE_UINT8(lcr, Serial), VMSTATE_UINT16(divider, Serial),               \
    VMSTATE_UINT32_V(fifo_level, Serial, 3),                                   \
    VMSTATE_UINT64_V(timeout_ns, Serial, 4), VMSTATE_END_OF_LIST()

static const VMStateDescription vmstate_serial_v4 = {
    .name = "serial", .version_id = 4, .minimum_version_id = 2,
    .fields = (const VMStateField[]){ SERIAL_FIELDS },
};
/* What an older build (version 2) sends: the same fields up to v2. */
static const VMStateDescription vmstate_serial_v2 = {
    .name = "serial", .version_id = 2, .minimum_version_id = 2,
    .fields = (const VMStateField[]){ SERIAL_FIELDS },
};
static const VMStateDescription vmstate_serial_v5 = {
    .name = "serial", .version_id = 5, .minimum_version_id = 2,
    .fields = (const VMStateField[]){ SERIAL_FIELDS },
};

static void test_versions_old_stream(void)
{
    Serial s = { .lcr = 3, .divider = 12, .fifo_level = 8, .timeout_ns = 99 };
    FyError *err = NULL;
    Bytes b2, b4;

    T_EQ_INT(save_bytes(&vmstate_serial_v2, &s, NULL, &b2, &err), 0);
    T_EQ_INT(b2.len, 3); /* lcr + divider only */
    T_EQ_INT(save_bytes(&vmstate_serial_v4, &s, NULL, &b4, &err), 0);
    T_EQ_INT(b4.len, 3 + 4 + 8);

    /* Version 2 stream into the version 4 description: v3/v4 fields keep
     * their local defaults. */
    Serial d = { .fifo_level = 1, .timeout_ns = 2 };
    size_t used = 0;
    T_EQ_INT(load_bytes(&vmstate_serial_v4, &d, 2, b2.data, b2.len, &used, &err), 0);
    T_ASSERT(err == NULL);
    T_EQ_INT(used, 3);
    T_EQ_INT(d.lcr, 3);
    T_EQ_INT(d.divider, 12);
    T_EQ_INT(d.fifo_level, 1);
    T_EQ_INT(d.timeout_ns, 2);

    /* Version 4 stream: everything. */
    Serial d4 = { 0 };
    T_EQ_INT(load_bytes(&vmstate_serial_v4, &d4, 4, b4.data, b4.len, &used, &err), 0);
    T_EQ_INT(used, b4.len);
    T_EQ_INT(d4.fifo_level, 8);
    T_EQ_INT(d4.timeout_ns, 99);
    bytes_free(&b2);
    bytes_free(&b4);
    fy_error_free(err);
}

static void test_versions_refused(void)
{
    Serial s = { .lcr = 1 }, d = { 0 };
    FyError *err = NULL;
    Bytes b;

    T_EQ_INT(save_bytes(&vmstate_serial_v5, &s, NULL, &b, &err), 0);
    T_EQ_INT(load_bytes(&vmstate_serial_v4, &d, 5, b.data, b.len, NULL, &err), -1);
    T_EQ_STR(fy_error_msg(err), "device 'serial': stream version 5 is newer than "
                                "supported 4 (stream offset 0)");
    T_EQ_INT(d.lcr, 0); /* nothing loaded */
    fy_error_clear(&err);

    T_EQ_INT(load_bytes(&vmstate_serial_v4, &d, 1, b.data, b.len, NULL, &err), -1);
    T_EQ_STR(fy_error_msg(err), "device 'serial': stream version 1 is older than "
                                "minimum 2 (stream offset 0)");
    fy_error_clear(&err);
    /* errp may be NULL: the failure still shows in the return value. */
    T_EQ_INT(load_bytes(&vmstate_serial_v4, &d, 9, b.data, b.len, NULL, NULL), -1);
    bytes_free(&b);
}

/* ---- subsections ---- */

typedef struct Dev {
    uint32_t a;
    uint32_t s1;
    uint32_t s2;
    uint32_t s3;
} Dev;

static bool dev_s1_needed(void *opaque) { return ((Dev *)opaque)->s1 != 0; }

static const VMStateDescription vmstate_dev_s1 = {
    .name = "dev/s1", .version_id = 1, .minimum_version_id = 1,
    .needed = dev_s1_needed,
    .fields = (const VMStateField[]){ VMSTATE_UINT32(s1, Dev), VMSTATE_END_OF_LIST() },
};
static const VMStateDescription vmstate_dev_s2_v3 = {
    .name = "dev/s2", .version_id = 3, .minimum_version_id = 1,
    .fields = (const VMStateField[]){ VMSTATE_UINT32(s2, Dev), VMSTATE_END_OF_LIST() },
};
static const VMStateDescription vmstate_dev_s2_v2 = {
    .name = "dev/s2", .version_id = 2, .minimum_version_id = 1,
    .fields = (const VMStateField[]){ VMSTATE_UINT32(s2, Dev), VMSTATE_END_OF_LIST() },
};
static const VMStateDescription vmstate_dev_extra = {
    .name = "dev/extra", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){ VMSTATE_UINT32(s3, Dev), VMSTATE_END_OF_LIST() },
};

static const VMStateField dev_fields[] = {
    VMSTATE_UINT32(a, Dev), VMSTATE_END_OF_LIST(),
};

/* Source: knows s1, s2 (v3) and extra. */
static const VMStateDescription vmstate_dev_src = {
    .name = "dev", .version_id = 1, .minimum_version_id = 1, .fields = dev_fields,
    .subsections = (const VMStateDescription *const[]){
        &vmstate_dev_s1, &vmstate_dev_s2_v3, &vmstate_dev_extra, NULL },
};
/* Destination: knows s1 and s2 only. */
static const VMStateDescription vmstate_dev_dst = {
    .name = "dev", .version_id = 1, .minimum_version_id = 1, .fields = dev_fields,
    .subsections = (const VMStateDescription *const[]){
        &vmstate_dev_s1, &vmstate_dev_s2_v3, NULL },
};
/* Destination with an older s2. */
static const VMStateDescription vmstate_dev_dst_old_s2 = {
    .name = "dev", .version_id = 1, .minimum_version_id = 1, .fields = dev_fields,
    .subsections = (const VMStateDescription *const[]){
        &vmstate_dev_s1, &vmstate_dev_s2_v2, NULL },
};
static const VMStateDescription vmstate_dev_s2_only = {
    .name = "dev", .version_id = 1, .minimum_version_id = 1, .fields = dev_fields,
    .subsections = (const VMStateDescription *const[]){ &vmstate_dev_s2_v3, NULL },
};

static const VMStateDescription vmstate_no_subs = {
    .name = "plain", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){ VMSTATE_UINT16(a, Golden),
                                      VMSTATE_END_OF_LIST() },
    .subsections = (const VMStateDescription *const[]){ NULL },
};

static void test_subsection_needed(void)
{
    Dev s = { .a = 1, .s1 = 0, .s2 = 2 };
    FyError *err = NULL;
    Bytes b;

    /* s1 not needed: only a, then s2 (always: no needed()). */
    T_EQ_INT(save_bytes(&vmstate_dev_s2_only, &s, NULL, &b, &err), 0);
    T_EQ_INT(b.len, 4 + (1 + 1 + 6 + 4 + 4));
    bytes_free(&b);
    json_t *desc = json_object();
    T_EQ_INT(save_bytes(&vmstate_dev_dst, &s, desc, &b, &err), 0);
    T_EQ_INT(b.len, 4 + (1 + 1 + 6 + 4 + 4));
    T_EQ_INT(b.data[4], 0x05);
    T_EQ_MEM(b.data + 6, "dev/s2", 6);
    T_EQ_INT(json_array_size(json_object_get(desc, "subsections")), 1);
    json_decref(desc);

    Dev d = { .s1 = 1234 };
    T_EQ_INT(load_bytes(&vmstate_dev_dst, &d, 1, b.data, b.len, NULL, &err), 0);
    T_EQ_INT(d.s1, 1234); /* not sent, untouched */
    T_EQ_INT(d.s2, 2);
    bytes_free(&b);

    /* Needed: sent, loaded. */
    s.s1 = 11;
    T_EQ_INT(save_bytes(&vmstate_dev_dst, &s, NULL, &b, &err), 0);
    T_EQ_INT(b.len, 4 + 16 + 16);
    T_EQ_INT(load_bytes(&vmstate_dev_dst, &d, 1, b.data, b.len, NULL, &err), 0);
    T_EQ_INT(d.s1, 11);
    bytes_free(&b);

    /* No subsection needed at all: no "subsections" in the description. */
    Golden g = { 0 };
    desc = json_object();
    T_EQ_INT(save_bytes(&vmstate_no_subs, &g, desc, &b, &err), 0);
    T_ASSERT(json_object_get(desc, "subsections") == NULL);
    json_decref(desc);
    bytes_free(&b);
    fy_error_free(err);
}

static const VMStateDescription vmstate_dev_bare = {
    .name = "dev", .version_id = 1, .minimum_version_id = 1,
    .fields = dev_fields,
};

static void test_subsection_unknown(void)
{
    Dev s = { .a = 1, .s1 = 5, .s2 = 6, .s3 = 7 }, d = { 0 };
    FyError *err = NULL;
    Bytes b;

    T_EQ_INT(save_bytes(&vmstate_dev_src, &s, NULL, &b, &err), 0);
    T_EQ_INT(load_bytes(&vmstate_dev_dst, &d, 1, b.data, b.len, NULL, &err), -1);
    T_EQ_STR(fy_error_msg(err), "device 'dev': VM subsection 'dev/extra' in 'dev' "
                                "does not exist (stream offset 36)");
    T_EQ_INT(d.s2, 6); /* the known ones before it loaded */
    fy_error_clear(&err);

    /* A subsection the destination does not know, on a device with no
     * subsections at all. */
    T_EQ_INT(load_bytes(&vmstate_dev_bare, &d, 1, b.data, b.len, NULL, &err), -1);
    T_CONTAINS(fy_error_msg(err), "VM subsection 'dev/s1' in 'dev' does not exist");
    fy_error_free(err);
    bytes_free(&b);
}

static void test_subsection_bad_prefix(void)
{
    /* a = 1, then a subsection named for another device. */
    static const uint8_t stream[] = {
        0, 0, 0, 1,
        0x05, 7, 'o', 't', 'h', 'e', 'r', '/', 'x', 0, 0, 0, 1, 0, 0, 0, 9,
    };
    Dev d = { 0 };
    FyError *err = NULL;

    T_EQ_INT(load_bytes(&vmstate_dev_dst, &d, 1, stream, sizeof(stream), NULL, &err),
             -1);
    T_EQ_STR(fy_error_msg(err), "device 'dev': VM subsection 'other/x' is not one "
                                "of 'dev': its name must start with 'dev/' "
                                "(stream offset 4)");
    fy_error_clear(&err);

    /* "devx/..." shares the letters but not the "dev/" prefix. */
    static const uint8_t stream2[] = {
        0, 0, 0, 1, 0x05, 6, 'd', 'e', 'v', 'x', '/', 'a', 0, 0, 0, 1,
    };
    T_EQ_INT(load_bytes(&vmstate_dev_dst, &d, 1, stream2, sizeof(stream2), NULL,
                        &err), -1);
    T_CONTAINS(fy_error_msg(err), "'devx/a' is not one of 'dev'");
    fy_error_free(err);
}

static const VMStateDescription vmstate_bad_sub = {
    .name = "devx", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){ VMSTATE_UINT32(s1, Dev),
                                      VMSTATE_END_OF_LIST() },
};
static const VMStateDescription vmstate_bad_parent = {
    .name = "dev", .version_id = 1, .minimum_version_id = 1,
    .fields = dev_fields,
    .subsections = (const VMStateDescription *const[]){ &vmstate_bad_sub, NULL },
};

static void test_subsection_bad_name_on_save(void)
{
    Dev s = { 0 };
    FyError *err = NULL;
    Bytes b;

    T_EQ_INT(save_bytes(&vmstate_bad_parent, &s, NULL, &b, &err), -1);
    T_CONTAINS(fy_error_msg(err), "subsection 'devx' of 'dev' must be named 'dev/...'");
    T_EQ_INT(b.len, 0); /* refused before writing anything */
    bytes_free(&b);
    fy_error_free(err);
}

static void test_subsection_version(void)
{
    Dev s = { .a = 1, .s2 = 6 }, d = { 0 };
    FyError *err = NULL;
    Bytes b;

    T_EQ_INT(save_bytes(&vmstate_dev_s2_only, &s, NULL, &b, &err), 0);
    T_EQ_INT(load_bytes(&vmstate_dev_dst_old_s2, &d, 1, b.data, b.len, NULL, &err),
             -1);
    T_EQ_STR(fy_error_msg(err), "device 'dev' subsection 'dev/s2': stream version 3 "
                                "is newer than supported 2 (stream offset 16)");
    fy_error_free(err);
    bytes_free(&b);
}

/* Nested subsections, and a sibling whose name extends another's ("n/a" and
 * "n/ab"): after "n/a" and its child, "n/ab" belongs to "n", not "n/a". */
typedef struct Nest {
    uint8_t v, a, az, ab;
} Nest;

static const VMStateDescription vmstate_n_a_z = {
    .name = "n/a/z", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){ VMSTATE_UINT8(az, Nest), VMSTATE_END_OF_LIST() },
};
static const VMStateDescription vmstate_n_a = {
    .name = "n/a", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){ VMSTATE_UINT8(a, Nest), VMSTATE_END_OF_LIST() },
    .subsections = (const VMStateDescription *const[]){ &vmstate_n_a_z, NULL },
};
static const VMStateDescription vmstate_n_ab = {
    .name = "n/ab", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){ VMSTATE_UINT8(ab, Nest), VMSTATE_END_OF_LIST() },
};
static const VMStateDescription vmstate_n = {
    .name = "n", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){ VMSTATE_UINT8(v, Nest), VMSTATE_END_OF_LIST() },
    .subsections = (const VMStateDescription *const[]){ &vmstate_n_a, &vmstate_n_ab,
                                                        NULL },
};

static void test_subsection_nested(void)
{
    Nest s = { 1, 2, 3, 4 }, d = { 0 };
    FyError *err = NULL;
    Bytes b;
    json_t *desc = json_object();

    T_EQ_INT(save_bytes(&vmstate_n, &s, desc, &b, &err), 0);
    /* v | 05 03 "n/a" v1 a | 05 05 "n/a/z" v1 az | 05 04 "n/ab" v1 ab */
    static const uint8_t expected[] = {
        1,
        5, 3, 'n', '/', 'a', 0, 0, 0, 1, 2,
        5, 5, 'n', '/', 'a', '/', 'z', 0, 0, 0, 1, 3,
        5, 4, 'n', '/', 'a', 'b', 0, 0, 0, 1, 4,
    };
    T_EQ_INT(b.len, sizeof(expected));
    if (b.len == sizeof(expected))
        T_EQ_MEM(b.data, expected, sizeof(expected));
    size_t used = 0;
    T_EQ_INT(load_bytes(&vmstate_n, &d, 1, b.data, b.len, &used, &err), 0);
    if (err)
        T_FAIL("%s", fy_error_msg(err));
    T_EQ_INT(used, b.len);
    T_EQ_INT(d.a, 2);
    T_EQ_INT(d.az, 3);
    T_EQ_INT(d.ab, 4);

    char *s_desc = json_dumps(desc, JSON_COMPACT);
    T_EQ_STR(s_desc,
        "{\"vmsd_name\":\"n\",\"version\":1,\"fields\":[{\"name\":\"v\",\"type\":"
        "\"uint8\",\"size\":1}],\"subsections\":[{\"vmsd_name\":\"n/a\",\"version\":1,"
        "\"fields\":[{\"name\":\"a\",\"type\":\"uint8\",\"size\":1}],\"subsections\":"
        "[{\"vmsd_name\":\"n/a/z\",\"version\":1,\"fields\":[{\"name\":\"az\","
        "\"type\":\"uint8\",\"size\":1}]}]},{\"vmsd_name\":\"n/ab\",\"version\":1,"
        "\"fields\":[{\"name\":\"ab\",\"type\":\"uint8\",\"size\":1}]}]}");
    free(s_desc);
    json_decref(desc);
    bytes_free(&b);
    fy_error_free(err);
}

/* ---- hooks ---- */

typedef struct Hooked {
    uint32_t a;
    uint32_t s;
    uint16_t n;
    uint8_t arr[4];
    bool fail_sub_pre_save;
    bool fail_post_load;
    char log[512];
} Hooked;

static void hlog(Hooked *h, const char *fmt, ...) FY_PRINTF(2, 3);
static void hlog(Hooked *h, const char *fmt, ...)
{
    size_t used = strlen(h->log);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->log + used, sizeof(h->log) - used, fmt, ap);
    va_end(ap);
}

static int h_pre_save(void *o, FyError **errp) { hlog(o, "pre_save(dev) "); return 0; }
static int h_post_save(void *o, FyError **errp) { hlog(o, "post_save(dev) "); return 0; }
static int h_pre_load(void *o, FyError **errp)
{
    hlog(o, "pre_load(dev a=%u) ", ((Hooked *)o)->a);
    return 0;
}
static int h_post_load(void *o, int v, FyError **errp)
{
    Hooked *h = o;
    hlog(h, "post_load(dev s=%u v=%d) ", h->s, v);
    if (h->fail_post_load) {
        fy_error_setg(errp, "state is inconsistent");
        return -1;
    }
    return 0;
}
static int hs_pre_save(void *o, FyError **errp)
{
    Hooked *h = o;
    hlog(h, "pre_save(sub) ");
    if (h->fail_sub_pre_save)
        return -5; /* without a message */
    return 0;
}
static int hs_post_save(void *o, FyError **errp) { hlog(o, "post_save(sub) "); return 0; }
static int hs_pre_load(void *o, FyError **errp)
{
    hlog(o, "pre_load(sub a=%u) ", ((Hooked *)o)->a);
    return 0;
}
static int hs_post_load(void *o, int v, FyError **errp)
{
    hlog(o, "post_load(sub s=%u v=%d) ", ((Hooked *)o)->s, v);
    return 0;
}

static const VMStateDescription vmstate_hooked_sub = {
    .name = "hooked/sub", .version_id = 1, .minimum_version_id = 1,
    .pre_save = hs_pre_save, .post_save = hs_post_save,
    .pre_load = hs_pre_load, .post_load = hs_post_load,
    .fields = (const VMStateField[]){ VMSTATE_UINT32(s, Hooked), VMSTATE_END_OF_LIST() },
};

static const VMStateDescription vmstate_hooked = {
    .name = "hooked", .version_id = 3, .minimum_version_id = 1,
    .pre_save = h_pre_save, .post_save = h_post_save,
    .pre_load = h_pre_load, .post_load = h_post_load,
    .fields = (const VMStateField[]){
        VMSTATE_UINT32(a, Hooked),
        VMSTATE_UINT16(n, Hooked),
        VMSTATE_VARRAY_UINT16(arr, Hooked, n, vmstate_info_uint8, uint8_t),
        VMSTATE_END_OF_LIST(),
    },
    .subsections = (const VMStateDescription *const[]){ &vmstate_hooked_sub, NULL },
};

static void test_hook_order(void)
{
    Hooked s = { .a = 7, .s = 9, .n = 2 }, d = { 0 };
    FyError *err = NULL;
    Bytes b;

    T_EQ_INT(save_bytes(&vmstate_hooked, &s, NULL, &b, &err), 0);
    T_EQ_STR(s.log, "pre_save(dev) pre_save(sub) post_save(sub) post_save(dev) ");
    T_EQ_INT(load_bytes(&vmstate_hooked, &d, 3, b.data, b.len, NULL, &err), 0);
    /* pre_load before any field; the subsection after the fields; the
     * device's post_load after the subsection. */
    T_EQ_STR(d.log, "pre_load(dev a=0) pre_load(sub a=7) post_load(sub s=9 v=1) "
                    "post_load(dev s=9 v=3) ");
    bytes_free(&b);
    fy_error_free(err);
}

static void test_hook_failures(void)
{
    FyError *err = NULL;
    Bytes b;

    /* A field fails on save (count above capacity): post_save still runs. */
    Hooked s = { .a = 7, .n = 5 };
    T_EQ_INT(save_bytes(&vmstate_hooked, &s, NULL, &b, &err), -1);
    T_EQ_STR(fy_error_msg(err), "device 'hooked' field 'arr': count 5 exceeds "
                                "capacity 4");
    T_EQ_STR(s.log, "pre_save(dev) post_save(dev) ");
    T_EQ_INT(b.len, 6); /* a and n, nothing of arr */
    bytes_free(&b);
    fy_error_clear(&err);

    /* The subsection's pre_save fails: the device's post_save still runs;
     * the subsection's does not (its pre_save did not complete). */
    Hooked s2 = { .a = 7, .n = 1, .fail_sub_pre_save = true };
    T_EQ_INT(save_bytes(&vmstate_hooked, &s2, NULL, &b, &err), -1);
    T_EQ_STR(fy_error_msg(err), "device 'hooked' subsection 'hooked/sub': pre_save "
                                "hook failed (-5)");
    T_EQ_STR(s2.log, "pre_save(dev) pre_save(sub) post_save(dev) ");
    bytes_free(&b);
    fy_error_clear(&err);

    /* post_load fails: its message, with where the stream was. */
    Hooked s3 = { .a = 1, .s = 2 }, d = { .fail_post_load = true };
    T_EQ_INT(save_bytes(&vmstate_hooked, &s3, NULL, &b, &err), 0);
    T_EQ_INT(load_bytes(&vmstate_hooked, &d, 3, b.data, b.len, NULL, &err), -1);
    char want[128];
    snprintf(want, sizeof(want), "device 'hooked': post_load: state is inconsistent "
             "(stream offset %zu)", b.len);
    T_EQ_STR(fy_error_msg(err), want);
    bytes_free(&b);
    fy_error_free(err);
}

/* ---- load-side checks ---- */

typedef struct Checked {
    uint8_t level;
    uint32_t size;
} Checked;

static bool level_ok(void *opaque, int version_id)
{
    return ((Checked *)opaque)->level <= 10;
}

static const VMStateDescription vmstate_checked = {
    .name = "checked", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_UINT8(level, Checked),
        VMSTATE_VALIDATE("level at most 10", level_ok),
        VMSTATE_UINT32_EQUAL(size, Checked, "the ROM sizes must match"),
        VMSTATE_END_OF_LIST(),
    },
};

static void test_validate_and_equal(void)
{
    FyError *err = NULL;
    Checked d = { .size = 4 };

    static const uint8_t bad_level[] = { 11, 0, 0, 0, 4 };
    T_EQ_INT(load_bytes(&vmstate_checked, &d, 1, bad_level, sizeof(bad_level), NULL,
                        &err), -1);
    T_EQ_STR(fy_error_msg(err), "device 'checked': validation 'level at most 10' "
                                "failed (stream offset 1)");
    fy_error_clear(&err);

    static const uint8_t bad_size[] = { 3, 0, 0, 0, 5 };
    T_EQ_INT(load_bytes(&vmstate_checked, &d, 1, bad_size, sizeof(bad_size), NULL,
                        &err), -1);
    T_EQ_STR(fy_error_msg(err), "device 'checked' field 'size': stream has 5, local "
                                "is 4. the ROM sizes must match (stream offset 1)");
    T_EQ_INT(d.size, 4); /* the local value stays */
    fy_error_clear(&err);

    static const uint8_t good[] = { 3, 0, 0, 0, 4 };
    T_EQ_INT(load_bytes(&vmstate_checked, &d, 1, good, sizeof(good), NULL, &err), 0);
    T_EQ_INT(d.level, 3);

    /* Save refuses a state that fails its own validation. */
    Checked s = { .level = 50 };
    Bytes b;
    T_EQ_INT(save_bytes(&vmstate_checked, &s, NULL, &b, &err), -1);
    T_CONTAINS(fy_error_msg(err), "validation 'level at most 10' failed on the source");
    bytes_free(&b);
    fy_error_free(err);
}

typedef struct Canary {
    uint16_t n;
    uint8_t arr[16];
    uint32_t canary;
    uint32_t vlen;
    uint8_t *vbuf;
    uint8_t store[8];
    uint32_t canary2;
    uint32_t alen;
    uint8_t *abuf;
} Canary;

static const VMStateDescription vmstate_canary = {
    .name = "canary", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_UINT16(n, Canary),
        VMSTATE_VARRAY_UINT16(arr, Canary, n, vmstate_info_uint8, uint8_t),
        VMSTATE_UINT32(vlen, Canary),
        VMSTATE_VBUFFER_UINT32(vbuf, Canary, vlen, 8),
        VMSTATE_UINT32(alen, Canary),
        VMSTATE_VBUFFER_ALLOC_UINT32(abuf, Canary, alen, 1024),
        VMSTATE_END_OF_LIST(),
    },
};

static void canary_init(Canary *c)
{
    memset(c, 0, sizeof(*c));
    memset(c->arr, 0xaa, sizeof(c->arr));
    memset(c->store, 0xbb, sizeof(c->store));
    c->canary = c->canary2 = 0xc0ffee00;
    c->vbuf = c->store;
}

static void test_varray_over_max(void)
{
    FyError *err = NULL;
    Canary d;
    uint8_t stream[2 + 300 + 64];

    /* count 300 for a 16-element array, followed by 300 bytes of 0x55 */
    memset(stream, 0x55, sizeof(stream));
    stream[0] = 300 >> 8;
    stream[1] = 300 & 0xff;
    canary_init(&d);
    size_t used = 0;
    T_EQ_INT(load_bytes(&vmstate_canary, &d, 1, stream, sizeof(stream), &used, &err),
             -1);
    T_EQ_STR(fy_error_msg(err), "device 'canary' field 'arr': count 300 exceeds "
                                "capacity 16 (stream offset 2)");
    T_EQ_INT(used, 2); /* refused before reading any element */
    for (int i = 0; i < 16; i++)
        T_EQ_INT(d.arr[i], 0xaa);
    T_EQ_INT(d.canary, 0xc0ffee00);
    fy_error_clear(&err);

    /* VBUFFER: 9 bytes into 8 of storage. */
    static const uint8_t vb[] = { 0, 1, 7, 0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    canary_init(&d);
    T_EQ_INT(load_bytes(&vmstate_canary, &d, 1, vb, sizeof(vb), NULL, &err), -1);
    T_EQ_STR(fy_error_msg(err), "device 'canary' field 'vbuf': size 9 exceeds "
                                "capacity 8 (stream offset 7)");
    T_EQ_INT(d.store[0], 0xbb);
    T_EQ_INT(d.canary2, 0xc0ffee00);
    fy_error_clear(&err);

    /* VBUFFER_ALLOC: a 4 GiB size is refused before any allocation. */
    static const uint8_t ab[] = { 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1, 2 };
    canary_init(&d);
    T_EQ_INT(load_bytes(&vmstate_canary, &d, 1, ab, sizeof(ab), NULL, &err), -1);
    T_EQ_STR(fy_error_msg(err), "device 'canary' field 'abuf': size 4294967295 "
                                "exceeds capacity 1024 (stream offset 10)");
    T_ASSERT(d.abuf == NULL);
    fy_error_free(err);
}

/* Every _EQUAL kind: equal values load, a mismatch names both values. */
typedef struct Eq {
    uint8_t e8;
    uint16_t e16;
    uint32_t e32;
    uint64_t e64;
    int32_t ei32;
} Eq;

static const VMStateDescription vmstate_eq = {
    .name = "eq", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_UINT8_EQUAL(e8, Eq, NULL),
        VMSTATE_UINT16_EQUAL(e16, Eq, NULL),
        VMSTATE_UINT32_EQUAL(e32, Eq, NULL),
        VMSTATE_UINT64_EQUAL(e64, Eq, NULL),
        VMSTATE_INT32_EQUAL(ei32, Eq, "check -smp"),
        VMSTATE_END_OF_LIST(),
    },
};

static void test_equal_kinds(void)
{
    Eq s = { 200, 60000, 4000000000u, 0xffffffffffffffffull, -5 };
    Eq d = s;
    FyError *err = NULL;
    Bytes b;
    json_t *desc = json_object();

    T_EQ_INT(save_bytes(&vmstate_eq, &s, desc, &b, &err), 0);
    T_EQ_INT(b.len, 1 + 2 + 4 + 8 + 4);
    /* QEMU's type names, including its "int64 equal" for the uint64 one. */
    static const char *types[] = { "uint8 equal", "uint16 equal", "uint32 equal",
                                   "int64 equal", "int32 equal" };
    for (int i = 0; i < 5; i++)
        T_EQ_STR(json_string_value(json_object_get(
                     json_array_get(json_object_get(desc, "fields"), (size_t)i),
                     "type")), types[i]);
    json_decref(desc);
    T_EQ_INT(load_bytes(&vmstate_eq, &d, 1, b.data, b.len, NULL, &err), 0);

    d.ei32 = 4;
    T_EQ_INT(load_bytes(&vmstate_eq, &d, 1, b.data, b.len, NULL, &err), -1);
    T_EQ_STR(fy_error_msg(err), "device 'eq' field 'ei32': stream has -5, local is "
                                "4. check -smp (stream offset 15)");
    fy_error_clear(&err);
    d.ei32 = -5;
    d.e64 = 1;
    T_EQ_INT(load_bytes(&vmstate_eq, &d, 1, b.data, b.len, NULL, &err), -1);
    T_EQ_STR(fy_error_msg(err), "device 'eq' field 'e64': stream has "
                                "18446744073709551615, local is 1 (stream offset 7)");
    fy_error_clear(&err);
    d.e64 = s.e64;
    d.e16 = 1;
    T_EQ_INT(load_bytes(&vmstate_eq, &d, 1, b.data, b.len, NULL, &err), -1);
    T_CONTAINS(fy_error_msg(err), "field 'e16': stream has 60000, local is 1");
    fy_error_free(err);
    bytes_free(&b);
}

/* The loader stops at the end of the device and leaves what follows (here a
 * section footer) unread; errp may be NULL on both sides. */
static void test_stops_at_device_end(void)
{
    Dev s = { .a = 1, .s1 = 2, .s2 = 3 }, d = { 0 };
    Bytes b;

    T_EQ_INT(save_bytes(&vmstate_dev_dst, &s, NULL, &b, NULL), 0);
    uint8_t *buf = malloc(b.len + 5);
    memcpy(buf, b.data, b.len);
    memcpy(buf + b.len, "\x7e\x00\x00\x00\x02", 5);
    size_t used = 0;
    T_EQ_INT(load_bytes(&vmstate_dev_dst, &d, 1, buf, b.len + 5, &used, NULL), 0);
    T_EQ_INT(used, b.len);
    T_EQ_INT(d.s2, 3);
    free(buf);
    bytes_free(&b);
}

/* ---- NULL struct pointers ---- */

typedef struct Ptrs {
    Elem *p;
    Elem *arr[3];
    Elem store[4];
} Ptrs;

static const VMStateDescription vmstate_ptrs = {
    .name = "ptrs", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_STRUCT_POINTER(p, Ptrs, vmstate_elem, Elem),
        VMSTATE_ARRAY_OF_POINTER_TO_STRUCT(arr, Ptrs, 3, vmstate_elem, Elem),
        VMSTATE_END_OF_LIST(),
    },
};

static void test_null_pointers(void)
{
    FyError *err = NULL;
    Bytes b;
    Ptrs s = { 0 };

    s.p = NULL;
    s.arr[0] = &s.store[0];
    s.arr[1] = NULL;
    s.arr[2] = &s.store[2];
    s.store[0] = (Elem){ 1, 100 };
    s.store[2] = (Elem){ 3, 300 };
    T_EQ_INT(save_bytes(&vmstate_ptrs, &s, NULL, &b, &err), 0);
    static const uint8_t expected[] = {
        0x30,
        1, 0, 0, 0, 0, 0, 0, 0, 100,
        0x30,
        3, 0, 0, 0, 0, 0, 0, 1, 44,
    };
    T_EQ_INT(b.len, sizeof(expected));
    if (b.len == sizeof(expected))
        T_EQ_MEM(b.data, expected, sizeof(expected));

    /* Markers into NULL slots: fine. */
    Ptrs d = { 0 };
    d.arr[0] = &d.store[0];
    d.arr[2] = &d.store[2];
    T_EQ_INT(load_bytes(&vmstate_ptrs, &d, 1, b.data, b.len, NULL, &err), 0);
    T_EQ_INT(d.store[2].val, 300);

    /* Data into a NULL slot: refused, naming the element. */
    Ptrs d2 = { 0 };
    d2.arr[0] = &d2.store[0];
    d2.arr[1] = NULL;
    d2.arr[2] = NULL;
    T_EQ_INT(load_bytes(&vmstate_ptrs, &d2, 1, b.data, b.len, NULL, &err), -1);
    T_EQ_STR(fy_error_msg(err), "device 'ptrs' field 'arr[2]': stream has data (byte "
                                "0x03) where the local pointer is NULL; expected the "
                                "NULL marker 0x30 (stream offset 11)");
    fy_error_clear(&err);

    /* STRUCT_POINTER with data for a NULL destination pointer. */
    s.p = &s.store[3];
    s.store[3] = (Elem){ 9, 9 };
    bytes_free(&b);
    T_EQ_INT(save_bytes(&vmstate_ptrs, &s, NULL, &b, &err), 0);
    Ptrs d3 = { 0 };
    T_EQ_INT(load_bytes(&vmstate_ptrs, &d3, 1, b.data, b.len, NULL, &err), -1);
    T_CONTAINS(fy_error_msg(err), "device 'ptrs' field 'p': stream has data (byte "
                                  "0x09) where the local pointer is NULL");
    bytes_free(&b);
    fy_error_free(err);
}

/* ---- error context ---- */

typedef struct Reg {
    uint32_t val;
    uint8_t kind;
} Reg;

typedef struct Cpu {
    Reg regs[4];
} Cpu;

static const VMStateDescription vmstate_reg = {
    .name = "reg", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_UINT32(val, Reg),
        VMSTATE_UINT8_EQUAL(kind, Reg, NULL),
        VMSTATE_END_OF_LIST(),
    },
};

static const VMStateDescription vmstate_cpu = {
    .name = "cpu", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_STRUCT_ARRAY(regs, Cpu, 4, vmstate_reg, Reg),
        VMSTATE_END_OF_LIST(),
    },
};

static void test_error_context(void)
{
    FyError *err = NULL;
    Bytes b;
    Cpu s = { { { 1, 1 }, { 2, 1 }, { 3, 1 }, { 4, 9 } } };
    Cpu d = { { { 0, 1 }, { 0, 1 }, { 0, 1 }, { 0, 1 } } };

    T_EQ_INT(save_bytes(&vmstate_cpu, &s, NULL, &b, &err), 0);
    T_EQ_INT(b.len, 20);
    T_EQ_INT(load_bytes(&vmstate_cpu, &d, 1, b.data, b.len, NULL, &err), -1);
    T_EQ_STR(fy_error_msg(err), "device 'cpu' field 'regs[3]': struct 'reg' field "
                                "'kind': stream has 9, local is 1 (stream offset 19)");
    fy_error_clear(&err);

    /* The stream ends inside regs[3].val: the error names it and where the
     * value began. */
    T_EQ_INT(load_bytes(&vmstate_cpu, &d, 1, b.data, 17, NULL, &err), -1);
    T_CONTAINS(fy_error_msg(err), "device 'cpu' field 'regs[3]': struct 'reg' field "
                                  "'val': ");
    T_CONTAINS(fy_error_msg(err), "(stream offset 15)");
    bytes_free(&b);
    fy_error_free(err);
}

/* ---- recursion bound ---- */

typedef struct Node Node;
struct Node {
    uint8_t v;
    Node *next;
};

static const VMStateDescription vmstate_node;
static const VMStateDescription vmstate_node = {
    .name = "node", .version_id = 1, .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_UINT8(v, Node),
        VMSTATE_STRUCT_POINTER(next, Node, vmstate_node, Node),
        VMSTATE_END_OF_LIST(),
    },
};

static void test_depth_bound(void)
{
    enum { N = 100 };
    Node *nodes = calloc(N, sizeof(Node));
    FyError *err = NULL;
    Bytes b;

    for (int i = 0; i < N; i++) {
        nodes[i].v = (uint8_t)i;
        nodes[i].next = i + 1 < N ? &nodes[i + 1] : NULL;
    }
    /* A short list round-trips. */
    nodes[9].next = NULL;
    T_EQ_INT(save_bytes(&vmstate_node, &nodes[0], NULL, &b, &err), 0);
    T_EQ_INT(b.len, 11);
    bytes_free(&b);

    /* 100 levels: refused, not a stack overflow. */
    nodes[9].next = &nodes[10];
    T_EQ_INT(save_bytes(&vmstate_node, &nodes[0], NULL, &b, &err), -1);
    T_CONTAINS(fy_error_msg(err), "nested more than 64 levels deep");
    bytes_free(&b);
    fy_error_clear(&err);

    uint8_t stream[N + 1];
    for (int i = 0; i < N; i++)
        stream[i] = (uint8_t)i;
    stream[N] = 0x30;
    T_EQ_INT(load_bytes(&vmstate_node, &nodes[0], 1, stream, sizeof(stream), NULL,
                        &err), -1);
    T_CONTAINS(fy_error_msg(err), "nested more than 64 levels deep");
    T_CONTAINS(fy_error_msg(err), "(stream offset 65)");
    fy_error_free(err);
    free(nodes);
}

int main(void)
{
    T_RUN(test_golden_bytes);
    T_RUN(test_roundtrip_allkinds);
    T_RUN(test_roundtrip_optional_off);
    T_RUN(test_versions_old_stream);
    T_RUN(test_versions_refused);
    T_RUN(test_subsection_needed);
    T_RUN(test_subsection_unknown);
    T_RUN(test_subsection_bad_prefix);
    T_RUN(test_subsection_bad_name_on_save);
    T_RUN(test_subsection_version);
    T_RUN(test_subsection_nested);
    T_RUN(test_hook_order);
    T_RUN(test_hook_failures);
    T_RUN(test_validate_and_equal);
    T_RUN(test_equal_kinds);
    T_RUN(test_stops_at_device_end);
    T_RUN(test_varray_over_max);
    T_RUN(test_null_pointers);
    T_RUN(test_error_context);
    T_RUN(test_depth_bound);
    return t_done();
}
