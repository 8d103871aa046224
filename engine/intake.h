/* intake: the consumer side of a worker. Per batch of Kafka messages, one PostgreSQL transaction
 * dedupes the event ids, finds each event's tenant from its connection, matches the tenant's
 * enabled workflows (trigger + filter) and inserts their runs; only then are the offsets
 * committed, so a crash in between replays into the dedupe. */
#ifndef ENGINE_INTAKE_H
#define ENGINE_INTAKE_H

#include <stdbool.h>

#include "defs.h"
#include "executor.h"
#include "metrics.h"
#include "worker.h"

typedef struct engine_intake engine_intake;

/* Runs a batch creates go to executor: the ones that may start at once (room permitting, and
 * no earlier run of their ordering key pending) are inserted already claimed for this worker
 * and handed over; for the rest the executor is woken to claim them. */
engine_intake *engine_intake_new(const engine_config *cfg, const char *worker_id, engine_defs *defs,
                                 hf_metrics *metrics, engine_executor *executor, char *err,
                                 size_t errlen);
void engine_intake_start(engine_intake *in);
/* Finishes the batch in hand, commits, leaves the consumer group and joins the thread. */
void engine_intake_stop(engine_intake *in);
void engine_intake_free(engine_intake *in);
/* True while PostgreSQL answers (checked by every batch, and at most a second apart when idle).
 * Kafka is not part of it: a worker without its broker still runs the runs it holds, and the
 * consumer reconnects by itself (its lag shows in the metrics). */
bool engine_intake_healthy(engine_intake *in);
/* Sets hookflow_engine_consumer_lag from a librdkafka statistics JSON document (what the
 * consumer's statistics callback does every 5 s): the lag of each partition assigned to this
 * worker, and 0 for each partition it published before and no longer has. Any thread. */
void engine_intake_publish_lag(engine_intake *in, const char *json, size_t len);

#endif
