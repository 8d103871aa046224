/* catalog: loads schemas/catalog/<id>.json, validates each connector with errors that name the
 * file and the field path, and serves lookups and the cached catalog JSON. */
#include "catalog.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

struct hf_action {
    const char *id; /* points into the connector's document, like every string below */
    hf_json json;
    bool simulatable;
};

typedef struct catalog_event {
    const char *name;
    hf_json native_types; /* array of strings */
    hf_json sample_payload;
} catalog_event;

struct hf_connector {
    char *file;  /* "xero.json", printable, for messages */
    hf_json doc; /* the parsed file; owns every hf_json and string of this connector */
    const char *id, *name, *category;
    bool beta;
    catalog_event *events;
    size_t nevents;
    hf_action *actions;
    size_t nactions;
};

struct hf_catalog {
    hf_connector *connectors;
    size_t n;
    char *json;
    size_t json_len;
};

/* The order the admin client lists connectors in; others follow by id. */
static const char *const fixed_order[] = {"xero",    "quickbooks", "hubspot",
                                          "klaviyo", "twilio",     "meta"};

static const char *const categories[] = {"accounting", "marketing-automation", "messaging", NULL};
static const char *const availabilities[] = {"GA", "Beta", NULL};
static const char *const pricings[] = {"Included", "Growth plan", "Add-on", "Usage based", NULL};
static const char *const auth_kinds[] = {"oauth2", "basic", NULL};
static const char *const value_types[] = {"string", "number", "integer", "boolean",
                                          "object", "array",  NULL};

static const char *const connector_keys[] = {
    "id",           "name",    "category",   "summary", "features", "oauth", "webhook_events",
    "availability", "pricing", "setup_time", "actions", NULL};
static const char *const oauth_keys[] = {"auth",      "scopes", "authorize_url",
                                         "token_url", "pkce",   NULL};
static const char *const event_keys[] = {"name", "summary", "native_types", "sample_payload", NULL};
static const char *const action_keys[] = {
    "id",          "name",   "summary", "simulatable",   "scopes",
    "idempotency", "inputs", "output",  "sample_output", NULL};
static const char *const input_keys[] = {"name", "type",    "required", "description",
                                         "enum", "default", NULL};
static const char *const output_keys[] = {"fields", NULL};

/* ---- validation ---------------------------------------------------------------------------- */

#define VPATH_MAX 192

typedef struct vctx {
    const char *file;
    char *err;
    size_t errlen;
} vctx;

typedef enum { V_TEXT, V_BOOL, V_OBJECT, V_ARRAY } vkind;
static const char *const vkind_names[] = {"a string", "a boolean", "an object", "an array"};

/* Copies s for an error message: control bytes become '?', long values are cut with "...". */
static void printable(char *out, size_t n, const char *s)
{
    size_t i = 0;
    for (; s[i] && i + 1 < n; i++)
        out[i] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    out[i] = '\0';
    if (s[i] && n > 4)
        memcpy(out + n - 4, "...", 4);
}

static int verr(const vctx *v, const char *path, const char *fmt, ...) HF_PRINTF(3, 4);
static int verr(const vctx *v, const char *path, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (path[0])
        return hf_err(v->err, v->errlen, "%s: %s: %s", v->file, path, msg);
    return hf_err(v->err, v->errlen, "%s: %s", v->file, msg);
}

/* Writes a field path into out (VPATH_MAX bytes); a very long path is cut, which is harmless. */
static void path_set(char *out, const char *fmt, ...) HF_PRINTF(2, 3);
static void path_set(char *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, VPATH_MAX, fmt, ap);
    va_end(ap);
}

static void path_key(char *out, const char *parent, const char *key)
{
    char safe[64];
    printable(safe, sizeof safe, key);
    if (parent[0])
        path_set(out, "%s.%s", parent, safe);
    else
        path_set(out, "%s", safe);
}

static void path_index(char *out, const char *parent, size_t i)
{
    path_set(out, "%s[%zu]", parent, i);
}

