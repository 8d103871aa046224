/* test_api_auth: the engine API's bearer tokens — JWT HS256 verification (valid, expired, not
 * yet valid, wrong signature, alg none / RS256, malformed base64url or JSON, missing claims, huge
 * tokens), the Authorization header and strict base64url. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/auth.h"
#include "crypto.h"

#define KEY "test-jwt-key-0123456789abcdef-0123456789"
#define OTHER_KEY "another-jwt-key-0123456789abcdef-01234567"
#define TENANT "6f1c2b1e-3d4a-4b5c-9d8e-7f6a5b4c3d2e"
#define NOW 1800000000LL
#define HS256 "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

static char *b64url(const void *data, size_t n)
{
    char *out = malloc(4 * (n / 3 + 1) + 1);
    api_base64url_encode(data, n, out);
    return out;
}

/* header.payload.signature with the signature over the first two parts under key (no signature
 * part at all when key is NULL). */
static char *mint(const char *header, const char *payload, const char *key)
{
    char *h = b64url(header, strlen(header));
    char *p = b64url(payload, strlen(payload));
    size_t n = strlen(h) + strlen(p) + 1;
    char *signing = malloc(n + 1);
    snprintf(signing, n + 1, "%s.%s", h, p);
    char *sig = strdup("");
    if (key) {
        unsigned char mac[HF_SHA256_LEN];
        hf_hmac_sha256(key, strlen(key), signing, strlen(signing), mac);
        free(sig);
        sig = b64url(mac, sizeof mac);
    }
    size_t total = n + strlen(sig) + 2;
    char *token = malloc(total);
    snprintf(token, total, "%s.%s", signing, sig);
    free(h);
    free(p);
    free(signing);
    free(sig);
    return token;
}

static char *claims(long long exp, const char *extra)
{
    char *out = malloc(512);
    snprintf(out, 512,
             "{\"sub\":\"alice@example.com\",\"tenant\":\"" TENANT "\",\"branch\":\"main\","
             "\"exp\":%lld%s}",
             exp, extra ? extra : "");
    return out;
}

static api_jwt_status verify_with(const char *token, const char *key, const char *previous,
                                  api_jwt_claims *out, char *err, size_t errlen)
{
    const unsigned char *keys[2] = {(const unsigned char *)key, (const unsigned char *)previous};
    size_t lens[2] = {strlen(key), previous ? strlen(previous) : 0};
    return api_jwt_verify(token, strlen(token), keys, lens, previous ? 2 : 1, NOW, out, err,
                          errlen);
}

static api_jwt_status verify(const char *token)
{
    api_jwt_claims cl;
    char err[160];
    return verify_with(token, KEY, NULL, &cl, err, sizeof err);
}

static api_jwt_status verify_minted(const char *header, const char *payload, const char *key)
{
    char *token = mint(header, payload, key);
    api_jwt_status st = verify(token);
    free(token);
    return st;
}

static void valid_token(void **state)
{
    (void)state;
    char *payload = claims(NOW + 3600, ",\"iat\":1799990000,\"role\":\"viewer\"");
    char *token = mint(HS256, payload, KEY);
    api_jwt_claims cl;
    char err[160] = "";
    assert_int_equal(verify_with(token, KEY, NULL, &cl, err, sizeof err), API_JWT_OK);
    assert_string_equal(cl.sub, "alice@example.com");
    assert_string_equal(cl.tenant, TENANT);
    assert_string_equal(cl.branch, "main");
    assert_int_equal(cl.exp, NOW + 3600);
    /* typ is optional; exp may be a decimal NumericDate. */
    assert_int_equal(verify_minted("{\"alg\":\"HS256\"}", payload, KEY), API_JWT_OK);
    free(payload);
    payload =
        strdup("{\"sub\":\"a\",\"tenant\":\"" TENANT "\",\"branch\":\"b\",\"exp\":1800000100.5}");
    assert_int_equal(verify_minted(HS256, payload, KEY), API_JWT_OK);
    free(payload);
    free(token);
}

static void rotated_key_still_verifies(void **state)
{
    (void)state;
    char *payload = claims(NOW + 60, NULL);
    char *token = mint(HS256, payload, OTHER_KEY);
    api_jwt_claims cl;
    char err[160];
    assert_int_equal(verify_with(token, KEY, OTHER_KEY, &cl, err, sizeof err), API_JWT_OK);
    assert_int_equal(verify_with(token, KEY, NULL, &cl, err, sizeof err), API_JWT_BAD_SIGNATURE);
    free(token);
    free(payload);
}

