/*
 * test_analyze_ferry: streams that ferry itself writes.
 *
 * A test VM (tests/migration/testvm.h: "pc.ram" and "vga.vram", the
 * "testdev" device) migrates to a file with `exec:cat > FILE`, paused and
 * then live with its vCPU writer dirtying pages (several passes; with the
 * xbzrle capability when ferry offers it). The analyzer must decode every
 * section, find the device's values as the VM holds them, and extract RAM
 * equal to the source's memory once the source has stopped.
 */
#include "analyze/analyze-test.h"
#include "migration/testvm.h"

static int migrate_to_file(TestVM *vm, const char *file)
{
    char uri[4300];
    snprintf(uri, sizeof(uri), "exec:cat > '%s'", file);
    FyError *err = NULL;
    if (fy_migrate(vm->mig, uri, false, &err) < 0) {
        printf("# migrate: %s\n", fy_error_msg(err));
        fy_error_free(err);
        return -1;
    }
    return 0;
}

static void check_stream(const char *file, TestVM *vm)
{
    An *a = analyze_file(file, NULL);
    T_ASSERT(!a->failed);
    if (a->failed)
        printf("# %s\n", a->err);
    T_EQ_STR(a->machine, "ferry-test-1.0");
    T_EQ_INT(count_kind(a, SEC_OPAQUE), 0);
    T_ASSERT(a->vmdesc != NULL);
    AnSection *dev = find_section(a, "testdev", 0);
    T_ASSERT(dev && dev->value);
    if (dev && dev->value) {
        char want[64];
        snprintf(want, sizeof(want), "0x%08x", vm->dev.counter);
        T_EQ_STR(json_string_value(json_object_get(dev->value, "counter")), want);
        json_t *regs = json_object_get(dev->value, "regs");
        T_EQ_INT(json_array_size(regs), 4);
        for (int k = 0; k < 4; k++) {
            snprintf(want, sizeof(want), "0x%016llx", (unsigned long long)vm->dev.regs[k]);
            T_EQ_STR(json_string_value(json_array_get(regs, (size_t)k)), want);
        }
        const char *buf = json_string_value(json_object_get(dev->value, "buf"));
        T_ASSERT(buf && strlen(buf) == 32 * 3 - 1);
        if (buf) {
            snprintf(want, sizeof(want), "%02x %02x", vm->dev.buf[0], vm->dev.buf[1]);
            T_ASSERT(!strncmp(buf, want, 5));
        }
    }
    an_free(a);

    AnOpts c = { .dump = AN_DUMP_NONE, .quiet = true, .check = true };
    a = analyze_file(file, &c);
    T_ASSERT(!a->failed);
    an_free(a);

    char *dir = make_tmpdir();
    AnOpts x = { .dump = AN_DUMP_NONE, .quiet = true, .extract_dir = dir };
    a = analyze_file(file, &x);
    T_ASSERT(!a->failed);
    an_free(a);
    for (int i = 0; i < vm->nblocks; i++) {
        char p[4300];
        size_t n;
        snprintf(p, sizeof(p), "%s/%s", dir, vm->blocks[i].idstr);
        uint8_t *got = read_file(p, &n);
        T_EQ_INT(n, vm->blocks[i].used_length);
        if (got && n == vm->blocks[i].used_length)
            T_EQ_MEM(got, vm->blocks[i].host, n);
        free(got);
    }
    rm_rf(dir);
    free(dir);
}

static void test_paused(void)
{
    TestVM *vm = tvm_new("src", NULL);
    tvm_fill(vm, 7);
    char *dir = make_tmpdir(), file[4200];
    snprintf(file, sizeof(file), "%s/ferry.mig", dir);
    if (migrate_to_file(vm, file) == 0) {
        FyMigStatus st = fy_migration_wait(vm->mig, 60000);
        T_EQ_INT(st, MIGRATION_STATUS_COMPLETED);
        check_stream(file, vm);
    } else {
        T_FAIL("migrate failed");
    }
    tvm_free(vm);
    rm_rf(dir);
    free(dir);
}

static void test_live(void)
{
    TestVM *vm = tvm_new("src", NULL);
    tvm_fill(vm, 9);
    vm->write_pages = 512;
    vm->write_delay_us = 100;
    FyError *err = NULL;
    bool xbzrle = fy_migration_set_capability(vm->mig, "xbzrle", true, &err) == 0;
    if (!xbzrle)
        printf("# xbzrle capability: %s (checking without it)\n", fy_error_msg(err));
    fy_error_clear(&err);
    /* a downtime no pass can meet, so it iterates until we allow it */
    tvm_set_param_int(vm, "downtime-limit", 1);
    tvm_set_param_int(vm, "max-bandwidth", 256 << 20);
    tvm_run(vm, true);
    char *dir = make_tmpdir(), file[4200];
    snprintf(file, sizeof(file), "%s/ferry-live.mig", dir);
    if (migrate_to_file(vm, file) == 0) {
        uint64_t t0 = tvm_now_ms();
        while (tvm_now_ms() - t0 < 20000) {
            long long syncs = tvm_query_int(vm, "ram", "dirty-sync-count");
            long long xp = tvm_query_int(vm, "xbzrle-cache", "pages");
            if (syncs >= 4 && (!xbzrle || xp > 0))
                break;
            tvm_sleep_ms(20);
        }
        tvm_set_param_int(vm, "downtime-limit", 60000);
        FyMigStatus st = fy_migration_wait(vm->mig, 60000);
        T_EQ_INT(st, MIGRATION_STATUS_COMPLETED);
        check_stream(file, vm);
        An *a = analyze_file(file, NULL);
        T_ASSERT(a->ram.passes >= 2);
        T_ASSERT(a->ram.resent > 0);
        if (xbzrle)
            T_ASSERT(a->ram.xbzrle > 0);
        printf("# ferry live stream: %llu passes, %llu pages resent, %llu xbzrle\n",
               (unsigned long long)a->ram.passes, (unsigned long long)a->ram.resent,
               (unsigned long long)a->ram.xbzrle);
        an_free(a);
    } else {
        T_FAIL("migrate failed");
    }
    tvm_free(vm);
    rm_rf(dir);
    free(dir);
}

int main(void)
{
    T_RUN(test_paused);
    T_RUN(test_live);
    return t_done();
}
