/* connections_api: the integration marketplace's connections — every catalog connector with the
 * tenant's connection state, OAuth authorisation (state + PKCE start, the platform's callback
 * and the code exchange), Twilio credentials, enable/disable with the Beta approval rule, and
 * support approvals. Tokens are only ever stored sealed (engine_token_seal) and never leave.
 *
 * Decisions (also in the OpenAPI description):
 *  - One connection per (tenant, connector, account); starting OAuth for a connector the tenant
 *    has no connection to creates a 'pending' placeholder (no account yet) holding the scopes the
 *    admin was shown. The callback fills it in, or updates the tenant's connection to the same
 *    account (re-authorisation); an account already connected to another tenant is a 409.
 *  - The account is what the platform says: QuickBooks' realmId on the redirect; the tenant of
 *    Xero's GET {base}/connections that this consent added (its authEventId is the token's
 *    authentication_event_id; an organisation the admin named first, the first one without);
 *    Meta's first page of GET {base}/v25.0/me/accounts asked with the long-lived user token
 *    (fb_exchange_token), so that its page token, which is what is stored, does not expire;
 *    HubSpot's hub_id (from the token answer or token introspection,
 *    POST {base}/oauth/2026-03/token/introspect: the v1 token-info endpoint is retired on
 *    16 Feb 2027); Klaviyo's first account of GET {base}/api/accounts. Only when HubSpot's or
 *    Klaviyo's lookup endpoint does not exist (404: a stand-in that lacks it) is an account the
 *    admin named used instead ("account" in the start body or on the callback's query).
 *  - A Beta connector connected by a production tenant without a support approval stays
 *    'pending'; enabling it is refused with 403 beta_not_approved until support approves.
 *  - Support staff: a verified token whose "sub" is a line of the secret api/support_users (one
 *    subject per line; blank lines and lines starting with '#' ignored; exact, case-sensitive
 *    match). The approval is for the tenant of that token. No role mapping is needed for it. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/auth.h"
#include "config.h"
#include "connectors/connector.h"
#include "crypto.h"
#include "json.h"
#include "log.h"
#include "pg.h"
#include "tokens.h"

#define OAUTH_STATE_BYTES 32
#define PKCE_VERIFIER_BYTES 32
#define PLATFORM_TIMEOUT_MS 10000L
#define SUPPORT_USERS_SECRET "api/support_users"
#define KLAVIYO_REVISION "2024-10-15"
#define NOTE_MAX 1000

/* ---- small helpers ------------------------------------------------------------------------ */

/* The secret's current value as a string, or NULL. Caller frees (wipe first). */
static char *secret_value(const hf_secrets *s, const char *path)
{
    const char *vals[2];
    size_t lens[2];
    if (!s || hf_secrets_get(s, path, vals, lens) == 0)
        return NULL;
    return xstrndup(vals[0], lens[0]);
}

static void secret_free(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* An account id as platforms make them: 1..128 of [A-Za-z0-9._:-], not dots alone (a "." or
 * ".." would be a dot-segment in the URL paths the account goes into). */
static bool account_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 128 || strspn(s, ".") == n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != ':' && c != '-')
            return false;
    }
    return true;
}

/* The connector named by the path, or NULL after a 404. */
static const hf_connector *path_connector(api_ctx *c)
{
    const hf_connector *k = c->params[0] ? hf_catalog_find(c->catalog, c->params[0]) : NULL;
    if (!k)
        api_reply_not_found(c, "connector");
    return k;
}

static hf_json oauth_of(const hf_connector *k)
{
    return hf_json_get(hf_connector_json(k), "oauth");
}

static bool uses_oauth(const hf_connector *k)
{
    const char *auth = hf_json_str(hf_json_get(oauth_of(k), "auth"));
    return auth && strcmp(auth, "oauth2") == 0;
}

/* The catalog's scopes as a PostgreSQL array literal (into a) and/or a JSON array (into json). */
static void catalog_scopes(const hf_connector *k, hf_pg_array *a, hf_buf *json)
{
    hf_json scopes = hf_json_get(oauth_of(k), "scopes");
    if (json)
        hf_buf_putc(json, '[');
    for (size_t i = 0, n = 0; i < hf_json_len(scopes); i++) {
        const char *s = hf_json_str(hf_json_at(scopes, i));
        if (!s)
            continue;
        if (a)
            hf_pg_array_add(a, s);
        if (json) {
            if (n++)
                hf_buf_putc(json, ',');
            hf_json_append_cstr(json, s);
        }
    }
    if (json)
        hf_buf_putc(json, ']');
}

static bool approval_required(const hf_connector *k, const char *environment)
{
    return hf_connector_is_beta(k) && strcmp(environment, "production") == 0;
}

static void beta_message(hf_buf *out, const hf_connector *k)
{
    hf_buf_printf(out,
                  "%s is in Beta: a support approval is required before enabling it in "
                  "production",
                  hf_connector_id(k));
}

/* A string member (NULL when absent or null); -1 after a 400 when it has another type. */
static int body_string(api_ctx *c, hf_json obj, const char *name, const char **out)
{
    hf_json v = hf_json_get(obj, name);
    *out = NULL;
    if (!v || YAJL_IS_NULL(v))
        return 0;
    if (!YAJL_IS_STRING(v)) {
        char d[128];
        snprintf(d, sizeof d, "%s: must be a string", name);
        api_reply_error(c, 400, "invalid_field", d);
        return -1;
    }
    *out = v->u.string;
    return 0;
}

/* ---- the view of a connector for this tenant ---------------------------------------------- */

/* Appends one connector's object: catalog facts, the tenant's connections (primary first),
 * approval state and a message. conns_json is the json_agg of its connections (or NULL), and
 * approval_row the support_approvals row (or -1) of res_appr. */
static void integration_object(hf_buf *out, const hf_connector *k, const char *environment,
                               const char *conns_json, PGresult *res_appr, int approval_row)
{
    hf_json conns = conns_json ? hf_json_parse(conns_json, strlen(conns_json), NULL, 0) : NULL;
    hf_json primary = hf_json_len(conns) ? hf_json_at(conns, 0) : NULL;
    const char *status = primary ? hf_json_str(hf_json_get(primary, "status")) : NULL;
    const char *account = primary ? hf_json_str(hf_json_get(primary, "account")) : NULL;
    bool required = approval_required(k, environment);
    bool approved = approval_row >= 0;
    const char *availability = hf_json_str(hf_json_get(hf_connector_json(k), "availability"));
    const char *auth = hf_json_str(hf_json_get(oauth_of(k), "auth"));

    hf_buf_puts(out, "{\"connector\":");
    hf_json_append_cstr(out, hf_connector_id(k));
    hf_buf_puts(out, ",\"name\":");
    hf_json_append_cstr(out, hf_connector_name(k));
    hf_buf_puts(out, ",\"category\":");
    hf_json_append_cstr(out, hf_connector_category(k));
    hf_buf_puts(out, ",\"availability\":");
    hf_json_append_cstr(out, availability ? availability : "GA");
    hf_buf_puts(out, ",\"auth\":");
    hf_json_append_cstr(out, auth ? auth : "oauth2");
    hf_buf_puts(out, ",\"scopes\":");
    catalog_scopes(k, NULL, out);
    hf_buf_puts(out, ",\"status\":");
    hf_json_append_cstr(out, status ? status : "not_connected");
    hf_buf_printf(out, ",\"connected\":%s", account ? "true" : "false");
    hf_buf_puts(out, ",\"account\":");
    if (account)
        hf_json_append_cstr(out, account);
    else
        hf_buf_puts(out, "null");
    hf_buf_puts(out, ",\"granted_scopes\":");
    hf_json granted = primary && account ? hf_json_get(primary, "granted_scopes") : NULL;
    if (granted)
        hf_json_serialize(granted, out);
    else
        hf_buf_puts(out, "[]");
    hf_buf_printf(out, ",\"approval\":{\"required\":%s,\"approved\":%s",
                  required ? "true" : "false", approved ? "true" : "false");
    const char *names[] = {"approved_by", "approved_at", "note"};
    for (int i = 0; i < 3; i++) {
        hf_buf_printf(out, ",\"%s\":", names[i]);
        if (approved && !PQgetisnull(res_appr, approval_row, 1 + i))
            hf_json_append_cstr(out, PQgetvalue(res_appr, approval_row, 1 + i));
        else
            hf_buf_puts(out, "null");
    }
    hf_buf_puts(out, "},\"message\":");
    hf_buf msg = {0};
    if (required && !approved)
        beta_message(&msg, k);
    else if (status && strcmp(status, "pending") == 0 && account)
        hf_buf_puts(&msg, "authorised: enable it to use it in workflows");
    else if (status && strcmp(status, "pending") == 0)
        hf_buf_puts(&msg, "authorisation started: waiting for the platform to redirect back");
    if (msg.len)
        hf_json_append_string(out, msg.data, msg.len);
    else
        hf_buf_puts(out, "null");
    hf_buf_free(&msg);
    hf_buf_puts(out, ",\"connections\":");
    if (conns)
        hf_json_serialize(conns, out);
    else
        hf_buf_puts(out, "[]");
    hf_buf_putc(out, '}');
    hf_json_free(conns);
}

