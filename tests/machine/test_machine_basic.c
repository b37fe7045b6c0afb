/*
 * test_machine_basic.c: the machine object: config parsing, creation errors,
 * RAM layout and holes, the digest, determinism, run_until, stop/start,
 * pacing, throttling and the dirty limit.
 */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "machine-test.h"

static void test_parse_size(void)
{
    uint64_t v = 0;
    FyError *err = NULL;
    T_EQ_INT(fy_parse_size("64M", &v, NULL), 0);
    T_EQ_INT(v, 64ull << 20);
    T_EQ_INT(fy_parse_size("2G", &v, NULL), 0);
    T_EQ_INT(v, 2ull << 30);
    T_EQ_INT(fy_parse_size("16KiB", &v, NULL), 0);
    T_EQ_INT(v, 16384);
    T_EQ_INT(fy_parse_size("4096", &v, NULL), 0);
    T_EQ_INT(v, 4096);
    T_EQ_INT(fy_parse_size("1t", &v, NULL), 0);
    T_EQ_INT(v, 1ull << 40);
    T_EQ_INT(fy_parse_size("8MB", &v, NULL), 0);
    T_EQ_INT(v, 8ull << 20);
    const char *bad[] = { "", "M", "12Q", "-1", "1.5G", "99999999999999999999", "16777216T" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        T_EQ_INT(fy_parse_size(bad[i], &v, &err), -1);
        T_CONTAINS(err ? fy_error_msg(err) : NULL, "size '");
        fy_error_clear(&err);
    }
}

