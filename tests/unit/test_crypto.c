/* Unit tests for common/crypto: the providers' published signature vectors, streaming vs one-shot
 * MACs, base64/hex, constant-time comparison and AES-256-GCM sealing. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"

/* Freed-memory inspection (AddressSanitizer builds only): while watched is set, every block
 * handed to free() is searched for it just before it is released. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HF_TEST_FREE_HOOKS 1
#endif
#endif
#if !defined(HF_TEST_FREE_HOOKS) && defined(__SANITIZE_ADDRESS__)
#define HF_TEST_FREE_HOOKS 1
#endif
#ifdef HF_TEST_FREE_HOOKS
#include <sanitizer/allocator_interface.h>

static const void *volatile watched;
static volatile size_t watched_len;
static volatile int watched_freed;

static void on_malloc(const volatile void *p, size_t n)
{
    (void)p;
    (void)n;
}

static void on_free(const volatile void *p)
{
    const void *w = watched;
    if (!w || !p || !__sanitizer_get_ownership((const void *)p))
        return;
    size_t m = __sanitizer_get_allocated_size((const void *)p), n = watched_len;
    for (size_t i = 0; n && i + n <= m; i++)
        if (memcmp((const char *)p + i, w, n) == 0) {
            watched_freed++;
            return;
        }
}

/* Starts counting frees of blocks that still hold the n bytes at w. */
static void watch_frees(const void *w, size_t n)
{
    static int installed;
    if (!installed)
        installed = __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free) > 0;
    assert_true(installed);
    watched_freed = 0;
    watched_len = n;
    watched = w;
}

/* Stops watching; returns how many freed blocks held the watched bytes. */
static int unwatch_frees(void)
{
    watched = NULL;
    return watched_freed;
}
#endif

/* Base64 of HMAC-SHA256(key, msg). */
static void hmac256_b64(const char *key, const char *msg, char out[64])
{
    unsigned char mac[HF_SHA256_LEN];
    hf_hmac_sha256(key, strlen(key), msg, strlen(msg), mac);
    hf_base64_encode(mac, sizeof mac, out);
}

static void hmac256_hex(const char *key, const char *msg, char out[2 * HF_SHA256_LEN + 1])
{
    unsigned char mac[HF_SHA256_LEN];
    hf_hmac_sha256(key, strlen(key), msg, strlen(msg), mac);
    hf_hex_encode(mac, sizeof mac, out);
}

static void sha256_hex(const char *msg, char out[2 * HF_SHA256_LEN + 1])
{
    unsigned char d[HF_SHA256_LEN];
    hf_sha256(msg, strlen(msg), d);
    hf_hex_encode(d, sizeof d, out);
}

/* Digest (into out, >= 32 bytes) of the NULL-terminated list of parts fed one by one to a
 * streaming hf_mac; returns the digest length. */
static size_t mac_parts(hf_mac_kind kind, const char *key, unsigned char *out, ...)
{
    hf_mac *m = hf_mac_new(kind, key, key ? strlen(key) : 0);
    va_list ap;
    va_start(ap, out);
    const char *part;
    while ((part = va_arg(ap, const char *)) != NULL)
        hf_mac_update(m, part, strlen(part));
    va_end(ap);
    return hf_mac_final(m, out);
}

static void test_xero_vector(void **state)
{
    (void)state;
    /* Xero uses the webhook key as a UTF-8 string, not base64-decoded. */
    const char *key =
        "OSd0eLlVIY9ZhViEqlDUh4+6n6M+Lo+eDaEJheJ6OCCgWwIz2D3JIAU6jPMipHRbgKTLz2uJ+xiACXGDBLrgdA==";
    const char *body = "{\"events\":[],\"firstEventSequence\": 0,\"lastEventSequence\": 0,"
                       "\"entropy\": \"S0m3r4Nd0mt3xt\"}";
    char b64[64];
    hmac256_b64(key, body, b64);
    assert_string_equal(b64, "XeRCwNl/cf7Wwt8bUMCqvKF6V2eoosfmJrRLcBPSquQ=");
}

