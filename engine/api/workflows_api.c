/* workflows_api: the workflow API — CRUD (every saved definition is a new immutable version, so a
 * run keeps the version it started with; delete is soft), enable/disable, validation (wf_validate
 * plus the checks only the database can make: connections, scopes, Beta approvals) and
 * simulation (the executor's walk, in memory, with no call to any platform). Every change writes
 * its audit_log row in the same transaction. */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "connectors/connector.h"
#include "expr.h"
#include "log.h"
#include "pg.h"
#include "workflow.h"

#define LIST_DEFAULT_LIMIT 20
#define LIST_MAX_LIMIT 100

/* A simulation stops (the node fails) once rendered params and outputs pass this many bytes. */
#define SIM_MAX_OUTPUT_BYTES (8u << 20)

/* One workflow as the API shows it (w = workflows, v = its current version). */
#define WORKFLOW_SUMMARY_MEMBERS                                                                   \
    "'id', w.id, 'name', w.name, 'enabled', w.enabled, 'version', w.current_version,"              \
    " 'trigger', json_build_object('connector', w.trigger_connector, 'event', w.trigger_event),"   \
    " 'created_at', " API_TS("w.created_at") ", 'updated_at', " API_TS("w.updated_at")
#define WORKFLOW_JSON                                                                              \
    "json_build_object(" WORKFLOW_SUMMARY_MEMBERS ", 'version_created_at', " API_TS(               \
        "v.created_at") ", 'version_created_by', v.created_by, 'definition', v.definition)::text"

/* The live workflow $1 of tenant $2 with its current version. */
#define WORKFLOW_FROM                                                                              \
    " FROM workflows w JOIN workflow_versions v"                                                   \
    " ON v.workflow_id = w.id AND v.version = w.current_version"                                   \
    " WHERE w.id = $1::uuid AND w.tenant_id = $2::uuid AND w.deleted_at IS NULL"

/* ---- database helpers ---------------------------------------------------------------------- */

/* Replies for a failed statement: 503 when the session is gone, 409 for the unique name, 400 for
 * values PostgreSQL refuses (data exceptions such as a number jsonb cannot hold), else 500. */
static void reply_db_error(api_ctx *c, int rc, PGresult *res, const char *err)
{
    const char *state = hf_pg_sqlstate(res);
    if (rc == HF_PG_ERR_LOST) {
        api_reply_error(c, 503, "database_unavailable", "PostgreSQL does not answer");
    } else if (strcmp(state, HF_PG_UNIQUE_VIOLATION) == 0) {
        api_reply_error(c, 409, "name_taken", "another live workflow of this tenant has the name");
    } else if (strncmp(state, "22", 2) == 0 || strcmp(state, "54000") == 0) {
        const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        char detail[300];
        snprintf(detail, sizeof detail, "the database refused a value: %s",
                 msg ? msg : "invalid value");
        api_reply_error(c, 400, "invalid_value", detail);
    } else {
        api_reply_internal(c, err);
    }
}

/* hf_pg_exec that replies (reply_db_error) and rolls back on failure; *out as hf_pg_exec's but
 * freed here on failure. */
static bool db_run(api_ctx *c, const char *sql, int n, const char *const *params, PGresult **out)
{
    char err[512];
    PGresult *res = NULL;
    int rc = hf_pg_exec(c->db, sql, n, params, &res, err, sizeof err);
    if (rc == HF_PG_OK) {
        if (out)
            *out = res;
        else
            PQclear(res);
        return true;
    }
    reply_db_error(c, rc, res, err);
    PQclear(res);
    hf_pg_rollback(c->db);
    if (out)
        *out = NULL;
    return false;
}

static bool db_begin(api_ctx *c)
{
    char err[256];
    int rc = hf_pg_begin(c->db, err, sizeof err);
    if (rc != HF_PG_OK)
        reply_db_error(c, rc, NULL, err);
    return rc == HF_PG_OK;
}

static bool db_commit(api_ctx *c)
{
    char err[256];
    int rc = hf_pg_commit(c->db, err, sizeof err);
    if (rc != HF_PG_OK) {
        hf_pg_rollback(c->db);
        reply_db_error(c, rc, NULL, err);
    }
    return rc == HF_PG_OK;
}

/* api_audit for a workflow inside the handler's transaction; on failure rolls back and replies
 * (503 when the session is gone, else 500). */
static bool audit_or_reply(api_ctx *c, const char *action, const char *id, const char *detail)
{
    if (api_audit(c, action, "workflow", id, detail) == 0)
        return true;
    bool lost = hf_pg_connection_lost(c->db);
    hf_pg_rollback(c->db);
    if (lost)
        api_reply_error(c, 503, "database_unavailable", "PostgreSQL does not answer");
    else
        api_reply_internal(c, "audit_log insert failed");
    return false;
}

