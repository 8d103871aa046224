/* test_db_executor: the run executor (engine/executor.c) against real PostgreSQL (fixture
 * unit_pg) and a fake platform on 127.0.0.1:0 in this process that stands in for Twilio and Xero
 * (HOOKFLOW_CONNECTOR_*_BASE_URL): claiming a runnable run, the call the platform receives, the
 * node attempts and run rows recorded, retries with backoff and Retry-After, permanent errors,
 * delays kept as a next-run time, connections that are not active, stopping with a call in
 * flight, runs a lost worker left behind, and runs intake hands over. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "crypto.h"
#include "defs.h"
#include "executor.h"
#include "http_server.h"
#include "log.h"
#include "metrics.h"
#include "pg_fixture.h"
#include "secrets.h"
#include "tokens.h"
#include "util.h"
#include "worker.h"

#define WAIT_MS 10000 /* how long a poll waits for the state it expects */

/* ---- the fake platform: records every request, answers from a script ---------------------- */

typedef struct fake_request {
    char method[8];
    char *uri, *authorization, *idempotency_key, *xero_tenant, *content_type, *body;
    int64_t at_ms; /* wall clock when it arrived */
} fake_request;

typedef struct fake_answer {
    int status;
    const char *body;        /* static */
    const char *retry_after; /* Retry-After header, or NULL */
    int delay_ms;            /* answer this much later (on the server's loop, not blocking it) */
} fake_answer;

#define FAKE_MAX_REQUESTS 32
#define FAKE_MAX_SCRIPT 8

static struct {
    hf_http_server *server;
    pthread_mutex_t lock; /* guards everything below */
    fake_request requests[FAKE_MAX_REQUESTS];
    int nrequests;
    fake_answer script[FAKE_MAX_SCRIPT]; /* the answers to the first requests, in order */
    int nscript, next;
    fake_answer fallback;   /* the answer once the script is used up */
    int delayed;            /* answers still waiting for their delay */
    int ntoken;             /* requests to FAKE_TOKEN_PATH (not in requests[]) */
    int token_status;       /* its answer's status (0: 200 with token_body) */
    const char *token_body; /* NULL: fake_token_body */
} fake;

/* The OAuth token endpoint of the fake: always a fresh token pair, counted apart. */
#define FAKE_TOKEN_PATH "/oauth/token"
static const char fake_token_body[] = "{\"access_token\": \"new-access\", \"refresh_token\": "
                                      "\"new-refresh\", \"expires_in\": 1800, "
                                      "\"token_type\": \"Bearer\"}";

typedef struct delayed_answer {
    struct evhttp_request *req;
    fake_answer answer;
} delayed_answer;

static char *header_copy(struct evhttp_request *req, const char *name)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), name);
    return v ? xstrdup(v) : NULL;
}

static const char *method_name(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    default:
        return "OTHER";
    }
}

static void fake_send(struct evhttp_request *req, const fake_answer *a)
{
    if (a->retry_after)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", a->retry_after);
    hf_http_reply_json(req, a->status, a->body, strlen(a->body));
}

static void fake_send_later(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    delayed_answer *d = arg;
    /* If the client hung up meanwhile, libevent detached the request and frees it here. */
    fake_send(d->req, &d->answer);
    free(d);
    pthread_mutex_lock(&fake.lock);
    fake.delayed--;
    pthread_mutex_unlock(&fake.lock);
}

static void fake_request_free(fake_request *r)
{
    free(r->uri);
    free(r->authorization);
    free(r->idempotency_key);
    free(r->xero_tenant);
    free(r->content_type);
    free(r->body);
}

static void fake_handle(struct evhttp_request *req, void *arg)
{
    (void)arg;
    fake_request r = {0};
    snprintf(r.method, sizeof r.method, "%s", method_name(evhttp_request_get_command(req)));
    r.uri = xstrdup(evhttp_request_get_uri(req));
    r.authorization = header_copy(req, "Authorization");
    r.idempotency_key = header_copy(req, "Idempotency-Key");
    r.xero_tenant = header_copy(req, "Xero-Tenant-Id");
    r.content_type = header_copy(req, "Content-Type");
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    r.body = xmalloc(n + 1);
    evbuffer_remove(in, r.body, n);
    r.body[n] = '\0';
    r.at_ms = hf_wall_ms();

    if (strncmp(r.uri, FAKE_TOKEN_PATH, strlen(FAKE_TOKEN_PATH)) == 0) {
        pthread_mutex_lock(&fake.lock);
        fake.ntoken++;
        int status = fake.token_status;
        pthread_mutex_unlock(&fake.lock);
        fake_request_free(&r);
        if (status == 400) {
            static const char refused[] = "{\"error\": \"invalid_grant\", \"error_description\": "
                                          "\"refresh token revoked\"}";
            hf_http_reply_json(req, status, refused, strlen(refused));
        } else if (status && status != 200) {
            static const char down[] = "{\"error\": \"temporarily_unavailable\"}";
            hf_http_reply_json(req, status, down, strlen(down));
        } else {
            pthread_mutex_lock(&fake.lock);
            const char *body = fake.token_body ? fake.token_body : fake_token_body;
            pthread_mutex_unlock(&fake.lock);
            hf_http_reply_json(req, 200, body, strlen(body));
        }
        return;
    }

    /* No cmocka assertion here: this is the server's thread. Requests beyond the table are
     * counted (so a test expecting fewer fails) but not kept. */
    pthread_mutex_lock(&fake.lock);
    if (fake.nrequests < FAKE_MAX_REQUESTS)
        fake.requests[fake.nrequests] = r;
    else
        fake_request_free(&r);
    fake.nrequests++;
    fake_answer a = fake.next < fake.nscript ? fake.script[fake.next++] : fake.fallback;
    if (a.delay_ms > 0)
        fake.delayed++;
    pthread_mutex_unlock(&fake.lock);

    if (a.delay_ms <= 0) {
        fake_send(req, &a);
        return;
    }
    delayed_answer *d = xmalloc(sizeof *d);
    d->req = req;
    d->answer = a;
    struct timeval tv = {a.delay_ms / 1000, (a.delay_ms % 1000) * 1000};
    if (event_base_once(hf_http_request_base(req), -1, EV_TIMEOUT, fake_send_later, d, &tv) != 0)
        fake_send_later(-1, 0, d); /* the test then sees no delay and fails */
}

static void fake_clear(void)
{
    pthread_mutex_lock(&fake.lock);
    for (int i = 0; i < fake.nrequests && i < FAKE_MAX_REQUESTS; i++)
        fake_request_free(&fake.requests[i]);
    fake.nrequests = 0;
    fake.ntoken = 0;
    fake.nscript = fake.next = 0;
    fake.token_status = 0;
    fake.token_body = NULL;
    fake.fallback = (fake_answer){.status = 500, .body = "{\"message\":\"no answer scripted\"}"};
    pthread_mutex_unlock(&fake.lock);
}

/* Every request from now on gets a, once the scripted answers are used up. */
static void fake_answer_always(fake_answer a)
{
    pthread_mutex_lock(&fake.lock);
    fake.fallback = a;
    pthread_mutex_unlock(&fake.lock);
}

/* The next unscripted request gets a. */
static void fake_script(fake_answer a)
{
    pthread_mutex_lock(&fake.lock);
    assert_true(fake.nscript < FAKE_MAX_SCRIPT);
    fake.script[fake.nscript++] = a;
    pthread_mutex_unlock(&fake.lock);
}

static int fake_count(void)
{
    pthread_mutex_lock(&fake.lock);
    int n = fake.nrequests;
    pthread_mutex_unlock(&fake.lock);
    return n;
}

static int fake_token_count(void)
{
    pthread_mutex_lock(&fake.lock);
    int n = fake.ntoken;
    pthread_mutex_unlock(&fake.lock);
    return n;
}

/* A copy of request i (its strings stay the fake's until fake_clear). */
static fake_request fake_at(int i)
{
    pthread_mutex_lock(&fake.lock);
    assert_true(i < fake.nrequests && i < FAKE_MAX_REQUESTS);
    fake_request r = fake.requests[i];
    pthread_mutex_unlock(&fake.lock);
    return r;
}

/* Waits until the fake has received n requests. */
static void fake_wait_requests(int n)
{
    int64_t deadline = hf_now_ms() + WAIT_MS;
    while (fake_count() < n && hf_now_ms() < deadline)
        usleep(5000);
    if (fake_count() < n)
        fail_msg("the fake platform received %d requests, expected %d", fake_count(), n);
}

/* Waits until every delayed answer has gone out (before the script changes or the server ends). */
static void fake_wait_idle(void)
{
    int64_t deadline = hf_now_ms() + WAIT_MS;
    for (;;) {
        pthread_mutex_lock(&fake.lock);
        int delayed = fake.delayed;
        pthread_mutex_unlock(&fake.lock);
        if (delayed == 0)
            return;
        if (hf_now_ms() >= deadline)
            fail_msg("%d delayed answers of the fake platform never went out", delayed);
        usleep(5000);
    }
}

/* ---- the database ------------------------------------------------------------------------- */

