/* Unit tests for common/json: parse/serialise round trips, getters, raw number text, the nesting
 * limit, rejection of NUL, comments, invalid UTF-8 and truncated input, and string escaping. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

static hf_json parse_ok(const char *text)
{
    char err[256] = "";
    hf_json v = hf_json_parse(text, strlen(text), err, sizeof err);
    if (!v)
        fail_msg("rejected %s: %s", text, err);
    return v;
}

/* Parses len bytes, expecting rejection with want in the error; returns nothing. */
static void expect_reject_n(const char *text, size_t len, const char *want)
{
    char err[256] = "";
    hf_json v = hf_json_parse(text, len, err, sizeof err);
    if (v) {
        hf_json_free(v);
        fail_msg("accepted %.*s", (int)len, text);
    }
    if (!strstr(err, want))
        fail_msg("error \"%s\" does not contain \"%s\"", err, want);
    assert_null(strchr(err, '\n'));
}

static void expect_reject(const char *text, const char *want)
{
    expect_reject_n(text, strlen(text), want);
}

static char *serialize(hf_json v)
{
    hf_buf b = {0};
    hf_json_serialize(v, &b);
    return hf_buf_steal(&b);
}

static void test_round_trip_is_byte_identical_for_compact_input(void **state)
{
    (void)state;
    static const char *const docs[] = {
        "{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\\\"f\"},\"n\":-1.5e3}",
        "{\"s\":\"caf\xc3\xa9\"}",
        "[]",
        "{}",
        "[[],{},[{}],\"\",0,-0,1E+2]",
        "\"just a string\"",
        "12",
        "null",
        "{\"dup\":1,\"dup\":2}",
        "{\"emoji\":\"\xf0\x9f\x98\x80\",\"tab\":\"a\\tb\",\"back\":\"c:\\\\x\"}",
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(docs); i++) {
        hf_json v = parse_ok(docs[i]);
        char *out = serialize(v);
        assert_string_equal(out, docs[i]);
        free(out);
        hf_json_free(v);
    }
}

static void test_round_trip_compacts_white_space_and_decodes_escapes(void **state)
{
    (void)state;
    hf_json v = parse_ok(" {\n \"k\" : [ 1 , \"\\u00e9\\/\\u0041\" ] ,\t\"z\":{ } }\r\n");
    char *out = serialize(v);
    assert_string_equal(out, "{\"k\":[1,\"\xc3\xa9/A\"],\"z\":{}}");
    /* The output parses back to the same output. */
    hf_json again = parse_ok(out);
    char *out2 = serialize(again);
    assert_string_equal(out2, out);
    free(out2);
    hf_json_free(again);
    free(out);
    hf_json_free(v);
}

