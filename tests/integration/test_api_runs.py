"""The runs API of `hookflow-engine serve` against real PostgreSQL: listing a workflow's runs
(status and time filters, keyset pagination), one run with every node attempt, and retrying a
failed or cancelled run from the start or from the failed node on the workflow's current version,
including a real worker (`hookflow-engine work`) picking the retried run up and finishing it.

Runs and attempts are inserted with SQL (the intake path is test_engine.py's business), so every
state a run can be in is set up exactly. The stack (PostgreSQL, fakes, serve, JWTs) is
test_api_connections.ApiStack.
"""

import datetime
import json
import os
import urllib.parse
import uuid

import pytest

import harness
from test_api_connections import TWILIO_SID, TWILIO_TOKEN, ApiStack, base_config

SMS = {"to": "+14155550100", "from": "+14155559876", "body": "Your order is ready"}
RETRY = {"max_attempts": 2, "initial_ms": 100, "max_ms": 200}


def sms(node_id):
    return {"id": node_id, "type": "action", "connector": "twilio", "action": "send_message",
            "params": dict(SMS, body=f"{SMS['body']} ({node_id})"), "retry": RETRY,
            "timeout_ms": 5000}


def workflow(name, nodes, edges):
    return {"name": name, "enabled": True, "definition": {
        "name": name, "trigger": {"connector": "meta", "event": "message"},
        "nodes": nodes, "edges": edges}}


TWO_STEP = workflow("Two step", [sms("first"), sms("second")],
                    [{"from": "first", "to": "second"}])
LISTED = workflow("Listed", [sms("only")], [])
VERSIONED_1 = workflow("Versioned", [sms("a"), sms("b")], [{"from": "a", "to": "b"}])
VERSIONED_2 = workflow("Versioned", [sms("a"), sms("c")], [{"from": "a", "to": "c"}])
OTHER = workflow("Other tenant's", [sms("x")], [])

TWILIO_CONN = {"connector": "twilio", "account": TWILIO_SID, "status": "active", "scopes": [],
               "access_token": TWILIO_TOKEN}


@pytest.fixture(scope="module")
def stack(postgres):
    s = ApiStack(postgres, base_config(workflows_prod=[TWO_STEP, LISTED, VERSIONED_1],
                                       workflows_sandbox=[OTHER],
                                       connections_prod=[TWILIO_CONN]))
    s.wf = dict(s.query("SELECT name, id::text FROM workflows"))
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def clean(stack):
    stack.query("DELETE FROM runs")
    stack.query("DELETE FROM audit_log WHERE actor <> 'apply'")
    stack.fakes.reset()
    yield


_seq = [0]


def insert_run(stack, workflow, status, created_at=None, error=None, context=None, version=1,
               tenant=None, event_id=None):
    """A run row as a worker would have left it; returns its id."""
    _seq[0] += 1
    event_id = event_id or f"meta:m_{uuid.uuid4().hex}"
    created_at = created_at or datetime.datetime.now(datetime.timezone.utc)
    terminal = status in ("succeeded", "failed", "cancelled")
    trigger = {"id": event_id, "provider": "meta", "event": "message", "account": "104877",
               "occurred_at": "2026-03-18T09:41:27Z", "received_at": "2026-03-18T09:41:28Z",
               "payload": {"message": {"mid": event_id, "text": "pickup 'please'"}}}
    rows = stack.query(
        "INSERT INTO runs (tenant_id, workflow_id, workflow_version, event_id, ordering_key,"
        " ordering_seq, status, trigger, context, attempt, error, created_at, started_at,"
        " finished_at) VALUES (%s, %s, %s, %s, 'meta:104877', %s, %s, %s, %s, 1, %s, %s, %s, %s)"
        " RETURNING id::text",
        tenant or stack.prod, stack.wf[workflow], version, event_id, _seq[0], status,
        json.dumps(trigger), json.dumps(context or {}), error, created_at,
        created_at if status != "pending" else None, created_at if terminal else None)
    return rows[0][0]


