/* connector: lookup, endpoints and OAuth token requests of the six connectors, and the helpers
 * their implementations share (requests, params, URL/form encoding, output, error lines). */
#include "connector.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "crypto.h"

/* ---- lookup and endpoints ---- */

typedef struct endpoint {
    const engine_connector *connector;
    const char *base_env, *base_url;   /* real API base */
    const char *token_env, *token_url; /* real OAuth token endpoint; NULL: none */
} endpoint;

static const endpoint endpoints[] = {
    {&engine_connector_xero, "HOOKFLOW_CONNECTOR_XERO_BASE_URL", "https://api.xero.com",
     "HOOKFLOW_CONNECTOR_XERO_TOKEN_URL", "https://identity.xero.com/connect/token"},
    {&engine_connector_quickbooks, "HOOKFLOW_CONNECTOR_QUICKBOOKS_BASE_URL",
     "https://quickbooks.api.intuit.com", "HOOKFLOW_CONNECTOR_QUICKBOOKS_TOKEN_URL",
     "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"},
    {&engine_connector_hubspot, "HOOKFLOW_CONNECTOR_HUBSPOT_BASE_URL", "https://api.hubapi.com",
     "HOOKFLOW_CONNECTOR_HUBSPOT_TOKEN_URL", "https://api.hubapi.com/oauth/2026-03/token"},
    {&engine_connector_klaviyo, "HOOKFLOW_CONNECTOR_KLAVIYO_BASE_URL", "https://a.klaviyo.com",
     "HOOKFLOW_CONNECTOR_KLAVIYO_TOKEN_URL", "https://a.klaviyo.com/oauth/token"},
    {&engine_connector_twilio, "HOOKFLOW_CONNECTOR_TWILIO_BASE_URL", "https://api.twilio.com", NULL,
     NULL},
    {&engine_connector_meta, "HOOKFLOW_CONNECTOR_META_BASE_URL", "https://graph.facebook.com",
     "HOOKFLOW_CONNECTOR_META_TOKEN_URL", "https://graph.facebook.com/v25.0/oauth/access_token"},
};

static const endpoint *endpoint_find(const char *id)
{
    for (size_t i = 0; id && i < HF_ARRAY_LEN(endpoints); i++)
        if (strcmp(endpoints[i].connector->id, id) == 0)
            return &endpoints[i];
    return NULL;
}

const engine_connector *engine_connector_find(const char *id)
{
    const endpoint *e = endpoint_find(id);
    return e ? e->connector : NULL;
}

static const char *setting_or(const char *name, const char *def)
{
    const char *v = name ? hf_config_get(name) : NULL;
    return v && v[0] ? v : def;
}

const char *engine_connector_base_url(const char *id)
{
    const endpoint *e = endpoint_find(id);
    return e ? setting_or(e->base_env, e->base_url) : NULL;
}

bool engine_connector_repeat_safe(const engine_connector *c, const char *action)
{
    return strcmp(c->idempotency, "none") != 0 || (c->repeat_safe && c->repeat_safe(action));
}

const char *engine_connector_token_url(const char *id)
{
    const endpoint *e = endpoint_find(id);
    return e && e->token_url ? setting_or(e->token_env, e->token_url) : NULL;
}

/* ---- requests ---- */

static void wipe_free(char *s, size_t n)
{
    if (s) {
        explicit_bzero(s, n);
        free(s);
    }
}

void connector_request_free(connector_request *r)
{
    if (!r)
        return;
    free(r->method);
    wipe_free(r->url, r->url ? strlen(r->url) : 0); /* Meta's code exchange carries a secret */
    for (size_t i = 0; i < r->nheaders; i++)
        wipe_free(r->headers[i], strlen(r->headers[i]));
    free(r->headers);
    wipe_free(r->body, r->body_len);
    wipe_free(r->basic_user, r->basic_user ? strlen(r->basic_user) : 0);
    wipe_free(r->basic_password, r->basic_password ? strlen(r->basic_password) : 0);
    memset(r, 0, sizeof *r);
}

