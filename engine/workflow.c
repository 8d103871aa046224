/* workflow: parses workflow definitions into checked node graphs (wf_parse) and validates them
 * against the connector catalog, collecting every problem (wf_validate). One structural pass
 * serves both: it records problems instead of stopping, and wf_parse fails on the first. */
#include "workflow.h"

#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connectors/connector.h"

/* params of an action node without one; never modified, so shared by every definition. */
static struct yajl_val_s empty_object = {.type = yajl_t_object};

static const char *const type_names[] = {"action", "condition", "transform", "delay"};

/* ---- problems -------------------------------------------------------------------------- */

void wf_problems_free(wf_problems *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->items[i].path);
        free(p->items[i].message);
    }
    free(p->items);
    p->items = NULL;
    p->n = p->cap = 0;
}

static void problem_add(wf_problems *p, const char *code, const char *path, const char *fmt, ...)
    HF_PRINTF(4, 5);
static void problem_add(wf_problems *p, const char *code, const char *path, const char *fmt, ...)
{
    if (p->n >= WF_MAX_PROBLEMS)
        return;
    hf_buf msg = {0};
    va_list ap;
    va_start(ap, fmt);
    hf_buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    for (size_t i = 0; i < p->n; i++) {
        if (strcmp(p->items[i].code, code) == 0 && strcmp(p->items[i].path, path) == 0 &&
            strcmp(p->items[i].message, msg.data) == 0) {
            hf_buf_free(&msg);
            return;
        }
    }
    if (p->n == WF_MAX_PROBLEMS - 1) {
        hf_buf_reset(&msg);
        hf_buf_printf(&msg, "more than %d problems; the rest are not listed", WF_MAX_PROBLEMS - 1);
        code = "schema";
        path = "";
    }
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 16;
        p->items = xrealloc(p->items, p->cap * sizeof *p->items);
    }
    p->items[p->n++] =
        (wf_problem){.path = xstrdup(path), .code = code, .message = hf_buf_steal(&msg)};
}

/* ---- JSON paths ------------------------------------------------------------------------ */

static bool is_ident(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_'))
        return false;
    for (s++; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' ||
              (*s >= '0' && *s <= '9')))
            return false;
    return true;
}

/* base + key: ".key" for identifiers (no dot at the root), else ["key"] (as expr.h spells). */
static char *jp_key(const char *base, const char *key)
{
    hf_buf b = {0};
    hf_buf_puts(&b, base);
    if (is_ident(key)) {
        if (*base)
            hf_buf_putc(&b, '.');
        hf_buf_puts(&b, key);
    } else {
        hf_buf_puts(&b, "[\"");
        for (const unsigned char *c = (const unsigned char *)key; *c; c++) {
            if (*c == '"' || *c == '\\')
                hf_buf_printf(&b, "\\%c", *c);
            else if (*c < 0x20)
                hf_buf_printf(&b, "\\u%04x", *c);
            else
                hf_buf_putc(&b, (char)*c);
        }
        hf_buf_puts(&b, "\"]");
    }
    return hf_buf_steal(&b);
}

static char *jp_index(const char *base, size_t i)
{
    return xasprintf("%s[%zu]", base, i);
}

/* ---- structural pass ------------------------------------------------------------------- */

typedef struct build {
    wf_problems *probs;
    wf_def *d;
    bool *has_id;  /* node i has a valid id that no earlier node has */
    bool *typed;   /* node i has a valid type */
    bool *edge_ok; /* edge j names two such nodes and is no duplicate */
    size_t ntopo;  /* nodes placed in d->topo */
} build;

static void schema(build *b, const char *path, const char *fmt, ...) HF_PRINTF(3, 4);
static void schema(build *b, const char *path, const char *fmt, ...)
{
    hf_buf msg = {0}; /* not a fixed buffer: ids in messages may be long UTF-8 */
    va_list ap;
    va_start(ap, fmt);
    hf_buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    problem_add(b->probs, "schema", path, "%s", msg.data);
    hf_buf_free(&msg);
}

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

/* Reports members of obj that are not in allowed (others_ok: known elsewhere, reported as "not
 * allowed here" with why) and members that repeat. */
static void check_members(build *b, hf_json obj, const char *base, const char *const *allowed,
                          const char *const *others, const char *why)
{
    size_t n = hf_json_len(obj);
    for (size_t i = 0; i < n; i++) {
        const char *key;
        hf_json_member(obj, i, &key);
        char *path = jp_key(base, key);
        if (!in_list(key, allowed)) {
            if (others && in_list(key, others))
                schema(b, path, "not allowed %s", why);
            else
                schema(b, path, "unknown member");
        } else if (hf_json_member_repeats(obj, i)) {
            schema(b, path, "duplicate member");
        }
        free(path);
    }
}

/* Reports every member that repeats in an object anywhere under v (the free-form values:
 * params, output, metadata, ui), where a second "to" would reach a connector unnoticed. */
static void check_no_repeats(build *b, hf_json v, const char *path)
{
    if (hf_json_is_array(v)) {
        for (size_t i = 0; i < hf_json_len(v); i++) {
            char *p = jp_index(path, i);
            check_no_repeats(b, hf_json_at(v, i), p);
            free(p);
        }
        return;
    }
    if (!hf_json_is_object(v))
        return;
    for (size_t i = 0; i < hf_json_len(v); i++) {
        const char *key;
        hf_json member = hf_json_member(v, i, &key);
        char *p = jp_key(path, key);
        if (hf_json_member_repeats(v, i))
            schema(b, p, "duplicate member");
        check_no_repeats(b, member, p);
        free(p);
    }
}

/* A string member; NULL (and a problem when required or mistyped) otherwise. */
static const char *get_string(build *b, hf_json obj, const char *key, const char *base,
                              bool required)
{
    hf_json v = hf_json_get(obj, key);
    char *path = jp_key(base, key);
    const char *s = hf_json_str(v);
    if (!v && required)
        schema(b, path, "required");
    else if (v && !s)
        schema(b, path, "must be a string");
    free(path);
    return s;
}

static bool matches_identifier(const char *s, size_t maxlen)
{
    if (!(*s >= 'a' && *s <= 'z'))
        return false;
    size_t n = 1;
    for (s++; *s; s++, n++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return n <= maxlen;
}

static bool matches_event_name(const char *s)
{
    if (!(*s >= 'a' && *s <= 'z'))
        return false;
    for (s++; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '.'))
            return false;
    return true;
}

/* An identifier member (^[a-z][a-z0-9_]*$, at most maxlen). */
static const char *get_identifier(build *b, hf_json obj, const char *key, const char *base,
                                  size_t maxlen)
{
    const char *s = get_string(b, obj, key, base, true);
    if (s && !matches_identifier(s, maxlen)) {
        char *path = jp_key(base, key);
        if (maxlen == 64)
            schema(b, path, "must match ^[a-z][a-z0-9_]{0,63}$");
        else
            schema(b, path, "must match ^[a-z][a-z0-9_]*$");
        free(path);
        return NULL;
    }
    return s;
}

/* An optional integer member within lo..hi into *out (left alone when absent or bad). */
static bool get_int_in(build *b, hf_json obj, const char *key, const char *base, long long lo,
                       long long hi, int64_t *out)
{
    hf_json v = hf_json_get(obj, key);
    if (!v)
        return false;
    long long x;
    /* An integer as JSON Schema sees one: 5, or 5.0 and 1e3 (a number without a fraction). */
    bool integral = hf_json_int(v, &x);
    if (!integral && YAJL_IS_NUMBER(v) && (v->u.number.flags & YAJL_NUMBER_DOUBLE_VALID) &&
        v->u.number.d == trunc(v->u.number.d) && fabs(v->u.number.d) <= 9007199254740992.0) {
        x = (long long)v->u.number.d;
        integral = true;
    }
    if (!integral || x < lo || x > hi) {
        char *path = jp_key(base, key);
        schema(b, path, "must be an integer %lld..%lld", lo, hi);
        free(path);
        return false;
    }
    *out = x;
    return true;
}

