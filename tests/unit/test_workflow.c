/* test_workflow: workflow definitions — DESIGN.md's example and the docs' examples parse with
 * their defaults, every structural error names its JSON path, cycles and topological order, and
 * wf_validate finds every problem code in one pass against the real catalog. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "connectors/connector.h"
#include "json.h"
#include "util.h"
#include "workflow.h"

static hf_catalog *cat;

static const char *source_dir(void)
{
    const char *src = getenv("HOOKFLOW_SOURCE_DIR");
    return src ? src : HOOKFLOW_SOURCE_DIR;
}

static int setup(void **state)
{
    (void)state;
    char *dir = xasprintf("%s/schemas/catalog", source_dir());
    char err[512] = "";
    cat = hf_catalog_load(dir, err, sizeof err);
    if (!cat)
        fail_msg("loading %s: %s", dir, err);
    free(dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hf_catalog_free(cat);
    return 0;
}

/* ---- the examples (docs/workflows.md holds the same ones) -------------------------------- */

/* DESIGN.md's example, verbatim: the ids are the catalog's. */
static const char design_example[] =
    "{\"name\": \"Pickup confirmation\",\n"
    " \"trigger\": {\"connector\": \"meta\", \"event\": \"message\", \"filter\": "
    "\"event.payload.message.text contains 'pickup'\"},\n"
    " \"nodes\": [\n"
    "   {\"id\": \"crm\", \"type\": \"action\", \"connector\": \"hubspot\", \"action\": "
    "\"upsert_contact\",\n"
    "    \"params\": {\"email\": \"{{event.payload.sender.email}}\"}},\n"
    "   {\"id\": \"vip\", \"type\": \"condition\", \"if\": "
    "\"nodes.crm.output.properties.lifecyclestage == 'customer'\"},\n"
    "   {\"id\": \"sms\", \"type\": \"action\", \"connector\": \"twilio\", \"action\": "
    "\"send_message\",\n"
    "    \"params\": {\"to\": \"{{event.payload.sender.phone}}\", \"body\": \"Your pickup is "
    "confirmed\"},\n"
    "    \"retry\": {\"max_attempts\": 5, \"initial_ms\": 1000, \"max_ms\": 60000}, "
    "\"timeout_ms\": 10000}],\n"
    " \"edges\": [{\"from\": \"crm\", \"to\": \"vip\"}, {\"from\": \"vip\", \"to\": \"sms\", "
    "\"when\": true}]}\n";

static const char vip_welcome[] =
    "{\"name\": \"VIP welcome\",\n"
    " \"description\": \"When a HubSpot journey finishes, sync the contact and treat customers to "
    "a coupon.\",\n"
    " \"trigger\": {\"connector\": \"hubspot\", \"event\": \"workflow.completed\",\n"
    "             \"filter\": \"event.payload.objectType == 'CONTACT'\"},\n"
    " \"nodes\": [\n"
    "   {\"id\": \"crm\", \"type\": \"action\", \"connector\": \"hubspot\", \"action\": "
    "\"upsert_contact\",\n"
    "    \"params\": {\"email\": \"{{event.payload.properties.email}}\",\n"
    "               \"firstname\": \"{{event.payload.properties.firstname}}\"}},\n"
    "   {\"id\": \"vip\", \"type\": \"condition\",\n"
    "    \"if\": \"nodes.crm.output.properties.lifecyclestage == 'customer'\"},\n"
    "   {\"id\": \"profile\", \"type\": \"action\", \"connector\": \"klaviyo\", \"action\": "
    "\"upsert_profile\",\n"
    "    \"params\": {\"email\": \"{{nodes.crm.output.properties.email}}\",\n"
    "               \"properties\": {\"loyalty_tier\": \"gold\", \"hubspot_id\": "
    "\"{{nodes.crm.output.id}}\"}},\n"
    "    \"retry\": {\"max_attempts\": 5, \"initial_ms\": 2000, \"max_ms\": 120000, "
    "\"multiplier\": 3},\n"
    "    \"timeout_ms\": 15000},\n"
    "   {\"id\": \"wait\", \"type\": \"delay\", \"delay_ms\": 3600000},\n"
    "   {\"id\": \"coupon\", \"type\": \"action\", \"connector\": \"klaviyo\", \"action\": "
    "\"create_event\",\n"
    "    \"params\": {\"metric_name\": \"VIP coupon issued\",\n"
    "               \"email\": \"{{nodes.crm.output.properties.email}}\",\n"
    "               \"value\": 20, \"unique_id\": \"vip-{{nodes.crm.output.id}}\"}},\n"
    "   {\"id\": \"nurture\", \"type\": \"action\", \"connector\": \"klaviyo\", \"action\": "
    "\"create_event\",\n"
    "    \"params\": {\"metric_name\": \"Nurture started\",\n"
    "               \"email\": \"{{nodes.crm.output.properties.email}}\"}}],\n"
    " \"edges\": [{\"from\": \"crm\", \"to\": \"vip\"},\n"
    "           {\"from\": \"vip\", \"to\": \"profile\", \"when\": true},\n"
    "           {\"from\": \"profile\", \"to\": \"wait\"},\n"
    "           {\"from\": \"wait\", \"to\": \"coupon\"},\n"
    "           {\"from\": \"vip\", \"to\": \"nurture\", \"when\": false}]}\n";

static const char pickup_draft[] =
    "{\"name\": \"Pickup confirmation (draft)\",\n"
    " \"trigger\": {\"connector\": \"meta\", \"event\": \"message\", \"filter\": "
    "\"event.payload.message.text contains 'pickup'\"},\n"
    " \"nodes\": [\n"
    "   {\"id\": \"crm\", \"type\": \"action\", \"connector\": \"hubspot\", \"action\": "
    "\"upsert_contact\",\n"
    "    \"params\": {\"email\": \"{{event.payload.sender.email}}\"}},\n"
    "   {\"id\": \"vip\", \"type\": \"condition\", \"if\": "
    "\"nodes.crm.output.properties.lifecyclestage == 'customer'\"},\n"
    "   {\"id\": \"sms\", \"type\": \"action\", \"connector\": \"twilio\", \"action\": "
    "\"send_message\",\n"
    "    \"params\": {\"to\": \"{{event.payload.sender.phone}}\", \"body\": \"Your pickup is "
    "confirmed\"},\n"
    "    \"retry\": {\"max_attempts\": 5, \"initial_ms\": 1000, \"max_ms\": 60000}, "
    "\"timeout_ms\": 10000}],\n"
    " \"edges\": [{\"from\": \"crm\", \"to\": \"vip\"}, {\"from\": \"vip\", \"to\": \"sms\", "
    "\"when\": true}]}\n";

static const char invoice_followup[] =
    "{\"name\": \"Invoice follow-up\",\n"
    " \"trigger\": {\"connector\": \"xero\", \"event\": \"invoices.created\",\n"
    "             \"filter\": \"event.payload.eventCategory == 'INVOICE' && tenant.environment "
    "!= 'sandbox'\"},\n"
    " \"nodes\": [\n"
    "   {\"id\": \"summary\", \"type\": \"transform\",\n"
    "    \"output\": {\"invoice\": \"{{event.payload.resourceId}}\", \"tenant\": "
    "\"{{tenant.slug}}\",\n"
    "               \"link\": \"{{event.payload.resourceUrl}}\", \"tags\": [\"invoice\", "
    "\"{{event.account}}\"]}},\n"
    "   {\"id\": \"wait\", \"type\": \"delay\", \"until\": \"{{event.payload.eventDateUtc}}Z\"},\n"
    "   {\"id\": \"sms\", \"type\": \"action\", \"connector\": \"twilio\", \"action\": "
    "\"send_message\",\n"
    "    \"params\": {\"to\": \"+14155550123\", \"from\": \"+14155559876\",\n"
    "               \"body\": \"Invoice {{nodes.summary.output.invoice}} for {{tenant.name}}: "
    "{{nodes.summary.output.link}}\"},\n"
    "    \"retry\": {\"max_attempts\": 3}}],\n"
    " \"edges\": [{\"from\": \"summary\", \"to\": \"wait\"}, {\"from\": \"wait\", \"to\": "
    "\"sms\"}]}\n";

static const char late_driver[] =
    "{\"name\": \"Late driver alert\",\n"
    " \"trigger\": {\"connector\": \"twilio\", \"event\": \"message.received\"},\n"
    " \"nodes\": [\n"
    "   {\"id\": \"late\", \"type\": \"condition\",\n"
    "    \"if\": \"event.payload.Body contains 'late' or event.payload.Body startswith 'ETA'\"},\n"
    "   {\"id\": \"alert\", \"type\": \"action\", \"connector\": \"meta\", \"action\": "
    "\"send_message\",\n"
    "    \"params\": {\"recipient_id\": \"6523918047715832\",\n"
    "               \"text\": \"Your driver ({{event.payload.From}}) says: "
    "{{event.payload.Body}}\"},\n"
    "    \"metadata\": {\"id\": \"send_message\", \"name\": \"Send message\", \"simulatable\": "
    "true,\n"
    "                 \"connector\": {\"id\": \"meta\", \"availability\": \"Beta\"}},\n"
    "    \"ui\": {\"x\": 420, \"y\": 120}},\n"
    "   {\"id\": \"hold\", \"type\": \"delay\", \"until\": \"2026-04-01T09:00:00Z\"},\n"
    "   {\"id\": \"thanks\", \"type\": \"action\", \"connector\": \"twilio\", \"action\": "
    "\"send_message\",\n"
    "    \"params\": {\"to\": \"{{event.payload.From}}\", \"from\": \"{{event.payload.To}}\",\n"
    "               \"body\": \"Thanks, noted.\"}}],\n"
    " \"edges\": [{\"from\": \"late\", \"to\": \"alert\", \"when\": true},\n"
    "           {\"from\": \"late\", \"to\": \"hold\", \"when\": false},\n"
    "           {\"from\": \"hold\", \"to\": \"thanks\"}]}\n";