/* Replies with the workflow (status 200 or 201), or 404. */
static void reply_workflow(api_ctx *c, const char *id, int status)
{
    const char *params[] = {id, c->who.tenant_id};
    PGresult *res = NULL;
    if (!db_run(c, "SELECT " WORKFLOW_JSON WORKFLOW_FROM, 2, params, &res))
        return;
    if (PQntuples(res) == 0) {
        api_reply_not_found(c, "workflow");
    } else {
        if (status == 201) {
            char *location = xasprintf("/api/workflows/%s", id);
            api_set_header(c, "Location", location);
            free(location);
        }
        api_reply_json(c, status, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
    }
    PQclear(res);
}

/* The path's {id} when it is a uuid; replies 404 and returns NULL otherwise. */
static const char *workflow_id_param(api_ctx *c)
{
    const char *id = c->nparams > 0 ? c->params[0] : NULL;
    if (!api_is_uuid(id)) {
        api_reply_not_found(c, "workflow");
        return NULL;
    }
    return id;
}

/* ---- request bodies ------------------------------------------------------------------------ */

/* The body object (api_body_object: an object, only allowed members, none twice). *ok is false
 * (and a 400 was sent) when it is not, or is absent though required; an absent optional body
 * gives NULL with *ok. */
static hf_json body_object(api_ctx *c, const char *const *allowed, bool required, bool *ok)
{
    hf_json body;
    *ok = false;
    if (api_body_object(c, allowed, &body) != 0)
        return NULL;
    if (!body && required) {
        api_reply_error(c, 400, "invalid_body", "the body must be a JSON object");
        return NULL;
    }
    *ok = true;
    return body;
}

/* An optional name: a string of 1..WF_MAX_NAME bytes without control characters. */
static bool body_name(api_ctx *c, hf_json body, const char **out)
{
    hf_json v = hf_json_get(body, "name");
    *out = NULL;
    if (!v)
        return true;
    const char *s = hf_json_str(v);
    const char *why = !s                                ? "must be a string"
                      : !*s                             ? "must not be empty"
                      : hf_utf8_length(s) > WF_MAX_NAME ? "must be at most 200 characters"
                                                        : NULL;
    for (const char *p = s; !why && *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            why = "must not contain control characters";
    if (why) {
        char detail[80];
        snprintf(detail, sizeof detail, "name %s", why);
        api_reply_error(c, 400, "invalid_field", detail);
        return false;
    }
    *out = s;
    return true;
}

/* An optional boolean: -1 when absent. */
static bool body_bool(api_ctx *c, hf_json body, const char *key, int *out)
{
    hf_json v = hf_json_get(body, key);
    *out = -1;
    if (!v)
        return true;
    if (!YAJL_IS_TRUE(v) && !YAJL_IS_FALSE(v)) {
        char detail[80];
        snprintf(detail, sizeof detail, "%s must be true or false", key);
        api_reply_error(c, 400, "invalid_field", detail);
        return false;
    }
    *out = YAJL_IS_TRUE(v);
    return true;
}

/* The body of a create or update: only name, definition and enabled; name and enabled are
 * optional, the definition is required (missing: the 400's detail when it is absent). The
 * definition, or NULL after a 400. */
static hf_json body_workflow(api_ctx *c, const char *missing, const char **name, int *enabled)
{
    static const char *const allowed[] = {"name", "definition", "enabled", NULL};
    bool ok;
    hf_json body = body_object(c, allowed, true, &ok);
    if (!body || !body_name(c, body, name) || !body_bool(c, body, "enabled", enabled))
        return NULL;
    hf_json defv = hf_json_get(body, "definition");
    if (!defv)
        api_reply_error(c, 400, "invalid_field", missing);
    return defv;
}

/* A definition from a body: compact text and the parsed, checked graph. */
typedef struct definition {
    hf_buf text;
    wf_def *def;
} definition;

static void definition_free(definition *d)
{
    wf_free(d->def);
    hf_buf_free(&d->text);
}

/* Serialises v and runs wf_parse on it; replies 400 invalid_definition with wf_parse's reason
 * (which starts with the JSON path) when it does not parse. */
static bool definition_load(api_ctx *c, hf_json v, definition *d)
{
    memset(d, 0, sizeof *d);
    if (!hf_json_is_object(v)) {
        api_reply_error(c, 400, "invalid_definition", "definition must be a JSON object");
        return false;
    }
    hf_json_serialize(v, &d->text);
    char err[512];
    d->def = wf_parse(d->text.data, d->text.len, err, sizeof err);
    if (!d->def) {
        api_reply_error(c, 400, "invalid_definition", err);
        return false;
    }
    return true;
}

/* ---- problems: wf_validate plus the database's ----------------------------------------------- */

/* Appends a problem; path and message become the list's. */
static void problem_push(wf_problems *p, const char *code, char *path, char *message)
{
    if (p->n >= WF_MAX_PROBLEMS) {
        free(path);
        free(message);
        return;
    }
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 16;
        p->items = xrealloc(p->items, p->cap * sizeof *p->items);
    }
    p->items[p->n++] = (wf_problem){.path = path, .code = code, .message = message};
}

/* What the tenant has: its first active connection per connector (the one the executor uses)
 * with the scopes granted, and its support approvals. */
typedef struct tenant_links {
    PGresult *res; /* rows: kind ('c' connection | 'a' approval), connector, scopes JSON */
} tenant_links;

static int links_find(const tenant_links *l, char kind, const char *connector)
{
    for (int i = 0; i < PQntuples(l->res); i++)
        if (PQgetvalue(l->res, i, 0)[0] == kind && strcmp(PQgetvalue(l->res, i, 1), connector) == 0)
            return i;
    return -1;
}

static bool links_load(api_ctx *c, tenant_links *l)
{
    const char *params[] = {c->who.tenant_id};
    return db_run(c,
                  "SELECT * FROM (SELECT DISTINCT ON (connector) 'c', connector,"
                  "  array_to_json(granted_scopes)::text FROM connections"
                  "  WHERE tenant_id = $1::uuid AND status = 'active'"
                  "  ORDER BY connector, created_at) conns "
                  "UNION ALL SELECT 'a', connector, NULL FROM support_approvals"
                  " WHERE tenant_id = $1::uuid",
                  1, params, &l->res);
}

/* A connector used at base ("trigger", "nodes[3]"): its connection and Beta approval. */
static void check_connector_use(api_ctx *c, const tenant_links *l, const char *base,
                                const hf_connector *k, wf_problems *out)
{
    const char *id = hf_connector_id(k);
    if (links_find(l, 'c', id) < 0)
        problem_push(out, "missing_connection", xasprintf("%s.connector", base),
                     xasprintf("the tenant has no active %s connection (%s): connect it under "
                               "/api/integrations/%s",
                               id, hf_connector_name(k), id));
    if (hf_connector_is_beta(k) && strcmp(c->who.environment, "production") == 0 &&
        links_find(l, 'a', id) < 0)
        problem_push(out, "beta_not_approved", xasprintf("%s.connector", base),
                     xasprintf("%s is Beta: a production tenant needs a support approval before "
                               "using it",
                               hf_connector_name(k)));
}

/* The scopes an action needs that the connection did not grant. */
static void check_scopes(const tenant_links *l, const char *base, const hf_connector *k,
                         const hf_action *a, wf_problems *out)
{
    int row = links_find(l, 'c', hf_connector_id(k));
    if (row < 0)
        return;
    char err[64];
    hf_json granted = hf_json_parse(PQgetvalue(l->res, row, 2), (size_t)PQgetlength(l->res, row, 2),
                                    err, sizeof err);
    hf_json needed = hf_json_get(hf_action_json(a), "scopes");
    for (size_t i = 0; i < hf_json_len(needed); i++) {
        const char *scope = hf_json_str(hf_json_at(needed, i));
        bool have = false;
        for (size_t j = 0; scope && j < hf_json_len(granted) && !have; j++) {
            const char *g = hf_json_str(hf_json_at(granted, j));
            have = g && strcmp(g, scope) == 0;
        }
        if (scope && !have)
            problem_push(out, "missing_scope", xasprintf("%s.action", base),
                         xasprintf("the %s connection was not granted the scope '%s' that %s "
                                   "needs: authorise it again",
                                   hf_connector_id(k), scope, hf_action_id(a)));
    }
    hf_json_free(granted);
}

/* The database's checks, on the raw document (so a draft with schema errors is checked too):
 * every catalog connector it uses needs an active connection (and, when Beta in a production
 * tenant, a support approval) and every action the scopes it needs. False when the database
 * failed (replied). */
static bool db_problems(api_ctx *c, const char *text, size_t len, wf_problems *out)
{
    char err[64];
    hf_json doc = hf_json_parse(text, len, err, sizeof err);
    if (!hf_json_is_object(doc)) {
        hf_json_free(doc);
        return true;
    }
    tenant_links l = {0};
    if (!links_load(c, &l)) {
        hf_json_free(doc);
        return false;
    }
    const char *trigger = hf_json_str(hf_json_path(doc, "trigger", "connector", NULL));
    const hf_connector *k = trigger ? hf_catalog_find(c->catalog, trigger) : NULL;
    if (k)
        check_connector_use(c, &l, "trigger", k, out);
    hf_json nodes = hf_json_get(doc, "nodes");
    for (size_t i = 0; i < hf_json_len(nodes); i++) {
        hf_json n = hf_json_at(nodes, i);
        const char *type = hf_json_str(hf_json_get(n, "type"));
        const char *conn = hf_json_str(hf_json_get(n, "connector"));
        if (!type || strcmp(type, "action") != 0 || !conn ||
            !(k = hf_catalog_find(c->catalog, conn)))
            continue;
        char base[32];
        snprintf(base, sizeof base, "nodes[%zu]", i);
        check_connector_use(c, &l, base, k, out);
        const char *action = hf_json_str(hf_json_get(n, "action"));
        const hf_action *a = action ? hf_connector_action(k, action) : NULL;
        if (a)
            check_scopes(&l, base, k, a, out);
    }
    PQclear(l.res);
    hf_json_free(doc);
    return true;
}

/* Every problem of a definition text. False when the database failed (replied). */
static bool collect_problems(api_ctx *c, const char *text, size_t len, wf_problems *out)
{
    wf_validate(text, len, c->catalog, out);
    return db_problems(c, text, len, out);
}

static void problems_json(const wf_problems *p, hf_buf *out)
{
    hf_buf_putc(out, '[');
    for (size_t i = 0; i < p->n; i++) {
        hf_buf_puts(out, i ? ",{\"path\":" : "{\"path\":");
        hf_json_append_cstr(out, p->items[i].path);
        hf_buf_puts(out, ",\"code\":");
        hf_json_append_cstr(out, p->items[i].code);
        hf_buf_puts(out, ",\"message\":");
        hf_json_append_cstr(out, p->items[i].message);
        hf_buf_putc(out, '}');
    }
    hf_buf_putc(out, ']');
}

/* An enabled workflow must validate cleanly. Replies 422 with the problems (or the database
 * error) and returns false otherwise; the caller's transaction is rolled back. */
static bool require_valid(api_ctx *c, const char *text, size_t len)
{
    wf_problems p = {0};
    if (!collect_problems(c, text, len, &p)) {
        wf_problems_free(&p);
        return false;
    }
    bool ok = p.n == 0;
    if (!ok) {
        hf_pg_rollback(c->db);
        hf_buf extra = {0}, detail = {0};
        hf_buf_puts(&extra, "\"problems\":");
        problems_json(&p, &extra);
        hf_buf_printf(&detail,
                      "an enabled workflow must validate: %zu problem%s, the first at "
                      "'%s': %s",
                      p.n, p.n == 1 ? "" : "s", p.items[0].path, p.items[0].message);
        api_reply_error_with(c, 422, "validation_failed", detail.data, extra.data);
        hf_buf_free(&extra);
        hf_buf_free(&detail);
    }
    wf_problems_free(&p);
    return ok;
}

/* ---- create, get, list --------------------------------------------------------------------- */

void api_workflows_create(api_ctx *c)
{
    const char *name = NULL;
    int enabled = -1;
    hf_json defv = body_workflow(c, "definition is required", &name, &enabled);
    if (!defv)
        return;
    definition d;
    if (!definition_load(c, defv, &d)) {
        definition_free(&d);
        return;
    }
    if (!name)
        name = d.def->name;
    PGresult *res = NULL;
    const char *ins[] = {c->who.tenant_id, name, enabled == 1 ? "t" : "f", d.def->trigger_connector,
                         d.def->trigger_event};
    if (!db_begin(c) || (enabled == 1 && !require_valid(c, d.text.data, d.text.len)) ||
        !db_run(c,
                "INSERT INTO workflows (tenant_id, name, enabled, current_version,"
                " trigger_connector, trigger_event) VALUES ($1::uuid, $2, $3::boolean, 1, $4, $5)"
                " RETURNING id",
                5, ins, &res))
        goto done;
    char id[40];
    snprintf(id, sizeof id, "%s", PQgetvalue(res, 0, 0));
    const char *ver[] = {id, d.text.data, c->who.user};
    hf_buf detail = {0};
    hf_buf_puts(&detail, "{\"name\":");
    hf_json_append_cstr(&detail, name);
    hf_buf_printf(&detail, ",\"version\":1,\"enabled\":%s}", enabled == 1 ? "true" : "false");
    bool saved = db_run(c,
                        "INSERT INTO workflow_versions (workflow_id, version, definition,"
                        " created_by) VALUES ($1::uuid, 1, $2::jsonb, $3)",
                        3, ver, NULL) &&
                 audit_or_reply(c, "workflow.created", id, detail.data);
    hf_buf_free(&detail);
    if (saved && db_commit(c))
        reply_workflow(c, id, 201);
done:
    PQclear(res);
    definition_free(&d);
}

void api_workflows_get(api_ctx *c)
{
    const char *id = workflow_id_param(c);
    if (id)
        reply_workflow(c, id, 200);
}

static void reply_bad_param(api_ctx *c, const char *name, const char *why)
{
    char detail[160];
    snprintf(detail, sizeof detail, "%s: %s", name, why);
    api_reply_error(c, 400, "invalid_parameter", detail);
}

/* Reads limit, enabled and cursor; replies 400 and returns false on a bad one. */
static bool list_params(api_ctx *c, long long *limit, const char **enabled, char at[48],
                        char id[40])
{
    char *limit_text = api_query_param(c, "limit");
    char *enabled_text = api_query_param(c, "enabled");
    char *cursor = api_query_param(c, "cursor");
    bool ok = true;
    *limit = LIST_DEFAULT_LIMIT;
    *enabled = NULL;
    at[0] = id[0] = '\0';
    if (limit_text && (!hf_parse_ll(limit_text, limit) || *limit < 1 || *limit > LIST_MAX_LIMIT)) {
        reply_bad_param(c, "limit", "must be a whole number from 1 to 100");
        ok = false;
    } else if (enabled_text && strcmp(enabled_text, "true") != 0 &&
               strcmp(enabled_text, "false") != 0) {
        reply_bad_param(c, "enabled", "must be true or false");
        ok = false;
    } else if (cursor && !api_cursor_decode(cursor, at, id)) {
        reply_bad_param(c, "cursor",
                        "is not a cursor of this listing (pass next_cursor back "
                        "unchanged)");
        ok = false;
    }
    if (enabled_text)
        *enabled = strcmp(enabled_text, "true") == 0 ? "t" : "f";
    free(limit_text);
    free(enabled_text);
    free(cursor);
    return ok;
}

void api_workflows_list(api_ctx *c)
{
    long long limit;
    const char *enabled;
    char at[48], after_id[40], fetch[24];
    if (!list_params(c, &limit, &enabled, at, after_id))
        return;
    snprintf(fetch, sizeof fetch, "%lld", limit + 1);
    const char *params[] = {c->who.tenant_id, enabled, at[0] ? at : NULL,
                            after_id[0] ? after_id : NULL, fetch};
    PGresult *res = NULL;
    if (!db_run(c,
                "SELECT json_build_object(" WORKFLOW_SUMMARY_MEMBERS ")::text, " API_TS(
                    "w.created_at") ", w.id FROM workflows w"
                                    " WHERE w.tenant_id = $1::uuid AND w.deleted_at IS NULL"
                                    " AND ($2::boolean IS NULL OR w.enabled = $2::boolean)"
                                    " AND ($3::timestamptz IS NULL OR (w.created_at, w.id) < "
                                    "($3::timestamptz,"
                                    " $4::uuid))"
                                    " ORDER BY w.created_at DESC, w.id DESC LIMIT $5::integer",
                5, params, &res))
        return;
    int rows = PQntuples(res);
    int shown = rows > limit ? (int)limit : rows;
    hf_buf out = {0};
    hf_buf_puts(&out, "{\"workflows\":[");
    for (int i = 0; i < shown; i++) {
        if (i)
            hf_buf_putc(&out, ',');
        hf_buf_append(&out, PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0));
    }
    hf_buf_puts(&out, "],\"next_cursor\":");
    if (rows > limit) {
        char *next =
            api_cursor_encode(PQgetvalue(res, shown - 1, 1), PQgetvalue(res, shown - 1, 2));
        hf_json_append_cstr(&out, next);
        free(next);
    } else {
        hf_buf_puts(&out, "null");
    }
    hf_buf_putc(&out, '}');
    api_reply_json(c, 200, out.data, out.len);
    hf_buf_free(&out);
    PQclear(res);
}

