/* connector: what the engine needs to call a platform: each connector turns (action, rendered
 * params, connection) into the platform's real HTTP request and reads its answer into an outcome
 * and the catalog's output fields; plus endpoints and the OAuth token requests. */
#ifndef ENGINE_CONNECTOR_H
#define ENGINE_CONNECTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h"
#include "util.h"

typedef struct connector_conn { /* one tenant's connection to the platform */
    const char *account;        /* Xero tenantId, QBO realmId, HubSpot portalId, Klaviyo
                                   account, Twilio AccountSid, Meta page id */
    const char *access_token;   /* OAuth bearer; Twilio: the auth token; Meta: the page
                                   access token */
} connector_conn;

typedef struct connector_request { /* built by a connector; free with connector_request_free */
    char *method;
    char *url;
    char **headers; /* "Name: value", plus a NULL terminator slot so it can be passed as
                       hf_http_request.headers (cast to const char *const *) */
    size_t nheaders;
    char *body;
    size_t body_len;
    char *basic_user, *basic_password; /* Twilio, and the OAuth token requests */
} connector_request;

/* Frees what r owns (wiping the body and credentials first, which may hold secrets) and leaves
 * it zeroed. NULL-safe; safe on a zeroed request. */
void connector_request_free(connector_request *r);

/* Performs req and waits for it (for the rare calls that must block: token refresh under a row
 * lock, the OAuth code exchange): timeout_ms in all, no redirects, http(s) only, answers up to
 * 1 MiB. Returns the HTTP status with the body in *out (caller frees), or 0 with the transport
 * error in err. The URL may carry secrets: it is never logged or quoted. */
long connector_perform(const connector_request *req, long timeout_ms, hf_buf *out, char *err,
                       size_t errlen);

/* OK: done (2xx). RETRY: transient: 408, 429, 5xx, and per platform what is known to be
 * transient (Meta is_transient/throttling codes; Xero and QuickBooks 409, a request with the same
 * idempotency key still in progress). A 5xx other than 503 may come after the platform acted,
 * so the engine repeats it only when engine_connector_repeat_safe; otherwise the call's outcome
 * is unknown. AUTH: the token is invalid or expired (401, Meta
 * OAuthException code 190): the engine refreshes and retries once. FAIL: permanent (other 4xx,
 * a platform error inside a 2xx). */
typedef enum { CONNECTOR_OK, CONNECTOR_RETRY, CONNECTOR_AUTH, CONNECTOR_FAIL } connector_outcome;

typedef struct engine_connector {
    const char *id;
    const char *idempotency; /* "header:Idempotency-Key", "query:requestid" or "none" (as the
                                catalog says) */
    /* Whether repeating action cannot make the platform act twice although it takes no
     * idempotency key (an upsert; a field the platform deduplicates on). NULL: no action is. */
    bool (*repeat_safe)(const char *action);
    /* Writes the platform's request into out (overwritten, not freed first; left zeroed on -1;
     * the caller frees it with connector_request_free). base_url:
     * engine_connector_base_url(id) when NULL. idempotency_key: stable per run+node (the engine
     * passes the same one on every retry), may be NULL; used where the platform supports it
     * (and by Klaviyo as the event's default unique_id, which Klaviyo deduplicates on).
     * params: the node's params after templating (a JSON object). Optional params may be
     * missing, null or ""; a missing required param or a wrong type -> -1 with err naming the
     * param (never a token). */
    int (*build)(const char *action, hf_json params, const connector_conn *conn,
                 const char *base_url, const char *idempotency_key, connector_request *out,
                 char *err, size_t errlen);
    /* The answer's status/body -> outcome. On OK appends one compact JSON object to output: the
     * catalog action's output.fields mapped from the answer (null where the answer lacks one),
     * plus "raw" with the platform's JSON answer when it is under 16 KiB. On other outcomes a
     * one-line reason in err with the platform's own error text (never a token). sent is the
     * request build made (NULL if unknown), for answers that echo nothing of it. */
    connector_outcome (*interpret)(const char *action, const connector_request *sent, long status,
                                   const char *body, size_t body_len, hf_buf *output, char *err,
                                   size_t errlen);
} engine_connector;

/* The connector with this catalog id, or NULL. The result is static. */
const engine_connector *engine_connector_find(const char *id);

/* Whether a call of action may be sent again when its outcome is not known (no answer, a 5xx
 * other than 503, a worker lost during the call): the platform takes an idempotency key, or the
 * action is repeat_safe. */
bool engine_connector_repeat_safe(const engine_connector *c, const char *action);

