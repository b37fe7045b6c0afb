/*
 * test_page_cache.c: the XBZRLE page cache (QEMU's page_cache rules:
 * slots, aging by dirty-sync generation, resize) and the sender's
 * fy_xbzrle_save_page() with its query-migrate counters, including a guest
 * that writes while pages are encoded.
 */
#include <pthread.h>
#include <sched.h>

#include <jansson.h>

#include "ferry/xbzrle.h"
#include "t.h"

#define PS 4096

static uint64_t rng_state = 99;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static void fill(uint8_t *p, uint8_t v)
{
    memset(p, v, PS);
}

/* ---- FyPageCache ---- */

static void test_sizes(void)
{
    FyError *err = NULL;
    FyPageCache *c;

    T_ASSERT(!fy_page_cache_new(PS - 1, PS, &err));
    T_CONTAINS(fy_error_msg(err), "size 4095 is smaller than the page size "
               "4096");
    fy_error_clear(&err);
    T_ASSERT(!fy_page_cache_new(1 << 20, 3000, &err));
    T_CONTAINS(fy_error_msg(err), "page size 3000 is not a power of two");
    fy_error_clear(&err);

    c = fy_page_cache_new(5 * PS + 100, PS, &err);     /* 5 pages -> 4 */
    T_ASSERT(c != NULL);
    T_EQ_INT(fy_page_cache_slots(c), 4);
    T_EQ_INT(fy_page_cache_pages(c), 0);
    T_EQ_INT(fy_page_cache_page_size(c), PS);
    fy_page_cache_free(c);

    c = fy_page_cache_new(FY_XBZRLE_DEFAULT_CACHE_SIZE, PS, &err);
    T_EQ_INT(fy_page_cache_slots(c), 16384);
    fy_page_cache_free(c);

    c = fy_page_cache_new(PS, PS, &err);                /* one slot */
    T_EQ_INT(fy_page_cache_slots(c), 1);
    fy_page_cache_free(c);

    T_EQ_INT(fy_xbzrle_cache_size_check(1 << 20, PS, NULL), 0);
    T_EQ_INT(fy_xbzrle_cache_size_check(3 << 20, PS, &err), -1);
    T_CONTAINS(fy_error_msg(err), "Parameter 'xbzrle_cache_size' expects a "
               "power of two no less than the target page size");
    fy_error_clear(&err);
    T_EQ_INT(fy_xbzrle_cache_size_check(2048, PS, NULL), -1);
}

static void test_insert_lookup(void)
{
    FyPageCache *c = fy_page_cache_new(4 * PS, PS, NULL);
    uint8_t a[PS], b[PS];
    uint8_t *p;

    fill(a, 0xaa);
    fill(b, 0xbb);
    T_ASSERT(fy_page_cache_lookup(c, 0x1000, 1) == NULL);
    p = fy_page_cache_insert(c, 0x1000, a, 1);
    T_ASSERT(p != NULL && p != a);
    T_EQ_MEM(p, a, PS);
    T_EQ_INT(fy_page_cache_pages(c), 1);
    T_ASSERT(fy_page_cache_lookup(c, 0x1000, 1) == p);
    /* 0x5000 maps to the same slot (4 slots): a miss, not the other page */
    T_ASSERT(fy_page_cache_lookup(c, 0x5000, 1) == NULL);
    /* other slots are independent */
    T_ASSERT(fy_page_cache_insert(c, 0x2000, b, 1) != NULL);
    T_EQ_INT(fy_page_cache_pages(c), 2);
    T_EQ_MEM(fy_page_cache_lookup(c, 0x1000, 1), a, PS);
    T_EQ_MEM(fy_page_cache_lookup(c, 0x2000, 1), b, PS);
    /* the same address is always updated in place */
    p = fy_page_cache_insert(c, 0x1000, b, 1);
    T_EQ_MEM(p, b, PS);
    T_EQ_INT(fy_page_cache_pages(c), 2);
    /* addresses need not be page aligned for the key; the slot uses the
     * page number */
    T_ASSERT(fy_page_cache_lookup(c, 0x1001, 1) == NULL);
    fy_page_cache_free(c);
}

