/*
 * test_savevm_errors.c: every loader error, with its message and the
 * stream offset of the record it is about. Streams are built by hand; the
 * standard prefix is header + minimal configuration for machine "pc"
 * (15 bytes), so the first record starts at offset 15.
 */
#include <inttypes.h>

#include "savevm-test.h"

#define REC 15 /* offset of the first record after buf_header(b, "pc") */

typedef struct Dst {
    FySaveState *s;
    Cpu cpu;
    Blob blob;
    Iter iter;
} Dst;

static void dst_init(Dst *d, const char *machine)
{
    memset(d, 0, sizeof(*d));
    d->s = fy_savevm_new(machine);
    iter_init(&d->iter, 0, 1);
    fy_register_vmstate(d->s, "cpu", 0, &vmstate_cpu, &d->cpu, NULL);
    fy_register_savevm_live(d->s, "blob", 0, 2, &blob_handlers, &d->blob, NULL);
    fy_register_savevm_live(d->s, "iter", 0, 1, &iter_handlers, &d->iter, NULL);
}

/* Load b into d and check: fails, message contains want, and starts with
 * "stream offset <off>: ". */
#define EXPECT_ERR(s, b, off, want)                                            \
    do {                                                                       \
        char *m_ = NULL;                                                       \
        char pre_[64];                                                         \
        T_EQ_INT(load_buf((s), (b)->d, (b)->len, NULL, NULL, &m_), -1);        \
        snprintf(pre_, sizeof(pre_), "stream offset %" PRIu64 ": ",            \
                 (uint64_t)(off));                                             \
        T_ASSERT(m_ && strncmp(m_, pre_, strlen(pre_)) == 0);                  \
        T_CONTAINS(m_, want);                                                  \
        if (m_ && strncmp(m_, pre_, strlen(pre_)) != 0)                        \
            T_FAIL("message: %s", m_);                                         \
        free(m_);                                                              \
    } while (0)

#define EXPECT_OK(s, b)                                                        \
    do {                                                                       \
        char *m_ = NULL;                                                       \
        T_EQ_INT(load_buf((s), (b)->d, (b)->len, NULL, NULL, &m_), 0);         \
        if (m_)                                                                \
            T_FAIL("unexpected error: %s", m_);                                \
        free(m_);                                                              \
    } while (0)

static void cpu_body(Buf *b)
{
    for (int i = 0; i < 4; i++)
        buf_be32(b, 0x100u + (uint32_t)i);
    buf_be64(b, 0xfff0);
    buf_u8(b, 1);
}

/* ---- header ---- */

static void test_header_errors(void)
{
    Dst d;
    Buf b = { 0 };
    dst_init(&d, "pc");

    buf_be32(&b, 0x51455658);
    buf_be32(&b, 3);
    EXPECT_ERR(d.s, &b, 0, "not a migration stream: bad magic 0x51455658 at offset 0");
    buf_free(&b);

    EXPECT_ERR(d.s, &b, 0, "not a migration stream: ");
    buf_raw(&b, "QE", 2);
    EXPECT_ERR(d.s, &b, 0, "stream ends");
    buf_free(&b);

    buf_be32(&b, QEMU_VM_FILE_MAGIC);
    buf_be32(&b, 2);
    EXPECT_ERR(d.s, &b, 4, "SaveVM v2 format is obsolete");
    buf_free(&b);

    buf_be32(&b, QEMU_VM_FILE_MAGIC);
    buf_be32(&b, 4);
    EXPECT_ERR(d.s, &b, 4, "unsupported migration stream version 4 (expected 3)");
    buf_free(&b);

    buf_be32(&b, QEMU_VM_FILE_MAGIC);
    buf_be32(&b, 3);
    EXPECT_ERR(d.s, &b, 8, "Configuration section missing: the stream ends");
    buf_u8(&b, QEMU_VM_SECTION_FULL);
    EXPECT_ERR(d.s, &b, 8, "Configuration section missing: found 0x04 where 0x07 "
               "was expected");
    buf_free(&b);

    /* No EOF: the records just stop. */
    buf_header(&b, "pc");
    EXPECT_ERR(d.s, &b, REC, "reading the next section: ");
    EXPECT_ERR(d.s, &b, REC, "stream ends");
    buf_u8(&b, QEMU_VM_EOF);
    EXPECT_OK(d.s, &b);
    buf_free(&b);
    fy_savevm_free(d.s);
}

