/* test_provider_core: the code every provider shares (ingest/provider.c: lookup, results, derived
 * ids, times; ingest/providers/provider_util.c: method, secrets, headers, signatures, bodies,
 * times, ids and payloads), checked directly rather than through one platform's handle(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "json.h"
#include "provider.h"
#include "provider_request.h"
#include "providers/provider_util.h"
#include "secrets.h"
#include "util.h"

/* RFC 4231 test case 2: HMAC-SHA256("Jefe", "what do ya want for nothing?"). */
#define RFC_KEY "Jefe"
#define RFC_MSG "what do ya want for nothing?"
#define RFC_MAC_HEX "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
#define RFC_MAC_B64 "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="

#define SECRET_PATH "xero/webhook_key"
#define SIG_HEADER "X-Xero-Signature"

/* A request with the given method, body, header table (pr_table_header) and secrets. */
static ingest_request make_request(const char *method, const void *body, size_t body_len,
                                   const char *const *headers, const hf_secrets *secrets)
{
    return (ingest_request){
        .method = method,
        .path = PR_PATH("xero"),
        .public_url = PR_URL("xero"),
        .body = body,
        .body_len = body_len,
        .header = pr_table_header,
        .header_ctx = (void *)headers,
        .now_ms = 1700000000000LL,
        .secrets = secrets,
    };
}

/* Keys built by hand (values need not be NUL-terminated). */
static provider_util_keys make_keys(const char *k0, size_t l0, const char *k1, size_t l1)
{
    provider_util_keys keys = {.n = 0};
    if (k0) {
        keys.vals[keys.n] = k0;
        keys.lens[keys.n++] = l0;
    }
    if (k1) {
        keys.vals[keys.n] = k1;
        keys.lens[keys.n++] = l1;
    }
    return keys;
}

static void rfc_mac(unsigned char mac[HF_SHA256_LEN])
{
    assert_true(hf_hex_decode(RFC_MAC_HEX, strlen(RFC_MAC_HEX), mac, HF_SHA256_LEN));
}

/* An untouched result: what a helper that succeeds must leave. */
static void assert_untouched(const ingest_result *res)
{
    assert_int_equal(res->status, 0);
    assert_null(res->reason);
    assert_string_equal(res->detail, "");
    assert_int_equal(res->nevents, 0);
}

static void assert_outcome(const ingest_result *res, int status, const char *reason)
{
    assert_int_equal(res->status, status);
    assert_non_null(res->reason);
    assert_string_equal(res->reason, reason);
    assert_int_equal(res->nevents, 0);
    assert_null(res->response_body);
}

/* ---- ingest_provider_find and the provider table ---- */

static void test_find_returns_each_provider_by_its_id(void **state)
{
    (void)state;
    const struct {
        const char *id;
        const ingest_provider *p;
    } all[] = {
        {"xero", &ingest_provider_xero},       {"quickbooks", &ingest_provider_quickbooks},
        {"hubspot", &ingest_provider_hubspot}, {"klaviyo", &ingest_provider_klaviyo},
        {"twilio", &ingest_provider_twilio},   {"meta", &ingest_provider_meta},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(all); i++) {
        const ingest_provider *p = ingest_provider_find(all[i].id);
        assert_ptr_equal(p, all[i].p);
        assert_string_equal(p->id, all[i].id);
        assert_non_null(p->handle);
    }
}

static void test_find_rejects_unknown_ids(void **state)
{
    (void)state;
    const char *unknown[] = {"", "unknown", "xer", "xeroo", "xero/", "xero ", " meta", "shopify"};
    for (size_t i = 0; i < HF_ARRAY_LEN(unknown); i++)
        assert_null(ingest_provider_find(unknown[i]));
}

static void test_only_meta_accepts_get(void **state)
{
    (void)state;
    assert_true(ingest_provider_meta.accepts_get);
    assert_false(ingest_provider_xero.accepts_get);
    assert_false(ingest_provider_quickbooks.accepts_get);
    assert_false(ingest_provider_hubspot.accepts_get);
    assert_false(ingest_provider_klaviyo.accepts_get);
    assert_false(ingest_provider_twilio.accepts_get);
}

/* ---- ingest_derive_id ---- */

/* Expected values are the first 32 hex digits of SHA-256 over the fields joined with 0x1f,
 * computed with Python's hashlib. */
static void test_derive_id_matches_known_digests(void **state)
{
    (void)state;
    char *id = ingest_derive_id("test", "abc", NULL); /* SHA-256("abc"), FIPS 180-2 */
    assert_string_equal(id, "test:ba7816bf8f01cfea414140de5dae2223");
    free(id);
    id = ingest_derive_id("test", NULL); /* SHA-256 of nothing */
    assert_string_equal(id, "test:e3b0c44298fc1c149afbf4c8996fb924");
    free(id);
    id = ingest_derive_id("test", "a", "b", NULL); /* "a\x1f" "b" */
    assert_string_equal(id, "test:f04cdced9736a69da6103f08a4daaf8c");
    free(id);
    id = ingest_derive_id("klaviyo", "caf\xc3\xa9", "\xc3\xbc", NULL); /* UTF-8 bytes as is */
    assert_string_equal(id, "klaviyo:5bd3aa890c395bca02334f38ac19cb03");
    free(id);
}

static void test_derive_id_is_stable_for_a_redelivery(void **state)
{
    (void)state;
    /* The same field values in other buffers, as a redelivery parses them. */
    char acct1[] = "AC123", type1[] = "INVOICE.CREATE", ts1[] = "1776138600000";
    char *acct2 = xstrdup(acct1), *type2 = xstrdup(type1), *ts2 = xstrdup(ts1);
    char *a = ingest_derive_id("quickbooks", acct1, type1, ts1, NULL);
    char *b = ingest_derive_id("quickbooks", acct2, type2, ts2, NULL);
    assert_ptr_not_equal(a, b);
    assert_string_equal(a, b);
    assert_string_equal(acct1, "AC123"); /* the fields are not modified */
    free(a);
    free(b);
    free(acct2);
    free(type2);
    free(ts2);
}

static void test_derive_id_changes_with_any_field(void **state)
{
    (void)state;
    char *ids[] = {
        ingest_derive_id("hubspot", "62515", "sub1", "100", "1700", NULL),
        ingest_derive_id("hubspot", "62516", "sub1", "100", "1700", NULL),
        ingest_derive_id("hubspot", "62515", "sub2", "100", "1700", NULL),
        ingest_derive_id("hubspot", "62515", "sub1", "101", "1700", NULL),
        ingest_derive_id("hubspot", "62515", "sub1", "100", "1701", NULL),
        ingest_derive_id("hubspot", "62515", "sub1", "100", "1700", "x", NULL),
        ingest_derive_id("hubspot", "62515", "sub1", "100", NULL),
        ingest_derive_id("hubspot", "sub1", "62515", "100", "1700", NULL), /* order matters */
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(ids); i++)
        for (size_t j = i + 1; j < HF_ARRAY_LEN(ids); j++)
            assert_string_not_equal(ids[i], ids[j]);
    for (size_t i = 0; i < HF_ARRAY_LEN(ids); i++)
        free(ids[i]);
}

