/* test_db_migrate: the migration runner (engine/migrate.c) against real PostgreSQL (fixture
 * unit_pg), on temporary migration folders and on schemas/migrations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "migrate.h"
#include "pg_fixture.h"
#include "util.h"

/* The runner's pg_advisory_lock key (MIGRATE_LOCK_KEY in migrate.c): "hookflow" as a big-endian
 * 64-bit integer. */
#define LOCK_KEY "7525356009429954423"

/* How long a poll waits for what another thread or session does before the test fails. */
#define DEADLINE_MS 10000

/* The files most tests migrate. Their order matters: b copies a's rows, so b is empty unless
 * 0001 and 0002 ran before 0010. */
static const char create_a[] = "CREATE TABLE a (id integer PRIMARY KEY);\n";
static const char fill_a[] = "INSERT INTO a VALUES (1), (2);\n";
static const char copy_a[] = "CREATE TABLE b AS SELECT id FROM a;\n";
/* A file that must not run when the runner refuses. */
static const char pending[] = "CREATE TABLE pending (id integer);\n";

static char *fixture_url; /* a database pgf_database() migrated with schemas/migrations */

static int setup(void **state)
{
    (void)state;
    fixture_url = pgf_database("unit_migrate_fixture");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(fixture_url);
    return 0;
}

/* ---- a database and a migrations folder per test -------------------------------------------- */

/* An empty database (no schema_migrations), a connection to it and an empty temporary
 * migrations folder. */
typedef struct workspace {
    char *url;
    char *dir;
    PGconn *db;
} workspace;

/* The running test's workspaces, owned here: workspaces_free() removes them after each test,
 * also after a failed assertion. */
static workspace workspaces[2];
static size_t workspace_count;

static workspace *workspace_new(const char *database)
{
    assert_true(workspace_count < HF_ARRAY_LEN(workspaces));
    assert_int_equal(strncmp(database, "unit_migrate_", strlen("unit_migrate_")), 0);
    char dir[] = "/tmp/hf_unit_migrate_XXXXXX";
    assert_non_null(mkdtemp(dir));
    workspace *ws = &workspaces[workspace_count++];
    *ws = (workspace){.url = pgf_empty_database(database), .dir = xstrdup(dir)};
    ws->db = pgf_connect(ws->url);
    return ws;
}

static int workspaces_free(void **state)
{
    (void)state;
    for (size_t i = 0; i < workspace_count; i++) {
        workspace *ws = &workspaces[i];
        DIR *d = opendir(ws->dir);
        for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char *path = xasprintf("%s/%s", ws->dir, e->d_name);
            unlink(path);
            free(path);
        }
        if (d)
            closedir(d);
        rmdir(ws->dir);
        PQfinish(ws->db);
        free(ws->dir);
        free(ws->url);
        *ws = (workspace){0};
    }
    workspace_count = 0;
    return 0;
}

/* Creates or replaces file in ws's folder with text. */
static void write_file(const workspace *ws, const char *file, const char *text)
{
    char *path = xasprintf("%s/%s", ws->dir, file);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
    free(path);
}

static void remove_file(const workspace *ws, const char *file)
{
    char *path = xasprintf("%s/%s", ws->dir, file);
    assert_int_equal(unlink(path), 0);
    free(path);
}

static void rename_file(const workspace *ws, const char *from, const char *to)
{
    char *old_path = xasprintf("%s/%s", ws->dir, from);
    char *new_path = xasprintf("%s/%s", ws->dir, to);
    assert_int_equal(rename(old_path, new_path), 0);
    free(new_path);
    free(old_path);
}

/* ---- running the runner --------------------------------------------------------------------- */

/* What the report callbacks saw; the counters are atomic because a thread may report. */
typedef struct progress {
    atomic_int waiting;
    atomic_int applied;
    int versions[8];
    char files[8][64];
    long long elapsed_ms[8];
} progress;

static void on_waiting(void *arg)
{
    progress *p = arg;
    atomic_fetch_add(&p->waiting, 1);
}

static void on_applied(int version, const char *file, long long elapsed_ms, void *arg)
{
    progress *p = arg;
    int i = atomic_load(&p->applied);
    if (i < 8) {
        p->versions[i] = version;
        snprintf(p->files[i], sizeof p->files[i], "%s", file);
        p->elapsed_ms[i] = elapsed_ms;
    }
    atomic_store(&p->applied, i + 1); /* after the entry, for a reader in another thread */
}