static const char *const doc_examples[] = {vip_welcome, pickup_draft, invoice_followup,
                                           late_driver};

/* ---- helpers ----------------------------------------------------------------------------- */

static wf_def *parse_ok(const char *json)
{
    char err[512] = "";
    wf_def *d = wf_parse(json, strlen(json), err, sizeof err);
    if (!d)
        fail_msg("wf_parse: %s\n%s", err, json);
    return d;
}

static void expect_parse_error(const char *json, const char *want)
{
    char err[512] = "";
    wf_def *d = wf_parse(json, strlen(json), err, sizeof err);
    if (d) {
        wf_free(d);
        fail_msg("parsed, want '%s':\n%s", want, json);
    }
    if (strcmp(err, want) != 0)
        fail_msg("error '%s', want '%s'\n%s", err, want, json);
}

/* text with the first occurrence of from (which must exist) replaced by to. Caller frees. */
static char *replace_once(const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    if (!at)
        fail_msg("'%s' is not in the text", from);
    return xasprintf("%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
}

/* A small valid workflow the structural tests break one thing at a time. */
static const char base[] =
    "{\"name\": \"t\", \"trigger\": {\"connector\": \"twilio\", \"event\": \"message.received\"},"
    " \"nodes\": [{\"id\": \"a\", \"type\": \"transform\", \"output\": {\"x\": 1}},"
    " {\"id\": \"b\", \"type\": \"condition\", \"if\": \"true\"},"
    " {\"id\": \"c\", \"type\": \"action\", \"connector\": \"twilio\", \"action\": "
    "\"send_message\", \"params\": {\"to\": \"{{event.payload.From}}\"}},"
    " {\"id\": \"d\", \"type\": \"delay\", \"delay_ms\": 5}],"
    " \"edges\": [{\"from\": \"a\", \"to\": \"b\"}, {\"from\": \"b\", \"to\": \"c\", \"when\": "
    "true}]}";

static void expect_base_error(const char *from, const char *to, const char *want)
{
    char *json = replace_once(base, from, to);
    expect_parse_error(json, want);
    free(json);
}

static void dump(const wf_problems *p)
{
    for (size_t i = 0; i < p->n; i++)
        print_message("  %-32s %-18s %s\n", p->items[i].path, p->items[i].code,
                      p->items[i].message);
}

static const wf_problem *find_problem(const wf_problems *p, const char *code, const char *path)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->items[i].code, code) == 0 && strcmp(p->items[i].path, path) == 0)
            return &p->items[i];
    return NULL;
}

static const char *expect_problem(const wf_problems *p, const char *code, const char *path)
{
    const wf_problem *pr = find_problem(p, code, path);
    if (!pr) {
        dump(p);
        fail_msg("no %s problem at %s", code, path);
    }
    return pr->message;
}

static void validate(const char *json, wf_problems *out)
{
    memset(out, 0, sizeof *out);
    wf_validate(json, strlen(json), cat, out);
}

static void expect_clean(const char *json)
{
    wf_problems p;
    validate(json, &p);
    if (p.n) {
        dump(&p);
        fail_msg("%zu problems in\n%s", p.n, json);
    }
    wf_problems_free(&p);
}

/* ---- parsing ----------------------------------------------------------------------------- */

static void test_design_example(void **state)
{
    (void)state;
    wf_def *d = parse_ok(design_example);
    assert_string_equal(d->name, "Pickup confirmation");
    assert_string_equal(d->trigger_connector, "meta");
    assert_string_equal(d->trigger_event, "message");
    assert_non_null(d->filter);
    assert_int_equal(d->nnodes, 3);
    assert_int_equal(d->nedges, 2);

    const wf_node *crm = &d->nodes[0], *vip = &d->nodes[1], *sms = &d->nodes[2];
    assert_string_equal(crm->id, "crm");
    assert_int_equal(crm->type, WF_ACTION);
    assert_string_equal(crm->connector, "hubspot");
    assert_string_equal(crm->action, "upsert_contact");
    assert_string_equal(hf_json_str(hf_json_get(crm->params, "email")),
                        "{{event.payload.sender.email}}");
    assert_null(crm->condition);
    assert_null(crm->metadata);
    /* defaults */
    assert_int_equal(crm->retry.max_attempts, 3);
    assert_int_equal(crm->retry.initial_ms, 1000);
    assert_int_equal(crm->retry.max_ms, 60000);
    assert_true(crm->retry.multiplier == 2.0);
    assert_int_equal(crm->timeout_ms, 10000);
    assert_int_equal(crm->nin, 0);
    assert_int_equal(crm->nout, 1);
    assert_int_equal(crm->out_edges[0], 0);

    assert_int_equal(vip->type, WF_CONDITION);
    assert_non_null(vip->condition);
    assert_null(vip->connector);
    assert_int_equal(vip->nin, 1);
    assert_int_equal(vip->nout, 1);

    assert_int_equal(sms->type, WF_ACTION);
    assert_int_equal(sms->retry.max_attempts, 5);
    assert_int_equal(sms->retry.initial_ms, 1000);
    assert_int_equal(sms->retry.max_ms, 60000);
    assert_true(sms->retry.multiplier == 2.0);
    assert_int_equal(sms->timeout_ms, 10000);
    assert_int_equal(sms->nin, 1);
    assert_int_equal(sms->nout, 0);

    assert_int_equal(d->edges[0].from, 0);
    assert_int_equal(d->edges[0].to, 1);
    assert_int_equal(d->edges[0].when, -1);
    assert_int_equal(d->edges[1].from, 1);
    assert_int_equal(d->edges[1].to, 2);
    assert_int_equal(d->edges[1].when, 1);
    assert_int_equal(d->topo[0], 0);
    assert_int_equal(d->topo[1], 1);
    assert_int_equal(d->topo[2], 2);

    assert_int_equal(wf_node_index(d, "vip"), 1);
    assert_int_equal(wf_node_index(d, "sms"), 2);
    assert_int_equal(wf_node_index(d, "nope"), -1);
    assert_int_equal(wf_node_index(d, NULL), -1);
    assert_true(hf_json_is_object(d->doc));
    /* The strings point into the document. */
    assert_ptr_equal(d->name, hf_json_str(hf_json_get(d->doc, "name")));
    wf_free(d);
    wf_free(NULL);
}

static void test_node_types_and_defaults(void **state)
{
    (void)state;
    wf_def *d = parse_ok(invoice_followup);
    const wf_node *summary = &d->nodes[0], *wait = &d->nodes[1], *sms = &d->nodes[2];
    assert_int_equal(summary->type, WF_TRANSFORM);
    assert_true(hf_json_is_object(summary->output));
    assert_int_equal(wait->type, WF_DELAY);
    assert_string_equal(hf_json_str(wait->until), "{{event.payload.eventDateUtc}}Z");
    assert_int_equal(wait->delay_ms, 0);
    assert_int_equal(sms->retry.max_attempts, 3);
    assert_int_equal(sms->retry.initial_ms, 1000);
    wf_free(d);

    d = parse_ok(vip_welcome);
    const wf_node *profile = &d->nodes[2], *delay = &d->nodes[3];
    assert_int_equal(profile->retry.max_attempts, 5);
    assert_int_equal(profile->retry.initial_ms, 2000);
    assert_int_equal(profile->retry.max_ms, 120000);
    assert_true(profile->retry.multiplier == 3.0);
    assert_int_equal(profile->timeout_ms, 15000);
    assert_int_equal(delay->delay_ms, 3600000);
    assert_null(delay->until);
    assert_int_equal(d->edges[4].when, 0);
    wf_free(d);

    d = parse_ok(late_driver);
    assert_true(hf_json_is_object(d->nodes[1].metadata));
    assert_string_equal(hf_json_str(hf_json_get(d->nodes[1].metadata, "name")), "Send message");
    assert_null(d->filter);
    assert_string_equal(hf_json_str(d->nodes[2].until), "2026-04-01T09:00:00Z");
    wf_free(d);

    /* params default to an empty object; edges may be left out. */
    d = parse_ok("{\"name\": \"n\", \"trigger\": {\"connector\": \"klaviyo\", \"event\": "
                 "\"profile.updated\"}, \"nodes\": [{\"id\": \"p\", \"type\": \"action\", "
                 "\"connector\": \"klaviyo\", \"action\": \"upsert_profile\"}]}");
    assert_true(hf_json_is_object(d->nodes[0].params));
    assert_int_equal(hf_json_len(d->nodes[0].params), 0);
    assert_int_equal(d->nedges, 0);
    assert_int_equal(d->topo[0], 0);
    wf_free(d);

    /* Bounds that are allowed. */
    char *json = replace_once(base, "\"delay_ms\": 5", "\"delay_ms\": 2678400000");
    wf_free(parse_ok(json));
    free(json);
    json = replace_once(base, "\"id\": \"a\"",
                        "\"id\": \"a123456789012345678901234567890123456789012345678901234567890"
                        "12\", \"timeout_ms\": 300000, \"retry\": {\"max_attempts\": 20, "
                        "\"initial_ms\": 0, \"max_ms\": 0, \"multiplier\": 10}");
    char *json2 = replace_once(json, "{\"from\": \"a\"",
                               "{\"from\": \"a12345678901234567890123456789012345678901234567890"
                               "123456789012\"");
    wf_def *d2 = parse_ok(json2);
    assert_int_equal(d2->nodes[0].timeout_ms, 300000);
    assert_int_equal(d2->nodes[0].retry.max_attempts, 20);
    assert_int_equal(d2->nodes[0].retry.max_ms, 0);
    wf_free(d2);
    free(json);
    free(json2);
}

