/* worker: `hookflow-engine work`, the engine worker (intake + executor + operations listener). */
#include "worker.h"

#include <curl/curl.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "defs.h"
#include "executor.h"
#include "http_server.h"
#include "intake.h"
#include "log.h"
#include "metrics.h"
#include "secrets.h"
#include "tokens.h"

const hf_cfg_item engine_config_items[] = {
    HF_CFG_STR("HOOKFLOW_KAFKA_BROKERS", "127.0.0.1:9092", engine_config, kafka_brokers,
               "Kafka bootstrap servers"),
    HF_CFG_STR("HOOKFLOW_DATABASE_URL", NULL, engine_config, database_url,
               "PostgreSQL conninfo or URI"),
    HF_CFG_STR("HOOKFLOW_TOPIC_PREFIX", "hookflow", engine_config, topic_prefix,
               "prefix of the Kafka topics"),
    HF_CFG_STR("HOOKFLOW_WORKER_TOPICS", "", engine_config, topics,
               "topics to consume, comma-separated (default: <prefix>.webhooks.accounting, "
               "<prefix>.webhooks.marketing-automation, <prefix>.webhooks.messaging)"),
    HF_CFG_STR("HOOKFLOW_WORKER_GROUP", "hookflow-engine", engine_config, group,
               "Kafka consumer group of the pool"),
    HF_CFG_LST("HOOKFLOW_WORKER_LISTEN", "0.0.0.0:8082", engine_config, listen,
               "address of /healthz, /readyz and /metrics"),
    HF_CFG_STR("HOOKFLOW_SECRETS_DIR", "/run/secrets/hookflow", engine_config, secrets_dir,
               "directory of <provider>/<name> secret files (engine/token_key, client ids)"),
    HF_CFG_STR("HOOKFLOW_WORKER_ID", "", engine_config, worker_id,
               "lease owner name (default: <hostname>-<pid>)"),
    HF_CFG_CHOICE("HOOKFLOW_LOG_LEVEL", "info",
                  ((const char *const[]){"debug", "info", "warn", "error", NULL}), engine_config,
                  log_level, "log level"),
    HF_CFG_CHOICE("HOOKFLOW_LOG_FORMAT", "json", ((const char *const[]){"json", "text", NULL}),
                  engine_config, log_format, "log format"),
    HF_CFG_NUM("HOOKFLOW_WORKER_INTAKE_BATCH", "500", 1, 100000, engine_config, intake_batch,
               "Kafka messages per intake transaction"),
    HF_CFG_NUM("HOOKFLOW_WORKER_CONCURRENCY", "1000", 1, 1000000, engine_config, concurrency,
               "runs one worker holds at once"),
    HF_CFG_NUM("HOOKFLOW_WORKER_CLAIM_BATCH", "200", 1, 10000, engine_config, claim_batch,
               "runs claimed per round"),
    HF_CFG_NUM("HOOKFLOW_WORKER_POLL_MS", "100", 1, 60000, engine_config, poll_ms,
               "how often an idle worker looks for runnable runs"),
    HF_CFG_NUM("HOOKFLOW_WORKER_LEASE_MS", "30000", 1000, 3600000, engine_config, lease_ms,
               "lease on a claimed run; renewed while held, taken over when it expires"),
    HF_CFG_NUM("HOOKFLOW_SHUTDOWN_TIMEOUT_MS", "20000", 0, 600000, engine_config,
               shutdown_timeout_ms, "how long SIGTERM waits for calls in flight"),
    HF_CFG_NUM("HOOKFLOW_WORKER_HTTP_CONNECTIONS", "64", 1, 10000, engine_config, http_connections,
               "connections per platform host"),
};
const size_t engine_config_nitems = HF_ARRAY_LEN(engine_config_items);

typedef struct worker {
    engine_intake *intake;
    engine_executor *executor;
    hf_metrics *metrics;
} worker;

static void ops_handle(struct evhttp_request *req, void *arg)
{
    worker *w = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path)
        path = "/";
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        hf_http_reply_error(req, 405, "method_not_allowed", "use GET");
    } else if (strcmp(path, "/healthz") == 0) {
        static const char ok[] = "{\"status\":\"ok\"}";
        hf_http_reply_json(req, 200, ok, sizeof ok - 1);
    } else if (strcmp(path, "/readyz") == 0) {
        if (!engine_intake_healthy(w->intake) || !engine_executor_healthy(w->executor))
            hf_http_reply_error(req, 503, "database_unavailable", "PostgreSQL does not answer");
        else
            hf_http_reply_json(req, 200, "{\"status\":\"ready\"}", 18);
    } else if (strcmp(path, "/metrics") == 0) {
        hf_buf b = {0};
        hf_metrics_render(w->metrics, &b);
        hf_http_reply(req, 200, "text/plain; version=0.0.4", b.data ? b.data : "", b.len);
        hf_buf_free(&b);
    } else {
        hf_http_reply_error(req, 404, "not_found", "no such endpoint");
    }
}

/* SIGHUP: the secrets directory again, for the executor (the only part that reads secrets). */
typedef struct reloader {
    const engine_config *cfg;
    engine_executor *executor;
    bool had_key;
} reloader;

static int reload_secrets(void *arg, char *err, size_t errlen)
{
    reloader *rl = arg;
    engine_keyring *keys = NULL;
    hf_secrets *secrets =
        engine_secrets_reload(rl->cfg->secrets_dir, rl->had_key, &keys, err, errlen);
    if (!secrets)
        return -1;
    if (!keys)
        hf_log_kv(HF_LOG_WARN, "worker.no_token_key", "error", err, "msg",
                  "actions that need a stored token will fail", NULL);
    rl->had_key = keys != NULL;
    engine_executor_reload_secrets(rl->executor, secrets, keys);
    return 0;
}

