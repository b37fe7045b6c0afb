/*
 * test_throttle.c: the arithmetic of auto-converge and of the downtime
 * model, without a VM: QEMU's trigger and step rules, and the switchover
 * threshold with its fixed costs.
 */
#include "migration/converge.h"
#include "t.h"

static void test_trigger(void)
{
    FyThrottleTrigger t = { 0 };
    uint64_t thr;

    /* 50% of 1000 sent: 500; dirtying 500 is not more than that. */
    T_ASSERT(!fy_throttle_trigger(&t, 500, 1000, 50, &thr));
    T_EQ_INT(thr, 500);
    T_EQ_INT(t.high_count, 0);
    T_ASSERT(!fy_throttle_trigger(&t, 501, 1000, 50, &thr));
    T_EQ_INT(t.high_count, 1);
    /* a calm period does not reset the count (QEMU's rule) */
    T_ASSERT(!fy_throttle_trigger(&t, 10, 1000, 50, &thr));
    T_ASSERT(fy_throttle_trigger(&t, 900, 1000, 50, &thr));
    T_EQ_INT(t.high_count, 0);
    /* no overflow on huge byte counts */
    T_ASSERT(!fy_throttle_trigger(&t, UINT64_MAX / 2, UINT64_MAX, 100, &thr));
    T_ASSERT(thr > UINT64_MAX / 2);
}

static void test_steps(void)
{
    FyThrottleParams p = { .initial = 20, .increment = 10, .max = 99 };
    T_EQ_INT(fy_throttle_next(&p, 0, 1000, 500), 20);
    T_EQ_INT(fy_throttle_next(&p, 20, 1000, 500), 30);
    T_EQ_INT(fy_throttle_next(&p, 95, 1000, 500), 99);
    p.max = 50;
    T_EQ_INT(fy_throttle_next(&p, 45, 1000, 500), 50);
    T_EQ_INT(fy_throttle_next(&p, 0, 1000, 500), 20);

    /* tailslow: cpu_now 80, ideal 80 x 900/1000 = 72: +8 instead of +10 */
    p = (FyThrottleParams){ .initial = 20, .increment = 10, .max = 99,
                            .tailslow = true };
    T_EQ_INT(fy_throttle_next(&p, 20, 1000, 900), 28);
    /* far from ideal: the increment caps it */
    T_EQ_INT(fy_throttle_next(&p, 20, 1000, 100), 30);
    /* initial is not slowed */
    T_EQ_INT(fy_throttle_next(&p, 0, 1000, 999), 20);
}

static void test_downtime_model(void)
{
    FyDowntimeModel d;
    fy_downtime_model_init(&d);
    fy_downtime_model_new_run(&d);

    /* 100 KB/ms (~100 MB/s), limit 300 ms, fixed 1+1+1+1 = 4 ms (stop,
     * sync, destination tail, start), extra = 64 KiB device state (no
     * dirtying yet). */
    uint64_t thr = fy_downtime_window(&d, 100000, true, 0, 0, 300);
    T_EQ_INT(thr, (uint64_t)(100000.0 * (300 - 4) - 65536));
    T_ASSERT(!d.unreachable);
    /* QEMU would allow 30,000,000 bytes: the costs are taken off */
    T_ASSERT(thr < 30000000);
    fy_downtime_window(&d, 100000, true, 0, 10000000, 300);
    T_EQ_INT(d.expected_ms, (uint64_t)(4 + (10000000.0 + 65536) / 100000 + 0.5));

    /* An idle window does not drag the bandwidth down: only busy windows
     * count, and of those the median. */
    fy_downtime_window(&d, 10, false, 0, 0, 300);
    T_ASSERT(d.bw_used == 100000);
    fy_downtime_window(&d, 50000, true, 0, 0, 300);
    fy_downtime_window(&d, 60000, true, 0, 0, 300);
    T_ASSERT(d.bw_used == 80000);     /* median of 100k, 100k, 50k, 60k */
    fy_downtime_window(&d, 100000, true, 0, 0, 300);
    T_ASSERT(d.bw_used == 100000);
    /* Before any busy window: the best recent one. */
    FyDowntimeModel e;
    fy_downtime_model_init(&e);
    fy_downtime_window(&e, 10, false, 0, 0, 300);
    fy_downtime_window(&e, 30, false, 0, 0, 300);
    T_ASSERT(e.bw_used == 30);
    T_EQ_INT(fy_downtime_estimate(&e, 0, 1000), 0);

    /* The guest dirties 1000 bytes/ms: what it writes during the final
     * sync and the stop (1 + 1 ms) is counted too. */
    d.dirty_bpms = 1000;
    uint64_t thr2 = fy_downtime_window(&d, 100000, true, 0, 0, 300);
    T_EQ_INT(thr - thr2, 2000);

    /* avail-switchover-bandwidth replaces the measurement */
    fy_downtime_window(&d, 100000, true, 50000, 0, 300);
    T_ASSERT(d.bw_used == 50000);

    /* fixed costs over the limit: nothing may be left */
    T_EQ_INT(fy_downtime_window(&d, 100000, true, 0, 0, 4), 0);
    T_ASSERT(d.unreachable);
}

static void test_learn(void)
{
    FyDowntimeModel d;
    fy_downtime_model_init(&d);
    FyDowntimeParts p = { .valid = true, .rp = true };
    p.t_stop = 1000;
    p.t_stopped = 9000;        /* 8 ms */
    p.t_begin = 9000;
    p.t_ram = 10000;
    p.t_dev = 11000;
    p.t_sent = 11000;
    p.t_pong = 15000;          /* 4 ms */
    p.t_end = 16000;           /* 1 ms */
    p.device_bytes = 1000;
    fy_downtime_learn(&d, &p);
    T_ASSERT(d.stop_ms == 8.0);               /* slower: believed at once */
    T_ASSERT(d.dest_ms == 4.0);
    T_ASSERT(d.start_ms == 1.0);              /* same as the default */
    T_ASSERT(d.device_bytes == (1000 + 65536) / 2.0);  /* faster: halfway */

    json_t *j = fy_downtime_parts_json(&p);
    T_ASSERT(json_real_value(json_object_get(j, "stop")) == 8.0);
    T_ASSERT(json_real_value(json_object_get(j, "destination-load")) == 4.0);
    T_ASSERT(json_real_value(json_object_get(j, "total")) == 15.0);
    T_ASSERT(!json_object_get(j, "transfer"));
    json_decref(j);
}

int main(void)
{
    T_RUN(test_trigger);
    T_RUN(test_steps);
    T_RUN(test_downtime_model);
    T_RUN(test_learn);
    return t_done();
}
