/*
 * qmp-client.c: a small synchronous QMP client (ferry migrate, ferry
 * monitor, tests).
 *
 * One request at a time: execute() sends {"execute", "arguments", "id"}
 * and reads values until the response carrying that id arrives; events
 * read meanwhile wait in a queue for next_event(). Every wait is bounded by
 * the timeout given at connect time, except next_event()'s own.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "control/control-int.h"

struct FyQmpClient {
    int fd;
    int timeout_ms;
    FyJsonStreamer js;
    json_t *greeting;
    json_t *events;        /* queued events */
    json_t *responses;     /* values that are not events */
    FyError *read_err;     /* framing error, reported once */
    json_int_t next_id;
};

static void on_value(void *opaque, json_t *v, const char *err)
{
    FyQmpClient *c = opaque;
    if (!v) {
        if (!c->read_err)
            fy_error_setg(&c->read_err, "bad JSON from the QMP server: %s",
                          err);
        return;
    }
    if (json_is_object(v) && json_object_get(v, "event"))
        json_array_append(c->events, v);
    else
        json_array_append(c->responses, v);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read once, waiting up to timeout_ms. 0 ok (maybe nothing), -1 error. */
static int read_some(FyQmpClient *c, int timeout_ms, FyError **errp)
{
    struct pollfd p = { .fd = c->fd, .events = POLLIN };
    int n = poll(&p, 1, timeout_ms);
    if (n < 0 && errno == EINTR)
        return 0;
    if (n < 0) {
        fy_error_setg_errno(errp, errno, "QMP: poll");
        return -1;
    }
    if (n == 0)
        return 0;
    char buf[16384];
    ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
    if (r < 0 && errno == EINTR)
        return 0;
    if (r <= 0) {
        if (r == 0)
            fy_error_setg(errp, "QMP: the server closed the connection");
        else
            fy_error_setg_errno(errp, errno, "QMP: read");
        return -1;
    }
    fy_json_streamer_feed(&c->js, buf, (size_t)r, on_value, c);
    if (c->read_err) {
        fy_error_propagate(errp, c->read_err);
        c->read_err = NULL;
        return -1;
    }
    return 0;
}

/* The first non-event value, waiting up to the client's timeout. */
static json_t *next_response(FyQmpClient *c, FyError **errp)
{
    int64_t deadline = mono_ms() + c->timeout_ms;
    while (json_array_size(c->responses) == 0) {
        int64_t left = deadline - mono_ms();
        if (c->timeout_ms >= 0 && left <= 0) {
            fy_error_setg(errp, "QMP: no answer within %d ms", c->timeout_ms);
            return NULL;
        }
        if (read_some(c, c->timeout_ms < 0 ? -1 : (int)left, errp) < 0)
            return NULL;
    }
    json_t *v = json_incref(json_array_get(c->responses, 0));
    json_array_remove(c->responses, 0);
    return v;
}

static int send_json(FyQmpClient *c, json_t *v, FyError **errp)
{
    char *text = json_dumps(v, 0);
    if (!text) {
        fy_error_setg(errp, "QMP: out of memory");
        return -1;
    }
    size_t len = strlen(text), off = 0;
    int ret = 0;
    while (off < len) {
        ssize_t n = send(c->fd, text + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fy_error_setg_errno(errp, errno, "QMP: write");
            ret = -1;
            break;
        }
        off += (size_t)n;
    }
    free(text);
    return ret;
}

FyQmpClient *fy_qmp_client_connect(const char *address, int timeout_ms,
                                   FyError **errp)
{
    FySockAddr a;
    if (fy_sockaddr_parse(address, true, &a, errp) < 0)
        return NULL;
    int fd = fy_sockaddr_connect(&a, timeout_ms, errp);
    if (fd < 0)
        return NULL;
    FyQmpClient *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        fy_error_setg(errp, "QMP: out of memory");
        return NULL;
    }
    c->fd = fd;
    c->timeout_ms = timeout_ms;
    fy_json_streamer_init(&c->js);
    c->events = json_array();
    c->responses = json_array();
    c->greeting = next_response(c, errp);
    if (!c->greeting || !json_object_get(c->greeting, "QMP")) {
        if (c->greeting)
            fy_error_setg(errp, "QMP: %s did not greet as a QMP server",
                          address);
        fy_qmp_client_close(c);
        return NULL;
    }
    json_t *r = fy_qmp_client_execute(c, "qmp_capabilities", NULL, NULL, errp);
    if (!r) {
        fy_qmp_client_close(c);
        return NULL;
    }
    json_decref(r);
    return c;
}

void fy_qmp_client_close(FyQmpClient *c)
{
    if (!c)
        return;
    close(c->fd);
    fy_json_streamer_destroy(&c->js);
    json_decref(c->greeting);
    json_decref(c->events);
    json_decref(c->responses);
    fy_error_free(c->read_err);
    free(c);
}

json_t *fy_qmp_client_greeting(FyQmpClient *c)
{
    return c->greeting;
}

static json_t *take_result(json_t *resp, char **err_class, FyError **errp)
{
    json_t *ret = json_object_get(resp, "return");
    json_t *err = json_object_get(resp, "error");
    if (ret)
        return json_incref(ret);
    const char *cls = json_string_value(json_object_get(err, "class"));
    const char *desc = json_string_value(json_object_get(err, "desc"));
    if (err_class)
        *err_class = strdup(cls ? cls : "GenericError");
    fy_error_setg(errp, "%s", desc ? desc : "QMP: malformed response");
    return NULL;
}

json_t *fy_qmp_client_execute(FyQmpClient *c, const char *name, json_t *args,
                              char **err_class, FyError **errp)
{
    json_int_t id = ++c->next_id;
    json_t *req = json_pack("{s:s,s:I}", "execute", name, "id", id);
    if (!req) {
        fy_error_setg(errp, "QMP: out of memory");
        return NULL;
    }
    if (args)
        json_object_set(req, "arguments", args);
    int r = send_json(c, req, errp);
    json_decref(req);
    if (r < 0)
        return NULL;
    for (;;) {
        json_t *resp = next_response(c, errp);
        if (!resp)
            return NULL;
        json_t *rid = json_object_get(resp, "id");
        if (json_is_integer(rid) && json_integer_value(rid) == id) {
            json_t *ret = take_result(resp, err_class, errp);
            json_decref(resp);
            return ret;
        }
        json_decref(resp); /* an answer to nobody (e.g. after a timeout) */
    }
}

json_t *fy_qmp_client_next_event(FyQmpClient *c, int timeout_ms,
                                 FyError **errp)
{
    int64_t deadline = mono_ms() + timeout_ms;
    bool tried = false;
    while (json_array_size(c->events) == 0) {
        int64_t left = deadline - mono_ms();
        if (timeout_ms >= 0 && left <= 0 && tried)
            return NULL;
        if (left < 0)
            left = 0;
        if (read_some(c, timeout_ms < 0 ? -1 : (int)left, errp) < 0)
            return NULL;
        tried = true;
    }
    json_t *v = json_incref(json_array_get(c->events, 0));
    json_array_remove(c->events, 0);
    return v;
}