/* ---- configuration ---- */

static Buf header_from(void (*tweak)(FySaveVMConfig *), const char *machine)
{
    FySaveState *s = fy_savevm_new(machine);
    MemOut m = mem_out();
    Buf b;
    tweak(fy_savevm_config(s));
    fy_savevm_state_header(s, m.f, NULL);
    fy_put_byte(m.f, QEMU_VM_EOF);
    mem_out_finish(&m, &b);
    fy_savevm_free(s);
    return b;
}

static void no_tweak(FySaveVMConfig *c) { (void)c; }
static void bits16(FySaveVMConfig *c) { c->target_page_bits = 16; }
static void ignore_shared(FySaveVMConfig *c) { c->cap_x_ignore_shared = true; }
static void mapped_ram(FySaveVMConfig *c) { c->cap_mapped_ram = true; }
static void uuid_a(FySaveVMConfig *c)
{
    c->validate_uuid = true;
    memset(c->uuid, 0xaa, 16);
}

static void test_configuration_errors(void)
{
    Dst d;
    Buf b;

    dst_init(&d, "pc-i440fx-8.0");
    b = header_from(no_tweak, "pc-q35-7.2");
    EXPECT_ERR(d.s, &b, 8, "Machine type received is 'pc-q35-7.2' and local is "
               "'pc-i440fx-8.0'");
    buf_free(&b);
    fy_savevm_free(d.s);

    /* QEMU compares only the received length: a prefix is accepted... */
    dst_init(&d, "pc-q35-7.2");
    b = header_from(no_tweak, "pc-q35");
    EXPECT_OK(d.s, &b);
    buf_free(&b);
    /* ...a longer name is not. */
    b = header_from(no_tweak, "pc-q35-7.2-x");
    EXPECT_ERR(d.s, &b, 8, "Machine type received is 'pc-q35-7.2-x'");
    buf_free(&b);

    b = header_from(bits16, "pc-q35-7.2");
    EXPECT_ERR(d.s, &b, 8, "Received TARGET_PAGE_BITS is 16 but local is 12");
    buf_free(&b);
    fy_savevm_config(d.s)->target_page_bits = 16;
    b = header_from(no_tweak, "pc-q35-7.2");
    EXPECT_ERR(d.s, &b, 8, "Received TARGET_PAGE_BITS is 12 but local is 16");
    buf_free(&b);
    fy_savevm_config(d.s)->target_page_bits = 12;

    b = header_from(ignore_shared, "pc-q35-7.2");
    EXPECT_ERR(d.s, &b, 8, "Capability x-ignore-shared is off, but received "
               "capability is on");
    buf_free(&b);
    fy_savevm_config(d.s)->cap_mapped_ram = true;
    b = header_from(no_tweak, "pc-q35-7.2");
    EXPECT_ERR(d.s, &b, 8, "Capability mapped-ram is on, but received capability "
               "is off");
    buf_free(&b);
    /* Both wrong at once: both reported. */
    b = header_from(ignore_shared, "pc-q35-7.2");
    EXPECT_ERR(d.s, &b, 8, "Capability x-ignore-shared is off, but received "
               "capability is on; Capability mapped-ram is on, but received "
               "capability is off");
    buf_free(&b);
    b = header_from(mapped_ram, "pc-q35-7.2");
    EXPECT_OK(d.s, &b);
    buf_free(&b);
    fy_savevm_config(d.s)->cap_mapped_ram = false;

    fy_savevm_config(d.s)->validate_uuid = true;
    memset(fy_savevm_config(d.s)->uuid, 0xbb, 16);
    b = header_from(uuid_a, "pc-q35-7.2");
    EXPECT_ERR(d.s, &b, 8, "UUID received is aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa "
               "and local is bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb");
    buf_free(&b);
    memset(fy_savevm_config(d.s)->uuid, 0xaa, 16);
    b = header_from(uuid_a, "pc-q35-7.2");
    EXPECT_OK(d.s, &b);
    buf_free(&b);
    fy_savevm_free(d.s);
}

