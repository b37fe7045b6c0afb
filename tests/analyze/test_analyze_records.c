/*
 * test_analyze_records: every record kind the stream format has, on
 * hand-built streams (written from the format facts, not by the code under
 * test), read as a file and as a pipe.
 *
 * - every QEMU_VM_COMMAND type, valid: counted, PACKAGED walked as a nested
 *   stream (its device section decoded), discard ranges checked against
 *   the RAM blocks and totalled; --summary names each one;
 * - each way a command can be wrong: the exact message and stream offset;
 * - the configuration section's subsections: target-page-bits sets the page
 *   size RAM is read with when no description says it, capabilities and
 *   uuid are decoded, an unknown one is reported;
 * - streams without section footers (machine types older than QEMU 2.4);
 * - the s390 storage-attribute and spapr HTAB sections, including the old
 *   s390 completion that ends with DONE and no EOS.
 */
#include "analyze/analyze-test.h"

#define DESC_DEV "{\"page_size\": 4096, \"devices\": [{\"name\": \"dev\", "       \
    "\"instance_id\": 0, \"version\": 1, \"fields\": [{\"name\": \"v\", "         \
    "\"type\": \"uint32\", \"size\": 4}]}]}"

static void cmd(Sb *b, uint16_t c, const void *payload, uint16_t len)
{
    sb_u8(b, 0x08);
    sb_be16(b, c);
    sb_be16(b, len);
    sb_raw(b, payload, len);
}

/* header, configuration "m", a 64 KiB "pc.ram" announced by MEM_SIZE */
static void head_with_ram(Sb *b)
{
    sb_header(b, "m");
    sb_start(b, 0x01, 2, "ram", 0, 4);
    sb_be64(b, 65536 | 0x04);
    sb_str(b, "pc.ram");
    sb_be64(b, 65536);
    sb_be64(b, 0x10);
    sb_footer(b, 2);
}

static void discard_payload(Sb *p, const char *block, uint8_t version,
                            const uint64_t *ranges, int n)
{
    sb_u8(p, version);
    sb_str(p, block);
    sb_u8(p, 0);
    for (int i = 0; i < 2 * n; i++)
        sb_be64(p, ranges[i]);
}

static An *run_mem(const Sb *b, bool seekable, bool check)
{
    AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true, .check = check };
    return analyze_mem(b->d, b->len, seekable, &o);
}

