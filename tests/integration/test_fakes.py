"""test_fakes: the fake platforms (tests/fakes/fake_platforms.py) reject what the real platforms
would reject, accept what they accept, dedupe idempotent retries, rotate refresh tokens, apply
faults exactly `count` times, and keep up with benchmark load.

Needs only HOOKFLOW_SOURCE_DIR (no build):

    cd tests/integration && HOOKFLOW_SOURCE_DIR=$PWD/../.. \\
        /usr/bin/python3 -m pytest -q -p no:cacheprovider test_fakes.py
"""

import base64
import http.client
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse

import pytest

import harness

sys.path.insert(0, os.path.join(harness.source_dir(), "tests", "fakes"))
from fakes import FakePlatforms, FakeError  # noqa: E402

TENANT = "4d1bc1a7-2f9e-4c3b-9a51-0d6e7f8a9b10"
CONTACT = "6d3f0a2b-91c4-4e7f-8b25-3c1e9a7d5f60"
REALM = "9130355283210836"
ACCOUNT = "AC" + "0123456789abcdef" * 2
TW_TOKEN = "twilio-auth-token"
PAGE = "104857362981245"
PSID = "6523918047715832"
FORM = "application/x-www-form-urlencoded"
JSONAPI = "application/vnd.api+json"


@pytest.fixture(scope="module")
def fake():
    fp = FakePlatforms.start(harness.logs_dir())
    yield fp
    code = fp.stop()
    assert code == 0, f"fake_platforms exited {code} after SIGTERM:\n{fp.log_tail()}"


@pytest.fixture
def fp(fake):
    """The shared fake, reset and loaded with one set of credentials per platform."""
    fake.reset()
    fake.tokens([
        {"provider": "xero", "access_token": "xero-at", "refresh_token": "xero-rt",
         "client_id": "xero-client", "client_secret": "xero-secret", "tenants": [TENANT]},
        {"provider": "quickbooks", "access_token": "qbo-at", "refresh_token": "qbo-rt",
         "client_id": "qbo-client", "client_secret": "qbo-secret", "realms": [REALM]},
        {"provider": "hubspot", "access_token": "hs-at", "refresh_token": "hs-rt",
         "client_id": "hs-client", "client_secret": "hs-secret", "properties": ["loyalty_tier"]},
        {"provider": "klaviyo", "access_token": "kl-at", "refresh_token": "kl-rt",
         "client_id": "kl-client", "client_secret": "kl-secret", "api_key": "pk_test_123"},
        {"provider": "twilio", "account_sid": ACCOUNT, "auth_token": TW_TOKEN},
        {"provider": "meta", "access_token": "page-token", "page_id": PAGE,
         "client_id": "meta-app", "client_secret": "meta-secret"},
    ])
    return fake


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def js(data):
    return json.loads(data) if data else None


# ------------------------------------------------------------------------------------------
# request builders (the shapes a connector must send)

def xero_headers(**over):
    h = {"Authorization": "Bearer xero-at", "Xero-Tenant-Id": TENANT,
         "Accept": "application/json", "Content-Type": "application/json"}
    h.update(over)
    return {k: v for k, v in h.items() if v is not None}


def xero_invoice(**over):
    inv = {"Type": "ACCREC", "Contact": {"ContactID": CONTACT},
           "LineItems": [{"Description": "Wash & fold", "Quantity": 2, "UnitAmount": 10.5,
                          "AccountCode": "200"}]}
    inv.update(over)
    return {"Invoices": [inv]}


def put_invoice(fp, body=None, **hdr):
    s, h, d = fp.call("PUT", "/xero/api.xro/2.0/Invoices",
                      xero_invoice() if body is None else body, xero_headers(**hdr))
    return s, h, js(d)


def qbo_headers(**over):
    h = {"Authorization": "Bearer qbo-at", "Accept": "application/json",
         "Content-Type": "application/json"}
    h.update(over)
    return {k: v for k, v in h.items() if v is not None}


def sales_receipt(**over):
    b = {"Line": [{"DetailType": "SalesItemLineDetail", "Amount": 25.0, "Description": "Dry clean",
                   "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": 2, "UnitPrice": 12.5}}],
         "CustomerRef": {"value": "58"}}
    b.update(over)
    return b


def hs_headers(**over):
    h = {"Authorization": "Bearer hs-at", "Content-Type": "application/json"}
    h.update(over)
    return {k: v for k, v in h.items() if v is not None}


def kl_headers(**over):
    h = {"Authorization": "Bearer kl-at", "revision": "2026-01-15", "Content-Type": JSONAPI,
         "Accept": JSONAPI}
    h.update(over)
    return {k: v for k, v in h.items() if v is not None}


def kl_event(**attrs):
    a = {"properties": {"coupon": "SPRING20"},
         "metric": {"data": {"type": "metric", "attributes": {"name": "Coupon Redeemed"}}},
         "profile": {"data": {"type": "profile", "attributes": {"email": "dana@example.com"}}}}
    a.update(attrs)
    return {"data": {"type": "event", "attributes": {k: v for k, v in a.items() if v is not None}}}


def tw_path(sid=ACCOUNT):
    return f"/twilio/2010-04-01/Accounts/{sid}/Messages.json"


def tw_send(fp, params, auth=None, ctype=FORM, sid=ACCOUNT):
    body = urllib.parse.urlencode(params, doseq=True)
    h = {"Authorization": auth or basic(ACCOUNT, TW_TOKEN)}
    if ctype:
        h["Content-Type"] = ctype
    s, hd, d = fp.call("POST", tw_path(sid), body, h)
    return s, hd, js(d)


def meta_msg(**over):
    b = {"recipient": {"id": PSID}, "messaging_type": "RESPONSE",
         "message": {"text": "Your order is ready for pickup"}}
    b.update(over)
    return {k: v for k, v in b.items() if v is not None}


def meta_send(fp, body=None, token="page-token", page=PAGE, headers=None):
    q = f"?access_token={token}" if token else ""
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    s, hd, d = fp.call("POST", f"/meta/v25.0/{page}/messages{q}",
                       meta_msg() if body is None else body, h)
    return s, hd, js(d)


def token_call(fp, provider, form, auth=None, ctype=FORM, path=None):
    h = {"Content-Type": ctype} if ctype else {}
    if auth:
        h["Authorization"] = auth
    s, _, d = fp.call("POST", path or f"/{provider}/token", urllib.parse.urlencode(form), h)
    return s, js(d)


# ------------------------------------------------------------------------------------------
# the client library and the control API

def test_env_points_every_connector_at_the_fake(fp):
    env = fp.env()
    assert env["HOOKFLOW_CONNECTOR_XERO_BASE_URL"] == f"{fp.url}/xero"
    assert env["HOOKFLOW_CONNECTOR_XERO_TOKEN_URL"] == f"{fp.url}/xero/token"
    assert env["HOOKFLOW_CONNECTOR_META_TOKEN_URL"] == f"{fp.url}/meta/v25.0/oauth/access_token"
    assert "HOOKFLOW_CONNECTOR_TWILIO_TOKEN_URL" not in env      # Twilio has no OAuth
    assert len([k for k in env if k.endswith("_BASE_URL")]) == 6
    assert fp.token_url("twilio") is None
    with pytest.raises(ValueError):
        fp.base_url("stripe")


