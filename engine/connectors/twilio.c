/* twilio: the Twilio Messaging send action (SMS, or WhatsApp when `to` starts with
 * "whatsapp:") as the form POST Twilio expects, and the reading of its answers and errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connector.h"

#define WHATSAPP_PREFIX "whatsapp:"

static bool is_whatsapp(const char *address)
{
    return address && strncmp(address, WHATSAPP_PREFIX, strlen(WHATSAPP_PREFIX)) == 0;
}

/* A Messaging Service SID (MG + 32 hex digits) may stand in for the sender number. */
static bool is_messaging_service(const char *s)
{
    if (strlen(s) != 34 || strncmp(s, "MG", 2) != 0)
        return false;
    for (size_t i = 2; i < 34; i++)
        if (!strchr("0123456789abcdefABCDEF", s[i]))
            return false;
    return true;
}

static int twilio_build(const char *action, hf_json params, const connector_conn *conn,
                        const char *base_url, const char *idempotency_key, connector_request *out,
                        char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (connector_check_call(params, conn, "AccountSid", err, errlen) != 0)
        return -1;
    if (strcmp(action, "send_message") != 0)
        return hf_err(err, errlen, "twilio has no action \"%s\"", action);
    const char *to, *from, *text, *media;
    if (connector_param_string(params, NULL, "to", true, &to, err, errlen) ||
        connector_param_string(params, NULL, "from", true, &from, err, errlen) ||
        connector_param_string(params, NULL, "body", true, &text, err, errlen) ||
        connector_param_string(params, NULL, "media_url", false, &media, err, errlen))
        return -1;

    hf_buf form = {0};
    connector_form_add(&form, "To", to);
    if (is_messaging_service(from)) {
        connector_form_add(&form, "MessagingServiceSid", from);
    } else if (is_whatsapp(to) && !is_whatsapp(from)) {
        /* Both ends of a WhatsApp message carry the prefix; add it to a bare sender number. */
        char *wa_from = xasprintf(WHATSAPP_PREFIX "%s", from);
        connector_form_add(&form, "From", wa_from);
        free(wa_from);
    } else {
        connector_form_add(&form, "From", from);
    }
    connector_form_add(&form, "Body", text);
    if (media)
        connector_form_add(&form, "MediaUrl", media);

    hf_buf url = {0};
    const char *base = base_url ? base_url : engine_connector_base_url("twilio");
    connector_url_account(&url, base, "/2010-04-01/Accounts/", conn->account);
    hf_buf_puts(&url, "/Messages.json");

    connector_request_start(out, "POST", hf_buf_steal(&url));
    connector_request_header(out, "Accept: application/json");
    connector_request_header(out, "Content-Type: application/x-www-form-urlencoded");
    out->basic_user = xstrdup(conn->account);
    out->basic_password = xstrdup(conn->access_token);
    connector_request_body(out, &form);
    return 0;
}

static connector_outcome twilio_interpret(const char *action, const connector_request *sent,
                                          long status, const char *body, size_t body_len,
                                          hf_buf *output, char *err, size_t errlen)
{
    if (strcmp(action, "send_message") != 0) {
        hf_err(err, errlen, "twilio has no action \"%s\"", action);
        return CONNECTOR_FAIL;
    }
    hf_json answer = connector_parse_answer(body, body_len);
    connector_outcome outcome = connector_classify(status);
    if (outcome == CONNECTOR_OK) {
        hf_json to = hf_json_get(answer, "to");
        connector_output o;
        connector_output_begin(&o, output);
        connector_output_string(&o, "sid", hf_json_get(answer, "sid"));
        connector_output_string(&o, "status", hf_json_get(answer, "status"));
        connector_output_cstr(&o, "channel",
                              !hf_json_str(to)               ? NULL
                              : is_whatsapp(hf_json_str(to)) ? "whatsapp"
                                                             : "sms");
        connector_output_string(&o, "to", to);
        connector_output_string(&o, "from", hf_json_get(answer, "from"));
        connector_output_raw(&o, answer, body_len);
        connector_output_end(&o);
    } else {
        /* {"code":21211,"message":"The 'To' number ... is not a valid phone number.",...} */
        const char *message = hf_json_str(hf_json_get(answer, "message"));
        const char *code = hf_json_scalar_text(hf_json_get(answer, "code"));
        char *line = message && code ? xasprintf("%s (Twilio error %s)", message, code) : NULL;
        connector_error(err, errlen, status, line ? line : message);
        free(line);
    }
    hf_json_free(answer);
    return outcome;
}

const engine_connector engine_connector_twilio = {
    .id = "twilio",
    .idempotency = "none",
    .build = twilio_build,
    .interpret = twilio_interpret,
};
