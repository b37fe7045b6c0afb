/*
 * test_converge.c: convergence with the reference VM, end to end.
 *
 * Each migration runs between two real machines (vCPU threads, dirty
 * tracking, devices) over a unix socket and ends with the destination's
 * RAM digests and device state equal to the source's. The workload that
 * cannot converge: 2 vCPUs writing 40000 random pages/s (160 MB/s) over
 * 32 MiB, against max-bandwidth 32 MiB/s and downtime-limit 100 ms.
 *
 *   stall          that workload alone: after x-stall-iterations syncs
 *                  without progress the migration is stalled (event, query,
 *                  HMP) and still active; x-stall-action throttle (set
 *                  live) escalates and it completes
 *   stall postcopy the same with postcopy-ram on both sides and
 *                  x-stall-action postcopy: the stall switches it to
 *                  postcopy, which completes it
 *   auto-converge  the capability alone makes it complete: the throttle
 *                  was raised (initial, then increment), the VM slept
 *   throttle rate  a vCPU paced at 40000 stores/s, held at a 95% throttle
 *                  by a migration that cannot converge: calc-dirty-rate
 *                  (dirty-ring, the vCPU's stores) during the migration
 *                  reads well under half of what it read before, and the
 *                  rate is back once the migration is over
 *   dirty-limit    the capability alone makes it complete: every vCPU was
 *                  held to vcpu-dirty-limit during the run (query-vcpu-
 *                  dirty-limit, the dirty-limit lines), cancelling it was
 *                  refused, and the limits are gone afterwards
 *   vcpu limit     set-vcpu-dirty-limit on one vCPU: it stays under its
 *                  limit while the other one is not slowed; an idle vCPU
 *                  under a limit is not slowed; HMP and errors
 *   calc rate      calc-dirty-rate (all three modes) finds the workload's
 *                  configured rate within 10%; during a migration too,
 *                  which it must not disturb
 *   downtime       the measured parts add up, are reported in query-migrate
 *                  and info migrate, with and without a return path
 *
 * Polling only waits; the assertions are on counters and states.
 */
#include <math.h>

#include "cvm.h"

#define NONCONV_RATE 40000
#define BW_32M "33554432"
#define TIMEOUT_MS 240000

static FyMachineConfig nonconv_config(void)
{
    return cvm_config(FY_WORKLOAD_RANDOM, 2, 32, NONCONV_RATE);
}

/* Start the source and let it touch its whole working set first: pages
 * never written go as ZERO at no cost, so a fresh VM converges at once. */
static void start_warm(Cvm *vm)
{
    cvm_start(vm);
    cvm_sleep_ms(1500);
}

/* ---- stall detection and escalation ---- */

static bool is_stalled(Cvm *vm)
{
    return cvm_qint(vm, "x-convergence", "stall", "stalled") == 1;
}

static void test_stall_then_escalate(void)
{
    FyMachineConfig c = nonconv_config();
    Cvm *src = cvm_new("src", &c), *dst = cvm_new("dst", &c);
    char path[128];

    start_warm(src);
    T_ASSERT(cvm_cap(src, "events", true));   /* MIGRATION_STALL, like QEMU's */
    T_ASSERT(cvm_params(src, "{\"max-bandwidth\": " BW_32M ", "
                        "\"downtime-limit\": 100, \"x-stall-iterations\": 3, "
                        "\"cpu-throttle-initial\": 95}"));
    cvm_begin(src, dst, path, sizeof(path));
    T_ASSERT(cvm_wait(src, is_stalled, TIMEOUT_MS));

    /* Stalled, still iterating, and everybody can see it. */
    T_EQ_INT(fy_migration_status(src->mig), MIGRATION_STATUS_ACTIVE);
    T_ASSERT(cvm_qint(src, "ram", "dirty-sync-count", NULL) >= 4);
    T_ASSERT(cvm_qint(src, "x-convergence", "stall", "iterations") >= 3);
    T_EQ_INT(cvm_qint(src, "x-convergence", "stall", "escalations"), 0);
    T_ASSERT(cvm_count_events(src, "MIGRATION_STALL") >= 1);
    char *out = cvm_hmp(src, "info migrate");
    T_CONTAINS(out, "stall: STALLED");
    T_CONTAINS(out, "dirty rate: ");
    T_CONTAINS(out, "downtime estimate: ");
    free(out);

    T_ASSERT(cvm_params(src, "{\"x-stall-action\": \"throttle\"}"));
    T_ASSERT(cvm_finish(src, dst, path, TIMEOUT_MS));
    json_t *q = fy_migration_query(src->mig);
    char *txt = json_dumps(cvm_q(q, "x-convergence", "stall", NULL),
                           JSON_COMPACT);
    printf("# stall: %s\n", txt);
    free(txt);
    T_ASSERT(json_integer_value(cvm_q(q, "x-convergence", "stall",
                                      "escalations")) >= 1);
    T_EQ_INT(json_integer_value(cvm_q(q, "x-convergence", "throttle", "peak")),
             95);
    json_decref(q);
    T_ASSERT(cvm_same(src, dst));
    cvm_free(src);
    cvm_free(dst);
}

