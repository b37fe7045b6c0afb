/*
 * test_xbzrle.c: the XBZRLE codec against golden bytes, against a literal
 * byte-at-a-time model of QEMU's encoder and decoder (same checks, same
 * order), round trips, hostile encodings (each refused with its reason,
 * never a write outside the page) and a fixed-seed decode fuzz loop.
 */
#include <jansson.h>

#include "ferry/channel.h"
#include "ferry/stream.h"
#include "ferry/xbzrle.h"
#include "t.h"

#define PS 4096
#define CANARY 128

/* ---- helpers ---- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
}

/* Change byte i so that it certainly differs. */
static void flip(uint8_t *p, size_t i)
{
    p[i] ^= (uint8_t)(1 + rnd() % 255);
}

/* A page buffer followed by canary bytes that must never change. */
static uint8_t *canary_page(size_t ps)
{
    uint8_t *p = malloc(ps + CANARY);
    memset(p + ps, 0xa5, CANARY);
    return p;
}

static bool canary_ok(const uint8_t *p, size_t ps)
{
    for (size_t i = 0; i < CANARY; i++)
        if (p[ps + i] != 0xa5)
            return false;
    return true;
}

/* ---- the model: QEMU's algorithm written out byte by byte ---- */

static int model_put(uint8_t *p, uint32_t n)
{
    if (n < 0x80) {
        p[0] = (uint8_t)n;
        return 1;
    }
    p[0] = (uint8_t)((n & 0x7f) | 0x80);
    p[1] = (uint8_t)(n >> 7);
    return 2;
}

static int model_get(const uint8_t *p, uint32_t *n)
{
    if (!(p[0] & 0x80)) {
        *n = p[0];
        return 1;
    }
    if (p[1] & 0x80)
        return -1;
    *n = (uint32_t)(p[0] & 0x7f) | (uint32_t)p[1] << 7;
    return 2;
}

static int model_encode(const uint8_t *o, const uint8_t *n, int slen,
                        uint8_t *dst, int dlen)
{
    int d = 0, i = 0;

    while (i < slen) {
        uint32_t z = 0, nz = 0;
        int start;
        if (d + 2 > dlen)
            return -1;
        while (i < slen && o[i] == n[i]) {
            z++;
            i++;
        }
        if (z == (uint32_t)slen)
            return 0;
        if (i == slen)
            return d;
        if (z > 0x3fff)
            return -1;
        d += model_put(dst + d, z);
        if (d + 2 > dlen)
            return -1;
        start = i;
        while (i < slen && o[i] != n[i]) {
            nz++;
            i++;
        }
        if (nz > 0x3fff)
            return -1;
        d += model_put(dst + d, nz);
        if (d + (int)nz > dlen)
            return -1;
        memcpy(dst + d, n + start, nz);
        d += (int)nz;
    }
    return d;
}

static int model_decode(const uint8_t *src, int slen, uint8_t *dst, int dlen)
{
    int i = 0, d = 0, r;
    uint32_t c;

    while (i < slen) {
        if (slen - i < 2)
            return -1;
        r = model_get(src + i, &c);
        if (r < 0 || (i && !c))
            return -1;
        i += r;
        d += (int)c;
        if (d > dlen)
            return -1;
        if (slen - i < 2)
            return -1;
        r = model_get(src + i, &c);
        if (r < 0 || !c)
            return -1;
        i += r;
        if (d + (int)c > dlen || i + (int)c > slen)
            return -1;
        memcpy(dst + d, src + i, c);
        d += (int)c;
        i += (int)c;
    }
    return d;
}

