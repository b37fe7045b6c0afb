/*
 * test_migration_failure.c: what happens when things go wrong. A
 * destination that closes the connection or whose process is killed, a
 * destination that refuses the stream (another RAM size, an unknown
 * device), cancel in setup, active and pre-switchover, pause-before-
 * switchover released with migrate-continue, connect failures. After every
 * failure the source VM must run again with its RAM intact, its dirty
 * tracking stopped, status failed (or cancelled) and error-desc saying why;
 * and it must be able to migrate again.
 */
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "t.h"
#include "testvm.h"

static char *snapshot(TestVM *vm, int blk)
{
    char *copy = malloc(vm->blocks[blk].used_length);
    memcpy(copy, vm->blocks[blk].host, vm->blocks[blk].used_length);
    return copy;
}

/* vga.vram is never written by the writer; pc.ram only below write_pages. */
static void expect_intact(TestVM *vm, const char *vram, const char *pcram)
{
    T_ASSERT(!memcmp(vm->blocks[1].host, vram, vm->blocks[1].used_length));
    size_t hot = (size_t)vm->write_pages * FY_TARGET_PAGE_SIZE;
    T_ASSERT(!memcmp(vm->blocks[0].host + hot, pcram + hot,
                     vm->blocks[0].used_length - hot));
}

static void expect_failed_and_running(TestVM *src, const char *why)
{
    T_EQ_STR(fy_mig_status_name(fy_migration_wait(src->mig, 30000)), "failed");
    char e[1024];
    T_CONTAINS(tvm_query_str(src, "error-desc", e, sizeof(e)), why);
    T_ASSERT(tvm_is_running(src));
    T_ASSERT(!atomic_load(&src->logging));
    /* The VM keeps running: the writer makes progress. */
    unsigned long w = atomic_load(&src->writes);
    for (int i = 0; i < 500 && atomic_load(&src->writes) == w; i++)
        tvm_sleep_ms(10); /* a loaded machine may not schedule it at once */
    T_ASSERT(atomic_load(&src->writes) > w);
}

static TestVM *running_source(uint32_t seed)
{
    TestVM *src = tvm_new("src", NULL);
    tvm_fill(src, seed);
    tvm_cap(src, "events", true);
    src->write_delay_us = 500;
    tvm_run(src, true);
    return src;
}

/* Prove the source is healthy: a migration to a fresh VM completes. */
static void migrate_again_ok(TestVM *src)
{
    TestVM *dst = tvm_new("again", NULL);
    tvm_set_param_int(src, "max-bandwidth", 0);
    FyMigStatus s, d;
    tvm_migrate(src, dst, NULL, "tcp:127.0.0.1:0", &s, &d);
    T_EQ_STR(fy_mig_status_name(s), "completed");
    T_EQ_STR(fy_mig_status_name(d), "completed");
    T_ASSERT(tvm_ram_equal(src, dst));
    T_ASSERT(tvm_dev_equal(src, dst));
    tvm_free(dst);
}

/* ---- a destination that reads a little and hangs up ---- */

typedef struct FakeDest {
    int lfd;
    size_t read_limit;
    pthread_t thread;
} FakeDest;

static void *fake_dest(void *opaque)
{
    FakeDest *fd = opaque;
    int s = accept(fd->lfd, NULL, NULL);
    static char buf[65536];
    size_t got = 0;
    while (s >= 0 && got < fd->read_limit) {
        ssize_t n = read(s, buf, sizeof(buf));
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (s >= 0)
        close(s);
    return NULL;
}

static int listen_unix(const char *path)
{
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    size_t n = strlen(path);
    if (n >= sizeof(a.sun_path)) {
        close(s);
        return -1;
    }
    memcpy(a.sun_path, path, n + 1);
    unlink(path);
    if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 1) < 0) {
        close(s);
        return -1;
    }
    return s;
}

static void test_destination_hangs_up(void)
{
    TestVM *src = running_source(1);
    tvm_set_param_int(src, "max-bandwidth", 0);
    char *vram = snapshot(src, 1), *pcram = snapshot(src, 0);
    char path[128], uri[160];
    snprintf(uri, sizeof(uri), "unix:%s", tvm_path(path, sizeof(path), "sock"));
    FakeDest fd = { .lfd = listen_unix(path), .read_limit = 1 << 20 };
    T_ASSERT(fd.lfd >= 0);
    pthread_create(&fd.thread, NULL, fake_dest, &fd);
    T_EQ_INT(fy_migrate(src->mig, uri, false, NULL), 0);
    expect_failed_and_running(src, "Broken pipe");
    char e[1024];
    T_CONTAINS(tvm_query_str(src, "error-desc", e, sizeof(e)), path);
    expect_intact(src, vram, pcram);
    char ev[256];
    tvm_status_events(src, ev, sizeof(ev));
    T_EQ_STR(ev, "setup,active,failed");
    pthread_join(fd.thread, NULL);
    close(fd.lfd);
    unlink(path);
    migrate_again_ok(src);
    free(vram);
    free(pcram);
    tvm_free(src);
}

