/* fuzz_hubspot: drives the HubSpot module with arbitrary bodies. The first byte picks how the
 * request is made: signed v3 / v1 / v2 (current or previous secret), unsigned, a fuzzed
 * timestamp or signature header, a fuzzed public URL (signed over an independent decoding of
 * the listed escapes, so the module's decoding must agree), no secret, GET. Checks the result's
 * invariants and frees everything. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "provider.h"
#include "provider_request.h"
#include "secrets.h"
#include "util.h"

#define FUZZ_SECRET "fuzz-hubspot-client-secret"
#define FUZZ_OLD_SECRET "fuzz-hubspot-client-secret-old"
#define FUZZ_URL "https://hooks.example.com/api/integrations/webhooks/hubspot"
#define FUZZ_NOW 1700000000000LL
#define FUZZ_NOW_TEXT "1700000000000"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reference decoding of HubSpot's listed escapes, written independently of the module's. */
static char *reference_decode(const char *url)
{
    static const struct {
        const char *esc;
        char c;
    } table[] = {{"3A", ':'},  {"2F", '/'}, {"3F", '?'}, {"40", '@'}, {"21", '!'}, {"24", '$'},
                 {"27", '\''}, {"28", '('}, {"29", ')'}, {"2A", '*'}, {"2C", ','}, {"3B", ';'}};
    hf_buf out = {0};
    for (const char *p = url; *p;) {
        bool done = false;
        if (p[0] == '%' && p[1] && p[2]) {
            for (size_t i = 0; i < HF_ARRAY_LEN(table) && !done; i++) {
                char up1 = (char)(p[1] >= 'a' && p[1] <= 'z' ? p[1] - 32 : p[1]);
                char up2 = (char)(p[2] >= 'a' && p[2] <= 'z' ? p[2] - 32 : p[2]);
                if (up1 == table[i].esc[0] && up2 == table[i].esc[1]) {
                    hf_buf_putc(&out, table[i].c);
                    p += 3;
                    done = true;
                }
            }
        }
        if (!done)
            hf_buf_putc(&out, *p++);
    }
    return hf_buf_steal(&out);
}

static void sign_v3(const char *secret, const char *url, const unsigned char *body, size_t len,
                    const char *ts, char *out)
{
    hf_mac *m = hf_mac_new(HF_MAC_HMAC_SHA256, secret, strlen(secret));
    hf_mac_update(m, "POST", 4);
    hf_mac_update(m, url, strlen(url));
    hf_mac_update(m, body, len);
    hf_mac_update(m, ts, strlen(ts));
    unsigned char mac[HF_SHA256_LEN];
    hf_mac_final(m, mac);
    hf_base64_encode(mac, sizeof mac, out);
}

static void sign_hex(const char *secret, bool v2, const char *url, const unsigned char *body,
                     size_t len, char *out)
{
    hf_mac *m = hf_mac_new(HF_MAC_SHA256, NULL, 0);
    hf_mac_update(m, secret, strlen(secret));
    if (v2) {
        hf_mac_update(m, "POST", 4);
        hf_mac_update(m, url, strlen(url));
    }
    hf_mac_update(m, body, len);
    unsigned char mac[HF_SHA256_LEN];
    hf_mac_final(m, mac);
    hf_hex_encode(mac, sizeof mac, out);
}

enum mode {
    V3,
    V3_OLD,
    V1,
    V2_OLD,
    UNSIGNED,
    FUZZED_TS,
    FUZZED_SIG,
    FUZZED_URL,
    NO_SECRET,
    GET,
    NMODES
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hf_secrets *keys, *no_keys;
    if (!keys) {
        keys = pr_secrets("hubspot/client_secret", FUZZ_SECRET, FUZZ_OLD_SECRET);
        no_keys = hf_secrets_new();
    }
    if (size < 1)
        return 0;
    enum mode mode = (enum mode)(data[0] % NMODES);
    const uint8_t *rest = data + 1;
    size_t rest_len = size - 1;

    char *ts = NULL, *url = NULL, *fuzzed_sig = NULL, *decoded = NULL;
    if (mode == FUZZED_TS)
        ts = pr_take_line(&rest, &rest_len);
    else if (mode == FUZZED_URL)
        url = pr_take_line(&rest, &rest_len);
    else if (mode == FUZZED_SIG)
        fuzzed_sig = pr_take_line(&rest, &rest_len);
    if (!ts)
        ts = xstrdup(FUZZ_NOW_TEXT);
    if (!url)
        url = xstrdup(FUZZ_URL);
    unsigned char *body = pr_copy_body(rest, rest_len);

    char sig[128] = "";
    const char *headers[8] = {NULL};
    size_t h = 0;
    switch (mode) {
    case V3:
    case V3_OLD:
    case FUZZED_TS:
    case NO_SECRET:
    case GET:
        sign_v3(mode == V3_OLD ? FUZZ_OLD_SECRET : FUZZ_SECRET, url, body, rest_len, ts, sig);
        break;
    case FUZZED_URL:
        decoded = reference_decode(url);
        sign_v3(FUZZ_SECRET, decoded, body, rest_len, ts, sig);
        break;
    case V1:
    case V2_OLD:
        sign_hex(mode == V1 ? FUZZ_SECRET : FUZZ_OLD_SECRET, mode == V2_OLD, url, body, rest_len,
                 sig);
        break;
    case FUZZED_SIG:
    case UNSIGNED:
    case NMODES:
        break;
    }
    if (mode == V1 || mode == V2_OLD || mode == FUZZED_SIG) {
        headers[h++] = "X-HubSpot-Signature";
        headers[h++] = fuzzed_sig ? fuzzed_sig : sig;
        headers[h++] = "X-HubSpot-Signature-Version";
        headers[h++] = mode == V2_OLD ? "v2" : (mode == V1 && rest_len % 2 ? "V1" : "v1");
        if (mode == V1 && rest_len % 3 == 0)
            h -= 2; /* no version header means v1 */
    } else if (mode != UNSIGNED) {
        headers[h++] = "X-HubSpot-Signature-v3";
        headers[h++] = sig;
        headers[h++] = "X-HubSpot-Request-Timestamp";
        headers[h++] = ts;
    }
    headers[h] = NULL;

    ingest_result res;
    pr_call(&ingest_provider_hubspot, mode == GET ? "GET" : "POST", PR_PATH("hubspot"), NULL, url,
            body, rest_len, headers, mode == NO_SECRET ? no_keys : keys, FUZZ_NOW, &res);
    pr_check_result(&res, "hubspot:");
    switch (mode) {
    case V3:
    case V3_OLD:
    case V1:
    case V2_OLD:
    case FUZZED_URL: /* the module must decode the URL exactly as the reference does */
        pr_check(res.status == 200 || res.status == 400);
        break;
    case UNSIGNED:
        pr_check(res.status == 401 && strcmp(res.reason, "missing_signature") == 0);
        break;
    case NO_SECRET:
        pr_check(res.status == 503);
        break;
    case GET:
        pr_check(res.status == 405);
        break;
    case FUZZED_TS:
    case FUZZED_SIG:
    case NMODES:
        break;
    }
    ingest_result_free(&res);
    free(body);
    free(ts);
    free(url);
    free(fuzzed_sig);
    free(decoded);
    return 0;
}
