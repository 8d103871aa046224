/* test_db_apply: engine_apply / engine_apply_in against real PostgreSQL (fixture unit_pg): the
 * rows a document creates, idempotence, versions, dry runs, errors that name the culprit and
 * change nothing, tokens that are stored only sealed and never shown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "apply.h"
#include "catalog.h"
#include "log.h"
#include "pg_fixture.h"
#include "tokens.h"
#include "util.h"

static const unsigned char token_key[ENGINE_TOKEN_KEY_LEN] = {
    0x3a, 0x51, 0x0c, 0x9e, 0x77, 0x12, 0xd4, 0x6b, 0x08, 0xf1, 0x2e, 0x93, 0x5c, 0xa0, 0x47, 0x19,
    0xbe, 0x64, 0x2d, 0x80, 0x0f, 0xc3, 0x75, 0xe9, 0x31, 0x4a, 0xd6, 0x18, 0x6f, 0x92, 0x05, 0xcb};

/* Secret-looking tokens: neither may ever show in err, a summary or the audit log. */
#define ACCESS_TOKEN "sk_live_51HqLyjWDarjtT1zdp7dcXpmRvOQ4xK9sAccessToken"
#define REFRESH_TOKEN "rt_live_9f8e7d6c5b4a3210ZyXwVuTsRqPoNmRefreshToken"

#define FIRST_SUMMARY                                                                              \
    "acme: tenant created, 1 branch created, 1 role granted, 1 support approval granted, 1 "       \
    "connection created, 1 workflow created (version 1)\n"
#define DRY_RUN_LINE "dry run: rolled back, nothing was changed\n"

/* Every table apply writes to. */
static const char *const tables[] = {"tenants",           "branches",    "role_mappings",
                                     "support_approvals", "connections", "workflows",
                                     "workflow_versions", "audit_log"};

static hf_catalog *cat;
static engine_keyring *keys;

static int setup(void **state)
{
    (void)state;
    const char *src = getenv("HOOKFLOW_SOURCE_DIR");
    char *dir = xasprintf("%s/schemas/catalog", src ? src : HOOKFLOW_SOURCE_DIR);
    char err[512] = "";
    cat = hf_catalog_load(dir, err, sizeof err);
    free(dir);
    if (!cat) {
        fprintf(stderr, "catalog: %s\n", err);
        return -1;
    }
    keys = engine_keyring_from_raw(token_key);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    engine_keyring_free(keys);
    hf_catalog_free(cat);
    hf_log_forget_secrets(); /* apply registered the tokens for redaction */
    return 0;
}

/* ---- documents ------------------------------------------------------------------------------- */

/* The JSON written with ' for " (the documents here hold no apostrophe), so it reads as JSON
 * does; positions are unchanged, which the line/column test relies on. Caller frees. */
static char *json_of(const char *text)
{
    char *json = xstrdup(text);
    for (char *c = json; *c; c++)
        if (*c == '\'')
            *c = '"';
    return json;
}

/* A workflow triggered by a Meta message that texts through Twilio's action `action`. */
static char *workflow(const char *name, const char *action, const char *body)
{
    return xasprintf("{'name': '%s', 'enabled': true, 'definition': {'name': '%s', "
                     "'trigger': {'connector': 'meta', 'event': 'message'}, "
                     "'nodes': [{'id': 'notify_staff', 'type': 'action', 'connector': 'twilio', "
                     "'action': '%s', 'params': {'to': '+14155550100', 'from': '+14155559876', "
                     "'body': '%s'}}], 'edges': []}}",
                     name, name, action, body);
}

/* A connection with both tokens set; extra adds members (", 'expires_at': ..."). */
static char *connection(const char *connector, const char *account, const char *extra)
{
    return xasprintf(
        "{'connector': '%s', 'account': '%s', 'scopes': ['crm.objects.contacts.read'], "
        "'access_token': '" ACCESS_TOKEN "', 'refresh_token': '" REFRESH_TOKEN "'%s}",
        connector, account, extra);
}

/* A tenant with branch main (alice admin), a support approval for meta, and the given
 * connections and workflows (JSON array contents). */
static char *tenant(const char *slug, const char *name, const char *connections,
                    const char *workflows)
{
    return xasprintf("{'slug': '%s', 'name': '%s', "
                     "'branches': [{'branch': 'main', 'name': 'Main street', "
                     "'roles': [{'subject': 'alice@example.com', 'role': 'admin'}]}], "
                     "'support_approvals': [{'connector': 'meta', "
                     "'approved_by': 'support@hookflow.dev'}], "
                     "'connections': [%s], 'workflows': [%s]}",
                     slug, name, connections, workflows);
}