def test_unknown_paths_get_404_json(fp):
    for path in ("/nope", "/xero/api.xro/2.0/Widgets", "/_control/nope", "/hubspot/crm/v3/x"):
        s, h, d = fp.call("POST", path, b"{}", {"Content-Type": "application/json"})
        assert s == 404, path
        assert h["content-type"].startswith("application/json")
        assert js(d)["fake_reason"]


def test_wrong_method_is_rejected(fp):
    s, h, d = fp.call("GET", "/xero/api.xro/2.0/Invoices", None, xero_headers())
    assert s == 405 and "PUT" in h["allow"]
    s, _, _ = fp.call("GET", "/hubspot/crm/v3/objects/contacts/batch/upsert", None, hs_headers())
    assert s == 405


def test_requests_are_recorded_in_order_with_details(fp):
    put_invoice(fp, **{"Idempotency-Key": "rec-1"})
    tw_send(fp, {"To": "+14155550123", "From": "+14155559876", "Body": "hi"})
    fp.call("POST", "/nope", b"x", {})
    all_ = fp.requests()
    assert [r["provider"] for r in all_] == ["xero", "twilio", "nope"]
    assert [r["seq"] for r in all_] == sorted(r["seq"] for r in all_)
    x = fp.requests("xero")
    assert len(x) == 1
    r = x[0]
    assert r["method"] == "PUT" and r["path"] == "/xero/api.xro/2.0/Invoices"
    assert r["headers"]["xero-tenant-id"] == TENANT
    assert r["headers"]["idempotency-key"] == "rec-1"
    assert r["json"]["Invoices"][0]["Type"] == "ACCREC"
    assert r["status"] == 200 and r["fault"] is False and r["endpoint"]
    assert js(r["response"])["Invoices"][0]["InvoiceNumber"] == "INV-0001"
    t = fp.requests("twilio")[0]
    assert t["form"] == {"To": "+14155550123", "From": "+14155559876", "Body": "hi"}
    assert fp.requests(path=r"Messages\.json$")[0]["provider"] == "twilio"
    assert fp.requests(since=all_[1]["seq"])[0]["provider"] == "nope"


def test_reset_forgets_everything(fp):
    put_invoice(fp)
    fp.reset()
    assert fp.requests() == []
    assert fp.stats()["total_requests"] == 0
    s, _, _ = put_invoice(fp)
    assert s == 401                                  # the tokens are gone too


def test_control_api_rejects_bad_specs(fp):
    with pytest.raises(FakeError):
        fp.tokens("stripe", access_token="x")
    with pytest.raises(FakeError):
        fp.fault("xero", path="(", status=500)
    with pytest.raises(FakeError):
        fp.fault("xero")                             # nothing to do


# ------------------------------------------------------------------------------------------
# Xero

def test_xero_creates_an_invoice(fp):
    s, h, b = put_invoice(fp)
    assert s == 200, b
    inv = b["Invoices"][0]
    assert re.fullmatch(r"[0-9a-f-]{36}", inv["InvoiceID"])
    assert inv["InvoiceNumber"] == "INV-0001" and inv["Status"] == "DRAFT"
    assert inv["Total"] == 21.0 and inv["AmountDue"] == 21.0
    assert inv["Contact"]["ContactID"] == CONTACT
    assert b["Status"] == "OK"
    s, _, b = put_invoice(fp, xero_invoice(Status="AUTHORISED", Reference="Branch 3"))
    assert s == 200 and b["Invoices"][0]["InvoiceNumber"] == "INV-0002"
    assert fp.stats()["created"]["xero"]["invoices"] == 2


def test_xero_rejects_missing_or_bad_auth(fp):
    s, h, b = put_invoice(fp, Authorization=None)
    assert s == 401 and b["Title"] == "Unauthorized"
    assert "invalid_token" in h["www-authenticate"]
    s, _, b = put_invoice(fp, Authorization="Bearer nope")
    assert s == 401
    s, _, b = put_invoice(fp, Authorization="Basic eGVybzp4")
    assert s == 401
    fp.expire("xero", access_token="xero-at")
    s, _, b = put_invoice(fp)
    assert s == 401 and b["Detail"].startswith("TokenExpired")
    assert fp.stats()["created"]["xero"] == {}


def test_xero_requires_a_tenant_of_the_token(fp):
    s, _, b = put_invoice(fp, **{"Xero-Tenant-Id": None})
    assert s == 403 and "Xero-Tenant-Id" in b["fake_reason"]
    s, _, b = put_invoice(fp, **{"Xero-Tenant-Id": "00000000-0000-0000-0000-000000000000"})
    assert s == 403 and "not a tenant" in b["fake_reason"]
    # a tenant connected to a different token is still wrong for this token
    fp.tokens("xero", access_token="other-at", tenants=["other-tenant"])
    s, _, _ = put_invoice(fp, **{"Xero-Tenant-Id": "other-tenant"})
    assert s == 403
    s, _, _ = put_invoice(fp, Authorization="Bearer other-at", **{"Xero-Tenant-Id": "other-tenant"})
    assert s == 200


def test_xero_checks_content_type_and_accept(fp):
    s, _, b = put_invoice(fp, **{"Content-Type": "text/plain"})
    assert s == 415 and "application/json" in b["fake_reason"]
    s, _, b = put_invoice(fp, Accept=None)
    assert s == 406 and "XML" in b["fake_reason"]
    s, _, b = put_invoice(fp, **{"Content-Type": "application/json; charset=utf-8"})
    assert s == 200


@pytest.mark.parametrize("body,expect", [
    ({"Type": "ACCREC"}, "Invoices"),                                   # not wrapped
    ({"Invoices": []}, "non-empty"),
    (xero_invoice(Type=None), "Invoice Type must be specified"),
    (xero_invoice(Type="SALE"), "Invoice Type"),
    (xero_invoice(Contact={}), "A Contact must be specified"),
    (xero_invoice(Contact={"ContactID": "42"}), "GUID"),
    (xero_invoice(LineItems=[]), "LineItems"),
    (xero_invoice(LineItems=[{"Quantity": 1, "UnitAmount": 5}]), "Description"),
    (xero_invoice(LineItems=[{"Description": "x", "UnitAmount": "5.00"}]), "UnitAmount"),
    (xero_invoice(Status="PAID"), "Status"),
    (xero_invoice(Status="AUTHORISED", LineItems=[{"Description": "x", "UnitAmount": 5}]),
     "Account code"),
    (xero_invoice(DueDate="18/03/2026"), "DueDate"),
    (xero_invoice(CurrencyCode="nzd"), "CurrencyCode"),
])
def test_xero_rejects_bad_invoice_bodies(fp, body, expect):
    body = json.loads(json.dumps(body))
    for inv in body.get("Invoices", []) or []:
        for k in [k for k, v in inv.items() if v is None]:
            del inv[k]
    s, _, b = put_invoice(fp, body)
    assert s == 400, b
    assert b["Type"] in ("ValidationException", "PostDataInvalidException")
    assert expect in json.dumps(b), b
    if b["Type"] == "ValidationException":
        assert b["Elements"][0]["ValidationErrors"][0]["Message"]
    assert fp.stats()["created"]["xero"] == {}


