"""enginestack: the whole hookflow stack for engine tests — PostgreSQL (migrated), the dev broker,
the platform fakes, hookflow-ingest, and hookflow-engine workers — plus the tenant configuration
they run (applied with `hookflow-engine apply`)."""

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import harness
import signing

sys.path.insert(0, os.path.join(harness.source_dir(), "tests", "fakes"))
from fakes import FakePlatforms  # noqa: E402

TOKEN_KEY = base64.b64encode(bytes(range(32))).decode()
META_SECRET = "engine-test-app-secret"
PAGE = "104877"
XERO_TENANT = "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"
TWILIO_SID = "AC0123456789abcdef0123456789abcdef"
HUBSPOT_PORTAL = "33"
EXTRA_PAGES = [str(200001 + i) for i in range(6)]  # more accounts: more Kafka keys
TERMINAL = ("succeeded", "failed", "cancelled")  # a run's final states

SECRETS = {
    "meta/app_secret": META_SECRET,
    "meta/verify_token": "verify",
    "engine/token_key": TOKEN_KEY,
    "xero/client_id": "xero-client",
    "xero/client_secret": "xero-client-secret",
    "hubspot/client_id": "hubspot-client",
    "hubspot/client_secret": "hubspot-client-secret",
}


def action(node_id, connector, act, params, **extra):
    n = {"id": node_id, "type": "action", "connector": connector, "action": act, "params": params}
    n.update(extra)
    return n


SMS = {"to": "+14155550100", "from": "+14155559876", "body": "Pickup: {{event.payload.message.text}}"}
FAST_RETRY = {"max_attempts": 3, "initial_ms": 200, "max_ms": 1000}


INVOICE = {"contact_id": "5b96e86b-418e-48e8-8949-308c14aec278",
           "line_items": [{"description": "Wash and fold", "quantity": 1, "unit_amount": 25,
                           "account_code": "200"}],
           "reference": "{{event.payload.message.mid}}"}


def message_workflow(name, word, nodes, edges=()):
    """An enabled workflow run by the Messenger messages whose text contains word."""
    return {"name": name, "enabled": True, "definition": {
        "name": name,
        "trigger": {"connector": "meta", "event": "message",
                    "filter": f"event.payload.message.text contains '{word}'"},
        "nodes": nodes, "edges": list(edges)}}


def workflows():
    """One workflow per behaviour under test, told apart by a word in the Messenger text."""
    wf, invoice = message_workflow, INVOICE
    return [
        wf("SMS on pickup", "pickup", [action("sms", "twilio", "send_message", SMS, retry=FAST_RETRY)]),
        wf("Invoice", "invoice", [action("inv", "xero", "create_invoice", invoice, retry=FAST_RETRY,
                                         timeout_ms=5000)]),
        wf("Later", "later", [{"id": "wait", "type": "delay", "delay_ms": 4000},
                              action("sms", "twilio", "send_message", SMS)],
           [{"from": "wait", "to": "sms"}]),
        wf("CRM", "crm", [action("crm", "hubspot", "upsert_contact",
                                 {"email": "{{event.payload.sender.id}}@example.com"},
                                 retry=FAST_RETRY, timeout_ms=5000)]),
        wf("Branch", "branch", [
            {"id": "vip", "type": "condition", "if": "event.payload.message.text contains 'vip'"},
            action("yes", "twilio", "send_message", SMS),
            action("no", "hubspot", "upsert_contact", {"email": "no@example.com"})],
           [{"from": "vip", "to": "yes", "when": True}, {"from": "vip", "to": "no", "when": False}]),
    ]


