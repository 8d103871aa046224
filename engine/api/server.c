/* server: `hookflow-engine serve`, the admin HTTP API — its settings, the router (method + path
 * pattern -> handler, bearer token, admin role), one PostgreSQL connection per event-loop thread,
 * request parsing (JSON object bodies; malformed ones get the byte position), consistent JSON
 * errors, request ids, JSON access logs, /healthz /readyz /metrics, and the api_* helpers. */
#include "api.h"

#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <ctype.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "crypto.h"
#include "engine_cli.h"
#include "http_server.h"
#include "log.h"
#include "metrics.h"
#include "pg.h"

/* ---- settings ------------------------------------------------------------------------------ */

typedef struct api_config {
    char *database_url;
    char *listen;
    char *secrets_dir;
    char *public_url;
    char *log_level;
    char *log_format;
    long long threads;
    long long max_body_bytes;
    long long max_header_bytes;
    long long max_connections;
    long long client_timeout_ms;
    long long statement_timeout_ms;
    long long shutdown_timeout_ms;
} api_config;

static const hf_cfg_item api_config_items[] = {
    HF_CFG_STR("HOOKFLOW_DATABASE_URL", NULL, api_config, database_url,
               "PostgreSQL conninfo or URI"),
    HF_CFG_LST("HOOKFLOW_API_LISTEN", "0.0.0.0:8081", api_config, listen,
               "address the API listens on (port 0 picks a free one)"),
    HF_CFG_NUM("HOOKFLOW_API_THREADS", "0", 0, 256, api_config, threads,
               "event-loop threads, each with its own PostgreSQL connection (0 = one per core)"),
    HF_CFG_STR("HOOKFLOW_SECRETS_DIR", "/run/secrets/hookflow", api_config, secrets_dir,
               "directory of secret files: api/jwt_key (required), engine/token_key, "
               "<provider>/client_id ..."),
    HF_CFG_STR("HOOKFLOW_API_PUBLIC_URL", "", api_config, public_url,
               "the API's public address for OAuth redirects (default: http://<listen>)"),
    HF_CFG_NUM("HOOKFLOW_API_MAX_BODY_BYTES", "1048576", 1024, 64LL << 20, api_config,
               max_body_bytes, "largest request body accepted (413 above)"),
    HF_CFG_NUM("HOOKFLOW_API_MAX_HEADER_BYTES", "16384", 1024, 1 << 20, api_config,
               max_header_bytes, "largest request line + headers accepted"),
    HF_CFG_NUM("HOOKFLOW_API_MAX_CONNECTIONS", "1024", 1, 1000000, api_config, max_connections,
               "open connections before accepting pauses"),
    HF_CFG_NUM("HOOKFLOW_API_CLIENT_TIMEOUT_MS", "30000", 100, 600000, api_config,
               client_timeout_ms, "read/write inactivity timeout for slow or idle clients"),
    HF_CFG_NUM("HOOKFLOW_API_STATEMENT_TIMEOUT_MS", "15000", 100, 600000, api_config,
               statement_timeout_ms, "PostgreSQL statement_timeout of the API's sessions"),
    HF_CFG_CHOICE("HOOKFLOW_LOG_LEVEL", "info",
                  ((const char *const[]){"debug", "info", "warn", "error", NULL}), api_config,
                  log_level, "log level"),
    HF_CFG_CHOICE("HOOKFLOW_LOG_FORMAT", "json", ((const char *const[]){"json", "text", NULL}),
                  api_config, log_format, "log format"),
    HF_CFG_NUM("HOOKFLOW_SHUTDOWN_TIMEOUT_MS", "10000", 0, 600000, api_config, shutdown_timeout_ms,
               "how long SIGTERM waits for requests in progress"),
};

/* ---- the router ---------------------------------------------------------------------------- */

typedef enum {
    ROUTE_OPEN,  /* no bearer token (the handler authenticates the request itself) */
    ROUTE_ANY,   /* a valid token; the handler decides what the role may do */
    ROUTE_ADMIN, /* a valid token and the admin role in the token's branch */
} route_access;

typedef struct api_route {
    const char *method;
    const char *pattern; /* literal segments and {name} segments */
    api_handler handler;
    route_access access;
} api_route;

/* First match wins: literal routes come before the {id} route they would also match. */
static const api_route routes[] = {
    {"GET", "/api/workflows/catalog", api_catalog_get, ROUTE_ADMIN},
    {"GET", "/api/workflows", api_workflows_list, ROUTE_ADMIN},
    {"POST", "/api/workflows", api_workflows_create, ROUTE_ADMIN},
    {"GET", "/api/workflows/{id}", api_workflows_get, ROUTE_ADMIN},
    {"PUT", "/api/workflows/{id}", api_workflows_update, ROUTE_ADMIN},
    {"DELETE", "/api/workflows/{id}", api_workflows_delete, ROUTE_ADMIN},
    {"POST", "/api/workflows/{id}/enable", api_workflows_enable, ROUTE_ADMIN},
    {"POST", "/api/workflows/{id}/disable", api_workflows_disable, ROUTE_ADMIN},
    {"POST", "/api/workflows/{id}/validate", api_workflows_validate, ROUTE_ADMIN},
    {"POST", "/api/workflows/{id}/simulate", api_workflows_simulate, ROUTE_ADMIN},
    {"GET", "/api/workflows/{id}/runs", api_runs_list, ROUTE_ADMIN},
    {"GET", "/api/runs/{id}", api_runs_get, ROUTE_ADMIN},
    {"POST", "/api/runs/{id}/retry", api_runs_retry, ROUTE_ADMIN},
    {"GET", "/api/integrations", api_integrations_list, ROUTE_ADMIN},
    {"GET", "/api/integrations/{connector}", api_integrations_get, ROUTE_ADMIN},
    {"POST", "/api/integrations/{connector}/oauth/start", api_integrations_oauth_start,
     ROUTE_ADMIN},
    /* The platform redirects the admin's browser here: the OAuth state authenticates it. */
    {"GET", "/api/integrations/{connector}/oauth/callback", api_integrations_oauth_callback,
     ROUTE_OPEN},
    {"PUT", "/api/integrations/{connector}/credentials", api_integrations_credentials, ROUTE_ADMIN},
    {"POST", "/api/integrations/{connector}/enable", api_integrations_enable, ROUTE_ADMIN},
    {"POST", "/api/integrations/{connector}/disable", api_integrations_disable, ROUTE_ADMIN},
    /* Support staff approve Beta connectors; they are not the tenant's admins. */
    {"POST", "/api/integrations/{connector}/approval", api_integrations_approve, ROUTE_ANY},
};

