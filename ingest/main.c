/* hookflow-ingest: the webhook front end (command line, start-up, signals). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ingest.h"
#include "log.h"

static void usage(void)
{
    printf("usage: hookflow-ingest [--help] [--version]\n\n"
           "Receives webhooks at POST /api/integrations/webhooks/{provider}, verifies them and\n"
           "answers 2xx once every event is in Kafka. Also serves /healthz, /readyz, /metrics.\n"
           "Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP reloads the secrets directory.\n\n");
    hf_config_print_help(ingest_config_items, ingest_config_nitems);
    printf("  %-36s the connector catalog (default: schemas/catalog of the source tree)\n",
           "HOOKFLOW_CATALOG_DIR");
}

static int reload_secrets(void *server, char *err, size_t errlen)
{
    return ingest_server_reload_secrets(server, err, errlen);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage();
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("hookflow-ingest %s\n", HOOKFLOW_VERSION);
            return 0;
        }
        fprintf(stderr, "hookflow-ingest: unknown option '%s' (try --help)\n", argv[i]);
        return 2;
    }
    ingest_config cfg = {0};
    char err[512];
    if (hf_config_load(ingest_config_items, ingest_config_nitems, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "hookflow-ingest: %s\n", err);
        hf_config_free(ingest_config_items, ingest_config_nitems, &cfg);
        return 1;
    }
    hf_log_init_from_config("hookflow-ingest", cfg.log_level, cfg.log_format);

    /* Signals are taken synchronously by this thread; every other thread blocks them. */
    sigset_t sigs;
    hf_signals_take(&sigs, true);

    ingest_server *server = ingest_server_new(&cfg, err, sizeof err);
    if (!server) {
        fprintf(stderr, "hookflow-ingest: %s\n", err);
        hf_config_free(ingest_config_items, ingest_config_nitems, &cfg);
        return 1;
    }
    ingest_server_start(server);
    char port[16];
    snprintf(port, sizeof port, "%d", ingest_server_port(server));
    hf_log_kv(HF_LOG_INFO, "ingest.listening", "listen", cfg.listen, "port", port, "brokers",
              cfg.kafka_brokers, "version", HOOKFLOW_VERSION, NULL);

    hf_signals_wait_stop(&sigs, reload_secrets, server);
    hf_log_kv(HF_LOG_INFO, "ingest.draining", NULL);
    int left = ingest_server_drain(server, cfg.shutdown_timeout_ms);
    if (left > 0) {
        char n[16];
        snprintf(n, sizeof n, "%d", left);
        hf_log_kv(HF_LOG_WARN, "ingest.drain_timeout", "unanswered_deliveries", n, "msg",
                  "answered 503 so the platforms retry", NULL);
    }
    ingest_server_free(server);
    hf_log_kv(HF_LOG_INFO, "ingest.stopped", NULL);
    hf_config_free(ingest_config_items, ingest_config_nitems, &cfg);
    hf_log_forget_secrets();
    return 0;
}