void connector_request_start(connector_request *out, const char *method, char *url)
{
    memset(out, 0, sizeof *out);
    out->method = xstrdup(method);
    out->url = url;
    out->headers = xcalloc(1, sizeof *out->headers);
}

void connector_request_header(connector_request *out, const char *fmt, ...)
{
    hf_buf line = {0};
    va_list ap;
    va_start(ap, fmt);
    hf_buf_vprintf(&line, fmt, ap);
    va_end(ap);
    out->headers = xrealloc(out->headers, (out->nheaders + 2) * sizeof *out->headers);
    out->headers[out->nheaders++] = hf_buf_steal(&line);
    out->headers[out->nheaders] = NULL;
}

void connector_request_body(connector_request *out, hf_buf *body)
{
    out->body_len = body->len;
    out->body = hf_buf_steal(body);
}

char *connector_url(const char *base, const char *fmt, ...)
{
    hf_buf url = {0};
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    hf_buf_append(&url, base, n);
    va_list ap;
    va_start(ap, fmt);
    hf_buf_vprintf(&url, fmt, ap);
    va_end(ap);
    return hf_buf_steal(&url);
}

void connector_url_account(hf_buf *url, const char *base, const char *prefix, const char *account)
{
    char *start = connector_url(base, "%s", prefix);
    hf_buf_puts(url, start);
    free(start);
    connector_url_escape(url, account);
}

static bool unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static void percent_encode(hf_buf *out, const char *s, bool space_as_plus)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (unreserved(*p)) {
            hf_buf_putc(out, (char)*p);
        } else if (*p == ' ' && space_as_plus) {
            hf_buf_putc(out, '+');
        } else {
            char esc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
            hf_buf_append(out, esc, 3);
        }
    }
}

void connector_url_escape(hf_buf *out, const char *s)
{
    percent_encode(out, s, false);
}

void connector_form_add(hf_buf *form, const char *name, const char *value)
{
    if (form->len)
        hf_buf_putc(form, '&');
    percent_encode(form, name, true);
    hf_buf_putc(form, '=');
    percent_encode(form, value, true);
}

char *connector_idempotency_key(const char *key, size_t max)
{
    if (!key || !key[0])
        return NULL;
    size_t n = strlen(key);
    bool plain = n <= max;
    for (size_t i = 0; plain && i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        plain = isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-';
    }
    if (plain)
        return xstrdup(key);
    unsigned char digest[HF_SHA256_LEN];
    char hex[2 * HF_SHA256_LEN + 1];
    hf_sha256(key, n, digest);
    hf_hex_encode(digest, sizeof digest, hex);
    return xstrndup(hex, max < sizeof hex - 1 ? max : sizeof hex - 1);
}

/* ---- params ---- */

#define WHERE(w) ((w) ? (w) : "")

/* The member, with null and "" counting as absent. */
static hf_json present(hf_json obj, const char *name)
{
    hf_json v = hf_json_get(obj, name);
    if (!v || YAJL_IS_NULL(v) || (YAJL_IS_STRING(v) && v->u.string[0] == '\0'))
        return NULL;
    return v;
}

static int missing(const char *where, const char *name, bool required, char *err, size_t errlen)
{
    if (required)
        return hf_err(err, errlen, "missing required param \"%s%s\"", WHERE(where), name);
    return 0;
}

int connector_param_string(hf_json obj, const char *where, const char *name, bool required,
                           const char **out, char *err, size_t errlen)
{
    *out = NULL;
    hf_json v = present(obj, name);
    if (!v)
        return missing(where, name, required, err, errlen);
    if (YAJL_IS_STRING(v))
        *out = v->u.string;
    else if (YAJL_IS_NUMBER(v)) /* ids and phone numbers often arrive as numbers */
        *out = v->u.number.r;
    else
        return hf_err(err, errlen, "param \"%s%s\" must be a string", WHERE(where), name);
    return 0;
}