static void test_every_command(void)
{
    Sb b = { 0 }, p = { 0 };
    head_with_ram(&b);
    cmd(&b, 1, NULL, 0);                                   /* OPEN_RETURN_PATH */
    uint8_t ping[4] = { 0, 0, 0, 42 };
    cmd(&b, 2, ping, 4);                                   /* PING */
    uint8_t advise[16] = { 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x10, 0 };
    cmd(&b, 3, advise, 16);                                /* POSTCOPY_ADVISE */
    const uint64_t ranges[4] = { 0x1000, 0x2000, 0xe000, 0x2000 };
    discard_payload(&p, "pc.ram", 0, ranges, 2);
    cmd(&b, 6, p.d, (uint16_t)p.len);                      /* POSTCOPY_RAM_DISCARD */
    sb_free(&p);
    cmd(&b, 8, NULL, 0);                                   /* ENABLE_COLO */
    cmd(&b, 9, NULL, 0);                                   /* POSTCOPY_RESUME */
    sb_str(&p, "pc.ram");
    cmd(&b, 10, p.d, (uint16_t)p.len);                     /* RECV_BITMAP */
    sb_free(&p);
    cmd(&b, 11, NULL, 0);                                  /* SWITCHOVER_START */
    /* PACKAGED: LISTEN, the device, PING, RUN, EOF -- what postcopy sends */
    cmd(&p, 4, NULL, 0);
    sb_start(&p, 0x04, 3, "dev", 0, 1);
    sb_be32(&p, 0xcafef00d);
    sb_footer(&p, 3);
    cmd(&p, 2, ping, 4);
    cmd(&p, 5, NULL, 0);
    sb_u8(&p, 0x00);
    uint8_t plen[4] = { 0, 0, (uint8_t)(p.len >> 8), (uint8_t)p.len };
    cmd(&b, 7, plen, 4);
    sb_raw(&b, p.d, p.len);
    sb_free(&p);
    sb_part(&b, 0x03, 2);
    sb_be64(&b, 0x10);
    sb_footer(&b, 2);
    sb_end(&b, DESC_DEV);

    static const unsigned want[12] = { 0, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1 };
    for (int s = 0; s < 2; s++) {
        An *a = run_mem(&b, s, true);
        T_ASSERT(!a->failed);
        if (a->failed)
            printf("# %s\n", a->err);
        for (int c = 0; c < 12; c++)
            T_EQ_INT(a->cmd_count[c], want[c]);
        T_EQ_INT(a->discard_ranges, 2);
        T_EQ_INT(a->discard_bytes, 0x4000);
        T_ASSERT(a->postcopy_advised);
        AnSection *dev = find_section(a, "dev", 0);
        T_ASSERT(dev && dev->kind == SEC_DEVICE && dev->value);
        if (dev && dev->value)
            T_EQ_STR(json_string_value(json_object_get(dev->value, "v")), "0xcafef00d");
        /* the package counts as commands, not as the downtime's start */
        T_ASSERT(a->saw_eof);
        char *out = NULL;
        size_t n = 0;
        FILE *m = open_memstream(&out, &n);
        an_print_summary(a, m);
        fclose(m);
        static const char *const names[] = {
            "OPEN_RETURN_PATH       1", "PING                   2",
            "POSTCOPY_ADVISE        1", "POSTCOPY_LISTEN        1",
            "POSTCOPY_RUN           1", "POSTCOPY_RAM_DISCARD   1",
            "PACKAGED               1", "ENABLE_COLO            1",
            "POSTCOPY_RESUME        1", "RECV_BITMAP            1",
            "SWITCHOVER_START       1", "postcopy discards: 2 ranges, 16.0 KiB of RAM",
            "postcopy phase", "offsets 102-230: the discards and the package",
        };
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
            T_CONTAINS(out, names[i]);
        free(out);
        an_free(a);
    }
    sb_free(&b);
}

/* One bad command after the RAM START; want the message at rec + delta.
 * at_end: the stream ends with the command (else EOF and a description). */
static void expect_cmd_error_at(const void *rec, size_t n, uint64_t delta,
                                const char *msg, bool at_end)
{
    Sb b = { 0 };
    head_with_ram(&b);
    uint64_t at = b.len;
    sb_raw(&b, rec, n);
    if (!at_end)
        sb_end(&b, DESC_DEV);
    for (int s = 0; s < 2; s++) {
        An *a = run_mem(&b, s, true);
        T_ASSERT(a->failed);
        T_EQ_INT(a->err_off, at + delta);
        T_CONTAINS(a->err, msg);
        if (!a->failed || a->err_off != at + delta || !strstr(a->err, msg))
            printf("# %s: %s\n", s ? "file" : "pipe", a->err);
        an_free(a);
    }
    sb_free(&b);
}

static void expect_cmd_error(const void *rec, size_t n, uint64_t delta, const char *msg)
{
    expect_cmd_error_at(rec, n, delta, msg, false);
}

