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

/* Reads exactly n decimal digits at *p, advancing it. */
static bool read_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (y >= 1). */
static int64_t days_since_epoch(int y, int m, int d)
{
    static const int before_month[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    int64_t py = y - 1; /* whole years before y */
    int64_t days = py * 365 + py / 4 - py / 100 + py / 400;
    days += before_month[m - 1] + (m > 2 && is_leap(y)) + (d - 1);
    return days - 719162; /* days from 0001-01-01 to 1970-01-01 */
}

#define MS_YEAR_1000 (-30610224000000LL)  /* 1000-01-01T00:00:00.000Z */
#define MS_YEAR_10000 (253402300800000LL) /* 10000-01-01T00:00:00.000Z */

bool provider_util_parse_time(const char *s, int64_t *ms)
{
    static const int month_days[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (!s)
        return false;
    const char *p = s;
    int y, mo, d, h, mi, sec, frac = 0;
    if (!read_digits(&p, 4, &y) || *p++ != '-' || !read_digits(&p, 2, &mo) || *p++ != '-' ||
        !read_digits(&p, 2, &d))
        return false;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return false;
    p++;
    if (!read_digits(&p, 2, &h) || *p++ != ':' || !read_digits(&p, 2, &mi) || *p++ != ':' ||
        !read_digits(&p, 2, &sec))
        return false;
    if (y < 1000 || mo < 1 || mo > 12 || d < 1 || d > month_days[mo - 1] ||
        (mo == 2 && d == 29 && !is_leap(y)) || h > 23 || mi > 59 || sec > 60)
        return false;
    if (*p == '.') {
        p++;
        int ndigits = 0;
        while (*p >= '0' && *p <= '9') {
            if (ndigits < 3)
                frac = frac * 10 + (*p - '0');
            ndigits++;
            p++;
        }
        if (ndigits == 0)
            return false;
        for (int i = ndigits; i < 3; i++)
            frac *= 10;
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
        if (!read_digits(&p, 2, &oh))
            return false;
        if (*p == ':')
            p++;
        if (*p && !read_digits(&p, 2, &om))
            return false;
        if (oh > 23 || om > 59)
            return false;
        offset_min = sign * (oh * 60 + om);
    }
    if (*p != '\0')
        return false;
    int64_t secs = days_since_epoch(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
    int64_t v = (secs - (int64_t)offset_min * 60) * 1000 + frac;
    if (v < MS_YEAR_1000 || v >= MS_YEAR_10000)
        return false;
    *ms = v;
    return true;
}

char *provider_util_time_normalise(const char *s)
{
    int64_t ms;
    if (!provider_util_parse_time(s, &ms))
        return NULL;
    char buf[40];
    hf_format_rfc3339(ms, buf, sizeof buf);
    return xstrdup(buf);
}

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

char *provider_util_serialize(hf_json v)
{
    hf_buf b = {0};
    hf_json_serialize(v, &b);
    return hf_buf_steal(&b);
}