bool connector_is_json_number(const char *s)
{
    const char *p = s;
    if (*p == '-')
        p++;
    if (*p == '0')
        p++;
    else if (*p >= '1' && *p <= '9')
        while (isdigit((unsigned char)*p))
            p++;
    else
        return false;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    return *p == '\0';
}

int connector_param_number(hf_json obj, const char *where, const char *name, bool required,
                           const char **out, char *err, size_t errlen)
{
    *out = NULL;
    hf_json v = present(obj, name);
    if (!v)
        return missing(where, name, required, err, errlen);
    if (YAJL_IS_NUMBER(v))
        *out = v->u.number.r;
    else if (YAJL_IS_STRING(v) && connector_is_json_number(v->u.string))
        *out = v->u.string;
    else
        return hf_err(err, errlen, "param \"%s%s\" must be a number", WHERE(where), name);
    return 0;
}

int connector_param_object(hf_json obj, const char *where, const char *name, bool required,
                           hf_json *out, char *err, size_t errlen)
{
    *out = NULL;
    hf_json v = present(obj, name);
    if (!v)
        return missing(where, name, required, err, errlen);
    if (!YAJL_IS_OBJECT(v))
        return hf_err(err, errlen, "param \"%s%s\" must be an object", WHERE(where), name);
    *out = v;
    return 0;
}

int connector_param_array(hf_json obj, const char *where, const char *name, bool required,
                          hf_json *out, char *err, size_t errlen)
{
    *out = NULL;
    hf_json v = present(obj, name);
    if (!v)
        return missing(where, name, required, err, errlen);
    if (!YAJL_IS_ARRAY(v))
        return hf_err(err, errlen, "param \"%s%s\" must be an array", WHERE(where), name);
    if (required && v->u.array.len == 0)
        return hf_err(err, errlen, "param \"%s%s\" must not be empty", WHERE(where), name);
    *out = v;
    return 0;
}

int connector_param_enum(hf_json obj, const char *where, const char *name,
                         const char *const *choices, const char *def, const char **out, char *err,
                         size_t errlen)
{
    const char *s;
    if (connector_param_string(obj, where, name, false, &s, err, errlen) != 0)
        return -1;
    if (!s) {
        *out = def;
        return 0;
    }
    for (const char *const *c = choices; *c; c++) {
        if (strcmp(*c, s) == 0) {
            *out = *c;
            return 0;
        }
    }
    hf_buf allowed = {0};
    for (const char *const *c = choices; *c; c++)
        hf_buf_printf(&allowed, "%s%s", c == choices ? "" : "|", *c);
    hf_err(err, errlen, "param \"%s%s\" must be one of %s", WHERE(where), name, allowed.data);
    hf_buf_free(&allowed);
    *out = NULL;
    return -1;
}