static void test_stall_to_postcopy(void)
{
    FyMachineConfig c = nonconv_config();
    Cvm *src = cvm_new("src", &c), *dst = cvm_new("dst", &c);
    char path[128];

    start_warm(src);
    T_ASSERT(cvm_cap(src, "events", true));
    T_ASSERT(cvm_cap(src, "postcopy-ram", true));
    T_ASSERT(cvm_cap(dst, "postcopy-ram", true));
    T_ASSERT(cvm_params(src, "{\"max-bandwidth\": " BW_32M ", "
                        "\"downtime-limit\": 100, \"x-stall-iterations\": 3, "
                        "\"x-stall-action\": \"postcopy\"}"));
    cvm_begin(src, dst, path, sizeof(path));
    T_ASSERT(cvm_finish(src, dst, path, TIMEOUT_MS));
    json_t *q = fy_migration_query(src->mig);
    json_t *st = cvm_q(q, "x-convergence", "stall", NULL);
    char *txt = json_dumps(st, JSON_COMPACT);
    printf("# stall: %s\n", txt);
    free(txt);
    T_EQ_STR(json_string_value(json_object_get(st, "last-action")),
             "postcopy");
    T_ASSERT(json_integer_value(json_object_get(st, "escalations")) >= 1);
    T_ASSERT(json_is_false(json_object_get(st, "stalled")));
    json_decref(q);
    T_ASSERT(cvm_count_events(src, "MIGRATION_STALL") >= 1);
    T_ASSERT(cvm_count_events(src, "MIGRATION:postcopy-active") >= 1);
    T_ASSERT(cvm_same(src, dst));
    cvm_free(src);
    cvm_free(dst);
}

/* ---- auto-converge ---- */

static void test_auto_converge(void)
{
    FyMachineConfig c = nonconv_config();
    Cvm *src = cvm_new("src", &c), *dst = cvm_new("dst", &c);
    char path[128];

    start_warm(src);
    T_ASSERT(cvm_cap(src, "auto-converge", true));
    T_ASSERT(cvm_params(src, "{\"max-bandwidth\": " BW_32M ", "
                        "\"downtime-limit\": 100, \"x-stall-iterations\": 0, "
                        "\"cpu-throttle-initial\": 60, "
                        "\"cpu-throttle-increment\": 35}"));
    cvm_begin(src, dst, path, sizeof(path));
    T_ASSERT(cvm_finish(src, dst, path, TIMEOUT_MS));

    json_t *q = fy_migration_query(src->mig);
    json_t *t = cvm_q(q, "x-convergence", "throttle", NULL);
    char *txt = json_dumps(t, JSON_COMPACT);
    printf("# throttle: %s, %lld syncs\n", txt,
           (long long)json_integer_value(cvm_q(q, "ram", "dirty-sync-count",
                                               NULL)));
    free(txt);
    /* 60, then 60 + 35 = 95 (max-cpu-throttle is 99). */
    T_ASSERT(json_integer_value(json_object_get(t, "raises")) >= 2);
    T_EQ_INT(json_integer_value(json_object_get(t, "peak")), 95);
    T_EQ_INT(json_integer_value(json_object_get(t, "percentage")), 0);
    T_ASSERT(!json_object_get(q, "cpu-throttle-percentage")); /* completed */
    json_decref(q);
    FyMachineStats st;
    fy_machine_get_stats(src->m, &st);
    T_ASSERT(st.throttle_ns > 0);
    T_ASSERT(cvm_same(src, dst));
    cvm_free(src);
    cvm_free(dst);
}

