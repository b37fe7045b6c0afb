/*
 * test_ram.c: the "ram" section on its own, through the savevm writer and
 * loader over an in-memory channel: the wire format (v4 records, ZERO for
 * zero pages, CONTINUE), destination memory left untouched for zero pages,
 * configuration mismatches named in the error, hostile records refused.
 */
#include <fcntl.h>

#include "t.h"
#include "testvm.h"

/* ---- helpers ---- */

static FyChannel *save_to_mem(TestVM *src)
{
    FyChannel *c = fy_channel_mem_new(NULL, 0);
    FyStream *f = fy_stream_new_output(c, false);
    FyError *err = NULL;
    FyRamOptions o = { .detect_zero = true };
    fy_ram_set_options(fy_migration_ram_state(src->mig), &o);
    if (fy_savevm_save_all(src->ss, f, &err) < 0)
        T_FAIL("save: %s", fy_error_msg(err));
    fy_error_free(err);
    fy_stream_close(f, NULL);
    return c;
}

/* Load the bytes into dst; returns the error message (static) or NULL. */
static const char *load_bytes(TestVM *dst, const uint8_t *data, size_t len)
{
    static char msg[1024];
    FyChannel *c = fy_channel_mem_new(data, len);
    FyStream *f = fy_stream_new_input(c, true);
    FyError *err = NULL;
    FyRamOptions o = { .detect_zero = true };
    fy_ram_set_options(fy_migration_ram_state(dst->mig), &o);
    int r = fy_loadvm_state(dst->ss, f, NULL, NULL, &err);
    snprintf(msg, sizeof(msg), "%s", err ? fy_error_msg(err) : "");
    fy_error_free(err);
    fy_stream_close(f, NULL);
    return r < 0 ? msg : NULL;
}

static const char *load_from(TestVM *dst, FyChannel *c)
{
    size_t len;
    const uint8_t *data = fy_channel_mem_data(c, &len);
    return load_bytes(dst, data, len);
}

static uint64_t count_zero_pages(TestVM *vm)
{
    uint64_t n = 0;
    for (int i = 0; i < vm->nblocks; i++)
        for (uint64_t off = 0; off < vm->blocks[i].used_length;
             off += FY_TARGET_PAGE_SIZE)
            n += fy_buffer_is_zero(vm->blocks[i].host + off, FY_TARGET_PAGE_SIZE);
    return n;
}

/* ---- tests ---- */

static void test_buffer_is_zero(void)
{
    static uint8_t page[8192] __attribute__((aligned(64)));
    memset(page, 0, sizeof(page));
    T_ASSERT(fy_buffer_is_zero(page, 4096));
    T_ASSERT(fy_buffer_is_zero(page, 0));
    T_ASSERT(fy_buffer_is_zero(page + 3, 77));
    size_t probes[] = { 0, 1, 63, 64, 65, 2047, 4032, 4095 };
    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
        page[probes[i]] = 0x80;
        T_ASSERT(!fy_buffer_is_zero(page, 4096));
        page[probes[i]] = 0;
    }
    page[100] = 1;
    T_ASSERT(!fy_buffer_is_zero(page + 37, 100));  /* odd start and length */
    T_ASSERT(fy_buffer_is_zero(page + 101, 4000));
    page[100] = 0;
}

static void test_roundtrip(void)
{
    TestVM *src = tvm_new("src", NULL), *dst = tvm_new("dst", NULL);
    tvm_fill(src, 7);
    uint64_t zeros = count_zero_pages(src);
    FyChannel *c = save_to_mem(src);

    FyRamStats st;
    fy_ram_get_stats(fy_migration_ram_state(src->mig), &st);
    uint64_t pages = (fy_ram_list_total(&src->list)) / FY_TARGET_PAGE_SIZE;
    T_EQ_INT(st.duplicate, zeros);
    T_EQ_INT(st.normal, pages - zeros);
    T_EQ_INT(st.total, fy_ram_list_total(&src->list));
    T_EQ_INT(st.remaining, 0);
    T_ASSERT(st.dirty_sync_count >= 2); /* setup + completion */

    const char *e = load_from(dst, c);
    T_ASSERT(e == NULL);
    if (e)
        T_FAIL("load: %s", e);
    T_ASSERT(tvm_ram_equal(src, dst));
    T_ASSERT(tvm_dev_equal(src, dst));

    /* Zero pages never touched the untouched destination memory. */
    fy_ram_get_stats(fy_migration_ram_state(dst->mig), &st);
    T_EQ_INT(st.loaded_zero, zeros);
    T_EQ_INT(st.zero_skipped, zeros);
    T_EQ_INT(st.loaded_normal, pages - zeros);

    fy_channel_close(c, NULL);
    tvm_free(src);
    tvm_free(dst);
}

