/*
 * migration-int.h: the FyMigration object and what its files share.
 *
 * Files: status.c (the status machine), options.c (capabilities and
 * parameters), migration.c (the object, events, query-migrate, waiting),
 * outgoing.c (the migration thread), return-path.c (messages from the
 * destination), incoming.c (the incoming thread).
 *
 * Threads and locks:
 * - m->lock guards every field marked (L); m->cond is broadcast whenever
 *   the status, a request flag, or the return path state changes.
 * - m->event_lock (recursive) is held around "change status, then emit the
 *   event", so events leave in the order the status changed even when the
 *   migration thread and a cancel race; an event handler may call back into
 *   fy_migration_* (query, cancel) without deadlock.
 * - One worker at a time: the migration thread (outgoing) or the incoming
 *   thread; the outgoing migration also runs a return-path reader thread.
 *   A worker sets the final status as its very last action, after it has
 *   restarted the VM, closed the stream and stopped dirty tracking, so a
 *   caller that saw "failed" or "completed" sees a settled VM.
 * - Workers are joined by the next fy_migrate/fy_migrate_incoming and by
 *   fy_migration_free.
 */
#ifndef FERRY_MIGRATION_INT_H
#define FERRY_MIGRATION_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "ferry/migration.h"
#include "ferry/ram.h"
#include "ferry/uri.h"

/* ---- capabilities (QEMU's MigrationCapability order) ---- */
typedef enum {
    FY_CAP_XBZRLE,
    FY_CAP_RDMA_PIN_ALL,
    FY_CAP_AUTO_CONVERGE,
    FY_CAP_EVENTS,
    FY_CAP_POSTCOPY_RAM,
    FY_CAP_X_COLO,
    FY_CAP_RELEASE_RAM,
    FY_CAP_RETURN_PATH,
    FY_CAP_PAUSE_BEFORE_SWITCHOVER,
    FY_CAP_MULTIFD,
    FY_CAP_DIRTY_BITMAPS,
    FY_CAP_POSTCOPY_BLOCKTIME,
    FY_CAP_LATE_BLOCK_ACTIVATE,
    FY_CAP_X_IGNORE_SHARED,
    FY_CAP_VALIDATE_UUID,
    FY_CAP_BACKGROUND_SNAPSHOT,
    FY_CAP_ZERO_COPY_SEND,
    FY_CAP_POSTCOPY_PREEMPT,
    FY_CAP_SWITCHOVER_ACK,
    FY_CAP_DIRTY_LIMIT,
    FY_CAP_MAPPED_RAM,
    FY_CAP__MAX
} FyMigCap;

typedef struct FyMigCapInfo {
    const char *name;
    bool supported;   /* false: turning it on says "not supported by ferry yet" */
} FyMigCapInfo;
extern const FyMigCapInfo fy_mig_caps[FY_CAP__MAX];

/* ---- parameters ---- */
typedef enum {
    FY_ZPD_NONE,
    FY_ZPD_LEGACY,
    FY_ZPD_MULTIFD,
} FyZeroPageDetection;

/* QMP `mode` (QEMU's MigMode order). */
typedef enum {
    FY_MIG_MODE_NORMAL,
    FY_MIG_MODE_CPR_REBOOT,   /* not supported */
    FY_MIG_MODE_CPR_TRANSFER, /* local handover: RAM by fd (handover.c) */
    FY_MIG_MODE_CPR_EXEC,     /* not supported */
} FyMigMode;

typedef struct FyMigParams {
    uint64_t max_bandwidth;              /* bytes/s; 0 = unlimited */
    uint64_t downtime_limit;             /* ms */
    uint64_t avail_switchover_bandwidth; /* bytes/s; 0 = use the measured one */
    uint64_t zero_page_detection;        /* FyZeroPageDetection */
    uint64_t multifd_channels;           /* 1..255 (mig-multifd.c) */
    uint64_t multifd_compression;        /* FyMultifdCompression */
    uint64_t multifd_zlib_level;         /* 0..9 */
    uint64_t multifd_zstd_level;         /* 0..20 */
    uint64_t mode;                       /* FyMigMode */
    uint64_t max_postcopy_bandwidth;     /* bytes/s of background pages in
                                            postcopy; 0 = unlimited */
    /* convergence (converge.c) */
    uint64_t throttle_trigger_threshold; /* % */
    uint64_t cpu_throttle_initial;       /* % */
    uint64_t cpu_throttle_increment;     /* % */
    uint64_t cpu_throttle_tailslow;      /* bool */
    uint64_t max_cpu_throttle;           /* % */
    uint64_t xbzrle_cache_size;          /* bytes */
    uint64_t x_vcpu_dirty_limit_period;  /* ms */
    uint64_t vcpu_dirty_limit;           /* MB/s */
    uint64_t x_stall_iterations;         /* dirty syncs; 0 = off */
    uint64_t x_stall_action;             /* FyStallAction */
} FyMigParams;

/* QEMU's defaults: MAX_THROTTLE is 128 MiB/s since QEMU 5.2 (it was
 * 32 MiB/s before), DEFAULT_MIGRATE_SET_DOWNTIME 300 ms, and the maximum
 * downtime limit is 2000 s. */
