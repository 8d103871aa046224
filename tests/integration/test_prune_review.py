"""test_prune_review: `hookflow-engine prune` (engine/prune.c) and how it lives beside the rest:
settings validation, --dry-run, the child rows of a run (node_attempts, node_attempt_history),
runs held or retried, two prune jobs at once, PostgreSQL going away mid-prune, and a redelivered
event whose event id was pruned while its run still waits (intake's dedupe, README "Retention").

Runs, attempts and event ids are inserted with SQL (their ages set exactly); the last test runs the
whole stack (enginestack.Stack) with a worker.
"""

import os
import subprocess
import threading
import time
import uuid

import pytest

import harness

TENANT = "00000000-0000-0000-0000-0000000000a1"
WF = "00000000-0000-0000-0000-0000000000f1"
PREFIX = "hookflow-engine: prune: "


def engine_env(url, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HOOKFLOW_") or k in ("HOOKFLOW_SOURCE_DIR", "HOOKFLOW_BUILD_DIR")}
    env = harness.sanitizer_env(env) or env
    if url is not None:
        env["HOOKFLOW_DATABASE_URL"] = url
    env.update({k: str(v) for k, v in extra.items()})
    return env


def no_sanitizer_report(r):
    assert "Sanitizer" not in r.stderr, r.stderr
    assert "runtime error" not in r.stderr, r.stderr


def prune(url, *args, timeout=120, **env):
    r = subprocess.run([harness.bin("hookflow-engine"), "prune", *args],
                       env=engine_env(url, **env), capture_output=True, text=True,
                       timeout=timeout)
    no_sanitizer_report(r)
    return r


def q(conn, sql, *args):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall() if cur.description else None


def one(conn, sql, *args):
    return q(conn, sql, *args)[0][0]


@pytest.fixture
def db(postgres):
    """A fresh migrated database with one tenant, workflow and version: (url, connection)."""
    url = postgres.fresh_db("prune")
    r = subprocess.run([harness.bin("hookflow-engine"), "migrate"], env=engine_env(url),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    conn = postgres.connect(url)
    q(conn, "INSERT INTO tenants (id, slug, name) VALUES (%s, 'acme', 'Acme')", TENANT)
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO workflows (id, tenant_id, name, trigger_connector, trigger_event)"
                    " VALUES (%s, %s, 'W', 'meta', 'message')", (WF, TENANT))
        cur.execute("INSERT INTO workflow_versions (workflow_id, version, definition) "
                    "VALUES (%s, 1, '{}')", (WF,))
        cur.execute("COMMIT")
    yield url, conn
    conn.close()


def add_run(conn, event_id, status, days_ago, attempts=1, history=0):
    """A run of WF for event_id that finished (or, unfinished, was created) days_ago days ago,
    with `attempts` node attempts and `history` rows of an earlier generation. Its id."""
    finished = status in ("succeeded", "failed", "cancelled")
    leased = status == "running"
    run_id = one(conn,
                 "INSERT INTO runs (tenant_id, workflow_id, workflow_version, event_id, "
                 "ordering_key, ordering_seq, status, trigger, created_at, finished_at, "
                 "lease_owner, lease_expires_at, generation) "
                 "VALUES (%s, %s, 1, %s, 'k', 1, %s, '{}', "
                 "now() - make_interval(days => %s), "
                 "CASE WHEN %s THEN now() - make_interval(days => %s) END, "
                 "CASE WHEN %s THEN 'w' END, CASE WHEN %s THEN now() + interval '1 hour' END, "
                 "%s) RETURNING id::text",
                 TENANT, WF, event_id, status, days_ago, finished, days_ago, leased, leased,
                 1 + (1 if history else 0))
    for i in range(attempts):
        q(conn, "INSERT INTO node_attempts (run_id, node_id, attempt, status) "
                "VALUES (%s, %s, 1, 'succeeded')", run_id, f"n{i}")
    for i in range(history):
        q(conn, "INSERT INTO node_attempt_history (id, run_id, generation, node_id, attempt, "
                "status, started_at) VALUES (nextval('node_attempts_id_seq'), %s, 1, %s, 1, "
                "'failed', now() - make_interval(days => %s))", run_id, f"h{i}", days_ago + 1)
    return run_id


def add_keys(conn, prefix, n, days_ago):
    q(conn, "INSERT INTO event_keys (event_id, provider, account, received_at) "
            "SELECT %s || g, 'meta', '1', now() - make_interval(days => %s) "
            "FROM generate_series(1, %s) g", prefix, days_ago, n)


def counts(conn):
    return {t: one(conn, f"SELECT count(*) FROM {t}")
            for t in ("runs", "node_attempts", "node_attempt_history", "event_keys")}


# ------------------------------------------------------------------------------------------------
# Settings and arguments


@pytest.mark.parametrize("name,value", [
    ("HOOKFLOW_RETENTION_EVENT_KEYS_DAYS", "6"),
    ("HOOKFLOW_RETENTION_EVENT_KEYS_DAYS", "0"),
    ("HOOKFLOW_RETENTION_EVENT_KEYS_DAYS", "-30"),
    ("HOOKFLOW_RETENTION_EVENT_KEYS_DAYS", "30d"),
    ("HOOKFLOW_RETENTION_EVENT_KEYS_DAYS", ""),
    ("HOOKFLOW_RETENTION_RUNS_DAYS", "0"),
    ("HOOKFLOW_RETENTION_RUNS_DAYS", "36501"),
    ("HOOKFLOW_RETENTION_RUNS_DAYS", " 90"),
    ("HOOKFLOW_RETENTION_RUNS_DAYS", "1e2"),
    ("HOOKFLOW_RETENTION_RUNS_DAYS", "99999999999999999999"),
    ("HOOKFLOW_PRUNE_BATCH", "99"),
    ("HOOKFLOW_PRUNE_BATCH", "100001"),
    ("HOOKFLOW_PRUNE_BATCH", "abc"),
])
def test_bad_setting_one_line_exit_1_nothing_deleted(db, name, value):
    url, conn = db
    add_run(conn, "old", "succeeded", 400)
    add_keys(conn, "k", 3, 400)
    before = counts(conn)
    for args in ((), ("--dry-run",)):
        r = prune(url, *args, **{name: value})
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(PREFIX + name), r.stderr
        assert r.stdout == ""
    assert counts(conn) == before


def test_bad_arguments_exit_2_and_help_exit_0(db):
    url, conn = db
    add_run(conn, "old", "succeeded", 400)
    for args in (("--all",), ("--dry-run", "now"), ("--dry-run=1",), ("-n",)):
        r = prune(url, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(PREFIX), r.stderr
    for args in (("--help",), ("-h",)):
        r = prune(None, *args)  # help needs no database
        assert r.returncode == 0 and r.stdout.startswith("usage: hookflow-engine prune")
        for name in ("HOOKFLOW_RETENTION_RUNS_DAYS", "HOOKFLOW_RETENTION_EVENT_KEYS_DAYS",
                     "HOOKFLOW_PRUNE_BATCH", "HOOKFLOW_DATABASE_URL"):
            assert name in r.stdout
    assert one(conn, "SELECT count(*) FROM runs") == 1


def test_settings_from_config_file_environment_wins(db, tmp_path):
    url, conn = db
    add_run(conn, "r20", "succeeded", 20)
    add_run(conn, "r10", "succeeded", 10)
    add_keys(conn, "k", 2, 20)
    cfg = tmp_path / "prune.conf"
    cfg.write_text(f"HOOKFLOW_DATABASE_URL={url}\nHOOKFLOW_RETENTION_RUNS_DAYS=5\n"
                   "HOOKFLOW_RETENTION_EVENT_KEYS_DAYS=7\n")
    r = prune(None, "--dry-run", HOOKFLOW_CONFIG_FILE=str(cfg), HOOKFLOW_RETENTION_RUNS_DAYS="15")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("would delete 1 finished run older than 15 days and 2 event ids "
                                "older than 7 days")


# ------------------------------------------------------------------------------------------------
# What is deleted and what stays


def test_dry_run_counts_and_changes_nothing_even_on_a_read_only_database(db):
    url, conn = db
    add_run(conn, "old-ok", "succeeded", 100, attempts=2, history=2)
    add_run(conn, "old-failed", "failed", 95)
    add_run(conn, "young", "succeeded", 80)
    add_run(conn, "old-waiting", "waiting", 300)
    add_keys(conn, "old", 4, 31)
    add_keys(conn, "new", 2, 29)
    before = counts(conn)
    # A read-only session (a hot standby, say) can still answer a dry run: it only reads.
    r = prune(url, "--dry-run", PGOPTIONS="-c default_transaction_read_only=on")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("would delete 2 finished runs older than 90 days and 4 event ids "
                                "older than 30 days")
    assert r.stderr == ""
    assert counts(conn) == before
    # Deleting on it fails with one line and exit 1, deleting nothing.
    r = prune(url, PGOPTIONS="-c default_transaction_read_only=on")
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(PREFIX), r.stderr
    assert counts(conn) == before


def test_runs_go_with_attempts_and_history_unfinished_and_retried_stay(db):
    url, conn = db
    gone = add_run(conn, "old-retried-then-failed", "failed", 120, attempts=2, history=3)
    add_run(conn, "old-cancelled", "cancelled", 91)
    # Retried through the API after it finished (status pending, finished_at cleared, history
    # kept): no longer finished, so kept with all its rows.
    kept = add_run(conn, "retried", "failed", 200, attempts=1, history=2)
    q(conn, "UPDATE runs SET status = 'pending', finished_at = NULL, generation = generation + 1,"
            " retried_at = now() WHERE id = %s", kept)
    add_run(conn, "old-running", "running", 400, attempts=1)
    add_run(conn, "old-waiting", "waiting", 400, attempts=1, history=1)
    r = prune(url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("deleted 2 finished runs older than 90 days"), r.stdout
    assert [e for (e,) in q(conn, "SELECT event_id FROM runs ORDER BY event_id")] == \
        ["old-running", "old-waiting", "retried"]
    assert one(conn, "SELECT count(*) FROM node_attempts WHERE run_id = %s", gone) == 0
    assert one(conn, "SELECT count(*) FROM node_attempt_history WHERE run_id = %s", gone) == 0
    assert one(conn, "SELECT count(*) FROM node_attempt_history WHERE run_id = %s", kept) == 2
    assert one(conn, "SELECT count(*) FROM node_attempts") == 3
    # No orphan rows anywhere.
    assert one(conn, "SELECT count(*) FROM node_attempt_history h "
                     "WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = h.run_id)") == 0


def test_boundaries_of_the_retention_windows(db):
    url, conn = db
    # finished 90 days less a minute ago: kept; 90 days and a minute ago: deleted.
    for ev, offset in (("inside", "-1 minute"), ("outside", "1 minute")):
        run_id = add_run(conn, ev, "succeeded", 0)
        q(conn, "UPDATE runs SET finished_at = now() - interval '90 days' - %s::interval "
                "WHERE id = %s", offset, run_id)
    q(conn, "INSERT INTO event_keys (event_id, provider, account, received_at) VALUES "
            "('k-inside', 'meta', '1', now() - interval '7 days' + interval '1 minute'),"
            "('k-outside', 'meta', '1', now() - interval '7 days' - interval '1 minute')")
    r = prune(url, HOOKFLOW_RETENTION_EVENT_KEYS_DAYS="7")
    assert r.returncode == 0, r.stderr
    assert [e for (e,) in q(conn, "SELECT event_id FROM runs")] == ["inside"]
    assert [e for (e,) in q(conn, "SELECT event_id FROM event_keys")] == ["k-inside"]


def test_many_batches_delete_everything_and_a_second_prune_nothing(db):
    url, conn = db
    q(conn, "INSERT INTO runs (tenant_id, workflow_id, workflow_version, event_id, ordering_key, "
            "ordering_seq, status, trigger, finished_at) "
            "SELECT %s, %s, 1, 'e' || g, 'k', g, "
            "  (ARRAY['succeeded', 'failed', 'cancelled'])[1 + g %% 3], '{}', "
            "  now() - make_interval(days => 91 + g %% 5) FROM generate_series(1, 1050) g",
            TENANT, WF)
    q(conn, "INSERT INTO node_attempts (run_id, node_id, attempt, status) "
            "SELECT id, 'n', 1, 'succeeded' FROM runs")
    add_keys(conn, "k", 1001, 40)
    r = prune(url, HOOKFLOW_PRUNE_BATCH="100")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("deleted 1050 finished runs older than 90 days and 1001 event ids "
                                "older than 30 days")
    assert counts(conn) == {"runs": 0, "node_attempts": 0, "node_attempt_history": 0,
                            "event_keys": 0}
    r = prune(url, HOOKFLOW_PRUNE_BATCH="100")
    assert r.stdout.strip() == ("deleted 0 finished runs older than 90 days and 0 event ids "
                                "older than 30 days")


# ------------------------------------------------------------------------------------------------
# Beside other transactions


def test_held_run_and_key_are_skipped_not_waited_for(db, postgres):
    url, conn = db
    held = add_run(conn, "held", "failed", 100)
    add_run(conn, "free", "failed", 100)
    add_keys(conn, "k", 3, 40)
    other = postgres.connect(url, autocommit=False)
    try:
        q(other, "SELECT 1 FROM runs WHERE id = %s FOR UPDATE", held)  # a retry in progress
        q(other, "SELECT 1 FROM event_keys WHERE event_id = 'k1' FOR KEY SHARE")
        started = time.monotonic()
        r = prune(url, timeout=60)
        assert time.monotonic() - started < 30
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == ("deleted 1 finished run older than 90 days and 2 event ids "
                                    "older than 30 days")
        other.rollback()
    finally:
        other.close()
    r = prune(url)
    assert r.stdout.startswith("deleted 1 finished run "), r.stdout
    assert counts(conn)["runs"] == 0 and counts(conn)["event_keys"] == 0


def test_a_table_lock_is_waited_for_a_bounded_time(db, postgres):
    """A migration holding runs' table lock: prune gives up after HOOKFLOW_PRUNE_LOCK_TIMEOUT_S
    with one line and exit 1 (a CronJob that hung there would block every later one), and
    deletes nothing; once the lock is gone a rerun does the work."""
    url, conn = db
    add_run(conn, "old", "succeeded", 100)
    other = postgres.connect(url, autocommit=False)
    try:
        q(other, "LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        r = prune(url, timeout=60, HOOKFLOW_PRUNE_LOCK_TIMEOUT_S=1)
        took = time.monotonic() - started
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert took < 20, f"prune waited {took:.1f} s for the lock"
        lines = r.stderr.strip().splitlines()
        assert lines[0].startswith(PREFIX) and "lock timeout" in lines[0], r.stderr
        other.rollback()
    finally:
        other.close()
    assert counts(conn)["runs"] == 1
    r = prune(url)
    assert r.returncode == 0 and r.stdout.startswith("deleted 1 finished run "), r.stdout


def test_two_prune_jobs_at_once_share_the_work(db):
    url, conn = db
    q(conn, "INSERT INTO runs (tenant_id, workflow_id, workflow_version, event_id, ordering_key, "
            "ordering_seq, status, trigger, finished_at) "
            "SELECT %s, %s, 1, 'e' || g, 'k', g, 'succeeded', '{}', now() - interval '100 days' "
            "FROM generate_series(1, 3000) g", TENANT, WF)
    q(conn, "INSERT INTO node_attempts (run_id, node_id, attempt, status) "
            "SELECT id, n, 1, 'succeeded' FROM runs, unnest(ARRAY['a', 'b']) n")
    add_keys(conn, "k", 3000, 40)
    results = [None, None]

    def go(i):
        results[i] = prune(url, HOOKFLOW_PRUNE_BATCH="100", timeout=300)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(320)
    runs = keys = 0
    for r in results:
        assert r is not None and r.returncode == 0, r and r.stderr
        words = r.stdout.split()
        runs += int(words[1])
        keys += int(words[9])
    assert counts(conn) == {"runs": 0, "node_attempts": 0, "node_attempt_history": 0,
                            "event_keys": 0}
    assert (runs, keys) == (3000, 3000)


def test_postgresql_going_away_mid_prune_one_line_exit_1_then_a_rerun_finishes(postgres):
    # Its own cluster: this one is stopped in the middle.
    pg = harness.Postgres()
    try:
        pg.start()
        url = pg.fresh_db("prune")
        r = subprocess.run([harness.bin("hookflow-engine"), "migrate"], env=engine_env(url),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        conn = pg.connect(url)
        q(conn, "INSERT INTO tenants (id, slug, name) VALUES (%s, 'acme', 'Acme')", TENANT)
        q(conn, "BEGIN")
        q(conn, "INSERT INTO workflows (id, tenant_id, name, trigger_connector, trigger_event) "
                "VALUES (%s, %s, 'W', 'meta', 'message')", WF, TENANT)
        q(conn, "INSERT INTO workflow_versions (workflow_id, version, definition) "
                "VALUES (%s, 1, '{}')", WF)
        q(conn, "COMMIT")
        add_run(conn, "old", "succeeded", 100)
        add_keys(conn, "k", 5, 40)
        # Hold event_keys so that prune, runs done, waits on its first key batch.
        q(conn, "BEGIN")
        q(conn, "LOCK TABLE event_keys IN ACCESS EXCLUSIVE MODE")
        p = subprocess.Popen([harness.bin("hookflow-engine"), "prune"], env=engine_env(url),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watcher = pg.connect(pg.url_for("postgres"))
        harness.wait_until(lambda: one(watcher, "SELECT count(*) FROM pg_stat_activity WHERE "
                                                "application_name = 'hookflow-prune' AND "
                                                "wait_event_type = 'Lock'") == 1,
                           timeout=30, what="prune to wait on event_keys")
        watcher.close()
        pg.stop()  # fast shutdown while the lock is still held: prune's connection is cut
        conn.close()
        out, err = p.communicate(timeout=60)
        no_sanitizer_report(subprocess.CompletedProcess(p.args, p.returncode, out, err))
        assert p.returncode == 1, (out, err)
        assert len(err.splitlines()) == 1 and err.startswith(PREFIX), err
        assert out.strip().startswith("deleted 1 finished run older than 90 days"), out
        pg.start()
        r = prune(url)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == ("deleted 0 finished runs older than 90 days and 5 event ids "
                                    "older than 30 days")
    finally:
        pg.cleanup()


# ------------------------------------------------------------------------------------------------
# A redelivery after the event id was pruned (README "Retention"), with a real worker


def test_redelivery_after_key_pruned_is_stopped_by_the_waiting_run(postgres):
    from enginestack import Stack
    s = Stack(postgres, partitions=1)
    try:
        s.start_worker()
        mid = "m_" + uuid.uuid4().hex
        event_id = s.send("later please", mid=mid)  # the "Later" workflow: a 4 s delay first
        harness.wait_until(lambda: [r for r in s.runs_for(event_id) if r[2] == "waiting"],
                           timeout=60, what="the delayed run to wait")
        # The event id is old now; a prune beside the running worker deletes it, not the run.
        s.query("UPDATE event_keys SET received_at = now() - interval '40 days' "
                "WHERE event_id = %s", event_id)
        r = prune(s.db_url)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().endswith("and 1 event id older than 30 days"), r.stdout
        assert s.query("SELECT count(*) FROM event_keys WHERE event_id = %s", event_id)[0][0] == 0
        # The platform redelivers it: intake takes it in again, the run it made stops it, and
        # it counts as the redelivery it is.
        def duplicates():
            text = harness.http("GET", s.workers[0].ops + "/metrics")[2].decode()
            line = [x for x in text.splitlines()
                    if x.startswith("hookflow_engine_events_duplicate_total ")]
            return float(line[0].split()[1])
        before = duplicates()
        s.send("later please", mid=mid)
        harness.wait_until(lambda: s.query("SELECT count(*) FROM event_keys WHERE event_id = %s",
                                           event_id)[0][0] == 1,
                           timeout=60, what="the redelivery to be taken in")
        rows = s.wait_run(event_id, timeout=90)
        assert len(rows) == 1, rows
        time.sleep(1)
        assert len(s.runs_for(event_id)) == 1
        assert duplicates() == before + 1
    finally:
        s.stop()
