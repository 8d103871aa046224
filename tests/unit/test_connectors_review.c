/* Review tests for engine/connectors: payload-controlled values against the request each
 * connector builds (headers, URL, JSON and form bodies, numbers), the account in URL paths, and
 * connector_perform's transport settings (proxies from the environment). Helpers copied from
 * test_connectors.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "connectors/connector.h"
#include "form_assert.h"
#include "json.h"

#define TOKEN "tok-SECRET-4711"

/* ---- helpers (from test_connectors.c) ---- */

static hf_json parse(const char *text)
{
    char err[256];
    hf_json v = hf_json_parse(text, strlen(text), err, sizeof err);
    if (!v)
        fail_msg("bad test JSON %s: %s", text, err);
    return v;
}

typedef struct built {
    connector_request req;
    hf_json body; /* parsed JSON body, when it is JSON */
} built;

static void build_ok(const char *id, const char *action, const char *params, const char *account,
                     const char *base, const char *key, built *out)
{
    const engine_connector *c = engine_connector_find(id);
    assert_non_null(c);
    hf_json p = parse(params);
    connector_conn conn = {.account = account, .access_token = TOKEN};
    char err[256] = "";
    memset(out, 0, sizeof *out);
    if (c->build(action, p, &conn, base, key, &out->req, err, sizeof err) != 0)
        fail_msg("%s.%s build failed: %s", id, action, err);
    hf_json_free(p);
    assert_non_null(out->req.headers);
    assert_null(out->req.headers[out->req.nheaders]);
    assert_int_equal(strlen(out->req.body), out->req.body_len);
    if (out->req.body_len && out->req.body[0] == '{') {
        char perr[256];
        out->body = hf_json_parse(out->req.body, out->req.body_len, perr, sizeof perr);
        if (!out->body)
            fail_msg("%s.%s body is not JSON (%s): %s", id, action, perr, out->req.body);
    }
}

static void built_free(built *b)
{
    hf_json_free(b->body);
    connector_request_free(&b->req);
}

/* No header line carries a control character (CR/LF would inject headers). */
static void assert_clean_headers(const connector_request *r)
{
    for (size_t i = 0; i < r->nheaders; i++)
        for (const unsigned char *p = (const unsigned char *)r->headers[i]; *p; p++)
            if (*p < 0x20 || *p == 0x7f)
                fail_msg("header %zu has control byte 0x%02x: %s", i, *p, r->headers[i]);
}

/* ---- payload values against the request ---- */

/* fmt with every '@' replaced by value (caller frees). */
static char *fill(const char *fmt, const char *value)
{
    hf_buf b = {0};
    for (const char *p = fmt; *p; p++) {
        if (*p == '@')
            hf_buf_puts(&b, value);
        else
            hf_buf_putc(&b, *p);
    }
    return hf_buf_steal(&b);
}

/* A webhook-controlled text (a Messenger message, a contact name) full of CR/LF, path and query
 * characters and control bytes changes nothing but its own JSON string / form value: the URL
 * and header lines stay those of a benign value. */
