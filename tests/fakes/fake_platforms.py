#!/usr/bin/python3
"""fake_platforms: one local HTTP/1.1 server that emulates the six platforms hookflow's connectors
call (Xero, QuickBooks Online, HubSpot, Klaviyo, Twilio, Meta Messenger), for tests.

Each platform lives under a path prefix (/xero, /quickbooks, /hubspot, /klaviyo, /twilio, /meta);
the connector appends the platform's real path to that prefix. The fake checks every request the
way the platform would (method, path, auth, tenant, content type, required headers, body shape)
and answers like the platform (including its error shapes, roughly). A control API under
/_control configures credentials and faults and reports what was received. See README.md.

    /usr/bin/python3 tests/fakes/fake_platforms.py [--host 127.0.0.1] [--port 0] [--port-file PATH]

Standard library only.
"""

import argparse
import base64
import binascii
import collections
import datetime as dt
import hashlib
import http.server
import json
import math
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.parse
import uuid

PROVIDERS = ("xero", "quickbooks", "hubspot", "klaviyo", "twilio", "meta")

# Lifetime (s) of access tokens the fake issues (refresh, code exchange); None = never expires.
ISSUED_TTL = {"xero": 1800, "quickbooks": 3600, "hubspot": 1800, "klaviyo": 3600,
              "meta": 5183944}
# Meta: the user token a login code gives is short-lived (about an hour); fb_exchange_token turns
# it into a long-lived one (ISSUED_TTL). A Page token listed for a short-lived user token expires
# with it, for a long-lived one never (Meta's "Page access tokens" docs).
META_SHORT_TTL = 3600
# Whether a refresh returns a NEW refresh token (and the old one stops working).
ROTATES = {"xero": True, "quickbooks": True, "hubspot": False, "klaviyo": False, "meta": False}
# Refresh tokens that die unused (providers.md): Xero's after 60 days, QuickBooks' after 100
# (rolling: each use starts the 100 days again).
REFRESH_TTL = {"xero": 60 * 86400, "quickbooks": 100 * 86400}

JSON_CT = "application/json; charset=utf-8"
JSONAPI_CT = "application/vnd.api+json"

GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
E164_RE = re.compile(r"^\+[1-9][0-9]{4,14}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
XERO_DATE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(T\d{2}:\d{2}:\d{2}(\.\d+)?)?$")
REVISION_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(\.pre)?$")
ALNUM_SENDER_RE = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")


# --------------------------------------------------------------------------------------------
# small helpers

def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_str(v):
    return isinstance(v, str) and v != ""


def valid_date(s):
    if not isinstance(s, str) or not DATE_RE.match(s):
        return False
    try:
        dt.date.fromisoformat(s)
        return True
    except ValueError:
        return False


def valid_datetime(s):
    if not isinstance(s, str):
        return False
    try:
        dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


def money(x):
    return round(float(x) + 0.0, 2)


def now_ms():
    return int(time.time() * 1000)


def iso_utc(t=None):
    t = time.time() if t is None else t
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def xero_date(t=None):
    t = time.time() if t is None else t
    return f"/Date({int(t * 1000)}+0000)/"


def qbo_time(t=None):
    t = time.time() if t is None else t
    return dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")


def rfc2822(t=None):
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(t))


def http_date():
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())


def today():
    return dt.date.today().isoformat()


def flat(qs):
    """parse_qs output -> {name: value} with a list only for repeated names."""
    return {k: (v[0] if len(v) == 1 else v) for k, v in qs.items()}


def media_type(value):
    return (value or "").split(";", 1)[0].strip().lower()


def new_token(provider, kind):
    return f"{provider}-{kind}-{secrets.token_urlsafe(24)}"


def xero_jwt(grant):
    """A Xero-shaped access token: a JWT (RS256, about 1 KB) whose claims name the consent
    (authentication_event_id) and the user; the signature is random, nobody checks it here."""
    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()) \
            .rstrip(b"=").decode()
    now = int(time.time())
    claims = {"nbf": now, "exp": now + 1800, "iss": "https://identity.xero.com",
              "aud": "https://identity.xero.com/resources", "client_id": grant.client_id,
              "sub": hashlib.sha256(grant.user.encode()).hexdigest()[:32],
              "auth_time": now, "xero_userid": grant.user, "global_session_id": uuid.uuid4().hex,
              "sid": uuid.uuid4().hex, "jti": uuid.uuid4().hex,
              "authentication_event_id": grant.event,
              "scope": (grant.scope or "offline_access").split()}
    sig = base64.urlsafe_b64encode(secrets.token_bytes(256)).rstrip(b"=").decode()
    return b64({"alg": "RS256", "kid": "1CAF8A24ECF9", "typ": "JWT", "x5t": "HK-KJOz5"}) + "." + \
        b64(claims) + "." + sig


def ulid_like():
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "01" + "".join(secrets.choice(alphabet) for _ in range(24))


def b64url_sha256(s):
    return base64.urlsafe_b64encode(hashlib.sha256(s.encode()).digest()).rstrip(b"=").decode()


# --------------------------------------------------------------------------------------------
# replies

class Reply:
    __slots__ = ("status", "data", "ctype", "headers")

    def __init__(self, status, body=None, ctype=JSON_CT, headers=None):
        self.status = status
        if body is None:
            self.data = b""
            ctype = None
        elif isinstance(body, (bytes, bytearray)):
            self.data = bytes(body)
        elif isinstance(body, str):
            self.data = body.encode()
        else:
            self.data = json.dumps(body, separators=(",", ":")).encode()
        self.ctype = ctype
        self.headers = list(headers or ())


class Fail(Exception):
    """Raised by handlers to answer with `reply` (an error in the platform's style)."""

    def __init__(self, reply):
        super().__init__(reply.status)
        self.reply = reply


def fail(reply):
    raise Fail(reply)


# Platform-styled error bodies. Every one also carries "fake_reason": what the fake disliked.

def xero_err(status, detail, reason, title=None, headers=None):
    titles = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
              406: "Not Acceptable", 415: "Unsupported Media Type", 429: "Too Many Requests",
              500: "Internal Server Error", 503: "Service Unavailable"}
    body = {"Type": None, "Title": title or titles.get(status, "Error"), "Status": status,
            "Detail": detail, "Instance": str(uuid.uuid4()), "Extensions": {},
            "fake_reason": reason}
    return Reply(status, body, headers=headers)


def xero_validation(elements, messages, reason=None):
    """Xero's 400 ValidationException: one element per submitted item, each with its errors."""
    els = []
    for el, msgs in zip(elements, messages):
        e = dict(el) if isinstance(el, dict) else {}
        e["ValidationErrors"] = [{"Message": m} for m in msgs]
        els.append(e)
    flat_msgs = [m for msgs in messages for m in msgs]
    return Reply(400, {"ErrorNumber": 10, "Type": "ValidationException",
                       "Message": "A validation exception occurred", "Elements": els,
                       "fake_reason": reason or "; ".join(flat_msgs)})


def xero_postdata(reason):
    return Reply(400, {"ErrorNumber": 14, "Type": "PostDataInvalidException",
                       "Message": reason, "fake_reason": reason})


def qbo_fault(status, code, message, detail, element=None, ftype="ValidationFault"):
    err = {"Message": message, "Detail": detail, "code": str(code)}
    if element:
        err["element"] = element
    return Reply(status, {"Fault": {"Error": [err], "type": ftype}, "time": qbo_time(),
                          "fake_reason": detail})


def qbo_auth_fault(detail):
    return Reply(401, {"fault": {"error": [{
        "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
        "detail": detail, "code": "3200"}], "type": "AUTHENTICATION"},
        "time": qbo_time(), "fake_reason": detail},
        headers=[("WWW-Authenticate", 'Bearer realm="Intuit", error="invalid_token"')])


def hubspot_err(status, category, message, reason=None, errors=None, extra=None):
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()),
            "category": category, "fake_reason": reason or message}
    if errors:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return Reply(status, body)


def klaviyo_err(status, code, title, detail, pointer="/data/", headers=None):
    return Reply(status, {"errors": [{"id": str(uuid.uuid4()), "status": status, "code": code,
                                      "title": title, "detail": detail,
                                      "source": {"pointer": pointer}, "links": {}, "meta": {}}],
                          "fake_reason": detail}, ctype=JSONAPI_CT, headers=headers)


def klaviyo_invalid(detail, pointer="/data/"):
    return klaviyo_err(400, "invalid", "Invalid input.", detail, pointer)


def twilio_err(status, code, message, reason=None, headers=None):
    return Reply(status, {"code": code, "message": message,
                          "more_info": f"https://www.twilio.com/docs/errors/{code}",
                          "status": status, "fake_reason": reason or message}, headers=headers)


def meta_err(status, code, message, etype="OAuthException", subcode=None, reason=None,
             headers=None):
    e = {"message": message, "type": etype, "code": code,
         "fbtrace_id": secrets.token_urlsafe(12)}
    if subcode is not None:
        e["error_subcode"] = subcode
    return Reply(status, {"error": e, "fake_reason": reason or message}, headers=headers)


def oauth_err(status, error, description, headers=None):
    return Reply(status, {"error": error, "error_description": description,
                          "fake_reason": description}, headers=headers)


def generic_err(provider, status, message, reason=None):
    """An error in `provider`'s usual shape (used for 404/405 and injected faults)."""
    reason = reason or message
    if provider == "xero":
        if status == 400:
            return xero_postdata(message)
        return xero_err(status, message, reason)
    if provider == "quickbooks":
        if status == 401:
            return qbo_auth_fault(message)
        ftype = "ValidationFault" if status < 500 else "SystemFault"
        return qbo_fault(status, {404: 610, 429: 3001}.get(status, 10000 if status >= 500 else 2010),
                         "fake error" if status != 429 else "ThrottleExceeded", message,
                         ftype=ftype)
    if provider == "hubspot":
        cat = {401: "INVALID_AUTHENTICATION", 404: "OBJECT_NOT_FOUND", 409: "CONFLICT",
               429: "RATE_LIMITS"}.get(status, "VALIDATION_ERROR" if status < 500 else "INTERNAL_ERROR")
        extra = {"policyName": "TEN_SECONDLY_ROLLING"} if status == 429 else None
        return hubspot_err(status, cat, message, reason, extra=extra)
    if provider == "klaviyo":
        code = {401: "not_authenticated", 404: "not_found", 405: "method_not_allowed",
                429: "throttled"}.get(status, "invalid" if status < 500 else "error")
        return klaviyo_err(status, code, message, reason)
    if provider == "twilio":
        code = {401: 20003, 404: 20404, 405: 20004, 429: 20429}.get(status, 20500 if status >= 500 else 21600)
        return twilio_err(status, code, message, reason)
    if provider == "meta":
        code = {429: 4, 404: 803}.get(status, 2 if status >= 500 else 100)
        etype = "OAuthException" if status in (401, 429) else "GraphMethodException"
        return meta_err(status, code, message, etype=etype, reason=reason)
    return Reply(status, {"error": message, "fake_reason": reason})


# --------------------------------------------------------------------------------------------
# requests

