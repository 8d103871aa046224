/* test_db_intake: engine/intake against real PostgreSQL (fixture unit_pg) and an in-process
 * librdkafka mock cluster: an event runs each enabled workflow of its connection's tenant whose
 * trigger and filter match, once however often it arrives; offsets are committed only after the
 * runs are recorded; what cannot be taken in goes to the dead-letter topic and stops nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <curl/curl.h>
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "crypto.h"
#include "defs.h"
#include "executor.h"
#include "expr.h"
#include "intake.h"
#include "json.h"
#include "kafka_mock.h"
#include "log.h"
#include "metrics.h"
#include "pg_fixture.h"
#include "util.h"
#include "worker.h"

/* The topics intake subscribes to by default (HOOKFLOW_TOPIC_PREFIX=hookflow) and its dead
 * letters; Meta is a messaging connector. */
static const char *const topics[] = {"hookflow.webhooks.accounting",
                                     "hookflow.webhooks.marketing-automation",
                                     "hookflow.webhooks.messaging", "hookflow.deadletter"};
#define MESSAGING "hookflow.webhooks.messaging"
#define DEADLETTER "hookflow.deadletter"

#define GROUP "unit-intake"
#define WORKER_ID "unit-intake-worker"
#define PAGE "104877"  /* the Meta page of acme's active connection */
#define OTHER "555001" /* the page of the other tenant's active connection */
#define OFF "777001"   /* a page whose connection is disabled */
#define SENDER "6523918047715832"
#define RECEIVED_1 "2026-11-27T10:00:01.000Z"
#define RECEIVED_2 "2026-11-27T10:05:00.000Z"
#define WAIT_MS 10000

/* One engine worker's intake side, wired as worker.c wires it: the real configuration (defaults
 * plus the HOOKFLOW_* variables set below), its own metrics and definition cache, and an
 * executor that is never started, so the runs intake inserts stay exactly as intake left them
 * (a started one would go on to execute them). */
typedef struct worker {
    engine_config cfg;
    hf_metrics *metrics;
    engine_defs *defs;
    engine_executor *executor;
    engine_intake *intake;
} worker;

/* What one test works against: a fresh migrated database, a mock cluster, a plain producer. */
typedef struct fixture {
    km_cluster *kafka;
    rd_kafka_t *producer;
    char *url;
    PGconn *db;
    char *tenant_id; /* acme */
    char *pickup_id; /* acme, meta/message; v1 filters on 'hello', v2 (current) on 'pickup' */
    char *postback_a_id, *postback_b_id; /* acme, meta/messaging_postbacks, no filter */
    char *paused_id;                     /* acme, meta/message, filter on 'paused' */
    worker *workers[2];                  /* freed by teardown if a test stops half-way */
} fixture;

/* ---- PostgreSQL ------------------------------------------------------------------------------ */

static long long sql_count(PGconn *db, const char *sql)
{
    char *v = pgf_value(db, sql);
    long long n = -1;
    if (!v || !hf_parse_ll(v, &n))
        fail_msg("%s: not a count: %s", sql, v ? v : "NULL");
    free(v);
    return n;
}

/* Polls a count until it is want or WAIT_MS pass; returns the last count read. */
static long long sql_count_wait(PGconn *db, const char *sql, long long want)
{
    int64_t until = hf_now_ms() + WAIT_MS;
    long long n = sql_count(db, sql);
    while (n != want && hf_now_ms() < until) {
        usleep(20 * 1000);
        n = sql_count(db, sql);
    }
    return n;
}

/* A workflow definition with one delay node (the executor is never started, so it never runs). */
static char *definition(const char *name, const char *event, const char *filter)
{
    hf_buf b = {0};
    hf_buf_puts(&b, "{\"name\":");
    hf_json_append_cstr(&b, name);
    hf_buf_puts(&b, ",\"trigger\":{\"connector\":\"meta\",\"event\":");
    hf_json_append_cstr(&b, event);
    if (filter) {
        hf_buf_puts(&b, ",\"filter\":");
        hf_json_append_cstr(&b, filter);
    }
    hf_buf_puts(&b, "},\"nodes\":[{\"id\":\"wait\",\"type\":\"delay\",\"delay_ms\":60000}],"
                    "\"edges\":[]}");
    return hf_buf_steal(&b);
}

/* Inserts a workflow of tenant on meta/event with one version per filters[] entry (NULL: no
 * filter); the last version is the current one. Returns its id. */
static char *workflow_add(PGconn *db, const char *tenant, const char *name, const char *event,
                          bool enabled, const char *const *filters, int nversions)
{
    char current[16];
    snprintf(current, sizeof current, "%d", nversions);
    pgf_exec(db, "BEGIN"); /* the current-version key is checked at commit */
    const char *p[] = {tenant, name, event, enabled ? "true" : "false", current};
    char *id = pgf_value_params(db,
                                "INSERT INTO workflows (tenant_id, name, enabled, current_version, "
                                "trigger_connector, trigger_event) "
                                "VALUES ($1, $2, $4::boolean, $5::int, 'meta', $3) RETURNING id",
                                5, p);
    for (int v = 1; v <= nversions; v++) {
        char version[16];
        snprintf(version, sizeof version, "%d", v);
        char *def = definition(name, event, filters[v - 1]);
        const char *pv[] = {id, version, def};
        free(pgf_value_params(db,
                              "INSERT INTO workflow_versions (workflow_id, version, definition) "
                              "VALUES ($1, $2::int, $3::jsonb)",
                              3, pv));
        free(def);
    }
    pgf_exec(db, "COMMIT");
    return id;
}

static void connection_add(PGconn *db, const char *tenant, const char *account, const char *status)
{
    const char *p[] = {tenant, account, status};
    free(pgf_value_params(db,
                          "INSERT INTO connections (tenant_id, connector, account, status) "
                          "VALUES ($1, 'meta', $2, $3)",
                          3, p));
}

/* ---- Kafka ----------------------------------------------------------------------------------- */

/* What the delivery report of one produced message said. */
typedef struct delivery {
    rd_kafka_resp_err_t err;
    int64_t offset;
} delivery;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk, (void)opaque;
    delivery *d = m->_private;
    d->err = m->err;
    d->offset = m->offset;
}

/* Produces one message (value may be NULL: an empty message), waits for its delivery and
 * returns its offset. */