static void test_bad_commands(void)
{
    expect_cmd_error("\x08\x00\x00\x00\x00", 5, 1, "expected a command number 1..11, "
                     "found 0x0 (QEMU: \"MIG_CMD 0x0 unknown\")");
    expect_cmd_error("\x08\x00\x0c\x00\x00", 5, 1, "found 0xc (QEMU: \"MIG_CMD 0xc unknown\")");
    expect_cmd_error("\x08\x00\x02\x00\x03\x00\x00\x00", 8, 3,
                     "command PING: expected length 4, found 3");
    expect_cmd_error("\x08\x00\x01\x00\x01\x00", 6, 3,
                     "command OPEN_RETURN_PATH: expected length 0, found 1");
    expect_cmd_error("\x08\x00\x0b\x00\x02\x00\x00", 7, 3,
                     "command SWITCHOVER_START: expected length 0, found 2");
    expect_cmd_error("\x08\x00\x03\x00\x08\x00\x00\x00\x00\x00\x00\x10\x00", 13, 3,
                     "command POSTCOPY_ADVISE: expected length 0 or 16, found 8");
    expect_cmd_error_at("\x08\x00\x02\x00\x04\x00\x00", 7, 5,
                        "command PING: expected 4 bytes of payload, found end of "
                        "stream", true);

    Sb p = { 0 }, c = { 0 };
    const uint64_t in[2] = { 0x1000, 0x1000 }, over[2] = { 0xf000, 0x2000 };
    discard_payload(&p, "pc.ram", 1, in, 1);
    cmd(&c, 6, p.d, (uint16_t)p.len);
    expect_cmd_error(c.d, c.len, 5, "command POSTCOPY_RAM_DISCARD: expected version 0");
    sb_free(&p);
    sb_free(&c);
    discard_payload(&p, "vga", 0, in, 1);
    cmd(&c, 6, p.d, (uint16_t)p.len);
    expect_cmd_error(c.d, c.len, 7, "expected a block listed in MEM_SIZE, found 'vga' "
                     "(QEMU: \"ram_discard_range: Failed to find block 'vga'\")");
    sb_free(&p);
    sb_free(&c);
    discard_payload(&p, "pc.ram", 0, over, 1);
    cmd(&c, 6, p.d, (uint16_t)p.len);
    expect_cmd_error(c.d, c.len, 5 + 9, "expected a range inside 'pc.ram' (0x10000 "
                     "bytes), found 0x2000 bytes at 0xf000");
    sb_free(&p);
    sb_free(&c);
    /* a range list cut in the middle of a range */
    discard_payload(&p, "pc.ram", 0, in, 1);
    p.len -= 3;
    cmd(&c, 6, p.d, (uint16_t)p.len);
    expect_cmd_error(c.d, c.len, 5, "found a 22-byte payload that is not that");
    sb_free(&p);
    sb_free(&c);
    expect_cmd_error("\x08\x00\x0a\x00\x04\x05pc.", 9, 5, "command RECV_BITMAP: "
                     "expected u8 length + block name filling 4 bytes, found length "
                     "byte 5");

    /* PACKAGED: longer than the stream, too long, no EOF inside, too deep */
    expect_cmd_error_at("\x08\x00\x07\x00\x04\x00\x00\x10\x00\x00", 10, 9,
                        "PACKAGED command: expected 4096 bytes of package, found end "
                        "of stream", true);
    expect_cmd_error("\x08\x00\x07\x00\x04\x20\x00\x00\x00", 9, 0,
                     "PACKAGED command: expected at most 268435456 bytes of package, "
                     "found length 536870912");
    /* a package holding a PING and nothing else: neither EOF nor RUN ends it */
    expect_cmd_error("\x08\x00\x07\x00\x04\x00\x00\x00\x09"
                     "\x08\x00\x02\x00\x04\x00\x00\x00\x01", 18, 18,
                     "expected a section type, EOF (0x00) or POSTCOPY_RUN, found the "
                     "end of the package");
    Sb deep = { 0 };
    sb_u8(&deep, 0x00);
    for (int i = 0; i < 5; i++) {
        Sb w = { 0 };
        uint8_t l[4] = { 0, 0, (uint8_t)(deep.len >> 8), (uint8_t)deep.len };
        cmd(&w, 7, l, 4);
        sb_raw(&w, deep.d, deep.len);
        sb_u8(&w, 0x00);
        sb_free(&deep);
        deep = w;
    }
    deep.len--; /* the outermost one is in the main stream: no EOF of its own */
    expect_cmd_error(deep.d, deep.len, 4 * 9, "PACKAGED command nested more than 4 deep");
    sb_free(&deep);
}

/* target-page-bits says 16 KiB pages: without a description (a pipe) RAM
 * is read with them; the capability and uuid subsections are decoded. */