/* {"tenants": [first, second]} as real JSON; second may be NULL. Caller frees. */
static char *document(const char *first, const char *second)
{
    char *text =
        xasprintf("{'tenants': [%s%s%s]}", first, second ? ", " : "", second ? second : "");
    char *json = json_of(text);
    free(text);
    return json;
}

/* The reference document: tenant acme with hubspot account 33 and workflow "Pickup
 * confirmation" whose message body is body. */
static char *acme(const char *name, const char *body)
{
    char *conn = connection("hubspot", "33", "");
    char *wf = workflow("Pickup confirmation", "send_message", body);
    char *t = tenant("acme", name, conn, wf);
    char *doc = document(t, NULL);
    free(t);
    free(wf);
    free(conn);
    return doc;
}

/* ---- database helpers ------------------------------------------------------------------------ */

static PGconn *fresh(const char *name)
{
    char *url = pgf_database(name);
    PGconn *db = pgf_connect(url);
    free(url);
    return db;
}

/* Asserts that the first value of sql is want ("<null>" for SQL NULL or no row). */
static void assert_sql(PGconn *db, const char *sql, const char *want)
{
    char *got = pgf_value(db, sql);
    assert_string_equal(got ? got : "<null>", want);
    free(got);
}

/* Every row of every table apply writes, as sorted JSON text: equal snapshots mean nothing
 * changed, timestamps and ciphertexts included. Caller frees. */
static char *snapshot(PGconn *db)
{
    hf_buf all = {0};
    for (size_t i = 0; i < HF_ARRAY_LEN(tables); i++) {
        char *sql = xconcat("SELECT coalesce(string_agg(to_jsonb(x)::text, E'\\n' ORDER BY "
                            "to_jsonb(x)::text), '') FROM ",
                            tables[i], " x", NULL);
        char *rows = pgf_value(db, sql);
        hf_buf_printf(&all, "%s:\n%s\n", tables[i], rows);
        free(rows);
        free(sql);
    }
    return hf_buf_steal(&all);
}

/* The stored bytes of connections.<column> for the hubspot account, NULL for SQL NULL. */
static unsigned char *stored_token(PGconn *db, const char *column, const char *account, size_t *len)
{
    char *sql = xconcat("SELECT ", column,
                        " FROM connections WHERE connector = 'hubspot' AND "
                        "account = $1",
                        NULL);
    const char *params[] = {account};
    PGresult *res = PQexecParams(db, sql, 1, NULL, params, NULL, NULL, 1 /* binary */);
    free(sql);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(res), 1);
    unsigned char *bytes = NULL;
    *len = 0;
    if (!PQgetisnull(res, 0, 0)) {
        *len = (size_t)PQgetlength(res, 0, 0);
        bytes = xmalloc(*len + 1);
        memcpy(bytes, PQgetvalue(res, 0, 0), *len);
    }
    PQclear(res);
    return bytes;
}

/* True if needle occurs in the n bytes at hay. */
static bool contains(const unsigned char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return true;
    return false;
}

/* Asserts that the slot holds token sealed for hubspot:<account>:<slot> under keys. */
static void assert_sealed(PGconn *db, const char *account, const char *slot, const char *token)
{
    char *column = xconcat(slot, "_token_enc", NULL);
    size_t len = 0;
    unsigned char *sealed = stored_token(db, column, account, &len);
    free(column);
    assert_non_null(sealed);
    assert_int_equal(len, strlen(token) + ENGINE_TOKEN_OVERHEAD);
    assert_false(contains(sealed, len, token));
    assert_false(contains(sealed, len, "live_"));

    char *context = engine_token_context("hubspot", account, slot);
    char *plain = engine_token_open(keys, context, sealed, len);
    assert_non_null(plain);
    assert_string_equal(plain, token);
    free(plain);
    free(context);
    /* Bound to its slot: the other slot's context does not open it. */
    context = engine_token_context("hubspot", account,
                                   strcmp(slot, "access") == 0 ? "refresh" : "access");
    assert_null(engine_token_open(keys, context, sealed, len));
    free(context);
    free(sealed);
}

/* engine_apply of the NUL-terminated json. */
static int apply(PGconn *db, const char *json, const engine_keyring *k, bool dry_run,
                 hf_buf *summary, char *err, size_t errlen)
{
    return engine_apply(db, json, strlen(json), k, cat, dry_run, summary, err, errlen);
}

/* Applies json, which must succeed, and asserts its summary is want. */
static void apply_ok(PGconn *db, const char *json, bool dry_run, const char *want)
{
    hf_buf summary = {0};
    char err[1024] = "";
    int rc = apply(db, json, keys, dry_run, &summary, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "apply failed: %s\n", err);
    assert_int_equal(rc, 0);
    assert_string_equal(summary.data ? summary.data : "", want);
    assert_int_equal(PQtransactionStatus(db), PQTRANS_IDLE);
    hf_buf_free(&summary);
}

