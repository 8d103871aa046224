/* test_catalog: the real connector catalog loads with the expected connectors, events and
 * actions, and broken connector files fail with a message naming the file and the field. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "json.h"
#include "util.h"

static char *real_catalog_dir(void)
{
    const char *src = getenv("HOOKFLOW_SOURCE_DIR");
    return xasprintf("%s/schemas/catalog", src ? src : HOOKFLOW_SOURCE_DIR);
}

static hf_catalog *load_real(void)
{
    char *dir = real_catalog_dir();
    char err[512] = "";
    hf_catalog *c = hf_catalog_load(dir, err, sizeof err);
    if (!c)
        fail_msg("loading %s: %s", dir, err);
    free(dir);
    return c;
}

/* ---- a scratch catalog directory -------------------------------------------------------- */

static char *scratch_new(void)
{
    char tmpl[] = "/tmp/hf_catalog_XXXXXX";
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    return xstrdup(dir);
}

static void write_text(const char *dir, const char *file, const char *text)
{
    char *path = xasprintf("%s/%s", dir, file);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
    free(path);
}

static void copy_real_catalog(const char *to)
{
    char *from = real_catalog_dir();
    DIR *d = opendir(from);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char *path = xasprintf("%s/%s", from, e->d_name);
        char err[256];
        char *text = hf_read_file(path, NULL, err, sizeof err);
        assert_non_null(text);
        write_text(to, e->d_name, text);
        free(text);
        free(path);
    }
    closedir(d);
    free(from);
}

static void scratch_free(char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *path = xasprintf("%s/%s", dir, e->d_name);
        assert_int_equal(unlink(path), 0);
        free(path);
    }
    closedir(d);
    assert_int_equal(rmdir(dir), 0);
    free(dir);
}

/* A small valid connector; the tests break one thing in it at a time. */
static const char acme_json[] =
    "{\"id\": \"acme\", \"name\": \"Acme Ledger\", \"category\": \"accounting\",\n"
    " \"summary\": \"Test connector\", \"features\": [\"Invoices\"],\n"
    " \"oauth\": {\"auth\": \"oauth2\", \"scopes\": [\"ledger.write\", \"ledger.read\"],\n"
    "   \"authorize_url\": \"https://acme.example/authorize\",\n"
    "   \"token_url\": \"https://acme.example/token\", \"pkce\": false},\n"
    " \"webhook_events\": [\n"
    "   {\"name\": \"invoice.created\", \"summary\": \"An invoice\", \"native_types\": "
    "[\"inv.new\"],\n"
    "    \"sample_payload\": {\"id\": \"I1\"}},\n"
    "   {\"name\": \"invoice.paid\", \"summary\": \"A payment\", \"native_types\": "
    "[\"inv.paid\"],\n"
    "    \"sample_payload\": {\"id\": \"I1\", \"paid\": true}}],\n"
    " \"availability\": \"GA\", \"pricing\": \"Included\", \"setup_time\": \"About 1 minute\",\n"
    " \"actions\": [{\"id\": \"post_invoice\", \"name\": \"Post invoice\", \"summary\": "
    "\"Posts\",\n"
    "   \"simulatable\": true, \"scopes\": [\"ledger.write\"], \"idempotency\": \"none\",\n"
    "   \"inputs\": [{\"name\": \"customer\", \"type\": \"string\", \"required\": true,\n"
    "                \"description\": \"Customer\"},\n"
    "              {\"name\": \"amount\", \"type\": \"number\", \"required\": true,\n"
    "                \"description\": \"Amount\"},\n"
    "              {\"name\": \"status\", \"type\": \"string\", \"required\": false,\n"
    "                \"description\": \"Status\", \"enum\": [\"DRAFT\", \"SENT\"],\n"
    "                \"default\": \"DRAFT\"}],\n"
    "   \"output\": {\"fields\": {\"id\": \"string\", \"total\": \"number\"}},\n"
    "   \"sample_output\": {\"id\": \"I1\", \"total\": 12.50}}]}\n";