def test_xero_rejects_invalid_json(fp):
    s, _, d = fp.call("PUT", "/xero/api.xro/2.0/Invoices", b"{not json", xero_headers())
    assert s == 400 and js(d)["Type"] == "PostDataInvalidException"


def test_xero_batch_is_all_or_nothing(fp):
    good = xero_invoice()["Invoices"][0]
    s, _, b = put_invoice(fp, {"Invoices": [good, dict(good, Type="NOPE")]})
    assert s == 400 and len(b["Elements"]) == 2
    assert b["Elements"][0]["ValidationErrors"] == []
    assert fp.stats()["created"]["xero"] == {}


def test_xero_idempotency_key_dedupes(fp):
    s1, _, b1 = put_invoice(fp, **{"Idempotency-Key": "payout-10045"})
    s2, _, b2 = put_invoice(fp, **{"Idempotency-Key": "payout-10045"})
    assert s1 == s2 == 200
    assert b1 == b2                                   # the stored response, byte for byte
    assert [r["replayed"] for r in fp.requests("xero")] == [False, True]
    st = fp.stats()
    assert st["created"]["xero"]["invoices"] == 1
    assert st["idempotency"]["xero"]["keys"] == 1
    assert st["idempotency"]["xero"]["replays"] == 1
    s3, _, b3 = put_invoice(fp, **{"Idempotency-Key": "payout-10046"})
    assert b3["Invoices"][0]["InvoiceID"] != b1["Invoices"][0]["InvoiceID"]
    assert fp.stats()["created"]["xero"]["invoices"] == 2
    # without a key every call creates
    put_invoice(fp)
    put_invoice(fp)
    st = fp.stats()
    assert st["created"]["xero"]["invoices"] == 4
    assert st["idempotency"]["xero"]["requests_without_key"] == 2
    # reusing a key for another body is counted (the stored response is still returned)
    s, _, b = put_invoice(fp, xero_invoice(Reference="other"), **{"Idempotency-Key": "payout-10045"})
    assert b == b1
    assert fp.stats()["idempotency"]["xero"]["key_reused_with_different_body"] == 1


def test_xero_failed_request_does_not_burn_the_key(fp):
    s, _, _ = put_invoice(fp, xero_invoice(Type="NOPE"), **{"Idempotency-Key": "k-1"})
    assert s == 400
    s, _, b = put_invoice(fp, **{"Idempotency-Key": "k-1"})
    assert s == 200 and fp.stats()["created"]["xero"]["invoices"] == 1


def test_xero_contacts_and_payments(fp):
    h = xero_headers(**{"Idempotency-Key": "c-1"})
    body = {"Contacts": [{"Name": "Harbourside Laundry Co", "EmailAddress": "a@harbour.example",
                          "FirstName": "Ana", "LastName": "Lee", "AccountNumber": "C-77",
                          "Phones": [{"PhoneType": "DEFAULT", "PhoneNumber": "555-0100"}]}]}
    s, _, d = fp.call("POST", "/xero/api.xro/2.0/Contacts", body, h)
    assert s == 200, d
    c = js(d)["Contacts"][0]
    assert c["ContactStatus"] == "ACTIVE" and re.fullmatch(r"[0-9a-f-]{36}", c["ContactID"])
    s, _, d = fp.call("POST", "/xero/api.xro/2.0/Contacts", body, xero_headers())
    assert s == 400 and "already assigned" in d.decode()
    s, _, d = fp.call("POST", "/xero/api.xro/2.0/Contacts", {"Contacts": [{"EmailAddress": "x"}]},
                      xero_headers())
    assert s == 400 and "Name is required" in d.decode()
    # payments need an AUTHORISED invoice of this tenant
    _, _, draft = put_invoice(fp, xero_invoice(Contact={"ContactID": c["ContactID"]}))
    assert draft["Invoices"][0]["Contact"]["Name"] == "Harbourside Laundry Co"
    pay = {"Payments": [{"Invoice": {"InvoiceID": draft["Invoices"][0]["InvoiceID"]},
                         "Account": {"Code": "090"}, "Amount": 21.0, "Date": "2026-03-18",
                         "Reference": "po_123"}]}
    s, _, d = fp.call("PUT", "/xero/api.xro/2.0/Payments", pay, xero_headers())
    assert s == 400 and "Authorised" in d.decode()
    _, _, auth = put_invoice(fp, xero_invoice(Status="AUTHORISED"))
    inv_id = auth["Invoices"][0]["InvoiceID"]
    pay["Payments"][0]["Invoice"]["InvoiceID"] = inv_id
    pay["Payments"][0]["Amount"] = 99.0
    s, _, d = fp.call("PUT", "/xero/api.xro/2.0/Payments", pay, xero_headers())
    assert s == 400 and "exceeds" in d.decode()
    pay["Payments"][0]["Amount"] = 21.0
    s, _, d = fp.call("PUT", "/xero/api.xro/2.0/Payments", pay,
                      xero_headers(**{"Idempotency-Key": "pay-1"}))
    assert s == 200, d
    p = js(d)["Payments"][0]
    assert p["Status"] == "AUTHORISED" and p["Invoice"]["Status"] == "PAID"
    s, _, d2 = fp.call("PUT", "/xero/api.xro/2.0/Payments", pay,
                       xero_headers(**{"Idempotency-Key": "pay-1"}))
    assert s == 200 and d2 == d
    created = fp.stats()["created"]["xero"]
    assert created == {"contacts": 1, "invoices": 2, "payments": 1}
    s, _, d = fp.call("PUT", "/xero/api.xro/2.0/Payments",
                      {"Payments": [{"Invoice": {"InvoiceID": CONTACT}, "Account": {"Code": "090"},
                                     "Amount": 1}]}, xero_headers())
    assert s == 400 and "could not be found" in d.decode()


def test_xero_connections_lists_the_tokens_tenants(fp):
    s, _, d = fp.call("GET", "/xero/connections", None, {"Authorization": "Bearer xero-at"})
    assert s == 200
    assert [c["tenantId"] for c in js(d)] == [TENANT]


# ------------------------------------------------------------------------------------------
# OAuth token endpoints

