/*
 * uri.h: migration URIs, one parser for every transport.
 *
 *   tcp:HOST:PORT        HOST may be a name, IPv4, or [IPv6]; PORT 0 = any
 *   unix:PATH
 *   exec:COMMAND         the rest of the string, given to /bin/sh -c
 *   fd:N                 an already-open descriptor number; the channel works
 *                        on a duplicate, so N stays the caller's to close
 *   file:PATH[,offset=N] the stream starts N bytes into the file (decimal,
 *                        or 0x hex), leaving room for a manager's own header
 *
 * Errors name the URI and the reason: "invalid migration URI 'tcp:foo':
 * missing port".
 */
#ifndef FERRY_URI_H
#define FERRY_URI_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/channel.h"
#include "ferry/error.h"

typedef enum {
    FY_URI_TCP,
    FY_URI_UNIX,
    FY_URI_EXEC,
    FY_URI_FD,
    FY_URI_FILE,
} FyUriKind;

typedef struct FyUri {
    FyUriKind kind;
    char host[256];  /* tcp: without brackets */
    char port[16];   /* tcp */
    char *path;      /* unix, file: heap */
    char *command;   /* exec: heap */
    int fd;          /* fd */
    uint64_t offset; /* file */
} FyUri;

int fy_uri_parse(const char *uri, FyUri *out, FyError **errp);
void fy_uri_clear(FyUri *u);
const char *fy_uri_kind_name(FyUriKind k);

/* Outgoing: connect (tcp, unix), spawn (exec, writing), wrap (fd), open for
 * writing (file). */
FyChannel *fy_channel_open_outgoing(const char *uri, FyError **errp);

/* Incoming side. A listener exists for tcp and unix; for exec, fd and file
 * "accepting" yields the single channel once. */
typedef struct FyListener FyListener;
FyListener *fy_listener_new(const char *uri, FyError **errp);
/* Block until a peer connects (or shutdown). timeout_ms < 0: forever. */
FyChannel *fy_listener_accept(FyListener *l, int timeout_ms, FyError **errp);
/* The address actually bound, e.g. "tcp:127.0.0.1:40123" for port 0. */
const char *fy_listener_address(const FyListener *l);
/* Wake a blocked accept from another thread; it fails with "cancelled". */
void fy_listener_shutdown(FyListener *l);
void fy_listener_free(FyListener *l);

#endif