/* One engine_migrate_run and all it hands back; -1 in applied/version if it never set them. */
typedef struct outcome {
    int rc;
    int applied;
    int version;
    char err[1024];
} outcome;

static outcome migrate_dir(const char *url, const char *dir, progress *p)
{
    engine_migrate_report report = {.waiting = on_waiting, .applied = on_applied, .arg = p};
    outcome o = {.applied = -1, .version = -1};
    o.rc = engine_migrate_run(url, dir, p ? &report : NULL, &o.applied, &o.version, o.err,
                              sizeof o.err);
    return o;
}

static outcome migrate(const workspace *ws, progress *p)
{
    return migrate_dir(ws->url, ws->dir, p);
}

/* ---- looking at the database ---------------------------------------------------------------- */

/* Asserts that sql's single value is expected (NULL: SQL NULL or no row). */
static void assert_value(PGconn *db, const char *sql, const char *expected)
{
    char *value = pgf_value(db, sql);
    if (expected) {
        assert_non_null(value);
        assert_string_equal(value, expected);
    } else {
        assert_null(value);
    }
    free(value);
}

static bool table_exists(PGconn *db, const char *table)
{
    char *sql = xasprintf("SELECT to_regclass('%s') IS NOT NULL", table);
    char *value = pgf_value(db, sql);
    bool exists = strcmp(value, "t") == 0;
    free(value);
    free(sql);
    return exists;
}

/* schema_migrations as "version:name" in version order, NULL when empty. */
static const char recorded_sql[] =
    "SELECT string_agg(version || ':' || name, ' ' ORDER BY version) FROM schema_migrations";

/* Every column of every schema_migrations row, to compare before and after a run. */
static char *recorded_rows(PGconn *db)
{
    return pgf_value(db, "SELECT string_agg(version || ':' || name || ':' || checksum || ':' || "
                         "applied_at, ' ' ORDER BY version) FROM schema_migrations");
}

/* sha256 of text as lower-case hex, computed by PostgreSQL rather than by the runner's code. */
static char *pg_sha256(PGconn *db, const char *text)
{
    const char *params[] = {text};
    PGresult *r = PQexecParams(db, "SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex')", 1, NULL,
                               params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    char *hex = xstrdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return hex;
}

/* Polls cond(arg) until it holds or DEADLINE_MS passed; returns whether it held. */
static bool eventually(bool (*cond)(void *arg), void *arg)
{
    int64_t deadline = hf_now_ms() + DEADLINE_MS;
    while (!cond(arg)) {
        if (hf_now_ms() > deadline)
            return false;
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
    return true;
}

/* ---- applying ------------------------------------------------------------------------------- */

/* Pending files apply in version order, whatever order the folder lists them in; each gets a
 * schema_migrations row (version, name, sha256 of its bytes) and one applied() report; other
 * files (README.md) are left alone. */
static void applies_files_in_order_and_records_each(void **state)
{
    (void)state;
    workspace *ws = workspace_new("unit_migrate_order");
    write_file(ws, "0010_copy_a.sql", copy_a);
    write_file(ws, "0002_fill_a.sql", fill_a);
    write_file(ws, "0001_create_a.sql", create_a);
    write_file(ws, "README.md", "Not a migration.\n");

    progress p = {0};
    outcome o = migrate(ws, &p);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.applied, 3);
    assert_int_equal(o.version, 10);

    assert_value(ws->db, "SELECT string_agg(id::text, ',' ORDER BY id) FROM b", "1,2");
    char *sha_create = pg_sha256(ws->db, create_a);
    char *sha_fill = pg_sha256(ws->db, fill_a);
    char *sha_copy = pg_sha256(ws->db, copy_a);
    char *expected =
        xasprintf("1:create_a:%s 2:fill_a:%s 10:copy_a:%s", sha_create, sha_fill, sha_copy);
    assert_value(ws->db,
                 "SELECT string_agg(version || ':' || name || ':' || checksum, ' ' ORDER BY "
                 "version) FROM schema_migrations",
                 expected);
    free(expected);
    free(sha_copy);
    free(sha_fill);
    free(sha_create);

    assert_int_equal(atomic_load(&p.waiting), 0);
    assert_int_equal(atomic_load(&p.applied), 3);
    assert_int_equal(p.versions[0], 1);
    assert_string_equal(p.files[0], "0001_create_a.sql");
    assert_int_equal(p.versions[1], 2);
    assert_string_equal(p.files[1], "0002_fill_a.sql");
    assert_int_equal(p.versions[2], 10);
    assert_string_equal(p.files[2], "0010_copy_a.sql");
    for (int i = 0; i < 3; i++)
        assert_true(p.elapsed_ms[i] >= 0);
}

/* A rerun applies nothing and leaves schema_migrations as it was; a file added later is the
 * only one the next run applies. */
static void rerun_applies_only_new_files(void **state)
{
    (void)state;
    workspace *ws = workspace_new("unit_migrate_rerun");
    write_file(ws, "0001_create_a.sql", create_a);
    write_file(ws, "0002_fill_a.sql", fill_a);
    outcome o = migrate(ws, NULL);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.applied, 2);
    char *before = recorded_rows(ws->db);

    progress p = {0};
    o = migrate(ws, &p);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.applied, 0);
    assert_int_equal(o.version, 2);
    assert_int_equal(atomic_load(&p.applied), 0);
    char *after = recorded_rows(ws->db);
    assert_string_equal(after, before);
    free(after);
    free(before);
    assert_value(ws->db, "SELECT count(*) FROM a", "2"); /* 0002 would fail on a second run */

    write_file(ws, "0003_copy_a.sql", copy_a);
    o = migrate(ws, &p);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.applied, 1);
    assert_int_equal(o.version, 3);
    assert_int_equal(atomic_load(&p.applied), 1);
    assert_int_equal(p.versions[0], 3);
    assert_string_equal(p.files[0], "0003_copy_a.sql");
    assert_value(ws->db, recorded_sql, "1:create_a 2:fill_a 3:copy_a");
}

