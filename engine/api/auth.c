/* auth: JWT (HS256) verification for the engine API's bearer tokens, and the caller's role from
 * the branch role mappings. */
#include "auth.h"

#include <math.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "json.h"
#include "pg.h"

/* Decoded header and payload are small JSON objects; a bound keeps hostile tokens cheap. */
#define JWT_PART_MAX 4096

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t api_base64url_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long api_base64url_decode(const char *in, size_t n, unsigned char *out, size_t outcap)
{
    if (n % 4 == 1)
        return -1;
    size_t need = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    if (need > outcap)
        return -1;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value(in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6 | (unsigned)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits & 0xff);
        }
    }
    /* The leftover bits of the last character must be zero, so every byte string has exactly
     * one encoding (a signature cannot be varied without invalidating it). */
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return -1;
    return (long)o;
}

const char *api_jwt_status_name(api_jwt_status s)
{
    switch (s) {
    case API_JWT_OK:
        return "ok";
    case API_JWT_MALFORMED:
        return "malformed";
    case API_JWT_BAD_ALG:
        return "bad_alg";
    case API_JWT_BAD_SIGNATURE:
        return "bad_signature";
    case API_JWT_EXPIRED:
        return "expired";
    case API_JWT_NOT_YET_VALID:
        return "not_yet_valid";
    case API_JWT_BAD_CLAIMS:
        return "bad_claims";
    case API_JWT_TOO_LONG:
        return "too_long";
    }
    return "unknown";
}

