/*
 * qmp-server.c: QMP on a unix or tcp socket, any number of clients, one
 * thread.
 *
 * The server thread polls the listening socket, a wake-up pipe and every
 * client. It alone reads from clients, runs their commands (through
 * fy_monitor_handle_request) and frees clients. Output goes through a
 * per-client buffer so a slow reader never blocks the thread; events come
 * from any thread, are appended to the buffers of negotiated clients, and
 * the pipe wakes the thread to send them.
 *
 * Lock: s->lock guards the client list, every output buffer and each
 * client's `negotiated`. It is never held while a command runs (commands
 * call into the migration, whose event handler takes s->lock: holding it
 * across a command could deadlock).
 *
 * Client life: accepted -> greeting queued -> negotiation -> command mode;
 * EOF, a read/write error or an output backlog over MAX_BACKLOG ends it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "control/control-int.h"

#define MAX_CLIENTS 64
#define MAX_BACKLOG (64u << 20)

typedef struct Client {
    struct Client *next;
    int fd;
    bool negotiated;        /* (lock) */
    bool dead;              /* (lock) close it */
    FyJsonStreamer js;      /* server thread only */
    char *out;              /* (lock) */
    size_t out_len, out_cap;
} Client;

struct FyQmpServer {
    FyMonitor *mon;
    int lfd;
    int wake[2];
    char *address;
    char *unix_path;        /* to unlink */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    Client *clients;        /* (lock) */
    int nclients;           /* (lock) */
    bool stop;              /* (lock) */
    int flush_ms;           /* (lock) how long to flush at stop */
};

static void wake(FyQmpServer *s)
{
    char c = 1;
    ssize_t r = write(s->wake[1], &c, 1);
    (void)r; /* a full pipe already means "wake up" */
}

/* ---- output ---- */

/* Append one message + "\r\n" (s->lock held). */
static void queue_locked(Client *c, const char *text)
{
    size_t n = strlen(text);
    if (c->dead)
        return;
    if (c->out_len + n + 2 > MAX_BACKLOG) {
        c->dead = true;   /* it stopped reading: let it go */
        return;
    }
    if (c->out_len + n + 2 > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + n + 2)
            cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) {
            c->dead = true;
            return;
        }
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, text, n);
    memcpy(c->out + c->out_len + n, "\r\n", 2);
    c->out_len += n + 2;
}

static void queue_json(FyQmpServer *s, Client *c, json_t *v)
{
    char *text = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
    pthread_mutex_lock(&s->lock);
    if (text)
        queue_locked(c, text);
    else
        c->dead = true;
    pthread_mutex_unlock(&s->lock);
    free(text);
}

/* Send what is queued without blocking (s->lock held). */
static void flush_locked(Client *c)
{
    size_t off = 0;
    while (off < c->out_len && !c->dead) {
        ssize_t n = send(c->fd, c->out + off, c->out_len - off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0)
            off += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        else
            c->dead = true;
    }
    memmove(c->out, c->out + off, c->out_len - off);
    c->out_len -= off;
}

static void on_event(void *opaque, json_t *event)
{
    FyQmpServer *s = opaque;
    char *text = json_dumps(event, 0);
    if (!text)
        return;
    pthread_mutex_lock(&s->lock);
    for (Client *c = s->clients; c; c = c->next) {
        if (c->negotiated)
            queue_locked(c, text);
    }
    pthread_mutex_unlock(&s->lock);
    free(text);
    wake(s);
}

/* ---- input ---- */

typedef struct ReqCtx {
    FyQmpServer *s;
    Client *c;
} ReqCtx;

static void on_value(void *opaque, json_t *v, const char *err)
{
    ReqCtx *r = opaque;
    pthread_mutex_lock(&r->s->lock);
    bool negotiated = r->c->negotiated;
    pthread_mutex_unlock(&r->s->lock);

    json_t *resp = fy_monitor_handle_request(r->s->mon, v, err, &negotiated);

    pthread_mutex_lock(&r->s->lock);
    r->c->negotiated = negotiated;
    pthread_mutex_unlock(&r->s->lock);
    queue_json(r->s, r->c, resp);
    json_decref(resp);
}

