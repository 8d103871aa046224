/* fuzz_twilio: drives the Twilio module with arbitrary bodies. The first byte picks how the
 * request is made (a form signed with the Auth Token or the account's own token, a JSON body
 * signed through bodySHA256, a form signed under a webhook rule's SHA-256 key, a form signed
 * without the :443 the URL carries, fuzzed headers and URL, no credentials or no secrets, GET);
 * signed inputs reach the decode and event path. Checks the result's invariants and frees
 * everything. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "json.h"
#include "provider.h"
#include "provider_request.h"
#include "providers/form.h"
#include "secrets.h"
#include "util.h"

#define FUZZ_TOKEN "fuzz-twilio-auth-token"
#define FUZZ_ACCOUNT_TOKEN "fuzz-twilio-account-token"
#define FUZZ_RULE_KEY "fuzz-twilio-rule-key"
/* Seeds use this AccountSid, whose own token is configured. */
#define FUZZ_SID "AC00000000000000000000000000000000"
#define FUZZ_URL "https://hooks.example.com/api/integrations/webhooks/twilio"
#define FUZZ_URL_443 "https://hooks.example.com:443/api/integrations/webhooks/twilio"
#define FORM_TYPE "application/x-www-form-urlencoded"
#define TWIML "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Invariants every provider result must hold, plus Twilio's one event per delivery. */
static void check_result(const ingest_result *res)
{
    pr_check_status(res);
    if (res->status < 200 || res->status > 299) {
        pr_check(res->response_body == NULL);
        return;
    }
    pr_check(res->nevents == 1);
    pr_check_events(res, "twilio:");
    const ingest_event *e = &res->events[0];
    pr_check(!e->occurred_at && e->account[0]);
    if (strcmp(e->native_type, "inbound") == 0)
        pr_check(res->response_body && strcmp(res->response_body, TWIML) == 0 &&
                 strcmp(res->response_type, "text/xml") == 0);
    else
        pr_check(strncmp(e->native_type, "status.", 7) == 0 && res->response_body == NULL);
}

/* base64 MAC over url + the form's sorted, deduplicated name+value pairs (none for JSON). */
static void sign(hf_mac_kind kind, const char *key, const char *url, const unsigned char *body,
                 size_t len, bool form, char *out)
{
    ingest_form f = {0};
    if (form) {
        ingest_form_parse(&f, (const char *)body, len);
        ingest_form_sort_dedup(&f);
    }
    hf_mac *m = hf_mac_new(kind, key, strlen(key));
    hf_mac_update(m, url, strlen(url));
    for (size_t i = 0; i < f.n; i++) {
        hf_mac_update(m, f.params[i].name, f.params[i].name_len);
        hf_mac_update(m, f.params[i].value, f.params[i].value_len);
    }
    unsigned char mac[HF_SHA256_LEN];
    size_t n = hf_mac_final(m, mac);
    hf_base64_encode(mac, n, out);
    ingest_form_free(&f);
}

/* The token the module should pick for a form body: the account's own for FUZZ_SID. */
static const char *form_token(const unsigned char *body, size_t len)
{
    ingest_form f = {0};
    ingest_form_parse(&f, (const char *)body, len);
    const char *sid = ingest_form_get(&f, "AccountSid");
    bool own = sid && *sid && strcmp(sid, FUZZ_SID) == 0;
    ingest_form_free(&f);
    return own ? FUZZ_ACCOUNT_TOKEN : FUZZ_TOKEN;
}

