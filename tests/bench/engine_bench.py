"""engine_bench: measures one worker's run throughput and the webhook-to-run latency.

Run through tests/bench/engine.sh (which builds a Release tree and sets HOOKFLOW_*_DIR).
"""

import json
import os
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.environ["HOOKFLOW_SOURCE_DIR"], "tests", "integration"))
import harness  # noqa: E402
import signing  # noqa: E402

EVENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
RATE = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
SECONDS = int(sys.argv[3]) if len(sys.argv) > 3 else 20
PAGES = [str(300000 + i) for i in range(12)]
SID = "AC" + "b" * 32
SECRET = "bench-app-secret"


def sh(args, env=None):
    out = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, **(env or {})))
    if out.returncode:
        sys.exit(f"{args[0]} failed: {out.stderr}")
    return out.stdout


def nginx_fake(work):
    port = harness.free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {work}/body; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port};
    location /twilio/ {{ default_type application/json;
      return 201 '{{"sid":"SMbench0000000000000000000000000","status":"queued","to":"+14155550100","from":"+14155559876"}}'; }} }} }}
""")
    proc = harness.Proc(["nginx", "-c", conf, "-g", "daemon off;"], name="nginx")
    time.sleep(0.3)
    return proc, port


def main():
    work = harness.temp_dir("bench")
    pg = harness.Postgres()
    pg.start()
    db = pg.fresh_db("bench")
    sh([harness.bin("hookflow-engine"), "migrate"], {"HOOKFLOW_DATABASE_URL": db})
    conn = pg.connect(db)
    with conn.cursor() as cur:
        cur.execute("SHOW fsync")
        fsync = cur.fetchone()[0]
        if os.environ.get("BENCH_PG_LOG_MS"):  # experiments: log slow statements
            cur.execute("ALTER SYSTEM SET log_min_duration_statement = %s",
                        (int(os.environ["BENCH_PG_LOG_MS"]),))
            cur.execute("SELECT pg_reload_conf()")
    broker = harness.DevBroker(partitions=6).start()
    nginx, nport = nginx_fake(work)
    secrets = os.path.join(work, "secrets")
    for path, value in {"engine/token_key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
                        "meta/app_secret": SECRET}.items():
        os.makedirs(os.path.dirname(os.path.join(secrets, path)), exist_ok=True)
        with open(os.path.join(secrets, path), "w") as f:
            f.write(value)
    cfg = {"tenants": [{"slug": "bench", "name": "Bench", "environment": "sandbox",
        "support_approvals": [{"connector": "meta", "approved_by": "bench"}],
        "connections": [{"connector": "meta", "account": p, "status": "active",
                         "scopes": ["pages_messaging"], "access_token": "t"} for p in PAGES] +
                       [{"connector": "twilio", "account": SID, "status": "active", "scopes": [],
                         "access_token": "twilio-token"}],
        "workflows": [{"name": "SMS", "enabled": True, "definition": {
            "name": "SMS", "trigger": {"connector": "meta", "event": "message"},
            "nodes": [{"id": "sms", "type": "action", "connector": "twilio",
                       "action": "send_message",
                       "params": {"to": "+14155550100", "from": "+14155559876",
                                  "body": "Got: {{event.payload.message.text}}"}}],
            "edges": []}}]}]}
    cfg_path = os.path.join(work, "bench.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    sh([harness.bin("hookflow-engine"), "apply", cfg_path],
       {"HOOKFLOW_DATABASE_URL": db, "HOOKFLOW_SECRETS_DIR": secrets})

    # Phase 1: EVENTS envelopes straight into Kafka, then one worker drains them.
    producer = broker.producer({"linger.ms": 20})
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    for i in range(EVENTS):
        page = PAGES[i % len(PAGES)]
        env = {"id": f"meta:bench-{i}", "provider": "meta", "event": "message",
               "native_type": "message", "account": page, "resource": f"psid:{i}",
               "occurred_at": now, "received_at": now, "request_id": "bench",
               "payload": {"sender": {"id": str(i)}, "recipient": {"id": page},
                           "timestamp": 1, "message": {"mid": f"bench-{i}", "text": "hello " * 20}}}
        while True:
            try:
                producer.produce("hookflow.webhooks.messaging", json.dumps(env).encode(),
                                 key=f"meta:{page}".encode())
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    producer.flush(60)

    wport = harness.free_port()
    worker = harness.Proc([harness.bin("hookflow-engine"), "work"], name="worker", env={
        "HOOKFLOW_DATABASE_URL": db, "HOOKFLOW_KAFKA_BROKERS": broker.bootstrap,
        "HOOKFLOW_SECRETS_DIR": secrets, "HOOKFLOW_WORKER_LISTEN": f"127.0.0.1:{wport}",
        "HOOKFLOW_KAFKA_SESSION_TIMEOUT_MS": "6000", "HOOKFLOW_LOG_LEVEL": "warn",
        "HOOKFLOW_CONNECTOR_TWILIO_BASE_URL": f"http://127.0.0.1:{nport}/twilio",
        "HOOKFLOW_WORKER_POLL_MS": "20",
        # BENCH_HOOKFLOW_X=v in the environment sets HOOKFLOW_X=v for the worker (experiments).
        **{k[len("BENCH_"):]: v for k, v in os.environ.items() if k.startswith("BENCH_HOOKFLOW_")}})
    harness.wait_http(f"http://127.0.0.1:{wport}/healthz", proc=worker)

    def count(status):
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs WHERE status = %s", (status,))
            return cur.fetchone()[0]

    deadline = time.monotonic() + 600
    while count("succeeded") < EVENTS and time.monotonic() < deadline:
        if not worker.alive():
            sys.exit("worker died:\n" + worker.tail())
        time.sleep(0.25)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*), extract(epoch from max(finished_at) - min(created_at)), "
                    "count(*) FILTER (WHERE status <> 'succeeded') FROM runs")
        n, span, bad = cur.fetchone()
        cur.execute("SELECT count(*) FROM node_attempts")
        attempts = cur.fetchone()[0]
        cur.execute("SELECT left(coalesce(error, ''), 120), count(*) FROM node_attempts "
                    "WHERE status <> 'succeeded' GROUP BY 1 ORDER BY 2 DESC LIMIT 5")
        failures = cur.fetchall()
    throughput = n / float(span)
    for err, cnt in failures:
        print(f"  failed attempts: {cnt} x {err}")

    # Phase 2: signed webhooks through ingest at RATE/s; latency accepted -> run succeeded.
    iport = harness.free_port()
    ingest = harness.Proc([harness.bin("hookflow-ingest")], name="ingest", env={
        "HOOKFLOW_KAFKA_BROKERS": broker.bootstrap, "HOOKFLOW_SECRETS_DIR": secrets,
        "HOOKFLOW_INGEST_LISTEN": f"127.0.0.1:{iport}", "HOOKFLOW_LOG_LEVEL": "warn",
        "HOOKFLOW_INGEST_THREADS": "1"})
    harness.wait_http(f"http://127.0.0.1:{iport}/readyz", proc=ingest, ok=lambda s: s == 200)
    import http.client
    sent, errors, lock = [], [0], threading.Lock()
    threads_n = 8
    per_thread = RATE / threads_n
    stop_at = time.monotonic() + SECONDS

    def client(k):
        c = http.client.HTTPConnection("127.0.0.1", iport, timeout=10)
        i, t0 = 0, time.monotonic()
        while time.monotonic() < stop_at:
            target = t0 + i / per_thread
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            mid = f"lat-{k}-{i}-{uuid.uuid4().hex[:6]}"
            page = PAGES[(k + i) % len(PAGES)]
            delivery = {"object": "page", "entry": [{"id": page, "time": 1, "messaging": [
                {"sender": {"id": f"{k}-{i}"}, "recipient": {"id": page}, "timestamp": 1,
                 "message": {"mid": mid, "text": "latency probe"}}]}]}
            body, headers = signing.meta(SECRET, delivery)
            try:
                c.request("POST", "/api/integrations/webhooks/meta", body=body, headers=headers)
                r = c.getresponse()
                r.read()
                ok = r.status == 200
            except OSError:
                c = http.client.HTTPConnection("127.0.0.1", iport, timeout=10)
                ok = False
            with lock:
                if ok:
                    sent.append("meta:" + mid)
                else:
                    errors[0] += 1
            i += 1

    ts = [threading.Thread(target=client, args=(k,)) for k in range(threads_n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    achieved = len(sent) / SECONDS
    deadline = time.monotonic() + 120
    with conn.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute("SELECT count(*) FROM runs WHERE event_id = ANY(%s) AND status = 'succeeded'",
                        (sent,))
            if cur.fetchone()[0] >= len(sent):
                break
            time.sleep(0.25)
        cur.execute("SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY ms), "
                    "max(ms), count(*) FROM (SELECT extract(epoch from finished_at - "
                    "(trigger->>'received_at')::timestamptz) * 1000 AS ms FROM runs "
                    "WHERE event_id = ANY(%s) AND status = 'succeeded') x", (sent,))
        pct, mx, done = cur.fetchone()
        cur.execute("SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY a), "
                    "percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY b), "
                    "percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY c) FROM ("
                    "SELECT extract(epoch from created_at - (trigger->>'received_at')::timestamptz) * 1000 a, "
                    "extract(epoch from started_at - created_at) * 1000 b, "
                    "extract(epoch from finished_at - started_at) * 1000 c FROM runs "
                    "WHERE event_id = ANY(%s) AND status = 'succeeded') x", (sent,))
        stage = cur.fetchone()
    rss = 0
    with open(f"/proc/{worker.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                rss = int(line.split()[1]) // 1024
    print()
    print(f"== engine benchmark ({os.cpu_count()} cores, PostgreSQL fsync={fsync}, fake: nginx)")
    print(f"phase 1: {n} runs from events already in Kafka, {bad} not succeeded, {attempts} attempts")
    print(f"  one worker: {throughput:.0f} runs/s (first run created -> last run finished: {float(span):.1f} s; target >= 3000)")
    print(f"phase 2: {len(sent)} signed webhooks through ingest at {achieved:.0f}/s ({errors[0]} errors), {done} runs succeeded")
    print(f"  accepted -> run succeeded: p50 {pct[0]:.0f} ms  p90 {pct[1]:.0f} ms  p99 {pct[2]:.0f} ms  max {float(mx):.0f} ms (target p99 < 250 ms)")
    print(f"  stages p50/p99 ms: accepted->run created {stage[0][0]:.0f}/{stage[0][1]:.0f}, "
          f"created->started {stage[1][0]:.0f}/{stage[1][1]:.0f}, "
          f"started->finished {stage[2][0]:.0f}/{stage[2][1]:.0f}")
    print(f"  worker peak RSS: {rss} MB")
    ingest.stop()
    worker.stop()
    nginx.stop()
    broker.stop()
    conn.close()
    if os.environ.get("BENCH_PG_LOG_MS"):
        import shutil
        shutil.copy(os.path.join(pg.dir, "postgres.log"), "/tmp/bench-postgres.log")
    pg.cleanup()
    harness.cleanup_temp()


if __name__ == "__main__":
    main()
