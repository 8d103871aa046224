"""test_api_workflows: `hookflow-engine serve` — the catalog, workflow CRUD, validate and simulate
endpoints, the access rules of every route, and hostile input — against a real PostgreSQL.

One module fixture migrates a fresh database, applies two tenants with `hookflow-engine apply`
(acme: production; sandy: sandbox; admins and members in different branches; connections with
scopes), writes the secrets store (api/jwt_key, engine/token_key), starts the platform fakes and
`hookflow-engine serve` pointed at them, and mints bearer tokens here with hmac/base64/json.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import socket
import signal
import subprocess
import sys
import time
import uuid

import pytest

import harness

sys.path.insert(0, os.path.join(harness.source_dir(), "tests", "fakes"))
from fakes import PROVIDERS, FakePlatforms  # noqa: E402

JWT_KEY = "integration-jwt-key-7c1e0b9a4f3d2e8c5b6a7d9e0f1a2b3c"
TOKEN_KEY = base64.b64encode(bytes(range(32))).decode()
MAX_BODY = 1 << 20

# ---------------------------------------------------------------------------------------------
# tenants, tokens, requests


def tenant_config():
    acme_connections = [
        # crm.objects.contacts.write is missing: upsert_contact needs it (missing_scope)
        {"connector": "hubspot", "account": "4711", "status": "active",
         "scopes": ["crm.objects.contacts.read"], "access_token": "acme-hubspot-token"},
        {"connector": "twilio", "account": "AC11111111111111111111111111111111",
         "status": "active", "scopes": [], "access_token": "acme-twilio-token"},
        # meta is Beta and approved below; klaviyo is Beta, not approved, not connected
        {"connector": "meta", "account": "900001", "status": "active",
         "scopes": ["pages_messaging"], "access_token": "acme-meta-token"},
        {"connector": "quickbooks", "account": "9130350000000001", "status": "active",
         "scopes": ["com.intuit.quickbooks.accounting"], "access_token": "acme-qb-token"},
        # no xero connection at all (missing_connection)
    ]
    sandy_connections = [
        {"connector": "hubspot", "account": "4712", "status": "active",
         "scopes": ["crm.objects.contacts.write"], "access_token": "sandy-hubspot-token"},
        {"connector": "twilio", "account": "AC22222222222222222222222222222222",
         "status": "active", "scopes": [], "access_token": "sandy-twilio-token"},
        {"connector": "klaviyo", "account": "KLSANDY", "status": "active",
         "scopes": ["events:write", "profiles:write"], "access_token": "sandy-klaviyo-token"},
        {"connector": "meta", "account": "900002", "status": "active",
         "scopes": ["pages_messaging"], "access_token": "sandy-meta-token"},
    ]
    return {"tenants": [
        {"slug": "acme", "name": "Acme Laundry", "environment": "production",
         "branches": [
             {"branch": "main", "roles": [{"subject": "alice@acme.test", "role": "admin"},
                                          {"subject": "bob@acme.test", "role": "member"},
                                          {"subject": "vic@acme.test", "role": "viewer"}]},
             {"branch": "north", "roles": [{"subject": "carol@acme.test", "role": "admin"},
                                           {"subject": "alice@acme.test", "role": "member"}]}],
         "support_approvals": [{"connector": "meta", "approved_by": "support@hookflow.dev"}],
         "connections": acme_connections},
        {"slug": "sandy", "name": "Sandy Sandbox", "environment": "sandbox",
         "branches": [{"branch": "main", "roles": [
             {"subject": "dave@sandy.test", "role": "admin"}]}],
         "support_approvals": [{"connector": "meta", "approved_by": "support@hookflow.dev"},
                               {"connector": "klaviyo", "approved_by": "support@hookflow.dev"}],
         "connections": sandy_connections,
         "workflows": [{"name": "Sandy pickup", "enabled": False, "definition": sms_workflow(
             "Sandy pickup")}]},
    ]}


def sms_workflow(name="Pickup SMS", text="pickup"):
    """Valid for both tenants: Messenger trigger, one Twilio SMS."""
    return {"name": name,
            "trigger": {"connector": "meta", "event": "message",
                        "filter": f"event.payload.message.text contains '{text}'"},
            "nodes": [{"id": "sms", "type": "action", "connector": "twilio",
                       "action": "send_message",
                       "params": {"to": "+14155550100", "from": "+14155559876",
                                  "body": "Pickup: {{event.payload.message.text}}"}}],
            "edges": []}


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint(claims, key=JWT_KEY, header=None, sign=True):
    header = header or {"alg": "HS256", "typ": "JWT"}
    signing = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    if not sign:
        return signing + "."
    sig = hmac.new(key.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(sig)


def claims(sub, tenant, branch="main", ttl=3600, **extra):
    c = {"sub": sub, "tenant": tenant, "branch": branch, "exp": int(time.time()) + ttl}
    c.update(extra)
    return c


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return f"<{self.status} {self.body[:400]!r}>"


class Stack:
    def __init__(self, postgres):
        self.pg = postgres
        self.db_url = postgres.fresh_db("api")
        r = subprocess.run([harness.bin("hookflow-engine"), "migrate"], capture_output=True,
                           text=True, timeout=180,
                           env=harness.sanitizer_env(dict(os.environ,
                                                          HOOKFLOW_DATABASE_URL=self.db_url)))
        assert r.returncode == 0, r.stderr
        self.secrets = harness.temp_dir("secrets")
        self.write_secret("engine/token_key", TOKEN_KEY)
        self.write_secret("api/jwt_key", JWT_KEY)
        self.apply(tenant_config())
        rows = self.query("SELECT slug, id::text FROM tenants")
        self.tenant = dict(rows)
        self.fakes = FakePlatforms.start(harness.temp_dir("fakes"))
        self.port = harness.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = self.start_serve()
        acme, sandy = self.tenant["acme"], self.tenant["sandy"]
        self.tokens = {
            "admin": mint(claims("alice@acme.test", acme)),
            "admin_north": mint(claims("carol@acme.test", acme, "north")),
            "member": mint(claims("bob@acme.test", acme)),
            "viewer": mint(claims("vic@acme.test", acme)),
            "member_other_branch": mint(claims("alice@acme.test", acme, "north")),
            "no_mapping": mint(claims("mallory@acme.test", acme)),
            "no_branch_mapping": mint(claims("alice@acme.test", acme, "south")),
            "unknown_tenant": mint(claims("alice@acme.test", str(uuid.uuid4()))),
            "expired": mint(claims("alice@acme.test", acme, ttl=-3600)),
            "not_yet": mint(claims("alice@acme.test", acme, nbf=int(time.time()) + 3600)),
            "wrong_key": mint(claims("alice@acme.test", acme), key="not-the-key-" + "x" * 40),
            "alg_none": mint(claims("alice@acme.test", acme), header={"alg": "none"},
                             sign=False),
            "alg_rs256": mint(claims("alice@acme.test", acme),
                              header={"alg": "RS256", "typ": "JWT"}),
            "no_exp": mint({"sub": "alice@acme.test", "tenant": acme, "branch": "main"}),
            "sandy_admin": mint(claims("dave@sandy.test", sandy)),
        }

    def write_secret(self, path, value):
        full = os.path.join(self.secrets, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(value + "\n")

    def apply(self, cfg):
        path = os.path.join(harness.temp_dir("apply"), "tenants.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        r = subprocess.run([harness.bin("hookflow-engine"), "apply", path], capture_output=True,
                           text=True, timeout=120, env=harness.sanitizer_env(dict(
                               os.environ, HOOKFLOW_DATABASE_URL=self.db_url,
                               HOOKFLOW_SECRETS_DIR=self.secrets)))
        assert r.returncode == 0, r.stderr

    def serve_env(self, **extra):
        env = {"HOOKFLOW_DATABASE_URL": self.db_url, "HOOKFLOW_SECRETS_DIR": self.secrets,
               "HOOKFLOW_API_LISTEN": f"127.0.0.1:{self.port}", "HOOKFLOW_API_THREADS": "2",
               "HOOKFLOW_API_PUBLIC_URL": f"http://127.0.0.1:{self.port}",
               "HOOKFLOW_CONFIG_FILE": None, "HOOKFLOW_CATALOG_DIR": None}
        env.update(self.fakes.env())
        env.update(extra)
        return env

    def start_serve(self):
        proc = harness.Proc([harness.bin("hookflow-engine"), "serve"], env=self.serve_env(),
                            name="serve")
        harness.wait_http(self.base + "/healthz", proc=proc)
        return proc

    def query(self, sql, *args):
        conn = self.pg.connect(self.db_url)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def call(self, method, path, body=None, token="admin", headers=None, raw=None):
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = "Bearer " + self.tokens.get(token, token)
        if raw is not None:
            body = raw
            hdrs.setdefault("Content-Type", "application/json")
        status, h, data = harness.http(method, self.base + path, body=body, headers=hdrs)
        return Response(status, h, data)

    def ok(self, method, path, body=None, status=200, **kw):
        r = self.call(method, path, body, **kw)
        assert r.status == status, r
        return r.json

    def create(self, definition=None, name=None, token="admin", **extra):
        body = {"definition": definition or sms_workflow(name or f"wf-{uuid.uuid4().hex[:8]}")}
        if name:
            body["name"] = name
        body.update(extra)
        return self.ok("POST", "/api/workflows", body, status=201, token=token)

    def platform_calls(self):
        return [r for p in PROVIDERS for r in self.fakes.requests(p)]

    def stop(self):
        code = self.proc.stop(signal.SIGTERM, 20)
        self.fakes.stop()
        return code


@pytest.fixture(scope="module")
def stack(postgres):
    s = Stack(postgres)
    yield s
    code = s.stop()
    assert code == 0, s.proc.tail()
    assert not s.proc.sanitizer_errors(), s.proc.tail(80)


def assert_error(r, status, error=None):
    assert r.status == status, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    assert isinstance(r.json, dict) and isinstance(r.json.get("error"), str), r
    if error:
        assert r.json["error"] == error, r
    return r.json


def catalog_file(connector):
    with open(os.path.join(harness.source_dir(), "schemas", "catalog", connector + ".json")) as f:
        return json.load(f)


def audit_rows(stack, subject_id):
    return stack.query("SELECT actor, action, tenant_id::text, detail::text FROM audit_log "
                       "WHERE subject_id = %s ORDER BY id", subject_id)


# ---------------------------------------------------------------------------------------------
# operations endpoints, routing, request handling


def test_health_ready_metrics(stack):
    r = stack.call("GET", "/healthz", token=None)
    assert r.status == 200 and r.json == {"status": "ok"}
    r = stack.call("GET", "/readyz", token=None)
    assert r.status == 200 and r.json == {"status": "ready"}
    stack.ok("GET", "/api/workflows")
    stack.call("GET", "/api/workflows", token=None)
    r = stack.call("GET", "/metrics", token=None)
    assert r.status == 200
    text = r.body.decode()
    assert re.search(r'hookflow_api_requests_total\{route="/api/workflows",method="GET",'
                     r'status="200"\} [1-9]', text), text
    assert re.search(r'hookflow_api_requests_total\{route="/api/workflows",method="GET",'
                     r'status="401"\} [1-9]', text), text
    assert 'hookflow_api_request_duration_seconds_bucket{route="/api/workflows",le=' in text
    assert_error(stack.call("POST", "/healthz", token=None), 405, "method_not_allowed")


def test_unknown_paths_and_methods(stack):
    assert_error(stack.call("GET", "/api/nothing"), 404, "not_found")
    assert_error(stack.call("GET", "/"), 404, "not_found")
    assert_error(stack.call("GET", "/api/workflows/"), 404, "not_found")
    r = stack.call("PATCH", "/api/workflows")
    assert_error(r, 405, "method_not_allowed")
    assert set(r.headers["allow"].split(", ")) == {"GET", "POST"}
    r = stack.call("POST", "/api/workflows/catalog")
    assert r.status in (404, 405), r
    # Methods the API serves nowhere get JSON errors (libevent's own answer was HTML): TRACE a
    # 405; CONNECT, whose target libevent reads as an authority rather than a path, a 404.
    assert_error(stack.call("TRACE", "/api/workflows"), 405, "method_not_allowed")
    assert_error(stack.call("CONNECT", "/api/workflows"), 404, "not_found")


def test_answers_the_http_server_makes_itself_carry_the_request_id(stack):
    # 431 (a header block over the limit) and 505 (a version other than HTTP/1.x) are answered
    # before any route; they carry the request id as every other answer does.
    r = stack.call("GET", "/api/workflows", headers={"X-Request-Id": "big-headers-1",
                                                     "X-Filler": "x" * 20000})
    assert r.status == 431 and r.headers["x-request-id"] == "big-headers-1"
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as sock:
        sock.sendall(b"GET /api/workflows HTTP/1.7\r\nHost: a\r\nX-Request-Id: v-1\r\n\r\n")
        got = b""
        while chunk := sock.recv(4096):
            got += chunk
    head = got.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert head[0] == b"HTTP/1.1 505 HTTP Version Not Supported", got
    assert b"X-Request-Id: v-1" in head, got


def test_request_ids_and_access_log(stack):
    r = stack.call("GET", "/api/workflows", headers={"X-Request-Id": "trace-42.abc_DEF"})
    assert r.status == 200 and r.headers["x-request-id"] == "trace-42.abc_DEF"
    r = stack.call("GET", "/api/workflows", headers={"X-Request-Id": "bad\"id' OR 1=1"})
    generated = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated), generated
    r = stack.call("GET", "/api/workflows/" + str(uuid.uuid4()))
    assert r.status == 404 and re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    assert r.headers.get("cache-control") == "no-store"

    def logged():
        for line in stack.proc.json_logs():
            if line.get("request_id") == generated:
                return line
        return None
    line = harness.wait_until(logged, timeout=10, what="the access log line")
    assert line["method"] == "GET" and line["status"] == "200"
    assert line["route"] == "/api/workflows" and line["user"] == "alice@acme.test"
    assert line["tenant"] == stack.tenant["acme"]
    assert float(line["duration_ms"]) >= 0
    # no token ever reaches the log
    assert stack.tokens["admin"].split(".")[2] not in stack.proc.log()


def test_malformed_json_reports_the_position(stack):
    cases = [(b'{"name": }', 9), (b'{"name": "x",}', 13), (b'{"a":1} trailing', 8),
             (b'{"a": [1, 2}', 11), (b'{"a": tru}', 9), (b'{"a": 1', 7), (b'{"a": "\\q"}', 7),
             (b'{"a": "x"} /* c */', 11), (b'{"a": "\x00"}', 7), (b'{"a": "\\u0000"}', 7),
             (b'{"a": "\\udc00"}', 7), (b'{"a": 01}', 7), (b"{'a': 1}", 1), (b"", 0),
             # invalid UTF-8: the offset of the first bad byte
             (b'{"name": "ab\xff\xfe"}', 12), (b'{"name": "\xc0\xaf"}', 10),
             (b'{"\xed\xa0\x80": 1}', 2)]
    for raw, pos in cases:
        r = stack.call("POST", "/api/workflows", raw=raw)
        if raw == b"":
            # an empty body is no body: the handler says what is missing
            assert_error(r, 400, "invalid_body")
            continue
        body = assert_error(r, 400, "malformed_json")
        assert body.get("position") == pos, (raw, body)
        assert f"byte {pos}:" in body["detail"], body
    # not an object
    for raw in (b"[]", b'"x"', b"42", b"null"):
        assert_error(stack.call("POST", "/api/workflows", raw=raw), 400, "invalid_body")
    # nesting beyond the parser's limit
    body = assert_error(stack.call("POST", "/api/workflows", raw=b"[" * 100 + b"]" * 100), 400,
                        "malformed_json")
    assert body["position"] == 64, body
    # other media types
    r = stack.call("POST", "/api/workflows", raw=b'{"definition": {}}',
                   headers={"Content-Type": "text/plain"})
    assert_error(r, 415, "unsupported_media_type")


def test_body_size_limit(stack):
    before = stack.query("SELECT count(*) FROM workflows")[0][0]
    prefix, suffix = b'{"name": "big", "definition": {"name": "big", "pad": "', b'"}}'
    raw = prefix + b"x" * (MAX_BODY + 1 - len(prefix) - len(suffix)) + suffix
    assert len(raw) == MAX_BODY + 1
    body = assert_error(stack.call("POST", "/api/workflows", raw=raw), 413, "payload_too_large")
    assert "1048576" in body["detail"]
    # exactly the limit is read and judged on its content (an unknown member of the definition)
    raw = raw[:-4] + raw[-3:]
    assert len(raw) == MAX_BODY
    assert_error(stack.call("POST", "/api/workflows", raw=raw), 400, "invalid_definition")
    assert stack.query("SELECT count(*) FROM workflows")[0][0] == before


# ---------------------------------------------------------------------------------------------
# access


def all_routes(stack):
    """(method, path, access) for every route of the router; access: admin | any | open."""
    wf = stack.create()["id"]
    return [
        ("GET", "/api/workflows/catalog", "admin"),
        ("GET", "/api/workflows", "admin"),
        ("POST", "/api/workflows", "admin"),
        ("GET", f"/api/workflows/{wf}", "admin"),
        ("PUT", f"/api/workflows/{wf}", "admin"),
        ("POST", f"/api/workflows/{wf}/enable", "admin"),
        ("POST", f"/api/workflows/{wf}/disable", "admin"),
        ("POST", f"/api/workflows/{wf}/validate", "admin"),
        ("POST", f"/api/workflows/{wf}/simulate", "admin"),
        ("GET", f"/api/workflows/{wf}/runs", "admin"),
        ("GET", f"/api/runs/{uuid.uuid4()}", "admin"),
        ("POST", f"/api/runs/{uuid.uuid4()}/retry", "admin"),
        ("GET", "/api/integrations", "admin"),
        ("GET", "/api/integrations/hubspot", "admin"),
        # xero: acme has no xero connection, so the admins' requests below change none
        ("POST", "/api/integrations/xero/oauth/start", "admin"),
        ("PUT", "/api/integrations/twilio/credentials", "admin"),
        ("POST", "/api/integrations/xero/enable", "admin"),
        ("POST", "/api/integrations/xero/disable", "admin"),
        ("POST", "/api/integrations/xero/approval", "any"),
        ("DELETE", f"/api/workflows/{wf}", "admin"),
    ]


UNAUTHENTICATED = ["expired", "not_yet", "wrong_key", "alg_none", "alg_rs256", "no_exp",
                   "garbage", "huge"]
FORBIDDEN = ["member", "viewer", "member_other_branch", "no_mapping", "no_branch_mapping",
             "unknown_tenant"]


def state(stack):
    return stack.query("SELECT (SELECT count(*) FROM audit_log), (SELECT count(*) FROM "
                       "workflows), (SELECT count(*) FROM workflow_versions), (SELECT count(*) "
                       "FROM connections), (SELECT string_agg(enabled::text, ',' ORDER BY id) "
                       "FROM workflows)")[0]


def test_access_matrix(stack):
    stack.tokens["garbage"] = "not.a.jwt"
    stack.tokens["huge"] = "A" * 5000 + "." + "B" * 4000 + ".C"
    for method, path, access in all_routes(stack):
        body = {} if method in ("POST", "PUT") else None
        before = state(stack)
        r = stack.call(method, path, body, token=None)
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == 'Bearer realm="hookflow"', r.headers
        r = stack.call(method, path, body, headers={"Authorization": "Basic YWxpY2U6cHc="},
                       token=None)
        assert_error(r, 401, "unauthorized")
        for name in UNAUTHENTICATED:
            r = stack.call(method, path, body, token=name)
            assert_error(r, 401, "unauthorized")
            assert 'error="invalid_token"' in r.headers["www-authenticate"], (name, r.headers)
        if access == "admin":
            for name in FORBIDDEN:
                assert_error(stack.call(method, path, body, token=name), 403, "forbidden")
        # none of the refused requests changed anything
        assert state(stack) == before, (method, path)
        # the branch's admins get past the access check (DELETE last: it removes the workflow)
        for name in ("admin_north", "admin"):
            if method == "DELETE" and name == "admin_north":
                continue
            r = stack.call(method, path, body, token=name)
            assert r.status not in (401, 403) or access == "any", (name, method, path, r)


def test_other_tenants_objects_are_not_found(stack):
    sandy_wf = stack.query("SELECT id::text FROM workflows WHERE tenant_id = %s",
                           stack.tenant["sandy"])[0][0]
    run = stack.query(
        "INSERT INTO runs (tenant_id, workflow_id, workflow_version, event_id, ordering_key,"
        " ordering_seq, trigger, status, finished_at) VALUES (%s, %s, 1, %s, 'meta:900002', 1,"
        " '{}', 'failed', now()) RETURNING id::text",
        stack.tenant["sandy"], sandy_wf, "meta:" + uuid.uuid4().hex)[0][0]
    for method, path in [("GET", f"/api/workflows/{sandy_wf}"),
                         ("PUT", f"/api/workflows/{sandy_wf}"),
                         ("DELETE", f"/api/workflows/{sandy_wf}"),
                         ("POST", f"/api/workflows/{sandy_wf}/enable"),
                         ("POST", f"/api/workflows/{sandy_wf}/disable"),
                         ("POST", f"/api/workflows/{sandy_wf}/validate"),
                         ("POST", f"/api/workflows/{sandy_wf}/simulate"),
                         ("GET", f"/api/workflows/{sandy_wf}/runs"),
                         ("GET", f"/api/runs/{run}"),
                         ("POST", f"/api/runs/{run}/retry")]:
        body = {"definition": sms_workflow("stolen")} if method == "PUT" else (
            {} if method == "POST" else None)
        assert_error(stack.call(method, path, body, token="admin"), 404, "not_found")
        # and its own admin sees it
        if method == "GET":
            assert stack.call(method, path, token="sandy_admin").status == 200
    listed = stack.ok("GET", "/api/workflows?limit=100")["workflows"]
    assert sandy_wf not in [w["id"] for w in listed]
    # nothing of sandy's changed
    assert stack.query("SELECT enabled, deleted_at, current_version FROM workflows WHERE id = %s",
                       sandy_wf) == [(False, None, 1)]
    assert stack.query("SELECT status FROM runs WHERE id = %s", run) == [("failed",)]


# ---------------------------------------------------------------------------------------------
# catalog

SEED_FIELDS = ("category", "summary", "features", "oauth", "webhook_events", "availability",
               "pricing", "setup_time", "actions")


def test_catalog_has_every_connector_and_field(stack):
    r = stack.call("GET", "/api/workflows/catalog")
    assert r.status == 200, r
    connectors = r.json["connectors"]
    assert [c["id"] for c in connectors] == ["xero", "quickbooks", "hubspot", "klaviyo",
                                             "twilio", "meta"]
    for c in connectors:
        assert c == catalog_file(c["id"]), c["id"]
        for field in SEED_FIELDS:
            assert field in c, (c["id"], field)
        assert c["category"] in ("accounting", "marketing-automation", "messaging")
        assert c["availability"] in ("GA", "Beta")
        assert c["pricing"] in ("Included", "Growth plan", "Add-on", "Usage based")
        assert isinstance(c["oauth"]["scopes"], list)
        for e in c["webhook_events"]:
            assert isinstance(e["sample_payload"], dict)
        for a in c["actions"]:
            assert isinstance(a["simulatable"], bool) and "inputs" in a and "sample_output" in a
    sims = {(c["id"], a["id"]): a["simulatable"] for c in connectors for a in c["actions"]}
    assert sims[("quickbooks", "create_invoice")] is False
    assert sims[("twilio", "send_message")] is True


def test_catalog_etag_and_conditional_get(stack):
    r = stack.call("GET", "/api/workflows/catalog")
    etag = r.headers["etag"]
    assert etag == '"' + hashlib.sha256(r.body).hexdigest() + '"'
    assert "max-age" in r.headers["cache-control"] and "private" in r.headers["cache-control"]
    for inm in (etag, "W/" + etag, '"other", ' + etag, "*"):
        r2 = stack.call("GET", "/api/workflows/catalog", headers={"If-None-Match": inm})
        assert r2.status == 304, (inm, r2)
        assert r2.body == b"" and r2.headers["etag"] == etag
    for inm in ('"other"', etag[:-2] + '"', "garbage", '"' + "0" * 64 + '"'):
        r2 = stack.call("GET", "/api/workflows/catalog", headers={"If-None-Match": inm})
        assert r2.status == 200 and r2.body == r.body, inm
    # the conditional GET does not skip authentication
    r2 = stack.call("GET", "/api/workflows/catalog", token=None, headers={"If-None-Match": etag})
    assert_error(r2, 401, "unauthorized")


# ---------------------------------------------------------------------------------------------
# workflow CRUD


def test_create_get_and_audit(stack):
    definition = sms_workflow("Create me")
    r = stack.call("POST", "/api/workflows", {"definition": definition})
    assert r.status == 201, r
    wf = r.json
    assert r.headers["location"] == "/api/workflows/" + wf["id"]
    assert wf["name"] == "Create me" and wf["enabled"] is False and wf["version"] == 1
    assert wf["trigger"] == {"connector": "meta", "event": "message"}
    assert wf["definition"] == definition
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", wf["created_at"])
    assert stack.ok("GET", "/api/workflows/" + wf["id"]) == wf
    rows = audit_rows(stack, wf["id"])
    assert len(rows) == 1
    actor, action, tenant, detail = rows[0]
    assert (actor, action, tenant) == ("alice@acme.test", "workflow.created", stack.tenant["acme"])
    detail = json.loads(detail)
    assert detail["request_id"] == r.headers["x-request-id"] and detail["version"] == 1
    assert detail["branch"] == "main"
    assert stack.query("SELECT version, created_by FROM workflow_versions WHERE workflow_id = %s",
                       wf["id"]) == [(1, "alice@acme.test")]
    # an explicit name wins over the definition's; enabled at creation needs a valid workflow
    wf2 = stack.create(sms_workflow("inner name"), name="Outer name", enabled=True)
    assert wf2["name"] == "Outer name" and wf2["enabled"] is True
    assert json.loads(audit_rows(stack, wf2["id"])[0][3])["enabled"] is True


def test_create_failures_change_nothing(stack):
    count = stack.query("SELECT (SELECT count(*) FROM workflows), (SELECT count(*) FROM "
                        "audit_log), (SELECT count(*) FROM workflow_versions)")[0]
    bad = [
        ({}, 400, "invalid_field"),
        ({"name": "x"}, 400, "invalid_field"),
        ({"definition": "text"}, 400, "invalid_definition"),
        ({"definition": []}, 400, "invalid_definition"),
        ({"definition": {"name": "no nodes", "trigger": {"connector": "meta",
                                                           "event": "message"}}},
         400, "invalid_definition"),
        ({"definition": sms_workflow(), "enabled": "yes"}, 400, "invalid_field"),
        ({"definition": sms_workflow(), "name": ""}, 400, "invalid_field"),
        ({"definition": sms_workflow(), "name": 42}, 400, "invalid_field"),
        ({"definition": sms_workflow(), "name": "x" * 201}, 400, "invalid_field"),
        ({"definition": sms_workflow(), "name": "tab\there"}, 400, "invalid_field"),
        ({"definition": sms_workflow(), "colour": "red", "owner": 1}, 400, "unknown_field"),
    ]
    for body, status, error in bad:
        assert_error(stack.call("POST", "/api/workflows", body), status, error)
    r = stack.call("POST", "/api/workflows", {"definition": sms_workflow(), "colour": "red",
                                              "owner": 1})
    assert r.json["fields"] == ["colour", "owner"] and "colour, owner" in r.json["detail"]
    # wf_parse's reason names the path
    d = sms_workflow()
    d["nodes"][0]["retry"] = {"max_attempts": 99}
    body = assert_error(stack.call("POST", "/api/workflows", {"definition": d}), 400,
                        "invalid_definition")
    assert body["detail"].startswith("nodes[0].retry.max_attempts"), body
    d = sms_workflow()
    d["nodes"][0]["sparkle"] = True
    body = assert_error(stack.call("POST", "/api/workflows", {"definition": d}), 400,
                        "invalid_definition")
    assert "sparkle" in body["detail"], body
    # enabled: true with validation problems (no xero connection) is refused with them
    d = sms_workflow()
    d["nodes"][0] = {"id": "inv", "type": "action", "connector": "xero",
                     "action": "create_contact", "params": {"name": "A"}}
    body = assert_error(stack.call("POST", "/api/workflows", {"definition": d, "enabled": True}),
                        422, "validation_failed")
    assert [p["code"] for p in body["problems"]] == ["missing_connection"]
    assert stack.query("SELECT (SELECT count(*) FROM workflows), (SELECT count(*) FROM "
                       "audit_log), (SELECT count(*) FROM workflow_versions)")[0] == count


def test_names_are_unique_among_live_workflows(stack):
    wf = stack.create(name="Unique name")
    body = assert_error(stack.call("POST", "/api/workflows", {
        "name": "Unique name", "definition": sms_workflow()}), 409, "name_taken")
    assert "name" in body["detail"]
    stack.ok("DELETE", "/api/workflows/" + wf["id"], status=204)
    again = stack.create(name="Unique name")
    assert again["id"] != wf["id"]
    # the same name in another tenant is fine
    stack.create(name="Unique name", token="sandy_admin")


def test_get_not_found(stack):
    for path in ("/api/workflows/" + str(uuid.uuid4()), "/api/workflows/not-a-uuid",
                 "/api/workflows/" + str(uuid.uuid4()).upper()[:-1] + "G",
                 "/api/workflows/%27%20OR%201%3D1--", "/api/workflows/..%2F..%2Fetc",
                 "/api/workflows/%00"):
        assert_error(stack.call("GET", path), 404, "not_found")


def test_list_paginates_and_filters(stack):
    stack.tokens["lister"] = stack.tokens["sandy_admin"]
    existing = {w["id"] for w in stack.ok("GET", "/api/workflows?limit=100",
                                          token="lister")["workflows"]}
    made = [stack.create(name=f"page-{i:02d}", token="lister")["id"] for i in range(7)]
    stack.ok("POST", f"/api/workflows/{made[2]}/enable", {}, token="lister")
    stack.ok("POST", f"/api/workflows/{made[5]}/enable", token="lister")
    seen, cursor, pages = [], None, 0
    while True:
        q = "/api/workflows?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = stack.ok("GET", q, token="lister")
        assert len(page["workflows"]) <= 3
        seen += [w["id"] for w in page["workflows"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
    assert len(seen) == len(set(seen)) == len(existing) + 7
    assert set(made) <= set(seen)
    # newest first
    assert [i for i in seen if i in made] == list(reversed(made))
    page = stack.ok("GET", "/api/workflows", token="lister")
    assert len(page["workflows"]) == min(20, len(seen))
    assert "definition" not in page["workflows"][0]
    assert set(page["workflows"][0]) >= {"id", "name", "enabled", "version", "trigger",
                                         "created_at", "updated_at"}
    enabled = stack.ok("GET", "/api/workflows?enabled=true&limit=100", token="lister")
    assert {made[2], made[5]} <= {w["id"] for w in enabled["workflows"]}
    assert all(w["enabled"] for w in enabled["workflows"])
    disabled = stack.ok("GET", "/api/workflows?enabled=false&limit=100", token="lister")
    assert not ({made[2], made[5]} & {w["id"] for w in disabled["workflows"]})
    for q in ("limit=0", "limit=101", "limit=-1", "limit=abc", "limit=1.5",
              "limit=99999999999999999999999", "limit=1%3BDROP%20TABLE%20workflows",
              "enabled=yes", "enabled=", "cursor=abc", "cursor=%27%20OR%201%3D1",
              "cursor=" + b64url(b"2026-01-01T00:00:00Z|not-a-uuid"),
              "cursor=" + b64url(b"x" * 200)):
        assert_error(stack.call("GET", "/api/workflows?" + q, token="lister"), 400,
                     "invalid_parameter")
    # a cursor of the right shape from nowhere is just a position
    c = b64url(f"2000-01-01T00:00:00.000000Z|{uuid.uuid4()}".encode())
    assert stack.ok("GET", "/api/workflows?cursor=" + c, token="lister")["workflows"] == []


def test_update_makes_a_new_version_and_runs_keep_theirs(stack):
    wf = stack.create(name="Versioned")
    run = stack.query(
        "INSERT INTO runs (tenant_id, workflow_id, workflow_version, event_id, ordering_key,"
        " ordering_seq, trigger) VALUES (%s, %s, 1, %s, 'meta:900001', 1, '{}') RETURNING id",
        stack.tenant["acme"], wf["id"], "meta:" + uuid.uuid4().hex)[0][0]
    d2 = sms_workflow("Versioned", text="collect")
    r = stack.call("PUT", "/api/workflows/" + wf["id"], {"definition": d2})
    assert r.status == 200, r
    assert r.json["version"] == 2 and r.json["definition"] == d2 and r.json["name"] == "Versioned"
    assert r.json["updated_at"] >= wf["updated_at"]
    assert stack.ok("GET", "/api/workflows/" + wf["id"])["version"] == 2
    versions = stack.query("SELECT version, definition->'trigger'->>'filter' FROM "
                           "workflow_versions WHERE workflow_id = %s ORDER BY version", wf["id"])
    assert versions == [(1, "event.payload.message.text contains 'pickup'"),
                        (2, "event.payload.message.text contains 'collect'")]
    assert stack.query("SELECT workflow_version FROM runs WHERE id = %s", run) == [(1,)]
    # the same definition again changes nothing and writes no audit row
    n_audit = len(audit_rows(stack, wf["id"]))
    assert stack.ok("PUT", "/api/workflows/" + wf["id"], {"definition": d2})["version"] == 2
    assert len(audit_rows(stack, wf["id"])) == n_audit
    # a rename alone keeps the version; the trigger columns follow the definition
    d3 = sms_workflow("Versioned")
    d3["trigger"] = {"connector": "twilio", "event": "message.received"}
    r = stack.ok("PUT", "/api/workflows/" + wf["id"], {"definition": d3, "name": "Renamed"})
    assert r["version"] == 3 and r["name"] == "Renamed"
    assert r["trigger"] == {"connector": "twilio", "event": "message.received"}
    assert stack.query("SELECT trigger_connector, trigger_event FROM workflows WHERE id = %s",
                       wf["id"]) == [("twilio", "message.received")]
    r = stack.ok("PUT", "/api/workflows/" + wf["id"], {"definition": d3, "name": "Renamed again"})
    assert r["version"] == 3 and r["name"] == "Renamed again"
    actions = [(a, json.loads(d).get("version")) for _, a, _, d in audit_rows(stack, wf["id"])]
    assert actions == [("workflow.created", 1), ("workflow.updated", 2),
                       ("workflow.updated", 3), ("workflow.updated", 3)]


def test_update_failures(stack):
    wf = stack.create()
    path = "/api/workflows/" + wf["id"]
    assert_error(stack.call("PUT", path, {}), 400, "invalid_field")
    assert_error(stack.call("PUT", path, {"name": "only a name"}), 400, "invalid_field")
    assert_error(stack.call("PUT", path, {"definition": sms_workflow(), "x": 1}), 400,
                 "unknown_field")
    assert_error(stack.call("PUT", path, {"definition": {"name": "bad"}}), 400,
                 "invalid_definition")
    assert_error(stack.call("PUT", path), 400, "invalid_body")
    other = stack.create(name="Taken by another")
    assert_error(stack.call("PUT", path, {"definition": sms_workflow(), "name":
                                          "Taken by another"}), 409, "name_taken")
    assert_error(stack.call("PUT", "/api/workflows/" + str(uuid.uuid4()),
                            {"definition": sms_workflow()}), 404, "not_found")
    # enabled workflows must stay valid
    stack.ok("POST", path + "/enable")
    d = sms_workflow()
    d["nodes"][0]["params"].pop("from")
    body = assert_error(stack.call("PUT", path, {"definition": d}), 422, "validation_failed")
    assert body["problems"][0]["code"] == "missing_param"
    current = stack.ok("GET", path)
    assert current["version"] == 1 and current["definition"] == wf["definition"]
    assert current["enabled"] is True
    # disabling in the same PUT lets the draft be saved
    r = stack.ok("PUT", path, {"definition": d, "enabled": False})
    assert r["version"] == 2 and r["enabled"] is False
    assert stack.ok("GET", "/api/workflows/" + other["id"])["name"] == "Taken by another"


def test_a_field_given_twice_is_refused_and_changes_nothing(stack):
    wf = stack.create()
    path = "/api/workflows/" + wf["id"]
    count = stack.query("SELECT (SELECT count(*) FROM workflows), (SELECT count(*) FROM "
                        "workflow_versions), (SELECT count(*) FROM audit_log)")[0]
    definition = json.dumps(sms_workflow()).encode()
    for method, where in (("POST", "/api/workflows"), ("PUT", path)):
        # Which of the two names would win is anyone's guess: neither does.
        raw = b'{"name": "First", "definition": ' + definition + b', "name": "Second"}'
        body = assert_error(stack.call(method, where, raw=raw), 400, "duplicate_field")
        assert '"name"' in body["detail"], body
    raw = b'{"enabled": true, "definition": ' + definition + b', "enabled": false}'
    assert_error(stack.call("POST", "/api/workflows", raw=raw), 400, "duplicate_field")
    assert stack.query("SELECT (SELECT count(*) FROM workflows), (SELECT count(*) FROM "
                       "workflow_versions), (SELECT count(*) FROM audit_log)")[0] == count
    assert stack.ok("GET", path)["name"] == wf["name"]


def test_enable_disable_delete(stack):
    wf = stack.create()
    path = "/api/workflows/" + wf["id"]
    r = stack.ok("POST", path + "/enable")
    assert r["enabled"] is True
    assert stack.ok("POST", path + "/enable")["enabled"] is True  # idempotent, no new audit row
    assert stack.ok("POST", path + "/disable")["enabled"] is False
    assert stack.ok("POST", path + "/disable")["enabled"] is False
    assert_error(stack.call("POST", path + "/enable", {"force": True}), 400, "unknown_field")
    assert_error(stack.call("POST", path + "/disable", {"force": True}), 400, "unknown_field")
    actions = [a for _, a, _, _ in audit_rows(stack, wf["id"])]
    assert actions == ["workflow.created", "workflow.enabled", "workflow.disabled"]
    stack.ok("POST", path + "/enable")
    r = stack.call("DELETE", path)
    assert r.status == 204 and r.body == b""
    assert_error(stack.call("GET", path), 404, "not_found")
    assert_error(stack.call("DELETE", path), 404, "not_found")
    assert_error(stack.call("POST", path + "/enable"), 404, "not_found")
    assert_error(stack.call("PUT", path, {"definition": sms_workflow()}), 404, "not_found")
    assert_error(stack.call("POST", path + "/validate"), 404, "not_found")
    assert_error(stack.call("POST", path + "/simulate"), 404, "not_found")
    assert wf["id"] not in [w["id"] for w in stack.ok("GET", "/api/workflows?limit=100")[
        "workflows"]]
    row = stack.query("SELECT enabled, deleted_at IS NOT NULL FROM workflows WHERE id = %s",
                      wf["id"])
    assert row == [(False, True)]  # soft: the row (and its runs) stay
    actions = [a for _, a, _, _ in audit_rows(stack, wf["id"])]
    assert actions[-1] == "workflow.deleted" and actions.count("workflow.deleted") == 1


def test_enable_refuses_an_invalid_workflow(stack):
    d = sms_workflow()
    d["nodes"].append({"id": "crm", "type": "action", "connector": "hubspot",
                       "action": "upsert_contact", "params": {"email": "a@b.c"}})
    wf = stack.create(d)
    body = assert_error(stack.call("POST", f"/api/workflows/{wf['id']}/enable"), 422,
                        "validation_failed")
    assert [(p["code"], p["path"]) for p in body["problems"]] == [("missing_scope",
                                                                    "nodes[1].action")]
    assert stack.ok("GET", f"/api/workflows/{wf['id']}")["enabled"] is False
    assert [a for _, a, _, _ in audit_rows(stack, wf["id"])] == ["workflow.created"]


# ---------------------------------------------------------------------------------------------
# validate


def action(node_id, connector, act, params, **extra):
    n = {"id": node_id, "type": "action", "connector": connector, "action": act,
         "params": params}
    n.update(extra)
    return n


def draft(nodes, edges=(), trigger=None):
    return {"name": "draft", "trigger": trigger or {"connector": "meta", "event": "message"},
            "nodes": nodes, "edges": list(edges)}


SMS_PARAMS = {"to": "+14155550100", "from": "+14155559876", "body": "hi"}

# (what, draft, expected (code, path) pairs that must be among the problems)
PROBLEM_CASES = [
    ("schema", {"name": "no trigger", "nodes": []}, [("schema", None)]),
    ("schema (not an object)", "just text", [("schema", None)]),
    ("cycle", draft([action("a", "twilio", "send_message", SMS_PARAMS),
                     action("b", "twilio", "send_message", SMS_PARAMS)],
                    [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}]), [("cycle", None)]),
    ("unreachable", draft([{"id": "never", "type": "condition", "if": "false"},
                           action("a", "twilio", "send_message", SMS_PARAMS)],
                          [{"from": "never", "to": "a", "when": True}]),
     [("unreachable", "nodes[1]")]),
    ("unknown connector", draft([action("a", "myspace", "poke", {})]),
     [("unknown_connector", "nodes[0].connector")]),
    ("unknown action", draft([action("a", "twilio", "send_fax", {})]),
     [("unknown_action", "nodes[0].action")]),
    ("unknown event", draft([action("a", "twilio", "send_message", SMS_PARAMS)],
                            trigger={"connector": "meta", "event": "poke"}),
     [("unknown_event", "trigger.event")]),
    ("missing param", draft([action("a", "twilio", "send_message", {"to": "+1", "body": "x"})]),
     [("missing_param", "nodes[0].params.from")]),
    ("unknown param", draft([action("a", "twilio", "send_message", dict(SMS_PARAMS, fax="1"))]),
     [("unknown_param", "nodes[0].params.fax")]),
    ("mistyped param", draft([action("a", "twilio", "send_message", dict(SMS_PARAMS, body=42))]),
     [("param_type", "nodes[0].params.body")]),
    ("unknown template field", draft([action("a", "twilio", "send_message", dict(
        SMS_PARAMS, body="{{event.payload.message.shoe_size}}"))]),
     [("unknown_field", "nodes[0].params.body")]),
    ("not upstream", draft([action("a", "twilio", "send_message", dict(
        SMS_PARAMS, body="{{nodes.b.output.sid}}")), action("b", "twilio", "send_message",
                                                          SMS_PARAMS)]),
     [("not_upstream", "nodes[0].params.body")]),
    ("stale metadata", draft([action("a", "twilio", "send_message", SMS_PARAMS,
                                     metadata={"id": "send_message", "name": "Send a fax",
                                               "simulatable": False})]),
     [("stale_metadata", "nodes[0].metadata.name"),
      ("stale_metadata", "nodes[0].metadata.simulatable")]),
    ("missing connection", draft([action("a", "xero", "create_contact", {"name": "Ann"})]),
     [("missing_connection", "nodes[0].connector")]),
    ("missing connection (trigger)", draft([action("a", "twilio", "send_message", SMS_PARAMS)],
                                           trigger={"connector": "xero",
                                                    "event": "invoices.created"}),
     [("missing_connection", "trigger.connector")]),
    ("missing scope", draft([action("a", "hubspot", "upsert_contact", {"email": "a@b.c"})]),
     [("missing_scope", "nodes[0].action")]),
    ("beta not approved", draft([action("a", "klaviyo", "create_event",
                                        {"metric_name": "Coupon", "email": "a@b.c"})]),
     [("beta_not_approved", "nodes[0].connector"), ("missing_connection",
                                                    "nodes[0].connector")]),
]


@pytest.mark.parametrize("what,definition,expected", PROBLEM_CASES,
                         ids=[c[0] for c in PROBLEM_CASES])
def test_validate_finds_each_problem(stack, what, definition, expected):
    wf = stack.create()
    r = stack.call("POST", f"/api/workflows/{wf['id']}/validate", {"definition": definition})
    assert r.status == 200, r
    assert r.json["valid"] is False and r.json["draft"] is True and r.json["version"] is None
    problems = r.json["problems"]
    for p in problems:
        assert set(p) == {"path", "code", "message"} and p["message"], p
    found = {(p["code"], p["path"]) for p in problems}
    for code, path in expected:
        if path is None:
            assert code in {c for c, _ in found}, (what, problems)
        else:
            assert (code, path) in found, (what, problems)


def test_validate_every_problem_at_once(stack):
    wf = stack.create()
    d = draft([action("a", "xero", "create_contact", {"nom": "x"}),
               action("b", "hubspot", "upsert_contact", {"email": 7}),
               action("c", "klaviyo", "create_event", {"metric_name": "m"})],
              [{"from": "a", "to": "b"}])
    problems = stack.ok("POST", f"/api/workflows/{wf['id']}/validate",
                        {"definition": d})["problems"]
    codes = sorted(p["code"] for p in problems)
    # Klaviyo's own rule (an email or a phone number identifies the profile) comes from its
    # request builder: param_rule.
    assert codes == sorted(["missing_param", "unknown_param", "param_type", "missing_connection",
                            "missing_scope", "beta_not_approved", "missing_connection",
                            "param_rule"]), problems


def test_validate_stored_and_clean(stack):
    wf = stack.create(sms_workflow("Clean"))
    r = stack.ok("POST", f"/api/workflows/{wf['id']}/validate")
    assert r == {"workflow_id": wf["id"], "version": 1, "draft": False, "valid": True,
                 "problems": []}
    assert stack.ok("POST", f"/api/workflows/{wf['id']}/validate", {}) == r
    # a Beta connector the sandbox tenant has approved and connected: no beta problem there,
    # while the production tenant is told about the approval
    d = draft([action("a", "klaviyo", "create_event", {"metric_name": "Coupon",
                                                       "email": "a@b.c"})])
    sandy = stack.create(token="sandy_admin")
    r = stack.ok("POST", f"/api/workflows/{sandy['id']}/validate", {"definition": d},
                 token="sandy_admin")
    assert r["valid"] is True, r
    # validating writes nothing
    assert [a for _, a, _, _ in audit_rows(stack, wf["id"])] == ["workflow.created"]
    assert_error(stack.call("POST", f"/api/workflows/{wf['id']}/validate",
                            {"definition": d, "strict": True}), 400, "unknown_field")


def test_validate_reports_a_stored_definition_gone_stale(stack):
    """A definition saved while the tenant had a connection: the connection disappears."""
    wf = stack.create(sms_workflow("Loses its connection"))
    conn = stack.query("SELECT id FROM connections WHERE tenant_id = %s AND connector = 'twilio'",
                       stack.tenant["acme"])[0][0]
    stack.query("UPDATE connections SET status = 'disabled' WHERE id = %s", conn)
    try:
        r = stack.ok("POST", f"/api/workflows/{wf['id']}/validate")
        assert r["valid"] is False
        assert {(p["code"], p["path"]) for p in r["problems"]} == {("missing_connection",
                                                                    "nodes[0].connector")}
    finally:
        stack.query("UPDATE connections SET status = 'active' WHERE id = %s", conn)


# ---------------------------------------------------------------------------------------------
# simulate


def pickup_flow():
    return {"name": "Pickup flow " + uuid.uuid4().hex[:8],
            "trigger": {"connector": "meta", "event": "message",
                        "filter": "event.payload.message.text contains 'pickup'"},
            "nodes": [
                action("crm", "hubspot", "upsert_contact",
                       {"email": "{{event.payload.sender.id}}@example.com",
                        "firstname": "{{event.payload.message.text}}"}),
                {"id": "vip", "type": "condition",
                 "if": "nodes.crm.output.properties.lifecyclestage == 'customer'"},
                action("sms", "twilio", "send_message",
                       {"to": "+14155550100", "from": "+14155559876",
                        "body": "Pickup for {{nodes.crm.output.properties.firstname}}: "
                                "{{event.payload.message.text}}"}),
                action("invoice", "quickbooks", "create_invoice",
                       {"customer_id": "58",
                        "lines": [{"amount": 25, "item_id": "1", "description": "Wash"}]}),
                {"id": "wait", "type": "delay", "delay_ms": 7 * 24 * 3600 * 1000},
                {"id": "summary", "type": "transform",
                 "output": {"sid": "{{nodes.sms.output.sid}}", "tenant": "{{tenant.slug}}",
                            "until": "{{nodes.wait.output.until}}"}},
                action("lost", "twilio", "send_message", SMS_PARAMS)],
            "edges": [{"from": "crm", "to": "vip"},
                      {"from": "vip", "to": "sms", "when": True},
                      {"from": "vip", "to": "lost", "when": False},
                      {"from": "sms", "to": "invoice"},
                      {"from": "invoice", "to": "wait"},
                      {"from": "wait", "to": "summary"}]}


def by_id(result):
    return {n["id"]: n for n in result["nodes"]}


def test_simulate_walks_the_graph_without_calling_anything(stack):
    stack.fakes.reset()
    wf = stack.create(pickup_flow())
    event = {"sender": {"id": "6523"}, "recipient": {"id": "900001"},
             "message": {"mid": "m_1", "text": "pickup at 5"}}
    started = time.monotonic()
    r = stack.ok("POST", f"/api/workflows/{wf['id']}/simulate", {"event": event})
    assert time.monotonic() - started < 5  # the week-long delay is reported, not waited
    assert r["workflow_id"] == wf["id"] and r["version"] == 1 and r["simulated"] is True
    assert r["event"]["payload"] == event and r["event"]["provider"] == "meta"
    assert r["event"]["event"] == "message"
    assert r["trigger"] == {"connector": "meta", "event": "message",
                            "filter": "event.payload.message.text contains 'pickup'",
                            "matched": True}
    assert r["would_run"] is True and r["status"] == "succeeded"
    order = [n["id"] for n in r["nodes"]]
    assert order.index("crm") < order.index("vip") < order.index("sms") < order.index("invoice")
    nodes = by_id(r)
    hubspot = {a["id"]: a for a in catalog_file("hubspot")["actions"]}
    twilio = catalog_file("twilio")["actions"][0]
    assert nodes["crm"]["status"] == "succeeded"
    assert nodes["crm"]["params"] == {"email": "6523@example.com", "firstname": "pickup at 5"}
    assert nodes["crm"]["output"] == hubspot["upsert_contact"]["sample_output"]
    assert nodes["vip"]["status"] == "succeeded" and nodes["vip"]["branch"] is True
    assert nodes["vip"]["output"] == {"result": True}
    first = hubspot["upsert_contact"]["sample_output"]["properties"]["firstname"]
    assert nodes["sms"]["params"]["body"] == f"Pickup for {first}: pickup at 5"
    assert nodes["sms"]["output"] == twilio["sample_output"]
    assert nodes["invoice"]["status"] == "not_simulated" and nodes["invoice"]["output"] is None
    assert nodes["invoice"]["simulatable"] is False
    assert nodes["invoice"]["params"] == {"customer_id": "58",
                                          "lines": [{"amount": 25, "item_id": "1",
                                                     "description": "Wash"}]}
    assert nodes["wait"]["status"] == "succeeded"
    assert nodes["wait"]["delay_ms"] == 7 * 24 * 3600 * 1000
    assert nodes["summary"]["output"] == {"sid": twilio["sample_output"]["sid"],
                                          "tenant": "acme",
                                          "until": nodes["wait"]["until"]}
    assert nodes["lost"]["status"] == "skipped" and nodes["lost"]["output"] is None
    for n in r["nodes"]:
        assert isinstance(n["duration_ms"], (int, float)) and n["duration_ms"] >= 0
    # deterministic: the same again (but for the clock: durations and the delay's end)
    again = stack.ok("POST", f"/api/workflows/{wf['id']}/simulate", {"event": event})

    def strip(res):
        out = []
        for n in res["nodes"]:
            n = {k: v for k, v in n.items() if k not in ("duration_ms", "until")}
            if n["id"] in ("wait", "summary"):
                n["output"] = {k: v for k, v in n["output"].items() if k != "until"}
            out.append(n)
        return out
    assert strip(again) == strip(r)
    # not one request reached any platform
    assert stack.platform_calls() == []
    assert stack.fakes.stats()["total_requests"] == 0
    # and nothing was recorded
    assert stack.query("SELECT count(*) FROM runs WHERE workflow_id = %s", wf["id"]) == [(0,)]
    assert [a for _, a, _, _ in audit_rows(stack, wf["id"])] == ["workflow.created"]


def test_simulate_event_forms(stack):
    wf = stack.create(pickup_flow())
    path = f"/api/workflows/{wf['id']}/simulate"
    # no event: the catalog's sample payload of the trigger event
    r = stack.ok("POST", path)
    sample = next(e for e in catalog_file("meta")["webhook_events"] if e["name"] == "message")
    assert r["event"]["payload"] == sample["sample_payload"]
    assert r["trigger"]["matched"] is ("pickup" in sample["sample_payload"]["message"]["text"])
    # a payload the filter does not match: reported, and the walk still shown
    r = stack.ok("POST", path, {"event": {"message": {"text": "hello"}}})
    assert r["trigger"]["matched"] is False and r["would_run"] is False
    assert by_id(r)["sms"]["status"] == "succeeded"
    r = stack.ok("POST", path)
    assert by_id(r)["crm"]["params"]["email"] == sample["sample_payload"]["sender"]["id"] + \
        "@example.com"
    # a whole envelope: its members are used, missing ones filled in
    envelope = {"id": "meta:m_99", "account": "900001", "payload": {
        "sender": {"id": "1"}, "message": {"text": "pickup now", "mid": "m_99"}}}
    r = stack.ok("POST", path, {"event": envelope})
    assert r["event"]["id"] == "meta:m_99" and r["event"]["account"] == "900001"
    assert r["event"]["provider"] == "meta" and r["trigger"]["matched"] is True
    # an object with other members is a payload, even with a "payload" member
    r = stack.ok("POST", path, {"event": {"payload": {}, "message": {"text": "pickup"}}})
    assert r["event"]["payload"] == {"payload": {}, "message": {"text": "pickup"}}
    assert r["trigger"]["matched"] is True
    # the condition's other branch
    d = pickup_flow()
    d["nodes"][1]["if"] = "nodes.crm.output.properties.lifecyclestage == 'lead'"
    r = stack.ok("POST", path, {"definition": d, "event": envelope})
    assert r["draft"] is True and r["version"] is None
    nodes = by_id(r)
    assert nodes["vip"]["branch"] is False
    assert nodes["lost"]["status"] == "succeeded"
    assert [nodes[i]["status"] for i in ("sms", "invoice", "wait", "summary")] == ["skipped"] * 4
    assert stack.platform_calls() == []
    for bad in ([1], "text", 42, None):
        assert_error(stack.call("POST", path, {"event": bad}), 400, "invalid_field")
    assert_error(stack.call("POST", path, {"event": {}, "dry": True}), 400, "unknown_field")
    assert_error(stack.call("POST", path, {"definition": {"name": "x"}}), 400,
                 "invalid_definition")


def test_simulate_failure_stops_the_walk(stack):
    d = draft([{"id": "when", "type": "delay", "until": "{{event.payload.message.text}}"},
               action("after", "twilio", "send_message", SMS_PARAMS)],
              [{"from": "when", "to": "after"}])
    wf = stack.create(d)
    r = stack.ok("POST", f"/api/workflows/{wf['id']}/simulate",
                 {"event": {"message": {"text": "not a time"}}})
    assert r["status"] == "failed"
    nodes = by_id(r)
    assert nodes["when"]["status"] == "failed" and "RFC 3339" in nodes["when"]["error"]
    assert nodes["after"]["status"] == "skipped" and nodes["after"]["reason"]
    r = stack.ok("POST", f"/api/workflows/{wf['id']}/simulate",
                 {"event": {"message": {"text": "2030-01-01T00:00:00Z"}}})
    assert r["status"] == "succeeded" and by_id(r)["when"]["until"].startswith("2030-01-01T00")
    assert stack.platform_calls() == []


# ---------------------------------------------------------------------------------------------
# hostile input

HOSTILE = ["Robert'); DROP TABLE workflows;--", "\" OR \"1\"=\"1", "x' OR '1'='1",
           "$1::uuid", "\\\\'\\\"", "%s%n%x", "{{event.payload}}", "😀 naïve ünïcødé",
           "\u202e\u200b", "1e999999999", "-" * 200]


def table_counts(stack):
    return stack.query("SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM "
                       "role_mappings), (SELECT count(*) FROM connections), "
                       "(SELECT count(*) FROM support_approvals)")[0]


def test_hostile_strings_are_data(stack):
    before = table_counts(stack)
    for text in HOSTILE:
        d = sms_workflow(text[:200])
        d["nodes"][0]["params"]["body"] = text
        d["description"] = text
        d["ui"] = {text: [text, 1e300, -1e-300, 12345678901234567890123]}
        r = stack.call("POST", "/api/workflows", {"definition": d, "name": text[:200]})
        assert r.status == 201, (text, r)
        got = stack.ok("GET", "/api/workflows/" + r.json["id"])
        assert got["name"] == text[:200] and got["definition"]["description"] == text
        assert got["definition"]["nodes"][0]["params"]["body"] == text
        sim = stack.ok("POST", f"/api/workflows/{r.json['id']}/simulate",
                       {"event": {"message": {"text": text}}})
        if "{{" not in text:  # a template is a template, whatever else it holds
            assert by_id(sim)["sms"]["params"]["body"] == text
        v = stack.ok("POST", f"/api/workflows/{r.json['id']}/validate", {"definition": {
            "name": text, "trigger": {"connector": text, "event": text},
            "nodes": [action("a", text, text, {text: text})]}})
        assert v["valid"] is False
        json.dumps(v)  # every message is proper JSON text
    assert table_counts(stack) == before
    # hostile path parameters, query strings and headers
    for seg in ("'%3B%20DROP%20TABLE%20workflows%3B--", "%22%20OR%201%3D1", "%E2%80%AE",
                "%FF%FE", "..", "%2E%2E", "a" * 2000):
        assert_error(stack.call("GET", "/api/workflows/" + seg), 404, "not_found")
        assert_error(stack.call("POST", f"/api/workflows/{seg}/simulate"), 404, "not_found")
    r = stack.call("GET", "/api/workflows?limit=20&enabled=true%27%20OR%201%3D1")
    assert_error(r, 400, "invalid_parameter")
    r = stack.call("GET", "/api/workflows", headers={"X-Request-Id": "\u00e9" * 10})
    assert r.status == 200
    assert table_counts(stack) == before


def test_hostile_numbers_and_bytes(stack):
    before = stack.query("SELECT count(*) FROM workflows")[0][0]
    # a number PostgreSQL's numeric cannot hold: 400, not 500, and nothing saved
    raw = json.dumps({"definition": sms_workflow("huge")}).encode()
    raw = raw.replace(b'"edges": []', b'"edges": [], "ui": {"zoom": 1e999999}')
    body = assert_error(stack.call("POST", "/api/workflows", raw=raw), 400, "invalid_value")
    assert "database" in body["detail"]
    # huge numbers in typed fields are type errors
    for bad in (1e308, 10 ** 30, -1, 3.5):
        d = sms_workflow("numbers")
        d["nodes"][0]["timeout_ms"] = bad
        assert_error(stack.call("POST", "/api/workflows", {"definition": d}), 400,
                     "invalid_definition")
    # invalid UTF-8 in every field, raw and escaped
    template = {"name": "N", "definition": sms_workflow("D")}
    for field_path in (("name",), ("definition", "name"), ("definition", "nodes", 0, "id"),
                       ("definition", "nodes", 0, "params", "body"),
                       ("definition", "trigger", "filter")):
        raw = json.dumps(template)
        target = template
        for k in field_path[:-1]:
            target = target[k]
        old = json.dumps({field_path[-1]: target[field_path[-1]]})[1:-1]
        for bad in (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\\udc00"):
            key, _, value = old.partition(": ")
            new = (key + ": " + '"bad').encode() + bad + b'"'
            payload = raw.encode().replace(old.encode(), new, 1)
            assert payload != raw.encode()
            body = assert_error(stack.call("POST", "/api/workflows", raw=payload), 400,
                                "malformed_json")
            assert isinstance(body["position"], int)
    # NUL bytes
    assert_error(stack.call("POST", "/api/workflows",
                            raw=b'{"name": "a\\u0000b", "definition": {}}'), 400,
                 "malformed_json")
    assert stack.query("SELECT count(*) FROM workflows")[0][0] == before


# ---------------------------------------------------------------------------------------------
# configuration and shutdown


def run_serve(stack, **env):
    full = dict(os.environ)
    full.update({k: v for k, v in stack.serve_env(**env).items() if v is not None})
    for k, v in stack.serve_env(**env).items():
        if v is None:
            full.pop(k, None)
    return subprocess.run([harness.bin("hookflow-engine"), "serve"], capture_output=True,
                          text=True, timeout=60, env=harness.sanitizer_env(full))


def test_bad_configuration_is_one_line(stack):
    empty = harness.temp_dir("nosecrets")
    r = run_serve(stack, HOOKFLOW_SECRETS_DIR=empty, HOOKFLOW_API_LISTEN="127.0.0.1:0")
    assert r.returncode == 1 and "api/jwt_key is missing" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    short = harness.temp_dir("shortkey")
    os.makedirs(os.path.join(short, "api"))
    with open(os.path.join(short, "api", "jwt_key"), "w") as f:
        f.write("too-short\n")
    r = run_serve(stack, HOOKFLOW_SECRETS_DIR=short, HOOKFLOW_API_LISTEN="127.0.0.1:0")
    assert r.returncode == 1 and "at least 32" in r.stderr and "too-short" not in r.stderr
    r = run_serve(stack, HOOKFLOW_API_MAX_BODY_BYTES="lots", HOOKFLOW_API_LISTEN="127.0.0.1:0")
    assert r.returncode == 1 and "HOOKFLOW_API_MAX_BODY_BYTES" in r.stderr
    r = run_serve(stack, HOOKFLOW_DATABASE_URL=None, HOOKFLOW_API_LISTEN="127.0.0.1:0")
    assert r.returncode == 1 and "HOOKFLOW_DATABASE_URL" in r.stderr
    r = run_serve(stack, HOOKFLOW_API_LISTEN="256.1.1.1:0")
    assert r.returncode == 1 and "256.1.1.1" in r.stderr, r.stderr
    r = subprocess.run([harness.bin("hookflow-engine"), "serve", "--help"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and "HOOKFLOW_API_LISTEN" in r.stdout
    assert "HOOKFLOW_API_MAX_BODY_BYTES" in r.stdout


def test_database_outage_is_503(stack):
    """A second server against a database URL that refuses: ready says so, requests get 503."""
    port = harness.free_port()
    dead = f"postgresql://postgres@127.0.0.1:{harness.free_port()}/nope?connect_timeout=2"
    env = stack.serve_env(HOOKFLOW_DATABASE_URL=dead, HOOKFLOW_API_LISTEN=f"127.0.0.1:{port}")
    proc = harness.Proc([harness.bin("hookflow-engine"), "serve"], env=env, name="serve-nodb")
    try:
        harness.wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        status, _, body = harness.http("GET", f"http://127.0.0.1:{port}/readyz")
        assert status == 503 and json.loads(body)["error"] == "database_unavailable"
        status, headers, body = harness.http(
            "GET", f"http://127.0.0.1:{port}/api/workflows",
            headers={"Authorization": "Bearer " + stack.tokens["admin"]})
        assert status == 503 and json.loads(body)["error"] == "database_unavailable"
    finally:
        assert proc.stop() == 0
    assert not proc.sanitizer_errors(), proc.tail()
