/*
 * listener.c: the incoming side of every transport (FyListener).
 *
 * tcp and unix listen on sockets; accept() waits in poll() on them and on
 * an eventfd, which fy_listener_shutdown() signals so another thread can
 * cancel a blocked accept. exec, fd and file have no connection to wait
 * for: the channel is opened when the listener is made (so a missing file
 * or a bad descriptor fails at once) and the first accept yields it.
 *
 *   new --accept--> channel (tcp/unix: any number; others: exactly once)
 *   new --shutdown--> every later accept fails "cancelled"
 *
 * tcp: all addresses of the host are listened on (tcp:localhost:0 gets ::1
 * and 127.0.0.1, with the port chosen for the first reused for the rest);
 * the address reported is the first. unix: a stale socket file left by an
 * earlier run is removed before bind, and ours is removed on free, but
 * only if it is still ours (same inode).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ferry/uri.h"
#include "io/io-int.h"

#define LISTEN_MAX 4
#define LISTEN_BACKLOG 16

struct FyListener {
    FyUriKind kind;
    char *address;           /* what fy_listener_address() reports */
    int fds[LISTEN_MAX];     /* listening sockets */
    int nfds;
    int family;
    int wake;                /* eventfd, signalled by shutdown */
    atomic_bool shut;
    FyChannel *single;       /* exec/fd/file: the one channel, until taken */
    bool taken;
    char *unix_path;         /* to unlink on free ... */
    dev_t unix_dev;          /* ... if it is still this socket */
    ino_t unix_ino;
};

static int listen_socket(const struct sockaddr *sa, socklen_t len, int family,
                         int *fdp)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return errno;
    int one = 1;
    if (family != AF_UNIX)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* "::" and "0.0.0.0" on one port are two sockets, not a clash. */
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, sa, len) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        int e = errno;
        close(fd);
        return e;
    }
    *fdp = fd;
    return 0;
}

