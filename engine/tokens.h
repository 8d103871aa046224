/* tokens: the connections' OAuth tokens encrypted at rest (AES-256-GCM under the token key from
 * the secrets store, bound to the row they belong to). */
#ifndef ENGINE_TOKENS_H
#define ENGINE_TOKENS_H

#include <stdbool.h>
#include <stddef.h>

#include "secrets.h"
#include "util.h"

/* Secret-store paths of the key: the current one seals and opens; the previous one (during a
 * rotation) only opens. Each file holds 32 bytes as 44 characters of base64 or 64 hex digits. */
#define ENGINE_TOKEN_KEY_PATH "engine/token_key"
#define ENGINE_TOKEN_KEY_PREVIOUS_PATH "engine/token_key.previous"
#define ENGINE_TOKEN_KEY_LEN 32

/* Bytes a sealed token adds to the plaintext: 12-byte nonce before, 16-byte tag after. */
#define ENGINE_TOKEN_OVERHEAD (12 + 16)

typedef struct engine_keyring engine_keyring;

/* Loads engine/token_key (and engine/token_key.previous when present) from the store. NULL with
 * one line in err when the current key is missing or either file is malformed; the line names
 * the file and the reason (length, alphabet, decoded size) but never any of its characters.
 * Caller frees with engine_keyring_free. */
engine_keyring *engine_keyring_load(const hf_secrets *s, char *err, size_t errlen);

/* A keyring holding just key (tests, tools). Caller frees. */
engine_keyring *engine_keyring_from_raw(const unsigned char key[ENGINE_TOKEN_KEY_LEN]);

/* Adds key as the previous key (replacing one already there), for rotation tests. */
void engine_keyring_set_previous(engine_keyring *k, const unsigned char key[ENGINE_TOKEN_KEY_LEN]);

/* True when the keyring holds a previous key besides the current one. */
bool engine_keyring_has_previous(const engine_keyring *k);

/* Wipes the keys and frees k (NULL is fine). */
void engine_keyring_free(engine_keyring *k);

/* A SIGHUP's reload: the store at dir and its keyring (*keys; NULL when the store has no usable
 * token key, err then says why). Refused (NULL, one line in err) when the directory cannot be read,
 * or when had_key and the new token key is missing or malformed: a reload must not take away the
 * key the stored tokens need (a process started without one only warns; one that has it keeps what
 * it had). */
hf_secrets *engine_secrets_reload(const char *dir, bool had_key, engine_keyring **keys, char *err,
                                  size_t errlen);

/* Parses the text of a key file (surrounding whitespace ignored) into key. name is the file's
 * name for the error line. Returns 0, or -1 with a reason that never quotes the text. */
HF_MUST_CHECK int engine_token_key_parse(const char *text, size_t len, const char *name,
                                         unsigned char key[ENGINE_TOKEN_KEY_LEN], char *err,
                                         size_t errlen);

/* Seals token under the current key with AAD "hookflow-token:v1:" + context, where context names
 * the row and the slot ("<connector>:<account>:access" or ":refresh"), so a ciphertext copied to
 * another row or slot does not open. Returns nonce || ciphertext || tag
 * (strlen(token) + ENGINE_TOKEN_OVERHEAD bytes, in *outlen); the caller frees it. */
unsigned char *engine_token_seal(const engine_keyring *k, const char *context, const char *token,
                                 size_t *outlen);

/* Opens what engine_token_seal made for the same context, trying the current key then the
 * previous one. Returns the NUL-terminated token (caller frees; wipe it first if it lingers), or
 * NULL when the bytes were tampered with, belong to another context, or no key of k fits. */
char *engine_token_open(const engine_keyring *k, const char *context, const unsigned char *sealed,
                        size_t len);

/* engine_token_open that also says, in *with_previous (may be NULL), whether only the previous
 * key opened it, i.e. the token should be sealed again under the current key. */
char *engine_token_open_ex(const engine_keyring *k, const char *context,
                           const unsigned char *sealed, size_t len, bool *with_previous);

/* The AAD-bound context of a token slot: "<connector>:<account>:<slot>". Caller frees. */
char *engine_token_context(const char *connector, const char *account, const char *slot);

#endif
