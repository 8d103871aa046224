/* worker: `hookflow-engine work`, the engine worker (intake + executor + operations listener). */
#ifndef ENGINE_WORKER_H
#define ENGINE_WORKER_H

#include "config.h"

typedef struct engine_config {
    char *kafka_brokers;
    char *database_url;
    char *topic_prefix;
    char *topics; /* comma-separated; "" = every <prefix>.webhooks.<category> */
    char *group;
    char *listen;
    char *secrets_dir;
    char *worker_id; /* "" = <hostname>-<pid> */
    char *log_level;
    char *log_format;
    long long intake_batch;
    long long concurrency;
    long long claim_batch;
    long long poll_ms;
    long long lease_ms;
    long long shutdown_timeout_ms;
    long long http_connections;
} engine_config;

extern const hf_cfg_item engine_config_items[];
extern const size_t engine_config_nitems;

int engine_cmd_work(int argc, char **argv);

#endif