static void test_configuration_subsections(void)
{
    Sb b = { 0 };
    sb_header(&b, "virt-7.2");
    sb_u8(&b, 0x05);
    sb_str(&b, "configuration/target-page-bits");
    sb_be32(&b, 1);
    sb_be32(&b, 14);
    sb_u8(&b, 0x05);
    sb_str(&b, "configuration/capabilities");
    sb_be32(&b, 1);
    sb_be32(&b, 1);
    sb_str(&b, "x-ignore-shared");
    sb_u8(&b, 0x05);
    sb_str(&b, "configuration/uuid");
    sb_be32(&b, 1);
    sb_raw(&b, "\x12\x34\x56\x78\x9a\xbc\xde\xf0\x11\x22\x33\x44\x55\x66\x77\x88", 16);
    sb_start(&b, 0x01, 2, "ram", 0, 4);
    sb_be64(&b, 0x10000 | 0x04);
    sb_str(&b, "mach-virt.ram");
    sb_be64(&b, 0x10000);
    sb_be64(&b, 0x40000000); /* its GPA: x-ignore-shared */
    sb_be64(&b, 0x10);
    sb_footer(&b, 2);
    sb_part(&b, 0x03, 2);
    uint8_t page[16384];
    memset(page, 0xab, sizeof(page));
    sb_be64(&b, 0x4000 | 0x08); /* page 1 of 16 KiB */
    sb_str(&b, "mach-virt.ram");
    sb_raw(&b, page, sizeof(page));
    sb_be64(&b, 0xc000 | 0x02 | 0x20);
    sb_u8(&b, 0);
    sb_be64(&b, 0x10);
    sb_footer(&b, 2);
    sb_end(&b, "{\"page_size\": 16384, \"devices\": []}");
    for (int s = 0; s < 2; s++) {
        char *dir = make_tmpdir();
        AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true, .check = true,
                     .extract_dir = dir };
        An *a = analyze_mem(b.d, b.len, s, &o);
        T_ASSERT(!a->failed);
        if (a->failed)
            printf("# %s\n", a->err);
        T_EQ_INT(a->ram.ps, 16384);
        T_EQ_INT(a->target_page_bits, 14);
        T_ASSERT(a->cap_ignore_shared);
        T_EQ_INT(a->ram.normal, 1);
        T_EQ_INT(a->ram.zero, 1);
        T_ASSERT(a->ram.nblocks == 1 && a->ram.blocks[0]->mr_addr == 0x40000000);
        json_t *uuid = json_object_get(json_object_get(a->config, "configuration/uuid"),
                                       "uuid");
        T_EQ_STR(json_string_value(uuid),
                 "12 34 56 78 9a bc de f0 11 22 33 44 55 66 77 88");
        json_t *bits = json_object_get(json_object_get(a->config,
                                       "configuration/target-page-bits"),
                                       "target_page_bits");
        T_EQ_STR(json_string_value(bits), "0x0000000e");
        an_free(a);
        char p[4200];
        size_t n;
        snprintf(p, sizeof(p), "%s/mach-virt.ram", dir);
        uint8_t *got = read_file(p, &n);
        T_EQ_INT(n, 0x10000);
        if (got && n == 0x10000) {
            T_EQ_MEM(got + 0x4000, page, sizeof(page));
            T_EQ_INT(got[0] | got[0x3fff] | got[0x8000] | got[0xffff], 0);
        }
        free(got);
        rm_rf(dir);
        free(dir);
    }
    sb_free(&b);

    /* a subsection this version does not know, with no description to size it */
    sb_header(&b, "m");
    uint64_t at = b.len;
    sb_u8(&b, 0x05);
    sb_str(&b, "configuration/future");
    sb_be32(&b, 1);
    sb_be32(&b, 7);
    sb_end(&b, NULL);
    An *a = run_mem(&b, false, true);
    T_ASSERT(a->failed);
    T_EQ_INT(a->err_off, at);
    T_CONTAINS(a->err, "configuration: subsection 'configuration/future' is not one "
               "analyze knows");
    an_free(a);
    sb_free(&b);
}

