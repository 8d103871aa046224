/* meta: the Messenger Send API action (a text from the Page to a person) with the Page access
 * token, and the reading of Graph API answers and error codes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connector.h"

#define GRAPH_VERSION "v25.0"
/* Messenger refuses longer texts. */
#define META_TEXT_MAX_CHARS 2000

static const char *const messaging_types[] = {"RESPONSE", "UPDATE", "MESSAGE_TAG", NULL};
static const char *const message_tags[] = {"CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE",
                                           "ACCOUNT_UPDATE", "HUMAN_AGENT", NULL};

/* Characters (code points) of a valid UTF-8 string. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        n += (*p & 0xc0) != 0x80;
    return n;
}

static int meta_build(const char *action, hf_json params, const connector_conn *conn,
                      const char *base_url, const char *idempotency_key, connector_request *out,
                      char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (connector_check_call(params, conn, "page id", err, errlen) != 0)
        return -1;
    if (strcmp(action, "send_message") != 0)
        return hf_err(err, errlen, "meta has no action \"%s\"", action);
    const char *recipient, *text, *type, *tag;
    if (connector_param_string(params, NULL, "recipient_id", true, &recipient, err, errlen) ||
        connector_param_string(params, NULL, "text", true, &text, err, errlen) ||
        connector_param_enum(params, NULL, "messaging_type", messaging_types, "RESPONSE", &type,
                             err, errlen) ||
        connector_param_enum(params, NULL, "tag", message_tags, NULL, &tag, err, errlen))
        return -1;
    if (utf8_chars(text) > META_TEXT_MAX_CHARS)
        return hf_err(err, errlen, "param \"text\" is longer than %d characters",
                      META_TEXT_MAX_CHARS);
    if (strcmp(type, "MESSAGE_TAG") == 0 && !tag)
        return hf_err(err, errlen,
                      "missing required param \"tag\" (messaging_type is "
                      "MESSAGE_TAG)");
    if (strcmp(type, "MESSAGE_TAG") != 0 && tag)
        return hf_err(err, errlen, "param \"tag\" needs messaging_type MESSAGE_TAG");

    hf_buf body = {0};
    connector_output doc;
    connector_output_begin(&doc, &body);
    connector_output_opt_nested(&doc, "recipient", "id", recipient);
    connector_output_opt_str(&doc, "messaging_type", type);
    connector_output_opt_nested(&doc, "message", "text", text);
    connector_output_opt_str(&doc, "tag", tag);
    connector_output_end(&doc);

    hf_buf url = {0};
    const char *base = base_url ? base_url : engine_connector_base_url("meta");
    connector_url_account(&url, base, "/" GRAPH_VERSION "/", conn->account);
    hf_buf_puts(&url, "/messages");

    connector_request_start(out, "POST", hf_buf_steal(&url));
    /* The token goes in a header rather than the query, so it never lands in URL logs. */
    connector_request_header(out, "Authorization: Bearer %s", conn->access_token);
    connector_request_header(out, "Accept: application/json");
    connector_request_header(out, "Content-Type: application/json");
    connector_request_body(out, &body);
    return 0;
}

/* Graph API error codes that say "try again later": 1 unknown/temporary, 2 service
 * unavailable, 4/17/32/613 rate limits. */
static bool transient_code(long long code)
{
    return code == 1 || code == 2 || code == 4 || code == 17 || code == 32 || code == 613;
}

static connector_outcome meta_interpret(const char *action, const connector_request *sent,
                                        long status, const char *body, size_t body_len,
                                        hf_buf *output, char *err, size_t errlen)
{
    if (strcmp(action, "send_message") != 0) {
        hf_err(err, errlen, "meta has no action \"%s\"", action);
        return CONNECTOR_FAIL;
    }
    hf_json answer = connector_parse_answer(body, body_len);
    connector_outcome outcome = connector_classify(status);
    hf_json error = hf_json_get(answer, "error");
    long long code = 0;
    bool has_code = hf_json_int(hf_json_get(error, "code"), &code);
    if (outcome == CONNECTOR_OK && error)
        outcome = CONNECTOR_FAIL;
    if (has_code && code == 190) /* OAuthException: the Page token is invalid or expired */
        outcome = CONNECTOR_AUTH;
    else if (outcome == CONNECTOR_FAIL && ((has_code && transient_code(code)) ||
                                           YAJL_IS_TRUE(hf_json_get(error, "is_transient"))))
        outcome = CONNECTOR_RETRY;

    if (outcome == CONNECTOR_OK) {
        connector_output o;
        connector_output_begin(&o, output);
        connector_output_string(&o, "recipient_id", hf_json_get(answer, "recipient_id"));
        connector_output_string(&o, "message_id", hf_json_get(answer, "message_id"));
        connector_output_raw(&o, answer, body_len);
        connector_output_end(&o);
    } else {
        const char *message = hf_json_str(hf_json_get(error, "message"));
        char *line = message && has_code ? xasprintf("%s (code %lld)", message, code) : NULL;
        connector_error(err, errlen, status, line ? line : message);
        free(line);
    }
    hf_json_free(answer);
    return outcome;
}

const engine_connector engine_connector_meta = {
    .id = "meta",
    .idempotency = "none",
    .build = meta_build,
    .interpret = meta_interpret,
};