static void test_quickbooks_vector(void **state)
{
    (void)state;
    const char *key = "b5771f19b12ddb4bcdb9f08bdc50bc63878a";
    const char *body =
        "{\"eventNotifications\":[{\"realmId\":\"1185883450\",\"dataChangeEvent\":{\"entities\":"
        "[{\"name\":\"Customer\",\"id\":\"1\",\"operation\":\"Create\",\"lastUpdated\":"
        "\"2015-10-05T14:42:19-0700\"}]}}]}";
    char b64[64];
    hmac256_b64(key, body, b64);
    assert_string_equal(b64, "JC2GUwciPmRBwEO7WvrRmKqu9tGOKL8FFallocTFi8Q=");
}

static const char hubspot_secret[] = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
static const char hubspot_url[] = "https://www.example.com/webhook_uri";
static const char hubspot_body[] = "{'example_field':'example_value'}";

static void test_hubspot_v1_vector(void **state)
{
    (void)state;
    char *msg = xasprintf("%s%s", hubspot_secret, hubspot_body);
    char hex[65];
    sha256_hex(msg, hex);
    assert_string_equal(hex, "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750");
    free(msg);
}

static void test_hubspot_v2_vectors(void **state)
{
    (void)state;
    char *msg = xasprintf("%sPOST%s%s", hubspot_secret, hubspot_url, hubspot_body);
    char hex[65];
    sha256_hex(msg, hex);
    assert_string_equal(hex, "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383");
    free(msg);
    /* A GET has no body. */
    msg = xasprintf("%sGET%s", hubspot_secret, hubspot_url);
    sha256_hex(msg, hex);
    assert_string_equal(hex, "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e");
    free(msg);
}

static void test_hubspot_v3_vector(void **state)
{
    (void)state;
    unsigned char mac[HF_SHA256_LEN];
    size_t n = mac_parts(HF_MAC_HMAC_SHA256, hubspot_secret, mac, "POST", hubspot_url, hubspot_body,
                         "15000000", (const char *)NULL);
    assert_int_equal(n, HF_SHA256_LEN);
    char b64[64];
    hf_base64_encode(mac, n, b64);
    assert_string_equal(b64, "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw=");
}

static void test_klaviyo_vector(void **state)
{
    (void)state;
    const char *body = "{\"data\":[],\"meta\":{\"klaviyo_account_id\":\"ABC123\","
                       "\"klaviyo_webhook_id\":\"01KP4928STE8FKCWB6WDHZ4ZB7\","
                       "\"timestamp\":\"2026-04-14T03:50:12+00:00\"}}";
    unsigned char mac[HF_SHA256_LEN];
    size_t n = mac_parts(HF_MAC_HMAC_SHA256, "mysecretmysecret1", mac, body,
                         "Tue, 14 Apr 2026 03:50:12 GMT", (const char *)NULL);
    char hex[65];
    hf_hex_encode(mac, n, hex);
    assert_string_equal(hex, "283f475b411a5ee79f5c851c6335cada66f8831d156dc865bca0bc7000f2fe66");
}

