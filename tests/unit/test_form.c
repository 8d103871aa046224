/* test_form: x-www-form-urlencoded parsing, canonical ordering, UTF-8 checks and JSON output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "providers/form.h"
#include "util.h"

static void parse(ingest_form *f, const char *s)
{
    ingest_form_parse(f, s, strlen(s));
}

static void assert_param(const ingest_form *f, size_t i, const char *name, const char *value,
                         size_t value_len)
{
    assert_true(i < f->n);
    assert_int_equal(f->params[i].name_len, strlen(name));
    assert_memory_equal(f->params[i].name, name, strlen(name));
    assert_int_equal(f->params[i].value_len, value_len);
    assert_memory_equal(f->params[i].value, value, value_len);
}

static void test_decoding(void **state)
{
    ingest_form f = {0};
    parse(&f, "a=1&b=x+y%2Bz&&c&d=&%41%62=%e2%82%AC&e=100%&f=%zz%4&=v&g=a=b");
    assert_int_equal(f.n, 9);
    assert_param(&f, 0, "a", "1", 1);
    assert_param(&f, 1, "b", "x y+z", 5);
    assert_param(&f, 2, "c", "", 0);
    assert_param(&f, 3, "d", "", 0);
    assert_param(&f, 4, "Ab", "\xe2\x82\xac", 3);
    assert_param(&f, 5, "e", "100%", 4);
    assert_param(&f, 6, "f", "%zz%4", 5);
    assert_param(&f, 7, "", "v", 1);
    assert_param(&f, 8, "g", "a=b", 3);
    assert_string_equal(ingest_form_get(&f, "g"), "a=b");
    assert_null(ingest_form_get(&f, "missing"));
    assert_null(ingest_form_get(&f, "A"));
    ingest_form_free(&f);
    assert_int_equal(f.n, 0);

    /* Embedded NUL survives with its length; the text check refuses it. */
    parse(&f, "n=a%00b");
    assert_param(&f, 0, "n", "a\0b", 3);
    char err[64];
    assert_false(ingest_form_check_text(&f, err, sizeof err));
    assert_string_equal(err, "parameter 1 contains a NUL byte");
    ingest_form_free(&f);

    /* Empty and NULL input. */
    ingest_form_parse(&f, NULL, 0);
    parse(&f, "");
    parse(&f, "&&&");
    assert_int_equal(f.n, 0);
    ingest_form_free(&f);
}

static void test_sort_dedup(void **state)
{
    ingest_form f = {0};
    parse(&f, "b=2&a=z&B=1&ab=0&a=y&a=z&%C3%A9=1&a=");
    ingest_form_sort_dedup(&f);
    /* Byte order: upper case before lower case, a prefix first, UTF-8 after ASCII. */
    assert_int_equal(f.n, 7);
    assert_param(&f, 0, "B", "1", 1);
    assert_param(&f, 1, "a", "", 0);
    assert_param(&f, 2, "a", "y", 1);
    assert_param(&f, 3, "a", "z", 1);
    assert_param(&f, 4, "ab", "0", 1);
    assert_param(&f, 5, "b", "2", 1);
    assert_param(&f, 6, "\xc3\xa9", "1", 1);
    ingest_form_free(&f);
}

static void test_to_json(void **state)
{
    ingest_form f = {0};
    parse(&f, "To=%2B1&Media=b&Body=say+%22hi%22%0A&Media=a&Media=b");
    char err[64];
    assert_true(ingest_form_check_text(&f, err, sizeof err));
    hf_buf out = {0};
    ingest_form_to_json(&f, &out);
    assert_string_equal(
        out.data, "{\"Body\":\"say \\\"hi\\\"\\n\",\"Media\":[\"b\",\"a\",\"b\"],\"To\":\"+1\"}");
    /* The pairs themselves keep the order received. */
    assert_param(&f, 0, "To", "+1", 2);
    hf_buf_free(&out);
    ingest_form_free(&f);

    ingest_form_to_json(&f, &out);
    assert_string_equal(out.data, "{}");
    hf_buf_free(&out);
}

static void test_utf8(void **state)
{
    assert_true(ingest_utf8_valid("", 0));
    assert_true(ingest_utf8_valid("plain", 5));
    assert_true(ingest_utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x91\x8b", 9));
    assert_true(ingest_utf8_valid("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF */
    assert_false(ingest_utf8_valid("\xc0\xaf", 2));         /* overlong '/' */
    assert_false(ingest_utf8_valid("\xe0\x80\xaf", 3));     /* overlong */
    assert_false(ingest_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(ingest_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(ingest_utf8_valid("\xe2\x82", 2));         /* truncated */
    assert_false(ingest_utf8_valid("\x80", 1));
    assert_false(ingest_utf8_valid("\xff", 1));

    ingest_form f = {0};
    parse(&f, "ok=1&bad=%FF");
    char err[64];
    assert_false(ingest_form_check_text(&f, err, sizeof err));
    assert_string_equal(err, "parameter 2 is not valid UTF-8");
    ingest_form_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decoding),
        cmocka_unit_test(test_sort_dedup),
        cmocka_unit_test(test_to_json),
        cmocka_unit_test(test_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
