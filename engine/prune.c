/* prune: retention. Runs and event keys grow with every event; nothing else removes them. */
#include "prune.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "engine_cli.h"
#include "pg.h"

/* The finished runs past retention (the partial index runs_finished_idx serves it). */
#define OLD_RUNS                                                                                   \
    "FROM runs WHERE status IN ('succeeded', 'failed', 'cancelled') "                              \
    "AND finished_at < now() - make_interval(days => $1::int)"
#define OLD_KEYS "FROM event_keys WHERE received_at < now() - make_interval(days => $1::int)"

/* Runs one counting or deleting statement with days (and batch); its row count in *n. */
static int run_counted(PGconn *db, const char *sql, long long days, long long batch, bool count,
                       long long *n, char *err, size_t errlen)
{
    char d[24], b[24];
    snprintf(d, sizeof d, "%lld", days);
    snprintf(b, sizeof b, "%lld", batch);
    const char *params[] = {d, b};
    PGresult *res = NULL;
    int rc = hf_pg_exec(db, sql, count ? 1 : 2, params, &res, err, errlen);
    if (rc == HF_PG_OK)
        *n = strtoll(count ? PQgetvalue(res, 0, 0) : PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return rc;
}

/* Deletes batch by batch until a batch comes back short. */
static int delete_all(PGconn *db, const char *sql, long long days, long long batch,
                      long long *total, char *err, size_t errlen)
{
    for (;;) {
        long long n = 0;
        if (run_counted(db, sql, days, batch, false, &n, err, errlen) != HF_PG_OK)
            return -1;
        *total += n;
        if (n < batch)
            return 0;
    }
}

int engine_prune(PGconn *db, const engine_prune_opts *opts, engine_prune_counts *out, char *err,
                 size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (opts->dry_run) {
        if (run_counted(db, "SELECT count(*) " OLD_RUNS, opts->runs_days, 0, true, &out->runs, err,
                        errlen) != HF_PG_OK ||
            run_counted(db, "SELECT count(*) " OLD_KEYS, opts->event_keys_days, 0, true,
                        &out->event_keys, err, errlen) != HF_PG_OK)
            return -1;
        return 0;
    }
    /* The status is checked again by the DELETE: a run retried through the API since the
     * SELECT is no longer finished. SKIP LOCKED: a run some transaction holds is left for the
     * next time. Node attempts and their history go with their run (ON DELETE CASCADE). The
     * batch is picked first (materialised) and joined by primary key: as a semi-join PostgreSQL
     * planned a scan of the whole table per batch when most of it was past retention. */
    if (delete_all(db,
                   "WITH batch AS MATERIALIZED (SELECT id " OLD_RUNS
                   " LIMIT $2::int FOR UPDATE SKIP LOCKED) "
                   "DELETE FROM runs r USING batch b WHERE r.id = b.id "
                   "AND r.status IN ('succeeded', 'failed', 'cancelled')",
                   opts->runs_days, opts->batch, &out->runs, err, errlen) != 0)
        return -1;
    return delete_all(db,
                      "WITH batch AS MATERIALIZED (SELECT event_id " OLD_KEYS
                      " LIMIT $2::int FOR UPDATE SKIP LOCKED) "
                      "DELETE FROM event_keys k USING batch b WHERE k.event_id = b.event_id",
                      opts->event_keys_days, opts->batch, &out->event_keys, err, errlen);
}

/* ---- hookflow-engine prune ----------------------------------------------------------------- */

typedef struct prune_settings {
    char *database_url;
    long long runs_days, event_keys_days, batch, lock_timeout_s;
} prune_settings;

static const hf_cfg_item prune_settings_table[] = {
    HF_CFG_STR("HOOKFLOW_DATABASE_URL", "", prune_settings, database_url,
               "PostgreSQL libpq conninfo or postgresql:// URI (required)"),
    HF_CFG_NUM("HOOKFLOW_RETENTION_RUNS_DAYS", "90", 1, 36500, prune_settings, runs_days,
               "finished runs (with their node attempts) are kept this many days"),
    HF_CFG_NUM("HOOKFLOW_RETENTION_EVENT_KEYS_DAYS", "30", 7, 36500, prune_settings,
               event_keys_days,
               "event ids are kept this many days for deduplication: longer than the platforms "
               "redeliver and the webhook topics keep events"),
    HF_CFG_NUM("HOOKFLOW_PRUNE_BATCH", "5000", 100, 100000, prune_settings, batch,
               "rows deleted per statement"),
    HF_CFG_NUM("HOOKFLOW_PRUNE_LOCK_TIMEOUT_S", "60", 1, 3600, prune_settings, lock_timeout_s,
               "longest wait for a table lock (a migration's) before giving up with exit 1"),
};

static void prune_usage(FILE *out)
{
    fprintf(out,
            "usage: hookflow-engine prune [--dry-run] [--help]\n\n"
            "Deletes what retention no longer keeps: succeeded, failed and cancelled runs that\n"
            "finished more than HOOKFLOW_RETENTION_RUNS_DAYS ago (with their node attempts), and\n"
            "event ids received more than HOOKFLOW_RETENTION_EVENT_KEYS_DAYS ago. Deletes in\n"
            "batches, each its own transaction: safe beside running workers and the API, and to\n"
            "stop at any time. Unfinished runs are never touched. Run it daily (a cron job).\n\n"
            "  --dry-run   print what would be deleted, delete nothing\n\n"
            "Configuration (environment, or KEY=VALUE lines in HOOKFLOW_CONFIG_FILE):\n");
    for (size_t i = 0; i < HF_ARRAY_LEN(prune_settings_table); i++) {
        const hf_cfg_item *it = &prune_settings_table[i];
        fprintf(out, "  %-36s %s%s%s\n", it->name, it->help, *it->def ? "; default " : "", it->def);
    }
}

int engine_cmd_prune(int argc, char **argv)
{
    bool dry_run = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            prune_usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--dry-run") == 0) {
            dry_run = true;
            continue;
        }
        fprintf(stderr, "hookflow-engine: prune: unexpected argument '%s' (try --help)\n", argv[i]);
        return 2;
    }
    prune_settings settings = {0};
    char err[1024];
    int status = 1;
    PGconn *db = NULL;
    if (hf_config_load(prune_settings_table, HF_ARRAY_LEN(prune_settings_table), &settings, err,
                       sizeof err) != 0) {
        fprintf(stderr, "hookflow-engine: prune: %s\n", err);
        goto done;
    }
    if (!*settings.database_url) {
        fprintf(stderr, "hookflow-engine: prune: HOOKFLOW_DATABASE_URL is not set (a libpq "
                        "conninfo or postgresql:// URI)\n");
        goto done;
    }
    if (hf_pg_connect(settings.database_url, "hookflow-prune", &db, err, sizeof err) != HF_PG_OK) {
        fprintf(stderr, "hookflow-engine: prune: %s\n", err);
        goto done;
    }
    /* Rows others hold are skipped; a table lock (a migration's) is waited for a bounded time,
     * so that a prune job never hangs and blocks the next one. */
    char lock_ms[32];
    snprintf(lock_ms, sizeof lock_ms, "%lld", settings.lock_timeout_s * 1000);
    const char *lp[] = {lock_ms};
    if (hf_pg_exec(db, "SELECT set_config('lock_timeout', $1, false)", 1, lp, NULL, err,
                   sizeof err) != HF_PG_OK) {
        fprintf(stderr, "hookflow-engine: prune: %s\n", err);
        goto done;
    }
    engine_prune_opts opts = {.runs_days = settings.runs_days,
                              .event_keys_days = settings.event_keys_days,
                              .batch = settings.batch,
                              .dry_run = dry_run};
    engine_prune_counts n;
    int rc = engine_prune(db, &opts, &n, err, sizeof err);
    printf("%s %lld finished run%s older than %lld days and %lld event id%s older than %lld "
           "days\n",
           dry_run ? "would delete" : "deleted", n.runs, n.runs == 1 ? "" : "s", opts.runs_days,
           n.event_keys, n.event_keys == 1 ? "" : "s", opts.event_keys_days);
    if (rc != 0) {
        fprintf(stderr, "hookflow-engine: prune: %s\n", err);
        goto done;
    }
    status = 0;
done:
    if (db)
        PQfinish(db);
    hf_config_free(prune_settings_table, HF_ARRAY_LEN(prune_settings_table), &settings);
    return status;
}
