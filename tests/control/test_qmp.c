/*
 * test_qmp.c: the QMP protocol, the command registry, the socket server
 * and client, and every QMP migration command, with good and bad
 * arguments. Ends with a migration between two in-process VMs driven only
 * through QMP sockets, checking events and that RAM and device state
 * arrived.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "control/control-int.h"
#include "ctlvm.h"
#include "t.h"

/* ---- helpers ---- */

typedef struct Collected {
    int n;
    char errs[16][128];
    char vals[16][256];
} Collected;

static void collect(void *opaque, json_t *v, const char *err)
{
    Collected *c = opaque;
    if (c->n >= 16)
        return;
    if (v) {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(c->vals[c->n], sizeof(c->vals[0]), "%s", s);
        free(s);
        c->errs[c->n][0] = 0;
    } else {
        c->vals[c->n][0] = 0;
        snprintf(c->errs[c->n], sizeof(c->errs[0]), "%s", err);
    }
    c->n++;
}

/* Send a raw request through the protocol layer and return the response. */
static json_t *request(FyMonitor *mon, const char *text, bool *negotiated)
{
    json_error_t e;
    json_t *req = json_loads(text, JSON_DECODE_ANY, &e);
    json_t *resp = fy_monitor_handle_request(mon, req, req ? NULL : e.text,
                                             negotiated);
    json_decref(req);
    return resp;
}

static const char *err_class(json_t *resp)
{
    return json_string_value(json_object_get(json_object_get(resp, "error"),
                                             "class"));
}

static const char *err_desc(json_t *resp)
{
    return json_string_value(json_object_get(json_object_get(resp, "error"),
                                             "desc"));
}

static char *tmp_sock(const char *tag)
{
    char *p = NULL;
    if (asprintf(&p, "/tmp/ferry-test-%s-%d.sock", tag, (int)getpid()) < 0)
        abort();
    return p;
}

/* ---- framing ---- */

static void test_streamer_values(void)
{
    FyJsonStreamer s;
    Collected c = { 0 };
    fy_json_streamer_init(&s);
    const char *in = "{\"a\": [1, {\"b\": \"}]\\\"\"}]}\n[1,2] \"str\" true 12";
    /* Feed one byte at a time: values split anywhere must still frame. */
    for (size_t i = 0; in[i]; i++)
        fy_json_streamer_feed(&s, in + i, 1, collect, &c);
    T_EQ_INT(c.n, 4);   /* "12" waits: more digits may follow */
    T_EQ_STR(c.vals[0], "{\"a\":[1,{\"b\":\"}]\\\"\"}]}");
    T_EQ_STR(c.vals[1], "[1,2]");
    T_EQ_STR(c.vals[2], "\"str\"");
    T_EQ_STR(c.vals[3], "true");
    fy_json_streamer_feed(&s, " {", 2, collect, &c);
    T_EQ_INT(c.n, 5);
    fy_json_streamer_feed(&s, "}", 1, collect, &c);
    T_EQ_INT(c.n, 6);
    T_EQ_STR(c.vals[4], "12");
    T_EQ_STR(c.vals[5], "{}");
    fy_json_streamer_destroy(&s);
}

static void test_streamer_errors(void)
{
    FyJsonStreamer s;
    Collected c = { 0 };
    fy_json_streamer_init(&s);
    fy_json_streamer_feed(&s, "} {\"a\" 1}", 9, collect, &c);
    T_EQ_INT(c.n, 2);
    T_CONTAINS(c.errs[0], "unexpected '}'");
    T_ASSERT(c.errs[1][0] != 0);     /* jansson: missing ':' */
    /* Nesting too deep: one error, then the stream is in step again. */
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    fy_json_streamer_feed(&s, deep, sizeof(deep), collect, &c);
    fy_json_streamer_feed(&s, "{\"ok\":1}", 8, collect, &c);
    T_EQ_INT(c.n, 4);
    T_CONTAINS(c.errs[2], "nesting too deep");
    T_EQ_STR(c.vals[3], "{\"ok\":1}");
    /* Oversized: reported once, then in step again. */
    size_t big = FY_QMP_MAX_REQUEST + 100;
    char *huge = malloc(big + 2);
    huge[0] = '"';
    memset(huge + 1, 'x', big);
    huge[big + 1] = '"';
    fy_json_streamer_feed(&s, huge, big + 2, collect, &c);
    fy_json_streamer_feed(&s, "[2]", 3, collect, &c);
    T_EQ_INT(c.n, 6);
    T_CONTAINS(c.errs[4], "too large");
    T_EQ_STR(c.vals[5], "[2]");
    free(huge);
    fy_json_streamer_destroy(&s);
}

