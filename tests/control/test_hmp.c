/*
 * test_hmp.c: every HMP command, with good and bad arguments, and the
 * output shapes QEMU prints (info migrate, info migrate_capabilities,
 * info migrate_parameters, info status), including a migration driven
 * only by HMP command lines.
 */
#include <signal.h>

#include "ctlvm.h"
#include "t.h"

static char *hmp(CtlVM *vm, const char *line, bool *failed)
{
    bool f = false;
    char *out = fy_hmp_execute(vm->mon, line, true, &f);
    if (failed)
        *failed = f;
    return out;
}

/* Run and check the output contains `want` and the failure flag. */
#define HMP_EXPECT(vm, line, want, want_failed)                            \
    do {                                                                    \
        bool f_;                                                            \
        char *o_ = hmp(vm, line, &f_);                                      \
        T_CONTAINS(o_, want);                                               \
        if (f_ != (want_failed))                                            \
            T_FAIL("'%s': failed=%d, output: %s", line, f_, o_);            \
        free(o_);                                                           \
    } while (0)

static void test_parse_errors(void)
{
    CtlVM *vm = ctl_new("ctl", 1);
    HMP_EXPECT(vm, "frobnicate now", "unknown command: 'frobnicate'", true);
    HMP_EXPECT(vm, "migrate", "migrate: missing argument", true);
    HMP_EXPECT(vm, "migrate_set_capability events",
               "migrate_set_capability: missing argument", true);
    HMP_EXPECT(vm, "stop now", "stop: extraneous characters at the end of line",
               true);
    HMP_EXPECT(vm, "migrate -z tcp:h:1", "migrate: unsupported option -z", true);
    HMP_EXPECT(vm, "migrate \"exec:cat", "unterminated string literal", true);
    char *o = hmp(vm, "   ", NULL);
    T_EQ_STR(o, "");
    free(o);
    /* A quoted URI keeps its spaces and escapes. */
    HMP_EXPECT(vm, "migrate_incoming \"bogus: x \\\"y\\\"\"",
               "bogus: x \"y\"", true);
    ctl_free(vm);
}

static void test_help(void)
{
    CtlVM *vm = ctl_new("ctl", 1);
    char *o = hmp(vm, "help", NULL);
    static const char *names[] = { "migrate [-d] [-r] uri", "migrate_incoming",
        "migrate_cancel", "migrate_continue", "migrate_set_capability",
        "migrate_set_parameter", "stop", "cont", "quit", "info" };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        T_CONTAINS(o, names[i]);
    free(o);
    o = hmp(vm, "? stop", NULL);
    T_EQ_STR(o, "stop|s  -- stop emulation\n");
    free(o);
    HMP_EXPECT(vm, "info", "info migrate_capabilities", false);
    HMP_EXPECT(vm, "info bogus", "info: unknown item 'bogus'", true);
    HMP_EXPECT(vm, "info version", "7.2.0 (ferry 0.1.0)\n", false);
    HMP_EXPECT(vm, "info commands", "query-migrate\n", false);
    ctl_free(vm);
}

static void test_vm_commands(void)
{
    CtlVM *vm = ctl_new("ctl", 1);
    HMP_EXPECT(vm, "info status", "VM status: paused\n", false);
    HMP_EXPECT(vm, "cont", "", false);
    HMP_EXPECT(vm, "info status", "VM status: running\n", false);
    HMP_EXPECT(vm, "stop", "", false);
    T_ASSERT(!ctl_is_running(vm));
    HMP_EXPECT(vm, "c", "", false);
    T_ASSERT(ctl_is_running(vm));
    HMP_EXPECT(vm, "s", "", false);
    HMP_EXPECT(vm, "q", "", false);
    HMP_EXPECT(vm, "quit", "", false);
    T_EQ_INT(vm->quits, 2);
    HMP_EXPECT(vm, "info ram_digest", "pc.ram: ", false);
    HMP_EXPECT(vm, "info ram_digest", " (4194304 bytes)\n", false);
    /* Not registered by this VM: the QMP error shows through. */
    HMP_EXPECT(vm, "info device_state",
               "Error: The command x-ferry-device-state has not been found",
               true);
    ctl_free(vm);
}

