/*
 * test_machine_workload.c: the guest programs stay in their slices and
 * working set, write what they are documented to write, and mark exactly
 * the pages they store to.
 *
 * The inner loops are driven directly (machine/ internals) over a plain
 * buffer, so each vCPU's footprint can be seen on its own; the sweep
 * counters are then checked in a whole machine with several vCPUs.
 */
#include "machine-test.h"
#include "machine/cpu.h"
#include "machine/dirty.h"
#include "machine/workload.h"

#define RAM_PAGES 2048u /* 8 MiB */

typedef struct Rig {
    uint8_t *ram;
    atomic_ulong *bm;
    FyGuestMap g;
} Rig;

static void rig_init(Rig *r)
{
    r->ram = calloc(RAM_PAGES, 4096);
    r->bm = calloc(FY_BITMAP_LONGS(RAM_PAGES), sizeof(atomic_ulong));
    memset(&r->g, 0, sizeof(r->g));
    /* Two blocks back to back in one buffer: 1536 + 512 pages. */
    r->g.nblocks = 2;
    r->g.host[0] = r->ram;
    r->g.first[0] = 0;
    r->g.end[0] = 1536;
    r->g.host[1] = r->ram + 1536ull * 4096;
    r->g.first[1] = 1536;
    r->g.end[1] = RAM_PAGES;
    r->g.soft[0] = r->bm;
    r->g.soft[1] = r->bm + 1536 / 64;
}

static void rig_free(Rig *r)
{
    free(r->ram);
    free(r->bm);
}

static bool page_nonzero(const Rig *r, uint64_t p)
{
    const uint64_t *w = (const uint64_t *)(r->ram + p * 4096);
    for (int i = 0; i < 512; i++)
        if (w[i])
            return true;
    return false;
}

static bool page_marked(const Rig *r, uint64_t p)
{
    return atomic_load(&r->bm[p / 64]) & (1ul << (p % 64));
}

/* Run vCPU `index` of `nvcpus` over a working set of ws pages; check every
 * written page is in its slice and marked, and nothing else is marked. */
static void check_footprint(FyWorkload w, int index, int nvcpus, uint64_t ws,
                            uint64_t steps, FyVCpu *out)
{
    Rig r;
    rig_init(&r);
    FyMachineConfig c = mt_config(w, nvcpus, 8, 5);
    uint64_t lo = ws * (uint64_t)index / (uint64_t)nvcpus;
    uint64_t hi = ws * (uint64_t)(index + 1) / (uint64_t)nvcpus;
    FyVCpu v;
    memset(&v, 0, sizeof(v));
    fy_cpu_reset(&v, &c, (uint32_t)index, lo, hi - lo);
    T_ASSERT(v.hot_start >= lo && v.hot_start + v.hot_pages <= hi);
    uint64_t done = 0;
    while (done < steps) {
        uint64_t n = steps - done < 256 ? steps - done : 256;
        T_EQ_INT(fy_workload_run(&v, &r.g, n, true), w == FY_WORKLOAD_IDLE ? 0 : n);
        v.steps += n;
        done += n;
    }
    uint64_t written = 0, bad = 0, badmark = 0;
    for (uint64_t p = 0; p < RAM_PAGES; p++) {
        bool nz = page_nonzero(&r, p);
        written += nz;
        if (nz && (p < lo || p >= hi))
            bad++;
        if (nz != page_marked(&r, p))
            badmark++;
    }
    T_EQ_INT(bad, 0);
    T_EQ_INT(badmark, 0);
    if (w == FY_WORKLOAD_IDLE)
        T_EQ_INT(written, 0);
    else
        T_ASSERT(written > 0);
    if (out)
        *out = v;
    rig_free(&r);
}

static void test_slices(void)
{
    FyWorkload ws[] = { FY_WORKLOAD_IDLE, FY_WORKLOAD_SWEEP, FY_WORKLOAD_RANDOM,
                        FY_WORKLOAD_HOTSPOT };
    for (int w = 0; w < 4; w++) {
        /* Three vCPUs over 1700 pages: slices cross the block boundary. */
        for (int i = 0; i < 3; i++)
            check_footprint(ws[w], i, 3, 1700, 50000, NULL);
    }
}

