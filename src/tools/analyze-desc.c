/*
 * analyze-desc.c: the JSON VM description that follows EOF.
 *
 * The stream ends `00 (EOF) 06 be32 len {json...}`. In a file we find it
 * before walking, from the end: the one position p where byte p is 0x06,
 * the be32 after it is exactly the number of bytes left after it, the JSON
 * starts with '{' and the byte before is the EOF marker. The JSON never holds
 * a raw 0x06 (control characters are escaped), so the match is unambiguous;
 * analyze-migration.py's guess (last NUL, first brace) is not needed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "analyze-int.h"

#define TAIL_FIRST (1u << 20)
#define TAIL_MAX ((64u << 20) + 6)   /* FY_MAX_VMDESC_SIZE and its header */

static int read_at(int fd, uint8_t *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, buf + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

/* Search buf (the last len bytes of a file of `size`) for the header. */
static bool find_in_tail(const uint8_t *buf, size_t len, uint64_t size,
                         uint64_t *off_out, uint64_t *jlen_out)
{
    uint64_t start = size - len;
    for (size_t p = len >= 6 ? len - 6 : 0; p + 6 <= len; p--) {
        if (buf[p] == 0x06 && buf[p + 5] == '{' &&
            ld_be32(buf + p + 1) == size - (start + p) - 5 &&
            (start + p == 0 || (p > 0 && buf[p - 1] == 0x00))) {
            *off_out = start + p;
            *jlen_out = size - (start + p) - 5;
            return true;
        }
        if (p == 0)
            break;
    }
    return false;
}

int an_desc_in_buf(An *a, const uint8_t *buf, size_t len, uint64_t end,
                   json_t **json_out, uint64_t *off_out, uint64_t *len_out)
{
    uint64_t off, jlen;
    *json_out = NULL;
    if (!find_in_tail(buf, len, end, &off, &jlen))
        return 0;
    json_t *j = an_desc_parse(a, (const char *)buf + (off - (end - len)) + 5,
                              (size_t)jlen, off, "the stream's VM description");
    if (!j)
        return -1;
    *json_out = j;
    *off_out = off;
    *len_out = jlen;
    return 1;
}

int an_desc_from_tail(An *a, int fd, uint64_t size, json_t **json_out,
                      uint64_t *off_out, uint64_t *len_out)
{
    *json_out = NULL;
    if (size < 8 + 7)
        return 0;
    size_t tries[2] = { TAIL_FIRST, TAIL_MAX };
    for (int t = 0; t < 2; t++) {
        size_t len = size - 8 < tries[t] ? (size_t)(size - 8) : tries[t];
        uint8_t *buf = malloc(len);
        if (!buf) {
            an_fail(a, 0, "out of memory reading the end of the stream");
            return -1;
        }
        if (read_at(fd, buf, len, size - len) < 0) {
            free(buf);
            an_fail(a, size - len, "cannot read the end of the stream: %s",
                    strerror(errno ? errno : EIO));
            return -1;
        }
        uint64_t off, jlen;
        if (find_in_tail(buf, len, size, &off, &jlen)) {
            size_t at = (size_t)(off - (size - len)) + 5;
            json_t *j = an_desc_parse(a, (const char *)buf + at, (size_t)jlen,
                                      off, "the stream's VM description");
            free(buf);
            if (!j)
                return -1;
            *json_out = j;
            *off_out = off;
            *len_out = jlen;
            return 1;
        }
        free(buf);
        if (len >= size - 8)
            break;
    }
    return 0;
}

static bool check_device(json_t *d, size_t i, char *why, size_t whysz)
{
    if (!json_is_object(d)) {
        snprintf(why, whysz, "devices[%zu] is not an object", i);
        return false;
    }
    if (!json_is_string(json_object_get(d, "name")) ||
        !json_is_integer(json_object_get(d, "instance_id"))) {
        snprintf(why, whysz, "devices[%zu] has no name or instance_id", i);
        return false;
    }
    if (!json_is_array(json_object_get(d, "fields"))) {
        snprintf(why, whysz, "vmstate for device %s has no fields",
                 json_string_value(json_object_get(d, "name")));
        return false;
    }
    return true;
}

json_t *an_desc_parse(An *a, const char *text, size_t len, uint64_t off,
                      const char *where)
{
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY, &je);
    if (!j) {
        an_fail(a, off, "%s is not valid JSON: %s (at character %d)", where,
                je.text, je.position);
        return NULL;
    }
    char why[300] = "";
    json_t *ps = json_object_get(j, "page_size");
    json_t *devs = json_object_get(j, "devices");
    if (!json_is_object(j))
        snprintf(why, sizeof(why), "it is not a JSON object");
    else if (!json_is_integer(ps))
        snprintf(why, sizeof(why), "it has no page_size");
    else if (json_integer_value(ps) < 1024 || json_integer_value(ps) > (1 << 20) ||
             (json_integer_value(ps) & (json_integer_value(ps) - 1)))
        snprintf(why, sizeof(why), "page_size %" JSON_INTEGER_FORMAT
                 " is not a power of two between 1 KiB and 1 MiB",
                 json_integer_value(ps));
    else if (!json_is_array(devs))
        snprintf(why, sizeof(why), "it has no devices list");
    else {
        size_t i;
        json_t *d;
        json_array_foreach(devs, i, d)
            if (!check_device(d, i, why, sizeof(why)))
                break;
    }
    json_t *cfg = json_object_get(j, "configuration");
    if (!*why && cfg && (!json_is_object(cfg) ||
                         !json_is_array(json_object_get(cfg, "fields"))))
        snprintf(why, sizeof(why), "its configuration entry has no fields");
    if (*why) {
        an_fail(a, off, "%s: %s", where, why);
        json_decref(j);
        return NULL;
    }
    return j;
}

