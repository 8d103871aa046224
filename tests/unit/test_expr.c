/* test_expr: the workflow expression language — every operator, precedence, paths, type rules,
 * truthiness, templates (exact vs interpolated), error positions and the bounds. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expr.h"
#include "json.h"
#include "util.h"

static const char ctx_json[] =
    "{\"event\": {\"id\": \"meta:m_1\", \"provider\": \"meta\", \"event\": \"message\","
    "  \"account\": \"104857362981245\","
    "  \"payload\": {\"amount\": 12.5, \"count\": 3, \"zero\": 0, \"fzero\": 0.0,"
    "    \"big\": 12345678901234567890, \"neg\": -4, \"name\": \"Dana\", \"empty\": \"\","
    "    \"nothing\": null, \"flag\": true, \"off\": false, \"zero_text\": \"0\","
    "    \"items\": [{\"sku\": \"A1\", \"qty\": 2}, {\"sku\": \"B2\", \"qty\": 1}],"
    "    \"tags\": [\"vip\", \"gold\"], \"nums\": [1, 2.0, 3], \"emptyarr\": [], \"emptyobj\": {},"
    "    \"first name\": \"Dana F\", \"$message\": \"m1\", \"quote\\\"key\": \"q\","
    "    \"obj\": {\"b\": 1, \"a\": [1, 2]}, \"obj2\": {\"a\": [1, 2], \"b\": 1.0},"
    "    \"text\": \"Is my order ready for pickup?\", \"ten\": \"10\", \"nine\": \"9\"}},"
    " \"tenant\": {\"id\": \"t1\", \"slug\": \"acme\", \"name\": \"Acme Laundry\","
    "  \"environment\": \"production\"},"
    " \"nodes\": {\"crm\": {\"status\": \"succeeded\", \"output\": {\"id\": \"1246965\","
    "   \"properties\": {\"lifecyclestage\": \"customer\"}}},"
    "   \"vip\": {\"status\": \"succeeded\", \"output\": {\"result\": true}, \"branch\": true}}}";

static hf_json ctx;

static int setup(void **state)
{
    (void)state;
    char err[256];
    ctx = hf_json_parse(ctx_json, strlen(ctx_json), err, sizeof err);
    if (!ctx)
        fail_msg("context: %s", err);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hf_json_free(ctx);
    return 0;
}

static wf_expr *parse_ok(const char *src)
{
    char err[256] = "";
    wf_expr *e = wf_expr_parse(src, err, sizeof err);
    if (!e)
        fail_msg("%s: %s", src, err);
    return e;
}

/* src's value as compact JSON; asserts it parses and evaluates. Caller frees. */
static char *ev(const char *src)
{
    wf_expr *e = parse_ok(src);
    hf_buf out = {0};
    char err[256] = "";
    if (wf_expr_eval_json(e, ctx, &out, err, sizeof err) != 0)
        fail_msg("%s: eval: %s", src, err);
    wf_expr_free(e);
    return out.data ? hf_buf_steal(&out) : xstrdup("");
}

static void expect(const char *src, const char *want)
{
    char *got = ev(src);
    if (strcmp(got, want) != 0)
        fail_msg("%s: got %s, want %s", src, got, want);
    free(got);
}

static bool truth(const char *src)
{
    wf_expr *e = parse_ok(src);
    bool v = true;
    char err[256] = "";
    if (wf_expr_eval_bool(e, ctx, &v, err, sizeof err) != 0)
        fail_msg("%s: eval: %s", src, err);
    wf_expr_free(e);
    return v;
}

#define expect_true(src) assert_true(truth(src))
#define expect_false(src) assert_false(truth(src))

static void expect_parse_error(const char *src, const char *want)
{
    char err[256] = "";
    wf_expr *e = wf_expr_parse(src, err, sizeof err);
    if (e) {
        wf_expr_free(e);
        fail_msg("%s: parsed, want error %s", src, want);
    }
    if (strcmp(err, want) != 0)
        fail_msg("%s: error '%s', want '%s'", src, err, want);
}

/* ---- values ------------------------------------------------------------------------------ */

static void test_literals(void **state)
{
    (void)state;
    expect("'pickup'", "\"pickup\"");
    expect("\"pickup\"", "\"pickup\"");
    expect("'it\\'s'", "\"it's\"");
    expect("\"say \\\"hi\\\"\"", "\"say \\\"hi\\\"\"");
    expect("'a\\\\b\\/c'", "\"a\\\\b/c\"");
    expect("'line\\nnext\\ttab\\r'", "\"line\\nnext\\ttab\\r\"");
    expect("'caf\\u00e9'", "\"caf\xc3\xa9\"");
    expect("'\\ud83d\\ude00'", "\"\xf0\x9f\x98\x80\"");
    expect("'caf\xc3\xa9'", "\"caf\xc3\xa9\"");
    expect("''", "\"\"");
    expect("42", "42");
    expect("12.50", "12.5");
    expect("0.1", "0.1");
    expect("1e3", "1000");
    expect("2.5E-1", "0.25");
    expect("007", "7");
    expect("9223372036854775807", "9223372036854775807");
    expect("true", "true");
    expect("false", "false");
    expect("null", "null");
    expect("[]", "[]");
    expect("[1, 'a', null, [true], event.payload.tags]",
           "[1,\"a\",null,[true],[\"vip\",\"gold\"]]");
}