const char *api_bearer_token(const char *authorization, size_t *len)
{
    if (!authorization)
        return NULL;
    const char *p = authorization;
    while (*p == ' ' || *p == '\t')
        p++;
    if (strncasecmp(p, "Bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t'))
        return NULL;
    p += 6;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t n = strlen(p);
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n == 0)
        return NULL;
    *len = n;
    return p;
}

hf_json api_jwt_decode_part(const char *part, size_t n)
{
    unsigned char buf[JWT_PART_MAX];
    long m = api_base64url_decode(part, n, buf, sizeof buf);
    if (m <= 0)
        return NULL;
    char perr[64];
    hf_json v = hf_json_parse((const char *)buf, (size_t)m, perr, sizeof perr);
    explicit_bzero(buf, sizeof buf);
    /* A name given twice must be refused (RFC 7515 4, RFC 7519 4): reading the first one while
     * another library reads the last would let {"alg":"HS256",...,"alg":"none"} mean two
     * things. */
    if (!hf_json_is_object(v) || hf_json_repeated_key(v)) {
        hf_json_free(v);
        return NULL;
    }
    return v;
}

/* A NumericDate claim (integer or decimal seconds); false when absent or not a number. */
static bool numeric_date(hf_json v, long long *out)
{
    if (YAJL_IS_INTEGER(v)) {
        *out = v->u.number.i;
        return true;
    }
    if (YAJL_IS_DOUBLE(v) && isfinite(v->u.number.d)) {
        double d = v->u.number.d;
        *out = d >= 9.2e18    ? 9200000000000000000LL
               : d <= -9.2e18 ? -9200000000000000000LL
                              : (long long)floor(d);
        return true;
    }
    return false;
}

/* Copies a string claim of 1..cap-1 bytes; false when absent, empty, too long or not a string. */
static bool string_claim(hf_json payload, const char *name, char *out, size_t cap)
{
    const char *s = hf_json_str(hf_json_get(payload, name));
    if (!s || !*s || strlen(s) >= cap)
        return false;
    memcpy(out, s, strlen(s) + 1);
    return true;
}

static api_jwt_status check_header(hf_json header, char *err, size_t errlen)
{
    const char *alg = hf_json_str(hf_json_get(header, "alg"));
    if (!alg || strcmp(alg, "HS256") != 0) {
        hf_err(err, errlen, "token algorithm is not HS256");
        return API_JWT_BAD_ALG;
    }
    /* Extensions that must be understood: hookflow understands none. */
    if (hf_json_get(header, "crit")) {
        hf_err(err, errlen, "token header has critical extensions");
        return API_JWT_BAD_ALG;
    }
    hf_json typ = hf_json_get(header, "typ");
    if (typ && (!hf_json_str(typ) || !hf_strieq(hf_json_str(typ), "JWT"))) {
        hf_err(err, errlen, "token type is not JWT");
        return API_JWT_MALFORMED;
    }
    return API_JWT_OK;
}

static bool signature_ok(const char *token, size_t signed_len, const unsigned char sig[32],
                         const unsigned char *const keys[], const size_t keylens[], size_t nkeys)
{
    bool ok = false;
    for (size_t i = 0; i < nkeys; i++) {
        unsigned char mac[HF_SHA256_LEN];
        hf_hmac_sha256(keys[i], keylens[i], token, signed_len, mac);
        /* Every key is tried whatever the outcome, so timing tells nothing about which one. */
        ok |= hf_ct_equal(mac, sizeof mac, sig, HF_SHA256_LEN);
    }
    return ok;
}

static api_jwt_status check_claims(hf_json payload, long long now_s, api_jwt_claims *out, char *err,
                                   size_t errlen)
{
    if (!numeric_date(hf_json_get(payload, "exp"), &out->exp)) {
        hf_err(err, errlen, "token has no numeric exp claim");
        return API_JWT_BAD_CLAIMS;
    }
    hf_json nbf = hf_json_get(payload, "nbf");
    if (nbf && !numeric_date(nbf, &out->nbf)) {
        hf_err(err, errlen, "token nbf claim is not a number");
        return API_JWT_BAD_CLAIMS;
    }
    if (now_s - API_JWT_LEEWAY_S >= out->exp) {
        hf_err(err, errlen, "token expired");
        return API_JWT_EXPIRED;
    }
    if (nbf && now_s + API_JWT_LEEWAY_S < out->nbf) {
        hf_err(err, errlen, "token is not valid yet (nbf)");
        return API_JWT_NOT_YET_VALID;
    }
    if (!string_claim(payload, "sub", out->sub, sizeof out->sub)) {
        hf_err(err, errlen, "token sub claim is missing or invalid");
        return API_JWT_BAD_CLAIMS;
    }
    if (!string_claim(payload, "tenant", out->tenant, sizeof out->tenant) ||
        !api_is_uuid(out->tenant)) {
        hf_err(err, errlen, "token tenant claim is missing or not a uuid");
        return API_JWT_BAD_CLAIMS;
    }
    if (!string_claim(payload, "branch", out->branch, sizeof out->branch)) {
        hf_err(err, errlen, "token branch claim is missing or invalid");
        return API_JWT_BAD_CLAIMS;
    }
    return API_JWT_OK;
}

api_jwt_status api_jwt_verify(const char *token, size_t len, const unsigned char *const keys[],
                              const size_t keylens[], size_t nkeys, long long now_s,
                              api_jwt_claims *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (len > API_JWT_MAX_LEN) {
        hf_err(err, errlen, "token longer than %d bytes", API_JWT_MAX_LEN);
        return API_JWT_TOO_LONG;
    }
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot1 || !dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) ||
        dot1 == token || dot2 == dot1 + 1 || dot2 + 1 == token + len) {
        hf_err(err, errlen, "token is not three non-empty base64url parts");
        return API_JWT_MALFORMED;
    }
    api_jwt_status st = API_JWT_OK;
    hf_json header = api_jwt_decode_part(token, (size_t)(dot1 - token));
    hf_json payload = NULL;
    if (!header) {
        hf_err(err, errlen, "token header is not base64url JSON");
        st = API_JWT_MALFORMED;
        goto done;
    }
    st = check_header(header, err, errlen);
    if (st != API_JWT_OK)
        goto done;
    unsigned char sig[HF_SHA256_LEN + 1];
    size_t siglen = (size_t)(token + len - (dot2 + 1));
    if (api_base64url_decode(dot2 + 1, siglen, sig, sizeof sig) != HF_SHA256_LEN) {
        hf_err(err, errlen, "token signature is not 32 bytes of base64url");
        st = API_JWT_BAD_SIGNATURE;
        goto done;
    }
    /* The signature is checked before the payload is even decoded. */
    if (nkeys == 0 || !signature_ok(token, (size_t)(dot2 - token), sig, keys, keylens, nkeys)) {
        hf_err(err, errlen, "token signature does not verify");
        st = API_JWT_BAD_SIGNATURE;
        goto done;
    }
    payload = api_jwt_decode_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (!payload) {
        hf_err(err, errlen, "token payload is not base64url JSON");
        st = API_JWT_MALFORMED;
        goto done;
    }
    st = check_claims(payload, now_s, out, err, errlen);
done:
    hf_json_free(payload);
    hf_json_free(header);
    if (st != API_JWT_OK)
        memset(out, 0, sizeof *out);
    return st;
}

int api_principal_load(PGconn *db, const api_jwt_claims *claims, api_principal *who, char *err,
                       size_t errlen)
{
    memset(who, 0, sizeof *who);
    snprintf(who->user, sizeof who->user, "%s", claims->sub);
    snprintf(who->tenant_id, sizeof who->tenant_id, "%s", claims->tenant);
    snprintf(who->branch, sizeof who->branch, "%s", claims->branch);
    const char *params[] = {claims->tenant, claims->branch, claims->sub};
    PGresult *res = NULL;
    int rc = hf_pg_exec(db,
                        "SELECT t.environment, coalesce(r.role, '') FROM tenants t "
                        "LEFT JOIN role_mappings r ON r.tenant_id = t.id AND r.branch = $2 "
                        " AND r.subject = $3 "
                        "WHERE t.id = $1::uuid",
                        3, params, &res, err, errlen);
    if (rc == HF_PG_OK && PQntuples(res) == 1) {
        snprintf(who->environment, sizeof who->environment, "%s", PQgetvalue(res, 0, 0));
        snprintf(who->role, sizeof who->role, "%s", PQgetvalue(res, 0, 1));
    }
    PQclear(res);
    return rc;
}