static void expired_and_not_yet_valid(void **state)
{
    (void)state;
    char *p = claims(NOW - 3600, NULL);
    assert_int_equal(verify_minted(HS256, p, KEY), API_JWT_EXPIRED);
    free(p);
    /* Exactly at exp plus the leeway is too late; a few seconds of skew are tolerated. */
    p = claims(NOW - API_JWT_LEEWAY_S, NULL);
    assert_int_equal(verify_minted(HS256, p, KEY), API_JWT_EXPIRED);
    free(p);
    p = claims(NOW - 5, NULL);
    assert_int_equal(verify_minted(HS256, p, KEY), API_JWT_OK);
    free(p);
    p = claims(NOW + 3600, ",\"nbf\":1800000600");
    assert_int_equal(verify_minted(HS256, p, KEY), API_JWT_NOT_YET_VALID);
    free(p);
    p = claims(NOW + 3600, ",\"nbf\":1800000010");
    assert_int_equal(verify_minted(HS256, p, KEY), API_JWT_OK);
    free(p);
    p = claims(NOW + 3600, ",\"nbf\":\"soon\"");
    assert_int_equal(verify_minted(HS256, p, KEY), API_JWT_BAD_CLAIMS);
    free(p);
}

static void wrong_signature(void **state)
{
    (void)state;
    char *p = claims(NOW + 3600, NULL);
    assert_int_equal(verify_minted(HS256, p, OTHER_KEY), API_JWT_BAD_SIGNATURE);

    /* A payload swapped under a valid signature. */
    char *good = mint(HS256, p, KEY);
    char *forged_payload = claims(NOW + 999999, NULL);
    char *forged = mint(HS256, forged_payload, KEY);
    char *dot_good = strrchr(good, '.');
    char *dot_forged = strrchr(forged, '.');
    char swapped[1024];
    snprintf(swapped, sizeof swapped, "%.*s%s", (int)(dot_forged - forged), forged, dot_good);
    assert_int_equal(verify(swapped), API_JWT_BAD_SIGNATURE);

    /* A signature one bit off, a truncated one, and the same bits with stray trailing bits. */
    size_t n = strlen(good);
    good[n - 2] = good[n - 2] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(good), API_JWT_BAD_SIGNATURE);
    good[n - 5] = '\0';
    assert_int_equal(verify(good), API_JWT_BAD_SIGNATURE);
    free(good);
    good = mint(HS256, p, KEY);
    n = strlen(good);
    /* 32 bytes are 43 characters whose last one carries 2 unused bits. */
    char last = good[n - 1];
    good[n - 1] = last == 'A' ? 'B' : (char)(last + 1);
    assert_int_not_equal(verify(good), API_JWT_OK);
    free(good);
    free(forged);
    free(forged_payload);
    free(p);

    /* No keys at all: nothing verifies. */
    char *t = mint(HS256, "{}", KEY);
    api_jwt_claims cl;
    char err[160];
    assert_int_equal(api_jwt_verify(t, strlen(t), NULL, NULL, 0, NOW, &cl, err, sizeof err),
                     API_JWT_BAD_SIGNATURE);
    free(t);
}

static void other_algorithms_refused(void **state)
{
    (void)state;
    char *p = claims(NOW + 3600, NULL);
    /* alg none, unsigned (empty signature part) and with a signature anyway. */
    assert_int_not_equal(verify_minted("{\"alg\":\"none\",\"typ\":\"JWT\"}", p, NULL), API_JWT_OK);
    assert_int_equal(verify_minted("{\"alg\":\"none\",\"typ\":\"JWT\"}", p, KEY), API_JWT_BAD_ALG);
    assert_int_equal(verify_minted("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", p, KEY), API_JWT_BAD_ALG);
    assert_int_equal(verify_minted("{\"alg\":\"HS512\"}", p, KEY), API_JWT_BAD_ALG);
    assert_int_equal(verify_minted("{\"alg\":\"hs256\"}", p, KEY), API_JWT_BAD_ALG);
    assert_int_equal(verify_minted("{\"typ\":\"JWT\"}", p, KEY), API_JWT_BAD_ALG);
    assert_int_equal(verify_minted("{\"alg\":[\"HS256\"]}", p, KEY), API_JWT_BAD_ALG);
    assert_int_equal(verify_minted("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", p, KEY),
                     API_JWT_BAD_ALG);
    assert_int_equal(verify_minted("{\"alg\":\"HS256\",\"typ\":\"JWE\"}", p, KEY),
                     API_JWT_MALFORMED);
    free(p);
}

