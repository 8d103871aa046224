/* klaviyo: the Klaviyo API actions (track an event, create or update a profile) as JSON:API
 * requests with a pinned revision, and the reading of Klaviyo's answers and errors[]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connector.h"

/* The API revision every request pins (Klaviyo requires the header). */
#define KLAVIYO_REVISION "2025-10-15"

/* "profile" attributes: email and/or phone_number (one is needed). */
static int identity(hf_json p, const char **email, const char **phone, char *err, size_t errlen)
{
    if (connector_param_string(p, NULL, "email", false, email, err, errlen) ||
        connector_param_string(p, NULL, "phone_number", false, phone, err, errlen))
        return -1;
    if (!*email && !*phone)
        return hf_err(err, errlen,
                      "missing required param \"email\" or \"phone_number\" "
                      "(one identifies the profile)");
    return 0;
}

/* A JSON:API resource being written: {"data":{"type":type,"attributes":{...}}}. */
typedef struct resource {
    connector_output doc, data, attrs;
} resource;

/* Opens a resource of this type on b; returns its attributes object to write the members into. */
static connector_output *resource_begin(resource *r, hf_buf *b, const char *type)
{
    connector_output_begin(&r->doc, b);
    connector_output_key(&r->doc, "data");
    connector_output_begin(&r->data, b);
    connector_output_opt_str(&r->data, "type", type);
    connector_output_key(&r->data, "attributes");
    connector_output_begin(&r->attrs, b);
    return &r->attrs;
}

static void resource_end(resource *r)
{
    connector_output_end(&r->attrs);
    connector_output_end(&r->data);
    connector_output_end(&r->doc);
}

/* {"data":{"type":"event","attributes":{properties, metric, profile, value, unique_id, time}}}.
 * Without a unique_id the idempotency key stands in: Klaviyo records an event only once per
 * unique_id (for the profile and metric), so an engine retry cannot count it twice. */
static int event_body(hf_json p, const char *idempotency_key, hf_buf *b, char *err, size_t errlen)
{
    const char *metric, *email, *phone, *value, *unique_id, *time;
    hf_json props;
    if (connector_param_string(p, NULL, "metric_name", true, &metric, err, errlen) ||
        identity(p, &email, &phone, err, errlen) ||
        connector_param_object(p, NULL, "properties", false, &props, err, errlen) ||
        connector_param_number(p, NULL, "value", false, &value, err, errlen) ||
        connector_param_string(p, NULL, "unique_id", false, &unique_id, err, errlen) ||
        connector_param_string(p, NULL, "time", false, &time, err, errlen))
        return -1;
    if (!unique_id && idempotency_key && idempotency_key[0])
        unique_id = idempotency_key;

    resource event, metric_res, profile;
    connector_output *attrs = resource_begin(&event, b, "event");
    connector_output_key(attrs, "properties");
    if (props)
        hf_json_serialize(props, b);
    else
        hf_buf_puts(b, "{}"); /* Klaviyo requires the member */
    connector_output_key(attrs, "metric");
    connector_output_opt_str(resource_begin(&metric_res, b, "metric"), "name", metric);
    resource_end(&metric_res);
    connector_output_key(attrs, "profile");
    connector_output *who = resource_begin(&profile, b, "profile");
    connector_output_opt_str(who, "email", email);
    connector_output_opt_str(who, "phone_number", phone);
    resource_end(&profile);
    connector_output_opt_raw(attrs, "value", value);
    connector_output_opt_str(attrs, "unique_id", unique_id);
    connector_output_opt_str(attrs, "time", time);
    resource_end(&event);
    return 0;
}

/* {"data":{"type":"profile","attributes":{email, phone_number, first_name, last_name,
 * properties}}} for the profile-import endpoint (create or update). */
static int profile_body(hf_json p, hf_buf *b, char *err, size_t errlen)
{
    const char *email, *phone, *first, *last;
    hf_json props;
    if (identity(p, &email, &phone, err, errlen) ||
        connector_param_string(p, NULL, "first_name", false, &first, err, errlen) ||
        connector_param_string(p, NULL, "last_name", false, &last, err, errlen) ||
        connector_param_object(p, NULL, "properties", false, &props, err, errlen))
        return -1;
    resource profile;
    connector_output *attrs = resource_begin(&profile, b, "profile");
    connector_output_opt_str(attrs, "email", email);
    connector_output_opt_str(attrs, "phone_number", phone);
    connector_output_opt_str(attrs, "first_name", first);
    connector_output_opt_str(attrs, "last_name", last);
    if (props) {
        connector_output_key(attrs, "properties");
        hf_json_serialize(props, b);
    }
    resource_end(&profile);
    return 0;
}