static void test_aging(void)
{
    FyPageCache *c = fy_page_cache_new(4 * PS, PS, NULL);
    uint8_t a[PS], b[PS];

    fill(a, 1);
    fill(b, 2);
    T_ASSERT(fy_page_cache_insert(c, 0x0000, a, 5) != NULL);
    /* another page on the same slot: refused while age + 2 > generation */
    T_ASSERT(fy_page_cache_insert(c, 0x4000, b, 5) == NULL);
    T_ASSERT(fy_page_cache_insert(c, 0x4000, b, 6) == NULL);
    /* a hit refreshes the age */
    T_ASSERT(fy_page_cache_lookup(c, 0x0000, 6) != NULL);
    T_ASSERT(fy_page_cache_insert(c, 0x4000, b, 7) == NULL);
    /* two generations after the last use it may go */
    uint8_t *p = fy_page_cache_insert(c, 0x4000, b, 8);
    T_ASSERT(p != NULL);
    T_EQ_MEM(p, b, PS);
    T_ASSERT(fy_page_cache_lookup(c, 0x0000, 8) == NULL);
    T_EQ_INT(fy_page_cache_pages(c), 1);
    /* a miss does not touch the age */
    T_ASSERT(fy_page_cache_lookup(c, 0x0000, 20) == NULL);
    T_ASSERT(fy_page_cache_insert(c, 0x0000, a, 9) == NULL);
    T_ASSERT(fy_page_cache_insert(c, 0x0000, a, 10) != NULL);
    fy_page_cache_free(c);
}

static void test_resize(void)
{
    FyPageCache *c = fy_page_cache_new(8 * PS, PS, NULL);
    uint8_t pg[PS];
    FyError *err = NULL;

    /* pages 0..7 at generations 10..17 */
    for (int i = 0; i < 8; i++) {
        fill(pg, (uint8_t)(0x10 + i));
        T_ASSERT(fy_page_cache_insert(c, (uint64_t)i * PS, pg, 10 + i));
    }
    T_EQ_INT(fy_page_cache_pages(c), 8);

    /* grow: everything fits where it was */
    T_EQ_INT(fy_page_cache_resize(c, 16 * PS, &err), 0);
    T_EQ_INT(fy_page_cache_slots(c), 16);
    T_EQ_INT(fy_page_cache_pages(c), 8);
    for (int i = 0; i < 8; i++) {
        uint8_t *p = fy_page_cache_lookup(c, (uint64_t)i * PS, 17);
        fill(pg, (uint8_t)(0x10 + i));
        T_ASSERT(p != NULL);
        if (p)
            T_EQ_MEM(p, pg, PS);
    }
    /* refresh page 1 so that it is the newest of its pair {1, 3} */
    T_ASSERT(fy_page_cache_lookup(c, 1 * PS, 30));

    /* shrink to 2 slots: odd pages share slot 1, where page 1 (age 30)
     * beats 3, 5, 7 (age 17); even pages share slot 0 (all age 17) */
    T_EQ_INT(fy_page_cache_resize(c, 2 * PS + 5, &err), 0);
    T_EQ_INT(fy_page_cache_slots(c), 2);
    T_EQ_INT(fy_page_cache_pages(c), 2);
    T_ASSERT(fy_page_cache_lookup(c, 1 * PS, 31) != NULL);
    fill(pg, 0x11);
    T_EQ_MEM(fy_page_cache_lookup(c, 1 * PS, 31), pg, PS);
    /* slot 0 holds exactly one of the even pages, with its own content */
    int found = 0;
    for (int i = 0; i < 8; i += 2) {
        uint8_t *p = fy_page_cache_lookup(c, (uint64_t)i * PS, 31);
        if (p) {
            found++;
            fill(pg, (uint8_t)(0x10 + i));
            T_EQ_MEM(p, pg, PS);
        }
    }
    T_EQ_INT(found, 1);

    /* a bad size leaves the cache as it was */
    T_EQ_INT(fy_page_cache_resize(c, 100, &err), -1);
    T_CONTAINS(fy_error_msg(err), "smaller than the page size");
    fy_error_clear(&err);
    T_EQ_INT(fy_page_cache_slots(c), 2);
    T_ASSERT(fy_page_cache_lookup(c, 1 * PS, 31) != NULL);
    fy_page_cache_free(c);
}

