/*
 * test_analyze_xbzrle: XBZRLE decoding and the other RAM records, on
 * hand-built streams.
 *
 * The decoder follows QEMU's rules; it is checked on the worked example of
 * docs/xbzrle.txt, on each way an encoding can be bad, against ferry's own
 * encoder (random pages: encode with fy_xbzrle_encode, decode here, get the
 * new page back) and against ferry's loader-side decoder (same verdict on
 * random bytes). Then a stream whose RAM goes through PAGE, ZERO,
 * CONTINUE, a zlib page, XBZRLE deltas over earlier versions and a final
 * ZERO over a delta-patched page must extract to exactly the RAM it leaves.
 */
#include "analyze/analyze-test.h"
#include "ferry/xbzrle.h"

static void test_docs_example(void)
{
    /* zrun=1001, nzrun=15, zrun=3, nzrun=1, zrun=1, nzrun=1 */
    uint8_t enc[64], page[4096], want[4096];
    size_t n = 0;
    enc[n++] = 0xe9;
    enc[n++] = 0x07;
    enc[n++] = 0x0f;
    for (int i = 0; i < 15; i++)
        enc[n++] = (uint8_t)(0xa0 + i);
    enc[n++] = 0x03;
    enc[n++] = 0x01;
    enc[n++] = 0x67;
    enc[n++] = 0x01;
    enc[n++] = 0x01;
    enc[n++] = 0x69;
    memset(page, 0x11, sizeof(page));
    memcpy(want, page, sizeof(want));
    for (int i = 0; i < 15; i++)
        want[1001 + i] = (uint8_t)(0xa0 + i);
    want[1019] = 0x67;
    want[1021] = 0x69;
    char why[200];
    T_EQ_INT(an_xbzrle_decode(enc, n, page, sizeof(page), why, sizeof(why)), 0);
    T_EQ_MEM(page, want, sizeof(page));
}

static void expect_bad(const uint8_t *enc, size_t n, const char *reason)
{
    uint8_t page[4096] = { 0 };
    char why[200] = "";
    T_EQ_INT(an_xbzrle_decode(enc, n, page, sizeof(page), why, sizeof(why)), -1);
    T_CONTAINS(why, reason);
}

static void test_bad_encodings(void)
{
    expect_bad((const uint8_t[]){ 5 }, 1, "no data run after it");
    expect_bad((const uint8_t[]){ 5, 0, 1 }, 3, "empty data run");
    expect_bad((const uint8_t[]){ 0x85, 0x80, 1, 1 }, 4, "longer than 14 bits");
    expect_bad((const uint8_t[]){ 1, 1, 9, 0, 1, 1 }, 6, "empty zero run");
    expect_bad((const uint8_t[]){ 0xff, 0x7f, 1, 1 }, 4, "zero run goes to byte");
    expect_bad((const uint8_t[]){ 0xff, 0x1f, 2, 1, 1 }, 5, "data run goes to byte");
    expect_bad((const uint8_t[]){ 0, 5, 1, 2 }, 4, "goes past the 4 encoded bytes");
    expect_bad((const uint8_t[]){ 5, 1 }, 2, "cut short");
    expect_bad((const uint8_t[]){ 0, 1, 7, 3 }, 4, "zero run at byte 3 has no data run");
    /* the first zero run may be empty; an empty encoding changes nothing */
    uint8_t page[4096] = { 0 };
    char why[64];
    T_EQ_INT(an_xbzrle_decode((const uint8_t[]){ 0, 1, 9 }, 3, page, 4096, why, 64), 0);
    T_EQ_INT(page[0], 9);
    T_EQ_INT(an_xbzrle_decode(NULL, 0, page, 4096, why, 64), 0);
}

static uint32_t rng = 2463534242u;
static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