static char *vsql(const char *fmt, va_list ap) HF_PRINTF(1, 0);
static char *vsql(const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    char *s = xmalloc((size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, again);
    va_end(again);
    return s;
}

/* The value of a formatted query (the format only ever takes ids made by PostgreSQL). */
static char *value_of(PGconn *db, const char *fmt, ...) HF_PRINTF(2, 3);
static char *value_of(PGconn *db, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = vsql(fmt, ap);
    va_end(ap);
    char *v = pgf_value(db, sql);
    free(sql);
    return v;
}

/* Asserts that the query's value is want ("(null)" for SQL NULL). */
static void expect_sql(PGconn *db, const char *want, const char *fmt, ...) HF_PRINTF(3, 4);
static void expect_sql(PGconn *db, const char *want, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = vsql(fmt, ap);
    va_end(ap);
    char *v = pgf_value(db, sql);
    char got[1024];
    snprintf(got, sizeof got, "%s", v ? v : "(null)");
    free(v);
    if (strcmp(got, want) != 0) {
        char q[1024];
        snprintf(q, sizeof q, "%s", sql);
        free(sql);
        fail_msg("%s\n  gave \"%s\"\n  expected \"%s\"", q, got, want);
    }
    free(sql);
}

/* Polls the query until its value is want; fails after WAIT_MS with the last value. */
static void wait_value(PGconn *db, const char *want, const char *fmt, ...) HF_PRINTF(3, 4);
static void wait_value(PGconn *db, const char *want, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = vsql(fmt, ap);
    va_end(ap);
    int64_t deadline = hf_now_ms() + WAIT_MS;
    char got[1024] = "";
    for (;;) {
        char *v = pgf_value(db, sql);
        snprintf(got, sizeof got, "%s", v ? v : "(null)");
        free(v);
        if (strcmp(got, want) == 0 || hf_now_ms() >= deadline)
            break;
        usleep(10000);
    }
    if (strcmp(got, want) != 0) {
        char q[1024];
        snprintf(q, sizeof q, "%s", sql);
        free(sql);
        fail_msg("after %d ms, %s\n  gives \"%s\"\n  expected \"%s\"", WAIT_MS, q, got, want);
    }
    free(sql);
}

/* ---- the engine side ---------------------------------------------------------------------- */

static unsigned char token_key[ENGINE_TOKEN_KEY_LEN]; /* filled in group_setup */
static engine_keyring *keys;
static hf_catalog *catalog;
static hf_secrets *secrets;

typedef struct fixture {
    char *url;
    PGconn *db;
    char *tenant_id;
    engine_config cfg;
    engine_defs *defs;
    engine_executor *ex[2];
    hf_metrics *metrics[2];
} fixture;

/* A fresh migrated database with one tenant; the executor's settings for quick tests. */
static fixture *fx_open(void **state, const char *dbname)
{
    fixture *f = *state;
    f->url = pgf_database(dbname);
    f->db = pgf_connect(f->url);
    f->tenant_id =
        pgf_value(f->db, "INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme') RETURNING id");
    f->cfg = (engine_config){.database_url = f->url,
                             .concurrency = 100,
                             .claim_batch = 50,
                             .poll_ms = 20,
                             .lease_ms = 30000,
                             .shutdown_timeout_ms = 5000,
                             .http_connections = 8};
    f->defs = engine_defs_new();
    return f;
}

static engine_executor *fx_start(fixture *f, int i, const char *worker_id)
{
    char err[512] = "";
    f->metrics[i] = hf_metrics_new();
    f->ex[i] = engine_executor_new(&f->cfg, worker_id, f->defs, f->metrics[i], catalog, secrets,
                                   keys, err, sizeof err);
    if (!f->ex[i])
        fail_msg("engine_executor_new: %s", err);
    engine_executor_start(f->ex[i]);
    return f->ex[i];
}

static void fx_stop(fixture *f, int i, int64_t timeout_ms)
{
    engine_executor_stop(f->ex[i], timeout_ms);
    engine_executor_free(f->ex[i]);
    f->ex[i] = NULL;
    hf_metrics_free(f->metrics[i]);
    f->metrics[i] = NULL;
}

static int fx_setup(void **state)
{
    *state = xcalloc(1, sizeof(fixture));
    fake_clear();
    return 0;
}

static int fx_teardown(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 2; i++)
        if (f->ex[i])
            fx_stop(f, i, 0);
    fake_wait_idle();
    fake_clear();
    engine_defs_free(f->defs);
    if (f->db)
        PQfinish(f->db);
    free(f->tenant_id);
    free(f->url);
    free(f);
    return 0;
}

/* An active (or status) connection of the tenant with token sealed as the access token. */
static void add_connection(fixture *f, const char *connector, const char *account,
                           const char *token, const char *status)
{
    char *context = engine_token_context(connector, account, "access");
    size_t n = 0;
    unsigned char *sealed = engine_token_seal(keys, context, token, &n);
    char *hex = xmalloc(2 * n + 1);
    hf_hex_encode(sealed, n, hex);
    const char *params[] = {f->tenant_id, connector, account, status, hex};
    free(pgf_value_params(f->db,
                          "INSERT INTO connections (tenant_id, connector, account, status, "
                          "access_token_enc) VALUES ($1, $2, $3, $4, decode($5, 'hex'))",
                          5, params));
    free(hex);
    free(sealed);
    free(context);
}

/* An active OAuth connection with an access and a refresh token and no known expiry. */
static void add_oauth_connection(fixture *f, const char *connector, const char *account,
                                 const char *access, const char *refresh)
{
    char *actx = engine_token_context(connector, account, "access");
    char *rctx = engine_token_context(connector, account, "refresh");
    size_t an = 0, rn = 0;
    unsigned char *aseal = engine_token_seal(keys, actx, access, &an);
    unsigned char *rseal = engine_token_seal(keys, rctx, refresh, &rn);
    char *ahex = xmalloc(2 * an + 1), *rhex = xmalloc(2 * rn + 1);
    hf_hex_encode(aseal, an, ahex);
    hf_hex_encode(rseal, rn, rhex);
    const char *params[] = {f->tenant_id, connector, account, ahex, rhex};
    free(pgf_value_params(f->db,
                          "INSERT INTO connections (tenant_id, connector, account, status, "
                          "access_token_enc, refresh_token_enc) VALUES ($1, $2, $3, 'active', "
                          "decode($4, 'hex'), decode($5, 'hex'))",
                          5, params));
    free(ahex);
    free(rhex);
    free(aseal);
    free(rseal);
    free(actx);
    free(rctx);
}

/* A workflow with definition as its version 1 (both in one transaction: the current-version key
 * is checked at commit). Returns its id. */
static char *add_workflow(fixture *f, const char *definition)
{
    pgf_exec(f->db, "BEGIN");
    const char *p1[] = {f->tenant_id};
    char *id =
        pgf_value_params(f->db,
                         "INSERT INTO workflows (tenant_id, name, enabled, trigger_connector, "
                         "trigger_event) VALUES ($1, 'wf-' || gen_random_uuid(), true, 'meta', "
                         "'message') RETURNING id",
                         1, p1);
    const char *p2[] = {id, definition};
    free(pgf_value_params(f->db,
                          "INSERT INTO workflow_versions (workflow_id, version, definition) "
                          "VALUES ($1, 1, $2::jsonb)",
                          2, p2));
    pgf_exec(f->db, "COMMIT");
    return id;
}

#define TRIGGER                                                                                    \
    "{\"id\": \"evt-1\", \"provider\": \"meta\", \"event\": \"message\", \"account\": "            \
    "\"page-1\", "                                                                                 \
    "\"occurred_at\": \"2024-05-01T10:00:00Z\", \"received_at\": \"2024-05-01T10:00:01Z\", "       \
    "\"payload\": {\"phone\": \"+15550001111\", \"name\": \"Ann\"}}"

/* A pending run of workflow_id for the event TRIGGER, runnable now. Returns its id. */
static char *add_run(fixture *f, const char *workflow_id)
{
    static int seq;
    char event_id[32];
    snprintf(event_id, sizeof event_id, "evt-%d", ++seq);
    const char *params[] = {f->tenant_id, workflow_id, event_id, TRIGGER};
    return pgf_value_params(f->db,
                            "INSERT INTO runs (tenant_id, workflow_id, workflow_version, event_id, "
                            "ordering_key, ordering_seq, trigger) "
                            "VALUES ($1, $2, 1, $3, 'meta:' || $3, 1, $4::jsonb) RETURNING id",
                            4, params);
}

/* ---- workflows and answers ---------------------------------------------------------------- */

#define TWILIO_ACCOUNT "ACtest1"
#define TWILIO_TOKEN "twilio-token-1"
/* "ACtest1:twilio-token-1" in base64, worked out independently of the code under test. */
#define TWILIO_BASIC "Basic QUN0ZXN0MTp0d2lsaW8tdG9rZW4tMQ=="
#define TWILIO_PATH "/2010-04-01/Accounts/ACtest1/Messages.json"
#define TWILIO_FORM "To=%2B15550001111&From=%2B15550002222&Body=Hello+Ann"

#define SMS_NODE(extra)                                                                            \
    "{\"id\": \"sms\", \"type\": \"action\", \"connector\": \"twilio\", "                          \
    "\"action\": \"send_message\", \"params\": {\"to\": \"{{event.payload.phone}}\", "             \
    "\"from\": \"+15550002222\", \"body\": \"Hello {{event.payload.name}}\"}" extra "}"
#define WORKFLOW(nodes, edges)                                                                     \
    "{\"name\": \"Test\", \"trigger\": {\"connector\": \"meta\", \"event\": \"message\"}, "        \
    "\"nodes\": [" nodes "], \"edges\": [" edges "]}"

#define RETRY(max, initial, most)                                                                  \
    ", \"retry\": {\"max_attempts\": " #max ", \"initial_ms\": " #initial ", \"max_ms\": " #most "}"

static const fake_answer twilio_created = {
    .status = 201,
    .body = "{\"sid\": \"SM0001\", \"status\": \"queued\", \"to\": \"+15550001111\", "
            "\"from\": \"+15550002222\", \"body\": \"Hello Ann\"}"};

#define XERO_TENANT "xero-tenant-1"
#define XERO_TOKEN "xero-token-1"
#define CONTACT_NODE                                                                               \
    "{\"id\": \"contact\", \"type\": \"action\", \"connector\": \"xero\", "                        \
    "\"action\": \"create_contact\", \"params\": {\"name\": \"{{event.payload.name}}\"}" RETRY(    \
        3, 20, 50) "}"

static const fake_answer xero_created = {
    .status = 200,
    .body = "{\"Contacts\": [{\"ContactID\": \"c-42\", \"Name\": \"Ann\", "
            "\"ContactStatus\": \"ACTIVE\"}]}"};

/* Asserts that request i is the Twilio send of TWILIO_FORM with the connection's credentials. */
static void expect_twilio_send(int i)
{
    fake_request r = fake_at(i);
    assert_string_equal(r.method, "POST");
    assert_string_equal(r.uri, TWILIO_PATH);
    assert_non_null(r.authorization);
    assert_string_equal(r.authorization, TWILIO_BASIC);
    assert_non_null(r.content_type);
    assert_string_equal(r.content_type, "application/x-www-form-urlencoded");
    assert_string_equal(r.body, TWILIO_FORM);
    assert_null(r.idempotency_key);
}