static void test_paths(void **state)
{
    (void)state;
    expect("event.payload.amount", "12.5");
    expect("event.payload.big", "12345678901234567890"); /* the context's own spelling */
    expect("nodes.crm.output.properties.lifecyclestage", "\"customer\"");
    expect("tenant.slug", "\"acme\"");
    expect("event.payload.items[0].sku", "\"A1\"");
    expect("event.payload.items[1]", "{\"sku\":\"B2\",\"qty\":1}");
    expect("event.payload[\"first name\"]", "\"Dana F\"");
    expect("event.payload['first name']", "\"Dana F\"");
    expect("event.payload['$message']", "\"m1\"");
    expect("event.payload['quote\"key']", "\"q\"");
    expect("event['payload'].items[0]['sku']", "\"A1\"");
    expect("event . payload . count", "3"); /* spaces between the parts are fine */
    expect("event.payload.obj", "{\"b\":1,\"a\":[1,2]}");
    expect("nodes.vip.output.result", "true");
    expect("event.id", "\"meta:m_1\"");
    /* Keywords are ordinary keys after a dot. */
    expect("event.payload.in", "null");
    expect("event.payload.not", "null");
}

static void test_missing_is_null(void **state)
{
    (void)state;
    expect("event.payload.nope", "null");
    expect("event.payload.nope.deeper[3].x", "null");
    expect("event.payload.items[2]", "null");  /* past the end */
    expect("event.payload.items.sku", "null"); /* a key of an array */
    expect("event.payload.name[0]", "null");   /* an index of a string */
    expect("event.payload.amount.x", "null");  /* a key of a number */
    expect("nodes.sms.output.sid", "null");    /* a node that has not run */
    expect("event.payload.nothing", "null");
    expect_true("event.payload.nope == null");
    expect_true("event.payload.nothing == event.payload.nope");
}

/* ---- operators --------------------------------------------------------------------------- */

static void test_equality(void **state)
{
    (void)state;
    expect_true("event.payload.count == 3");
    expect_true("event.payload.count == 3.0");
    expect_true("1 == 1.0");
    expect_true("event.payload.name == 'Dana'");
    expect_true("event.payload.name != 'dana'"); /* bytewise */
    expect_false("event.payload.count == '3'");  /* mixed types are never equal */
    expect_true("event.payload.count != '3'");
    expect_false("0 == false");
    expect_false("null == false");
    expect_false("'' == null");
    expect_true("null == null");
    expect_true("true == true");
    expect_false("true == false");
    expect_true("event.payload.tags == ['vip', 'gold']");
    expect_false("event.payload.tags == ['gold', 'vip']");
    expect_true("event.payload.nums == [1, 2, 3]");
    expect_true("event.payload.obj == event.payload.obj2"); /* any member order, 1 == 1.0 */
    expect_false("event.payload.obj == event.payload.items[0]");
    expect_false("event.payload.obj == ['b', 'a']");
    expect_true("[[1, 2], 'x'] == [[1, 2.0], 'x']");
    expect_true("event.payload.emptyarr == []");
    expect_false("event.payload.emptyobj == []");
    expect_true("event.payload.big == 12345678901234567890");
    expect_true("event.payload.neg == -4");
}

static void test_ordering(void **state)
{
    (void)state;
    expect_true("event.payload.amount > 10");
    expect_true("event.payload.amount >= 12.5");
    expect_false("event.payload.amount > 12.5");
    expect_true("event.payload.amount < 13");
    expect_true("event.payload.amount <= 12.5");
    expect_true("event.payload.neg < 0");
    expect_true("10 > 9");
    expect_true("event.payload.ten < event.payload.nine"); /* strings bytewise: "10" < "9" */
    expect_true("'abc' < 'abd'");
    expect_true("'ab' < 'abc'");
    expect_true("'Z' < 'a'");
    expect_true("'b' >= 'b'");
    expect_false("'b' > 'b'");
    /* Mixed or non-scalar ordering is false, both ways. */
    expect_false("10 < '9'");
    expect_false("10 >= '9'");
    expect_false("null < 1");
    expect_false("null >= null");
    expect_false("true > false");
    expect_false("[1] < [2]");
    expect_false("event.payload.nope < 1");
    expect_false("event.payload.nope >= 1");
    expect_true("9223372036854775807 > 9223372036854775806");
    expect_true("-9223372036854775807 < 0");
    expect_true("1e20 > 9223372036854775807");
}

static void test_logic(void **state)
{
    (void)state;
    expect("true and false", "false");
    expect("true && true", "true");
    expect("false or true", "true");
    expect("false || false", "false");
    expect("not true", "false");
    expect("!false", "true");
    expect("!!'x'", "true");
    expect("not not 0", "false");
    /* and/or yield booleans, not operands */
    expect("'a' or 'b'", "true");
    expect("'a' and 0", "false");
    expect("event.payload.name and event.payload.count", "true");
    expect_true("true and true and true and 1");
    expect_false("true and true and null and true");
    expect_true("false or false or false or 'x'");
    expect_true("tenant.environment == 'production' && event.payload.amount > 10");
    expect_true("tenant.environment == 'sandbox' || event.payload.flag");
}

static void test_precedence(void **state)
{
    (void)state;
    /* and binds tighter than or */
    expect_true("true or false and false");
    expect_false("(true or false) and false");
    expect_true("false and false or true");
    /* not binds looser than comparisons, tighter than and */
    expect_true("not 1 == 2");
    expect_true("!1 == 2");
    expect_false("not 1 == 1 and true");
    expect_true("not false and not false");
    expect_true("not (1 == 2 or 2 == 3)");
    /* unary minus binds tightest */
    expect_true("-event.payload.neg == 4");
    expect_true("- -3 == 3");
    expect_true("-(event.payload.count) < -2");
    expect_true("((((1 == 1))))");
    /* comparisons do not chain */
    expect_parse_error("1 < 2 < 3", "position 6: comparisons do not chain; add parentheses");
    expect_true("(1 < 2) == true");
}