/* Applies json, which must fail, with err starting with want and summary left empty; asserts
 * that nothing in the database changed and that no token shows in err. */
static void apply_fails(PGconn *db, const char *json, const engine_keyring *k, const char *want)
{
    char *before = snapshot(db);
    hf_buf summary = {0};
    char err[1024] = "";
    assert_int_equal(apply(db, json, k, false, &summary, err, sizeof err), -1);
    if (strncmp(err, want, strlen(want)) != 0)
        fprintf(stderr, "err: %s\nwant: %s...\n", err, want);
    assert_true(strncmp(err, want, strlen(want)) == 0);
    assert_null(strchr(err, '\n'));
    assert_null(strstr(err, ACCESS_TOKEN));
    assert_null(strstr(err, REFRESH_TOKEN));
    assert_int_equal(summary.len, 0);
    assert_int_equal(PQtransactionStatus(db), PQTRANS_IDLE);
    char *after = snapshot(db);
    assert_string_equal(after, before);
    free(after);
    free(before);
    hf_buf_free(&summary);
}

/* ---- tests ----------------------------------------------------------------------------------- */

/* One document creates exactly its rows, says so per tenant, seals the tokens and audits every
 * change as "apply". */
static void document_creates_exactly_its_rows(void **state)
{
    (void)state;
    PGconn *db = fresh("unit_apply_rows");
    char *doc = acme("Acme Laundry", "Pickup request");
    apply_ok(db, doc, false, FIRST_SUMMARY);

    assert_sql(db, "SELECT string_agg(slug || '|' || name || '|' || environment, ',') FROM tenants",
               "acme|Acme Laundry|production");
    assert_sql(db, "SELECT string_agg(branch || '|' || name, ',') FROM branches",
               "main|Main street");
    assert_sql(db,
               "SELECT string_agg(branch || '|' || subject || '|' || role, ',') "
               "FROM role_mappings",
               "main|alice@example.com|admin");
    assert_sql(db, "SELECT string_agg(connector || '|' || approved_by, ',') FROM support_approvals",
               "meta|support@hookflow.dev");
    assert_sql(db,
               "SELECT string_agg(connector || '|' || account || '|' || status || '|' || "
               "array_to_string(granted_scopes, ' ') || '|' || token_version, ',') "
               "FROM connections",
               "hubspot|33|active|crm.objects.contacts.read|0");
    assert_sql(db,
               "SELECT string_agg(name || '|' || enabled || '|' || current_version || '|' || "
               "trigger_connector || '|' || trigger_event, ',') FROM workflows",
               "Pickup confirmation|true|1|meta|message");
    assert_sql(db,
               "SELECT string_agg(version || '|' || created_by || '|' || "
               "(definition->'nodes'->0->'params'->>'body'), ',') FROM workflow_versions",
               "1|apply|Pickup request");
    /* Every row belongs to the one tenant. */
    assert_sql(db,
               "SELECT count(*) FROM (SELECT tenant_id FROM branches UNION ALL SELECT tenant_id "
               "FROM role_mappings UNION ALL SELECT tenant_id FROM support_approvals UNION ALL "
               "SELECT tenant_id FROM connections UNION ALL SELECT tenant_id FROM workflows) r "
               "WHERE tenant_id = (SELECT id FROM tenants WHERE slug = 'acme')",
               "5");

    assert_sealed(db, "33", "access", ACCESS_TOKEN);
    assert_sealed(db, "33", "refresh", REFRESH_TOKEN);

    assert_sql(db, "SELECT string_agg(actor || ':' || action, ',' ORDER BY id) FROM audit_log",
               "apply:tenant.created,apply:branch.created,apply:role.granted,"
               "apply:support_approval.granted,apply:connection.created,apply:workflow.created");
    assert_sql(db,
               "SELECT count(*) FROM audit_log WHERE strpos(detail::text, '" ACCESS_TOKEN "') > 0 "
               "OR strpos(detail::text, '" REFRESH_TOKEN
               "') > 0 OR strpos(detail::text, 'live_') > 0",
               "0");
    free(doc);
    PQfinish(db);
}

/* The same document again changes no row, version, ciphertext or audit entry. */
static void second_apply_changes_nothing(void **state)
{
    (void)state;
    PGconn *db = fresh("unit_apply_twice");
    char *doc = acme("Acme Laundry", "Pickup request");
    apply_ok(db, doc, false, FIRST_SUMMARY);
    char *before = snapshot(db);
    apply_ok(db, doc, false, "acme: no changes\n");
    char *after = snapshot(db);
    assert_string_equal(after, before);
    assert_sql(db, "SELECT count(*) FROM workflow_versions", "1");
    assert_sql(db, "SELECT count(*) FROM audit_log", "6");
    free(after);
    free(before);
    free(doc);
    PQfinish(db);
}

