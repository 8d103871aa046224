"""test_local_review: the local stack's scripts (deploy/local/run.sh, pg.sh,
send-demo-webhook.sh) under the conditions a developer or CI machine meets: a checkout in root's
private home, a port some other program holds, a run.sh that was killed, signals, stale files and
bad arguments.

Every run.sh here uses its own state directory and its own ports; every process it starts (its
process group, and the PostgreSQL server, which runs in a session of its own) is stopped at the
end of the test even when the test fails."""

import http.server
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

import harness


def _script(name):
    return os.path.join(harness.source_dir(), "deploy", "local", name)


def _port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _public_dir(prefix):
    """A directory the postgres system user can traverse (pg.sh runs the server as that user
    when the tests run as root)."""
    d = harness.temp_dir(prefix)
    os.chmod(os.path.dirname(d), 0o755)
    os.chmod(d, 0o755)
    return d


class Stack:
    """deploy/local/run.sh in its own state directory with its own ports."""

    def __init__(self, state, ingest=None):
        self.state = state
        self.ingest = ingest or harness.free_port()
        self.worker = harness.free_port()
        self.api = harness.free_port()
        self.env = {"HOOKFLOW_STATE_DIR": state, "HOOKFLOW_LOCAL_BIN": harness.build_dir(),
                    "HOOKFLOW_INGEST_LISTEN": f"127.0.0.1:{self.ingest}",
                    "HOOKFLOW_WORKER_LISTEN": f"127.0.0.1:{self.worker}",
                    "HOOKFLOW_API_LISTEN": f"127.0.0.1:{self.api}"}
        self.procs = []

    def start(self):
        p = harness.Proc(["bash", _script("run.sh")], env=self.env, name="run.sh",
                         cwd=harness.source_dir())
        self.procs.append(p)
        return p

    def cleanup(self):
        for p in self.procs:
            if p.alive():
                p.stop(signal.SIGTERM, timeout=60)
            # Orphans of a killed run.sh stay in its process group.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        subprocess.run(["bash", _script("pg.sh"), "stop", os.path.join(self.state, "pg")],
                       capture_output=True, timeout=120)
        # A cluster pg.sh put outside the state folder (root, private home) goes too.
        location = os.path.join(self.state, "pg", "location")
        if os.path.exists(location):
            with open(location) as f:
                shutil.rmtree(f.read().strip(), ignore_errors=True)


@pytest.fixture
def stacks():
    made = []

    def _make(state=None, ingest=None):
        s = Stack(state or _public_dir("stack"), ingest)
        made.append(s)
        return s

    yield _make
    for s in made:
        s.cleanup()


# ----------------------------------------------------------------------------------- run.sh

@pytest.mark.skipif(os.geteuid() != 0, reason="the postgres-user hand-over only happens as root")
def test_run_sh_as_root_with_the_checkout_in_a_private_home(stacks):
    # A checkout in /root (mode 0700, the usual place on a fresh Debian 12 machine where run.sh
    # must work as root) puts .hookflow/pg below a folder the postgres user cannot enter: pg.sh
    # then keeps the cluster in /var/lib/hookflow (initdb failed with "Permission denied").
    home = harness.temp_dir("privatehome")
    os.chmod(home, 0o700)  # like /root
    stack = stacks(state=os.path.join(home, "checkout", ".hookflow"))
    proc = stack.start()
    proc.wait_for_log(r"hookflow is running", timeout=180)


def test_run_sh_fails_fast_when_the_ingest_port_is_held_by_a_silent_listener(stacks):
    # Another program listens on the ingest port without answering: ingest exits at once
    # ("cannot listen on ...: Address already in use") and run.sh says so and exits non-zero
    # within seconds (its curl without a timeout hung forever).
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(64)
    try:
        stack = stacks(ingest=holder.getsockname()[1])
        proc = stack.start()
        try:
            code = proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run.sh still running 45 s after ingest failed to bind; log:\n"
                        f"{proc.tail()}")
        assert code != 0
        assert str(stack.ingest) in proc.log() and "in use" in proc.log(), proc.tail()
    finally:
        holder.close()


