/*
 * analyze.c: `ferry analyze`, the command line.
 *
 *   ferry analyze [-d state|desc] [-m] [-x DIR] FILE|-    print / extract
 *   ferry analyze --summary FILE|-                        what the stream holds
 *   ferry analyze --check FILE|-                          valid or not, and where
 *   ferry analyze --diff A B                              device state differences
 *
 * The options of QEMU's scripts/analyze-migration.py work the same (-f FILE,
 * -d, -m, -x), and the JSON has its shape, so scripts can switch.
 *
 * Exit codes: 0 fine (or: streams equal, stream valid); 1 the stream has a
 * problem (or: streams differ); 2 usage or I/O trouble before any stream
 * was read.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "analyze-int.h"
#include "tools.h"

static void usage(FILE *out)
{
    fputs(
"usage: ferry analyze [OPTIONS] FILE|-\n"
"       ferry analyze --diff A B\n"
"\n"
"Read a QEMU-format migration stream (a file, or - for stdin) and show what\n"
"is inside, decoded with the VM description the stream carries after EOF.\n"
"\n"
"  -d, --dump state|desc  print the device state (default) or the VM description,\n"
"                         as JSON in the shape of QEMU's analyze-migration.py\n"
"  -m, --memory           add RAM page contents to the state\n"
"  -x, --extract DIR      write each RAM block to DIR/<block name>, plus\n"
"                         DIR/desc.json and DIR/state.json (DIR defaults to .)\n"
"  -s, --summary          a table of what the stream holds and where the bytes\n"
"                         and the time go\n"
"  -c, --check            validate the whole stream without printing it: exit 0\n"
"                         when valid, else 1 and the first problem with its offset\n"
"      --diff A B         compare the device state of two streams field by field;\n"
"                         exit 0 when equal, 1 when not\n"
"      --desc FILE        decode with this VM description (desc.json, -d desc\n"
"                         output, or a stream that carries one): for streams\n"
"                         without one (postcopy) or read from a pipe\n"
"      --page-size N      target page size when the stream does not say (4096)\n"
"  -f, --file FILE        the stream (analyze-migration.py's spelling)\n"
"  -q, --quiet            no notes on stderr\n"
"  -h, --help             this text\n", out);
}

typedef struct Cli {
    AnOpts o;
    const char *file;
    const char *diff_a, *diff_b;
    const char *desc_file;
    bool diff;
} Cli;

static int parse_args(Cli *c, int argc, char **argv)
{
    c->o.dump = AN_DUMP_STATE;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *val = NULL;
        /* --opt=value */
        char opt[64];
        const char *eq = strncmp(arg, "--", 2) == 0 ? strchr(arg, '=') : NULL;
        if (eq && (size_t)(eq - arg) < sizeof(opt)) {
            memcpy(opt, arg, (size_t)(eq - arg));
            opt[eq - arg] = '\0';
            val = eq + 1;
            arg = opt;
        }
