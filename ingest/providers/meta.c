/* meta: Messenger Platform webhooks: X-Hub-Signature-256 (hex HMAC-SHA256 of the raw body with
 * the App Secret), one event per messaging item of every entry, and the GET subscription
 * handshake (hub.mode / hub.verify_token / hub.challenge). */
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

#define META_APP_SECRET "meta/app_secret"
#define META_VERIFY_TOKEN "meta/verify_token"
/* 9999-12-31T23:59:59.999Z: later timestamps are not times Meta sends. */
#define META_MAX_MS 253402300799999LL

/* The messaging item keys that name its kind, in the order they are looked for. */
static const char *const meta_kinds[] = {"message",  "postback", "delivery", "read",
                                         "reaction", "optin",    "referral", "account_linking"};

/* ---- handshake ------------------------------------------------------------------------------ */

static void handle_handshake(const ingest_request *req, ingest_result *res)
{
    provider_util_keys keys;
    if (!provider_util_load_keys(req, META_VERIFY_TOKEN, &keys, res))
        return;
    ingest_form query = {0};
    ingest_form_parse(&query, req->query, req->query ? strlen(req->query) : 0);
    const ingest_form_param *mode = ingest_form_find(&query, "hub.mode");
    const ingest_form_param *token = ingest_form_find(&query, "hub.verify_token");
    const ingest_form_param *challenge = ingest_form_find(&query, "hub.challenge");
    if (!mode || strcmp(mode->value, "subscribe") != 0 || mode->value_len != 9) {
        ingest_result_fail(res, 403, "bad_verify_token", "hub.mode is not subscribe");
        goto done;
    }
    if (!token || !provider_util_secret_matches(&keys, token->value, token->value_len)) {
        ingest_result_fail(res, 403, "bad_verify_token", "hub.verify_token %s",
                           token ? "does not match" : "missing");
        goto done;
    }
    if (!challenge || challenge->value_len == 0 ||
        memchr(challenge->value, '\0', challenge->value_len)) {
        ingest_result_fail(res, 400, "malformed", "hub.challenge missing or not text");
        goto done;
    }
    res->status = 200;
    res->reason = "handshake";
    res->response_body = xstrdup(challenge->value);
    res->response_type = "text/plain";
done:
    ingest_form_free(&query);
}

/* ---- deliveries ----------------------------------------------------------------------------- */

/* "sha256=<64 hex digits>" (either case) into out. */
static bool parse_signature(const char *h, unsigned char out[HF_SHA256_LEN])
{
    size_t len;
    h = provider_util_trim_blanks(h, &len);
    return len > 7 && strncasecmp(h, "sha256=", 7) == 0 &&
           hf_hex_decode(h + 7, len - 7, out, HF_SHA256_LEN);
}

static char *occurred_at(hf_json ts)
{
    long long ms;
    if (!hf_json_int(ts, &ms) || ms < 0 || ms > META_MAX_MS)
        return NULL;
    return ingest_time_from_ms(ms);
}