/* Machine types before QEMU 2.4 send no section footers. */
static void test_no_footers(void)
{
    Sb b = { 0 };
    sb_header(&b, "pc-i440fx-2.3");
    sb_start(&b, 0x01, 2, "ram", 0, 4);
    sb_be64(&b, 8192 | 0x04);
    sb_str(&b, "pc.ram");
    sb_be64(&b, 8192);
    sb_be64(&b, 0x10);
    sb_part(&b, 0x03, 2);
    sb_be64(&b, 0x1000 | 0x02);
    sb_str(&b, "pc.ram");
    sb_u8(&b, 0);
    sb_be64(&b, 0x10);
    sb_start(&b, 0x04, 3, "dev", 0, 1);
    sb_be32(&b, 0x7e7e7e7e); /* footer bytes in the body: no footers to find */
    sb_end(&b, DESC_DEV);
    for (int s = 0; s < 2; s++) {
        An *a = run_mem(&b, s, true);
        if (s == 1) { /* a file: the description is known first */
            T_ASSERT(!a->failed);
            T_EQ_INT(a->footers, 0);
            AnSection *dev = find_section(a, "dev", 0);
            T_ASSERT(dev && dev->value);
            if (dev && dev->value)
                T_EQ_STR(json_string_value(json_object_get(dev->value, "v")), "0x7e7e7e7e");
        } else { /* a pipe: no description yet, no footer to skip to */
            T_ASSERT(a->failed);
            T_CONTAINS(a->err, "cannot tell where this section ends");
            T_CONTAINS(a->err, "the stream has no section footers");
        }
        an_free(a);
    }
    /* ... and with the description given, a pipe decodes it too */
    char err[256];
    json_t *desc = json_loads(DESC_DEV, 0, NULL);
    (void)err;
    AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true, .check = true,
                 .desc_override = desc };
    An *a = analyze_mem(b.d, b.len, false, &o);
    T_ASSERT(!a->failed);
    T_EQ_INT(count_kind(a, SEC_DEVICE), 1);
    an_free(a);
    json_decref(desc);
    sb_free(&b);
}

static void s390_rec(Sb *b, uint64_t gfn, unsigned flags)
{
    sb_be64(b, gfn << 12 | flags);
}

static void test_s390_and_htab(void)
{
    Sb b = { 0 };
    sb_header(&b, "s390-ccw-virtio-7.2");
    sb_start(&b, 0x01, 2, "s390-storage_attributes", 0, 0);
    s390_rec(&b, 0, 0x01); /* setup: EOS */
    sb_footer(&b, 2);
    sb_part(&b, 0x02, 2);
    s390_rec(&b, 16, 0x02); /* MORE: 3 attribute bytes for gfn 16.. */
    sb_be64(&b, 3);
    sb_raw(&b, "\x01\x02\x03", 3);
    s390_rec(&b, 0, 0x01);
    sb_footer(&b, 2);
    sb_part(&b, 0x03, 2);
    s390_rec(&b, 0, 0x08); /* DONE, then (QEMU < 9.0) no EOS */
    sb_footer(&b, 2);
    sb_start(&b, 0x01, 4, "spapr/htab", 0, 1);
    sb_be32(&b, 24); /* the hash shift */
    sb_footer(&b, 4);
    sb_part(&b, 0x03, 4);
    sb_be32(&b, 0);
    sb_be32(&b, 8); /* index 8, */
    sb_be16(&b, 2); /* two valid entries */
    sb_be16(&b, 1);
    for (int i = 0; i < 32; i++)
        sb_u8(&b, (uint8_t)i);
    sb_be32(&b, 0);
    sb_be32(&b, 0); /* end marker */
    sb_footer(&b, 4);
    sb_end(&b, "{\"page_size\": 4096, \"devices\": []}");
    for (int s = 0; s < 2; s++) {
        An *a = run_mem(&b, s, true);
        T_ASSERT(!a->failed);
        if (a->failed)
            printf("# %s\n", a->err);
        T_EQ_INT(count_kind(a, SEC_S390), 1);
        T_EQ_INT(count_kind(a, SEC_HTAB), 1);
        json_t *t = an_state_tree(a);
        T_EQ_STR(json_string_value(json_object_get(t, "s390-storage_attributes (2)")), "");
        T_EQ_STR(json_string_value(json_object_get(t, "spapr/htab (4)")), "");
        json_decref(t);
        an_free(a);
    }
    /* the ERROR flag */
    size_t at = b.len;
    sb_free(&b);
    (void)at;
    sb_header(&b, "s");
    sb_start(&b, 0x01, 2, "s390-storage_attributes", 0, 0);
    at = b.len;
    s390_rec(&b, 0, 0x04);
    sb_footer(&b, 2);
    sb_end(&b, NULL);
    An *a = run_mem(&b, false, true);
    T_ASSERT(a->failed);
    T_EQ_INT(a->err_off, at);
    T_CONTAINS(a->err, "Storage attributes data is incomplete");
    an_free(a);
    sb_free(&b);
}

