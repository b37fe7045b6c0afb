/*
 * gen-corpus.c: write seed streams for fuzz-loader into a directory.
 *
 *   gen-corpus DIR
 *
 * Each seed is a valid stream for the fuzzer's VM (fuzz-vm.h), so the
 * fuzzer starts from inputs that reach every record kind:
 *   precopy.bin   header, configuration (all subsections), commands,
 *                 START/PART/END, FULL vmsd and legacy sections, EOF, vmdesc
 *   novmdesc.bin  the same without the VM description
 *   postcopy.bin  ADVISE, START/PART, PACKAGED{LISTEN, FULL..., PING, RUN},
 *                 PART/END in postcopy, EOF
 *   commands.bin  every command with a well-formed payload
 *   minimal.bin   header, configuration, EOF
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz-vm.h"

typedef struct Out {
    FyChannel *c;
    FyStream *f;
} Out;

static Out out_new(void)
{
    Out o;
    o.c = fy_channel_mem_new(NULL, 0);
    o.f = fy_stream_new_output(o.c, false);
    return o;
}

static int out_write(Out *o, const char *dir, const char *name)
{
    char path[4096];
    size_t len;
    int ret = 0;

    if (fy_stream_flush(o->f) < 0) {
        fprintf(stderr, "gen-corpus: %s: %s\n", name,
                fy_error_msg(fy_stream_error(o->f)));
        ret = -1;
    }
    const uint8_t *d = fy_channel_mem_data(o->c, &len);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(d, 1, len, fp) != len || fclose(fp) != 0) {
        fprintf(stderr, "gen-corpus: %s: %s\n", path, strerror(errno));
        ret = -1;
    }
    fy_stream_close(o->f, NULL);
    fy_channel_close(o->c, NULL);
    return ret;
}

static int check(FyError *err, const char *what)
{
    if (!err)
        return 0;
    fprintf(stderr, "gen-corpus: %s: %s\n", what, fy_error_msg(err));
    fy_error_free(err);
    return -1;
}

static int gen_precopy(const char *dir, bool vmdesc, const char *name)
{
    FuzzVm vm;
    FyError *err = NULL;
    Out o = out_new();

    if (fuzz_vm_init(&vm, 3) < 0)
        return -1;
    fy_savevm_config(vm.s)->send_vmdesc = vmdesc;
    fy_savevm_state_header(vm.s, o.f, &err);
    fy_savevm_command_send(o.f, MIG_CMD_OPEN_RETURN_PATH, 0, NULL);
    fy_savevm_state_setup(vm.s, o.f, &err);
    fy_savevm_state_iterate(vm.s, o.f, &err);
    fy_savevm_send_ping(o.f, 1);
    fy_savevm_state_iterate(vm.s, o.f, &err);
    fy_savevm_command_send(o.f, MIG_CMD_SWITCHOVER_START, 0, NULL);
    fy_savevm_state_complete_precopy(vm.s, o.f, &err);
    fy_savevm_state_cleanup(vm.s);
    fuzz_vm_free(&vm);
    int ret = check(err, name);
    return out_write(&o, dir, name) | ret;
}

static int gen_postcopy(const char *dir)
{
    FuzzVm vm;
    FyError *err = NULL;
    Out o = out_new(), pkg = out_new();

    if (fuzz_vm_init(&vm, 5) < 0)
        return -1;
    fy_savevm_state_header(vm.s, o.f, &err);
    fy_savevm_command_send(o.f, MIG_CMD_POSTCOPY_ADVISE, 0, NULL);
    fy_savevm_state_setup(vm.s, o.f, &err);
    fy_savevm_state_iterate(vm.s, o.f, &err);
    fy_savevm_state_complete_iterable(vm.s, o.f, true, &err);
    fy_savevm_command_send(pkg.f, MIG_CMD_POSTCOPY_LISTEN, 0, NULL);
    fy_savevm_state_complete_devices(vm.s, pkg.f, &err);
    fy_savevm_send_ping(pkg.f, 0x42);
    fy_savevm_command_send(pkg.f, MIG_CMD_POSTCOPY_RUN, 0, NULL);
    fy_stream_flush(pkg.f);
    size_t plen;
    const uint8_t *p = fy_channel_mem_data(pkg.c, &plen);
    fy_savevm_send_packaged(o.f, p, plen);
    fy_savevm_state_iterate_postcopy(vm.s, o.f, &err);
    fy_savevm_state_complete_postcopy(vm.s, o.f, &err);
    fy_savevm_state_cleanup(vm.s);
    fy_stream_close(pkg.f, NULL);
    fy_channel_close(pkg.c, NULL);
    fuzz_vm_free(&vm);
    int ret = check(err, "postcopy.bin");
    return out_write(&o, dir, "postcopy.bin") | ret;
}

static int gen_commands(const char *dir)
{
    FuzzVm vm;
    FyError *err = NULL;
    Out o = out_new();
    static const uint8_t advise[16] = { [6] = 0x10, [14] = 0x10 };
    static const uint8_t discard[] = { 0, 6, 'p', 'c', '.', 'r', 'a', 'm', 0,
                                       0, 0, 0, 0, 0, 0, 0x10, 0,
                                       0, 0, 0, 0, 0, 0, 0x20, 0 };
    static const uint8_t bitmap[] = { 6, 'p', 'c', '.', 'r', 'a', 'm' };

    if (fuzz_vm_init(&vm, 0) < 0)
        return -1;
    fy_savevm_state_header(vm.s, o.f, &err);
    fy_savevm_command_send(o.f, MIG_CMD_OPEN_RETURN_PATH, 0, NULL);
    fy_savevm_send_ping(o.f, 0xfeedface);
    fy_savevm_command_send(o.f, MIG_CMD_POSTCOPY_ADVISE, 16, advise);
    fy_savevm_command_send(o.f, MIG_CMD_POSTCOPY_RAM_DISCARD, sizeof(discard),
                           discard);
    fy_savevm_command_send(o.f, MIG_CMD_POSTCOPY_LISTEN, 0, NULL);
    fy_savevm_command_send(o.f, MIG_CMD_ENABLE_COLO, 0, NULL);
    fy_savevm_command_send(o.f, MIG_CMD_POSTCOPY_RESUME, 0, NULL);
    fy_savevm_command_send(o.f, MIG_CMD_RECV_BITMAP, sizeof(bitmap), bitmap);
    fy_savevm_command_send(o.f, MIG_CMD_SWITCHOVER_START, 0, NULL);
    /* a package that pings and hands over (RUN ends it, as in postcopy) */
    static const uint8_t package[] = { 0x08, 0, 2, 0, 4, 0, 0, 0, 1,
                                       0x08, 0, 5, 0, 0 };
    fy_savevm_send_packaged(o.f, package, sizeof(package));
    fy_savevm_state_finish(vm.s, o.f, &err);
    fy_savevm_state_cleanup(vm.s);
    fuzz_vm_free(&vm);
    int ret = check(err, "commands.bin");
    return out_write(&o, dir, "commands.bin") | ret;
}

static int gen_minimal(const char *dir)
{
    FuzzVm vm;
    FyError *err = NULL;
    Out o = out_new();

    if (fuzz_vm_init(&vm, 0) < 0)
        return -1;
    fy_savevm_config(vm.s)->send_vmdesc = false;
    fy_savevm_state_header(vm.s, o.f, &err);
    fy_savevm_state_finish(vm.s, o.f, &err);
    fy_savevm_state_cleanup(vm.s);
    fuzz_vm_free(&vm);
    int ret = check(err, "minimal.bin");
    return out_write(&o, dir, "minimal.bin") | ret;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen-corpus DIR\n");
        return 2;
    }
    if (mkdir(argv[1], 0777) < 0 && errno != EEXIST) {
        fprintf(stderr, "gen-corpus: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    int ret = gen_precopy(argv[1], true, "precopy.bin") |
              gen_precopy(argv[1], false, "novmdesc.bin") |
              gen_postcopy(argv[1]) | gen_commands(argv[1]) |
              gen_minimal(argv[1]);
    return ret ? 1 : 0;
}
