"""The integration marketplace's connections API of `hookflow-engine serve` against real
PostgreSQL and the platform fakes: listing, OAuth start + callback (state, PKCE, the code
exchange at the fake token endpoints, the account lookup, tokens stored only encrypted), Twilio
credentials, enable/disable with the Beta approval rule, support approvals, the access matrix and
hostile input.

ApiStack (also used by test_api_runs.py and test_openapi.py) starts a fresh database, migrates
it, applies two tenants (one production, one sandbox) with branch role mappings, writes a secrets
dir (engine/token_key, api/jwt_key, client ids, api/support_users), starts the fakes and the
API, and mints HS256 JWTs.
"""

import base64
import datetime
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid

import pytest

import harness

sys.path.insert(0, os.path.join(harness.source_dir(), "tests", "fakes"))
from fakes import FakePlatforms  # noqa: E402

TOKEN_KEY_RAW = bytes(range(7, 39))
TOKEN_KEY = base64.b64encode(TOKEN_KEY_RAW).decode()
JWT_KEY = b"api-test-jwt-signing-key-0123456789abcdef"
PUBLIC_URL = "https://admin.example.test"
SUPPORT = "support@hookflow.dev"
XERO_TENANT = "8f0c3b9e-55a1-4f35-9b3e-6a7c2d1e0f42"
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-auth-token-0123456789abcdef"

CLIENTS = {p: (f"{p}-client", f"{p}-client-secret")
           for p in ("xero", "quickbooks", "hubspot", "klaviyo", "meta")}

CONNECTORS = ["xero", "quickbooks", "hubspot", "klaviyo", "twilio", "meta"]
BETA = {"klaviyo", "meta"}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(sub, tenant, branch="main", exp_in=3600, key=JWT_KEY, **extra):
    """An HS256 JWT with the claims hookflow reads."""
    header = {"alg": "HS256", "typ": "JWT"}
    payload = {"sub": sub, "tenant": tenant, "branch": branch,
               "exp": int(time.time()) + exp_in}
    payload.update(extra)
    signing = (b64url(json.dumps(header).encode()) + "." +
               b64url(json.dumps(payload).encode()))
    sig = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(sig)