static void client_read(FyQmpServer *s, Client *c)
{
    char buf[16384];
    ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (n <= 0) {
        pthread_mutex_lock(&s->lock);
        c->dead = true;
        pthread_mutex_unlock(&s->lock);
        return;
    }
    ReqCtx r = { s, c };
    fy_json_streamer_feed(&c->js, buf, (size_t)n, on_value, &r);
}

/* ---- clients ---- */

static int add_client(FyQmpServer *s, int fd, FyError **errp)
{
    Client *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        fy_error_setg(errp, "out of memory for a QMP client");
        return -1;
    }
    c->fd = fd;
    fy_json_streamer_init(&c->js);
    json_t *g = fy_qmp_greeting();
    char *text = g ? json_dumps(g, 0) : NULL;
    json_decref(g);
    pthread_mutex_lock(&s->lock);
    bool full = s->nclients >= MAX_CLIENTS;
    if (!full) {
        if (text)
            queue_locked(c, text);
        c->next = s->clients;
        s->clients = c;
        s->nclients++;
    }
    pthread_mutex_unlock(&s->lock);
    free(text);
    if (full) {
        fy_json_streamer_destroy(&c->js);
        close(fd);
        free(c);
        fy_error_setg(errp, "too many QMP clients (at most %d)", MAX_CLIENTS);
        return -1;
    }
    wake(s);
    return 0;
}

static void free_client(Client *c)
{
    close(c->fd);
    fy_json_streamer_destroy(&c->js);
    free(c->out);
    free(c);
}

/* Unlink and free the dead clients. */
static void reap(FyQmpServer *s)
{
    Client *dead = NULL;
    pthread_mutex_lock(&s->lock);
    for (Client **pp = &s->clients; *pp;) {
        Client *c = *pp;
        if (c->dead) {
            *pp = c->next;
            c->next = dead;
            dead = c;
            s->nclients--;
        } else {
            pp = &c->next;
        }
    }
    pthread_mutex_unlock(&s->lock);
    while (dead) {
        Client *n = dead->next;
        free_client(dead);
        dead = n;
    }
}

static void accept_clients(FyQmpServer *s)
{
    for (;;) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            return;
        add_client(s, fd, NULL);
    }
}