def insert_attempt(stack, run_id, node_id, attempt, status, output=None, error=None,
                   http_status=None):
    stack.query("INSERT INTO node_attempts (run_id, node_id, attempt, status, input, output,"
                " http_status, duration_ms, error, idempotency_key, finished_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, 12, %s, NULL, now())",
                run_id, node_id, attempt, status, json.dumps({"to": SMS["to"]}),
                None if output is None else json.dumps(output), http_status, error)


def runs_path(stack, workflow, **params):
    q = urllib.parse.urlencode(params)
    return f"/api/workflows/{stack.wf[workflow]}/runs" + ("?" + q if q else "")


def listing(stack, workflow, token=None, **params):
    status, _, out = stack.call("GET", runs_path(stack, workflow, **params),
                                token=token or stack.admin())
    return status, out


def failed_two_step(stack, workflow="Two step", first="first", second="second", version=1):
    """A run whose first node succeeded and whose second failed twice (its retries spent)."""
    rid = insert_run(stack, workflow, "failed", version=version,
                     error=f"node {second}: gave up after 2 attempts: HTTP 503",
                     context={"nodes": {first: {"status": "succeeded",
                                                "output": {"sid": "SMold"}}}})
    insert_attempt(stack, rid, first, 1, "succeeded", output={"sid": "SMold"}, http_status=201)
    insert_attempt(stack, rid, second, 1, "failed", error="HTTP 503: down", http_status=503)
    insert_attempt(stack, rid, second, 2, "failed", error="HTTP 503: down", http_status=503)
    return rid


# ---- listing ---------------------------------------------------------------------------------

def test_list_filters_and_keyset_pagination(stack):
    base = datetime.datetime(2026, 3, 18, 12, 0, 0, 123456, tzinfo=datetime.timezone.utc)
    statuses = ["succeeded", "failed", "failed", "cancelled", "running", "pending", "waiting",
                "succeeded"]
    ids = []
    for i, st in enumerate(statuses):
        # Runs 2 and 3 share a timestamp (one intake batch): the id breaks the tie.
        at = base - datetime.timedelta(minutes=i if i != 3 else 2)
        ids.append((at, insert_run(stack, "Listed", st, created_at=at,
                                   error="boom" if st == "failed" else None), st))
    expected = [rid for _, rid, _ in sorted(ids, key=lambda x: (x[0], x[1]), reverse=True)]
    insert_run(stack, "Two step", "failed")  # another workflow's run is not listed

    status, out = listing(stack, "Listed")
    assert status == 200, out
    assert [r["id"] for r in out["runs"]] == expected
    assert out["next_cursor"] is None and out["limit"] == 50
    first = out["runs"][0]
    assert set(first) >= {"id", "status", "event_id", "workflow_version", "created_at",
                          "started_at", "finished_at", "error", "attempt", "generation"}
    assert first["created_at"] == "2026-03-18T12:00:00.123456Z"
    assert first["workflow_version"] == 1 and first["attempt"] == 1
    assert "trigger" not in first and "context" not in first

    # Page by 3: every run exactly once, in order.
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        status, out = listing(stack, "Listed", **params)
        assert status == 200, out
        seen += [r["id"] for r in out["runs"]]
        pages += 1
        cursor = out["next_cursor"]
        if not cursor:
            break
    assert seen == expected and pages == 3

    status, out = listing(stack, "Listed", status="failed")
    assert sorted(r["id"] for r in out["runs"]) == sorted(r for _, r, s in ids if s == "failed")
    status, out = listing(stack, "Listed", status="failed, cancelled,failed")
    assert {r["status"] for r in out["runs"]} == {"failed", "cancelled"}
    assert len(out["runs"]) == 3
    status, out = listing(stack, "Listed", status="failed", limit=1)
    assert len(out["runs"]) == 1 and out["next_cursor"]
    status, out2 = listing(stack, "Listed", status="failed", limit=1, cursor=out["next_cursor"])
    assert len(out2["runs"]) == 1 and out2["runs"][0]["id"] != out["runs"][0]["id"]
    assert out2["next_cursor"] is None

    # from is inclusive, to exclusive, on created_at; any RFC 3339 offset.
    status, out = listing(stack, "Listed", **{"from": "2026-03-18T11:57:00.123456Z",
                                               "to": "2026-03-18T14:00:00.123+02:00"})
    assert status == 200, out
    got = {r["id"] for r in out["runs"]}
    want = {rid for at, rid, _ in ids
            if base - datetime.timedelta(minutes=3) <= at < base}
    assert got == want and len(got) == 3

    for params, name in (({"limit": 0}, "limit"), ({"limit": 101}, "limit"),
                         ({"limit": "ten"}, "limit"), ({"limit": "1e2"}, "limit"),
                         ({"status": "done"}, "status"), ({"status": ""}, "status"),
                         ({"status": "failed,"}, "status"),
                         ({"status": "failed' OR '1'='1"}, "status"),
                         ({"from": "yesterday"}, "from"), ({"to": "2026-13-01T00:00:00Z"}, "to"),
                         ({"from": "2026-03-19T00:00:00Z", "to": "2026-03-18T00:00:00Z"}, "from"),
                         ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"), ({"cursor": "!!!"}, "cursor"),
                         ({"cursor": "x" * 500}, "cursor"),
                         ({"limit": "99999999999999999999999"}, "limit")):
        status, out = listing(stack, "Listed", **params)
        assert status == 400, (params, out)
        assert out["error"] == "invalid_parameter" and out["detail"].startswith(name), out

    # Another tenant's workflow, an unknown one, a malformed id: 404.
    status, out = listing(stack, "Other tenant's")
    assert status == 404, out
    for wid in (str(uuid.uuid4()), "not-a-uuid", "1' OR '1'='1"):
        status, _, out = stack.call("GET", f"/api/workflows/{urllib.parse.quote(wid)}/runs",
                                    token=stack.admin())
        assert status == 404, (wid, out)
    # The other tenant cannot list ours.
    status, out = listing(stack, "Listed", token=stack.sandbox_admin())
    assert status == 404