/* ---- protocol ---- */

static void test_greeting(void)
{
    json_t *g = fy_qmp_greeting();
    json_t *v = json_object_get(json_object_get(g, "QMP"), "version");
    T_EQ_INT(json_integer_value(json_object_get(json_object_get(v, "qemu"),
                                                "major")), 7);
    T_EQ_INT(json_integer_value(json_object_get(json_object_get(v, "qemu"),
                                                "minor")), 2);
    T_CONTAINS(json_string_value(json_object_get(v, "package")), "ferry");
    T_ASSERT(json_is_array(json_object_get(json_object_get(g, "QMP"),
                                           "capabilities")));
    json_decref(g);
}

static void test_negotiation(void)
{
    CtlVM *vm = ctl_new("ctl", 1);
    bool neg = false;
    json_t *r = request(vm->mon, "{\"execute\":\"query-status\",\"id\":7}", &neg);
    T_EQ_STR(err_class(r), "CommandNotFound");
    T_EQ_STR(err_desc(r), "Expecting capabilities negotiation with "
                          "'qmp_capabilities'");
    T_EQ_INT(json_integer_value(json_object_get(r, "id")), 7);
    T_ASSERT(!neg);
    json_decref(r);

    r = request(vm->mon, "{\"execute\":\"qmp_capabilities\",\"arguments\":"
                "{\"enable\":[\"oob\"]}}", &neg);
    T_EQ_STR(err_class(r), "GenericError");
    T_CONTAINS(err_desc(r), "'oob'");
    T_ASSERT(!neg);
    json_decref(r);

    r = request(vm->mon, "{\"execute\":\"qmp_capabilities\",\"id\":\"x\"}", &neg);
    T_ASSERT(json_is_object(json_object_get(r, "return")));
    T_EQ_STR(json_string_value(json_object_get(r, "id")), "x");
    T_ASSERT(neg);
    json_decref(r);

    r = request(vm->mon, "{\"execute\":\"qmp_capabilities\"}", &neg);
    T_EQ_STR(err_class(r), "CommandNotFound");
    T_CONTAINS(err_desc(r), "already complete");
    json_decref(r);

    r = request(vm->mon, "{\"execute\":\"query-status\",\"id\":[1,{}]}", &neg);
    T_EQ_INT(json_is_false(json_object_get(json_object_get(r, "return"),
                                           "running")), 1);
    T_EQ_INT(json_array_size(json_object_get(r, "id")), 2);
    json_decref(r);
    ctl_free(vm);
}