static void test_twilio_vectors(void **state)
{
    (void)state;
    /* URL, then each POST parameter's name and value, sorted by name. */
    const char *msg = "https://mycompany.com/myapp.php?foo=1&bar=2"
                      "CallSidCA1234567890ABCDE"
                      "Caller+14158675309"
                      "Digits1234"
                      "From+14158675309"
                      "To+18005551212";
    unsigned char mac[HF_SHA1_LEN];
    hf_hmac_sha1("12345", 5, msg, strlen(msg), mac);
    char b64[64];
    assert_int_equal(hf_base64_encode(mac, sizeof mac, b64), 28);
    assert_string_equal(b64, "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
    /* JSON bodies are covered by a bodySHA256 query parameter: hex SHA-256 of the body. */
    char hex[65];
    sha256_hex("{\"property\": \"value\", \"boolean\": true}", hex);
    assert_string_equal(hex, "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620");
}

static void test_meta_vectors(void **state)
{
    (void)state;
    const char *body =
        "{\"object\":\"page\",\"entry\":[{\"id\":\"PAGE_ID\",\"time\":1458692752478,"
        "\"messaging\":[{\"sender\":{\"id\":\"PSID\"},\"recipient\":{\"id\":\"PAGE_ID\"},"
        "\"timestamp\":1458692752478,\"message\":{\"mid\":\"m_1\",\"text\":\"hi\"}}]}]}";
    char hex[65];
    hmac256_hex("test_app_secret_key", body, hex);
    assert_string_equal(hex, "b2859187bd7190c0e8660c8670967398d174071e618434675b47290f40e43aed");
    hmac256_hex("secret", "test", hex);
    assert_memory_equal(hex, "0329a06b", 8);
    assert_string_equal(hex + 60, "0914");
    assert_string_equal(hex, "0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914");
}

static void test_streaming_mac_equals_one_shot(void **state)
{
    (void)state;
    const char key[] = "streaming-key";
    unsigned char msg[300];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (unsigned char)(i * 7 + 3);
    unsigned char want1[HF_SHA1_LEN], want256[HF_SHA256_LEN], wantsha[HF_SHA256_LEN];
    hf_hmac_sha1(key, strlen(key), msg, sizeof msg, want1);
    hf_hmac_sha256(key, strlen(key), msg, sizeof msg, want256);
    hf_sha256(msg, sizeof msg, wantsha);
    /* Every split point, including empty first and last parts. */
    for (size_t split = 0; split <= sizeof msg; split += 13) {
        unsigned char got[HF_SHA256_LEN];
        hf_mac *m = hf_mac_new(HF_MAC_HMAC_SHA1, key, strlen(key));
        hf_mac_update(m, msg, split);
        hf_mac_update(m, msg + split, sizeof msg - split);
        assert_int_equal(hf_mac_final(m, got), HF_SHA1_LEN);
        assert_memory_equal(got, want1, HF_SHA1_LEN);

        m = hf_mac_new(HF_MAC_HMAC_SHA256, key, strlen(key));
        hf_mac_update(m, msg, split);
        hf_mac_update(m, "", 0);
        hf_mac_update(m, msg + split, sizeof msg - split);
        assert_int_equal(hf_mac_final(m, got), HF_SHA256_LEN);
        assert_memory_equal(got, want256, HF_SHA256_LEN);

        m = hf_mac_new(HF_MAC_SHA256, NULL, 0);
        hf_mac_update(m, msg, split);
        hf_mac_update(m, msg + split, sizeof msg - split);
        assert_int_equal(hf_mac_final(m, got), HF_SHA256_LEN);
        assert_memory_equal(got, wantsha, HF_SHA256_LEN);
    }
}

/* RFC 4231 test cases 2, 6 and 7 (6 and 7 use a 131-byte key, longer than the block) plus RFC
 * 2202 case 2 for SHA-1, mixed with more keys than the per-thread context cache holds, in an
 * order that makes every key evict and re-key a slot, on this thread and on two others. */
typedef struct keyed_case {
    const char *key;
    size_t keylen;
    const char *msg;
    const char *want; /* hex */
    bool sha1;
} keyed_case;

static char rfc4231_long_key[131];

static keyed_case keyed_cases[] = {
    {"Jefe", 4, "what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", false},
    {rfc4231_long_key, 131, "Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", false},
    {"Jefe", 4, "what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79", true},
    {rfc4231_long_key, 131,
     "This is a test using a larger than block-size key and a larger than block-size data. The "
     "key needs to be hashed before being used by the HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2", false},
};

static int check_keyed_cases(void)
{
    int bad = 0;
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < HF_ARRAY_LEN(keyed_cases); i++) {
            const keyed_case *k = &keyed_cases[i];
            unsigned char mac[HF_SHA256_LEN];
            char hex[2 * HF_SHA256_LEN + 1];
            if (k->sha1) {
                hf_hmac_sha1(k->key, k->keylen, k->msg, strlen(k->msg), mac);
                hf_hex_encode(mac, HF_SHA1_LEN, hex);
            } else {
                hf_hmac_sha256(k->key, k->keylen, k->msg, strlen(k->msg), mac);
                hf_hex_encode(mac, HF_SHA256_LEN, hex);
            }
            bad += strcmp(hex, k->want) != 0;
            /* Five other keys in between: every slot is reused before the next case. */
            for (int j = 0; j < 5; j++) {
                char other[8] = {'k', 'e', 'y', (char)('0' + j), (char)('0' + round)};
                hf_hmac_sha256(other, strlen(other), k->msg, 3, mac);
            }
        }
    }
    return bad;
}

static void *check_keyed_cases_thread(void *arg)
{
    *(int *)arg = check_keyed_cases();
    return NULL;
}

static void test_one_shot_hmac_with_many_keys_and_threads(void **state)
{
    (void)state;
    memset(rfc4231_long_key, 0xaa, sizeof rfc4231_long_key);
    assert_int_equal(check_keyed_cases(), 0);
    pthread_t t[2];
    int bad[2] = {-1, -1};
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, check_keyed_cases_thread, &bad[i]), 0);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(bad[i], 0);
    }
}