/* The same for a JSON body: its top-level AccountSid (or account_sid). */
static const char *json_token(const unsigned char *body, size_t len)
{
    hf_json v = hf_json_parse((const char *)body, len, NULL, 0);
    const char *sid = hf_json_str(hf_json_get(v, "AccountSid"));
    if (!sid || !*sid)
        sid = hf_json_str(hf_json_get(v, "account_sid"));
    bool own = sid && strcmp(sid, FUZZ_SID) == 0;
    hf_json_free(v);
    return own ? FUZZ_ACCOUNT_TOKEN : FUZZ_TOKEN;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hf_secrets *keys, *no_keys;
    if (!keys) {
        keys = pr_secrets("twilio/auth_token", FUZZ_TOKEN, NULL);
        hf_secrets_set(keys, "twilio/accounts/" FUZZ_SID "/auth_token", FUZZ_ACCOUNT_TOKEN,
                       strlen(FUZZ_ACCOUNT_TOKEN));
        hf_secrets_set(keys, "twilio/webhook_keys/fuzz", FUZZ_RULE_KEY, strlen(FUZZ_RULE_KEY));
        no_keys = hf_secrets_new();
    }
    if (size < 1)
        return 0;
    unsigned mode = data[0] % 7;
    bool flag = data[0] & 0x80;
    const uint8_t *rest = data + 1;
    size_t rest_len = size - 1;

    /* Mode 4: fuzzed signature, settings, Content-Type and URL lines before the body. */
    char *lines[4] = {NULL, NULL, NULL, NULL};
    if (mode == 4)
        for (size_t i = 0; i < 4; i++)
            lines[i] = pr_take_line(&rest, &rest_len);
    unsigned char *body = pr_copy_body(rest, rest_len);

    char sig[64] = "", url[256];
    snprintf(url, sizeof url, "%s", FUZZ_URL);
    const char *type = FORM_TYPE, *settings = NULL;
    switch (mode) {
    case 0: /* form, Auth Token or the account's token */
        sign(HF_MAC_HMAC_SHA1, form_token(body, rest_len), url, body, rest_len, true, sig);
        break;
    case 1: { /* JSON through bodySHA256 */
        unsigned char digest[HF_SHA256_LEN];
        char hex[2 * HF_SHA256_LEN + 1];
        hf_sha256(body, rest_len, digest);
        hf_hex_encode(digest, sizeof digest, hex);
        snprintf(url, sizeof url, "%s?bodySHA256=%s", FUZZ_URL, hex);
        type = flag ? "application/json; charset=utf-8" : "application/json";
        sign(HF_MAC_HMAC_SHA1, json_token(body, rest_len), url, body, rest_len, false, sig);
        break;
    }
    case 2: /* a webhook rule's SHA-256 key */
        settings = "key=fuzz,algorithm=HMAC_SHA256";
        sign(HF_MAC_HMAC_SHA256, FUZZ_RULE_KEY, url, body, rest_len, true, sig);
        break;
    case 3: /* signed without :443, received with it */
        sign(HF_MAC_HMAC_SHA1, form_token(body, rest_len), url, body, rest_len, true, sig);
        snprintf(url, sizeof url, "%s", FUZZ_URL_443);
        break;
    case 4:
        snprintf(url, sizeof url, "%s", lines[3]);
        type = lines[2][0] ? lines[2] : NULL;
        settings = lines[1][0] ? lines[1] : NULL;
        break;
    default:
        break;
    }
    const char *headers[] = {"Content-Type",
                             type,
                             "X-Twilio-Signature",
                             mode == 4 ? lines[0] : sig,
                             settings ? "X-Twilio-Webhooks-Signature-Settings" : NULL,
                             settings,
                             NULL};
    if (mode == 5)
        headers[2] = NULL; /* no signature header */
    const char *q = strchr(url, '?');
    ingest_result res;
    pr_call(&ingest_provider_twilio, mode == 6 ? "GET" : "POST", PR_PATH("twilio"),
            q ? q + 1 : NULL, url, body, rest_len, headers, mode == 5 && flag ? no_keys : keys,
            1776138612000LL, &res);
    check_result(&res);
    switch (mode) {
    case 0:
    case 1:
    case 2:
    case 3:
        pr_check(res.status == 200 || res.status == 400);
        break;
    case 5: /* unsigned: 401 before anything else, configured key or not */
        pr_check(res.status == 401 && strcmp(res.reason, "missing_signature") == 0);
        break;
    case 6:
        pr_check(res.status == 405);
        break;
    default:
        break;
    }
    ingest_result_free(&res);
    free(body);
    for (size_t i = 0; i < 4; i++)
        free(lines[i]);
    return 0;
}
