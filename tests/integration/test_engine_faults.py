"""Integration: the engine's guarantees under failure (Guarantees 2-4 of DESIGN.md).

A worker killed mid-call, PostgreSQL restarted mid-stream, two workers sharing partitions, a
delay surviving a worker restart, a clean SIGTERM, and a dead letter Kafka refuses at first.
"""

import signal
import time

import pytest

import harness
from enginestack import EXTRA_PAGES, Stack


@pytest.fixture
def stack(postgres):
    s = Stack(postgres)
    yield s
    s.stop()
    for w in s.workers:
        assert not w.sanitizer_errors(), w.tail(80)


def wait_attempt_running(stack, event):
    def running():
        rows = stack.query("SELECT a.id FROM node_attempts a JOIN runs r ON r.id = a.run_id "
                           "WHERE r.event_id = %s AND a.status = 'running'", event)
        return rows or None
    harness.wait_until(running, timeout=30, interval=0.05, what="a call in flight")


def wait_call_held_by_the_fake(stack):
    """The 'running' row is committed before the request is sent: a kill right after it can come
    before the call left the worker. The delay fault is used up once the fake has the request."""
    harness.wait_until(lambda: not stack.fakes.faults(), timeout=30, interval=0.02,
                       what="the fake platform to hold the call")


def test_kill_9_mid_call_resumes_on_another_worker_and_the_idempotent_call_lands_once(stack):
    a = stack.start_worker("worker-a")
    stack.fakes.fault("xero", path="Invoices", delay_ms=2000, count=1)
    event = stack.send("invoice during a crash")
    wait_attempt_running(stack, event)
    wait_call_held_by_the_fake(stack)
    a.kill()
    stack.start_worker("worker-b")
    (run_id, _, status, _), = stack.wait_run(event, timeout=60)
    attempts = stack.attempts(run_id)
    assert [a_[2] for a_ in attempts] == ["failed", "succeeded"]
    assert "lost" in attempts[0][4]
    assert attempts[0][5] == attempts[1][5] and attempts[0][5]  # same idempotency key
    mid = event.split(":", 1)[1]
    calls = [r for r in stack.fakes.requests("xero")
             if r["path"].endswith("/Invoices") and r["json"]["Invoices"][0].get("Reference") == mid]
    assert len(calls) == 2
    invoices = [i for i in stack.fakes.objects("xero").get("invoices", [])
                if i.get("Reference") == mid]
    assert len(invoices) == 1, invoices


def test_kill_9_mid_call_without_idempotency_is_marked_outcome_unknown(stack):
    a = stack.start_worker("worker-a")
    before = len(stack.fakes.requests("twilio"))
    stack.fakes.fault("twilio", path="Messages", delay_ms=2000, count=1)
    event = stack.send("pickup during a crash")
    wait_attempt_running(stack, event)
    wait_call_held_by_the_fake(stack)
    a.kill()
    stack.start_worker("worker-b")
    (run_id, _, status, error), = stack.wait_run(event, status="failed", timeout=60)
    assert "outcome is unknown" in error
    assert [x[2] for x in stack.attempts(run_id)] == ["outcome_unknown"]
    # The SMS may have gone out: it is not sent a second time.
    assert len(stack.fakes.requests("twilio")) == before + 1


def test_kill_9_mid_upsert_repeats_it_because_it_cannot_act_twice(stack):
    """HubSpot takes no idempotency key, but an upsert by email writes the same contact again."""
    a = stack.start_worker("worker-a")
    stack.fakes.fault("hubspot", path="contacts", delay_ms=2000, count=1)
    event = stack.send("crm during a crash", sender="88417")
    wait_attempt_running(stack, event)
    wait_call_held_by_the_fake(stack)
    a.kill()
    stack.start_worker("worker-b")
    (run_id, _, _, _), = stack.wait_run(event, timeout=60)
    attempts = stack.attempts(run_id)
    assert [x[2] for x in attempts] == ["failed", "succeeded"]
    assert "lost" in attempts[0][4]
    contacts = [c for c in stack.fakes.objects("hubspot").get("contacts", [])
                if c["properties"].get("email") == "88417@example.com"]
    assert len(contacts) == 1, contacts


