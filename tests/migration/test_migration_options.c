/*
 * test_migration_options.c: the status machine's legal moves, capabilities
 * and parameters with their validation (unknown names, wrong types, ranges,
 * unimplemented features, changes during a migration), and the calls that
 * must refuse cleanly (postcopy entry points, bad URIs, a second migrate).
 */
#include "t.h"
#include "testvm.h"

static const char *set_params(TestVM *vm, const char *json)
{
    static char msg[512];
    json_t *o = json_loads(json, 0, NULL);
    FyError *err = NULL;
    int r = fy_migration_set_parameters(vm->mig, o, &err);
    snprintf(msg, sizeof(msg), "%s", err ? fy_error_msg(err) : "");
    fy_error_free(err);
    json_decref(o);
    return r < 0 ? msg : NULL;
}

static long long param(TestVM *vm, const char *name)
{
    json_t *q = fy_migration_query_parameters(vm->mig);
    long long v = json_integer_value(json_object_get(q, name));
    json_decref(q);
    return v;
}

static const char *set_cap(TestVM *vm, const char *name, bool on)
{
    static char msg[512];
    FyError *err = NULL;
    int r = fy_migration_set_capability(vm->mig, name, on, &err);
    snprintf(msg, sizeof(msg), "%s", err ? fy_error_msg(err) : "");
    fy_error_free(err);
    return r < 0 ? msg : NULL;
}

static void test_status_machine(void)
{
#define OK(a, b) T_ASSERT(fy_mig_status_transition_ok(MIGRATION_STATUS_##a, \
                                                       MIGRATION_STATUS_##b))
#define NO(a, b) T_ASSERT(!fy_mig_status_transition_ok(MIGRATION_STATUS_##a, \
                                                        MIGRATION_STATUS_##b))
    OK(NONE, SETUP);
    OK(SETUP, ACTIVE);
    OK(ACTIVE, COMPLETED);
    OK(ACTIVE, PRE_SWITCHOVER);
    OK(PRE_SWITCHOVER, DEVICE);
    OK(DEVICE, COMPLETED);
    OK(SETUP, CANCELLING);
    OK(DEVICE, CANCELLING);
    OK(CANCELLING, CANCELLED);
    OK(ACTIVE, FAILED);
    OK(FAILED, SETUP);
    OK(COMPLETED, SETUP);
    OK(CANCELLED, SETUP);
    OK(POSTCOPY_ACTIVE, POSTCOPY_PAUSED);
    NO(NONE, ACTIVE);
    NO(NONE, COMPLETED);
    NO(SETUP, COMPLETED);
    NO(ACTIVE, SETUP);
    NO(COMPLETED, FAILED);
    NO(CANCELLING, FAILED);
    NO(CANCELLING, COMPLETED);
    NO(CANCELLED, ACTIVE);
    NO(FAILED, COMPLETED);
    NO(PRE_SWITCHOVER, COMPLETED);
    NO(POSTCOPY_ACTIVE, CANCELLING);
    T_ASSERT(!fy_mig_status_transition_ok(MIGRATION_STATUS__MAX,
                                          MIGRATION_STATUS_SETUP));
#undef OK
#undef NO
    T_EQ_STR(fy_mig_status_name(MIGRATION_STATUS_PRE_SWITCHOVER), "pre-switchover");
    T_EQ_STR(fy_mig_status_name(MIGRATION_STATUS_POSTCOPY_RECOVER),
             "postcopy-recover");
    T_EQ_STR(fy_mig_status_name(MIGRATION_STATUS_WAIT_UNPLUG), "wait-unplug");
}

