/*
 * test_postcopy_discard.c: POSTCOPY_RAM_DISCARD -- the payload parser on
 * good and hostile input, the source's builder (chunking to the be16
 * length and to QEMU's 12 ranges), huge-page chunking, and application to
 * a real memfd: discarded pages become holes and stop counting as
 * received, and a bad payload changes nothing.
 */
#include <fcntl.h>

#include "pc-test.h"
#include "ram/bitmap.h"
#include "t.h"

typedef struct {
    uint8_t *buf;
    size_t len;
} Payload;

static uint8_t *mk_payload(const char *name, const uint64_t *pairs, unsigned n,
                           size_t *len)
{
    size_t nl = strlen(name);
    *len = 3 + nl + 16 * (size_t)n;
    uint8_t *p = calloc(1, *len);
    p[0] = 0;
    p[1] = (uint8_t)nl;
    memcpy(p + 2, name, nl);
    p[2 + nl] = 0;
    for (unsigned i = 0; i < 2 * n; i++)
        for (int b = 0; b < 8; b++)
            p[3 + nl + 8 * i + (size_t)b] = (uint8_t)(pairs[i] >> (56 - 8 * b));
    return p;
}

static void test_parse_golden(void)
{
    static const uint8_t g[] = {
        0, 6, 'p', 'c', '.', 'r', 'a', 'm', 0,
        0, 0, 0, 0, 0, 0, 0x20, 0x00,   0, 0, 0, 0, 0, 0, 0x10, 0x00,
        0, 0, 0, 0, 0, 0x01, 0, 0,      0, 0, 0, 0, 0, 0, 0x30, 0x00,
    };
    FyPostcopyDiscard pd;
    FyError *err = NULL;
    T_EQ_INT(fy_postcopy_discard_parse(g, sizeof(g), &pd, &err), 0);
    T_EQ_STR(pd.idstr, "pc.ram");
    T_EQ_INT(pd.count, 2);
    uint64_t s, l;
    fy_postcopy_discard_range(&pd, 0, &s, &l);
    T_EQ_INT(s, 0x2000);
    T_EQ_INT(l, 0x1000);
    fy_postcopy_discard_range(&pd, 1, &s, &l);
    T_EQ_INT(s, 0x10000);
    T_EQ_INT(l, 0x3000);

    uint64_t pairs[] = { 0x2000, 0x1000, 0x10000, 0x3000 };
    size_t len;
    uint8_t *p = mk_payload("pc.ram", pairs, 2, &len);
    T_EQ_INT(len, sizeof(g));
    T_EQ_MEM(p, g, sizeof(g));
    free(p);
}

static void expect_parse_error(const uint8_t *p, size_t len, const char *msg)
{
    FyPostcopyDiscard pd;
    FyError *err = NULL;
    T_EQ_INT(fy_postcopy_discard_parse(p, len, &pd, &err), -1);
    T_CONTAINS(fy_error_msg(err), msg);
    fy_error_free(err);
}

static void test_parse_hostile(void)
{
    uint64_t pairs[] = { 0, 4096 };
    size_t len;
    uint8_t *p = mk_payload("pc.ram", pairs, 1, &len);

    expect_parse_error(p, 19, "length 19 is too short");
    expect_parse_error(p, 0, "length 0 is too short");
    p[0] = 1;
    expect_parse_error(p, len, "version 1 (expected 0)");
    p[0] = 0;
    p[1] = 200;     /* name runs past the payload */
    expect_parse_error(p, len, "name length 200 does not fit the 25 byte payload");
    p[1] = 0;
    expect_parse_error(p, len, "name length 0");
    p[1] = 6;
    p[8] = 'x';     /* the nil */
    expect_parse_error(p, len, "missing nil after the RAM block name 'pc.ram' "
                       "(found 0x78)");
    p[8] = 0;
    p[4] = 0;       /* NUL inside the name */
    expect_parse_error(p, len, "NUL");
    p[4] = '.';
    expect_parse_error(p, len - 1, "15 bytes of ranges");
    /* A longer name swallowing the nil: its last byte is NUL. */
    p[1] = 7;
    expect_parse_error(p, len, "NUL");
    free(p);

    /* Every length from 0 to a full payload, on random bytes: no crash,
     * and any accepted parse stays within the buffer. */
    uint8_t rnd[600];
    srand(7);
    for (int iter = 0; iter < 2000; iter++) {
        size_t n = (size_t)rand() % sizeof(rnd);
        for (size_t i = 0; i < n; i++)
            rnd[i] = (uint8_t)rand();
        if (iter % 2) {
            rnd[0] = 0;
            if (n > 2)
                rnd[1] = (uint8_t)(rand() % 8);
            if (n > 3 + (size_t)rnd[1])
                rnd[2 + rnd[1]] = 0;
        }
        FyPostcopyDiscard pd;
        FyError *err = NULL;
        if (fy_postcopy_discard_parse(rnd, n, &pd, &err) == 0) {
            T_ASSERT(pd.ranges + 16 * (size_t)pd.count == rnd + n);
            T_ASSERT(pd.count >= 1);
        } else {
            fy_error_free(err);
        }
    }
}

