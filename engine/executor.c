/* executor: the run side of a worker. It claims runnable runs under a lease (FOR UPDATE SKIP
 * LOCKED), walks each run's node graph, calls the platforms through libcurl's multi interface on
 * one event loop, records every node attempt, retries with backoff, keeps delays and retries as a
 * next-run time, and finishes the run. Database writes are batched per loop tick. */
#include "executor.h"

#include <event2/event.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "connectors/connector.h"
#include "crypto.h"
#include "expr.h"
#include "http_client.h"
#include "json.h"
#include "log.h"
#include "pg.h"

typedef enum { NS_PENDING, NS_DONE, NS_SKIPPED, NS_WAITING } node_status;

typedef struct node_state {
    node_status st;
    char *output;     /* JSON text of a finished node's output */
    int branch;       /* condition result: 0/1; -1 otherwise */
    int attempts;     /* the last attempt number recorded */
    int uncharged;    /* of those, calls cut off by a worker's stop: not counted as retries */
    int64_t until_ms; /* delay: wall-clock wake time */
} node_state;

typedef enum { OUT_OK, OUT_RETRY, OUT_AUTH, OUT_FAIL, OUT_UNKNOWN } call_outcome;

typedef struct run run;
struct run {
    run *next_held; /* every run this worker holds */
    engine_executor *ex;
    char id[40], tenant_id[40], workflow_id[40];
    int version;
    const wf_def *def;
    char *trigger;     /* the envelope, JSON text */
    char *tenant_json; /* {"id","slug","name","environment"} */
    node_state *nodes;
    size_t cursor; /* position in def->topo */
    bool finished; /* a final update is queued; freed once it is written */
    bool in_call;
    /* the call in progress */
    size_t call_node;
    int call_attempt;
    long long attempt_id;
    char *call_input;
    /* "<run uuid>-<node id>": 36 + 1 + up to 64 (wf_parse's limit on node ids) + NUL; cut short,
     * two nodes with long ids would share a key and the platform would answer the second call
     * with the first one's result. */
    char idem_key[36 + 1 + 64 + 1];
    connector_request req;
    bool auth_retried; /* the current call's 401 already led to a refresh */
    bool auth_took;    /* ... or to newer tokens another refresh had stored */
    int token_version; /* of the connection's tokens the current call was built with */
};

/* Batched writes, flushed once per tick. */
typedef struct attempt_row { /* a finished attempt, inserted whole */
    char run_id[40];
    char *node_id, *status, *input, *output, *error, *key;
    int attempt, http_status, duration_ms;
} attempt_row;

typedef struct attempt_update {
    char run_id[40];
    long long id;
    char *status, *output, *error;
    int http_status, duration_ms;
} attempt_update;

typedef struct run_update {
    char run_id[40];
    char *status, *context, *error;
    int64_t next_run_ms; /* 0: keep */
} run_update;

/* A run whose values PostgreSQL refused (a number beyond its range, text that is not UTF-8): its
 * writes go without them, with the note as their error, and the run fails. */
typedef struct refused_run {
    char run_id[40];
    char *note;
} refused_run;

typedef struct token_entry {
    char key[96]; /* tenant_id/connector */
    char conn_id[40];
    char *account, *access, *refresh;
    int64_t expires_ms; /* wall clock; 0 = no expiry known */
    int64_t lead_ms;    /* a call refreshes the token first once it has less than this left */
    int version;
    int64_t loaded_ms;
    bool stale;                    /* the connection changed since: read the row again */
    int64_t refresh_not_before_ms; /* after a failed refresh ahead of expiry (monotonic) */
    struct token_entry *next;
} token_entry;

/* After a refresh ahead of expiry fails, the still-valid token is used without trying again for
 * this long: a refresh blocks the executor's loop (up to its 15 s timeout), and an identity
 * endpoint that is down must not cost that on every call. */
#define TOKEN_REFRESH_RETRY_MS 30000

#define VEC(T)                                                                                     \
    struct {                                                                                       \
        T *v;                                                                                      \
        size_t n, cap;                                                                             \
    }
#define VEC_PUSH(vec, item)                                                                        \
    do {                                                                                           \
        if ((vec).n == (vec).cap) {                                                                \
            (vec).cap = (vec).cap ? (vec).cap * 2 : 32;                                            \
            (vec).v = xrealloc((vec).v, (vec).cap * sizeof *(vec).v);                              \
        }                                                                                          \
        (vec).v[(vec).n++] = (item);                                                               \
    } while (0)

struct engine_executor {
    const engine_config *cfg;
    char *worker_id;
    engine_defs *defs;
    hf_metrics *metrics;
    const hf_catalog *catalog;
    const hf_secrets *secrets;
    const engine_keyring *keys;
    /* A SIGHUP's secrets: handed over under inbox_lock (new_*; new_secrets is never NULL for a
     * reload, new_keys may be), put in use by the loop (reload_ev), which owns them from then on
     * (own_*) and frees them at the next swap. */
    hf_secrets *new_secrets, *own_secrets;
    engine_keyring *new_keys, *own_keys;
    struct event_base *base;
    struct event *tick_ev, *stop_ev, *renew_ev, *gauge_ev, *poll_ev, *reload_ev;
    atomic_bool want_claim; /* a claim round is due (poll timer, intake, runs freed up) */
    hf_http_client *http;
    PGconn *db;
    pthread_t thread;
    bool started;
    atomic_bool db_ok;
    bool stopping;
    int64_t stop_deadline_ms;
    bool tick_pending;

    run *held; /* linked list */
    size_t nheld;
    size_t ncalls; /* calls in flight */

    VEC(run *) to_call; /* prepared, waiting for their 'running' attempt row */
    VEC(attempt_row) rows;
    VEC(attempt_update) updates;
    VEC(run_update) run_updates;
    VEC(run *) done_runs; /* finished, freed after the flush */
    VEC(refused_run) refused;

    token_entry *tokens;
    unsigned housekeeping_ticks;

    pthread_mutex_t inbox_lock; /* guards inbox: runs handed over by intake */
    VEC(engine_handoff) inbox;
    atomic_int_fast64_t inbox_len;

    hf_counter *claimed, *retries_total, *refreshes, *refused_runs;
    atomic_int_fast64_t gauge_held, gauge_calls;
};

static void schedule_tick(engine_executor *ex, int ms);
static void schedule_soon(engine_executor *ex);
static void advance(run *r);

/* ---- small helpers ----------------------------------------------------------------------- */

static const char *connector_of(const run *r, size_t idx)
{
    return r->def->nodes[idx].connector;
}

static void run_free(run *r)
{
    if (!r->def) {
        free(r->nodes);
    } else {
        for (size_t i = 0; i < r->def->nnodes; i++)
            free(r->nodes[i].output);
        free(r->nodes);
    }
    free(r->trigger);
    free(r->tenant_json);
    free(r->call_input);
    connector_request_free(&r->req);
    free(r);
}

static void unhold(engine_executor *ex, run *r)
{
    for (run **p = &ex->held; *p; p = &(*p)->next_held) {
        if (*p == r) {
            *p = r->next_held;
            ex->nheld--;
            atomic_store(&ex->gauge_held, (int64_t)ex->nheld);
            return;
        }
    }
}

/* {"event": ..., "tenant": ..., "nodes": {...}} for templates and conditions. */
static hf_json run_context(const run *r, char *err, size_t errlen)
{
    hf_buf b = {0};
    hf_buf_puts(&b, "{\"event\":");
    hf_buf_puts(&b, r->trigger);
    hf_buf_puts(&b, ",\"tenant\":");
    hf_buf_puts(&b, r->tenant_json);
    hf_buf_puts(&b, ",\"nodes\":{");
    bool first = true;
    for (size_t i = 0; i < r->def->nnodes; i++) {
        const node_state *s = &r->nodes[i];
        if (s->st != NS_DONE && s->st != NS_SKIPPED)
            continue;
        if (!first)
            hf_buf_putc(&b, ',');
        first = false;
        hf_json_append_cstr(&b, r->def->nodes[i].id);
        hf_buf_printf(&b, ":{\"status\":\"%s\",\"output\":%s",
                      s->st == NS_DONE ? "succeeded" : "skipped", s->output ? s->output : "null");
        if (s->branch >= 0)
            hf_buf_printf(&b, ",\"branch\":%s", s->branch ? "true" : "false");
        hf_buf_putc(&b, '}');
    }
    hf_buf_puts(&b, "}}");
    hf_json ctx = hf_json_parse(b.data, b.len, err, errlen);
    hf_buf_free(&b);
    return ctx;
}

/* The context column: node outputs so far and the pending delay, if any. */
static char *run_context_column(const run *r)
{
    hf_buf b = {0};
    hf_buf_puts(&b, "{\"nodes\":{");
    bool first = true;
    for (size_t i = 0; i < r->def->nnodes; i++) {
        const node_state *s = &r->nodes[i];
        if (s->st == NS_PENDING)
            continue;
        if (!first)
            hf_buf_putc(&b, ',');
        first = false;
        hf_json_append_cstr(&b, r->def->nodes[i].id);
        const char *st = s->st == NS_DONE      ? "succeeded"
                         : s->st == NS_SKIPPED ? "skipped"
                                               : "waiting";
        hf_buf_printf(&b, ":{\"status\":\"%s\"", st);
        if (s->st == NS_DONE)
            hf_buf_printf(&b, ",\"output\":%s", s->output ? s->output : "null");
        if (s->branch >= 0)
            hf_buf_printf(&b, ",\"branch\":%s", s->branch ? "true" : "false");
        if (s->st == NS_WAITING) {
            char until[40];
            hf_format_rfc3339(s->until_ms, until, sizeof until);
            hf_buf_printf(&b, ",\"until\":\"%s\",\"until_ms\":%lld", until, (long long)s->until_ms);
        }
        hf_buf_putc(&b, '}');
    }
    hf_buf_puts(&b, "}}");
    return hf_buf_steal(&b);
}

static void queue_row(engine_executor *ex, const run *r, size_t idx, int attempt,
                      const char *status, const char *input, const char *output, const char *error,
                      const char *key, int http_status, int duration_ms)
{
    attempt_row row = {0};
    snprintf(row.run_id, sizeof row.run_id, "%s", r->id);
    row.node_id = xstrdup(r->def->nodes[idx].id);
    row.status = xstrdup(status);
    row.input = input ? xstrdup(input) : NULL;
    row.output = output ? xstrdup(output) : NULL;
    row.error = error ? xstrdup(error) : NULL;
    row.key = key ? xstrdup(key) : NULL;
    row.attempt = attempt;
    row.http_status = http_status;
    row.duration_ms = duration_ms;
    VEC_PUSH(ex->rows, row);
}

static void queue_update(engine_executor *ex, const run *r, long long id, const char *status,
                         const char *output, const char *error, int http_status, int duration_ms)
{
    attempt_update u = {.id = id,
                        .status = xstrdup(status),
                        .output = output ? xstrdup(output) : NULL,
                        .error = error ? xstrdup(error) : NULL,
                        .http_status = http_status,
                        .duration_ms = duration_ms};
    snprintf(u.run_id, sizeof u.run_id, "%s", r->id);
    VEC_PUSH(ex->updates, u);
}