static void test_sweep_counters(void)
{
    Rig r;
    rig_init(&r);
    FyMachineConfig c = mt_config(FY_WORKLOAD_SWEEP, 1, 8, 1);
    FyVCpu v;
    memset(&v, 0, sizeof(v));
    fy_cpu_reset(&v, &c, 0, 100, 300);
    fy_workload_run(&v, &r.g, 1000, false); /* 3 passes + 100 pages */
    for (uint64_t p = 100; p < 400; p++) {
        uint64_t word;
        memcpy(&word, r.ram + p * 4096 + (p % 512) * 8, 8);
        T_EQ_INT(word, p < 200 ? 4 : 3);
    }
    T_EQ_INT(v.pos, 100);
    T_EQ_INT(v.regs[2], 3); /* passes */
    T_EQ_INT(v.regs[1], 199);
    T_EQ_INT(atomic_load(&r.bm[2]), 0); /* mark == false: nothing marked */
    rig_free(&r);
}

static void test_random_uniform(void)
{
    check_footprint(FY_WORKLOAD_RANDOM, 0, 1, 1024, 100000, NULL);
    /* Quarters of the slice get about a quarter of the stores each. */
    Rig r;
    rig_init(&r);
    FyMachineConfig c = mt_config(FY_WORKLOAD_RANDOM, 1, 8, 5);
    FyVCpu u;
    memset(&u, 0, sizeof(u));
    fy_cpu_reset(&u, &c, 0, 0, 1024);
    uint64_t q[4] = { 0 };
    for (int i = 0; i < 40000; i++) {
        fy_workload_run(&u, &r.g, 1, false);
        u.steps++;
        q[u.regs[1] / 256]++;
    }
    for (int i = 0; i < 4; i++)
        T_ASSERT(q[i] > 9000 && q[i] < 11000);
    rig_free(&r);
}

static void test_hotspot_share(void)
{
    FyVCpu v;
    check_footprint(FY_WORKLOAD_HOTSPOT, 1, 2, 2048, 100000, &v);
    T_EQ_INT(v.hot_pages, 1024 / 16);
    double share = (double)v.regs[2] / 100000.0;
    printf("# hot share %.3f\n", share);
    T_ASSERT(share > 0.88 && share < 0.92);
}

/* A whole machine: after S sweep steps on P pages per slice, page j of a
 * slice holds S / P + (j < S % P); pages outside the working set are zero. */
static void test_machine_sweep_exact(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_SWEEP, 3, 8, 1);
    T_EQ_INT(fy_machine_config_add_ram(&c, "extra", 2 << 20, NULL), 0);
    c.working_set = 1000ull * 4096 + 4095; /* rounds down to 1000 pages */
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    const uint64_t S = 1234;
    T_EQ_INT(mt_run_until(m, S), 0);
    FyRamList *l = fy_machine_ram_list(m);
    uint64_t lpage = 0, bad = 0, outside = 0;
    for (int b = 0; b < l->count; b++) {
        for (uint64_t p = 0; p < l->blocks[b]->used_length / 4096; p++, lpage++) {
            const uint8_t *page = l->blocks[b]->host + p * 4096;
            if (lpage >= 1000) {
                for (int i = 0; i < 4096; i++)
                    outside += page[i] != 0;
                continue;
            }
            int vc = lpage < 333 ? 0 : lpage < 666 ? 1 : 2;
            uint64_t lo = 1000ull * (uint64_t)vc / 3, hi = 1000ull * (uint64_t)(vc + 1) / 3;
            uint64_t P = hi - lo, j = lpage - lo;
            uint64_t expect = S / P + (j < S % P);
            uint64_t word;
            memcpy(&word, page + (lpage % 512) * 8, 8);
            bad += word != expect;
        }
    }
    T_EQ_INT(bad, 0);
    T_EQ_INT(outside, 0);
    fy_machine_free(m);
}

int main(void)
{
    T_RUN(test_slices);
    T_RUN(test_sweep_counters);
    T_RUN(test_random_uniform);
    T_RUN(test_hotspot_share);
    T_RUN(test_machine_sweep_exact);
    return t_done();
}
