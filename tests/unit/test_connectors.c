/* Unit tests for engine/connectors: every catalog action's request (method, URL with a base URL
 * override, auth/tenant/idempotency/revision headers, body fields), param errors, answer
 * interpretation (outcomes, the platforms' error texts, output mapped to the catalog's
 * output.fields), OAuth refresh and code requests, token answer parsing, and that no token ever
 * shows up in an error text. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "catalog.h"
#include "connectors/connector.h"
#include "crypto.h"
#include "form_assert.h"
#include "json.h"

#define TOKEN "tok-SECRET-4711"
#define BASE "http://127.0.0.1:9/fake/xero/"

/* ---- helpers ---- */

/* Fails when err quotes any token or secret the tests use. */
static void assert_no_secret(const char *err)
{
    static const char *const secrets[] = {TOKEN, "rt-SECRET", "cs-SECRET", "code-SECRET"};
    for (size_t i = 0; i < HF_ARRAY_LEN(secrets); i++)
        if (strstr(err, secrets[i]))
            fail_msg("error text quotes a secret: %s", err);
    assert_null(strchr(err, '\n'));
}

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
    if (out->req.body_len && out->req.body[0] == '{')
        out->body = parse(out->req.body);
}

static void built_free(built *b)
{
    hf_json_free(b->body);
    connector_request_free(&b->req);
    /* A freed request is zeroed, and freeing it again is harmless. */
    assert_null(b->req.url);
    connector_request_free(&b->req);
}

/* Builds and expects -1 with want (a param name) in the error. */
static void build_fails(const char *id, const char *action, const char *params, const char *want)
{
    const engine_connector *c = engine_connector_find(id);
    hf_json p = parse(params);
    connector_conn conn = {.account = "acct-1", .access_token = TOKEN};
    connector_request req;
    char err[256] = "";
    int rc = c->build(action, p, &conn, NULL, "key-1", &req, err, sizeof err);
    hf_json_free(p);
    if (rc == 0) {
        connector_request_free(&req);
        fail_msg("%s.%s accepted %s", id, action, params);
    }
    if (!strstr(err, want))
        fail_msg("%s.%s error \"%s\" does not name \"%s\"", id, action, err, want);
    assert_no_secret(err);
    assert_null(req.url);
    assert_null(req.headers);
}

/* The value of header name (case-insensitive), or NULL. */
static const char *header(const connector_request *r, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < r->nheaders; i++)
        if (strncasecmp(r->headers[i], name, n) == 0 && r->headers[i][n] == ':')
            return r->headers[i] + n + 2;
    return NULL;
}

static void assert_header(const connector_request *r, const char *name, const char *want)
{
    const char *v = header(r, name);
    if (!v)
        fail_msg("no %s header", name);
    assert_string_equal(v, want);
}

static const char *jstr(hf_json v)
{
    const char *s = hf_json_str(v);
    if (!s)
        fail_msg("not a string");
    return s;
}

static const char *jnum(hf_json v)
{
    const char *s = hf_json_number_text(v);
    if (!s)
        fail_msg("not a number");
    return s;
}

static void assert_jstr(hf_json v, const char *want)
{
    assert_string_equal(jstr(v), want);
}

static void assert_jnum(hf_json v, const char *want)
{
    assert_string_equal(jnum(v), want);
}

static void assert_form(const char *form, const char *name, const char *want)
{
    char *v = fa_form_get(form, name);
    if (!want) {
        if (v)
            fail_msg("form has %s=%s", name, v);
        return;
    }
    if (!v)
        fail_msg("form lacks %s in %s", name, form);
    assert_string_equal(v, want);
    free(v);
}

/* Runs interpret and returns the outcome; output in *out (caller frees) on OK. */
static connector_outcome interpret(const char *id, const char *action, long status,
                                   const char *body, char **out, char *err, size_t errlen)
{
    const engine_connector *c = engine_connector_find(id);
    hf_buf output = {0};
    err[0] = '\0';
    connector_outcome o =
        c->interpret(action, NULL, status, body, body ? strlen(body) : 0, &output, err, errlen);
    if (o == CONNECTOR_OK) {
        assert_string_equal(err, "");
        assert_true(output.len > 0);
    } else {
        assert_int_equal(output.len, 0);
        assert_true(err[0] != '\0');
        assert_no_secret(err);
    }
    if (out)
        *out = hf_buf_steal(&output);
    hf_buf_free(&output);
    return o;
}

static hf_json interpret_ok(const char *id, const char *action, long status, const char *body)
{
    char *out = NULL, err[512];
    connector_outcome o = interpret(id, action, status, body, &out, err, sizeof err);
    if (o != CONNECTOR_OK)
        fail_msg("%s.%s %ld: outcome %d (%s)", id, action, status, o, err);
    hf_json v = parse(out);
    free(out);
    assert_true(hf_json_is_object(v));
    return v;
}

/* ---- lookup and endpoints ---- */

static void test_lookup_and_endpoints(void **state)
{
    (void)state;
    static const char *const ids[] = {"xero", "quickbooks", "hubspot", "klaviyo", "twilio", "meta"};
    for (size_t i = 0; i < HF_ARRAY_LEN(ids); i++) {
        const engine_connector *c = engine_connector_find(ids[i]);
        assert_non_null(c);
        assert_string_equal(c->id, ids[i]);
        assert_non_null(c->build);
        assert_non_null(c->interpret);
    }
    assert_null(engine_connector_find("shopify"));
    assert_null(engine_connector_find(NULL));
    assert_string_equal(engine_connector_find("xero")->idempotency, "header:Idempotency-Key");
    assert_string_equal(engine_connector_find("quickbooks")->idempotency, "query:requestid");

    unsetenv("HOOKFLOW_CONNECTOR_XERO_BASE_URL");
    unsetenv("HOOKFLOW_CONNECTOR_XERO_TOKEN_URL");
    assert_string_equal(engine_connector_base_url("xero"), "https://api.xero.com");
    assert_string_equal(engine_connector_base_url("quickbooks"),
                        "https://quickbooks.api.intuit.com");
    assert_string_equal(engine_connector_base_url("hubspot"), "https://api.hubapi.com");
    assert_string_equal(engine_connector_base_url("klaviyo"), "https://a.klaviyo.com");
    assert_string_equal(engine_connector_base_url("twilio"), "https://api.twilio.com");
    assert_string_equal(engine_connector_base_url("meta"), "https://graph.facebook.com");
    assert_null(engine_connector_base_url("nope"));
    assert_string_equal(engine_connector_token_url("xero"),
                        "https://identity.xero.com/connect/token");
    assert_string_equal(engine_connector_token_url("quickbooks"),
                        "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer");
    assert_string_equal(engine_connector_token_url("hubspot"),
                        "https://api.hubapi.com/oauth/2026-03/token");
    assert_string_equal(engine_connector_token_url("klaviyo"), "https://a.klaviyo.com/oauth/token");
    assert_string_equal(engine_connector_token_url("meta"),
                        "https://graph.facebook.com/v25.0/oauth/access_token");
    assert_null(engine_connector_token_url("twilio"));

    setenv("HOOKFLOW_CONNECTOR_XERO_BASE_URL", "http://127.0.0.1:1234/xero", 1);
    setenv("HOOKFLOW_CONNECTOR_XERO_TOKEN_URL", "http://127.0.0.1:1234/xero/token", 1);
    setenv("HOOKFLOW_CONNECTOR_TWILIO_TOKEN_URL", "http://127.0.0.1:1234/twilio/token", 1);
    assert_string_equal(engine_connector_base_url("xero"), "http://127.0.0.1:1234/xero");
    assert_string_equal(engine_connector_token_url("xero"), "http://127.0.0.1:1234/xero/token");
    assert_null(engine_connector_token_url("twilio"));
    /* A NULL base_url in build means the configured one. */
    built b;
    build_ok("xero", "create_contact", "{\"name\":\"A\"}", "t-1", NULL, NULL, &b);
    assert_string_equal(b.req.url, "http://127.0.0.1:1234/xero/api.xro/2.0/Contacts");
    built_free(&b);
    setenv("HOOKFLOW_CONNECTOR_XERO_BASE_URL", "", 1); /* empty counts as unset */
    assert_string_equal(engine_connector_base_url("xero"), "https://api.xero.com");
    unsetenv("HOOKFLOW_CONNECTOR_XERO_BASE_URL");
    unsetenv("HOOKFLOW_CONNECTOR_XERO_TOKEN_URL");
    unsetenv("HOOKFLOW_CONNECTOR_TWILIO_TOKEN_URL");
}

/* Which calls may be sent again when their outcome is unknown: every action of a platform that
 * takes an idempotency key, HubSpot's upsert (not its create), both Klaviyo actions (the event's
 * unique_id; a profile import is an upsert), no Twilio or Meta send. */
static void test_repeat_safe(void **state)
{
    (void)state;
    static const struct {
        const char *id, *action;
        bool safe;
    } cases[] = {
        {"xero", "create_invoice", true},
        {"xero", "create_contact", true},
        {"quickbooks", "create_sales_receipt", true},
        {"hubspot", "upsert_contact", true},
        {"hubspot", "create_contact", false},
        {"klaviyo", "create_event", true},
        {"klaviyo", "upsert_profile", true},
        {"twilio", "send_message", false},
        {"meta", "send_message", false},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        const engine_connector *c = engine_connector_find(cases[i].id);
        assert_non_null(c);
        if (engine_connector_repeat_safe(c, cases[i].action) != cases[i].safe)
            fail_msg("%s.%s: repeat_safe should be %d", cases[i].id, cases[i].action,
                     cases[i].safe);
    }
}

/* Every catalog action builds with its connector, the idempotency styles agree, and a success
 * answer maps to exactly the catalog's output.fields (+ raw) with the declared types. */
