"""Integration: metrics and logging review. The /metrics of hookflow-ingest, of an engine worker
and of `hookflow-engine serve` checked strictly against the Prometheus text format (our own
checker and python3-prometheus-client's parser) and against the families the
README documents; gauges that must come back to 0; JSON log lines and secrets; and
HOOKFLOW_LOG_LEVEL validation (README "Configuration", "Ingest HTTP", "Engine workers")."""

import json
import math
import os
import re
import socket
import subprocess
import time
import uuid

import pytest

import harness
import signing

# Debian's python3-prometheus-client (deploy/local/install-deps.sh installs it).
from prometheus_client.parser import text_string_to_metric_families

# ---------------------------------------------------------------------------------------------
# A strict reader of the text exposition format 0.0.4

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
SAMPLE = re.compile(rf"^({NAME})(\{{(.*)\}})? (\S+)$")


def parse_labels(text):
    """'a="x",b="y\\"z"' -> (("a","x"),("b","y\"z")); raises on any syntax error."""
    out = []
    i = 0
    while i < len(text):
        m = re.match(rf"({LABEL})=\"", text[i:])
        assert m, f"bad label name at {text[i:]!r}"
        name = m.group(1)
        i += m.end()
        value = []
        while True:
            assert i < len(text), f"unterminated label value in {text!r}"
            c = text[i]
            if c == "\\":
                nxt = text[i + 1]
                assert nxt in "\\\"n", f"bad escape \\{nxt} in {text!r}"
                value.append({"\\": "\\", '"': '"', "n": "\n"}[nxt])
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                assert c != "\n"
                value.append(c)
                i += 1
        out.append((name, "".join(value)))
        if i < len(text):
            assert text[i] == ",", f"expected ',' at {text[i:]!r}"
            i += 1
    names = [n for n, _ in out]
    assert len(names) == len(set(names)), f"repeated label name in {text!r}"
    return tuple(out)


def parse_value(v):
    if v in ("+Inf", "-Inf", "NaN"):
        return float(v.replace("Inf", "inf").replace("NaN", "nan"))
    assert re.fullmatch(r"-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?", v), f"bad number {v!r}"
    return float(v)


def strict_parse(text):
    """Checks the exposition strictly; returns {family: {"type", "help", "samples": [(name,
    labels dict, value)]}}."""
    assert text.endswith("\n"), "exposition does not end with a newline"
    families = {}
    order = []
    current = None
    seen_series = set()
    for line in text.split("\n")[:-1]:
        assert line, "empty line in the exposition"
        if line.startswith("# HELP "):
            name = line[7:].split(" ", 1)[0]
            assert re.fullmatch(NAME, name), line
            assert name not in families or "help" not in families[name], f"second HELP: {line}"
            fam = families.setdefault(name, {"samples": []})
            assert not fam["samples"], f"HELP after samples of {name}"
            fam["help"] = line[7 + len(name) + 1:]
            if name not in order:
                order.append(name)
            current = name
            continue
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            assert len(parts) == 4, line
            name, typ = parts[2], parts[3]
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped"), line
            fam = families.setdefault(name, {"samples": []})
            assert "type" not in fam, f"second TYPE: {line}"
            assert not fam["samples"], f"TYPE after samples of {name}"
            fam["type"] = typ
            if name not in order:
                order.append(name)
            current = name
            continue
        assert not line.startswith("#"), f"unexpected comment {line!r}"
        m = SAMPLE.match(line)
        assert m, f"bad sample line {line!r}"
        sname, labels, value = m.group(1), parse_labels(m.group(3) or ""), parse_value(m.group(4))
        assert current is not None, f"sample before any TYPE: {line}"
        fam = families[current]
        typ = fam.get("type")
        assert typ, f"sample of {current} without TYPE"
        if typ == "histogram":
            assert sname in (current + "_bucket", current + "_sum", current + "_count"), \
                f"{sname} in histogram family {current}"
        else:
            assert sname == current, f"sample {sname} inside family {current} (not contiguous?)"
        key = (sname, tuple(sorted(labels)))
        assert key not in seen_series, f"duplicate series {line}"
        seen_series.add(key)
        fam["samples"].append((sname, dict(labels), value))
    for name, fam in families.items():
        assert "help" in fam and "type" in fam, f"{name} lacks HELP or TYPE"
        if fam["type"] == "counter":
            assert name.endswith("_total"), f"counter {name} is not named *_total"
            for _, _, v in fam["samples"]:
                assert v >= 0 and not math.isnan(v), f"counter {name} = {v}"
        if fam["type"] == "histogram":
            check_histogram(name, fam["samples"])
    return families


