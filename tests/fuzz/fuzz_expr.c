/* fuzz_expr: drives the expression language with arbitrary text. The input is parsed as an
 * expression and, when it parses, evaluated over a fixed context (as JSON and as a boolean);
 * every path it reports must parse again to the same single path. The input is also rendered as
 * a template string and, when it is JSON, as a template document. Rendered output must be valid
 * JSON, and wf_template_check must agree with wf_template_render about what parses. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "expr.h"
#include "json.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

static const char ctx_json[] =
    "{\"event\": {\"id\": \"meta:m_1\", \"provider\": \"meta\", \"event\": \"message\","
    " \"account\": \"104857362981245\", \"payload\": {\"amount\": 12.5, \"count\": 3,"
    " \"big\": 12345678901234567890, \"neg\": -9223372036854775808, \"huge\": 1e400,"
    " \"name\": \"Dana\", \"empty\": \"\", \"nothing\": null, \"flag\": true,"
    " \"items\": [{\"sku\": \"A1\", \"qty\": 2}, {\"sku\": \"B2\", \"qty\": 1}],"
    " \"tags\": [\"vip\", \"gold\"], \"first name\": \"Dana F\", \"$message\": \"m1\","
    " \"obj\": {\"b\": 1, \"a\": [1, 2]}, \"obj2\": {\"a\": [1, 2], \"b\": 1.0},"
    " \"text\": \"Is my order ready for pickup?\"}},"
    " \"tenant\": {\"id\": \"t1\", \"slug\": \"acme\", \"name\": \"Acme\", \"environment\": "
    "\"production\"},"
    " \"nodes\": {\"crm\": {\"status\": \"succeeded\", \"output\": {\"id\": \"1246965\","
    " \"properties\": {\"lifecyclestage\": \"customer\"}}}}}";

static hf_json ctx;

static void check_json(const hf_buf *b)
{
    hf_json v = hf_json_parse(b->data ? b->data : "", b->len, NULL, 0);
    check(v != NULL || b->len == 0);
    hf_json_free(v);
}

typedef struct paths {
    char **items;
    size_t n;
} paths;

static void collect(const char *path, void *arg)
{
    paths *p = arg;
    p->items = xrealloc(p->items, (p->n + 1) * sizeof *p->items);
    p->items[p->n++] = xstrdup(path);
}

/* A reported path is itself an expression reading exactly that path. */
static void check_path_roundtrip(const char *text)
{
    wf_expr *e = wf_expr_parse(text, NULL, 0);
    check(e != NULL);
    paths again = {0};
    wf_expr_each_path(e, collect, &again);
    check(again.n == 1 && strcmp(again.items[0], text) == 0);
    free(again.items[0]);
    free(again.items);
    wf_expr_free(e);
}

static void fuzz_expression(const char *src)
{
    char err[256];
    wf_expr *e = wf_expr_parse(src, err, sizeof err);
    if (!e) {
        check(strncmp(err, "position ", 9) == 0);
        return;
    }
    check(strlen(src) <= WF_EXPR_MAX_LEN);
    hf_buf out = {0};
    if (wf_expr_eval_json(e, ctx, &out, err, sizeof err) == 0) {
        check(out.len > 0);
        check_json(&out);
    }
    hf_buf_free(&out);
    bool b;
    (void)!wf_expr_eval_bool(e, ctx, &b, err, sizeof err);
    (void)!wf_expr_eval_bool(e, NULL, &b, err, sizeof err);
    paths p = {0};
    wf_expr_each_path(e, collect, &p);
    for (size_t i = 0; i < p.n; i++) {
        if (strlen(p.items[i]) <= WF_EXPR_MAX_LEN)
            check_path_roundtrip(p.items[i]);
        free(p.items[i]);
    }
    free(p.items);
    wf_expr_free(e);
}

static void fuzz_template(hf_json tmpl)
{
    char err[512], err2[512];
    hf_buf out = {0};
    int rc = wf_template_render(tmpl, ctx, &out, err, sizeof err);
    int rc2 = wf_template_check(tmpl, NULL, NULL, err2, sizeof err2);
    if (rc == 0) {
        check(rc2 == 0);
        check_json(&out);
    } else {
        check(out.len == 0);
        if (rc2 != 0)
            check(strcmp(err, err2) == 0);
    }
    hf_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ctx) {
        ctx = hf_json_parse(ctx_json, strlen(ctx_json), NULL, 0);
        check(ctx != NULL);
    }
    if (size > 64 * 1024)
        return 0;
    char *src = xstrndup((const char *)data, size); /* stops at a NUL */
    fuzz_expression(src);

    /* The text as a template string (when it is valid UTF-8 without NULs). */
    hf_buf quoted = {0};
    hf_json_append_string(&quoted, src, strlen(src));
    hf_json str = hf_json_parse(quoted.data, quoted.len, NULL, 0);
    if (str) {
        fuzz_template(str);
        hf_json_free(str);
    }
    hf_buf_free(&quoted);

    /* The text as a JSON template document. */
    hf_json doc = hf_json_parse((const char *)data, size, NULL, 0);
    if (doc) {
        fuzz_template(doc);
        hf_json_free(doc);
    }
    free(src);
    return 0;
}