static const char *json_type_name(hf_json x)
{
    if (YAJL_IS_STRING(x))
        return "string";
    if (YAJL_IS_NUMBER(x))
        return "number";
    if (YAJL_IS_TRUE(x) || YAJL_IS_FALSE(x))
        return "boolean";
    if (YAJL_IS_OBJECT(x))
        return "object";
    if (YAJL_IS_ARRAY(x))
        return "array";
    return "null";
}

/* Whether x is a value of one of the catalog's value types (value_types[]). */
static bool value_is(hf_json x, const char *type)
{
    if (strcmp(type, "string") == 0)
        return YAJL_IS_STRING(x);
    if (strcmp(type, "number") == 0)
        return YAJL_IS_NUMBER(x);
    if (strcmp(type, "integer") == 0)
        return YAJL_IS_INTEGER(x);
    if (strcmp(type, "boolean") == 0)
        return YAJL_IS_TRUE(x) || YAJL_IS_FALSE(x);
    if (strcmp(type, "object") == 0)
        return YAJL_IS_OBJECT(x);
    if (strcmp(type, "array") == 0)
        return YAJL_IS_ARRAY(x);
    return false;
}

static int vtype(const vctx *v, hf_json x, const char *path, vkind kind)
{
    bool ok = (kind == V_TEXT && YAJL_IS_STRING(x)) ||
              (kind == V_BOOL && (YAJL_IS_TRUE(x) || YAJL_IS_FALSE(x))) ||
              (kind == V_OBJECT && YAJL_IS_OBJECT(x)) || (kind == V_ARRAY && YAJL_IS_ARRAY(x));
    if (!ok)
        return verr(v, path, "expected %s, got %s", vkind_names[kind], json_type_name(x));
    if (kind == V_TEXT && x->u.string[0] == '\0')
        return verr(v, path, "must not be empty");
    return 0;
}

/* obj[key] checked against kind into *out; an absent optional member leaves *out NULL. */
static int vget(const vctx *v, hf_json obj, const char *path, const char *key, vkind kind,
                bool required, hf_json *out)
{
    char p[VPATH_MAX];
    path_key(p, path, key);
    *out = NULL;
    hf_json x = hf_json_get(obj, key);
    if (!x)
        return required ? verr(v, p, "missing") : 0;
    if (vtype(v, x, p, kind) < 0)
        return -1;
    *out = x;
    return 0;
}

/* Rejects duplicate members and, when allowed is not NULL, members not in it. */
static int vkeys(const vctx *v, hf_json obj, const char *path, const char *const *allowed)
{
    for (size_t i = 0; i < hf_json_len(obj); i++) {
        const char *key;
        hf_json_member(obj, i, &key);
        char p[VPATH_MAX];
        path_key(p, path, key);
        for (size_t j = 0; j < i; j++) {
            const char *prev;
            hf_json_member(obj, j, &prev);
            if (strcmp(prev, key) == 0)
                return verr(v, p, "duplicate field");
        }
        if (!allowed)
            continue;
        bool known = false;
        for (const char *const *a = allowed; *a && !known; a++)
            known = strcmp(*a, key) == 0;
        if (!known)
            return verr(v, p, "unknown field");
    }
    return 0;
}

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0)
            return true;
    return false;
}

static int vchoice(const vctx *v, const char *path, const char *value, const char *const *choices)
{
    if (in_list(value, choices))
        return 0;
    hf_buf all = {0};
    for (const char *const *c = choices; *c; c++) {
        if (c != choices)
            hf_buf_putc(&all, '|');
        hf_buf_puts(&all, *c);
    }
    char safe[96];
    printable(safe, sizeof safe, value);
    verr(v, path, "\"%s\" is not one of %s", safe, all.data);
    hf_buf_free(&all);
    return -1;
}

