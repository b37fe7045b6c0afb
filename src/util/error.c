/* error.c: see include/ferry/error.h. Messages are plain heap strings. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/error.h"

struct FyError {
    char *msg;
};

static char *vformat(const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        return NULL;
    return s;
}

static FyError *error_new(char *msg)
{
    FyError *e = calloc(1, sizeof(*e));
    if (!e) {
        free(msg);
        return NULL;
    }
    /* An out-of-memory message is still an error; never lose the failure. */
    e->msg = msg ? msg : strdup("out of memory while formatting an error");
    return e;
}

void fy_error_vsetg(FyError **errp, const char *fmt, va_list ap)
{
    if (!errp || *errp)
        return;
    *errp = error_new(vformat(fmt, ap));
}

void fy_error_setg(FyError **errp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fy_error_vsetg(errp, fmt, ap);
    va_end(ap);
}

void fy_error_setg_errno(FyError **errp, int errnum, const char *fmt, ...)
{
    if (!errp || *errp)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *base = vformat(fmt, ap);
    va_end(ap);
    char *full = NULL;
    if (base && asprintf(&full, "%s: %s", base, strerror(errnum)) < 0)
        full = NULL;
    free(base);
    *errp = error_new(full);
}

void fy_error_prepend(FyError **errp, const char *fmt, ...)
{
    if (!errp || !*errp)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *prefix = vformat(fmt, ap);
    va_end(ap);
    char *full = NULL;
    if (prefix && asprintf(&full, "%s%s", prefix, (*errp)->msg) >= 0) {
        free((*errp)->msg);
        (*errp)->msg = full;
    }
    free(prefix);
}

void fy_error_propagate(FyError **dst, FyError *src)
{
    if (!src)
        return;
    if (dst && !*dst)
        *dst = src;
    else
        fy_error_free(src);
}

const char *fy_error_msg(const FyError *err)
{
    return err ? err->msg : "(no error)";
}

FyError *fy_error_copy(const FyError *err)
{
    return err ? error_new(strdup(err->msg)) : NULL;
}

void fy_error_free(FyError *err)
{
    if (!err)
        return;
    free(err->msg);
    free(err);
}

void fy_error_clear(FyError **errp)
{
    if (errp && *errp) {
        fy_error_free(*errp);
        *errp = NULL;
    }
}
