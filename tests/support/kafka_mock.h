/* kafka_mock: librdkafka's in-process mock cluster for the unit tests that produce or consume
 * (test_kafka, test_ingest, test_db_intake): creating one, destroying it off the test's thread,
 * and reading its topics back with a plain consumer. Failures of the consumer side fail the
 * running cmocka test (fail_msg); fuzz targets have no broker and do not link this. */
#ifndef HF_TEST_KAFKA_MOCK_H
#define HF_TEST_KAFKA_MOCK_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

/* A one-broker mock cluster (broker id 1) and the producer handle that hosts it; tests reach
 * the broker through bootstraps and inject faults through mock. */
typedef struct km_cluster {
    rd_kafka_t *owner; /* hosts mock; nothing is produced through it */
    rd_kafka_mock_cluster_t *mock;
    const char *bootstraps; /* owned by mock */
} km_cluster;

/* A librdkafka log callback that drops every line (the mock cluster's and its clients'
 * connection chatter would bury the test output). */
void km_quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/* A new mock cluster with ntopics topics of one partition each. Returns NULL with the reason
 * in err when librdkafka refuses; the caller owns the result and gives it back with
 * km_cluster_destroy_later (or km_cluster_free). */
km_cluster *km_cluster_new(const char *const *topics, size_t ntopics, char *err, size_t errlen);

/* Destroys c and frees it, now: this often stalls for 1 s (the mock's poll loop timeout). NULL
 * is a no-op. */
void km_cluster_free(km_cluster *c);

/* Takes c over and destroys it on a thread of its own while the next test runs (or at once when
 * no thread can be started); km_reapers_join waits for every such thread. NULL is a no-op. */
void km_cluster_destroy_later(km_cluster *c);

/* Waits for every cluster handed to km_cluster_destroy_later to be gone. Shaped as a cmocka
 * group teardown (state is unused); returns 0. */
int km_reapers_join(void **state);

/* A consumer of c in consumer group group with auto-commit off; props is NULL or a
 * NULL-terminated name, value, name, value... list of further librdkafka properties. The caller
 * frees it with km_consumer_free. Fails the test when librdkafka refuses the configuration. */
rd_kafka_t *km_consumer_new(const km_cluster *c, const char *group, const char *const *props);

/* Closes and destroys a consumer from km_consumer_new. */
void km_consumer_free(rd_kafka_t *rk);

/* Called by km_consume for each message it reads (never for error events); m stays the
 * caller's of km_consume, arg is the one passed to it. */
typedef void km_on_message(const rd_kafka_message_t *m, void *arg);

/* Assigns rk partition 0 of topic from its beginning (no group join) and reads until want
 * messages have been passed to on_message or timeout_ms has passed; returns how many were.
 * Fails the test when the assignment is refused. */
size_t km_consume(rd_kafka_t *rk, const char *topic, size_t want, int timeout_ms,
                  km_on_message *on_message, void *arg);

#endif