def test_xero_refresh_rotates_tokens(fp):
    auth = basic("xero-client", "xero-secret")
    s, b = token_call(fp, "xero", {"grant_type": "refresh_token", "refresh_token": "xero-rt"}, auth)
    assert s == 200, b
    assert b["token_type"] == "Bearer" and b["expires_in"] == 1800
    assert b["access_token"] not in ("xero-at", "") and b["refresh_token"] not in ("xero-rt", "")
    # the new access token works (same tenants); the old refresh token is spent
    s, _, _ = put_invoice(fp, Authorization=f"Bearer {b['access_token']}")
    assert s == 200
    s, e = token_call(fp, "xero", {"grant_type": "refresh_token", "refresh_token": "xero-rt"}, auth)
    assert s == 400 and e["error"] == "invalid_grant"
    # the new refresh token works once more, and rotates again
    s, b2 = token_call(fp, "xero", {"grant_type": "refresh_token",
                                    "refresh_token": b["refresh_token"]}, auth)
    assert s == 200 and b2["refresh_token"] != b["refresh_token"]
    t = fp.stats()["tokens"]["xero"]
    assert t["refreshed"] == 2 and t["refresh_reused"] == 1


def test_xero_refresh_grace_window(fp):
    fp.tokens("xero", refresh_token="grace-rt", client_id="xero-client",
              client_secret="xero-secret", tenants=[TENANT], refresh_grace_s=60)
    auth = basic("xero-client", "xero-secret")
    for _ in range(2):
        s, _ = token_call(fp, "xero", {"grant_type": "refresh_token", "refresh_token": "grace-rt"},
                          auth)
        assert s == 200
    fp.advance_clock(61)
    s, e = token_call(fp, "xero", {"grant_type": "refresh_token", "refresh_token": "grace-rt"}, auth)
    assert s == 400 and e["error"] == "invalid_grant"


def test_xero_token_endpoint_checks_client_auth_and_form(fp):
    form = {"grant_type": "refresh_token", "refresh_token": "xero-rt"}
    s, e = token_call(fp, "xero", form)                                    # no client auth
    assert s == 401 and e["error"] == "invalid_client"
    s, e = token_call(fp, "xero", dict(form, client_id="xero-client", client_secret="xero-secret"))
    assert s == 401 and "Basic" in e["error_description"]                  # secret in the body
    s, e = token_call(fp, "xero", form, basic("xero-client", "wrong"))
    assert s == 401 and e["error"] == "invalid_client"
    s, e = token_call(fp, "xero", form, basic("xero-client", "xero-secret"), ctype="application/json")
    assert s == 400 and e["error"] == "invalid_request"
    s, e = token_call(fp, "xero", {"grant_type": "password"}, basic("xero-client", "xero-secret"))
    assert s == 400 and e["error"] == "unsupported_grant_type"
    s, e = token_call(fp, "xero", {"grant_type": "refresh_token", "refresh_token": "nope"},
                      basic("xero-client", "xero-secret"))
    assert s == 400 and e["error"] == "invalid_grant"
    # none of that spent the refresh token
    s, _ = token_call(fp, "xero", form, basic("xero-client", "xero-secret"))
    assert s == 200


def test_xero_authorization_code_with_pkce(fp):
    fp.tokens("xero", code="auth-code-1", redirect_uri="https://app.example/cb",
              code_verifier="v" * 50, client_id="xero-client", client_secret="xero-secret",
              tenants=[TENANT])
    auth = basic("xero-client", "xero-secret")
    base = {"grant_type": "authorization_code", "code": "auth-code-1",
            "redirect_uri": "https://app.example/cb", "code_verifier": "v" * 50}
    s, e = token_call(fp, "xero", dict(base, redirect_uri="https://evil.example/cb"), auth)
    assert s == 400 and e["error"] == "invalid_grant"
    s, e = token_call(fp, "xero", dict(base, code_verifier="w" * 50), auth)
    assert s == 400 and e["error"] == "invalid_grant"
    s, b = token_call(fp, "xero", base, auth)
    assert s == 200 and b["refresh_token"] and b["expires_in"] == 1800
    s, _, _ = put_invoice(fp, Authorization=f"Bearer {b['access_token']}")
    assert s == 200
    s, e = token_call(fp, "xero", base, auth)                            # codes are single-use
    assert s == 400 and e["error"] == "invalid_grant"


def test_expired_access_token_then_refresh(fp):
    fp.advance_clock(1801)                     # past xero-at's 30 minutes
    s, _, b = put_invoice(fp)
    assert s == 401 and "TokenExpired" in b["Detail"]
    s, t = token_call(fp, "xero", {"grant_type": "refresh_token", "refresh_token": "xero-rt"},
                      basic("xero-client", "xero-secret"))
    s, _, _ = put_invoice(fp, Authorization=f"Bearer {t['access_token']}")
    assert s == 200


def test_quickbooks_token_refresh(fp):
    s, b = token_call(fp, "quickbooks", {"grant_type": "refresh_token", "refresh_token": "qbo-rt"},
                      basic("qbo-client", "qbo-secret"))
    assert s == 200 and b["token_type"] == "bearer" and b["expires_in"] == 3600
    assert b["x_refresh_token_expires_in"] > 0 and b["refresh_token"] != "qbo-rt"
    s, _ = token_call(fp, "quickbooks", {"grant_type": "refresh_token", "refresh_token": "qbo-rt"},
                      basic("qbo-client", "qbo-secret"))
    assert s == 400
    # the real token path works too
    s, _ = token_call(fp, "quickbooks", {"grant_type": "refresh_token",
                                         "refresh_token": b["refresh_token"]},
                      basic("qbo-client", "qbo-secret"), path="/quickbooks/oauth2/v1/tokens/bearer")
    assert s == 200


def test_hubspot_token_takes_credentials_in_the_body(fp):
    form = {"grant_type": "refresh_token", "client_id": "hs-client", "client_secret": "hs-secret",
            "refresh_token": "hs-rt"}
    s, b = token_call(fp, "hubspot", form)
    assert s == 200 and b["expires_in"] == 1800
    assert b["refresh_token"] == "hs-rt"             # HubSpot does not rotate refresh tokens
    s, b2 = token_call(fp, "hubspot", form)
    assert s == 200 and b2["access_token"] != b["access_token"]
    s, e = token_call(fp, "hubspot", {"grant_type": "refresh_token", "refresh_token": "hs-rt"},
                      basic("hs-client", "hs-secret"))
    assert s == 400 and e["status"] == "BAD_CLIENT_ID"
    s, e = token_call(fp, "hubspot", dict(form, client_secret="x"))
    assert s == 400 and e["status"] == "BAD_CLIENT_SECRET"
    s, e = token_call(fp, "hubspot", dict(form, refresh_token="x"))
    assert s == 400 and e["status"] == "BAD_REFRESH_TOKEN"


