"""Integration: a seeded soak of the Engine API (`hookflow-engine serve`) used concurrently while
events flow through ingest and two workers run them — what a tenant's admins do while their
workflows are live. test_chaos.py covers process faults; this one covers concurrent changes made
through the API, with every process healthy.

A sender posts ~200 Messenger events through ingest over ~25 s (several pages and senders; the
words pickup / invoice / later / combo trigger the Twilio SMS workflow, the Xero invoice one, the
delay-then-SMS one and an SMS-then-invoice one). At the same time, seeded API threads:

  editor     PUTs new versions of the SMS workflows whose SMS body carries a marker [rev-...]
             unique per version (so the fake's SMS tells which version a run used);
  toggler    disables a workflow for a while and enables it again;
  connector  disables the tenant's twilio / xero / meta connection for a while, then enables it
             (runs that need it meanwhile fail: the retrier and the settling retry them);
  retrier    retries failed runs (POST /api/runs/{id}/retry, from the failed node or the start);
  lister     pages through a workflow's runs (and the workflows) while they are being written;
  reader     GETs runs in flight, the integrations, validates and simulates;
  scratch    creates, enables and deletes scratch workflows (no event triggers them);
  hostile    bad JSON, wrong types, unknown members, an oversized body, a wrong media type, bad
             query parameters, missing / expired / non-admin tokens, another tenant's ids.

Then everything is switched back on, the failed runs retried, the stack settles, and the
invariants are checked from PostgreSQL, the audit log and the fakes, never from timing. The
audit log (README "Engine API": every change writes audit_log in the same transaction) gives
the moments at which each workflow / connection was switched and each version saved, on
PostgreSQL's clock, the clock intake stamps events with (event_keys.received_at); an event taken
in within GRACE seconds of a switch may have seen either side of it, and is checked against both.

1. events and runs: every event ingest answered 200 was taken in (event_keys); it has at most
   one run per workflow, none for a workflow its text does not trigger; exactly one for the
   workflow it triggers when that workflow was enabled and the page's connection active when it
   was taken in, and none when the workflow was disabled or the connection disabled then
   (README "Engine workers": intake matches the tenant's *enabled* workflows, finding the tenant
   from its connection; intake.c joins the connection with status 'active');
2. every run finishes: succeeded, or failed for an explained reason; no lease and no 'running'
   attempt is left; a run fails because a connection is missing only when that connection was
   disabled (and a disabled connection is not used for another call: README "Engine workers");
3. side effects follow the version: a run records the version current when its event was
   taken in; every SMS sent is exactly the body its succeeded attempt recorded, rendered from the
   version that generation of the run ran on (openapi PUT: "runs keep the version they started
   with"; /retry: "on the workflow's current version"); each SMS corresponds to one succeeded
   attempt, so a retry from the failed node never sends a succeeded SMS again (openapi /retry:
   "keeps the outputs of the nodes that succeeded") and only a retry from the start may (it "runs
   every node again"); a Xero invoice exists at most once per event, exactly once when an invoice
   node succeeded (the run's one Idempotency-Key); no simulation reaches a platform;
4. pagination: no listing of runs (or workflows) shows one twice, pages are in (created_at, id)
   descending order, and none skips a run that existed before the listing began (openapi: keyset
   on (created_at, id); 0002_api.sql: "no run is skipped or shown twice between pages");
5. every API answer during the soak came in time, with a status the OpenAPI document lists for
   the route and a JSON body matching the documented schema; no 5xx; each hostile request got
   the documented error and changed nothing (no audit row by its user, another tenant's
   objects untouched);
6. a run seen 'succeeded' by GET /api/runs/{id} stays succeeded (only failed or cancelled runs
   can be retried).

The seed comes from HOOKFLOW_API_SOAK_SEED (else the clock) and is printed: replay a failure with
HOOKFLOW_API_SOAK_SEED=<seed>. The choices follow the seed; the timing of the processes does not.
"""

import collections
import datetime
import http.client as http_client
import json
import os
import random
import re
import signal
import threading
import time
import traceback
import urllib.parse
import uuid

import pytest
from jsonschema import Draft202012Validator, RefResolver

import harness
from enginestack import (EXTRA_PAGES, FAST_RETRY, PAGE, SMS, TWILIO_SID, Stack,
                         action)
from test_api_connections import JWT_KEY, mint
from test_openapi import load_spec, resolve