/* ---- the thread ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* pfd[0] wake, pfd[1] listener, then clients (cl[i] for pfd[i + 2]). */
static int build_pollset(FyQmpServer *s, struct pollfd *pfd, Client **cl,
                         bool stopping)
{
    int n = 2;
    pfd[0] = (struct pollfd){ .fd = s->wake[0], .events = POLLIN };
    pfd[1] = (struct pollfd){ .fd = stopping ? -1 : s->lfd, .events = POLLIN };
    pthread_mutex_lock(&s->lock);
    for (Client *c = s->clients; c && n < MAX_CLIENTS + 2; c = c->next) {
        short ev = stopping ? 0 : POLLIN;
        if (c->out_len)
            ev |= POLLOUT;
        cl[n - 2] = c;
        pfd[n++] = (struct pollfd){ .fd = c->fd, .events = ev };
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}

static bool pending_output(FyQmpServer *s)
{
    bool any = false;
    pthread_mutex_lock(&s->lock);
    for (Client *c = s->clients; c; c = c->next)
        any |= c->out_len > 0 && !c->dead;
    pthread_mutex_unlock(&s->lock);
    return any;
}

static void serve_clients(FyQmpServer *s, struct pollfd *pfd, Client **cl,
                          int n, bool stopping)
{
    for (int i = 2; i < n; i++) {
        Client *c = cl[i - 2];
        if (!stopping && (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
            client_read(s, c);
        pthread_mutex_lock(&s->lock);
        if (c->out_len)
            flush_locked(c);
        pthread_mutex_unlock(&s->lock);
    }
}

static void *server_thread(void *opaque)
{
    FyQmpServer *s = opaque;
    struct pollfd pfd[MAX_CLIENTS + 2];
    Client *cl[MAX_CLIENTS];
    uint64_t deadline = 0;

    for (;;) {
        pthread_mutex_lock(&s->lock);
        bool stopping = s->stop;
        if (stopping && !deadline)
            deadline = now_ms() + (uint64_t)(s->flush_ms > 0 ? s->flush_ms : 0);
        pthread_mutex_unlock(&s->lock);
        if (stopping && (!pending_output(s) || now_ms() >= deadline))
            break;
        int n = build_pollset(s, pfd, cl, stopping);
        int timeout = stopping ? (int)(deadline - now_ms()) : -1;
        if (poll(pfd, (nfds_t)n, timeout) < 0 && errno != EINTR)
            break;
        if (pfd[0].revents & POLLIN) {
            char drain[64];
            while (read(s->wake[0], drain, sizeof(drain)) > 0)
                ;
        }
        if (pfd[1].revents & POLLIN)
            accept_clients(s);
        serve_clients(s, pfd, cl, n, stopping);
        reap(s);
    }
    return NULL;
}

/* ---- API ---- */

FyQmpServer *fy_qmp_server_new(FyMonitor *mon, const char *address,
                               FyError **errp)
{
    FySockAddr a;
    if (fy_sockaddr_parse(address, false, &a, errp) < 0)
        return NULL;
    FyQmpServer *s = calloc(1, sizeof(*s));
    if (!s) {
        fy_error_setg(errp, "out of memory");
        return NULL;
    }
    s->mon = mon;
    s->lfd = -1;
    s->wake[0] = s->wake[1] = -1;
    pthread_mutex_init(&s->lock, NULL);
    s->lfd = fy_sockaddr_listen(&a, &s->address, errp);
    if (s->lfd < 0)
        goto fail;
    if (a.is_unix)
        s->unix_path = strdup(a.path);
    if (pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        fy_error_setg_errno(errp, errno, "QMP server: pipe");
        goto fail;
    }
    if (fy_monitor_add_event_listener(mon, on_event, s) < 0) {
        fy_error_setg(errp, "QMP server: too many event listeners");
        goto fail;
    }
    if (pthread_create(&s->thread, NULL, server_thread, s) != 0) {
        fy_monitor_remove_event_listener(mon, on_event, s);
        fy_error_setg(errp, "QMP server: cannot start its thread");
        goto fail;
    }
    s->thread_started = true;
    return s;
fail:
    fy_qmp_server_free(s, 0);
    return NULL;
}

const char *fy_qmp_server_address(const FyQmpServer *s)
{
    return s->address;
}

int fy_qmp_server_add_client(FyQmpServer *s, int fd, FyError **errp)
{
    return add_client(s, fd, errp);
}

void fy_qmp_server_free(FyQmpServer *s, int timeout_ms)
{
    if (!s)
        return;
    if (s->thread_started) {
        fy_monitor_remove_event_listener(s->mon, on_event, s);
        pthread_mutex_lock(&s->lock);
        s->stop = true;
        s->flush_ms = timeout_ms;
        pthread_mutex_unlock(&s->lock);
        wake(s);
        pthread_join(s->thread, NULL);
    }
    while (s->clients) {
        Client *c = s->clients;
        s->clients = c->next;
        free_client(c);
    }
    if (s->lfd >= 0)
        close(s->lfd);
    if (s->unix_path)
        unlink(s->unix_path);
    for (int i = 0; i < 2; i++) {
        if (s->wake[i] >= 0)
            close(s->wake[i]);
    }
    pthread_mutex_destroy(&s->lock);
    free(s->unix_path);
    free(s->address);
    free(s);
}
