/*
 * dirtyrate.h: how fast the guest dirties memory (QEMU's calc-dirty-rate
 * and query-dirty-rate, migration/dirtyrate.c).
 *
 * One FyDirtyRate per VM. fy_dirtyrate_calc() checks the arguments and
 * starts a measurement on its own thread; the result stays until the next
 * one. Status: unstarted -> measuring -> measured (-> measuring again).
 *
 * Modes (QEMU's names):
 *   page-sampling  hash sample-pages random pages per GiB of every RAM
 *                  block of at least 128 KiB, wait calc-time, hash again;
 *                  rate = changed samples / samples x sampled MiB / time.
 *                  Touches nothing but guest memory (reads).
 *   dirty-bitmap   the VM's dirty log (FyVMOps dirty_log_start/sync/stop):
 *                  start, one sync thrown away, wait, sync, count, stop;
 *                  rate = dirty pages x page size / time.
 *   dirty-ring     per-vCPU counters from the embedding VM
 *                  (fy_dirtyrate_set_vcpu_counter): read, wait, sync (so a
 *                  VM that counts when it harvests is up to date), read;
 *                  one rate per vCPU and their sum. Refused ("mode
 *                  dirty-ring is not enabled") without a counter.
 * Rates are MB/s as QEMU computes them: (pages x 4 KiB) >> 20, x 1000, /
 * milliseconds, in integers.
 *
 * A running migration owns the dirty log: a sync from here would take dirty
 * bits away from it and a stop would end its tracking. So while a
 * migration runs it lends its own count (fy_dirtyrate_set_borrow) and the
 * log modes use that instead of start/sync/stop; page-sampling is not
 * affected. Changing the borrow function ends a log-mode measurement early
 * (with the pages seen so far) and waits until it has let go of the old
 * source, so the migration can take the log right after the call returns.
 *
 * No global state: any number of FyDirtyRate objects may live in a process.
 */
#ifndef FERRY_DIRTYRATE_H
#define FERRY_DIRTYRATE_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/ramblock.h"

struct json_t;

#define FY_DIRTYRATE_DEFAULT_SAMPLE_PAGES 512
#define FY_DIRTYRATE_MIN_SAMPLE_PAGES     128
#define FY_DIRTYRATE_MAX_SAMPLE_PAGES     16384
#define FY_DIRTYRATE_MIN_CALC_TIME_MS     50
#define FY_DIRTYRATE_MAX_CALC_TIME_MS     60000
/* Smaller RAM blocks are not sampled (QEMU's MIN_RAMBLOCK_SIZE, in KiB). */
#define FY_DIRTYRATE_MIN_BLOCK_SIZE       (128 * 1024)

typedef enum {
    FY_DIRTYRATE_UNSTARTED,
    FY_DIRTYRATE_MEASURING,
    FY_DIRTYRATE_MEASURED,
} FyDirtyRateStatus;

typedef enum {
    FY_DIRTYRATE_PAGE_SAMPLING,
    FY_DIRTYRATE_DIRTY_RING,
    FY_DIRTYRATE_DIRTY_BITMAP,
} FyDirtyRateMode;

const char *fy_dirtyrate_status_name(FyDirtyRateStatus s);
const char *fy_dirtyrate_mode_name(FyDirtyRateMode m);

typedef struct FyDirtyRateConfig {
    int64_t calc_time;          /* in the unit below */
    bool calc_time_ms;          /* calc-time-unit: millisecond (else second) */
    bool has_sample_pages;      /* only with page-sampling */
    int64_t sample_pages;       /* per GiB, [128, 16384]; default 512 */
    FyDirtyRateMode mode;
} FyDirtyRateConfig;

/*
 * Supplied by the embedding VM for dirty-ring mode: the number of pages
 * vCPU `vcpu` (0 .. vcpu_count - 1) has dirtied so far, a counter that only
 * grows (what a per-vCPU dirty ring counts: a page each time the vCPU makes
 * a clean page dirty). Called from the measurement thread.
 */
typedef uint64_t (*FyVcpuDirtyPagesFn)(void *opaque, int vcpu);

