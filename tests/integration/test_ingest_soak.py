"""Integration: a seeded soak of hookflow-ingest alone (Ingest HTTP, Event envelope and Guarantees 1
and 5 of DESIGN.md under mixed load and faults, where test_ingest.py checks one thing at a time).

For SOAK_SECONDS several sender threads post deliveries of all six platforms (Xero, QuickBooks
legacy + CloudEvents, HubSpot v1/v2/v3 arrays + workflow objects, Klaviyo system + flow, Twilio
form + JSON, Meta), batches of 1-20 events, ~15% redeliveries of an earlier delivery (same body,
signed afresh), over keep-alive and fresh connections, plus a share of bad deliveries (tampered
body, wrong key, stale timestamp, missing signature header, wrong method, oversized body,
malformed JSON that is correctly signed). At the same time:

- a rotation thread rotates one signing secret at a time (README "Secrets"): the new key goes to
  `<name>`, the old one to `<name>.previous`, SIGHUP; later `.previous` is removed, SIGHUP. Each
  sender thread switches to the new key at its own random point, so old-key deliveries keep
  arriving while `.previous` exists (must be accepted) and after it is gone (must be refused);
- a fault thread takes a Kafka broker down for 1-3 s, makes Produce requests fail (the broker
  drops the connection: see Soak.faults for why not error answers) and adds rtt;
- a restart thread sends ingest SIGTERM once mid-soak (it must drain and exit 0) and starts a new
  one (on a new port; the senders move over);
- a monitor thread scrapes /metrics (it must stay parsable, counters never go down).

Then the stack settles, ingest is stopped, every topic is read back from the beginning and the
invariants are checked from what was sent, what was answered and what is in Kafka, never from
timing (the key a request was signed with counts as "configured" only when it was configured for
the whole time the request was under way; around a reload either answer is right):

1. every delivery answered 2xx has every one of its events in Kafka, with the right provider,
   event (catalog name), account, key (provider:account) and topic (<prefix>.webhooks.<category>);
2. an id is in Kafka only if some attempt carrying it was answered 2xx, 503 or not at all (ingest
   may have produced part of a delivery it then answered 503); an envelope attributable (by its
   request_id) to one attempt carries one of that attempt's ids;
3. redeliveries carry the same ids (their bodies are identical); no id in Kafka that no delivery
   carried;
4. bad deliveries get the documented status with a JSON error body (Xero: empty bodies) and
   produce nothing; a good delivery signed with a key configured throughout is never refused,
   one signed with a key never configured is always refused (401);
5. /metrics stays parsable, counters are monotonic, and at the end the per-provider counters of
   the last ingest are consistent with each other and with what the senders saw;
6. no 5xx but the documented 503s (with Retry-After); every ingest exits 0 on SIGTERM; no
   sanitizer report; no connection error from an ingest that was not told to stop (except on a
   reused keep-alive connection, which a server may close).

Reported, not asserted: the same event produced twice by one attempt (a retry of a batch the
dev broker had already appended; allowed, ids are stable and the engine deduplicates them).

The seed comes from HOOKFLOW_INGEST_SOAK_SEED (else the clock) and is printed. The choices follow
the seed; the timing of the processes does not.
"""

import base64
import collections
import hashlib
import hmac
import http.client as http_client
import json
import math
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

import harness
import signing

SEED = int(os.environ.get("HOOKFLOW_INGEST_SOAK_SEED") or (time.time_ns() // 1000) % 1_000_000_007)

SOAK_SECONDS = 25.0
SENDER_THREADS = 6
PUBLIC = "https://hooks.example.com"
MAX_BODY = 65536              # HOOKFLOW_INGEST_MAX_BODY_BYTES (small: cheap oversized bodies)
REDELIVERY_SHARE = 0.15
BAD_SHARE = 0.12
PARTITIONS = 12
RATE = 160                    # deliveries/s, all senders together (bounds the topics' volume)
PREFIX = "hookflow"
WEBHOOKS = "/api/integrations/webhooks/"

SIGNING_PATHS = ["xero/webhook_key", "quickbooks/verifier_token", "hubspot/client_secret",
                 "klaviyo/webhook_secret", "klaviyo/flow_secret", "twilio/auth_token",
                 "meta/app_secret"]

KINDS = {  # kind -> (provider, secret path, weight)
    "xero": ("xero", "xero/webhook_key", 10),
    "qbo_legacy": ("quickbooks", "quickbooks/verifier_token", 6),
    "qbo_ce": ("quickbooks", "quickbooks/verifier_token", 6),
    "hs_v1": ("hubspot", "hubspot/client_secret", 4),
    "hs_v2": ("hubspot", "hubspot/client_secret", 4),
    "hs_v3": ("hubspot", "hubspot/client_secret", 5),
    "kl_sys": ("klaviyo", "klaviyo/webhook_secret", 6),
    "kl_flow": ("klaviyo", "klaviyo/flow_secret", 5),
    "tw_form": ("twilio", "twilio/auth_token", 7),
    "tw_json": ("twilio", "twilio/auth_token", 5),
    "meta": ("meta", "meta/app_secret", 10),
}
BAD_KINDS = ["tampered", "wrong_key", "stale", "missing_header", "wrong_method", "oversized",
             "malformed"]
# Rejection reasons (metrics label) -> the HTTP status they are answered with.
REASON_STATUS = {"malformed": 400, "bad_signature": 401, "missing_signature": 401,
                 "stale_timestamp": 401, "bad_verify_token": 403, "method_not_allowed": 405,
                 "payload_too_large": 413, "kafka_unavailable": 503, "overloaded": 503,
                 "shutting_down": 503, "missing_secret": 503, "unknown_provider": 404}
ERRORS_503 = {"kafka_unavailable", "overloaded", "shutting_down"}


def _catalog():
    """provider -> (category, {native type: catalog event name}) from schemas/catalog."""
    out = {}
    d = os.path.join(harness.source_dir(), "schemas", "catalog")
    for name in os.listdir(d):
        if name.endswith(".json"):
            with open(os.path.join(d, name)) as f:
                c = json.load(f)
            natives = {n: e["name"] for e in c["webhook_events"] for n in e["native_types"]}
            out[c["id"]] = (c["category"], natives)
    return out


CATALOG = _catalog()


def _envelope_validator():
    import jsonschema
    with open(os.path.join(harness.source_dir(), "schemas", "envelope.schema.json")) as f:
        return jsonschema.Draft202012Validator(json.load(f))


# ------------------------------------------------------------------------------------ helpers

Log = harness.TimedLog


def derive_id(provider, *fields):
    """ingest_derive_id (ingest/provider.h): "<provider>:" + 32 hex of SHA-256 over the fields
    joined with 0x1f (our fields never hold 0x1e/0x1f)."""
    return f"{provider}:" + hashlib.sha256("\x1f".join(fields).encode()).hexdigest()[:32]


def b64_hmac(key, msg, alg=hashlib.sha256):
    return base64.b64encode(hmac.new(key.encode(), msg, alg).digest()).decode()


def compact(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def parse_metrics(text):
    """Prometheus text -> {(name, labels-string): float}; raises ValueError on a bad line."""
    out = {}
    rx = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^{}]*\})?\s+(\S+)(\s+-?\d+)?$')
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            if line.startswith("#") and not re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* ",
                                                       line + " "):
                raise ValueError(f"bad comment line {line!r}")
            continue
        m = rx.match(line)
        if not m:
            raise ValueError(f"bad sample line {line!r}")
        v = m.group(3)
        value = float(v.replace("+Inf", "inf").replace("-Inf", "-inf"))
        key = (m.group(1), m.group(2) or "")
        if key in out:
            raise ValueError(f"duplicate sample {key}")
        out[key] = value
    return out