/* ---- a destination process that is killed mid-stream ---- */

static void test_destination_killed(void)
{
    char path[128], uri[160];
    snprintf(uri, sizeof(uri), "unix:%s", tvm_path(path, sizeof(path), "sock"));
    int ready[2];
    T_EQ_INT(pipe(ready), 0);
    fflush(stdout);
    pid_t pid = fork(); /* no threads exist yet in this process */
    if (pid == 0) {
        TestVM *dst = tvm_new("dst", NULL);
        FyError *err = NULL;
        int ok = fy_migrate_incoming(dst->mig, uri, &err) == 0;
        if (write(ready[1], &ok, sizeof(ok)) != sizeof(ok))
            _exit(2);
        fy_migration_wait(dst->mig, 60000);
        _exit(1);
    }
    int ok = 0;
    T_EQ_INT(read(ready[0], &ok, sizeof(ok)), (long long)sizeof(ok));
    T_EQ_INT(ok, 1);

    TestVM *src = running_source(2);
    char *vram = snapshot(src, 1), *pcram = snapshot(src, 0);
    tvm_cap(src, "return-path", true);
    T_EQ_INT(tvm_set_param_int(src, "max-bandwidth", 16 << 20), 0);
    T_EQ_INT(fy_migrate(src->mig, uri, false, NULL), 0);
    T_ASSERT(fy_migration_wait_for(src->mig, MIGRATION_STATUS_ACTIVE, 10000));
    while (tvm_query_int(src, "ram", "transferred") < (2 << 20))
        tvm_sleep_ms(10);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    /* Killed: the socket closes; the writer gets EPIPE or ECONNRESET, the
     * return path sees the end before any SHUT. */
    T_EQ_STR(fy_mig_status_name(fy_migration_wait(src->mig, 30000)), "failed");
    char e[1024];
    tvm_query_str(src, "error-desc", e, sizeof(e));
    T_ASSERT(strstr(e, "Broken pipe") || strstr(e, "Connection reset") ||
             strstr(e, "return path ended"));
    T_ASSERT(tvm_is_running(src));
    expect_intact(src, vram, pcram);
    close(ready[0]);
    close(ready[1]);
    unlink(path);
    migrate_again_ok(src);
    free(vram);
    free(pcram);
    tvm_free(src);
}

/* ---- the destination refuses the stream ---- */

static void refused(TestVM *src, TestVM *dst, const char *dst_why)
{
    tvm_cap(src, "return-path", true);
    char path[128], uri[160];
    snprintf(uri, sizeof(uri), "unix:%s", tvm_path(path, sizeof(path), "sock"));
    FyMigStatus s, d;
    tvm_migrate(src, dst, uri, uri, &s, &d);
    T_EQ_STR(fy_mig_status_name(d), "failed");
    char e[1024];
    T_CONTAINS(tvm_query_str(dst, "error-desc", e, sizeof(e)), dst_why);
    T_ASSERT(!tvm_is_running(dst));
    /* The source learns it from the return path, not as a bare EPIPE. */
    expect_failed_and_running(src, "the destination failed to load the "
                                   "migration stream");
    unlink(path);
}

static void test_destination_refuses(void)
{
    static const TvmBlockSpec bigger[] = { { "pc.ram", 64 << 20, true },
                                           { "vga.vram", 4 << 20, false },
                                           { 0 } };
    static const TvmBlockSpec no_vram[] = { { "pc.ram", 32 << 20, true },
                                            { 0 } };
    TestVM *src = running_source(3);
    TestVM *dst = tvm_new("dst", bigger);
    refused(src, dst, "RAM block 'pc.ram' size mismatch: stream has "
                      "0x2000000 local has 0x4000000");
    tvm_free(dst);

    dst = tvm_new("dst", no_vram);
    refused(src, dst, "Unknown ramblock 'vga.vram', cannot accept migration");
    tvm_free(dst);

    TestDev extra = { 0 };
    T_EQ_INT(fy_register_vmstate(src->ss, "extradev", 0, &vmstate_testdev_plain,
                                 &extra, NULL), 0);
    dst = tvm_new("dst", NULL);
    refused(src, dst, "Unknown section or instance 'extradev'");
    tvm_free(dst);
    fy_unregister_savevm(src->ss, "extradev", 0);
    migrate_again_ok(src);
    tvm_free(src);
}

