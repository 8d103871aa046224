/* provider_request: request building, signing, secrets and result invariants shared by the
 * provider unit tests and fuzz targets. */
#include "provider_request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "json.h"
#include "util.h"

const char *pr_table_header(const ingest_request *req, const char *name)
{
    const char *const *kv = req->header_ctx;
    for (size_t i = 0; kv && kv[i]; i += 2)
        if (hf_strieq(kv[i], name))
            return kv[i + 1];
    return NULL;
}

void pr_call(const ingest_provider *provider, const char *method, const char *path,
             const char *query, const char *url, const void *body, size_t body_len,
             const char *const *headers, const hf_secrets *secrets, int64_t now_ms,
             ingest_result *res)
{
    ingest_request req = {
        .method = method,
        .path = path,
        .query = query,
        .public_url = url,
        .body = body,
        .body_len = body_len,
        .header = pr_table_header,
        .header_ctx = (void *)headers,
        .now_ms = now_ms,
        .secrets = secrets,
    };
    memset(res, 0, sizeof *res);
    provider->handle(&req, res);
}

void pr_hmac_b64(const char *key, const void *data, size_t len, char *out)
{
    unsigned char mac[HF_SHA256_LEN];
    hf_hmac_sha256(key, strlen(key), data, len, mac);
    hf_base64_encode(mac, sizeof mac, out);
}

void pr_hmac_hex(const char *key, const void *data, size_t len, char *out)
{
    unsigned char mac[HF_SHA256_LEN];
    hf_hmac_sha256(key, strlen(key), data, len, mac);
    hf_hex_encode(mac, sizeof mac, out);
}

void pr_call_signed_b64(const ingest_provider *provider, const char *header, const char *body,
                        const char *key, const hf_secrets *secrets, int64_t now_ms,
                        ingest_result *res)
{
    char sig[64], path[128], url[192];
    pr_hmac_b64(key ? key : "", body, strlen(body), sig);
    const char *headers[] = {header, sig, NULL};
    snprintf(path, sizeof path, PR_PATH("%s"), provider->id);
    snprintf(url, sizeof url, PR_URL("%s"), provider->id);
    pr_call(provider, "POST", path, NULL, url, body, strlen(body), key ? headers : NULL, secrets,
            now_ms, res);
}

hf_secrets *pr_secrets(const char *path, const char *current, const char *previous)
{
    hf_secrets *s = hf_secrets_new();
    if (path && current)
        hf_secrets_set(s, path, current, strlen(current));
    if (path && previous) {
        char *prev_path = xasprintf("%s.previous", path);
        hf_secrets_set(s, prev_path, previous, strlen(previous));
        free(prev_path);
    }
    return s;
}

char *pr_take_line(const uint8_t **rest, size_t *len)
{
    const uint8_t *nl = memchr(*rest, '\n', *len);
    size_t n = nl ? (size_t)(nl - *rest) : *len;
    char *line = xstrndup((const char *)*rest, strnlen((const char *)*rest, n));
    *rest += nl ? n + 1 : n;
    *len -= nl ? n + 1 : n;
    return line;
}

unsigned char *pr_copy_body(const uint8_t *data, size_t len)
{
    unsigned char *body = xmalloc(len ? len : 1);
    if (len)
        memcpy(body, data, len);
    return body;
}

void pr_check(int ok)
{
    if (!ok)
        abort();
}

void pr_check_status(const ingest_result *res)
{
    pr_check(res->status >= 200 && res->status < 600);
    pr_check(res->reason != NULL);
    if (res->status < 200 || res->status > 299)
        pr_check(res->nevents == 0);
}

void pr_check_events(const ingest_result *res, const char *prefix)
{
    for (size_t i = 0; i < res->nevents; i++) {
        const ingest_event *e = &res->events[i];
        pr_check(e->id && e->native_type && e->account && e->payload);
        pr_check(strncmp(e->id, prefix, strlen(prefix)) == 0);
        hf_json v = hf_json_parse(e->payload, strlen(e->payload), NULL, 0);
        pr_check(v != NULL && hf_json_is_object(v));
        hf_json_free(v);
    }
}

void pr_check_result(const ingest_result *res, const char *prefix)
{
    pr_check_status(res);
    pr_check(res->response_body == NULL);
    pr_check_events(res, prefix);
}

void pr_fuzz_b64_signed(const ingest_provider *provider, const char *header, const char *key,
                        const char *old_key, const hf_secrets *keys, const uint8_t *data,
                        size_t size)
{
    static hf_secrets *no_keys;
    if (!no_keys)
        no_keys = hf_secrets_new();
    if (size < 1)
        return;
    unsigned mode = data[0] % 6;
    const uint8_t *rest = data + 1;
    size_t rest_len = size - 1;

    char sig[128] = "";
    char *fuzzed_sig = NULL;
    if (mode == 3) /* the first line of the input is the signature header */
        fuzzed_sig = pr_take_line(&rest, &rest_len);
    unsigned char *body = pr_copy_body(rest, rest_len);
    if (mode == 0 || mode == 4 || mode == 5 || mode == 1)
        pr_hmac_b64(mode == 1 ? old_key : key, body, rest_len, sig);
    const char *headers[] = {header, fuzzed_sig ? fuzzed_sig : sig, NULL};
    char path[128], url[192], prefix[64];
    snprintf(path, sizeof path, PR_PATH("%s"), provider->id);
    snprintf(url, sizeof url, PR_URL("%s"), provider->id);
    snprintf(prefix, sizeof prefix, "%s:", provider->id);
    ingest_result res;
    pr_call(provider, mode == 5 ? "GET" : "POST", path, NULL, url, body, rest_len,
            mode == 2 ? NULL : headers, mode == 4 ? no_keys : keys, 1700000000000LL, &res);
    pr_check_result(&res, prefix);
    if (mode == 2)
        pr_check(res.status == 401 && strcmp(res.reason, "missing_signature") == 0);
    if (mode == 4)
        pr_check(res.status == 503);
    if (mode == 5)
        pr_check(res.status == 405);
    if (mode == 0 || mode == 1)
        pr_check(res.status == 200 || res.status == 400);
    ingest_result_free(&res);
    free(body);
    free(fuzzed_sig);
}