#define NEXT()                                                                  \
        do {                                                                    \
            if (!val) {                                                         \
                if (i + 1 >= argc) {                                            \
                    fprintf(stderr, "ferry analyze: %s needs a value\n", arg);  \
                    return -1;                                                  \
                }                                                               \
                val = argv[++i];                                                \
            }                                                                   \
        } while (0)
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(arg, "-d") || !strcmp(arg, "--dump")) {
            NEXT();
            if (!strcmp(val, "state"))
                c->o.dump = AN_DUMP_STATE;
            else if (!strcmp(val, "desc"))
                c->o.dump = AN_DUMP_DESC;
            else {
                fprintf(stderr, "ferry analyze: -d takes state or desc, not '%s'\n", val);
                return -1;
            }
        } else if (!strcmp(arg, "-m") || !strcmp(arg, "--memory")) {
            c->o.dump_memory = true;
        } else if (!strcmp(arg, "-x") || !strcmp(arg, "--extract")) {
            /* analyze-migration.py's -x takes no value and extracts into "." */
            if (!val && (i + 1 >= argc || (argv[i + 1][0] == '-' && argv[i + 1][1])))
                val = ".";
            NEXT();
            c->o.extract_dir = val;
        } else if (!strcmp(arg, "-s") || !strcmp(arg, "--summary")) {
            c->o.summary = true;
        } else if (!strcmp(arg, "-c") || !strcmp(arg, "--check")) {
            c->o.check = true;
        } else if (!strcmp(arg, "-q") || !strcmp(arg, "--quiet")) {
            c->o.quiet = true;
        } else if (!strcmp(arg, "--diff")) {
            c->diff = true;
            if (i + 2 >= argc) {
                fprintf(stderr, "ferry analyze: --diff needs two streams\n");
                return -1;
            }
            c->diff_a = argv[++i];
            c->diff_b = argv[++i];
        } else if (!strcmp(arg, "--desc")) {
            NEXT();
            c->desc_file = val;
        } else if (!strcmp(arg, "--page-size")) {
            NEXT();
            char *end;
            unsigned long v = strtoul(val, &end, 0);
            if (*end || v < 1024 || v > (1u << 20) || (v & (v - 1))) {
                fprintf(stderr, "ferry analyze: --page-size wants a power of two "
                        "between 1024 and 1048576, not '%s'\n", val);
                return -1;
            }
            c->o.page_size = (uint32_t)v;
        } else if (!strcmp(arg, "-f") || !strcmp(arg, "--file")) {
            NEXT();
            c->file = val;
        } else if (arg[0] == '-' && arg[1]) {
            fprintf(stderr, "ferry analyze: unknown option '%s'\n", arg);
            return -1;
        } else if (!c->file) {
            c->file = arg;
        } else {
            fprintf(stderr, "ferry analyze: one stream at a time (got '%s' and "
                    "'%s'); --diff compares two\n", c->file, arg);
            return -1;
        }
#undef NEXT
    }
    if (c->diff ? c->file != NULL : c->file == NULL) {
        usage(stderr);
        return -1;
    }
    if (c->diff && !strcmp(c->diff_a, "-") && !strcmp(c->diff_b, "-")) {
        fprintf(stderr, "ferry analyze: only one of the two streams can be stdin\n");
        return -1;
    }
    return 0;
}

static void print_notes(An *a, const char *path)
{
    if (a->o.quiet)
        return;
    for (size_t i = 0; i < a->nnotes; i++)
        fprintf(stderr, "ferry analyze: %s: note: %s\n", path, a->notes[i]);
    size_t undecoded = 0;
    for (size_t i = 0; i < a->nsecs; i++)
        undecoded += a->secs[i]->kind == SEC_OPAQUE;
    if (undecoded && !a->o.check && !a->o.summary) {
        fprintf(stderr, "ferry analyze: %s: note: %zu section%s not decoded:\n", path,
                undecoded, undecoded == 1 ? "" : "s");
        for (size_t i = 0; i < a->nsecs; i++)
            if (a->secs[i]->kind == SEC_OPAQUE)
                fprintf(stderr, "  '%s' (id %u), %zu bytes at offset %llu: %s\n",
                        a->secs[i]->label, a->secs[i]->id, a->secs[i]->raw_len,
                        (unsigned long long)a->secs[i]->raw_off,
                        a->secs[i]->why ? a->secs[i]->why : "?");
    }
}

static An *open_stream(const AnOpts *o, const char *path)
{
    An *a = an_new(o);
    if (!a) {
        fprintf(stderr, "ferry analyze: out of memory\n");
        return NULL;
    }
    if (an_open(a, path) < 0) {
        fprintf(stderr, "ferry analyze: %s\n", a->err);
        an_free(a);
        return NULL;
    }
    return a;
}