static void test_structural_errors(void **state)
{
    (void)state;
    char err[512];
    assert_null(wf_parse("{", 1, err, sizeof err));
    assert_true(strncmp(err, "malformed JSON", 14) == 0);
    expect_parse_error("[]", "a workflow definition must be a JSON object");
    expect_parse_error("{\"trigger\": {\"connector\": \"meta\", \"event\": \"message\"}, "
                       "\"nodes\": [{\"id\": \"a\", \"type\": \"delay\", \"delay_ms\": 1}]}",
                       "name: required");
    expect_base_error("\"name\": \"t\"", "\"name\": \"\"", "name: must be 1..200 characters");
    expect_base_error("\"name\": \"t\"", "\"name\": 5", "name: must be a string");
    expect_base_error("\"name\": \"t\"", "\"name\": \"a\\u0001b\"",
                      "name: must not contain control characters");
    expect_base_error("\"name\": \"t\"", "\"name\": \"tab\\there\"",
                      "name: must not contain control characters");
    expect_base_error("\"name\": \"t\"", "\"name\": \"t\", \"nodse\": []", "nodse: unknown member");
    expect_base_error("\"name\": \"t\"", "\"name\": \"t\", \"name\": \"u\"",
                      "name: duplicate member");
    expect_base_error("\"name\": \"t\"", "\"name\": \"t\", \"description\": 1",
                      "description: must be a string");
    /* trigger */
    expect_base_error("\"trigger\": {\"connector\": \"twilio\", \"event\": \"message.received\"}",
                      "\"trig\": {}", "trig: unknown member");
    expect_base_error("\"trigger\": {\"connector\": \"twilio\", \"event\": \"message.received\"}",
                      "\"trigger\": []", "trigger: must be an object");
    expect_base_error("\"connector\": \"twilio\", \"event\"",
                      "\"connector\": \"Twilio\", \"event\"",
                      "trigger.connector: must match ^[a-z][a-z0-9_]*$");
    expect_base_error("\"event\": \"message.received\"", "\"event\": \"\"",
                      "trigger.event: must match ^[a-z][a-z0-9_.]*$");
    expect_base_error("\"event\": \"message.received\"", "\"evnt\": \"message.received\"",
                      "trigger.evnt: unknown member");
    expect_base_error("\"event\": \"message.received\"",
                      "\"event\": \"message.received\", \"filter\": \"event.x ==\"",
                      "trigger.filter: position 10: expected a value, found end of expression");
    expect_base_error("\"event\": \"message.received\"",
                      "\"event\": \"message.received\", \"filter\": true",
                      "trigger.filter: must be a string");
    /* nodes */
    expect_base_error("\"nodes\"", "\"nodez\"", "nodez: unknown member");
    expect_parse_error("{\"name\": \"t\", \"trigger\": {\"connector\": \"meta\", \"event\": "
                       "\"message\"}, \"nodes\": []}",
                       "nodes: needs at least one node");
    expect_parse_error("{\"name\": \"t\", \"trigger\": {\"connector\": \"meta\", \"event\": "
                       "\"message\"}, \"nodes\": {}}",
                       "nodes: must be an array");
    expect_base_error("{\"id\": \"a\", \"type\": \"transform\", \"output\": {\"x\": 1}}", "7",
                      "nodes[0]: must be an object");
    expect_base_error("\"id\": \"a\", ", "", "nodes[0].id: required");
    expect_base_error("\"id\": \"a\"", "\"id\": \"A\"",
                      "nodes[0].id: must match ^[a-z][a-z0-9_]{0,63}$");
    expect_base_error("\"id\": \"a\"", "\"id\": \"1a\"",
                      "nodes[0].id: must match ^[a-z][a-z0-9_]{0,63}$");
    expect_base_error("\"id\": \"a\"",
                      "\"id\": \"a1234567890123456789012345678901234567890123456789012345678901"
                      "234\"",
                      "nodes[0].id: must match ^[a-z][a-z0-9_]{0,63}$");
    expect_base_error("\"id\": \"b\"", "\"id\": \"a\"",
                      "nodes[1].id: duplicate id 'a' (also nodes[0])");
    expect_base_error("\"type\": \"transform\"", "\"type\": \"webhook\"",
                      "nodes[0].type: must be one of action, condition, transform, delay");
    expect_base_error("\"type\": \"transform\", ", "", "nodes[0].type: required");
    expect_base_error("\"output\": {\"x\": 1}", "\"param\": {}", "nodes[0].param: unknown member");
    expect_base_error("\"output\": {\"x\": 1}", "\"out\": 1", "nodes[0].out: unknown member");
    expect_base_error("\"output\": {\"x\": 1}", "\"outputs\": 1",
                      "nodes[0].outputs: unknown member");
    expect_base_error("\"output\": {\"x\": 1}", "\"name\": \"A\"", "nodes[0].output: required");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": 1, \"if\": \"true\"",
                      "nodes[0].if: not allowed on transform nodes");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": {\"x\": \"{{ ?}}\"}",
                      "nodes[0].output.x: position 3: unknown operator '?'");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": [1, {\"a b\": \"x {{ nodes. }}\"}]",
                      "nodes[0].output[1][\"a b\"]: position 12: expected a name after '.'");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": 1, \"name\": 2",
                      "nodes[0].name: must be a string");
    /* retry, timeout, metadata */
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": 1, \"retry\": {\"max_attempts\": 0}",
                      "nodes[0].retry.max_attempts: must be an integer 1..20");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": 1, \"retry\": {\"max_attempts\": 21}",
                      "nodes[0].retry.max_attempts: must be an integer 1..20");
    expect_base_error("\"output\": {\"x\": 1}",
                      "\"output\": 1, \"retry\": {\"max_attempts\": \"3\"}",
                      "nodes[0].retry.max_attempts: must be an integer 1..20");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": 1, \"retry\": {\"max_attempts\": 2.5}",
                      "nodes[0].retry.max_attempts: must be an integer 1..20");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": 1, \"retry\": {\"initial_ms\": -1}",
                      "nodes[0].retry.initial_ms: must be an integer 0..3600000");
    expect_base_error("\"output\": {\"x\": 1}",
                      "\"output\": 1, \"retry\": {\"initial_ms\": 5000, \"max_ms\": 4000}",
                      "nodes[0].retry.max_ms: must be at least initial_ms (5000)");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": 1, \"retry\": {\"max_ms\": 500}",
                      "nodes[0].retry.max_ms: must be at least initial_ms (1000)");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": 1, \"retry\": {\"multiplier\": 0.5}",
                      "nodes[0].retry.multiplier: must be a number 1..10");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": 1, \"retry\": {\"attempts\": 2}",
                      "nodes[0].retry.attempts: unknown member");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": 1, \"retry\": 3",
                      "nodes[0].retry: must be an object");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": 1, \"timeout_ms\": 99",
                      "nodes[0].timeout_ms: must be an integer 100..300000");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": 1, \"timeout_ms\": 300001",
                      "nodes[0].timeout_ms: must be an integer 100..300000");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": 1, \"metadata\": []",
                      "nodes[0].metadata: must be an object");
    /* condition */
    expect_base_error("\"if\": \"true\"", "\"name\": \"x\"", "nodes[1].if: required");
    expect_base_error("\"if\": \"true\"", "\"if\": \"nodes.a.output.x === 1\"",
                      "nodes[1].if: position 19: unknown operator '=' (compare with ==)");
    expect_base_error("\"if\": \"true\"", "\"if\": true", "nodes[1].if: must be a string");
    expect_base_error("\"if\": \"true\"", "\"if\": \"true\", \"params\": {}",
                      "nodes[1].params: not allowed on condition nodes");
    /* action */
    expect_base_error("\"connector\": \"twilio\", \"action\"", "\"action\"",
                      "nodes[2].connector: required");
    expect_base_error("\"action\": \"send_message\"", "\"action\": \"Send\"",
                      "nodes[2].action: must match ^[a-z][a-z0-9_]*$");
    expect_base_error("\"params\": {\"to\": \"{{event.payload.From}}\"}", "\"params\": []",
                      "nodes[2].params: must be an object");
    expect_base_error("\"params\": {\"to\": \"{{event.payload.From}}\"}",
                      "\"params\": {\"to\": \"{{event.payload.From\"}",
                      "nodes[2].params.to: position 0: unterminated {{");
    expect_base_error("\"params\": {\"to\": \"{{event.payload.From}}\"}",
                      "\"params\": {\"to\": \"x\"}, \"output\": 1",
                      "nodes[2].output: not allowed on action nodes");
    /* delay */
    expect_base_error("\"delay_ms\": 5", "\"name\": \"w\"",
                      "nodes[3]: a delay node needs exactly one of delay_ms and until");
    expect_base_error("\"delay_ms\": 5", "\"delay_ms\": 5, \"until\": \"2026-01-01T00:00:00Z\"",
                      "nodes[3]: a delay node needs exactly one of delay_ms and until");
    expect_base_error("\"delay_ms\": 5", "\"delay_ms\": -1",
                      "nodes[3].delay_ms: must be an integer 0..2678400000");
    expect_base_error("\"delay_ms\": 5", "\"delay_ms\": 2678400001",
                      "nodes[3].delay_ms: must be an integer 0..2678400000");
    expect_base_error("\"delay_ms\": 5", "\"until\": \"tomorrow\"",
                      "nodes[3].until: must be an RFC 3339 time (2026-03-18T09:41:27Z) or a "
                      "template");
    expect_base_error("\"delay_ms\": 5", "\"until\": \"2026-02-29T10:00:00Z\"",
                      "nodes[3].until: must be an RFC 3339 time (2026-03-18T09:41:27Z) or a "
                      "template");
    expect_base_error("\"delay_ms\": 5", "\"until\": \"2026-03-18T09:41:27\"",
                      "nodes[3].until: must be an RFC 3339 time (2026-03-18T09:41:27Z) or a "
                      "template");
    expect_base_error("\"delay_ms\": 5", "\"until\": 5",
                      "nodes[3].until: must be a string (an RFC 3339 time or a template)");
    expect_base_error("\"delay_ms\": 5", "\"until\": \"{{ event.payload.At \"",
                      "nodes[3].until: position 0: unterminated {{");
    expect_base_error("\"delay_ms\": 5", "\"delay_ms\": 5, \"connector\": \"x\"",
                      "nodes[3].connector: not allowed on delay nodes");
    /* edges */
    expect_base_error("\"edges\": [", "\"edges\": 5, \"x\": [", "x: unknown member");
    expect_base_error("\"edges\": [", "\"ui\": {}, \"edges\": \"a->b\", \"ui2\": [",
                      "ui2: unknown member");
    expect_base_error("\"edges\": [", "\"edges\": {\"e\": 1}, \"ui\": [",
                      "edges: must be an array");
    expect_base_error("{\"from\": \"a\", \"to\": \"b\"}", "{\"from\": \"zz\", \"to\": \"b\"}",
                      "edges[0].from: no node has the id 'zz'");
    expect_base_error("{\"from\": \"a\", \"to\": \"b\"}", "{\"from\": \"a\"}",
                      "edges[0].to: required");
    expect_base_error("{\"from\": \"a\", \"to\": \"b\"}", "{\"from\": \"a\", \"to\": 2}",
                      "edges[0].to: must be a string");
    expect_base_error("{\"from\": \"a\", \"to\": \"b\"}",
                      "{\"from\": \"a\", \"to\": \"b\", \"when\": true}",
                      "edges[0].when: only edges leaving a condition node may have when ('a' is "
                      "a transform node)");
    expect_base_error("\"when\": true", "\"when\": \"yes\"",
                      "edges[1].when: must be true or false");
    expect_base_error("{\"from\": \"a\", \"to\": \"b\"}",
                      "{\"from\": \"a\", \"to\": \"b\", \"label\": \"x\"}",
                      "edges[0].label: unknown member");
    expect_base_error("{\"from\": \"a\", \"to\": \"b\"}", "[\"a\", \"b\"]",
                      "edges[0]: must be an object");
    expect_base_error("{\"from\": \"a\", \"to\": \"b\"}",
                      "{\"from\": \"a\", \"to\": \"b\"}, {\"from\": \"a\", \"to\": \"b\"}",
                      "edges[1]: duplicate edge a -> b (also edges[0])");
}

