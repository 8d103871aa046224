/* test_provider_quickbooks: QuickBooks Online verification and both payload formats (legacy
 * eventNotifications, CloudEvents) through the real handle(). */
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

/* The published SDK vector (providers.md, QuickBooks test vector). */
#define SDK_TOKEN "b5771f19b12ddb4bcdb9f08bdc50bc63878a"
#define SDK_BODY                                                                                   \
    "{\"eventNotifications\":[{\"realmId\":\"1185883450\",\"dataChangeEvent\":{\"entities\":[{"    \
    "\"name\":\"Customer\",\"id\":\"1\",\"operation\":\"Create\",\"lastUpdated\":\"2015-10-"       \
    "05T14:42:19-0700\"}]}}]}"
#define SDK_SIG "JC2GUwciPmRBwEO7WvrRmKqu9tGOKL8FFallocTFi8Q="

#define KEY "verifier-token-for-tests-0001"
#define OLD_KEY "verifier-token-for-tests-0000"

#define LEGACY_BATCH                                                                               \
    "{\"eventNotifications\":[{\"realmId\":\"1185883450\",\"dataChangeEvent\":{\"entities\":["     \
    "{\"name\":\"Customer\",\"id\":\"1\",\"operation\":\"Create\",\"lastUpdated\":"                \
    "\"2015-10-05T14:42:19-0700\"},{\"name\":\"Invoice\",\"id\":\"130\",\"operation\":"            \
    "\"Update\",\"lastUpdated\":\"2024-01-31T23:30:00.123-08:00\"}]}},{\"realmId\":"               \
    "\"9130357992111111\",\"dataChangeEvent\":{\"entities\":[{\"name\":\"SalesReceipt\","          \
    "\"id\":\"42\",\"operation\":\"Delete\",\"lastUpdated\":\"2024-02-01T08:00:00Z\"}]}}]}"

#define CE1                                                                                        \
    "{\"specversion\":\"1.0\",\"id\":\"88cd52aa-33b6-4351-9aa6-1e7e2a1b7c11\",\"source\":"         \
    "\"intuit.dsnBgbseACLLRZNxo2dfc4evmEJdxde58sxw4nR/ApF88Q=\",\"type\":"                         \
    "\"qbo.salesreceipt.created.v1\",\"datacontenttype\":\"application/json\",\"time\":"           \
    "\"2025-09-10T21:31:25.179851517Z\",\"intuitentityid\":\"1234\",\"intuitaccountid\":"          \
    "\"310687\",\"data\":{}}"
#define CE2                                                                                        \
    "{\"specversion\":\"1.0\",\"id\":\"b2f9a1c0-7d2e-4f4a-9c1b-0e5d6f7a8b9c\",\"source\":"         \
    "\"intuit.qbo\",\"type\":\"qbo.customer.updated.v1\",\"datacontenttype\":"                     \
    "\"application/json\",\"time\":\"2025-09-10T14:31:26-07:00\",\"intuitentityid\":\"58\","       \
    "\"intuitaccountid\":\"9341453098765432\",\"data\":{\"changed\":[\"DisplayName\"]}}"
#define CLOUDEVENTS "[" CE1 "," CE2 "]"

#define NOW 1700000000000LL

static void call(const char *method, const char *body, const char *const *headers,
                 const hf_secrets *secrets, ingest_result *res)
{
    pr_call(&ingest_provider_quickbooks, method, PR_PATH("quickbooks"), NULL, PR_URL("quickbooks"),
            body, strlen(body), headers, secrets, NOW, res);
}

/* Calls handle() with body signed under key (NULL: no signature header). */
static void call_signed(const char *body, const char *key, const hf_secrets *secrets,
                        ingest_result *res)
{
    pr_call_signed_b64(&ingest_provider_quickbooks, "intuit-signature", body, key, secrets, NOW,
                       res);
}

static hf_secrets *store(const char *current, const char *previous)
{
    return pr_secrets("quickbooks/verifier_token", current, previous);
}

