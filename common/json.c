/* json: parsing into yajl trees with a nesting limit, typed getters, and compact serialisation. */
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HF_JSON_STR2(x) #x
#define HF_JSON_STR(x) HF_JSON_STR2(x)

/* Checks what yajl_tree_parse would let through: yajl has no depth limit and frees trees
 * recursively, so deep input is refused up front; it accepts comments, which are not JSON and
 * would hide brackets and quotes from this scan (and so bypass the limit); and it decodes \u0000
 * into a NUL that silently cuts the C string short. Returns NULL or the reason, with its offset
 * in *where. */
static const char *prescan(const char *s, size_t n, size_t *where)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') {
                if (n - i >= 6 && memcmp(s + i + 1, "u0000", 5) == 0) {
                    *where = i;
                    return "string contains \\u0000";
                }
                i++;
            } else if (c == '"') {
                in_str = false;
            }
        } else if (c == '"') {
            in_str = true;
        } else if (c == '/') {
            *where = i;
            return "comments are not allowed";
        } else if (c == '[' || c == '{') {
            if (++depth > HF_JSON_MAX_DEPTH) {
                *where = i;
                return "nested deeper than " HF_JSON_STR(HF_JSON_MAX_DEPTH) " levels";
            }
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return NULL;
}

/* True if s is well-formed UTF-8 (RFC 3629): shortest form, no surrogates, at most U+10FFFF.
 * yajl checks only the shape of multi-byte sequences, so it passes overlong forms, encoded
 * surrogates (also what it makes of a lone \udc00 escape) and code points past U+10FFFF. */