/* ferry's encoder -> this decoder gives the new page back. */
static void test_against_ferry_encoder(void)
{
    uint8_t old[4096], neu[4096], enc[4096], got[4096];
    int encoded = 0;
    for (int round = 0; round < 2000; round++) {
        for (int i = 0; i < 4096; i++)
            old[i] = (uint8_t)next();
        memcpy(neu, old, sizeof(neu));
        int changes = 1 + (int)(next() % 40);
        for (int c = 0; c < changes; c++) {
            int at = (int)(next() % 4096), len = 1 + (int)(next() % 64);
            for (int k = 0; k < len && at + k < 4096; k++)
                neu[at + k] = (uint8_t)next();
        }
        int n = fy_xbzrle_encode(old, neu, 4096, enc, sizeof(enc));
        if (n <= 0)
            continue; /* overflow (sent as a normal page) or unchanged */
        encoded++;
        memcpy(got, old, sizeof(got));
        char why[200];
        int r = an_xbzrle_decode(enc, (size_t)n, got, sizeof(got), why, sizeof(why));
        T_EQ_INT(r, 0);
        if (r < 0)
            printf("# round %d: %s\n", round, why);
        if (memcmp(got, neu, sizeof(got))) {
            T_FAIL("round %d: decoded page differs", round);
            break;
        }
    }
    T_ASSERT(encoded > 1000);
}

/* Same verdict as ferry's (QEMU-exact) decoder on random encodings. */
static void test_same_verdict_as_ferry(void)
{
    uint8_t enc[64], p1[4096], p2[4096];
    int disagree = 0;
    for (int round = 0; round < 20000; round++) {
        size_t n = next() % sizeof(enc);
        for (size_t i = 0; i < n; i++) {
            uint32_t v = next();
            /* mostly small lengths, so some encodings are valid */
            enc[i] = (uint8_t)((v & 0x300) ? v % 24 : v);
        }
        memset(p1, 0, sizeof(p1));
        memset(p2, 0, sizeof(p2));
        char why[200];
        FyError *err = NULL;
        int a = an_xbzrle_decode(enc, n, p1, sizeof(p1), why, sizeof(why));
        int b = fy_xbzrle_decode(enc, n, p2, sizeof(p2), &err);
        fy_error_free(err);
        if ((a < 0) != (b < 0) || (a == 0 && memcmp(p1, p2, sizeof(p1)))) {
            if (disagree++ < 3)
                printf("# round %d: analyze %d, ferry %d\n", round, a, b);
        }
    }
    T_EQ_INT(disagree, 0);
}

static void test_kitchen_sink_ram(void)
{
    static uint8_t exp_ram[65536], exp_vga[8192];
    Sb b = { 0 };
    ks_build(&b, exp_ram, exp_vga);
    for (int seekable = 0; seekable < 2; seekable++) {
        char *dir = make_tmpdir();
        AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true, .extract_dir = dir };
        An *a = analyze_mem(b.d, b.len, seekable, &o);
        T_ASSERT(!a->failed);
        if (a->failed)
            printf("# %s\n", a->err);
        T_EQ_INT(a->ram.normal, 3);
        T_EQ_INT(a->ram.zero, 2);
        T_EQ_INT(a->ram.compressed, 1);
        T_EQ_INT(a->ram.xbzrle, 2);
        T_EQ_INT(a->ram.flushes, 1);
        T_EQ_INT(a->ram.sections, 4);
        T_EQ_INT(a->ram.resent, 3);
        T_EQ_INT(a->cmd_count[1], 1);
        T_EQ_INT(a->cmd_count[2], 1);
        T_EQ_INT(a->cmd_count[7], 1);
        an_free(a);
        char path[4200];
        size_t n;
        snprintf(path, sizeof(path), "%s/pc.ram", dir);
        uint8_t *got = read_file(path, &n);
        T_EQ_INT(n, sizeof(exp_ram));
        if (got && n == sizeof(exp_ram))
            T_EQ_MEM(got, exp_ram, n);
        free(got);
        snprintf(path, sizeof(path), "%s/vga", dir);
        got = read_file(path, &n);
        T_EQ_INT(n, sizeof(exp_vga));
        if (got && n == sizeof(exp_vga))
            T_EQ_MEM(got, exp_vga, n);
        free(got);
        rm_rf(dir);
        free(dir);
    }
    sb_free(&b);
}