def metric(ms, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return ms.get((name, "{" + want + "}" if want else ""), 0.0)


def labels_of(s):
    return dict(re.findall(r'(\w+)="([^"]*)"', s))


# ----------------------------------------------------------------------------------- secrets

class Secrets:
    """The secrets dir, the keys the senders hold (per thread, switching at their own moment) and
    the timeline of key sets ingest may have held (per path)."""

    def __init__(self, rng):
        self.dir = harness.temp_dir("soak-secrets")
        self.scratch = harness.temp_dir("soak-secrets-tmp")
        self.lock = threading.Lock()
        self.initial = {p: "k0-" + uuid.UUID(int=rng.getrandbits(128)).hex for p in SIGNING_PATHS}
        self.files = dict(self.initial)          # what is on disk: path -> value
        self.versions = {p: [(k, None)] for p, k in self.initial.items()}  # (key, switch times)
        # path -> [(t_window_start, t_window_end, frozenset of accepted keys after)]
        self.changes = {p: [] for p in SIGNING_PATHS}
        harness.write_secrets(self.dir, dict(self.initial, **{"meta/verify_token": "vt-soak"}))

    def write(self, path, value):
        full = os.path.join(self.dir, path)
        tmp = os.path.join(self.scratch, uuid.uuid4().hex)
        with open(tmp, "w") as f:
            f.write(value + "\n")
        os.replace(tmp, full)

    def remove(self, path):
        os.unlink(os.path.join(self.dir, path))

    def key_for(self, path, thread, now):
        with self.lock:
            key = self.versions[path][0][0]
            for k, switch in self.versions[path][1:]:
                if switch[thread] <= now:
                    key = k
            return key

    def add_version(self, path, key, switch):
        with self.lock:
            self.versions[path].append((key, switch))

    def record(self, path, t0, t1, keys):
        with self.lock:
            self.changes[path].append((t0, t1, frozenset(keys)))

    def classify(self, path, key, start, end):
        """'accept' when key was configured for path during all of [start, end], 'reject' when
        during none of it, else 'either'."""
        sets = []
        prev, prev_from = frozenset([self.initial[path]]), -math.inf
        for t0, t1, keys in self.changes[path]:
            # prev possibly active in [prev_from, t1]
            if prev_from <= end and start <= t1:
                sets.append(prev)
            prev, prev_from = keys, t0
        if prev_from <= end:
            sets.append(prev)
        inside = [key in s for s in sets]
        if all(inside):
            return "accept"
        if not any(inside):
            return "reject"
        return "either"


# ---------------------------------------------------------------------------------- deliveries

class Builder:
    """Builds deliveries: body bytes and the events ingest must make of them."""

    def __init__(self, rng):
        self.rng = rng
        r = rng
        self.accounts = {
            "xero": [str(uuid.UUID(int=r.getrandbits(128))) for _ in range(12)],
            "quickbooks": [str(r.randint(10**9, 10**10)) for _ in range(12)],
            "hubspot": [r.randint(100, 99999) for _ in range(12)],
            "klaviyo": [f"KLAV{r.randint(1000, 9999)}" for _ in range(12)],
            "twilio": ["AC" + uuid.UUID(int=r.getrandbits(128)).hex for _ in range(12)],
            "meta": [str(r.randint(10**5, 10**9)) for _ in range(12)],
        }
        self.counter = 0
        self.lock = threading.Lock()

    def uid(self):
        with self.lock:
            self.counter += 1
            n = self.counter
        return f"{n:06d}{uuid.UUID(int=self.rng.getrandbits(128)).hex[:10]}"

    @staticmethod
    def ev(eid, provider, native, account):
        category, natives = CATALOG[provider]
        assert native in natives, (provider, native)  # only mapped types: the event is defined
        return {"id": eid, "provider": provider, "event": natives[native], "native": native,
                "account": str(account), "key": f"{provider}:{account}",
                "topic": f"{PREFIX}.webhooks.{category}"}

    def build(self, kind, n):
        """A delivery dict: kind, provider, path (secret), obj (JSON root or form dict), events."""
        provider, path, _ = KINDS[kind]
        r, acc = self.rng, self.accounts[provider]
        d = {"kind": kind, "provider": provider, "path": path, "events": []}
        evs = d["events"]
        if kind == "xero":
            items = []
            for _ in range(n):
                cat, typ = r.choice([("INVOICE", "CREATE"), ("PAYMENT", "CREATE"),
                                     ("PAYMENT", "UPDATE")])
                rid, tenant = self.uid(), r.choice(acc)
                date = f"2026-11-{r.randint(1, 28):02d}T10:{r.randint(0, 59):02d}:00.000"
                items.append({"resourceUrl": f"https://api.xero.com/api.xro/2.0/X/{rid}",
                              "resourceId": rid, "eventDateUtc": date, "eventType": typ,
                              "eventCategory": cat, "tenantId": tenant,
                              "tenantType": "ORGANISATION"})
                evs.append(self.ev(derive_id("xero", tenant, cat, rid, typ, date), "xero",
                                   f"{cat}.{typ}", tenant))
            d["obj"] = {"events": items, "firstEventSequence": 1, "lastEventSequence": n,
                        "entropy": self.uid()}
        elif kind == "qbo_legacy":
            notes = {}
            for _ in range(n):
                realm = r.choice(acc[:3])
                name = r.choice(["SalesReceipt", "Payment"])
                eid = self.uid()
                upd = f"2026-10-{r.randint(1, 28):02d}T14:42:19-0700"
                notes.setdefault(realm, []).append({"name": name, "id": eid, "operation":
                                                    "Create", "lastUpdated": upd})
                evs.append(self.ev(derive_id("quickbooks", realm, name, eid, "Create", upd),
                                   "quickbooks", f"{name}.Create", realm))
            d["obj"] = {"eventNotifications": [{"realmId": realm, "dataChangeEvent":
                                                {"entities": ents}}
                                               for realm, ents in notes.items()]}
        elif kind == "qbo_ce":
            items = []
            for _ in range(n):
                ce, realm = str(uuid.UUID(int=r.getrandbits(128))), r.choice(acc)
                typ = r.choice(["qbo.salesreceipt.created.v1", "qbo.payment.created.v1"])
                items.append({"specversion": "1.0", "id": ce, "source": "intuit.soak",
                              "type": typ, "datacontenttype": "application/json",
                              "time": "2026-11-27T10:00:00.000Z",
                              "intuitentityid": str(r.randint(1, 999)),
                              "intuitaccountid": realm, "data": {}})
                evs.append(self.ev(f"quickbooks:{ce}", "quickbooks", typ, realm))
            d["obj"] = items
        elif kind.startswith("hs_"):
            if r.random() < 0.2:  # a workflow "send a webhook" object: one event, id from the body
                portal = r.choice(acc)
                obj = {"portalId": portal, "object": {"objectType": "CONTACT",
                                                      "objectId": r.randint(1, 10**6)},
                       "occurredAt": 1700000000000 + r.randint(0, 10**9), "marker": self.uid()}
                body = compact(obj)
                evs.append(self.ev(derive_id("hubspot", str(portal),
                                             hashlib.sha256(body).hexdigest()),
                                   "hubspot", "workflow.webhook", portal))
                d["obj"] = obj
            else:
                items = []
                for _ in range(n):
                    portal, event_id = r.choice(acc), r.randint(1, 10**12)
                    occurred = 1700000000000 + r.randint(0, 10**9)
                    items.append({"objectId": r.randint(1, 10**6), "eventId": event_id,
                                  "subscriptionId": 25, "portalId": portal, "appId": 1160452,
                                  "occurredAt": occurred, "subscriptionType": "contact.creation",
                                  "attemptNumber": 0, "marker": self.uid()})
                    evs.append(self.ev(derive_id("hubspot", str(portal), "25", str(event_id),
                                                 str(occurred)),
                                       "hubspot", "contact.creation", portal))
                d["obj"] = items
        elif kind == "kl_sys":
            account = r.choice(acc)
            items = []
            for _ in range(n):
                ext = self.uid()
                topic = r.choice(["event:klaviyo.email_delivered", "event:klaviyo.sms_delivered",
                                  "event:klaviyo.profile_updated"])
                items.append({"external_id": ext, "topic": topic, "payload": {"id": ext}})
                evs.append(self.ev(f"klaviyo:{ext}", "klaviyo", topic, account))
            d["webhook_id"] = "01SOAK" + self.uid()[:6]
            d["obj"] = {"data": items, "meta": {"klaviyo_account_id": account,
                                                "klaviyo_webhook_id": d["webhook_id"],
                                                "timestamp": "2026-11-27T10:00:00+00:00"}}
        elif kind == "kl_flow":
            items = []
            for _ in range(n):
                fid, account = self.uid(), r.choice(acc)
                items.append({"id": fid, "klaviyo_account_id": account,
                              "topic": "profile_updated", "profile_id": "P" + fid[:6]})
                evs.append(self.ev(f"klaviyo:{fid}", "klaviyo", "flow.profile_updated", account))
            d["obj"] = items if (n > 1 or r.random() < 0.5) else items[0]
        elif kind in ("tw_form", "tw_json"):
            sid, account = "SM" + self.uid() + "0" * 16, r.choice(acc)
            params = {"MessageSid": sid, "AccountSid": account, "From": "+1415555" +
                      f"{r.randint(0, 9999):04d}", "To": "+14155550199", "NumMedia": "0"}
            status = r.choice([None, None, "failed", "undelivered"])
            if status:
                params.update(MessageStatus=status, SmsStatus=status, ErrorCode="30003")
                evs.append(self.ev(f"twilio:{sid}:{status}", "twilio", f"status.{status}",
                                   account))
            else:
                params.update(Body=f"soak message {sid[-6:]}", SmsStatus="received")
                evs.append(self.ev(f"twilio:{sid}", "twilio", "inbound", account))
            d["inbound"] = not status
            d["obj"] = params
        elif kind == "meta":
            entries = {}
            for _ in range(n):
                page, mid = r.choice(acc), "m_" + self.uid()
                item = {"sender": {"id": f"psid{r.randint(1, 50)}"}, "recipient": {"id": page},
                        "timestamp": 1700000000000 + r.randint(0, 10**9)}
                if r.random() < 0.8:
                    item["message"] = {"mid": mid, "text": "soak"}
                    native = "message"
                else:
                    item["postback"] = {"mid": mid, "title": "Go", "payload": "GO"}
                    native = "postback"
                entries.setdefault(page, []).append(item)
                evs.append(self.ev(f"meta:{mid}", "meta", native, page))
            d["obj"] = {"object": "page", "entry": [{"id": p, "time": 1700000000000,
                                                     "messaging": items}
                                                    for p, items in entries.items()]}
        d["body"] = self.encode(d, d["obj"])
        return d

    @staticmethod
    def encode(d, obj):
        if d["kind"] == "tw_form":
            return urllib.parse.urlencode(obj).encode()
        return compact(obj)


def sign(d, body, key, *, method="POST", stale=False):
    """(path with query, headers) for posting body of delivery d signed with key."""
    kind, path = d["kind"], WEBHOOKS + d["provider"]
    url = PUBLIC + path
    if kind == "xero":
        return path, {"Content-Type": "application/json", "x-xero-signature": b64_hmac(key, body)}
    if kind in ("qbo_legacy", "qbo_ce"):
        return path, {"Content-Type": "application/json", "intuit-signature": b64_hmac(key, body)}
    if kind == "hs_v1":
        return path, signing.hubspot_v1(key, body)[1]
    if kind == "hs_v2":
        sig = hashlib.sha256(key.encode() + method.encode() + url.encode() + body).hexdigest()
        return path, {"Content-Type": "application/json", "X-HubSpot-Signature": sig,
                      "X-HubSpot-Signature-Version": "v2"}
    if kind == "hs_v3":
        ts = int(time.time() * 1000) - (6 * 60 * 1000 if stale else 0)
        return path, signing.hubspot_v3(key, url, body, ts_ms=ts, method=method)[1]
    if kind == "kl_sys":
        when = time.time() - (3600 if stale else 0)
        return path, signing.klaviyo(key, body, d["webhook_id"], when=when)[1]
    if kind == "kl_flow":
        return path, {"Content-Type": "application/json", "X-Hookflow-Flow-Secret": key}
    if kind == "tw_form":
        params = dict(urllib.parse.parse_qsl(body.decode("latin-1"), keep_blank_values=True))
        data = url + "".join(k + params[k] for k in sorted(params))
        return path, {"Content-Type": "application/x-www-form-urlencoded",
                      "X-Twilio-Signature": b64_hmac(key, data.encode(), hashlib.sha1)}
    if kind == "tw_json":
        q = "?bodySHA256=" + hashlib.sha256(body).hexdigest()
        return path + q, {"Content-Type": "application/json",
                          "X-Twilio-Signature": b64_hmac(key, (url + q).encode(), hashlib.sha1)}
    if kind == "meta":
        return path, signing.meta(key, body)[1]
    raise AssertionError(kind)


SIG_HEADERS = {"xero": ["x-xero-signature"], "qbo_legacy": ["intuit-signature"],
               "qbo_ce": ["intuit-signature"], "hs_v1": ["X-HubSpot-Signature"],
               "hs_v2": ["X-HubSpot-Signature"], "hs_v3": ["X-HubSpot-Signature-v3"],
               "kl_sys": ["Klaviyo-Signature"], "kl_flow": ["X-Hookflow-Flow-Secret"],
               "tw_form": ["X-Twilio-Signature"], "tw_json": ["X-Twilio-Signature"],
               "meta": ["X-Hub-Signature-256"]}


def bad_kinds_for(kind):
    out = list(BAD_KINDS)
    if kind == "kl_flow":
        out.remove("tampered")       # flow webhooks are not signed over the body
    if kind not in ("hs_v3", "kl_sys"):
        out.remove("stale")          # only these carry a timestamp
    if kind == "tw_form":
        out.remove("malformed")      # a form always parses
    return out


# ------------------------------------------------------------------------------------ ingest

class Gen:
    """One ingest process (a generation: the restart makes the next)."""

    def __init__(self, n, broker, secrets_dir):
        self.n = n
        self.port = harness.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            "HOOKFLOW_KAFKA_BROKERS": broker.bootstrap,
            "HOOKFLOW_SECRETS_DIR": secrets_dir,
            "HOOKFLOW_INGEST_LISTEN": f"127.0.0.1:{self.port}",
            "HOOKFLOW_PUBLIC_BASE_URL": PUBLIC,
            "HOOKFLOW_INGEST_THREADS": "2",
            "HOOKFLOW_INGEST_MAX_BODY_BYTES": str(MAX_BODY),
            "HOOKFLOW_CATALOG_DIR": os.path.join(harness.source_dir(), "schemas", "catalog"),
        }
        self.proc = harness.Proc([harness.bin("hookflow-ingest")], env=env,
                                 name=f"ingest-soak-g{n}")
        self.sigterm_at = None
        self.exit_code = None
        harness.wait_http(self.base + "/healthz", proc=self.proc, timeout=30)

    def count_log(self, needle):
        return sum(1 for line in self.proc.log_lines() if needle in line)


