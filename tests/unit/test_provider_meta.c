/* test_provider_meta: Meta Messenger signatures, batch splitting and the GET subscription
 * handshake through the real handle(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "provider.h"
#include "provider_assert.h"
#include "provider_request.h"
#include "secrets.h"
#include "util.h"

/* The synthetic vector of providers.md section 6. */
#define VEC_SECRET "test_app_secret_key"
#define VEC_ITEM                                                                                   \
    "{\"sender\":{\"id\":\"PSID\"},\"recipient\":{\"id\":\"PAGE_ID\"},\"timestamp\":"              \
    "1458692752478,\"message\":{\"mid\":\"m_1\",\"text\":\"hi\"}}"
#define VEC_BODY                                                                                   \
    "{\"object\":\"page\",\"entry\":[{\"id\":\"PAGE_ID\",\"time\":1458692752478,\"messaging\":"    \
    "[" VEC_ITEM "]}]}"
#define VEC_SIG "sha256=b2859187bd7190c0e8660c8670967398d174071e618434675b47290f40e43aed"

#define M1                                                                                         \
    "{\"sender\":{\"id\":\"U1\"},\"recipient\":{\"id\":\"123456\"},\"timestamp\":1776138600000,"   \
    "\"message\":{\"mid\":\"m_A\",\"text\":\"pickup?\"}}"
#define M2                                                                                         \
    "{\"sender\":{\"id\":\"U1\"},\"recipient\":{\"id\":\"123456\"},\"timestamp\":1776138601000,"   \
    "\"delivery\":{\"mids\":[\"m_X\"],\"watermark\":1776138600500}}"
#define M3                                                                                         \
    "{\"sender\":{\"id\":\"U2\"},\"recipient\":{\"id\":\"789\"},\"timestamp\":1776138602000,"      \
    "\"postback\":{\"mid\":\"m_P\",\"title\":\"Yes\",\"payload\":\"YES\"}}"
#define M4                                                                                         \
    "{\"sender\":{\"id\":\"U2\"},\"recipient\":{\"id\":\"789\"},\"timestamp\":1776138603000,"      \
    "\"read\":{\"watermark\":1776138602500}}"
#define M5                                                                                         \
    "{\"sender\":{\"id\":\"789\"},\"recipient\":{\"id\":\"U2\"},\"timestamp\":1776138604000,"      \
    "\"message\":{\"mid\":\"m_E\",\"is_echo\":true,\"text\":\"ok\"}}"
#define M6                                                                                         \
    "{\"sender\":{\"id\":\"U2\"},\"recipient\":{\"id\":\"789\"},\"timestamp\":1776138605000,"      \
    "\"reaction\":{\"mid\":\"m_E\",\"action\":\"react\",\"reaction\":\"love\"}}"
#define M7                                                                                         \
    "{\"sender\":{\"id\":\"U2\"},\"recipient\":{\"id\":\"789\"},\"timestamp\":1776138606000,"      \
    "\"game_play\":{\"score\":1}}"
#define BATCH                                                                                      \
    "{\"object\":\"page\",\"entry\":[{\"id\":123456,\"time\":1776138600000,\"messaging\":[" M1     \
    "," M2 "]},{\"id\":\"789\",\"time\":1776138602000,\"messaging\":[" M3 "," M4 "," M5 "," M6     \
    "," M7 "]},{\"id\":\"789\",\"time\":1776138602000,\"changes\":[]}]}"
/* ingest_derive_id over (page, sender, timestamp, native[, watermark]), computed with Python. */
#define M2_ID "meta:beb1dcae6fb8d1020156155ca2d7ff14"
#define M4_ID "meta:089adb6276bdc10f6bc944e42b3acd9d"
#define M6_ID "meta:2510401ab34c2afd23121facb41693b0"
#define M7_ID "meta:c7f125d4f11347bdcc359e29488729d0"

#define VERIFY_TOKEN "verify-me-123"

static void call(const char *method, const char *query, const char *body,
                 const char *const *headers, const hf_secrets *secrets, ingest_result *res)
{
    pr_call(&ingest_provider_meta, method, PR_PATH("meta"), query, PR_URL("meta"), body,
            strlen(body), headers, secrets, 1776138612000LL, res);
}

/* POSTs body signed under key ("sha256=" + lowercase hex). */
static void call_signed(const char *body, const char *key, const hf_secrets *secrets,
                        ingest_result *res)
{
    char header[7 + 2 * HF_SHA256_LEN + 1] = "sha256=";
    pr_hmac_hex(key, body, strlen(body), header + 7);
    const char *headers[] = {"X-Hub-Signature-256", header, NULL};
    call("POST", NULL, body, headers, secrets, res);
}

/* occurred_at is the item's timestamp, else its entry's time (Meta's delivery and read examples
 * carry none of their own), else absent. */
