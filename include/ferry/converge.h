/*
 * converge.h: what makes a live migration end, and end on time.
 *
 * The pieces (see docs/convergence.md for the user's view):
 *
 *   XBZRLE        the `xbzrle` capability: from the second dirty sync on,
 *                 the RAM sender keeps a copy of what it sent for each page
 *                 (xbzrle.h) and sends the next version as a delta
 *                 (RAM_SAVE_FLAG_XBZRLE records); `xbzrle-cache-size`
 *                 resizes the cache live; query-migrate's "xbzrle-cache"
 *   auto-converge the migration throttles the vCPUs (FyVMOps.set_throttle)
 *                 when the guest dirties memory faster than
 *                 throttle-trigger-threshold % of what is sent, raising the
 *                 throttle by cpu-throttle-increment (or less, with
 *                 cpu-throttle-tailslow) up to max-cpu-throttle
 *   dirty-limit   the same trigger caps each vCPU's dirty rate at
 *                 vcpu-dirty-limit MB/s (FyVMOps.set_dirty_limit): vCPUs
 *                 that do not write are not slowed; set-vcpu-dirty-limit,
 *                 cancel-vcpu-dirty-limit and query-vcpu-dirty-limit work
 *                 with or without a migration
 *   dirty rate    calc-dirty-rate / query-dirty-rate (dirtyrate.h); while a
 *                 migration runs, the dirty-bitmap mode counts from the
 *                 migration's own syncs instead of taking the dirty log
 *   downtime      the switchover waits until the estimated downtime, which
 *                 counts the pages left, the device state, the pages the
 *                 guest dirties while it is being stopped and the fixed
 *                 costs (stop, final sync, destination start), fits in
 *                 downtime-limit; after the switchover the measured
 *                 downtime is reported split into its parts
 *   stall         when the RAM left after a dirty sync has not shrunk for
 *                 x-stall-iterations syncs, MIGRATION_STALL is emitted,
 *                 query-migrate says so, and x-stall-action may escalate
 *                 (raise the throttle, or start postcopy)
 *
 * Everything here belongs to one VM (its FyRamState or FyMigration): no
 * global state, so a source and a destination can share a process.
 */
#ifndef FERRY_CONVERGE_H
#define FERRY_CONVERGE_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/dirtyrate.h"
#include "ferry/error.h"
#include "ferry/migration.h"
#include "ferry/ram.h"
#include "ferry/xbzrle.h"

struct json_t;

/* ---- the RAM section's side (src/ram/ram-converge.c) ---- */

/*
 * XBZRLE for the next outgoing migration (save_setup makes the cache).
 * While a migration runs, `on` cannot change, but a new cache_size resizes
 * the cache at once, keeping what fits. cache_size must pass
 * fy_xbzrle_cache_size_check(). Thread-safe.
 */
int fy_ram_xbzrle_configure(FyRamState *rs, bool on, uint64_t cache_size,
                            FyError **errp);
/* The counters of the running migration, or of the last one once it
 * ended; false when XBZRLE was never used. Thread-safe. */
bool fy_ram_xbzrle_get_stats(FyRamState *rs, FyXbzrleStats *out);
/* Pages the VM's dirty log reported over all dirty syncs of the current
 * outgoing migration (before merging; see FyDirtyRateBorrowFn). Atomic. */
uint64_t fy_ram_dirty_pages_reported(FyRamState *rs);

/* ---- the migration's side (src/migration/converge.c, dirtylimit.c) ---- */

/* The VM's dirty-rate measurement (calc-dirty-rate), owned by m. */
FyDirtyRate *fy_migration_dirtyrate(FyMigration *m);

/*
 * set-vcpu-dirty-limit: cap vCPU cpu_index (all vCPUs when !has_cpu) at
 * dirty_rate MB/s; 0 cancels. QEMU's errors: "Incorrect cpu index
 * specified" and, without FyVMOps.set_dirty_limit, "Dirty page limit not
 * supported by this VM".
 */
int fy_migration_set_vcpu_dirty_limit(FyMigration *m, bool has_cpu,
                                      int64_t cpu_index, uint64_t dirty_rate,
                                      FyError **errp);
/* cancel-vcpu-dirty-limit; refused while a migration with the dirty-limit
 * capability runs (QEMU's rule). */
int fy_migration_cancel_vcpu_dirty_limit(FyMigration *m, bool has_cpu,
                                         int64_t cpu_index, FyError **errp);
/* query-vcpu-dirty-limit: [{"cpu-index", "limit-rate", "current-rate"}]
 * for the vCPUs that have a limit (MB/s; current-rate is measured with the
 * per-vCPU counter of fy_dirtyrate_set_vcpu_counter(), 0 without one). */
struct json_t *fy_migration_query_vcpu_dirty_limit(FyMigration *m);

#endif
