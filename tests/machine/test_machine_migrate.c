/*
 * test_machine_migrate.c: the machine's state through the real stream
 * engine (savevm writer and loader, the "ram" section) into a fresh
 * machine, then both go on: the destination must end with the same RAM as
 * a run that never migrated, and right after the load its RAM and device
 * state must equal the source's.
 *
 *   snapshot   source stopped; fy_savevm_save_all; load; compare
 *   live       source running flat out while RAM iterates (dirty syncs
 *              through FyVMOps, bitmap or uffd-wp), then stop, complete
 *   mismatch   a destination with another vCPU count or workload refuses
 *              the stream, naming the field
 */
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#include "ferry/ram.h"
#include "ferry/savevm.h"
#include "machine-test.h"

typedef struct Vm {
    FyMachine *m;
    FySaveState *ss;
    FyRamState *rs;
} Vm;

static bool vm_init(Vm *vm, const FyMachineConfig *c)
{
    memset(vm, 0, sizeof(*vm));
    vm->m = mt_new(c);
    if (!vm->m)
        return false;
    vm->ss = fy_savevm_new(FY_MACHINE_TYPE);
    void *op;
    const FyVMOps *ops = fy_machine_vm_ops(vm->m, &op);
    vm->rs = fy_ram_new(fy_machine_ram_list(vm->m), ops, op);
    FyError *err = NULL;
    if (fy_ram_register(vm->rs, vm->ss, &err) < 0 ||
        fy_machine_register_state(vm->m, vm->ss, &err) < 0) {
        printf("# register: %s\n", fy_error_msg(err));
        fy_error_free(err);
        return false;
    }
    FyRamOptions o = { .detect_zero = true };
    fy_ram_set_options(vm->rs, &o);
    return true;
}

static void vm_free(Vm *vm)
{
    fy_savevm_free(vm->ss);
    fy_ram_free(vm->rs);
    fy_machine_free(vm->m);
}

/* Load the bytes of c into dst; returns 0 or -1 with msg. */
static int vm_load(Vm *dst, FyChannel *c, char *msg, size_t msglen)
{
    size_t len;
    const uint8_t *d = fy_channel_mem_data(c, &len);
    FyChannel *in = fy_channel_mem_new(d, len);
    FyStream *f = fy_stream_new_input(in, true);
    FyError *err = NULL;
    FyLoadResult res = { 0 };
    int r = fy_loadvm_state(dst->ss, f, NULL, &res, &err);
    snprintf(msg, msglen, "%s", err ? fy_error_msg(err) : "");
    fy_error_free(err);
    json_decref(res.vmdesc);
    fy_stream_close(f, NULL);
    return r;
}

static uint64_t max_steps(FyMachine *m)
{
    uint64_t s = 0;
    for (int i = 0; i < fy_machine_vcpu_count(m); i++)
        if (fy_machine_vcpu_steps(m, i) > s)
            s = fy_machine_vcpu_steps(m, i);
    return s;
}

/* dst just loaded from stopped src: same RAM, same device state. */
static void expect_same_as_source(Vm *src, Vm *dst)
{
    char ds[512], dd[512];
    mt_digests(src->m, ds, sizeof(ds));
    mt_digests(dst->m, dd, sizeof(dd));
    T_EQ_STR(dd, ds);
    json_t *js = fy_machine_state_json(src->m), *jd = fy_machine_state_json(dst->m);
    T_ASSERT(js && jd && json_equal(js, jd));
    if (js && jd && !json_equal(js, jd)) {
        char *a = json_dumps(js, JSON_COMPACT), *b = json_dumps(jd, JSON_COMPACT);
        printf("# source      %.600s\n# destination %.600s\n", a, b);
        free(a);
        free(b);
    }
    json_decref(js);
    json_decref(jd);
    T_EQ_INT(fy_machine_clock_ns(dst->m), fy_machine_clock_ns(src->m));
}

/* Both continue to `steps`: the destination matches a machine that ran
 * there without migrating. */
