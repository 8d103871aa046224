/* executor: the run side of a worker. It claims runnable runs under a lease (FOR UPDATE SKIP
 * LOCKED), walks each run's node graph, calls the platforms through libcurl's multi interface on
 * one event loop, records every node attempt, retries with backoff, keeps delays and retries as a
 * next-run time, and finishes the run. Database writes are batched per loop tick. */
#ifndef ENGINE_EXECUTOR_H
#define ENGINE_EXECUTOR_H

#include <stdbool.h>
#include <stdint.h>

#include "catalog.h"
#include "defs.h"
#include "metrics.h"
#include "secrets.h"
#include "tokens.h"
#include "worker.h"

typedef struct engine_executor engine_executor;

/* keys may be NULL (then actions needing a stored token fail with a clear error). Borrows
 * everything passed; they must outlive the executor. */
engine_executor *engine_executor_new(const engine_config *cfg, const char *worker_id,
                                     engine_defs *defs, hf_metrics *metrics,
                                     const hf_catalog *catalog, const hf_secrets *secrets,
                                     const engine_keyring *keys, char *err, size_t errlen);
void engine_executor_start(engine_executor *ex);
/* SIGHUP: the executor takes secrets (not NULL) and keys (may be NULL) over and uses them from
 * its next loop turn on, instead of what it was given or took before. Thread-safe. */
void engine_executor_reload_secrets(engine_executor *ex, hf_secrets *secrets, engine_keyring *keys);
/* Asks for a claim round soon. Thread-safe. */
void engine_executor_wake(void *ex);

/* A run intake created already claimed for this worker (status running, leased to it), handed
 * over so it starts without a claim round trip. */
typedef struct engine_handoff {
    char id[40], tenant_id[40], workflow_id[40];
    int version;
    char *trigger;     /* the envelope JSON (ownership passes to the executor) */
    char *tenant_json; /* {"id","slug","name","environment"} (likewise) */
} engine_handoff;

/* How many more runs this executor can take now (may be <= 0). Thread-safe, approximate. */
long long engine_executor_room(engine_executor *ex);
/* Takes the runs (and their strings) over; they start on the executor's loop. Thread-safe. */
void engine_executor_adopt(engine_executor *ex, engine_handoff *runs, size_t n);
/* Stops claiming and starting calls, lets calls in flight finish (up to timeout_ms, then cancels
 * them: one that is safe to repeat goes back to the queue with its run without counting as a
 * retry; one that is not is an unknown outcome that fails its run), records everything, releases
 * the leases of unfinished runs and joins the thread. */
void engine_executor_stop(engine_executor *ex, int64_t timeout_ms);
void engine_executor_free(engine_executor *ex);
bool engine_executor_healthy(engine_executor *ex);

#endif
