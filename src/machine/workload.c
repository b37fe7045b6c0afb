/*
 * workload.c: the guest programs' inner loops. See workload.h.
 *
 * Hot path: no locks, no calls; per store a short block lookup (normally
 * the first block matches), the store, and with software dirty logging the
 * page's bit set after the store (an atomic OR unless already set; see
 * dirty.h for why the batch boundary makes the skip safe).
 */
#include <string.h>

#include "machine/dirty.h"
#include "machine/workload.h"

#define PAGE_WORDS (FY_TARGET_PAGE_SIZE / 8)
#define HOT_PERMILLE_16 58982u /* 90% of 65536 */

/* Host address of word `word` of linear guest page lpage; block and page in
 * block for the dirty bitmap. */
static inline uint64_t *guest_word(const FyGuestMap *g, uint64_t lpage, unsigned word,
                                   int *blk, uint64_t *bpage)
{
    int b = 0;
    while (b + 1 < g->nblocks && lpage >= g->end[b])
        b++;
    *blk = b;
    *bpage = lpage - g->first[b];
    return (uint64_t *)(g->host[b] + (*bpage << FY_TARGET_PAGE_BITS)) + word;
}

/* Uniform in [0, n) from 64 random bits (multiply-high, no division). */
static inline uint64_t scale(uint64_t r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)r * n) >> 64);
}

static inline void store(FyVCpu *v, const FyGuestMap *g, uint64_t lpage,
                         unsigned word, uint64_t val, bool mark)
{
    int b;
    uint64_t bpage;
    uint64_t *p = guest_word(g, lpage, word, &b, &bpage);
    *p = val;
    if (mark)
        fy_dirty_mark_page(g->soft[b], bpage);
    v->regs[0] = val;
    v->regs[1] = lpage;
    v->regs[3] ^= val;
}

static void run_sweep(FyVCpu *v, const FyGuestMap *g, uint64_t n, bool mark)
{
    for (uint64_t i = 0; i < n; i++) {
        uint64_t lpage = v->slice_start + v->pos;
        int b;
        uint64_t bpage;
        uint64_t *p = guest_word(g, lpage, (unsigned)(lpage % PAGE_WORDS), &b, &bpage);
        uint64_t val = *p + 1;
        *p = val;
        if (mark)
            fy_dirty_mark_page(g->soft[b], bpage);
        v->regs[0] = val;
        v->regs[1] = lpage;
        v->regs[3] ^= val;
        if (++v->pos == v->slice_pages) {
            v->pos = 0;
            v->regs[2]++;
        }
    }
}

static void run_random(FyVCpu *v, const FyGuestMap *g, uint64_t n, bool mark)
{
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = fy_rng_next(v->rng);
        v->pos = scale(r, v->slice_pages);
        store(v, g, v->slice_start + v->pos, (unsigned)(r % PAGE_WORDS),
              r ^ (v->steps + i), mark);
    }
}

static void run_hotspot(FyVCpu *v, const FyGuestMap *g, uint64_t n, bool mark)
{
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = fy_rng_next(v->rng);
        uint64_t lpage;
        if ((r & 0xffff) < HOT_PERMILLE_16) {
            lpage = v->hot_start + scale(r, v->hot_pages);
            v->regs[2]++;
        } else {
            lpage = v->slice_start + scale(r, v->slice_pages);
        }
        v->pos = lpage - v->slice_start;
        store(v, g, lpage, (unsigned)((r >> 16) % PAGE_WORDS), r ^ (v->steps + i), mark);
    }
}

uint64_t fy_workload_run(FyVCpu *v, const FyGuestMap *g, uint64_t n, bool mark)
{
    if (v->slice_pages == 0)
        return 0;
    switch ((FyWorkload)v->workload) {
    case FY_WORKLOAD_SWEEP:
        run_sweep(v, g, n, mark);
        return n;
    case FY_WORKLOAD_RANDOM:
        run_random(v, g, n, mark);
        return n;
    case FY_WORKLOAD_HOTSPOT:
        run_hotspot(v, g, n, mark);
        return n;
    case FY_WORKLOAD_IDLE:
    default:
        return 0;
    }
}
