/*
 * savevm.h: the SaveStateEntry registry and QEMU's stream format, version 3.
 *
 * A FySaveState is one VM's list of state entries (devices, RAM, ...). It is
 * an object, not a global: a source and a destination can live in one
 * process. Each entry is a VMStateDescription or a set of handler functions
 * (legacy save/load, or iterative for RAM-like state), keyed by
 * (idstr, instance_id), with a section id assigned at registration.
 *
 * Stream layout written and read here (see shared/reference):
 *   be32 "QEVM", be32 3, [0x07 configuration], sections, commands, 0x00 EOF,
 *   [0x06 be32 len JSON-VM-description]
 * Section: START/FULL `type, be32 id, u8 len, idstr, be32 instance, be32
 * version`; PART/END `type, be32 id`; each followed by the footer
 * `0x7e, be32 id`. Command: `0x08, be16 cmd, be16 len, payload`.
 *
 * Save order is the entry order: higher priority first, then registration
 * order. The loader follows the stream and looks entries up by name.
 */
#ifndef FERRY_SAVEVM_H
#define FERRY_SAVEVM_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/stream.h"
#include "ferry/vmstate.h"

struct json_t;

#define QEMU_VM_FILE_MAGIC           0x5145564du
#define QEMU_VM_FILE_VERSION_COMPAT  0x00000002u
#define QEMU_VM_FILE_VERSION         0x00000003u

enum {
    QEMU_VM_EOF                  = 0x00,
    QEMU_VM_SECTION_START        = 0x01,
    QEMU_VM_SECTION_PART         = 0x02,
    QEMU_VM_SECTION_END          = 0x03,
    QEMU_VM_SECTION_FULL         = 0x04,
    QEMU_VM_SUBSECTION           = 0x05,
    QEMU_VM_VMDESCRIPTION        = 0x06,
    QEMU_VM_CONFIGURATION        = 0x07,
    QEMU_VM_COMMAND              = 0x08,
    QEMU_VM_SECTION_FOOTER       = 0x7e,
};

#define VMS_NULLPTR_MARKER 0x30

/* QEMU_VM_COMMAND numbers (MIG_CMD_*). */
enum MigCmd {
    MIG_CMD_INVALID = 0,
    MIG_CMD_OPEN_RETURN_PATH,     /* 0 bytes */
    MIG_CMD_PING,                 /* be32 */
    MIG_CMD_POSTCOPY_ADVISE,      /* 0 or 16 bytes */
    MIG_CMD_POSTCOPY_LISTEN,      /* 0 */
    MIG_CMD_POSTCOPY_RUN,         /* 0 */
    MIG_CMD_POSTCOPY_RAM_DISCARD, /* variable */
    MIG_CMD_PACKAGED,             /* be32 length of the nested stream */
    MIG_CMD_ENABLE_COLO,          /* 0 */
    MIG_CMD_POSTCOPY_RESUME,      /* 0 */
    MIG_CMD_RECV_BITMAP,          /* u8 len + ramblock name */
    MIG_CMD_SWITCHOVER_START,     /* 0 */
    MIG_CMD_MAX
};
const char *fy_mig_cmd_name(unsigned cmd);

#define FY_INSTANCE_ANY (-1)

/* Loader bounds on sizes read from the stream. QEMU allows a PACKAGED
 * stream up to UINT32_MAX; a postcopy package holds device state only. */
#define FY_MAX_PACKAGED_SIZE (1u << 30)
#define FY_MAX_VMDESC_SIZE   (64u << 20)

/* Handlers for non-VMState entries. All optional except as noted. */
typedef struct SaveVMHandlers {
    /* Non-iterative (legacy) pair: the whole state in one FULL section. */
    int (*save_state)(FyStream *f, void *opaque, FyError **errp);
    /* Iterative: START section at setup, PART sections while iterating, END
     * section at completion (with the VM stopped). */
    int (*save_setup)(FyStream *f, void *opaque, FyError **errp);
    /* Returns 1 when this entry has nothing more to send for now, 0 when it
     * stopped because of the rate limit, -1 on error. */
    int (*save_live_iterate)(FyStream *f, void *opaque, FyError **errp);
    int (*save_live_complete_precopy)(FyStream *f, void *opaque, FyError **errp);
    int (*save_live_complete_postcopy)(FyStream *f, void *opaque, FyError **errp);
    /* Pending bytes: estimate is cheap (no dirty sync), exact may sync. */
    void (*state_pending_estimate)(void *opaque, uint64_t *must_precopy,
                                   uint64_t *can_postcopy);
    void (*state_pending_exact)(void *opaque, uint64_t *must_precopy,
                                uint64_t *can_postcopy);
    bool (*is_active)(void *opaque);
    bool (*is_active_iterate)(void *opaque);
    bool (*has_postcopy)(void *opaque);
    void (*save_cleanup)(void *opaque);
    /* Load side. load_state is required for entries that can be loaded. */
    int (*load_setup)(void *opaque, FyError **errp);
    int (*load_state)(FyStream *f, void *opaque, int version_id, FyError **errp);
    int (*load_cleanup)(void *opaque);
} SaveVMHandlers;

