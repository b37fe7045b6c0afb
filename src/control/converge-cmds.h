/*
 * converge-cmds.h: the monitor's convergence commands (qmp-converge.c) and
 * their HMP formatting (hmp-converge.c).
 *
 * QMP: calc-dirty-rate, query-dirty-rate, set-vcpu-dirty-limit,
 * cancel-vcpu-dirty-limit, query-vcpu-dirty-limit (QEMU's names and
 * arguments). HMP: calc_dirty_rate, info dirty_rate, set_vcpu_dirty_limit,
 * cancel_vcpu_dirty_limit, info vcpu_dirty_limit, and the convergence lines
 * of `info migrate`.
 */
#ifndef FERRY_CONTROL_CONVERGE_CMDS_H
#define FERRY_CONTROL_CONVERGE_CMDS_H

#include <jansson.h>

#include "control/control-int.h"

/* QMP handlers; opaque is the FyMonitor. */
json_t *fy_qmp_calc_dirty_rate(void *opaque, json_t *args, FyError **errp);
json_t *fy_qmp_query_dirty_rate(void *opaque, json_t *args, FyError **errp);
json_t *fy_qmp_set_vcpu_dirty_limit(void *opaque, json_t *args,
                                    FyError **errp);
json_t *fy_qmp_cancel_vcpu_dirty_limit(void *opaque, json_t *args,
                                       FyError **errp);
json_t *fy_qmp_query_vcpu_dirty_limit(void *opaque, json_t *args,
                                      FyError **errp);

/* HMP: the QMP arguments from an HMP command line (argv after the name,
 * flags as letters); NULL with *errp on a bad line. */
json_t *fy_hmp_calc_dirty_rate_args(int argc, char **argv, const char *flags,
                                    FyError **errp);
json_t *fy_hmp_vcpu_dirty_limit_args(int argc, char **argv, bool with_rate,
                                     FyError **errp);
/* What QEMU prints after calc_dirty_rate was accepted. */
void fy_hmp_format_calc_dirty_rate(FyStrBuf *b, json_t *args);
void fy_hmp_format_dirty_rate(FyStrBuf *b, json_t *info);
void fy_hmp_format_vcpu_dirty_limit(FyStrBuf *b, json_t *list);
/* `info migrate`: the dirty-limit lines and ferry's convergence lines. */
void fy_hmp_format_convergence(FyStrBuf *b, json_t *info);

#endif