/* ---- tests -------------------------------------------------------------------------------- */

/* A pending run with one action is claimed, makes exactly the platform's request with the
 * connection's decrypted token and the rendered params, and succeeds with the output recorded
 * on the attempt and in the run's context. */
static void action_run_calls_the_platform_and_succeeds(void **state)
{
    fixture *f = fx_open(state, "unit_executor_success");
    add_connection(f, "twilio", TWILIO_ACCOUNT, TWILIO_TOKEN, "active");
    char *wf = add_workflow(f, WORKFLOW(SMS_NODE(""), ""));
    char *run = add_run(f, wf);
    fake_answer_always(twilio_created);
    fx_start(f, 0, "worker-a");

    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", run);
    assert_int_equal(fake_count(), 1);
    expect_twilio_send(0);

    expect_sql(f->db, "1", "SELECT count(*) FROM node_attempts WHERE run_id = '%s'", run);
    expect_sql(f->db, "sms|1|succeeded|201|+15550001111|Hello Ann|SM0001|queued|sms|true|true",
               "SELECT node_id || '|' || attempt || '|' || status || '|' || http_status || '|' "
               "|| (input->>'to') || '|' || (input->>'body') || '|' || (output->>'sid') || '|' "
               "|| (output->>'status') || '|' || (output->>'channel') || '|' || "
               "(idempotency_key IS NULL AND error IS NULL) || '|' || (finished_at IS NOT NULL) "
               "FROM node_attempts WHERE run_id = '%s'",
               run);
    expect_sql(f->db, "1|true|true|true|succeeded|SM0001",
               "SELECT attempt || '|' || (error IS NULL) || '|' || (lease_owner IS NULL AND "
               "lease_expires_at IS NULL) || '|' || (finished_at >= started_at) || '|' || "
               "(context #>> '{nodes,sms,status}') || '|' || "
               "(context #>> '{nodes,sms,output,sid}') FROM runs WHERE id = '%s'",
               run);
    free(run);
    free(wf);
}

/* 503 and 429 are transient: each attempt is recorded on its own row, the retries wait at
 * least half the backoff of the node's policy, and the third attempt succeeds. */
static void transient_errors_are_retried_then_succeed(void **state)
{
    fixture *f = fx_open(state, "unit_executor_retry");
    add_connection(f, "twilio", TWILIO_ACCOUNT, TWILIO_TOKEN, "active");
    char *wf = add_workflow(f, WORKFLOW(SMS_NODE(RETRY(3, 100, 200)), ""));
    char *run = add_run(f, wf);
    fake_script((fake_answer){.status = 503,
                              .body = "{\"code\": 20500, \"message\": \"Service unavailable\"}"});
    fake_script((fake_answer){.status = 429,
                              .body = "{\"code\": 20429, \"message\": \"Too Many Requests\"}"});
    fake_answer_always(twilio_created);
    fx_start(f, 0, "worker-a");

    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", run);
    assert_int_equal(fake_count(), 3);
    for (int i = 0; i < 3; i++)
        expect_twilio_send(i);
    /* Backoff: initial_ms * 2^(k-1), capped at max_ms, jittered down to half at most. */
    assert_true(fake_at(1).at_ms - fake_at(0).at_ms >= 50);
    assert_true(fake_at(2).at_ms - fake_at(1).at_ms >= 100);

    expect_sql(f->db,
               "1 failed 503 HTTP 503: Service unavailable (Twilio error 20500);"
               "2 failed 429 HTTP 429: Too Many Requests (Twilio error 20429);"
               "3 succeeded 201 -;",
               "SELECT string_agg(attempt || ' ' || status || ' ' || http_status || ' ' || "
               "coalesce(error, '-') || ';', '' ORDER BY attempt) FROM node_attempts "
               "WHERE run_id = '%s' AND node_id = 'sms'",
               run);
    /* Each retry was a new claim of the run. */
    expect_sql(f->db, "3|true|SM0001",
               "SELECT attempt || '|' || (error IS NULL) || '|' || "
               "(context #>> '{nodes,sms,output,sid}') FROM runs WHERE id = '%s'",
               run);
    free(run);
    free(wf);
}

/* A 429's Retry-After beats a shorter backoff: the run waits (lease released, next-run time in
 * the future) and is called again only after it. */
static void retry_after_sets_the_next_run_time(void **state)
{
    fixture *f = fx_open(state, "unit_executor_retry_after");
    add_connection(f, "twilio", TWILIO_ACCOUNT, TWILIO_TOKEN, "active");
    char *wf = add_workflow(f, WORKFLOW(SMS_NODE(RETRY(3, 20, 50)), ""));
    char *run = add_run(f, wf);
    fake_script((fake_answer){.status = 429,
                              .body = "{\"code\": 20429, \"message\": \"Too Many Requests\"}",
                              .retry_after = "2"});
    fake_answer_always(twilio_created);
    fx_start(f, 0, "worker-a");

    wait_value(f->db, "waiting", "SELECT status FROM runs WHERE id = '%s'", run);
    expect_sql(f->db, "true|true|1",
               /* The backoff alone would be under 50 ms after the answer was recorded. */
               "SELECT (next_run_at > a.finished_at + interval '1500 milliseconds') || '|' || "
               "(r.lease_owner IS NULL) || '|' || (SELECT count(*) FROM node_attempts c "
               "WHERE c.run_id = r.id) FROM runs r JOIN node_attempts a ON a.run_id = r.id "
               "AND a.attempt = 1 AND a.status = 'failed' AND a.http_status = 429 "
               "WHERE r.id = '%s'",
               run);
    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", run);
    assert_int_equal(fake_count(), 2);
    assert_true(fake_at(1).at_ms - fake_at(0).at_ms >= 1900);
    free(run);
    free(wf);
}

/* A 4xx that is not transient fails the run at once with the platform's own error text; no
 * retry although the policy allows three attempts. */
static void a_client_error_fails_the_run_without_retry(void **state)
{
    fixture *f = fx_open(state, "unit_executor_client_error");
    add_connection(f, "twilio", TWILIO_ACCOUNT, TWILIO_TOKEN, "active");
    char *wf = add_workflow(f, WORKFLOW(SMS_NODE(RETRY(3, 20, 50)), ""));
    char *run = add_run(f, wf);
    fake_answer_always((fake_answer){
        .status = 400,
        .body = "{\"code\": 21211, \"message\": \"The 'To' number +1555 is not a valid phone "
                "number.\", \"status\": 400}"});
    fx_start(f, 0, "worker-a");

    wait_value(f->db, "failed", "SELECT status FROM runs WHERE id = '%s'", run);
    expect_sql(f->db,
               "node sms: HTTP 400: The 'To' number +1555 is not a valid phone number. "
               "(Twilio error 21211)|true|true",
               "SELECT error || '|' || (finished_at IS NOT NULL) || '|' || "
               "(lease_owner IS NULL) FROM runs WHERE id = '%s'",
               run);
    expect_sql(f->db,
               "1 failed 400 HTTP 400: The 'To' number +1555 is not a valid phone number. "
               "(Twilio error 21211);",
               "SELECT string_agg(attempt || ' ' || status || ' ' || http_status || ' ' || "
               "error || ';', '' ORDER BY attempt) FROM node_attempts WHERE run_id = '%s'",
               run);
    assert_int_equal(fake_count(), 1);
    free(run);
    free(wf);
}

/* Transient errors up to max_attempts fail the run, saying it gave up and why. */
static void exhausted_retries_fail_the_run(void **state)
{
    fixture *f = fx_open(state, "unit_executor_exhausted");
    add_connection(f, "twilio", TWILIO_ACCOUNT, TWILIO_TOKEN, "active");
    char *wf = add_workflow(f, WORKFLOW(SMS_NODE(RETRY(2, 20, 50)), ""));
    char *run = add_run(f, wf);
    fake_answer_always((fake_answer){
        .status = 503, .body = "{\"code\": 20503, \"message\": \"Service unavailable\"}"});
    fx_start(f, 0, "worker-a");

    wait_value(f->db, "failed", "SELECT status FROM runs WHERE id = '%s'", run);
    expect_sql(f->db,
               "node sms: gave up after 2 attempts: HTTP 503: Service unavailable (Twilio error "
               "20503)",
               "SELECT error FROM runs WHERE id = '%s'", run);
    expect_sql(f->db, "1 failed 503;2 failed 503;",
               "SELECT string_agg(attempt || ' ' || status || ' ' || http_status || ';', '' "
               "ORDER BY attempt) FROM node_attempts WHERE run_id = '%s'",
               run);
    assert_int_equal(fake_count(), 2);
    free(run);
    free(wf);
}

/* A 500, 502 or 504 may come after the platform acted (a gateway that timed out on a message it
 * had passed on). Twilio takes no idempotency key, so the SMS is not sent again: the attempt is
 * outcome_unknown and the run fails for an operator, although the policy allows three attempts. */
static void an_ambiguous_5xx_is_not_sent_again_without_an_idempotency_key(void **state)
{
    fixture *f = fx_open(state, "unit_executor_ambiguous_5xx");
    add_connection(f, "twilio", TWILIO_ACCOUNT, TWILIO_TOKEN, "active");
    char *wf = add_workflow(f, WORKFLOW(SMS_NODE(RETRY(3, 20, 50)), ""));
    static const int statuses[] = {500, 502, 504};
    fx_start(f, 0, "worker-a");
    for (size_t i = 0; i < HF_ARRAY_LEN(statuses); i++) {
        fake_clear();
        fake_answer_always(
            (fake_answer){.status = statuses[i], .body = "{\"message\": \"upstream timed out\"}"});
        char *run = add_run(f, wf);
        wait_value(f->db, "failed", "SELECT status FROM runs WHERE id = '%s'", run);
        assert_int_equal(fake_count(), 1);
        char want[256];
        snprintf(want, sizeof want,
                 "node sms: the call's outcome is unknown (HTTP %d: upstream timed out) and "
                 "twilio has no idempotency key; check the platform before retrying the run",
                 statuses[i]);
        expect_sql(f->db, want, "SELECT error FROM runs WHERE id = '%s'", run);
        snprintf(want, sizeof want, "1 outcome_unknown %d;", statuses[i]);
        expect_sql(f->db, want,
                   "SELECT string_agg(attempt || ' ' || status || ' ' || http_status || ';', '' "
                   "ORDER BY attempt) FROM node_attempts WHERE run_id = '%s'",
                   run);
        free(run);
    }
    free(wf);
}

