/* test_provider_klaviyo: Klaviyo system webhooks (signature, timestamp window, webhook id) and
 * flow webhooks (shared secret header) through the real handle(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "provider.h"
#include "provider_assert.h"
#include "provider_request.h"
#include "secrets.h"
#include "util.h"

/* The synthetic vector of providers.md section 4. */
#define VEC_SECRET "mysecretmysecret1"
#define VEC_BODY                                                                                   \
    "{\"data\":[],\"meta\":{\"klaviyo_account_id\":\"ABC123\",\"klaviyo_webhook_id\":"             \
    "\"01KP4928STE8FKCWB6WDHZ4ZB7\",\"timestamp\":\"2026-04-14T03:50:12+00:00\"}}"
#define VEC_TS "Tue, 14 Apr 2026 03:50:12 GMT"
#define VEC_SIG "283f475b411a5ee79f5c851c6335cada66f8831d156dc865bca0bc7000f2fe66"
#define VEC_WEBHOOK_ID "01KP4928STE8FKCWB6WDHZ4ZB7"
/* 2026-04-14T03:50:12Z */
#define VEC_NOW_MS 1776138612000LL

#define ITEM1                                                                                      \
    "{\"external_id\":\"evt_1\",\"topic\":\"event:klaviyo.email_delivered\",\"payload\":"          \
    "{\"type\":\"event\",\"id\":\"evt_1\",\"attributes\":{\"datetime\":"                           \
    "\"2026-04-14T03:49:00+00:00\",\"timestamp\":1776138540},\"relationships\":{\"profile\":"      \
    "{\"data\":{\"type\":\"profile\",\"id\":\"PROF1\"}}}}}"
#define ITEM2                                                                                      \
    "{\"external_id\":\"evt_2\",\"topic\":\"event:klaviyo.email_opened\",\"payload\":"             \
    "{\"profile_id\":\"PROF2\",\"datetime\":\"2026-04-14T05:49:30.250+02:00\"}}"
#define ITEM3 "{\"topic\":\"event:klaviyo.sms_sent\",\"payload\":{\"timestamp\":1776138000}}"
#define META_PART                                                                                  \
    "\"meta\":{\"klaviyo_account_id\":\"ABC123\",\"klaviyo_webhook_id\":"                          \
    "\"01KP4928STE8FKCWB6WDHZ4ZB7\",\"timestamp\":\"2026-04-14T03:50:12+00:00\"}"
#define BATCH "{\"data\":[" ITEM1 "," ITEM2 "," ITEM3 "]," META_PART "}"
/* klaviyo:<first 32 hex of sha256("ABC123" 1f "event:klaviyo.sms_sent" 1f sha256hex(ITEM3))>,
 * computed independently with Python. */
#define ITEM3_ID "klaviyo:9c88f9b1a080363a9502d6f28624e867"

#define FLOW_SECRET "flow-secret-0123456789"

static void call_at(const char *method, const char *body, const char *const *headers,
                    const hf_secrets *secrets, int64_t now_ms, ingest_result *res)
{
    pr_call(&ingest_provider_klaviyo, method, PR_PATH("klaviyo"), NULL, PR_URL("klaviyo"), body,
            strlen(body), headers, secrets, now_ms, res);
}

/* hex HMAC-SHA256(key, body + ts) */
static void sign(const char *key, const char *body, const char *ts, char hex[65])
{
    hf_buf msg = {0};
    hf_buf_puts(&msg, body);
    hf_buf_puts(&msg, ts);
    pr_hmac_hex(key, msg.data, msg.len, hex);
    hf_buf_free(&msg);
}

/* A system webhook signed under key with timestamp ts, delivered at now_ms. */
static void call_system(const char *body, const char *key, const char *ts, const char *webhook_id,
                        const hf_secrets *secrets, int64_t now_ms, ingest_result *res)
{
    char sig[65];
    sign(key, body, ts, sig);
    const char *headers[] = {
        "Klaviyo-Signature", sig, "Klaviyo-Timestamp", ts, "Klaviyo-Webhook-Id", webhook_id, NULL};
    call_at("POST", body, headers, secrets, now_ms, res);
}