static int64_t produce(fixture *f, const char *topic, const char *key, const char *value)
{
    delivery result = {RD_KAFKA_RESP_ERR__IN_PROGRESS, -1};
    rd_kafka_resp_err_t e = rd_kafka_producev(
        f->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
        RD_KAFKA_V_VALUE((void *)value, value ? strlen(value) : 0),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(&result), RD_KAFKA_V_END);
    if (e)
        fail_msg("produce to %s: %s", topic, rd_kafka_err2str(e));
    if (rd_kafka_flush(f->producer, WAIT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        /* result must not be written after this frame is gone */
        rd_kafka_purge(f->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(f->producer, WAIT_MS);
    }
    if (result.err != RD_KAFKA_RESP_ERR_NO_ERROR)
        fail_msg("produce to %s: %s", topic, rd_kafka_err2str(result.err));
    return result.offset;
}

/* A Meta envelope as hookflow-ingest produces it (DESIGN.md, schemas/envelope.schema.json):
 * id "meta:<mid>", event message or messaging_postbacks, text the message text (or the
 * postback's title). The sender, whose conversation is the resource (the ordering key), is
 * named after mid, so the runs of one test never wait behind another test's. */
static char *envelope(const char *mid, const char *account, const char *event, const char *text,
                      const char *received_at)
{
    bool message = strcmp(event, "message") == 0;
    return xasprintf(
        "{\"id\":\"meta:%s\",\"provider\":\"meta\",\"event\":\"%s\",\"native_type\":\"%s\","
        "\"account\":\"%s\",\"resource\":\"psid:%s\","
        "\"occurred_at\":\"2026-11-27T10:00:00.000Z\",\"received_at\":\"%s\","
        "\"request_id\":\"req-%s\",\"payload\":{\"sender\":{\"id\":\"%s\"},"
        "\"recipient\":{\"id\":\"%s\"},\"timestamp\":1773826887945,"
        "\"%s\":{\"mid\":\"%s\",\"%s\":\"%s\"}}}",
        mid, event, message ? "message" : "postback", account, mid, received_at, received_at, mid,
        account, message ? "message" : "postback", mid, message ? "text" : "title", text);
}

/* Produces envelope(mid, account, event, text, RECEIVED_1) with the key ingest gives it;
 * returns its offset. */
static int64_t send_event(fixture *f, const char *mid, const char *account, const char *event,
                          const char *text)
{
    char *env = envelope(mid, account, event, text, RECEIVED_1);
    char *key = xconcat("meta:", account, NULL);
    int64_t offset = produce(f, MESSAGING, key, env);
    free(key);
    free(env);
    return offset;
}

/* The offset group has committed for MESSAGING partition 0, polled until it is want or
 * wait_ms pass (0: read once). RD_KAFKA_OFFSET_INVALID when there is none. */
static int64_t committed_offset(fixture *f, const char *group, int64_t want, int wait_ms)
{
    rd_kafka_t *rk = km_consumer_new(f->kafka, group, NULL);
    int64_t until = hf_now_ms() + wait_ms, offset = RD_KAFKA_OFFSET_INVALID;
    for (;;) {
        rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(parts, MESSAGING, 0);
        rd_kafka_resp_err_t e = rd_kafka_committed(rk, parts, WAIT_MS);
        offset = e ? -2000 - (int64_t)e : parts->elems[0].offset; /* an error never equals want */
        rd_kafka_topic_partition_list_destroy(parts);
        if (offset == want || hf_now_ms() >= until)
            break;
        usleep(50 * 1000);
    }
    km_consumer_free(rk);
    return offset;
}

/* Waits until group has committed every message of MESSAGING so far: intake has taken them
 * all in (offsets are committed after the runs). Fails the test otherwise. */
static void wait_taken_in(fixture *f, const char *group)
{
    int64_t low = -1, high = -1;
    rd_kafka_resp_err_t e =
        rd_kafka_query_watermark_offsets(f->producer, MESSAGING, 0, &low, &high, WAIT_MS);
    if (e)
        fail_msg("watermarks of %s: %s", MESSAGING, rd_kafka_err2str(e));
    int64_t committed = committed_offset(f, group, high, WAIT_MS);
    if (committed != high)
        fail_msg("group %s committed %lld of %lld messages", group, (long long)committed,
                 (long long)high);
}

/* One message of the dead-letter topic, its JSON value taken apart. */
typedef struct dead_letter {
    char *key, *reason, *topic, *worker;
    long long partition, offset;
    unsigned char value[512]; /* value_base64 decoded */
    long value_len;
} dead_letter;

/* Takes one dead-letter message apart into the next free slot of a dead_letters_read. */
static void dead_letter_add(const rd_kafka_message_t *m, void *arg)
{
    dead_letter **next = arg;
    dead_letter *d = (*next)++;
    memset(d, 0, sizeof *d);
    d->key = m->key ? xstrndup(m->key, m->key_len) : NULL;
    char err[128];
    hf_json v = hf_json_parse(m->payload, m->len, err, sizeof err);
    const char *reason = hf_json_str(hf_json_get(v, "reason"));
    const char *topic = hf_json_str(hf_json_get(v, "topic"));
    const char *by = hf_json_str(hf_json_get(v, "worker"));
    d->reason = reason ? xstrdup(reason) : NULL;
    d->topic = topic ? xstrdup(topic) : NULL;
    d->worker = by ? xstrdup(by) : NULL;
    d->partition = d->offset = -1;
    (void)hf_json_int(hf_json_get(v, "partition"), &d->partition);
    (void)hf_json_int(hf_json_get(v, "offset"), &d->offset);
    const char *b64 = hf_json_str(hf_json_get(v, "value_base64"));
    d->value_len = b64 ? hf_base64_decode(b64, strlen(b64), d->value, sizeof d->value) : -1;
    hf_json_free(v);
}

/* Reads the dead-letter topic from its start until want messages arrived or WAIT_MS passed;
 * returns how many were read (at most max) and sets *end to the topic's high watermark. */
static size_t dead_letters_read(fixture *f, dead_letter *out, size_t max, size_t want, int64_t *end)
{
    rd_kafka_t *rk = km_consumer_new(f->kafka, "unit-intake-reader", NULL);
    dead_letter *next = out;
    size_t n = km_consume(rk, DEADLETTER, want < max ? want : max, WAIT_MS, dead_letter_add, &next);
    int64_t low = -1, high = -1;
    if (rd_kafka_query_watermark_offsets(rk, DEADLETTER, 0, &low, &high, WAIT_MS))
        high = -1;
    *end = high;
    km_consumer_free(rk);
    return n;
}

static void dead_letters_free(dead_letter *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(d[i].key);
        free(d[i].reason);
        free(d[i].topic);
        free(d[i].worker);
    }
}

/* The dead letter of the message at offset of MESSAGING partition 0; fails if there is none. */
static const dead_letter *dead_letter_of(const dead_letter *d, size_t n, long long offset)
{
    for (size_t i = 0; i < n; i++)
        if (d[i].offset == offset)
            return &d[i];
    fail_msg("no dead letter for offset %lld", offset);
    return NULL;
}

/* ---- workers --------------------------------------------------------------------------------- */

/* Starts worker slot of f in the consumer group group. */
static worker *worker_start(fixture *f, int slot, const char *group)
{
    worker *w = xcalloc(1, sizeof *w);
    f->workers[slot] = w;
    setenv("HOOKFLOW_KAFKA_BROKERS", f->kafka->bootstraps, 1);
    setenv("HOOKFLOW_DATABASE_URL", f->url, 1);
    setenv("HOOKFLOW_WORKER_GROUP", group, 1);
    setenv("HOOKFLOW_WORKER_ID", WORKER_ID, 1);
    char err[512] = "";
    if (hf_config_load(engine_config_items, engine_config_nitems, &w->cfg, err, sizeof err) != 0)
        fail_msg("config: %s", err);
    w->metrics = hf_metrics_new();
    w->defs = engine_defs_new();
    /* No catalog, secrets or keys: this executor never runs a node. */
    w->executor = engine_executor_new(&w->cfg, WORKER_ID, w->defs, w->metrics, NULL, NULL, NULL,
                                      err, sizeof err);
    if (!w->executor)
        fail_msg("engine_executor_new: %s", err);
    w->intake =
        engine_intake_new(&w->cfg, WORKER_ID, w->defs, w->metrics, w->executor, err, sizeof err);
    if (!w->intake)
        fail_msg("engine_intake_new: %s", err);
    engine_intake_start(w->intake);
    return w;
}

/* Stops and frees worker slot of f, in worker.c's order. */
static void worker_stop(fixture *f, int slot)
{
    worker *w = f->workers[slot];
    if (!w)
        return;
    f->workers[slot] = NULL;
    engine_intake_stop(w->intake);
    engine_intake_free(w->intake);
    engine_executor_free(w->executor);
    engine_defs_free(w->defs);
    hf_metrics_free(w->metrics);
    hf_config_free(engine_config_items, engine_config_nitems, &w->cfg);
    free(w);
}

static uint64_t counter(const worker *w, const char *name)
{
    return hf_counter_value(hf_metrics_counter(w->metrics, name, "", NULL));
}

/* Runs claimed at intake are handed to the executor (never started here), where each takes a
 * place: polls until its room is cfg.concurrency less the runs leased to this worker, or
 * WAIT_MS pass. Returns how far the room is off then (0: every claimed run was handed over,
 * once). */
static long long room_for_claimed(fixture *f, const worker *w)
{
    int64_t until = hf_now_ms() + WAIT_MS;
    for (;;) {
        long long claimed = sql_count(f->db, "SELECT count(*) FROM runs WHERE status = "
                                             "'running' AND lease_owner = '" WORKER_ID "'");
        long long off = engine_executor_room(w->executor) - (w->cfg.concurrency - claimed);
        if (off == 0 || hf_now_ms() >= until)
            return off;
        usleep(20 * 1000);
    }
}

/* ---- fixture --------------------------------------------------------------------------------- */

static int db_serial;

static int fixture_setup(void **state)
{
    fixture *f = xcalloc(1, sizeof *f);
    *state = f;
    char name[32];
    snprintf(name, sizeof name, "unit_intake_%d", ++db_serial);
    f->url = pgf_database(name);
    f->db = pgf_connect(f->url);

    f->tenant_id = pgf_value(f->db, "INSERT INTO tenants (slug, name) "
                                    "VALUES ('acme', 'Acme Laundry') RETURNING id");
    connection_add(f->db, f->tenant_id, PAGE, "active");
    static const char *const pickup[] = {"event.payload.message.text contains 'hello'",
                                         "event.payload.message.text contains 'pickup'"};
    f->pickup_id = workflow_add(f->db, f->tenant_id, "Pickup", "message", true, pickup, 2);
    static const char *const none[] = {NULL};
    f->postback_a_id =
        workflow_add(f->db, f->tenant_id, "Postback A", "messaging_postbacks", true, none, 1);
    f->postback_b_id =
        workflow_add(f->db, f->tenant_id, "Postback B", "messaging_postbacks", true, none, 1);
    static const char *const paused[] = {"event.payload.message.text contains 'paused'"};
    f->paused_id = workflow_add(f->db, f->tenant_id, "Paused", "message", true, paused, 1);
    /* Another tenant whose enabled workflow takes every message of its own pages: none of
     * acme's events may reach it, and its disabled connection takes nothing in. */
    char *other = pgf_value(f->db, "INSERT INTO tenants (slug, name) "
                                   "VALUES ('other', 'Other') RETURNING id");
    connection_add(f->db, other, OTHER, "active");
    connection_add(f->db, other, OFF, "disabled");
    free(workflow_add(f->db, other, "Every message", "message", true, none, 1));
    free(other);

    char errstr[256];
    f->kafka = km_cluster_new(topics, HF_ARRAY_LEN(topics), errstr, sizeof errstr);
    if (!f->kafka)
        fail_msg("mock cluster: %s", errstr);

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, km_quiet_log);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    if (rd_kafka_conf_set(conf, "bootstrap.servers", f->kafka->bootstraps, errstr, sizeof errstr) ||
        rd_kafka_conf_set(conf, "linger.ms", "0", errstr, sizeof errstr)) {
        rd_kafka_conf_destroy(conf);
        fail_msg("producer conf: %s", errstr);
    }
    f->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!f->producer) {
        rd_kafka_conf_destroy(conf);
        fail_msg("producer: %s", errstr);
    }
    return 0;
}

