/*
 * channel-socket.c: connecting tcp (IPv4/IPv6) and unix sockets, and the
 * helpers the listener shares. A connected socket is an fd channel
 * (channel-fd.c) named after the URI, so every error reads
 * "tcp:127.0.0.1:4444: write: Broken pipe".
 *
 * tcp: every address getaddrinfo gives is tried in order (so "localhost"
 * works whichever of ::1 and 127.0.0.1 the peer listens on); the error
 * reported is the last one. TCP_NODELAY is set because the return path
 * and the end of each iteration are small messages that must not wait
 * for Nagle; the bulk of the stream is already batched by the stream.
 * Socket buffers are left to the kernel's autotuning (setting SO_SNDBUF
 * would switch it off and cap below what autotuning reaches).
 */
#include <errno.h>
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
#include "io/io-int.h"

void fy_socket_tune(int fd, int family)
{
    if (family == AF_INET || family == AF_INET6) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
}

char *fy_socket_address(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char *s = NULL;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return NULL;
    if (ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)&ss;
        size_t n = len > offsetof(struct sockaddr_un, sun_path)
                 ? len - offsetof(struct sockaddr_un, sun_path) : 0;
        if (asprintf(&s, "unix:%.*s", (int)strnlen(sun->sun_path, n),
                     sun->sun_path) < 0)
            return NULL;
        return s;
    }
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port,
                    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return NULL;
    const char *fmt = ss.ss_family == AF_INET6 ? "tcp:[%s]:%s" : "tcp:%s:%s";
    if (asprintf(&s, fmt, host, port) < 0)
        return NULL;
    return s;
}

/* connect(2) that survives EINTR: an interrupted connect goes on in the
 * background, so wait for it to finish and read its outcome. Returns 0 or
 * an errno value. */
static int connect_fd(int fd, const struct sockaddr *sa, socklen_t len)
{
    if (connect(fd, sa, len) == 0)
        return 0;
    if (errno != EINTR && errno != EINPROGRESS)
        return errno;
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    while (poll(&p, 1, -1) < 0)
        if (errno != EINTR)
            return errno;
    int err = 0;
    socklen_t elen = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
        return errno;
    return err;
}

static FyChannel *tcp_connect(const FyUri *u, const char *name, FyError **errp)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    int rc = getaddrinfo(u->host[0] ? u->host : NULL, u->port, &hints, &res);
    if (rc != 0) {
        if (rc == EAI_SYSTEM)
            fy_error_setg_errno(errp, errno, "%s: cannot resolve '%s'", name,
                                u->host);
        else
            fy_error_setg(errp, "%s: cannot resolve '%s': %s", name, u->host,
                          gai_strerror(rc));
        return NULL;
    }
    int fd = -1, err = ENOENT;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        fy_socket_tune(fd, ai->ai_family);
        err = connect_fd(fd, ai->ai_addr, ai->ai_addrlen);
        if (err == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fy_error_setg_errno(errp, err, "%s: connect", name);
        return NULL;
    }
    FyChannel *c = fy_fd_channel_new(fd, fd, errp, "%s", name);
    if (!c)
        close(fd);
    return c;
}

static FyChannel *unix_connect(const FyUri *u, const char *name, FyError **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t len = strlen(u->path);
    if (len >= sizeof(sa.sun_path)) {
        fy_error_setg(errp, "%s: socket path longer than %zu bytes", name,
                      sizeof(sa.sun_path) - 1);
        return NULL;
    }
    memcpy(sa.sun_path, u->path, len + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fy_error_setg_errno(errp, errno, "%s: socket", name);
        return NULL;
    }
    int err = connect_fd(fd, (struct sockaddr *)&sa, sizeof(sa));
    if (err) {
        fy_error_setg_errno(errp, err, "%s: connect", name);
        close(fd);
        return NULL;
    }
    FyChannel *c = fy_fd_channel_new(fd, fd, errp, "%s", name);
    if (!c)
        close(fd);
    return c;
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
    case FY_URI_FD:
        c = fy_channel_fd_dup(u.fd, uri, errp);
        break;
    case FY_URI_FILE:
        c = fy_channel_file_open(u.path, true, u.offset, errp);
        break;
    }
    fy_uri_clear(&u);
    return c;
}
