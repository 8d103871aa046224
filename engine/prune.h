/* prune: retention of finished runs and of event keys (hookflow-engine prune). */
#ifndef ENGINE_PRUNE_H
#define ENGINE_PRUNE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "util.h"

typedef struct engine_prune_opts {
    long long runs_days;       /* finished runs whose finished_at is older go */
    long long event_keys_days; /* event keys received longer ago go */
    long long batch;           /* rows per statement (each its own transaction) */
    bool dry_run;              /* count what would go, delete nothing */
} engine_prune_opts;

typedef struct engine_prune_counts {
    long long runs, event_keys;
} engine_prune_counts;

/* Deletes the succeeded, failed and cancelled runs that finished more than runs_days ago (with
 * their node attempts and attempt history), then the event keys received more than
 * event_keys_days ago, batch rows at a time so that no lock is held long; safe beside running
 * workers and the API (a run retried meanwhile is no longer finished and stays). Pending,
 * running and waiting runs are never touched. Fills *out (with what would go when dry_run).
 * 0, or -1 with one line in err; rows deleted before a failure stay deleted (out says how
 * many). */
HF_MUST_CHECK int engine_prune(PGconn *db, const engine_prune_opts *opts, engine_prune_counts *out,
                               char *err, size_t errlen);

#endif
