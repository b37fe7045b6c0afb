/*
 * test_migration_transport.c: whole migrations between two VMs in one
 * process over every transport (unix, tcp, fd, exec, file), paused and with
 * a vCPU writing during the migration. Each checks destination RAM and
 * device state against the source (which stays stopped after a successful
 * migration, so its memory is the state at switchover), the status and
 * event sequence, and query-migrate's numbers.
 */
#include <sys/socket.h>

#include "t.h"
#include "testvm.h"

static void expect_equal(TestVM *src, TestVM *dst)
{
    T_ASSERT(tvm_ram_equal(src, dst));
    T_ASSERT(tvm_dev_equal(src, dst));
}

static void setup_pair(TestVM **src, TestVM **dst, uint32_t seed)
{
    *src = tvm_new("src", NULL);
    *dst = tvm_new("dst", NULL);
    tvm_fill(*src, seed);
    tvm_cap(*src, "events", true);
    tvm_cap(*dst, "events", true);
    T_EQ_INT(tvm_set_param_int(*src, "max-bandwidth", 0), 0);
}

static void expect_success(TestVM *src, TestVM *dst, FyMigStatus s,
                           FyMigStatus d)
{
    T_EQ_STR(fy_mig_status_name(s), "completed");
    T_EQ_STR(fy_mig_status_name(d), "completed");
    expect_equal(src, dst);
    T_ASSERT(!tvm_is_running(src));  /* the source stays stopped */
    T_ASSERT(tvm_is_running(dst));   /* autostart */
    char ev[512];
    tvm_status_events(src, ev, sizeof(ev));
    T_EQ_STR(ev, "setup,active,completed");
    tvm_status_events(dst, ev, sizeof(ev));
    T_EQ_STR(ev, "setup,active,completed");
}

static void test_unix_paused(void)
{
    TestVM *src, *dst;
    setup_pair(&src, &dst, 11);
    char path[128], uri[160];
    snprintf(uri, sizeof(uri), "unix:%s", tvm_path(path, sizeof(path), "sock"));
    FyMigStatus s, d;
    tvm_migrate(src, dst, uri, uri, &s, &d);
    expect_success(src, dst, s, d);

    /* query-migrate after completion, QEMU's fields. */
    json_t *q = fy_migration_query(src->mig);
    json_t *ram = json_object_get(q, "ram");
    T_ASSERT(json_is_object(ram));
    uint64_t total = fy_ram_list_total(&src->list);
    T_EQ_INT(json_integer_value(json_object_get(ram, "total")), total);
    T_EQ_INT(json_integer_value(json_object_get(ram, "remaining")), 0);
    T_EQ_INT(json_integer_value(json_object_get(ram, "page-size")), 4096);
    long long dup = json_integer_value(json_object_get(ram, "duplicate"));
    long long normal = json_integer_value(json_object_get(ram, "normal"));
    T_EQ_INT(dup + normal, total / 4096);  /* paused: each page once */
    T_EQ_INT(json_integer_value(json_object_get(ram, "normal-bytes")),
             normal * 4096);
    long long xfer = json_integer_value(json_object_get(ram, "transferred"));
    T_ASSERT(xfer > normal * 4096 && xfer < normal * 4096 + dup * 16 + 65536);
    T_ASSERT(json_is_real(json_object_get(ram, "mbps")));
    T_ASSERT(json_real_value(json_object_get(ram, "mbps")) > 0);
    T_ASSERT(json_integer_value(json_object_get(ram, "dirty-sync-count")) >= 2);
    T_ASSERT(json_is_integer(json_object_get(ram, "pages-per-second")));
    T_ASSERT(json_is_integer(json_object_get(ram, "dirty-pages-rate")));
    long long tt = json_integer_value(json_object_get(q, "total-time"));
    long long dt = json_integer_value(json_object_get(q, "downtime"));
    long long st = json_integer_value(json_object_get(q, "setup-time"));
    T_ASSERT(tt >= 0 && dt >= 0 && st >= 0 && dt <= tt && st <= tt);
    T_ASSERT(!json_object_get(q, "expected-downtime"));
    T_ASSERT(!json_object_get(q, "error-desc"));
    json_decref(q);

    /* MIGRATION_PASS follows every dirty sync. */
    long long syncs = tvm_query_int(src, "ram", "dirty-sync-count");
    T_EQ_INT(tvm_count_events(src, "MIGRATION_PASS:"), syncs);
    T_EQ_INT(tvm_count_events(src, "MIGRATION_PASS:1"), 1);

    /* The destination's own view. */
    T_ASSERT(tvm_query_int(dst, "downtime", NULL) >= 0);
    char buf[64];
    T_EQ_STR(tvm_query_str(dst, "status", buf, sizeof(buf)), "completed");
    unlink(path);
    tvm_free(src);
    tvm_free(dst);
}

