/*
 * test_machine_dirty.c: both dirty tracking backends against the truth.
 *
 * Exactness: snapshot RAM, start logging, run a known number of steps, sync:
 * the bitmap must equal the set of pages whose bytes changed (the
 * workloads' stores always change their page). Live: copy RAM like a
 * migration does (everything once, then only what each sync reports, then
 * a final sync with the machine stopped): the copy must equal RAM, i.e. no
 * write is ever lost while the vCPUs run flat out during the syncs.
 *
 * uffd-wp is skipped (TAP "# SKIP") only when the kernel refuses
 * userfaultfd with async write-protect, probed independently here.
 */
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "machine-test.h"

static bool uffd_wp_async_available(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | 1 /* USER_MODE_ONLY */);
    if (fd < 0)
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
    if (fd < 0) {
        printf("# userfaultfd: %s\n", strerror(errno));
        return false;
    }
    struct uffdio_api api = { .api = UFFD_API,
                              .features = (1u << 15) | (1u << 13) | (1u << 12) };
    bool ok = ioctl(fd, UFFDIO_API, &api) == 0;
    if (!ok)
        printf("# UFFDIO_API(WP_ASYNC): %s\n", strerror(errno));
    close(fd);
    return ok;
}

static uint64_t diff_into(const FyRamBlock *b, const uint8_t *snap, unsigned long *out)
{
    uint64_t n = 0;
    for (uint64_t p = 0; p < b->used_length / 4096; p++) {
        if (memcmp(b->host + p * 4096, snap + p * 4096, 4096) != 0) {
            out[p / FY_BITS_PER_LONG] |= 1ul << (p % FY_BITS_PER_LONG);
            n++;
        }
    }
    return n;
}

/* Pages in a but not b, and in b but not a. */
static void compare_bitmaps(const unsigned long *got, const unsigned long *want,
                            uint64_t nbits, const char *what)
{
    uint64_t extra = 0, missing = 0;
    for (uint64_t i = 0; i < FY_BITMAP_LONGS(nbits); i++) {
        extra += (uint64_t)__builtin_popcountl(got[i] & ~want[i]);
        missing += (uint64_t)__builtin_popcountl(want[i] & ~got[i]);
    }
    if (extra || missing)
        T_FAIL("%s: %" PRIu64 " pages reported but not written, %" PRIu64
               " written but not reported", what, extra, missing);
}

static FyError *sync_all(FyMachine *m, const FyVMOps *ops, void *op, unsigned long **bms)
{
    FyError *err = NULL;
    FyRamList *l = fy_machine_ram_list(m);
    for (int i = 0; i < l->count; i++)
        ops->dirty_log_sync(op, l->blocks[i], bms[i], &err);
    return err;
}

static void exactness(FyDirtyTrack track, FyWorkload w)
{
    FyMachineConfig c = mt_config(w, 2, 16, 11);
    T_EQ_INT(fy_machine_config_add_ram(&c, "extra", 4 << 20, NULL), 0);
    c.dirty_track = track;
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    void *op;
    const FyVMOps *ops = fy_machine_vm_ops(m, &op);
    FyRamList *l = fy_machine_ram_list(m);
    uint8_t *snap[2];
    unsigned long *got[2], *want[2];
    uint64_t steps = 400;
    T_EQ_INT(mt_run_until(m, steps), 0);

    FyError *err = NULL;
    T_EQ_INT(ops->dirty_log_start(op, &err), 0);
    if (err)
        printf("# %s\n", fy_error_msg(err));
    fy_error_clear(&err);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 2; i++) {
            snap[i] = mt_snapshot(l->blocks[i]);
            got[i] = mt_bitmap_new(l->blocks[i]);
            want[i] = mt_bitmap_new(l->blocks[i]);
        }
        steps += 1500;
        T_EQ_INT(mt_run_until(m, steps), 0);
        err = sync_all(m, ops, op, got);
        T_ASSERT(err == NULL);
        fy_error_clear(&err);
        uint64_t written = 0;
        for (int i = 0; i < 2; i++) {
            written += diff_into(l->blocks[i], snap[i], want[i]);
            compare_bitmaps(got[i], want[i], l->blocks[i]->used_length / 4096,
                            l->blocks[i]->idstr);
        }
        T_ASSERT(written > 100);
        /* The record was cleared: nothing new without running. */
        for (int i = 0; i < 2; i++)
            memset(got[i], 0, FY_BITMAP_LONGS(l->blocks[i]->used_length / 4096) * sizeof(long));
        err = sync_all(m, ops, op, got);
        T_ASSERT(err == NULL);
        fy_error_clear(&err);
        for (int i = 0; i < 2; i++) {
            T_EQ_INT(mt_count_bits(got[i], l->blocks[i]->used_length / 4096), 0);
            free(snap[i]);
            free(got[i]);
            free(want[i]);
        }
    }
    ops->dirty_log_stop(op);
    /* Logging off: the vCPUs run on undisturbed. */
    T_EQ_INT(mt_run_until(m, steps + 1000), 0);
    fy_machine_free(m);
}