static void set_port(struct sockaddr *sa, uint16_t port)
{
    if (sa->sa_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons(port);
    else if (sa->sa_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

static uint16_t bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

static int listen_tcp(FyListener *l, const FyUri *u, const char *uri,
                      FyError **errp)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(u->host[0] ? u->host : NULL, u->port, &hints, &res);
    if (rc != 0) {
        if (rc == EAI_SYSTEM)
            fy_error_setg_errno(errp, errno, "%s: cannot resolve '%s'", uri, u->host);
        else
            fy_error_setg(errp, "%s: cannot resolve '%s': %s", uri, u->host,
                          gai_strerror(rc));
        return -1;
    }
    int err = ENOENT;
    uint16_t port = 0;
    for (struct addrinfo *ai = res; ai && l->nfds < LISTEN_MAX; ai = ai->ai_next) {
        struct sockaddr_storage ss;
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        if (l->nfds)
            set_port((struct sockaddr *)&ss, port); /* same port everywhere */
        int fd, e = listen_socket((struct sockaddr *)&ss, ai->ai_addrlen,
                                  ai->ai_family, &fd);
        if (e) {
            if (!l->nfds)
                err = e;
            continue; /* a second address that will not bind is no failure */
        }
        if (!l->nfds) {
            port = bound_port(fd);
            l->family = ai->ai_family;
        }
        l->fds[l->nfds++] = fd;
    }
    freeaddrinfo(res);
    if (!l->nfds) {
        fy_error_setg_errno(errp, err, "%s: listen", uri);
        return -1;
    }
    l->address = fy_socket_address(l->fds[0]);
    return 0;
}

static int listen_unix(FyListener *l, const FyUri *u, const char *uri,
                       FyError **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t len = strlen(u->path);
    if (len >= sizeof(sa.sun_path)) {
        fy_error_setg(errp, "%s: socket path longer than %zu bytes", uri,
                      sizeof(sa.sun_path) - 1);
        return -1;
    }
    memcpy(sa.sun_path, u->path, len + 1);
    struct stat st;
    /* A socket file left by an earlier run would make bind fail; anything
     * that is not a socket is not ours to delete. */
    if (lstat(u->path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(u->path);
    int fd, e = listen_socket((struct sockaddr *)&sa, sizeof(sa), AF_UNIX, &fd);
    if (e) {
        fy_error_setg_errno(errp, e, "%s: listen", uri);
        return -1;
    }
    l->fds[l->nfds++] = fd;
    l->family = AF_UNIX;
    l->unix_path = strdup(u->path);
    if (stat(u->path, &st) == 0) {
        l->unix_dev = st.st_dev;
        l->unix_ino = st.st_ino;
    }
    l->address = strdup(uri);
    return 0;
}

static int open_single(FyListener *l, const FyUri *u, const char *uri,
                       FyError **errp)
{
    switch (u->kind) {
    case FY_URI_EXEC:
        l->single = fy_channel_exec_new(u->command, false, errp);
        break;
    case FY_URI_FD:
        l->single = fy_channel_fd_dup(u->fd, uri, errp);
        break;
    case FY_URI_FILE:
        l->single = fy_channel_file_open(u->path, false, u->offset, errp);
        break;
    default:
        break;
    }
    if (!l->single)
        return -1;
    l->address = strdup(uri);
    return 0;
}

FyListener *fy_listener_new(const char *uri, FyError **errp)
{
    FyUri u;
    if (fy_uri_parse(uri, &u, errp) < 0)
        return NULL;
    FyListener *l = calloc(1, sizeof(*l));
    if (!l) {
        fy_error_setg(errp, "%s: out of memory", uri);
        fy_uri_clear(&u);
        return NULL;
    }
    l->kind = u.kind;
    l->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int r;
    if (l->wake < 0) {
        fy_error_setg_errno(errp, errno, "%s: eventfd", uri);
        r = -1;
    } else if (u.kind == FY_URI_TCP) {
        r = listen_tcp(l, &u, uri, errp);
    } else if (u.kind == FY_URI_UNIX) {
        r = listen_unix(l, &u, uri, errp);
    } else {
        r = open_single(l, &u, uri, errp);
    }
    fy_uri_clear(&u);
    if (r == 0 && !l->address) {
        fy_error_setg(errp, "%s: out of memory", uri);
        r = -1;
    }
    if (r < 0) {
        fy_listener_free(l);
        return NULL;
    }
    return l;
}

const char *fy_listener_address(const FyListener *l)
{
    return l->address;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static FyChannel *take_single(FyListener *l, FyError **errp)
{
    if (l->taken) {
        fy_error_setg(errp, "%s: the one channel was already accepted", l->address);
        return NULL;
    }
    l->taken = true;
    FyChannel *c = l->single;
    l->single = NULL;
    return c;
}

static FyChannel *accepted(FyListener *l, int fd, FyError **errp)
{
    fy_socket_tune(fd, l->family);
    FyChannel *c = fy_fd_channel_new(fd, fd, errp, "%s", l->address);
    if (!c)
        close(fd);
    return c;
}

FyChannel *fy_listener_accept(FyListener *l, int timeout_ms, FyError **errp)
{
    if (atomic_load(&l->shut)) {
        fy_error_setg(errp, "%s: accept: cancelled", l->address);
        return NULL;
    }
    if (!l->nfds)
        return take_single(l, errp);

    struct pollfd p[LISTEN_MAX + 1];
    for (int i = 0; i < l->nfds; i++)
        p[i] = (struct pollfd){ .fd = l->fds[i], .events = POLLIN };
    p[l->nfds] = (struct pollfd){ .fd = l->wake, .events = POLLIN };
    int64_t deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : 0;
    for (;;) {
        int left = -1;
        if (timeout_ms >= 0) {
            int64_t d = deadline - now_ms();
            left = d > 0 ? (int)d : 0;
        }
        int r = poll(p, (nfds_t)l->nfds + 1, left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fy_error_setg_errno(errp, errno, "%s: poll", l->address);
            return NULL;
        }
        if (atomic_load(&l->shut) || p[l->nfds].revents) {
            fy_error_setg(errp, "%s: accept: cancelled", l->address);
            return NULL;
        }
        if (r == 0) {
            fy_error_setg(errp, "%s: no connection within %d ms", l->address,
                          timeout_ms);
            return NULL;
        }
        for (int i = 0; i < l->nfds; i++) {
            if (!p[i].revents)
                continue;
            /* The listening socket is non-blocking so a connection that
             * went away between poll and accept cannot block us. */
            int fd = accept4(l->fds[i], NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0)
                return accepted(l, fd, errp);
            if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK &&
                errno != ECONNABORTED && errno != EPROTO) {
                fy_error_setg_errno(errp, errno, "%s: accept", l->address);
                return NULL;
            }
        }
    }
}

void fy_listener_shutdown(FyListener *l)
{
    atomic_store(&l->shut, true);
    if (l->wake >= 0) {
        uint64_t one = 1;
        ssize_t r = write(l->wake, &one, sizeof(one));
        (void)r; /* a full counter is already a wake-up */
    }
}

void fy_listener_free(FyListener *l)
{
    if (!l)
        return;
    for (int i = 0; i < l->nfds; i++)
        close(l->fds[i]);
    struct stat st;
    if (l->unix_path && stat(l->unix_path, &st) == 0 && st.st_dev == l->unix_dev &&
        st.st_ino == l->unix_ino)
        unlink(l->unix_path);
    if (l->wake >= 0)
        close(l->wake);
    fy_channel_close(l->single, NULL);
    free(l->unix_path);
    free(l->address);
    free(l);
}