/* Every available implementation gives the model's result and bytes. */
static void check_all_impls(const uint8_t *o, const uint8_t *n, size_t ps,
                            size_t out_max, const char *what)
{
    uint8_t *want = calloc(1, out_max + 4);
    uint8_t *got = calloc(1, out_max + 4);
    int w = model_encode(o, n, (int)ps, want, (int)out_max);

    for (int impl = 0; impl < FY_XBZRLE_IMPL__MAX; impl++) {
        int g;
        if (!fy_xbzrle_impl_available(impl))
            continue;
        g = impl == FY_XBZRLE_IMPL_AUTO
                ? fy_xbzrle_encode(o, n, ps, got, out_max)
                : fy_xbzrle_encode_impl(impl, o, n, ps, got, out_max);
        if (g != w) {
            T_FAIL("%s: impl %s page %zu out_max %zu: got %d, QEMU model %d",
                   what, fy_xbzrle_impl_name(impl), ps, out_max, g, w);
            break;
        }
        if (w > 0 && memcmp(got, want, (size_t)w) != 0) {
            T_FAIL("%s: impl %s page %zu: bytes differ from the model", what,
                   fy_xbzrle_impl_name(impl), ps);
            break;
        }
    }
    free(want);
    free(got);
}

/* ---- golden bytes ---- */

static void test_docs_example(void)
{
    uint8_t old[PS], new_[PS], out[PS];
    static const uint8_t tail[] = {0x03, 0x01, 0x67, 0x01, 0x01, 0x69};
    int n;

    memset(old, 0, PS);
    memcpy(new_, old, PS);
    for (int i = 0; i < 15; i++)
        new_[1001 + i] = (uint8_t)(0x30 + i);
    new_[1019] = 0x67;
    new_[1021] = 0x69;

    n = fy_xbzrle_encode(old, new_, PS, out, PS);
    T_EQ_INT(n, 3 + 15 + 6);
    T_EQ_INT(out[0], 0xe9);     /* 1001 = 0x3e9: 0x69|0x80, 0x07 */
    T_EQ_INT(out[1], 0x07);
    T_EQ_INT(out[2], 0x0f);     /* nzrun 15 */
    T_EQ_MEM(out + 3, new_ + 1001, 15);
    T_EQ_MEM(out + 18, tail, sizeof(tail));
    check_all_impls(old, new_, PS, PS, "docs example");

    /* and it decodes back onto the old page */
    uint8_t page[PS];
    memcpy(page, old, PS);
    T_EQ_INT(fy_xbzrle_decode(out, (size_t)n, page, PS, NULL), 1022);
    T_EQ_MEM(page, new_, PS);
}

/* Encode a page that differs from zeros at the given [start, end) ranges
 * and compare with the expected bytes. */
static void golden(size_t ps, const size_t (*ranges)[2], int nr,
                   size_t out_max, const uint8_t *expect, int expect_len,
                   const char *what)
{
    uint8_t *old = calloc(1, ps), *new_ = calloc(1, ps);
    uint8_t *out = calloc(1, out_max + 16);
    int n;

    for (int r = 0; r < nr; r++)
        for (size_t i = ranges[r][0]; i < ranges[r][1]; i++)
            new_[i] = (uint8_t)(0x11 + i % 200);
    n = fy_xbzrle_encode(old, new_, ps, out, out_max);
    if (n != expect_len)
        T_FAIL("%s: length %d, expected %d", what, n, expect_len);
    else if (expect && memcmp(out, expect, (size_t)n) != 0)
        T_FAIL("%s: bytes differ", what);
    check_all_impls(old, new_, ps, out_max, what);
    free(old);
    free(new_);
    free(out);
}

