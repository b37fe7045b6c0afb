/*
 * channel-socket.c: tcp (IPv4/IPv6) and unix sockets, connecting and
 * listening. Connected sockets are fd channels (channel-fd.c); a listener
 * waits in poll() on the socket and a wake pipe, so another thread can
 * cancel a blocked accept.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ferry/uri.h"

struct FyListener {
    FyUri uri;
    char *address;
    int fd;            /* listening socket, or -1 for one-shot kinds */
    int wake[2];       /* pipe: written by fy_listener_shutdown */
    bool used;         /* one-shot kinds yield their channel once */
    bool shut;
};

static void tune_tcp(int fd)
{
    int one = 1, buf = 4 << 20;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
}

static FyChannel *tcp_connect(const FyUri *u, const char *uri, FyError **errp)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
    int rc = getaddrinfo(u->host, u->port, &hints, &res);
    if (rc) {
        fy_error_setg(errp, "%s: cannot resolve '%s': %s", uri, u->host, gai_strerror(rc));
        return NULL;
    }
    int fd = -1, err = 0;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        tune_tcp(fd);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fy_error_setg_errno(errp, err, "%s: connect", uri);
        return NULL;
    }
    return fy_channel_fd_new(fd, uri, errp);
}

static int unix_addr(const char *path, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path))
        return -1;
    strcpy(sa->sun_path, path);
    return 0;
}

static FyChannel *unix_connect(const FyUri *u, const char *uri, FyError **errp)
{
    struct sockaddr_un sa;
    if (unix_addr(u->path, &sa) < 0) {
        fy_error_setg(errp, "%s: socket path too long", uri);
        return NULL;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fy_error_setg_errno(errp, errno, "%s: socket", uri);
        return NULL;
    }
    int buf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fy_error_setg_errno(errp, errno, "%s: connect", uri);
        close(fd);
        return NULL;
    }
    return fy_channel_fd_new(fd, uri, errp);
}

FyChannel *fy_channel_open_outgoing(const char *uri, FyError **errp)
{
    FyUri u;
    if (fy_uri_parse(uri, &u, errp) < 0)
        return NULL;
    FyChannel *c = NULL;
    switch (u.kind) {
    case FY_URI_TCP:
        c = tcp_connect(&u, uri, errp);
        break;
    case FY_URI_UNIX:
        c = unix_connect(&u, uri, errp);
        break;
    case FY_URI_EXEC:
        c = fy_channel_exec_new(u.command, true, errp);
        break;
    case FY_URI_FD: {
        /* The channel owns a duplicate, so closing it leaves the caller's fd. */
        int fd = fcntl(u.fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0)
            fy_error_setg_errno(errp, errno, "%s: file descriptor %d", uri, u.fd);
        else if (!(c = fy_channel_fd_new(fd, uri, errp)))
            close(fd);
        break;
    }
    case FY_URI_FILE:
        c = fy_channel_file_open(u.path, true, u.offset, errp);
        break;
    }
    fy_uri_clear(&u);
    return c;
}

/* ---- listeners ---- */

static int listen_tcp(FyListener *l, const char *uri, FyError **errp)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res;
    int rc = getaddrinfo(l->uri.host, l->uri.port, &hints, &res);
    if (rc) {
        fy_error_setg(errp, "%s: cannot resolve '%s': %s", uri, l->uri.host,
                      gai_strerror(rc));
        return -1;
    }
    int err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 16) == 0) {
            l->fd = fd;
            break;
        }
        err = errno;
        close(fd);
    }
    freeaddrinfo(res);
    if (l->fd < 0) {
        fy_error_setg_errno(errp, err, "%s: listen", uri);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[128] = "?", port[16] = "?";
    if (getsockname(l->fd, (struct sockaddr *)&ss, &len) == 0)
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV);
    if (ss.ss_family == AF_INET6)
        return asprintf(&l->address, "tcp:[%s]:%s", host, port) < 0 ? -1 : 0;
    return asprintf(&l->address, "tcp:%s:%s", host, port) < 0 ? -1 : 0;
}