/* Migration's invariant: copy all, then what each sync reports while the
 * guest runs, then a last sync stopped: the copy equals RAM. */
static void live_copy(FyDirtyTrack track, FyWorkload w)
{
    FyMachineConfig c = mt_config(w, 2, 16, 3);
    c.dirty_track = track;
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    void *op;
    const FyVMOps *ops = fy_machine_vm_ops(m, &op);
    FyRamBlock *b = fy_machine_ram_list(m)->blocks[0];
    uint64_t npages = b->used_length / 4096;
    unsigned long *bm = mt_bitmap_new(b);
    uint8_t *copy = malloc(b->used_length);
    FyError *err = NULL;

    T_EQ_INT(ops->start(op, NULL), 0);
    mt_sleep_ms(5);
    T_EQ_INT(ops->dirty_log_start(op, &err), 0);
    memcpy(copy, b->host, b->used_length);
    uint64_t reported = 0;
    for (int round = 0; round <= 30; round++) {
        if (round == 30)
            T_EQ_INT(ops->stop(op, NULL), 0);
        else
            mt_sleep_ms(2);
        memset(bm, 0, FY_BITMAP_LONGS(npages) * sizeof(long));
        T_EQ_INT(ops->dirty_log_sync(op, b, bm, &err), 0);
        for (uint64_t p = 0; p < npages; p++) {
            if (mt_test_bit(bm, p)) {
                memcpy(copy + p * 4096, b->host + p * 4096, 4096);
                reported++;
            }
        }
    }
    if (err)
        printf("# %s\n", fy_error_msg(err));
    fy_error_free(err);
    uint64_t lost = 0;
    for (uint64_t p = 0; p < npages; p++)
        lost += memcmp(copy + p * 4096, b->host + p * 4096, 4096) != 0;
    FyMachineStats st;
    fy_machine_get_stats(m, &st);
    printf("# %s/%s: %" PRIu64 " stores, %" PRIu64 " pages reported, %" PRIu64 " lost\n",
           fy_dirty_track_name(track), fy_workload_name(w), st.stores, reported, lost);
    T_EQ_INT(lost, 0);
    T_ASSERT(reported > 0);
    ops->dirty_log_stop(op);
    free(copy);
    free(bm);
    fy_machine_free(m);
}

static void test_bitmap_exact_random(void) { exactness(FY_DIRTY_BITMAP, FY_WORKLOAD_RANDOM); }
static void test_bitmap_exact_sweep(void) { exactness(FY_DIRTY_BITMAP, FY_WORKLOAD_SWEEP); }
static void test_bitmap_live(void) { live_copy(FY_DIRTY_BITMAP, FY_WORKLOAD_RANDOM); }
static void test_bitmap_live_hotspot(void) { live_copy(FY_DIRTY_BITMAP, FY_WORKLOAD_HOTSPOT); }
static void test_uffd_exact_random(void) { exactness(FY_DIRTY_UFFD_WP, FY_WORKLOAD_RANDOM); }
static void test_uffd_exact_hotspot(void) { exactness(FY_DIRTY_UFFD_WP, FY_WORKLOAD_HOTSPOT); }
static void test_uffd_live(void) { live_copy(FY_DIRTY_UFFD_WP, FY_WORKLOAD_RANDOM); }
static void test_uffd_live_sweep(void) { live_copy(FY_DIRTY_UFFD_WP, FY_WORKLOAD_SWEEP); }