static void test_golden_lengths(void)
{
    /* first byte differs: the first zrun is empty, trailing zrun omitted */
    {
        static const size_t r[][2] = {{0, 1}};
        uint8_t x[] = {0x00, 0x01, 0x11};
        golden(PS, r, 1, PS, x, 3, "first byte");
    }
    /* last byte differs: zrun 4095 = ff 1f */
    {
        static const size_t r[][2] = {{4095, 4096}};
        uint8_t x[] = {0xff, 0x1f, 0x01, (uint8_t)(0x11 + 4095 % 200)};
        golden(PS, r, 1, PS, x, 4, "last byte");
    }
    /* zrun of exactly 127 (1 byte) and 128 (2 bytes) */
    {
        static const size_t r[][2] = {{127, 128}};
        uint8_t x[] = {0x7f, 0x01, (uint8_t)(0x11 + 127)};
        golden(PS, r, 1, PS, x, 3, "zrun 127");
    }
    {
        static const size_t r[][2] = {{128, 129}};
        uint8_t x[] = {0x80, 0x01, 0x01, (uint8_t)(0x11 + 128)};
        golden(PS, r, 1, PS, x, 4, "zrun 128");
    }
    /* nzrun of exactly 127 and 128 */
    {
        static const size_t r[][2] = {{0, 127}};
        golden(PS, r, 1, PS, NULL, 2 + 127, "nzrun 127");
    }
    {
        static const size_t r[][2] = {{0, 128}};
        golden(PS, r, 1, PS, NULL, 3 + 128, "nzrun 128");
    }
    /* zrun of exactly 16383, the largest 14-bit length: ff 7f */
    {
        static const size_t r[][2] = {{16383, 16384}};
        uint8_t x[] = {0xff, 0x7f, 0x01, (uint8_t)(0x11 + 16383 % 200)};
        golden(16384, r, 1, 16384, x, 4, "zrun 16383");
    }
    /* nzrun of exactly 16383 fits when out_max allows it */
    {
        static const size_t r[][2] = {{0, 16383}};
        golden(16384, r, 1, 20000, NULL, 1 + 2 + 16383, "nzrun 16383");
    }
    /* a 16384-byte zrun has no 14-bit length: -1 (QEMU would assert) */
    {
        static const size_t r[][2] = {{16384, 16385}};
        golden(32768, r, 1, 32768, NULL, -1, "zrun 16384");
    }
    /* several runs, 2-byte lengths in the middle */
    {
        static const size_t r[][2] = {{200, 210}, {2000, 2300}};
        uint8_t old[PS] = {0}, new_[PS] = {0}, out[PS];
        for (int k = 0; k < 2; k++)
            for (size_t i = r[k][0]; i < r[k][1]; i++)
                new_[i] = (uint8_t)(0x11 + i % 200);
        int n = fy_xbzrle_encode(old, new_, PS, out, PS);
        /* zrun 200 = c8 01, nzrun 10, zrun 1790 = fe 0d, nzrun 300 = ac 02 */
        T_EQ_INT(n, 2 + 1 + 10 + 2 + 2 + 300);
        T_EQ_INT(out[0], 0xc8);
        T_EQ_INT(out[1], 0x01);
        T_EQ_INT(out[2], 10);
        T_EQ_INT(out[13], 0xfe);
        T_EQ_INT(out[14], 0x0d);
        T_EQ_INT(out[15], 0xac);
        T_EQ_INT(out[16], 0x02);
        T_EQ_MEM(out + 17, new_ + 2000, 300);
    }
}

static void test_unchanged_and_overflow(void)
{
    uint8_t *old = malloc(PS), *new_ = malloc(PS), out[PS];

    rng_state = 0x1234;
    fill_random(old, PS);
    memcpy(new_, old, PS);
    T_EQ_INT(fy_xbzrle_encode(old, new_, PS, out, PS), 0);
    check_all_impls(old, new_, PS, PS, "unchanged");

    fill_random(new_, PS);
    for (int i = 0; i < PS; i++)
        if (new_[i] == old[i])
            flip(new_, (size_t)i);
    T_EQ_INT(fy_xbzrle_encode(old, new_, PS, out, PS), -1);
    check_all_impls(old, new_, PS, PS, "all different");

    /* random content: about 1 byte in 256 equal, still an overflow */
    fill_random(new_, PS);
    T_EQ_INT(fy_xbzrle_encode(old, new_, PS, out, PS), -1);
    check_all_impls(old, new_, PS, PS, "random page");

    /* every other byte changed: 2 bytes of header per byte, overflow */
    memcpy(new_, old, PS);
    for (int i = 0; i < PS; i += 2)
        flip(new_, (size_t)i);
    T_EQ_INT(fy_xbzrle_encode(old, new_, PS, out, PS), -1);
    check_all_impls(old, new_, PS, PS, "alternating");

    /* out_max below 2: -1 even for an unchanged page, as QEMU */
    T_EQ_INT(fy_xbzrle_encode(old, old, PS, out, 1), -1);
    T_EQ_INT(fy_xbzrle_encode(old, old, 0, out, PS), 0);
    free(old);
    free(new_);
}