typedef struct {
    Payload p[64];
    int n;
    int fail_at;
} Emitted;

static int collect(void *opaque, const uint8_t *payload, uint16_t len, FyError **errp)
{
    Emitted *e = opaque;
    if (e->n == e->fail_at) {
        fy_error_setg(errp, "emit failed");
        return -1;
    }
    e->p[e->n].buf = malloc(len);
    memcpy(e->p[e->n].buf, payload, len);
    e->p[e->n].len = len;
    e->n++;
    return 0;
}

static void emitted_free(Emitted *e)
{
    for (int i = 0; i < e->n; i++)
        free(e->p[i].buf);
    e->n = 0;
}

static void test_build(void)
{
    FyRamBlock rb = { .idstr = "pc.ram", .used_length = 10000ull << 12,
                      .page_size = 4096, .fd = -1 };
    uint64_t nbits = 10000;
    unsigned long *map = fy_bitmap_new(nbits);
    FyError *err = NULL;
    Emitted e = { .fail_at = -1 };

    /* Nothing to discard: nothing sent. */
    T_EQ_INT(fy_postcopy_discard_build(&rb, map, nbits, 0, collect, &e, &err), 0);
    T_EQ_INT(e.n, 0);

    /* 30 runs: pages 100*i .. 100*i + i (i + 1 pages). */
    for (uint64_t i = 0; i < 30; i++)
        for (uint64_t j = 0; j <= i; j++)
            fy_set_bit(map, 100 * i + j);
    T_EQ_INT(fy_postcopy_discard_build(&rb, map, nbits, FY_POSTCOPY_DISCARD_QEMU_RANGES,
                                       collect, &e, &err), 3);
    T_EQ_INT(e.n, 3);
    unsigned seen = 0;
    for (int k = 0; k < e.n; k++) {
        FyPostcopyDiscard pd;
        T_EQ_INT(fy_postcopy_discard_parse(e.p[k].buf, e.p[k].len, &pd, &err), 0);
        T_EQ_STR(pd.idstr, "pc.ram");
        T_EQ_INT(pd.count, k < 2 ? 12 : 6);
        for (unsigned r = 0; r < pd.count; r++, seen++) {
            uint64_t s, l;
            fy_postcopy_discard_range(&pd, r, &s, &l);
            T_EQ_INT(s, (100ull * seen) << 12);
            T_EQ_INT(l, (seen + 1ull) << 12);
        }
    }
    T_EQ_INT(seen, 30);
    emitted_free(&e);

    /* Every other page over 10000 pages: 5000 runs; a payload holds
     * (65535 - 9) / 16 = 4095 ranges. Runs reaching the block's end too. */
    fy_bitmap_zero(map, nbits);
    for (uint64_t i = 0; i < nbits; i += 2)
        fy_set_bit(map, i + 1);
    T_EQ_INT(fy_postcopy_discard_build(&rb, map, nbits, 0, collect, &e, &err), 2);
    T_EQ_INT(e.p[0].len, 9 + 16 * 4095);
    T_EQ_INT(e.p[1].len, 9 + 16 * 905);
    FyPostcopyDiscard pd;
    T_EQ_INT(fy_postcopy_discard_parse(e.p[1].buf, e.p[1].len, &pd, &err), 0);
    uint64_t s, l;
    fy_postcopy_discard_range(&pd, pd.count - 1, &s, &l);
    T_EQ_INT(s, 9999ull << 12);
    T_EQ_INT(l, 4096);
    emitted_free(&e);

    /* An emit failure stops the build and passes the error up. */
    e.fail_at = 1;
    T_EQ_INT(fy_postcopy_discard_build(&rb, map, nbits, 0, collect, &e, &err), -1);
    T_CONTAINS(fy_error_msg(err), "emit failed");
    fy_error_clear(&err);
    emitted_free(&e);
    free(map);
}

