/* test_provider_hubspot: HubSpot signature v1/v2/v3 verification, the v3 time window, and event
 * splitting (CRM event arrays, workflow webhook objects) through the real handle(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "provider.h"
#include "provider_assert.h"
#include "provider_request.h"
#include "secrets.h"
#include "util.h"

/* The published SDK vectors (providers.md, HubSpot test vectors). */
#define VEC_SECRET "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
#define VEC_URL "https://www.example.com/webhook_uri"
#define VEC_BODY "{'example_field':'example_value'}"
#define VEC_V1 "69fc6631a867edd4f9e9e627fc5c1148e3fbdd8b21837b6d2b8901c1fa57f750"
#define VEC_V2_POST "4fe4e3a7d3cf09db53be39d0a58130e2aaba074ec123a9e355b876a689a1c383"
#define VEC_V2_GET "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
#define VEC_V3 "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="
#define VEC_V3_TS "15000000"
#define NODE_V1_BODY                                                                               \
    "[{\"eventId\":1,\"subscriptionId\":12345,\"portalId\":62515,\"occurredAt\":1564113600000,"    \
    "\"subscriptionType\":\"contact.creation\",\"attemptNumber\":0,\"objectId\":123,"              \
    "\"changeSource\":\"CRM\",\"changeFlag\":\"NEW\",\"appId\":54321}]"
#define NODE_V1 "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"

#define OLD_SECRET "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
#define NOW 1700000000000LL
#define NOW_TEXT "1700000000000"

#define EV1                                                                                        \
    "{\"objectId\":1246965,\"propertyName\":\"lifecyclestage\",\"propertyValue\":\"subscriber\","  \
    "\"changeSource\":\"ACADEMY\",\"eventId\":3816279340,\"subscriptionId\":25,\"portalId\":33,"   \
    "\"appId\":1160452,\"occurredAt\":1462216307945,\"subscriptionType\":"                         \
    "\"contact.propertyChange\",\"attemptNumber\":0}"
#define EV2                                                                                        \
    "{\"objectId\":5521,\"changeSource\":\"CRM\",\"eventId\":3816279341,\"subscriptionId\":26,"    \
    "\"portalId\":33,\"appId\":1160452,\"occurredAt\":1462216308000,\"subscriptionType\":"         \
    "\"deal.creation\",\"attemptNumber\":1}"
#define BATCH "[" EV1 "," EV2 "]"

#define WORKFLOW                                                                                   \
    "{\"callbackId\":\"ap-102-45\",\"origin\":{\"portalId\":62515,\"actionDefinitionId\":1234,"    \
    "\"actionDefinitionVersion\":1},\"context\":{\"source\":\"WORKFLOWS\",\"workflowId\":98},"     \
    "\"object\":{\"objectId\":904,\"objectType\":\"CONTACT\"},\"fields\":{\"email\":"              \
    "\"a@b.com\"}}"

static void call_at(const char *method, const char *url, const char *body,
                    const char *const *headers, const hf_secrets *secrets, int64_t now_ms,
                    ingest_result *res)
{
    pr_call(&ingest_provider_hubspot, method, "/webhook_uri", NULL, url, body, strlen(body),
            headers, secrets, now_ms, res);
}

static void call(const char *method, const char *body, const char *const *headers,
                 const hf_secrets *secrets, ingest_result *res)
{
    call_at(method, VEC_URL, body, headers, secrets, NOW, res);
}

/* base64 HMAC-SHA256(secret, "POST" + url + body + ts) into sig (>= 64 bytes). */
static void sign_v3(const char *secret, const char *url, const char *body, const char *ts,
                    char *sig)
{
    hf_buf msg = {0};
    hf_buf_printf(&msg, "POST%s%s%s", url, body, ts);
    pr_hmac_b64(secret, msg.data, msg.len, sig);
    hf_buf_free(&msg);
}

/* Calls handle() with body signed v3 under secret at NOW. */
static void call_v3(const char *body, const char *secret, const hf_secrets *s, ingest_result *res)
{
    char sig[64];
    sign_v3(secret, VEC_URL, body, NOW_TEXT, sig);
    const char *headers[] = {"X-HubSpot-Signature-v3", sig, "X-HubSpot-Request-Timestamp", NOW_TEXT,
                             NULL};
    call("POST", body, headers, s, res);
}

static hf_secrets *store(const char *current, const char *previous)
{
    return pr_secrets("hubspot/client_secret", current, previous);
}

