/*
 * return-path.c: messages from the destination back to the source.
 *
 * Wire (QEMU's migrate_send_rp_message): be16 type, be16 len, payload.
 * Precopy uses two: PONG (be32, the value of a PING) and SHUT (be32: 0 when
 * the destination loaded the stream and started the VM, 1 when it failed).
 * After SHUT the destination sends nothing more.
 *
 * Source side: a reader thread per outgoing migration, started after
 * MIG_CMD_OPEN_RETURN_PATH is sent. It reads until SHUT, an error or the
 * end of the connection, records the outcome under m->lock and broadcasts
 * m->cond. The messages are hostile input: lengths are checked against the
 * type's fixed size before the payload is read. Cancel unblocks the reader
 * by shutting down the socket (the return path is a dup of it).
 */
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "migration/mig-postcopy.h"
#include "migration/migration-int.h"

#define RP_MAX_LEN 512

void fy_mig_block_sigpipe(void)
{
    /* A peer that went away must be an EPIPE error on this thread, not a
     * signal that kills the process embedding us. The pending signal dies
     * with the thread. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int fy_mig_rp_send(FyStream *rp, uint16_t type, const uint8_t *data,
                   uint16_t len, FyError **errp)
{
    fy_put_be16(rp, type);
    fy_put_be16(rp, len);
    fy_put_buffer(rp, data, len);
    fy_stream_flush(rp);
    if (fy_stream_check(rp, errp) < 0) {
        fy_error_prepend(errp, "sending on the return path: ");
        return -1;
    }
    return 0;
}

static uint32_t be32_at(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* One message. Returns 1 after SHUT, 0 to go on, -1 with *errp. */
static int rp_read_one(FyMigration *m, FyStream *f, FyError **errp)
{
    uint8_t buf[RP_MAX_LEN];
    uint16_t type = fy_get_be16(f);
    uint16_t len = fy_get_be16(f);
    if (fy_stream_check(f, errp) < 0) {
        fy_error_prepend(errp, "return path ended before the destination "
                         "reported the outcome: ");
        return -1;
    }
    bool len_ok = (type == MIG_RP_MSG_SHUT || type == MIG_RP_MSG_PONG)
                  ? len == 4 : len <= RP_MAX_LEN;
    if (!len_ok) {
        fy_error_setg(errp, "return path: message type %u has invalid length "
                      "%u", type, len);
        return -1;
    }
    fy_get_buffer(f, buf, len);
    if (fy_stream_check(f, errp) < 0) {
        fy_error_prepend(errp, "return path: reading a message: ");
        return -1;
    }
    switch (type) {
    case MIG_RP_MSG_SHUT:
        pthread_mutex_lock(&m->lock);
        m->rp.shut_received = true;
        m->rp.shut_value = be32_at(buf);
        pthread_mutex_unlock(&m->lock);
        return 1;
    case MIG_RP_MSG_PONG:
        pthread_mutex_lock(&m->lock);
        m->rp.last_pong = be32_at(buf);
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
        return 0;
    default: {
        int r = fy_mig_pc_rp_message(m, f, type, buf, len, errp);
        if (r != FY_MIG_PC_NOT_MINE)
            return r;
        fy_error_setg(errp, "return path: unexpected message type %u "
                      "(length %u) during precopy", type, len);
        return -1;
    }
    }
}

static void *rp_thread(void *opaque)
{
    FyMigration *m = opaque;
    FyError *err = NULL;
    int r;

    pthread_setname_np(pthread_self(), "fy-mig-rp");
    fy_mig_block_sigpipe();
    while ((r = rp_read_one(m, m->rp.f, &err)) == 0)
        ;
    pthread_mutex_lock(&m->lock);
    m->rp.err = err;
    m->rp.done = true;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

int fy_mig_rp_start(FyMigration *m, FyStream *rp, FyError **errp)
{
    fy_mig_rp_reset(m);
    m->rp.f = rp;
    if (pthread_create(&m->rp.thread, NULL, rp_thread, m) != 0) {
        fy_error_setg(errp, "cannot start the return path thread");
        return -1;
    }
    m->rp.started = true;
    return 0;
}

void fy_mig_rp_join(FyMigration *m)
{
    if (!m->rp.started)
        return;
    pthread_join(m->rp.thread, NULL);
    m->rp.started = false;
}

void fy_mig_rp_reset(FyMigration *m)
{
    pthread_mutex_lock(&m->lock);
    fy_error_free(m->rp.err);
    memset(&m->rp, 0, sizeof(m->rp));
    pthread_mutex_unlock(&m->lock);
}
