/* fuzz_klaviyo: drives the Klaviyo module with arbitrary bodies. The first byte picks how the
 * request is made (a system webhook signed with the current key, one signed with the previous key
 * over a fuzzed Klaviyo-Timestamp, a flow webhook with the right secret header, a fuzzed signature
 * header, no credentials or no secrets, GET); signed inputs reach the JSON parse and split path.
 * Checks the result's invariants and frees everything. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "provider.h"
#include "provider_request.h"
#include "secrets.h"
#include "util.h"

#define FUZZ_KEY "fuzz-klaviyo-webhook-secret"
#define FUZZ_OLD_KEY "fuzz-klaviyo-webhook-secret-old"
#define FUZZ_FLOW "fuzz-klaviyo-flow-secret"
#define FUZZ_TS "Tue, 14 Apr 2026 03:50:12 GMT"
#define FUZZ_NOW_MS 1776138612000LL
/* Seeds carry this id in meta.klaviyo_webhook_id so signed inputs get past the id check. */
#define FUZZ_WEBHOOK_ID "01KP4928STE8FKCWB6WDHZ4ZB7"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Invariants every provider result must hold, plus Klaviyo's: no response body or type, non-empty
 * type and account, RFC 3339 UTC times. */
static void check_result(const ingest_result *res)
{
    pr_check_result(res, "klaviyo:");
    pr_check(res->response_type == NULL);
    for (size_t i = 0; i < res->nevents; i++) {
        const ingest_event *e = &res->events[i];
        pr_check(e->native_type[0] && e->account[0]);
        pr_check(!e->occurred_at || (strlen(e->occurred_at) == 24 && e->occurred_at[23] == 'Z'));
    }
}

static void sign(const char *key, const unsigned char *body, size_t len, const char *ts,
                 char hex[2 * HF_SHA256_LEN + 1])
{
    hf_mac *m = hf_mac_new(HF_MAC_HMAC_SHA256, key, strlen(key));
    hf_mac_update(m, body, len);
    hf_mac_update(m, ts, strlen(ts));
    unsigned char mac[HF_SHA256_LEN];
    hf_mac_final(m, mac);
    hf_hex_encode(mac, sizeof mac, hex);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hf_secrets *keys, *no_keys;
    if (!keys) {
        keys = pr_secrets("klaviyo/webhook_secret", FUZZ_KEY, FUZZ_OLD_KEY);
        hf_secrets_set(keys, "klaviyo/flow_secret", FUZZ_FLOW, strlen(FUZZ_FLOW));
        no_keys = hf_secrets_new();
    }
    if (size < 1)
        return 0;
    unsigned mode = data[0] % 6;
    bool flag = data[0] & 0x80;
    const uint8_t *rest = data + 1;
    size_t rest_len = size - 1;

    char *line = NULL;
    if (mode == 1 || mode == 3)
        line = pr_take_line(&rest, &rest_len);
    unsigned char *body = pr_copy_body(rest, rest_len);

    char sig[2 * HF_SHA256_LEN + 1] = "";
    const char *ts = mode == 1 ? line : FUZZ_TS;
    if (mode == 0 || mode == 1)
        sign(mode == 1 ? FUZZ_OLD_KEY : FUZZ_KEY, body, rest_len, ts, sig);
    const char *system[] = {"Klaviyo-Signature",
                            mode == 3 ? line : sig,
                            "Klaviyo-Timestamp",
                            ts,
                            "Klaviyo-Webhook-Id",
                            FUZZ_WEBHOOK_ID,
                            NULL};
    const char *flow[] = {"X-Hookflow-Flow-Secret", FUZZ_FLOW, "X-Hookflow-Account",
                          flag ? "ACCT_HDR" : NULL, NULL};
    const void *headers = mode == 2 ? (const void *)flow : mode == 4 ? NULL : (const void *)system;
    ingest_result res;
    pr_call(&ingest_provider_klaviyo, mode == 5 ? "GET" : "POST", PR_PATH("klaviyo"), NULL,
            PR_URL("klaviyo"), body, rest_len, headers, mode == 4 && flag ? no_keys : keys,
            FUZZ_NOW_MS, &res);
    check_result(&res);
    switch (mode) {
    case 0:
        pr_check(res.status == 200 || res.status == 400 ||
                 (res.status == 401 && strcmp(res.detail, "webhook id mismatch") == 0));
        break;
    case 1:
        pr_check(res.status == 200 || res.status == 400 || res.status == 401);
        pr_check(res.status != 401 || strcmp(res.reason, "stale_timestamp") == 0 ||
                 strcmp(res.detail, "webhook id mismatch") == 0);
        break;
    case 2:
        pr_check(res.status == 200 || res.status == 400);
        break;
    case 4:
        pr_check(flag ? res.status == 503 : strcmp(res.reason, "missing_signature") == 0);
        break;
    case 5:
        pr_check(res.status == 405);
        break;
    default:
        break;
    }
    ingest_result_free(&res);
    free(body);
    free(line);
    return 0;
}