/* Checks every template string under v parses; problems at each string's path. */
static void check_templates(build *b, hf_json v, const char *path)
{
    if (YAJL_IS_STRING(v)) {
        if (!wf_template_is_dynamic(v->u.string, strlen(v->u.string)))
            return;
        char err[320];
        if (wf_template_check(v, NULL, NULL, err, sizeof err) != 0)
            schema(b, path, "%s", err);
    } else if (YAJL_IS_ARRAY(v)) {
        for (size_t i = 0; i < v->u.array.len; i++) {
            char *p = jp_index(path, i);
            check_templates(b, v->u.array.values[i], p);
            free(p);
        }
    } else if (YAJL_IS_OBJECT(v)) {
        for (size_t i = 0; i < v->u.object.len; i++) {
            char *p = jp_key(path, v->u.object.keys[i]);
            check_templates(b, v->u.object.values[i], p);
            free(p);
        }
    }
}

static wf_expr *get_expr(build *b, hf_json obj, const char *key, const char *base, bool required)
{
    const char *src = get_string(b, obj, key, base, required);
    if (!src)
        return NULL;
    char err[320];
    wf_expr *e = wf_expr_parse(src, err, sizeof err);
    if (!e) {
        char *path = jp_key(base, key);
        schema(b, path, "%s", err);
        free(path);
    }
    return e;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* n digits at *s as a number; advances. */
static bool digits(const char **s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*s)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *s += n;
    *out = v;
    return true;
}

/* RFC 3339 date-time: 2026-03-18T09:41:27(.945)?(Z|+02:00). */
static bool is_rfc3339_syntax(const char *s)
{
    int y, mo, d, h, mi, se, oh, om;
    if (!digits(&s, 4, &y) || *s++ != '-' || !digits(&s, 2, &mo) || *s++ != '-' ||
        !digits(&s, 2, &d) || (*s != 'T' && *s != 't') || !*s++ || !digits(&s, 2, &h) ||
        *s++ != ':' || !digits(&s, 2, &mi) || *s++ != ':' || !digits(&s, 2, &se))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 60)
        return false;
    if (*s == '.') {
        s++;
        if (*s < '0' || *s > '9')
            return false;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    if (*s == 'Z' || *s == 'z')
        return s[1] == '\0';
    if (*s != '+' && *s != '-')
        return false;
    s++;
    return digits(&s, 2, &oh) && *s++ == ':' && digits(&s, 2, &om) && *s == '\0' && oh <= 23 &&
           om <= 59;
}

/* is_rfc3339_syntax, and within what the executor's parser takes (years 1000-9999 in UTC). */
static bool is_rfc3339(const char *s)
{
    int64_t ms;
    return is_rfc3339_syntax(s) && hf_parse_rfc3339(s, &ms);
}

static const char *const common_node_members[] = {"id",         "type",     "name", "retry",
                                                  "timeout_ms", "metadata", "ui",   NULL};
static const char *const type_members[][4] = {
    {"connector", "action", "params", NULL},
    {"if", NULL},
    {"output", NULL},
    {"delay_ms", "until", NULL},
};

static void build_retry(build *b, hf_json v, const char *base, wf_retry *r)
{
    if (!hf_json_is_object(v)) {
        schema(b, base, "must be an object");
        return;
    }
    static const char *const allowed[] = {"max_attempts", "initial_ms", "max_ms", "multiplier",
                                          NULL};
    check_members(b, v, base, allowed, NULL, NULL);
    int64_t x;
    if (get_int_in(b, v, "max_attempts", base, 1, 20, &x))
        r->max_attempts = (int)x;
    bool has_initial = get_int_in(b, v, "initial_ms", base, 0, 3600000, &r->initial_ms);
    bool has_max = get_int_in(b, v, "max_ms", base, 0, 86400000, &r->max_ms);
    if (has_max && r->max_ms < r->initial_ms) {
        char *path = jp_key(base, "max_ms");
        schema(b, path, "must be at least initial_ms (%lld)", (long long)r->initial_ms);
        free(path);
    } else if (has_initial && r->max_ms < r->initial_ms) { /* against the default max_ms */
        char *path = jp_key(base, "initial_ms");
        schema(b, path, "must be at most max_ms (%lld by default; set max_ms too)",
               (long long)r->max_ms);
        free(path);
    }
    hf_json m = hf_json_get(v, "multiplier");
    if (m) {
        char *path = jp_key(base, "multiplier");
        if (!YAJL_IS_NUMBER(m) || !(m->u.number.flags & YAJL_NUMBER_DOUBLE_VALID) ||
            m->u.number.d < 1.0 || m->u.number.d > 10.0)
            schema(b, path, "must be a number 1..10");
        else
            r->multiplier = m->u.number.d;
        free(path);
    }
}

static void build_node(build *b, size_t i, hf_json v)
{
    wf_def *d = b->d;
    wf_node *n = &d->nodes[i];
    n->retry =
        (wf_retry){.max_attempts = 3, .initial_ms = 1000, .max_ms = 60000, .multiplier = 2.0};
    n->timeout_ms = 10000;
    char *base = jp_index("nodes", i);
    if (!hf_json_is_object(v)) {
        schema(b, base, "must be an object");
        free(base);
        return;
    }
    n->id = get_identifier(b, v, "id", base, 64);
    if (n->id) {
        ssize_t first = -1;
        for (size_t k = 0; k < i && first < 0; k++)
            if (b->has_id[k] && strcmp(d->nodes[k].id, n->id) == 0)
                first = (ssize_t)k;
        if (first >= 0) {
            char *path = jp_key(base, "id");
            schema(b, path, "duplicate id '%s' (also nodes[%zd])", n->id, first);
            free(path);
        } else {
            b->has_id[i] = true;
        }
    }
    const char *type = get_string(b, v, "type", base, true);
    int t = -1;
    for (int k = 0; type && k < 4; k++)
        if (strcmp(type, type_names[k]) == 0)
            t = k;
    if (type && t < 0) {
        char *path = jp_key(base, "type");
        schema(b, path, "must be one of action, condition, transform, delay");
        free(path);
    }

    /* Members: the common ones plus the type's own; the other types' are "not allowed". */
    const char *allowed[16], *others[16];
    size_t na = 0, no = 0;
    for (size_t k = 0; common_node_members[k]; k++)
        allowed[na++] = common_node_members[k];
    for (int k = 0; k < 4; k++)
        for (size_t m = 0; type_members[k][m]; m++) {
            if (t < 0 || k == t)
                allowed[na++] = type_members[k][m];
            else
                others[no++] = type_members[k][m];
        }
    allowed[na] = others[no] = NULL;
    char why[64];
    snprintf(why, sizeof why, "on %s nodes", t >= 0 ? type_names[t] : "");
    check_members(b, v, base, allowed, others, why);

    get_string(b, v, "name", base, false);
    hf_json r = hf_json_get(v, "retry");
    if (r) {
        char *path = jp_key(base, "retry");
        build_retry(b, r, path, &n->retry);
        free(path);
    }
    get_int_in(b, v, "timeout_ms", base, 100, 300000, &n->timeout_ms);
    hf_json md = hf_json_get(v, "metadata");
    if (md && !hf_json_is_object(md)) {
        char *path = jp_key(base, "metadata");
        schema(b, path, "must be an object");
        free(path);
    } else {
        n->metadata = md;
        if (md) {
            char *path = jp_key(base, "metadata");
            check_no_repeats(b, md, path);
            free(path);
        }
    }
    hf_json ui = hf_json_get(v, "ui");
    if (ui) {
        char *path = jp_key(base, "ui");
        check_no_repeats(b, ui, path);
        free(path);
    }
    if (t < 0) {
        free(base);
        return;
    }
    n->type = (wf_node_type)t;
    b->typed[i] = true;
    char *path = NULL;
    switch (n->type) {
    case WF_ACTION: {
        n->connector = get_identifier(b, v, "connector", base, SIZE_MAX);
        n->action = get_identifier(b, v, "action", base, SIZE_MAX);
        hf_json params = hf_json_get(v, "params");
        path = jp_key(base, "params");
        n->params = &empty_object;
        if (params && !hf_json_is_object(params)) {
            schema(b, path, "must be an object");
        } else if (params) {
            n->params = params;
            check_templates(b, params, path);
            check_no_repeats(b, params, path);
        }
        break;
    }
    case WF_CONDITION:
        n->condition = get_expr(b, v, "if", base, true);
        break;
    case WF_TRANSFORM:
        n->output = hf_json_get(v, "output");
        path = jp_key(base, "output");
        if (!n->output) {
            schema(b, path, "required");
        } else {
            check_templates(b, n->output, path);
            check_no_repeats(b, n->output, path);
        }
        break;
    case WF_DELAY: {
        hf_json ms = hf_json_get(v, "delay_ms"), until = hf_json_get(v, "until");
        if (!ms == !until) {
            schema(b, base, "a delay node needs exactly one of delay_ms and until");
        } else if (ms) {
            get_int_in(b, v, "delay_ms", base, 0, WF_MAX_DELAY_MS, &n->delay_ms);
        } else {
            path = jp_key(base, "until");
            const char *s = hf_json_str(until);
            if (!s)
                schema(b, path, "must be a string (an RFC 3339 time or a template)");
            else if (wf_template_is_dynamic(s, strlen(s)))
                check_templates(b, until, path);
            else if (!is_rfc3339(s))
                schema(b, path, "must be an RFC 3339 time (2026-03-18T09:41:27Z) or a template");
            n->until = until;
        }
        break;
    }
    }
    free(path);
    free(base);
}

