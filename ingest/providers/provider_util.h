/* provider_util: small helpers shared by the xero, quickbooks and hubspot modules (secret lookup
 * with rotation, digest checks, timestamp normalisation, JSON scalars as text). */
#ifndef INGEST_PROVIDER_UTIL_H
#define INGEST_PROVIDER_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h"
#include "provider.h"

/* The current and .previous values of one secret. */
typedef struct provider_util_keys {
    const char *vals[2];
    size_t lens[2];
    size_t n;
} provider_util_keys;

/* True for POST; otherwise fails res with 405 "method_not_allowed". */
bool provider_util_require_post(const ingest_request *req, ingest_result *res);

/* Loads secret path ("xero/webhook_key") into keys; when neither the current nor the .previous
 * value is configured, fails res with 503 "missing_secret" and returns false. */
bool provider_util_load_keys(const ingest_request *req, const char *path, provider_util_keys *keys,
                             ingest_result *res);

/* The request header, or NULL when absent (or when the request has no header lookup). */
const char *provider_util_header(const ingest_request *req, const char *name);

/* The body as text for parsers; an empty body may come with a NULL pointer. */
const char *provider_util_body_text(const ingest_request *req);

/* The current and .previous values of a secret (0, 1 or 2), or 0 when the request carries no
 * secrets store. */
size_t provider_util_get_keys(const ingest_request *req, const char *path, const char *vals[2],
                              size_t lens[2]);

/* True when given (given_len bytes) is the HMAC-SHA256 of body under any of keys. Every key is
 * tried (no early exit) and digests are compared in constant time. */
bool provider_util_hmac_matches(const provider_util_keys *keys, const unsigned char *given,
                                size_t given_len, const unsigned char *body, size_t body_len);

/* True when given (given_len bytes) equals any of keys (a shared secret or verify token sent as
 * is), compared in constant time whatever the lengths. */
bool provider_util_secret_matches(const provider_util_keys *keys, const char *given,
                                  size_t given_len);

/* The same with the digest as base64 text (sig_b64). */
bool provider_util_hmac_b64_matches(const provider_util_keys *keys, const char *sig_b64,
                                    const unsigned char *body, size_t body_len);

/* Verifies a body signed as base64 HMAC-SHA256 in header with the secret at secret_path (Xero,
 * QuickBooks). Fails res (503 missing_secret, 401 missing_signature or bad_signature) and returns
 * false when it is not. */
bool provider_util_signed_b64(const ingest_request *req, const char *secret_path,
                              const char *header, ingest_result *res);

/* The body parsed as JSON (free with hf_json_free); NULL after failing res with 400 "malformed"
 * and the parser's reason. */
hf_json provider_util_parse_body(const ingest_request *req, ingest_result *res);

/* s without leading and trailing blanks (spaces, tabs): the start, and its length in *len. */
const char *provider_util_trim_blanks(const char *s, size_t *len);

/* The time s normalised to RFC 3339 UTC with milliseconds (malloc'd), or NULL if s is NULL or
 * does not parse. */
char *provider_util_time_normalise(const char *s);

/* Epoch milliseconds as RFC 3339 UTC (malloc'd), or NULL outside years 1970-9999. */
char *provider_util_time_from_ms(long long ms);

/* A non-empty string's value or a number's text as received; NULL for anything else. Used for
 * ids that platforms send as either. */
const char *provider_util_id_text(hf_json v);

/* An event's payload (malloc'd): the text of v exactly as the platform sent it when v is an object
 * or array of the request body being handled (no re-serialising), else its compact JSON. */
char *provider_util_payload(hf_json v);

#endif