static void malformed_tokens(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "abc",
        "abc.def",
        "a.b.c.d",
        ".eyJ9.sig",
        "eyJhbGciOiJIUzI1NiJ9..c2ln",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        "eyJhbGciOiJIUzI1NiJ9=.e30.c2ln",    /* padding */
        "eyJhbGciOiJIUzI1NiJ9.e30+.c2ln",    /* standard alphabet */
        "eyJhbGciOiJIUzI1NiJ9.e30.c2ln\xff", /* not the alphabet */
        "e.e30.c2ln",                        /* length 1 mod 4 */
        "bm90IGpzb24.e30.c2ln",              /* header "not json" */
        "WzFd.e30.c2ln",                     /* header [1] */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        api_jwt_status st = verify(bad[i]);
        if (st == API_JWT_OK)
            fail_msg("token %zu verified", i);
        assert_true(st == API_JWT_MALFORMED || st == API_JWT_BAD_SIGNATURE);
    }
    /* A well-signed token whose payload is not JSON, or JSON but not an object. */
    assert_int_equal(verify_minted(HS256, "not json", KEY), API_JWT_MALFORMED);
    assert_int_equal(verify_minted(HS256, "[1,2]", KEY), API_JWT_MALFORMED);
    assert_int_equal(verify_minted(HS256, "{\"sub\":\"a\"", KEY), API_JWT_MALFORMED);
    assert_int_equal(verify_minted("{\"alg\":\"HS256\"", "{}", KEY), API_JWT_MALFORMED);
    /* Invalid UTF-8 inside the payload JSON. */
    assert_int_equal(verify_minted(HS256, "{\"sub\":\"\xc3\x28\"}", KEY), API_JWT_MALFORMED);
}

static void missing_or_bad_claims(void **state)
{
    (void)state;
    static const char *const payloads[] = {
        "{\"sub\":\"a\",\"tenant\":\"" TENANT "\",\"branch\":\"b\"}", /* no exp */
        "{\"sub\":\"a\",\"tenant\":\"" TENANT "\",\"branch\":\"b\",\"exp\":\"soon\"}",
        "{\"sub\":\"a\",\"tenant\":\"" TENANT "\",\"branch\":\"b\",\"exp\":null}",
        "{\"tenant\":\"" TENANT "\",\"branch\":\"b\",\"exp\":1900000000}", /* no sub */
        "{\"sub\":\"\",\"tenant\":\"" TENANT "\",\"branch\":\"b\",\"exp\":1900000000}",
        "{\"sub\":42,\"tenant\":\"" TENANT "\",\"branch\":\"b\",\"exp\":1900000000}",
        "{\"sub\":\"a\",\"branch\":\"b\",\"exp\":1900000000}", /* no tenant */
        "{\"sub\":\"a\",\"tenant\":\"acme\",\"branch\":\"b\",\"exp\":1900000000}",
        "{\"sub\":\"a\",\"tenant\":\"x' OR '1'='1\",\"branch\":\"b\",\"exp\":1900000000}",
        "{\"sub\":\"a\",\"tenant\":\"" TENANT "\",\"exp\":1900000000}", /* no branch */
        "{\"sub\":\"a\",\"tenant\":\"" TENANT "\",\"branch\":[],\"exp\":1900000000}",
    };
    for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
        api_jwt_status st = verify_minted(HS256, payloads[i], KEY);
        if (st != API_JWT_BAD_CLAIMS)
            fail_msg("payload %zu: %s", i, api_jwt_status_name(st));
    }
    /* A sub longer than the claim buffer is refused, not cut. */
    char big[600];
    memset(big, 'x', 400);
    big[400] = '\0';
    char payload[1024];
    snprintf(payload, sizeof payload,
             "{\"sub\":\"%s\",\"tenant\":\"" TENANT "\",\"branch\":\"b\",\"exp\":1900000000}", big);
    assert_int_equal(verify_minted(HS256, payload, KEY), API_JWT_BAD_CLAIMS);
    /* Huge numbers are numbers: exp far in the future or the past. */
    assert_int_equal(
        verify_minted(
            HS256, "{\"sub\":\"a\",\"tenant\":\"" TENANT "\",\"branch\":\"b\",\"exp\":1e300}", KEY),
        API_JWT_OK);
    assert_int_equal(verify_minted(HS256,
                                   "{\"sub\":\"a\",\"tenant\":\"" TENANT "\",\"branch\":\"b\","
                                   "\"exp\":-99999999999999999999999}",
                                   KEY),
                     API_JWT_EXPIRED);
}

static void huge_tokens(void **state)
{
    (void)state;
    size_t n = API_JWT_MAX_LEN + 1;
    char *token = malloc(n + 1);
    memset(token, 'A', n);
    token[100] = '.';
    token[200] = '.';
    token[n] = '\0';
    assert_int_equal(verify(token), API_JWT_TOO_LONG);
    free(token);

    /* Within the limit but with a payload bigger than any claim set: refused, no overflow. */
    char *payload = malloc(6001);
    memset(payload, ' ', 6000);
    payload[0] = '{';
    payload[5999] = '}';
    payload[6000] = '\0';
    char *big = mint(HS256, payload, KEY);
    assert_true(strlen(big) <= API_JWT_MAX_LEN);
    assert_int_not_equal(verify(big), API_JWT_OK);
    free(big);
    free(payload);

    /* Deep nesting in the header. */
    char header[400];
    size_t k = 0;
    for (; k < 150; k++)
        header[k] = '[';
    header[k] = '\0';
    assert_int_equal(verify_minted(header, "{}", KEY), API_JWT_MALFORMED);
}