static void test_contains_startswith_in(void **state)
{
    (void)state;
    expect_true("event.payload.text contains 'pickup'");
    expect_false("event.payload.text contains 'Pickup'");
    expect_true("event.payload.text contains ''");
    expect_true("event.payload.tags contains 'vip'");
    expect_false("event.payload.tags contains 'vi'");
    expect_true("event.payload.nums contains 2"); /* 2 == 2.0 */
    expect_false("event.payload.nums contains '2'");
    expect_true("event.payload.items contains event.payload.items[1]");
    /* There are no object literals. */
    expect_parse_error("event.payload.items contains {}", "position 29: unknown operator '{'");
    expect_true("[[1, 2], [3]] contains [3]");
    expect_false("event.payload.count contains 3");
    expect_false("event.payload.obj contains 'a'");
    expect_false("event.payload.nope contains 'a'");
    expect_true("event.payload.name startswith 'Da'");
    expect_true("event.payload.name startswith ''");
    expect_false("event.payload.name startswith 'da'");
    expect_false("event.payload.name startswith 'Dana F'");
    expect_false("event.payload.tags startswith 'vip'");
    expect_true("'gold' in event.payload.tags");
    expect_true("event.payload.count in [1, 2, 3]");
    expect_false("event.payload.count in ['3']");
    expect_true("'pick' in event.payload.text");
    expect_false("'x' in event.payload.nope");
    expect_true("tenant.environment in ['production', 'staging']");
    expect_true("not 'silver' in event.payload.tags");
}

static void test_exists(void **state)
{
    (void)state;
    expect_true("exists event.payload.amount");
    expect_true("exists(event.payload.amount)");
    expect_true("exists ( tenant.slug )");
    expect_true("exists event.payload.zero"); /* 0 and "" exist */
    expect_true("exists event.payload.empty");
    expect_true("exists event.payload.off");
    expect_false("exists event.payload.nothing"); /* null does not */
    expect_false("exists event.payload.nope");
    expect_false("exists event.payload.items[5].sku");
    expect_true("exists event.payload['first name']");
    expect_true("not exists nodes.sms");
    expect_true("exists nodes.crm and not exists nodes.crm.output.nope");
    expect_parse_error("exists 'x'", "position 7: expected a path, found a string");
    expect_parse_error("exists(event.a", "position 14: expected ')'");
    expect_parse_error("exists foo", "position 7: unknown name 'foo' (paths start with event, "
                                     "tenant or nodes)");
}

static void test_unary_minus(void **state)
{
    (void)state;
    expect("-event.payload.amount", "-12.5");
    expect("-event.payload.neg", "4");
    expect("-5", "-5");
    expect("-0.5", "-0.5");
    expect("-event.payload.name", "null");
    expect("-event.payload.nope", "null");
    expect("-event.payload.big", "-12345678901234567890");
    expect("- -event.payload.count", "3");
}

static void test_truthiness(void **state)
{
    (void)state;
    expect_false("false");
    expect_false("null");
    expect_false("0");
    expect_false("0.0");
    expect_false("''");
    expect_false("event.payload.zero");
    expect_false("event.payload.fzero");
    expect_false("event.payload.empty");
    expect_false("event.payload.nothing");
    expect_false("event.payload.nope");
    expect_false("event.payload.off");
    expect_true("true");
    expect_true("1");
    expect_true("-1");
    expect_true("0.001");
    expect_true("'0'");
    expect_true("event.payload.zero_text");
    expect_true("' '");
    expect_true("[]");
    expect_true("event.payload.emptyarr");
    expect_true("event.payload.emptyobj");
    expect_true("event.payload");
}

static void collect_path(const char *path, void *arg)
{
    hf_buf *b = arg;
    hf_buf_printf(b, "%s|", path);
}

static void test_each_path(void **state)
{
    (void)state;
    wf_expr *e = parse_ok("event.payload.amount > 1 and exists(nodes.crm.output.id) or "
                          "event.payload.items[0].sku in [tenant.slug, 'x'] or "
                          "event.payload[\"first name\"] == event.payload['a\"b\\\\c'] or "
                          "-event.payload['x.y'][2] < 0 || event.payload['\\n']");
    hf_buf b = {0};
    wf_expr_each_path(e, collect_path, &b);
    assert_string_equal(b.data, "event.payload.amount|nodes.crm.output.id|"
                                "event.payload.items[0].sku|tenant.slug|"
                                "event.payload[\"first name\"]|event.payload[\"a\\\"b\\\\c\"]|"
                                "event.payload[\"x.y\"][2]|event.payload[\"\\u000a\"]|");
    hf_buf_free(&b);
    wf_expr_free(e);

    e = parse_ok("1 == 1");
    wf_expr_each_path(e, collect_path, &b);
    assert_null(b.data);
    wf_expr_each_path(e, NULL, NULL);
    wf_expr_free(e);
    wf_expr_free(NULL);
}

/* ---- errors and limits ------------------------------------------------------------------- */