typedef struct FySaveState FySaveState;

/* The configuration section's contents. machine_type must match (prefix
 * compare, as QEMU) between source and destination. */
typedef struct FySaveVMConfig {
    char machine_type[128];
    int target_page_bits;       /* 12 for 4 KiB pages */
    int legacy_page_bits;       /* the page-bits subsection is sent only above this */
    bool send_configuration;    /* default true */
    bool send_section_footer;   /* default true */
    bool send_vmdesc;           /* default true */
    bool cap_x_ignore_shared;   /* validated capabilities, sent when on */
    bool cap_mapped_ram;
    bool validate_uuid;         /* send/check the uuid subsection */
    uint8_t uuid[16];
} FySaveVMConfig;

/* Defaults: 4 KiB pages (12, legacy 12), configuration, footers and VM
 * description on, no capabilities, no uuid. NULL if machine_type does not
 * fit FySaveVMConfig.machine_type (or out of memory). */
FySaveState *fy_savevm_new(const char *machine_type);
void fy_savevm_free(FySaveState *s);
FySaveVMConfig *fy_savevm_config(FySaveState *s);

/* Register an entry under (idstr, instance_id); idstr is 1..255 bytes,
 * instance_id >= 0 or FY_INSTANCE_ANY (one more than the highest instance
 * of idstr so far, or 0). A key that is already registered is an error.
 * The section id is the next of this FySaveState's counter. The vmsd and
 * opaque must outlive the entry; ops is copied. */
int fy_register_vmstate(FySaveState *s, const char *idstr, int instance_id,
                        const VMStateDescription *vmsd, void *opaque,
                        FyError **errp);
int fy_register_savevm_live(FySaveState *s, const char *idstr, int instance_id,
                            int version_id, const SaveVMHandlers *ops,
                            void *opaque, FyError **errp);
/* Returns the instance id actually used (after FY_INSTANCE_ANY), or -1. */
int fy_savevm_last_instance_id(FySaveState *s);
/* FY_INSTANCE_ANY removes every instance of idstr. */
void fy_unregister_savevm(FySaveState *s, const char *idstr, int instance_id);

/* Iterate entries in save order. */
typedef struct FySaveEntryInfo {
    const char *idstr;
    int instance_id;
    int version_id;
    uint32_t section_id;
    const VMStateDescription *vmsd; /* NULL for handler entries */
    void *opaque;
} FySaveEntryInfo;
int fy_savevm_entry_count(FySaveState *s);
int fy_savevm_entry_info(FySaveState *s, int index, FySaveEntryInfo *out);

/* ---- writing ---- */
/* Magic, version and (unless disabled) the configuration section. */
int fy_savevm_state_header(FySaveState *s, FyStream *f, FyError **errp);
/* save_setup of every active iterative entry, each in a START section. */
int fy_savevm_state_setup(FySaveState *s, FyStream *f, FyError **errp);
/* One round of save_live_iterate (PART sections). Returns 1 when every
 * entry reported done, 0 when more remains, -1 on error. */
int fy_savevm_state_iterate(FySaveState *s, FyStream *f, FyError **errp);
/* The same once in postcopy: only entries whose has_postcopy() is true. */
int fy_savevm_state_iterate_postcopy(FySaveState *s, FyStream *f, FyError **errp);
void fy_savevm_state_pending_estimate(FySaveState *s, uint64_t *must_precopy,
                                      uint64_t *can_postcopy);
void fy_savevm_state_pending_exact(FySaveState *s, uint64_t *must_precopy,
                                   uint64_t *can_postcopy);
/* VM stopped: END sections for iterative entries, FULL for the rest, EOF,
 * then the JSON VM description. */
int fy_savevm_state_complete_precopy(FySaveState *s, FyStream *f, FyError **errp);
/* Only the iterative entries' END sections (save_live_complete_precopy of
 * every active entry). With in_postcopy, entries whose has_postcopy() is
 * true are left out: they go on in postcopy (QEMU's iterable_only pass at
 * the switch to postcopy). */
