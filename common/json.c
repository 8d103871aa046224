/* json: parsing into arena-held yajl trees with a nesting limit, typed getters, and compact
 * serialisation. */
#include "json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "crypto.h"

#define HF_JSON_STR2(x) #x
#define HF_JSON_STR(x) HF_JSON_STR2(x)

/* A parsed document lives in one arena of chunks, so parsing costs a few allocations rather than
 * one per value, key and string, and freeing it is a walk down the chunk list. The root value is
 * the first thing in the first chunk: hf_json_free finds the arena from it. */
typedef struct chunk {
    struct chunk *next;
    size_t cap, used;
    size_t pad; /* keeps data 16-byte aligned */
    unsigned char data[];
} chunk;

/* Objects and arrays carry, just before the value, where their text is in the input, so a
 * payload can be passed on exactly as the platform sent it instead of being re-serialised. */
typedef struct container {
    const char *text;
    size_t len;
    struct yajl_val_s v;
} container;

#define ALIGN8(n) (((n) + 7) & ~(size_t)7)
#define INLINE_SLOTS 128

typedef struct frame {
    yajl_val node;
    size_t base;     /* where this container's members start on the member stack */
    const char *key; /* objects: the key read last, waiting for its value */
} frame;

/* A value of an open container, with its key when the container is an object. */
typedef struct member {
    const char *key;
    yajl_val value;
} member;

/* The parse in progress: the arena, the open containers, and the members of those containers
 * waiting for their closing bracket. */
typedef struct parse_ctx {
    yajl_handle h;
    const char *text;
    chunk *head, *cur;
    bool have_root;
    frame open[HF_JSON_MAX_DEPTH];
    int depth;
    member *members;
    size_t nmembers, mcap;
    member minline[INLINE_SLOTS];
    const char *why; /* set when a callback stops the parse */
    size_t where;
} parse_ctx;

static chunk *chunk_new(size_t cap)
{
    chunk *c = xmalloc(sizeof *c + cap);
    c->next = NULL;
    c->cap = cap;
    c->used = 0;
    return c;
}

static void *arena_alloc(parse_ctx *p, size_t n)
{
    n = ALIGN8(n);
    if (p->cur->cap - p->cur->used < n) {
        size_t cap = p->cur->cap * 2 > n ? p->cur->cap * 2 : n;
        chunk *c = chunk_new(cap);
        c->next = p->head->next;
        p->head->next = c;
        p->cur = c;
    }
    void *m = p->cur->data + p->cur->used;
    p->cur->used += n;
    return m;
}

static void arena_free(chunk *head)
{
    while (head) {
        chunk *next = head->next;
        free(head);
        head = next;
    }
}

/* True if s[0..n) is well-formed UTF-8 (RFC 3629): shortest form, no surrogates, at most
 * U+10FFFF. yajl checks only the shape of multi-byte sequences, so it passes overlong forms,
 * encoded surrogates (also what it makes of a lone \udc00 escape) and code points past U+10FFFF.
 */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    const unsigned char *end = s + n;
    while (s < end) {
        /* Most text is ASCII: skip it eight bytes at a time. */
        uint64_t w;
        while (end - s >= 8 && (memcpy(&w, s, 8), (w & 0x8080808080808080ULL) == 0))
            s += 8;
        if (s == end)
            break;
        size_t len = hf_utf8_char_len((const char *)s, (size_t)(end - s));
        if (len == 0)
            return false;
        s += len;
    }
    return true;
}

static int stop(parse_ctx *p, const char *why, size_t back)
{
    p->why = why;
    size_t at = yajl_get_bytes_consumed(p->h);
    p->where = at >= back ? at - back : 0;
    return 0;
}

static void push_member(parse_ctx *p, const char *key, yajl_val value)
{
    if (p->nmembers == p->mcap) {
        member *grown = xmalloc(p->mcap * 2 * sizeof *grown);
        memcpy(grown, p->members, p->nmembers * sizeof *grown);
        if (p->members != p->minline)
            free(p->members);
        p->members = grown;
        p->mcap *= 2;
    }
    p->members[p->nmembers++] = (member){key, value};
}

