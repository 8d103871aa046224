"""Integration: operator-facing behaviour, from an operations review: shutdown without
PostgreSQL, SIGHUP, --help and the README agreeing, start-up errors naming the program, the local
scripts in paths with spaces, run.sh after kill -9 (README "Configuration", "Engine workers",
"The two commands")."""

import base64
import os
import re
import signal
import subprocess
import time

import harness


def _secrets_dir():
    """A secrets directory with an engine token key (so the worker logs no warning at start)."""
    d = harness.temp_dir("secrets")
    os.makedirs(os.path.join(d, "engine"))
    with open(os.path.join(d, "engine", "token_key"), "w") as f:
        f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    return d


def _worker_env(**extra):
    env = {"HOOKFLOW_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{harness.free_port()}/x",
           "HOOKFLOW_KAFKA_BROKERS": f"127.0.0.1:{harness.free_port()}",
           "HOOKFLOW_SECRETS_DIR": _secrets_dir(),
           "HOOKFLOW_WORKER_LISTEN": "127.0.0.1:0",
           "HOOKFLOW_LOG_FORMAT": "text"}
    env.update(extra)
    return env


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _readme_row(var):
    """The README configuration table's row of var."""
    with open(os.path.join(harness.source_dir(), "README.md"), encoding="utf-8") as f:
        for line in f:
            if re.match(r"\|\s*`" + re.escape(var) + r"`\s*\|", line):
                return line
    raise AssertionError(f"{var} not in README's configuration table")


# SIGTERM stops a worker whose PostgreSQL is unreachable (its leases are left to expire).
def test_worker_sigterm_exits_while_postgres_is_down(spawn):
    worker = spawn([harness.bin("hookflow-engine"), "work"],
                   env=_worker_env(HOOKFLOW_SHUTDOWN_TIMEOUT_MS="1000"), name="worker")
    worker.wait_for_log(r"worker\.started", timeout=30)
    worker.wait_for_log(r"executor\.db_unavailable", timeout=30)
    worker.send_signal(signal.SIGTERM)
    try:
        code = worker.wait(20)
    except subprocess.TimeoutExpired:
        code = None
    assert code == 0, (f"worker did not exit 20 s after SIGTERM with "
                       f"HOOKFLOW_SHUTDOWN_TIMEOUT_MS=1000 (code {code}); tail:\n{worker.tail(5)}")


# SIGHUP reloads a worker's secrets; it is not fatal (no drain, leases left to expire).
def test_worker_survives_sighup(spawn):
    worker = spawn([harness.bin("hookflow-engine"), "work"], env=_worker_env(), name="worker")
    worker.wait_for_log(r"worker\.started", timeout=30)
    worker.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    assert worker.alive(), f"worker died on SIGHUP (exit code {worker.returncode})"