/* A changed definition becomes version 2 and current; the unchanged workflow keeps version 1. */
static void changed_definition_makes_a_new_version(void **state)
{
    (void)state;
    PGconn *db = fresh("unit_apply_versions");
    char *conn = connection("hubspot", "33", "");
    char *pickup = workflow("Pickup", "send_message", "first body");
    char *dropoff = workflow("Dropoff", "send_message", "dropoff body");
    char *changed = workflow("Pickup", "send_message", "second body");
    char *workflows = xconcat(pickup, ", ", dropoff, NULL);
    char *changed_workflows = xconcat(changed, ", ", dropoff, NULL);
    char *t1 = tenant("acme", "Acme Laundry", conn, workflows);
    char *t2 = tenant("acme", "Acme Laundry", conn, changed_workflows);
    char *doc1 = document(t1, NULL), *doc2 = document(t2, NULL);

    apply_ok(db, doc1, false,
             "acme: tenant created, 1 branch created, 1 role granted, 1 support approval granted, "
             "1 connection created, 2 workflows created (version 1)\n");
    apply_ok(db, doc2, false, "acme: 1 workflow updated (version 2)\n");

    assert_sql(db,
               "SELECT string_agg(name || '|' || current_version, ',' ORDER BY name) "
               "FROM workflows",
               "Dropoff|1,Pickup|2");
    assert_sql(db,
               "SELECT string_agg(w.name || '|' || v.version || '|' || v.created_by || '|' || "
               "(v.definition->'nodes'->0->'params'->>'body'), ',' ORDER BY w.name, v.version) "
               "FROM workflow_versions v JOIN workflows w ON w.id = v.workflow_id",
               "Dropoff|1|apply|dropoff body,Pickup|1|apply|first body,"
               "Pickup|2|apply|second body");
    assert_sql(db,
               "SELECT string_agg(action || '|' || actor || '|' || (detail->>'version') || '|' || "
               "(detail->>'previous_version'), ',') FROM audit_log WHERE id > "
               "(SELECT max(id) FROM audit_log WHERE action = 'workflow.created')",
               "workflow.updated|apply|2|1");

    /* Applying the changed document again keeps version 2. */
    apply_ok(db, doc2, false, "acme: no changes\n");
    assert_sql(db, "SELECT count(*) FROM workflow_versions", "3");

    free(doc2);
    free(doc1);
    free(t2);
    free(t1);
    free(changed_workflows);
    free(workflows);
    free(changed);
    free(dropoff);
    free(pickup);
    free(conn);
    PQfinish(db);
}

typedef struct apply_call {
    PGconn *db;
    const char *json;
    hf_buf summary;
    char err[1024];
    int rc;
} apply_call;

static void *apply_main(void *arg)
{
    apply_call *a = arg;
    a->rc = apply(a->db, a->json, keys, false, &a->summary, a->err, sizeof a->err);
    return NULL;
}

/* An apply that waits for a workflow's lock behind an API change of the workflow (a new
 * version) saves the next version after it: it used to read the versions as they were before
 * that change and save the same version number again (a unique-key error, nothing applied). */