/* Ends the run's time on this worker: succeeded, failed, or waiting until next_run_ms. */
static void finish(run *r, const char *status, const char *error, int64_t next_run_ms)
{
    engine_executor *ex = r->ex;
    run_update u = {0};
    snprintf(u.run_id, sizeof u.run_id, "%s", r->id);
    u.status = xstrdup(status);
    u.context = run_context_column(r);
    u.error = error ? xstrdup(error) : NULL;
    u.next_run_ms = next_run_ms;
    VEC_PUSH(ex->run_updates, u);
    r->finished = true;
    VEC_PUSH(ex->done_runs, r);
    if (strcmp(status, "waiting") != 0) {
        char labels[64];
        snprintf(labels, sizeof labels, "status=\"%s\"", status);
        hf_counter_add(hf_metrics_counter(ex->metrics, "hookflow_engine_runs_finished_total",
                                          "Runs that reached a final status", labels),
                       1);
    }
    hf_log_kv(strcmp(status, "failed") == 0 ? HF_LOG_WARN : HF_LOG_DEBUG, "run.finished", "run",
              r->id, "status", status, "error", error ? error : "", NULL);
    schedule_soon(ex);
}

/* ---- tokens ------------------------------------------------------------------------------- */

static char *open_token(engine_executor *ex, const char *connector, const char *account,
                        const char *slot, const char *bytea)
{
    if (!bytea || !*bytea || !ex->keys)
        return NULL;
    size_t n;
    unsigned char *sealed = hf_pg_bytea_decode(bytea, &n);
    if (!sealed)
        return NULL;
    char *context = engine_token_context(connector, account, slot);
    char *token = engine_token_open(ex->keys, context, sealed, n);
    free(context);
    free(sealed);
    return token;
}

static void token_entry_clear(token_entry *t)
{
    free(t->account);
    free(t->access);
    free(t->refresh);
    t->account = t->access = t->refresh = NULL;
}

/* A call refreshes its connection's token first when the token has less than a minute left, or
 * less than half the time it had left when this worker first saw it if that is shorter (but
 * never less than 5 s: a call may outlive a token closer to its end). A platform issuing tokens
 * that live under two minutes would otherwise have every call refresh, each refresh holding the
 * connection's row lock and the executor's loop. */
#define TOKEN_REFRESH_LEAD_MS 60000
#define TOKEN_REFRESH_MIN_LEAD_MS 5000

static void token_set_expiry(token_entry *t, int64_t expires_ms)
{
    if (expires_ms == t->expires_ms)
        return; /* the same token, seen again: its lead stays */
    int64_t half = (expires_ms - hf_wall_ms()) / 2;
    t->expires_ms = expires_ms;
    t->lead_ms = half < TOKEN_REFRESH_MIN_LEAD_MS ? TOKEN_REFRESH_MIN_LEAD_MS
                 : half > TOKEN_REFRESH_LEAD_MS   ? TOKEN_REFRESH_LEAD_MS
                                                  : half;
}

/* Fills t from a row (id, account, access_enc, refresh_enc, expires epoch ms, version). */
static void token_from_row(engine_executor *ex, token_entry *t, const char *connector,
                           PGresult *res, int row)
{
    token_entry_clear(t);
    snprintf(t->conn_id, sizeof t->conn_id, "%s", PQgetvalue(res, row, 0));
    t->account = xstrdup(PQgetvalue(res, row, 1));
    t->access = open_token(ex, connector, t->account, "access",
                           PQgetisnull(res, row, 2) ? NULL : PQgetvalue(res, row, 2));
    t->refresh = open_token(ex, connector, t->account, "refresh",
                            PQgetisnull(res, row, 3) ? NULL : PQgetvalue(res, row, 3));
    long long v = 0;
    token_set_expiry(t,
                     PQgetisnull(res, row, 4) || !hf_parse_ll(PQgetvalue(res, row, 4), &v) ? 0 : v);
    t->version = hf_parse_ll(PQgetvalue(res, row, 5), &v) ? (int)v : 0;
    t->loaded_ms = hf_now_ms();
    t->stale = false;
}

#define TOKEN_COLUMNS                                                                              \
    "id, account, access_token_enc, refresh_token_enc, "                                           \
    "(extract(epoch from token_expires_at) * 1000)::bigint, token_version"

/* How long a connection's tokens are reused before the row is read again. A change to the row
 * is heard at once (forget_changed_connections); this bounds the time a change could go unheard
 * (a notification lost with the database connection). */
#define TOKEN_CACHE_MS 10000

/* The connections changed since the last look (migration 0004's trigger notifies
 * hookflow_connections with "<tenant id>/<connector>" on every change): their cached tokens are
 * read again before the next call, so a disabled or reconnected connection stops being used at
 * once. libpq keeps the notifications it met while reading any result; read_socket also takes
 * what has arrived since, without waiting (a syscall: once per tick, not per call). */
static void forget_changed_connections(engine_executor *ex, bool read_socket)
{
    if (!ex->db || (read_socket && !PQconsumeInput(ex->db)))
        return;
    PGnotify *n;
    while ((n = PQnotifies(ex->db)) != NULL) {
        for (token_entry *t = ex->tokens; t; t = t->next)
            if (strcmp(t->key, n->extra) == 0)
                t->stale = true;
        PQfreemem(n);
    }
}

/* The tenant's active connection to connector, cached for TOKEN_CACHE_MS. NULL + err if none. */
static token_entry *token_get(engine_executor *ex, const char *tenant_id, const char *connector,
                              char *err, size_t errlen)
{
    char key[96];
    snprintf(key, sizeof key, "%s/%s", tenant_id, connector);
    token_entry *t;
    for (t = ex->tokens; t; t = t->next)
        if (strcmp(t->key, key) == 0)
            break;
    forget_changed_connections(ex, false);
    if (t && !t->stale && hf_now_ms() - t->loaded_ms < TOKEN_CACHE_MS)
        return t;
    const char *params[] = {tenant_id, connector};
    PGresult *res = NULL;
    if (hf_pg_exec(ex->db,
                   "SELECT " TOKEN_COLUMNS " FROM connections "
                   "WHERE tenant_id = $1 AND connector = $2 AND status = 'active' "
                   "ORDER BY created_at LIMIT 1",
                   2, params, &res, err, errlen) != HF_PG_OK) {
        PQclear(res);
        return NULL;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        hf_err(err, errlen, "the tenant has no active %s connection", connector);
        return NULL;
    }
    if (!t) {
        t = xcalloc(1, sizeof *t);
        snprintf(t->key, sizeof t->key, "%s", key);
        t->next = ex->tokens;
        ex->tokens = t;
    }
    token_from_row(ex, t, connector, res, 0);
    PQclear(res);
    return t;
}

static char *secret_text(const hf_secrets *s, const char *connector, const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", connector, name);
    const char *vals[2];
    size_t lens[2];
    return hf_secrets_get(s, path, vals, lens) > 0 ? xstrndup(vals[0], lens[0]) : NULL;
}

/* The error of an attempt a stopping worker cut off (recover() does not charge it as a retry). */
#define STOP_CANCELLED "cancelled: the worker stopped"

/* token_refresh's failures the caller acts on: the refresh may work later (the platform or the
 * database was unavailable), or the platform refused it (invalid_grant: reconnect). Other
 * failures (no refresh token, no client credentials, the connection gone) are -1. */
#define REFRESH_TRANSIENT (-2)
#define REFRESH_REFUSED (-3)
/* Not refreshed here: another refresh had stored newer tokens since, and those were taken. */
#define REFRESH_TOOK_NEWER 1

/* Refreshes the connection's tokens, once per connection at a time across every worker: the
 * row lock serialises refreshers, and a token_version other than seen_version (the version the
 * caller's refused call was built with) means another refresh, here or elsewhere, already
 * happened since: its tokens are taken instead. The rotated refresh token is stored in the same
 * transaction as the new access token. */
