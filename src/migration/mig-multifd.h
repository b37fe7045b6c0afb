/*
 * mig-multifd.h: what the migration core calls for multifd (mig-multifd.c)
 * and for the local handover of RAM by file descriptor (handover.c).
 *
 * Both add connections to the one migration URI, told apart by the
 * destination from their first four bytes:
 *   "QEVM" (0x5145564d)  the migration stream
 *   0x11223344           a multifd channel (QEMU's MultiFDInit_t follows)
 *   "FYHO" (0x4659484f)  a ferry handover channel (mode cpr-transfer)
 * Source order: handover (answered before anything else), main, then the
 * multifd channels, which the destination accepts while it loads.
 *
 * Locks: m->lock guards FyMigMfd's (L) fields (the cancel path and
 * query-migrate read them); mfd->lock is a leaf lock (nothing is taken
 * while holding it) for what the multifd receive threads touch from their
 * failure hook, which runs under the receive object's own lock.
 */
#ifndef FERRY_MIG_MULTIFD_H
#define FERRY_MIG_MULTIFD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "ferry/multifd.h"
#include "ferry/stream.h"
#include "ferry/uri.h"
#include "migration/migration-int.h"

#define FY_HANDOVER_MAGIC   0x4659484fu /* "FYHO" */
#define FY_HANDOVER_VERSION 1u

typedef struct FyMigMfd {
    FyMigration *m;
    pthread_mutex_t lock;       /* leaf */

    /* source */
    FyMultifdSend *send;        /* (L) the running migration's */
    FyMultifdStats send_last;   /* (L) counters of the last one */
    FyChannel *handover_chan;   /* (L) while handing over, for cancel */

    /* destination */
    FyMultifdRecv *recv;        /* (L) */
    FyMultifdStats recv_last;   /* (L) */
    FyListener *listener;       /* (L) kept to accept more multifd channels */
    pthread_t acceptor;
    bool acceptor_started;
    bool stopping;              /* (lock) the acceptor must give up */
    FyChannel *main;            /* (lock) the main channel while loading */
    FyChannel *peeking;         /* (lock) a channel being classified */
    bool handed_over;           /* the RAM blocks map the source's memfds */
} FyMigMfd;

/* ---- options (called with m->lock held) ---- */
/* Rules of the multifd, zero-copy and mode settings, alone and together
 * with the capabilities (QEMU's messages where it has them). */
int fy_mig_mfd_check(const bool *caps, const FyMigParams *p, FyError **errp);

/* ---- any migration ---- */
/* At fy_migrate / fy_migrate_incoming: refuse a URI these settings cannot
 * use (cpr-transfer needs unix:, multifd a socket, zero copy tcp:). */
int fy_mig_mfd_check_uri(FyMigration *m, const char *uri, bool incoming,
                         FyError **errp);
/* Cancel: fail the multifd objects, wake the acceptor (m->lock held). */
void fy_mig_mfd_kick_locked(FyMigration *m);
/* fy_migration_free, after the workers are joined. */
void fy_mig_mfd_free(FyMigration *m);
/* query-migrate's multifd counters (m->lock held). */
void fy_mig_mfd_stats_locked(FyMigration *m, FyMultifdStats *out);

/* ---- source (the migration thread) ---- */
/* Before the main channel: the handover (mode cpr-transfer). */
int fy_mig_mfd_out_before_main(FyMigration *m, FyError **errp);
/* After it: the multifd channels, attached to the RAM sender. */
int fy_mig_mfd_out_after_main(FyMigration *m, FyError **errp);
/* Bytes sent so far: the main stream's and the multifd channels'. */
uint64_t fy_mig_out_bytes(FyMigration *m, const FyStream *f);
/* Stop and free the multifd channels (the RAM sender has synced them on
 * success; on failure they are shut down). */
void fy_mig_mfd_out_finish(FyMigration *m);

/* ---- destination (the incoming thread) ---- */
/* Accept until the main channel arrives; multifd and handover channels
 * that come first are served on the way. When more multifd channels are
 * due, a thread goes on accepting them and *keep_listener says the
 * listener is no longer the caller's. */
FyChannel *fy_mig_mfd_in_accept(FyMigration *m, FyListener *l,
                                bool *keep_listener, FyError **errp);
/* After a failed load: a side channel's error is the cause, prefer it. */
FyError *fy_mig_mfd_in_error(FyMigration *m, FyError *err);
/* Stop accepting, free the multifd channels; after a failure, give back
 * handed-over memory (fresh memfds replace it). */
void fy_mig_mfd_in_finish(FyMigration *m, bool ok);

/* ---- handover.c ---- */
int fy_mig_handover_check_blocks(const FyRamList *ram, FyError **errp);
/* Source: connect to uri, pass every block's memfd, wait for the answer. */
int fy_mig_handover_send(FyMigration *m, FyMigMfd *mfd, FyError **errp);
/* Destination: the channel's first bytes said FYHO. Map the memfds over
 * the local blocks (all or none) and answer. */
int fy_mig_handover_receive(FyMigration *m, FyMigMfd *mfd, FyChannel *c,
                            FyError **errp);
/* Destination after a failure: fresh private memfds replace the source's
 * memory, so this VM can never write into it. */
void fy_mig_handover_rollback(FyMigration *m, FyMigMfd *mfd);

#endif
