/*
 * uri.c: one parser for every migration URI, and the outgoing side of each
 * transport. Errors name the URI and the reason.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/uri.h"

const char *fy_uri_kind_name(FyUriKind k)
{
    static const char *names[] = { "tcp", "unix", "exec", "fd", "file" };
    return (unsigned)k < 5 ? names[k] : "?";
}

static int bad(FyError **errp, const char *uri, const char *why)
{
    fy_error_setg(errp, "invalid migration URI '%s': %s", uri, why);
    return -1;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!*s || *s == '-' || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int parse_tcp(const char *uri, const char *rest, FyUri *u, FyError **errp)
{
    const char *colon;
    if (*rest == '[') {
        const char *close = strchr(rest, ']');
        if (!close)
            return bad(errp, uri, "missing ']' after IPv6 address");
        if ((size_t)(close - rest - 1) >= sizeof(u->host))
            return bad(errp, uri, "host name too long");
        memcpy(u->host, rest + 1, (size_t)(close - rest - 1));
        u->host[close - rest - 1] = 0;
        if (close[1] != ':')
            return bad(errp, uri, "missing port");
        colon = close + 1;
    } else {
        colon = strrchr(rest, ':');
        if (!colon)
            return bad(errp, uri, "missing port");
        if ((size_t)(colon - rest) >= sizeof(u->host))
            return bad(errp, uri, "host name too long");
        memcpy(u->host, rest, (size_t)(colon - rest));
        u->host[colon - rest] = 0;
        if (strchr(u->host, ':'))
            return bad(errp, uri, "IPv6 addresses must be in brackets: tcp:[::1]:PORT");
    }
    const char *port = colon + 1;
    uint64_t p;
    /* QEMU accepts ",option" suffixes after the port; ferry has none yet. */
    if (!*port)
        return bad(errp, uri, "missing port");
    if (parse_u64(port, &p) < 0 || p > 65535)
        return bad(errp, uri, "port must be a number from 0 to 65535");
    snprintf(u->port, sizeof(u->port), "%u", (unsigned)p);
    if (!u->host[0])
        strcpy(u->host, "0.0.0.0");
    return 0;
}

static int parse_file(const char *uri, const char *rest, FyUri *u, FyError **errp)
{
    const char *comma = strstr(rest, ",offset=");
    size_t plen = comma ? (size_t)(comma - rest) : strlen(rest);
    if (!plen)
        return bad(errp, uri, "empty file path");
    if (comma && parse_u64(comma + 8, &u->offset) < 0)
        return bad(errp, uri, "offset must be a number (decimal or 0x hex)");
    if (!comma && strchr(rest, ','))
        return bad(errp, uri, "unknown file option (only offset=N is known)");
    u->path = strndup(rest, plen);
    return u->path ? 0 : bad(errp, uri, "out of memory");
}

int fy_uri_parse(const char *uri, FyUri *u, FyError **errp)
{
    memset(u, 0, sizeof(*u));
    u->fd = -1;
    if (!uri || !*uri)
        return bad(errp, uri ? uri : "", "empty");
    const char *colon = strchr(uri, ':');
    if (!colon)
        return bad(errp, uri, "missing transport (tcp:, unix:, exec:, fd:, file:)");
    size_t slen = (size_t)(colon - uri);
    const char *rest = colon + 1;
    if (slen == 3 && !strncmp(uri, "tcp", 3)) {
        u->kind = FY_URI_TCP;
        return parse_tcp(uri, rest, u, errp);
    }
    if (slen == 4 && !strncmp(uri, "unix", 4)) {
        u->kind = FY_URI_UNIX;
        if (!*rest)
            return bad(errp, uri, "empty socket path");
        if (strlen(rest) >= 108)
            return bad(errp, uri, "socket path longer than 107 bytes");
        u->path = strdup(rest);
        return 0;
    }
    if (slen == 4 && !strncmp(uri, "exec", 4)) {
        u->kind = FY_URI_EXEC;
        if (!*rest)
            return bad(errp, uri, "empty command");
        u->command = strdup(rest);
        return 0;
    }
    if (slen == 2 && !strncmp(uri, "fd", 2)) {
        u->kind = FY_URI_FD;
        uint64_t v;
        if (parse_u64(rest, &v) < 0 || v > INT_MAX)
            return bad(errp, uri, "fd: needs a file descriptor number");
        u->fd = (int)v;
        return 0;
    }
    if (slen == 4 && !strncmp(uri, "file", 4)) {
        u->kind = FY_URI_FILE;
        return parse_file(uri, rest, u, errp);
    }
    if (slen == 4 && !strncmp(uri, "rdma", 4))
        return bad(errp, uri, "rdma needs RDMA hardware, which this build does not support");
    return bad(errp, uri, "unknown transport (tcp:, unix:, exec:, fd:, file:)");
}

void fy_uri_clear(FyUri *u)
{
    free(u->path);
    free(u->command);
    u->path = u->command = NULL;
}