/* The vector body is not JSON, so a verified vector request ends as 400 malformed; 401 would
 * mean the signature did not verify. */
static void test_v1_v2_vectors(void **state)
{
    (void)state;
    hf_secrets *s = store(VEC_SECRET, NULL);
    ingest_result res;

    const char *v1[] = {"X-HubSpot-Signature", VEC_V1, "X-HubSpot-Signature-Version", "v1", NULL};
    call("POST", VEC_BODY, v1, s, &res);
    pr_assert_rejected(&res, 400, "malformed");
    ingest_result_free(&res);

    /* No version header means v1. */
    const char *v1_default[] = {"X-HubSpot-Signature", VEC_V1, NULL};
    call("POST", VEC_BODY, v1_default, s, &res);
    pr_assert_rejected(&res, 400, "malformed");
    ingest_result_free(&res);

    /* Upper-case hex is the same digest. */
    char upper[65];
    for (size_t i = 0; i <= 64; i++)
        upper[i] = (VEC_V1[i] >= 'a' && VEC_V1[i] <= 'f') ? (char)(VEC_V1[i] - 32) : VEC_V1[i];
    const char *v1_upper[] = {"X-HubSpot-Signature", upper, NULL};
    call("POST", VEC_BODY, v1_upper, s, &res);
    pr_assert_rejected(&res, 400, "malformed");
    ingest_result_free(&res);

    const char *v2[] = {"X-HubSpot-Signature", VEC_V2_POST, "X-HubSpot-Signature-Version", "v2",
                        NULL};
    call("POST", VEC_BODY, v2, s, &res);
    pr_assert_rejected(&res, 400, "malformed");
    ingest_result_free(&res);

    /* The v2 signature is not a v1 signature, and vice versa. */
    const char *v2_as_v1[] = {"X-HubSpot-Signature", VEC_V2_POST, NULL};
    call("POST", VEC_BODY, v2_as_v1, s, &res);
    pr_assert_rejected(&res, 401, "bad_signature");
    ingest_result_free(&res);
    const char *v1_as_v2[] = {"X-HubSpot-Signature", VEC_V1, "X-HubSpot-Signature-Version", "v2",
                              NULL};
    call("POST", VEC_BODY, v1_as_v2, s, &res);
    pr_assert_rejected(&res, 401, "bad_signature");
    ingest_result_free(&res);

    /* v2 covers the URL. */
    call_at("POST", "https://www.example.com/other_uri", VEC_BODY, v2, s, NOW, &res);
    pr_assert_rejected(&res, 401, "bad_signature");
    ingest_result_free(&res);

    /* The GET vector is correctly signed, but webhooks are POSTs: GET is 405 before anything. */
    const char *v2_get[] = {"X-HubSpot-Signature", VEC_V2_GET, "X-HubSpot-Signature-Version", "v2",
                            NULL};
    call("GET", "", v2_get, s, &res);
    pr_assert_rejected(&res, 405, "method_not_allowed");
    ingest_result_free(&res);

    const char *unknown[] = {"X-HubSpot-Signature", VEC_V1, "X-HubSpot-Signature-Version", "v9",
                             NULL};
    call("POST", VEC_BODY, unknown, s, &res);
    pr_assert_rejected(&res, 401, "bad_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_node_v1_vector_event(void **state)
{
    (void)state;
    hf_secrets *s = store(VEC_SECRET, NULL);
    const char *v1[] = {"X-HubSpot-Signature", NODE_V1, "X-HubSpot-Signature-Version", "v1", NULL};
    ingest_result res;
    call("POST", NODE_V1_BODY, v1, s, &res);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.reason, "accepted");
    assert_null(res.response_body);
    assert_int_equal(res.nevents, 1);
    const ingest_event *e = &res.events[0];
    assert_string_equal(e->id, "hubspot:8d03fe02f25f8c2d6f9911c054bfdfae");
    assert_string_equal(e->native_type, "contact.creation");
    assert_string_equal(e->account, "62515");
    assert_string_equal(e->resource, "contact:123");
    assert_string_equal(e->occurred_at, "2019-07-26T04:00:00.000Z");
    /* The payload is the event object itself. */
    assert_string_equal(e->payload, "{\"eventId\":1,\"subscriptionId\":12345,\"portalId\":62515,"
                                    "\"occurredAt\":1564113600000,\"subscriptionType\":"
                                    "\"contact.creation\",\"attemptNumber\":0,\"objectId\":123,"
                                    "\"changeSource\":\"CRM\",\"changeFlag\":\"NEW\",\"appId\":"
                                    "54321}");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_v3_vector(void **state)
{
    (void)state;
    hf_secrets *s = store(VEC_SECRET, NULL);
    const char *v3[] = {"X-HubSpot-Signature-v3", VEC_V3, "X-HubSpot-Request-Timestamp", VEC_V3_TS,
                        NULL};
    ingest_result res;
    /* now pinned just after the vector's timestamp: verified, then the body is not JSON. */
    call_at("POST", VEC_URL, VEC_BODY, v3, s, 15000000 + 1000, &res);
    pr_assert_rejected(&res, 400, "malformed");
    ingest_result_free(&res);
    call_at("POST", VEC_URL, VEC_BODY, v3, s, 15000000 - 300000, &res);
    pr_assert_rejected(&res, 400, "malformed");
    ingest_result_free(&res);

    /* One bit off in the body. */
    call_at("POST", VEC_URL, "{'example_field':'example_valuf'}", v3, s, 15000000, &res);
    pr_assert_rejected(&res, 401, "bad_signature");
    ingest_result_free(&res);

    /* The timestamp is signed: a fresh timestamp on the old signature fails. */
    const char *v3_other_ts[] = {"X-HubSpot-Signature-v3", VEC_V3, "X-HubSpot-Request-Timestamp",
                                 "15000001", NULL};
    call_at("POST", VEC_URL, VEC_BODY, v3_other_ts, s, 15000000, &res);
    pr_assert_rejected(&res, 401, "bad_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_v3_stale_timestamp(void **state)
{
    (void)state;
    hf_secrets *s = store(VEC_SECRET, NULL);
    const char *v3[] = {"X-HubSpot-Signature-v3", VEC_V3, "X-HubSpot-Request-Timestamp", VEC_V3_TS,
                        NULL};
    ingest_result res;
    call_at("POST", VEC_URL, VEC_BODY, v3, s, 15000000 + 300001, &res);
    pr_assert_rejected(&res, 401, "stale_timestamp");
    ingest_result_free(&res);
    /* From the future as well. */
    call_at("POST", VEC_URL, VEC_BODY, v3, s, 15000000 - 300001, &res);
    pr_assert_rejected(&res, 401, "stale_timestamp");
    ingest_result_free(&res);
    /* A real clock against the 1970 vector. */
    call_at("POST", VEC_URL, VEC_BODY, v3, s, NOW, &res);
    pr_assert_rejected(&res, 401, "stale_timestamp");
    ingest_result_free(&res);

    static const char *const bad_ts[] = {"",           "abc",       "-15000000",
                                         "15000000.5", " 15000000", "99999999999999999999999"};
    for (size_t i = 0; i < HF_ARRAY_LEN(bad_ts); i++) {
        const char *headers[] = {"X-HubSpot-Signature-v3", VEC_V3, "X-HubSpot-Request-Timestamp",
                                 bad_ts[i], NULL};
        call_at("POST", VEC_URL, VEC_BODY, headers, s, 15000000, &res);
        pr_assert_rejected(&res, 401, "stale_timestamp");
        ingest_result_free(&res);
    }
    const char *no_ts[] = {"X-HubSpot-Signature-v3", VEC_V3, NULL};
    call_at("POST", VEC_URL, VEC_BODY, no_ts, s, 15000000, &res);
    pr_assert_rejected(&res, 401, "stale_timestamp");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_v3_decodes_listed_escapes(void **state)
{
    (void)state;
    hf_secrets *s = store(VEC_SECRET, NULL);
    /* Signed (independently computed) over the decoded form
     * https://www.example.com/webhook_uri?next=/a:b@c&x=(1),*;$!'&keep=%20%2B%3 : the listed
     * escapes decode in either case, %20 and %2B are not on the list, a cut escape stays. */
    const char *url = "https://www.example.com/webhook_uri?next=%2Fa%3Ab%40c&x=%281%29%2C%2a%3B"
                      "%24%21%27&keep=%20%2B%3";
    const char *headers[] = {"X-HubSpot-Signature-v3",
                             "4nCdGj57uPEtIG7xF+zOcd8PMZoX54+W73VgHtwADz0=",
                             "X-HubSpot-Request-Timestamp", NOW_TEXT, NULL};
    ingest_result res;
    call_at("POST", url, "[]", headers, s, NOW + 5, &res);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.reason, "accepted");
    assert_int_equal(res.nevents, 0);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void assert_batch(const ingest_result *res)
{
    assert_int_equal(res->status, 200);
    assert_string_equal(res->reason, "accepted");
    assert_null(res->response_body);
    assert_int_equal(res->nevents, 2);
    const ingest_event *e = &res->events[0];
    assert_string_equal(e->id, "hubspot:7c5be8282332c302f48aa0e5b281140c");
    assert_string_equal(e->native_type, "contact.propertyChange");
    assert_string_equal(e->account, "33");
    assert_string_equal(e->resource, "contact:1246965");
    assert_string_equal(e->occurred_at, "2016-05-02T19:11:47.945Z");
    assert_string_equal(e->payload, EV1);
    e = &res->events[1];
    assert_string_equal(e->id, "hubspot:5b46567d0660eff2335d8e5fd88a14dd");
    assert_string_equal(e->native_type, "deal.creation");
    assert_string_equal(e->account, "33");
    assert_string_equal(e->resource, "deal:5521");
    assert_string_equal(e->occurred_at, "2016-05-02T19:11:48.000Z");
    assert_string_equal(e->payload, EV2);
}

static void test_v3_batch(void **state)
{
    (void)state;
    hf_secrets *s = store(VEC_SECRET, NULL);
    ingest_result res;
    call_v3(BATCH, VEC_SECRET, s, &res);
    assert_batch(&res);
    ingest_result_free(&res);

    /* eventType stands in for a missing subscriptionType; no objectId means no resource. */
    call_v3("[{\"eventId\":9,\"portalId\":\"77\",\"eventType\":\"company.deletion\"}]", VEC_SECRET,
            s, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.nevents, 1);
    assert_string_equal(res.events[0].native_type, "company.deletion");
    assert_string_equal(res.events[0].account, "77");
    assert_null(res.events[0].resource);
    assert_null(res.events[0].occurred_at);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_redelivery_has_same_ids(void **state)
{
    (void)state;
    hf_secrets *s = store(VEC_SECRET, NULL);
    ingest_result first, second;
    call_v3(BATCH, VEC_SECRET, s, &first);
    /* A retry comes with a new timestamp and signature; the ids must not change. */
    char sig[64];
    sign_v3(VEC_SECRET, VEC_URL, BATCH, "1700000060000", sig);
    const char *headers[] = {"X-HubSpot-Signature-v3", sig, "X-HubSpot-Request-Timestamp",
                             "1700000060000", NULL};
    call_at("POST", VEC_URL, BATCH, headers, s, NOW + 60000, &second);
    assert_batch(&first);
    assert_batch(&second);
    ingest_result_free(&first);
    ingest_result_free(&second);

    call_v3(WORKFLOW, VEC_SECRET, s, &first);
    call_v3(WORKFLOW, VEC_SECRET, s, &second);
    assert_int_equal(first.nevents, 1);
    assert_int_equal(second.nevents, 1);
    assert_string_equal(first.events[0].id, second.events[0].id);
    ingest_result_free(&first);
    ingest_result_free(&second);
    hf_secrets_free(s);
}

static void test_workflow_object(void **state)
{
    (void)state;
    hf_secrets *s = store(VEC_SECRET, NULL);
    ingest_result res;
    call_v3(WORKFLOW, VEC_SECRET, s, &res);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.reason, "accepted");
    assert_int_equal(res.nevents, 1);
    const ingest_event *e = &res.events[0];
    assert_string_equal(e->id, "hubspot:458d499077c2388a1b994012ee36095e");
    assert_string_equal(e->native_type, "workflow.webhook");
    assert_string_equal(e->account, "62515");
    assert_string_equal(e->resource, "contact:904");
    assert_null(e->occurred_at);
    assert_string_equal(e->payload, WORKFLOW);
    ingest_result_free(&res);

    /* portalId at the top level. */
    call_v3("{\"portalId\":5,\"vid\":1}", VEC_SECRET, s, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.nevents, 1);
    assert_string_equal(res.events[0].account, "5");
    assert_null(res.events[0].resource);
    ingest_result_free(&res);

    /* No portal id anywhere: refused rather than filed under an unknown account. */
    call_v3("{\"callbackId\":\"ap-1\",\"fields\":{}}", VEC_SECRET, s, &res);
    pr_assert_rejected(&res, 400, "malformed");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_tampered_body(void **state)
{
    (void)state;
    hf_secrets *s = store(VEC_SECRET, NULL);
    const char *v1[] = {"X-HubSpot-Signature", NODE_V1, NULL};
    char *tampered = xstrdup(NODE_V1_BODY);
    *strstr(tampered, "62515") = '7';
    ingest_result res;
    call("POST", tampered, v1, s, &res);
    pr_assert_rejected(&res, 401, "bad_signature");
    ingest_result_free(&res);
    free(tampered);
    hf_secrets_free(s);
}

static void test_wrong_key(void **state)
{
    (void)state;
    hf_secrets *s = store(VEC_SECRET, NULL);
    ingest_result res;
    call_v3(BATCH, "not-the-client-secret", s, &res);
    pr_assert_rejected(&res, 401, "bad_signature");
    ingest_result_free(&res);
    const char *garbage[] = {"X-HubSpot-Signature", "zz", NULL};
    call("POST", BATCH, garbage, s, &res);
    pr_assert_rejected(&res, 401, "bad_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_missing_signature(void **state)
{
    (void)state;
    hf_secrets *s = store(VEC_SECRET, NULL);
    ingest_result res;
    const char *only_ts[] = {"X-HubSpot-Request-Timestamp", NOW_TEXT, "X-HubSpot-Signature-Version",
                             "v1", NULL};
    call("POST", BATCH, only_ts, s, &res);
    pr_assert_rejected(&res, 401, "missing_signature");
    ingest_result_free(&res);
    call("POST", BATCH, NULL, s, &res);
    pr_assert_rejected(&res, 401, "missing_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_missing_secret(void **state)
{
    (void)state;
    hf_secrets *s = store(NULL, NULL);
    hf_secrets_set(s, "hubspot/client_id", "some-client-id", 14);
    ingest_result res;
    call_v3(BATCH, VEC_SECRET, s, &res);
    pr_assert_rejected(&res, 503, "missing_secret");
    assert_string_equal(res.detail, "hubspot/client_secret is not configured");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_previous_key_accepted(void **state)
{
    (void)state;
    hf_secrets *s = store(OLD_SECRET, VEC_SECRET);
    ingest_result res;
    call_v3(BATCH, VEC_SECRET, s, &res);
    assert_batch(&res);
    ingest_result_free(&res);
    const char *v1[] = {"X-HubSpot-Signature", NODE_V1, NULL};
    call("POST", NODE_V1_BODY, v1, s, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.nevents, 1);
    ingest_result_free(&res);
    call_v3(BATCH, OLD_SECRET, s, &res);
    assert_batch(&res);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_signed_malformed(void **state)
{
    (void)state;
    hf_secrets *s = store(VEC_SECRET, NULL);
    static const char *const bodies[] = {
        "[{\"eventId\":1,",
        "42",
        "\"text\"",
        "[7]",
        "[{\"eventId\":1,\"subscriptionType\":\"contact.creation\"}]",
        "[{\"portalId\":1,\"subscriptionType\":\"contact.creation\"}]",
        "[{\"portalId\":1,\"eventId\":2}]",
        /* the second event is bad: the whole delivery is refused */
        "[" EV1 ",{\"portalId\":true,\"eventId\":2,\"subscriptionType\":\"contact.creation\"}]",
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(bodies); i++) {
        ingest_result res;
        call_v3(bodies[i], VEC_SECRET, s, &res);
        pr_assert_rejected(&res, 400, "malformed");
        ingest_result_free(&res);
    }
    hf_secrets_free(s);
}

static void test_get_is_405(void **state)
{
    (void)state;
    hf_secrets *s = store(VEC_SECRET, NULL);
    const char *v1[] = {"X-HubSpot-Signature", NODE_V1, NULL};
    ingest_result res;
    call("GET", NODE_V1_BODY, v1, s, &res);
    pr_assert_rejected(&res, 405, "method_not_allowed");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_v2_vectors),
        cmocka_unit_test(test_node_v1_vector_event),
        cmocka_unit_test(test_v3_vector),
        cmocka_unit_test(test_v3_stale_timestamp),
        cmocka_unit_test(test_v3_decodes_listed_escapes),
        cmocka_unit_test(test_v3_batch),
        cmocka_unit_test(test_redelivery_has_same_ids),
        cmocka_unit_test(test_workflow_object),
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