static ssize_t find_node(const build *b, const char *id)
{
    for (size_t i = 0; i < b->d->nnodes; i++)
        if (b->has_id[i] && strcmp(b->d->nodes[i].id, id) == 0)
            return (ssize_t)i;
    return -1;
}

static ssize_t edge_end(build *b, hf_json e, const char *key, const char *base)
{
    const char *id = get_string(b, e, key, base, true);
    if (!id)
        return -1;
    ssize_t k = find_node(b, id);
    if (k < 0) {
        char *path = jp_key(base, key);
        schema(b, path, "no node has the id '%s'", id);
        free(path);
    }
    return k;
}

static void build_edges(build *b, hf_json edges)
{
    wf_def *d = b->d;
    d->nedges = hf_json_len(edges);
    d->edges = xcalloc(d->nedges ? d->nedges : 1, sizeof *d->edges);
    b->edge_ok = xcalloc(d->nedges ? d->nedges : 1, sizeof *b->edge_ok);
    static const char *const allowed[] = {"from", "to", "when", NULL};
    for (size_t j = 0; j < d->nedges; j++) {
        hf_json e = hf_json_at(edges, j);
        wf_edge *edge = &d->edges[j];
        edge->when = -1;
        char *base = jp_index("edges", j);
        if (!hf_json_is_object(e)) {
            schema(b, base, "must be an object");
            free(base);
            continue;
        }
        check_members(b, e, base, allowed, NULL, NULL);
        ssize_t from = edge_end(b, e, "from", base), to = edge_end(b, e, "to", base);
        hf_json when = hf_json_get(e, "when");
        bool ok = from >= 0 && to >= 0;
        if (when) {
            char *path = jp_key(base, "when");
            if (!YAJL_IS_TRUE(when) && !YAJL_IS_FALSE(when)) {
                schema(b, path, "must be true or false");
            } else {
                edge->when = YAJL_IS_TRUE(when);
                if (from >= 0 && b->typed[from] && d->nodes[from].type != WF_CONDITION)
                    schema(b, path,
                           "only edges leaving a condition node may have when ('%s' is %s %s "
                           "node)",
                           d->nodes[from].id, d->nodes[from].type == WF_ACTION ? "an" : "a",
                           type_names[d->nodes[from].type]);
            }
            free(path);
        }
        if (ok) {
            edge->from = (size_t)from;
            edge->to = (size_t)to;
            for (size_t k = 0; k < j && ok; k++) {
                if (b->edge_ok[k] && d->edges[k].from == edge->from && d->edges[k].to == edge->to) {
                    schema(b, base, "duplicate edge %s -> %s (also edges[%zu])", d->nodes[from].id,
                           d->nodes[to].id, k);
                    ok = false;
                }
            }
        }
        b->edge_ok[j] = ok;
        free(base);
    }
    /* Adjacency over the usable edges. */
    for (size_t j = 0; j < d->nedges; j++) {
        if (!b->edge_ok[j])
            continue;
        wf_node *from = &d->nodes[d->edges[j].from];
        from->out_edges = xrealloc(from->out_edges, (from->nout + 1) * sizeof *from->out_edges);
        from->out_edges[from->nout++] = j;
        d->nodes[d->edges[j].to].nin++;
    }
}

/* Depth-first search from u over nodes not yet in topo; a grey target closes a cycle. */
static void find_cycles(build *b, size_t u, char *colour, const bool *placed, size_t *stack,
                        size_t depth)
{
    wf_def *d = b->d;
    colour[u] = 1;
    stack[depth] = u;
    for (size_t k = 0; k < d->nodes[u].nout; k++) {
        size_t j = d->nodes[u].out_edges[k], v = d->edges[j].to;
        if (placed[v])
            continue;
        if (colour[v] == 1) {
            hf_buf msg = {0};
            size_t at = depth;
            while (stack[at] != v)
                at--;
            hf_buf_puts(&msg, "cycle: ");
            for (size_t s = at; s <= depth; s++)
                hf_buf_printf(&msg, "%s -> ", d->nodes[stack[s]].id);
            hf_buf_puts(&msg, d->nodes[v].id);
            char *path = jp_index("edges", j);
            problem_add(b->probs, "cycle", path, "%s", msg.data);
            free(path);
            hf_buf_free(&msg);
        } else if (colour[v] == 0) {
            find_cycles(b, v, colour, placed, stack, depth + 1);
        }
    }
    colour[u] = 2;
}

/* Kahn's algorithm, taking the lowest ready index first so the order follows the document. */
static void build_topo(build *b)
{
    wf_def *d = b->d;
    size_t n = d->nnodes;
    d->topo = xcalloc(n ? n : 1, sizeof *d->topo);
    size_t *indeg = xcalloc(n ? n : 1, sizeof *indeg);
    bool *placed = xcalloc(n ? n : 1, sizeof *placed);
    size_t want = 0;
    for (size_t i = 0; i < n; i++) {
        indeg[i] = d->nodes[i].nin;
        want += b->has_id[i];
    }
    for (;;) {
        size_t next = n;
        for (size_t i = 0; i < n && next == n; i++)
            if (b->has_id[i] && !placed[i] && indeg[i] == 0)
                next = i;
        if (next == n)
            break;
        placed[next] = true;
        d->topo[b->ntopo++] = next;
        for (size_t k = 0; k < d->nodes[next].nout; k++)
            indeg[d->edges[d->nodes[next].out_edges[k]].to]--;
    }
    if (b->ntopo < want) {
        char *colour = xcalloc(n, 1);
        size_t *stack = xcalloc(n, sizeof *stack);
        for (size_t i = 0; i < n; i++)
            if (b->has_id[i] && !placed[i] && colour[i] == 0)
                find_cycles(b, i, colour, placed, stack, 0);
        free(colour);
        free(stack);
    }
    free(indeg);
    free(placed);
}