def config():
    return {"tenants": [{
        "slug": "acme-laundry", "name": "Acme Laundry", "environment": "sandbox",
        "support_approvals": [{"connector": "meta", "approved_by": "support@hookflow.dev"}],
        "connections": [
            {"connector": "meta", "account": PAGE, "status": "active", "scopes": ["pages_messaging"],
             "access_token": "meta-page-token"},
            *[{"connector": "meta", "account": page, "status": "active",
               "scopes": ["pages_messaging"], "access_token": "meta-page-token-" + page}
              for page in EXTRA_PAGES],
            {"connector": "twilio", "account": TWILIO_SID, "status": "active", "scopes": [],
             "access_token": "twilio-auth-token"},
            {"connector": "xero", "account": XERO_TENANT, "status": "active",
             "scopes": ["offline_access", "accounting.invoices"],
             "access_token": "xero-access-1", "refresh_token": "xero-refresh-1",
             "expires_at": "2099-01-01T00:00:00Z"},
            {"connector": "hubspot", "account": HUBSPOT_PORTAL, "status": "active",
             "scopes": ["crm.objects.contacts.write"],
             "access_token": "hubspot-access-1", "refresh_token": "hubspot-refresh-1"},
        ],
        "workflows": workflows()}]}


class Stack:
    def __init__(self, postgres, partitions=3):
        self.db_url = postgres.fresh_db("eng")
        self.pg = postgres
        out = subprocess.run([harness.bin("hookflow-engine"), "migrate"], capture_output=True,
                             text=True, env=dict(os.environ, HOOKFLOW_DATABASE_URL=self.db_url),
                             timeout=120)
        assert out.returncode == 0, out.stderr
        self.broker = harness.DevBroker(partitions=partitions).start()
        self.fakes = FakePlatforms.start(harness.temp_dir("fakes"))
        self.fakes.tokens("twilio", account_sid=TWILIO_SID, auth_token="twilio-auth-token")
        self.fakes.tokens("xero", access_token="xero-access-1", refresh_token="xero-refresh-1",
                          client_id="xero-client", client_secret="xero-client-secret",
                          tenants=[XERO_TENANT])
        self.fakes.tokens("hubspot", access_token="hubspot-access-1",
                          refresh_token="hubspot-refresh-1", client_id="hubspot-client",
                          client_secret="hubspot-client-secret")
        self.secrets_dir = harness.temp_dir("secrets")
        harness.write_secrets(self.secrets_dir, SECRETS)
        self.apply(config())
        self.ingest_port = harness.free_port()
        self.ingest_base = f"http://127.0.0.1:{self.ingest_port}"
        self.ingest = self.start_ingest()
        self.workers = []

    def start_ingest(self):
        """hookflow-ingest on this stack's port (again, after the last one stopped)."""
        proc = harness.Proc([harness.bin("hookflow-ingest")], name="ingest", env={
            "HOOKFLOW_KAFKA_BROKERS": self.broker.bootstrap,
            "HOOKFLOW_SECRETS_DIR": self.secrets_dir,
            "HOOKFLOW_INGEST_LISTEN": f"127.0.0.1:{self.ingest_port}",
            "HOOKFLOW_INGEST_THREADS": "1",
        })
        harness.wait_http(self.ingest_base + "/healthz", proc=proc, timeout=30)
        return proc

    def apply(self, cfg):
        path = os.path.join(harness.temp_dir("apply"), "config.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        out = subprocess.run([harness.bin("hookflow-engine"), "apply", path], capture_output=True,
                             text=True, timeout=120, env=dict(
                                 os.environ, HOOKFLOW_DATABASE_URL=self.db_url,
                                 HOOKFLOW_SECRETS_DIR=self.secrets_dir))
        assert out.returncode == 0, out.stderr

    def worker_env(self, **extra):
        env = {
            "HOOKFLOW_DATABASE_URL": self.db_url,
            "HOOKFLOW_KAFKA_BROKERS": self.broker.bootstrap,
            "HOOKFLOW_SECRETS_DIR": self.secrets_dir,
            "HOOKFLOW_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "HOOKFLOW_WORKER_POLL_MS": "50",
            "HOOKFLOW_WORKER_LEASE_MS": "3000",
            "HOOKFLOW_SHUTDOWN_TIMEOUT_MS": "5000",
        }
        env.update(self.fakes.env())
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start_worker(self, name=None, **extra):
        port = harness.free_port()
        env = self.worker_env(HOOKFLOW_WORKER_LISTEN=f"127.0.0.1:{port}", **extra)
        w = harness.Proc([harness.bin("hookflow-engine"), "work"], env=env,
                         name=name or f"worker{len(self.workers) + 1}")
        w.ops = f"http://127.0.0.1:{port}"
        harness.wait_http(w.ops + "/healthz", proc=w, timeout=60)  # ASan, a loaded machine
        self.workers.append(w)
        return w

    def post_meta(self, text, mid, sender="6123", page=PAGE, timeout=15):
        """Posts one signed Messenger delivery through ingest: (status, body), or (None, error)
        when ingest did not answer."""
        now = int(time.time() * 1000)
        delivery = {"object": "page", "entry": [{"id": page, "time": now, "messaging": [
            {"sender": {"id": sender}, "recipient": {"id": page}, "timestamp": now,
             "message": {"mid": mid, "text": text}}]}]}
        body, headers = signing.meta(META_SECRET, delivery)
        try:
            status, _, resp = harness.http(
                "POST", f"{self.ingest_base}/api/integrations/webhooks/meta", body=body,
                headers=headers, timeout=timeout)
        except (OSError, http.client.HTTPException) as e:
            return None, repr(e)
        return status, resp

    def send(self, text, mid=None, sender="6123", page=PAGE):
        """Posts one signed Messenger delivery through ingest, which must take it; returns the
        event id."""
        mid = mid or "m_" + uuid.uuid4().hex
        status, resp = self.post_meta(text, mid, sender, page)
        assert status == 200, resp
        return "meta:" + mid

    def query(self, sql, *args):
        conn = self.pg.connect(self.db_url)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def runs_for(self, event_id):
        return self.query("SELECT r.id, w.name, r.status, r.error FROM runs r JOIN workflows w "
                          "ON w.id = r.workflow_id WHERE r.event_id = %s ORDER BY w.name", event_id)

    def wait_run(self, event_id, status="succeeded", timeout=60, count=1):
        def done():
            rows = self.runs_for(event_id)
            finals = [r for r in rows if r[2] in ("succeeded", "failed")]
            if len(rows) >= count and len(finals) == len(rows):
                return rows
            return None
        rows = harness.wait_until(done, timeout=timeout, interval=0.2,
                                  what=f"runs of {event_id} to finish")
        if status:
            assert all(r[2] == status for r in rows), rows
        return rows

    def settle_state(self, acked_ids):
        """What keeps the stack from having settled: the acknowledged event ids without a run,
        the (event_id, status) of unfinished runs, the number of 'running' attempts; and the
        number of runs."""
        runs = self.query("SELECT event_id, status FROM runs")
        have = {e for e, _ in runs}
        missing = [e for e in acked_ids if e not in have]
        active = [r for r in runs if r[1] not in TERMINAL]
        running = self.query("SELECT count(*) FROM node_attempts WHERE status = 'running'")[0][0]
        return missing, active, running, len(runs)

    def wait_settled(self, acked_ids, timeout, quiet_s, log, min_runs=0):
        """Waits, at most timeout seconds, until every acknowledged event has its run (and there
        are min_runs runs), no run is unfinished, no attempt is running, and nothing (runs,
        attempts, requests to the fakes) changed for quiet_s. Returns the last settle_state;
        a timeout is logged and left to the caller's checks."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while True:
            state = self.settle_state(acked_ids)
            missing, active, running, nruns = state
            snap = (nruns, len(active), running, self.fakes.stats()["total_requests"])
            if not missing and not active and not running and nruns >= min_runs and snap == last:
                if time.monotonic() - since >= quiet_s:
                    return state
            else:
                last, since = snap, time.monotonic()
            if time.monotonic() > deadline:
                log(f"settling timed out after {timeout:.0f}s: {len(missing)} acknowledged "
                    f"events without a run, {len(active)} unfinished runs, {running} running "
                    f"attempts, {nruns} runs of {min_runs} expected")
                return state
            time.sleep(0.25)

    def attempts(self, run_id):
        return self.query("SELECT node_id, attempt, status, http_status, error, idempotency_key, "
                          "input::text, output::text FROM node_attempts WHERE run_id = %s "
                          "ORDER BY id", run_id)

    def stop(self):
        for w in self.workers:
            if w.alive():
                w.stop(signal.SIGTERM, 20)
        self.ingest.stop()
        self.fakes.stop()
        self.broker.stop()