/* clang-format off */
/* The connections of tenant $1 (of connector $2 when not NULL), one row per connector with a
 * JSON array of them, the one that counts first. Tokens never leave: only whether there is a
 * refresh token and when the access token expires. */
#define CONNECTIONS_VIEW_SQL                                                                       \
    "SELECT connector, json_agg(json_build_object("                                                \
    "  'id', id, 'account', account, 'status', status,"                                            \
    "  'granted_scopes', granted_scopes, 'requested_scopes', requested_scopes,"                    \
    "  'token_expires_at', " API_TS("token_expires_at") ","                                        \
    "  'refresh_token_expires_at', " API_TS("refresh_token_expires_at") ","                        \
    "  'has_refresh_token', refresh_token_enc IS NOT NULL,"                                        \
    "  'connected_by', connected_by, 'connected_at', " API_TS("connected_at") ","                  \
    "  'created_at', " API_TS("created_at") ", 'updated_at', " API_TS("updated_at") ")"            \
    "  ORDER BY CASE WHEN status = 'active' THEN 0"                                                \
    "                WHEN status = 'pending' AND account IS NOT NULL THEN 1"                       \
    "                WHEN status = 'disabled' THEN 2 ELSE 3 END,"                                  \
    "           created_at, id)::text "                                                            \
    "FROM connections WHERE tenant_id = $1 AND ($2::text IS NULL OR connector = $2) "              \
    "GROUP BY connector"

/* The support approvals of tenant $1 (of connector $2 when not NULL). */
#define APPROVALS_VIEW_SQL                                                                         \
    "SELECT connector, approved_by, " API_TS("approved_at") ", note "                              \
    "FROM support_approvals "                                                                      \
    "WHERE tenant_id = $1 AND ($2::text IS NULL OR connector = $2)"
/* clang-format on */

/* The tenant's view of every catalog connector ({"integrations":[...]}) or, with only, of that
 * one (the bare object). 0, or -1 with err. */
static int integration_view(api_ctx *c, const char *tenant_id, const char *environment,
                            const hf_connector *only, hf_buf *out, char *err, size_t errlen)
{
    PGresult *conns = NULL, *appr = NULL;
    int rc = -1;
    const char *params[] = {tenant_id, only ? hf_connector_id(only) : NULL};
    if (hf_pg_exec(c->db, CONNECTIONS_VIEW_SQL, 2, params, &conns, err, errlen) != HF_PG_OK ||
        hf_pg_exec(c->db, APPROVALS_VIEW_SQL, 2, params, &appr, err, errlen) != HF_PG_OK)
        goto done;
    if (!only)
        hf_buf_puts(out, "{\"integrations\":[");
    size_t count = only ? 1 : hf_catalog_count(c->catalog);
    for (size_t i = 0; i < count; i++) {
        const hf_connector *k = only ? only : hf_catalog_at(c->catalog, i);
        const char *id = hf_connector_id(k);
        const char *cj = NULL;
        int ar = -1;
        for (int r = 0; r < PQntuples(conns); r++)
            if (strcmp(PQgetvalue(conns, r, 0), id) == 0)
                cj = PQgetvalue(conns, r, 1);
        for (int r = 0; r < PQntuples(appr); r++)
            if (strcmp(PQgetvalue(appr, r, 0), id) == 0)
                ar = r;
        if (i)
            hf_buf_putc(out, ',');
        integration_object(out, k, environment, cj, appr, ar);
    }
    if (!only)
        hf_buf_puts(out, "]}");
    rc = 0;
done:
    PQclear(conns);
    PQclear(appr);
    return rc;
}

/* Replies 200 with the view of one connector (status may be another 2xx). */
static void reply_view(api_ctx *c, int status, const hf_connector *k, const char *tenant_id,
                       const char *environment, const char *wrap_key)
{
    hf_buf out = {0};
    char err[512];
    if (wrap_key)
        hf_buf_printf(&out, "{\"%s\":\"%s\",\"integration\":", wrap_key, hf_connector_id(k));
    if (integration_view(c, tenant_id, environment, k, &out, err, sizeof err) != 0) {
        api_reply_internal(c, err);
    } else {
        if (wrap_key)
            hf_buf_putc(&out, '}');
        api_reply_json(c, status, out.data, out.len);
    }
    hf_buf_free(&out);
}

void api_integrations_list(api_ctx *c)
{
    hf_buf out = {0};
    char err[512];
    if (integration_view(c, c->who.tenant_id, c->who.environment, NULL, &out, err, sizeof err) != 0)
        api_reply_internal(c, err);
    else
        api_reply_json(c, 200, out.data, out.len);
    hf_buf_free(&out);
}

void api_integrations_get(api_ctx *c)
{
    const hf_connector *k = path_connector(c);
    if (k)
        reply_view(c, 200, k, c->who.tenant_id, c->who.environment, NULL);
}

/* ---- calls to the platforms (admin path: one blocking call at a time, bounded) ------------ */

/* Performs req (and frees it), the answer parsed as JSON in *answer (caller frees) when 2xx;
 * the answer's bytes are wiped (it may hold tokens). Returns the HTTP status (0: transport
 * failure, err set). */
static long platform_json(connector_request *req, hf_json *answer, char *err, size_t errlen)
{
    hf_buf body = {0};
    *answer = NULL;
    long status = connector_perform(req, PLATFORM_TIMEOUT_MS, &body, err, errlen);
    if (status >= 200 && status <= 299)
        *answer = hf_json_parse(body.data ? body.data : "", body.len, NULL, 0);
    connector_request_free(req);
    if (body.data)
        explicit_bzero(body.data, body.len);
    hf_buf_free(&body);
    return status;
}

/* GET url with a bearer token (accept: the media type asked for; extra_header: one more header
 * line or NULL): platform_json. */
static long platform_get_json(const char *url, const char *token, const char *accept,
                              const char *extra_header, hf_json *answer, char *err, size_t errlen)
{
    connector_request req = {0};
    connector_request_start(&req, "GET", xstrdup(url));
    connector_request_header(&req, "Authorization: Bearer %s", token);
    connector_request_header(&req, "Accept: %s", accept);
    if (extra_header)
        connector_request_header(&req, "%s", extra_header);
    return platform_json(&req, answer, err, errlen);
}

/* POST form (application/x-www-form-urlencoded, taken over and wiped) to url: platform_json. */
static long platform_post_form_json(const char *url, hf_buf *form, hf_json *answer, char *err,
                                    size_t errlen)
{
    connector_request req = {0};
    connector_request_start(&req, "POST", xstrdup(url));
    connector_request_header(&req, "Content-Type: application/x-www-form-urlencoded");
    connector_request_header(&req, "Accept: application/json");
    connector_request_body(&req, form);
    return platform_json(&req, answer, err, errlen);
}

/* What the code exchange and the account lookup found out. Strings are owned (free with
 * grant_free, which wipes the tokens). */
typedef struct oauth_grant {
    char *access, *refresh, *scope;
    int64_t expires_in;         /* < 0: the token does not expire (Meta page tokens) */
    int64_t refresh_expires_in; /* < 0: the platform does not say */
    char *account;
    char *lookup_scopes; /* space-separated, from HubSpot's token info, when the answer had none */
} oauth_grant;

