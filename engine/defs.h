/* defs: a process-wide cache of parsed workflow definitions, keyed by (workflow id, version).
 * Versions are immutable, so an entry never goes stale. Thread-safe. */
#ifndef ENGINE_DEFS_H
#define ENGINE_DEFS_H

#include <libpq-fe.h>

#include "util.h"
#include "workflow.h"

typedef struct engine_defs engine_defs;

engine_defs *engine_defs_new(void);
void engine_defs_free(engine_defs *d);

/* The definition of workflow_id at version; loaded from db (workflow_versions) on a miss.
 * definition_json, when not NULL, is used instead of a round trip. NULL + err when the row is
 * missing or the stored definition does not parse. The result stays valid until
 * engine_defs_free (entries are never evicted while the process runs: versions are few). */
const wf_def *engine_defs_get(engine_defs *d, PGconn *db, const char *workflow_id, int version,
                              const char *definition_json, char *err, size_t errlen);

#endif
