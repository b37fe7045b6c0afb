/*
 * analyze-json.c: JSON text exactly as python's json.dumps(indent=4,
 * separators=(',', ': ')) writes it, so `ferry analyze` output can replace
 * analyze-migration.py output byte for byte: four-space indents, "{}" and
 * "[]" for empty containers, ASCII only (\uXXXX escapes, lowercase hex,
 * surrogate pairs above U+FFFF), floats in their shortest round-trip form.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analyze-int.h"

static void put_indent(FILE *out, int n)
{
    for (int i = 0; i < n; i++)
        fputs("    ", out);
}

/* Decode one UTF-8 sequence at s (len > 0 left). Returns its length and
 * the code point, or 0 when the bytes are not valid UTF-8. */
static size_t utf8_next(const uint8_t *s, size_t len, uint32_t *cp)
{
    uint8_t c = s[0];
    size_t n;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        n = 2; v = c & 0x1f; min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3; v = c & 0x0f; min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4; v = c & 0x07; min = 0x10000;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return n;
}

void an_json_print_string(FILE *out, const char *str, size_t len)
{
    const uint8_t *s = (const uint8_t *)str;
    fputc('"', out);
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = utf8_next(s + i, len - i, &cp);
        if (!n) {
            cp = 0xfffd;
            n = 1;
        }
        i += n;
        switch (cp) {
        case '"': fputs("\\\"", out); continue;
        case '\\': fputs("\\\\", out); continue;
        case '\n': fputs("\\n", out); continue;
        case '\r': fputs("\\r", out); continue;
        case '\t': fputs("\\t", out); continue;
        case '\b': fputs("\\b", out); continue;
        case '\f': fputs("\\f", out); continue;
        default: break;
        }
        if (cp >= 0x20 && cp <= 0x7e) {
            fputc((int)cp, out);
        } else if (cp < 0x10000) {
            fprintf(out, "\\u%04x", cp);
        } else {
            uint32_t v = cp - 0x10000;
            fprintf(out, "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
        }
    }
    fputc('"', out);
}

/* Python's repr(float): the shortest text that reads back the same. */
static void print_real(FILE *out, double d)
{
    char buf[64];
    if (isnan(d)) {
        fputs("NaN", out);
        return;
    }
    if (isinf(d)) {
        fputs(d > 0 ? "Infinity" : "-Infinity", out);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    /* python writes 1e+16 as 1e+16 and 5.0 as 5.0 */
    if (!strpbrk(buf, ".eEn"))
        strcat(buf, ".0");
    fputs(buf, out);
}

void an_json_print(FILE *out, json_t *v, int indent)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (json_object_size(v) == 0) {
            fputs("{}", out);
            return;
        }
        fputs("{\n", out);
        const char *key;
        json_t *val;
        size_t i = 0, n = json_object_size(v);
        json_object_foreach(v, key, val) {
            put_indent(out, indent + 1);
            an_json_print_string(out, key, strlen(key));
            fputs(": ", out);
            an_json_print(out, val, indent + 1);
            fputs(++i < n ? ",\n" : "\n", out);
        }
        put_indent(out, indent);
        fputc('}', out);
        return;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (n == 0) {
            fputs("[]", out);
            return;
        }
        fputs("[\n", out);
        for (size_t i = 0; i < n; i++) {
            put_indent(out, indent + 1);
            an_json_print(out, json_array_get(v, i), indent + 1);
            fputs(i + 1 < n ? ",\n" : "\n", out);
        }
        put_indent(out, indent);
        fputc(']', out);
        return;
    }
    case JSON_STRING:
        an_json_print_string(out, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER:
        fprintf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return;
    case JSON_REAL:
        print_real(out, json_real_value(v));
        return;
    case JSON_TRUE:
        fputs("true", out);
        return;
    case JSON_FALSE:
        fputs("false", out);
        return;
    case JSON_NULL:
        fputs("null", out);
        return;
    }
}

json_t *an_json_bytes_string(const uint8_t *s, size_t len)
{
    /* worst case every byte becomes U+FFFD (3 bytes) */
    char *buf = malloc(len * 3 + 1);
    if (!buf)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = utf8_next(s + i, len - i, &cp);
        if (n && cp != 0) {
            memcpy(buf + o, s + i, n);
            o += n;
            i += n;
        } else {
            /* invalid byte, or NUL (jansson strings are C strings) */
            memcpy(buf + o, "\xef\xbf\xbd", 3);
            o += 3;
            i += 1;
        }
    }
    json_t *j = json_stringn(buf, o);
    free(buf);
    return j;
}
