/* fuzz_xero: drives the Xero module with arbitrary bodies. The first byte picks how the request
 * is made (signed with the current or previous key, unsigned, a fuzzed signature header, no
 * secret, GET); signed inputs reach the JSON parse and split path. Checks the result's
 * invariants and frees everything. */
#include <stdint.h>

#include "provider.h"
#include "provider_request.h"

#define FUZZ_KEY "fuzz-xero-webhook-key"
#define FUZZ_OLD_KEY "fuzz-xero-webhook-key-old"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hf_secrets *keys;
    if (!keys)
        keys = pr_secrets("xero/webhook_key", FUZZ_KEY, FUZZ_OLD_KEY);
    pr_fuzz_b64_signed(&ingest_provider_xero, "x-xero-signature", FUZZ_KEY, FUZZ_OLD_KEY, keys,
                       data, size);
    return 0;
}
