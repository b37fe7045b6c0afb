/*
 * uri.c: one parser for every migration URI (see uri.h for the forms).
 *
 * Every error is "invalid migration URI '<uri>': <reason>". On error the
 * FyUri holds nothing to free; on success the caller frees it with
 * fy_uri_clear(). Numbers are strict: decimal, or hex with 0x for the file
 * offset; no sign, no spaces, no trailing garbage, no overflow.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "ferry/uri.h"

static const char *const kind_names[] = {
    [FY_URI_TCP] = "tcp", [FY_URI_UNIX] = "unix", [FY_URI_EXEC] = "exec",
    [FY_URI_FD] = "fd",   [FY_URI_FILE] = "file",
};

const char *fy_uri_kind_name(FyUriKind k)
{
    return (unsigned)k < sizeof(kind_names) / sizeof(kind_names[0])
           ? kind_names[k] : "unknown";
}

static int bad(FyError **errp, const char *uri, const char *fmt, ...)
    FY_PRINTF(3, 4);
static int bad(FyError **errp, const char *uri, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    fy_error_setg(errp, "invalid migration URI '%s': %s", uri, why);
    return -1;
}

/* Strict unsigned parse of s[0..len): decimal, or 0x hex if allow_hex. */
static bool parse_u64(const char *s, size_t len, bool allow_hex, uint64_t *out)
{
    unsigned base = 10;
    if (allow_hex && len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
        len -= 2;
    }
    if (!len)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned d;
        char ch = s[i];
        if (ch >= '0' && ch <= '9')
            d = (unsigned)(ch - '0');
        else if (base == 16 && ch >= 'a' && ch <= 'f')
            d = (unsigned)(ch - 'a' + 10);
        else if (base == 16 && ch >= 'A' && ch <= 'F')
            d = (unsigned)(ch - 'A' + 10);
        else
            return false;
        if (v > (UINT64_MAX - d) / base)
            return false;
        v = v * base + d;
    }
    *out = v;
    return true;
}

static int parse_tcp(const char *uri, const char *rest, FyUri *u, FyError **errp)
{
    const char *host = rest, *host_end, *port;
    if (*rest == '[') {
        host = rest + 1;
        host_end = strchr(host, ']');
        if (!host_end)
            return bad(errp, uri, "missing ']' after the IPv6 address");
        if (host_end == host)
            return bad(errp, uri, "empty IPv6 address in brackets");
        if (host_end[1] != ':')
            return bad(errp, uri, host_end[1] ? "expected ':PORT' after ']'"
                                              : "missing port");
        port = host_end + 2;
    } else {
        host_end = strrchr(rest, ':');
        if (!host_end)
            return bad(errp, uri, "missing port");
        if (memchr(rest, ':', (size_t)(host_end - rest)))
            return bad(errp, uri, "an IPv6 address must be in brackets, as in "
                                  "tcp:[::1]:4444");
        port = host_end + 1;
    }
    size_t hlen = (size_t)(host_end - host);
    if (hlen >= sizeof(u->host))
        return bad(errp, uri, "host name longer than %zu bytes", sizeof(u->host) - 1);
    if (!*port)
        return bad(errp, uri, "missing port");
    uint64_t p;
    if (!parse_u64(port, strlen(port), false, &p) || p > 65535)
        return bad(errp, uri, "bad port '%s' (a number from 0 to 65535)", port);
    memcpy(u->host, host, hlen);
    u->host[hlen] = 0;
    snprintf(u->port, sizeof(u->port), "%u", (unsigned)p);
    return 0;
}

static int parse_unix(const char *uri, const char *rest, FyUri *u, FyError **errp)
{
    size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    if (!*rest)
        return bad(errp, uri, "empty socket path");
    if (strlen(rest) > max)
        return bad(errp, uri, "socket path is %zu bytes, longer than the %zu a "
                   "unix socket allows", strlen(rest), max);
    u->path = strdup(rest);
    return u->path ? 0 : bad(errp, uri, "out of memory");
}

static int parse_fd(const char *uri, const char *rest, FyUri *u, FyError **errp)
{
    uint64_t v;
    if (!*rest)
        return bad(errp, uri, "missing file descriptor number");
    if (!parse_u64(rest, strlen(rest), false, &v) || v > INT_MAX)
        return bad(errp, uri, "bad file descriptor number '%s'", rest);
    u->fd = (int)v;
    return 0;
}

/* QEMU's rule: the first ",offset=" ends the path; other commas belong to
 * the path. */
static int parse_file(const char *uri, const char *rest, FyUri *u, FyError **errp)
{
    const char *opt = strstr(rest, ",offset=");
    size_t plen = opt ? (size_t)(opt - rest) : strlen(rest);
    if (!plen)
        return bad(errp, uri, "empty file path");
    if (opt) {
        const char *num = opt + strlen(",offset=");
        if (!parse_u64(num, strlen(num), true, &u->offset) ||
            u->offset > (uint64_t)INT64_MAX)
            return bad(errp, uri, "bad offset '%s' (decimal, or hex with 0x)", num);
    }
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
        return bad(errp, uri, "missing transport prefix (tcp:, unix:, exec:, "
                              "fd: or file:)");
    size_t slen = (size_t)(colon - uri);
    const char *rest = colon + 1;
    int kind = -1;
    for (size_t k = 0; k < sizeof(kind_names) / sizeof(kind_names[0]); k++)
        if (strlen(kind_names[k]) == slen && !memcmp(uri, kind_names[k], slen))
            kind = (int)k;
    if (kind < 0)
        return bad(errp, uri, "unknown transport '%.*s' (expected tcp, unix, "
                   "exec, fd or file)", (int)(slen > 32 ? 32 : slen), uri);
    u->kind = (FyUriKind)kind;
    int r;
    switch (u->kind) {
    case FY_URI_TCP:
        r = parse_tcp(uri, rest, u, errp);
        break;
    case FY_URI_UNIX:
        r = parse_unix(uri, rest, u, errp);
        break;
    case FY_URI_EXEC:
        if (!*rest)
            return bad(errp, uri, "empty command");
        u->command = strdup(rest);
        r = u->command ? 0 : bad(errp, uri, "out of memory");
        break;
    case FY_URI_FD:
        r = parse_fd(uri, rest, u, errp);
        break;
    case FY_URI_FILE:
        r = parse_file(uri, rest, u, errp);
        break;
    default:
        r = -1;
    }
    if (r < 0)
        fy_uri_clear(u);
    return r;
}

void fy_uri_clear(FyUri *u)
{
    free(u->path);
    free(u->command);
    u->path = u->command = NULL;
}