static void expect_continues(Vm *dst, const FyMachineConfig *c, uint64_t steps)
{
    FyMachine *ref = mt_new(c);
    T_ASSERT(ref);
    if (!ref)
        return;
    T_EQ_INT(mt_run_until(dst->m, steps), 0);
    T_EQ_INT(mt_run_until(ref, steps), 0);
    char dd[512], dr[512];
    mt_digests(dst->m, dd, sizeof(dd));
    mt_digests(ref, dr, sizeof(dr));
    T_EQ_STR(dd, dr);
    json_t *jd = fy_machine_state_json(dst->m), *jr = fy_machine_state_json(ref);
    for (int i = 0; i < c->vcpus; i++) {
        json_t *a = json_array_get(json_object_get(jd, "cpu"), (size_t)i);
        json_t *b = json_array_get(json_object_get(jr, "cpu"), (size_t)i);
        T_ASSERT(json_equal(json_object_get(a, "rng"), json_object_get(b, "rng")));
        T_ASSERT(json_equal(json_object_get(a, "regs"), json_object_get(b, "regs")));
        T_ASSERT(json_equal(json_object_get(a, "pos"), json_object_get(b, "pos")));
    }
    json_decref(jd);
    json_decref(jr);
    fy_machine_free(ref);
}

static void snapshot(FyWorkload w)
{
    FyMachineConfig c = mt_config(w, 2, 16, 77);
    T_EQ_INT(fy_machine_config_add_ram(&c, "extra", 4 << 20, NULL), 0);
    c.timer_period_ns = 50000;
    Vm src, dst;
    if (!vm_init(&src, &c) || !vm_init(&dst, &c)) {
        T_FAIL("setup");
        return;
    }
    /* Some wall time passes, so the clock, timer and UART have state. */
    T_EQ_INT(mt_run_until(src.m, 200000), 0);
    fy_machine_start(src.m, NULL);
    mt_sleep_ms(20);
    fy_machine_stop(src.m, NULL);

    FyChannel *c1 = fy_channel_mem_new(NULL, 0);
    FyStream *f = fy_stream_new_output(c1, false);
    FyError *err = NULL;
    T_EQ_INT(fy_savevm_save_all(src.ss, f, &err), 0);
    if (err)
        printf("# save: %s\n", fy_error_msg(err));
    fy_error_free(err);
    fy_stream_close(f, NULL);
    char msg[1024];
    T_EQ_INT(vm_load(&dst, c1, msg, sizeof(msg)), 0);
    if (msg[0])
        printf("# load: %s\n", msg);
    expect_same_as_source(&src, &dst);
    expect_continues(&dst, &c, max_steps(src.m) + 100000);
    fy_channel_close(c1, NULL);
    vm_free(&src);
    vm_free(&dst);
}

static void test_snapshot_random(void) { snapshot(FY_WORKLOAD_RANDOM); }
static void test_snapshot_sweep(void) { snapshot(FY_WORKLOAD_SWEEP); }
static void test_snapshot_hotspot(void) { snapshot(FY_WORKLOAD_HOTSPOT); }

