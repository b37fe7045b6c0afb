/*
 * fuzz-loader.c: libFuzzer target for the stream loader (fy_loadvm_state).
 *
 * Each input is a whole migration stream, loaded into a fresh destination VM
 * (fuzz-vm.h: every VMState field kind, subsections, a legacy entry and an
 * iterative entry). Commands go to a hook that behaves like a postcopy
 * destination: PACKAGED loads its nested stream (read only as its bytes
 * arrive), POSTCOPY_RUN stops the main load, after which the rest of the
 * stream is loaded as the listen thread would.
 *
 * Besides "no crash, leak, hang or sanitizer report", two properties are
 * checked and abort() when broken:
 * - every load error starts with "stream offset N: ";
 * - a stream that loads completely re-saves from the destination, and that
 *   stream loads into another VM giving the same device state.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz-vm.h"

typedef struct FuzzCtx {
    FySaveState *s;
    const FyLoadHooks *hooks;
    FyLoadResult *res;
} FuzzCtx;

/* Read n bytes of a package from f, growing only as bytes arrive. */
static uint8_t *read_package(FyStream *f, uint32_t n, FyError **errp)
{
    uint8_t *buf = NULL;
    size_t have = 0;
    while (have < n) {
        size_t chunk = n - have < 65536 ? n - have : 65536;
        uint8_t *nb = realloc(buf, have + chunk);
        if (!nb || fy_get_buffer(f, (buf = nb) + have, chunk) != chunk) {
            fy_error_setg(errp, "package of %u bytes cut short", n);
            free(nb ? nb : buf);
            return NULL;
        }
        have += chunk;
    }
    return buf ? buf : malloc(1);
}

static int fuzz_command(void *opaque, FyStream *f, uint16_t cmd,
                        const uint8_t *payload, uint16_t len, FyError **errp)
{
    FuzzCtx *c = opaque;

    if (cmd == MIG_CMD_POSTCOPY_RUN)
        return 1;
    if (cmd != MIG_CMD_PACKAGED)
        return 0;
    uint32_t n = (uint32_t)payload[0] << 24 | (uint32_t)payload[1] << 16 |
                 (uint32_t)payload[2] << 8 | payload[3];
    uint64_t base = fy_stream_offset(f);
    uint8_t *pkg = read_package(f, n, errp);
    if (!pkg)
        return -1;
    FyStream *nested = fy_stream_new_input(fy_channel_mem_new(pkg, n), true);
    free(pkg);
    if (!nested) {
        fy_error_setg(errp, "out of memory");
        return -1;
    }
    fy_stream_set_offset_base(nested, base);
    int ret = fy_loadvm_state_main(c->s, nested, c->hooks, c->res, errp);
    fy_stream_close(nested, NULL);
    return ret;
}

static void check_error(int ret, FyError *err)
{
    if (ret == 0 && !err)
        return;
    if (ret == 0 || !err || strncmp(fy_error_msg(err), "stream offset ", 14)) {
        fprintf(stderr, "bad error report: ret %d, %s\n", ret,
                err ? fy_error_msg(err) : "(no error)");
        abort();
    }
}

/* Load data into vm the way a postcopy destination would. */
static int load(FuzzVm *vm, const uint8_t *data, size_t size, FyError **errp)
{
    FyLoadResult res;
    FyLoadHooks hooks = { .command = fuzz_command };
    FuzzCtx ctx = { vm->s, &hooks, &res };
    hooks.opaque = &ctx;

    FyStream *f = fy_stream_new_input(fy_channel_mem_new(data, size), true);
    if (!f)
        abort();
    int ret = fy_loadvm_state(vm->s, f, &hooks, &res, errp);
    if (ret == 0 && res.stopped_by_hook) {
        res.stopped_by_hook = false;
        ret = fy_loadvm_state_main(vm->s, f, &hooks, &res, errp);
        /* a second RUN stops again; that is a success too */
        ret = ret < 0 ? -1 : 0;
        fy_loadvm_state_cleanup(vm->s);
    }
    json_decref(res.vmdesc);
    fy_stream_close(f, NULL);
    return ret;
}

static bool same_json(json_t *a, json_t *b)
{
    bool eq = a && b && json_equal(a, b);
    json_decref(a);
    json_decref(b);
    return eq;
}

/* What loaded must save again and load the same elsewhere. */
static void check_resave(FuzzVm *vm)
{
    FyChannel *c = fy_channel_mem_new(NULL, 0);
    FyStream *f = fy_stream_new_output(c, false);
    FyError *err = NULL;

    vm->iter.per_round = 50;
    if (fy_savevm_save_all(vm->s, f, &err) < 0) {
        fprintf(stderr, "re-save failed: %s\n", fy_error_msg(err));
        abort();
    }
    fy_stream_flush(f);
    size_t len;
    const uint8_t *d = fy_channel_mem_data(c, &len);
    FuzzVm again;
    if (fuzz_vm_init(&again, 0) < 0)
        abort();
    if (load(&again, d, len, &err) < 0) {
        fprintf(stderr, "reload failed: %s\n", fy_error_msg(err));
        abort();
    }
    for (int i = 0; i < 2; i++) {
        if (!same_json(vmstate_to_json(&vmstate_allkinds, &vm->ak[i]),
                       vmstate_to_json(&vmstate_allkinds, &again.ak[i])))
            abort();
    }
    if (!same_json(vmstate_to_json(&fv_vmstate_timer, &vm->timer),
                   vmstate_to_json(&fv_vmstate_timer, &again.timer)) ||
        vm->blob.len != again.blob.len ||
        memcmp(vm->blob.data, again.blob.data, vm->blob.len) != 0 ||
        vm->iter.count != again.iter.count ||
        memcmp(vm->iter.vals, again.iter.vals,
               vm->iter.count * sizeof(vm->iter.vals[0])) != 0)
        abort();
    fuzz_vm_free(&again);
    fy_stream_close(f, NULL);
    fy_channel_close(c, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FuzzVm vm;
    FyError *err = NULL;

    if (fuzz_vm_init(&vm, 0) < 0)
        abort();
    int ret = load(&vm, data, size, &err);
    check_error(ret, err);
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "load: %s\n", err ? fy_error_msg(err) : "ok");
    fy_error_free(err);
    if (ret == 0)
        check_resave(&vm);
    fuzz_vm_free(&vm);
    return 0;
}