static bool throttle_at_95(Cvm *vm)
{
    return cvm_qint(vm, "cpu-throttle-percentage", NULL, NULL) == 95;
}

static long long ring_rate(Cvm *vm)
{
    T_ASSERT(cvm_qmp_ok(vm, "calc-dirty-rate",
                        json_pack("{s:i,s:s}", "calc-time", 1, "mode",
                                  "dirty-ring")));
    T_ASSERT(fy_dirtyrate_wait(fy_migration_dirtyrate(vm->mig), 60000));
    json_t *q = cvm_qmp(vm, "query-dirty-rate", NULL, NULL);
    long long r = json_integer_value(json_object_get(q, "dirty-rate"));
    json_decref(q);
    return r;
}

/* The throttle lowers what the guest dirties. A paced vCPU, so that the
 * rate does not depend on how much CPU a loaded machine leaves it: it keeps
 * its pace between throttle sleeps up to 100 ms long (it catches up), but
 * at 95% it sleeps 190 ms per 10 ms slice and drops the stores it owes, so
 * it makes about 5% of them. An unpaced vCPU would show the throttle too,
 * but its rate swings tenfold with the machine's load. Ratios only. */
static void test_throttle_lowers_rate(void)
{
    FyMachineConfig c = cvm_config(FY_WORKLOAD_RANDOM, 1, 16, 40000);
    Cvm *src = cvm_new("src", &c), *dst = cvm_new("dst", &c);
    char path[128];

    start_warm(src);
    long long before = ring_rate(src);
    T_ASSERT(cvm_cap(src, "auto-converge", true));
    /* 8 MiB/s: even at 2000 stores/s a pass finds thousands of the 4096
     * pages dirty again, so it never converges and the throttle stays at
     * its maximum. */
    T_ASSERT(cvm_params(src, "{\"max-bandwidth\": 8388608, "
                        "\"downtime-limit\": 100, \"x-stall-iterations\": 0, "
                        "\"cpu-throttle-initial\": 95, "
                        "\"max-cpu-throttle\": 95}"));
    cvm_begin(src, dst, path, sizeof(path));
    T_ASSERT(cvm_wait(src, throttle_at_95, TIMEOUT_MS));
    T_EQ_INT(fy_migration_status(src->mig), MIGRATION_STATUS_ACTIVE);
    long long during = ring_rate(src);
    FyMigStatus s = fy_migration_status(src->mig);
    printf("# dirty rate %lld MB/s unthrottled, %lld MB/s at 95%% (%s)\n",
           before, during, fy_mig_status_name(s));
    T_ASSERT(before > 0);
    T_ASSERT(during * 2 < before);
    T_EQ_INT(s, MIGRATION_STATUS_ACTIVE);   /* measured while throttled */
    char *out = cvm_hmp(src, "info migrate");
    T_CONTAINS(out, "cpu throttle percentage: 95\n");
    T_CONTAINS(out, "cpu throttle: 95% now");
    T_CONTAINS(out, "dirty rate: ");
    free(out);

    T_ASSERT(cvm_params(src, "{\"max-bandwidth\": 0, "
                        "\"downtime-limit\": 2000}"));
    T_ASSERT(cvm_finish(src, dst, path, TIMEOUT_MS));
    T_EQ_INT(cvm_qint(src, "x-convergence", "throttle", "peak"), 95);
    T_EQ_INT(cvm_qint(src, "x-convergence", "throttle", "percentage"), 0);
    T_ASSERT(cvm_same(src, dst));
    /* The throttle ended with the migration. */
    cvm_start(src);
    long long after = ring_rate(src);
    printf("# %lld MB/s after the migration\n", after);
    T_ASSERT(after > 2 * during);
    cvm_free(src);
    cvm_free(dst);
}

/* ---- dirty-limit ---- */

static bool limits_applied(Cvm *vm)
{
    return cvm_qint(vm, "x-convergence", "dirty-limit", NULL) > 0;
}