/* ---- update, enable, disable, delete ------------------------------------------------------- */

/* The locked row of a live workflow: name, enabled, current version, highest version, the
 * current definition and whether it equals $3 (NULL: not compared). NULL (replied 404 or the
 * database error, transaction rolled back) when there is none. */
static PGresult *workflow_lock(api_ctx *c, const char *id, const char *compare_with)
{
    const char *params[] = {id, c->who.tenant_id, compare_with};
    PGresult *res = NULL;
    /* The row lock first, the read after it in a statement of its own: a statement that waited
     * for the lock behind another change of the workflow rechecks only the locked row, joined
     * to the version (and the highest version) it had read before that change committed. */
    if (!db_run(c,
                "SELECT 1 FROM workflows WHERE id = $1::uuid AND tenant_id = $2::uuid"
                " AND deleted_at IS NULL FOR UPDATE",
                2, params, NULL))
        return NULL;
    if (!db_run(c,
                "SELECT w.name, w.enabled, w.current_version,"
                " (SELECT max(x.version) FROM workflow_versions x WHERE x.workflow_id = w.id),"
                " v.definition::text, coalesce(v.definition = $3::jsonb, false)" WORKFLOW_FROM,
                3, params, &res))
        return NULL;
    if (PQntuples(res) == 0) {
        PQclear(res);
        hf_pg_rollback(c->db);
        api_reply_not_found(c, "workflow");
        return NULL;
    }
    return res;
}