static int fixture_teardown(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < (int)HF_ARRAY_LEN(f->workers); i++)
        worker_stop(f, i);
    unsetenv("HOOKFLOW_KAFKA_SESSION_TIMEOUT_MS");
    unsetenv("HOOKFLOW_KAFKA_HEARTBEAT_INTERVAL_MS");
    unsetenv("HOOKFLOW_WORKER_CONCURRENCY");
    unsetenv("HOOKFLOW_WORKER_TOPICS");
    if (f->producer)
        rd_kafka_destroy(f->producer);
    if (f->db)
        PQfinish(f->db);
    free(f->url);
    free(f->tenant_id);
    free(f->pickup_id);
    free(f->postback_a_id);
    free(f->postback_b_id);
    free(f->paused_id);
    km_cluster_destroy_later(f->kafka);
    free(f);
    return 0;
}

/* The tests of how events match workflows share one fixture and one worker (consumer group
 * GROUP): joining a group costs the mock cluster's 3 s initial rebalance delay. Each test uses
 * events of its own and asserts on those, and on what changed while it ran. */
static int shared_setup(void **state)
{
    fixture_setup(state);
    worker_start(*state, 0, GROUP);
    return 0;
}

/* ---- tests ----------------------------------------------------------------------------------- */

static long long runs_total(fixture *f)
{
    return sql_count(f->db, "SELECT count(*) FROM runs");
}

/* One event, one matching workflow: one run for the connection's tenant with the current
 * version, the envelope as trigger, the ordering key of its resource, claimed for this worker and
 * handed to its executor; the event key records where the event came from. */
static void matching_event_creates_one_run_with_trigger_tenant_and_version(void **state)
{
    fixture *f = *state;
    worker *w = f->workers[0];
    long long runs_before = runs_total(f);
    uint64_t created_before = counter(w, "hookflow_engine_runs_created_total");
    char *env = envelope("m_one", PAGE, "message", "is my order ready for pickup?", RECEIVED_1);
    int64_t offset = produce(f, MESSAGING, "meta:" PAGE, env);
    wait_taken_in(f, GROUP);

    assert_int_equal(runs_total(f), runs_before + 1);
    const char *p[] = {env};
    char *run = pgf_value_params(f->db,
                                 "SELECT concat_ws('|', tenant_id, workflow_id, workflow_version, "
                                 "trigger = $1::jsonb, ordering_key, ordering_seq, status, "
                                 "lease_owner, attempt, started_at IS NOT NULL) FROM runs "
                                 "WHERE event_id = 'meta:m_one'",
                                 1, p);
    char *want = xasprintf("%s|%s|2|t|meta:" PAGE ":psid:m_one|%lld|running|" WORKER_ID "|1|t",
                           f->tenant_id, f->pickup_id, (long long)offset);
    assert_string_equal(run, want);
    char *key = pgf_value(f->db, "SELECT concat_ws('|', provider, account, kafka_topic, "
                                 "kafka_partition, kafka_offset) FROM event_keys "
                                 "WHERE event_id = 'meta:m_one'");
    char *want_key = xasprintf("meta|" PAGE "|" MESSAGING "|0|%lld", (long long)offset);
    assert_string_equal(key, want_key);
    assert_int_equal(room_for_claimed(f, w), 0);
    assert_int_equal(counter(w, "hookflow_engine_runs_created_total"), created_before + 1);
    free(want_key);
    free(key);
    free(want);
    free(run);
    free(env);
}

/* A message the current version's filter refuses creates no run (the old version's filter would
 * take it: the current one is what counts); it is taken in all the same, and the next event,
 * which matches, gets its run. */
static void filter_that_does_not_match_creates_no_run(void **state)
{
    fixture *f = *state;
    long long runs_before = runs_total(f);
    send_event(f, "m_hello", PAGE, "message", "hello, nothing to do today");
    send_event(f, "m_after_hello", PAGE, "message", "pickup please");
    wait_taken_in(f, GROUP);

    assert_int_equal(runs_total(f), runs_before + 1);
    assert_int_equal(sql_count(f->db, "SELECT count(*) FROM runs WHERE event_id = 'meta:m_hello'"),
                     0);
    assert_int_equal(
        sql_count(f->db, "SELECT count(*) FROM runs WHERE event_id = 'meta:m_after_hello'"), 1);
    assert_int_equal(sql_count(f->db, "SELECT count(*) FROM event_keys "
                                      "WHERE event_id IN ('meta:m_hello', 'meta:m_after_hello')"),
                     2);
}

/* The Paused workflow runs for its event while it is enabled; once it is disabled, the same kind
 * of event creates no run, and the event after it still runs the workflows that are enabled. */
static void disabled_workflow_creates_no_run(void **state)
{
    fixture *f = *state;
    long long runs_before = runs_total(f);
    send_event(f, "m_paused_1", PAGE, "message", "order paused");
    wait_taken_in(f, GROUP);
    const char *p[] = {f->paused_id};
    char *enabled_run =
        pgf_value_params(f->db,
                         "SELECT count(*) FROM runs WHERE event_id = 'meta:m_paused_1' "
                         "AND workflow_id = $1::uuid",
                         1, p);
    assert_string_equal(enabled_run, "1");

    pgf_exec(f->db, "UPDATE workflows SET enabled = false WHERE name = 'Paused'");
    send_event(f, "m_paused_2", PAGE, "message", "order paused again");
    send_event(f, "m_postback", PAGE, "messaging_postbacks", "Confirm pickup");
    wait_taken_in(f, GROUP);
    pgf_exec(f->db, "UPDATE workflows SET enabled = true WHERE name = 'Paused'");

    assert_int_equal(
        sql_count(f->db, "SELECT count(*) FROM runs WHERE event_id = 'meta:m_paused_2'"), 0);
    assert_int_equal(
        sql_count(f->db, "SELECT count(*) FROM runs WHERE event_id = 'meta:m_postback'"), 2);
    assert_int_equal(runs_total(f), runs_before + 3);
    free(enabled_run);
}

