/* secrets: the secure configuration store, one file per secret under HOOKFLOW_SECRETS_DIR. */
#ifndef HF_SECRETS_H
#define HF_SECRETS_H

#include <stdbool.h>
#include <stddef.h>
#include "util.h"

typedef struct hf_secrets hf_secrets;

/* Reads every regular file below dir (e.g. xero/webhook_key, xero/webhook_key.previous,
 * twilio/accounts/AC123/auth_token), strips one trailing newline from each value and registers
 * every value with the log for redaction. Unreadable files are an error. A missing dir gives an
 * empty store. Caller frees with hf_secrets_free. */
hf_secrets *hf_secrets_load(const char *dir, char *err, size_t errlen);

/* An empty store, and setting one value (tests). */
hf_secrets *hf_secrets_new(void);
void hf_secrets_set(hf_secrets *s, const char *path, const void *value, size_t len);

void hf_secrets_free(hf_secrets *s);

/* The current value of path ("xero/webhook_key") then, if present, path.previous: returns how
 * many were found (0, 1 or 2) and fills vals/lens. Values are not NUL-terminated-safe binary;
 * they stay valid until the store is freed. */
size_t hf_secrets_get(const hf_secrets *s, const char *path, const char *vals[2], size_t lens[2]);

/* True when path itself (not path.previous) holds a non-empty value. Webhook verification
 * accepts .previous alone (mid-rotation, deliveries signed with the old key keep arriving);
 * keys that sign or encrypt (engine/token_key, api/jwt_key) refuse to start without the current
 * one. */
bool hf_secrets_has(const hf_secrets *s, const char *path);

/* Number of values loaded. */
size_t hf_secrets_count(const hf_secrets *s);

#endif