/* The same 502 from Xero is retried: the platform deduplicates on the Idempotency-Key, which
 * every attempt repeats. */
static void an_ambiguous_5xx_is_retried_with_an_idempotency_key(void **state)
{
    fixture *f = fx_open(state, "unit_executor_ambiguous_5xx_key");
    add_connection(f, "xero", XERO_TENANT, XERO_TOKEN, "active");
    char *wf = add_workflow(f, WORKFLOW(CONTACT_NODE, ""));
    char *run = add_run(f, wf);
    fake_script((fake_answer){.status = 502, .body = "{\"Message\": \"Bad gateway\"}"});
    fake_answer_always(xero_created);
    fx_start(f, 0, "worker-a");

    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", run);
    assert_int_equal(fake_count(), 2);
    assert_non_null(fake_at(0).idempotency_key);
    assert_non_null(fake_at(1).idempotency_key);
    assert_string_equal(fake_at(0).idempotency_key, fake_at(1).idempotency_key);
    expect_sql(f->db, "1 failed 502;2 succeeded 200;",
               "SELECT string_agg(attempt || ' ' || status || ' ' || http_status || ';', '' "
               "ORDER BY attempt) FROM node_attempts WHERE run_id = '%s'",
               run);
    free(run);
    free(wf);
}

/* A delay parks the run as 'waiting' with its wake time as next_run_at and lets go of it: with
 * room for one run only, another run is claimed and finished meanwhile. At the wake time the
 * delay completes and the action runs. */
static void a_delay_waits_without_holding_the_worker(void **state)
{
    fixture *f = fx_open(state, "unit_executor_delay");
    f->cfg.concurrency = 1;
    add_connection(f, "twilio", TWILIO_ACCOUNT, TWILIO_TOKEN, "active");
    char *delayed_wf = add_workflow(
        f, WORKFLOW("{\"id\": \"wait\", \"type\": \"delay\", \"delay_ms\": 1500}, " SMS_NODE(""),
                    "{\"from\": \"wait\", \"to\": \"sms\"}"));
    char *plain_wf = add_workflow(f, WORKFLOW(SMS_NODE(""), ""));
    char *delayed = add_run(f, delayed_wf);
    fake_answer_always(twilio_created);
    fx_start(f, 0, "worker-a");

    wait_value(f->db, "waiting", "SELECT status FROM runs WHERE id = '%s'", delayed);
    expect_sql(f->db, "true|true|waiting|true|0",
               "SELECT (next_run_at >= started_at + interval '1400 milliseconds') || '|' || "
               "(lease_owner IS NULL) || '|' || (context #>> '{nodes,wait,status}') || '|' || "
               "(abs((extract(epoch from next_run_at) * 1000) - "
               "(context #>> '{nodes,wait,until_ms}')::bigint) < 2) || '|' || "
               "(SELECT count(*) FROM node_attempts a WHERE a.run_id = r.id) "
               "FROM runs r WHERE id = '%s'",
               delayed);
    assert_int_equal(fake_count(), 0);
    char *until = value_of(f->db,
                           "SELECT context #>> '{nodes,wait,until_ms}' FROM runs "
                           "WHERE id = '%s'",
                           delayed);
    assert_non_null(until);
    long long until_ms = 0;
    assert_true(hf_parse_ll(until, &until_ms));

    char *plain = add_run(f, plain_wf);
    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", plain);
    expect_sql(f->db, "t",
               "SELECT p.finished_at < d.next_run_at FROM runs p, runs d "
               "WHERE p.id = '%s' AND d.id = '%s'",
               plain, delayed);

    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", delayed);
    assert_int_equal(fake_count(), 2);
    expect_twilio_send(1);
    assert_true(fake_at(1).at_ms >= until_ms - 5);
    expect_sql(f->db, "wait 1 succeeded;sms 1 succeeded;",
               "SELECT string_agg(node_id || ' ' || attempt || ' ' || status || ';', '' "
               "ORDER BY id) FROM node_attempts WHERE run_id = '%s'",
               delayed);
    expect_sql(f->db, "2|SM0001",
               "SELECT attempt || '|' || (context #>> '{nodes,sms,output,sid}') FROM runs "
               "WHERE id = '%s'",
               delayed);
    free(until);
    free(plain);
    free(delayed);
    free(plain_wf);
    free(delayed_wf);
}

/* An action whose connection is disabled fails its run with a clear reason and calls nothing. */
static void a_disabled_connection_fails_the_action(void **state)
{
    fixture *f = fx_open(state, "unit_executor_disabled");
    add_connection(f, "twilio", TWILIO_ACCOUNT, TWILIO_TOKEN, "disabled");
    char *wf = add_workflow(f, WORKFLOW(SMS_NODE(""), ""));
    char *run = add_run(f, wf);
    fake_answer_always(twilio_created);
    fx_start(f, 0, "worker-a");

    wait_value(f->db, "failed", "SELECT status FROM runs WHERE id = '%s'", run);
    expect_sql(f->db, "node sms: the tenant has no active twilio connection",
               "SELECT error FROM runs WHERE id = '%s'", run);
    expect_sql(f->db, "sms 1 failed the tenant has no active twilio connection +15550001111;",
               "SELECT string_agg(node_id || ' ' || attempt || ' ' || status || ' ' || error || "
               "' ' || (input->>'to') || ';', '') FROM node_attempts WHERE run_id = '%s'",
               run);
    assert_int_equal(fake_count(), 0);
    free(run);
    free(wf);
}

/* A connection disabled while the executor holds its token in memory is not used again: the
 * change notification makes the next run read the row. */
static void disabling_a_connection_stops_its_use_at_once(void **state)
{
    fixture *f = fx_open(state, "unit_executor_disable_live");
    add_connection(f, "twilio", TWILIO_ACCOUNT, TWILIO_TOKEN, "active");
    char *wf = add_workflow(f, WORKFLOW(SMS_NODE(""), ""));
    char *first = add_run(f, wf);
    fake_answer_always(twilio_created);
    fx_start(f, 0, "worker-a");
    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", first);
    assert_int_equal(fake_count(), 1);

    pgf_exec(f->db, "UPDATE connections SET status = 'disabled'");
    char *second = add_run(f, wf);
    wait_value(f->db, "failed", "SELECT status FROM runs WHERE id = '%s'", second);
    expect_sql(f->db, "node sms: the tenant has no active twilio connection",
               "SELECT error FROM runs WHERE id = '%s'", second);
    assert_int_equal(fake_count(), 1);
    free(second);
    free(first);
    free(wf);
}

/* A 401 on a connection that cannot be refreshed (Twilio has no OAuth) fails the run as a
 * credentials problem after one call. */
static void rejected_credentials_fail_the_run(void **state)
{
    fixture *f = fx_open(state, "unit_executor_auth");
    add_connection(f, "twilio", TWILIO_ACCOUNT, TWILIO_TOKEN, "active");
    char *wf = add_workflow(f, WORKFLOW(SMS_NODE(RETRY(3, 20, 50)), ""));
    char *run = add_run(f, wf);
    fake_answer_always(
        (fake_answer){.status = 401, .body = "{\"code\": 20003, \"message\": \"Authenticate\"}"});
    fx_start(f, 0, "worker-a");

    wait_value(f->db, "failed", "SELECT status FROM runs WHERE id = '%s'", run);
    expect_sql(f->db, "the platform rejected the connection's credentials",
               "SELECT error FROM runs WHERE id = '%s'", run);
    expect_sql(f->db, "1 failed 401 HTTP 401: Authenticate (Twilio error 20003);",
               "SELECT string_agg(attempt || ' ' || status || ' ' || http_status || ' ' || "
               "error || ';', '') FROM node_attempts WHERE run_id = '%s'",
               run);
    assert_int_equal(fake_count(), 1);
    free(run);
    free(wf);
}

/* Starts worker slot 0 ("worker-a") with the fake answering its first call with answer only
 * after delay_ms, and every later call with answer at once; returns once that first call has
 * reached the fake, i.e. is in flight. */
static void fx_start_with_a_slow_first_call(fixture *f, fake_answer answer, int delay_ms)
{
    fake_answer slow = answer;
    slow.delay_ms = delay_ms;
    fake_script(slow);
    fake_answer_always(answer);
    fx_start(f, 0, "worker-a");
    fake_wait_requests(1);
}

/* Stopping with a call in flight that answers within the timeout waits for it: the run is
 * finished before stop returns. */
static void stop_lets_a_call_in_flight_finish(void **state)
{
    fixture *f = fx_open(state, "unit_executor_stop_drain");
    add_connection(f, "twilio", TWILIO_ACCOUNT, TWILIO_TOKEN, "active");
    char *wf = add_workflow(f, WORKFLOW(SMS_NODE(""), ""));
    char *run = add_run(f, wf);
    fx_start_with_a_slow_first_call(f, twilio_created, 300);

    fx_stop(f, 0, 5000);
    expect_sql(f->db, "succeeded|SM0001|true",
               "SELECT status || '|' || (context #>> '{nodes,sms,output,sid}') || '|' || "
               "(lease_owner IS NULL) FROM runs WHERE id = '%s'",
               run);
    assert_int_equal(fake_count(), 1);
    free(run);
    free(wf);
}

/* Stopping with a slow call to a platform that honours an idempotency key cancels the call at
 * the timeout, records the attempt as failed, and leaves the run runnable without a lease;
 * another executor then finishes it with the same Idempotency-Key. */