json_t *an_desc_find_device(json_t *desc, const char *name, uint32_t instance)
{
    json_t *devs = json_object_get(desc, "devices");
    size_t i;
    json_t *d;
    json_array_foreach(devs, i, d) {
        const char *n = json_string_value(json_object_get(d, "name"));
        json_int_t inst = json_integer_value(json_object_get(d, "instance_id"));
        if (n && !strcmp(n, name) && inst == (json_int_t)instance)
            return d;
    }
    return NULL;
}

static void index_key(char *buf, size_t sz, const char *name, uint32_t instance)
{
    snprintf(buf, sz, "%u:%s", instance, name);
}

json_t *an_find_device(An *a, const char *name, uint32_t instance)
{
    char key[300];
    if (!a->vmdesc)
        return NULL;
    if (!a->vmdesc_index) {
        /* first entry wins, as a front-to-back search would find it */
        json_t *idx = json_object();
        json_t *devs = json_object_get(a->vmdesc, "devices");
        size_t i;
        json_t *d;
        if (!idx)
            return an_desc_find_device(a->vmdesc, name, instance);
        json_array_foreach(devs, i, d) {
            const char *n = json_string_value(json_object_get(d, "name"));
            json_int_t inst = json_integer_value(json_object_get(d, "instance_id"));
            if (!n || inst < 0 || inst > UINT32_MAX || strlen(n) > 255)
                continue; /* no section could name it */
            index_key(key, sizeof(key), n, (uint32_t)inst);
            if (!json_object_get(idx, key))
                json_object_set_nocheck(idx, key, d);
        }
        a->vmdesc_index = idx;
    }
    index_key(key, sizeof(key), name, instance);
    return json_object_get(a->vmdesc_index, key);
}

/* --desc FILE: a description (desc.json, `-d desc` output) or a stream
 * that carries one. */
json_t *an_desc_load_file(const char *path, char *err, size_t errsz)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errsz, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    uint8_t magic[4] = { 0 };
    if (fstat(fd, &st) < 0 || read_at(fd, magic, 4, 0) < 0) {
        snprintf(err, errsz, "cannot read %s: %s", path, strerror(errno ? errno : EIO));
        close(fd);
        return NULL;
    }
    AnOpts o = { .dump = AN_DUMP_NONE, .quiet = true };
    An *a = an_new(&o);
    json_t *j = NULL;
    if (!a) {
        snprintf(err, errsz, "out of memory");
        close(fd);
        return NULL;
    }
    if (ld_be32(magic) == 0x5145564du) {
        uint64_t off, len;
        int r = an_desc_from_tail(a, fd, (uint64_t)st.st_size, &j, &off, &len);
        if (r == 0)
            snprintf(err, errsz, "%s: the stream carries no VM description", path);
        else if (r < 0)
            snprintf(err, errsz, "%s: %s", path, a->err);
    } else if (st.st_size > (off_t)TAIL_MAX) {
        snprintf(err, errsz, "%s: too big for a VM description", path);
    } else {
        size_t len = (size_t)st.st_size;
        char *text = malloc(len ? len : 1);
        if (text && read_at(fd, (uint8_t *)text, len, 0) == 0) {
            j = an_desc_parse(a, text, len, 0, path);
            if (!j)
                snprintf(err, errsz, "%s", a->err);
        } else {
            snprintf(err, errsz, "cannot read %s", path);
        }
        free(text);
    }
    an_free(a);
    close(fd);
    return j;
}