static void test_kitchen_sink_device(void)
{
    static uint8_t exp_ram[65536], exp_vga[8192];
    Sb b = { 0 };
    ks_build(&b, exp_ram, exp_vga);
    const char *want =
        "{\"a\": \"0xdeadbeef\", \"b\": \"0xfffe (-2)\", \"flag\": true, "
        "\"regs\": [\"0x0000000000000001\", \"0x0000000000000002\", "
        "\"0x8000000000000000\"], \"buf\": \"01 02 03 04 05\", \"ptr\": \"nullptr\", "
        "\"cap\": \"x-ignore-shared\", \"s\": {\"x\": \"0x09\", \"inner/sub\": "
        "{\"y\": \"0x1234\"}}, \"e\": \"0x80 (-128)\", \"dev/extra\": "
        "{\"z\": \"0xffffffff (-1)\"}}";
    json_t *w = json_loads(want, 0, NULL);
    T_ASSERT(w != NULL);
    for (int seekable = 0; seekable < 2; seekable++) {
        An *a = analyze_mem(b.d, b.len, seekable, NULL);
        T_ASSERT(!a->failed);
        AnSection *dev = find_section(a, "dev", 0), *pkg = find_section(a, "pkg", 0);
        T_ASSERT(dev && dev->value && json_equal(dev->value, w));
        if (dev && dev->value && !json_equal(dev->value, w)) {
            char *s = json_dumps(dev->value, 0);
            printf("# got %s\n", s);
            free(s);
        }
        T_ASSERT(pkg && pkg->value);
        if (pkg && pkg->value)
            T_EQ_STR(json_string_value(json_object_get(pkg->value, "v")), "0x42");
        T_EQ_STR(a->machine, "kitchen-1.0");
        an_free(a);
    }
    json_decref(w);
    sb_free(&b);
}

/* A stream with one RAM record after MEM_SIZE; `rec` is the record. */
static An *ram_record_stream(const uint8_t *rec, size_t n, uint64_t *rec_off)
{
    Sb b = { 0 };
    sb_header(&b, "t");
    sb_start(&b, 0x01, 2, "ram", 0, 4);
    sb_be64(&b, 65536 | 0x04);
    sb_str(&b, "pc.ram");
    sb_be64(&b, 65536);
    sb_be64(&b, 0x10);
    sb_footer(&b, 2);
    sb_part(&b, 0x02, 2);
    *rec_off = b.len;
    sb_raw(&b, rec, n);
    sb_be64(&b, 0x10);
    sb_footer(&b, 2);
    sb_end(&b, "{\"page_size\": 4096, \"devices\": []}");
    AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true, .check = true };
    An *a = analyze_mem(b.d, b.len, false, &o);
    sb_free(&b);
    return a;
}

static void expect_ram_error(const uint8_t *rec, size_t n, uint64_t delta,
                             const char *msg)
{
    uint64_t off;
    An *a = ram_record_stream(rec, n, &off);
    T_ASSERT(a->failed);
    T_EQ_INT(a->err_off, off + delta);
    T_CONTAINS(a->err, msg);
    T_CONTAINS(a->err, "section 'ram' (id 2): ");
    if (!strstr(a->err, msg) || a->err_off != off + delta)
        printf("# %s\n", a->err);
    an_free(a);
}