/* A MEM_SIZE listing `n` one-page blocks "b0".."b<n-1>", then a PAGE for
 * each, named in reverse order (every record looks its block up by name),
 * *page_off receiving the offset of the first page record. */
static void many_blocks(Sb *b, int n, size_t *mem_size_off)
{
    char name[16];
    sb_header(b, "m");
    sb_start(b, 0x01, 2, "ram", 0, 4);
    *mem_size_off = b->len;
    sb_be64(b, (uint64_t)n * 4096 | 0x04);
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "b%d", i);
        sb_str(b, name);
        sb_be64(b, 4096);
    }
    sb_be64(b, 0x10);
    sb_footer(b, 2);
    sb_part(b, 0x03, 2);
    uint8_t page[4096];
    for (int i = n - 1; i >= 0; i--) {
        snprintf(name, sizeof(name), "b%d", i);
        memset(page, i & 0xff, sizeof(page));
        sb_be64(b, 0x08);
        sb_str(b, name);
        sb_raw(b, page, sizeof(page));
    }
    sb_be64(b, 0x10);
    sb_footer(b, 2);
    sb_end(b, "{\"page_size\": 4096, \"devices\": []}");
}

/* Thousands of RAM blocks (the most there may be): every record finds its
 * own block by name; one more than that is refused where MEM_SIZE lists it. */
static void test_many_ram_blocks(void)
{
    Sb b = { 0 };
    size_t off;
    many_blocks(&b, AN_MAX_BLOCKS, &off);
    An *a = run_mem(&b, false, true);
    T_ASSERT(!a->failed);
    if (a->failed)
        printf("# %s\n", a->err);
    T_EQ_INT(a->ram.nblocks, AN_MAX_BLOCKS);
    T_EQ_INT(a->ram.normal, AN_MAX_BLOCKS);
    int wrong = 0;
    for (int i = 0; i < a->ram.nblocks; i++) {
        char name[16];
        snprintf(name, sizeof(name), "b%d", i);
        AnBlock *blk = a->ram.blocks[i];
        wrong += strcmp(blk->name, name) != 0 || blk->normal != 1 ||
                 an_ram_block(a, (const uint8_t *)name, strlen(name)) != blk;
    }
    T_EQ_INT(wrong, 0);
    T_ASSERT(an_ram_block(a, (const uint8_t *)"b4096", 5) == NULL);
    an_free(a);
    sb_free(&b);

    Sb c = { 0 };
    many_blocks(&c, AN_MAX_BLOCKS + 1, &off);
    a = run_mem(&c, false, true);
    T_ASSERT(a->failed);
    /* the 4097th entry: 8 bytes of header, then 4096 entries */
    uint64_t at = off + 8;
    for (int i = 0; i < AN_MAX_BLOCKS; i++)
        at += 1 + (i < 10 ? 2 : i < 100 ? 3 : i < 1000 ? 4 : 5) + 8;
    T_EQ_INT(a->err_off, at);
    T_CONTAINS(a->err, "MEM_SIZE record: more than 4096 RAM blocks");
    an_free(a);
    sb_free(&c);
}

int main(void)
{
    T_RUN(test_every_command);
    T_RUN(test_bad_commands);
    T_RUN(test_configuration_subsections);
    T_RUN(test_no_footers);
    T_RUN(test_s390_and_htab);
    T_RUN(test_many_ram_blocks);
    return t_done();
}
