/*
 * analyze-config.c: the configuration section (0x07 right after the
 * header; no section header, no footer).
 *
 * QEMU's layout: be32 len + machine type, then subsections sent only when
 * needed: "configuration/target-page-bits" (be32), "configuration/
 * capabilities" (be32 count, then u8 len + name each: the validated ones,
 * x-ignore-shared and mapped-ram, which change the RAM format) and
 * "configuration/uuid" (16 bytes). Newer QEMU lists the section in the VM
 * description: then it is decoded from it like a device; otherwise (QEMU
 * 7.2, or a pipe, where the description comes last) from this layout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analyze-int.h"

#define T_SUB 0x05

static json_t *hexstr(const uint8_t *p, size_t n)
{
    static const char d[] = "0123456789abcdef";
    char *s = malloc(n * 3 + 1);
    size_t o = 0;
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        s[o++] = d[p[i] >> 4];
        s[o++] = d[p[i] & 15];
        s[o++] = ' ';
    }
    s[o ? o - 1 : 0] = '\0';
    json_t *j = json_string(s);
    free(s);
    return j;
}

/* Without a description the configuration's layout is QEMU's, known here:
 * be32 len + machine name, then the subsections QEMU has defined. */
static json_t *config_builtin(An *a, AnRd *r)
{
    uint64_t off = rd_off(r);
    if (!rd_need(r, 4)) {
        an_fail(a, off, "configuration: expected be32 name length, found end of "
                "stream");
        return NULL;
    }
    uint32_t len = ld_be32(rd_cur(r));
    if (len > 255) {
        an_fail(a, off, "configuration: expected a machine type name of at most "
                "255 bytes, found length %u", len);
        return NULL;
    }
    if (!rd_need(r, 4 + len)) {
        an_fail(a, off + 4, "configuration: expected %u bytes of machine type, "
                "found end of stream", len);
        return NULL;
    }
    json_t *o = json_object();
    char b[32];
    snprintf(b, sizeof(b), "0x%08x", len);
    json_object_set_new(o, "len", json_string(b));
    json_object_set_new(o, "name", hexstr(rd_cur(r) + 4, len));
    an_printable(a->machine, sizeof(a->machine), rd_cur(r) + 4, len);
    r->pos += 4 + len;
    while (rd_peek(r, 0) == T_SUB) {
        uint64_t soff = rd_off(r);
        int nl = rd_peek(r, 1);
        if (nl < 0 || !rd_need(r, 2 + (size_t)nl + 4)) {
            an_fail(a, soff, "configuration: expected a subsection header, found "
                    "end of stream");
            json_decref(o);
            return NULL;
        }
        char name[256];
        memcpy(name, rd_cur(r) + 2, (size_t)nl);
        name[nl] = '\0';
        r->pos += 2 + (size_t)nl + 4;
        json_t *sub = json_object();
        if (!strcmp(name, "configuration/target-page-bits")) {
            if (!rd_need(r, 4)) {
                an_fail(a, rd_off(r), "configuration: expected target page bits, "
                        "found end of stream");
                json_decref(sub);
                json_decref(o);
                return NULL;
            }
            uint32_t bits = ld_be32(rd_cur(r));
            r->pos += 4;
            snprintf(b, sizeof(b), "0x%08x", bits);
            json_object_set_new(sub, "target_page_bits", json_string(b));
            a->target_page_bits = bits <= 30 ? (int)bits : -1;
        } else if (!strcmp(name, "configuration/capabilities")) {
            if (!rd_need(r, 4)) {
                an_fail(a, rd_off(r), "configuration: expected the capability "
                        "count, found end of stream");
                json_decref(sub);
                json_decref(o);
                return NULL;
            }
            uint32_t n = ld_be32(rd_cur(r));
            r->pos += 4;
            if (n > 64) {
                an_fail(a, rd_off(r) - 4, "configuration: expected at most 64 "
                        "capabilities, found %u", n);
                json_decref(sub);
                json_decref(o);
                return NULL;
            }
            snprintf(b, sizeof(b), "0x%08x", n);
            json_object_set_new(sub, "caps_count", json_string(b));
            json_t *caps = json_array();
            for (uint32_t i = 0; i < n; i++) {
                int cl = rd_peek(r, 0);
                if (cl < 0 || !rd_need(r, 1 + (size_t)cl)) {
                    an_fail(a, rd_off(r), "configuration: expected capability %u "
                            "of %u, found end of stream", i + 1, n);
                    json_decref(caps);
                    json_decref(sub);
                    json_decref(o);
                    return NULL;
                }
                const uint8_t *cp = rd_cur(r) + 1;
                if (cl == 15 && !memcmp(cp, "x-ignore-shared", 15))
                    a->cap_ignore_shared = true;
                if (cl == 10 && !memcmp(cp, "mapped-ram", 10))
                    a->cap_mapped_ram = true;
                json_array_append_new(caps, an_json_bytes_string(cp, (size_t)cl));
                r->pos += 1 + (size_t)cl;
            }
            json_object_set_new(sub, "capabilities", caps);
        } else if (!strcmp(name, "configuration/uuid")) {
            if (!rd_need(r, 16)) {
                an_fail(a, rd_off(r), "configuration: expected a 16-byte uuid, "
                        "found end of stream");
                json_decref(sub);
                json_decref(o);
                return NULL;
            }
            json_object_set_new(sub, "uuid", hexstr(rd_cur(r), 16));
            r->pos += 16;
        } else {
            char pr[300];
            an_printable(pr, sizeof(pr), (const uint8_t *)name, (size_t)nl);
            an_fail(a, soff, "configuration: subsection '%s' is not one analyze "
                    "knows, and without the VM description its length is unknown",
                    pr);
            json_decref(sub);
            json_decref(o);
            return NULL;
        }
        json_t *key = an_json_bytes_string((const uint8_t *)name, (size_t)nl);
        json_object_set_new(o, json_string_value(key), sub);
        json_decref(key);
    }
    return o;
}