static void test_payload_values_reach_only_the_body(void **state)
{
    (void)state;
    static const char evil[] = "a\\r\\nX-Injected: 1\\r\\n\\r\\n../../x?y=1#z%2F&To=+1999\\u0001";
    static const struct {
        const char *id, *action, *fmt;
    } cases[] = {
        {"xero", "create_contact", "{\"name\":\"@\",\"email\":\"@\",\"phone\":\"@\"}"},
        {"xero", "create_payment",
         "{\"invoice_id\":\"@\",\"account_code\":\"@\",\"amount\":1,\"reference\":\"@\"}"},
        {"quickbooks", "create_invoice",
         "{\"customer_id\":\"@\",\"lines\":[{\"amount\":1,\"item_id\":\"@\"}],"
         "\"private_note\":\"@\"}"},
        {"hubspot", "upsert_contact",
         "{\"email\":\"@\",\"firstname\":\"@\",\"properties\":{\"k\":\"@\"}}"},
        {"klaviyo", "create_event", "{\"metric_name\":\"@\",\"email\":\"@\",\"unique_id\":\"@\"}"},
        {"twilio", "send_message", "{\"to\":\"@\",\"from\":\"+1555\",\"body\":\"@@\"}"},
        {"meta", "send_message", "{\"recipient_id\":\"@\",\"text\":\"@@\"}"},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        char *bad = fill(cases[i].fmt, evil);
        char *good = fill(cases[i].fmt, "v");
        built b, g;
        build_ok(cases[i].id, cases[i].action, bad, "acct-1", "http://127.0.0.1:9/p", "k-1", &b);
        build_ok(cases[i].id, cases[i].action, good, "acct-1", "http://127.0.0.1:9/p", "k-1", &g);
        assert_string_equal(b.req.url, g.req.url);
        assert_int_equal(b.req.nheaders, g.req.nheaders);
        for (size_t h = 0; h < g.req.nheaders; h++)
            assert_string_equal(b.req.headers[h], g.req.headers[h]);
        assert_clean_headers(&b.req);
        if (strcmp(cases[i].id, "twilio") == 0) {
            char *to = fa_form_get(b.req.body, "To");
            assert_string_equal(to, "a\r\nX-Injected: 1\r\n\r\n../../x?y=1#z%2F&To=+1999\x01");
            free(to);
        } else {
            assert_non_null(b.body); /* still one JSON document */
        }
        built_free(&b);
        built_free(&g);
        free(bad);
        free(good);
    }
}

/* JSON string escaping: control characters, quotes, backslashes, U+2028 and astral characters
 * in a Messenger text come back exactly from the body. */
static void test_json_body_round_trips_odd_text(void **state)
{
    (void)state;
    built b;
    build_ok("meta", "send_message",
             "{\"recipient_id\":\"1\",\"text\":\"q\\\"b\\\\c\\u0001x\\u001f\\u007f\\u2028"
             "\\ud83d\\ude00\\t\\n\"}",
             "104", NULL, NULL, &b);
    const char *text = hf_json_str(hf_json_path(b.body, "message", "text", NULL));
    assert_non_null(text);
    assert_string_equal(text, "q\"b\\c\x01x\x1f\x7f\xe2\x80\xa8\xf0\x9f\x98\x80\t\n");
    for (const unsigned char *p = (const unsigned char *)b.req.body; *p; p++)
        if (*p < 0x20)
            fail_msg("raw control byte 0x%02x in the JSON body", *p);
    built_free(&b);
}

/* Amounts keep their decimal text (no float rounding of cents) and integers past 2^53 keep every
 * digit, whether they arrive as JSON numbers or as numeric strings. */
static void test_amounts_and_big_integers_keep_their_text(void **state)
{
    (void)state;
    built b;
    build_ok("xero", "create_invoice",
             "{\"contact_id\":\"c\",\"line_items\":[{\"description\":\"d\",\"quantity\":"
             "9007199254740993,\"unit_amount\":\"0.10\",\"account_code\":\"200\"},"
             "{\"description\":\"e\",\"quantity\":0.3,\"unit_amount\":19.99,"
             "\"account_code\":\"200\"}]}",
             "t", NULL, "k", &b);
    assert_non_null(strstr(b.req.body, "\"Quantity\":9007199254740993,\"UnitAmount\":0.10,"));
    assert_non_null(strstr(b.req.body, "\"Quantity\":0.3,\"UnitAmount\":19.99,"));
    built_free(&b);
    build_ok("quickbooks", "create_sales_receipt",
             "{\"lines\":[{\"amount\":\"1234567.89\",\"item_id\":12345678901234567890}]}", "9",
             NULL, "k", &b);
    assert_non_null(strstr(b.req.body, "\"Amount\":1234567.89,"));
    assert_non_null(strstr(b.req.body, "\"ItemRef\":{\"value\":\"12345678901234567890\"}"));
    built_free(&b);
}