/* Values that go into a header line or a URL: no control characters (header injection). */
static bool printable(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

int connector_check_call(hf_json params, const connector_conn *conn, const char *account_term,
                         char *err, size_t errlen)
{
    if (params && !YAJL_IS_OBJECT(params))
        return hf_err(err, errlen, "params must be a JSON object");
    if (!conn || !conn->access_token || !conn->access_token[0])
        return hf_err(err, errlen, "the connection has no access token");
    if (!printable(conn->access_token))
        return hf_err(err, errlen, "the connection's access token contains control characters");
    if (!conn->account || !conn->account[0])
        return hf_err(err, errlen, "the connection has no account (%s)", account_term);
    if (!printable(conn->account))
        return hf_err(err, errlen, "the connection's account (%s) contains control characters",
                      account_term);
    /* "." and ".." would be dot-segments in the URL paths the account goes into (libcurl
     * removes them: /company/../invoice is sent as /invoice). */
    if (strspn(conn->account, ".") == strlen(conn->account))
        return hf_err(err, errlen, "the connection's account (%s) \"%s\" is not an id",
                      account_term, conn->account);
    return 0;
}

/* ---- output ---- */

void connector_output_begin(connector_output *o, hf_buf *buf)
{
    o->buf = buf;
    o->any = false;
    hf_buf_putc(buf, '{');
}

void connector_output_end(connector_output *o)
{
    hf_buf_putc(o->buf, '}');
}

void connector_output_key(connector_output *o, const char *key)
{
    if (o->any)
        hf_buf_putc(o->buf, ',');
    o->any = true;
    hf_json_append_cstr(o->buf, key);
    hf_buf_putc(o->buf, ':');
}

void connector_output_opt_str(connector_output *o, const char *key, const char *s)
{
    if (s) {
        connector_output_key(o, key);
        hf_json_append_cstr(o->buf, s);
    }
}

void connector_output_opt_raw(connector_output *o, const char *key, const char *json)
{
    if (json) {
        connector_output_key(o, key);
        hf_buf_puts(o->buf, json);
    }
}

void connector_output_opt_nested(connector_output *o, const char *key, const char *inner,
                                 const char *s)
{
    if (!s)
        return;
    connector_output nested;
    connector_output_key(o, key);
    connector_output_begin(&nested, o->buf);
    connector_output_opt_str(&nested, inner, s);
    connector_output_end(&nested);
}

void connector_output_string(connector_output *o, const char *key, hf_json v)
{
    connector_output_key(o, key);
    if (YAJL_IS_STRING(v))
        hf_json_append_cstr(o->buf, v->u.string);
    else if (YAJL_IS_NUMBER(v))
        hf_json_append_cstr(o->buf, v->u.number.r);
    else
        hf_buf_puts(o->buf, "null");
}

void connector_output_cstr(connector_output *o, const char *key, const char *s)
{
    connector_output_key(o, key);
    if (s)
        hf_json_append_cstr(o->buf, s);
    else
        hf_buf_puts(o->buf, "null");
}

void connector_output_number(connector_output *o, const char *key, hf_json v)
{
    connector_output_key(o, key);
    if (YAJL_IS_NUMBER(v))
        hf_buf_puts(o->buf, v->u.number.r);
    else if (YAJL_IS_STRING(v) && connector_is_json_number(v->u.string))
        hf_buf_puts(o->buf, v->u.string);
    else
        hf_buf_puts(o->buf, "null");
}

void connector_output_bool(connector_output *o, const char *key, hf_json v)
{
    connector_output_key(o, key);
    hf_buf_puts(o->buf, YAJL_IS_TRUE(v) ? "true" : YAJL_IS_FALSE(v) ? "false" : "null");
}

void connector_output_object(connector_output *o, const char *key, hf_json v)
{
    connector_output_key(o, key);
    if (YAJL_IS_OBJECT(v))
        hf_json_serialize(v, o->buf);
    else
        hf_buf_puts(o->buf, "null");
}

void connector_output_raw(connector_output *o, hf_json answer, size_t body_len)
{
    if (!answer || body_len >= CONNECTOR_RAW_MAX)
        return;
    connector_output_key(o, "raw");
    hf_json_serialize(answer, o->buf);
}

/* ---- answers and errors ---- */

connector_outcome connector_classify(long status)
{
    if (status >= 200 && status < 300)
        return CONNECTOR_OK;
    if (status == 401)
        return CONNECTOR_AUTH;
    if (status == 408 || status == 429 || status >= 500 || status <= 0)
        return CONNECTOR_RETRY;
    return CONNECTOR_FAIL;
}

/* Writes s (or a generic text) as one line of at most max bytes, cut at a UTF-8 boundary. */
static void one_line(hf_buf *out, const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        hf_buf_putc(out, c < 0x20 || c == 0x7f ? ' ' : (char)c);
    }
    if (n < strlen(s))
        hf_buf_puts(out, "...");
}

void connector_error(char *err, size_t errlen, long status, const char *message)
{
    hf_buf line = {0};
    hf_buf_printf(&line, "HTTP %ld: ", status);
    if (message && message[0])
        one_line(&line, message, 400);
    else if (status == 401)
        hf_buf_puts(&line, "unauthorized (token invalid or expired)");
    else if (status == 429)
        hf_buf_puts(&line, "rate limited");
    else
        hf_buf_puts(&line, "no error message in the answer");
    hf_err(err, errlen, "%s", line.data);
    hf_buf_free(&line);
}