static void test_parse_errors(void **state)
{
    (void)state;
    expect_parse_error("(event.payload.amount > 1", "position 25: expected ')'");
    expect_parse_error("event.payload.amount = 3", "position 21: unknown operator '=' "
                                                   "(compare with ==)");
    expect_parse_error("a ?? b", "position 0: unknown name 'a' (paths start with event, tenant "
                                 "or nodes)");
    expect_parse_error("1 ?? 2", "position 2: unknown operator '?'");
    expect_parse_error("1 + 2", "position 2: unknown operator '+'");
    expect_parse_error("1 & 2", "position 2: unknown operator '&' (use && or and)");
    expect_parse_error("1 | 2", "position 2: unknown operator '|' (use || or or)");
    expect_parse_error("", "position 0: empty expression");
    expect_parse_error("   ", "position 3: empty expression");
    expect_parse_error("'open", "position 0: unterminated string");
    expect_parse_error("'bad \\q'", "position 5: unknown escape '\\q'");
    expect_parse_error("'\\u12'", "position 1: \\u needs four hex digits");
    expect_parse_error("'\\ud800'", "position 1: unpaired surrogate in \\u escape");
    expect_parse_error("'\\u0000'", "position 1: strings cannot contain \\u0000");
    expect_parse_error("'\xff'", "position 0: string is not valid UTF-8");
    expect_parse_error("1.", "position 2: expected a digit after '.'");
    expect_parse_error("1e", "position 2: expected a digit in the exponent");
    expect_parse_error("12abc", "position 0: malformed number");
    expect_parse_error("1e999", "position 0: number out of range");
    expect_parse_error("event.", "position 6: expected a name after '.'");
    expect_parse_error("event.payload.0", "position 14: expected a name after '.' (write "
                                          "array indexes as [0])");
    expect_parse_error("event.items[-1]", "position 12: expected an array index or a quoted key");
    expect_parse_error("event.items[0", "position 13: expected ']'");
    expect_parse_error("event.payload.a b", "position 16: expected an operator or the end, "
                                            "found 'b'");
    expect_parse_error("1 == ", "position 5: expected a value, found end of expression");
    expect_parse_error("and", "position 0: expected a value, found 'and'");
    expect_parse_error("[1, 2", "position 5: expected ',' or ']'");
    expect_parse_error("[1,]", "position 3: expected a value, found ']'");
    expect_parse_error("foo(1)", "position 0: unknown name 'foo' (paths start with event, "
                                 "tenant or nodes)");
    expect_parse_error("event.payload.x #", "position 16: unknown operator '#'");
    expect_parse_error("\x01", "position 0: unexpected byte 0x01");
    expect_parse_error("1 == 1 )", "position 7: expected an operator or the end, found ')'");
    char err[64];
    assert_null(wf_expr_parse(NULL, err, sizeof err));
    assert_null(wf_expr_parse("(", NULL, 0)); /* err is optional */
}

static void test_limits(void **state)
{
    (void)state;
    /* Exactly WF_EXPR_MAX_LEN bytes parse; one more does not. */
    char *src = xmalloc(WF_EXPR_MAX_LEN + 2);
    memset(src, ' ', WF_EXPR_MAX_LEN + 1);
    src[0] = '1';
    src[WF_EXPR_MAX_LEN] = '\0';
    wf_expr_free(parse_ok(src));
    src[WF_EXPR_MAX_LEN] = ' ';
    src[WF_EXPR_MAX_LEN + 1] = '\0';
    expect_parse_error(src, "position 4096: expression is longer than 4096 bytes");
    free(src);

    /* Nesting: 32 levels parse, 33 do not — parentheses, arrays, not and minus alike. */
    hf_buf b = {0};
    for (int i = 0; i < WF_EXPR_MAX_DEPTH; i++)
        hf_buf_putc(&b, '(');
    hf_buf_putc(&b, '1');
    for (int i = 0; i < WF_EXPR_MAX_DEPTH; i++)
        hf_buf_putc(&b, ')');
    wf_expr_free(parse_ok(b.data));
    hf_buf_reset(&b);
    for (int i = 0; i <= WF_EXPR_MAX_DEPTH; i++)
        hf_buf_putc(&b, '(');
    hf_buf_putc(&b, '1');
    for (int i = 0; i <= WF_EXPR_MAX_DEPTH; i++)
        hf_buf_putc(&b, ')');
    expect_parse_error(b.data, "position 32: nested deeper than 32 levels");
    hf_buf_reset(&b);
    for (int i = 0; i <= WF_EXPR_MAX_DEPTH; i++)
        hf_buf_putc(&b, '[');
    expect_parse_error(b.data, "position 32: nested deeper than 32 levels");
    hf_buf_reset(&b);
    for (int i = 0; i <= WF_EXPR_MAX_DEPTH; i++)
        hf_buf_putc(&b, '!');
    hf_buf_puts(&b, "true");
    expect_parse_error(b.data, "position 32: nested deeper than 32 levels");
    hf_buf_reset(&b);
    for (int i = 0; i <= WF_EXPR_MAX_DEPTH; i++)
        hf_buf_puts(&b, "- ");
    hf_buf_putc(&b, '1');
    expect_parse_error(b.data, "position 64: nested deeper than 32 levels");
    hf_buf_reset(&b);
    /* Long and/or chains are flat, not deep. */
    hf_buf_puts(&b, "true");
    for (int i = 0; i < 500; i++)
        hf_buf_puts(&b, " and 1");
    assert_true(truth(b.data));
    hf_buf_free(&b);
}

/* Deep comparisons over large context values stop at WF_EVAL_MAX_STEPS: two objects with the
 * same 4000 members in opposite orders cost about 8 million steps to compare. */