/* text with the first occurrence of from (which must exist) replaced by to. Caller frees. */
static char *replace_once(const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    if (!at)
        fail_msg("'%s' is not in the text", from);
    return xasprintf("%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
}

static char *acme_with(const char *from, const char *to)
{
    return replace_once(acme_json, from, to);
}

/* Loads a scratch dir holding only file with text; asserts failure with exactly want. */
static void expect_load_error(const char *file, const char *text, const char *want)
{
    char *dir = scratch_new();
    write_text(dir, file, text);
    char err[512] = "";
    hf_catalog *c = hf_catalog_load(dir, err, sizeof err);
    if (c)
        hf_catalog_free(c);
    assert_null(c);
    assert_string_equal(err, want);
    scratch_free(dir);
}

/* ---- the real catalog -------------------------------------------------------------------- */

static void test_real_connectors_in_order(void **state)
{
    (void)state;
    hf_catalog *c = load_real();
    static const char *const ids[] = {"xero", "quickbooks", "hubspot", "klaviyo", "twilio", "meta"};
    static const char *const cats[] = {"accounting",           "accounting", "marketing-automation",
                                       "marketing-automation", "messaging",  "messaging"};
    static const char *const names[] = {"Xero",
                                        "QuickBooks Online",
                                        "HubSpot Journeys",
                                        "Klaviyo Campaigns",
                                        "Twilio Messaging",
                                        "Meta Messenger"};
    static const bool beta[] = {false, false, false, true, false, true};
    assert_int_equal(hf_catalog_count(c), 6);
    for (size_t i = 0; i < 6; i++) {
        const hf_connector *k = hf_catalog_at(c, i);
        assert_non_null(k);
        assert_string_equal(hf_connector_id(k), ids[i]);
        assert_string_equal(hf_connector_name(k), names[i]);
        assert_string_equal(hf_connector_category(k), cats[i]);
        assert_int_equal(hf_connector_is_beta(k), beta[i]);
        assert_ptr_equal(hf_catalog_find(c, ids[i]), k);
        assert_string_equal(hf_json_str(hf_json_get(hf_connector_json(k), "id")), ids[i]);
    }
    assert_null(hf_catalog_at(c, 6));
    assert_null(hf_catalog_find(c, "stripe"));
    assert_null(hf_catalog_find(c, ""));
    hf_catalog_free(c);
}

static void test_real_native_mapping(void **state)
{
    (void)state;
    static const struct {
        const char *connector, *native, *event;
    } cases[] = {
        {"xero", "INVOICE.CREATE", "invoices.created"},
        {"xero", "PAYMENT.CREATE", "payments.applied"},
        {"xero", "PAYMENT.UPDATE", "payments.applied"},
        {"quickbooks", "SalesReceipt.Create", "salesreceipt.create"},
        {"quickbooks", "qbo.salesreceipt.created.v1", "salesreceipt.create"},
        {"quickbooks", "Payment.Create", "payment.create"},
        {"quickbooks", "qbo.payment.created.v1", "payment.create"},
        {"hubspot", "contact.creation", "contact.created"},
        {"hubspot", "workflow.webhook", "workflow.completed"},
        {"klaviyo", "event:klaviyo.email_delivered", "message.delivered"},
        {"klaviyo", "event:klaviyo.sms_delivered", "message.delivered"},
        {"klaviyo", "event:klaviyo.profile_updated", "profile.updated"},
        {"klaviyo", "flow.profile_updated", "profile.updated"},
        {"twilio", "inbound", "message.received"},
        {"twilio", "status.failed", "message.failed"},
        {"twilio", "status.undelivered", "message.failed"},
        {"meta", "message", "message"},
        {"meta", "postback", "messaging_postbacks"},
    };
    hf_catalog *c = load_real();
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        const hf_connector *k = hf_catalog_find(c, cases[i].connector);
        assert_non_null(k);
        const char *event = hf_connector_event_for_native(k, cases[i].native);
        if (!event || strcmp(event, cases[i].event) != 0)
            fail_msg("%s: %s maps to %s, want %s", cases[i].connector, cases[i].native,
                     event ? event : "(none)", cases[i].event);
        assert_true(hf_connector_has_event(k, cases[i].event));
        assert_true(hf_json_is_object(hf_connector_sample_payload(k, cases[i].event)));
    }
    const hf_connector *xero = hf_catalog_find(c, "xero");
    /* Unmapped and differently cased native types have no event. */
    assert_null(hf_connector_event_for_native(xero, "CONTACT.CREATE"));
    assert_null(hf_connector_event_for_native(xero, "invoice.create"));
    assert_null(hf_connector_event_for_native(hf_catalog_find(c, "twilio"), "status.delivered"));
    assert_false(hf_connector_has_event(xero, "message"));
    assert_null(hf_connector_sample_payload(xero, "message"));
    hf_json sample = hf_connector_sample_payload(xero, "invoices.created");
    assert_string_equal(hf_json_str(hf_json_get(sample, "eventCategory")), "INVOICE");
    assert_string_equal(hf_json_str(hf_json_get(sample, "eventType")), "CREATE");
    sample = hf_connector_sample_payload(hf_catalog_find(c, "meta"), "messaging_postbacks");
    assert_string_equal(hf_json_str(hf_json_path(sample, "postback", "payload", NULL)),
                        "CONFIRM_PICKUP_10045");
    hf_catalog_free(c);
}