/* Lower-case identifier: [a-z][a-z0-9_]*, plus '.' in event names. */
static bool is_identifier(const char *s, bool dots)
{
    if (!(*s >= 'a' && *s <= 'z'))
        return false;
    for (s++; *s; s++) {
        bool ok = (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' ||
                  (dots && *s == '.');
        if (!ok)
            return false;
    }
    return true;
}

static int videntifier(const vctx *v, const char *path, const char *s, bool dots)
{
    if (is_identifier(s, dots))
        return 0;
    char safe[96];
    printable(safe, sizeof safe, s);
    return verr(v, path, "\"%s\" is not a lower-case name ([a-z][a-z0-9_%s]*)", safe,
                dots ? "." : "");
}

static bool is_https_url(const char *s)
{
    if (strncmp(s, "https://", 8) != 0 || s[8] == '\0')
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ')
            return false;
    return true;
}

/* "none", "header:<Header-Name>" or "query:<parameter>". */
static bool is_idempotency(const char *s)
{
    const char *rest;
    bool header;
    if (strcmp(s, "none") == 0)
        return true;
    if (strncmp(s, "header:", 7) == 0)
        rest = s + 7, header = true;
    else if (strncmp(s, "query:", 6) == 0)
        rest = s + 6, header = false;
    else
        return false;
    if (!*rest)
        return false;
    for (; *rest; rest++) {
        char c = *rest;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (header ? c == '-' : c == '_');
        if (!ok)
            return false;
    }
    return true;
}

/* arr (an array) holds at least min_items distinct non-empty strings. */
static int vstrings(const vctx *v, hf_json arr, const char *path, size_t min_items)
{
    size_t n = hf_json_len(arr);
    if (n < min_items)
        return verr(v, path, "must have at least %zu item%s", min_items, min_items == 1 ? "" : "s");
    for (size_t i = 0; i < n; i++) {
        char p[VPATH_MAX];
        path_index(p, path, i);
        hf_json x = hf_json_at(arr, i);
        if (vtype(v, x, p, V_TEXT) < 0)
            return -1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(hf_json_str(hf_json_at(arr, j)), x->u.string) == 0) {
                char safe[96];
                printable(safe, sizeof safe, x->u.string);
                return verr(v, p, "\"%s\" is listed twice", safe);
            }
    }
    return 0;
}

static int validate_oauth(const vctx *v, hf_json doc, hf_json *scopes_out)
{
    hf_json oauth = NULL, auth = NULL, scopes = NULL, pkce = NULL, authorize_url = NULL,
            token_url = NULL;
    if (vget(v, doc, "", "oauth", V_OBJECT, true, &oauth) < 0 ||
        vget(v, oauth, "oauth", "auth", V_TEXT, true, &auth) < 0 ||
        vchoice(v, "oauth.auth", auth->u.string, auth_kinds) < 0 ||
        vget(v, oauth, "oauth", "scopes", V_ARRAY, true, &scopes) < 0 ||
        vstrings(v, scopes, "oauth.scopes", 0) < 0 ||
        vget(v, oauth, "oauth", "authorize_url", V_TEXT, false, &authorize_url) < 0 ||
        vget(v, oauth, "oauth", "token_url", V_TEXT, false, &token_url) < 0 ||
        vget(v, oauth, "oauth", "pkce", V_BOOL, true, &pkce) < 0)
        return -1;
    if (strcmp(auth->u.string, "basic") == 0) {
        /* No OAuth (Twilio): nothing to authorise, so no URLs, scopes or PKCE. */
        if (authorize_url)
            return verr(v, "oauth.authorize_url", "not allowed with auth \"basic\"");
        if (token_url)
            return verr(v, "oauth.token_url", "not allowed with auth \"basic\"");
        if (hf_json_len(scopes) > 0)
            return verr(v, "oauth.scopes", "must be empty with auth \"basic\"");
        if (YAJL_IS_TRUE(pkce))
            return verr(v, "oauth.pkce", "must be false with auth \"basic\"");
    } else {
        if (!authorize_url)
            return verr(v, "oauth.authorize_url", "missing");
        if (!token_url)
            return verr(v, "oauth.token_url", "missing");
        if (!is_https_url(authorize_url->u.string))
            return verr(v, "oauth.authorize_url", "must be an https:// URL");
        if (!is_https_url(token_url->u.string))
            return verr(v, "oauth.token_url", "must be an https:// URL");
        if (hf_json_len(scopes) == 0)
            return verr(v, "oauth.scopes", "must not be empty with auth \"oauth2\"");
    }
    *scopes_out = scopes;
    return vkeys(v, oauth, "oauth", oauth_keys);
}