static void test_eval_budget(void **state)
{
    (void)state;
    enum { members = 4000 };
    hf_buf j = {0};
    hf_buf_puts(&j, "{\"event\": {\"a\": {");
    for (int i = 0; i < members; i++)
        hf_buf_printf(&j, "%s\"k%d\": %d", i ? "," : "", i, i);
    hf_buf_puts(&j, "}, \"b\": {");
    for (int i = members - 1; i >= 0; i--)
        hf_buf_printf(&j, "%s\"k%d\": %d", i < members - 1 ? "," : "", i, i);
    hf_buf_puts(&j, "}}}");
    char err[256];
    hf_json big = hf_json_parse(j.data, j.len, err, sizeof err);
    assert_non_null(big);
    hf_buf_free(&j);

    wf_expr *e = parse_ok("event.a == event.b");
    bool v = false;
    assert_int_equal(wf_expr_eval_bool(e, big, &v, err, sizeof err), 0);
    assert_true(v);
    wf_expr_free(e);

    e = parse_ok("event.a == event.b and event.b == event.a");
    assert_int_equal(wf_expr_eval_bool(e, big, &v, err, sizeof err), -1);
    assert_false(v);
    assert_string_equal(err, "evaluation exceeded 10000000 comparison steps");
    hf_buf out = {0};
    hf_buf_puts(&out, "kept");
    assert_int_equal(wf_expr_eval_json(e, big, &out, err, sizeof err), -1);
    assert_string_equal(out.data, "kept"); /* nothing appended on failure */
    hf_buf_free(&out);
    wf_expr_free(e);

    /* Element searches count too. */
    e = parse_ok("[event.a.k0, event.b] contains event.a and [event.b] contains event.a");
    assert_int_equal(wf_expr_eval_bool(e, big, &v, err, sizeof err), -1);
    wf_expr_free(e);
    hf_json_free(big);
}

static void test_null_context(void **state)
{
    (void)state;
    wf_expr *e = parse_ok("event.payload.x == null and not exists tenant.slug");
    bool v = false;
    char err[64];
    assert_int_equal(wf_expr_eval_bool(e, NULL, &v, err, sizeof err), 0);
    assert_true(v);
    wf_expr_free(e);
}

/* ---- templates --------------------------------------------------------------------------- */

/* tmpl (JSON text) rendered over ctx. Caller frees. */
static char *render(const char *tmpl_json)
{
    char err[256] = "";
    hf_json t = hf_json_parse(tmpl_json, strlen(tmpl_json), err, sizeof err);
    if (!t)
        fail_msg("%s: %s", tmpl_json, err);
    hf_buf out = {0};
    if (wf_template_render(t, ctx, &out, err, sizeof err) != 0)
        fail_msg("%s: render: %s", tmpl_json, err);
    hf_json_free(t);
    /* The output is always valid JSON. */
    hf_json back = hf_json_parse(out.data, out.len, err, sizeof err);
    if (!back)
        fail_msg("%s rendered invalid JSON %s: %s", tmpl_json, out.data, err);
    hf_json_free(back);
    return hf_buf_steal(&out);
}

static void expect_render(const char *tmpl_json, const char *want)
{
    char *got = render(tmpl_json);
    if (strcmp(got, want) != 0)
        fail_msg("%s: got %s, want %s", tmpl_json, got, want);
    free(got);
}

static void expect_render_error(const char *tmpl_json, const char *want)
{
    char err[256] = "";
    hf_json t = hf_json_parse(tmpl_json, strlen(tmpl_json), err, sizeof err);
    assert_non_null(t);
    hf_buf out = {0};
    int rc = wf_template_render(t, ctx, &out, err, sizeof err);
    if (rc == 0)
        fail_msg("%s rendered %s, want error %s", tmpl_json, out.data, want);
    if (strcmp(err, want) != 0)
        fail_msg("%s: error '%s', want '%s'", tmpl_json, err, want);
    assert_true(out.len == 0);
    /* wf_template_check reports the same. */
    char err2[256] = "";
    assert_int_equal(wf_template_check(t, NULL, NULL, err2, sizeof err2), -1);
    assert_string_equal(err2, want);
    hf_buf_free(&out);
    hf_json_free(t);
}

static void test_template_exact(void **state)
{
    (void)state;
    expect_render("\"{{event.payload.amount}}\"", "12.5");
    expect_render("\"{{ event.payload.count }}\"", "3");
    expect_render("\"{{\\n\\tevent.payload.flag\\n}}\"", "true");
    expect_render("\"{{event.payload.name}}\"", "\"Dana\"");
    expect_render("\"{{nodes.crm.output.properties}}\"", "{\"lifecyclestage\":\"customer\"}");
    expect_render("\"{{event.payload.tags}}\"", "[\"vip\",\"gold\"]");
    expect_render("\"{{event.payload.nope}}\"", "null");
    expect_render("\"{{event.payload.nothing}}\"", "null");
    expect_render("\"{{event.payload.amount > 10}}\"", "true");
    expect_render("\"{{ [1, 'two'] }}\"", "[1,\"two\"]");
    expect_render("\"{{ '}}' }}\"", "\"}}\""); /* }} in a literal does not close */
    expect_render("\"{{ \\\"a}}b\\\" }}\"", "\"a}}b\"");
    expect_render("\"{{event.payload.big}}\"", "12345678901234567890");
}

