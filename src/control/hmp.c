/*
 * hmp.c: the human monitor: parse a command line, run the QMP command
 * behind it, print what QEMU's HMP prints.
 *
 * A line is split into words; "double quotes" keep spaces (needed for
 * `migrate "exec:cat > f"`), backslash escapes the next character inside
 * them. Each command has a fixed argument list; too few arguments or too
 * many are reported before anything runs. Errors from the command print
 * as "Error: <desc>", like QEMU's hmp_handle_error.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "control/control-int.h"
#include "control/converge-cmds.h"

#define MAX_WORDS 16

typedef struct Hmp {
    FyMonitor *mon;
    FyStrBuf out;
    bool can_block;
    bool failed;
} Hmp;

typedef struct HmpCommand {
    const char *name;
    const char *alias;
    const char *params;       /* for help and for the argument count */
    int min_args, max_args;   /* words after the name, flags excluded */
    const char *flags;        /* single-letter flags, e.g. "dr" for -d -r */
    void (*fn)(Hmp *h, int argc, char **argv, const char *flags_set);
    const char *help;
} HmpCommand;

/* ---- helpers ---- */

static void report_error(Hmp *h, const char *msg)
{
    fy_sb_printf(&h->out, "Error: %s\n", msg);
    h->failed = true;
}

/* Run a QMP command; prints the error and returns NULL if it failed. */
static json_t *qmp(Hmp *h, const char *name, json_t *args)
{
    json_t *ret = NULL;
    FyError *err = NULL;
    if (fy_monitor_execute(h->mon, name, args, &ret, &err) != FY_QMP_OK) {
        report_error(h, fy_error_msg(err));
        fy_error_free(err);
        return NULL;
    }
    return ret;
}

static void qmp_void(Hmp *h, const char *name, json_t *args)
{
    json_decref(qmp(h, name, args));
    json_decref(args);
}

/* ---- commands ---- */

static void h_migrate(Hmp *h, int argc, char **argv, const char *flags)
{
    bool detach = strchr(flags, 'd') != NULL;
    bool resume = strchr(flags, 'r') != NULL;
    json_t *args = json_pack("{s:s,s:b}", "uri", argv[0], "resume", resume);
    json_t *r = qmp(h, "migrate", args);
    json_decref(args);
    if (!r)
        return;
    json_decref(r);
    if (detach)
        return;
    if (!h->can_block) {
        fy_sb_puts(&h->out, "terminal does not allow synchronous migration, "
                   "continuing detached\n");
        return;
    }
    FyMigration *m = fy_monitor_migration(h->mon);
    if (fy_migration_wait(m, -1) != MIGRATION_STATUS_COMPLETED) {
        json_t *info = fy_migration_query(m);
        const char *desc = json_string_value(json_object_get(info,
                                                             "error-desc"));
        if (desc) {
            fy_sb_printf(&h->out, "%s\n", desc);
            h->failed = true;
        }
        json_decref(info);
    }
}

static void h_uri_command(Hmp *h, const char *qmp_name, const char *uri)
{
    qmp_void(h, qmp_name, json_pack("{s:s}", "uri", uri));
}

static void h_migrate_incoming(Hmp *h, int argc, char **argv, const char *f)
{
    h_uri_command(h, "migrate-incoming", argv[0]);
}

static void h_migrate_recover(Hmp *h, int argc, char **argv, const char *f)
{
    h_uri_command(h, "migrate-recover", argv[0]);
}

static void h_migrate_cancel(Hmp *h, int argc, char **argv, const char *f)
{
    qmp_void(h, "migrate_cancel", NULL);
}

static void h_migrate_continue(Hmp *h, int argc, char **argv, const char *f)
{
    qmp_void(h, "migrate-continue", json_pack("{s:s}", "state", argv[0]));
}

static void h_migrate_start_postcopy(Hmp *h, int argc, char **argv,
                                     const char *f)
{
    qmp_void(h, "migrate-start-postcopy", NULL);
}

static void h_migrate_pause(Hmp *h, int argc, char **argv, const char *f)
{
    qmp_void(h, "migrate-pause", NULL);
}

