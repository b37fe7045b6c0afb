/*
 * mig-connect.c: the outgoing connect, cancellable.
 *
 * connect(2) to a socket whose peer does not accept (a stopped destination
 * with a full backlog, a host that drops SYNs) blocks for as long as the
 * kernel likes, and the channel layer has no handle a cancel could shut
 * down yet. So for tcp: and unix: the connect runs in a helper thread and
 * the migration thread waits for whichever comes first:
 *
 *   helper: connect -> done (channel or error) -> [abandoned? close, free]
 *   migration thread: wait (50 ms slices) until done or cancel_req
 *       done      -> take the channel / the error
 *       cancelled -> mark the attempt abandoned and return "cancelled";
 *                    the helper closes whatever it gets and frees the
 *                    attempt when its connect returns
 *
 * The attempt (Connect) is shared by the two threads and freed by the last
 * one out (refs, under its own lock): it never points back at the
 * FyMigration, which may be gone by the time an abandoned connect returns.
 * Other transports (exec, fd, file) open at once, in the calling thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/uri.h"
#include "migration/mig-connect.h"

typedef struct Connect {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs;
    bool done;
    char *uri;
    FyChannel *chan;
    FyError *err;
} Connect;

static void connect_unref(Connect *c)
{
    pthread_mutex_lock(&c->lock);
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&c->lock);
    if (!last)
        return;
    fy_channel_close(c->chan, NULL);
    fy_error_free(c->err);
    free(c->uri);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    free(c);
}

static void *connect_thread(void *opaque)
{
    Connect *c = opaque;
    FyError *err = NULL;
    FyChannel *ch = fy_channel_open_outgoing(c->uri, &err);
    pthread_mutex_lock(&c->lock);
    c->chan = ch;     /* an abandoned attempt's channel is closed at unref */
    c->err = err;
    c->done = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    connect_unref(c);
    return NULL;
}

static bool cancelled(FyMigration *m)
{
    pthread_mutex_lock(&m->lock);
    bool c = m->cancel_req || m->freeing;
    pthread_mutex_unlock(&m->lock);
    return c;
}

static bool blocks_in_connect(const char *uri)
{
    return !strncmp(uri, "tcp:", 4) || !strncmp(uri, "unix:", 5);
}

FyChannel *fy_mig_connect(FyMigration *m, FyError **errp)
{
    if (!blocks_in_connect(m->uri))
        return fy_channel_open_outgoing(m->uri, errp);
    Connect *c = calloc(1, sizeof(*c));
    if (!c || !(c->uri = strdup(m->uri))) {
        free(c);
        fy_error_setg(errp, "%s: out of memory", m->uri);
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    c->refs = 2;

    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int e = pthread_create(&t, &attr, connect_thread, c);
    pthread_attr_destroy(&attr);
    if (e != 0) {
        c->refs = 1;
        connect_unref(c);
        fy_error_setg_errno(errp, e, "%s: cannot start the connect thread",
                            m->uri);
        return NULL;
    }

    FyChannel *ch = NULL;
    pthread_mutex_lock(&c->lock);
    while (!c->done) {
        pthread_mutex_unlock(&c->lock);
        if (cancelled(m)) {
            pthread_mutex_lock(&c->lock);
            break;
        }
        pthread_mutex_lock(&c->lock);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 50 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (!c->done)
            pthread_cond_timedwait(&c->cond, &c->lock, &ts);
    }
    if (c->done) {
        ch = c->chan;
        c->chan = NULL;
        if (!ch) {
            fy_error_propagate(errp, c->err);
            c->err = NULL;
        }
    } else {
        fy_error_setg(errp, "migration cancelled while connecting to %s",
                      m->uri);
    }
    pthread_mutex_unlock(&c->lock);
    connect_unref(c);
    return ch;
}