static void test_parse_rate_and_names(void)
{
    uint64_t pps = 0;
    FyError *err = NULL;
    T_EQ_INT(fy_parse_dirty_rate("64M", &pps, NULL), 0);
    T_EQ_INT(pps, 16384);
    T_EQ_INT(fy_parse_dirty_rate("5000p", &pps, NULL), 0);
    T_EQ_INT(pps, 5000);
    T_EQ_INT(fy_parse_dirty_rate("100", &pps, NULL), 0);
    T_EQ_INT(pps, 1);
    T_EQ_INT(fy_parse_dirty_rate("10q", &pps, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "dirty rate '10q'");
    fy_error_clear(&err);

    FyWorkload w;
    const char *names[] = { "idle", "sweep", "random", "hotspot" };
    for (int i = 0; i < 4; i++) {
        T_EQ_INT(fy_workload_parse(names[i], &w, NULL), 0);
        T_EQ_INT(w, i);
        T_EQ_STR(fy_workload_name(w), names[i]);
    }
    T_EQ_INT(fy_workload_parse("busy", &w, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "unknown workload 'busy'");
    fy_error_clear(&err);
    FyDirtyTrack t;
    T_EQ_INT(fy_dirty_track_parse("uffd-wp", &t, NULL), 0);
    T_EQ_INT(t, FY_DIRTY_UFFD_WP);
    T_EQ_STR(fy_dirty_track_name(FY_DIRTY_BITMAP), "bitmap");
    T_EQ_INT(fy_dirty_track_parse("kvm", &t, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "'kvm'");
    fy_error_clear(&err);
}

static void test_config_add_ram(void)
{
    FyMachineConfig c;
    FyError *err = NULL;
    fy_machine_config_init(&c);
    T_EQ_INT(c.nr_ram, 1);
    T_EQ_STR(c.ram[0].idstr, "pc.ram");
    T_EQ_INT(fy_machine_config_add_ram(&c, "vga.vram", 8 << 20, NULL), 0);
    T_EQ_INT(c.nr_ram, 2);
    T_EQ_INT(fy_machine_config_add_ram(&c, "vga.vram", 8 << 20, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "'vga.vram' is already configured");
    fy_error_clear(&err);
    T_EQ_INT(fy_machine_config_add_ram(&c, "odd", 4095, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "size 4095");
    fy_error_clear(&err);
    for (int i = 2; i < FY_MACHINE_MAX_RAM; i++) {
        char id[16];
        snprintf(id, sizeof(id), "b%d", i);
        T_EQ_INT(fy_machine_config_add_ram(&c, id, 4096, NULL), 0);
    }
    T_EQ_INT(fy_machine_config_add_ram(&c, "one-too-many", 4096, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "at most");
    fy_error_clear(&err);
}

static void expect_new_error(FyMachineConfig *c, const char *needle)
{
    FyError *err = NULL;
    FyMachine *m = fy_machine_new(c, &err);
    T_ASSERT(m == NULL);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, needle);
    fy_error_free(err);
    fy_machine_free(m);
}

static void test_new_errors(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_SWEEP, 0, 16, 1);
    expect_new_error(&c, "0 vCPUs");
    c = mt_config(FY_WORKLOAD_SWEEP, 1, 16, 1);
    c.working_set = 17 << 20;
    expect_new_error(&c, "working set of 17825792 bytes is larger than RAM");
    c = mt_config(FY_WORKLOAD_SWEEP, 1, 16, 1);
    snprintf(c.serial, sizeof(c.serial), "bogus:x");
    expect_new_error(&c, "serial backend 'bogus:x'");
    snprintf(c.serial, sizeof(c.serial), "unix:/nonexistent/ferry.sock");
    expect_new_error(&c, "serial unix:/nonexistent/ferry.sock: connect: No such file");
    snprintf(c.serial, sizeof(c.serial), "file:/nonexistent/dir/log");
    expect_new_error(&c, "serial file:/nonexistent/dir/log: open");
    c = mt_config(FY_WORKLOAD_SWEEP, 1, 16, 1);
    c.ram[0].size = 12345;
    expect_new_error(&c, "RAM block 'pc.ram': size 12345");
    c = mt_config(FY_WORKLOAD_SWEEP, 1, 16, 1);
    c.ram[0].fd = 9999;
    expect_new_error(&c, "RAM block 'pc.ram': fd 9999: Bad file descriptor");
}

static void test_ram_layout(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_SWEEP, 2, 16, 1);
    T_EQ_INT(fy_machine_config_add_ram(&c, "vga.vram", 3 << 20, NULL), 0);
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    FyRamList *l = fy_machine_ram_list(m);
    T_EQ_INT(l->count, 2);
    T_EQ_STR(l->blocks[0]->idstr, "pc.ram");
    T_EQ_STR(l->blocks[1]->idstr, "vga.vram");
    T_EQ_INT(l->blocks[0]->used_length, 16 << 20);
    T_EQ_INT(l->blocks[1]->used_length, 3 << 20);
    T_EQ_INT(l->blocks[1]->mr_addr, 16 << 20);
    for (int i = 0; i < 2; i++) {
        T_EQ_INT(l->blocks[i]->page_size, 4096);
        T_ASSERT(l->blocks[i]->fd >= 0);
        T_ASSERT(l->blocks[i]->shared);
        T_ASSERT(l->blocks[i]->host != NULL);
    }
    T_EQ_INT(fy_ram_list_total(l), 19 << 20);
    T_EQ_INT(fy_machine_vcpu_count(m), 2);
    T_ASSERT(!fy_machine_is_running(m));
    /* The second vCPU's slice runs into the second block: both get written. */
    T_EQ_INT(mt_run_until(m, 20000), 0);
    struct stat st;
    T_EQ_INT(fstat(l->blocks[1]->fd, &st), 0);
    T_ASSERT(st.st_blocks > 0);
    fy_machine_free(m);
}

/* A memfd that the caller hands in is mapped, not copied. */
static void test_ram_given_fd(void)
{
    int fd = memfd_create("given", MFD_CLOEXEC);
    T_ASSERT(fd >= 0);
    T_EQ_INT(ftruncate(fd, 4 << 20), 0);
    T_EQ_INT(pwrite(fd, "hello", 5, 8192), 5);
    FyMachineConfig c = mt_config(FY_WORKLOAD_IDLE, 1, 4, 1);
    c.ram[0].fd = fd;
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (m) {
        FyRamBlock *b = fy_machine_ram_list(m)->blocks[0];
        T_EQ_MEM(b->host + 8192, "hello", 5);
        T_ASSERT(b->fd != fd);
        fy_machine_free(m);
    }
    c.ram[0].size = 8 << 20;
    expect_new_error(&c, "holds 4194304 bytes, 8388608 needed");
    close(fd);
}

/* The VmFlags line of the /proc/self/smaps entry that starts at addr. */
static bool smaps_flags(const void *addr, char *out, size_t outlen)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return false;
    char line[512];
    bool in = false, found = false;
    while (fgets(line, sizeof(line), f)) {
        unsigned long start;
        if (sscanf(line, "%lx-", &start) == 1 && strchr(line, '-') &&
            strchr(line, ' ') > strchr(line, '-'))
            in = (start == (unsigned long)(uintptr_t)addr);
        else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            size_t n = strlen(line + 8);
            if (n >= outlen)
                n = outlen - 1;
            memcpy(out, line + 8, n);
            out[n] = 0;
            found = true;
            break;
        }
    }
    fclose(f);
    return found;
}

/* --memory-backend ram: private anonymous blocks, 2 MiB aligned and marked
 * for huge pages, no fd; the guest computes the same RAM as on memfds. */
static void test_ram_anonymous(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_SWEEP, 2, 16, 1);
    T_EQ_INT(fy_machine_config_add_ram(&c, "vga.vram", 3 << 20, NULL), 0);
    FyMachine *mfd = mt_new(&c);
    c.ram[0].anon = c.ram[1].anon = true;
    FyMachine *m = mt_new(&c);
    T_ASSERT(m && mfd);
    if (!m || !mfd)
        goto out;
    FyRamList *l = fy_machine_ram_list(m);
    for (int i = 0; i < 2; i++) {
        FyRamBlock *b = l->blocks[i];
        T_EQ_INT(b->fd, -1);
        T_ASSERT(!b->shared);
        T_EQ_INT((uintptr_t)b->host % (2u << 20), 0);
        char flags[256] = "";
        T_ASSERT(smaps_flags(b->host, flags, sizeof(flags)));
        T_ASSERT(strstr(flags, " hg") != NULL);
        T_ASSERT(strstr(flags, " sh") == NULL);
    }
    T_EQ_INT(mt_run_until(m, 20000), 0);
    T_EQ_INT(mt_run_until(mfd, 20000), 0);
    char da[256], db[256];
    mt_digests(m, da, sizeof(da));
    mt_digests(mfd, db, sizeof(db));
    T_EQ_STR(da, db);
out:
    fy_machine_free(m);
    fy_machine_free(mfd);
}