/* "HOOKFLOW_CONNECTOR_<ID>_BASE_URL" if set (environment, then config file), else the platform's
 * real base URL; NULL for an unknown id. Same for the OAuth token URL
 * ("HOOKFLOW_CONNECTOR_<ID>_TOKEN_URL"); Twilio has none (NULL). The strings are static or the
 * environment's. */
const char *engine_connector_base_url(const char *id);
const char *engine_connector_token_url(const char *id);

/* Whether the connector's action takes params the way its build would for a real call (with a
 * placeholder connection; nothing is sent): 0, or -1 with build's one-line reason in err. For
 * validation and simulation, so that they refuse what every run would fail on, including the
 * rules the catalog cannot state (Klaviyo's email-or-phone, Meta's tag with MESSAGE_TAG). */
HF_MUST_CHECK int engine_connector_check_params(const char *id, const char *action, hf_json params,
                                                char *err, size_t errlen);

/* The refresh_token grant as the platform wants it: POST to the token URL, form body
 * grant_type=refresh_token&refresh_token=...; client authentication by HTTP Basic
 * client_id:client_secret (Xero, QuickBooks, Klaviyo) or client_id/client_secret in the form
 * (HubSpot). Meta page tokens do not refresh and Twilio has no OAuth: -1 "... not refreshable".
 * -1 also when an argument is missing (err names it, never a value). */
HF_MUST_CHECK int engine_oauth_refresh_request(const char *id, const char *client_id,
                                               const char *client_secret, const char *refresh_token,
                                               connector_request *out, char *err, size_t errlen);

/* The authorization_code grant: same client authentication, form grant_type, code,
 * redirect_uri and code_verifier (PKCE; required for Klaviyo, optional elsewhere). Meta's
 * exchange is a GET whose query carries client_id, redirect_uri, client_secret and code, as
 * Meta documents it: never log that URL. */
HF_MUST_CHECK int engine_oauth_code_request(const char *id, const char *client_id,
                                            const char *client_secret, const char *code,
                                            const char *redirect_uri, const char *code_verifier,
                                            connector_request *out, char *err, size_t errlen);

#define ENGINE_OAUTH_MAX_EXPIRES_S (366LL * 24 * 3600)

/* Parses a token answer: access_token; refresh_token (NULL when absent: keep the old one);
 * expires_in in seconds (a number or numeric string; absent -> 3600; at most
 * ENGINE_OAUTH_MAX_EXPIRES_S); scope (a string, or an array joined with spaces; NULL when
 * absent). -1 with err on an error answer (OAuth
 * "error"/"error_description", Meta's {"error":{"message"}}, HubSpot's {"status","message"}), a
 * missing access_token or malformed JSON; the outputs are then NULL. The caller frees the
 * strings. */
HF_MUST_CHECK int engine_oauth_parse_token(const char *body, size_t len, char **access_token,
                                           char **refresh_token, int64_t *expires_in, char **scope,
                                           char *err, size_t errlen);

/* Seconds the refresh token of a token answer lives, when the platform says
 * (x_refresh_token_expires_in: QuickBooks; refresh_token_expires_in); at most
 * ENGINE_OAUTH_MAX_REFRESH_EXPIRES_S; -1 when it does not say. */
#define ENGINE_OAUTH_MAX_REFRESH_EXPIRES_S (10LL * 366 * 24 * 3600)
int64_t engine_oauth_refresh_expires_in(const char *body, size_t len);

/* ---- the connectors (engine/connectors/<id>.c) ---- */

extern const engine_connector engine_connector_xero;
extern const engine_connector engine_connector_quickbooks;
extern const engine_connector engine_connector_hubspot;
extern const engine_connector engine_connector_klaviyo;
extern const engine_connector engine_connector_twilio;
extern const engine_connector engine_connector_meta;

/* ---- helpers shared by the connector implementations (connector.c) ---- */

/* Largest answer copied into an output's "raw". */
#define CONNECTOR_RAW_MAX (16 * 1024)

/* Starts out as method + url (url is taken over). */
void connector_request_start(connector_request *out, const char *method, char *url);
/* Appends one "Name: value" header line, keeping the NULL terminator slot. */
void connector_request_header(connector_request *out, const char *fmt, ...) HF_PRINTF(2, 3);
/* Takes over body's data as the request body (body is left empty). */
void connector_request_body(connector_request *out, hf_buf *body);

/* base without trailing slashes + the formatted path, e.g. connector_url(base, "/v3/%s", x). */
char *connector_url(const char *base, const char *fmt, ...) HF_PRINTF(2, 3);
/* Appends base without trailing slashes + prefix + account percent-encoded to url, for URLs
 * that name the account in their path (the caller appends the rest). */
