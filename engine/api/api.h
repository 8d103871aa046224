/* api: `hookflow-engine serve`, the admin HTTP API behind the integration marketplace and the
 * workflow builder. Handlers run on the server's event-loop threads, each with its own
 * PostgreSQL connection; every request is authenticated (JWT) before its handler runs, and every
 * query is scoped to the caller's tenant. */
#ifndef ENGINE_API_H
#define ENGINE_API_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "catalog.h"
#include "json.h"
#include "secrets.h"
#include "tokens.h"
#include "util.h"

struct evhttp_request;

/* The caller, from a verified bearer token and the tenant's branch role mappings. */
typedef struct api_principal {
    char user[256];       /* JWT "sub" */
    char tenant_id[40];   /* JWT "tenant": the tenant's uuid */
    char branch[128];     /* JWT "branch" */
    char role[16];        /* from role_mappings (tenant, branch, sub); "" when none */
    char environment[16]; /* the tenant's: production | sandbox */
} api_principal;

/* One request being served. */
typedef struct api_ctx {
    struct evhttp_request *req;
    PGconn *db; /* this thread's connection (reconnected when lost) */
    const hf_catalog *catalog;
    const hf_secrets *secrets;
    const engine_keyring *keys; /* may be NULL */
    const char *public_url;     /* HOOKFLOW_API_PUBLIC_URL, e.g. https://admin.example.com */
    api_principal who;          /* valid when the route requires auth */
    const char *method;         /* "GET", "POST", ... */
    const char *path;
    const char *query;     /* raw query string or NULL */
    const char *params[4]; /* path parameters in route order ({id}, {connector}) */
    size_t nparams;
    const char *body; /* NUL-terminated copy of the body ("" when none) */
    size_t body_len;
    hf_json json; /* the parsed body for JSON requests, or NULL */
    char request_id[40];
} api_ctx;

typedef void (*api_handler)(api_ctx *c);

/* SQL for a timestamptz column as the API shows it (and cursors carry it): RFC 3339 UTC with
 * microseconds, "2024-05-01T10:00:00.123456Z", whatever the session's TimeZone, so the same text
 * goes into cursors and is read back exactly. */
#define API_TS(col) "to_char((" col ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* Replies. Every handler ends in exactly one of these. */
void api_reply_json(api_ctx *c, int status, const char *json, size_t len);
/* {"error": error, "detail": detail} */
void api_reply_error(api_ctx *c, int status, const char *error, const char *detail);
/* 500 with a generic body; the cause goes to the log (never to the client). */
void api_reply_internal(api_ctx *c, const char *cause);
/* 404 {"error":"not_found"} — also what another tenant's object gets. */
void api_reply_not_found(api_ctx *c, const char *what);

/* The query parameter name (decoded, malloc'd) or NULL. */
char *api_query_param(const api_ctx *c, const char *name);

/* Writes one audit_log row (actor = who.user, tenant = who.tenant_id); detail_json may be NULL.
 * Call inside the handler's transaction when it has one. 0 or -1 (logged). */
int api_audit(api_ctx *c, const char *action, const char *subject_type, const char *subject_id,
              const char *detail_json);

/* api_audit, then COMMIT of the handler's transaction. 0 when both succeeded; otherwise -1 with
 * one line in err (for api_reply_internal) and the transaction rolled back. Either way the
 * transaction is over when it returns. */
HF_MUST_CHECK int api_audit_commit(api_ctx *c, const char *action, const char *subject_type,
                                   const char *subject_id, const char *detail_json, char *err,
                                   size_t errlen);

/* True when s is a canonical uuid (so it can be passed to ::uuid without a SQL error). */
bool api_is_uuid(const char *s);
/* Listing cursors: base64url (no padding) of "<created_at RFC 3339>|<uuid>", the key of the last
 * item of a page; the next page starts strictly after it. decode fills created_at and id and
 * returns false for anything an encode did not make. */
char *api_cursor_encode(const char *created_at, const char *id);
bool api_cursor_decode(const char *cursor, char created_at[48], char id[40]);

/* More replies and request helpers (server.c). */
/* Any status, content type (NULL: none) and body (NULL/0: empty), e.g. 204, 302 or 304. */
void api_reply(api_ctx *c, int status, const char *content_type, const void *body, size_t len);
/* api_reply_error with more members: extra_members is JSON text of members without braces
 * (e.g. "\"position\":12" or "\"problems\":[...]"), appended after detail; may be NULL. */
void api_reply_error_with(api_ctx *c, int status, const char *error, const char *detail,
                          const char *extra_members);
/* Adds a response header; call before the reply. */
void api_set_header(api_ctx *c, const char *name, const char *value);
/* A request header (name case-insensitive) or NULL. Valid during the request. */
const char *api_header(const api_ctx *c, const char *name);
/* When obj has members outside allowed (NULL-terminated), replies 400
 * {"error":"unknown_field","detail":"unknown field(s): a, b","fields":["a","b"]} and returns
 * false; true when every member is allowed (or obj is not an object). */
bool api_check_members(api_ctx *c, hf_json obj, const char *const *allowed);
/* The request's JSON body in *out, NULL when there is none. Replies 400 and returns -1 when it
 * is not an object, has a member outside allowed (api_check_members) or has one member twice;
 * 0 otherwise. */
int api_body_object(api_ctx *c, const char *const *allowed, hf_json *out);

/* ---- handlers (the engine/api .c files). Paths below are under /api. ---------------------- */
/* catalog_api.c */
void api_catalog_get(api_ctx *c); /* GET  /workflows/catalog */
/* workflows_api.c */
void api_workflows_list(api_ctx *c);     /* GET  /workflows */
void api_workflows_create(api_ctx *c);   /* POST /workflows */
void api_workflows_get(api_ctx *c);      /* GET  /workflows/{id} */
void api_workflows_update(api_ctx *c);   /* PUT  /workflows/{id} (new version) */
void api_workflows_delete(api_ctx *c);   /* DELETE /workflows/{id} */
void api_workflows_enable(api_ctx *c);   /* POST /workflows/{id}/enable */
void api_workflows_disable(api_ctx *c);  /* POST /workflows/{id}/disable */
void api_workflows_validate(api_ctx *c); /* POST /workflows/{id}/validate */
void api_workflows_simulate(api_ctx *c); /* POST /workflows/{id}/simulate */
/* runs_api.c */
void api_runs_list(api_ctx *c);  /* GET  /workflows/{id}/runs */
void api_runs_get(api_ctx *c);   /* GET  /runs/{id} */
void api_runs_retry(api_ctx *c); /* POST /runs/{id}/retry */
/* connections_api.c */
void api_integrations_list(api_ctx *c);        /* GET  /integrations */
void api_integrations_get(api_ctx *c);         /* GET  /integrations/{connector} */
void api_integrations_oauth_start(api_ctx *c); /* POST /integrations/{connector}/oauth/start */
void api_integrations_oauth_callback(
    api_ctx *c); /* GET  /integrations/{connector}/oauth/callback (no bearer: state) */
void api_integrations_credentials(
    api_ctx *c);                           /* PUT  /integrations/{connector}/credentials (Twilio) */
void api_integrations_enable(api_ctx *c);  /* POST /integrations/{connector}/enable */
void api_integrations_disable(api_ctx *c); /* POST /integrations/{connector}/disable */
void api_integrations_approve(api_ctx *c); /* POST /integrations/{connector}/approval (support) */

#endif