static void test_real_actions(void **state)
{
    (void)state;
    static const struct {
        const char *connector, *action, *idempotency;
        bool simulatable;
    } cases[] = {
        {"xero", "create_invoice", "header:Idempotency-Key", true},
        {"xero", "create_contact", "header:Idempotency-Key", true},
        {"quickbooks", "create_sales_receipt", "query:requestid", true},
        {"quickbooks", "create_invoice", "query:requestid", false},
        {"hubspot", "create_contact", "none", true},
        {"hubspot", "upsert_contact", "none", true},
        {"klaviyo", "create_event", "none", true},
        {"twilio", "send_message", "none", true},
        {"meta", "send_message", "none", true},
    };
    hf_catalog *c = load_real();
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        const hf_action *a =
            hf_connector_action(hf_catalog_find(c, cases[i].connector), cases[i].action);
        if (!a)
            fail_msg("%s has no action %s", cases[i].connector, cases[i].action);
        assert_string_equal(hf_action_id(a), cases[i].action);
        assert_int_equal(hf_action_simulatable(a), cases[i].simulatable);
        hf_json j = hf_action_json(a);
        assert_string_equal(hf_json_str(hf_json_get(j, "id")), cases[i].action);
        assert_string_equal(hf_json_str(hf_json_get(j, "idempotency")), cases[i].idempotency);
        assert_true(hf_json_is_object(hf_json_get(j, "sample_output")));
    }
    const hf_connector *twilio = hf_catalog_find(c, "twilio");
    assert_null(hf_connector_action(twilio, "create_invoice"));
    /* Twilio's inputs: to, from, body required; media_url optional. */
    hf_json inputs =
        hf_json_get(hf_action_json(hf_connector_action(twilio, "send_message")), "inputs");
    static const char *const names[] = {"to", "from", "body", "media_url"};
    static const bool required[] = {true, true, true, false};
    assert_int_equal(hf_json_len(inputs), 4);
    for (size_t i = 0; i < 4; i++) {
        hf_json in = hf_json_at(inputs, i);
        assert_string_equal(hf_json_str(hf_json_get(in, "name")), names[i]);
        assert_int_equal(YAJL_IS_TRUE(hf_json_get(in, "required")), required[i]);
    }
    /* Twilio has no OAuth; Klaviyo requires PKCE. */
    hf_json oauth = hf_json_get(hf_connector_json(twilio), "oauth");
    assert_string_equal(hf_json_str(hf_json_get(oauth, "auth")), "basic");
    assert_int_equal(hf_json_len(hf_json_get(oauth, "scopes")), 0);
    assert_true(YAJL_IS_TRUE(
        hf_json_path(hf_connector_json(hf_catalog_find(c, "klaviyo")), "oauth", "pkce", NULL)));
    hf_catalog_free(c);
}