static int validate_events(const vctx *v, hf_json doc, hf_connector *k)
{
    hf_json events = NULL;
    if (vget(v, doc, "", "webhook_events", V_ARRAY, true, &events) < 0)
        return -1;
    size_t n = hf_json_len(events);
    if (n == 0)
        return verr(v, "webhook_events", "must have at least 1 item");
    k->events = xcalloc(n, sizeof *k->events);
    for (size_t i = 0; i < n; i++) {
        char p[VPATH_MAX];
        path_index(p, "webhook_events", i);
        hf_json ev = hf_json_at(events, i), name = NULL, summary = NULL, natives = NULL,
                sample = NULL;
        if (vtype(v, ev, p, V_OBJECT) < 0 || vget(v, ev, p, "name", V_TEXT, true, &name) < 0)
            return -1;
        char np[VPATH_MAX];
        path_key(np, p, "name");
        if (videntifier(v, np, name->u.string, true) < 0)
            return -1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(k->events[j].name, name->u.string) == 0)
                return verr(v, np, "\"%s\" is listed twice", name->u.string);
        if (vget(v, ev, p, "summary", V_TEXT, true, &summary) < 0 ||
            vget(v, ev, p, "native_types", V_ARRAY, true, &natives) < 0)
            return -1;
        char tp[VPATH_MAX];
        path_key(tp, p, "native_types");
        if (vstrings(v, natives, tp, 1) < 0)
            return -1;
        /* One native type must map to one event, or ingest could not choose. */
        for (size_t t = 0; t < hf_json_len(natives); t++) {
            const char *native = hf_json_str(hf_json_at(natives, t));
            for (size_t j = 0; j < i; j++)
                for (size_t u = 0; u < hf_json_len(k->events[j].native_types); u++)
                    if (strcmp(hf_json_str(hf_json_at(k->events[j].native_types, u)), native) ==
                        0) {
                        char ip[VPATH_MAX], safe[96];
                        path_index(ip, tp, t);
                        printable(safe, sizeof safe, native);
                        return verr(v, ip, "\"%s\" is already mapped to event \"%s\"", safe,
                                    k->events[j].name);
                    }
        }
        if (vget(v, ev, p, "sample_payload", V_OBJECT, true, &sample) < 0 ||
            vkeys(v, ev, p, event_keys) < 0)
            return -1;
        k->events[i] = (catalog_event){name->u.string, natives, sample};
        k->nevents = i + 1;
    }
    return 0;
}

static int validate_input(const vctx *v, hf_json input, const char *p, hf_json prev_inputs,
                          size_t index)
{
    hf_json name = NULL, type = NULL, required = NULL, description = NULL, choices = NULL;
    if (vtype(v, input, p, V_OBJECT) < 0 || vget(v, input, p, "name", V_TEXT, true, &name) < 0)
        return -1;
    char np[VPATH_MAX];
    path_key(np, p, "name");
    if (videntifier(v, np, name->u.string, false) < 0)
        return -1;
    for (size_t j = 0; j < index; j++)
        if (strcmp(hf_json_str(hf_json_get(hf_json_at(prev_inputs, j), "name")), name->u.string) ==
            0)
            return verr(v, np, "\"%s\" is listed twice", name->u.string);
    char tp[VPATH_MAX];
    path_key(tp, p, "type");
    if (vget(v, input, p, "type", V_TEXT, true, &type) < 0 ||
        vchoice(v, tp, type->u.string, value_types) < 0 ||
        vget(v, input, p, "required", V_BOOL, true, &required) < 0 ||
        vget(v, input, p, "description", V_TEXT, true, &description) < 0 ||
        vget(v, input, p, "enum", V_ARRAY, false, &choices) < 0)
        return -1;
    char ep[VPATH_MAX];
    path_key(ep, p, "enum");
    if (choices) {
        if (strcmp(type->u.string, "string") != 0)
            return verr(v, ep, "only allowed with type string");
        if (vstrings(v, choices, ep, 1) < 0)
            return -1;
    }
    hf_json def = hf_json_get(input, "default");
    if (def) {
        char dp[VPATH_MAX];
        path_key(dp, p, "default");
        if (!value_is(def, type->u.string))
            return verr(v, dp, "expected %s, got %s", type->u.string, json_type_name(def));
        if (choices) {
            bool listed = false;
            for (size_t i = 0; i < hf_json_len(choices) && !listed; i++)
                listed = strcmp(hf_json_str(hf_json_at(choices, i)), def->u.string) == 0;
            if (!listed) {
                char safe[96];
                printable(safe, sizeof safe, def->u.string);
                return verr(v, dp, "\"%s\" is not one of %s", safe, ep);
            }
        }
    }
    return vkeys(v, input, p, input_keys);
}