static void test_sdk_vector(void **state)
{
    (void)state;
    hf_secrets *s = store(SDK_TOKEN, NULL);
    const char *headers[] = {"Intuit-Signature", SDK_SIG, NULL};
    ingest_result res;
    call("POST", SDK_BODY, headers, s, &res);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.reason, "accepted");
    assert_null(res.response_body);
    assert_int_equal(res.nevents, 1);
    pr_assert_event(&res.events[0], "quickbooks:c4522c49433017a87cc23b13bbef129d",
                    "Customer.Create", "1185883450", "customer:1", "2015-10-05T21:42:19.000Z",
                    "{\"realmId\":\"1185883450\",\"name\":\"Customer\",\"id\":\"1\",\"operation\":"
                    "\"Create\",\"lastUpdated\":\"2015-10-05T14:42:19-0700\"}");
    ingest_result_free(&res);

    /* The SDK test's must-fail signature. */
    const char *bad[] = {"intuit-signature", "1234", NULL};
    call("POST", SDK_BODY, bad, s, &res);
    pr_assert_rejected(&res, 401, "bad_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void assert_legacy_batch(const ingest_result *res)
{
    assert_int_equal(res->status, 200);
    assert_string_equal(res->reason, "accepted");
    assert_int_equal(res->nevents, 3);
    pr_assert_event(&res->events[0], "quickbooks:c4522c49433017a87cc23b13bbef129d",
                    "Customer.Create", "1185883450", "customer:1", "2015-10-05T21:42:19.000Z",
                    "{\"realmId\":\"1185883450\",\"name\":\"Customer\",\"id\":\"1\",\"operation\":"
                    "\"Create\",\"lastUpdated\":\"2015-10-05T14:42:19-0700\"}");
    pr_assert_event(&res->events[1], "quickbooks:80e04774dcd7710c2f2d86ee14ffbc75",
                    "Invoice.Update", "1185883450", "invoice:130", "2024-02-01T07:30:00.123Z",
                    "{\"realmId\":\"1185883450\",\"name\":\"Invoice\",\"id\":\"130\",\"operation\":"
                    "\"Update\",\"lastUpdated\":\"2024-01-31T23:30:00.123-08:00\"}");
    pr_assert_event(&res->events[2], "quickbooks:8584f0e68bc7cf11dc69ee994c24e0e2",
                    "SalesReceipt.Delete", "9130357992111111", "salesreceipt:42",
                    "2024-02-01T08:00:00.000Z",
                    "{\"realmId\":\"9130357992111111\",\"name\":\"SalesReceipt\",\"id\":\"42\","
                    "\"operation\":\"Delete\",\"lastUpdated\":\"2024-02-01T08:00:00Z\"}");
}

static void test_legacy_batch_spans_realms(void **state)
{
    (void)state;
    hf_secrets *s = store(KEY, NULL);
    ingest_result res;
    call_signed(LEGACY_BATCH, KEY, s, &res);
    assert_legacy_batch(&res);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_cloudevents_batch(void **state)
{
    (void)state;
    hf_secrets *s = store(KEY, NULL);
    ingest_result res;
    call_signed(CLOUDEVENTS, KEY, s, &res);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.reason, "accepted");
    assert_int_equal(res.nevents, 2);
    pr_assert_event(&res.events[0], "quickbooks:88cd52aa-33b6-4351-9aa6-1e7e2a1b7c11",
                    "qbo.salesreceipt.created.v1", "310687", "salesreceipt:1234",
                    "2025-09-10T21:31:25.179Z", CE1);
    pr_assert_event(&res.events[1], "quickbooks:b2f9a1c0-7d2e-4f4a-9c1b-0e5d6f7a8b9c",
                    "qbo.customer.updated.v1", "9341453098765432", "customer:58",
                    "2025-09-10T21:31:26.000Z", CE2);
    ingest_result_free(&res);

    /* No entity id or an unparsable time: the event is kept, without resource / time. */
    call_signed("[{\"id\":\"e-1\",\"type\":\"qbo.account.created.v1\",\"intuitaccountid\":"
                "\"310687\",\"time\":\"not a time\"}]",
                KEY, s, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.nevents, 1);
    assert_string_equal(res.events[0].id, "quickbooks:e-1");
    assert_null(res.events[0].resource);
    assert_null(res.events[0].occurred_at);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

/* One entity, one resource (and so one ordering key) whichever format announces it, while an
 * app moves from the legacy format to CloudEvents. */
static void test_same_entity_same_resource_in_both_formats(void **state)
{
    (void)state;
    hf_secrets *s = store(KEY, NULL);
    ingest_result legacy, ce;
    call_signed("{\"eventNotifications\":[{\"realmId\":\"310687\",\"dataChangeEvent\":{"
                "\"entities\":[{\"name\":\"SalesReceipt\",\"id\":\"7\",\"operation\":"
                "\"Update\",\"lastUpdated\":\"2025-09-10T21:31:25Z\"}]}}]}",
                KEY, s, &legacy);
    call_signed("[{\"id\":\"e-7\",\"type\":\"qbo.SalesReceipt.updated.v1\",\"intuitaccountid\":"
                "\"310687\",\"intuitentityid\":\"7\"}]",
                KEY, s, &ce);
    assert_int_equal(legacy.nevents, 1);
    assert_int_equal(ce.nevents, 1);
    assert_string_equal(legacy.events[0].resource, "salesreceipt:7");
    assert_string_equal(ce.events[0].resource, "salesreceipt:7");
    ingest_result_free(&legacy);
    ingest_result_free(&ce);
    hf_secrets_free(s);
}

/* CloudEvents times (and so the shared time parser): normalised to UTC with milliseconds, or
 * left empty when they do not parse. */
static void test_time_normalisation(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"2025-09-10T21:31:25.179851517Z", "2025-09-10T21:31:25.179Z"},
        {"2025-09-10T21:31:25Z", "2025-09-10T21:31:25.000Z"},
        {"2025-09-10t21:31:25.1z", "2025-09-10T21:31:25.100Z"},
        {"2025-09-11T03:01:25+05:30", "2025-09-10T21:31:25.000Z"},
        {"2025-09-10T16:31:25-05", "2025-09-10T21:31:25.000Z"},
        {"2024-02-29T00:00:00-0100", "2024-02-29T01:00:00.000Z"},
        {"2025-12-31T23:30:00-01:00", "2026-01-01T00:30:00.000Z"},
        {"2025-09-10T21:31:25", "2025-09-10T21:31:25.000Z"},
        {"1969-12-31T23:59:59.999Z", "1969-12-31T23:59:59.999Z"},
        {"2023-02-29T00:00:00Z", NULL},
        {"2025-13-01T00:00:00Z", NULL},
        {"2025-09-10", NULL},
        {"2025-09-10T21:31:25.Z", NULL},
        {"2025-09-10T21:31:25+5", NULL},
        {"2025-09-10T21:31:25+24:00", NULL},
        {"2025-09-10T21:31:25Zjunk", NULL},
        {"0999-01-01T00:00:00Z", NULL},
        {"9999-12-31T23:59:59-01:00", NULL},
        {"", NULL},
    };
    hf_secrets *s = store(KEY, NULL);
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        char *body = xasprintf("[{\"id\":\"t-%zu\",\"type\":\"qbo.invoice.updated.v1\","
                               "\"intuitaccountid\":\"1\",\"time\":\"%s\"}]",
                               i, cases[i].in);
        ingest_result res;
        call_signed(body, KEY, s, &res);
        assert_int_equal(res.status, 200);
        assert_int_equal(res.nevents, 1);
        if (cases[i].want)
            assert_string_equal(res.events[0].occurred_at, cases[i].want);
        else
            assert_null(res.events[0].occurred_at);
        ingest_result_free(&res);
        free(body);
    }
    hf_secrets_free(s);
}

