/*
 * throttle.c: auto-converge's arithmetic, QEMU's rules (migration/ram.c:
 * migration_trigger_throttle, mig_throttle_guest_down), written afresh.
 *
 * Trigger, once per period of at least a second of dirty syncs:
 *   dirty_threshold = bytes sent in the period x throttle-trigger-threshold%
 *   dirtied > dirty_threshold  -> high_count++; at 2 it fires and resets
 * (high_count is not reset by a calm period, as in QEMU: two bad periods
 * out of any number fire.)
 *
 * Step, when it fires:
 *   off                 -> cpu-throttle-initial
 *   on, no tailslow     -> now + cpu-throttle-increment
 *   on, tailslow        -> now + min(increment, cpu_now - cpu_ideal), where
 *                          cpu_now = 100 - now and cpu_ideal = cpu_now x
 *                          dirty_threshold / dirtied: the CPU share that
 *                          would have dirtied just the threshold
 *   never above max-cpu-throttle
 */
#include "migration/converge.h"

bool fy_throttle_trigger(FyThrottleTrigger *t, uint64_t dirty_bytes,
                         uint64_t xfer_bytes, uint64_t threshold_pct,
                         uint64_t *dirty_threshold)
{
    *dirty_threshold = xfer_bytes / 100 * threshold_pct +
                       xfer_bytes % 100 * threshold_pct / 100;
    if (dirty_bytes <= *dirty_threshold)
        return false;
    if (++t->high_count < 2)
        return false;
    t->high_count = 0;
    return true;
}

int fy_throttle_next(const FyThrottleParams *p, int now, uint64_t dirty,
                     uint64_t threshold)
{
    int next;
    if (now <= 0) {
        next = p->initial;
    } else {
        int inc = p->increment;
        if (p->tailslow && dirty) {
            /* QEMU's integer arithmetic: the ideal share is truncated. */
            uint64_t cpu_now = (uint64_t)(100 - now);
            uint64_t cpu_ideal = (uint64_t)((double)cpu_now *
                                            ((double)threshold / (double)dirty));
            uint64_t room = cpu_ideal < cpu_now ? cpu_now - cpu_ideal : 0;
            if (room < (uint64_t)inc)
                inc = (int)room;
        }
        next = now + inc;
    }
    return next > p->max ? p->max : next;
}