static const struct sample {
    const char *id, *action, *params;
    long status;
    const char *answer;
} samples[] = {
    {"xero", "create_invoice",
     "{\"contact_id\":\"6d3f0a2b-91c4-4e7f-8b25-3c1e9a7d5f60\",\"line_items\":[{\"description\":"
     "\"Wash\",\"quantity\":2,\"unit_amount\":60,\"account_code\":\"200\"}]}",
     200,
     "{\"Id\":\"e1\",\"Status\":\"OK\",\"Invoices\":[{\"Type\":\"ACCREC\",\"InvoiceID\":"
     "\"8a1c3f5e-2b7d-4e9a-b6c1-0f3d5a7e9b24\",\"InvoiceNumber\":\"INV-0427\",\"Contact\":{"
     "\"ContactID\":\"6d3f0a2b-91c4-4e7f-8b25-3c1e9a7d5f60\",\"Name\":\"Harbourside\"},\"Status\":"
     "\"DRAFT\",\"SubTotal\":120.00,\"TotalTax\":18.00,\"Total\":138.00,\"AmountDue\":138.00,"
     "\"CurrencyCode\":\"NZD\",\"Date\":\"/Date(1773792000000+0000)/\"}]}"},
    {"xero", "create_contact", "{\"name\":\"Harbourside Laundry Co\"}", 200,
     "{\"Contacts\":[{\"ContactID\":\"6d3f0a2b-91c4-4e7f-8b25-3c1e9a7d5f60\",\"Name\":"
     "\"Harbourside Laundry Co\",\"EmailAddress\":\"accounts@harbourside.example\","
     "\"ContactStatus\":\"ACTIVE\"}]}"},
    {"xero", "create_payment",
     "{\"invoice_id\":\"8a1c3f5e-2b7d-4e9a-b6c1-0f3d5a7e9b24\",\"account_code\":\"090\","
     "\"amount\":138}",
     200,
     "{\"Payments\":[{\"PaymentID\":\"0b7e3d91-4c2a-4f68-8e15-7a9c2d4b6f03\",\"Date\":"
     "\"/Date(1773792000000+0000)/\",\"Amount\":138.00,\"Status\":\"AUTHORISED\",\"Invoice\":{"
     "\"InvoiceID\":\"8a1c3f5e-2b7d-4e9a-b6c1-0f3d5a7e9b24\"}}]}"},
    {"quickbooks", "create_sales_receipt", "{\"lines\":[{\"amount\":1284.5,\"item_id\":\"1\"}]}",
     200,
     "{\"SalesReceipt\":{\"Id\":\"1874\",\"DocNumber\":\"1042\",\"TxnDate\":\"2026-03-18\","
     "\"TotalAmt\":1284.5,\"ClassRef\":{\"value\":\"5000000000000021337\"},\"SyncToken\":\"0\"},"
     "\"time\":\"2026-03-18T09:41:27.945-07:00\"}"},
    {"quickbooks", "create_invoice",
     "{\"customer_id\":\"58\",\"lines\":[{\"amount\":345,\"item_id\":\"7\"}]}", 200,
     "{\"Invoice\":{\"Id\":\"2207\",\"DocNumber\":\"1043\",\"TxnDate\":\"2026-03-18\","
     "\"DueDate\":\"2026-04-17\",\"TotalAmt\":345.0,\"Balance\":345.0,\"SyncToken\":\"0\"},"
     "\"time\":\"2026-03-18T09:41:27.945-07:00\"}"},
    {"hubspot", "create_contact", "{\"email\":\"dana@example.com\"}", 201,
     "{\"id\":\"1246965\",\"properties\":{\"email\":\"dana@example.com\",\"hs_object_id\":"
     "\"1246965\"},\"createdAt\":\"2026-03-18T09:41:27.945Z\",\"updatedAt\":"
     "\"2026-03-18T09:41:27.945Z\",\"archived\":false}"},
    {"hubspot", "upsert_contact", "{\"email\":\"dana@example.com\"}", 200,
     "{\"status\":\"COMPLETE\",\"results\":[{\"id\":\"1246965\",\"properties\":{\"email\":"
     "\"dana@example.com\"},\"createdAt\":\"2026-03-18T09:41:27.945Z\",\"updatedAt\":"
     "\"2026-03-18T11:02:15.310Z\",\"archived\":false,\"new\":false}],\"startedAt\":\"x\","
     "\"completedAt\":\"y\"}"},
    {"klaviyo", "create_event", "{\"metric_name\":\"Coupon Redeemed\",\"email\":\"a@b.co\"}", 202,
     ""},
    {"klaviyo", "upsert_profile", "{\"email\":\"dana@example.com\"}", 201,
     "{\"data\":{\"type\":\"profile\",\"id\":\"01JPZK6X8D4W2Q9R7T3V5B1N0M\",\"attributes\":{"
     "\"email\":\"dana@example.com\",\"phone_number\":\"+14155550123\",\"properties\":{"
     "\"loyalty_tier\":\"gold\"},\"updated\":\"2026-03-18T10:42:15+00:00\"}}}"},
    {"twilio", "send_message",
     "{\"to\":\"+14155550123\",\"from\":\"+14155559876\",\"body\":\"hi\"}", 201,
     "{\"sid\":\"SM3a6d9c2f5b8e1a4d7c0f3b6e9a2d5c8f\",\"status\":\"queued\",\"to\":"
     "\"+14155550123\",\"from\":\"+14155559876\",\"body\":\"hi\",\"num_segments\":\"1\"}"},
    {"meta", "send_message", "{\"recipient_id\":\"6523918047715832\",\"text\":\"hi\"}", 200,
     "{\"recipient_id\":\"6523918047715832\",\"message_id\":\"m_"
     "S4z0rV6tB3xP8dM1uY5aJ9lF7hN2eO4g\"}"},
};

static const struct sample *sample_for(const char *id, const char *action)
{
    for (size_t i = 0; i < HF_ARRAY_LEN(samples); i++)
        if (strcmp(samples[i].id, id) == 0 && strcmp(samples[i].action, action) == 0)
            return &samples[i];
    return NULL;
}

static bool type_matches(const char *type, hf_json v)
{
    if (!v || YAJL_IS_NULL(v))
        return true;
    if (strcmp(type, "string") == 0)
        return YAJL_IS_STRING(v);
    if (strcmp(type, "number") == 0)
        return YAJL_IS_NUMBER(v);
    if (strcmp(type, "boolean") == 0)
        return YAJL_IS_TRUE(v) || YAJL_IS_FALSE(v);
    if (strcmp(type, "object") == 0)
        return YAJL_IS_OBJECT(v);
    return true;
}

static void test_catalog_actions_and_output_fields(void **state)
{
    (void)state;
    char err[512];
    hf_catalog *cat = hf_catalog_load(hf_catalog_default_dir(), err, sizeof err);
    if (!cat)
        fail_msg("catalog: %s", err);
    size_t actions = 0;
    for (size_t i = 0; i < hf_catalog_count(cat); i++) {
        const hf_connector *k = hf_catalog_at(cat, i);
        const engine_connector *c = engine_connector_find(hf_connector_id(k));
        assert_non_null(c);
        hf_json list = hf_json_get(hf_connector_json(k), "actions");
        for (size_t a = 0; a < hf_json_len(list); a++) {
            hf_json action = hf_json_at(list, a);
            const char *aid = hf_json_str(hf_json_get(action, "id"));
            assert_string_equal(c->idempotency, hf_json_str(hf_json_get(action, "idempotency")));
            const struct sample *s = sample_for(c->id, aid);
            if (!s)
                fail_msg("no sample for %s.%s", c->id, aid);
            actions++;
            built b;
            build_ok(c->id, aid, s->params, "acct-1", "https://example.test", "run-1:node-1", &b);
            built_free(&b);

            hf_json out = interpret_ok(c->id, aid, s->status, s->answer);
            hf_json fields = hf_json_path(action, "output", "fields", NULL);
            for (size_t f = 0; f < hf_json_len(fields); f++) {
                const char *name;
                hf_json type = hf_json_member(fields, f, &name);
                hf_json v = hf_json_get(out, name);
                if (!v)
                    fail_msg("%s.%s output lacks %s", c->id, aid, name);
                if (!type_matches(hf_json_str(type), v))
                    fail_msg("%s.%s output %s is not a %s", c->id, aid, name, hf_json_str(type));
            }
            for (size_t m = 0; m < hf_json_len(out); m++) {
                const char *name;
                hf_json_member(out, m, &name);
                if (strcmp(name, "raw") != 0 && !hf_json_get(fields, name))
                    fail_msg("%s.%s output has %s, not in the catalog", c->id, aid, name);
            }
            hf_json_free(out);
        }
    }
    assert_int_equal(actions, HF_ARRAY_LEN(samples));
    hf_catalog_free(cat);
}

/* ---- Xero ---- */

static void test_xero_create_invoice(void **state)
{
    (void)state;
    built b;
    build_ok("xero", "create_invoice",
             "{\"contact_id\":\"6d3f0a2b-91c4-4e7f-8b25-3c1e9a7d5f60\",\"line_items\":["
             "{\"description\":\"Wash & fold \\\"large\\\"\",\"quantity\":2,\"unit_amount\":60.5,"
             "\"account_code\":\"200\",\"tax_type\":\"OUTPUT2\"},"
             "{\"description\":\"Detergent\",\"quantity\":\"1\",\"unit_amount\":\"9.95\","
             "\"account_code\":\"310\"}],"
             "\"type\":\"ACCPAY\",\"status\":\"AUTHORISED\",\"date\":\"2026-03-18\","
             "\"due_date\":\"2026-04-17\",\"reference\":\"Branch 7\",\"currency_code\":\"NZD\"}",
             "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f", BASE, "run-42:node-invoice", &b);
    assert_string_equal(b.req.method, "PUT");
    assert_string_equal(b.req.url, "http://127.0.0.1:9/fake/xero/api.xro/2.0/Invoices");
    assert_header(&b.req, "Authorization", "Bearer " TOKEN);
    assert_header(&b.req, "Xero-Tenant-Id", "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f");
    assert_header(&b.req, "Accept", "application/json");
    assert_header(&b.req, "Content-Type", "application/json");
    assert_header(&b.req, "Idempotency-Key", "run-42:node-invoice");
    assert_null(b.req.basic_user);

    assert_int_equal(hf_json_len(b.body), 1);
    hf_json invs = hf_json_get(b.body, "Invoices");
    assert_int_equal(hf_json_len(invs), 1);
    hf_json inv = hf_json_at(invs, 0);
    assert_jstr(hf_json_get(inv, "Type"), "ACCPAY");
    assert_jstr(hf_json_path(inv, "Contact", "ContactID", NULL),
                "6d3f0a2b-91c4-4e7f-8b25-3c1e9a7d5f60");
    assert_jstr(hf_json_get(inv, "Status"), "AUTHORISED");
    assert_jstr(hf_json_get(inv, "Date"), "2026-03-18");
    assert_jstr(hf_json_get(inv, "DueDate"), "2026-04-17");
    assert_jstr(hf_json_get(inv, "Reference"), "Branch 7");
    assert_jstr(hf_json_get(inv, "CurrencyCode"), "NZD");
    hf_json lines = hf_json_get(inv, "LineItems");
    assert_int_equal(hf_json_len(lines), 2);
    hf_json l0 = hf_json_at(lines, 0), l1 = hf_json_at(lines, 1);
    assert_jstr(hf_json_get(l0, "Description"), "Wash & fold \"large\"");
    assert_jnum(hf_json_get(l0, "Quantity"), "2");
    assert_jnum(hf_json_get(l0, "UnitAmount"), "60.5");
    assert_jstr(hf_json_get(l0, "AccountCode"), "200");
    assert_jstr(hf_json_get(l0, "TaxType"), "OUTPUT2");
    /* Numbers rendered by templates as text go out as JSON numbers. */
    assert_jnum(hf_json_get(l1, "Quantity"), "1");
    assert_jnum(hf_json_get(l1, "UnitAmount"), "9.95");
    assert_null(hf_json_get(l1, "TaxType"));
    built_free(&b);

    /* Defaults: ACCREC, DRAFT; no key -> no header; optional "" and null are absent. */
    build_ok("xero", "create_invoice",
             "{\"contact_id\":\"c1\",\"line_items\":[{\"description\":\"d\",\"quantity\":1,"
             "\"unit_amount\":1,\"account_code\":\"200\"}],\"reference\":\"\",\"date\":null}",
             "t-1", "https://api.xero.com", NULL, &b);
    assert_string_equal(b.req.url, "https://api.xero.com/api.xro/2.0/Invoices");
    inv = hf_json_at(hf_json_get(b.body, "Invoices"), 0);
    assert_jstr(hf_json_get(inv, "Type"), "ACCREC");
    assert_jstr(hf_json_get(inv, "Status"), "DRAFT");
    assert_null(hf_json_get(inv, "Reference"));
    assert_null(hf_json_get(inv, "Date"));
    assert_null(header(&b.req, "Idempotency-Key"));
    built_free(&b);
}