static void test_getters(void **state)
{
    (void)state;
    hf_json v = parse_ok("{\"event\":{\"id\":\"evt_1\",\"n\":42,\"f\":1.5,\"t\":true,\"no\":false,"
                         "\"nil\":null,\"list\":[\"x\",{\"y\":\"z\"}]}}");
    assert_true(hf_json_is_object(v));
    assert_false(hf_json_is_array(v));
    hf_json ev = hf_json_get(v, "event");
    assert_non_null(ev);
    assert_int_equal(hf_json_len(ev), 7);
    assert_string_equal(hf_json_str(hf_json_get(ev, "id")), "evt_1");
    assert_string_equal(hf_json_str(hf_json_path(v, "event", "id", (const char *)NULL)), "evt_1");
    assert_null(hf_json_path(v, "event", "missing", "deeper", (const char *)NULL));
    assert_ptr_equal(hf_json_path(v, (const char *)NULL), v);
    assert_null(hf_json_get(ev, "ID")); /* keys are case-sensitive */
    assert_null(hf_json_str(hf_json_get(ev, "n")));
    long long n = 0;
    assert_true(hf_json_int(hf_json_get(ev, "n"), &n));
    assert_int_equal(n, 42);
    n = 7;
    assert_false(hf_json_int(hf_json_get(ev, "f"), &n));
    assert_false(hf_json_int(hf_json_get(ev, "id"), &n));
    assert_int_equal(n, 7);
    assert_string_equal(hf_json_scalar_text(hf_json_get(ev, "id")), "evt_1");
    assert_string_equal(hf_json_scalar_text(hf_json_get(ev, "f")), "1.5");
    assert_string_equal(hf_json_scalar_text(hf_json_get(ev, "t")), "true");
    assert_string_equal(hf_json_scalar_text(hf_json_get(ev, "no")), "false");
    assert_null(hf_json_scalar_text(hf_json_get(ev, "nil")));
    assert_null(hf_json_scalar_text(hf_json_get(ev, "list")));
    assert_null(hf_json_number_text(hf_json_get(ev, "id")));
    hf_json list = hf_json_get(ev, "list");
    assert_true(hf_json_is_array(list));
    assert_int_equal(hf_json_len(list), 2);
    assert_string_equal(hf_json_str(hf_json_at(list, 0)), "x");
    assert_string_equal(hf_json_str(hf_json_get(hf_json_at(list, 1), "y")), "z");
    assert_null(hf_json_at(list, 2));
    assert_null(hf_json_at(ev, 0)); /* not an array */
    const char *key = NULL;
    assert_string_equal(hf_json_str(hf_json_member(ev, 0, &key)), "evt_1");
    assert_string_equal(key, "id");
    assert_non_null(hf_json_member(ev, 6, &key));
    assert_string_equal(key, "list");
    assert_null(hf_json_member(ev, 7, &key));
    assert_null(hf_json_member(list, 0, &key)); /* not an object */
    assert_non_null(hf_json_member(ev, 1, NULL));
    /* Everything is NULL-safe. */
    assert_null(hf_json_get(NULL, "x"));
    assert_null(hf_json_str(NULL));
    assert_false(hf_json_int(NULL, &n));
    assert_int_equal(hf_json_len(NULL), 0);
    assert_false(hf_json_is_object(NULL));
    assert_null(hf_json_get(hf_json_get(ev, "id"), "x")); /* a string has no members */
    hf_json_free(v);
    hf_json_free(NULL);
}

/* Integers take a path without strtoll/strtod: it must give exactly what they give. */
static void check_number_like_libc(const char *text)
{
    char doc[64], err[128];
    snprintf(doc, sizeof doc, "[%s]", text);
    hf_json v = hf_json_parse(doc, strlen(doc), err, sizeof err);
    assert_non_null(v);
    yajl_val n = hf_json_at(v, 0);
    assert_true(YAJL_IS_NUMBER(n));
    char *end;
    errno = 0;
    long long want_i = strtoll(text, &end, 10);
    bool int_ok = errno == 0 && *end == '\0';
    errno = 0;
    double want_d = strtod(text, &end);
    bool double_ok = errno == 0 && *end == '\0';
    assert_int_equal(!!(n->u.number.flags & YAJL_NUMBER_INT_VALID), int_ok);
    assert_int_equal(!!(n->u.number.flags & YAJL_NUMBER_DOUBLE_VALID), double_ok);
    if (int_ok)
        assert_true(n->u.number.i == want_i);
    if (double_ok) /* bit for bit: -0.0 is not 0.0 */
        assert_memory_equal(&n->u.number.d, &want_d, sizeof want_d);
    assert_string_equal(n->u.number.r, text);
    hf_json_free(v);
}