static void grant_free(oauth_grant *g)
{
    secret_free(g->access);
    secret_free(g->refresh);
    free(g->scope);
    free(g->account);
    free(g->lookup_scopes);
    memset(g, 0, sizeof *g);
}

/* QuickBooks names the company (realmId, digits) on the redirect. */
static bool quickbooks_realm_ok(const api_ctx *c)
{
    char *realm = api_query_param(c, "realmId");
    bool ok =
        realm && *realm && strlen(realm) <= 32 && strspn(realm, "0123456789") == strlen(realm);
    free(realm);
    return ok;
}

/* Scalar JSON (string or integer) as a new string, or NULL. */
static char *scalar_dup(hf_json v)
{
    const char *s = hf_json_scalar_text(v);
    return s && (YAJL_IS_STRING(v) || YAJL_IS_NUMBER(v)) ? xstrdup(s) : NULL;
}

/* Meta: replaces g's short-lived user token by a long-lived one (GET token URL with
 * grant_type=fb_exchange_token, as Meta documents it: the query carries the client secret, so the
 * URL is wiped and never logged). 0, or -1 with err. */
static int meta_long_lived(oauth_grant *g, const char *client_id, const char *client_secret,
                           char *err, size_t errlen)
{
    const char *token_url = engine_connector_token_url("meta");
    hf_buf url = {0};
    hf_buf_puts(&url, token_url);
    hf_buf_puts(&url, strchr(token_url, '?') ? "&" : "?");
    hf_buf_puts(&url, "grant_type=fb_exchange_token&client_id=");
    connector_url_escape(&url, client_id);
    hf_buf_puts(&url, "&client_secret=");
    connector_url_escape(&url, client_secret);
    hf_buf_puts(&url, "&fb_exchange_token=");
    connector_url_escape(&url, g->access);
    connector_request req = {0};
    connector_request_start(&req, "GET", hf_buf_steal(&url));
    connector_request_header(&req, "Accept: application/json");
    hf_buf body = {0};
    char terr[256] = "";
    long status = connector_perform(&req, PLATFORM_TIMEOUT_MS, &body, terr, sizeof terr);
    connector_request_free(&req); /* wipes the URL */
    char *access = NULL, *refresh = NULL, *scope = NULL;
    int64_t expires_in = 0;
    char perr[256] = "";
    int rc = -1;
    if (status == 0) {
        hf_err(err, errlen, "Meta's long-lived token exchange failed: %s", terr);
    } else if (status < 200 || status > 299 ||
               engine_oauth_parse_token(body.data ? body.data : "", body.len, &access, &refresh,
                                        &expires_in, &scope, perr, sizeof perr) != 0) {
        hf_err(err, errlen, "Meta refused the long-lived token exchange (HTTP %ld)", status);
    } else {
        secret_free(g->access);
        g->access = access;
        access = NULL;
        rc = 0;
    }
    secret_free(access);
    secret_free(refresh);
    free(scope);
    if (body.data)
        explicit_bzero(body.data, body.len);
    hf_buf_free(&body);
    return rc;
}

/* The authentication_event_id claim of a Xero access token (a JWT; Xero checks its signature),
 * or NULL. Caller frees. */
static char *xero_auth_event(const char *access)
{
    const char *dot1 = access ? strchr(access, '.') : NULL;
    const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    if (!dot2)
        return NULL;
    hf_json claims = api_jwt_decode_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    const char *e = hf_json_str(hf_json_get(claims, "authentication_event_id"));
    char *event = e && *e ? xstrdup(e) : NULL;
    hf_json_free(claims);
    return event;
}

/* The organisation a Xero consent connected. GET /connections lists every organisation the user
 * ever connected to the app; the ones this consent added carry its authEventId, the access
 * token's authentication_event_id. An organisation the admin named wins when it is listed;
 * without a match, the first one (an older token without the claim). */
static char *xero_pick_tenant(hf_json connections, const char *access, const char *named)
{
    char *event = xero_auth_event(access);
    const char *pick = NULL, *first = NULL, *by_event = NULL;
    for (size_t i = 0; i < hf_json_len(connections); i++) {
        hf_json conn = hf_json_at(connections, i);
        const char *t = hf_json_str(hf_json_get(conn, "tenantId"));
        if (!account_ok(t))
            continue;
        const char *e = hf_json_str(hf_json_get(conn, "authEventId"));
        if (named && strcmp(t, named) == 0)
            pick = t;
        if (!by_event && event && e && strcmp(e, event) == 0)
            by_event = t;
        if (!first)
            first = t;
    }
    free(event);
    pick = pick ? pick : by_event ? by_event : first;
    return pick ? xstrdup(pick) : NULL;
}

/* Finds the account the new token belongs to (see the file comment). Returns 0, or the HTTP
 * status to answer with a reason in err (detail for the client: never a token). */
static int find_account(api_ctx *c, const char *id, const char *token_answer, oauth_grant *g,
                        const char *named_account, const char *client_id, const char *client_secret,
                        char *err, size_t errlen)
{
    const char *base = engine_connector_base_url(id);
    hf_json answer = NULL;
    long status = 0;
    char terr[256] = "";
    int rc = 502;
    if (strcmp(id, "quickbooks") == 0) { /* checked by quickbooks_realm_ok already */
        g->account = api_query_param(c, "realmId");
        return 0;
    }
    if (strcmp(id, "xero") == 0) {
        char *url = connector_url(base, "/connections");
        status =
            platform_get_json(url, g->access, "application/json", NULL, &answer, terr, sizeof terr);
        free(url);
        if (status < 200 || status > 299) {
            hf_err(err, errlen, "Xero's connections lookup failed: %s",
                   status ? "the platform refused it" : terr);
            goto done;
        }
        g->account = xero_pick_tenant(answer, g->access, named_account);
        if (!g->account) {
            hf_err(err, errlen, "the Xero authorisation gave access to no organisation");
            rc = 400;
            goto done;
        }
        rc = 0;
        goto done;
    }
    if (strcmp(id, "meta") == 0) {
        /* The login code gives a short-lived user token, and a Page token listed for it expires
         * with it (about an hour): exchange it for a long-lived one first, whose Page tokens do
         * not expire. */
        if (meta_long_lived(g, client_id, client_secret, err, errlen) != 0)
            goto done;
        char *url = connector_url(base, "/v25.0/me/accounts");
        status =
            platform_get_json(url, g->access, "application/json", NULL, &answer, terr, sizeof terr);
        free(url);
        if (status < 200 || status > 299) {
            hf_err(err, errlen, "Meta's page lookup (/me/accounts) failed: %s",
                   status ? "the platform refused it" : terr);
            goto done;
        }
        hf_json pages = hf_json_get(answer, "data");
        for (size_t i = 0; !g->account && i < hf_json_len(pages); i++) {
            hf_json p = hf_json_at(pages, i);
            const char *pid = hf_json_str(hf_json_get(p, "id"));
            const char *ptok = hf_json_str(hf_json_get(p, "access_token"));
            if (account_ok(pid) && ptok && *ptok) {
                g->account = xstrdup(pid);
                /* The page token is what the Send API takes; it does not expire or refresh. */
                secret_free(g->access);
                g->access = xstrdup(ptok);
                secret_free(g->refresh);
                g->refresh = NULL;
                g->expires_in = -1;
            }
        }
        if (!g->account) {
            hf_err(err, errlen, "the Meta authorisation gave access to no page");
            rc = 400;
            goto done;
        }
        rc = 0;
        goto done;
    }
    if (strcmp(id, "hubspot") == 0 || strcmp(id, "klaviyo") == 0) {
        bool hub = strcmp(id, "hubspot") == 0;
        if (hub) {
            hf_json t = hf_json_parse(token_answer, strlen(token_answer), NULL, 0);
            char *hid = scalar_dup(hf_json_get(t, "hub_id"));
            hf_json_free(t);
            if (hid && account_ok(hid)) {
                g->account = hid;
                return 0;
            }
            free(hid);
            /* Token introspection (RFC 7662 style): the token and the app's credentials in
             * the form body, never in the URL. */
            hf_buf form = {0};
            connector_form_add(&form, "client_id", client_id);
            connector_form_add(&form, "client_secret", client_secret);
            connector_form_add(&form, "token", g->access);
            connector_form_add(&form, "token_type_hint", "access_token");
            char *url = connector_url(base, "/oauth/2026-03/token/introspect");
            status = platform_post_form_json(url, &form, &answer, terr, sizeof terr);
            free(url);
            if (status >= 200 && status <= 299 && !YAJL_IS_TRUE(hf_json_get(answer, "active"))) {
                hf_err(err, errlen,
                       "HubSpot's token introspection says the new access token is "
                       "not active");
                goto done;
            }
            if (status >= 200 && status <= 299) {
                char *h = scalar_dup(hf_json_get(answer, "hub_id"));
                if (account_ok(h))
                    g->account = h;
                else
                    free(h);
                hf_json sc = hf_json_get(answer, "scopes");
                hf_buf s = {0};
                for (size_t i = 0; i < hf_json_len(sc); i++) {
                    const char *one = hf_json_str(hf_json_at(sc, i));
                    if (one) {
                        if (s.len)
                            hf_buf_putc(&s, ' ');
                        hf_buf_puts(&s, one);
                    }
                }
                g->lookup_scopes = s.len ? hf_buf_steal(&s) : NULL;
                hf_buf_free(&s);
            }
        } else {
            char *url = connector_url(base, "/api/accounts/");
            status = platform_get_json(url, g->access, "application/vnd.api+json",
                                       "revision: " KLAVIYO_REVISION, &answer, terr, sizeof terr);
            free(url);
            if (status >= 200 && status <= 299) {
                const char *aid =
                    hf_json_str(hf_json_get(hf_json_at(hf_json_get(answer, "data"), 0), "id"));
                if (account_ok(aid))
                    g->account = xstrdup(aid);
            }
        }
        if (g->account) {
            rc = 0;
            goto done;
        }
        if (status != 404) {
            hf_err(err, errlen, "%s's account lookup failed: %s", hub ? "HubSpot" : "Klaviyo",
                   status == 0                        ? terr
                   : (status >= 200 && status <= 299) ? "the answer names no account"
                                                      : "the platform refused it");
            goto done;
        }
        /* The lookup endpoint does not exist here (a stand-in platform): the account the admin
         * named, if any. */
        char *q = api_query_param(c, "account");
        const char *named = named_account ? named_account : q;
        if (!account_ok(named)) {
            hf_err(err, errlen,
                   "the %s account could not be determined: pass \"account\" when starting the "
                   "authorisation",
                   hub ? "HubSpot portal" : "Klaviyo");
            free(q);
            rc = 400;
            goto done;
        }
        g->account = xstrdup(named);
        free(q);
        rc = 0;
        goto done;
    }
    hf_err(err, errlen, "%s has no OAuth account lookup", id);
    rc = 400;
done:
    hf_json_free(answer);
    return rc;
}

