/* config: a declarative table of HOOKFLOW_* settings with defaults, bounds and clear errors. */
#ifndef HF_CONFIG_H
#define HF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include "util.h"

typedef enum {
    HF_CFG_STRING, /* char * (owned by the target struct; free with hf_config_free) */
    HF_CFG_INT,    /* long long, bounded by min..max */
    HF_CFG_DEC,    /* double (a plain decimal such as 0.5), bounded by min..max */
    HF_CFG_BOOL,   /* bool: true/false/1/0/yes/no/on/off */
    HF_CFG_ENUM,   /* char *, one of choices */
    HF_CFG_LISTEN, /* char * "host:port" */
} hf_cfg_type;

typedef struct hf_cfg_item {
    const char *name; /* environment variable, e.g. "HOOKFLOW_INGEST_LISTEN" */
    hf_cfg_type type;
    const char *def; /* default as text; NULL = required */
    long long min, max;
    const char *const *choices; /* NULL-terminated, for HF_CFG_ENUM */
    size_t offset;              /* offsetof(target struct, field) */
    const char *help;
} hf_cfg_item;

#define HF_CFG_STR(n, def, st, f, h)                                                               \
    {                                                                                              \
        n, HF_CFG_STRING, def, 0, 0, NULL, offsetof(st, f), h                                      \
    }
#define HF_CFG_LST(n, def, st, f, h)                                                               \
    {                                                                                              \
        n, HF_CFG_LISTEN, def, 0, 0, NULL, offsetof(st, f), h                                      \
    }
#define HF_CFG_NUM(n, def, lo, hi, st, f, h)                                                       \
    {                                                                                              \
        n, HF_CFG_INT, def, lo, hi, NULL, offsetof(st, f), h                                       \
    }
#define HF_CFG_DECIMAL(n, def, lo, hi, st, f, h)                                                   \
    {                                                                                              \
        n, HF_CFG_DEC, def, lo, hi, NULL, offsetof(st, f), h                                       \
    }
#define HF_CFG_BOOLEAN(n, def, st, f, h)                                                           \
    {                                                                                              \
        n, HF_CFG_BOOL, def, 0, 0, NULL, offsetof(st, f), h                                        \
    }
#define HF_CFG_CHOICE(n, def, ch, st, f, h)                                                        \
    {                                                                                              \
        n, HF_CFG_ENUM, def, 0, 0, ch, offsetof(st, f), h                                          \
    }

/* Fills target from the environment (and the optional file named by HOOKFLOW_CONFIG_FILE, whose
 * KEY=VALUE lines the environment overrides). On a bad value returns -1 with one line in err that
 * names the variable, the value and what is allowed. */
HF_MUST_CHECK int hf_config_load(const hf_cfg_item *items, size_t n, void *target, char *err,
                                 size_t errlen);

/* Looks up one setting: the environment first, then the config file. NULL if unset. */
const char *hf_config_get(const char *name);

/* Frees the strings hf_config_load stored in target. */
void hf_config_free(const hf_cfg_item *items, size_t n, void *target);

/* Prints the table (name, default, help) for --help. */
void hf_config_print_help(const hf_cfg_item *items, size_t n);

/* Calls fn(property, value) for every HOOKFLOW_KAFKA_<PROPERTY> variable except BROKERS, with the
 * property lower-cased and underscores turned into dots (HOOKFLOW_KAFKA_SESSION_TIMEOUT_MS ->
 * session.timeout.ms). Returns the first non-zero fn result. */
int hf_config_each_kafka_property(int (*fn)(const char *prop, const char *value, void *arg),
                                  void *arg);

/* Splits "host:port" (host may be empty, "*" or [v6]); false if malformed. host is caller-sized. */
bool hf_config_parse_listen(const char *s, char *host, size_t hostlen, int *port);

#endif