static void test_occurred_at_falls_back_to_the_entry_time(void **state)
{
    (void)state;
    hf_secrets *s = pr_secrets("meta/app_secret", "k", NULL);
    ingest_result res;
    call_signed("{\"object\":\"page\",\"entry\":[{\"id\":\"77\",\"time\":1776138605000,"
                "\"messaging\":[{\"sender\":{\"id\":\"U9\"},\"recipient\":{\"id\":\"77\"},"
                "\"timestamp\":1776138600000,\"message\":{\"mid\":\"m_1\",\"text\":\"hi\"}},"
                "{\"sender\":{\"id\":\"U9\"},\"recipient\":{\"id\":\"77\"},"
                "\"delivery\":{\"mids\":[\"m_1\"],\"watermark\":1776138600000}}]},"
                "{\"id\":\"78\",\"messaging\":[{\"sender\":{\"id\":\"U9\"},\"recipient\":"
                "{\"id\":\"78\"},\"read\":{\"watermark\":1776138600000}}]}]}",
                "k", s, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.nevents, 3);
    assert_string_equal(res.events[0].occurred_at, "2026-04-14T03:50:00.000Z");
    assert_string_equal(res.events[1].occurred_at, "2026-04-14T03:50:05.000Z");
    assert_null(res.events[2].occurred_at);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

/* The payload is the messaging item exactly as Meta sent it: spacing, escapes and number text
 * are kept, not re-serialised. */
static void test_payload_is_the_item_as_sent(void **state)
{
    (void)state;
    hf_secrets *s = pr_secrets("meta/app_secret", "k", NULL);
#define SPACED_ITEM                                                                                \
    "{ \"sender\": {\"id\": \"U9\"},\n  \"recipient\": {\"id\": \"77\"}, \"timestamp\": "          \
    "1.776138600E12,"                                                                              \
    " \"message\": {\"mid\": \"m_S\", \"text\": \"caf\\u00e9 \\/ ok\"} }"
    ingest_result res;
    call_signed("{\"object\":\"page\",\"entry\":[ {\"id\":\"77\",\"messaging\":[ " SPACED_ITEM
                " ]} ]}",
                "k", s, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.nevents, 1);
    assert_string_equal(res.events[0].payload, SPACED_ITEM);
#undef SPACED_ITEM
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_published_vector(void **state)
{
    hf_secrets *s = pr_secrets("meta/app_secret", VEC_SECRET, NULL);
    const char *headers[] = {"X-Hub-Signature-256", VEC_SIG, NULL};
    ingest_result res;
    call("POST", NULL, VEC_BODY, headers, s, &res);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.reason, "accepted");
    assert_int_equal(res.nevents, 1);
    pr_assert_event(&res.events[0], "meta:m_1", "message", "PAGE_ID", "psid:PSID",
                    "2016-03-23T00:25:52.478Z", VEC_ITEM);
    assert_null(res.response_body);
    ingest_result_free(&res);

    /* Upper-case hex is the same digest. */
    char upper[sizeof VEC_SIG];
    memcpy(upper, VEC_SIG, sizeof upper);
    for (size_t i = 7; upper[i]; i++)
        if (upper[i] >= 'a' && upper[i] <= 'f')
            upper[i] = (char)(upper[i] - 32);
    headers[1] = upper;
    call("POST", NULL, VEC_BODY, headers, s, &res);
    assert_int_equal(res.status, 200);
    ingest_result_free(&res);

    /* Without the "sha256=" prefix it is not Meta's header format. */
    headers[1] = &VEC_SIG[7];
    call("POST", NULL, VEC_BODY, headers, s, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_batch_splits_into_events(void **state)
{
    hf_secrets *s = pr_secrets("meta/app_secret", VEC_SECRET, NULL);
    ingest_result res;
    call_signed(BATCH, VEC_SECRET, s, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.nevents, 7);
    pr_assert_event(&res.events[0], "meta:m_A", "message", "123456", "psid:U1",
                    "2026-04-14T03:50:00.000Z", M1);
    pr_assert_event(&res.events[1], M2_ID, "delivery", "123456", "psid:U1",
                    "2026-04-14T03:50:01.000Z", M2);
    pr_assert_event(&res.events[2], "meta:m_P", "postback", "789", "psid:U2",
                    "2026-04-14T03:50:02.000Z", M3);
    pr_assert_event(&res.events[3], M4_ID, "read", "789", "psid:U2", "2026-04-14T03:50:03.000Z",
                    M4);
    /* An echo is sent by the page; its conversation is the recipient's. */
    pr_assert_event(&res.events[4], "meta:m_E", "message_echo", "789", "psid:U2",
                    "2026-04-14T03:50:04.000Z", M5);
    pr_assert_event(&res.events[5], M6_ID, "reaction", "789", "psid:U2", "2026-04-14T03:50:05.000Z",
                    M6);
    pr_assert_event(&res.events[6], M7_ID, "unknown", "789", "psid:U2", "2026-04-14T03:50:06.000Z",
                    M7);

    /* The same batch again: the same ids. */
    ingest_result again;
    call_signed(BATCH, VEC_SECRET, s, &again);
    assert_int_equal(again.nevents, 7);
    for (size_t i = 0; i < 7; i++)
        assert_string_equal(again.events[i].id, res.events[i].id);
    ingest_result_free(&again);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_rejections(void **state)
{
    hf_secrets *s = pr_secrets("meta/app_secret", VEC_SECRET, NULL);
    ingest_result res;
    /* Tampered body under the vector's signature. */
    const char *headers[] = {"X-Hub-Signature-256", VEC_SIG, NULL};
    char *tampered = xstrdup(VEC_BODY);
    *strstr(tampered, "hi") = 'H';
    call("POST", NULL, tampered, headers, s, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    free(tampered);
    /* Wrong key, missing header, legacy SHA-1 header alone. */
    call_signed(VEC_BODY, "another-secret", s, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    call("POST", NULL, VEC_BODY, NULL, s, &res);
    pr_assert_failed(&res, 401, "missing_signature");
    ingest_result_free(&res);
    const char *sha1[] = {"X-Hub-Signature", "sha1=0000000000000000000000000000000000000000", NULL};
    call("POST", NULL, VEC_BODY, sha1, s, &res);
    pr_assert_failed(&res, 401, "missing_signature");
    ingest_result_free(&res);
    /* Signed but malformed. */
    call_signed("{\"object\":\"page\",\"entry\":[{]}", VEC_SECRET, s, &res);
    pr_assert_failed(&res, 400, "malformed");
    assert_true(strlen(res.detail) > 0);
    ingest_result_free(&res);
    call_signed("{\"object\":\"page\"}", VEC_SECRET, s, &res);
    pr_assert_failed(&res, 400, "malformed");
    assert_string_equal(res.detail, "entry is missing");
    ingest_result_free(&res);
    call_signed("{\"object\":\"page\",\"entry\":[{\"messaging\":[]}]}", VEC_SECRET, s, &res);
    pr_assert_failed(&res, 400, "malformed");
    assert_string_equal(res.detail, "entry[0].id is missing");
    ingest_result_free(&res);
    call_signed("{\"object\":\"page\",\"entry\":[{\"id\":\"1\",\"messaging\":[" M1 ",3]}]}",
                VEC_SECRET, s, &res);
    pr_assert_failed(&res, 400, "malformed");
    ingest_result_free(&res);
    /* Other methods. */
    call("PUT", NULL, VEC_BODY, headers, s, &res);
    pr_assert_failed(&res, 405, "method_not_allowed");
    ingest_result_free(&res);
    hf_secrets_free(s);

    hf_secrets *empty = hf_secrets_new();
    call("POST", NULL, VEC_BODY, headers, empty, &res);
    pr_assert_failed(&res, 503, "missing_secret");
    assert_string_equal(res.detail, "meta/app_secret is not configured");
    ingest_result_free(&res);
    hf_secrets_free(empty);
}

static void test_previous_secret_accepted(void **state)
{
    hf_secrets *s = pr_secrets("meta/app_secret", "rotated-secret", NULL);
    hf_secrets_set(s, "meta/app_secret.previous", VEC_SECRET, strlen(VEC_SECRET));
    const char *headers[] = {"X-Hub-Signature-256", VEC_SIG, NULL};
    ingest_result res;
    call("POST", NULL, VEC_BODY, headers, s, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.nevents, 1);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_handshake(void **state)
{
    hf_secrets *s = pr_secrets("meta/verify_token", VERIFY_TOKEN, NULL);
    ingest_result res;
    call("GET", "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=" VERIFY_TOKEN, "",
         NULL, s, &res);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.reason, "handshake");
    assert_string_equal(res.response_body, "1158201444");
    assert_string_equal(res.response_type, "text/plain");
    assert_int_equal(res.nevents, 0);
    ingest_result_free(&res);

    /* Percent-encoded parameters decode before comparing and echoing. */
    call("GET", "hub.verify_token=verify%2Dme%2D123&hub.mode=subscribe&hub.challenge=challenge_123",
         "", NULL, s, &res);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.response_body, "challenge_123");
    ingest_result_free(&res);

    const char *bad[] = {
        "hub.mode=subscribe&hub.challenge=1&hub.verify_token=verify-me-124",
        "hub.mode=subscribe&hub.challenge=1&hub.verify_token=" VERIFY_TOKEN "4",
        "hub.mode=subscribe&hub.challenge=1",
        "hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=" VERIFY_TOKEN,
        "hub.challenge=1&hub.verify_token=" VERIFY_TOKEN,
        NULL,
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(bad); i++) {
        call("GET", bad[i], "", NULL, s, &res);
        pr_assert_failed(&res, 403, "bad_verify_token");
        ingest_result_free(&res);
    }
    hf_secrets_free(s);

    hf_secrets *empty = hf_secrets_new();
    call("GET", "hub.mode=subscribe&hub.challenge=1&hub.verify_token=" VERIFY_TOKEN, "", NULL,
         empty, &res);
    pr_assert_failed(&res, 503, "missing_secret");
    assert_string_equal(res.detail, "meta/verify_token is not configured");
    ingest_result_free(&res);
    hf_secrets_free(empty);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_published_vector),
        cmocka_unit_test(test_payload_is_the_item_as_sent),
        cmocka_unit_test(test_occurred_at_falls_back_to_the_entry_time),
        cmocka_unit_test(test_batch_splits_into_events),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_previous_secret_accepted),
        cmocka_unit_test(test_handshake),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
