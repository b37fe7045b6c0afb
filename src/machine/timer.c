/*
 * timer.c: "ferry-timer", the versioned device. See timer.h.
 *
 * Expiry: while EN, the timer expires when the guest clock reaches
 * expire_ns. A periodic timer moves expire_ns on by whole periods (if the
 * host fell far behind, the missed expiries are counted at once, as a guest
 * would see after a long stall); a one-shot timer clears EN.
 */
#include <inttypes.h>
#include <string.h>

#include "machine/timer.h"

/* A loaded deadline further than this beyond the guest clock is nonsense. */
#define TIMER_MAX_AHEAD_NS (3600ull * 1000000000ull)

void fy_timer_init(FyTimer *t, FyClock *clock)
{
    memset(t, 0, sizeof(*t));
    t->clock = clock;
}

void fy_timer_program(FyTimer *t, uint64_t now, uint64_t period_ns, bool periodic)
{
    if (period_ns == 0) {
        t->ctrl = 0;
        return;
    }
    if (period_ns < FY_TIMER_MIN_PERIOD_NS)
        period_ns = FY_TIMER_MIN_PERIOD_NS;
    t->period_ns = period_ns;
    t->expire_ns = now + period_ns;
    t->ctrl = FY_TIMER_EN | (periodic ? FY_TIMER_PERIODIC : 0);
}

uint32_t fy_timer_ack(FyTimer *t)
{
    uint32_t p = t->pending;
    t->pending = 0;
    t->pending_since_ns = 0;
    return p;
}

void fy_timer_run(FyTimer *t, uint64_t now)
{
    if (!(t->ctrl & FY_TIMER_EN) || now < t->expire_ns)
        return;
    uint64_t n = 1;
    if (t->ctrl & FY_TIMER_PERIODIC) {
        n += (now - t->expire_ns) / t->period_ns;
        t->expire_ns += n * t->period_ns;
    } else {
        t->ctrl &= ~FY_TIMER_EN;
    }
    if (t->pending == 0)
        t->pending_since_ns = now;
    t->fired += n;
    t->pending = (t->pending + n > UINT32_MAX) ? UINT32_MAX : (uint32_t)(t->pending + n);
}

uint64_t fy_timer_deadline(const FyTimer *t)
{
    return (t->ctrl & FY_TIMER_EN) ? t->expire_ns : UINT64_MAX;
}

uint64_t fy_timer_count(const FyTimer *t, uint64_t now)
{
    if (!(t->ctrl & FY_TIMER_EN) || now >= t->expire_ns)
        return 0;
    return t->expire_ns - now;
}

/* The guest reads `count` from the clock; latch it as of the save. */
static int timer_pre_save(void *opaque, FyError **errp)
{
    FyTimer *t = opaque;
    t->count = fy_timer_count(t, fy_clock_get_ns(t->clock));
    return 0;
}

/* The subsection carries pending: without it, nothing is pending. */
static int timer_pre_load(void *opaque, FyError **errp)
{
    FyTimer *t = opaque;
    t->pending = 0;
    t->pending_since_ns = 0;
    return 0;
}

static int timer_post_load(void *opaque, int version_id, FyError **errp)
{
    FyTimer *t = opaque;
    if (t->ctrl & ~FY_TIMER_CTRL_MASK) {
        fy_error_setg(errp, "ferry-timer: unknown ctrl bits 0x%" PRIx32, t->ctrl);
        return -1;
    }
    if ((t->ctrl & FY_TIMER_EN) && (t->ctrl & FY_TIMER_PERIODIC) &&
        t->period_ns < FY_TIMER_MIN_PERIOD_NS) {
        fy_error_setg(errp, "ferry-timer: periodic with period %" PRIu64
                      " ns (minimum %u)", t->period_ns, FY_TIMER_MIN_PERIOD_NS);
        return -1;
    }
    uint64_t now = fy_clock_get_ns(t->clock);
    if ((t->ctrl & FY_TIMER_EN) && t->expire_ns > now &&
        t->expire_ns - now > TIMER_MAX_AHEAD_NS) {
        fy_error_setg(errp, "ferry-timer: deadline %" PRIu64 " ns is more than "
                      "an hour past the guest clock (%" PRIu64 " ns)",
                      t->expire_ns, now);
        return -1;
    }
    /* Version 2 had no count register: derive it as the guest would read it. */
    if (version_id < 3)
        t->count = fy_timer_count(t, now);
    return 0;
}

static bool timer_pending_needed(void *opaque)
{
    const FyTimer *t = opaque;
    return t->pending != 0;
}

static const VMStateDescription vmstate_ferry_timer_pending = {
    .name = "ferry-timer/pending",
    .version_id = 1,
    .minimum_version_id = 1,
    .needed = timer_pending_needed,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32(pending, FyTimer),
        VMSTATE_UINT64(pending_since_ns, FyTimer),
        VMSTATE_END_OF_LIST()
    },
};

const VMStateDescription vmstate_ferry_timer = {
    .name = "ferry-timer",
    .version_id = 3,
    .minimum_version_id = 2,
    .pre_save = timer_pre_save,
    .pre_load = timer_pre_load,
    .post_load = timer_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32(ctrl, FyTimer),
        VMSTATE_UINT64(period_ns, FyTimer),
        VMSTATE_UINT64(expire_ns, FyTimer),
        VMSTATE_UINT64(fired, FyTimer),
        VMSTATE_UINT64_V(count, FyTimer, 3),
        VMSTATE_END_OF_LIST()
    },
    .subsections = (const VMStateDescription *const[]) {
        &vmstate_ferry_timer_pending,
        NULL
    },
};