static void test_dirty_limit_capability(void)
{
    FyMachineConfig c = nonconv_config();
    Cvm *src = cvm_new("src", &c), *dst = cvm_new("dst", &c);
    char path[128], *err = NULL;

    start_warm(src);
    T_ASSERT(cvm_cap(src, "dirty-limit", true));
    T_ASSERT(!cvm_cap(src, "auto-converge", true)); /* they conflict */
    T_ASSERT(cvm_params(src, "{\"max-bandwidth\": " BW_32M ", "
                        "\"downtime-limit\": 100, \"x-stall-iterations\": 0, "
                        "\"vcpu-dirty-limit\": 1, "
                        "\"x-vcpu-dirty-limit-period\": 200}"));
    cvm_begin(src, dst, path, sizeof(path));
    if (cvm_wait(src, limits_applied, TIMEOUT_MS) &&
        fy_migration_status(src->mig) == MIGRATION_STATUS_ACTIVE) {
        json_t *l = cvm_qmp(src, "query-vcpu-dirty-limit", NULL, NULL);
        T_EQ_INT(json_array_size(l), 2);
        T_EQ_INT(json_integer_value(json_object_get(json_array_get(l, 1),
                                                    "limit-rate")), 1);
        json_decref(l);
        T_ASSERT(!cvm_qmp(src, "cancel-vcpu-dirty-limit", NULL, &err));
        T_CONTAINS(err, "dirty-limit live migration is running");
        free(err);
        json_t *q = fy_migration_query(src->mig);
        T_ASSERT(json_is_integer(json_object_get(q,
                                 "dirty-limit-ring-full-time")));
        T_ASSERT(json_is_integer(json_object_get(q,
                                 "dirty-limit-throttle-time-per-round")));
        json_decref(q);
    }
    T_ASSERT(cvm_finish(src, dst, path, TIMEOUT_MS));
    T_ASSERT(cvm_qint(src, "x-convergence", "dirty-limit-sets", NULL) >= 1);
    /* The capability's limits end with the migration. */
    json_t *l = cvm_qmp(src, "query-vcpu-dirty-limit", NULL, NULL);
    T_EQ_INT(json_array_size(l), 0);
    json_decref(l);
    T_ASSERT(cvm_same(src, dst));
    cvm_free(src);
    cvm_free(dst);
}

/* ---- set-vcpu-dirty-limit ---- */

static void steps_over(Cvm *vm, int ms, uint64_t *d0, uint64_t *d1,
                       double *secs)
{
    uint64_t a0 = fy_machine_vcpu_steps(vm->m, 0);
    uint64_t a1 = fy_machine_vcpu_steps(vm->m, 1);
    uint64_t t0 = cvm_now_ms();
    cvm_sleep_ms(ms);
    *d0 = fy_machine_vcpu_steps(vm->m, 0) - a0;
    *d1 = fy_machine_vcpu_steps(vm->m, 1) - a1;
    *secs = (double)(cvm_now_ms() - t0) / 1000.0;
}

static void test_vcpu_dirty_limit(void)
{
    /* 8192 pages/s (32 MB/s) per vCPU; vCPU 0 limited to 2 MB/s. */
    FyMachineConfig c = cvm_config(FY_WORKLOAD_RANDOM, 2, 32, 16384);
    Cvm *vm = cvm_new("vm", &c);
    char *err = NULL, *out;
    uint64_t d0, d1;
    double secs;

    cvm_start(vm);
    T_ASSERT(!cvm_qmp(vm, "set-vcpu-dirty-limit",
                      json_pack("{s:i,s:i}", "cpu-index", 2, "dirty-rate", 2),
                      &err));
    T_CONTAINS(err, "incorrect cpu index specified");
    free(err);
    out = cvm_hmp(vm, "info vcpu_dirty_limit");
    T_CONTAINS(out, "Dirty page limit not enabled!");
    free(out);

    out = cvm_hmp(vm, "set_vcpu_dirty_limit 2 0");
    T_EQ_STR(out, "");
    free(out);
    cvm_sleep_ms(300);   /* the sampler measures a period */
    steps_over(vm, 1500, &d0, &d1, &secs);
    printf("# limited vCPU 0: %llu steps, vCPU 1: %llu steps in %.2f s\n",
           (unsigned long long)d0, (unsigned long long)d1, secs);
    /* 2 MB/s is 512 pages/s: never more (plus a batch of slack). */
    T_ASSERT((double)d0 <= 512.0 * secs * 1.1 + 64);
    T_ASSERT(d1 >= 4 * d0);
    json_t *l = cvm_qmp(vm, "query-vcpu-dirty-limit", NULL, NULL);
    T_EQ_INT(json_array_size(l), 1);
    json_t *e = json_array_get(l, 0);
    T_EQ_INT(json_integer_value(json_object_get(e, "cpu-index")), 0);
    T_EQ_INT(json_integer_value(json_object_get(e, "limit-rate")), 2);
    T_ASSERT(json_integer_value(json_object_get(e, "current-rate")) <= 2);
    json_decref(l);
    out = cvm_hmp(vm, "info vcpu_dirty_limit");
    T_CONTAINS(out, "vcpu[0], limit rate 2 (MB/s), current rate");
    free(out);

    out = cvm_hmp(vm, "cancel_vcpu_dirty_limit 0");
    free(out);
    l = cvm_qmp(vm, "query-vcpu-dirty-limit", NULL, NULL);
    T_EQ_INT(json_array_size(l), 0);
    json_decref(l);
    uint64_t limited = d0;
    steps_over(vm, 1000, &d0, &d1, &secs);
    T_ASSERT(d0 >= 4 * limited);
    cvm_free(vm);

    /* A vCPU that does not write is not slowed by a limit. */
    c = cvm_config(FY_WORKLOAD_IDLE, 2, 32, 0);
    vm = cvm_new("idle", &c);
    cvm_start(vm);
    T_ASSERT(cvm_qmp_ok(vm, "set-vcpu-dirty-limit",
                        json_pack("{s:i}", "dirty-rate", 1)));
    steps_over(vm, 1000, &d0, &d1, &secs);
    printf("# idle vCPUs under a 1 MB/s limit: %llu, %llu steps in %.2f s\n",
           (unsigned long long)d0, (unsigned long long)d1, secs);
    T_ASSERT((double)d0 > 256.0 * secs * 20 && (double)d1 > 256.0 * secs * 20);
    cvm_free(vm);
}

