/* twilio: X-Twilio-Signature (base64 HMAC-SHA1 with the Auth Token, or HMAC-SHA256 with a
 * webhook rule's key) over the public URL + the sorted form parameters, or over the URL alone with
 * bodySHA256 for JSON bodies; one event per request (inbound message or status callback). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "form.h"
#include "json.h"
#include "provider.h"
#include "provider_util.h"
#include "util.h"

#define TWILIO_AUTH_TOKEN "twilio/auth_token"
#define TWILIO_TWIML "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>"
#define TWILIO_MAX_URL_VARIANTS 3

typedef enum { BODY_FORM, BODY_JSON } body_kind;

/* The parts of one delivery the events are built from. */
typedef struct twilio_delivery {
    body_kind kind;
    ingest_form form;        /* BODY_FORM: the parameters as received */
    ingest_form signed_form; /* BODY_FORM: sorted and deduplicated, as Twilio signs them */
    hf_json json;            /* BODY_JSON: the parsed body, NULL if it did not parse */
    char json_err[200];
} twilio_delivery;

/* The key to verify with, from the settings header or the Auth Token files. */
typedef struct twilio_key {
    hf_mac_kind mac;
    size_t digest_len;
    char path[160];
    const char *vals[2];
    size_t lens[2];
    size_t n;
} twilio_key;

/* Characters allowed in a value that becomes part of a secrets path. */
static bool safe_name(const char *s, size_t len, bool allow_punct)
{
    if (len == 0 || len > 64)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool alnum = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        if (!alnum && !(allow_punct && (c == '_' || c == '-')))
            return false;
    }
    return true;
}

/* The media type of Content-Type, lowercased, without parameters. */
static void media_type(const char *ct, char *out, size_t outlen)
{
    size_t o = 0;
    while (ct && (*ct == ' ' || *ct == '\t'))
        ct++;
    for (; ct && *ct && *ct != ';' && *ct != ' ' && *ct != '\t' && o + 1 < outlen; ct++)
        out[o++] = (char)tolower((unsigned char)*ct);
    out[o] = '\0';
}

/* Fills urls with the URL as received and, when its scheme has a default port, the same URL
 * with that port added (if absent) or removed (if present): Twilio may sign either form. */
static size_t url_variants(const char *url, char *urls[TWILIO_MAX_URL_VARIANTS])
{
    size_t n = 0;
    urls[n++] = xstrdup(url);
    const char *port = NULL;
    size_t scheme_len;
    size_t url_len = strlen(url);
    if (url_len >= 8 && strncasecmp(url, "https://", 8) == 0) {
        port = "443";
        scheme_len = 8;
    } else if (url_len >= 7 && strncasecmp(url, "http://", 7) == 0) {
        port = "80";
        scheme_len = 7;
    } else {
        return n;
    }
    const char *authority = url + scheme_len;
    size_t auth_len = strcspn(authority, "/?#");
    const char *host = authority;
    for (size_t i = 0; i < auth_len; i++)
        if (authority[i] == '@')
            host = authority + i + 1;
    const char *end = authority + auth_len;
    /* The port colon is the last ':' of the host, after any IPv6 literal's ']'. */
    const char *colon = NULL;
    const char *search = host;
    if (*host == '[') {
        const char *close = memchr(host, ']', (size_t)(end - host));
        if (!close)
            return n;
        search = close;
    }
    for (const char *p = search; p < end; p++)
        if (*p == ':')
            colon = p;
    if (!colon) {
        urls[n++] = xasprintf("%.*s:%s%s", (int)(end - url), url, port, end);
    } else if ((size_t)(end - colon - 1) == strlen(port) &&
               memcmp(colon + 1, port, strlen(port)) == 0) {
        urls[n++] = xasprintf("%.*s%s", (int)(colon - url), url, end);
    }
    return n;
}