static void test_size_limits(void **state)
{
    (void)state;
    hf_buf j = {0};
    hf_buf_puts(&j, "{\"name\": \"big\", \"trigger\": {\"connector\": \"meta\", \"event\": "
                    "\"message\"}, \"nodes\": [");
    for (int i = 0; i < WF_MAX_NODES + 1; i++)
        hf_buf_printf(&j, "%s{\"id\": \"n%d\", \"type\": \"delay\", \"delay_ms\": 1}", i ? "," : "",
                      i);
    hf_buf_puts(&j, "]}");
    expect_parse_error(j.data, "nodes: at most 256 nodes");

    /* 256 nodes in a chain are fine, and the order is the chain's. */
    hf_buf_reset(&j);
    hf_buf_puts(&j, "{\"name\": \"big\", \"trigger\": {\"connector\": \"meta\", \"event\": "
                    "\"message\"}, \"nodes\": [");
    for (int i = 0; i < WF_MAX_NODES; i++)
        hf_buf_printf(&j, "%s{\"id\": \"n%d\", \"type\": \"delay\", \"delay_ms\": 1}", i ? "," : "",
                      i);
    hf_buf_puts(&j, "], \"edges\": [");
    for (int i = WF_MAX_NODES - 1; i > 0; i--)
        hf_buf_printf(&j, "%s{\"from\": \"n%d\", \"to\": \"n%d\"}", i < WF_MAX_NODES - 1 ? "," : "",
                      i, i - 1);
    hf_buf_puts(&j, "]}");
    wf_def *d = parse_ok(j.data);
    for (int i = 0; i < WF_MAX_NODES; i++)
        assert_int_equal(d->topo[i], WF_MAX_NODES - 1 - i);
    wf_free(d);

    hf_buf_reset(&j);
    hf_buf_puts(&j, "{\"name\": \"big\", \"trigger\": {\"connector\": \"meta\", \"event\": "
                    "\"message\"}, \"nodes\": [{\"id\": \"a\", \"type\": \"delay\", "
                    "\"delay_ms\": 1}], \"edges\": [");
    for (int i = 0; i < WF_MAX_EDGES + 1; i++)
        hf_buf_printf(&j, "%s{\"from\": \"a\", \"to\": \"a\"}", i ? "," : "");
    hf_buf_puts(&j, "]}");
    expect_parse_error(j.data, "edges: at most 1024 edges");
    hf_buf_free(&j);
}

static void test_cycles(void **state)
{
    (void)state;
    static const char tmpl[] =
        "{\"name\": \"c\", \"trigger\": {\"connector\": \"meta\", \"event\": \"message\"},"
        " \"nodes\": [{\"id\": \"a\", \"type\": \"delay\", \"delay_ms\": 1},"
        " {\"id\": \"b\", \"type\": \"delay\", \"delay_ms\": 1},"
        " {\"id\": \"c\", \"type\": \"delay\", \"delay_ms\": 1},"
        " {\"id\": \"r\", \"type\": \"delay\", \"delay_ms\": 1}], \"edges\": [%s]}";
    char json[1024];
    snprintf(json, sizeof json, tmpl,
             "{\"from\": \"r\", \"to\": \"a\"}, {\"from\": \"a\", \"to\": \"b\"}, "
             "{\"from\": \"b\", \"to\": \"c\"}, {\"from\": \"c\", \"to\": \"a\"}");
    expect_parse_error(json, "edges[3]: cycle: a -> b -> c -> a");
    snprintf(json, sizeof json, tmpl, "{\"from\": \"b\", \"to\": \"b\"}");
    expect_parse_error(json, "edges[0]: cycle: b -> b");
    snprintf(json, sizeof json, tmpl,
             "{\"from\": \"a\", \"to\": \"b\"}, {\"from\": \"b\", \"to\": \"a\"}, "
             "{\"from\": \"c\", \"to\": \"r\"}, {\"from\": \"r\", \"to\": \"c\"}");
    expect_parse_error(json, "edges[1]: cycle: a -> b -> a");
    /* wf_validate names every cycle. */
    wf_problems p;
    validate(json, &p);
    assert_string_equal(expect_problem(&p, "cycle", "edges[1]"), "cycle: a -> b -> a");
    assert_string_equal(expect_problem(&p, "cycle", "edges[3]"), "cycle: c -> r -> c");
    /* ... and, since no root leads into them, the nodes never run. */
    expect_problem(&p, "unreachable", "nodes[0]");
    expect_problem(&p, "unreachable", "nodes[3]");
    wf_problems_free(&p);
}

static void test_topo_order(void **state)
{
    (void)state;
    /* Listed backwards: the order follows the edges. */
    wf_def *d = parse_ok("{\"name\": \"t\", \"trigger\": {\"connector\": \"meta\", \"event\": "
                         "\"message\"}, \"nodes\": [{\"id\": \"c\", \"type\": \"delay\", "
                         "\"delay_ms\": 1}, {\"id\": \"b\", \"type\": \"delay\", \"delay_ms\": 1}, "
                         "{\"id\": \"a\", \"type\": \"delay\", \"delay_ms\": 1}], \"edges\": "
                         "[{\"from\": \"b\", \"to\": \"c\"}, {\"from\": \"a\", \"to\": \"b\"}]}");
    assert_int_equal(d->topo[0], 2);
    assert_int_equal(d->topo[1], 1);
    assert_int_equal(d->topo[2], 0);
    assert_int_equal(d->nodes[2].nin, 0);
    assert_int_equal(d->nodes[0].nin, 1);
    wf_free(d);
    /* A diamond plus a second root: among ready nodes, the one listed first. */
    d = parse_ok("{\"name\": \"t\", \"trigger\": {\"connector\": \"meta\", \"event\": "
                 "\"message\"}, \"nodes\": [{\"id\": \"d\", \"type\": \"delay\", \"delay_ms\": 1},"
                 " {\"id\": \"c\", \"type\": \"delay\", \"delay_ms\": 1},"
                 " {\"id\": \"b\", \"type\": \"delay\", \"delay_ms\": 1},"
                 " {\"id\": \"a\", \"type\": \"delay\", \"delay_ms\": 1},"
                 " {\"id\": \"z\", \"type\": \"delay\", \"delay_ms\": 1}], \"edges\": ["
                 "{\"from\": \"a\", \"to\": \"b\"}, {\"from\": \"a\", \"to\": \"c\"},"
                 "{\"from\": \"b\", \"to\": \"d\"}, {\"from\": \"c\", \"to\": \"d\"}]}");
    static const size_t want[] = {3, 1, 2, 0, 4};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(d->topo[i], want[i]);
    assert_int_equal(d->nodes[0].nin, 2);
    assert_int_equal(d->nodes[3].nout, 2);
    assert_int_equal(d->nodes[3].out_edges[0], 0);
    assert_int_equal(d->nodes[3].out_edges[1], 1);
    wf_free(d);
}

/* ---- docs and schema --------------------------------------------------------------------- */

static char *read_source(const char *rel)
{
    char *path = xasprintf("%s/%s", source_dir(), rel);
    char err[256];
    char *text = hf_read_file(path, NULL, err, sizeof err);
    if (!text)
        fail_msg("%s", err);
    free(path);
    return text;
}

static char *canonical(const char *json)
{
    char err[256];
    hf_json v = hf_json_parse(json, strlen(json), err, sizeof err);
    if (!v)
        fail_msg("%s", err);
    hf_buf b = {0};
    hf_json_serialize(v, &b);
    hf_json_free(v);
    return hf_buf_steal(&b);
}

/* Every ```json block of docs/workflows.md that is a definition parses, equals one of the
 * literals above, and validates cleanly unless it is the draft. */
