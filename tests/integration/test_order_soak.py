"""Integration: a seeded soak of Guarantee 4 (order per ordering key) while the worker pool scales
up and down and workers die.

Messenger deliveries go through ingest for many ordering keys (`meta:<page>:psid:<sender>`: a few
pages, each its own Kafka key and so its own partition, times a few senders). Each key's events
are sent strictly one after the other (the next only once ingest answered 200 for the one
before), by a few sender threads that interleave their keys. The workers hold few runs at once
(HOOKFLOW_WORKER_CONCURRENCY) and the fake platforms answer slowly, so runs of one key pile up
`pending` and really have to wait for the earlier ones. Meanwhile a scaler thread starts with one
worker and, every 1.2-2.8 s, adds one (up to four), SIGTERMs one (scale down), SIGKILLs one
(preferably while it holds a call in flight), or SIGSTOPs one past its lease and its Kafka
session and then SIGCONTs it (a zombie) or SIGKILLs it; when the last worker goes, a new one
starts after a short gap, so events pile up in Kafka and arrive in big batches.

Then, once every run is finished, from PostgreSQL:

1. every event ingest answered 200 has exactly one run, of the one workflow its text matches;
2. per ordering key, ordering_seq follows the order in which the events were sent;
3. per ordering key, runs start in event order. The rule (README "Engine workers", the claim in
   engine/executor.c and the run insert in engine/intake.c) is: a run starts only when no
   earlier run of its key is still *pending*; an earlier run that started and is still running
   or waiting (a retry, a delay, a lease that ran out) does not hold it back. So what is checked
   is started_at(k) < started_at(k+1), not finished_at(k) <= started_at(k+1). A takeover after a
   worker died keeps started_at (`coalesce(r.started_at, clock_timestamp())`) and bumps
   `attempt`; only the API's retry clears it, and this test does not retry runs;
4. no worker (nor ingest) log has a sanitizer report.

The seed comes from HOOKFLOW_ORDER_SOAK_SEED (else the clock) and is printed; the choices (keys,
events, kinds, scaling actions, victims, pauses, fake latencies) follow it, the timing of the
processes does not.
"""

import collections
import os
import random
import signal
import threading
import time
import traceback
import uuid

import pytest

import harness
from enginestack import EXTRA_PAGES, PAGE, Stack

