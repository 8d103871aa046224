"""Integration: engine workers turn events into recorded runs (issue: engine workers).

Real hookflow-ingest, hookflow-devbroker, PostgreSQL, hookflow-engine workers and the platform
fakes: signed webhook -> Kafka -> intake -> run -> connector call -> recorded attempts.
"""

import json
import os
import signal
import time

import pytest

import harness
from enginestack import Stack, TWILIO_SID, XERO_TENANT


@pytest.fixture(scope="module")
def stack(postgres):
    s = Stack(postgres)
    s.start_worker("worker-main")
    yield s
    s.stop()
    for w in s.workers:
        assert w.returncode in (0, -9), f"{w.name} exited {w.returncode}:\n{w.tail()}"
        assert not w.sanitizer_errors(), w.tail(80)


def wait_dead_letter(stack, reason_part, what):
    """The first dead letter whose reason contains reason_part (decoded), waiting up to 30 s."""
    def dead():
        for m in stack.broker.consume_all("hookflow.deadletter", idle=0.3):
            v = json.loads(m.value)
            if reason_part in v["reason"]:
                return v
        return None
    return harness.wait_until(dead, timeout=30, what=f"{what} in the dead-letter topic")


def test_signed_webhook_becomes_a_succeeded_run_and_the_fake_saw_the_call(stack):
    before = len(stack.fakes.requests("twilio"))
    event = stack.send("please schedule a pickup at 5pm")
    (run_id, name, status, error), = stack.wait_run(event)
    assert name == "SMS on pickup" and error is None
    (node, attempt, st, http, err, key, inp, out), = stack.attempts(run_id)
    assert (node, attempt, st, http) == ("sms", 1, "succeeded", 201)
    assert json.loads(inp)["body"] == "Pickup: please schedule a pickup at 5pm"
    assert json.loads(out)["sid"].startswith("SM")
    calls = stack.fakes.requests("twilio")[before:]
    assert len(calls) == 1
    call = calls[0]
    assert call["method"] == "POST"
    assert call["path"] == f"/twilio/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    assert call["form"]["To"] in ("+14155550100", ["+14155550100"])
    assert "pickup at 5pm" in json.dumps(call["form"]["Body"])


def test_filter_that_does_not_match_creates_no_run(stack):
    event = stack.send("hello there, nothing to do")
    # Intake records the event and its runs in one transaction: once the one is there, so are
    # the others, and there are none.
    harness.wait_until(lambda: stack.query("SELECT count(*) FROM event_keys WHERE event_id = %s",
                                           event)[0][0] == 1, timeout=30, what="the event key")
    assert stack.runs_for(event) == []


def test_one_event_runs_every_workflow_whose_filter_matches(stack):
    # "pickup" and "invoice" are two workflows of one tenant; "crm" would be a third (no match).
    event = stack.send("pickup and invoice together")
    rows = stack.wait_run(event, count=2)
    assert sorted(r[1] for r in rows) == ["Invoice", "SMS on pickup"]
    time.sleep(1.0)
    assert len(stack.runs_for(event)) == 2


def test_a_disabled_connection_stops_being_used_at_once(stack):
    # A first run puts the Twilio connection's credentials in the worker's cache.
    (_, _, _, error), = stack.wait_run(stack.send("pickup before the connection is disabled"))
    assert error is None
    before = len(stack.fakes.requests("twilio"))
    stack.query("UPDATE connections SET status = 'disabled' WHERE connector = 'twilio'")
    try:
        # Well inside the cache's lifetime: the change notification made the worker read again.
        (_, _, _, error), = stack.wait_run(stack.send("pickup while disabled"), status="failed")
        assert "no active twilio connection" in error, error
        assert len(stack.fakes.requests("twilio")) == before
    finally:
        stack.query("UPDATE connections SET status = 'active' WHERE connector = 'twilio'")
    (_, _, _, error), = stack.wait_run(stack.send("pickup after it is enabled again"))
    assert error is None


def test_same_delivery_twice_gives_one_run(stack):
    mid = "m_dup_" + str(time.time_ns())
    e1 = stack.send("pickup twice", mid=mid)
    e2 = stack.send("pickup twice", mid=mid)
    assert e1 == e2
    rows = stack.wait_run(e1)
    time.sleep(1.0)
    assert len(stack.runs_for(e1)) == 1 and len(rows) == 1


def test_500_then_200_is_retried_and_succeeds(stack):
    stack.fakes.fault("xero", path="Invoices", status=500, count=1)
    event = stack.send("send the invoice please")
    (run_id, _, _, _), = stack.wait_run(event)
    attempts = stack.attempts(run_id)
    assert [(a[1], a[2], a[3]) for a in attempts] == [(1, "failed", 500), (2, "succeeded", 200)]
    # Both attempts carried the same idempotency key.
    xero = [r for r in stack.fakes.requests("xero") if r["path"].endswith("/Invoices")
            and r["json"]["Invoices"][0].get("Reference") == event.split(":", 1)[1]]
    assert len(xero) == 2
    assert xero[0]["headers"]["idempotency-key"] == xero[1]["headers"]["idempotency-key"]
    assert xero[0]["headers"]["xero-tenant-id"] == XERO_TENANT