/* ---- cancel ---- */

static void test_cancel_in_setup(void)
{
    TestVM *src = running_source(4);
    TestVM *dst = tvm_new("dst", NULL);
    pthread_mutex_lock(&src->lock);
    src->gate_dirty_log_start = true;
    pthread_mutex_unlock(&src->lock);
    FyError *err = NULL;
    T_EQ_INT(fy_migrate_incoming(dst->mig, "tcp:127.0.0.1:0", &err), 0);
    char *addr = fy_migration_incoming_address(dst->mig);
    T_EQ_INT(fy_migrate(src->mig, addr, false, &err), 0);
    free(addr);
    pthread_mutex_lock(&src->lock);
    while (!src->in_dirty_log_start)
        pthread_cond_wait(&src->cond, &src->lock);
    pthread_mutex_unlock(&src->lock);
    T_EQ_STR(fy_mig_status_name(fy_migration_status(src->mig)), "setup");
    T_EQ_INT(fy_migrate_cancel(src->mig, &err), 0);
    T_EQ_STR(fy_mig_status_name(fy_migration_status(src->mig)), "cancelling");
    pthread_mutex_lock(&src->lock);
    src->gate_dirty_log_start = false;
    pthread_cond_broadcast(&src->cond);
    pthread_mutex_unlock(&src->lock);
    T_EQ_STR(fy_mig_status_name(fy_migration_wait(src->mig, 10000)), "cancelled");
    T_EQ_STR(fy_mig_status_name(fy_migration_wait(dst->mig, 10000)), "failed");
    char ev[256];
    tvm_status_events(src, ev, sizeof(ev));
    T_EQ_STR(ev, "setup,cancelling,cancelled");
    T_ASSERT(tvm_is_running(src));
    T_ASSERT(!atomic_load(&src->logging));
    json_t *q = fy_migration_query(src->mig);
    T_ASSERT(!json_object_get(q, "error-desc"));
    json_decref(q);
    T_EQ_INT(src->stops, 0);
    tvm_free(dst);
    migrate_again_ok(src);
    tvm_free(src);
}

static void test_cancel_active(void)
{
    TestVM *src = running_source(5);
    TestVM *dst = tvm_new("dst", NULL);
    char *vram = snapshot(src, 1), *pcram = snapshot(src, 0);
    T_EQ_INT(tvm_set_param_int(src, "max-bandwidth", 4 << 20), 0);
    FyError *err = NULL;
    T_EQ_INT(fy_migrate_incoming(dst->mig, "tcp:127.0.0.1:0", &err), 0);
    char *addr = fy_migration_incoming_address(dst->mig);
    T_EQ_INT(fy_migrate(src->mig, addr, false, &err), 0);
    free(addr);
    T_ASSERT(fy_migration_wait_for(src->mig, MIGRATION_STATUS_ACTIVE, 10000));
    tvm_sleep_ms(300);

    /* While active: QEMU's running fields. */
    json_t *q = fy_migration_query(src->mig);
    T_EQ_STR(json_string_value(json_object_get(q, "status")), "active");
    T_ASSERT(json_is_integer(json_object_get(q, "expected-downtime")));
    T_ASSERT(!json_object_get(q, "downtime"));
    json_t *ram = json_object_get(q, "ram");
    T_ASSERT(json_integer_value(json_object_get(ram, "remaining")) > 0);
    long long xfer = json_integer_value(json_object_get(ram, "transferred"));
    T_ASSERT(xfer > 0 && xfer < 4 << 20); /* the limit holds: ~1.2 MiB */
    /* Upper bound only: the limit caps it, a loaded machine slows it. */
    T_ASSERT(json_real_value(json_object_get(ram, "mbps")) > 0 &&
             json_real_value(json_object_get(ram, "mbps")) < 60);
    json_decref(q);

    T_EQ_INT(fy_migrate_cancel(src->mig, &err), 0);
    T_EQ_STR(fy_mig_status_name(fy_migration_wait(src->mig, 10000)), "cancelled");
    char ev[256];
    tvm_status_events(src, ev, sizeof(ev));
    T_EQ_STR(ev, "setup,active,cancelling,cancelled");
    T_ASSERT(tvm_is_running(src));
    expect_intact(src, vram, pcram);
    T_EQ_STR(fy_mig_status_name(fy_migration_wait(dst->mig, 10000)), "failed");
    char e[1024];
    T_CONTAINS(tvm_query_str(dst, "error-desc", e, sizeof(e)), "stream ends");
    T_ASSERT(!tvm_is_running(dst));
    /* Cancel when nothing runs: nothing happens. */
    T_EQ_INT(fy_migrate_cancel(src->mig, &err), 0);
    T_EQ_STR(fy_mig_status_name(fy_migration_status(src->mig)), "cancelled");
    free(vram);
    free(pcram);
    tvm_free(dst);
    migrate_again_ok(src);
    tvm_free(src);
}

