/* hubspot: verifies HubSpot webhooks (signature v3: base64 HMAC-SHA256 over method + decoded URL
 * + body + timestamp with a 5-minute window; v1/v2: hex SHA-256 of secret + [method + URL +]
 * body) and splits the body: an array of CRM events, or one workflow "send a webhook" object. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "json.h"
#include "provider.h"
#include "provider_util.h"
#include "util.h"

#define HUBSPOT_SECRET "hubspot/client_secret"
#define HUBSPOT_MAX_SKEW_MS 300000LL

/* The URL with HubSpot's listed escapes decoded (%3A : %2F / %3F ? %40 @ %21 ! %24 $ %27 ' %28 (
 * %29 ) %2A * %2C , %3B ;, hex in either case); every other byte is kept as is. Caller frees. */
static char *decode_v3_url(const char *url)
{
    static const char decodable[] = ":/?@!$'()*,;";
    size_t n = strlen(url);
    char *out = xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char byte;
        if (url[i] == '%' && i + 2 < n && hf_hex_decode(url + i + 1, 2, &byte, 1)) {
            if (byte != '\0' && strchr(decodable, byte)) {
                out[o++] = (char)byte;
                i += 2;
                continue;
            }
        }
        out[o++] = url[i];
    }
    out[o] = '\0';
    return out;
}

/* v3: checks the timestamp window, then the HMAC. Fails res and returns false on any problem. */
static bool verify_v3(const ingest_request *req, const provider_util_keys *keys, const char *sig,
                      ingest_result *res)
{
    const char *ts = provider_util_header(req, "X-HubSpot-Request-Timestamp");
    long long ts_ms, skew;
    bool digits = ts && *ts && strspn(ts, "0123456789") == strlen(ts) && strlen(ts) <= 18;
    if (!digits || !hf_parse_ll(ts, &ts_ms)) {
        ingest_result_fail(res, 401, "stale_timestamp",
                           "X-HubSpot-Request-Timestamp is missing or not epoch milliseconds");
        return false;
    }
    if (__builtin_sub_overflow((long long)req->now_ms, ts_ms, &skew) ||
        skew > HUBSPOT_MAX_SKEW_MS || skew < -HUBSPOT_MAX_SKEW_MS) {
        ingest_result_fail(res, 401, "stale_timestamp",
                           "X-HubSpot-Request-Timestamp is more than %lld ms from now",
                           HUBSPOT_MAX_SKEW_MS);
        return false;
    }
    unsigned char given[HF_SHA256_LEN + 3];
    long glen = hf_base64_decode(sig, strlen(sig), given, sizeof given);
    char *url = decode_v3_url(req->public_url ? req->public_url : "");
    bool ok = false;
    for (size_t i = 0; i < keys->n; i++) {
        hf_mac *m = hf_mac_new(HF_MAC_HMAC_SHA256, keys->vals[i], keys->lens[i]);
        hf_mac_update(m, req->method, strlen(req->method));
        hf_mac_update(m, url, strlen(url));
        hf_mac_update(m, req->body, req->body_len);
        hf_mac_update(m, ts, strlen(ts));
        unsigned char want[HF_SHA256_LEN];
        hf_mac_final(m, want);
        ok |= glen >= 0 && hf_ct_equal(want, sizeof want, given, (size_t)glen);
    }
    free(url);
    if (!ok)
        ingest_result_fail(res, 401, "bad_signature", "X-HubSpot-Signature-v3 does not match%s",
                           req->public_url ? "" : " (the public URL is not configured)");
    return ok;
}

/* v1 (secret + body) and v2 (secret + method + URL + body): hex SHA-256. */
static bool verify_v1_v2(const ingest_request *req, const provider_util_keys *keys, const char *sig,
                         ingest_result *res)
{
    const char *version = provider_util_header(req, "X-HubSpot-Signature-Version");
    bool v2;
    if (!version || hf_strieq(version, "v1")) {
        v2 = false;
    } else if (hf_strieq(version, "v2")) {
        v2 = true;
    } else {
        ingest_result_fail(res, 401, "bad_signature",
                           "unsupported X-HubSpot-Signature-Version (expected v1 or v2)");
        return false;
    }
    unsigned char given[HF_SHA256_LEN];
    bool hex_ok = hf_hex_decode(sig, strlen(sig), given, sizeof given);
    const char *url = req->public_url ? req->public_url : "";
    bool ok = false;
    for (size_t i = 0; i < keys->n; i++) {
        hf_mac *m = hf_mac_new(HF_MAC_SHA256, NULL, 0);
        hf_mac_update(m, keys->vals[i], keys->lens[i]);
        if (v2) {
            hf_mac_update(m, req->method, strlen(req->method));
            hf_mac_update(m, url, strlen(url));
        }
        hf_mac_update(m, req->body, req->body_len);
        unsigned char want[HF_SHA256_LEN];
        hf_mac_final(m, want);
        ok |= hex_ok && hf_ct_equal(want, sizeof want, given, sizeof given);
    }
    if (!ok)
        ingest_result_fail(res, 401, "bad_signature", "X-HubSpot-Signature (%s) does not match%s",
                           v2 ? "v2" : "v1",
                           v2 && !req->public_url ? " (the public URL is not configured)" : "");
    return ok;
}