static void usage(void)
{
    printf("usage: hookflow-engine work [--help]\n\n"
           "Runs one engine worker: consumes webhook envelopes from Kafka (consumer group), "
           "records\nruns in PostgreSQL and executes them against the platforms. Scale out by "
           "starting more.\nSIGTERM/SIGINT: stop intake, finish or release runs in flight, "
           "leave the group, exit 0.\nSIGHUP: reload the secrets directory (OAuth client "
           "credentials, token keys).\n\n");
    hf_config_print_help(engine_config_items, engine_config_nitems);
    printf("  %-36s the connector catalog (default: schemas/catalog of the source tree)\n"
           "  %-36s a platform's API and OAuth token endpoints, <ID> one of XERO, QUICKBOOKS,\n"
           "  %-36s HUBSPOT, KLAVIYO, TWILIO, META (default: the platform's own)\n",
           "HOOKFLOW_CATALOG_DIR", "HOOKFLOW_CONNECTOR_<ID>_BASE_URL",
           "HOOKFLOW_CONNECTOR_<ID>_TOKEN_URL");
}

int engine_cmd_work(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage();
            return 0;
        }
        fprintf(stderr, "hookflow-engine: work: unknown option '%s' (try --help)\n", argv[i]);
        return 2;
    }
    engine_config cfg = {0};
    char err[512];
    int rc = 1;
    if (hf_config_load(engine_config_items, engine_config_nitems, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "hookflow-engine: work: %s\n", err);
        hf_config_free(engine_config_items, engine_config_nitems, &cfg);
        return 1;
    }
    hf_log_init_from_config("hookflow-engine", cfg.log_level, cfg.log_format);

    sigset_t sigs;
    hf_signals_take(&sigs, true); /* SIGHUP reloads the secrets */
    evthread_use_pthreads();
    curl_global_init(CURL_GLOBAL_DEFAULT);

    char worker_id[160];
    if (cfg.worker_id[0]) {
        snprintf(worker_id, sizeof worker_id, "%s", cfg.worker_id);
    } else {
        char host[128] = "worker";
        gethostname(host, sizeof host - 1);
        snprintf(worker_id, sizeof worker_id, "%s-%ld", host, (long)getpid());
    }

    worker w = {0};
    hf_catalog *catalog = NULL;
    hf_secrets *secrets = NULL;
    engine_keyring *keys = NULL;
    engine_defs *defs = NULL;
    hf_http_server *ops = NULL;
    catalog = hf_catalog_load(hf_catalog_default_dir(), err, sizeof err);
    if (!catalog) {
        fprintf(stderr, "hookflow-engine: work: catalog: %s\n", err);
        goto done;
    }
    secrets = hf_secrets_load(cfg.secrets_dir, err, sizeof err);
    if (!secrets) {
        fprintf(stderr, "hookflow-engine: work: %s\n", err);
        goto done;
    }
    keys = engine_keyring_load(secrets, err, sizeof err);
    if (!keys)
        hf_log_kv(HF_LOG_WARN, "worker.no_token_key", "error", err, "msg",
                  "actions that need a stored token will fail", NULL);
    w.metrics = hf_metrics_new();
    defs = engine_defs_new();
    w.executor = engine_executor_new(&cfg, worker_id, defs, w.metrics, catalog, secrets, keys, err,
                                     sizeof err);
    if (!w.executor) {
        fprintf(stderr, "hookflow-engine: work: %s\n", err);
        goto done;
    }
    w.intake = engine_intake_new(&cfg, worker_id, defs, w.metrics, w.executor, err, sizeof err);
    if (!w.intake) {
        fprintf(stderr, "hookflow-engine: work: %s\n", err);
        goto done;
    }
    hf_http_options hopts = {.listen = cfg.listen,
                             .threads = 1,
                             .max_body = 4096,
                             .max_headers = 8192,
                             .timeout_ms = 10000,
                             .max_connections = 64};
    ops = hf_http_server_new(&hopts, ops_handle, &w, err, sizeof err);
    if (!ops) {
        fprintf(stderr, "hookflow-engine: work: %s\n", err);
        goto done;
    }
    hf_http_server_start(ops);
    engine_executor_start(w.executor);
    engine_intake_start(w.intake);
    char port[16];
    snprintf(port, sizeof port, "%d", hf_http_server_port(ops));
    hf_log_kv(HF_LOG_INFO, "worker.started", "worker", worker_id, "listen", cfg.listen, "port",
              port, "group", cfg.group, "version", HOOKFLOW_VERSION, NULL);

    reloader rl = {&cfg, w.executor, keys != NULL};
    hf_signals_wait_stop(&sigs, reload_secrets, &rl);
    hf_log_kv(HF_LOG_INFO, "worker.stopping", NULL);
    /* Intake first, so no new runs arrive; then the executor finishes or releases its runs. */
    engine_intake_stop(w.intake);
    engine_executor_stop(w.executor, cfg.shutdown_timeout_ms);
    hf_log_kv(HF_LOG_INFO, "worker.stopped", NULL);
    rc = 0;
done:
    hf_http_server_free(ops);
    engine_intake_free(w.intake);
    engine_executor_free(w.executor);
    engine_defs_free(defs);
    hf_metrics_free(w.metrics);
    engine_keyring_free(keys);
    hf_secrets_free(secrets);
    hf_catalog_free(catalog);
    hf_config_free(engine_config_items, engine_config_nitems, &cfg);
    curl_global_cleanup();
    hf_log_forget_secrets();
    return rc;
}
