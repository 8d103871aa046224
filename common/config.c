/* config: a declarative table of HOOKFLOW_* settings with defaults, bounds and clear errors. */
#include "config.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

/* The optional config file, read once: KEY=VALUE lines, '#' comments. */
static struct {
    pthread_once_t once;
    char **keys;
    char **values;
    size_t n;
} g_file = {.once = PTHREAD_ONCE_INIT};

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static void load_file(void)
{
    const char *path = getenv("HOOKFLOW_CONFIG_FILE");
    if (!path || !*path)
        return;
    char err[256];
    char *text = hf_read_file(path, NULL, err, sizeof err);
    if (!text)
        hf_die("HOOKFLOW_CONFIG_FILE: %s", err);
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *l = trim(line);
        if (*l == '#' || *l == '\0')
            continue;
        char *eq = strchr(l, '=');
        if (!eq)
            hf_die("HOOKFLOW_CONFIG_FILE: line without '=' in %s", path);
        *eq = '\0';
        g_file.keys = xrealloc(g_file.keys, (g_file.n + 1) * sizeof(char *));
        g_file.values = xrealloc(g_file.values, (g_file.n + 1) * sizeof(char *));
        g_file.keys[g_file.n] = xstrdup(trim(l));
        g_file.values[g_file.n] = xstrdup(trim(eq + 1));
        g_file.n++;
    }
    free(text);
}

const char *hf_config_get(const char *name)
{
    const char *v = getenv(name);
    if (v)
        return v;
    pthread_once(&g_file.once, load_file);
    for (size_t i = g_file.n; i-- > 0;)
        if (strcmp(g_file.keys[i], name) == 0)
            return g_file.values[i];
    return NULL;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < HF_ARRAY_LEN(yes); i++) {
        if (hf_strieq(s, yes[i])) {
            *out = true;
            return true;
        }
        if (hf_strieq(s, no[i])) {
            *out = false;
            return true;
        }
    }
    return false;
}

bool hf_config_parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon)
        return false;
    size_t hl = (size_t)(colon - s);
    const char *h = s;
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
        h = s + 1;
        hl -= 2;
    } else if (memchr(s, ':', hl)) {
        return false; /* an IPv6 host needs its brackets: "::1" is not host ":" port 1 */
    }
    if (hl >= hostlen)
        return false;
    long long p;
    if (!hf_parse_ll(colon + 1, &p) || p < 0 || p > 65535)
        return false;
    memcpy(host, h, hl);
    host[hl] = '\0';
    if (hl == 0 || strcmp(host, "*") == 0)
        snprintf(host, hostlen, "0.0.0.0");
    *port = (int)p;
    return true;
}

/* Digits with at most one decimal point ("0.5", "2", "10.25"): no sign, exponent, hex, inf or
 * nan, which strtod would take. */
static bool parse_decimal(const char *s, double *out)
{
    bool digits = false, point = false;
    for (const char *c = s; *c; c++) {
        if (*c >= '0' && *c <= '9')
            digits = true;
        else if (*c == '.' && !point)
            point = true;
        else
            return false;
    }
    if (!digits)
        return false;
    *out = strtod(s, NULL);
    return true;
}

int hf_config_load(const hf_cfg_item *items, size_t n, void *target, char *err, size_t errlen)
{
    char *base = target;
    for (size_t i = 0; i < n; i++) {
        const hf_cfg_item *it = &items[i];
        const char *v = hf_config_get(it->name);
        bool from_env = v != NULL;
        if (!v)
            v = it->def;
        if (!v)
            return hf_err(err, errlen, "%s is required (%s)", it->name, it->help);
        void *field = base + it->offset;
        switch (it->type) {
        case HF_CFG_STRING:
            *(char **)field = xstrdup(v);
            break;
        case HF_CFG_LISTEN: {
            char host[256];
            int port;
            if (!hf_config_parse_listen(v, host, sizeof host, &port))
                return hf_err(err, errlen, "%s=\"%s\" is not a listen address (want host:port)",
                              it->name, v);
            *(char **)field = xstrdup(v);
            break;
        }
        case HF_CFG_INT: {
            long long x;
            if (!hf_parse_ll(v, &x))
                return hf_err(err, errlen, "%s=\"%s\" is not a whole number", it->name, v);
            if (x < it->min || x > it->max)
                return hf_err(err, errlen, "%s=%lld is out of range (%lld..%lld)", it->name, x,
                              it->min, it->max);
            *(long long *)field = x;
            break;
        }
        case HF_CFG_DEC: {
            double x;
            if (!parse_decimal(v, &x))
                return hf_err(err, errlen, "%s=\"%s\" is not a decimal number (e.g. 0.5)", it->name,
                              v);
            if (x < (double)it->min || x > (double)it->max)
                return hf_err(err, errlen, "%s=%s is out of range (%lld..%lld)", it->name, v,
                              it->min, it->max);
            *(double *)field = x;
            break;
        }
        case HF_CFG_BOOL:
            if (!parse_bool(v, (bool *)field))
                return hf_err(err, errlen, "%s=\"%s\" is not a boolean (true/false)", it->name, v);
            break;
        case HF_CFG_ENUM: {
            bool ok = false;
            for (const char *const *c = it->choices; *c; c++)
                if (hf_strieq(*c, v)) {
                    *(char **)field = xstrdup(*c);
                    ok = true;
                    break;
                }
            if (!ok) {
                hf_buf allowed = {0};
                for (const char *const *c = it->choices; *c; c++)
                    hf_buf_printf(&allowed, "%s%s", c == it->choices ? "" : "|", *c);
                hf_err(err, errlen, "%s=\"%s\" is not one of %s", it->name, v, allowed.data);
                hf_buf_free(&allowed);
                return -1;
            }
            break;
        }
        }
        (void)from_env;
    }
    return 0;
}