static void test_bad_ram_records(void)
{
    /* header: be64 0x1000|XBZRLE, "pc.ram" */
    uint8_t r[64] = { 0, 0, 0, 0, 0, 0, 0x10, 0x40, 6, 'p', 'c', '.', 'r', 'a', 'm' };
    r[15] = 2; /* wrong encoding flag */
    expect_ram_error(r, 19, 15, "expected encoding flag 0x01, found 0x02");
    r[15] = 1;
    r[16] = 0x13; /* length 0x1388 = 5000 */
    r[17] = 0x88;
    expect_ram_error(r, 19, 16, "len overflow");
    r[16] = 0;
    r[17] = 3;
    r[18] = 0;
    r[19] = 0;
    r[20] = 1; /* zrun 0, nzrun 0: bad */
    expect_ram_error(r, 21, 18, "empty data run");
    /* unknown flag combination: ZERO|PAGE */
    uint8_t z[] = { 0, 0, 0, 0, 0, 0, 0x10, 0x0a, 6, 'p', 'c', '.', 'r', 'a', 'm' };
    expect_ram_error(z, sizeof(z), 0, "Unknown combination of migration flags: 0xa");
    /* page offset past the block */
    uint8_t o[] = { 0, 0, 0, 0, 0, 1, 0, 0x02, 6, 'p', 'c', '.', 'r', 'a', 'm', 0 };
    expect_ram_error(o, sizeof(o), 0, "Illegal RAM offset");
    /* CONTINUE as the first page record of the stream */
    uint8_t c[] = { 0, 0, 0, 0, 0, 0, 0x10, 0x22, 0 };
    expect_ram_error(c, sizeof(c), 0, "Ack, bad migration stream!");
    /* a zero page whose fill byte is not zero: accepted (QEMU 7.2 fills) */
    uint64_t off;
    uint8_t f[] = { 0, 0, 0, 0, 0, 0, 0x10, 0x02, 6, 'p', 'c', '.', 'r', 'a', 'm', 0x5a };
    An *a = ram_record_stream(f, sizeof(f), &off);
    T_ASSERT(!a->failed);
    T_EQ_INT(a->ram.zero_nonzero_fill, 1);
    an_free(a);
}

/* -m lists pages in first-seen order with their final contents. */
static void test_memory_dump(void)
{
    static uint8_t exp_ram[65536], exp_vga[8192];
    Sb b = { 0 };
    ks_build(&b, exp_ram, exp_vga);
    AnOpts o = { .dump = AN_DUMP_STATE, .quiet = true, .dump_memory = true };
    An *a = analyze_mem(b.d, b.len, false, &o);
    T_ASSERT(!a->failed);
    char *out = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&out, &len);
    T_EQ_INT(an_print_state(a, m), 0);
    fclose(m);
    json_t *j = json_loads(out, 0, NULL);
    T_ASSERT(j != NULL);
    json_t *mem = json_object_get(json_object_get(j, "ram (2)"), "memory");
    T_EQ_INT(json_object_size(mem), 5);
    T_EQ_STR(json_string_value(json_object_get(mem, "pc.ram (0x0000000000001000)")),
             "Filled with 0x00");
    T_EQ_STR(json_string_value(json_object_get(mem, "pc.ram (0x0000000000002000)")),
             "Filled with 0x00");
    const char *p0 = json_string_value(json_object_get(mem, "pc.ram (0x0000000000000000)"));
    T_ASSERT(p0 && strlen(p0) == 4096 * 3 - 1);
    if (p0) {
        char want[8];
        snprintf(want, sizeof(want), "%02x %02x", exp_ram[0], exp_ram[1]);
        T_ASSERT(!strncmp(p0, want, 5));
        T_ASSERT(!strncmp(p0 + 100 * 3, "aa aa aa aa", 11));
    }
    /* first-seen order: page 0, 1, 2 of pc.ram, then vga 0, then page 15 */
    const char *k;
    json_t *v;
    int i = 0;
    const char *order[] = { "pc.ram (0x0000000000000000)", "pc.ram (0x0000000000001000)",
                            "pc.ram (0x0000000000002000)", "vga (0x0000000000000000)",
                            "pc.ram (0x000000000000f000)" };
    json_object_foreach(mem, k, v) {
        if (i < 5)
            T_EQ_STR(k, order[i]);
        i++;
    }
    json_decref(j);
    free(out);
    an_free(a);
    sb_free(&b);
}