def test_get_run_with_every_attempt(stack):
    rid = failed_two_step(stack)
    status, _, run = stack.call("GET", f"/api/runs/{rid}", token=stack.admin())
    assert status == 200, run
    assert run["id"] == rid and run["status"] == "failed"
    assert run["workflow_id"] == stack.wf["Two step"] and run["workflow_name"] == "Two step"
    assert run["trigger"]["payload"]["message"]["text"] == "pickup 'please'"
    assert run["context"] == {"nodes": {"first": {"status": "succeeded",
                                                  "output": {"sid": "SMold"}}}}
    assert run["error"].startswith("node second")
    assert run["generation"] == 1 and run["retried_at"] is None
    att = run["attempts"]
    assert [(a["node_id"], a["attempt"], a["status"]) for a in att] == [
        ("first", 1, "succeeded"), ("second", 1, "failed"), ("second", 2, "failed")]
    for a in att:
        assert set(a) >= {"node_id", "attempt", "status", "input", "output", "http_status",
                          "duration_ms", "error", "idempotency_key", "started_at",
                          "finished_at", "generation"}
        assert a["input"] == {"to": SMS["to"]} and a["duration_ms"] == 12
    assert att[0]["output"] == {"sid": "SMold"} and att[0]["http_status"] == 201
    assert att[2]["error"] == "HTTP 503: down"

    for who in (stack.sandbox_admin(), stack.token("mia@prod.test"), None):
        status, _, out = stack.call("GET", f"/api/runs/{rid}", token=who)
        assert status in (404, 403, 401), out
    status, _, out = stack.call("GET", f"/api/runs/{rid}", token=stack.sandbox_admin())
    assert status == 404 and out["error"] == "not_found"
    for bad in (str(uuid.uuid4()), "nope", "%27%3B%20DROP%20TABLE%20runs%3B--"):
        status, _, out = stack.call("GET", f"/api/runs/{bad}", token=stack.admin())
        assert status == 404, (bad, out)


# ---- retry -----------------------------------------------------------------------------------

def retry(stack, rid, body=None, token=None, **kw):
    return stack.call("POST", f"/api/runs/{rid}/retry", body, token or stack.admin(), **kw)


