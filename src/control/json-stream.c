/*
 * json-stream.c: split a byte stream into top-level JSON values.
 *
 * QMP peers send values back to back, with or without newlines, and a value
 * may arrive in pieces. The framer only follows strings (with escapes) and
 * the nesting of {} and []; jansson parses each framed value. States:
 *
 *   between ('{' '[') -> container --depth back to 0--> between
 *   between '"'       -> string --closing quote--> between
 *   between other     -> bare word (true, 12, ...) --space/structural--> between
 *
 * A value longer than FY_QMP_MAX_REQUEST or nested deeper than
 * FY_QMP_MAX_DEPTH is reported once as an error, and the rest of it is
 * skipped (its nesting still followed) so the stream stays in step.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "control/control-int.h"

enum { K_BETWEEN, K_CONTAINER, K_STRING, K_WORD };

void fy_json_streamer_init(FyJsonStreamer *s)
{
    memset(s, 0, sizeof(*s));
}

void fy_json_streamer_destroy(FyJsonStreamer *s)
{
    free(s->buf);
    memset(s, 0, sizeof(*s));
}

static void reset(FyJsonStreamer *s)
{
    s->len = 0;
    s->depth = 0;
    s->in_string = s->escape = false;
    s->kind = K_BETWEEN;
    s->overflow = false;
}

static void fail(FyJsonStreamer *s, const char *why, FyJsonValueFn fn,
                 void *opaque)
{
    s->overflow = true;
    s->len = 0;
    fn(opaque, NULL, why);
}

static void append(FyJsonStreamer *s, char c, FyJsonValueFn fn, void *opaque)
{
    if (s->overflow)
        return;
    if (s->len >= FY_QMP_MAX_REQUEST) {
        fail(s, "input too large", fn, opaque);
        return;
    }
    if (s->len == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 256;
        char *n = realloc(s->buf, ncap);
        if (!n) {
            fail(s, "out of memory", fn, opaque);
            return;
        }
        s->buf = n;
        s->cap = ncap;
    }
    s->buf[s->len++] = c;
}

static void complete(FyJsonStreamer *s, FyJsonValueFn fn, void *opaque)
{
    if (!s->overflow) {
        json_error_t err;
        json_t *v = json_loadb(s->buf, s->len, JSON_DECODE_ANY, &err);
        fn(opaque, v, v ? NULL : err.text);
        json_decref(v);
    }
    reset(s);
}

/* Returns true when the string ended with c. */
static bool string_char(FyJsonStreamer *s, char c)
{
    if (s->escape)
        s->escape = false;
    else if (c == '\\')
        s->escape = true;
    else if (c == '"')
        return true;
    return false;
}

static void container_char(FyJsonStreamer *s, char c, FyJsonValueFn fn,
                           void *opaque)
{
    append(s, c, fn, opaque);
    if (s->in_string) {
        if (string_char(s, c))
            s->in_string = false;
        return;
    }
    if (c == '"') {
        s->in_string = true;
    } else if (c == '{' || c == '[') {
        if (++s->depth > FY_QMP_MAX_DEPTH && !s->overflow)
            fail(s, "nesting too deep", fn, opaque);
    } else if (c == '}' || c == ']') {
        if (--s->depth == 0)
            complete(s, fn, opaque);
    }
}

static bool ends_word(char c)
{
    return isspace((unsigned char)c) || strchr("{}[]\",:", c);
}

static void between_char(FyJsonStreamer *s, char c, FyJsonValueFn fn,
                         void *opaque)
{
    if (isspace((unsigned char)c))
        return;
    if (c == '{' || c == '[') {
        s->kind = K_CONTAINER;
        s->depth = 1;
        append(s, c, fn, opaque);
    } else if (c == '"') {
        s->kind = K_STRING;
        append(s, c, fn, opaque);
    } else if (c == '}' || c == ']' || c == ',' || c == ':') {
        char why[32];
        snprintf(why, sizeof(why), "unexpected '%c'", c);
        fn(opaque, NULL, why);
    } else {
        s->kind = K_WORD;
        append(s, c, fn, opaque);
    }
}

void fy_json_streamer_feed(FyJsonStreamer *s, const char *data, size_t len,
                           FyJsonValueFn fn, void *opaque)
{
    for (size_t i = 0; i < len; i++) {
        char c = data[i];
        switch (s->kind) {
        case K_BETWEEN:
            between_char(s, c, fn, opaque);
            break;
        case K_CONTAINER:
            container_char(s, c, fn, opaque);
            break;
        case K_STRING:
            append(s, c, fn, opaque);
            if (string_char(s, c))
                complete(s, fn, opaque);
            break;
        case K_WORD:
            if (ends_word(c)) {
                complete(s, fn, opaque);
                between_char(s, c, fn, opaque);
            } else {
                append(s, c, fn, opaque);
            }
            break;
        }
    }
}