/* Newer QEMU describes the configuration section in the description: it is
 * then decoded from it, and its validated capabilities change the RAM
 * format (x-ignore-shared adds each block's GPA to MEM_SIZE). Read as a
 * file (description first) and as a pipe (built-in layout). */
static void test_described_configuration(void)
{
    const char *desc =
        "{\"page_size\": 4096, \"configuration\": {\"vmsd_name\": \"configuration\", "
        "\"version\": 1, \"fields\": [{\"name\": \"len\", \"type\": \"uint32\", "
        "\"size\": 4}, {\"name\": \"name\", \"type\": \"buffer\", \"size\": 10}], "
        "\"subsections\": [{\"vmsd_name\": \"configuration/capabilities\", "
        "\"version\": 1, \"fields\": [{\"name\": \"caps_count\", \"type\": "
        "\"uint32\", \"size\": 4}, {\"name\": \"capabilities\", \"array_len\": 1, "
        "\"type\": \"capability\", \"size\": 16}]}]}, \"devices\": []}";
    Sb b = { 0 };
    sb_be32(&b, 0x5145564d);
    sb_be32(&b, 3);
    sb_u8(&b, 0x07);
    sb_be32(&b, 10);
    sb_raw(&b, "pc-q35-9.2", 10);
    sb_u8(&b, 0x05);
    sb_str(&b, "configuration/capabilities");
    sb_be32(&b, 1);
    sb_be32(&b, 1);
    sb_str(&b, "x-ignore-shared");
    sb_start(&b, 0x01, 2, "ram", 0, 4);
    sb_be64(&b, 8192 | 0x04);
    sb_str(&b, "pc.ram");
    sb_be64(&b, 8192);
    sb_be64(&b, 0x100000000ull); /* GPA */
    sb_be64(&b, 0x10);
    sb_footer(&b, 2);
    sb_part(&b, 0x03, 2);
    sb_be64(&b, 0x1000 | 0x02);
    sb_str(&b, "pc.ram");
    sb_u8(&b, 0);
    sb_be64(&b, 0x10);
    sb_footer(&b, 2);
    sb_end(&b, desc);
    for (int seekable = 0; seekable < 2; seekable++) {
        AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true, .check = true };
        An *a = analyze_mem(b.d, b.len, seekable, &o);
        T_ASSERT(!a->failed);
        if (a->failed)
            printf("# %s\n", a->err);
        T_EQ_STR(a->machine, "pc-q35-9.2");
        T_ASSERT(a->cap_ignore_shared);
        T_EQ_INT(a->ram.nblocks, 1);
        if (a->ram.nblocks == 1) {
            T_ASSERT(a->ram.blocks[0]->has_mr_addr);
            T_EQ_INT(a->ram.blocks[0]->mr_addr, 0x100000000ull);
        }
        T_EQ_INT(a->ram.zero, 1);
        an_free(a);
    }
    sb_free(&b);
}

/* mapped-ram (QEMU 9.0+ file migration): per block a header in MEM_SIZE,
 * the bitmap and the pages at fixed offsets, the stream going on after
 * the pages. Only pages whose bit is set hold data. */
