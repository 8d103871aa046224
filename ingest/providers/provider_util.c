/* provider_util: small helpers shared by the xero, quickbooks and hubspot modules. */
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

bool provider_util_hmac_b64_matches(const provider_util_keys *keys, const char *sig_b64,
                                    const unsigned char *body, size_t body_len)
{
    unsigned char given[HF_SHA256_LEN + 3];
    long glen = hf_base64_decode(sig_b64, strlen(sig_b64), given, sizeof given);
    if (glen < 0)
        return false;
    bool ok = false;
    for (size_t i = 0; i < keys->n; i++) {
        unsigned char want[HF_SHA256_LEN];
        hf_hmac_sha256(keys->vals[i], keys->lens[i], body, body_len, want);
        ok |= hf_ct_equal(want, sizeof want, given, (size_t)glen);
    }
    return ok;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool provider_util_hex_decode(const char *hex, unsigned char *out, size_t outlen)
{
    if (strlen(hex) != 2 * outlen)
        return false;
    for (size_t i = 0; i < outlen; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
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