static void test_empty_and_absent_keys_are_the_same_key(void **state)
{
    (void)state;
    /* HMAC-SHA256 with an empty key and message. */
    const char *want = "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad";
    unsigned char mac[HF_SHA256_LEN];
    char hex[65];
    hf_hmac_sha256("", 0, "", 0, mac);
    hf_hex_encode(mac, sizeof mac, hex);
    assert_string_equal(hex, want);
    hf_hmac_sha256(NULL, 0, "", 0, mac);
    hf_hex_encode(mac, sizeof mac, hex);
    assert_string_equal(hex, want);
    size_t n = mac_parts(HF_MAC_HMAC_SHA256, "", mac, (const char *)NULL);
    hf_hex_encode(mac, n, hex);
    assert_string_equal(hex, want);
    n = mac_parts(HF_MAC_HMAC_SHA256, NULL, mac, (const char *)NULL);
    hf_hex_encode(mac, n, hex);
    assert_string_equal(hex, want);
}

static void test_sha256_of_empty_input(void **state)
{
    (void)state;
    char hex[65];
    sha256_hex("", hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_base64_encode_rfc4648_vectors(void **state)
{
    (void)state;
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const enc[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < HF_ARRAY_LEN(plain); i++) {
        size_t n = strlen(plain[i]);
        char *out = malloc(hf_base64_len(n));
        assert_int_equal(hf_base64_encode((const unsigned char *)plain[i], n, out), strlen(enc[i]));
        assert_string_equal(out, enc[i]);
        assert_true(hf_base64_len(n) >= strlen(enc[i]) + 1);
        unsigned char back[16];
        assert_int_equal(hf_base64_decode(enc[i], strlen(enc[i]), back, sizeof back), (long)n);
        assert_memory_equal(back, plain[i], n);
        free(out);
    }
}

static void test_base64_round_trips_every_length_and_byte(void **state)
{
    (void)state;
    unsigned char in[260], back[260];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (unsigned char)(255 - i);
    char enc[400];
    for (size_t n = 0; n <= sizeof in; n++) {
        size_t elen = hf_base64_encode(in, n, enc);
        assert_int_equal(elen, strlen(enc));
        assert_true(elen + 1 <= hf_base64_len(n));
        assert_int_equal(hf_base64_decode(enc, elen, back, sizeof back), (long)n);
        assert_memory_equal(back, in, n);
    }
}

static void test_base64_decode_rejects_malformed_input(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "Zg=", /* length not a multiple of 4 */
        "Zm9",
        "Z",
        "Zm9vY",
        "Zm9v!A==", /* characters outside the alphabet */
        "Zm 9v",
        "Zm9v\n",
        "Zm-_",
        "Zm9v\xc3\xa9==",
        "=Zm9", /* '=' before the data ends */
        "Z===",
        "====",
        "Zm=v",
        "Zg==Zm9v",
        "Zm9vZg=A",
        /* Bits after the data in the last character must be zero (RFC 4648 3.5): these decode
         * to the same bytes as "Zg==" and "Zm8=" if they are ignored, so a signature would have
         * several accepted spellings. */
        "Zh==",
        "Zv==",
        "Zm9=",
        "Zm9vYh==",
    };
    unsigned char out[64];
    for (size_t i = 0; i < HF_ARRAY_LEN(bad); i++) {
        long got = hf_base64_decode(bad[i], strlen(bad[i]), out, sizeof out);
        if (got != -1)
            fail_msg("decoded malformed base64 \"%s\" to %ld bytes", bad[i], got);
    }
    /* An embedded NUL is a bad character too, not the end of the input. */
    assert_int_equal(hf_base64_decode("Zm\0v", 4, out, sizeof out), -1);
}

static void test_base64_decode_respects_output_capacity(void **state)
{
    (void)state;
    unsigned char out[8];
    memset(out, 0xAA, sizeof out);
    assert_int_equal(hf_base64_decode("Zm9vYmFy", 8, out, 5), -1); /* needs 6 */
    assert_int_equal(out[5], 0xAA);
    assert_int_equal(hf_base64_decode("Zm9vYmFy", 8, out, 6), 6);
    assert_int_equal(hf_base64_decode("Zm9vYg==", 8, out, 4), 4);
    assert_int_equal(hf_base64_decode("", 0, out, 0), 0);
}

static void test_hex_encode(void **state)
{
    (void)state;
    const unsigned char in[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    char out[13];
    assert_int_equal(hf_hex_encode(in, sizeof in, out), 12);
    assert_string_equal(out, "00017f80abff");
    assert_int_equal(hf_hex_encode(in, 0, out), 0);
    assert_string_equal(out, "");
}

static void test_hex_decode(void **state)
{
    (void)state;
    unsigned char out[6];
    assert_true(hf_hex_decode("00017F80abFF", 12, out, sizeof out));
    const unsigned char want[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    assert_memory_equal(out, want, sizeof want);
    /* Only exactly 2 * outlen hex digits. */
    assert_false(hf_hex_decode("00017F80abF", 11, out, sizeof out));
    assert_false(hf_hex_decode("00017F80abFF00", 14, out, sizeof out));
    assert_false(hf_hex_decode("00017F80abFg", 12, out, sizeof out));
    assert_false(hf_hex_decode(" 0017F80abFF", 12, out, sizeof out));
    assert_true(hf_hex_decode("", 0, out, 0));
    for (int c = 0; c < 256; c++) {
        int want_digit = c >= '0' && c <= '9'   ? c - '0'
                         : c >= 'a' && c <= 'f' ? c - 'a' + 10
                         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                : -1;
        assert_int_equal(hf_hex_digit(c), want_digit);
    }
}

static void test_ct_equal(void **state)
{
    (void)state;
    assert_true(hf_ct_equal("abcdef", 6, "abcdef", 6));
    assert_false(hf_ct_equal("abcdef", 6, "abcdeg", 6));
    assert_false(hf_ct_equal("Abcdef", 6, "abcdef", 6));
    /* A prefix is not equal: different lengths are always false. */
    assert_false(hf_ct_equal("abc", 3, "abcdef", 6));
    assert_false(hf_ct_equal("abcdef", 6, "abc", 3));
    assert_false(hf_ct_equal("", 0, "a", 1));
    assert_true(hf_ct_equal("", 0, "", 0));
    assert_true(hf_ct_equal("a\0b", 3, "a\0b", 3));
    assert_false(hf_ct_equal("a\0b", 3, "a\0c", 3));
}

static void test_random_bytes_differ(void **state)
{
    (void)state;
    unsigned char a[32], b[32];
    hf_random_bytes(a, sizeof a);
    hf_random_bytes(b, sizeof b);
    assert_memory_not_equal(a, b, sizeof a);
}

static const unsigned char aead_key[32] = "0123456789abcdef0123456789abcdef";

static void test_aead_round_trip(void **state)
{
    (void)state;
    const char *plain = "xoauth refresh token: 1//0gF-abc";
    const char *aad = "connection:42";
    size_t sealed_len = 0;
    unsigned char *sealed =
        hf_aead_seal(aead_key, plain, strlen(plain), aad, strlen(aad), &sealed_len);
    assert_int_equal(sealed_len, 12 + strlen(plain) + 16);
    assert_null(memmem(sealed, sealed_len, "refresh", 7)); /* the plaintext is not visible */
    size_t n = 0;
    unsigned char *opened = hf_aead_open(aead_key, sealed, sealed_len, aad, strlen(aad), &n);
    assert_non_null(opened);
    assert_int_equal(n, strlen(plain));
    assert_memory_equal(opened, plain, n);
    assert_int_equal(opened[n], '\0'); /* usable as a C string */
    free(opened);
    /* The nonce is random: sealing again gives different bytes that open to the same text. */
    size_t again_len = 0;
    unsigned char *again =
        hf_aead_seal(aead_key, plain, strlen(plain), aad, strlen(aad), &again_len);
    assert_int_equal(again_len, sealed_len);
    assert_memory_not_equal(again, sealed, sealed_len);
    opened = hf_aead_open(aead_key, again, again_len, aad, strlen(aad), &n);
    assert_non_null(opened);
    free(opened);
    free(again);
    free(sealed);
}

static void test_aead_round_trip_without_aad_and_empty_plaintext(void **state)
{
    (void)state;
    size_t sealed_len = 0, n = 99;
    unsigned char *sealed = hf_aead_seal(aead_key, "", 0, NULL, 0, &sealed_len);
    assert_int_equal(sealed_len, 28);
    unsigned char *opened = hf_aead_open(aead_key, sealed, sealed_len, NULL, 0, &n);
    assert_non_null(opened);
    assert_int_equal(n, 0);
    assert_int_equal(opened[0], '\0');
    free(opened);
    free(sealed);
}

static void test_aead_rejects_tampering_wrong_aad_and_wrong_key(void **state)
{
    (void)state;
    const char *plain = "access-token-value";
    const char *aad = "tenant:7";
    size_t len = 0, n = 0;
    unsigned char *sealed = hf_aead_seal(aead_key, plain, strlen(plain), aad, strlen(aad), &len);
    /* Flip one bit anywhere: nonce (0..11), ciphertext, tag (last 16). */
    for (size_t i = 0; i < len; i++) {
        sealed[i] ^= 0x01;
        unsigned char *opened = hf_aead_open(aead_key, sealed, len, aad, strlen(aad), &n);
        if (opened) {
            free(opened);
            fail_msg("opened with byte %zu of %zu flipped", i, len);
        }
        sealed[i] ^= 0x01;
    }
    assert_null(hf_aead_open(aead_key, sealed, len, "tenant:8", 8, &n));
    assert_null(hf_aead_open(aead_key, sealed, len, NULL, 0, &n));
    unsigned char other_key[32];
    memcpy(other_key, aead_key, sizeof other_key);
    other_key[31] ^= 0x80;
    assert_null(hf_aead_open(other_key, sealed, len, aad, strlen(aad), &n));
    /* Truncated: shorter than the tag, or missing its last byte. */
    assert_null(hf_aead_open(aead_key, sealed, len - 1, aad, strlen(aad), &n));
    assert_null(hf_aead_open(aead_key, sealed, 27, aad, strlen(aad), &n));
    assert_null(hf_aead_open(aead_key, sealed, 0, aad, strlen(aad), &n));
    /* The untouched original still opens. */
    unsigned char *opened = hf_aead_open(aead_key, sealed, len, aad, strlen(aad), &n);
    assert_non_null(opened);
    free(opened);
    free(sealed);
}

/* Plaintext must not outlive a refused open: hf_aead_open decrypts before it checks the tag, so
 * under the right key and another row's context its buffer holds the real token. The buffer is
 * inspected as it is freed (ASan builds only; skipped otherwise). */
static void test_aead_refused_open_wipes_the_decrypted_plaintext(void **state)
{
    (void)state;
#ifdef HF_TEST_FREE_HOOKS
    static const char plain[] = "1//0gF-refresh-token-of-another-connection";
    size_t len = 0, n = 0;
    unsigned char *sealed =
        hf_aead_seal(aead_key, plain, strlen(plain), "conn:1:refresh", 14, &len);
    watch_frees(plain, strlen(plain));
    unsigned char *opened = hf_aead_open(aead_key, sealed, len, "conn:2:refresh", 14, &n);
    int leaked = unwatch_frees();
    assert_null(opened);
    free(sealed);
    if (leaked)
        fail_msg("a refused open freed %d block(s) still holding the plaintext", leaked);
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xero_vector),
        cmocka_unit_test(test_quickbooks_vector),
        cmocka_unit_test(test_hubspot_v1_vector),
        cmocka_unit_test(test_hubspot_v2_vectors),
        cmocka_unit_test(test_hubspot_v3_vector),
        cmocka_unit_test(test_klaviyo_vector),
        cmocka_unit_test(test_twilio_vectors),
        cmocka_unit_test(test_meta_vectors),
        cmocka_unit_test(test_streaming_mac_equals_one_shot),
        cmocka_unit_test(test_one_shot_hmac_with_many_keys_and_threads),
        cmocka_unit_test(test_empty_and_absent_keys_are_the_same_key),
        cmocka_unit_test(test_sha256_of_empty_input),
        cmocka_unit_test(test_base64_encode_rfc4648_vectors),
        cmocka_unit_test(test_base64_round_trips_every_length_and_byte),
        cmocka_unit_test(test_base64_decode_rejects_malformed_input),
        cmocka_unit_test(test_base64_decode_respects_output_capacity),
        cmocka_unit_test(test_hex_encode),
        cmocka_unit_test(test_hex_decode),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_random_bytes_differ),
        cmocka_unit_test(test_aead_round_trip),
        cmocka_unit_test(test_aead_round_trip_without_aad_and_empty_plaintext),
        cmocka_unit_test(test_aead_rejects_tampering_wrong_aad_and_wrong_key),
        cmocka_unit_test(test_aead_refused_open_wipes_the_decrypted_plaintext),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