/* Decodes the base64 signature into out; false if it is not a digest of want_len bytes. */
static bool decode_signature(const char *sig, unsigned char *out, size_t want_len)
{
    while (*sig == ' ' || *sig == '\t')
        sig++;
    size_t len = strlen(sig);
    while (len && (sig[len - 1] == ' ' || sig[len - 1] == '\t'))
        len--;
    unsigned char buf[64];
    long got = hf_base64_decode(sig, len, buf, sizeof buf);
    if (got != (long)want_len)
        return false;
    memcpy(out, buf, want_len);
    return true;
}

/* "key=<name>,algorithm=HMAC_SHA256" (order free, blanks allowed): the rule's key name. */
static bool parse_settings(const char *settings, char *name, size_t namelen, char *err,
                           size_t errlen)
{
    bool have_name = false, have_alg = false;
    const char *p = settings;
    while (*p) {
        size_t seg = strcspn(p, ",");
        const char *s = p, *e = p + seg;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        const char *eq = memchr(s, '=', (size_t)(e - s));
        if (eq) {
            size_t klen = (size_t)(eq - s), vlen = (size_t)(e - eq - 1);
            const char *v = eq + 1;
            if (klen == 3 && strncasecmp(s, "key", 3) == 0) {
                if (!safe_name(v, vlen, true) || vlen >= namelen) {
                    hf_err(err, errlen, "signature settings name an invalid key");
                    return false;
                }
                memcpy(name, v, vlen);
                name[vlen] = '\0';
                have_name = true;
            } else if (klen == 9 && strncasecmp(s, "algorithm", 9) == 0) {
                if (vlen != 11 || strncasecmp(v, "HMAC_SHA256", 11) != 0) {
                    hf_err(err, errlen, "signature settings name an unsupported algorithm");
                    return false;
                }
                have_alg = true;
            }
        }
        p += seg;
        if (*p == ',')
            p++;
    }
    if (!have_name || !have_alg) {
        hf_err(err, errlen, "signature settings lack %s", !have_name ? "key" : "algorithm");
        return false;
    }
    return true;
}

/* A parameter of the delivery by name (the first of the names given that is present and not
 * empty); only strings, and for JSON bodies only top-level strings. */
static const char *field(const twilio_delivery *d, const char *name, const char *json_name)
{
    const char *v;
    if (d->kind == BODY_FORM) {
        v = ingest_form_get(&d->form, name);
    } else {
        v = hf_json_str(hf_json_get(d->json, name));
        if ((!v || !*v) && json_name)
            v = hf_json_str(hf_json_get(d->json, json_name));
    }
    return v && *v ? v : NULL;
}

/* Chooses the key: the rule's key when the settings header names one, else the account's own
 * Auth Token when configured, else the main one. False after failing res. */
static bool choose_key(const ingest_request *req, const twilio_delivery *d, twilio_key *key,
                       ingest_result *res)
{
    const char *settings = provider_util_header(req, "X-Twilio-Webhooks-Signature-Settings");
    if (settings) {
        char name[65], err[120];
        if (!parse_settings(settings, name, sizeof name, err, sizeof err)) {
            ingest_result_fail(res, 401, "bad_signature", "%s", err);
            return false;
        }
        key->mac = HF_MAC_HMAC_SHA256;
        key->digest_len = HF_SHA256_LEN;
        snprintf(key->path, sizeof key->path, "twilio/webhook_keys/%s", name);
        key->n = provider_util_get_keys(req, key->path, key->vals, key->lens);
    } else {
        key->mac = HF_MAC_HMAC_SHA1;
        key->digest_len = HF_SHA1_LEN;
        key->n = 0;
        /* The AccountSid is not yet authenticated: a forged one only selects a key the forger
         * does not hold. */
        const char *sid = field(d, "AccountSid", "account_sid");
        if (sid && safe_name(sid, strlen(sid), false)) {
            snprintf(key->path, sizeof key->path, "twilio/accounts/%s/auth_token", sid);
            key->n = provider_util_get_keys(req, key->path, key->vals, key->lens);
        }
        if (key->n == 0) {
            snprintf(key->path, sizeof key->path, "%s", TWILIO_AUTH_TOKEN);
            key->n = provider_util_get_keys(req, key->path, key->vals, key->lens);
        }
    }
    if (key->n == 0) {
        ingest_result_fail(res, 503, "missing_secret", "%s is not configured", key->path);
        return false;
    }
    return true;
}