def test_429_retry_after_is_honoured(stack):
    stack.fakes.fault("xero", path="Invoices", status=429, count=1, retry_after="2")
    event = stack.send("invoice with rate limit")
    (run_id, _, _, _), = stack.wait_run(event)
    rows = stack.query("SELECT attempt, status, http_status, extract(epoch from started_at) "
                       "FROM node_attempts WHERE run_id = %s ORDER BY attempt", run_id)
    assert [(r[0], r[1], r[2]) for r in rows] == [(1, "failed", 429), (2, "succeeded", 200)]
    assert float(rows[1][3]) - float(rows[0][3]) >= 1.9


def test_retries_exhausted_fails_the_run_with_the_error(stack):
    stack.fakes.fault("xero", path="Invoices", status=503, count=3)
    event = stack.send("invoice that keeps failing")
    (run_id, _, status, error), = stack.wait_run(event, status="failed")
    assert "3 attempts" in error
    assert [a[2] for a in stack.attempts(run_id)] == ["failed", "failed", "failed"]


def test_expired_token_is_refreshed_once_and_the_call_retried(stack):
    stack.fakes.expire("hubspot", access_token="hubspot-access-1")
    event = stack.send("crm update for vip")
    (run_id, _, status, error), = stack.wait_run(event)
    attempts = stack.attempts(run_id)
    assert [(a[2], a[3]) for a in attempts] == [("failed", 401), ("succeeded", 200)]
    refreshes = [r for r in stack.fakes.requests("hubspot") if r["path"].endswith("/token")]
    assert len(refreshes) == 1
    assert stack.query("SELECT token_version FROM connections WHERE connector = 'hubspot'")[0][0] >= 1
    token = stack.query("SELECT access_token_enc FROM connections WHERE connector = 'hubspot'")[0][0]
    assert b"hubspot-access" not in bytes(token)


def test_condition_takes_one_branch(stack):
    event = stack.send("branch test for a vip customer")
    (run_id, _, _, _), = stack.wait_run(event)
    nodes = [(a[0], a[2]) for a in stack.attempts(run_id)]
    assert nodes == [("vip", "succeeded"), ("yes", "succeeded")]
    ctx = json.loads(stack.query("SELECT context::text FROM runs WHERE id = %s", run_id)[0][0])
    assert ctx["nodes"]["no"]["status"] == "skipped"


def test_poison_message_goes_to_the_dead_letter_topic(stack):
    stack.broker.produce_sync("hookflow.webhooks.messaging", b"this is not an envelope",
                              key=b"meta:104877")
    v = wait_dead_letter(stack, "not JSON", "the poison message")
    assert v["topic"] == "hookflow.webhooks.messaging"
    # The worker moved on: a later event still runs.
    event = stack.send("pickup after poison")
    stack.wait_run(event)


def test_envelope_missing_a_field_is_dead_lettered_with_that_reason(stack):
    # Valid JSON, but no id: dead-lettered up front for what is wrong with it, not after the
    # database refuses a batch with a NULL id.
    env = ('{"provider":"meta","event":"message","native_type":"message","account":"104877",'
           '"resource":null,"occurred_at":"2026-11-27T10:00:00.000Z","received_at":'
           '"2026-11-27T10:00:00.000Z","request_id":"t","payload":{"tag":"no-id-%d"}}'
           % time.time_ns())
    stack.broker.produce_sync("hookflow.webhooks.messaging", env.encode(), key=b"meta:104877")
    good = stack.send("pickup after the envelope without id")
    stack.wait_run(good, timeout=60)

    v = wait_dead_letter(stack, 'field "id" is missing', "the envelope without id")
    assert v["topic"] == "hookflow.webhooks.messaging"
    assert "database rejected" not in v["reason"]


def test_metrics_and_health(stack):
    w = stack.workers[0]
    assert harness.http("GET", w.ops + "/healthz")[0] == 200
    assert harness.http("GET", w.ops + "/readyz")[0] == 200
    text = harness.http("GET", w.ops + "/metrics")[2].decode()
    for name in ("hookflow_engine_events_consumed_total", "hookflow_engine_runs_created_total",
                 'hookflow_engine_runs_finished_total{status="succeeded"}',
                 "hookflow_engine_node_seconds_bucket", "hookflow_engine_leases_held",
                 "hookflow_engine_consumer_lag", "hookflow_engine_node_retries_total"):
        assert name in text, name


def test_runs_of_one_ordering_key_start_in_event_order(stack):
    # Same page and sender: one resource, so one ordering key; sent faster than runs finish.
    events = [stack.send(f"pickup order {i}", sender="7777") for i in range(8)]
    for e in events:
        stack.wait_run(e)
    rows = stack.query("SELECT ordering_key, ordering_seq, started_at FROM runs "
                       "WHERE event_id = ANY(%s) ORDER BY ordering_seq", events)
    assert len({r[0] for r in rows}) == 1 and rows[0][0].endswith(":psid:7777")
    starts = [r[2] for r in rows]
    assert all(a < b for a, b in zip(starts, starts[1:])), starts