/* Saves a new version (when the definition changed), the name and enabled flag, and the audit
 * row, inside the caller's transaction. */
static bool workflow_save(api_ctx *c, const char *id, PGresult *cur, const definition *d,
                          const char *name, bool enabled)
{
    bool same_def = strcmp(PQgetvalue(cur, 0, 5), "t") == 0;
    char version[24];
    snprintf(version, sizeof version, "%lld",
             same_def ? atoll(PQgetvalue(cur, 0, 2)) : atoll(PQgetvalue(cur, 0, 3)) + 1);
    const char *ver[] = {id, version, d->text.data, c->who.user};
    if (!same_def && !db_run(c,
                             "INSERT INTO workflow_versions (workflow_id, version, definition,"
                             " created_by) VALUES ($1::uuid, $2::integer, $3::jsonb, $4)",
                             4, ver, NULL))
        return false;
    const char *upd[] = {
        id, name, enabled ? "t" : "f", version, d->def->trigger_connector, d->def->trigger_event};
    if (!db_run(c,
                "UPDATE workflows SET name = $2, enabled = $3::boolean,"
                " current_version = $4::integer, trigger_connector = $5, trigger_event = $6,"
                " updated_at = now() WHERE id = $1::uuid",
                6, upd, NULL))
        return false;
    hf_buf detail = {0};
    hf_buf_printf(&detail, "{\"version\":%s,\"previous_version\":%s,\"name\":", version,
                  PQgetvalue(cur, 0, 2));
    hf_json_append_cstr(&detail, name);
    hf_buf_printf(&detail, ",\"enabled\":%s,\"new_version\":%s}", enabled ? "true" : "false",
                  same_def ? "false" : "true");
    bool ok = audit_or_reply(c, "workflow.updated", id, detail.data);
    hf_buf_free(&detail);
    return ok;
}