static void test_request_errors(void)
{
    CtlVM *vm = ctl_new("ctl", 1);
    bool neg = true;
    static const struct { const char *in, *cls, *desc; } cases[] = {
        { "[1]", "GenericError", "QMP input must be a JSON object" },
        { "{}", "GenericError", "QMP input lacks member 'execute'" },
        { "{\"execute\":1}", "GenericError",
          "QMP input member 'execute' must be a string" },
        { "{\"execute\":\"stop\",\"arguments\":[]}", "GenericError",
          "QMP input member 'arguments' must be an object" },
        { "{\"execute\":\"stop\",\"bogus\":1}", "GenericError",
          "QMP input member 'bogus' is unexpected" },
        { "{\"execute\":\"no-such-thing\"}", "CommandNotFound",
          "The command no-such-thing has not been found" },
        { "{\"execute\":\"stop\",\"arguments\":{\"x\":1}}", "GenericError",
          "Parameter 'x' is unexpected" },
        { "{\"execute\":\"migrate\"}", "GenericError",
          "Parameter 'uri' is missing" },
        { "{\"execute\":\"migrate\",\"arguments\":{\"uri\":5}}", "GenericError",
          "Invalid parameter type for 'uri', expected: string" },
        { "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"tcp:h:1\","
          "\"detach\":\"yes\"}}", "GenericError",
          "Invalid parameter type for 'detach', expected: boolean" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *r = request(vm->mon, cases[i].in, &neg);
        T_EQ_STR(err_class(r), cases[i].cls);
        T_EQ_STR(err_desc(r), cases[i].desc);
        json_decref(r);
    }
    json_t *r = fy_monitor_handle_request(vm->mon, NULL, "invalid token", &neg);
    T_EQ_STR(err_class(r), "GenericError");
    T_CONTAINS(err_desc(r), "JSON parse error, invalid token");
    json_decref(r);
    ctl_free(vm);
}

static json_t *echo_cmd(void *opaque, json_t *args, FyError **errp)
{
    if (json_object_get(args, "fail")) {
        fy_error_setg(errp, "told to fail");
        return NULL;
    }
    return json_incref(args);
}

static void test_register_specs(void)
{
    FyMonitor *mon = fy_monitor_new(NULL, NULL);
    FyError *err = NULL;
    T_EQ_INT(fy_monitor_register(mon, "echo", "s:s b:b? i:i? n:n? o:o? a:a? "
                                 "x:any? fail:b?", echo_cmd, NULL, &err), 0);
    T_EQ_INT(fy_monitor_register(mon, "bad", "x:q", echo_cmd, NULL, &err), -1);
    T_CONTAINS(fy_error_msg(err), "bad argument type");
    fy_error_clear(&err);
    T_EQ_INT(fy_monitor_register(mon, "bad", "nocolon", echo_cmd, NULL, &err),
             -1);
    fy_error_clear(&err);
    T_ASSERT(!fy_monitor_has_command(mon, "migrate")); /* no migration */
    T_ASSERT(fy_monitor_has_command(mon, "query-version"));

    json_t *ret = NULL;
    json_t *args = json_pack("{s:s,s:b,s:i,s:f,s:{},s:[],s:n}", "s", "v", "b",
                             1, "i", 3, "n", 1.5, "o", "a", "x");
    T_EQ_INT(fy_monitor_execute(mon, "echo", args, &ret, &err), FY_QMP_OK);
    T_ASSERT(json_equal(ret, args));
    json_decref(ret);
    json_decref(args);

    args = json_pack("{s:s,s:s}", "s", "v", "n", "notanumber");
    T_EQ_INT(fy_monitor_execute(mon, "echo", args, &ret, &err),
             FY_QMP_GENERIC_ERROR);
    T_EQ_STR(fy_error_msg(err), "Invalid parameter type for 'n', expected: "
                                "number");
    fy_error_clear(&err);
    json_decref(args);

    args = json_pack("{s:s,s:b}", "s", "v", "fail", 1);
    T_EQ_INT(fy_monitor_execute(mon, "echo", args, &ret, &err),
             FY_QMP_GENERIC_ERROR);
    T_EQ_STR(fy_error_msg(err), "told to fail");
    fy_error_clear(&err);
    json_decref(args);

    T_EQ_INT(fy_monitor_execute(mon, "nope", NULL, &ret, &err),
             FY_QMP_COMMAND_NOT_FOUND);
    fy_error_clear(&err);

    T_EQ_INT(fy_monitor_execute(mon, "query-commands", NULL, &ret, &err),
             FY_QMP_OK);
    bool found = false;
    size_t i;
    json_t *c;
    json_array_foreach(ret, i, c)
        found |= !strcmp(json_string_value(json_object_get(c, "name")), "echo");
    T_ASSERT(found);
    json_decref(ret);
    fy_monitor_free(mon);
}

/* ---- migration commands (in process) ---- */

static void test_caps_commands(void)
{
    CtlVM *vm = ctl_new("ctl", 1);
    char *err;
    json_t *r = ctl_qmp(vm, "query-migrate-capabilities", NULL, &err);
    T_ASSERT(json_array_size(r) >= 10);
    json_t *first = json_array_get(r, 0);
    T_EQ_STR(json_string_value(json_object_get(first, "capability")), "xbzrle");
    T_ASSERT(json_is_false(json_object_get(first, "state")));
    json_decref(r);

    r = ctl_qmp(vm, "migrate-set-capabilities", json_pack(
        "{s:[{s:s,s:b},{s:s,s:b}]}", "capabilities", "capability", "events",
        "state", 1, "capability", "pause-before-switchover", "state", 1), &err);
    T_ASSERT(r && !err);
    json_decref(r);
    bool on = false;
    fy_migration_get_capability(vm->mig, "pause-before-switchover", &on, NULL);
    T_ASSERT(on);

    /* All or nothing: the good first item is undone when the second fails. */
    r = ctl_qmp(vm, "migrate-set-capabilities", json_pack(
        "{s:[{s:s,s:b},{s:s,s:b}]}", "capabilities", "capability", "events",
        "state", 0, "capability", "no-such-cap", "state", 1), &err);
    T_ASSERT(!r);
    T_CONTAINS(err, "no-such-cap");
    free(err);
    fy_migration_get_capability(vm->mig, "events", &on, NULL);
    T_ASSERT(on);

    r = ctl_qmp(vm, "migrate-set-capabilities", json_pack(
        "{s:[{s:s,s:b},{s:s,s:b}]}", "capabilities", "capability", "events",
        "state", 0, "capability", "x-colo", "state", 1), &err);
    T_ASSERT(!r);
    T_CONTAINS(err, "not supported");
    free(err);
    fy_migration_get_capability(vm->mig, "events", &on, NULL);
    T_ASSERT(on);

    static const char *bad[] = {
        "{\"capabilities\":[1]}",
        "{\"capabilities\":[{\"capability\":\"events\"}]}",
        "{\"capabilities\":[{\"state\":true}]}",
        "{\"capabilities\":[{\"capability\":1,\"state\":true}]}",
        "{\"capabilities\":[{\"capability\":\"events\",\"state\":1}]}",
        "{\"capabilities\":[{\"capability\":\"events\",\"state\":true,"
        "\"x\":1}]}",
        "{\"capabilities\":{}}",
    };
    static const char *want[] = {
        "expected: object", "'capabilities[0].state' is missing",
        "'capabilities[0].capability' is missing",
        "'capabilities[0].capability', expected: string",
        "'capabilities[0].state', expected: boolean",
        "'capabilities[0].x' is unexpected", "expected: array",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = ctl_qmp(vm, "migrate-set-capabilities", json_loads(bad[i], 0, NULL),
                    &err);
        T_ASSERT(!r);
        T_CONTAINS(err, want[i]);
        free(err);
    }
    ctl_free(vm);
}

static void test_params_commands(void)
{
    CtlVM *vm = ctl_new("ctl", 1);
    char *err;
    json_t *r = ctl_qmp(vm, "query-migrate-parameters", NULL, &err);
    T_EQ_INT(json_integer_value(json_object_get(r, "downtime-limit")), 300);
    T_EQ_INT(json_integer_value(json_object_get(r, "max-bandwidth")),
             128 << 20);
    json_decref(r);

    r = ctl_qmp(vm, "migrate-set-parameters",
                json_pack("{s:i,s:i}", "downtime-limit", 50, "max-bandwidth",
                          1 << 20), &err);
    T_ASSERT(r && !err);
    json_decref(r);
    r = ctl_qmp(vm, "query-migrate-parameters", NULL, &err);
    T_EQ_INT(json_integer_value(json_object_get(r, "downtime-limit")), 50);
    T_EQ_INT(json_integer_value(json_object_get(r, "max-bandwidth")), 1 << 20);
    json_decref(r);

    r = ctl_qmp(vm, "migrate-set-parameters",
                json_pack("{s:i,s:i}", "downtime-limit", 70, "bogus", 1), &err);
    T_ASSERT(!r);
    T_CONTAINS(err, "Parameter 'bogus' is unexpected");
    free(err);
    r = ctl_qmp(vm, "migrate-set-parameters",
                json_pack("{s:s}", "downtime-limit", "fast"), &err);
    T_ASSERT(!r);
    T_CONTAINS(err, "downtime-limit");
    free(err);
    r = ctl_qmp(vm, "migrate-set-parameters",
                json_pack("{s:i}", "downtime-limit", -1), &err);
    T_ASSERT(!r);
    free(err);
    r = ctl_qmp(vm, "query-migrate-parameters", NULL, &err);
    T_EQ_INT(json_integer_value(json_object_get(r, "downtime-limit")), 50);
    json_decref(r);
    ctl_free(vm);
}

static void test_migrate_command_errors(void)
{
    CtlVM *vm = ctl_new("ctl", 1);
    char *err;
    json_t *r = ctl_qmp(vm, "query-migrate", NULL, &err);
    T_EQ_INT(json_object_size(r), 0);   /* QEMU: {} before any migration */
    json_decref(r);

    r = ctl_qmp(vm, "migrate", json_pack("{s:s}", "uri", "bogus:x"), &err);
    T_ASSERT(!r);
    T_CONTAINS(err, "bogus:x");
    free(err);
    r = ctl_qmp(vm, "migrate", json_pack("{s:s,s:b}", "uri", "tcp:h:1", "blk",
                                         1), &err);
    T_ASSERT(!r);
    T_CONTAINS(err, "Block migration");
    free(err);
    r = ctl_qmp(vm, "migrate-continue", json_pack("{s:s}", "state",
                                                  "pre-switchover"), &err);
    T_ASSERT(!r);
    T_CONTAINS(err, "Migration not in expected state: none");
    free(err);
    r = ctl_qmp(vm, "migrate-continue", json_pack("{s:s}", "state", "nope"),
                &err);
    T_ASSERT(!r);
    T_CONTAINS(err, "nope");
    free(err);
    r = ctl_qmp(vm, "migrate_cancel", NULL, &err);   /* nothing runs: no-op */
    T_ASSERT(r && !err);
    json_decref(r);
    r = ctl_qmp(vm, "migrate-start-postcopy", NULL, &err);
    T_ASSERT(!r);
    free(err);
    r = ctl_qmp(vm, "migrate-pause", NULL, &err);
    T_ASSERT(!r);
    free(err);
    r = ctl_qmp(vm, "migrate-recover", json_pack("{s:s}", "uri", "tcp:h:1"),
                &err);
    T_ASSERT(!r);
    free(err);

    /* Incoming refuses while the VM runs. */
    ctl_start(vm, NULL);
    r = ctl_qmp(vm, "migrate-incoming", json_pack("{s:s}", "uri",
                                                  "tcp:127.0.0.1:0"), &err);
    T_ASSERT(!r);
    T_CONTAINS(err, "running");
    free(err);
    ctl_stop(vm, NULL);

    r = ctl_qmp(vm, "migrate-incoming", json_pack("{s:s}", "uri",
                                                  "tcp:127.0.0.1:0"), &err);
    T_ASSERT(r && !err);
    json_decref(r);
    r = ctl_qmp(vm, "query-migrate", NULL, &err);
    T_EQ_STR(json_string_value(json_object_get(r, "status")), "setup");
    json_t *sa = json_array_get(json_object_get(r, "socket-address"), 0);
    T_EQ_STR(json_string_value(json_object_get(sa, "type")), "inet");
    T_EQ_STR(json_string_value(json_object_get(sa, "host")), "127.0.0.1");
    T_ASSERT(atoi(json_string_value(json_object_get(sa, "port"))) > 0);
    json_decref(r);
    r = ctl_qmp(vm, "migrate-incoming", json_pack("{s:s}", "uri",
                                                  "tcp:127.0.0.1:0"), &err);
    T_ASSERT(!r);
    T_CONTAINS(err, "in progress");
    free(err);
    r = ctl_qmp(vm, "migrate_cancel", NULL, &err);
    json_decref(r);
    free(err);
    ctl_free(vm);
}

/* ---- sockets ---- */

static void test_server_unix_protocol(void)
{
    CtlVM *vm = ctl_new("ctl", 1);
    char *path = tmp_sock("proto");
    char *addr;
    if (asprintf(&addr, "unix:%s,server=on,wait=off", path) < 0)
        abort();
    FyError *err = NULL;
    FyQmpServer *s = fy_qmp_server_new(vm->mon, addr, &err);
    T_ASSERT(s);
    if (!s) {
        printf("# %s\n", fy_error_msg(err));
        return;
    }
    char want[160];
    snprintf(want, sizeof(want), "unix:%s", path);
    T_EQ_STR(fy_qmp_server_address(s), want);

    /* Raw socket: greeting, then requests split across writes, several in
     * one write, garbage in between. */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    T_EQ_INT(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    const char *parts[] = {
        "{\"execute\":\"qmp_capa", "bilities\"}\n{\"execute\":\"query-status\","
        "\"id\":1} nonsense {\"execute\":\"quit\",\"id\":2}",
    };
    for (int i = 0; i < 2; i++) {
        T_EQ_INT(write(fd, parts[i], strlen(parts[i])), (long)strlen(parts[i]));
        ctl_sleep_ms(20);
    }
    char buf[8192];
    size_t len = 0;
    for (int tries = 0; tries < 100 && len < sizeof(buf) - 1; tries++) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 50) <= 0) {
            if (strstr(buf, "\"id\": 2"))
                break;
            continue;
        }
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = 0;
    }
    buf[len] = 0;
    /* Five lines: greeting, capabilities, status, parse error, quit. */
    int lines = 0;
    for (char *p = buf; (p = strstr(p, "\r\n")); p += 2)
        lines++;
    T_EQ_INT(lines, 5);
    T_CONTAINS(buf, "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, "
                    "\"minor\": 2, \"major\": 7}, \"package\": \"ferry");
    T_CONTAINS(buf, "{\"return\": {}}\r\n");
    T_CONTAINS(buf, "\"status\": \"paused\"");
    T_CONTAINS(buf, "JSON parse error");
    T_CONTAINS(buf, "{\"return\": {}, \"id\": 2}");
    T_EQ_INT(vm->quits, 1);
    close(fd);
    fy_qmp_server_free(s, 100);
    T_ASSERT(access(path, F_OK) != 0);   /* the socket file is gone */
    free(addr);
    free(path);
    ctl_free(vm);
}

