/*
 * error.h: errors that say what went wrong and where.
 *
 * ferry's library never prints and never exits: a function that can fail
 * takes `FyError **errp` as its last argument and, on failure, stores a
 * heap-allocated error there (when errp is non-NULL and *errp is still NULL;
 * the first error wins, the same rule as the stream's sticky error). The
 * caller owns the error and frees it with fy_error_free().
 *
 * Messages read as one sentence from the outside in: the layers that pass an
 * error up add context in front with fy_error_prepend(), e.g.
 *   "section 'cpu' instance 0 (stream offset 812): field 'regs': stream ends"
 */
#ifndef FERRY_ERROR_H
#define FERRY_ERROR_H

#include <stdarg.h>

typedef struct FyError FyError;

#define FY_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Set *errp to a new error (no-op when errp is NULL or already set). */
void fy_error_setg(FyError **errp, const char *fmt, ...) FY_PRINTF(2, 3);
/* Same, with ": strerror(errnum)" appended. */
void fy_error_setg_errno(FyError **errp, int errnum, const char *fmt, ...)
    FY_PRINTF(3, 4);
void fy_error_vsetg(FyError **errp, const char *fmt, va_list ap);

/* Put context in front of an existing message: "<prefix><old message>". */
void fy_error_prepend(FyError **errp, const char *fmt, ...) FY_PRINTF(2, 3);

/* Move src into *dst (if *dst is empty and dst is non-NULL), else free src. */
void fy_error_propagate(FyError **dst, FyError *src);

const char *fy_error_msg(const FyError *err);
FyError *fy_error_copy(const FyError *err);
void fy_error_free(FyError *err);

/* Free *errp and set it to NULL. */
void fy_error_clear(FyError **errp);

#endif
