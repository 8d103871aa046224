/* apply: configuration as code. Loads tenants, branches and roles, support approvals,
 * connections (tokens sealed) and workflows from a declarative JSON document into PostgreSQL,
 * idempotently and in one transaction; and `hookflow-engine apply FILE`. */
#include "apply.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "config.h"
#include "crypto.h"
#include "engine_cli.h"
#include "json.h"
#include "log.h"
#include "pg.h"
#include "secrets.h"
#include "workflow.h"

/* audit_log.actor and workflow_versions.created_by of every row apply writes. */
#define APPLY_ACTOR "apply"

/* pg_advisory_xact_lock key serialising concurrent applies ("hookflow" + 2 as a big-endian
 * 64-bit integer; migrate holds "hookflow"). Two applies would otherwise both see a tenant
 * missing and both insert it. */
#define APPLY_LOCK_KEY "7525356009429954425"

/* How much of a value from the document an error line quotes. */
#define QUOTE_MAX 80

/* The reason given for a token when no keyring was loaded; the command line recognises it and
 * adds why the key could not be loaded. */
#define NO_KEY_REASON "no token key to seal it with"

/* ---- the document, validated ----------------------------------------------------------------- */

/* An optional member that may also be null: left out (keep what the database has, or the
 * default for a new row), null (clear it) or set. */
typedef enum { FIELD_ABSENT, FIELD_NULL, FIELD_SET } field_state;

typedef struct opt_text {
    field_state state;
    char *value; /* owned; only when FIELD_SET */
    bool secret; /* wipe before freeing */
} opt_text;

/* Every *path is the member's JSON path ("tenants[0].connections[1]"), owned by the spec. Plain
 * const char * strings point into the parsed document, which outlives the specs. */
typedef struct role_spec {
    char *path;
    const char *subject, *role;
} role_spec;

typedef struct branch_spec {
    char *path;
    const char *branch;
    opt_text name;
    role_spec *roles;
    size_t nroles;
} branch_spec;

typedef struct approval_spec {
    char *path;
    const char *connector, *approved_by;
    opt_text note;
} approval_spec;

typedef struct connection_spec {
    char *path;
    const hf_connector *kind;
    const char *connector, *account;
    const char *status; /* NULL: left out */
    char *scopes_json;  /* the scopes array as JSON; NULL: left out */
    opt_text access, refresh, expires_at;
} connection_spec;

typedef struct workflow_spec {
    char *path;
    const char *name;
    int enabled;      /* 0, 1, or -1 when left out */
    char *definition; /* compact JSON */
    char *trigger_connector, *trigger_event;
} workflow_spec;

typedef struct tenant_spec {
    char *path;
    const char *slug, *name;
    const char *environment; /* NULL: left out */
    branch_spec *branches;
    size_t nbranches;
    approval_spec *approvals;
    size_t napprovals;
    connection_spec *connections;
    size_t nconnections;
    workflow_spec *workflows;
    size_t nworkflows;
} tenant_spec;

typedef struct document_spec {
    tenant_spec *tenants;
    size_t ntenants;
} document_spec;

/* What applying one tenant changed, for its summary line. */
typedef struct tenant_changes {
    bool created, updated;
    int branches_created, branches_updated, roles_granted, roles_changed;
    int approvals_granted, approvals_updated, connections_created, connections_updated;
    int workflows_created, workflows_updated, workflows_enabled, workflows_disabled;
    hf_buf versions; /* new versions of the updated workflows: "2, 5" */
} tenant_changes;

typedef struct apply_ctx {
    PGconn *db;
    const engine_keyring *keys;
    const hf_catalog *cat;
    const char *base_dir;
    char *err;
    size_t errlen;
} apply_ctx;

static void opt_text_free(opt_text *t)
{
    if (t->value && t->secret)
        memset(t->value, 0, strlen(t->value));
    free(t->value);
    t->value = NULL;
}

static void document_free(document_spec *doc)
{
    for (size_t i = 0; i < doc->ntenants; i++) {
        tenant_spec *t = &doc->tenants[i];
        for (size_t b = 0; b < t->nbranches; b++) {
            branch_spec *br = &t->branches[b];
            for (size_t r = 0; r < br->nroles; r++)
                free(br->roles[r].path);
            free(br->roles);
            opt_text_free(&br->name);
            free(br->path);
        }
        free(t->branches);
        for (size_t a = 0; a < t->napprovals; a++) {
            opt_text_free(&t->approvals[a].note);
            free(t->approvals[a].path);
        }
        free(t->approvals);
        for (size_t k = 0; k < t->nconnections; k++) {
            connection_spec *cs = &t->connections[k];
            opt_text_free(&cs->access);
            opt_text_free(&cs->refresh);
            opt_text_free(&cs->expires_at);
            free(cs->scopes_json);
            free(cs->path);
        }
        free(t->connections);
        for (size_t w = 0; w < t->nworkflows; w++) {
            workflow_spec *ws = &t->workflows[w];
            free(ws->definition);
            free(ws->trigger_connector);
            free(ws->trigger_event);
            free(ws->path);
        }
        free(t->workflows);
        free(t->path);
    }
    free(doc->tenants);
    doc->tenants = NULL;
    doc->ntenants = 0;
}

/* ---- errors and paths ------------------------------------------------------------------------ */

/* Writes "path: message" into the context's err ("top level: " for path "", no prefix for NULL);
 * returns -1. */
static int fail(apply_ctx *c, const char *path, const char *fmt, ...) HF_PRINTF(3, 4);
static int fail(apply_ctx *c, const char *path, const char *fmt, ...)
{
    hf_buf line = {0};
    if (path)
        hf_buf_printf(&line, "%s: ", *path ? path : "top level");
    va_list ap;
    va_start(ap, fmt);
    hf_buf_vprintf(&line, fmt, ap);
    va_end(ap);
    hf_err(c->err, c->errlen, "%s", line.data);
    hf_buf_free(&line);
    return -1;
}

/* s as a JSON string literal (so control characters cannot break the error line), cut to
 * QUOTE_MAX bytes at a character boundary. */
static const char *quote(char *out, size_t outlen, const char *s)
{
    size_t n = strlen(s), cut = n > QUOTE_MAX ? QUOTE_MAX : n;
    while (cut > 0 && cut < n && ((unsigned char)s[cut] & 0xC0) == 0x80)
        cut--;
    hf_buf b = {0};
    hf_json_append_string(&b, s, cut);
    if (cut < n)
        hf_buf_puts(&b, "...");
    snprintf(out, outlen, "%s", b.data);
    hf_buf_free(&b);
    return out;
}

static char *path_key(const char *path, const char *key)
{
    return *path ? xasprintf("%s.%s", path, key) : xstrdup(key);
}

static char *path_index(const char *path, size_t i)
{
    return xasprintf("%s[%zu]", path, i);
}

static const char *json_type_name(hf_json v)
{
    if (!v || YAJL_IS_NULL(v))
        return "null";
    if (YAJL_IS_STRING(v))
        return "a string";
    if (YAJL_IS_NUMBER(v))
        return "a number";
    if (YAJL_IS_OBJECT(v))
        return "an object";
    if (YAJL_IS_ARRAY(v))
        return "an array";
    return "a boolean";
}

/* Fails unless v is an object whose members are all in allowed (NULL-terminated), each once (a
 * second one would be ignored: the first is what is read). */
static int check_object(apply_ctx *c, hf_json v, const char *path, const char *const *allowed)
{
    if (!hf_json_is_object(v))
        return fail(c, path, "must be an object, not %s", json_type_name(v));
    for (size_t i = 0; i < hf_json_len(v); i++) {
        const char *key = NULL;
        (void)hf_json_member(v, i, &key);
        if (hf_json_member_repeats(v, i)) {
            char q[QUOTE_MAX + 16];
            return fail(c, path, "member %s is given twice", quote(q, sizeof q, key));
        }
        bool known = false;
        for (const char *const *a = allowed; *a && !known; a++)
            known = strcmp(*a, key) == 0;
        if (known)
            continue;
        hf_buf list = {0};
        for (const char *const *a = allowed; *a; a++)
            hf_buf_printf(&list, "%s%s", a == allowed ? "" : ", ", *a);
        char q[QUOTE_MAX + 16];
        int rc =
            fail(c, path, "unknown member %s (expected %s)", quote(q, sizeof q, key), list.data);
        hf_buf_free(&list);
        return rc;
    }
    return 0;
}

/* obj.key as a non-empty string; *out NULL when left out and !required. */
static int get_string(apply_ctx *c, hf_json obj, const char *path, const char *key, bool required,
                      const char **out)
{
    hf_json v = hf_json_get(obj, key);
    *out = NULL;
    if (!v && !required)
        return 0;
    char *p = path_key(path, key);
    int rc = 0;
    if (!v)
        rc = fail(c, p, "missing");
    else if (!YAJL_IS_STRING(v))
        rc = fail(c, p, "must be a string, not %s", json_type_name(v));
    else if (!*hf_json_str(v))
        rc = fail(c, p, "must not be empty");
    else
        *out = hf_json_str(v);
    free(p);
    return rc;
}