static int klaviyo_build(const char *action, hf_json params, const connector_conn *conn,
                         const char *base_url, const char *idempotency_key, connector_request *out,
                         char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (connector_check_call(params, conn, "account", err, errlen) != 0)
        return -1;
    hf_buf body = {0};
    const char *path;
    int rc;
    if (strcmp(action, "create_event") == 0)
        path = "/api/events", rc = event_body(params, idempotency_key, &body, err, errlen);
    else if (strcmp(action, "upsert_profile") == 0)
        path = "/api/profile-import", rc = profile_body(params, &body, err, errlen);
    else
        path = NULL, rc = hf_err(err, errlen, "klaviyo has no action \"%s\"", action);
    if (rc != 0) {
        hf_buf_free(&body);
        return -1;
    }
    const char *base = base_url ? base_url : engine_connector_base_url("klaviyo");
    connector_request_start(out, "POST", connector_url(base, "%s", path));
    /* OAuth access tokens are bearer tokens; a private API key (pk_...) has its own scheme. */
    if (strncmp(conn->access_token, "pk_", 3) == 0)
        connector_request_header(out, "Authorization: Klaviyo-API-Key %s", conn->access_token);
    else
        connector_request_header(out, "Authorization: Bearer %s", conn->access_token);
    connector_request_header(out, "revision: " KLAVIYO_REVISION);
    connector_request_header(out, "Accept: application/vnd.api+json");
    connector_request_header(out, "Content-Type: application/vnd.api+json");
    connector_request_body(out, &body);
    return 0;
}

/* Klaviyo's error text: every errors[].detail (or title), "; " between. */
static void klaviyo_error_text(hf_json answer, hf_buf *line)
{
    hf_json errors = hf_json_get(answer, "errors");
    for (size_t i = 0; i < hf_json_len(errors); i++) {
        hf_json e = hf_json_at(errors, i);
        const char *m = hf_json_str(hf_json_get(e, "detail"));
        if (!m)
            m = hf_json_str(hf_json_get(e, "title"));
        if (m)
            hf_buf_printf(line, "%s%s", line->len ? "; " : "", m);
    }
}

static connector_outcome klaviyo_interpret(const char *action, const connector_request *sent,
                                           long status, const char *body, size_t body_len,
                                           hf_buf *output, char *err, size_t errlen)
{
    bool event = strcmp(action, "create_event") == 0;
    if (!event && strcmp(action, "upsert_profile") != 0) {
        hf_err(err, errlen, "klaviyo has no action \"%s\"", action);
        return CONNECTOR_FAIL;
    }
    hf_json answer = connector_parse_answer(body, body_len);
    connector_outcome outcome = connector_classify(status);
    if (outcome == CONNECTOR_OK) {
        connector_output o;
        connector_output_begin(&o, output);
        if (event) {
            /* 202 with an empty body: Klaviyo queues the event and echoes nothing, so the
             * metric name and unique_id are the ones sent. */
            hf_json req =
                sent && sent->body ? connector_parse_answer(sent->body, sent->body_len) : NULL;
            hf_json attrs = hf_json_path(req, "data", "attributes", NULL);
            connector_output_key(&o, "accepted");
            hf_buf_puts(output, "true");
            connector_output_string(
                &o, "metric_name",
                hf_json_path(attrs, "metric", "data", "attributes", "name", NULL));
            connector_output_string(&o, "unique_id", hf_json_get(attrs, "unique_id"));
            hf_json_free(req);
        } else {
            hf_json data = hf_json_get(answer, "data");
            hf_json attrs = hf_json_get(data, "attributes");
            connector_output_string(&o, "id", hf_json_get(data, "id"));
            connector_output_string(&o, "email", hf_json_get(attrs, "email"));
            connector_output_string(&o, "phone_number", hf_json_get(attrs, "phone_number"));
            connector_output_object(&o, "properties", hf_json_get(attrs, "properties"));
            connector_output_string(&o, "updated", hf_json_get(attrs, "updated"));
        }
        connector_output_raw(&o, answer, body_len);
        connector_output_end(&o);
    } else {
        hf_buf line = {0};
        klaviyo_error_text(answer, &line);
        connector_error(err, errlen, status, line.data);
        hf_buf_free(&line);
    }
    hf_json_free(answer);
    return outcome;
}

/* Both actions: an event carries a unique_id (the idempotency key unless the params give one)
 * that Klaviyo records once per profile and metric, and a profile import is an upsert. */
static bool klaviyo_repeat_safe(const char *action)
{
    (void)action;
    return true;
}

const engine_connector engine_connector_klaviyo = {
    .id = "klaviyo",
    .idempotency = "none",
    .repeat_safe = klaviyo_repeat_safe,
    .build = klaviyo_build,
    .interpret = klaviyo_interpret,
};
