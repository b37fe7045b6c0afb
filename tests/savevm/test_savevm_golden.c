/*
 * test_savevm_golden.c: streams compared byte for byte with bytes written
 * out by hand from the format facts (shared/reference/qemu-wire-format.md
 * sections 1, 2, 3, 5, 9), and the JSON VM description's shape.
 */
#include "savevm-test.h"

/* "dev": two fields and one subsection, version 2. */
typedef struct Dev {
    uint16_t a;
    uint32_t b;
    uint8_t c;
} Dev;

static const VMStateDescription vmstate_dev_sub = {
    .name = "dev/sub",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_UINT8(c, Dev),
        VMSTATE_END_OF_LIST(),
    },
};

static const VMStateDescription vmstate_dev = {
    .name = "dev",
    .version_id = 2,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]){
        VMSTATE_UINT16(a, Dev),
        VMSTATE_UINT32(b, Dev),
        VMSTATE_END_OF_LIST(),
    },
    .subsections = (const VMStateDescription *const[]){
        &vmstate_dev_sub,
        NULL,
    },
};

/* "it": an iterative entry with fixed bodies: START be32 0xaabbccdd, each
 * PART be16 0x0102 (done after one), END u8 0x99. */
static int it_setup(FyStream *f, void *opaque, FyError **errp)
{
    fy_put_be32(f, 0xaabbccdd);
    return 0;
}
static int it_iterate(FyStream *f, void *opaque, FyError **errp)
{
    fy_put_be16(f, 0x0102);
    return 1;
}
static int it_complete(FyStream *f, void *opaque, FyError **errp)
{
    fy_put_byte(f, 0x99);
    return 0;
}
static const SaveVMHandlers it_handlers = {
    .save_setup = it_setup,
    .save_live_iterate = it_iterate,
    .save_live_complete_precopy = it_complete,
};

typedef struct Golden {
    FySaveState *s;
    Dev dev;
    Blob blob;
} Golden;

/* Registration order: "it" (section 0), "dev" (1), "blob" (2). */
static void golden_init(Golden *g, const char *machine)
{
    FyError *err = NULL;
    memset(g, 0, sizeof(*g));
    g->s = fy_savevm_new(machine);
    g->dev.a = 0x1234;
    g->dev.b = 0xdeadbeef;
    g->dev.c = 0x42;
    g->blob.len = 3;
    memcpy(g->blob.data, "xyz", 3);
    fy_register_savevm_live(g->s, "it", 0, 1, &it_handlers, NULL, &err);
    fy_register_vmstate(g->s, "dev", 0, &vmstate_dev, &g->dev, &err);
    fy_register_savevm_live(g->s, "blob", 0, 2, &blob_handlers, &g->blob, &err);
    T_ASSERT(err == NULL);
    fy_error_free(err);
}

/* header, START it, PART it, PING, END it, FULL dev, FULL blob, EOF */
static void write_golden(Golden *g, Buf *out)
{
    MemOut m = mem_out();
    FyError *err = NULL;
    uint8_t ping[4] = { 0x11, 0x22, 0x33, 0x44 };

    T_EQ_INT(fy_savevm_state_header(g->s, m.f, &err), 0);
    T_EQ_INT(fy_savevm_state_setup(g->s, m.f, &err), 0);
    T_EQ_INT(fy_savevm_state_iterate(g->s, m.f, &err), 1);
    fy_savevm_command_send(m.f, MIG_CMD_PING, 4, ping);
    T_EQ_INT(fy_savevm_state_complete_precopy(g->s, m.f, &err), 0);
    if (err)
        T_FAIL("%s", fy_error_msg(err));
    fy_error_free(err);
    fy_savevm_state_cleanup(g->s);
    mem_out_finish(&m, out);
}