static int parse_on_off(Hmp *h, const char *s, bool *out)
{
    if (!strcmp(s, "on"))
        *out = true;
    else if (!strcmp(s, "off"))
        *out = false;
    else {
        fy_sb_puts(&h->out, "Expected 'on' or 'off'\n");
        h->failed = true;
        return -1;
    }
    return 0;
}

static void h_set_capability(Hmp *h, int argc, char **argv, const char *f)
{
    bool on;
    if (parse_on_off(h, argv[1], &on) < 0)
        return;
    qmp_void(h, "migrate-set-capabilities",
             json_pack("{s:[{s:s,s:b}]}", "capabilities", "capability",
                       argv[0], "state", on));
}

/* A size: a number with an optional fraction and suffix B K M G T P E
 * (powers of 1024); default_shift applies without a suffix (QEMU's
 * qemu_strtosz with a default unit: MiB for the bandwidth parameters). */
static int parse_size(const char *s, int default_shift, uint64_t *out)
{
    static const char units[] = "BKMGTPE";
    char *end;
    errno = 0;
    if (!*s || *s == '-' || isspace((unsigned char)*s))
        return -1;
    double v = strtod(s, &end);
    if (errno || end == s)
        return -1;
    int shift = default_shift;
    if (*end) {
        const char *u = strchr(units, toupper((unsigned char)*end));
        if (!u || end[1])
            return -1;
        shift = (int)(u - units) * 10;
    } else if (strpbrk(s, ".eE") && default_shift == 0) {
        return -1; /* a fraction of a byte */
    }
    double bytes = v * (double)(1ull << shift);
    if (bytes >= 9223372036854775808.0 || bytes != bytes)
        return -1;
    *out = (uint64_t)bytes;
    return 0;
}

static bool is_bandwidth(const char *name)
{
    return !strcmp(name, "max-bandwidth") ||
           !strcmp(name, "avail-switchover-bandwidth") ||
           !strcmp(name, "max-postcopy-bandwidth");
}

/* The JSON value for a parameter given as text: its type follows the
 * parameter's current value; parameters ferry does not report get a number
 * when the text is one, else a string (the migration code then refuses or
 * accepts them with its own message). */
static json_t *param_value(Hmp *h, const char *name, const char *text)
{
    json_t *cur_all = qmp(h, "query-migrate-parameters", NULL);
    json_t *cur = json_object_get(cur_all, name);
    json_t *v = NULL;
    uint64_t n;
    bool on;
    if (json_is_string(cur)) {
        v = json_string(text);
    } else if (json_is_boolean(cur)) {
        if (parse_on_off(h, text, &on) == 0)
            v = json_boolean(on);
    } else if (parse_size(text, is_bandwidth(name) ? 20 : 0, &n) == 0) {
        v = json_integer((json_int_t)n);
    } else if (json_is_integer(cur) || is_bandwidth(name)) {
        fy_sb_printf(&h->out, "Error: Invalid size %s\n", text);
        h->failed = true;
    } else {
        v = json_string(text);
    }
    json_decref(cur_all);
    return v;
}

static void h_set_parameter(Hmp *h, int argc, char **argv, const char *f)
{
    char name[128];
    snprintf(name, sizeof(name), "%s", argv[0]);
    for (char *p = name; *p; p++)
        *p = *p == '_' ? '-' : *p;   /* accept QEMU's old spelling too */
    json_t *v = param_value(h, name, argv[1]);
    if (!v)
        return;
    json_t *args = json_object();
    json_object_set_new(args, name, v);
    qmp_void(h, "migrate-set-parameters", args);
}

static void h_simple(Hmp *h, const char *name)
{
    qmp_void(h, name, NULL);
}

static void h_stop(Hmp *h, int argc, char **argv, const char *f)
{
    h_simple(h, "stop");
}

static void h_cont(Hmp *h, int argc, char **argv, const char *f)
{
    h_simple(h, "cont");
}

/* ---- convergence (hmp-converge.c builds the arguments and output) ---- */

static void h_converge(Hmp *h, const char *name, json_t *args, FyError *err,
                       void (*done)(FyStrBuf *, json_t *))
{
    if (!args) {
        report_error(h, fy_error_msg(err));
        fy_error_free(err);
        return;
    }
    json_t *r = qmp(h, name, args);
    if (r && done)
        done(&h->out, args);
    json_decref(r);
    json_decref(args);
}

