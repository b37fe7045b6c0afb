/*
 * save-load.c: the README's example. A device described with VMState is
 * saved to a file in QEMU's stream format and loaded back into a second,
 * empty device. Build: see examples/meson.build (it is also a test).
 */
#include <stdio.h>
#include <string.h>

#include "ferry/savevm.h"
#include "ferry/uri.h"
#include "ferry/vmstate.h"

typedef struct Timer {
    uint64_t ticks;
    uint32_t period_ns;
    bool enabled;
    uint8_t regs[8];
} Timer;

static const VMStateDescription vmstate_timer = {
    .name = "timer",
    .version_id = 2,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT64(ticks, Timer),
        VMSTATE_UINT32(period_ns, Timer),
        VMSTATE_BOOL_V(enabled, Timer, 2),   /* added in version 2 */
        VMSTATE_UINT8_ARRAY(regs, Timer, 8),
        VMSTATE_END_OF_LIST()
    },
};

static int save(const char *uri, Timer *t, FyError **errp)
{
    FySaveState *vm = fy_savevm_new("ferry-example");
    FyChannel *c = fy_channel_open_outgoing(uri, errp);
    if (!c || fy_register_vmstate(vm, "timer", 0, &vmstate_timer, t, errp) < 0) {
        fy_channel_close(c, NULL);
        fy_savevm_free(vm);
        return -1;
    }
    FyStream *f = fy_stream_new_output(c, true);
    int r = fy_savevm_save_all(vm, f, errp);
    if (fy_stream_close(f, r < 0 ? NULL : errp) < 0)
        r = -1;
    fy_savevm_free(vm);
    return r;
}

static int load(const char *uri, Timer *t, FyError **errp)
{
    FySaveState *vm = fy_savevm_new("ferry-example");
    FyListener *l = fy_listener_new(uri, errp);   /* file: yields one channel */
    FyChannel *c = l ? fy_listener_accept(l, -1, errp) : NULL;
    int r = -1;
    if (c && fy_register_vmstate(vm, "timer", 0, &vmstate_timer, t, errp) == 0) {
        FyStream *f = fy_stream_new_input(c, true);
        c = NULL;
        r = fy_loadvm_state(vm, f, NULL, NULL, errp);
        fy_stream_close(f, NULL);
    }
    fy_channel_close(c, NULL);
    fy_listener_free(l);
    fy_savevm_free(vm);
    return r;
}

int main(int argc, char **argv)
{
    const char *uri = argc > 1 ? argv[1] : "file:/tmp/timer.vmstate";
    Timer src = { .ticks = 123456789, .period_ns = 1000, .enabled = true,
                  .regs = { 1, 2, 3, 4, 5, 6, 7, 8 } };
    Timer dst = { 0 };
    FyError *err = NULL;

    if (save(uri, &src, &err) < 0 || load(uri, &dst, &err) < 0) {
        fprintf(stderr, "example: %s\n", fy_error_msg(err));
        fy_error_free(err);
        return 1;
    }
    bool same = memcmp(&src, &dst, sizeof(src)) == 0;
    printf("%s 1 saved to %s and loaded back: ticks=%llu %s\n1..1\n",
           same ? "ok" : "not ok", uri, (unsigned long long)dst.ticks,
           same ? "(identical)" : "(DIFFERENT)");
    return same ? 0 : 1;
}