void api_workflows_update(api_ctx *c)
{
    const char *id = workflow_id_param(c);
    const char *name = NULL;
    int enabled = -1;
    hf_json defv =
        id ? body_workflow(c, "definition is required (PUT saves a new version of the definition)",
                           &name, &enabled)
           : NULL;
    if (!defv)
        return;
    definition d;
    PGresult *cur = NULL;
    if (!definition_load(c, defv, &d) || !db_begin(c) || !(cur = workflow_lock(c, id, d.text.data)))
        goto done;
    const char *new_name = name ? name : PQgetvalue(cur, 0, 0);
    bool now_enabled = strcmp(PQgetvalue(cur, 0, 1), "t") == 0;
    bool new_enabled = enabled < 0 ? now_enabled : enabled == 1;
    bool unchanged = strcmp(PQgetvalue(cur, 0, 5), "t") == 0 &&
                     strcmp(new_name, PQgetvalue(cur, 0, 0)) == 0 && new_enabled == now_enabled;
    if (unchanged) {
        if (db_commit(c))
            reply_workflow(c, id, 200);
        goto done;
    }
    if (new_enabled && !require_valid(c, d.text.data, d.text.len))
        goto done;
    if (workflow_save(c, id, cur, &d, new_name, new_enabled) && db_commit(c))
        reply_workflow(c, id, 200);
done:
    PQclear(cur);
    definition_free(&d);
}

static void set_enabled(api_ctx *c, bool on)
{
    static const char *const none[] = {NULL};
    const char *id = workflow_id_param(c);
    bool ok = false;
    if (id)
        (void)body_object(c, none, false, &ok);
    PGresult *cur = NULL;
    if (!ok || !db_begin(c) || !(cur = workflow_lock(c, id, NULL)))
        return;
    if ((strcmp(PQgetvalue(cur, 0, 1), "t") == 0) == on) {
        if (db_commit(c))
            reply_workflow(c, id, 200);
        goto done;
    }
    if (on && !require_valid(c, PQgetvalue(cur, 0, 4), (size_t)PQgetlength(cur, 0, 4)))
        goto done;
    const char *upd[] = {id, on ? "t" : "f"};
    char detail[64];
    snprintf(detail, sizeof detail, "{\"version\":%s}", PQgetvalue(cur, 0, 2));
    if (!db_run(c, "UPDATE workflows SET enabled = $2::boolean, updated_at = now() WHERE id = $1",
                2, upd, NULL))
        goto done;
    if (audit_or_reply(c, on ? "workflow.enabled" : "workflow.disabled", id, detail) &&
        db_commit(c))
        reply_workflow(c, id, 200);
done:
    PQclear(cur);
}

void api_workflows_enable(api_ctx *c)
{
    set_enabled(c, true);
}

void api_workflows_disable(api_ctx *c)
{
    set_enabled(c, false);
}

void api_workflows_delete(api_ctx *c)
{
    const char *id = workflow_id_param(c);
    if (!id || !db_begin(c))
        return;
    const char *params[] = {id, c->who.tenant_id};
    PGresult *res = NULL;
    if (!db_run(c,
                "UPDATE workflows SET deleted_at = now(), enabled = false, updated_at = now()"
                " WHERE id = $1::uuid AND tenant_id = $2::uuid AND deleted_at IS NULL"
                " RETURNING name, current_version",
                2, params, &res))
        return;
    if (PQntuples(res) == 0) {
        hf_pg_rollback(c->db);
        api_reply_not_found(c, "workflow");
        PQclear(res);
        return;
    }
    hf_buf detail = {0};
    hf_buf_puts(&detail, "{\"name\":");
    hf_json_append_cstr(&detail, PQgetvalue(res, 0, 0));
    hf_buf_printf(&detail, ",\"version\":%s}", PQgetvalue(res, 0, 1));
    PQclear(res);
    if (audit_or_reply(c, "workflow.deleted", id, detail.data) && db_commit(c))
        api_reply(c, 204, NULL, NULL, 0);
    hf_buf_free(&detail);
}

/* ---- validate ------------------------------------------------------------------------------ */

/* The stored current version of a live workflow: its number and definition text, or NULL
 * (replied 404 or the database error). */
static PGresult *stored_definition(api_ctx *c, const char *id)
{
    const char *params[] = {id, c->who.tenant_id};
    PGresult *res = NULL;
    if (!db_run(c, "SELECT w.current_version, v.definition::text" WORKFLOW_FROM, 2, params, &res))
        return NULL;
    if (PQntuples(res) == 0) {
        PQclear(res);
        api_reply_not_found(c, "workflow");
        return NULL;
    }
    return res;
}

void api_workflows_validate(api_ctx *c)
{
    static const char *const allowed[] = {"definition", NULL};
    const char *id = workflow_id_param(c);
    bool ok = false;
    hf_json body = id ? body_object(c, allowed, false, &ok) : NULL;
    PGresult *stored = ok ? stored_definition(c, id) : NULL;
    if (!stored)
        return;
    hf_json draft = hf_json_get(body, "definition");
    hf_buf text = {0};
    if (draft)
        hf_json_serialize(draft, &text);
    else
        hf_buf_append(&text, PQgetvalue(stored, 0, 1), (size_t)PQgetlength(stored, 0, 1));
    wf_problems p = {0};
    if (collect_problems(c, text.data, text.len, &p)) {
        hf_buf out = {0};
        hf_buf_printf(&out,
                      "{\"workflow_id\":\"%s\",\"version\":%s,\"draft\":%s,\"valid\":%s,"
                      "\"problems\":",
                      id, draft ? "null" : PQgetvalue(stored, 0, 0), draft ? "true" : "false",
                      p.n == 0 ? "true" : "false");
        problems_json(&p, &out);
        hf_buf_putc(&out, '}');
        api_reply_json(c, 200, out.data, out.len);
        hf_buf_free(&out);
    }
    wf_problems_free(&p);
    hf_buf_free(&text);
    PQclear(stored);
}

/* ---- simulate ------------------------------------------------------------------------------ */

/* The run context is one yajl tree built as the walk goes ({"event", "tenant", "nodes": {}}), so
 * each node's output is parsed once rather than the whole context once per node. */
static hf_json jv_new(yajl_type type)
{
    hf_json v = xcalloc(1, sizeof *v);
    v->type = type;
    return v;
}