/* Events of an account no tenant has connected, and of a disabled connection, create no run
 * (for nobody) and do not hold up the event after them. */
static void unknown_account_creates_no_run_and_does_not_stall(void **state)
{
    fixture *f = *state;
    long long runs_before = runs_total(f);
    send_event(f, "m_stranger", "999999", "message", "pickup for a stranger");
    send_event(f, "m_off", OFF, "message", "pickup on a disabled connection");
    send_event(f, "m_known", PAGE, "message", "pickup for acme");
    wait_taken_in(f, GROUP);

    assert_int_equal(runs_total(f), runs_before + 1);
    const char *p[] = {f->tenant_id};
    char *runs =
        pgf_value_params(f->db,
                         "SELECT string_agg(event_id || '@' || (tenant_id = $1::uuid), ',') "
                         "FROM runs WHERE event_id IN ('meta:m_stranger', 'meta:m_off', "
                         "'meta:m_known')",
                         1, p);
    assert_string_equal(runs, "meta:m_known@true");
    char *keys = pgf_value(f->db, "SELECT string_agg(event_id || '@' || account, ',' "
                                  "ORDER BY kafka_offset) FROM event_keys WHERE event_id IN "
                                  "('meta:m_stranger', 'meta:m_off', 'meta:m_known')");
    assert_string_equal(keys, "meta:m_stranger@999999,meta:m_off@" OFF ",meta:m_known@" PAGE);
    free(keys);
    free(runs);
}

/* One event that two enabled workflows trigger creates one run of each, both claimed. */
static void event_matching_two_workflows_creates_two_runs(void **state)
{
    fixture *f = *state;
    worker *w = f->workers[0];
    long long runs_before = runs_total(f);
    send_event(f, "m_two", PAGE, "messaging_postbacks", "Confirm pickup");
    wait_taken_in(f, GROUP);

    assert_int_equal(runs_total(f), runs_before + 2);
    const char *p[] = {f->tenant_id};
    char *runs =
        pgf_value_params(f->db,
                         "SELECT string_agg(concat_ws('|', workflow_id, workflow_version, "
                         "status, tenant_id = $1::uuid), ',' ORDER BY workflow_id) FROM runs "
                         "WHERE event_id = 'meta:m_two'",
                         1, p);
    bool a_first = strcmp(f->postback_a_id, f->postback_b_id) < 0;
    char *want =
        xasprintf("%s|1|running|t,%s|1|running|t", a_first ? f->postback_a_id : f->postback_b_id,
                  a_first ? f->postback_b_id : f->postback_a_id);
    assert_string_equal(runs, want);
    assert_int_equal(room_for_claimed(f, w), 0);
    free(want);
    free(runs);
}

/* The same event three times (a duplicated message and the provider's redelivery, which has the
 * same id but another received_at): one run, from the first delivery. A new intake that replays
 * the topic from the start (a fresh group) creates nothing either. */
static void same_event_id_twice_creates_one_run_also_after_a_restart(void **state)
{
    fixture *f = *state;
    worker *w = worker_start(f, 0, GROUP);
    char *first = envelope("m_dup", PAGE, "message", "pickup at 5", RECEIVED_1);
    char *redelivery = envelope("m_dup", PAGE, "message", "pickup at 5", RECEIVED_2);
    produce(f, MESSAGING, "meta:" PAGE, first);
    produce(f, MESSAGING, "meta:" PAGE, first);
    produce(f, MESSAGING, "meta:" PAGE, redelivery);

    assert_int_equal(committed_offset(f, GROUP, 3, WAIT_MS), 3);
    assert_int_equal(sql_count(f->db, "SELECT count(*) FROM runs"), 1);
    char *received = pgf_value(f->db, "SELECT trigger->>'received_at' FROM runs "
                                      "WHERE event_id = 'meta:m_dup'");
    assert_string_equal(received, RECEIVED_1);
    assert_int_equal(sql_count(f->db, "SELECT count(*) FROM event_keys"), 1);
    assert_int_equal(counter(w, "hookflow_engine_events_consumed_total"), 3);
    assert_int_equal(counter(w, "hookflow_engine_events_duplicate_total"), 2);
    assert_int_equal(counter(w, "hookflow_engine_runs_created_total"), 1);

    worker_stop(f, 0);
    w = worker_start(f, 1, "unit-intake-replay");
    assert_int_equal(committed_offset(f, "unit-intake-replay", 3, WAIT_MS), 3);
    assert_int_equal(counter(w, "hookflow_engine_events_consumed_total"), 3);
    assert_int_equal(counter(w, "hookflow_engine_events_duplicate_total"), 3);
    assert_int_equal(counter(w, "hookflow_engine_runs_created_total"), 0);
    assert_int_equal(sql_count(f->db, "SELECT count(*) FROM runs"), 1);
    assert_int_equal(sql_count(f->db, "SELECT count(*) FROM event_keys"), 1);

    /* With the event's key pruned (retention), a replay gets past the dedupe, but the run that
     * exists already is not made again, nor counted as made. */
    worker_stop(f, 1);
    pgf_exec(f->db, "DELETE FROM event_keys");
    w = worker_start(f, 0, "unit-intake-pruned");
    assert_int_equal(committed_offset(f, "unit-intake-pruned", 3, WAIT_MS), 3);
    assert_int_equal(counter(w, "hookflow_engine_runs_created_total"), 0);
    assert_int_equal(sql_count(f->db, "SELECT count(*) FROM runs"), 1);
    free(received);
    free(redelivery);
    free(first);
}

/* While the runs table is locked intake cannot insert the runs, and no offset is committed; once
 * they are in, the offsets are. A new consumer in the same group then starts after the
 * consumed messages: it reads only what came later. */
static void offsets_are_committed_only_after_the_runs_are_inserted(void **state)
{
    fixture *f = *state;
    /* When a member leaves, the mock cluster holds the group's next join for session.timeout.ms
     * less 1 s (9 s with intake's 10 s): shortened here through the HOOKFLOW_KAFKA_* passthrough
     * (teardown unsets them). */
    setenv("HOOKFLOW_KAFKA_SESSION_TIMEOUT_MS", "2500", 1);
    setenv("HOOKFLOW_KAFKA_HEARTBEAT_INTERVAL_MS", "500", 1);
    worker_start(f, 0, GROUP);
    pgf_exec(f->db, "BEGIN");
    pgf_exec(f->db, "LOCK TABLE runs IN ACCESS EXCLUSIVE MODE");
    send_event(f, "m_off_0", PAGE, "message", "pickup 0");
    send_event(f, "m_off_1", PAGE, "message", "pickup 1");
    send_event(f, "m_off_2", PAGE, "message", "pickup 2");
    long long blocked = sql_count_wait(
        f->db, "SELECT count(*) FROM pg_locks WHERE relation = 'runs'::regclass AND NOT granted",
        1);
    int64_t while_blocked = committed_offset(f, GROUP, RD_KAFKA_OFFSET_INVALID, 0);
    pgf_exec(f->db, "ROLLBACK");
    assert_int_equal(blocked, 1);
    assert_int_equal(while_blocked, RD_KAFKA_OFFSET_INVALID);

    assert_int_equal(sql_count_wait(f->db, "SELECT count(*) FROM runs", 3), 3);
    assert_int_equal(committed_offset(f, GROUP, 3, WAIT_MS), 3);
    worker_stop(f, 0);

    send_event(f, "m_off_3", PAGE, "message", "pickup 3");
    send_event(f, "m_off_4", PAGE, "message", "pickup 4");
    worker *w = worker_start(f, 1, GROUP);
    assert_int_equal(committed_offset(f, GROUP, 5, WAIT_MS), 5);
    assert_int_equal(sql_count_wait(f->db, "SELECT count(*) FROM runs", 5), 5);
    assert_int_equal(counter(w, "hookflow_engine_events_consumed_total"), 2);
    assert_int_equal(counter(w, "hookflow_engine_events_duplicate_total"), 0);
    assert_int_equal(counter(w, "hookflow_engine_runs_created_total"), 2);
}