static int run_diff(Cli *c)
{
    AnOpts o = c->o;
    o.dump = AN_DUMP_NONE;
    o.dump_memory = false;
    o.extract_dir = NULL;
    An *a = open_stream(&o, c->diff_a), *b = a ? open_stream(&o, c->diff_b) : NULL;
    int ret = 2;
    if (!a || !b)
        goto out;
    int ra = an_run(a), rb = an_run(b);
    print_notes(a, c->diff_a);
    print_notes(b, c->diff_b);
    if (ra < 0 || rb < 0) {
        if (ra < 0)
            fprintf(stderr, "ferry analyze: %s: %s\n", c->diff_a, a->err);
        if (rb < 0)
            fprintf(stderr, "ferry analyze: %s: %s\n", c->diff_b, b->err);
        goto out;
    }
    size_t n = an_diff(a, b, stdout);
    ret = n ? 1 : 0;
out:
    an_free(a);
    an_free(b);
    return ret;
}

static int run_one(Cli *c)
{
    An *a = open_stream(&c->o, c->file);
    if (!a)
        return 2;
    int ret = 0;
    bool desc_only = !c->o.check && !c->o.summary && !c->o.extract_dir &&
                     c->o.dump == AN_DUMP_DESC;

    if (c->o.extract_dir && mkdir(c->o.extract_dir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "ferry analyze: cannot create %s: %s\n", c->o.extract_dir,
                strerror(errno));
        an_free(a);
        return 2;
    }
    /* -d desc on a file: the description is at the end, no walk needed */
    if (desc_only && a->seekable && !c->o.desc_override) {
        json_t *j = NULL;
        uint64_t off, len;
        int r = an_desc_from_tail(a, a->fd, a->file_size, &j, &off, &len);
        if (r == 1) {
            an_json_print(stdout, j, 0);
            fputc('\n', stdout);
            json_decref(j);
            an_free(a);
            return 0;
        }
        a->failed = false; /* walk to find out what is wrong */
    }

    int rr = an_run(a);
    if (c->o.check) {
        if (rr < 0) {
            printf("%s: %s\n", c->file, a->err);
            ret = 1;
        } else {
            an_print_check_ok(a, stdout);
        }
        print_notes(a, c->file);
        an_free(a);
        return ret;
    }
    if (c->o.summary) {
        an_print_summary(a, stdout);
    } else if (c->o.extract_dir) {
        /* desc.json is out already when the description was known first */
        json_t *desc = a->stream_vmdesc ? a->stream_vmdesc : a->vmdesc;
        if (desc && !a->desc_written && an_extract_write_json(a, "desc.json", desc) < 0)
            rr = -1;
        json_t *st = an_state_tree(a);
        if (an_extract_write_json(a, "state.json", st) < 0)
            rr = -1;
        json_decref(st);
    } else if (c->o.dump == AN_DUMP_DESC) {
        json_t *desc = a->stream_vmdesc ? a->stream_vmdesc : a->vmdesc;
        if (desc) {
            an_json_print(stdout, desc, 0);
            fputc('\n', stdout);
        } else if (rr == 0) {
            fprintf(stderr, "ferry analyze: %s: %s\n", c->file,
                    a->vmdesc_problem ? a->vmdesc_problem
                                      : "the stream carries no VM description");
            ret = 1;
        }
    } else {
        if (an_print_state(a, stdout) < 0 && rr == 0)
            rr = -1;
    }
    fflush(stdout);
    print_notes(a, c->file);
    if (rr < 0) {
        fprintf(stderr, "ferry analyze: %s: %s\n", c->file, a->err);
        ret = 1;
    }
    an_free(a);
    return ret;
}

int cmd_analyze(int argc, char **argv)
{
    Cli c;
    memset(&c, 0, sizeof(c));
    if (parse_args(&c, argc, argv) < 0)
        return 2;
    json_t *desc = NULL;
    if (c.desc_file) {
        char err[1024];
        desc = an_desc_load_file(c.desc_file, err, sizeof(err));
        if (!desc) {
            fprintf(stderr, "ferry analyze: --desc: %s\n", err);
            return 2;
        }
        c.o.desc_override = desc;
    }
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    int ret = c.diff ? run_diff(&c) : run_one(&c);
    fflush(stdout);
    json_decref(desc);
    return ret;
}