static void test_integers_parse_exactly_like_libc(void **state)
{
    (void)state;
    static const char *const fixed[] = {"0",
                                        "-0",
                                        "7",
                                        "-7",
                                        "1700000000000",
                                        "9007199254740993",
                                        "-9007199254740993",
                                        "999999999999999999",
                                        "-999999999999999999",
                                        "1000000000000000000",
                                        "9223372036854775807",
                                        "9223372036854775808",
                                        "-9223372036854775808",
                                        "-9223372036854775809",
                                        "123456789012345678901234567890",
                                        "1.5",
                                        "-0.0",
                                        "1e3",
                                        "2E-3"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        check_number_like_libc(fixed[i]);
    unsigned seed = 12345;
    for (int round = 0; round < 20000; round++) {
        char text[24];
        size_t len = 0;
        seed = seed * 1103515245u + 12345u;
        if (seed & 0x10000)
            text[len++] = '-';
        size_t digits = 1 + (seed >> 20) % 19;
        for (size_t d = 0; d < digits; d++) {
            seed = seed * 1103515245u + 12345u;
            char c = (char)('0' + (seed >> 16) % 10);
            text[len++] = d == 0 && digits > 1 && c == '0' ? '1' : c;
        }
        text[len] = '\0';
        check_number_like_libc(text);
    }
}

static void test_number_raw_text_is_preserved(void **state)
{
    (void)state;
    hf_json v = parse_ok("{\"time\":1462216307945,\"amount\":1.50,\"exp\":2.50E-3,\"neg\":-0.0,"
                         "\"big\":123456789012345678901234567890,\"huge\":1e400}");
    long long n = 0;
    assert_true(hf_json_int(hf_json_get(v, "time"), &n));
    assert_true(n == 1462216307945LL);
    assert_string_equal(hf_json_number_text(hf_json_get(v, "time")), "1462216307945");
    assert_string_equal(hf_json_number_text(hf_json_get(v, "amount")), "1.50");
    assert_string_equal(hf_json_scalar_text(hf_json_get(v, "amount")), "1.50");
    assert_string_equal(hf_json_number_text(hf_json_get(v, "exp")), "2.50E-3");
    assert_string_equal(hf_json_number_text(hf_json_get(v, "neg")), "-0.0");
    /* Past long long: not an integer, but the digits survive untouched. */
    assert_false(hf_json_int(hf_json_get(v, "big"), &n));
    assert_string_equal(hf_json_number_text(hf_json_get(v, "big")),
                        "123456789012345678901234567890");
    assert_string_equal(hf_json_number_text(hf_json_get(v, "huge")), "1e400");
    char *out = serialize(v);
    assert_string_equal(out, "{\"time\":1462216307945,\"amount\":1.50,\"exp\":2.50E-3,"
                             "\"neg\":-0.0,\"big\":123456789012345678901234567890,"
                             "\"huge\":1e400}");
    free(out);
    hf_json_free(v);
}

/* depth levels of '[' (or '{"k":') then the closers. */
static char *nested(int depth, bool objects)
{
    hf_buf b = {0};
    for (int i = 0; i < depth; i++)
        hf_buf_puts(&b, objects ? "{\"k\":" : "[");
    hf_buf_puts(&b, "1");
    for (int i = 0; i < depth; i++)
        hf_buf_putc(&b, objects ? '}' : ']');
    return hf_buf_steal(&b);
}

static void test_nesting_up_to_the_limit_is_accepted(void **state)
{
    (void)state;
    for (int objects = 0; objects <= 1; objects++) {
        char *text = nested(HF_JSON_MAX_DEPTH, objects);
        hf_json v = parse_ok(text);
        hf_json_free(v);
        free(text);
    }
}

static void test_nesting_deeper_than_the_limit_is_rejected(void **state)
{
    (void)state;
    char want[64];
    snprintf(want, sizeof want, "nested deeper than %d levels", HF_JSON_MAX_DEPTH);
    char *text = nested(HF_JSON_MAX_DEPTH + 1, false);
    expect_reject(text, want);
    char err[256];
    assert_null(hf_json_parse(text, strlen(text), err, sizeof err));
    char at[32];
    snprintf(at, sizeof at, "at offset %d", HF_JSON_MAX_DEPTH); /* the 65th '[' */
    assert_non_null(strstr(err, at));
    free(text);
    text = nested(HF_JSON_MAX_DEPTH + 1, true);
    expect_reject(text, want);
    free(text);
    /* Far deeper input must be refused, not overflow the stack. */
    text = nested(200000, false);
    expect_reject(text, want);
    free(text);
}

static void test_brackets_inside_strings_do_not_count_as_nesting(void **state)
{
    (void)state;
    hf_buf b = {0};
    hf_buf_puts(&b, "[\"");
    for (int i = 0; i < 200; i++)
        hf_buf_puts(&b, "[{\\\"");
    hf_buf_puts(&b, "\"]");
    hf_json v = parse_ok(b.data);
    assert_int_equal(strlen(hf_json_str(hf_json_at(v, 0))), 200 * 3);
    hf_json_free(v);
    hf_buf_free(&b);
}

static void test_comments_are_rejected_and_cannot_hide_nesting(void **state)
{
    (void)state;
    expect_reject("[1] /* note */", "comments are not allowed");
    expect_reject("// note\n[1]", "comments are not allowed");
    /* A quote inside a comment would make a bracket counter think it is inside a string. */
    hf_buf b = {0};
    hf_buf_puts(&b, "[/*\"*/");
    for (int i = 0; i < 100000; i++)
        hf_buf_putc(&b, '[');
    for (int i = 0; i < 100000; i++)
        hf_buf_putc(&b, ']');
    hf_buf_puts(&b, "/*\"*/]");
    expect_reject(b.data, "comments are not allowed");
    hf_buf_free(&b);
    /* A slash inside a string is just a character. */
    hf_json v = parse_ok("[\"a/*b*/c//d\"]");
    assert_string_equal(hf_json_str(hf_json_at(v, 0)), "a/*b*/c//d");
    hf_json_free(v);
}

static void test_embedded_nul_is_rejected(void **state)
{
    (void)state;
    expect_reject_n("{\"a\":\"x\0y\"}", 11, "NUL byte at offset 7");
    expect_reject_n("[1]\0", 4, "NUL byte at offset 3");
    /* An escaped NUL would cut the decoded C string short (and merge distinct ids). */
    expect_reject("[\"evt_1\\u0000x\"]", "\\u0000");
    expect_reject("{\"k\\u0000\":1}", "\\u0000");
    /* An escaped backslash followed by the text u0000 is fine. */
    hf_json v = parse_ok("[\"\\\\u0000\"]");
    assert_string_equal(hf_json_str(hf_json_at(v, 0)), "\\u0000");
    hf_json_free(v);
}

static void expect_raw(hf_json v, const char *want)
{
    size_t len = 0;
    const char *raw = hf_json_raw(v, &len);
    assert_non_null(raw);
    if (len != strlen(want) || memcmp(raw, want, len) != 0)
        fail_msg("raw \"%.*s\" != \"%s\"", (int)len, raw, want);
}

static void test_raw_text_of_objects_and_arrays(void **state)
{
    (void)state;
    const char *text = " { \"a\" : [1, {\"b\":\"}]\\\"\"} ,[ ] ] ,\n\"c\":{},\"d\":\"x\"}\t";
    hf_json v = hf_json_parse(text, strlen(text), NULL, 0);
    assert_non_null(v);
    expect_raw(v, "{ \"a\" : [1, {\"b\":\"}]\\\"\"} ,[ ] ] ,\n\"c\":{},\"d\":\"x\"}");
    expect_raw(hf_json_get(v, "a"), "[1, {\"b\":\"}]\\\"\"} ,[ ] ]");
    expect_raw(hf_json_at(hf_json_get(v, "a"), 1), "{\"b\":\"}]\\\"\"}");
    expect_raw(hf_json_at(hf_json_get(v, "a"), 2), "[ ]");
    expect_raw(hf_json_get(v, "c"), "{}");
    size_t len = 7;
    assert_null(hf_json_raw(hf_json_get(v, "d"), &len));
    assert_null(hf_json_raw(hf_json_at(hf_json_get(v, "a"), 0), &len));
    assert_null(hf_json_raw(NULL, &len));
    hf_json_free(v);
    /* A scalar root has no raw text; an array root does. */
    v = parse_ok("12");
    assert_null(hf_json_raw(v, &len));
    hf_json_free(v);
    v = parse_ok("[[[]]]");
    expect_raw(hf_json_at(hf_json_at(v, 0), 0), "[]");
    hf_json_free(v);
}

static void test_input_need_not_be_nul_terminated(void **state)
{
    (void)state;
    const char text[] = {'[', '1', ',', '2', ']', 'x', 'x'};
    char err[256];
    hf_json v = hf_json_parse(text, 5, err, sizeof err);
    assert_non_null(v);
    assert_int_equal(hf_json_len(v), 2);
    hf_json_free(v);
}

static void test_invalid_utf8_is_rejected(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "[\"\xff\"]",               /* never valid */
        "[\"\x80\"]",               /* a lone continuation byte */
        "[\"\xe2\x82\"]",           /* truncated sequence */
        "[\"\xc3\"]",               /* truncated before the closing quote */
        "{\"\xfe\":1}",             /* in a key */
        "[\"\xc0\xaf\"]",           /* overlong '/' */
        "[\"\xe0\x80\xaf\"]",       /* overlong in three bytes */
        "[\"\xed\xa0\x80\"]",       /* an encoded UTF-16 surrogate */
        "[\"\xf4\x90\x80\x80\"]",   /* past U+10FFFF */
        "[\"\\udc00\"]",            /* a lone low surrogate escape decodes to one */
        "{\"k\":{\"\xc1\xbf\":1}}", /* overlong, in a nested key */
        "[1]\xff",                  /* outside a string */
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(bad); i++) {
        char err[256] = "";
        hf_json v = hf_json_parse(bad[i], strlen(bad[i]), err, sizeof err);
        if (v) {
            hf_json_free(v);
            fail_msg("accepted invalid UTF-8 in case %zu", i);
        }
        assert_true(err[0] != '\0');
    }
    /* Valid multi-byte text of every length, at the edges of each range. */
    hf_json v = parse_ok("[\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf"
                         "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\",\"\\ud83d\\ude00\"]");
    assert_string_equal(hf_json_str(hf_json_at(v, 1)), "\xf0\x9f\x98\x80");
    hf_json_free(v);
}

