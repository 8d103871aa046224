/* klaviyo: system webhooks (hex HMAC-SHA256 over body + Klaviyo-Timestamp, 5-minute window,
 * webhook id bound to the body) and flow webhooks (unsigned by Klaviyo, so authenticated by a
 * shared secret header the merchant configures in the flow); one event per item. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "form.h"
#include "json.h"
#include "provider.h"
#include "provider_util.h"
#include "util.h"

#define KLAVIYO_WINDOW_MS (5 * 60 * 1000)
#define KLAVIYO_WEBHOOK_SECRET "klaviyo/webhook_secret"
#define KLAVIYO_FLOW_SECRET "klaviyo/flow_secret"

/* Latest time accepted anywhere (9999-12-31T23:59:59.999Z), so formatting never overflows. */
#define KLAVIYO_MAX_MS 253402300799999LL

/* ---- dates ---------------------------------------------------------------------------------- */

static bool is_leap(long y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(long y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/* Milliseconds since the epoch of a UTC civil time; false when a field is out of range. */
static bool civil_to_ms(long y, int mon, int d, int h, int mi, int s, int64_t *out)
{
    if (y < 1970 || y > 9999 || mon < 1 || mon > 12 || d < 1 || d > month_days(y, mon) || h < 0 ||
        h > 23 || mi < 0 || mi > 59 || s < 0 || s > 60)
        return false;
    /* Leap years before y minus those before 1970. */
    long prev = y - 1;
    int64_t days = 365 * (int64_t)(y - 1970) + (prev / 4 - prev / 100 + prev / 400) -
                   (1969 / 4 - 1969 / 100 + 1969 / 400);
    for (int mm = 1; mm < mon; mm++)
        days += month_days(y, mm);
    days += d - 1;
    *out = ((days * 24 + h) * 60 + mi) * 60000LL + (int64_t)s * 1000;
    return true;
}

/* Reads exactly n digits at *p into *out and advances *p. */
static bool digits(const char **p, int n, long *out)
{
    long v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return true;
}

/* "Tue, 14 Apr 2026 03:50:12 GMT" (RFC 9110 IMF-fixdate). */
static bool parse_imf_fixdate(const char *s, int64_t *ms)
{
    static const char *const wdays[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    bool wday_ok = false;
    for (size_t i = 0; i < HF_ARRAY_LEN(wdays); i++)
        wday_ok |= strncmp(s, wdays[i], 3) == 0;
    if (!wday_ok || strncmp(s + 3, ", ", 2) != 0)
        return false;
    const char *p = s + 5;
    long day, year, h, mi, sec;
    if (!digits(&p, 2, &day) || *p++ != ' ')
        return false;
    int mon = 0;
    for (int i = 0; i < 12; i++)
        if (strncmp(p, months[i], 3) == 0)
            mon = i + 1;
    if (mon == 0 || p[3] != ' ')
        return false;
    p += 4;
    if (!digits(&p, 4, &year) || *p++ != ' ' || !digits(&p, 2, &h) || *p++ != ':' ||
        !digits(&p, 2, &mi) || *p++ != ':' || !digits(&p, 2, &sec) || strcmp(p, " GMT") != 0)
        return false;
    return civil_to_ms(year, mon, (int)day, (int)h, (int)mi, (int)sec, ms);
}

/* "2026-04-14T03:50:12[.fff][Z|+hh:mm|+hhmm]"; no zone means UTC. */
static bool parse_iso8601(const char *s, int64_t *ms)
{
    const char *p = s;
    long year, mon, day, h, mi, sec;
    if (!digits(&p, 4, &year) || *p++ != '-' || !digits(&p, 2, &mon) || *p++ != '-' ||
        !digits(&p, 2, &day) || (*p != 'T' && *p != 't' && *p != ' '))
        return false;
    p++;
    if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) || *p++ != ':' ||
        !digits(&p, 2, &sec))
        return false;
    int frac_ms = 0;
    if (*p == '.' || *p == ',') {
        p++;
        int n = 0;
        while (isdigit((unsigned char)*p)) {
            if (n < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
            n++;
            p++;
        }
        if (n == 0)
            return false;
        for (; n < 3; n++)
            frac_ms *= 10;
    }
    int64_t offset_ms = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1;
        long oh, om;
        if (!digits(&p, 2, &oh))
            return false;
        if (*p == ':')
            p++;
        if (!digits(&p, 2, &om) || oh > 23 || om > 59)
            return false;
        offset_ms = sign * (oh * 60 + om) * 60000LL;
    }
    if (*p != '\0')
        return false;
    int64_t base;
    if (!civil_to_ms(year, (int)mon, (int)day, (int)h, (int)mi, (int)sec, &base))
        return false;
    *ms = base + frac_ms - offset_ms;
    return *ms >= 0 && *ms <= KLAVIYO_MAX_MS;
}

/* Epoch seconds ("1776138612", fraction allowed); 13 or more integer digits are milliseconds. */
static bool parse_epoch_text(const char *s, int64_t *ms)
{
    const char *p = s;
    int64_t v = 0;
    int n = 0;
    while (isdigit((unsigned char)*p)) {
        if (++n > 16)
            return false;
        v = v * 10 + (*p++ - '0');
    }
    if (n == 0)
        return false;
    bool is_ms = n >= 13;
    int frac_ms = 0;
    if (*p == '.' && !is_ms) {
        p++;
        int k = 0;
        while (isdigit((unsigned char)*p)) {
            if (k < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
            k++;
            p++;
        }
        for (; k < 3; k++)
            frac_ms *= 10;
    }
    if (*p != '\0')
        return false;
    *ms = is_ms ? v : v * 1000 + frac_ms;
    return *ms <= KLAVIYO_MAX_MS;
}

static bool parse_time_text(const char *s, int64_t *ms)
{
    return parse_imf_fixdate(s, ms) || parse_iso8601(s, ms) || parse_epoch_text(s, ms);
}

/* A JSON time: a date string, or epoch seconds as a number (Klaviyo's attributes.timestamp). */
static bool parse_time_json(hf_json v, int64_t *ms)
{
    if (hf_json_str(v))
        return parse_time_text(hf_json_str(v), ms);
    const char *num = hf_json_number_text(v);
    return num && parse_epoch_text(num, ms);
}

/* ---- shared event fields -------------------------------------------------------------------- */

/* "profile:<id>" when the event names a profile, else NULL. */
static char *profile_resource(hf_json obj)
{
    const char *id =
        provider_util_id_text(hf_json_path(obj, "relationships", "profile", "data", "id", NULL));
    if (!id)
        id = provider_util_id_text(hf_json_get(obj, "profile_id"));
    return id ? xconcat("profile:", id, NULL) : NULL;
}

/* The first parseable time among attributes.datetime, attributes.timestamp, datetime,
 * timestamp and occurred_at of obj, as RFC 3339 UTC; NULL if none. */
static char *event_time(hf_json obj)
{
    hf_json candidates[] = {
        hf_json_path(obj, "attributes", "datetime", NULL),
        hf_json_path(obj, "attributes", "timestamp", NULL),
        hf_json_get(obj, "datetime"),
        hf_json_get(obj, "timestamp"),
        hf_json_get(obj, "occurred_at"),
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(candidates); i++) {
        int64_t ms;
        if (candidates[i] && parse_time_json(candidates[i], &ms))
            return ingest_time_from_ms(ms);
    }
    return NULL;
}

static void sha256_hex(const char *s, char hex[2 * HF_SHA256_LEN + 1])
{
    unsigned char digest[HF_SHA256_LEN];
    hf_sha256(s, strlen(s), digest);
    hf_hex_encode(digest, sizeof digest, hex);
}

/* ---- system webhooks ------------------------------------------------------------------------ */

/* Exactly 2*n hex digits (either case, surrounding blanks ignored) into out. */
static bool hex_decode_exact(const char *s, unsigned char *out, size_t n)
{
    size_t len;
    s = provider_util_trim_blanks(s, &len);
    return hf_hex_decode(s, len, out, n);
}

static bool system_signature_ok(const ingest_request *req, const char *ts, const char *sig)
{
    unsigned char want[HF_SHA256_LEN];
    if (!hex_decode_exact(sig, want, sizeof want))
        return false;
    const char *keys[2];
    size_t lens[2];
    size_t nkeys = provider_util_get_keys(req, KLAVIYO_WEBHOOK_SECRET, keys, lens);
    bool ok = false;
    for (size_t i = 0; i < nkeys; i++) {
        hf_mac *m = hf_mac_new(HF_MAC_HMAC_SHA256, keys[i], lens[i]);
        hf_mac_update(m, req->body, req->body_len);
        hf_mac_update(m, ts, strlen(ts));
        unsigned char got[HF_SHA256_LEN];
        hf_mac_final(m, got);
        /* No early exit: both keys cost the same whichever matches. */
        ok |= hf_ct_equal(got, sizeof got, want, sizeof want);
    }
    return ok;
}

static bool add_system_event(ingest_result *res, hf_json item, size_t idx, const char *account)
{
    if (!hf_json_is_object(item)) {
        ingest_result_fail(res, 400, "malformed", "data[%zu] is not an object", idx);
        return false;
    }
    const char *topic = hf_json_str(hf_json_get(item, "topic"));
    if (!topic || !*topic) {
        ingest_result_fail(res, 400, "malformed", "data[%zu].topic is missing", idx);
        return false;
    }
    char *payload = provider_util_payload(item);
    const char *external_id = provider_util_id_text(hf_json_get(item, "external_id"));
    char *id;
    if (external_id) {
        id = xconcat("klaviyo:", external_id, NULL);
    } else {
        char hex[2 * HF_SHA256_LEN + 1];
        sha256_hex(payload, hex);
        id = ingest_derive_id("klaviyo", account, topic, hex, NULL);
    }
    hf_json event = hf_json_get(item, "payload");
    /* "Same shape as Get Event": the event itself sits under data (older deliveries and the
     * flow-style items have it at the top). */
    if (hf_json_is_object(hf_json_get(event, "data")))
        event = hf_json_get(event, "data");
    ingest_result_add(res, id, xstrdup(topic), xstrdup(account), profile_resource(event),
                      event_time(event), payload);
    return true;
}

static void handle_system(const ingest_request *req, ingest_result *res, const char *sig)
{
    const char *keys[2];
    size_t lens[2];
    if (provider_util_get_keys(req, KLAVIYO_WEBHOOK_SECRET, keys, lens) == 0) {
        ingest_result_fail(res, 503, "missing_secret", "%s is not configured",
                           KLAVIYO_WEBHOOK_SECRET);
        return;
    }
    const char *ts = provider_util_header(req, "Klaviyo-Timestamp");
    const char *webhook_id = provider_util_header(req, "Klaviyo-Webhook-Id");
    if (!ts || !webhook_id) {
        ingest_result_fail(res, 401, "missing_signature", "%s header missing",
                           !ts ? "Klaviyo-Timestamp" : "Klaviyo-Webhook-Id");
        return;
    }
    if (!system_signature_ok(req, ts, sig)) {
        ingest_result_fail(res, 401, "bad_signature", "Klaviyo-Signature does not match");
        return;
    }
    int64_t sent_ms;
    if (!parse_time_text(ts, &sent_ms)) {
        ingest_result_fail(res, 401, "stale_timestamp", "Klaviyo-Timestamp is not a date");
        return;
    }
    int64_t skew = req->now_ms - sent_ms;
    if (skew > KLAVIYO_WINDOW_MS || skew < -KLAVIYO_WINDOW_MS) {
        ingest_result_fail(res, 401, "stale_timestamp",
                           "Klaviyo-Timestamp is %lld s from now (limit 300 s)",
                           (long long)(skew / 1000));
        return;
    }
    hf_json root = provider_util_parse_body(req, res);
    if (!root)
        return;
    hf_json meta = hf_json_get(root, "meta");
    const char *body_webhook_id = hf_json_str(hf_json_get(meta, "klaviyo_webhook_id"));
    if (!body_webhook_id ||
        !hf_ct_equal(body_webhook_id, strlen(body_webhook_id), webhook_id, strlen(webhook_id))) {
        ingest_result_fail(res, 401, "bad_signature", "webhook id mismatch");
        goto done;
    }
    const char *account = provider_util_id_text(hf_json_get(meta, "klaviyo_account_id"));
    if (!account) {
        ingest_result_fail(res, 400, "malformed", "meta.klaviyo_account_id is missing");
        goto done;
    }
    hf_json data = hf_json_get(root, "data");
    if (!hf_json_is_array(data)) {
        ingest_result_fail(res, 400, "malformed", "data is not an array");
        goto done;
    }
    for (size_t i = 0; i < hf_json_len(data); i++)
        if (!add_system_event(res, hf_json_at(data, i), i, account))
            goto done;
    res->status = 200;
    res->reason = "accepted";
done:
    hf_json_free(root);
}

/* ---- flow webhooks -------------------------------------------------------------------------- */

/* Hashing both sides first makes the comparison independent of the secret's length. */
static bool add_flow_event(const ingest_request *req, ingest_result *res, hf_json obj, size_t idx)
{
    if (!hf_json_is_object(obj)) {
        ingest_result_fail(res, 400, "malformed", "item %zu is not an object", idx);
        return false;
    }
    const char *account = provider_util_id_text(hf_json_get(obj, "klaviyo_account_id"));
    if (!account)
        account = provider_util_id_text(hf_json_get(obj, "account_id"));
    if (!account) {
        const char *hdr = provider_util_header(req, "X-Hookflow-Account");
        if (hdr && *hdr && !ingest_utf8_valid(hdr, strlen(hdr))) {
            ingest_result_fail(res, 400, "malformed", "the X-Hookflow-Account header is not UTF-8");
            return false;
        }
        account = hdr && *hdr ? hdr : NULL;
    }
    if (!account) {
        ingest_result_fail(res, 400, "malformed",
                           "item %zu has no klaviyo_account_id or account_id and no "
                           "X-Hookflow-Account header was sent",
                           idx);
        return false;
    }
    const char *kind = hf_json_str(hf_json_get(obj, "topic"));
    if (!kind || !*kind)
        kind = hf_json_str(hf_json_get(obj, "event"));
    char *native = kind && *kind ? xconcat("flow.", kind, NULL) : xstrdup("flow.webhook");
    char *payload = provider_util_payload(obj);
    const char *own_id = provider_util_id_text(hf_json_get(obj, "id"));
    if (!own_id)
        own_id = provider_util_id_text(hf_json_get(obj, "external_id"));
    if (!own_id)
        own_id = provider_util_id_text(hf_json_get(obj, "event_id"));
    char *id;
    if (own_id) {
        id = xconcat("klaviyo:", own_id, NULL);
    } else {
        char hex[2 * HF_SHA256_LEN + 1];
        sha256_hex(payload, hex);
        id = ingest_derive_id("klaviyo", account, hex, NULL);
    }
    ingest_result_add(res, id, native, xstrdup(account), profile_resource(obj), event_time(obj),
                      payload);
    return true;
}

static void handle_flow(const ingest_request *req, ingest_result *res)
{
    provider_util_keys keys;
    if (!provider_util_load_keys(req, KLAVIYO_FLOW_SECRET, &keys, res))
        return;
    const char *given = provider_util_header(req, "X-Hookflow-Flow-Secret");
    if (!given) {
        ingest_result_fail(res, 401, "missing_signature",
                           "neither Klaviyo-Signature nor X-Hookflow-Flow-Secret was sent");
        return;
    }
    if (!provider_util_secret_matches(&keys, given, strlen(given))) {
        ingest_result_fail(res, 401, "bad_signature", "X-Hookflow-Flow-Secret does not match");
        return;
    }
    hf_json root = provider_util_parse_body(req, res);
    if (!root)
        return;
    if (hf_json_is_array(root)) {
        for (size_t i = 0; i < hf_json_len(root); i++)
            if (!add_flow_event(req, res, hf_json_at(root, i), i))
                goto done;
    } else if (hf_json_is_object(root)) {
        if (!add_flow_event(req, res, root, 0))
            goto done;
    } else {
        ingest_result_fail(res, 400, "malformed", "body is neither an object nor an array");
        goto done;
    }
    res->status = 200;
    res->reason = "accepted";
done:
    hf_json_free(root);
}

static void klaviyo_handle(const ingest_request *req, ingest_result *res)
{
    if (strcmp(req->method, "POST") != 0) {
        ingest_result_fail(res, 405, "method_not_allowed", "%.16s is not allowed; use POST",
                           req->method);
        return;
    }
    const char *sig = provider_util_header(req, "Klaviyo-Signature");
    if (sig)
        handle_system(req, res, sig);
    else
        handle_flow(req, res);
}

const ingest_provider ingest_provider_klaviyo = {
    .id = "klaviyo",
    .accepts_get = false,
    .handle = klaviyo_handle,
};