static void test_derive_id_field_boundaries_are_unambiguous(void **state)
{
    (void)state;
    char *ids[] = {
        ingest_derive_id("xero", "ab", "c", NULL), ingest_derive_id("xero", "a", "bc", NULL),
        ingest_derive_id("xero", "abc", NULL),     ingest_derive_id("xero", "a", "b", "c", NULL),
        ingest_derive_id("xero", "abc", "", NULL), ingest_derive_id("xero", "", "abc", NULL),
        ingest_derive_id("xero", "", "", NULL),    ingest_derive_id("xero", "", NULL),
    };
    assert_string_equal(ids[0], "xero:9617c506357d3d46bb660dbde5253de2");
    assert_string_equal(ids[1], "xero:624ce4e22aa197da43bff3bcb4717e5b");
    for (size_t i = 0; i < HF_ARRAY_LEN(ids); i++)
        for (size_t j = i + 1; j < HF_ARRAY_LEN(ids); j++)
            assert_string_not_equal(ids[i], ids[j]);
    for (size_t i = 0; i < HF_ARRAY_LEN(ids); i++)
        free(ids[i]);
}

/* Fields holding the separator (or the escape byte) do not merge with their neighbours. */
static void test_derive_id_separator_inside_a_field_is_unambiguous(void **state)
{
    (void)state;
    /* Two different field lists (JSON allows \u001f in any platform string): distinct events
     * must not share an id, or the second is dropped downstream as a duplicate. */
    char *a = ingest_derive_id("xero", "tenant",
                               "INVOICE\x1f"
                               "r1",
                               "CREATE", NULL);
    char *b = ingest_derive_id("xero", "tenant", "INVOICE",
                               "r1\x1f"
                               "CREATE",
                               NULL);
    assert_string_not_equal(a, b);
    free(a);
    free(b);
    a = ingest_derive_id("xero", "x\x1e", "f", NULL);
    b = ingest_derive_id("xero", "x",
                         "\x1e"
                         "f",
                         NULL);
    char *c = ingest_derive_id("xero", "x\x1f", NULL);
    assert_string_not_equal(a, b);
    assert_string_not_equal(a, c);
    assert_string_not_equal(b, c);
    free(a);
    free(b);
    free(c);
}

/* "<provider>:" then 32 lowercase hex digits; the hash covers the fields only, so the provider
 * changes the prefix and nothing else. */
static void test_derive_id_format_is_provider_colon_32_hex(void **state)
{
    (void)state;
    const char *providers[] = {"xero", "quickbooks", "hubspot", "klaviyo", "twilio", "meta"};
    char *first = NULL;
    for (size_t i = 0; i < HF_ARRAY_LEN(providers); i++) {
        char *id = ingest_derive_id(providers[i], "account", "event", NULL);
        size_t plen = strlen(providers[i]);
        assert_int_equal(strlen(id), plen + 1 + 32);
        assert_memory_equal(id, providers[i], plen);
        assert_int_equal(id[plen], ':');
        for (size_t k = plen + 1; id[k]; k++)
            assert_true((id[k] >= '0' && id[k] <= '9') || (id[k] >= 'a' && id[k] <= 'f'));
        if (!first)
            first = xstrdup(id + plen + 1);
        else
            assert_string_equal(id + plen + 1, first);
        free(id);
    }
    free(first);
}

/* ---- ingest_time_from_ms ---- */

static void test_time_from_ms_formats_known_instants(void **state)
{
    (void)state;
    const struct {
        int64_t ms;
        const char *text;
    } cases[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {1, "1970-01-01T00:00:00.001Z"},
        {999, "1970-01-01T00:00:00.999Z"},
        {1000, "1970-01-01T00:00:01.000Z"},
        {86399999, "1970-01-01T23:59:59.999Z"},
        {951827696789LL, "2000-02-29T12:34:56.789Z"},  /* leap day of a century leap year */
        {1709251199999LL, "2024-02-29T23:59:59.999Z"}, /* last ms of a leap day */
        {1709251200000LL, "2024-03-01T00:00:00.000Z"},
        {1704067199999LL, "2023-12-31T23:59:59.999Z"}, /* year boundary */
        {1704067200000LL, "2024-01-01T00:00:00.000Z"},
        {1458692752478LL, "2016-03-23T00:25:52.478Z"},
        {4107542400000LL, "2100-03-01T00:00:00.000Z"}, /* 2100 has no 29 February */
        {4107542399999LL, "2100-02-28T23:59:59.999Z"},
        {253402300799999LL, "9999-12-31T23:59:59.999Z"},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        char *t = ingest_time_from_ms(cases[i].ms);
        assert_string_equal(t, cases[i].text);
        free(t);
    }
}

static void test_time_from_ms_before_the_epoch(void **state)
{
    (void)state;
    const struct {
        int64_t ms;
        const char *text;
    } cases[] = {
        {-1, "1969-12-31T23:59:59.999Z"},
        {-999, "1969-12-31T23:59:59.001Z"},
        {-1000, "1969-12-31T23:59:59.000Z"},
        {-1001, "1969-12-31T23:59:58.999Z"},
        {-2208988800000LL, "1900-01-01T00:00:00.000Z"},
        {-30610224000000LL, "1000-01-01T00:00:00.000Z"},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        char *t = ingest_time_from_ms(cases[i].ms);
        assert_string_equal(t, cases[i].text);
        free(t);
    }
}

/* RFC 3339 has four-digit years: anything beyond is clamped, never a longer or broken text. */
static void test_time_from_ms_clamps_to_four_digit_years(void **state)
{
    (void)state;
    const struct {
        int64_t ms;
        const char *text;
    } cases[] = {
        {253402300800000LL, "9999-12-31T23:59:59.999Z"},
        {INT64_MAX, "9999-12-31T23:59:59.999Z"},
        {-62167219200000LL, "0000-01-01T00:00:00.000Z"},
        {-62167219200001LL, "0000-01-01T00:00:00.000Z"},
        {INT64_MIN, "0000-01-01T00:00:00.000Z"},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        char *t = ingest_time_from_ms(cases[i].ms);
        assert_string_equal(t, cases[i].text);
        free(t);
    }
}

/* ---- ingest_result_add / ingest_result_fail / ingest_result_free ---- */

static void test_result_add_appends_in_order_with_fields(void **state)
{
    (void)state;
    ingest_result res = {0};
    ingest_result_add(&res, xstrdup("xero:1"), xstrdup("INVOICE.CREATE"), xstrdup("T1"),
                      xstrdup("invoice:9"), xstrdup("2024-01-01T00:00:00.000Z"),
                      xstrdup("{\"a\":1}"));
    ingest_result_add(&res, xstrdup("xero:2"), xstrdup("CONTACT.UPDATE"), xstrdup("T2"), NULL, NULL,
                      xstrdup("{}"));
    ingest_result_add(&res, xstrdup("xero:3"), xstrdup("caf\xc3\xa9"), xstrdup("T1"), xstrdup("r"),
                      NULL, xstrdup("{\"b\":[]}"));
    assert_int_equal(res.nevents, 3);
    assert_true(res.cap >= 3);
    assert_int_equal(res.status, 0); /* adding decides nothing */
    assert_null(res.reason);

    const ingest_event *e = res.events;
    assert_string_equal(e[0].id, "xero:1");
    assert_string_equal(e[0].native_type, "INVOICE.CREATE");
    assert_string_equal(e[0].account, "T1");
    assert_string_equal(e[0].resource, "invoice:9");
    assert_string_equal(e[0].occurred_at, "2024-01-01T00:00:00.000Z");
    assert_string_equal(e[0].payload, "{\"a\":1}");
    assert_string_equal(e[1].id, "xero:2");
    assert_string_equal(e[1].native_type, "CONTACT.UPDATE");
    assert_string_equal(e[1].account, "T2");
    assert_null(e[1].resource);
    assert_null(e[1].occurred_at);
    assert_string_equal(e[1].payload, "{}");
    assert_string_equal(e[2].id, "xero:3");
    assert_string_equal(e[2].native_type, "caf\xc3\xa9");
    assert_string_equal(e[2].resource, "r");
    assert_null(e[2].occurred_at);
    assert_string_equal(e[2].payload, "{\"b\":[]}");
    ingest_result_free(&res);
}

