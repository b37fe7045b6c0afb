/*
 * pc-proxy.h: a unix-socket proxy between a migration's source and its
 * destination, so that a test can break the connection the way a failing
 * network or a dying middlebox does, without either side's cooperation
 * (migrate-pause asks the side itself to break it).
 *
 * Every connection accepted on `listen_path` is forwarded to `target_path`
 * by a thread of its own (the main channel, its return path on the same
 * socket, and the postcopy-preempt channel all pass through). pcx_kill()
 * shuts every forwarded socket down in both directions at once: each peer
 * sees its connection end mid-stream, whatever it was doing. pcx_hold()
 * stops moving bytes but keeps every socket open: a link that went silent
 * (packets dropped), which neither peer can tell from a slow one.
 */
#ifndef PC_PROXY_H
#define PC_PROXY_H

#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PCX_MAX_PAIRS 8

typedef struct PcProxy PcProxy;

typedef struct PcxPair {
    PcProxy *px;
    int a, b;              /* accepted side, connected side */
    pthread_t thread;
    bool started;
} PcxPair;

struct PcProxy {
    int lfd;
    char listen_path[108], target_path[108];
    pthread_t thread;
    pthread_mutex_t lock;
    bool dead;
    bool held;             /* no byte moves any more */
    int npairs;
    PcxPair pairs[PCX_MAX_PAIRS];
    uint64_t bytes;        /* forwarded, both directions */
};

static int pcx_unix_socket(const char *path, bool listen_on)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int r;
    if (listen_on) {
        unlink(path);
        r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        if (r == 0)
            r = listen(fd, 8);
    } else {
        r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    }
    if (r < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Copy what is readable on `from` to `to`; false at the end or on error. */
static bool pcx_pump(PcxPair *p, int from, int to)
{
    char buf[65536];
    ssize_t n = read(from, buf, sizeof(buf));
    if (n <= 0)
        return false;
    for (ssize_t off = 0; off < n;) {
        /* MSG_NOSIGNAL: a peer gone is an end, not a SIGPIPE. */
        ssize_t w = send(to, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        off += w;
    }
    pthread_mutex_lock(&p->px->lock);
    p->px->bytes += (uint64_t)n;
    pthread_mutex_unlock(&p->px->lock);
    return true;
}

static void *pcx_pair_main(void *opaque)
{
    PcxPair *p = opaque;
    struct pollfd pf[2] = { { .fd = p->a, .events = POLLIN },
                            { .fd = p->b, .events = POLLIN } };
    for (;;) {
        pthread_mutex_lock(&p->px->lock);
        bool held = p->px->held, dead = p->px->dead;
        pthread_mutex_unlock(&p->px->lock);
        if (dead)
            break;
        if (held) {
            usleep(50000);
            continue;
        }
        int r = poll(pf, 2, 50);
        if (r < 0)
            break;
        if (r == 0)
            continue;
        if (pf[0].revents && !pcx_pump(p, p->a, p->b))
            break;
        if (pf[1].revents && !pcx_pump(p, p->b, p->a))
            break;
    }
    /* One side ended: so does the other (as a proxy that dies). */
    shutdown(p->a, SHUT_RDWR);
    shutdown(p->b, SHUT_RDWR);
    return NULL;
}

static void *pcx_accept_main(void *opaque)
{
    PcProxy *px = opaque;
    for (;;) {
        int a = accept4(px->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (a < 0)
            break;
        int b = pcx_unix_socket(px->target_path, false);
        pthread_mutex_lock(&px->lock);
        bool ok = b >= 0 && !px->dead && px->npairs < PCX_MAX_PAIRS;
        PcxPair *p = ok ? &px->pairs[px->npairs] : NULL;
        if (ok) {
            *p = (PcxPair){ .px = px, .a = a, .b = b };
            p->started = pthread_create(&p->thread, NULL, pcx_pair_main, p) == 0;
            ok = p->started;
            if (ok)
                px->npairs++;
        }
        pthread_mutex_unlock(&px->lock);
        if (!ok) {
            close(a);
            if (b >= 0)
                close(b);
        }
    }
    return NULL;
}

/* Listen on listen_path, forward to target_path. */
static inline bool pcx_start(PcProxy *px, const char *listen_path,
                             const char *target_path)
{
    memset(px, 0, sizeof(*px));
    pthread_mutex_init(&px->lock, NULL);
    size_t ll = strlen(listen_path), tl = strlen(target_path);
    if (ll >= sizeof(px->listen_path) || tl >= sizeof(px->target_path))
        return false;
    memcpy(px->listen_path, listen_path, ll + 1);
    memcpy(px->target_path, target_path, tl + 1);
    px->lfd = pcx_unix_socket(listen_path, true);
    if (px->lfd < 0)
        return false;
    if (pthread_create(&px->thread, NULL, pcx_accept_main, px) != 0) {
        close(px->lfd);
        px->lfd = -1;
        return false;
    }
    return true;
}

/* The proxy dies: every connection through it ends at once. */
static inline void pcx_kill(PcProxy *px)
{
    pthread_mutex_lock(&px->lock);
    px->dead = true;
    for (int i = 0; i < px->npairs; i++) {
        shutdown(px->pairs[i].a, SHUT_RDWR);
        shutdown(px->pairs[i].b, SHUT_RDWR);
    }
    pthread_mutex_unlock(&px->lock);
}

/* The link goes silent: sockets stay open, nothing passes any more. */
static inline void pcx_hold(PcProxy *px)
{
    pthread_mutex_lock(&px->lock);
    px->held = true;
    pthread_mutex_unlock(&px->lock);
}

static inline uint64_t pcx_bytes(PcProxy *px)
{
    pthread_mutex_lock(&px->lock);
    uint64_t n = px->bytes;
    pthread_mutex_unlock(&px->lock);
    return n;
}

static inline void pcx_free(PcProxy *px)
{
    if (px->lfd < 0)
        return;
    pcx_kill(px);
    shutdown(px->lfd, SHUT_RDWR);
    pthread_join(px->thread, NULL);
    close(px->lfd);
    px->lfd = -1;
    for (int i = 0; i < px->npairs; i++) {
        pthread_join(px->pairs[i].thread, NULL);
        close(px->pairs[i].a);
        close(px->pairs[i].b);
    }
    unlink(px->listen_path);
    pthread_mutex_destroy(&px->lock);
}

#endif
