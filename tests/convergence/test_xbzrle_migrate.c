/*
 * test_xbzrle_migrate.c: XBZRLE through the real migration.
 *
 *   live        a writer dirties 1024 pages (8 bytes at a time, so every
 *               page encodes well) while the migration iterates, with
 *               downtime-limit 1 ms; once many pages went as XBZRLE
 *               records over several dirty syncs, the cache is resized
 *               live, then downtime-limit is raised and the migration
 *               completes: RAM and device state must equal the source's;
 *               the counters must say what happened
 *
 * Why the live source is "paced": downtime-limit 1 ms is below the fixed
 * costs of a switchover (stop, sync, destination, start), so the migration
 * switches over the first time a dirty sync finds nothing left, which is
 * the best it can do (QEMU too switches at pending 0). Once pages go as
 * XBZRLE records a pass over the 1024 pages takes well under a
 * millisecond, while the writer thread, sleeping 100 us between bursts on
 * a loaded 2-core machine, was seen idle for 4-6 ms at a time: a sync in
 * such a gap truly finds nothing dirty and the migration, correctly,
 * completes before the test could resize the cache. A vCPU with a core of
 * its own does not stop dirtying like that, so the source's dirty_log_sync
 * is wrapped to wait (while the VM runs) until the writer has made at
 * least one burst of writes since the previous sync; the dirty tracking
 * itself is the VM's own, unchanged. Waiting has no time limit beyond a
 * generous one for a writer that died.
 *   snapshot    XBZRLE on with the VM stopped: a single pass, all misses,
 *               the stream still loads
 *   hostile     XBZRLE records crafted by hand: a good one is applied;
 *               bad flag, length over a page, runs past the page end, a
 *               truncated body, CONTINUE with no block, each fail the load
 *               with a message that names the record, block and offset
 *   options     the capability, xbzrle-cache-size checks, query shapes
 */
#include "migration/testvm.h"
#include "ferry/converge.h"
#include "t.h"

static long long q_xbzrle(TestVM *vm, const char *key)
{
    return tvm_query_int(vm, "xbzrle-cache", key);
}

/* Poll until fn(vm) or timeout; polling only waits, it asserts nothing. */
static bool wait_for(TestVM *vm, bool (*fn)(TestVM *), int timeout_ms)
{
    uint64_t end = tvm_now_ms() + (uint64_t)timeout_ms;
    while (tvm_now_ms() < end) {
        FyMigStatus s = fy_migration_status(vm->mig);
        if (s == MIGRATION_STATUS_FAILED || s == MIGRATION_STATUS_CANCELLED ||
            s == MIGRATION_STATUS_COMPLETED)
            return false;
        if (fn(vm))
            return true;
        tvm_sleep_ms(20);
    }
    return false;
}

static long long pages_goal;

static bool enough_xbzrle(TestVM *vm)
{
    return q_xbzrle(vm, "pages") >= pages_goal &&
           tvm_query_int(vm, "ram", "dirty-sync-count") >= 5;
}

/* ---- the paced source (see the top of the file) ---- */

#define PACE_WRITES 64          /* one burst of the writer */
#define PACE_GIVE_UP_MS 30000   /* only for a writer that died */

typedef struct Paced {
    TestVM *vm;
    unsigned long last;         /* writes seen after the previous sync */
    unsigned long waits;        /* syncs that had to wait for the writer */
} Paced;

static int paced_stop(void *o, FyError **errp)
{
    return tvm_stop(((Paced *)o)->vm, errp);
}

static int paced_start(void *o, FyError **errp)
{
    return tvm_start(((Paced *)o)->vm, errp);
}

static bool paced_is_running(void *o)
{
    return tvm_is_running(((Paced *)o)->vm);
}

static int paced_log_start(void *o, FyError **errp)
{
    return tvm_dirty_log_start(((Paced *)o)->vm, errp);
}

static void paced_log_stop(void *o)
{
    tvm_dirty_log_stop(((Paced *)o)->vm);
}

/* The writer's block waits for a burst begun after the previous sync:
 * write n+1 is counted before it is made and marked, and write n+2 only
 * after write n+1 is marked, so last + 2 would do; a burst is asked for. */
static int paced_log_sync(void *o, FyRamBlock *b, unsigned long *bitmap,
                          FyError **errp)
{
    Paced *p = o;
    if (b == &p->vm->blocks[0] && tvm_is_running(p->vm)) {
        uint64_t end = tvm_now_ms() + PACE_GIVE_UP_MS;
        bool waited = false;
        while (atomic_load(&p->vm->writes) < p->last + PACE_WRITES &&
               tvm_now_ms() < end) {
            waited = true;
            usleep(100);
        }
        p->waits += waited;
    }
    int r = tvm_dirty_log_sync(p->vm, b, bitmap, errp);
    if (b == &p->vm->blocks[0])
        p->last = atomic_load(&p->vm->writes);
    return r;
}

