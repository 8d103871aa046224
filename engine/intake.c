/* intake: the consumer side of a worker. Per batch of Kafka messages, one PostgreSQL transaction
 * dedupes the event ids, finds each event's tenant from its connection, matches the tenant's
 * enabled workflows (trigger + filter) and inserts their runs; only then are the offsets
 * committed, so a crash in between replays into the dedupe. */
#include "intake.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crypto.h"
#include "expr.h"
#include "json.h"
#include "kafka.h"
#include "log.h"
#include "pg.h"

/* One consumed message and what intake made of it. */
typedef struct item {
    rd_kafka_message_t *msg;
    hf_json env; /* parsed envelope, NULL when dead-lettered */
    const char *id, *provider, *account, *event;
    char *ordering_key;
    char *text;  /* the envelope as received (NUL-terminated copy) */
    bool is_new; /* id not seen before */
    char dead_reason[160];
} item;

struct engine_intake {
    const engine_config *cfg;
    char *worker_id;
    engine_defs *defs;
    hf_metrics *metrics;
    engine_executor *executor;
    engine_handoff *handoff; /* runs of the last committed batch to hand over */
    size_t nhandoff, caphandoff;
    rd_kafka_t *rk;
    hf_producer *deadletter;
    char *deadletter_topic;
    hf_topic *deadletter_rkt;
    PGconn *db;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    atomic_bool db_ok;
    char failed_state[6]; /* SQLSTATE of record_batch's last failed statement ("" if none) */
    atomic_int dl_pending;
    atomic_bool dl_failed;
    hf_counter *consumed, *duplicates, *runs_created, *dead, *batch_retries;
    hf_counter *skipped_filter, *skipped_definition; /* workflows that could not be matched */
    hf_histogram *batch_seconds;
    /* Every lag gauge this worker has published: one for a partition it no longer has is set to
     * 0, so that summing the workers' lag does not count a partition twice after a rebalance. */
    pthread_mutex_t lag_lock;
    hf_gauge **lag_gauges;
    size_t nlag, caplag;
};

static void on_deadletter_delivery(void *opaque, const char *err)
{
    engine_intake *in = opaque;
    if (err) {
        atomic_store(&in->dl_failed, true);
        hf_log_kv(HF_LOG_ERROR, "intake.deadletter_failed", "error", err, NULL);
    }
    atomic_fetch_sub(&in->dl_pending, 1);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    hf_log_kv(HF_LOG_WARN, "kafka.error", "code", rd_kafka_err2name(err), "reason", reason, NULL);
}

void engine_intake_publish_lag(engine_intake *in, const char *json, size_t len)
{
    char err[128];
    hf_json root = hf_json_parse(json, len, err, sizeof err);
    hf_json topics = hf_json_get(root, "topics");
    pthread_mutex_lock(&in->lag_lock);
    size_t before = in->nlag;
    bool *current = xcalloc(before + 1, sizeof *current);
    for (size_t t = 0; t < hf_json_len(topics); t++) {
        const char *topic;
        hf_json tj = hf_json_member(topics, t, &topic);
        hf_json parts = hf_json_get(tj, "partitions");
        for (size_t p = 0; p < hf_json_len(parts); p++) {
            const char *pid;
            hf_json pj = hf_json_member(parts, p, &pid);
            long long lag;
            if (strcmp(pid, "-1") == 0 || !YAJL_IS_TRUE(hf_json_get(pj, "desired")) ||
                !hf_json_int(hf_json_get(pj, "consumer_lag"), &lag))
                continue;
            /* Kafka topic names run to 249 characters: built to size, never cut. */
            hf_buf labels = {0};
            hf_buf_puts(&labels, "topic=\"");
            hf_metrics_escape_label(&labels, topic);
            hf_buf_puts(&labels, "\",partition=\"");
            hf_metrics_escape_label(&labels, pid);
            hf_buf_putc(&labels, '"');
            hf_gauge *g = hf_metrics_gauge(in->metrics, "hookflow_engine_consumer_lag",
                                           "Messages behind the partition's end, per assigned "
                                           "partition (0 once it is assigned elsewhere)",
                                           labels.data);
            hf_buf_free(&labels);
            hf_gauge_set(g, lag < 0 ? 0 : lag);
            size_t k = 0;
            while (k < in->nlag && in->lag_gauges[k] != g)
                k++;
            if (k < before) {
                current[k] = true;
            } else if (k == in->nlag) {
                if (in->nlag == in->caplag) {
                    in->caplag = in->caplag ? 2 * in->caplag : 16;
                    in->lag_gauges = xrealloc(in->lag_gauges, in->caplag * sizeof *in->lag_gauges);
                }
                in->lag_gauges[in->nlag++] = g;
            }
        }
    }
    for (size_t k = 0; k < before; k++)
        if (!current[k])
            hf_gauge_set(in->lag_gauges[k], 0);
    pthread_mutex_unlock(&in->lag_lock);
    free(current);
    hf_json_free(root);
}

static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    (void)rk;
    engine_intake_publish_lag(opaque, json, len);
    return 0; /* librdkafka frees json */
}

static char *default_topics(const engine_config *cfg)
{
    return xasprintf(
        "%s.webhooks.accounting,%s.webhooks.marketing-automation,%s.webhooks.messaging",
        cfg->topic_prefix, cfg->topic_prefix, cfg->topic_prefix);
}

