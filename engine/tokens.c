/* tokens: the connections' OAuth tokens encrypted at rest (AES-256-GCM under the token key from
 * the secrets store, bound to the row they belong to). */
#include "tokens.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"

/* Versioned so that a later scheme (another cipher, a key id) can be told apart. */
#define TOKEN_AAD_PREFIX "hookflow-token:v1:"

#define KEY_B64_CHARS 44
#define KEY_HEX_CHARS 64

struct engine_keyring {
    unsigned char current[ENGINE_TOKEN_KEY_LEN];
    unsigned char previous[ENGINE_TOKEN_KEY_LEN];
    bool has_previous;
};

int engine_token_key_parse(const char *text, size_t len, const char *name,
                           unsigned char key[ENGINE_TOKEN_KEY_LEN], char *err, size_t errlen)
{
    /* Editors and `echo` add newlines, copy-paste adds spaces: neither is part of the key. */
    while (len > 0 && isspace((unsigned char)text[0])) {
        text++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--;
    if (len == 0)
        return hf_err(err, errlen,
                      "%s is empty; it must hold 32 random bytes as base64 (e.g. "
                      "`openssl rand -base64 32`) or as 64 hex digits",
                      name);

    if (len == KEY_HEX_CHARS) {
        for (size_t i = 0; i < len; i++)
            if (hf_hex_digit((unsigned char)text[i]) < 0)
                return hf_err(err, errlen,
                              "%s has 64 characters but they are not all hex digits (character "
                              "%zu is not); expected 64 hex digits or 44 characters of base64",
                              name, i + 1);
        (void)hf_hex_decode(text, len, key, ENGINE_TOKEN_KEY_LEN); /* checked just above */
        return 0;
    }
    if (len == KEY_B64_CHARS) {
        unsigned char buf[ENGINE_TOKEN_KEY_LEN + 2];
        long n = hf_base64_decode(text, len, buf, sizeof buf);
        if (n < 0) {
            explicit_bzero(buf, sizeof buf);
            return hf_err(err, errlen,
                          "%s has 44 characters but is not valid base64; expected 32 bytes as "
                          "base64 (e.g. `openssl rand -base64 32`) or as 64 hex digits",
                          name);
        }
        if (n != ENGINE_TOKEN_KEY_LEN) {
            explicit_bzero(buf, sizeof buf);
            return hf_err(err, errlen, "%s decodes to %ld bytes as base64; the key must be 32",
                          name, n);
        }
        memcpy(key, buf, ENGINE_TOKEN_KEY_LEN);
        explicit_bzero(buf, sizeof buf);
        return 0;
    }
    return hf_err(err, errlen,
                  "%s holds %zu characters; expected 32 bytes as 44 characters of base64 (e.g. "
                  "`openssl rand -base64 32`) or as 64 hex digits",
                  name, len);
}

engine_keyring *engine_keyring_from_raw(const unsigned char key[ENGINE_TOKEN_KEY_LEN])
{
    engine_keyring *k = xcalloc(1, sizeof *k);
    memcpy(k->current, key, ENGINE_TOKEN_KEY_LEN);
    return k;
}

void engine_keyring_set_previous(engine_keyring *k, const unsigned char key[ENGINE_TOKEN_KEY_LEN])
{
    memcpy(k->previous, key, ENGINE_TOKEN_KEY_LEN);
    k->has_previous = true;
}

bool engine_keyring_has_previous(const engine_keyring *k)
{
    return k->has_previous;
}

void engine_keyring_free(engine_keyring *k)
{
    if (!k)
        return;
    /* volatile so the wipe of memory about to be freed is not optimised away */
    volatile unsigned char *p = (volatile unsigned char *)k;
    for (size_t i = 0; i < sizeof *k; i++)
        p[i] = 0;
    free(k);
}

engine_keyring *engine_keyring_load(const hf_secrets *s, char *err, size_t errlen)
{
    const char *vals[2] = {NULL, NULL};
    size_t lens[2] = {0, 0};
    size_t n = s ? hf_secrets_get(s, ENGINE_TOKEN_KEY_PATH, vals, lens) : 0;
    if (!s || !hf_secrets_has(s, ENGINE_TOKEN_KEY_PATH)) {
        hf_err(err, errlen,
               "%s is missing or empty in the secrets store (HOOKFLOW_SECRETS_DIR): it must hold "
               "32 random bytes as base64 (e.g. `openssl rand -base64 32`) or as 64 hex digits",
               ENGINE_TOKEN_KEY_PATH);
        return NULL;
    }

    unsigned char key[ENGINE_TOKEN_KEY_LEN];
    if (engine_token_key_parse(vals[0], lens[0], ENGINE_TOKEN_KEY_PATH, key, err, errlen) != 0)
        return NULL;
    engine_keyring *k = engine_keyring_from_raw(key);
    if (n == 2) {
        if (engine_token_key_parse(vals[1], lens[1], ENGINE_TOKEN_KEY_PREVIOUS_PATH, key, err,
                                   errlen) != 0) {
            explicit_bzero(key, sizeof key);
            engine_keyring_free(k);
            return NULL;
        }
        engine_keyring_set_previous(k, key);
    }
    explicit_bzero(key, sizeof key);
    return k;
}

hf_secrets *engine_secrets_reload(const char *dir, bool had_key, engine_keyring **keys, char *err,
                                  size_t errlen)
{
    *keys = NULL;
    hf_secrets *s = hf_secrets_load(dir, err, errlen);
    if (!s)
        return NULL;
    *keys = engine_keyring_load(s, err, errlen);
    if (!*keys && had_key) {
        hf_secrets_free(s);
        return NULL;
    }
    return s;
}

char *engine_token_context(const char *connector, const char *account, const char *slot)
{
    return xasprintf("%s:%s:%s", connector, account, slot);
}

/* The AAD of context: the versioned prefix then the context. Caller frees. */
static char *token_aad(const char *context, size_t *len)
{
    char *aad = xasprintf(TOKEN_AAD_PREFIX "%s", context);
    *len = strlen(aad);
    return aad;
}

unsigned char *engine_token_seal(const engine_keyring *k, const char *context, const char *token,
                                 size_t *outlen)
{
    size_t aadlen;
    char *aad = token_aad(context, &aadlen);
    unsigned char *sealed = hf_aead_seal(k->current, token, strlen(token), aad, aadlen, outlen);
    free(aad);
    return sealed;
}

/* Opens with one key; NULL if it does not fit or the plaintext is no C string. */
static char *open_with(const unsigned char key[ENGINE_TOKEN_KEY_LEN], const char *aad,
                       size_t aadlen, const unsigned char *sealed, size_t len)
{
    size_t plainlen = 0;
    unsigned char *plain = hf_aead_open(key, sealed, len, aad, aadlen, &plainlen);
    if (plain && memchr(plain, '\0', plainlen)) {
        /* Sealed tokens come from C strings; an embedded NUL would silently truncate one. */
        explicit_bzero(plain, plainlen);
        free(plain);
        return NULL;
    }
    return (char *)plain;
}

char *engine_token_open_ex(const engine_keyring *k, const char *context,
                           const unsigned char *sealed, size_t len, bool *with_previous)
{
    size_t aadlen;
    char *aad = token_aad(context, &aadlen);
    bool previous = false;
    char *token = open_with(k->current, aad, aadlen, sealed, len);
    if (!token && k->has_previous) {
        token = open_with(k->previous, aad, aadlen, sealed, len);
        previous = token != NULL;
    }
    free(aad);
    if (with_previous)
        *with_previous = previous;
    return token;
}

char *engine_token_open(const engine_keyring *k, const char *context, const unsigned char *sealed,
                        size_t len)
{
    return engine_token_open_ex(k, context, sealed, len, NULL);
}
