/* provider_request: request building, signing, secrets and result invariants shared by the
 * provider unit tests and fuzz targets (no cmocka here, so fuzz targets can link it). */
#ifndef HF_TEST_PROVIDER_REQUEST_H
#define HF_TEST_PROVIDER_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "provider.h"
#include "secrets.h"

/* A provider's webhook path and public URL, as the ingest server builds them. */
#define PR_PATH(id) "/api/integrations/webhooks/" id
#define PR_URL(id) "https://hooks.example.com" PR_PATH(id)

/* Header lookup over req->header_ctx, a NULL-terminated name, value, name, value... list. */
const char *pr_table_header(const ingest_request *req, const char *name);

/* Runs provider's handle() on one request into res (zeroed first); query may be NULL, headers
 * is a name, value... list for pr_table_header (or NULL). */
void pr_call(const ingest_provider *provider, const char *method, const char *path,
             const char *query, const char *url, const void *body, size_t body_len,
             const char *const *headers, const hf_secrets *secrets, int64_t now_ms,
             ingest_result *res);

/* base64 HMAC-SHA256(key, data) into out (>= 45 bytes). */
void pr_hmac_b64(const char *key, const void *data, size_t len, char *out);

/* Lowercase hex HMAC-SHA256(key, data) into out (>= 65 bytes). */
void pr_hmac_hex(const char *key, const void *data, size_t len, char *out);

/* POSTs body to provider's webhook endpoint at now_ms, with header name carrying pr_hmac_b64(key,
 * body) (key NULL: no headers at all). */
void pr_call_signed_b64(const ingest_provider *provider, const char *header, const char *body,
                        const char *key, const hf_secrets *secrets, int64_t now_ms,
                        ingest_result *res);

/* A secrets store with path = current and path.previous = previous (NULL: not set). */
hf_secrets *pr_secrets(const char *path, const char *current, const char *previous);

/* Splits the first line off *rest into a malloc'd string (stops at a NUL). */
char *pr_take_line(const uint8_t **rest, size_t *len);

/* An exact-size malloc'd copy of a fuzz input, so any read past the body is caught. */
unsigned char *pr_copy_body(const uint8_t *data, size_t len);

/* Aborts (a fuzz finding) unless ok. */
void pr_check(int ok);

/* Status in range, a reason, and no events on a non-2xx status. */
void pr_check_status(const ingest_result *res);

/* Every event has its required fields, an id starting with prefix and an object payload. */
void pr_check_events(const ingest_result *res, const char *prefix);

/* pr_check_status, no response body, and pr_check_events. */
void pr_check_result(const ingest_result *res, const char *prefix);

/* One fuzz input for a provider that signs the raw body as pr_hmac_b64 in one header (Xero,
 * QuickBooks). The first byte picks the request: 0/1 signed with key/old_key, 2 unsigned, 3 the
 * first line is the signature header, 4 no secrets, 5 GET. Checks pr_check_result (id prefix
 * "<provider id>:") and the status each mode implies; keys holds key and old_key. */
void pr_fuzz_b64_signed(const ingest_provider *provider, const char *header, const char *key,
                        const char *old_key, const hf_secrets *keys, const uint8_t *data,
                        size_t size);

#endif