def test_klaviyo_token_basic_auth_and_pkce(fp):
    s, b = token_call(fp, "klaviyo", {"grant_type": "refresh_token", "refresh_token": "kl-rt"},
                      basic("kl-client", "kl-secret"))
    assert s == 200 and b["token_type"] == "Bearer" and b["expires_in"] == 3600
    fp.tokens("klaviyo", code="kc", redirect_uri="https://app.example/cb",
              client_id="kl-client", client_secret="kl-secret")
    form = {"grant_type": "authorization_code", "code": "kc",
            "redirect_uri": "https://app.example/cb"}
    s, e = token_call(fp, "klaviyo", form, basic("kl-client", "kl-secret"))
    assert s == 400 and "code_verifier" in e["error_description"]
    s, b = token_call(fp, "klaviyo", dict(form, code_verifier="x" * 43),
                      basic("kl-client", "kl-secret"))
    assert s == 200
    s, _, _ = fp.call("POST", "/klaviyo/api/events", kl_event(),
                      kl_headers(Authorization=f"Bearer {b['access_token']}"))
    assert s == 202


def test_meta_token_exchange(fp):
    fp.tokens("meta", access_token="short-user-token", pages=[PAGE], expires_in=3600,
              client_id="meta-app", client_secret="meta-secret")
    q = urllib.parse.urlencode({"grant_type": "fb_exchange_token", "client_id": "meta-app",
                                "client_secret": "meta-secret",
                                "fb_exchange_token": "short-user-token"})
    s, _, d = fp.call("GET", f"/meta/v25.0/oauth/access_token?{q}")
    b = js(d)
    assert s == 200 and b["token_type"] == "bearer" and b["expires_in"] > 5_000_000
    s, _, d = fp.call("GET", "/meta/v25.0/me/accounts", None,
                      {"Authorization": f"Bearer {b['access_token']}"})
    pages = js(d)["data"]
    assert s == 200 and pages[0]["id"] == PAGE and pages[0]["access_token"] == "page-token"
    bad = q.replace("meta-secret", "nope")
    s, _, d = fp.call("GET", f"/meta/v25.0/oauth/access_token?{bad}")
    assert s == 400 and js(d)["error"]["type"] == "OAuthException"
    fp.tokens("meta", code="mc", redirect_uri="https://app.example/cb", client_id="meta-app",
              client_secret="meta-secret", pages=[PAGE])
    q = urllib.parse.urlencode({"client_id": "meta-app", "client_secret": "meta-secret",
                                "redirect_uri": "https://app.example/cb", "code": "mc"})
    s, _, d = fp.call("GET", f"/meta/v25.0/oauth/access_token?{q}")
    assert s == 200 and js(d)["access_token"]


# ------------------------------------------------------------------------------------------
# QuickBooks

def qbo_post(fp, body=None, kind="salesreceipt", realm=REALM, query="?minorversion=75", **hdr):
    s, h, d = fp.call("POST", f"/quickbooks/v3/company/{realm}/{kind}{query}",
                      sales_receipt() if body is None else body, qbo_headers(**hdr))
    return s, h, js(d)


def test_quickbooks_creates_a_sales_receipt_and_dedupes_requestid(fp):
    s, _, b = qbo_post(fp, query="?minorversion=75&requestid=payout-77")
    assert s == 200, b
    sr = b["SalesReceipt"]
    assert sr["Id"] and sr["SyncToken"] == "0" and sr["TotalAmt"] == 25.0 and "time" in b
    s, _, b2 = qbo_post(fp, query="?requestid=payout-77&minorversion=75")
    assert b2 == b
    st = fp.stats()
    assert st["created"]["quickbooks"]["salesreceipts"] == 1
    assert st["idempotency"]["quickbooks"]["replays"] == 1
    s, _, b3 = qbo_post(fp, query="?minorversion=75&requestid=payout-78")
    assert b3["SalesReceipt"]["Id"] != sr["Id"]
    # walk-in sales receipts need no customer
    body = sales_receipt()
    del body["CustomerRef"]
    s, _, _ = qbo_post(fp, body)
    assert s == 200


def test_quickbooks_invoice(fp):
    body = sales_receipt(DueDate="2026-04-17", BillEmail={"Address": "a@b.example"})
    s, _, b = qbo_post(fp, body, kind="invoice", query="?requestid=inv-1")
    assert s == 200 and b["Invoice"]["Balance"] == 25.0
    del body["CustomerRef"]
    s, _, b = qbo_post(fp, body, kind="invoice")
    assert s == 400 and b["Fault"]["Error"][0]["code"] == "2020"
    assert b["Fault"]["type"] == "ValidationFault"


def test_quickbooks_rejects_bad_requests(fp):
    s, h, b = qbo_post(fp, Authorization=None)
    assert s == 401 and b["fault"]["type"] == "AUTHENTICATION"
    s, _, b = qbo_post(fp, Authorization="Bearer nope")
    assert s == 401
    s, _, b = qbo_post(fp, realm="123")
    assert s == 403 and "realmId" in b["fake_reason"]
    s, _, b = qbo_post(fp, Accept=None)
    assert s == 406
    s, _, b = qbo_post(fp, **{"Content-Type": "application/xml"})
    assert s == 415
    s, _, b = qbo_post(fp, query="?minorversion=latest")
    assert s == 400
    s, _, b = qbo_post(fp, {"SalesReceipt": sales_receipt()})               # wrapped: wrong
    assert s == 400 and b["Fault"]["Error"][0]["code"] == "2010"
    s, _, b = qbo_post(fp, sales_receipt(Line=[]))
    assert s == 400
    s, _, b = qbo_post(fp, sales_receipt(Line=[{"DetailType": "SalesItemLineDetail",
                                                "Amount": 10,
                                                "SalesItemLineDetail": {"Qty": 1}}]))
    assert s == 400 and "ItemRef" in b["fake_reason"]
    s, _, b = qbo_post(fp, sales_receipt(Line=[{
        "DetailType": "SalesItemLineDetail", "Amount": 30,
        "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": 2, "UnitPrice": 12.5}}]))
    assert s == 400 and b["Fault"]["Error"][0]["code"] == "6070"
    s, _, b = qbo_post(fp, sales_receipt(TxnDate="18/03/2026"))
    assert s == 400
    s, _, b = qbo_post(fp, sales_receipt(CustomerRef="58"))
    assert s == 400
    assert fp.stats()["created"]["quickbooks"] == {}


# ------------------------------------------------------------------------------------------
# HubSpot

def hs_create(fp, props, **hdr):
    s, h, d = fp.call("POST", "/hubspot/crm/v3/objects/contacts", {"properties": props},
                      hs_headers(**hdr))
    return s, js(d)


def test_hubspot_create_contact_and_conflict(fp):
    s, b = hs_create(fp, {"email": "dana@example.com", "firstname": "Dana",
                          "lifecyclestage": "customer", "loyalty_tier": "gold"})
    assert s == 201, b
    assert b["id"] and b["properties"]["hs_object_id"] == b["id"] and b["archived"] is False
    assert b["createdAt"] and b["updatedAt"]
    s, e = hs_create(fp, {"email": "DANA@example.com"})
    assert s == 409 and e["category"] == "CONFLICT" and b["id"] in e["message"]
    assert fp.stats()["created"]["hubspot"]["contacts"] == 1


