/* xero: verifies Xero webhooks (base64 HMAC-SHA256 of the raw body under the webhook key),
 * answers intent-to-receive, and splits a delivery into one event per entry of events[]. */
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "provider.h"
#include "provider_util.h"
#include "util.h"

#define XERO_SECRET "xero/webhook_key"
#define XERO_SIGNATURE_HEADER "x-xero-signature"

/* A required, non-empty string member of a Xero event. */
static const char *required_str(hf_json ev, const char *key)
{
    const char *s = hf_json_str(hf_json_get(ev, key));
    return s && *s ? s : NULL;
}

/* Adds event i of the delivery; false (res failed with 400) when a required field is missing. */
static bool add_event(hf_json ev, size_t i, ingest_result *res)
{
    if (!hf_json_is_object(ev)) {
        ingest_result_fail(res, 400, "malformed", "events[%zu] is not an object", i);
        return false;
    }
    static const char *const required[] = {"tenantId", "resourceId", "eventCategory", "eventType"};
    for (size_t k = 0; k < HF_ARRAY_LEN(required); k++) {
        if (!required_str(ev, required[k])) {
            ingest_result_fail(res, 400, "malformed", "events[%zu] has no string %s", i,
                               required[k]);
            return false;
        }
    }
    const char *tenant = required_str(ev, "tenantId");
    const char *resource_id = required_str(ev, "resourceId");
    const char *category = required_str(ev, "eventCategory");
    const char *type = required_str(ev, "eventType");
    const char *date = hf_json_str(hf_json_get(ev, "eventDateUtc"));

    /* Xero events carry no id: derive one from what identifies the change, so a redelivered
     * batch maps to the same ids. */
    char *id =
        ingest_derive_id("xero", tenant, category, resource_id, type, date ? date : "", NULL);
    ingest_result_add(res, id, xconcat(category, ".", type, NULL), xstrdup(tenant),
                      xconcat(category, ":", resource_id, NULL), provider_util_time_normalise(date),
                      provider_util_payload(ev));
    return true;
}

static void xero_handle(const ingest_request *req, ingest_result *res)
{
    if (!provider_util_require_post(req, res))
        return;
    /* Intent-to-receive depends on exactly this: 401 for every incorrectly signed request. */
    if (!provider_util_signed_b64(req, XERO_SECRET, XERO_SIGNATURE_HEADER, res))
        return;
    hf_json root = provider_util_parse_body(req, res);
    if (!root)
        return;
    hf_json events = hf_json_get(root, "events");
    if (!hf_json_is_array(events)) {
        ingest_result_fail(res, 400, "malformed", "body has no events array");
        goto done;
    }
    size_t n = hf_json_len(events);
    for (size_t i = 0; i < n; i++)
        if (!add_event(hf_json_at(events, i), i, res))
            goto done;
    res->status = 200;
    /* A signed empty batch is how intent-to-receive probes look; it carries nothing to store. */
    res->reason = n == 0 ? "handshake" : "accepted";
done:
    hf_json_free(root);
}

const ingest_provider ingest_provider_xero = {
    .id = "xero",
    .accepts_get = false,
    .handle = xero_handle,
};