def check_histogram(name, samples):
    series = {}
    for sname, labels, value in samples:
        base = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        s = series.setdefault(base, {"buckets": [], "sum": None, "count": None})
        if sname.endswith("_bucket"):
            assert "le" in labels, f"{sname} without le"
            s["buckets"].append((parse_value(labels["le"]), value))
        elif sname.endswith("_sum"):
            s["sum"] = value
        else:
            s["count"] = value
    for base, s in series.items():
        assert s["sum"] is not None and s["count"] is not None, f"{name}{base}: no _sum/_count"
        les = [le for le, _ in s["buckets"]]
        assert les == sorted(les) and len(set(les)) == len(les), f"{name}{base}: le order {les}"
        assert les and les[-1] == math.inf, f"{name}{base}: no +Inf bucket"
        counts = [c for _, c in s["buckets"]]
        assert counts == sorted(counts), f"{name}{base}: buckets not cumulative {counts}"
        assert counts[-1] == s["count"], f"{name}{base}: +Inf {counts[-1]} != count {s['count']}"


def prom_parse(text):
    """python3-prometheus-client's parser must take the text too (it is what many tools use)."""
    if text_string_to_metric_families is None:
        return None
    return {f.name: f for f in text_string_to_metric_families(text)}


def value_of(families, family, sample=None, **labels):
    for sname, ls, v in families[family]["samples"]:
        if sname == (sample or family) and all(ls.get(k) == val for k, val in labels.items()):
            return v
    return None


def scrape(url):
    status, headers, body = harness.http("GET", url)
    assert status == 200, body
    assert headers.get("content-type", "").startswith("text/plain"), headers
    text = body.decode("utf-8")
    return text, strict_parse(text)


def assert_json_log(proc):
    """Every line of proc's stderr is one JSON object with ts, level, service, event; returns
    them."""
    out = []
    with open(proc.log_path, "rb") as f:
        raw = f.read()
    for n, line in enumerate(raw.split(b"\n")[:-1], 1):
        if line.startswith(b"==") or not line.strip():  # a sanitizer's report is its own business
            continue
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise AssertionError(f"{proc.name} log line {n} is not JSON ({e}): {line[:200]!r}")
        assert isinstance(obj, dict), line
        for key in ("ts", "level", "service", "event"):
            assert isinstance(obj.get(key), str), f"{key} missing in {line[:200]!r}"
        assert obj["level"] in ("debug", "info", "warn", "error"), line
        out.append(obj)
    return out


# ---------------------------------------------------------------------------------------------
# Ingest

INGEST_SECRETS = {
    "xero/webhook_key": "xero-key-4bV9qLr2YtZ7wS1mN8eD",
    "quickbooks/verifier_token": "qbo-verifier-7Hq2LmZ9rT4k",
    "hubspot/client_secret": "hubspot-secret-Pq8sW2eR5tY1",
    "klaviyo/webhook_secret": "klaviyo-secret-Jk3mN6bV9cX2",
    "klaviyo/flow_secret": "klaviyo-flow-Uu7iO0pA3sD6",
    "twilio/auth_token": "twilio-token-Gh5jK8lZ1xC4",
    "meta/app_secret": "meta-secret-Qw2eR4tY6uI8",
    "meta/verify_token": "meta-verify-Zx9cV7bN5mL3",
}
PUBLIC = "https://hooks.example.com"