/* output {"fields": {name: type}} and sample_output, which must have exactly those fields with
 * values of those types (simulation returns it as the action's output). */
static int validate_output(const vctx *v, hf_json action, const char *p)
{
    hf_json output = NULL, fields = NULL, sample = NULL;
    char op[VPATH_MAX], fp[VPATH_MAX], sp[VPATH_MAX];
    path_key(op, p, "output");
    path_key(fp, op, "fields");
    path_key(sp, p, "sample_output");
    if (vget(v, action, p, "output", V_OBJECT, true, &output) < 0 ||
        vget(v, output, op, "fields", V_OBJECT, true, &fields) < 0)
        return -1;
    if (hf_json_len(fields) == 0)
        return verr(v, fp, "must have at least 1 field");
    if (vkeys(v, fields, fp, NULL) < 0)
        return -1;
    for (size_t i = 0; i < hf_json_len(fields); i++) {
        const char *key;
        hf_json type = hf_json_member(fields, i, &key);
        char kp[VPATH_MAX];
        path_key(kp, fp, key);
        if (videntifier(v, kp, key, false) < 0 || vtype(v, type, kp, V_TEXT) < 0 ||
            vchoice(v, kp, type->u.string, value_types) < 0)
            return -1;
    }
    if (vkeys(v, output, op, output_keys) < 0 ||
        vget(v, action, p, "sample_output", V_OBJECT, true, &sample) < 0 ||
        vkeys(v, sample, sp, NULL) < 0)
        return -1;
    for (size_t i = 0; i < hf_json_len(sample); i++) {
        const char *key;
        hf_json value = hf_json_member(sample, i, &key);
        char kp[VPATH_MAX];
        path_key(kp, sp, key);
        const char *type = hf_json_str(hf_json_get(fields, key));
        if (!type)
            return verr(v, kp, "not listed in output.fields");
        if (!value_is(value, type))
            return verr(v, kp, "expected %s (output.fields), got %s", type, json_type_name(value));
    }
    for (size_t i = 0; i < hf_json_len(fields); i++) {
        const char *key;
        hf_json_member(fields, i, &key);
        if (!hf_json_get(sample, key)) {
            char kp[VPATH_MAX];
            path_key(kp, sp, key);
            return verr(v, kp, "missing (listed in output.fields)");
        }
    }
    return 0;
}