/* The root's place: first in the first chunk, with room for a container's prefix. */
static yajl_val root_of(chunk *head)
{
    return &((container *)head->data)->v;
}

/* A new value, placed in the open container (or made the root). */
static yajl_val add_value(parse_ctx *p, yajl_type type)
{
    bool is_container = type == yajl_t_object || type == yajl_t_array;
    yajl_val v;
    if (!p->have_root) {
        v = root_of(p->head); /* reserved when the arena was made */
        p->have_root = true;
    } else {
        v = is_container ? &((container *)arena_alloc(p, sizeof(container)))->v
                         : arena_alloc(p, sizeof *v);
        frame *parent = &p->open[p->depth - 1];
        push_member(p, parent->key, v);
        parent->key = NULL;
    }
    memset(v, 0, sizeof *v);
    v->type = type;
    return v;
}

static container *container_of(yajl_val v)
{
    return (container *)((unsigned char *)v - offsetof(container, v));
}

/* Copies a decoded string into the arena; refuses NUL (a decoded \u0000, which would cut the C
 * string short and merge distinct ids) and malformed UTF-8. */
static char *arena_string(parse_ctx *p, const unsigned char *s, size_t n)
{
    if (memchr(s, '\0', n)) {
        stop(p, "string contains \\u0000", 1);
        return NULL;
    }
    if (!utf8_ok(s, n)) {
        stop(p, "string is not valid UTF-8", 1);
        return NULL;
    }
    char *copy = arena_alloc(p, n + 1);
    memcpy(copy, s, n);
    copy[n] = '\0';
    return copy;
}

static int on_null(void *ctx)
{
    add_value(ctx, yajl_t_null);
    return 1;
}

static int on_boolean(void *ctx, int b)
{
    add_value(ctx, b ? yajl_t_true : yajl_t_false);
    return 1;
}

/* Numbers keep their text; the integer and double forms are set where they are exact. */
static int on_number(void *ctx, const char *s, size_t n)
{
    parse_ctx *p = ctx;
    char *text = arena_alloc(p, n + 1);
    memcpy(text, s, n);
    text[n] = '\0';
    yajl_val v = add_value(p, yajl_t_number);
    v->u.number.r = text;
    /* Integers of up to 18 digits (ids, timestamps, counts: most numbers in webhooks) without
     * strtoll and strtod: the value is exact, and converting it to double rounds it the way
     * strtod would. yajl has checked the syntax. */
    size_t digits = n - (s[0] == '-');
    if (digits <= 18 && !memchr(s, '.', n) && !memchr(s, 'e', n) && !memchr(s, 'E', n)) {
        long long i = 0;
        for (size_t k = s[0] == '-'; k < n; k++)
            i = i * 10 + (s[k] - '0');
        v->u.number.i = s[0] == '-' ? -i : i;
        v->u.number.d = s[0] == '-' ? -(double)i : (double)i; /* "-0" is -0.0, as from strtod */
        v->u.number.flags |= YAJL_NUMBER_INT_VALID | YAJL_NUMBER_DOUBLE_VALID;
        return 1;
    }
    char *end;
    errno = 0;
    v->u.number.i = strtoll(text, &end, 10);
    if (errno == 0 && *end == '\0')
        v->u.number.flags |= YAJL_NUMBER_INT_VALID;
    errno = 0;
    v->u.number.d = strtod(text, &end);
    if (errno == 0 && *end == '\0')
        v->u.number.flags |= YAJL_NUMBER_DOUBLE_VALID;
    return 1;
}

static int on_string(void *ctx, const unsigned char *s, size_t n)
{
    parse_ctx *p = ctx;
    char *copy = arena_string(p, s, n);
    if (!copy)
        return 0;
    add_value(p, yajl_t_string)->u.string = copy;
    return 1;
}

static int open_container(parse_ctx *p, yajl_type type)
{
    if (p->depth == HF_JSON_MAX_DEPTH)
        return stop(p, "nested deeper than " HF_JSON_STR(HF_JSON_MAX_DEPTH) " levels", 1);
    yajl_val node = add_value(p, type);
    /* yajl has consumed the opening bracket when it calls back. */
    container_of(node)->text = p->text + yajl_get_bytes_consumed(p->h) - 1;
    p->open[p->depth++] = (frame){node, p->nmembers, NULL};
    return 1;
}