/*
 * Supplied by a running migration: store in *pages the number of pages its
 * dirty syncs have reported dirty so far (summed over syncs: the pages the
 * VM's log returned at each sync, before they are merged into the
 * migration's bitmap; counting only the newly set bits under-counts pages
 * written again before they were sent, which still gives a lower bound).
 * With `sync` the migration may first run one of its own syncs to bring the
 * count up to date, if it can do that safely from another thread; otherwise
 * it returns its latest count. Returns 0, or -1 with *errp set. Called from
 * the measurement thread without any FyDirtyRate lock held.
 */
typedef int (*FyDirtyRateBorrowFn)(void *opaque, bool sync, uint64_t *pages,
                                   FyError **errp);

typedef struct FyDirtyRate FyDirtyRate;

/* ram: the VM's RAM blocks (must not change while a measurement runs). vm
 * may be NULL (then only page-sampling and borrowed dirty-bitmap work). */
FyDirtyRate *fy_dirtyrate_new(FyRamList *ram, const FyVMOps *vm,
                              void *vm_opaque);
/* Ends a running measurement at once (it releases the dirty log) and
 * joins its thread. NULL is a no-op. */
void fy_dirtyrate_free(FyDirtyRate *dr);

/* Enable dirty-ring mode (fn non-NULL) or disable it. Takes effect at the
 * next fy_dirtyrate_calc(). */
void fy_dirtyrate_set_vcpu_counter(FyDirtyRate *dr, FyVcpuDirtyPagesFn fn,
                                   void *opaque);

/* The counter above, for other users (the per-vCPU dirty limit): pages
 * vCPU vcpu has dirtied so far; false when no counter is set. Call without
 * holding locks the counter might take. */
bool fy_dirtyrate_vcpu_pages(FyDirtyRate *dr, int vcpu, uint64_t *pages);

/*
 * The migration calls this with its function before it starts the dirty
 * log, and with NULL after it has stopped the log and before its state goes
 * away. A log-mode measurement in progress ends early and this returns once
 * it no longer uses the previous source. Do not hold, while calling, any
 * lock that the borrow function takes.
 */
void fy_dirtyrate_set_borrow(FyDirtyRate *dr, FyDirtyRateBorrowFn fn,
                             void *opaque);

/* calc-dirty-rate: check and start. Errors use QEMU's messages, e.g.
 * "the dirty rate is already being measured.",
 * "Calculation time is out of range [50ms, 60000ms].",
 * "sample-pages is out of range[128, 16384].",
 * "sample-pages is used only in page-sampling mode",
 * "mode dirty-ring is not enabled, use other method instead." */
int fy_dirtyrate_calc(FyDirtyRate *dr, const FyDirtyRateConfig *cfg,
                      FyError **errp);
/* The same from QMP arguments: {"calc-time": int, "calc-time-unit":
 * "second"|"millisecond", "sample-pages": int, "mode": "page-sampling"|
 * "dirty-ring"|"dirty-bitmap"}; calc-time is required. */
int fy_dirtyrate_calc_json(FyDirtyRate *dr, struct json_t *args,
                           FyError **errp);

/*
 * query-dirty-rate, with QEMU's members in QEMU's order: "dirty-rate" (MB/s,
 * only once measured; -1 when the measurement failed), "status",
 * "start-time" (s, monotonic clock), "calc-time" (in calc-time-unit),
 * "calc-time-unit", "sample-pages" (0 once measured in a log mode), "mode",
 * "vcpu-dirty-rate" ([{"id", "dirty-rate"}], dirty-ring only). New
 * reference.
 */
struct json_t *fy_dirtyrate_query(FyDirtyRate *dr);
/* HMP "info dirty_rate" text (malloc'd), from a query result. */
char *fy_dirtyrate_format_hmp(struct json_t *info);

FyDirtyRateStatus fy_dirtyrate_status(FyDirtyRate *dr);
/* Why the last measurement failed (malloc'd), or NULL. */
char *fy_dirtyrate_last_error(FyDirtyRate *dr);
/* Wait until no measurement is running; false on timeout (ms, < 0 =
 * forever). */
bool fy_dirtyrate_wait(FyDirtyRate *dr, int64_t timeout_ms);

#endif