static void test_template_interpolate(void **state)
{
    (void)state;
    expect_render("\"Hi {{event.payload.name}}!\"", "\"Hi Dana!\"");
    expect_render("\" {{event.payload.amount}}\"", "\" 12.5\""); /* not exact: text */
    expect_render("\"{{event.payload.amount}} \"", "\"12.5 \"");
    expect_render("\"{{event.payload.count}}{{event.payload.count}}\"", "\"33\"");
    expect_render("\"[{{event.payload.nope}}]\"", "\"[]\""); /* null is empty */
    expect_render("\"flag={{event.payload.flag}}\"", "\"flag=true\"");
    expect_render("\"obj={{event.payload.obj}}\"", "\"obj={\\\"b\\\":1,\\\"a\\\":[1,2]}\"");
    expect_render("\"tags={{event.payload.tags}}\"", "\"tags=[\\\"vip\\\",\\\"gold\\\"]\"");
    expect_render("\"q: {{event.payload['quote\\\"key']}}\"", "\"q: q\"");
    expect_render("\"say {{ '\\\"hi\\\"' }}\"", "\"say \\\"hi\\\"\"");
    expect_render("\"{{'a'}}-{{'b'}}\"", "\"a-b\"");
    expect_render("\"no templates here } {\"", "\"no templates here } {\"");
    expect_render("\"close only }}\"", "\"close only }}\"");
    expect_render("\"vip-{{nodes.crm.output.id}}\"", "\"vip-1246965\"");
    expect_render("\"{{ -event.payload.amount }} EUR\"", "\"-12.5 EUR\"");
    expect_render("\"{{1.5e1}}x\"", "\"15x\"");
}

static void test_template_walk(void **state)
{
    (void)state;
    expect_render("{\"to\": \"{{event.payload.name}}\", \"n\": \"{{event.payload.count}}\","
                  " \"{{key}}\": 1, \"lit\": [1, true, null, {\"x\": \"{{tenant.slug}}\"}],"
                  " \"deep\": {\"a\": {\"b\": \"{{event.payload.items[0]}}\"}}}",
                  "{\"to\":\"Dana\",\"n\":3,\"{{key}}\":1,\"lit\":[1,true,null,{\"x\":\"acme\"}],"
                  "\"deep\":{\"a\":{\"b\":{\"sku\":\"A1\",\"qty\":2}}}}");
    expect_render("[]", "[]");
    expect_render("{}", "{}");
    expect_render("42", "42");
    expect_render("null", "null");
    expect_render("\"plain\"", "\"plain\"");
    hf_buf out = {0};
    char err[64];
    assert_int_equal(wf_template_render(NULL, ctx, &out, err, sizeof err), 0);
    assert_string_equal(out.data, "null");
    hf_buf_free(&out);
}

static void test_template_errors(void **state)
{
    (void)state;
    expect_render_error("{\"to\": \"{{ 1 ?? 2 }}\"}", "to: position 5: unknown operator '?'");
    expect_render_error("{\"to\": \"{{ a ?? b }}\"}",
                        "to: position 3: unknown name 'a' (paths start with event, tenant or "
                        "nodes)");
    expect_render_error("\"Hello {{event.payload.name\"", "position 6: unterminated {{");
    expect_render_error("\"{{}}\"", "position 2: empty expression");
    expect_render_error("\"ok {{1}} then {{ (1 }}\"", "position 20: expected ')'");
    expect_render_error(
        "{\"lines\": [{\"sku\": \"A\"}, {\"sku\": \"{{ event.payload.items[ }}\"}]}",
        "lines[1].sku: position 24: expected an array index or a quoted key");
    expect_render_error("{\"a b\": {\"c\": [\"{{=}}\"]}}",
                        "[\"a b\"].c[0]: position 2: unknown operator '=' (compare with ==)");
    expect_render_error("[\"{{ '}}\"]", "[0]: position 0: unterminated {{");
}

static void test_template_check_paths(void **state)
{
    (void)state;
    const char *t = "{\"a\": \"{{event.payload.amount}} and {{ nodes.crm.output.id }}\","
                    " \"b\": [\"{{exists tenant.slug}}\", \"plain {event.x}\"],"
                    " \"c\": {\"d\": \"{{ event.payload['first name'] == 'x' }}\"}}";
    char err[256];
    hf_json v = hf_json_parse(t, strlen(t), err, sizeof err);
    assert_non_null(v);
    hf_buf b = {0};
    assert_int_equal(wf_template_check(v, collect_path, &b, err, sizeof err), 0);
    assert_string_equal(b.data, "event.payload.amount|nodes.crm.output.id|tenant.slug|"
                                "event.payload[\"first name\"]|");
    hf_buf_free(&b);
    assert_int_equal(wf_template_check(v, NULL, NULL, err, sizeof err), 0);
    hf_json_free(v);

    assert_true(wf_template_is_dynamic("a {{b", 5));
    assert_false(wf_template_is_dynamic("a {b} }}", 8));
    assert_true(wf_template_is_exact("{{ x }}", 7));
    assert_false(wf_template_is_exact(" {{ x }}", 8));
    assert_false(wf_template_is_exact("{{ x }}{{y}}", 12));
    assert_false(wf_template_is_exact("{{ x", 4));
}