static void test_hugepage_chunk(void)
{
    FyRamBlock rb = { .idstr = "mem-huge", .used_length = 8ull << 20,
                      .page_size = 2 << 20, .fd = -1 };
    uint64_t nbits = 2048;   /* 4 huge pages of 512 target pages */
    unsigned long *map = fy_bitmap_new(nbits);
    FyError *err = NULL;
    Emitted e = { .fail_at = -1 };

    fy_set_bit(map, 5);
    fy_set_bit(map, 1030);
    fy_set_bit(map, 1031);
    T_EQ_INT(fy_postcopy_discard_build(&rb, map, nbits, 0, collect, &e, &err), -1);
    T_CONTAINS(fy_error_msg(err), "split huge pages");
    fy_error_clear(&err);
    emitted_free(&e);

    T_EQ_INT(fy_postcopy_chunk_hostpages(&rb, map, nbits), 1021);
    T_EQ_INT(fy_bitmap_count(map, nbits), 1024);
    T_ASSERT(fy_test_bit(map, 0) && fy_test_bit(map, 511) && !fy_test_bit(map, 512));
    T_ASSERT(fy_test_bit(map, 1024) && fy_test_bit(map, 1535) && !fy_test_bit(map, 1536));
    T_EQ_INT(fy_postcopy_discard_build(&rb, map, nbits, 0, collect, &e, &err), 1);
    T_EQ_INT(fy_postcopy_discard_parse(e.p[0].buf, e.p[0].len,
                                       &(FyPostcopyDiscard){ 0 }, &err), 0);
    emitted_free(&e);

    /* 4 KiB blocks are left alone. */
    FyRamBlock small = { .idstr = "s", .used_length = 64 << 12, .page_size = 4096 };
    fy_bitmap_zero(map, 64);
    fy_set_bit(map, 3);
    T_EQ_INT(fy_postcopy_chunk_hostpages(&small, map, 64), 0);
    T_EQ_INT(fy_bitmap_count(map, 64), 1);
    free(map);
}

/* ---- application on a real memfd ---- */

static FyRamBlock blk;
static FyRamList ram = { .count = 1, .blocks = { &blk } };

static bool page_is_hole(const FyRamBlock *rb, uint64_t page)
{
    off_t at = (off_t)(page << 12);
    off_t data = lseek(rb->fd, at, SEEK_DATA);
    return data < 0 || data > at;
}

