/* form: application/x-www-form-urlencoded bodies and query strings (Twilio's parameters, Meta's
 * handshake), decoded into name/value pairs. */
#ifndef INGEST_FORM_H
#define INGEST_FORM_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

/* One decoded pair. name and value are malloc'd, NUL-terminated, and may hold embedded NULs
 * (from %00), so the lengths are authoritative. */
typedef struct ingest_form_param {
    char *name;
    size_t name_len;
    char *value;
    size_t value_len;
} ingest_form_param;

/* The pairs in the order received. Zero-initialise, fill with ingest_form_parse, release with
 * ingest_form_free. */
typedef struct ingest_form {
    ingest_form_param *params;
    size_t n, cap;
} ingest_form;

/* Appends the pairs of len bytes of s (need not be NUL-terminated). '&' separates pairs, the
 * first '=' separates name from value (a pair without '=' has an empty value), '+' decodes to a
 * space and %XX to its byte; a '%' not followed by two hex digits stays as it is, as browsers and
 * the common server frameworks do, so any input parses. Empty segments are skipped. */
void ingest_form_parse(ingest_form *f, const char *s, size_t len);

/* Releases every pair; f is left empty and reusable. */
void ingest_form_free(ingest_form *f);

/* The first value of name (exact, case-sensitive), or NULL; valid until f is freed. */
const ingest_form_param *ingest_form_find(const ingest_form *f, const char *name);
const char *ingest_form_get(const ingest_form *f, const char *name);

/* Orders the pairs by name, then value, comparing bytes as unsigned (strcmp order, with a
 * shorter string first when it is a prefix of the other), and drops exact duplicates: the
 * canonical order Twilio signs. */
void ingest_form_sort_dedup(ingest_form *f);

/* True when every name and value is valid UTF-8 without NUL bytes; otherwise writes which pair
 * (by position, never its content) into err. */
bool ingest_form_check_text(const ingest_form *f, char *err, size_t errlen);

/* Appends the pairs as a compact JSON object with the names in byte order: a name received once
 * maps to a string, a repeated name to an array of its strings in the order received. The pairs
 * must have passed ingest_form_check_text. f itself is not reordered. */
void ingest_form_to_json(const ingest_form *f, hf_buf *out);

/* True when len bytes of s are valid UTF-8 (shortest forms, no surrogates, <= U+10FFFF). */
bool ingest_utf8_valid(const char *s, size_t len);

#endif