/* Precopy by hand: setup, iterate with the guest running, stop, complete. */
static void live(FyDirtyTrack track, FyWorkload w)
{
    FyMachineConfig c = mt_config(w, 2, 16, 5);
    c.dirty_track = track;
    c.serial_every = 100000;
    Vm src, dst;
    if (!vm_init(&src, &c) || !vm_init(&dst, &c)) {
        T_FAIL("setup");
        return;
    }
    FyChannel *c1 = fy_channel_mem_new(NULL, 0);
    FyStream *f = fy_stream_new_output(c1, false);
    FyError *err = NULL;
    fy_machine_start(src.m, NULL);
    mt_sleep_ms(10);
    int r = fy_savevm_state_header(src.ss, f, &err);
    if (r == 0)
        r = fy_savevm_state_setup(src.ss, f, &err);
    int rounds = 0;
    for (; r >= 0 && rounds < 6; rounds++) {
        uint64_t must = 0, can = 0;
        fy_savevm_state_pending_exact(src.ss, &must, &can); /* dirty sync, live */
        r = fy_savevm_state_iterate(src.ss, f, &err);
        mt_sleep_ms(3);
    }
    T_EQ_INT(fy_machine_stop(src.m, NULL), 0);
    if (r >= 0)
        r = fy_savevm_state_complete_precopy(src.ss, f, &err);
    fy_savevm_state_cleanup(src.ss);
    T_ASSERT(r >= 0);
    if (err)
        printf("# save: %s\n", fy_error_msg(err));
    fy_error_free(err);
    fy_stream_close(f, NULL);
    size_t len;
    fy_channel_mem_data(c1, &len);
    FyMachineStats st;
    fy_machine_get_stats(src.m, &st);
    printf("# %s/%s: %" PRIu64 " stores while %d rounds sent %zu bytes\n",
           fy_dirty_track_name(track), fy_workload_name(w), st.stores, rounds, len);
    T_ASSERT(st.stores > 0);

    char msg[1024];
    T_EQ_INT(vm_load(&dst, c1, msg, sizeof(msg)), 0);
    if (msg[0])
        printf("# load: %s\n", msg);
    expect_same_as_source(&src, &dst);
    expect_continues(&dst, &c, max_steps(src.m) + 200000);
    fy_channel_close(c1, NULL);
    vm_free(&src);
    vm_free(&dst);
}

static void test_live_bitmap_random(void) { live(FY_DIRTY_BITMAP, FY_WORKLOAD_RANDOM); }
static void test_live_bitmap_sweep(void) { live(FY_DIRTY_BITMAP, FY_WORKLOAD_SWEEP); }
static void test_live_uffd_random(void) { live(FY_DIRTY_UFFD_WP, FY_WORKLOAD_RANDOM); }
static void test_live_uffd_hotspot(void) { live(FY_DIRTY_UFFD_WP, FY_WORKLOAD_HOTSPOT); }

static void mismatch(FyMachineConfig *src_c, FyMachineConfig *dst_c, const char *needle)
{
    Vm src, dst;
    if (!vm_init(&src, src_c) || !vm_init(&dst, dst_c)) {
        T_FAIL("setup");
        return;
    }
    T_EQ_INT(mt_run_until(src.m, 1000), 0);
    FyChannel *c1 = fy_channel_mem_new(NULL, 0);
    FyStream *f = fy_stream_new_output(c1, false);
    T_EQ_INT(fy_savevm_save_all(src.ss, f, NULL), 0);
    fy_stream_close(f, NULL);
    char msg[1024];
    T_EQ_INT(vm_load(&dst, c1, msg, sizeof(msg)), -1);
    printf("# %s\n", msg);
    T_CONTAINS(msg, needle);
    fy_channel_close(c1, NULL);
    vm_free(&src);
    vm_free(&dst);
}

static void test_mismatch(void)
{
    FyMachineConfig a = mt_config(FY_WORKLOAD_RANDOM, 2, 8, 1);
    FyMachineConfig b = mt_config(FY_WORKLOAD_SWEEP, 2, 8, 1);
    mismatch(&a, &b, "source and destination run different workloads");
    b = mt_config(FY_WORKLOAD_RANDOM, 2, 8, 1);
    b.working_set = 4 << 20;
    mismatch(&a, &b, "slice_pages");
    b = mt_config(FY_WORKLOAD_RANDOM, 1, 8, 1);
    mismatch(&a, &b, "cpu");
}

static bool uffd_wp_async_available(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | 1 /* USER_MODE_ONLY */);
    if (fd < 0)
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
    if (fd < 0)
        return false;
    struct uffdio_api api = { .api = UFFD_API,
                              .features = (1u << 15) | (1u << 13) | (1u << 12) };
    bool ok = ioctl(fd, UFFDIO_API, &api) == 0;
    close(fd);
    return ok;
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
    T_RUN(test_snapshot_random);
    T_RUN(test_snapshot_sweep);
    T_RUN(test_snapshot_hotspot);
    T_RUN(test_live_bitmap_random);
    T_RUN(test_live_bitmap_sweep);
    RUN_UFFD(test_live_uffd_random);
    RUN_UFFD(test_live_uffd_hotspot);
    T_RUN(test_mismatch);
    return t_done();
}