static void assert_event(const ingest_event *e, const char *id, const char *native,
                         const char *account, const char *resource, const char *occurred_at)
{
    assert_string_equal(e->id, id);
    assert_string_equal(e->native_type, native);
    assert_string_equal(e->account, account);
    if (resource)
        assert_string_equal(e->resource, resource);
    else
        assert_null(e->resource);
    if (occurred_at)
        assert_string_equal(e->occurred_at, occurred_at);
    else
        assert_null(e->occurred_at);
    char err[128];
    hf_json v = hf_json_parse(e->payload, strlen(e->payload), err, sizeof err);
    assert_non_null(v);
    assert_true(hf_json_is_object(v));
    hf_json_free(v);
}

static void test_published_vector(void **state)
{
    hf_secrets *s = pr_secrets("klaviyo/webhook_secret", VEC_SECRET, NULL);
    const char *headers[] = {
        "Klaviyo-Signature", VEC_SIG, "Klaviyo-Timestamp", VEC_TS, "Klaviyo-Webhook-Id",
        VEC_WEBHOOK_ID,      NULL};
    ingest_result res;
    call_at("POST", VEC_BODY, headers, s, VEC_NOW_MS, &res);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.reason, "accepted");
    assert_int_equal(res.nevents, 0);
    ingest_result_free(&res);

    /* The same digest in upper case. */
    char upper[65];
    for (size_t i = 0; i < 65; i++)
        upper[i] = (char)(VEC_SIG[i] >= 'a' && VEC_SIG[i] <= 'f' ? VEC_SIG[i] - 32 : VEC_SIG[i]);
    headers[1] = upper;
    call_at("POST", VEC_BODY, headers, s, VEC_NOW_MS, &res);
    assert_int_equal(res.status, 200);
    ingest_result_free(&res);

    /* One flipped digit. */
    char wrong[65];
    memcpy(wrong, VEC_SIG, sizeof wrong);
    wrong[10] = wrong[10] == '0' ? '1' : '0';
    headers[1] = wrong;
    call_at("POST", VEC_BODY, headers, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_batch_splits_into_events(void **state)
{
    hf_secrets *s = pr_secrets("klaviyo/webhook_secret", VEC_SECRET, NULL);
    ingest_result res;
    call_system(BATCH, VEC_SECRET, VEC_TS, VEC_WEBHOOK_ID, s, VEC_NOW_MS, &res);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.reason, "accepted");
    assert_int_equal(res.nevents, 3);
    assert_null(res.response_body);
    assert_event(&res.events[0], "klaviyo:evt_1", "event:klaviyo.email_delivered", "ABC123",
                 "profile:PROF1", "2026-04-14T03:49:00.000Z");
    assert_event(&res.events[1], "klaviyo:evt_2", "event:klaviyo.email_opened", "ABC123",
                 "profile:PROF2", "2026-04-14T03:49:30.250Z");
    assert_event(&res.events[2], ITEM3_ID, "event:klaviyo.sms_sent", "ABC123", NULL,
                 "2026-04-14T03:40:00.000Z");
    /* Payload: the item itself, compact. */
    assert_string_equal(res.events[0].payload, ITEM1);
    assert_string_equal(res.events[2].payload, ITEM3);

    /* A redelivery (new timestamp, new signature) yields the same ids. */
    ingest_result again;
    call_system(BATCH, VEC_SECRET, "Tue, 14 Apr 2026 03:51:00 GMT", VEC_WEBHOOK_ID, s,
                VEC_NOW_MS + 60000, &again);
    assert_int_equal(again.status, 200);
    assert_int_equal(again.nevents, 3);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(again.events[i].id, res.events[i].id);
    ingest_result_free(&again);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_rejections(void **state)
{
    hf_secrets *s = pr_secrets("klaviyo/webhook_secret", VEC_SECRET, NULL);
    ingest_result res;

    /* Tampered body: signed over BATCH, delivered with one byte changed. */
    char sig[65];
    sign(VEC_SECRET, BATCH, VEC_TS, sig);
    char *tampered = xstrdup(BATCH);
    tampered[strlen(tampered) - 5] ^= 1;
    const char *headers[] = {
        "Klaviyo-Signature", sig, "Klaviyo-Timestamp", VEC_TS, "Klaviyo-Webhook-Id",
        VEC_WEBHOOK_ID,      NULL};
    call_at("POST", tampered, headers, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    free(tampered);

    /* The signature covers the timestamp too. */
    headers[3] = "Tue, 14 Apr 2026 03:50:13 GMT";
    call_at("POST", BATCH, headers, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);

    /* Wrong key. */
    call_system(BATCH, "not-the-secret", VEC_TS, VEC_WEBHOOK_ID, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);

    /* Missing timestamp / webhook id headers. */
    const char *no_ts[] = {"Klaviyo-Signature", sig, "Klaviyo-Webhook-Id", VEC_WEBHOOK_ID, NULL};
    call_at("POST", BATCH, no_ts, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 401, "missing_signature");
    assert_non_null(strstr(res.detail, "Klaviyo-Timestamp"));
    ingest_result_free(&res);
    const char *no_id[] = {"Klaviyo-Signature", sig, "Klaviyo-Timestamp", VEC_TS, NULL};
    call_at("POST", BATCH, no_id, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 401, "missing_signature");
    ingest_result_free(&res);

    /* Stale: 5 min + 1 s late, and as far early; exactly 5 min is still fine. */
    call_system(BATCH, VEC_SECRET, VEC_TS, VEC_WEBHOOK_ID, s, VEC_NOW_MS + 301000, &res);
    pr_assert_failed(&res, 401, "stale_timestamp");
    ingest_result_free(&res);
    call_system(BATCH, VEC_SECRET, VEC_TS, VEC_WEBHOOK_ID, s, VEC_NOW_MS - 301000, &res);
    pr_assert_failed(&res, 401, "stale_timestamp");
    ingest_result_free(&res);
    call_system(BATCH, VEC_SECRET, VEC_TS, VEC_WEBHOOK_ID, s, VEC_NOW_MS + 300000, &res);
    assert_int_equal(res.status, 200);
    ingest_result_free(&res);

    /* A validly signed timestamp that is no date. */
    call_system(BATCH, VEC_SECRET, "yesterday", VEC_WEBHOOK_ID, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 401, "stale_timestamp");
    ingest_result_free(&res);

    /* Webhook id header differs from meta.klaviyo_webhook_id. */
    call_system(BATCH, VEC_SECRET, VEC_TS, "01KP4928STE8FKCWB6WDHZ4ZB8", s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    assert_string_equal(res.detail, "webhook id mismatch");
    ingest_result_free(&res);

    /* Signed but malformed. */
    call_system("{\"data\":[", VEC_SECRET, VEC_TS, VEC_WEBHOOK_ID, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 400, "malformed");
    assert_true(strlen(res.detail) > 0);
    ingest_result_free(&res);
    call_system("{\"data\":[{\"external_id\":\"x\"}]," META_PART "}", VEC_SECRET, VEC_TS,
                VEC_WEBHOOK_ID, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 400, "malformed");
    assert_string_equal(res.detail, "data[0].topic is missing");
    ingest_result_free(&res);
    call_system("{\"data\":{}," META_PART "}", VEC_SECRET, VEC_TS, VEC_WEBHOOK_ID, s, VEC_NOW_MS,
                &res);
    pr_assert_failed(&res, 400, "malformed");
    ingest_result_free(&res);
    /* A later bad item drops the events of the earlier good ones. */
    call_system("{\"data\":[" ITEM1 ",7]," META_PART "}", VEC_SECRET, VEC_TS, VEC_WEBHOOK_ID, s,
                VEC_NOW_MS, &res);
    pr_assert_failed(&res, 400, "malformed");
    ingest_result_free(&res);

    /* GET is not a Klaviyo method. */
    call_at("GET", "", headers, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 405, "method_not_allowed");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_missing_secret(void **state)
{
    hf_secrets *s = pr_secrets(NULL, NULL, NULL);
    ingest_result res;
    call_system(BATCH, VEC_SECRET, VEC_TS, VEC_WEBHOOK_ID, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 503, "missing_secret");
    assert_string_equal(res.detail, "klaviyo/webhook_secret is not configured");
    ingest_result_free(&res);
    /* Without Klaviyo-Signature it is a flow webhook, whose secret is missing too. */
    const char *headers[] = {"X-Hookflow-Flow-Secret", FLOW_SECRET, NULL};
    call_at("POST", "{\"account_id\":\"A\"}", headers, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 503, "missing_secret");
    assert_string_equal(res.detail, "klaviyo/flow_secret is not configured");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_previous_secret_accepted(void **state)
{
    hf_secrets *s = pr_secrets("klaviyo/webhook_secret", "the-new-secret", NULL);
    hf_secrets_set(s, "klaviyo/webhook_secret.previous", VEC_SECRET, strlen(VEC_SECRET));
    ingest_result res;
    call_system(BATCH, VEC_SECRET, VEC_TS, VEC_WEBHOOK_ID, s, VEC_NOW_MS, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.nevents, 3);
    ingest_result_free(&res);
    call_system(BATCH, "the-new-secret", VEC_TS, VEC_WEBHOOK_ID, s, VEC_NOW_MS, &res);
    assert_int_equal(res.status, 200);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_timestamp_formats(void **state)
{
    hf_secrets *s = pr_secrets("klaviyo/webhook_secret", VEC_SECRET, NULL);
    const char *good[] = {"2026-04-14T03:50:12Z", "2026-04-14T05:50:12+02:00",
                          "2026-04-14T03:50:12.999+00:00", "1776138612", "1776138612000"};
    for (size_t i = 0; i < HF_ARRAY_LEN(good); i++) {
        ingest_result res;
        call_system(VEC_BODY, VEC_SECRET, good[i], VEC_WEBHOOK_ID, s, VEC_NOW_MS, &res);
        assert_int_equal(res.status, 200);
        ingest_result_free(&res);
    }
    const char *bad[] = {"Tue, 14 Apr 2026 03:50:12 PST",
                         "Tue, 31 Feb 2026 03:50:12 GMT",
                         "2026-04-14",
                         "",
                         "-1776138612",
                         "99999999999999999999"};
    for (size_t i = 0; i < HF_ARRAY_LEN(bad); i++) {
        ingest_result res;
        call_system(VEC_BODY, VEC_SECRET, bad[i], VEC_WEBHOOK_ID, s, VEC_NOW_MS, &res);
        pr_assert_failed(&res, 401, "stale_timestamp");
        ingest_result_free(&res);
    }
    hf_secrets_free(s);
}

#define FLOW1                                                                                      \
    "{\"topic\":\"profile_updated\",\"klaviyo_account_id\":\"ACC9\",\"id\":\"f-1\","               \
    "\"profile_id\":\"P1\",\"datetime\":\"2026-04-14T03:45:00Z\"}"
#define FLOW2 "{\"event\":\"cart_abandoned\",\"profile_id\":\"P9\",\"value\":12.5}"
/* klaviyo:<first 32 hex of sha256("ACCT_HDR" 1f sha256hex(FLOW2))>, computed with Python. */
#define FLOW2_ID "klaviyo:48e180caec81cd673774c6b9578cf181"

static void test_flow_webhooks(void **state)
{
    hf_secrets *s = pr_secrets("klaviyo/flow_secret", FLOW_SECRET, NULL);
    hf_secrets_set(s, "klaviyo/flow_secret.previous", "older-flow-secret", 17);
    const char *headers[] = {"X-Hookflow-Flow-Secret", FLOW_SECRET, "X-Hookflow-Account",
                             "ACCT_HDR", NULL};
    ingest_result res;
    call_at("POST", "[" FLOW1 "," FLOW2 ",{\"account_id\":\"A2\"}]", headers, s, VEC_NOW_MS, &res);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.reason, "accepted");
    assert_int_equal(res.nevents, 3);
    assert_event(&res.events[0], "klaviyo:f-1", "flow.profile_updated", "ACC9", "profile:P1",
                 "2026-04-14T03:45:00.000Z");
    assert_event(&res.events[1], FLOW2_ID, "flow.cart_abandoned", "ACCT_HDR", "profile:P9", NULL);
    assert_string_equal(res.events[1].payload, FLOW2);
    assert_string_equal(res.events[2].native_type, "flow.webhook");
    assert_string_equal(res.events[2].account, "A2");
    char first_derived[64];
    snprintf(first_derived, sizeof first_derived, "%s", res.events[2].id);
    ingest_result_free(&res);

    /* A single object, the previous secret, and a redelivery keeps the derived id. */
    headers[1] = "older-flow-secret";
    call_at("POST", "{\"account_id\":\"A2\"}", headers, s, VEC_NOW_MS, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.nevents, 1);
    assert_string_equal(res.events[0].id, first_derived);
    ingest_result_free(&res);

    /* Wrong or missing secret header. */
    headers[1] = "flow-secret-0123456788";
    call_at("POST", FLOW1, headers, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    headers[1] = FLOW_SECRET "x";
    call_at("POST", FLOW1, headers, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    const char *none[] = {"X-Hookflow-Account", "ACCT_HDR", NULL};
    call_at("POST", FLOW1, none, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 401, "missing_signature");
    ingest_result_free(&res);

    /* Authentic but malformed: no account anywhere, not an object, bad JSON. */
    const char *no_account[] = {"X-Hookflow-Flow-Secret", FLOW_SECRET, NULL};
    call_at("POST", FLOW2, no_account, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 400, "malformed");
    ingest_result_free(&res);
    call_at("POST", "[" FLOW1 ",\"x\"]", no_account, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 400, "malformed");
    ingest_result_free(&res);
    call_at("POST", "42", no_account, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 400, "malformed");
    ingest_result_free(&res);
    call_at("POST", "{\"a\":", no_account, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 400, "malformed");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

/* A system webhook item whose payload has the Get Event shape (a "data" wrapper). */
#define GET_EVENT_ITEM                                                                             \
    "{\"external_id\":\"evt_9\",\"topic\":\"event:klaviyo.email_delivered\",\"payload\":"          \
    "{\"data\":{\"type\":\"event\",\"id\":\"evt_9\",\"attributes\":{\"timestamp\":1776138540,"     \
    "\"event_properties\":{},\"datetime\":\"2026-04-14T03:49:00+00:00\",\"uuid\":"                 \
    "\"8e1f5c20-22a6-11f1-8000-4d0a5c2e9f13\"},\"relationships\":{\"profile\":{\"data\":"          \
    "{\"type\":\"profile\",\"id\":\"PROF1\"}},\"metric\":{\"data\":{\"type\":\"metric\",\"id\":"   \
    "\"TxR7kQ\"}}}}}}"

/* A system webhook item's payload has the shape of a Get Event answer (providers.md), the event
 * wrapped in "data" as in the catalog's sample: its time and profile come from there. */
static void test_system_event_time_from_get_event_shape(void **state)
{
    hf_secrets *s = pr_secrets("klaviyo/webhook_secret", VEC_SECRET, NULL);
    ingest_result res;
    call_system("{\"data\":[" GET_EVENT_ITEM "]," META_PART "}", VEC_SECRET, VEC_TS, VEC_WEBHOOK_ID,
                s, VEC_NOW_MS, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.nevents, 1);
    const ingest_event *e = &res.events[0];
    assert_string_equal(e->id, "klaviyo:evt_9");
    assert_string_equal(e->native_type, "event:klaviyo.email_delivered");
    assert_string_equal(e->account, "ABC123");
    /* The payload's own time, not NULL (which the envelope would turn into received_at). */
    assert_non_null(e->occurred_at);
    assert_string_equal(e->occurred_at, "2026-04-14T03:49:00.000Z");
    assert_non_null(e->resource);
    assert_string_equal(e->resource, "profile:PROF1");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

/* Flow webhooks are not signed by Klaviyo, so X-Hookflow-Account is input like any other: an
 * account that is not UTF-8 is 400, not an envelope (and Kafka key) that is not valid JSON. */
static void test_flow_account_header_must_be_utf8(void **state)
{
    hf_secrets *s = pr_secrets("klaviyo/flow_secret", FLOW_SECRET, NULL);
    const char *headers[] = {"X-Hookflow-Flow-Secret", FLOW_SECRET, "X-Hookflow-Account",
                             "ACCT\xff\xfe", NULL};
    ingest_result res;
    call_at("POST", FLOW2, headers, s, VEC_NOW_MS, &res);
    pr_assert_failed(&res, 400, "malformed");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_published_vector),
        cmocka_unit_test(test_batch_splits_into_events),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_missing_secret),
        cmocka_unit_test(test_previous_secret_accepted),
        cmocka_unit_test(test_timestamp_formats),
        cmocka_unit_test(test_flow_webhooks),
        cmocka_unit_test(test_system_event_time_from_get_event_shape),
        cmocka_unit_test(test_flow_account_header_must_be_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