static void stop_cancels_an_idempotent_call_and_another_worker_finishes(void **state)
{
    fixture *f = fx_open(state, "unit_executor_stop_xero");
    add_connection(f, "xero", XERO_TENANT, XERO_TOKEN, "active");
    char *wf = add_workflow(f, WORKFLOW(CONTACT_NODE, ""));
    char *run = add_run(f, wf);
    fx_start_with_a_slow_first_call(f, xero_created, 2000);
    wait_value(f->db, "running", "SELECT status FROM node_attempts WHERE run_id = '%s'", run);

    int64_t t0 = hf_now_ms();
    fx_stop(f, 0, 100);
    assert_true(hf_now_ms() - t0 < 1500); /* did not wait for the 2 s answer */
    expect_sql(f->db, "waiting|true|(null)",
               "SELECT status || '|' || (lease_owner IS NULL AND lease_expires_at IS NULL) || "
               "'|' || coalesce(error, '(null)') FROM runs WHERE id = '%s'",
               run);
    expect_sql(f->db, "1 failed cancelled: the worker stopped; the next worker repeats the call;",
               "SELECT string_agg(attempt || ' ' || status || ' ' || error || ';', '') "
               "FROM node_attempts WHERE run_id = '%s'",
               run);

    fx_start(f, 1, "worker-b");
    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", run);
    assert_int_equal(fake_count(), 2);
    char *key = xconcat(run, "-contact", NULL);
    for (int i = 0; i < 2; i++) {
        fake_request r = fake_at(i);
        assert_string_equal(r.method, "PUT");
        assert_string_equal(r.uri, "/api.xro/2.0/Contacts");
        assert_string_equal(r.authorization, "Bearer " XERO_TOKEN);
        assert_string_equal(r.xero_tenant, XERO_TENANT);
        assert_non_null(r.idempotency_key);
        assert_string_equal(r.idempotency_key, key);
        assert_string_equal(r.body, "{\"Contacts\":[{\"Name\":\"Ann\"}]}");
    }
    expect_sql(f->db, "1 failed;2 succeeded c-42;",
               "SELECT string_agg(attempt || ' ' || status || coalesce(' ' || "
               "(output->>'contact_id'), '') || ';', '' ORDER BY attempt) "
               "FROM node_attempts WHERE run_id = '%s'",
               run);
    expect_sql(f->db, "2|c-42",
               "SELECT attempt || '|' || (context #>> '{nodes,contact,output,contact_id}') "
               "FROM runs WHERE id = '%s'",
               run);
    free(key);
    free(run);
    free(wf);
}

/* A call cancelled because the worker stops is not the platform failing: it does not use up the
 * node's retries. With max_attempts 1 the next worker still makes the call (same key). */
static void stop_does_not_spend_a_retry(void **state)
{
    fixture *f = fx_open(state, "unit_executor_stop_no_retry_spent");
    add_connection(f, "xero", XERO_TENANT, XERO_TOKEN, "active");
    char *wf = add_workflow(
        f, WORKFLOW("{\"id\": \"contact\", \"type\": \"action\", \"connector\": \"xero\", "
                    "\"action\": \"create_contact\", \"params\": {\"name\": "
                    "\"{{event.payload.name}}\"}" RETRY(1, 20, 50) "}",
                    ""));
    char *run = add_run(f, wf);
    fx_start_with_a_slow_first_call(f, xero_created, 2000);
    wait_value(f->db, "running", "SELECT status FROM node_attempts WHERE run_id = '%s'", run);

    fx_stop(f, 0, 100);
    expect_sql(f->db, "waiting|true|(null)",
               "SELECT status || '|' || (lease_owner IS NULL) || '|' || coalesce(error, "
               "'(null)') FROM runs WHERE id = '%s'",
               run);
    fx_start(f, 1, "worker-b");
    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", run);
    assert_int_equal(fake_count(), 2);
    assert_string_equal(fake_at(0).idempotency_key, fake_at(1).idempotency_key);
    free(run);
    free(wf);
}

/* A stopping worker lets the call in flight finish but starts no new one: the run's next call is
 * made by the next worker, not sent and then cut off at the deadline (which for Twilio, without
 * an idempotency key, would leave an unknown outcome). */
static void stop_starts_no_new_call(void **state)
{
    fixture *f = fx_open(state, "unit_executor_stop_no_new_call");
    add_connection(f, "twilio", TWILIO_ACCOUNT, TWILIO_TOKEN, "active");
    char *wf = add_workflow(
        f,
        WORKFLOW(SMS_NODE("") ", {\"id\": \"sms2\", \"type\": \"action\", \"connector\": "
                              "\"twilio\", \"action\": \"send_message\", \"params\": {\"to\": "
                              "\"+15550001111\", \"from\": \"+15550002222\", \"body\": \"Bye\"}}",
                 "{\"from\": \"sms\", \"to\": \"sms2\"}"));
    char *run = add_run(f, wf);
    fake_answer first = twilio_created;
    first.delay_ms = 300;
    fake_script(first);
    fake_answer second = twilio_created;
    second.delay_ms = 3000;
    fake_script(second);
    fake_answer_always(twilio_created);
    fx_start(f, 0, "worker-a");
    fake_wait_requests(1);

    fx_stop(f, 0, 1000);
    assert_int_equal(fake_count(), 1); /* sms2 was not sent by the stopping worker */
    expect_sql(f->db, "waiting|true",
               "SELECT status || '|' || (lease_owner IS NULL) FROM runs WHERE id = '%s'", run);
    expect_sql(f->db, "sms 1 succeeded;",
               "SELECT string_agg(node_id || ' ' || attempt || ' ' || status || ';', '' "
               "ORDER BY id) FROM node_attempts WHERE run_id = '%s'",
               run);

    fake_clear();
    fake_answer_always(twilio_created);
    fx_start(f, 1, "worker-b");
    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", run);
    assert_int_equal(fake_count(), 1); /* only sms2: sms is not repeated */
    assert_string_equal(fake_at(0).body, "To=%2B15550001111&From=%2B15550002222&Body=Bye");
    free(run);
    free(wf);
}

/* Stopping with a slow call to a platform without an idempotency key (Twilio) cancels it at the
 * timeout; whether the message went out is unknown, so the attempt says so and the run fails
 * for an operator to check rather than being sent twice. */
static void stop_cancels_a_non_idempotent_call_as_outcome_unknown(void **state)
{
    fixture *f = fx_open(state, "unit_executor_stop_twilio");
    add_connection(f, "twilio", TWILIO_ACCOUNT, TWILIO_TOKEN, "active");
    char *wf = add_workflow(f, WORKFLOW(SMS_NODE(RETRY(3, 20, 50)), ""));
    char *run = add_run(f, wf);
    fx_start_with_a_slow_first_call(f, twilio_created, 2000);
    wait_value(f->db, "running", "SELECT status FROM node_attempts WHERE run_id = '%s'", run);

    fx_stop(f, 0, 100);
    expect_sql(f->db,
               "failed|true|node sms: the call's outcome is unknown (cancelled) and twilio has no "
               "idempotency key; check the platform before retrying the run",
               "SELECT status || '|' || (lease_owner IS NULL) || '|' || error FROM runs "
               "WHERE id = '%s'",
               run);
    expect_sql(f->db, "1 outcome_unknown cancelled;",
               "SELECT string_agg(attempt || ' ' || status || ' ' || error || ';', '') "
               "FROM node_attempts WHERE run_id = '%s'",
               run);
    assert_int_equal(fake_count(), 1);
    free(run);
    free(wf);
}

/* Runs whose worker died mid-call (lease expired, attempt left 'running') are taken over: the
 * Xero call is made again with the same idempotency key and succeeds; the Twilio one, whose
 * outcome cannot be known, fails for an operator without a second call. */
static void runs_of_a_lost_worker_are_taken_over(void **state)
{
    fixture *f = fx_open(state, "unit_executor_lost_worker");
    add_connection(f, "xero", XERO_TENANT, XERO_TOKEN, "active");
    add_connection(f, "twilio", TWILIO_ACCOUNT, TWILIO_TOKEN, "active");
    char *xero_wf = add_workflow(f, WORKFLOW(CONTACT_NODE, ""));
    char *twilio_wf = add_workflow(f, WORKFLOW(SMS_NODE(""), ""));
    char *xero_run = add_run(f, xero_wf);
    char *twilio_run = add_run(f, twilio_wf);
    char *key = xconcat(xero_run, "-contact", NULL);
    /* What a worker that died during the calls leaves behind. */
    pgf_exec(f->db, "UPDATE runs SET status = 'running', lease_owner = 'dead-worker', "
                    "lease_expires_at = now() - interval '1 second', started_at = now(), "
                    "attempt = 1");
    const char *p1[] = {xero_run, key};
    free(pgf_value_params(f->db,
                          "INSERT INTO node_attempts (run_id, node_id, attempt, status, input, "
                          "idempotency_key) VALUES ($1, 'contact', 1, 'running', "
                          "'{\"name\": \"Ann\"}', $2)",
                          2, p1));
    const char *p2[] = {twilio_run};
    free(pgf_value_params(f->db,
                          "INSERT INTO node_attempts (run_id, node_id, attempt, status, input) "
                          "VALUES ($1, 'sms', 1, 'running', '{\"to\": \"+15550001111\"}')",
                          1, p2));
    fake_answer_always(xero_created);
    fx_start(f, 0, "worker-a");

    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", xero_run);
    wait_value(f->db, "failed", "SELECT status FROM runs WHERE id = '%s'", twilio_run);
    assert_int_equal(fake_count(), 1);
    fake_request r = fake_at(0);
    assert_string_equal(r.uri, "/api.xro/2.0/Contacts");
    assert_non_null(r.idempotency_key);
    assert_string_equal(r.idempotency_key, key);
    expect_sql(f->db,
               "1 failed the worker was lost during this call; retried with the same "
               "idempotency key;2 succeeded -;",
               "SELECT string_agg(attempt || ' ' || status || ' ' || coalesce(error, '-') || "
               "';', '' ORDER BY attempt) FROM node_attempts WHERE run_id = '%s'",
               xero_run);
    expect_sql(f->db,
               "1 outcome_unknown the worker was lost during this call; whether the platform "
               "acted is unknown;",
               "SELECT string_agg(attempt || ' ' || status || ' ' || error || ';', '') "
               "FROM node_attempts WHERE run_id = '%s'",
               twilio_run);
    expect_sql(f->db,
               "node sms: the call's outcome is unknown after a worker was lost and twilio has "
               "no idempotency key; check the platform before retrying the run|true",
               "SELECT error || '|' || (lease_owner IS NULL) FROM runs WHERE id = '%s'",
               twilio_run);
    free(key);
    free(twilio_run);
    free(xero_run);
    free(twilio_wf);
    free(xero_wf);
}