static void config_prefix(Buf *b, const char *mt)
{
    buf_be32(b, QEMU_VM_FILE_MAGIC);
    buf_be32(b, QEMU_VM_FILE_VERSION);
    buf_u8(b, QEMU_VM_CONFIGURATION);
    buf_be32(b, (uint32_t)strlen(mt));
    buf_raw(b, mt, strlen(mt));
}

static void caps_subsection(Buf *b, uint32_t count, const char *cap)
{
    buf_u8(b, QEMU_VM_SUBSECTION);
    buf_str(b, "configuration/capabilities");
    buf_be32(b, 1);
    buf_be32(b, count);
    if (cap)
        buf_str(b, cap);
}

static void test_configuration_hostile(void)
{
    Dst d;
    Buf b = { 0 };
    dst_init(&d, "pc");

    config_prefix(&b, "pc");
    caps_subsection(&b, 1, "warp-drive");
    buf_u8(&b, QEMU_VM_EOF);
    EXPECT_ERR(d.s, &b, 8, "Received unknown capability 'warp-drive'");
    buf_free(&b);

    /* A count far beyond what the section may list: refused before any
     * allocation. */
    config_prefix(&b, "pc");
    caps_subsection(&b, 0x7fffffff, NULL);
    EXPECT_ERR(d.s, &b, 8, "capabilities");
    buf_free(&b);

    /* A machine type length of 4 GiB. */
    buf_be32(&b, QEMU_VM_FILE_MAGIC);
    buf_be32(&b, QEMU_VM_FILE_VERSION);
    buf_u8(&b, QEMU_VM_CONFIGURATION);
    buf_be32(&b, 0xffffffff);
    buf_raw(&b, "pc", 2);
    EXPECT_ERR(d.s, &b, 8, "field 'name'");
    buf_free(&b);

    /* An unknown configuration subsection. */
    config_prefix(&b, "pc");
    buf_u8(&b, QEMU_VM_SUBSECTION);
    buf_str(&b, "configuration/hyperdrive");
    buf_be32(&b, 1);
    buf_u8(&b, QEMU_VM_EOF);
    EXPECT_ERR(d.s, &b, 8, "configuration/hyperdrive");
    buf_free(&b);

    /* Not sending a configuration, the destination still reads one. */
    fy_savevm_config(d.s)->send_configuration = false;
    config_prefix(&b, "other");
    buf_u8(&b, QEMU_VM_EOF);
    EXPECT_ERR(d.s, &b, 8, "Machine type received is 'other'");
    buf_free(&b);
    buf_be32(&b, QEMU_VM_FILE_MAGIC);
    buf_be32(&b, QEMU_VM_FILE_VERSION);
    buf_u8(&b, QEMU_VM_EOF);
    EXPECT_OK(d.s, &b);
    buf_free(&b);
    fy_savevm_free(d.s);
}

/* ---- sections ---- */