/* Pages written before dirty_log_start do not count; a restart forgets. */
static void restart_forgets(FyDirtyTrack track)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_SWEEP, 1, 4, 1);
    c.dirty_track = track;
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    void *op;
    const FyVMOps *ops = fy_machine_vm_ops(m, &op);
    FyRamBlock *b = fy_machine_ram_list(m)->blocks[0];
    unsigned long *bm = mt_bitmap_new(b);
    T_EQ_INT(mt_run_until(m, 100), 0);
    T_EQ_INT(ops->dirty_log_start(op, NULL), 0);
    T_EQ_INT(ops->dirty_log_sync(op, b, bm, NULL), 0);
    T_EQ_INT(mt_count_bits(bm, 1024), 0);
    T_EQ_INT(mt_run_until(m, 150), 0);       /* pages 100..149 */
    ops->dirty_log_stop(op);
    T_EQ_INT(ops->dirty_log_start(op, NULL), 0);
    T_EQ_INT(mt_run_until(m, 160), 0);       /* pages 150..159 */
    T_EQ_INT(ops->dirty_log_sync(op, b, bm, NULL), 0);
    T_EQ_INT(mt_count_bits(bm, 1024), 10);
    for (int p = 150; p < 160; p++)
        T_ASSERT(mt_test_bit(bm, (uint64_t)p));
    ops->dirty_log_stop(op);

    FyError *err = NULL;
    T_EQ_INT(ops->dirty_log_sync(op, b, bm, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "block 'pc.ram': dirty logging is not started");
    fy_error_clear(&err);
    T_EQ_INT(ops->dirty_log_start(op, NULL), 0);
    FyRamBlock other = *b;
    T_EQ_INT(ops->dirty_log_sync(op, &other, bm, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "RAM block 'pc.ram' is not this machine's");
    fy_error_free(err);
    free(bm);
    fy_machine_free(m);
}

static void test_bitmap_restart(void) { restart_forgets(FY_DIRTY_BITMAP); }
static void test_uffd_restart(void) { restart_forgets(FY_DIRTY_UFFD_WP); }

/* The uffd tracker needs no work from the vCPUs and leaves untouched RAM
 * unallocated: protecting holes installs markers, not pages. */
static void test_uffd_holes(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_RANDOM, 1, 64, 1);
    c.dirty_track = FY_DIRTY_UFFD_WP;
    c.working_set = 1 << 20;
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    void *op;
    const FyVMOps *ops = fy_machine_vm_ops(m, &op);
    FyRamBlock *b = fy_machine_ram_list(m)->blocks[0];
    T_EQ_INT(ops->dirty_log_start(op, NULL), 0);
    T_EQ_INT(mt_run_until(m, 5000), 0);
    unsigned long *bm = mt_bitmap_new(b);
    T_EQ_INT(ops->dirty_log_sync(op, b, bm, NULL), 0);
    T_EQ_INT(mt_count_bits(bm, b->used_length / 4096), 256);
    struct stat st;
    T_EQ_INT(fstat(b->fd, &st), 0);
    T_EQ_INT((uint64_t)st.st_blocks * 512, 1 << 20);
    ops->dirty_log_stop(op);
    free(bm);
    fy_machine_free(m);
}

#define RUN_UFFD(fn)                                                          \
    do {                                                                      \
        if (uffd_ok) {                                                        \
            T_RUN(fn);                                                        \
        } else {                                                              \
            t_count++;                                                        \
            printf("ok %d %s # SKIP userfaultfd async write-protect "         \
                   "unavailable\n", t_count, #fn);                            \
        }                                                                     \
    } while (0)

int main(void)
{
    bool uffd_ok = uffd_wp_async_available();
    T_RUN(test_bitmap_exact_random);
    T_RUN(test_bitmap_exact_sweep);
    T_RUN(test_bitmap_live);
    T_RUN(test_bitmap_live_hotspot);
    T_RUN(test_bitmap_restart);
    RUN_UFFD(test_uffd_exact_random);
    RUN_UFFD(test_uffd_exact_hotspot);
    RUN_UFFD(test_uffd_live);
    RUN_UFFD(test_uffd_live_sweep);
    RUN_UFFD(test_uffd_restart);
    RUN_UFFD(test_uffd_holes);
    return t_done();
}