static void test_real_json(void **state)
{
    (void)state;
    hf_catalog *c = load_real();
    size_t len = 0;
    const char *json = hf_catalog_json(c, &len);
    assert_int_equal(strlen(json), len);
    static const char head[] = "{\"connectors\":[{\"id\":\"xero\",\"name\":\"Xero\",";
    assert_true(strncmp(json, head, strlen(head)) == 0);
    assert_true(len > 2 && strcmp(json + len - 2, "]}") == 0);
    assert_ptr_equal(hf_catalog_json(c, NULL), json); /* cached, not rebuilt */
    char err[256];
    hf_json doc = hf_json_parse(json, len, err, sizeof err);
    assert_non_null(doc);
    hf_json list = hf_json_get(doc, "connectors");
    assert_int_equal(hf_json_len(list), 6);
    assert_string_equal(hf_json_str(hf_json_get(hf_json_at(list, 5), "id")), "meta");
    assert_string_equal(hf_json_str(hf_json_get(hf_json_at(list, 3), "availability")), "Beta");
    hf_json_free(doc);
    hf_catalog_free(c);
}

static void test_default_dir(void **state)
{
    (void)state;
    assert_int_equal(setenv("HOOKFLOW_CATALOG_DIR", "/srv/catalog", 1), 0);
    assert_string_equal(hf_catalog_default_dir(), "/srv/catalog");
    assert_int_equal(unsetenv("HOOKFLOW_CATALOG_DIR"), 0);
    assert_string_equal(hf_catalog_default_dir(), HOOKFLOW_SOURCE_DIR "/schemas/catalog");
}

/* ---- scratch catalogs -------------------------------------------------------------------- */