/* Random pages, random sparse changes: the model's bytes and -1 decisions
 * around the limit, on whole pages and odd sizes, and round trips. */
static void test_random_vs_model(void)
{
    static const size_t sizes[] = {PS, PS, PS, 1, 7, 63, 64, 65, 100, 1000,
                                   4095, 8192, 16384};
    uint8_t *old = malloc(16384), *new_ = malloc(16384);
    uint8_t *out = malloc(20000), *page = canary_page(16384);
    int cases = 0, roundtrips = 0;

    rng_state = 0xfeedface;
    for (int iter = 0; iter < 3000; iter++) {
        size_t ps = sizes[rnd() % (sizeof(sizes) / sizeof(sizes[0]))];
        int style = (int)(rnd() % 5);
        fill_random(old, ps);
        memcpy(new_, old, ps);
        if (style == 0) {               /* ~1% of bytes */
            for (size_t k = 0; k < ps / 100 + 1; k++)
                flip(new_, rnd() % ps);
        } else if (style == 1) {        /* a few runs of random length */
            for (int k = 0; k < 1 + (int)(rnd() % 6); k++) {
                size_t s = rnd() % ps, l = 1 + rnd() % 300;
                for (size_t i = s; i < s + l && i < ps; i++)
                    flip(new_, i);
            }
        } else if (style == 2) {        /* dense: ~30% */
            for (size_t i = 0; i < ps; i++)
                if (rnd() % 10 < 3)
                    flip(new_, i);
        } else if (style == 3) {        /* edges */
            flip(new_, 0);
            flip(new_, ps - 1);
        } else {                        /* one long change */
            size_t s = rnd() % ps;
            for (size_t i = s; i < ps; i++)
                flip(new_, i);
        }

        int w = model_encode(old, new_, (int)ps, out, (int)ps);
        check_all_impls(old, new_, ps, ps, "random");
        cases++;
        if (w > 2) {
            /* the limit: just below, at and above the encoded length */
            for (int dm = -3; dm <= 3; dm++)
                check_all_impls(old, new_, ps, (size_t)(w + dm), "limit");
        }
        int n = fy_xbzrle_encode(old, new_, ps, out, ps);
        if (n > 0) {
            memcpy(page, old, ps);
            memset(page + ps, 0xa5, CANARY);
            if (fy_xbzrle_decode(out, (size_t)n, page, ps, NULL) < 0)
                T_FAIL("round trip: own encoding refused");
            else if (memcmp(page, new_, ps) != 0)
                T_FAIL("round trip: page %zu differs after decode", ps);
            T_ASSERT(canary_ok(page, ps));
            roundtrips++;
        }
    }
    printf("# %d cases, %d round trips\n", cases, roundtrips);
    T_ASSERT(roundtrips > 1000);
    free(old);
    free(new_);
    free(out);
    free(page);
}

/* ---- hostile encodings ---- */

static void hostile(const uint8_t *enc, size_t len, size_t ps,
                    const char *needle)
{
    uint8_t *page = canary_page(ps);
    FyError *err = NULL;
    int r;

    memset(page, 0x5a, ps);
    r = fy_xbzrle_decode(enc, len, page, ps, &err);
    if (r != -1)
        T_FAIL("expected a refusal (%s), got %d", needle, r);
    else
        T_CONTAINS(fy_error_msg(err), needle);
    T_ASSERT(canary_ok(page, ps));
    /* the model agrees it is invalid */
    T_EQ_INT(model_decode(enc, (int)len, page, (int)ps), -1);
    fy_error_free(err);
    free(page);
}