def test_retry_rules(stack):
    for st in ("succeeded", "running", "pending", "waiting"):
        rid = insert_run(stack, "Listed", st)
        status, _, out = retry(stack, rid)
        assert status == 409 and out["error"] == "run_not_retryable", out
        assert st in out["detail"]
    rid = failed_two_step(stack)
    for body, code in (({"from": "middle"}, "invalid_field"), ({"from": 1}, "invalid_field"),
                       ({"from": "start", "force": True}, "unknown_field")):
        status, _, out = retry(stack, rid, body)
        assert status == 400 and out["error"] == code, (body, out)
    status, _, out = retry(stack, rid, b'{"from": "start"', headers={
        "Content-Type": "application/json"})
    assert status == 400 and out["error"] == "malformed_json"
    # Access: another tenant's run is 404; non-admins are refused; nothing changed.
    status, _, out = retry(stack, rid, token=stack.sandbox_admin())
    assert status == 404
    status, _, out = retry(stack, rid, token=stack.token("mia@prod.test"))
    assert status == 403
    status, _, out = stack.call("POST", f"/api/runs/{rid}/retry", {})
    assert status == 401
    assert stack.query("SELECT status, generation FROM runs WHERE id = %s", rid) == [
        ("failed", 1)]
    assert stack.audit() == []
    # A deleted workflow's runs can be read, not retried.
    rid2 = insert_run(stack, "Versioned", "cancelled")
    stack.query("UPDATE workflows SET deleted_at = now() WHERE id = %s", stack.wf["Versioned"])
    try:
        status, _, out = retry(stack, rid2)
        assert status == 409 and out["error"] == "workflow_deleted", out
        status, _, out = stack.call("GET", f"/api/runs/{rid2}", token=stack.admin())
        assert status == 200
    finally:
        stack.query("UPDATE workflows SET deleted_at = NULL WHERE id = %s",
                    stack.wf["Versioned"])


def test_retry_from_failed_node_keeps_succeeded_outputs(stack):
    rid = failed_two_step(stack)
    stack.query("UPDATE runs SET lease_owner = 'w1', lease_expires_at = now() - interval '1 h'"
                " WHERE id = %s", rid)
    status, _, out = retry(stack, rid)  # default: from the failed node
    assert status == 202, out
    assert out["id"] == rid and out["status"] == "pending" and out["generation"] == 2
    assert out["retry_from"] == "failed_node" and out["retried_by"] == "alice@prod.test"
    assert out["error"] is None and out["finished_at"] is None and out["started_at"] is None
    row = stack.query("SELECT status, error, lease_owner, lease_expires_at, next_run_at <= now(),"
                      " now() - next_run_at < interval '1 minute', workflow_version,"
                      " context::text, finished_at FROM runs WHERE id = %s", rid)[0]
    assert row[:7] == ("pending", None, None, None, True, True, 1)
    assert json.loads(row[7]) == {"nodes": {"first": {"status": "succeeded",
                                                      "output": {"sid": "SMold"}}}}
    assert row[8] is None
    # The executor builds on the attempts left in node_attempts: only the succeeded one.
    assert stack.query("SELECT node_id, attempt, status FROM node_attempts WHERE run_id = %s",
                       rid) == [("first", 1, "succeeded")]
    assert stack.query("SELECT node_id, attempt, status, generation FROM node_attempt_history"
                       " WHERE run_id = %s ORDER BY id", rid) == [
        ("second", 1, "failed", 1), ("second", 2, "failed", 1)]
    audit = stack.audit("run.retried")
    assert len(audit) == 1
    tenant, actor, _, subject_type, subject_id, detail = audit[0]
    detail = json.loads(detail)
    assert (tenant, actor, subject_type, subject_id) == (stack.prod, "alice@prod.test", "run",
                                                         rid)
    assert detail["from"] == "failed_node" and detail["failed_node"] == "second"
    assert detail["previous_status"] == "failed" and detail["generation"] == 2
    assert detail["attempts_superseded"] == 2
    # The run's page shows both generations.
    status, _, run = stack.call("GET", f"/api/runs/{rid}", token=stack.admin())
    assert [(a["node_id"], a["attempt"], a["generation"], a["current"]) for a in run["attempts"]] \
        == [("first", 1, 1, True), ("second", 1, 1, False), ("second", 2, 1, False)]
    assert run["attempts"][0]["carried_over"] is True
    # It is pending now: a second retry is refused.
    status, _, out = retry(stack, rid)
    assert status == 409
    # Generation 2 fails at the second node again; a retry from the start files every attempt
    # under the generation that made it: the kept one under 1, not under 2.
    insert_attempt(stack, rid, "second", 1, "failed", error="HTTP 503: down", http_status=503)
    stack.query("UPDATE runs SET status = 'failed', finished_at = now() WHERE id = %s", rid)
    status, _, out = retry(stack, rid, {"from": "start"})
    assert status == 202 and out["generation"] == 3, out
    assert stack.query("SELECT node_id, attempt, generation FROM node_attempt_history"
                       " WHERE run_id = %s ORDER BY id", rid) == [
        ("first", 1, 1), ("second", 1, 1), ("second", 2, 1), ("second", 1, 2)]
    status, _, run = stack.call("GET", f"/api/runs/{rid}", token=stack.admin())
    assert [(a["node_id"], a["generation"], a["current"], a["carried_over"])
            for a in run["attempts"]] == [("first", 1, False, False), ("second", 1, False, False),
                                          ("second", 1, False, False), ("second", 2, False, False)]


