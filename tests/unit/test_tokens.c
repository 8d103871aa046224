/* test_tokens: sealing connection tokens (AAD binding, tamper detection, key rotation) and
 * parsing the token key file, whose errors must never show the key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "crypto.h"
#include "secrets.h"
#include "tokens.h"

static const unsigned char key_a[32] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};
static const unsigned char key_b[32] = {
    0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87, 0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d, 0x1e, 0x0f,
    0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00};

#define TOKEN "EAAGm0PX4ZCpsBAKZC-page-token-0123456789"
#define CTX_ACCESS "meta:104877:access"

/* True if needle (n bytes) occurs in hay (m bytes). */
static bool contains(const void *hay, size_t m, const void *needle, size_t n)
{
    if (n == 0 || n > m)
        return false;
    for (size_t i = 0; i + n <= m; i++)
        if (memcmp((const char *)hay + i, needle, n) == 0)
            return true;
    return false;
}

static void round_trip(void **state)
{
    (void)state;
    engine_keyring *k = engine_keyring_from_raw(key_a);
    size_t len = 0;
    unsigned char *sealed = engine_token_seal(k, CTX_ACCESS, TOKEN, &len);
    assert_int_equal(len, strlen(TOKEN) + ENGINE_TOKEN_OVERHEAD);
    assert_int_equal(len, 12 + strlen(TOKEN) + 16);
    assert_false(contains(sealed, len, TOKEN, strlen(TOKEN)));
    assert_false(contains(sealed, len, "page-token", 10));
    char *plain = engine_token_open(k, CTX_ACCESS, sealed, len);
    assert_non_null(plain);
    assert_string_equal(plain, TOKEN);
    free(plain);

    /* A fresh nonce each time: sealing twice never gives the same bytes. */
    size_t len2 = 0;
    unsigned char *again = engine_token_seal(k, CTX_ACCESS, TOKEN, &len2);
    assert_int_equal(len2, len);
    assert_memory_not_equal(again, sealed, len);
    free(again);

    /* The empty token is still a token. */
    unsigned char *empty = engine_token_seal(k, CTX_ACCESS, "", &len2);
    assert_int_equal(len2, ENGINE_TOKEN_OVERHEAD);
    plain = engine_token_open(k, CTX_ACCESS, empty, len2);
    assert_non_null(plain);
    assert_string_equal(plain, "");
    free(plain);
    free(empty);

    free(sealed);
    engine_keyring_free(k);
}