static void test_hostile_decode(void)
{
    /* stray trailing byte after a complete nzrun */
    { uint8_t e[] = {0x05, 0x01, 0xaa, 0x07};
      hostile(e, sizeof(e), PS, "stray byte 0x07 at encoded offset 3"); }
    /* a zero-length zrun other than the first */
    { uint8_t e[] = {0x00, 0x01, 0xaa, 0x00, 0x01, 0xbb};
      hostile(e, sizeof(e), PS, "zero-length zrun at encoded offset 3"); }
    /* zero-length nzrun */
    { uint8_t e[] = {0x05, 0x00, 0x00};
      hostile(e, sizeof(e), PS, "zero-length nzrun at encoded offset 1"); }
    { uint8_t e[] = {0x05, 0x00};
      hostile(e, sizeof(e), PS, "zero-length nzrun at encoded offset 1"); }
    /* lengths over 14 bits */
    { uint8_t e[] = {0x80, 0x80, 0x01, 0x01, 0xaa};
      hostile(e, sizeof(e), PS, "zrun length at encoded offset 0 is longer "
              "than 14 bits"); }
    { uint8_t e[] = {0x05, 0x81, 0x80, 0x01, 0xaa};
      hostile(e, sizeof(e), PS, "nzrun length at encoded offset 1 is longer "
              "than 14 bits"); }
    /* truncated lengths */
    { uint8_t e[] = {0x05, 0x01, 0xaa, 0x81};
      hostile(e, sizeof(e), PS, "zrun length at encoded offset 3 is "
              "truncated"); }
    { uint8_t e[] = {0x05, 0x81};
      hostile(e, sizeof(e), PS, "nzrun length at encoded offset 1 is "
              "truncated"); }
    /* a zrun with no nzrun */
    { uint8_t e[] = {0x81, 0x01};
      hostile(e, sizeof(e), PS, "nzrun missing"); }
    /* runs past the page end */
    { uint8_t e[] = {0x81, 0x20, 0x01, 0xaa};          /* zrun 4097 */
      hostile(e, sizeof(e), PS, "zrun of 4097 bytes at encoded offset 0 runs "
              "past the page end"); }
    { uint8_t e[] = {0xff, 0x1f, 0x02, 0xaa, 0xbb};    /* 4095 + 2 */
      hostile(e, sizeof(e), PS, "nzrun of 2 bytes at encoded offset 2 runs "
              "past the page end (page offset 4095"); }
    { uint8_t e[] = {0x08, 0x09, 1, 2, 3, 4, 5, 6, 7, 8, 9};
      hostile(e, sizeof(e), 16, "runs past the page end"); }
    /* an nzrun longer than what is left of the encoding */
    { uint8_t e[] = {0x00, 0x05, 0xaa, 0xbb};
      hostile(e, sizeof(e), PS, "nzrun of 5 bytes at encoded offset 1 is "
              "truncated: 2 bytes left"); }
    { uint8_t e[] = {0x03, 0x02};
      hostile(e, sizeof(e), PS, "nzrun of 2 bytes at encoded offset 1 is "
              "truncated: 0 bytes left"); }

    /* what QEMU accepts, we accept: a first empty zrun, a non-minimal
     * 2-byte length, an empty encoding */
    uint8_t page[PS];
    memset(page, 0, PS);
    { uint8_t e[] = {0x00, 0x02, 0xaa, 0xbb};
      T_EQ_INT(fy_xbzrle_decode(e, sizeof(e), page, PS, NULL), 2);
      T_EQ_INT(page[0], 0xaa); T_EQ_INT(page[1], 0xbb); }
    { uint8_t e[] = {0x85, 0x00, 0x81, 0x00, 0xcc};     /* zrun 5, nzrun 1 */
      T_EQ_INT(fy_xbzrle_decode(e, sizeof(e), page, PS, NULL), 6);
      T_EQ_INT(page[5], 0xcc); }
    T_EQ_INT(fy_xbzrle_decode(NULL, 0, page, PS, NULL), 0);
    /* exactly up to the page end */
    { uint8_t e[] = {0xff, 0x1f, 0x01, 0xdd};
      T_EQ_INT(fy_xbzrle_decode(e, sizeof(e), page, PS, NULL), PS);
      T_EQ_INT(page[PS - 1], 0xdd); }
}

/* Mutated valid encodings and random bytes: same accept/reject and same
 * page as the QEMU model, never a write past the page. */