def test_answer_the_database_refuses_fails_only_its_run_and_the_worker_goes_on(stack):
    # Xero answers 200 with a total PostgreSQL's jsonb cannot hold. The call was made, so its
    # attempt says so; the run fails with the reason; runs after it are not stalled behind it.
    huge = ('{"Invoices":[{"InvoiceID":"2c1f9a43-61a0-4b38-9b5e-2f0f4c4a1a01",'
            '"InvoiceNumber":"INV-9","Type":"ACCREC","Status":"DRAFT","Total":1e999999}]}')
    stack.fakes.fault("xero", path="Invoices$", method="PUT", status=200, body=huge,
                      content_type="application/json")
    bad = stack.send("send the invoice with an impossible total")
    (run_id, _, _, error), = stack.wait_run(bad, status="failed")
    assert "PostgreSQL refused to record this run's data" in error and "22003" in error, error
    (node, attempt, st, http, err, _, inp, out), = stack.attempts(run_id)
    assert (node, attempt, st, http) == ("inv", 1, "succeeded", 200)
    assert out is None and inp is not None
    assert "PostgreSQL refused" in err
    good = [stack.send("send the invoice after the refused one %d" % i) for i in range(3)]
    for event in good:
        (_, _, _, e), = stack.wait_run(event)
        assert e is None
    assert "run.data_refused" in stack.workers[0].tail(400)
    metrics = harness.http("GET", stack.workers[0].ops + "/metrics")[2].decode()
    assert "\nhookflow_engine_runs_refused_by_database_total 1\n" in metrics


def test_event_the_database_rejects_is_dead_lettered_and_intake_moves_on(stack):
    # Valid JSON that PostgreSQL's jsonb cannot hold (a number beyond numeric's range).
    mid = "m_huge_" + str(time.time_ns())
    env = ('{"id":"meta:%s","provider":"meta","event":"message","native_type":"message",'
           '"account":"104877","resource":null,"occurred_at":"2026-11-27T10:00:00.000Z",'
           '"received_at":"2026-11-27T10:00:00.000Z","request_id":"t","payload":{"message":'
           '{"mid":"%s","text":"pickup now"},"sender":{"id":"1"},"amount":1e999999}}') % (mid, mid)
    stack.broker.produce_sync("hookflow.webhooks.messaging", env.encode(), key=b"meta:104877")
    good = stack.send("pickup after the bad one")
    stack.wait_run(good, timeout=60)

    v = wait_dead_letter(stack, "database rejected", "the rejected event")
    assert v["topic"] == "hookflow.webhooks.messaging"
    assert stack.runs_for("meta:" + mid) == []


def test_sighup_reloads_the_oauth_client_secret(stack):
    """An operator rotates HubSpot's client secret and sends the worker SIGHUP: its next token
    refresh authenticates with the new secret (the platform refuses the old one). A reload that
    would take the token key away is refused and the worker keeps what it had."""
    worker = stack.workers[0]
    path = os.path.join(stack.secrets_dir, "hubspot", "client_secret")
    key_path = os.path.join(stack.secrets_dir, "engine", "token_key")
    with open(path) as f:
        old_secret = f.read()
    with open(key_path) as f:
        token_key = f.read()

    def reloads(event):
        return sum(1 for line in worker.log_lines() if f'"{event}"' in line)

    def hup(event="secrets.reloaded"):
        before = reloads(event)
        worker.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: reloads(event) > before, timeout=20, what=event)

    try:
        stack.fakes.tokens("hubspot", client_id="hubspot-client",
                           client_secret="hubspot-client-secret-2")
        with open(path, "w") as f:
            f.write("hubspot-client-secret-2")
        hup()
        seen = stack.fakes.requests("hubspot")
        since = seen[-1]["seq"] if seen else 0
        stack.fakes.expire("hubspot")
        event = stack.send("crm update for vip after the rotation")
        (run_id, _, status, error), = stack.wait_run(event)
        assert error is None
        refreshes = [r for r in stack.fakes.requests("hubspot", since=since)
                     if r["path"].endswith("/token")]
        assert refreshes and refreshes[-1]["form"]["client_secret"] in (
            "hubspot-client-secret-2", ["hubspot-client-secret-2"])
        assert refreshes[-1]["status"] == 200
        # Without engine/token_key the stored tokens could not be read: refused, nothing changes.
        os.rename(key_path, key_path + ".moved")
        hup("secrets.reload_failed")
        assert "engine/token_key is missing" in worker.tail(20)
        stack.fakes.expire("hubspot")
        event = stack.send("crm update for vip with the key kept")
        (run_id, _, status, error), = stack.wait_run(event)
        assert error is None
    finally:
        if os.path.exists(key_path + ".moved"):
            os.rename(key_path + ".moved", key_path)
        assert open(key_path).read() == token_key
        stack.fakes.tokens("hubspot", client_id="hubspot-client",
                           client_secret="hubspot-client-secret")
        with open(path, "w") as f:
            f.write(old_secret)
        hup()
    assert worker.alive()
