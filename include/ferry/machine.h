/*
 * machine.h: the reference VM that embeds the engine.
 *
 * A FyMachine owns guest RAM (memfd-backed RAM blocks, "pc.ram" first), N
 * software vCPUs that run a workload, and three devices: a 16550-style UART
 * ("serial"), a guest clock ("clock") and a versioned timer ("ferry-timer").
 * Hardware virtualization is not usable on the machines ferry runs on, so a
 * vCPU is a thread that plays a guest program: one "step" is one 64-bit store
 * into guest RAM (or, for `idle`, one tick of nothing).
 *
 * Determinism: vCPU i writes only its own slice of the working set, and each
 * store depends only on the vCPU's own state (step counter, PRNG, position).
 * So the RAM after every vCPU has run S steps is a pure function of
 * (config, seed, S), whatever the timing, and a destination that loads the
 * vCPU state continues exactly where the source stopped.
 *
 * Lifecycle (one machine, any thread; functions are not re-entrant with
 * each other for one machine unless noted):
 *
 *   new --> STOPPED --start--> RUNNING --stop--> STOPPED --free
 *              |                                    ^
 *              +----run_until(S): runs, parks-------+
 *
 * A new machine is stopped (like QEMU's -S). stop returns only once every
 * vCPU is parked and devices are quiescent, so RAM and device state do not
 * change until the next start. Save device state (VMState), dump it as JSON
 * and digest RAM only while stopped.
 *
 * Migration drives the machine through fy_machine_vm_ops(): stop, start,
 * dirty logging ("bitmap": the vCPUs set bits in a software dirty bitmap;
 * "uffd-wp": userfaultfd asynchronous write-protect harvested with
 * PAGEMAP_SCAN), CPU throttling and a per-vCPU dirty limit.
 */
#ifndef FERRY_MACHINE_H
#define FERRY_MACHINE_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/ramblock.h"
#include "ferry/savevm.h"

struct json_t;

/* The machine type to give fy_savevm_new() (checked against the peer). */
#define FY_MACHINE_TYPE "ferry-ref-1.0"

#define FY_MACHINE_MAX_RAM   8
#define FY_MACHINE_MAX_VCPUS 64
/* A RAM digest: 128 bits as 32 lowercase hex digits and a NUL. */
#define FY_MACHINE_DIGEST_LEN 33

typedef enum FyWorkload {
    FY_WORKLOAD_IDLE,    /* steps advance at a slow pace, nothing is written */
    FY_WORKLOAD_SWEEP,   /* +1 to a u64 counter in every page of the slice, in order */
    FY_WORKLOAD_RANDOM,  /* a PRNG value to a uniformly random page of the slice */
    FY_WORKLOAD_HOTSPOT, /* 90% of stores to a hot 1/16 of the slice, the rest anywhere */
} FyWorkload;

typedef enum FyDirtyTrack {
    FY_DIRTY_BITMAP,     /* software dirty bitmap set by the vCPUs */
    FY_DIRTY_UFFD_WP,    /* userfaultfd async write-protect + PAGEMAP_SCAN */
} FyDirtyTrack;

typedef struct FyMachineRamConfig {
    char idstr[64];
    uint64_t size;       /* bytes, a non-zero multiple of 4 KiB */
    int fd;              /* -1: create a memfd; else map this memfd (dup'ed) */
    /* Private anonymous memory instead of a memfd (QEMU's memory-backend-ram):
     * marked for transparent huge pages, so a destination filling fresh RAM
     * takes one fault per 2 MiB instead of per 4 KiB; but it has no fd, so
     * the block cannot be handed over (cpr-transfer). Ignored when fd >= 0. */
    bool anon;
    /* Allocate every page at creation (QEMU's prealloc=on / -mem-prealloc),
     * so that neither the guest nor an incoming migration takes a fault. */
    bool prealloc;
} FyMachineRamConfig;

typedef struct FyMachineConfig {
    int nr_ram;
    FyMachineRamConfig ram[FY_MACHINE_MAX_RAM];
    int vcpus;                  /* 1..FY_MACHINE_MAX_VCPUS */
    FyWorkload workload;
    uint64_t seed;
    /* The first working_set bytes of guest RAM (the blocks laid end to end
     * in config order) are written; 0 = all RAM. Split evenly between the
     * vCPUs, each owning one slice. Rounded down to whole pages. */
    uint64_t working_set;
    /* Machine-wide pace in stores (pages) per second, split evenly between
     * the vCPUs; 0 = as fast as the host goes (idle: 256k steps/s). */
    uint64_t dirty_rate;
    /* Serial backend: "none", "stdio", "file:PATH" or "unix:PATH" (connect
     * to a listening AF_UNIX stream socket). */
    char serial[512];
    /* vCPU 0 prints a progress line through the UART every this many steps;
     * 0 = never. */
    uint64_t serial_every;
    FyDirtyTrack dirty_track;
    /* The guest runs ferry-timer periodically with this period; 0 = off. */
    uint64_t timer_period_ns;
} FyMachineConfig;

/* Defaults: one 64 MiB "pc.ram", 1 vCPU, sweep, seed 1, working set all of
 * RAM, no pacing, serial "none", a line every 2^24 steps, bitmap tracking,
 * a 1 ms timer. */