#define MAX_PARAMS 4

typedef struct path_seg {
    const char *p;
    size_t n;
} path_seg;

/* Matches path against pattern segment by segment; {name} takes one non-empty segment. */
static bool path_match(const char *pattern, const char *path, path_seg *params, size_t *nparams)
{
    size_t np = 0;
    const char *a = pattern, *b = path;
    for (;;) {
        if (*a != '/' || *b != '/')
            return false;
        a++;
        b++;
        size_t la = strcspn(a, "/"), lb = strcspn(b, "/");
        if (*a == '{') {
            if (lb == 0 || np == MAX_PARAMS)
                return false;
            params[np++] = (path_seg){b, lb};
        } else if (la != lb || memcmp(a, b, la) != 0) {
            return false;
        }
        a += la;
        b += lb;
        if (!*a || !*b) {
            *nparams = np;
            return !*a && !*b;
        }
    }
}

/* ---- the server ---------------------------------------------------------------------------- */

/* One thread's database session, kept across requests; the list is freed at exit. */
typedef struct db_slot {
    PGconn *db;
    int64_t failed_at_ms; /* last failed connect: retried at most once a second */
    struct db_slot *next;
} db_slot;

/* What the secrets directory held at start or at the last SIGHUP. A request holds a reference
 * from start to end, so a reload never frees what a request still reads. */
typedef struct api_secrets {
    atomic_int refs;
    hf_secrets *secrets;
    engine_keyring *keys; /* NULL without engine/token_key */
    const unsigned char *jwt_keys[2];
    size_t jwt_lens[2];
    size_t njwt;
} api_secrets;

typedef struct api_server {
    const api_config *cfg;
    hf_catalog *catalog;
    api_secrets *secrets; /* the current set: taken under lock */
    char *public_url;
    hf_metrics *metrics;
    pthread_mutex_t lock; /* guards slots and secrets */
    db_slot *slots;
    atomic_int in_flight;
} api_server;

static void secrets_release(api_secrets *set)
{
    if (!set || atomic_fetch_sub(&set->refs, 1) != 1)
        return;
    engine_keyring_free(set->keys);
    hf_secrets_free(set->secrets);
    free(set);
}

/* One request; api_ctx is its first member and handlers only see that. */
typedef struct api_request {
    api_ctx c;
    api_server *srv;
    api_secrets *secrets; /* referenced for the request's life */
    const api_route *route;
    const char *route_name; /* the pattern, or a fixed name, for logs and metrics */
    char *params[MAX_PARAMS];
    char *body_copy;
    int status;
    bool replied;
    int64_t started_us;
    const char *auth_note; /* why a token was refused, for the log */
} api_request;

static _Thread_local db_slot *tls_slot;
static _Thread_local api_request *tls_request;

/* The request behind c, or NULL when c was not made by the dispatcher (a unit test's). */
static api_request *request_of(const api_ctx *c)
{
    return tls_request && &tls_request->c == c ? tls_request : NULL;
}

/* ---- helpers of api.h ---------------------------------------------------------------------- */

bool api_is_uuid(const char *s)
{
    if (!s || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        char ch = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (ch != '-')
                return false;
        } else if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
                     (ch >= 'A' && ch <= 'F'))) {
            return false;
        }
    }
    return true;
}

void api_set_header(api_ctx *c, const char *name, const char *value)
{
    evhttp_add_header(evhttp_request_get_output_headers(c->req), name, value);
}

const char *api_header(const api_ctx *c, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(c->req), name);
}

void api_reply(api_ctx *c, int status, const char *content_type, const void *body, size_t len)
{
    api_request *r = request_of(c);
    if (r) {
        if (r->replied) {
            hf_log_kv(HF_LOG_ERROR, "api.double_reply", "request_id", c->request_id, "route",
                      r->route_name, NULL);
            return;
        }
        r->replied = true;
        r->status = status;
    }
    struct evkeyvalq *out = evhttp_request_get_output_headers(c->req);
    /* Answers carry tenant data: nothing is cached unless the handler says otherwise. */
    if (!evhttp_find_header(out, "Cache-Control"))
        evhttp_add_header(out, "Cache-Control", "no-store");
    hf_http_reply(c->req, status, content_type, body, len);
}

void api_reply_json(api_ctx *c, int status, const char *json, size_t len)
{
    api_reply(c, status, "application/json", json, len);
}

void api_reply_error_with(api_ctx *c, int status, const char *error, const char *detail,
                          const char *extra_members)
{
    hf_buf b = {0};
    hf_http_error_json(&b, error, detail, extra_members);
    api_reply_json(c, status, b.data, b.len);
    hf_buf_free(&b);
}

void api_reply_error(api_ctx *c, int status, const char *error, const char *detail)
{
    api_reply_error_with(c, status, error, detail, NULL);
}

void api_reply_internal(api_ctx *c, const char *cause)
{
    hf_log_kv(HF_LOG_ERROR, "api.internal_error", "request_id", c->request_id, "path",
              c->path ? c->path : "", "cause", cause ? cause : "", NULL);
    char detail[96];
    snprintf(detail, sizeof detail, "request %s failed; the server log has the cause",
             c->request_id);
    api_reply_error(c, 500, "internal", detail);
}

void api_reply_not_found(api_ctx *c, const char *what)
{
    char detail[160];
    snprintf(detail, sizeof detail, "%s not found", what && *what ? what : "resource");
    api_reply_error(c, 404, "not_found", detail);
}