def open_token(blob, context):
    """Decrypts a sealed token: AES-256-GCM, AAD "hookflow-token:v1:<context>", 12-byte nonce
    first, 16-byte tag last."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    blob = bytes(blob)
    return AESGCM(TOKEN_KEY_RAW).decrypt(blob[:12], blob[12:],
                                         ("hookflow-token:v1:" + context).encode()).decode()


def base_config(workflows_prod=(), workflows_sandbox=(), connections_prod=(),
                connections_sandbox=()):
    return {"tenants": [
        {"slug": "prod-co", "name": "Prod Co", "environment": "production",
         "branches": [{"branch": "main", "roles": [
                          {"subject": "alice@prod.test", "role": "admin"},
                          {"subject": "mia@prod.test", "role": "member"},
                          {"subject": "vic@prod.test", "role": "viewer"}]},
                      {"branch": "east", "roles": [
                          {"subject": "eve@prod.test", "role": "admin"}]}],
         "connections": list(connections_prod), "workflows": list(workflows_prod)},
        {"slug": "sandbox-co", "name": "Sandbox Co", "environment": "sandbox",
         "branches": [{"branch": "main", "roles": [
             {"subject": "sam@sandbox.test", "role": "admin"}]}],
         "connections": list(connections_sandbox), "workflows": list(workflows_sandbox)},
    ]}


class ApiStack:
    """PostgreSQL database + fakes + `hookflow-engine serve` for the API tests."""

    def __init__(self, postgres, config, env=None, secrets=None):
        self.pg = postgres
        self.db_url = postgres.fresh_db("api")
        out = subprocess.run([harness.bin("hookflow-engine"), "migrate"], capture_output=True,
                             text=True, env=dict(os.environ, HOOKFLOW_DATABASE_URL=self.db_url),
                             timeout=120)
        assert out.returncode == 0, out.stderr
        self.secrets_dir = harness.temp_dir("secrets")
        values = {
            "engine/token_key": TOKEN_KEY,
            "api/jwt_key": JWT_KEY.decode(),
            "api/support_users": f"# support staff, one per line\n\n  {SUPPORT}  \n"
                                 "#alice@prod.test\nops@hookflow.dev",
        }
        for p, (cid, secret) in CLIENTS.items():
            values[f"{p}/client_id"] = cid
            values[f"{p}/client_secret"] = secret
        values.update(secrets or {})
        for path, value in values.items():
            full = os.path.join(self.secrets_dir, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w") as f:
                f.write(value + "\n")
        self.fakes = FakePlatforms.start(harness.temp_dir("fakes"))
        self.apply(config)
        self.tenants = dict(self.query("SELECT slug, id::text FROM tenants"))
        self.prod = self.tenants["prod-co"]
        self.sandbox = self.tenants["sandbox-co"]
        self.port = harness.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            "HOOKFLOW_DATABASE_URL": self.db_url,
            "HOOKFLOW_SECRETS_DIR": self.secrets_dir,
            "HOOKFLOW_API_LISTEN": f"127.0.0.1:{self.port}",
            "HOOKFLOW_API_PUBLIC_URL": PUBLIC_URL,
            "HOOKFLOW_API_THREADS": "2",
            "HOOKFLOW_LOG_LEVEL": "debug",
        }
        self.env.update(self.fakes.env())
        self.env.update(env or {})
        self.proc = harness.Proc([harness.bin("hookflow-engine"), "serve"], env=self.env,
                                 name="api")
        harness.wait_http(self.base + "/healthz", proc=self.proc)

    # ---- helpers ---------------------------------------------------------------------------

    def apply(self, cfg):
        path = os.path.join(harness.temp_dir("apply"), "config.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        out = subprocess.run([harness.bin("hookflow-engine"), "apply", path], capture_output=True,
                             text=True, timeout=120, env=dict(
                                 os.environ, HOOKFLOW_DATABASE_URL=self.db_url,
                                 HOOKFLOW_SECRETS_DIR=self.secrets_dir))
        assert out.returncode == 0, out.stderr

    def query(self, sql, *args):
        conn = self.pg.connect(self.db_url)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def token(self, who="alice@prod.test", tenant=None, branch="main", **kw):
        return mint(who, tenant or self.prod, branch, **kw)

    def admin(self):
        return self.token()

    def sandbox_admin(self):
        return self.token("sam@sandbox.test", self.sandbox)

    def support(self, tenant=None):
        return self.token(SUPPORT, tenant or self.prod)

    def call(self, method, path, body=None, token=None, headers=None):
        """(status, headers, JSON body or raw bytes when not JSON)."""
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = "Bearer " + token
        status, rh, data = harness.http(method, self.base + path, body=body, headers=hdrs)
        if data and rh.get("content-type", "").startswith("application/json"):
            return status, rh, json.loads(data)
        return status, rh, data

    def stop(self):
        code = self.proc.stop()
        errors = self.proc.sanitizer_errors()
        self.fakes.stop()
        assert code == 0, f"serve exited {code}:\n{self.proc.tail()}"
        assert not errors, self.proc.tail(80)

    def audit(self, action=None):
        rows = self.query("SELECT tenant_id::text, actor, action, subject_type, subject_id, "
                          "detail::text FROM audit_log WHERE actor <> 'apply' ORDER BY id")
        return [r for r in rows if action is None or r[2] == action]


# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(postgres):
    s = ApiStack(postgres, base_config(
        connections_prod=[{"connector": "hubspot", "account": "77", "status": "active",
                           "scopes": ["crm.objects.contacts.write"],
                           "access_token": "hubspot-secret-access",
                           "refresh_token": "hubspot-secret-refresh",
                           "expires_at": "2099-01-01T00:00:00Z"}]),
        env={"HOOKFLOW_CONNECTOR_QUICKBOOKS_AUTHORIZE_URL":
             "https://sandbox-auth.example.test/connect?env=test"})
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def clean(stack):
    """Every test starts with only the applied hubspot connection and no approvals."""
    stack.query("DELETE FROM oauth_states")
    stack.query("DELETE FROM support_approvals")
    stack.query("DELETE FROM connections "
                "WHERE connector <> 'hubspot' OR account IS DISTINCT FROM '77'")
    stack.query("UPDATE connections SET status = 'active'")
    stack.query("DELETE FROM audit_log WHERE actor <> 'apply'")
    stack.fakes.reset()
    yield


def start(stack, connector, token=None, body=None):
    status, _, out = stack.call("POST", f"/api/integrations/{connector}/oauth/start", body,
                                token or stack.admin())
    assert status == 201, out
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(out["authorize_url"]).query,
                              keep_blank_values=True)
    return out, {k: v[0] for k, v in q.items()}


def callback(stack, connector, query, accept_json=True):
    """query: a dict, or a raw (already encoded) query string."""
    if not isinstance(query, str):
        query = urllib.parse.urlencode(query)
    path = f"/api/integrations/{connector}/oauth/callback?" + query
    return stack.call("GET", path, headers={"Accept": "application/json"} if accept_json else {})


def register_code(stack, provider, code, params, **spec):
    cid, secret = CLIENTS[provider]
    stack.fakes.tokens(provider, client_id=cid, client_secret=secret, code=code,
                       redirect_uri=params["redirect_uri"],
                       code_challenge=params["code_challenge"], code_challenge_method="S256",
                       **spec)


def connection(stack, tenant, connector):
    rows = stack.query("SELECT account, status, granted_scopes, requested_scopes, "
                       "access_token_enc, refresh_token_enc, token_expires_at, connected_by "
                       "FROM connections WHERE tenant_id = %s AND connector = %s "
                       "ORDER BY created_at", tenant, connector)
    return rows


# ---- listing ---------------------------------------------------------------------------------

def test_list_shows_every_connector_and_never_a_token(stack):
    status, headers, out = stack.call("GET", "/api/integrations", token=stack.admin())
    assert status == 200, out
    assert headers["cache-control"] == "no-store"
    items = out["integrations"]
    assert [i["connector"] for i in items] == CONNECTORS
    by = {i["connector"]: i for i in items}
    catalog = {}
    for c in CONNECTORS:
        with open(os.path.join(harness.source_dir(), "schemas", "catalog", c + ".json")) as f:
            catalog[c] = json.load(f)
    for c, item in by.items():
        assert item["scopes"] == catalog[c]["oauth"]["scopes"]
        assert item["availability"] == catalog[c]["availability"]
        assert item["name"] == catalog[c]["name"]
        assert item["approval"]["required"] == (c in BETA)  # prod-co is a production tenant
        assert item["approval"]["approved"] is False
    hub = by["hubspot"]
    assert hub["status"] == "active" and hub["connected"] is True and hub["account"] == "77"
    assert hub["granted_scopes"] == ["crm.objects.contacts.write"]
    assert hub["connections"][0]["has_refresh_token"] is True
    assert hub["connections"][0]["token_expires_at"].startswith("2099-01-01T00:00:00")
    assert by["xero"]["status"] == "not_connected" and by["xero"]["connected"] is False
    assert by["klaviyo"]["message"] == ("klaviyo is in Beta: a support approval is required "
                                        "before enabling it in production")
    text = json.dumps(out)
    assert "hubspot-secret" not in text and "token_enc" not in text

    # One connector; the sandbox tenant sees its own (empty) state and needs no approval.
    status, _, one = stack.call("GET", "/api/integrations/hubspot", token=stack.admin())
    assert status == 200 and one == hub
    status, _, other = stack.call("GET", "/api/integrations/hubspot",
                                  token=stack.sandbox_admin())
    assert status == 200 and other["status"] == "not_connected" and other["connections"] == []
    status, _, meta = stack.call("GET", "/api/integrations/meta", token=stack.sandbox_admin())
    assert meta["approval"]["required"] is False and meta["message"] is None


def test_access_matrix(stack):
    routes = [("GET", "/api/integrations", None),
              ("GET", "/api/integrations/xero", None),
              ("POST", "/api/integrations/xero/oauth/start", {}),
              ("PUT", "/api/integrations/twilio/credentials",
               {"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN}),
              ("POST", "/api/integrations/hubspot/enable", None),
              ("POST", "/api/integrations/hubspot/disable", None),
              ("POST", "/api/integrations/klaviyo/approval", {})]
    expired = stack.token(exp_in=-3600)
    wrong_key = stack.token(key=b"another-key-another-key-another-key!")
    member = stack.token("mia@prod.test")
    viewer = stack.token("vic@prod.test")
    other_branch = stack.token("alice@prod.test", branch="east")  # admin in main only
    unknown_tenant = stack.token(tenant=str(uuid.uuid4()))
    for method, path, body in routes:
        for tok, why in ((None, "none"), (expired, "expired"), (wrong_key, "signature"),
                         ("not.a.jwt", "garbage")):
            status, headers, out = stack.call(method, path, body, tok)
            assert status == 401, (method, path, why, out)
            assert out["error"] == "unauthorized"
            assert headers["www-authenticate"].startswith("Bearer")
        if path.endswith("/approval"):
            continue  # support staff hold no role: checked below
        for tok in (member, viewer, other_branch, unknown_tenant):
            status, _, out = stack.call(method, path, body, tok)
            assert status == 403, (method, path, out)
    # Nothing changed.
    assert stack.audit() == []
    assert len(stack.query("SELECT 1 FROM connections")) == 1
    # The approval route: valid token, but only support staff.
    for tok in (stack.admin(), member, other_branch):
        status, _, out = stack.call("POST", "/api/integrations/klaviyo/approval", {}, tok)
        assert status == 403 and out["error"] == "forbidden", out
    # The callback needs no bearer token (the state authenticates it).
    status, _, out = callback(stack, "xero", {"code": "x", "state": "unknown"})
    assert status == 400 and out["error"] == "invalid_state"


def test_other_tenant_never_sees_or_changes_a_connection(stack):
    # The sandbox admin disables "hubspot": prod-co's connection is untouched.
    status, _, out = stack.call("POST", "/api/integrations/hubspot/disable",
                                token=stack.sandbox_admin())
    assert status == 409 and out["error"] == "not_connected"
    assert connection(stack, stack.prod, "hubspot")[0][1] == "active"


# ---- OAuth -----------------------------------------------------------------------------------

def test_oauth_start_and_callback_store_scopes_and_encrypted_tokens(stack):
    out, q = start(stack, "xero")
    catalog_scopes = ["offline_access", "accounting.invoices", "accounting.payments",
                      "accounting.contacts"]
    assert out["scopes"] == catalog_scopes
    assert out["authorize_url"].startswith("https://login.xero.com/identity/connect/authorize?")
    redirect = f"{PUBLIC_URL}/api/integrations/xero/oauth/callback"
    assert out["redirect_uri"] == redirect
    assert q["client_id"] == "xero-client" and q["redirect_uri"] == redirect
    assert q["response_type"] == "code" and q["scope"] == " ".join(catalog_scopes)
    assert q["state"] == out["state"] and len(out["state"]) >= 43
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43

    # Only the state's hash is stored; the PKCE verifier only sealed under the token key.
    state_hash = hashlib.sha256(out["state"].encode()).digest()
    rows = stack.query("SELECT tenant_id::text, connector, created_by, code_verifier_enc, "
                       "redirect_uri, scopes, used_at, expires_at - created_at "
                       "FROM oauth_states WHERE state_hash = %s", state_hash)
    assert len(rows) == 1
    tenant, connector, by, sealed, ruri, scopes, used, ttl = rows[0]
    assert (tenant, connector, by, ruri, scopes, used) == (
        stack.prod, "xero", "alice@prod.test", redirect, catalog_scopes, None)
    assert ttl.total_seconds() == 600
    verifier = open_token(sealed, "xero:" + state_hash.hex() + ":pkce_verifier")
    assert b64url(hashlib.sha256(verifier.encode()).digest()) == q["code_challenge"]
    assert out["state"].encode() not in stack.query("SELECT string_agg(state_hash::text, '') "
                                                    "FROM oauth_states")[0][0].encode()
    # The pending record shows the catalog's scopes to the admin.
    rows = connection(stack, stack.prod, "xero")
    assert [(r[0], r[1], r[3]) for r in rows] == [(None, "pending", catalog_scopes)]
    status, _, view = stack.call("GET", "/api/integrations/xero", token=stack.admin())
    assert view["status"] == "pending" and view["connected"] is False
    assert view["connections"][0]["requested_scopes"] == catalog_scopes

    register_code(stack, "xero", "xero-code-1", q, tenants=[XERO_TENANT],
                  scope="offline_access accounting.invoices",
                  access_token="xero-at-from-oauth", refresh_token="xero-rt-from-oauth")
    status, headers, body = callback(stack, "xero", {"code": "xero-code-1",
                                                     "state": out["state"]},
                                     accept_json=False)
    assert status == 302, body
    assert headers["location"] == f"{PUBLIC_URL}/automation/integrations?connected=xero"

    rows = connection(stack, stack.prod, "xero")
    assert len(rows) == 1
    account, st, granted, requested, access, refresh, expires, connected_by = rows[0]
    assert (account, st, connected_by) == (XERO_TENANT, "active", "alice@prod.test")
    assert granted == ["offline_access", "accounting.invoices"]  # what the platform granted
    assert requested == catalog_scopes
    assert b"xero-at-from-oauth" not in bytes(access)
    assert b"xero-rt-from-oauth" not in bytes(refresh)
    assert len(bytes(access)) == len("xero-at-from-oauth") + 28
    assert open_token(access, f"xero:{XERO_TENANT}:access") == "xero-at-from-oauth"
    assert open_token(refresh, f"xero:{XERO_TENANT}:refresh") == "xero-rt-from-oauth"
    left = (expires.timestamp() - time.time())
    assert 1700 < left <= 1800

    # What the fake token endpoint saw: Basic client auth, the code, the same redirect_uri and
    # the PKCE verifier; then the connections lookup with the new token.
    reqs = stack.fakes.requests("xero")
    tok = [r for r in reqs if r["path"] == "/xero/token"]
    assert len(tok) == 1 and tok[0]["status"] == 200
    assert tok[0]["form"]["grant_type"] == "authorization_code"
    assert tok[0]["form"]["redirect_uri"] == redirect
    assert tok[0]["form"]["code_verifier"] == verifier
    assert "client_secret" not in tok[0]["form"]
    assert tok[0]["headers"]["authorization"].startswith("Basic ")
    conns = [r for r in reqs if r["path"] == "/xero/connections"]
    assert conns and conns[0]["headers"]["authorization"] == "Bearer xero-at-from-oauth"

    # The state was consumed: the same redirect again is refused and changes nothing.
    status, _, again = callback(stack, "xero", {"code": "xero-code-1", "state": out["state"]})
    assert status == 400 and again["error"] == "invalid_state"
    # Audited, never with a token or the state.
    actions = [a[2] for a in stack.audit()]
    assert actions == ["integration.oauth_started", "integration.connected"]
    text = json.dumps(stack.audit())
    for secret in ("xero-at-from-oauth", "xero-rt-from-oauth", out["state"], verifier):
        assert secret not in text
    assert all(a[0] == stack.prod and a[1] == "alice@prod.test" for a in stack.audit())
    log = stack.proc.log()
    for secret in ("xero-at-from-oauth", "xero-rt-from-oauth", out["state"], verifier,
                   "xero-client-secret"):
        assert secret not in log

    # Re-authorising the same organisation updates the one connection (no duplicate).
    out2, q2 = start(stack, "xero")
    register_code(stack, "xero", "xero-code-2", q2, tenants=[XERO_TENANT],
                  access_token="xero-at-2", refresh_token="xero-rt-2")
    status, _, body = callback(stack, "xero", {"code": "xero-code-2", "state": out2["state"]})
    assert status == 200 and body["connected"] == "xero", body
    assert body["integration"]["status"] == "active"
    assert body["integration"]["account"] == XERO_TENANT
    rows = connection(stack, stack.prod, "xero")
    assert len(rows) == 1 and open_token(rows[0][4], f"xero:{XERO_TENANT}:access") == "xero-at-2"
    # The fake answered scope "offline_access" by default for this grant.
    assert rows[0][2] == ["offline_access"]


def test_xero_second_organisation_of_a_user_is_the_one_connected(stack):
    """Xero's GET /connections lists every organisation the user ever connected to the app;
    the one a consent added carries its authEventId, the access token's (a JWT)
    authentication_event_id. A bookkeeper connecting a second organisation gets that one, not
    the first of the list again."""
    org_a, org_b = "7a4e1c2d-0000-4000-8000-00000000000a", "7a4e1c2d-0000-4000-8000-00000000000b"
    connected = []
    for org, code in ((org_a, "xero-code-org-a"), (org_b, "xero-code-org-b")):
        out, q = start(stack, "xero", token=stack.sandbox_admin())
        # No access token given: the fake issues a Xero-shaped JWT of about 1 KB.
        register_code(stack, "xero", code, q, tenants=[org], user="bookkeeper-1",
                      scope="offline_access accounting.invoices")
        status, _, body = callback(stack, "xero", {"code": code, "state": out["state"]})
        assert status == 200 and body["connected"] == "xero", body
        connected.append(org)
        assert sorted(r[0] for r in connection(stack, stack.sandbox, "xero") if r[0]) == \
            sorted(connected)
    conns = [r for r in stack.fakes.requests("xero") if r["path"] == "/xero/connections"]
    listed = json.loads(conns[-1]["response"])  # the second lookup saw both organisations
    assert [c["tenantId"] for c in listed] == [org_a, org_b]
    assert listed[0]["authEventId"] != listed[1]["authEventId"]
    rows = {r[0]: r for r in connection(stack, stack.sandbox, "xero") if r[0]}
    assert set(rows) == {org_a, org_b}
    access = open_token(rows[org_b][4], f"xero:{org_b}:access")
    assert access.count(".") == 2 and len(access) > 900
    assert conns[-1]["headers"]["authorization"] == "Bearer " + access


def test_authorize_url_override_quickbooks_realm(stack):
    out, q = start(stack, "quickbooks")
    assert out["authorize_url"].startswith("https://sandbox-auth.example.test/connect?env=test&")
    assert q["env"] == "test" and q["scope"] == "com.intuit.quickbooks.accounting"
    register_code(stack, "quickbooks", "qbo-code", q, realms=["9130350"],
                  access_token="qbo-at", refresh_token="qbo-rt")
    # QuickBooks names the company in the redirect; without it the callback cannot finish.
    status, _, body = callback(stack, "quickbooks", {"code": "qbo-code", "state": out["state"],
                                                     "realmId": "93'; DROP TABLE runs;--"})
    assert status == 400 and body["error"] == "account_unknown", body
    assert connection(stack, stack.prod, "quickbooks")[0][:2] == (None, "pending")
    out, q = start(stack, "quickbooks")
    register_code(stack, "quickbooks", "qbo-code-2", q, realms=["9130350"],
                  access_token="qbo-at", refresh_token="qbo-rt")
    status, _, body = callback(stack, "quickbooks", {"code": "qbo-code-2", "state": out["state"],
                                                     "realmId": "9130350"})
    assert status == 200, body
    rows = connection(stack, stack.prod, "quickbooks")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("9130350", "active", ["com.intuit.quickbooks.accounting"])]  # requested: no scope
    assert open_token(rows[0][4], "quickbooks:9130350:access") == "qbo-at"
    # QuickBooks says when the refresh token dies (x_refresh_token_expires_in: 100 days); the
    # admin sees it, to connect again in time. Xero says nothing: null.
    days = stack.query("SELECT extract(epoch from refresh_token_expires_at - now()) / 86400 "
                       "FROM connections WHERE connector = 'quickbooks' AND account = '9130350'")
    assert 99.9 < float(days[0][0]) <= 100, days
    status, _, view = stack.call("GET", "/api/integrations/quickbooks", token=stack.admin())
    expires = view["connections"][0]["refresh_token_expires_at"]
    left = datetime.datetime.fromisoformat(expires.replace("Z", "+00:00")) - \
        datetime.datetime.now(datetime.timezone.utc)
    assert 99.9 < left.total_seconds() / 86400 <= 100, expires
    status, _, view = stack.call("GET", "/api/integrations/xero", token=stack.admin())
    assert all(c["refresh_token_expires_at"] is None for c in view["connections"]), view


INTROSPECT = "/hubspot/oauth/2026-03/token/introspect"


def legacy_hubspot_token_answer(stack, access, refresh):
    """The next HubSpot token answer as before August 2025: no hub_id and no scopes (the fake
    answers with both, as HubSpot does now)."""
    stack.fakes.fault(provider="hubspot", path=r"/token$", method="POST", status=200, after=True,
                      body={"token_type": "bearer", "access_token": access,
                            "refresh_token": refresh, "expires_in": 1800})


def test_hubspot_account_from_token_introspection(stack):
    """HubSpot's token answer names no portal: the account comes from token introspection, the
    2026-03 endpoint that replaces v1's token-info lookup (retired on 16 Feb 2027)."""
    out, q = start(stack, "hubspot", token=stack.sandbox_admin())
    register_code(stack, "hubspot", "hs-code-i", q, tenants=["62515"], access_token="hs-at-i",
                  refresh_token="hs-rt-i", scope="crm.objects.contacts.write oauth")
    legacy_hubspot_token_answer(stack, "hs-at-i", "hs-rt-i")
    status, _, body = callback(stack, "hubspot", {"code": "hs-code-i", "state": out["state"]})
    assert status == 200, body
    assert body["integration"]["account"] == "62515"
    rows = connection(stack, stack.sandbox, "hubspot")
    # The token answer carries no scope: the granted scopes are the introspected ones.
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("62515", "active", ["crm.objects.contacts.write", "oauth"])]
    assert open_token(rows[0][4], "hubspot:62515:access") == "hs-at-i"
    reqs = stack.fakes.requests("hubspot")
    assert [(r["method"], r["path"]) for r in reqs] == [("POST", "/hubspot/token"),
                                                        ("POST", INTROSPECT)]
    # Everything in the form body: nothing secret in the URL, where proxies log it.
    intro = reqs[1]
    assert not intro["query"]
    assert intro["form"] == {"client_id": CLIENTS["hubspot"][0],
                             "client_secret": CLIENTS["hubspot"][1], "token": "hs-at-i",
                             "token_type_hint": "access_token"}
    assert stack.fakes.stats()["tokens"]["hubspot"]["introspected"] == 1
    assert "oauth/v1" not in stack.proc.log()