/* ---- calc-dirty-rate ---- */

static long long measure(Cvm *vm, const char *args_json, json_t **result)
{
    T_ASSERT(cvm_qmp_ok(vm, "calc-dirty-rate", json_loads(args_json, 0, NULL)));
    T_ASSERT(fy_dirtyrate_wait(fy_migration_dirtyrate(vm->mig), 60000));
    json_t *q = cvm_qmp(vm, "query-dirty-rate", NULL, NULL);
    long long r = json_integer_value(json_object_get(q, "dirty-rate"));
    printf("# %s -> %lld MB/s\n", args_json, r);
    if (result)
        *result = q;
    else
        json_decref(q);
    return r;
}

#define T_WITHIN(got, want, pct)                                            \
    do {                                                                    \
        double g_ = (double)(got), w_ = (double)(want);                     \
        if (fabs(g_ - w_) > w_ * (pct) / 100.0)                             \
            T_FAIL("%s = %.1f, expected %.1f within %d%%", #got, g_, w_,   \
                   (int)(pct));                                             \
    } while (0)

static void test_calc_dirty_rate(void)
{
    /* A sweep of 8192 pages/s over 64 MiB: each vCPU writes 4096 new pages
     * a second in its 32 MiB slice, so a one-second window sees 32 MB/s. */
    FyMachineConfig c = cvm_config(FY_WORKLOAD_SWEEP, 2, 64, 8192);
    Cvm *vm = cvm_new("vm", &c);
    json_t *q;

    cvm_start(vm);
    cvm_sleep_ms(200);
    T_WITHIN(measure(vm, "{\"calc-time\": 1, \"mode\": \"dirty-bitmap\"}",
                     NULL), 32, 10);
    T_WITHIN(measure(vm, "{\"calc-time\": 1, \"sample-pages\": 16384}", NULL),
             32, 10);
    T_WITHIN(measure(vm, "{\"calc-time\": 1, \"mode\": \"dirty-ring\"}", &q),
             32, 10);
    json_t *rates = json_object_get(q, "vcpu-dirty-rate");
    T_EQ_INT(json_array_size(rates), 2);
    for (size_t i = 0; i < json_array_size(rates); i++)
        T_WITHIN(json_integer_value(json_object_get(json_array_get(rates, i),
                                                    "dirty-rate")), 16, 10);
    json_decref(q);

    char *out = cvm_hmp(vm, "calc_dirty_rate -b 1");
    T_CONTAINS(out, "Starting dirty rate measurement with calc time 1 seconds");
    free(out);
    T_ASSERT(fy_dirtyrate_wait(fy_migration_dirtyrate(vm->mig), 60000));
    out = cvm_hmp(vm, "info dirty_rate");
    T_CONTAINS(out, "Status: measured");
    T_CONTAINS(out, "Mode: dirty-bitmap");
    T_CONTAINS(out, "Dirty rate: ");
    free(out);
    bool failed = false;
    out = fy_hmp_execute(vm->mon, "calc_dirty_rate -r -b 1", false, &failed);
    T_ASSERT(failed);
    T_CONTAINS(out, "Either dirty ring or dirty bitmap can be specified!");
    free(out);
    cvm_free(vm);
}