def test_hubspot_rejects_bad_requests(fp):
    s, e = hs_create(fp, {"email": "a@b.example"}, Authorization=None)
    assert s == 401 and e["category"] == "INVALID_AUTHENTICATION"
    fp.expire("hubspot", access_token="hs-at")
    s, e = hs_create(fp, {"email": "a@b.example"})
    assert s == 401 and e["category"] == "EXPIRED_AUTHENTICATION"
    fp.tokens("hubspot", access_token="hs-at2")
    s, e = hs_create(fp, {"email": "a@b.example"}, Authorization="Bearer hs-at2",
                     **{"Content-Type": FORM})
    assert s == 415
    s, e = hs_create(fp, {"firstname": "no email"}, Authorization="Bearer hs-at2")
    assert s == 400 and e["category"] == "VALIDATION_ERROR"
    s, e = hs_create(fp, {"email": "a@b.example", "lifecyclestage": "vip"},
                     Authorization="Bearer hs-at2")
    assert s == 400 and e["errors"][0]["code"] == "INVALID_OPTION"
    s, e = hs_create(fp, {"email": "not-an-email"}, Authorization="Bearer hs-at2")
    assert s == 400
    s, _, d = fp.call("POST", "/hubspot/crm/v3/objects/contacts", {"email": "a@b.example"},
                      hs_headers(Authorization="Bearer hs-at2"))
    assert s == 400                                   # not wrapped in "properties"


def test_hubspot_batch_upsert(fp):
    path = "/hubspot/crm/v3/objects/contacts/batch/upsert"
    inputs = [{"idProperty": "email", "id": "dana@example.com",
               "properties": {"firstname": "Dana", "lifecyclestage": "lead"}},
              {"idProperty": "email", "id": "sam@example.com", "properties": {"firstname": "Sam"}}]
    s, _, d = fp.call("POST", path, {"inputs": inputs}, hs_headers())
    b = js(d)
    assert s == 200 and b["status"] == "COMPLETE"
    assert [r["new"] for r in b["results"]] == [True, True]
    assert b["results"][0]["properties"]["email"] == "dana@example.com"
    inputs[0]["properties"]["lifecyclestage"] = "customer"
    s, _, d = fp.call("POST", path, {"inputs": inputs[:1]}, hs_headers())
    r = js(d)["results"][0]
    assert r["new"] is False and r["properties"]["lifecyclestage"] == "customer"
    assert r["id"] == b["results"][0]["id"]
    assert fp.stats()["created"]["hubspot"]["contacts"] == 2
    for bad in ({"inputs": []},
                {"inputs": [dict(inputs[0], idProperty="id")]},
                {"inputs": [dict(inputs[0], id="nope")]},
                {"inputs": [inputs[0], inputs[0]]},
                {"inputs": [dict(inputs[1], id=f"u{i}@example.com") for i in range(101)]},
                {"inputs": [{"idProperty": "email", "id": "x@example.com"}]},
                inputs):
        s, _, d = fp.call("POST", path, bad, hs_headers())
        assert s == 400, (bad, d)


# ------------------------------------------------------------------------------------------
# Klaviyo

def kl_post(fp, body=None, path="/klaviyo/api/events", **hdr):
    s, h, d = fp.call("POST", path, kl_event() if body is None else body, kl_headers(**hdr))
    return s, h, d


def test_klaviyo_accepts_an_event(fp):
    s, h, d = kl_post(fp)
    assert s == 202 and d == b"" and h["content-length"] == "0"
    s, _, d = kl_post(fp, Authorization="Klaviyo-API-Key pk_test_123")
    assert s == 202
    s, _, _ = kl_post(fp, kl_event(value=12.5, time="2026-03-18T09:41:27+00:00",
                                   unique_id="order-10045",
                                   profile={"data": {"type": "profile",
                                                     "attributes": {"phone_number": "+14155550123"}}}))
    assert s == 202
    assert fp.stats()["created"]["klaviyo"]["events"] == 3


def test_klaviyo_rejects_bad_requests(fp):
    s, _, d = kl_post(fp, Authorization=None)
    assert s == 401 and js(d)["errors"][0]["code"] == "not_authenticated"
    s, _, d = kl_post(fp, Authorization="Klaviyo-API-Key pk_wrong")
    assert s == 401 and js(d)["errors"][0]["code"] == "authentication_failed"
    s, _, d = kl_post(fp, Authorization="Bearer nope")
    assert s == 401
    s, _, d = kl_post(fp, revision=None)
    assert s == 400 and "revision" in js(d)["errors"][0]["detail"]
    s, _, d = kl_post(fp, revision="2026-13-45")
    assert s == 400
    s, _, d = kl_post(fp, **{"Content-Type": "application/json"})
    assert s == 415
    for body in (kl_event(metric=None),
                 kl_event(metric={"data": {"type": "metric", "attributes": {}}}),
                 kl_event(profile={"data": {"type": "profile", "attributes": {"first_name": "x"}}}),
                 kl_event(profile={"data": {"type": "profile",
                                            "attributes": {"phone_number": "4155550123"}}}),
                 kl_event(properties=None),
                 kl_event(value="12"),
                 kl_event(color="red"),
                 {"data": {"type": "events", "attributes": kl_event()["data"]["attributes"]}},
                 {"type": "event"}):
        s, _, d = kl_post(fp, body)
        assert s in (400, 409), (body, d)
        assert js(d)["errors"][0]["detail"]
    assert fp.stats()["created"]["klaviyo"] == {}


def test_klaviyo_unique_id_dedupes(fp):
    for _ in range(3):
        s, _, _ = kl_post(fp, kl_event(unique_id="evt-1"))
        assert s == 202
    st = fp.stats()
    assert st["created"]["klaviyo"]["events"] == 1
    assert st["idempotency"]["klaviyo"] == {"unique_ids": 1, "duplicate_unique_ids": 2}


def test_klaviyo_profile_import_upserts(fp):
    body = {"data": {"type": "profile", "attributes": {
        "email": "dana@example.com", "first_name": "Dana", "properties": {"loyalty_tier": "gold"}}}}
    s, _, d = kl_post(fp, body, path="/klaviyo/api/profile-import")
    assert s == 201
    p = js(d)["data"]
    assert p["type"] == "profile" and p["id"]
    body["data"]["attributes"] = {"email": "dana@example.com", "phone_number": "+14155550123"}
    s, _, d = kl_post(fp, body, path="/klaviyo/api/profile-import")
    assert s == 200
    p2 = js(d)["data"]
    assert p2["id"] == p["id"] and p2["attributes"]["phone_number"] == "+14155550123"
    assert p2["attributes"]["properties"] == {"loyalty_tier": "gold"}
    s, _, _ = kl_post(fp, {"data": {"type": "profile", "attributes": {"first_name": "x"}}},
                      path="/klaviyo/api/profile-import")
    assert s == 400


# ------------------------------------------------------------------------------------------
# Twilio

