/* test_db_prune: retention (engine/prune.c, hookflow-engine prune) against real PostgreSQL
 * (fixture unit_pg). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_cli.h"
#include "pg_fixture.h"
#include "prune.h"
#include "util.h"

typedef struct fixture {
    char *url;
    PGconn *db;
} fixture;

/* A tenant with one workflow and its first version; every run below belongs to it. */
static int setup(void **state)
{
    fixture *f = xcalloc(1, sizeof *f);
    f->url = pgf_database("unit_prune");
    f->db = pgf_connect(f->url);
    pgf_exec(f->db, "INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme')");
    pgf_exec(f->db, "BEGIN");
    pgf_exec(f->db, "INSERT INTO workflows (id, tenant_id, name, trigger_connector, trigger_event) "
                    "SELECT '00000000-0000-0000-0000-0000000000f1', id, 'W', 'meta', 'message' "
                    "FROM tenants");
    pgf_exec(f->db, "INSERT INTO workflow_versions (workflow_id, version, definition) VALUES "
                    "('00000000-0000-0000-0000-0000000000f1', 1, '{}')");
    pgf_exec(f->db, "COMMIT");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    PQfinish(f->db);
    free(f->url);
    free(f);
    return 0;
}

/* A run event_id with status that finished (or was created, when unfinished) days_ago days ago,
 * with one node attempt. */
static void add_run(fixture *f, const char *event_id, const char *status, int days_ago)
{
    char days[16];
    snprintf(days, sizeof days, "%d", days_ago);
    bool finished = strcmp(status, "succeeded") == 0 || strcmp(status, "failed") == 0 ||
                    strcmp(status, "cancelled") == 0;
    bool leased = strcmp(status, "running") == 0;
    const char *p[] = {event_id, status, days, finished ? "t" : "f", leased ? "t" : "f"};
    free(pgf_value_params(
        f->db,
        "WITH r AS (INSERT INTO runs (tenant_id, workflow_id, workflow_version, event_id, "
        "ordering_key, ordering_seq, status, trigger, created_at, finished_at, lease_owner, "
        "lease_expires_at) SELECT id, '00000000-0000-0000-0000-0000000000f1', 1, $1, 'k', 1, $2, "
        "'{}', now() - make_interval(days => $3::int), CASE WHEN $4::boolean THEN now() - "
        "make_interval(days => $3::int) END, CASE WHEN $5::boolean THEN 'w' END, CASE WHEN "
        "$5::boolean THEN now() END FROM tenants RETURNING id) "
        "INSERT INTO node_attempts (run_id, node_id, attempt, status) "
        "SELECT id, 'n', 1, 'succeeded' FROM r",
        5, p));
}

static void add_key(fixture *f, const char *event_id, int days_ago)
{
    char days[16];
    snprintf(days, sizeof days, "%d", days_ago);
    const char *p[] = {event_id, days};
    free(pgf_value_params(f->db,
                          "INSERT INTO event_keys (event_id, provider, account, received_at) "
                          "VALUES ($1, 'meta', '1', now() - make_interval(days => $2::int))",
                          2, p));
}

/* The event ids of what is left, in order, as "a,b,c". */
static char *left(fixture *f, const char *table)
{
    char *sql = xasprintf("SELECT coalesce(string_agg(event_id, ',' ORDER BY event_id), '') "
                          "FROM %s",
                          table);
    char *v = pgf_value(f->db, sql);
    free(sql);
    return v;
}

