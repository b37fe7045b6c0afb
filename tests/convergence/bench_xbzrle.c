/*
 * bench_xbzrle.c: XBZRLE encoder throughput (not a test).
 *
 *   bench_xbzrle [seconds-per-case]
 *
 * For each comparison loop the CPU has, and for a byte-at-a-time loop for
 * reference, encodes pages against their old copies and prints GB/s of page
 * data and the mean encoded size. Cases: pages with 0.1%, 1% and 10% of
 * bytes changed at random places, unchanged pages, and random pages (which
 * overflow). Two working sets: 64 pages (in cache) and 16384 pages (64 MiB
 * old + 64 MiB new, from memory, as a 64 MiB XBZRLE cache is).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/xbzrle.h"

#define PS 4096

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The obvious loop, for scale: one byte per step. */
static int naive_encode(const uint8_t *o, const uint8_t *n, size_t ps,
                        uint8_t *out, size_t max)
{
    size_t i = 0, d = 0;
    while (i < ps) {
        size_t z = 0, s;
        while (i < ps && o[i] == n[i]) {
            i++;
            z++;
        }
        if (z == ps)
            return 0;
        if (i == ps)
            return (int)d;
        if (d + 4 > max)
            return -1;
        out[d++] = z < 128 ? (uint8_t)z : (uint8_t)(z | 0x80);
        if (z >= 128)
            out[d++] = (uint8_t)(z >> 7);
        s = i;
        while (i < ps && o[i] != n[i])
            i++;
        if (d + 2 + (i - s) > max)
            return -1;
        out[d++] = i - s < 128 ? (uint8_t)(i - s) : (uint8_t)((i - s) | 0x80);
        if (i - s >= 128)
            out[d++] = (uint8_t)((i - s) >> 7);
        memcpy(out + d, n + s, i - s);
        d += i - s;
    }
    return (int)d;
}

typedef struct Case {
    const char *name;
    double frac;      /* fraction of bytes changed; <0: random page */
} Case;

static void make_pages(uint8_t *old, uint8_t *new_, size_t npages, double frac)
{
    for (size_t i = 0; i < npages * PS; i += 8) {
        uint64_t v = rnd();
        memcpy(old + i, &v, 8);
    }
    memcpy(new_, old, npages * PS);
    for (size_t p = 0; p < npages; p++) {
        uint8_t *np = new_ + p * PS;
        if (frac < 0) {
            for (size_t i = 0; i < PS; i++)
                np[i] = (uint8_t)rnd();
        } else {
            size_t k = (size_t)(frac * PS + 0.5);
            for (size_t j = 0; j < k; j++)
                np[rnd() % PS] ^= (uint8_t)(1 + rnd() % 255);
        }
    }
}

static void run(int impl, const uint8_t *old, const uint8_t *new_,
                size_t npages, double secs, const char *set, const char *cname)
{
    static uint8_t out[PS];
    uint64_t pages = 0, bytes = 0, overflows = 0;
    double t0 = now_s(), t;

    do {
        for (size_t p = 0; p < npages; p++) {
            int n = impl < 0
                ? naive_encode(old + p * PS, new_ + p * PS, PS, out, PS)
                : fy_xbzrle_encode_impl(impl, old + p * PS, new_ + p * PS, PS,
                                        out, PS);
            if (n < 0)
                overflows++;
            else
                bytes += (uint64_t)n;
        }
        pages += npages;
        t = now_s() - t0;
    } while (t < secs);
    printf("%-9s %-12s %-10s %7.2f GB/s  %6.0f ns/page  %6.1f B/page%s\n",
           impl < 0 ? "naive" : fy_xbzrle_impl_name(impl), set, cname,
           (double)pages * PS / t / 1e9, t / (double)pages * 1e9,
           pages > overflows ? (double)bytes / (double)(pages - overflows) : 0,
           overflows ? "  (overflow)" : "");
}

int main(int argc, char **argv)
{
    static const Case cases[] = {
        {"0.1%", 0.001}, {"1%", 0.01}, {"10%", 0.10},
        {"unchanged", 0}, {"random", -1},
    };
    static const struct { const char *name; size_t pages; } sets[] = {
        {"64 pages", 64}, {"64 MiB", 16384},
    };
    double secs = argc > 1 ? atof(argv[1]) : 0.5;

    printf("# XBZRLE encode, %d-byte pages, %.2f s per case; auto = %s\n", PS,
           secs, fy_xbzrle_impl_available(FY_XBZRLE_IMPL_AVX2) ? "avx2"
                                                               : "sse2/generic");
    for (size_t s = 0; s < sizeof(sets) / sizeof(sets[0]); s++) {
        size_t np = sets[s].pages;
        uint8_t *old = aligned_alloc(64, np * PS);
        uint8_t *new_ = aligned_alloc(64, np * PS);
        for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
            make_pages(old, new_, np, cases[c].frac);
            for (int impl = FY_XBZRLE_IMPL_GENERIC; impl < FY_XBZRLE_IMPL__MAX;
                 impl++)
                if (fy_xbzrle_impl_available(impl))
                    run(impl, old, new_, np, secs, sets[s].name, cases[c].name);
            run(-1, old, new_, np, secs, sets[s].name, cases[c].name);
        }
        free(old);
        free(new_);
    }
    return 0;
}
