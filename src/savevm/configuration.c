/*
 * configuration.c: the "configuration" section (QEMU_VM_CONFIGURATION).
 *
 * Wire (version 1, no section header or footer; see savevm.c in QEMU):
 *   be32 len, name[len]                    the machine type, no NUL
 *   [0x05 "configuration/target-page-bits" v1: be32 bits]
 *       only when target_page_bits > legacy_page_bits
 *   [0x05 "configuration/capabilities" v1: be32 count, count x (u8 len, name)]
 *       only the validated capabilities (x-ignore-shared, mapped-ram) that
 *       are on, in QEMU's enum order
 *   [0x05 "configuration/uuid" v1: 16 bytes]   when validate_uuid is on
 *
 * It is an ordinary VMState description so the same engine saves, loads and
 * describes it (the VM description's "configuration" object, which
 * analyze-migration.py uses to parse this section).
 *
 * Load: pre_load resets what an absent subsection means (legacy page bits,
 * no capabilities); post_load, which runs after the subsections, checks the
 * machine type (prefix compare, as QEMU), page bits and capabilities against
 * the local FySaveVMConfig; the uuid subsection checks itself.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "savevm/savevm-int.h"

/* QEMU's MigrationCapability names: the loader accepts any of them (as QEMU
 * does) and validates only the two that configuration carries. */
static const char *const cap_names[] = {
    "xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress",
    "events", "postcopy-ram", "x-colo", "release-ram", "block",
    "return-path", "pause-before-switchover", "multifd", "dirty-bitmaps",
    "postcopy-blocktime", "late-block-activate", "x-ignore-shared",
    "validate-uuid", "background-snapshot", "zero-copy-send",
    "postcopy-preempt", "switchover-ack", "dirty-limit", "mapped-ram",
};
#define N_CAPS (sizeof(cap_names) / sizeof(cap_names[0]))
#define CAP_X_IGNORE_SHARED 16
#define CAP_MAPPED_RAM 23

static bool local_cap(const FySaveVMConfig *c, unsigned cap)
{
    return cap == CAP_X_IGNORE_SHARED ? c->cap_x_ignore_shared
                                      : c->cap_mapped_ram;
}

static const unsigned validated_caps[] = { CAP_X_IGNORE_SHARED, CAP_MAPPED_RAM };
#define N_VALIDATED (sizeof(validated_caps) / sizeof(validated_caps[0]))

/* ---- the capability element type: u8 len + name ---- */

static int get_capability(FyStream *f, void *pv, size_t size,
                          const VMStateField *field, FyError **errp)
{
    char name[256];
    int len = fy_get_counted_string(f, name);

    if (len < 0)
        return -1; /* the stream error says why */
    for (size_t i = 0; i < N_CAPS; i++) {
        if (strlen(cap_names[i]) == (size_t)len &&
            memcmp(cap_names[i], name, (size_t)len) == 0) {
            *(uint8_t *)pv = (uint8_t)i;
            return 0;
        }
    }
    char shown[256];
    fy_savevm_printable(shown, name, (size_t)len);
    fy_error_setg(errp, "Received unknown capability '%s'", shown);
    return -1;
}

static int put_capability(FyStream *f, void *pv, size_t size,
                          const VMStateField *field, FyError **errp)
{
    uint8_t cap = *(uint8_t *)pv;
    if (cap >= N_CAPS) {
        fy_error_setg(errp, "capability index %u out of range", cap);
        return -1;
    }
    fy_put_counted_string(f, cap_names[cap]);
    return 0;
}

static const VMStateInfo vmstate_info_capability = {
    .name = "capability",
    .get = get_capability,
    .put = put_capability,
};

/* ---- hooks ---- */

static int configuration_pre_save(void *opaque, FyError **errp)
{
    FySaveConfigState *cs = opaque;
    const FySaveVMConfig *c = &cs->s->config;
    size_t len = strnlen(c->machine_type, sizeof(c->machine_type));

    free(cs->name);
    cs->name = NULL;
    if (len) {
        cs->name = malloc(len);
        if (!cs->name) {
            fy_error_setg(errp, "out of memory");
            return -1;
        }
        memcpy(cs->name, c->machine_type, len);
    }
    cs->len = (uint32_t)len;
    cs->target_page_bits = (uint32_t)c->target_page_bits;

    free(cs->capabilities);
    cs->capabilities = malloc(N_VALIDATED);
    if (!cs->capabilities) {
        fy_error_setg(errp, "out of memory");
        return -1;
    }
    cs->caps_count = 0;
    for (size_t i = 0; i < N_VALIDATED; i++) {
        if (local_cap(c, validated_caps[i]))
            cs->capabilities[cs->caps_count++] = (uint8_t)validated_caps[i];
    }
    memcpy(cs->uuid, c->uuid, sizeof(cs->uuid));
    return 0;
}

static int configuration_pre_load(void *opaque, FyError **errp)
{
    FySaveConfigState *cs = opaque;

    /* No page-bits subsection: the source uses the legacy (minimum) size. */
    cs->target_page_bits = (uint32_t)cs->s->config.legacy_page_bits;
    cs->caps_count = 0;
    free(cs->capabilities);
    cs->capabilities = NULL;
    return 0;
}

/* strncmp(received, local, len) on a received buffer without NUL. */
static bool machine_type_matches(const uint8_t *name, uint32_t len,
                                 const char *local)
{
    for (uint32_t i = 0; i < len; i++) {
        if ((uint8_t)local[i] != name[i])
            return false;
        if (local[i] == '\0')
            return true;
    }
    return true;
}

