/* test_provider_twilio: Twilio signatures (form, default port, JSON bodySHA256, webhook-rule
 * HMAC-SHA256), key choice and event building through the real handle(). */
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

/* The published vectors of providers.md section 5 (twilio-python's test_request_validator). */
#define VEC_TOKEN "12345"
#define VEC_URL "https://mycompany.com/myapp.php?foo=1&bar=2"
#define VEC_URL_443 "https://mycompany.com:443/myapp.php?foo=1&bar=2"
#define VEC_FORM                                                                                   \
    "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To="          \
    "%2B18005551212"
#define VEC_SIG "RSOYDt4T1cUTdK1PDd93/VVr8B8="
#define VEC_SIG_443 "kvajT1Ptam85bY51eRf/AJRuM3w="
#define VEC_JSON "{\"property\": \"value\", \"boolean\": true}"
#define VEC_JSON_HASH "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
#define VEC_JSON_SIG "a9nBmqA0ju/hNViExpshrM61xv4="

/* Realistic deliveries; signatures computed independently with Python (sorted, deduplicated
 * name+value pairs after the URL). */
#define URL "https://hooks.example.com/api/integrations/webhooks/twilio"
#define SID "AC0123456789abcdef0123456789abcdef"
#define INBOUND                                                                                    \
    "ToCountry=US&SmsMessageSid=SM0001&NumMedia=0&SmsSid=SM0001&SmsStatus=received&Body=Hello+"    \
    "%F0%9F%91%8B+world+%26+more&To=%2B15005550006&MessageSid=SM0001&AccountSid=" SID              \
    "&From=%2B14155550100&ApiVersion=2010-04-01"
#define INBOUND_SIG_MAIN "g6Qqmzk8FMSlaVArIpSU7qxwFuQ="
#define INBOUND_SIG_ACCT "Xa9LVCBNYBdrxokmSrVkPRIJ3D4="
#define INBOUND_SIG_OLD "j5+6Gqhev2x89TRiSUZk8BoB0rY="
#define INBOUND_SIG_RULE "w+4cr63FypWntyedx1gBQbIIDWadNDmOHaeCihIaO5Q="
#define INBOUND_PAYLOAD                                                                            \
    "{\"AccountSid\":\"" SID "\",\"ApiVersion\":\"2010-04-01\",\"Body\":\"Hello \xF0\x9F\x91\x8B " \
    "world & more\",\"From\":\"+14155550100\",\"MessageSid\":\"SM0001\",\"NumMedia\":\"0\","       \
    "\"SmsMessageSid\":\"SM0001\",\"SmsSid\":\"SM0001\",\"SmsStatus\":\"received\",\"To\":"        \
    "\"+15005550006\",\"ToCountry\":\"US\"}"
#define STATUS                                                                                     \
    "SmsSid=SM0002&SmsStatus=delivered&MessageStatus=Delivered&To=%2B14155550100&MessageSid="      \
    "SM0002&AccountSid=" SID "&From=%2B15005550006&ApiVersion=2010-04-01"
#define STATUS_SIG "y2UPjLlAYvsqNne3VYgAYgxWlAo="
#define REPEATED                                                                                   \
    "AccountSid=" SID "&MessageSid=SM0003&MediaUrl=https%3A%2F%2Fm%2Fb&MediaUrl=https%3A%2F%2Fm"   \
    "%2Fa&MediaUrl=https%3A%2F%2Fm%2Fb&From=%2B14155550100"
#define REPEATED_SIG "+oCXMlvL57VkAxd9AkYBhqEEFR8="
#define REPEATED_PAYLOAD                                                                           \
    "{\"AccountSid\":\"" SID "\",\"From\":\"+14155550100\",\"MediaUrl\":[\"https://m/b\","         \
    "\"https://m/a\",\"https://m/b\"],\"MessageSid\":\"SM0003\"}"
