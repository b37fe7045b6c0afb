/*
 * qmp-protocol.c: one QMP request in, one response out (QEMU's
 * qmp_dispatch), and the greeting.
 *
 * Per client:  negotiation --qmp_capabilities--> command mode
 * In negotiation mode only qmp_capabilities runs; everything else gets
 * CommandNotFound, as in QEMU. The request is checked before any command
 * runs: a JSON object whose members are execute (a string), arguments (an
 * object) and id (anything, echoed back), nothing else.
 */
#include <string.h>

#include "control/control-int.h"

json_t *fy_qmp_greeting(void)
{
    return json_pack("{s:{s:{s:{s:i,s:i,s:i},s:s},s:[]}}", "QMP", "version",
                     "qemu", "micro", FY_QMP_QEMU_MICRO, "minor",
                     FY_QMP_QEMU_MINOR, "major", FY_QMP_QEMU_MAJOR, "package",
                     FY_QMP_PACKAGE, "capabilities");
}

static json_t *error_response(const char *cls, const char *desc, json_t *id)
{
    json_t *r = json_pack("{s:{s:s,s:s}}", "error", "class", cls, "desc",
                          desc ? desc : "unknown error");
    if (r && id)
        json_object_set(r, "id", id);
    return r;
}

static json_t *return_response(json_t *ret, json_t *id)
{
    json_t *r = json_object();
    if (!r) {
        json_decref(ret);
        return NULL;
    }
    json_object_set_new(r, "return", ret);
    if (id)
        json_object_set(r, "id", id);
    return r;
}

/* Check the members of a request; on error d gets QEMU's message. */
static int check_request(json_t *req, const char **name, json_t **args,
                         char *d, size_t dlen)
{
    const char *key;
    json_t *v;

    *name = NULL;
    *args = NULL;
    if (!json_is_object(req)) {
        snprintf(d, dlen, "QMP input must be a JSON object");
        return -1;
    }
    json_object_foreach(req, key, v) {
        if (!strcmp(key, "execute")) {
            if (!json_is_string(v)) {
                snprintf(d, dlen, "QMP input member 'execute' must be a string");
                return -1;
            }
            *name = json_string_value(v);
        } else if (!strcmp(key, "arguments")) {
            if (!json_is_object(v)) {
                snprintf(d, dlen,
                         "QMP input member 'arguments' must be an object");
                return -1;
            }
            *args = v;
        } else if (strcmp(key, "id") != 0) {
            snprintf(d, dlen, "QMP input member '%.64s' is unexpected", key);
            return -1;
        }
    }
    if (!*name) {
        snprintf(d, dlen, "QMP input lacks member 'execute'");
        return -1;
    }
    return 0;
}

static json_t *capabilities(json_t *args, bool *negotiated, json_t *id)
{
    if (*negotiated)
        return error_response("CommandNotFound", "Capabilities negotiation is "
                              "already complete, command ignored", id);
    json_t *enable = args ? json_object_get(args, "enable") : NULL;
    const char *key;
    json_t *v;
    if (args) {
        json_object_foreach(args, key, v) {
            if (strcmp(key, "enable") != 0) {
                char d[128];
                snprintf(d, sizeof(d), "Parameter '%.64s' is unexpected", key);
                return error_response("GenericError", d, id);
            }
        }
    }
    if (enable && !json_is_array(enable))
        return error_response("GenericError", "Invalid parameter type for "
                              "'enable', expected: array", id);
    size_t i;
    json_array_foreach(enable, i, v) {
        char d[128];
        if (!json_is_string(v))
            return error_response("GenericError", "Invalid parameter type for "
                                  "'enable[]', expected: string", id);
        snprintf(d, sizeof(d), "Capability '%.64s' not available",
                 json_string_value(v));
        return error_response("GenericError", d, id);
    }
    *negotiated = true;
    return return_response(json_object(), id);
}

json_t *fy_monitor_handle_request(FyMonitor *mon, json_t *req,
                                  const char *parse_error, bool *negotiated)
{
    if (!req) {
        char d[320];
        snprintf(d, sizeof(d), "JSON parse error, %s",
                 parse_error ? parse_error : "invalid input");
        return error_response("GenericError", d, NULL);
    }
    json_t *id = json_is_object(req) ? json_object_get(req, "id") : NULL;
    json_t *args = NULL;
    const char *name;
    char d[256];
    if (check_request(req, &name, &args, d, sizeof(d)) < 0)
        return error_response("GenericError", d, id);
    if (!strcmp(name, "qmp_capabilities"))
        return capabilities(args, negotiated, id);
    if (!*negotiated)
        return error_response("CommandNotFound", "Expecting capabilities "
                              "negotiation with 'qmp_capabilities'", id);

    json_t *ret = NULL;
    FyError *err = NULL;
    FyQmpResult r = fy_monitor_execute(mon, name, args, &ret, &err);
    json_t *resp;
    if (r == FY_QMP_OK)
        resp = return_response(ret, id);
    else
        resp = error_response(r == FY_QMP_COMMAND_NOT_FOUND ? "CommandNotFound"
                                                            : "GenericError",
                              fy_error_msg(err), id);
    fy_error_free(err);
    return resp;
}