void fy_machine_config_init(FyMachineConfig *c);
/* Append a RAM block (the default "pc.ram" stays first; change its size in
 * c->ram[0].size). Fails on a duplicate or invalid idstr, a bad size, or
 * more than FY_MACHINE_MAX_RAM blocks. */
int fy_machine_config_add_ram(FyMachineConfig *c, const char *idstr,
                              uint64_t size, FyError **errp);

/* "64M", "2G", "4096", "1T", "16KiB": binary suffixes K M G T, optionally
 * followed by "iB" or "B". */
int fy_parse_size(const char *s, uint64_t *out, FyError **errp);
/* A dirty rate: "N[KMG][B]" bytes per second (rounded to pages), or "Np"
 * pages per second. Returns pages per second in *pages_per_sec. */
int fy_parse_dirty_rate(const char *s, uint64_t *pages_per_sec, FyError **errp);
int fy_workload_parse(const char *name, FyWorkload *out, FyError **errp);
const char *fy_workload_name(FyWorkload w);
int fy_dirty_track_parse(const char *name, FyDirtyTrack *out, FyError **errp);
const char *fy_dirty_track_name(FyDirtyTrack t);

typedef struct FyMachine FyMachine;

/* Creates RAM (never touched: untouched pages stay holes in the memfd),
 * devices in their reset state, the dirty tracker and the threads, all
 * parked. Errors say which block/backend failed and why. */
FyMachine *fy_machine_new(const FyMachineConfig *c, FyError **errp);
/* Stops the machine, joins its threads, unmaps RAM. NULL is a no-op. */
void fy_machine_free(FyMachine *m);
const FyMachineConfig *fy_machine_config(const FyMachine *m);

int fy_machine_start(FyMachine *m, FyError **errp);
/* Returns once every vCPU is parked (sub-millisecond: vCPUs check for a
 * stop every 256 steps and sleep interruptibly) and the devices stopped. */
int fy_machine_stop(FyMachine *m, FyError **errp);
bool fy_machine_is_running(FyMachine *m);

/* Run every vCPU to exactly `steps` steps and park it; the machine must be
 * stopped and returns stopped. Fails if a vCPU is already past `steps`. */
int fy_machine_run_until(FyMachine *m, uint64_t steps, FyError **errp);

int fy_machine_vcpu_count(const FyMachine *m);
/* A vCPU's step counter (any time, any thread; exact while stopped). */
uint64_t fy_machine_vcpu_steps(FyMachine *m, int vcpu);
/* The guest clock in ns: frozen while stopped. */
uint64_t fy_machine_clock_ns(FyMachine *m);

typedef struct FyMachineStats {
    uint64_t steps;        /* sum over vCPUs */
    uint64_t stores;       /* guest RAM stores, sum over vCPUs */
    uint64_t throttle_ns;  /* time vCPUs slept because of set_throttle */
    uint64_t pace_ns;      /* time vCPUs slept for the dirty rate / limit */
    uint64_t run_ns;       /* time vCPU threads spent running (not parked) */
    uint64_t serial_bytes; /* bytes the UART sent to the backend */
    uint64_t timer_fired;  /* ferry-timer expirations */
} FyMachineStats;
void fy_machine_get_stats(FyMachine *m, FyMachineStats *out);

/* The RAM blocks, for the migration engine. Owned by the machine. */
FyRamList *fy_machine_ram_list(FyMachine *m);

/* The VM hooks for the migration engine: *opaque receives the value to pass
 * as the ops' opaque. stop/start/is_running as above; dirty_log_start arms
 * tracking (bitmap or uffd-wp) so every later store is recorded;
 * dirty_log_sync ORs the pages written since the previous sync into the
 * caller's bitmap for that block; set_throttle makes each vCPU sleep
 * percent% of its time; set_dirty_limit caps a vCPU's stores (an upper bound
 * of its dirty pages) in MiB/s; vcpu_count. */
const FyVMOps *fy_machine_vm_ops(FyMachine *m, void **opaque);

/* Register the device state in ss: "cpu" instances 0..N-1, "serial" 0,
 * "clock" 0, "ferry-timer" 0 (in that order). RAM is not registered (the
 * "ram" section is the migration engine's). */
int fy_machine_register_state(FyMachine *m, FySaveState *ss, FyError **errp);

/* 128-bit digest of one RAM block's contents (holes and zero pages hash
 * alike, and holes are skipped without being faulted in). Several GB/s.
 * Call while stopped for a meaningful value. */
int fy_machine_ram_digest(FyMachine *m, const char *idstr,
                          char out_hex[FY_MACHINE_DIGEST_LEN], FyError **errp);
/* The same for any RAM block (e.g. another VM's), by its fd/host mapping. */
int fy_machine_block_digest(const FyRamBlock *b,
                            char out_hex[FY_MACHINE_DIGEST_LEN], FyError **errp);

/* Device state as JSON values (vmstate_to_json of each device):
 *   {"cpu": [{..}, ..], "serial": {..}, "clock": {..}, "ferry-timer": {..}}
 * Only while stopped: returns NULL when running or out of memory. */
struct json_t *fy_machine_state_json(FyMachine *m);

#endif