static void expect_golden_sections(Buf *e)
{
    /* START it: type, id 0, "it", instance 0, version 1, body, footer */
    buf_u8(e, 0x01);
    buf_be32(e, 0);
    buf_u8(e, 2);
    buf_raw(e, "it", 2);
    buf_be32(e, 0);
    buf_be32(e, 1);
    buf_be32(e, 0xaabbccdd);
    buf_u8(e, 0x7e);
    buf_be32(e, 0);
    /* PART it: type, id, body, footer */
    buf_u8(e, 0x02);
    buf_be32(e, 0);
    buf_be16(e, 0x0102);
    buf_u8(e, 0x7e);
    buf_be32(e, 0);
    /* PING 0x11223344 */
    buf_u8(e, 0x08);
    buf_be16(e, 2);
    buf_be16(e, 4);
    buf_be32(e, 0x11223344);
    /* END it */
    buf_u8(e, 0x03);
    buf_be32(e, 0);
    buf_u8(e, 0x99);
    buf_u8(e, 0x7e);
    buf_be32(e, 0);
    /* FULL dev: id 1, "dev", instance 0, version 2, a, b, subsection */
    buf_u8(e, 0x04);
    buf_be32(e, 1);
    buf_u8(e, 3);
    buf_raw(e, "dev", 3);
    buf_be32(e, 0);
    buf_be32(e, 2);
    buf_be16(e, 0x1234);
    buf_be32(e, 0xdeadbeef);
    buf_u8(e, 0x05);
    buf_u8(e, 7);
    buf_raw(e, "dev/sub", 7);
    buf_be32(e, 1);
    buf_u8(e, 0x42);
    buf_u8(e, 0x7e);
    buf_be32(e, 1);
    /* FULL blob: id 2, "blob", instance 0, version 2, be32 3, "xyz" */
    buf_u8(e, 0x04);
    buf_be32(e, 2);
    buf_u8(e, 4);
    buf_raw(e, "blob", 4);
    buf_be32(e, 0);
    buf_be32(e, 2);
    buf_be32(e, 3);
    buf_raw(e, "xyz", 3);
    buf_u8(e, 0x7e);
    buf_be32(e, 2);
    /* EOF */
    buf_u8(e, 0x00);
}

static void test_golden_stream(void)
{
    Golden g;
    Buf got, e = { 0 };

    golden_init(&g, "pc-q35-7.2");
    write_golden(&g, &got);

    /* "QEVM", version 3, 0x07, be32 10, "pc-q35-7.2" (12 == legacy 12:
     * no page-bits subsection; no capabilities; no uuid). */
    static const uint8_t head[] = {
        0x51, 0x45, 0x56, 0x4d, 0x00, 0x00, 0x00, 0x03, 0x07,
        0x00, 0x00, 0x00, 0x0a, 'p', 'c', '-', 'q', '3', '5', '-', '7', '.', '2',
    };
    buf_raw(&e, head, sizeof(head));
    expect_golden_sections(&e);

    T_ASSERT(got.len > e.len + 5);
    T_EQ_MEM(got.d, e.d, e.len);
    /* then 0x06, be32 length, exactly that many bytes of JSON */
    size_t p = e.len;
    T_EQ_INT(got.d[p], 0x06);
    uint32_t jlen = (uint32_t)got.d[p + 1] << 24 | got.d[p + 2] << 16 |
                    got.d[p + 3] << 8 | got.d[p + 4];
    T_EQ_INT(p + 5 + jlen, got.len);
    T_EQ_INT(got.d[p + 5], '{');
    T_EQ_INT(got.d[got.len - 1], '}');
    buf_free(&got);
    buf_free(&e);
    fy_savevm_free(g.s);
}

/* The same stream without footers and without a VM description. */
static void test_golden_no_footer_no_vmdesc(void)
{
    Golden g;
    Buf got;

    golden_init(&g, "pc");
    fy_savevm_config(g.s)->send_section_footer = false;
    fy_savevm_config(g.s)->send_vmdesc = false;
    write_golden(&g, &got);
    static const uint8_t e[] = {
        0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3, 0x07, 0, 0, 0, 2, 'p', 'c',
        0x01, 0, 0, 0, 0, 2, 'i', 't', 0, 0, 0, 0, 0, 0, 0, 1, 0xaa, 0xbb, 0xcc, 0xdd,
        0x02, 0, 0, 0, 0, 0x01, 0x02,
        0x08, 0, 2, 0, 4, 0x11, 0x22, 0x33, 0x44,
        0x03, 0, 0, 0, 0, 0x99,
        0x04, 0, 0, 0, 1, 3, 'd', 'e', 'v', 0, 0, 0, 0, 0, 0, 0, 2,
        0x12, 0x34, 0xde, 0xad, 0xbe, 0xef,
        0x05, 7, 'd', 'e', 'v', '/', 's', 'u', 'b', 0, 0, 0, 1, 0x42,
        0x04, 0, 0, 0, 2, 4, 'b', 'l', 'o', 'b', 0, 0, 0, 0, 0, 0, 0, 2,
        0, 0, 0, 3, 'x', 'y', 'z',
        0x00,
    };
    T_EQ_INT(got.len, sizeof(e));
    T_EQ_MEM(got.d, e, sizeof(e) < got.len ? sizeof(e) : got.len);
    buf_free(&got);
    fy_savevm_free(g.s);
}