static void test_zero_ram_stays_unpopulated(void)
{
    TestVM *src = tvm_new("src", NULL), *dst = tvm_new("dst", NULL);
    FyChannel *c = save_to_mem(src);
    size_t len;
    fy_channel_mem_data(c, &len);
    /* 9216 pages as ZERO records: ~9 bytes each plus block names. */
    T_ASSERT(len < 200 * 1024);
    T_ASSERT(load_from(dst, c) == NULL);
    /* The memfd still has no data: not a single page was allocated. */
    errno = 0;
    off_t d = lseek(dst->blocks[0].fd, 0, SEEK_DATA);
    T_ASSERT(d < 0 && errno == ENXIO);
    unsigned char vec[16];
    T_EQ_INT(mincore(dst->blocks[1].host, 16 * FY_TARGET_PAGE_SIZE, vec), 0);
    for (int i = 0; i < 16; i++)
        T_EQ_INT(vec[i] & 1, 0);
    fy_channel_close(c, NULL);
    tvm_free(src);
    tvm_free(dst);
}

static void test_dirty_destination_overwritten(void)
{
    TestVM *src = tvm_new("src", NULL), *dst = tvm_new("dst", NULL);
    tvm_fill(src, 3);
    for (int i = 0; i < dst->nblocks; i++)
        memset(dst->blocks[i].host, 0xa5, dst->blocks[i].used_length);
    FyChannel *c = save_to_mem(src);
    T_ASSERT(load_from(dst, c) == NULL);
    T_ASSERT(tvm_ram_equal(src, dst));
    FyRamStats st;
    fy_ram_get_stats(fy_migration_ram_state(dst->mig), &st);
    T_EQ_INT(st.zero_skipped, 0); /* every zero page had to be cleared */
    /* Loading the same stream again: now the zero pages are known zero. */
    T_ASSERT(load_from(dst, c) == NULL);
    T_ASSERT(tvm_ram_equal(src, dst));
    fy_channel_close(c, NULL);
    tvm_free(src);
    tvm_free(dst);
}

static void test_wire_format(void)
{
    static const TvmBlockSpec one[] = { { "pc.ram", 4 * 4096, true }, { 0 } };
    TestVM *src = tvm_new("src", one);
    memset(src->blocks[0].host + 4096, 0x11, 4096);     /* page 1 data */
    memset(src->blocks[0].host + 3 * 4096, 0x22, 4096); /* page 3 data */
    FyChannel *c = save_to_mem(src);
    size_t len;
    const uint8_t *d = fy_channel_mem_data(c, &len);

    /* MEM_SIZE record: be64 (16384 | 4), "pc.ram", be64 16384, EOS. */
    static const uint8_t mem_size[] = {
        0, 0, 0, 0, 0, 0, 0x40, 0x04, 6, 'p', 'c', '.', 'r', 'a', 'm',
        0, 0, 0, 0, 0, 0, 0x40, 0x00, 0, 0, 0, 0, 0, 0, 0, 0x10 };
    const uint8_t *p = memmem(d, len, mem_size, sizeof(mem_size));
    T_ASSERT(p != NULL);
    /* The iteration: ZERO page 0 with the block name, then CONTINUE. */
    static const uint8_t zero0[] = {
        0, 0, 0, 0, 0, 0, 0, 0x02, 6, 'p', 'c', '.', 'r', 'a', 'm', 0,
        0, 0, 0, 0, 0, 0, 0x10, 0x28 };
    p = memmem(d, len, zero0, sizeof(zero0));
    T_ASSERT(p != NULL);
    if (p) {
        const uint8_t *pg = p + sizeof(zero0);
        T_ASSERT(pg + 4096 + 8 <= d + len);
        T_ASSERT(pg[0] == 0x11 && pg[4095] == 0x11);
        static const uint8_t zero2[] = { 0, 0, 0, 0, 0, 0, 0x20, 0x22, 0 };
        T_EQ_MEM(pg + 4096, zero2, sizeof(zero2));
        static const uint8_t page3[] = { 0, 0, 0, 0, 0, 0, 0x30, 0x28 };
        T_EQ_MEM(pg + 4096 + 9, page3, sizeof(page3));
    }
    fy_channel_close(c, NULL);
    tvm_free(src);
}

