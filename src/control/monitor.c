/*
 * monitor.c: FyMonitor, the command registry of one VM, and its events.
 *
 * Commands are registered before any front end serves them and never
 * removed, so lookups need no lock. Arguments are checked against each
 * command's spec before the command runs, so commands see only arguments
 * of the declared types.
 *
 * Events: the monitor is the migration's event handler and fans every
 * event (the migration's and the embedder's) out to its listeners, each
 * event stamped once with the wall clock. Lock order: a listener is called
 * with ev_lock held and must not call back into the monitor's events; no
 * one holds ev_lock while calling into the migration.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "control/control-int.h"

#define MAX_LISTENERS 16
#define MAX_ARGS 16

typedef enum { AT_STRING, AT_BOOL, AT_INT, AT_NUMBER, AT_OBJECT, AT_ARRAY,
               AT_ANY } ArgType;

typedef struct ArgSpec {
    char name[64];
    ArgType type;
    bool optional;
} ArgSpec;

typedef struct Command {
    char *name;
    bool any_args;          /* NULL spec: the command checks */
    int nargs;
    ArgSpec args[MAX_ARGS];
    FyQmpCommandFn fn;
    void *opaque;
} Command;

typedef struct Listener {
    FyMonitorEventFn fn;
    void *opaque;
} Listener;

struct FyMonitor {
    FyMigration *mig;
    FySaveState *ss;
    Command *cmds;
    size_t ncmds, cap;

    pthread_mutex_t ev_lock;
    Listener listeners[MAX_LISTENERS]; /* (ev_lock) */
    int nlisteners;                    /* (ev_lock) */
};

static const struct {
    const char *code;
    ArgType type;
    const char *what;   /* QEMU's word in "expected: ..." */
} arg_types[] = {
    { "s", AT_STRING, "string" },
    { "b", AT_BOOL, "boolean" },
    { "i", AT_INT, "integer" },
    { "n", AT_NUMBER, "number" },
    { "o", AT_OBJECT, "object" },
    { "a", AT_ARRAY, "array" },
    { "any", AT_ANY, "any" },
};

static void migration_event(void *opaque, const char *name, json_t *data)
{
    fy_monitor_emit_event(opaque, name, data);
}

FyMonitor *fy_monitor_new(FyMigration *mig, FySaveState *ss)
{
    FyMonitor *mon = calloc(1, sizeof(*mon));
    if (!mon)
        return NULL;
    mon->mig = mig;
    mon->ss = ss;
    pthread_mutex_init(&mon->ev_lock, NULL);
    if (fy_qmp_register_builtin(mon, NULL) < 0) {
        fy_monitor_free(mon);
        return NULL;
    }
    if (mig)
        fy_migration_set_event_handler(mig, migration_event, mon);
    return mon;
}

void fy_monitor_free(FyMonitor *mon)
{
    if (!mon)
        return;
    if (mon->mig) {
        fy_migration_set_event_handler(mon->mig, NULL, NULL);
        /* An event may be on its way through the old handler: the
         * migration emits with its event lock held, and waiting (even for
         * 0 ms) takes that lock once, so it returns after the emission. */
        fy_migration_wait(mon->mig, 0);
    }
    for (size_t i = 0; i < mon->ncmds; i++)
        free(mon->cmds[i].name);
    free(mon->cmds);
    pthread_mutex_destroy(&mon->ev_lock);
    free(mon);
}

FyMigration *fy_monitor_migration(FyMonitor *mon)
{
    return mon->mig;
}

FySaveState *fy_monitor_savestate(FyMonitor *mon)
{
    return mon->ss;
}

size_t fy_monitor_command_count(FyMonitor *mon)
{
    return mon->ncmds;
}

const char *fy_monitor_command_name(FyMonitor *mon, size_t i)
{
    return i < mon->ncmds ? mon->cmds[i].name : NULL;
}

/* ---- registration ---- */