/* Configuration with every subsection: page bits 16 > legacy 12, both
 * validated capabilities, uuid. */
static void test_golden_configuration_subsections(void)
{
    FySaveState *s = fy_savevm_new("virt");
    FySaveVMConfig *c = fy_savevm_config(s);
    FyError *err = NULL;
    MemOut m = mem_out();
    Buf got, e = { 0 };

    c->target_page_bits = 16;
    c->cap_x_ignore_shared = true;
    c->cap_mapped_ram = true;
    c->validate_uuid = true;
    for (int i = 0; i < 16; i++)
        c->uuid[i] = (uint8_t)(0xa0 + i);
    T_EQ_INT(fy_savevm_state_header(s, m.f, &err), 0);
    fy_error_free(err);
    mem_out_finish(&m, &got);

    buf_be32(&e, 0x5145564d);
    buf_be32(&e, 3);
    buf_u8(&e, 0x07);
    buf_be32(&e, 4);
    buf_raw(&e, "virt", 4);
    buf_u8(&e, 0x05);
    buf_u8(&e, 30);
    buf_raw(&e, "configuration/target-page-bits", 30);
    buf_be32(&e, 1);
    buf_be32(&e, 16);
    buf_u8(&e, 0x05);
    buf_u8(&e, 26);
    buf_raw(&e, "configuration/capabilities", 26);
    buf_be32(&e, 1);
    buf_be32(&e, 2);
    buf_u8(&e, 15);
    buf_raw(&e, "x-ignore-shared", 15);
    buf_u8(&e, 10);
    buf_raw(&e, "mapped-ram", 10);
    buf_u8(&e, 0x05);
    buf_u8(&e, 18);
    buf_raw(&e, "configuration/uuid", 18);
    buf_be32(&e, 1);
    for (int i = 0; i < 16; i++)
        buf_u8(&e, (uint8_t)(0xa0 + i));

    T_EQ_INT(got.len, e.len);
    T_EQ_MEM(got.d, e.d, e.len < got.len ? e.len : got.len);
    buf_free(&got);
    buf_free(&e);
    fy_savevm_state_cleanup(s);

    /* Only one capability on: count 1. */
    c->cap_x_ignore_shared = false;
    c->validate_uuid = false;
    c->target_page_bits = 12;
    m = mem_out();
    T_EQ_INT(fy_savevm_state_header(s, m.f, NULL), 0);
    mem_out_finish(&m, &got);
    static const uint8_t e2[] = {
        0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3, 0x07, 0, 0, 0, 4, 'v', 'i', 'r', 't',
        0x05, 26, 'c', 'o', 'n', 'f', 'i', 'g', 'u', 'r', 'a', 't', 'i', 'o', 'n',
        '/', 'c', 'a', 'p', 'a', 'b', 'i', 'l', 'i', 't', 'i', 'e', 's',
        0, 0, 0, 1, 0, 0, 0, 1, 10, 'm', 'a', 'p', 'p', 'e', 'd', '-', 'r', 'a', 'm',
    };
    T_EQ_INT(got.len, sizeof(e2));
    T_EQ_MEM(got.d, e2, sizeof(e2) < got.len ? sizeof(e2) : got.len);
    buf_free(&got);
    fy_savevm_free(s);
}

/* No configuration section at all. */
static void test_golden_no_configuration(void)
{
    FySaveState *s = fy_savevm_new("pc");
    MemOut m = mem_out();
    Buf got;

    fy_savevm_config(s)->send_configuration = false;
    fy_savevm_config(s)->send_vmdesc = false;
    T_EQ_INT(fy_savevm_save_all(s, m.f, NULL), 0);
    mem_out_finish(&m, &got);
    static const uint8_t e[] = { 0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3, 0x00 };
    T_EQ_INT(got.len, sizeof(e));
    T_EQ_MEM(got.d, e, sizeof(e));
    buf_free(&got);
    fy_savevm_free(s);
}

