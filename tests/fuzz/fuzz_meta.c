/* fuzz_meta: drives the Meta module with arbitrary bodies and query strings. The first byte picks
 * how the request is made (a POST signed with the current key, one signed with the previous key in
 * upper-case hex, the GET handshake with the input as its query, a fuzzed signature header, no
 * credentials or no secrets, a fuzzed method); signed inputs reach the JSON parse and split path.
 * Checks the result's invariants and frees everything. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "json.h"
#include "provider.h"
#include "secrets.h"
#include "util.h"

#define FUZZ_KEY "fuzz-meta-app-secret"
#define FUZZ_OLD_KEY "fuzz-meta-app-secret-old"
#define FUZZ_VERIFY "fuzz-verify-token"

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
static void check_result(const ingest_result *res)
{
    check(res->status >= 200 && res->status < 600);
    check(res->reason != NULL);
    if (res->status < 200 || res->status > 299)
        check(res->nevents == 0 && res->response_body == NULL);
    if (strcmp(res->reason, "handshake") == 0)
        check(res->status == 200 && res->response_body && res->response_body[0] &&
              strcmp(res->response_type, "text/plain") == 0 && res->nevents == 0);
    else
        check(res->response_body == NULL);
    for (size_t i = 0; i < res->nevents; i++) {
        const ingest_event *e = &res->events[i];
        check(e->id && e->native_type && e->account && e->payload);
        check(strncmp(e->id, "meta:", 5) == 0 && e->account[0]);
        check(!e->resource || strncmp(e->resource, "psid:", 5) == 0);
        check(!e->occurred_at || (strlen(e->occurred_at) == 24 && e->occurred_at[23] == 'Z'));
        hf_json v = hf_json_parse(e->payload, strlen(e->payload), NULL, 0);
        check(v != NULL && hf_json_is_object(v));
        hf_json_free(v);
    }
}

static char *take_line(const uint8_t **rest, size_t *len)
{
    const uint8_t *nl = memchr(*rest, '\n', *len);
    size_t n = nl ? (size_t)(nl - *rest) : *len;
    char *line = xstrndup((const char *)*rest, strnlen((const char *)*rest, n));
    *rest += nl ? n + 1 : n;
    *len -= nl ? n + 1 : n;
    return line;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hf_secrets *keys, *no_keys;
    if (!keys) {
        keys = hf_secrets_new();
        hf_secrets_set(keys, "meta/app_secret", FUZZ_KEY, strlen(FUZZ_KEY));
        hf_secrets_set(keys, "meta/app_secret.previous", FUZZ_OLD_KEY, strlen(FUZZ_OLD_KEY));
        hf_secrets_set(keys, "meta/verify_token", FUZZ_VERIFY, strlen(FUZZ_VERIFY));
        no_keys = hf_secrets_new();
    }
    if (size < 1)
        return 0;
    unsigned mode = data[0] % 6;
    bool flag = data[0] & 0x80;
    const uint8_t *rest = data + 1;
    size_t rest_len = size - 1;

    char *line = NULL;
    if (mode == 3 || mode == 5)
        line = take_line(&rest, &rest_len);
    unsigned char *body = xmalloc(rest_len ? rest_len : 1);
    if (rest_len)
        memcpy(body, rest, rest_len);
    /* The handshake reads the input as its query string. */
    char *query = mode == 2 ? xstrndup((const char *)rest, rest_len) : NULL;

    char sig[7 + 2 * HF_SHA256_LEN + 1] = "sha256=";
    if (mode == 0 || mode == 1 || mode == 5) {
        const char *key = mode == 1 ? FUZZ_OLD_KEY : FUZZ_KEY;
        unsigned char mac[HF_SHA256_LEN];
        hf_hmac_sha256(key, strlen(key), body, rest_len, mac);
        hf_hex_encode(mac, sizeof mac, sig + 7);
        for (char *p = sig + 7; mode == 1 && *p; p++)
            if (*p >= 'a' && *p <= 'f')
                *p = (char)(*p - 'a' + 'A');
    }
    const char *headers[] = {"X-Hub-Signature-256", mode == 3 ? line : sig, NULL};
    const char *method = mode == 2 ? "GET" : mode == 5 ? line : "POST";
    ingest_request req = {
        .method = method,
        .path = "/api/integrations/webhooks/meta",
        .query = query,
        .public_url = "https://hooks.example.com/api/integrations/webhooks/meta",
        .body = body,
        .body_len = rest_len,
        .header = table_header,
        .header_ctx = mode == 4 ? NULL : (void *)headers,
        .now_ms = 1776138612000LL,
        .secrets = (mode == 4 || mode == 2) && flag ? no_keys : keys,
    };
    ingest_result res;
    memset(&res, 0, sizeof res);
    ingest_provider_meta.handle(&req, &res);
    check_result(&res);
    switch (mode) {
    case 0:
    case 1:
        check(res.status == 200 || res.status == 400);
        break;
    case 2:
        if (flag)
            check(res.status == 503);
        else
            check(res.status == 200 || res.status == 400 || res.status == 403);
        break;
    case 4:
        check(res.status == (flag ? 503 : 401));
        break;
    case 5:
        if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
            check(res.status == 405);
        break;
    default:
        break;
    }
    ingest_result_free(&res);
    free(query);
    free(body);
    free(line);
    return 0;
}