static void wrong_context_fails(void **state)
{
    (void)state;
    engine_keyring *k = engine_keyring_from_raw(key_a);
    size_t len = 0;
    unsigned char *sealed = engine_token_seal(k, CTX_ACCESS, TOKEN, &len);
    static const char *const others[] = {
        "meta:104877:refresh", /* the other slot of the same row */
        "meta:104878:access",  /* another account */
        "hubspot:104877:access", "meta:104877:access ", "",
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        assert_null(engine_token_open(k, others[i], sealed, len));
    char *ctx = engine_token_context("meta", "104877", "access");
    assert_string_equal(ctx, CTX_ACCESS);
    char *plain = engine_token_open(k, ctx, sealed, len);
    assert_non_null(plain);
    free(plain);
    free(ctx);
    free(sealed);
    engine_keyring_free(k);
}

static void tampered_bytes_fail(void **state)
{
    (void)state;
    engine_keyring *k = engine_keyring_from_raw(key_a);
    size_t len = 0;
    unsigned char *sealed = engine_token_seal(k, CTX_ACCESS, TOKEN, &len);
    /* Every byte matters: nonce, ciphertext and tag. */
    for (size_t i = 0; i < len; i++) {
        sealed[i] ^= 0x01;
        assert_null(engine_token_open(k, CTX_ACCESS, sealed, len));
        sealed[i] ^= 0x01;
    }
    /* Truncated or shorter than nonce + tag. */
    assert_null(engine_token_open(k, CTX_ACCESS, sealed, len - 1));
    assert_null(engine_token_open(k, CTX_ACCESS, sealed, ENGINE_TOKEN_OVERHEAD - 1));
    assert_null(engine_token_open(k, CTX_ACCESS, sealed, 0));
    char *plain = engine_token_open(k, CTX_ACCESS, sealed, len);
    assert_non_null(plain);
    free(plain);
    free(sealed);
    engine_keyring_free(k);
}

static void wrong_key_fails(void **state)
{
    (void)state;
    engine_keyring *a = engine_keyring_from_raw(key_a), *b = engine_keyring_from_raw(key_b);
    size_t len = 0;
    unsigned char *sealed = engine_token_seal(a, CTX_ACCESS, TOKEN, &len);
    assert_null(engine_token_open(b, CTX_ACCESS, sealed, len));
    free(sealed);
    engine_keyring_free(a);
    engine_keyring_free(b);
}

static void previous_key_decrypts(void **state)
{
    (void)state;
    engine_keyring *old = engine_keyring_from_raw(key_a);
    size_t len = 0;
    unsigned char *sealed_old = engine_token_seal(old, CTX_ACCESS, TOKEN, &len);

    /* After rotation: key_b current, key_a previous. */
    engine_keyring *rotated = engine_keyring_from_raw(key_b);
    assert_false(engine_keyring_has_previous(rotated));
    engine_keyring_set_previous(rotated, key_a);
    assert_true(engine_keyring_has_previous(rotated));
    bool with_previous = false;
    char *plain = engine_token_open_ex(rotated, CTX_ACCESS, sealed_old, len, &with_previous);
    assert_non_null(plain);
    assert_string_equal(plain, TOKEN);
    assert_true(with_previous);
    free(plain);

    /* New seals use the current key only: the old keyring cannot open them, a keyring holding
     * just the new key can, and they are not reported as needing a reseal. */
    size_t len_new = 0;
    unsigned char *sealed_new = engine_token_seal(rotated, CTX_ACCESS, TOKEN, &len_new);
    assert_null(engine_token_open(old, CTX_ACCESS, sealed_new, len_new));
    engine_keyring *only_new = engine_keyring_from_raw(key_b);
    plain = engine_token_open(only_new, CTX_ACCESS, sealed_new, len_new);
    assert_non_null(plain);
    free(plain);
    plain = engine_token_open_ex(rotated, CTX_ACCESS, sealed_new, len_new, &with_previous);
    assert_non_null(plain);
    assert_false(with_previous);
    free(plain);
    /* Without the previous key the old ciphertext is lost. */
    assert_null(engine_token_open(only_new, CTX_ACCESS, sealed_old, len));

    free(sealed_old);
    free(sealed_new);
    engine_keyring_free(old);
    engine_keyring_free(rotated);
    engine_keyring_free(only_new);
}

/* The base64 and hex forms of key_a. */
static void key_texts(char b64[64], char hex[80])
{
    hf_base64_encode(key_a, sizeof key_a, b64);
    hf_hex_encode(key_a, sizeof key_a, hex);
    assert_int_equal(strlen(b64), 44);
    assert_int_equal(strlen(hex), 64);
}

static void key_parse_accepts_base64_and_hex(void **state)
{
    (void)state;
    char b64[64], hex[80], err[512];
    key_texts(b64, hex);
    unsigned char key[32];

    memset(key, 0, sizeof key);
    assert_int_equal(engine_token_key_parse(b64, strlen(b64), "k", key, err, sizeof err), 0);
    assert_memory_equal(key, key_a, 32);

    memset(key, 0, sizeof key);
    assert_int_equal(engine_token_key_parse(hex, strlen(hex), "k", key, err, sizeof err), 0);
    assert_memory_equal(key, key_a, 32);

    char upper[80];
    for (size_t i = 0; i <= strlen(hex); i++)
        upper[i] = (char)((hex[i] >= 'a' && hex[i] <= 'f') ? hex[i] - 32 : hex[i]);
    memset(key, 0, sizeof key);
    assert_int_equal(engine_token_key_parse(upper, strlen(upper), "k", key, err, sizeof err), 0);
    assert_memory_equal(key, key_a, 32);

    /* Trailing newline (and CRLF, spaces) as editors and echo leave them. */
    char padded[128];
    snprintf(padded, sizeof padded, "  %s\r\n\n", b64);
    memset(key, 0, sizeof key);
    assert_int_equal(engine_token_key_parse(padded, strlen(padded), "k", key, err, sizeof err), 0);
    assert_memory_equal(key, key_a, 32);
}

/* Parsing text must fail with a message that contains want, names the file, and quotes none of
 * the text. */
static void expect_key_error(const char *text, const char *want)
{
    char err[512] = "";
    unsigned char key[32];
    int rc = engine_token_key_parse(text, strlen(text), "engine/token_key", key, err, sizeof err);
    if (rc == 0)
        fail_msg("accepted %zu characters", strlen(text));
    if (!strstr(err, want))
        fail_msg("error '%s' lacks '%s'", err, want);
    assert_non_null(strstr(err, "engine/token_key"));
    assert_null(strchr(err, '\n'));
    /* No run of 6 characters of the key text (past leading spaces) shows up in the error. */
    size_t n = strlen(text);
    for (size_t i = 0; i + 6 <= n; i++) {
        if (text[i] == ' ' || text[i + 5] == ' ')
            continue;
        if (contains(err, strlen(err), text + i, 6))
            fail_msg("error '%s' quotes the key text", err);
    }
}

static void key_parse_rejects_bad_files(void **state)
{
    (void)state;
    char b64[64], hex[80];
    key_texts(b64, hex);

    expect_key_error("", "is empty");
    expect_key_error("\n", "is empty");
    /* Wrong lengths: a 16-byte key in both forms, and one character short/long. */
    expect_key_error("AAECAwQFBgcICQoLDA0ODw==", "holds 24 characters");
    expect_key_error("000102030405060708090a0b0c0d0e0f", "holds 32 characters");
    char shorter[80];
    snprintf(shorter, sizeof shorter, "%.63s", hex);
    expect_key_error(shorter, "holds 63 characters");
    char longer[96];
    snprintf(longer, sizeof longer, "%s0", hex);
    expect_key_error(longer, "holds 65 characters");
    /* The right lengths but garbage. */
    char not_hex[80];
    snprintf(not_hex, sizeof not_hex, "%s", hex);
    not_hex[10] = 'g';
    expect_key_error(not_hex, "not all hex digits (character 11");
    char not_b64[64];
    snprintf(not_b64, sizeof not_b64, "%s", b64);
    not_b64[5] = '*';
    expect_key_error(not_b64, "not valid base64");
    /* 44 base64 characters without padding decode to 33 bytes. */
    expect_key_error("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZn", "decodes to 33 bytes");
    expect_key_error("qwertyuiop-asdfghjkl-zxcvbnm-qwertyuiop-asdf", "not valid base64");
    expect_key_error("correct horse battery staple", "holds 28 characters");
}

static void keyring_load_from_store(void **state)
{
    (void)state;
    char b64[64], hex[80], err[512];
    key_texts(b64, hex);
    char b64_b[64];
    hf_base64_encode(key_b, sizeof key_b, b64_b);

    /* Missing: an empty store, NULL, or only a previous key. */
    hf_secrets *s = hf_secrets_new();
    assert_null(engine_keyring_load(s, err, sizeof err));
    assert_non_null(strstr(err, "engine/token_key is missing"));
    assert_null(engine_keyring_load(NULL, err, sizeof err));
    assert_non_null(strstr(err, "engine/token_key is missing"));
    hf_secrets_set(s, "engine/token_key.previous", b64, strlen(b64));
    assert_null(engine_keyring_load(s, err, sizeof err));
    assert_non_null(strstr(err, "engine/token_key is missing"));

    /* Current key_b (hex would do as well) and previous key_a. */
    hf_secrets_set(s, "engine/token_key", b64_b, strlen(b64_b));
    engine_keyring *k = engine_keyring_load(s, err, sizeof err);
    assert_non_null(k);
    assert_true(engine_keyring_has_previous(k));
    engine_keyring *old = engine_keyring_from_raw(key_a);
    size_t len = 0;
    unsigned char *sealed = engine_token_seal(old, CTX_ACCESS, TOKEN, &len);
    char *plain = engine_token_open(k, CTX_ACCESS, sealed, len);
    assert_non_null(plain);
    free(plain);
    free(sealed);
    sealed = engine_token_seal(k, CTX_ACCESS, TOKEN, &len);
    assert_null(engine_token_open(old, CTX_ACCESS, sealed, len));
    free(sealed);
    engine_keyring_free(old);
    engine_keyring_free(k);

    /* A malformed previous key is an error naming that file. */
    hf_secrets_set(s, "engine/token_key.previous", "0123", 4);
    assert_null(engine_keyring_load(s, err, sizeof err));
    assert_non_null(strstr(err, "engine/token_key.previous holds 4 characters"));
    /* A malformed current key names the current file. */
    hf_secrets_set(s, "engine/token_key.previous", hex, strlen(hex));
    hf_secrets_set(s, "engine/token_key", "not-a-key", 9);
    assert_null(engine_keyring_load(s, err, sizeof err));
    assert_non_null(strstr(err, "engine/token_key holds 9 characters"));
    assert_null(strstr(err, "not-a-key"));
    hf_secrets_free(s);

    /* Only the current key: no previous. */
    s = hf_secrets_new();
    hf_secrets_set(s, "engine/token_key", hex, strlen(hex));
    k = engine_keyring_load(s, err, sizeof err);
    assert_non_null(k);
    assert_false(engine_keyring_has_previous(k));
    engine_keyring_free(k);
    hf_secrets_free(s);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A SIGHUP's reload: refused when it would take away a token key the process had; otherwise the
 * store, with the keyring when there is one. */
static void secrets_reload_keeps_the_token_key(void **state)
{
    (void)state;
    char b64[64], hex[80], err[512];
    key_texts(b64, hex);
    char dir[] = "/tmp/hf-test-tokens-XXXXXX", sub[64];
    assert_non_null(mkdtemp(dir));
    snprintf(sub, sizeof sub, "%s/engine", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    engine_keyring *keys = (engine_keyring *)1;

    /* No key yet: a process without one gets the store and the reason, one with one a refusal. */
    hf_secrets *s = engine_secrets_reload(dir, false, &keys, err, sizeof err);
    assert_non_null(s);
    assert_null(keys);
    assert_non_null(strstr(err, "engine/token_key is missing"));
    hf_secrets_free(s);
    assert_null(engine_secrets_reload(dir, true, &keys, err, sizeof err));
    assert_null(keys);
    assert_non_null(strstr(err, "engine/token_key is missing"));

    /* Malformed: refused for a process that had a key, never showing the file's text. */
    write_file(sub, "token_key", "not-a-key");
    assert_null(engine_secrets_reload(dir, true, &keys, err, sizeof err));
    assert_non_null(strstr(err, "engine/token_key holds 9 characters"));
    assert_null(strstr(err, "not-a-key"));

    /* A good key (and a previous one) loads for both. */
    write_file(sub, "token_key", hex);
    write_file(sub, "token_key.previous", b64);
    s = engine_secrets_reload(dir, true, &keys, err, sizeof err);
    assert_non_null(s);
    assert_non_null(keys);
    assert_true(engine_keyring_has_previous(keys));
    engine_keyring_free(keys);
    hf_secrets_free(s);

    /* A directory that is gone is an empty store: refused for a process that had a key. */
    char path[512];
    snprintf(path, sizeof path, "%s/token_key", sub);
    unlink(path);
    snprintf(path, sizeof path, "%s/token_key.previous", sub);
    unlink(path);
    rmdir(sub);
    rmdir(dir);
    assert_null(engine_secrets_reload(dir, true, &keys, err, sizeof err));
    assert_null(keys);
    assert_non_null(strstr(err, "engine/token_key is missing"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),
        cmocka_unit_test(wrong_context_fails),
        cmocka_unit_test(tampered_bytes_fail),
        cmocka_unit_test(wrong_key_fails),
        cmocka_unit_test(previous_key_decrypts),
        cmocka_unit_test(key_parse_accepts_base64_and_hex),
        cmocka_unit_test(key_parse_rejects_bad_files),
        cmocka_unit_test(keyring_load_from_store),
        cmocka_unit_test(secrets_reload_keeps_the_token_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