static int on_start_map(void *ctx)
{
    return open_container(ctx, yajl_t_object);
}

static int on_start_array(void *ctx)
{
    return open_container(ctx, yajl_t_array);
}

static int on_map_key(void *ctx, const unsigned char *s, size_t n)
{
    parse_ctx *p = ctx;
    char *copy = arena_string(p, s, n);
    if (!copy)
        return 0;
    p->open[p->depth - 1].key = copy;
    return 1;
}

/* The closing bracket: the container's members move from the stacks into the arena. */
static int close_container(parse_ctx *p)
{
    frame *f = &p->open[--p->depth];
    container *c = container_of(f->node);
    c->len = (size_t)(p->text + yajl_get_bytes_consumed(p->h) - c->text);
    size_t n = p->nmembers - f->base;
    const member *m = p->members + f->base;
    yajl_val *values = n ? arena_alloc(p, n * sizeof *values) : NULL;
    for (size_t i = 0; i < n; i++)
        values[i] = m[i].value;
    if (f->node->type == yajl_t_array) {
        f->node->u.array.values = values;
        f->node->u.array.len = n;
    } else {
        const char **keys = n ? arena_alloc(p, n * sizeof *keys) : NULL;
        for (size_t i = 0; i < n; i++)
            keys[i] = m[i].key;
        f->node->u.object.keys = keys;
        f->node->u.object.values = values;
        f->node->u.object.len = n;
    }
    p->nmembers = f->base;
    return 1;
}

static int on_end(void *ctx)
{
    return close_container(ctx);
}

static const yajl_callbacks build_callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_number = on_number,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_map_key,
    .yajl_end_map = on_end,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end,
};

/* yajl's error for a failed parse, first line only (it quotes the input on later ones). */
static void yajl_reason(parse_ctx *p, const char *text, size_t len, char *err, size_t errlen)
{
    unsigned char *msg = yajl_get_error(p->h, 0, (const unsigned char *)text, len);
    char *m = (char *)msg;
    char *nl = m ? strchr(m, '\n') : NULL;
    if (nl)
        *nl = '\0';
    /* yajl names a comment only where a value may start, and calls one after the value trailing
     * garbage: say what it is in both cases. */
    size_t at = yajl_get_bytes_consumed(p->h);
    at = at > 0 ? at - 1 : 0;
    while (at < len &&
           (text[at] == ' ' || text[at] == '\t' || text[at] == '\n' || text[at] == '\r'))
        at++;
    if ((m && strstr(m, "comment")) || (at < len && text[at] == '/'))
        hf_err(err, errlen, "JSON comments are not allowed at offset %zu", at);
    else
        hf_err(err, errlen, "malformed JSON: %s", m && m[0] ? m : "parse error");
    if (msg)
        yajl_free_error(p->h, msg);
}

