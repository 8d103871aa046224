/* fuzz_meta: drives the Meta module with arbitrary bodies and query strings. The first byte picks
 * how the request is made (a POST signed with the current key, one signed with the previous key in
 * upper-case hex, the GET handshake with the input as its query, a fuzzed signature header, no
 * credentials or no secrets, a fuzzed method); signed inputs reach the JSON parse and split path.
 * Checks the result's invariants and frees everything. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "provider.h"
#include "provider_request.h"
#include "secrets.h"
#include "util.h"

#define FUZZ_KEY "fuzz-meta-app-secret"
#define FUZZ_OLD_KEY "fuzz-meta-app-secret-old"
#define FUZZ_VERIFY "fuzz-verify-token"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Invariants every provider result must hold; a handshake answers its challenge as text. */
static void check_result(const ingest_result *res)
{
    pr_check_status(res);
    if (res->status < 200 || res->status > 299)
        pr_check(res->response_body == NULL);
    if (strcmp(res->reason, "handshake") == 0)
        pr_check(res->status == 200 && res->response_body && res->response_body[0] &&
                 strcmp(res->response_type, "text/plain") == 0 && res->nevents == 0);
    else
        pr_check(res->response_body == NULL);
    pr_check_events(res, "meta:");
    for (size_t i = 0; i < res->nevents; i++) {
        const ingest_event *e = &res->events[i];
        pr_check(e->account[0]);
        pr_check(!e->resource || strncmp(e->resource, "psid:", 5) == 0);
        pr_check(!e->occurred_at || (strlen(e->occurred_at) == 24 && e->occurred_at[23] == 'Z'));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hf_secrets *keys, *no_keys;
    if (!keys) {
        keys = pr_secrets("meta/app_secret", FUZZ_KEY, FUZZ_OLD_KEY);
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
        line = pr_take_line(&rest, &rest_len);
    unsigned char *body = pr_copy_body(rest, rest_len);
    /* The handshake reads the input as its query string. */
    char *query = mode == 2 ? xstrndup((const char *)rest, rest_len) : NULL;

    char sig[7 + 2 * HF_SHA256_LEN + 1] = "sha256=";
    if (mode == 0 || mode == 1 || mode == 5) {
        pr_hmac_hex(mode == 1 ? FUZZ_OLD_KEY : FUZZ_KEY, body, rest_len, sig + 7);
        for (char *p = sig + 7; mode == 1 && *p; p++)
            if (*p >= 'a' && *p <= 'f')
                *p = (char)(*p - 'a' + 'A');
    }
    const char *headers[] = {"X-Hub-Signature-256", mode == 3 ? line : sig, NULL};
    const char *method = mode == 2 ? "GET" : mode == 5 ? line : "POST";
    ingest_result res;
    pr_call(&ingest_provider_meta, method, PR_PATH("meta"), query, PR_URL("meta"), body, rest_len,
            mode == 4 ? NULL : headers, (mode == 4 || mode == 2) && flag ? no_keys : keys,
            1776138612000LL, &res);
    check_result(&res);
    switch (mode) {
    case 0:
    case 1:
        pr_check(res.status == 200 || res.status == 400);
        break;
    case 2:
        if (flag)
            pr_check(res.status == 503);
        else
            pr_check(res.status == 200 || res.status == 400 || res.status == 403);
        break;
    case 4:
        pr_check(res.status == (flag ? 503 : 401));
        break;
    case 5:
        if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
            pr_check(res.status == 405);
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