static bool iterating(Cvm *vm)
{
    return cvm_qint(vm, "ram", "dirty-sync-count", NULL) >= 2;
}

static void test_calc_during_migration(void)
{
    FyMachineConfig c = cvm_config(FY_WORKLOAD_SWEEP, 2, 64, 8192);
    Cvm *src = cvm_new("src", &c), *dst = cvm_new("dst", &c);
    char path[128];

    start_warm(src);
    /* 32 MB/s of dirtying against 16 MiB/s: it iterates until the test
     * lifts the bandwidth limit. */
    T_ASSERT(cvm_params(src, "{\"downtime-limit\": 50, \"max-bandwidth\": "
                        "16777216, \"x-stall-iterations\": 0}"));
    cvm_begin(src, dst, path, sizeof(path));
    T_ASSERT(cvm_wait(src, iterating, TIMEOUT_MS));
    /* The log modes borrow the migration's count instead of taking the
     * dirty log away from it. */
    long long r = measure(src, "{\"calc-time\": 1, \"mode\": \"dirty-bitmap\"}",
                          NULL);
    T_WITHIN(r, 32, 25);
    T_WITHIN(measure(src, "{\"calc-time\": 1, \"sample-pages\": 16384}", NULL),
             32, 10);
    T_EQ_INT(fy_migration_status(src->mig), MIGRATION_STATUS_ACTIVE);
    T_ASSERT(cvm_params(src, "{\"downtime-limit\": 2000, "
                        "\"max-bandwidth\": 0}"));
    T_ASSERT(cvm_finish(src, dst, path, TIMEOUT_MS));
    T_ASSERT(cvm_same(src, dst));
    cvm_free(src);
    cvm_free(dst);
}

/* ---- downtime ---- */

static void check_parts(Cvm *src, bool rp)
{
    json_t *q = fy_migration_query(src->mig);
    json_t *p = cvm_q(q, "x-convergence", "downtime-parts", NULL);
    char *s = json_dumps(p, JSON_COMPACT);
    printf("# downtime %lld ms, parts %s\n",
           (long long)json_integer_value(json_object_get(q, "downtime")), s);
    free(s);
    T_ASSERT(json_is_object(p));
    const char *keys_rp[] = { "stop", "final-ram", "device-state",
                              "destination-load", "start", NULL };
    const char *keys_no[] = { "stop", "final-ram", "device-state", "transfer",
                              NULL };
    double sum = 0;
    for (const char **k = rp ? keys_rp : keys_no; *k; k++) {
        json_t *v = json_object_get(p, *k);
        T_ASSERT(json_is_number(v));
        sum += json_number_value(v);
    }
    double total = json_number_value(json_object_get(p, "total"));
    T_ASSERT(fabs(sum - total) < 0.01);
    /* Two clocks over the same interval: ms rounding apart. */
    T_ASSERT(fabs(total - (double)json_integer_value(
                               json_object_get(q, "downtime"))) <= 2.5);
    T_EQ_INT(json_integer_value(json_object_get(p, "limit")), 300);
    T_ASSERT(json_integer_value(json_object_get(p, "expected")) > 0);
    T_ASSERT(json_integer_value(json_object_get(p, "device-bytes")) > 0);
    T_ASSERT(json_integer_value(json_object_get(p, "final-ram-bytes")) > 0);
    json_decref(q);

    char *out = cvm_hmp(src, "info migrate");
    T_CONTAINS(out, "downtime parts: stop ");
    T_CONTAINS(out, rp ? "destination load" : "transfer");
    free(out);
}

