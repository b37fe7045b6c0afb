/*
 * cpu.h: a software vCPU and its architectural state (VMState "cpu").
 *
 * The architectural part is what a guest program would keep in registers:
 * the step counter, the PRNG (xorshift128+), the position in the slice, a
 * register file, the hot set, and the console driver's line in progress.
 * All of it is touched only by the vCPU's own thread while it runs, and by
 * save/load while the machine is stopped.
 *
 * Deterministic part: index, workload, slice, steps, rng, pos, hot set and
 * regs[] depend only on (config, seed, steps). Timing-dependent part:
 * ticks (timer expiries seen) and the console fields (how fast the UART
 * drained decides when the next line could start).
 *
 * Register file: r0 last value stored, r1 last guest page (linear index),
 * r2 sweep passes / hotspot hot hits, r3 XOR of every value stored; the
 * rest are reserved (zero).
 */
#ifndef FERRY_MACHINE_CPU_H
#define FERRY_MACHINE_CPU_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ferry/machine.h"
#include "ferry/vmstate.h"

#define FY_CPU_NREGS 16
#define FY_CON_LINE 64
/* Steps between stop checks: short enough for sub-millisecond stops. */
#define FY_VCPU_BATCH 256

struct FyMachine;

typedef struct FyVCpu {
    /* ---- architectural state, migrated ---- */
    uint32_t index;
    uint32_t workload;
    uint64_t slice_start;       /* linear guest page */
    uint64_t slice_pages;
    uint64_t steps;
    uint64_t rng[2];
    uint64_t pos;               /* page within the slice */
    uint64_t hot_start;         /* hotspot: linear guest page */
    uint64_t hot_pages;
    uint64_t regs[FY_CPU_NREGS];
    uint64_t ticks;
    uint64_t con_next;          /* vCPU 0: step of the next progress line */
    uint8_t con_len;            /* bytes in con_buf */
    uint8_t con_pos;            /* bytes of con_buf already in the UART */
    uint8_t con_buf[FY_CON_LINE];

    /* ---- host side ---- */
    struct FyMachine *m;
    pthread_t thread;
    bool thread_started;
    uint64_t target;            /* (m->lock) park at this step count */
    bool parked;                /* (m->lock) */
    uint64_t acks;              /* vCPU thread: batches since the last timer ack */
    _Atomic uint64_t steps_pub; /* steps, published at every batch end */
    _Atomic uint64_t batch_seq; /* odd while a batch runs (dirty log arming) */
    _Atomic uint64_t limit_pps; /* dirty limit in pages/s, 0 = none */
    _Atomic uint64_t stat_stores, stat_throttle_ns, stat_pace_ns, stat_run_ns;
} FyVCpu;

extern const VMStateDescription vmstate_cpu;

/* Architectural reset: slice and hot set from the config, PRNG from the
 * seed and the index. */
void fy_cpu_reset(FyVCpu *v, const FyMachineConfig *c, uint32_t index,
                  uint64_t slice_start, uint64_t slice_pages);
/* The thread body (arg: FyVCpu *). */
void *fy_vcpu_thread(void *arg);

/* xorshift128+ */
static inline uint64_t fy_rng_next(uint64_t s[2])
{
    uint64_t x = s[0];
    const uint64_t y = s[1];
    s[0] = y;
    x ^= x << 23;
    s[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
    return s[1] + y;
}

uint64_t fy_splitmix64(uint64_t *state);

#endif