static void test_parameters(void)
{
    TestVM *vm = tvm_new("vm", NULL);
    /* QEMU's defaults. */
    T_EQ_INT(param(vm, "max-bandwidth"), 134217728);
    T_EQ_INT(param(vm, "downtime-limit"), 300);
    T_EQ_INT(param(vm, "avail-switchover-bandwidth"), 0);
    json_t *q = fy_migration_query_parameters(vm->mig);
    T_EQ_STR(json_string_value(json_object_get(q, "zero-page-detection")),
             "multifd");
    T_EQ_INT(json_integer_value(json_object_get(q, "multifd-channels")), 2);
    T_ASSERT(!json_object_get(q, "announce-max")); /* not implemented */
    json_decref(q);

    T_ASSERT(set_params(vm, "{\"downtime-limit\": 100, \"max-bandwidth\": 1000}")
             == NULL);
    T_EQ_INT(param(vm, "downtime-limit"), 100);
    T_EQ_INT(param(vm, "max-bandwidth"), 1000);
    T_ASSERT(set_params(vm, "{\"downtime-limit\": 2000000}") == NULL);
    T_ASSERT(set_params(vm, "{\"zero-page-detection\": \"none\"}") == NULL);

    T_EQ_STR(set_params(vm, "{\"foo\": 1}"), "Parameter 'foo' is unexpected");
    T_EQ_STR(set_params(vm, "{\"downtime-limit\": \"300\"}"),
             "Parameter 'downtime-limit' expects an integer");
    T_EQ_STR(set_params(vm, "{\"downtime-limit\": 1.5}"),
             "Parameter 'downtime-limit' expects an integer");
    T_EQ_STR(set_params(vm, "{\"downtime-limit\": 2000001}"),
             "Parameter 'downtime-limit' expects an integer in the range of 0 "
             "to 2000000 milliseconds");
    T_CONTAINS(set_params(vm, "{\"max-bandwidth\": -1}"),
               "Parameter 'max-bandwidth' expects an integer in the range of 0 to");
    T_EQ_STR(set_params(vm, "{\"zero-page-detection\": \"fast\"}"),
             "Parameter 'zero-page-detection' does not accept value 'fast'");
    T_EQ_STR(set_params(vm, "{\"zero-page-detection\": 1}"),
             "Parameter 'zero-page-detection' expects a string");
    T_EQ_STR(set_params(vm, "{\"announce-max\": 4}"),
             "Parameter 'announce-max' is not supported by ferry yet");
    T_EQ_STR(set_params(vm, "[1]"), "migration parameters must be a JSON object");
    /* All or nothing: the valid member of a bad set is not applied. */
    T_ASSERT(set_params(vm, "{\"downtime-limit\": 7, \"bogus\": 1}") != NULL);
    T_EQ_INT(param(vm, "downtime-limit"), 2000000);
    tvm_free(vm);
}

static void test_capabilities(void)
{
    TestVM *vm = tvm_new("vm", NULL);
    json_t *caps = fy_migration_query_capabilities(vm->mig);
    T_ASSERT(json_array_size(caps) >= 20);
    const char *names[] = { "xbzrle", "events", "postcopy-ram", "return-path",
                            "pause-before-switchover", "multifd",
                            "x-ignore-shared", "validate-uuid", "mapped-ram" };
    for (size_t n = 0; n < sizeof(names) / sizeof(names[0]); n++) {
        bool found = false;
        for (size_t i = 0; i < json_array_size(caps); i++) {
            json_t *c = json_array_get(caps, i);
            if (!strcmp(json_string_value(json_object_get(c, "capability")),
                        names[n])) {
                found = true;
                T_ASSERT(json_is_false(json_object_get(c, "state")));
            }
        }
        T_ASSERT(found);
    }
    json_decref(caps);

    const char *on[] = { "events", "return-path", "pause-before-switchover",
                         "validate-uuid", "x-ignore-shared", "postcopy-ram",
                         "xbzrle", "auto-converge", "multifd" };
    for (size_t i = 0; i < sizeof(on) / sizeof(on[0]); i++) {
        T_ASSERT(set_cap(vm, on[i], true) == NULL);
        bool state = false;
        T_EQ_INT(fy_migration_get_capability(vm->mig, on[i], &state, NULL), 0);
        T_ASSERT(state);
        T_ASSERT(set_cap(vm, on[i], false) == NULL);
    }
    T_EQ_STR(set_cap(vm, "x-colo", true),
             "Capability 'x-colo' is not supported by ferry yet");
    T_ASSERT(set_cap(vm, "xbzrle", false) == NULL); /* off is always fine */
    T_EQ_STR(set_cap(vm, "foo", true),
             "Parameter 'capability' does not accept value 'foo'");
    bool state;
    T_EQ_INT(fy_migration_get_capability(vm->mig, "foo", &state, NULL), -1);
    tvm_free(vm);
}

static void test_refusals(void)
{
    TestVM *vm = tvm_new("vm", NULL);
    FyError *err = NULL;
    T_EQ_INT(fy_migrate(vm->mig, "unix:/tmp/x", true, &err), -1);
    T_CONTAINS(fy_error_msg(err), "Cannot resume");
    fy_error_clear(&err);
    T_EQ_INT(fy_migrate_start_postcopy(vm->mig, &err), -1);
    T_CONTAINS(fy_error_msg(err), "Enable postcopy");
    fy_error_clear(&err);
    T_EQ_INT(fy_migrate_pause(vm->mig, &err), -1);
    fy_error_clear(&err);
    T_EQ_INT(fy_migrate_recover(vm->mig, "unix:/tmp/x", &err), -1);
    fy_error_clear(&err);
    T_EQ_INT(fy_migrate_continue(vm->mig, "pre-switchover", &err), -1);
    T_CONTAINS(fy_error_msg(err), "Migration not in expected state: none");
    fy_error_clear(&err);
    /* No migration yet: query-migrate is empty, as QEMU's. */
    json_t *q = fy_migration_query(vm->mig);
    T_EQ_INT(json_object_size(q), 0);
    json_decref(q);
    tvm_free(vm);
}