def test_retry_on_the_current_version(stack):
    rid_b = failed_two_step(stack, "Versioned", "a", "b")
    rid_a = insert_run(stack, "Versioned", "failed", error="node a: HTTP 400")
    insert_attempt(stack, rid_a, "a", 1, "failed", error="HTTP 400: bad To", http_status=400)
    cfg = base_config(workflows_prod=[TWO_STEP, LISTED, VERSIONED_2],
                      workflows_sandbox=[OTHER], connections_prod=[TWILIO_CONN])
    stack.apply(cfg)
    try:
        assert stack.query("SELECT current_version FROM workflows WHERE id = %s",
                           stack.wf["Versioned"]) == [(2,)]
        # Node b is gone in version 2: retrying from it cannot work.
        status, _, out = retry(stack, rid_b, {"from": "failed_node"})
        assert status == 409 and out["error"] == "failed_node_not_in_current_version", out
        assert out["detail"] == ('node "b" failed in version 1, but version 2 (the workflow\'s '
                                 'current version, which a retry runs) has no node with that id: '
                                 'retry from the start instead')
        assert stack.query("SELECT status, workflow_version FROM runs WHERE id = %s",
                           rid_b) == [("failed", 1)]
        # From the start it runs on version 2 with a clean slate.
        status, _, out = retry(stack, rid_b, {"from": "start"})
        assert status == 202 and out["workflow_version"] == 2, out
        assert stack.query("SELECT context::text, generation, retry_from FROM runs "
                           "WHERE id = %s", rid_b) == [("{}", 2, "start")]
        assert stack.query("SELECT count(*) FROM node_attempts WHERE run_id = %s",
                           rid_b) == [(0,)]
        assert stack.query("SELECT count(*) FROM node_attempt_history WHERE run_id = %s",
                           rid_b) == [(3,)]
        # Node a exists in version 2: from the failed node is fine, on version 2.
        status, _, out = retry(stack, rid_a)
        assert status == 202 and out["workflow_version"] == 2, out
    finally:
        stack.apply(base_config(workflows_prod=[TWO_STEP, LISTED, VERSIONED_1],
                                workflows_sandbox=[OTHER], connections_prod=[TWILIO_CONN]))