static void test_truncated_and_malformed_input_is_rejected(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",           " ",         "{",           "{\"a\"",     "{\"a\":", "{\"a\":1", "[1,2",
        "[\"abc",     "\"abc",     "[1,]",        "{\"a\":1,}", "{a:1}",   "['a']",    "[01]",
        "[1.]",       "[.5]",      "[+1]",        "[NaN]",      "[tru]",   "[1] [2]",  "{} x",
        "[\"a\tb\"]", "[\"\\x\"]", "[\"\\u12\"]", "}",          "]",
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(bad); i++)
        expect_reject(bad[i], "JSON");
    expect_reject("[1,2", "premature EOF");
    /* Every proper prefix of a valid document is rejected. */
    const char *doc = "{\"a\":[1,{\"b\":\"c\"}],\"d\":true}";
    for (size_t n = 0; n < strlen(doc); n++)
        expect_reject_n(doc, n, "JSON");
}

static void test_error_buffer_is_optional(void **state)
{
    (void)state;
    assert_null(hf_json_parse("[", 1, NULL, 0));
    char tiny[8];
    assert_null(hf_json_parse("[", 1, tiny, sizeof tiny));
    assert_int_equal(strlen(tiny), sizeof tiny - 1);
}

static void test_string_escaping(void **state)
{
    (void)state;
    hf_buf b = {0};
    const char raw[] = "q\"b\\s/n\nr\rt\tc\x01\x1f"
                       "del\x7f"
                       "\xc3\xa9";
    hf_json_append_string(&b, raw, sizeof raw - 1);
    assert_string_equal(b.data, "\"q\\\"b\\\\s/n\\nr\\rt\\tc\\u0001\\u001fdel\x7f\xc3\xa9\"");
    /* What was written parses back to the original bytes. */
    hf_json v = parse_ok(b.data);
    assert_string_equal(hf_json_str(v), raw);
    hf_json_free(v);
    hf_buf_reset(&b);
    /* Binary-safe: the length counts, including an embedded NUL. */
    hf_json_append_string(&b, "a\0b", 3);
    assert_string_equal(b.data, "\"a\\u0000b\"");
    hf_buf_reset(&b);
    hf_json_append_cstr(&b, "");
    assert_string_equal(b.data, "\"\"");
    hf_buf_reset(&b);
    hf_json_append_cstr(&b, "x");
    hf_json_append_cstr(&b, "y");
    assert_string_equal(b.data, "\"x\"\"y\"");
    hf_buf_free(&b);
}

/* Every byte value at every position of strings around the eight-byte steps the escaper scans
 * in, against a byte-by-byte reference. */
static void reference_escape(hf_buf *b, const unsigned char *s, size_t n)
{
    hf_buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\')
            hf_buf_printf(b, "\\%c", c);
        else if (c == '\n')
            hf_buf_puts(b, "\\n");
        else if (c == '\r')
            hf_buf_puts(b, "\\r");
        else if (c == '\t')
            hf_buf_puts(b, "\\t");
        else if (c < 0x20)
            hf_buf_printf(b, "\\u%04x", c);
        else
            hf_buf_putc(b, (char)c);
    }
    hf_buf_putc(b, '"');
}