/* The strings passed are the ones stored (ownership moves, no copy). */
static void test_result_add_takes_ownership(void **state)
{
    (void)state;
    ingest_result res = {0};
    char *id = xstrdup("meta:m"), *type = xstrdup("message"), *acct = xstrdup("P"),
         *resource = xstrdup("psid:U"), *at = xstrdup("1970-01-01T00:00:00.000Z"),
         *payload = xstrdup("{}");
    ingest_result_add(&res, id, type, acct, resource, at, payload);
    assert_ptr_equal(res.events[0].id, id);
    assert_ptr_equal(res.events[0].native_type, type);
    assert_ptr_equal(res.events[0].account, acct);
    assert_ptr_equal(res.events[0].resource, resource);
    assert_ptr_equal(res.events[0].occurred_at, at);
    assert_ptr_equal(res.events[0].payload, payload);
    ingest_result_free(&res); /* frees them all: a leak would fail the ASan build */
}

static void test_result_add_grows_for_many_events(void **state)
{
    (void)state;
    enum { N = 1000 };
    ingest_result res = {0};
    for (int i = 0; i < N; i++)
        ingest_result_add(&res, xasprintf("klaviyo:%d", i), xstrdup("t"), xstrdup("A"),
                          i % 2 ? NULL : xasprintf("r%d", i), NULL, xasprintf("{\"i\":%d}", i));
    assert_int_equal(res.nevents, N);
    assert_true(res.cap >= N);
    for (int i = 0; i < N; i++) {
        char *want_id = xasprintf("klaviyo:%d", i), *want_payload = xasprintf("{\"i\":%d}", i);
        assert_string_equal(res.events[i].id, want_id);
        assert_string_equal(res.events[i].payload, want_payload);
        if (i % 2) {
            assert_null(res.events[i].resource);
        } else {
            char *want_resource = xasprintf("r%d", i);
            assert_string_equal(res.events[i].resource, want_resource);
            free(want_resource);
        }
        free(want_id);
        free(want_payload);
    }
    ingest_result_free(&res);
}

static void test_result_fail_drops_events_and_sets_outcome(void **state)
{
    (void)state;
    ingest_result res = {0};
    ingest_result_add(&res, xstrdup("x:1"), xstrdup("t"), xstrdup("a"), xstrdup("r"),
                      xstrdup("2024-01-01T00:00:00.000Z"), xstrdup("{}"));
    ingest_result_add(&res, xstrdup("x:2"), xstrdup("t"), xstrdup("a"), NULL, NULL, xstrdup("{}"));
    res.response_body = xstrdup("<Response/>");
    res.response_type = "text/xml";
    static const char reason[] = "malformed";
    ingest_result_fail(&res, 400, reason, "event %zu needs %s (%d)", (size_t)3, "portalId", -7);
    assert_int_equal(res.status, 400);
    assert_ptr_equal(res.reason, reason); /* the static label itself */
    assert_string_equal(res.detail, "event 3 needs portalId (-7)");
    assert_int_equal(res.nevents, 0);
    assert_null(res.response_body);
    assert_null(res.response_type);

    /* A later failure replaces the outcome and leaves nothing of the earlier detail. */
    ingest_result_fail(&res, 401, "bad_signature", "no");
    assert_outcome(&res, 401, "bad_signature");
    assert_string_equal(res.detail, "no");

    /* The result is still usable (and free()able) after a failure. */
    ingest_result_add(&res, xstrdup("x:3"), xstrdup("t"), xstrdup("a"), NULL, NULL, xstrdup("{}"));
    assert_int_equal(res.nevents, 1);
    assert_string_equal(res.events[0].id, "x:3");
    ingest_result_free(&res);
}

static void test_result_fail_on_a_fresh_result(void **state)
{
    (void)state;
    ingest_result res = {0};
    ingest_result_fail(&res, 503, "missing_secret", "%s is not configured", "caf\xc3\xa9/key");
    assert_outcome(&res, 503, "missing_secret");
    assert_string_equal(res.detail, "caf\xc3\xa9/key is not configured");
    ingest_result_free(&res);
}

/* A detail longer than the buffer is cut, NUL-terminated, and writes nothing past it. */
static void test_result_fail_truncates_a_long_detail(void **state)
{
    (void)state;
    ingest_result res = {0};
    ingest_result_add(&res, xstrdup("x:1"), xstrdup("t"), xstrdup("a"), NULL, NULL, xstrdup("{}"));
    ingest_event *events = res.events;
    size_t cap = res.cap;
    char long_text[1000];
    for (size_t i = 0; i < sizeof long_text - 1; i++)
        long_text[i] = (char)('a' + i % 26);
    long_text[sizeof long_text - 1] = '\0';

    ingest_result_fail(&res, 400, "malformed", "%s", long_text);
    assert_int_equal(strlen(res.detail), sizeof res.detail - 1);
    assert_memory_equal(res.detail, long_text, sizeof res.detail - 1);
    /* The fields after detail are intact. */
    assert_null(res.response_body);
    assert_null(res.response_type);
    assert_ptr_equal(res.events, events);
    assert_int_equal(res.cap, cap);
    assert_int_equal(res.nevents, 0);
    assert_int_equal(res.status, 400);

    /* Exactly the buffer's capacity fits whole. */
    long_text[sizeof res.detail - 1] = '\0';
    ingest_result_fail(&res, 400, "malformed", "%s", long_text);
    assert_string_equal(res.detail, long_text);
    ingest_result_free(&res);
}

static void test_result_free_of_zeroed_and_used_results(void **state)
{
    (void)state;
    ingest_result res = {0};
    ingest_result_free(&res); /* nothing to free */
    assert_null(res.events);
    assert_int_equal(res.nevents, 0);

    ingest_result_add(&res, xstrdup("x:1"), xstrdup("t"), xstrdup("a"), xstrdup("r"),
                      xstrdup("2024-01-01T00:00:00.000Z"), xstrdup("{}"));
    res.response_body = xstrdup("hello");
    ingest_result_free(&res);
    assert_null(res.events);
    assert_null(res.response_body);
    assert_int_equal(res.nevents, 0);
    assert_int_equal(res.cap, 0);

    /* Freed results can be freed again, and reused. */
    ingest_result_free(&res);
    ingest_result_add(&res, xstrdup("x:2"), xstrdup("t"), xstrdup("a"), NULL, NULL, xstrdup("{}"));
    assert_int_equal(res.nevents, 1);
    assert_string_equal(res.events[0].id, "x:2");
    ingest_result_free(&res);
}

/* ---- provider_util_require_post ---- */

static void test_require_post_accepts_only_post(void **state)
{
    (void)state;
    ingest_request req = make_request("POST", NULL, 0, NULL, NULL);
    ingest_result res = {0};
    assert_true(provider_util_require_post(&req, &res));
    assert_untouched(&res);

    /* Methods are case-sensitive tokens. */
    const char *others[] = {"GET", "PUT", "HEAD", "post", "POST ", "", NULL};
    for (size_t i = 0; i < HF_ARRAY_LEN(others); i++) {
        req.method = others[i];
        memset(&res, 0, sizeof res);
        assert_false(provider_util_require_post(&req, &res));
        assert_outcome(&res, 405, "method_not_allowed");
        assert_string_equal(res.detail, "only POST is accepted");
        ingest_result_free(&res);
    }
}

/* ---- provider_util_load_keys / provider_util_get_keys ---- */

