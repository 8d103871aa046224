"""Integration: the README's first command. deploy/local/run.sh brings up the whole stack, the
printed demo command produces a recorded run, a second run.sh refuses, and SIGTERM stops
everything cleanly."""

import os
import re
import signal
import subprocess
import time

import harness


def test_run_sh_demo_webhook_becomes_a_recorded_run():
    root = harness.source_dir()
    state = harness.temp_dir("stack")
    os.chmod(os.path.dirname(state), 0o755)  # PostgreSQL runs as the postgres user
    os.chmod(state, 0o755)
    ingest, worker, api = harness.free_port(), harness.free_port(), harness.free_port()
    env = {"HOOKFLOW_STATE_DIR": state, "HOOKFLOW_LOCAL_BIN": harness.build_dir(),
           "HOOKFLOW_INGEST_LISTEN": f"127.0.0.1:{ingest}",
           "HOOKFLOW_WORKER_LISTEN": f"127.0.0.1:{worker}",
           "HOOKFLOW_API_LISTEN": f"127.0.0.1:{api}"}
    stack = harness.Proc(["bash", os.path.join(root, "deploy", "local", "run.sh")], env=env,
                         name="run.sh", cwd=root)
    stack.wait_for_log(r"hookflow is running", timeout=180)
    log = stack.log()
    db_url = re.search(r"PostgreSQL  (postgresql://\S+)", log).group(1)
    bootstrap = open(os.path.join(state, "kafka.bootstrap")).read().strip()
    assert bootstrap in log

    second = subprocess.run(["bash", os.path.join(root, "deploy", "local", "run.sh")],
                            env=dict(os.environ, **env), capture_output=True, text=True,
                            timeout=60)
    assert second.returncode != 0 and "already running" in second.stderr

    demo = subprocess.run(["bash", os.path.join(root, "deploy", "local", "send-demo-webhook.sh"),
                           "meta", f"127.0.0.1:{ingest}"], env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=60, cwd=root)
    assert "HTTP/1.1 200" in demo.stdout, demo.stdout + demo.stderr

    import psycopg2

    def succeeded():
        conn = psycopg2.connect(db_url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT status FROM runs")
                return [r[0] for r in cur.fetchall() if r[0] == "succeeded"]
        finally:
            conn.close()
    harness.wait_until(succeeded, timeout=60, what="the demo run to succeed")

    # The printed API recipe works: a demo admin token lists the demo workflow.
    token = subprocess.run(["bash", os.path.join(root, "deploy", "local", "demo-token.sh")],
                           env=dict(os.environ, **env), capture_output=True, text=True,
                           timeout=30, cwd=root)
    assert token.returncode == 0, token.stderr
    import json
    status, _, body = harness.http("GET", f"http://127.0.0.1:{api}/api/workflows",
                                   headers={"Authorization": "Bearer " + token.stdout.strip()})
    assert status == 200, body
    assert [w["name"] for w in json.loads(body)["workflows"]] == ["Pickup confirmation"]

    assert stack.stop(signal.SIGTERM, timeout=60) == 0, stack.tail()
    assert "stopped" in stack.log()
    for name in ("ingest.log", "worker.log", "api.log"):
        text = open(os.path.join(state, name)).read()
        assert "AddressSanitizer" not in text and "runtime error" not in text, text[-3000:]
    # Nothing keeps running: the ports are free again.
    time.sleep(0.5)
    for port in (ingest, worker, api):
        import socket
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
    subprocess.run(["bash", os.path.join(root, "deploy", "local", "pg.sh"), "stop",
                    os.path.join(state, "pg")], capture_output=True)