/* ---- refusing ------------------------------------------------------------------------------- */

/* Asserts a refused run: err is exactly expected, nothing was applied, the version is as given. */
static void assert_refused(const outcome *o, const char *expected, int version)
{
    assert_int_equal(o->rc, -1);
    assert_string_equal(o->err, expected);
    assert_int_equal(o->applied, 0);
    assert_int_equal(o->version, version);
}

/* A name that is not NNNN_name.sql stops the run before it connects: a valid pending file does
 * not run and not even schema_migrations is created. */
static void refuses_badly_named_file(void **state)
{
    (void)state;
    static const char *const bad_names[] = {
        "pending.sql",        /* no version */
        "001_short.sql",      /* three digits */
        "00002_long.sql",     /* five digits */
        "0000_zero.sql",      /* versions start at 0001 */
        "0002-dash.sql",      /* no '_' after the version */
        "0002_.sql",          /* no name */
        "0002_two words.sql", /* a space in the name */
        "0002_dot.name.sql",  /* a '.' in the name */
        "0002_upper.SQL",     /* not .sql */
    };
    workspace *ws = workspace_new("unit_migrate_bad_name");
    write_file(ws, "0001_pending.sql", pending);
    for (size_t i = 0; i < HF_ARRAY_LEN(bad_names); i++) {
        write_file(ws, bad_names[i], "SELECT 1;\n");
        outcome o = migrate(ws, NULL);
        char *expected = xasprintf("%s in %s does not match NNNN_name.sql (a 4-digit version from "
                                   "0001, '_', then letters, digits, '_' or '-'); rename it",
                                   bad_names[i], ws->dir);
        assert_refused(&o, expected, 0);
        free(expected);
        assert_false(table_exists(ws->db, "schema_migrations"));
        assert_false(table_exists(ws->db, "pending"));
        remove_file(ws, bad_names[i]);
    }
    outcome o = migrate(ws, NULL); /* the bad name was the only obstacle */
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.applied, 1);
    assert_true(table_exists(ws->db, "pending"));
}