/* Twilio's form: '&', '=', '+', '%', '#' and newlines in the message text cannot add or change a
 * parameter. */
static void test_twilio_form_cannot_gain_parameters(void **state)
{
    (void)state;
    built b;
    build_ok("twilio", "send_message",
             "{\"to\":\"+14155550123\",\"from\":\"+14155559876\",\"body\":\"hi&To=+19999999999"
             "&MediaUrl=http://evil/%41#x\\n=+\"}",
             "AC1", "http://127.0.0.1:9/t", NULL, &b);
    char *to = fa_form_get(b.req.body, "To"), *body = fa_form_get(b.req.body, "Body"),
         *media = fa_form_get(b.req.body, "MediaUrl");
    assert_string_equal(to, "+14155550123");
    assert_string_equal(body, "hi&To=+19999999999&MediaUrl=http://evil/%41#x\n=+");
    assert_null(media);
    free(to);
    free(body);
    free(media);
    built_free(&b);
}

/* ---- the account in URL paths ---- */

/* An account that is "." or ".." is refused: it would be a dot-segment in the URL, which libcurl
 * removes before sending (QuickBooks realm ".." turned /v3/company/../invoice into /v3/invoice,
 * Twilio's /Accounts/../Messages.json into /2010-04-01/Messages.json). */
static void test_account_dot_segments_stay_one_segment(void **state)
{
    (void)state;
    static const struct {
        const char *id, *action, *params;
    } cases[] = {
        {"quickbooks", "create_invoice",
         "{\"customer_id\":\"1\",\"lines\":[{\"amount\":1,\"item_id\":\"1\"}]}"},
        {"twilio", "send_message", "{\"to\":\"+1\",\"from\":\"+2\",\"body\":\"x\"}"},
        {"meta", "send_message", "{\"recipient_id\":\"1\",\"text\":\"x\"}"},
    };
    hf_buf bad = {0};
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        const engine_connector *c = engine_connector_find(cases[i].id);
        hf_json p = parse(cases[i].params);
        connector_conn conn = {.account = "..", .access_token = TOKEN};
        connector_request req;
        char err[256] = "";
        int rc = c->build(cases[i].action, p, &conn, "https://h", NULL, &req, err, sizeof err);
        hf_json_free(p);
        if (rc == 0) {
            if (strstr(req.url, "/../") || strstr(req.url, "/./"))
                hf_buf_printf(&bad, "%s: %s; ", cases[i].id, req.url);
            connector_request_free(&req);
        }
    }
    if (bad.len) {
        char msg[600];
        snprintf(msg, sizeof msg, "account \"..\" becomes a dot-segment: %s", bad.data);
        hf_buf_free(&bad);
        fail_msg("%s", msg);
    }
}

/* ---- connector_perform ---- */

/* connector_perform does not follow redirects: the 3xx is the answer (token endpoints must not
 * bounce the client secret elsewhere), and it speaks only http(s). */
static void test_perform_refuses_other_protocols(void **state)
{
    (void)state;
    connector_request req;
    connector_request_start(&req, "GET", xstrdup("file:///etc/passwd"));
    hf_buf out = {0};
    char err[256] = "";
    long status = connector_perform(&req, 1000, &out, err, sizeof err);
    assert_int_equal(status, 0);
    assert_true(err[0] != '\0');
    assert_int_equal(out.len, 0);
    connector_request_free(&req);
    hf_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_payload_values_reach_only_the_body),
        cmocka_unit_test(test_json_body_round_trips_odd_text),
        cmocka_unit_test(test_amounts_and_big_integers_keep_their_text),
        cmocka_unit_test(test_twilio_form_cannot_gain_parameters),
        cmocka_unit_test(test_account_dot_segments_stay_one_segment),
        cmocka_unit_test(test_perform_refuses_other_protocols),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