static void test_xero_create_contact_and_payment(void **state)
{
    (void)state;
    built b;
    build_ok("xero", "create_contact",
             "{\"name\":\"Harbourside Laundry Co\",\"email\":\"accounts@harbourside.example\","
             "\"first_name\":\"Dana\",\"last_name\":\"Fischer\",\"phone\":\"+64 9 555 0100\","
             "\"account_number\":\"CUST-17\"}",
             "t-1", BASE, "k1", &b);
    assert_string_equal(b.req.method, "PUT");
    assert_string_equal(b.req.url, "http://127.0.0.1:9/fake/xero/api.xro/2.0/Contacts");
    assert_header(&b.req, "Idempotency-Key", "k1");
    assert_header(&b.req, "Xero-Tenant-Id", "t-1");
    hf_json c = hf_json_at(hf_json_get(b.body, "Contacts"), 0);
    assert_jstr(hf_json_get(c, "Name"), "Harbourside Laundry Co");
    assert_jstr(hf_json_get(c, "EmailAddress"), "accounts@harbourside.example");
    assert_jstr(hf_json_get(c, "FirstName"), "Dana");
    assert_jstr(hf_json_get(c, "LastName"), "Fischer");
    assert_jstr(hf_json_get(c, "AccountNumber"), "CUST-17");
    hf_json phone = hf_json_at(hf_json_get(c, "Phones"), 0);
    assert_jstr(hf_json_get(phone, "PhoneType"), "DEFAULT");
    assert_jstr(hf_json_get(phone, "PhoneNumber"), "+64 9 555 0100");
    built_free(&b);

    build_ok("xero", "create_payment",
             "{\"invoice_id\":\"8a1c3f5e-2b7d-4e9a-b6c1-0f3d5a7e9b24\",\"account_code\":\"090\","
             "\"amount\":138.0,\"date\":\"2026-03-18\",\"reference\":\"payout po_123\"}",
             "t-1", BASE, "k2", &b);
    assert_string_equal(b.req.method, "PUT");
    assert_string_equal(b.req.url, "http://127.0.0.1:9/fake/xero/api.xro/2.0/Payments");
    hf_json p = hf_json_at(hf_json_get(b.body, "Payments"), 0);
    assert_jstr(hf_json_path(p, "Invoice", "InvoiceID", NULL),
                "8a1c3f5e-2b7d-4e9a-b6c1-0f3d5a7e9b24");
    assert_jstr(hf_json_path(p, "Account", "Code", NULL), "090");
    assert_jnum(hf_json_get(p, "Amount"), "138.0");
    assert_jstr(hf_json_get(p, "Date"), "2026-03-18");
    assert_jstr(hf_json_get(p, "Reference"), "payout po_123");
    built_free(&b);
}