static void test_decode_fuzz(void)
{
    uint8_t old[PS], new_[PS], enc[PS + 64];
    uint8_t *a = canary_page(PS), *b = malloc(PS);
    int accepted = 0, refused = 0;

    rng_state = 0xdecade;
    for (int iter = 0; iter < 20000; iter++) {
        size_t len;
        fill_random(old, PS);
        memcpy(new_, old, PS);
        for (int k = 0; k < 1 + (int)(rnd() % 40); k++)
            flip(new_, rnd() % PS);
        int n = fy_xbzrle_encode(old, new_, PS, enc, PS);
        len = n > 0 ? (size_t)n : 0;
        switch (rnd() % 4) {
        case 0:                               /* flip some bits */
            for (int k = 0; k < 1 + (int)(rnd() % 4) && len; k++)
                enc[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
            break;
        case 1:                               /* cut */
            len = len ? rnd() % len : 0;
            break;
        case 2:                               /* append junk */
            for (int k = 0; k < 1 + (int)(rnd() % 8); k++)
                enc[len++] = (uint8_t)rnd();
            break;
        default:                              /* pure noise */
            len = rnd() % 64;
            fill_random(enc, len);
        }
        memcpy(a, old, PS);
        memset(a + PS, 0xa5, CANARY);
        memcpy(b, old, PS);
        FyError *err = NULL;
        int got = fy_xbzrle_decode(enc, len, a, PS, &err);
        int want = model_decode(enc, (int)len, b, PS);
        if (got != want) {
            T_FAIL("fuzz %d: decode %d, model %d", iter, got, want);
            fy_error_free(err);
            break;
        }
        if (got < 0) {
            T_ASSERT(err != NULL);
            refused++;
        } else {
            T_ASSERT(got <= PS);
            accepted++;
        }
        if (!canary_ok(a, PS) || memcmp(a, b, PS) != 0) {
            T_FAIL("fuzz %d: page differs from the model or canary hit", iter);
            fy_error_free(err);
            break;
        }
        fy_error_free(err);
    }
    printf("# fuzz: %d accepted, %d refused\n", accepted, refused);
    T_ASSERT(accepted > 1000 && refused > 1000);
    free(a);
    free(b);
}

/* ---- the record body ---- */

static void test_load_body(void)
{
    uint8_t page[PS], body[64];
    FyError *err = NULL;

    memset(page, 0, PS);
    body[0] = ENCODING_FLAG_XBZRLE;
    body[1] = 0;
    body[2] = 4;
    memcpy(body + 3, (uint8_t[]){0x0a, 0x02, 0x77, 0x88}, 4);
    T_EQ_INT(fy_xbzrle_load_body(body, 7, page, PS, &err), 7);
    T_EQ_INT(page[10], 0x77);
    T_EQ_INT(page[11], 0x88);
    T_ASSERT(err == NULL);

    body[0] = 0x02;
    T_EQ_INT(fy_xbzrle_load_body(body, 7, page, PS, &err), -1);
    T_CONTAINS(fy_error_msg(err), "field 'encoding flag' is 0x02, expected "
               "0x01");
    fy_error_clear(&err);

    body[0] = ENCODING_FLAG_XBZRLE;
    body[1] = 0x10;
    body[2] = 0x01;                             /* 4097 */
    T_EQ_INT(fy_xbzrle_load_body(body, 7, page, PS, &err), -1);
    T_CONTAINS(fy_error_msg(err), "field 'encoded_len' is 4097, more than "
               "the page size 4096");
    fy_error_clear(&err);

    body[1] = 0;
    body[2] = 9;
    T_EQ_INT(fy_xbzrle_load_body(body, 7, page, PS, &err), -1);
    T_CONTAINS(fy_error_msg(err), "'encoded_len' is 9 but only 4 bytes");
    fy_error_clear(&err);

    T_EQ_INT(fy_xbzrle_load_body(body, 2, page, PS, &err), -1);
    T_CONTAINS(fy_error_msg(err), "too short for the header");
    fy_error_clear(&err);

    body[2] = 3;
    memcpy(body + 3, (uint8_t[]){0x00, 0x00, 0x00}, 3);
    T_EQ_INT(fy_xbzrle_load_body(body, 6, page, PS, &err), -1);
    T_CONTAINS(fy_error_msg(err), "zero-length nzrun");
    fy_error_clear(&err);
}

static int load_from_bytes(const uint8_t *bytes, size_t len, uint8_t *page,
                           FyError **errp)
{
    FyChannel *c = fy_channel_mem_new(bytes, len);
    FyStream *f = fy_stream_new_input(c, true);
    uint8_t scratch[PS];
    int r;

    fy_get_be64(f);                       /* stands for the record header */
    r = fy_xbzrle_load_record(f, scratch, page, PS, errp);
    fy_stream_close(f, NULL);
    return r;
}

static void test_load_record_stream(void)
{
    uint8_t old[PS], new_[PS], page[PS], enc[PS], rec[8 + 3 + PS];
    FyError *err = NULL;
    int n;

    rng_state = 77;
    fill_random(old, PS);
    memcpy(new_, old, PS);
    for (int k = 0; k < 30; k++)
        flip(new_, rnd() % PS);
    n = fy_xbzrle_encode(old, new_, PS, enc, PS);
    T_ASSERT(n > 0);
    memset(rec, 0, 8);
    rec[8] = ENCODING_FLAG_XBZRLE;
    rec[9] = (uint8_t)(n >> 8);
    rec[10] = (uint8_t)n;
    memcpy(rec + 11, enc, (size_t)n);

    memcpy(page, old, PS);
    T_EQ_INT(load_from_bytes(rec, 11 + (size_t)n, page, &err), 0);
    T_ASSERT(err == NULL);
    T_EQ_MEM(page, new_, PS);

    /* the stream ends inside the encoded data */
    T_EQ_INT(load_from_bytes(rec, 11 + (size_t)n - 1, page, &err), -1);
    T_CONTAINS(fy_error_msg(err), "XBZRLE record (stream offset 8)");
    fy_error_clear(&err);

    /* the stream ends inside the header */
    T_EQ_INT(load_from_bytes(rec, 10, page, &err), -1);
    T_CONTAINS(fy_error_msg(err), "XBZRLE record header (stream offset 8)");
    fy_error_clear(&err);

    /* a bad encoding names where the encoded data starts */
    rec[11] = 0x80;
    rec[12] = 0x80;
    T_EQ_INT(load_from_bytes(rec, 11 + (size_t)n, page, &err), -1);
    T_CONTAINS(fy_error_msg(err), "encoded data at 11");
    T_CONTAINS(fy_error_msg(err), "longer than 14 bits");
    fy_error_clear(&err);

    rec[8] = 0;
    T_EQ_INT(load_from_bytes(rec, 11 + (size_t)n, page, &err), -1);
    T_CONTAINS(fy_error_msg(err), "(stream offset 8): field 'encoding flag'");
    fy_error_clear(&err);
}

static void test_impls_listed(void)
{
    int n = 0;
    for (int i = 0; i < FY_XBZRLE_IMPL__MAX; i++) {
        if (fy_xbzrle_impl_available(i)) {
            printf("# impl %s available\n", fy_xbzrle_impl_name(i));
            n++;
        }
    }
    T_ASSERT(n >= 2);
    T_ASSERT(!fy_xbzrle_impl_available(FY_XBZRLE_IMPL__MAX));
    T_EQ_INT(fy_xbzrle_encode_impl(FY_XBZRLE_IMPL__MAX, (uint8_t *)"a",
                                   (uint8_t *)"b", 1, (uint8_t[4]){0}, 4), -1);
}

int main(void)
{
    T_RUN(test_impls_listed);
    T_RUN(test_docs_example);
    T_RUN(test_golden_lengths);
    T_RUN(test_unchanged_and_overflow);
    T_RUN(test_random_vs_model);
    T_RUN(test_hostile_decode);
    T_RUN(test_decode_fuzz);
    T_RUN(test_load_body);
    T_RUN(test_load_record_stream);
    return t_done();
}