/* Shrinking keeps the more recently used page of a colliding pair. */
static void test_resize_prefers_newer(void)
{
    FyPageCache *c = fy_page_cache_new(4 * PS, PS, NULL);
    uint8_t a[PS], b[PS];

    fill(a, 0xa1);
    fill(b, 0xb2);
    fy_page_cache_insert(c, 0 * PS, a, 3);   /* slot 0 */
    fy_page_cache_insert(c, 2 * PS, b, 9);   /* slot 2 */
    T_EQ_INT(fy_page_cache_resize(c, 2 * PS, NULL), 0);
    T_ASSERT(fy_page_cache_lookup(c, 0 * PS, 9) == NULL);
    T_EQ_MEM(fy_page_cache_lookup(c, 2 * PS, 9), b, PS);
    fy_page_cache_free(c);

    c = fy_page_cache_new(4 * PS, PS, NULL);
    fy_page_cache_insert(c, 0 * PS, a, 9);
    fy_page_cache_insert(c, 2 * PS, b, 3);
    T_EQ_INT(fy_page_cache_resize(c, 2 * PS, NULL), 0);
    T_EQ_MEM(fy_page_cache_lookup(c, 0 * PS, 9), a, PS);
    T_ASSERT(fy_page_cache_lookup(c, 2 * PS, 9) == NULL);
    fy_page_cache_free(c);
}

/* ---- FyXbzrleCache and save_page ---- */

/* The destination's copy of a page, updated from a save_page result the
 * way the RAM loader would. */
static void apply(uint8_t *dest, const FyXbzrleResult *r)
{
    if (r->outcome == FY_XBZRLE_MISS || r->outcome == FY_XBZRLE_OVERFLOW)
        memcpy(dest, r->data, PS);
    else if (r->outcome == FY_XBZRLE_ENCODED)
        T_ASSERT(fy_xbzrle_decode(r->data, r->len, dest, PS, NULL) >= 0);
}

static void test_save_page_flow(void)
{
    FyError *err = NULL;
    FyXbzrleCache *x = fy_xbzrle_cache_new(16 * PS, PS, &err);
    uint8_t guest[PS], dest[PS], out[PS];
    FyXbzrleResult r;
    FyXbzrleStats st;
    uint64_t addr = 0x7000;

    T_ASSERT(x != NULL);
    for (int i = 0; i < PS; i++)
        guest[i] = (uint8_t)rnd();
    fy_xbzrle_lock(x);

    /* first time: a miss; the cache takes the page and we send its copy */
    T_EQ_INT(fy_xbzrle_save_page(x, addr, guest, 1, false, out, &r), 0);
    T_EQ_INT(r.outcome, FY_XBZRLE_MISS);
    T_ASSERT(r.data != guest);
    T_EQ_INT(r.len, PS);
    T_EQ_MEM(r.data, guest, PS);
    apply(dest, &r);

    /* unchanged */
    T_EQ_INT(fy_xbzrle_save_page(x, addr, guest, 2, false, out, &r), 0);
    T_EQ_INT(r.outcome, FY_XBZRLE_UNCHANGED);
    T_ASSERT(r.data == NULL);

    /* a few bytes: an XBZRLE record */
    guest[10] ^= 1;
    guest[3000] ^= 0x80;
    T_EQ_INT(fy_xbzrle_save_page(x, addr, guest, 3, false, out, &r), 0);
    T_EQ_INT(r.outcome, FY_XBZRLE_ENCODED);
    T_ASSERT(r.data == out);
    /* zrun 10, nzrun 1, zrun 2989, nzrun 1 */
    T_EQ_INT(r.len, 1 + 1 + 1 + 2 + 1 + 1);
    size_t first_len = r.len;
    apply(dest, &r);
    T_EQ_MEM(dest, guest, PS);

    /* the cache followed: the same change again is unchanged */
    T_EQ_INT(fy_xbzrle_save_page(x, addr, guest, 4, false, out, &r), 0);
    T_EQ_INT(r.outcome, FY_XBZRLE_UNCHANGED);

    /* a new random page: overflow, sent whole from the cache's copy */
    for (int i = 0; i < PS; i++)
        guest[i] = (uint8_t)rnd();
    T_EQ_INT(fy_xbzrle_save_page(x, addr, guest, 5, false, out, &r), 0);
    T_EQ_INT(r.outcome, FY_XBZRLE_OVERFLOW);
    T_ASSERT(r.data != guest);
    T_EQ_MEM(r.data, guest, PS);
    apply(dest, &r);
    T_EQ_INT(fy_xbzrle_save_page(x, addr, guest, 6, false, out, &r), 0);
    T_EQ_INT(r.outcome, FY_XBZRLE_UNCHANGED);

    /* last stage: a hit is encoded but the cache no longer follows */
    guest[0] ^= 0xff;
    T_EQ_INT(fy_xbzrle_save_page(x, addr, guest, 7, true, out, &r), 0);
    T_EQ_INT(r.outcome, FY_XBZRLE_ENCODED);
    apply(dest, &r);
    T_EQ_MEM(dest, guest, PS);
    T_EQ_INT(fy_xbzrle_save_page(x, addr, guest, 7, true, out, &r), 0);
    T_EQ_INT(r.outcome, FY_XBZRLE_ENCODED);     /* still against the old */

    /* last stage miss: not inserted, sent from the guest page */
    T_EQ_INT(fy_xbzrle_save_page(x, 0x1000, guest, 7, true, out, &r), 0);
    T_EQ_INT(r.outcome, FY_XBZRLE_MISS);
    T_ASSERT(r.data == guest);
    fy_xbzrle_unlock(x);

    fy_xbzrle_get_stats(x, &st);
    T_EQ_INT(st.cache_size, 16 * PS);
    T_EQ_INT(st.cache_miss, 2);
    T_EQ_INT(st.pages, 7);          /* every hit, whatever came of it */
    T_EQ_INT(st.overflow, 1);
    /* encoded: first_len + the two last-stage records (zrun 0, nzrun 1) */
    T_EQ_INT(st.bytes, (3 + first_len) + PS + 2 * (3 + 3));

    T_EQ_INT(fy_xbzrle_save_page(NULL, 0, guest, 0, false, out, &r), -1);
    fy_xbzrle_cache_free(x);
}