static int token_refresh(engine_executor *ex, token_entry *t, const char *connector,
                         int seen_version, char *err, size_t errlen)
{
    PGresult *res = NULL;
    char *client_id = NULL, *client_secret = NULL, *access = NULL, *refresh = NULL, *scope = NULL;
    connector_request req = {0};
    hf_buf body = {0};
    int rc = REFRESH_TRANSIENT; /* until the database has answered */
    if (hf_pg_begin(ex->db, err, errlen) != HF_PG_OK)
        return REFRESH_TRANSIENT;
    const char *p1[] = {t->conn_id};
    if (hf_pg_exec(ex->db, "SELECT " TOKEN_COLUMNS " FROM connections WHERE id = $1 FOR UPDATE", 1,
                   p1, &res, err, errlen) != HF_PG_OK)
        goto done;
    rc = -1;
    if (PQntuples(res) != 1) {
        hf_err(err, errlen, "the %s connection is gone", connector);
        goto done;
    }
    long long version = 0;
    (void)hf_parse_ll(PQgetvalue(res, 0, 5), &version);
    if ((int)version != seen_version) {
        /* Refreshed meanwhile (by another call or another worker): take those tokens. */
        token_from_row(ex, t, connector, res, 0);
        rc = hf_pg_commit(ex->db, err, errlen) == HF_PG_OK ? REFRESH_TOOK_NEWER : -1;
        goto done;
    }
    if (!t->refresh) {
        hf_err(err, errlen, "the %s connection has no refresh token; reconnect it", connector);
        goto done;
    }
    client_id = secret_text(ex->secrets, connector, "client_id");
    client_secret = secret_text(ex->secrets, connector, "client_secret");
    if (!client_id || !client_secret) {
        hf_err(err, errlen, "%s/client_id or %s/client_secret is not configured", connector,
               connector);
        goto done;
    }
    if (engine_oauth_refresh_request(connector, client_id, client_secret, t->refresh, &req, err,
                                     errlen) != 0)
        goto done;
    char herr[256] = "";
    long status = connector_perform(&req, 15000, &body, herr, sizeof herr);
    if (status < 200 || status > 299) {
        bool later = status == 0 || status == 408 || status == 429 || status >= 500;
        if (!later) { /* the platform's own reason: invalid_grant, invalid_client, ... */
            char *a = NULL, *r2 = NULL, *sc = NULL;
            int64_t e = 0;
            if (engine_oauth_parse_token(body.data ? body.data : "", body.len, &a, &r2, &e, &sc,
                                         herr, sizeof herr) == 0)
                snprintf(herr, sizeof herr, "a token with HTTP %ld", status);
            free(a);
            free(r2);
            free(sc);
        }
        if (status && later)
            snprintf(herr, sizeof herr, "the token endpoint answered HTTP %ld", status);
        hf_err(err, errlen, "token refresh at %s failed: %s", connector, herr);
        if (status)
            hf_log_kv(HF_LOG_WARN, "token.refresh_refused", "connector", connector, NULL);
        rc = later ? REFRESH_TRANSIENT : REFRESH_REFUSED;
        goto done;
    }
    int64_t expires_in = 3600;
    if (engine_oauth_parse_token(body.data ? body.data : "", body.len, &access, &refresh,
                                 &expires_in, &scope, err, errlen) != 0)
        goto done;
    const char *new_refresh = refresh ? refresh : t->refresh;
    char *actx = engine_token_context(connector, t->account, "access");
    char *rctx = engine_token_context(connector, t->account, "refresh");
    size_t alen, rlen;
    unsigned char *aseal = engine_token_seal(ex->keys, actx, access, &alen);
    unsigned char *rseal = engine_token_seal(ex->keys, rctx, new_refresh, &rlen);
    char *ahex = hf_pg_bytea_text(aseal, alen), *rhex = hf_pg_bytea_text(rseal, rlen);
    char secs[32], rsecs[32];
    snprintf(secs, sizeof secs, "%lld", (long long)expires_in);
    /* The refresh token's own expiry when the platform says (QuickBooks: 100 days from now,
     * rolling); a new refresh token it says nothing of has an unknown one; else it stays. */
    int64_t rexp = engine_oauth_refresh_expires_in(body.data ? body.data : "", body.len);
    snprintf(rsecs, sizeof rsecs, "%lld", (long long)rexp);
    const char *p2[] = {t->conn_id,         ahex, rhex, secs, rexp >= 0 ? rsecs : NULL,
                        refresh ? "t" : "f"};
    PGresult *updated = NULL;
    int urc = hf_pg_exec(ex->db,
                         "UPDATE connections SET access_token_enc = $2::bytea, "
                         "refresh_token_enc = $3::bytea, "
                         "token_expires_at = now() + make_interval(secs => $4::double precision), "
                         "refresh_token_expires_at = CASE "
                         "  WHEN $5::double precision IS NOT NULL "
                         "    THEN now() + make_interval(secs => $5::double precision) "
                         "  WHEN $6::boolean THEN NULL ELSE refresh_token_expires_at END, "
                         "token_version = token_version + 1, updated_at = now() WHERE id = $1 "
                         /* the expiry as stored, which the next read of the row finds again */
                         "RETURNING (extract(epoch from token_expires_at) * 1000)::bigint",
                         6, p2, &updated, err, errlen);
    long long stored_expiry = 0;
    if (urc == HF_PG_OK &&
        (PQntuples(updated) != 1 || !hf_parse_ll(PQgetvalue(updated, 0, 0), &stored_expiry)))
        stored_expiry = hf_wall_ms() + expires_in * 1000;
    PQclear(updated);
    free(actx);
    free(rctx);
    free(aseal);
    free(rseal);
    free(ahex);
    free(rhex);
    if (urc != HF_PG_OK || hf_pg_commit(ex->db, err, errlen) != HF_PG_OK) {
        rc = REFRESH_TRANSIENT;
        goto done;
    }
    free(t->access);
    t->access = access;
    access = NULL;
    if (refresh) {
        free(t->refresh);
        t->refresh = refresh;
        refresh = NULL;
    }
    t->version++;
    token_set_expiry(t, stored_expiry);
    t->loaded_ms = hf_now_ms();
    char labels[64];
    snprintf(labels, sizeof labels, "connector=\"%s\"", connector);
    hf_counter_add(hf_metrics_counter(ex->metrics, "hookflow_engine_token_refreshes_total",
                                      "OAuth token refreshes performed", labels),
                   1);
    hf_log_kv(HF_LOG_INFO, "token.refreshed", "connector", connector, "connection", t->conn_id,
              NULL);
    rc = 0;
done:
    if (rc != 0)
        hf_pg_rollback(ex->db);
    PQclear(res);
    connector_request_free(&req);
    hf_buf_free(&body);
    free(client_id);
    free(client_secret);
    free(access);
    free(refresh);
    free(scope);
    return rc;
}

/* ---- walking the graph --------------------------------------------------------------------- */

static bool should_run(const run *r, size_t idx)
{
    const wf_node *n = &r->def->nodes[idx];
    if (n->nin == 0)
        return true;
    for (size_t e = 0; e < r->def->nedges; e++) {
        const wf_edge *edge = &r->def->edges[e];
        if (edge->to != idx)
            continue;
        const node_state *src = &r->nodes[edge->from];
        if (src->st == NS_DONE && (edge->when < 0 || edge->when == src->branch))
            return true;
    }
    return false;
}

static int64_t backoff_ms(const wf_retry *p, int attempt)
{
    double d = (double)p->initial_ms *
               pow(p->multiplier > 0 ? p->multiplier : 2.0, attempt > 1 ? attempt - 1 : 0);
    if (d > (double)p->max_ms)
        d = (double)p->max_ms;
    /* Jitter: somewhere between half and all of it, so retries of many runs spread out. */
    unsigned r;
    hf_random_bytes(&r, sizeof r);
    return (int64_t)(d * (0.5 + 0.5 * ((double)r / 4294967295.0)));
}

static void fail_node(run *r, size_t idx, int attempt, const char *input, const char *error)
{
    queue_row(r->ex, r, idx, attempt, "failed", input, NULL, error, NULL, 0, 0);
    char msg[512];
    snprintf(msg, sizeof msg, "node %s: %s", r->def->nodes[idx].id, error);
    finish(r, "failed", msg, 0);
}

/* Renders the params, finds the connection and builds the request; queues the call. */
static void prepare_call(run *r, size_t idx)
{
    engine_executor *ex = r->ex;
    const wf_node *n = &r->def->nodes[idx];
    node_state *s = &r->nodes[idx];
    int attempt = s->attempts + 1;
    char err[512];
    hf_buf input = {0};
    hf_json params = NULL;
    const engine_connector *conn = engine_connector_find(n->connector);
    hf_json ctx = run_context(r, err, sizeof err);
    if (!conn) {
        fail_node(r, idx, attempt, NULL, "unknown connector");
        goto done;
    }
    if (!ctx || wf_template_render(n->params, ctx, &input, err, sizeof err) != 0) {
        fail_node(r, idx, attempt, NULL, err);
        goto done;
    }
    params = hf_json_parse(input.data, input.len, err, sizeof err);
    if (!params) {
        fail_node(r, idx, attempt, input.data, err);
        goto done;
    }
    token_entry *t = token_get(ex, r->tenant_id, n->connector, err, sizeof err);
    if (!t) {
        fail_node(r, idx, attempt, input.data, err);
        goto done;
    }
    if (!t->access) {
        fail_node(r, idx, attempt, input.data,
                  ex->keys ? "the connection's token cannot be decrypted with the token key"
                           : "engine/token_key is not configured");
        goto done;
    }
    /* Refresh ahead of expiry rather than spend a call on a 401. */
    if (t->expires_ms && t->refresh && t->expires_ms - hf_wall_ms() < t->lead_ms &&
        hf_now_ms() >= t->refresh_not_before_ms) {
        char rerr[256];
        if (token_refresh(ex, t, n->connector, t->version, rerr, sizeof rerr) < 0) {
            t->refresh_not_before_ms = hf_now_ms() + TOKEN_REFRESH_RETRY_MS;
            hf_log_kv(HF_LOG_WARN, "token.refresh_failed", "connector", n->connector, "error", rerr,
                      NULL);
        }
    }
    connector_conn cc = {.account = t->account, .access_token = t->access};
    r->token_version = t->version;
    /* The same key on every attempt of this node of this run, across crashes and workers. */
    snprintf(r->idem_key, sizeof r->idem_key, "%s-%s", r->id, n->id);
    connector_request_free(&r->req);
    memset(&r->req, 0, sizeof r->req);
    if (conn->build(n->action, params, &cc, engine_connector_base_url(n->connector), r->idem_key,
                    &r->req, err, sizeof err) != 0) {
        fail_node(r, idx, attempt, input.data, err);
        goto done;
    }
    free(r->call_input);
    r->call_input = hf_buf_steal(&input);
    r->call_node = idx;
    r->call_attempt = attempt;
    r->in_call = true;
    s->attempts = attempt;
    VEC_PUSH(ex->to_call, r);
    schedule_soon(ex);
done:
    hf_json_free(ctx);
    hf_json_free(params);
    hf_buf_free(&input);
}

static void advance(run *r)
{
    engine_executor *ex = r->ex;
    char err[512];
    while (r->cursor < r->def->nnodes) {
        size_t idx = r->def->topo[r->cursor];
        const wf_node *n = &r->def->nodes[idx];
        node_state *s = &r->nodes[idx];
        if (s->st == NS_DONE || s->st == NS_SKIPPED) {
            r->cursor++;
            continue;
        }
        if (s->st == NS_PENDING && !should_run(r, idx)) {
            s->st = NS_SKIPPED;
            r->cursor++;
            continue;
        }
        switch (n->type) {
        case WF_CONDITION: {
            hf_json ctx = run_context(r, err, sizeof err);
            bool result = false;
            int rc = ctx ? wf_expr_eval_bool(n->condition, ctx, &result, err, sizeof err) : -1;
            hf_json_free(ctx);
            if (rc != 0) {
                fail_node(r, idx, s->attempts + 1, NULL, err);
                return;
            }
            s->st = NS_DONE;
            s->branch = result;
            s->output = xstrdup(result ? "{\"result\":true}" : "{\"result\":false}");
            queue_row(ex, r, idx, ++s->attempts, "succeeded", NULL, s->output, NULL, NULL, 0, 0);
            r->cursor++;
            break;
        }
        case WF_TRANSFORM: {
            hf_json ctx = run_context(r, err, sizeof err);
            hf_buf out = {0};
            int rc = ctx ? wf_template_render(n->output, ctx, &out, err, sizeof err) : -1;
            hf_json_free(ctx);
            if (rc != 0) {
                hf_buf_free(&out);
                fail_node(r, idx, s->attempts + 1, NULL, err);
                return;
            }
            s->st = NS_DONE;
            s->output = hf_buf_steal(&out);
            queue_row(ex, r, idx, ++s->attempts, "succeeded", NULL, s->output, NULL, NULL, 0, 0);
            r->cursor++;
            break;
        }
        case WF_DELAY: {
            int64_t now = hf_wall_ms();
            if (s->st == NS_WAITING) {
                if (now + 5 >= s->until_ms) {
                    s->st = NS_DONE;
                    char out[96];
                    char until[40];
                    hf_format_rfc3339(s->until_ms, until, sizeof until);
                    snprintf(out, sizeof out, "{\"until\":\"%s\"}", until);
                    s->output = xstrdup(out);
                    queue_row(ex, r, idx, ++s->attempts, "succeeded", NULL, s->output, NULL, NULL,
                              0, 0);
                    r->cursor++;
                    break;
                }
                finish(r, "waiting", NULL, s->until_ms);
                return;
            }
            int64_t until = now + n->delay_ms;
            if (n->until) {
                hf_json ctx = run_context(r, err, sizeof err);
                hf_buf out = {0};
                int rc = ctx ? wf_template_render(n->until, ctx, &out, err, sizeof err) : -1;
                hf_json_free(ctx);
                hf_json v = rc == 0 ? hf_json_parse(out.data, out.len, err, sizeof err) : NULL;
                int64_t when = 0;
                bool ok = v && hf_parse_rfc3339(hf_json_str(v), &when);
                hf_json_free(v);
                hf_buf_free(&out);
                if (!ok) {
                    fail_node(r, idx, s->attempts + 1, NULL,
                              rc != 0 ? err : "until is not an RFC 3339 time");
                    return;
                }
                until = when;
            }
            s->st = NS_WAITING;
            s->until_ms = until;
            finish(r, "waiting", NULL, until);
            return;
        }
        case WF_ACTION:
            prepare_call(r, idx);
            return;
        }
    }
    finish(r, "succeeded", NULL, 0);
}