/* Every command's encoding, and refusal of malformed ones. */
static void test_golden_commands(void)
{
    MemOut m = mem_out();
    Buf got;
    uint8_t adv[16] = { 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x10, 0 };
    uint8_t bm[5] = { 4, 'p', 'c', '.', 'r' };

    fy_savevm_command_send(m.f, MIG_CMD_OPEN_RETURN_PATH, 0, NULL);
    fy_savevm_send_ping(m.f, 0xcafef00d);
    fy_savevm_command_send(m.f, MIG_CMD_POSTCOPY_ADVISE, 16, adv);
    fy_savevm_command_send(m.f, MIG_CMD_POSTCOPY_ADVISE, 0, NULL);
    fy_savevm_command_send(m.f, MIG_CMD_RECV_BITMAP, 5, bm);
    fy_savevm_send_packaged(m.f, (const uint8_t *)"\x02\x00\x00\x00\x07", 5);
    fy_savevm_command_send(m.f, MIG_CMD_SWITCHOVER_START, 0, NULL);
    T_ASSERT(fy_stream_error(m.f) == NULL);
    mem_out_finish(&m, &got);

    Buf e = { 0 };
    buf_u8(&e, 8); buf_be16(&e, 1); buf_be16(&e, 0);
    buf_u8(&e, 8); buf_be16(&e, 2); buf_be16(&e, 4); buf_be32(&e, 0xcafef00d);
    buf_u8(&e, 8); buf_be16(&e, 3); buf_be16(&e, 16); buf_raw(&e, adv, 16);
    buf_u8(&e, 8); buf_be16(&e, 3); buf_be16(&e, 0);
    buf_u8(&e, 8); buf_be16(&e, 10); buf_be16(&e, 5); buf_raw(&e, bm, 5);
    buf_u8(&e, 8); buf_be16(&e, 7); buf_be16(&e, 4); buf_be32(&e, 5);
    buf_raw(&e, "\x02\x00\x00\x00\x07", 5);
    buf_u8(&e, 8); buf_be16(&e, 11); buf_be16(&e, 0);
    T_EQ_INT(got.len, e.len);
    T_EQ_MEM(got.d, e.d, e.len < got.len ? e.len : got.len);
    buf_free(&got);
    buf_free(&e);

    /* A PING of the wrong length is not sent: the stream fails. */
    m = mem_out();
    fy_savevm_command_send(m.f, MIG_CMD_PING, 2, (const uint8_t *)"ab");
    T_ASSERT(fy_stream_error(m.f) != NULL);
    T_CONTAINS(fy_error_msg(fy_stream_error(m.f)), "PING received with bad length");
    mem_out_finish(&m, &got);
    T_EQ_INT(got.len, 0);
    buf_free(&got);

    T_EQ_STR(fy_mig_cmd_name(MIG_CMD_POSTCOPY_RAM_DISCARD), "POSTCOPY_RAM_DISCARD");
    T_EQ_STR(fy_mig_cmd_name(MIG_CMD_SWITCHOVER_START), "SWITCHOVER_START");
    T_EQ_STR(fy_mig_cmd_name(99), "UNKNOWN");
}

static json_t *vmdesc_of(const Buf *b, size_t eof_at, size_t *textlen)
{
    size_t p = eof_at + 1;
    uint32_t jlen = (uint32_t)b->d[p + 1] << 24 | b->d[p + 2] << 16 |
                    b->d[p + 3] << 8 | b->d[p + 4];
    *textlen = jlen;
    json_error_t jerr;
    return json_loadb((const char *)b->d + p + 5, jlen, 0, &jerr);
}

static const char *key_at(json_t *obj, int n)
{
    void *it = json_object_iter(obj);
    while (it && n-- > 0)
        it = json_object_iter_next(obj, it);
    return it ? json_object_iter_key(it) : NULL;
}

static void expect_field(json_t *f, const char *name, const char *type, int size)
{
    T_EQ_STR(json_string_value(json_object_get(f, "name")), name);
    T_EQ_STR(json_string_value(json_object_get(f, "type")), type);
    T_EQ_INT(json_integer_value(json_object_get(f, "size")), size);
}