static void test_rates_and_json(void)
{
    FyXbzrleCache *x = fy_xbzrle_cache_new(64 * PS, PS, NULL);
    uint8_t guest[PS], out[PS];
    FyXbzrleResult r;
    FyXbzrleStats st;
    json_t *j;

    memset(guest, 0, PS);
    fy_xbzrle_lock(x);
    /* 4 misses */
    for (int i = 0; i < 4; i++)
        fy_xbzrle_save_page(x, (uint64_t)i * PS, guest, 1, false, out, &r);
    /* 4 hits, each one byte changed: zrun + nzrun 1 + byte */
    for (int i = 0; i < 4; i++) {
        memset(guest, 0, PS);
        guest[100 + i] = 1;
        fy_xbzrle_save_page(x, (uint64_t)i * PS, guest, 2, false, out, &r);
        T_EQ_INT(r.outcome, FY_XBZRLE_ENCODED);
        T_EQ_INT(r.len, 3);
        fy_xbzrle_account_header(x, 1 + 6);   /* "pc.ram" */
    }
    fy_xbzrle_unlock(x);

    fy_xbzrle_update_rates(x, 0);             /* no pages: nothing */
    fy_xbzrle_get_stats(x, &st);
    T_ASSERT(st.cache_miss_rate == 0 && st.encoding_rate == 0);

    fy_xbzrle_update_rates(x, 8);
    fy_xbzrle_get_stats(x, &st);
    T_EQ_INT(st.pages, 4);
    T_EQ_INT(st.bytes, 4 * (3 + 3 + 7));
    T_ASSERT(st.cache_miss_rate == 0.5);
    /* 4 pages of 4096 over 52 encoded bytes */
    T_ASSERT(st.encoding_rate > 315.0 && st.encoding_rate < 315.1);

    /* next period: only misses, no encoded bytes -> encoding-rate 0 */
    fy_xbzrle_lock(x);
    fy_xbzrle_save_page(x, 100 * PS, guest, 3, false, out, &r);
    fy_xbzrle_unlock(x);
    fy_xbzrle_update_rates(x, 4);
    fy_xbzrle_get_stats(x, &st);
    T_ASSERT(st.cache_miss_rate == 0.25);
    T_ASSERT(st.encoding_rate == 0);

    j = fy_xbzrle_stats_json(&st);
    T_EQ_INT(json_integer_value(json_object_get(j, "cache-size")), 64 * PS);
    T_EQ_INT(json_integer_value(json_object_get(j, "bytes")), 52);
    T_EQ_INT(json_integer_value(json_object_get(j, "pages")), 4);
    T_EQ_INT(json_integer_value(json_object_get(j, "cache-miss")), 5);
    T_ASSERT(json_real_value(json_object_get(j, "cache-miss-rate")) == 0.25);
    T_ASSERT(json_is_real(json_object_get(j, "encoding-rate")));
    T_EQ_INT(json_integer_value(json_object_get(j, "overflow")), 0);
    T_EQ_INT(json_object_size(j), 7);
    json_decref(j);

    /* resize from "another thread": the size shows, what fits stays */
    T_EQ_INT(fy_xbzrle_cache_resize(x, 128 * PS, NULL), 0);
    fy_xbzrle_get_stats(x, &st);
    T_EQ_INT(st.cache_size, 128 * PS);
    fy_xbzrle_lock(x);
    fy_xbzrle_save_page(x, 3 * PS, guest, 4, false, out, &r);   /* [103] */
    T_EQ_INT(r.outcome, FY_XBZRLE_UNCHANGED);
    fy_xbzrle_unlock(x);
    fy_xbzrle_cache_free(x);
}