static void expect_left(fixture *f, const char *table, const char *want)
{
    char *got = left(f, table);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

/* Five old finished runs of every terminal status, recent finished runs and old unfinished
 * ones: only the old finished go (in batches of 2, so the batching loops), with their node
 * attempts; old event keys go, recent ones stay. */
static void prune_deletes_only_what_retention_no_longer_keeps(void **state)
{
    fixture *f = *state;
    add_run(f, "old-ok-1", "succeeded", 100);
    add_run(f, "old-ok-2", "succeeded", 91);
    add_run(f, "old-failed", "failed", 120);
    add_run(f, "old-cancelled", "cancelled", 365);
    add_run(f, "old-ok-3", "succeeded", 95);
    add_run(f, "new-ok", "succeeded", 89);
    add_run(f, "new-failed", "failed", 1);
    add_run(f, "old-pending", "pending", 200);
    add_run(f, "old-waiting", "waiting", 200);
    add_run(f, "old-running", "running", 200);
    add_key(f, "key-old", 31);
    add_key(f, "key-older", 400);
    add_key(f, "key-new", 29);

    engine_prune_opts opts = {.runs_days = 90, .event_keys_days = 30, .batch = 2};
    engine_prune_counts n;
    char err[256] = "";
    opts.dry_run = true;
    assert_int_equal(engine_prune(f->db, &opts, &n, err, sizeof err), 0);
    assert_int_equal(n.runs, 5);
    assert_int_equal(n.event_keys, 2);
    char *count = pgf_value(f->db, "SELECT count(*) FROM runs");
    assert_string_equal(count, "10"); /* a dry run deletes nothing */
    free(count);

    opts.dry_run = false;
    if (engine_prune(f->db, &opts, &n, err, sizeof err) != 0)
        fail_msg("prune: %s", err);
    assert_int_equal(n.runs, 5);
    assert_int_equal(n.event_keys, 2);
    expect_left(f, "runs", "new-failed,new-ok,old-pending,old-running,old-waiting");
    expect_left(f, "event_keys", "key-new");
    count = pgf_value(f->db, "SELECT count(*) FROM node_attempts");
    assert_string_equal(count, "5"); /* the deleted runs' attempts went with them */
    free(count);

    /* Nothing more to do: a second run deletes nothing. */
    assert_int_equal(engine_prune(f->db, &opts, &n, err, sizeof err), 0);
    assert_int_equal(n.runs, 0);
    assert_int_equal(n.event_keys, 0);
}

/* A run some transaction holds (an API retry of it in progress, say) is skipped, not waited
 * for, and a run retried back to pending is not deleted. */
static void prune_skips_runs_held_or_retried(void **state)
{
    fixture *f = *state;
    add_run(f, "held", "failed", 100);
    add_run(f, "free", "failed", 100);
    PGconn *other = pgf_connect(f->url);
    pgf_exec(other, "BEGIN");
    pgf_exec(other, "SELECT 1 FROM runs WHERE event_id = 'held' FOR UPDATE");
    engine_prune_opts opts = {.runs_days = 90, .event_keys_days = 30, .batch = 100};
    engine_prune_counts n;
    char err[256] = "";
    assert_int_equal(engine_prune(f->db, &opts, &n, err, sizeof err), 0);
    assert_int_equal(n.runs, 1);
    /* The holder retries it: no longer finished, it stays. */
    pgf_exec(other, "UPDATE runs SET status = 'pending', finished_at = NULL "
                    "WHERE event_id = 'held'");
    pgf_exec(other, "COMMIT");
    PQfinish(other);
    assert_int_equal(engine_prune(f->db, &opts, &n, err, sizeof err), 0);
    assert_int_equal(n.runs, 0);
    expect_left(f, "runs", "held");
}

/* The command: settings from the environment, a clear line and exit 2 for a bad argument, 1 for
 * a setting out of range (nothing deleted), 0 when done. */
static void prune_command(void **state)
{
    fixture *f = *state;
    add_run(f, "cmd-old", "succeeded", 10);
    add_key(f, "cmd-key", 10);
    setenv("HOOKFLOW_DATABASE_URL", f->url, 1);
    unsetenv("HOOKFLOW_CONFIG_FILE");

    char *bad[] = {"prune", "--all", NULL};
    assert_int_equal(engine_cmd_prune(2, bad), 2);
    setenv("HOOKFLOW_RETENTION_EVENT_KEYS_DAYS", "6", 1); /* under the dedupe floor of 7 */
    char *plain[] = {"prune", NULL};
    assert_int_equal(engine_cmd_prune(1, plain), 1);
    expect_left(f, "event_keys", "cmd-key");

    setenv("HOOKFLOW_RETENTION_EVENT_KEYS_DAYS", "7", 1);
    setenv("HOOKFLOW_RETENTION_RUNS_DAYS", "9", 1);
    char *dry[] = {"prune", "--dry-run", NULL};
    assert_int_equal(engine_cmd_prune(2, dry), 0);
    expect_left(f, "runs", "cmd-old");
    assert_int_equal(engine_cmd_prune(1, plain), 0);
    expect_left(f, "runs", "");
    expect_left(f, "event_keys", "");

    setenv("HOOKFLOW_DATABASE_URL", "postgresql://127.0.0.1:1/none?connect_timeout=2", 1);
    assert_int_equal(engine_cmd_prune(1, plain), 1); /* unreachable: one line, exit 1 */
    unsetenv("HOOKFLOW_DATABASE_URL");
    unsetenv("HOOKFLOW_RETENTION_EVENT_KEYS_DAYS");
    unsetenv("HOOKFLOW_RETENTION_RUNS_DAYS");
}

#define PRUNE_TEST(t) cmocka_unit_test_setup_teardown(t, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        PRUNE_TEST(prune_deletes_only_what_retention_no_longer_keeps),
        PRUNE_TEST(prune_skips_runs_held_or_retried),
        PRUNE_TEST(prune_command),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