static void test_load_keys_fails_503_naming_the_path(void **state)
{
    (void)state;
    hf_secrets *empty = hf_secrets_new();
    hf_secrets *other = pr_secrets("xero/other_key", "k", "k0");
    hf_secrets *blank = pr_secrets(SECRET_PATH, "", ""); /* empty files: not configured */
    const hf_secrets *stores[] = {NULL, empty, other, blank};
    for (size_t i = 0; i < HF_ARRAY_LEN(stores); i++) {
        ingest_request req = make_request("POST", NULL, 0, NULL, stores[i]);
        ingest_result res = {0};
        provider_util_keys keys;
        assert_false(provider_util_load_keys(&req, SECRET_PATH, &keys, &res));
        assert_int_equal(keys.n, 0);
        assert_outcome(&res, 503, "missing_secret");
        assert_non_null(strstr(res.detail, SECRET_PATH));
        ingest_result_free(&res);
    }
    hf_secrets_free(empty);
    hf_secrets_free(other);
    hf_secrets_free(blank);
}

static void test_load_keys_current_then_previous(void **state)
{
    (void)state;
    hf_secrets *both = pr_secrets(SECRET_PATH, "current-key", "old");
    hf_secrets *cur = pr_secrets(SECRET_PATH, "current-key", NULL);
    hf_secrets *prev = pr_secrets(SECRET_PATH, NULL, "old");
    ingest_result res = {0};
    provider_util_keys keys;

    ingest_request req = make_request("POST", NULL, 0, NULL, both);
    assert_true(provider_util_load_keys(&req, SECRET_PATH, &keys, &res));
    assert_int_equal(keys.n, 2);
    assert_int_equal(keys.lens[0], strlen("current-key"));
    assert_memory_equal(keys.vals[0], "current-key", keys.lens[0]);
    assert_int_equal(keys.lens[1], 3);
    assert_memory_equal(keys.vals[1], "old", 3);
    assert_untouched(&res);

    req.secrets = cur;
    assert_true(provider_util_load_keys(&req, SECRET_PATH, &keys, &res));
    assert_int_equal(keys.n, 1);
    assert_int_equal(keys.lens[0], strlen("current-key"));
    assert_memory_equal(keys.vals[0], "current-key", keys.lens[0]);
    assert_untouched(&res);

    /* Only the .previous value (mid-rotation): one key, and it is the previous one. */
    req.secrets = prev;
    assert_true(provider_util_load_keys(&req, SECRET_PATH, &keys, &res));
    assert_int_equal(keys.n, 1);
    assert_int_equal(keys.lens[0], 3);
    assert_memory_equal(keys.vals[0], "old", 3);
    assert_untouched(&res);

    hf_secrets_free(both);
    hf_secrets_free(cur);
    hf_secrets_free(prev);
}

static void test_load_keys_keeps_binary_values(void **state)
{
    (void)state;
    hf_secrets *s = hf_secrets_new();
    hf_secrets_set(s, SECRET_PATH, "k\0ey", 4);
    hf_secrets_set(s, SECRET_PATH ".previous", "\xff\x00", 2);
    ingest_request req = make_request("POST", NULL, 0, NULL, s);
    ingest_result res = {0};
    provider_util_keys keys;
    assert_true(provider_util_load_keys(&req, SECRET_PATH, &keys, &res));
    assert_int_equal(keys.n, 2);
    assert_int_equal(keys.lens[0], 4);
    assert_memory_equal(keys.vals[0], "k\0ey", 4);
    assert_int_equal(keys.lens[1], 2);
    assert_memory_equal(keys.vals[1], "\xff\x00", 2);
    hf_secrets_free(s);
}

static void test_get_keys_counts_current_and_previous(void **state)
{
    (void)state;
    hf_secrets *both = pr_secrets("klaviyo/webhook_secret", "new", "older");
    hf_secrets *prev = pr_secrets("klaviyo/webhook_secret", NULL, "older");
    hf_secrets *empty = hf_secrets_new();
    const char *vals[2] = {NULL, NULL};
    size_t lens[2] = {0, 0};

    ingest_request req = make_request("POST", NULL, 0, NULL, both);
    assert_int_equal(provider_util_get_keys(&req, "klaviyo/webhook_secret", vals, lens), 2);
    assert_int_equal(lens[0], 3);
    assert_memory_equal(vals[0], "new", 3);
    assert_int_equal(lens[1], 5);
    assert_memory_equal(vals[1], "older", 5);
    assert_int_equal(provider_util_get_keys(&req, "klaviyo/other", vals, lens), 0);

    req.secrets = prev;
    assert_int_equal(provider_util_get_keys(&req, "klaviyo/webhook_secret", vals, lens), 1);
    assert_int_equal(lens[0], 5);
    assert_memory_equal(vals[0], "older", 5);

    req.secrets = empty;
    assert_int_equal(provider_util_get_keys(&req, "klaviyo/webhook_secret", vals, lens), 0);
    req.secrets = NULL;
    assert_int_equal(provider_util_get_keys(&req, "klaviyo/webhook_secret", vals, lens), 0);
    hf_secrets_free(both);
    hf_secrets_free(prev);
    hf_secrets_free(empty);
}

/* ---- provider_util_header / provider_util_body_text ---- */

typedef struct header_probe {
    const ingest_request *req;
    const char *name;
    int calls;
} header_probe;

static const char *probe_header(const ingest_request *req, const char *name)
{
    header_probe *p = req->header_ctx;
    p->req = req;
    p->name = name;
    p->calls++;
    return strcmp(name, "X-Known") == 0 ? "the value" : NULL;
}

static void test_header_goes_through_the_request_callback(void **state)
{
    (void)state;
    header_probe probe = {0};
    ingest_request req = make_request("POST", NULL, 0, NULL, NULL);
    req.header = probe_header;
    req.header_ctx = &probe;
    const char *name = "X-Known";
    assert_string_equal(provider_util_header(&req, name), "the value");
    assert_int_equal(probe.calls, 1);
    assert_ptr_equal(probe.req, &req);
    assert_ptr_equal(probe.name, name);
    assert_null(provider_util_header(&req, "X-Absent"));
    assert_int_equal(probe.calls, 2);

    /* Through the table lookup: case-insensitive names, values as given. */
    const char *headers[] = {"X-Hub-Signature-256", "sha256=ab", "Content-Type", "", NULL};
    req = make_request("POST", NULL, 0, headers, NULL);
    assert_ptr_equal(provider_util_header(&req, "x-hub-signature-256"), headers[1]);
    assert_string_equal(provider_util_header(&req, "CONTENT-TYPE"), "");
    assert_null(provider_util_header(&req, "X-Hub-Signature"));
}

static void test_header_without_a_lookup_is_null(void **state)
{
    (void)state;
    ingest_request req = make_request("POST", NULL, 0, NULL, NULL);
    req.header = NULL;
    assert_null(provider_util_header(&req, "X-Anything"));
}

static void test_body_text(void **state)
{
    (void)state;
    ingest_request req = make_request("POST", NULL, 0, NULL, NULL);
    const char *t = provider_util_body_text(&req);
    assert_non_null(t);
    assert_string_equal(t, "");

    static const unsigned char body[] = "{\"a\":1}";
    req.body = body;
    req.body_len = sizeof body - 1;
    assert_ptr_equal(provider_util_body_text(&req), (const char *)body);
}

/* ---- provider_util_hmac_matches ---- */