int fy_savevm_state_complete_iterable(FySaveState *s, FyStream *f,
                                      bool in_postcopy, FyError **errp);
/* Only the non-iterative devices (FULL sections), no EOF: used by postcopy
 * and COLO packaging. Also builds the VM description's "devices". */
int fy_savevm_state_complete_devices(FySaveState *s, FyStream *f, FyError **errp);
/* Postcopy's end: END sections via save_live_complete_postcopy of the
 * active entries that have it, then EOF (no VM description in postcopy). */
int fy_savevm_state_complete_postcopy(FySaveState *s, FyStream *f,
                                      FyError **errp);
/* EOF + description. The JSON is QEMU's shape and formatting; when its
 * length's bytes would stop analyze-migration.py from finding it (1 length
 * in 256), it is padded with blanks. */
int fy_savevm_state_finish(FySaveState *s, FyStream *f, FyError **errp);
void fy_savevm_state_cleanup(FySaveState *s);
/* All of the above in one go (savevm to a file, snapshot): header, setup,
 * iterate until every entry is done (the VM should be stopped, or this may
 * not end), completion, cleanup. */
int fy_savevm_save_all(FySaveState *s, FyStream *f, FyError **errp);

/* QEMU_VM_COMMAND. len must be the command's fixed length where it has one
 * (a malformed command sets the stream's error instead of being sent).
 * Flushes the stream. */
void fy_savevm_command_send(FyStream *f, enum MigCmd cmd, uint16_t len,
                            const uint8_t *payload);
void fy_savevm_send_ping(FyStream *f, uint32_t value);
/* MIG_CMD_PACKAGED with be32 len, then the len bytes of a nested stream
 * (at most FY_MAX_PACKAGED_SIZE; the loader refuses more). */
void fy_savevm_send_packaged(FyStream *f, const uint8_t *buf, size_t len);

/* ---- loading ---- */
typedef struct FyLoadHooks {
    void *opaque;
    /* A command, its payload already read and length-checked. Return 0 to go
     * on, 1 to stop loading successfully now (postcopy hands over), -1 on
     * error. f is the stream the command came from (for PACKAGED reads). */
    int (*command)(void *opaque, FyStream *f, uint16_t cmd,
                   const uint8_t *payload, uint16_t len, FyError **errp);
    /* Called after each section loads (progress, switchover timing). */
    void (*section_loaded)(void *opaque, const char *idstr, int instance_id,
                           uint8_t section_type);
    /* Called when the first device (FULL) section begins, i.e. the source
     * has stopped the VM: destination-side downtime accounting. */
    void (*devices_begin)(void *opaque);
} FyLoadHooks;

typedef struct FyLoadResult {
    struct json_t *vmdesc;   /* the description after EOF, if present (owned by caller) */
    uint64_t eof_offset;     /* stream offset of the EOF byte */
    bool stopped_by_hook;    /* a command hook returned 1 */
} FyLoadResult;

/* Load a whole stream: header, configuration, sections to EOF, then the VM
 * description if present (read only when config->send_vmdesc, as QEMU reads
 * it only when it would send one; anything else after EOF is left unread).
 * hooks and result may be NULL. Errors say what and where, e.g.
 *   "stream offset 1234: section 'cpu' instance 0 (id 3): ..."
 * Runs every entry's load_setup before the first section and load_cleanup
 * at the end -- except when a command hook stopped the load (returned 1):
 * then the caller goes on (postcopy) and calls fy_loadvm_state_cleanup().
 * Returns 0 or -1. */
int fy_loadvm_state(FySaveState *s, FyStream *f, const FyLoadHooks *hooks,
                    FyLoadResult *result, FyError **errp);
/* Load sections from the current position until EOF (no header): nested
 * PACKAGED streams and postcopy device state. Runs load_setup first if no
 * load is under way (then call fy_loadvm_state_cleanup() when done, error
 * or not). Returns 0 at EOF, 1 when a command hook stopped it
 * (result->stopped_by_hook is set too), -1 on error. A PACKAGED hook calls
 * this on the nested stream and returns what it returned; a package inside
 * a package is refused. */
int fy_loadvm_state_main(FySaveState *s, FyStream *f, const FyLoadHooks *hooks,
                         FyLoadResult *result, FyError **errp);
/* Header + configuration only. */
int fy_loadvm_state_header(FySaveState *s, FyStream *f, FyError **errp);
/* load_cleanup of every entry, if a load was set up. */
void fy_loadvm_state_cleanup(FySaveState *s);

/* The configuration vmsd (for tools that decode a stream). */
extern const VMStateDescription vmstate_configuration;

#endif
