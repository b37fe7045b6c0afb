/*
 * savevm-int.h: what the registry, the configuration section, the writer and
 * the loader share.
 *
 * A FySaveState owns an array of SaveStateEntry pointers kept in save order:
 * higher priority first, then registration order (seq). Nothing here is
 * global, so a source and a destination can live in one process.
 *
 * Load-side state per entry (load_seen, load_section_id, load_version_id)
 * records what the last START/FULL section for that entry said, because
 * PART/END sections only carry the section id the *source* chose; the
 * destination's own section ids play no part in loading (as in QEMU).
 *
 * Load lifecycle: fy_loadvm_state_main() runs every load_setup once
 * (load_active becomes true); fy_loadvm_state_cleanup() runs every
 * load_cleanup and clears it. Nested loads (PACKAGED) see load_active and
 * do not set up again.
 */
#ifndef FERRY_SAVEVM_INT_H
#define FERRY_SAVEVM_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/savevm.h"

struct json_t;

/* Machine type bytes the configuration section may carry. */
#define FY_CONFIG_NAME_MAX 256
/* Capabilities the configuration section may list. */
#define FY_CONFIG_CAPS_MAX 32

typedef struct SaveStateEntry {
    char idstr[256];
    size_t idlen;
    int instance_id;
    int version_id;
    uint32_t section_id;
    int priority;
    uint64_t seq;                   /* registration order */
    const VMStateDescription *vmsd; /* NULL for handler entries */
    SaveVMHandlers ops;             /* a copy; all NULL for vmsd entries */
    void *opaque;

    bool load_seen;                 /* a START/FULL named this entry */
    uint32_t load_section_id;       /* the id that START/FULL carried */
    uint32_t load_version_id;
} SaveStateEntry;

/* The configuration section's device state (QEMU's SaveState fields). The
 * field names are the wire description's names: analyze-migration.py looks
 * up "caps_count" and "capabilities". */
typedef struct FySaveConfigState {
    FySaveState *s;             /* for the local configuration in hooks */
    uint32_t len;
    uint8_t *name;              /* len bytes, no NUL; malloc()ed or NULL */
    uint32_t target_page_bits;
    uint32_t caps_count;
    uint8_t *capabilities;      /* indexes into the capability name table */
    uint8_t uuid[16];
} FySaveConfigState;

struct FySaveState {
    FySaveVMConfig config;
    SaveStateEntry **entries;
    size_t n_entries, cap_entries;
    uint32_t next_section_id;
    uint64_t next_seq;
    int last_instance_id;

    FySaveConfigState conf;

    /* The JSON VM description being built by the writer. */
    struct json_t *vmdesc;
    struct json_t *vmdesc_devices;

    bool load_active;
    bool devices_begun;
    int load_depth;             /* fy_loadvm_state_main nesting */
};

/* Entry helpers (registry.c). */
static inline bool se_is_handler(const SaveStateEntry *se)
{
    return se->vmsd == NULL;
}
static inline bool se_is_active(const SaveStateEntry *se)
{
    return !se->ops.is_active || se->ops.is_active(se->opaque);
}
SaveStateEntry *fy_savevm_find(FySaveState *s, const char *idstr, size_t idlen,
                               uint32_t instance_id);

/* Configuration (configuration.c). */
void fy_savevm_config_state_free(FySaveConfigState *cs);

/* Commands (commands.c): check a command's length and payload shape the way
 * the loader must before handing it on. Returns 0 or -1 with *errp set
 * (without the stream offset; the caller adds it). */
int fy_mig_cmd_check(uint16_t cmd, const uint8_t *payload, uint16_t len,
                     FyError **errp);
/* Only the command number and, for fixed-length commands, the length: what
 * can be refused before the payload is read. */
int fy_mig_cmd_check_header(uint16_t cmd, uint16_t len, FyError **errp);

/* Sanitised copy of untrusted bytes for messages (NUL-terminated, '?' for
 * unprintables); out must hold len + 1 bytes. */
void fy_savevm_printable(char *out, const void *in, size_t len);

#endif