SEED = int(os.environ.get("HOOKFLOW_API_SOAK_SEED") or (time.time_ns() // 1000) % 1_000_000_007)

SEND_SECONDS = 25.0           # the sender's schedule; the API threads run as long
SETTLE_TIMEOUT = 60.0         # after the soak, for every run to finish (per round)
API_TIMEOUT = 20.0            # an API answer slower than this is a hang
GRACE = 2.0                   # s around a switch (audit_log.at) in which intake may see either
SENDERS = ["6123", "7001", "7002", "7003"]
KINDS = [("pickup", 35), ("invoice", 22), ("later", 15), ("combo", 28)]
TERMINAL = ("succeeded", "failed", "cancelled")
RIVAL_PAGE = "300001"
TWILIO_TOKEN = "twilio-auth-token"   # enginestack's (the fake Twilio knows it)
TEXT = "{{event.payload.message.text}}"

# Who is who (role mappings applied below; the role comes from them, never from the token).
ADMIN = "alice@acme.test"          # the admins doing their work
HOSTILE = "hal@acme.test"          # an admin whose every request is malformed: must change nothing
MEMBER = "bob@acme.test"           # not an admin: 403
RIVAL = "rita@rival.test"          # another tenant's admin

# The word in an event's text -> the workflow it triggers, and that workflow's nodes that call a
# platform (enginestack's workflows plus "Combo", added here).
WORKFLOW_OF = {"pickup": "SMS on pickup", "invoice": "Invoice", "later": "Later",
               "combo": "Combo"}
SMS_FLOWS = ("SMS on pickup", "Later", "Combo")
INVOICE_FLOWS = ("Invoice", "Combo")
CONNECTION_OF_NODE = {"sms": "twilio", "inv": "xero"}

INVOICE = {"contact_id": "5b96e86b-418e-48e8-8949-308c14aec278",
           "line_items": [{"description": "Wash and fold", "quantity": 1, "unit_amount": 25,
                           "account_code": "200"}],
           "reference": "{{event.payload.message.mid}}"}


def combo_workflow():
    return {"name": "Combo", "enabled": True, "definition": {
        "name": "Combo",
        "trigger": {"connector": "meta", "event": "message",
                    "filter": "event.payload.message.text contains 'combo'"},
        "nodes": [action("sms", "twilio", "send_message", dict(SMS), retry=FAST_RETRY),
                  action("inv", "xero", "create_invoice", INVOICE, retry=FAST_RETRY,
                         timeout_ms=5000)],
        "edges": [{"from": "sms", "to": "inv"}]}}


def extra_config():
    """Added to enginestack's tenant (apply is additive): branches with an admin, a second admin
    for the hostile requests and a member; the Combo workflow. And a second tenant with its own
    Messenger page and a workflow that calls no platform (a transform)."""
    rival_def = {"name": "Rival echo",
                 "trigger": {"connector": "meta", "event": "message"},
                 "nodes": [{"id": "echo", "type": "transform",
                            "output": {"text": TEXT}}], "edges": []}
    return {"tenants": [
        {"slug": "acme-laundry", "name": "Acme Laundry",
         "branches": [{"branch": "main", "roles": [{"subject": ADMIN, "role": "admin"},
                                                   {"subject": HOSTILE, "role": "admin"},
                                                   {"subject": MEMBER, "role": "member"}]}],
         "workflows": [combo_workflow()]},
        {"slug": "rival-co", "name": "Rival Co", "environment": "sandbox",
         "branches": [{"branch": "main", "roles": [{"subject": RIVAL, "role": "admin"}]}],
         "support_approvals": [{"connector": "meta", "approved_by": "support@hookflow.dev"}],
         "connections": [{"connector": "meta", "account": RIVAL_PAGE, "status": "active",
                          "scopes": ["pages_messaging"], "access_token": "rival-page-token"}],
         "workflows": [{"name": "Rival echo", "enabled": True, "definition": rival_def}]},
    ]}


@pytest.fixture
def stack(postgres):
    s = Stack(postgres)
    harness.write_secrets(s.secrets_dir, {"api/jwt_key": JWT_KEY.decode()})
    s.apply(extra_config())
    s.api_port = harness.free_port()
    s.api_base = f"http://127.0.0.1:{s.api_port}"
    env = {"HOOKFLOW_DATABASE_URL": s.db_url, "HOOKFLOW_SECRETS_DIR": s.secrets_dir,
           "HOOKFLOW_API_LISTEN": f"127.0.0.1:{s.api_port}",
           "HOOKFLOW_API_PUBLIC_URL": "https://admin.example.test",
           "HOOKFLOW_API_THREADS": "2"}
    env.update(s.fakes.env())
    s.serve = harness.Proc([harness.bin("hookflow-engine"), "serve"], env=env, name="serve")
    harness.wait_http(s.api_base + "/healthz", proc=s.serve)
    yield s
    serve_code = s.serve.stop(signal.SIGTERM, 20)
    s.stop()
    for p in s.workers + [s.ingest, s.serve]:
        assert not p.sanitizer_errors(), p.tail(80)
    assert serve_code == 0, f"serve exited {serve_code}:\n{s.serve.tail()}"


# ----------------------------------------------------------------------------------- helpers

Log = harness.TimedLog


class Problems:
    """invariant -> [what], from any thread."""

    def __init__(self):
        self.items = collections.defaultdict(list)
        self.lock = threading.Lock()

    def __call__(self, inv, what):
        with self.lock:
            self.items[inv].append(what)

    def report(self, limit=6):
        out = []
        with self.lock:
            for inv in sorted(self.items):
                out.append(f"== invariant {inv}: {len(self.items[inv])} violation(s)")
                out.extend(f"-- {w}" for w in self.items[inv][:limit])
        return "\n".join(out)

    def count(self):
        with self.lock:
            return sum(len(v) for v in self.items.values())


def post_meta(stack, text, mid, sender, page):
    """The HTTP status of one signed Messenger delivery through ingest, or None (no answer)."""
    return stack.post_meta(text, mid, sender, page)[0]


def render(template, text):
    """The SMS body a version's template gives for a text (the only placeholder used)."""
    return template.replace(TEXT, text)


def sms_template(definition):
    for n in definition.get("nodes", []):
        if n.get("id") == "sms":
            return n["params"]["body"]
    return None


# ------------------------------------------------------------------------------ the API client

class Api:
    """Every API request of the soak goes through call(): it checks the answer against
    schemas/openapi.yaml (status listed for the route, JSON matching the documented schema, an
    Error body for every error) and that it came in time (invariant 5)."""

    def __init__(self, stack, problems):
        self.base = stack.api_base
        self.problems = problems
        self.spec = load_spec()
        self.resolver = RefResolver.from_schema(self.spec)
        self.validators = {}
        self.routes = []
        for path, item in self.spec["paths"].items():
            rx = re.compile("^" + "/".join("[^/]+" if seg.startswith("{") else re.escape(seg)
                                           for seg in path.split("/")) + "$")
            literal = len([p for p in path.split("/") if p and not p.startswith("{")])
            for m in item:
                if m in ("get", "put", "post", "delete"):
                    self.routes.append((m.upper(), path, rx, literal))
        self.routes.sort(key=lambda r: -r[3])
        self.lock = threading.Lock()
        self.count = collections.Counter()       # (method, route, status)
        self.slowest = (0.0, None)
        self.write_lag = 0.0
        self.tenant = dict(stack.query("SELECT slug, id::text FROM tenants"))
        self.live = []  # the soak's workflows (never deleted): set by Soak
        acme, rival = self.tenant["acme-laundry"], self.tenant["rival-co"]
        self.tokens = {"admin": mint(ADMIN, acme, key=JWT_KEY),
                       "hostile": mint(HOSTILE, acme, key=JWT_KEY),
                       "member": mint(MEMBER, acme, key=JWT_KEY),
                       "rival": mint(RIVAL, rival, key=JWT_KEY),
                       "expired": mint(ADMIN, acme, exp_in=-60, key=JWT_KEY),
                       "wrong_key": mint(ADMIN, acme, key=b"not-the-key-" + b"x" * 32)}

    def route(self, method, path):
        bare = path.split("?")[0]
        for m, tmpl, rx, _ in self.routes:
            if m == method and rx.match(bare):
                return tmpl
        return None

    def validator(self, schema_key, schema):
        v = self.validators.get(schema_key)
        if v is None:
            v = Draft202012Validator(schema, resolver=self.resolver)
            self.validators[schema_key] = v
        return v

    def call(self, method, path, body=None, who="admin", headers=None, expect=None,
             inv="5 every API answer is documented"):
        """(status, parsed JSON or None). expect: the statuses this request must get."""
        hdrs = dict(headers or {})
        if who:
            hdrs["Authorization"] = "Bearer " + self.tokens[who]
        where = f"{method} {path[:120]}"
        t0 = time.monotonic()
        try:
            status, rh, data = harness.http(method, self.base + path, body=body, headers=hdrs,
                                            timeout=API_TIMEOUT)
        except (OSError, http_client.HTTPException) as e:
            self.problems("5 every API request is answered in time",
                          f"{where}: no answer after {time.monotonic() - t0:.1f}s: {e!r}")
            return None, None
        took = time.monotonic() - t0
        tmpl = self.route(method, path)
        with self.lock:
            if method != "GET":
                # A change is stamped (audit_log.at) when its transaction begins and takes
                # effect when it commits, at most this long after.
                self.write_lag = max(self.write_lag, took)
            self.count[(method, tmpl, status)] += 1
            if took > self.slowest[0]:
                self.slowest = (took, where)
        ctype = rh.get("content-type", "")
        parsed = None
        if data and ctype.startswith("application/json"):
            try:
                parsed = json.loads(data)
            except ValueError:
                self.problems(inv, f"{where} -> {status}: Content-Type JSON but the body is not "
                                   f"JSON: {data[:200]!r}")
                return status, None
        if status >= 500:
            self.problems("5 no 5xx", f"{where} -> {status}: {data[:300]!r}")
        if status == 404 and who == "admin" and any(w in path for w in self.live):
            # A request (PUT, enable, disable) that waited for the lock behind a concurrent PUT
            # of the same workflow was answered 404 "workflow not found" (seeds 8 and 9): the
            # statement that waited rechecked its join to the version it had read before the
            # PUT committed (workflows_api.c workflow_lock(); test_db_api.c has the
            # deterministic case).
            self.problems("5 a live workflow is never answered 404 (concurrent PUT)",
                          f"{where} -> 404: {data[:200]!r}")
            return status, parsed
        if expect is not None and status not in expect:
            self.problems(inv, f"{where} -> {status}, expected {sorted(expect)}: {data[:300]!r}")
        if tmpl is None:
            self.problems(inv, f"{where} -> {status}: no route of the spec matches")
            return status, parsed
        op = self.spec["paths"][tmpl][method.lower()]
        responses = op["responses"]
        if str(status) not in responses:
            self.problems(inv, f"{where} -> {status}: not a status the spec lists for {method} "
                               f"{tmpl} ({sorted(responses)}): {data[:300]!r}")
            return status, parsed
        resp = resolve(self.spec, responses[str(status)])
        content = resp.get("content", {})
        if status >= 400 and not isinstance(parsed, dict):
            self.problems(inv, f"{where} -> {status}: the error is not a JSON object: "
                               f"{data[:200]!r}")
            return status, parsed
        if "application/json" in content:
            if parsed is None:
                self.problems(inv, f"{where} -> {status}: a JSON body is documented, got "
                                   f"{ctype!r} {data[:200]!r}")
                return status, parsed
            schema = content["application/json"]["schema"]
            errors = list(self.validator((tmpl, method, status), schema).iter_errors(parsed))
            if errors:
                e = errors[0]
                self.problems(inv, f"{where} -> {status}: the answer does not match the spec: "
                                   f"{e.message[:200]} at {list(e.path)}; "
                                   f"{json.dumps(parsed)[:300]}")
        elif data and status != 204:
            media = ctype.split(";")[0].strip()
            if media not in content:
                self.problems(inv, f"{where} -> {status}: {media} not documented")
        return status, parsed


# ------------------------------------------------------------------------------------ sender

class Sender(threading.Thread):
    def __init__(self, stack, rng, log):
        super().__init__(name="soak-sender", daemon=True)
        self.stack, self.log = stack, log
        n = rng.randint(190, 215)
        words = [k for k, _ in KINDS]
        weights = [w for _, w in KINDS]
        self.plan = []
        for i in range(n):
            kind = rng.choices(words, weights)[0]
            tag = f"soak-{i:04d}-{uuid.UUID(int=rng.getrandbits(128)).hex[:8]}"
            self.plan.append({"i": i, "kind": kind, "tag": tag, "text": f"{kind} {tag}",
                              "mid": "m_" + uuid.UUID(int=rng.getrandbits(128)).hex,
                              "page": rng.choice([PAGE] + EXTRA_PAGES),
                              "sender": rng.choice(SENDERS), "status": "unsent"})
        self.error = None

    def run(self):
        try:
            for ev in harness.paced(self.plan, SEND_SECONDS):
                ev["status"] = post_meta(self.stack, ev["text"], ev["mid"], ev["sender"],
                                         ev["page"])
        except Exception:  # noqa: BLE001 - reported by the test
            self.error = traceback.format_exc()


# -------------------------------------------------------------------------------- API threads

class Actor(threading.Thread):
    """A seeded loop of one kind of admin work until the deadline."""
    PAUSE = (0.3, 1.0)

    def __init__(self, name, soak, rng):
        super().__init__(name=f"soak-{name}", daemon=True)
        self.soak, self.rng = soak, rng
        self.api, self.log, self.bad = soak.api, soak.log, soak.problems
        self.done = collections.Counter()
        self.error = None

    def run(self):
        try:
            while time.monotonic() < self.soak.deadline:
                self.step()
                time.sleep(self.rng.uniform(*self.PAUSE))
        except Exception:  # noqa: BLE001 - reported by the test
            self.error = traceback.format_exc()

    def wf(self, name):
        return self.soak.wf[name]


class Editor(Actor):
    """Saves new versions of the SMS workflows; the SMS body carries a marker per version."""
    PAUSE = (0.6, 1.6)

    def step(self):
        if self.rng.random() < 0.3:
            self.race()
            return
        self.edit(self.rng.choice(SMS_FLOWS))

    def race(self):
        """Two admins save the same workflow at the same moment: both get a new version (the
        PUTs are serialised by the row lock), or 422 while a connection is off."""
        name = self.rng.choice(SMS_FLOWS)
        barrier = threading.Barrier(2)
        seeds = [self.rng.getrandbits(64), self.rng.getrandbits(64)]
        errors = []

        def one(seed):
            try:
                self.edit(name, random.Random(seed), barrier)
            except Exception:  # noqa: BLE001 - reported by the test
                errors.append(traceback.format_exc())
        ts = [threading.Thread(target=one, args=(x,), daemon=True) for x in seeds]
        for t in ts:
            t.start()
        for t in ts:
            t.join(API_TIMEOUT * 3)
        if errors:
            raise AssertionError(errors[0])
        self.done["races"] += 1

    def edit(self, name, rng=None, barrier=None):
        rng = rng or self.rng
        wid = self.wf(name)
        status, cur = self.api.call("GET", f"/api/workflows/{wid}", expect={200})
        if barrier is not None:
            barrier.wait(API_TIMEOUT)
        if status != 200:
            return
        d = cur["definition"]
        marker = uuid.UUID(int=rng.getrandbits(128)).hex[:10]
        for n in d["nodes"]:
            if n["id"] == "sms":
                n["params"]["body"] = f"Pickup [rev-{marker}]: {TEXT}"
        body = {"definition": d}
        if rng.random() < 0.2:
            body["name"] = name  # the same name: only the definition changes
        # 422 while a connection the workflow uses is disabled (an enabled workflow must
        # validate: missing_connection), else 200 with a new version.
        status, out = self.api.call("PUT", f"/api/workflows/{wid}", body, expect={200, 422})
        self.done[f"put {status}"] += 1
        if status == 200 and (out["version"] < cur["version"] + 1
                              or sms_template(out["definition"]) != sms_template(d)):
            self.bad("3 PUT saves a new version", f"{name}: {cur['version']} -> {out['version']}")
        if status == 422:
            codes = {p["code"] for p in out.get("problems", [])}
            if not codes <= {"missing_connection"}:
                self.bad("5 a PUT is refused only for a documented reason",
                         f"{name}: {json.dumps(out)[:400]}")


class Toggler(Actor):
    """Disables a workflow for a while, then enables it again."""
    PAUSE = (2.0, 4.5)

    def step(self):
        name = self.rng.choice(list(WORKFLOW_OF.values()))
        wid = self.wf(name)
        status, out = self.api.call("POST", f"/api/workflows/{wid}/disable", expect={200})
        if status == 200 and out["enabled"] is not False:
            self.bad("5 disable disables", f"{name}: {out}")
        self.done["disable"] += 1
        time.sleep(self.rng.uniform(2.5, 5.0))
        self.soak.enable_workflow(name, self.done)


class Connector(Actor):
    """Disables one of the tenant's connections for a while, then enables it again."""
    PAUSE = (1.5, 4.0)

    def step(self):
        conn = self.rng.choices(["twilio", "xero", "meta"], [40, 35, 25])[0]
        status, out = self.api.call("POST", f"/api/integrations/{conn}/disable", expect={200})
        if status == 200 and out["status"] != "disabled":
            self.bad("5 disable disables", f"{conn}: {out}")
        self.done[f"disable {conn}"] += 1
        time.sleep(self.rng.uniform(1.0, 4.0) if conn == "xero" else
                   self.rng.uniform(GRACE + 0.6, 4.0) if conn == "twilio" else
                   self.rng.uniform(2.5, 4.5))
        if conn == "twilio" and self.rng.random() < 0.5:
            # Connected again with new credentials: Twilio now takes only the new auth token
            # (switched while the connection is off, so no call is owed either token), and the
            # connection is active again with it (README "Engine workers": a reconnected
            # connection's kept tokens are not used for another call).
            token = f"{TWILIO_TOKEN}-{uuid.UUID(int=self.rng.getrandbits(128)).hex[:12]}"
            self.soak.stack.fakes.tokens("twilio", account_sid=TWILIO_SID, auth_token=token)
            status, out = self.api.call("PUT", "/api/integrations/twilio/credentials",
                                        {"account_sid": TWILIO_SID, "auth_token": token},
                                        expect={200})
            self.done["twilio credentials"] += 1
        else:
            status, out = self.api.call("POST", f"/api/integrations/{conn}/enable",
                                        expect={200})
        if status == 200 and out["status"] != "active":
            self.bad("5 enable enables", f"{conn}: {out}")


class Retrier(Actor):
    """Retries failed runs found through the API."""
    PAUSE = (0.3, 1.0)

    def step(self):
        name = self.rng.choice(list(WORKFLOW_OF.values()))
        status, out = self.api.call("GET", f"/api/workflows/{self.wf(name)}/runs"
                                    f"?status=failed&limit={self.rng.randint(3, 20)}",
                                    expect={200})
        if status != 200:
            return
        runs = out["runs"]
        self.rng.shuffle(runs)
        for run in runs[:self.rng.randint(1, 3)]:
            if run["status"] != "failed":
                self.bad("4 a status filter shows only that status", run)
            self.soak.retry(run["id"], self.rng, self.done, name)


class Lister(Actor):
    """Pages through runs (and workflows) while they are written (invariant 4)."""
    PAUSE = (0.2, 0.8)

    def step(self):
        if self.rng.random() < 0.2:
            self.list_workflows()
            return
        name = self.rng.choice(list(WORKFLOW_OF.values()))
        wid = self.wf(name)
        status_filter = None
        if self.rng.random() < 0.3:
            status_filter = ",".join(self.rng.sample(
                ["pending", "running", "waiting", "succeeded", "failed"], self.rng.randint(1, 2)))
        before = {r[0] for r in self.soak.stack.query(
            "SELECT id::text FROM runs WHERE workflow_id = %s", wid)}
        limit = self.rng.randint(1, 25)
        seen, order, cursor, pages = set(), [], None, 0
        while True:
            q = {"limit": limit}
            if status_filter:
                q["status"] = status_filter
            if cursor:
                q["cursor"] = cursor
            status, out = self.api.call("GET", f"/api/workflows/{wid}/runs?"
                                        + urllib.parse.urlencode(q), expect={200})
            if status != 200:
                return
            pages += 1
            if len(out["runs"]) > limit:
                self.bad("4 a page holds at most limit runs", f"{len(out['runs'])} > {limit}")
            for r in out["runs"]:
                if r["id"] in seen:
                    self.bad("4 no run is listed twice", f"{name}: run {r['id']} again on page "
                                                         f"{pages} (limit {limit})")
                seen.add(r["id"])
                order.append((r["created_at"], r["id"]))
                if status_filter and r["status"] not in status_filter.split(","):
                    self.bad("4 a status filter shows only those statuses",
                             f"{status_filter}: {r['status']}")
                if r["workflow_id"] != wid:
                    self.bad("4 a workflow's listing shows only its runs", r)
            cursor = out["next_cursor"]
            if not cursor or pages > 400:
                break
        if order != sorted(order, reverse=True) or len(set(order)) != len(order):
            self.bad("4 runs are listed newest first on (created_at, id)", f"{name}: {order[:8]}")
        if not status_filter:
            # Keyset pagination on the immutable (created_at, id): every run that existed when
            # the listing began is on some page.
            missed = before - seen
            if missed:
                self.bad("4 no run that existed before the listing is skipped",
                         f"{name} limit {limit}: {len(missed)} of {len(before)} missed, e.g. "
                         f"{sorted(missed)[:3]}")
        self.done["listings"] += 1
        self.done["pages"] += pages

    def list_workflows(self):
        before = {r[0] for r in self.soak.stack.query(
            "SELECT id::text FROM workflows WHERE tenant_id = %s AND deleted_at IS NULL",
            self.api.tenant["acme-laundry"])}
        limit = self.rng.randint(1, 4)
        seen, cursor, pages = [], None, 0
        while True:
            q = {"limit": limit}
            if cursor:
                q["cursor"] = cursor
            status, out = self.api.call("GET", "/api/workflows?" + urllib.parse.urlencode(q),
                                        expect={200})
            if status != 200:
                return
            pages += 1
            seen += [w["id"] for w in out["workflows"]]
            cursor = out["next_cursor"]
            if not cursor or pages > 200:
                break
        if len(seen) != len(set(seen)):
            self.bad("4 no workflow is listed twice", collections.Counter(seen).most_common(2))
        # A scratch workflow deleted meanwhile may be gone; the soak's own ones never are.
        missed = {w for w in before - set(seen) if w in self.soak.wf.values()}
        if missed:
            self.bad("4 no workflow that existed before the listing is skipped", missed)
        self.done["workflow listings"] += 1


class Reader(Actor):
    """GETs runs in flight; the integrations; validates and simulates."""
    PAUSE = (0.1, 0.5)

    def step(self):
        x = self.rng.random()
        if x < 0.55:
            self.get_run()
        elif x < 0.7:
            conn = self.rng.choice(["", "/twilio", "/xero", "/meta"])
            self.api.call("GET", f"/api/integrations{conn}", expect={200})
        elif x < 0.85:
            self.validate()
        else:
            self.simulate()

    def get_run(self):
        rows = self.soak.stack.query(
            "SELECT id::text FROM runs WHERE tenant_id = %s AND status IN "
            "('pending', 'running', 'waiting') ORDER BY random() LIMIT 2",
            self.api.tenant["acme-laundry"])
        if not rows or self.rng.random() < 0.3:
            rows = self.soak.stack.query(
                "SELECT id::text FROM runs WHERE tenant_id = %s ORDER BY random() LIMIT 2",
                self.api.tenant["acme-laundry"])
        for (rid,) in rows:
            status, run = self.api.call("GET", f"/api/runs/{rid}", expect={200})
            if status != 200:
                continue
            self.soak.observe(run)
            self.done["get run"] += 1
            if run["workflow_version"] > run["current_version"]:
                self.bad("3 a run's version exists", f"{rid}: {run['workflow_version']} > "
                                                     f"{run['current_version']}")
            current = [a for a in run["attempts"] if a["current"]]
            per = collections.Counter((a["node_id"]) for a in current
                                      if a["status"] == "succeeded")
            if any(n > 1 for n in per.values()):
                self.bad("3 at most one current succeeded attempt per node", f"{rid}: {per}")
            if any(a["generation"] > run["generation"] for a in run["attempts"]):
                self.bad("3 no attempt of a generation to come", rid)

    def validate(self):
        name = self.rng.choice(list(WORKFLOW_OF.values()))
        wid = self.wf(name)
        body = None
        if self.rng.random() < 0.5:
            d = json.loads(json.dumps(self.soak.defs[name]))
            if self.rng.random() < 0.5:
                d["edges"] = [{"from": "nowhere", "to": d["nodes"][0]["id"]}]  # a problem
            body = {"definition": d}
        status, out = self.api.call("POST", f"/api/workflows/{wid}/validate", body, expect={200})
        self.done["validate"] += 1
        if status == 200 and body is None and not out["valid"]:
            # Valid except for a connection switched off meanwhile.
            codes = {p["code"] for p in out["problems"]}
            if not codes <= {"missing_connection"}:
                self.bad("5 a stored version validates", f"{name}: {out['problems'][:3]}")

    def simulate(self):
        name = self.rng.choice(list(WORKFLOW_OF.values()))
        word = [k for k, v in WORKFLOW_OF.items() if v == name][0]
        tag = f"simu-{uuid.UUID(int=self.rng.getrandbits(128)).hex[:8]}"
        event = {"message": {"mid": "m_" + tag, "text": f"{word} {tag}"},
                 "sender": {"id": "6123"}, "recipient": {"id": PAGE}}
        status, out = self.api.call("POST", f"/api/workflows/{self.wf(name)}/simulate",
                                    {"event": event}, expect={200})
        self.done["simulate"] += 1
        if status == 200 and not out["would_run"]:
            self.bad("5 simulate matches the trigger filter", f"{name}: {json.dumps(out)[:300]}")


class Scratch(Actor):
    """Creates, enables and deletes workflows no event triggers."""
    PAUSE = (1.0, 2.5)

    def step(self):
        name = f"Scratch {uuid.UUID(int=self.rng.getrandbits(128)).hex[:8]}"
        d = {"name": name, "trigger": {"connector": "meta", "event": "message",
                                       "filter": "event.payload.message.text contains 'zzzq'"},
             "nodes": [{"id": "t", "type": "transform", "output": {"text": TEXT}}], "edges": []}
        status, out = self.api.call("POST", "/api/workflows", {"definition": d}, expect={201})
        if status != 201:
            return
        wid = out["id"]
        self.soak.scratch.append(wid)
        if self.rng.random() < 0.5:
            self.api.call("POST", f"/api/workflows/{wid}/enable", expect={200, 422})
        self.api.call("DELETE", f"/api/workflows/{wid}", expect={204})
        self.api.call("GET", f"/api/workflows/{wid}", expect={404})
        self.done["scratch"] += 1


class Hostile(Actor):
    """Malformed and unauthorised requests: each gets its documented error and changes nothing."""
    PAUSE = (0.2, 0.7)

    def cases(self):
        s = self.soak
        wid, rival_wid = s.wf["SMS on pickup"], s.rival_wf
        rival_run, own_run = s.rival_run, s.some_run()
        good = {"definition": s.defs["SMS on pickup"]}
        big = b'{"definition": {"name": "' + b"x" * (1 << 20) + b'"}}'
        J = {"Content-Type": "application/json"}
        return [
            # (method, path, body, who, headers, status, error code)
            ("POST", "/api/workflows", b'{"name": ', "hostile", J, 400, "malformed_json"),
            ("PUT", f"/api/workflows/{wid}", b'{"definition": {"name": "x", ', "hostile", J,
             400, "malformed_json"),
            ("PUT", f"/api/workflows/{wid}", {"definition": 42}, "hostile", None, 400,
             "invalid_definition"),
            ("PUT", f"/api/workflows/{wid}", dict(good, enabled="yes"), "hostile", None, 400,
             "invalid_field"),
            ("PUT", f"/api/workflows/{wid}", dict(good, priority=1), "hostile", None, 400,
             "unknown_field"),
            ("PUT", f"/api/workflows/{wid}", [1, 2], "hostile", None, 400, "invalid_body"),
            ("PUT", f"/api/workflows/{wid}", b'{"definition": {}, "definition": {}}', "hostile",
             J, 400, "duplicate_field"),
            ("POST", "/api/workflows", big, "hostile", J, 413, None),
            ("POST", "/api/workflows", b"name=x", "hostile",
             {"Content-Type": "application/x-www-form-urlencoded"}, 415, None),
            ("POST", f"/api/workflows/{wid}/disable", {"now": True}, "hostile", None, 400,
             "unknown_field"),
            ("GET", f"/api/workflows/{wid}/runs?limit=0", None, "hostile", None, 400,
             "invalid_parameter"),
            ("GET", f"/api/workflows/{wid}/runs?cursor=bm90LWEtY3Vyc29y", None, "hostile", None,
             400, "invalid_parameter"),
            ("GET", f"/api/workflows/{wid}/runs?status=done", None, "hostile", None, 400,
             "invalid_parameter"),
            ("POST", f"/api/runs/{own_run}/retry", {"from": 1}, "hostile", None, 400,
             "invalid_field"),
            ("POST", f"/api/runs/{own_run}/retry", b'{"from": "start"', "hostile", J, 400,
             "malformed_json"),
            ("POST", f"/api/workflows/{wid}/simulate", {"event": "pickup"}, "hostile", None, 400,
             None),
            # A draft that is not an object: the spec allows 400, or 200 with valid false
            # (validate reports every problem of a draft); either way nothing is saved.
            ("POST", f"/api/workflows/{wid}/validate", {"definition": 5}, "hostile", None,
             (200, 400), None),
            ("GET", f"/api/workflows/{rival_wid}", None, "admin", None, 404, None),
            ("PUT", f"/api/workflows/{rival_wid}", good, "hostile", None, 404, None),
            ("POST", f"/api/workflows/{rival_wid}/disable", None, "hostile", None, 404, None),
            ("DELETE", f"/api/workflows/{rival_wid}", None, "hostile", None, 404, None),
            ("GET", f"/api/workflows/{rival_wid}/runs", None, "admin", None, 404, None),
            ("GET", f"/api/runs/{rival_run}", None, "admin", None, 404, None),
            ("POST", f"/api/runs/{rival_run}/retry", {}, "hostile", None, 404, None),
            ("GET", f"/api/runs/{own_run}", None, "rival", None, 404, None),
            ("POST", f"/api/runs/{own_run}/retry", {}, "rival", None, 404, None),
            ("POST", f"/api/workflows/{wid}/disable", None, "rival", None, 404, None),
            ("PUT", f"/api/workflows/{wid}", good, "member", None, 403, "forbidden"),
            ("POST", "/api/integrations/twilio/disable", None, "member", None, 403, "forbidden"),
            ("POST", f"/api/workflows/{wid}/disable", None, None, None, 401, None),
            ("POST", "/api/integrations/xero/disable", None, "expired", None, 401, None),
            ("GET", f"/api/runs/{own_run}", None, "wrong_key", None, 401, None),
            ("GET", "/api/runs/not-a-uuid", None, "admin", None, 404, None),
            ("PUT", "/api/integrations/xero/credentials",
             {"account_sid": "AC" + "0" * 32, "auth_token": "x" * 20}, "hostile", None, 400,
             None),
            ("PUT", "/api/integrations/twilio/credentials", {"account_sid": 7}, "hostile", None,
             400, None),
        ]

    def step(self):
        method, path, body, who, headers, want, code = self.rng.choice(self.cases())
        wants = set(want) if isinstance(want, tuple) else {want}
        status, out = self.api.call(method, path, body, who=who, headers=headers, expect=wants,
                                    inv="5 a hostile request gets its documented error")
        if status == 200 and out.get("valid") is not False:
            self.bad("5 a hostile request gets its documented error", f"{path}: {out}")
        want = status if status in wants else want
        if status == want and code and (out or {}).get("error") != code:
            self.bad("5 a hostile request gets its documented error",
                     f"{method} {path[:80]}: error {(out or {}).get('error')!r}, expected {code}")
        if status == 400 and (out or {}).get("error") == "malformed_json" \
                and not isinstance(out.get("position"), int):
            self.bad("5 malformed JSON is answered with its byte position", out)
        self.done[f"{want}"] += 1


# ------------------------------------------------------------------------------------ the soak

class Soak:
    def __init__(self, stack, log, problems):
        self.stack, self.log, self.problems = stack, log, problems
        self.api = Api(stack, problems)
        self.deadline = time.monotonic() + 3600
        acme = self.api.tenant["acme-laundry"]
        self.wf = dict(stack.query("SELECT name, id::text FROM workflows WHERE tenant_id = %s",
                                   acme))
        self.api.live = [self.wf[n] for n in WORKFLOW_OF.values()]
        self.rival_wf = stack.query("SELECT id::text FROM workflows WHERE name = 'Rival echo'")[0][0]
        self.rival_run = None
        self.defs = {}
        for name in WORKFLOW_OF.values():
            self.defs[name] = json.loads(stack.query(
                "SELECT v.definition::text FROM workflows w JOIN workflow_versions v ON "
                "v.workflow_id = w.id AND v.version = w.current_version WHERE w.id = %s",
                self.wf[name])[0][0])
        self.scratch = []
        self.retries = collections.defaultdict(list)   # run id -> [(from, status)]
        self.obs_lock = threading.Lock()
        self.seen_succeeded = {}                         # run id -> generation

    def some_run(self):
        rows = self.stack.query("SELECT id::text FROM runs WHERE tenant_id = %s LIMIT 1",
                                self.api.tenant["acme-laundry"])
        return rows[0][0] if rows else str(uuid.uuid4())

    def observe(self, run):
        if run["status"] == "succeeded":
            with self.obs_lock:
                self.seen_succeeded[run["id"]] = run["generation"]

    def enable_workflow(self, name, done, until=None):
        """Enables a workflow; 422 while a connection it uses is off: tries again."""
        wid = self.wf[name]
        end = until or (time.monotonic() + 30)
        while True:
            status, out = self.api.call("POST", f"/api/workflows/{wid}/enable",
                                        expect={200, 422})
            if status == 200:
                if out["enabled"] is not True:
                    self.problems("5 enable enables", f"{name}: {out}")
                done["enable"] += 1
                return True
            if status == 422:
                codes = {p["code"] for p in out.get("problems", [])}
                if not codes <= {"missing_connection"}:
                    self.problems("5 enabling is refused only for a documented reason",
                                  f"{name}: {json.dumps(out)[:400]}")
                done["enable 422"] += 1
            if time.monotonic() > end:
                return False
            time.sleep(0.3)

    def retry(self, run_id, rng, done, name):
        x = rng.random()
        if name == "Combo":  # mostly from the failed node: the SMS must not go again
            frm = "failed_node" if x < 0.6 else None if x < 0.9 else "start"
        else:
            frm = "failed_node" if x < 0.35 else None if x < 0.65 else "start"
        body = {} if frm is None else {"from": frm}
        if rng.random() < 0.1 and frm is None:
            body = None  # no body at all: the default
        status, out = self.api.call("POST", f"/api/runs/{run_id}/retry", body,
                                    expect={202, 409})
        with self.obs_lock:
            self.retries[run_id].append((frm or "failed_node", status))
        done[f"retry {status}"] += 1
        if status == 202:
            if out["status"] != "pending" or out["retry_from"] != (frm or "failed_node"):
                self.problems("5 a retry is queued as documented", f"{run_id}: {out}")
        elif status == 409 and out.get("error") != "run_not_retryable":
            # The node ids never change here, and no soak workflow is deleted: only a run
            # that another retry (or nobody) made pending again is refused.
            self.problems("5 a retry is refused only for a documented reason",
                          f"{run_id}: {out}")
        return status


def audit_timelines(stack, wf_ids):
    """From audit_log (DB clock): per workflow the enabled switches and the saved versions, per
    connector the enable/disable switches."""
    enabled = {w: [] for w in wf_ids}          # wid -> [(at, bool)]
    versions = {w: [] for w in wf_ids}         # wid -> [(at, version)]
    conns = collections.defaultdict(list)      # connector -> [(at, bool)]
    connector_of = dict(stack.query("SELECT id::text, connector FROM connections"))
    # A change's audit row is stamped with the time its transaction began (now()), and one that
    # waited for a workflow's lock behind another began before that one committed: the order of
    # the changes to one subject is the order of their rows (written after the lock), and a
    # change takes effect no earlier than the one before it.
    rows = stack.query("SELECT action, subject_id, detail::text, at FROM audit_log "
                       "WHERE actor <> 'apply' ORDER BY id")
    last_at = {}
    for action_, subject, detail, at in rows:
        at = max(at, last_at.get(subject, at))
        last_at[subject] = at
        detail = json.loads(detail)
        if subject in enabled:
            if action_ in ("workflow.enabled", "workflow.disabled"):
                enabled[subject].append((at, action_ == "workflow.enabled"))
            elif action_ == "workflow.updated":
                # The soak's PUTs never send "enabled" (the flag stays what it is), so a PUT is
                # not a switch; its audit row (stamped when its transaction began, maybe before
                # a switch it waited for) would only blur the timeline.
                if detail.get("new_version"):
                    versions[subject].append((at, detail["version"]))
        elif action_ in ("integration.enabled", "integration.disabled"):
            conns[subject].append((at, action_ == "integration.enabled"))
        elif action_ == "integration.connected":  # credentials stored again: subject = its id
            conns[connector_of.get(subject)].append((at, detail.get("status") == "active"))
    return enabled, versions, conns


def states_near(timeline, initial, t, grace):
    """Every value the timeline had within [t - grace, t + grace] (it starts at initial)."""
    lo, hi = t - datetime.timedelta(seconds=grace), t + datetime.timedelta(seconds=grace)
    value, out = initial, set()
    for at, v in timeline:
        if at <= lo:
            value = v
    out.add(value)
    for at, v in timeline:
        if lo < at <= hi:
            out.add(v)
    return out


def switch_near(timeline, t, grace):
    """Whether the timeline has a switch within [t - grace, t + grace]."""
    lo, hi = t - datetime.timedelta(seconds=grace), t + datetime.timedelta(seconds=grace)
    return any(lo <= at <= hi for at, _ in timeline)


def settle(stack, acked_ids, log):
    """Waits (bounded) until every acknowledged event was taken in and no run is unfinished,
    and nothing changed for 2 s. Returns what is still missing / unfinished."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    last, since = None, time.monotonic()
    while True:
        keys = {r[0] for r in stack.query("SELECT event_id FROM event_keys")}
        missing = [e for e in acked_ids if e not in keys]
        active = stack.query("SELECT count(*) FROM runs WHERE status NOT IN "
                             "('succeeded', 'failed', 'cancelled')")[0][0]
        running = stack.query("SELECT count(*) FROM node_attempts WHERE status = 'running'")[0][0]
        snap = (len(keys), active, running, stack.query("SELECT count(*) FROM runs")[0][0],
                stack.fakes.stats()["total_requests"])
        if not missing and not active and not running and snap == last:
            if time.monotonic() - since >= 2.0:
                return missing, active, running
        elif snap != last:
            last, since = snap, time.monotonic()
        if time.monotonic() > deadline:
            log(f"settling timed out after {SETTLE_TIMEOUT:.0f}s")
            return missing, active, running
        time.sleep(0.25)


# ------------------------------------------------------------------------------------ the test

def test_api_soak_keeps_the_rules(stack):
    print(f"\nHOOKFLOW_API_SOAK_SEED={SEED}", flush=True)
    log = Log()
    log(f"seed {SEED}")
    t_start = time.monotonic()
    master = random.Random(SEED)
    problems = Problems()
    for name in ("w1", "w2"):
        stack.start_worker(f"soak-{name}", HOOKFLOW_WORKER_ID=f"soak-{name}")
    soak = Soak(stack, log, problems)
    api = soak.api

    # The stack answers as the soak expects before it starts: every soak workflow validates,
    # the other tenant has a run (for the hostile requests).
    for name in WORKFLOW_OF.values():
        status, out = api.call("POST", f"/api/workflows/{soak.wf[name]}/validate", expect={200})
        assert status == 200 and out["valid"], (name, out)
    rival_mid = "m_" + uuid.UUID(int=master.getrandbits(128)).hex
    assert post_meta(stack, "hello rival", rival_mid, "6123", RIVAL_PAGE) == 200
    soak.rival_run = harness.wait_until(
        lambda: (stack.query("SELECT id::text FROM runs WHERE event_id = %s AND status = "
                             "'succeeded'", "meta:" + rival_mid) or [[None]])[0][0],
        timeout=90, what="the other tenant's run")
    rival_before = stack.query(
        "SELECT w.enabled, w.current_version, w.deleted_at, r.status, r.generation "
        "FROM workflows w JOIN runs r ON r.workflow_id = w.id WHERE w.id = %s", soak.rival_wf)

    sender = Sender(stack, random.Random(master.random()), log)
    kinds = (Editor, Editor, Toggler, Connector, Retrier, Retrier, Lister, Lister, Reader, Reader,
             Scratch, Hostile)
    actors = [cls(f"{cls.__name__.lower()}{i}", soak, random.Random(master.random()))
              for i, cls in enumerate(kinds)]
    log(f"sending {len(sender.plan)} events over {SEND_SECONDS:.0f}s: "
        f"{dict(collections.Counter(e['kind'] for e in sender.plan))}; "
        f"{len(actors)} API threads")
    soak.deadline = time.monotonic() + SEND_SECONDS
    sender.start()
    for a in actors:
        a.start()
    sender.join(SEND_SECONDS + 60)
    for a in actors:
        a.join(API_TIMEOUT * 3 + 40)
    assert not sender.is_alive(), f"seed {SEED}: the sender hung"
    hung = [a.name for a in actors if a.is_alive()]
    assert not hung, f"seed {SEED}: API threads hung: {hung}\n{problems.report()}"
    assert sender.error is None, f"seed {SEED}: sender failed:\n{sender.error}"
    for a in actors:
        assert a.error is None, f"seed {SEED}: {a.name} failed:\n{a.error}\n{log.text()}"
        log(f"{a.name}: {dict(a.done)}")

    # ---- switch everything back on, settle, retry what failed for a switched-off connection
    done = collections.Counter()
    for conn in ("twilio", "xero", "meta"):
        api.call("POST", f"/api/integrations/{conn}/enable", expect={200})
    for name in WORKFLOW_OF.values():
        assert soak.enable_workflow(name, done), f"seed {SEED}: {name} cannot be enabled again"
    events = [dict(e, id="meta:" + e["mid"]) for e in sender.plan]
    acked = [e for e in events if e["status"] is not None and 200 <= e["status"] < 300]
    acked_ids = [e["id"] for e in acked]
    log(f"ingest answered 2xx to {len(acked)} of {len(events)}")
    assert len(acked) >= len(events) * 0.9, f"seed {SEED}: ingest refused too many events"
    retry_rng = random.Random(master.random())
    for rnd in range(4):
        missing, active, running = settle(stack, acked_ids, log)
        failed = stack.query("SELECT r.id::text, w.name FROM runs r JOIN workflows w ON "
                             "w.id = r.workflow_id WHERE r.status = 'failed' AND (r.error LIKE "
                             "'%%has no active%%connection%%' OR r.error LIKE "
                             "'%%rejected the connection''s credentials%%')")
        log(f"round {rnd}: {len(missing)} events not taken in, {active} unfinished runs, "
            f"{running} running attempts; {len(failed)} runs failed for a switched-off "
            "connection")
        if not failed or rnd == 3:
            break
        for rid, name in failed:
            soak.retry(rid, retry_rng, done, name)
    log(f"settled after {time.monotonic() - t_start:.1f}s; final API work: {dict(done)}")

    # ---- what happened
    acme = api.tenant["acme-laundry"]
    wid_name = {v: k for k, v in soak.wf.items()}
    runs = stack.query(
        "SELECT r.id::text, r.event_id, r.workflow_id::text, r.status, r.error, r.lease_owner,"
        " r.workflow_version, r.generation, r.created_at FROM runs r WHERE r.tenant_id = %s", acme)
    attempts = collections.defaultdict(list)   # run id -> attempts of every generation
    for row in stack.query(
            "SELECT a.run_id::text, a.node_id, a.attempt, a.status, a.input::text,"
            " coalesce(a.generation, r.generation), a.started_at, a.http_status, a.error, true"
            " FROM node_attempts a JOIN runs r ON r.id = a.run_id WHERE r.tenant_id = %s"
            " UNION ALL SELECT h.run_id::text, h.node_id, h.attempt, h.status, h.input::text,"
            " h.generation, h.started_at, h.http_status, h.error, false"
            " FROM node_attempt_history h JOIN runs r ON r.id = h.run_id"
            " WHERE r.tenant_id = %s", acme, acme):
        attempts[row[0]].append({"node": row[1], "attempt": row[2], "status": row[3],
                                 "input": json.loads(row[4]) if row[4] else None,
                                 "generation": row[5], "started_at": row[6], "http": row[7],
                                 "error": row[8], "current": row[9]})
    received = dict(stack.query("SELECT event_id, received_at FROM event_keys"))
    templates = {}                             # (wid, version) -> SMS body template
    for wid, version, definition in stack.query(
            "SELECT workflow_id::text, version, definition::text FROM workflow_versions"):
        templates[(wid, version)] = sms_template(json.loads(definition))
    gen_version = collections.defaultdict(dict)  # run id -> {generation: version it ran}
    for subject, detail in stack.query("SELECT subject_id, detail::text FROM audit_log WHERE "
                                       "action = 'run.retried' ORDER BY id"):
        d = json.loads(detail)
        gen_version[subject].setdefault(d["generation"] - 1, d["previous_version"])
        gen_version[subject][d["generation"]] = d["workflow_version"]
    wf_enabled, wf_versions, conn_switches = audit_timelines(stack, list(soak.wf.values()))
    # A switch is stamped when its transaction began and took effect by its commit, at most the
    # slowest change request later; around it either state may have been seen.
    grace = GRACE + api.write_lag
    log(f"grace around a switch: {grace:.2f}s (slowest change request {api.write_lag:.2f}s)")
    sms = collections.defaultdict(list)        # tag -> bodies the fake Twilio sent
    for m in stack.fakes.objects("twilio").get("messages", []):
        for word in (m.get("body") or "").split():
            if word.startswith(("soak-", "simu-")):
                sms[word].append(m["body"])
    invoices = collections.Counter(i.get("Reference") for i in
                                   stack.fakes.objects("xero").get("invoices", []))
    statuses = collections.Counter(r[3] for r in runs)
    log(f"runs by status: {dict(statuses)}; SMS {sum(len(v) for v in sms.values())}, "
        f"invoices {sum(invoices.values())}; versions saved "
        f"{ {wid_name[w]: len(v) for w, v in wf_versions.items() if v} }; switches "
        f"{ {wid_name[w]: len(v) for w, v in wf_enabled.items() if v} } "
        f"{ {c: len(v) for c, v in conn_switches.items()} }")
    bad = problems

    by_event = collections.defaultdict(list)
    for r in runs:
        by_event[r[1]].append(r)
    known = {e["id"] for e in events}
    cov = collections.Counter()   # how many cases each check really judged

    # 1. events and runs
    for ev in events:
        rs = by_event.get(ev["id"], [])
        per_wf = collections.Counter(r[2] for r in rs)
        if any(n > 1 for n in per_wf.values()):
            bad("1 at most one run per event and workflow", f"{ev['tag']}: {per_wf}")
        want = soak.wf[WORKFLOW_OF[ev["kind"]]]
        others = [wid_name.get(r[2], r[2]) for r in rs if r[2] != want]
        if others:
            bad("1 no run for a workflow the event does not trigger", f"{ev['tag']}: {others}")
        if ev not in acked:
            continue
        t = received.get(ev["id"])
        if t is None:
            bad("1 every acknowledged event is taken in", f"{ev['tag']} ({ev['id']})")
            continue
        # README "Engine workers": intake matches the tenant's enabled workflows, finding the
        # tenant from the page's connection (intake.c: status 'active').
        on = states_near(wf_enabled[want], True, t, grace)
        page_on = states_near(conn_switches.get("meta", []), True, t, grace)
        n = per_wf.get(want, 0)
        cov["1 events judged: one run" if on == {True} and page_on == {True} else
            "1 events judged: no run" if on == {False} or page_on == {False} else
            "1 events near a switch (0 or 1 run)"] += 1
        if on == {True} and page_on == {True} and n != 1:
            bad("1 exactly one run when the workflow was enabled and the page connected",
                f"{ev['tag']} ({ev['kind']}, taken in {t}): {n} runs")
        if (on == {False} or page_on == {False}) and n != 0:
            bad("1 no run when the workflow was disabled or the page's connection off",
                f"{ev['tag']} ({ev['kind']}, taken in {t}, enabled {on}, page {page_on}): "
                f"{n} runs")

    for r in runs:
        run_id, event_id, wid, status, error, lease, version, generation, created = r
        if event_id not in known:
            continue
        ev = next(e for e in events if e["id"] == event_id)
        name = wid_name.get(wid, wid)
        error = error or ""
        atts = attempts.get(run_id, [])
        where = f"{ev['tag']} run {run_id} ({name} v{version} gen {generation})"

        # 2. every run finishes, for an explained reason; nothing is held
        if status not in ("succeeded", "failed"):
            bad("2 every run finishes", f"{where}: {status}")
        if lease is not None:
            bad("2 no lease left behind", f"{where}: {lease}")
        if any(a["status"] == "running" for a in atts):
            bad("2 no attempt left 'running'", where)
        explained = ("has no active", "gave up after", "outcome is unknown",
                     "rejected the connection's credentials")
        if status == "failed" and not any(x in error for x in explained):
            bad("2 a failed run says why", f"{where}: {error}")
        for a in atts:
            conn = CONNECTION_OF_NODE.get(a["node"])
            if conn is None:
                continue
            near = states_near(conn_switches.get(conn, []), True, a["started_at"], grace)
            if a["status"] == "failed" and "has no active" in (a["error"] or "") \
                    and near == {True}:
                bad("2 a run fails for a missing connection only when it is off",
                    f"{where}: {a['node']} attempt {a['attempt']} at {a['started_at']} "
                    f"({a['error']}) while {conn} was active")
            if a["http"] == 401 and not switch_near(conn_switches.get(conn, []),
                                                    a["started_at"], grace):
                # Twilio's auth token changes only while the connection is off, and the
                # connection comes back with the new one: a 401 away from a switch is a call
                # made with credentials the connection no longer has.
                bad("2 a reconnected connection's old credentials are not used",
                    f"{where}: {a['node']} attempt {a['attempt']} at {a['started_at']} got "
                    f"401 ({a['error']})")
            if a["http"] is not None and near == {False}:
                # README "Engine workers": a disabled connection is not used for another call.
                bad("2 a disabled connection is not used for another call",
                    f"{where}: {a['node']} attempt {a['attempt']} called at {a['started_at']} "
                    f"while {conn} was disabled")

        # 3. the version a run records: current when its event was taken in (generation 1)
        versions = gen_version.get(run_id, {})
        v1 = versions.get(1, version)
        t = received.get(event_id)
        if t is not None:
            near = states_near(wf_versions[wid], 1, t, grace)
            cov["3 runs judged on their version" if len(near) == 1 else
                "3 runs near a new version (either)"] += 1
            if v1 not in near:
                bad("3 a run records the version current when its event was taken in",
                    f"{where}: generation 1 ran v{v1}, current then {sorted(near)}")
        if generation not in versions:
            versions = dict(versions)
            versions[generation] = version
        if versions.get(generation) != version:
            bad("3 a retried run records the version it runs", f"{where}: {versions}")

        # 3. every succeeded SMS attempt was rendered from its generation's version
        if name in SMS_FLOWS:
            for a in atts:
                if a["node"] != "sms" or a["status"] != "succeeded":
                    continue
                v = versions.get(a["generation"])
                cov["3 SMS attempts judged on their version"] += 1
                if a["generation"] < generation:
                    cov["3 ... of an earlier generation (kept by a retry)"] += 1
                want = render(templates.get((wid, v)) or "", ev["text"])
                got = (a["input"] or {}).get("body")
                if got != want:
                    bad("3 side effects follow the version the run (generation) records",
                        f"{where}: sms attempt of generation {a['generation']} (v{v}) sent "
                        f"{got!r}, v{v} renders {want!r}")

    # 3. each SMS is one succeeded attempt; no SMS twice unless a retry from the start asked
    for ev in events:
        rs = [r for r in by_event.get(ev["id"], []) if wid_name.get(r[2]) in SMS_FLOWS]
        sent = sorted(sms.get(ev["tag"], []))
        recorded = sorted((a["input"] or {}).get("body") for r in rs
                          for a in attempts.get(r[0], [])
                          if a["node"] == "sms" and a["status"] == "succeeded")
        unknown = [a for r in rs for a in attempts.get(r[0], [])
                   if a["node"] == "sms" and a["status"] == "outcome_unknown"]
        if sent != recorded and not unknown:
            bad("3 every SMS sent is one succeeded attempt (and the reverse)",
                f"{ev['tag']}: sent {sent}, attempts recorded {recorded}")
        starts = sum(1 for r in rs for f, s in soak.retries.get(r[0], [])
                     if f == "start" and s == 202)
        cov["3 events with an SMS workflow run"] += bool(rs)
        cov["3 ... whose run was retried"] += any(soak.retries.get(r[0]) for r in rs)
        if len(sent) > 1 + starts:
            bad("3 no SMS is sent twice for one event (only a retry from the start repeats it)",
                f"{ev['tag']}: {len(sent)} SMS, {starts} retries from the start: {sent}; "
                f"retries {[soak.retries.get(r[0]) for r in rs]}")
        if ev["kind"] in ("invoice", "combo"):
            n = invoices.get(ev["mid"], 0)
            inv_ok = any(a["node"] == "inv" and a["status"] == "succeeded"
                         for r in by_event.get(ev["id"], []) for a in attempts.get(r[0], []))
            # An invoice may exist without a succeeded attempt: the platform acted, then every
            # attempt timed out or lost its answer (the retries carried the same key).
            if n > 1 or (inv_ok and n != 1):
                bad("3 one Xero invoice per event, exactly one when its invoice node succeeded",
                    f"{ev['tag']}: {n} invoices, an invoice attempt succeeded: {inv_ok}")
    simulated = [t for t in sms if t.startswith("simu-")]
    if simulated:
        bad("3 a simulation calls no platform", f"SMS sent for simulations {simulated[:5]}")

    log(f"coverage: {dict(sorted(cov.items()))}")

    # 6. a run seen succeeded stays succeeded
    final = {r[0]: (r[3], r[7]) for r in runs}
    for rid, gen in soak.seen_succeeded.items():
        if final.get(rid) != ("succeeded", gen):
            bad("6 a run seen succeeded stays succeeded", f"{rid}: seen succeeded at generation "
                                                          f"{gen}, now {final.get(rid)}")

    # 5. hostile requests changed nothing
    hostile_audit = stack.query("SELECT action, subject_id FROM audit_log WHERE actor = %s",
                                HOSTILE)
    if hostile_audit:
        bad("5 a refused request changes nothing", f"audit rows by {HOSTILE}: {hostile_audit}")
    rival_after = stack.query(
        "SELECT w.enabled, w.current_version, w.deleted_at, r.status, r.generation "
        "FROM workflows w JOIN runs r ON r.workflow_id = w.id WHERE w.id = %s", soak.rival_wf)
    if rival_after != rival_before:
        bad("5 another tenant's objects are untouched", f"{rival_before} -> {rival_after}")

    with api.lock:
        answered = sum(api.count.values())
        by_status = collections.Counter(s for (_, _, s) in api.count.elements())
    log(f"API: {answered} answers {dict(sorted(by_status.items()))}; slowest "
        f"{api.slowest[0]:.2f}s ({api.slowest[1]})")
    elapsed = time.monotonic() - t_start
    log(f"checked in {elapsed:.1f}s; {problems.count()} violation(s)")
    assert not problems.count(), (f"HOOKFLOW_API_SOAK_SEED={SEED}\n" + problems.report() +
                                  "\n\nsoak log:\n" + log.text())