/* A run intake created already leased to this worker and handed over (engine_executor_adopt)
 * starts without a claim round: the claim query cannot see it (status running), yet it runs and
 * finishes with the lease cleared. */
static void a_handed_over_run_runs_without_a_claim(void **state)
{
    fixture *f = fx_open(state, "unit_executor_adopt");
    add_connection(f, "twilio", TWILIO_ACCOUNT, TWILIO_TOKEN, "active");
    char *wf = add_workflow(f, WORKFLOW(SMS_NODE(""), ""));
    char *run = add_run(f, wf);
    /* As intake leaves it: running, leased to the worker for longer than the test. */
    pgf_exec(f->db, "UPDATE runs SET status = 'running', lease_owner = 'worker-a', "
                    "lease_expires_at = now() + interval '5 minutes', started_at = now(), "
                    "attempt = 1");
    fake_answer_always(twilio_created);
    engine_executor *ex = fx_start(f, 0, "worker-a");
    assert_int_equal(engine_executor_room(ex), 100);

    engine_handoff h = {.version = 1};
    snprintf(h.id, sizeof h.id, "%s", run);
    snprintf(h.tenant_id, sizeof h.tenant_id, "%s", f->tenant_id);
    snprintf(h.workflow_id, sizeof h.workflow_id, "%s", wf);
    h.trigger = xstrdup(TRIGGER);
    h.tenant_json =
        value_of(f->db, "SELECT json_build_object('id', id, 'slug', slug, 'name', name, "
                        "'environment', environment)::text FROM tenants");
    engine_executor_adopt(ex, &h, 1); /* takes trigger and tenant_json over */

    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", run);
    assert_int_equal(fake_count(), 1);
    expect_twilio_send(0);
    expect_sql(f->db, "1|true|SM0001",
               "SELECT attempt || '|' || (lease_owner IS NULL AND lease_expires_at IS NULL) || "
               "'|' || (context #>> '{nodes,sms,output,sid}') FROM runs WHERE id = '%s'",
               run);
    free(run);
    free(wf);
}

/* Idempotency keys hold the whole node id: two nodes whose long ids share a prefix get two keys. */
static void long_node_ids_get_distinct_idempotency_keys(void **state)
{
    fixture *f = fx_open(state, "unit_executor_long_node_ids");
    add_connection(f, "xero", XERO_TENANT, XERO_TOKEN, "active");
#define LONG_ID_PREFIX "contact_for_the_customer_who_placed_the_order_in_the_shop"
#define LONG_NODE(suffix)                                                                          \
    "{\"id\": \"" LONG_ID_PREFIX suffix "\", \"type\": \"action\", \"connector\": \"xero\", "      \
    "\"action\": \"create_contact\", \"params\": {\"name\": \"{{event.payload.name}}\"}" RETRY(    \
        3, 20, 50) "}"
    char *wf = add_workflow(f, WORKFLOW(LONG_NODE("_first") ", " LONG_NODE("_again"),
                                        "{\"from\": \"" LONG_ID_PREFIX
                                        "_first\", \"to\": \"" LONG_ID_PREFIX "_again\"}"));
    char *run = add_run(f, wf);
    fake_answer_always(xero_created);
    fx_start(f, 0, "worker-a");

    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", run);
    assert_int_equal(fake_count(), 2);
    fake_request a = fake_at(0), b = fake_at(1);
    assert_non_null(a.idempotency_key);
    assert_non_null(b.idempotency_key);
    /* Two different contacts: Xero would answer the second with the first one's result. */
    assert_string_not_equal(a.idempotency_key, b.idempotency_key);
#undef LONG_NODE
#undef LONG_ID_PREFIX
    free(run);
    free(wf);
}

/* A 401 on a later node's connection is refreshed too (one refresh per call, not per run). */
static void a_401_on_a_second_connection_is_refreshed_too(void **state)
{
    fixture *f = fx_open(state, "unit_executor_auth_two_nodes");
    add_oauth_connection(f, "xero", XERO_TENANT, "xero-expired", "xero-refresh");
    add_oauth_connection(f, "quickbooks", "realm-1", "qbo-expired", "qbo-refresh");
    char *wf = add_workflow(
        f, WORKFLOW(CONTACT_NODE ", {\"id\": \"receipt\", \"type\": \"action\", \"connector\": "
                                 "\"quickbooks\", \"action\": \"create_sales_receipt\", "
                                 "\"params\": {\"lines\": [{\"amount\": 10, \"item_id\": \"1\"}]}}",
                    "{\"from\": \"contact\", \"to\": \"receipt\"}"));
    char *run = add_run(f, wf);
    /* QuickBooks' token answers say when the refresh token dies (100 days, rolling). */
    pthread_mutex_lock(&fake.lock);
    fake.token_body = "{\"access_token\": \"new-access\", \"refresh_token\": \"new-refresh\", "
                      "\"expires_in\": 3600, \"x_refresh_token_expires_in\": 8640000, "
                      "\"token_type\": \"bearer\"}";
    pthread_mutex_unlock(&fake.lock);
    fake_answer unauthorized = {
        .status = 401, .body = "{\"Title\": \"Unauthorized\", \"Detail\": \"TokenExpired\"}"};
    fake_script(unauthorized); /* xero, old token */
    fake_script(xero_created); /* xero, refreshed token */
    fake_script(unauthorized); /* quickbooks, old token */
    fake_answer_always((fake_answer){
        .status = 200, .body = "{\"SalesReceipt\": {\"Id\": \"7\", \"TotalAmt\": 10}}"});
    fx_start(f, 0, "worker-a");

    wait_value(f->db, "t", "SELECT status IN ('succeeded', 'failed') FROM runs WHERE id = '%s'",
               run);
    expect_sql(f->db, "succeeded|-",
               "SELECT status || '|' || coalesce(error, '-') FROM runs WHERE id = '%s'", run);
    assert_int_equal(fake_token_count(), 2);
    assert_int_equal(fake_count(), 4);
    expect_sql(f->db, "quickbooks 100;xero 100;",
               "SELECT string_agg(connector || ' ' || round(extract(epoch from "
               "refresh_token_expires_at - now()) / 86400) || ';', '' ORDER BY connector) "
               "FROM connections WHERE refresh_token_expires_at IS NOT NULL");
    free(run);
    free(wf);
}

/* A SIGHUP that brings the token key (engine_executor_reload_secrets) is used at once: the
 * connection read while there was none is read again, not kept for the cache's 10 s. */
static void a_reloaded_token_key_is_used_at_once(void **state)
{
    fixture *f = fx_open(state, "unit_executor_reload_key");
    add_connection(f, "xero", XERO_TENANT, XERO_TOKEN, "active");
    char *wf = add_workflow(f, WORKFLOW(CONTACT_NODE, ""));
    char *first = add_run(f, wf);
    fake_answer_always(xero_created);
    char err[512] = "";
    f->metrics[0] = hf_metrics_new();
    f->ex[0] = engine_executor_new(&f->cfg, "worker-a", f->defs, f->metrics[0], catalog, secrets,
                                   NULL, err, sizeof err);
    assert_non_null(f->ex[0]);
    engine_executor_start(f->ex[0]);
    wait_value(f->db, "failed", "SELECT status FROM runs WHERE id = '%s'", first);
    expect_sql(f->db, "t",
               "SELECT error LIKE '%%token_key is not configured%%' FROM runs "
               "WHERE id = '%s'",
               first);
    hf_secrets *fresh = hf_secrets_new();
    hf_secrets_set(fresh, "xero/client_id", "xero-client", 11);
    engine_executor_reload_secrets(f->ex[0], fresh, engine_keyring_from_raw(token_key));
    char *second = add_run(f, wf);
    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", second);
    assert_int_equal(fake_count(), 1);
    free(first);
    free(second);
    free(wf);
}

static void set_token_status(int status)
{
    pthread_mutex_lock(&fake.lock);
    fake.token_status = status;
    pthread_mutex_unlock(&fake.lock);
}

/* A 401 whose refresh cannot be made now (the identity endpoint answers 503) says nothing about
 * the credentials: the attempt is retried like any transient failure, and the run succeeds once
 * the platform answers again (here the retry refreshes and the new token is taken). */
static void a_401_with_the_token_endpoint_down_is_retried(void **state)
{
    fixture *f = fx_open(state, "unit_executor_auth_refresh_down");
    add_oauth_connection(f, "xero", XERO_TENANT, "xero-expired", "xero-refresh");
    char *wf = add_workflow(f, WORKFLOW(CONTACT_NODE, ""));
    char *run = add_run(f, wf);
    set_token_status(503);
    fake_answer unauthorized = {
        .status = 401, .body = "{\"Title\": \"Unauthorized\", \"Detail\": \"TokenExpired\"}"};
    fake_script(unauthorized);
    fake_script(unauthorized);
    fake_answer_always(xero_created);
    fx_start(f, 0, "worker-a");

    wait_value(f->db, "waiting", "SELECT status FROM runs WHERE id = '%s'", run);
    set_token_status(0);
    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", run);
    expect_sql(f->db, "1 failed 401;2 failed 401;3 succeeded 200;",
               "SELECT string_agg(attempt || ' ' || status || ' ' || http_status || ';', '' "
               "ORDER BY id) FROM node_attempts WHERE run_id = '%s'",
               run);
    expect_sql(f->db, "t",
               "SELECT error LIKE '%%token refresh at xero failed: the token endpoint answered "
               "HTTP 503' FROM node_attempts WHERE run_id = '%s' AND attempt = 1",
               run);
    assert_int_equal(fake_token_count(), 2);
    expect_sql(f->db, "1", "SELECT token_version FROM connections");
    free(run);
    free(wf);
}

/* One refresh per call, not per node: a 401 after a refresh, a 503 and a wait is a new call's 401
 * (the token may have been replaced meanwhile) and gets its own refresh. */