static void test_mapped_ram(void)
{
    Sb b = { 0 };
    sb_be32(&b, 0x5145564d);
    sb_be32(&b, 3);
    sb_u8(&b, 0x07);
    sb_be32(&b, 1);
    sb_raw(&b, "m", 1);
    sb_u8(&b, 0x05);
    sb_str(&b, "configuration/capabilities");
    sb_be32(&b, 1);
    sb_be32(&b, 1);
    sb_str(&b, "mapped-ram");
    sb_start(&b, 0x01, 2, "ram", 0, 4);
    sb_be64(&b, 4 * 4096 | 0x04);
    sb_str(&b, "pc.ram");
    sb_be64(&b, 4 * 4096);
    uint64_t bitmap = b.len + 28, pages = 8192;
    sb_be32(&b, 1);
    sb_be64(&b, 4096);
    sb_be64(&b, bitmap);
    sb_be64(&b, pages);
    sb_u8(&b, 0x05); /* pages 0 and 2 */
    while (b.len < pages)
        sb_u8(&b, 0);
    uint8_t page[4096];
    static uint8_t want[4 * 4096];
    for (int p = 0; p < 4; p++) {
        ks_page_pattern(page, (unsigned)p + 10);
        if (p == 0 || p == 2)
            memcpy(want + p * 4096, page, 4096);
        sb_raw(&b, page, 4096); /* pages 1 and 3: stale bytes, not data */
    }
    sb_be64(&b, 0x10);
    sb_footer(&b, 2);
    sb_end(&b, "{\"page_size\": 4096, \"devices\": []}");
    for (int seekable = 0; seekable < 2; seekable++) {
        char *dir = make_tmpdir();
        AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true, .check = true,
                     .extract_dir = dir };
        An *a = analyze_mem(b.d, b.len, seekable, &o);
        T_ASSERT(!a->failed);
        if (a->failed)
            printf("# %s\n", a->err);
        T_EQ_INT(a->ram.mapped, 2);
        an_free(a);
        char p[4200];
        size_t n;
        snprintf(p, sizeof(p), "%s/pc.ram", dir);
        uint8_t *got = read_file(p, &n);
        T_EQ_INT(n, sizeof(want));
        if (got && n == sizeof(want))
            T_EQ_MEM(got, want, n);
        free(got);
        rm_rf(dir);
        free(dir);
    }
    sb_free(&b);
}

/* After POSTCOPY_ADVISE, a block whose page size differs from the host's
 * carries it in MEM_SIZE. */
static void test_postcopy_page_size(void)
{
    Sb b = { 0 };
    sb_header(&b, "m");
    sb_u8(&b, 0x08);
    sb_be16(&b, 3);
    sb_be16(&b, 16);
    sb_be64(&b, 4096);
    sb_be64(&b, 4096);
    sb_start(&b, 0x01, 2, "ram", 0, 4);
    sb_be64(&b, ((2 << 20) + 4096) | 0x04);
    sb_str(&b, "huge");
    sb_be64(&b, 2 << 20);
    sb_be64(&b, 2 << 20); /* its page size */
    sb_str(&b, "small");
    sb_be64(&b, 4096);
    sb_be64(&b, 0x10);
    sb_footer(&b, 2);
    sb_end(&b, "{\"page_size\": 4096, \"devices\": []}");
    AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true, .check = true };
    An *a = analyze_mem(b.d, b.len, false, &o);
    T_ASSERT(!a->failed);
    if (a->failed)
        printf("# %s\n", a->err);
    T_EQ_INT(a->ram.nblocks, 2);
    if (a->ram.nblocks == 2) {
        T_ASSERT(a->ram.blocks[0]->has_remote_page_size);
        T_EQ_INT(a->ram.blocks[0]->remote_page_size, 2 << 20);
        T_ASSERT(!a->ram.blocks[1]->has_remote_page_size);
    }
    T_EQ_INT(a->cmd_count[3], 1);
    an_free(a);
    sb_free(&b);
}

int main(void)
{
    T_RUN(test_docs_example);
    T_RUN(test_bad_encodings);
    T_RUN(test_against_ferry_encoder);
    T_RUN(test_same_verdict_as_ferry);
    T_RUN(test_kitchen_sink_ram);
    T_RUN(test_kitchen_sink_device);
    T_RUN(test_bad_ram_records);
    T_RUN(test_memory_dump);
    T_RUN(test_described_configuration);
    T_RUN(test_mapped_ram);
    T_RUN(test_postcopy_page_size);
    return t_done();
}