static void expect_mismatch(const TvmBlockSpec *src_spec,
                            const TvmBlockSpec *dst_spec, const char *want)
{
    TestVM *src = tvm_new("src", src_spec), *dst = tvm_new("dst", dst_spec);
    tvm_fill(src, 1);
    FyChannel *c = save_to_mem(src);
    const char *e = load_from(dst, c);
    T_ASSERT(e != NULL);
    T_CONTAINS(e, want);
    T_CONTAINS(e, "stream offset");
    fy_channel_close(c, NULL);
    tvm_free(src);
    tvm_free(dst);
}

static void test_config_mismatch(void)
{
    static const TvmBlockSpec a[] = { { "pc.ram", 1 << 20, true },
                                      { "vga.vram", 1 << 16, false }, { 0 } };
    static const TvmBlockSpec bigger[] = { { "pc.ram", 2 << 20, true },
                                           { "vga.vram", 1 << 16, false }, { 0 } };
    static const TvmBlockSpec only_pc[] = { { "pc.ram", 1 << 20, true }, { 0 } };
    static const TvmBlockSpec extra[] = { { "pc.ram", 1 << 20, true },
                                          { "vga.vram", 1 << 16, false },
                                          { "rom", 1 << 16, false }, { 0 } };
    expect_mismatch(a, bigger, "RAM block 'pc.ram' size mismatch: stream has "
                               "0x100000 local has 0x200000");
    expect_mismatch(a, only_pc, "Unknown ramblock 'vga.vram', cannot accept "
                                "migration");
    expect_mismatch(a, extra, "RAM block 'rom' (0x10000 bytes) exists here but "
                              "the stream has no such block");
}

/* ---- hostile records ---- */

typedef struct Crafted {
    uint8_t buf[65536];
    size_t len;
} Crafted;

static void c_put(Crafted *c, const void *p, size_t n)
{
    memcpy(c->buf + c->len, p, n);
    c->len += n;
}
static void c_be32(Crafted *c, uint32_t v)
{
    uint8_t b[4] = { v >> 24, v >> 16, v >> 8, v };
    c_put(c, b, 4);
}
static void c_be64(Crafted *c, uint64_t v)
{
    c_be32(c, (uint32_t)(v >> 32));
    c_be32(c, (uint32_t)v);
}
static void c_str(Crafted *c, const char *s)
{
    uint8_t n = (uint8_t)strlen(s);
    c_put(c, &n, 1);
    c_put(c, s, n);
}

/* Header from the real writer, then a START section of "ram" whose body
 * the test writes; finish() adds footer and EOF. */
static void c_begin(Crafted *c, TestVM *vm, uint32_t version)
{
    FyChannel *ch = fy_channel_mem_new(NULL, 0);
    FyStream *f = fy_stream_new_output(ch, false);
    fy_savevm_state_header(vm->ss, f, NULL);
    fy_stream_close(f, NULL);
    size_t n;
    const uint8_t *d = fy_channel_mem_data(ch, &n);
    c->len = 0;
    c_put(c, d, n);
    fy_channel_close(ch, NULL);
    uint8_t t = QEMU_VM_SECTION_START;
    c_put(c, &t, 1);
    c_be32(c, 9);
    c_str(c, "ram");
    c_be32(c, 0);
    c_be32(c, version);
}

static void c_finish(Crafted *c)
{
    uint8_t t = QEMU_VM_SECTION_FOOTER;
    c_put(c, &t, 1);
    c_be32(c, 9);
    t = QEMU_VM_EOF;
    c_put(c, &t, 1);
}

static void c_mem_size(Crafted *c)
{
    c_be64(c, (1 << 20) + (1 << 16) + RAM_SAVE_FLAG_MEM_SIZE);
    c_str(c, "pc.ram");
    c_be64(c, 1 << 20);
    c_str(c, "vga.vram");
    c_be64(c, 1 << 16);
}

static void expect_refused(TestVM *dst, Crafted *c, const char *want)
{
    const char *e = load_bytes(dst, c->buf, c->len);
    T_ASSERT(e != NULL);
    if (e) {
        T_CONTAINS(e, want);
        T_CONTAINS(e, "RAM record at stream offset");
    }
}