hf_json connector_parse_answer(const char *body, size_t len)
{
    if (!body || len == 0)
        return NULL;
    return hf_json_parse(body, len, NULL, 0);
}

/* ---- OAuth ---- */

typedef enum { CLIENT_AUTH_BASIC, CLIENT_AUTH_FORM } client_auth;

/* How the platform authenticates the client at its token endpoint. */
static int oauth_style(const char *id, bool refresh, client_auth *style, char *err, size_t errlen)
{
    if (!engine_connector_find(id))
        return hf_err(err, errlen, "unknown connector \"%s\"", id ? id : "(null)");
    if (strcmp(id, "twilio") == 0)
        return hf_err(err, errlen,
                      "twilio does not use OAuth (HTTP Basic with the auth token): "
                      "not refreshable");
    if (refresh && strcmp(id, "meta") == 0)
        return hf_err(err, errlen,
                      "meta page access tokens are not refreshable: reconnect the "
                      "page to get a new one");
    *style = strcmp(id, "hubspot") == 0 ? CLIENT_AUTH_FORM : CLIENT_AUTH_BASIC;
    return 0;
}

static int need(const char *value, const char *name, char *err, size_t errlen)
{
    if (!value || !value[0])
        return hf_err(err, errlen, "missing %s", name);
    return 0;
}

/* The POST to the token endpoint around form, with the client authenticated per style. */
static void token_post(const char *id, client_auth style, const char *client_id,
                       const char *client_secret, hf_buf *form, connector_request *out)
{
    if (style == CLIENT_AUTH_FORM) {
        connector_form_add(form, "client_id", client_id);
        connector_form_add(form, "client_secret", client_secret);
    }
    connector_request_start(out, "POST", xstrdup(engine_connector_token_url(id)));
    connector_request_header(out, "Content-Type: application/x-www-form-urlencoded");
    connector_request_header(out, "Accept: application/json");
    if (style == CLIENT_AUTH_BASIC) {
        out->basic_user = xstrdup(client_id);
        out->basic_password = xstrdup(client_secret);
    }
    connector_request_body(out, form);
}

int engine_oauth_refresh_request(const char *id, const char *client_id, const char *client_secret,
                                 const char *refresh_token, connector_request *out, char *err,
                                 size_t errlen)
{
    client_auth style;
    memset(out, 0, sizeof *out);
    if (oauth_style(id, true, &style, err, errlen) != 0 ||
        need(client_id, "client_id", err, errlen) != 0 ||
        need(client_secret, "client_secret", err, errlen) != 0 ||
        need(refresh_token, "refresh_token", err, errlen) != 0)
        return -1;
    hf_buf form = {0};
    connector_form_add(&form, "grant_type", "refresh_token");
    connector_form_add(&form, "refresh_token", refresh_token);
    token_post(id, style, client_id, client_secret, &form, out);
    return 0;
}

int engine_oauth_code_request(const char *id, const char *client_id, const char *client_secret,
                              const char *code, const char *redirect_uri, const char *code_verifier,
                              connector_request *out, char *err, size_t errlen)
{
    client_auth style;
    memset(out, 0, sizeof *out);
    if (oauth_style(id, false, &style, err, errlen) != 0 ||
        need(client_id, "client_id", err, errlen) != 0 ||
        need(client_secret, "client_secret", err, errlen) != 0 ||
        need(code, "code", err, errlen) != 0 ||
        need(redirect_uri, "redirect_uri", err, errlen) != 0)
        return -1;
    if (strcmp(id, "klaviyo") == 0 &&
        need(code_verifier, "code_verifier (Klaviyo requires PKCE)", err, errlen) != 0)
        return -1;

    hf_buf form = {0};
    if (strcmp(id, "meta") == 0) {
        /* Meta documents the exchange as a GET with everything in the query. */
        connector_form_add(&form, "client_id", client_id);
        connector_form_add(&form, "redirect_uri", redirect_uri);
        connector_form_add(&form, "client_secret", client_secret);
        connector_form_add(&form, "code", code);
        if (code_verifier && code_verifier[0])
            connector_form_add(&form, "code_verifier", code_verifier);
        const char *base = engine_connector_token_url(id);
        char *url = xasprintf("%s%c%s", base, strchr(base, '?') ? '&' : '?', form.data);
        explicit_bzero(form.data, form.len);
        hf_buf_free(&form);
        connector_request_start(out, "GET", url);
        connector_request_header(out, "Accept: application/json");
        return 0;
    }
    connector_form_add(&form, "grant_type", "authorization_code");
    connector_form_add(&form, "code", code);
    connector_form_add(&form, "redirect_uri", redirect_uri);
    if (code_verifier && code_verifier[0])
        connector_form_add(&form, "code_verifier", code_verifier);
    token_post(id, style, client_id, client_secret, &form, out);
    return 0;
}