/* Two files with one number are refused, naming both, before anything runs. */
static void refuses_two_files_sharing_a_number(void **state)
{
    (void)state;
    workspace *ws = workspace_new("unit_migrate_duplicate");
    write_file(ws, "0001_create_a.sql", create_a);
    write_file(ws, "0002_fill_a.sql", fill_a);
    write_file(ws, "0002_pending.sql", pending);
    outcome o = migrate(ws, NULL);
    assert_refused(&o,
                   "0002_fill_a.sql and 0002_pending.sql share version 0002; give one a new "
                   "number",
                   0);
    assert_false(table_exists(ws->db, "schema_migrations"));
    assert_false(table_exists(ws->db, "a"));
}

/* A database at version 2 (0001_create_a, 0002_fill_a applied) with 0003_pending.sql waiting in
 * the folder; *before receives schema_migrations' rows. */
static workspace *applied_twice(const char *database, char **before)
{
    workspace *ws = workspace_new(database);
    write_file(ws, "0001_create_a.sql", create_a);
    write_file(ws, "0002_fill_a.sql", fill_a);
    outcome o = migrate(ws, NULL);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.applied, 2);
    write_file(ws, "0003_pending.sql", pending);
    *before = recorded_rows(ws->db);
    return ws;
}

/* The database of applied_twice() as it was: same rows, same data, pending never ran. */
static void assert_unchanged(const workspace *ws, char *before)
{
    char *after = recorded_rows(ws->db);
    assert_string_equal(after, before);
    free(after);
    free(before);
    assert_value(ws->db, "SELECT count(*) FROM a", "2");
    assert_false(table_exists(ws->db, "pending"));
}

/* Editing an applied file, even by one byte, is refused. */
static void refuses_edited_applied_file(void **state)
{
    (void)state;
    char *before = NULL;
    workspace *ws = applied_twice("unit_migrate_edited", &before);
    write_file(ws, "0002_fill_a.sql", "INSERT INTO a VALUES (1), (2);"); /* without its \n */
    outcome o = migrate(ws, NULL);
    assert_refused(&o,
                   "0002_fill_a.sql was edited after it was applied (checksum mismatch); add a "
                   "new migration instead",
                   2);
    assert_unchanged(ws, before);
}

/* Renaming an applied file (same number, same bytes) is refused. */
static void refuses_renamed_applied_file(void **state)
{
    (void)state;
    char *before = NULL;
    workspace *ws = applied_twice("unit_migrate_renamed", &before);
    rename_file(ws, "0002_fill_a.sql", "0002_seed_a.sql");
    outcome o = migrate(ws, NULL);
    assert_refused(&o,
                   "0002_seed_a.sql was applied as 0002_fill_a.sql; restore the original name "
                   "(applied migrations are never renamed)",
                   2);
    assert_unchanged(ws, before);
}

/* Removing an applied file is refused, naming the file the database recorded. */
static void refuses_removed_applied_file(void **state)
{
    (void)state;
    char *before = NULL;
    workspace *ws = applied_twice("unit_migrate_removed", &before);
    remove_file(ws, "0002_fill_a.sql");
    outcome o = migrate(ws, NULL);
    char *expected = xasprintf("0002_fill_a.sql was applied but is missing from %s; restore it "
                               "(applied migrations are never removed)",
                               ws->dir);
    assert_refused(&o, expected, 2);
    free(expected);
    assert_unchanged(ws, before);
}

/* A new file numbered below the database's version (a gap filled late) is refused; the file
 * above the version does not run either. */
static void refuses_new_file_below_database_version(void **state)
{
    (void)state;
    workspace *ws = workspace_new("unit_migrate_below");
    write_file(ws, "0001_create_a.sql", create_a);
    write_file(ws, "0003_fill_a.sql", fill_a);
    outcome o = migrate(ws, NULL);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.applied, 2);
    char *before = recorded_rows(ws->db);
    write_file(ws, "0002_late.sql", "CREATE TABLE late (id integer);\n");
    write_file(ws, "0004_pending.sql", pending);

    o = migrate(ws, NULL);
    assert_refused(&o,
                   "0002_late.sql is numbered below the database's version 0003 but was never "
                   "applied; renumber it above 0003",
                   3);
    assert_false(table_exists(ws->db, "late"));
    assert_unchanged(ws, before);
}

/* ---- failing -------------------------------------------------------------------------------- */