/* For JSON bodies: the URL's bodySHA256 must be the SHA-256 of the raw body. */
static bool body_hash_ok(const ingest_request *req, ingest_result *res)
{
    ingest_form query = {0};
    ingest_form_parse(&query, req->query, req->query ? strlen(req->query) : 0);
    const ingest_form_param *p = ingest_form_find(&query, "bodySHA256");
    bool ok = false;
    if (!p) {
        ingest_result_fail(res, 401, "bad_signature", "JSON body without bodySHA256 in the URL");
        goto done;
    }
    unsigned char want[HF_SHA256_LEN], got[HF_SHA256_LEN];
    bool hex_ok = hf_hex_decode(p->value, p->value_len, want, sizeof want);
    hf_sha256(req->body, req->body_len, got);
    if (!hex_ok || !hf_ct_equal(got, sizeof got, want, sizeof want)) {
        ingest_result_fail(res, 401, "bad_signature", "bodySHA256 does not match the body");
        goto done;
    }
    ok = true;
done:
    ingest_form_free(&query);
    return ok;
}

static bool signature_ok(const ingest_request *req, const twilio_delivery *d, const twilio_key *key,
                         const char *sig)
{
    unsigned char want[HF_SHA256_LEN];
    if (!decode_signature(sig, want, key->digest_len))
        return false;
    hf_buf params = {0};
    if (d->kind == BODY_FORM) {
        for (size_t i = 0; i < d->signed_form.n; i++) {
            const ingest_form_param *p = &d->signed_form.params[i];
            hf_buf_append(&params, p->name, p->name_len);
            hf_buf_append(&params, p->value, p->value_len);
        }
    }
    char *urls[TWILIO_MAX_URL_VARIANTS];
    size_t nurls = url_variants(req->public_url ? req->public_url : "", urls);
    bool ok = false;
    for (size_t k = 0; k < key->n; k++) {
        for (size_t u = 0; u < nurls; u++) {
            hf_mac *m = hf_mac_new(key->mac, key->vals[k], key->lens[k]);
            hf_mac_update(m, urls[u], strlen(urls[u]));
            hf_mac_update(m, params.data, params.len);
            unsigned char got[HF_SHA256_LEN];
            hf_mac_final(m, got);
            /* No early exit: every candidate costs the same whichever matches. */
            ok |= hf_ct_equal(got, key->digest_len, want, key->digest_len);
        }
    }
    for (size_t u = 0; u < nurls; u++)
        free(urls[u]);
    hf_buf_free(&params);
    return ok;
}

/* A stable text standing for the delivery's content, for ids when MessageSid is missing. */
static char *canonical_params(const twilio_delivery *d)
{
    hf_buf b = {0};
    if (d->kind == BODY_FORM) {
        for (size_t i = 0; i < d->signed_form.n; i++) {
            const ingest_form_param *p = &d->signed_form.params[i];
            hf_json_append_string(&b, p->name, p->name_len);
            hf_buf_putc(&b, '=');
            hf_json_append_string(&b, p->value, p->value_len);
            hf_buf_putc(&b, '&');
        }
    } else {
        hf_json_serialize(d->json, &b);
    }
    if (!b.data)
        hf_buf_puts(&b, "");
    return hf_buf_steal(&b);
}