/* A one-line "token endpoint error: <what>" from an error answer's fields. */
static int token_error(char *err, size_t errlen, const char *code, const char *description)
{
    hf_buf line = {0};
    hf_buf_puts(&line, "token endpoint error: ");
    if (code && description) {
        one_line(&line, code, 100);
        hf_buf_puts(&line, ": ");
        one_line(&line, description, 300);
    } else {
        one_line(&line, code ? code : description ? description : "no details", 300);
    }
    hf_err(err, errlen, "%s", line.data);
    hf_buf_free(&line);
    return -1;
}

int engine_oauth_parse_token(const char *body, size_t len, char **access_token,
                             char **refresh_token, int64_t *expires_in, char **scope, char *err,
                             size_t errlen)
{
    *access_token = *refresh_token = *scope = NULL;
    *expires_in = 0;
    hf_json v = body && len ? hf_json_parse(body, len, NULL, 0) : NULL;
    if (!v || !hf_json_is_object(v)) {
        hf_json_free(v);
        /* The parser's message could quote the answer (and so a token): keep it generic. */
        return hf_err(err, errlen, "token answer is not a JSON object");
    }
    int rc = -1;
    hf_json e = hf_json_get(v, "error");
    const char *access = hf_json_str(hf_json_get(v, "access_token"));
    if (YAJL_IS_STRING(e)) { /* RFC 6749 section 5.2 */
        rc =
            token_error(err, errlen, e->u.string, hf_json_str(hf_json_get(v, "error_description")));
        goto done;
    }
    if (YAJL_IS_OBJECT(e)) { /* Meta: {"error":{"message","type","code"}} */
        rc = token_error(err, errlen, hf_json_str(hf_json_get(e, "type")),
                         hf_json_str(hf_json_get(e, "message")));
        goto done;
    }
    if (!access || !access[0]) {
        /* HubSpot: {"status":"BAD_REFRESH_TOKEN","message":"..."} */
        const char *status = hf_json_str(hf_json_get(v, "status"));
        const char *message = hf_json_str(hf_json_get(v, "message"));
        if (status || message)
            rc = token_error(err, errlen, status, message);
        else
            rc = hf_err(err, errlen, "token answer has no access_token");
        goto done;
    }

    int64_t expires = 3600;
    hf_json ex = hf_json_get(v, "expires_in");
    long long n;
    if (hf_json_int(ex, &n) && n > 0)
        expires = n;
    else if (YAJL_IS_STRING(ex) && hf_parse_ll(ex->u.string, &n) && n > 0)
        expires = n;
    /* At most a year: a token lives no longer, and an absurd value must not make the database
     * refuse the row that also holds the rotated refresh token (which would then be lost). */
    if (expires > ENGINE_OAUTH_MAX_EXPIRES_S)
        expires = ENGINE_OAUTH_MAX_EXPIRES_S;

    /* "scope" (RFC 6749: a space-separated string; some platforms an array); HubSpot's token
     * answers name theirs "scopes" (an array, beside hub_id). */
    hf_json sc = hf_json_get(v, "scope");
    if (!sc)
        sc = hf_json_get(v, "scopes");
    if (YAJL_IS_STRING(sc)) {
        *scope = xstrdup(sc->u.string);
    } else if (YAJL_IS_ARRAY(sc)) {
        hf_buf joined = {0};
        for (size_t i = 0; i < hf_json_len(sc); i++) {
            const char *s = hf_json_str(hf_json_at(sc, i));
            if (s)
                hf_buf_printf(&joined, "%s%s", joined.len ? " " : "", s);
        }
        *scope = hf_buf_steal(&joined);
    }
    const char *refresh = hf_json_str(hf_json_get(v, "refresh_token"));
    *access_token = xstrdup(access);
    *refresh_token = refresh && refresh[0] ? xstrdup(refresh) : NULL;
    *expires_in = expires;
    rc = 0;
done:
    hf_json_free(v);
    return rc;
}

