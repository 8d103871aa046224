/* test_provider_xero: Xero verification, intent-to-receive and event splitting through the real
 * handle(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "provider.h"
#include "provider_assert.h"
#include "provider_request.h"
#include "secrets.h"
#include "util.h"

/* The published intent-to-receive vector (providers.md, Xero test vector). */
#define ITR_KEY                                                                                    \
    "OSd0eLlVIY9ZhViEqlDUh4+6n6M+Lo+eDaEJheJ6OCCgWwIz2D3JIAU6jPMipHRbgKTLz2uJ+xiACXGDBLrgdA=="
#define ITR_BODY                                                                                   \
    "{\"events\":[],\"firstEventSequence\": 0,\"lastEventSequence\": 0,\"entropy\": "              \
    "\"S0m3r4Nd0mt3xt\"}"
#define ITR_SIG "XeRCwNl/cf7Wwt8bUMCqvKF6V2eoosfmJrRLcBPSquQ="

#define KEY "test-webhook-key-0123456789abcdef"
#define OLD_KEY "old-webhook-key-fedcba9876543210"

#define EV1                                                                                        \
    "{\"resourceUrl\":\"https://api.xero.com/api.xro/2.0/Invoices/"                                \
    "a1b2c3d4-0000-4000-8000-000000000001\",\"resourceId\":\"a1b2c3d4-0000-4000-8000-"             \
    "000000000001\",\"eventDateUtc\":\"2017-06-21T01:15:39.902\",\"eventType\":\"CREATE\","        \
    "\"eventCategory\":\"INVOICE\",\"tenantId\":\"c2cc9b6e-9458-4c7d-93cc-f02b81b0594f\","         \
    "\"tenantType\":\"ORGANISATION\"}"
#define EV2                                                                                        \
    "{\"resourceUrl\":\"https://api.xero.com/api.xro/2.0/Contacts/"                                \
    "717f2ecf-6b3a-4d6e-a1c5-a3b1cd8e2c55\",\"resourceId\":\"717f2ecf-6b3a-4d6e-a1c5-"             \
    "a3b1cd8e2c55\",\"eventDateUtc\":\"2017-06-21T01:16:00\",\"eventType\":\"UPDATE\","            \
    "\"eventCategory\":\"CONTACT\",\"tenantId\":\"4d3c2b1a-0000-4000-8000-0000000000aa\","         \
    "\"tenantType\":\"ORGANISATION\"}"
#define EV3                                                                                        \
    "{\"resourceUrl\":\"https://api.xero.com/api.xro/2.0/CreditNotes/"                             \
    "5f6e7d8c-0000-4000-8000-000000000003\",\"resourceId\":\"5f6e7d8c-0000-4000-8000-"             \
    "000000000003\",\"eventDateUtc\":\"yesterday\",\"eventType\":\"CREATE\","                      \
    "\"eventCategory\":\"CREDITNOTE\",\"tenantId\":\"c2cc9b6e-9458-4c7d-93cc-f02b81b0594f\","      \
    "\"tenantType\":\"ORGANISATION\",\"data\":{\"Type\":\"ACCRECCREDIT\",\"Status\":"              \
    "\"AUTHORISED\"}}"
#define BATCH                                                                                      \
    "{\"events\":[" EV1 "," EV2 "," EV3 "],\"firstEventSequence\":1,\"lastEventSequence\":3,"      \
    "\"entropy\":\"ZXQMRZHCPUTRRLFNHLFA\"}"

#define NOW 1700000000000LL

static void call(const char *method, const char *body, const char *const *headers,
                 const hf_secrets *secrets, ingest_result *res)
{
    pr_call(&ingest_provider_xero, method, PR_PATH("xero"), NULL, PR_URL("xero"), body,
            strlen(body), headers, secrets, NOW, res);
}

/* Calls handle() with body signed under key (NULL: no signature header). */
static void call_signed(const char *body, const char *key, const hf_secrets *secrets,
                        ingest_result *res)
{
    pr_call_signed_b64(&ingest_provider_xero, "X-Xero-Signature", body, key, secrets, NOW, res);
}

static hf_secrets *store(const char *current, const char *previous)
{
    return pr_secrets("xero/webhook_key", current, previous);
}

