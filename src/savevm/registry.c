/*
 * registry.c: the SaveStateEntry registry of one VM (QEMU's savevm_state
 * handler list, as an object).
 *
 * Invariants:
 * - (idstr, instance_id) is unique; registering it twice is an error.
 * - entries[] is in save order: priority descending, then registration
 *   order. A new entry goes before the first entry of lower priority, so
 *   equal priorities keep the order they were registered in.
 * - section ids come from a per-FySaveState counter at registration and are
 *   never reused, even after unregistration (QEMU: global_section_id++).
 * - FY_INSTANCE_ANY picks one more than the highest instance id already
 *   registered under that idstr, or 0 (QEMU's calculate_new_instance_id).
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "savevm/savevm-int.h"

FySaveState *fy_savevm_new(const char *machine_type)
{
    if (!machine_type)
        machine_type = "";
    if (strlen(machine_type) >= sizeof(((FySaveVMConfig *)0)->machine_type))
        return NULL;

    FySaveState *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    strcpy(s->config.machine_type, machine_type);
    s->config.target_page_bits = 12;
    s->config.legacy_page_bits = 12;
    s->config.send_configuration = true;
    s->config.send_section_footer = true;
    s->config.send_vmdesc = true;
    s->conf.s = s;
    s->last_instance_id = -1;
    return s;
}

void fy_savevm_free(FySaveState *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_entries; i++)
        free(s->entries[i]);
    free(s->entries);
    fy_savevm_config_state_free(&s->conf);
    json_decref(s->vmdesc);
    free(s);
}

FySaveVMConfig *fy_savevm_config(FySaveState *s)
{
    return &s->config;
}

void fy_savevm_printable(char *out, const void *in, size_t len)
{
    const unsigned char *p = in;
    for (size_t i = 0; i < len; i++)
        out[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
    out[len] = '\0';
}

SaveStateEntry *fy_savevm_find(FySaveState *s, const char *idstr, size_t idlen,
                               uint32_t instance_id)
{
    for (size_t i = 0; i < s->n_entries; i++) {
        SaveStateEntry *se = s->entries[i];
        if (se->idlen == idlen && memcmp(se->idstr, idstr, idlen) == 0 &&
            (uint32_t)se->instance_id == instance_id)
            return se;
    }
    return NULL;
}

static int next_instance_id(FySaveState *s, const char *idstr, size_t idlen)
{
    int id = 0;
    for (size_t i = 0; i < s->n_entries; i++) {
        SaveStateEntry *se = s->entries[i];
        if (se->idlen == idlen && memcmp(se->idstr, idstr, idlen) == 0 &&
            se->instance_id >= id)
            id = se->instance_id + 1;
    }
    return id;
}

static int insert_entry(FySaveState *s, SaveStateEntry *se, FyError **errp)
{
    if (s->n_entries == s->cap_entries) {
        size_t cap = s->cap_entries ? 2 * s->cap_entries : 16;
        SaveStateEntry **n = realloc(s->entries, cap * sizeof(*n));
        if (!n) {
            fy_error_setg(errp, "out of memory registering '%s'", se->idstr);
            return -1;
        }
        s->entries = n;
        s->cap_entries = cap;
    }
    size_t pos = 0;
    while (pos < s->n_entries && s->entries[pos]->priority >= se->priority)
        pos++;
    memmove(&s->entries[pos + 1], &s->entries[pos],
            (s->n_entries - pos) * sizeof(*s->entries));
    s->entries[pos] = se;
    s->n_entries++;
    return 0;
}

/* Common part of both registrations: checks, instance id, section id. */
static int register_entry(FySaveState *s, const char *idstr, int instance_id,
                          int version_id, int priority,
                          const VMStateDescription *vmsd,
                          const SaveVMHandlers *ops, void *opaque,
                          FyError **errp)
{
    size_t idlen = idstr ? strlen(idstr) : 0;

    s->last_instance_id = -1;
    if (idlen == 0 || idlen > 255) {
        fy_error_setg(errp, "savevm: section name '%.64s' must be 1 to 255 "
                      "bytes (it is %zu)", idstr ? idstr : "", idlen);
        return -1;
    }
    if (instance_id < FY_INSTANCE_ANY) {
        fy_error_setg(errp, "savevm: '%s': invalid instance id %d", idstr,
                      instance_id);
        return -1;
    }
    if (version_id < 0) {
        fy_error_setg(errp, "savevm: '%s': invalid version %d", idstr,
                      version_id);
        return -1;
    }
    if (priority < MIG_PRI_DEFAULT || priority >= MIG_PRI_MAX) {
        fy_error_setg(errp, "savevm: '%s': invalid priority %d", idstr,
                      priority);
        return -1;
    }
    if (instance_id == FY_INSTANCE_ANY)
        instance_id = next_instance_id(s, idstr, idlen);
    if (fy_savevm_find(s, idstr, idlen, (uint32_t)instance_id)) {
        fy_error_setg(errp, "savevm: '%s' instance %d is already registered",
                      idstr, instance_id);
        return -1;
    }

    SaveStateEntry *se = calloc(1, sizeof(*se));
    if (!se) {
        fy_error_setg(errp, "out of memory registering '%s'", idstr);
        return -1;
    }
    memcpy(se->idstr, idstr, idlen + 1);
    se->idlen = idlen;
    se->instance_id = instance_id;
    se->version_id = version_id;
    se->priority = priority;
    se->vmsd = vmsd;
    if (ops)
        se->ops = *ops;
    se->opaque = opaque;
    se->seq = s->next_seq++;
    if (insert_entry(s, se, errp) < 0) {
        free(se);
        return -1;
    }
    se->section_id = s->next_section_id++;
    s->last_instance_id = instance_id;
    return 0;
}