SEED = int(os.environ.get("HOOKFLOW_ORDER_SOAK_SEED")
           or (time.time_ns() // 1000) % 1_000_000_007)

SEND_SECONDS = 24.0          # the senders' schedule; the scaler runs as long
QUIESCE_TIMEOUT = 180.0      # afterwards, for every run to finish (ASan, a loaded 2-core machine)
QUIET_SECONDS = 3.0          # nothing changed for this long: settled
LEASE_MS = 3000              # enginestack.Stack.worker_env
SESSION_MS = 6000
PAUSE_RANGE = (SESSION_MS / 1000 + 1.0, SESSION_MS / 1000 + 2.5)  # > lease and > session
MAX_WORKERS = 4
CONCURRENCY = 3              # runs a worker holds at once: later runs of a key must wait
CLAIM_BATCH = 2
PAGES = [PAGE] + EXTRA_PAGES                 # 7 accounts: 7 Kafka keys over the partitions
SENDERS = ["6123", "7001", "7002", "7003"]   # PSIDs: with the pages, the ordering keys
KINDS = [("pickup", 75), ("crm", 25)]        # "SMS on pickup" (Twilio), "CRM" (HubSpot upsert)
WORKFLOW_OF = {"pickup": "SMS on pickup", "crm": "CRM"}
SENDER_THREADS = 3

Log = harness.TimedLog


@pytest.fixture
def stack(postgres):
    s = Stack(postgres, partitions=6)
    yield s
    for w in s.workers:  # a worker left SIGSTOPped would not answer SIGTERM
        if w.alive():
            w.send_signal(signal.SIGCONT)
    # All at once: one after the other, each leaving the consumer group, takes long.
    for w in s.workers:
        if w.alive():
            w.send_signal(signal.SIGTERM)
    for w in s.workers:
        if w.alive():
            w.stop(signal.SIGTERM, 30)
    s.stop()
    # 4. no sanitizer report in any worker or in ingest
    for p in s.workers + [s.ingest]:
        assert not p.sanitizer_errors(), f"seed {SEED}: {p.name} sanitizer report:\n{p.tail(80)}"


def key_of(page, sender):
    return f"meta:{page}:psid:{sender}"


# ----------------------------------------------------------------------------------- senders

def make_plan(rng):
    """The keys, their events in order, and which sender thread sends which key."""
    combos = [(p, s) for p in PAGES for s in SENDERS]
    rng.shuffle(combos)
    chosen = combos[:rng.randint(12, 16)]
    words = [k for k, _ in KINDS]
    weights = [w for _, w in KINDS]
    events = []
    per_key = {}
    for page, sender in chosen:
        key = key_of(page, sender)
        per_key[key] = []
        for j in range(rng.randint(5, 8)):
            kind = rng.choices(words, weights)[0]
            tag = f"ord-{len(events):03d}-{uuid.uuid4().hex[:6]}"
            ev = {"n": len(events), "key": key, "k": j, "page": page, "sender": sender,
                  "kind": kind, "tag": tag, "text": f"{kind} {tag}",
                  "mid": "m_" + uuid.uuid4().hex, "status": "unsent", "tries": 0}
            events.append(ev)
            per_key[key].append(ev)
    keys = list(per_key)
    rng.shuffle(keys)
    threads = [keys[i::SENDER_THREADS] for i in range(SENDER_THREADS)]
    schedules = []
    for tkeys in threads:
        # A seeded interleaving of this thread's keys, each key's events in their order, in
        # bursts of 1-3 events of one key sent back to back (each still only after the one
        # before was answered 200): a run then often meets its predecessor still pending.
        left = {k: list(per_key[k]) for k in tkeys}
        bursts = []
        while left:
            k = rng.choice(sorted(left))
            n = min(rng.randint(1, 3), len(left[k]))
            bursts.append([left[k].pop(0) for _ in range(n)])
            if not left[k]:
                del left[k]
        schedules.append(bursts)
    return events, per_key, schedules


class Sender(threading.Thread):
    def __init__(self, stack, schedule, log, idx):
        super().__init__(name=f"order-sender-{idx}", daemon=True)
        self.stack, self.schedule, self.log = stack, schedule, log
        self.error = None

    def run(self):
        broken = set()  # keys whose last event was never answered 200: send no more of them
        try:
            for ev in (ev for burst in harness.paced(self.schedule, SEND_SECONDS)
                       for ev in burst):
                if ev["key"] in broken:
                    ev["status"] = "skipped"
                    continue
                # Strictly one after the other per key: this thread is the only one sending
                # this key and it waits for each answer. A 503 or no answer is sent again (same
                # mid: intake dedupes it) until it is answered 200.
                for _ in range(5):
                    ev["tries"] += 1
                    ev["status"] = self.stack.post_meta(ev["text"], ev["mid"], ev["sender"],
                                                        ev["page"])[0]
                    if ev["status"] == 200:
                        ev["acked_at"] = time.monotonic()
                        break
                    time.sleep(0.3)
                if ev["status"] != 200:
                    broken.add(ev["key"])
                    self.log(f"event {ev['n']} ({ev['key']} #{ev['k']}) never answered 200 "
                             f"({ev['status']}); the rest of that key is not sent")
        except Exception:  # noqa: BLE001 - reported by the test
            self.error = traceback.format_exc()


# ------------------------------------------------------------------------------------ scaler

class Scaler(threading.Thread):
    ACTIONS = [("add", 4), ("sigterm", 3), ("kill9", 3), ("pause", 2)]

    def __init__(self, stack, rng, log, deadline):
        super().__init__(name="order-scaler", daemon=True)
        self.stack, self.rng, self.log, self.deadline = stack, rng, log, deadline
        self.nworkers = 0
        self.paused = {}     # Proc -> (stopped at, wake at, "cont" | "kill")
        self.leaving = {}    # Proc -> thread waiting for its SIGTERM exit
        self.termed = []     # (name, exit code)
        self.zombies = []    # (name, seconds asleep, what then)
        self.done = collections.Counter()
        self.error = None
        self.lock = threading.Lock()

    def start_worker(self):
        self.nworkers += 1
        name = f"order-w{self.nworkers}"
        w = self.stack.start_worker(name, HOOKFLOW_WORKER_ID=name,
                                    HOOKFLOW_WORKER_CONCURRENCY=CONCURRENCY,
                                    HOOKFLOW_WORKER_CLAIM_BATCH=CLAIM_BATCH)
        w.worker_id = name
        self.log(f"started {name} (pid {w.pid}); live {len(self.live())}")
        return w

    def live(self):
        with self.lock:
            leaving = set(self.leaving)
        return [w for w in self.stack.workers if w.alive() and w not in leaving]

    def awake(self):
        return [w for w in self.live() if w not in self.paused]

    def in_flight_owners(self):
        rows = self.stack.query(
            "SELECT DISTINCT r.lease_owner FROM node_attempts a JOIN runs r ON r.id = a.run_id "
            "WHERE a.status = 'running' AND r.status = 'running' AND r.lease_owner IS NOT NULL")
        return {r[0] for r in rows}

    def mid_call(self, cands, secs=2.5):
        """Those of cands that hold a call in flight, waiting up to secs for one to."""
        end = time.monotonic() + secs
        while True:
            owners = self.in_flight_owners()
            mid = [w for w in cands if w.worker_id in owners and w.alive()]
            if mid or time.monotonic() >= end:
                return mid
            self._sleep(0.1)

    def ensure_one(self):
        """When the last worker is gone, another starts after a short seeded gap (events pile up
        in Kafka meanwhile)."""
        if not self.awake():
            gap = self.rng.uniform(0.3, 1.5)
            self.log(f"no worker awake: a new one in {gap:.1f}s")
            self._sleep(gap)
            self.start_worker()

    def wake_due(self, force=False):
        now = time.monotonic()
        for w, (since, at, then) in list(self.paused.items()):
            if force or now >= at:
                if then == "cont":
                    w.send_signal(signal.SIGCONT)
                    self.log(f"SIGCONT {w.worker_id} after {now - since:.1f}s: the zombie wakes")
                else:
                    w.kill()
                    self.log(f"SIGKILL {w.worker_id} after {now - since:.1f}s stopped")
                del self.paused[w]
                self.zombies.append((w.worker_id, round(now - since, 1), then))

    def _sleep(self, secs):
        end = time.monotonic() + secs
        while time.monotonic() < end:
            self.wake_due()
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    # -- actions: each returns False when it does not apply now

    def act_add(self):
        if len(self.live()) >= MAX_WORKERS:
            return False
        self.start_worker()
        return True

    def act_sigterm(self):
        victims = self.awake()
        if not victims:
            return False
        w = self.rng.choice(victims)
        self.log(f"SIGTERM {w.worker_id} (scale down)")

        def wait():
            # Generous: it leaves the consumer group (a mock rebalance takes ~5 s) and lets its
            # calls finish, under ASan on a loaded machine; -9 means it did not exit in time.
            code = w.stop(signal.SIGTERM, 60)
            self.termed.append((w.worker_id, code))
            self.log(f"{w.worker_id} exited {code} after SIGTERM")

        t = threading.Thread(target=wait, daemon=True)
        with self.lock:
            self.leaving[w] = t
        t.start()
        self.ensure_one()
        return True

    def act_kill9(self):
        victims = self.awake()
        if not victims:
            return False
        mid = self.mid_call(victims)
        victims = [w for w in victims if w.alive()]
        if not victims:
            return False
        w = self.rng.choice(mid or victims)
        w.kill()
        self.log(f"SIGKILL {w.worker_id}{' (it held a call in flight)' if mid else ''}")
        self.ensure_one()
        return True

    def act_pause(self):
        if self.paused:
            return False
        awake = self.awake()
        if len(awake) < 2:
            # Someone must be there to take its runs over once its lease runs out.
            if len(self.live()) >= MAX_WORKERS:
                return False
            self.start_worker()
            awake = self.awake()
        mid = self.mid_call(awake)
        awake = [w for w in awake if w.alive()]
        if len(awake) < 2:
            return False
        w = self.rng.choice(mid or awake)
        secs = self.rng.uniform(*PAUSE_RANGE)
        then = self.rng.choice(["cont", "cont", "kill"])
        w.send_signal(signal.SIGSTOP)
        now = time.monotonic()
        self.paused[w] = (now, now + secs, then)
        self.log(f"SIGSTOP {w.worker_id} for {secs:.1f}s, then {then}"
                 f"{' (it holds a call in flight)' if mid else ''}")
        return True

    def run(self):
        try:
            names = [a for a, _ in self.ACTIONS]
            weights = [w for _, w in self.ACTIONS]
            # Up to two workers first, then each kind once in a seeded order, then seeded picks.
            first = ["add"] + [a for a in names]
            self.rng.shuffle(first)
            while True:
                self._sleep(self.rng.uniform(1.2, 2.8))
                if time.monotonic() >= self.deadline:
                    break
                for _ in range(4):
                    action = first.pop(0) if first else self.rng.choices(names, weights)[0]
                    if getattr(self, "act_" + action)():
                        self.done[action] += 1
                        break
        except Exception:  # noqa: BLE001 - reported by the test
            self.error = traceback.format_exc()
        finally:
            try:
                # A paused worker sleeps its full time (past its lease and session) first.
                while self.paused:
                    self._sleep(0.1)
            except Exception:  # noqa: BLE001
                self.wake_due(force=True)

    def join_leaving(self, timeout):
        with self.lock:
            threads = list(self.leaving.values())
        for t in threads:
            t.join(timeout)


# -------------------------------------------------------------------------------- the checks

def worker_lines(stack, needles, limit=16):
    out = []
    for w in stack.workers:
        for line in w.log_lines():
            if any(n in line for n in needles):
                out.append(f"{w.name}: {line[:300]}")
    return out[:limit]


def describe_key(stack, key, rows, events_by_id):
    lines = [f"  runs of {key} by ordering_seq:"]
    for r in rows:
        ev = events_by_id.get(r["event_id"], {})
        lines.append(
            f"    event #{ev.get('k')} (n={ev.get('n')}, {r['event_id']}) seq {r['seq']} "
            f"{r['workflow']} {r['status']} attempt {r['attempt']} created {r['created_at']} "
            f"started {r['started_at']} finished {r['finished_at']} err {r['error']}")
    lines.extend("    log " + l for l in worker_lines(stack, [r["id"] for r in rows]))
    return "\n".join(lines)


def test_runs_of_one_ordering_key_start_in_event_order_while_workers_come_and_go(stack):
    print(f"\nHOOKFLOW_ORDER_SOAK_SEED={SEED}", flush=True)
    log = Log()
    log(f"seed {SEED}")
    t_start = time.monotonic()
    master = random.Random(SEED)
    plan_rng, scale_rng, fake_rng = (random.Random(master.random()) for _ in range(3))

    events, per_key, schedules = make_plan(plan_rng)
    # The fakes answer slowly (every call, until cleared): runs hold the workers' few slots for
    # a while, so later runs of a key wait as 'pending' behind earlier ones.
    twilio_ms, hubspot_ms = fake_rng.randint(300, 700), fake_rng.randint(200, 500)
    stack.fakes.fault("twilio", path="Messages", delay_ms=twilio_ms, count=-1)
    stack.fakes.fault("hubspot", path="contacts", delay_ms=hubspot_ms, count=-1)
    log(f"{len(events)} events over {len(per_key)} ordering keys "
        f"({dict(collections.Counter(e['kind'] for e in events))}), {SENDER_THREADS} senders, "
        f"twilio +{twilio_ms} ms, hubspot +{hubspot_ms} ms, concurrency {CONCURRENCY}/worker")

    scaler = Scaler(stack, scale_rng, log, deadline=time.monotonic() + SEND_SECONDS)
    scaler.start_worker()
    senders = [Sender(stack, sched, log, i) for i, sched in enumerate(schedules)]
    scaler.deadline = time.monotonic() + SEND_SECONDS
    for s in senders:
        s.start()
    scaler.start()
    for s in senders:
        s.join(SEND_SECONDS + 120)
    scaler.join(120)
    assert not any(s.is_alive() for s in senders) and not scaler.is_alive(), \
        f"seed {SEED}: a thread hung\n{log.text()}"
    for s in senders:
        assert s.error is None, f"seed {SEED}: a sender failed:\n{s.error}"
    assert scaler.error is None, f"seed {SEED}: the scaler failed:\n{scaler.error}\n{log.text()}"
    log(f"scaling over: {dict(scaler.done)}; sends done")

    # ---- settle: every paused worker dealt with, leaving ones gone, one healthy worker up
    scaler.wake_due(force=True)
    scaler.join_leaving(90)
    if not scaler.live():
        scaler.start_worker()
    for w in scaler.live():
        harness.wait_http(w.ops + "/readyz", proc=w, timeout=30, ok=lambda s: s == 200)

    for e in events:
        e["id"] = "meta:" + e["mid"]
    events_by_id = {e["id"]: e for e in events}
    acked = [e for e in events if e["status"] == 200]
    log(f"ingest answered 200 to {len(acked)} of {len(events)}; others: "
        f"{dict(collections.Counter(str(e['status']) for e in events if e['status'] != 200))}; "
        f"resent: {sum(1 for e in events if e['tries'] > 1)}")
    assert len(acked) >= len(events) * 0.9, \
        f"seed {SEED}: too few events acknowledged (ingest is not under fault here)\n{log.text()}"
    acked_ids = [e["id"] for e in acked]

    state = stack.wait_settled(acked_ids, QUIESCE_TIMEOUT, QUIET_SECONDS, log)
    missing, active, running, nruns = state
    log(f"settled after {time.monotonic() - t_start:.1f}s: {nruns} runs, {len(missing)} "
        f"acknowledged events without a run, {len(active)} unfinished, {running} 'running' "
        f"attempts; zombies {scaler.zombies}; SIGTERMed {scaler.termed}")
    no_run = [(events_by_id[m]["key"], "#%d" % events_by_id[m]["k"], m) for m in missing[:10]]
    assert not missing and not active and not running, (
        f"HOOKFLOW_ORDER_SOAK_SEED={SEED}: not settled after {QUIESCE_TIMEOUT:.0f}s: "
        f"acknowledged events without a run: {no_run}; unfinished runs: {active[:10]}\n"
        f"{log.text()}")

    rows = stack.query(
        "SELECT r.id::text, r.event_id, w.name, r.status, r.error, r.ordering_key, "
        "  r.ordering_seq, r.attempt, r.created_at, r.started_at, r.finished_at "
        "FROM runs r JOIN workflows w ON w.id = r.workflow_id")
    runs = [dict(zip(("id", "event_id", "workflow", "status", "error", "key", "seq", "attempt",
                      "created_at", "started_at", "finished_at"), r)) for r in rows]
    by_event = collections.defaultdict(list)
    for r in runs:
        by_event[r["event_id"]].append(r)
    failed = collections.Counter((r["error"] or "")[:60] for r in runs if r["status"] == "failed")
    log(f"runs by status: {dict(collections.Counter(r['status'] for r in runs))}; "
        f"taken over (attempt > 1): {sum(1 for r in runs if r['attempt'] > 1)}; failed: "
        f"{dict(failed)}")

    first_attempt = dict(stack.query(
        "SELECT run_id::text, min(started_at) FROM node_attempts GROUP BY run_id"))

    problems = []

    # 1. every acknowledged event: exactly one run, of its workflow; no event has two
    for ev in events:
        rs = by_event.get(ev["id"], [])
        if ev["status"] == 200 and len(rs) != 1:
            problems.append(f"[1] event {ev['id']} ({ev['key']} #{ev['k']}, acked) has "
                            f"{len(rs)} runs: {[(r['workflow'], r['status']) for r in rs]}")
        elif len(rs) > 1:
            problems.append(f"[1] event {ev['id']} ({ev['key']} #{ev['k']}, status "
                            f"{ev['status']}) has {len(rs)} runs")
        for r in rs:
            if r["workflow"] != WORKFLOW_OF[ev["kind"]]:
                problems.append(f"[1] event {ev['id']} ({ev['kind']}) ran workflow "
                                f"{r['workflow']}")
            if r["key"] != ev["key"]:
                problems.append(f"[1] event {ev['id']} has ordering_key {r['key']}, expected "
                                f"{ev['key']}")
    for r in runs:
        if r["event_id"] not in events_by_id:
            problems.append(f"[1] run {r['id']} for an event never sent: {r['event_id']}")

    # What check 3 rests on: started_at is when the run first started. A takeover after its
    # worker died (attempt > 1) keeps it (coalesce in the claim): it is never after the run's
    # first node attempt.
    for r in runs:
        ev = events_by_id.get(r["event_id"], {})
        fa = first_attempt.get(r["id"])
        if r["started_at"] is None or (fa is not None and fa < r["started_at"]):
            problems.append(f"[3] {r['key']} event #{ev.get('k')} ({r['event_id']}): run "
                            f"started_at {r['started_at']} is after its first node attempt "
                            f"{fa} (attempt {r['attempt']}): the start was rewritten")

    # 2 and 3, per ordering key
    waited = 0
    for key in per_key:
        krows = sorted((r for r in runs if r["key"] == key), key=lambda r: r["seq"])
        if not krows:
            continue
        sent_order = [events_by_id[r["event_id"]]["k"] for r in krows]
        # 2. ordering_seq (the Kafka offset) follows the order in which the key's events were
        # sent, each only after the one before was acknowledged.
        if sent_order != sorted(sent_order) or len(set(r["seq"] for r in krows)) != len(krows):
            problems.append(f"[2] {key}: by ordering_seq the events come as #{sent_order}, sent "
                            f"as #{sorted(sent_order)}\n" + describe_key(stack, key, krows,
                                                                        events_by_id))
        # 3. a run starts only once no earlier run of its key is pending, i.e. once every earlier
        # one started: started_at strictly increases along ordering_seq. Intake and the claim
        # stamp a start with clock_timestamp(), taken after the statement's snapshot (intake's
        # transaction start could precede an executor's claim of the run before: bad739e).
        for a, b in zip(krows, krows[1:]):
            ea, eb = events_by_id[a["event_id"]], events_by_id[b["event_id"]]
            if a["started_at"] is None or b["started_at"] is None:
                problems.append(f"[3] {key}: event #{ea['k']} or #{eb['k']} never started")
            elif not a["started_at"] < b["started_at"]:
                problems.append(
                    f"[3] {key}: event #{eb['k']} ({b['event_id']}, seq {b['seq']}) started at "
                    f"{b['started_at']}, not after event #{ea['k']} ({a['event_id']}, seq "
                    f"{a['seq']}) started at {a['started_at']}\n"
                    + describe_key(stack, key, krows, events_by_id))
            if (b["started_at"] and a["started_at"] and b["created_at"] < a["started_at"]
                    and b["started_at"] >= a["started_at"]):
                waited += 1  # b existed before a started, and started after it: it waited
    log(f"runs that existed before the previous run of their key started (and so waited): "
        f"{waited}")
    gaps = sorted(((b["started_at"] - a["started_at"]).total_seconds(), a["key"])
                  for key in per_key
                  for krows in [sorted((r for r in runs if r["key"] == key),
                                       key=lambda r: r["seq"])]
                  for a, b in zip(krows, krows[1:])
                  if a["started_at"] is not None and b["started_at"] is not None)
    log(f"closest consecutive starts of one key: {[(round(g * 1000, 1), k) for g, k in gaps[:3]]}"
        " ms")

    # A worker told to stop (scale down) exits 0 (README "Engine workers": SIGTERM).
    for name, code in scaler.termed:
        if code != 0:
            problems.append(f"[sigterm] {name} exited {code} after SIGTERM")

    elapsed = time.monotonic() - t_start
    log(f"checked in {elapsed:.1f}s; {len(problems)} problem(s)")
    assert not problems, (f"HOOKFLOW_ORDER_SOAK_SEED={SEED}: {len(problems)} problem(s)\n"
                          + "\n".join(problems[:12]) + "\n\nlog:\n" + log.text())
    # The soak exercised what it is about: some runs had to wait behind an earlier one.
    assert waited > 0, (f"HOOKFLOW_ORDER_SOAK_SEED={SEED}: no run ever waited for an earlier run "
                        f"of its key; the soak did not test the ordering\n{log.text()}")