/* "<objectType>:<objectId>" with the object type lower-cased (malloc'd), or NULL. */
static char *resource_of(const char *object_type, size_t type_len, const char *object_id)
{
    if (!object_id || type_len == 0)
        return NULL;
    char *r = xasprintf("%.*s:%s", (int)type_len, object_type, object_id);
    for (size_t i = 0; i < type_len; i++)
        r[i] = (char)tolower((unsigned char)r[i]);
    return r;
}

static char *occurred_at_of(hf_json ev)
{
    long long ms;
    return hf_json_int(hf_json_get(ev, "occurredAt"), &ms) ? provider_util_time_from_ms(ms) : NULL;
}

/* CRM webhooks: an array of events. */
static bool split_events(hf_json arr, ingest_result *res)
{
    for (size_t i = 0; i < hf_json_len(arr); i++) {
        hf_json ev = hf_json_at(arr, i);
        const char *portal = provider_util_id_text(hf_json_get(ev, "portalId"));
        const char *event_id = provider_util_id_text(hf_json_get(ev, "eventId"));
        const char *type = hf_json_str(hf_json_get(ev, "subscriptionType"));
        if (!type || !*type)
            type = hf_json_str(hf_json_get(ev, "eventType"));
        if (!hf_json_is_object(ev) || !portal || !event_id || !type || !*type) {
            ingest_result_fail(res, 400, "malformed",
                               "event %zu needs portalId, eventId and subscriptionType", i);
            return false;
        }
        const char *sub = provider_util_id_text(hf_json_get(ev, "subscriptionId"));
        const char *occurred = hf_json_number_text(hf_json_get(ev, "occurredAt"));
        /* eventId alone is not unique; the documented dedupe key is all four. */
        char *id = ingest_derive_id("hubspot", portal, sub ? sub : "", event_id,
                                    occurred ? occurred : "", NULL);
        const char *dot = strchr(type, '.');
        char *resource = resource_of(type, dot ? (size_t)(dot - type) : strlen(type),
                                     provider_util_id_text(hf_json_get(ev, "objectId")));
        ingest_result_add(res, id, xstrdup(type), xstrdup(portal), resource, occurred_at_of(ev),
                          provider_util_payload(ev));
    }
    return true;
}

/* A workflow "send a webhook" action: one object, no event id of its own. */
static bool add_workflow_event(const ingest_request *req, hf_json obj, ingest_result *res)
{
    const char *portal = provider_util_id_text(hf_json_get(obj, "portalId"));
    if (!portal)
        portal = provider_util_id_text(hf_json_path(obj, "origin", "portalId", NULL));
    if (!portal) /* the classic contact-record shape */
        portal = provider_util_id_text(hf_json_get(obj, "portal-id"));
    if (!portal) {
        ingest_result_fail(res, 400, "malformed",
                           "workflow webhook has no portalId or origin.portalId");
        return false;
    }
    /* The same body redelivered hashes the same, so its id is stable. */
    unsigned char digest[HF_SHA256_LEN];
    char body_hex[2 * HF_SHA256_LEN + 1];
    hf_sha256(req->body, req->body_len, digest);
    hf_hex_encode(digest, sizeof digest, body_hex);
    const char *object_type = hf_json_str(hf_json_path(obj, "object", "objectType", NULL));
    char *resource =
        resource_of(object_type, object_type ? strlen(object_type) : 0,
                    provider_util_id_text(hf_json_path(obj, "object", "objectId", NULL)));
    ingest_result_add(res, ingest_derive_id("hubspot", portal, body_hex, NULL),
                      xstrdup("workflow.webhook"), xstrdup(portal), resource, occurred_at_of(obj),
                      provider_util_payload(obj));
    return true;
}

static void hubspot_handle(const ingest_request *req, ingest_result *res)
{
    if (!provider_util_require_post(req, res))
        return;
    provider_util_keys keys;
    if (!provider_util_load_keys(req, HUBSPOT_SECRET, &keys, res))
        return;
    const char *sig_v3 = provider_util_header(req, "X-HubSpot-Signature-v3");
    const char *sig = provider_util_header(req, "X-HubSpot-Signature");
    if (sig_v3) {
        if (!verify_v3(req, &keys, sig_v3, res))
            return;
    } else if (sig) {
        if (!verify_v1_v2(req, &keys, sig, res))
            return;
    } else {
        ingest_result_fail(res, 401, "missing_signature",
                           "no X-HubSpot-Signature-v3 or X-HubSpot-Signature header");
        return;
    }

    hf_json root = provider_util_parse_body(req, res);
    if (!root)
        return;
    bool ok;
    if (hf_json_is_array(root)) {
        ok = split_events(root, res);
    } else if (hf_json_is_object(root)) {
        ok = add_workflow_event(req, root, res);
    } else {
        ingest_result_fail(res, 400, "malformed", "body is neither an event array nor an object");
        ok = false;
    }
    if (ok) {
        res->status = 200;
        res->reason = "accepted";
    }
    hf_json_free(root);
}

const ingest_provider ingest_provider_hubspot = {
    .id = "hubspot",
    .accepts_get = false,
    .handle = hubspot_handle,
};