static uint64_t allocated(FyMachine *m, int block)
{
    struct stat st;
    if (fstat(fy_machine_ram_list(m)->blocks[block]->fd, &st) < 0)
        return UINT64_MAX;
    return (uint64_t)st.st_blocks * 512;
}

/* --mem-prealloc: every page is there before the guest or a migration
 * touches it, on both backends; a given memfd's bytes survive. */
static void test_ram_prealloc(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_IDLE, 1, 8, 1);
    c.ram[0].prealloc = true;
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (m)
        T_EQ_INT(allocated(m, 0), 8 << 20);
    fy_machine_free(m);

    c.ram[0].anon = true;
    m = mt_new(&c);
    T_ASSERT(m);
    if (m) {
        FyRamBlock *b = fy_machine_ram_list(m)->blocks[0];
        unsigned char vec[(8 << 20) / 4096];
        T_EQ_INT(mincore(b->host, b->used_length, vec), 0);
        size_t resident = 0;
        for (size_t i = 0; i < sizeof(vec); i++)
            resident += vec[i] & 1;
        T_EQ_INT(resident, sizeof(vec));
    }
    fy_machine_free(m);

    int fd = memfd_create("given-prealloc", MFD_CLOEXEC);
    T_ASSERT(fd >= 0);
    T_EQ_INT(ftruncate(fd, 8 << 20), 0);
    T_EQ_INT(pwrite(fd, "kept", 4, 3 * 4096 + 17), 4);
    c.ram[0].anon = false;
    c.ram[0].fd = fd;
    m = mt_new(&c);
    T_ASSERT(m);
    if (m) {
        T_EQ_MEM(fy_machine_ram_list(m)->blocks[0]->host + 3 * 4096 + 17, "kept", 4);
        T_EQ_INT(allocated(m, 0), 8 << 20);
    }
    fy_machine_free(m);
    close(fd);
}

/* Untouched RAM stays a hole; digesting does not fault it in. */
static void test_ram_holes(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_SWEEP, 2, 64, 1);
    c.working_set = 1 << 20;
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    T_EQ_INT(allocated(m, 0), 0);
    char d[256];
    mt_digests(m, d, sizeof(d));
    T_EQ_INT(allocated(m, 0), 0);
    T_EQ_INT(mt_run_until(m, 1000), 0);
    T_EQ_INT(allocated(m, 0), 1 << 20);
    mt_digests(m, d, sizeof(d));
    T_EQ_INT(allocated(m, 0), 1 << 20);
    fy_machine_free(m);
}