static void test_section_errors(void)
{
    Dst d;
    Buf b = { 0 };
    dst_init(&d, "pc");

    buf_header(&b, "pc");
    buf_full_header(&b, 9, "foo", 3, 1);
    EXPECT_ERR(d.s, &b, REC, "Unknown section or instance 'foo' 3. Make sure that "
               "your current VM setup matches your saved VM setup, including any "
               "hotplugged devices");
    buf_free(&b);

    /* right name, wrong instance */
    buf_header(&b, "pc");
    buf_full_header(&b, 9, "cpu", 1, 3);
    EXPECT_ERR(d.s, &b, REC, "Unknown section or instance 'cpu' 1.");
    buf_free(&b);

    /* a NUL inside the name never matches (nor is one needed at the end) */
    buf_header(&b, "pc");
    buf_u8(&b, QEMU_VM_SECTION_FULL);
    buf_be32(&b, 9);
    buf_u8(&b, 5);
    buf_raw(&b, "cpu\0x", 5);
    buf_be32(&b, 0);
    buf_be32(&b, 3);
    EXPECT_ERR(d.s, &b, REC, "Unknown section or instance 'cpu?x' 0.");
    buf_free(&b);

    /* a header cut short */
    buf_header(&b, "pc");
    buf_u8(&b, QEMU_VM_SECTION_START);
    buf_be32(&b, 9);
    buf_u8(&b, 200);
    buf_raw(&b, "iter", 4);
    EXPECT_ERR(d.s, &b, REC, "START section header: ");
    buf_free(&b);

    buf_header(&b, "pc");
    buf_full_header(&b, 9, "cpu", 0, 4);
    EXPECT_ERR(d.s, &b, REC, "section 'cpu' instance 0 (id 9): unsupported version "
               "4 (local version is 3)");
    buf_free(&b);
    buf_header(&b, "pc");
    buf_full_header(&b, 9, "cpu", 0, 0);
    EXPECT_ERR(d.s, &b, REC, "section 'cpu' instance 0 (id 9): device 'cpu': "
               "stream version 0 is older than minimum 1");
    buf_free(&b);
    buf_header(&b, "pc");
    buf_full_header(&b, 9, "blob", 0, 0xffffffff);
    EXPECT_ERR(d.s, &b, REC, "unsupported version 4294967295 (local version is 2)");
    buf_free(&b);

    buf_header(&b, "pc");
    buf_u8(&b, QEMU_VM_SECTION_PART);
    buf_be32(&b, 5);
    EXPECT_ERR(d.s, &b, REC, "Unknown section id 5 (PART section): no START or FULL section announced it");
    buf_free(&b);
    /* an id only the *destination* uses means nothing */
    buf_header(&b, "pc");
    buf_u8(&b, QEMU_VM_SECTION_END);
    buf_be32(&b, 2);
    EXPECT_ERR(d.s, &b, REC, "Unknown section id 2 (END section)");
    buf_free(&b);
    buf_header(&b, "pc");
    buf_u8(&b, QEMU_VM_SECTION_PART);
    buf_be16(&b, 0);
    EXPECT_ERR(d.s, &b, REC, "PART section header: ");
    buf_free(&b);

    /* footers */
    buf_header(&b, "pc");
    buf_full_header(&b, 3, "cpu", 0, 3);
    cpu_body(&b);
    buf_u8(&b, QEMU_VM_EOF);
    EXPECT_ERR(d.s, &b, REC, "section 'cpu' instance 0 (id 3): Missing section "
               "footer for 'cpu' (found 0x00 at offset 57)");
    buf_free(&b);
    buf_header(&b, "pc");
    buf_full_header(&b, 3, "cpu", 0, 3);
    cpu_body(&b);
    buf_footer(&b, 4);
    buf_u8(&b, QEMU_VM_EOF);
    EXPECT_ERR(d.s, &b, REC, "section 'cpu' instance 0 (id 3): Mismatched section "
               "id in footer for 'cpu': read 4, expected 3");
    buf_free(&b);
    buf_header(&b, "pc");
    buf_full_header(&b, 3, "cpu", 0, 3);
    cpu_body(&b);
    buf_u8(&b, QEMU_VM_SECTION_FOOTER);
    EXPECT_ERR(d.s, &b, REC, "reading the section footer for 'cpu': ");
    buf_free(&b);

    /* the second record's offset: a good FULL, then a bad one */
    buf_header(&b, "pc");
    buf_full_header(&b, 3, "cpu", 0, 3);
    cpu_body(&b);
    buf_footer(&b, 3);
    size_t second = b.len;
    buf_full_header(&b, 4, "blob", 0, 2);
    buf_be32(&b, 100);
    EXPECT_ERR(d.s, &b, second, "section 'blob' instance 0 (id 4): blob length "
               "100 exceeds 64");
    buf_free(&b);

    /* a device body cut short */
    buf_header(&b, "pc");
    buf_full_header(&b, 3, "cpu", 0, 3);
    buf_be32(&b, 1);
    EXPECT_ERR(d.s, &b, REC, "section 'cpu' instance 0 (id 3): device 'cpu' field "
               "'regs[1]'");
    buf_free(&b);

    /* a foreign subsection at the device level */
    buf_header(&b, "pc");
    buf_full_header(&b, 3, "cpu", 0, 3);
    cpu_body(&b);
    buf_u8(&b, QEMU_VM_SUBSECTION);
    buf_str(&b, "gpu/fpu");
    buf_be32(&b, 1);
    EXPECT_ERR(d.s, &b, REC, "section 'cpu' instance 0 (id 3): device 'cpu': VM "
               "subsection 'gpu/fpu' is not one of 'cpu'");
    buf_free(&b);

    /* START then PART/END use the id the source chose (77) */
    buf_header(&b, "pc");
    buf_u8(&b, QEMU_VM_SECTION_START);
    buf_be32(&b, 77);
    buf_str(&b, "iter");
    buf_be32(&b, 0);
    buf_be32(&b, 1);
    buf_be32(&b, 3);
    buf_be32(&b, ITER_EOS);
    buf_footer(&b, 77);
    size_t part = b.len;
    buf_u8(&b, QEMU_VM_SECTION_PART);
    buf_be32(&b, 77);
    buf_be32(&b, 2);
    buf_be64(&b, 0x55);
    buf_be32(&b, ITER_EOS);
    buf_footer(&b, 77);
    buf_u8(&b, QEMU_VM_SECTION_END);
    buf_be32(&b, 77);
    buf_be32(&b, ITER_EOS);
    buf_footer(&b, 77);
    buf_u8(&b, QEMU_VM_EOF);
    d.iter.loads = 0;
    EXPECT_OK(d.s, &b);
    T_EQ_INT(d.iter.count, 3);
    T_EQ_INT(d.iter.vals[2], 0x55);
    /* ...and a handler error in a PART names the section and its offset */
    b.d[part + 5 + 3] = 9; /* index 9 >= count 3 */
    d.iter.loads = 0;
    EXPECT_ERR(d.s, &b, part, "section 'iter' instance 0 (id 77): iter: index 9 "
               "out of range (count 3)");
    buf_free(&b);

    /* unknown record types */
    buf_header(&b, "pc");
    buf_u8(&b, 0x09);
    EXPECT_ERR(d.s, &b, REC, "unknown section type 0x09");
    buf_free(&b);
    buf_header(&b, "pc");
    buf_footer(&b, 0);
    EXPECT_ERR(d.s, &b, REC, "unknown section type 0x7e");
    buf_free(&b);
    fy_savevm_free(d.s);
}