static const FyVMOps paced_ops = {
    .stop = paced_stop,
    .start = paced_start,
    .is_running = paced_is_running,
    .dirty_log_start = paced_log_start,
    .dirty_log_stop = paced_log_stop,
    .dirty_log_sync = paced_log_sync,
};

/* src's FyMigration replaced by one that sees the VM through paced_ops. */
static void pace(TestVM *src, Paced *p)
{
    p->vm = src;
    p->last = 0;
    p->waits = 0;
    fy_migration_free(src->mig);
    src->mig = fy_migration_new(src->ss, &src->list, &paced_ops, p);
    T_ASSERT(src->mig != NULL);
    fy_migration_set_event_handler(src->mig, tvm_event, src);
}

static void test_live(void)
{
    TestVM *src = tvm_new("src", NULL), *dst = tvm_new("dst", NULL);
    char path[128], buf[64];
    FyError *err = NULL;
    Paced paced;

    pace(src, &paced);
    tvm_fill(src, 7);
    tvm_cap(src, "xbzrle", true);
    T_EQ_INT(tvm_set_param_int(src, "xbzrle-cache-size", 4 << 20), 0);
    T_EQ_INT(tvm_set_param_int(src, "max-bandwidth", 64 << 20), 0);
    T_EQ_INT(tvm_set_param_int(src, "downtime-limit", 1), 0);
    src->write_delay_us = 100;
    tvm_run(src, true);

    tvm_path(path, sizeof(path), "sock");
    char uri[160];
    snprintf(uri, sizeof(uri), "unix:%s", path);
    T_EQ_INT(fy_migrate_incoming(dst->mig, uri, &err), 0);
    T_EQ_INT(fy_migrate(src->mig, uri, false, &err), 0);

    pages_goal = 2000;
    T_ASSERT(wait_for(src, enough_xbzrle, 120000));
    T_EQ_INT(fy_migration_status(src->mig), MIGRATION_STATUS_ACTIVE);
    T_EQ_STR(tvm_query_str(src, "status", buf, sizeof(buf)), "active");
    T_EQ_INT(q_xbzrle(src, "cache-size"), 4 << 20);

    /* A live resize keeps the migration going and correct. */
    T_EQ_INT(tvm_set_param_int(src, "xbzrle-cache-size", 1 << 20), 0);
    T_EQ_INT(q_xbzrle(src, "cache-size"), 1 << 20);
    pages_goal = q_xbzrle(src, "pages") + 1000;
    T_ASSERT(wait_for(src, enough_xbzrle, 120000));
    T_EQ_INT(fy_migration_status(src->mig), MIGRATION_STATUS_ACTIVE);

    T_EQ_INT(tvm_set_param_int(src, "downtime-limit", 2000), 0);
    FyMigStatus ss = fy_migration_wait(src->mig, 120000);
    FyMigStatus ds = fy_migration_wait(dst->mig, 120000);
    tvm_print_error(src);
    tvm_print_error(dst);
    T_EQ_INT(ss, MIGRATION_STATUS_COMPLETED);
    T_EQ_INT(ds, MIGRATION_STATUS_COMPLETED);
    T_ASSERT(tvm_ram_equal(src, dst));
    T_ASSERT(tvm_dev_equal(src, dst));

    json_t *q = fy_migration_query(src->mig);
    json_t *x = json_object_get(q, "xbzrle-cache");
    long long pages = json_integer_value(json_object_get(x, "pages"));
    long long bytes = json_integer_value(json_object_get(x, "bytes"));
    printf("# xbzrle: pages %lld bytes %lld misses %lld overflow %lld "
           "encoding-rate %.1f, %lld syncs, %lu waited for the writer\n",
           pages, bytes,
           (long long)json_integer_value(json_object_get(x, "cache-miss")),
           (long long)json_integer_value(json_object_get(x, "overflow")),
           json_number_value(json_object_get(x, "encoding-rate")),
           tvm_query_int(src, "ram", "dirty-sync-count"), paced.waits);
    T_ASSERT(pages >= 3000);
    T_ASSERT(bytes > 0 && bytes < pages * 1024);  /* 8-byte writes encode small */
    T_ASSERT(json_integer_value(json_object_get(x, "cache-miss")) > 0);
    T_ASSERT(json_number_value(json_object_get(x, "encoding-rate")) > 1.0);
    T_EQ_INT(json_integer_value(json_object_get(x, "cache-size")), 1 << 20);
    json_decref(q);
    unlink(path);
    tvm_free(src);
    tvm_free(dst);
}