char *api_query_param(const api_ctx *c, const char *name)
{
    if (!c->query || !*c->query)
        return NULL;
    /* Pair by pair, so that a member without '=' ("&verbose") is just a key with an empty
     * value: evhttp_parse_query_str refuses the whole query then, which dropped every filter. */
    size_t nlen = strlen(name);
    for (const char *p = c->query; *p;) {
        size_t len = strcspn(p, "&");
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        char *raw = xstrndup(p, klen);
        char *key = evhttp_uridecode(raw, 1, NULL);
        free(raw);
        bool match = key && strlen(key) == nlen && memcmp(key, name, nlen) == 0;
        free(key);
        if (match) {
            const char *v = eq ? eq + 1 : p + len;
            raw = xstrndup(v, (size_t)(p + len - v));
            char *value = evhttp_uridecode(raw, 1, NULL);
            free(raw);
            return value;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    return NULL;
}

/* At most 100 bytes of s, cut on a UTF-8 boundary, with "..." when cut. */
static void append_quoted_key(hf_buf *out, const char *s, bool as_json)
{
    size_t n = strlen(s), keep = n;
    if (n > 100) {
        keep = 100;
        while (keep > 0 && ((unsigned char)s[keep] & 0xc0) == 0x80)
            keep--;
    }
    if (as_json) {
        hf_json_append_string(out, s, keep);
        return;
    }
    hf_buf_append(out, s, keep);
    if (keep < n)
        hf_buf_puts(out, "...");
}

bool api_check_members(api_ctx *c, hf_json obj, const char *const *allowed)
{
    hf_buf names = {0}, list = {0};
    const char *key;
    size_t unknown = 0;
    for (size_t i = 0; hf_json_member(obj, i, &key); i++) {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, key) == 0;
        if (ok || ++unknown > 20)
            continue;
        hf_buf_puts(&names, names.len ? ", " : "unknown field(s): ");
        append_quoted_key(&names, key, false);
        hf_buf_puts(&list, list.len ? "," : "\"fields\":[");
        append_quoted_key(&list, key, true);
    }
    bool clean = names.len == 0;
    if (!clean) {
        hf_buf allowed_text = {0};
        for (const char *const *a = allowed; *a; a++)
            hf_buf_printf(&allowed_text, "%s%s", allowed_text.len ? ", " : "", *a);
        hf_buf_printf(&names, " (allowed: %s)", allowed_text.len ? allowed_text.data : "none");
        hf_buf_putc(&list, ']');
        api_reply_error_with(c, 400, "unknown_field", names.data, list.data);
        hf_buf_free(&allowed_text);
    }
    hf_buf_free(&names);
    hf_buf_free(&list);
    return clean;
}

int api_body_object(api_ctx *c, const char *const *allowed, hf_json *out)
{
    *out = NULL;
    if (!c->json)
        return 0;
    if (!hf_json_is_object(c->json)) {
        api_reply_error(c, 400, "invalid_body", "the body must be a JSON object");
        return -1;
    }
    if (!api_check_members(c, c->json, allowed))
        return -1;
    /* {"from":"failed_node","from":"start"} means nothing definite: refuse it. */
    const char *twice = hf_json_repeated_key(c->json);
    if (twice) {
        hf_buf d = {0};
        hf_buf_puts(&d, "the field \"");
        hf_buf_put_quoted(&d, twice, 60);
        hf_buf_puts(&d, "\" appears more than once");
        api_reply_error(c, 400, "duplicate_field", d.data);
        hf_buf_free(&d);
        return -1;
    }
    *out = c->json;
    return 0;
}

int api_audit(api_ctx *c, const char *action, const char *subject_type, const char *subject_id,
              const char *detail_json)
{
    const char *params[] = {c->who.tenant_id[0] ? c->who.tenant_id : NULL,
                            c->who.user[0] ? c->who.user : "anonymous",
                            action,
                            subject_type,
                            subject_id,
                            detail_json,
                            c->request_id,
                            c->who.branch[0] ? c->who.branch : NULL};
    char err[256];
    int rc = hf_pg_exec(c->db,
                        "INSERT INTO audit_log (tenant_id, actor, action, subject_type, subject_id,"
                        " detail) VALUES ($1::uuid, $2, $3, $4, $5,"
                        " coalesce($6::jsonb, '{}'::jsonb) || jsonb_strip_nulls("
                        "  jsonb_build_object('request_id', $7::text, 'branch', $8::text)))",
                        8, params, NULL, err, sizeof err);
    if (rc != HF_PG_OK) {
        hf_log_kv(HF_LOG_ERROR, "api.audit_failed", "request_id", c->request_id, "action", action,
                  "error", err, NULL);
        return -1;
    }
    return 0;
}

int api_audit_commit(api_ctx *c, const char *action, const char *subject_type,
                     const char *subject_id, const char *detail_json, char *err, size_t errlen)
{
    if (api_audit(c, action, subject_type, subject_id, detail_json) != 0) {
        hf_err(err, errlen, "audit failed");
        hf_pg_rollback(c->db);
        return -1;
    }
    if (hf_pg_commit(c->db, err, errlen) == HF_PG_OK)
        return 0;
    hf_pg_rollback(c->db); /* a no-op unless the failed COMMIT left the transaction open */
    return -1;
}

/* ---- database sessions --------------------------------------------------------------------- */

/* This thread's session, connecting (again) when there is none or it was lost. NULL with err
 * when PostgreSQL cannot be reached. */
static PGconn *thread_db(api_server *s, char *err, size_t errlen)
{
    if (!tls_slot) {
        tls_slot = xcalloc(1, sizeof *tls_slot);
        pthread_mutex_lock(&s->lock);
        tls_slot->next = s->slots;
        s->slots = tls_slot;
        pthread_mutex_unlock(&s->lock);
    }
    db_slot *slot = tls_slot;
    if (slot->db && !hf_pg_connection_lost(slot->db))
        return slot->db;
    if (slot->db) {
        PQfinish(slot->db);
        slot->db = NULL;
    }
    /* While PostgreSQL is down each thread tries once a second instead of on every request. */
    int64_t now = hf_now_ms();
    if (slot->failed_at_ms && now - slot->failed_at_ms < 1000) {
        hf_err(err, errlen, "PostgreSQL is unreachable (retrying)");
        return NULL;
    }
    PGconn *db = NULL;
    if (hf_pg_connect(s->cfg->database_url, "hookflow-api", &db, err, errlen) != HF_PG_OK) {
        slot->failed_at_ms = now;
        hf_log_kv(HF_LOG_WARN, "api.db_unavailable", "error", err, NULL);
        return NULL;
    }
    char timeout[32];
    snprintf(timeout, sizeof timeout, "%lld", s->cfg->statement_timeout_ms);
    const char *params[] = {timeout};
    if (hf_pg_exec(db, "SELECT set_config('statement_timeout', $1, false)", 1, params, NULL, err,
                   errlen) != HF_PG_OK) {
        PQfinish(db);
        slot->failed_at_ms = now;
        return NULL;
    }
    slot->failed_at_ms = 0;
    slot->db = db;
    return db;
}

/* After a request: a transaction a handler left open is rolled back; a lost session dropped. */
static void thread_db_release(api_request *r)
{
    db_slot *slot = tls_slot;
    if (!slot || !slot->db)
        return;
    PGTransactionStatusType ts = PQtransactionStatus(slot->db);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
        hf_log_kv(HF_LOG_WARN, "api.open_transaction", "request_id", r->c.request_id, "route",
                  r->route_name, NULL);
        hf_pg_rollback(slot->db);
    }
    if (hf_pg_connection_lost(slot->db)) {
        PQfinish(slot->db);
        slot->db = NULL;
    }
}