static void test_tcp_return_path(void)
{
    TestVM *src, *dst;
    setup_pair(&src, &dst, 12);
    tvm_cap(src, "return-path", true);
    FyMigStatus s, d;
    tvm_migrate(src, dst, NULL, "tcp:127.0.0.1:0", &s, &d);
    expect_success(src, dst, s, d);
    tvm_free(src);
    tvm_free(dst);
}

static void test_fd_socketpair(void)
{
    TestVM *src, *dst;
    setup_pair(&src, &dst, 13);
    tvm_cap(src, "return-path", true);
    int sv[2];
    T_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    char out[32], in[32];
    snprintf(out, sizeof(out), "fd:%d", sv[0]);
    snprintf(in, sizeof(in), "fd:%d", sv[1]);
    FyMigStatus s, d;
    tvm_migrate(src, dst, out, in, &s, &d);
    expect_success(src, dst, s, d);
    /* The channels used duplicates: the descriptors are still ours. */
    T_EQ_INT(close(sv[0]), 0);
    T_EQ_INT(close(sv[1]), 0);
    tvm_free(src);
    tvm_free(dst);
}

static void test_exec_and_file(void)
{
    char path[128], out[200], in[200];
    tvm_path(path, sizeof(path), "mig");
    const char *ways[2][2] = { { "exec:cat > %s", "exec:cat %s" },
                               { "file:%s", "file:%s" } };
    for (int w = 0; w < 2; w++) {
        TestVM *src, *dst;
        setup_pair(&src, &dst, 20 + (uint32_t)w);
        snprintf(out, sizeof(out), ways[w][0], path);
        snprintf(in, sizeof(in), ways[w][1], path);
        FyError *err = NULL;
        T_EQ_INT(fy_migrate(src->mig, out, false, &err), 0);
        T_EQ_STR(fy_mig_status_name(fy_migration_wait(src->mig, 30000)),
                 "completed");
        tvm_print_error(src);
        T_EQ_INT(fy_migrate_incoming(dst->mig, in, &err), 0);
        T_EQ_STR(fy_mig_status_name(fy_migration_wait(dst->mig, 30000)),
                 "completed");
        tvm_print_error(dst);
        expect_equal(src, dst);
        T_ASSERT(tvm_is_running(dst));
        unlink(path);
        tvm_free(src);
        tvm_free(dst);
    }
}

static void test_live_writer(void)
{
    TestVM *src, *dst;
    setup_pair(&src, &dst, 30);
    src->write_pages = 256;
    src->write_delay_us = 200;
    tvm_run(src, true);
    /* Slow enough that the writer runs during several passes, fast enough
     * to converge: 256 hot pages fit a 20 ms downtime at 200 MB/s. */
    T_EQ_INT(tvm_set_param_int(src, "max-bandwidth", 200000000), 0);
    T_EQ_INT(tvm_set_param_int(src, "downtime-limit", 20), 0);
    tvm_cap(src, "return-path", true);
    unsigned long writes0 = atomic_load(&src->writes);
    FyMigStatus s, d;
    tvm_migrate(src, dst, NULL, "tcp:127.0.0.1:0", &s, &d);
    expect_success(src, dst, s, d);
    T_ASSERT(atomic_load(&src->writes) > writes0 + 64); /* it was live */
    T_ASSERT(tvm_query_int(src, "ram", "dirty-sync-count") >= 3);
    long long normal = tvm_query_int(src, "ram", "normal");
    long long dup = tvm_query_int(src, "ram", "duplicate");
    T_ASSERT(normal + dup > (long long)(fy_ram_list_total(&src->list) / 4096));
    tvm_free(src);
    tvm_free(dst);
}

/* The destination's start is slow: with the return path the source waits
 * for SHUT, so its downtime covers the destination's start. */
static int slow_start(void *opaque, FyError **errp)
{
    tvm_sleep_ms(60);
    return tvm_start(opaque, errp);
}

