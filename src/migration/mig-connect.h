/*
 * mig-connect.h: the outgoing connect, cancellable (see mig-connect.c).
 */
#ifndef FERRY_MIG_CONNECT_H
#define FERRY_MIG_CONNECT_H

#include "migration/migration-int.h"

/* fy_channel_open_outgoing(m->uri), but a migrate_cancel (or freeing the
 * migration) ends the wait with "migration cancelled" at once, even while
 * connect(2) waits for a peer that never answers. */
FyChannel *fy_mig_connect(FyMigration *m, FyError **errp);

#endif