/* ---- request parsing ----------------------------------------------------------------------- */

/* A strict RFC 8259 syntax scan that finds where a body stops being JSON, because yajl's
 * messages carry no offset and its byte count lands past the offending token. */
typedef struct json_scan {
    const unsigned char *s;
    size_t n, i;
    int depth;
} json_scan;

static bool scan_value(json_scan *j);

static void scan_ws(json_scan *j)
{
    while (j->i < j->n && strchr(" \t\r\n", j->s[j->i]) && j->s[j->i])
        j->i++;
}

/* One UTF-8 sequence at j->i (shortest form, no surrogates, at most U+10FFFF). */
static bool scan_utf8(json_scan *j)
{
    unsigned c = j->s[j->i], cp, min;
    size_t len;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        len = 3, cp = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07, min = 0x10000;
    else
        return false;
    if (j->i + len > j->n)
        return false;
    for (size_t k = 1; k < len; k++) {
        if ((j->s[j->i + k] & 0xc0) != 0x80)
            return false;
        cp = cp << 6 | (j->s[j->i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return false;
    j->i += len;
    return true;
}

/* \uXXXX at j->i (the backslash); *cp receives the code unit. */
static bool scan_u_escape(json_scan *j, unsigned *cp)
{
    if (j->i + 6 > j->n || j->s[j->i + 1] != 'u')
        return false;
    *cp = 0;
    for (size_t k = 2; k < 6; k++) {
        unsigned char h = j->s[j->i + k];
        int v = h >= '0' && h <= '9'   ? h - '0'
                : h >= 'a' && h <= 'f' ? h - 'a' + 10
                : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                       : -1;
        if (v < 0)
            return false;
        *cp = *cp << 4 | (unsigned)v;
    }
    return true;
}

static bool scan_string(json_scan *j)
{
    j->i++;
    while (j->i < j->n) {
        unsigned char c = j->s[j->i];
        if (c == '"') {
            j->i++;
            return true;
        }
        if (c < 0x20)
            return false;
        if (c >= 0x80) {
            if (!scan_utf8(j))
                return false;
            continue;
        }
        if (c != '\\') {
            j->i++;
            continue;
        }
        if (j->i + 1 < j->n && strchr("\"\\/bfnrt", j->s[j->i + 1]) && j->s[j->i + 1]) {
            j->i += 2;
            continue;
        }
        unsigned cp, lo;
        /* \u0000 would cut strings short; a surrogate must come as a pair. */
        if (!scan_u_escape(j, &cp) || cp == 0 || (cp >= 0xdc00 && cp <= 0xdfff))
            return false;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            size_t at = j->i;
            j->i += 6;
            if (!scan_u_escape(j, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                j->i = at;
                return false;
            }
        }
        j->i += 6;
    }
    return false;
}

static bool scan_digits(json_scan *j)
{
    size_t start = j->i;
    while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9')
        j->i++;
    return j->i > start;
}

static bool scan_number(json_scan *j)
{
    if (j->s[j->i] == '-')
        j->i++;
    if (j->i < j->n && j->s[j->i] == '0')
        j->i++;
    else if (!scan_digits(j))
        return false;
    if (j->i < j->n && j->s[j->i] == '.') {
        j->i++;
        if (!scan_digits(j))
            return false;
    }
    if (j->i < j->n && (j->s[j->i] == 'e' || j->s[j->i] == 'E')) {
        j->i++;
        if (j->i < j->n && (j->s[j->i] == '+' || j->s[j->i] == '-'))
            j->i++;
        if (!scan_digits(j))
            return false;
    }
    return true;
}

static bool scan_literal(json_scan *j, const char *word)
{
    for (; *word; word++, j->i++)
        if (j->i >= j->n || j->s[j->i] != (unsigned char)*word)
            return false;
    return true;
}

/* An object or array at j->i; close is '}' or ']'. */
static bool scan_container(json_scan *j, unsigned char close)
{
    if (++j->depth > HF_JSON_MAX_DEPTH)
        return false;
    j->i++;
    scan_ws(j);
    if (j->i < j->n && j->s[j->i] == close) {
        j->i++;
        j->depth--;
        return true;
    }
    for (;;) {
        scan_ws(j);
        if (close == '}') {
            if (j->i >= j->n || j->s[j->i] != '"' || !scan_string(j))
                return false;
            scan_ws(j);
            if (j->i >= j->n || j->s[j->i] != ':')
                return false;
            j->i++;
        }
        if (!scan_value(j))
            return false;
        scan_ws(j);
        if (j->i < j->n && j->s[j->i] == ',') {
            j->i++;
            continue;
        }
        if (j->i >= j->n || j->s[j->i] != close)
            return false;
        j->i++;
        j->depth--;
        return true;
    }
}

static bool scan_value(json_scan *j)
{
    scan_ws(j);
    if (j->i >= j->n)
        return false;
    unsigned char c = j->s[j->i];
    if (c == '{' || c == '[')
        return scan_container(j, c == '{' ? '}' : ']');
    if (c == '"')
        return scan_string(j);
    if (c == '-' || (c >= '0' && c <= '9'))
        return scan_number(j);
    if (c == 't')
        return scan_literal(j, "true");
    if (c == 'f')
        return scan_literal(j, "false");
    if (c == 'n')
        return scan_literal(j, "null");
    return false;
}

/* Where text stops being JSON: the offset of the first offending byte (len for a premature
 * end), or the offset hf_json_parse's message names, or -1 when neither knows. */
static long json_error_offset(const char *text, size_t len, const char *err)
{
    json_scan j = {(const unsigned char *)text, len, 0, 0};
    bool ok = scan_value(&j);
    if (ok)
        scan_ws(&j);
    if (!ok || j.i < len)
        return (long)j.i;
    const char *at = strstr(err, "at offset ");
    return at ? strtol(at + 10, NULL, 10) : -1;
}

static bool is_json_media_type(const char *ct)
{
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    return (n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
           (n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0);
}

/* Parses a POST/PUT body into c->json (NULL when the body is empty or blank). Replies and
 * returns false when it is not a JSON object. */
static bool parse_body(api_request *r)
{
    api_ctx *c = &r->c;
    size_t i = 0;
    while (i < c->body_len && strchr(" \t\r\n", c->body[i]))
        i++;
    if (i == c->body_len)
        return true;
    const char *ct = api_header(c, "Content-Type");
    if (ct && !is_json_media_type(ct)) {
        api_reply_error(c, 415, "unsupported_media_type", "the body must be application/json");
        return false;
    }
    char err[256];
    c->json = hf_json_parse(c->body, c->body_len, err, sizeof err);
    if (!c->json) {
        long pos = json_error_offset(c->body, c->body_len, err);
        char detail[400], extra[48] = "";
        const char *why = strncmp(err, "malformed JSON: ", 16) == 0 ? err + 16 : err;
        if (pos >= 0) {
            snprintf(detail, sizeof detail, "malformed JSON at byte %ld: %s", pos, why);
            snprintf(extra, sizeof extra, "\"position\":%ld", pos);
        } else {
            snprintf(detail, sizeof detail, "malformed JSON: %s", why);
        }
        api_reply_error_with(c, 400, "malformed_json", detail, extra);
        return false;
    }
    if (!hf_json_is_object(c->json)) {
        api_reply_error(c, 400, "invalid_body", "the body must be a JSON object");
        return false;
    }
    return true;
}

/* Decodes the {param} segments; a segment that decodes to a NUL or '/' matches nothing. */
static bool decode_params(api_request *r, const path_seg *segs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *raw = xstrndup(segs[i].p, segs[i].n);
        size_t len = 0;
        char *dec = evhttp_uridecode(raw, 0, &len);
        free(raw);
        if (!dec)
            return false;
        r->params[i] = dec;
        r->c.params[i] = dec;
        r->c.nparams = i + 1;
        if (len != strlen(dec) || strchr(dec, '/') || len == 0)
            return false;
    }
    return true;
}

/* The HTTP server's prepare hook, first for every request (the refusals the server makes
 * itself included): its X-Request-Id answer header, the id the client sent (1..39 safe
 * characters), else a random one. serve_request reads it back. */
static void request_id_prepare(struct evhttp_request *req, void *arg)
{
    (void)arg;
    char id[sizeof((api_ctx *)0)->request_id];
    const char *given = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id");
    size_t n = given ? strlen(given) : 0;
    bool ok = n > 0 && n < sizeof id;
    for (size_t i = 0; ok && i < n; i++) {
        char ch = given[i];
        ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '-' || ch == '_' || ch == '.';
    }
    if (ok) {
        memcpy(id, given, n + 1);
    } else {
        unsigned char raw[16];
        hf_random_bytes(raw, sizeof raw);
        hf_hex_encode(raw, sizeof raw, id);
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Request-Id", id);
}

static const char *method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_TRACE:
        return "TRACE";
    case EVHTTP_REQ_CONNECT:
        return "CONNECT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    }
    return "OTHER";
}

/* ---- authentication ------------------------------------------------------------------------ */

static void reply_unauthorized(api_request *r, const char *why)
{
    char challenge[256];
    if (why)
        snprintf(challenge, sizeof challenge,
                 "Bearer realm=\"hookflow\", error=\"invalid_token\", error_description=\"%s\"",
                 why);
    else
        snprintf(challenge, sizeof challenge, "Bearer realm=\"hookflow\"");
    api_set_header(&r->c, "WWW-Authenticate", challenge);
    api_reply_error(&r->c, 401, "unauthorized", why ? why : "a bearer token is required");
}

/* Verifies the bearer token and loads the caller's role; replies (401/403/503) and returns
 * false when the request may not go on. */
static bool authenticate(api_request *r)
{
    api_ctx *c = &r->c;
    size_t n = 0;
    const char *token = api_bearer_token(api_header(c, "Authorization"), &n);
    if (!token) {
        r->auth_note = "no bearer token";
        reply_unauthorized(r, NULL);
        return false;
    }
    api_jwt_claims claims;
    char err[160];
    const api_secrets *sec = r->secrets;
    api_jwt_status st = api_jwt_verify(token, n, sec->jwt_keys, sec->jwt_lens, sec->njwt,
                                       (long long)time(NULL), &claims, err, sizeof err);
    if (st != API_JWT_OK) {
        r->auth_note = api_jwt_status_name(st);
        reply_unauthorized(r, err);
        return false;
    }
    int rc = api_principal_load(c->db, &claims, &c->who, err, sizeof err);
    if (rc != HF_PG_OK) {
        if (rc == HF_PG_ERR_LOST)
            api_reply_error(c, 503, "database_unavailable", "PostgreSQL does not answer");
        else
            api_reply_internal(c, err);
        return false;
    }
    if (r->route->access == ROUTE_ADMIN && strcmp(c->who.role, "admin") != 0) {
        r->auth_note = c->who.role[0] ? "not admin" : "no role mapping";
        api_reply_error(c, 403, "forbidden",
                        c->who.role[0] ? "only admins of the branch may use this API"
                                       : "you have no role in this tenant's branch");
        return false;
    }
    return true;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

static void serve_metrics(api_request *r)
{
    hf_buf b = {0};
    hf_metrics_render(r->srv->metrics, &b);
    api_reply(&r->c, 200, "text/plain; version=0.0.4", b.data ? b.data : "", b.len);
    hf_buf_free(&b);
}

static void serve_readyz(api_request *r)
{
    char err[256];
    PGconn *db = thread_db(r->srv, err, sizeof err);
    if (db && hf_pg_exec(db, "SELECT 1", 0, NULL, NULL, err, sizeof err) == HF_PG_OK) {
        static const char ready[] = "{\"status\":\"ready\"}";
        api_reply_json(&r->c, 200, ready, sizeof ready - 1);
    } else {
        api_reply_error(&r->c, 503, "database_unavailable", "PostgreSQL does not answer");
    }
}

/* /healthz, /readyz and /metrics; false when path is none of them. */
static bool serve_ops(api_request *r)
{
    static const char *const ops[] = {"/healthz", "/readyz", "/metrics"};
    const char *name = NULL;
    for (size_t i = 0; i < HF_ARRAY_LEN(ops); i++)
        if (strcmp(r->c.path, ops[i]) == 0)
            name = ops[i];
    if (!name)
        return false;
    r->route_name = name;
    if (strcmp(r->c.method, "GET") != 0 && strcmp(r->c.method, "HEAD") != 0) {
        api_set_header(&r->c, "Allow", "GET, HEAD");
        api_reply_error(&r->c, 405, "method_not_allowed", "use GET");
    } else if (name == ops[0]) {
        static const char ok[] = "{\"status\":\"ok\"}";
        api_reply_json(&r->c, 200, ok, sizeof ok - 1);
    } else if (name == ops[1]) {
        serve_readyz(r);
    } else {
        serve_metrics(r);
    }
    return true;
}

/* Finds the route; replies 404 or 405 (with Allow) and returns NULL when there is none. */
static const api_route *route_find(api_request *r, path_seg *segs, size_t *nsegs)
{
    const char *method = strcmp(r->c.method, "HEAD") == 0 ? "GET" : r->c.method;
    hf_buf allow = {0};
    const api_route *found = NULL;
    for (size_t i = 0; i < HF_ARRAY_LEN(routes) && !found; i++) {
        if (!path_match(routes[i].pattern, r->c.path, segs, nsegs))
            continue;
        if (strcmp(routes[i].method, method) == 0) {
            found = &routes[i];
            r->route_name = routes[i].pattern;
        } else if (!strstr(allow.data ? allow.data : "", routes[i].method)) {
            hf_buf_printf(&allow, "%s%s", allow.len ? ", " : "", routes[i].method);
        }
    }
    if (!found && allow.len) {
        r->route_name = "method_not_allowed";
        api_set_header(&r->c, "Allow", allow.data);
        char detail[128];
        snprintf(detail, sizeof detail, "%s is not allowed here; use %s", r->c.method, allow.data);
        api_reply_error(&r->c, 405, "method_not_allowed", detail);
    } else if (!found) {
        r->route_name = "unmatched";
        api_reply_error(&r->c, 404, "not_found", "no such endpoint");
    }
    hf_buf_free(&allow);
    return found;
}

static void route_request(api_request *r)
{
    api_ctx *c = &r->c;
    path_seg segs[MAX_PARAMS];
    size_t nsegs = 0;
    r->route = route_find(r, segs, &nsegs);
    if (!r->route)
        return;
    struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
    size_t len = evbuffer_get_length(in);
    if (len > (size_t)r->srv->cfg->max_body_bytes) {
        char detail[96];
        snprintf(detail, sizeof detail, "the body is larger than %lld bytes",
                 r->srv->cfg->max_body_bytes);
        api_reply_error(c, 413, "payload_too_large", detail);
        return;
    }
    r->body_copy = xmalloc(len + 1);
    evbuffer_copyout(in, r->body_copy, len);
    r->body_copy[len] = '\0';
    c->body = r->body_copy;
    c->body_len = len;
    if (!decode_params(r, segs, nsegs)) {
        api_reply_error(c, 404, "not_found", "no such resource");
        return;
    }
    char err[256];
    c->db = thread_db(r->srv, err, sizeof err);
    if (!c->db) {
        api_set_header(c, "Retry-After", "1");
        api_reply_error(c, 503, "database_unavailable", "PostgreSQL does not answer");
        return;
    }
    if (r->route->access != ROUTE_OPEN && !authenticate(r))
        return;
    bool has_body = strcmp(c->method, "POST") == 0 || strcmp(c->method, "PUT") == 0;
    if (has_body && !parse_body(r))
        return;
    r->route->handler(c);
}

/* A printable copy of the path for the log (bytes outside ASCII as '?'), at most 300 bytes. */
static void log_path(const char *path, char *out, size_t outlen)
{
    size_t i = 0;
    for (; path[i] && i + 1 < outlen && i < 300; i++) {
        unsigned char ch = (unsigned char)path[i];
        out[i] = ch < 0x20 || ch >= 0x7f ? '?' : (char)ch;
    }
    out[i] = '\0';
}

static void request_observe(api_request *r)
{
    api_server *s = r->srv;
    double seconds = (double)(hf_now_us() - r->started_us) / 1e6;
    char status[8], ms[32];
    snprintf(status, sizeof status, "%d", r->status);
    snprintf(ms, sizeof ms, "%.3f", seconds * 1000.0);
    hf_buf labels = {0};
    hf_buf_puts(&labels, "route=\"");
    hf_metrics_escape_label(&labels, r->route_name);
    hf_buf_puts(&labels, "\"");
    size_t route_only = labels.len;
    hf_buf_printf(&labels, ",method=\"%s\",status=\"%d\"", r->c.method, r->status);
    hf_counter_add(hf_metrics_counter(s->metrics, "hookflow_api_requests_total",
                                      "API requests by route, method and status", labels.data),
                   1);
    labels.data[route_only] = '\0';
    static const double bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,   0.25,   0.5,   1,    2.5,   10};
    hf_histogram_observe(hf_metrics_histogram(s->metrics, "hookflow_api_request_duration_seconds",
                                              "API request latency by route", labels.data, bounds,
                                              HF_ARRAY_LEN(bounds)),
                         seconds);
    hf_buf_free(&labels);

    bool ops = r->route_name[0] == '/' && !r->route;
    char path[320];
    log_path(r->c.path, path, sizeof path);
    hf_log_kv(ops ? HF_LOG_DEBUG : HF_LOG_INFO, "request", "request_id", r->c.request_id, "method",
              r->c.method, "path", path, "route", r->route_name, "status", status, "duration_ms",
              ms, "user", r->c.who.user, "tenant", r->c.who.tenant_id, "branch", r->c.who.branch,
              "auth", r->auth_note ? r->auth_note : "", NULL);
}

static void serve_request(struct evhttp_request *req, void *arg)
{
    api_server *s = arg;
    atomic_fetch_add(&s->in_flight, 1);
    api_request r;
    memset(&r, 0, sizeof r);
    r.srv = s;
    r.started_us = hf_now_us();
    r.route_name = "unmatched";
    r.c.req = req;
    r.c.catalog = s->catalog;
    pthread_mutex_lock(&s->lock);
    r.secrets = s->secrets;
    atomic_fetch_add(&r.secrets->refs, 1);
    pthread_mutex_unlock(&s->lock);
    r.c.secrets = r.secrets->secrets;
    r.c.keys = r.secrets->keys;
    r.c.public_url = s->public_url;
    r.c.method = method_name(evhttp_request_get_command(req));
    r.c.body = "";
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    r.c.path = path && *path ? path : "/";
    r.c.query = uri ? evhttp_uri_get_query(uri) : NULL;
    tls_request = &r;
    const char *id = evhttp_find_header(evhttp_request_get_output_headers(req), "X-Request-Id");
    snprintf(r.c.request_id, sizeof r.c.request_id, "%s", id ? id : "");

    if (!serve_ops(&r))
        route_request(&r);
    if (!r.replied)
        api_reply_internal(&r.c, "the handler returned without a reply");

    thread_db_release(&r);
    request_observe(&r);
    tls_request = NULL;
    hf_json_free(r.c.json);
    free(r.body_copy);
    for (size_t i = 0; i < MAX_PARAMS; i++)
        free(r.params[i]);
    secrets_release(r.secrets);
    atomic_fetch_sub(&s->in_flight, 1);
}

/* ---- the command --------------------------------------------------------------------------- */

static void usage(void)
{
    printf("usage: hookflow-engine serve [--help]\n\n"
           "Runs the admin HTTP API: the connector catalog, workflows (CRUD, validate, simulate),\n"
           "runs and integrations under /api, for admins holding a bearer token (JWT HS256 signed\n"
           "with HOOKFLOW_SECRETS_DIR/api/jwt_key); /healthz, /readyz and /metrics beside it.\n"
           "SIGTERM/SIGINT: stop accepting, finish the requests in progress, exit 0. SIGHUP: "
           "reload\nthe secrets directory (JWT keys, OAuth client credentials, token keys).\n\n");
    hf_config_print_help(api_config_items, HF_ARRAY_LEN(api_config_items));
    printf("  %-36s the connector catalog (default: schemas/catalog of the source tree)\n"
           "  %-36s a platform's API, OAuth token and OAuth authorize endpoints, <ID> one of\n"
           "  %-36s XERO, QUICKBOOKS, HUBSPOT, KLAVIYO, TWILIO, META (default: the platform's\n"
           "  %-36s own; the authorize URL: the catalog's)\n",
           "HOOKFLOW_CATALOG_DIR", "HOOKFLOW_CONNECTOR_<ID>_BASE_URL",
           "HOOKFLOW_CONNECTOR_<ID>_TOKEN_URL", "HOOKFLOW_CONNECTOR_<ID>_AUTHORIZE_URL");
}

/* Loads api/jwt_key (and .previous) of set; false with err when missing or too short. */
static bool load_jwt_keys(api_secrets *set, const char *dir, char *err, size_t errlen)
{
    const char *vals[2];
    size_t lens[2];
    size_t n = hf_secrets_get(set->secrets, API_JWT_KEY_PATH, vals, lens);
    /* Only the .previous file left (a rotation whose new key was never written) is missing too:
     * the retired key must not become the only one trusted. */
    if (n == 0 || !hf_secrets_has(set->secrets, API_JWT_KEY_PATH)) {
        hf_err(err, errlen, "%s/%s is missing: the API cannot verify bearer tokens without it", dir,
               API_JWT_KEY_PATH);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (lens[i] < API_JWT_MIN_KEY_LEN) {
            hf_err(err, errlen, "%s/%s%s is %zu bytes; HS256 needs at least %d", dir,
                   API_JWT_KEY_PATH, i ? ".previous" : "", lens[i], API_JWT_MIN_KEY_LEN);
            return false;
        }
        set->jwt_keys[i] = (const unsigned char *)vals[i];
        set->jwt_lens[i] = lens[i];
    }
    set->njwt = n;
    return true;
}

/* The secrets directory as a set (one reference, the caller's). At start (had_key false) a
 * missing token key is a warning; on a reload of a server that had one it refuses the set. */
static api_secrets *secrets_load(const char *dir, bool had_key, char *err, size_t errlen)
{
    api_secrets *set = xcalloc(1, sizeof *set);
    atomic_init(&set->refs, 1);
    set->secrets = engine_secrets_reload(dir, had_key, &set->keys, err, errlen);
    if (!set->secrets || !load_jwt_keys(set, dir, err, errlen)) {
        secrets_release(set);
        return NULL;
    }
    if (!set->keys)
        hf_log_kv(HF_LOG_WARN, "api.no_token_key", "error", err, "msg",
                  "connections cannot store OAuth tokens", NULL);
    return set;
}

/* SIGHUP: requests that started keep the set they took; new ones take the new set. */
static int reload_secrets(void *arg, char *err, size_t errlen)
{
    api_server *s = arg;
    api_secrets *fresh = secrets_load(s->cfg->secrets_dir, s->secrets->keys != NULL, err, errlen);
    if (!fresh)
        return -1;
    pthread_mutex_lock(&s->lock);
    api_secrets *old = s->secrets;
    s->secrets = fresh;
    pthread_mutex_unlock(&s->lock);
    secrets_release(old);
    return 0;
}

/* The public URL: the setting, else http://<listen> with a wildcard host made loopback. */
static char *public_url_of(const api_config *cfg, int port)
{
    if (cfg->public_url[0]) {
        size_t n = strlen(cfg->public_url);
        while (n > 0 && cfg->public_url[n - 1] == '/')
            n--;
        return xstrndup(cfg->public_url, n);
    }
    char host[256];
    int ignored;
    if (!hf_config_parse_listen(cfg->listen, host, sizeof host, &ignored) || !host[0] ||
        strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    return strchr(host, ':') ? xasprintf("http://[%s]:%d", host, port)
                             : xasprintf("http://%s:%d", host, port);
}

/* Start-up: a malformed conninfo is fatal; an unreachable server only delays readiness. */
static bool check_database(const api_config *cfg, char *err, size_t errlen)
{
    PGconn *db = NULL;
    int rc = hf_pg_connect(cfg->database_url, "hookflow-api", &db, err, errlen);
    if (db)
        PQfinish(db);
    if (rc == HF_PG_ERR_LOST)
        hf_log_kv(HF_LOG_WARN, "api.db_unavailable", "error", err, "msg",
                  "starting anyway; /readyz answers 503 until PostgreSQL answers", NULL);
    return rc == HF_PG_OK || rc == HF_PG_ERR_LOST;
}

/* Waits until no request is in progress (and its answer has had a moment to leave), or the
 * timeout passes. */
static void drain(api_server *s, long long timeout_ms)
{
    int64_t deadline = hf_now_ms() + timeout_ms;
    while (atomic_load(&s->in_flight) > 0 && hf_now_ms() < deadline)
        usleep(10000);
    usleep(100000);
}

static void server_free(api_server *s)
{
    for (db_slot *slot = s->slots, *next; slot; slot = next) {
        next = slot->next;
        if (slot->db)
            PQfinish(slot->db);
        free(slot);
    }
    s->slots = NULL;
    free(s->public_url);
    hf_metrics_free(s->metrics);
    secrets_release(s->secrets);
    hf_catalog_free(s->catalog);
    pthread_mutex_destroy(&s->lock);
}

int engine_cmd_serve(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage();
            return 0;
        }
        fprintf(stderr, "hookflow-engine: serve: unknown option '%s' (try --help)\n", argv[i]);
        return 2;
    }
    api_config cfg;
    memset(&cfg, 0, sizeof cfg);
    char err[512];
    const size_t ncfg = HF_ARRAY_LEN(api_config_items);
    if (hf_config_load(api_config_items, ncfg, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "hookflow-engine: serve: %s\n", err);
        hf_config_free(api_config_items, ncfg, &cfg);
        return 1;
    }
    hf_log_init_from_config("hookflow-engine", cfg.log_level, cfg.log_format);

    sigset_t sigs;
    hf_signals_take(&sigs, true); /* SIGHUP reloads the secrets */

    int rc = 1;
    api_server s;
    memset(&s, 0, sizeof s);
    s.cfg = &cfg;
    pthread_mutex_init(&s.lock, NULL);
    hf_http_server *http = NULL;
    s.catalog = hf_catalog_load(hf_catalog_default_dir(), err, sizeof err);
    if (!s.catalog) {
        fprintf(stderr, "hookflow-engine: serve: catalog: %s\n", err);
        goto done;
    }
    s.secrets = secrets_load(cfg.secrets_dir, false, err, sizeof err);
    if (!s.secrets) {
        fprintf(stderr, "hookflow-engine: serve: %s\n", err);
        goto done;
    }
    if (!check_database(&cfg, err, sizeof err)) {
        fprintf(stderr, "hookflow-engine: serve: HOOKFLOW_DATABASE_URL: %s\n", err);
        goto done;
    }
    s.metrics = hf_metrics_new();
    long threads = cfg.threads > 0 ? (long)cfg.threads : sysconf(_SC_NPROCESSORS_ONLN);
    /* Bodies up to twice the limit are read so that the limit itself is answered in JSON (413
     * above); past that libevent refuses them on its own. */
    hf_http_options hopts = {.listen = cfg.listen,
                             .threads = threads > 0 ? (int)threads : 1,
                             .max_body = (size_t)cfg.max_body_bytes * 2,
                             .max_headers = (size_t)cfg.max_header_bytes,
                             .timeout_ms = (int)cfg.client_timeout_ms,
                             .max_connections = (int)cfg.max_connections,
                             .prepare = request_id_prepare};
    http = hf_http_server_new(&hopts, serve_request, &s, err, sizeof err);
    if (!http) {
        fprintf(stderr, "hookflow-engine: serve: %s\n", err);
        goto done;
    }
    s.public_url = public_url_of(&cfg, hf_http_server_port(http));
    hf_http_server_start(http);
    char port[16], nthreads[16];
    snprintf(port, sizeof port, "%d", hf_http_server_port(http));
    snprintf(nthreads, sizeof nthreads, "%d", hopts.threads);
    hf_log_kv(HF_LOG_INFO, "api.started", "listen", cfg.listen, "port", port, "threads", nthreads,
              "public_url", s.public_url, "version", HOOKFLOW_VERSION, NULL);

    hf_signals_wait_stop(&sigs, reload_secrets, &s);
    hf_log_kv(HF_LOG_INFO, "api.stopping", NULL);
    hf_http_server_stop_accepting(http);
    drain(&s, cfg.shutdown_timeout_ms);
    hf_log_kv(HF_LOG_INFO, "api.stopped", NULL);
    rc = 0;
done:
    hf_http_server_free(http);
    server_free(&s);
    hf_config_free(api_config_items, ncfg, &cfg);
    hf_log_forget_secrets();
    return rc;
}

char *api_cursor_encode(const char *created_at, const char *id)
{
    char *plain = xconcat(created_at, "|", id, NULL);
    size_t n = strlen(plain);
    char *out = xmalloc(4 * (n / 3 + 1) + 1);
    api_base64url_encode((const unsigned char *)plain, n, out);
    free(plain);
    return out;
}

/* The timestamps cursors carry, exactly as API_TS writes them: "2024-05-01T10:00:00.123456Z".
 * Any other form (an offset PostgreSQL refuses, a lost fraction) is not a cursor of ours. */
static bool canonical_timestamp(const char *s, size_t len)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    if (len != sizeof shape - 1)
        return false;
    for (size_t i = 0; i < len; i++)
        if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != shape[i])
            return false;
    return true;
}

bool api_cursor_decode(const char *cursor, char created_at[48], char id[40])
{
    unsigned char plain[100];
    size_t len = strlen(cursor);
    long n = len <= 128 ? api_base64url_decode(cursor, len, plain, sizeof plain - 1) : -1;
    if (n <= 0)
        return false;
    plain[n] = '\0';
    char *bar = memchr(plain, '|', (size_t)n);
    if (!bar || bar - (char *)plain >= 48 || memchr(plain, '\0', (size_t)n))
        return false;
    *bar = '\0';
    int64_t ms;
    if (!canonical_timestamp((const char *)plain, (size_t)(bar - (char *)plain)) ||
        !hf_parse_rfc3339((const char *)plain, &ms) || !api_is_uuid(bar + 1))
        return false;
    memcpy(created_at, plain, (size_t)(bar - (char *)plain) + 1);
    memcpy(id, bar + 1, 37); /* a uuid: 36 characters and the NUL */
    return true;
}