def test_retried_runs_finish_on_a_worker(stack, make_devbroker):
    """A real worker claims the retried runs: from the failed node only the failed node is
    called again; from the start every node is."""
    stack.fakes.tokens("twilio", account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN)
    broker = make_devbroker(brokers=1, partitions=1)
    port = harness.free_port()
    env = {"HOOKFLOW_DATABASE_URL": stack.db_url, "HOOKFLOW_KAFKA_BROKERS": broker.bootstrap,
           "HOOKFLOW_SECRETS_DIR": stack.secrets_dir, "HOOKFLOW_KAFKA_SESSION_TIMEOUT_MS": "6000",
           "HOOKFLOW_WORKER_POLL_MS": "50", "HOOKFLOW_WORKER_LEASE_MS": "3000",
           "HOOKFLOW_SHUTDOWN_TIMEOUT_MS": "5000", "HOOKFLOW_WORKER_LISTEN": f"127.0.0.1:{port}"}
    env.update(stack.fakes.env())
    rid_node = failed_two_step(stack)
    rid_start = failed_two_step(stack)
    cancelled = insert_run(stack, "Two step", "cancelled")  # stopped before any node ran
    worker = harness.Proc([harness.bin("hookflow-engine"), "work"], env=env, name="worker")
    try:
        harness.wait_http(f"http://127.0.0.1:{port}/healthz", proc=worker)
        assert retry(stack, rid_node)[0] == 202
        assert retry(stack, rid_start, {"from": "start"})[0] == 202
        assert retry(stack, cancelled, {})[0] == 202

        def finished():
            rows = stack.query("SELECT id::text, status, error FROM runs WHERE id IN (%s, %s, %s)",
                               rid_node, rid_start, cancelled)
            return rows if all(r[1] in ("succeeded", "failed") for r in rows) else None
        rows = harness.wait_until(finished, timeout=60, interval=0.2, what="retried runs")
        assert all(r[1] == "succeeded" for r in rows), rows
        msgs = stack.fakes.objects("twilio")["messages"]
        bodies = sorted(m["body"] for m in msgs)
        # rid_node: second only; rid_start: first and second; cancelled: both.
        assert bodies.count(f"{SMS['body']} (first)") == 2
        assert bodies.count(f"{SMS['body']} (second)") == 3
        # The worker writes the generation it ran; the kept attempt keeps the one that made it.
        assert stack.query("SELECT node_id, attempt, status, generation FROM node_attempts"
                           " WHERE run_id = %s ORDER BY id", rid_node) == [
            ("first", 1, "succeeded", 1), ("second", 1, "succeeded", 2)]
        status, _, run = stack.call("GET", f"/api/runs/{rid_node}", token=stack.admin())
        assert [(a["node_id"], a["generation"], a["current"], a["carried_over"])
                for a in run["attempts"]] == [
            ("first", 1, True, True), ("second", 1, False, False),
            ("second", 1, False, False), ("second", 2, True, False)]
        assert stack.query("SELECT node_id, attempt, status FROM node_attempts WHERE run_id = %s"
                           " ORDER BY id", rid_start) == [("first", 1, "succeeded"),
                                                          ("second", 1, "succeeded")]
        status, _, run = stack.call("GET", f"/api/runs/{rid_start}", token=stack.admin())
        assert run["status"] == "succeeded" and run["generation"] == 2 and run["error"] is None
        assert run["finished_at"] and run["started_at"]
        assert [(a["node_id"], a["generation"], a["status"]) for a in run["attempts"]] == [
            ("first", 1, "succeeded"), ("second", 1, "failed"), ("second", 1, "failed"),
            ("first", 2, "succeeded"), ("second", 2, "succeeded")]
        assert run["context"]["nodes"]["second"]["output"]["sid"].startswith("SM")
    finally:
        code = worker.stop()
        assert code == 0, worker.tail()
        assert not worker.sanitizer_errors(), worker.tail(80)


def test_hostile_bodies_change_nothing(stack):
    rid = failed_two_step(stack)
    before = stack.query("SELECT status, generation, context::text FROM runs WHERE id = %s", rid)
    bodies = [b'{"from": "start\x00"}', b'{"from": "\xff\xfe"}', b'{"from": "' + b"9" * 5000 +
              b'"}', b'{"from": 1e999999}', b'[' * 5000, b'{"from": {"$ne": null}}',
              b'{"from": "failed_node", "from": "start"}',
              json.dumps({"from": "start'; UPDATE runs SET status='succeeded';--"}).encode()]
    for body in bodies:
        status, _, out = retry(stack, rid, body, headers={"Content-Type": "application/json"})
        assert status == 400, (body[:40], out)
        assert isinstance(out, dict) and "error" in out
    assert stack.query("SELECT status, generation, context::text FROM runs WHERE id = %s",
                       rid) == before
    assert stack.audit() == []