static void h_calc_dirty_rate(Hmp *h, int argc, char **argv, const char *f)
{
    FyError *err = NULL;
    json_t *a = fy_hmp_calc_dirty_rate_args(argc, argv, f, &err);
    h_converge(h, "calc-dirty-rate", a, err, fy_hmp_format_calc_dirty_rate);
}

static void h_set_vcpu_dirty_limit(Hmp *h, int argc, char **argv,
                                   const char *f)
{
    FyError *err = NULL;
    json_t *a = fy_hmp_vcpu_dirty_limit_args(argc, argv, true, &err);
    h_converge(h, "set-vcpu-dirty-limit", a, err, NULL);
}

static void h_cancel_vcpu_dirty_limit(Hmp *h, int argc, char **argv,
                                      const char *f)
{
    FyError *err = NULL;
    json_t *a = fy_hmp_vcpu_dirty_limit_args(argc, argv, false, &err);
    h_converge(h, "cancel-vcpu-dirty-limit", a, err, NULL);
}

static void h_quit(Hmp *h, int argc, char **argv, const char *f)
{
    h_simple(h, "quit");
}

/* ---- info ---- */

typedef struct InfoItem {
    const char *name;
    const char *qmp;
    void (*format)(Hmp *h, json_t *ret);
    const char *help;
} InfoItem;

static void fmt_migrate(Hmp *h, json_t *r)
{
    fy_hmp_format_migrate(&h->out, r, fy_monitor_savestate(h->mon));
}

static void fmt_caps(Hmp *h, json_t *r)
{
    fy_hmp_format_capabilities(&h->out, r);
}

static void fmt_params(Hmp *h, json_t *r)
{
    fy_hmp_format_parameters(&h->out, r);
}

static void fmt_status(Hmp *h, json_t *r)
{
    fy_hmp_format_status(&h->out, r);
}

static void fmt_version(Hmp *h, json_t *r)
{
    json_t *q = json_object_get(r, "qemu");
    fy_sb_printf(&h->out, "%" JSON_INTEGER_FORMAT ".%" JSON_INTEGER_FORMAT
                 ".%" JSON_INTEGER_FORMAT " (%s)\n",
                 json_integer_value(json_object_get(q, "major")),
                 json_integer_value(json_object_get(q, "minor")),
                 json_integer_value(json_object_get(q, "micro")),
                 json_string_value(json_object_get(r, "package")));
}

static void fmt_commands(Hmp *h, json_t *r)
{
    size_t i;
    json_t *c;
    json_array_foreach(r, i, c)
        fy_sb_printf(&h->out, "%s\n",
                     json_string_value(json_object_get(c, "name")));
}

/* [{"idstr", "length", "digest"}, ...] */
static void fmt_digest(Hmp *h, json_t *r)
{
    size_t i;
    json_t *b;
    json_array_foreach(r, i, b)
        fy_sb_printf(&h->out, "%s: %s (%" JSON_INTEGER_FORMAT " bytes)\n",
                     json_string_value(json_object_get(b, "idstr")),
                     json_string_value(json_object_get(b, "digest")),
                     json_integer_value(json_object_get(b, "length")));
}

static void fmt_json(Hmp *h, json_t *r)
{
    char *s = json_dumps(r, JSON_INDENT(2) | JSON_ENCODE_ANY);
    if (s) {
        fy_sb_printf(&h->out, "%s\n", s);
        free(s);
    }
}

static void fmt_dirty_rate(Hmp *h, json_t *r)
{
    fy_hmp_format_dirty_rate(&h->out, r);
}

static void fmt_vcpu_dirty_limit(Hmp *h, json_t *r)
{
    fy_hmp_format_vcpu_dirty_limit(&h->out, r);
}

