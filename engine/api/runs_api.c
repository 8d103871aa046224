/* runs_api: a workflow's runs (filtered, keyset-paginated), one run with every node attempt, and
 * retrying a failed or cancelled run on the workflow's current version.
 *
 * Retries re-queue the SAME run row: the event's dedupe key, UNIQUE (workflow_id, event_id) and
 * the run id the admin is looking at stay as they are, and runs.generation counts the retries.
 * The executor rebuilds a claimed run's node state from every node_attempts row of the run (see
 * recover() in engine/executor.c), so a retry moves what the new generation must not build on
 * into node_attempt_history (schemas/migrations/0002_api.sql):
 *   from "start":        every attempt, and the context is cleared: every node runs again;
 *   from "failed_node":  every attempt that did not succeed: the nodes that succeeded keep their
 *                        outputs, the failed node starts again at attempt 1 with its full retry
 *                        budget.
 * The executor's idempotency key is "<run id>-<node id>", the same in every generation. For the
 * failed node that is what one wants (a call whose outcome was unknown is not duplicated where
 * the platform honours the key; platforms store only successful answers under a key, so a
 * rejected call is really made again). For "start" it means that Xero and QuickBooks replay the
 * stored answer of a call that already succeeded with that key (within their key window) instead
 * of creating the object a second time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/auth.h"
#include "crypto.h"
#include "json.h"
#include "log.h"
#include "pg.h"

#define RUNS_DEFAULT_LIMIT 50
#define RUNS_MAX_LIMIT 100

/* clang-format off */
/* The JSON object of one run in listings and retry answers (r = runs). */
#define RUN_SUMMARY_JSON                                                                           \
    "json_build_object('id', r.id, 'workflow_id', r.workflow_id, 'status', r.status,"              \
    " 'event_id', r.event_id, 'workflow_version', r.workflow_version,"                             \
    " 'generation', r.generation, 'attempt', r.attempt, 'error', r.error,"                         \
    " 'created_at', " API_TS("r.created_at") ", 'started_at', " API_TS("r.started_at") ","         \
    " 'finished_at', " API_TS("r.finished_at") ", 'next_run_at', " API_TS("r.next_run_at") ","     \
    " 'retried_at', " API_TS("r.retried_at") ", 'retried_by', r.retried_by,"                       \
    " 'retry_from', r.retry_from)"
/* clang-format on */

static const char *const run_statuses[] = {"pending", "running",   "waiting", "succeeded",
                                           "failed",  "cancelled", NULL};

static bool is_run_status(const char *s, size_t n)
{
    for (size_t i = 0; run_statuses[i]; i++)
        if (strlen(run_statuses[i]) == n && memcmp(run_statuses[i], s, n) == 0)
            return true;
    return false;
}

static void reply_bad_param(api_ctx *c, const char *name, const char *value, const char *why)
{
    hf_buf d = {0};
    hf_buf_printf(&d, "%s: ", name);
    if (value) {
        hf_buf_putc(&d, '"');
        hf_buf_put_quoted(&d, value, 80);
        hf_buf_puts(&d, "\" ");
    }
    hf_buf_puts(&d, why);
    api_reply_error(c, 400, "invalid_parameter", d.data);
    hf_buf_free(&d);
}

/* ---- cursors ------------------------------------------------------------------------------ */

/* clang-format off */
/* A page of a workflow's runs: $1 workflow, $2 tenant, $3 statuses (text[]), $4/$5 from/to
 * (epoch microseconds, as exact as created_at), $6/$7 the cursor's created_at and id, $8 how
 * many. */