static void test_acme_valid_and_ordered_after_fixed(void **state)
{
    (void)state;
    char *dir = scratch_new();
    copy_real_catalog(dir);
    write_text(dir, "acme.json", acme_json);
    char *aaa = acme_with("\"id\": \"acme\"", "\"id\": \"aaa\"");
    write_text(dir, "aaa.json", aaa);
    free(aaa);
    write_text(dir, "README.md", "not a connector");
    char err[512] = "";
    hf_catalog *c = hf_catalog_load(dir, err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    assert_int_equal(hf_catalog_count(c), 8);
    assert_string_equal(hf_connector_id(hf_catalog_at(c, 0)), "xero");
    assert_string_equal(hf_connector_id(hf_catalog_at(c, 5)), "meta");
    assert_string_equal(hf_connector_id(hf_catalog_at(c, 6)), "aaa");
    assert_string_equal(hf_connector_id(hf_catalog_at(c, 7)), "acme");
    const hf_connector *acme = hf_catalog_find(c, "acme");
    assert_string_equal(hf_connector_event_for_native(acme, "inv.paid"), "invoice.paid");
    assert_true(hf_action_simulatable(hf_connector_action(acme, "post_invoice")));
    const char *json = hf_catalog_json(c, NULL);
    assert_non_null(strstr(json, "]},{\"id\":\"aaa\","));
    assert_non_null(strstr(json, "\"sample_output\":{\"id\":\"I1\",\"total\":12.50}}]}]}"));
    hf_catalog_free(c);
    scratch_free(dir);
}

static void test_bad_input_type(void **state)
{
    (void)state;
    char *text = acme_with("\"type\": \"number\"", "\"type\": \"strng\"");
    expect_load_error("acme.json", text,
                      "acme.json: actions[0].inputs[1].type: \"strng\" is not one of "
                      "string|number|integer|boolean|object|array");
    free(text);
}

static void test_missing_availability(void **state)
{
    (void)state;
    char *text = acme_with("\"availability\": \"GA\", ", "");
    expect_load_error("acme.json", text, "acme.json: availability: missing");
    free(text);
}

static void test_bad_enums(void **state)
{
    (void)state;
    char *text = acme_with("\"GA\"", "\"Alpha\"");
    expect_load_error("acme.json", text,
                      "acme.json: availability: \"Alpha\" is not one of GA|Beta");
    free(text);
    text = acme_with("\"accounting\"", "\"crm\"");
    expect_load_error("acme.json", text,
                      "acme.json: category: \"crm\" is not one of "
                      "accounting|marketing-automation|messaging");
    free(text);
    text = acme_with("\"Included\"", "\"Free\"");
    expect_load_error("acme.json", text,
                      "acme.json: pricing: \"Free\" is not one of "
                      "Included|Growth plan|Add-on|Usage based");
    free(text);
}

static void test_id_must_match_file(void **state)
{
    (void)state;
    expect_load_error("other.json", acme_json,
                      "other.json: id: \"acme\" does not match the file name (want \"other\")");
}

static void test_malformed_json(void **state)
{
    (void)state;
    char *text = acme_with("\"name\": \"Acme Ledger\",", "\"name\": \"Acme Ledger\"");
    char *dir = scratch_new();
    write_text(dir, "acme.json", text);
    char err[512] = "";
    hf_catalog *c = hf_catalog_load(dir, err, sizeof err);
    assert_null(c);
    assert_true(strncmp(err, "acme.json: malformed JSON: ", 27) == 0);
    assert_null(strchr(err, '\n'));
    scratch_free(dir);
    free(text);
    expect_load_error("acme.json", "[1, 2]",
                      "acme.json: expected an object at the top level, got array");
}

static void test_type_errors(void **state)
{
    (void)state;
    char *text = acme_with("\"pkce\": false", "\"pkce\": \"no\"");
    expect_load_error("acme.json", text, "acme.json: oauth.pkce: expected a boolean, got string");
    free(text);
    text = acme_with("\"features\": [\"Invoices\"]", "\"features\": [\"Invoices\", 3]");
    expect_load_error("acme.json", text, "acme.json: features[1]: expected a string, got number");
    free(text);
    text = acme_with("\"sample_payload\": {\"id\": \"I1\"}", "\"sample_payload\": [1]");
    expect_load_error("acme.json", text,
                      "acme.json: webhook_events[0].sample_payload: expected an object, got array");
    free(text);
    text = acme_with("\"summary\": \"Test connector\"", "\"summary\": \"\"");
    expect_load_error("acme.json", text, "acme.json: summary: must not be empty");
    free(text);
    text = acme_with("\"description\": \"Amount\"", "\"description\": null");
    expect_load_error("acme.json", text,
                      "acme.json: actions[0].inputs[1].description: expected a string, got null");
    free(text);
}

static void test_unknown_and_duplicate_fields(void **state)
{
    (void)state;
    char *text = acme_with("\"setup_time\"", "\"colour\": \"red\", \"setup_time\"");
    expect_load_error("acme.json", text, "acme.json: colour: unknown field");
    free(text);
    text = acme_with("\"required\": true,\n                \"description\": \"Customer\"",
                     "\"required\": true, \"optional\": false, \"description\": \"Customer\"");
    expect_load_error("acme.json", text, "acme.json: actions[0].inputs[0].optional: unknown field");
    free(text);
    text = acme_with("\"setup_time\"", "\"pricing\": \"Add-on\", \"setup_time\"");
    expect_load_error("acme.json", text, "acme.json: pricing: duplicate field");
    free(text);
}

static void test_cross_field_rules(void **state)
{
    (void)state;
    char *text = acme_with("\"scopes\": [\"ledger.write\"]", "\"scopes\": [\"ledger.admin\"]");
    expect_load_error(
        "acme.json", text,
        "acme.json: actions[0].scopes[0]: \"ledger.admin\" is not one of oauth.scopes");
    free(text);
    text = acme_with("\"native_types\": [\"inv.paid\"]", "\"native_types\": [\"inv.new\"]");
    expect_load_error("acme.json", text,
                      "acme.json: webhook_events[1].native_types[0]: \"inv.new\" is already "
                      "mapped to event \"invoice.created\"");
    free(text);
    text = acme_with("\"name\": \"invoice.paid\"", "\"name\": \"invoice.created\"");
    expect_load_error("acme.json", text,
                      "acme.json: webhook_events[1].name: \"invoice.created\" is listed twice");
    free(text);
    text = acme_with("\"total\": 12.50", "\"total\": \"12.50\"");
    expect_load_error("acme.json", text,
                      "acme.json: actions[0].sample_output.total: expected number (output.fields), "
                      "got string");
    free(text);
    text = acme_with(", \"total\": 12.50", "");
    expect_load_error(
        "acme.json", text,
        "acme.json: actions[0].sample_output.total: missing (listed in output.fields)");
    free(text);
    text = acme_with("\"default\": \"DRAFT\"", "\"default\": \"PAID\"");
    expect_load_error("acme.json", text,
                      "acme.json: actions[0].inputs[2].default: \"PAID\" is not one of "
                      "actions[0].inputs[2].enum");
    free(text);
    text = acme_with("\"idempotency\": \"none\"", "\"idempotency\": \"header\"");
    expect_load_error("acme.json", text,
                      "acme.json: actions[0].idempotency: \"header\" is not none, "
                      "header:<Header-Name> or query:<parameter>");
    free(text);
    text = acme_with("\"auth\": \"oauth2\"", "\"auth\": \"basic\"");
    expect_load_error("acme.json", text,
                      "acme.json: oauth.authorize_url: not allowed with auth \"basic\"");
    free(text);
    text = acme_with("\"token_url\": \"https://acme.example/token\", ", "");
    expect_load_error("acme.json", text, "acme.json: oauth.token_url: missing");
    free(text);
}

static void test_broken_file_among_real_ones(void **state)
{
    (void)state;
    char *dir = scratch_new();
    copy_real_catalog(dir);
    char *renamed = acme_with("\"id\": \"acme\"", "\"id\": \"zeta\"");
    char *text = replace_once(renamed, "\"type\": \"number\"", "\"type\": \"float\"");
    write_text(dir, "zeta.json", text);
    free(text);
    free(renamed);
    char err[512] = "";
    hf_catalog *c = hf_catalog_load(dir, err, sizeof err);
    assert_null(c);
    /* The first file in name order that fails is reported; the real ones all pass. */
    assert_string_equal(err, "zeta.json: actions[0].inputs[1].type: \"float\" is not one of "
                             "string|number|integer|boolean|object|array");
    scratch_free(dir);
}

static void test_directory_errors(void **state)
{
    (void)state;
    char *dir = scratch_new();
    write_text(dir, "notes.txt", "{}");
    write_text(dir, ".hidden.json", "{}");
    char err[512] = "";
    assert_null(hf_catalog_load(dir, err, sizeof err));
    char *want = xasprintf("%s: no connector files (*.json)", dir);
    assert_string_equal(err, want);
    free(want);
    scratch_free(dir);

    assert_null(hf_catalog_load("/nonexistent/hf_catalog", err, sizeof err));
    assert_string_equal(err,
                        "cannot open catalog directory /nonexistent/hf_catalog: No such file or "
                        "directory");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_connectors_in_order),
        cmocka_unit_test(test_real_native_mapping),
        cmocka_unit_test(test_real_actions),
        cmocka_unit_test(test_real_json),
        cmocka_unit_test(test_default_dir),
        cmocka_unit_test(test_acme_valid_and_ordered_after_fixed),
        cmocka_unit_test(test_bad_input_type),
        cmocka_unit_test(test_missing_availability),
        cmocka_unit_test(test_bad_enums),
        cmocka_unit_test(test_id_must_match_file),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_type_errors),
        cmocka_unit_test(test_unknown_and_duplicate_fields),
        cmocka_unit_test(test_cross_field_rules),
        cmocka_unit_test(test_broken_file_among_real_ones),
        cmocka_unit_test(test_directory_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