/* ---- calls --------------------------------------------------------------------------------- */

static void observe_call(engine_executor *ex, const wf_node *n, int64_t ms)
{
    static const double bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    char labels[160];
    snprintf(labels, sizeof labels, "connector=\"%s\",action=\"%s\"", n->connector, n->action);
    hf_histogram_observe(hf_metrics_histogram(ex->metrics, "hookflow_engine_node_seconds",
                                              "Duration of connector calls", labels, bounds,
                                              HF_ARRAY_LEN(bounds)),
                         (double)ms / 1000.0);
}

static void on_call_done(void *arg, const hf_http_response *resp)
{
    run *r = arg;
    engine_executor *ex = r->ex;
    ex->ncalls--;
    atomic_store(&ex->gauge_calls, (int64_t)ex->ncalls);
    r->in_call = false;
    size_t idx = r->call_node;
    const wf_node *n = &r->def->nodes[idx];
    node_state *s = &r->nodes[idx];
    const engine_connector *conn = engine_connector_find(n->connector);
    bool safe = conn && engine_connector_repeat_safe(conn, n->action);
    char err[512] = "";
    hf_buf output = {0};
    call_outcome out;
    if (resp->error && ex->stopping && strcmp(resp->error, "cancelled") == 0 &&
        (!resp->maybe_sent || safe)) {
        /* Cancelled because this worker is stopping, not because the platform failed: the
         * attempt does not count against the node's retries. The run goes back to the queue
         * with the other held runs (release_all) and the next worker repeats the call, with the
         * same idempotency key, as after a crash. */
        queue_update(ex, r, r->attempt_id, "failed", NULL,
                     STOP_CANCELLED "; the next worker repeats the call", 0,
                     (int)resp->duration_ms);
        return;
    }
    if (resp->error) {
        snprintf(err, sizeof err, "%s", resp->error);
        if (!resp->maybe_sent || safe)
            out = OUT_RETRY; /* never reached the platform, or safe to repeat */
        else
            out = OUT_UNKNOWN;
    } else {
        connector_outcome o = conn->interpret(n->action, &r->req, resp->status, resp->body,
                                              resp->body_len, &output, err, sizeof err);
        out = o == CONNECTOR_OK      ? OUT_OK
              : o == CONNECTOR_RETRY ? OUT_RETRY
              : o == CONNECTOR_AUTH  ? OUT_AUTH
                                     : OUT_FAIL;
        /* A 500, 502 or 504 can come after the platform acted (a gateway timing out on a
         * message it passed on): sending it again could send a second SMS. Only 503 (and 429)
         * say the request was turned away. */
        if (out == OUT_RETRY && !safe && resp->status >= 500 && resp->status != 503)
            out = OUT_UNKNOWN;
    }
    observe_call(ex, n, resp->duration_ms);
    int http = (int)resp->status, dur = (int)resp->duration_ms;
    switch (out) {
    case OUT_OK:
        /* the next call, maybe to another connection, may refresh too */
        r->auth_retried = r->auth_took = false;
        queue_update(ex, r, r->attempt_id, "succeeded", output.data ? output.data : "{}", NULL,
                     http, dur);
        s->st = NS_DONE;
        s->output = output.data ? hf_buf_steal(&output) : xstrdup("{}");
        r->cursor++;
        advance(r);
        break;
    case OUT_AUTH: {
        int frc = -1;
        char rerr[256] = "";
        if (!r->auth_retried) {
            r->auth_retried = true;
            token_entry *t = token_get(ex, r->tenant_id, n->connector, rerr, sizeof rerr);
            frc = t ? token_refresh(ex, t, n->connector, r->token_version, rerr, sizeof rerr) : -1;
            /* Tokens another refresh stored earlier were not issued for this call and may have
             * died since (revoked, expired): a 401 with them gets a refresh of its own, once. */
            if (frc == REFRESH_TOOK_NEWER && !r->auth_took)
                r->auth_retried = false;
            r->auth_took = r->auth_took || frc == REFRESH_TOOK_NEWER;
        }
        if (frc == 0 || frc == REFRESH_TOOK_NEWER) {
            queue_update(ex, r, r->attempt_id, "failed", NULL, err, http, dur);
            prepare_call(r, idx);
            break;
        }
        if (frc != REFRESH_TRANSIENT) {
            queue_update(ex, r, r->attempt_id, "failed", NULL, err, http, dur);
            char msg[640];
            snprintf(msg, sizeof msg, "the platform rejected the connection's credentials%s%s",
                     frc == REFRESH_REFUSED ? " and refused to renew them (reconnect it): " : "",
                     frc == REFRESH_REFUSED ? rerr : "");
            finish(r, "failed", msg, 0);
            break;
        }
        /* The refresh could not be made now (the platform's token endpoint or the database is
         * unavailable): not a verdict on the credentials. The attempt is retried like any
         * transient failure, and its retry may refresh again. */
        r->auth_retried = r->auth_took = false;
        char why[sizeof err];
        snprintf(why, sizeof why, "%.250s; %.250s", err, rerr);
        snprintf(err, sizeof err, "%s", why);
    }
        /* fall through */
    case OUT_RETRY: {
        queue_update(ex, r, r->attempt_id, "failed", NULL, err, http, dur);
        char labels[64];
        snprintf(labels, sizeof labels, "connector=\"%s\"", n->connector);
        hf_counter_add(hf_metrics_counter(ex->metrics, "hookflow_engine_node_retries_total",
                                          "Connector calls that will be retried", labels),
                       1);
        int charged = s->attempts - s->uncharged; /* calls a stop cut off do not count */
        if (charged >= n->retry.max_attempts) {
            char msg[640];
            snprintf(msg, sizeof msg, "node %s: gave up after %d attempts: %s", n->id, charged,
                     err);
            finish(r, "failed", msg, 0);
            break;
        }
        int64_t wait = backoff_ms(&n->retry, charged);
        int64_t asked =
            resp->retry_after ? hf_http_retry_after_ms(resp->retry_after, hf_wall_ms()) : -1;
        if (asked > wait)
            wait = asked > 3600000 ? 3600000 : asked; /* the platform knows best (429) */
        finish(r, "waiting", NULL, hf_wall_ms() + wait);
        break;
    }
    case OUT_FAIL: {
        queue_update(ex, r, r->attempt_id, "failed", NULL, err, http, dur);
        char msg[640];
        snprintf(msg, sizeof msg, "node %s: %s", n->id, err);
        finish(r, "failed", msg, 0);
        break;
    }
    case OUT_UNKNOWN: {
        queue_update(ex, r, r->attempt_id, "outcome_unknown", NULL, err, http, dur);
        char msg[640];
        snprintf(msg, sizeof msg,
                 "node %s: the call's outcome is unknown (%s) and %s has no idempotency key; "
                 "check the platform before retrying the run",
                 n->id, err, n->connector);
        finish(r, "failed", msg, 0);
        break;
    }
    }
    hf_buf_free(&output);
    schedule_soon(ex);
}

/* Records a 'running' attempt for the prepared calls in to_call[from, to) (so a crash mid-call
 * is visible and the next worker knows the idempotency key), commits, then sends them. On failure
 * nothing changes and *data_refused says whether PostgreSQL refused the values themselves. */
static int start_range(engine_executor *ex, size_t from, size_t to, bool *data_refused, char *err,
                       size_t errlen)
{
    hf_pg_array runs = {0}, nodes = {0}, attempts = {0}, inputs = {0}, keys = {0};
    for (size_t i = from; i < to; i++) {
        run *r = ex->to_call.v[i];
        if (!r)
            continue;
        const engine_connector *conn = engine_connector_find(connector_of(r, r->call_node));
        hf_pg_array_add(&runs, r->id);
        hf_pg_array_add(&nodes, r->def->nodes[r->call_node].id);
        hf_pg_array_add_int(&attempts, r->call_attempt);
        hf_pg_array_add(&inputs, r->call_input);
        hf_pg_array_add(&keys, conn && strcmp(conn->idempotency, "none") != 0 ? r->idem_key : NULL);
    }
    if (runs.n == 0)
        return HF_PG_OK;
    const char *params[] = {hf_pg_array_text(&runs),     hf_pg_array_text(&nodes),
                            hf_pg_array_text(&attempts), hf_pg_array_text(&inputs),
                            hf_pg_array_text(&keys),     ex->worker_id};
    PGresult *res = NULL;
    /* Only for runs this worker still leases: one whose lease ran out while a call was open
     * (the worker could not renew it) may be another worker's now, and its next call is that
     * worker's to make. */
    int rc = hf_pg_exec(ex->db,
                        "INSERT INTO node_attempts (run_id, node_id, attempt, status, input, "
                        "idempotency_key, generation) "
                        "SELECT u.run_id, u.node_id, u.attempt, 'running', u.input::jsonb, u.key, "
                        "  l.generation "
                        "FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[]) "
                        "  WITH ORDINALITY AS u(run_id, node_id, attempt, input, key, ord) "
                        "JOIN runs l ON l.id = u.run_id AND l.lease_owner = $6 "
                        "  AND l.status = 'running' "
                        "ORDER BY u.ord ON CONFLICT (run_id, node_id, attempt) DO NOTHING "
                        "RETURNING id, run_id, node_id",
                        6, params, &res, err, errlen);
    hf_pg_array_free(&runs);
    hf_pg_array_free(&nodes);
    hf_pg_array_free(&attempts);
    hf_pg_array_free(&inputs);
    hf_pg_array_free(&keys);
    if (rc != HF_PG_OK) {
        *data_refused = rc == HF_PG_ERR_SQL && hf_pg_refuses_data(hf_pg_sqlstate(res));
        PQclear(res);
        return rc;
    }
    for (int row = 0; row < PQntuples(res); row++) {
        const char *run_id = PQgetvalue(res, row, 1), *node_id = PQgetvalue(res, row, 2);
        for (size_t i = from; i < to; i++) {
            run *r = ex->to_call.v[i];
            if (r && strcmp(r->id, run_id) == 0 &&
                strcmp(r->def->nodes[r->call_node].id, node_id) == 0) {
                (void)hf_parse_ll(PQgetvalue(res, row, 0), &r->attempt_id);
                const wf_node *n = &r->def->nodes[r->call_node];
                hf_http_request hr = {
                    .method = r->req.method,
                    .url = r->req.url,
                    .headers = (const char *const *)r->req.headers,
                    .body = r->req.body,
                    .body_len = r->req.body_len,
                    .timeout_ms = n->timeout_ms,
                    .basic_user = r->req.basic_user,
                    .basic_password = r->req.basic_password,
                };
                ex->ncalls++;
                atomic_store(&ex->gauge_calls, (int64_t)ex->ncalls);
                ex->to_call.v[i] = NULL;
                hf_http_client_send(ex->http, &hr, on_call_done, r);
                break;
            }
        }
    }
    PQclear(res);
    /* A call not recorded belongs to a run another worker took over after this one's lease ran
     * out (or whose attempt row it already wrote): let it go. If the lease is still this
     * worker's after all, give it back, or renew() would keep a run nobody works on. */
    for (size_t i = from; i < to; i++) {
        run *r = ex->to_call.v[i];
        if (!r)
            continue;
        const char *p2[] = {r->id, ex->worker_id};
        char rerr[256];
        if (hf_pg_exec(ex->db,
                       "UPDATE runs SET status = 'waiting', next_run_at = now(), lease_owner = "
                       "NULL, lease_expires_at = NULL WHERE id = $1 AND lease_owner = $2 "
                       "AND status = 'running'",
                       2, p2, NULL, rerr, sizeof rerr) != HF_PG_OK)
            hf_log_kv(HF_LOG_WARN, "executor.release_failed", "error", rerr, NULL);
        hf_log_kv(HF_LOG_WARN, "executor.run_lost", "run", r->id, "msg",
                  "another worker holds this run now", NULL);
        ex->to_call.v[i] = NULL;
        unhold(ex, r);
        run_free(r);
    }
    return HF_PG_OK;
}