/* Messages that are no envelope go to the dead-letter topic, each with its reason, where it came
 * from, this worker and its bytes; they record nothing, and the good event after them in the same
 * partition gets its run; every offset is committed. */
static void malformed_messages_are_dead_lettered_and_the_batch_goes_on(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *value; /* NULL: an empty message */
        const char *reason;
        bool prefix; /* reason is a prefix (the parser's detail follows) */
    } bad[] = {
        {"this is not an envelope", "envelope is not JSON: ", true},
        {"{\"id\":\"meta:m_cut\",\"provider\":", "envelope is not JSON: ", true},
        {"{\"provider\":\"meta\",\"event\":\"message\",\"account\":\"" PAGE "\","
         "\"payload\":{\"tag\":\"no-id\"}}",
         "envelope field \"id\" is missing or not a string", false},
        {"{\"id\":42,\"provider\":\"meta\",\"event\":\"message\",\"account\":\"" PAGE "\","
         "\"payload\":{}}",
         "envelope field \"id\" is missing or not a string", false},
        {"{\"id\":\"meta:m_no_account\",\"provider\":\"meta\",\"event\":\"message\","
         "\"native_type\":\"message\",\"request_id\":\"r\",\"payload\":{}}",
         "envelope field \"account\" is missing or not a string", false},
        {"{\"id\":\"meta:m_empty_event\",\"provider\":\"meta\",\"event\":\"\","
         "\"account\":\"" PAGE "\",\"payload\":{}}",
         "envelope field \"event\" is missing or not a string", false},
        {"{\"id\":\"meta:m_text_payload\",\"provider\":\"meta\",\"event\":\"message\","
         "\"native_type\":\"message\",\"account\":\"" PAGE "\",\"resource\":null,"
         "\"occurred_at\":\"2026-11-27T10:00:00.000Z\",\"received_at\":\"2026-11-27T10:00:00."
         "000Z\","
         "\"request_id\":\"r\",\"payload\":\"pickup\"}",
         "envelope payload is not an object", false},
        {"[\"meta:m_array\"]", "envelope is not a JSON object", false},
        {NULL, "empty message", false},
    };
    enum { NBAD = sizeof bad / sizeof bad[0] };
    worker *w = worker_start(f, 0, GROUP);
    for (size_t i = 0; i < NBAD; i++)
        produce(f, MESSAGING, "meta:" PAGE, bad[i].value);
    send_event(f, "m_good", PAGE, "message", "pickup after the bad ones");

    assert_int_equal(committed_offset(f, GROUP, NBAD + 1, WAIT_MS), NBAD + 1);
    char *runs = pgf_value(f->db, "SELECT string_agg(event_id, ',') FROM runs");
    assert_string_equal(runs, "meta:m_good");
    char *keys = pgf_value(f->db, "SELECT string_agg(event_id, ',') FROM event_keys");
    assert_string_equal(keys, "meta:m_good");
    /* The dead letters are acknowledged before the offsets are committed. */
    dead_letter d[NBAD + 4];
    int64_t end = -1;
    size_t n = dead_letters_read(f, d, HF_ARRAY_LEN(d), NBAD, &end);
    assert_int_equal(n, NBAD);
    assert_int_equal(end, NBAD);
    for (size_t i = 0; i < NBAD; i++) {
        const dead_letter *dl = dead_letter_of(d, n, (long long)i);
        if (!dl->reason ||
            (bad[i].prefix ? strncmp(dl->reason, bad[i].reason, strlen(bad[i].reason)) != 0
                           : strcmp(dl->reason, bad[i].reason) != 0))
            fail_msg("offset %zu: reason \"%s\", want \"%s\"", i, dl->reason ? dl->reason : "",
                     bad[i].reason);
        assert_string_equal(dl->key, "meta:" PAGE);
        assert_string_equal(dl->topic, MESSAGING);
        assert_int_equal(dl->partition, 0);
        assert_string_equal(dl->worker, WORKER_ID);
        size_t len = bad[i].value ? strlen(bad[i].value) : 0;
        assert_int_equal(dl->value_len, (long)len);
        assert_memory_equal(dl->value, bad[i].value ? bad[i].value : "", len);
    }
    assert_int_equal(counter(w, "hookflow_engine_deadletter_total"), NBAD);
    assert_int_equal(counter(w, "hookflow_engine_events_consumed_total"), NBAD + 1);
    assert_int_equal(counter(w, "hookflow_engine_runs_created_total"), 1);
    dead_letters_free(d, n);
    free(keys);
    free(runs);
}

/* A well-formed envelope PostgreSQL cannot store (a number beyond numeric's range) is
 * dead-lettered with the database's reason once retrying the batch has not helped; it records
 * nothing, and the events around it get their runs. */
static void event_the_database_rejects_is_dead_lettered_alone(void **state)
{
    fixture *f = *state;
    worker *w = worker_start(f, 0, GROUP);
    send_event(f, "m_before", PAGE, "message", "pickup before");
    send_event(f, "m_before", PAGE, "message", "pickup before"); /* a duplicate in the batch */
    /* A number beyond numeric's range: JSON, but not jsonb (as in tests/integration). */
    produce(f, MESSAGING, "meta:" PAGE,
            "{\"id\":\"meta:m_huge\",\"provider\":\"meta\",\"event\":\"message\","
            "\"native_type\":\"message\",\"account\":\"" PAGE "\",\"resource\":\"psid:" SENDER
            "\",\"occurred_at\":\"2026-11-27T10:00:00.000Z\",\"received_at\":\"" RECEIVED_1
            "\",\"request_id\":\"req-huge\",\"payload\":{\"sender\":{\"id\":\"" SENDER
            "\"},\"message\":{\"mid\":\"m_huge\",\"text\":\"pickup now\"},"
            "\"amount\":1e999999}}");
    send_event(f, "m_after", PAGE, "message", "pickup after");

    assert_int_equal(committed_offset(f, GROUP, 4, WAIT_MS), 4);
    char *runs = pgf_value(f->db, "SELECT string_agg(event_id, ',' ORDER BY ordering_seq) "
                                  "FROM runs");
    assert_string_equal(runs, "meta:m_before,meta:m_after");
    assert_int_equal(
        sql_count(f->db, "SELECT count(*) FROM event_keys WHERE event_id = 'meta:m_huge'"), 0);
    dead_letter d[4];
    int64_t end = -1;
    size_t n = dead_letters_read(f, d, HF_ARRAY_LEN(d), 1, &end);
    assert_int_equal(n, 1);
    assert_int_equal(end, 1);
    assert_int_equal(d[0].offset, 2);
    assert_string_equal(d[0].topic, MESSAGING);
    if (!d[0].reason || !strstr(d[0].reason, "the database rejected the event: "))
        fail_msg("reason: %s", d[0].reason ? d[0].reason : "none");
    assert_true(counter(w, "hookflow_engine_intake_retries_total") >= 1);
    assert_int_equal(counter(w, "hookflow_engine_deadletter_total"), 1);
    assert_int_equal(counter(w, "hookflow_engine_runs_created_total"), 2);
    /* The batch was tried several times and then event by event: its duplicate counts once. */
    assert_int_equal(counter(w, "hookflow_engine_events_duplicate_total"), 1);
    dead_letters_free(d, n);
    free(runs);
}

/* The huge-number envelope of event_the_database_rejects_is_dead_lettered_alone: JSON that
 * PostgreSQL's jsonb refuses, so its batch falls back to recording event by event. */