static void test_downtime_parts(void)
{
    FyMachineConfig c = cvm_config(FY_WORKLOAD_HOTSPOT, 2, 32, 2000);
    for (int rp = 1; rp >= 0; rp--) {
        Cvm *src = cvm_new("src", &c), *dst = cvm_new("dst", &c);
        char path[128];
        cvm_start(src);
        T_ASSERT(cvm_params(src, "{\"downtime-limit\": 300}"));
        if (rp)
            T_ASSERT(cvm_cap(src, "return-path", true));
        cvm_begin(src, dst, path, sizeof(path));
        T_ASSERT(cvm_finish(src, dst, path, TIMEOUT_MS));
        check_parts(src, rp);
        T_ASSERT(cvm_same(src, dst));
        cvm_free(src);
        cvm_free(dst);
    }
}

/* ---- parameters ---- */

static void test_parameters(void)
{
    FyMachineConfig c = cvm_config(FY_WORKLOAD_IDLE, 1, 4, 0);
    Cvm *vm = cvm_new("vm", &c);
    static const struct { const char *json, *err; } bad[] = {
        { "{\"cpu-throttle-initial\": 0}", "Parameter 'cpu_throttle_initial' "
          "expects an integer in the range of 1 to 99" },
        { "{\"cpu-throttle-increment\": 100}", "Parameter "
          "'cpu_throttle_increment' expects an integer in the range of 1 to 99" },
        { "{\"max-cpu-throttle\": 100}", "Parameter 'max_cpu_throttle' expects "
          "an integer in the range of 1 to 99" },
        { "{\"throttle-trigger-threshold\": 101}", "Parameter "
          "'throttle_trigger_threshold' expects an integer in the range of 1 "
          "to 100" },
        { "{\"cpu-throttle-tailslow\": 1}", "Parameter 'cpu-throttle-tailslow' "
          "expects a boolean" },
        { "{\"x-vcpu-dirty-limit-period\": 1001}", "Parameter "
          "'x-vcpu-dirty-limit-period' expects a value between 1 and 1000" },
        { "{\"vcpu-dirty-limit\": 0}", "Parameter 'vcpu_dirty_limit' must be "
          "greater than 1 MB/s" },
        { "{\"x-stall-action\": \"panic\"}", "Parameter 'x-stall-action' does "
          "not accept value 'panic'" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *err = NULL;
        T_ASSERT(!cvm_qmp(vm, "migrate-set-parameters",
                          json_loads(bad[i].json, 0, NULL), &err));
        T_EQ_STR(err, bad[i].err);
        free(err);
    }
    json_t *p = cvm_qmp(vm, "query-migrate-parameters", NULL, NULL);
    T_EQ_INT(json_integer_value(json_object_get(p, "cpu-throttle-initial")), 20);
    T_EQ_INT(json_integer_value(json_object_get(p, "cpu-throttle-increment")),
             10);
    T_ASSERT(json_is_false(json_object_get(p, "cpu-throttle-tailslow")));
    T_EQ_INT(json_integer_value(json_object_get(p, "max-cpu-throttle")), 99);
    T_EQ_INT(json_integer_value(json_object_get(p,
                                "throttle-trigger-threshold")), 50);
    T_EQ_INT(json_integer_value(json_object_get(p, "vcpu-dirty-limit")), 1);
    T_EQ_INT(json_integer_value(json_object_get(p,
                                "x-vcpu-dirty-limit-period")), 1000);
    T_EQ_STR(json_string_value(json_object_get(p, "x-stall-action")), "none");
    json_decref(p);

    char *out = cvm_hmp(vm, "migrate_set_parameter cpu-throttle-tailslow on");
    free(out);
    out = cvm_hmp(vm, "migrate_set_parameter x-stall-action postcopy");
    free(out);
    out = cvm_hmp(vm, "info migrate_parameters");
    T_CONTAINS(out, "cpu-throttle-tailslow: on\n");
    T_CONTAINS(out, "x-stall-action: postcopy\n");
    T_CONTAINS(out, "vcpu-dirty-limit: 1 MB/s\n");
    free(out);
    cvm_free(vm);
}

int main(void)
{
    T_RUN(test_parameters);
    T_RUN(test_vcpu_dirty_limit);
    T_RUN(test_calc_dirty_rate);
    T_RUN(test_downtime_parts);
    T_RUN(test_auto_converge);
    T_RUN(test_throttle_lowers_rate);
    T_RUN(test_dirty_limit_capability);
    T_RUN(test_stall_then_escalate);
    T_RUN(test_stall_to_postcopy);
    T_RUN(test_calc_during_migration);
    return t_done();
}
