/*
 * clock.h: the guest clock ("clock" device).
 *
 * Guest time in ns that runs only while the VM runs:
 *
 *   running:  guest = host_monotonic + offset
 *   stopped:  guest = ns (frozen at stop)
 *
 * stop freezes `ns`; start sets offset = ns - host_now, so the clock resumes
 * from where it stopped with no jump. `ns` is the migrated field: the
 * destination's post_load rebases on its own host clock, so guest time goes
 * on from the source's value even across hosts.
 */
#ifndef FERRY_MACHINE_CLOCK_H
#define FERRY_MACHINE_CLOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "ferry/vmstate.h"

typedef struct FyClock {
    uint64_t ns;            /* migrated: guest time when last stopped */
    int64_t offset;         /* (lock) guest - host while running */
    bool running;           /* (lock) */
    pthread_mutex_t lock;
} FyClock;

extern const VMStateDescription vmstate_clock;

void fy_clock_init(FyClock *c);
void fy_clock_destroy(FyClock *c);
uint64_t fy_clock_get_ns(FyClock *c);
void fy_clock_start(FyClock *c);
void fy_clock_stop(FyClock *c);

/* CLOCK_MONOTONIC in ns. */
uint64_t fy_host_ns(void);

#endif