static void def_free_parts(wf_def *d)
{
    if (!d)
        return;
    wf_expr_free(d->filter);
    for (size_t i = 0; i < d->nnodes; i++) {
        wf_expr_free(d->nodes[i].condition);
        free(d->nodes[i].out_edges);
    }
    free(d->nodes);
    free(d->edges);
    free(d->topo);
    hf_json_free(d->doc);
    free(d);
}

void wf_free(wf_def *d)
{
    def_free_parts(d);
}

static void build_free(build *b)
{
    free(b->has_id);
    free(b->typed);
    free(b->edge_ok);
}

/* The structural pass over doc (which the new definition owns from here on). */
static wf_def *build_def(hf_json doc, build *b)
{
    wf_def *d = xcalloc(1, sizeof *d);
    d->doc = doc;
    b->d = d;
    if (!hf_json_is_object(doc)) {
        schema(b, "", "a workflow definition must be a JSON object");
        b->has_id = xcalloc(1, 1);
        b->typed = xcalloc(1, 1);
        b->edge_ok = xcalloc(1, 1);
        d->topo = xcalloc(1, sizeof *d->topo);
        d->nodes = xcalloc(1, sizeof *d->nodes);
        d->edges = xcalloc(1, sizeof *d->edges);
        return d;
    }
    static const char *const top[] = {"name",  "description", "trigger", "nodes",
                                      "edges", "ui",          NULL};
    check_members(b, doc, "", top, NULL, NULL);
    check_no_repeats(b, hf_json_get(doc, "ui"), "ui");
    d->name = get_string(b, doc, "name", "", true);
    if (d->name && (!d->name[0] || hf_utf8_length(d->name) > WF_MAX_NAME)) {
        schema(b, "name", "must be 1..%d characters", WF_MAX_NAME);
    } else if (d->name) {
        /* The name becomes the workflow's when none is given beside it (API, apply): the same
         * rule as for that one. */
        for (const char *p = d->name; *p; p++) {
            if ((unsigned char)*p < 0x20 || *p == 0x7f) {
                schema(b, "name", "must not contain control characters");
                break;
            }
        }
    }
    get_string(b, doc, "description", "", false);

    hf_json trig = hf_json_get(doc, "trigger");
    if (!trig) {
        schema(b, "trigger", "required");
    } else if (!hf_json_is_object(trig)) {
        schema(b, "trigger", "must be an object");
    } else {
        static const char *const allowed[] = {"connector", "event", "filter", NULL};
        check_members(b, trig, "trigger", allowed, NULL, NULL);
        d->trigger_connector = get_identifier(b, trig, "connector", "trigger", SIZE_MAX);
        d->trigger_event = get_string(b, trig, "event", "trigger", true);
        if (d->trigger_event && !matches_event_name(d->trigger_event)) {
            schema(b, "trigger.event", "must match ^[a-z][a-z0-9_.]*$");
            d->trigger_event = NULL;
        }
        d->filter = get_expr(b, trig, "filter", "trigger", false);
    }

    hf_json nodes = hf_json_get(doc, "nodes");
    if (!nodes)
        schema(b, "nodes", "required");
    else if (!hf_json_is_array(nodes))
        schema(b, "nodes", "must be an array");
    else if (hf_json_len(nodes) == 0)
        schema(b, "nodes", "needs at least one node");
    else if (hf_json_len(nodes) > WF_MAX_NODES)
        schema(b, "nodes", "at most %d nodes", WF_MAX_NODES);
    else
        d->nnodes = hf_json_len(nodes);
    d->nodes = xcalloc(d->nnodes ? d->nnodes : 1, sizeof *d->nodes);
    b->has_id = xcalloc(d->nnodes ? d->nnodes : 1, sizeof *b->has_id);
    b->typed = xcalloc(d->nnodes ? d->nnodes : 1, sizeof *b->typed);
    for (size_t i = 0; i < d->nnodes; i++)
        build_node(b, i, hf_json_at(nodes, i));

    hf_json edges = hf_json_get(doc, "edges");
    if (edges && !hf_json_is_array(edges)) {
        schema(b, "edges", "must be an array");
        edges = NULL;
    } else if (edges && hf_json_len(edges) > WF_MAX_EDGES) {
        schema(b, "edges", "at most %d edges", WF_MAX_EDGES);
        edges = NULL;
    }
    build_edges(b, edges);
    build_topo(b);
    return d;
}

wf_def *wf_parse(const char *json, size_t len, char *err, size_t errlen)
{
    hf_json doc = hf_json_parse(json, len, err, errlen);
    if (!doc)
        return NULL;
    wf_problems probs = {0};
    build b = {.probs = &probs};
    wf_def *d = build_def(doc, &b);
    build_free(&b);
    if (probs.n) {
        const wf_problem *p = &probs.items[0];
        if (p->path[0])
            hf_err(err, errlen, "%s: %s", p->path, p->message);
        else
            hf_err(err, errlen, "%s", p->message);
        wf_problems_free(&probs);
        def_free_parts(d);
        return NULL;
    }
    return d;
}

ssize_t wf_node_index(const wf_def *d, const char *id)
{
    for (size_t i = 0; d && id && i < d->nnodes; i++)
        if (d->nodes[i].id && strcmp(d->nodes[i].id, id) == 0)
            return (ssize_t)i;
    return -1;
}

/* ---- validation against the catalog ---------------------------------------------------- */

typedef struct vstate {
    build *b;
    const hf_catalog *cat;
    hf_json sample;           /* the trigger event's sample payload, or NULL (unchecked) */
    const char *trigger_desc; /* "meta message" */
    hf_json *action_json;     /* per node: its catalog action, or NULL */
    bool *upstream;           /* upstream[i * n + k]: node k is upstream of node i */
} vstate;

typedef struct refctx {
    vstate *vs;
    ssize_t node;      /* the node that reads, -1 for the trigger filter */
    const char *jpath; /* where the expression or template is */
} refctx;

/* One segment of a canonical path text. */
typedef struct pseg {
    char *key; /* NULL: index */
    size_t index;
} pseg;

static void psegs_free(pseg *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(s[i].key);
    free(s);
}

/* Splits a path text as wf_expr_each_path spells it (root first, as a key). */
static pseg *path_split(const char *t, size_t *n)
{
    size_t cap = strlen(t) + 1, cnt = 0;
    pseg *s = xcalloc(cap, sizeof *s);
    size_t i = 0;
    while (t[i] && t[i] != '.' && t[i] != '[')
        i++;
    s[cnt++].key = xstrndup(t, i);
    while (t[i]) {
        if (t[i] == '.') {
            size_t start = ++i;
            while (t[i] && t[i] != '.' && t[i] != '[')
                i++;
            s[cnt++].key = xstrndup(t + start, i - start);
        } else if (t[i + 1] == '"') {
            hf_buf key = {0};
            for (i += 2; t[i] && t[i] != '"'; i++) {
                if (t[i] == '\\' && t[i + 1] == 'u') {
                    char hex[3] = {t[i + 4], t[i + 5], '\0'};
                    hf_buf_putc(&key, (char)strtol(hex, NULL, 16));
                    i += 5;
                } else {
                    if (t[i] == '\\')
                        i++;
                    hf_buf_putc(&key, t[i]);
                }
            }
            s[cnt++].key = key.data ? hf_buf_steal(&key) : xstrdup("");
            i += 2; /* the closing "] */
        } else {
            s[cnt++].index = strtoull(t + i + 1, NULL, 10);
            while (t[i] && t[i] != ']')
                i++;
            i++;
        }
    }
    *n = cnt;
    return s;
}