static bool utf8_ok(const unsigned char *s)
{
    while (*s) {
        unsigned c = *s, cp, min;
        size_t len;
        if (c < 0x80) {
            s++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        for (size_t k = 1; k < len; k++) {
            if ((s[k] & 0xc0) != 0x80) /* also stops at the terminating NUL */
                return false;
            cp = cp << 6 | (s[k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        s += len;
    }
    return true;
}

/* Every string and key of the tree is valid UTF-8 (depth is bounded by prescan). */
static bool tree_utf8_ok(hf_json v)
{
    if (YAJL_IS_STRING(v))
        return utf8_ok((const unsigned char *)v->u.string);
    if (YAJL_IS_ARRAY(v)) {
        for (size_t i = 0; i < v->u.array.len; i++)
            if (!tree_utf8_ok(v->u.array.values[i]))
                return false;
    } else if (YAJL_IS_OBJECT(v)) {
        for (size_t i = 0; i < v->u.object.len; i++)
            if (!utf8_ok((const unsigned char *)v->u.object.keys[i]) ||
                !tree_utf8_ok(v->u.object.values[i]))
                return false;
    }
    return true;
}

hf_json hf_json_parse(const char *text, size_t len, char *err, size_t errlen)
{
    if (memchr(text, '\0', len)) {
        hf_err(err, errlen, "JSON contains a NUL byte at offset %zu",
               (size_t)((const char *)memchr(text, '\0', len) - text));
        return NULL;
    }
    size_t where = 0;
    const char *why = prescan(text, len, &where);
    if (why) {
        hf_err(err, errlen, "JSON %s at offset %zu", why, where);
        return NULL;
    }
    char *copy = xstrndup(text, len);
    char msg[256] = "";
    hf_json v = yajl_tree_parse(copy, msg, sizeof msg);
    free(copy);
    if (!v) {
        /* yajl's message spans lines (it quotes the input); keep the first line only. */
        char *nl = strchr(msg, '\n');
        if (nl)
            *nl = '\0';
        hf_err(err, errlen, "malformed JSON: %s", msg[0] ? msg : "parse error");
        return NULL;
    }
    if (!tree_utf8_ok(v)) {
        yajl_tree_free(v);
        hf_err(err, errlen, "JSON string is not valid UTF-8");
        return NULL;
    }
    return v;
}

void hf_json_free(hf_json v)
{
    if (v)
        yajl_tree_free(v);
}

hf_json hf_json_get(hf_json v, const char *key)
{
    if (!YAJL_IS_OBJECT(v))
        return NULL;
    for (size_t i = 0; i < v->u.object.len; i++)
        if (strcmp(v->u.object.keys[i], key) == 0)
            return v->u.object.values[i];
    return NULL;
}

hf_json hf_json_path(hf_json v, ...)
{
    va_list ap;
    va_start(ap, v);
    const char *k;
    while (v && (k = va_arg(ap, const char *)) != NULL)
        v = hf_json_get(v, k);
    va_end(ap);
    return v;
}

const char *hf_json_str(hf_json v)
{
    return YAJL_IS_STRING(v) ? v->u.string : NULL;
}

bool hf_json_int(hf_json v, long long *out)
{
    if (!YAJL_IS_INTEGER(v))
        return false;
    *out = v->u.number.i;
    return true;
}

const char *hf_json_number_text(hf_json v)
{
    return YAJL_IS_NUMBER(v) ? v->u.number.r : NULL;
}

const char *hf_json_scalar_text(hf_json v)
{
    if (YAJL_IS_STRING(v))
        return v->u.string;
    if (YAJL_IS_NUMBER(v))
        return v->u.number.r;
    if (YAJL_IS_TRUE(v))
        return "true";
    if (YAJL_IS_FALSE(v))
        return "false";
    return NULL;
}

bool hf_json_is_object(hf_json v)
{
    return YAJL_IS_OBJECT(v);
}

bool hf_json_is_array(hf_json v)
{
    return YAJL_IS_ARRAY(v);
}

size_t hf_json_len(hf_json v)
{
    if (YAJL_IS_ARRAY(v))
        return v->u.array.len;
    if (YAJL_IS_OBJECT(v))
        return v->u.object.len;
    return 0;
}

hf_json hf_json_at(hf_json arr, size_t i)
{
    return YAJL_IS_ARRAY(arr) && i < arr->u.array.len ? arr->u.array.values[i] : NULL;
}

hf_json hf_json_member(hf_json obj, size_t i, const char **key)
{
    if (!YAJL_IS_OBJECT(obj) || i >= obj->u.object.len)
        return NULL;
    if (key)
        *key = obj->u.object.keys[i];
    return obj->u.object.values[i];
}

void hf_json_append_string(hf_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    hf_buf_reserve(out, n + 2);
    hf_buf_putc(out, '"');
    size_t run = 0; /* start of the pending run of bytes that need no escaping */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c < 0x20) {
            u[0] = '\\', u[1] = 'u', u[2] = '0', u[3] = '0', u[4] = hex[c >> 4], u[5] = hex[c & 15];
            u[6] = '\0';
            esc = u;
        }
        if (esc) {
            hf_buf_append(out, s + run, i - run);
            hf_buf_puts(out, esc);
            run = i + 1;
        }
    }
    hf_buf_append(out, s + run, n - run);
    hf_buf_putc(out, '"');
}

void hf_json_serialize(hf_json v, hf_buf *out)
{
    if (!v || YAJL_IS_NULL(v)) {
        hf_buf_puts(out, "null");
    } else if (YAJL_IS_STRING(v)) {
        hf_json_append_cstr(out, v->u.string);
    } else if (YAJL_IS_NUMBER(v)) {
        hf_buf_puts(out, v->u.number.r);
    } else if (YAJL_IS_TRUE(v)) {
        hf_buf_puts(out, "true");
    } else if (YAJL_IS_FALSE(v)) {
        hf_buf_puts(out, "false");
    } else if (YAJL_IS_ARRAY(v)) {
        hf_buf_putc(out, '[');
        for (size_t i = 0; i < v->u.array.len; i++) {
            if (i)
                hf_buf_putc(out, ',');
            hf_json_serialize(v->u.array.values[i], out);
        }
        hf_buf_putc(out, ']');
    } else if (YAJL_IS_OBJECT(v)) {
        hf_buf_putc(out, '{');
        for (size_t i = 0; i < v->u.object.len; i++) {
            if (i)
                hf_buf_putc(out, ',');
            hf_json_append_cstr(out, v->u.object.keys[i]);
            hf_buf_putc(out, ':');
            hf_json_serialize(v->u.object.values[i], out);
        }
        hf_buf_putc(out, '}');
    }
}