engine_intake *engine_intake_new(const engine_config *cfg, const char *worker_id, engine_defs *defs,
                                 hf_metrics *metrics, engine_executor *executor, char *err,
                                 size_t errlen)
{
    engine_intake *in = xcalloc(1, sizeof *in);
    in->cfg = cfg;
    in->worker_id = xstrdup(worker_id);
    in->defs = defs;
    in->metrics = metrics;
    in->executor = executor;
    in->deadletter_topic = xasprintf("%s.deadletter", cfg->topic_prefix);
    pthread_mutex_init(&in->lag_lock, NULL);

    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const struct {
        const char *k, *v;
    } defaults[] = {
        {"bootstrap.servers", cfg->kafka_brokers},
        {"group.id", cfg->group},
        {"client.id", "hookflow-engine"},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        {"session.timeout.ms", "10000"},
        {"statistics.interval.ms", "5000"},
        {"partition.assignment.strategy", "range,roundrobin"},
        /* Latency: a fetch returns within 10 ms when nothing new arrives (webhook traffic is
         * light per partition; the default 500 ms would sit in every event's latency). */
        {"fetch.wait.max.ms", "10"},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(defaults); i++) {
        if (rd_kafka_conf_set(conf, defaults[i].k, defaults[i].v, errstr, sizeof errstr) !=
            RD_KAFKA_CONF_OK) {
            hf_err(err, errlen, "kafka: %s: %s", defaults[i].k, errstr);
            rd_kafka_conf_destroy(conf);
            goto fail;
        }
    }
    if (hf_kafka_conf_apply_env(conf, err, errlen) != 0) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd_kafka_conf_set_opaque(conf, in);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_stats_cb(conf, on_stats);
    /* rd_kafka_new() takes ownership of conf on success only. */
    in->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!in->rk) {
        rd_kafka_conf_destroy(conf);
        hf_err(err, errlen, "kafka: cannot create consumer: %s", errstr);
        goto fail;
    }
    rd_kafka_poll_set_consumer(in->rk);

    char *topics = cfg->topics[0] ? xstrdup(cfg->topics) : default_topics(cfg);
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(4);
    char *save = NULL;
    for (char *t = strtok_r(topics, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        if (*t)
            rd_kafka_topic_partition_list_add(subs, t, RD_KAFKA_PARTITION_UA);
    }
    free(topics);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(in->rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (e) {
        hf_err(err, errlen, "kafka: cannot subscribe: %s", rd_kafka_err2str(e));
        goto fail;
    }

    hf_producer_options popts = {.brokers = cfg->kafka_brokers,
                                 .message_timeout_ms = 30000,
                                 .queue_max_messages = 100000,
                                 .linger_ms = 5,
                                 .client_id = "hookflow-engine-deadletter"};
    in->deadletter = hf_producer_new(&popts, on_deadletter_delivery, err, errlen);
    if (!in->deadletter)
        goto fail;
    in->deadletter_rkt = hf_producer_topic(in->deadletter, in->deadletter_topic);

    in->consumed = hf_metrics_counter(metrics, "hookflow_engine_events_consumed_total",
                                      "Envelopes read from Kafka", NULL);
    in->duplicates =
        hf_metrics_counter(metrics, "hookflow_engine_events_duplicate_total",
                           "Envelopes whose id was already recorded, or whose runs all existed "
                           "(redeliveries)",
                           NULL);
    in->runs_created = hf_metrics_counter(metrics, "hookflow_engine_runs_created_total",
                                          "Runs created by intake", NULL);
    in->dead = hf_metrics_counter(metrics, "hookflow_engine_deadletter_total",
                                  "Messages sent to the dead-letter topic", NULL);
    in->batch_retries = hf_metrics_counter(metrics, "hookflow_engine_intake_retries_total",
                                           "Intake batches retried after a database error", NULL);
    static const char skipped_help[] =
        "Events a workflow was not run for because its filter could not be evaluated or its "
        "definition could not be loaded (each logged with the workflow and event)";
    in->skipped_filter = hf_metrics_counter(metrics, "hookflow_engine_workflow_skipped_total",
                                            skipped_help, "reason=\"filter_error\"");
    in->skipped_definition = hf_metrics_counter(metrics, "hookflow_engine_workflow_skipped_total",
                                                skipped_help, "reason=\"bad_definition\"");
    static const double bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5};
    in->batch_seconds =
        hf_metrics_histogram(metrics, "hookflow_engine_intake_batch_seconds",
                             "Time to record one intake batch", NULL, bounds, HF_ARRAY_LEN(bounds));
    return in;
fail:
    engine_intake_free(in);
    return NULL;
}

/* ---- one batch ---------------------------------------------------------------------------- */

static void item_clear(item *it)
{
    hf_json_free(it->env);
    free(it->ordering_key);
    free(it->text);
    memset(it, 0, sizeof *it);
}

static bool nonempty_string(hf_json v)
{
    const char *s = hf_json_str(v);
    return s && *s;
}

/* Whether env is an envelope as schemas/envelope.schema.json describes it (what ingest
 * produces): exactly its members, each once (a member given twice would be read here as its first
 * value and stored by PostgreSQL's jsonb as its last), of their types. */