static void test_xero_idempotency_key_is_bounded(void **state)
{
    (void)state;
    char long_key[200];
    memset(long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    char *params = xasprintf("{\"name\":\"A\"}");
    built a, b;
    build_ok("xero", "create_contact", params, "t", BASE, long_key, &a);
    build_ok("xero", "create_contact", params, "t", BASE, long_key, &b);
    const char *ka = header(&a.req, "Idempotency-Key");
    assert_non_null(ka);
    assert_true(strlen(ka) <= 128);
    assert_string_equal(ka, header(&b.req, "Idempotency-Key")); /* stable across retries */
    built_free(&a);
    built_free(&b);
    /* A key with characters a header should not carry is hashed too. */
    build_ok("xero", "create_contact", params, "t", BASE, "run 1\r\nX-Evil: 1", &a);
    assert_null(header(&a.req, "X-Evil"));
    assert_int_equal(strlen(header(&a.req, "Idempotency-Key")), 64);
    built_free(&a);
    free(params);
}

static void test_xero_interpret(void **state)
{
    (void)state;
    const struct sample *s = sample_for("xero", "create_invoice");
    hf_json out = interpret_ok("xero", "create_invoice", 200, s->answer);
    assert_jstr(hf_json_get(out, "invoice_id"), "8a1c3f5e-2b7d-4e9a-b6c1-0f3d5a7e9b24");
    assert_jstr(hf_json_get(out, "invoice_number"), "INV-0427");
    assert_jstr(hf_json_get(out, "type"), "ACCREC");
    assert_jstr(hf_json_get(out, "status"), "DRAFT");
    assert_jstr(hf_json_get(out, "contact_id"), "6d3f0a2b-91c4-4e7f-8b25-3c1e9a7d5f60");
    assert_jnum(hf_json_get(out, "sub_total"), "120.00");
    assert_jnum(hf_json_get(out, "total_tax"), "18.00");
    assert_jnum(hf_json_get(out, "total"), "138.00");
    assert_jnum(hf_json_get(out, "amount_due"), "138.00");
    assert_jstr(hf_json_get(out, "currency_code"), "NZD");
    assert_jstr(hf_json_path(out, "raw", "Id", NULL), "e1");
    hf_json_free(out);

    out = interpret_ok("xero", "create_payment", 200, sample_for("xero", "create_payment")->answer);
    assert_jstr(hf_json_get(out, "date"), "2026-03-18"); /* from /Date(ms+0000)/ */
    assert_jstr(hf_json_get(out, "invoice_id"), "8a1c3f5e-2b7d-4e9a-b6c1-0f3d5a7e9b24");
    assert_jstr(hf_json_get(out, "status"), "AUTHORISED");
    hf_json_free(out);

    out = interpret_ok("xero", "create_contact", 200, sample_for("xero", "create_contact")->answer);
    assert_jstr(hf_json_get(out, "contact_status"), "ACTIVE");
    assert_jstr(hf_json_get(out, "email"), "accounts@harbourside.example");
    hf_json_free(out);

    char err[512];
    assert_int_equal(
        interpret(
            "xero", "create_invoice", 400,
            "{\"ErrorNumber\":10,\"Type\":\"ValidationException\",\"Message\":\"A validation "
            "exception occurred\",\"Elements\":[{\"ValidationErrors\":[{\"Message\":\"Account "
            "code '999' is not a valid code for this document.\"},{\"Message\":\"Contact not "
            "found\"}]}]}",
            NULL, err, sizeof err),
        CONNECTOR_FAIL);
    assert_non_null(strstr(err, "400"));
    assert_non_null(strstr(err, "Account code '999' is not a valid code for this document."));
    assert_non_null(strstr(err, "Contact not found"));
    assert_int_equal(interpret("xero", "create_invoice", 401,
                               "{\"Title\":\"Unauthorized\",\"Status\":401,\"Detail\":"
                               "\"TokenExpired: token expired at 01/01/2026 00:00:00\"}",
                               NULL, err, sizeof err),
                     CONNECTOR_AUTH);
    assert_non_null(strstr(err, "TokenExpired"));
    assert_int_equal(interpret("xero", "create_invoice", 429, "", NULL, err, sizeof err),
                     CONNECTOR_RETRY);
    assert_int_equal(interpret("xero", "create_invoice", 500, "oops", NULL, err, sizeof err),
                     CONNECTOR_RETRY);
    assert_int_equal(interpret("xero", "create_invoice", 503,
                               "{\"Title\":\"Service Unavailable\",\"Detail\":\"Organisation is "
                               "offline\"}",
                               NULL, err, sizeof err),
                     CONNECTOR_RETRY);
    assert_int_equal(interpret("xero", "create_invoice", 403,
                               "{\"Title\":\"Forbidden\",\"Detail\":\"AuthorizationUnsuccessful\"}",
                               NULL, err, sizeof err),
                     CONNECTOR_FAIL);
    assert_non_null(strstr(err, "AuthorizationUnsuccessful"));
    assert_int_equal(interpret("xero", "create_invoice", 409, "", NULL, err, sizeof err),
                     CONNECTOR_RETRY);
    /* A flagged element inside a 200 (summarizeErrors=false) is a failure. */
    assert_int_equal(interpret("xero", "create_contact", 200,
                               "{\"Contacts\":[{\"Name\":\"A\",\"HasValidationErrors\":true,"
                               "\"ValidationErrors\":[{\"Message\":\"The contact name A is "
                               "already assigned to another contact.\"}]}]}",
                               NULL, err, sizeof err),
                     CONNECTOR_FAIL);
    assert_non_null(strstr(err, "already assigned"));
}

/* ---- QuickBooks ---- */

static void test_quickbooks_requests(void **state)
{
    (void)state;
    built b;
    build_ok("quickbooks", "create_sales_receipt",
             "{\"lines\":[{\"amount\":1200,\"item_id\":\"1\",\"description\":\"Wash\",\"quantity\":"
             "100,\"unit_price\":12},{\"amount\":\"84.50\",\"item_id\":2}],\"customer_id\":\"58\","
             "\"txn_date\":\"2026-03-18\",\"class_id\":\"5000000000000021337\","
             "\"deposit_account_id\":\"35\",\"payment_method_id\":\"3\",\"private_note\":"
             "\"Daily payout\"}",
             "9130356201234567", "http://127.0.0.1:9/quickbooks", "run-7:node-qb", &b);
    assert_string_equal(b.req.method, "POST");
    assert_string_equal(b.req.url, "http://127.0.0.1:9/quickbooks/v3/company/9130356201234567/"
                                   "salesreceipt?minorversion=75&requestid=run-7%3Anode-qb");
    assert_header(&b.req, "Authorization", "Bearer " TOKEN);
    assert_header(&b.req, "Accept", "application/json");
    assert_header(&b.req, "Content-Type", "application/json");
    assert_null(header(&b.req, "Idempotency-Key"));
    hf_json lines = hf_json_get(b.body, "Line");
    assert_int_equal(hf_json_len(lines), 2);
    hf_json l0 = hf_json_at(lines, 0);
    assert_jstr(hf_json_get(l0, "DetailType"), "SalesItemLineDetail");
    assert_jnum(hf_json_get(l0, "Amount"), "1200");
    assert_jstr(hf_json_get(l0, "Description"), "Wash");
    assert_jstr(hf_json_path(l0, "SalesItemLineDetail", "ItemRef", "value", NULL), "1");
    assert_jnum(hf_json_path(l0, "SalesItemLineDetail", "Qty", NULL), "100");
    assert_jnum(hf_json_path(l0, "SalesItemLineDetail", "UnitPrice", NULL), "12");
    hf_json l1 = hf_json_at(lines, 1);
    assert_jnum(hf_json_get(l1, "Amount"), "84.50");
    assert_jstr(hf_json_path(l1, "SalesItemLineDetail", "ItemRef", "value", NULL), "2");
    assert_null(hf_json_path(l1, "SalesItemLineDetail", "Qty", NULL));
    assert_jstr(hf_json_path(b.body, "CustomerRef", "value", NULL), "58");
    assert_jstr(hf_json_get(b.body, "TxnDate"), "2026-03-18");
    assert_jstr(hf_json_path(b.body, "ClassRef", "value", NULL), "5000000000000021337");
    assert_jstr(hf_json_path(b.body, "DepositToAccountRef", "value", NULL), "35");
    assert_jstr(hf_json_path(b.body, "PaymentMethodRef", "value", NULL), "3");
    assert_jstr(hf_json_get(b.body, "PrivateNote"), "Daily payout");
    built_free(&b);

    /* Walk-in sale: no CustomerRef at all. */
    build_ok("quickbooks", "create_sales_receipt",
             "{\"lines\":[{\"amount\":5,\"item_id\":\"1\"}],\"customer_id\":\"\"}", "1", BASE, NULL,
             &b);
    assert_null(hf_json_get(b.body, "CustomerRef"));
    assert_null(strstr(b.req.url, "requestid"));
    built_free(&b);

    build_ok("quickbooks", "create_invoice",
             "{\"customer_id\":\"58\",\"lines\":[{\"amount\":345,\"item_id\":\"7\"}],"
             "\"due_date\":\"2026-04-17\",\"class_id\":\"42\",\"bill_email\":"
             "\"ap@harbourside.example\",\"private_note\":\"March\"}",
             "9130356201234567", "https://quickbooks.api.intuit.com/", "k", &b);
    assert_string_equal(b.req.url, "https://quickbooks.api.intuit.com/v3/company/9130356201234567/"
                                   "invoice?minorversion=75&requestid=k");
    assert_jstr(hf_json_path(b.body, "CustomerRef", "value", NULL), "58");
    assert_jstr(hf_json_get(b.body, "DueDate"), "2026-04-17");
    assert_jstr(hf_json_path(b.body, "ClassRef", "value", NULL), "42");
    assert_jstr(hf_json_path(b.body, "BillEmail", "Address", NULL), "ap@harbourside.example");
    assert_jstr(hf_json_get(b.body, "PrivateNote"), "March");
    assert_int_equal(hf_json_len(hf_json_get(b.body, "Line")), 1);
    built_free(&b);

    /* requestid: at most 50 characters, stable for the same key. */
    char long_key[80];
    memset(long_key, 'r', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    build_ok("quickbooks", "create_invoice",
             "{\"customer_id\":\"58\",\"lines\":[{\"amount\":1,\"item_id\":\"7\"}]}", "1", BASE,
             long_key, &b);
    const char *rid = strstr(b.req.url, "requestid=") + strlen("requestid=");
    assert_int_equal(strlen(rid), 50);
    built c;
    build_ok("quickbooks", "create_invoice",
             "{\"customer_id\":\"58\",\"lines\":[{\"amount\":1,\"item_id\":\"7\"}]}", "1", BASE,
             long_key, &c);
    assert_string_equal(b.req.url, c.req.url);
    built_free(&b);
    built_free(&c);
}

static void test_quickbooks_interpret(void **state)
{
    (void)state;
    hf_json out = interpret_ok("quickbooks", "create_sales_receipt", 200,
                               sample_for("quickbooks", "create_sales_receipt")->answer);
    assert_jstr(hf_json_get(out, "id"), "1874");
    assert_jstr(hf_json_get(out, "doc_number"), "1042");
    assert_jstr(hf_json_get(out, "txn_date"), "2026-03-18");
    assert_jnum(hf_json_get(out, "total_amt"), "1284.5");
    assert_jstr(hf_json_get(out, "class_id"), "5000000000000021337");
    assert_jstr(hf_json_get(out, "sync_token"), "0");
    hf_json_free(out);
    out = interpret_ok("quickbooks", "create_invoice", 200,
                       sample_for("quickbooks", "create_invoice")->answer);
    assert_jstr(hf_json_get(out, "due_date"), "2026-04-17");
    assert_jnum(hf_json_get(out, "balance"), "345.0");
    hf_json_free(out);

    char err[512];
    assert_int_equal(interpret("quickbooks", "create_invoice", 400,
                               "{\"Fault\":{\"Error\":[{\"Message\":\"Object Not Found\","
                               "\"Detail\":\"Object Not Found : Something you're trying to use "
                               "has been made inactive.\",\"code\":\"610\",\"element\":\"\"}],"
                               "\"type\":\"ValidationFault\"},\"time\":\"x\"}",
                               NULL, err, sizeof err),
                     CONNECTOR_FAIL);
    assert_non_null(strstr(err, "Object Not Found"));
    assert_non_null(strstr(err, "has been made inactive"));
    assert_non_null(strstr(err, "610"));
    assert_int_equal(
        interpret("quickbooks", "create_invoice", 401,
                  "{\"fault\":{\"error\":[{\"message\":\"message=AuthenticationFailed; "
                  "errorCode=003200; statusCode=401\",\"detail\":\"Token expired\","
                  "\"code\":\"3200\"}],\"type\":\"AUTHENTICATION\"}}",
                  NULL, err, sizeof err),
        CONNECTOR_AUTH);
    assert_non_null(strstr(err, "Token expired"));
    assert_int_equal(interpret("quickbooks", "create_invoice", 429, "", NULL, err, sizeof err),
                     CONNECTOR_RETRY);
    assert_int_equal(interpret("quickbooks", "create_invoice", 500,
                               "{\"Fault\":{\"Error\":[{\"Message\":\"fake error\",\"code\":"
                               "\"10000\"}],\"type\":\"SystemFault\"}}",
                               NULL, err, sizeof err),
                     CONNECTOR_RETRY);
    /* A Fault inside a 200 is a refusal. */
    assert_int_equal(interpret("quickbooks", "create_sales_receipt", 200,
                               "{\"Fault\":{\"Error\":[{\"Message\":\"Duplicate Document Number "
                               "Error\",\"code\":\"6140\"}],\"type\":\"ValidationFault\"}}",
                               NULL, err, sizeof err),
                     CONNECTOR_FAIL);
    assert_non_null(strstr(err, "Duplicate Document Number"));
}

/* ---- HubSpot ---- */

static void test_hubspot_requests(void **state)
{
    (void)state;
    built b;
    build_ok("hubspot", "create_contact",
             "{\"email\":\"dana@example.com\",\"firstname\":\"Dana\",\"lastname\":\"Fischer\","
             "\"phone\":\"+14155550123\",\"lifecyclestage\":\"customer\",\"properties\":{"
             "\"loyalty_tier\":\"gold\",\"visits\":12,\"vip\":true,\"firstname\":\"ignored\","
             "\"gone\":null}}",
             "62515", "http://127.0.0.1:9/hubspot", "k", &b);
    assert_string_equal(b.req.method, "POST");
    assert_string_equal(b.req.url, "http://127.0.0.1:9/hubspot/crm/v3/objects/contacts");
    assert_header(&b.req, "Authorization", "Bearer " TOKEN);
    assert_header(&b.req, "Content-Type", "application/json");
    assert_null(header(&b.req, "Idempotency-Key"));
    assert_int_equal(hf_json_len(b.body), 1);
    hf_json props = hf_json_get(b.body, "properties");
    assert_jstr(hf_json_get(props, "email"), "dana@example.com");
    assert_jstr(hf_json_get(props, "firstname"), "Dana"); /* the named param wins */
    assert_jstr(hf_json_get(props, "lastname"), "Fischer");
    assert_jstr(hf_json_get(props, "phone"), "+14155550123");
    assert_jstr(hf_json_get(props, "lifecyclestage"), "customer");
    assert_jstr(hf_json_get(props, "loyalty_tier"), "gold");
    assert_jstr(hf_json_get(props, "visits"), "12");
    assert_jstr(hf_json_get(props, "vip"), "true");
    assert_null(hf_json_get(props, "gone"));
    assert_int_equal(hf_json_len(props), 8);
    built_free(&b);

    build_ok("hubspot", "upsert_contact", "{\"email\":\"dana@example.com\",\"firstname\":\"Dana\"}",
             "62515", "http://127.0.0.1:9/hubspot/", NULL, &b);
    assert_string_equal(b.req.url,
                        "http://127.0.0.1:9/hubspot/crm/v3/objects/contacts/batch/upsert");
    hf_json inputs = hf_json_get(b.body, "inputs");
    assert_int_equal(hf_json_len(inputs), 1);
    hf_json in = hf_json_at(inputs, 0);
    assert_jstr(hf_json_get(in, "idProperty"), "email");
    assert_jstr(hf_json_get(in, "id"), "dana@example.com");
    assert_jstr(hf_json_path(in, "properties", "firstname", NULL), "Dana");
    assert_jstr(hf_json_path(in, "properties", "email", NULL), "dana@example.com");
    built_free(&b);
}

static void test_hubspot_interpret(void **state)
{
    (void)state;
    hf_json out = interpret_ok("hubspot", "create_contact", 201,
                               sample_for("hubspot", "create_contact")->answer);
    assert_jstr(hf_json_get(out, "id"), "1246965");
    assert_jstr(hf_json_path(out, "properties", "email", NULL), "dana@example.com");
    assert_jstr(hf_json_get(out, "created_at"), "2026-03-18T09:41:27.945Z");
    assert_jstr(hf_json_get(out, "updated_at"), "2026-03-18T09:41:27.945Z");
    assert_true(YAJL_IS_FALSE(hf_json_get(out, "archived")));
    assert_null(hf_json_get(out, "new"));
    hf_json_free(out);
    out = interpret_ok("hubspot", "upsert_contact", 200,
                       sample_for("hubspot", "upsert_contact")->answer);
    assert_jstr(hf_json_get(out, "id"), "1246965");
    assert_jstr(hf_json_get(out, "updated_at"), "2026-03-18T11:02:15.310Z");
    assert_true(YAJL_IS_FALSE(hf_json_get(out, "new")));
    hf_json_free(out);

    char err[512];
    assert_int_equal(interpret("hubspot", "create_contact", 400,
                               "{\"status\":\"error\",\"message\":\"Property values were not "
                               "valid: email is invalid\",\"correlationId\":\"c\",\"category\":"
                               "\"VALIDATION_ERROR\"}",
                               NULL, err, sizeof err),
                     CONNECTOR_FAIL);
    assert_non_null(strstr(err, "Property values were not valid: email is invalid"));
    assert_non_null(strstr(err, "VALIDATION_ERROR"));
    assert_int_equal(interpret("hubspot", "create_contact", 409,
                               "{\"status\":\"error\",\"message\":\"Contact already exists. "
                               "Existing ID: 1246965\",\"category\":\"CONFLICT\"}",
                               NULL, err, sizeof err),
                     CONNECTOR_FAIL);
    assert_non_null(strstr(err, "Existing ID: 1246965"));
    assert_int_equal(interpret("hubspot", "upsert_contact", 401,
                               "{\"status\":\"error\",\"message\":\"The OAuth token used to make "
                               "this call expired 3 minute(s) ago.\",\"category\":"
                               "\"EXPIRED_AUTHENTICATION\"}",
                               NULL, err, sizeof err),
                     CONNECTOR_AUTH);
    assert_int_equal(interpret("hubspot", "upsert_contact", 429,
                               "{\"status\":\"error\",\"message\":\"You have reached your "
                               "ten_secondly_rolling limit.\",\"policyName\":"
                               "\"TEN_SECONDLY_ROLLING\"}",
                               NULL, err, sizeof err),
                     CONNECTOR_RETRY);
    assert_non_null(strstr(err, "ten_secondly_rolling"));
    assert_int_equal(interpret("hubspot", "upsert_contact", 502, "<html>", NULL, err, sizeof err),
                     CONNECTOR_RETRY);
    assert_int_equal(interpret("hubspot", "upsert_contact", 207,
                               "{\"status\":\"COMPLETE\",\"results\":[],\"errors\":[{\"status\":"
                               "\"error\",\"message\":\"Property email is invalid\"}]}",
                               NULL, err, sizeof err),
                     CONNECTOR_FAIL);
    assert_non_null(strstr(err, "Property email is invalid"));
}

/* ---- Klaviyo ---- */

static void test_klaviyo_requests(void **state)
{
    (void)state;
    built b;
    build_ok("klaviyo", "create_event",
             "{\"metric_name\":\"Coupon Redeemed\",\"email\":\"dana@example.com\",\"phone_number\":"
             "\"+14155550123\",\"properties\":{\"coupon\":\"SPRING20\",\"items\":[1,2]},\"value\":"
             "\"12.50\",\"time\":\"2026-03-18T09:41:27+00:00\"}",
             "ABC123", "http://127.0.0.1:9/klaviyo", "run-9:node-k", &b);
    assert_string_equal(b.req.method, "POST");
    assert_string_equal(b.req.url, "http://127.0.0.1:9/klaviyo/api/events");
    assert_header(&b.req, "Authorization", "Bearer " TOKEN);
    assert_header(&b.req, "revision", "2025-10-15");
    assert_header(&b.req, "Content-Type", "application/vnd.api+json");
    assert_header(&b.req, "Accept", "application/vnd.api+json");
    hf_json data = hf_json_get(b.body, "data");
    assert_jstr(hf_json_get(data, "type"), "event");
    hf_json at = hf_json_get(data, "attributes");
    assert_jstr(hf_json_path(at, "properties", "coupon", NULL), "SPRING20");
    assert_int_equal(hf_json_len(hf_json_path(at, "properties", "items", NULL)), 2);
    assert_jstr(hf_json_path(at, "metric", "data", "type", NULL), "metric");
    assert_jstr(hf_json_path(at, "metric", "data", "attributes", "name", NULL), "Coupon Redeemed");
    assert_jstr(hf_json_path(at, "profile", "data", "type", NULL), "profile");
    assert_jstr(hf_json_path(at, "profile", "data", "attributes", "email", NULL),
                "dana@example.com");
    assert_jstr(hf_json_path(at, "profile", "data", "attributes", "phone_number", NULL),
                "+14155550123");
    assert_jnum(hf_json_get(at, "value"), "12.50");
    assert_jstr(hf_json_get(at, "time"), "2026-03-18T09:41:27+00:00");
    /* No unique_id given: the idempotency key stands in, so a retry is counted once. */
    assert_jstr(hf_json_get(at, "unique_id"), "run-9:node-k");
    built_free(&b);

    build_ok("klaviyo", "create_event",
             "{\"metric_name\":\"Order Placed\",\"phone_number\":\"+14155550123\",\"unique_id\":"
             "\"order-10045\"}",
             "ABC123", NULL, "run-9:node-k", &b);
    at = hf_json_path(b.body, "data", "attributes", NULL);
    assert_jstr(hf_json_get(at, "unique_id"), "order-10045");
    assert_int_equal(hf_json_len(hf_json_get(at, "properties")), 0); /* {} is required */
    assert_true(hf_json_is_object(hf_json_get(at, "properties")));
    assert_null(hf_json_path(at, "profile", "data", "attributes", "email", NULL));
    assert_null(hf_json_get(at, "value"));
    built_free(&b);

    build_ok("klaviyo", "upsert_profile",
             "{\"email\":\"dana@example.com\",\"first_name\":\"Dana\",\"last_name\":\"Fischer\","
             "\"properties\":{\"loyalty_tier\":\"gold\"}}",
             "ABC123", "http://127.0.0.1:9/klaviyo", NULL, &b);
    assert_string_equal(b.req.url, "http://127.0.0.1:9/klaviyo/api/profile-import");
    assert_header(&b.req, "revision", "2025-10-15");
    data = hf_json_get(b.body, "data");
    assert_jstr(hf_json_get(data, "type"), "profile");
    at = hf_json_get(data, "attributes");
    assert_jstr(hf_json_get(at, "email"), "dana@example.com");
    assert_jstr(hf_json_get(at, "first_name"), "Dana");
    assert_jstr(hf_json_get(at, "last_name"), "Fischer");
    assert_jstr(hf_json_path(at, "properties", "loyalty_tier", NULL), "gold");
    assert_null(hf_json_get(at, "phone_number"));
    built_free(&b);

    /* A private API key uses Klaviyo's own scheme. */
    const engine_connector *k = engine_connector_find("klaviyo");
    hf_json p = parse("{\"email\":\"a@b.co\"}");
    connector_conn conn = {.account = "ABC123", .access_token = "pk_live_abc"};
    char err[256];
    assert_int_equal(k->build("upsert_profile", p, &conn, NULL, NULL, &b.req, err, sizeof err), 0);
    assert_header(&b.req, "Authorization", "Klaviyo-API-Key pk_live_abc");
    connector_request_free(&b.req);
    hf_json_free(p);
}

static void test_klaviyo_interpret(void **state)
{
    (void)state;
    hf_json out = interpret_ok("klaviyo", "create_event", 202, "");
    assert_true(YAJL_IS_TRUE(hf_json_get(out, "accepted")));
    assert_null(hf_json_get(out, "raw"));
    hf_json_free(out);
    /* Klaviyo echoes nothing: the metric name and unique_id come from the request sent. */
    const engine_connector *k = engine_connector_find("klaviyo");
    built b;
    build_ok("klaviyo", "create_event",
             "{\"metric_name\":\"Order \\\"Placed\\\"\",\"email\":\"a@b.co\"}", "ABC123", NULL,
             "run-9:node-k", &b);
    hf_buf output = {0};
    char eerr[256] = "";
    assert_int_equal(k->interpret("create_event", &b.req, 202, "", 0, &output, eerr, sizeof eerr),
                     CONNECTOR_OK);
    out = parse(output.data);
    assert_true(YAJL_IS_TRUE(hf_json_get(out, "accepted")));
    assert_jstr(hf_json_get(out, "metric_name"), "Order \"Placed\"");
    assert_jstr(hf_json_get(out, "unique_id"), "run-9:node-k");
    hf_json_free(out);
    hf_buf_free(&output);
    built_free(&b);
    out = interpret_ok("klaviyo", "upsert_profile", 201,
                       sample_for("klaviyo", "upsert_profile")->answer);
    assert_jstr(hf_json_get(out, "id"), "01JPZK6X8D4W2Q9R7T3V5B1N0M");
    assert_jstr(hf_json_get(out, "email"), "dana@example.com");
    assert_jstr(hf_json_get(out, "phone_number"), "+14155550123");
    assert_jstr(hf_json_path(out, "properties", "loyalty_tier", NULL), "gold");
    assert_jstr(hf_json_get(out, "updated"), "2026-03-18T10:42:15+00:00");
    hf_json_free(out);
    out = interpret_ok("klaviyo", "upsert_profile", 200,
                       sample_for("klaviyo", "upsert_profile")->answer);
    hf_json_free(out);

    char err[512];
    assert_int_equal(interpret("klaviyo", "create_event", 400,
                               "{\"errors\":[{\"id\":\"e\",\"status\":400,\"code\":\"invalid\","
                               "\"title\":\"Invalid input.\",\"detail\":\"Invalid phone number "
                               "format (Example of a valid format: +13239169023)\",\"source\":{"
                               "\"pointer\":\"/data/attributes/phone_number\"}}]}",
                               NULL, err, sizeof err),
                     CONNECTOR_FAIL);
    assert_non_null(strstr(err, "Invalid phone number format"));
    assert_int_equal(interpret("klaviyo", "create_event", 401,
                               "{\"errors\":[{\"status\":401,\"code\":\"not_authenticated\","
                               "\"title\":\"Authentication credentials were not provided.\"}]}",
                               NULL, err, sizeof err),
                     CONNECTOR_AUTH);
    assert_non_null(strstr(err, "Authentication credentials were not provided."));
    assert_int_equal(interpret("klaviyo", "upsert_profile", 429,
                               "{\"errors\":[{\"status\":429,\"code\":\"throttled\",\"detail\":"
                               "\"Request was throttled. Expected available in 1 second.\"}]}",
                               NULL, err, sizeof err),
                     CONNECTOR_RETRY);
    assert_int_equal(interpret("klaviyo", "upsert_profile", 500, "", NULL, err, sizeof err),
                     CONNECTOR_RETRY);
}

/* ---- Twilio ---- */

static void test_twilio_requests(void **state)
{
    (void)state;
    built b;
    build_ok("twilio", "send_message",
             "{\"to\":\"+14155550123\",\"from\":\"+14155559876\",\"body\":\"Your pickup is ready: "
             "50% off & free dry=yes\",\"media_url\":\"https://cdn.example/r.png?a=1&b=2\"}",
             "AC7d2c9e4b1a6f3e8d5c2b9a6f3e0d7c4b", "http://127.0.0.1:9/twilio", "k", &b);
    assert_string_equal(b.req.method, "POST");
    assert_string_equal(b.req.url, "http://127.0.0.1:9/twilio/2010-04-01/Accounts/"
                                   "AC7d2c9e4b1a6f3e8d5c2b9a6f3e0d7c4b/Messages.json");
    assert_string_equal(b.req.basic_user, "AC7d2c9e4b1a6f3e8d5c2b9a6f3e0d7c4b");
    assert_string_equal(b.req.basic_password, TOKEN);
    assert_null(header(&b.req, "Authorization"));
    assert_header(&b.req, "Content-Type", "application/x-www-form-urlencoded");
    assert_null(b.body);
    assert_form(b.req.body, "To", "+14155550123");
    assert_form(b.req.body, "From", "+14155559876");
    assert_form(b.req.body, "Body", "Your pickup is ready: 50% off & free dry=yes");
    assert_form(b.req.body, "MediaUrl", "https://cdn.example/r.png?a=1&b=2");
    assert_form(b.req.body, "MessagingServiceSid", NULL);
    /* '+' must be encoded, not read back as a space. */
    assert_non_null(strstr(b.req.body, "To=%2B14155550123"));
    built_free(&b);

    /* WhatsApp: both ends carry the prefix (a bare sender gets it). */
    build_ok("twilio", "send_message",
             "{\"to\":\"whatsapp:+14155550123\",\"from\":\"+14155559876\",\"body\":\"hola\"}",
             "AC1", "http://127.0.0.1:9/twilio", NULL, &b);
    assert_form(b.req.body, "To", "whatsapp:+14155550123");
    assert_form(b.req.body, "From", "whatsapp:+14155559876");
    assert_form(b.req.body, "Body", "hola");
    assert_form(b.req.body, "MediaUrl", NULL);
    built_free(&b);
    build_ok("twilio", "send_message",
             "{\"to\":\"whatsapp:+14155550123\",\"from\":\"whatsapp:+14155559876\",\"body\":\"x\"}",
             "AC1", NULL, NULL, &b);
    assert_string_equal(b.req.url, "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json");
    assert_form(b.req.body, "From", "whatsapp:+14155559876");
    built_free(&b);

    /* A Messaging Service SID as the sender. */
    build_ok(
        "twilio", "send_message",
        "{\"to\":\"+14155550123\",\"from\":\"MG2b7e4d1c9a6f3e0b8d5c2a9f6e3b0d7c\",\"body\":\"x\"}",
        "AC1", NULL, NULL, &b);
    assert_form(b.req.body, "MessagingServiceSid", "MG2b7e4d1c9a6f3e0b8d5c2a9f6e3b0d7c");
    assert_form(b.req.body, "From", NULL);
    built_free(&b);
}

static void test_twilio_interpret(void **state)
{
    (void)state;
    hf_json out =
        interpret_ok("twilio", "send_message", 201, sample_for("twilio", "send_message")->answer);
    assert_jstr(hf_json_get(out, "sid"), "SM3a6d9c2f5b8e1a4d7c0f3b6e9a2d5c8f");
    assert_jstr(hf_json_get(out, "status"), "queued");
    assert_jstr(hf_json_get(out, "channel"), "sms");
    assert_jstr(hf_json_get(out, "to"), "+14155550123");
    assert_jstr(hf_json_get(out, "from"), "+14155559876");
    hf_json_free(out);
    out = interpret_ok("twilio", "send_message", 201,
                       "{\"sid\":\"SM1\",\"status\":\"queued\",\"to\":\"whatsapp:+14155550123\","
                       "\"from\":\"whatsapp:+14155559876\"}");
    assert_jstr(hf_json_get(out, "channel"), "whatsapp");
    hf_json_free(out);

    char err[512];
    assert_int_equal(interpret("twilio", "send_message", 400,
                               "{\"code\":21211,\"message\":\"The 'To' number +1555 is not a "
                               "valid phone number.\",\"more_info\":\"https://www.twilio.com/docs/"
                               "errors/21211\",\"status\":400}",
                               NULL, err, sizeof err),
                     CONNECTOR_FAIL);
    assert_non_null(strstr(err, "The 'To' number +1555 is not a valid phone number."));
    assert_non_null(strstr(err, "21211"));
    assert_int_equal(interpret("twilio", "send_message", 401,
                               "{\"code\":20003,\"message\":\"Authenticate\",\"status\":401}", NULL,
                               err, sizeof err),
                     CONNECTOR_AUTH);
    assert_int_equal(interpret("twilio", "send_message", 429,
                               "{\"code\":20429,\"message\":\"Too Many Requests\",\"status\":429}",
                               NULL, err, sizeof err),
                     CONNECTOR_RETRY);
    assert_int_equal(interpret("twilio", "send_message", 500, "", NULL, err, sizeof err),
                     CONNECTOR_RETRY);
}

/* ---- Meta ---- */

static void test_meta_requests(void **state)
{
    (void)state;
    built b;
    build_ok(
        "meta", "send_message",
        "{\"recipient_id\":\"6523918047715832\",\"text\":\"Your order is ready \xf0\x9f\xa7\xba\"}",
        "104857362981245", "http://127.0.0.1:9/meta", "k", &b);
    assert_string_equal(b.req.method, "POST");
    assert_string_equal(b.req.url, "http://127.0.0.1:9/meta/v25.0/104857362981245/messages");
    assert_header(&b.req, "Authorization", "Bearer " TOKEN);
    assert_header(&b.req, "Content-Type", "application/json");
    assert_null(strstr(b.req.url, TOKEN)); /* never in the URL */
    assert_jstr(hf_json_path(b.body, "recipient", "id", NULL), "6523918047715832");
    assert_jstr(hf_json_get(b.body, "messaging_type"), "RESPONSE");
    assert_jstr(hf_json_path(b.body, "message", "text", NULL),
                "Your order is ready \xf0\x9f\xa7\xba");
    assert_null(hf_json_get(b.body, "tag"));
    built_free(&b);

    build_ok("meta", "send_message",
             "{\"recipient_id\":\"65\",\"text\":\"Pickup tomorrow\",\"messaging_type\":"
             "\"MESSAGE_TAG\",\"tag\":\"CONFIRMED_EVENT_UPDATE\"}",
             "104857362981245", NULL, NULL, &b);
    assert_string_equal(b.req.url, "https://graph.facebook.com/v25.0/104857362981245/messages");
    assert_jstr(hf_json_get(b.body, "messaging_type"), "MESSAGE_TAG");
    assert_jstr(hf_json_get(b.body, "tag"), "CONFIRMED_EVENT_UPDATE");
    built_free(&b);

    build_fails("meta", "send_message",
                "{\"recipient_id\":\"65\",\"text\":\"x\",\"messaging_type\":\"MESSAGE_TAG\"}",
                "\"tag\"");
    build_fails("meta", "send_message",
                "{\"recipient_id\":\"65\",\"text\":\"x\",\"tag\":\"HUMAN_AGENT\"}", "\"tag\"");
    build_fails("meta", "send_message",
                "{\"recipient_id\":\"65\",\"text\":\"x\",\"messaging_type\":\"PROMO\"}",
                "\"messaging_type\"");
    hf_buf long_text = {0};
    hf_buf_puts(&long_text, "{\"recipient_id\":\"65\",\"text\":\"");
    for (int i = 0; i < 2001; i++)
        hf_buf_puts(&long_text, "\xc3\xa9");
    hf_buf_puts(&long_text, "\"}");
    build_fails("meta", "send_message", long_text.data, "\"text\"");
    hf_buf_free(&long_text);
}

static void test_meta_interpret(void **state)
{
    (void)state;
    hf_json out =
        interpret_ok("meta", "send_message", 200, sample_for("meta", "send_message")->answer);
    assert_jstr(hf_json_get(out, "recipient_id"), "6523918047715832");
    assert_jstr(hf_json_get(out, "message_id"), "m_S4z0rV6tB3xP8dM1uY5aJ9lF7hN2eO4g");
    hf_json_free(out);

    char err[512];
    /* Meta answers an expired Page token with 400 + OAuthException code 190. */
    assert_int_equal(interpret("meta", "send_message", 400,
                               "{\"error\":{\"message\":\"Error validating access token: Session "
                               "has expired.\",\"type\":\"OAuthException\",\"code\":190,"
                               "\"error_subcode\":463,\"fbtrace_id\":\"A\"}}",
                               NULL, err, sizeof err),
                     CONNECTOR_AUTH);
    assert_non_null(strstr(err, "Session has expired"));
    assert_int_equal(interpret("meta", "send_message", 401,
                               "{\"error\":{\"message\":\"Invalid OAuth access token\",\"type\":"
                               "\"OAuthException\",\"code\":190}}",
                               NULL, err, sizeof err),
                     CONNECTOR_AUTH);
    assert_int_equal(interpret("meta", "send_message", 400,
                               "{\"error\":{\"message\":\"(#100) No matching user found\","
                               "\"type\":\"OAuthException\",\"code\":100,\"error_subcode\":"
                               "2018001}}",
                               NULL, err, sizeof err),
                     CONNECTOR_FAIL);
    assert_non_null(strstr(err, "(#100) No matching user found"));
    assert_int_equal(interpret("meta", "send_message", 400,
                               "{\"error\":{\"message\":\"(#613) Calls to this api have exceeded "
                               "the rate limit.\",\"code\":613}}",
                               NULL, err, sizeof err),
                     CONNECTOR_RETRY);
    assert_int_equal(interpret("meta", "send_message", 400,
                               "{\"error\":{\"message\":\"An unexpected error has occurred.\","
                               "\"code\":5,\"is_transient\":true}}",
                               NULL, err, sizeof err),
                     CONNECTOR_RETRY);
    assert_int_equal(interpret("meta", "send_message", 429, "", NULL, err, sizeof err),
                     CONNECTOR_RETRY);
    assert_int_equal(interpret("meta", "send_message", 500,
                               "{\"error\":{\"message\":\"An unknown error occurred\",\"code\":1}}",
                               NULL, err, sizeof err),
                     CONNECTOR_RETRY);
}

/* ---- params and connection ---- */

static void test_missing_and_wrong_params(void **state)
{
    (void)state;
    build_fails("xero", "create_invoice", "{\"line_items\":[]}", "\"contact_id\"");
    build_fails("xero", "create_invoice", "{\"contact_id\":\"c\"}", "\"line_items\"");
    build_fails("xero", "create_invoice", "{\"contact_id\":\"c\",\"line_items\":[]}",
                "\"line_items\"");
    build_fails("xero", "create_invoice", "{\"contact_id\":\"c\",\"line_items\":{}}",
                "\"line_items\"");
    build_fails("xero", "create_invoice",
                "{\"contact_id\":\"c\",\"line_items\":[{\"description\":\"d\",\"quantity\":1,"
                "\"unit_amount\":1,\"account_code\":\"200\"},{\"description\":\"d\",\"quantity\":"
                "\"two\",\"unit_amount\":1,\"account_code\":\"200\"}]}",
                "\"line_items[1].quantity\"");
    build_fails("xero", "create_invoice",
                "{\"contact_id\":\"c\",\"line_items\":[{\"quantity\":1,\"unit_amount\":1,"
                "\"account_code\":\"200\"}]}",
                "\"line_items[0].description\"");
    build_fails("xero", "create_invoice", "{\"contact_id\":\"c\",\"line_items\":[\"x\"]}",
                "\"line_items[0]\"");
    build_fails("xero", "create_invoice",
                "{\"contact_id\":\"c\",\"line_items\":[{\"description\":\"d\",\"quantity\":1,"
                "\"unit_amount\":1,\"account_code\":\"200\"}],\"type\":\"BILL\"}",
                "\"type\"");
    build_fails("xero", "create_invoice", "{\"contact_id\":[1],\"line_items\":[]}",
                "\"contact_id\"");
    build_fails("xero", "create_contact", "{\"email\":\"a@b.co\"}", "\"name\"");
    build_fails("xero", "create_contact", "{\"name\":\"\"}", "\"name\"");
    build_fails("xero", "create_payment", "{\"invoice_id\":\"i\",\"account_code\":\"090\"}",
                "\"amount\"");
    build_fails("xero", "create_payment",
                "{\"invoice_id\":\"i\",\"account_code\":\"090\",\"amount\":true}", "\"amount\"");
    build_fails("quickbooks", "create_invoice", "{\"lines\":[{\"amount\":1,\"item_id\":\"1\"}]}",
                "\"customer_id\"");
    build_fails("quickbooks", "create_sales_receipt", "{\"customer_id\":\"1\"}", "\"lines\"");
    build_fails("quickbooks", "create_sales_receipt", "{\"lines\":[{\"amount\":1}]}",
                "\"lines[0].item_id\"");
    build_fails("quickbooks", "create_sales_receipt",
                "{\"lines\":[{\"amount\":\"1,5\",\"item_id\":\"1\"}]}", "\"lines[0].amount\"");
    build_fails("hubspot", "create_contact", "{\"firstname\":\"A\"}", "\"email\"");
    build_fails("hubspot", "upsert_contact", "{}", "\"email\"");
    build_fails("hubspot", "create_contact", "{\"email\":\"a@b.co\",\"lifecyclestage\":\"vip\"}",
                "\"lifecyclestage\"");
    build_fails("hubspot", "create_contact",
                "{\"email\":\"a@b.co\",\"properties\":{\"nested\":{\"x\":1}}}",
                "\"properties.nested\"");
    build_fails("hubspot", "create_contact", "{\"email\":\"a@b.co\",\"properties\":[1]}",
                "\"properties\"");
    build_fails("klaviyo", "create_event", "{\"email\":\"a@b.co\"}", "\"metric_name\"");
    build_fails("klaviyo", "create_event", "{\"metric_name\":\"M\"}", "\"email\"");
    build_fails("klaviyo", "create_event",
                "{\"metric_name\":\"M\",\"email\":\"a@b.co\",\"value\":\"lots\"}", "\"value\"");
    build_fails("klaviyo", "upsert_profile", "{\"first_name\":\"A\"}", "\"phone_number\"");
    build_fails("twilio", "send_message", "{\"from\":\"+1415\",\"body\":\"x\"}", "\"to\"");
    build_fails("twilio", "send_message", "{\"to\":\"+1415\",\"body\":\"x\"}", "\"from\"");
    build_fails("twilio", "send_message", "{\"to\":\"+1415\",\"from\":\"+1416\"}", "\"body\"");
    build_fails("meta", "send_message", "{\"text\":\"x\"}", "\"recipient_id\"");
    build_fails("meta", "send_message", "{\"recipient_id\":\"1\"}", "\"text\"");
    /* Unknown action, params not an object. */
    build_fails("xero", "delete_invoice", "{}", "delete_invoice");
    build_fails("twilio", "send_message", "[1,2]", "object");
}

static void test_connection_checks(void **state)
{
    (void)state;
    const engine_connector *c = engine_connector_find("quickbooks");
    hf_json p = parse("{\"customer_id\":\"1\",\"lines\":[{\"amount\":1,\"item_id\":\"1\"}]}");
    connector_request req;
    char err[256];
    connector_conn no_account = {.account = NULL, .access_token = TOKEN};
    assert_int_equal(c->build("create_invoice", p, &no_account, NULL, NULL, &req, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "realmId"));
    assert_no_secret(err);
    connector_conn no_token = {.account = "1", .access_token = ""};
    assert_int_equal(c->build("create_invoice", p, &no_token, NULL, NULL, &req, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "access token"));
    connector_conn evil = {.account = "1", .access_token = TOKEN "\r\nX-Injected: 1"};
    assert_int_equal(c->build("create_invoice", p, &evil, NULL, NULL, &req, err, sizeof err), -1);
    assert_no_secret(err);
    assert_int_equal(c->build("create_invoice", p, NULL, NULL, NULL, &req, err, sizeof err), -1);
    /* An account that is not URL-safe is escaped in the path. */
    connector_conn odd = {.account = "12/../34?x", .access_token = TOKEN};
    assert_int_equal(c->build("create_invoice", p, &odd, "https://q", NULL, &req, err, sizeof err),
                     0);
    assert_string_equal(req.url, "https://q/v3/company/12%2F..%2F34%3Fx/invoice?minorversion=75");
    connector_request_free(&req);
    hf_json_free(p);
    /* NULL params: every required one is missing. */
    c = engine_connector_find("twilio");
    connector_conn conn = {.account = "AC1", .access_token = TOKEN};
    assert_int_equal(c->build("send_message", NULL, &conn, NULL, NULL, &req, err, sizeof err), -1);
    assert_non_null(strstr(err, "\"to\""));
}

/* Error texts from interpret never carry an answer's token-like content beyond one line, and
 * strange answers (not JSON, huge, empty) are handled. */
static void test_interpret_odd_answers(void **state)
{
    (void)state;
    char err[512];
    char *out = NULL;
    /* A 2xx without JSON: done, the fields are null. */
    assert_int_equal(interpret("twilio", "send_message", 201, "not json", &out, err, sizeof err),
                     CONNECTOR_OK);
    hf_json v = parse(out);
    assert_true(YAJL_IS_NULL(hf_json_get(v, "sid")));
    assert_null(hf_json_get(v, "raw"));
    hf_json_free(v);
    free(out);
    /* A big answer: no raw. */
    hf_buf big = {0};
    hf_buf_puts(&big, "{\"recipient_id\":\"1\",\"message_id\":\"m\",\"pad\":\"");
    for (int i = 0; i < CONNECTOR_RAW_MAX; i++)
        hf_buf_putc(&big, 'x');
    hf_buf_puts(&big, "\"}");
    assert_int_equal(interpret("meta", "send_message", 200, big.data, &out, err, sizeof err),
                     CONNECTOR_OK);
    v = parse(out);
    assert_jstr(hf_json_get(v, "message_id"), "m");
    assert_null(hf_json_get(v, "raw"));
    hf_json_free(v);
    free(out);
    hf_buf_free(&big);
    /* Multi-line, long error messages become one bounded line. */
    hf_buf msg = {0};
    hf_buf_puts(&msg, "{\"message\":\"line one\\nline two ");
    for (int i = 0; i < 2000; i++)
        hf_buf_putc(&msg, 'y');
    hf_buf_puts(&msg, "\"}");
    assert_int_equal(interpret("hubspot", "create_contact", 400, msg.data, NULL, err, sizeof err),
                     CONNECTOR_FAIL);
    assert_non_null(strstr(err, "line one line two"));
    assert_true(strlen(err) < 500);
    hf_buf_free(&msg);
    /* No body at all. */
    assert_int_equal(interpret("xero", "create_invoice", 400, NULL, NULL, err, sizeof err),
                     CONNECTOR_FAIL);
    assert_non_null(strstr(err, "400"));
    assert_int_equal(interpret("xero", "create_invoice", 401, "", NULL, err, sizeof err),
                     CONNECTOR_AUTH);
    assert_int_equal(interpret("quickbooks", "create_invoice", 408, "", NULL, err, sizeof err),
                     CONNECTOR_RETRY);
    assert_int_equal(interpret("meta", "send_message", 404, "<html>", NULL, err, sizeof err),
                     CONNECTOR_FAIL);
    assert_int_equal(interpret("xero", "delete_everything", 200, "{}", NULL, err, sizeof err),
                     CONNECTOR_FAIL);
}

/* ---- OAuth ---- */

static void test_oauth_refresh_requests(void **state)
{
    (void)state;
    static const char *const basic_ids[] = {"xero", "quickbooks", "klaviyo"};
    const char *rt = "rt-SECRET/+&= x";
    for (size_t i = 0; i < HF_ARRAY_LEN(basic_ids); i++) {
        connector_request r;
        char err[256];
        assert_int_equal(engine_oauth_refresh_request(basic_ids[i], "client-1", "cs-SECRET:x", rt,
                                                      &r, err, sizeof err),
                         0);
        assert_string_equal(r.method, "POST");
        assert_string_equal(r.url, engine_connector_token_url(basic_ids[i]));
        assert_string_equal(r.basic_user, "client-1");
        assert_string_equal(r.basic_password, "cs-SECRET:x");
        assert_header(&r, "Content-Type", "application/x-www-form-urlencoded");
        assert_header(&r, "Accept", "application/json");
        assert_form(r.body, "grant_type", "refresh_token");
        assert_form(r.body, "refresh_token", rt);
        assert_form(r.body, "client_secret", NULL);
        assert_form(r.body, "client_id", NULL);
        assert_non_null(strstr(r.body, "refresh_token=rt-SECRET%2F%2B%26%3D+x"));
        connector_request_free(&r);
    }
    connector_request r;
    char err[256];
    setenv("HOOKFLOW_CONNECTOR_HUBSPOT_TOKEN_URL", "http://127.0.0.1:9/hubspot/token", 1);
    assert_int_equal(
        engine_oauth_refresh_request("hubspot", "client-1", "cs-SECRET", rt, &r, err, sizeof err),
        0);
    unsetenv("HOOKFLOW_CONNECTOR_HUBSPOT_TOKEN_URL");
    assert_string_equal(r.url, "http://127.0.0.1:9/hubspot/token");
    assert_null(r.basic_user);
    assert_null(header(&r, "Authorization"));
    assert_form(r.body, "grant_type", "refresh_token");
    assert_form(r.body, "refresh_token", rt);
    assert_form(r.body, "client_id", "client-1");
    assert_form(r.body, "client_secret", "cs-SECRET");
    connector_request_free(&r);

    assert_int_equal(
        engine_oauth_refresh_request("meta", "app", "cs-SECRET", "rt-SECRET", &r, err, sizeof err),
        -1);
    assert_non_null(strstr(err, "not refreshable"));
    assert_no_secret(err);
    assert_null(r.url);
    assert_int_equal(engine_oauth_refresh_request("twilio", "app", "cs-SECRET", "rt-SECRET", &r,
                                                  err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "not refreshable"));
    assert_int_equal(engine_oauth_refresh_request("shopify", "a", "b", "c", &r, err, sizeof err),
                     -1);
    assert_int_equal(
        engine_oauth_refresh_request("xero", "app", "cs-SECRET", "", &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "refresh_token"));
    assert_int_equal(
        engine_oauth_refresh_request("xero", NULL, "cs-SECRET", "rt-SECRET", &r, err, sizeof err),
        -1);
    assert_non_null(strstr(err, "client_id"));
    assert_no_secret(err);
}

static void test_oauth_code_requests(void **state)
{
    (void)state;
    const char *redirect = "https://app.example/api/integrations/oauth/callback?x=1&y=2";
    const char *verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    static const char *const basic_ids[] = {"xero", "quickbooks", "klaviyo"};
    for (size_t i = 0; i < HF_ARRAY_LEN(basic_ids); i++) {
        connector_request r;
        char err[256];
        assert_int_equal(engine_oauth_code_request(basic_ids[i], "client-1", "cs-SECRET",
                                                   "code-SECRET/=", redirect, verifier, &r, err,
                                                   sizeof err),
                         0);
        assert_string_equal(r.method, "POST");
        assert_string_equal(r.url, engine_connector_token_url(basic_ids[i]));
        assert_string_equal(r.basic_user, "client-1");
        assert_string_equal(r.basic_password, "cs-SECRET");
        assert_header(&r, "Content-Type", "application/x-www-form-urlencoded");
        assert_form(r.body, "grant_type", "authorization_code");
        assert_form(r.body, "code", "code-SECRET/=");
        assert_form(r.body, "redirect_uri", redirect);
        assert_form(r.body, "code_verifier", verifier);
        assert_form(r.body, "client_secret", NULL);
        assert_non_null(strstr(r.body, "redirect_uri=https%3A%2F%2Fapp.example%2Fapi%2F"));
        connector_request_free(&r);
    }
    connector_request r;
    char err[256];
    /* Without PKCE where it is optional; Klaviyo requires it. */
    assert_int_equal(engine_oauth_code_request("xero", "client-1", "cs-SECRET", "c", redirect, NULL,
                                               &r, err, sizeof err),
                     0);
    assert_form(r.body, "code_verifier", NULL);
    connector_request_free(&r);
    assert_int_equal(engine_oauth_code_request("klaviyo", "client-1", "cs-SECRET", "c", redirect,
                                               NULL, &r, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "code_verifier"));

    assert_int_equal(engine_oauth_code_request("hubspot", "client-1", "cs-SECRET", "c&d", redirect,
                                               NULL, &r, err, sizeof err),
                     0);
    assert_string_equal(r.url, "https://api.hubapi.com/oauth/2026-03/token");
    assert_null(r.basic_user);
    assert_form(r.body, "grant_type", "authorization_code");
    assert_form(r.body, "code", "c&d");
    assert_form(r.body, "redirect_uri", redirect);
    assert_form(r.body, "client_id", "client-1");
    assert_form(r.body, "client_secret", "cs-SECRET");
    connector_request_free(&r);

    /* Meta: a GET with everything in the query, as Meta documents it. */
    assert_int_equal(engine_oauth_code_request("meta", "1234567890", "cs-SECRET", "AQ#code",
                                               redirect, NULL, &r, err, sizeof err),
                     0);
    assert_string_equal(r.method, "GET");
    const char *base = "https://graph.facebook.com/v25.0/oauth/access_token?";
    assert_memory_equal(r.url, base, strlen(base));
    const char *query = r.url + strlen(base);
    assert_form(query, "client_id", "1234567890");
    assert_form(query, "client_secret", "cs-SECRET");
    assert_form(query, "code", "AQ#code");
    assert_form(query, "redirect_uri", redirect);
    assert_int_equal(r.body_len, 0);
    assert_null(r.basic_user);
    connector_request_free(&r);

    assert_int_equal(
        engine_oauth_code_request("twilio", "a", "b", "c", redirect, NULL, &r, err, sizeof err),
        -1);
    assert_int_equal(
        engine_oauth_code_request("xero", "a", "cs-SECRET", "c", NULL, NULL, &r, err, sizeof err),
        -1);
    assert_non_null(strstr(err, "redirect_uri"));
    assert_no_secret(err);
}

static void test_oauth_parse_token(void **state)
{
    (void)state;
    char *at, *rt, *scope, err[256];
    int64_t exp;
    /* Xero: rotation, a new refresh token each time. */
    const char *xero = "{\"id_token\":\"x\",\"access_token\":\"at-2\",\"expires_in\":1800,"
                       "\"token_type\":\"Bearer\",\"refresh_token\":\"rt-3\",\"scope\":"
                       "\"offline_access accounting.invoices\"}";
    assert_int_equal(
        engine_oauth_parse_token(xero, strlen(xero), &at, &rt, &exp, &scope, err, sizeof err), 0);
    assert_string_equal(at, "at-2");
    assert_string_equal(rt, "rt-3");
    assert_int_equal(exp, 1800);
    assert_string_equal(scope, "offline_access accounting.invoices");
    free(at), free(rt), free(scope);

    /* HubSpot-like: no scope; refresh token kept (absent here). */
    const char *hs =
        "{\"token_type\":\"bearer\",\"access_token\":\"at-9\",\"expires_in\":\"1799\"}";
    assert_int_equal(
        engine_oauth_parse_token(hs, strlen(hs), &at, &rt, &exp, &scope, err, sizeof err), 0);
    assert_string_equal(at, "at-9");
    assert_null(rt);
    assert_null(scope);
    assert_int_equal(exp, 1799);
    free(at);

    /* HubSpot's answer since August 2025: hub_id and a "scopes" array beside the tokens. */
    const char *hs2 = "{\"token_type\":\"bearer\",\"access_token\":\"at-10\",\"refresh_token\":"
                      "\"rt-10\",\"expires_in\":1800,\"hub_id\":62515,\"scopes\":[\"oauth\","
                      "\"crm.objects.contacts.write\"]}";
    assert_int_equal(
        engine_oauth_parse_token(hs2, strlen(hs2), &at, &rt, &exp, &scope, err, sizeof err), 0);
    assert_string_equal(scope, "oauth crm.objects.contacts.write");
    free(at), free(rt), free(scope);

    /* No expires_in: 3600. Scope as an array. */
    const char *meta = "{\"access_token\":\"EAAB\",\"token_type\":\"bearer\",\"scope\":["
                       "\"pages_messaging\",\"pages_show_list\"]}";
    assert_int_equal(
        engine_oauth_parse_token(meta, strlen(meta), &at, &rt, &exp, &scope, err, sizeof err), 0);
    assert_int_equal(exp, 3600);
    assert_string_equal(scope, "pages_messaging pages_show_list");
    free(at), free(scope);

    /* An absurd lifetime is capped at a year (the database could not store the expiry). */
    const char *forever = "{\"access_token\":\"x\",\"expires_in\":9000000000000}";
    assert_int_equal(
        engine_oauth_parse_token(forever, strlen(forever), &at, &rt, &exp, &scope, err, sizeof err),
        0);
    assert_int_equal(exp, ENGINE_OAUTH_MAX_EXPIRES_S);
    free(at);

    struct {
        const char *body;
        const char *want;
    } bad[] = {
        {"{\"error\":\"invalid_grant\",\"error_description\":\"refresh token already "
         "used\"}",
         "invalid_grant"},
        {"{\"error\":\"invalid_client\"}", "invalid_client"},
        {"{\"error\":{\"message\":\"Error validating verification code.\",\"type\":"
         "\"OAuthException\",\"code\":100}}",
         "Error validating verification code."},
        {"{\"status\":\"BAD_REFRESH_TOKEN\",\"message\":\"missing or invalid refresh token\"}",
         "missing or invalid refresh token"},
        {"{\"token_type\":\"bearer\"}", "access_token"},
        {"{\"access_token\":\"\"}", "access_token"},
        {"{\"access_token\":\"tok-SECRET-4711\"", "JSON"},
        {"[\"tok-SECRET-4711\"]", "JSON"},
        {"", "JSON"},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(bad); i++) {
        at = rt = scope = (char *)"sentinel";
        int rc = engine_oauth_parse_token(bad[i].body, strlen(bad[i].body), &at, &rt, &exp, &scope,
                                          err, sizeof err);
        assert_int_equal(rc, -1);
        assert_null(at);
        assert_null(rt);
        assert_null(scope);
        if (!strstr(err, bad[i].want))
            fail_msg("\"%s\" does not mention %s", err, bad[i].want);
        assert_null(strstr(err, "tok-SECRET"));
        assert_null(strchr(err, '\n'));
    }
}

/* ---- shared helpers ---- */

static void test_helpers(void **state)
{
    (void)state;
    hf_buf b = {0};
    connector_url_escape(&b, "a b/c?d=e&f~_.-\xc3\xa9");
    assert_string_equal(b.data, "a%20b%2Fc%3Fd%3De%26f~_.-%C3%A9");
    hf_buf_free(&b);
    connector_form_add(&b, "To", "+1 415");
    connector_form_add(&b, "Body", "a&b=c%");
    assert_string_equal(b.data, "To=%2B1+415&Body=a%26b%3Dc%25");
    hf_buf_free(&b);

    char *u = connector_url("https://x.test///", "/p/%d", 7);
    assert_string_equal(u, "https://x.test/p/7");
    free(u);

    assert_null(connector_idempotency_key(NULL, 50));
    assert_null(connector_idempotency_key("", 50));
    char *k = connector_idempotency_key("run-1:node_2.a", 50);
    assert_string_equal(k, "run-1:node_2.a");
    free(k);
    k = connector_idempotency_key("has space", 50);
    assert_int_equal(strlen(k), 50);
    free(k);

    static const char *const good[] = {"0", "-0", "1.5", "1e10", "-2.5E-3", "10"};
    static const char *const bad[] = {"", "-", "01", "1.", ".5", "1e", "+1", "1,5", "NaN", "0x1"};
    for (size_t i = 0; i < HF_ARRAY_LEN(good); i++)
        assert_true(connector_is_json_number(good[i]));
    for (size_t i = 0; i < HF_ARRAY_LEN(bad); i++)
        if (connector_is_json_number(bad[i]))
            fail_msg("accepted %s", bad[i]);

    assert_int_equal(connector_classify(200), CONNECTOR_OK);
    assert_int_equal(connector_classify(204), CONNECTOR_OK);
    assert_int_equal(connector_classify(401), CONNECTOR_AUTH);
    assert_int_equal(connector_classify(403), CONNECTOR_FAIL);
    assert_int_equal(connector_classify(408), CONNECTOR_RETRY);
    assert_int_equal(connector_classify(429), CONNECTOR_RETRY);
    assert_int_equal(connector_classify(503), CONNECTOR_RETRY);
    assert_int_equal(connector_classify(422), CONNECTOR_FAIL);
}

/* ---- what payloads can reach: the request built for each connector ---- */

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
        cmocka_unit_test(test_lookup_and_endpoints),
        cmocka_unit_test(test_repeat_safe),
        cmocka_unit_test(test_catalog_actions_and_output_fields),
        cmocka_unit_test(test_xero_create_invoice),
        cmocka_unit_test(test_xero_create_contact_and_payment),
        cmocka_unit_test(test_xero_idempotency_key_is_bounded),
        cmocka_unit_test(test_xero_interpret),
        cmocka_unit_test(test_quickbooks_requests),
        cmocka_unit_test(test_quickbooks_interpret),
        cmocka_unit_test(test_hubspot_requests),
        cmocka_unit_test(test_hubspot_interpret),
        cmocka_unit_test(test_klaviyo_requests),
        cmocka_unit_test(test_klaviyo_interpret),
        cmocka_unit_test(test_twilio_requests),
        cmocka_unit_test(test_twilio_interpret),
        cmocka_unit_test(test_meta_requests),
        cmocka_unit_test(test_meta_interpret),
        cmocka_unit_test(test_missing_and_wrong_params),
        cmocka_unit_test(test_connection_checks),
        cmocka_unit_test(test_interpret_odd_answers),
        cmocka_unit_test(test_oauth_refresh_requests),
        cmocka_unit_test(test_oauth_code_requests),
        cmocka_unit_test(test_oauth_parse_token),
        cmocka_unit_test(test_helpers),
        cmocka_unit_test(test_payload_values_reach_only_the_body),
        cmocka_unit_test(test_json_body_round_trips_odd_text),
        cmocka_unit_test(test_amounts_and_big_integers_keep_their_text),
        cmocka_unit_test(test_twilio_form_cannot_gain_parameters),
        cmocka_unit_test(test_account_dot_segments_stay_one_segment),
        cmocka_unit_test(test_perform_refuses_other_protocols),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