static void test_docs_examples(void **state)
{
    (void)state;
    char *md = read_source("docs/workflows.md");
    size_t found = 0;
    bool seen[HF_ARRAY_LEN(doc_examples)] = {false};
    for (const char *at = strstr(md, "```json\n"); at; at = strstr(at, "```json\n")) {
        at += 8;
        const char *end = strstr(at, "```");
        assert_non_null(end);
        if (strncmp(at, "{\"name\"", 7) != 0)
            continue;
        char *block = xstrndup(at, (size_t)(end - at));
        wf_free(parse_ok(block));
        char *canon = canonical(block);
        bool matched = false;
        for (size_t i = 0; i < HF_ARRAY_LEN(doc_examples); i++) {
            char *lit = canonical(doc_examples[i]);
            if (strcmp(lit, canon) == 0) {
                matched = true;
                seen[i] = true;
            }
            free(lit);
        }
        if (!matched)
            fail_msg("docs example differs from every literal in the test:\n%s", block);
        if (!strstr(block, "(draft)"))
            expect_clean(block);
        free(canon);
        free(block);
        found++;
        at = end + 3;
    }
    assert_int_equal(found, HF_ARRAY_LEN(doc_examples));
    for (size_t i = 0; i < HF_ARRAY_LEN(doc_examples); i++)
        assert_true(seen[i]);
    free(md);
}

static void test_examples_validate(void **state)
{
    (void)state;
    for (size_t i = 0; i < HF_ARRAY_LEN(doc_examples); i++)
        wf_free(parse_ok(doc_examples[i]));
    expect_clean(vip_welcome);
    expect_clean(invoice_followup);
    expect_clean(late_driver);

    /* The draft: exactly the three problems docs/workflows.md lists. */
    wf_problems p;
    validate(pickup_draft, &p);
    if (p.n != 3)
        dump(&p);
    assert_int_equal(p.n, 3);
    assert_string_equal(expect_problem(&p, "unknown_field", "nodes[0].params.email"),
                        "event.payload.sender.email: event.payload.sender has no field 'email' "
                        "in the sample payload of meta message");
    assert_string_equal(expect_problem(&p, "missing_param", "nodes[2].params.from"),
                        "twilio send_message needs the input 'from' (Your Twilio number, in the "
                        "same form as to)");
    assert_string_equal(expect_problem(&p, "unknown_field", "nodes[2].params.to"),
                        "event.payload.sender.phone: event.payload.sender has no field 'phone' "
                        "in the sample payload of meta message");
    wf_problems_free(&p);
    char *md = read_source("docs/workflows.md");
    assert_non_null(strstr(md, "nodes[0].params.email  unknown_field  event.payload.sender.email: "
                               "event.payload.sender has no field 'email' in the sample payload "
                               "of meta message"));
    free(md);
}

static void test_schema_file(void **state)
{
    (void)state;
    char *text = read_source("schemas/workflow.schema.json");
    char err[256];
    hf_json s = hf_json_parse(text, strlen(text), err, sizeof err);
    if (!s)
        fail_msg("workflow.schema.json: %s", err);
    assert_string_equal(hf_json_str(hf_json_get(s, "$schema")),
                        "https://json-schema.org/draft/2020-12/schema");
    hf_json req = hf_json_get(s, "required");
    assert_int_equal(hf_json_len(req), 3);
    assert_false(YAJL_IS_TRUE(hf_json_get(s, "additionalProperties")));
    /* Every node member the parser knows is described. */
    hf_json props = hf_json_path(s, "$defs", "node", "properties", NULL);
    static const char *const members[] = {"id",       "type",   "name",      "retry",  "timeout_ms",
                                          "metadata", "ui",     "connector", "action", "params",
                                          "if",       "output", "delay_ms",  "until"};
    assert_int_equal(hf_json_len(props), HF_ARRAY_LEN(members));
    for (size_t i = 0; i < HF_ARRAY_LEN(members); i++)
        assert_non_null(hf_json_get(props, members[i]));
    assert_non_null(hf_json_path(s, "$defs", "edge", "properties", "when", NULL));
    assert_non_null(hf_json_path(s, "$defs", "retry", "properties", "multiplier", NULL));
    hf_json_free(s);
    free(text);
}

/* ---- validation -------------------------------------------------------------------------- */

/* One definition with every problem code. */
static const char everything_wrong[] =
    "{\"name\": \"Everything wrong\",\n"
    " \"trigger\": {\"connector\": \"meta\", \"event\": \"messages\",\n"
    "             \"filter\": \"nodes.crm.output.id == '1'\"},\n"
    " \"nodes\": [\n"
    "  {\"id\": \"crm\", \"type\": \"action\", \"connector\": \"hubspot\", \"action\": "
    "\"upsert_contact\",\n"
    "   \"params\": {\"email\": \"{{tenant.email}}\", \"lifecyclestage\": \"vip\", \"phone\": 5,\n"
    "              \"colour\": \"red\", \"firstname\": \"{{ nodes.sms.output.sid }}\"},\n"
    "   \"metadata\": {\"id\": \"upsert_contact\", \"name\": \"Upsert contact\", \"simulatable\": "
    "true,\n"
    "                \"summary\": \"Creates the contact with this email, or updates the existing "
    "one.\"}},\n"
    "  {\"id\": \"vip\", \"type\": \"condition\",\n"
    "   \"if\": \"nodes.crm.output.properties.lifecyclestage == 'customer' and "
    "nodes.crm.output.nope\"},\n"
    "  {\"id\": \"sms\", \"type\": \"action\", \"connector\": \"twilio\", \"action\": "
    "\"send_message\",\n"
    "   \"params\": {\"to\": \"{{event.payload.sender.id}}\", \"body\": \"hi\"}},\n"
    "  {\"id\": \"fax\", \"type\": \"action\", \"connector\": \"fax\", \"action\": \"send\"},\n"
    "  {\"id\": \"mail\", \"type\": \"action\", \"connector\": \"klaviyo\", \"action\": "
    "\"send_mail\"},\n"
    "  {\"id\": \"never\", \"type\": \"condition\", \"if\": \"false\"},\n"
    "  {\"id\": \"dead\", \"type\": \"transform\", \"output\": {\"x\": 1}},\n"
    "  {\"id\": \"loop_a\", \"type\": \"transform\", \"output\": 1},\n"
    "  {\"id\": \"loop_b\", \"type\": \"transform\", \"output\": \"{{ nodes.loop_a.output }}\"},\n"
    "  {\"id\": \"bad\", \"type\": \"delay\", \"delay_ms\": -5}],\n"
    " \"edges\": [{\"from\": \"crm\", \"to\": \"vip\"}, {\"from\": \"vip\", \"to\": \"sms\", "
    "\"when\": true},\n"
    "           {\"from\": \"never\", \"to\": \"dead\", \"when\": true},\n"
    "           {\"from\": \"loop_a\", \"to\": \"loop_b\"}, {\"from\": \"loop_b\", \"to\": "
    "\"loop_a\"}]}\n";

static void test_validate_every_code(void **state)
{
    (void)state;
    wf_problems p;
    validate(everything_wrong, &p);
    static const struct {
        const char *code, *path, *message;
    } want[] = {
        {"schema", "nodes[9].delay_ms", "must be an integer 0..2678400000"},
        {"cycle", "edges[4]", "cycle: loop_a -> loop_b -> loop_a"},
        {"unknown_event", "trigger.event",
         "meta has no event 'messages' (events: message, messaging_postbacks)"},
        {"not_upstream", "trigger.filter",
         "nodes.crm.output.id: the trigger filter runs before any node"},
        {"param_type", "nodes[0].params.lifecyclestage",
         "must be one of subscriber, lead, marketingqualifiedlead, salesqualifiedlead, "
         "opportunity, customer, evangelist, other"},
        {"param_type", "nodes[0].params.phone", "must be a string, not a number"},
        {"unknown_param", "nodes[0].params.colour",
         "hubspot upsert_contact has no input 'colour' (inputs: email, firstname, lastname, "
         "phone, lifecyclestage, properties)"},
        {"stale_metadata", "nodes[0].metadata.name",
         "differs from the catalog's hubspot upsert_contact name (now \"Create or update "
         "contact\")"},
        {"unknown_field", "nodes[0].params.email",
         "tenant.email: tenant has only id, slug, name, environment"},
        {"not_upstream", "nodes[0].params.firstname",
         "nodes.sms.output.sid: 'sms' is not upstream of 'crm'"},
        {"unknown_field", "nodes[1].if",
         "nodes.crm.output.nope: nodes.crm.output has no field 'nope' in the output of hubspot "
         "upsert_contact"},
        {"missing_param", "nodes[2].params.from",
         "twilio send_message needs the input 'from' (Your Twilio number, in the same form as "
         "to)"},
        {"unknown_connector", "nodes[3].connector", "no connector 'fax' in the catalog"},
        {"unknown_action", "nodes[4].action",
         "klaviyo has no action 'send_mail' (actions: create_event, upsert_profile)"},
        {"missing_param", "nodes[4].params.metric_name", NULL},
        {"unreachable", "nodes[6]",
         "'dead' never runs: condition 'never' is always false, so its when:true branch is "
         "never taken"},
        {"unreachable", "nodes[7]",
         "'loop_a' never runs: no root leads to it through edges that can be taken"},
        {"unreachable", "nodes[8]",
         "'loop_b' never runs: no root leads to it through edges that can be taken"},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(want); i++) {
        if (!want[i].message)
            continue;
        const char *msg = expect_problem(&p, want[i].code, want[i].path);
        if (strcmp(msg, want[i].message) != 0) {
            dump(&p);
            fail_msg("%s %s: '%s', want '%s'", want[i].code, want[i].path, msg, want[i].message);
        }
    }
    /* Nothing more: the unknown action has no inputs to miss. */
    size_t expected = 0;
    for (size_t i = 0; i < HF_ARRAY_LEN(want); i++)
        expected += want[i].message != NULL;
    if (p.n != expected)
        dump(&p);
    assert_int_equal(p.n, expected);
    wf_problems_free(&p);
    wf_problems_free(&p); /* idempotent */
}