void hf_config_free(const hf_cfg_item *items, size_t n, void *target)
{
    char *base = target;
    for (size_t i = 0; i < n; i++) {
        if (items[i].type == HF_CFG_STRING || items[i].type == HF_CFG_LISTEN ||
            items[i].type == HF_CFG_ENUM) {
            char **f = (char **)(base + items[i].offset);
            free(*f);
            *f = NULL;
        }
    }
}

void hf_config_print_help(const hf_cfg_item *items, size_t n)
{
    printf("Configuration (environment, or KEY=VALUE lines in HOOKFLOW_CONFIG_FILE):\n");
    bool kafka = false;
    for (size_t i = 0; i < n; i++) {
        kafka = kafka || strcmp(items[i].name, "HOOKFLOW_KAFKA_BROKERS") == 0;
        if (strstr(items[i].help, "(default:")) /* the help says it better than the value */
            printf("  %-36s %s\n", items[i].name, items[i].help);
        else
            printf("  %-36s %s (default: %s)\n", items[i].name, items[i].help,
                   items[i].def ? (*items[i].def ? items[i].def : "\"\"") : "required");
    }
    if (kafka)
        printf("  %-36s any librdkafka property, dots as underscores\n",
               "HOOKFLOW_KAFKA_<PROPERTY>");
}

/* Maps a HOOKFLOW_KAFKA_<PROPERTY> name (keylen bytes) to the librdkafka property; false for
 * other names, BROKERS and names too long for prop. */
static bool kafka_property(const char *key, size_t keylen, char *prop, size_t proplen)
{
    static const char prefix[] = "HOOKFLOW_KAFKA_";
    if (keylen <= sizeof prefix - 1 || strncmp(key, prefix, sizeof prefix - 1) != 0)
        return false;
    const char *name = key + sizeof prefix - 1;
    size_t nl = keylen - (sizeof prefix - 1);
    if (nl == strlen("BROKERS") && strncmp(name, "BROKERS", nl) == 0)
        return false;
    if (nl >= proplen)
        return false;
    for (size_t i = 0; i < nl; i++)
        prop[i] = name[i] == '_' ? '.' : (char)tolower((unsigned char)name[i]);
    prop[nl] = '\0';
    return true;
}

int hf_config_each_kafka_property(int (*fn)(const char *prop, const char *value, void *arg),
                                  void *arg)
{
    char prop[128];
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || !kafka_property(*e, (size_t)(eq - *e), prop, sizeof prop))
            continue;
        int rc = fn(prop, eq + 1, arg);
        if (rc)
            return rc;
    }
    /* Then the config file's, unless the environment set the same one (it wins, as in
     * hf_config_get) or a later line of the file repeats it (the last one wins). */
    pthread_once(&g_file.once, load_file);
    for (size_t i = 0; i < g_file.n; i++) {
        const char *key = g_file.keys[i];
        if (getenv(key) || !kafka_property(key, strlen(key), prop, sizeof prop))
            continue;
        bool repeated = false;
        for (size_t j = i + 1; j < g_file.n && !repeated; j++)
            repeated = strcmp(g_file.keys[j], key) == 0;
        if (repeated)
            continue;
        int rc = fn(prop, g_file.values[i], arg);
        if (rc)
            return rc;
    }
    return 0;
}