/* Adds key: val to object obj, which takes val. */
static void jv_put(hf_json obj, const char *key, hf_json val)
{
    size_t n = obj->u.object.len;
    obj->u.object.keys = xrealloc(obj->u.object.keys, (n + 1) * sizeof *obj->u.object.keys);
    obj->u.object.values = xrealloc(obj->u.object.values, (n + 1) * sizeof *obj->u.object.values);
    obj->u.object.keys[n] = xstrdup(key);
    obj->u.object.values[n] = val;
    obj->u.object.len = n + 1;
}

static hf_json jv_string(const char *s)
{
    hf_json v = jv_new(yajl_t_string);
    v->u.string = xstrdup(s);
    return v;
}

/* A malloc-built copy of part of a parsed (arena-held) tree, so it can be grafted into the run
 * context and freed with it by yajl_tree_free. */
static hf_json jv_copy(hf_json v)
{
    hf_json c = jv_new(v->type);
    if (YAJL_IS_STRING(v)) {
        c->u.string = xstrdup(v->u.string);
    } else if (YAJL_IS_NUMBER(v)) {
        c->u.number = v->u.number;
        c->u.number.r = xstrdup(v->u.number.r);
    } else if (YAJL_IS_ARRAY(v)) {
        c->u.array.values = xcalloc(v->u.array.len + 1, sizeof *c->u.array.values);
        for (size_t i = 0; i < v->u.array.len; i++)
            c->u.array.values[i] = jv_copy(v->u.array.values[i]);
        c->u.array.len = v->u.array.len;
    } else if (YAJL_IS_OBJECT(v)) {
        for (size_t i = 0; i < v->u.object.len; i++)
            jv_put(c, v->u.object.keys[i], jv_copy(v->u.object.values[i]));
    }
    return c;
}

/* Parses JSON text this process produced into a malloc-built tree (free with jv_free); null when
 * it does not parse. */
static hf_json jv_parse(const char *text, size_t len)
{
    char err[64];
    hf_json parsed = text ? hf_json_parse(text, len, err, sizeof err) : NULL;
    hf_json v = parsed ? jv_copy(parsed) : jv_new(yajl_t_null);
    hf_json_free(parsed);
    return v;
}

static void jv_free(hf_json v)
{
    yajl_tree_free(v);
}

typedef enum { SIM_PENDING, SIM_DONE, SIM_SKIPPED, SIM_FAILED, SIM_NOT_SIMULATED } sim_status;

static const char *const sim_status_names[] = {"pending", "succeeded", "skipped", "failed",
                                               "not_simulated"};
static const char *const node_type_names[] = {"action", "condition", "transform", "delay"};

typedef struct sim_node {
    sim_status st;
    hf_buf output; /* JSON; empty = null */
    hf_buf params; /* action: the params after templating */
    char *note;    /* failed: the error; skipped: why */
    int branch;    /* condition: 0/1; -1 otherwise */
    int64_t delay_ms;
    char until[40];
    double ms;
} sim_node;

typedef struct sim_run {
    const wf_def *def;
    const hf_catalog *cat;
    hf_json ctx;   /* owned; ctx.nodes grows */
    hf_json nodes; /* ctx's "nodes" object */
    sim_node *st;
    size_t bytes;
    bool failed;
} sim_run;

static bool sim_should_run(const sim_run *s, size_t idx)
{
    if (s->def->nodes[idx].nin == 0)
        return true;
    for (size_t e = 0; e < s->def->nedges; e++) {
        const wf_edge *edge = &s->def->edges[e];
        const sim_node *src = &s->st[edge->from];
        bool ran = src->st == SIM_DONE || src->st == SIM_NOT_SIMULATED;
        if (edge->to == idx && ran && (edge->when < 0 || edge->when == src->branch))
            return true;
    }
    return false;
}

/* Records a finished or skipped node in the context, as the executor's run context has it (an
 * action that was not simulated counts as succeeded, with a null output). */
static void sim_publish(sim_run *s, size_t idx)
{
    sim_node *n = &s->st[idx];
    hf_json entry = jv_new(yajl_t_object);
    jv_put(entry, "status", jv_string(n->st == SIM_SKIPPED ? "skipped" : "succeeded"));
    jv_put(entry, "output", jv_parse(n->output.data, n->output.len));
    if (n->branch >= 0)
        jv_put(entry, "branch", jv_new(n->branch ? yajl_t_true : yajl_t_false));
    jv_put(s->nodes, s->def->nodes[idx].id, entry);
}

static void sim_fail(sim_node *n, const char *why)
{
    n->st = SIM_FAILED;
    free(n->note);
    n->note = xstrdup(why);
}

/* The rendered params as the connector's request builder takes them on a real run (nothing is
 * sent); false with its reason in err. */
static bool check_rendered_params(const wf_node *wn, const sim_node *n, char *err, size_t errlen)
{
    hf_json params = hf_json_parse(n->params.data ? n->params.data : "{}",
                                   n->params.data ? n->params.len : 2, err, errlen);
    bool ok = params &&
              engine_connector_check_params(wn->connector, wn->action, params, err, errlen) == 0;
    hf_json_free(params);
    return ok;
}

static void sim_action(sim_run *s, const wf_node *wn, sim_node *n)
{
    char err[512];
    if (wf_template_render(wn->params, s->ctx, &n->params, err, sizeof err) != 0) {
        sim_fail(n, err);
        return;
    }
    const hf_connector *k = hf_catalog_find(s->cat, wn->connector);
    const hf_action *a = k ? hf_connector_action(k, wn->action) : NULL;
    if (!a) {
        sim_fail(n, k ? "the connector has no such action" : "unknown connector");
    } else if (!check_rendered_params(wn, n, err, sizeof err)) {
        sim_fail(n, err); /* what the engine's run would fail this node with, before any call */
    } else if (!hf_action_simulatable(a)) {
        /* No Sim badge: reported, never called. */
        n->st = SIM_NOT_SIMULATED;
    } else {
        hf_json sample = hf_json_get(hf_action_json(a), "sample_output");
        if (sample)
            hf_json_serialize(sample, &n->output);
        else
            hf_buf_puts(&n->output, "{}");
        n->st = SIM_DONE;
    }
}