static bool add_messaging_event(ingest_result *res, const char *page, hf_json entry_time,
                                hf_json item, size_t e, size_t m)
{
    if (!hf_json_is_object(item)) {
        ingest_result_fail(res, 400, "malformed", "entry[%zu].messaging[%zu] is not an object", e,
                           m);
        return false;
    }
    const char *kind = "unknown";
    hf_json body = NULL;
    for (size_t i = 0; i < HF_ARRAY_LEN(meta_kinds); i++) {
        body = hf_json_get(item, meta_kinds[i]);
        if (body) {
            kind = meta_kinds[i];
            break;
        }
    }
    bool echo = strcmp(kind, "message") == 0 && YAJL_IS_TRUE(hf_json_get(body, "is_echo"));
    const char *native = echo ? "message_echo" : kind;

    const char *own_id = NULL;
    if (strcmp(kind, "message") == 0 || strcmp(kind, "postback") == 0)
        own_id = provider_util_id_text(hf_json_get(body, "mid"));
    const char *sender = provider_util_id_text(hf_json_path(item, "sender", "id", NULL));
    char *id;
    if (own_id) {
        id = xconcat("meta:", own_id, NULL);
    } else {
        const char *ts = hf_json_scalar_text(hf_json_get(item, "timestamp"));
        const char *watermark = hf_json_scalar_text(hf_json_get(body, "watermark"));
        if (watermark)
            id = ingest_derive_id("meta", page, sender ? sender : "", ts ? ts : "", native,
                                  watermark, NULL);
        else
            id = ingest_derive_id("meta", page, sender ? sender : "", ts ? ts : "", native, NULL);
    }
    /* An echo is sent by the page: the conversation is named by its recipient. */
    const char *user =
        echo ? provider_util_id_text(hf_json_path(item, "recipient", "id", NULL)) : sender;
    char *resource = user ? xconcat("psid:", user, NULL) : NULL;
    /* The item's own time; items without one (deliveries and reads in Meta's examples) happened
     * by the time of their entry. */
    char *when = occurred_at(hf_json_get(item, "timestamp"));
    if (!when)
        when = occurred_at(entry_time);
    ingest_result_add(res, id, xstrdup(native), xstrdup(page), resource, when,
                      provider_util_payload(item));
    return true;
}

static bool add_entry_events(ingest_result *res, hf_json entry, size_t e)
{
    if (!hf_json_is_object(entry)) {
        ingest_result_fail(res, 400, "malformed", "entry[%zu] is not an object", e);
        return false;
    }
    const char *page = provider_util_id_text(hf_json_get(entry, "id"));
    if (!page) {
        ingest_result_fail(res, 400, "malformed", "entry[%zu].id is missing", e);
        return false;
    }
    hf_json messaging = hf_json_get(entry, "messaging");
    if (!messaging)
        return true; /* other fields (changes, standby) carry no messaging events */
    if (!hf_json_is_array(messaging)) {
        ingest_result_fail(res, 400, "malformed", "entry[%zu].messaging is not an array", e);
        return false;
    }
    for (size_t m = 0; m < hf_json_len(messaging); m++)
        if (!add_messaging_event(res, page, hf_json_get(entry, "time"), hf_json_at(messaging, m), e,
                                 m))
            return false;
    return true;
}

static void handle_delivery(const ingest_request *req, ingest_result *res)
{
    provider_util_keys keys;
    if (!provider_util_load_keys(req, META_APP_SECRET, &keys, res))
        return;
    const char *sig = provider_util_header(req, "X-Hub-Signature-256");
    if (!sig) {
        ingest_result_fail(res, 401, "missing_signature", "X-Hub-Signature-256 header missing");
        return;
    }
    unsigned char given[HF_SHA256_LEN];
    if (!parse_signature(sig, given) ||
        !provider_util_hmac_matches(&keys, given, sizeof given, req->body, req->body_len)) {
        ingest_result_fail(res, 401, "bad_signature", "X-Hub-Signature-256 does not match");
        return;
    }
    hf_json root = provider_util_parse_body(req, res);
    if (!root)
        return;
    hf_json entries = hf_json_get(root, "entry");
    if (!hf_json_is_array(entries)) {
        ingest_result_fail(res, 400, "malformed", "%s",
                           !hf_json_is_object(root) ? "body is not a JSON object"
                           : entries                ? "entry is not an array"
                                                    : "entry is missing");
        goto done;
    }
    for (size_t e = 0; e < hf_json_len(entries); e++)
        if (!add_entry_events(res, hf_json_at(entries, e), e))
            goto done;
    res->status = 200;
    res->reason = "accepted";
done:
    hf_json_free(root);
}

static void meta_handle(const ingest_request *req, ingest_result *res)
{
    if (strcmp(req->method, "GET") == 0)
        handle_handshake(req, res);
    else if (strcmp(req->method, "POST") == 0)
        handle_delivery(req, res);
    else
        ingest_result_fail(res, 405, "method_not_allowed",
                           "%.16s is not allowed; use POST (or GET for the handshake)",
                           req->method);
}

const ingest_provider ingest_provider_meta = {
    .id = "meta",
    .accepts_get = true,
    .handle = meta_handle,
};