static const InfoItem info_items[] = {
    { "migrate", "query-migrate", fmt_migrate, "show migration status" },
    { "migrate_capabilities", "query-migrate-capabilities", fmt_caps,
      "show current migration capabilities" },
    { "migrate_parameters", "query-migrate-parameters", fmt_params,
      "show current migration parameters" },
    { "status", "query-status", fmt_status, "show the current VM status" },
    { "version", "query-version", fmt_version, "show the version of QEMU "
      "the monitor is compatible with, and ferry's" },
    { "commands", "query-commands", fmt_commands, "list QMP commands" },
    { "ram_digest", "x-ferry-ram-digest", fmt_digest,
      "show a digest of each RAM block (debug)" },
    { "dirty_rate", "query-dirty-rate", fmt_dirty_rate,
      "show dirty rate information" },
    { "vcpu_dirty_limit", "query-vcpu-dirty-limit", fmt_vcpu_dirty_limit,
      "show dirty page limit information of all vCPU" },
    { "device_state", "x-ferry-device-state", fmt_json,
      "show the state of every device as JSON (debug)" },
};
#define N_INFO (sizeof(info_items) / sizeof(info_items[0]))

static void info_help(Hmp *h)
{
    for (size_t i = 0; i < N_INFO; i++)
        fy_sb_printf(&h->out, "info %-22s -- %s\n", info_items[i].name,
                     info_items[i].help);
}

static void h_info(Hmp *h, int argc, char **argv, const char *f)
{
    if (argc == 0) {
        info_help(h);
        return;
    }
    for (size_t i = 0; i < N_INFO; i++) {
        if (strcmp(info_items[i].name, argv[0]) != 0)
            continue;
        json_t *r = qmp(h, info_items[i].qmp, NULL);
        if (r)
            info_items[i].format(h, r);
        json_decref(r);
        return;
    }
    fy_sb_printf(&h->out, "info: unknown item '%s'\n", argv[0]);
    h->failed = true;
    info_help(h);
}

static void h_help(Hmp *h, int argc, char **argv, const char *f);

static const HmpCommand commands[] = {
    { "help", "?", "[cmd]", 0, 1, "", h_help, "show the help" },
    { "info", NULL, "[subcommand]", 0, 1, "", h_info,
      "show various information about the system state" },
    { "migrate", NULL, "[-d] [-r] uri", 1, 1, "dr", h_migrate,
      "migrate to URI (using -d to not wait for completion; -r to resume a "
      "paused postcopy migration)" },
    { "migrate_incoming", NULL, "uri", 1, 1, "", h_migrate_incoming,
      "continue an incoming migration from an -incoming defer" },
    { "migrate_recover", NULL, "uri", 1, 1, "", h_migrate_recover,
      "continue a paused incoming postcopy migration" },
    { "migrate_cancel", NULL, "", 0, 0, "", h_migrate_cancel,
      "cancel the current VM migration" },
    { "migrate_continue", NULL, "state", 1, 1, "", h_migrate_continue,
      "continue migration from the given paused state" },
    { "migrate_set_capability", NULL, "capability state", 2, 2, "",
      h_set_capability, "enable/disable the usage of a capability for "
      "migration" },
    { "migrate_set_parameter", NULL, "parameter value", 2, 2, "",
      h_set_parameter, "set a parameter for migration" },
    { "migrate_start_postcopy", NULL, "", 0, 0, "", h_migrate_start_postcopy,
      "switch an in-progress migration to postcopy mode" },
    { "migrate_pause", NULL, "", 0, 0, "", h_migrate_pause,
      "pause an ongoing migration (postcopy-only)" },
    { "stop", "s", "", 0, 0, "", h_stop, "stop emulation" },
    { "cont", "c", "", 0, 0, "", h_cont, "resume emulation" },
    { "quit", "q", "", 0, 0, "", h_quit, "quit the emulator" },
    { "calc_dirty_rate", NULL, "[-r] [-b] second [sample_pages_per_GB]", 1, 2,
      "rb", h_calc_dirty_rate, "start a round of guest dirty rate "
      "measurement (using -r to specify dirty ring as the method of "
      "calculation and -b to specify dirty bitmap as method of calculation)" },
    { "set_vcpu_dirty_limit", NULL, "dirty_rate [cpu_index]", 1, 2, "",
      h_set_vcpu_dirty_limit, "set dirty page rate limit, use cpu_index to "
      "set limit on a specified virtual cpu" },
    { "cancel_vcpu_dirty_limit", NULL, "[cpu_index]", 0, 1, "",
      h_cancel_vcpu_dirty_limit, "cancel dirty page rate limit, use "
      "cpu_index to cancel limit on a specified virtual cpu" },
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void h_help(Hmp *h, int argc, char **argv, const char *f)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        const HmpCommand *c = &commands[i];
        if (argc && strcmp(argv[0], c->name) && (!c->alias ||
                                                 strcmp(argv[0], c->alias)))
            continue;
        fy_sb_printf(&h->out, "%s%s%s %s -- %s\n", c->name,
                     c->alias ? "|" : "", c->alias ? c->alias : "", c->params,
                     c->help);
        if (!strcmp(c->name, "info") && argc)
            info_help(h);
    }
}