static void test_validate_fields(void **state)
{
    (void)state;
    /* event.payload against the sample (nested, arrays, empty objects are open), the envelope,
     * tenant, node members, action outputs (object fields open), transforms, conditions and
     * delays. */
    static const char json[] =
        "{\"name\": \"f\", \"trigger\": {\"connector\": \"klaviyo\", \"event\": "
        "\"message.delivered\"},\n"
        " \"nodes\": [\n"
        "  {\"id\": \"t\", \"type\": \"transform\", \"output\": {\n"
        "    \"ok1\": \"{{event.payload.payload.data.attributes.event_properties['Campaign "
        "Name']}}\",\n"
        "    \"ok2\": \"{{event.payload.payload.data.relationships.profile.data.id}}\",\n"
        "    \"ok3\": \"{{event.id}} {{event.received_at}} {{tenant.id}} {{event}} {{nodes}}\",\n"
        "    \"bad1\": \"{{event.payload.payload.data.attributes.nope}}\",\n"
        "    \"bad2\": \"{{event.payload.topic.x}}\",\n"
        "    \"bad3\": \"{{event.payload[0]}}\",\n"
        "    \"bad4\": \"{{event.body}}\",\n"
        "    \"bad5\": \"{{tenant.slug.x}}\",\n"
        "    \"list\": [\"a\", {\"k\": \"{{tenant.slug}}\"}]}},\n"
        "  {\"id\": \"p\", \"type\": \"action\", \"connector\": \"klaviyo\", \"action\": "
        "\"upsert_profile\", \"params\": {\"properties\": \"{{nodes.t.output}}\"}},\n"
        "  {\"id\": \"c\", \"type\": \"condition\", \"if\": \"nodes.p.output.properties.anything "
        "== 1 and nodes.p.output.id.x == 1 and nodes.p.status == 'succeeded' and "
        "nodes.p.branch and nodes.p.error\"},\n"
        "  {\"id\": \"u\", \"type\": \"transform\", \"output\": [\"{{nodes.t.output.list[1].k}}\", "
        "\"{{nodes.t.output.list[5]}}\", \"{{nodes.t.output.ok1.x}}\", \"{{nodes.t.output.zz}}\", "
        "\"{{nodes.c.output.result}}\", \"{{nodes.c.output.value}}\", "
        "\"{{nodes.w.output.until}}\", "
        "\"{{nodes.w.output.at}}\", \"{{nodes.p.output[0]}}\", \"{{nodes.u.output}}\", "
        "\"{{nodes.zz}}\", \"{{nodes.p.status.x}}\"]},\n"
        "  {\"id\": \"w\", \"type\": \"delay\", \"until\": \"{{nodes.p.output.updated}}\"}],\n"
        " \"edges\": [{\"from\": \"t\", \"to\": \"p\"}, {\"from\": \"p\", \"to\": \"c\"},"
        " {\"from\": \"c\", \"to\": \"w\", \"when\": true}, {\"from\": \"w\", \"to\": \"u\"}]}";
    wf_problems p;
    validate(json, &p);
    static const struct {
        const char *code, *path, *message;
    } want[] = {
        {"unknown_field", "nodes[0].output.bad1",
         "event.payload.payload.data.attributes.nope: event.payload.payload.data.attributes has "
         "no field 'nope' in the sample payload of klaviyo message.delivered"},
        {"unknown_field", "nodes[0].output.bad2",
         "event.payload.topic.x: event.payload.topic is a string, it has no fields in the sample "
         "payload of klaviyo message.delivered"},
        {"unknown_field", "nodes[0].output.bad3",
         "event.payload[0]: event.payload is an object, not an array in the sample payload of "
         "klaviyo message.delivered"},
        {"unknown_field", "nodes[0].output.bad4",
         "event.body: event has only id, provider, event, account, occurred_at, received_at, "
         "payload"},
        {"unknown_field", "nodes[0].output.bad5",
         "tenant.slug.x: tenant.slug is a string, it has no fields"},
        {"param_type", "nodes[1].params.properties", NULL}, /* exact template: not reported */
        {"unknown_field", "nodes[2].if",
         "nodes.p.output.id.x: nodes.p.output.id is a string, it has no fields in the output of "
         "klaviyo upsert_profile"},
        {"unknown_field", "nodes[2].if",
         "nodes.p.error: nodes.p has only status, output and branch"},
        {"unknown_field", "nodes[3].output[1]",
         "nodes.t.output.list[5]: nodes.t.output.list has only 2 elements in the transform's "
         "output"},
        {"unknown_field", "nodes[3].output[2]", NULL}, /* ok1 is a template: open */
        {"unknown_field", "nodes[3].output[3]",
         "nodes.t.output.zz: nodes.t.output has no field 'zz' in the transform's output"},
        {"unknown_field", "nodes[3].output[5]",
         "nodes.c.output.value: nodes.c.output has only result (a condition's output)"},
        {"unknown_field", "nodes[3].output[7]",
         "nodes.w.output.at: nodes.w.output has only until (a delay's output)"},
        {"unknown_field", "nodes[3].output[8]",
         "nodes.p.output[0]: nodes.p.output is an object, not an array in the output of klaviyo "
         "upsert_profile"},
        {"not_upstream", "nodes[3].output[9]", "nodes.u.output: 'u' is not upstream of 'u'"},
        {"not_upstream", "nodes[3].output[10]", "nodes.zz: no node has the id 'zz'"},
        {"unknown_field", "nodes[3].output[11]",
         "nodes.p.status.x: nodes.p.status is a string, it has no fields"},
    };
    size_t expected = 0;
    for (size_t i = 0; i < HF_ARRAY_LEN(want); i++) {
        if (!want[i].message) {
            if (find_problem(&p, want[i].code, want[i].path)) {
                dump(&p);
                fail_msg("unexpected %s at %s", want[i].code, want[i].path);
            }
            continue;
        }
        expected++;
        bool ok = false;
        for (size_t k = 0; k < p.n; k++)
            ok |= strcmp(p.items[k].code, want[i].code) == 0 &&
                  strcmp(p.items[k].path, want[i].path) == 0 &&
                  strcmp(p.items[k].message, want[i].message) == 0;
        if (!ok) {
            dump(&p);
            fail_msg("missing %s %s: %s", want[i].code, want[i].path, want[i].message);
        }
    }
    if (p.n != expected)
        dump(&p);
    assert_int_equal(p.n, expected);
    wf_problems_free(&p);
}

static void test_validate_params(void **state)
{
    (void)state;
    static const char json[] =
        "{\"name\": \"p\", \"trigger\": {\"connector\": \"xero\", \"event\": "
        "\"payments.applied\"},\n"
        " \"nodes\": [\n"
        "  {\"id\": \"inv\", \"type\": \"action\", \"connector\": \"xero\", \"action\": "
        "\"create_invoice\", \"params\": {\"contact_id\": \"{{event.payload.resourceId}}\",\n"
        "    \"line_items\": \"{{event.payload.eventType}} x\", \"status\": \"SENT\"}},\n"
        "  {\"id\": \"pay\", \"type\": \"action\", \"connector\": \"xero\", \"action\": "
        "\"create_payment\", \"params\": {\"invoice_id\": \"{{nodes.inv.output.invoice_id}}\",\n"
        "    \"account_code\": null, \"amount\": \"{{nodes.inv.output.total}}\", \"date\": [],\n"
        "    \"reference\": \"Paid {{nodes.inv.output.total}}\"}},\n"
        "  {\"id\": \"sr\", \"type\": \"action\", \"connector\": \"quickbooks\", \"action\": "
        "\"create_sales_receipt\", \"params\": {\"lines\": [{\"amount\": 1}], "
        "\"customer_id\": 5, \"txn_date\": \"{{ event.payload.eventDateUtc }}\"}},\n"
        "  {\"id\": \"ev\", \"type\": \"action\", \"connector\": \"klaviyo\", \"action\": "
        "\"create_event\", \"params\": {\"metric_name\": \"x\", \"value\": \"12\", "
        "\"properties\": {\"a\": 1}}},\n"
        "  {\"id\": \"ev2\", \"type\": \"action\", \"connector\": \"klaviyo\", \"action\": "
        "\"create_event\", \"params\": {\"metric_name\": \"x\", \"value\": 12.5, "
        "\"properties\": []}}],\n"
        " \"edges\": [{\"from\": \"inv\", \"to\": \"pay\"}]}";
    wf_problems p;
    validate(json, &p);
    assert_string_equal(expect_problem(&p, "param_type", "nodes[0].params.line_items"),
                        "must be an array, not text (the template interpolates into a string)");
    assert_string_equal(expect_problem(&p, "param_type", "nodes[0].params.status"),
                        "must be one of DRAFT, SUBMITTED, AUTHORISED");
    assert_null(find_problem(&p, "param_type", "nodes[0].params.contact_id"));
    assert_string_equal(expect_problem(&p, "param_type", "nodes[1].params.account_code"),
                        "must be a string, not null");
    assert_null(find_problem(&p, "missing_param", "nodes[1].params.account_code"));
    assert_null(find_problem(&p, "param_type", "nodes[1].params.amount")); /* exact: run time */
    assert_string_equal(expect_problem(&p, "param_type", "nodes[1].params.date"),
                        "must be a string, not an array");
    assert_null(find_problem(&p, "param_type", "nodes[1].params.reference"));
    assert_null(find_problem(&p, "param_type", "nodes[2].params.lines"));
    assert_string_equal(expect_problem(&p, "param_type", "nodes[2].params.customer_id"),
                        "must be a string, not a number");
    assert_string_equal(expect_problem(&p, "param_type", "nodes[3].params.value"),
                        "must be a number, not a string");
    assert_null(find_problem(&p, "param_type", "nodes[4].params.value"));
    assert_string_equal(expect_problem(&p, "param_type", "nodes[4].params.properties"),
                        "must be an object, not an array");
    /* defaults make an input optional: xero create_invoice type/status have defaults */
    assert_null(find_problem(&p, "missing_param", "nodes[0].params.type"));
    if (p.n != 7)
        dump(&p);
    assert_int_equal(p.n, 7);
    wf_problems_free(&p);
}