static void test_capabilities(void)
{
    CtlVM *vm = ctl_new("ctl", 1);
    char *o = hmp(vm, "info migrate_capabilities", NULL);
    T_ASSERT(!strncmp(o, "xbzrle: off\nrdma-pin-all: off\n", 30));
    T_CONTAINS(o, "\nevents: off\n");
    int lines = 0;
    for (char *p = o; *p; p++)
        lines += *p == '\n';
    json_t *caps = fy_migration_query_capabilities(vm->mig);
    T_EQ_INT(lines, (long)json_array_size(caps));
    json_decref(caps);
    free(o);

    HMP_EXPECT(vm, "migrate_set_capability events on", "", false);
    HMP_EXPECT(vm, "info migrate_capabilities", "\nevents: on\n", false);
    HMP_EXPECT(vm, "migrate_set_capability events off", "", false);
    HMP_EXPECT(vm, "info migrate_capabilities", "\nevents: off\n", false);
    HMP_EXPECT(vm, "migrate_set_capability events maybe",
               "Expected 'on' or 'off'", true);
    HMP_EXPECT(vm, "migrate_set_capability warp-speed on",
               "Error: Parameter 'capability' does not accept value "
               "'warp-speed'", true);
    HMP_EXPECT(vm, "migrate_set_capability x-colo on",
               "Error: Capability 'x-colo' is not supported", true);
    ctl_free(vm);
}

static void test_parameters(void)
{
    CtlVM *vm = ctl_new("ctl", 1);
    char *o = hmp(vm, "info migrate_parameters", NULL);
    T_CONTAINS(o, "max-bandwidth: 134217728 bytes/second\n");
    T_CONTAINS(o, "downtime-limit: 300 ms\n");
    T_CONTAINS(o, "avail-switchover-bandwidth: 0 bytes/second\n");
    T_CONTAINS(o, "zero-page-detection: multifd\n");
    free(o);

    /* Bandwidth without a unit is MiB/s, as in QEMU. */
    HMP_EXPECT(vm, "migrate_set_parameter max-bandwidth 32", "", false);
    HMP_EXPECT(vm, "info migrate_parameters",
               "max-bandwidth: 33554432 bytes/second\n", false);
    HMP_EXPECT(vm, "migrate_set_parameter max-bandwidth 1G", "", false);
    HMP_EXPECT(vm, "info migrate_parameters",
               "max-bandwidth: 1073741824 bytes/second\n", false);
    HMP_EXPECT(vm, "migrate_set_parameter max-bandwidth 512k", "", false);
    HMP_EXPECT(vm, "info migrate_parameters",
               "max-bandwidth: 524288 bytes/second\n", false);
    HMP_EXPECT(vm, "migrate_set_parameter downtime-limit 100", "", false);
    HMP_EXPECT(vm, "info migrate_parameters", "downtime-limit: 100 ms\n",
               false);
    HMP_EXPECT(vm, "migrate_set_parameter downtime_limit 120", "", false);
    HMP_EXPECT(vm, "info migrate_parameters", "downtime-limit: 120 ms\n",
               false);
    HMP_EXPECT(vm, "migrate_set_parameter zero-page-detection none", "",
               false);
    HMP_EXPECT(vm, "info migrate_parameters", "zero-page-detection: none\n",
               false);

    HMP_EXPECT(vm, "migrate_set_parameter max-bandwidth fast",
               "Error: Invalid size fast", true);
    HMP_EXPECT(vm, "migrate_set_parameter downtime-limit -5",
               "Error: Invalid size -5", true);
    HMP_EXPECT(vm, "migrate_set_parameter downtime-limit 3000000",
               "Error: Parameter 'downtime-limit' expects", true);
    HMP_EXPECT(vm, "migrate_set_parameter zero-page-detection sometimes",
               "Error: Parameter 'zero-page-detection' does not accept value "
               "'sometimes'", true);
    HMP_EXPECT(vm, "migrate_set_parameter warp 9",
               "Error: Parameter 'warp' is unexpected", true);
    HMP_EXPECT(vm, "migrate_set_parameter x-checkpoint-delay 4",
               "Error: Parameter 'x-checkpoint-delay' is not supported", true);
    HMP_EXPECT(vm, "info migrate_parameters", "downtime-limit: 120 ms\n",
               false);
    ctl_free(vm);
}