/* Entries that cannot load, and load_setup failing. */
static int save_only(FyStream *f, void *opaque, FyError **errp)
{
    return 0;
}

static int setup_fails(void *opaque, FyError **errp)
{
    fy_error_setg(errp, "nope");
    return -1;
}

static void test_entry_errors(void)
{
    Dst d;
    Buf b = { 0 };
    SaveVMHandlers so = { .save_state = save_only };
    SaveVMHandlers sf = { .load_setup = setup_fails };

    dst_init(&d, "pc");
    fy_register_savevm_live(d.s, "saveonly", 0, 1, &so, NULL, NULL);
    buf_header(&b, "pc");
    buf_full_header(&b, 1, "saveonly", 0, 1);
    buf_footer(&b, 1);
    buf_u8(&b, QEMU_VM_EOF);
    EXPECT_ERR(d.s, &b, REC, "section 'saveonly' instance 0 (id 1): this entry "
               "cannot be loaded");
    T_EQ_INT(d.iter.load_setups, 1);
    T_EQ_INT(d.iter.load_cleanups, 1);

    fy_register_savevm_live(d.s, "setupfails", 0, 1, &sf, NULL, NULL);
    char *m = NULL;
    T_EQ_INT(load_buf(d.s, b.d, b.len, NULL, NULL, &m), -1);
    T_CONTAINS(m, "load_setup of section 'setupfails' instance 0: nope");
    free(m);
    T_EQ_INT(d.iter.load_cleanups, 2); /* cleaned up after a failed setup */
    buf_free(&b);
    fy_savevm_free(d.s);
}