/* The rendered size is bounded. */
static void test_render_limit(void **state)
{
    (void)state;
    size_t n = 1u << 20;
    hf_buf j = {0};
    hf_buf_puts(&j, "{\"event\": {\"s\": \"");
    for (size_t i = 0; i < n; i++)
        hf_buf_putc(&j, 'x');
    hf_buf_puts(&j, "\"}}");
    char err[256];
    hf_json big = hf_json_parse(j.data, j.len, err, sizeof err);
    assert_non_null(big);
    hf_buf_free(&j);

    hf_buf t = {0};
    hf_buf_puts(&t, "[");
    for (int i = 0; i < 20; i++)
        hf_buf_puts(&t, i ? ", \"{{event.s}}\"" : "\"{{event.s}}\"");
    hf_buf_puts(&t, "]");
    hf_json tmpl = hf_json_parse(t.data, t.len, err, sizeof err);
    assert_non_null(tmpl);
    hf_buf out = {0};
    assert_int_equal(wf_template_render(tmpl, big, &out, err, sizeof err), -1);
    assert_string_equal(err, "[16]: rendered value is larger than 16777216 bytes");
    assert_int_equal(out.len, 0);
    hf_buf_free(&out);
    hf_json_free(tmpl);

    /* One interpolated string repeating the value 20 times. */
    hf_buf_reset(&t);
    hf_buf_puts(&t, "\"");
    for (int i = 0; i < 20; i++)
        hf_buf_puts(&t, "{{event.s}}-");
    hf_buf_puts(&t, "\"");
    tmpl = hf_json_parse(t.data, t.len, err, sizeof err);
    assert_int_equal(wf_template_render(tmpl, big, &out, err, sizeof err), -1);
    assert_string_equal(err, "rendered value is larger than 16777216 bytes");
    hf_json_free(tmpl);

    /* wf_expr_eval_json too: an array literal of the value. */
    hf_buf_reset(&t);
    hf_buf_puts(&t, "[");
    for (int i = 0; i < 20; i++)
        hf_buf_puts(&t, i ? ", event.s" : "event.s");
    hf_buf_puts(&t, "]");
    wf_expr *e = parse_ok(t.data);
    assert_int_equal(wf_expr_eval_json(e, big, &out, err, sizeof err), -1);
    assert_string_equal(err, "rendered value is larger than 16777216 bytes");
    wf_expr_free(e);
    hf_buf_free(&out);
    hf_buf_free(&t);
    hf_json_free(big);
}

