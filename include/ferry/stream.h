/*
 * stream.h: the migration stream over a channel (QEMUFile's role).
 *
 * A stream is one direction of a channel with a buffer in front of it:
 * output streams batch small puts into one writev; input streams read ahead
 * and let the loader peek. Page data takes a zero-copy path: fy_put_page()
 * queues a pointer to guest memory and the next flush sends buffer and pages
 * together with one writev.
 *
 * Sticky error (the shape of Redis' rio): the first failure is kept with its
 * message; after it every put is a no-op and every get returns zeros, so
 * callers check fy_stream_error() once at a boundary (end of a section, end
 * of an iteration) instead of after every byte.
 *
 * Invariants:
 * - output: buf[0..buf_len) and the queued iovs are not yet on the channel;
 *   their order is preserved; queued page pointers must stay valid until
 *   the next flush (the RAM code flushes before releasing guest pages).
 * - input: buf[buf_pos..buf_len) is read ahead; offset() is the position of
 *   buf[buf_pos] in the stream, so errors can say where.
 */
#ifndef FERRY_STREAM_H
#define FERRY_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/channel.h"
#include "ferry/error.h"

typedef struct FyStream FyStream;

/* The stream takes ownership of the channel only if own_channel is true. */
FyStream *fy_stream_new_output(FyChannel *c, bool own_channel);
FyStream *fy_stream_new_input(FyChannel *c, bool own_channel);

/* Flush (output) and free. Returns -1 with *errp set if the stream had an
 * error or the final flush/close failed. NULL is a no-op returning 0. */
int fy_stream_close(FyStream *f, FyError **errp);

FyChannel *fy_stream_channel(FyStream *f);
bool fy_stream_is_output(const FyStream *f);

/* ---- sticky error ---- */
/* The kept error, or NULL. Owned by the stream. */
const FyError *fy_stream_error(const FyStream *f);
/* Set the error if none yet (takes ownership of err). */
void fy_stream_set_error(FyStream *f, FyError *err);
void fy_stream_seterr(FyStream *f, const char *fmt, ...) FY_PRINTF(2, 3);
/* Copy the kept error into *errp (prefixing nothing). Returns -1 if there is
 * an error, else 0. */
int fy_stream_check(const FyStream *f, FyError **errp);

/* ---- output ---- */
void fy_put_byte(FyStream *f, uint8_t v);
void fy_put_be16(FyStream *f, uint16_t v);
void fy_put_be32(FyStream *f, uint32_t v);
void fy_put_be64(FyStream *f, uint64_t v);
void fy_put_buffer(FyStream *f, const void *buf, size_t len);
/* u8 length + bytes (no NUL); strings over 255 bytes set the error. */
void fy_put_counted_string(FyStream *f, const char *s);
/* Zero-copy: queue len bytes at p to be sent in place at the next flush. */
void fy_put_page(FyStream *f, const void *p, size_t len);
/* Send everything buffered and queued. Returns 0 or -1 (error is sticky). */
int fy_stream_flush(FyStream *f);

/* ---- input ---- */
uint8_t fy_get_byte(FyStream *f);
uint16_t fy_get_be16(FyStream *f);
uint32_t fy_get_be32(FyStream *f);
uint64_t fy_get_be64(FyStream *f);
/* Read exactly len bytes; returns len, or less with the error set. */
size_t fy_get_buffer(FyStream *f, void *buf, size_t len);
/* Read u8 length + bytes into buf[256] with a terminating NUL. Returns length
 * or -1 (error set). */
int fy_get_counted_string(FyStream *f, char buf[256]);
/* Look at the byte `offset` bytes ahead without consuming (offset < 64).
 * Returns -1 at end of stream or on error (without setting the error for a
 * clean EOF, so a loader can decide what the end means). */
int fy_peek_byte(FyStream *f, size_t offset);
/* Skip len bytes. */
void fy_skip(FyStream *f, size_t len);
/* True once the channel reported EOF and no buffered bytes remain. */
bool fy_stream_eof(FyStream *f);

/* ---- position, counters and rate limit ---- */
/* Input: offset of the next byte to be read. Output: bytes put so far
 * (buffered or sent). Counted from the stream's creation, plus base. */
uint64_t fy_stream_offset(const FyStream *f);
void fy_stream_set_offset_base(FyStream *f, uint64_t base);
/* Bytes that actually crossed the channel. */
uint64_t fy_stream_transferred(const FyStream *f);

/* Bytes per second; 0 = unlimited. Checked per 100 ms window, as QEMU does. */
void fy_stream_set_rate_limit(FyStream *f, uint64_t bytes_per_sec);
uint64_t fy_stream_rate_limit(const FyStream *f);
/* True when this window's budget is spent; the caller should stop sending
 * and call fy_stream_rate_limit_wait(), which sleeps to the next window. */
bool fy_stream_rate_limit_exceeded(FyStream *f);
void fy_stream_rate_limit_wait(FyStream *f);
/* Account bytes sent elsewhere (e.g. on multifd channels) against the limit. */
void fy_stream_rate_limit_account(FyStream *f, uint64_t bytes);

/* ---- return path ----
 * The opposite direction over the same connection: for sockets it is a
 * stream on a dup of the socket; a paired channel can be given instead.
 * Returns NULL with *errp set when the transport has no way back (file,
 * exec). The returned stream is owned by f and freed with it. */
FyStream *fy_stream_return_path(FyStream *f, FyError **errp);
void fy_stream_set_return_path(FyStream *f, FyStream *rp);

#endif