static void test_itr_vector_signed(void **state)
{
    (void)state;
    hf_secrets *s = store(ITR_KEY, NULL);
    const char *headers[] = {"x-xero-signature", ITR_SIG, NULL};
    ingest_result res;
    call("POST", ITR_BODY, headers, s, &res);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.reason, "handshake");
    assert_int_equal(res.nevents, 0);
    assert_null(res.response_body);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_itr_vector_bad_signature(void **state)
{
    (void)state;
    hf_secrets *s = store(ITR_KEY, NULL);
    /* Xero's probes sign some requests wrongly; each must get 401, with an empty body. */
    const char *wrong[] = {"x-xero-signature",
                           "YeRCwNl/cf7Wwt8bUMCqvKF6V2eoosfmJrRLcBPSquQ=", NULL};
    ingest_result res;
    call("POST", ITR_BODY, wrong, s, &res);
    pr_assert_rejected(&res, 401, "bad_signature");
    ingest_result_free(&res);

    const char *garbage[] = {"x-xero-signature", "not base64!", NULL};
    call("POST", ITR_BODY, garbage, s, &res);
    pr_assert_rejected(&res, 401, "bad_signature");
    ingest_result_free(&res);

    const char *empty[] = {"x-xero-signature", "", NULL};
    call("POST", ITR_BODY, empty, s, &res);
    pr_assert_rejected(&res, 401, "bad_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void assert_batch(const ingest_result *res)
{
    assert_int_equal(res->status, 200);
    assert_string_equal(res->reason, "accepted");
    assert_null(res->response_body);
    assert_int_equal(res->nevents, 3);

    const ingest_event *e = &res->events[0];
    assert_string_equal(e->id, "xero:164cfd545596d15e85a347d99fb50659");
    assert_string_equal(e->native_type, "INVOICE.CREATE");
    assert_string_equal(e->account, "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f");
    assert_string_equal(e->resource, "INVOICE:a1b2c3d4-0000-4000-8000-000000000001");
    assert_string_equal(e->occurred_at, "2017-06-21T01:15:39.902Z");
    assert_string_equal(e->payload, EV1);

    e = &res->events[1];
    assert_string_equal(e->id, "xero:3da0022326e4bf0561e430907f06167d");
    assert_string_equal(e->native_type, "CONTACT.UPDATE");
    assert_string_equal(e->account, "4d3c2b1a-0000-4000-8000-0000000000aa");
    assert_string_equal(e->resource, "CONTACT:717f2ecf-6b3a-4d6e-a1c5-a3b1cd8e2c55");
    assert_string_equal(e->occurred_at, "2017-06-21T01:16:00.000Z");
    assert_string_equal(e->payload, EV2);

    /* An unparsable eventDateUtc leaves occurred_at empty; it is not an error. */
    e = &res->events[2];
    assert_string_equal(e->id, "xero:82596ba078aedb4288dae370c2a461e4");
    assert_string_equal(e->native_type, "CREDITNOTE.CREATE");
    assert_string_equal(e->account, "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f");
    assert_string_equal(e->resource, "CREDITNOTE:5f6e7d8c-0000-4000-8000-000000000003");
    assert_null(e->occurred_at);
    assert_string_equal(e->payload, EV3);
}

static void test_batch_splits_into_events(void **state)
{
    (void)state;
    hf_secrets *s = store(KEY, NULL);
    ingest_result res;
    call_signed(BATCH, KEY, s, &res);
    assert_batch(&res);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_redelivery_has_same_ids(void **state)
{
    (void)state;
    hf_secrets *s = store(KEY, NULL);
    ingest_result first, second;
    call_signed(BATCH, KEY, s, &first);
    call_signed(BATCH, KEY, s, &second);
    assert_int_equal(first.nevents, 3);
    assert_int_equal(second.nevents, 3);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(first.events[i].id, second.events[i].id);
    assert_string_not_equal(first.events[0].id, first.events[2].id);
    ingest_result_free(&first);
    ingest_result_free(&second);
    hf_secrets_free(s);
}

static void test_tampered_body(void **state)
{
    (void)state;
    hf_secrets *s = store(KEY, NULL);
    char sig[64];
    pr_hmac_b64(KEY, BATCH, strlen(BATCH), sig);
    char *tampered = xstrdup(BATCH);
    tampered[strlen(tampered) - 3] ^= 1; /* one bit in the entropy */
    const char *headers[] = {"x-xero-signature", sig, NULL};
    ingest_result res;
    call("POST", tampered, headers, s, &res);
    pr_assert_rejected(&res, 401, "bad_signature");
    ingest_result_free(&res);
    free(tampered);
    hf_secrets_free(s);
}

static void test_wrong_key(void **state)
{
    (void)state;
    hf_secrets *s = store(KEY, NULL);
    ingest_result res;
    call_signed(BATCH, "some-other-key", s, &res);
    pr_assert_rejected(&res, 401, "bad_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_missing_signature(void **state)
{
    (void)state;
    hf_secrets *s = store(KEY, NULL);
    ingest_result res;
    call_signed(BATCH, NULL, s, &res);
    pr_assert_rejected(&res, 401, "missing_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_missing_secret(void **state)
{
    (void)state;
    hf_secrets *s = store(NULL, NULL);
    hf_secrets_set(s, "quickbooks/verifier_token", KEY, strlen(KEY));
    ingest_result res;
    call_signed(BATCH, KEY, s, &res);
    pr_assert_rejected(&res, 503, "missing_secret");
    assert_string_equal(res.detail, "xero/webhook_key is not configured");
    ingest_result_free(&res);
    /* An unsigned request is not accepted either. */
    call_signed(ITR_BODY, NULL, s, &res);
    pr_assert_rejected(&res, 503, "missing_secret");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_previous_key_accepted(void **state)
{
    (void)state;
    hf_secrets *s = store(KEY, OLD_KEY);
    ingest_result res;
    call_signed(BATCH, OLD_KEY, s, &res);
    assert_batch(&res);
    ingest_result_free(&res);
    call_signed(BATCH, KEY, s, &res);
    assert_batch(&res);
    ingest_result_free(&res);
    hf_secrets_free(s);

    /* Only the .previous file present (mid-rotation) still verifies. */
    s = store(NULL, OLD_KEY);
    call_signed(BATCH, OLD_KEY, s, &res);
    assert_int_equal(res.status, 200);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_signed_malformed_json(void **state)
{
    (void)state;
    hf_secrets *s = store(KEY, NULL);
    ingest_result res;
    call_signed("{\"events\":[{\"tenantId\":", KEY, s, &res);
    pr_assert_rejected(&res, 400, "malformed");
    ingest_result_free(&res);

    call_signed("[1,2,3]", KEY, s, &res);
    pr_assert_rejected(&res, 400, "malformed");
    ingest_result_free(&res);

    call_signed("{\"events\":{}}", KEY, s, &res);
    pr_assert_rejected(&res, 400, "malformed");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_event_missing_field_rejects_delivery(void **state)
{
    (void)state;
    hf_secrets *s = store(KEY, NULL);
    ingest_result res;
    /* The first event is fine; the second lacks tenantId, so nothing is accepted. */
    call_signed("{\"events\":[" EV1 ",{\"resourceId\":\"x\",\"eventType\":\"CREATE\","
                "\"eventCategory\":\"INVOICE\"}]}",
                KEY, s, &res);
    pr_assert_rejected(&res, 400, "malformed");
    assert_non_null(strstr(res.detail, "tenantId"));
    ingest_result_free(&res);

    call_signed("{\"events\":[" EV1 ",\"INVOICE\"]}", KEY, s, &res);
    pr_assert_rejected(&res, 400, "malformed");
    ingest_result_free(&res);

    call_signed("{\"events\":[{\"resourceId\":\"x\",\"eventType\":\"CREATE\",\"eventCategory\":"
                "\"INVOICE\",\"tenantId\":7}]}",
                KEY, s, &res);
    pr_assert_rejected(&res, 400, "malformed");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_get_is_405(void **state)
{
    (void)state;
    hf_secrets *s = store(ITR_KEY, NULL);
    const char *headers[] = {"x-xero-signature", ITR_SIG, NULL};
    ingest_result res;
    call("GET", ITR_BODY, headers, s, &res);
    pr_assert_rejected(&res, 405, "method_not_allowed");
    ingest_result_free(&res);
    call("PUT", ITR_BODY, headers, s, &res);
    pr_assert_rejected(&res, 405, "method_not_allowed");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_itr_vector_signed),
        cmocka_unit_test(test_itr_vector_bad_signature),
        cmocka_unit_test(test_batch_splits_into_events),
        cmocka_unit_test(test_redelivery_has_same_ids),
        cmocka_unit_test(test_tampered_body),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_missing_signature),
        cmocka_unit_test(test_missing_secret),
        cmocka_unit_test(test_previous_key_accepted),
        cmocka_unit_test(test_signed_malformed_json),
        cmocka_unit_test(test_event_missing_field_rejects_delivery),
        cmocka_unit_test(test_get_is_405),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