# ------------------------------------------------------------------------------------ soak

class Soak:
    def __init__(self, broker, log):
        self.broker, self.log = broker, log
        master = random.Random(SEED)
        self.rngs = {name: random.Random(master.random()) for name in
                     ("secrets", "builder", "faults", "rotation", "restart", "monitor")}
        self.sender_rngs = [random.Random(master.random()) for _ in range(SENDER_THREADS)]
        self.secrets = Secrets(self.rngs["secrets"])
        self.builder = Builder(self.rngs["builder"])
        self.gens = [Gen(0, broker, self.secrets.dir)]
        self.gen = self.gens[0]
        self.gen_lock = threading.Lock()      # rotation vs restart
        self.attempts = []
        self.attempts_lock = threading.Lock()
        self.pool = []                        # good deliveries sent once (for redelivery)
        self.pool_lock = threading.Lock()
        self.deadline = None
        self.errors = []                      # tracebacks of helper threads
        self.problems = collections.defaultdict(list)
        self.scrapes = []                     # (gen n, monotonic time, metrics dict)
        self.done = collections.Counter()
        self.stop_monitor = threading.Event()

    def bad(self, inv, what):
        self.problems[inv].append(what)

    # ---------------------------------------------------------------- sending

    def request(self, conns, method, path, body, headers, fresh, rid):
        gen = self.gen
        hdrs = dict(headers)
        hdrs["X-Request-Id"] = rid
        reused = False
        if fresh:
            conn = http_client.HTTPConnection("127.0.0.1", gen.port, timeout=30)
            hdrs["Connection"] = "close"
        else:
            conn = conns.get(gen.port)
            if conn is None:
                conn = conns[gen.port] = http_client.HTTPConnection("127.0.0.1", gen.port,
                                                                    timeout=30)
            reused = conn.sock is not None
        out = {"gen": gen.n, "fresh": fresh, "reused": reused, "t_start": time.monotonic()}
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            out.update(status=resp.status, body=data,
                       headers={k.lower(): v for k, v in resp.getheaders()})
        except (OSError, http_client.HTTPException) as e:
            out.update(status=None, body=b"", headers={}, exc=repr(e))
            conn.close()
            if not fresh:
                conns.pop(gen.port, None)
        finally:
            out["t_end"] = time.monotonic()
            if fresh:
                conn.close()
        return out

    def sender(self, t):
        rng = self.sender_rngs[t]
        conns = {}
        n = 0
        next_at = time.monotonic()
        try:
            while time.monotonic() < self.deadline:
                n += 1
                rid = f"soak-{t}-{n}"
                roll = rng.random()
                redelivery, bad = False, None
                with self.pool_lock:
                    pool_size = len(self.pool)
                if roll < REDELIVERY_SHARE and pool_size:
                    with self.pool_lock:
                        d = self.pool[rng.randrange(len(self.pool))]
                    redelivery = True
                else:
                    kinds = list(KINDS)
                    if roll < REDELIVERY_SHARE + BAD_SHARE:
                        # The bad kind first, so the rare ones (stale) are not starved.
                        bad = rng.choice(BAD_KINDS)
                        kinds = [k for k in kinds if bad in bad_kinds_for(k)]
                    kind = rng.choices(kinds, [KINDS[k][2] for k in kinds])[0]
                    batchable = kind not in ("tw_form", "tw_json")
                    nev = 1 if not batchable else (rng.randint(1, 20) if rng.random() < 0.5
                                                   else rng.randint(1, 4))
                    d = self.builder.build(kind, nev)
                key = self.secrets.key_for(d["path"], t, time.monotonic())
                method, body = "POST", d["body"]
                stale = bad == "stale"
                if bad == "wrong_key":
                    key = "wrong-" + uuid.uuid4().hex
                if bad == "oversized":
                    obj = d["obj"]
                    pad = "p" * (MAX_BODY + rng.randint(1, MAX_BODY // 2))
                    if d["kind"] == "tw_form":
                        body = Builder.encode(d, dict(obj, Pad=pad))
                    elif isinstance(obj, list):
                        body = Builder.encode(d, [dict(obj[0], pad=pad)] + obj[1:])
                    else:
                        body = Builder.encode(d, dict(obj, pad=pad))
                    assert MAX_BODY < len(body) < 2 * MAX_BODY
                if bad == "malformed":
                    body = body[:max(1, len(body) // 2)]
                if bad == "wrong_method":
                    method = rng.choice(["PUT", "DELETE", "PATCH"] +
                                        ([] if d["provider"] == "meta" else ["GET"]))
                path, headers = sign(d, body, key, method=method, stale=stale)
                if bad == "tampered":
                    if d["kind"] == "tw_form":
                        body = body + b"&Tamper=1"
                    else:
                        body = body[:1] + b" " + body[1:]
                if bad == "missing_header":
                    for h in SIG_HEADERS[d["kind"]]:
                        headers.pop(h, None)
                if method == "GET":
                    body = None
                fresh = rng.random() < 0.3
                res = self.request(conns, method, path, body, headers, fresh, rid)
                res.update(d=d, bad=bad, redelivery=redelivery, key=key, path=d["path"],
                           rid=rid, thread=t, method=method)
                with self.attempts_lock:
                    self.attempts.append(res)
                if bad is None and not redelivery:
                    with self.pool_lock:
                        self.pool.append(d)
                # At most RATE deliveries a second in all, so that no partition nears the
                # dev broker's ~5 MiB retention whatever the machine's speed.
                next_at = max(next_at + rng.uniform(0.5, 1.5) * SENDER_THREADS / RATE,
                              time.monotonic() + 0.001)
                self.sleep_until(next_at)
        except Exception:  # noqa: BLE001 - reported by the test
            self.errors.append(f"sender {t}:\n{traceback.format_exc()}")
        finally:
            for c in conns.values():
                c.close()

    # ---------------------------------------------------------------- rotation

    def hup_and_wait(self):
        gen = self.gen
        before = gen.count_log("secrets.reloaded")
        failed = gen.count_log("secrets.reload_failed")
        gen.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: gen.count_log("secrets.reloaded") > before or
                           gen.count_log("secrets.reload_failed") > failed or
                           not gen.proc.alive(), timeout=30, what="secrets reload")
        if gen.count_log("secrets.reload_failed") > failed:
            raise AssertionError(f"secrets.reload_failed: {gen.proc.tail(5)}")

    def rotation(self):
        rng = self.rngs["rotation"]
        s = self.secrets
        try:
            self.sleep_until(time.monotonic() + rng.uniform(1.0, 3.0))
            while time.monotonic() < self.deadline - 3.0:
                path = rng.choice(SIGNING_PATHS)
                old = s.files[path]
                new = f"k{len(s.versions[path])}-" + uuid.UUID(int=rng.getrandbits(128)).hex
                with self.gen_lock:
                    t0 = time.monotonic()
                    s.write(path + ".previous", old)
                    s.write(path, new)
                    s.files[path] = new
                    switch = [t0 + rng.uniform(0.0, 7.0) for _ in range(SENDER_THREADS)]
                    s.add_version(path, new, switch)
                    self.hup_and_wait()
                    s.record(path, t0, time.monotonic(), {new, old})
                self.log(f"rotated {path}: new key in place, old one in .previous (senders "
                         f"switch within {max(switch) - t0:.1f}s)")
                self.done["rotate"] += 1
                self.sleep_until(time.monotonic() + rng.uniform(1.5, 5.0))
                with self.gen_lock:
                    t0 = time.monotonic()
                    s.remove(path + ".previous")
                    self.hup_and_wait()
                    s.record(path, t0, time.monotonic(), {new})
                self.log(f"removed {path}.previous")
                self.done["remove_previous"] += 1
                self.sleep_until(time.monotonic() + rng.uniform(0.3, 2.0))
        except Exception:  # noqa: BLE001
            self.errors.append(f"rotation:\n{traceback.format_exc()}")

    # ---------------------------------------------------------------- faults

    def sleep_until(self, t):
        while time.monotonic() < t:
            time.sleep(min(0.05, max(0.0, t - time.monotonic())))

    def faults(self):
        rng = self.rngs["faults"]
        b = self.broker
        try:
            kinds = ["down", "produce_errors", "rtt"]
            rng.shuffle(kinds)
            kinds += [rng.choice(["down", "produce_errors", "rtt"]) for _ in range(3)]
            for kind in kinds:
                self.sleep_until(time.monotonic() + rng.uniform(1.5, 4.5))
                if time.monotonic() >= self.deadline - 1.0:
                    break
                if kind == "down":
                    broker, secs = rng.randint(1, 3), rng.uniform(1.0, 3.0)
                    b.ctl_ok(f"broker down {broker}")
                    self.log(f"kafka broker {broker} down for {secs:.1f}s")
                    self.sleep_until(time.monotonic() + secs)
                    b.ctl_ok(f"broker up {broker}")
                    self.log(f"kafka broker {broker} up")
                elif kind == "produce_errors":
                    # Only _TRANSPORT (the connection dropped: every request pipelined behind
                    # the failed one fails with it). An error answer to one of several Produce
                    # requests in flight lets the dev broker take the next one across the
                    # sequence gap, and the failed message is reported delivered (seed 2 once
                    # lost 4 acknowledged events so): deploy/local/README.md, Known behaviour.
                    n = rng.randint(1, 6)
                    b.ctl_ok(f"errors Produce {n} _TRANSPORT")
                    self.log(f"kafka: next {n} Produce requests get the connection dropped")
                else:
                    ms, secs = rng.randint(200, 900), rng.uniform(1.0, 3.0)
                    b.ctl_ok(f"rtt all {ms}")
                    self.log(f"kafka: rtt {ms} ms for {secs:.1f}s")
                    self.sleep_until(time.monotonic() + secs)
                    b.ctl_ok("rtt all 0")
                self.done["broker_" + kind] += 1
        except Exception:  # noqa: BLE001
            self.errors.append(f"faults:\n{traceback.format_exc()}")

    # ---------------------------------------------------------------- restart

    def restart(self):
        rng = self.rngs["restart"]
        try:
            self.sleep_until(time.monotonic() + rng.uniform(7.0, 16.0))
            with self.gen_lock:
                old = self.gen
                old.sigterm_at = time.monotonic()
                old.proc.send_signal(signal.SIGTERM)
                self.log(f"SIGTERM ingest g{old.n} (pid {old.proc.pid})")
                new = Gen(old.n + 1, self.broker, self.secrets.dir)
                self.gens.append(new)
                self.gen = new
                self.log(f"ingest g{new.n} up on port {new.port}; senders move over")
                try:
                    old.exit_code = old.proc.wait(40)
                except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
                    old.exit_code = old.proc.kill()
                self.log(f"ingest g{old.n} exited {old.exit_code}")
            self.done["restart"] += 1
        except Exception:  # noqa: BLE001
            self.errors.append(f"restart:\n{traceback.format_exc()}")

    # ---------------------------------------------------------------- metrics

    def scrape(self, gen):
        status, _, body = harness.http("GET", gen.base + "/metrics", timeout=30)
        if status != 200:
            raise ValueError(f"/metrics answered {status}")
        return parse_metrics(body.decode())

    def monitor(self):
        rng = self.rngs["monitor"]
        try:
            while not self.stop_monitor.is_set():
                gen = self.gen
                try:
                    ms = self.scrape(gen)
                except (OSError, http_client.HTTPException):
                    if gen.sigterm_at is None and gen.proc.alive():
                        self.bad("5 /metrics answers", f"g{gen.n}: connection error")
                    ms = None
                except ValueError as e:
                    self.bad("5 /metrics stays parsable", f"g{gen.n}: {e}")
                    ms = None
                if ms is not None:
                    self.scrapes.append((gen.n, time.monotonic(), ms))
                self.stop_monitor.wait(rng.uniform(0.3, 0.8))
        except Exception:  # noqa: BLE001
            self.errors.append(f"monitor:\n{traceback.format_exc()}")


# --------------------------------------------------------------------------------- the test

@pytest.fixture
def soak_env(make_devbroker):
    broker = make_devbroker(brokers=3, partitions=PARTITIONS)
    holder = {}
    yield broker, holder
    soak = holder.get("soak")
    if soak is not None:
        for g in soak.gens:
            if g.proc.alive():
                g.proc.stop(signal.SIGTERM, 20)
        for g in soak.gens:
            assert not g.proc.sanitizer_errors(), g.proc.tail(80)


def test_ingest_soak_keeps_the_contract(soak_env):
    broker, holder = soak_env
    print(f"\nHOOKFLOW_INGEST_SOAK_SEED={SEED}", flush=True)
    log = Log()
    log(f"seed {SEED}")
    t_start = time.monotonic()
    soak = Soak(broker, log)
    holder["soak"] = soak
    harness.wait_http(soak.gen.base + "/readyz", proc=soak.gen.proc, timeout=30,
                      ok=lambda s: s == 200)

    soak.deadline = time.monotonic() + SOAK_SECONDS
    threads = [threading.Thread(target=soak.sender, args=(t,), daemon=True, name=f"sender{t}")
               for t in range(SENDER_THREADS)]
    threads += [threading.Thread(target=f, daemon=True, name=f.__name__)
                for f in (soak.rotation, soak.faults, soak.restart)]
    monitor = threading.Thread(target=soak.monitor, daemon=True, name="monitor")
    for th in threads:
        th.start()
    monitor.start()
    for th in threads:
        th.join(SOAK_SECONDS + 60)
    hung = [th.name for th in threads if th.is_alive()]
    assert not hung, f"seed {SEED}: threads hung: {hung}"
    assert not soak.errors, f"seed {SEED}: helper thread failed:\n" + "\n".join(soak.errors)
    log(f"soak over after {time.monotonic() - t_start:.1f}s: {len(soak.attempts)} attempts; "
        f"{dict(soak.done)}")

    # ---- settle: faults off, the last ingest has answered everything, then stop it
    broker.ctl_ok("clear")
    final = soak.gen

    def idle():
        ms = soak.scrape(final)
        return ms if metric(ms, "hookflow_ingest_in_flight") == 0 else None

    final_ms = harness.wait_until(idle, timeout=45, interval=0.2,
                                  what="hookflow_ingest_in_flight 0")
    soak.stop_monitor.set()
    monitor.join(10)
    final.sigterm_at = time.monotonic()
    final.exit_code = final.proc.stop(signal.SIGTERM, 30)
    log(f"last ingest g{final.n} stopped: exit {final.exit_code}")

    # ---- read every topic back
    topics = [f"{PREFIX}.webhooks.{c}" for c in harness.CATEGORIES] + [f"{PREFIX}.deadletter"]
    msgs = []
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "soak-wm"})
    ends = {}
    try:
        for topic in topics:
            for p in range(PARTITIONS):
                lo, ends[(topic, p)] = c.get_watermark_offsets(TopicPartition(topic, p),
                                                               timeout=10)
                # The dev broker keeps ~5 MiB per partition: a moved start would lose events
                # and make this test lie (a harness limit, not a product bug).
                assert lo == 0, f"harness: {topic}[{p}] start offset moved to {lo} (retention)"
    finally:
        c.close()
    for topic in topics:
        msgs.extend(broker.consume_all(topic, idle=1.0, timeout=180))
    per_part = collections.Counter((m.topic, m.partition) for m in msgs)
    # consume_all returns what it has when its time is up: a slow machine must not pass for
    # lost events.
    short = {tp: (per_part[tp], end) for tp, end in ends.items() if per_part[tp] < end}
    assert not short, f"harness: read back fewer messages than the partitions hold: {short}"
    biggest = max(per_part.items(), key=lambda kv: kv[1], default=(None, 0))
    log(f"read {len(msgs)} messages back (fullest partition {biggest[0]}: {biggest[1]} "
        f"messages, {sum(len(m.value) for m in msgs if (m.topic, m.partition) == biggest[0])}"
        f" bytes); checking")

    check(soak, msgs, final_ms, log)
    elapsed = time.monotonic() - t_start
    log(f"done in {elapsed:.1f}s")
    report = []
    for inv in sorted(soak.problems):
        report.append(f"== invariant {inv}: {len(soak.problems[inv])} violation(s)")
        report.extend(f"-- {w}" for w in soak.problems[inv][:8])
    assert not soak.problems, (f"HOOKFLOW_INGEST_SOAK_SEED={SEED}\n" + "\n".join(report) +
                               "\n\nsoak log:\n" + log.text())


# ------------------------------------------------------------------------------ the checks

def describe(a):
    d = a["d"]
    return (f"attempt {a['rid']} g{a['gen']} {a['method']} {d['kind']} "
            f"{'bad=' + a['bad'] if a['bad'] else 'redelivery' if a['redelivery'] else 'new'} "
            f"{len(d['events'])} ev, key {a['key'][:8]}.. ({a.get('keyclass')}), "
            f"{'fresh' if a['fresh'] else 'reused' if a['reused'] else 'keep-alive'} conn, "
            f"t {a['t_start']:.2f}-{a['t_end']:.2f}: status {a['status']} "
            f"{a['body'][:160]!r} {a.get('exc', '')}")


def check(soak, msgs, final_ms, log):
    bad, attempts, gens = soak.bad, soak.attempts, soak.gens
    validator = _envelope_validator()
    expected = {}                                 # id -> expected envelope fields
    carriers = collections.defaultdict(list)      # id -> attempts carrying it (good ones)
    bad_ids = set()                               # ids only ever carried by bad deliveries
    by_rid = {}
    for a in attempts:
        d = a["d"]
        a["keyclass"] = soak.secrets.classify(a["path"], a["key"], a["t_start"], a["t_end"])
        by_rid[a["rid"]] = a
        rid = a["headers"].get("x-request-id")
        if rid:
            by_rid.setdefault(rid, a)
        for e in d["events"]:
            expected[e["id"]] = e
            if a["bad"]:
                bad_ids.add(e["id"])
            else:
                carriers[e["id"]].append(a)
    bad_ids -= set(carriers)

    # ---- 4 + 6: every answer is the documented one
    for a in attempts:
        d, st, body, hdrs = a["d"], a["status"], a["body"], a["headers"]
        xero = d["provider"] == "xero"
        gen = gens[a["gen"]]
        if st is None:
            if not (a["reused"] or (gen.sigterm_at is not None and gen.sigterm_at <= a["t_end"])):
                bad("6 no connection error from a running ingest", describe(a))
            continue
        if "x-request-id" not in hdrs:
            bad("6 every answer carries X-Request-Id", describe(a))
        err = None
        if not 200 <= st < 300:
            if xero:
                if body != b"":
                    bad("4 Xero gets empty bodies", describe(a))
            else:
                try:
                    j = json.loads(body)
                    err = j["error"]
                    assert isinstance(j["detail"], str)
                except (ValueError, KeyError, TypeError, AssertionError):
                    bad("4 error bodies are JSON {error, detail}", describe(a))
        if st == 503:
            if not hdrs.get("retry-after"):
                bad("6 a 503 carries Retry-After", describe(a))
            if err is not None and err not in ERRORS_503:
                bad("6 a 503 is Kafka/overload/shutdown", describe(a))
            # Verification comes after the draining/overload checks, so a 503 is always allowed,
            # except that a delivery that was refused on its key cannot reach Kafka.
            if err == "kafka_unavailable" and (a["bad"] or a["keyclass"] == "reject"):
                bad("4 only verified deliveries reach Kafka (503 kafka_unavailable)",
                    describe(a))
            continue
        if st >= 500:
            bad("6 no 5xx but the documented 503", describe(a))
            continue
        kc = a["keyclass"]
        if a["bad"] is None:
            allowed = {"accept": {200}, "reject": {401}, "either": {200, 401}}[kc]
            if st not in allowed:
                bad("4 a good delivery is accepted iff its key is configured", describe(a))
            if st == 401 and err is not None and err != "bad_signature":
                bad("4 a refused key is bad_signature", describe(a))
            if st == 200:
                if xero and body != b"":
                    bad("4 Xero gets empty bodies", describe(a))
                if d.get("inbound") and (b"<Response/>" not in body or not hdrs.get(
                        "content-type", "").startswith("text/xml")):
                    bad("4 Twilio inbound gets empty TwiML", describe(a))
            continue
        kind = a["bad"]
        if kind in ("tampered", "wrong_key", "missing_header"):
            want = {401: {"missing_signature" if kind == "missing_header" else "bad_signature"}}
        elif kind == "stale":
            if d["kind"] == "hs_v3" or kc == "accept":
                want = {401: {"stale_timestamp"}}
            else:
                want = {401: {"stale_timestamp", "bad_signature"}}
        elif kind == "wrong_method":
            want = {405: {"method_not_allowed"}}
        elif kind == "oversized":
            want = {413: {"payload_too_large"}}
        else:  # malformed
            want = {"accept": {400: {"malformed"}}, "reject": {401: {"bad_signature"}},
                    "either": {400: {"malformed"}, 401: {"bad_signature"}}}[kc]
        if st not in want or (err is not None and err not in want[st]):
            bad(f"4 a {kind} delivery gets {sorted(want)} {sorted(set().union(*want.values()))}",
                describe(a))

    # ---- 1-3: Kafka against what was sent and answered
    in_kafka = collections.defaultdict(list)
    unattributed = 0
    pairs = collections.Counter()
    sample = random.Random(SEED)
    for m in msgs:
        try:
            env = json.loads(m.value)
        except ValueError:
            bad("3 every message is an envelope", f"{m.topic}[{m.partition}]@{m.offset}: "
                f"{m.value[:200]!r}")
            continue
        if sample.random() < 0.05:
            errs = list(validator.iter_errors(env))
            if errs:
                bad("3 envelopes match the schema", f"{env.get('id')}: {errs[0].message}")
        eid = env.get("id")
        in_kafka[eid].append((m, env))
        e = expected.get(eid)
        if e is None:
            bad("3 no id in Kafka that no delivery carried",
                f"{m.topic}[{m.partition}]@{m.offset} id {eid} request_id "
                f"{env.get('request_id')} payload {json.dumps(env.get('payload'))[:200]}")
            continue
        got = {"provider": env.get("provider"), "event": env.get("event"),
               "account": env.get("account"), "key": (m.key or b"").decode(),
               "topic": m.topic, "native": env.get("native_type")}
        want = {k: e[k] for k in got}
        if got != want:
            bad("1 envelope fields provider/event/account/key/topic", f"{eid}: {got} != {want}")
        if eid in bad_ids:
            bad("4 a bad delivery produces nothing", f"{eid} in {m.topic} request_id "
                f"{env.get('request_id')}: " + "; ".join(
                    describe(a) for a in attempts if any(x["id"] == eid
                                                         for x in a["d"]["events"]))[:600])
            continue
        a = by_rid.get(env.get("request_id"))
        if a is None:
            unattributed += 1
        else:
            pairs[(a["rid"], eid)] += 1
            if eid not in {x["id"] for x in a["d"]["events"]}:
                bad("2 an envelope carries an id of the attempt that produced it",
                    f"{eid} attributed to {describe(a)}")
            elif a["status"] is not None and a["status"] != 503 and not 200 <= a["status"] < 300:
                bad("2 nothing in Kafka from an attempt answered other than 2xx/503",
                    f"{eid} from {describe(a)}")
        if not any(x["status"] is None or x["status"] == 503 or 200 <= x["status"] < 300
                   for x in carriers[eid]):
            bad("2 an id is in Kafka only if an attempt carrying it was answered 2xx/503/not",
                f"{eid}: " + " | ".join(describe(x) for x in carriers[eid])[:800])

    acked = [a for a in attempts if a["status"] is not None and 200 <= a["status"] < 300]
    missing_own = 0
    for a in acked:
        for e in a["d"]["events"]:
            if e["id"] not in in_kafka:
                bad("1 every event of a delivery answered 2xx is in Kafka",
                    f"{e['id']} ({e['provider']} {e['account']}) of {describe(a)}")
            elif pairs[(a["rid"], e["id"])] == 0 and not any(
                    by_rid.get(env.get("request_id")) is a for _, env in in_kafka[e["id"]]):
                missing_own += 1
    dup_pairs = sum(1 for n in pairs.values() if n > 1)

    # ---- 5: metrics
    last = {}
    for n, _, ms in soak.scrapes:
        prev = last.get(n)
        if prev is not None:
            for k, v in prev.items():
                if (k[0].endswith("_total") or k[0].endswith("_bucket") or
                        k[0].endswith("_count")) and ms.get(k, 0.0) < v:
                    bad("5 counters never go down", f"g{n} {k}: {v} -> {ms.get(k)}")
        last[n] = ms
    final = gens[-1]
    mine = [a for a in attempts if a["gen"] == final.n and a["status"] is not None]
    rejected = collections.defaultdict(float)
    by_status = collections.defaultdict(float)
    for (name, lab), v in final_ms.items():
        if name == "hookflow_ingest_deliveries_rejected_total":
            lb = labels_of(lab)
            rejected[lb["provider"]] += v
            status = REASON_STATUS.get(lb["reason"])
            if status is None:
                bad("5 rejection reasons are known", lab)
            by_status[(lb["provider"], status)] += v
    for provider in CATALOG:
        rec = metric(final_ms, "hookflow_ingest_deliveries_received_total", provider=provider)
        acc = metric(final_ms, "hookflow_ingest_deliveries_accepted_total", provider=provider)
        evn = metric(final_ms, "hookflow_ingest_events_total", provider=provider)
        mine_p = [a for a in mine if a["d"]["provider"] == provider]
        ok_p = [a for a in mine_p if 200 <= a["status"] < 300]
        line = (f"{provider}: received {rec:.0f} accepted {acc:.0f} rejected "
                f"{rejected[provider]:.0f} events {evn:.0f}; senders saw {len(mine_p)} answers, "
                f"{len(ok_p)} 2xx with {sum(len(a['d']['events']) for a in ok_p)} events")
        log("metrics " + line)
        if rec < acc + rejected[provider]:
            bad("5 received >= accepted + rejected", line)
        if rec < len(mine_p):
            bad("5 received >= answers the senders saw", line)
        if acc < len(ok_p):
            bad("5 accepted >= 2xx the senders saw", line)
        if evn < sum(len(a["d"]["events"]) for a in ok_p):
            bad("5 events >= events of the 2xx the senders saw", line)
        for status in (400, 401, 405, 413, 503):
            seen = sum(1 for a in mine_p if a["status"] == status)
            if by_status[(provider, status)] < seen:
                bad("5 rejected (by reason) >= refusals the senders saw",
                    f"{provider} {status}: metrics {by_status[(provider, status)]:.0f} < {seen}")

    # ---- 6: every ingest exits 0 on SIGTERM
    for g in gens:
        if g.exit_code != 0:
            bad("6 ingest exits 0 on SIGTERM", f"g{g.n} exit {g.exit_code}: {g.proc.tail(20)}")
        if "ingest.stopped" not in g.proc.log():
            bad("6 ingest logs ingest.stopped", f"g{g.n}")

    # ---- summary
    st = collections.Counter()
    for a in attempts:
        tag = "bad" if a["bad"] else "redelivery" if a["redelivery"] else "new"
        st[(tag, str(a["status"]))] += 1
    kc = collections.Counter((a["keyclass"], str(a["status"])) for a in attempts
                             if not a["bad"])
    log(f"answers: {dict(sorted(st.items()))}")
    log(f"good deliveries by key class/status: {dict(sorted(kc.items()))}")
    log(f"bad deliveries by kind: "
        f"{dict(collections.Counter(a['bad'] for a in attempts if a['bad']))}")
    log("connection errors: " + str(dict(collections.Counter(
        "reused keep-alive" if a["reused"] else f"g{a['gen']} after SIGTERM"
        for a in attempts if a["status"] is None))))
    log(f"/metrics scrapes: {collections.Counter(n for n, _, _ in soak.scrapes)} per ingest")
    log(f"kinds: {dict(collections.Counter(a['d']['kind'] for a in attempts))}")
    log(f"ids in Kafka {len(in_kafka)} (messages {len(msgs)}), expected ids {len(expected)}, "
        f"acked attempts {len(acked)}, envelopes not attributable by request_id "
        f"{unattributed}, (attempt, id) produced more than once {dup_pairs}, "
        f"2xx events found only from another attempt {missing_own}")
