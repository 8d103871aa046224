/* kafka: an idempotent, acks=all producer with per-message delivery callbacks and a readiness
 * probe, configured from HOOKFLOW_KAFKA_* (librdkafka properties pass through). */
#ifndef HF_KAFKA_H
#define HF_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"

typedef struct hf_producer hf_producer;
typedef struct hf_topic hf_topic; /* a topic to send to, looked up once */

/* Called once per message from the producer's delivery thread: err is NULL on success, else a
 * static description of why the message is not in Kafka. */
typedef void (*hf_delivery_fn)(void *opaque, const char *err);

typedef struct hf_producer_options {
    const char *brokers;        /* bootstrap servers */
    int64_t message_timeout_ms; /* how long librdkafka keeps trying one message */
    int64_t queue_max_messages; /* local queue bound; beyond it hf_producer_send fails */
    double linger_ms;           /* fractions allowed (librdkafka takes 0.5) */
    const char *client_id;      /* NULL: "hookflow" */
} hf_producer_options;

/* Creates the producer (enable.idempotence=true, acks=all) and its delivery and health threads;
 * HOOKFLOW_KAFKA_<PROPERTY> variables are applied last. NULL with a reason in err on a bad
 * property. */
hf_producer *hf_producer_new(const hf_producer_options *opts, hf_delivery_fn on_delivery, char *err,
                             size_t errlen);

/* The handle for sending to topic name; valid until hf_producer_free. Take it once: sending by
 * name makes librdkafka look the topic up under a producer-wide write lock for every message. */
hf_topic *hf_producer_topic(hf_producer *p, const char *name);

/* Queues one message (the bytes are copied). 0 on success: on_delivery(opaque, ...) will be
 * called exactly once. -1 when the message was refused at once (local queue full, producer
 * fatally failed); on_delivery is then not called and err says why. */
HF_MUST_CHECK int hf_producer_send(hf_producer *p, hf_topic *topic, const char *key, size_t keylen,
                                   const void *value, size_t len, void *opaque, char *err,
                                   size_t errlen);

/* True when a broker answered metadata recently and the producer has not fatally failed. */
bool hf_producer_ready(hf_producer *p);
/* Messages waiting for delivery (queue depth). */
int64_t hf_producer_queue_len(hf_producer *p);

/* Waits up to timeout_ms for every queued message to be delivered; returns how many remain. */
int hf_producer_flush(hf_producer *p, int timeout_ms);

/* Drops every message not yet delivered; each gets a failed delivery report. */
void hf_producer_purge(hf_producer *p);

/* Stops the threads and destroys the producer (after flushing what it can in 5 s). */
void hf_producer_free(hf_producer *p);

/* Applies HOOKFLOW_KAFKA_* passthrough properties to a librdkafka configuration (rd_kafka_conf_t
 * passed as void * to keep librdkafka out of this header). */
HF_MUST_CHECK int hf_kafka_conf_apply_env(void *conf, char *err, size_t errlen);

#endif