def test_hubspot_inactive_token_is_not_connected(stack):
    out, q = start(stack, "hubspot", token=stack.sandbox_admin())
    register_code(stack, "hubspot", "hs-code-x", q, tenants=["62516"], access_token="hs-at-x",
                  refresh_token="hs-rt-x")
    legacy_hubspot_token_answer(stack, "hs-at-x", "hs-rt-x")
    stack.fakes.fault(provider="hubspot", path=INTROSPECT, status=200, body={"active": False})
    status, _, body = callback(stack, "hubspot", {"code": "hs-code-x", "state": out["state"],
                                                  "account": "62516"})
    assert status == 502 and body["error"] == "account_lookup_failed", body
    assert "not active" in body["detail"]
    assert "hs-at-x" not in json.dumps(body)
    # Nothing connected: the sandbox has no HubSpot account, only the earlier pending placeholder.
    assert [r[0] for r in connection(stack, stack.sandbox, "hubspot") if r[0]] == []


def test_hubspot_account_from_the_admin_when_the_platform_has_no_lookup(stack):
    out, q = start(stack, "hubspot", token=stack.sandbox_admin())
    register_code(stack, "hubspot", "hs-code", q, access_token="hs-at", refresh_token="hs-rt")
    stack.fakes.fault(provider="hubspot", path=INTROSPECT, status=404, count=-1)
    status, _, body = callback(stack, "hubspot", {"code": "hs-code", "state": out["state"],
                                                  "account": "4455"})
    assert status == 200, body
    rows = connection(stack, stack.sandbox, "hubspot")
    assert [(r[0], r[1]) for r in rows] == [("4455", "active")]
    # Introspection was tried first (a stand-in without it: 404), then the admin's account.
    paths = [r["path"] for r in stack.fakes.requests("hubspot")]
    assert paths == ["/hubspot/token", INTROSPECT]
    # HubSpot takes the client secret in the body.
    tok = stack.fakes.requests("hubspot", path="/hubspot/token")[0]
    assert tok["form"]["client_secret"] == "hubspot-client-secret"