static int parse_one_arg(const char *word, size_t len, ArgSpec *a,
                         FyError **errp)
{
    const char *colon = memchr(word, ':', len);
    if (!colon || colon == word || (size_t)(colon - word) >= sizeof(a->name)) {
        fy_error_setg(errp, "bad argument spec '%.*s'", (int)len, word);
        return -1;
    }
    memcpy(a->name, word, (size_t)(colon - word));
    a->name[colon - word] = '\0';
    const char *t = colon + 1;
    size_t tlen = len - (size_t)(t - word);
    a->optional = tlen > 0 && t[tlen - 1] == '?';
    if (a->optional)
        tlen--;
    for (size_t i = 0; i < sizeof(arg_types) / sizeof(arg_types[0]); i++) {
        if (strlen(arg_types[i].code) == tlen &&
            !strncmp(arg_types[i].code, t, tlen)) {
            a->type = arg_types[i].type;
            return 0;
        }
    }
    fy_error_setg(errp, "bad argument type in spec '%.*s'", (int)len, word);
    return -1;
}

static int parse_spec(const char *spec, Command *c, FyError **errp)
{
    c->any_args = spec == NULL;
    c->nargs = 0;
    for (const char *p = spec; p && *p;) {
        p += strspn(p, " ");
        size_t len = strcspn(p, " ");
        if (!len)
            break;
        if (c->nargs == MAX_ARGS) {
            fy_error_setg(errp, "too many arguments in spec '%s'", spec);
            return -1;
        }
        if (parse_one_arg(p, len, &c->args[c->nargs++], errp) < 0)
            return -1;
        p += len;
    }
    return 0;
}

static Command *find_command(FyMonitor *mon, const char *name)
{
    for (size_t i = 0; i < mon->ncmds; i++) {
        if (!strcmp(mon->cmds[i].name, name))
            return &mon->cmds[i];
    }
    return NULL;
}

int fy_monitor_register(FyMonitor *mon, const char *name, const char *args_spec,
                        FyQmpCommandFn fn, void *opaque, FyError **errp)
{
    Command c = { .fn = fn, .opaque = opaque };
    if (!name || !*name || !fn) {
        fy_error_setg(errp, "a command needs a name and a function");
        return -1;
    }
    if (parse_spec(args_spec, &c, errp) < 0) {
        fy_error_prepend(errp, "command '%s': ", name);
        return -1;
    }
    Command *old = find_command(mon, name);
    if (old) {
        c.name = old->name;
        *old = c;
        return 0;
    }
    if (mon->ncmds == mon->cap) {
        size_t ncap = mon->cap ? mon->cap * 2 : 32;
        Command *n = realloc(mon->cmds, ncap * sizeof(*n));
        if (!n) {
            fy_error_setg(errp, "out of memory registering '%s'", name);
            return -1;
        }
        mon->cmds = n;
        mon->cap = ncap;
    }
    c.name = strdup(name);
    if (!c.name) {
        fy_error_setg(errp, "out of memory registering '%s'", name);
        return -1;
    }
    mon->cmds[mon->ncmds++] = c;
    return 0;
}

bool fy_monitor_has_command(FyMonitor *mon, const char *name)
{
    return find_command(mon, name) != NULL;
}

/* ---- execution ---- */

static bool type_ok(ArgType t, json_t *v)
{
    switch (t) {
    case AT_STRING: return json_is_string(v);
    case AT_BOOL:   return json_is_boolean(v);
    case AT_INT:    return json_is_integer(v);
    case AT_NUMBER: return json_is_number(v);
    case AT_OBJECT: return json_is_object(v);
    case AT_ARRAY:  return json_is_array(v);
    case AT_ANY:    return true;
    }
    return false;
}

static const char *type_word(ArgType t)
{
    for (size_t i = 0; i < sizeof(arg_types) / sizeof(arg_types[0]); i++) {
        if (arg_types[i].type == t)
            return arg_types[i].what;
    }
    return "?";
}