static const char *json_type_name(hf_json v)
{
    if (!v || YAJL_IS_NULL(v))
        return "null";
    if (YAJL_IS_STRING(v))
        return "string";
    if (YAJL_IS_NUMBER(v))
        return "number";
    if (YAJL_IS_TRUE(v) || YAJL_IS_FALSE(v))
        return "boolean";
    if (YAJL_IS_ARRAY(v))
        return "array";
    return "object";
}

static const char *json_str_or(hf_json v, const char *fallback)
{
    return YAJL_IS_STRING(v) ? v->u.string : fallback;
}

static bool json_str_is(hf_json v, const char *s)
{
    return YAJL_IS_STRING(v) && strcmp(v->u.string, s) == 0;
}

/* Where segs stop matching the sample's shape: -1 when they fit (or the shape is unknown:
 * null, an empty object or array), else the failing segment with the reason in why. */
static ssize_t sample_mismatch(hf_json cur, const pseg *segs, size_t n, char *why, size_t whylen)
{
    for (size_t k = 0; k < n; k++) {
        if (!cur || YAJL_IS_NULL(cur))
            return -1;
        if (hf_json_is_object(cur)) {
            if (hf_json_len(cur) == 0)
                return -1;
            if (!segs[k].key) {
                snprintf(why, whylen, "is an object, not an array");
                return (ssize_t)k;
            }
            hf_json child = hf_json_get(cur, segs[k].key);
            if (!child) {
                snprintf(why, whylen, "has no field '%s'", segs[k].key);
                return (ssize_t)k;
            }
            cur = child;
        } else if (hf_json_is_array(cur)) {
            if (hf_json_len(cur) == 0)
                return -1;
            if (segs[k].key) {
                snprintf(why, whylen, "is an array, not an object");
                return (ssize_t)k;
            }
            size_t len = hf_json_len(cur);
            cur = hf_json_at(cur, segs[k].index < len ? segs[k].index : 0);
        } else {
            snprintf(why, whylen, "is a %s, it has no fields", json_type_name(cur));
            return (ssize_t)k;
        }
    }
    return -1;
}

/* The text of the first n segments (root included). */
static char *segs_text(const pseg *segs, size_t n)
{
    hf_buf b = {0};
    hf_buf_puts(&b, segs[0].key);
    for (size_t k = 1; k < n; k++) {
        if (segs[k].key) {
            char *p = jp_key("x", segs[k].key);
            hf_buf_puts(&b, p + 1);
            free(p);
        } else {
            hf_buf_printf(&b, "[%zu]", segs[k].index);
        }
    }
    return hf_buf_steal(&b);
}

/* Drops a UTF-8 sequence that snprintf's truncation left incomplete at the end of s. */
static void utf8_cut(char *s)
{
    size_t n = strlen(s), lead = n;
    while (lead > 0 && ((unsigned char)s[lead - 1] & 0xc0) == 0x80)
        lead--;
    if (lead == 0 || (unsigned char)s[lead - 1] < 0x80)
        return;
    unsigned char c = (unsigned char)s[lead - 1];
    size_t want = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
    if (n - (lead - 1) < want)
        s[lead - 1] = '\0';
}

/* "<text>: <first `at` segments> <why><where>" as an unknown_field problem. why may have
 * been cut short by a fixed buffer (it quotes a key). */
static void unknown_field(refctx *rc, const char *text, const pseg *segs, size_t at,
                          const char *where, const char *why)
{
    char *prefix = segs_text(segs, at), *reason = xstrdup(why);
    utf8_cut(reason);
    problem_add(rc->vs->b->probs, "unknown_field", rc->jpath, "%s: %s %s%s", text, prefix, reason,
                where);
    free(reason);
    free(prefix);
}

/* nodes.<id>.output.<rest> against a transform's output template. */
static void check_transform_output(refctx *rc, const char *text, const pseg *segs, size_t n,
                                   hf_json tmpl)
{
    static const char where[] = " in the transform's output";
    char why[160];
    hf_json cur = tmpl;
    for (size_t k = 3; k < n; k++) {
        if (YAJL_IS_STRING(cur) && wf_template_is_dynamic(cur->u.string, strlen(cur->u.string)))
            return; /* rendered at run time: shape unknown */
        if (hf_json_is_object(cur) && segs[k].key) {
            hf_json child = hf_json_get(cur, segs[k].key);
            if (!child) {
                snprintf(why, sizeof why, "has no field '%s'", segs[k].key);
                unknown_field(rc, text, segs, k, where, why);
                return;
            }
            cur = child;
        } else if (hf_json_is_array(cur) && !segs[k].key) {
            if (segs[k].index >= hf_json_len(cur)) {
                snprintf(why, sizeof why, "has only %zu elements", hf_json_len(cur));
                unknown_field(rc, text, segs, k, where, why);
                return;
            }
            cur = hf_json_at(cur, segs[k].index);
        } else {
            snprintf(why, sizeof why, "is a%s %s here", hf_json_is_array(cur) ? "n" : "",
                     json_type_name(cur));
            unknown_field(rc, text, segs, k, where, why);
            return;
        }
    }
}

/* nodes.<id>.output.<field>... against the action's output.fields: a field must be declared;
 * object fields are open maps, arrays take an index and are open below it, scalars end. */
static void check_action_output(refctx *rc, const char *text, const pseg *segs, size_t n,
                                hf_json action, const wf_node *target)
{
    hf_json fields = hf_json_path(action, "output", "fields", NULL);
    char where[200], why[160];
    snprintf(where, sizeof where, " in the output of %s %s", target->connector, target->action);
    if (!segs[3].key) {
        unknown_field(rc, text, segs, 3, where, "is an object, not an array");
        return;
    }
    const char *type = hf_json_str(hf_json_get(fields, segs[3].key));
    if (!type) {
        snprintf(why, sizeof why, "has no field '%s'", segs[3].key);
        unknown_field(rc, text, segs, 3, where, why);
        return;
    }
    if (n == 4 || strcmp(type, "object") == 0)
        return;
    if (strcmp(type, "array") == 0) {
        if (segs[4].key)
            unknown_field(rc, text, segs, 4, where, "is an array, not an object");
        return;
    }
    snprintf(why, sizeof why, "is a%s %s, it has no fields", type[0] == 'i' ? "n" : "", type);
    unknown_field(rc, text, segs, 4, where, why);
}

static const char *const envelope_members[] = {"id",          "provider",    "event",   "account",
                                               "occurred_at", "received_at", "payload", NULL};
static const char *const tenant_members[] = {"id", "slug", "name", "environment", NULL};
static const char *const node_members[] = {"status", "output", "branch", NULL};