static void test_pause_before_switchover(void)
{
    for (int cancel = 0; cancel < 2; cancel++) {
        TestVM *src = running_source(6);
        TestVM *dst = tvm_new("dst", NULL);
        tvm_cap(src, "pause-before-switchover", true);
        tvm_cap(src, "return-path", true);
        tvm_set_param_int(src, "max-bandwidth", 0);
        FyError *err = NULL;
        T_EQ_INT(fy_migrate_incoming(dst->mig, "tcp:127.0.0.1:0", &err), 0);
        char *addr = fy_migration_incoming_address(dst->mig);
        T_EQ_INT(fy_migrate(src->mig, addr, false, &err), 0);
        free(addr);
        T_ASSERT(fy_migration_wait_for(src->mig,
                                       MIGRATION_STATUS_PRE_SWITCHOVER, 20000));
        T_ASSERT(!tvm_is_running(src)); /* stopped before the pause */
        T_EQ_INT(fy_migrate_continue(src->mig, "active", &err), -1);
        T_CONTAINS(fy_error_msg(err), "Migration not in expected state: "
                                      "pre-switchover");
        fy_error_clear(&err);
        T_EQ_INT(fy_migrate_continue(src->mig, "bogus", &err), -1);
        fy_error_clear(&err);
        tvm_sleep_ms(50);
        T_EQ_STR(fy_mig_status_name(fy_migration_status(src->mig)),
                 "pre-switchover");
        char ev[256];
        if (cancel) {
            T_EQ_INT(fy_migrate_cancel(src->mig, &err), 0);
            T_EQ_STR(fy_mig_status_name(fy_migration_wait(src->mig, 10000)),
                     "cancelled");
            tvm_status_events(src, ev, sizeof(ev));
            T_EQ_STR(ev, "setup,active,pre-switchover,cancelling,cancelled");
            T_ASSERT(tvm_is_running(src)); /* restarted */
            T_EQ_STR(fy_mig_status_name(fy_migration_wait(dst->mig, 10000)),
                     "failed");
            T_ASSERT(!tvm_is_running(dst));
        } else {
            T_EQ_INT(fy_migrate_continue(src->mig, "pre-switchover", &err), 0);
            T_EQ_STR(fy_mig_status_name(fy_migration_wait(src->mig, 10000)),
                     "completed");
            T_EQ_STR(fy_mig_status_name(fy_migration_wait(dst->mig, 10000)),
                     "completed");
            tvm_status_events(src, ev, sizeof(ev));
            T_EQ_STR(ev, "setup,active,pre-switchover,device,completed");
            T_ASSERT(tvm_ram_equal(src, dst));
            T_ASSERT(tvm_dev_equal(src, dst));
            /* The pause counts as downtime. */
            T_ASSERT(tvm_query_int(src, "downtime", NULL) >= 50);
        }
        tvm_free(src);
        tvm_free(dst);
    }
}

/* Cancel while the device state is being saved (status device, the VM
 * stopped): the VM runs again, nothing is committed. */
