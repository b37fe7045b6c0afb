/*
 * control-int.h: what the control layer's files share.
 *
 * Files: monitor.c (the command registry, argument checks, events),
 * qmp-protocol.c (one QMP request -> one response, negotiation mode),
 * qmp-commands.c (the migration commands and the generic ones),
 * json-stream.c (splitting a byte stream into JSON values),
 * qmp-server.c (sockets, clients, one poll thread), qmp-client.c,
 * sockaddr.c (unix/tcp addresses), hmp.c (the human monitor's parser and
 * commands), hmp-info.c (the `info` formatters).
 */
#ifndef FERRY_CONTROL_INT_H
#define FERRY_CONTROL_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "ferry/hmp.h"
#include "ferry/qmp.h"

/* ---- json-stream.c ----
 * Frames top-level JSON values in a byte stream (QEMU's json-streamer's
 * role): it tracks strings and nesting only, and hands each complete value
 * to jansson. Oversized or too deep input is reported as an error and
 * dropped, and the framer starts afresh. */
typedef struct FyJsonStreamer {
    char *buf;
    size_t len, cap;
    int depth;
    bool in_string, escape;
    int kind;       /* 0 between values, 1 container, 2 string, 3 bare word */
    bool overflow;  /* dropping the rest of an oversized value */
} FyJsonStreamer;

/* v: the parsed value (borrowed) or NULL; err: why it did not parse. */
typedef void (*FyJsonValueFn)(void *opaque, json_t *v, const char *err);

void fy_json_streamer_init(FyJsonStreamer *s);
void fy_json_streamer_destroy(FyJsonStreamer *s);
void fy_json_streamer_feed(FyJsonStreamer *s, const char *data, size_t len,
                           FyJsonValueFn fn, void *opaque);

/* ---- sockaddr.c ---- */
/* Parse "unix:PATH" / "tcp:HOST:PORT" (QEMU-style ",opt=..." suffixes
 * dropped); a bare path is unix when bare_is_unix. */
typedef struct FySockAddr {
    bool is_unix;
    char path[108];
    char host[256];
    char port[16];
} FySockAddr;
int fy_sockaddr_parse(const char *s, bool bare_is_unix, FySockAddr *out,
                      FyError **errp);
/* A listening socket (non-blocking, close-on-exec); *bound gets the
 * address actually bound (malloc()ed). */
int fy_sockaddr_listen(const FySockAddr *a, char **bound, FyError **errp);
/* A connected socket (blocking, close-on-exec). */
int fy_sockaddr_connect(const FySockAddr *a, int timeout_ms, FyError **errp);

/* ---- monitor.c ---- */
/* The names of the registered commands, in registration order. */
size_t fy_monitor_command_count(FyMonitor *mon);
const char *fy_monitor_command_name(FyMonitor *mon, size_t i);
FySaveState *fy_monitor_savestate(FyMonitor *mon);

/* ---- qmp-commands.c ---- */
int fy_qmp_register_builtin(FyMonitor *mon, FyError **errp);

/* ---- hmp-info.c ---- */
/* A growable output string. */
typedef struct FyStrBuf {
    char *s;
    size_t len, cap;
    bool oom;
} FyStrBuf;
void fy_sb_printf(FyStrBuf *b, const char *fmt, ...) FY_PRINTF(2, 3);
void fy_sb_puts(FyStrBuf *b, const char *s);

void fy_hmp_format_migrate(FyStrBuf *b, json_t *info, FySaveState *ss);
void fy_hmp_format_capabilities(FyStrBuf *b, json_t *caps);
void fy_hmp_format_parameters(FyStrBuf *b, json_t *params);
void fy_hmp_format_status(FyStrBuf *b, json_t *status);

#endif