@pytest.fixture(scope="module")
def broker():
    b = harness.DevBroker(brokers=1, partitions=2).start()
    yield b
    b.stop()


def start_ingest(broker, name="ingest", **env):
    secrets_dir = harness.temp_dir("secrets")
    harness.write_secrets(secrets_dir, INGEST_SECRETS)
    port = harness.free_port()
    full = {"HOOKFLOW_KAFKA_BROKERS": broker.bootstrap, "HOOKFLOW_SECRETS_DIR": secrets_dir,
            "HOOKFLOW_INGEST_LISTEN": f"127.0.0.1:{port}", "HOOKFLOW_PUBLIC_BASE_URL": PUBLIC,
            "HOOKFLOW_INGEST_THREADS": "2", "HOOKFLOW_LOG_LEVEL": "debug"}
    full.update(env)
    p = harness.Proc([harness.bin("hookflow-ingest")], env=full, name=name)
    p.base = f"http://127.0.0.1:{port}"
    p.port = port
    harness.wait_http(p.base + "/healthz", proc=p)
    harness.wait_http(p.base + "/readyz", proc=p, ok=lambda s: s == 200, timeout=30)
    return p


def post(p, provider, body, headers):
    return harness.http("POST", f"{p.base}/api/integrations/webhooks/{provider}", body=body,
                        headers=headers)


def meta_delivery(n=1, text="hi"):
    tag = uuid.uuid4().hex[:8]
    return {"object": "page", "entry": [{"id": "104877", "time": 1700000000000, "messaging": [
        {"sender": {"id": f"psid{i}"}, "recipient": {"id": "104877"},
         "timestamp": 1700000000000 + i, "message": {"mid": f"m_{tag}_{i}", "text": text}}
        for i in range(n)]}]}


def traffic(p):
    """Accepted deliveries, rejections of several kinds; returns every signature header value
    sent (valid or not)."""
    sigs = []
    for i in range(3):
        body, h = signing.meta(INGEST_SECRETS["meta/app_secret"], meta_delivery(2))
        sigs.append(h["X-Hub-Signature-256"])
        status, _, resp = post(p, "meta", body, h)
        assert status == 200, resp
    body, h = signing.meta("not-the-secret", meta_delivery(1, text='quote " and \\ and \n'))
    sigs.append(h["X-Hub-Signature-256"])
    assert post(p, "meta", body, h)[0] == 401
    body, h = signing.xero("not-the-key", {"events": []})
    sigs.append(h["x-xero-signature"])
    assert post(p, "xero", body, h)[0] == 401
    assert post(p, "nope", b"{}", {"Content-Type": "application/json"})[0] == 404
    assert harness.http("PUT", f"{p.base}/api/integrations/webhooks/meta", body=b"x")[0] == 405
    return sigs


INGEST_FAMILIES = {
    "hookflow_ingest_deliveries_received_total": "counter",
    "hookflow_ingest_deliveries_accepted_total": "counter",
    "hookflow_ingest_deliveries_rejected_total": "counter",
    "hookflow_ingest_events_total": "counter",
    "hookflow_ingest_produce_latency_seconds": "histogram",
    "hookflow_ingest_in_flight": "gauge",
    "hookflow_ingest_kafka_queue_depth": "gauge",
    "hookflow_ingest_connections": "gauge",
}