static void test_snapshot_all_miss(void)
{
    TestVM *src = tvm_new("src", NULL), *dst = tvm_new("dst", NULL);
    FyMigStatus ss, ds;

    tvm_fill(src, 3);
    tvm_cap(src, "xbzrle", true);
    tvm_migrate(src, dst, NULL, "tcp:127.0.0.1:0", &ss, &ds);
    T_EQ_INT(ss, MIGRATION_STATUS_COMPLETED);
    T_EQ_INT(ds, MIGRATION_STATUS_COMPLETED);
    T_ASSERT(tvm_ram_equal(src, dst));
    T_ASSERT(tvm_dev_equal(src, dst));
    /* With so few syncs the cache never became active: nothing encoded. */
    T_EQ_INT(q_xbzrle(src, "pages"), 0);
    T_EQ_INT(q_xbzrle(src, "cache-size"), FY_XBZRLE_DEFAULT_CACHE_SIZE);
    tvm_free(src);
    tvm_free(dst);
}

/* ---- hostile records ---- */

typedef struct Crafted {
    uint8_t buf[16384];
    size_t len;
} Crafted;

static void c_put(Crafted *c, const void *p, size_t n)
{
    memcpy(c->buf + c->len, p, n);
    c->len += n;
}

static void c_u8(Crafted *c, uint8_t v)
{
    c_put(c, &v, 1);
}

static void c_be16(Crafted *c, uint16_t v)
{
    c_u8(c, (uint8_t)(v >> 8));
    c_u8(c, (uint8_t)v);
}

static void c_be32(Crafted *c, uint32_t v)
{
    c_be16(c, (uint16_t)(v >> 16));
    c_be16(c, (uint16_t)v);
}

static void c_be64(Crafted *c, uint64_t v)
{
    c_be32(c, (uint32_t)(v >> 32));
    c_be32(c, (uint32_t)v);
}

static void c_str(Crafted *c, const char *s)
{
    c_u8(c, (uint8_t)strlen(s));
    c_put(c, s, strlen(s));
}

/* The real header, a START section of "ram" with the block list, then
 * the records the test adds; c_end closes the section and the stream. */
static void c_begin(Crafted *c, TestVM *vm)
{
    FyChannel *ch = fy_channel_mem_new(NULL, 0);
    FyStream *f = fy_stream_new_output(ch, false);
    fy_savevm_state_header(vm->ss, f, NULL);
    fy_stream_close(f, NULL);
    size_t n;
    const uint8_t *d = fy_channel_mem_data(ch, &n);
    c->len = 0;
    c_put(c, d, n);
    fy_channel_close(ch, NULL);
    c_u8(c, QEMU_VM_SECTION_START);
    c_be32(c, 9);
    c_str(c, "ram");
    c_be32(c, 0);
    c_be32(c, 4);
    c_be64(c, (1 << 20) + (1 << 16) + RAM_SAVE_FLAG_MEM_SIZE);
    c_str(c, "pc.ram");
    c_be64(c, 1 << 20);
    c_str(c, "vga.vram");
    c_be64(c, 1 << 16);
}

static void c_end(Crafted *c)
{
    c_be64(c, RAM_SAVE_FLAG_EOS);
    c_u8(c, QEMU_VM_SECTION_FOOTER);
    c_be32(c, 9);
    c_u8(c, QEMU_VM_EOF);
}

/* An XBZRLE record for pc.ram at offset, with the body given. */
static void c_xbzrle(Crafted *c, uint64_t offset, uint8_t flag, uint16_t len,
                     const uint8_t *data, size_t have)
{
    c_be64(c, offset | RAM_SAVE_FLAG_XBZRLE);
    c_str(c, "pc.ram");
    c_u8(c, flag);
    c_be16(c, len);
    c_put(c, data, have);
}

static const char *load(TestVM *dst, Crafted *c)
{
    static char msg[1024];
    FyChannel *ch = fy_channel_mem_new(c->buf, c->len);
    FyStream *f = fy_stream_new_input(ch, true);
    FyError *err = NULL;
    int r = fy_loadvm_state(dst->ss, f, NULL, NULL, &err);
    snprintf(msg, sizeof(msg), "%s", err ? fy_error_msg(err) : "");
    fy_error_free(err);
    fy_stream_close(f, NULL);
    return r < 0 ? msg : NULL;
}

static void expect_refused(TestVM *dst, Crafted *c, const char *want)
{
    const char *e = load(dst, c);
    T_ASSERT(e != NULL);
    if (e) {
        printf("# refused: %s\n", e);
        T_CONTAINS(e, want);
        T_CONTAINS(e, "RAM record at stream offset");
    }
}