static bool envelope_valid(hf_json env, char *why, size_t whylen)
{
    static const char *const members[] = {"id",         "provider", "event",       "native_type",
                                          "account",    "resource", "occurred_at", "received_at",
                                          "request_id", "payload"};
    static const char *const providers[] = {"xero",    "quickbooks", "hubspot",
                                            "klaviyo", "twilio",     "meta"};
    if (!hf_json_is_object(env)) {
        snprintf(why, whylen, "envelope is not a JSON object");
        return false;
    }
    for (size_t i = 0; i < hf_json_len(env); i++) {
        const char *key;
        (void)hf_json_member(env, i, &key);
        bool known = false;
        for (size_t k = 0; k < HF_ARRAY_LEN(members) && !known; k++)
            known = strcmp(key, members[k]) == 0;
        if (known && hf_json_member_repeats(env, i)) {
            snprintf(why, whylen, "envelope field \"%.40s\" is given twice", key);
            return false;
        }
        if (!known) {
            snprintf(why, whylen, "envelope has an unknown field \"%.40s\"", key);
            return false;
        }
    }
    static const char *const strings[] = {"id",          "provider", "event",
                                          "native_type", "account",  "request_id"};
    for (size_t i = 0; i < HF_ARRAY_LEN(strings); i++) {
        if (!nonempty_string(hf_json_get(env, strings[i]))) {
            snprintf(why, whylen, "envelope field \"%s\" is missing or not a string", strings[i]);
            return false;
        }
    }
    static const char *const times[] = {"occurred_at", "received_at"};
    for (size_t i = 0; i < HF_ARRAY_LEN(times); i++) {
        int64_t us;
        if (!hf_parse_rfc3339_us(hf_json_str(hf_json_get(env, times[i])), &us)) {
            snprintf(why, whylen, "envelope field \"%s\" is not an RFC 3339 time", times[i]);
            return false;
        }
    }
    hf_json resource = hf_json_get(env, "resource");
    if (!resource || !(YAJL_IS_STRING(resource) || YAJL_IS_NULL(resource))) {
        snprintf(why, whylen, "envelope field \"resource\" is missing or not a string or null");
        return false;
    }
    if (!hf_json_is_object(hf_json_get(env, "payload"))) {
        snprintf(why, whylen, "envelope payload is not an object");
        return false;
    }
    const char *provider = hf_json_str(hf_json_get(env, "provider"));
    const char *id = hf_json_str(hf_json_get(env, "id"));
    bool provider_ok = false, id_ok = false;
    for (size_t i = 0; i < HF_ARRAY_LEN(providers); i++) {
        size_t n = strlen(providers[i]);
        provider_ok = provider_ok || strcmp(provider, providers[i]) == 0;
        id_ok = id_ok || (strncmp(id, providers[i], n) == 0 && id[n] == ':' && id[n + 1]);
    }
    if (!provider_ok || !id_ok) {
        snprintf(why, whylen, "envelope %s is not one of a known platform's",
                 provider_ok ? "id" : "provider");
        return false;
    }
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* How many different event ids (column 2) the rows of the runs insert hold. */
static size_t distinct_event_ids(PGresult *ins)
{
    int rows = ins ? PQntuples(ins) : 0;
    if (rows == 0)
        return 0;
    const char **ids = xmalloc((size_t)rows * sizeof *ids);
    for (int row = 0; row < rows; row++)
        ids[row] = PQgetvalue(ins, row, 2);
    qsort(ids, (size_t)rows, sizeof *ids, cmp_str);
    size_t distinct = 1;
    for (int row = 1; row < rows; row++)
        distinct += strcmp(ids[row - 1], ids[row]) != 0;
    free(ids);
    return distinct;
}

/* Parses and checks one envelope; on failure sets dead_reason and leaves env NULL. */
static void item_parse(item *it)
{
    const rd_kafka_message_t *m = it->msg;
    it->text = xstrndup(m->payload ? m->payload : "", m->len);
    char err[128];
    if (!m->payload || m->len == 0) {
        snprintf(it->dead_reason, sizeof it->dead_reason, "empty message");
        return;
    }
    it->env = hf_json_parse(m->payload, m->len, err, sizeof err);
    if (!it->env) {
        snprintf(it->dead_reason, sizeof it->dead_reason, "envelope is not JSON: %s", err);
        return;
    }
    if (!envelope_valid(it->env, it->dead_reason, sizeof it->dead_reason))
        goto bad;
    it->id = hf_json_str(hf_json_get(it->env, "id"));
    it->provider = hf_json_str(hf_json_get(it->env, "provider"));
    it->account = hf_json_str(hf_json_get(it->env, "account"));
    it->event = hf_json_str(hf_json_get(it->env, "event"));
    const char *resource = hf_json_str(hf_json_get(it->env, "resource"));
    /* Events about one resource of one account start their runs in event order; events with
     * no resource carry no ordering constraint (a key of their own). */
    it->ordering_key = resource && *resource
                           ? xasprintf("%s:%s:%s", it->provider, it->account, resource)
                           : xasprintf("event:%s", it->id);
    return;
bad:
    /* No env means "dead-letter this one" to the rest of intake: without it the batch would
     * try to record an event with no id. */
    hf_json_free(it->env);
    it->env = NULL;
}

static void dead_letter(engine_intake *in, item *it)
{
    const rd_kafka_message_t *m = it->msg;
    hf_buf v = {0};
    hf_buf_puts(&v, "{\"reason\":");
    hf_json_append_cstr(&v, it->dead_reason);
    hf_buf_printf(&v, ",\"topic\":");
    hf_json_append_cstr(&v, rd_kafka_topic_name(m->rkt));
    hf_buf_printf(&v, ",\"partition\":%d,\"offset\":%lld,\"worker\":", m->partition,
                  (long long)m->offset);
    hf_json_append_cstr(&v, in->worker_id);
    /* The original bytes, base64: they may be anything at all. */
    char *b64 = xmalloc(hf_base64_len(m->len));
    hf_base64_encode(m->payload ? m->payload : (const unsigned char *)"", m->len, b64);
    hf_buf_puts(&v, ",\"value_base64\":");
    hf_json_append_cstr(&v, b64);
    hf_buf_puts(&v, "}");
    free(b64);
    char err[256];
    atomic_fetch_add(&in->dl_pending, 1);
    if (hf_producer_send(in->deadletter, in->deadletter_rkt, m->key, m->key_len, v.data, v.len, in,
                         err, sizeof err) != 0) {
        atomic_fetch_sub(&in->dl_pending, 1);
        atomic_store(&in->dl_failed, true);
        hf_log_kv(HF_LOG_ERROR, "intake.deadletter_failed", "error", err, NULL);
    }
    hf_log_kv(HF_LOG_WARN, "intake.deadletter", "reason", it->dead_reason, "topic",
              rd_kafka_topic_name(m->rkt), NULL);
    hf_counter_add(in->dead, 1);
    hf_buf_free(&v);
}

typedef struct run_row {
    size_t item;
    char *tenant_id, *workflow_id;
    int version;
} run_row;

/* {"id","slug","name","environment"} of a candidate row's tenant. */
static void append_tenant(hf_buf *b, PGresult *cand, int row)
{
    hf_buf_puts(b, "{\"id\":");
    hf_json_append_cstr(b, PQgetvalue(cand, row, 1));
    hf_buf_puts(b, ",\"slug\":");
    hf_json_append_cstr(b, PQgetvalue(cand, row, 4));
    hf_buf_puts(b, ",\"name\":");
    hf_json_append_cstr(b, PQgetvalue(cand, row, 5));
    hf_buf_puts(b, ",\"environment\":");
    hf_json_append_cstr(b, PQgetvalue(cand, row, 6));
    hf_buf_putc(b, '}');
}

/* Builds {"event": <envelope>, "tenant": {...}, "nodes": {}} for filters. */
static hf_json filter_context(const item *it, PGresult *cand, int row)
{
    hf_buf b = {0};
    hf_buf_puts(&b, "{\"event\":");
    hf_buf_puts(&b, it->text);
    hf_buf_puts(&b, ",\"tenant\":");
    append_tenant(&b, cand, row);
    hf_buf_puts(&b, ",\"nodes\":{}}");
    char err[64];
    hf_json ctx = hf_json_parse(b.data, b.len, err, sizeof err);
    hf_buf_free(&b);
    return ctx;
}

/* Keeps the SQLSTATE of a failed statement: whether the database refused the data (a bad
 * event, to set aside) or failed for a while (read-only after a failover, a deadlock, a full
 * disk: to retry, never to dead-letter good events for). */
static void note_failure(engine_intake *in, const PGresult *res)
{
    snprintf(in->failed_state, sizeof in->failed_state, "%s", hf_pg_sqlstate(res));
}

/* Appends the columns of one run of candidate row r (workflow version) for item it. */
static void add_run(hf_pg_array *tenant, hf_pg_array *wf, hf_pg_array *ver, hf_pg_array *event,
                    hf_pg_array *okey, hf_pg_array *oseq, hf_pg_array *trigger, PGresult *cand,
                    int r, long long version, const item *it)
{
    hf_pg_array_add(tenant, PQgetvalue(cand, r, 1));
    hf_pg_array_add(wf, PQgetvalue(cand, r, 2));
    hf_pg_array_add_int(ver, version);
    hf_pg_array_add(event, it->id);
    hf_pg_array_add(okey, it->ordering_key);
    hf_pg_array_add_int(oseq, it->msg->offset);
    hf_pg_array_add(trigger, it->text);
}

/* The whole batch in one transaction. 0, or an HF_PG_* error with err (and in->failed_state). */
static int record_batch(engine_intake *in, item *items, size_t n, size_t *runs_out, char *err,
                        size_t errlen)
{
    in->failed_state[0] = '\0';
    hf_pg_array ids = {0}, providers = {0}, accounts = {0}, topics = {0}, parts = {0},
                offsets = {0};
    PGresult *res = NULL, *cand = NULL;
    /* Counted once the transaction commits: a retried batch would count them again. */
    size_t duplicates = 0, filter_errors = 0, bad_definitions = 0;
    int rc = hf_pg_begin(in->db, err, errlen);
    if (rc != HF_PG_OK)
        goto done;
    for (size_t i = 0; i < n; i++) {
        items[i].is_new = false;
        if (!items[i].env)
            continue;
        hf_pg_array_add(&ids, items[i].id);
        hf_pg_array_add(&providers, items[i].provider);
        hf_pg_array_add(&accounts, items[i].account);
        hf_pg_array_add(&topics, rd_kafka_topic_name(items[i].msg->rkt));
        hf_pg_array_add_int(&parts, items[i].msg->partition);
        hf_pg_array_add_int(&offsets, items[i].msg->offset);
    }
    if (ids.n == 0) {
        rc = hf_pg_commit(in->db, err, errlen);
        goto done;
    }
    const char *p1[] = {hf_pg_array_text(&ids),      hf_pg_array_text(&providers),
                        hf_pg_array_text(&accounts), hf_pg_array_text(&topics),
                        hf_pg_array_text(&parts),    hf_pg_array_text(&offsets)};
    rc = hf_pg_exec(in->db,
                    "INSERT INTO event_keys (event_id, provider, account, kafka_topic, "
                    "kafka_partition, kafka_offset) "
                    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
                    "$5::int[], $6::bigint[]) "
                    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                    6, p1, &res, err, errlen);
    if (rc != HF_PG_OK) {
        note_failure(in, res);
        goto done;
    }
    /* Mark the first item of each new id (a batch may hold the same id twice). */
    for (int r = 0; r < PQntuples(res); r++) {
        const char *id = PQgetvalue(res, r, 0);
        for (size_t i = 0; i < n; i++) {
            if (items[i].env && strcmp(items[i].id, id) == 0) {
                items[i].is_new = true;
                break;
            }
        }
    }
    size_t nnew = (size_t)PQntuples(res);
    PQclear(res);
    res = NULL;
    duplicates = ids.n - nnew;
    if (nnew == 0) {
        rc = hf_pg_commit(in->db, err, errlen);
        goto done;
    }

    /* Candidate workflows for every new event, with the tenant found from the connection. */
    hf_pg_array idx = {0}, cprov = {0}, cacc = {0}, cevt = {0};
    for (size_t i = 0; i < n; i++) {
        if (!items[i].is_new)
            continue;
        hf_pg_array_add_int(&idx, (long long)i);
        hf_pg_array_add(&cprov, items[i].provider);
        hf_pg_array_add(&cacc, items[i].account);
        hf_pg_array_add(&cevt, items[i].event);
    }
    const char *p2[] = {hf_pg_array_text(&idx), hf_pg_array_text(&cprov), hf_pg_array_text(&cacc),
                        hf_pg_array_text(&cevt)};
    rc = hf_pg_exec(in->db,
                    "SELECT k.idx, t.id, w.id, w.current_version, t.slug, t.name, t.environment "
                    "FROM unnest($1::int[], $2::text[], $3::text[], $4::text[]) "
                    "  AS k(idx, provider, account, event) "
                    "JOIN connections c ON c.connector = k.provider AND c.account = k.account "
                    "  AND c.status = 'active' "
                    "JOIN tenants t ON t.id = c.tenant_id "
                    "JOIN workflows w ON w.tenant_id = c.tenant_id "
                    "  AND w.trigger_connector = k.provider AND w.trigger_event = k.event "
                    "  AND w.enabled AND w.deleted_at IS NULL "
                    "ORDER BY k.idx",
                    4, p2, &cand, err, errlen);
    hf_pg_array_free(&idx);
    hf_pg_array_free(&cprov);
    hf_pg_array_free(&cacc);
    hf_pg_array_free(&cevt);
    if (rc != HF_PG_OK) {
        note_failure(in, cand);
        goto done;
    }

    hf_pg_array r_tenant = {0}, r_wf = {0}, r_ver = {0}, r_event = {0}, r_okey = {0}, r_oseq = {0},
                r_trigger = {0}, r_claim = {0}, r_failed = {0};
    size_t nruns = 0;
    /* Where each run came from (item, candidate row), to hand the claimed ones over. */
    size_t *src_item = xcalloc((size_t)PQntuples(cand) + 1, sizeof *src_item);
    int *src_row = xcalloc((size_t)PQntuples(cand) + 1, sizeof *src_row);
    bool *src_failed = xcalloc((size_t)PQntuples(cand) + 1, sizeof *src_failed);
    /* Runs claimed earlier in this batch (event by event) are not the executor's yet. */
    long long budget = engine_executor_room(in->executor) - (long long)in->nhandoff;
    /* The filter context of the last (item, tenant): rows come ordered by item, and an event
     * with several workflows of one tenant needs it built once. */
    hf_json ctx = NULL;
    long long ctx_item = -1;
    int ctx_row = -1;
    for (int r = 0; r < PQntuples(cand); r++) {
        long long i;
        if (!hf_parse_ll(PQgetvalue(cand, r, 0), &i) || i < 0 || (size_t)i >= n)
            continue;
        item *it = &items[i];
        long long version = 0;
        (void)hf_parse_ll(PQgetvalue(cand, r, 3), &version);
        char derr[256];
        const wf_def *def = engine_defs_get(in->defs, in->db, PQgetvalue(cand, r, 2), (int)version,
                                            NULL, derr, sizeof derr);
        if (!def) {
            hf_log_kv(HF_LOG_ERROR, "intake.bad_workflow", "workflow", PQgetvalue(cand, r, 2),
                      "error", derr, NULL);
            bad_definitions++;
            continue;
        }
        if (def->filter) {
            if (ctx_item != i || strcmp(PQgetvalue(cand, ctx_row, 1), PQgetvalue(cand, r, 1))) {
                hf_json_free(ctx);
                ctx = filter_context(it, cand, r);
                ctx_item = i;
                ctx_row = r;
            }
            bool pass = false;
            char ferr[256] = "the event could not be prepared for it";
            int frc = ctx ? wf_expr_eval_bool(def->filter, ctx, &pass, ferr, sizeof ferr) : -1;
            if (frc != 0) {
                hf_log_kv(HF_LOG_WARN, "intake.filter_error", "workflow", PQgetvalue(cand, r, 2),
                          "event_id", it->id, "error", ferr, NULL);
                filter_errors++;
                /* Recorded as a failed run: the tenant sees, in the workflow's runs, that this
                 * event was not acted on and why. */
                hf_buf why = {0};
                hf_buf_printf(&why, "the trigger filter could not be evaluated: %s", ferr);
                add_run(&r_tenant, &r_wf, &r_ver, &r_event, &r_okey, &r_oseq, &r_trigger, cand, r,
                        version, it);
                hf_pg_array_add(&r_claim, "f");
                hf_pg_array_add(&r_failed, why.data);
                hf_buf_free(&why);
                src_item[nruns] = (size_t)i;
                src_row[nruns] = r;
                src_failed[nruns] = true;
                nruns++;
                continue;
            }
            if (!pass)
                continue;
        }
        add_run(&r_tenant, &r_wf, &r_ver, &r_event, &r_okey, &r_oseq, &r_trigger, cand, r, version,
                it);
        hf_pg_array_add(&r_failed, NULL);
        /* Claim it at once if there is room and no earlier run of its ordering key in this
         * batch (the statement checks earlier batches). */
        bool claim = budget > 0;
        for (size_t k = 0; claim && k < nruns; k++)
            if (!src_failed[k] && strcmp(items[src_item[k]].ordering_key, it->ordering_key) == 0 &&
                items[src_item[k]].msg->offset != it->msg->offset)
                claim = false;
        if (claim)
            budget--;
        hf_pg_array_add(&r_claim, claim ? "t" : "f");
        src_item[nruns] = (size_t)i;
        src_row[nruns] = r;
        nruns++;
    }
    hf_json_free(ctx);
    PGresult *ins = NULL;
    if (nruns > 0) {
        char lease[24];
        snprintf(lease, sizeof lease, "%lld", in->cfg->lease_ms);
        const char *p3[] = {hf_pg_array_text(&r_tenant),
                            hf_pg_array_text(&r_wf),
                            hf_pg_array_text(&r_ver),
                            hf_pg_array_text(&r_event),
                            hf_pg_array_text(&r_okey),
                            hf_pg_array_text(&r_oseq),
                            hf_pg_array_text(&r_trigger),
                            hf_pg_array_text(&r_claim),
                            in->worker_id,
                            lease,
                            hf_pg_array_text(&r_failed)};
        rc = hf_pg_exec(
            in->db,
            "INSERT INTO runs (tenant_id, workflow_id, workflow_version, event_id, ordering_key, "
            "ordering_seq, trigger, status, lease_owner, lease_expires_at, started_at, attempt, "
            "error, finished_at) "
            "SELECT u.t, u.w, u.v, u.e, u.k, u.s, u.j::jsonb,"
            "  CASE WHEN u.f IS NOT NULL THEN 'failed' WHEN c.go THEN 'running' ELSE 'pending' "
            "  END, CASE WHEN c.go THEN $9 END,"
            "  CASE WHEN c.go THEN c.at + make_interval(secs => $10::double precision / 1000) "
            "  END, CASE WHEN c.go OR u.f IS NOT NULL THEN c.at END,"
            "  CASE WHEN c.go THEN 1 ELSE 0 END, u.f, CASE WHEN u.f IS NOT NULL THEN c.at END "
            "FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::text[], $6::bigint[], "
            "  $7::text[], $8::boolean[], $11::text[]) AS u(t, w, v, e, k, s, j, claim, f) "
            "CROSS JOIN LATERAL (SELECT u.claim AND NOT EXISTS (SELECT 1 FROM runs p"
            "  WHERE p.ordering_key = u.k AND p.ordering_seq < u.s AND p.status = 'pending')"
            /* The time it starts, not the transaction's: an earlier run of its key may have
             * been started by an executor since this transaction began (Guarantee 4 as the
             * runs record it). */
            "  AS go, clock_timestamp() AS at) c "
            "ON CONFLICT (workflow_id, event_id) DO NOTHING "
            "RETURNING id, workflow_id, event_id, status",
            11, p3, &ins, err, errlen);
        if (rc != HF_PG_OK)
            note_failure(in, ins);
    }
    hf_pg_array_free(&r_tenant);
    hf_pg_array_free(&r_wf);
    hf_pg_array_free(&r_ver);
    hf_pg_array_free(&r_event);
    hf_pg_array_free(&r_okey);
    hf_pg_array_free(&r_oseq);
    hf_pg_array_free(&r_trigger);
    hf_pg_array_free(&r_claim);
    hf_pg_array_free(&r_failed);
    if (rc == HF_PG_OK)
        rc = hf_pg_commit(in->db, err, errlen);
    if (rc == HF_PG_OK) {
        /* The runs inserted, not those asked for: a run already made for (workflow, event)
         * conflicts and is not returned. */
        *runs_out = ins ? (size_t)PQntuples(ins) : 0;
        /* An event delivered again after retention removed its id is new to event_keys, but
         * every run it asks for exists already (and conflicts): a redelivery all the same. They
         * are the events that asked for runs less those that got one. */
        bool *asked = xcalloc(n + 1, sizeof *asked);
        size_t nasked = 0;
        for (size_t k = 0; k < nruns; k++)
            if (!asked[src_item[k]]) {
                asked[src_item[k]] = true;
                nasked++;
            }
        free(asked);
        duplicates += nasked - distinct_event_ids(ins);
        /* Committed: the runs inserted as running are this worker's to start. */
        for (int row = 0; ins && row < PQntuples(ins); row++) {
            if (strcmp(PQgetvalue(ins, row, 3), "running") != 0)
                continue;
            for (size_t k = 0; k < nruns; k++) {
                int cr = src_row[k];
                if (strcmp(PQgetvalue(cand, cr, 2), PQgetvalue(ins, row, 1)) != 0 ||
                    strcmp(items[src_item[k]].id, PQgetvalue(ins, row, 2)) != 0)
                    continue;
                if (in->nhandoff == in->caphandoff) {
                    in->caphandoff = in->caphandoff ? in->caphandoff * 2 : 64;
                    in->handoff = xrealloc(in->handoff, in->caphandoff * sizeof *in->handoff);
                }
                engine_handoff *h = &in->handoff[in->nhandoff++];
                memset(h, 0, sizeof *h);
                snprintf(h->id, sizeof h->id, "%s", PQgetvalue(ins, row, 0));
                snprintf(h->tenant_id, sizeof h->tenant_id, "%s", PQgetvalue(cand, cr, 1));
                snprintf(h->workflow_id, sizeof h->workflow_id, "%s", PQgetvalue(cand, cr, 2));
                long long v = 0;
                (void)hf_parse_ll(PQgetvalue(cand, cr, 3), &v);
                h->version = (int)v;
                h->trigger = xstrdup(items[src_item[k]].text);
                hf_buf t = {0};
                append_tenant(&t, cand, cr);
                h->tenant_json = hf_buf_steal(&t);
                break;
            }
        }
    }
    PQclear(ins);
    free(src_item);
    free(src_row);
    free(src_failed);
done:
    if (rc != HF_PG_OK)
        hf_pg_rollback(in->db);
    else {
        hf_counter_add(in->duplicates, duplicates);
        hf_counter_add(in->skipped_filter, filter_errors);
        hf_counter_add(in->skipped_definition, bad_definitions);
    }
    PQclear(res);
    PQclear(cand);
    hf_pg_array_free(&ids);
    hf_pg_array_free(&providers);
    hf_pg_array_free(&accounts);
    hf_pg_array_free(&topics);
    hf_pg_array_free(&parts);
    hf_pg_array_free(&offsets);
    return rc;
}

/* Waits for the dead letters in flight; false if any of them did not reach Kafka. */
static bool dead_letters_delivered(engine_intake *in)
{
    while (atomic_load(&in->dl_pending) > 0 && !atomic_load(&in->stop))
        hf_producer_flush(in->deadletter, 100);
    return !atomic_exchange(&in->dl_failed, false) && atomic_load(&in->dl_pending) == 0;
}

/* Records each event in a transaction of its own; an event the database rejects goes to the
 * dead-letter topic with the reason instead. HF_PG_OK once every event is recorded or
 * dead-lettered (and the dead letters are acknowledged), else the error that stopped it. */
static int record_one_by_one(engine_intake *in, item *items, size_t n, size_t *runs_out, char *err,
                             size_t errlen)
{
    *runs_out = 0;
    bool any_dead = false;
    for (size_t i = 0; i < n; i++) {
        if (!items[i].env)
            continue;
        size_t runs = 0;
        int rc = record_batch(in, &items[i], 1, &runs, err, errlen);
        if (rc == HF_PG_OK) {
            *runs_out += runs;
            continue;
        }
        if (hf_pg_connection_lost(in->db) || !hf_pg_refuses_data(in->failed_state))
            return rc; /* not this event's fault: the whole batch is tried again later */
        snprintf(items[i].dead_reason, sizeof items[i].dead_reason,
                 "the database rejected the event: %.120s", err);
        dead_letter(in, &items[i]);
        any_dead = true;
    }
    if (any_dead && !dead_letters_delivered(in))
        return hf_err(err, errlen, "dead-letter produce failed"), HF_PG_ERR_SQL;
    return HF_PG_OK;
}

static bool ensure_db(engine_intake *in)
{
    if (in->db && !hf_pg_connection_lost(in->db))
        return true;
    if (in->db)
        PQfinish(in->db);
    in->db = NULL;
    char err[256];
    if (hf_pg_connect(in->cfg->database_url, "hookflow-engine-intake", &in->db, err, sizeof err) !=
        HF_PG_OK) {
        atomic_store(&in->db_ok, false);
        hf_log_kv(HF_LOG_WARN, "intake.db_unavailable", "error", err, NULL);
        return false;
    }
    atomic_store(&in->db_ok, true);
    return true;
}

/* Waits ms while still serving the consumer (heartbeats, rebalances): partitions are paused so
 * no message is handed out meanwhile. */
static void wait_serving(engine_intake *in, int ms)
{
    int64_t until = hf_now_ms() + ms;
    while (!atomic_load(&in->stop) && hf_now_ms() < until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(in->rk, 50);
        if (m) {
            /* Only errors arrive from paused partitions; a message here came from a partition
             * assigned during the pause and will be fetched again after the seek below. */
            if (!m->err)
                rd_kafka_seek(m->rkt, m->partition, m->offset, 1000);
            rd_kafka_message_destroy(m);
        }
    }
}

static void pause_all(engine_intake *in, bool pause)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(in->rk, &parts) == RD_KAFKA_RESP_ERR_NO_ERROR && parts) {
        if (pause)
            rd_kafka_pause_partitions(in->rk, parts);
        else
            rd_kafka_resume_partitions(in->rk, parts);
        rd_kafka_topic_partition_list_destroy(parts);
    }
}