/* Called for every path an expression or template reads. */
static void check_ref(const char *text, void *arg)
{
    refctx *rc = arg;
    vstate *vs = rc->vs;
    wf_def *d = vs->b->d;
    size_t n;
    pseg *segs = path_split(text, &n);
    const char *root = segs[0].key;
    char why[320];
    if (n == 1) {
        /* The whole of event, tenant or nodes: nothing to check, except that the trigger
         * filter runs before any node has an output. */
        if (rc->node < 0 && strcmp(root, "nodes") == 0)
            problem_add(vs->b->probs, "not_upstream", rc->jpath,
                        "%s: the trigger filter runs before any node", text);
        goto done;
    }
    if (strcmp(root, "event") == 0 || strcmp(root, "tenant") == 0) {
        bool event = root[0] == 'e';
        const char *const *members = event ? envelope_members : tenant_members;
        if (!segs[1].key || !in_list(segs[1].key, members)) {
            hf_buf list = {0};
            for (size_t k = 0; members[k]; k++)
                hf_buf_printf(&list, "%s%s", k ? ", " : "", members[k]);
            snprintf(why, sizeof why, "has only %s", list.data);
            unknown_field(rc, text, segs, 1, "", why);
            hf_buf_free(&list);
        } else if (event && strcmp(segs[1].key, "payload") == 0) {
            ssize_t at =
                vs->sample ? sample_mismatch(vs->sample, segs + 2, n - 2, why, sizeof why) : -1;
            if (at >= 0) {
                char where[200];
                snprintf(where, sizeof where, " in the sample payload of %s", vs->trigger_desc);
                unknown_field(rc, text, segs, (size_t)at + 2, where, why);
            }
        } else if (n > 2) {
            unknown_field(rc, text, segs, 2, "", "is a string, it has no fields");
        }
        goto done;
    }
    /* nodes */
    if (!segs[1].key) {
        unknown_field(rc, text, segs, 1, "", "is keyed by node id, not indexed");
        goto done;
    }
    ssize_t target = find_node(vs->b, segs[1].key);
    if (target < 0) {
        problem_add(vs->b->probs, "not_upstream", rc->jpath, "%s: no node has the id '%s'", text,
                    segs[1].key);
        goto done;
    }
    if (rc->node < 0) {
        problem_add(vs->b->probs, "not_upstream", rc->jpath,
                    "%s: the trigger filter runs before any node", text);
        goto done;
    }
    if (!vs->upstream[(size_t)rc->node * d->nnodes + (size_t)target]) {
        problem_add(vs->b->probs, "not_upstream", rc->jpath, "%s: '%s' is not upstream of %s%s%s",
                    text, segs[1].key, d->nodes[rc->node].id ? "'" : "",
                    d->nodes[rc->node].id ? d->nodes[rc->node].id : "this node",
                    d->nodes[rc->node].id ? "'" : "");
        goto done;
    }
    if (n == 2)
        goto done;
    if (!segs[2].key || !in_list(segs[2].key, node_members)) {
        unknown_field(rc, text, segs, 2, "", "has only status, output and branch");
        goto done;
    }
    if (strcmp(segs[2].key, "output") != 0) {
        if (n > 3)
            unknown_field(rc, text, segs, 3, "",
                          segs[2].key[0] == 's' ? "is a string, it has no fields"
                                                : "is a boolean, it has no fields");
        goto done;
    }
    if (n == 3 || !vs->b->typed[target])
        goto done;
    const wf_node *t = &d->nodes[target];
    if (t->type == WF_ACTION && vs->action_json[target]) {
        check_action_output(rc, text, segs, n, vs->action_json[target], t);
    } else if (t->type == WF_TRANSFORM && t->output) {
        check_transform_output(rc, text, segs, n, t->output);
    } else if (t->type == WF_CONDITION || t->type == WF_DELAY) {
        /* The executor's outputs: {"result": true|false} and {"until": "<RFC 3339>"}. */
        const char *only = t->type == WF_CONDITION ? "result" : "until";
        if (!segs[3].key || strcmp(segs[3].key, only) != 0) {
            snprintf(why, sizeof why, "has only %s", only);
            unknown_field(
                rc, text, segs, 3,
                t->type == WF_CONDITION ? " (a condition's output)" : " (a delay's output)", why);
        } else if (n > 4) {
            unknown_field(rc, text, segs, 4, "",
                          t->type == WF_CONDITION ? "is a boolean, it has no fields"
                                                  : "is a string, it has no fields");
        }
    }
done:
    psegs_free(segs, n);
}

/* Walks v and hands every template string, with its JSON path, to check_ref via rc. */
static void check_template_refs(refctx *rc, hf_json v, const char *path)
{
    if (YAJL_IS_STRING(v)) {
        if (!wf_template_is_dynamic(v->u.string, strlen(v->u.string)))
            return;
        refctx at = *rc;
        at.jpath = path;
        char err[8];
        /* A template that does not parse was reported by the structural pass. */
        (void)!wf_template_check(v, check_ref, &at, err, sizeof err);
    } else if (YAJL_IS_ARRAY(v)) {
        for (size_t i = 0; i < v->u.array.len; i++) {
            char *p = jp_index(path, i);
            check_template_refs(rc, v->u.array.values[i], p);
            free(p);
        }
    } else if (YAJL_IS_OBJECT(v)) {
        for (size_t i = 0; i < v->u.object.len; i++) {
            char *p = jp_key(path, v->u.object.keys[i]);
            check_template_refs(rc, v->u.object.values[i], p);
            free(p);
        }
    }
}

/* Deep equality: objects ignore member order, numbers compare by value. */
static bool json_equal(hf_json a, hf_json b)
{
    bool an = !a || YAJL_IS_NULL(a), bn = !b || YAJL_IS_NULL(b);
    if (an || bn)
        return an && bn;
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case yajl_t_string:
        return strcmp(a->u.string, b->u.string) == 0;
    case yajl_t_number:
        if (a->u.number.flags & b->u.number.flags & YAJL_NUMBER_INT_VALID)
            return a->u.number.i == b->u.number.i;
        if (a->u.number.flags & b->u.number.flags & YAJL_NUMBER_DOUBLE_VALID)
            return a->u.number.d == b->u.number.d;
        return strcmp(a->u.number.r, b->u.number.r) == 0;
    case yajl_t_array:
        if (a->u.array.len != b->u.array.len)
            return false;
        for (size_t i = 0; i < a->u.array.len; i++)
            if (!json_equal(a->u.array.values[i], b->u.array.values[i]))
                return false;
        return true;
    case yajl_t_object:
        if (a->u.object.len != b->u.object.len)
            return false;
        for (size_t i = 0; i < a->u.object.len; i++) {
            hf_json other = hf_json_get(b, a->u.object.keys[i]);
            if (!other || !json_equal(a->u.object.values[i], other))
                return false;
        }
        return true;
    default:
        return true; /* true, false: the types matched */
    }
}

/* "a " or "an " before a type name; nothing before null or a phrase that has its own. */
static const char *article(const char *type)
{
    if (strcmp(type, "null") == 0 || strncmp(type, "a ", 2) == 0 || strncmp(type, "text", 4) == 0)
        return "";
    return strchr("aeiou", type[0]) ? "an " : "a ";
}

/* Does literal v fit an input type? Template strings: an exact one is unknown until run time
 * (fits), an interpolated one renders as a string. *actual names v's type for messages. */
static bool param_fits(const char *type, hf_json v, const char **actual)
{
    *actual = json_type_name(v);
    if (YAJL_IS_STRING(v) && wf_template_is_dynamic(v->u.string, strlen(v->u.string))) {
        if (wf_template_is_exact(v->u.string, strlen(v->u.string)))
            return true;
        *actual = "text (the template interpolates into a string)";
        return strcmp(type, "string") == 0;
    }
    if (strcmp(type, "integer") == 0) {
        if (YAJL_IS_NUMBER(v))
            *actual = "a number with a fraction";
        return YAJL_IS_INTEGER(v);
    }
    return strcmp(type, json_type_name(v)) == 0;
}

