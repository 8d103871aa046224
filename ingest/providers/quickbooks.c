/* quickbooks: verifies QuickBooks Online webhooks (base64 HMAC-SHA256 of the raw body under the
 * verifier token) and splits both payload formats into events: the legacy eventNotifications
 * object (one event per changed entity) and the CloudEvents array (one event per element). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "provider.h"
#include "provider_util.h"
#include "util.h"

#define QBO_SECRET "quickbooks/verifier_token"
#define QBO_SIGNATURE_HEADER "intuit-signature"

/* The entity object with "realmId" first, as compact JSON (malloc'd). An entity member named
 * realmId is left out so the object keeps unique keys. */
static char *entity_payload(const char *realm, hf_json entity)
{
    hf_buf b = {0};
    hf_buf_puts(&b, "{\"realmId\":");
    hf_json_append_cstr(&b, realm);
    size_t n = hf_json_len(entity);
    for (size_t i = 0; i < n; i++) {
        const char *key;
        hf_json v = hf_json_member(entity, i, &key);
        if (strcmp(key, "realmId") == 0)
            continue;
        hf_buf_putc(&b, ',');
        hf_json_append_cstr(&b, key);
        hf_buf_putc(&b, ':');
        hf_json_serialize(v, &b);
    }
    hf_buf_putc(&b, '}');
    return hf_buf_steal(&b);
}

/* "<entity>:<id>" with the entity name in lower case: the same entity gets the same resource
 * (and so the same ordering key) in the legacy format ("SalesReceipt") and in CloudEvents
 * ("qbo.salesreceipt.created.v1"), also while an app moves from one to the other. */
static char *entity_resource(const char *entity, const char *id)
{
    size_t entity_len = strlen(entity);
    char *r = xmalloc(entity_len + 1 + strlen(id) + 1);
    for (size_t i = 0; i < entity_len; i++)
        r[i] = (char)tolower((unsigned char)entity[i]);
    r[entity_len] = ':';
    strcpy(r + entity_len + 1, id);
    return r;
}

/* Legacy format: {"eventNotifications":[{"realmId", "dataChangeEvent":{"entities":[...]}}]}. */
static bool split_legacy(hf_json notifications, ingest_result *res)
{
    if (!hf_json_is_array(notifications)) {
        ingest_result_fail(res, 400, "malformed", "eventNotifications is not an array");
        return false;
    }
    for (size_t i = 0; i < hf_json_len(notifications); i++) {
        hf_json note = hf_json_at(notifications, i);
        const char *realm = provider_util_id_text(hf_json_get(note, "realmId"));
        if (!realm) {
            ingest_result_fail(res, 400, "malformed", "eventNotifications[%zu] has no realmId", i);
            return false;
        }
        hf_json entities = hf_json_path(note, "dataChangeEvent", "entities", NULL);
        if (!hf_json_is_array(entities)) {
            ingest_result_fail(res, 400, "malformed",
                               "eventNotifications[%zu].dataChangeEvent.entities is not an array",
                               i);
            return false;
        }
        for (size_t j = 0; j < hf_json_len(entities); j++) {
            hf_json entity = hf_json_at(entities, j);
            const char *name = hf_json_str(hf_json_get(entity, "name"));
            const char *id = provider_util_id_text(hf_json_get(entity, "id"));
            const char *op = hf_json_str(hf_json_get(entity, "operation"));
            if (!name || !*name || !id || !op || !*op) {
                ingest_result_fail(res, 400, "malformed",
                                   "eventNotifications[%zu] entities[%zu] needs name, id and "
                                   "operation",
                                   i, j);
                return false;
            }
            const char *updated = hf_json_str(hf_json_get(entity, "lastUpdated"));
            /* The legacy format has no event id: derive one from what identifies the change. */
            char *event_id =
                ingest_derive_id("quickbooks", realm, name, id, op, updated ? updated : "", NULL);
            ingest_result_add(res, event_id, xconcat(name, ".", op, NULL), xstrdup(realm),
                              entity_resource(name, id), provider_util_time_normalise(updated),
                              entity_payload(realm, entity));
        }
    }
    return true;
}

/* The entity segment of a CloudEvents type "qbo.<entity>.<action>[.v1]" (malloc'd), or NULL
 * when the type does not have at least three segments. */
static char *cloudevent_entity(const char *type)
{
    const char *first = strchr(type, '.');
    if (!first)
        return NULL;
    const char *second = strchr(first + 1, '.');
    if (!second || second == first + 1)
        return NULL;
    return xstrndup(first + 1, (size_t)(second - first - 1));
}

/* CloudEvents format: [{"specversion", "id", "type", "time", "intuitentityid",
 * "intuitaccountid", "data", ...}]. */
static bool split_cloudevents(hf_json arr, ingest_result *res)
{
    for (size_t i = 0; i < hf_json_len(arr); i++) {
        hf_json ev = hf_json_at(arr, i);
        if (!hf_json_is_object(ev)) {
            ingest_result_fail(res, 400, "malformed", "element %zu is not an object", i);
            return false;
        }
        const char *id = provider_util_id_text(hf_json_get(ev, "id"));
        const char *type = hf_json_str(hf_json_get(ev, "type"));
        const char *account = provider_util_id_text(hf_json_get(ev, "intuitaccountid"));
        if (!id || !type || !*type || !account) {
            ingest_result_fail(res, 400, "malformed",
                               "element %zu needs id, type and intuitaccountid", i);
            return false;
        }
        const char *entity_id = provider_util_id_text(hf_json_get(ev, "intuitentityid"));
        char *entity = entity_id ? cloudevent_entity(type) : NULL;
        char *resource = entity ? entity_resource(entity, entity_id) : NULL;
        free(entity);
        ingest_result_add(res, xconcat("quickbooks:", id, NULL), xstrdup(type), xstrdup(account),
                          resource,
                          provider_util_time_normalise(hf_json_str(hf_json_get(ev, "time"))),
                          provider_util_payload(ev));
    }
    return true;
}

static void quickbooks_handle(const ingest_request *req, ingest_result *res)
{
    if (!provider_util_require_post(req, res))
        return;
    if (!provider_util_signed_b64(req, QBO_SECRET, QBO_SIGNATURE_HEADER, res))
        return;
    hf_json root = provider_util_parse_body(req, res);
    if (!root)
        return;
    bool ok;
    if (hf_json_is_array(root)) {
        ok = split_cloudevents(root, res);
    } else if (hf_json_is_object(root) && hf_json_get(root, "eventNotifications")) {
        ok = split_legacy(hf_json_get(root, "eventNotifications"), res);
    } else {
        ingest_result_fail(res, 400, "malformed",
                           "body is neither a CloudEvents array nor an eventNotifications object");
        ok = false;
    }
    if (ok) {
        res->status = 200;
        res->reason = "accepted";
    }
    hf_json_free(root);
}

const ingest_provider ingest_provider_quickbooks = {
    .id = "quickbooks",
    .accepts_get = false,
    .handle = quickbooks_handle,
};