def test_beta_connector_in_production_needs_support_approval(stack):
    out, q = start(stack, "klaviyo", body={"account": "KlaviyoAcct1"})
    assert out["scopes"] == ["events:write", "profiles:read", "profiles:write", "accounts:read"]
    # Klaviyo requires PKCE: the fake checks the verifier against the challenge.
    # The account comes from Klaviyo's GET /api/accounts/ (scope accounts:read).
    register_code(stack, "klaviyo", "kl-code", q, access_token="kl-at", refresh_token="kl-rt",
                  scope="events:write profiles:write", tenants=["KlaviyoAcct1"])
    status, _, body = callback(stack, "klaviyo", {"code": "kl-code", "state": out["state"]})
    assert status == 200, body
    view = body["integration"]
    assert view["status"] == "pending" and view["connected"] is True
    assert view["account"] == "KlaviyoAcct1"
    assert view["approval"] == {"required": True, "approved": False, "approved_by": None,
                                "approved_at": None, "note": None}
    assert "support approval is required" in view["message"]
    assert stack.fakes.stats()["tokens"]["klaviyo"]["code_exchanged"] == 1
    rows = connection(stack, stack.prod, "klaviyo")
    assert rows[0][:3] == ("KlaviyoAcct1", "pending", ["events:write", "profiles:write"])

    status, _, err = stack.call("POST", "/api/integrations/klaviyo/enable", token=stack.admin())
    assert status == 403
    assert err == {"error": "beta_not_approved",
                   "detail": "klaviyo is in Beta: a support approval is required before "
                             "enabling it in production"}
    assert connection(stack, stack.prod, "klaviyo")[0][1] == "pending"
    # Enabling a Beta connector that is not even connected is refused the same way.
    status, _, err = stack.call("POST", "/api/integrations/meta/enable", token=stack.admin())
    assert status == 403 and err["error"] == "beta_not_approved"

    # The tenant's admin cannot approve; support staff can.
    status, _, err = stack.call("POST", "/api/integrations/klaviyo/approval", {},
                                stack.admin())
    assert status == 403
    status, _, view = stack.call("POST", "/api/integrations/klaviyo/approval",
                                 {"note": "Pilot approved by ticket #4411 \u2713"},
                                 stack.support())
    assert status == 200, view
    assert view["approval"]["approved"] is True
    assert view["approval"]["approved_by"] == SUPPORT
    assert view["approval"]["note"] == "Pilot approved by ticket #4411 \u2713"
    assert view["approval"]["approved_at"].endswith("Z")
    assert view["message"] == "authorised: enable it to use it in workflows"
    rows = stack.query("SELECT approved_by, approved_at FROM support_approvals "
                       "WHERE tenant_id = %s AND connector = 'klaviyo'", stack.prod)
    assert rows[0][0] == SUPPORT

    status, _, view = stack.call("POST", "/api/integrations/klaviyo/enable",
                                 token=stack.admin())
    assert status == 200 and view["status"] == "active", view
    assert connection(stack, stack.prod, "klaviyo")[0][1] == "active"
    audit = stack.audit()
    assert [a[2] for a in audit] == ["integration.oauth_started", "integration.connected",
                                     "integration.approved", "integration.enabled"]
    assert audit[2][1] == SUPPORT and audit[2][0] == stack.prod
    assert "kl-at" not in json.dumps(audit) and "kl-rt" not in json.dumps(audit)

    # Approving again updates who and when; a second support user (last line of the file).
    status, _, _ = stack.call("POST", "/api/integrations/klaviyo/approval", None,
                              stack.token("ops@hookflow.dev"))
    assert status == 200
    assert stack.query("SELECT approved_by FROM support_approvals WHERE tenant_id = %s",
                       stack.prod) == [("ops@hookflow.dev",)]