class Request:
    __slots__ = ("method", "raw_path", "path", "query_string", "qs", "headers", "body", "provider",
                 "sub", "client", "_json", "_json_done", "_form", "endpoint", "t", "replayed")

    def __init__(self, method, raw_path, header_items, body, client):
        self.t = time.time()
        self.method = method
        self.raw_path = raw_path
        split = urllib.parse.urlsplit(raw_path)
        self.path = urllib.parse.unquote(split.path)
        self.query_string = split.query
        self.qs = urllib.parse.parse_qs(split.query, keep_blank_values=True) if split.query else {}
        h = {}
        for k, v in header_items:
            k = k.lower()
            h[k] = f"{h[k]}, {v}" if k in h else v
        self.headers = h
        self.body = body
        self.client = client
        parts = self.path.split("/", 2)      # "/xero/api.xro/2.0/Invoices" -> "", "xero", ...
        self.provider = parts[1] if len(parts) > 1 else ""
        self.sub = "/" + parts[2] if len(parts) > 2 else ""
        self._json_done = False
        self._json = None
        self._form = None
        self.endpoint = None
        self.replayed = False

    def q(self, name, default=None):
        v = self.qs.get(name)
        return v[0] if v else default

    @property
    def ctype(self):
        return media_type(self.headers.get("content-type"))

    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        """The parsed JSON body; raises ValueError when it is not JSON."""
        if not self._json_done:
            self._json_done = True
            try:
                self._json = ("ok", json.loads(self.body.decode("utf-8")))
            except (ValueError, UnicodeDecodeError) as e:
                self._json = ("err", str(e))
        if self._json[0] == "err":
            raise ValueError(self._json[1])
        return self._json[1]

    def json_or_none(self):
        try:
            return self.json()
        except ValueError:
            return None

    def form(self):
        """The form body as {name: [values]} (application/x-www-form-urlencoded)."""
        if self._form is None:
            try:
                self._form = urllib.parse.parse_qs(self.body.decode("utf-8"),
                                                   keep_blank_values=True)
            except UnicodeDecodeError:
                self._form = {}
        return self._form

    def f(self, name, default=None):
        v = self.form().get(name)
        return v[0] if v else default

    def bearer(self):
        a = self.headers.get("authorization")
        if not a:
            return None
        m = re.match(r"^[Bb]earer +(\S+)\s*$", a)
        return m.group(1) if m else ""

    def basic(self):
        """(user, password) from HTTP Basic auth; None when absent; ("", "") when malformed."""
        a = self.headers.get("authorization")
        if not a:
            return None
        m = re.match(r"^[Bb]asic +([A-Za-z0-9+/=]+)\s*$", a)
        if not m:
            return ("", "")
        try:
            raw = base64.b64decode(m.group(1), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ("", "")
        if ":" not in raw:
            return ("", "")
        user, _, pw = raw.partition(":")
        return (user, pw)


# --------------------------------------------------------------------------------------------
# credentials

class Grant:
    """One authorization (an app connected to an organisation/account)."""
    __slots__ = ("provider", "client_id", "tenants", "scope", "kind", "ttl", "rotate", "grace",
                 "name", "user", "event")

    def __init__(self, provider, client_id, tenants, scope, kind, ttl, rotate, grace, name=None,
                 user=None):
        self.provider = provider
        self.user = user or str(uuid.uuid4())   # who consented (Xero lists a user's connections)
        self.event = str(uuid.uuid4())          # the consent (Xero's authEventId)
        self.client_id = client_id
        self.tenants = list(tenants)
        self.scope = scope
        self.kind = kind
        self.ttl = ttl
        self.rotate = rotate
        self.grace = grace
        self.name = name


class Access:
    __slots__ = ("token", "grant", "expires_at", "revoked")

    def __init__(self, token, grant, expires_at):
        self.token = token
        self.grant = grant
        self.expires_at = expires_at
        self.revoked = False


class Refresh:
    __slots__ = ("token", "grant", "used_at", "revoked", "expires_at")

    def __init__(self, token, grant, expires_at=None):
        self.token = token
        self.grant = grant
        self.used_at = None
        self.revoked = False
        self.expires_at = expires_at


class Fault:
    __slots__ = ("provider", "path", "method", "status", "count", "retry_after", "delay_ms",
                 "body", "headers", "drop", "after", "content_type", "applied")

    def __init__(self, spec):
        p = spec.get("provider")
        if p is not None and p not in PROVIDERS:
            raise ValueError(f"unknown provider {p!r}")
        self.provider = p
        self.path = re.compile(spec["path"]) if spec.get("path") else None
        self.method = spec["method"].upper() if spec.get("method") else None
        self.status = spec.get("status")
        if self.status is not None and not (isinstance(self.status, int) and 100 <= self.status <= 599):
            raise ValueError("status must be an HTTP status code")
        self.count = int(spec.get("count", 1))
        if self.count == 0 or self.count < -1:
            raise ValueError("count must be >= 1 (or -1 for every matching request)")
        ra = spec.get("retry_after")
        self.retry_after = None if ra is None else str(ra)
        self.delay_ms = float(spec.get("delay_ms") or 0)
        self.body = spec.get("body")
        self.headers = dict(spec.get("headers") or {})
        self.drop = bool(spec.get("drop"))
        self.after = bool(spec.get("after"))
        self.content_type = spec.get("content_type")
        self.applied = 0
        if self.status is None and not self.drop and not self.delay_ms:
            raise ValueError("a fault needs status, drop or delay_ms")

    def matches(self, req):
        if self.provider is not None and self.provider != req.provider:
            return False
        if self.method is not None and self.method != req.method:
            return False
        if self.path is not None and not self.path.search(req.path):
            return False
        return True

    def reply(self, provider):
        if self.body is None:
            r = generic_err(provider, self.status, f"injected fault: HTTP {self.status}")
        elif isinstance(self.body, (dict, list)):
            r = Reply(self.status, self.body, ctype=self.content_type or JSON_CT)
        else:
            r = Reply(self.status, str(self.body), ctype=self.content_type or "text/plain")
        if self.retry_after is not None:
            r.headers.append(("Retry-After", self.retry_after))
        elif provider == "xero" and self.status == 429:
            r.headers.append(("Retry-After", "1"))  # Xero's 429 always says when (seconds)
        if provider == "xero" and self.status == 429 and not any(
                k.lower() == "x-rate-limit-problem" for k in self.headers):
            r.headers.append(("X-Rate-Limit-Problem", "minute"))
        for k, v in self.headers.items():
            r.headers.append((k, str(v)))
        return r

    def describe(self):
        return {"provider": self.provider, "path": self.path.pattern if self.path else None,
                "method": self.method, "status": self.status, "count": self.count,
                "retry_after": self.retry_after, "delay_ms": self.delay_ms, "drop": self.drop,
                "after": self.after, "applied": self.applied}


# --------------------------------------------------------------------------------------------
# the fake

class Fake:
    def __init__(self, max_requests=100000):
        self.lock = threading.Lock()
        self.max_requests = max_requests
        self.routes = self._routes()
        self.reset()

    # ---- state -------------------------------------------------------------------------

    def reset(self):
        self.clock_offset = 0.0
        self.seq = 0
        self.records = collections.deque(maxlen=self.max_requests)
        self.faults = []
        self.clients = {p: {} for p in PROVIDERS}          # client_id -> secret (None = public)
        self.grants = {p: [] for p in PROVIDERS}           # every consent, oldest first
        self.redirects = {p: {} for p in PROVIDERS}        # client_id -> set of redirect URIs
        self.access = {p: {} for p in PROVIDERS}           # token -> Access
        self.refresh = {p: {} for p in PROVIDERS}          # token -> Refresh
        self.codes = {p: {} for p in PROVIDERS}            # code -> dict
        self.klaviyo_keys = set()
        self.hubspot_properties = set()  # a portal's own contact properties
        self.twilio_accounts = {}                          # AccountSid -> dict
        self.twilio_keys = {}                              # SK... -> (secret, AccountSid)
        self.meta_recipients = {}                          # page_id -> set of PSIDs (optional)
        self.idem = {}                                     # (provider, scope..., key) -> entry
        self.objects = {p: collections.defaultdict(list) for p in PROVIDERS}
        self.counters = collections.defaultdict(int)
        self.stats_endpoints = {p: {} for p in PROVIDERS + ("unmatched",)}
        self.stats_idem = {"xero": self._idem_stats(), "quickbooks": self._idem_stats()}
        self.klaviyo_unique = set()
        self.stats_klaviyo = {"unique_ids": 0, "duplicate_unique_ids": 0}
        self.stats_tokens = {p: collections.Counter() for p in PROVIDERS}
        self.total = 0
        self.faults_applied = 0
        # per-tenant state
        self.xero_contacts = collections.defaultdict(dict)     # tenant -> ContactID -> contact
        self.xero_invoices = collections.defaultdict(dict)     # tenant -> InvoiceID -> invoice
        self.xero_numbers = collections.defaultdict(int)
        self.qbo_ids = collections.defaultdict(int)
        self.qbo_docs = collections.defaultdict(int)
        self.hubspot_contacts = {}                             # email (lower) -> contact
        self.hubspot_next = 1246965
        self.klaviyo_profiles = {}                             # key -> profile

    @staticmethod
    def _idem_stats():
        return {"keys": 0, "replays": 0, "key_reused_with_different_body": 0,
                "requests_without_key": 0}

    def now(self):
        return time.time() + self.clock_offset

    # ---- credentials -------------------------------------------------------------------

    def register(self, spec):
        p = spec.get("provider")
        if p not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}")
        out = {"provider": p}
        if p == "twilio":
            sid = spec.get("account_sid")
            tok = spec.get("auth_token")
            if not is_str(sid) or not is_str(tok):
                raise ValueError("twilio needs account_sid and auth_token")
            self.twilio_accounts[sid] = {
                "auth_token": tok,
                "numbers": set(spec.get("numbers") or ()),
                "services": set(spec.get("messaging_services") or ()),
            }
            for ksid, ksecret in (spec.get("api_keys") or {}).items():
                self.twilio_keys[ksid] = (ksecret, sid)
            out["account_sid"] = sid
            return out
        if p == "hubspot" and spec.get("properties"):
            self.hubspot_properties.update(spec["properties"])
        if p == "klaviyo" and spec.get("api_key"):
            self.klaviyo_keys.add(spec["api_key"])
            out["api_key"] = spec["api_key"]
        cid = spec.get("client_id")
        if cid is not None:
            self.clients[p][cid] = spec.get("client_secret")
            if spec.get("redirect_uri"):
                self.redirects[p].setdefault(cid, set()).add(spec["redirect_uri"])
        tenants = (spec.get("tenants") or spec.get("realms") or spec.get("pages")
                   or ([spec["realm_id"]] if spec.get("realm_id") else [])
                   or ([spec["page_id"]] if spec.get("page_id") else []))
        if isinstance(tenants, str):
            tenants = [tenants]
        kind = "page" if (p == "meta" and spec.get("page_id")) else "user"
        ttl = spec.get("issued_expires_in", ISSUED_TTL.get(p))
        grant = Grant(p, cid, tenants, spec.get("scope", ""), kind, ttl,
                      bool(spec.get("rotate_refresh", ROTATES.get(p, False))),
                      float(spec.get("refresh_grace_s", 0)), spec.get("name"), spec.get("user"))
        self.grants[p].append(grant)
        if p == "meta" and spec.get("recipients") is not None:
            for page in tenants:
                self.meta_recipients.setdefault(page, set()).update(spec["recipients"])
        if spec.get("code"):
            verifier = spec.get("code_verifier")
            challenge = spec.get("code_challenge")
            method = spec.get("code_challenge_method", "S256")
            if verifier and not challenge:
                challenge, method = b64url_sha256(verifier), "S256"
            self.codes[p][spec["code"]] = {
                "grant": grant, "redirect_uri": spec.get("redirect_uri"),
                "challenge": challenge, "method": method,
                "access_token": spec.get("access_token"), "refresh_token": spec.get("refresh_token"),
                "pkce_required": p == "klaviyo"}
            out["code"] = spec["code"]
            return out
        if spec.get("access_token"):
            # default lifetime: the platform's; Meta Page tokens never expire
            exp = spec.get("expires_in", None if kind == "page" else ISSUED_TTL.get(p))
            self.access[p][spec["access_token"]] = Access(
                spec["access_token"], grant, None if exp is None else self.now() + float(exp))
            out["access_token"] = spec["access_token"]
            out["expires_in"] = exp
        if spec.get("refresh_token"):
            life = REFRESH_TTL.get(p)
            self.refresh[p][spec["refresh_token"]] = Refresh(
                spec["refresh_token"], grant, None if life is None else self.now() + life)
            out["refresh_token"] = spec["refresh_token"]
        out["tenants"] = tenants
        return out

    def expire(self, spec):
        p = spec.get("provider")
        if p not in PROVIDERS:
            raise ValueError("unknown provider")
        n = 0
        at = spec.get("access_token")
        rt = spec.get("refresh_token")
        for tok, a in self.access[p].items():
            if (at is None and rt is None) or tok == at:
                a.expires_at = self.now() - 1
                n += 1
        if rt is not None and rt in self.refresh[p]:
            self.refresh[p][rt].revoked = True
            n += 1
        return {"expired": n}

    def check_access(self, provider, token):
        """(Access, None) or (None, "missing"|"unknown"|"expired"|"revoked")."""
        if token is None:
            return None, "missing"
        a = self.access[provider].get(token)
        if a is None:
            return None, "unknown"
        if a.revoked:
            return None, "revoked"
        if a.expires_at is not None and self.now() >= a.expires_at:
            return a, "expired"
        return a, None

    def issue(self, grant, with_refresh=True, access_token=None, refresh_token=None):
        p = grant.provider
        at = access_token or (xero_jwt(grant) if p == "xero" else new_token(p, "at"))
        ttl = grant.ttl
        self.access[p][at] = Access(at, grant, None if ttl is None else self.now() + float(ttl))
        rt = None
        if with_refresh:
            rt = refresh_token or new_token(p, "rt")
            life = REFRESH_TTL.get(p)
            self.refresh[p][rt] = Refresh(rt, grant, None if life is None else self.now() + life)
        self.stats_tokens[p]["access_tokens_issued"] += 1
        return at, rt, ttl

    # ---- dispatch ----------------------------------------------------------------------

    def _routes(self):
        R = []

        def add(provider, methods, pattern, handler, name):
            # name: the path template used in stats (the endpoint key is "<METHOD> <name>")
            R.append((provider, frozenset(methods), re.compile("^(?:" + pattern + ")$"), handler,
                      name))

        add("xero", ("PUT", "POST"), r"/api\.xro/2\.0/Invoices/?", self.xero_invoices_h,
            "/xero/api.xro/2.0/Invoices")
        add("xero", ("PUT", "POST"), r"/api\.xro/2\.0/Contacts/?", self.xero_contacts_h,
            "/xero/api.xro/2.0/Contacts")
        add("xero", ("PUT", "POST"), r"/api\.xro/2\.0/Payments/?", self.xero_payments_h,
            "/xero/api.xro/2.0/Payments")
        add("xero", ("GET",), r"/connections/?", self.xero_connections_h, "/xero/connections")
        add("xero", ("POST",), r"/token|/connect/token", self.token_h, "/xero/token")
        add("quickbooks", ("POST",), r"/v3/company/(?P<realm>[^/]+)/(?P<kind>salesreceipt|invoice)",
            self.qbo_create_h, "/quickbooks/v3/company/{realmId}/{entity}")
        add("quickbooks", ("POST",), r"/token|/oauth2/v1/tokens/bearer", self.token_h,
            "/quickbooks/token")
        add("hubspot", ("POST",), r"/crm/v3/objects/contacts/?", self.hubspot_create_h,
            "/hubspot/crm/v3/objects/contacts")
        add("hubspot", ("POST",), r"/crm/v3/objects/contacts/batch/upsert/?", self.hubspot_upsert_h,
            "/hubspot/crm/v3/objects/contacts/batch/upsert")
        add("hubspot", ("POST",), r"/token|/oauth/v1/token|/oauth/2026-03/token", self.token_h,
            "/hubspot/token")
        add("hubspot", ("POST",), r"/oauth/2026-03/token/introspect", self.hubspot_introspect_h,
            "/hubspot/oauth/2026-03/token/introspect")
        add("klaviyo", ("POST",), r"/api/events/?", self.klaviyo_event_h, "/klaviyo/api/events")
        add("klaviyo", ("GET",), r"/api/accounts/?", self.klaviyo_accounts_h,
            "/klaviyo/api/accounts")
        add("klaviyo", ("POST",), r"/api/profile-import/?", self.klaviyo_profile_h,
            "/klaviyo/api/profile-import")
        add("klaviyo", ("POST",), r"/token|/oauth/token", self.token_h, "/klaviyo/token")
        add("twilio", ("POST",), r"/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json",
            self.twilio_send_h, "/twilio/2010-04-01/Accounts/{AccountSid}/Messages.json")
        add("meta", ("POST",), r"/(?P<ver>v\d+\.\d+)/(?P<page>[0-9A-Za-z_]+)/messages",
            self.meta_send_h, "/meta/{version}/{page_id}/messages")
        add("meta", ("GET", "POST"), r"/(?P<ver>v\d+\.\d+)/oauth/access_token", self.token_h,
            "/meta/{version}/oauth/access_token")
        add("meta", ("GET",), r"/(?P<ver>v\d+\.\d+)/me/accounts", self.meta_accounts_h,
            "/meta/{version}/me/accounts")
        return R

    def route(self, req):
        """(handler, match, name) or a Reply (404/405)."""
        if req.provider not in PROVIDERS:
            return Reply(404, {"error": "not_found",
                               "fake_reason": f"no fake platform at {req.path!r}; providers: "
                                              + ", ".join("/" + p for p in PROVIDERS)})
        allowed = set()
        for provider, methods, rx, handler, name in self.routes:
            if provider != req.provider:
                continue
            m = rx.match(req.sub)
            if not m:
                continue
            if req.method in methods:
                return handler, m, name
            allowed |= methods
        if allowed:
            r = generic_err(req.provider, 405, f"method {req.method} not allowed on {req.path}",
                            f"{req.method} {req.path}: the platform only takes "
                            + "/".join(sorted(allowed)))
            r.headers.append(("Allow", ", ".join(sorted(allowed))))
            return r
        return generic_err(req.provider, 404, f"no such endpoint: {req.method} {req.path}",
                           f"the fake {req.provider} has no endpoint {req.method} {req.path}")

    def take_fault(self, req):
        for f in self.faults:
            if f.matches(req):
                f.applied += 1
                if f.count > 0:
                    f.count -= 1
                    if f.count == 0:
                        self.faults.remove(f)
                self.faults_applied += 1
                return f
        return None

    def dispatch(self, req):
        r = self.route(req)
        if isinstance(r, Reply):
            return r
        handler, m, name = r
        req.endpoint = f"{req.method} {name}"
        try:
            return handler(req, m)
        except Fail as e:
            return e.reply

    def record(self, req, reply, fault=None, dropped=False, duration=0.0):
        self.seq += 1
        self.total += 1
        ep = req.endpoint or f"{req.method} (no such endpoint)"
        status = None if dropped else reply.status
        bucket = self.stats_endpoints.get(req.provider if req.provider in PROVIDERS else "unmatched")
        e = bucket.get(ep)
        if e is None:
            e = bucket[ep] = {"count": 0, "statuses": collections.Counter()}
        e["count"] += 1
        e["statuses"]["dropped" if dropped else str(status)] += 1
        ct = req.ctype
        form = flat(req.form()) if ct == "application/x-www-form-urlencoded" else None
        js = req.json_or_none() if ("json" in ct and req.body) else None
        self.records.append({
            "seq": self.seq, "time": req.t, "peer": req.client,
            "provider": req.provider, "method": req.method,
            "path": req.path, "query": flat(req.qs), "query_string": req.query_string,
            "headers": req.headers, "body": req.text(), "json": js, "form": form,
            "endpoint": req.endpoint, "status": status, "fault": fault is not None,
            "replayed": req.replayed,
            "dropped": dropped, "response": None if dropped else reply.data.decode("utf-8", "replace"),
            "duration_ms": round(duration * 1000, 3)})

    # ---- control API -------------------------------------------------------------------

    def control(self, req):
        sub = req.path[len("/_control"):].rstrip("/") or "/"
        m = req.method
        try:
            body = req.json() if (m in ("POST", "PUT") and req.body) else {}
        except ValueError as e:
            return Reply(400, {"error": "bad_json", "fake_reason": f"control body is not JSON: {e}"})
        try:
            if sub == "/health" and m == "GET":
                return Reply(200, {"ok": True})
            if sub == "/reset" and m == "POST":
                self.reset()
                return Reply(200, {"ok": True})
            if sub == "/tokens" and m == "POST":
                specs = body if isinstance(body, list) else [body]
                out = [self.register(s) for s in specs]
                return Reply(200, {"ok": True, "registered": out})
            if sub == "/expire" and m == "POST":
                return Reply(200, dict(ok=True, **self.expire(body)))
            if sub == "/clock" and m == "POST":
                self.clock_offset += float(body.get("advance", 0))
                return Reply(200, {"ok": True, "offset": self.clock_offset})
            if sub == "/faults" and m == "POST":
                specs = body if isinstance(body, list) else [body]
                fs = [Fault(s) for s in specs]
                self.faults.extend(fs)
                return Reply(200, {"ok": True, "faults": [f.describe() for f in self.faults]})
            if sub == "/faults" and m == "GET":
                return Reply(200, {"faults": [f.describe() for f in self.faults]})
            if sub == "/faults" and m == "DELETE":
                self.faults.clear()
                return Reply(200, {"ok": True})
            if sub == "/requests" and m == "GET":
                return Reply(200, self.list_requests(req))
            if sub == "/stats" and m == "GET":
                return Reply(200, self.stats())
            if sub == "/objects" and m == "GET":
                p = req.q("provider")
                provs = [p] if p else PROVIDERS
                return Reply(200, {x: dict(self.objects[x]) for x in provs if x in PROVIDERS})
        except (ValueError, KeyError, TypeError, re.error) as e:
            return Reply(400, {"error": "bad_control_request", "fake_reason": str(e)})
        return Reply(404, {"error": "not_found",
                           "fake_reason": f"no control endpoint {m} {req.path}"})

    def list_requests(self, req):
        p = req.q("provider")
        path_re = re.compile(req.q("path")) if req.q("path") else None
        method = (req.q("method") or "").upper() or None
        since = int(req.q("since", "0"))
        out = []
        for r in self.records:
            if r["seq"] <= since:
                continue
            if p and r["provider"] != p:
                continue
            if method and r["method"] != method:
                continue
            if path_re and not path_re.search(r["path"]):
                continue
            out.append(r)
        limit = req.q("limit")
        if limit:
            out = out[-int(limit):]
        return out

    def stats(self):
        created = {}
        for p in PROVIDERS:
            created[p] = {k: len(v) for k, v in self.objects[p].items()}
        eps = {}
        for p, b in self.stats_endpoints.items():
            if b:
                eps[p] = {"total": sum(e["count"] for e in b.values()),
                          "endpoints": {k: {"count": e["count"], "statuses": dict(e["statuses"])}
                                        for k, e in b.items()}}
        return {"total_requests": self.total, "faults_applied": self.faults_applied,
                "requests": eps, "created": created,
                "idempotency": {"xero": dict(self.stats_idem["xero"]),
                                "quickbooks": dict(self.stats_idem["quickbooks"]),
                                "klaviyo": dict(self.stats_klaviyo)},
                "tokens": {p: dict(c) for p, c in self.stats_tokens.items() if c}}

    # ---- idempotency -------------------------------------------------------------------

    def idem_lookup(self, provider, scope, key, req):
        """A stored Reply for this key (replayed), or None."""
        st = self.stats_idem[provider]
        if key is None:
            st["requests_without_key"] += 1
            return None
        e = self.idem.get((provider,) + scope + (key,))
        if e is None:
            return None
        st["replays"] += 1
        req.replayed = True
        if e["body_hash"] != hashlib.sha256(req.body).hexdigest():
            st["key_reused_with_different_body"] += 1
        r = Reply(e["status"], e["data"], ctype=e["ctype"], headers=list(e["headers"]))
        return r

    def idem_store(self, provider, scope, key, req, reply):
        if key is None or not (200 <= reply.status < 300):
            return
        self.idem[(provider,) + scope + (key,)] = {
            "status": reply.status, "data": reply.data, "ctype": reply.ctype,
            "headers": list(reply.headers), "body_hash": hashlib.sha256(req.body).hexdigest()}
        self.stats_idem[provider]["keys"] += 1

    # ---- OAuth token endpoints -----------------------------------------------------------

    def token_h(self, req, m):
        p = req.provider
        st = self.stats_tokens[p]
        if p == "meta":
            return self.meta_token(req)
        if req.ctype != "application/x-www-form-urlencoded":
            r = self._tok_err(p, 400, "invalid_request",
                              "the token endpoint takes a form body (Content-Type: "
                              f"application/x-www-form-urlencoded), got {req.ctype or 'none'!r}")
            st["token_requests_rejected"] += 1
            return r
        params = req.form()
        for k, v in params.items():
            if len(v) > 1:
                return self._tok_err(p, 400, "invalid_request", f"parameter {k} repeated")
        prm = {k: v[0] for k, v in params.items()}
        if req.q("grant_type") or req.q("refresh_token") or req.q("client_secret"):
            return self._tok_err(p, 400, "invalid_request",
                                 "token parameters belong in the form body, not the URL query")
        cid, err = self._client_auth(req, p, prm)
        if err:
            st["token_requests_rejected"] += 1
            return err
        gt = prm.get("grant_type")
        if gt == "refresh_token":
            return self._refresh_grant(req, p, cid, prm)
        if gt == "authorization_code":
            return self._code_grant(req, p, cid, prm)
        st["token_requests_rejected"] += 1
        if not gt:
            return self._tok_err(p, 400, "invalid_request", "grant_type is missing")
        return self._tok_err(p, 400, "unsupported_grant_type", f"grant_type {gt!r} not supported")

    def _tok_err(self, p, status, error, desc):
        if p == "hubspot":
            hs = {"invalid_grant": "BAD_REFRESH_TOKEN", "invalid_client": "BAD_CLIENT_ID",
                  "invalid_request": "BAD_REQUEST", "unsupported_grant_type": "BAD_GRANT_TYPE",
                  "bad_code": "BAD_AUTH_CODE", "bad_redirect": "BAD_REDIRECT_URI",
                  "bad_secret": "BAD_CLIENT_SECRET"}.get(error, "BAD_REQUEST")
            return Reply(400, {"status": hs, "message": desc, "correlationId": str(uuid.uuid4()),
                               "fake_reason": desc})
        if error in ("bad_code", "bad_redirect"):
            error = "invalid_grant"
        if error == "bad_secret":
            error = "invalid_client"
        headers = None
        if status == 401:
            headers = [("WWW-Authenticate", 'Basic realm="token"')]
        return oauth_err(status, error, desc, headers=headers)

    def _client_auth(self, req, p, prm):
        """(client_id, None) or (None, error Reply). Xero/QuickBooks/Klaviyo: HTTP Basic
        client_id:client_secret (a public client, registered without a secret, may send only
        client_id in the body instead). HubSpot: client_id and client_secret in the body."""
        clients = self.clients[p]
        if p == "hubspot":   # any Authorization header is ignored: the body is what counts
            cid, secret = prm.get("client_id"), prm.get("client_secret")
            if not cid:
                return None, self._tok_err(p, 400, "invalid_client", "client_id missing from the body")
            if cid not in clients:
                return None, self._tok_err(p, 400, "invalid_client", f"unknown client_id {cid!r}")
            if not secret:
                return None, self._tok_err(p, 400, "bad_secret",
                                           "client_secret missing from the body")
            if clients[cid] != secret:
                return None, self._tok_err(p, 400, "bad_secret", "client_secret does not match")
            return cid, None
        basic = req.basic()
        if basic is None:
            cid = prm.get("client_id")
            if cid and cid in clients and clients[cid] is None:
                return cid, None   # public (PKCE) client
            if "client_secret" in prm:
                return None, self._tok_err(p, 401, "invalid_client",
                                           "client credentials must be sent with HTTP Basic auth "
                                           "(Authorization: Basic base64(client_id:client_secret)),"
                                           " not in the body")
            return None, self._tok_err(p, 401, "invalid_client",
                                       "missing HTTP Basic client authentication")
        cid, secret = basic
        if not cid:
            return None, self._tok_err(p, 401, "invalid_client", "malformed Basic authorization")
        if cid not in clients:
            return None, self._tok_err(p, 401, "invalid_client", f"unknown client_id {cid!r}")
        if clients[cid] != secret:
            return None, self._tok_err(p, 401, "invalid_client", "client_secret does not match")
        if prm.get("client_id") and prm["client_id"] != cid:
            return None, self._tok_err(p, 401, "invalid_client",
                                       "client_id in the body differs from the Basic user")
        return cid, None

    def _token_reply(self, p, at, rt, ttl, grant):
        if p == "xero":
            body = {"access_token": at, "expires_in": ttl, "token_type": "Bearer",
                    "refresh_token": rt, "scope": grant.scope or "offline_access"}
        elif p == "quickbooks":
            body = {"token_type": "bearer", "expires_in": ttl, "refresh_token": rt,
                    "x_refresh_token_expires_in": REFRESH_TTL["quickbooks"], "access_token": at}
        elif p == "hubspot":
            # Since August 2025 HubSpot names the portal and the granted scopes too.
            body = {"token_type": "bearer", "refresh_token": rt, "access_token": at,
                    "expires_in": ttl,
                    "scopes": list(dict.fromkeys(["oauth"] + (grant.scope or "").split()))}
            if grant.tenants:
                hub = grant.tenants[0]
                body["hub_id"] = int(hub) if str(hub).isdigit() else hub
        elif p == "klaviyo":
            body = {"access_token": at, "token_type": "Bearer", "expires_in": ttl,
                    "refresh_token": rt, "scope": grant.scope}
        else:
            body = {"access_token": at, "token_type": "bearer", "expires_in": ttl}
        return Reply(200, body, headers=[("Cache-Control", "no-store"), ("Pragma", "no-cache")])

    def _refresh_grant(self, req, p, cid, prm):
        st = self.stats_tokens[p]
        tok = prm.get("refresh_token")
        if not tok:
            st["refresh_rejected"] += 1
            return self._tok_err(p, 400, "invalid_request", "refresh_token is missing")
        r = self.refresh[p].get(tok)
        if r is None or r.revoked:
            st["refresh_rejected"] += 1
            return self._tok_err(p, 400, "invalid_grant", "unknown or revoked refresh token")
        if r.grant.client_id is not None and r.grant.client_id != cid:
            st["refresh_rejected"] += 1
            return self._tok_err(p, 400, "invalid_grant",
                                 "refresh token was issued to another client")
        if r.expires_at is not None and self.now() >= r.expires_at:
            st["refresh_rejected"] += 1
            return self._tok_err(p, 400, "invalid_grant",
                                 f"refresh token expired (unused for {REFRESH_TTL[p] // 86400} "
                                 "days): the user must connect again")
        if r.used_at is not None and self.now() - r.used_at > r.grant.grace:
            st["refresh_rejected"] += 1
            st["refresh_reused"] += 1
            return self._tok_err(p, 400, "invalid_grant",
                                 "refresh token already used (it rotates: store the refresh_token "
                                 "from every token response)")
        if r.grant.rotate:
            if r.used_at is None:
                r.used_at = self.now()
            at, rt, ttl = self.issue(r.grant)
        else:
            at, _, ttl = self.issue(r.grant, with_refresh=False)
            rt = tok
            if r.expires_at is not None:
                r.expires_at = self.now() + REFRESH_TTL[p]
        st["refreshed"] += 1
        return self._token_reply(p, at, rt, ttl, r.grant)

    def _code_grant(self, req, p, cid, prm):
        st = self.stats_tokens[p]
        code = prm.get("code")
        if not code:
            return self._tok_err(p, 400, "invalid_request", "code is missing")
        c = self.codes[p].get(code)
        if c is None:
            st["code_rejected"] += 1
            return self._tok_err(p, 400, "bad_code", "unknown or already used authorization code")
        if c["grant"].client_id is not None and c["grant"].client_id != cid:
            st["code_rejected"] += 1
            return self._tok_err(p, 400, "bad_code", "code was issued to another client")
        if not prm.get("redirect_uri"):
            st["code_rejected"] += 1
            return self._tok_err(p, 400, "bad_redirect", "redirect_uri is missing")
        if c["redirect_uri"] and prm["redirect_uri"] != c["redirect_uri"]:
            st["code_rejected"] += 1
            return self._tok_err(p, 400, "bad_redirect",
                                 "redirect_uri does not match the one used to authorize")
        verifier = prm.get("code_verifier")
        if c["challenge"]:
            if not verifier:
                return self._tok_err(p, 400, "invalid_grant", "code_verifier is missing (PKCE)")
            calc = b64url_sha256(verifier) if c["method"] == "S256" else verifier
            if calc != c["challenge"]:
                st["code_rejected"] += 1
                return self._tok_err(p, 400, "invalid_grant", "code_verifier does not match")
        elif c["pkce_required"] and not verifier:
            return self._tok_err(p, 400, "invalid_grant", "code_verifier is required (PKCE)")
        del self.codes[p][code]
        at, rt, ttl = self.issue(c["grant"], access_token=c["access_token"],
                                 refresh_token=c["refresh_token"])
        st["code_exchanged"] += 1
        return self._token_reply(p, at, rt, ttl, c["grant"])

    def hubspot_introspect_h(self, req, m):
        """POST /oauth/2026-03/token/introspect (replaces v1's GET /oauth/v1/access-tokens/{token},
        retired 16 Feb 2027): client_id, client_secret and token in a form body; the answer is
        the token's metadata with "active", or just {"active": false}."""
        p = "hubspot"
        st = self.stats_tokens[p]
        if req.ctype != "application/x-www-form-urlencoded":
            st["introspect_rejected"] += 1
            return self._tok_err(p, 400, "invalid_request",
                                 "introspection takes a form body, got "
                                 f"{req.ctype or 'no Content-Type'!r}")
        if req.q("token") or req.q("client_secret"):
            st["introspect_rejected"] += 1
            return self._tok_err(p, 400, "invalid_request",
                                 "introspection parameters belong in the form body, not the URL")
        params = req.form()
        prm = {k: v[0] for k, v in params.items()}
        cid, err = self._client_auth(req, p, prm)
        if err:
            st["introspect_rejected"] += 1
            return err
        tok = prm.get("token")
        if not tok:
            st["introspect_rejected"] += 1
            return hubspot_err(400, "VALIDATION_ERROR", "token is missing")
        st["introspected"] += 1
        a, why = self.check_access(p, tok)
        if a is None or why is not None or (a.grant.client_id is not None
                                            and a.grant.client_id != cid):
            return Reply(200, {"active": False})
        body = {"active": True, "token_use": "access_token", "token": tok, "client_id": cid,
                "app_id": 3001234, "user_id": 5501, "user": "installer@example.test",
                "scopes": a.grant.scope.split(), "token_type": "access",
                "expires_in": None if a.expires_at is None else int(a.expires_at - self.now())}
        if a.grant.tenants:
            body["hub_id"] = int(a.grant.tenants[0]) if a.grant.tenants[0].isdigit() \
                else a.grant.tenants[0]
            body["hub_domain"] = f"portal-{a.grant.tenants[0]}.example.test"
        return Reply(200, body)

    def meta_token(self, req):
        st = self.stats_tokens["meta"]
        if req.method == "POST" and req.body:
            if req.ctype != "application/x-www-form-urlencoded":
                return meta_err(400, 100, "Unsupported content type",
                                reason="POST /oauth/access_token takes a form body or query "
                                       "parameters")
            prm = {k: v[0] for k, v in req.form().items()}
            prm.update({k: v[0] for k, v in req.qs.items()})
        else:
            prm = {k: v[0] for k, v in req.qs.items()}
        cid, secret = prm.get("client_id"), prm.get("client_secret")
        if not cid:
            return meta_err(400, 101, "Error validating application. Missing client_id parameter.",
                            reason="client_id (the app id) is missing")
        if cid not in self.clients["meta"]:
            return meta_err(400, 101, "Error validating application. Invalid application ID.",
                            reason=f"unknown client_id {cid!r}")
        if self.clients["meta"][cid] != secret:
            return meta_err(400, 1, "Error validating client secret.",
                            reason="client_secret missing or wrong")
        gt = prm.get("grant_type")
        if gt == "fb_exchange_token":
            tok = prm.get("fb_exchange_token")
            a, why = self.check_access("meta", tok)
            if why or a is None:
                st["exchange_rejected"] += 1
                return meta_err(400, 190, "Invalid OAuth access token - Cannot parse access token",
                                reason=f"fb_exchange_token is {why or 'unknown'}")
            g = a.grant
            new = Grant("meta", cid, g.tenants, g.scope, g.kind, ISSUED_TTL["meta"], False, 0)
            at, _, ttl = self.issue(new, with_refresh=False)
            st["exchanged"] += 1
            return self._token_reply("meta", at, None, ttl, new)
        if gt in (None, "authorization_code") and prm.get("code"):
            c = self.codes["meta"].get(prm["code"])
            if c is None:
                return meta_err(400, 100, "Invalid verification code format.",
                                reason="unknown or used code")
            if not prm.get("redirect_uri") or (c["redirect_uri"] and
                                               prm["redirect_uri"] != c["redirect_uri"]):
                return meta_err(400, 100, "Error validating verification code. Please make sure "
                                "your redirect_uri is identical to the one you used in the OAuth "
                                "dialog request", reason="redirect_uri missing or different")
            del self.codes["meta"][prm["code"]]
            g = c["grant"]
            g.ttl = META_SHORT_TTL
            at, _, ttl = self.issue(g, with_refresh=False, access_token=c["access_token"])
            st["code_exchanged"] += 1
            return self._token_reply("meta", at, None, ttl, g)
        return meta_err(400, 100, "Missing or unsupported grant_type",
                        reason="use grant_type=fb_exchange_token&fb_exchange_token=... or "
                               "code=...&redirect_uri=...")

    # ---- Xero ------------------------------------------------------------------------------

    def xero_auth(self, req, tenant=True):
        tok = req.bearer()
        a, why = self.check_access("xero", tok)
        hdr = [("WWW-Authenticate", 'Bearer error="invalid_token"')]
        if why == "missing" or tok == "":
            fail(xero_err(401, "AuthenticationUnsuccessful",
                          "missing Authorization: Bearer <access token>", headers=hdr))
        if why == "expired":
            self.stats_tokens["xero"]["api_unauthorized"] += 1
            fail(xero_err(401, f"TokenExpired: token expired at {a.expires_at:.0f}",
                          "access token expired: refresh it", headers=hdr))
        if why:
            self.stats_tokens["xero"]["api_unauthorized"] += 1
            fail(xero_err(401, "AuthenticationUnsuccessful", f"access token is {why}", headers=hdr))
        if not tenant:
            return a, None
        tid = req.headers.get("xero-tenant-id")
        if not tid:
            fail(xero_err(403, "AuthenticationUnsuccessful",
                          "Xero-Tenant-Id header missing (Xero needs it on every API call)"))
        if tid not in a.grant.tenants:
            fail(xero_err(403, "AuthorizationUnsuccessful",
                          f"Xero-Tenant-Id {tid!r} is not a tenant connected to this token "
                          f"(connected: {a.grant.tenants})"))
        return a, tid

    def xero_common(self, req):
        a, tid = self.xero_auth(req)
        acc = req.headers.get("accept", "")
        if "application/json" not in acc.lower():
            fail(xero_err(406, "NotAcceptable",
                          "send Accept: application/json (without it Xero answers in XML)"))
        if req.ctype != "application/json":
            fail(xero_err(415, "UnsupportedMediaType",
                          f"Content-Type must be application/json, got {req.ctype or 'none'!r}"))
        key = req.headers.get("idempotency-key")
        if key is not None and (key == "" or len(key) > 128):
            fail(xero_postdata("Idempotency-Key must be 1..128 characters"))
        try:
            body = req.json()
        except ValueError as e:
            fail(xero_postdata(f"JSON for post data was invalid: {e}"))
        return a, tid, key, body

    def xero_items(self, body, name):
        if not isinstance(body, dict) or name not in body:
            fail(xero_postdata(f"the body must be {{\"{name}\": [ ... ]}} (got keys "
                               f"{sorted(body) if isinstance(body, dict) else type(body).__name__})"))
        items = body[name]
        if not isinstance(items, list) or not items:
            fail(xero_postdata(f"{name} must be a non-empty array"))
        return items

    def _xero_envelope(self, name, items):
        return {"Id": str(uuid.uuid4()), "Status": "OK", "ProviderName": "hookflow-fake",
                "DateTimeUTC": xero_date(), name: items}

    def _xero_reply(self, body):
        return Reply(200, body, headers=[("X-DayLimit-Remaining", "4999"),
                                         ("X-MinLimit-Remaining", "59"),
                                         ("X-AppMinLimit-Remaining", "9999")])

    def _xero_run(self, req, name, validate, create):
        a, tid, key, body = self.xero_common(req)
        scope = (tid, name)
        replay = self.idem_lookup("xero", scope, key, req)
        if replay is not None:
            return replay
        items = self.xero_items(body, name)
        errors = [validate(tid, it) if isinstance(it, dict) else [f"each {name[:-1]} must be an object"]
                  for it in items]
        if any(errors):
            return xero_validation(items, errors)
        out = [create(tid, it) for it in items]
        r = self._xero_reply(self._xero_envelope(name, out))
        self.idem_store("xero", scope, key, req, r)
        return r

    def xero_invoices_h(self, req, m):
        return self._xero_run(req, "Invoices", self._xero_invoice_check, self._xero_invoice_new)

    def _xero_invoice_check(self, tid, inv):
        errs = []
        t = inv.get("Type")
        if t is None:
            errs.append("Invoice Type must be specified (ACCREC or ACCPAY)")
        elif t not in ("ACCREC", "ACCPAY"):
            errs.append(f"Invoice Type {t!r} is invalid (ACCREC or ACCPAY)")
        c = inv.get("Contact")
        if not isinstance(c, dict) or not (c.get("ContactID") or c.get("Name")):
            errs.append("A Contact must be specified for this type of transaction "
                        "(Contact.ContactID or Contact.Name)")
        elif c.get("ContactID") is not None and not (isinstance(c["ContactID"], str)
                                                     and GUID_RE.match(c["ContactID"])):
            errs.append(f"Contact.ContactID {c['ContactID']!r} is not a valid GUID")
        status = inv.get("Status", "DRAFT")
        if status not in ("DRAFT", "SUBMITTED", "AUTHORISED"):
            errs.append(f"Status {status!r} is not valid for a new invoice "
                        "(DRAFT, SUBMITTED or AUTHORISED)")
        li = inv.get("LineItems")
        if not isinstance(li, list) or not li:
            errs.append("LineItems must be a non-empty array")
        else:
            for i, line in enumerate(li):
                if not isinstance(line, dict):
                    errs.append(f"LineItems[{i}] must be an object")
                    continue
                if not is_str(line.get("Description")) and not is_str(line.get("ItemCode")):
                    errs.append(f"LineItems[{i}]: Description is required")
                for f in ("Quantity", "UnitAmount", "LineAmount", "DiscountRate"):
                    if f in line and not is_num(line[f]):
                        errs.append(f"LineItems[{i}].{f} must be a number, got {line[f]!r}")
                for f in ("AccountCode", "TaxType", "ItemCode", "Description"):
                    if f in line and not isinstance(line[f], str):
                        errs.append(f"LineItems[{i}].{f} must be a string")
                if status == "AUTHORISED" and not is_str(line.get("AccountCode")) \
                        and not is_str(line.get("ItemCode")):
                    errs.append(f"LineItems[{i}]: Account code must be specified for an "
                                "AUTHORISED invoice")
                if is_num(line.get("Quantity", 1)) and line.get("Quantity", 1) < 0:
                    errs.append(f"LineItems[{i}].Quantity must not be negative")
                if (is_num(line.get("LineAmount")) and is_num(line.get("UnitAmount"))
                        and is_num(line.get("Quantity", 1)) and "DiscountRate" not in line
                        and abs(line["LineAmount"] - line.get("Quantity", 1) * line["UnitAmount"]) > 0.01):
                    errs.append(f"LineItems[{i}]: LineAmount must equal Quantity * UnitAmount")
        for f in ("Date", "DueDate"):
            if f in inv and inv[f] is not None:
                mm = XERO_DATE_RE.match(inv[f]) if isinstance(inv[f], str) else None
                if not mm or not valid_date(mm.group(1)):
                    errs.append(f"{f} {inv[f]!r} is not a valid date (YYYY-MM-DD)")
        cc = inv.get("CurrencyCode")
        if cc is not None and not (isinstance(cc, str) and re.match(r"^[A-Z]{3}$", cc)):
            errs.append(f"CurrencyCode {cc!r} is not an ISO 4217 code")
        lat = inv.get("LineAmountTypes")
        if lat is not None and lat not in ("Exclusive", "Inclusive", "NoTax"):
            errs.append(f"LineAmountTypes {lat!r} is invalid (Exclusive, Inclusive, NoTax)")
        if "Reference" in inv and not isinstance(inv["Reference"], str):
            errs.append("Reference must be a string")
        if "InvoiceID" in inv:
            errs.append("InvoiceID must not be sent when creating an invoice")
        return errs

    def _xero_invoice_new(self, tid, inv):
        lines = []
        sub = 0.0
        for line in inv["LineItems"]:
            q = line.get("Quantity", 1)
            ua = line.get("UnitAmount", 0)
            amt = line.get("LineAmount", q * ua * (1 - line.get("DiscountRate", 0) / 100.0))
            amt = money(amt)
            sub += amt
            out = dict(line)
            out.update({"LineItemID": str(uuid.uuid4()), "Quantity": q, "UnitAmount": ua,
                        "LineAmount": amt, "TaxAmount": 0.0})
            lines.append(out)
        sub = money(sub)
        contact = dict(inv["Contact"])
        known = self.xero_contacts[tid].get(contact.get("ContactID"))
        if known:
            contact.setdefault("Name", known["Name"])
        if "ContactID" not in contact:
            contact["ContactID"] = str(uuid.uuid4())
        number = inv.get("InvoiceNumber")
        if not number and inv["Type"] == "ACCREC":
            self.xero_numbers[tid] += 1
            number = f"INV-{self.xero_numbers[tid]:04d}"
        obj = {"Type": inv["Type"], "InvoiceID": str(uuid.uuid4()), "InvoiceNumber": number or "",
               "Reference": inv.get("Reference", ""), "Contact": contact, "LineItems": lines,
               "Date": (inv.get("Date") or today())[:10], "DueDate": (inv.get("DueDate") or "")[:10] or None,
               "Status": inv.get("Status", "DRAFT"),
               "LineAmountTypes": inv.get("LineAmountTypes", "Exclusive"),
               "SubTotal": sub, "TotalTax": 0.0, "Total": sub, "AmountDue": sub, "AmountPaid": 0.0,
               "AmountCredited": 0.0, "CurrencyCode": inv.get("CurrencyCode", "NZD"),
               "CurrencyRate": 1.0, "UpdatedDateUTC": xero_date(), "HasAttachments": False,
               "HasErrors": False}
        self.xero_invoices[tid][obj["InvoiceID"]] = obj
        self.objects["xero"]["invoices"].append(dict(obj, TenantId=tid))
        return obj

    def xero_contacts_h(self, req, m):
        return self._xero_run(req, "Contacts", self._xero_contact_check, self._xero_contact_new)

    def _xero_contact_check(self, tid, c):
        errs = []
        name = c.get("Name")
        if not is_str(name):
            errs.append("Name is required: the contact name must be a non-empty string")
        elif any(x["Name"].lower() == name.lower() for x in self.xero_contacts[tid].values()):
            errs.append(f"The contact name {name} is already assigned to another contact. "
                        "The contact name must be unique across all active contacts.")
        em = c.get("EmailAddress")
        if em is not None and not (isinstance(em, str) and (em == "" or EMAIL_RE.match(em))):
            errs.append("Email address must be valid.")
        for f in ("FirstName", "LastName", "AccountNumber", "ContactNumber"):
            if f in c and not isinstance(c[f], str):
                errs.append(f"{f} must be a string")
        ph = c.get("Phones")
        if ph is not None:
            if not isinstance(ph, list):
                errs.append("Phones must be an array")
            else:
                for i, x in enumerate(ph):
                    if not isinstance(x, dict) or x.get("PhoneType") not in (
                            "DEFAULT", "DDI", "MOBILE", "FAX"):
                        errs.append(f"Phones[{i}] needs PhoneType DEFAULT, DDI, MOBILE or FAX")
        if "ContactID" in c:
            errs.append("ContactID must not be sent when creating a contact")
        return errs

    def _xero_contact_new(self, tid, c):
        obj = dict(c)
        obj.update({"ContactID": str(uuid.uuid4()), "ContactStatus": "ACTIVE",
                    "UpdatedDateUTC": xero_date(), "IsSupplier": False, "IsCustomer": False,
                    "HasAttachments": False, "HasValidationErrors": False})
        obj.setdefault("EmailAddress", "")
        self.xero_contacts[tid][obj["ContactID"]] = obj
        self.objects["xero"]["contacts"].append(dict(obj, TenantId=tid))
        return obj

    def xero_payments_h(self, req, m):
        return self._xero_run(req, "Payments", self._xero_payment_check, self._xero_payment_new)

    def _xero_find_invoice(self, tid, ref):
        if not isinstance(ref, dict):
            return None
        invs = self.xero_invoices[tid]
        if ref.get("InvoiceID"):
            return invs.get(ref["InvoiceID"])
        if ref.get("InvoiceNumber"):
            for inv in invs.values():
                if inv["InvoiceNumber"] == ref["InvoiceNumber"]:
                    return inv
        return None

    def _xero_payment_check(self, tid, pm):
        errs = []
        ref = pm.get("Invoice")
        if not isinstance(ref, dict) or not (ref.get("InvoiceID") or ref.get("InvoiceNumber")):
            errs.append("Invoice.InvoiceID (or Invoice.InvoiceNumber) is required")
            inv = None
        else:
            inv = self._xero_find_invoice(tid, ref)
            if inv is None:
                errs.append("Invoice could not be found (create it in this tenant first)")
        acc = pm.get("Account")
        if not isinstance(acc, dict) or not (is_str(acc.get("Code")) or is_str(acc.get("AccountID"))):
            errs.append("Account.Code (or Account.AccountID) is required")
        amt = pm.get("Amount")
        if not is_num(amt) or amt <= 0:
            errs.append(f"Amount must be a positive number, got {amt!r}")
        d = pm.get("Date")
        if d is not None:
            mm = XERO_DATE_RE.match(d) if isinstance(d, str) else None
            if not mm or not valid_date(mm.group(1)):
                errs.append(f"Date {d!r} is not a valid date (YYYY-MM-DD)")
        if "Reference" in pm and not isinstance(pm["Reference"], str):
            errs.append("Reference must be a string")
        if inv is not None:
            if inv["Status"] != "AUTHORISED":
                errs.append("Payments can only be made against Authorised documents "
                            f"(invoice status is {inv['Status']})")
            elif is_num(amt) and amt - inv["AmountDue"] > 0.005:
                errs.append("Payment amount exceeds the amount outstanding on this document")
        return errs

    def _xero_payment_new(self, tid, pm):
        inv = self._xero_find_invoice(tid, pm["Invoice"])
        amt = money(pm["Amount"])
        inv["AmountPaid"] = money(inv["AmountPaid"] + amt)
        inv["AmountDue"] = money(inv["AmountDue"] - amt)
        if inv["AmountDue"] <= 0.005:
            inv["Status"] = "PAID"
        inv["UpdatedDateUTC"] = xero_date()
        obj = {"PaymentID": str(uuid.uuid4()), "Date": (pm.get("Date") or today())[:10],
               "Amount": amt, "Reference": pm.get("Reference", ""), "Status": "AUTHORISED",
               "PaymentType": "ACCRECPAYMENT" if inv["Type"] == "ACCREC" else "ACCPAYPAYMENT",
               "UpdatedDateUTC": xero_date(), "IsReconciled": False,
               "Account": dict(pm["Account"]),
               "Invoice": {"Type": inv["Type"], "InvoiceID": inv["InvoiceID"],
                           "InvoiceNumber": inv["InvoiceNumber"], "Contact": inv["Contact"],
                           "AmountDue": inv["AmountDue"], "AmountPaid": inv["AmountPaid"],
                           "Status": inv["Status"], "CurrencyCode": inv["CurrencyCode"]}}
        self.objects["xero"]["payments"].append(dict(obj, TenantId=tid))
        return obj

    def xero_connections_h(self, req, m):
        a, _ = self.xero_auth(req, tenant=False)
        # Every organisation this user connected to this app, oldest first; each says which
        # consent (authEventId) connected it last.
        out = {}
        for g in self.grants["xero"]:
            if g.client_id != a.grant.client_id or g.user != a.grant.user:
                continue
            for t in g.tenants:
                conn = out.setdefault(t, {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "conn:" + t)), "tenantId": t,
                    "tenantType": "ORGANISATION", "tenantName": g.name or f"Org {t[:8]}",
                    "createdDateUtc": iso_utc()})
                conn["authEventId"] = g.event
                conn["updatedDateUtc"] = iso_utc()
        return Reply(200, list(out.values()))

    # ---- QuickBooks ------------------------------------------------------------------------

    QBO_ALLOWED = frozenset((
        "Line", "CustomerRef", "TxnDate", "DueDate", "ClassRef", "DepositToAccountRef",
        "PaymentMethodRef", "PrivateNote", "CustomerMemo", "BillEmail", "BillEmailCc",
        "BillEmailBcc", "DocNumber", "CurrencyRef", "ExchangeRate", "GlobalTaxCalculation",
        "TxnTaxDetail", "BillAddr", "ShipAddr", "ShipFromAddr", "SalesTermRef", "EmailStatus",
        "PrintStatus", "ApplyTaxAfterDiscount", "DepartmentRef", "PaymentRefNum", "TrackingNum",
        "ShipDate", "ShipMethodRef", "CustomField", "AllowOnlineCreditCardPayment",
        "AllowOnlineACHPayment", "AllowIPNPayment", "AllowOnlinePayment", "Deposit",
        "DepositToAccountRef", "TxnSource", "sparse", "domain", "TotalAmt", "Balance",
        "HomeTotalAmt", "LinkedTxn", "CreditCardPayment", "TransactionLocationType",
        "ProjectRef", "RecurDataRef", "TaxExemptionRef", "FreeFormAddress"))
    QBO_LINE_TYPES = frozenset(("SalesItemLineDetail", "GroupLineDetail", "DescriptionOnly",
                                "DiscountLineDetail", "SubTotalLineDetail"))

    def qbo_create_h(self, req, m):
        realm, kind = m.group("realm"), m.group("kind")
        tok = req.bearer()
        a, why = self.check_access("quickbooks", tok)
        if why or tok == "":
            if why != "missing":
                self.stats_tokens["quickbooks"]["api_unauthorized"] += 1
            fail(qbo_auth_fault({"missing": "missing Authorization: Bearer <access token>",
                                 "expired": "Token expired: access token expired, refresh it"}
                                .get(why or "missing", f"access token is {why}")))
        if realm not in a.grant.tenants:
            fail(qbo_fault(403, "003100",
                           "message=ApplicationAuthorizationFailed; errorCode=003100; "
                           "statusCode=403",
                           f"realmId {realm} is not a company connected to this token "
                           f"(connected: {a.grant.tenants})", ftype="AUTHORIZATION"))
        if "application/json" not in req.headers.get("accept", "").lower():
            fail(qbo_fault(406, 4000, "Not Acceptable",
                           "send Accept: application/json (without it QuickBooks answers XML)"))
        if req.ctype != "application/json":
            fail(qbo_fault(415, 2010, "Unsupported Media Type",
                           f"Content-Type must be application/json, got {req.ctype or 'none'!r}"))
        mv = req.q("minorversion")
        if mv is not None and not mv.isdigit():
            fail(qbo_fault(400, 2010, "Request has invalid or unsupported property",
                           f"minorversion {mv!r} must be an integer (75 is the current default)"))
        rid = req.q("requestid")
        if rid is not None and (rid == "" or len(rid) > 50):
            fail(qbo_fault(400, 2010, "Request has invalid or unsupported property",
                           "requestid must be 1..50 characters"))
        scope = (realm, kind)
        replay = self.idem_lookup("quickbooks", scope, rid, req)
        if replay is not None:
            return replay
        try:
            body = req.json()
        except ValueError as e:
            fail(qbo_fault(400, 2010, "Request has invalid or unsupported property",
                           f"Property Name:can not parse the JSON body ({e})"))
        self._qbo_validate(body, kind)
        obj = self._qbo_new(realm, kind, body)
        key = "SalesReceipt" if kind == "salesreceipt" else "Invoice"
        r = Reply(200, {key: obj, "time": qbo_time()},
                  headers=[("intuit_tid", str(uuid.uuid4()))])
        self.idem_store("quickbooks", scope, rid, req, r)
        return r

    def _qbo_validate(self, body, kind):
        def missing(el, what=None):
            fail(qbo_fault(400, 2020, "Required param missing, need to supply the required value "
                           "for the API", what or f"Required parameter {el} is missing in the request",
                           element=el))

        def invalid(detail, code=2010):
            fail(qbo_fault(400, code, "Request has invalid or unsupported property", detail))

        if not isinstance(body, dict):
            invalid("the body must be a JSON object (the entity itself, not wrapped)")
        for k in body:
            if k not in self.QBO_ALLOWED:
                invalid(f"Property Name:Unrecognized field \"{k}\" specified is unsupported or "
                        "invalid")
        lines = body.get("Line")
        if lines is None:
            missing("Line")
        if not isinstance(lines, list) or not lines:
            invalid("Line must be a non-empty array")
        for i, ln in enumerate(lines):
            if not isinstance(ln, dict):
                invalid(f"Line[{i}] must be an object")
            dtp = ln.get("DetailType")
            if dtp is None:
                missing(f"Line[{i}].DetailType")
            if dtp not in self.QBO_LINE_TYPES:
                invalid(f"Line[{i}].DetailType {dtp!r} is not one of {sorted(self.QBO_LINE_TYPES)}")
            if "Description" in ln and not isinstance(ln["Description"], str):
                invalid(f"Line[{i}].Description must be a string")
            if dtp == "DescriptionOnly":
                continue
            if dtp == "SalesItemLineDetail":
                if "Amount" not in ln:
                    missing(f"Line[{i}].Amount")
                if not is_num(ln["Amount"]):
                    invalid(f"Line[{i}].Amount must be a number, got {ln['Amount']!r}")
                d = ln.get("SalesItemLineDetail")
                if not isinstance(d, dict):
                    missing(f"Line[{i}].SalesItemLineDetail")
                ref = d.get("ItemRef")
                if not isinstance(ref, dict) or not is_str(ref.get("value")):
                    missing(f"Line[{i}].SalesItemLineDetail.ItemRef",
                            f"Line[{i}].SalesItemLineDetail.ItemRef.value (a string Id) is required")
                for f in ("Qty", "UnitPrice"):
                    if f in d and not is_num(d[f]):
                        invalid(f"Line[{i}].SalesItemLineDetail.{f} must be a number")
                if is_num(d.get("Qty")) and is_num(d.get("UnitPrice")) and \
                        abs(d["Qty"] * d["UnitPrice"] - ln["Amount"]) > 0.005:
                    fail(qbo_fault(400, 6070, "Amount calculation incorrect in the request.",
                                   f"Line[{i}]: Amount {ln['Amount']} is not equal to UnitPrice * "
                                   f"Qty ({d['UnitPrice']} * {d['Qty']})"))
                for f in ("ClassRef", "TaxCodeRef"):
                    if f in d and not (isinstance(d[f], dict) and is_str(d[f].get("value"))):
                        invalid(f"Line[{i}].SalesItemLineDetail.{f} must be {{\"value\": \"<Id>\"}}")
            elif "Amount" in ln and not is_num(ln["Amount"]):
                invalid(f"Line[{i}].Amount must be a number")
        cref = body.get("CustomerRef")
        if cref is None and kind == "invoice":
            missing("CustomerRef")
        if cref is not None and not (isinstance(cref, dict) and is_str(cref.get("value"))):
            invalid("CustomerRef must be {\"value\": \"<Customer Id>\"}")
        for f in ("ClassRef", "DepositToAccountRef", "PaymentMethodRef", "SalesTermRef",
                  "DepartmentRef", "CurrencyRef"):
            if f in body and not (isinstance(body[f], dict) and is_str(body[f].get("value"))):
                invalid(f"{f} must be {{\"value\": \"<Id>\"}}")
        if kind == "invoice" and "DepositToAccountRef" in body:
            invalid("Property Name:DepositToAccountRef is not valid on an Invoice")
        for f in ("TxnDate", "DueDate", "ShipDate"):
            if f in body and not valid_date(body[f]):
                invalid(f"{f} {body[f]!r} must be a date YYYY-MM-DD", code=2090)
        if kind == "salesreceipt" and "DueDate" in body:
            invalid("Property Name:DueDate is not valid on a SalesReceipt")
        if "BillEmail" in body:
            be = body["BillEmail"]
            if not (isinstance(be, dict) and isinstance(be.get("Address"), str)
                    and EMAIL_RE.match(be["Address"])):
                invalid("BillEmail must be {\"Address\": \"<valid email>\"}", code=6110)
        if "PrivateNote" in body and (not isinstance(body["PrivateNote"], str)
                                      or len(body["PrivateNote"]) > 4000):
            invalid("PrivateNote must be a string of at most 4000 characters", code=2050)

    def _qbo_new(self, realm, kind, body):
        self.qbo_ids[realm] += 1
        self.qbo_docs[realm] += 1
        oid = str(1000 + self.qbo_ids[realm])
        total = 0.0
        lines = []
        n = 0
        for ln in body["Line"]:
            out = dict(ln)
            if ln["DetailType"] == "SalesItemLineDetail":
                n += 1
                out["Id"] = str(n)
                out["LineNum"] = n
                total += ln["Amount"]
            lines.append(out)
        total = money(total)
        lines.append({"Amount": total, "DetailType": "SubTotalLineDetail",
                      "SubTotalLineDetail": {}})
        now = qbo_time()
        obj = dict(body)
        obj.update({"Id": oid, "SyncToken": "0", "domain": "QBO", "sparse": False,
                    "DocNumber": body.get("DocNumber") or str(1000 + self.qbo_docs[realm]),
                    "TxnDate": body.get("TxnDate") or today(), "Line": lines, "TotalAmt": total,
                    "MetaData": {"CreateTime": now, "LastUpdatedTime": now},
                    "CurrencyRef": body.get("CurrencyRef") or {"value": "USD",
                                                                 "name": "United States Dollar"}})
        if kind == "invoice":
            obj["Balance"] = total
            obj.setdefault("DueDate", body.get("DueDate") or obj["TxnDate"])
        else:
            obj["Balance"] = 0
            obj.setdefault("DepositToAccountRef", {"value": "4", "name": "Undeposited Funds"})
        self.objects["quickbooks"]["salesreceipts" if kind == "salesreceipt" else "invoices"] \
            .append(dict(obj, RealmId=realm))
        return obj

    # ---- HubSpot ---------------------------------------------------------------------------

    HUBSPOT_STAGES = ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead",
                      "opportunity", "customer", "evangelist", "other")
    # Contact properties every portal has (a subset of HubSpot's defaults); a portal's own are
    # registered with tokens("hubspot", properties=[...]). Any other name is refused, as HubSpot
    # refuses it (PROPERTY_DOESNT_EXIST).
    HUBSPOT_CONTACT_PROPERTIES = frozenset((
        "email", "firstname", "lastname", "phone", "mobilephone", "company", "website", "jobtitle",
        "address", "city", "state", "zip", "country", "lifecyclestage", "hs_lead_status",
        "hubspot_owner_id", "message", "fax", "industry", "annualrevenue", "numemployees",
        "salutation", "date_of_birth", "hs_language", "twitterhandle", "hs_whatsapp_phone_number",
        "hs_object_id", "createdate", "lastmodifieddate"))

    def hubspot_common(self, req):
        tok = req.bearer()
        a, why = self.check_access("hubspot", tok)
        if why == "expired":
            self.stats_tokens["hubspot"]["api_unauthorized"] += 1
            mins = max(1, int((self.now() - a.expires_at) // 60))
            fail(hubspot_err(401, "EXPIRED_AUTHENTICATION",
                             f"The OAuth token used to make this call expired {mins} minute(s) ago.",
                             "access token expired: refresh it"))
        if why or tok == "":
            if why != "missing":
                self.stats_tokens["hubspot"]["api_unauthorized"] += 1
            fail(hubspot_err(401, "INVALID_AUTHENTICATION",
                             "Authentication credentials not found. This API supports OAuth 2.0 "
                             "authentication and you can find more details at "
                             "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                             f"Authorization: Bearer <token> is {why or 'malformed'}"))
        if req.ctype != "application/json":
            fail(hubspot_err(415, "VALIDATION_ERROR", "Unsupported Media Type",
                             f"Content-Type must be application/json, got {req.ctype or 'none'!r}"))
        try:
            return req.json()
        except ValueError as e:
            fail(hubspot_err(400, "VALIDATION_ERROR", f"Invalid input JSON: {e}"))

    def _hubspot_props(self, props, where="properties"):
        if not isinstance(props, dict):
            fail(hubspot_err(400, "VALIDATION_ERROR",
                             f"Invalid input JSON: {where} must be an object of name -> value"))
        bad = []
        for k, v in props.items():
            if not isinstance(k, str) or not k:
                bad.append({"isValid": False, "message": "property name must be a string",
                            "error": "INVALID_PROPERTY", "name": str(k)})
            elif v is not None and not isinstance(v, (str, int, float, bool)):
                bad.append({"isValid": False, "message": f"{k} must be a string, number or boolean",
                            "error": "INVALID_TYPE", "name": k})
            elif k == "email" and v not in (None, "") and not (isinstance(v, str) and EMAIL_RE.match(v)):
                bad.append({"isValid": False, "message": "Email address " + str(v) + " is invalid",
                            "error": "INVALID_EMAIL", "name": "email"})
            elif k == "lifecyclestage" and v not in (None, "") and v not in self.HUBSPOT_STAGES:
                bad.append({"isValid": False,
                            "message": f"{v} was not one of the allowed options: "
                                       + ", ".join(self.HUBSPOT_STAGES),
                            "error": "INVALID_OPTION", "name": "lifecyclestage"})
            elif k not in self.HUBSPOT_CONTACT_PROPERTIES and k not in self.hubspot_properties:
                bad.append({"isValid": False, "message": f'Property "{k}" does not exist',
                            "error": "PROPERTY_DOESNT_EXIST", "name": k,
                            "localizedErrorMessage": f'Property "{k}" does not exist'})
            elif k in ("hs_object_id", "createdate", "lastmodifieddate"):
                bad.append({"isValid": False, "message": f"{k} is a read only property; its value "
                            "cannot be set.", "error": "READ_ONLY_VALUE", "name": k})
        if bad:
            fail(hubspot_err(400, "VALIDATION_ERROR",
                             "Property values were not valid: " + json.dumps(bad),
                             "; ".join(b["message"] for b in bad),
                             errors=[{"message": b["message"], "code": b["error"],
                                      "context": {"propertyName": [b["name"]]}} for b in bad]))

    def _hubspot_contact(self, props, existing=None):
        now = iso_utc()
        clean = {k: (v if isinstance(v, str) or v is None else
                     (str(v).lower() if isinstance(v, bool) else str(v)))
                 for k, v in props.items()}
        if existing is None:
            cid = str(self.hubspot_next)
            self.hubspot_next += 1
            c = {"id": cid, "properties": dict(clean, createdate=now, hs_object_id=cid,
                                               lastmodifieddate=now),
                 "createdAt": now, "updatedAt": now, "archived": False}
            self.hubspot_contacts[clean["email"].lower()] = c
            self.objects["hubspot"]["contacts"].append(c)
            return c, True
        existing["properties"].update(clean)
        existing["properties"]["lastmodifieddate"] = now
        existing["updatedAt"] = now
        self.counters["hubspot_updates"] += 1
        return existing, False

    def hubspot_create_h(self, req, m):
        body = self.hubspot_common(req)
        if not isinstance(body, dict) or "properties" not in body:
            fail(hubspot_err(400, "VALIDATION_ERROR",
                             "Invalid input JSON: the body must be {\"properties\": {...}}"))
        for k in body:
            if k not in ("properties", "associations"):
                fail(hubspot_err(400, "VALIDATION_ERROR",
                                 f"Invalid input JSON: Unrecognized field \"{k}\""))
        props = body["properties"]
        self._hubspot_props(props)
        email = props.get("email")
        if not is_str(email):
            fail(hubspot_err(400, "VALIDATION_ERROR",
                             "Property values were not valid: email is required",
                             "properties.email is required (hookflow creates contacts by email)"))
        ex = self.hubspot_contacts.get(email.lower())
        if ex is not None:
            return hubspot_err(409, "CONFLICT", f"Contact already exists. Existing ID: {ex['id']}",
                               "a contact with this email already exists")
        c, _ = self._hubspot_contact(props)
        return Reply(201, c)

    def hubspot_upsert_h(self, req, m):
        started = iso_utc()
        body = self.hubspot_common(req)
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            fail(hubspot_err(400, "VALIDATION_ERROR",
                             "Invalid input JSON: the body must be {\"inputs\": [...]}"))
        inputs = body["inputs"]
        if not inputs:
            fail(hubspot_err(400, "VALIDATION_ERROR", "inputs must not be empty"))
        if len(inputs) > 100:
            fail(hubspot_err(400, "VALIDATION_ERROR",
                             f"Batch input is limited to 100 inputs, got {len(inputs)}"))
        seen = set()
        for i, it in enumerate(inputs):
            if not isinstance(it, dict):
                fail(hubspot_err(400, "VALIDATION_ERROR", f"inputs[{i}] must be an object"))
            if it.get("idProperty") != "email":
                fail(hubspot_err(400, "VALIDATION_ERROR",
                                 f"inputs[{i}].idProperty must be \"email\" (got "
                                 f"{it.get('idProperty')!r})"))
            ident = it.get("id")
            if not (isinstance(ident, str) and EMAIL_RE.match(ident)):
                fail(hubspot_err(400, "VALIDATION_ERROR",
                                 f"inputs[{i}].id must be the contact's email, got {ident!r}"))
            if "properties" not in it:
                fail(hubspot_err(400, "VALIDATION_ERROR", f"inputs[{i}].properties is required"))
            self._hubspot_props(it["properties"], f"inputs[{i}].properties")
            pe = it["properties"].get("email")
            if pe not in (None, "") and str(pe).lower() != ident.lower():
                fail(hubspot_err(400, "VALIDATION_ERROR",
                                 f"inputs[{i}]: properties.email differs from id"))
            if ident.lower() in seen:
                fail(hubspot_err(400, "VALIDATION_ERROR", "Duplicate IDs found in batch input: "
                                 f"[{ident}]. IDs must be unique"))
            seen.add(ident.lower())
        results = []
        for it in inputs:
            props = dict(it["properties"])
            props.setdefault("email", it["id"])
            ex = self.hubspot_contacts.get(it["id"].lower())
            c, new = self._hubspot_contact(props, ex)
            results.append(dict(c, new=new))
        return Reply(200, {"status": "COMPLETE", "results": results, "startedAt": started,
                           "completedAt": iso_utc()})

    # ---- Klaviyo ---------------------------------------------------------------------------

    KLAVIYO_PROFILE_ATTRS = frozenset((
        "email", "phone_number", "external_id", "anonymous_id", "_kx", "first_name", "last_name",
        "organization", "locale", "title", "image", "location", "properties"))
    KLAVIYO_EVENT_ATTRS = frozenset(("properties", "time", "value", "value_currency", "unique_id",
                                     "metric", "profile"))

    def klaviyo_common(self, req):
        """Auth and revision, then the JSON:API body of a write."""
        self.klaviyo_auth(req)
        if req.ctype != "application/vnd.api+json":
            fail(klaviyo_err(415, "unsupported_media_type", "Unsupported media type.",
                             f"Unsupported media type \"{req.ctype or 'none'}\" in request; use "
                             "content-type: application/vnd.api+json"))
        return self.klaviyo_body(req)

    def klaviyo_accounts_h(self, req, m):
        """GET /api/accounts/: the account the key or token belongs to (scope accounts:read)."""
        a = self.klaviyo_auth(req)
        if a is not None:
            g = a.grant
            aid = g.tenants[0] if g.tenants else "KL" + hashlib.sha256(
                str(g.client_id).encode()).hexdigest()[:6].upper()
        else:
            aid = "KLKEY" + hashlib.sha256(req.headers["authorization"].encode()).hexdigest()[:6]
        return Reply(200, {"data": [{"type": "account", "id": aid, "attributes": {
            "contact_information": {"organization_name": f"Fake account {aid}",
                                    "default_sender_email": "owner@example.com"},
            "industry": None, "timezone": "UTC", "preferred_currency": "USD",
            "public_api_key": aid[:6]},
            "links": {"self": f"https://a.klaviyo.com/api/accounts/{aid}/"}}],
            "links": {"self": "https://a.klaviyo.com/api/accounts/"}}, ctype=JSONAPI_CT)

    def klaviyo_auth(self, req):
        """The access (None for a private API key) after the auth and revision checks."""
        a = None
        auth = req.headers.get("authorization")
        if not auth:
            fail(klaviyo_err(401, "not_authenticated",
                             "Authentication credentials were not provided.",
                             "Missing or invalid authorization scheme. Please use Klaviyo-API-Key "
                             "or Bearer."))
        m = re.match(r"^Klaviyo-API-Key +(\S+)\s*$", auth)
        if m:
            if m.group(1) not in self.klaviyo_keys:
                self.stats_tokens["klaviyo"]["api_unauthorized"] += 1
                fail(klaviyo_err(401, "authentication_failed", "Incorrect authentication credentials.",
                                 "unknown private API key"))
        else:
            tok = req.bearer()
            if not tok:
                fail(klaviyo_err(401, "not_authenticated",
                                 "Authentication credentials were not provided.",
                                 "Missing or invalid authorization scheme. Please use "
                                 "Klaviyo-API-Key or Bearer."))
            a, why = self.check_access("klaviyo", tok)
            if why:
                self.stats_tokens["klaviyo"]["api_unauthorized"] += 1
                fail(klaviyo_err(401, "authentication_failed", "Incorrect authentication credentials.",
                                 "access token expired: refresh it" if why == "expired"
                                 else f"access token is {why}"))
        rev = req.headers.get("revision")
        if not rev:
            fail(klaviyo_err(400, "invalid", "Invalid input.",
                             "Missing required `revision` header (YYYY-MM-DD, e.g. 2026-01-15).",
                             pointer="/headers/revision"))
        mm = REVISION_RE.match(rev)
        if not mm or not valid_date(mm.group(1)):
            fail(klaviyo_err(400, "invalid", "Invalid input.",
                             f"Invalid revision header {rev!r}: expected YYYY-MM-DD.",
                             pointer="/headers/revision"))
        return a

    def klaviyo_body(self, req):
        try:
            return req.json()
        except ValueError as e:
            fail(klaviyo_err(400, "parse_error", "Malformed request.", f"JSON parse error - {e}"))

    def _klaviyo_profile_attrs(self, attrs, pointer, allow_id=False, has_id=False):
        if not isinstance(attrs, dict):
            fail(klaviyo_invalid("profile attributes must be an object", pointer))
        for k in attrs:
            if k not in self.KLAVIYO_PROFILE_ATTRS:
                fail(klaviyo_invalid(f"'{k}' is not a valid field for the resource 'profile'.",
                                     f"{pointer}/{k}"))
        em = attrs.get("email")
        if em is not None and not (isinstance(em, str) and EMAIL_RE.match(em)):
            fail(klaviyo_invalid(f"Invalid email address {em!r}", f"{pointer}/email"))
        ph = attrs.get("phone_number")
        if ph is not None and not (isinstance(ph, str) and E164_RE.match(ph)):
            fail(klaviyo_invalid("Invalid phone number format (Example of a valid format: "
                                 "+13239169023)", f"{pointer}/phone_number"))
        for k in ("first_name", "last_name", "external_id", "organization", "title"):
            if k in attrs and attrs[k] is not None and not isinstance(attrs[k], str):
                fail(klaviyo_invalid(f"{k} must be a string", f"{pointer}/{k}"))
        if "properties" in attrs and not isinstance(attrs["properties"], dict):
            fail(klaviyo_invalid("properties must be an object", f"{pointer}/properties"))
        if not (has_id or is_str(em) or is_str(ph) or is_str(attrs.get("external_id"))
                or is_str(attrs.get("anonymous_id"))):
            fail(klaviyo_invalid("One of `email`, `phone_number`, `external_id` or `id` is "
                                 "required to identify the profile.", pointer))

    def klaviyo_event_h(self, req, m):
        body = self.klaviyo_common(req)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            fail(klaviyo_invalid("The body must be a JSON:API document {\"data\": {...}}", "/data"))
        if data.get("type") != "event":
            fail(klaviyo_err(409, "conflict", "Conflict.",
                             f"data.type must be 'event', got {data.get('type')!r}", "/data/type"))
        at = data.get("attributes")
        if not isinstance(at, dict):
            fail(klaviyo_invalid("data.attributes is required", "/data/attributes"))
        for k in at:
            if k not in self.KLAVIYO_EVENT_ATTRS:
                fail(klaviyo_invalid(f"'{k}' is not a valid field for the resource 'event'.",
                                     f"/data/attributes/{k}"))
        if not isinstance(at.get("properties"), dict):
            fail(klaviyo_invalid("'properties' is a required field (an object; may be {}).",
                                 "/data/attributes/properties"))
        met = at.get("metric")
        md = met.get("data") if isinstance(met, dict) else None
        if not isinstance(md, dict) or md.get("type") != "metric" or \
                not isinstance(md.get("attributes"), dict) or not is_str(md["attributes"].get("name")):
            fail(klaviyo_invalid("metric must be {\"data\": {\"type\": \"metric\", \"attributes\": "
                                 "{\"name\": \"...\"}}}", "/data/attributes/metric"))
        prof = at.get("profile")
        pd = prof.get("data") if isinstance(prof, dict) else None
        if not isinstance(pd, dict) or pd.get("type") != "profile":
            fail(klaviyo_invalid("profile must be {\"data\": {\"type\": \"profile\", \"attributes\":"
                                 " {\"email\": ...}}}", "/data/attributes/profile"))
        self._klaviyo_profile_attrs(pd.get("attributes", {}), "/data/attributes/profile/data/attributes",
                                    has_id=is_str(pd.get("id")))
        if "value" in at and not is_num(at["value"]):
            fail(klaviyo_invalid("value must be a number", "/data/attributes/value"))
        if "time" in at and not valid_datetime(at["time"]):
            fail(klaviyo_invalid(f"time {at['time']!r} must be an ISO 8601 datetime",
                                 "/data/attributes/time"))
        if "unique_id" in at and not is_str(at["unique_id"]):
            fail(klaviyo_invalid("unique_id must be a non-empty string", "/data/attributes/unique_id"))
        uid = at.get("unique_id")
        if uid is not None:
            if uid in self.klaviyo_unique:
                self.stats_klaviyo["duplicate_unique_ids"] += 1
                return Reply(202, None)
            self.klaviyo_unique.add(uid)
            self.stats_klaviyo["unique_ids"] += 1
        self.objects["klaviyo"]["events"].append({
            "metric": md["attributes"]["name"], "profile": pd.get("attributes", {}),
            "profile_id": pd.get("id"), "properties": at["properties"], "value": at.get("value"),
            "time": at.get("time"), "unique_id": uid, "received": iso_utc()})
        return Reply(202, None)

    def klaviyo_profile_h(self, req, m):
        body = self.klaviyo_common(req)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            fail(klaviyo_invalid("The body must be a JSON:API document {\"data\": {...}}", "/data"))
        if data.get("type") != "profile":
            fail(klaviyo_err(409, "conflict", "Conflict.",
                             f"data.type must be 'profile', got {data.get('type')!r}", "/data/type"))
        attrs = data.get("attributes")
        if attrs is None:
            fail(klaviyo_invalid("data.attributes is required", "/data/attributes"))
        self._klaviyo_profile_attrs(attrs, "/data/attributes", has_id=is_str(data.get("id")))
        keys = [f"id:{data['id']}"] if is_str(data.get("id")) else []
        for k in ("email", "phone_number", "external_id"):
            if is_str(attrs.get(k)):
                keys.append(f"{k}:{attrs[k].lower() if k == 'email' else attrs[k]}")
        prof = None
        for k in keys:
            if k in self.klaviyo_profiles:
                prof = self.klaviyo_profiles[k]
                break
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        created = prof is None
        if created:
            pid = data.get("id") or ulid_like()
            prof = {"type": "profile", "id": pid,
                    "attributes": {"email": None, "phone_number": None, "external_id": None,
                                   "first_name": None, "last_name": None, "organization": None,
                                   "title": None, "image": None, "created": now, "updated": now,
                                   "last_event_date": None, "location": {}, "properties": {}},
                    "links": {"self": f"https://a.klaviyo.com/api/profiles/{pid}/"}}
            self.objects["klaviyo"]["profiles"].append(prof)
        pa = prof["attributes"]
        for k, v in attrs.items():
            if k == "properties":
                pa["properties"].update(v)
            elif k == "location" and isinstance(v, dict):
                pa["location"].update(v)
            else:
                pa[k] = v
        pa["updated"] = now
        for k in ("email", "phone_number", "external_id"):
            if is_str(pa.get(k)):
                self.klaviyo_profiles[f"{k}:{pa[k].lower() if k == 'email' else pa[k]}"] = prof
        self.klaviyo_profiles[f"id:{prof['id']}"] = prof
        return Reply(201 if created else 200, {"data": prof}, ctype=JSONAPI_CT)

    # ---- Twilio ----------------------------------------------------------------------------

    def twilio_send_h(self, req, m):
        sid = m.group("sid")
        basic = req.basic()
        hdr = [("WWW-Authenticate", 'Basic realm="Twilio API"')]
        if basic is None:
            fail(twilio_err(401, 20003, "Authenticate",
                            "missing HTTP Basic auth AccountSid:AuthToken", headers=hdr))
        user, pw = basic
        owner = None
        if user in self.twilio_accounts and self.twilio_accounts[user]["auth_token"] == pw:
            owner = user
        elif user in self.twilio_keys and self.twilio_keys[user][0] == pw:
            owner = self.twilio_keys[user][1]
        if owner is None:
            self.stats_tokens["twilio"]["api_unauthorized"] += 1
            fail(twilio_err(401, 20003, "Authenticate",
                            "unknown AccountSid/API key or wrong AuthToken/secret", headers=hdr))
        if owner != sid:
            fail(twilio_err(401, 20003, "Authenticate",
                            f"credentials belong to {owner}, the URL names account {sid}",
                            headers=hdr))
        if req.ctype != "application/x-www-form-urlencoded":
            fail(twilio_err(400, 21604, "A 'To' phone number is required.",
                            "Twilio reads form parameters only: Content-Type must be "
                            f"application/x-www-form-urlencoded, got {req.ctype or 'none'!r}"))
        form = req.form()
        acct = self.twilio_accounts[sid]

        def one(name):
            v = form.get(name)
            if v and len(v) > 1:
                fail(twilio_err(400, 21600, f"Parameter {name} given more than once"))
            return v[0] if v else None

        to, frm, svc, text = one("To"), one("From"), one("MessagingServiceSid"), one("Body")
        media = form.get("MediaUrl") or []
        lower = [k for k in form if k.lower() in ("to", "from", "body", "mediaurl") and
                 k not in ("To", "From", "Body", "MediaUrl")]
        if lower:
            fail(twilio_err(400, 21604 if "to" in [x.lower() for x in lower] else 21600,
                            "A 'To' phone number is required.",
                            f"parameter names are case-sensitive: got {lower}, expected To, From, "
                            "Body, MediaUrl"))
        if not to:
            fail(twilio_err(400, 21604, "A 'To' phone number is required."))
        to_wa = to.startswith("whatsapp:")
        if not E164_RE.match(to[9:] if to_wa else to):
            fail(twilio_err(400, 21211, f"Invalid 'To' Phone Number: {to}",
                            "To must be E.164 (+14155550123) or whatsapp:+14155550123"))
        if not frm and not svc:
            fail(twilio_err(400, 21603, "A 'From' phone number is required.",
                            "From or MessagingServiceSid is required"))
        if svc is not None and not re.match(r"^MG[0-9a-fA-F]{32}$", svc):
            fail(twilio_err(400, 21701, f"The Messaging Service Sid {svc} is invalid."))
        if svc is not None and acct["services"] and svc not in acct["services"]:
            fail(twilio_err(400, 21701, f"The Messaging Service Sid {svc} is invalid.",
                            "MessagingServiceSid is not one registered for this account"))
        if frm:
            frm_wa = frm.startswith("whatsapp:")
            bare = frm[9:] if frm_wa else frm
            if not (E164_RE.match(bare) or (not frm_wa and ALNUM_SENDER_RE.match(frm))):
                fail(twilio_err(400, 21212, f"Invalid From Number (caller ID): {frm}"))
            if frm_wa != to_wa:
                fail(twilio_err(400, 21910, "Invalid From and To pair. From and To should be of "
                                "the same channel",
                                "WhatsApp needs whatsapp: on both To and From"))
            if acct["numbers"] and frm not in acct["numbers"] and bare not in acct["numbers"]:
                if frm_wa:
                    fail(twilio_err(400, 63007, "Twilio could not find a Channel with the "
                                    f"specified From address: {frm}"))
                fail(twilio_err(400, 21606, f"The From phone number {frm} is not a valid, "
                                "SMS-capable inbound phone number or short code for your account."))
        if not text and not media:
            fail(twilio_err(400, 21619, "A text message body or media urls must be specified."))
        if text and len(text) > 1600:
            fail(twilio_err(400, 21617, "The concatenated message body exceeds the 1600 character "
                            "limit."))
        for u in media:
            if not re.match(r"^https?://[^\s/]+", u):
                fail(twilio_err(400, 21620, f"Invalid media URL(s): {u}"))
        if len(media) > 10:
            fail(twilio_err(400, 21623, "Too many media URLs: at most 10 are allowed"))
        msid = "SM" + uuid.uuid4().hex if not media else "MM" + uuid.uuid4().hex
        now = rfc2822()
        text = text or ""
        segs = max(1, math.ceil(len(text) / 153)) if len(text) > 160 else 1
        msg = {"account_sid": sid, "api_version": "2010-04-01", "body": text,
               "date_created": now, "date_sent": None, "date_updated": now,
               "direction": "outbound-api", "error_code": None, "error_message": None,
               "from": frm, "messaging_service_sid": svc, "num_media": str(len(media)),
               "num_segments": str(segs), "price": None, "price_unit": "USD", "sid": msid,
               "status": "queued" if frm else "accepted", "to": to,
               "uri": f"/2010-04-01/Accounts/{sid}/Messages/{msid}.json",
               "subresource_uris": {
                   "media": f"/2010-04-01/Accounts/{sid}/Messages/{msid}/Media.json",
                   "feedback": f"/2010-04-01/Accounts/{sid}/Messages/{msid}/Feedback.json"}}
        stored = dict(msg, media_urls=list(media), status_callback=one("StatusCallback"))
        self.objects["twilio"]["messages"].append(stored)
        return Reply(201, msg)

    # ---- Meta ------------------------------------------------------------------------------

    def meta_token_of(self, req):
        tok = req.q("access_token")             # query parameter, Bearer header or form field
        if tok is None:
            tok = req.bearer()
        if tok is None and req.ctype == "application/x-www-form-urlencoded":
            tok = req.f("access_token")
        hdr = [("WWW-Authenticate", 'OAuth "Facebook Platform" "invalid_token" '
                                    '"Invalid OAuth access token"')]
        if not tok:
            fail(meta_err(400, 2500, "An active access token must be used to query information "
                          "about the current user.", headers=hdr,
                          reason="access_token query parameter or Authorization: Bearer missing"))
        a, why = self.check_access("meta", tok)
        if why == "expired":
            self.stats_tokens["meta"]["api_unauthorized"] += 1
            fail(meta_err(400, 190, "Error validating access token: Session has expired.",
                          subcode=463, headers=hdr, reason="access token expired"))
        if why:
            self.stats_tokens["meta"]["api_unauthorized"] += 1
            fail(meta_err(400, 190, "Invalid OAuth access token - Cannot parse access token",
                          headers=hdr, reason=f"access token is {why}"))
        return a

    def meta_send_h(self, req, m):
        page = m.group("page")
        a = self.meta_token_of(req)
        if page not in a.grant.tenants or a.grant.kind != "page":
            fail(meta_err(400, 100, f"Unsupported post request. Object with ID '{page}' does not "
                          "exist, cannot be loaded due to missing permissions, or does not "
                          "support this operation.", etype="GraphMethodException", subcode=33,
                          reason="the token is not a Page access token for this page id "
                                 f"(token pages: {a.grant.tenants}, kind {a.grant.kind})"))
        if req.ctype == "application/json":
            try:
                body = req.json()
            except ValueError as e:
                fail(meta_err(400, 100, "(#100) Invalid JSON body", etype="OAuthException",
                              reason=str(e)))
            if not isinstance(body, dict):
                fail(meta_err(400, 100, "(#100) The body must be a JSON object"))
        elif req.ctype == "application/x-www-form-urlencoded":
            body = {}
            for k, v in req.form().items():
                if k == "access_token":
                    continue
                try:
                    body[k] = json.loads(v[0]) if k in ("recipient", "message") else v[0]
                except ValueError:
                    fail(meta_err(400, 100, f"(#100) param {k} must be a JSON object"))
        else:
            fail(meta_err(400, 100, "(#100) The parameter recipient is required",
                          reason=f"Content-Type must be application/json, got {req.ctype or 'none'!r}"))
        rec = body.get("recipient")
        if not isinstance(rec, dict) or not is_str(rec.get("id")):
            fail(meta_err(400, 100, "(#100) The parameter recipient is required",
                          reason="recipient must be {\"id\": \"<PSID>\"}"))
        mt = body.get("messaging_type")
        if mt is None:
            fail(meta_err(400, 100, "(#100) The parameter messaging_type is required",
                          reason="messaging_type is required (RESPONSE, UPDATE or MESSAGE_TAG)"))
        if mt not in ("RESPONSE", "UPDATE", "MESSAGE_TAG"):
            fail(meta_err(400, 100, f"(#100) Param messaging_type must be one of {{RESPONSE, "
                          f"UPDATE, MESSAGE_TAG}} - got \"{mt}\""))
        tag = body.get("tag")
        tags = ("CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE", "HUMAN_AGENT")
        if mt == "MESSAGE_TAG" and tag not in tags:
            fail(meta_err(400, 100, "(#100) Tag is required for MESSAGE_TAG messaging type",
                          reason=f"tag must be one of {tags} with messaging_type MESSAGE_TAG"))
        if mt != "MESSAGE_TAG" and tag is not None:
            fail(meta_err(400, 100, "(#100) tag may only be sent with messaging_type MESSAGE_TAG"))
        msg = body.get("message")
        if not isinstance(msg, dict):
            fail(meta_err(400, 100, "(#100) The parameter message is required",
                          reason="message must be {\"text\": \"...\"}"))
        text = msg.get("text")
        if text is None and "attachment" not in msg:
            fail(meta_err(400, 100, "(#100) Must send either message or state",
                          reason="message.text (or message.attachment) is required"))
        if text is not None:
            if not is_str(text):
                fail(meta_err(400, 100, "(#100) Param message[text] must be a non-empty UTF-8 "
                              "encoded string"))
            if len(text) > 2000:
                fail(meta_err(400, 100, "(#100) Length of param message[text] must be less than "
                              "or equal to 2000"))
        allowed = self.meta_recipients.get(page)
        if allowed and rec["id"] not in allowed:
            fail(meta_err(400, 100, "(#100) No matching user found", subcode=2018001))
        mid = "m_" + secrets.token_urlsafe(32)
        self.objects["meta"]["messages"].append({"page_id": page, "recipient_id": rec["id"],
                                                 "messaging_type": mt, "tag": tag, "message": msg,
                                                 "message_id": mid})
        return Reply(200, {"recipient_id": rec["id"], "message_id": mid})

    def meta_accounts_h(self, req, m):
        a = self.meta_token_of(req)
        data = []
        short = a.grant.kind == "user" and a.grant.ttl is not None and a.grant.ttl <= META_SHORT_TTL
        if short:
            self.stats_tokens["meta"]["short_lived_page_tokens"] += 1
        if a.grant.kind == "user":
            for tok, x in list(self.access["meta"].items()):
                if x.grant.kind == "page" and x.expires_at is None and \
                        any(p in a.grant.tenants for p in x.grant.tenants):
                    if short:   # a Page token that dies with the short-lived user token
                        g = Grant("meta", x.grant.client_id, x.grant.tenants, x.grant.scope,
                                  "page", META_SHORT_TTL, False, 0, x.grant.name)
                        tok, _, _ = self.issue(g, with_refresh=False)
                    for p in x.grant.tenants:
                        data.append({"access_token": tok, "category": "Local business",
                                     "id": p, "name": x.grant.name or f"Page {p}",
                                     "tasks": ["ANALYZE", "ADVERTISE", "MESSAGING", "MODERATE",
                                               "CREATE_CONTENT", "MANAGE"]})
        return Reply(200, {"data": data, "paging": {"cursors": {"before": "MAZDZD",
                                                                "after": "MAZDZD"}}})


# --------------------------------------------------------------------------------------------
# HTTP server

def _log(line):
    try:
        os.write(2, (line + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hookflow-fake-platforms/1"
    sys_version = ""
    timeout = 120

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, fmt, *args):  # the default access log is replaced by _log lines
        pass

    def log_error(self, fmt, *args):
        _log("fake_platforms: " + (fmt % args))

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("EOF in chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        n = self.headers.get("Content-Length")
        if n:
            n = int(n)
            if n < 0 or n > 64 * 1024 * 1024:
                raise ValueError("bad Content-Length")
            return self.rfile.read(n) if n else b""
        return b""

    def _send(self, reply, req=None):
        lines = [f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0] or 'Status'}",
                 f"Date: {http_date()}", f"Server: {self.server_version}",
                 f"Content-Length: {len(reply.data)}"]
        if reply.ctype:
            lines.append(f"Content-Type: {reply.ctype}")
        for k, v in reply.headers:
            lines.append(f"{k}: {v}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        data = head if self.command == "HEAD" else head + reply.data
        self.wfile.write(data)

    def _handle(self):
        t0 = time.perf_counter()
        fake = self.server.fake
        try:
            body = self._read_body()
        except (ValueError, ConnectionError) as e:
            self.close_connection = True
            self._send(Reply(400, {"error": "bad_request", "fake_reason": f"unreadable body: {e}"}))
            return
        peer = self.client_address
        req = Request(self.command, self.path, self.headers.items(), body,
                      f"{peer[0]}:{peer[1]}" if peer else "")
        if req.path == "/_control" or req.path.startswith("/_control/"):
            with fake.lock:
                try:
                    reply = fake.control(req)
                except Exception:  # noqa: BLE001 - report, never kill the thread
                    reply = Reply(500, {"error": "fake_bug", "fake_reason": traceback.format_exc()})
            self._send(reply)
            return
        with fake.lock:
            fault = fake.take_fault(req)
        if fault is not None and fault.delay_ms:
            time.sleep(fault.delay_ms / 1000.0)
        reply = None
        dropped = False
        with fake.lock:
            if fault is not None and not fault.after and (fault.drop or fault.status is not None):
                if fault.drop:
                    dropped = True
                else:
                    r = fake.route(req)
                    if not isinstance(r, Reply):
                        req.endpoint = f"{req.method} {r[2]}"
                    reply = fault.reply(req.provider)
            else:
                try:
                    reply = fake.dispatch(req)
                except Exception:  # noqa: BLE001
                    reply = Reply(500, {"error": "fake_bug", "fake_reason": traceback.format_exc()})
                    _log(traceback.format_exc())
                if fault is not None and fault.after:
                    if fault.drop:
                        dropped = True
                    elif fault.status is not None:
                        reply = fault.reply(req.provider)
            fake.record(req, reply, fault=fault, dropped=dropped,
                        duration=time.perf_counter() - t0)
        if dropped:
            _log(f"{req.client} {req.method} {req.path} DROPPED (fault)")
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if req.headers.get("connection", "").lower() == "close":
            self.close_connection = True
        self._send(reply, req)
        _log(f"{req.client} {req.method} {req.raw_path} {reply.status} "
             f"{(time.perf_counter() - t0) * 1000:.1f}ms{' fault' if fault else ''}")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 4096
    block_on_close = False

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            return
        _log(f"fake_platforms: error serving {client_address}: {traceback.format_exc()}")


def main(argv=None):
    ap = argparse.ArgumentParser(description="fake Xero/QuickBooks/HubSpot/Klaviyo/Twilio/Meta")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the bound port here (atomically)")
    ap.add_argument("--max-requests", type=int, default=100000,
                    help="how many received requests /_control/requests keeps")
    args = ap.parse_args(argv)

    server = Server((args.host, args.port), Handler)
    server.fake = Fake(max_requests=args.max_requests)
    port = server.server_address[1]
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    _log(f"fake_platforms: listening on http://{args.host}:{port} (pid {os.getpid()})")

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    t.start()
    while not stop.wait(0.5):
        if not t.is_alive():
            _log("fake_platforms: server thread died")
            return 1
    server.shutdown()
    server.server_close()
    _log("fake_platforms: stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