static void test_migrate_errors(void)
{
    CtlVM *vm = ctl_new("ctl", 1);
    char *o = hmp(vm, "info migrate", NULL);
    T_ASSERT(!strncmp(o, "globals:\nstore-global-state: on\n", 32));
    T_CONTAINS(o, "send-configuration: on\nsend-section-footer: on\n");
    T_ASSERT(!strstr(o, "Migration status"));
    free(o);
    HMP_EXPECT(vm, "migrate_cancel", "", false);
    HMP_EXPECT(vm, "migrate_continue pre-switchover",
               "Error: Migration not in expected state: none", true);
    HMP_EXPECT(vm, "migrate nowhere:1", "Error: ", true);
    HMP_EXPECT(vm, "migrate_incoming tcp:127.0.0.1", "Error: ", true);
    HMP_EXPECT(vm, "migrate_start_postcopy", "Error: ", true);
    HMP_EXPECT(vm, "migrate_pause", "Error: ", true);
    HMP_EXPECT(vm, "migrate_recover tcp:127.0.0.1:1", "Error: ", true);

    /* A synchronous migrate that fails prints why and fails. */
    ctl_start(vm, NULL);
    HMP_EXPECT(vm, "migrate unix:/nonexistent/ferry.sock", "ferry.sock", true);
    o = hmp(vm, "info migrate", NULL);
    T_CONTAINS(o, "Migration status: failed (");
    T_CONTAINS(o, "ferry.sock");
    free(o);
    T_ASSERT(ctl_is_running(vm));   /* the VM runs on after a failure */
    ctl_free(vm);
}

static void listen_uri(CtlVM *dst, char *uri, size_t len)
{
    json_t *q = fy_migration_query(dst->mig);
    json_t *sa = json_array_get(json_object_get(q, "socket-address"), 0);
    snprintf(uri, len, "tcp:%s:%s",
             json_string_value(json_object_get(sa, "host")),
             json_string_value(json_object_get(sa, "port")));
    json_decref(q);
}

static void test_migrate_via_hmp(void)
{
    CtlVM *src = ctl_new("ctl", 9), *dst = ctl_new("ctl", 0);
    ctl_start(src, NULL);
    HMP_EXPECT(dst, "migrate_incoming tcp:127.0.0.1:0", "", false);
    char *o = hmp(dst, "info migrate", NULL);
    T_CONTAINS(o, "Migration status: setup\n");
    T_CONTAINS(o, "socket address: [\n\ttcp:127.0.0.1:");
    T_CONTAINS(o, "\n]\n");
    free(o);

    char uri[128], line[160];
    listen_uri(dst, uri, sizeof(uri));
    /* Over QMP's human-monitor-command HMP cannot block: detached. */
    snprintf(line, sizeof(line), "migrate %s", uri);
    bool failed = true;
    o = fy_hmp_execute(src->mon, line, false, &failed);
    T_EQ_STR(o, "terminal does not allow synchronous migration, continuing "
                "detached\n");
    T_ASSERT(!failed);
    free(o);
    T_EQ_INT(fy_migration_wait(src->mig, 20000), MIGRATION_STATUS_COMPLETED);
    T_EQ_INT(fy_migration_wait(dst->mig, 20000), MIGRATION_STATUS_COMPLETED);
    T_EQ_MEM(dst->block.host, src->block.host, CTL_RAM_SIZE);
    T_EQ_INT(dst->dev.counter, 9);

    o = hmp(src, "info migrate", NULL);
    static const char *lines[] = {
        "Migration status: completed\n", "total time: ", "downtime: ",
        "setup: ", "transferred ram: ", "throughput: ", "remaining ram: 0 kbytes\n",
        "total ram: 4096 kbytes\n", "duplicate: ", "normal: ", "normal bytes: ",
        "dirty sync count: ", "page size: 4 kbytes\n", "multifd bytes: 0 kbytes\n",
        "pages-per-second: ",
    };
    const char *prev = o;
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        const char *at = strstr(o, lines[i]);
        if (!at || at < prev)
            T_FAIL("'%s' missing or out of order in:\n%s", lines[i], o);
        else
            prev = at;
    }
    T_ASSERT(!strstr(o, "expected downtime"));
    free(o);
    o = hmp(src, "info status", NULL);
    T_EQ_STR(o, "VM status: paused (postmigrate)\n");
    free(o);
    o = hmp(dst, "info migrate", NULL);
    T_CONTAINS(o, "Migration status: completed\n");
    free(o);
    HMP_EXPECT(dst, "info status", "VM status: running\n", false);

    /* Back again with a blocking migrate (-d absent, can_block). */
    HMP_EXPECT(src, "migrate_incoming tcp:127.0.0.1:0", "", false);
    listen_uri(src, uri, sizeof(uri));
    memset(dst->block.host + 8192, 0x5a, 4096);
    dst->dev.counter = 77;
    snprintf(line, sizeof(line), "migrate %s", uri);
    o = hmp(dst, line, &failed);
    T_EQ_STR(o, "");
    T_ASSERT(!failed);
    free(o);
    T_EQ_INT(fy_migration_status(dst->mig), MIGRATION_STATUS_COMPLETED);
    T_EQ_INT(fy_migration_wait(src->mig, 20000), MIGRATION_STATUS_COMPLETED);
    T_EQ_MEM(src->block.host, dst->block.host, CTL_RAM_SIZE);
    T_EQ_INT(src->dev.counter, 77);
    ctl_free(src);
    ctl_free(dst);
}