#define FY_DEFAULT_MAX_BANDWIDTH (128ull << 20)
#define FY_DEFAULT_DOWNTIME_LIMIT 300ull
#define FY_MAX_DOWNTIME_LIMIT 2000000ull

void fy_mig_params_init(FyMigParams *p);

/* ---- return path (source side) ---- */
typedef struct FyMigRp {
    FyStream *f;            /* owned by the outgoing stream */
    pthread_t thread;
    bool started;
    bool done;              /* (L) the reader exited */
    bool shut_received;     /* (L) */
    uint32_t shut_value;    /* (L) */
    uint32_t last_pong;     /* (L) */
    FyError *err;           /* (L) why the reader stopped, if not SHUT */
} FyMigRp;

/* Return path message types (MIG_RP_MSG_*). */
enum {
    MIG_RP_MSG_INVALID = 0,
    MIG_RP_MSG_SHUT,
    MIG_RP_MSG_PONG,
    MIG_RP_MSG_REQ_PAGES_ID,
    MIG_RP_MSG_REQ_PAGES,
    MIG_RP_MSG_RECV_BITMAP,
    MIG_RP_MSG_RESUME_ACK,
    MIG_RP_MSG_SWITCHOVER_ACK,
    MIG_RP_MSG_MAX
};

/* ---- the object ---- */
struct FyMigration {
    FySaveState *ss;
    FyRamList *ram;
    const FyVMOps *vm;
    void *vm_opaque;
    FyRamState *rs;
    bool ram_registered;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_mutex_t event_lock;
    FyEventFn event_fn;          /* (L) */
    void *event_opaque;          /* (L) */

    FyMigStatus status;          /* (L) */
    bool incoming;               /* (L) the current/last run was incoming */
    FyError *error;              /* (L) error-desc of a failed run */
    bool caps[FY_CAP__MAX];      /* (L) */
    FyMigParams params;          /* (L) */

    /* outgoing */
    pthread_t thread;
    bool thread_joinable;
    char *uri;
    FyChannel *chan;             /* (L) for shutdown by cancel */
    bool cancel_req;             /* (L) */
    bool continue_req;           /* (L) */
    bool committed;              /* (L) the whole stream is out: no cancel */
    bool freeing;                /* (L) fy_migration_free: cancel regardless */
    FyMigRp rp;
    struct FyMigMfd *mfd;        /* multifd and handover (mig-multifd.c) */
    struct FyConverge *cv;       /* convergence (converge.c) */
    struct FyMigPostcopy *pc;    /* postcopy (mig-postcopy.c) */

    /* incoming */
    pthread_t in_thread;
    bool in_thread_joinable;
    FyListener *listener;        /* (L) until accept returns */
    char *in_address;            /* (L) */
    bool autostart;              /* (L) */
    bool deferred;               /* (L) */

    /* statistics (L) */
    uint64_t start_ms;
    uint64_t setup_time;
    uint64_t total_time;
    uint64_t downtime;
    uint64_t expected_downtime;
    double mbps;
    uint64_t pages_per_second;
    uint64_t transferred;
    uint64_t precopy_bytes;
    uint64_t downtime_bytes;
};

uint64_t fy_mig_now_ms(void);

/* status.c */
bool fy_mig_status_is_running(FyMigStatus s);
/* Move from `from` to `to` if the status is still `from` and the move is
 * legal (QEMU's migrate_set_state); emits MIGRATION. Returns success. */
bool fy_mig_set_status(FyMigration *m, FyMigStatus from, FyMigStatus to);
/* Move from whatever the status is now; used for final states. */
bool fy_mig_set_status_now(FyMigration *m, FyMigStatus to);
void fy_mig_emit(FyMigration *m, const char *name, struct json_t *data);

/* options.c */
/* Apply the capabilities to the savevm configuration and the RAM options
 * for one run. Called on the worker with m->lock NOT held. */
void fy_mig_apply_caps(FyMigration *m);
FyZeroPageDetection fy_mig_zero_page_detection(FyMigration *m);

/* outgoing.c / incoming.c */
void *fy_mig_outgoing_thread(void *opaque);
void *fy_mig_incoming_thread(void *opaque);
/* Refuse while a migration runs, join the previous worker, reset the run's
 * state. Called with event_lock held. */
int fy_mig_begin_run(FyMigration *m, bool incoming, FyError **errp);
/* Unblock whatever the worker waits on (m->lock held). */
void fy_mig_kick_locked(FyMigration *m);
void fy_mig_join_workers(FyMigration *m);

/* return-path.c */
int fy_mig_rp_start(FyMigration *m, FyStream *rp, FyError **errp);
/* Join the reader (after it finished or the channel was shut down). */
void fy_mig_rp_join(FyMigration *m);
/* Forget the last return path's outcome. */
void fy_mig_rp_reset(FyMigration *m);
int fy_mig_rp_send(FyStream *rp, uint16_t type, const uint8_t *data,
                   uint16_t len, FyError **errp);
void fy_mig_block_sigpipe(void);

#endif