def test_run_sh_stops_on_sigterm_while_waiting_for_a_service(stacks):
    # SIGTERM while run.sh waits for a service stops run.sh and everything it started within
    # seconds (bash runs its trap only when the foreground command returns: a curl without a
    # timeout never did).
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(64)
    try:
        stack = stacks(ingest=holder.getsockname()[1])
        proc = stack.start()
        ingest_log = os.path.join(stack.state, "ingest.log")

        def ingest_gave_up():
            try:
                with open(ingest_log) as f:
                    return "cannot listen" in f.read()
            except OSError:
                return False
        harness.wait_until(ingest_gave_up, timeout=120, what="ingest to fail to bind")
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run.sh ignored SIGTERM for 20 s; log:\n{proc.tail()}")
    finally:
        holder.close()


def test_run_sh_starts_again_after_run_sh_itself_was_killed(stacks):
    # run.sh killed with SIGKILL (OOM killer, `kill -9`) leaves its services running as orphans:
    # the next run.sh starts the stack, stopping the services it recorded. (They held the stack's
    # lock, and the next run.sh said "already running".)
    stack = stacks()
    first = stack.start()
    first.wait_for_log(r"hookflow is running", timeout=180)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    second = stack.start()
    try:
        second.wait_for_log(r"hookflow is running", timeout=180)
    except AssertionError:
        orphans = _group_pids(first.pid)
        raise AssertionError(f"second run.sh did not start; orphans of the first in its process "
                             f"group: {orphans}; log:\n{second.tail()}") from None


def _group_pids(pgid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.getpgid(int(d)) == pgid and _pid_alive(int(d)):
                    out.append(int(d))
            except ProcessLookupError:
                pass
    return out


def test_run_sh_prints_demo_commands_for_the_address_it_uses(stacks):
    # With HOOKFLOW_INGEST_LISTEN (run.sh's documented way to use another port) the printed
    # "Try it" commands name the address and state folder in use, not the defaults.
    stack = stacks()
    proc = stack.start()
    proc.wait_for_log(r"hookflow is running", timeout=180)
    lines = [l for l in proc.log_lines() if "send-demo-webhook.sh" in l]
    assert lines, proc.log()
    assert all(f"127.0.0.1:{stack.ingest}" in l for l in lines), lines


def test_run_sh_survives_stale_files_restarts_and_stops_everything_on_sigint(stacks):
    # A killed earlier run leaves pid, bootstrap, port and socket files; run.sh starts over them,
    # SIGINT (Ctrl-C) stops every service and PostgreSQL with exit 0, and a second start reuses
    # PostgreSQL's data and the secrets.
    stack = stacks()
    state = stack.state
    with open(os.path.join(state, "run.pid"), "w") as f:
        f.write("999999999\n")
    with open(os.path.join(state, "kafka.bootstrap"), "w") as f:
        f.write("127.0.0.1:1\n")
    with open(os.path.join(state, "fakes.port"), "w") as f:
        f.write("1\n")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.path.join(state, "kafka.ctl"))
    stale.close()  # a socket file nobody listens on

    for round_ in range(2):
        proc = stack.start()
        proc.wait_for_log(r"hookflow is running", timeout=180)
        bootstrap = open(os.path.join(state, "kafka.bootstrap")).read().strip()
        assert bootstrap != "127.0.0.1:1" and bootstrap in proc.log()
        ctl = subprocess.run([harness.bin("hookflow-devbroker"), "ctl",
                              os.path.join(state, "kafka.ctl"), "ping"],
                             capture_output=True, text=True, timeout=30)
        assert ctl.stdout == "ok\n", ctl
        with open(os.path.join(state, "secrets", "api", "jwt_key")) as f:
            key = f.read()
        if round_ == 1:
            assert key == first_key
        first_key = key
        assert proc.stop(signal.SIGINT, timeout=60) == 0, proc.tail()
        assert "stopped" in proc.log()
        assert not os.path.exists(os.path.join(state, "run.pid"))
        harness.wait_until(lambda: _group_pids(proc.pid) == [], timeout=10,
                           what="every service of run.sh to exit after SIGINT")
        for port in (stack.ingest, stack.worker, stack.api):
            assert _port_free(port)
        status = subprocess.run(["bash", _script("pg.sh"), "status", os.path.join(state, "pg")],
                                capture_output=True, timeout=60)
        assert status.returncode != 0, "PostgreSQL still running after SIGINT"
        for name in ("ingest.log", "worker.log", "api.log", "devbroker.log"):
            text = open(os.path.join(state, name)).read()
            assert "Sanitizer" not in text and "runtime error" not in text, text[-3000:]