static void errors_never_quote_the_token(void **state)
{
    (void)state;
    char *p = claims(NOW - 3600, NULL);
    char *token = mint(HS256, p, KEY);
    api_jwt_claims cl;
    char err[160] = "";
    assert_int_equal(verify_with(token, KEY, NULL, &cl, err, sizeof err), API_JWT_EXPIRED);
    assert_true(err[0] != '\0');
    assert_null(strstr(err, strrchr(token, '.') + 1));
    assert_null(strstr(err, "alice"));
    /* A refused token leaves no claims behind. */
    assert_string_equal(cl.sub, "");
    assert_string_equal(cl.tenant, "");
    free(token);
    free(p);
}

static void bearer_header(void **state)
{
    (void)state;
    size_t n = 0;
    const char *t = api_bearer_token("Bearer abc.def.ghi", &n);
    assert_non_null(t);
    assert_int_equal(n, 11);
    assert_memory_equal(t, "abc.def.ghi", 11);
    t = api_bearer_token("  bearer \t xyz  ", &n);
    assert_non_null(t);
    assert_int_equal(n, 3);
    assert_null(api_bearer_token(NULL, &n));
    assert_null(api_bearer_token("", &n));
    assert_null(api_bearer_token("Bearer", &n));
    assert_null(api_bearer_token("Bearer   ", &n));
    assert_null(api_bearer_token("Basic YWxpY2U6cHc=", &n));
    assert_null(api_bearer_token("Bearerabc", &n));
}

static void base64url_strict(void **state)
{
    (void)state;
    unsigned char out[64];
    char text[64];
    for (size_t len = 0; len < 20; len++) {
        unsigned char in[20];
        for (size_t i = 0; i < len; i++)
            in[i] = (unsigned char)(0xf0 + i * 7);
        api_base64url_encode(in, len, text);
        assert_null(strchr(text, '='));
        assert_int_equal(api_base64url_decode(text, strlen(text), out, sizeof out), (long)len);
        assert_memory_equal(out, in, len);
    }
    assert_int_equal(api_base64url_decode("_-8", 3, out, sizeof out), 2);
    assert_int_equal(api_base64url_decode("/+8", 3, out, sizeof out), -1);
    assert_int_equal(api_base64url_decode("QQ==", 4, out, sizeof out), -1);
    assert_int_equal(api_base64url_decode("QR", 2, out, sizeof out), -1); /* stray bits */
    assert_int_equal(api_base64url_decode("QQ", 2, out, sizeof out), 1);
    assert_int_equal(api_base64url_decode("QUJD", 4, out, 2), -1); /* too small */
}

/* Duplicate member names in the JOSE header or the claims are refused (RFC 7515 section 4 /
 * RFC 7519 section 4 allow refusing or taking the last; hookflow read the first, so a header
 * {"alg":"HS256",...,"alg":"none"} meant HS256 here and "none" elsewhere). */
static void duplicate_member_names_refused_or_last_wins(void **state)
{
    (void)state;
    assert_int_not_equal(verify_minted("{\"alg\":\"HS256\",\"typ\":\"JWT\",\"alg\":\"none\"}",
                                       "{\"sub\":\"alice@example.com\",\"tenant\":\"" TENANT
                                       "\",\"branch\":\"main\",\"exp\":1800003600}",
                                       KEY),
                         API_JWT_OK);
    char *token = mint(HS256,
                       "{\"sub\":\"alice@example.com\",\"tenant\":\"" TENANT
                       "\",\"branch\":\"main\",\"exp\":1800003600,\"sub\":\"admin\"}",
                       KEY);
    api_jwt_claims cl;
    char err[160];
    api_jwt_status st = verify_with(token, KEY, NULL, &cl, err, sizeof err);
    free(token);
    if (st == API_JWT_OK && strcmp(cl.sub, "admin") != 0)
        fail_msg("payload with sub twice verified as sub \"%s\" (the first)", cl.sub);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_token),
        cmocka_unit_test(rotated_key_still_verifies),
        cmocka_unit_test(expired_and_not_yet_valid),
        cmocka_unit_test(wrong_signature),
        cmocka_unit_test(other_algorithms_refused),
        cmocka_unit_test(malformed_tokens),
        cmocka_unit_test(missing_or_bad_claims),
        cmocka_unit_test(huge_tokens),
        cmocka_unit_test(errors_never_quote_the_token),
        cmocka_unit_test(bearer_header),
        cmocka_unit_test(base64url_strict),
        cmocka_unit_test(duplicate_member_names_refused_or_last_wins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
