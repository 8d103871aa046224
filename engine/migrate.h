/* migrate: applies schemas/migrations (NNNN_name.sql) once each, in order, recorded in
 * schema_migrations, under an advisory lock so concurrent runs are safe. */
#ifndef ENGINE_MIGRATE_H
#define ENGINE_MIGRATE_H

#include <stddef.h>

#include "util.h"

/* Optional progress callbacks (any member may be NULL). */
typedef struct engine_migrate_report {
    /* Another run holds the migration lock; this one now waits for it. */
    void (*waiting)(void *arg);
    /* version/file committed in elapsed_ms. */
    void (*applied)(int version, const char *file, long long elapsed_ms, void *arg);
    void *arg;
} engine_migrate_report;

/* Brings the database at conninfo up to date with the NNNN_name.sql files in dir: each pending
 * file runs in its own transaction together with its schema_migrations row (version, name,
 * sha256 of the file bytes). Everything is checked before anything is applied: it refuses, and
 * changes nothing, when a file name is not NNNN_name.sql, two files share a number, an applied
 * file was edited, renamed or removed, a new file is numbered below the database's version, or a
 * pending file begins or ends a transaction itself (BEGIN, COMMIT, ROLLBACK, ...).
 * A failing file is rolled back (files before it stay applied) and named in err together with
 * PostgreSQL's message. *applied (may be NULL) receives how many files this call applied, even
 * on failure; *version (may be NULL) the database's version afterwards (0 when none), also on
 * failure, except when the folder itself is refused (names, numbers), which is found before
 * connecting: then 0.
 * Returns 0, or -1 with one line in err. */
HF_MUST_CHECK int engine_migrate_run(const char *conninfo, const char *dir,
                                     const engine_migrate_report *report, int *applied,
                                     int *version, char *err, size_t errlen);

/* engine_migrate_run without progress reports, for the engine and tests that migrate
 * themselves. */
HF_MUST_CHECK int engine_migrate(const char *conninfo, const char *dir, int *applied, char *err,
                                 size_t errlen);

#endif