int fy_register_vmstate(FySaveState *s, const char *idstr, int instance_id,
                        const VMStateDescription *vmsd, void *opaque,
                        FyError **errp)
{
    if (!vmsd || !vmsd->name) {
        fy_error_setg(errp, "savevm: '%s': no VMState description",
                      idstr ? idstr : "");
        s->last_instance_id = -1;
        return -1;
    }
    return register_entry(s, idstr, instance_id, vmsd->version_id,
                          vmsd->priority, vmsd, NULL, opaque, errp);
}

int fy_register_savevm_live(FySaveState *s, const char *idstr, int instance_id,
                            int version_id, const SaveVMHandlers *ops,
                            void *opaque, FyError **errp)
{
    if (!ops) {
        fy_error_setg(errp, "savevm: '%s': no handlers", idstr ? idstr : "");
        s->last_instance_id = -1;
        return -1;
    }
    return register_entry(s, idstr, instance_id, version_id, MIG_PRI_DEFAULT,
                          NULL, ops, opaque, errp);
}

int fy_savevm_last_instance_id(FySaveState *s)
{
    return s->last_instance_id;
}

void fy_unregister_savevm(FySaveState *s, const char *idstr, int instance_id)
{
    size_t idlen = strlen(idstr);
    size_t out = 0;

    for (size_t i = 0; i < s->n_entries; i++) {
        SaveStateEntry *se = s->entries[i];
        if (se->idlen == idlen && memcmp(se->idstr, idstr, idlen) == 0 &&
            (instance_id == FY_INSTANCE_ANY || se->instance_id == instance_id)) {
            free(se);
            continue;
        }
        s->entries[out++] = se;
    }
    s->n_entries = out;
}

int fy_savevm_entry_count(FySaveState *s)
{
    return (int)s->n_entries;
}

int fy_savevm_entry_info(FySaveState *s, int index, FySaveEntryInfo *out)
{
    if (index < 0 || (size_t)index >= s->n_entries)
        return -1;
    const SaveStateEntry *se = s->entries[index];
    out->idstr = se->idstr;
    out->instance_id = se->instance_id;
    out->version_id = se->version_id;
    out->section_id = se->section_id;
    out->vmsd = se->vmsd;
    out->opaque = se->opaque;
    return 0;
}