static void sim_delay(sim_run *s, const wf_node *wn, sim_node *n)
{
    int64_t now = hf_wall_ms(), until = now + wn->delay_ms;
    if (wn->until) {
        char err[512];
        hf_buf text = {0};
        if (wf_template_render(wn->until, s->ctx, &text, err, sizeof err) != 0) {
            sim_fail(n, err);
            hf_buf_free(&text);
            return;
        }
        hf_json v = jv_parse(text.data, text.len);
        const char *str = hf_json_str(v);
        bool ok = str && hf_parse_rfc3339(str, &until);
        jv_free(v);
        hf_buf_free(&text);
        if (!ok) {
            sim_fail(n, "until does not render to an RFC 3339 time");
            return;
        }
    }
    /* Reported, not waited. */
    n->delay_ms = until > now ? until - now : 0;
    hf_format_rfc3339(until, n->until, sizeof n->until);
    hf_buf_printf(&n->output, "{\"until\":\"%s\"}", n->until);
    n->st = SIM_DONE;
}

static void sim_node_run(sim_run *s, size_t idx)
{
    const wf_node *wn = &s->def->nodes[idx];
    sim_node *n = &s->st[idx];
    char err[512];
    switch (wn->type) {
    case WF_CONDITION: {
        bool result = false;
        if (wf_expr_eval_bool(wn->condition, s->ctx, &result, err, sizeof err) != 0) {
            sim_fail(n, err);
            return;
        }
        n->branch = result;
        hf_buf_puts(&n->output, result ? "{\"result\":true}" : "{\"result\":false}");
        n->st = SIM_DONE;
        return;
    }
    case WF_TRANSFORM:
        if (wf_template_render(wn->output, s->ctx, &n->output, err, sizeof err) != 0)
            sim_fail(n, err);
        else
            n->st = SIM_DONE;
        return;
    case WF_DELAY:
        sim_delay(s, wn, n);
        return;
    case WF_ACTION:
        sim_action(s, wn, n);
        return;
    }
}

/* Walks the graph like the executor: topological order, a node runs when a taken edge leads to
 * it (roots always), conditions choose the edges, the first failure ends the run. */
static void sim_walk(sim_run *s)
{
    for (size_t k = 0; k < s->def->nnodes; k++) {
        size_t idx = s->def->topo[k];
        sim_node *n = &s->st[idx];
        n->branch = -1;
        if (s->failed) {
            n->st = SIM_SKIPPED;
            n->note = xstrdup("not reached: an earlier node failed");
            continue;
        }
        if (!sim_should_run(s, idx)) {
            n->st = SIM_SKIPPED;
            n->note = xstrdup("no taken edge leads here");
            sim_publish(s, idx);
            continue;
        }
        int64_t t0 = hf_now_us();
        sim_node_run(s, idx);
        n->ms = (double)(hf_now_us() - t0) / 1000.0;
        s->bytes += n->output.len + n->params.len;
        if (n->st != SIM_FAILED && s->bytes > SIM_MAX_OUTPUT_BYTES)
            sim_fail(n, "the simulation's outputs grew past 8 MiB");
        if (n->st == SIM_FAILED)
            s->failed = true;
        else
            sim_publish(s, idx);
    }
}

static void sim_node_json(const sim_run *s, size_t idx, hf_buf *out)
{
    const wf_node *wn = &s->def->nodes[idx];
    const sim_node *n = &s->st[idx];
    hf_buf_puts(out, "{\"id\":");
    hf_json_append_cstr(out, wn->id);
    hf_buf_printf(out, ",\"type\":\"%s\",\"status\":\"%s\"", node_type_names[wn->type],
                  sim_status_names[n->st]);
    if (wn->type == WF_ACTION) {
        const hf_connector *k = hf_catalog_find(s->cat, wn->connector);
        const hf_action *a = k ? hf_connector_action(k, wn->action) : NULL;
        hf_buf_puts(out, ",\"connector\":");
        hf_json_append_cstr(out, wn->connector);
        hf_buf_puts(out, ",\"action\":");
        hf_json_append_cstr(out, wn->action);
        hf_buf_printf(out, ",\"simulatable\":%s,\"params\":%s",
                      a && hf_action_simulatable(a) ? "true" : "false",
                      n->params.len ? n->params.data : "null");
    }
    hf_buf_printf(out, ",\"output\":%s", n->output.len ? n->output.data : "null");
    if (n->branch >= 0)
        hf_buf_printf(out, ",\"branch\":%s", n->branch ? "true" : "false");
    if (wn->type == WF_DELAY && n->st == SIM_DONE)
        hf_buf_printf(out, ",\"delay_ms\":%lld,\"until\":\"%s\"", (long long)n->delay_ms, n->until);
    if (n->note) {
        hf_buf_puts(out, n->st == SIM_FAILED ? ",\"error\":" : ",\"reason\":");
        hf_json_append_cstr(out, n->note);
    }
    hf_buf_printf(out, ",\"duration_ms\":%.3f}", n->ms);
}

static const char *const envelope_keys[] = {"id",         "provider", "event",       "native_type",
                                            "account",    "resource", "occurred_at", "received_at",
                                            "request_id", "payload",  NULL};

/* An object whose members are all envelope members, payload (an object) among them. */
static bool is_envelope(hf_json v)
{
    if (!hf_json_is_object(hf_json_get(v, "payload")))
        return false;
    const char *key;
    for (size_t i = 0; hf_json_member(v, i, &key); i++) {
        bool known = false;
        for (const char *const *k = envelope_keys; *k && !known; k++)
            known = strcmp(*k, key) == 0;
        if (!known)
            return false;
    }
    return true;
}

/* The envelope to simulate with: the body's event (an envelope, its missing members filled in,
 * or just a payload), else the catalog's sample payload of the trigger event. */