/* pause-before-switchover: migrate_continue releases it; migrate_cancel
 * in pre-switchover gives the VM back. */
static void test_continue_and_cancel(void)
{
    CtlVM *src = ctl_new("ctl", 5), *dst = ctl_new("ctl", 0);
    char uri[128], line[160];
    ctl_start(src, NULL);
    HMP_EXPECT(src, "migrate_set_capability pause-before-switchover on", "",
               false);
    HMP_EXPECT(dst, "migrate_incoming tcp:127.0.0.1:0", "", false);
    listen_uri(dst, uri, sizeof(uri));
    snprintf(line, sizeof(line), "migrate -d %s", uri);
    HMP_EXPECT(src, line, "", false);
    T_ASSERT(fy_migration_wait_for(src->mig, MIGRATION_STATUS_PRE_SWITCHOVER,
                                   20000));
    HMP_EXPECT(src, "info migrate", "Migration status: pre-switchover\n",
               false);
    HMP_EXPECT(src, "migrate_set_capability events on",
               "Error: There's a migration process in progress", true);
    HMP_EXPECT(src, "migrate_continue active",
               "Error: Migration not in expected state: pre-switchover", true);
    HMP_EXPECT(src, "migrate_continue pre-switchover", "", false);
    T_EQ_INT(fy_migration_wait(src->mig, 20000), MIGRATION_STATUS_COMPLETED);
    T_EQ_INT(fy_migration_wait(dst->mig, 20000), MIGRATION_STATUS_COMPLETED);
    T_EQ_MEM(dst->block.host, src->block.host, CTL_RAM_SIZE);

    /* Second run, cancelled while paused. */
    CtlVM *dst2 = ctl_new("ctl", 0);
    ctl_start(src, NULL);
    HMP_EXPECT(dst2, "migrate_incoming tcp:127.0.0.1:0", "", false);
    listen_uri(dst2, uri, sizeof(uri));
    snprintf(line, sizeof(line), "migrate -d %s", uri);
    HMP_EXPECT(src, line, "", false);
    T_ASSERT(fy_migration_wait_for(src->mig, MIGRATION_STATUS_PRE_SWITCHOVER,
                                   20000));
    HMP_EXPECT(src, "migrate_cancel", "", false);
    T_EQ_INT(fy_migration_wait(src->mig, 20000), MIGRATION_STATUS_CANCELLED);
    HMP_EXPECT(src, "info migrate", "Migration status: cancelled\n", false);
    HMP_EXPECT(src, "info status", "VM status: running\n", false);
    T_EQ_INT(fy_migration_wait(dst2->mig, 20000), MIGRATION_STATUS_FAILED);
    HMP_EXPECT(dst2, "info migrate", "Migration status: failed (", false);
    ctl_free(src);
    ctl_free(dst);
    ctl_free(dst2);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    T_RUN(test_parse_errors);
    T_RUN(test_help);
    T_RUN(test_vm_commands);
    T_RUN(test_capabilities);
    T_RUN(test_parameters);
    T_RUN(test_migrate_errors);
    T_RUN(test_migrate_via_hmp);
    T_RUN(test_continue_and_cancel);
    return t_done();
}