static void test_digest(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_IDLE, 1, 16, 1);
    FyMachine *a = mt_new(&c), *b = mt_new(&c);
    c.ram[0].size = 8 << 20;
    FyMachine *small = mt_new(&c);
    T_ASSERT(a && b && small);
    if (!a || !b || !small)
        goto out;
    char da[256], db[256], ds[256];
    mt_digests(a, da, sizeof(da));
    mt_digests(b, db, sizeof(db));
    mt_digests(small, ds, sizeof(ds));
    T_EQ_STR(da, db);
    T_ASSERT(strcmp(da, ds) != 0);
    T_EQ_INT(strlen(da), strlen("pc.ram=;") + 32);

    /* A zero page written (allocated) digests like a hole. */
    FyRamBlock *rb = fy_machine_ram_list(b)->blocks[0];
    memset(rb->host + 5 * 4096, 0, 4096);
    mt_digests(b, db, sizeof(db));
    T_EQ_STR(da, db);
    /* One bit anywhere changes it; so does the same bit in another page. */
    rb->host[5 * 4096 + 100] = 1;
    mt_digests(b, db, sizeof(db));
    T_ASSERT(strcmp(da, db) != 0);
    char d1[256];
    strcpy(d1, db);
    rb->host[5 * 4096 + 100] = 0;
    rb->host[6 * 4096 + 100] = 1;
    mt_digests(b, db, sizeof(db));
    T_ASSERT(strcmp(d1, db) != 0 && strcmp(da, db) != 0);
    /* Swapping two words inside a page changes it too. */
    uint64_t w[2] = { 1, 2 };
    memcpy(rb->host + 7 * 4096, w, 16);
    mt_digests(b, d1, sizeof(d1));
    uint64_t sw[2] = { 2, 1 };
    memcpy(rb->host + 7 * 4096, sw, 16);
    mt_digests(b, db, sizeof(db));
    T_ASSERT(strcmp(d1, db) != 0);

    FyError *err = NULL;
    char hex[FY_MACHINE_DIGEST_LEN];
    T_EQ_INT(fy_machine_ram_digest(a, "nope", hex, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "no RAM block 'nope'");
    fy_error_free(err);
out:
    fy_machine_free(a);
    fy_machine_free(b);
    fy_machine_free(small);
}

/* Same seed, same steps: same RAM, however the steps were split up. */
static void test_determinism(void)
{
    FyWorkload ws[] = { FY_WORKLOAD_SWEEP, FY_WORKLOAD_RANDOM, FY_WORKLOAD_HOTSPOT };
    for (size_t i = 0; i < 3; i++) {
        FyMachineConfig c = mt_config(ws[i], 2, 16, 42);
        T_EQ_INT(fy_machine_config_add_ram(&c, "extra", 4 << 20, NULL), 0);
        FyMachine *a = mt_new(&c), *b = mt_new(&c);
        c.seed = 43;
        FyMachine *o = mt_new(&c);
        T_ASSERT(a && b && o);
        if (a && b && o) {
            T_EQ_INT(mt_run_until(a, 300000), 0);
            T_EQ_INT(mt_run_until(b, 1234), 0);
            T_EQ_INT(mt_run_until(b, 100000), 0);
            T_EQ_INT(fy_machine_start(b, NULL), 0); /* runs free for a moment */
            T_EQ_INT(fy_machine_stop(b, NULL), 0);
            uint64_t s = fy_machine_vcpu_steps(b, 0);
            if (fy_machine_vcpu_steps(b, 1) > s)
                s = fy_machine_vcpu_steps(b, 1);
            if (s <= 300000) {
                T_EQ_INT(mt_run_until(b, 300000), 0);
                T_EQ_INT(mt_run_until(o, 300000), 0);
                char da[512], db[512], dox[512];
                mt_digests(a, da, sizeof(da));
                mt_digests(b, db, sizeof(db));
                mt_digests(o, dox, sizeof(dox));
                T_EQ_STR(da, db);
                if (ws[i] != FY_WORKLOAD_SWEEP) /* sweep does not use the seed */
                    T_ASSERT(strcmp(da, dox) != 0);
                json_t *ja = fy_machine_state_json(a), *jb = fy_machine_state_json(b);
                json_t *ca = json_object_get(ja, "cpu"), *cb = json_object_get(jb, "cpu");
                for (size_t k = 0; k < 2; k++) {
                    json_t *x = json_array_get(ca, k), *y = json_array_get(cb, k);
                    T_ASSERT(json_equal(json_object_get(x, "rng"), json_object_get(y, "rng")));
                    T_ASSERT(json_equal(json_object_get(x, "regs"), json_object_get(y, "regs")));
                    T_ASSERT(json_equal(json_object_get(x, "pos"), json_object_get(y, "pos")));
                    T_EQ_INT(json_integer_value(json_object_get(x, "steps")), 300000);
                }
                json_decref(ja);
                json_decref(jb);
            } else {
                printf("# free run went past 300000 steps (%" PRIu64 "); skipped\n", s);
            }
        }
        fy_machine_free(a);
        fy_machine_free(b);
        fy_machine_free(o);
    }
}