/* A file that fails is rolled back as a whole (its first statement too) and named with
 * PostgreSQL's message and the line; the files before it stay applied, those after it do not
 * run. Fixed, it applies on the next run together with the rest. */
static void failing_file_is_rolled_back_and_named(void **state)
{
    (void)state;
    workspace *ws = workspace_new("unit_migrate_failing");
    write_file(ws, "0001_create_a.sql", create_a);
    write_file(ws, "0002_fill_a.sql", fill_a);
    write_file(ws, "0003_broken.sql",
               "CREATE TABLE c (id integer);\nINSERT INTO missing VALUES (1);\n");
    write_file(ws, "0004_pending.sql", pending);

    progress p = {0};
    outcome o = migrate(ws, &p);
    assert_int_equal(o.rc, -1);
    assert_string_equal(o.err, "0003_broken.sql failed and was rolled back: relation \"missing\" "
                               "does not exist (SQLSTATE 42P01) at line 2");
    assert_int_equal(o.applied, 2);
    assert_int_equal(o.version, 2);
    assert_int_equal(atomic_load(&p.applied), 2);
    assert_value(ws->db, recorded_sql, "1:create_a 2:fill_a");
    assert_value(ws->db, "SELECT count(*) FROM a", "2");
    assert_false(table_exists(ws->db, "c"));
    assert_false(table_exists(ws->db, "pending"));

    write_file(ws, "0003_broken.sql", "CREATE TABLE c (id integer);\n");
    o = migrate(ws, NULL);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.applied, 2);
    assert_int_equal(o.version, 4);
    assert_value(ws->db, recorded_sql, "1:create_a 2:fill_a 3:broken 4:pending");
}

/* Editing an early applied file is refused with the database's real version, not the version of
 * the row where the check stopped. */
static void refusal_reports_the_database_version(void **state)
{
    (void)state;
    char *before = NULL;
    workspace *ws = applied_twice("unit_migrate_early_edit", &before);
    write_file(ws, "0001_create_a.sql", "CREATE TABLE a (id bigint PRIMARY KEY);\n");
    outcome o = migrate(ws, NULL);
    assert_refused(&o,
                   "0001_create_a.sql was edited after it was applied (checksum mismatch); add a "
                   "new migration instead",
                   2);
    assert_unchanged(ws, before);
}

/* A pending file that begins or ends a transaction itself is refused before anything runs: a
 * COMMIT inside would commit half the file and leave the rest to "roll back". The earlier pending
 * file does not run either. */
static void refuses_transaction_control_inside_a_file(void **state)
{
    (void)state;
    static const struct {
        const char *sql, *word;
        int line;
    } cases[] = {
        {"CREATE TABLE x (id int);\nCOMMIT;\nCREATE TABLE y (id int);\n", "COMMIT", 2},
        {"BEGIN;\nCREATE TABLE x (id int);\nCOMMIT;\n", "BEGIN", 1},
        {"CREATE TABLE x (id int); -- a comment; COMMIT;\n  rollback  ;\n", "ROLLBACK", 2},
        {"/* one /* nested */ comment */ CREATE TABLE x (id int);\nend;\n", "END", 2},
        {"SELECT 'it''s; COMMIT';\nSTART TRANSACTION;\n", "START", 2},
        {"SELECT E'\\'; COMMIT; \\'';\nABORT;\n", "ABORT", 2},
        {"CREATE TABLE x (id int);\n\nPREPARE TRANSACTION 'x';\n", "PREPARE TRANSACTION", 3},
        {"ROLLBACK AND CHAIN;\n", "ROLLBACK", 1},
    };
    for (size_t i = 0; i < HF_ARRAY_LEN(cases); i++) {
        char *before = NULL;
        workspace *ws = applied_twice("unit_migrate_txn_control", &before);
        write_file(ws, "0004_control.sql", cases[i].sql);
        outcome o = migrate(ws, NULL);
        char *expected = xasprintf("0004_control.sql, line %d: %s is not allowed in a migration "
                                   "(the runner runs each file in one transaction of its own); "
                                   "nothing was applied",
                                   cases[i].line, cases[i].word);
        assert_refused(&o, expected, 2);
        free(expected);
        assert_false(table_exists(ws->db, "x"));
        assert_false(table_exists(ws->db, "y"));
        assert_unchanged(ws, before);
        assert_int_equal(workspaces_free(NULL), 0);
    }
}

