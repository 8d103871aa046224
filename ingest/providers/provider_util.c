/* provider_util: small helpers shared by the provider modules. */
#include "provider_util.h"

#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "util.h"

bool provider_util_require_post(const ingest_request *req, ingest_result *res)
{
    if (req->method && strcmp(req->method, "POST") == 0)
        return true;
    ingest_result_fail(res, 405, "method_not_allowed", "only POST is accepted");
    return false;
}

bool provider_util_load_keys(const ingest_request *req, const char *path, provider_util_keys *keys,
                             ingest_result *res)
{
    keys->n = req->secrets ? hf_secrets_get(req->secrets, path, keys->vals, keys->lens) : 0;
    if (keys->n > 0)
        return true;
    ingest_result_fail(res, 503, "missing_secret", "%s is not configured", path);
    return false;
}

const char *provider_util_header(const ingest_request *req, const char *name)
{
    return req->header ? req->header(req, name) : NULL;
}

bool provider_util_hmac_matches(const provider_util_keys *keys, const unsigned char *given,
                                size_t given_len, const unsigned char *body, size_t body_len)
{
    bool ok = false;
    for (size_t i = 0; i < keys->n; i++) {
        unsigned char want[HF_SHA256_LEN];
        hf_hmac_sha256(keys->vals[i], keys->lens[i], body, body_len, want);
        /* No early exit: every key costs the same whichever matches. */
        ok |= hf_ct_equal(want, sizeof want, given, given_len);
    }
    return ok;
}

bool provider_util_secret_matches(const provider_util_keys *keys, const char *given,
                                  size_t given_len)
{
    /* Hashing both sides first makes the comparison independent of the secret's length. */
    unsigned char want[HF_SHA256_LEN];
    hf_sha256(given, given_len, want);
    bool ok = false;
    for (size_t i = 0; i < keys->n; i++) {
        unsigned char got[HF_SHA256_LEN];
        hf_sha256(keys->vals[i], keys->lens[i], got);
        ok |= hf_ct_equal(got, sizeof got, want, sizeof want);
    }
    return ok;
}

bool provider_util_hmac_b64_matches(const provider_util_keys *keys, const char *sig_b64,
                                    const unsigned char *body, size_t body_len)
{
    unsigned char given[HF_SHA256_LEN + 3];
    long glen = hf_base64_decode(sig_b64, strlen(sig_b64), given, sizeof given);
    return glen >= 0 && provider_util_hmac_matches(keys, given, (size_t)glen, body, body_len);
}

bool provider_util_signed_b64(const ingest_request *req, const char *secret_path,
                              const char *header, ingest_result *res)
{
    provider_util_keys keys;
    if (!provider_util_load_keys(req, secret_path, &keys, res))
        return false;
    const char *sig = provider_util_header(req, header);
    if (!sig) {
        ingest_result_fail(res, 401, "missing_signature", "no %s header", header);
        return false;
    }
    if (!provider_util_hmac_b64_matches(&keys, sig, req->body, req->body_len)) {
        ingest_result_fail(res, 401, "bad_signature", "%s does not match the body", header);
        return false;
    }
    return true;
}

hf_json provider_util_parse_body(const ingest_request *req, ingest_result *res)
{
    char err[200];
    hf_json root = hf_json_parse(provider_util_body_text(req), req->body_len, err, sizeof err);
    if (!root)
        ingest_result_fail(res, 400, "malformed", "%s", err);
    return root;
}

const char *provider_util_trim_blanks(const char *s, size_t *len)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    *len = n;
    return s;
}

char *provider_util_time_normalise(const char *s)
{
    int64_t ms;
    if (!hf_parse_rfc3339(s, &ms))
        return NULL;
    char buf[40];
    hf_format_rfc3339(ms, buf, sizeof buf);
    return xstrdup(buf);
}

#define MS_YEAR_10000 (253402300800000LL) /* 10000-01-01T00:00:00.000Z */

char *provider_util_time_from_ms(long long ms)
{
    if (ms < 0 || ms >= MS_YEAR_10000)
        return NULL;
    return ingest_time_from_ms(ms);
}

const char *provider_util_id_text(hf_json v)
{
    const char *s = hf_json_str(v);
    if (s)
        return *s ? s : NULL;
    return hf_json_number_text(v);
}

char *provider_util_payload(hf_json v)
{
    size_t len;
    const char *raw = hf_json_raw(v, &len);
    if (raw)
        return xstrndup(raw, len);
    hf_buf b = {0};
    hf_json_serialize(v, &b);
    return hf_buf_steal(&b);
}

const char *provider_util_body_text(const ingest_request *req)
{
    return req->body ? (const char *)req->body : "";
}

size_t provider_util_get_keys(const ingest_request *req, const char *path, const char *vals[2],
                              size_t lens[2])
{
    return req->secrets ? hf_secrets_get(req->secrets, path, vals, lens) : 0;
}