/* ---- commands ---- */

static void cmd(Buf *b, uint16_t c, uint16_t len, const void *payload)
{
    buf_u8(b, QEMU_VM_COMMAND);
    buf_be16(b, c);
    buf_be16(b, len);
    buf_raw(b, payload, len);
}

static void expect_cmd_err(FySaveState *s, uint16_t c, uint16_t len,
                           const void *payload, const char *want)
{
    Buf b = { 0 };
    buf_header(&b, "pc");
    cmd(&b, c, len, payload);
    buf_u8(&b, QEMU_VM_EOF);
    EXPECT_ERR(s, &b, REC, want);
    buf_free(&b);
}

static int refuse_ping(void *opaque, FyStream *f, uint16_t c,
                       const uint8_t *payload, uint16_t len, FyError **errp)
{
    if (c == MIG_CMD_PING) {
        fy_error_setg(errp, "no pongs today");
        return -1;
    }
    if (c == MIG_CMD_PACKAGED) {
        /* load the nested stream straight from this one */
        FySaveState *s = opaque;
        return fy_loadvm_state_main(s, f, NULL, NULL, errp);
    }
    return 0;
}

static void test_command_errors(void)
{
    Dst d;
    Buf b = { 0 };
    dst_init(&d, "pc");

    expect_cmd_err(d.s, 0, 0, "", "MIG_CMD 0x0 unknown (len 0x0)");
    expect_cmd_err(d.s, 12, 3, "abc", "MIG_CMD 0xc unknown (len 0x3)");
    expect_cmd_err(d.s, 0xffff, 0, "", "MIG_CMD 0xffff unknown");
    expect_cmd_err(d.s, MIG_CMD_PING, 2, "ab", "command PING received with bad "
                   "length - expecting 4, got 2");
    expect_cmd_err(d.s, MIG_CMD_OPEN_RETURN_PATH, 1, "a", "command OPEN_RETURN_PATH "
                   "received with bad length - expecting 0, got 1");
    expect_cmd_err(d.s, MIG_CMD_PACKAGED, 8, "12345678", "command PACKAGED received "
                   "with bad length - expecting 4, got 8");
    expect_cmd_err(d.s, MIG_CMD_SWITCHOVER_START, 4, "abcd", "expecting 0, got 4");
    expect_cmd_err(d.s, MIG_CMD_POSTCOPY_ADVISE, 8, "12345678",
                   "command POSTCOPY_ADVISE: invalid length 8 (expected 0 or 16)");
    expect_cmd_err(d.s, MIG_CMD_POSTCOPY_RAM_DISCARD, 2, "\0\0",
                   "command POSTCOPY_RAM_DISCARD: payload of 2 bytes is too short");
    expect_cmd_err(d.s, MIG_CMD_POSTCOPY_RAM_DISCARD, 3, "\1\0\0",
                   "command POSTCOPY_RAM_DISCARD: invalid version 1");
    expect_cmd_err(d.s, MIG_CMD_POSTCOPY_RAM_DISCARD, 4, "\0\11ab",
                   "RAM block name of 9 bytes overruns the 4 byte payload");
    expect_cmd_err(d.s, MIG_CMD_POSTCOPY_RAM_DISCARD, 5, "\0\2abX",
                   "missing nil after the RAM block name (found 0x58)");
    expect_cmd_err(d.s, MIG_CMD_POSTCOPY_RAM_DISCARD, 13, "\0\2ab\0" "12345678",
                   "8 bytes of ranges is not a multiple of 16");
    expect_cmd_err(d.s, MIG_CMD_RECV_BITMAP, 3, "\5ab",
                   "command RECV_BITMAP: length 3 does not match the RAM block "
                   "name length 5 + 1");
    expect_cmd_err(d.s, MIG_CMD_RECV_BITMAP, 0, "", "command RECV_BITMAP: length 0");
    expect_cmd_err(d.s, MIG_CMD_PACKAGED, 4, "\x80\0\0\0",
                   "command PACKAGED: nested stream of 2147483648 bytes is larger "
                   "than the 1073741824 byte limit");

    /* Well-formed, but meaningless without a migration around it. */
    expect_cmd_err(d.s, MIG_CMD_POSTCOPY_LISTEN, 0, "",
                   "command POSTCOPY_LISTEN needs a migration context");
    expect_cmd_err(d.s, MIG_CMD_PACKAGED, 4, "\0\0\0\1",
                   "command PACKAGED needs a migration context");
    expect_cmd_err(d.s, MIG_CMD_POSTCOPY_RAM_DISCARD, 21,
                   "\0\2ab\0" "1234567812345678",
                   "command POSTCOPY_RAM_DISCARD needs a migration context");
    expect_cmd_err(d.s, MIG_CMD_RECV_BITMAP, 3, "\2ab",
                   "command RECV_BITMAP needs a migration context");
    expect_cmd_err(d.s, MIG_CMD_ENABLE_COLO, 0, "",
                   "command ENABLE_COLO needs a migration context");

    /* A payload cut short. */
    buf_header(&b, "pc");
    buf_u8(&b, QEMU_VM_COMMAND);
    buf_be16(&b, MIG_CMD_PING);
    buf_be16(&b, 4);
    buf_be16(&b, 7);
    EXPECT_ERR(d.s, &b, REC, "command PING payload: ");
    buf_free(&b);

    /* Accepted without a context: OPEN_RETURN_PATH, PING, SWITCHOVER_START. */
    buf_header(&b, "pc");
    cmd(&b, MIG_CMD_OPEN_RETURN_PATH, 0, "");
    cmd(&b, MIG_CMD_PING, 4, "\0\0\0\1");
    cmd(&b, MIG_CMD_SWITCHOVER_START, 0, "");
    buf_u8(&b, QEMU_VM_EOF);
    EXPECT_OK(d.s, &b);
    buf_free(&b);

    /* A hook's error gets the command and the offset in front. */
    FyLoadHooks hooks = { .opaque = d.s, .command = refuse_ping };
    char *m = NULL;
    buf_header(&b, "pc");
    cmd(&b, MIG_CMD_OPEN_RETURN_PATH, 0, "");
    size_t at = b.len;
    cmd(&b, MIG_CMD_PING, 4, "\0\0\0\1");
    buf_u8(&b, QEMU_VM_EOF);
    T_EQ_INT(load_buf(d.s, b.d, b.len, &hooks, NULL, &m), -1);
    char want[128];
    snprintf(want, sizeof(want), "stream offset %zu: command PING: no pongs today",
             at);
    T_EQ_STR(m, want);
    free(m);
    buf_free(&b);

    /* A package inside a package is refused (bounded nesting). */
    buf_header(&b, "pc");
    cmd(&b, MIG_CMD_PACKAGED, 4, "\0\0\0\x16");
    size_t inner = b.len;
    cmd(&b, MIG_CMD_PACKAGED, 4, "\0\0\0\x0d");
    cmd(&b, MIG_CMD_PACKAGED, 4, "\0\0\0\x00");
    buf_u8(&b, QEMU_VM_EOF);
    T_EQ_INT(load_buf(d.s, b.d, b.len, &hooks, NULL, &m), -1);
    /* the outer record's context, then the inner one's */
    snprintf(want, sizeof(want), "stream offset %d: command PACKAGED: stream "
             "offset %zu: command PACKAGED inside a package", REC, inner);
    T_EQ_STR(m, want);
    free(m);
    buf_free(&b);
    fy_savevm_free(d.s);
}

