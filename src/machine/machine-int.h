/*
 * machine-int.h: the FyMachine object, shared by the files of src/machine.
 *
 * Threads: N vCPU threads, one I/O thread (UART transmitter and timer
 * expiry, like QEMU's main loop), and callers (the migration thread, the
 * monitor, tests).
 *
 * Locks (taken in this order): lock (run control), dev_lock (serial and
 * timer registers, dev_running), clock.lock.
 *
 * Run control, under lock:
 *   running   the machine is started
 *   go        atomic mirror of running that vCPUs poll between batches
 *   parked    per vCPU: acknowledged a stop (or reached its target)
 * stop clears go and running, wakes sleeping vCPUs through `cond`, and waits
 * on `parked_cond` until every vCPU is parked; only then does it stop the
 * devices. start does the reverse: devices first, then vCPUs.
 */
#ifndef FERRY_MACHINE_INT_H
#define FERRY_MACHINE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "ferry/machine.h"
#include "machine/chardev.h"
#include "machine/clock.h"
#include "machine/cpu.h"
#include "machine/dirty.h"
#include "machine/serial.h"
#include "machine/timer.h"
#include "machine/workload.h"

struct FyMachine {
    FyMachineConfig cfg;

    /* RAM */
    int nblocks;
    FyRamBlock blocks[FY_MACHINE_MAX_RAM];
    FyRamList list;
    FyGuestMap gmap;
    uint64_t ws_pages;          /* working set in pages */
    FyDirtyTracker *dirty;

    /* vCPUs */
    int nvcpus;
    FyVCpu *vcpus;
    pthread_mutex_t lock;
    pthread_cond_t cond;        /* CLOCK_MONOTONIC: vCPU wake-ups and sleeps */
    pthread_cond_t parked_cond;
    bool running;               /* (lock) */
    bool quit;                  /* (lock) */
    atomic_bool go;
    atomic_bool soft_log;       /* vCPUs mark the software bitmap */
    atomic_bool dirty_on;       /* between dirty_log_start and _stop */
    atomic_int throttle_pct;

    /* devices */
    pthread_mutex_t dev_lock;
    pthread_cond_t dev_cond;    /* CLOCK_MONOTONIC: wakes the I/O thread */
    bool dev_running;           /* (dev_lock) */
    bool io_quit;               /* (dev_lock) */
    FySerial serial;
    FyClock clock;
    FyTimer timer;
    FyChardev *chr;
    pthread_t io_thread;
    bool io_started;
};

/* ram.c */
int fy_machine_ram_create(FyMachine *m, FyError **errp);
void fy_machine_ram_destroy(FyMachine *m);

/* iothread.c */
void *fy_iothread(void *arg);

/* vcpu.c: sleep until the host deadline unless the machine stops first.
 * Returns false if it was interrupted by a stop. */
bool fy_vcpu_sleep_until(FyVCpu *v, uint64_t deadline_ns);

/* machine.c: wait until no vCPU is in a batch that began before now (used
 * when arming the software dirty log and after harvesting it). */
void fy_machine_quiesce_batches(FyMachine *m);

/* Absolute CLOCK_MONOTONIC deadline for pthread_cond_timedwait. */
struct timespec fy_ns_to_timespec(uint64_t ns);

#endif