#define HUGE_ENVELOPE                                                                              \
    "{\"id\":\"meta:m_huge\",\"provider\":\"meta\",\"event\":\"message\","                         \
    "\"native_type\":\"message\",\"account\":\"" PAGE "\",\"resource\":\"psid:" SENDER             \
    "\",\"occurred_at\":\"2026-11-27T10:00:00.000Z\",\"received_at\":\"" RECEIVED_1                \
    "\",\"request_id\":\"req-huge\",\"payload\":{\"sender\":{\"id\":\"" SENDER                     \
    "\"},\"message\":{\"mid\":\"m_huge\",\"text\":\"pickup now\"},"                                \
    "\"amount\":1e999999}}"

/* An error that is not the event's (here a read-only database after a failover) is waited out:
 * good events are not dead-lettered, nothing is committed, and they get their runs once writes
 * work again. */
static void transient_database_refusal_does_not_dead_letter_good_events(void **state)
{
    fixture *f = *state;
    /* Every new session of the test database is read-only, as on a standby after a failover
     * (SQLSTATE 25006): nothing about the event itself is wrong. */
    char *dbname = pgf_value(f->db, "SELECT current_database()");
    char *set_ro =
        xasprintf("ALTER DATABASE \"%s\" SET default_transaction_read_only = on", dbname);
    char *reset_ro = xasprintf("ALTER DATABASE \"%s\" RESET default_transaction_read_only", dbname);
    pgf_exec(f->db, set_ro);
    worker *w = worker_start(f, 0, GROUP);
    send_event(f, "m_readonly", PAGE, "message", "pickup during the failover");
    /* Several retries (100 + 200 + 400 + 800 ms of backoff), well past the three rejections
     * after which intake records the batch event by event. */
    int64_t until = hf_now_ms() + WAIT_MS;
    while (counter(w, "hookflow_engine_intake_retries_total") < 5 && hf_now_ms() < until)
        usleep(50 * 1000);
    int64_t committed_while_ro = committed_offset(f, GROUP, RD_KAFKA_OFFSET_INVALID, 0);
    uint64_t dead_while_ro = counter(w, "hookflow_engine_deadletter_total");
    /* The database takes writes again: the event must still get its run. */
    pgf_exec(f->db, reset_ro);
    long long runs =
        sql_count_wait(f->db, "SELECT count(*) FROM runs WHERE event_id = 'meta:m_readonly'", 1);

    assert_int_equal(dead_while_ro, 0);
    assert_int_equal(committed_while_ro, RD_KAFKA_OFFSET_INVALID);
    assert_int_equal(runs, 1);
    assert_int_equal(committed_offset(f, GROUP, 1, WAIT_MS), 1);
    free(reset_ro);
    free(set_ro);
    free(dbname);
}

/* Recording event by event claims runs against what is left of the room, not the same room for
 * each event: never more than HOOKFLOW_WORKER_CONCURRENCY. */
static void event_by_event_recording_claims_no_more_than_the_concurrency(void **state)
{
    fixture *f = *state;
    setenv("HOOKFLOW_WORKER_CONCURRENCY", "1", 1); /* teardown unsets it */
    /* All produced before the worker joins, so they are fetched together: a message no workflow
     * takes, then two matching events (ordering keys of their own) around one the database
     * refuses, which sends their batch down the event-by-event path. */
    send_event(f, "m_conc_hello", PAGE, "message", "hello there");
    send_event(f, "m_conc_a", PAGE, "message", "pickup a");
    produce(f, MESSAGING, "meta:" PAGE, HUGE_ENVELOPE);
    send_event(f, "m_conc_b", PAGE, "message", "pickup b");
    worker *w = worker_start(f, 0, GROUP);
    assert_int_equal(committed_offset(f, GROUP, 4, WAIT_MS), 4);
    assert_int_equal(counter(w, "hookflow_engine_deadletter_total"), 1);
    assert_int_equal(sql_count(f->db, "SELECT count(*) FROM runs WHERE event_id IN "
                                      "('meta:m_conc_a', 'meta:m_conc_b')"),
                     2);

    /* One place in the executor: at most one run may be claimed for this worker, the other
     * waits pending for the executor to claim it later. */
    long long claimed = sql_count(f->db, "SELECT count(*) FROM runs WHERE status = 'running' "
                                         "AND lease_owner = '" WORKER_ID "'");
    assert_true(claimed <= w->cfg.concurrency);
    assert_true(engine_executor_room(w->executor) >= 0);
}

/* Guarantee 4 as the runs record it: a run intake starts at once because no earlier run of its
 * ordering key is still pending is stamped with the moment it starts, not with the start of
 * intake's transaction. Here the earlier run is started (as an executor's claim would) while
 * intake's transaction waits on a lock; its successor's started_at must come after it. */
static void run_started_at_intake_is_stamped_after_the_run_before_it(void **state)
{
    fixture *f = *state;
    char *sql = xasprintf(
        "INSERT INTO runs (tenant_id, workflow_id, workflow_version, event_id, ordering_key, "
        "ordering_seq, trigger, next_run_at) VALUES ('%s', '%s', 2, 'meta:m_before', "
        "'meta:" PAGE ":psid:m_after', -1, '{}', now() + interval '1 hour')",
        f->tenant_id, f->pickup_id);
    pgf_exec(f->db, sql);
    free(sql);
    PGconn *locker = pgf_connect(f->url);
    pgf_exec(locker, "BEGIN");
    pgf_exec(locker, "LOCK TABLE event_keys IN SHARE ROW EXCLUSIVE MODE");
    send_event(f, "m_after", PAGE, "message", "pickup after");
    worker_start(f, 0, GROUP);
    /* Intake's transaction has begun and waits for the lock. */
    int64_t until = hf_now_ms() + WAIT_MS;
    while (sql_count(f->db, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                            "'Lock' AND query LIKE 'INSERT INTO event_keys%'") == 0) {
        if (hf_now_ms() > until)
            fail_msg("intake never waited for the lock on event_keys");
        usleep(10 * 1000);
    }
    usleep(50 * 1000);
    pgf_exec(f->db, "UPDATE runs SET status = 'running', started_at = clock_timestamp(), "
                    "attempt = 1, next_run_at = now() WHERE event_id = 'meta:m_before'");
    usleep(50 * 1000);
    pgf_exec(locker, "COMMIT");
    PQfinish(locker);
    wait_taken_in(f, GROUP);

    char *order = pgf_value(f->db, "SELECT string_agg(event_id || ' ' || status, ', ' "
                                   "ORDER BY started_at) FROM runs");
    assert_string_equal(order, "meta:m_before running, meta:m_after running");
    free(order);
}

/* A filter that cannot be evaluated (here it runs out of its step budget comparing two big
 * objects) does not run its workflow: the workflow gets a failed run saying why, so the tenant
 * sees in its runs that the event was not acted on; the skip is counted for operators (the log
 * names the workflow and the event). Another workflow on the same ordering key is not held up
 * by the failed run: it is claimed at once. */