/* ---- storing a connection ----------------------------------------------------------------- */

typedef struct new_connection {
    const char *tenant_id, *environment, *user;
    const hf_connector *k;
    const char *account;
    const char *access, *refresh; /* refresh may be NULL */
    int64_t expires_in;           /* < 0: no expiry */
    int64_t refresh_expires_in;   /* < 0: the platform does not say */
    const char *granted;          /* PostgreSQL text[] literal */
    const char *requested;        /* PostgreSQL text[] literal */
    const char *via;              /* "oauth" | "credentials" */
} new_connection;

/* Upserts the tenant's connection to (connector, account) with sealed tokens, in one transaction
 * with its audit row. Replies on failure (409 when the account belongs to another tenant) and
 * returns -1; 0 when stored (*status_out: active or pending). */
static int store_connection(api_ctx *c, const new_connection *n, char status_out[16])
{
    const char *id = hf_connector_id(n->k);
    PGresult *res = NULL;
    char err[512], conn_id[40] = "";
    char *actx = NULL, *rctx = NULL, *ahex = NULL, *rhex = NULL;
    unsigned char *aseal = NULL, *rseal = NULL;
    hf_buf detail = {0};
    int rc = -1;
    bool in_tx = false;

    if (hf_pg_begin(c->db, err, sizeof err) != HF_PG_OK)
        goto internal;
    in_tx = true;
    /* Serialises the tenant's concurrent connects of one connector (two callbacks at once). */
    const char *p0[] = {n->tenant_id, id};
    if (hf_pg_exec(c->db, "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 7))", 2,
                   p0, NULL, err, sizeof err) != HF_PG_OK)
        goto internal;
    if (hf_pg_exec(
            c->db,
            "SELECT (SELECT 1 FROM support_approvals WHERE tenant_id = $1 AND connector = $2)", 2,
            p0, &res, err, sizeof err) != HF_PG_OK)
        goto internal;
    bool approved = !PQgetisnull(res, 0, 0);
    PQclear(res);
    res = NULL;
    const char *status =
        approval_required(n->k, n->environment) && !approved ? "pending" : "active";
    snprintf(status_out, 16, "%s", status);

    const char *p1[] = {n->tenant_id, id, n->account};
    if (hf_pg_exec(c->db,
                   "SELECT id FROM connections WHERE tenant_id = $1 AND connector = $2"
                   "  AND (account = $3 OR account IS NULL) "
                   "ORDER BY account IS NULL, created_at LIMIT 1 FOR UPDATE",
                   3, p1, &res, err, sizeof err) != HF_PG_OK)
        goto internal;
    if (PQntuples(res) > 0)
        snprintf(conn_id, sizeof conn_id, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    res = NULL;

    size_t alen = 0, rlen = 0;
    actx = engine_token_context(id, n->account, "access");
    aseal = engine_token_seal(c->keys, actx, n->access, &alen);
    ahex = hf_pg_bytea_text(aseal, alen);
    if (n->refresh) {
        rctx = engine_token_context(id, n->account, "refresh");
        rseal = engine_token_seal(c->keys, rctx, n->refresh, &rlen);
        rhex = hf_pg_bytea_text(rseal, rlen);
    }
    char expires[32], refresh_expires[32];
    snprintf(expires, sizeof expires, "%lld", (long long)n->expires_in);
    snprintf(refresh_expires, sizeof refresh_expires, "%lld", (long long)n->refresh_expires_in);
    const char *p2[] = {conn_id[0] ? conn_id : NULL,
                        n->tenant_id,
                        id,
                        n->account,
                        status,
                        n->granted,
                        n->requested,
                        ahex,
                        rhex,
                        n->expires_in >= 0 ? expires : NULL,
                        n->user,
                        n->refresh_expires_in >= 0 ? refresh_expires : NULL};
    int x = hf_pg_exec(
        c->db,
        conn_id[0]
            ? "UPDATE connections SET account = $4, status = $5, granted_scopes = $6::text[],"
              "  requested_scopes = $7::text[], access_token_enc = $8::bytea,"
              "  refresh_token_enc = $9::bytea,"
              "  token_expires_at = now() + make_interval(secs => $10::double precision),"
              "  refresh_token_expires_at ="
              "    now() + make_interval(secs => $12::double precision),"
              "  token_version = token_version + 1, connected_by = $11, connected_at = now(),"
              "  updated_at = now() "
              "WHERE id = $1::uuid AND tenant_id = $2 AND connector = $3 "
              "RETURNING id, array_to_json(granted_scopes)::text"
            : "INSERT INTO connections (tenant_id, connector, account, status, granted_scopes,"
              "  requested_scopes, access_token_enc, refresh_token_enc, token_expires_at,"
              "  connected_by, connected_at, refresh_token_expires_at) "
              "SELECT $2, $3, $4, $5, $6::text[], $7::text[], $8::bytea, $9::bytea,"
              "  now() + make_interval(secs => $10::double precision), $11, now(),"
              "  now() + make_interval(secs => $12::double precision) "
              "WHERE $1::uuid IS NULL RETURNING id, array_to_json(granted_scopes)::text",
        12, p2, &res, err, sizeof err);
    if (x != HF_PG_OK) {
        if (strcmp(hf_pg_sqlstate(res), HF_PG_UNIQUE_VIOLATION) == 0) {
            hf_pg_rollback(c->db);
            in_tx = false;
            hf_buf d = {0};
            hf_buf_printf(&d, "this %s account (", id);
            hf_buf_put_quoted(&d, n->account, 128);
            hf_buf_puts(&d, ") is already connected to another tenant");
            api_reply_error(c, 409, "account_in_use", d.data);
            hf_buf_free(&d);
            goto done;
        }
        goto internal;
    }
    if (PQntuples(res) != 1) {
        snprintf(err, sizeof err, "store connection: the %s returned %d rows",
                 conn_id[0] ? "UPDATE" : "INSERT", PQntuples(res));
        goto internal;
    }
    snprintf(conn_id, sizeof conn_id, "%s", PQgetvalue(res, 0, 0));

    hf_buf_puts(&detail, "{\"connector\":");
    hf_json_append_cstr(&detail, id);
    hf_buf_puts(&detail, ",\"account\":");
    hf_json_append_cstr(&detail, n->account);
    hf_buf_printf(&detail, ",\"status\":\"%s\",\"via\":\"%s\",\"granted_scopes\":", status, n->via);
    hf_buf_puts(&detail, PQgetvalue(res, 0, 1));
    hf_buf_putc(&detail, '}');
    PQclear(res);
    res = NULL;
    in_tx = false; /* api_audit_commit ends it, whatever the outcome */
    if (api_audit_commit(c, "integration.connected", "connection", conn_id, detail.data, err,
                         sizeof err) != 0)
        goto internal;
    hf_log_kv(HF_LOG_INFO, "api.connection_stored", "connector", id, "account", n->account,
              "status", status, "via", n->via, "user", n->user, NULL);
    rc = 0;
    goto done;
internal:
    api_reply_internal(c, err);
done:
    if (in_tx)
        hf_pg_rollback(c->db);
    PQclear(res);
    free(actx);
    free(rctx);
    free(aseal);
    free(rseal);
    free(ahex);
    free(rhex);
    hf_buf_free(&detail);
    return rc;
}

/* clang-format off */
/* A new OAuth state: $1 its SHA-256 (bytea), $2 tenant, $3 connector, $4 branch, $5 user,
 * $6 the sealed PKCE verifier, $7 redirect_uri, $8 scopes (text[]), $9 the account named. */
#define OAUTH_STATE_INSERT_SQL                                                                     \
    "INSERT INTO oauth_states (state_hash, tenant_id, connector, branch, created_by,"              \
    "  code_verifier_enc, redirect_uri, scopes, account) "                                         \
    "VALUES ($1::bytea, $2, $3, $4, $5, $6::bytea, $7, $8::text[], $9) "                           \
    "RETURNING " API_TS("expires_at")
/* clang-format on */

/* ---- POST /api/integrations/{connector}/oauth/start ---------------------------------------- */

void api_integrations_oauth_start(api_ctx *c)
{
    static const char *const allowed[] = {"account", NULL};
    const hf_connector *k = path_connector(c);
    hf_json body = NULL;
    char *client_id = NULL, *redirect_uri = NULL, *vctx = NULL, *vhex = NULL;
    char *state_bytea = NULL;
    unsigned char *vseal = NULL;
    hf_pg_array scopes = {0};
    hf_buf scopes_json = {0}, scope_param = {0}, url = {0}, out = {0}, detail = {0};
    PGresult *res = NULL;
    char err[512];
    bool in_tx = false;
    if (!k)
        return;
    const char *id = hf_connector_id(k);
    if (!uses_oauth(k)) {
        char d[200];
        snprintf(d, sizeof d, "%s does not use OAuth: PUT /api/integrations/%s/credentials instead",
                 id, id);
        api_reply_error(c, 400, "oauth_not_supported", d);
        return;
    }
    if (api_body_object(c, allowed, &body) != 0)
        return;
    const char *account = NULL;
    if (body_string(c, body, "account", &account) != 0)
        goto done;
    if (account && !account_ok(account)) {
        api_reply_error(c, 400, "invalid_field",
                        "account: must be 1 to 128 characters of letters, digits and . _ : -");
        goto done;
    }

    /* Everything the flow needs is checked before anything is written. */
    char idpath[96];
    snprintf(idpath, sizeof idpath, "%s/client_id", id);
    client_id = secret_value(c->secrets, idpath);
    const char *authorize = NULL;
    char envname[96];
    snprintf(envname, sizeof envname, "HOOKFLOW_CONNECTOR_%s_AUTHORIZE_URL", id);
    for (char *p = envname; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    authorize = hf_config_get(envname);
    if (!authorize || !*authorize)
        authorize = hf_json_str(hf_json_get(oauth_of(k), "authorize_url"));
    if (!c->public_url || !*c->public_url) {
        api_reply_error(c, 503, "not_configured", "HOOKFLOW_API_PUBLIC_URL is not set");
        goto done;
    }
    if (!client_id || !*client_id) {
        char d[160];
        snprintf(d, sizeof d, "the secret %s is not configured", idpath);
        api_reply_error(c, 503, "not_configured", d);
        goto done;
    }
    if (!c->keys) {
        api_reply_error(c, 503, "not_configured",
                        "the secret " ENGINE_TOKEN_KEY_PATH " is not configured");
        goto done;
    }
    if (!authorize || !*authorize) {
        api_reply_error(c, 503, "not_configured", "the connector has no authorize URL");
        goto done;
    }

    unsigned char state_raw[OAUTH_STATE_BYTES], verifier_raw[PKCE_VERIFIER_BYTES];
    unsigned char state_hash[HF_SHA256_LEN], challenge_raw[HF_SHA256_LEN];
    char state[64], verifier[64], challenge[64], hash_hex[2 * HF_SHA256_LEN + 1];
    hf_random_bytes(state_raw, sizeof state_raw);
    hf_random_bytes(verifier_raw, sizeof verifier_raw);
    api_base64url_encode(state_raw, sizeof state_raw, state);
    api_base64url_encode(verifier_raw, sizeof verifier_raw, verifier); /* 43 characters, RFC 7636 */
    hf_sha256(verifier, strlen(verifier), challenge_raw);
    api_base64url_encode(challenge_raw, sizeof challenge_raw, challenge);
    hf_sha256(state, strlen(state), state_hash);
    hf_hex_encode(state_hash, sizeof state_hash, hash_hex);
    state_bytea = xasprintf("\\x%s", hash_hex);
    vctx = engine_token_context(id, hash_hex, "pkce_verifier");
    size_t vlen = 0;
    vseal = engine_token_seal(c->keys, vctx, verifier, &vlen);
    vhex = hf_pg_bytea_text(vseal, vlen);
    explicit_bzero(verifier, sizeof verifier);
    explicit_bzero(verifier_raw, sizeof verifier_raw);

    size_t plen = strlen(c->public_url);
    while (plen > 0 && c->public_url[plen - 1] == '/')
        plen--;
    redirect_uri =
        xasprintf("%.*s/api/integrations/%s/oauth/callback", (int)plen, c->public_url, id);
    catalog_scopes(k, &scopes, &scopes_json);
    hf_json sc = hf_json_get(oauth_of(k), "scopes");
    for (size_t i = 0; i < hf_json_len(sc); i++) {
        const char *s = hf_json_str(hf_json_at(sc, i));
        if (s) {
            if (scope_param.len)
                hf_buf_putc(&scope_param, ' ');
            hf_buf_puts(&scope_param, s);
        }
    }

    if (hf_pg_begin(c->db, err, sizeof err) != HF_PG_OK)
        goto internal;
    in_tx = true;
    if (hf_pg_exec(c->db, "DELETE FROM oauth_states WHERE expires_at < now() - interval '1 day'", 0,
                   NULL, NULL, err, sizeof err) != HF_PG_OK)
        goto internal;
    const char *p1[] = {
        state_bytea,  c->who.tenant_id,          id,     c->who.branch, c->who.user, vhex,
        redirect_uri, hf_pg_array_text(&scopes), account};
    if (hf_pg_exec(c->db, OAUTH_STATE_INSERT_SQL, 9, p1, &res, err, sizeof err) != HF_PG_OK)
        goto internal;
    char expires_at[48];
    snprintf(expires_at, sizeof expires_at, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    res = NULL;
    /* The record the admin sees as "connecting", holding the scopes they were shown; a tenant
     * that already has a connection keeps it as it is until the callback succeeds. */
    const char *p2[] = {c->who.tenant_id, id, hf_pg_array_text(&scopes)};
    if (hf_pg_exec(c->db,
                   "INSERT INTO connections (tenant_id, connector, status, requested_scopes) "
                   "SELECT $1, $2, 'pending', $3::text[] WHERE NOT EXISTS ("
                   "  SELECT 1 FROM connections WHERE tenant_id = $1 AND connector = $2) "
                   "ON CONFLICT DO NOTHING",
                   3, p2, NULL, err, sizeof err) != HF_PG_OK)
        goto internal;
    hf_buf_puts(&detail, "{\"connector\":");
    hf_json_append_cstr(&detail, id);
    hf_buf_puts(&detail, ",\"scopes\":");
    hf_buf_append(&detail, scopes_json.data, scopes_json.len);
    hf_buf_puts(&detail, ",\"redirect_uri\":");
    hf_json_append_cstr(&detail, redirect_uri);
    hf_buf_putc(&detail, '}');
    in_tx = false; /* api_audit_commit ends it, whatever the outcome */
    if (api_audit_commit(c, "integration.oauth_started", "connector", id, detail.data, err,
                         sizeof err) != 0)
        goto internal;

    hf_buf_puts(&url, authorize);
    hf_buf_putc(&url, strchr(authorize, '?') ? '&' : '?');
    hf_buf_puts(&url, "client_id=");
    connector_url_escape(&url, client_id);
    hf_buf_puts(&url, "&redirect_uri=");
    connector_url_escape(&url, redirect_uri);
    hf_buf_puts(&url, "&response_type=code&scope=");
    connector_url_escape(&url, scope_param.data ? scope_param.data : "");
    hf_buf_puts(&url, "&state=");
    connector_url_escape(&url, state);
    hf_buf_puts(&url, "&code_challenge=");
    connector_url_escape(&url, challenge);
    hf_buf_puts(&url, "&code_challenge_method=S256");

    hf_buf_puts(&out, "{\"authorize_url\":");
    hf_json_append_string(&out, url.data, url.len);
    hf_buf_puts(&out, ",\"state\":");
    hf_json_append_cstr(&out, state);
    hf_buf_puts(&out, ",\"scopes\":");
    hf_buf_append(&out, scopes_json.data, scopes_json.len);
    hf_buf_puts(&out, ",\"redirect_uri\":");
    hf_json_append_cstr(&out, redirect_uri);
    hf_buf_puts(&out, ",\"expires_at\":");
    hf_json_append_cstr(&out, expires_at);
    hf_buf_putc(&out, '}');
    api_reply_json(c, 201, out.data, out.len);
    explicit_bzero(state, sizeof state);
    goto done;
internal:
    api_reply_internal(c, err);
done:
    if (in_tx)
        hf_pg_rollback(c->db);
    PQclear(res);
    secret_free(client_id);
    free(state_bytea);
    free(redirect_uri);
    free(vctx);
    free(vseal);
    free(vhex);
    hf_pg_array_free(&scopes);
    hf_buf_free(&scopes_json);
    hf_buf_free(&scope_param);
    hf_buf_free(&url);
    hf_buf_free(&out);
    hf_buf_free(&detail);
}

/* ---- GET /api/integrations/{connector}/oauth/callback -------------------------------------- */

/* The space-separated scope string (or the fallback array literal) as a text[] literal. */
static void scopes_literal(const char *scope, hf_pg_array *out)
{
    const char *p = scope;
    while (p && *p) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, " ,");
        if (n) {
            char *one = xstrndup(p, n);
            hf_pg_array_add(out, one);
            free(one);
        }
        p += n;
    }
}

void api_integrations_oauth_callback(api_ctx *c)
{
    const hf_connector *k = path_connector(c);
    char *state = NULL, *code = NULL, *error = NULL, *error_description = NULL;
    char *client_id = NULL, *client_secret = NULL, *verifier = NULL, *vctx = NULL;
    char *redirect_uri = NULL, *requested = NULL, *named_account = NULL;
    unsigned char *vseal = NULL;
    connector_request req = {0};
    hf_buf answer = {0}, detail = {0};
    oauth_grant grant = {0};
    hf_pg_array granted = {0};
    PGresult *res = NULL;
    char err[512];
    if (!k)
        return;
    const char *id = hf_connector_id(k);
    if (!uses_oauth(k)) {
        api_reply_error(c, 400, "oauth_not_supported", "this connector does not use OAuth");
        return;
    }
    if (strcmp(c->method, "HEAD") == 0) {
        /* A link checker or prefetcher must not use up the admin's one callback. */
        api_reply_error(c, 400, "invalid_request", "the OAuth callback takes GET");
        return;
    }
    state = api_query_param(c, "state");
    code = api_query_param(c, "code");
    error = api_query_param(c, "error");
    error_description = api_query_param(c, "error_description");
    if (!state || !*state || strlen(state) > 256) {
        api_reply_error(c, 400, "invalid_state",
                        "state is missing: start the authorisation from the integrations page");
        goto done;
    }

    /* Consume the state before talking to the platform: one callback per state, ever. */
    unsigned char hash[HF_SHA256_LEN];
    char hash_hex[2 * HF_SHA256_LEN + 1];
    hf_sha256(state, strlen(state), hash);
    hf_hex_encode(hash, sizeof hash, hash_hex);
    char *hash_bytea = xasprintf("\\x%s", hash_hex);
    const char *p1[] = {hash_bytea, id};
    int x = hf_pg_exec(c->db,
                       "UPDATE oauth_states s SET used_at = now() FROM tenants t "
                       "WHERE s.state_hash = $1::bytea AND s.connector = $2"
                       "  AND s.used_at IS NULL AND s.expires_at > now() AND t.id = s.tenant_id "
                       "RETURNING s.tenant_id, s.branch, s.created_by, s.code_verifier_enc,"
                       "  s.redirect_uri, s.scopes::text, s.account, t.environment",
                       2, p1, &res, err, sizeof err);
    free(hash_bytea);
    if (x != HF_PG_OK) {
        api_reply_internal(c, err);
        goto done;
    }
    if (PQntuples(res) == 0) {
        api_reply_error(c, 400, "invalid_state",
                        "unknown, expired or already used state: start the authorisation again");
        goto done;
    }
    /* The callback acts for the admin who started it. */
    snprintf(c->who.tenant_id, sizeof c->who.tenant_id, "%s", PQgetvalue(res, 0, 0));
    snprintf(c->who.branch, sizeof c->who.branch, "%s", PQgetvalue(res, 0, 1));
    snprintf(c->who.user, sizeof c->who.user, "%s", PQgetvalue(res, 0, 2));
    snprintf(c->who.environment, sizeof c->who.environment, "%s", PQgetvalue(res, 0, 7));
    size_t vlen = 0;
    vseal = hf_pg_bytea_decode(PQgetvalue(res, 0, 3), &vlen);
    redirect_uri = xstrdup(PQgetvalue(res, 0, 4));
    requested = xstrdup(PQgetvalue(res, 0, 5));
    named_account = PQgetisnull(res, 0, 6) ? NULL : xstrdup(PQgetvalue(res, 0, 6));
    PQclear(res);
    res = NULL;

    if (error && *error) {
        /* The admin declined (access_denied) or the platform refused: say what it said. */
        hf_buf code_text = {0}, d = {0};
        for (const char *p = error; *p && code_text.len < 64; p++)
            if (isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '.')
                hf_buf_putc(&code_text, *p);
        if (!code_text.len)
            hf_buf_puts(&code_text, "authorization_failed");
        if (error_description && *error_description)
            hf_buf_put_quoted(&d, error_description, 300);
        else
            hf_buf_printf(&d, "the platform answered %s", code_text.data);
        hf_buf_puts(&detail, "{\"connector\":");
        hf_json_append_cstr(&detail, id);
        hf_buf_puts(&detail, ",\"error\":");
        hf_json_append_string(&detail, code_text.data, code_text.len);
        hf_buf_puts(&detail, ",\"error_description\":");
        hf_json_append_string(&detail, d.data ? d.data : "", d.len);
        hf_buf_putc(&detail, '}');
        (void)api_audit(c, "integration.oauth_denied", "connector", id, detail.data);
        api_reply_error(c, 400, code_text.data, d.data ? d.data : "");
        hf_buf_free(&code_text);
        hf_buf_free(&d);
        goto done;
    }
    if (strcmp(id, "quickbooks") == 0 && !quickbooks_realm_ok(c)) {
        /* Checked before the exchange: without the company the code is of no use. */
        api_reply_error(c, 400, "account_unknown",
                        "realmId: QuickBooks sends the company's realmId (digits) with the "
                        "redirect; it is missing or malformed");
        goto done;
    }
    if (!code || !*code || strlen(code) > 4096) {
        api_reply_error(c, 400, "invalid_request", "code is missing from the platform's redirect");
        goto done;
    }
    if (!c->keys) {
        api_reply_error(c, 503, "not_configured",
                        "the secret " ENGINE_TOKEN_KEY_PATH " is not configured");
        goto done;
    }
    if (!vseal) { /* the pending row lost its sealed verifier: nothing an admin can fix here */
        api_reply_internal(c, "oauth callback: the pending connection has no PKCE verifier");
        goto done;
    }
    vctx = engine_token_context(id, hash_hex, "pkce_verifier");
    verifier = engine_token_open(c->keys, vctx, vseal, vlen);
    if (!verifier) {
        api_reply_internal(c, "oauth callback: the PKCE verifier does not open with the token key");
        goto done;
    }
    char path[96];
    snprintf(path, sizeof path, "%s/client_id", id);
    client_id = secret_value(c->secrets, path);
    snprintf(path, sizeof path, "%s/client_secret", id);
    client_secret = secret_value(c->secrets, path);
    if (!client_id || !client_secret) {
        char d[160];
        snprintf(d, sizeof d, "the secrets %s/client_id and %s/client_secret must be configured",
                 id, id);
        api_reply_error(c, 503, "not_configured", d);
        goto done;
    }
    if (engine_oauth_code_request(id, client_id, client_secret, code, redirect_uri, verifier, &req,
                                  err, sizeof err) != 0) {
        api_reply_error(c, 503, "not_configured", err);
        goto done;
    }
    char terr[256] = "";
    long status = connector_perform(&req, PLATFORM_TIMEOUT_MS, &answer, terr, sizeof terr);
    if (status == 0) {
        hf_buf d = {0};
        hf_buf_printf(&d, "the %s token endpoint could not be reached: %s", id, terr);
        api_reply_error(c, 502, "token_exchange_failed", d.data);
        hf_buf_free(&d);
        goto done;
    }
    int64_t expires_in = 3600;
    int parsed =
        engine_oauth_parse_token(answer.data ? answer.data : "", answer.len, &grant.access,
                                 &grant.refresh, &expires_in, &grant.scope, err, sizeof err);
    if (parsed == 0 && (status < 200 || status > 299)) /* a token, but not a success: err unset */
        hf_err(err, sizeof err, "a token came with a status that is not a success");
    if (parsed != 0 || status < 200 || status > 299) {
        hf_buf d = {0};
        hf_buf_printf(&d, "%s refused the authorization code (HTTP %ld): ", id, status);
        hf_buf_put_quoted(&d, err, 400);
        api_reply_error(c, 502, "token_exchange_failed", d.data);
        hf_buf_free(&d);
        goto done;
    }
    grant.expires_in = expires_in;
    grant.refresh_expires_in =
        engine_oauth_refresh_expires_in(answer.data ? answer.data : "", answer.len);
    int arc = find_account(c, id, answer.data ? answer.data : "", &grant, named_account, client_id,
                           client_secret, err, sizeof err);
    if (arc != 0) {
        api_reply_error(c, arc, arc == 400 ? "account_unknown" : "account_lookup_failed", err);
        goto done;
    }
    const char *scope = grant.scope ? grant.scope : grant.lookup_scopes;
    scopes_literal(scope, &granted);
    new_connection n = {
        .tenant_id = c->who.tenant_id,
        .environment = c->who.environment,
        .user = c->who.user,
        .k = k,
        .account = grant.account,
        .access = grant.access,
        .refresh = grant.refresh,
        .expires_in = grant.expires_in,
        .refresh_expires_in = grant.refresh ? grant.refresh_expires_in : -1,
        .granted = granted.n ? hf_pg_array_text(&granted) : requested,
        .requested = requested,
        .via = "oauth",
    };
    char stored[16];
    if (store_connection(c, &n, stored) != 0)
        goto done;
    const char *accept = api_header(c, "Accept");
    if (accept && strstr(accept, "application/json")) {
        reply_view(c, 200, k, c->who.tenant_id, c->who.environment, "connected");
    } else {
        size_t plen = strlen(c->public_url ? c->public_url : "");
        while (plen > 0 && c->public_url[plen - 1] == '/')
            plen--;
        char *location = xasprintf("%.*s/automation/integrations?connected=%s", (int)plen,
                                   c->public_url ? c->public_url : "", id);
        api_set_header(c, "Location", location);
        api_set_header(c, "Cache-Control", "no-store");
        api_reply(c, 302, NULL, NULL, 0);
        free(location);
    }
done:
    PQclear(res);
    free(state);
    secret_free(code);
    free(error);
    free(error_description);
    secret_free(client_id);
    secret_free(client_secret);
    secret_free(verifier);
    free(vctx);
    free(vseal);
    free(redirect_uri);
    free(requested);
    free(named_account);
    connector_request_free(&req);
    if (answer.data)
        explicit_bzero(answer.data, answer.len);
    hf_buf_free(&answer);
    hf_buf_free(&detail);
    grant_free(&grant);
    hf_pg_array_free(&granted);
}

/* ---- PUT /api/integrations/{connector}/credentials (Twilio) -------------------------------- */

static bool twilio_sid_ok(const char *s)
{
    if (!s || strlen(s) != 34 || s[0] != 'A' || s[1] != 'C')
        return false;
    for (int i = 2; i < 34; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return true;
}

void api_integrations_credentials(api_ctx *c)
{
    static const char *const allowed[] = {"account_sid", "auth_token", NULL};
    const hf_connector *k = path_connector(c);
    hf_json body = NULL;
    hf_pg_array scopes = {0};
    if (!k)
        return;
    const char *id = hf_connector_id(k);
    if (uses_oauth(k)) {
        char d[200];
        snprintf(d, sizeof d,
                 "%s connects with OAuth: POST /api/integrations/%s/oauth/start instead", id, id);
        api_reply_error(c, 400, "credentials_not_supported", d);
        return;
    }
    if (api_body_object(c, allowed, &body) != 0)
        return;
    const char *sid = NULL, *token = NULL;
    if (!body) {
        api_reply_error(c, 400, "invalid_body", "a JSON object with account_sid and auth_token");
        goto done;
    }
    if (body_string(c, body, "account_sid", &sid) != 0 ||
        body_string(c, body, "auth_token", &token) != 0)
        goto done;
    if (!twilio_sid_ok(sid)) {
        api_reply_error(c, 400, "invalid_field",
                        "account_sid: must be \"AC\" followed by 32 hexadecimal digits");
        goto done;
    }
    size_t tlen = token ? strlen(token) : 0;
    bool token_ok = tlen >= 16 && tlen <= 256;
    for (size_t i = 0; token_ok && i < tlen; i++)
        token_ok = token[i] > 0x20 && token[i] < 0x7F;
    if (!token_ok) {
        api_reply_error(c, 400, "invalid_field",
                        "auth_token: must be 16 to 256 printable ASCII characters without spaces");
        goto done;
    }
    if (!c->keys) {
        api_reply_error(c, 503, "not_configured",
                        "the secret " ENGINE_TOKEN_KEY_PATH " is not configured");
        goto done;
    }
    catalog_scopes(k, &scopes, NULL);
    new_connection n = {
        .tenant_id = c->who.tenant_id,
        .environment = c->who.environment,
        .user = c->who.user,
        .k = k,
        .account = sid,
        .access = token,
        .refresh = NULL,
        .expires_in = -1,
        .refresh_expires_in = -1,
        .granted = hf_pg_array_text(&scopes),
        .requested = hf_pg_array_text(&scopes),
        .via = "credentials",
    };
    char stored[16];
    if (store_connection(c, &n, stored) == 0)
        reply_view(c, 200, k, c->who.tenant_id, c->who.environment, NULL);
done:
    hf_pg_array_free(&scopes);
}

/* ---- enable / disable ---------------------------------------------------------------------- */

static void set_enabled(api_ctx *c, bool enable)
{
    const hf_connector *k = path_connector(c);
    PGresult *res = NULL;
    hf_buf detail = {0};
    char err[512];
    bool in_tx = false;
    if (!k)
        return;
    const char *id = hf_connector_id(k);
    if (hf_pg_begin(c->db, err, sizeof err) != HF_PG_OK)
        goto internal;
    in_tx = true;
    const char *p[] = {c->who.tenant_id, id};
    if (enable && approval_required(k, c->who.environment)) {
        if (hf_pg_exec(c->db,
                       "SELECT 1 FROM support_approvals WHERE tenant_id = $1 AND connector = $2 "
                       "FOR SHARE",
                       2, p, &res, err, sizeof err) != HF_PG_OK)
            goto internal;
        if (PQntuples(res) == 0) {
            hf_buf d = {0};
            beta_message(&d, k);
            api_reply_error(c, 403, "beta_not_approved", d.data);
            hf_buf_free(&d);
            goto done;
        }
        PQclear(res);
        res = NULL;
    }
    /* Enabling needs an authorised connection (an account and a token); disabling also drops an
     * authorisation that was started and never finished (the pending placeholder) and spends its
     * OAuth states, so the login the admin turned off cannot complete afterwards. */
    if (hf_pg_exec(c->db,
                   enable ? "UPDATE connections SET status = 'active', updated_at = now() "
                            "WHERE tenant_id = $1 AND connector = $2 AND account IS NOT NULL"
                            "  AND access_token_enc IS NOT NULL RETURNING account"
                          : "WITH revoked AS (UPDATE oauth_states SET used_at = now()"
                            "    WHERE tenant_id = $1 AND connector = $2 AND used_at IS NULL),"
                            "  gone AS (DELETE FROM connections WHERE tenant_id = $1"
                            "    AND connector = $2 AND account IS NULL RETURNING account),"
                            "  off AS (UPDATE connections SET status = 'disabled',"
                            "    updated_at = now() WHERE tenant_id = $1 AND connector = $2"
                            "    AND account IS NOT NULL RETURNING account) "
                            "SELECT account FROM off UNION ALL SELECT account FROM gone",
                   2, p, &res, err, sizeof err) != HF_PG_OK)
        goto internal;
    if (PQntuples(res) == 0) {
        char d[200];
        if (enable)
            snprintf(d, sizeof d, "%s is not connected: authorise it first (%s)", id,
                     uses_oauth(k) ? "POST .../oauth/start" : "PUT .../credentials");
        else
            snprintf(d, sizeof d, "%s is not connected", id);
        api_reply_error(c, 409, "not_connected", d);
        goto done;
    }
    hf_buf_puts(&detail, "{\"connector\":");
    hf_json_append_cstr(&detail, id);
    hf_buf_puts(&detail, ",\"accounts\":[");
    for (int r = 0; r < PQntuples(res); r++) {
        if (r)
            hf_buf_putc(&detail, ',');
        if (PQgetisnull(res, r, 0)) /* an authorisation that never finished, dropped */
            hf_buf_puts(&detail, "null");
        else
            hf_json_append_cstr(&detail, PQgetvalue(res, r, 0));
    }
    hf_buf_puts(&detail, "]}");
    in_tx = false; /* api_audit_commit ends it, whatever the outcome */
    if (api_audit_commit(c, enable ? "integration.enabled" : "integration.disabled", "connector",
                         id, detail.data, err, sizeof err) != 0)
        goto internal;
    reply_view(c, 200, k, c->who.tenant_id, c->who.environment, NULL);
    goto done;
internal:
    api_reply_internal(c, err);
done:
    if (in_tx)
        hf_pg_rollback(c->db);
    PQclear(res);
    hf_buf_free(&detail);
}

void api_integrations_enable(api_ctx *c)
{
    set_enabled(c, true);
}

void api_integrations_disable(api_ctx *c)
{
    set_enabled(c, false);
}

/* clang-format off */
/* Records (or renews) the approval of connector $2 for tenant $1 by $3 with note $4. */
#define APPROVAL_UPSERT_SQL                                                                        \
    "INSERT INTO support_approvals (tenant_id, connector, approved_by, note) "                     \
    "VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, connector) DO UPDATE SET "                    \
    "  approved_by = EXCLUDED.approved_by, approved_at = now(), note = EXCLUDED.note "             \
    "RETURNING " API_TS("approved_at")
/* clang-format on */

/* ---- POST /api/integrations/{connector}/approval ------------------------------------------- */

/* True when user is a line of the api/support_users secret (see the file comment). */
static bool is_support_user(const hf_secrets *s, const char *user)
{
    const char *vals[2];
    size_t lens[2];
    if (!s || !user || !*user || hf_secrets_get(s, SUPPORT_USERS_SECRET, vals, lens) == 0)
        return false;
    const char *p = vals[0], *end = vals[0] + lens[0];
    size_t ulen = strlen(user);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        const char *a = p, *b = e;
        while (a < b && isspace((unsigned char)*a))
            a++;
        while (b > a && isspace((unsigned char)b[-1]))
            b--;
        if (b > a && *a != '#' && (size_t)(b - a) == ulen && memcmp(a, user, ulen) == 0)
            return true;
        p = nl ? nl + 1 : end;
    }
    return false;
}

void api_integrations_approve(api_ctx *c)
{
    static const char *const allowed[] = {"note", NULL};
    const hf_connector *k = path_connector(c);
    hf_json body = NULL;
    PGresult *res = NULL;
    hf_buf detail = {0};
    char err[512];
    bool in_tx = false;
    if (!k)
        return;
    const char *id = hf_connector_id(k);
    if (!is_support_user(c->secrets, c->who.user)) {
        api_reply_error(c, 403, "forbidden", "only support staff may approve Beta connectors");
        return;
    }
    if (!c->who.environment[0]) { /* the token names a tenant that does not exist */
        api_reply_not_found(c, "tenant");
        return;
    }
    if (!hf_connector_is_beta(k)) {
        char d[160];
        snprintf(d, sizeof d, "%s is GA: it needs no approval", id);
        api_reply_error(c, 400, "not_beta", d);
        return;
    }
    if (api_body_object(c, allowed, &body) != 0)
        return;
    const char *note = NULL;
    if (body_string(c, body, "note", &note) != 0)
        goto done;
    if (note && strlen(note) > NOTE_MAX) {
        api_reply_error(c, 400, "invalid_field", "note: at most 1000 bytes");
        goto done;
    }
    if (hf_pg_begin(c->db, err, sizeof err) != HF_PG_OK)
        goto internal;
    in_tx = true;
    const char *p[] = {c->who.tenant_id, id, c->who.user, note};
    if (hf_pg_exec(c->db, APPROVAL_UPSERT_SQL, 4, p, &res, err, sizeof err) != HF_PG_OK)
        goto internal;
    hf_buf_puts(&detail, "{\"connector\":");
    hf_json_append_cstr(&detail, id);
    hf_buf_puts(&detail, ",\"approved_at\":");
    hf_json_append_cstr(&detail, PQgetvalue(res, 0, 0));
    hf_buf_puts(&detail, ",\"note\":");
    if (note)
        hf_json_append_cstr(&detail, note);
    else
        hf_buf_puts(&detail, "null");
    hf_buf_putc(&detail, '}');
    in_tx = false; /* api_audit_commit ends it, whatever the outcome */
    if (api_audit_commit(c, "integration.approved", "connector", id, detail.data, err,
                         sizeof err) != 0)
        goto internal;
    reply_view(c, 200, k, c->who.tenant_id, c->who.environment, NULL);
    goto done;
internal:
    api_reply_internal(c, err);
done:
    if (in_tx)
        hf_pg_rollback(c->db);
    PQclear(res);
    hf_buf_free(&detail);
}