/* What only looks like transaction control applies: the words inside function bodies, strings,
 * quoted identifiers and comments, BEGIN ATOMIC ... END and CASE ... END, a savepoint rolled back
 * to, a prepared statement. */
static void transaction_words_in_bodies_strings_and_comments_apply(void **state)
{
    (void)state;
    workspace *ws = workspace_new("unit_migrate_txn_lookalikes");
    write_file(ws, "0001_lookalikes.sql",
               "CREATE TABLE t (\"commit\" text, \"end\" int);\n"
               "-- COMMIT;\n"
               "/* ROLLBACK; /* END; */ BEGIN; */\n"
               "INSERT INTO t VALUES ('COMMIT; END;', 1), (E'\\'; ROLLBACK; \\'', 2);\n"
               "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\n"
               "BEGIN\n  RETURN 1;\nEND;\n$$;\n"
               "CREATE FUNCTION g() RETURNS int LANGUAGE plpgsql AS $body$\n"
               "BEGIN\n  COMMIT;\n  RETURN 2;\nEND;\n$body$;\n"
               "CREATE FUNCTION h(v int) RETURNS int LANGUAGE sql\n"
               "BEGIN ATOMIC\n  SELECT CASE WHEN v > 0 THEN 1 ELSE 0 END;\nEND;\n"
               "DO $$ BEGIN PERFORM 1; END $$;\n"
               "SAVEPOINT s;\nINSERT INTO t VALUES ('gone', 3);\nROLLBACK TO SAVEPOINT s;\n"
               "PREPARE q AS SELECT $1::int;\nDEALLOCATE q;\n"
               "INSERT INTO t SELECT 'end', h(5) + f();\n");
    outcome o = migrate(ws, NULL);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.applied, 1);
    assert_value(ws->db, "SELECT string_agg(\"end\"::text, ',' ORDER BY \"end\") FROM t", "1,2,2");
}

/* ---- the migration lock --------------------------------------------------------------------- */

/* A run in its own thread, so that the test can watch it wait. */
typedef struct background_run {
    const char *url;
    const char *dir;
    progress progress;
    outcome outcome;
    atomic_bool done;
} background_run;

static void *background_run_main(void *arg)
{
    background_run *run = arg;
    run->outcome = migrate_dir(run->url, run->dir, &run->progress);
    atomic_store(&run->done, true);
    return NULL;
}

static bool reported_waiting(void *arg)
{
    background_run *run = arg;
    return atomic_load(&run->progress.waiting) > 0;
}

/* True once a session of db's database waits for an advisory lock it was not granted. */
static bool lock_request_blocked(void *arg)
{
    char *count = pgf_value(arg, "SELECT count(*) FROM pg_locks l JOIN pg_database d ON "
                                 "d.oid = l.database WHERE l.locktype = 'advisory' AND "
                                 "NOT l.granted AND d.datname = current_database()");
    bool blocked = strcmp(count, "1") == 0;
    free(count);
    return blocked;
}

/* While another session holds the migration lock a run reports waiting() once, blocks without
 * touching the database, and completes once the lock is released. */
static void waits_for_the_migration_lock(void **state)
{
    (void)state;
    workspace *ws = workspace_new("unit_migrate_lock");
    write_file(ws, "0001_create_a.sql", create_a);
    PGconn *holder = pgf_connect(ws->url);
    assert_value(holder, "SELECT pg_try_advisory_lock(" LOCK_KEY ")", "t");

    background_run run = {.url = ws->url, .dir = ws->dir};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, background_run_main, &run), 0);
    assert_true(eventually(reported_waiting, &run));
    assert_true(eventually(lock_request_blocked, ws->db));
    assert_false(atomic_load(&run.done));
    assert_int_equal(atomic_load(&run.progress.applied), 0);
    assert_false(table_exists(ws->db, "schema_migrations"));
    assert_false(table_exists(ws->db, "a"));

    assert_value(holder, "SELECT pg_advisory_unlock(" LOCK_KEY ")", "t");
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_true(atomic_load(&run.done));
    assert_int_equal(run.outcome.rc, 0);
    assert_int_equal(run.outcome.applied, 1);
    assert_int_equal(run.outcome.version, 1);
    assert_int_equal(atomic_load(&run.progress.waiting), 1);
    assert_int_equal(atomic_load(&run.progress.applied), 1);
    assert_string_equal(run.progress.files[0], "0001_create_a.sql");
    assert_value(ws->db, recorded_sql, "1:create_a");
    /* The run released the lock: the holder gets it at once. */
    assert_value(holder, "SELECT pg_try_advisory_lock(" LOCK_KEY ")", "t");
    PQfinish(holder);
}