static void test_run_until(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_RANDOM, 3, 16, 7);
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    T_EQ_INT(mt_run_until(m, 777), 0);
    for (int i = 0; i < 3; i++)
        T_EQ_INT(fy_machine_vcpu_steps(m, i), 777);
    T_ASSERT(!fy_machine_is_running(m));
    T_EQ_INT(mt_run_until(m, 777), 0); /* already there: a no-op */
    FyError *err = NULL;
    T_EQ_INT(fy_machine_run_until(m, 100, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "vCPU 0 is already at step 777");
    fy_error_clear(&err);
    T_EQ_INT(fy_machine_start(m, NULL), 0);
    T_EQ_INT(fy_machine_run_until(m, 1 << 30, &err), -1);
    T_CONTAINS(err ? fy_error_msg(err) : NULL, "the machine is running");
    fy_error_clear(&err);
    T_EQ_INT(fy_machine_stop(m, NULL), 0);
    FyMachineStats st;
    fy_machine_get_stats(m, &st);
    T_ASSERT(st.stores == st.steps);
    fy_machine_free(m);
}

static void test_stop_start(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_RANDOM, 2, 16, 9);
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    T_EQ_INT(fy_machine_start(m, NULL), 0);
    T_ASSERT(fy_machine_is_running(m));
    T_ASSERT(mt_wait_steps(m, -1, 0));
    uint64_t t0 = mt_now_ns();
    T_EQ_INT(fy_machine_stop(m, NULL), 0);
    uint64_t stop_ns = mt_now_ns() - t0;
    printf("# stop took %" PRIu64 " us\n", stop_ns / 1000);
    T_ASSERT(stop_ns < 100000000ull);
    T_ASSERT(!fy_machine_is_running(m));
    uint64_t s0 = fy_machine_vcpu_steps(m, 0), s1 = fy_machine_vcpu_steps(m, 1);
    T_ASSERT(s0 > 0 && s1 > 0);
    char d0[256], d1[256];
    mt_digests(m, d0, sizeof(d0));
    mt_sleep_ms(30);
    T_EQ_INT(fy_machine_vcpu_steps(m, 0), s0);
    T_EQ_INT(fy_machine_vcpu_steps(m, 1), s1);
    mt_digests(m, d1, sizeof(d1));
    T_EQ_STR(d0, d1);
    T_EQ_INT(fy_machine_stop(m, NULL), 0); /* stopping twice is fine */
    T_EQ_INT(fy_machine_start(m, NULL), 0);
    T_ASSERT(mt_wait_steps(m, 0, s0));
    T_EQ_INT(fy_machine_stop(m, NULL), 0);
    T_ASSERT(fy_machine_vcpu_steps(m, 0) > s0);
    /* Many quick cycles never lose a vCPU. */
    for (int i = 0; i < 200; i++) {
        fy_machine_start(m, NULL);
        fy_machine_stop(m, NULL);
    }
    T_ASSERT(!fy_machine_is_running(m));
    fy_machine_free(m);
}

/* Free a running machine: it stops and joins everything. */
static void test_free_running(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_HOTSPOT, 2, 16, 9);
    c.serial_every = 1000;
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    fy_machine_start(m, NULL);
    mt_sleep_ms(10);
    fy_machine_free(m);
}