/* ---- parsing ---- */

/* Split into words; returns the count, or -1 with a message. Words point
 * into buf, which the caller owns. */
static int split(char *buf, char **words, Hmp *h)
{
    int n = 0;
    char *p = buf;
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            return n;
        if (n == MAX_WORDS) {
            fy_sb_puts(&h->out, "too many arguments\n");
            return -1;
        }
        char *w = p, *o = p;
        if (*p == '"') {
            p++;
            while (*p && *p != '"') {
                if (*p == '\\' && p[1])
                    p++;
                *o++ = *p++;
            }
            if (*p != '"') {
                fy_sb_puts(&h->out, "unterminated string literal\n");
                return -1;
            }
            p++;
        } else {
            while (*p && !isspace((unsigned char)*p))
                *o++ = *p++;
        }
        /* Terminate the word in place; an unquoted word ends on the space
         * that the terminator overwrites, so step past it. */
        char *next = (*p && o == p) ? p + 1 : p;
        *o = '\0';
        words[n++] = w;
        p = next;
    }
}

static const HmpCommand *find(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (!strcmp(commands[i].name, name) ||
            (commands[i].alias && !strcmp(commands[i].alias, name)))
            return &commands[i];
    }
    return NULL;
}

/* Take leading -X flags the command knows; returns the first non-flag. */
static int take_flags(const HmpCommand *c, int argc, char **argv, char *set,
                      Hmp *h)
{
    int i = 0;
    size_t n = 0;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        for (const char *f = argv[i] + 1; *f; f++) {
            if (!strchr(c->flags, *f)) {
                fy_sb_printf(&h->out, "%s: unsupported option -%c\n", c->name,
                             *f);
                return -1;
            }
            if (n < 7)
                set[n++] = *f;
        }
    }
    set[n] = '\0';
    return i;
}

static void run_line(Hmp *h, char *buf)
{
    char *w[MAX_WORDS];
    int n = split(buf, w, h);
    if (n < 0) {
        h->failed = true;
        return;
    }
    if (n == 0)
        return;
    const HmpCommand *c = find(w[0]);
    if (!c) {
        fy_sb_printf(&h->out, "unknown command: '%s'\n", w[0]);
        h->failed = true;
        return;
    }
    char flags[8];
    int first = take_flags(c, n - 1, w + 1, flags, h);
    if (first < 0) {
        h->failed = true;
        return;
    }
    int argc = n - 1 - first;
    if (argc < c->min_args) {
        fy_sb_printf(&h->out, "%s: missing argument (usage: %s %s)\n",
                     c->name, c->name, c->params);
        h->failed = true;
    } else if (argc > c->max_args) {
        fy_sb_printf(&h->out, "%s: extraneous characters at the end of line\n",
                     c->name);
        h->failed = true;
    } else {
        c->fn(h, argc, w + 1 + first, flags);
    }
}

char *fy_hmp_execute(FyMonitor *mon, const char *line, bool can_block,
                     bool *failed)
{
    Hmp h = { .mon = mon, .can_block = can_block };
    char *buf = strdup(line ? line : "");
    if (!buf)
        return NULL;
    fy_sb_puts(&h.out, "");
    run_line(&h, buf);
    free(buf);
    if (failed)
        *failed = h.failed;
    if (h.out.oom) {
        free(h.out.s);
        return NULL;
    }
    return h.out.s;
}

const char *fy_hmp_banner(void)
{
    return "ferry 0.1.0 monitor (QEMU 7.2 compatible) - type 'help' for more "
           "information\n";
}

const char *fy_hmp_prompt(void)
{
    return "(ferry) ";
}