/* Advisory locks are per database: a lock held in one database does not hold up a run on
 * another-> (The URL's lock_timeout turns a wrong wait into a failure instead of a hang.) */
static void lock_is_per_database(void **state)
{
    (void)state;
    workspace *busy = workspace_new("unit_migrate_lock_busy");
    workspace *other = workspace_new("unit_migrate_lock_other");
    write_file(other, "0001_create_a.sql", create_a);
    PGconn *holder = pgf_connect(busy->url);
    assert_value(holder, "SELECT pg_try_advisory_lock(" LOCK_KEY ")", "t");

    char *url = xconcat(other->url, "?options=-c%20lock_timeout%3D5s", NULL);
    progress p = {0};
    outcome o = migrate_dir(url, other->dir, &p);
    free(url);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.applied, 1);
    assert_int_equal(atomic_load(&p.waiting), 0);
    PQfinish(holder);
}

/* ---- the real migrations -------------------------------------------------------------------- */

/* schemas/migrations apply cleanly to an empty database, one row per file up to the highest
 * number; a rerun, here and on the database pgf_database() migrated, applies nothing. */
static void real_migrations_apply_to_empty_database(void **state)
{
    (void)state;
    const char *source = getenv("HOOKFLOW_SOURCE_DIR");
    assert_non_null(source);
    char *dir = xconcat(source, "/schemas/migrations", NULL);
    int files = 0, highest = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        size_t n = strlen(e->d_name);
        if (n > 4 && strcmp(e->d_name + n - 4, ".sql") == 0) {
            files++;
            int version = atoi(e->d_name);
            highest = version > highest ? version : highest;
        }
    }
    closedir(d);
    assert_true(files > 0);

    workspace *ws = workspace_new("unit_migrate_real");
    outcome o = migrate_dir(ws->url, dir, NULL);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.applied, files);
    assert_int_equal(o.version, highest);
    char *expected = xasprintf("%d %d", files, highest);
    assert_value(ws->db, "SELECT count(*) || ' ' || max(version) FROM schema_migrations", expected);
    free(expected);

    o = migrate_dir(ws->url, dir, NULL);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.applied, 0);
    assert_int_equal(o.version, highest);
    o = migrate_dir(fixture_url, dir, NULL);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.applied, 0);
    assert_int_equal(o.version, highest);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(applies_files_in_order_and_records_each, workspaces_free),
        cmocka_unit_test_teardown(rerun_applies_only_new_files, workspaces_free),
        cmocka_unit_test_teardown(refuses_badly_named_file, workspaces_free),
        cmocka_unit_test_teardown(refuses_two_files_sharing_a_number, workspaces_free),
        cmocka_unit_test_teardown(refuses_edited_applied_file, workspaces_free),
        cmocka_unit_test_teardown(refuses_renamed_applied_file, workspaces_free),
        cmocka_unit_test_teardown(refuses_removed_applied_file, workspaces_free),
        cmocka_unit_test_teardown(refuses_new_file_below_database_version, workspaces_free),
        cmocka_unit_test_teardown(failing_file_is_rolled_back_and_named, workspaces_free),
        cmocka_unit_test_teardown(refusal_reports_the_database_version, workspaces_free),
        cmocka_unit_test_teardown(refuses_transaction_control_inside_a_file, workspaces_free),
        cmocka_unit_test_teardown(transaction_words_in_bodies_strings_and_comments_apply,
                                  workspaces_free),
        cmocka_unit_test_teardown(waits_for_the_migration_lock, workspaces_free),
        cmocka_unit_test_teardown(lock_is_per_database, workspaces_free),
        cmocka_unit_test_teardown(real_migrations_apply_to_empty_database, workspaces_free),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