/* Integers past int64, and an int64 against a double, compare exactly: distinct ids differ. */
static void test_big_integer_comparison(void **state)
{
    (void)state;
    /* docs/workflows.md: "numbers compare by value". event.payload.big is
     * 12345678901234567890 (above INT64_MAX): a different 20-digit id is not equal to it. */
    expect_false("event.payload.big == 12345678901234567891");
    expect_true("event.payload.big != 12345678901234567891");
    expect_true("event.payload.big < 12345678901234567891");
    /* INT64_MAX against INT64_MAX + 1: an int64 against a number that does not fit one. */
    expect_false("9223372036854775807 == 9223372036854775808");
    expect_true("9223372036854775807 < 9223372036854775808");
    /* Two uint64 ids from the context. */
    char err[256];
    static const char big_ctx[] = "{\"event\": {\"a\": 18446744073709551615, \"b\": "
                                  "18446744073709551614, \"m\": 9223372036854775807}}";
    hf_json c = hf_json_parse(big_ctx, strlen(big_ctx), err, sizeof err);
    assert_non_null(c);
    static const struct {
        const char *src;
        bool want;
    } cases[] = {
        {"event.a == event.b", false},
        {"event.a > event.b", true},
        {"event.m == 9223372036854775808", false},
        {"event.m < 9223372036854775808", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wf_expr *e = parse_ok(cases[i].src);
        bool v = !cases[i].want;
        assert_int_equal(wf_expr_eval_bool(e, c, &v, err, sizeof err), 0);
        if (v != cases[i].want)
            fail_msg("%s: got %s, want %s", cases[i].src, v ? "true" : "false",
                     cases[i].want ? "true" : "false");
        wf_expr_free(e);
    }
    hf_json_free(c);
}

/* Object equality is symmetric when a key repeats. */
static void test_object_equality_duplicate_keys(void **state)
{
    (void)state;
    char err[256];
    static const char dup_ctx[] = "{\"event\": {\"a\": {\"x\": 1, \"x\": 1}, \"b\": {\"x\": 1, "
                                  "\"y\": 1}}}";
    hf_json c = hf_json_parse(dup_ctx, strlen(dup_ctx), err, sizeof err);
    assert_non_null(c);
    /* event.a names x twice and has no y: it is not event.b, seen from either side. */
    bool ab = true, ba = true;
    wf_expr *e = parse_ok("event.a == event.b");
    assert_int_equal(wf_expr_eval_bool(e, c, &ab, err, sizeof err), 0);
    wf_expr_free(e);
    e = parse_ok("event.b == event.a");
    assert_int_equal(wf_expr_eval_bool(e, c, &ba, err, sizeof err), 0);
    wf_expr_free(e);
    if (ab != ba)
        fail_msg("event.a == event.b is %s but event.b == event.a is %s", ab ? "true" : "false",
                 ba ? "true" : "false");
    assert_false(ab);
    hf_json_free(c);

    /* A repeated key's values meet in the order they come, on both sides alike. */
    static const char order_ctx[] = "{\"event\": {\"a\": {\"y\": 0, \"x\": 1, \"x\": 2}, "
                                    "\"b\": {\"x\": 2, \"x\": 1, \"y\": 0}, "
                                    "\"c\": {\"x\": 1, \"y\": 0, \"x\": 2}}}";
    c = hf_json_parse(order_ctx, strlen(order_ctx), err, sizeof err);
    assert_non_null(c);
    static const struct {
        const char *src;
        bool want;
    } cases[] = {
        {"event.a == event.b", false},
        {"event.b == event.a", false},
        {"event.a == event.c", true},
        {"event.c == event.a", true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        e = parse_ok(cases[i].src);
        bool v = !cases[i].want;
        assert_int_equal(wf_expr_eval_bool(e, c, &v, err, sizeof err), 0);
        if (v != cases[i].want)
            fail_msg("%s: got %s", cases[i].src, v ? "true" : "false");
        wf_expr_free(e);
    }
    hf_json_free(c);
}

/* Escapes \b and \f, and paths that index an object or key an array (docs/workflows.md: "a
 * member of a non-object ... is null"); rules no other test covers. */
static void test_escapes_and_mismatched_path_steps(void **state)
{
    (void)state;
    expect("'\\b\\f'", "\"\\u0008\\u000c\"");
    expect("event.payload.obj[0]", "null");    /* an index of an object */
    expect("event.payload.tags['0']", "null"); /* a key of an array */
    expect("event.payload.name['0']", "null"); /* a key of a string */
    expect_render("\"{{ true }} {{ false }} {{ -event.payload.count }}\"", "\"true false -3\"");
}

/* Evaluates each src over the JSON context json; fails listing every result other than want. */
static void expect_cases(const char *json, const char *const *srcs, const bool *want, size_t n)
{
    char err[256] = "";
    hf_json c = hf_json_parse(json, strlen(json), err, sizeof err);
    if (!c)
        fail_msg("context: %s", err);
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++) {
        wf_expr *e = parse_ok(srcs[i]);
        bool v = !want[i];
        if (wf_expr_eval_bool(e, c, &v, err, sizeof err) != 0)
            fail_msg("%s: eval: %s", srcs[i], err);
        wf_expr_free(e);
        if (v != want[i]) {
            print_error("%s: got %s, want %s\n", srcs[i], v ? "true" : "false",
                        want[i] ? "true" : "false");
            wrong++;
        }
    }
    hf_json_free(c);
    if (wrong)
        fail_msg("%zu of %zu cases wrong", wrong, n);
}

/* Prefix '-' is negation (null only of a non-number, docs/workflows.md) and integers compare
 * exactly however many digits: negating an integer past int64 (or INT64_MIN) keeps its digits,
 * so -18446744073709551617 != -18446744073709551616, and one too big for a double is still a
 * number. */
static void test_negation_keeps_integers_exact(void **state)
{
    (void)state;
    hf_buf j = {0};
    hf_buf_puts(&j, "{\"event\": {\"big\": 18446744073709551617, \"min\": -9223372036854775808, "
                    "\"long\": 1");
    for (int i = 0; i < 400; i++)
        hf_buf_putc(&j, '0');
    hf_buf_puts(&j, "}}");
    static const char *const srcs[] = {
        "-event.big == -18446744073709551617",
        "-event.big == -18446744073709551616",
        "-event.min == 9223372036854775808",
        "-event.min == 9223372036854775809",
        "--9223372036854775808 == 9223372036854775809",
        "-event.long < 0",
    };
    static const bool want[] = {true, false, true, false, false, true};
    expect_cases(j.data, srcs, want, HF_ARRAY_LEN(srcs));
    hf_buf_free(&j);
}

/* Numbers compare by value: an integer past int64 against a decimal exactly, as an int64 is
 * (18446744073709551617 is above 18446744073709551616.0, exactly 2^64, not equal to it). */
static void test_big_integer_against_decimal(void **state)
{
    (void)state;
    static const char *const srcs[] = {
        "9007199254740993 == 9007199254740992.0", /* int64: exact already */
        "event.big == 18446744073709551616.0",
        "event.big > 18446744073709551616.0",
        "event.big == event.dec",
        "event.dec < event.big",
    };
    static const bool want[] = {false, false, true, false, true};
    expect_cases("{\"event\": {\"big\": 18446744073709551617, \"dec\": 18446744073709551616.0}}",
                 srcs, want, HF_ARRAY_LEN(srcs));
}

/* A whole-template value is JSON: an integer literal past int64 written with leading zeros
 * renders without them, as 007 evaluates to 7. */
static void test_big_integer_literal_leading_zeros(void **state)
{
    (void)state;
    expect_render("{\"a\": \"{{ 0012345678901234567890 }}\"}", "{\"a\":12345678901234567890}");
    expect("0012345678901234567890", "12345678901234567890");
    expect("-0012345678901234567890", "-12345678901234567890");
}

/* Integers compare exactly however many digits: a literal past a double's range (about 309
 * digits) is a number like the same value in the context, not "out of range". */
static void test_integer_literal_of_any_length(void **state)
{
    (void)state;
    hf_buf digits = {0};
    hf_buf_putc(&digits, '1');
    for (int i = 0; i < 400; i++)
        hf_buf_putc(&digits, '0');
    char *json = xasprintf("{\"event\": {\"n\": %s}}", digits.data);
    char *src = xasprintf("event.n == %s", digits.data);
    const char *const srcs[] = {src};
    static const bool want[] = {true};
    expect_cases(json, srcs, want, 1);
    free(src);
    free(json);
    hf_buf_free(&digits);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literals),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_missing_is_null),
        cmocka_unit_test(test_equality),
        cmocka_unit_test(test_ordering),
        cmocka_unit_test(test_logic),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_contains_startswith_in),
        cmocka_unit_test(test_exists),
        cmocka_unit_test(test_unary_minus),
        cmocka_unit_test(test_truthiness),
        cmocka_unit_test(test_each_path),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_eval_budget),
        cmocka_unit_test(test_null_context),
        cmocka_unit_test(test_template_exact),
        cmocka_unit_test(test_template_interpolate),
        cmocka_unit_test(test_template_walk),
        cmocka_unit_test(test_template_errors),
        cmocka_unit_test(test_template_check_paths),
        cmocka_unit_test(test_render_limit),
        cmocka_unit_test(test_big_integer_comparison),
        cmocka_unit_test(test_object_equality_duplicate_keys),
        cmocka_unit_test(test_escapes_and_mismatched_path_steps),
        cmocka_unit_test(test_negation_keeps_integers_exact),
        cmocka_unit_test(test_big_integer_against_decimal),
        cmocka_unit_test(test_big_integer_literal_leading_zeros),
        cmocka_unit_test(test_integer_literal_of_any_length),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