def test_twilio_sends_sms_and_whatsapp(fp):
    s, _, b = tw_send(fp, {"To": "+14155550123", "From": "+14155559876", "Body": "Ready!"})
    assert s == 201, b
    assert re.fullmatch(r"SM[0-9a-f]{32}", b["sid"]) and b["status"] == "queued"
    assert b["to"] == "+14155550123" and b["account_sid"] == ACCOUNT
    s, _, b = tw_send(fp, {"To": "whatsapp:+14155550123", "From": "whatsapp:+14155238886",
                           "Body": "Ready!", "MediaUrl": ["https://x.example/a.jpg",
                                                          "https://x.example/b.pdf"]})
    assert s == 201 and b["num_media"] == "2" and b["sid"].startswith("MM")
    s, _, b = tw_send(fp, {"To": "+14155550123", "MessagingServiceSid": "MG" + "a" * 32,
                           "Body": "x"})
    assert s == 201 and b["status"] == "accepted"
    msgs = fp.objects("twilio")["messages"]
    assert len(msgs) == 3 and msgs[1]["media_urls"] == ["https://x.example/a.jpg",
                                                         "https://x.example/b.pdf"]


def test_twilio_rejects_bad_requests(fp):
    ok = {"To": "+14155550123", "From": "+14155559876", "Body": "hi"}
    s, h, b = tw_send(fp, ok, auth="none")
    assert s == 401 and b["code"] == 20003
    s, h, b = fp.call("POST", tw_path(), urllib.parse.urlencode(ok), {"Content-Type": FORM})
    assert s == 401 and "Basic" in h["www-authenticate"]
    s, _, b = tw_send(fp, ok, auth=basic(ACCOUNT, "wrong"))
    assert s == 401
    fp.tokens("twilio", account_sid="AC" + "f" * 32, auth_token="other")
    s, _, b = tw_send(fp, ok, auth=basic("AC" + "f" * 32, "other"))          # not this account
    assert s == 401 and "credentials belong" in b["fake_reason"]
    s, _, d = fp.call("POST", tw_path(), json.dumps(ok),
                      {"Authorization": basic(ACCOUNT, TW_TOKEN), "Content-Type": "application/json"})
    assert s == 400 and "x-www-form-urlencoded" in js(d)["fake_reason"]
    cases = [({"From": "+14155559876", "Body": "x"}, 21604),
             ({"To": "+14155550123", "Body": "x"}, 21603),
             ({"To": "+14155550123", "From": "+14155559876"}, 21619),
             ({"To": "4155550123", "From": "+14155559876", "Body": "x"}, 21211),
             ({"To": "whatsapp:+14155550123", "From": "+14155559876", "Body": "x"}, 21910),
             ({"To": "+14155550123", "From": "+14155559876", "Body": "x" * 1601}, 21617),
             ({"To": "+14155550123", "From": "+14155559876", "MediaUrl": "ftp://x"}, 21620),
             ({"to": "+14155550123", "from": "+14155559876", "body": "x"}, 21604),
             ({"To": "+14155550123", "MessagingServiceSid": "MG12", "Body": "x"}, 21701)]
    for params, code in cases:
        s, _, b = tw_send(fp, params)
        assert (s, b["code"]) == (400, code), (params, b)
    assert fp.stats()["created"]["twilio"] == {}


def test_twilio_checks_registered_senders(fp):
    fp.tokens("twilio", account_sid=ACCOUNT, auth_token=TW_TOKEN, numbers=["+14155559876"])
    s, _, b = tw_send(fp, {"To": "+14155550123", "From": "+14155550000", "Body": "x"})
    assert s == 400 and b["code"] == 21606
    s, _, b = tw_send(fp, {"To": "+14155550123", "From": "+14155559876", "Body": "x"})
    assert s == 201


# ------------------------------------------------------------------------------------------
# Meta

def test_meta_send_message(fp):
    s, _, b = meta_send(fp)
    assert s == 200 and b["recipient_id"] == PSID and b["message_id"].startswith("m_")
    s, _, b = meta_send(fp, token=None, headers={"Authorization": "Bearer page-token"})
    assert s == 200
    s, _, b = meta_send(fp, meta_msg(messaging_type="MESSAGE_TAG", tag="POST_PURCHASE_UPDATE"))
    assert s == 200
    # form-encoded, as in Meta's curl examples
    form = urllib.parse.urlencode({"recipient": json.dumps({"id": PSID}),
                                   "messaging_type": "RESPONSE",
                                   "message": json.dumps({"text": "hi"}),
                                   "access_token": "page-token"})
    s, _, d = fp.call("POST", f"/meta/v25.0/{PAGE}/messages", form, {"Content-Type": FORM})
    assert s == 200, d
    assert len(fp.objects("meta")["messages"]) == 4


def test_meta_rejects_bad_requests(fp):
    # The Graph API answers token errors with 400 (OAuthException, code 2500 or 190).
    s, h, b = meta_send(fp, token=None)
    assert s == 400 and b["error"]["type"] == "OAuthException"
    s, _, b = meta_send(fp, token="nope")
    assert s == 400 and b["error"]["code"] == 190
    s, _, b = meta_send(fp, page="999")
    assert s == 400 and b["error"]["code"] == 100
    for body in (meta_msg(recipient=None), meta_msg(recipient={"psid": PSID}),
                 meta_msg(messaging_type=None), meta_msg(messaging_type="NOW"),
                 meta_msg(messaging_type="MESSAGE_TAG"),
                 meta_msg(tag="HUMAN_AGENT"),
                 meta_msg(message=None), meta_msg(message={"text": ""}),
                 meta_msg(message={"text": "x" * 2001})):
        s, _, b = meta_send(fp, body)
        assert s == 400, (body, b)
        assert b["error"]["message"]
    s, _, b = meta_send(fp, headers={"Content-Type": "text/plain"})
    assert s == 400
    fp.tokens("meta", access_token="user-token", pages=[PAGE])
    s, _, b = meta_send(fp, token="user-token")           # a user token is not a Page token
    assert s == 400
    assert fp.stats()["created"]["meta"] == {}


# ------------------------------------------------------------------------------------------
# faults