static void test_string_escaping_every_byte_at_every_position(void **state)
{
    (void)state;
    hf_buf got = {0}, want = {0};
    unsigned char s[19];
    for (size_t len = 1; len <= sizeof s; len++) {
        for (size_t pos = 0; pos < len; pos++) {
            for (int c = 0; c < 256; c++) {
                memset(s, 'a', len);
                s[pos] = (unsigned char)c;
                s[len - 1 - pos] = c == '"' ? '\\' : s[len - 1 - pos]; /* sometimes two */
                hf_buf_reset(&got);
                hf_buf_reset(&want);
                hf_json_append_string(&got, (const char *)s, len);
                reference_escape(&want, s, len);
                if (got.len != want.len || memcmp(got.data, want.data, got.len) != 0)
                    fail_msg("byte 0x%02x at %zu of %zu: %s != %s", c, pos, len, got.data,
                             want.data);
            }
        }
    }
    hf_buf_free(&got);
    hf_buf_free(&want);
}

static void test_serialize_escapes_keys_and_values(void **state)
{
    (void)state;
    hf_json v = parse_ok("{\"k\\\"ey\\n\":\"v\\\\al\\u0001ue\"}");
    char *out = serialize(v);
    assert_string_equal(out, "{\"k\\\"ey\\n\":\"v\\\\al\\u0001ue\"}");
    free(out);
    hf_json_free(v);
    out = serialize(NULL);
    assert_string_equal(out, "null");
    free(out);
}