static int validate_actions(const vctx *v, hf_json doc, hf_json oauth_scopes, hf_connector *k)
{
    hf_json actions = NULL;
    if (vget(v, doc, "", "actions", V_ARRAY, true, &actions) < 0)
        return -1;
    size_t n = hf_json_len(actions);
    if (n == 0)
        return verr(v, "actions", "must have at least 1 item");
    k->actions = xcalloc(n, sizeof *k->actions);
    for (size_t i = 0; i < n; i++) {
        char p[VPATH_MAX], ip[VPATH_MAX];
        path_index(p, "actions", i);
        path_key(ip, p, "id");
        hf_json a = hf_json_at(actions, i), id = NULL, name = NULL, summary = NULL, sim = NULL;
        hf_json scopes = NULL, idem = NULL, inputs = NULL;
        if (vtype(v, a, p, V_OBJECT) < 0 || vget(v, a, p, "id", V_TEXT, true, &id) < 0 ||
            videntifier(v, ip, id->u.string, false) < 0)
            return -1;
        for (size_t j = 0; j < i; j++)
            if (strcmp(k->actions[j].id, id->u.string) == 0)
                return verr(v, ip, "\"%s\" is listed twice", id->u.string);
        char sp[VPATH_MAX], dp[VPATH_MAX], np[VPATH_MAX];
        path_key(sp, p, "scopes");
        path_key(dp, p, "idempotency");
        path_key(np, p, "inputs");
        if (vget(v, a, p, "name", V_TEXT, true, &name) < 0 ||
            vget(v, a, p, "summary", V_TEXT, true, &summary) < 0 ||
            vget(v, a, p, "simulatable", V_BOOL, true, &sim) < 0 ||
            vget(v, a, p, "scopes", V_ARRAY, true, &scopes) < 0 || vstrings(v, scopes, sp, 0) < 0)
            return -1;
        for (size_t s = 0; s < hf_json_len(scopes); s++) {
            const char *scope = hf_json_str(hf_json_at(scopes, s));
            bool granted = false;
            for (size_t g = 0; g < hf_json_len(oauth_scopes) && !granted; g++)
                granted = strcmp(hf_json_str(hf_json_at(oauth_scopes, g)), scope) == 0;
            if (!granted) {
                char ep[VPATH_MAX], safe[96];
                path_index(ep, sp, s);
                printable(safe, sizeof safe, scope);
                return verr(v, ep, "\"%s\" is not one of oauth.scopes", safe);
            }
        }
        if (vget(v, a, p, "idempotency", V_TEXT, true, &idem) < 0)
            return -1;
        if (!is_idempotency(idem->u.string)) {
            char safe[96];
            printable(safe, sizeof safe, idem->u.string);
            return verr(v, dp, "\"%s\" is not none, header:<Header-Name> or query:<parameter>",
                        safe);
        }
        if (vget(v, a, p, "inputs", V_ARRAY, true, &inputs) < 0)
            return -1;
        for (size_t j = 0; j < hf_json_len(inputs); j++) {
            char jp[VPATH_MAX];
            path_index(jp, np, j);
            if (validate_input(v, hf_json_at(inputs, j), jp, inputs, j) < 0)
                return -1;
        }
        if (validate_output(v, a, p) < 0 || vkeys(v, a, p, action_keys) < 0)
            return -1;
        k->actions[i] = (hf_action){id->u.string, a, YAJL_IS_TRUE(sim)};
        k->nactions = i + 1;
    }
    return 0;
}

/* Checks k->doc as the connector in file stem.json and fills k's index on success. */
static int validate_connector(const vctx *v, hf_connector *k, const char *stem)
{
    hf_json doc = k->doc, id = NULL, name = NULL, category = NULL, summary = NULL, features = NULL;
    hf_json scopes = NULL, avail = NULL, pricing = NULL, setup = NULL;
    if (!YAJL_IS_OBJECT(doc))
        return verr(v, "", "expected an object at the top level, got %s", json_type_name(doc));
    if (vget(v, doc, "", "id", V_TEXT, true, &id) < 0 ||
        videntifier(v, "id", id->u.string, false) < 0)
        return -1;
    if (strcmp(id->u.string, stem) != 0)
        return verr(v, "id", "\"%s\" does not match the file name (want \"%s\")", id->u.string,
                    stem);
    if (vget(v, doc, "", "name", V_TEXT, true, &name) < 0 ||
        vget(v, doc, "", "category", V_TEXT, true, &category) < 0 ||
        vchoice(v, "category", category->u.string, categories) < 0 ||
        vget(v, doc, "", "summary", V_TEXT, true, &summary) < 0 ||
        vget(v, doc, "", "features", V_ARRAY, true, &features) < 0 ||
        vstrings(v, features, "features", 1) < 0 || validate_oauth(v, doc, &scopes) < 0 ||
        validate_events(v, doc, k) < 0 ||
        vget(v, doc, "", "availability", V_TEXT, true, &avail) < 0 ||
        vchoice(v, "availability", avail->u.string, availabilities) < 0 ||
        vget(v, doc, "", "pricing", V_TEXT, true, &pricing) < 0 ||
        vchoice(v, "pricing", pricing->u.string, pricings) < 0 ||
        vget(v, doc, "", "setup_time", V_TEXT, true, &setup) < 0 ||
        validate_actions(v, doc, scopes, k) < 0 || vkeys(v, doc, "", connector_keys) < 0)
        return -1;
    k->id = id->u.string;
    k->name = name->u.string;
    k->category = category->u.string;
    k->beta = strcmp(avail->u.string, "Beta") == 0;
    return 0;
}