# ----------------------------------------------------------------------------------- pg.sh

def test_pg_sh_bad_port_is_refused_and_not_remembered():
    # `pg.sh start DIR abc`: one clear line, a non-zero exit, nothing changed, and the next plain
    # start works (the bad port was written to DIR/port first and broke every later start).
    d = _public_dir("pgbad")
    pgdir = os.path.join(d, "pg")
    try:
        bad = subprocess.run(["bash", _script("pg.sh"), "start", pgdir, "abc"],
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0
        good = subprocess.run(["bash", _script("pg.sh"), "start", pgdir],
                              capture_output=True, text=True, timeout=120)
        assert good.returncode == 0, "the bad port was remembered: " + good.stderr
        assert good.stdout.startswith("postgresql://")
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    finally:
        subprocess.run(["bash", _script("pg.sh"), "stop", pgdir], capture_output=True,
                       timeout=120)
        shutil.rmtree(d, ignore_errors=True)


def test_pg_sh_usage_errors_are_one_line_and_exit_2():
    for args in ([], ["start"], ["restart", "/nonexistent-hf-review"]):
        r = subprocess.run(["bash", _script("pg.sh"), *args], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2, (args, r)
        assert len(r.stderr.splitlines()) == 1 and "usage" in r.stderr


# ---------------------------------------------------------------------- send-demo-webhook.sh

class _Recorder(http.server.BaseHTTPRequestHandler):
    status = 401
    received = []

    def do_POST(self):  # noqa: N802 - http.server's name
        n = int(self.headers.get("Content-Length") or 0)
        type(self).received.append((self.path, dict(self.headers), self.rfile.read(n)))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    _Recorder.received = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _send_demo(state, addr, provider="meta"):
    env = dict(os.environ, HOOKFLOW_STATE_DIR=state)
    return subprocess.run(["bash", _script("send-demo-webhook.sh"), provider, addr], env=env,
                          capture_output=True, text=True, timeout=60, cwd=harness.source_dir())


def test_send_demo_webhook_fails_when_ingest_rejects_the_delivery(recorder):
    # A 401 (wrong key: e.g. a state folder of another run) or a 503 exits non-zero (it exited 0
    # as if the demo had been delivered).
    state = harness.temp_dir("demo-state")
    os.makedirs(os.path.join(state, "secrets", "meta"))
    with open(os.path.join(state, "secrets", "meta", "app_secret"), "w") as f:
        f.write("some-secret")
    r = _send_demo(state, f"127.0.0.1:{recorder.server_address[1]}")
    assert len(_Recorder.received) == 1
    assert "401" in r.stdout
    assert r.returncode != 0, r.stdout + r.stderr


def test_send_demo_webhook_without_secrets_sends_nothing(recorder):
    # No secrets folder (run.sh never ran, or another HOOKFLOW_STATE_DIR): one error line naming
    # the missing file, a non-zero exit, and no request (it signed with an empty key and sent).
    state = harness.temp_dir("demo-empty")
    r = _send_demo(state, f"127.0.0.1:{recorder.server_address[1]}")
    assert _Recorder.received == [], "a delivery signed with an empty key was sent"
    assert r.returncode != 0


def test_send_demo_webhook_unknown_provider_is_one_line_exit_2(recorder):
    state = harness.temp_dir("demo-bad")
    r = _send_demo(state, f"127.0.0.1:{recorder.server_address[1]}", provider="hubspot")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "provider" in r.stderr
    assert _Recorder.received == []


def test_demo_token_without_a_stack_is_one_line_exit_1():
    state = harness.temp_dir("token-empty")
    r = subprocess.run(["bash", _script("demo-token.sh")],
                       env=dict(os.environ, HOOKFLOW_STATE_DIR=state), capture_output=True,
                       text=True, timeout=60, cwd=harness.source_dir())
    assert r.returncode == 1 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and "run.sh" in r.stderr