static void test_vmdesc_shape(void)
{
    Golden g;
    Buf got, e = { 0 };

    golden_init(&g, "pc-q35-7.2");
    write_golden(&g, &got);
    buf_raw(&e, "QEVM....", 8);
    buf_u8(&e, 7);
    buf_be32(&e, 10);
    buf_raw(&e, "pc-q35-7.2", 10);
    expect_golden_sections(&e);
    size_t textlen;
    json_t *j = vmdesc_of(&got, e.len - 1, &textlen);
    T_ASSERT(j != NULL);

    /* QEMU's key order and separators (its non-pretty JSON writer). */
    T_EQ_STR(key_at(j, 0), "configuration");
    T_EQ_STR(key_at(j, 1), "page_size");
    T_EQ_STR(key_at(j, 2), "devices");
    T_EQ_INT(json_object_size(j), 3);
    const char *text = (const char *)got.d + e.len + 5;
    static const char start[] =
        "{\"configuration\": {\"vmsd_name\": \"configuration\", \"version\": 1, "
        "\"fields\": [{\"name\": \"len\", \"type\": \"uint32\", \"size\": 4}, "
        "{\"name\": \"name\", \"type\": \"buffer\", \"size\": 10}]}, "
        "\"page_size\": 4096, \"devices\": [";
    T_ASSERT(textlen > sizeof(start) && memcmp(text, start, sizeof(start) - 1) == 0);

    T_EQ_INT(json_integer_value(json_object_get(j, "page_size")), 4096);
    json_t *conf = json_object_get(j, "configuration");
    T_EQ_STR(json_string_value(json_object_get(conf, "vmsd_name")), "configuration");
    T_ASSERT(json_object_get(conf, "subsections") == NULL);

    /* "it" is iterative: not a device. "dev", then the legacy "blob". */
    json_t *devs = json_object_get(j, "devices");
    T_EQ_INT(json_array_size(devs), 2);
    json_t *d0 = json_array_get(devs, 0), *d1 = json_array_get(devs, 1);
    T_EQ_STR(key_at(d0, 0), "name");
    T_EQ_STR(key_at(d0, 1), "instance_id");
    T_EQ_STR(key_at(d0, 2), "vmsd_name");
    T_EQ_STR(key_at(d0, 3), "version");
    T_EQ_STR(json_string_value(json_object_get(d0, "name")), "dev");
    T_EQ_INT(json_integer_value(json_object_get(d0, "instance_id")), 0);
    T_EQ_STR(json_string_value(json_object_get(d0, "vmsd_name")), "dev");
    T_EQ_INT(json_integer_value(json_object_get(d0, "version")), 2);
    json_t *f0 = json_object_get(d0, "fields");
    T_EQ_INT(json_array_size(f0), 2);
    expect_field(json_array_get(f0, 0), "a", "uint16", 2);
    expect_field(json_array_get(f0, 1), "b", "uint32", 4);
    json_t *subs = json_object_get(d0, "subsections");
    T_EQ_INT(json_array_size(subs), 1);
    json_t *sub = json_array_get(subs, 0);
    T_EQ_STR(json_string_value(json_object_get(sub, "vmsd_name")), "dev/sub");
    T_EQ_INT(json_integer_value(json_object_get(sub, "version")), 1);
    expect_field(json_array_get(json_object_get(sub, "fields"), 0), "c", "uint8", 1);

    T_EQ_STR(json_string_value(json_object_get(d1, "name")), "blob");
    T_EQ_INT(json_integer_value(json_object_get(d1, "instance_id")), 0);
    T_ASSERT(json_object_get(d1, "vmsd_name") == NULL);
    T_EQ_INT(json_integer_value(json_object_get(d1, "size")), 7);
    json_t *f1 = json_object_get(d1, "fields");
    T_EQ_INT(json_array_size(f1), 1);
    expect_field(json_array_get(f1, 0), "data", "buffer", 7);

    json_decref(j);
    buf_free(&got);
    buf_free(&e);
    fy_savevm_free(g.s);
}

/* The configuration description lists the subsections that were sent,
 * with the field names analyze-migration.py looks up. */