def test_beta_connector_in_sandbox_needs_no_approval(stack):
    out, q = start(stack, "meta", token=stack.sandbox_admin())
    # Meta: the code gives a user token; /me/accounts lists the page and its page token.
    stack.fakes.tokens("meta", access_token="meta-page-token-P1", page_id="5550001")
    cid, secret = CLIENTS["meta"]
    stack.fakes.tokens("meta", client_id=cid, client_secret=secret, code="meta-code",
                       redirect_uri=q["redirect_uri"], pages=["5550001"],
                       access_token="meta-user-token")
    status, _, body = callback(stack, "meta", {"code": "meta-code", "state": out["state"]})
    assert status == 200, body
    assert body["integration"]["status"] == "active"
    assert body["integration"]["approval"]["required"] is False
    rows = connection(stack, stack.sandbox, "meta")
    account, st, granted, requested, access, refresh, expires, _ = rows[0]
    assert (account, st, refresh, expires) == ("5550001", "active", None, None)
    assert granted == ["pages_messaging", "pages_show_list"]  # Meta's answer names none
    # The Page's own token, which never expires: the code's short-lived user token was first
    # exchanged for a long-lived one (a Page token listed for the short-lived one dies within the
    # hour, and every Meta run after it would fail).
    assert open_token(access, "meta:5550001:access") == "meta-page-token-P1"
    assert stack.fakes.stats()["tokens"]["meta"].get("short_lived_page_tokens", 0) == 0
    status, _, view = stack.call("POST", "/api/integrations/meta/enable",
                                 token=stack.sandbox_admin())
    assert status == 200 and view["status"] == "active"
    # Both exchanges were the documented GETs; the secret never reached our log.
    exch = stack.fakes.requests("meta", path="oauth/access_token")
    assert [x["method"] for x in exch] == ["GET", "GET"]
    assert exch[0]["query"]["code"] == "meta-code"
    assert exch[1]["query"]["grant_type"] == "fb_exchange_token"
    assert exch[1]["query"]["fb_exchange_token"] == "meta-user-token"
    assert exch[1]["query"]["client_id"] == cid
    assert stack.fakes.stats()["tokens"]["meta"]["exchanged"] == 1
    assert "meta-client-secret" not in stack.proc.log()