static void apply_waiting_behind_an_api_update_saves_the_next_version(void **state)
{
    (void)state;
    char *url = pgf_database("unit_apply_race");
    PGconn *db = pgf_connect(url), *api = pgf_connect(url), *watch = pgf_connect(url);
    free(url);
    char *conn = connection("hubspot", "33", "");
    char *first = workflow("Pickup", "send_message", "first body");
    char *third = workflow("Pickup", "send_message", "third body");
    char *t1 = tenant("acme", "Acme Laundry", conn, first);
    char *t3 = tenant("acme", "Acme Laundry", conn, third);
    char *doc1 = document(t1, NULL), *doc3 = document(t3, NULL);
    apply_ok(db, doc1, false,
             "acme: tenant created, 1 branch created, 1 role granted, 1 support approval granted, "
             "1 connection created, 1 workflow created (version 1)\n");

    /* The API saves version 2 and holds the row until it commits. */
    pgf_exec(api, "BEGIN");
    pgf_exec(api, "INSERT INTO workflow_versions (workflow_id, version, definition, created_by)"
                  " SELECT workflow_id, 2, jsonb_set(definition, '{nodes,0,params,body}',"
                  " '\"second body\"'), 'admin' FROM workflow_versions WHERE version = 1");
    pgf_exec(api, "UPDATE workflows SET current_version = 2");
    apply_call a = {.db = db, .json = doc3};
    pthread_t thread;
    pthread_create(&thread, NULL, apply_main, &a);
    int64_t deadline = hf_now_ms() + 10000;
    for (;;) {
        char *n = pgf_value(watch, "SELECT count(*) FROM pg_stat_activity WHERE datname ="
                                   " current_database() AND wait_event_type = 'Lock'");
        bool waiting = n && atoi(n) > 0;
        free(n);
        if (waiting)
            break;
        if (hf_now_ms() > deadline)
            fail_msg("apply never waited for the workflow's lock");
        usleep(10000);
    }
    pgf_exec(api, "COMMIT");
    pthread_join(thread, NULL);
    if (a.rc != 0)
        fprintf(stderr, "apply failed: %s\n", a.err);
    assert_int_equal(a.rc, 0);
    assert_string_equal(a.summary.data ? a.summary.data : "",
                        "acme: 1 workflow updated (version 3)\n");
    assert_sql(
        db,
        "SELECT string_agg(v.version || '|' || (v.definition->'nodes'->0->'params'->>'body'),"
        " ',' ORDER BY v.version) || ';' || max(w.current_version) "
        "FROM workflow_versions v JOIN workflows w ON w.id = v.workflow_id",
        "1|first body,2|second body,3|third body;3");

    hf_buf_free(&a.summary);
    free(doc3);
    free(doc1);
    free(t3);
    free(t1);
    free(third);
    free(first);
    free(conn);
    PQfinish(watch);
    PQfinish(api);
    PQfinish(db);
}

/* A dry run reports what it would change and leaves every table as it was. */
static void dry_run_changes_nothing(void **state)
{
    (void)state;
    PGconn *db = fresh("unit_apply_dry");
    char *doc = acme("Acme Laundry", "Pickup request");
    char *before = snapshot(db);
    apply_ok(db, doc, true, FIRST_SUMMARY DRY_RUN_LINE);
    char *after = snapshot(db);
    assert_string_equal(after, before);
    assert_sql(db, "SELECT count(*) FROM tenants", "0");
    free(after);
    free(before);

    apply_ok(db, doc, false, FIRST_SUMMARY);
    char *changed = acme("Acme Laundry Ltd", "Another body");
    before = snapshot(db);
    apply_ok(db, changed, true,
             "acme: tenant updated, 1 workflow updated (version 2)\n" DRY_RUN_LINE);
    after = snapshot(db);
    assert_string_equal(after, before);
    free(after);
    free(before);
    free(changed);
    free(doc);
    PQfinish(db);
}

/* Each broken document fails with the path of the culprit, changes nothing (the valid changes
 * before the culprit included) and never shows a token. */
static void broken_documents_change_nothing(void **state)
{
    (void)state;
    PGconn *db = fresh("unit_apply_broken");
    char *doc = acme("Acme Laundry", "Pickup request");
    apply_ok(db, doc, false, FIRST_SUMMARY);

    char *good_conn = connection("hubspot", "33", "");
    char *good_wf = workflow("Pickup confirmation", "send_message", "Pickup request");
    /* Renamed, so a partial apply of tenants[0] would show. */
    char *renamed = tenant("acme", "Renamed Laundry", good_conn, good_wf);

    char *shopfy = connection("shopfy", "33", "");
    char *fax = workflow("Pickup confirmation", "send_fax", "Pickup request");
    char *expiry = connection("hubspot", "77", ", 'expires_at': 'next tuesday'");
    char *taken = connection("hubspot", "33", "");
    char *other_conn = connection("hubspot", "44", "");
    char *t_shopfy = tenant("acme", "Renamed Laundry", shopfy, good_wf);
    char *t_fax = tenant("acme", "Renamed Laundry", good_conn, fax);
    /* The second tenant is new and valid up to its culprit. */
    char *t2_shopfy = tenant("bravo", "Bravo", shopfy, "");
    char *t2_expiry = tenant("bravo", "Bravo", expiry, "");
    char *t1_new = tenant("bravo", "Bravo", other_conn, good_wf);
    char *t2_taken = tenant("charlie", "Charlie", taken, "");

    char *unparsable_wf = json_of(
        "{'name': 'Broken', 'definition': {'name': 'Broken', 'trigger': {'connector': 'meta', "
        "'event': 'message'}, 'nodes': [{'id': 'wait', 'type': 'delay', 'delay_ms': 10}], "
        "'edges': [{'from': 'wait', 'to': 'nowhere'}]}}");
    char *t_unparsable = tenant("acme", "Renamed Laundry", good_conn, unparsable_wf);

    struct {
        char *json;
        const char *want;
    } cases[] = {
        {document(t_shopfy, NULL),
         "tenants[0].connections[0].connector: \"shopfy\" is not a catalog connector (one of "
         "xero, quickbooks, hubspot, klaviyo, twilio, meta)"},
        {document(t_fax, NULL),
         "tenants[0].workflows[0].definition.nodes[0].action: \"send_fax\" is not an action of "
         "twilio (one of send_message)"},
        {document(t_unparsable, NULL),
         "tenants[0].workflows[0].definition.edges[0].to: no node has the id 'nowhere'"},
        {document(renamed, t2_shopfy),
         "tenants[1].connections[0].connector: \"shopfy\" is not a catalog connector"},
        {document(renamed, t2_expiry),
         "tenants[1].connections[0].expires_at: must be an RFC 3339 time with an offset "
         "(2026-12-01T10:00:00Z), not \"next tuesday\""},
        /* Found only while writing, after tenants[0] was updated: rolled back. */
        {document(t1_new, t2_taken),
         "tenants[1].connections[0]: hubspot account 33 is already connected to tenant acme"},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        apply_fails(db, cases[i].json, keys, cases[i].want);
        free(cases[i].json);
    }

    free(t_unparsable);
    free(unparsable_wf);
    free(t2_taken);
    free(t1_new);
    free(t2_expiry);
    free(t2_shopfy);
    free(t_fax);
    free(t_shopfy);
    free(other_conn);
    free(taken);
    free(expiry);
    free(fax);
    free(shopfy);
    free(renamed);
    free(good_wf);
    free(good_conn);
    free(doc);
    PQfinish(db);
}