static void test_hmac_matches_the_rfc_4231_vector(void **state)
{
    (void)state;
    unsigned char mac[HF_SHA256_LEN];
    rfc_mac(mac);
    const unsigned char *msg = (const unsigned char *)RFC_MSG;
    size_t msg_len = strlen(RFC_MSG);

    provider_util_keys keys = make_keys(RFC_KEY, 4, NULL, 0);
    assert_true(provider_util_hmac_matches(&keys, mac, sizeof mac, msg, msg_len));

    keys = make_keys("Jeff", 4, NULL, 0); /* wrong key */
    assert_false(provider_util_hmac_matches(&keys, mac, sizeof mac, msg, msg_len));
    keys = make_keys(RFC_KEY, 3, NULL, 0); /* the key's length is honoured */
    assert_false(provider_util_hmac_matches(&keys, mac, sizeof mac, msg, msg_len));
    keys = make_keys(RFC_KEY, 4, NULL, 0);
    assert_false(provider_util_hmac_matches(&keys, mac, sizeof mac, msg, msg_len - 1));

    unsigned char flipped[HF_SHA256_LEN];
    for (size_t i = 0; i < sizeof flipped; i += 31) { /* the first and the last byte */
        memcpy(flipped, mac, sizeof flipped);
        flipped[i] ^= 0x01;
        assert_false(provider_util_hmac_matches(&keys, flipped, sizeof flipped, msg, msg_len));
    }
}

/* Rotation: a body signed with either the current or the .previous key is accepted, whichever
 * position holds the matching key; no match under any key is rejected. */
static void test_hmac_matches_tries_every_key(void **state)
{
    (void)state;
    unsigned char mac[HF_SHA256_LEN];
    rfc_mac(mac);
    const unsigned char *msg = (const unsigned char *)RFC_MSG;
    size_t msg_len = strlen(RFC_MSG);

    provider_util_keys keys = make_keys("new-key", 7, RFC_KEY, 4);
    assert_true(provider_util_hmac_matches(&keys, mac, sizeof mac, msg, msg_len));
    keys = make_keys(RFC_KEY, 4, "new-key", 7);
    assert_true(provider_util_hmac_matches(&keys, mac, sizeof mac, msg, msg_len));
    keys = make_keys(RFC_KEY, 4, RFC_KEY, 4);
    assert_true(provider_util_hmac_matches(&keys, mac, sizeof mac, msg, msg_len));
    keys = make_keys("new-key", 7, "old-key", 7);
    assert_false(provider_util_hmac_matches(&keys, mac, sizeof mac, msg, msg_len));
    keys = make_keys(NULL, 0, NULL, 0); /* no keys: nothing matches */
    assert_false(provider_util_hmac_matches(&keys, mac, sizeof mac, msg, msg_len));
}

static void test_hmac_matches_rejects_wrong_lengths(void **state)
{
    (void)state;
    unsigned char mac[HF_SHA256_LEN + 1];
    rfc_mac(mac);
    mac[HF_SHA256_LEN] = 0;
    const unsigned char *msg = (const unsigned char *)RFC_MSG;
    size_t msg_len = strlen(RFC_MSG);
    provider_util_keys keys = make_keys(RFC_KEY, 4, "other", 5);
    assert_false(provider_util_hmac_matches(&keys, mac, HF_SHA256_LEN - 1, msg, msg_len));
    assert_false(provider_util_hmac_matches(&keys, mac, HF_SHA256_LEN + 1, msg, msg_len));
    assert_false(provider_util_hmac_matches(&keys, mac, 16, msg, msg_len));
    assert_false(provider_util_hmac_matches(&keys, mac, 0, msg, msg_len));
    assert_true(provider_util_hmac_matches(&keys, mac, HF_SHA256_LEN, msg, msg_len));
}

/* Lengths, not NULs, delimit keys and bodies (HMAC computed with Python). */
static void test_hmac_matches_binary_key_and_body(void **state)
{
    (void)state;
    unsigned char mac[HF_SHA256_LEN];
    const char *hex = "337253df2d3ad46fcf45f99fe86001f993a2db400ecd8800cbe794294d149e17";
    assert_true(hf_hex_decode(hex, strlen(hex), mac, sizeof mac));
    const unsigned char body[] = {'a', 'b', 0, 'c', 'd'};
    provider_util_keys keys = make_keys("k\0ey", 4, NULL, 0);
    assert_true(provider_util_hmac_matches(&keys, mac, sizeof mac, body, sizeof body));
    assert_false(provider_util_hmac_matches(&keys, mac, sizeof mac, body, 2));
    keys = make_keys("k\0ey", 1, NULL, 0);
    assert_false(provider_util_hmac_matches(&keys, mac, sizeof mac, body, sizeof body));
}

static void test_hmac_matches_an_empty_body(void **state)
{
    (void)state;
    unsigned char mac[HF_SHA256_LEN];
    hf_hmac_sha256("key", 3, "", 0, mac);
    provider_util_keys keys = make_keys("key", 3, NULL, 0);
    assert_true(provider_util_hmac_matches(&keys, mac, sizeof mac, (const unsigned char *)"", 0));
    assert_false(provider_util_hmac_matches(&keys, mac, sizeof mac, (const unsigned char *)"x", 1));
}

/* ---- provider_util_secret_matches ---- */

static void test_secret_matches_exactly(void **state)
{
    (void)state;
    provider_util_keys keys = make_keys("verify-me-123", 13, NULL, 0);
    assert_true(provider_util_secret_matches(&keys, "verify-me-123", 13));
    const char *wrong[] = {"verify-me-12",  "verify-me-1234", "VERIFY-ME-123",
                           "verify-me-124", " verify-me-123", ""};
    for (size_t i = 0; i < HF_ARRAY_LEN(wrong); i++)
        assert_false(provider_util_secret_matches(&keys, wrong[i], strlen(wrong[i])));
    /* given_len bytes are compared, not up to a NUL. */
    assert_true(provider_util_secret_matches(&keys, "verify-me-123-and-more", 13));
    assert_false(provider_util_secret_matches(&keys, "verify-me-123", 12));
}

static void test_secret_matches_current_or_previous(void **state)
{
    (void)state;
    provider_util_keys keys = make_keys("new-token", 9, "old-token", 9);
    assert_true(provider_util_secret_matches(&keys, "new-token", 9));
    assert_true(provider_util_secret_matches(&keys, "old-token", 9));
    assert_false(provider_util_secret_matches(&keys, "mid-token", 9));
    keys = make_keys("a-much-longer-current-token", 27, "short", 5);
    assert_true(provider_util_secret_matches(&keys, "short", 5));
    assert_true(provider_util_secret_matches(&keys, "a-much-longer-current-token", 27));
    assert_false(provider_util_secret_matches(&keys, "shor", 4));
}

static void test_secret_matches_without_keys_and_with_binary(void **state)
{
    (void)state;
    provider_util_keys none = make_keys(NULL, 0, NULL, 0);
    assert_false(provider_util_secret_matches(&none, "", 0));
    assert_false(provider_util_secret_matches(&none, "anything", 8));

    provider_util_keys keys = make_keys("tok\0en", 6, "caf\xc3\xa9", 5);
    assert_true(provider_util_secret_matches(&keys, "tok\0en", 6));
    assert_false(provider_util_secret_matches(&keys, "tok", 3));
    assert_false(provider_util_secret_matches(&keys, "tok\0eN", 6));
    assert_true(provider_util_secret_matches(&keys, "caf\xc3\xa9", 5));
    assert_false(provider_util_secret_matches(&keys, "cafe", 4));
}

/* ---- provider_util_hmac_b64_matches ---- */