static void test_redelivery_has_same_ids(void **state)
{
    (void)state;
    hf_secrets *s = store(KEY, NULL);
    const char *bodies[] = {LEGACY_BATCH, CLOUDEVENTS};
    for (size_t b = 0; b < 2; b++) {
        ingest_result first, second;
        call_signed(bodies[b], KEY, s, &first);
        call_signed(bodies[b], KEY, s, &second);
        assert_int_equal(first.status, 200);
        assert_int_equal(first.nevents, second.nevents);
        assert_true(first.nevents >= 2);
        for (size_t i = 0; i < first.nevents; i++)
            assert_string_equal(first.events[i].id, second.events[i].id);
        assert_string_not_equal(first.events[0].id, first.events[1].id);
        ingest_result_free(&first);
        ingest_result_free(&second);
    }
    hf_secrets_free(s);
}

static void test_tampered_body(void **state)
{
    (void)state;
    hf_secrets *s = store(SDK_TOKEN, NULL);
    const char *headers[] = {"intuit-signature", SDK_SIG, NULL};
    char *tampered = xstrdup(SDK_BODY);
    *strstr(tampered, "Create") = 'c';
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
    call_signed(LEGACY_BATCH, "not-the-verifier-token", s, &res);
    pr_assert_rejected(&res, 401, "bad_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_missing_signature(void **state)
{
    (void)state;
    hf_secrets *s = store(KEY, NULL);
    ingest_result res;
    call_signed(LEGACY_BATCH, NULL, s, &res);
    pr_assert_rejected(&res, 401, "missing_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_missing_secret(void **state)
{
    (void)state;
    hf_secrets *s = hf_secrets_new();
    ingest_result res;
    call_signed(LEGACY_BATCH, KEY, s, &res);
    pr_assert_rejected(&res, 503, "missing_secret");
    assert_string_equal(res.detail, "quickbooks/verifier_token is not configured");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_previous_key_accepted(void **state)
{
    (void)state;
    hf_secrets *s = store(KEY, OLD_KEY);
    ingest_result res;
    call_signed(LEGACY_BATCH, OLD_KEY, s, &res);
    assert_legacy_batch(&res);
    ingest_result_free(&res);
    call_signed(LEGACY_BATCH, KEY, s, &res);
    assert_legacy_batch(&res);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_signed_malformed(void **state)
{
    (void)state;
    hf_secrets *s = store(KEY, NULL);
    static const char *const bodies[] = {
        "{\"eventNotifications\":[",
        "\"just a string\"",
        "{\"something\":\"else\"}",
        "{\"eventNotifications\":{}}",
        "{\"eventNotifications\":[{\"dataChangeEvent\":{\"entities\":[]}}]}",
        "{\"eventNotifications\":[{\"realmId\":\"1\",\"dataChangeEvent\":{}}]}",
        /* the second entity lacks its id: the whole delivery is refused */
        "{\"eventNotifications\":[{\"realmId\":\"1\",\"dataChangeEvent\":{\"entities\":[{\"name\":"
        "\"Customer\",\"id\":\"1\",\"operation\":\"Create\"},{\"name\":\"Customer\","
        "\"operation\":\"Create\"}]}}]}",
        "[{\"id\":\"e-1\",\"type\":\"qbo.account.created.v1\"}]",
        "[{\"id\":\"e-1\",\"type\":\"qbo.account.created.v1\",\"intuitaccountid\":\"1\"},7]",
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(bodies); i++) {
        ingest_result res;
        call_signed(bodies[i], KEY, s, &res);
        pr_assert_rejected(&res, 400, "malformed");
        ingest_result_free(&res);
    }
    hf_secrets_free(s);
}

static void test_get_is_405(void **state)
{
    (void)state;
    hf_secrets *s = store(SDK_TOKEN, NULL);
    const char *headers[] = {"intuit-signature", SDK_SIG, NULL};
    ingest_result res;
    call("GET", SDK_BODY, headers, s, &res);
    pr_assert_rejected(&res, 405, "method_not_allowed");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sdk_vector),
        cmocka_unit_test(test_legacy_batch_spans_realms),
        cmocka_unit_test(test_cloudevents_batch),
        cmocka_unit_test(test_same_entity_same_resource_in_both_formats),
        cmocka_unit_test(test_time_normalisation),
        cmocka_unit_test(test_redelivery_has_same_ids),
        cmocka_unit_test(test_tampered_body),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_missing_signature),
        cmocka_unit_test(test_missing_secret),
        cmocka_unit_test(test_previous_key_accepted),
        cmocka_unit_test(test_signed_malformed),
        cmocka_unit_test(test_get_is_405),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