#define NO_SID "AccountSid=" SID "&From=%2B14155550100&Body=hi"
#define NO_SID_SIG "7u+fiNwoutEKx93Hm2o98EvKMg0="
#define NO_SID_ID "twilio:ea7121f720bccecf00e78bb9f2f1dd96"
#define JSON_BODY                                                                                  \
    "{\"AccountSid\":\"" SID "\",\"MessageSid\":\"SM0004\",\"MessageStatus\":\"sent\"}"
#define JSON_QUERY "bodySHA256=ed0dec9617f161a0cf5f52e32bb610e6ea11ae347b07f0c676a1388ba2668f2e"
#define JSON_SIG "Y5DA9bXVAtNzNXVxy1BRSa+Nn7A="

#define FORM_TYPE "application/x-www-form-urlencoded"
#define TWIML "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>"

/* public_url is url; the query is whatever follows its '?'. */
static void call(const char *method, const char *url, const char *body, const char *const *headers,
                 const hf_secrets *secrets, ingest_result *res)
{
    const char *q = strchr(url, '?');
    pr_call(&ingest_provider_twilio, method, PR_PATH("twilio"), q ? q + 1 : NULL, url, body,
            strlen(body), headers, secrets, 1776138612000LL, res);
}

/* A form POST with signature sig (NULL: no signature header). */
static void call_form(const char *url, const char *body, const char *sig, const hf_secrets *secrets,
                      ingest_result *res)
{
    const char *headers[] = {"Content-Type", FORM_TYPE, "X-Twilio-Signature", sig, NULL};
    if (!sig)
        headers[2] = NULL;
    call("POST", url, body, headers, secrets, res);
}