def test_callback_failures(stack):
    # No state, unknown state, an expired one.
    status, _, body = callback(stack, "xero", {"code": "c"})
    assert status == 400 and body["error"] == "invalid_state"
    status, _, body = callback(stack, "xero", {"code": "c", "state": "x" * 43})
    assert status == 400 and body["error"] == "invalid_state"
    out, q = start(stack, "xero")
    stack.query("UPDATE oauth_states SET created_at = created_at - interval '11 minutes', "
                "expires_at = expires_at - interval '11 minutes'")
    status, _, body = callback(stack, "xero", {"code": "c", "state": out["state"]})
    assert status == 400 and body["error"] == "invalid_state"
    # A HEAD (a link checker, a prefetch) does not use the state up.
    out, q = start(stack, "xero")
    status, _, _ = stack.call("HEAD", "/api/integrations/xero/oauth/callback?code=c&state=" +
                              out["state"])
    assert status == 400
    assert stack.query("SELECT used_at FROM oauth_states WHERE state_hash = %s",
                       hashlib.sha256(out["state"].encode()).digest()) == [(None,)]
    # A state of one connector does not work for another.
    status, _, body = callback(stack, "quickbooks", {"code": "c", "state": out["state"],
                                                     "realmId": "1"})
    assert status == 400 and body["error"] == "invalid_state"

    # The admin declined: the platform's error and description come back (cleaned up).
    # (a control character and bytes that are not UTF-8 in the description)
    status, _, body = callback(stack, "xero", "error=access_denied&state=" + out["state"] +
                               "&error_description=The%20user%20denied%01%20%22access%22%20"
                               "%3Cscript%3E%FF%ED%A0%80")
    assert status == 400, body
    assert body["error"] == "access_denied"
    assert body["detail"] == "The user denied  \"access\" <script>????"
    # ... and the state is used up.
    status, _, body = callback(stack, "xero", {"code": "c", "state": out["state"]})
    assert status == 400 and body["error"] == "invalid_state"
    assert "integration.oauth_denied" in [a[2] for a in stack.audit()]

    # A code the platform does not know: 502 with the platform's reason, nothing stored.
    out, q = start(stack, "xero")
    stack.fakes.tokens("xero", client_id=CLIENTS["xero"][0], client_secret=CLIENTS["xero"][1])
    status, _, body = callback(stack, "xero", {"code": "never-issued", "state": out["state"]})
    assert status == 502 and body["error"] == "token_exchange_failed", body
    assert "invalid_grant" in body["detail"]
    assert connection(stack, stack.prod, "xero")[0][:2] == (None, "pending")

    # An organisation already connected to another tenant.
    stack.query("INSERT INTO connections (tenant_id, connector, account, status) "
                "VALUES (%s, 'xero', %s, 'active')", stack.sandbox, XERO_TENANT)
    out, q = start(stack, "xero")
    register_code(stack, "xero", "xero-dup", q, tenants=[XERO_TENANT], access_token="dup-at")
    status, _, body = callback(stack, "xero", {"code": "xero-dup", "state": out["state"]})
    assert status == 409 and body["error"] == "account_in_use", body
    assert stack.tenants["sandbox-co"] not in body["detail"]
    assert connection(stack, stack.prod, "xero")[0][:2] == (None, "pending")
    assert connection(stack, stack.sandbox, "xero")[0][4] is None

    # The token endpoint is down.
    out, q = start(stack, "xero")
    stack.fakes.fault("xero", path="/xero/token", status=503, count=1)
    status, _, body = callback(stack, "xero", {"code": "c", "state": out["state"]})
    assert status == 502 and body["error"] == "token_exchange_failed", body

    # A pending state whose sealed PKCE verifier is damaged: a server fault (500), not a missing
    # configuration, and nothing stored.
    out, q = start(stack, "xero")
    stack.query("UPDATE oauth_states SET code_verifier_enc = '\\x00'::bytea WHERE state_hash = %s",
                hashlib.sha256(out["state"].encode()).digest())
    status, _, body = callback(stack, "xero", {"code": "c", "state": out["state"]})
    assert status == 500 and body["error"] == "internal", body
    assert connection(stack, stack.prod, "xero")[0][:2] == (None, "pending")

    # Twilio has no OAuth.
    status, _, body = stack.call("POST", "/api/integrations/twilio/oauth/start", {},
                                 stack.admin())
    assert status == 400 and body["error"] == "oauth_not_supported"
    status, _, body = callback(stack, "twilio", {"code": "c", "state": "s"})
    assert status == 400


