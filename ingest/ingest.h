/* ingest: the webhook front end: routing, verification through the provider modules, envelopes,
 * and answering only once Kafka has acknowledged every event of a delivery. */
#ifndef INGEST_INGEST_H
#define INGEST_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "util.h"

typedef struct ingest_config {
    char *kafka_brokers;
    char *listen;
    long long threads;
    char *secrets_dir;
    char *topic_prefix;
    char *public_base_url;
    char *log_level;
    char *log_format;
    long long max_body_bytes;
    long long max_header_bytes;
    long long max_connections;
    long long client_timeout_ms;
    long long ack_timeout_ms;
    long long retry_after_s;
    long long queue_max_messages;
    long long max_in_flight;
    long long max_in_flight_bytes;
    long long message_timeout_ms;
    double linger_ms;
    long long shutdown_timeout_ms;
} ingest_config;

/* The settings table (for --help and loading). */
extern const hf_cfg_item ingest_config_items[];
extern const size_t ingest_config_nitems;

typedef struct ingest_server ingest_server;

/* Loads the catalog and secrets, creates the producer and binds the port. NULL + err on failure. */
ingest_server *ingest_server_new(const ingest_config *cfg, char *err, size_t errlen);
int ingest_server_port(const ingest_server *s);
void ingest_server_start(ingest_server *s);
/* Re-reads the secrets directory; on failure keeps the old secrets and returns -1 with err. */
HF_MUST_CHECK int ingest_server_reload_secrets(ingest_server *s, char *err, size_t errlen);
/* Stops accepting, waits (up to timeout_ms) for in-flight deliveries to be answered, flushes
 * Kafka. Returns the number of deliveries still unanswered (0 on a clean drain). */
int ingest_server_drain(ingest_server *s, int64_t timeout_ms);
void ingest_server_free(ingest_server *s);

#endif