/* ---- the VM description after EOF ---- */

static void test_vmdesc_errors(void)
{
    Dst d;
    Buf b = { 0 };
    dst_init(&d, "pc");

    buf_header(&b, "pc");
    buf_u8(&b, QEMU_VM_EOF);
    buf_u8(&b, QEMU_VM_VMDESCRIPTION);
    buf_be32(&b, FY_MAX_VMDESC_SIZE + 1);
    EXPECT_ERR(d.s, &b, REC + 1, "VM description of 67108865 bytes is larger than "
               "the 67108864 byte limit");
    buf_free(&b);

    buf_header(&b, "pc");
    buf_u8(&b, QEMU_VM_EOF);
    buf_u8(&b, QEMU_VM_VMDESCRIPTION);
    buf_be32(&b, 4);
    buf_raw(&b, "{abc", 4);
    EXPECT_ERR(d.s, &b, REC + 1, "VM description is not valid JSON: ");
    buf_free(&b);

    buf_header(&b, "pc");
    buf_u8(&b, QEMU_VM_EOF);
    buf_u8(&b, QEMU_VM_VMDESCRIPTION);
    buf_be32(&b, 3);
    buf_raw(&b, "[1]", 3);
    EXPECT_ERR(d.s, &b, REC + 1, "VM description is not a JSON object");
    buf_free(&b);

    buf_header(&b, "pc");
    buf_u8(&b, QEMU_VM_EOF);
    buf_u8(&b, QEMU_VM_VMDESCRIPTION);
    buf_be32(&b, 1000);
    buf_raw(&b, "{}", 2);
    EXPECT_ERR(d.s, &b, REC + 1, "VM description: ");
    EXPECT_ERR(d.s, &b, REC + 1, "stream ends");
    buf_free(&b);

    /* Anything else after EOF is left alone (QEMU only warns). */
    buf_header(&b, "pc");
    buf_u8(&b, QEMU_VM_EOF);
    buf_raw(&b, "junk", 4);
    EXPECT_OK(d.s, &b);
    buf_free(&b);

    /* An empty object is a valid description. */
    FyLoadResult res;
    buf_header(&b, "pc");
    buf_u8(&b, QEMU_VM_EOF);
    buf_u8(&b, QEMU_VM_VMDESCRIPTION);
    buf_be32(&b, 2);
    buf_raw(&b, "{}", 2);
    T_EQ_INT(load_buf(d.s, b.d, b.len, NULL, &res, NULL), 0);
    T_ASSERT(json_is_object(res.vmdesc));
    T_EQ_INT(res.eof_offset, REC);
    json_decref(res.vmdesc);
    buf_free(&b);
    fy_savevm_free(d.s);
}

int main(void)
{
    T_RUN(test_header_errors);
    T_RUN(test_configuration_errors);
    T_RUN(test_configuration_hostile);
    T_RUN(test_section_errors);
    T_RUN(test_entry_errors);
    T_RUN(test_command_errors);
    T_RUN(test_vmdesc_errors);
    return t_done();
}
