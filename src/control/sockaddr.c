/*
 * sockaddr.c: the monitor's socket addresses, "unix:PATH" and
 * "tcp:HOST:PORT" (HOST may be [IPv6]), and listening/connecting on them.
 *
 * QEMU users write "-qmp unix:/tmp/q,server=on,wait=off"; the options after
 * the first comma are accepted and dropped, since a ferry monitor always
 * serves and never waits for a client.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control/control-int.h"

static int copy_field(char *dst, size_t room, const char *src, size_t len,
                      const char *what, const char *addr, FyError **errp)
{
    if (len == 0 || len >= room) {
        fy_error_setg(errp, "invalid monitor address '%s': %s %s", addr, what,
                      len == 0 ? "is empty" : "is too long");
        return -1;
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
    return 0;
}

static int parse_tcp(const char *rest, size_t len, FySockAddr *out,
                     const char *addr, FyError **errp)
{
    const char *colon;
    const char *host = rest;
    size_t hlen;
    if (len && rest[0] == '[') {
        const char *close = memchr(rest, ']', len);
        if (!close || (size_t)(close + 1 - rest) >= len || close[1] != ':') {
            fy_error_setg(errp, "invalid monitor address '%s': expected "
                          "tcp:[IPV6]:PORT", addr);
            return -1;
        }
        host = rest + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = memrchr(rest, ':', len);
        if (!colon) {
            fy_error_setg(errp, "invalid monitor address '%s': missing port",
                          addr);
            return -1;
        }
        hlen = (size_t)(colon - rest);
    }
    if (copy_field(out->host, sizeof(out->host), host, hlen, "host", addr,
                   errp) < 0)
        return -1;
    return copy_field(out->port, sizeof(out->port), colon + 1,
                      len - (size_t)(colon + 1 - rest), "port", addr, errp);
}

int fy_sockaddr_parse(const char *s, bool bare_is_unix, FySockAddr *out,
                      FyError **errp)
{
    memset(out, 0, sizeof(*out));
    size_t len = strcspn(s, ",");
    if (!strncmp(s, "unix:", 5)) {
        out->is_unix = true;
        return copy_field(out->path, sizeof(out->path), s + 5, len - 5,
                          "path", s, errp);
    }
    if (!strncmp(s, "tcp:", 4))
        return parse_tcp(s + 4, len - 4, out, s, errp);
    if (bare_is_unix && len > 0 && !strchr(s, ':')) {
        out->is_unix = true;
        return copy_field(out->path, sizeof(out->path), s, len, "path", s,
                          errp);
    }
    fy_error_setg(errp, "invalid monitor address '%s': expected unix:PATH or "
                  "tcp:HOST:PORT", s);
    return -1;
}

/* ---- unix ---- */

static void unix_addr(const FySockAddr *a, struct sockaddr_un *sun)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, a->path, strlen(a->path) + 1);
}

/* Replace a socket file left by a process that is gone; refuse to remove
 * anything that is not a socket, or a socket someone still listens on. */
static int remove_stale(const char *path, FyError **errp)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return 0;
    if (!S_ISSOCK(st.st_mode)) {
        fy_error_setg(errp, "cannot listen on unix:%s: the file exists and is "
                      "not a socket", path);
        return -1;
    }
    FySockAddr a = { .is_unix = true };
    snprintf(a.path, sizeof(a.path), "%s", path);
    int fd = fy_sockaddr_connect(&a, 100, NULL);
    if (fd >= 0) {
        close(fd);
        fy_error_setg(errp, "cannot listen on unix:%s: another process is "
                      "listening there", path);
        return -1;
    }
    unlink(path);
    return 0;
}

static int listen_unix(const FySockAddr *a, char **bound, FyError **errp)
{
    struct sockaddr_un sun;
    if (remove_stale(a->path, errp) < 0)
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        fy_error_setg_errno(errp, errno, "cannot listen on unix:%s: socket",
                            a->path);
        return -1;
    }
    unix_addr(a, &sun);
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
        listen(fd, 128) < 0) {
        fy_error_setg_errno(errp, errno, "cannot listen on unix:%s", a->path);
        close(fd);
        return -1;
    }
    if (asprintf(bound, "unix:%s", a->path) < 0) {
        *bound = NULL;
        fy_error_setg(errp, "out of memory");
        close(fd);
        unlink(a->path);
        return -1;
    }
    return fd;
}

/* ---- tcp ---- */

static char *tcp_name(const struct sockaddr *sa, socklen_t len)
{
    char host[NI_MAXHOST], serv[NI_MAXSERV], *s = NULL;
    if (getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return NULL;
    bool v6 = strchr(host, ':') != NULL;
    if (asprintf(&s, v6 ? "tcp:[%s]:%s" : "tcp:%s:%s", host, serv) < 0)
        return NULL;
    return s;
}

static int listen_tcp(const FySockAddr *a, char **bound, FyError **errp)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE }, *res, *ai;
    int rc = getaddrinfo(a->host, a->port, &hints, &res);
    if (rc != 0) {
        fy_error_setg(errp, "cannot listen on tcp:%s:%s: %s", a->host, a->port,
                      gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    for (ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC |
                    SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fy_error_setg_errno(errp, err, "cannot listen on tcp:%s:%s", a->host,
                            a->port);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *bound = tcp_name((struct sockaddr *)&ss, sl);
    if (!*bound) {
        fy_error_setg(errp, "out of memory");
        close(fd);
        return -1;
    }
    return fd;
}

int fy_sockaddr_listen(const FySockAddr *a, char **bound, FyError **errp)
{
    return a->is_unix ? listen_unix(a, bound, errp) : listen_tcp(a, bound, errp);
}

/* ---- connect ---- */

static int connect_wait(int fd, const struct sockaddr *sa, socklen_t len,
                        int timeout_ms)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    int r = connect(fd, sa, len);
    if (r < 0 && errno == EINPROGRESS) {
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int n;
        do {
            n = poll(&p, 1, timeout_ms);
        } while (n < 0 && errno == EINTR);
        if (n == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr) {
            errno = soerr;
            return -1;
        }
        r = 0;
    }
    if (r == 0)
        fcntl(fd, F_SETFL, fl);
    return r;
}

int fy_sockaddr_connect(const FySockAddr *a, int timeout_ms, FyError **errp)
{
    if (a->is_unix) {
        struct sockaddr_un sun;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        unix_addr(a, &sun);
        if (fd < 0 || connect_wait(fd, (struct sockaddr *)&sun, sizeof(sun),
                                   timeout_ms) < 0) {
            fy_error_setg_errno(errp, errno, "cannot connect to unix:%s",
                                a->path);
            if (fd >= 0)
                close(fd);
            return -1;
        }
        return fd;
    }
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
    int rc = getaddrinfo(a->host, a->port, &hints, &res);
    if (rc != 0) {
        fy_error_setg(errp, "cannot connect to tcp:%s:%s: %s", a->host,
                      a->port, gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    for (ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd >= 0 && connect_wait(fd, ai->ai_addr, ai->ai_addrlen,
                                    timeout_ms) < 0) {
            err = errno;
            close(fd);
            fd = -1;
        } else if (fd < 0) {
            err = errno;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        fy_error_setg_errno(errp, err, "cannot connect to tcp:%s:%s", a->host,
                            a->port);
    return fd;
}