static void test_validate_metadata(void **state)
{
    (void)state;
    char *json = replace_once(late_driver, "\"simulatable\": true",
                              "\"simulatable\": false, \"summary\": \"old\", "
                              "\"inputs\": [], \"extra\": 1, \"sim\": true");
    char *json2 = replace_once(json, "\"availability\": \"Beta\"",
                               "\"availability\": \"GA\", \"name\": \"Meta Messenger\"");
    wf_problems p;
    validate(json2, &p);
    expect_problem(&p, "stale_metadata", "nodes[1].metadata.simulatable");
    expect_problem(&p, "stale_metadata", "nodes[1].metadata.summary");
    assert_string_equal(expect_problem(&p, "stale_metadata", "nodes[1].metadata.inputs"),
                        "differs from the catalog's meta send_message inputs");
    assert_string_equal(
        expect_problem(&p, "stale_metadata", "nodes[1].metadata.connector.availability"),
        "differs from the catalog's meta availability");
    if (p.n != 4)
        dump(&p);
    assert_int_equal(p.n, 4); /* extra, sim and connector.name (equal) are fine */
    wf_problems_free(&p);
    free(json);
    free(json2);

    json =
        replace_once(late_driver, "\"connector\": {\"id\": \"meta\", \"availability\": \"Beta\"}",
                     "\"connector\": \"twilio\"");
    validate(json, &p);
    assert_string_equal(expect_problem(&p, "stale_metadata", "nodes[1].metadata.connector"),
                        "names connector 'twilio' but the node uses 'meta'");
    assert_int_equal(p.n, 1);
    wf_problems_free(&p);
    free(json);
}

static void test_unreachable(void **state)
{
    (void)state;
    static const char tmpl[] =
        "{\"name\": \"u\", \"trigger\": {\"connector\": \"twilio\", \"event\": "
        "\"message.received\"%s},"
        " \"nodes\": [{\"id\": \"c\", \"type\": \"condition\", \"if\": \"%s\"},"
        " {\"id\": \"yes\", \"type\": \"delay\", \"delay_ms\": 1},"
        " {\"id\": \"no\", \"type\": \"delay\", \"delay_ms\": 1},"
        " {\"id\": \"after_yes\", \"type\": \"delay\", \"delay_ms\": 1},"
        " {\"id\": \"join\", \"type\": \"delay\", \"delay_ms\": 1}],"
        " \"edges\": [{\"from\": \"c\", \"to\": \"yes\", \"when\": true},"
        " {\"from\": \"c\", \"to\": \"no\", \"when\": false},"
        " {\"from\": \"yes\", \"to\": \"after_yes\"},"
        " {\"from\": \"yes\", \"to\": \"join\"}, {\"from\": \"no\", \"to\": \"join\"}]}";
    char json[2048];
    wf_problems p;

    /* A condition that reads the event can go either way. */
    snprintf(json, sizeof json, tmpl, "", "event.payload.Body contains 'x'");
    expect_clean(json);

    /* Always false: the true branch and what only follows it never run; join still can. */
    snprintf(json, sizeof json, tmpl, "", "1 == 2");
    validate(json, &p);
    assert_string_equal(expect_problem(&p, "unreachable", "nodes[1]"),
                        "'yes' never runs: condition 'c' is always false, so its when:true "
                        "branch is never taken");
    assert_string_equal(expect_problem(&p, "unreachable", "nodes[3]"),
                        "'after_yes' never runs: no root leads to it through edges that can be "
                        "taken");
    assert_int_equal(p.n, 2);
    wf_problems_free(&p);

    /* Always true (any truthy constant): the false branch is dead. */
    snprintf(json, sizeof json, tmpl, "", "'yes' in ['yes', 'no']");
    validate(json, &p);
    assert_string_equal(expect_problem(&p, "unreachable", "nodes[2]"),
                        "'no' never runs: condition 'c' is always true, so its when:false "
                        "branch is never taken");
    assert_int_equal(p.n, 1);
    wf_problems_free(&p);

    /* A filter that is always false makes the workflow dead. */
    snprintf(json, sizeof json, tmpl, ", \"filter\": \"null\"", "event.payload.Body == 'x'");
    validate(json, &p);
    assert_string_equal(expect_problem(&p, "unreachable", "trigger.filter"),
                        "the filter is always false, so the workflow never runs");
    assert_int_equal(p.n, 1);
    wf_problems_free(&p);
    snprintf(json, sizeof json, tmpl, ", \"filter\": \"not false\"", "event.payload.Body == 'x'");
    expect_clean(json);
}

static void test_validate_robustness(void **state)
{
    (void)state;
    wf_problems p = {0};
    wf_validate("{", 1, cat, &p);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.items[0].code, "schema");
    assert_string_equal(p.items[0].path, "");
    wf_problems_free(&p);

    wf_validate("\"x\"", 3, cat, &p);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.items[0].message, "a workflow definition must be a JSON object");
    wf_problems_free(&p);

    /* Without a catalog, catalog checks are skipped. */
    wf_validate(design_example, strlen(design_example), NULL, &p);
    assert_int_equal(p.n, 0);
    wf_problems_free(&p);

    /* Problems stop at WF_MAX_PROBLEMS, the last saying so. */
    hf_buf j = {0};
    hf_buf_puts(&j, "{\"name\": \"x\", \"trigger\": {\"connector\": \"meta\", \"event\": "
                    "\"message\"}, \"nodes\": [{\"id\": \"a\", \"type\": \"delay\", "
                    "\"delay_ms\": 1");
    for (int i = 0; i < 300; i++)
        hf_buf_printf(&j, ", \"x%d\": 1", i);
    hf_buf_puts(&j, "}]}");
    wf_validate(j.data, j.len, cat, &p);
    assert_int_equal(p.n, WF_MAX_PROBLEMS);
    assert_string_equal(p.items[WF_MAX_PROBLEMS - 2].path, "nodes[0].x198");
    assert_string_equal(p.items[WF_MAX_PROBLEMS - 1].message,
                        "more than 199 problems; the rest are not listed");
    wf_problems_free(&p);
    hf_buf_free(&j);

    /* Every structural problem at once, with the same messages wf_parse gives. */
    static const char broken[] =
        "{\"name\": 1, \"trigger\": {\"connector\": \"x\"}, \"nodes\": [{\"id\": \"a\","
        " \"type\": \"action\"}, {\"id\": \"a\", \"type\": \"delay\"}],"
        " \"edges\": [{\"from\": \"a\", \"to\": \"q\"}]}";
    wf_validate(broken, strlen(broken), cat, &p);
    expect_problem(&p, "schema", "name");
    expect_problem(&p, "schema", "trigger.event");
    expect_problem(&p, "schema", "nodes[0].connector");
    expect_problem(&p, "schema", "nodes[0].action");
    expect_problem(&p, "schema", "nodes[1].id");
    expect_problem(&p, "schema", "nodes[1]");
    expect_problem(&p, "schema", "edges[0].to");
    expect_problem(&p, "unknown_connector", "trigger.connector");
    wf_problems_free(&p);
}

/* A member repeated inside params, output, metadata or ui is refused, at its path. */
static void test_duplicate_member_in_free_form_json(void **state)
{
    (void)state;
    /* schemas/workflow.schema.json: "wf_parse checks ... no object member appears twice". */
    static const struct {
        const char *from, *to, *path;
    } cases[] = {
        {"\"params\": {\"to\": \"{{event.payload.From}}\"}",
         "\"params\": {\"to\": \"{{event.payload.From}}\", \"to\": \"+14155550123\"}",
         "nodes[2].params.to"},
        {"\"output\": {\"x\": 1}", "\"output\": {\"x\": 1, \"x\": 2}", "nodes[0].output.x"},
        {"\"output\": {\"x\": 1}",
         "\"output\": {\"x\": 1}, \"metadata\": {\"id\": \"a\", \"id\": "
         "\"b\"}",
         "nodes[0].metadata.id"},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        char *json = replace_once(base, cases[i].from, cases[i].to);
        char err[512] = "";
        wf_def *d = wf_parse(json, strlen(json), err, sizeof err);
        if (d) {
            wf_free(d);
            fail_msg("parsed, want a duplicate member error at %s:\n%s", cases[i].path, json);
        }
        if (!strstr(err, cases[i].path) || !strstr(err, "duplicate"))
            fail_msg("error '%s', want a duplicate member error at %s", err, cases[i].path);
        free(json);
    }
}

/* retry.initial_ms above the default max_ms is refused, as max_ms below the default initial_ms. */
static void test_retry_initial_above_default_max(void **state)
{
    (void)state;
    /* docs/workflows.md: retry max_ms defaults to 60000 and "max_ms >= initial_ms"; the mirror
     * case ({"max_ms": 500} against the default initial_ms 1000) is already refused. */
    char *json = replace_once(base, "\"output\": {\"x\": 1}",
                              "\"output\": 1, \"retry\": {\"initial_ms\": 120000}");
    char err[512] = "";
    wf_def *d = wf_parse(json, strlen(json), err, sizeof err);
    if (d) {
        const wf_retry *r = &d->nodes[0].retry;
        long long initial = r->initial_ms, max = r->max_ms;
        wf_free(d);
        free(json);
        if (max < initial)
            fail_msg("parsed with max_ms %lld < initial_ms %lld", max, initial);
        return;
    }
    assert_non_null(strstr(err, "nodes[0].retry"));
    free(json);
}

