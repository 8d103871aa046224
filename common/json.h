/* json: parsing into arena-held yajl trees with a nesting limit, typed getters, and compact
 * serialisation. */
#ifndef HF_JSON_H
#define HF_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <yajl/yajl_tree.h>
#include "util.h"

typedef yajl_val hf_json;

#define HF_JSON_MAX_DEPTH 64

/* Parses len bytes (need not be NUL-terminated). NULL with a reason (and byte offset where
 * known) in err on malformed JSON, invalid UTF-8, embedded NUL or nesting deeper than
 * HF_JSON_MAX_DEPTH. The whole tree lives in one arena: caller frees it with hf_json_free, and
 * must not free, splice or grow any part of it separately. */
hf_json hf_json_parse(const char *text, size_t len, char *err, size_t errlen);
/* Frees a tree returned by hf_json_parse (only those; NULL is fine). */
void hf_json_free(hf_json v);

/* The text of an object or array exactly as it was in the input of hf_json_parse (len bytes, not
 * NUL-terminated): it points into that input, so it is valid only while the caller keeps the
 * input. NULL for other values. */
const char *hf_json_raw(hf_json v, size_t *len);

/* Object member by key, NULL if v is not an object or has no such key. */
hf_json hf_json_get(hf_json v, const char *key);
/* Follows a NULL-terminated list of keys. */
hf_json hf_json_path(hf_json v, ...) __attribute__((sentinel));

/* A string's value, NULL if v is not a string. */
const char *hf_json_str(hf_json v);
/* An integer's value; false if v is not an integral number. */
bool hf_json_int(hf_json v, long long *out);
/* The raw text of a number (exactly as received), NULL if not a number. */
const char *hf_json_number_text(hf_json v);
/* Scalars as text: strings as-is, numbers as received, true/false; NULL for others. */
const char *hf_json_scalar_text(hf_json v);

bool hf_json_is_object(hf_json v);
bool hf_json_is_array(hf_json v);
size_t hf_json_len(hf_json v); /* array length or object member count, 0 otherwise */
hf_json hf_json_at(hf_json arr, size_t i);
/* The i-th member of an object (key in *key). */
hf_json hf_json_member(hf_json obj, size_t i, const char **key);
/* Whether member i of obj has the key of an earlier member. The parser keeps repeated members
 * and hf_json_get finds the first, so whoever must refuse them (a JWT, an envelope, a request
 * body) asks here. */
bool hf_json_member_repeats(hf_json obj, size_t i);
/* The first key of obj that repeats an earlier member's, or NULL (also when obj is no object). */
const char *hf_json_repeated_key(hf_json obj);

/* Appends v as compact JSON. */
void hf_json_serialize(hf_json v, hf_buf *out);
/* Appends s (n bytes) as a quoted, escaped JSON string. */
void hf_json_append_string(hf_buf *out, const char *s, size_t n);
static inline void hf_json_append_cstr(hf_buf *out, const char *s)
{
    hf_json_append_string(out, s, __builtin_strlen(s));
}

#endif
