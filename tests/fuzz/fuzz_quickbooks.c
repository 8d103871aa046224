/* fuzz_quickbooks: drives the QuickBooks module with arbitrary bodies (legacy objects and
 * CloudEvents arrays). The first byte picks how the request is made (signed with the current or
 * previous token, unsigned, a fuzzed signature header, no secret, GET); signed inputs reach the
 * JSON parse and split path. Checks the result's invariants and frees everything. */
#include <stdint.h>

#include "provider.h"
#include "provider_request.h"

#define FUZZ_KEY "fuzz-qbo-verifier-token"
#define FUZZ_OLD_KEY "fuzz-qbo-verifier-token-old"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static hf_secrets *keys;
    if (!keys)
        keys = pr_secrets("quickbooks/verifier_token", FUZZ_KEY, FUZZ_OLD_KEY);
    pr_fuzz_b64_signed(&ingest_provider_quickbooks, "intuit-signature", FUZZ_KEY, FUZZ_OLD_KEY,
                       keys, data, size);
    return 0;
}