static void test_apply(void)
{
    const uint64_t pages = 32;
    T_EQ_INT(pc_block_init(&blk, "pc.ram", pages << 12), 0);
    FyPostcopyDest *d = fy_postcopy_dest_new(&ram, NULL, NULL);
    FyError *err = NULL;
    uint8_t *payload;
    size_t len;

    /* Before ADVISE: refused. */
    uint64_t p1[] = { 0, 4096 };
    payload = mk_payload("pc.ram", p1, 1, &len);
    T_EQ_INT(fy_postcopy_dest_discard(d, payload, len, &err), -1);
    T_CONTAINS(fy_error_msg(err), "state new");
    fy_error_clear(&err);
    free(payload);

    T_EQ_INT(fy_postcopy_dest_advise(d, &err), 0);
    if (err)
        T_FAIL("%s", fy_error_msg(err));
    /* precopy loaded every page */
    for (uint64_t i = 0; i < pages; i++)
        pc_fill_page(blk.host + (i << 12), 0, i);
    fy_postcopy_dest_mark_received(d, &blk, 0, pages << 12);
    T_EQ_INT(fy_postcopy_dest_pages_remaining(d), 0);

    /* Hostile: a bad range later in the payload -> nothing applied. */
    uint64_t bad[][4] = {
        { 0, 4096, 4096, 0 },                    /* empty */
        { 0, 4096, 100, 4096 },                  /* unaligned start */
        { 0, 4096, 4096, 100 },                  /* unaligned length */
        { 0, 4096, 31 << 12, 8192 },             /* past the end */
        { 0, 4096, 32 << 12, 4096 },             /* starts at the end */
        { 0, 4096, 4096, 0xfffffffffffff000ull },/* wraps */
    };
    const char *why[] = { "range 1 (start 0x1000, length 0x0) of RAM block 'pc.ram' is empty",
                          "not aligned", "not aligned",
                          "runs past the end of the block (0x20000 bytes",
                          "runs past the end", "runs past the end" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        payload = mk_payload("pc.ram", bad[i], 2, &len);
        T_EQ_INT(fy_postcopy_dest_discard(d, payload, len, &err), -1);
        T_CONTAINS(fy_error_msg(err), why[i]);
        fy_error_clear(&err);
        free(payload);
    }
    payload = mk_payload("nope", p1, 1, &len);
    T_EQ_INT(fy_postcopy_dest_discard(d, payload, len, &err), -1);
    T_CONTAINS(fy_error_msg(err), "RAM block 'nope' is unknown");
    fy_error_clear(&err);
    free(payload);
    T_EQ_INT(fy_postcopy_dest_pages_remaining(d), 0);
    T_ASSERT(!page_is_hole(&blk, 0));

    /* Good: pages 2..4 and 10. */
    uint64_t good[] = { 2 << 12, 3 << 12, 10 << 12, 4096 };
    payload = mk_payload("pc.ram", good, 2, &len);
    T_EQ_INT(fy_postcopy_dest_discard(d, payload, len, &err), 0);
    free(payload);
    T_EQ_INT(fy_postcopy_dest_pages_remaining(d), 4);
    uint8_t expect[4096], zero[4096] = { 0 };
    for (uint64_t i = 0; i < pages; i++) {
        bool gone = (i >= 2 && i < 5) || i == 10;
        T_EQ_INT(fy_postcopy_dest_page_received(d, &blk, i << 12), !gone);
        T_EQ_INT(page_is_hole(&blk, i), gone);
        pc_fill_page(expect, 0, i);
        if (gone)
            T_EQ_MEM(blk.host + (i << 12), zero, 4096);
        else
            T_EQ_MEM(blk.host + (i << 12), expect, 4096);
    }

    /* After LISTEN: refused (QEMU's "wrong postcopy state"). */
    T_EQ_INT(fy_postcopy_dest_listen(d, &err), 0);
    payload = mk_payload("pc.ram", p1, 1, &len);
    T_EQ_INT(fy_postcopy_dest_discard(d, payload, len, &err), -1);
    T_CONTAINS(fy_error_msg(err), "only between ADVISE and LISTEN");
    fy_error_clear(&err);
    free(payload);
    /* Place the discarded pages so stop leaves nothing missing. */
    for (uint64_t i = 0; i < pages; i++) {
        if (fy_postcopy_dest_page_received(d, &blk, i << 12))
            continue;
        pc_fill_page(expect, 0, i);
        T_EQ_INT(fy_postcopy_dest_place_page(d, &blk, i << 12, expect, &err), 0);
    }
    T_EQ_INT(fy_postcopy_dest_pages_remaining(d), 0);
    T_EQ_INT(fy_postcopy_dest_stop(d, &err), 0);
    for (uint64_t i = 0; i < pages; i++) {
        pc_fill_page(expect, 0, i);
        T_EQ_MEM(blk.host + (i << 12), expect, 4096);
    }
    fy_postcopy_dest_free(d);
    pc_block_fini(&blk);
}

/* The source's builder feeding the destination's discard. */
static void test_build_then_apply(void)
{
    const uint64_t pages = 256;
    T_EQ_INT(pc_block_init(&blk, "pc.ram", pages << 12), 0);
    FyPostcopyDest *d = fy_postcopy_dest_new(&ram, NULL, NULL);
    FyError *err = NULL;
    T_EQ_INT(fy_postcopy_dest_advise(d, &err), 0);
    for (uint64_t i = 0; i < pages; i++)
        pc_fill_page(blk.host + (i << 12), 0, i);
    fy_postcopy_dest_mark_received(d, &blk, 0, pages << 12);

    unsigned long *dirty = fy_bitmap_new(pages);
    srand(11);
    uint64_t want = 0;
    for (uint64_t i = 0; i < pages; i++)
        if (rand() % 3 == 0) {
            fy_set_bit(dirty, i);
            want++;
        }
    Emitted e = { .fail_at = -1 };
    T_ASSERT(fy_postcopy_discard_build(&blk, dirty, pages, 5, collect, &e, &err) > 1);
    for (int k = 0; k < e.n; k++)
        T_EQ_INT(fy_postcopy_dest_discard(d, e.p[k].buf, e.p[k].len, &err), 0);
    emitted_free(&e);
    T_EQ_INT(fy_postcopy_dest_pages_remaining(d), want);
    int wrong = 0;
    for (uint64_t i = 0; i < pages; i++)
        if (fy_postcopy_dest_page_received(d, &blk, i << 12) == fy_test_bit(dirty, i) ||
            page_is_hole(&blk, i) != fy_test_bit(dirty, i))
            wrong++;
    T_EQ_INT(wrong, 0);
    free(dirty);
    fy_postcopy_dest_free(d);
    pc_block_fini(&blk);
}

int main(void)
{
    T_RUN(test_parse_golden);
    T_RUN(test_parse_hostile);
    T_RUN(test_build);
    T_RUN(test_hugepage_chunk);
    T_RUN(test_apply);
    T_RUN(test_build_then_apply);
    return t_done();
}