static void test_downtime_covers_destination_start(void)
{
    FyVMOps ops = tvm_ops;
    ops.start = slow_start;
    TestVM *src, *dst;
    setup_pair(&src, &dst, 40);
    fy_migration_free(dst->mig);
    dst->mig = fy_migration_new(dst->ss, &dst->list, &ops, dst);
    fy_migration_set_event_handler(dst->mig, tvm_event, dst);
    tvm_cap(dst, "events", true);
    tvm_cap(src, "return-path", true);
    char path[128], uri[160];
    snprintf(uri, sizeof(uri), "unix:%s", tvm_path(path, sizeof(path), "sock"));
    FyMigStatus s, d;
    tvm_migrate(src, dst, uri, uri, &s, &d);
    expect_success(src, dst, s, d);
    long long down = tvm_query_int(src, "downtime", NULL);
    T_ASSERT(down >= 60);
    T_ASSERT(down <= tvm_query_int(src, "total-time", NULL));
    T_ASSERT(tvm_query_int(dst, "downtime", NULL) >= 60);
    unlink(path);
    tvm_free(src);
    tvm_free(dst);
}

/* x-ignore-shared: the destination maps the source's memfd; its pages are
 * not sent, only checked by name, size and GPA. */
static void test_ignore_shared(void)
{
    TestVM *src, *dst;
    setup_pair(&src, &dst, 50);
    FyRamBlock *b = &dst->blocks[0];
    munmap(b->host, b->used_length);
    close(b->fd);
    b->fd = dup(src->blocks[0].fd);
    b->host = mmap(NULL, b->used_length, PROT_READ | PROT_WRITE, MAP_SHARED,
                   b->fd, 0);
    tvm_cap(src, "x-ignore-shared", true);
    tvm_cap(dst, "x-ignore-shared", true);
    char path[128], uri[160];
    snprintf(uri, sizeof(uri), "unix:%s", tvm_path(path, sizeof(path), "sock"));
    FyMigStatus s, d;
    tvm_migrate(src, dst, uri, uri, &s, &d);
    expect_success(src, dst, s, d);
    /* Only vga.vram's pages travelled. */
    T_EQ_INT(tvm_query_int(src, "ram", "total"), src->blocks[1].used_length);
    T_EQ_INT(tvm_query_int(src, "ram", "normal") +
             tvm_query_int(src, "ram", "duplicate"),
             src->blocks[1].used_length / 4096);

    /* A destination without the capability refuses the stream. */
    TestVM *dst2 = tvm_new("dst2", NULL);
    tvm_run(src, false);
    tvm_migrate(src, dst2, uri, uri, &s, &d);
    T_EQ_STR(fy_mig_status_name(d), "failed");
    char e[1024];
    T_CONTAINS(tvm_query_str(dst2, "error-desc", e, sizeof(e)), "x-ignore-shared");
    unlink(path);
    tvm_free(src);
    tvm_free(dst);
    tvm_free(dst2);
}

/* A VM that migrated in can migrate on. */
static void test_migrate_twice(void)
{
    TestVM *a, *b;
    setup_pair(&a, &b, 60);
    TestVM *c = tvm_new("c", NULL);
    tvm_cap(b, "return-path", true);
    T_EQ_INT(tvm_set_param_int(b, "max-bandwidth", 0), 0);
    FyMigStatus s, d;
    tvm_migrate(a, b, NULL, "tcp:127.0.0.1:0", &s, &d);
    expect_success(a, b, s, d);
    b->dev.counter++;
    memset(b->blocks[1].host, 0x77, 4096);
    tvm_migrate(b, c, NULL, "tcp:127.0.0.1:0", &s, &d);
    T_EQ_STR(fy_mig_status_name(s), "completed");
    T_EQ_STR(fy_mig_status_name(d), "completed");
    expect_equal(b, c);
    tvm_free(a);
    tvm_free(b);
    tvm_free(c);
}

int main(void)
{
    T_RUN(test_unix_paused);
    T_RUN(test_tcp_return_path);
    T_RUN(test_fd_socketpair);
    T_RUN(test_exec_and_file);
    T_RUN(test_live_writer);
    T_RUN(test_downtime_covers_destination_start);
    T_RUN(test_ignore_shared);
    T_RUN(test_migrate_twice);
    return t_done();
}