void connector_url_account(hf_buf *url, const char *base, const char *prefix, const char *account);
/* Percent-encodes s for a URL path segment or query value (RFC 3986 unreserved kept). */
void connector_url_escape(hf_buf *out, const char *s);
/* Appends name=value to an application/x-www-form-urlencoded body ('&' between pairs; space as
 * '+'). */
void connector_form_add(hf_buf *form, const char *name, const char *value);

/* An idempotency key the platform accepts: key itself when it is at most max characters of
 * [A-Za-z0-9._:-], else the first max hex digits of its SHA-256 (stable, so every retry sends
 * the same). NULL for NULL or "". Caller frees. */
char *connector_idempotency_key(const char *key, size_t max);

/* Param readers. where prefixes the name in errors (e.g. "line_items[1]."; NULL for none). A
 * missing, null or "" optional param gives 0 and *out NULL; a missing required one, or one of
 * another type, gives -1 with err naming where+name. */
HF_MUST_CHECK int connector_param_string(hf_json obj, const char *where, const char *name,
                                         bool required, const char **out, char *err, size_t errlen);
/* A JSON number, or a string holding one (templates render numbers as text); *out is its JSON
 * text. */
HF_MUST_CHECK int connector_param_number(hf_json obj, const char *where, const char *name,
                                         bool required, const char **out, char *err, size_t errlen);
HF_MUST_CHECK int connector_param_object(hf_json obj, const char *where, const char *name,
                                         bool required, hf_json *out, char *err, size_t errlen);
/* A non-empty array when required. */
HF_MUST_CHECK int connector_param_array(hf_json obj, const char *where, const char *name,
                                        bool required, hf_json *out, char *err, size_t errlen);
/* A string that must be one of choices (NULL-terminated); def when absent (may be NULL). */
HF_MUST_CHECK int connector_param_enum(hf_json obj, const char *where, const char *name,
                                       const char *const *choices, const char *def,
                                       const char **out, char *err, size_t errlen);
/* Rejects params that are not an object and a connection without account or access_token
 * (account_term is the platform's word for the account in the error, e.g. "realmId"). */
HF_MUST_CHECK int connector_check_call(hf_json params, const connector_conn *conn,
                                       const char *account_term, char *err, size_t errlen);
/* True if s is a JSON number (RFC 8259 grammar). */
bool connector_is_json_number(const char *s);

/* Writes one JSON object member by member (outputs, and request bodies: objects nest by
 * starting another writer on the same buffer right after connector_output_key). */
typedef struct connector_output {
    hf_buf *buf;
    bool any;
} connector_output;
void connector_output_begin(connector_output *o, hf_buf *buf);
void connector_output_end(connector_output *o);
/* "key": with the value to be appended by the caller. */
void connector_output_key(connector_output *o, const char *key);
/* "key":"s" / "key":<json text> only when s / json is not NULL. */
void connector_output_opt_str(connector_output *o, const char *key, const char *s);
void connector_output_opt_raw(connector_output *o, const char *key, const char *json);
/* "key":{"inner":"s"} only when s is not NULL. */
void connector_output_opt_nested(connector_output *o, const char *key, const char *inner,
                                 const char *s);
/* v as a string (numbers as their text), else null. */
void connector_output_string(connector_output *o, const char *key, hf_json v);
void connector_output_cstr(connector_output *o, const char *key, const char *s);
/* v as a number (a string holding a number too), else null. */
void connector_output_number(connector_output *o, const char *key, hf_json v);
/* v as a boolean (true/false), else null. */
void connector_output_bool(connector_output *o, const char *key, hf_json v);
/* v when it is an object, else null. */
void connector_output_object(connector_output *o, const char *key, hf_json v);
/* "raw": the answer when it parsed as JSON and is under CONNECTOR_RAW_MAX bytes. */
void connector_output_raw(connector_output *o, hf_json answer, size_t body_len);

/* The platform-independent status classes: 2xx OK, 401 AUTH, 408/429/5xx RETRY, else FAIL. */
connector_outcome connector_classify(long status);
/* Writes "HTTP <status>: <message>" as one line (control characters become spaces, long
 * messages are cut) into err; message NULL gives a generic text. */
void connector_error(char *err, size_t errlen, long status, const char *message);
/* The answer parsed as JSON, or NULL (empty, not JSON). Caller frees. */
hf_json connector_parse_answer(const char *body, size_t len);

#endif