static void test_hmac_b64_matches(void **state)
{
    (void)state;
    const unsigned char *msg = (const unsigned char *)RFC_MSG;
    size_t msg_len = strlen(RFC_MSG);
    provider_util_keys keys = make_keys(RFC_KEY, 4, NULL, 0);
    assert_true(provider_util_hmac_b64_matches(&keys, RFC_MAC_B64, msg, msg_len));
    keys = make_keys("current", 7, RFC_KEY, 4);
    assert_true(provider_util_hmac_b64_matches(&keys, RFC_MAC_B64, msg, msg_len));
    keys = make_keys("current", 7, "older", 5);
    assert_false(provider_util_hmac_b64_matches(&keys, RFC_MAC_B64, msg, msg_len));

    keys = make_keys(RFC_KEY, 4, NULL, 0);
    assert_false(provider_util_hmac_b64_matches(&keys, RFC_MAC_B64, msg, msg_len - 1));
    const char *bad[] = {
        "",
        "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM",  /* unpadded */
        "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEQ=", /* last digit changed */
        "X9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=", /* first digit changed */
        "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTs",     /* 30 bytes */
        "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEMA", /* 33 bytes */
        "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=!",
        RFC_MAC_HEX,
        "!!!!",
        "====",
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(bad); i++)
        assert_false(provider_util_hmac_b64_matches(&keys, bad[i], msg, msg_len));
}

/* A signature far longer than any digest is rejected without writing past the decode buffer. */
static void test_hmac_b64_matches_rejects_long_signatures(void **state)
{
    (void)state;
    const unsigned char *msg = (const unsigned char *)RFC_MSG;
    provider_util_keys keys = make_keys(RFC_KEY, 4, NULL, 0);
    char sig[1025];
    memset(sig, 'A', sizeof sig - 1);
    sig[sizeof sig - 1] = '\0';
    assert_false(provider_util_hmac_b64_matches(&keys, sig, msg, strlen(RFC_MSG)));
    /* The right digest followed by more data. */
    char *longer = xconcat(RFC_MAC_B64, "AAAAAAAAAAAAAAAAAAAA", NULL);
    assert_false(provider_util_hmac_b64_matches(&keys, longer, msg, strlen(RFC_MSG)));
    free(longer);
}

/* ---- provider_util_signed_b64 ---- */

static void test_signed_b64_accepts_current_and_previous_keys(void **state)
{
    (void)state;
    hf_secrets *s = pr_secrets(SECRET_PATH, "current-key", RFC_KEY);
    const char *headers[] = {"x-xero-signature", RFC_MAC_B64, NULL};
    ingest_request req = make_request("POST", RFC_MSG, strlen(RFC_MSG), headers, s);
    ingest_result res = {0};
    assert_true(provider_util_signed_b64(&req, SECRET_PATH, SIG_HEADER, &res));
    assert_untouched(&res);

    char sig[64];
    pr_hmac_b64("current-key", RFC_MSG, strlen(RFC_MSG), sig);
    headers[1] = sig;
    assert_true(provider_util_signed_b64(&req, SECRET_PATH, SIG_HEADER, &res));
    assert_untouched(&res);
    hf_secrets_free(s);
}

static void test_signed_b64_rejections(void **state)
{
    (void)state;
    hf_secrets *s = pr_secrets(SECRET_PATH, RFC_KEY, NULL);
    hf_secrets *none = hf_secrets_new();
    ingest_result res = {0};

    /* No secret: 503 whether or not the request is signed. */
    const char *headers[] = {SIG_HEADER, RFC_MAC_B64, NULL};
    ingest_request req = make_request("POST", RFC_MSG, strlen(RFC_MSG), headers, none);
    assert_false(provider_util_signed_b64(&req, SECRET_PATH, SIG_HEADER, &res));
    assert_outcome(&res, 503, "missing_secret");
    assert_non_null(strstr(res.detail, SECRET_PATH));
    ingest_result_free(&res);
    memset(&res, 0, sizeof res);
    req.header_ctx = NULL;
    assert_false(provider_util_signed_b64(&req, SECRET_PATH, SIG_HEADER, &res));
    assert_outcome(&res, 503, "missing_secret");
    ingest_result_free(&res);

    /* No header (or no header lookup at all). */
    memset(&res, 0, sizeof res);
    req.secrets = s;
    assert_false(provider_util_signed_b64(&req, SECRET_PATH, SIG_HEADER, &res));
    assert_outcome(&res, 401, "missing_signature");
    assert_non_null(strstr(res.detail, SIG_HEADER));
    ingest_result_free(&res);
    memset(&res, 0, sizeof res);
    req.header = NULL;
    assert_false(provider_util_signed_b64(&req, SECRET_PATH, SIG_HEADER, &res));
    assert_outcome(&res, 401, "missing_signature");
    ingest_result_free(&res);

    /* A signature that does not match: the detail names the header, never the signature. */
    const char *wrong[] = {"W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEQ=", "", "not base64",
                           RFC_MAC_HEX};
    req = make_request("POST", RFC_MSG, strlen(RFC_MSG), headers, s);
    for (size_t i = 0; i < HF_ARRAY_LEN(wrong); i++) {
        headers[1] = wrong[i];
        memset(&res, 0, sizeof res);
        assert_false(provider_util_signed_b64(&req, SECRET_PATH, SIG_HEADER, &res));
        assert_outcome(&res, 401, "bad_signature");
        assert_non_null(strstr(res.detail, SIG_HEADER));
        if (*wrong[i])
            assert_null(strstr(res.detail, wrong[i]));
        ingest_result_free(&res);
    }

    /* The right signature over a different body. */
    headers[1] = RFC_MAC_B64;
    req.body_len = strlen(RFC_MSG) - 1;
    memset(&res, 0, sizeof res);
    assert_false(provider_util_signed_b64(&req, SECRET_PATH, SIG_HEADER, &res));
    assert_outcome(&res, 401, "bad_signature");
    ingest_result_free(&res);
    hf_secrets_free(s);
    hf_secrets_free(none);
}

/* The signature covers body_len bytes of a body that is not NUL-terminated. */
static void test_signed_b64_covers_exactly_the_body_bytes(void **state)
{
    (void)state;
    hf_secrets *s = pr_secrets(SECRET_PATH, "k", NULL);
    const unsigned char raw[] = {'{', '}', 0, 'x'};
    unsigned char *body = xmalloc(sizeof raw); /* exact size: ASan sees any read past it */
    memcpy(body, raw, sizeof raw);
    char sig[64];
    pr_hmac_b64("k", body, sizeof raw, sig);
    const char *headers[] = {SIG_HEADER, sig, NULL};
    ingest_request req = make_request("POST", body, sizeof raw, headers, s);
    ingest_result res = {0};
    assert_true(provider_util_signed_b64(&req, SECRET_PATH, SIG_HEADER, &res));
    assert_untouched(&res);
    req.body_len = 2;
    assert_false(provider_util_signed_b64(&req, SECRET_PATH, SIG_HEADER, &res));
    assert_outcome(&res, 401, "bad_signature");
    ingest_result_free(&res);
    free(body);
    hf_secrets_free(s);
}

/* ---- provider_util_parse_body ---- */