static void test_idle(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_IDLE, 2, 16, 1);
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    char d0[256], d1[256];
    mt_digests(m, d0, sizeof(d0));
    uint64_t t0 = mt_now_ns();
    fy_machine_start(m, NULL);
    mt_sleep_ms(100);
    T_ASSERT(mt_wait_steps(m, -1, 0));
    fy_machine_stop(m, NULL);
    uint64_t ms = (mt_now_ns() - t0) / 1000000 + 1;
    FyMachineStats st;
    fy_machine_get_stats(m, &st);
    T_EQ_INT(st.stores, 0);
    T_ASSERT(st.steps > 0);
    /* 256k steps/s per vCPU, paced: a loose upper bound for the time the
     * machine ran (measured, as a loaded host can stretch the sleep). */
    T_ASSERT(st.steps < 2 * 2 * 256 * ms + 2 * 256);
    mt_digests(m, d1, sizeof(d1));
    T_EQ_STR(d0, d1);
    fy_machine_free(m);
}

/* The dirty rate paces stores: never much above it, and not far below. */
static void test_dirty_rate(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_RANDOM, 2, 16, 1);
    c.dirty_rate = 20000;
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    uint64_t t0 = mt_now_ns();
    fy_machine_start(m, NULL);
    mt_sleep_ms(400);
    fy_machine_stop(m, NULL);
    double secs = (double)(mt_now_ns() - t0) / 1e9;
    FyMachineStats st;
    fy_machine_get_stats(m, &st);
    double rate = (double)st.stores / secs;
    printf("# %.0f stores/s for a dirty rate of 20000\n", rate);
    T_ASSERT(rate <= 20000 * 1.15 + 100);
    T_ASSERT(rate >= 20000 * 0.3);
    T_ASSERT(st.pace_ns > 0);
    fy_machine_free(m);
}

static void test_throttle_and_limit(void)
{
    FyMachineConfig c = mt_config(FY_WORKLOAD_SWEEP, 2, 16, 1);
    FyMachine *m = mt_new(&c);
    T_ASSERT(m);
    if (!m)
        return;
    void *op;
    const FyVMOps *ops = fy_machine_vm_ops(m, &op);
    T_ASSERT(op == m);
    T_EQ_INT(ops->vcpu_count(op), 2);
    ops->set_throttle(op, 60);
    ops->start(op, NULL);
    T_ASSERT(ops->is_running(op));
    mt_sleep_ms(400);
    ops->stop(op, NULL);
    T_ASSERT(!ops->is_running(op));
    FyMachineStats st;
    fy_machine_get_stats(m, &st);
    double frac = (double)st.throttle_ns / (double)st.run_ns;
    printf("# throttle 60%%: slept %.2f of the run time\n", frac);
    T_ASSERT(frac > 0.45 && frac < 0.75);
    ops->set_throttle(op, 0);

    /* 1 MiB/s = 256 pages/s per vCPU. */
    ops->set_dirty_limit(op, -1, 1);
    uint64_t before = st.stores;
    uint64_t t0 = mt_now_ns();
    ops->start(op, NULL);
    mt_sleep_ms(400);
    ops->stop(op, NULL);
    double secs = (double)(mt_now_ns() - t0) / 1e9;
    fy_machine_get_stats(m, &st);
    double rate = (double)(st.stores - before) / secs;
    printf("# dirty limit 1 MiB/s per vCPU: %.0f stores/s for 2 vCPUs\n", rate);
    T_ASSERT(rate <= 2 * 256 * 1.2 + 10);
    T_ASSERT(rate >= 2 * 256 * 0.3);
    ops->set_dirty_limit(op, -1, 0);
    fy_machine_free(m);
}

int main(void)
{
    T_RUN(test_parse_size);
    T_RUN(test_parse_rate_and_names);
    T_RUN(test_config_add_ram);
    T_RUN(test_new_errors);
    T_RUN(test_ram_layout);
    T_RUN(test_ram_given_fd);
    T_RUN(test_ram_anonymous);
    T_RUN(test_ram_prealloc);
    T_RUN(test_ram_holes);
    T_RUN(test_digest);
    T_RUN(test_determinism);
    T_RUN(test_run_until);
    T_RUN(test_stop_start);
    T_RUN(test_free_running);
    T_RUN(test_idle);
    T_RUN(test_dirty_rate);
    T_RUN(test_throttle_and_limit);
    return t_done();
}