/* ---- loading ------------------------------------------------------------------------------- */

static void connector_clear(hf_connector *k)
{
    free(k->file);
    free(k->events);
    free(k->actions);
    hf_json_free(k->doc);
    memset(k, 0, sizeof *k);
}

/* Reads, parses and validates dir/file into k. On error k may be half-filled; the caller clears
 * it with connector_clear either way. */
static int connector_load(hf_connector *k, const char *dir, const char *file, char *err,
                          size_t errlen)
{
    char shown[128];
    printable(shown, sizeof shown, file);
    k->file = xstrdup(shown);
    char *path = xasprintf("%s/%s", dir, file);
    char reason[256];
    size_t len = 0;
    char *text = hf_read_file(path, &len, reason, sizeof reason);
    free(path);
    if (!text)
        return hf_err(err, errlen, "%s", reason);
    k->doc = hf_json_parse(text, len, reason, sizeof reason);
    free(text);
    if (!k->doc)
        return hf_err(err, errlen, "%s: %s", k->file, reason);
    char *stem = xstrndup(file, strlen(file) - strlen(".json"));
    vctx v = {k->file, err, errlen};
    int rc = validate_connector(&v, k, stem);
    free(stem);
    return rc;
}

static size_t order_rank(const char *id)
{
    for (size_t i = 0; i < HF_ARRAY_LEN(fixed_order); i++)
        if (strcmp(id, fixed_order[i]) == 0)
            return i;
    return HF_ARRAY_LEN(fixed_order);
}