# The ingest exposition is strictly valid and has every family the README lists, with counts
# that match the traffic.
def test_ingest_metrics_are_strict_and_complete(broker, spawn):
    p = start_ingest(broker)
    traffic(p)
    text, fams = scrape(p.base + "/metrics")
    for name, typ in INGEST_FAMILIES.items():
        assert name in fams, f"{name} (README) missing from ingest /metrics"
        assert fams[name]["type"] == typ, (name, fams[name]["type"])
    # 3 accepted, 1 bad signature, 1 PUT (405)
    assert value_of(fams, "hookflow_ingest_deliveries_received_total", provider="meta") == 5
    assert value_of(fams, "hookflow_ingest_deliveries_accepted_total", provider="meta") == 3
    assert value_of(fams, "hookflow_ingest_events_total", provider="meta") == 6
    assert value_of(fams, "hookflow_ingest_deliveries_rejected_total", provider="meta",
                    reason="bad_signature") == 1
    assert value_of(fams, "hookflow_ingest_deliveries_rejected_total", provider="xero",
                    reason="bad_signature") == 1
    assert value_of(fams, "hookflow_ingest_produce_latency_seconds",
                    "hookflow_ingest_produce_latency_seconds_count", provider="meta") == 3
    prom = prom_parse(text)
    if prom is not None:
        assert "hookflow_ingest_produce_latency_seconds" in prom
        # the client strips _total from counter family names
        assert "hookflow_ingest_deliveries_received" in prom
    assert p.stop() == 0


def test_ingest_metrics_parse_with_prometheus_client(broker, spawn):
    p = start_ingest(broker, name="ingest-prom")
    traffic(p)
    text = harness.http("GET", p.base + "/metrics")[2].decode()
    fams = prom_parse(text)
    types = {n: f.type for n, f in fams.items()}
    assert types["hookflow_ingest_deliveries_rejected"] == "counter"
    assert types["hookflow_ingest_produce_latency_seconds"] == "histogram"
    assert p.stop() == 0