static void filter_that_cannot_be_evaluated_fails_its_run(void **state)
{
    fixture *f = *state;
    const char *const heavy[] = {"event.payload.a == event.payload.b"};
    char *wf = workflow_add(f->db, f->tenant_id, "Heavy", "message", true, heavy, 1);
    const char *const none[] = {NULL};
    char *other = workflow_add(f->db, f->tenant_id, "Light", "message", true, none, 1);
    worker *w = worker_start(f, 0, GROUP);
    hf_buf j = {0};
    hf_buf_puts(&j,
                "{\"id\":\"meta:m_heavy\",\"provider\":\"meta\",\"event\":\"message\","
                "\"native_type\":\"message\",\"account\":\"" PAGE "\",\"resource\":\"psid:" SENDER
                "\",\"occurred_at\":\"2026-11-27T10:00:00.000Z\",\"received_at\":\"" RECEIVED_1
                "\",\"request_id\":\"req-heavy\",\"payload\":{\"a\":{");
    enum { members = 5000 }; /* compared in reverse order: ~12.5M steps, over the 10M budget */
    for (int i = 0; i < members; i++)
        hf_buf_printf(&j, "%s\"k%d\":%d", i ? "," : "", i, i);
    hf_buf_puts(&j, "},\"b\":{");
    for (int i = members - 1; i >= 0; i--)
        hf_buf_printf(&j, "%s\"k%d\":%d", i < members - 1 ? "," : "", i, i);
    hf_buf_puts(&j, "}}}");
    produce(f, MESSAGING, "meta:" PAGE, j.data);
    hf_buf_free(&j);

    assert_int_equal(committed_offset(f, GROUP, 1, WAIT_MS), 1);
    const char *p[] = {wf};
    char *runs = pgf_value_params(
        f->db,
        "SELECT string_agg(status || '|' || event_id || '|' || error || '|' || "
        "(finished_at IS NOT NULL) || '|' || (lease_owner IS NULL) || '|' || attempt, ';') "
        "FROM runs WHERE workflow_id = $1",
        1, p);
    assert_non_null(runs);
    char want[256];
    snprintf(want, sizeof want,
             "failed|meta:m_heavy|the trigger filter could not be evaluated: evaluation exceeded "
             "%ld comparison steps|true|true|0",
             (long)WF_EVAL_MAX_STEPS);
    assert_string_equal(runs, want);
    free(runs);
    const char *po[] = {other};
    char *light = pgf_value_params(f->db, "SELECT status FROM runs WHERE workflow_id = $1", 1, po);
    assert_non_null(light);
    assert_string_equal(light, "running");
    free(light);
    free(other);
    assert_int_equal(
        sql_count(f->db, "SELECT count(*) FROM event_keys WHERE event_id = 'meta:m_heavy'"), 1);
    assert_int_equal(
        hf_counter_value(hf_metrics_counter(w->metrics, "hookflow_engine_workflow_skipped_total",
                                            "", "reason=\"filter_error\"")),
        1);
    free(wf);
}

/* ---- review: the envelope contract (schemas/envelope.schema.json) --------------------------- */

/* A complete Meta envelope of event mid (text "pickup please", which the Pickup workflow takes)
 * with member drop left out and member name (if any) given the JSON value value instead; a
 * name the envelope does not have is added at the end. */
static char *envelope_members(const char *mid, const char *drop, const char *name,
                              const char *value)
{
    char *id = xasprintf("\"meta:%s\"", mid);
    char *resource = xasprintf("\"psid:%s\"", mid);
    char *request = xasprintf("\"req-%s\"", mid);
    char *payload = xasprintf("{\"sender\":{\"id\":\"%s\"},\"message\":{\"mid\":\"%s\","
                              "\"text\":\"pickup please\"}}",
                              mid, mid);
    const char *const members[][2] = {
        {"id", id},
        {"provider", "\"meta\""},
        {"event", "\"message\""},
        {"native_type", "\"message\""},
        {"account", "\"" PAGE "\""},
        {"resource", resource},
        {"occurred_at", "\"2026-11-27T10:00:00.000Z\""},
        {"received_at", "\"" RECEIVED_1 "\""},
        {"request_id", request},
        {"payload", payload},
    };
    hf_buf b = {0};
    bool replaced = false;
    hf_buf_putc(&b, '{');
    for (size_t i = 0; i < HF_ARRAY_LEN(members); i++) {
        if (drop && strcmp(drop, members[i][0]) == 0)
            continue;
        bool mine = name && strcmp(name, members[i][0]) == 0;
        replaced |= mine;
        hf_buf_printf(&b, "%s\"%s\":%s", b.len > 1 ? "," : "", members[i][0],
                      mine ? value : members[i][1]);
    }
    if (name && !replaced)
        hf_buf_printf(&b, ",\"%s\":%s", name, value);
    hf_buf_putc(&b, '}');
    free(payload);
    free(request);
    free(resource);
    free(id);
    return hf_buf_steal(&b);
}

/* One schema violation per message: (mid, member dropped, member name, its JSON value). */
typedef struct violation {
    const char *mid, *drop, *name, *value;
} violation;

/* Produces each violation, then a good event; waits until intake has taken all in and fails
 * the test, naming them, unless every violation was dead-lettered and recorded nothing while
 * the good event got its run. */
static void expect_dead_lettered(fixture *f, const violation *v, size_t nv)
{
    worker_start(f, 0, GROUP);
    for (size_t i = 0; i < nv; i++) {
        char *env = envelope_members(v[i].mid, v[i].drop, v[i].name, v[i].value);
        produce(f, MESSAGING, "meta:" PAGE, env);
        free(env);
    }
    send_event(f, "m_schema_good", PAGE, "message", "pickup after the bad ones");
    assert_int_equal(committed_offset(f, GROUP, (int64_t)nv + 1, WAIT_MS), (int64_t)nv + 1);
    assert_int_equal(
        sql_count(f->db, "SELECT count(*) FROM runs WHERE event_id = 'meta:m_schema_good'"), 1);
    char *accepted = pgf_value(f->db, "SELECT string_agg(event_id, ',' ORDER BY kafka_offset) "
                                      "FROM event_keys WHERE event_id <> 'meta:m_schema_good'");
    long long runs =
        sql_count(f->db, "SELECT count(*) FROM runs WHERE event_id <> 'meta:m_schema_good'");
    dead_letter d[16];
    int64_t end = -1;
    size_t n = dead_letters_read(f, d, HF_ARRAY_LEN(d), nv, &end);
    dead_letters_free(d, n);
    char why[1024];
    snprintf(why, sizeof why,
             "%zu of %zu schema violations dead-lettered; taken in as events: %s "
             "(%lld runs)",
             n, nv, accepted ? accepted : "none", runs);
    bool bad = accepted || runs != 0 || n != nv;
    free(accepted);
    if (bad)
        fail_msg("%s", why);
}

/* Every member schemas/envelope.schema.json requires must be there: an envelope missing one
 * goes to the dead-letter topic with the reason (README), instead of running workflows on a
 * trigger without occurred_at, received_at or request_id. */
static void envelope_missing_a_required_member_is_dead_lettered(void **state)
{
    static const violation v[] = {
        {"m_req_native", "native_type", NULL, NULL},
        {"m_req_resource", "resource", NULL, NULL},
        {"m_req_occurred", "occurred_at", NULL, NULL},
        {"m_req_received", "received_at", NULL, NULL},
        {"m_req_request", "request_id", NULL, NULL},
    };
    expect_dead_lettered(*state, v, HF_ARRAY_LEN(v));
}

/* Members of the wrong form are dead-lettered: an id without a known platform's prefix (it could
 * collide with another platform's in event_keys), an unknown provider, an empty native_type or
 * request_id, a resource that is neither a string nor null. */
static void envelope_member_of_the_wrong_form_is_dead_lettered(void **state)
{
    static const violation v[] = {
        {"m_form_id", NULL, "id", "\"m_form_id_without_provider\""},
        {"m_form_provider", NULL, "provider", "\"acme\""},
        {"m_form_native", NULL, "native_type", "\"\""},
        {"m_form_request", NULL, "request_id", "\"\""},
        {"m_form_resource", NULL, "resource", "42"},
        {"m_form_id_prov", NULL, "id", "\"shopify:m_form_id_prov\""},
    };
    expect_dead_lettered(*state, v, HF_ARRAY_LEN(v));
}

/* An envelope with a member the schema does not have ("additionalProperties": false) is
 * dead-lettered, not carried into the run's trigger. */
static void envelope_with_an_unknown_member_is_dead_lettered(void **state)
{
    static const violation v[] = {
        {"m_extra_member", NULL, "tenant", "\"other\""},
    };
    expect_dead_lettered(*state, v, HF_ARRAY_LEN(v));
}

/* occurred_at and received_at must be date-times: "yesterday", an impossible date or a number
 * is dead-lettered. */
static void envelope_whose_times_are_not_date_times_is_dead_lettered(void **state)
{
    static const violation v[] = {
        {"m_time_occurred", NULL, "occurred_at", "\"yesterday\""},
        {"m_time_received", NULL, "received_at", "\"2026-13-45T99:00:00Z\""},
        {"m_time_number", NULL, "occurred_at", "1773826887"},
    };
    expect_dead_lettered(*state, v, HF_ARRAY_LEN(v));
}