static int connector_cmp(const void *a, const void *b)
{
    const hf_connector *x = a, *y = b;
    size_t rx = order_rank(x->id), ry = order_rank(y->id);
    if (rx != ry)
        return rx < ry ? -1 : 1;
    return strcmp(x->id, y->id);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_connector_file(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' && n > strlen(".json") && strcmp(name + n - 5, ".json") == 0;
}

/* The "*.json" names of dir, sorted so that the first error reported is deterministic. */
static char **list_connector_files(const char *dir, size_t *count, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        hf_err(err, errlen, "cannot open catalog directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (!is_connector_file(e->d_name))
            continue;
        names = xrealloc(names, (n + 1) * sizeof *names);
        names[n++] = xstrdup(e->d_name);
        errno = 0;
    }
    int read_errno = errno;
    closedir(d);
    if (read_errno) {
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        hf_err(err, errlen, "cannot read catalog directory %s: %s", dir, strerror(read_errno));
        return NULL;
    }
    if (n == 0) {
        hf_err(err, errlen, "%s: no connector files (*.json)", dir);
        return NULL;
    }
    qsort(names, n, sizeof *names, name_cmp);
    *count = n;
    return names;
}

hf_catalog *hf_catalog_load(const char *dir, char *err, size_t errlen)
{
    size_t nfiles = 0;
    char **files = list_connector_files(dir, &nfiles, err, errlen);
    if (!files)
        return NULL;
    hf_catalog *c = xcalloc(1, sizeof *c);
    c->connectors = xcalloc(nfiles, sizeof *c->connectors);
    int rc = 0;
    for (size_t i = 0; i < nfiles && rc == 0; i++) {
        rc = connector_load(&c->connectors[i], dir, files[i], err, errlen);
        c->n = i + 1; /* so that hf_catalog_free also clears a half-loaded connector */
    }
    for (size_t i = 0; i < nfiles; i++)
        free(files[i]);
    free(files);
    if (rc < 0) {
        hf_catalog_free(c);
        return NULL;
    }
    /* Ids equal file names, which a directory cannot repeat, so ids are unique here. */
    qsort(c->connectors, c->n, sizeof *c->connectors, connector_cmp);
    hf_buf json = {0};
    hf_buf_puts(&json, "{\"connectors\":[");
    for (size_t i = 0; i < c->n; i++) {
        if (i)
            hf_buf_putc(&json, ',');
        hf_json_serialize(c->connectors[i].doc, &json);
    }
    hf_buf_puts(&json, "]}");
    c->json_len = json.len;
    c->json = hf_buf_steal(&json);
    return c;
}

void hf_catalog_free(hf_catalog *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        connector_clear(&c->connectors[i]);
    free(c->connectors);
    free(c->json);
    free(c);
}

const char *hf_catalog_default_dir(void)
{
    const char *dir = hf_config_get("HOOKFLOW_CATALOG_DIR");
    if (dir && *dir)
        return dir;
    return HOOKFLOW_SOURCE_DIR "/schemas/catalog";
}

/* ---- lookups ------------------------------------------------------------------------------- */

size_t hf_catalog_count(const hf_catalog *c)
{
    return c->n;
}

const hf_connector *hf_catalog_at(const hf_catalog *c, size_t i)
{
    return i < c->n ? &c->connectors[i] : NULL;
}

const hf_connector *hf_catalog_find(const hf_catalog *c, const char *id)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->connectors[i].id, id) == 0)
            return &c->connectors[i];
    return NULL;
}

const char *hf_connector_id(const hf_connector *k)
{
    return k->id;
}

const char *hf_connector_name(const hf_connector *k)
{
    return k->name;
}

const char *hf_connector_category(const hf_connector *k)
{
    return k->category;
}

bool hf_connector_is_beta(const hf_connector *k)
{
    return k->beta;
}

static const catalog_event *connector_event(const hf_connector *k, const char *event)
{
    for (size_t i = 0; i < k->nevents; i++)
        if (strcmp(k->events[i].name, event) == 0)
            return &k->events[i];
    return NULL;
}

const char *hf_connector_event_for_native(const hf_connector *k, const char *native_type)
{
    for (size_t i = 0; i < k->nevents; i++)
        for (size_t t = 0; t < hf_json_len(k->events[i].native_types); t++)
            if (strcmp(hf_json_str(hf_json_at(k->events[i].native_types, t)), native_type) == 0)
                return k->events[i].name;
    return NULL;
}

bool hf_connector_has_event(const hf_connector *k, const char *event)
{
    return connector_event(k, event) != NULL;
}

const hf_action *hf_connector_action(const hf_connector *k, const char *action_id)
{
    for (size_t i = 0; i < k->nactions; i++)
        if (strcmp(k->actions[i].id, action_id) == 0)
            return &k->actions[i];
    return NULL;
}

hf_json hf_connector_json(const hf_connector *k)
{
    return k->doc;
}

hf_json hf_action_json(const hf_action *a)
{
    return a->json;
}

const char *hf_action_id(const hf_action *a)
{
    return a->id;
}

bool hf_action_simulatable(const hf_action *a)
{
    return a->simulatable;
}

hf_json hf_connector_sample_payload(const hf_connector *k, const char *event)
{
    const catalog_event *e = connector_event(k, event);
    return e ? e->sample_payload : NULL;
}

const char *hf_catalog_json(const hf_catalog *c, size_t *len)
{
    if (len)
        *len = c->json_len;
    return c->json;
}