static void a_401_after_a_retried_503_is_refreshed_again(void **state)
{
    fixture *f = fx_open(state, "unit_executor_auth_after_retry");
    add_oauth_connection(f, "xero", XERO_TENANT, "xero-expired", "xero-refresh");
    char *wf = add_workflow(
        f, WORKFLOW("{\"id\": \"contact\", \"type\": \"action\", \"connector\": \"xero\", "
                    "\"action\": \"create_contact\", \"params\": {\"name\": "
                    "\"{{event.payload.name}}\"}" RETRY(5, 20, 50) "}",
                    ""));
    char *run = add_run(f, wf);
    fake_answer unauthorized = {
        .status = 401, .body = "{\"Title\": \"Unauthorized\", \"Detail\": \"TokenExpired\"}"};
    fake_script(unauthorized);
    fake_script((fake_answer){.status = 503, .body = "{\"Message\": \"Service unavailable\"}"});
    fake_script(unauthorized);
    fake_answer_always(xero_created);
    fx_start(f, 0, "worker-a");

    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", run);
    expect_sql(f->db, "1 failed 401;2 failed 503;3 failed 401;4 succeeded 200;",
               "SELECT string_agg(attempt || ' ' || status || ' ' || http_status || ';', '' "
               "ORDER BY id) FROM node_attempts WHERE run_id = '%s'",
               run);
    assert_int_equal(fake_token_count(), 2);
    free(run);
    free(wf);
}

/* A refresh the platform refuses (invalid_grant: the refresh token was revoked) fails the run at
 * once, saying why and that the connection must be reconnected. */
static void a_401_with_a_refused_refresh_fails_the_run(void **state)
{
    fixture *f = fx_open(state, "unit_executor_auth_refresh_refused");
    add_oauth_connection(f, "xero", XERO_TENANT, "xero-expired", "xero-refresh");
    char *wf = add_workflow(f, WORKFLOW(CONTACT_NODE, ""));
    char *run = add_run(f, wf);
    set_token_status(400);
    fake_answer_always((fake_answer){
        .status = 401, .body = "{\"Title\": \"Unauthorized\", \"Detail\": \"TokenExpired\"}"});
    fx_start(f, 0, "worker-a");

    wait_value(f->db, "failed", "SELECT status FROM runs WHERE id = '%s'", run);
    expect_sql(f->db, "t",
               "SELECT error LIKE 'the platform rejected the connection''s credentials and "
               "refused to renew them (reconnect it): token refresh at xero failed: "
               "%%invalid_grant%%' FROM runs WHERE id = '%s'",
               run);
    assert_int_equal(fake_count(), 1);
    assert_int_equal(fake_token_count(), 1);
    free(run);
    free(wf);
}

/* A 401 whose refresh finds newer tokens another worker stored takes them; when those are
 * refused too (revoked or expired since), the call refreshes them itself, once. */
static void a_401_with_newer_tokens_that_died_too_refreshes_them(void **state)
{
    fixture *f = fx_open(state, "unit_executor_auth_took_dead");
    add_oauth_connection(f, "xero", XERO_TENANT, "xero-expired", "xero-refresh");
    char *wf = add_workflow(f, WORKFLOW(CONTACT_NODE, ""));
    char *run = add_run(f, wf);
    fake_answer unauthorized = {
        .status = 401, .body = "{\"Title\": \"Unauthorized\", \"Detail\": \"TokenExpired\"}"};
    fake_answer held = unauthorized;
    held.delay_ms = 800;
    fake_script(held);         /* with xero-expired, answered once "another worker" refreshed */
    fake_script(unauthorized); /* with the other worker's token, dead by now */
    fake_answer_always(xero_created);
    fx_start(f, 0, "worker-a");
    fake_wait_requests(1);
    /* Another worker's refresh: a newer version of the tokens in the row. */
    char *ctx = engine_token_context("xero", XERO_TENANT, "access");
    size_t n = 0;
    unsigned char *sealed = engine_token_seal(keys, ctx, "xero-other-worker", &n);
    char *hex = xmalloc(2 * n + 1);
    hf_hex_encode(sealed, n, hex);
    const char *p[] = {hex};
    free(pgf_value_params(f->db,
                          "UPDATE connections SET access_token_enc = decode($1, 'hex'), "
                          "token_version = token_version + 1",
                          1, p));
    free(hex);
    free(sealed);
    free(ctx);

    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", run);
    assert_int_equal(fake_count(), 3);
    assert_string_equal(fake_at(0).authorization, "Bearer xero-expired");
    assert_string_equal(fake_at(1).authorization, "Bearer xero-other-worker");
    assert_string_equal(fake_at(2).authorization, "Bearer new-access");
    assert_int_equal(fake_token_count(), 1);
    expect_sql(f->db, "2", "SELECT token_version FROM connections");
    free(run);
    free(wf);
}

/* A 401 for a call made with a token already replaced takes the new one: one refresh, not two. */
static void concurrent_401s_refresh_the_connection_once(void **state)
{
    fixture *f = fx_open(state, "unit_executor_auth_once");
    add_oauth_connection(f, "xero", XERO_TENANT, "xero-expired", "xero-refresh");
    char *wf = add_workflow(f, WORKFLOW(CONTACT_NODE, ""));
    char *run1 = add_run(f, wf);
    char *run2 = add_run(f, wf);
    fake_answer unauthorized = {.status = 401,
                                .body =
                                    "{\"Title\": \"Unauthorized\", \"Detail\": \"TokenExpired\"}",
                                .delay_ms = 200};
    fake_script(unauthorized);
    fake_script(unauthorized);
    fake_answer_always(xero_created);
    fx_start(f, 0, "worker-a");

    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", run1);
    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", run2);
    assert_int_equal(fake_count(), 4);
    /* Both calls failed with the same old token: one refresh serves both retries. */
    assert_int_equal(fake_token_count(), 1);
    expect_sql(f->db, "1", "SELECT token_version FROM connections");
    free(run1);
    free(run2);
    free(wf);
}

/* A token about to expire is refreshed ahead of time; when the identity endpoint is down, the
 * still-valid token is used and the refresh is not tried again on every call (each try blocks
 * the executor's loop). */
