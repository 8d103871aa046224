"""test_migrate: `hookflow-engine migrate` (and `npm run db:migrate`) against a real PostgreSQL.

Self-contained: starts its own throwaway cluster with deploy/local/pg.sh for the module and gives
each test a fresh database.
"""

import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid

import psycopg2
import pytest

SOURCE_DIR = os.environ.get("HOOKFLOW_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_DIR = os.environ.get("HOOKFLOW_BUILD_DIR", "")
ENGINE = os.path.join(BUILD_DIR, "hookflow-engine")
MIGRATIONS = os.path.join(SOURCE_DIR, "schemas", "migrations")
PG_SH = os.path.join(SOURCE_DIR, "deploy", "local", "pg.sh")
PREFIX = "hookflow-engine: migrate: "

CORE_TABLES = {
    "tenants", "branches", "role_mappings", "connections", "support_approvals", "workflows",
    "workflow_versions", "event_keys", "runs", "node_attempts", "audit_log",
}
CORE_INDEXES = {
    "workflows_trigger_idx", "runs_runnable_idx", "runs_lease_idx", "runs_ordering_idx",
    "runs_workflow_created_idx", "runs_tenant_status_idx",
}


class Cluster:
    def __init__(self, url):
        self.url = url

    def url_for(self, dbname):
        return self.url.rsplit("/", 1)[0] + "/" + dbname

    def fresh_db(self):
        name = "m_" + uuid.uuid4().hex[:12]
        conn = psycopg2.connect(self.url_for("postgres"))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url_for(name)


@pytest.fixture(scope="module")
def cluster():
    if not os.access(ENGINE, os.X_OK):
        pytest.fail(f"{ENGINE} not built (HOOKFLOW_BUILD_DIR={BUILD_DIR!r})", pytrace=False)
    # Under /tmp, not pytest's 0700 tmp_path: as root the server runs as the postgres user.
    directory = tempfile.mkdtemp(prefix="hookflow-migrate-pg-")
    try:
        out = subprocess.run(["bash", PG_SH, "start", directory], capture_output=True, text=True,
                             timeout=180)
        if out.returncode != 0:
            pytest.fail(f"pg.sh start failed:\n{out.stderr}", pytrace=False)
        yield Cluster(out.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["bash", PG_SH, "stop", directory], capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


def query(url, sql, params=None):
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def tables(url):
    return {r[0] for r in query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def recorded(url):
    """schema_migrations as [(version, name, checksum, applied_at)], [] if it does not exist."""
    if "schema_migrations" not in tables(url):
        return []
    return query(url, "SELECT version, name, checksum, applied_at FROM schema_migrations "
                      "ORDER BY version")


def migration_files(directory=MIGRATIONS):
    return sorted(f for f in os.listdir(directory) if re.fullmatch(r"\d{4}_[A-Za-z0-9_-]+\.sql", f))


def next_version(directory):
    return max(int(f[:4]) for f in migration_files(directory)) + 1


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def engine_env(url=None, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("HOOKFLOW_DATABASE_URL", "HOOKFLOW_MIGRATIONS_DIR", "HOOKFLOW_CONFIG_FILE")}
    if url is not None:
        env["HOOKFLOW_DATABASE_URL"] = url
    env.update(extra)
    return env


def no_sanitizer_report(r):
    assert "Sanitizer" not in r.stderr, r.stderr
    assert "runtime error" not in r.stderr, r.stderr


def migrate(url, *args, env=None):
    r = subprocess.run([ENGINE, "migrate", *args], env=env or engine_env(url),
                       capture_output=True, text=True, timeout=180)
    no_sanitizer_report(r)
    return r


def one_error_line(r):
    """The run failed with exit 1 and exactly one line on stderr, which is returned."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(PREFIX), lines[0]
    return lines[0][len(PREFIX):]


@pytest.fixture
def migrations_copy():
    directory = tempfile.mkdtemp(prefix="hookflow-migrations-")
    shutil.rmtree(directory)
    shutil.copytree(MIGRATIONS, directory)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def write(directory, name, text):
    with open(os.path.join(directory, name), "w") as f:
        f.write(text)


def test_fresh_database_gets_every_migration_then_is_up_to_date(cluster):
    url = cluster.fresh_db()
    files = migration_files()
    assert files and files[0] == "0001_core.sql"
    top = int(files[-1][:4])

    r = migrate(url)  # the compiled-in default folder: this checkout's schemas/migrations
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [re.sub(r" \(\d+ ms\)$", "", line) for line in lines[:-1]] == \
        [f"applied {f}" for f in files]
    plural = "" if len(files) == 1 else "s"
    assert lines[-1] == f"applied {len(files)} migration{plural}, database at version {top:04d}"
    assert r.stderr == ""

    assert CORE_TABLES <= tables(url)
    indexes = {r[0] for r in query(url, "SELECT indexname FROM pg_indexes "
                                        "WHERE schemaname = 'public'")}
    assert CORE_INDEXES <= indexes
    rows = recorded(url)
    assert [(v, n, c) for v, n, c, _ in rows] == [
        (int(f[:4]), f[5:-4], sha256_file(os.path.join(MIGRATIONS, f))) for f in files]
    assert all(at is not None for *_, at in rows)

    again = migrate(url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [f"database is up to date at version {top:04d}"]
    assert recorded(url) == rows


def test_core_schema_guards_against_double_runs_and_ambiguous_accounts(cluster):
    url = cluster.fresh_db()
    assert migrate(url).returncode == 0
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO tenants (slug, name) VALUES ('acme', 'Acme') RETURNING id")
            tenant = cur.fetchone()[0]
            cur.execute("INSERT INTO tenants (slug, name) VALUES ('globex', 'Globex') "
                        "RETURNING id")
            other = cur.fetchone()[0]
            cur.execute("INSERT INTO connections (tenant_id, connector, account, status) "
                        "VALUES (%s, 'xero', 'org-1', 'active')", (tenant,))
            # A workflow and its first version go in together (the version FK is deferred).
            cur.execute("INSERT INTO workflows (tenant_id, name, enabled, trigger_connector, "
                        "trigger_event) VALUES (%s, 'wf', true, 'xero', 'invoices.created') "
                        "RETURNING id", (tenant,))
            workflow = cur.fetchone()[0]
            cur.execute("INSERT INTO workflow_versions (workflow_id, version, definition) "
                        "VALUES (%s, 1, '{}')", (workflow,))
            cur.execute("INSERT INTO runs (tenant_id, workflow_id, workflow_version, event_id, "
                        "ordering_key, ordering_seq, trigger) VALUES (%s, %s, 1, 'ev-1', "
                        "'xero:org-1', 1, '{}')", (tenant, workflow))
        conn.commit()

        def refused(sql, params, sqlstate):
            with conn.cursor() as cur:
                with pytest.raises(psycopg2.Error) as e:
                    cur.execute(sql, params)
                    conn.commit()
            conn.rollback()
            assert e.value.pgcode == sqlstate, e.value

        # The same event never makes a second run of one workflow.
        refused("INSERT INTO runs (tenant_id, workflow_id, workflow_version, event_id, "
                "ordering_key, ordering_seq, trigger) VALUES (%s, %s, 1, 'ev-1', 'xero:org-1', 2, "
                "'{}')", (tenant, workflow), "23505")
        # A provider account belongs to one tenant only.
        refused("INSERT INTO connections (tenant_id, connector, account, status) "
                "VALUES (%s, 'xero', 'org-1', 'active')", (other,), "23505")
        # An event id is taken in once.
        with conn.cursor() as cur:
            cur.execute("INSERT INTO event_keys (event_id, provider, account) "
                        "VALUES ('ev-1', 'xero', 'org-1')")
        conn.commit()
        refused("INSERT INTO event_keys (event_id, provider, account) "
                "VALUES ('ev-1', 'xero', 'org-1')", None, "23505")
        # A workflow cannot point at a version that does not exist.
        refused("INSERT INTO workflows (tenant_id, name, trigger_connector, trigger_event) "
                "VALUES (%s, 'orphan', 'xero', 'invoices.created')", (tenant,), "23503")
        # Statuses and roles are closed sets.
        refused("UPDATE runs SET status = 'bogus'", None, "23514")
        refused("INSERT INTO branches (tenant_id, branch) VALUES (%s, 'main'); "
                "INSERT INTO role_mappings (tenant_id, branch, subject, role) "
                "VALUES (%s, 'main', 'alice', 'owner')", (tenant, tenant), "23514")
    finally:
        conn.close()


def test_edited_applied_migration_is_refused_and_nothing_changes(cluster, migrations_copy):
    url = cluster.fresh_db()
    assert migrate(url, "--dir", migrations_copy).returncode == 0
    before = recorded(url)
    with open(os.path.join(migrations_copy, "0001_core.sql"), "a") as f:
        f.write("\n-- a harmless-looking edit\n")
    # A pending migration beside the edit must not be applied either.
    n = next_version(migrations_copy)
    write(migrations_copy, f"{n:04d}_later.sql", "CREATE TABLE later_table (id int);\n")

    r = migrate(url, "--dir", migrations_copy)
    assert one_error_line(r) == ("0001_core.sql was edited after it was applied (checksum "
                                 "mismatch); add a new migration instead")
    assert r.stdout == ""
    assert recorded(url) == before
    assert "later_table" not in tables(url)


def test_new_migration_applies_exactly_once(cluster, migrations_copy):
    url = cluster.fresh_db()
    assert migrate(url, env=engine_env(url, HOOKFLOW_MIGRATIONS_DIR=migrations_copy)).returncode == 0
    n = next_version(migrations_copy)
    name = f"{n:04d}_add_widgets.sql"
    write(migrations_copy, name, "CREATE TABLE widgets (id int PRIMARY KEY);\n"
                                 "INSERT INTO widgets VALUES (1);\n")

    r = migrate(url, env=engine_env(url, HOOKFLOW_MIGRATIONS_DIR=migrations_copy))
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rf"applied {name} \(\d+ ms\)\napplied 1 migration, database at version "
                        rf"{n:04d}\n", r.stdout), r.stdout
    again = migrate(url, "--dir", migrations_copy)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"database is up to date at version {n:04d}\n"
    assert query(url, "SELECT count(*) FROM widgets") == [(1,)]
    assert query(url, "SELECT name, checksum FROM schema_migrations WHERE version = %s", (n,)) == \
        [("add_widgets", sha256_file(os.path.join(migrations_copy, name)))]


@pytest.mark.parametrize("script,message", [
    ("CREATE TABLE bad_table (id int);\n\nCREATE TABL oops (id int);\n",
     r'syntax error at or near "TABL" \(SQLSTATE 42601\) at line 3'),
    ("CREATE TABLE bad_table (id int);\nSELECT 1 / 0;\n",
     r"division by zero \(SQLSTATE 22012\)"),
])
def test_failing_migration_is_rolled_back_and_named(cluster, migrations_copy, script, message):
    url = cluster.fresh_db()
    n = next_version(migrations_copy)
    good, bad = f"{n:04d}_good.sql", f"{n + 1:04d}_bad.sql"
    write(migrations_copy, good, "CREATE TABLE good_table (id int);\n")
    write(migrations_copy, bad, script)

    r = migrate(url, "--dir", migrations_copy)
    line = one_error_line(r)
    assert line.startswith(f"{bad} failed and was rolled back: "), line
    assert re.search(message, line), line
    # Files before the failing one stay applied, each in its own transaction.
    assert f"applied {good}" in r.stdout
    versions = [v for v, *_ in recorded(url)]
    assert n in versions and n + 1 not in versions
    assert "good_table" in tables(url)
    assert "bad_table" not in tables(url)

    write(migrations_copy, bad, "CREATE TABLE fixed_table (id int);\n")
    fixed = migrate(url, "--dir", migrations_copy)
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.splitlines()[-1] == f"applied 1 migration, database at version {n + 1:04d}"


def test_file_that_commits_itself_is_refused_before_anything_runs(cluster, migrations_copy):
    # A COMMIT inside a file would commit its first half; the runner refuses the folder instead,
    # before the pending file ahead of it runs.
    url = cluster.fresh_db()
    n = next_version(migrations_copy)
    write(migrations_copy, f"{n:04d}_good.sql", "CREATE TABLE good_table (id int);\n")
    bad = f"{n + 1:04d}_bad.sql"
    write(migrations_copy, bad, "CREATE TABLE bad_table (id int);\nCOMMIT;\n")
    r = migrate(url, "--dir", migrations_copy)
    line = one_error_line(r)
    assert line.startswith(f"{bad}, line 2: COMMIT is not allowed in a migration"), line
    assert "nothing was applied" in line
    assert "good_table" not in tables(url) and "bad_table" not in tables(url)
    assert not recorded(url)

    write(migrations_copy, bad, "CREATE TABLE bad_table (id int);\n")
    fixed = migrate(url, "--dir", migrations_copy)
    assert fixed.returncode == 0, fixed.stderr
    assert {"good_table", "bad_table"} <= set(tables(url))


def test_concurrent_runs_apply_each_migration_once(cluster, migrations_copy):
    url = cluster.fresh_db()
    # A slow migration keeps the lock long enough for the other runs to queue behind it.
    n = next_version(migrations_copy)
    write(migrations_copy, f"{n:04d}_slow.sql",
          "SELECT pg_sleep(2);\nCREATE TABLE slow_table (id int);\n")
    files = migration_files(migrations_copy)

    procs = [subprocess.Popen([ENGINE, "migrate", "--dir", migrations_copy], env=engine_env(url),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        results.append((p.returncode, out, err))
    for code, out, err in results:
        assert code == 0, (code, out, err)
        assert "Sanitizer" not in err, err

    applied = [line for _, out, _ in results for line in out.splitlines()
               if re.fullmatch(r"applied \S+\.sql \(\d+ ms\)", line)]
    assert sorted(line.split()[1] for line in applied) == files
    summaries = [out.splitlines()[-1] for _, out, _ in results]
    top = f"{int(files[-1][:4]):04d}"
    assert summaries.count(f"applied {len(files)} migrations, database at version {top}") == 1
    assert summaries.count(f"database is up to date at version {top}") == 3
    assert any("waiting for another migrate run to finish" in out for _, out, _ in results)
    assert [v for v, *_ in recorded(url)] == [int(f[:4]) for f in files]


@pytest.mark.parametrize("files,named", [
    (["3_short.sql"], "3_short.sql"),
    (["0002-dash.sql"], "0002-dash.sql"),
    (["0002_backup.sql.orig"], "0002_backup.sql.orig"),
    (["0002_has space.sql"], "0002_has space.sql"),
    (["0000_zero.sql"], "0000_zero.sql"),
])
def test_badly_named_file_is_refused(cluster, migrations_copy, files, named):
    url = cluster.fresh_db()
    for f in files:
        write(migrations_copy, f, "CREATE TABLE never_table (id int);\n")
    r = migrate(url, "--dir", migrations_copy)
    line = one_error_line(r)
    assert line.startswith(f"{named} in {migrations_copy} does not match NNNN_name.sql"), line
    assert tables(url) == set()


def test_two_files_with_one_number_are_refused(cluster, migrations_copy):
    url = cluster.fresh_db()
    n = next_version(migrations_copy)
    write(migrations_copy, f"{n:04d}_alpha.sql", "CREATE TABLE alpha (id int);\n")
    write(migrations_copy, f"{n:04d}_beta.sql", "CREATE TABLE beta (id int);\n")
    line = one_error_line(migrate(url, "--dir", migrations_copy))
    assert line == (f"{n:04d}_alpha.sql and {n:04d}_beta.sql share version {n:04d}; give one a "
                    f"new number")
    assert tables(url) == set()


def test_missing_or_renamed_applied_file_is_refused(cluster, migrations_copy):
    url = cluster.fresh_db()
    n = next_version(migrations_copy)
    write(migrations_copy, f"{n:04d}_extra.sql", "CREATE TABLE extra (id int);\n")
    assert migrate(url, "--dir", migrations_copy).returncode == 0
    before = recorded(url)

    os.rename(os.path.join(migrations_copy, f"{n:04d}_extra.sql"),
              os.path.join(migrations_copy, f"{n:04d}_renamed.sql"))
    line = one_error_line(migrate(url, "--dir", migrations_copy))
    assert line.startswith(f"{n:04d}_renamed.sql was applied as {n:04d}_extra.sql"), line

    os.remove(os.path.join(migrations_copy, f"{n:04d}_renamed.sql"))
    line = one_error_line(migrate(url, "--dir", migrations_copy))
    assert line.startswith(f"{n:04d}_extra.sql was applied but is missing from "
                           f"{migrations_copy}"), line
    assert recorded(url) == before


def test_new_file_numbered_below_the_database_version_is_refused(cluster, migrations_copy):
    url = cluster.fresh_db()
    n = next_version(migrations_copy)
    write(migrations_copy, f"{n + 1:04d}_later.sql", "CREATE TABLE later (id int);\n")
    assert migrate(url, "--dir", migrations_copy).returncode == 0
    write(migrations_copy, f"{n:04d}_late_merge.sql", "CREATE TABLE late (id int);\n")
    line = one_error_line(migrate(url, "--dir", migrations_copy))
    assert line.startswith(f"{n:04d}_late_merge.sql is numbered below the database's version "
                           f"{n + 1:04d}"), line
    assert "late" not in tables(url)


def test_missing_database_url_is_one_clear_line():
    r = subprocess.run([ENGINE, "migrate"], env=engine_env(None), capture_output=True, text=True,
                       timeout=60)
    no_sanitizer_report(r)
    line = one_error_line(r)
    assert "HOOKFLOW_DATABASE_URL" in line
    assert r.stdout == ""


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("via_flag", [False, True])
def test_password_never_printed_on_connection_failure(via_flag):
    port = closed_port()
    password = "s3cretPassw0rd"
    url = f"postgresql://hookflow:{password}@127.0.0.1:{port}/hookflow"
    if via_flag:
        r = migrate(None, "--database-url", url, env=engine_env(None))
    else:
        r = migrate(url)
    line = one_error_line(r)
    assert password not in r.stdout + r.stderr
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}/hookflow" in line, line
    # The same for a URL that libpq cannot even parse (its parse errors quote the URL).
    r = migrate(f"postgresql://hookflow:{password}@[::1/hookflow")
    line = one_error_line(r)
    assert password not in r.stdout + r.stderr
    assert "invalid database connection string" in line


def test_npm_run_db_migrate(cluster):
    npm = shutil.which("npm")
    assert npm, "npm is not installed (deploy/local/install-deps.sh installs it)"
    url = cluster.fresh_db()
    env = engine_env(url, HOOKFLOW_ENGINE_BIN=ENGINE, npm_config_update_notifier="false")
    r = subprocess.run([npm, "run", "--silent", "db:migrate"], cwd=SOURCE_DIR, env=env,
                       capture_output=True, text=True, timeout=300)
    no_sanitizer_report(r)
    assert r.returncode == 0, (r.stdout, r.stderr)
    files = migration_files()
    assert f"database at version {int(files[-1][:4]):04d}" in r.stdout, r.stdout
    assert [v for v, *_ in recorded(url)] == [int(f[:4]) for f in files]
    assert CORE_TABLES <= tables(url)

    again = subprocess.run([npm, "run", "--silent", "db:migrate"], cwd=SOURCE_DIR, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert "database is up to date" in again.stdout