# In-flight gauges and the open-connection gauge come back to 0 (1: the scrape itself) after
# deliveries, idle connections, garbage requests, oversized headers and half-sent requests.
def test_ingest_gauges_return_to_zero(broker, spawn):
    p = start_ingest(broker, name="ingest-gauges")
    traffic(p)
    socks = []
    for payload in (b"", b"GARBAGE\r\n\r\n", b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 70000,
                    b"POST /api/integrations/webhooks/meta HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 100\r\n\r\n{", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"):
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        if payload:
            try:
                s.sendall(payload)
            except OSError:
                pass
        socks.append(s)
    time.sleep(0.5)
    for s in socks:
        s.close()

    def settled():
        _, fams = scrape(p.base + "/metrics")
        got = {n: value_of(fams, n) for n in ("hookflow_ingest_in_flight",
                                              "hookflow_ingest_in_flight_bytes",
                                              "hookflow_ingest_connections")}
        return got if got == {"hookflow_ingest_in_flight": 0,
                              "hookflow_ingest_in_flight_bytes": 0,
                              "hookflow_ingest_connections": 1} else None
    try:
        harness.wait_until(settled, timeout=20, what="ingest gauges back to 0")
    except Exception:
        _, fams = scrape(p.base + "/metrics")
        raise AssertionError("gauges did not settle: " + str(
            {n: value_of(fams, n) for n in ("hookflow_ingest_in_flight",
                                            "hookflow_ingest_in_flight_bytes",
                                            "hookflow_ingest_connections")}))
    assert p.stop() == 0


# At debug level every ingest log line is JSON and none holds a secret or a signature sent.
def test_ingest_logs_are_json_without_secrets_or_signatures(broker, spawn):
    p = start_ingest(broker, name="ingest-logs")
    sigs = traffic(p)
    # Odd bytes in what a client controls and the log may show (request id is checked, path).
    harness.http("POST", f"{p.base}/api/integrations/webhooks/meta%22%0a%ff",
                 body=b"{}", headers={"X-Request-Id": 'a"b\\c'})
    assert p.stop() == 0
    lines = assert_json_log(p)
    assert any(line["event"] == "webhook.rejected" for line in lines)
    log = open(p.log_path, encoding="utf-8", errors="replace").read()
    for path, value in INGEST_SECRETS.items():
        assert value not in log, f"{path} reached the log"
    for sig in sigs:
        bare = sig[len("sha256="):] if sig.startswith("sha256=") else sig
        assert bare not in log, f"a signature reached the log: {sig}"


# ---------------------------------------------------------------------------------------------
# HOOKFLOW_LOG_LEVEL

@pytest.mark.parametrize("args,env", [
    (["hookflow-ingest"], {}),
    (["hookflow-engine", "work"], {"HOOKFLOW_DATABASE_URL": "postgresql://x/y"}),
    (["hookflow-engine", "serve"], {"HOOKFLOW_DATABASE_URL": "postgresql://x/y"}),
    (["hookflow-devbroker"], {}),
])
def test_invalid_log_level_is_one_clear_line_and_non_zero_exit(args, env):
    full = dict(os.environ, HOOKFLOW_LOG_LEVEL="verbose", **env)
    out = subprocess.run([harness.bin(args[0]), *args[1:]], capture_output=True, text=True,
                         timeout=60, env=full)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "HOOKFLOW_LOG_LEVEL" in lines[0] and "verbose" in lines[0], lines[0]
    assert "debug|info|warn|error" in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------
# Engine worker and API

WORKER_FAMILIES = {
    "hookflow_engine_consumer_lag": "gauge",
    "hookflow_engine_runs": "gauge",
    "hookflow_engine_runs_finished_total": "counter",
    "hookflow_engine_node_seconds": "histogram",
    "hookflow_engine_leases_held": "gauge",
    "hookflow_engine_calls_in_flight": "gauge",
    "hookflow_engine_runs_refused_by_database_total": "counter",
    "hookflow_engine_workflow_skipped_total": "counter",
}


@pytest.fixture(scope="module")
def engine(postgres):
    from enginestack import Stack
    s = Stack(postgres)
    s.start_worker("worker-metrics", HOOKFLOW_LOG_LEVEL="debug")
    yield s
    s.stop()


# A worker's exposition is strictly valid, has the README's families, and its gauges of work
# in progress come back to 0 when the runs are done.
def test_worker_metrics_are_strict_and_complete(engine):
    w = engine.workers[0]
    events = [engine.send("pickup please"), engine.send("nothing to do here")]
    engine.wait_run(events[0])

    def lag_reported():
        _, fams = scrape(w.ops + "/metrics")
        return fams if "hookflow_engine_consumer_lag" in fams else None
    harness.wait_until(lag_reported, timeout=40, what="consumer lag in the worker's /metrics")

    def idle():
        _, fams = scrape(w.ops + "/metrics")
        return fams if (value_of(fams, "hookflow_engine_leases_held") == 0 and
                        value_of(fams, "hookflow_engine_calls_in_flight") == 0) else None
    fams = harness.wait_until(idle, timeout=30, what="leases and calls back to 0")
    text, fams = scrape(w.ops + "/metrics")
    for name, typ in WORKER_FAMILIES.items():
        assert name in fams, f"{name} (README) missing from the worker's /metrics"
        assert fams[name]["type"] == typ, (name, fams[name]["type"])
    assert value_of(fams, "hookflow_engine_runs_finished_total", status="succeeded") >= 1
    assert value_of(fams, "hookflow_engine_node_seconds", "hookflow_engine_node_seconds_count",
                    connector="twilio", action="send_message") >= 1
    for _, labels, _ in fams["hookflow_engine_consumer_lag"]["samples"]:
        assert set(labels) == {"topic", "partition"}, labels
    prom_parse(text)


# Every worker log line is JSON; no connection token or client secret is in it.
def test_worker_logs_are_json_without_secrets(engine):
    from enginestack import SECRETS
    w = engine.workers[0]
    engine.wait_run(engine.send("pickup for the log check"))
    lines = assert_json_log(w)
    assert any(line["event"] == "worker.started" for line in lines)
    log = open(w.log_path, encoding="utf-8", errors="replace").read()
    for path, value in SECRETS.items():
        if len(value) >= 8:
            assert value not in log, f"{path} reached the worker log"
    for token in ("twilio-auth-token", "xero-access-1", "xero-refresh-1", "hubspot-access-1",
                  "meta-page-token"):
        assert token not in log, f"connection token {token} reached the worker log"


@pytest.fixture(scope="module")
def api(postgres):
    from test_api_connections import ApiStack, base_config
    s = ApiStack(postgres, base_config())
    yield s
    s.proc.stop()
    s.fakes.stop()


# serve's exposition is strictly valid after ordinary, unauthorised, unmatched and odd-method
# requests; requests are counted by route, method and status; a route pattern is the label,
# never a raw path (no series per id).
def test_api_metrics_are_strict(api):
    token = api.admin()
    for _ in range(2):
        assert harness.http("GET", api.base + "/api/workflows",
                            headers={"Authorization": f"Bearer {token}"})[0] == 200
    harness.http("GET", api.base + "/api/workflows")
    for i in range(3):
        harness.http("GET", api.base + f"/api/workflows/{uuid.uuid4()}",
                     headers={"Authorization": f"Bearer {token}"})
        harness.http("GET", api.base + f"/nowhere/{i}\"x")
    harness.http("PATCH", api.base + "/api/workflows")
    text, fams = scrape(api.base + "/metrics")
    assert fams["hookflow_api_requests_total"]["type"] == "counter"
    assert fams["hookflow_api_request_duration_seconds"]["type"] == "histogram"
    assert value_of(fams, "hookflow_api_requests_total", route="/api/workflows", method="GET",
                    status="200") == 2
    routes = {ls["route"] for _, ls, _ in fams["hookflow_api_requests_total"]["samples"]}
    assert not any(re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", r) or "nowhere" in r for r in routes), \
        routes
    prom_parse(text)


# serve's log: JSON lines, and neither the bearer token nor the JWT key in them.
def test_api_logs_are_json_without_tokens(api):
    from test_api_connections import JWT_KEY
    token = api.admin()
    harness.http("GET", api.base + "/api/workflows", headers={"Authorization": f"Bearer {token}"})
    harness.http("GET", api.base + "/api/workflows", headers={"Authorization": "Bearer x.y.z"})
    time.sleep(0.3)
    assert_json_log(api.proc)
    log = open(api.proc.log_path, encoding="utf-8", errors="replace").read()
    assert token not in log and token.split(".")[2] not in log
    assert JWT_KEY.decode() not in log


# Topic names of legal Kafka length (up to 249 bytes, e.g. from a long HOOKFLOW_TOPIC_PREFIX)
# keep whole consumer-lag labels. They were built in a 256-byte buffer and cut mid-value, which
# made the worker's whole /metrics unparsable (Prometheus drops the scrape, the HPA loses
# hookflow_engine_consumer_lag).
def test_worker_lag_labels_survive_long_topic_names(engine):
    prefix = "p" * 215  # topics "<prefix>.webhooks.marketing-automation": 245 bytes, legal
    port = harness.free_port()
    env = engine.worker_env(HOOKFLOW_WORKER_LISTEN=f"127.0.0.1:{port}",
                            HOOKFLOW_TOPIC_PREFIX=prefix)
    w = harness.Proc([harness.bin("hookflow-engine"), "work"], env=env, name="worker-longtopic")
    try:
        ops = f"http://127.0.0.1:{port}"
        harness.wait_http(ops + "/healthz", proc=w)
        for cat in ("accounting", "marketing-automation", "messaging"):
            engine.broker.produce_sync(f"{prefix}.webhooks.{cat}", b"not an envelope", key=b"k")

        def lag_line():
            text = harness.http("GET", ops + "/metrics")[2].decode()
            return text if "hookflow_engine_consumer_lag{" in text else None
        text = harness.wait_until(lag_line, timeout=60, what="consumer lag of the long topics")
        strict_parse(text)
        prom_parse(text)
    finally:
        w.stop()