static void start_calls(engine_executor *ex)
{
    if (ex->to_call.n == 0)
        return;
    char err[512];
    bool data_refused = false;
    int rc = start_range(ex, 0, ex->to_call.n, &data_refused, err, sizeof err);
    if (rc != HF_PG_OK && data_refused) {
        /* One call whose input PostgreSQL refuses must not hold back the others, nor be retried
         * forever: each on its own, and the refused ones fail their run without being made. */
        hf_log_kv(HF_LOG_WARN, "executor.write_refused", "error", err, "msg",
                  "recording the calls one by one", NULL);
        rc = HF_PG_OK;
        for (size_t i = 0; rc == HF_PG_OK && i < ex->to_call.n; i++) {
            run *r = ex->to_call.v[i];
            if (!r)
                continue;
            rc = start_range(ex, i, i + 1, &data_refused, err, sizeof err);
            if (rc != HF_PG_OK && data_refused) {
                ex->to_call.v[i] = NULL;
                r->in_call = false;
                char note[640];
                snprintf(note, sizeof note,
                         "PostgreSQL refused to record this call's input, so it was not made: %s",
                         err);
                fail_node(r, r->call_node, r->call_attempt, NULL, note);
                rc = HF_PG_OK;
            }
        }
    }
    if (rc != HF_PG_OK) {
        atomic_store(&ex->db_ok, !hf_pg_connection_lost(ex->db));
        hf_log_kv(HF_LOG_WARN, "executor.start_calls_failed", "error", err, NULL);
        schedule_tick(ex, 200); /* what is left is tried again */
    }
    size_t kept = 0;
    for (size_t i = 0; i < ex->to_call.n; i++)
        if (ex->to_call.v[i])
            ex->to_call.v[kept++] = ex->to_call.v[i];
    ex->to_call.n = kept;
}

/* ---- claiming ------------------------------------------------------------------------------ */

/* Rebuilds node states from the run's recorded attempts and context; deals with a call a lost
 * worker left 'running'. Returns false when the run ended here. */
static bool recover(run *r, const char *attempts_json, const char *context_json)
{
    engine_executor *ex = r->ex;
    char err[256];
    hf_json attempts = hf_json_parse(attempts_json, strlen(attempts_json), err, sizeof err);
    hf_json context = hf_json_parse(context_json, strlen(context_json), err, sizeof err);
    bool alive = true;
    for (size_t i = 0; i < hf_json_len(attempts); i++) {
        hf_json a = hf_json_at(attempts, i);
        const char *node_id = hf_json_str(hf_json_get(a, "node"));
        const char *status = hf_json_str(hf_json_get(a, "status"));
        long long attempt = 0, id = 0;
        (void)hf_json_int(hf_json_get(a, "attempt"), &attempt);
        (void)hf_json_int(hf_json_get(a, "id"), &id);
        ssize_t idx = node_id ? wf_node_index(r->def, node_id) : -1;
        if (idx < 0 || !status)
            continue;
        node_state *s = &r->nodes[idx];
        if (attempt > s->attempts)
            s->attempts = (int)attempt;
        if (YAJL_IS_TRUE(hf_json_get(a, "stop_cancelled")))
            s->uncharged++;
        if (strcmp(status, "succeeded") == 0) {
            s->st = NS_DONE;
            free(s->output);
            hf_buf out = {0};
            hf_json_serialize(hf_json_get(a, "output"), &out);
            s->output = hf_buf_steal(&out);
            hf_json res = hf_json_get(hf_json_get(a, "output"), "result");
            if (r->def->nodes[idx].type == WF_CONDITION)
                s->branch = YAJL_IS_TRUE(res);
        } else if (strcmp(status, "running") == 0 && alive) {
            const engine_connector *conn = engine_connector_find(r->def->nodes[idx].connector);
            if (conn && engine_connector_repeat_safe(conn, r->def->nodes[idx].action)) {
                queue_update(ex, r, id, "failed", NULL,
                             strcmp(conn->idempotency, "none") != 0
                                 ? "the worker was lost during this call; retried with the same "
                                   "idempotency key"
                                 : "the worker was lost during this call; repeated (the "
                                   "platform does not act twice on it)",
                             0, 0);
            } else {
                queue_update(ex, r, id, "outcome_unknown", NULL,
                             "the worker was lost during this call; whether the platform acted "
                             "is unknown",
                             0, 0);
                char msg[512];
                snprintf(msg, sizeof msg,
                         "node %s: the call's outcome is unknown after a worker was lost and "
                         "%s has no idempotency key; check the platform before retrying the run",
                         node_id, r->def->nodes[idx].connector);
                finish(r, "failed", msg, 0);
                alive = false;
            }
        }
    }
    /* A pending delay. */
    hf_json nodes = hf_json_get(context, "nodes");
    for (size_t i = 0; i < hf_json_len(nodes); i++) {
        const char *node_id;
        hf_json v = hf_json_member(nodes, i, &node_id);
        long long until = 0;
        ssize_t idx = wf_node_index(r->def, node_id);
        if (idx >= 0 && r->nodes[idx].st == NS_PENDING &&
            hf_json_int(hf_json_get(v, "until_ms"), &until)) {
            r->nodes[idx].st = NS_WAITING;
            r->nodes[idx].until_ms = until;
        }
    }
    hf_json_free(attempts);
    hf_json_free(context);
    return alive;
}

/* Starts holding a claimed run: trigger and tenant_json are taken over. */
static void adopt_run(engine_executor *ex, const char *id, const char *tenant_id,
                      const char *workflow_id, int version, char *trigger, char *tenant_json,
                      const char *context, const char *attempts)
{
    run *r = xcalloc(1, sizeof *r);
    r->ex = ex;
    snprintf(r->id, sizeof r->id, "%s", id);
    snprintf(r->tenant_id, sizeof r->tenant_id, "%s", tenant_id);
    snprintf(r->workflow_id, sizeof r->workflow_id, "%s", workflow_id);
    r->version = version;
    r->trigger = trigger;
    r->tenant_json = tenant_json;
    r->next_held = ex->held;
    ex->held = r;
    ex->nheld++;
    atomic_store(&ex->gauge_held, (int64_t)ex->nheld);
    char derr[512];
    r->def = engine_defs_get(ex->defs, ex->db, r->workflow_id, r->version, NULL, derr, sizeof derr);
    if (!r->def) {
        /* Nothing to walk: fail it with the reason, keeping the outputs recorded so far (a
         * NULL context keeps the stored one). */
        run_update u = {0};
        snprintf(u.run_id, sizeof u.run_id, "%s", r->id);
        u.status = xstrdup("failed");
        u.error = xstrdup(derr);
        VEC_PUSH(ex->run_updates, u);
        r->finished = true;
        VEC_PUSH(ex->done_runs, r);
        return;
    }
    r->nodes = xcalloc(r->def->nnodes ? r->def->nnodes : 1, sizeof *r->nodes);
    for (size_t i = 0; i < r->def->nnodes; i++)
        r->nodes[i].branch = -1;
    if (recover(r, attempts, context))
        advance(r);
}

/* Runs intake handed over since the last tick. */
static void adopt_inbox(engine_executor *ex)
{
    if (atomic_load(&ex->inbox_len) == 0)
        return;
    pthread_mutex_lock(&ex->inbox_lock);
    engine_handoff *runs = ex->inbox.v;
    size_t n = ex->inbox.n;
    ex->inbox.v = NULL;
    ex->inbox.n = ex->inbox.cap = 0;
    atomic_store(&ex->inbox_len, 0);
    pthread_mutex_unlock(&ex->inbox_lock);
    for (size_t i = 0; i < n; i++)
        adopt_run(ex, runs[i].id, runs[i].tenant_id, runs[i].workflow_id, runs[i].version,
                  runs[i].trigger, runs[i].tenant_json, "{}", "[]");
    free(runs);
    hf_counter_add(ex->claimed, n);
}