/* Malformed JSON is reported by the line and column where yajl stopped, even right after a
 * token, which stays out of the message. */
static void malformed_json_names_line_and_column(void **state)
{
    (void)state;
    PGconn *db = fresh("unit_apply_malformed");
    char *missing_value = json_of("{'tenants': [\n"
                                  "  {'slug': 'acme',\n"
                                  "   'name': }\n"
                                  "]}");
    apply_fails(db, missing_value, keys, "line 3, column 12: "); /* the '}' */
    char err[512] = "";
    assert_int_equal(apply(db, missing_value, keys, false, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, ": malformed JSON: parse error: "));
    /* Where the text ends too early: just past its last byte. */
    char *cut = json_of("{'tenants': [\n  {'slug': 'acme',\n");
    apply_fails(db, cut, keys, "line 3, column 1: malformed JSON: parse error: premature EOF");
    char *missing_comma =
        json_of("{'tenants': [{'slug': 'acme', 'name': 'Acme', 'connections': [\n"
                "  {'connector': 'hubspot', 'account': '33',\n"
                "   'access_token': '" ACCESS_TOKEN "' 'refresh_token': '" REFRESH_TOKEN "'}]}]}");
    /* yajl stops on the first letter of the string that should have followed a comma. */
    char where[64];
    snprintf(where, sizeof where,
             "line 3, column %zu: ", strlen("   'access_token': '" ACCESS_TOKEN "' '") + 1);
    apply_fails(db, missing_comma, keys, where);
    free(missing_comma);
    free(cut);
    free(missing_value);
    PQfinish(db);
}

/* Without a keyring a token is an error naming it; a document that sets no token needs none. */
static void tokens_need_a_key(void **state)
{
    (void)state;
    PGconn *db = fresh("unit_apply_nokey");
    char *doc = acme("Acme Laundry", "Pickup request");
    hf_buf summary = {0};
    char err[1024] = "";
    assert_int_equal(apply(db, doc, NULL, false, &summary, err, sizeof err), -1);
    assert_string_equal(err,
                        "tenants[0].connections[0].access_token: no token key to seal it with");
    assert_int_equal(summary.len, 0);
    assert_sql(db, "SELECT count(*) FROM tenants", "0");

    char *untokened =
        json_of("{'tenants': [{'slug': 'acme', 'name': 'Acme', 'connections': [{'connector': "
                "'hubspot', 'account': '33', 'access_token': null}]}]}");
    assert_int_equal(apply(db, untokened, NULL, false, &summary, err, sizeof err), 0);
    assert_string_equal(summary.data, "acme: tenant created, 1 connection created\n");
    assert_sql(
        db,
        "SELECT (access_token_enc IS NULL)::text || '|' || (refresh_token_enc IS NULL)::text "
        "FROM connections",
        "true|true");
    hf_buf_free(&summary);
    free(untokened);
    free(doc);
    PQfinish(db);
}