static void test_hostile(void)
{
    static const TvmBlockSpec a[] = { { "pc.ram", 1 << 20, true },
                                      { "vga.vram", 1 << 16, false }, { 0 } };
    TestVM *dst = tvm_new("dst", a);
    Crafted *c = calloc(1, sizeof(*c));
    uint8_t *page = dst->blocks[0].host + 0x2000;

    /* good: zrun 10, nzrun 3 "abc"; the rest of the page is kept */
    memset(page, 0x11, 4096);
    static const uint8_t good[] = { 10, 3, 'a', 'b', 'c' };
    c_begin(c, dst);
    c_xbzrle(c, 0x2000, ENCODING_FLAG_XBZRLE, sizeof(good), good, sizeof(good));
    c_end(c);
    T_ASSERT(load(dst, c) == NULL);
    T_EQ_INT(page[9], 0x11);
    T_EQ_MEM(page + 10, "abc", 3);
    T_EQ_INT(page[13], 0x11);

    c_begin(c, dst);
    c_xbzrle(c, 0x2000, 2, sizeof(good), good, sizeof(good));
    expect_refused(dst, c, "field 'encoding flag' is 0x02");
    T_CONTAINS(load(dst, c), "XBZRLE page at offset 0x2000 of RAM block "
                             "'pc.ram'");

    c_begin(c, dst);
    c_xbzrle(c, 0x2000, ENCODING_FLAG_XBZRLE, 4097, good, sizeof(good));
    expect_refused(dst, c, "field 'encoded_len' is 4097");

    /* zrun 4090 (ULEB 0xfa 0x1f) then 10 new bytes: past the end */
    static const uint8_t past[] = { 0xfa, 0x1f, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                                    10 };
    c_begin(c, dst);
    c_xbzrle(c, 0x2000, ENCODING_FLAG_XBZRLE, sizeof(past), past, sizeof(past));
    c_end(c);
    expect_refused(dst, c, "runs past the page end");

    /* an nzrun longer than the bytes that follow it */
    static const uint8_t shortrun[] = { 0, 9, 'x', 'y' };
    c_begin(c, dst);
    c_xbzrle(c, 0x2000, ENCODING_FLAG_XBZRLE, sizeof(shortrun), shortrun,
             sizeof(shortrun));
    c_end(c);
    expect_refused(dst, c, "is truncated");

    /* the stream ends inside the body */
    c_begin(c, dst);
    c_xbzrle(c, 0x2000, ENCODING_FLAG_XBZRLE, 100, good, sizeof(good));
    expect_refused(dst, c, "XBZRLE record (stream offset");

    /* CONTINUE as the first record: no block to continue */
    c_begin(c, dst);
    c_be64(c, 0x2000 | RAM_SAVE_FLAG_XBZRLE | RAM_SAVE_FLAG_CONTINUE);
    c_u8(c, ENCODING_FLAG_XBZRLE);
    c_be16(c, sizeof(good));
    c_put(c, good, sizeof(good));
    c_end(c);
    expect_refused(dst, c, "CONTINUE but no block");

    /* past the block's end */
    c_begin(c, dst);
    c_xbzrle(c, 1 << 20, ENCODING_FLAG_XBZRLE, sizeof(good), good, sizeof(good));
    c_end(c);
    expect_refused(dst, c, "past the end of RAM block 'pc.ram'");

    free(c);
    tvm_free(dst);
}

static void test_options(void)
{
    TestVM *vm = tvm_new("vm", NULL);
    FyError *err = NULL;
    json_t *p;

    T_EQ_INT(fy_migration_set_capability(vm->mig, "xbzrle", true, &err), 0);
    T_ASSERT(err == NULL);
    p = fy_migration_query_parameters(vm->mig);
    T_EQ_INT(json_integer_value(json_object_get(p, "xbzrle-cache-size")),
             64 << 20);
    json_decref(p);

    json_t *bad = json_pack("{s:I}", "xbzrle-cache-size", (json_int_t)5000);
    T_EQ_INT(fy_migration_set_parameters(vm->mig, bad, &err), -1);
    T_CONTAINS(fy_error_msg(err), "Parameter 'xbzrle_cache_size' expects a "
               "power of two no less than the target page size");
    fy_error_clear(&err);
    json_decref(bad);
    bad = json_pack("{s:I}", "xbzrle-cache-size", (json_int_t)2048);
    T_EQ_INT(fy_migration_set_parameters(vm->mig, bad, &err), -1);
    fy_error_clear(&err);
    json_decref(bad);
    T_EQ_INT(tvm_set_param_int(vm, "xbzrle-cache-size", 1 << 20), 0);

    /* No stats before any migration used XBZRLE. */
    FyXbzrleStats st;
    T_ASSERT(!fy_ram_xbzrle_get_stats(fy_migration_ram_state(vm->mig), &st));
    tvm_free(vm);
}

int main(void)
{
    T_RUN(test_options);
    T_RUN(test_hostile);
    T_RUN(test_snapshot_all_miss);
    T_RUN(test_live);
    return t_done();
}