#define RUNS_LIST_SQL                                                                              \
    "SELECT " RUN_SUMMARY_JSON "::text, " API_TS("r.created_at") ", r.id "                         \
    "FROM runs r "                                                                                 \
    "WHERE r.workflow_id = $1 AND r.tenant_id = $2 "                                               \
    "  AND ($3::text[] IS NULL OR r.status = ANY ($3::text[])) "                                   \
    "  AND ($4::bigint IS NULL OR "                                                                \
    "       r.created_at >= 'epoch'::timestamptz + $4::bigint * interval '1 microsecond') "        \
    "  AND ($5::bigint IS NULL OR "                                                                \
    "       r.created_at < 'epoch'::timestamptz + $5::bigint * interval '1 microsecond') "         \
    "  AND ($6::timestamptz IS NULL OR "                                                           \
    "       (r.created_at, r.id) < ($6::timestamptz, $7::uuid)) "                                  \
    "ORDER BY r.created_at DESC, r.id DESC LIMIT $8::int"
/* clang-format on */

/* ---- GET /api/workflows/{id}/runs ---------------------------------------------------------- */

void api_runs_list(api_ctx *c)
{
    const char *workflow_id = c->params[0];
    char *status = api_query_param(c, "status");
    char *from = api_query_param(c, "from");
    char *to = api_query_param(c, "to");
    char *limit_text = api_query_param(c, "limit");
    char *cursor = api_query_param(c, "cursor");
    hf_pg_array statuses = {0};
    PGresult *res = NULL;
    hf_buf out = {0};
    char err[512];
    char from_us[32] = "", to_us[32] = "", cur_at[48] = "", cur_id[40] = "", limit[24];
    long long nlimit = RUNS_DEFAULT_LIMIT;

    if (!workflow_id || !api_is_uuid(workflow_id)) {
        api_reply_not_found(c, "workflow");
        goto done;
    }
    if (status) {
        const char *p = status;
        if (!*p) {
            reply_bad_param(c, "status", NULL,
                            "is empty (one or more of pending, running, "
                            "waiting, succeeded, failed, cancelled, "
                            "comma-separated)");
            goto done;
        }
        while (true) {
            const char *end = strchr(p, ',');
            size_t n = end ? (size_t)(end - p) : strlen(p);
            while (n > 0 && *p == ' ')
                p++, n--;
            while (n > 0 && p[n - 1] == ' ')
                n--;
            if (!is_run_status(p, n)) {
                char one[128];
                snprintf(one, sizeof one, "%.*s", (int)(n < 100 ? n : 100), p);
                reply_bad_param(c, "status", one,
                                "is not a run status (one of pending, running, waiting, "
                                "succeeded, failed, cancelled)");
                goto done;
            }
            char one[16];
            snprintf(one, sizeof one, "%.*s", (int)n, p);
            hf_pg_array_add(&statuses, one);
            if (!end)
                break;
            p = end + 1;
        }
    }
    int64_t us_from = 0, us_to = 0;
    if (from) {
        if (!hf_parse_rfc3339_us(from, &us_from) || !hf_rfc3339_has_offset(from)) {
            reply_bad_param(c, "from", from, "is not an RFC 3339 date-time");
            goto done;
        }
        snprintf(from_us, sizeof from_us, "%lld", (long long)us_from);
    }
    if (to) {
        if (!hf_parse_rfc3339_us(to, &us_to) || !hf_rfc3339_has_offset(to)) {
            reply_bad_param(c, "to", to, "is not an RFC 3339 date-time");
            goto done;
        }
        snprintf(to_us, sizeof to_us, "%lld", (long long)us_to);
    }
    if (from && to && us_from > us_to) {
        reply_bad_param(c, "from", from, "is after to");
        goto done;
    }
    if (limit_text &&
        (!hf_parse_ll(limit_text, &nlimit) || nlimit < 1 || nlimit > RUNS_MAX_LIMIT)) {
        reply_bad_param(c, "limit", limit_text, "must be an integer from 1 to 100");
        goto done;
    }
    if (cursor && !api_cursor_decode(cursor, cur_at, cur_id)) {
        reply_bad_param(c, "cursor", NULL,
                        "is not a cursor of this listing (pass next_cursor back unchanged)");
        goto done;
    }
    snprintf(limit, sizeof limit, "%lld", nlimit + 1);

    const char *p1[] = {workflow_id, c->who.tenant_id};
    if (hf_pg_exec(c->db, "SELECT 1 FROM workflows WHERE id = $1 AND tenant_id = $2", 2, p1, &res,
                   err, sizeof err) != HF_PG_OK) {
        api_reply_internal(c, err);
        goto done;
    }
    if (PQntuples(res) == 0) {
        api_reply_not_found(c, "workflow");
        goto done;
    }
    PQclear(res);
    res = NULL;

    const char *params[] = {workflow_id,
                            c->who.tenant_id,
                            status ? hf_pg_array_text(&statuses) : NULL,
                            from ? from_us : NULL,
                            to ? to_us : NULL,
                            cursor ? cur_at : NULL,
                            cursor ? cur_id : NULL,
                            limit};
    /* One statement for every combination of filters: it is planned with the actual values
     * (unnamed statement), so the "$n IS NULL" arms fold away and the keyset runs on
     * runs_workflow_created_idx (or runs_workflow_status_created_idx with a status). */
    if (hf_pg_exec(c->db, RUNS_LIST_SQL, 8, params, &res, err, sizeof err) != HF_PG_OK) {
        api_reply_internal(c, err);
        goto done;
    }
    int rows = PQntuples(res);
    int shown = rows > nlimit ? (int)nlimit : rows;
    hf_buf_puts(&out, "{\"runs\":[");
    for (int i = 0; i < shown; i++) {
        if (i)
            hf_buf_putc(&out, ',');
        hf_buf_puts(&out, PQgetvalue(res, i, 0));
    }
    hf_buf_puts(&out, "],\"next_cursor\":");
    if (rows > shown) {
        char *next =
            api_cursor_encode(PQgetvalue(res, shown - 1, 1), PQgetvalue(res, shown - 1, 2));
        hf_json_append_cstr(&out, next);
        free(next);
    } else {
        hf_buf_puts(&out, "null");
    }
    hf_buf_printf(&out, ",\"limit\":%lld}", nlimit);
    api_reply_json(c, 200, out.data, out.len);
done:
    PQclear(res);
    hf_buf_free(&out);
    hf_pg_array_free(&statuses);
    free(status);
    free(from);
    free(to);
    free(limit_text);
    free(cursor);
}