static void claim(engine_executor *ex)
{
    if (ex->stopping)
        return;
    long long room = ex->cfg->concurrency - (long long)ex->nheld;
    if (room <= 0) {
        atomic_store(&ex->want_claim, true); /* again once runs finish */
        return;
    }
    if (room > ex->cfg->claim_batch)
        room = ex->cfg->claim_batch;
    char limit[24], lease[24];
    snprintf(limit, sizeof limit, "%lld", room);
    snprintf(lease, sizeof lease, "%lld", ex->cfg->lease_ms);
    const char *params[] = {ex->worker_id, limit, lease};
    PGresult *res = NULL;
    char err[512];
    int rc = hf_pg_exec(
        ex->db,
        /* The ids are picked (and locked) first, then updated by primary key: an UPDATE
         * joined to a CTE lets the planner scan every run against it. */
        "UPDATE runs r SET status = 'running', lease_owner = $1,"
        "  lease_expires_at = now() + make_interval(secs => $3::double precision / 1000),"
        /* clock_timestamp: after the statement's snapshot, so after the start of any earlier
         * run of the key that this claim found no longer pending. */
        "  started_at = coalesce(r.started_at, clock_timestamp()), attempt = r.attempt + 1 "
        "WHERE r.id = ANY(ARRAY("
        "  SELECT q.id FROM runs q"
        "  WHERE q.status IN ('pending', 'waiting') AND q.next_run_at <= now()"
        "    AND NOT EXISTS (SELECT 1 FROM runs p WHERE p.ordering_key = q.ordering_key"
        "                    AND p.ordering_seq < q.ordering_seq AND p.status = 'pending')"
        /* next_run_at alone, so the runnable index is walked in order and LIMIT stops the
         * walk early (event order within an ordering key is kept by NOT EXISTS). */
        "  ORDER BY q.next_run_at"
        "  LIMIT $2::int FOR UPDATE OF q SKIP LOCKED)) "
        "RETURNING r.id, r.tenant_id, r.workflow_id, r.workflow_version, r.trigger::text,"
        "  (SELECT json_build_object('id', t.id, 'slug', t.slug, 'name', t.name,"
        "                    'environment', t.environment)::text FROM tenants t"
        "   WHERE t.id = r.tenant_id),"
        "  r.context::text,"
        /* A run claimed for the first time has no attempts yet: skip the lookup. */
        "  CASE WHEN r.attempt = 1 THEN '[]' ELSE"
        "  (SELECT coalesce(json_agg(json_build_object('id', a.id, 'node', a.node_id,"
        "     'attempt', a.attempt, 'status', a.status, 'output', a.output, 'stop_cancelled', "
        "     a.status = 'failed' AND starts_with(coalesce(a.error, ''), '" STOP_CANCELLED "')) "
        "     ORDER BY a.id),"
        "     '[]') FROM node_attempts a WHERE a.run_id = r.id)::text END",
        3, params, &res, err, sizeof err);
    if (rc != HF_PG_OK) {
        PQclear(res);
        atomic_store(&ex->db_ok, !hf_pg_connection_lost(ex->db));
        hf_log_kv(HF_LOG_WARN, "executor.claim_failed", "error", err, NULL);
        return;
    }
    atomic_store(&ex->db_ok, true);
    int n = PQntuples(res);
    hf_counter_add(ex->claimed, (uint64_t)n);
    for (int row = 0; row < n; row++) {
        long long version = 0;
        (void)hf_parse_ll(PQgetvalue(res, row, 3), &version);
        adopt_run(ex, PQgetvalue(res, row, 0), PQgetvalue(res, row, 1), PQgetvalue(res, row, 2),
                  (int)version, xstrdup(PQgetvalue(res, row, 4)), xstrdup(PQgetvalue(res, row, 5)),
                  PQgetvalue(res, row, 6), PQgetvalue(res, row, 7));
    }
    atomic_store(&ex->gauge_held, (int64_t)ex->nheld);
    PQclear(res);
    /* There may be more: a full batch, or runs that waited for an earlier run of their ordering
     * key, which became claimable only now that the earlier one started. */
    if (n > 0) {
        atomic_store(&ex->want_claim, true);
        schedule_tick(ex, 0);
    }
}

/* ---- writing ------------------------------------------------------------------------------- */

static void free_row(attempt_row *w)
{
    free(w->node_id);
    free(w->status);
    free(w->input);
    free(w->output);
    free(w->error);
    free(w->key);
}

static void free_update(attempt_update *u)
{
    free(u->status);
    free(u->output);
    free(u->error);
}

static void free_run_update(run_update *u)
{
    free(u->status);
    free(u->context);
    free(u->error);
}

static void free_writes(engine_executor *ex)
{
    for (size_t i = 0; i < ex->rows.n; i++)
        free_row(&ex->rows.v[i]);
    ex->rows.n = 0;
    for (size_t i = 0; i < ex->updates.n; i++)
        free_update(&ex->updates.v[i]);
    ex->updates.n = 0;
    for (size_t i = 0; i < ex->run_updates.n; i++)
        free_run_update(&ex->run_updates.v[i]);
    ex->run_updates.n = 0;
    for (size_t i = 0; i < ex->refused.n; i++)
        free(ex->refused.v[i].note);
    ex->refused.n = 0;
}

/* Removes (and frees with free_fn) the items of vec that belong to run_id, keeping the order. */
#define VEC_DROP_RUN(vec, run_id, free_fn)                                                         \
    do {                                                                                           \
        size_t kept_ = 0;                                                                          \
        for (size_t i_ = 0; i_ < (vec).n; i_++) {                                                  \
            if (strcmp((vec).v[i_].run_id, (run_id)) == 0)                                         \
                free_fn(&(vec).v[i_]);                                                             \
            else                                                                                   \
                (vec).v[kept_++] = (vec).v[i_];                                                    \
        }                                                                                          \
        (vec).n = kept_;                                                                           \
    } while (0)

/* Forgets every queued write of one run. */
static void drop_writes(engine_executor *ex, const char *run_id)
{
    VEC_DROP_RUN(ex->rows, run_id, free_row);
    VEC_DROP_RUN(ex->updates, run_id, free_update);
    VEC_DROP_RUN(ex->run_updates, run_id, free_run_update);
}

/* The note a refused run's writes carry instead of their values, or NULL. */
static const char *refusal_of(const engine_executor *ex, const char *run_id)
{
    for (size_t i = 0; i < ex->refused.n; i++)
        if (strcmp(ex->refused.v[i].run_id, run_id) == 0)
            return ex->refused.v[i].note;
    return NULL;
}

static void add_int_or_null(hf_pg_array *a, long long v)
{
    if (v)
        hf_pg_array_add_int(a, v);
    else
        hf_pg_array_add(a, NULL);
}

static int exec_write(engine_executor *ex, const char *sql, int nparams, const char *const *params,
                      bool *data_refused, char *err, size_t errlen)
{
    PGresult *res = NULL;
    int rc = hf_pg_exec(ex->db, sql, nparams, params, &res, err, errlen);
    if (rc != HF_PG_OK)
        *data_refused = rc == HF_PG_ERR_SQL && hf_pg_refuses_data(hf_pg_sqlstate(res));
    PQclear(res);
    return rc;
}

static bool selected(const char *run_id, const char *only)
{
    return !only || strcmp(run_id, only) == 0;
}

/* The batched writes: arrays of one element per queued item, unnested. Each writes only for
 * runs this worker still leases: a worker that was paused past its lease (a zombie) and wakes
 * with a call's answer must not rewrite the attempts of a run another worker took over (the
 * attempt it left 'running' is that worker's to mark, see recover()). lock_runs comes first so
 * that no lease runs out between the statements of one transaction. */
static const char lock_runs[] = "SELECT 1 FROM runs WHERE id = ANY($1::uuid[]) AND lease_owner = "
                                "$2 ORDER BY id FOR UPDATE";
static const char insert_attempts[] =
    "INSERT INTO node_attempts (run_id, node_id, attempt, status, input, "
    "output, error, idempotency_key, http_status, duration_ms, "
    "finished_at, generation) "
    "SELECT u.r, u.n, u.a, u.s, u.i::jsonb, u.o::jsonb, u.e, u.k, u.h, u.d, "
    "now(), g.generation "
    "FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], "
    "$5::text[], $6::text[], $7::text[], $8::text[], $9::int[], "
    "$10::int[]) AS u(r, n, a, s, i, o, e, k, h, d) "
    "JOIN runs g ON g.id = u.r AND g.lease_owner = $11 "
    "ON CONFLICT (run_id, node_id, attempt) DO NOTHING";
static const char update_attempts[] =
    "UPDATE node_attempts a SET status = u.s, output = u.o::jsonb, "
    "error = u.e, http_status = u.h, duration_ms = u.d, "
    "finished_at = now() "
    "FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], "
    "$5::int[], $6::int[]) AS u(id, s, o, e, h, d), runs r "
    "WHERE a.id = u.id AND a.status = 'running' AND r.id = a.run_id "
    "AND r.lease_owner = $7";
static const char update_runs[] =
    "UPDATE runs r SET status = u.s, "
    "context = coalesce(u.c::jsonb, r.context), error = u.e, "
    "next_run_at = coalesce(to_timestamp(u.n / 1000.0), r.next_run_at), "
    "finished_at = CASE WHEN u.s IN ('succeeded', 'failed') THEN now() "
    "END, lease_owner = NULL, lease_expires_at = NULL "
    "FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], "
    "$5::bigint[]) AS u(id, s, c, e, n) "
    "WHERE r.id = u.id AND r.lease_owner = $6";

/* Writes the queued attempts, attempt updates and run updates (only run only's when it is not
 * NULL) in one transaction. A refused run's are written without their values (see refused_run).
 * On failure nothing is written and *data_refused says whether PostgreSQL refused the values. */
static int write_queued(engine_executor *ex, const char *only, bool *data_refused, char *err,
                        size_t errlen)
{
    *data_refused = false;
    int rc = hf_pg_begin(ex->db, err, errlen);
    if (rc == HF_PG_OK) {
        hf_pg_array held = {0};
        for (size_t i = 0; i < ex->rows.n; i++)
            if (selected(ex->rows.v[i].run_id, only))
                hf_pg_array_add(&held, ex->rows.v[i].run_id);
        for (size_t i = 0; i < ex->updates.n; i++)
            if (selected(ex->updates.v[i].run_id, only))
                hf_pg_array_add(&held, ex->updates.v[i].run_id);
        for (size_t i = 0; i < ex->run_updates.n; i++)
            if (selected(ex->run_updates.v[i].run_id, only))
                hf_pg_array_add(&held, ex->run_updates.v[i].run_id);
        const char *p[] = {hf_pg_array_text(&held), ex->worker_id};
        if (held.n)
            rc = exec_write(ex, lock_runs, 2, p, data_refused, err, errlen);
        hf_pg_array_free(&held);
    }
    if (rc == HF_PG_OK) {
        hf_pg_array a[10];
        memset(a, 0, sizeof a);
        for (size_t i = 0; i < ex->rows.n; i++) {
            attempt_row *w = &ex->rows.v[i];
            if (!selected(w->run_id, only))
                continue;
            const char *note = refusal_of(ex, w->run_id);
            hf_pg_array_add(&a[0], w->run_id);
            hf_pg_array_add(&a[1], w->node_id);
            hf_pg_array_add_int(&a[2], w->attempt);
            hf_pg_array_add(&a[3], w->status);
            hf_pg_array_add(&a[4], note ? NULL : w->input);
            hf_pg_array_add(&a[5], note ? NULL : w->output);
            hf_pg_array_add(&a[6], note ? note : w->error);
            hf_pg_array_add(&a[7], w->key);
            add_int_or_null(&a[8], w->http_status);
            hf_pg_array_add_int(&a[9], w->duration_ms);
        }
        const char *p[11];
        for (int k = 0; k < 10; k++)
            p[k] = hf_pg_array_text(&a[k]);
        p[10] = ex->worker_id;
        if (a[0].n)
            rc = exec_write(ex, insert_attempts, 11, p, data_refused, err, errlen);
        for (int k = 0; k < 10; k++)
            hf_pg_array_free(&a[k]);
    }
    if (rc == HF_PG_OK) {
        hf_pg_array a[6];
        memset(a, 0, sizeof a);
        for (size_t i = 0; i < ex->updates.n; i++) {
            attempt_update *u = &ex->updates.v[i];
            if (!selected(u->run_id, only))
                continue;
            const char *note = refusal_of(ex, u->run_id);
            hf_pg_array_add_int(&a[0], u->id);
            hf_pg_array_add(&a[1], u->status);
            hf_pg_array_add(&a[2], note ? NULL : u->output);
            hf_pg_array_add(&a[3], note ? note : u->error);
            add_int_or_null(&a[4], u->http_status);
            hf_pg_array_add_int(&a[5], u->duration_ms);
        }
        const char *p[7];
        for (int k = 0; k < 6; k++)
            p[k] = hf_pg_array_text(&a[k]);
        p[6] = ex->worker_id;
        if (a[0].n)
            rc = exec_write(ex, update_attempts, 7, p, data_refused, err, errlen);
        for (int k = 0; k < 6; k++)
            hf_pg_array_free(&a[k]);
    }
    if (rc == HF_PG_OK) {
        hf_pg_array a[5];
        memset(a, 0, sizeof a);
        for (size_t i = 0; i < ex->run_updates.n; i++) {
            run_update *u = &ex->run_updates.v[i];
            if (!selected(u->run_id, only))
                continue;
            const char *note = refusal_of(ex, u->run_id);
            hf_pg_array_add(&a[0], u->run_id);
            hf_pg_array_add(&a[1], note ? "failed" : u->status);
            hf_pg_array_add(&a[2], note ? NULL : u->context); /* NULL keeps the recorded one */
            hf_pg_array_add(&a[3], note ? note : u->error);
            add_int_or_null(&a[4], note ? 0 : u->next_run_ms);
        }
        const char *p[6];
        for (int k = 0; k < 5; k++)
            p[k] = hf_pg_array_text(&a[k]);
        p[5] = ex->worker_id;
        if (a[0].n)
            rc = exec_write(ex, update_runs, 6, p, data_refused, err, errlen);
        for (int k = 0; k < 5; k++)
            hf_pg_array_free(&a[k]);
    }
    if (rc == HF_PG_OK)
        rc = hf_pg_commit(ex->db, err, errlen);
    if (rc != HF_PG_OK)
        hf_pg_rollback(ex->db);
    return rc;
}