static void test_server_errors(void)
{
    CtlVM *vm = ctl_new("ctl", 1);
    FyError *err = NULL;
    T_ASSERT(!fy_qmp_server_new(vm->mon, "pipe:x", &err));
    T_CONTAINS(fy_error_msg(err), "expected unix:PATH or tcp:HOST:PORT");
    fy_error_clear(&err);
    T_ASSERT(!fy_qmp_server_new(vm->mon, "tcp:127.0.0.1", &err));
    T_CONTAINS(fy_error_msg(err), "missing port");
    fy_error_clear(&err);
    T_ASSERT(!fy_qmp_server_new(vm->mon, "unix:/nonexistent-dir/x.sock", &err));
    T_CONTAINS(fy_error_msg(err), "No such file or directory");
    fy_error_clear(&err);
    /* A regular file is never replaced; a live socket is never stolen. */
    char *path = tmp_sock("errs");
    FILE *f = fopen(path, "w");
    fclose(f);
    char addr[200];
    snprintf(addr, sizeof(addr), "unix:%s", path);
    T_ASSERT(!fy_qmp_server_new(vm->mon, addr, &err));
    T_CONTAINS(fy_error_msg(err), "not a socket");
    fy_error_clear(&err);
    unlink(path);
    FyQmpServer *s = fy_qmp_server_new(vm->mon, addr, &err);
    T_ASSERT(s);
    T_ASSERT(!fy_qmp_server_new(vm->mon, addr, &err));
    T_CONTAINS(fy_error_msg(err), "another process is listening");
    fy_error_clear(&err);
    fy_qmp_server_free(s, 0);
    /* A stale socket file (no listener) is replaced. */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    T_EQ_INT(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    close(fd);
    s = fy_qmp_server_new(vm->mon, addr, &err);
    T_ASSERT(s);
    fy_qmp_server_free(s, 0);
    free(path);
    T_ASSERT(!fy_qmp_client_connect("unix:/nonexistent.sock", 500, &err));
    T_CONTAINS(fy_error_msg(err), "cannot connect to unix:/nonexistent.sock");
    fy_error_clear(&err);
    ctl_free(vm);
}

static void test_client_and_events(void)
{
    CtlVM *vm = ctl_new("ctl", 1);
    FyError *err = NULL;
    FyQmpServer *s = fy_qmp_server_new(vm->mon, "tcp:127.0.0.1:0", &err);
    T_ASSERT(s);
    const char *addr = fy_qmp_server_address(s);
    T_CONTAINS(addr, "tcp:127.0.0.1:");
    FyQmpClient *a = fy_qmp_client_connect(addr, 2000, &err);
    FyQmpClient *b = fy_qmp_client_connect(addr, 2000, &err);
    T_ASSERT(a && b);
    T_ASSERT(json_object_get(fy_qmp_client_greeting(a), "QMP"));
    /* A third client that never negotiates must not get events. */
    FySockAddr sa;
    fy_sockaddr_parse(addr, false, &sa, NULL);
    int raw = fy_sockaddr_connect(&sa, 1000, NULL);
    T_ASSERT(raw >= 0);

    json_t *r = fy_qmp_client_execute(a, "cont", NULL, NULL, &err);
    T_ASSERT(r);
    json_decref(r);
    for (int i = 0; i < 2; i++) {
        json_t *ev = fy_qmp_client_next_event(i ? b : a, 2000, &err);
        T_EQ_STR(json_string_value(json_object_get(ev, "event")), "RESUME");
        json_t *ts = json_object_get(ev, "timestamp");
        T_ASSERT(json_integer_value(json_object_get(ts, "seconds")) >
                 1600000000);
        json_t *us = json_object_get(ts, "microseconds");
        T_ASSERT(json_is_integer(us) && json_integer_value(us) < 1000000);
        /* As QEMU: no members, no "data". */
        T_ASSERT(json_object_get(ev, "data") == NULL);
        json_decref(ev);
    }
    char *cls = NULL;
    json_t *none = json_object();
    r = fy_qmp_client_execute(b, "migrate", none, &cls, &err);
    json_decref(none);
    T_ASSERT(!r);
    T_EQ_STR(cls, "GenericError");
    T_EQ_STR(fy_error_msg(err), "Parameter 'uri' is missing");
    free(cls);
    fy_error_clear(&err);
    cls = NULL;
    r = fy_qmp_client_execute(b, "frobnicate", NULL, &cls, &err);
    T_EQ_STR(cls, "CommandNotFound");
    free(cls);
    fy_error_clear(&err);

    /* The raw client got only its greeting. */
    char buf[4096];
    ctl_sleep_ms(50);
    ssize_t n = recv(raw, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    T_ASSERT(n > 0);
    buf[n > 0 ? n : 0] = 0;
    T_CONTAINS(buf, "\"QMP\"");
    T_ASSERT(!strstr(buf, "RESUME"));
    close(raw);

    /* human-monitor-command returns HMP's text. */
    json_t *args = json_pack("{s:s}", "command-line", "info status");
    r = fy_qmp_client_execute(a, "human-monitor-command", args, NULL, &err);
    json_decref(args);
    T_EQ_STR(json_string_value(r), "VM status: running\n");
    json_decref(r);
    fy_qmp_client_close(a);
    fy_qmp_client_close(b);
    fy_qmp_server_free(s, 100);
    ctl_free(vm);
}

/* ---- a whole migration through QMP sockets ---- */

/* Wait for MIGRATION with `status`; seen collects the MIGRATION statuses
 * and the STOP/RESUME events in order, *passes counts MIGRATION_PASS. */
static json_t *wait_event_status(FyQmpClient *c, const char *status,
                                 char *seen, size_t seen_len, int *passes)
{
    for (;;) {
        FyError *err = NULL;
        json_t *ev = fy_qmp_client_next_event(c, 10000, &err);
        fy_error_free(err);
        if (!ev)
            return NULL;
        const char *name = json_string_value(json_object_get(ev, "event"));
        const char *st = json_string_value(json_object_get(
            json_object_get(ev, "data"), "status"));
        if (!strcmp(name, "MIGRATION_PASS")) {
            (*passes)++;
        } else if (!strcmp(name, "MIGRATION")) {
            if (seen[0])
                strncat(seen, ",", seen_len - strlen(seen) - 1);
            strncat(seen, st, seen_len - strlen(seen) - 1);
        } else {
            if (seen[0])
                strncat(seen, ",", seen_len - strlen(seen) - 1);
            strncat(seen, name, seen_len - strlen(seen) - 1);
        }
        if (st && !strcmp(st, status))
            return ev;
        json_decref(ev);
    }
}

static json_t *exec_ok(FyQmpClient *c, const char *name, json_t *args)
{
    FyError *err = NULL;
    json_t *r = fy_qmp_client_execute(c, name, args, NULL, &err);
    if (!r)
        T_FAIL("%s: %s", name, fy_error_msg(err));
    fy_error_free(err);
    json_decref(args);
    return r;
}

static void test_migration_over_qmp(void)
{
    CtlVM *src = ctl_new("ctl", 42), *dst = ctl_new("ctl", 0);
    FyError *err = NULL;
    ctl_start(src, NULL);   /* before any client: no RESUME event queued */
    FyQmpServer *ss = fy_qmp_server_new(src->mon, "tcp:127.0.0.1:0", &err);
    FyQmpServer *ds = fy_qmp_server_new(dst->mon, "tcp:127.0.0.1:0", &err);
    FyQmpClient *sc = fy_qmp_client_connect(fy_qmp_server_address(ss), 5000,
                                            &err);
    FyQmpClient *dc = fy_qmp_client_connect(fy_qmp_server_address(ds), 5000,
                                            &err);
    T_ASSERT(sc && dc);
    json_t *events = json_pack("{s:[{s:s,s:b}]}", "capabilities",
                               "capability", "events", "state", 1);
    json_decref(exec_ok(sc, "migrate-set-capabilities", json_incref(events)));
    json_decref(exec_ok(dc, "migrate-set-capabilities", events));
    json_decref(exec_ok(dc, "migrate-incoming",
                        json_pack("{s:s}", "uri", "tcp:127.0.0.1:0")));
    json_t *q = exec_ok(dc, "query-migrate", NULL);
    json_t *sa = json_array_get(json_object_get(q, "socket-address"), 0);
    char uri[128];
    snprintf(uri, sizeof(uri), "tcp:%s:%s",
             json_string_value(json_object_get(sa, "host")),
             json_string_value(json_object_get(sa, "port")));
    json_decref(q);
    json_decref(exec_ok(sc, "migrate", json_pack("{s:s}", "uri", uri)));

    char sseen[512] = "", dseen[512] = "";
    int spasses = 0, dpasses = 0;
    json_t *ev = wait_event_status(sc, "completed", sseen, sizeof(sseen),
                                   &spasses);
    T_ASSERT(ev);
    json_decref(ev);
    ev = wait_event_status(dc, "completed", dseen, sizeof(dseen), &dpasses);
    T_ASSERT(ev);
    json_decref(ev);
    T_EQ_STR(sseen, "setup,active,STOP,completed");
    T_ASSERT(spasses >= 2);   /* the first sync, the final one */
    T_EQ_INT(dpasses, 0);
    /* The destination starts its VM (RESUME) before it reports completed. */
    T_EQ_STR(dseen, "setup,active,RESUME,completed");

    q = exec_ok(sc, "query-migrate", NULL);
    T_EQ_STR(json_string_value(json_object_get(q, "status")), "completed");
    T_ASSERT(json_integer_value(json_object_get(q, "total-time")) >= 0);
    T_ASSERT(json_object_get(q, "downtime"));
    T_ASSERT(json_object_get(q, "setup-time"));
    json_t *ram = json_object_get(q, "ram");
    T_EQ_INT(json_integer_value(json_object_get(ram, "total")), CTL_RAM_SIZE);
    T_EQ_INT(json_integer_value(json_object_get(ram, "remaining")), 0);
    T_ASSERT(json_integer_value(json_object_get(ram, "transferred")) >
             (json_int_t)(CTL_RAM_SIZE / 2));
    static const char *fields[] = { "duplicate", "normal", "mbps",
        "dirty-pages-rate", "dirty-sync-count", "pages-per-second" };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        if (!json_object_get(ram, fields[i]))
            T_FAIL("ram.%s missing", fields[i]);
    T_EQ_INT(json_integer_value(json_object_get(ram, "normal")) +
             json_integer_value(json_object_get(ram, "duplicate")),
             CTL_RAM_SIZE / FY_TARGET_PAGE_SIZE);
    json_decref(q);

    /* RAM and device state arrived, through the debug command too. */
    T_EQ_MEM(dst->block.host, src->block.host, CTL_RAM_SIZE);
    T_EQ_INT(dst->dev.counter, 42);
    T_EQ_INT(dst->dev.regs[1], 42 * 13);
    json_t *d1 = exec_ok(sc, "x-ferry-ram-digest", NULL);
    json_t *d2 = exec_ok(dc, "x-ferry-ram-digest", NULL);
    T_ASSERT(json_equal(d1, d2));
    json_decref(d1);
    json_decref(d2);
    json_t *st = exec_ok(sc, "query-status", NULL);
    T_EQ_STR(json_string_value(json_object_get(st, "status")), "postmigrate");
    json_decref(st);
    st = exec_ok(dc, "query-status", NULL);
    T_ASSERT(json_is_true(json_object_get(st, "running")));
    json_decref(st);

    fy_qmp_client_close(sc);
    fy_qmp_client_close(dc);
    fy_qmp_server_free(ss, 100);
    fy_qmp_server_free(ds, 100);
    ctl_free(src);
    ctl_free(dst);
}

/* A client that goes away mid-stream, and one that never reads, do not
 * stall the server or other clients. */
static void test_server_robust(void)
{
    CtlVM *vm = ctl_new("ctl", 1);
    FyError *err = NULL;
    FyQmpServer *s = fy_qmp_server_new(vm->mon, "tcp:127.0.0.1:0", &err);
    FySockAddr sa;
    fy_sockaddr_parse(fy_qmp_server_address(s), false, &sa, NULL);
    int lazy = fy_sockaddr_connect(&sa, 1000, NULL);
    const char *neg = "{\"execute\":\"qmp_capabilities\"}";
    T_EQ_INT(write(lazy, neg, strlen(neg)), (long)strlen(neg));
    for (int i = 0; i < 20; i++) {
        int gone = fy_sockaddr_connect(&sa, 5000, &err);
        if (gone < 0) {
            T_FAIL("connect %d: %s", i, fy_error_msg(err));
            fy_error_clear(&err);
            continue;
        }
        const char *half = "{\"execute\":\"query-st";
        T_EQ_INT(write(gone, half, strlen(half)), (long)strlen(half));
        close(gone);
    }
    /* Lots of events for the lazy client while another client works. */
    FyQmpClient *c = fy_qmp_client_connect(fy_qmp_server_address(s), 20000,
                                           &err);
    T_ASSERT(c);
    for (int i = 0; i < 2000; i++)
        fy_monitor_emit_event(vm->mon, "STOP", NULL);
    json_t *r = fy_qmp_client_execute(c, "query-version", NULL, NULL, &err);
    T_ASSERT(r);
    json_decref(r);
    close(lazy);
    fy_qmp_client_close(c);
    fy_qmp_server_free(s, 100);
    ctl_free(vm);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    T_RUN(test_streamer_values);
    T_RUN(test_streamer_errors);
    T_RUN(test_greeting);
    T_RUN(test_negotiation);
    T_RUN(test_request_errors);
    T_RUN(test_register_specs);
    T_RUN(test_caps_commands);
    T_RUN(test_params_commands);
    T_RUN(test_migrate_command_errors);
    T_RUN(test_server_unix_protocol);
    T_RUN(test_server_errors);
    T_RUN(test_client_and_events);
    T_RUN(test_migration_over_qmp);
    T_RUN(test_server_robust);
    return t_done();
}