static int check_args(const Command *c, json_t *args, FyError **errp)
{
    if (c->any_args)
        return 0;
    for (int i = 0; i < c->nargs; i++) {
        json_t *v = json_object_get(args, c->args[i].name);
        if (!v) {
            if (c->args[i].optional)
                continue;
            fy_error_setg(errp, "Parameter '%s' is missing", c->args[i].name);
            return -1;
        }
        if (!type_ok(c->args[i].type, v)) {
            fy_error_setg(errp, "Invalid parameter type for '%s', expected: %s",
                          c->args[i].name, type_word(c->args[i].type));
            return -1;
        }
    }
    const char *key;
    json_t *v;
    json_object_foreach(args, key, v) {
        bool known = false;
        for (int i = 0; i < c->nargs && !known; i++)
            known = !strcmp(c->args[i].name, key);
        if (!known) {
            fy_error_setg(errp, "Parameter '%s' is unexpected", key);
            return -1;
        }
    }
    return 0;
}

FyQmpResult fy_monitor_execute(FyMonitor *mon, const char *name, json_t *args,
                               json_t **ret, FyError **errp)
{
    *ret = NULL;
    Command *c = find_command(mon, name);
    if (!c) {
        fy_error_setg(errp, "The command %s has not been found", name);
        return FY_QMP_COMMAND_NOT_FOUND;
    }
    json_t *empty = NULL;
    if (!args)
        args = empty = json_object();
    if (!args) {
        fy_error_setg(errp, "out of memory");
        return FY_QMP_GENERIC_ERROR;
    }
    if (!json_is_object(args)) {
        fy_error_setg(errp, "QMP input member 'arguments' must be an object");
        return FY_QMP_GENERIC_ERROR;
    }
    FyQmpResult r = FY_QMP_GENERIC_ERROR;
    if (check_args(c, args, errp) == 0) {
        FyError *err = NULL;
        *ret = c->fn(c->opaque, args, &err);
        if (*ret) {
            fy_error_free(err);
            r = FY_QMP_OK;
        } else {
            if (!err)
                fy_error_setg(&err, "command '%s' failed", name);
            fy_error_propagate(errp, err);
        }
    }
    json_decref(empty);
    return r;
}

/* ---- events ---- */

int fy_monitor_add_event_listener(FyMonitor *mon, FyMonitorEventFn fn,
                                  void *opaque)
{
    int ret = -1;
    pthread_mutex_lock(&mon->ev_lock);
    if (mon->nlisteners < MAX_LISTENERS) {
        mon->listeners[mon->nlisteners++] = (Listener){ fn, opaque };
        ret = 0;
    }
    pthread_mutex_unlock(&mon->ev_lock);
    return ret;
}

void fy_monitor_remove_event_listener(FyMonitor *mon, FyMonitorEventFn fn,
                                      void *opaque)
{
    pthread_mutex_lock(&mon->ev_lock);
    for (int i = 0; i < mon->nlisteners; i++) {
        if (mon->listeners[i].fn == fn && mon->listeners[i].opaque == opaque) {
            memmove(&mon->listeners[i], &mon->listeners[i + 1],
                    (size_t)(mon->nlisteners - i - 1) * sizeof(Listener));
            mon->nlisteners--;
            break;
        }
    }
    pthread_mutex_unlock(&mon->ev_lock);
}

void fy_monitor_emit_event(FyMonitor *mon, const char *name, json_t *data)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    json_t *ev = json_pack("{s:s,s:{s:I,s:I}}", "event", name,
                           "timestamp", "seconds", (json_int_t)tv.tv_sec,
                           "microseconds", (json_int_t)tv.tv_usec);
    if (!ev)
        return;
    /* As QEMU: an event without members (STOP, RESUME) has no "data". */
    if (data && json_object_size(data) > 0)
        json_object_set(ev, "data", data);
    pthread_mutex_lock(&mon->ev_lock);
    for (int i = 0; i < mon->nlisteners; i++)
        mon->listeners[i].fn(mon->listeners[i].opaque, ev);
    pthread_mutex_unlock(&mon->ev_lock);
    json_decref(ev);
}
