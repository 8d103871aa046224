/* expr: the one small language of workflows — trigger filters, condition nodes and {{...}}
 * templates. Pure and bounded: no side effects, no loops, no calls; docs/workflows.md has the
 * grammar, the type rules and examples. */
#ifndef WF_EXPR_H
#define WF_EXPR_H

#include <stdbool.h>
#include <stddef.h>

#include "json.h"
#include "util.h"

/* Bounds: an expression's source length in bytes and its nesting (parentheses, array literals,
 * not/!/unary minus chains); a rendered value (wf_expr_eval_json, wf_template_render) may not
 * grow past WF_RENDER_MAX_BYTES; one evaluation may take at most WF_EVAL_MAX_STEPS comparison
 * steps (deep equality over large context values is what costs). */
#define WF_EXPR_MAX_LEN 4096
#define WF_EXPR_MAX_DEPTH 32
#define WF_RENDER_MAX_BYTES (16u << 20)
#define WF_EVAL_MAX_STEPS 10000000L

typedef struct wf_expr wf_expr;

/* Parses src (NUL-terminated). NULL and err ("position 12: expected ')'"; positions are byte
 * offsets into src) on a syntax error, a name that is not a path root (event, tenant, nodes),
 * more than WF_EXPR_MAX_LEN bytes or nesting deeper than WF_EXPR_MAX_DEPTH. The caller owns the
 * result; free it with wf_expr_free. A parsed expression is immutable, so threads may share it. */
wf_expr *wf_expr_parse(const char *src, char *err, size_t errlen);
void wf_expr_free(wf_expr *e);

/* Evaluates e over ctx (a JSON object with members event, tenant, nodes; NULL reads as empty)
 * and appends the value as compact JSON to out. Missing paths are null. 0 ok; -1 and err only
 * when a bound is hit (WF_RENDER_MAX_BYTES, WF_EVAL_MAX_STEPS). */
HF_MUST_CHECK int wf_expr_eval_json(const wf_expr *e, hf_json ctx, hf_buf *out, char *err,
                                    size_t errlen);
/* The same, reduced to truthiness: false, null, 0 and "" are false, everything else true. */
HF_MUST_CHECK int wf_expr_eval_bool(const wf_expr *e, hf_json ctx, bool *out, char *err,
                                    size_t errlen);

/* Calls fn for every path the expression reads, in source order, as canonical text: the root,
 * then ".name" for a key that is an identifier ([A-Za-z_][A-Za-z0-9_]*), "[N]" for an array
 * index and ["..."] for any other key (only " and \ are escaped, as \" and \\, and control
 * characters as \u00XX). Examples: "event.payload.amount", "nodes.crm.output.id",
 * "event.payload.items[0].sku", "event.payload[\"first name\"]". */
void wf_expr_each_path(const wf_expr *e, void (*fn)(const char *path, void *arg), void *arg);

/* Templates: tmpl is any JSON value. A string holding {{ expr }} is evaluated: a string that is
 * exactly one {{expr}} (whitespace allowed inside the braces) takes the value's JSON type (a
 * number stays a number, an object an object; missing is null); otherwise each {{expr}} is
 * interpolated as text (strings raw, null as "", numbers and booleans as their text, objects
 * and arrays as compact JSON). Objects and arrays are walked recursively; keys are not
 * templated. Appends the rendered JSON to out. 0 ok; -1 and err naming the JSON path of the bad
 * template relative to tmpl ("to: position 3: unknown operator '?'", "lines[1].sku: ...";
 * no prefix when tmpl itself is the bad string; positions are byte offsets into that string). */
HF_MUST_CHECK int wf_template_render(hf_json tmpl, hf_json ctx, hf_buf *out, char *err,
                                     size_t errlen);

/* Checks that every {{...}} in tmpl parses, and calls fn (may be NULL) for every path each one
 * reads. 0 ok; -1 and err as wf_template_render's on the first bad template. */
HF_MUST_CHECK int wf_template_check(hf_json tmpl, void (*fn)(const char *path, void *arg),
                                    void *arg, char *err, size_t errlen);

/* True if s (len bytes) holds a "{{" — that is, if it is a template rather than a literal. */
bool wf_template_is_dynamic(const char *s, size_t len);
/* True if s is exactly one {{expr}}, which renders with the expression's own JSON type. */
bool wf_template_is_exact(const char *s, size_t len);

#endif