/* An unpaired \ud800-\udbff escape is refused, not decoded to "?" or a wrong code point. */
static void test_unpaired_high_surrogate_escapes_are_rejected(void **state)
{
    (void)state;
    /* A lone low surrogate is refused (test_invalid_utf8_is_rejected); a high one must be too,
     * not become '?' (which "\ud800" and "?" would then share), nor, followed by an escape
     * that is not a low surrogate, be folded with it into some other character: "\ud800\u0041"
     * came out as U+10041, the same string as the proper pair "\ud800\udc41". */
    static const char *const bad[] = {
        "[\"\\ud800\"]",        /* lone, at the end of the string */
        "[\"\\udbffx\"]",       /* lone, before a plain character */
        "{\"\\ud800\":1}",      /* lone, in a key */
        "[\"\\ud800\\u0041\"]", /* followed by an escaped 'A' */
        "[\"\\ud800\\ud800\"]", /* followed by another high surrogate */
        "[\"\\ud83d\\n\"]",     /* followed by another escape */
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(bad); i++) {
        char err[256] = "";
        hf_json v = hf_json_parse(bad[i], strlen(bad[i]), err, sizeof err);
        if (v) {
            hf_buf b = {0};
            hf_json_serialize(v, &b);
            char shown[64];
            snprintf(shown, sizeof shown, "%s", b.data);
            hf_buf_free(&b);
            hf_json_free(v);
            fail_msg("accepted %s as %s", bad[i], shown);
        }
        assert_true(err[0] != '\0');
    }
    /* Proper pairs still decode. */
    hf_json v = parse_ok("[\"\\ud800\\udc41\",\"\\udbff\\udfff\"]");
    assert_string_equal(hf_json_str(hf_json_at(v, 0)), "\xf0\x90\x81\x81");
    assert_string_equal(hf_json_str(hf_json_at(v, 1)), "\xf4\x8f\xbf\xbf");
    hf_json_free(v);
}