static void process(engine_intake *in, item *items, size_t n)
{
    int64_t t0 = hf_now_us();
    for (size_t i = 0; i < n; i++)
        item_parse(&items[i]);
    hf_counter_add(in->consumed, n);

    /* Poison messages go to the dead-letter topic, and must be there before we commit. */
    bool any_dead = false;
    for (size_t i = 0; i < n; i++) {
        if (!items[i].env) {
            dead_letter(in, &items[i]);
            any_dead = true;
        }
    }
    /* Giving up here would lose the batch's good events too: the consumer has already moved
     * past them and later batches commit beyond them. So the dead letters are sent again until
     * the broker takes them (duplicates in the dead-letter topic are harmless). */
    int dl_backoff = 100;
    bool dl_paused = false;
    while (any_dead && !dead_letters_delivered(in)) {
        if (atomic_load(&in->stop))
            return; /* nothing committed: the batch is consumed again after restart */
        hf_log_kv(HF_LOG_ERROR, "intake.deadletter_retry", "msg",
                  "dead-letter produce failed; retrying before the batch goes on", NULL);
        if (!dl_paused) {
            pause_all(in, true);
            dl_paused = true;
        }
        wait_serving(in, dl_backoff);
        dl_backoff = dl_backoff < 5000 ? dl_backoff * 2 : 5000;
        for (size_t i = 0; i < n; i++)
            if (!items[i].env)
                dead_letter(in, &items[i]);
    }
    if (dl_paused)
        pause_all(in, false);

    int backoff = 100;
    bool paused = false;
    size_t nruns = 0;
    int rejected = 0; /* consecutive SQL errors (not lost connections) on this batch */
    for (;;) {
        char err[512];
        if (ensure_db(in)) {
            int rc = rejected >= 3 ? record_one_by_one(in, items, n, &nruns, err, sizeof err)
                                   : record_batch(in, items, n, &nruns, err, sizeof err);
            if (rc == HF_PG_OK)
                break;
            hf_log_kv(HF_LOG_WARN, "intake.batch_failed", "error", err, NULL);
            if (!hf_pg_connection_lost(in->db)) {
                /* The server refused the batch's data: after a few tries, record the events one
                 * by one so a single bad event cannot hold up the partition. Any other error
                 * (read-only, deadlock, disk full) is waited out with the whole batch. */
                if (hf_pg_refuses_data(in->failed_state))
                    rejected++;
                PQfinish(in->db);
                in->db = NULL;
            }
        }
        hf_counter_add(in->batch_retries, 1);
        if (atomic_load(&in->stop))
            return; /* nothing committed: the batch is consumed again after restart */
        if (!paused) {
            pause_all(in, true);
            paused = true;
        }
        wait_serving(in, backoff);
        backoff = backoff < 5000 ? backoff * 2 : 5000;
    }
    if (paused)
        pause_all(in, false);
    atomic_store(&in->db_ok, true);
    hf_counter_add(in->runs_created, nruns);
    hf_histogram_observe(in->batch_seconds, (double)(hf_now_us() - t0) / 1e6);

    /* Offsets: the next offset per partition, committed only now. */
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++) {
        const rd_kafka_message_t *m = items[i].msg;
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_find(offs, rd_kafka_topic_name(m->rkt), m->partition);
        if (!tp)
            tp = rd_kafka_topic_partition_list_add(offs, rd_kafka_topic_name(m->rkt), m->partition);
        if (m->offset + 1 > tp->offset)
            tp->offset = m->offset + 1;
    }
    rd_kafka_resp_err_t e = rd_kafka_commit(in->rk, offs, 0);
    rd_kafka_topic_partition_list_destroy(offs);
    if (e)
        hf_log_kv(HF_LOG_WARN, "intake.commit_failed", "error", rd_kafka_err2str(e), "msg",
                  "the batch will be replayed into the dedupe", NULL);
    if (in->nhandoff > 0) {
        engine_executor_adopt(in->executor, in->handoff, in->nhandoff);
        in->nhandoff = 0;
    }
    if (nruns > 0)
        engine_executor_wake(in->executor);
}