/* The code unit of the four hex digits at s, or -1. */
static long hex4(const char *s)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hf_hex_digit((unsigned char)s[i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* True (with the offset of its backslash) when an escaped high surrogate (\uD800-\uDBFF) is
 * not followed at once by an escaped low one. yajl turns a lone one into '?' and folds one
 * followed by any other \u escape into some astral character, so that two different texts
 * would decode the same. A backslash escapes the next character when an odd run of them ends
 * there; outside strings a backslash is refused by yajl anyway. Most bodies have no backslash
 * at all: memchr finds none. */
static bool lone_high_surrogate(const char *text, size_t len, size_t *at)
{
    const char *p = text, *end = text + len;
    while ((p = memchr(p, '\\', (size_t)(end - p))) != NULL) {
        const char *run = p;
        while (p < end && *p == '\\')
            p++;
        if ((p - run) % 2 == 0 || end - p < 5 || *p != 'u')
            continue;
        long unit = hex4(p + 1);
        if (unit < 0xD800 || unit > 0xDBFF)
            continue;
        const char *next = p + 5;
        long low = end - next >= 6 && next[0] == '\\' && next[1] == 'u' ? hex4(next + 2) : -1;
        if (low < 0xDC00 || low > 0xDFFF) {
            *at = (size_t)(p - 1 - text);
            return true;
        }
    }
    return false;
}

hf_json hf_json_parse(const char *text, size_t len, char *err, size_t errlen)
{
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        hf_err(err, errlen, "JSON contains a NUL byte at offset %zu", (size_t)(nul - text));
        return NULL;
    }
    size_t lone;
    if (lone_high_surrogate(text, len, &lone)) {
        hf_err(err, errlen, "JSON string has an unpaired UTF-16 surrogate escape at offset %zu",
               lone);
        return NULL;
    }
    parse_ctx ctx, *p = &ctx;
    p->why = NULL;
    p->have_root = false;
    p->depth = 0;
    p->members = p->minline;
    p->nmembers = 0;
    p->mcap = INLINE_SLOTS;
    /* Room for the root and, for typical documents, everything else in one chunk. */
    size_t first = ALIGN8(sizeof(container)) + (len < 512 ? 1024 : 2 * len);
    p->head = p->cur = chunk_new(first);
    p->head->used = ALIGN8(sizeof(container));
    p->text = text;
    p->h = yajl_alloc(&build_callbacks, NULL, p);
    /* yajl's defaults refuse comments and more than one value. Its UTF-8 check is left out: every
     * string and key is checked, more strictly, once decoded (arena_string). */
    yajl_config(p->h, yajl_dont_validate_strings, 1);
    yajl_status st = yajl_parse(p->h, (const unsigned char *)text, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(p->h);
    hf_json root = NULL;
    if (st == yajl_status_ok && p->have_root && p->depth == 0)
        root = root_of(p->head);
    else if (p->why)
        hf_err(err, errlen, "JSON %s at offset %zu", p->why, p->where);
    else
        yajl_reason(p, text, len, err, errlen);
    yajl_free(p->h);
    if (p->members != p->minline)
        free(p->members);
    if (!root)
        arena_free(p->head);
    return root;
}

void hf_json_free(hf_json v)
{
    if (v)
        arena_free((chunk *)((unsigned char *)container_of(v) - offsetof(chunk, data)));
}

const char *hf_json_raw(hf_json v, size_t *len)
{
    if (!YAJL_IS_OBJECT(v) && !YAJL_IS_ARRAY(v))
        return NULL;
    *len = container_of(v)->len;
    return container_of(v)->text;
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

bool hf_json_member_repeats(hf_json obj, size_t i)
{
    if (!YAJL_IS_OBJECT(obj) || i >= obj->u.object.len)
        return false;
    for (size_t k = 0; k < i; k++)
        if (strcmp(obj->u.object.keys[k], obj->u.object.keys[i]) == 0)
            return true;
    return false;
}

const char *hf_json_repeated_key(hf_json obj)
{
    for (size_t i = 0; i < hf_json_len(obj); i++)
        if (hf_json_member_repeats(obj, i))
            return obj->u.object.keys[i];
    return NULL;
}

/* True if any of the eight bytes in w must be escaped in a JSON string: a control character, a
 * quote or a backslash (the classic "has a zero byte" / "has a byte less than n" bit tricks). */
static bool word_needs_escape(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t quote = w ^ (ones * '"'), backslash = w ^ (ones * '\\');
    uint64_t control = (w - ones * 0x20) & ~w & highs;
    return (control | ((quote - ones) & ~quote & highs) |
            ((backslash - ones) & ~backslash & highs)) != 0;
}

void hf_json_append_string(hf_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    hf_buf_reserve(out, n + 2);
    hf_buf_putc(out, '"');
    size_t run = 0; /* start of the pending run of bytes that need no escaping */
    size_t i = 0;
    while (i < n) {
        uint64_t w;
        while (n - i >= 8 && (memcpy(&w, s + i, 8), !word_needs_escape(w)))
            i += 8; /* the common case: nothing to escape in the next eight bytes */
        for (size_t stop = n - i > 8 ? i + 8 : n; i < stop; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c >= 0x20 && c != '"' && c != '\\')
                continue;
            char u[7];
            const char *esc = u;
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
            else
                u[0] = '\\', u[1] = 'u', u[2] = '0', u[3] = '0', u[4] = hex[c >> 4],
                u[5] = hex[c & 15], u[6] = '\0';
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