/* clang-format off */
/* One attempt (a = node_attempts or node_attempt_history, gen = its generation expression,
 * carried = whether a retry from the failed node carried it over from an earlier generation). */
#define ATTEMPT_JSON(gen, current, carried)                                                        \
    "json_build_object('id', a.id, 'generation', " gen ", 'current', " current ","                 \
    " 'carried_over', " carried ","                                                                \
    " 'node_id', a.node_id, 'attempt', a.attempt, 'status', a.status, 'input', a.input,"           \
    " 'output', a.output, 'http_status', a.http_status, 'duration_ms', a.duration_ms,"             \
    " 'error', a.error, 'idempotency_key', a.idempotency_key,"                                     \
    " 'started_at', " API_TS("a.started_at") ", 'finished_at', " API_TS("a.finished_at") ")"

/* One run of tenant $2 ($1) with every attempt: earlier generations' first (their ids are
 * older), then the current ones. */
#define RUN_GET_SQL                                                                                \
    "SELECT json_build_object("                                                                    \
    " 'id', r.id, 'workflow_id', r.workflow_id, 'workflow_name', w.name,"                          \
    " 'workflow_version', r.workflow_version, 'current_version', w.current_version,"               \
    " 'status', r.status, 'event_id', r.event_id, 'ordering_key', r.ordering_key,"                 \
    " 'generation', r.generation, 'attempt', r.attempt, 'error', r.error,"                         \
    " 'created_at', " API_TS("r.created_at") ", 'started_at', " API_TS("r.started_at") ","         \
    " 'finished_at', " API_TS("r.finished_at") ", 'next_run_at', " API_TS("r.next_run_at") ","     \
    " 'retried_at', " API_TS("r.retried_at") ", 'retried_by', r.retried_by,"                       \
    " 'retry_from', r.retry_from, 'trigger', r.trigger, 'context', r.context,"                     \
    " 'attempts', (SELECT coalesce(json_agg(x.j ORDER BY x.id), '[]'::json) FROM ("                \
    "    SELECT a.id, " ATTEMPT_JSON("a.generation", "false", "false") " AS j"                     \
    "    FROM node_attempt_history a WHERE a.run_id = r.id"                                        \
    "    UNION ALL"                                                                                \
    "    SELECT a.id, "                                                                            \
    ATTEMPT_JSON("coalesce(a.generation, r.generation)", "true",                               \
                 "coalesce(a.generation < r.generation,"                                           \
                 "         r.retried_at IS NOT NULL AND a.started_at < r.retried_at)") " AS j"    \
    "    FROM node_attempts a WHERE a.run_id = r.id) x)"                                           \
    ")::text "                                                                                     \
    "FROM runs r JOIN workflows w ON w.id = r.workflow_id "                                        \
    "WHERE r.id = $1 AND r.tenant_id = $2"