static void test_parse_body_parses_exactly_body_len_bytes(void **state)
{
    (void)state;
    static const char text[] = "{\"n\":1,\"s\":\"caf\xc3\xa9\"}";
    char *body = xmalloc(sizeof text - 1); /* not NUL-terminated */
    memcpy(body, text, sizeof text - 1);
    ingest_request req = make_request("POST", body, sizeof text - 1, NULL, NULL);
    ingest_result res = {0};
    hf_json root = provider_util_parse_body(&req, &res);
    assert_non_null(root);
    assert_untouched(&res);
    assert_true(hf_json_is_object(root));
    long long n = 0;
    assert_true(hf_json_int(hf_json_get(root, "n"), &n));
    assert_int_equal(n, 1);
    assert_string_equal(hf_json_str(hf_json_get(root, "s")), "caf\xc3\xa9");
    hf_json_free(root);
    free(body);

    /* Bytes after body_len are not part of the body. */
    req = make_request("POST", "[1,2]garbage", 5, NULL, NULL);
    root = provider_util_parse_body(&req, &res);
    assert_non_null(root);
    assert_int_equal(hf_json_len(root), 2);
    hf_json_free(root);
}

static void test_parse_body_malformed_is_400(void **state)
{
    (void)state;
    const struct {
        const char *body;
        size_t len;
    } bad[] = {
        {"{\"a\":", 5},     {"{}x", 3}, {"{\"a\":\"\xff\"}", 9},
        {"{\"a\":1}\0", 8}, {"   ", 3}, {"", 0},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(bad); i++) {
        ingest_request req = make_request("POST", bad[i].body, bad[i].len, NULL, NULL);
        ingest_result res = {0};
        assert_null(provider_util_parse_body(&req, &res));
        assert_outcome(&res, 400, "malformed");
        assert_true(res.detail[0] != '\0');
        ingest_result_free(&res);
    }
    /* An empty body may come with a NULL pointer. */
    ingest_request req = make_request("POST", NULL, 0, NULL, NULL);
    ingest_result res = {0};
    assert_null(provider_util_parse_body(&req, &res));
    assert_outcome(&res, 400, "malformed");
    assert_true(res.detail[0] != '\0');
    ingest_result_free(&res);
}

/* ---- provider_util_trim_blanks ---- */

static void test_trim_blanks(void **state)
{
    (void)state;
    const struct {
        const char *in;
        size_t skip; /* where the result starts */
        size_t len;
    } cases[] = {
        {"abc", 0, 3},
        {"  abc", 2, 3},
        {"abc \t ", 0, 3},
        {"\t a b \t", 2, 3}, /* inner blanks stay */
        {"", 0, 0},
        {" \t ", 3, 0},
        {"\nabc\r\n", 0, 6},         /* only spaces and tabs are blanks */
        {"\xc2\xa0x\xc2\xa0", 0, 5}, /* so is not U+00A0 */
        {" caf\xc3\xa9 ", 1, 5},     /* non-ASCII kept whole */
        {"sha256=ab\t", 0, 9},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        size_t len = 12345;
        const char *t = provider_util_trim_blanks(cases[i].in, &len);
        assert_ptr_equal(t, cases[i].in + cases[i].skip);
        assert_int_equal(len, cases[i].len);
    }
}

/* ---- provider_util_time_normalise ---- */