static void sim_envelope(api_ctx *c, const wf_def *def, hf_json given, hf_buf *out)
{
    hf_json envelope = is_envelope(given) ? given : NULL;
    hf_json payload = envelope ? hf_json_get(envelope, "payload") : given;
    const hf_connector *k = hf_catalog_find(c->catalog, def->trigger_connector);
    if (!payload && k)
        payload = hf_connector_sample_payload(k, def->trigger_event);
    char now[40];
    hf_format_rfc3339(hf_wall_ms(), now, sizeof now);
    hf_buf_putc(out, '{');
    for (size_t i = 0; envelope_keys[i]; i++) {
        const char *key = envelope_keys[i];
        hf_buf_printf(out, "%s\"%s\":", i ? "," : "", key);
        hf_json v = envelope ? hf_json_get(envelope, key) : NULL;
        if (strcmp(key, "payload") == 0 && !v)
            v = payload;
        if (v) {
            hf_json_serialize(v, out);
        } else if (strcmp(key, "id") == 0) {
            char *sim_id = xasprintf("%s:simulated-%s", def->trigger_connector, c->request_id);
            hf_json_append_cstr(out, sim_id);
            free(sim_id);
        } else if (strcmp(key, "provider") == 0) {
            hf_json_append_cstr(out, def->trigger_connector);
        } else if (strcmp(key, "event") == 0 || strcmp(key, "native_type") == 0) {
            hf_json_append_cstr(out, def->trigger_event);
        } else if (strcmp(key, "account") == 0) {
            hf_buf_puts(out, "\"simulated\"");
        } else if (strcmp(key, "occurred_at") == 0 || strcmp(key, "received_at") == 0) {
            hf_buf_printf(out, "\"%s\"", now);
        } else if (strcmp(key, "request_id") == 0) {
            hf_json_append_cstr(out, c->request_id);
        } else if (strcmp(key, "payload") == 0) {
            hf_buf_puts(out, "{}");
        } else {
            hf_buf_puts(out, "null");
        }
    }
    hf_buf_putc(out, '}');
}

/* {"id","slug","name","environment"} of the caller's tenant, or NULL (replied). */
static char *sim_tenant(api_ctx *c)
{
    const char *params[] = {c->who.tenant_id};
    PGresult *res = NULL;
    if (!db_run(c,
                "SELECT json_build_object('id', id, 'slug', slug, 'name', name,"
                " 'environment', environment)::text FROM tenants WHERE id = $1::uuid",
                1, params, &res))
        return NULL;
    char *out = PQntuples(res) ? xstrdup(PQgetvalue(res, 0, 0)) : NULL;
    PQclear(res);
    if (!out)
        api_reply_not_found(c, "tenant");
    return out;
}

/* Evaluates the trigger filter on the fresh context; appends the trigger's JSON members. */
static bool sim_filter(sim_run *s, hf_buf *out)
{
    hf_json filter_text = hf_json_path(s->def->doc, "trigger", "filter", NULL);
    bool matched = true;
    char err[512] = "";
    int rc =
        s->def->filter ? wf_expr_eval_bool(s->def->filter, s->ctx, &matched, err, sizeof err) : 0;
    if (rc != 0)
        matched = false;
    hf_buf_puts(out, "\"trigger\":{\"connector\":");
    hf_json_append_cstr(out, s->def->trigger_connector);
    hf_buf_puts(out, ",\"event\":");
    hf_json_append_cstr(out, s->def->trigger_event);
    hf_buf_puts(out, ",\"filter\":");
    hf_json_serialize(hf_json_str(filter_text) ? filter_text : NULL, out);
    hf_buf_printf(out, ",\"matched\":%s", matched ? "true" : "false");
    if (rc != 0) {
        hf_buf_puts(out, ",\"error\":");
        hf_json_append_cstr(out, err);
    }
    hf_buf_putc(out, '}');
    return matched;
}

/* Runs def on the envelope for the tenant and appends the result's members. */
static void sim_execute(api_ctx *c, const wf_def *def, const char *envelope, const char *tenant,
                        hf_buf *out)
{
    sim_run s = {.def = def, .cat = c->catalog};
    s.st = xcalloc(def->nnodes, sizeof *s.st);
    s.ctx = jv_new(yajl_t_object);
    jv_put(s.ctx, "event", jv_parse(envelope, strlen(envelope)));
    jv_put(s.ctx, "tenant", jv_parse(tenant, strlen(tenant)));
    s.nodes = jv_new(yajl_t_object);
    jv_put(s.ctx, "nodes", s.nodes);
    hf_buf_puts(out, ",\"event\":");
    hf_buf_puts(out, envelope);
    hf_buf_putc(out, ',');
    bool matched = sim_filter(&s, out);
    sim_walk(&s);
    hf_buf_printf(out, ",\"would_run\":%s,\"status\":\"%s\",\"nodes\":[",
                  matched ? "true" : "false", s.failed ? "failed" : "succeeded");
    for (size_t k = 0; k < def->nnodes; k++) {
        if (k)
            hf_buf_putc(out, ',');
        sim_node_json(&s, def->topo[k], out);
    }
    hf_buf_putc(out, ']');
    for (size_t i = 0; i < def->nnodes; i++) {
        hf_buf_free(&s.st[i].output);
        hf_buf_free(&s.st[i].params);
        free(s.st[i].note);
    }
    free(s.st);
    jv_free(s.ctx);
}

void api_workflows_simulate(api_ctx *c)
{
    static const char *const allowed[] = {"event", "definition", NULL};
    const char *id = workflow_id_param(c);
    bool ok = false;
    hf_json body = id ? body_object(c, allowed, false, &ok) : NULL;
    hf_json event = hf_json_get(body, "event"), draft = hf_json_get(body, "definition");
    if (ok && event && !hf_json_is_object(event)) {
        api_reply_error(c, 400, "invalid_field",
                        "event must be an object: an envelope or just its payload");
        return;
    }
    PGresult *stored = ok ? stored_definition(c, id) : NULL;
    if (!stored)
        return;
    definition d;
    memset(&d, 0, sizeof d);
    char *tenant = NULL;
    char err[512];
    if (draft) {
        if (!definition_load(c, draft, &d))
            goto done;
    } else if (!(d.def = wf_parse(PQgetvalue(stored, 0, 1), (size_t)PQgetlength(stored, 0, 1), err,
                                  sizeof err))) {
        api_reply_error(c, 409, "invalid_definition", err);
        goto done;
    }
    if (!(tenant = sim_tenant(c)))
        goto done;
    hf_buf envelope = {0}, out = {0};
    sim_envelope(c, d.def, event, &envelope);
    hf_buf_printf(&out, "{\"workflow_id\":\"%s\",\"version\":%s,\"draft\":%s,\"simulated\":true",
                  id, draft ? "null" : PQgetvalue(stored, 0, 0), draft ? "true" : "false");
    sim_execute(c, d.def, envelope.data, tenant, &out);
    hf_buf_putc(&out, '}');
    api_reply_json(c, 200, out.data, out.len);
    hf_buf_free(&out);
    hf_buf_free(&envelope);
done:
    free(tenant);
    definition_free(&d);
    PQclear(stored);
}