static int listen_unix(FyListener *l, const char *uri, FyError **errp)
{
    struct sockaddr_un sa;
    if (unix_addr(l->uri.path, &sa) < 0) {
        fy_error_setg(errp, "%s: socket path too long", uri);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fy_error_setg_errno(errp, errno, "%s: socket", uri);
        return -1;
    }
    unlink(l->uri.path); /* a stale socket from an earlier run */
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
        fy_error_setg_errno(errp, errno, "%s: listen", uri);
        close(fd);
        return -1;
    }
    l->fd = fd;
    l->address = strdup(uri);
    return 0;
}

FyListener *fy_listener_new(const char *uri, FyError **errp)
{
    FyListener *l = calloc(1, sizeof(*l));
    if (!l) {
        fy_error_setg(errp, "%s: out of memory", uri);
        return NULL;
    }
    l->fd = -1;
    l->wake[0] = l->wake[1] = -1;
    if (fy_uri_parse(uri, &l->uri, errp) < 0) {
        free(l);
        return NULL;
    }
    if (pipe2(l->wake, O_CLOEXEC) < 0) {
        fy_error_setg_errno(errp, errno, "%s: pipe", uri);
        fy_listener_free(l);
        return NULL;
    }
    int r = 0;
    if (l->uri.kind == FY_URI_TCP)
        r = listen_tcp(l, uri, errp);
    else if (l->uri.kind == FY_URI_UNIX)
        r = listen_unix(l, uri, errp);
    else
        l->address = strdup(uri);
    if (r < 0 || !l->address) {
        fy_error_setg(errp, "%s: out of memory", uri);
        fy_listener_free(l);
        return NULL;
    }
    return l;
}

const char *fy_listener_address(const FyListener *l)
{
    return l->address;
}

static FyChannel *one_shot(FyListener *l, FyError **errp)
{
    if (l->used) {
        fy_error_setg(errp, "%s: already accepted its one channel", l->address);
        return NULL;
    }
    l->used = true;
    switch (l->uri.kind) {
    case FY_URI_EXEC:
        return fy_channel_exec_new(l->uri.command, false, errp);
    case FY_URI_FILE:
        return fy_channel_file_open(l->uri.path, false, l->uri.offset, errp);
    case FY_URI_FD: {
        int fd = fcntl(l->uri.fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            fy_error_setg_errno(errp, errno, "%s: file descriptor %d", l->address, l->uri.fd);
            return NULL;
        }
        FyChannel *c = fy_channel_fd_new(fd, l->address, errp);
        if (!c)
            close(fd);
        return c;
    }
    default:
        return NULL;
    }
}

FyChannel *fy_listener_accept(FyListener *l, int timeout_ms, FyError **errp)
{
    if (l->fd < 0)
        return one_shot(l, errp);
    struct pollfd p[2] = { { .fd = l->fd, .events = POLLIN },
                           { .fd = l->wake[0], .events = POLLIN } };
    for (;;) {
        if (l->shut) {
            fy_error_setg(errp, "%s: cancelled while waiting for a connection", l->address);
            return NULL;
        }
        int r = poll(p, 2, timeout_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fy_error_setg_errno(errp, errno, "%s: poll", l->address);
            return NULL;
        }
        if (r == 0) {
            fy_error_setg(errp, "%s: no connection within %d ms", l->address, timeout_ms);
            return NULL;
        }
        if (p[1].revents) {
            fy_error_setg(errp, "%s: cancelled while waiting for a connection", l->address);
            return NULL;
        }
        int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)
                continue;
            fy_error_setg_errno(errp, errno, "%s: accept", l->address);
            return NULL;
        }
        if (l->uri.kind == FY_URI_TCP)
            tune_tcp(fd);
        FyChannel *c = fy_channel_fd_new(fd, l->address, errp);
        if (!c)
            close(fd);
        return c;
    }
}

void fy_listener_shutdown(FyListener *l)
{
    l->shut = true;
    if (l->wake[1] >= 0) {
        ssize_t r = write(l->wake[1], "x", 1);
        (void)r;
    }
}

void fy_listener_free(FyListener *l)
{
    if (!l)
        return;
    if (l->fd >= 0) {
        close(l->fd);
        if (l->uri.kind == FY_URI_UNIX && l->uri.path)
            unlink(l->uri.path);
    }
    if (l->wake[0] >= 0)
        close(l->wake[0]);
    if (l->wake[1] >= 0)
        close(l->wake[1]);
    fy_uri_clear(&l->uri);
    free(l->address);
    free(l);
}