/* A relative {"file": ...} resolves against base_dir, not the current directory. */
static void token_files_resolve_against_base_dir(void **state)
{
    (void)state;
    PGconn *db = fresh("unit_apply_files");
    char base[] = "/tmp/hf_apply_XXXXXX";
    assert_non_null(mkdtemp(base));
    char *sub = xconcat(base, "/tokens", NULL);
    assert_int_equal(mkdir(sub, 0700), 0);
    char *file = xconcat(sub, "/access.txt", NULL);
    char werr[256] = "";
    static const char contents[] = ACCESS_TOKEN "\n";
    assert_int_equal(hf_write_file_atomic(file, contents, strlen(contents), werr, sizeof werr), 0);

    char *doc = json_of("{'tenants': [{'slug': 'acme', 'name': 'Acme', 'connections': "
                        "[{'connector': 'hubspot', 'account': '33', "
                        "'access_token': {'file': 'tokens/access.txt'}}]}]}");
    /* The current directory has no tokens/access.txt. */
    apply_fails(db, doc, keys,
                "tenants[0].connections[0].access_token.file: cannot open tokens/access.txt");

    hf_buf summary = {0};
    char err[1024] = "";
    int rc =
        engine_apply_in(db, doc, strlen(doc), base, keys, cat, false, &summary, err, sizeof err);
    if (rc != 0)
        fprintf(stderr, "apply failed: %s\n", err);
    assert_int_equal(rc, 0);
    assert_string_equal(summary.data, "acme: tenant created, 1 connection created\n");
    assert_null(strstr(summary.data, ACCESS_TOKEN));
    size_t len = 0;
    unsigned char *refresh = stored_token(db, "refresh_token_enc", "33", &len);
    assert_null(refresh);
    assert_sealed(db, "33", "access", ACCESS_TOKEN); /* the trailing newline is not the token */

    hf_buf_free(&summary);
    free(doc);
    assert_int_equal(unlink(file), 0);
    assert_int_equal(rmdir(sub), 0);
    assert_int_equal(rmdir(base), 0);
    free(file);
    free(sub);
    PQfinish(db);
}

/* apply opens its own transaction, so it refuses a connection that is inside one. */
static void open_transaction_is_refused(void **state)
{
    (void)state;
    PGconn *db = fresh("unit_apply_busy");
    char *doc = acme("Acme Laundry", "Pickup request");
    pgf_exec(db, "BEGIN");
    hf_buf summary = {0};
    char err[1024] = "";
    assert_int_equal(apply(db, doc, keys, false, &summary, err, sizeof err), -1);
    assert_string_equal(err, "the database connection is busy or inside a transaction");
    assert_int_equal(summary.len, 0);
    assert_int_equal(PQtransactionStatus(db), PQTRANS_INTRANS); /* the caller's, left alone */
    pgf_exec(db, "ROLLBACK");
    assert_sql(db, "SELECT count(*) FROM tenants", "0");
    free(doc);
    PQfinish(db);
}

/* connection.created names the connection by its id, as connection.updated does. */
static void connection_audit_rows_name_the_connection(void **state)
{
    (void)state;
    PGconn *db = fresh("unit_apply_audit_conn");
    char *doc = acme("Acme Laundry", "Pickup request");
    apply_ok(db, doc, false, FIRST_SUMMARY);
    /* A changed token: the connection.updated row of the same connection. */
    char *changed = json_of("{'tenants': [{'slug': 'acme', 'name': 'Acme Laundry', "
                            "'connections': [{'connector': 'hubspot', 'account': '33', "
                            "'access_token': 'another-access-token'}]}]}");
    apply_ok(db, changed, false, "acme: 1 connection updated\n");

    assert_sql(db,
               "SELECT string_agg(action || '|' || subject_type || '|' || "
               "(subject_id = (SELECT id::text FROM connections WHERE connector = 'hubspot' "
               "AND account = '33'))::text, ',' ORDER BY id) FROM audit_log "
               "WHERE action LIKE 'connection.%'",
               "connection.created|connection|true,connection.updated|connection|true");
    free(changed);
    free(doc);
    PQfinish(db);
}

/* expires_at is an RFC 3339 time (docs/apply.md), checked with the file before the database is
 * touched: PostgreSQL would also read 'now', 'tomorrow', a bare date or a time without offset
 * (in the server's zone), and 'now' would change the connection on every apply. */
static void expires_at_must_be_rfc3339(void **state)
{
    (void)state;
    PGconn *db = fresh("unit_apply_expiry_form");
    static const char *const not_rfc3339[] = {"now", "tomorrow", "2030-01-01",
                                              "2030-01-01 10:00:00", "Jan 8 2030"};
    for (size_t i = 0; i < HF_ARRAY_LEN(not_rfc3339); i++) {
        char *extra = xasprintf(", 'expires_at': '%s'", not_rfc3339[i]);
        char *conn = connection("hubspot", "33", extra);
        char *t = tenant("acme", "Acme Laundry", conn, "");
        char *doc = document(t, NULL);
        apply_fails(db, doc, keys, "tenants[0].connections[0].expires_at: ");
        free(doc);
        free(t);
        free(conn);
        free(extra);
    }
    PQfinish(db);
}