/* obj.key as a non-empty string, null, or left out. */
static int get_opt_text(apply_ctx *c, hf_json obj, const char *path, const char *key, opt_text *out)
{
    hf_json v = hf_json_get(obj, key);
    out->state = FIELD_ABSENT;
    if (!v)
        return 0;
    if (YAJL_IS_NULL(v)) {
        out->state = FIELD_NULL;
        return 0;
    }
    const char *s = NULL;
    if (get_string(c, obj, path, key, true, &s) != 0)
        return -1;
    out->state = FIELD_SET;
    out->value = xstrdup(s);
    return 0;
}

/* obj.key as an array; *out NULL when left out and !required. */
static int get_array(apply_ctx *c, hf_json obj, const char *path, const char *key, bool required,
                     hf_json *out)
{
    hf_json v = hf_json_get(obj, key);
    *out = NULL;
    if (!v && !required)
        return 0;
    char *p = path_key(path, key);
    int rc = 0;
    if (!v)
        rc = fail(c, p, "missing");
    else if (!hf_json_is_array(v))
        rc = fail(c, p, "must be an array, not %s", json_type_name(v));
    else
        *out = v;
    free(p);
    return rc;
}

/* Fails unless value is one of choices (NULL-terminated); path is the member's. */
static int check_choice(apply_ctx *c, const char *path, const char *value,
                        const char *const *choices)
{
    for (const char *const *ch = choices; *ch; ch++)
        if (strcmp(*ch, value) == 0)
            return 0;
    hf_buf list = {0};
    for (const char *const *ch = choices; *ch; ch++)
        hf_buf_printf(&list, "%s%s", ch == choices ? "" : ", ", *ch);
    char q[QUOTE_MAX + 16];
    int rc = fail(c, path, "%s is not one of %s", quote(q, sizeof q, value), list.data);
    hf_buf_free(&list);
    return rc;
}

/* ---- catalog checks -------------------------------------------------------------------------- */

/* The catalog connector id; fails naming the known ids. */
static int find_connector(apply_ctx *c, const char *path, const char *id, const hf_connector **out)
{
    *out = hf_catalog_find(c->cat, id);
    if (*out)
        return 0;
    hf_buf list = {0};
    for (size_t i = 0; i < hf_catalog_count(c->cat); i++)
        hf_buf_printf(&list, "%s%s", i ? ", " : "", hf_connector_id(hf_catalog_at(c->cat, i)));
    char q[QUOTE_MAX + 16];
    int rc = fail(c, path, "%s is not a catalog connector (one of %s)", quote(q, sizeof q, id),
                  list.data);
    hf_buf_free(&list);
    return rc;
}

/* Appends the values of member `field` of every element of the connector's array `array`. */
static void list_names(const hf_connector *k, const char *array, const char *field, hf_buf *out)
{
    hf_json arr = hf_json_get(hf_connector_json(k), array);
    for (size_t i = 0; i < hf_json_len(arr); i++) {
        const char *name = hf_json_str(hf_json_get(hf_json_at(arr, i), field));
        if (name)
            hf_buf_printf(out, "%s%s", out->len ? ", " : "", name);
    }
}

static int check_event(apply_ctx *c, const char *path, const hf_connector *k, const char *event)
{
    if (hf_connector_has_event(k, event))
        return 0;
    hf_buf list = {0};
    list_names(k, "webhook_events", "name", &list);
    char q[QUOTE_MAX + 16];
    int rc = fail(c, path, "%s is not an event of %s (one of %s)", quote(q, sizeof q, event),
                  hf_connector_id(k), list.len ? list.data : "none");
    hf_buf_free(&list);
    return rc;
}

/* Reports reason, which may start with a JSON path inside the definition ("edges[1].to: ..."),
 * under dpath: "tenants[0].workflows[0].definition.edges[1].to: ...". */
