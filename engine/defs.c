/* defs: a process-wide cache of parsed workflow definitions, keyed by (workflow id, version).
 * Versions are immutable, so an entry never goes stale. Thread-safe. */
#include "defs.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg.h"

typedef struct entry {
    char *key; /* "<uuid>/<version>" */
    wf_def *def;
    struct entry *next;
} entry;

#define BUCKETS 1024

struct engine_defs {
    pthread_mutex_t lock;
    entry *buckets[BUCKETS];
};

static size_t hash(const char *s)
{
    size_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h % BUCKETS;
}

engine_defs *engine_defs_new(void)
{
    engine_defs *d = xcalloc(1, sizeof *d);
    pthread_mutex_init(&d->lock, NULL);
    return d;
}

void engine_defs_free(engine_defs *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < BUCKETS; i++) {
        entry *e = d->buckets[i];
        while (e) {
            entry *next = e->next;
            wf_free(e->def);
            free(e->key);
            free(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&d->lock);
    free(d);
}

const wf_def *engine_defs_get(engine_defs *d, PGconn *db, const char *workflow_id, int version,
                              const char *definition_json, char *err, size_t errlen)
{
    char key[96];
    snprintf(key, sizeof key, "%s/%d", workflow_id, version);
    size_t h = hash(key);
    pthread_mutex_lock(&d->lock);
    for (entry *e = d->buckets[h]; e; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            pthread_mutex_unlock(&d->lock);
            return e->def;
        }
    }
    pthread_mutex_unlock(&d->lock);

    PGresult *res = NULL;
    const char *json = definition_json;
    if (!json) {
        char vtext[16];
        snprintf(vtext, sizeof vtext, "%d", version);
        const char *params[] = {workflow_id, vtext};
        if (hf_pg_exec(db,
                       "SELECT definition::text FROM workflow_versions "
                       "WHERE workflow_id = $1 AND version = $2",
                       2, params, &res, err, errlen) != HF_PG_OK) {
            PQclear(res);
            return NULL;
        }
        if (PQntuples(res) != 1) {
            PQclear(res);
            hf_err(err, errlen, "workflow %s has no version %d", workflow_id, version);
            return NULL;
        }
        json = PQgetvalue(res, 0, 0);
    }
    char perr[256];
    wf_def *def = wf_parse(json, strlen(json), perr, sizeof perr);
    PQclear(res);
    if (!def) {
        hf_err(err, errlen, "workflow %s version %d does not parse: %s", workflow_id, version,
               perr);
        return NULL;
    }
    pthread_mutex_lock(&d->lock);
    for (entry *e = d->buckets[h]; e; e = e->next) {
        if (strcmp(e->key, key) == 0) { /* another thread won the race */
            pthread_mutex_unlock(&d->lock);
            wf_free(def);
            return e->def;
        }
    }
    entry *e = xcalloc(1, sizeof *e);
    e->key = xstrdup(key);
    e->def = def;
    e->next = d->buckets[h];
    d->buckets[h] = e;
    pthread_mutex_unlock(&d->lock);
    return def;
}