static void test_cancel_in_device_phase(void)
{
    TestVM *src = running_source(8);
    TestVM *dst = tvm_new("dst", NULL);
    tvm_cap(src, "pause-before-switchover", true);
    tvm_set_param_int(src, "max-bandwidth", 0);
    pthread_mutex_lock(&src->lock);
    src->gate_pre_save = true;
    pthread_mutex_unlock(&src->lock);
    FyError *err = NULL;
    T_EQ_INT(fy_migrate_incoming(dst->mig, "tcp:127.0.0.1:0", &err), 0);
    char *addr = fy_migration_incoming_address(dst->mig);
    T_EQ_INT(fy_migrate(src->mig, addr, false, &err), 0);
    free(addr);
    T_ASSERT(fy_migration_wait_for(src->mig, MIGRATION_STATUS_PRE_SWITCHOVER,
                                   20000));
    T_EQ_INT(fy_migrate_continue(src->mig, "pre-switchover", &err), 0);
    pthread_mutex_lock(&src->lock);
    while (!src->in_pre_save)
        pthread_cond_wait(&src->cond, &src->lock);
    pthread_mutex_unlock(&src->lock);
    T_EQ_STR(fy_mig_status_name(fy_migration_status(src->mig)), "device");
    T_ASSERT(!tvm_is_running(src));
    T_EQ_INT(fy_migrate_cancel(src->mig, &err), 0);
    pthread_mutex_lock(&src->lock);
    src->gate_pre_save = false;
    pthread_cond_broadcast(&src->cond);
    pthread_mutex_unlock(&src->lock);
    T_EQ_STR(fy_mig_status_name(fy_migration_wait(src->mig, 10000)), "cancelled");
    char ev[256];
    tvm_status_events(src, ev, sizeof(ev));
    T_EQ_STR(ev, "setup,active,pre-switchover,device,cancelling,cancelled");
    T_ASSERT(tvm_is_running(src));
    T_EQ_STR(fy_mig_status_name(fy_migration_wait(dst->mig, 10000)), "failed");
    T_ASSERT(!tvm_is_running(dst));
    tvm_free(dst);
    tvm_cap(src, "pause-before-switchover", false);
    migrate_again_ok(src);
    tvm_free(src);
}

static void test_cancel_incoming(void)
{
    TestVM *dst = tvm_new("dst", NULL);
    tvm_cap(dst, "events", true);
    FyError *err = NULL;
    T_EQ_INT(fy_migrate_incoming(dst->mig, "tcp:127.0.0.1:0", &err), 0);
    json_t *q = fy_migration_query(dst->mig);
    json_t *sa = json_array_get(json_object_get(q, "socket-address"), 0);
    T_EQ_STR(json_string_value(json_object_get(sa, "type")), "inet");
    T_ASSERT(atoi(json_string_value(json_object_get(sa, "port"))) > 0);
    json_decref(q);
    T_EQ_INT(fy_migrate_cancel(dst->mig, &err), 0);
    T_EQ_STR(fy_mig_status_name(fy_migration_wait(dst->mig, 10000)), "cancelled");
    char ev[256];
    tvm_status_events(dst, ev, sizeof(ev));
    T_EQ_STR(ev, "setup,cancelling,cancelled");
    tvm_free(dst);
}

/* ---- failures before any byte moves ---- */

static int failing_stop(void *opaque, FyError **errp)
{
    (void)opaque;
    fy_error_setg(errp, "vCPU 1 does not stop");
    return -1;
}

static void test_early_failures(void)
{
    TestVM *src = running_source(7);
    FyError *err = NULL;
    char e[1024];

    T_EQ_INT(fy_migrate(src->mig, "unix:/nonexistent/ferry.sock", false, &err), 0);
    expect_failed_and_running(src, "No such file or directory");
    T_CONTAINS(tvm_query_str(src, "error-desc", e, sizeof(e)),
               "/nonexistent/ferry.sock");

    tvm_cap(src, "return-path", true);
    T_EQ_INT(fy_migrate(src->mig, "exec:cat > /dev/null", false, &err), 0);
    expect_failed_and_running(src, "return-path");
    T_CONTAINS(tvm_query_str(src, "error-desc", e, sizeof(e)), "no return path");
    tvm_cap(src, "return-path", false);

    /* The VM refuses to stop: nothing is lost, it keeps running. */
    FyVMOps ops = tvm_ops;
    ops.stop = failing_stop;
    fy_migration_free(src->mig);
    src->mig = fy_migration_new(src->ss, &src->list, &ops, src);
    T_EQ_INT(tvm_set_param_int(src, "max-bandwidth", 0), 0);
    T_EQ_INT(fy_migrate(src->mig, "exec:cat > /dev/null", false, &err), 0);
    expect_failed_and_running(src, "stopping the VM for the switchover: vCPU 1 "
                                   "does not stop");

    /* An incoming migration into a running VM is refused at once. */
    T_EQ_INT(fy_migrate_incoming(src->mig, "tcp:127.0.0.1:0", &err), -1);
    T_CONTAINS(fy_error_msg(err), "the VM is running");
    fy_error_clear(&err);
    tvm_free(src);
}

int main(void)
{
    T_RUN(test_destination_killed); /* forks: must run before any thread */
    T_RUN(test_destination_hangs_up);
    T_RUN(test_destination_refuses);
    T_RUN(test_cancel_in_setup);
    T_RUN(test_cancel_active);
    T_RUN(test_pause_before_switchover);
    T_RUN(test_cancel_in_device_phase);
    T_RUN(test_cancel_incoming);
    T_RUN(test_early_failures);
    return t_done();
}