/* With a description that lists it (newer QEMU), decode it the generic way,
 * then read the capabilities the RAM format depends on. */
static void config_facts(An *a, json_t *cfg)
{
    json_t *name = json_object_get(cfg, "name");
    if (json_is_string(name) && !a->machine[0]) {
        /* "70 63 2d ..." back to text */
        const char *h = json_string_value(name);
        uint8_t buf[256];
        size_t n = 0;
        while (h[0] && h[1] && n < sizeof(buf)) {
            unsigned v;
            if (sscanf(h, "%2x", &v) != 1)
                break;
            buf[n++] = (uint8_t)v;
            h += h[2] == ' ' ? 3 : 2;
        }
        an_printable(a->machine, sizeof(a->machine), buf, n);
    }
    json_t *caps = json_object_get(json_object_get(cfg, "configuration/capabilities"),
                                   "capabilities");
    json_t *list = json_is_array(caps) ? caps : NULL;
    size_t n = list ? json_array_size(list) : (caps ? 1 : 0);
    for (size_t i = 0; i < n; i++) {
        const char *c = json_string_value(list ? json_array_get(list, i) : caps);
        if (c && !strcmp(c, "x-ignore-shared"))
            a->cap_ignore_shared = true;
        if (c && !strcmp(c, "mapped-ram"))
            a->cap_mapped_ram = true;
    }
}

int an_configuration(An *a, AnRd *r)
{
    uint64_t off = rd_off(r);
    r->pos++;
    snprintf(a->ctx, sizeof(a->ctx), "configuration: ");
    json_t *cd = a->vmdesc ? json_object_get(a->vmdesc, "configuration") : NULL;
    json_t *cfg = cd ? an_vmsd_decode(a, r, cd, "", 0) : NULL;
    a->ctx[0] = '\0';
    if (cd && cfg)
        config_facts(a, cfg);
    else if (!cd)
        cfg = config_builtin(a, r);
    if (!cfg)
        return -1;
    a->config = cfg;
    a->has_config = true;
    a->config_bytes = rd_off(r) - off;
    return 0;
}