def test_fault_applies_count_times_then_stops(fp):
    fp.fault("xero", path=r"/Invoices$", method="PUT", status=503, count=2)
    statuses = [put_invoice(fp)[0] for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    assert fp.faults() == []
    st = fp.stats()
    assert st["faults_applied"] == 2 and st["created"]["xero"]["invoices"] == 2
    recs = fp.requests("xero")
    assert [r["fault"] for r in recs] == [True, True, False, False]
    assert [r["status"] for r in recs] == [503, 503, 200, 200]


def test_fault_returns_retry_after_and_platform_shaped_body(fp):
    fp.fault("hubspot", status=429, retry_after="1", count=1)
    s, h, d = fp.call("POST", "/hubspot/crm/v3/objects/contacts",
                      {"properties": {"email": "a@b.example"}}, hs_headers())
    assert s == 429 and h["retry-after"] == "1"
    assert js(d)["category"] == "RATE_LIMITS"
    fp.fault("xero", status=429, retry_after=7, headers={"X-Rate-Limit-Problem": "minute"},
             body={"Title": "Too Many Requests"})
    s, h, b = put_invoice(fp)
    assert s == 429 and h["retry-after"] == "7" and h["x-rate-limit-problem"] == "minute"
    assert b == {"Title": "Too Many Requests"}
    assert put_invoice(fp)[0] == 200


def test_fault_filters_by_provider_method_and_path(fp):
    fp.fault("xero", path="Contacts", status=500, count=-1)      # until cleared
    assert put_invoice(fp)[0] == 200
    s, _, _ = tw_send(fp, {"To": "+14155550123", "From": "+14155559876", "Body": "x"})
    assert s == 201
    for _ in range(3):
        s, _, _ = fp.call("POST", "/xero/api.xro/2.0/Contacts", {"Contacts": [{"Name": "A"}]},
                          xero_headers())
        assert s == 500
    fp.clear_faults()
    s, _, _ = fp.call("POST", "/xero/api.xro/2.0/Contacts", {"Contacts": [{"Name": "A"}]},
                      xero_headers())
    assert s == 200


def test_fault_on_the_token_endpoint(fp):
    fp.fault("xero", path="/token$", status=500)
    form = {"grant_type": "refresh_token", "refresh_token": "xero-rt"}
    s, _ = token_call(fp, "xero", form, basic("xero-client", "xero-secret"))
    assert s == 500
    s, _ = token_call(fp, "xero", form, basic("xero-client", "xero-secret"))
    assert s == 200                                  # the failed call did not spend the token


def test_delay_fault_then_normal_answer(fp):
    fp.fault("meta", delay_ms=300, count=1)
    t0 = time.monotonic()
    s, _, _ = meta_send(fp)
    assert s == 200 and time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    assert meta_send(fp)[0] == 200 and time.monotonic() - t0 < 0.3


def test_drop_fault_closes_without_an_answer(fp):
    fp.fault("quickbooks", drop=True)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        qbo_post(fp)
    assert fp.stats()["created"]["quickbooks"] == {}
    assert qbo_post(fp)[0] == 200
    assert fp.requests("quickbooks")[0]["dropped"] is True


def test_lost_response_then_idempotent_retry(fp):
    """after=True: the platform creates the invoice but the answer is lost; the retry with the
    same Idempotency-Key gets the stored answer and no second invoice."""
    fp.fault("xero", path="Invoices", drop=True, after=True)
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        put_invoice(fp, **{"Idempotency-Key": "k-lost"})
    assert fp.stats()["created"]["xero"]["invoices"] == 1
    s, _, b = put_invoice(fp, **{"Idempotency-Key": "k-lost"})
    assert s == 200 and b["Invoices"][0]["InvoiceNumber"] == "INV-0001"
    assert fp.stats()["created"]["xero"]["invoices"] == 1
    # the same with a 502 after processing, for QuickBooks' requestid
    fp.fault("quickbooks", status=502, after=True)
    assert qbo_post(fp, query="?requestid=r-1")[0] == 502
    assert qbo_post(fp, query="?requestid=r-1")[0] == 200
    assert fp.stats()["created"]["quickbooks"]["salesreceipts"] == 1


# ------------------------------------------------------------------------------------------
# HTTP/1.1 behaviour

def test_keep_alive_across_errors(fp):
    conn = http.client.HTTPConnection(fp.host, fp.port, timeout=10)
    try:
        for hdr, expect in ((xero_headers(Authorization=None), 401),
                            (xero_headers(), 200),
                            (xero_headers(**{"Content-Type": "text/plain"}), 415),
                            (xero_headers(), 200)):
            conn.request("PUT", "/xero/api.xro/2.0/Invoices", json.dumps(xero_invoice()), hdr)
            r = conn.getresponse()
            r.read()
            assert r.status == expect
            assert r.getheader("Connection") != "close"
        conn.request("POST", "/klaviyo/api/events", json.dumps(kl_event()), kl_headers())
        r = conn.getresponse()
        assert r.status == 202 and r.read() == b""
        conn.request("GET", "/nope")
        r = conn.getresponse()
        r.read()
        assert r.status == 404
    finally:
        conn.close()
    peers = {r["peer"] for r in fp.requests()}
    assert len(peers) == 1                       # all six requests came over one connection


def test_chunked_request_body_and_pipelining(fp):
    body = urllib.parse.urlencode({"To": "+14155550123", "From": "+14155559876", "Body": "chunky"})
    head = (f"POST {tw_path()} HTTP/1.1\r\nHost: x\r\nAuthorization: {basic(ACCOUNT, TW_TOKEN)}\r\n"
            f"Content-Type: {FORM}\r\n")
    chunked = head + "Transfer-Encoding: chunked\r\n\r\n" + \
        f"{10:x}\r\n{body[:10]}\r\n{len(body) - 10:x}\r\n{body[10:]}\r\n0\r\n\r\n"
    plain = head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
    with socket.create_connection((fp.host, fp.port), timeout=10) as s:
        s.sendall((chunked + plain).encode())
        data = b""
        while True:
            part = s.recv(65536)
            if not part:
                break
            data += part
    assert data.count(b"HTTP/1.1 201 Created") == 2, data
    assert [r["form"]["Body"] for r in fp.requests("twilio")] == ["chunky", "chunky"]


# ------------------------------------------------------------------------------------------
# command line and load

def test_command_line_port_file_and_sigterm(tmp_path):
    fp = FakePlatforms.start(str(tmp_path))
    try:
        ports = list(tmp_path.glob("*.port"))
        assert len(ports) == 1 and int(ports[0].read_text()) == fp.port
        assert fp.call("GET", "/_control/health")[0] == 200
        fp.call("POST", "/nope", b"", {})
    finally:
        code = fp.stop()
    assert code == 0
    log = fp.log()
    assert "listening on" in log and "POST /nope 404" in log and "stopped" in log


def test_sustains_2000_requests_quickly(fp):
    n_threads, per_thread = 4, 500
    errors = []

    def worker(i):
        conn = http.client.HTTPConnection(fp.host, fp.port, timeout=30)
        try:
            for j in range(per_thread):
                if j % 2:
                    body = urllib.parse.urlencode({"To": "+14155550123", "From": "+14155559876",
                                                   "Body": f"load {i}-{j}"})
                    conn.request("POST", tw_path(), body,
                                 {"Authorization": basic(ACCOUNT, TW_TOKEN), "Content-Type": FORM})
                    want = 201
                else:
                    conn.request("POST", "/klaviyo/api/events", json.dumps(kl_event()),
                                 kl_headers())
                    want = 202
                r = conn.getresponse()
                r.read()
                if r.status != want:
                    errors.append(r.status)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    total = n_threads * per_thread
    assert not errors, errors[:5]
    st = fp.stats()
    assert st["total_requests"] == total
    assert st["created"]["twilio"]["messages"] == total // 2
    print(f"\nfake_platforms: {total} requests in {elapsed:.2f}s ({total / elapsed:.0f}/s)")
    assert elapsed < 20, f"{total} requests took {elapsed:.1f}s"