/* A member given twice in one object is refused like an unknown one (docs/apply.md: a typo must
 * not silently do nothing): otherwise the second value would be ignored, a whole second
 * "tenants" array, a second access_token, a second "enabled". */
static void duplicate_members_are_refused(void **state)
{
    (void)state;
    PGconn *db = fresh("unit_apply_dup_members");
    struct {
        const char *json, *want;
    } cases[] = {
        {"{'tenants': [{'slug': 'acme', 'name': 'Acme'}], "
         "'tenants': [{'slug': 'bravo', 'name': 'Bravo'}]}",
         "top level: member \"tenants\" is given twice"},
        {"{'tenants': [{'slug': 'acme', 'name': 'Acme', 'name': 'Acme Laundry'}]}", "tenants[0]"},
        {"{'tenants': [{'slug': 'acme', 'name': 'Acme', 'connections': [{'connector': "
         "'hubspot', 'account': '33', 'access_token': '" ACCESS_TOKEN "', "
         "'access_token': null}]}]}",
         "tenants[0].connections[0]"},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        char *json = json_of(cases[i].json);
        apply_fails(db, json, keys, cases[i].want);
        free(json);
    }
    char *wf = workflow("Pickup confirmation", "send_message", "Pickup request");
    /* ... 'enabled': true, 'definition': {...}, 'enabled': false} */
    char *twice = xasprintf("%.*s, 'enabled': false}", (int)strlen(wf) - 1, wf);
    char *t = tenant("acme", "Acme", "", twice);
    char *doc = document(t, NULL);
    apply_fails(db, doc, keys, "tenants[0].workflows[0]");
    free(doc);
    free(t);
    free(twice);
    free(wf);
    PQfinish(db);
}

/* True if s holds a control character (one that can move the cursor or recolour a terminal). */
static bool has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* "One clear line on error" (docs/apply.md): no control character from the file (a vertical
 * tab, a terminal escape) reaches the error line. */
static void error_lines_hold_no_control_characters(void **state)
{
    (void)state;
    PGconn *db = fresh("unit_apply_ctrl");
    char *twice = json_of("{'tenants': [{'slug': 'acme', 'name': 'Acme', 'connections': ["
                          "{'connector': 'hubspot', 'account': '7\\u000b\\u001b[31mfake'},"
                          "{'connector': 'hubspot', 'account': '7\\u000b\\u001b[31mfake'}]}]}");
    char err[1024] = "";
    assert_int_equal(apply(db, twice, keys, false, NULL, err, sizeof err), -1);
    assert_true(strncmp(err, "tenants[0].connections[", 23) == 0);
    if (has_control(err))
        fprintf(stderr, "err holds control characters: %s\n", err);
    assert_false(has_control(err));

    /* The same account already held by another tenant (written directly). */
    pgf_exec(db, "INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')");
    pgf_exec(db, "INSERT INTO connections (tenant_id, connector, account, status) SELECT id, "
                 "'hubspot', E'7\\x0b\\x1b[31mfake', 'active' FROM tenants WHERE slug = 'acme'");
    char *bravo = json_of("{'tenants': [{'slug': 'bravo', 'name': 'Bravo', 'connections': "
                          "[{'connector': 'hubspot', 'account': '7\\u000b\\u001b[31mfake'}]}]}");
    assert_int_equal(apply(db, bravo, keys, false, NULL, err, sizeof err), -1);
    assert_true(strncmp(err, "tenants[0].connections[0]", 25) == 0);
    if (has_control(err))
        fprintf(stderr, "err holds control characters: %s\n", err);
    assert_false(has_control(err));
    free(bravo);
    free(twice);
    PQfinish(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(document_creates_exactly_its_rows),
        cmocka_unit_test(second_apply_changes_nothing),
        cmocka_unit_test(changed_definition_makes_a_new_version),
        cmocka_unit_test(apply_waiting_behind_an_api_update_saves_the_next_version),
        cmocka_unit_test(dry_run_changes_nothing),
        cmocka_unit_test(broken_documents_change_nothing),
        cmocka_unit_test(malformed_json_names_line_and_column),
        cmocka_unit_test(tokens_need_a_key),
        cmocka_unit_test(token_files_resolve_against_base_dir),
        cmocka_unit_test(open_transaction_is_refused),
        cmocka_unit_test(connection_audit_rows_name_the_connection),
        cmocka_unit_test(expires_at_must_be_rfc3339),
        cmocka_unit_test(duplicate_members_are_refused),
        cmocka_unit_test(error_lines_hold_no_control_characters),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