static void test_hostile(void)
{
    static const TvmBlockSpec a[] = { { "pc.ram", 1 << 20, true },
                                      { "vga.vram", 1 << 16, false }, { 0 } };
    TestVM *dst = tvm_new("dst", a);
    Crafted *c = calloc(1, sizeof(*c));
    uint8_t page[4096];
    memset(page, 0x5a, sizeof(page));

    /* A well-formed crafted stream loads (the harness itself is right). */
    c_begin(c, dst, 4);
    c_mem_size(c);
    c_be64(c, 0x2000 | RAM_SAVE_FLAG_PAGE);
    c_str(c, "pc.ram");
    c_put(c, page, sizeof(page));
    c_be64(c, 0x3000 | RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_CONTINUE);
    c_put(c, "", 1);
    c_be64(c, RAM_SAVE_FLAG_MULTIFD_FLUSH);
    c_be64(c, RAM_SAVE_FLAG_EOS);
    c_finish(c);
    T_ASSERT(load_bytes(dst, c->buf, c->len) == NULL);
    T_EQ_INT(dst->blocks[0].host[0x2000], 0x5a);

    c_begin(c, dst, 4);
    /* XBZRLE is accepted now (tests/convergence); compression is not. */
    c_be64(c, 0x1000 | RAM_SAVE_FLAG_COMPRESS_PAGE);
    expect_refused(dst, c, "Unknown combination of migration flags: 0x100");

    c_begin(c, dst, 4);
    c_be64(c, 0x1000 | RAM_SAVE_FLAG_PAGE | RAM_SAVE_FLAG_ZERO);
    expect_refused(dst, c, "Unknown combination of migration flags: 0xa");

    c_begin(c, dst, 4);
    c_be64(c, 0x1000 | RAM_SAVE_FLAG_PAGE | RAM_SAVE_FLAG_CONTINUE);
    expect_refused(dst, c, "CONTINUE but no block was named");

    c_begin(c, dst, 4);
    c_be64(c, (1 << 16) | RAM_SAVE_FLAG_PAGE);
    c_str(c, "vga.vram");
    expect_refused(dst, c, "page offset 0x10000 is past the end of RAM block "
                           "'vga.vram'");

    c_begin(c, dst, 4);
    c_be64(c, 0xffffffffffff0000ull | RAM_SAVE_FLAG_ZERO);
    c_str(c, "pc.ram");
    expect_refused(dst, c, "is past the end of RAM block 'pc.ram'");

    c_begin(c, dst, 4);
    c_be64(c, RAM_SAVE_FLAG_ZERO);
    c_str(c, "nope\x01");
    expect_refused(dst, c, "Unknown ramblock 'nope?'");

    c_begin(c, dst, 4);
    c_be64(c, RAM_SAVE_FLAG_ZERO);
    c_str(c, "pc.ram");
    c_put(c, "\x05", 1);
    expect_refused(dst, c, "has fill byte 0x05 (must be 0)");

    c_begin(c, dst, 4);
    c_be64(c, RAM_SAVE_FLAG_PAGE);
    c_str(c, "pc.ram");
    c_put(c, page, 100); /* truncated page */
    expect_refused(dst, c, "reading a page");

    c_begin(c, dst, 4);
    c_be64(c, (2 << 20) | RAM_SAVE_FLAG_MEM_SIZE);
    c_str(c, "pc.ram");
    c_be64(c, 1 << 20);
    c_str(c, "pc.ram");
    c_be64(c, 1 << 20);
    expect_refused(dst, c, "RAM block 'pc.ram' is listed twice");

    c_begin(c, dst, 4);
    c_be64(c, (1 << 16) | RAM_SAVE_FLAG_MEM_SIZE);
    c_str(c, "pc.ram");
    c_be64(c, 1 << 20);
    expect_refused(dst, c, "add up to more than the total 0x10000");

    c_begin(c, dst, 3);
    c_be64(c, RAM_SAVE_FLAG_EOS);
    c_finish(c);
    const char *e = load_bytes(dst, c->buf, c->len);
    T_ASSERT(e != NULL);
    T_CONTAINS(e, "RAM section version 3 is not supported (expected 4)");

    free(c);
    tvm_free(dst);
}

int main(void)
{
    T_RUN(test_buffer_is_zero);
    T_RUN(test_roundtrip);
    T_RUN(test_zero_ram_stays_unpopulated);
    T_RUN(test_dirty_destination_overwritten);
    T_RUN(test_wire_format);
    T_RUN(test_config_mismatch);
    T_RUN(test_hostile);
    return t_done();
}