static void failed_refresh_ahead_of_expiry_is_not_retried_on_every_call(void **state)
{
    fixture *f = fx_open(state, "unit_executor_refresh_backoff");
    add_oauth_connection(f, "xero", XERO_TENANT, "xero-still-valid", "xero-refresh");
    /* Under 5 s left: refreshed first (tokens further from their end wait for their lead). */
    pgf_exec(f->db, "UPDATE connections SET token_expires_at = now() + interval '3 seconds'");
    char *wf = add_workflow(f, WORKFLOW(CONTACT_NODE, ""));
    char *runs[3];
    for (size_t i = 0; i < HF_ARRAY_LEN(runs); i++)
        runs[i] = add_run(f, wf);
    pthread_mutex_lock(&fake.lock);
    fake.token_status = 503;
    pthread_mutex_unlock(&fake.lock);
    fake_answer_always(xero_created);
    fx_start(f, 0, "worker-a");

    for (size_t i = 0; i < HF_ARRAY_LEN(runs); i++)
        wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", runs[i]);
    assert_int_equal(fake_count(), 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(fake_at(i).authorization, "Bearer xero-still-valid");
    assert_int_equal(fake_token_count(), 1);
    expect_sql(f->db, "0", "SELECT token_version FROM connections");
    for (size_t i = 0; i < HF_ARRAY_LEN(runs); i++)
        free(runs[i]);
    free(wf);
}

/* A platform issuing tokens that live under two minutes does not get a refresh before every call
 * (a fixed minute ahead would refresh each one: every 20-second token has under a minute left).
 * A token is refreshed ahead once less than half the time it had when first seen is left. */
static void short_lived_tokens_are_not_refreshed_before_every_call(void **state)
{
    fixture *f = fx_open(state, "unit_executor_short_tokens");
    add_oauth_connection(f, "xero", XERO_TENANT, "xero-ending", "xero-refresh");
    pgf_exec(f->db, "UPDATE connections SET token_expires_at = now() + interval '3 seconds'");
    pthread_mutex_lock(&fake.lock);
    fake.token_body = "{\"access_token\": \"new-access\", \"refresh_token\": \"new-refresh\", "
                      "\"expires_in\": 20, \"token_type\": \"Bearer\"}";
    pthread_mutex_unlock(&fake.lock);
    char *wf = add_workflow(f, WORKFLOW(CONTACT_NODE, ""));
    char *runs[4];
    for (size_t i = 0; i < HF_ARRAY_LEN(runs); i++)
        runs[i] = add_run(f, wf);
    fake_answer_always(xero_created);
    fx_start(f, 0, "worker-a");

    for (size_t i = 0; i < HF_ARRAY_LEN(runs); i++)
        wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", runs[i]);
    /* The 3-second token was refreshed once; the 20-second one it got serves every call. */
    assert_int_equal(fake_token_count(), 1);
    assert_int_equal(fake_count(), 4);
    for (int i = 0; i < 4; i++)
        assert_string_equal(fake_at(i).authorization, "Bearer new-access");
    expect_sql(f->db, "1", "SELECT token_version FROM connections");
    for (size_t i = 0; i < HF_ARRAY_LEN(runs); i++)
        free(runs[i]);
    free(wf);
}

/* A call a stopping worker cut off goes back with its run "without counting as a retry"
 * (README): with max_attempts 2, the next worker still has two real calls, not one. */
static void a_stop_cancelled_attempt_does_not_use_up_max_attempts(void **state)
{
    fixture *f = fx_open(state, "unit_executor_stop_budget");
    add_connection(f, "xero", XERO_TENANT, XERO_TOKEN, "active");
    char *wf = add_workflow(
        f, WORKFLOW("{\"id\": \"contact\", \"type\": \"action\", \"connector\": \"xero\", "
                    "\"action\": \"create_contact\", \"params\": {\"name\": "
                    "\"{{event.payload.name}}\"}" RETRY(2, 20, 50) "}",
                    ""));
    char *run = add_run(f, wf);
    fake_answer slow = xero_created;
    slow.delay_ms = 2000;
    fake_script(slow); /* cancelled by the stop */
    fake_script((fake_answer){.status = 503, .body = "{\"Message\": \"Service unavailable\"}"});
    fake_answer_always(xero_created);
    fx_start(f, 0, "worker-a");
    fake_wait_requests(1);
    wait_value(f->db, "running", "SELECT status FROM node_attempts WHERE run_id = '%s'", run);

    fx_stop(f, 0, 100);
    expect_sql(f->db, "waiting", "SELECT status FROM runs WHERE id = '%s'", run);
    fx_start(f, 1, "worker-b");
    wait_value(f->db, "t", "SELECT status IN ('succeeded', 'failed') FROM runs WHERE id = '%s'",
               run);
    /* Two attempts that count (a 503, then a success) besides the cancelled one. */
    expect_sql(f->db, "succeeded|-",
               "SELECT status || '|' || coalesce(error, '-') FROM runs WHERE id = '%s'", run);
    assert_int_equal(fake_count(), 3);
    free(run);
    free(wf);
}

/* A run whose lease ran out while a call was open (its worker could not renew it) is another
 * worker's: the first worker makes no further call for it and writes nothing of it (not even
 * the answer to its call: the attempt it left is the new owner's to mark), and the run finishes
 * once, on the worker that took it over (guarantee 3). */
static void a_run_taken_over_mid_call_is_finished_once(void **state)
{
    fixture *f = fx_open(state, "unit_executor_takeover_race");
    f->cfg.concurrency = 1; /* worker-a, holding the run, cannot claim it back itself */
    add_connection(f, "xero", XERO_TENANT, XERO_TOKEN, "active");
    add_connection(f, "twilio", TWILIO_ACCOUNT, TWILIO_TOKEN, "active");
    char *wf = add_workflow(
        f, WORKFLOW(CONTACT_NODE ", " SMS_NODE(""), "{\"from\": \"contact\", \"to\": \"sms\"}"));
    char *run = add_run(f, wf);
    fake_answer a_contact = xero_created;
    a_contact.delay_ms = 2000; /* worker-a's call, answered after its lease ran out */
    fake_answer b_contact = xero_created;
    b_contact.delay_ms = 3000; /* worker-b repeats it with the same key after the takeover */
    fake_script(a_contact);
    fake_script(b_contact);
    fake_answer_always(twilio_created);
    fx_start(f, 0, "worker-a");
    fake_wait_requests(1);
    wait_value(f->db, "running", "SELECT status FROM node_attempts WHERE run_id = '%s'", run);
    /* worker-a's lease runs out (its renewals stalled, say); worker-b takes the run over. */
    pgf_exec(f->db, "UPDATE runs SET lease_expires_at = now() - interval '1 second'");
    fx_start(f, 1, "worker-b");
    fake_wait_requests(2);
    wait_value(f->db, "worker-b", "SELECT lease_owner FROM runs WHERE id = '%s'", run);

    /* Both calls answered and the SMS sent: the run ends on worker-b. */
    wait_value(f->db, "succeeded", "SELECT status FROM runs WHERE id = '%s'", run);
    fx_stop(f, 0, 5000);               /* worker-a writes what it still has queued */
    assert_int_equal(fake_count(), 3); /* one SMS */
    /* worker-a's late answer did not overwrite worker-b's record of its lost attempt. */
    expect_sql(f->db, "1|failed|true;2|succeeded|true",
               "SELECT string_agg(attempt || '|' || status || '|' || "
               "(idempotency_key IS NOT NULL)::text, ';' ORDER BY attempt) "
               "FROM node_attempts WHERE run_id = '%s' AND node_id = 'contact'",
               run);
    expect_sql(f->db, "t",
               "SELECT error LIKE '%%lost%%' FROM node_attempts WHERE run_id = '%s' "
               "AND node_id = 'contact' AND attempt = 1",
               run);
    free(run);
    free(wf);
}

/* A run failed because its definition cannot be loaded keeps the outputs recorded so far (the
 * context is "node outputs so far", openapi.yaml). */
static void a_run_whose_definition_cannot_be_loaded_keeps_its_context(void **state)
{
    fixture *f = fx_open(state, "unit_executor_bad_def_context");
    char *wf = add_workflow(
        f, WORKFLOW("{\"id\": \"shape\", \"type\": \"transform\", \"output\": {\"who\": "
                    "\"{{event.payload.name}}\"}}, {\"id\": \"wait\", \"type\": \"delay\", "
                    "\"delay_ms\": 1000}",
                    "{\"from\": \"shape\", \"to\": \"wait\"}"));
    char *run = add_run(f, wf);
    fx_start(f, 0, "worker-a");
    wait_value(f->db, "waiting", "SELECT status FROM runs WHERE id = '%s'", run);
    expect_sql(f->db, "Ann",
               "SELECT context #>> '{nodes,shape,output,who}' FROM runs "
               "WHERE id = '%s'",
               run);
    fx_stop(f, 0, 1000);
    /* The next worker meets a node type it does not know (an upgrade in progress). */
    pgf_exec(f->db, "UPDATE workflow_versions SET definition = "
                    "jsonb_set(definition, '{nodes,1,type}', '\"loop\"')");
    engine_defs_free(f->defs);
    f->defs = engine_defs_new();
    fx_start(f, 1, "worker-b");
    wait_value(f->db, "failed", "SELECT status FROM runs WHERE id = '%s'", run);
    expect_sql(f->db, "Ann",
               "SELECT coalesce(context #>> '{nodes,shape,output,who}', '(erased)') FROM runs "
               "WHERE id = '%s'",
               run);
    free(run);
    free(wf);
}

/* ---- the group ---------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    hf_log_init("test_db_executor", HF_LOG_ERROR, HF_LOG_TEXT);
    evthread_use_pthreads();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_mutex_init(&fake.lock, NULL);
    char err[512] = "";
    hf_http_options o = {.listen = "127.0.0.1:0",
                         .threads = 1,
                         .max_body = 1 << 20,
                         .max_headers = 16384,
                         .timeout_ms = 10000,
                         .max_connections = 64};
    fake.server = hf_http_server_new(&o, fake_handle, NULL, err, sizeof err);
    if (!fake.server) {
        fprintf(stderr, "fake platform: %s\n", err);
        return -1;
    }
    hf_http_server_start(fake.server);
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", hf_http_server_port(fake.server));
    /* Set before any executor exists: connectors read them on each call. */
    setenv("HOOKFLOW_CONNECTOR_TWILIO_BASE_URL", base, 1);
    setenv("HOOKFLOW_CONNECTOR_XERO_BASE_URL", base, 1);
    setenv("HOOKFLOW_CONNECTOR_QUICKBOOKS_BASE_URL", base, 1);
    char token_url[96];
    snprintf(token_url, sizeof token_url, "%s" FAKE_TOKEN_PATH, base);
    setenv("HOOKFLOW_CONNECTOR_XERO_TOKEN_URL", token_url, 1);
    setenv("HOOKFLOW_CONNECTOR_QUICKBOOKS_TOKEN_URL", token_url, 1);
    for (size_t i = 0; i < sizeof token_key; i++)
        token_key[i] = (unsigned char)(i * 7 + 3);
    keys = engine_keyring_from_raw(token_key);
    secrets = hf_secrets_new();
    hf_secrets_set(secrets, "xero/client_id", "xero-client", 11);
    hf_secrets_set(secrets, "xero/client_secret", "xero-secret", 11);
    hf_secrets_set(secrets, "quickbooks/client_id", "qbo-client", 10);
    hf_secrets_set(secrets, "quickbooks/client_secret", "qbo-secret", 10);
    catalog = hf_catalog_load(hf_catalog_default_dir(), err, sizeof err);
    if (!catalog) {
        fprintf(stderr, "catalog: %s\n", err);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    hf_http_server_free(fake.server);
    fake_clear();
    pthread_mutex_destroy(&fake.lock);
    hf_catalog_free(catalog);
    hf_secrets_free(secrets);
    engine_keyring_free(keys);
    curl_global_cleanup();
    return 0;
}

int main(void)
{
#define TEST(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
    const struct CMUnitTest tests[] = {
        TEST(action_run_calls_the_platform_and_succeeds),
        TEST(transient_errors_are_retried_then_succeed),
        TEST(retry_after_sets_the_next_run_time),
        TEST(a_client_error_fails_the_run_without_retry),
        TEST(exhausted_retries_fail_the_run),
        TEST(an_ambiguous_5xx_is_not_sent_again_without_an_idempotency_key),
        TEST(an_ambiguous_5xx_is_retried_with_an_idempotency_key),
        TEST(a_delay_waits_without_holding_the_worker),
        TEST(a_disabled_connection_fails_the_action),
        TEST(disabling_a_connection_stops_its_use_at_once),
        TEST(rejected_credentials_fail_the_run),
        TEST(stop_lets_a_call_in_flight_finish),
        TEST(stop_cancels_an_idempotent_call_and_another_worker_finishes),
        TEST(stop_does_not_spend_a_retry),
        TEST(stop_starts_no_new_call),
        TEST(stop_cancels_a_non_idempotent_call_as_outcome_unknown),
        TEST(runs_of_a_lost_worker_are_taken_over),
        TEST(a_handed_over_run_runs_without_a_claim),
        TEST(long_node_ids_get_distinct_idempotency_keys),
        TEST(a_reloaded_token_key_is_used_at_once),
        TEST(a_401_on_a_second_connection_is_refreshed_too),
        TEST(a_401_with_the_token_endpoint_down_is_retried),
        TEST(a_401_with_a_refused_refresh_fails_the_run),
        TEST(a_401_after_a_retried_503_is_refreshed_again),
        TEST(a_401_with_newer_tokens_that_died_too_refreshes_them),
        TEST(short_lived_tokens_are_not_refreshed_before_every_call),
        TEST(concurrent_401s_refresh_the_connection_once),
        TEST(failed_refresh_ahead_of_expiry_is_not_retried_on_every_call),
        TEST(a_stop_cancelled_attempt_does_not_use_up_max_attempts),
        TEST(a_run_taken_over_mid_call_is_finished_once),
        TEST(a_run_whose_definition_cannot_be_loaded_keeps_its_context),
    };
#undef TEST
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
