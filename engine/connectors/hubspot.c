/* hubspot: the HubSpot CRM contact actions (create, and upsert by email through the batch
 * upsert endpoint) and the reading of HubSpot's answers and error messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connector.h"

static const char *const lifecycle_stages[] = {
    "subscriber",         "lead",        "marketingqualifiedlead",
    "salesqualifiedlead", "opportunity", "customer",
    "evangelist",         "other",       NULL};

/* The named params that become contact properties of the same name. */
static const char *const named_properties[] = {"email", "firstname", "lastname", "phone",
                                               "lifecyclestage"};

/* Appends "properties":{...}: the named params, then the free-form "properties" object (a
 * named param wins over the same key there). HubSpot property values are strings. */
static int properties_member(connector_output *o, hf_json p, char *err, size_t errlen)
{
    const char *values[HF_ARRAY_LEN(named_properties)];
    hf_json extra;
    for (size_t i = 0; i < HF_ARRAY_LEN(named_properties); i++) {
        int rc = strcmp(named_properties[i], "lifecyclestage") == 0
                     ? connector_param_enum(p, NULL, "lifecyclestage", lifecycle_stages, NULL,
                                            &values[i], err, errlen)
                     : connector_param_string(p, NULL, named_properties[i],
                                              strcmp(named_properties[i], "email") == 0, &values[i],
                                              err, errlen);
        if (rc != 0)
            return -1;
    }
    if (connector_param_object(p, NULL, "properties", false, &extra, err, errlen) != 0)
        return -1;

    connector_output props;
    connector_output_key(o, "properties");
    connector_output_begin(&props, o->buf);
    for (size_t i = 0; i < HF_ARRAY_LEN(named_properties); i++)
        connector_output_opt_str(&props, named_properties[i], values[i]);
    for (size_t i = 0; i < hf_json_len(extra); i++) {
        const char *key;
        hf_json v = hf_json_member(extra, i, &key);
        bool named = false;
        for (size_t j = 0; j < HF_ARRAY_LEN(named_properties); j++)
            named = named || (values[j] && strcmp(key, named_properties[j]) == 0);
        if (named || !v || YAJL_IS_NULL(v))
            continue;
        const char *text = hf_json_scalar_text(v);
        if (!text)
            return hf_err(err, errlen,
                          "param \"properties.%s\" must be a string, number or boolean", key);
        connector_output_opt_str(&props, key, text);
    }
    connector_output_end(&props);
    return 0;
}

static int hubspot_build(const char *action, hf_json params, const connector_conn *conn,
                         const char *base_url, const char *idempotency_key, connector_request *out,
                         char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (connector_check_call(params, conn, "portalId", err, errlen) != 0)
        return -1;
    bool upsert = strcmp(action, "upsert_contact") == 0;
    if (!upsert && strcmp(action, "create_contact") != 0)
        return hf_err(err, errlen, "hubspot has no action \"%s\"", action);

    hf_buf body = {0};
    connector_output doc, input;
    connector_output_begin(&doc, &body);
    connector_output *target = &doc;
    if (upsert) {
        const char *email;
        if (connector_param_string(params, NULL, "email", true, &email, err, errlen) != 0) {
            hf_buf_free(&body);
            return -1;
        }
        connector_output_key(&doc, "inputs");
        hf_buf_putc(&body, '[');
        connector_output_begin(&input, &body);
        connector_output_opt_str(&input, "idProperty", "email");
        connector_output_opt_str(&input, "id", email);
        target = &input;
    }
    if (properties_member(target, params, err, errlen) != 0) {
        hf_buf_free(&body);
        return -1;
    }
    if (upsert) {
        connector_output_end(&input);
        hf_buf_putc(&body, ']');
    }
    connector_output_end(&doc);

    const char *base = base_url ? base_url : engine_connector_base_url("hubspot");
    connector_request_start(out, "POST",
                            connector_url(base, upsert ? "/crm/v3/objects/contacts/batch/upsert"
                                                       : "/crm/v3/objects/contacts"));
    connector_request_header(out, "Authorization: Bearer %s", conn->access_token);
    connector_request_header(out, "Accept: application/json");
    connector_request_header(out, "Content-Type: application/json");
    connector_request_body(out, &body);
    return 0;
}

/* HubSpot's error text: message (with the category), or the first errors[].message. */
static void hubspot_error_text(hf_json answer, hf_buf *line)
{
    const char *message = hf_json_str(hf_json_get(answer, "message"));
    if (!message)
        message = hf_json_str(hf_json_get(hf_json_at(hf_json_get(answer, "errors"), 0), "message"));
    const char *category = hf_json_str(hf_json_get(answer, "category"));
    if (message)
        hf_buf_puts(line, message);
    if (category)
        hf_buf_printf(line, "%s(%s)", line->len ? " " : "", category);
}

static connector_outcome hubspot_interpret(const char *action, const connector_request *sent,
                                           long status, const char *body, size_t body_len,
                                           hf_buf *output, char *err, size_t errlen)
{
    bool upsert = strcmp(action, "upsert_contact") == 0;
    if (!upsert && strcmp(action, "create_contact") != 0) {
        hf_err(err, errlen, "hubspot has no action \"%s\"", action);
        return CONNECTOR_FAIL;
    }
    hf_json answer = connector_parse_answer(body, body_len);
    connector_outcome outcome = connector_classify(status);
    hf_json contact = answer;
    if (outcome == CONNECTOR_OK && upsert) {
        contact = hf_json_at(hf_json_get(answer, "results"), 0);
        /* 207 Multi-Status: the batch answer carries errors instead of the result. */
        if (!contact && hf_json_len(hf_json_get(answer, "errors")) > 0)
            outcome = CONNECTOR_FAIL;
    }
    /* 423 Locked: HubSpot asks to retry after a short wait (record locked by a concurrent
     * write). */
    if (status == 423)
        outcome = CONNECTOR_RETRY;
    if (outcome == CONNECTOR_OK) {
        connector_output o;
        connector_output_begin(&o, output);
        connector_output_string(&o, "id", hf_json_get(contact, "id"));
        connector_output_object(&o, "properties", hf_json_get(contact, "properties"));
        connector_output_string(&o, "created_at", hf_json_get(contact, "createdAt"));
        connector_output_string(&o, "updated_at", hf_json_get(contact, "updatedAt"));
        connector_output_bool(&o, "archived", hf_json_get(contact, "archived"));
        if (upsert)
            connector_output_bool(&o, "new", hf_json_get(contact, "new"));
        connector_output_raw(&o, answer, body_len);
        connector_output_end(&o);
    } else {
        hf_buf line = {0};
        hubspot_error_text(answer, &line);
        connector_error(err, errlen, status, line.data);
        hf_buf_free(&line);
    }
    hf_json_free(answer);
    return outcome;
}

/* An upsert by email writes the same properties again; a create may make a second contact (or
 * answer 409 for the first one). */
static bool hubspot_repeat_safe(const char *action)
{
    return strcmp(action, "upsert_contact") == 0;
}

const engine_connector engine_connector_hubspot = {
    .id = "hubspot",
    .idempotency = "none",
    .repeat_safe = hubspot_repeat_safe,
    .build = hubspot_build,
    .interpret = hubspot_interpret,
};