/* A member given twice is dead-lettered (guarantees 2 and 5): intake would read the first copy
 * for the dedupe id, the tenant and the filter, while the run's jsonb trigger keeps the last, so
 * a run would execute on another id or a payload its filter never saw. */
static void envelope_with_a_member_twice_is_dead_lettered(void **state)
{
    fixture *f = *state;
    worker_start(f, 0, GROUP);
    char *env = envelope_members("m_twice_id", NULL, NULL, NULL);
    env[strlen(env) - 1] = '\0';
    char *twice_id = xconcat(env, ",\"id\":\"meta:m_twice_other\"}", NULL);
    free(env);
    env = envelope_members("m_twice_payload", NULL, NULL, NULL);
    env[strlen(env) - 1] = '\0';
    char *twice_payload = xconcat(
        env, ",\"payload\":{\"message\":{\"mid\":\"x\",\"text\":\"cancel everything\"}}}", NULL);
    free(env);
    produce(f, MESSAGING, "meta:" PAGE, twice_id);
    produce(f, MESSAGING, "meta:" PAGE, twice_payload);
    send_event(f, "m_twice_good", PAGE, "message", "pickup after the doubled ones");
    assert_int_equal(committed_offset(f, GROUP, 3, WAIT_MS), 3);
    assert_int_equal(
        sql_count(f->db, "SELECT count(*) FROM runs WHERE event_id = 'meta:m_twice_good'"), 1);

    /* Either the doubled envelopes are dead-lettered, or their runs execute on exactly what
     * intake deduped and matched. */
    char *mismatch = pgf_value(f->db, "SELECT string_agg(event_id || ' runs on ' || "
                                      "(trigger->>'id') || ' / ' || "
                                      "(trigger#>>'{payload,message,text}'), '; ') FROM runs "
                                      "WHERE trigger->>'id' IS DISTINCT FROM event_id "
                                      "OR trigger#>>'{payload,message,text}' NOT LIKE '%pickup%'");
    free(twice_payload);
    free(twice_id);
    if (mismatch) {
        char why[512];
        snprintf(why, sizeof why, "%s", mismatch);
        free(mismatch);
        fail_msg("runs executing on another event than the one recorded: %s", why);
    }
}

#define ORDERING_TOPIC "hookflow.webhooks.ordering"

static int64_t lag_of(worker *w, const char *topic, const char *partition)
{
    char labels[128];
    snprintf(labels, sizeof labels, "topic=\"%s\",partition=\"%s\"", topic, partition);
    return hf_gauge_value(hf_metrics_gauge(w->metrics, "hookflow_engine_consumer_lag", "", labels));
}

/* Lag is published per assigned partition from librdkafka's statistics; a partition that moved
 * to another worker in a rebalance drops to 0 here, or the sum over the workers (what an
 * autoscaler reads) would count it twice. Unassigned partitions are never published. */
static void lag_of_a_partition_assigned_elsewhere_drops_to_zero(void **state)
{
    fixture *f = *state;
    worker *w = worker_start(f, 0, GROUP);
    static const char first[] = "{\"topics\":{\"t.lag\":{\"partitions\":{"
                                "\"0\":{\"desired\":true,\"consumer_lag\":5},"
                                "\"1\":{\"desired\":true,\"consumer_lag\":7},"
                                "\"2\":{\"desired\":false,\"consumer_lag\":9},"
                                "\"-1\":{\"desired\":false,\"consumer_lag\":-1}}}}}";
    engine_intake_publish_lag(w->intake, first, strlen(first));
    assert_int_equal(lag_of(w, "t.lag", "0"), 5);
    assert_int_equal(lag_of(w, "t.lag", "1"), 7);
    hf_buf out = {0};
    hf_metrics_render(w->metrics, &out);
    assert_null(strstr(out.data, "partition=\"2\""));
    hf_buf_free(&out);

    /* A rebalance gave partition 1 to another worker and 2 to this one. */
    static const char second[] = "{\"topics\":{\"t.lag\":{\"partitions\":{"
                                 "\"0\":{\"desired\":true,\"consumer_lag\":3},"
                                 "\"1\":{\"desired\":false,\"consumer_lag\":7},"
                                 "\"2\":{\"desired\":true,\"consumer_lag\":-1}}}}}";
    engine_intake_publish_lag(w->intake, second, strlen(second));
    assert_int_equal(lag_of(w, "t.lag", "0"), 3);
    assert_int_equal(lag_of(w, "t.lag", "1"), 0);
    assert_int_equal(lag_of(w, "t.lag", "2"), 0); /* -1: not known yet */

    /* The topic is gone from the statistics altogether (unsubscribed): 0 as well. */
    engine_intake_publish_lag(w->intake, "{\"topics\":{}}", 13);
    assert_int_equal(lag_of(w, "t.lag", "0"), 0);
}

/* A worker with nothing to consume is ready as soon as PostgreSQL answers: readiness must not
 * wait for the first event (an idle worker would fail its rollout). */
static void idle_worker_is_healthy(void **state)
{
    fixture *f = *state;
    worker *w = worker_start(f, 0, GROUP);
    int64_t deadline = hf_now_ms() + 5000;
    while (!engine_intake_healthy(w->intake) && hf_now_ms() < deadline)
        usleep(20000);
    assert_true(engine_intake_healthy(w->intake));
    assert_int_equal(counter(w, "hookflow_engine_events_consumed_total"), 0);
}

#define INTAKE_TEST(f) cmocka_unit_test_setup_teardown(f, fixture_setup, fixture_teardown)

int main(void)
{
    /* Hermetic: no configuration file; only error lines on stderr. */
    unsetenv("HOOKFLOW_CONFIG_FILE");
    hf_log_init("test_db_intake", HF_LOG_ERROR, HF_LOG_TEXT);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest matching[] = {
        cmocka_unit_test(matching_event_creates_one_run_with_trigger_tenant_and_version),
        cmocka_unit_test(filter_that_does_not_match_creates_no_run),
        cmocka_unit_test(disabled_workflow_creates_no_run),
        cmocka_unit_test(unknown_account_creates_no_run_and_does_not_stall),
        cmocka_unit_test(event_matching_two_workflows_creates_two_runs),
    };
    const struct CMUnitTest lifecycle[] = {
        INTAKE_TEST(same_event_id_twice_creates_one_run_also_after_a_restart),
        INTAKE_TEST(offsets_are_committed_only_after_the_runs_are_inserted),
        INTAKE_TEST(malformed_messages_are_dead_lettered_and_the_batch_goes_on),
        INTAKE_TEST(event_the_database_rejects_is_dead_lettered_alone),
        INTAKE_TEST(idle_worker_is_healthy),
        INTAKE_TEST(filter_that_cannot_be_evaluated_fails_its_run),
        INTAKE_TEST(run_started_at_intake_is_stamped_after_the_run_before_it),
        INTAKE_TEST(lag_of_a_partition_assigned_elsewhere_drops_to_zero),
        INTAKE_TEST(transient_database_refusal_does_not_dead_letter_good_events),
        INTAKE_TEST(event_by_event_recording_claims_no_more_than_the_concurrency),
        INTAKE_TEST(envelope_missing_a_required_member_is_dead_lettered),
        INTAKE_TEST(envelope_member_of_the_wrong_form_is_dead_lettered),
        INTAKE_TEST(envelope_with_an_unknown_member_is_dead_lettered),
        INTAKE_TEST(envelope_whose_times_are_not_date_times_is_dead_lettered),
        INTAKE_TEST(envelope_with_a_member_twice_is_dead_lettered),
    };
    int failed = cmocka_run_group_tests_name("matching", matching, shared_setup, fixture_teardown);
    failed += cmocka_run_group_tests_name("lifecycle", lifecycle, NULL, km_reapers_join);
    km_reapers_join(NULL);
    curl_global_cleanup();
    return failed;
}