/* Repeated members are kept by the parser; these say which repeats (for refusing them). */
static void test_repeated_members(void **state)
{
    (void)state;
    const char *text = "{\"a\":1,\"b\":2,\"a\":3,\"b\":4}";
    hf_json v = hf_json_parse(text, strlen(text), NULL, 0);
    assert_non_null(v);
    assert_false(hf_json_member_repeats(v, 0));
    assert_false(hf_json_member_repeats(v, 1));
    assert_true(hf_json_member_repeats(v, 2));
    assert_true(hf_json_member_repeats(v, 3));
    assert_false(hf_json_member_repeats(v, 4)); /* past the end */
    assert_string_equal(hf_json_repeated_key(v), "a");
    hf_json_free(v);
    text = "{\"a\":{\"x\":1,\"x\":2}}";
    v = hf_json_parse(text, strlen(text), NULL, 0);
    assert_non_null(v);
    assert_null(hf_json_repeated_key(v)); /* only the object's own members */
    assert_string_equal(hf_json_repeated_key(hf_json_get(v, "a")), "x");
    assert_null(hf_json_repeated_key(NULL));
    hf_json_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repeated_members),
        cmocka_unit_test(test_round_trip_is_byte_identical_for_compact_input),
        cmocka_unit_test(test_round_trip_compacts_white_space_and_decodes_escapes),
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_number_raw_text_is_preserved),
        cmocka_unit_test(test_integers_parse_exactly_like_libc),
        cmocka_unit_test(test_nesting_up_to_the_limit_is_accepted),
        cmocka_unit_test(test_nesting_deeper_than_the_limit_is_rejected),
        cmocka_unit_test(test_brackets_inside_strings_do_not_count_as_nesting),
        cmocka_unit_test(test_comments_are_rejected_and_cannot_hide_nesting),
        cmocka_unit_test(test_embedded_nul_is_rejected),
        cmocka_unit_test(test_input_need_not_be_nul_terminated),
        cmocka_unit_test(test_raw_text_of_objects_and_arrays),
        cmocka_unit_test(test_invalid_utf8_is_rejected),
        cmocka_unit_test(test_truncated_and_malformed_input_is_rejected),
        cmocka_unit_test(test_error_buffer_is_optional),
        cmocka_unit_test(test_string_escaping),
        cmocka_unit_test(test_string_escaping_every_byte_at_every_position),
        cmocka_unit_test(test_serialize_escapes_keys_and_values),
        cmocka_unit_test(test_unpaired_high_surrogate_escapes_are_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