/* True when a template appears anywhere in v (only known at run time). */
static bool has_template(hf_json v)
{
    if (YAJL_IS_STRING(v))
        return wf_template_is_dynamic(v->u.string, strlen(v->u.string));
    for (size_t i = 0; i < hf_json_len(v); i++) {
        const char *key;
        hf_json member = hf_json_is_object(v) ? hf_json_member(v, i, &key) : hf_json_at(v, i);
        if (has_template(member))
            return true;
    }
    return false;
}

static void check_params(vstate *vs, size_t i, const char *base, hf_json action)
{
    wf_node *n = &vs->b->d->nodes[i];
    hf_json inputs = hf_json_get(action, "inputs");
    char *pbase = jp_key(base, "params");
    size_t before = vs->b->probs->n;
    for (size_t k = 0; k < hf_json_len(inputs); k++) {
        hf_json in = hf_json_at(inputs, k);
        const char *name = hf_json_str(hf_json_get(in, "name"));
        if (!name || !YAJL_IS_TRUE(hf_json_get(in, "required")) || hf_json_get(in, "default") ||
            hf_json_get(n->params, name))
            continue;
        char *path = jp_key(pbase, name);
        problem_add(vs->b->probs, "missing_param", path, "%s %s needs the input '%s' (%s)",
                    n->connector, n->action, name,
                    json_str_or(hf_json_get(in, "description"), "no description"));
        free(path);
    }
    for (size_t m = 0; m < hf_json_len(n->params); m++) {
        const char *key;
        hf_json v = hf_json_member(n->params, m, &key);
        char *path = jp_key(pbase, key);
        hf_json in = NULL;
        for (size_t k = 0; k < hf_json_len(inputs) && !in; k++)
            if (json_str_is(hf_json_get(hf_json_at(inputs, k), "name"), key))
                in = hf_json_at(inputs, k);
        if (!in) {
            hf_buf list = {0};
            for (size_t k = 0; k < hf_json_len(inputs); k++)
                hf_buf_printf(&list, "%s%s", k ? ", " : "",
                              json_str_or(hf_json_get(hf_json_at(inputs, k), "name"), "?"));
            problem_add(vs->b->probs, "unknown_param", path, "%s %s has no input '%s' (inputs: %s)",
                        n->connector, n->action, key, list.data ? list.data : "none");
            hf_buf_free(&list);
            free(path);
            continue;
        }
        const char *type = hf_json_str(hf_json_get(in, "type"));
        const char *actual;
        hf_json allowed = hf_json_get(in, "enum");
        if (type && !param_fits(type, v, &actual)) {
            problem_add(vs->b->probs, "param_type", path, "must be %s%s, not %s%s", article(type),
                        type, article(actual), actual);
        } else if (allowed && YAJL_IS_STRING(v) &&
                   !wf_template_is_dynamic(v->u.string, strlen(v->u.string))) {
            bool found = false;
            for (size_t k = 0; k < hf_json_len(allowed) && !found; k++)
                found = json_equal(hf_json_at(allowed, k), v);
            if (!found) {
                hf_buf list = {0};
                for (size_t k = 0; k < hf_json_len(allowed); k++)
                    hf_buf_printf(&list, "%s%s", k ? ", " : "",
                                  json_str_or(hf_json_at(allowed, k), "?"));
                problem_add(vs->b->probs, "param_type", path, "must be one of %s", list.data);
                hf_buf_free(&list);
            }
        }
        free(path);
    }
    /* Params known in full now, and right for each input: the connector's own rules as well
     * (what its request builder refuses, every run would fail on). */
    char err[320];
    if (vs->b->probs->n == before && !has_template(n->params) &&
        engine_connector_check_params(n->connector, n->action, n->params, err, sizeof err) != 0)
        problem_add(vs->b->probs, "param_rule", pbase, "%s %s refuses these params: %s",
                    n->connector, n->action, err);
    free(pbase);
}

/* Members of the embedded metadata that the catalog also has must still equal it: the
 * action's members (name, summary, simulatable, inputs, ...), "connector" as the connector id
 * or as an object of the connector's members (name, category, availability, ...). */
static void check_metadata(vstate *vs, size_t i, const char *base, const hf_connector *conn,
                           hf_json action)
{
    wf_node *n = &vs->b->d->nodes[i];
    char *mbase = jp_key(base, "metadata");
    for (size_t m = 0; m < hf_json_len(n->metadata); m++) {
        const char *key;
        hf_json v = hf_json_member(n->metadata, m, &key);
        char *path = jp_key(mbase, key);
        if (strcmp(key, "connector") == 0 && hf_json_is_object(v)) {
            hf_json cj = hf_connector_json(conn);
            for (size_t c = 0; c < hf_json_len(v); c++) {
                const char *ck;
                hf_json cv = hf_json_member(v, c, &ck), now = hf_json_get(cj, ck);
                if (now && !json_equal(cv, now)) {
                    char *cpath = jp_key(path, ck);
                    problem_add(vs->b->probs, "stale_metadata", cpath,
                                "differs from the catalog's %s %s", n->connector, ck);
                    free(cpath);
                }
            }
        } else if (strcmp(key, "connector") == 0 && YAJL_IS_STRING(v)) {
            if (strcmp(v->u.string, n->connector) != 0)
                problem_add(vs->b->probs, "stale_metadata", path,
                            "names connector '%s' but the node uses '%s'", v->u.string,
                            n->connector);
        } else {
            hf_json now = hf_json_get(action, key);
            if (now && !json_equal(v, now)) {
                hf_buf cur = {0};
                hf_json_serialize(now, &cur);
                if (cur.len <= 80)
                    problem_add(vs->b->probs, "stale_metadata", path,
                                "differs from the catalog's %s %s %s (now %s)", n->connector,
                                n->action, key, cur.data);
                else
                    problem_add(vs->b->probs, "stale_metadata", path,
                                "differs from the catalog's %s %s %s", n->connector, n->action,
                                key);
                hf_buf_free(&cur);
            }
        }
        free(path);
    }
    free(mbase);
}

static void count_path(const char *path, void *arg)
{
    (void)path;
    (*(size_t *)arg)++;
}

/* -1 if e reads the context, else its constant truthiness. */
static int constant_truth(const wf_expr *e)
{
    size_t paths = 0;
    wf_expr_each_path(e, count_path, &paths);
    bool v;
    char err[8];
    if (paths || wf_expr_eval_bool(e, NULL, &v, err, sizeof err) != 0)
        return -1;
    return v;
}

