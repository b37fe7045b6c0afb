/*
 * monitor-cli.c: `ferry monitor SOCKET [COMMAND...]`, the human monitor
 * (HMP) of a running VM, through its QMP socket.
 *
 * Each line goes to the VM as human-monitor-command, QEMU's way of running
 * HMP over QMP, and the text that comes back is printed. A ferry VM has
 * x-ferry-human-monitor-command too, which also says whether the command
 * failed; for other peers (QEMU) an "Error:" prefix tells. One difference
 * makes it feel like a local monitor: HMP over QMP cannot wait for a
 * migration, so `migrate URI` is sent as `migrate -d URI` and this program
 * waits (polling query-migrate) and prints the error if it fails, as QEMU's
 * own monitor does.
 *
 * With a COMMAND, run it and exit (status 1 if it printed an error);
 * otherwise read commands from stdin until EOF or `quit`. COMMAND is one
 * argument holding the whole line ("info migrate"), or several words.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "ferry/hmp.h"
#include "ferry/qmp.h"
#include "tools.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: ferry monitor SOCKET [COMMAND...]\n"
"\n"
"The human monitor (HMP) of the VM whose QMP server is SOCKET (unix:PATH,\n"
"tcp:HOST:PORT or a path). With COMMAND, run it and exit; otherwise read\n"
"commands from stdin. `help` lists them.\n");
}

/* The first word, and whether a -d flag follows it. */
static bool is_sync_migrate(const char *line)
{
    char cmd[32];
    if (sscanf(line, " %31s", cmd) != 1 || strcmp(cmd, "migrate") != 0)
        return false;
    const char *p = strstr(line, "migrate") + 7;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != '-')
            return true;
        for (p++; *p && *p != ' ' && *p != '\t'; p++) {
            if (*p == 'd')
                return false;
        }
    }
}

static json_t *execute(FyQmpClient *c, const char *name, json_t *args,
                       bool *lost)
{
    FyError *err = NULL;
    json_t *r = fy_qmp_client_execute(c, name, args, NULL, &err);
    if (!r) {
        fprintf(stderr, "ferry monitor: %s\n", fy_error_msg(err));
        *lost = true;
    }
    fy_error_free(err);
    return r;
}

/* Wait for the migration started by `migrate -d` to end. */
static bool wait_migration(FyQmpClient *c, bool *lost)
{
    for (;;) {
        json_t *q = execute(c, "query-migrate", NULL, lost);
        if (!q)
            return false;
        const char *s = json_string_value(json_object_get(q, "status"));
        bool done = !s || !strcmp(s, "completed") || !strcmp(s, "failed") ||
                    !strcmp(s, "cancelled");
        bool ok = s && !strcmp(s, "completed");
        if (done && !ok) {
            const char *d = json_string_value(json_object_get(q, "error-desc"));
            printf("%s\n", d ? d : s ? s : "migration did not start");
        }
        json_decref(q);
        if (done)
            return ok;
        struct timespec ts = { 0, 100 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
}

/* The text of one HMP line, and whether it failed (NULL: the connection
 * is gone). */
static char *run_hmp(FyQmpClient *c, const char *line, bool *failed,
                     bool *lost)
{
    /* The peer has only human-monitor-command. One process, one peer: a
     * static is enough here. */
    static bool plain;
    json_t *args = json_pack("{s:s}", "command-line", line);
    json_t *r = NULL;
    char *text = NULL;
    if (!plain) {
        char *cls = NULL;
        FyError *err = NULL;
        r = fy_qmp_client_execute(c, "x-ferry-human-monitor-command", args,
                                  &cls, &err);
        plain = !r && cls && !strcmp(cls, "CommandNotFound");
        if (!r && !plain) {
            fprintf(stderr, "ferry monitor: %s\n", fy_error_msg(err));
            *lost = true;
        }
        free(cls);
        fy_error_free(err);
        if (r) {
            const char *o = json_string_value(json_object_get(r, "output"));
            text = strdup(o ? o : "");
            *failed = json_is_true(json_object_get(r, "failed"));
        }
    }
    if (plain) {
        r = execute(c, "human-monitor-command", args, lost);
        const char *o = json_string_value(r);
        if (r)
            text = strdup(o ? o : "");
        *failed = o && (strncmp(o, "Error:", 6) == 0 ||
                        strncmp(o, "unknown command", 15) == 0);
    }
    json_decref(r);
    json_decref(args);
    return text;
}

/* Run one line; returns false when the command printed an error. */
static bool run_line(FyQmpClient *c, const char *line, bool *lost)
{
    bool sync = is_sync_migrate(line);
    char *rewritten = NULL;
    if (sync) {
        const char *p = strstr(line, "migrate") + 7;
        if (asprintf(&rewritten, "migrate -d%s", p) < 0)
            return false;
    }
    bool failed = false;
    char *text = run_hmp(c, rewritten ? rewritten : line, &failed, lost);
    free(rewritten);
    if (!text)
        return false;
    bool ok = !failed;
    fputs(text, stdout);
    free(text);
    if (ok && sync)
        ok = wait_migration(c, lost);
    fflush(stdout);
    return ok;
}

static bool is_quit(const char *line)
{
    char w[16];
    return sscanf(line, " %15s", w) == 1 && (!strcmp(w, "quit") ||
                                             !strcmp(w, "q"));
}

static int interactive(FyQmpClient *c)
{
    bool tty = isatty(STDIN_FILENO);
    bool lost = false;
    char *line = NULL;
    size_t cap = 0;
    if (tty)
        fputs(fy_hmp_banner(), stdout);
    for (;;) {
        if (tty) {
            fputs(fy_hmp_prompt(), stdout);
            fflush(stdout);
        }
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0)
            break;
        if (n > 0 && line[n - 1] == '\n')
            line[n - 1] = 0;
        run_line(c, line, &lost);
        if (lost || is_quit(line))
            break;
    }
    free(line);
    return lost ? 1 : 0;
}

/* The words of COMMAND as one HMP line; a word with spaces, quotes or
 * backslashes is quoted, so `ferry monitor S migrate "exec:cat > f"` keeps
 * its URI whole. */
static char *join_words(int n, char **words)
{
    size_t len = 1;
    for (int i = 0; i < n; i++)
        len += 2 * strlen(words[i]) + 3;
    char *line = calloc(1, len), *o = line;
    if (!line)
        return NULL;
    for (int i = 0; i < n; i++) {
        bool quote = strpbrk(words[i], " \t\"\\") != NULL;
        if (i)
            *o++ = ' ';
        if (quote)
            *o++ = '"';
        for (const char *p = words[i]; *p; p++) {
            if (quote && (*p == '"' || *p == '\\'))
                *o++ = '\\';
            *o++ = *p;
        }
        if (quote)
            *o++ = '"';
    }
    *o = '\0';
    return line;
}

int cmd_monitor(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    FyError *err = NULL;
    FyQmpClient *c = fy_qmp_client_connect(argv[1], 10000, &err);
    if (!c) {
        fprintf(stderr, "ferry monitor: %s\n", fy_error_msg(err));
        fy_error_free(err);
        return 1;
    }
    int rc;
    if (argc > 2) {
        /* One argument is a whole command line ("info migrate"); several
         * are words, quoted as needed. */
        char *line = argc == 3 ? strdup(argv[2])
                               : join_words(argc - 2, argv + 2);
        bool lost = false;
        rc = line && run_line(c, line, &lost) ? 0 : 1;
        free(line);
    } else {
        rc = interactive(c);
    }
    fy_qmp_client_close(c);
    return rc;
}
