/* fuzz_quickbooks: drives the QuickBooks module with arbitrary bodies (legacy objects and
 * CloudEvents arrays). The first byte picks how the request is made (signed with the current or
 * previous token, unsigned, a fuzzed signature header, no secret, GET); signed inputs reach the
 * JSON parse and split path. Checks the result's invariants and frees everything. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "json.h"
#include "provider.h"
#include "secrets.h"
#include "util.h"

#define FUZZ_KEY "fuzz-qbo-verifier-token"
#define FUZZ_OLD_KEY "fuzz-qbo-verifier-token-old"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *table_header(const ingest_request *req, const char *name)
{
    const char *const *kv = req->header_ctx;
    for (size_t i = 0; kv && kv[i]; i += 2)
        if (hf_strieq(kv[i], name))
            return kv[i + 1];
    return NULL;
}

static void check(int ok)
{
    if (!ok)
        abort();
}

/* Invariants every provider result must hold. */
static void check_result(const ingest_result *res, const char *prefix)
{
    check(res->status >= 200 && res->status < 600);
    check(res->reason != NULL);
    check(res->response_body == NULL);
    if (res->status < 200 || res->status > 299)
        check(res->nevents == 0);
    for (size_t i = 0; i < res->nevents; i++) {
        const ingest_event *e = &res->events[i];
        check(e->id && e->native_type && e->account && e->payload);
        check(strncmp(e->id, prefix, strlen(prefix)) == 0);
        hf_json v = hf_json_parse(e->payload, strlen(e->payload), NULL, 0);
        check(v != NULL && hf_json_is_object(v));
        hf_json_free(v);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hf_secrets *keys, *no_keys;
    if (!keys) {
        keys = hf_secrets_new();
        hf_secrets_set(keys, "quickbooks/verifier_token", FUZZ_KEY, strlen(FUZZ_KEY));
        hf_secrets_set(keys, "quickbooks/verifier_token.previous", FUZZ_OLD_KEY,
                       strlen(FUZZ_OLD_KEY));
        no_keys = hf_secrets_new();
    }
    if (size < 1)
        return 0;
    unsigned mode = data[0] % 6;
    const uint8_t *rest = data + 1;
    size_t rest_len = size - 1;

    char sig[128] = "";
    char *fuzzed_sig = NULL;
    if (mode == 3) { /* the first line of the input is the signature header */
        const uint8_t *nl = memchr(rest, '\n', rest_len);
        size_t n = nl ? (size_t)(nl - rest) : rest_len;
        fuzzed_sig = xstrndup((const char *)rest, strnlen((const char *)rest, n));
        rest += nl ? n + 1 : n;
        rest_len -= nl ? n + 1 : n;
    }
    /* An exact-size copy, so any read past the body is caught. */
    unsigned char *body = xmalloc(rest_len ? rest_len : 1);
    if (rest_len)
        memcpy(body, rest, rest_len);
    if (mode == 0 || mode == 4 || mode == 5 || mode == 1) {
        const char *key = mode == 1 ? FUZZ_OLD_KEY : FUZZ_KEY;
        unsigned char mac[HF_SHA256_LEN];
        hf_hmac_sha256(key, strlen(key), body, rest_len, mac);
        hf_base64_encode(mac, sizeof mac, sig);
    }
    const char *headers[] = {"intuit-signature", fuzzed_sig ? fuzzed_sig : sig, NULL};
    ingest_request req = {
        .method = mode == 5 ? "GET" : "POST",
        .path = "/api/integrations/webhooks/quickbooks",
        .public_url = "https://hooks.example.com/api/integrations/webhooks/quickbooks",
        .body = body,
        .body_len = rest_len,
        .header = table_header,
        .header_ctx = mode == 2 ? NULL : (void *)headers,
        .now_ms = 1700000000000LL,
        .secrets = mode == 4 ? no_keys : keys,
    };
    ingest_result res;
    memset(&res, 0, sizeof res);
    ingest_provider_quickbooks.handle(&req, &res);
    check_result(&res, "quickbooks:");
    if (mode == 2)
        check(res.status == 401 && strcmp(res.reason, "missing_signature") == 0);
    if (mode == 4)
        check(res.status == 503);
    if (mode == 5)
        check(res.status == 405);
    if (mode == 0 || mode == 1)
        check(res.status == 200 || res.status == 400);
    ingest_result_free(&res);
    free(body);
    free(fuzzed_sig);
    return 0;
}