static int fail_inside(apply_ctx *c, const char *dpath, const char *reason)
{
    size_t n = strspn(reason, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.[]");
    if (n == 0 || strncmp(reason + n, ": ", 2) != 0)
        return fail(c, dpath, "%s", reason);
    hf_buf p = {0};
    hf_buf_printf(&p, "%s%s%.*s", dpath, reason[0] == '[' ? "" : ".", (int)n, reason);
    int rc = fail(c, p.data, "%s", reason + n + 2);
    hf_buf_free(&p);
    return rc;
}

/* Checks an action node's connector and action against the catalog. */
static int check_action_node(apply_ctx *c, const wf_node *node, const char *path)
{
    const hf_connector *k = NULL;
    char *p = path_key(path, "connector");
    int rc = find_connector(c, p, node->connector, &k);
    free(p);
    if (rc != 0 || hf_connector_action(k, node->action))
        return rc;
    hf_buf list = {0};
    list_names(k, "actions", "id", &list);
    char q[QUOTE_MAX + 16];
    p = path_key(path, "action");
    rc = fail(c, p, "%s is not an action of %s (one of %s)", quote(q, sizeof q, node->action),
              node->connector, list.len ? list.data : "none");
    free(p);
    hf_buf_free(&list);
    return rc;
}

/* Runs the project's full validation (wf_validate: params against the action inputs, fields
 * read by templates, reachability, ...) and reports its first problem, so that apply accepts
 * exactly what the workflow API would. */
static int validate_definition(apply_ctx *c, const char *definition, const char *dpath)
{
    wf_problems problems = {0};
    wf_validate(definition, strlen(definition), c->cat, &problems);
    int rc = 0;
    if (problems.n > 0) {
        const wf_problem *pr = &problems.items[0];
        char *p = *pr->path ? path_key(dpath, pr->path) : xstrdup(dpath);
        if (problems.n > 1)
            rc = fail(c, p, "%s (%s; and %zu more problem%s)", pr->message, pr->code,
                      problems.n - 1, problems.n == 2 ? "" : "s");
        else
            rc = fail(c, p, "%s (%s)", pr->message, pr->code);
        free(p);
    }
    wf_problems_free(&problems);
    return rc;
}

/* ---- parsing the document -------------------------------------------------------------------- */

/* Line and column (1-based, columns in bytes) of byte offset off of text. */
static void line_column(const char *text, size_t len, size_t off, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

/* Where yajl itself stops on text, as a byte offset; false if it parses. hf_json_parse reports
 * yajl's reason but not where, and an operator editing a file needs the line. */
static bool yajl_error_offset(const char *text, size_t len, size_t *off)
{
    yajl_handle h = yajl_alloc(NULL, NULL, NULL);
    bool bad = false;
    if (yajl_parse(h, (const unsigned char *)text, len) != yajl_status_ok) {
        /* yajl counts the byte it stopped at as consumed (as in json.c's yajl_reason). */
        size_t consumed = yajl_get_bytes_consumed(h);
        *off = consumed > 0 ? consumed - 1 : 0;
        bad = true;
    } else if (yajl_complete_parse(h) != yajl_status_ok) {
        *off = len;
        bad = true;
    }
    yajl_free(h);
    return bad;
}

static hf_json parse_json(apply_ctx *c, const char *text, size_t len)
{
    char reason[512];
    hf_json root = hf_json_parse(text, len, reason, sizeof reason);
    if (root)
        return root;
    size_t off = 0, line, col;
    const char *at = strstr(reason, "at offset ");
    bool known = yajl_error_offset(text, len, &off);
    if (!known && at) {
        off = strtoull(at + strlen("at offset "), NULL, 10);
        known = true;
    }
    if (known) {
        line_column(text, len, off, &line, &col);
        fail(c, NULL, "line %zu, column %zu: %s", line, col, reason);
    } else {
        fail(c, NULL, "%s", reason);
    }
    return NULL;
}

/* Reads a token given as a string, null, {"file": PATH} or {"env": VARIABLE}. */
static int read_token(apply_ctx *c, hf_json obj, const char *path, const char *key, opt_text *out)
{
    hf_json v = hf_json_get(obj, key);
    out->state = FIELD_ABSENT;
    out->secret = true;
    if (!v)
        return 0;
    if (YAJL_IS_NULL(v)) {
        out->state = FIELD_NULL;
        return 0;
    }
    char *p = path_key(path, key);
    int rc = 0;
    if (YAJL_IS_STRING(v)) {
        if (!*hf_json_str(v))
            rc = fail(c, p, "must not be empty");
        else
            out->value = xstrdup(hf_json_str(v));
    } else if (hf_json_is_object(v) && hf_json_len(v) == 1 &&
               (hf_json_get(v, "file") || hf_json_get(v, "env"))) {
        const char *source = NULL;
        bool from_file = hf_json_get(v, "file") != NULL;
        rc = get_string(c, v, p, from_file ? "file" : "env", true, &source);
        char *sp = path_key(p, from_file ? "file" : "env");
        if (rc == 0 && from_file) {
            char *file = (source[0] == '/' || !c->base_dir)
                             ? xstrdup(source)
                             : xasprintf("%s/%s", c->base_dir, source);
            char reason[512];
            size_t n = 0;
            char *text = hf_read_file(file, &n, reason, sizeof reason);
            if (!text) {
                rc = fail(c, sp, "%s", reason);
            } else {
                /* Like the secrets store: the newline an editor adds is not the token. */
                if (n && text[n - 1] == '\n')
                    text[--n] = '\0';
                if (n && text[n - 1] == '\r')
                    text[--n] = '\0';
                if (n == 0)
                    rc = fail(c, sp, "the token file %s is empty", file);
                else if (strlen(text) != n)
                    rc = fail(c, sp, "the token file %s contains a NUL byte", file);
                else
                    out->value = xstrdup(text);
                memset(text, 0, n);
                free(text);
            }
            free(file);
        } else if (rc == 0) {
            const char *value = getenv(source);
            char q[QUOTE_MAX + 16];
            if (!value)
                rc = fail(c, sp, "the environment variable %s is not set",
                          quote(q, sizeof q, source));
            else if (!*value)
                rc =
                    fail(c, sp, "the environment variable %s is empty", quote(q, sizeof q, source));
            else
                out->value = xstrdup(value);
        }
        free(sp);
    } else {
        rc = fail(c, p, "must be a string, null, {\"file\": PATH} or {\"env\": VARIABLE}, not %s",
                  json_type_name(v));
    }
    free(p);
    if (rc != 0)
        return rc;
    out->state = FIELD_SET;
    hf_log_register_secret(out->value, strlen(out->value));
    return 0;
}

static bool valid_slug(const char *s)
{
    /* the tenants.slug CHECK: ^[a-z0-9][a-z0-9_-]*$ */
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
        return false;
    for (const char *p = s + 1; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
            return false;
    return true;
}

/* Parses v, the element i of a list, into list[i] (a *_spec whose path is already set; the
 * elements before it are parsed, so that a name listed twice can be caught). */
typedef int (*element_parser)(apply_ctx *c, hf_json v, const char *path, void *list, size_t i);

/* Parses the array arr (NULL: none), the member key of path, into a new array of elements of
 * size bytes with one zeroed element to spare. Every *_spec starts with its char *path, which is
 * set here. Does nothing more once *rc is not 0, and stops at the first failure; *n counts the
 * elements begun, so that document_free frees what a failure leaves. */
static void *parse_list(apply_ctx *c, const char *path, const char *key, hf_json arr, size_t size,
                        element_parser parse, size_t *n, int *rc)
{
    char *list_path = path_key(path, key);
    char *list = xcalloc(hf_json_len(arr) + 1, size);
    for (size_t i = 0; *rc == 0 && i < hf_json_len(arr); i++) {
        char *element_path = path_index(list_path, i);
        *(char **)(list + i * size) = element_path;
        (*n)++;
        *rc = parse(c, hf_json_at(arr, i), element_path, list, i);
    }
    free(list_path);
    return list;
}

/* Fails on the element at path whose member key has the value of an earlier one (at prev). */
static int fail_twice(apply_ctx *c, const char *path, const char *key, const char *value,
                      const char *prev)
{
    char *p = path_key(path, key);
    char q[QUOTE_MAX + 16];
    int rc = fail(c, p, "%s is listed twice (also %s)", quote(q, sizeof q, value), prev);
    free(p);
    return rc;
}

static int parse_role(apply_ctx *c, hf_json v, const char *path, void *list, size_t i)
{
    static const char *const members[] = {"subject", "role", NULL};
    static const char *const roles[] = {"admin", "member", "viewer", NULL};
    role_spec *all = list, *r = &all[i];
    if (check_object(c, v, path, members) != 0 ||
        get_string(c, v, path, "subject", true, &r->subject) != 0 ||
        get_string(c, v, path, "role", true, &r->role) != 0)
        return -1;
    char *p = path_key(path, "role");
    int rc = check_choice(c, p, r->role, roles);
    free(p);
    for (size_t j = 0; rc == 0 && j < i; j++)
        if (strcmp(all[j].subject, r->subject) == 0) {
            p = path_key(path, "subject");
            char q[QUOTE_MAX + 16];
            rc = fail(c, p, "%s already has a role in this branch (%s)",
                      quote(q, sizeof q, r->subject), all[j].path);
            free(p);
        }
    return rc;
}

static int parse_branch(apply_ctx *c, hf_json v, const char *path, void *list, size_t i)
{
    static const char *const members[] = {"branch", "name", "roles", NULL};
    branch_spec *all = list, *b = &all[i];
    hf_json arr = NULL;
    if (check_object(c, v, path, members) != 0 ||
        get_string(c, v, path, "branch", true, &b->branch) != 0 ||
        get_opt_text(c, v, path, "name", &b->name) != 0 ||
        get_array(c, v, path, "roles", false, &arr) != 0)
        return -1;
    int rc = 0;
    b->roles = parse_list(c, path, "roles", arr, sizeof *b->roles, parse_role, &b->nroles, &rc);
    for (size_t j = 0; rc == 0 && j < i; j++)
        if (strcmp(all[j].branch, b->branch) == 0)
            rc = fail_twice(c, path, "branch", b->branch, all[j].path);
    return rc;
}

static int parse_approval(apply_ctx *c, hf_json v, const char *path, void *list, size_t i)
{
    static const char *const members[] = {"connector", "approved_by", "note", NULL};
    approval_spec *all = list, *a = &all[i];
    const hf_connector *k = NULL;
    if (check_object(c, v, path, members) != 0 ||
        get_string(c, v, path, "connector", true, &a->connector) != 0 ||
        get_string(c, v, path, "approved_by", true, &a->approved_by) != 0 ||
        get_opt_text(c, v, path, "note", &a->note) != 0)
        return -1;
    char *p = path_key(path, "connector");
    int rc = find_connector(c, p, a->connector, &k);
    free(p);
    for (size_t j = 0; rc == 0 && j < i; j++)
        if (strcmp(all[j].connector, a->connector) == 0)
            rc = fail_twice(c, path, "connector", a->connector, all[j].path);
    return rc;
}

static int parse_connection(apply_ctx *c, hf_json v, const char *path, void *list, size_t i)
{
    static const char *const members[] = {"connector",    "account",       "status",     "scopes",
                                          "access_token", "refresh_token", "expires_at", NULL};
    static const char *const statuses[] = {"pending", "active", "disabled", NULL};
    connection_spec *k = (connection_spec *)list + i;
    hf_json scopes = NULL;
    if (check_object(c, v, path, members) != 0 ||
        get_string(c, v, path, "connector", true, &k->connector) != 0 ||
        get_string(c, v, path, "account", true, &k->account) != 0 ||
        get_string(c, v, path, "status", false, &k->status) != 0 ||
        get_array(c, v, path, "scopes", false, &scopes) != 0 ||
        read_token(c, v, path, "access_token", &k->access) != 0 ||
        read_token(c, v, path, "refresh_token", &k->refresh) != 0 ||
        get_opt_text(c, v, path, "expires_at", &k->expires_at) != 0)
        return -1;
    char *p = path_key(path, "connector");
    int rc = find_connector(c, p, k->connector, &k->kind);
    free(p);
    if (rc == 0 && k->status) {
        p = path_key(path, "status");
        rc = check_choice(c, p, k->status, statuses);
        free(p);
    }
    /* Checked here, with the file: PostgreSQL alone would also take 'now', 'tomorrow' or a time
     * without offset (read in the server's zone), and 'now' would change on every apply. */
    int64_t us;
    if (rc == 0 && k->expires_at.state == FIELD_SET &&
        !(hf_parse_rfc3339_us(k->expires_at.value, &us) &&
          hf_rfc3339_has_offset(k->expires_at.value))) {
        char q[QUOTE_MAX + 16];
        p = path_key(path, "expires_at");
        rc = fail(c, p, "must be an RFC 3339 time with an offset (2026-12-01T10:00:00Z), not %s",
                  quote(q, sizeof q, k->expires_at.value));
        free(p);
    }
    if (rc == 0 && scopes) {
        for (size_t j = 0; rc == 0 && j < hf_json_len(scopes); j++) {
            hf_json s = hf_json_at(scopes, j);
            if (!YAJL_IS_STRING(s) || !*hf_json_str(s)) {
                char *sp = path_key(path, "scopes");
                p = path_index(sp, j);
                rc = fail(c, p, "must be a non-empty string");
                free(p);
                free(sp);
            }
        }
        hf_buf json = {0};
        hf_json_serialize(scopes, &json);
        k->scopes_json = hf_buf_steal(&json);
    }
    return rc;
}

static int parse_workflow(apply_ctx *c, hf_json v, const char *path, void *list, size_t i)
{
    static const char *const members[] = {"name", "enabled", "definition", NULL};
    workflow_spec *all = list, *w = &all[i];
    if (check_object(c, v, path, members) != 0 ||
        get_string(c, v, path, "name", false, &w->name) != 0)
        return -1;
    hf_json enabled = hf_json_get(v, "enabled");
    w->enabled = -1;
    if (enabled) {
        if (!YAJL_IS_TRUE(enabled) && !YAJL_IS_FALSE(enabled)) {
            char *p = path_key(path, "enabled");
            int rc = fail(c, p, "must be true or false, not %s", json_type_name(enabled));
            free(p);
            return rc;
        }
        w->enabled = YAJL_IS_TRUE(enabled);
    }
    hf_json def = hf_json_get(v, "definition");
    char *dpath = path_key(path, "definition");
    int rc = 0;
    if (!def)
        rc = fail(c, dpath, "missing");
    else if (!hf_json_is_object(def))
        rc = fail(c, dpath, "must be an object, not %s", json_type_name(def));
    if (rc != 0) {
        free(dpath);
        return rc;
    }

    /* The workflow's name: its own member, else the definition's; when both are given they
     * must agree, or the name that apply matches on would differ from the one users see. */
    const char *def_name = hf_json_str(hf_json_get(def, "name"));
    char q1[QUOTE_MAX + 16], q2[QUOTE_MAX + 16];
    if (w->name && def_name && strcmp(w->name, def_name) != 0) {
        char *p = path_key(path, "name");
        rc = fail(c, p, "%s differs from definition.name %s", quote(q1, sizeof q1, w->name),
                  quote(q2, sizeof q2, def_name));
        free(p);
    } else if (!w->name && !(def_name && *def_name)) {
        rc = fail(c, path, "missing a name (give \"name\" here or in the definition)");
    } else if (!w->name) {
        w->name = def_name;
    }

    hf_buf json = {0};
    hf_json_serialize(def, &json);
    w->definition = hf_buf_steal(&json);

    char reason[512] = "";
    wf_def *parsed = NULL;
    if (rc == 0) {
        parsed = wf_parse(w->definition, strlen(w->definition), reason, sizeof reason);
        if (!parsed)
            rc = fail_inside(c, dpath, reason[0] ? reason : "not a valid workflow definition");
    }
    if (rc == 0) {
        w->trigger_connector = xstrdup(parsed->trigger_connector);
        w->trigger_event = xstrdup(parsed->trigger_event);
        const hf_connector *k = NULL;
        char *tpath = path_key(dpath, "trigger");
        char *p = path_key(tpath, "connector");
        rc = find_connector(c, p, w->trigger_connector, &k);
        free(p);
        if (rc == 0) {
            p = path_key(tpath, "event");
            rc = check_event(c, p, k, w->trigger_event);
            free(p);
        }
        free(tpath);
    }
    char *npath = path_key(dpath, "nodes");
    for (size_t n = 0; rc == 0 && n < parsed->nnodes; n++) {
        if (parsed->nodes[n].type != WF_ACTION)
            continue;
        char *p = path_index(npath, n); /* wf_def keeps the nodes in document order */
        rc = check_action_node(c, &parsed->nodes[n], p);
        free(p);
    }
    free(npath);
    if (rc == 0)
        rc = validate_definition(c, w->definition, dpath);
    if (parsed)
        wf_free(parsed);
    free(dpath);
    for (size_t j = 0; rc == 0 && j < i; j++)
        if (strcmp(all[j].name, w->name) == 0)
            rc = fail(c, path, "a second workflow named %s (also %s)",
                      quote(q1, sizeof q1, w->name), all[j].path);
    return rc;
}

static int parse_tenant(apply_ctx *c, hf_json v, const char *path, void *list, size_t i)
{
    static const char *const members[] = {
        "slug",        "name",      "environment", "branches", "support_approvals",
        "connections", "workflows", NULL};
    static const char *const environments[] = {"production", "sandbox", NULL};
    tenant_spec *all = list, *t = &all[i];
    hf_json branches = NULL, approvals = NULL, connections = NULL, workflows = NULL;
    if (check_object(c, v, path, members) != 0 ||
        get_string(c, v, path, "slug", true, &t->slug) != 0 ||
        get_string(c, v, path, "name", true, &t->name) != 0 ||
        get_string(c, v, path, "environment", false, &t->environment) != 0 ||
        get_array(c, v, path, "branches", false, &branches) != 0 ||
        get_array(c, v, path, "support_approvals", false, &approvals) != 0 ||
        get_array(c, v, path, "connections", false, &connections) != 0 ||
        get_array(c, v, path, "workflows", false, &workflows) != 0)
        return -1;
    char *p = NULL;
    char q[QUOTE_MAX + 16];
    if (!valid_slug(t->slug)) {
        p = path_key(path, "slug");
        int rc = fail(c, p,
                      "%s is not a slug (lower-case letters, digits, '-' and '_', starting with "
                      "a letter or digit)",
                      quote(q, sizeof q, t->slug));
        free(p);
        return rc;
    }
    if (t->environment) {
        p = path_key(path, "environment");
        int rc = check_choice(c, p, t->environment, environments);
        free(p);
        if (rc != 0)
            return rc;
    }

    int rc = 0;
    t->branches = parse_list(c, path, "branches", branches, sizeof *t->branches, parse_branch,
                             &t->nbranches, &rc);
    t->approvals = parse_list(c, path, "support_approvals", approvals, sizeof *t->approvals,
                              parse_approval, &t->napprovals, &rc);
    t->connections = parse_list(c, path, "connections", connections, sizeof *t->connections,
                                parse_connection, &t->nconnections, &rc);
    t->workflows = parse_list(c, path, "workflows", workflows, sizeof *t->workflows, parse_workflow,
                              &t->nworkflows, &rc);
    for (size_t j = 0; rc == 0 && j < i; j++)
        if (strcmp(all[j].slug, t->slug) == 0)
            rc = fail_twice(c, path, "slug", t->slug, all[j].path);
    return rc;
}

static int parse_document(apply_ctx *c, hf_json root, document_spec *doc)
{
    static const char *const members[] = {"tenants", NULL};
    hf_json tenants = NULL;
    if (check_object(c, root, "", members) != 0 ||
        get_array(c, root, "", "tenants", true, &tenants) != 0)
        return -1;
    int rc = 0;
    doc->tenants = parse_list(c, "", "tenants", tenants, sizeof *doc->tenants, parse_tenant,
                              &doc->ntenants, &rc);
    /* UNIQUE (connector, account) spans tenants: one account belongs to one tenant. */
    for (size_t i = 0; rc == 0 && i < doc->ntenants; i++)
        for (size_t k = 0; rc == 0 && k < doc->tenants[i].nconnections; k++) {
            const connection_spec *a = &doc->tenants[i].connections[k];
            for (size_t j = 0; rc == 0 && j <= i; j++)
                for (size_t l = 0; rc == 0 && l < doc->tenants[j].nconnections; l++) {
                    const connection_spec *b = &doc->tenants[j].connections[l];
                    if (b == a)
                        break;
                    if (strcmp(a->connector, b->connector) == 0 &&
                        strcmp(a->account, b->account) == 0)
                        rc = fail(c, a->path, "%s account %s is listed twice (also %s)",
                                  a->connector, a->account, b->path);
                }
        }
    return rc;
}

/* ---- database -------------------------------------------------------------------------------- */

/* hf_pg_exec with the error attributed to path. *out (may be NULL) receives the result on
 * success only. */
static int db_exec(apply_ctx *c, const char *path, const char *sql, int n,
                   const char *const *params, PGresult **out)
{
    char reason[1024];
    PGresult *res = NULL;
    if (out)
        *out = NULL;
    if (hf_pg_exec(c->db, sql, n, params, &res, reason, sizeof reason) != HF_PG_OK) {
        PQclear(res);
        return fail(c, path, "database: %s", reason);
    }
    if (out)
        *out = res;
    else
        PQclear(res);
    return 0;
}

/* One audit_log row; detail is a JSON object. */
static int audit(apply_ctx *c, const char *path, const char *tenant_id, const char *action,
                 const char *subject_type, const char *subject_id, const char *detail)
{
    const char *params[] = {tenant_id, APPLY_ACTOR, action, subject_type, subject_id, detail};
    return db_exec(c, path,
                   "INSERT INTO audit_log (tenant_id, actor, action, subject_type, subject_id, "
                   "detail) VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
                   6, params, NULL);
}

/* Appends "key": "value" (value NULL gives null) to an object under construction. */
static void detail_str(hf_buf *b, const char *key, const char *value)
{
    hf_buf_putc(b, b->len > 0 ? ',' : '{');
    hf_json_append_cstr(b, key);
    hf_buf_putc(b, ':');
    if (value)
        hf_json_append_cstr(b, value);
    else
        hf_buf_puts(b, "null");
}

/* Appends "changed": [names...] from the NULL-terminated list. */
static void detail_changed(hf_buf *b, const char *const *names, size_t n)
{
    hf_buf_putc(b, b->len > 0 ? ',' : '{');
    hf_buf_puts(b, "\"changed\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            hf_buf_putc(b, ',');
        hf_json_append_cstr(b, names[i]);
    }
    hf_buf_putc(b, ']');
}

static void detail_end(hf_buf *b)
{
    if (b->len == 0)
        hf_buf_putc(b, '{');
    hf_buf_putc(b, '}');
}

/* Two optional texts are the same value (column NULL vs FIELD_NULL, text vs FIELD_SET). */
static bool same_text(const opt_text *want, const PGresult *res, int row, int col)
{
    if (want->state == FIELD_NULL)
        return PQgetisnull(res, row, col);
    return !PQgetisnull(res, row, col) && strcmp(PQgetvalue(res, row, col), want->value) == 0;
}

static const char *opt_value(const opt_text *t)
{
    return t->state == FIELD_SET ? t->value : NULL;
}

static int apply_tenant_row(apply_ctx *c, const tenant_spec *t, char *tenant_id, size_t idlen,
                            tenant_changes *ch)
{
    PGresult *res = NULL;
    const char *find[] = {t->slug};
    if (db_exec(c, t->path, "SELECT id, name, environment FROM tenants WHERE slug = $1 FOR UPDATE",
                1, find, &res) != 0)
        return -1;
    int rc = 0;
    hf_buf detail = {0};
    if (PQntuples(res) == 0) {
        PQclear(res);
        const char *environment = t->environment ? t->environment : "production";
        const char *ins[] = {t->slug, t->name, environment};
        if (db_exec(c, t->path,
                    "INSERT INTO tenants (slug, name, environment) VALUES ($1, $2, $3) "
                    "RETURNING id",
                    3, ins, &res) != 0)
            return -1;
        snprintf(tenant_id, idlen, "%s", PQgetvalue(res, 0, 0));
        detail_str(&detail, "slug", t->slug);
        detail_str(&detail, "name", t->name);
        detail_str(&detail, "environment", environment);
        detail_end(&detail);
        rc = audit(c, t->path, tenant_id, "tenant.created", "tenant", tenant_id, detail.data);
        ch->created = true;
    } else {
        snprintf(tenant_id, idlen, "%s", PQgetvalue(res, 0, 0));
        const char *changed[2];
        size_t n = 0;
        if (strcmp(PQgetvalue(res, 0, 1), t->name) != 0)
            changed[n++] = "name";
        if (t->environment && strcmp(PQgetvalue(res, 0, 2), t->environment) != 0)
            changed[n++] = "environment";
        if (n > 0) {
            const char *upd[] = {tenant_id, t->name, t->environment};
            rc = db_exec(c, t->path,
                         "UPDATE tenants SET name = $2, environment = coalesce($3, environment) "
                         "WHERE id = $1",
                         3, upd, NULL);
            detail_str(&detail, "slug", t->slug);
            detail_changed(&detail, changed, n);
            detail_end(&detail);
            if (rc == 0)
                rc = audit(c, t->path, tenant_id, "tenant.updated", "tenant", tenant_id,
                           detail.data);
            ch->updated = true;
        }
    }
    PQclear(res);
    hf_buf_free(&detail);
    return rc;
}

static int apply_role(apply_ctx *c, const char *tenant_id, const char *branch, const role_spec *r,
                      tenant_changes *ch)
{
    PGresult *res = NULL;
    const char *key[] = {tenant_id, branch, r->subject, r->role};
    if (db_exec(c, r->path,
                "SELECT role FROM role_mappings WHERE tenant_id = $1 AND branch = $2 AND "
                "subject = $3 FOR UPDATE",
                3, key, &res) != 0)
        return -1;
    bool exists = PQntuples(res) > 0;
    bool same = exists && strcmp(PQgetvalue(res, 0, 0), r->role) == 0;
    hf_buf detail = {0};
    detail_str(&detail, "branch", branch);
    detail_str(&detail, "subject", r->subject);
    detail_str(&detail, "role", r->role);
    if (exists)
        detail_str(&detail, "previous_role", PQgetvalue(res, 0, 0));
    detail_end(&detail);
    PQclear(res);
    int rc = 0;
    if (!exists) {
        rc = db_exec(c, r->path,
                     "INSERT INTO role_mappings (tenant_id, branch, subject, role) "
                     "VALUES ($1, $2, $3, $4)",
                     4, key, NULL);
        if (rc == 0)
            rc = audit(c, r->path, tenant_id, "role.granted", "role_mapping", r->subject,
                       detail.data);
        ch->roles_granted++;
    } else if (!same) {
        rc = db_exec(c, r->path,
                     "UPDATE role_mappings SET role = $4 WHERE tenant_id = $1 AND branch = $2 "
                     "AND subject = $3",
                     4, key, NULL);
        if (rc == 0)
            rc = audit(c, r->path, tenant_id, "role.changed", "role_mapping", r->subject,
                       detail.data);
        ch->roles_changed++;
    }
    hf_buf_free(&detail);
    return rc;
}

static int apply_branch(apply_ctx *c, const char *tenant_id, const branch_spec *b,
                        tenant_changes *ch)
{
    PGresult *res = NULL;
    const char *key[] = {tenant_id, b->branch, opt_value(&b->name)};
    if (db_exec(c, b->path,
                "SELECT name FROM branches WHERE tenant_id = $1 AND branch = $2 FOR UPDATE", 2, key,
                &res) != 0)
        return -1;
    int rc = 0;
    hf_buf detail = {0};
    detail_str(&detail, "branch", b->branch);
    if (PQntuples(res) == 0) {
        rc = db_exec(c, b->path,
                     "INSERT INTO branches (tenant_id, branch, name) VALUES ($1, $2, $3)", 3, key,
                     NULL);
        detail_str(&detail, "name", opt_value(&b->name));
        detail_end(&detail);
        if (rc == 0)
            rc = audit(c, b->path, tenant_id, "branch.created", "branch", b->branch, detail.data);
        ch->branches_created++;
    } else if (b->name.state != FIELD_ABSENT && !same_text(&b->name, res, 0, 0)) {
        rc = db_exec(c, b->path,
                     "UPDATE branches SET name = $3 WHERE tenant_id = $1 AND branch = $2", 3, key,
                     NULL);
        static const char *const changed[] = {"name"};
        detail_changed(&detail, changed, 1);
        detail_end(&detail);
        if (rc == 0)
            rc = audit(c, b->path, tenant_id, "branch.updated", "branch", b->branch, detail.data);
        ch->branches_updated++;
    }
    PQclear(res);
    hf_buf_free(&detail);
    for (size_t i = 0; rc == 0 && i < b->nroles; i++)
        rc = apply_role(c, tenant_id, b->branch, &b->roles[i], ch);
    return rc;
}

static int apply_approval(apply_ctx *c, const char *tenant_id, const approval_spec *a,
                          tenant_changes *ch)
{
    PGresult *res = NULL;
    const char *key[] = {tenant_id, a->connector, a->approved_by, opt_value(&a->note)};
    if (db_exec(c, a->path,
                "SELECT approved_by, note FROM support_approvals WHERE tenant_id = $1 AND "
                "connector = $2 FOR UPDATE",
                2, key, &res) != 0)
        return -1;
    int rc = 0;
    hf_buf detail = {0};
    detail_str(&detail, "connector", a->connector);
    detail_str(&detail, "approved_by", a->approved_by);
    if (PQntuples(res) == 0) {
        rc = db_exec(c, a->path,
                     "INSERT INTO support_approvals (tenant_id, connector, approved_by, note) "
                     "VALUES ($1, $2, $3, $4)",
                     4, key, NULL);
        detail_end(&detail);
        if (rc == 0)
            rc = audit(c, a->path, tenant_id, "support_approval.granted", "support_approval",
                       a->connector, detail.data);
        ch->approvals_granted++;
    } else {
        const char *changed[2];
        size_t n = 0;
        if (strcmp(PQgetvalue(res, 0, 0), a->approved_by) != 0)
            changed[n++] = "approved_by";
        if (a->note.state != FIELD_ABSENT && !same_text(&a->note, res, 0, 1))
            changed[n++] = "note";
        if (n > 0) {
            const char *upd[] = {tenant_id, a->connector, a->approved_by, opt_value(&a->note),
                                 a->note.state == FIELD_ABSENT ? "f" : "t"};
            rc = db_exec(c, a->path,
                         "UPDATE support_approvals SET approved_by = $3, approved_at = now(), "
                         "note = CASE WHEN $5::boolean THEN $4 ELSE note END "
                         "WHERE tenant_id = $1 AND connector = $2",
                         5, upd, NULL);
            detail_changed(&detail, changed, n);
            detail_end(&detail);
            if (rc == 0)
                rc = audit(c, a->path, tenant_id, "support_approval.updated", "support_approval",
                           a->connector, detail.data);
            ch->approvals_updated++;
        }
    }
    PQclear(res);
    hf_buf_free(&detail);
    return rc;
}

static unsigned nibble(char h)
{
    return h >= 'a' ? (unsigned)(h - 'a' + 10) : (unsigned)(h - '0');
}

/* Decodes the lower-case hex that encode(..., 'hex') gives into a new buffer. */
static unsigned char *hex_decode(const char *hex, size_t *len)
{
    size_t n = strlen(hex) / 2;
    unsigned char *out = xmalloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        out[i] = (unsigned char)(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
    *len = n;
    return out;
}

/* Decides whether one token slot changes and, if it does, its new value as hex of the sealed
 * bytes (*sealed_hex NULL: clear it). stored_hex is the column (NULL if SQL NULL). A stored token
 * that opens only with the previous key is sealed again under the current one. */
static int plan_token(apply_ctx *c, const connection_spec *k, const char *member, const char *slot,
                      const opt_text *want, const char *stored_hex, bool *change, char **sealed_hex)
{
    *change = false;
    *sealed_hex = NULL;
    if (want->state == FIELD_ABSENT)
        return 0;
    if (want->state == FIELD_NULL) {
        *change = stored_hex != NULL;
        return 0;
    }
    if (!c->keys) {
        char *p = path_key(k->path, member);
        int rc = fail(c, p, NO_KEY_REASON);
        free(p);
        return rc;
    }
    char *context = engine_token_context(k->connector, k->account, slot);
    if (stored_hex) {
        size_t len = 0;
        unsigned char *stored = hex_decode(stored_hex, &len);
        bool with_previous = false;
        char *plain = engine_token_open_ex(c->keys, context, stored, len, &with_previous);
        *change = !plain || with_previous || strcmp(plain, want->value) != 0;
        if (plain) {
            memset(plain, 0, strlen(plain));
            free(plain);
        }
        free(stored);
    } else {
        *change = true;
    }
    if (*change) {
        size_t len = 0;
        unsigned char *sealed = engine_token_seal(c->keys, context, want->value, &len);
        *sealed_hex = xmalloc(2 * len + 1);
        hf_hex_encode(sealed, len, *sealed_hex);
        free(sealed);
    }
    free(context);
    return 0;
}

/* Beta connectors may be active only after support approved them for the tenant. */
static int check_beta_approval(apply_ctx *c, const connection_spec *k, const char *tenant_id)
{
    if (!hf_connector_is_beta(k->kind))
        return 0;
    PGresult *res = NULL;
    const char *params[] = {tenant_id, k->connector};
    char *p = k->status ? path_key(k->path, "status") : xstrdup(k->path);
    int rc =
        db_exec(c, p, "SELECT 1 FROM support_approvals WHERE tenant_id = $1 AND connector = $2", 2,
                params, &res);
    if (rc == 0 && PQntuples(res) == 0)
        rc = fail(c, p,
                  "%s is a Beta connector: a connection can be active only after support "
                  "approved %s for this tenant (add it to support_approvals)",
                  k->connector, k->connector);
    PQclear(res);
    free(p);
    return rc;
}

static int apply_connection(apply_ctx *c, const char *tenant_id, const connection_spec *k,
                            tenant_changes *ch)
{
    PGresult *res = NULL;
    int rc = 0;
    if (k->expires_at.state == FIELD_SET) { /* RFC 3339 already; PostgreSQL checks its range */
        char *p = path_key(k->path, "expires_at");
        const char *when[] = {k->expires_at.value};
        rc = db_exec(c, p, "SELECT $1::timestamptz", 1, when, NULL);
        free(p);
        if (rc != 0)
            return rc;
    }
    const char *find[] = {k->connector,
                          k->account,
                          tenant_id,
                          k->scopes_json,
                          k->expires_at.state == FIELD_ABSENT ? "f" : "t",
                          opt_value(&k->expires_at)};
    if (db_exec(c, k->path,
                "SELECT c.id, c.tenant_id = $3::uuid, t.slug, c.status,"
                " $4::jsonb IS NOT NULL AND c.granted_scopes IS DISTINCT FROM"
                "  ARRAY(SELECT jsonb_array_elements_text($4::jsonb)),"
                " $5::boolean AND c.token_expires_at IS DISTINCT FROM $6::timestamptz,"
                " encode(c.access_token_enc, 'hex'), encode(c.refresh_token_enc, 'hex') "
                "FROM connections c JOIN tenants t ON t.id = c.tenant_id "
                "WHERE c.connector = $1 AND c.account = $2 FOR UPDATE OF c",
                6, find, &res) != 0)
        return -1;
    bool exists = PQntuples(res) > 0;
    if (exists && strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
        rc = fail(c, k->path, "%s account %s is already connected to tenant %s", k->connector,
                  k->account, PQgetvalue(res, 0, 2));
        PQclear(res);
        return rc;
    }

    bool access_change = false, refresh_change = false;
    char *access_hex = NULL, *refresh_hex = NULL;
    rc = plan_token(c, k, "access_token", "access", &k->access,
                    exists && !PQgetisnull(res, 0, 6) ? PQgetvalue(res, 0, 6) : NULL,
                    &access_change, &access_hex);
    if (rc == 0)
        rc = plan_token(c, k, "refresh_token", "refresh", &k->refresh,
                        exists && !PQgetisnull(res, 0, 7) ? PQgetvalue(res, 0, 7) : NULL,
                        &refresh_change, &refresh_hex);

    hf_buf detail = {0};
    detail_str(&detail, "connector", k->connector);
    detail_str(&detail, "account", k->account);
    if (rc == 0 && !exists) {
        const char *status = k->status ? k->status : "active";
        if (strcmp(status, "active") == 0)
            rc = check_beta_approval(c, k, tenant_id);
        const char *ins[] = {tenant_id,      k->connector, k->account,  status,
                             k->scopes_json, access_hex,   refresh_hex, opt_value(&k->expires_at)};
        PGresult *created = NULL;
        if (rc == 0)
            rc = db_exec(c, k->path,
                         "INSERT INTO connections (tenant_id, connector, account, status,"
                         " granted_scopes, access_token_enc, refresh_token_enc, token_expires_at) "
                         "VALUES ($1, $2, $3, $4,"
                         " ARRAY(SELECT jsonb_array_elements_text(coalesce($5::jsonb, '[]'))),"
                         " decode($6, 'hex'), decode($7, 'hex'), $8::timestamptz) RETURNING id",
                         8, ins, &created);
        detail_str(&detail, "status", status);
        detail_end(&detail);
        /* Named by the connection's id, as its later rows (connection.updated) and the API's
         * are, so one connection's history reads as one. */
        if (rc == 0)
            rc = audit(c, k->path, tenant_id, "connection.created", "connection",
                       PQgetvalue(created, 0, 0), detail.data);
        PQclear(created);
        ch->connections_created++;
    } else if (rc == 0) {
        const char *changed[5];
        size_t n = 0;
        bool status_change = k->status && strcmp(PQgetvalue(res, 0, 3), k->status) != 0;
        if (status_change)
            changed[n++] = "status";
        if (strcmp(PQgetvalue(res, 0, 4), "t") == 0)
            changed[n++] = "scopes";
        if (access_change)
            changed[n++] = "access_token";
        if (refresh_change)
            changed[n++] = "refresh_token";
        if (strcmp(PQgetvalue(res, 0, 5), "t") == 0)
            changed[n++] = "expires_at";
        if (status_change && strcmp(k->status, "active") == 0)
            rc = check_beta_approval(c, k, tenant_id);
        if (rc == 0 && n > 0) {
            const char *upd[] = {PQgetvalue(res, 0, 0),
                                 k->status,
                                 k->scopes_json,
                                 access_change ? "t" : "f",
                                 access_hex,
                                 refresh_change ? "t" : "f",
                                 refresh_hex,
                                 k->expires_at.state == FIELD_ABSENT ? "f" : "t",
                                 opt_value(&k->expires_at),
                                 access_change || refresh_change ? "1" : "0"};
            rc = db_exec(c, k->path,
                         "UPDATE connections SET status = coalesce($2, status),"
                         " granted_scopes = CASE WHEN $3::jsonb IS NULL THEN granted_scopes"
                         "  ELSE ARRAY(SELECT jsonb_array_elements_text($3::jsonb)) END,"
                         " access_token_enc = CASE WHEN $4::boolean THEN decode($5, 'hex')"
                         "  ELSE access_token_enc END,"
                         " refresh_token_enc = CASE WHEN $6::boolean THEN decode($7, 'hex')"
                         "  ELSE refresh_token_enc END,"
                         /* a refresh token put in by hand: its death date is unknown */
                         " refresh_token_expires_at = CASE WHEN $6::boolean THEN NULL"
                         "  ELSE refresh_token_expires_at END,"
                         " token_expires_at = CASE WHEN $8::boolean THEN $9::timestamptz"
                         "  ELSE token_expires_at END,"
                         " token_version = token_version + $10::integer, updated_at = now() "
                         "WHERE id = $1",
                         10, upd, NULL);
            detail_changed(&detail, changed, n);
            detail_end(&detail);
            if (rc == 0)
                rc = audit(c, k->path, tenant_id, "connection.updated", "connection",
                           PQgetvalue(res, 0, 0), detail.data);
            ch->connections_updated++;
        }
    }
    PQclear(res);
    hf_buf_free(&detail);
    free(access_hex);
    free(refresh_hex);
    return rc;
}

static int apply_workflow(apply_ctx *c, const char *tenant_id, const workflow_spec *w,
                          tenant_changes *ch)
{
    PGresult *res = NULL;
    const char *find[] = {tenant_id, w->name, w->definition};
    /* Locked first and read after, in a statement of its own: one that waited for the lock
     * behind an API change of the workflow would read the versions as they were before it. */
    if (db_exec(c, w->path,
                "SELECT 1 FROM workflows WHERE tenant_id = $1 AND name = $2 AND deleted_at IS NULL "
                "FOR UPDATE",
                2, find, NULL) != 0)
        return -1;
    if (db_exec(c, w->path,
                "SELECT w.id, w.enabled, w.current_version,"
                " coalesce((SELECT v.definition = $3::jsonb FROM workflow_versions v"
                "  WHERE v.workflow_id = w.id AND v.version = w.current_version), false),"
                " (SELECT max(v.version) FROM workflow_versions v WHERE v.workflow_id = w.id) "
                "FROM workflows w WHERE w.tenant_id = $1 AND w.name = $2 AND w.deleted_at IS NULL",
                3, find, &res) != 0)
        return -1;
    int rc = 0;
    hf_buf detail = {0};
    detail_str(&detail, "name", w->name);
    const char *enabled = w->enabled < 0 ? NULL : w->enabled ? "t" : "f";
    if (PQntuples(res) == 0) {
        PQclear(res);
        res = NULL;
        const char *ins[] = {tenant_id, w->name, enabled ? enabled : "f", w->trigger_connector,
                             w->trigger_event};
        /* The version row follows; the foreign key from current_version is deferred. */
        rc = db_exec(c, w->path,
                     "INSERT INTO workflows (tenant_id, name, enabled, current_version,"
                     " trigger_connector, trigger_event) VALUES ($1, $2, $3, 1, $4, $5) "
                     "RETURNING id",
                     5, ins, &res);
        if (rc == 0) {
            const char *ver[] = {PQgetvalue(res, 0, 0), w->definition, APPLY_ACTOR};
            rc = db_exec(c, w->path,
                         "INSERT INTO workflow_versions (workflow_id, version, definition,"
                         " created_by) VALUES ($1, 1, $2::jsonb, $3)",
                         3, ver, NULL);
            detail_str(&detail, "version", "1");
            detail_str(&detail, "enabled", enabled && *enabled == 't' ? "true" : "false");
            detail_end(&detail);
            if (rc == 0)
                rc = audit(c, w->path, tenant_id, "workflow.created", "workflow",
                           PQgetvalue(res, 0, 0), detail.data);
        }
        ch->workflows_created++;
    } else {
        const char *id = PQgetvalue(res, 0, 0);
        bool same_def = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
        bool enabled_change = enabled && strcmp(PQgetvalue(res, 0, 1), enabled) != 0;
        if (!same_def) {
            /* After the highest version ever saved, not after the current one: an older version
             * may be current (a rollback), and versions are immutable. */
            long long top = atoll(PQgetvalue(res, 0, 4));
            char next[32];
            snprintf(next, sizeof next, "%lld", top + 1);
            const char *ver[] = {id, next, w->definition, APPLY_ACTOR};
            rc = db_exec(c, w->path,
                         "INSERT INTO workflow_versions (workflow_id, version, definition,"
                         " created_by) VALUES ($1, $2::integer, $3::jsonb, $4)",
                         4, ver, NULL);
            const char *upd[] = {id, next, w->trigger_connector, w->trigger_event, enabled};
            if (rc == 0)
                rc = db_exec(c, w->path,
                             "UPDATE workflows SET current_version = $2::integer,"
                             " trigger_connector = $3, trigger_event = $4,"
                             " enabled = coalesce($5::boolean, enabled), updated_at = now() "
                             "WHERE id = $1",
                             5, upd, NULL);
            detail_str(&detail, "version", next);
            detail_str(&detail, "previous_version", PQgetvalue(res, 0, 2));
            if (enabled_change)
                detail_str(&detail, "enabled", *enabled == 't' ? "true" : "false");
            detail_end(&detail);
            if (rc == 0)
                rc = audit(c, w->path, tenant_id, "workflow.updated", "workflow", id, detail.data);
            ch->workflows_updated++;
            hf_buf_printf(&ch->versions, "%s%s", ch->versions.len ? ", " : "", next);
        } else if (enabled_change) {
            const char *upd[] = {id, enabled};
            rc = db_exec(c, w->path,
                         "UPDATE workflows SET enabled = $2::boolean, updated_at = now() "
                         "WHERE id = $1",
                         2, upd, NULL);
            detail_end(&detail);
            if (rc == 0)
                rc = audit(c, w->path, tenant_id,
                           *enabled == 't' ? "workflow.enabled" : "workflow.disabled", "workflow",
                           id, detail.data);
        }
        if (enabled_change) {
            if (*enabled == 't')
                ch->workflows_enabled++;
            else
                ch->workflows_disabled++;
        }
    }
    PQclear(res);
    hf_buf_free(&detail);
    return rc;
}

static int apply_tenant(apply_ctx *c, const tenant_spec *t, tenant_changes *ch)
{
    char tenant_id[64];
    int rc = apply_tenant_row(c, t, tenant_id, sizeof tenant_id, ch);
    for (size_t i = 0; rc == 0 && i < t->nbranches; i++)
        rc = apply_branch(c, tenant_id, &t->branches[i], ch);
    /* Approvals before connections: a Beta connection in the same file needs its approval. */
    for (size_t i = 0; rc == 0 && i < t->napprovals; i++)
        rc = apply_approval(c, tenant_id, &t->approvals[i], ch);
    for (size_t i = 0; rc == 0 && i < t->nconnections; i++)
        rc = apply_connection(c, tenant_id, &t->connections[i], ch);
    for (size_t i = 0; rc == 0 && i < t->nworkflows; i++)
        rc = apply_workflow(c, tenant_id, &t->workflows[i], ch);
    return rc;
}

/* ---- summary --------------------------------------------------------------------------------- */

static void summary_part(hf_buf *line, int n, const char *one, const char *many, const char *what)
{
    if (n <= 0)
        return;
    hf_buf_printf(line, "%s%d %s %s", line->len ? ", " : "", n, n == 1 ? one : many, what);
}

static void summarize(hf_buf *out, const char *slug, const tenant_changes *ch)
{
    hf_buf line = {0};
    if (ch->created)
        hf_buf_puts(&line, "tenant created");
    else if (ch->updated)
        hf_buf_puts(&line, "tenant updated");
    summary_part(&line, ch->branches_created, "branch", "branches", "created");
    summary_part(&line, ch->branches_updated, "branch", "branches", "updated");
    summary_part(&line, ch->roles_granted, "role", "roles", "granted");
    summary_part(&line, ch->roles_changed, "role", "roles", "changed");
    summary_part(&line, ch->approvals_granted, "support approval", "support approvals", "granted");
    summary_part(&line, ch->approvals_updated, "support approval", "support approvals", "updated");
    summary_part(&line, ch->connections_created, "connection", "connections", "created");
    summary_part(&line, ch->connections_updated, "connection", "connections", "updated");
    summary_part(&line, ch->workflows_created, "workflow", "workflows", "created (version 1)");
    if (ch->workflows_updated > 0) {
        /* Every new version, however many workflows changed. */
        hf_buf what = {0};
        hf_buf_printf(&what, "updated (version%s %s)", ch->workflows_updated == 1 ? "" : "s",
                      ch->versions.data);
        summary_part(&line, ch->workflows_updated, "workflow", "workflows", what.data);
        hf_buf_free(&what);
    }
    summary_part(&line, ch->workflows_enabled, "workflow", "workflows", "enabled");
    summary_part(&line, ch->workflows_disabled, "workflow", "workflows", "disabled");
    hf_buf_printf(out, "%s: %s\n", slug, line.len ? line.data : "no changes");
    hf_buf_free(&line);
}

/* ---- entry points ---------------------------------------------------------------------------- */

/* Error lines stay one plain line whatever the database or the document put in them: every
 * control character (a line break, a vertical tab, a terminal escape) becomes a space. */
static void one_line(char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = ' ';
}

int engine_apply_in(PGconn *db, const char *json, size_t len, const char *base_dir,
                    const engine_keyring *keys, const hf_catalog *cat, bool dry_run,
                    hf_buf *summary, char *err, size_t errlen)
{
    apply_ctx c = {
        .db = db, .keys = keys, .cat = cat, .base_dir = base_dir, .err = err, .errlen = errlen};
    document_spec doc = {0};
    hf_buf lines = {0};
    PGresult *res = NULL;
    bool in_tx = false;
    int rc = -1;
    char reason[1024];

    hf_json root = parse_json(&c, json, len);
    if (!root || parse_document(&c, root, &doc) != 0)
        goto done;

    if (PQtransactionStatus(db) != PQTRANS_IDLE) {
        fail(&c, NULL, "the database connection is busy or inside a transaction");
        goto done;
    }
    if (hf_pg_begin(db, reason, sizeof reason) != HF_PG_OK) {
        fail(&c, NULL, "database: %s", reason);
        goto done;
    }
    in_tx = true;
    const char *lock[] = {APPLY_LOCK_KEY};
    if (db_exec(&c, NULL, "SELECT pg_advisory_xact_lock($1::bigint)", 1, lock, NULL) != 0 ||
        db_exec(&c, NULL, "SELECT to_regclass('workflow_versions') IS NOT NULL", 0, NULL, &res) !=
            0)
        goto done;
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        fail(&c, NULL, "the database has no hookflow tables; run `hookflow-engine migrate` first");
        goto done;
    }

    for (size_t i = 0; i < doc.ntenants; i++) {
        tenant_changes ch = {0};
        int trc = apply_tenant(&c, &doc.tenants[i], &ch);
        if (trc == 0)
            summarize(&lines, doc.tenants[i].slug, &ch);
        hf_buf_free(&ch.versions);
        if (trc != 0)
            goto done;
    }

    if (dry_run) {
        in_tx = false;
        if (hf_pg_rollback(db) != HF_PG_OK) {
            fail(&c, NULL, "database: the dry run's rollback failed");
            goto done;
        }
        hf_buf_puts(&lines, "dry run: rolled back, nothing was changed\n");
    } else {
        in_tx = false;
        if (hf_pg_commit(db, reason, sizeof reason) != HF_PG_OK) {
            (void)hf_pg_rollback(db);
            fail(&c, NULL, "database: commit failed: %s", reason);
            goto done;
        }
    }
    if (summary)
        hf_buf_append(summary, lines.data ? lines.data : "", lines.len);
    rc = 0;

done:
    if (in_tx)
        (void)hf_pg_rollback(db);
    if (rc != 0)
        one_line(err);
    PQclear(res);
    document_free(&doc);
    hf_json_free(root);
    hf_buf_free(&lines);
    return rc;
}

int engine_apply(PGconn *db, const char *json, size_t len, const engine_keyring *keys,
                 const hf_catalog *cat, bool dry_run, hf_buf *summary, char *err, size_t errlen)
{
    return engine_apply_in(db, json, len, NULL, keys, cat, dry_run, summary, err, errlen);
}

/* ---- hookflow-engine apply ------------------------------------------------------------------- */

typedef struct apply_settings {
    char *database_url;
    char *secrets_dir;
} apply_settings;

static const hf_cfg_item apply_settings_table[] = {
    HF_CFG_STR("HOOKFLOW_DATABASE_URL", "", apply_settings, database_url,
               "PostgreSQL libpq conninfo or postgresql:// URI (required)"),
    HF_CFG_STR("HOOKFLOW_SECRETS_DIR", "", apply_settings, secrets_dir,
               "secrets store; engine/token_key seals the connections' tokens"),
};

static void apply_usage(FILE *out)
{
    fprintf(out,
            "usage: hookflow-engine apply FILE [--dry-run] [--database-url URL] [--help]\n\n"
            "Loads tenants, branches and roles, support approvals, connections and workflows\n"
            "from the JSON file FILE ('-' reads standard input) into the database, in one\n"
            "transaction. Idempotent: applying the same file again changes nothing; a changed\n"
            "workflow definition becomes a new version. Tokens are stored sealed with\n"
            "engine/token_key from HOOKFLOW_SECRETS_DIR. The format: docs/apply.md.\n\n"
            "  --dry-run            validate and report what would change, then roll back\n"
            "  --database-url URL   database (overrides HOOKFLOW_DATABASE_URL; prefer the\n"
            "                       variable: arguments are visible to other local users)\n\n"
            "Configuration (environment, or KEY=VALUE lines in HOOKFLOW_CONFIG_FILE):\n");
    for (size_t i = 0; i < HF_ARRAY_LEN(apply_settings_table); i++) {
        const hf_cfg_item *it = &apply_settings_table[i];
        fprintf(out, "  %-24s %s\n", it->name, it->help);
    }
    fprintf(out, "  %-24s the connector catalog (default %s)\n", "HOOKFLOW_CATALOG_DIR",
            HOOKFLOW_SOURCE_DIR "/schemas/catalog");
    fprintf(out, "\nExit status: 0 applied (or dry run done), 1 error (one line on stderr, "
                 "nothing changed), 2 bad usage.\n");
}

/* Reads all of standard input. */
static char *read_stdin(size_t *len)
{
    hf_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
        hf_buf_append(&b, chunk, n);
    *len = b.len;
    if (!b.data)
        hf_buf_puts(&b, "");
    return hf_buf_steal(&b);
}

int engine_cmd_apply(int argc, char **argv)
{
    const char *file = NULL, *url = NULL;
    bool dry_run = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            apply_usage(stdout);
            return 0;
        }
        if (strcmp(arg, "--dry-run") == 0) {
            dry_run = true;
        } else if (strcmp(arg, "--database-url") == 0 || strncmp(arg, "--database-url=", 15) == 0) {
            url = arg[14] == '=' ? arg + 15 : i + 1 < argc ? argv[++i] : NULL;
            if (!url || !*url) {
                fprintf(stderr, "hookflow-engine: apply: --database-url needs a value (try "
                                "--help)\n");
                return 2;
            }
        } else if (arg[0] == '-' && arg[1] != '\0') {
            fprintf(stderr, "hookflow-engine: apply: unknown option '%s' (try --help)\n", arg);
            return 2;
        } else if (file) {
            fprintf(stderr, "hookflow-engine: apply: one FILE only ('%s' and '%s'; try --help)\n",
                    file, arg);
            return 2;
        } else {
            file = arg;
        }
    }
    if (!file) {
        fprintf(stderr, "hookflow-engine: apply: FILE is missing (try --help)\n");
        return 2;
    }

    apply_settings settings = {0};
    char err[2048], keyerr[512] = "";
    char *text = NULL, *base_dir = NULL;
    size_t len = 0;
    hf_catalog *cat = NULL;
    hf_secrets *secrets = NULL;
    engine_keyring *keys = NULL;
    PGconn *db = NULL;
    hf_buf summary = {0};
    int status = 1;

    if (hf_config_load(apply_settings_table, HF_ARRAY_LEN(apply_settings_table), &settings, err,
                       sizeof err) != 0) {
        fprintf(stderr, "hookflow-engine: apply: %s\n", err);
        goto done;
    }
    if (!url)
        url = settings.database_url;
    if (!*url) {
        fprintf(stderr, "hookflow-engine: apply: HOOKFLOW_DATABASE_URL is not set (a libpq "
                        "conninfo or postgresql:// URI; or pass --database-url)\n");
        goto done;
    }

    if (strcmp(file, "-") == 0) {
        text = read_stdin(&len);
    } else {
        text = hf_read_file(file, &len, err, sizeof err);
        if (!text) {
            fprintf(stderr, "hookflow-engine: apply: %s\n", err);
            goto done;
        }
        const char *slash = strrchr(file, '/');
        base_dir = slash ? xstrndup(file, slash == file ? 1 : (size_t)(slash - file)) : NULL;
    }

    cat = hf_catalog_load(hf_catalog_default_dir(), err, sizeof err);
    if (!cat) {
        fprintf(stderr, "hookflow-engine: apply: catalog: %s\n", err);
        goto done;
    }
    secrets = hf_secrets_load(settings.secrets_dir, err, sizeof err);
    if (!secrets) {
        fprintf(stderr, "hookflow-engine: apply: %s\n", err);
        goto done;
    }
    /* A document without tokens needs no key, so a missing one is reported only when a token
     * needs sealing. */
    if (!*settings.secrets_dir)
        snprintf(keyerr, sizeof keyerr, "HOOKFLOW_SECRETS_DIR is not set, so %s cannot be read",
                 ENGINE_TOKEN_KEY_PATH);
    else
        keys = engine_keyring_load(secrets, keyerr, sizeof keyerr);

    if (hf_pg_connect(url, "hookflow-apply", &db, err, sizeof err) != HF_PG_OK) {
        fprintf(stderr, "hookflow-engine: apply: %s\n", err);
        goto done;
    }
    if (engine_apply_in(db, text, len, base_dir, keys, cat, dry_run, &summary, err, sizeof err) !=
        0) {
        size_t n = strlen(err), reason = strlen(NO_KEY_REASON);
        if (!keys && n >= reason && strcmp(err + n - reason, NO_KEY_REASON) == 0)
            fprintf(stderr, "hookflow-engine: apply: %s: %s\n", err, keyerr);
        else
            fprintf(stderr, "hookflow-engine: apply: %s\n", err);
        goto done;
    }
    fputs(summary.data ? summary.data : "", stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "hookflow-engine: apply: cannot write the summary to stdout\n");
        goto done;
    }
    status = 0;

done:
    hf_buf_free(&summary);
    PQfinish(db);
    engine_keyring_free(keys);
    hf_secrets_free(secrets);
    hf_catalog_free(cat);
    if (text) {
        memset(text, 0, len);
        free(text);
    }
    free(base_dir);
    hf_config_free(apply_settings_table, HF_ARRAY_LEN(apply_settings_table), &settings);
    return status;
}