# The worker's HOOKFLOW_SHUTDOWN_TIMEOUT_MS default in --help is the one README gives for it.
def test_worker_shutdown_timeout_default_matches_readme():
    out = subprocess.run([harness.bin("hookflow-engine"), "work", "--help"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0
    m = re.search(r"HOOKFLOW_SHUTDOWN_TIMEOUT_MS .*\(default: (\S+)\)", out.stdout)
    assert m, out.stdout
    # The table gives ingest's and serve's default and, beside it, the worker's.
    assert f"`work`: `{m.group(1)}`" in _readme_row("HOOKFLOW_SHUTDOWN_TIMEOUT_MS")


# `work --help` lists HOOKFLOW_CATALOG_DIR and the connector URL settings it reads.
def test_worker_help_lists_catalog_and_connector_settings():
    out = subprocess.run([harness.bin("hookflow-engine"), "work", "--help"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0
    assert "HOOKFLOW_CATALOG_DIR" in out.stdout
    assert "HOOKFLOW_CONNECTOR_" in out.stdout


# An unreadable HOOKFLOW_CONFIG_FILE is one line naming the program, like any bad setting.
def test_bad_config_file_names_the_program():
    missing = os.path.join(harness.temp_dir("cfg"), "missing.env")
    env = dict(os.environ, HOOKFLOW_CONFIG_FILE=missing)
    out = subprocess.run([harness.bin("hookflow-ingest")], capture_output=True, text=True,
                         timeout=30, env=env)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("hookflow-ingest: HOOKFLOW_CONFIG_FILE"), lines[0]


# pg.sh starts PostgreSQL in a state dir whose path has a space.
def test_pg_sh_works_in_a_path_with_spaces():
    parent = os.path.join(harness.temp_dir("pg"), "with space")
    os.makedirs(parent)
    for d in (os.path.dirname(os.path.dirname(parent)), os.path.dirname(parent), parent):
        os.chmod(d, 0o755)  # as root the server runs as the postgres user
    pg = harness.Postgres(os.path.join(parent, "pg"))
    try:
        url = pg.start()
        assert pg.running(), url
    finally:
        pg.cleanup()


# After run.sh is killed with -9 and its services stopped, run.sh starts again (the
# PostgreSQL server it keeps does not hold its lock).
def test_run_sh_restarts_after_kill_9_and_services_stopped():
    root = harness.source_dir()
    state = harness.temp_dir("stack")
    os.chmod(os.path.dirname(state), 0o755)
    os.chmod(state, 0o755)
    env = {"HOOKFLOW_STATE_DIR": state, "HOOKFLOW_LOCAL_BIN": harness.build_dir(),
           "HOOKFLOW_INGEST_LISTEN": f"127.0.0.1:{harness.free_port()}",
           "HOOKFLOW_WORKER_LISTEN": f"127.0.0.1:{harness.free_port()}",
           "HOOKFLOW_API_LISTEN": f"127.0.0.1:{harness.free_port()}"}
    script = os.path.join(root, "deploy", "local", "run.sh")
    second = None
    try:
        first = harness.Proc(["bash", script], env=env, name="run.sh", cwd=root)
        first.wait_for_log(r"hookflow is running", timeout=180)
        children = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == first.pid:
                children.append(int(entry))
        os.kill(first.pid, signal.SIGKILL)  # only run.sh itself
        first.wait(10)
        for pid in children:  # the operator stops what run.sh had started
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        harness.wait_until(lambda: not any(_running(p) for p in children),
                           timeout=30, what="run.sh's services to stop")
        second = harness.Proc(["bash", script], env=env, name="run.sh-2", cwd=root)
        harness.wait_until(lambda: not second.alive() or "hookflow is running" in second.log(),
                           timeout=180, what="the second run.sh to start or exit")
        assert "already running" not in second.log(), second.tail(5)
        assert second.alive(), second.tail(20)
    finally:
        if second is not None and second.alive():
            second.stop(signal.SIGTERM, timeout=60)
        subprocess.run(["bash", os.path.join(root, "deploy", "local", "pg.sh"), "stop",
                        os.path.join(state, "pg")], capture_output=True, timeout=120)
        harness.kill_all()


# send-demo-webhook.sh signs with the real key when the state dir has a space.
def test_send_demo_webhook_with_state_dir_with_spaces():
    import hashlib
    import hmac
    import http.server
    import threading

    state = os.path.join(harness.temp_dir("demo"), "state dir")
    os.makedirs(os.path.join(state, "secrets", "meta"))
    secret = "demo-app-secret"
    with open(os.path.join(state, "secrets", "meta", "app_secret"), "w") as f:
        f.write(secret)
    got = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            got["body"] = self.rfile.read(int(self.headers["Content-Length"]))
            got["sig"] = self.headers.get("X-Hub-Signature-256")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = subprocess.run(
            ["bash", os.path.join(harness.source_dir(), "deploy", "local",
                                  "send-demo-webhook.sh"), "meta",
             f"127.0.0.1:{server.server_address[1]}"],
            env=dict(os.environ, HOOKFLOW_STATE_DIR=state), capture_output=True, text=True,
            timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert "body" in got, out.stdout + out.stderr
    want = "sha256=" + hmac.new(secret.encode(), got["body"], hashlib.sha256).hexdigest()
    assert got["sig"] == want, out.stderr