static run *held_run(engine_executor *ex, const char *run_id)
{
    for (run *r = ex->held; r; r = r->next_held)
        if (strcmp(r->id, run_id) == 0)
            return r;
    return NULL;
}

/* PostgreSQL refused run_id's values: from now on its writes go without them, and it fails. */
static void refuse_run(engine_executor *ex, const char *run_id, const char *why)
{
    refused_run rr = {.note = xasprintf("PostgreSQL refused to record this run's data: %s", why)};
    snprintf(rr.run_id, sizeof rr.run_id, "%s", run_id);
    VEC_PUSH(ex->refused, rr);
    hf_counter_add(ex->refused_runs, 1);
    run *r = held_run(ex, run_id);
    if (r && !r->finished) {
        /* Its next call was prepared but is not made. */
        for (size_t i = 0; i < ex->to_call.n; i++)
            if (ex->to_call.v[i] == r)
                ex->to_call.v[i] = NULL;
        r->in_call = false;
        finish(r, "failed", rr.note, 0);
    }
}

/* The batch was refused for its values: one run at a time, so the runs whose values PostgreSQL
 * refuses fail on their own (recorded without them) and every other run goes on. Retrying the
 * whole batch instead would fail forever and stall every run of this worker behind it. */
static int write_run_by_run(engine_executor *ex, char *err, size_t errlen)
{
    hf_log_kv(HF_LOG_WARN, "executor.write_refused", "error", err, "msg",
              "writing run by run to find the runs whose data PostgreSQL refuses", NULL);
    VEC(const char *) ids = {0};
    for (size_t i = 0; i < ex->rows.n; i++)
        VEC_PUSH(ids, ex->rows.v[i].run_id);
    for (size_t i = 0; i < ex->updates.n; i++)
        VEC_PUSH(ids, ex->updates.v[i].run_id);
    for (size_t i = 0; i < ex->run_updates.n; i++)
        VEC_PUSH(ids, ex->run_updates.v[i].run_id);
    /* Copies: writes of a run may be dropped below, and with them the strings. */
    char(*distinct)[40] = xcalloc(ids.n ? ids.n : 1, sizeof *distinct);
    size_t n = 0;
    for (size_t i = 0; i < ids.n; i++) {
        bool seen = false;
        for (size_t j = 0; j < n && !seen; j++)
            seen = strcmp(distinct[j], ids.v[i]) == 0;
        if (!seen)
            snprintf(distinct[n++], sizeof *distinct, "%s", ids.v[i]);
    }
    free(ids.v);
    int rc = HF_PG_OK;
    for (size_t i = 0; i < n && rc == HF_PG_OK; i++) {
        bool data_refused;
        rc = write_queued(ex, distinct[i], &data_refused, err, errlen);
        if (rc == HF_PG_OK || !data_refused)
            continue;
        hf_log_kv(HF_LOG_WARN, "run.data_refused", "run", distinct[i], "error", err, "msg",
                  "the run fails; its attempts are recorded without the refused values", NULL);
        if (!refusal_of(ex, distinct[i]))
            refuse_run(ex, distinct[i], err);
        rc = write_queued(ex, distinct[i], &data_refused, err, errlen);
        if (rc != HF_PG_OK && data_refused) {
            /* Refused even without its values (its run row is gone, say): nothing of it can be
             * written, and keeping it would stall the others. */
            hf_log_kv(HF_LOG_ERROR, "executor.writes_dropped", "run", distinct[i], "error", err,
                      NULL);
            drop_writes(ex, distinct[i]);
            rc = HF_PG_OK;
        }
    }
    free(distinct);
    return rc;
}

/* Everything queued since the last tick, in one transaction. */
static int flush(engine_executor *ex)
{
    if (ex->rows.n == 0 && ex->updates.n == 0 && ex->run_updates.n == 0)
        return 0;
    char err[512];
    bool data_refused;
    int rc = write_queued(ex, NULL, &data_refused, err, sizeof err);
    if (rc != HF_PG_OK && data_refused)
        rc = write_run_by_run(ex, err, sizeof err);
    if (rc != HF_PG_OK) {
        atomic_store(&ex->db_ok, !hf_pg_connection_lost(ex->db));
        hf_log_kv(HF_LOG_WARN, "executor.flush_failed", "error", err, "msg",
                  "kept in memory; retrying", NULL);
        return -1;
    }
    free_writes(ex);
    for (size_t i = 0; i < ex->done_runs.n; i++) {
        unhold(ex, ex->done_runs.v[i]);
        run_free(ex->done_runs.v[i]);
    }
    ex->done_runs.n = 0;
    return 0;
}

static bool ensure_db(engine_executor *ex)
{
    if (ex->db && !hf_pg_connection_lost(ex->db))
        return true;
    if (ex->db)
        PQfinish(ex->db);
    ex->db = NULL;
    char err[256];
    if (hf_pg_connect(ex->cfg->database_url, "hookflow-engine-executor", &ex->db, err,
                      sizeof err) != HF_PG_OK) {
        atomic_store(&ex->db_ok, false);
        hf_log_kv(HF_LOG_WARN, "executor.db_unavailable", "error", err, NULL);
        return false;
    }
    atomic_store(&ex->db_ok, true);
    /* Changes made while this worker had no connection went unheard: read every row again. */
    for (token_entry *t = ex->tokens; t; t = t->next)
        t->stale = true;
    if (hf_pg_exec(ex->db, "LISTEN hookflow_connections", 0, NULL, NULL, err, sizeof err) !=
        HF_PG_OK)
        hf_log_kv(HF_LOG_WARN, "executor.listen_failed", "error", err, "msg",
                  "connection changes are noticed within seconds instead of at once", NULL);
    return true;
}

/* ---- the loop ------------------------------------------------------------------------------ */

static void schedule_tick(engine_executor *ex, int ms)
{
    if (ms == 0) {
        event_active(ex->tick_ev, EV_TIMEOUT, 0);
        return;
    }
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (!evtimer_pending(ex->tick_ev, NULL))
        evtimer_add(ex->tick_ev, &tv);
}

/* A tick in a couple of milliseconds: call completions and finished runs arriving meanwhile are
 * written in one transaction instead of one each. */
static void schedule_soon(engine_executor *ex)
{
    struct timeval tv = {0, 2000};
    if (!evtimer_pending(ex->tick_ev, NULL))
        evtimer_add(ex->tick_ev, &tv);
}

static void poll_due(evutil_socket_t fd, short what, void *arg)
{
    engine_executor *ex = arg;
    atomic_store(&ex->want_claim, true);
    schedule_tick(ex, 0);
}

static void release_all(engine_executor *ex)
{
    if (!ex->db)
        return;
    const char *params[] = {ex->worker_id};
    char err[256];
    if (hf_pg_exec(ex->db,
                   "UPDATE runs SET status = 'waiting', next_run_at = now(), lease_owner = NULL, "
                   "lease_expires_at = NULL WHERE lease_owner = $1 AND status = 'running'",
                   1, params, NULL, err, sizeof err) != HF_PG_OK)
        hf_log_kv(HF_LOG_WARN, "executor.release_failed", "error", err, "msg",
                  "the leases will expire instead", NULL);
}

/* The end of a stop: calls still in flight are cancelled (their callbacks record what they
 * can), the rest is written and the leases released, and the loop ends. Without PostgreSQL
 * nothing can be written: the leases then expire and another worker resumes the runs, as after
 * a crash. */
static void finish_stop(engine_executor *ex, bool have_db)
{
    hf_http_client_free(ex->http);
    ex->http = NULL;
    for (size_t i = 0; i < ex->to_call.n; i++)
        if (ex->to_call.v[i])
            ex->to_call.v[i]->in_call = false;
    ex->to_call.n = 0;
    if (have_db) {
        flush(ex);
        release_all(ex);
    } else {
        hf_log_kv(HF_LOG_WARN, "executor.stopped_without_database", "msg",
                  "PostgreSQL is unreachable: this worker's leases will expire and another "
                  "worker will resume its runs",
                  NULL);
    }
    event_base_loopbreak(ex->base);
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    engine_executor *ex = arg;
    if (!ensure_db(ex)) {
        if (ex->stopping && (ex->ncalls == 0 || hf_now_ms() >= ex->stop_deadline_ms)) {
            finish_stop(ex, false);
            return;
        }
        schedule_tick(ex, ex->stopping ? 20 : 1000);
        return;
    }
    forget_changed_connections(ex, true);
    /* Finished attempts are written before new calls start, so attempt rows keep the order in
     * which the nodes ran: while a write fails, no new call starts (a crash would otherwise find
     * the next call made but the step before it not recorded). */
    flush(ex);
    adopt_inbox(ex);
    if (atomic_exchange(&ex->want_claim, false))
        claim(ex);
    if (flush(ex) == 0) { /* 0: nothing is left unwritten */
        /* A stopping worker lets the calls in flight finish but starts none: the runs whose next
         * call is prepared go back to the queue as they are (nothing of that call is recorded
         * yet), instead of being cut off at the deadline mid-call. */
        if (!ex->stopping)
            start_calls(ex);
        flush(ex);
    } else {
        schedule_tick(ex, 200);
    }
    if (ex->stopping) {
        if (ex->ncalls == 0 || hf_now_ms() >= ex->stop_deadline_ms) {
            /* Cancelling calls still in flight runs their callbacks (treated as unknown
             * outcomes where the platform has no idempotency key). */
            finish_stop(ex, true);
            return;
        }
        schedule_tick(ex, 20);
        return;
    }
}