/* Integers spelled 5.0 or 1e3 are integers, as for the JSON Schema. */
static void test_integer_members_in_other_spellings(void **state)
{
    (void)state;
    /* schemas/workflow.schema.json types max_attempts, delay_ms, timeout_ms as "integer", which
     * in draft 2020-12 is any number with a zero fractional part; wf_parse claims to check "the
     * same rules". */
    char *json = replace_once(base, "\"output\": {\"x\": 1}",
                              "\"output\": 1, \"retry\": {\"max_attempts\": 5.0}, "
                              "\"timeout_ms\": 1.5e4");
    char *json2 = replace_once(json, "\"delay_ms\": 5", "\"delay_ms\": 1e3");
    wf_def *d = parse_ok(json2);
    assert_int_equal(d->nodes[0].retry.max_attempts, 5);
    assert_int_equal(d->nodes[0].timeout_ms, 15000);
    assert_int_equal(d->nodes[3].delay_ms, 1000);
    wf_free(d);
    free(json);
    free(json2);
}

/* validate refuses an until literal that the executor's parser would refuse. */
static void test_until_literal_the_executor_refuses(void **state)
{
    (void)state;
    /* docs/workflows.md: validate reports `schema` for bounds; the executor (advance, WF_DELAY)
     * fails the node with "until is not an RFC 3339 time" when hf_parse_rfc3339 says no. */
    static const char *const literals[] = {"0999-12-31T09:00:00Z", "9999-12-31T23:30:00-01:00"};
    for (size_t i = 0; i < sizeof literals / sizeof *literals; i++) {
        int64_t ms;
        assert_false(hf_parse_rfc3339(literals[i], &ms)); /* what the executor runs */
        char *until = xasprintf("\"until\": \"%s\"", literals[i]);
        char *json = replace_once(base, "\"delay_ms\": 5", until);
        wf_problems p;
        validate(json, &p);
        expect_problem(&p, "schema", "nodes[3].until");
        wf_problems_free(&p);
        free(json);
        free(until);
    }
}

/* validate reports literal params the connector's build always refuses (param_rule). */
static void test_params_the_connector_always_refuses(void **state)
{
    (void)state;
    static const struct {
        const engine_connector *conn;
        const char *node;
        const char *params;
    } cases[] = {
        {&engine_connector_klaviyo,
         "{\"id\": \"ev\", \"type\": \"action\", \"connector\": \"klaviyo\", \"action\": "
         "\"create_event\", \"params\": ",
         "{\"metric_name\": \"Coupon issued\"}"},
        {&engine_connector_meta,
         "{\"id\": \"ev\", \"type\": \"action\", \"connector\": \"meta\", \"action\": "
         "\"send_message\", \"params\": ",
         "{\"recipient_id\": \"6523918047715832\", \"text\": \"hi\", \"messaging_type\": "
         "\"MESSAGE_TAG\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        /* The engine's own build (prepare_call) refuses these params whatever the event. */
        char err[256] = "";
        hf_json params = hf_json_parse(cases[i].params, strlen(cases[i].params), err, sizeof err);
        connector_conn cc = {.account = "acct", .access_token = "token"};
        connector_request req;
        const char *action = i == 0 ? "create_event" : "send_message";
        assert_int_equal(cases[i].conn->build(action, params, &cc, "http://127.0.0.1:9", "k", &req,
                                              err, sizeof err),
                         -1);
        hf_json_free(params);
        char *json =
            xasprintf("{\"name\": \"t\", \"trigger\": {\"connector\": \"hubspot\", \"event\": "
                      "\"contact.created\"}, \"nodes\": [%s%s}]}",
                      cases[i].node, cases[i].params);
        wf_problems p;
        validate(json, &p);
        bool found = false;
        for (size_t k = 0; k < p.n && !found; k++)
            found = strncmp(p.items[k].path, "nodes[0].params", 15) == 0;
        if (!found) {
            dump(&p);
            fail_msg("no problem under nodes[0].params, though the connector says: %s", err);
        }
        wf_problems_free(&p);
        free(json);
    }
}

/* Bounds of retry, timeout_ms and delay_ms at both ends (docs/workflows.md) that no
 * other test covers: the largest initial_ms/max_ms, multiplier 1, timeout_ms 100, delay_ms 0, and
 * one past each upper bound. */
static void test_retry_timeout_delay_bounds(void **state)
{
    (void)state;
    char *json =
        replace_once(base, "\"output\": {\"x\": 1}",
                     "\"output\": 1, \"timeout_ms\": 100, \"retry\": {\"max_attempts\": "
                     "1, \"initial_ms\": 3600000, \"max_ms\": 86400000, \"multiplier\": 1}");
    char *json2 = replace_once(json, "\"delay_ms\": 5", "\"delay_ms\": 0");
    wf_def *d = parse_ok(json2);
    assert_int_equal(d->nodes[0].timeout_ms, 100);
    assert_int_equal(d->nodes[0].retry.max_attempts, 1);
    assert_int_equal(d->nodes[0].retry.initial_ms, 3600000);
    assert_int_equal(d->nodes[0].retry.max_ms, 86400000);
    assert_true(d->nodes[0].retry.multiplier == 1.0);
    assert_int_equal(d->nodes[3].delay_ms, 0);
    wf_free(d);
    free(json);
    free(json2);
    expect_base_error("\"output\": {\"x\": 1}",
                      "\"output\": 1, \"retry\": {\"initial_ms\": 3600001, \"max_ms\": 86400000}",
                      "nodes[0].retry.initial_ms: must be an integer 0..3600000");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": 1, \"retry\": {\"max_ms\": 86400001}",
                      "nodes[0].retry.max_ms: must be an integer 0..86400000");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": 1, \"retry\": {\"multiplier\": 10.5}",
                      "nodes[0].retry.multiplier: must be a number 1..10");
    expect_base_error("\"output\": {\"x\": 1}", "\"output\": 1, \"retry\": {\"multiplier\": \"2\"}",
                      "nodes[0].retry.multiplier: must be a number 1..10");
}

/* until literals in other RFC 3339 spellings (docs/workflows.md): a fraction, an offset,
 * lower-case t/z and a leap-day date parse. */
static void test_until_literal_spellings(void **state)
{
    (void)state;
    static const char *const literals[] = {"2026-04-01T09:00:00.123+02:00", "2026-04-01t09:00:00z",
                                           "2024-02-29T00:00:00-05:30"};
    for (size_t i = 0; i < HF_ARRAY_LEN(literals); i++) {
        char *until = xasprintf("\"until\": \"%s\"", literals[i]);
        char *json = replace_once(base, "\"delay_ms\": 5", until);
        wf_def *d = parse_ok(json);
        assert_string_equal(hf_json_str(d->nodes[3].until), literals[i]);
        wf_free(d);
        free(json);
        free(until);
    }
}

/* A trigger filter that reads no path is judged by truthiness (docs/workflows.md):
 * 0 and '' are always false, '0' and [] always true. */
static void test_constant_filter_truthiness(void **state)
{
    (void)state;
    static const struct {
        const char *filter;
        bool dead;
    } cases[] = {{"0", true}, {"''", true}, {"'0'", false}, {"[]", false}};
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        char *filter =
            xasprintf("\"event\": \"message.received\", \"filter\": \"%s\"", cases[i].filter);
        char *json = replace_once(base, "\"event\": \"message.received\"", filter);
        wf_problems p;
        validate(json, &p);
        bool dead = find_problem(&p, "unreachable", "trigger.filter") != NULL;
        if (dead != cases[i].dead) {
            dump(&p);
            fail_msg("filter %s: unreachable %s, want %s", cases[i].filter, dead ? "yes" : "no",
                     cases[i].dead ? "yes" : "no");
        }
        wf_problems_free(&p);
        free(json);
        free(filter);
    }
}

/* "A trigger filter may not read nodes at all" (docs/workflows.md, not_upstream): the root
 * `nodes` itself ("exists nodes", "nodes == null") included. */
static void test_trigger_filter_reading_nodes_root(void **state)
{
    (void)state;
    static const char *const filters[] = {"exists nodes", "nodes == null"};
    for (size_t i = 0; i < HF_ARRAY_LEN(filters); i++) {
        char *filter = xasprintf("\"event\": \"message.received\", \"filter\": \"%s\"", filters[i]);
        char *json = replace_once(base, "\"event\": \"message.received\"", filter);
        wf_problems p;
        validate(json, &p);
        if (!find_problem(&p, "not_upstream", "trigger.filter")) {
            dump(&p);
            fail_msg("filter '%s' reads nodes, but no not_upstream problem", filters[i]);
        }
        wf_problems_free(&p);
        free(json);
        free(filter);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_design_example),
        cmocka_unit_test(test_node_types_and_defaults),
        cmocka_unit_test(test_structural_errors),
        cmocka_unit_test(test_size_limits),
        cmocka_unit_test(test_cycles),
        cmocka_unit_test(test_topo_order),
        cmocka_unit_test(test_docs_examples),
        cmocka_unit_test(test_examples_validate),
        cmocka_unit_test(test_schema_file),
        cmocka_unit_test(test_validate_every_code),
        cmocka_unit_test(test_validate_fields),
        cmocka_unit_test(test_validate_params),
        cmocka_unit_test(test_validate_metadata),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_validate_robustness),
        cmocka_unit_test(test_duplicate_member_in_free_form_json),
        cmocka_unit_test(test_retry_initial_above_default_max),
        cmocka_unit_test(test_integer_members_in_other_spellings),
        cmocka_unit_test(test_until_literal_the_executor_refuses),
        cmocka_unit_test(test_params_the_connector_always_refuses),
        cmocka_unit_test(test_retry_timeout_delay_bounds),
        cmocka_unit_test(test_until_literal_spellings),
        cmocka_unit_test(test_constant_filter_truthiness),
        cmocka_unit_test(test_trigger_filter_reading_nodes_root),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