static void test_vmdesc_configuration_subsections(void)
{
    FySaveState *s = fy_savevm_new("virt");
    FySaveVMConfig *c = fy_savevm_config(s);
    MemOut m = mem_out();
    Buf got;

    c->target_page_bits = 14;
    c->cap_x_ignore_shared = true;
    c->validate_uuid = true;
    T_EQ_INT(fy_savevm_save_all(s, m.f, NULL), 0);
    mem_out_finish(&m, &got);

    /* header 8, 0x07, len + "virt", then each subsection: 0x05, u8 len,
     * name, be32 version, fields; then EOF */
    size_t eof_at = 8 + 1 + (4 + 4) + (2 + 30 + 4 + 4) +
                    (2 + 26 + 4 + 4 + 1 + 15) + (2 + 18 + 4 + 16);
    T_EQ_INT(got.d[eof_at], 0);
    size_t textlen;
    json_t *j = vmdesc_of(&got, eof_at, &textlen);
    T_ASSERT(j != NULL);
    T_EQ_INT(json_integer_value(json_object_get(j, "page_size")), 16384);
    json_t *subs = json_object_get(json_object_get(j, "configuration"), "subsections");
    T_EQ_INT(json_array_size(subs), 3);
    json_t *caps = json_array_get(subs, 1);
    T_EQ_STR(json_string_value(json_object_get(caps, "vmsd_name")),
             "configuration/capabilities");
    json_t *cf = json_object_get(caps, "fields");
    T_EQ_STR(json_string_value(json_object_get(json_array_get(cf, 0), "name")),
             "caps_count");
    T_EQ_STR(json_string_value(json_object_get(json_array_get(cf, 1), "name")),
             "capabilities");
    T_EQ_STR(json_string_value(json_object_get(json_array_get(cf, 1), "type")),
             "capability");
    json_t *uf = json_object_get(json_array_get(subs, 2), "fields");
    T_EQ_STR(json_string_value(json_object_get(json_array_get(uf, 0), "name")),
             "uuid.data");
    T_EQ_INT(json_array_size(json_object_get(j, "devices")), 0);
    json_decref(j);
    buf_free(&got);
    fy_savevm_free(s);
}

/* analyze-migration.py locates the description as the first '{' after the
 * last NUL byte of the file and expects 0x06 and the be32 length just
 * before it. Sweep the description's length over a full byte's worth of
 * values (by the length of a device name): it is always found, and lengths
 * whose bytes would hide it are padded with blanks. */
static void test_vmdesc_findable(void)
{
    int padded = 0;

    for (int k = 1; k <= 255; k++) {
        FySaveState *s = fy_savevm_new("pc");
        Blob blob = { .len = 1 };
        char name[256];
        MemOut m = mem_out();
        Buf b;

        memset(name, 'a', (size_t)k);
        name[k] = 0;
        fy_register_savevm_live(s, name, 0, 1, &blob_handlers, &blob, NULL);
        T_EQ_INT(fy_savevm_save_all(s, m.f, NULL), 0);
        mem_out_finish(&m, &b);

        size_t nul = b.len;
        while (nul > 0 && b.d[nul - 1] != 0)
            nul--;
        size_t brace = nul;
        while (brace < b.len && b.d[brace] != '{')
            brace++;
        bool ok = nul > 0 && brace >= 5 && brace < b.len && b.d[brace - 5] == 0x06;
        uint32_t jlen = ok ? (uint32_t)b.d[brace - 4] << 24 | b.d[brace - 3] << 16 |
                             b.d[brace - 2] << 8 | b.d[brace - 1] : 0;
        ok = ok && brace + jlen == b.len;
        json_error_t jerr;
        json_t *j = ok ? json_loadb((const char *)b.d + brace, jlen, 0, &jerr) : NULL;
        if (!ok || !j)
            T_FAIL("name length %d: description not found the analyzer's way", k);
        if (ok && b.d[b.len - 1] == ' ')
            padded++;
        json_decref(j);
        buf_free(&b);
        fy_savevm_free(s);
    }
    T_ASSERT(padded >= 1);
}

int main(void)
{
    T_RUN(test_golden_stream);
    T_RUN(test_golden_no_footer_no_vmdesc);
    T_RUN(test_golden_configuration_subsections);
    T_RUN(test_golden_no_configuration);
    T_RUN(test_golden_commands);
    T_RUN(test_vmdesc_shape);
    T_RUN(test_vmdesc_configuration_subsections);
    T_RUN(test_vmdesc_findable);
    return t_done();
}