static void test_zero_page(void)
{
    FyXbzrleCache *x = fy_xbzrle_cache_new(16 * PS, PS, NULL);
    uint8_t guest[PS], out[PS];
    FyXbzrleResult r;

    memset(guest, 0, PS);
    fy_xbzrle_lock(x);
    fy_xbzrle_cache_zero_page(x, 0x3000, 4);
    guest[17] = 0x42;
    fy_xbzrle_save_page(x, 0x3000, guest, 5, false, out, &r);
    T_EQ_INT(r.outcome, FY_XBZRLE_ENCODED);
    T_EQ_INT(r.len, 3);
    T_EQ_INT(out[0], 17);
    T_EQ_INT(out[1], 1);
    T_EQ_INT(out[2], 0x42);
    fy_xbzrle_unlock(x);
    fy_xbzrle_cache_free(x);
}

/* A guest that keeps writing while pages are encoded: after every result
 * the destination's page equals the cache's copy, whatever the race. */
typedef struct Writer {
    uint8_t *mem;
    size_t pages;
    bool stop;          /* atomic */
    uint64_t writes;    /* atomic */
} Writer;

static void *writer_main(void *arg)
{
    Writer *w = arg;
    uint64_t s = 12345;
    while (!__atomic_load_n(&w->stop, __ATOMIC_RELAXED)) {
        __atomic_add_fetch(&w->writes, 1, __ATOMIC_RELAXED);
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        size_t off = (size_t)(s >> 20) % (w->pages * PS);
        __atomic_store_n(&w->mem[off], (uint8_t)(s >> 56), __ATOMIC_RELAXED);
    }
    return NULL;
}

static void test_racing_guest(void)
{
    enum { NPAGES = 8 };
    FyXbzrleCache *x = fy_xbzrle_cache_new(NPAGES * PS, PS, NULL);
    uint8_t *mem = calloc(NPAGES, PS), *dest = calloc(NPAGES, PS);
    uint8_t out[PS];
    Writer w = {.mem = mem, .pages = NPAGES};
    pthread_t th;
    int encoded = 0, mismatches = 0;

    pthread_create(&th, NULL, writer_main, &w);
    while (__atomic_load_n(&w.writes, __ATOMIC_RELAXED) < 1000)
        sched_yield();
    fy_xbzrle_lock(x);
    for (uint64_t gen = 1; (gen <= 400 || encoded < 200) && gen < 2000000;
         gen++) {
        for (size_t p = 0; p < NPAGES; p++) {
            FyXbzrleResult r;
            fy_xbzrle_save_page(x, p * PS, mem + p * PS, gen, false, out, &r);
            apply(dest + p * PS, &r);
            encoded += r.outcome == FY_XBZRLE_ENCODED;
        }
    }
    /* Stop the guest, then a last-stage pass: every page hits, so the
     * destination ends equal to the guest only if it held exactly the
     * cache's copy, which is the invariant under test. */
    __atomic_store_n(&w.stop, true, __ATOMIC_RELAXED);
    pthread_join(th, NULL);
    for (size_t p = 0; p < NPAGES; p++) {
        FyXbzrleResult r;
        fy_xbzrle_save_page(x, p * PS, mem + p * PS, 1000, true, out, &r);
        apply(dest + p * PS, &r);
        if (memcmp(dest + p * PS, mem + p * PS, PS) != 0)
            mismatches++;
    }
    fy_xbzrle_unlock(x);
    printf("# %d pages encoded while the guest wrote\n", encoded);
    T_EQ_INT(mismatches, 0);
    T_ASSERT(encoded > 100);
    free(mem);
    free(dest);
    fy_xbzrle_cache_free(x);
}

int main(void)
{
    T_RUN(test_sizes);
    T_RUN(test_insert_lookup);
    T_RUN(test_aging);
    T_RUN(test_resize);
    T_RUN(test_resize_prefers_newer);
    T_RUN(test_save_page_flow);
    T_RUN(test_rates_and_json);
    T_RUN(test_zero_page);
    T_RUN(test_racing_guest);
    return t_done();
}