static int check_capabilities(const FySaveConfigState *cs, FyError **errp)
{
    char msg[512] = "";
    size_t used = 0;

    for (size_t i = 0; i < N_VALIDATED; i++) {
        unsigned cap = validated_caps[i];
        bool source = false;
        for (uint32_t j = 0; j < cs->caps_count; j++)
            source |= cs->capabilities[j] == cap;
        bool target = local_cap(&cs->s->config, cap);
        if (source == target)
            continue;
        int n = snprintf(msg + used, sizeof(msg) - used,
                         "%sCapability %s is %s, but received capability is %s",
                         used ? "; " : "", cap_names[cap], target ? "on" : "off",
                         source ? "on" : "off");
        if (n > 0 && (size_t)n < sizeof(msg) - used)
            used += (size_t)n;
    }
    if (!used)
        return 0;
    fy_error_setg(errp, "%s", msg);
    return -1;
}

static int configuration_post_load(void *opaque, int version_id, FyError **errp)
{
    FySaveConfigState *cs = opaque;
    const FySaveVMConfig *c = &cs->s->config;

    if (!machine_type_matches(cs->name, cs->len, c->machine_type)) {
        char shown[FY_CONFIG_NAME_MAX + 1];
        fy_savevm_printable(shown, cs->name, cs->len);
        fy_error_setg(errp, "Machine type received is '%s' and local is '%s'",
                      shown, c->machine_type);
        return -1;
    }
    if (cs->target_page_bits != (uint32_t)c->target_page_bits) {
        fy_error_setg(errp, "Received TARGET_PAGE_BITS is %" PRIu32
                      " but local is %d", cs->target_page_bits,
                      c->target_page_bits);
        return -1;
    }
    return check_capabilities(cs, errp);
}

static void uuid_unparse(const uint8_t u[16], char out[37])
{
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9],
             u[10], u[11], u[12], u[13], u[14], u[15]);
}

static int uuid_post_load(void *opaque, int version_id, FyError **errp)
{
    FySaveConfigState *cs = opaque;
    const FySaveVMConfig *c = &cs->s->config;

    /* Without validate-uuid locally there is nothing to compare against
     * (QEMU only warns when its own uuid is unset). */
    if (!c->validate_uuid || memcmp(cs->uuid, c->uuid, 16) == 0)
        return 0;
    char src[37], dst[37];
    uuid_unparse(cs->uuid, src);
    uuid_unparse(c->uuid, dst);
    fy_error_setg(errp, "UUID received is %s and local is %s", src, dst);
    return -1;
}

static bool page_bits_needed(void *opaque)
{
    const FySaveConfigState *cs = opaque;
    return cs->s->config.target_page_bits > cs->s->config.legacy_page_bits;
}

static bool capabilities_needed(void *opaque)
{
    return ((const FySaveConfigState *)opaque)->caps_count > 0;
}

static bool uuid_needed(void *opaque)
{
    return ((const FySaveConfigState *)opaque)->s->config.validate_uuid;
}

/* ---- descriptions ---- */

static const VMStateDescription vmstate_target_page_bits = {
    .name = "configuration/target-page-bits",
    .version_id = 1,
    .minimum_version_id = 1,
    .needed = page_bits_needed,
    .fields = (const VMStateField[]){
        VMSTATE_UINT32(target_page_bits, FySaveConfigState),
        VMSTATE_END_OF_LIST(),
    },
};

static const VMStateDescription vmstate_capabilities = {
    .name = "configuration/capabilities",
    .version_id = 1,
    .minimum_version_id = 1,
    .needed = capabilities_needed,
    .fields = (const VMStateField[]){
        VMSTATE_UINT32_V(caps_count, FySaveConfigState, 1),
        VMSTATE_VARRAY_UINT32_ALLOC(capabilities, FySaveConfigState, caps_count,
                                    FY_CONFIG_CAPS_MAX, vmstate_info_capability,
                                    uint8_t),
        VMSTATE_END_OF_LIST(),
    },
};

static const VMStateDescription vmstate_uuid = {
    .name = "configuration/uuid",
    .version_id = 1,
    .minimum_version_id = 1,
    .needed = uuid_needed,
    .post_load = uuid_post_load,
    .fields = (const VMStateField[]){
        /* QEMU's field is the QemuUUID member "uuid.data". */
        { .name = "uuid.data", .version_id = 1, .num = 16, .size = 1,
          .info = &vmstate_info_uint8, .flags = VMS_ARRAY,
          .offset = offsetof(FySaveConfigState, uuid) +
                    vmstate_check(FySaveConfigState, uuid, uint8_t[16]) },
        VMSTATE_END_OF_LIST(),
    },
};

const VMStateDescription vmstate_configuration = {
    .name = "configuration",
    .version_id = 1,
    .minimum_version_id = 0,
    .pre_save = configuration_pre_save,
    .pre_load = configuration_pre_load,
    .post_load = configuration_post_load,
    .fields = (const VMStateField[]){
        VMSTATE_UINT32(len, FySaveConfigState),
        VMSTATE_VBUFFER_ALLOC_UINT32(name, FySaveConfigState, len,
                                     FY_CONFIG_NAME_MAX),
        VMSTATE_END_OF_LIST(),
    },
    .subsections = (const VMStateDescription *const[]){
        &vmstate_target_page_bits,
        &vmstate_capabilities,
        &vmstate_uuid,
        NULL,
    },
};

void fy_savevm_config_state_free(FySaveConfigState *cs)
{
    free(cs->name);
    free(cs->capabilities);
    cs->name = NULL;
    cs->capabilities = NULL;
    cs->len = 0;
    cs->caps_count = 0;
}