/* clang-format on */

/* ---- GET /api/runs/{id} -------------------------------------------------------------------- */

void api_runs_get(api_ctx *c)
{
    const char *run_id = c->params[0];
    PGresult *res = NULL;
    char err[512];
    if (!run_id || !api_is_uuid(run_id)) {
        api_reply_not_found(c, "run");
        return;
    }
    const char *params[] = {run_id, c->who.tenant_id};
    if (hf_pg_exec(c->db, RUN_GET_SQL, 2, params, &res, err, sizeof err) != HF_PG_OK) {
        api_reply_internal(c, err);
    } else if (PQntuples(res) == 0) {
        api_reply_not_found(c, "run");
    } else {
        api_reply_json(c, 200, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
    }
    PQclear(res);
}

/* ---- POST /api/runs/{id}/retry ------------------------------------------------------------- */

void api_runs_retry(api_ctx *c)
{
    static const char *const allowed[] = {"from", NULL};
    const char *run_id = c->params[0];
    hf_json body = NULL;
    PGresult *res = NULL;
    hf_buf detail = {0};
    char err[512];
    bool in_tx = false;
    char *failed_node = NULL, *old_error = NULL;

    if (!run_id || !api_is_uuid(run_id)) {
        api_reply_not_found(c, "run");
        return;
    }
    if (api_body_object(c, allowed, &body) != 0)
        return;
    const char *from = "failed_node";
    hf_json fv = hf_json_get(body, "from");
    if (fv) { /* null too: like every other member, it is a value or left out */
        const char *s = hf_json_str(fv);
        if (!s || (strcmp(s, "start") != 0 && strcmp(s, "failed_node") != 0)) {
            api_reply_error(c, 400, "invalid_field",
                            "from: must be \"start\" or \"failed_node\" (the default)");
            goto done;
        }
        from = s;
    }
    bool from_start = strcmp(from, "start") == 0;

    if (hf_pg_begin(c->db, err, sizeof err) != HF_PG_OK)
        goto internal;
    in_tx = true;
    const char *p1[] = {run_id, c->who.tenant_id};
    /* The row lock keeps a worker (which claims with SKIP LOCKED) and a second retry away until
     * this one commits. */
    if (hf_pg_exec(c->db,
                   "SELECT r.status, r.workflow_version, r.generation, coalesce(r.error, ''),"
                   "  w.current_version, w.deleted_at IS NOT NULL, r.workflow_id "
                   "FROM runs r JOIN workflows w ON w.id = r.workflow_id "
                   "WHERE r.id = $1 AND r.tenant_id = $2 FOR UPDATE OF r",
                   2, p1, &res, err, sizeof err) != HF_PG_OK)
        goto internal;
    if (PQntuples(res) == 0) {
        api_reply_not_found(c, "run");
        goto done;
    }
    char status[16], old_version[16], generation[16], current_version[16], workflow_id[40];
    snprintf(status, sizeof status, "%s", PQgetvalue(res, 0, 0));
    snprintf(old_version, sizeof old_version, "%s", PQgetvalue(res, 0, 1));
    snprintf(generation, sizeof generation, "%s", PQgetvalue(res, 0, 2));
    old_error = xstrdup(PQgetvalue(res, 0, 3));
    snprintf(current_version, sizeof current_version, "%s", PQgetvalue(res, 0, 4));
    bool deleted = strcmp(PQgetvalue(res, 0, 5), "t") == 0;
    snprintf(workflow_id, sizeof workflow_id, "%s", PQgetvalue(res, 0, 6));
    PQclear(res);
    res = NULL;

    if (strcmp(status, "failed") != 0 && strcmp(status, "cancelled") != 0) {
        char d[160];
        snprintf(d, sizeof d, "only failed or cancelled runs can be retried; this run is %s",
                 status);
        api_reply_error(c, 409, "run_not_retryable", d);
        goto done;
    }
    if (deleted) {
        api_reply_error(c, 409, "workflow_deleted",
                        "the run's workflow was deleted: its runs can be read but not retried");
        goto done;
    }

    if (!from_start) {
        /* The node the run stopped at: its latest attempt that did not succeed. A run that
         * stopped before any node failed (cancelled, or its definition could not be loaded) has
         * none and simply continues after the nodes that succeeded. */
        const char *p2[] = {run_id};
        if (hf_pg_exec(c->db,
                       "SELECT node_id FROM node_attempts WHERE run_id = $1 "
                       "AND status <> 'succeeded' ORDER BY id DESC LIMIT 1",
                       1, p2, &res, err, sizeof err) != HF_PG_OK)
            goto internal;
        if (PQntuples(res) > 0)
            failed_node = xstrdup(PQgetvalue(res, 0, 0));
        PQclear(res);
        res = NULL;
        if (failed_node) {
            const char *p3[] = {workflow_id, current_version, failed_node};
            if (hf_pg_exec(c->db,
                           "SELECT 1 FROM workflow_versions v, jsonb_array_elements("
                           "  CASE WHEN jsonb_typeof(v.definition->'nodes') = 'array'"
                           "       THEN v.definition->'nodes' ELSE '[]'::jsonb END) n "
                           "WHERE v.workflow_id = $1 AND v.version = $2::int "
                           "  AND n->>'id' = $3",
                           3, p3, &res, err, sizeof err) != HF_PG_OK)
                goto internal;
            if (PQntuples(res) == 0) {
                hf_buf d = {0};
                hf_buf_puts(&d, "node \"");
                hf_buf_put_quoted(&d, failed_node, 100);
                hf_buf_printf(&d,
                              "\" failed in version %s, but version %s (the workflow's current "
                              "version, which a retry runs) has no node with that id: retry "
                              "from the start instead",
                              old_version, current_version);
                api_reply_error(c, 409, "failed_node_not_in_current_version", d.data);
                hf_buf_free(&d);
                goto done;
            }
            PQclear(res);
            res = NULL;
        }
    }

    long long gen = 1;
    (void)hf_parse_ll(generation, &gen);
    char new_gen[24];
    snprintf(new_gen, sizeof new_gen, "%lld", gen + 1);
    const char *p4[] = {run_id, from_start ? "t" : "f", generation};
    /* Attempts written before migration 0006 or by an older worker have no generation: the one
     * being retried made them, and the kept ones must not take the next one's number. */
    const char *p_fill[] = {run_id, generation};
    if (hf_pg_exec(c->db,
                   "UPDATE node_attempts SET generation = $2::int "
                   "WHERE run_id = $1 AND generation IS NULL",
                   2, p_fill, &res, err, sizeof err) != HF_PG_OK)
        goto internal;
    PQclear(res);
    res = NULL;
    if (hf_pg_exec(c->db,
                   "WITH moved AS ("
                   "  DELETE FROM node_attempts WHERE run_id = $1"
                   "    AND ($2::boolean OR status <> 'succeeded') RETURNING *) "
                   "INSERT INTO node_attempt_history (id, run_id, generation, node_id, attempt,"
                   "  status, input, output, http_status, duration_ms, error, idempotency_key,"
                   "  started_at, finished_at) "
                   "SELECT id, run_id, coalesce(generation, $3::int), node_id, attempt, status,"
                   "  input, output,"
                   "  http_status, duration_ms, error, idempotency_key, started_at, finished_at "
                   "FROM moved",
                   3, p4, &res, err, sizeof err) != HF_PG_OK)
        goto internal;
    const char *moved = PQcmdTuples(res);
    long long nmoved = 0;
    (void)hf_parse_ll(moved, &nmoved);
    PQclear(res);
    res = NULL;

    const char *p5[] = {run_id, current_version, c->who.user, from, from_start ? "t" : "f"};
    if (hf_pg_exec(
            c->db,
            "UPDATE runs r SET status = 'pending', next_run_at = now(), error = NULL,"
            "  lease_owner = NULL, lease_expires_at = NULL, started_at = NULL,"
            "  finished_at = NULL, workflow_version = $2::int,"
            "  generation = r.generation + 1, retried_at = now(), retried_by = $3,"
            "  retry_from = $4,"
            "  context = CASE WHEN $5::boolean THEN '{}'::jsonb ELSE"
            "    jsonb_build_object('nodes', coalesce((SELECT jsonb_object_agg(e.key, e.value)"
            "      FROM jsonb_each(CASE WHEN jsonb_typeof(r.context->'nodes') = 'object'"
            "                           THEN r.context->'nodes' ELSE '{}'::jsonb END) e"
            "      WHERE e.value->>'status' = 'succeeded'), '{}'::jsonb)) END "
            "WHERE r.id = $1 RETURNING " RUN_SUMMARY_JSON "::text",
            5, p5, &res, err, sizeof err) != HF_PG_OK)
        goto internal;
    if (PQntuples(res) != 1) {
        api_reply_internal(c, "retry: the run vanished inside its transaction");
        goto done;
    }

    hf_buf_printf(&detail,
                  "{\"from\":\"%s\",\"generation\":%s,\"previous_status\":\"%s\","
                  "\"previous_version\":%s,\"workflow_version\":%s,"
                  "\"attempts_superseded\":%lld,\"failed_node\":",
                  from, new_gen, status, old_version, current_version, nmoved);
    if (failed_node)
        hf_json_append_cstr(&detail, failed_node);
    else
        hf_buf_puts(&detail, "null");
    hf_buf_puts(&detail, ",\"previous_error\":");
    hf_json_append_cstr(&detail, old_error);
    hf_buf_puts(&detail, "}");
    in_tx = false; /* api_audit_commit ends it, whatever the outcome */
    if (api_audit_commit(c, "run.retried", "run", run_id, detail.data, err, sizeof err) != 0)
        goto internal;
    hf_log_kv(HF_LOG_INFO, "api.run_retried", "run", run_id, "from", from, "generation", new_gen,
              "user", c->who.user, NULL);
    api_reply_json(c, 202, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
    goto done;
internal:
    api_reply_internal(c, err);
done:
    if (in_tx)
        hf_pg_rollback(c->db);
    PQclear(res);
    hf_buf_free(&detail);
    free(failed_node);
    free(old_error);
}