int64_t engine_oauth_refresh_expires_in(const char *body, size_t len)
{
    static const char *const names[] = {"x_refresh_token_expires_in", "refresh_token_expires_in"};
    hf_json v = hf_json_parse(body, len, NULL, 0);
    int64_t out = -1;
    for (size_t i = 0; out < 0 && i < HF_ARRAY_LEN(names); i++) {
        hf_json e = hf_json_get(v, names[i]);
        long long n;
        if ((hf_json_int(e, &n) || (YAJL_IS_STRING(e) && hf_parse_ll(e->u.string, &n))) && n > 0)
            out = n > ENGINE_OAUTH_MAX_REFRESH_EXPIRES_S ? ENGINE_OAUTH_MAX_REFRESH_EXPIRES_S : n;
    }
    hf_json_free(v);
    return out;
}

/* ---- blocking calls ------------------------------------------------------------------------ */

#define PERFORM_MAX_BODY (1u << 20)

typedef struct perform_body {
    hf_buf buf;
    bool too_big;
} perform_body;

static size_t perform_write(char *p, size_t size, size_t n, void *arg)
{
    perform_body *b = arg;
    if (b->buf.len + size * n > PERFORM_MAX_BODY) {
        b->too_big = true;
        return 0;
    }
    hf_buf_append(&b->buf, p, size * n);
    return size * n;
}

long connector_perform(const connector_request *req, long timeout_ms, hf_buf *out, char *err,
                       size_t errlen)
{
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = NULL;
    perform_body body = {{0}, false};
    long status = 0;
    if (!curl) {
        hf_err(err, errlen, "cannot create an HTTP client");
        *out = body.buf;
        return 0;
    }
    for (size_t i = 0; i < req->nheaders && req->headers[i]; i++)
        headers = curl_slist_append(headers, req->headers[i]);
    curl_easy_setopt(curl, CURLOPT_URL, req->url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req->method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms / 2);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, perform_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
    if (req->body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)req->body_len);
    }
    if (req->basic_user && req->basic_password) {
        curl_easy_setopt(curl, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
        curl_easy_setopt(curl, CURLOPT_USERNAME, req->basic_user);
        curl_easy_setopt(curl, CURLOPT_PASSWORD, req->basic_password);
    }
    CURLcode rc = curl_easy_perform(curl);
    if (rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    else if (body.too_big)
        hf_err(err, errlen, "the answer is larger than %u bytes", PERFORM_MAX_BODY);
    else
        hf_err(err, errlen, "%s", curl_easy_strerror(rc));
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    *out = body.buf;
    return status;
}

int engine_connector_check_params(const char *id, const char *action, hf_json params, char *err,
                                  size_t errlen)
{
    const engine_connector *conn = engine_connector_find(id);
    if (!conn)
        return hf_err(err, errlen, "unknown connector %s", id);
    connector_conn cc = {.account = "checked", .access_token = "checked"};
    connector_request req = {0};
    int rc = conn->build(action, params, &cc, engine_connector_base_url(id), "checked", &req, err,
                         errlen);
    connector_request_free(&req);
    return rc == 0 ? 0 : -1;
}