static void renew(evutil_socket_t fd, short what, void *arg)
{
    engine_executor *ex = arg;
    if (!ex->db || ex->nheld == 0)
        return;
    char lease[24];
    snprintf(lease, sizeof lease, "%lld", ex->cfg->lease_ms);
    const char *params[] = {ex->worker_id, lease};
    char err[256];
    if (hf_pg_exec(ex->db,
                   "UPDATE runs SET lease_expires_at = now() + make_interval(secs => "
                   "$2::double precision / 1000) WHERE lease_owner = $1 AND status = 'running'",
                   2, params, NULL, err, sizeof err) != HF_PG_OK)
        hf_log_kv(HF_LOG_WARN, "executor.renew_failed", "error", err, NULL);
}

/* Runs whose lease ran out (their worker died or hung) become runnable again; the next claim
 * finds any call they left 'running' and deals with it (recover()). Kept out of the claim query
 * so that one stays on the runnable partial index. */
static void reclaim_expired(engine_executor *ex)
{
    char err[256];
    PGresult *res = NULL;
    if (hf_pg_exec(ex->db,
                   "UPDATE runs SET status = 'waiting', next_run_at = now(), lease_owner = NULL, "
                   "lease_expires_at = NULL WHERE status = 'running' AND lease_expires_at < now()",
                   0, NULL, &res, err, sizeof err) != HF_PG_OK) {
        hf_log_kv(HF_LOG_WARN, "executor.reclaim_failed", "error", err, NULL);
    } else if (atoi(PQcmdTuples(res)) > 0) {
        hf_log_kv(HF_LOG_WARN, "executor.leases_expired", "runs", PQcmdTuples(res), "msg",
                  "runs of a lost worker are runnable again", NULL);
        atomic_store(&ex->want_claim, true);
        schedule_tick(ex, 0);
    }
    PQclear(res);
}

/* Active runs by status, for the metrics (a cheap count over the partial indexes). */
static void count_runs(evutil_socket_t fd, short what, void *arg)
{
    engine_executor *ex = arg;
    if (!ex->db || hf_pg_connection_lost(ex->db))
        return;
    reclaim_expired(ex);
    if (ex->housekeeping_ticks++ % 5 != 0)
        return;
    PGresult *res = NULL;
    char err[256];
    if (hf_pg_exec(ex->db,
                   "SELECT s, (SELECT count(*) FROM runs WHERE status = s) FROM "
                   "unnest(ARRAY['pending', 'running', 'waiting']) AS s",
                   0, NULL, &res, err, sizeof err) == HF_PG_OK) {
        for (int i = 0; i < PQntuples(res); i++) {
            long long v = 0;
            (void)hf_parse_ll(PQgetvalue(res, i, 1), &v);
            char labels[48];
            snprintf(labels, sizeof labels, "status=\"%s\"", PQgetvalue(res, i, 0));
            hf_gauge_set(hf_metrics_gauge(ex->metrics, "hookflow_engine_runs",
                                          "Runs not yet finished, by status (all workers)", labels),
                         v);
        }
    }
    PQclear(res);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    engine_executor *ex = arg;
    ex->stopping = true;
    schedule_tick(ex, 0);
}

/* On the loop: the secrets a SIGHUP loaded replace the ones in use. Nothing the loop holds
 * points into the old ones (refreshes copy the client credentials; tokens are opened into copies).
 */
static void take_secrets(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    engine_executor *ex = arg;
    pthread_mutex_lock(&ex->inbox_lock);
    hf_secrets *secrets = ex->new_secrets;
    engine_keyring *keys = ex->new_keys;
    ex->new_secrets = NULL;
    ex->new_keys = NULL;
    pthread_mutex_unlock(&ex->inbox_lock);
    if (!secrets)
        return;
    hf_secrets_free(ex->own_secrets);
    engine_keyring_free(ex->own_keys);
    ex->secrets = ex->own_secrets = secrets;
    ex->keys = ex->own_keys = keys;
    /* Tokens opened (or not: no key) with the old keys are read again with the new ones. */
    for (token_entry *t = ex->tokens; t; t = t->next)
        t->stale = true;
}

void engine_executor_reload_secrets(engine_executor *ex, hf_secrets *secrets, engine_keyring *keys)
{
    pthread_mutex_lock(&ex->inbox_lock);
    hf_secrets *unused = ex->new_secrets;
    engine_keyring *unused_keys = ex->new_keys;
    ex->new_secrets = secrets;
    ex->new_keys = keys;
    pthread_mutex_unlock(&ex->inbox_lock);
    hf_secrets_free(unused);
    engine_keyring_free(unused_keys);
    event_active(ex->reload_ev, EV_TIMEOUT, 0);
}

static void *executor_main(void *arg)
{
    engine_executor *ex = arg;
    atomic_store(&ex->want_claim, true);
    schedule_tick(ex, 0);
    event_base_loop(ex->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static int64_t gauge_held(void *arg)
{
    return atomic_load(&((engine_executor *)arg)->gauge_held);
}

static int64_t gauge_calls(void *arg)
{
    return atomic_load(&((engine_executor *)arg)->gauge_calls);
}

engine_executor *engine_executor_new(const engine_config *cfg, const char *worker_id,
                                     engine_defs *defs, hf_metrics *metrics,
                                     const hf_catalog *catalog, const hf_secrets *secrets,
                                     const engine_keyring *keys, char *err, size_t errlen)
{
    engine_executor *ex = xcalloc(1, sizeof *ex);
    ex->cfg = cfg;
    ex->worker_id = xstrdup(worker_id);
    ex->defs = defs;
    ex->metrics = metrics;
    ex->catalog = catalog;
    ex->secrets = secrets;
    ex->keys = keys;
    ex->base = event_base_new();
    if (!ex->base) {
        hf_err(err, errlen, "cannot create an event base");
        free(ex->worker_id);
        free(ex);
        return NULL;
    }
    pthread_mutex_init(&ex->inbox_lock, NULL);
    ex->http = hf_http_client_new(ex->base, (int)cfg->http_connections);
    ex->tick_ev = evtimer_new(ex->base, tick, ex);
    ex->stop_ev = event_new(ex->base, -1, 0, on_stop, ex);
    ex->renew_ev = event_new(ex->base, -1, EV_PERSIST, renew, ex);
    ex->gauge_ev = event_new(ex->base, -1, EV_PERSIST, count_runs, ex);
    ex->poll_ev = event_new(ex->base, -1, EV_PERSIST, poll_due, ex);
    ex->reload_ev = event_new(ex->base, -1, 0, take_secrets, ex);
    struct timeval poll = {cfg->poll_ms / 1000, (cfg->poll_ms % 1000) * 1000};
    event_add(ex->poll_ev, &poll);
    struct timeval every = {cfg->lease_ms / 3000, (cfg->lease_ms / 3 % 1000) * 1000};
    event_add(ex->renew_ev, &every);
    /* Expired leases are looked for every second; run counts ride along. */
    struct timeval every_second = {1, 0};
    event_add(ex->gauge_ev, &every_second);
    ex->claimed = hf_metrics_counter(metrics, "hookflow_engine_runs_claimed_total",
                                     "Runs claimed by this worker (including resumptions)", NULL);
    ex->refused_runs =
        hf_metrics_counter(metrics, "hookflow_engine_runs_refused_by_database_total",
                           "Runs failed because PostgreSQL refused to record their values", NULL);
    hf_metrics_gauge_fn(metrics, "hookflow_engine_leases_held", "Runs this worker holds a lease on",
                        NULL, gauge_held, ex);
    hf_metrics_gauge_fn(metrics, "hookflow_engine_calls_in_flight",
                        "Connector calls waiting for an answer", NULL, gauge_calls, ex);
    return ex;
}

void engine_executor_start(engine_executor *ex)
{
    ex->started = true;
    pthread_create(&ex->thread, NULL, executor_main, ex);
}

void engine_executor_wake(void *arg)
{
    engine_executor *ex = arg;
    atomic_store(&ex->want_claim, true);
    event_active(ex->tick_ev, EV_TIMEOUT, 0);
}

long long engine_executor_room(engine_executor *ex)
{
    if (ex->stopping)
        return 0;
    return ex->cfg->concurrency - (long long)atomic_load(&ex->gauge_held) -
           (long long)atomic_load(&ex->inbox_len);
}

void engine_executor_adopt(engine_executor *ex, engine_handoff *runs, size_t n)
{
    if (n == 0)
        return;
    pthread_mutex_lock(&ex->inbox_lock);
    for (size_t i = 0; i < n; i++)
        VEC_PUSH(ex->inbox, runs[i]);
    atomic_store(&ex->inbox_len, (int64_t)ex->inbox.n);
    pthread_mutex_unlock(&ex->inbox_lock);
    event_active(ex->tick_ev, EV_TIMEOUT, 0);
}

void engine_executor_stop(engine_executor *ex, int64_t timeout_ms)
{
    if (!ex || !ex->started)
        return;
    ex->stop_deadline_ms = hf_now_ms() + timeout_ms;
    event_active(ex->stop_ev, EV_TIMEOUT, 0);
    pthread_join(ex->thread, NULL);
    ex->started = false;
}

bool engine_executor_healthy(engine_executor *ex)
{
    return atomic_load(&ex->db_ok);
}

void engine_executor_free(engine_executor *ex)
{
    if (!ex)
        return;
    engine_executor_stop(ex, 0);
    hf_http_client_free(ex->http);
    ex->http = NULL;
    free_writes(ex);
    for (size_t i = 0; i < ex->done_runs.n; i++)
        unhold(ex, ex->done_runs.v[i]);
    for (size_t i = 0; i < ex->done_runs.n; i++)
        run_free(ex->done_runs.v[i]);
    while (ex->held) {
        run *r = ex->held;
        ex->held = r->next_held;
        run_free(r);
    }
    free(ex->rows.v);
    free(ex->updates.v);
    free(ex->run_updates.v);
    free(ex->done_runs.v);
    free(ex->refused.v);
    free(ex->to_call.v);
    for (size_t i = 0; i < ex->inbox.n; i++) {
        free(ex->inbox.v[i].trigger);
        free(ex->inbox.v[i].tenant_json);
    }
    free(ex->inbox.v);
    pthread_mutex_destroy(&ex->inbox_lock);
    while (ex->tokens) {
        token_entry *t = ex->tokens;
        ex->tokens = t->next;
        token_entry_clear(t);
        free(t);
    }
    event_free(ex->tick_ev);
    event_free(ex->stop_ev);
    event_free(ex->renew_ev);
    event_free(ex->gauge_ev);
    event_free(ex->poll_ev);
    event_free(ex->reload_ev);
    event_base_free(ex->base);
    hf_secrets_free(ex->new_secrets);
    engine_keyring_free(ex->new_keys);
    hf_secrets_free(ex->own_secrets);
    engine_keyring_free(ex->own_keys);
    if (ex->db)
        PQfinish(ex->db);
    free(ex->worker_id);
    free(ex);
}