static char *lowercase(const char *s)
{
    char *out = xstrdup(s);
    for (char *p = out; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return out;
}

static void add_event(const twilio_delivery *d, ingest_result *res)
{
    const char *account = field(d, "AccountSid", "account_sid");
    if (!account) {
        ingest_result_fail(res, 400, "malformed", "AccountSid is missing");
        return;
    }
    const char *sid = field(d, "MessageSid", "message_sid");
    if (!sid)
        sid = field(d, "SmsSid", "sms_sid");
    const char *status = field(d, "MessageStatus", "message_status");
    const char *sms_status = field(d, "SmsStatus", "sms_status");
    bool inbound = !status || (sms_status && strcmp(sms_status, "received") == 0) ||
                   strcmp(status, "received") == 0;

    hf_buf payload = {0};
    if (d->kind == BODY_FORM)
        ingest_form_to_json(&d->form, &payload);
    else
        hf_json_serialize(d->json, &payload);

    char *id, *native, *resource = NULL;
    char *status_lc = inbound ? NULL : lowercase(status);
    if (sid) {
        id =
            inbound ? xconcat("twilio:", sid, NULL) : xconcat("twilio:", sid, ":", status_lc, NULL);
    } else {
        char *canon = canonical_params(d);
        id = ingest_derive_id("twilio", account, canon, NULL);
        free(canon);
    }
    if (inbound) {
        native = xstrdup("inbound");
        const char *from = field(d, "From", "from");
        if (from)
            resource = xconcat("conversation:", from, NULL);
    } else {
        native = xconcat("status.", status_lc, NULL);
        if (sid)
            resource = xconcat("message:", sid, NULL);
    }
    free(status_lc);
    ingest_result_add(res, id, native, xstrdup(account), resource, NULL, hf_buf_steal(&payload));
    res->status = 200;
    res->reason = "accepted";
    if (inbound) {
        res->response_body = xstrdup(TWILIO_TWIML);
        res->response_type = "text/xml";
    }
}

static void twilio_handle(const ingest_request *req, ingest_result *res)
{
    twilio_delivery d = {0};
    if (strcmp(req->method, "POST") != 0) {
        ingest_result_fail(res, 405, "method_not_allowed", "%.16s is not allowed; use POST",
                           req->method);
        return;
    }
    /* Unsigned is 401 whatever the body: the signature is the only authentication. */
    const char *sig = provider_util_header(req, "X-Twilio-Signature");
    if (!sig) {
        ingest_result_fail(res, 401, "missing_signature", "X-Twilio-Signature header missing");
        return;
    }
    char type[64];
    media_type(provider_util_header(req, "Content-Type"), type, sizeof type);
    if (strcmp(type, "application/json") == 0) {
        d.kind = BODY_JSON;
        d.json = hf_json_parse(provider_util_body_text(req), req->body_len, d.json_err,
                               sizeof d.json_err);
    } else if (type[0] == '\0' || strcmp(type, "application/x-www-form-urlencoded") == 0) {
        d.kind = BODY_FORM;
        ingest_form_parse(&d.form, (const char *)req->body, req->body_len);
        ingest_form_parse(&d.signed_form, (const char *)req->body, req->body_len);
        ingest_form_sort_dedup(&d.signed_form);
    } else {
        ingest_result_fail(res, 400, "malformed",
                           "unsupported Content-Type (expected "
                           "application/x-www-form-urlencoded or application/json)");
        return;
    }

    twilio_key key;
    if (!choose_key(req, &d, &key, res))
        goto done;
    if (d.kind == BODY_JSON && !body_hash_ok(req, res))
        goto done;
    if (!signature_ok(req, &d, &key, sig)) {
        ingest_result_fail(res, 401, "bad_signature", "X-Twilio-Signature does not match");
        goto done;
    }

    char err[120];
    if (d.kind == BODY_FORM && !ingest_form_check_text(&d.form, err, sizeof err)) {
        ingest_result_fail(res, 400, "malformed", "%s", err);
        goto done;
    }
    if (d.kind == BODY_JSON && !d.json) {
        ingest_result_fail(res, 400, "malformed", "%s", d.json_err);
        goto done;
    }
    if (d.kind == BODY_JSON && !hf_json_is_object(d.json)) {
        ingest_result_fail(res, 400, "malformed", "JSON body is not an object");
        goto done;
    }
    add_event(&d, res);
done:
    hf_json_free(d.json);
    ingest_form_free(&d.signed_form);
    ingest_form_free(&d.form);
}

const ingest_provider ingest_provider_twilio = {
    .id = "twilio",
    .accepts_get = false,
    .handle = twilio_handle,
};