static void test_time_normalise_valid_times(void **state)
{
    (void)state;
    const struct {
        const char *in;
        const char *out;
    } cases[] = {
        {"1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000Z"},
        {"2017-06-21T01:15:39.902", "2017-06-21T01:15:39.902Z"}, /* no zone: UTC */
        {"2017-06-21T01:15:39.9Z", "2017-06-21T01:15:39.900Z"},
        {"2017-06-21T01:15:39.90Z", "2017-06-21T01:15:39.900Z"},
        {"2017-06-21T01:15:39.123456789Z", "2017-06-21T01:15:39.123Z"}, /* truncated to ms */
        {"2017-06-21T01:15:39.999999Z", "2017-06-21T01:15:39.999Z"},
        {"2024-02-29T12:00:00Z", "2024-02-29T12:00:00.000Z"},
        {"2000-02-29T23:59:59.999Z", "2000-02-29T23:59:59.999Z"},
        {"2017-06-21t01:15:39z", "2017-06-21T01:15:39.000Z"},
        {"2017-06-21 01:15:39Z", "2017-06-21T01:15:39.000Z"},
        {"2017-06-21T06:45:39+05:30", "2017-06-21T01:15:39.000Z"},
        {"2017-06-21T06:45:39+0530", "2017-06-21T01:15:39.000Z"},
        {"2017-06-21T06:15:39+05", "2017-06-21T01:15:39.000Z"},
        {"2017-06-20T20:15:39.5-05:00", "2017-06-21T01:15:39.500Z"},
        {"2024-01-01T00:30:00+01:00", "2023-12-31T23:30:00.000Z"}, /* across a year */
        {"2023-12-31T23:30:00-01:00", "2024-01-01T00:30:00.000Z"},
        {"2024-03-01T00:30:00+01:00", "2024-02-29T23:30:00.000Z"}, /* back to a leap day */
        {"2016-12-31T23:59:60Z", "2017-01-01T00:00:00.000Z"},      /* leap second */
        {"1969-07-20T20:17:40Z", "1969-07-20T20:17:40.000Z"},
        {"1000-01-01T00:00:00Z", "1000-01-01T00:00:00.000Z"},
        {"9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        char *t = provider_util_time_normalise(cases[i].in);
        assert_non_null(t);
        assert_string_equal(t, cases[i].out);
        free(t);
    }
}

static void test_time_normalise_rejects_what_does_not_parse(void **state)
{
    (void)state;
    assert_null(provider_util_time_normalise(NULL));
    const char *bad[] = {
        "",
        "yesterday",
        "2017-06-21",
        "2017-06-21T01:15",
        "2017-6-21T01:15:39Z",
        "17-06-21T01:15:39Z",
        "2017-06-21X01:15:39Z",
        "2017-06-21T01:15:39ZZ",
        "2017-06-21T01:15:39Z ",
        " 2017-06-21T01:15:39Z",
        "2017-06-21T01:15:39.Z",
        "2017-06-21T01:15:39+5:30",
        "2017-06-21T01:15:39+24:00",
        "2017-06-21T01:15:39+05:60",
        "2017-13-01T00:00:00Z",
        "2017-00-01T00:00:00Z",
        "2017-04-31T00:00:00Z",
        "2023-02-29T00:00:00Z", /* not a leap year */
        "1900-02-29T00:00:00Z", /* nor is 1900 */
        "2017-06-00T00:00:00Z",
        "2017-06-21T24:00:00Z",
        "2017-06-21T23:60:00Z",
        "2017-06-21T23:59:61Z",
        "0999-12-31T23:59:59Z",                   /* before year 1000 */
        "10000-01-01T00:00:00Z",                  /* five-digit year */
        "9999-12-31T23:59:59-01:00",              /* year 10000 in UTC */
        "1000-01-01T00:00:00+01:00",              /* year 999 in UTC */
        "2017-06-21T01:15:39\xef\xbc\xba",        /* a full-width Z */
        "\xd9\xa2\xd9\xa0\xd9\xa1\xd9\xa7-06-21", /* Arabic-Indic digits */
        "1497921339902",
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(bad); i++) {
        char *t = provider_util_time_normalise(bad[i]);
        if (t)
            fail_msg("\"%s\" normalised to \"%s\"", bad[i], t);
    }
}

/* ---- provider_util_time_from_ms ---- */

static void test_util_time_from_ms_in_range(void **state)
{
    (void)state;
    const struct {
        long long ms;
        const char *text;
    } cases[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {1458692752478LL, "2016-03-23T00:25:52.478Z"},
        {951827696789LL, "2000-02-29T12:34:56.789Z"},
        {1704067199999LL, "2023-12-31T23:59:59.999Z"},
        {253402300799999LL, "9999-12-31T23:59:59.999Z"},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        char *t = provider_util_time_from_ms(cases[i].ms);
        assert_non_null(t);
        assert_string_equal(t, cases[i].text);
        free(t);
    }
}

static void test_util_time_from_ms_out_of_range_is_null(void **state)
{
    (void)state;
    const long long bad[] = {
        -1, -1000, -2208988800000LL, LLONG_MIN, 253402300800000LL, 253402300800001LL, LLONG_MAX};
    for (size_t i = 0; i < HF_ARRAY_LEN(bad); i++) {
        char *t = provider_util_time_from_ms(bad[i]);
        if (t)
            fail_msg("%lld formatted as \"%s\"", bad[i], t);
    }
}

/* ---- provider_util_id_text ---- */

static void test_id_text(void **state)
{
    (void)state;
    static const char text[] =
        "{\"s\":\"abc\",\"e\":\"\",\"sp\":\" \",\"u\":\"caf\\u00e9\",\"n\":123,\"neg\":-7,"
        "\"f\":-1.50e3,\"big\":123456789012345678901234567890,\"t\":true,\"fa\":false,"
        "\"z\":null,\"o\":{\"id\":1},\"a\":[1]}";
    hf_json root = hf_json_parse(text, sizeof text - 1, NULL, 0);
    assert_non_null(root);
    assert_string_equal(provider_util_id_text(hf_json_get(root, "s")), "abc");
    assert_string_equal(provider_util_id_text(hf_json_get(root, "sp")), " ");
    assert_string_equal(provider_util_id_text(hf_json_get(root, "u")), "caf\xc3\xa9");
    /* Numbers: the text as received, not re-formatted. */
    assert_string_equal(provider_util_id_text(hf_json_get(root, "n")), "123");
    assert_string_equal(provider_util_id_text(hf_json_get(root, "neg")), "-7");
    assert_string_equal(provider_util_id_text(hf_json_get(root, "f")), "-1.50e3");
    assert_string_equal(provider_util_id_text(hf_json_get(root, "big")),
                        "123456789012345678901234567890");
    /* Anything else is no id. */
    const char *none[] = {"e", "t", "fa", "z", "o", "a", "missing"};
    for (size_t i = 0; i < HF_ARRAY_LEN(none); i++)
        assert_null(provider_util_id_text(hf_json_get(root, none[i])));
    assert_null(provider_util_id_text(NULL));
    hf_json_free(root);
}

/* ---- provider_util_payload ---- */

static void test_payload_keeps_containers_as_sent(void **state)
{
    (void)state;
    static const char text[] = "{ \"ev\" : {\"n\": 1.50E2, \"s\": \"a\\/b \\u00e9\"},\n"
                               "  \"list\": [ 1 ,2 ], \"str\": \"x\\\"y\", \"num\": 2.50,"
                               " \"t\": true, \"z\": null }";
    char *body = xmalloc(sizeof text - 1);
    memcpy(body, text, sizeof text - 1);
    ingest_request req = make_request("POST", body, sizeof text - 1, NULL, NULL);
    ingest_result res = {0};
    hf_json root = provider_util_parse_body(&req, &res);
    assert_non_null(root);

    char *whole = provider_util_payload(root);
    char *ev = provider_util_payload(hf_json_get(root, "ev"));
    char *list = provider_util_payload(hf_json_get(root, "list"));
    /* Scalars are not containers: their compact JSON. */
    char *str = provider_util_payload(hf_json_get(root, "str"));
    char *num = provider_util_payload(hf_json_get(root, "num"));
    char *t = provider_util_payload(hf_json_get(root, "t"));
    char *z = provider_util_payload(hf_json_get(root, "z"));

    /* The payloads are copies: they outlive the tree and the body. */
    hf_json_free(root);
    memset(body, 'X', sizeof text - 1);
    free(body);
    assert_string_equal(whole, text);
    assert_string_equal(ev, "{\"n\": 1.50E2, \"s\": \"a\\/b \\u00e9\"}");
    assert_string_equal(list, "[ 1 ,2 ]");
    assert_string_equal(str, "\"x\\\"y\"");
    assert_string_equal(num, "2.50");
    assert_string_equal(t, "true");
    assert_string_equal(z, "null");
    free(whole);
    free(ev);
    free(list);
    free(str);
    free(num);
    free(t);
    free(z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_returns_each_provider_by_its_id),
        cmocka_unit_test(test_find_rejects_unknown_ids),
        cmocka_unit_test(test_only_meta_accepts_get),
        cmocka_unit_test(test_derive_id_matches_known_digests),
        cmocka_unit_test(test_derive_id_is_stable_for_a_redelivery),
        cmocka_unit_test(test_derive_id_changes_with_any_field),
        cmocka_unit_test(test_derive_id_field_boundaries_are_unambiguous),
        cmocka_unit_test(test_derive_id_separator_inside_a_field_is_unambiguous),
        cmocka_unit_test(test_derive_id_format_is_provider_colon_32_hex),
        cmocka_unit_test(test_time_from_ms_formats_known_instants),
        cmocka_unit_test(test_time_from_ms_before_the_epoch),
        cmocka_unit_test(test_time_from_ms_clamps_to_four_digit_years),
        cmocka_unit_test(test_result_add_appends_in_order_with_fields),
        cmocka_unit_test(test_result_add_takes_ownership),
        cmocka_unit_test(test_result_add_grows_for_many_events),
        cmocka_unit_test(test_result_fail_drops_events_and_sets_outcome),
        cmocka_unit_test(test_result_fail_on_a_fresh_result),
        cmocka_unit_test(test_result_fail_truncates_a_long_detail),
        cmocka_unit_test(test_result_free_of_zeroed_and_used_results),
        cmocka_unit_test(test_require_post_accepts_only_post),
        cmocka_unit_test(test_load_keys_fails_503_naming_the_path),
        cmocka_unit_test(test_load_keys_current_then_previous),
        cmocka_unit_test(test_load_keys_keeps_binary_values),
        cmocka_unit_test(test_get_keys_counts_current_and_previous),
        cmocka_unit_test(test_header_goes_through_the_request_callback),
        cmocka_unit_test(test_header_without_a_lookup_is_null),
        cmocka_unit_test(test_body_text),
        cmocka_unit_test(test_hmac_matches_the_rfc_4231_vector),
        cmocka_unit_test(test_hmac_matches_tries_every_key),
        cmocka_unit_test(test_hmac_matches_rejects_wrong_lengths),
        cmocka_unit_test(test_hmac_matches_binary_key_and_body),
        cmocka_unit_test(test_hmac_matches_an_empty_body),
        cmocka_unit_test(test_secret_matches_exactly),
        cmocka_unit_test(test_secret_matches_current_or_previous),
        cmocka_unit_test(test_secret_matches_without_keys_and_with_binary),
        cmocka_unit_test(test_hmac_b64_matches),
        cmocka_unit_test(test_hmac_b64_matches_rejects_long_signatures),
        cmocka_unit_test(test_signed_b64_accepts_current_and_previous_keys),
        cmocka_unit_test(test_signed_b64_rejections),
        cmocka_unit_test(test_signed_b64_covers_exactly_the_body_bytes),
        cmocka_unit_test(test_parse_body_parses_exactly_body_len_bytes),
        cmocka_unit_test(test_parse_body_malformed_is_400),
        cmocka_unit_test(test_trim_blanks),
        cmocka_unit_test(test_time_normalise_valid_times),
        cmocka_unit_test(test_time_normalise_rejects_what_does_not_parse),
        cmocka_unit_test(test_util_time_from_ms_in_range),
        cmocka_unit_test(test_util_time_from_ms_out_of_range_is_null),
        cmocka_unit_test(test_id_text),
        cmocka_unit_test(test_payload_keeps_containers_as_sent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