def test_start_validation(stack):
    for body, code in (({"account": "a'; DROP TABLE connections;--"}, "invalid_field"),
                       ({"account": 12}, "invalid_field"),
                       ({"acount": "x"}, "unknown_field"),
                       ({"account": "é" * 10}, "invalid_field"),
                       ([1, 2], "invalid_body")):
        status, _, out = stack.call("POST", "/api/integrations/xero/oauth/start", body,
                                    stack.admin())
        assert status == 400 and out["error"] == code, (body, out)
    status, _, out = stack.call("POST", "/api/integrations/xero/oauth/start", b"{\"account\":",
                                stack.admin(), headers={"Content-Type": "application/json"})
    assert status == 400 and out["error"] == "malformed_json"
    assert stack.query("SELECT count(*) FROM oauth_states") == [(0,)]
    assert connection(stack, stack.prod, "xero") == []


def test_unknown_connector_is_404_everywhere(stack):
    for name in ("shopify", "XERO", "xero'--", "%F0%9F%92%A9", "x%00y", "a" * 300):
        for method, suffix, body in (("GET", "", None), ("POST", "/oauth/start", {}),
                                     ("GET", "/oauth/callback?state=s&code=c", None),
                                     ("PUT", "/credentials", {}), ("POST", "/enable", None),
                                     ("POST", "/disable", None), ("POST", "/approval", {})):
            tok = stack.support() if suffix == "/approval" else stack.admin()
            status, _, out = stack.call(method, f"/api/integrations/{name}{suffix}", body, tok)
            assert status == 404, (name, suffix, out)
    assert stack.audit() == []


# ---- Twilio credentials, enable/disable -------------------------------------------------------