/* While no message comes, readiness still says whether PostgreSQL answers: a round trip at
 * most once a second (a lost connection is made again on the next try). */
static void check_db_idle(engine_intake *in, int64_t *last_ms)
{
    int64_t now = hf_now_ms();
    if (now - *last_ms < 1000)
        return;
    *last_ms = now;
    if (!ensure_db(in))
        return;
    char err[256];
    if (hf_pg_exec(in->db, "SELECT 1", 0, NULL, NULL, err, sizeof err) != HF_PG_OK) {
        atomic_store(&in->db_ok, false);
        hf_log_kv(HF_LOG_WARN, "intake.db_unavailable", "error", err, NULL);
    }
}

static void *intake_main(void *arg)
{
    engine_intake *in = arg;
    size_t cap = (size_t)in->cfg->intake_batch;
    item *items = xcalloc(cap, sizeof *items);
    int64_t db_checked_ms = 0;
    while (!atomic_load(&in->stop)) {
        size_t n = 0;
        int64_t deadline = 0; /* set when the batch's first message arrives */
        while (n < cap && !atomic_load(&in->stop)) {
            int wait = n == 0 ? 200 : (int)(deadline - hf_now_ms());
            if (n > 0 && wait <= 0)
                break;
            rd_kafka_message_t *m = rd_kafka_consumer_poll(in->rk, wait);
            if (!m) {
                if (n > 0)
                    break;
                check_db_idle(in, &db_checked_ms);
                continue;
            }
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    hf_log_kv(HF_LOG_WARN, "kafka.consume_error", "error",
                              rd_kafka_message_errstr(m), NULL);
                rd_kafka_message_destroy(m);
                continue;
            }
            if (n == 0) /* a batch gathers for 20 ms from its first message, not its wait */
                deadline = hf_now_ms() + 20;
            items[n++].msg = m;
        }
        if (n > 0)
            process(in, items, n);
        for (size_t i = 0; i < n; i++) {
            rd_kafka_message_destroy(items[i].msg);
            item_clear(&items[i]);
        }
    }
    free(items);
    return NULL;
}

void engine_intake_start(engine_intake *in)
{
    in->started = true;
    pthread_create(&in->thread, NULL, intake_main, in);
}

void engine_intake_stop(engine_intake *in)
{
    if (!in || !in->started)
        return;
    atomic_store(&in->stop, true);
    pthread_join(in->thread, NULL);
    in->started = false;
    rd_kafka_consumer_close(in->rk); /* leaves the group */
}

bool engine_intake_healthy(engine_intake *in)
{
    return atomic_load(&in->db_ok);
}

void engine_intake_free(engine_intake *in)
{
    if (!in)
        return;
    engine_intake_stop(in);
    if (in->rk)
        rd_kafka_destroy(in->rk);
    hf_producer_free(in->deadletter);
    if (in->db)
        PQfinish(in->db);
    for (size_t i = 0; i < in->nhandoff; i++) {
        free(in->handoff[i].trigger);
        free(in->handoff[i].tenant_json);
    }
    free(in->handoff);
    free(in->deadletter_topic);
    free(in->worker_id);
    free(in->lag_gauges);
    pthread_mutex_destroy(&in->lag_lock);
    free(in);
}