/* Reachability from the roots over edges that can be taken; reports every other node. */
static void check_reachable(vstate *vs)
{
    build *b = vs->b;
    wf_def *d = b->d;
    size_t n = d->nnodes;
    if (d->filter && constant_truth(d->filter) == 0)
        problem_add(b->probs, "unreachable", "trigger.filter",
                    "the filter is always false, so the workflow never runs");
    int *constant = xcalloc(n ? n : 1, sizeof *constant);
    bool *live = xcalloc(n ? n : 1, sizeof *live);
    size_t *queue = xcalloc(n ? n : 1, sizeof *queue), qn = 0;
    for (size_t i = 0; i < n; i++) {
        constant[i] = -1;
        if (b->typed[i] && d->nodes[i].type == WF_CONDITION && d->nodes[i].condition)
            constant[i] = constant_truth(d->nodes[i].condition);
        if (b->has_id[i] && d->nodes[i].nin == 0) {
            live[i] = true;
            queue[qn++] = i;
        }
    }
    for (size_t q = 0; q < qn; q++) {
        const wf_node *u = &d->nodes[queue[q]];
        for (size_t k = 0; k < u->nout; k++) {
            const wf_edge *e = &d->edges[u->out_edges[k]];
            if (e->when >= 0 && constant[e->from] >= 0 && constant[e->from] != e->when)
                continue;
            if (!live[e->to]) {
                live[e->to] = true;
                queue[qn++] = e->to;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!b->has_id[i] || live[i])
            continue;
        char *path = jp_index("nodes", i);
        const wf_edge *blocked = NULL;
        for (size_t j = 0; j < d->nedges && !blocked; j++) {
            const wf_edge *e = &d->edges[j];
            if (b->edge_ok[j] && e->to == i && live[e->from] && e->when >= 0 &&
                constant[e->from] >= 0 && constant[e->from] != e->when)
                blocked = e;
        }
        if (blocked)
            problem_add(b->probs, "unreachable", path,
                        "'%s' never runs: condition '%s' is always %s, so its when:%s branch "
                        "is never taken",
                        d->nodes[i].id, d->nodes[blocked->from].id,
                        constant[blocked->from] ? "true" : "false",
                        blocked->when ? "true" : "false");
        else
            problem_add(b->probs, "unreachable", path,
                        "'%s' never runs: no root leads to it through edges that can be taken",
                        d->nodes[i].id);
        free(path);
    }
    free(constant);
    free(live);
    free(queue);
}

/* upstream[i * n + k]: k reaches i over usable edges (k == i only on a cycle). */
static bool *compute_upstream(const build *b)
{
    const wf_def *d = b->d;
    size_t n = d->nnodes;
    bool *up = xcalloc(n * n + 1, sizeof *up);
    /* Incoming usable edges grouped by target (a counting sort). */
    size_t *first = xcalloc(n + 1, sizeof *first), *from = xcalloc(d->nedges + 1, sizeof *from);
    size_t *fill = xcalloc(n + 1, sizeof *fill);
    for (size_t j = 0; j < d->nedges; j++)
        if (b->edge_ok[j])
            first[d->edges[j].to + 1]++;
    for (size_t i = 0; i < n; i++)
        first[i + 1] += first[i];
    for (size_t j = 0; j < d->nedges; j++) {
        if (b->edge_ok[j]) {
            size_t t = d->edges[j].to;
            from[first[t] + fill[t]++] = d->edges[j].from;
        }
    }
    size_t *stack = xcalloc(n + 1, sizeof *stack); /* i itself may come back once, on a cycle */
    for (size_t i = 0; i < n; i++) {
        size_t sp = 0;
        stack[sp++] = i;
        while (sp) {
            size_t v = stack[--sp];
            for (size_t k = first[v]; k < first[v + 1]; k++) {
                if (!up[i * n + from[k]]) {
                    up[i * n + from[k]] = true;
                    stack[sp++] = from[k];
                }
            }
        }
    }
    free(stack);
    free(fill);
    free(from);
    free(first);
    return up;
}

static void validate_node(vstate *vs, size_t i)
{
    build *b = vs->b;
    wf_node *n = &b->d->nodes[i];
    char *base = jp_index("nodes", i);
    refctx rc = {.vs = vs, .node = (ssize_t)i};
    switch (n->type) {
    case WF_ACTION: {
        const hf_connector *conn =
            vs->cat && n->connector ? hf_catalog_find(vs->cat, n->connector) : NULL;
        if (vs->cat && n->connector && !conn) {
            char *path = jp_key(base, "connector");
            problem_add(b->probs, "unknown_connector", path, "no connector '%s' in the catalog",
                        n->connector);
            free(path);
        }
        const hf_action *act = conn && n->action ? hf_connector_action(conn, n->action) : NULL;
        if (conn && n->action && !act) {
            hf_buf list = {0};
            hf_json acts = hf_json_get(hf_connector_json(conn), "actions");
            for (size_t k = 0; k < hf_json_len(acts); k++)
                hf_buf_printf(&list, "%s%s", k ? ", " : "",
                              hf_json_str(hf_json_get(hf_json_at(acts, k), "id")));
            char *path = jp_key(base, "action");
            problem_add(b->probs, "unknown_action", path, "%s has no action '%s' (actions: %s)",
                        n->connector, n->action, list.data);
            free(path);
            hf_buf_free(&list);
        }
        if (act) {
            check_params(vs, i, base, hf_action_json(act));
            if (n->metadata)
                check_metadata(vs, i, base, conn, hf_action_json(act));
        }
        char *path = jp_key(base, "params");
        check_template_refs(&rc, n->params, path);
        free(path);
        break;
    }
    case WF_CONDITION:
        if (n->condition) {
            rc.jpath = base;
            char *path = jp_key(base, "if");
            rc.jpath = path;
            wf_expr_each_path(n->condition, check_ref, &rc);
            free(path);
        }
        break;
    case WF_TRANSFORM:
        if (n->output) {
            char *path = jp_key(base, "output");
            check_template_refs(&rc, n->output, path);
            free(path);
        }
        break;
    case WF_DELAY:
        if (n->until) {
            char *path = jp_key(base, "until");
            check_template_refs(&rc, n->until, path);
            free(path);
        }
        break;
    }
    free(base);
}

void wf_validate(const char *json, size_t len, const hf_catalog *cat, wf_problems *out)
{
    char err[320];
    hf_json doc = hf_json_parse(json, len, err, sizeof err);
    if (!doc) {
        problem_add(out, "schema", "", "%s", err);
        return;
    }
    build b = {.probs = out};
    wf_def *d = build_def(doc, &b);
    size_t n = d->nnodes;
    vstate vs = {.b = &b, .cat = cat};
    vs.action_json = xcalloc(n ? n : 1, sizeof *vs.action_json);
    vs.upstream = compute_upstream(&b);
    char *trigger_desc = NULL;

    if (cat && d->trigger_connector) {
        const hf_connector *conn = hf_catalog_find(cat, d->trigger_connector);
        if (!conn) {
            problem_add(out, "unknown_connector", "trigger.connector",
                        "no connector '%s' in the catalog", d->trigger_connector);
        } else if (d->trigger_event && !hf_connector_has_event(conn, d->trigger_event)) {
            hf_buf list = {0};
            hf_json evs = hf_json_get(hf_connector_json(conn), "webhook_events");
            for (size_t k = 0; k < hf_json_len(evs); k++)
                hf_buf_printf(&list, "%s%s", k ? ", " : "",
                              hf_json_str(hf_json_get(hf_json_at(evs, k), "name")));
            problem_add(out, "unknown_event", "trigger.event", "%s has no event '%s' (events: %s)",
                        d->trigger_connector, d->trigger_event, list.data);
            hf_buf_free(&list);
        } else if (d->trigger_event) {
            vs.sample = hf_connector_sample_payload(conn, d->trigger_event);
            trigger_desc = xasprintf("%s %s", d->trigger_connector, d->trigger_event);
            vs.trigger_desc = trigger_desc;
        }
    }
    for (size_t i = 0; cat && i < n; i++) {
        const wf_node *node = &d->nodes[i];
        if (!b.typed[i] || node->type != WF_ACTION || !node->connector || !node->action)
            continue;
        const hf_connector *conn = hf_catalog_find(cat, node->connector);
        const hf_action *act = conn ? hf_connector_action(conn, node->action) : NULL;
        vs.action_json[i] = act ? hf_action_json(act) : NULL;
    }
    if (d->filter) {
        refctx rc = {.vs = &vs, .node = -1, .jpath = "trigger.filter"};
        wf_expr_each_path(d->filter, check_ref, &rc);
    }
    for (size_t i = 0; i < n; i++)
        if (b.typed[i])
            validate_node(&vs, i);
    check_reachable(&vs);

    free(trigger_desc);
    free(vs.action_json);
    free(vs.upstream);
    build_free(&b);
    def_free_parts(d);
}
