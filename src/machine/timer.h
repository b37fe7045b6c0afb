/*
 * timer.h: "ferry-timer", a one-channel guest timer on the guest clock, and
 * the machine's example of a versioned device.
 *
 * The guest programs ctrl (EN, PERIODIC) and period_ns; the I/O thread
 * expires it: each expiry bumps `fired` and `pending` (unacknowledged
 * expiries); the guest acknowledges (reads and clears pending) now and then,
 * so pending is non-zero some of the time.
 *
 * VMState "ferry-timer", version 3 (minimum 2):
 *   ctrl, period_ns, expire_ns, fired, count (v3 only: ns to the next
 *   expiry, latched by pre_save as the guest would read it);
 *   subsection "ferry-timer/pending", needed while pending != 0: pending,
 *   pending_since_ns. pre_load clears pending so a stream without the
 *   subsection means "nothing pending"; post_load validates (no unknown
 *   ctrl bits, no enabled periodic timer with period 0, deadlines within
 *   reach) and recomputes count for a version 2 stream.
 */
#ifndef FERRY_MACHINE_TIMER_H
#define FERRY_MACHINE_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/vmstate.h"
#include "machine/clock.h"

#define FY_TIMER_EN       0x1u
#define FY_TIMER_PERIODIC 0x2u
#define FY_TIMER_CTRL_MASK (FY_TIMER_EN | FY_TIMER_PERIODIC)
/* The shortest period the guest may program (keeps the I/O thread sane). */
#define FY_TIMER_MIN_PERIOD_NS 10000u

typedef struct FyTimer {
    /* migrated */
    uint32_t ctrl;
    uint64_t period_ns;
    uint64_t expire_ns;        /* guest clock deadline while EN */
    uint64_t fired;
    uint64_t count;            /* v3 */
    uint32_t pending;          /* subsection */
    uint64_t pending_since_ns; /* subsection: guest time of the oldest pending expiry */
    /* host side */
    FyClock *clock;
} FyTimer;

extern const VMStateDescription vmstate_ferry_timer;

void fy_timer_init(FyTimer *t, FyClock *clock);
/* Guest: program (period 0 disables). */
void fy_timer_program(FyTimer *t, uint64_t now, uint64_t period_ns, bool periodic);
/* Guest: acknowledge; returns the expiries that were pending. */
uint32_t fy_timer_ack(FyTimer *t);
/* I/O thread: expire at guest time now. */
void fy_timer_run(FyTimer *t, uint64_t now);
/* Guest time of the next expiry, or UINT64_MAX. */
uint64_t fy_timer_deadline(const FyTimer *t);
/* The value of `count` at guest time now. */
uint64_t fy_timer_count(const FyTimer *t, uint64_t now);

#endif