def test_postgres_restart_mid_stream_loses_nothing(stack):
    stack.start_worker("worker-a")
    events = []
    for i in range(10):
        events.append(stack.send(f"pickup {i}", page=EXTRA_PAGES[i % len(EXTRA_PAGES)]))
    stack.pg.restart()
    for i in range(10, 20):
        events.append(stack.send(f"pickup {i}", page=EXTRA_PAGES[i % len(EXTRA_PAGES)]))
    for e in events:
        stack.wait_run(e, timeout=90)
    assert stack.query("SELECT count(*) FROM runs WHERE event_id = ANY(%s)", events)[0][0] == 20


def test_two_workers_share_partitions_and_every_event_runs_exactly_once(stack):
    a = stack.start_worker("worker-a")
    b = stack.start_worker("worker-b")
    before = len(stack.fakes.requests("twilio"))
    events = [stack.send(f"pickup number {i}", page=EXTRA_PAGES[i % len(EXTRA_PAGES)])
              for i in range(40)]
    for e in events:
        stack.wait_run(e, timeout=120)
    rows = stack.query("SELECT event_id, count(*) FROM runs WHERE event_id = ANY(%s) "
                       "GROUP BY event_id", events)
    assert len(rows) == 40 and all(c == 1 for _, c in rows)
    calls = stack.fakes.requests("twilio")[before:]
    assert len(calls) == 40
    consumed = []
    for w in (a, b):
        text = harness.http("GET", w.ops + "/metrics")[2].decode()
        line = [l for l in text.splitlines() if l.startswith("hookflow_engine_events_consumed_total")]
        consumed.append(float(line[0].split()[-1]) if line else 0.0)
    assert all(c > 0 for c in consumed), consumed


def test_delay_node_resumes_after_a_worker_restart(stack):
    a = stack.start_worker("worker-a")
    event = stack.send("call me later")
    harness.wait_until(lambda: [r for r in stack.runs_for(event) if r[2] == "waiting"],
                       timeout=30, what="the run to wait")
    assert a.stop(signal.SIGTERM, 20) == 0
    t0 = time.monotonic()
    stack.start_worker("worker-b")
    (run_id, _, _, _), = stack.wait_run(event, timeout=60)
    assert [(x[0], x[2]) for x in stack.attempts(run_id)] == [("wait", "succeeded"),
                                                             ("sms", "succeeded")]
    assert time.monotonic() - t0 < 30


def test_sigterm_finishes_the_call_in_flight(stack):
    a = stack.start_worker("worker-a")
    stack.fakes.fault("twilio", path="Messages", delay_ms=1500, count=1)
    event = stack.send("pickup while stopping")
    wait_attempt_running(stack, event)
    wait_call_held_by_the_fake(stack)
    assert a.stop(signal.SIGTERM, 20) == 0
    (run_id, _, _, _), = stack.wait_run(event, timeout=5)
    assert [x[2] for x in stack.attempts(run_id)] == ["succeeded"]
    assert "worker.stopped" in a.log()


def test_dead_letter_kafka_refuses_is_retried_and_its_batch_is_not_lost(stack):
    # No worker yet: a poison message and a good event wait in Kafka, to be read in one batch.
    stack.broker.produce_sync("hookflow.webhooks.messaging", b"poison: not an envelope",
                              key=b"meta:104877")
    good = stack.send("pickup next to the poison")
    # Kafka now refuses the next three Produce requests for good (not a retriable error), so the
    # worker's first tries to write the dead letter fail outright.
    assert stack.broker.ctl("errors Produce 3 TOPIC_AUTHORIZATION_FAILED") == "ok"
    w = stack.start_worker("worker-dl")

    def dead():
        for m in stack.broker.consume_all("hookflow.deadletter", idle=0.3):
            if b"poison: not an envelope" in m.value or "not JSON" in m.value.decode():
                return m
        return None
    harness.wait_until(dead, timeout=60, what="the poison message in the dead-letter topic")
    stack.wait_run(good, timeout=60)
    assert "intake.deadletter_failed" in w.tail(400), "the refusals were not seen"
    # The batch was committed only after the dead letter landed: a restarted worker does not
    # run the good event again, and later events still run.
    w.stop(signal.SIGTERM, 20)
    assert w.returncode == 0, w.tail(40)
    stack.start_worker("worker-dl-2")
    later = stack.send("pickup after the restart")
    stack.wait_run(later, timeout=60)
    assert len(stack.runs_for(good)) == 1