def test_twilio_credentials(stack):
    path = "/api/integrations/twilio/credentials"
    bad = [({"account_sid": "AC123", "auth_token": TWILIO_TOKEN}, "invalid_field"),
           ({"account_sid": "AC" + "g" * 32, "auth_token": TWILIO_TOKEN}, "invalid_field"),
           ({"account_sid": "XX" + "0" * 32, "auth_token": TWILIO_TOKEN}, "invalid_field"),
           ({"account_sid": TWILIO_SID}, "invalid_field"),
           ({"account_sid": TWILIO_SID, "auth_token": "short"}, "invalid_field"),
           ({"account_sid": TWILIO_SID, "auth_token": "has space in it 12345"}, "invalid_field"),
           ({"account_sid": TWILIO_SID, "auth_token": 1234567890123456789}, "invalid_field"),
           ({"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN, "extra": 1},
            "unknown_field"),
           (None, "invalid_body")]
    for body, code in bad:
        status, _, out = stack.call("PUT", path, body, stack.admin())
        assert status == 400 and out["error"] == code, (body, out)
        assert TWILIO_TOKEN not in json.dumps(out)
    status, _, out = stack.call("PUT", "/api/integrations/xero/credentials",
                                {"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN},
                                stack.admin())
    assert status == 400 and out["error"] == "credentials_not_supported"
    assert connection(stack, stack.prod, "twilio") == []

    status, _, view = stack.call("PUT", path, {"account_sid": TWILIO_SID,
                                               "auth_token": TWILIO_TOKEN}, stack.admin())
    assert status == 200, view
    assert view["status"] == "active" and view["account"] == TWILIO_SID
    rows = connection(stack, stack.prod, "twilio")
    assert len(rows) == 1
    assert TWILIO_TOKEN.encode() not in bytes(rows[0][4])
    assert open_token(rows[0][4], f"twilio:{TWILIO_SID}:access") == TWILIO_TOKEN
    assert rows[0][5] is None and rows[0][6] is None
    # Rotating the auth token updates the same connection.
    status, _, view = stack.call("PUT", path, {"account_sid": TWILIO_SID,
                                               "auth_token": TWILIO_TOKEN + "2"}, stack.admin())
    assert status == 200
    rows = connection(stack, stack.prod, "twilio")
    assert len(rows) == 1
    assert open_token(rows[0][4], f"twilio:{TWILIO_SID}:access") == TWILIO_TOKEN + "2"
    # The same account for the other tenant: refused.
    status, _, out = stack.call("PUT", path, {"account_sid": TWILIO_SID,
                                              "auth_token": TWILIO_TOKEN},
                                stack.sandbox_admin())
    assert status == 409 and out["error"] == "account_in_use"
    assert connection(stack, stack.sandbox, "twilio") == []
    assert TWILIO_TOKEN not in json.dumps(stack.audit())
    assert TWILIO_TOKEN not in stack.proc.log()


def test_enable_disable(stack):
    status, _, out = stack.call("POST", "/api/integrations/xero/enable", token=stack.admin())
    assert status == 409 and out["error"] == "not_connected"
    status, _, out = stack.call("POST", "/api/integrations/xero/disable", token=stack.admin())
    assert status == 409 and out["error"] == "not_connected"
    status, _, view = stack.call("POST", "/api/integrations/hubspot/disable",
                                 token=stack.admin())
    assert status == 200 and view["status"] == "disabled", view
    assert connection(stack, stack.prod, "hubspot")[0][1] == "disabled"
    status, _, view = stack.call("POST", "/api/integrations/hubspot/disable",
                                 token=stack.admin())
    assert status == 200 and view["status"] == "disabled"  # idempotent
    status, _, view = stack.call("POST", "/api/integrations/hubspot/enable", token=stack.admin())
    assert status == 200 and view["status"] == "active"
    # A pending authorisation that never finished cannot be enabled; disable drops it.
    start(stack, "xero")
    assert connection(stack, stack.prod, "xero")[0][:2] == (None, "pending")
    status, _, out = stack.call("POST", "/api/integrations/xero/enable", token=stack.admin())
    assert status == 409 and out["error"] == "not_connected"
    status, _, view = stack.call("POST", "/api/integrations/xero/disable", token=stack.admin())
    assert status == 200 and view["status"] == "not_connected", view
    assert connection(stack, stack.prod, "xero") == []
    actions = [a[2] for a in stack.audit()]
    assert actions.count("integration.disabled") == 3
    assert actions.count("integration.enabled") == 1


def test_approval_rules(stack):
    path = "/api/integrations/meta/approval"
    status, _, out = stack.call("POST", "/api/integrations/xero/approval", {}, stack.support())
    assert status == 400 and out["error"] == "not_beta"
    status, _, out = stack.call("POST", path, {"note": "x" * 1001}, stack.support())
    assert status == 400 and out["error"] == "invalid_field"
    status, _, out = stack.call("POST", path, {"note": ["no"]}, stack.support())
    assert status == 400 and out["error"] == "invalid_field"
    status, _, out = stack.call("POST", path, {"approved_by": "me"}, stack.support())
    assert status == 400 and out["error"] == "unknown_field"
    # A commented-out line of api/support_users is not a support user.
    status, _, out = stack.call("POST", path, {}, stack.token("#alice@prod.test"))
    assert status == 403
    status, _, out = stack.call("POST", path, {}, stack.token("support@hookflow.dev "))
    assert status == 403
    # A tenant that does not exist.
    status, _, out = stack.call("POST", path, {}, stack.support(str(uuid.uuid4())))
    assert status == 404
    assert stack.query("SELECT count(*) FROM support_approvals") == [(0,)]
    # The approval is for the token's tenant only.
    status, _, view = stack.call("POST", path, {"note": "'); DELETE FROM tenants;--"},
                                 stack.support(stack.sandbox))
    assert status == 200 and view["approval"]["approved"] is True
    assert view["approval"]["note"] == "'); DELETE FROM tenants;--"
    status, _, view = stack.call("GET", "/api/integrations/meta", token=stack.admin())
    assert view["approval"]["approved"] is False
    assert len(stack.query("SELECT 1 FROM tenants")) == 2


def test_sighup_reloads_the_jwt_key_and_keeps_the_old_set_when_the_new_one_is_bad(stack):
    """Rotating the API's signing key: the new key goes into api/jwt_key and the old one into
    api/jwt_key.previous, serve is told SIGHUP, and tokens signed with either are accepted; once
    .previous is removed (and SIGHUP again) the old key's tokens are 401. A directory without
    api/jwt_key is refused and the keys in use stay."""
    path = os.path.join(stack.secrets_dir, "api", "jwt_key")
    new_key = b"api-test-jwt-signing-key-ROTATED-0123456789"
    old_token = stack.admin()
    new_token = mint("alice@prod.test", stack.prod, key=new_key)

    def status_with(token):
        return stack.call("GET", "/api/integrations", token=token)[0]

    def hup(event="secrets.reloaded"):
        count = lambda: sum(1 for line in stack.proc.log_lines() if f'"{event}"' in line)
        before = count()
        stack.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: count() > before, timeout=20, what=event)

    assert status_with(old_token) == 200 and status_with(new_token) == 401
    try:
        with open(path + ".previous", "wb") as f:
            f.write(JWT_KEY)
        with open(path, "wb") as f:
            f.write(new_key)
        hup()
        assert status_with(new_token) == 200 and status_with(old_token) == 200
        os.unlink(path + ".previous")
        hup()
        assert status_with(new_token) == 200 and status_with(old_token) == 401
        os.unlink(path)
        hup("secrets.reload_failed")
        assert "api/jwt_key is missing" in stack.proc.tail(20)
        assert status_with(new_token) == 200 and status_with(old_token) == 401
    finally:
        for p in (path, path + ".previous"):
            if os.path.exists(p):
                os.unlink(p)
        with open(path, "wb") as f:
            f.write(JWT_KEY)
        hup()
    assert status_with(old_token) == 200