static void test_published_form_vectors(void **state)
{
    hf_secrets *s = pr_secrets("twilio/auth_token", VEC_TOKEN, NULL);
    ingest_result res;
    /* The vectors carry no AccountSid: a verified request then fails as malformed (400), an
     * unverified one as 401, which tells the two apart. */
    call_form(VEC_URL, VEC_FORM, VEC_SIG, s, &res);
    pr_assert_failed(&res, 400, "malformed");
    assert_string_equal(res.detail, "AccountSid is missing");
    ingest_result_free(&res);
    /* Signed with :443, received without it, and the reverse. */
    call_form(VEC_URL, VEC_FORM, VEC_SIG_443, s, &res);
    pr_assert_failed(&res, 400, "malformed");
    ingest_result_free(&res);
    call_form(VEC_URL_443, VEC_FORM, VEC_SIG, s, &res);
    pr_assert_failed(&res, 400, "malformed");
    ingest_result_free(&res);
    call_form(VEC_URL_443, VEC_FORM, VEC_SIG_443, s, &res);
    pr_assert_failed(&res, 400, "malformed");
    ingest_result_free(&res);
    /* Parameter order in the body does not matter; a changed value does. */
    call_form(VEC_URL,
              "To=%2B18005551212&From=%2B14158675309&Digits=1234&Caller=%2B14158675309&CallSid="
              "CA1234567890ABCDE",
              VEC_SIG, s, &res);
    pr_assert_failed(&res, 400, "malformed");
    ingest_result_free(&res);
    call_form(VEC_URL,
              "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1235&From=%2B14158675309&To="
              "%2B18005551212",
              VEC_SIG, s, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    /* Another port is not the default one: neither variant matches. */
    call_form("https://mycompany.com:8443/myapp.php?foo=1&bar=2", VEC_FORM, VEC_SIG, s, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    /* The URL is signed too. */
    call_form("https://mycompany.com/myapp.php?foo=1&bar=3", VEC_FORM, VEC_SIG, s, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_published_json_vector(void **state)
{
    hf_secrets *s = pr_secrets("twilio/auth_token", VEC_TOKEN, NULL);
    const char *headers[] = {"Content-Type", "application/json; charset=utf-8",
                             "X-Twilio-Signature", VEC_JSON_SIG, NULL};
    ingest_result res;
    call("POST", VEC_URL "&bodySHA256=" VEC_JSON_HASH, VEC_JSON, headers, s, &res);
    pr_assert_failed(&res, 400, "malformed");
    assert_string_equal(res.detail, "AccountSid is missing");
    ingest_result_free(&res);
    /* The body must hash to bodySHA256. */
    call("POST", VEC_URL "&bodySHA256=" VEC_JSON_HASH, "{\"property\": \"value\"}", headers, s,
         &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    /* A JSON body with no bodySHA256 is not covered by the signature at all. */
    call("POST", VEC_URL, VEC_JSON, headers, s, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_inbound_message(void **state)
{
    hf_secrets *s = pr_secrets("twilio/auth_token", "main-token", NULL);
    ingest_result res;
    call_form(URL, INBOUND, INBOUND_SIG_MAIN, s, &res);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.reason, "accepted");
    assert_int_equal(res.nevents, 1);
    const ingest_event *e = &res.events[0];
    assert_string_equal(e->id, "twilio:SM0001");
    assert_string_equal(e->native_type, "inbound");
    assert_string_equal(e->account, SID);
    assert_string_equal(e->resource, "conversation:+14155550100");
    assert_null(e->occurred_at);
    assert_string_equal(e->payload, INBOUND_PAYLOAD);
    assert_string_equal(res.response_body, TWIML);
    assert_string_equal(res.response_type, "text/xml");

    /* The same delivery again: the same id. */
    ingest_result again;
    call_form(URL, INBOUND, INBOUND_SIG_MAIN, s, &again);
    assert_int_equal(again.status, 200);
    assert_string_equal(again.events[0].id, res.events[0].id);
    ingest_result_free(&again);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_status_callback(void **state)
{
    hf_secrets *s = pr_secrets("twilio/auth_token", "main-token", NULL);
    ingest_result res;
    call_form(URL, STATUS, STATUS_SIG, s, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.nevents, 1);
    const ingest_event *e = &res.events[0];
    assert_string_equal(e->id, "twilio:SM0002:delivered");
    assert_string_equal(e->native_type, "status.delivered");
    assert_string_equal(e->account, SID);
    assert_string_equal(e->resource, "message:SM0002");
    assert_null(e->occurred_at);
    assert_null(res.response_body);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_repeated_parameters(void **state)
{
    hf_secrets *s = pr_secrets("twilio/auth_token", "main-token", NULL);
    ingest_result res;
    call_form(URL, REPEATED, REPEATED_SIG, s, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.nevents, 1);
    assert_string_equal(res.events[0].payload, REPEATED_PAYLOAD);
    assert_string_equal(res.events[0].id, "twilio:SM0003");
    ingest_result_free(&res);
    /* Dropping the duplicate value keeps the signature (Twilio signs distinct values)... */
    call_form(URL,
              "AccountSid=" SID "&MessageSid=SM0003&MediaUrl=https%3A%2F%2Fm%2Fa&MediaUrl=https%3A"
              "%2F%2Fm%2Fb&From=%2B14155550100",
              REPEATED_SIG, s, &res);
    assert_int_equal(res.status, 200);
    ingest_result_free(&res);
    /* ...dropping a distinct one does not. */
    call_form(URL,
              "AccountSid=" SID
              "&MessageSid=SM0003&MediaUrl=https%3A%2F%2Fm%2Fb&From=%2B14155550100",
              REPEATED_SIG, s, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_derived_id_without_message_sid(void **state)
{
    hf_secrets *s = pr_secrets("twilio/auth_token", "main-token", NULL);
    ingest_result res;
    call_form(URL, NO_SID, NO_SID_SIG, s, &res);
    assert_int_equal(res.status, 200);
    assert_string_equal(res.events[0].id, NO_SID_ID);
    assert_string_equal(res.events[0].native_type, "inbound");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_per_account_token_preferred(void **state)
{
    hf_secrets *s = pr_secrets("twilio/auth_token", "main-token", NULL);
    hf_secrets_set(s, "twilio/accounts/" SID "/auth_token", "acct-token", 10);
    ingest_result res;
    call_form(URL, INBOUND, INBOUND_SIG_ACCT, s, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.nevents, 1);
    ingest_result_free(&res);
    /* The account has its own token: the main one no longer signs for it. */
    call_form(URL, INBOUND, INBOUND_SIG_MAIN, s, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    /* Another account falls back to the main token. */
    hf_secrets *main_only = pr_secrets("twilio/auth_token", "main-token", NULL);
    hf_secrets_set(main_only, "twilio/accounts/ACother/auth_token", "acct-token", 10);
    call_form(URL, INBOUND, INBOUND_SIG_MAIN, main_only, &res);
    assert_int_equal(res.status, 200);
    ingest_result_free(&res);
    /* An AccountSid that could escape the secrets dir is never used as a path. */
    hf_secrets_set(main_only, "twilio/accounts/../auth_token", "acct-token", 10);
    call_form(URL, "AccountSid=..%2F..&MessageSid=SM9", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", main_only,
              &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    hf_secrets_free(main_only);
    hf_secrets_free(s);
}

static void test_previous_token_accepted(void **state)
{
    hf_secrets *s = pr_secrets("twilio/auth_token", "main-token", NULL);
    hf_secrets_set(s, "twilio/auth_token.previous", "old-token", 9);
    ingest_result res;
    call_form(URL, INBOUND, INBOUND_SIG_OLD, s, &res);
    assert_int_equal(res.status, 200);
    ingest_result_free(&res);
    call_form(URL, INBOUND, INBOUND_SIG_MAIN, s, &res);
    assert_int_equal(res.status, 200);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_webhook_rule_key(void **state)
{
    hf_secrets *s = pr_secrets("twilio/webhook_keys/rule1", "rule-key", NULL);
    const char *headers[] = {"Content-Type",
                             FORM_TYPE,
                             "X-Twilio-Signature",
                             INBOUND_SIG_RULE,
                             "X-Twilio-Webhooks-Signature-Settings",
                             "key=rule1, algorithm=HMAC_SHA256",
                             NULL};
    ingest_result res;
    call("POST", URL, INBOUND, headers, s, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.nevents, 1);
    ingest_result_free(&res);
    /* A SHA-1 signature does not pass when the rule asks for SHA-256. */
    headers[3] = INBOUND_SIG_MAIN;
    hf_secrets_set(s, "twilio/auth_token", "main-token", 10);
    call("POST", URL, INBOUND, headers, s, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    /* Unknown rule key, unsafe name, unknown algorithm. */
    headers[3] = INBOUND_SIG_RULE;
    headers[5] = "key=rule2,algorithm=HMAC_SHA256";
    call("POST", URL, INBOUND, headers, s, &res);
    pr_assert_failed(&res, 503, "missing_secret");
    assert_string_equal(res.detail, "twilio/webhook_keys/rule2 is not configured");
    ingest_result_free(&res);
    headers[5] = "key=../auth_token,algorithm=HMAC_SHA256";
    call("POST", URL, INBOUND, headers, s, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    headers[5] = "key=rule1,algorithm=HMAC_MD5";
    call("POST", URL, INBOUND, headers, s, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_json_body(void **state)
{
    hf_secrets *s = pr_secrets("twilio/auth_token", "main-token", NULL);
    const char *headers[] = {"Content-Type", "application/json", "X-Twilio-Signature", JSON_SIG,
                             NULL};
    ingest_result res;
    call("POST", URL "?" JSON_QUERY, JSON_BODY, headers, s, &res);
    assert_int_equal(res.status, 200);
    assert_int_equal(res.nevents, 1);
    assert_string_equal(res.events[0].id, "twilio:SM0004:sent");
    assert_string_equal(res.events[0].native_type, "status.sent");
    assert_string_equal(res.events[0].payload, JSON_BODY);
    ingest_result_free(&res);
    hf_secrets_free(s);
}

static void test_rejections(void **state)
{
    hf_secrets *s = pr_secrets("twilio/auth_token", "main-token", NULL);
    ingest_result res;
    /* Tampered body. */
    char *tampered = xstrdup(INBOUND);
    tampered[strlen(tampered) - 1] = '2';
    call_form(URL, tampered, INBOUND_SIG_MAIN, s, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    free(tampered);
    /* Wrong key. */
    call_form(URL, INBOUND, INBOUND_SIG_ACCT, s, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    /* Not base64, or the wrong length. */
    call_form(URL, INBOUND, "not base64!", s, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    call_form(URL, INBOUND, INBOUND_SIG_RULE, s, &res);
    pr_assert_failed(&res, 401, "bad_signature");
    ingest_result_free(&res);
    /* Missing header. */
    call_form(URL, INBOUND, NULL, s, &res);
    pr_assert_failed(&res, 401, "missing_signature");
    ingest_result_free(&res);
    /* GET is not accepted. */
    call("GET", URL "?" INBOUND, "", NULL, s, &res);
    pr_assert_failed(&res, 405, "method_not_allowed");
    ingest_result_free(&res);
    /* A content type that cannot be verified. */
    const char *xml[] = {"Content-Type", "text/xml", "X-Twilio-Signature", INBOUND_SIG_MAIN, NULL};
    call("POST", URL, INBOUND, xml, s, &res);
    pr_assert_failed(&res, 400, "malformed");
    ingest_result_free(&res);
    hf_secrets_free(s);

    /* No token at all. */
    hf_secrets *empty = hf_secrets_new();
    call_form(URL, INBOUND, INBOUND_SIG_MAIN, empty, &res);
    pr_assert_failed(&res, 503, "missing_secret");
    assert_string_equal(res.detail, "twilio/auth_token is not configured");
    ingest_result_free(&res);
    hf_secrets_free(empty);
}

static void test_signed_but_malformed(void **state)
{
    /* Invalid UTF-8 in a value, signed with token 12345 (HMAC computed with Python). */
    hf_secrets *s = pr_secrets("twilio/auth_token", VEC_TOKEN, NULL);
    ingest_result res;
    call_form(VEC_URL, "AccountSid=AC1&Body=%FF", "un9Kt/6hXebTn2JDPvNm6iOtCKA=", s, &res);
    pr_assert_failed(&res, 400, "malformed");
    assert_string_equal(res.detail, "parameter 2 is not valid UTF-8");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

/* Unsigned is 401 (missing_signature) whatever the body: the signature is checked for before the
 * Content-Type, which only a signed request gets a 400 for. */
static void test_unsigned_unknown_content_type_is_401(void **state)
{
    hf_secrets *s = pr_secrets("twilio/auth_token", "main-token", NULL);
    const char *headers[] = {"Content-Type", "text/plain", NULL};
    ingest_result res;
    call("POST", URL, INBOUND, headers, s, &res);
    pr_assert_failed(&res, 401, "missing_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_published_form_vectors),
        cmocka_unit_test(test_published_json_vector),
        cmocka_unit_test(test_inbound_message),
        cmocka_unit_test(test_status_callback),
        cmocka_unit_test(test_repeated_parameters),
        cmocka_unit_test(test_derived_id_without_message_sid),
        cmocka_unit_test(test_per_account_token_preferred),
        cmocka_unit_test(test_previous_token_accepted),
        cmocka_unit_test(test_webhook_rule_key),
        cmocka_unit_test(test_json_body),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_signed_but_malformed),
        cmocka_unit_test(test_unsigned_unknown_content_type_is_401),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