/* While a migration runs: capabilities are frozen, non-live parameters too;
 * max-bandwidth applies at once (QEMU's behaviour). */
static void test_changes_during_migration(void)
{
    TestVM *src = tvm_new("src", NULL), *dst = tvm_new("dst", NULL);
    tvm_fill(src, 9);
    T_ASSERT(tvm_set_param_int(src, "max-bandwidth", 2 << 20) == 0);
    FyError *err = NULL;
    T_EQ_INT(fy_migrate_incoming(dst->mig, "tcp:127.0.0.1:0", &err), 0);
    char *addr = fy_migration_incoming_address(dst->mig);
    T_EQ_INT(fy_migrate(src->mig, addr, false, &err), 0);
    T_ASSERT(fy_migration_wait_for(src->mig, MIGRATION_STATUS_ACTIVE, 10000));

    T_EQ_STR(set_cap(src, "events", true), "There's a migration process in progress");
    T_EQ_STR(set_params(src, "{\"zero-page-detection\": \"none\"}"),
             "Parameter 'zero-page-detection' cannot be changed while a "
             "migration is in progress");
    T_EQ_INT(fy_migrate(src->mig, addr, false, &err), -1);
    T_CONTAINS(fy_error_msg(err), "There's a migration process in progress");
    fy_error_clear(&err);
    T_EQ_INT(fy_migrate_incoming(dst->mig, "tcp:127.0.0.1:0", &err), -1);
    T_CONTAINS(fy_error_msg(err), "There's a migration process in progress");
    fy_error_clear(&err);
    free(addr);

    /* At 2 MiB/s this would take ~12 s; lifting the limit ends it now. */
    uint64_t t0 = tvm_now_ms();
    T_ASSERT(set_params(src, "{\"max-bandwidth\": 0, \"downtime-limit\": 500}")
             == NULL);
    T_EQ_STR(fy_mig_status_name(fy_migration_wait(src->mig, 20000)), "completed");
    T_ASSERT(tvm_now_ms() - t0 < 5000);
    T_EQ_STR(fy_mig_status_name(fy_migration_wait(dst->mig, 20000)), "completed");
    T_ASSERT(tvm_ram_equal(src, dst));
    T_ASSERT(tvm_dev_equal(src, dst));
    T_ASSERT(set_cap(src, "events", true) == NULL); /* allowed again */

    T_EQ_INT(fy_migrate(src->mig, "nonsense:1", false, &err), -1);
    T_ASSERT(err != NULL);
    fy_error_clear(&err);
    T_EQ_STR(fy_mig_status_name(fy_migration_status(src->mig)), "completed");
    tvm_free(src);
    tvm_free(dst);
}

/* zero-page-detection none: zero pages go as full pages, and still arrive. */
static void test_zero_detection_off(void)
{
    TestVM *src = tvm_new("src", NULL), *dst = tvm_new("dst", NULL);
    tvm_fill(src, 10);
    T_ASSERT(set_params(src, "{\"zero-page-detection\": \"none\", "
                             "\"max-bandwidth\": 0}") == NULL);
    FyMigStatus s, d;
    tvm_migrate(src, dst, NULL, "tcp:127.0.0.1:0", &s, &d);
    T_EQ_STR(fy_mig_status_name(s), "completed");
    T_EQ_STR(fy_mig_status_name(d), "completed");
    T_EQ_INT(tvm_query_int(src, "ram", "duplicate"), 0);
    T_EQ_INT(tvm_query_int(src, "ram", "normal"),
             fy_ram_list_total(&src->list) / 4096);
    T_ASSERT(tvm_ram_equal(src, dst));
    T_ASSERT(tvm_dev_equal(src, dst));
    tvm_free(src);
    tvm_free(dst);
}

int main(void)
{
    T_RUN(test_status_machine);
    T_RUN(test_parameters);
    T_RUN(test_capabilities);
    T_RUN(test_refusals);
    T_RUN(test_changes_during_migration);
    T_RUN(test_zero_detection_off);
    return t_done();
}
