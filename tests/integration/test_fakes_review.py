"""test_fakes_review: where the platform fakes (tests/fakes/fake_platforms.py) are more lenient
than the real platforms, or answer in a shape the real platforms do not, so that hookflow's
requests and parsing are tested against fiction; plus pins of fake behaviour the other tests do
not exercise.

Each finding states what the real platform does (with its section of the platforms' reference,
providers.md, or the vendor's document) and what the fake (or hookflow) did instead; all are
fixed.

The fake-only tests need only HOOKFLOW_SOURCE_DIR; the one engine test (hookflow's HubSpot
OAuth callback) also needs HOOKFLOW_BUILD_DIR and PostgreSQL:

    cd tests/integration && HOOKFLOW_SOURCE_DIR=$PWD/../.. HOOKFLOW_BUILD_DIR=$PWD/../../build/x \\
        /usr/bin/python3 -m pytest -q -p no:cacheprovider test_fakes_review.py
"""

import urllib.parse

import pytest

# The fake, its constants and request helpers are test_fakes.py's (fake is its module fixture).
from test_fakes import (ACCOUNT, FORM, JSONAPI, PAGE, REALM, TENANT, TW_TOKEN,  # noqa: F401
                        basic, fake, js, meta_send, qbo_post, token_call, xero_headers,
                        xero_invoice)

OTHER_ACCOUNT = "AC" + "fedcba9876543210" * 2
DAY = 24 * 3600


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
         "client_id": "hs-client", "client_secret": "hs-secret", "tenants": ["62515"],
         "scope": "oauth crm.objects.contacts.write"},
        {"provider": "hubspot", "access_token": "hs-other-at", "client_id": "hs-other-client",
         "client_secret": "hs-other-secret", "tenants": ["777"]},
        {"provider": "klaviyo", "access_token": "kl-at", "refresh_token": "kl-rt",
         "client_id": "kl-client", "client_secret": "kl-secret"},
        {"provider": "twilio", "account_sid": ACCOUNT, "auth_token": TW_TOKEN,
         "api_keys": {"SK" + "1" * 32: "key-secret"}},
        {"provider": "twilio", "account_sid": OTHER_ACCOUNT, "auth_token": "other-token"},
        {"provider": "meta", "access_token": "page-token", "page_id": PAGE,
         "client_id": "meta-app", "client_secret": "meta-secret"},
    ])
    return fake


# =============================================================================================
# Findings (fail against the current fake)

def test_hubspot_token_answer_names_the_portal_and_scopes(fp):
    # HubSpot's token endpoint answers every code exchange and refresh with "hub_id" (the portal)
    # and "scopes" (an array, granted optional scopes included) since 18 Aug 2025 (HubSpot
    # changelog "Additional details returned when generating OAuth access tokens"). The fake
    # answered neither, so hookflow's path that takes hub_id from the token answer never ran
    # and its ignoring of "scopes" went unnoticed.
    fp.tokens("hubspot", code="hs-code", redirect_uri="https://app.example/cb",
              client_id="hs-client", client_secret="hs-secret", tenants=["62515"],
              scope="oauth crm.objects.contacts.write")
    form = {"grant_type": "authorization_code", "client_id": "hs-client",
            "client_secret": "hs-secret", "code": "hs-code",
            "redirect_uri": "https://app.example/cb"}
    s, b = token_call(fp, "hubspot", form, path="/hubspot/oauth/2026-03/token")
    assert s == 200, b
    assert b.get("hub_id") == 62515, b
    assert b.get("scopes") == ["oauth", "crm.objects.contacts.write"], b
    s, r = token_call(fp, "hubspot", {"grant_type": "refresh_token", "client_id": "hs-client",
                                      "client_secret": "hs-secret",
                                      "refresh_token": b["refresh_token"]},
                      path="/hubspot/oauth/2026-03/token")
    assert s == 200 and r.get("hub_id") == 62515 and "scopes" in r, r


@pytest.mark.parametrize("provider,client,rt,lifetime_days", [
    ("xero", ("xero-client", "xero-secret"), "xero-rt", 60),
    ("quickbooks", ("qbo-client", "qbo-secret"), "qbo-rt", 100),
])
def test_unused_refresh_token_expires(fp, provider, client, rt, lifetime_days):
    # Refresh tokens are not eternal (providers.md §1: an unused Xero refresh token expires after
    # 60 days; §2: QuickBooks' last 100 days, rolling): past that the refresh_token grant answers
    # 400 invalid_grant. The fake's never expired, so hookflow's "reconnect it" path was only
    # reachable through an explicit expire(refresh_token=...).
    fp.advance_clock((lifetime_days + 1) * DAY)
    s, e = token_call(fp, provider, {"grant_type": "refresh_token", "refresh_token": rt},
                      basic(*client))
    assert s == 400 and e.get("error") == "invalid_grant", (s, e)


def test_meta_invalid_token_is_http_400_with_code_190(fp):
    # The Graph API answers an expired or invalid access token with HTTP 400 and
    # {"error":{"type":"OAuthException","code":190,...}}; the fake answered 401, so no engine
    # test went through meta_interpret's "code 190 inside a 400" branch.
    fp.expire("meta", access_token="page-token")
    s, _, b = meta_send(fp, token="page-token")
    assert b["error"]["code"] == 190 and b["error"]["type"] == "OAuthException", b
    assert s == 400, f"the Graph API answers code 190 with HTTP 400, the fake said {s}"


def test_xero_429_carries_retry_after_and_rate_limit_problem(fp):
    # providers.md §1: "Over the limit Xero returns 429 with X-Rate-Limit-Problem and
    # Retry-After" (seconds). An injected 429 without a body gets both, as the README promises
    # "the platform's usual error shape"; without them hookflow fell back to its own backoff, a
    # case Xero never produces.
    fp.fault("xero", path="Invoices", method="PUT", status=429)
    s, h, _ = fp.call("PUT", "/xero/api.xro/2.0/Invoices", xero_invoice(), xero_headers())
    assert s == 429
    assert h.get("retry-after", "").isdigit(), h
    assert h.get("x-rate-limit-problem", "").lower() in ("minute", "day", "concurrent",
                                                         "appminute"), h


def test_klaviyo_get_accounts_exists(fp):
    # Klaviyo's GET /api/accounts/ (scope accounts:read) names the account a key or token
    # belongs to; hookflow's OAuth callback reads data[0].id from it. The fake had no such route
    # (404), so the connect test passed only through the fallback that takes the account the
    # admin typed, a path the real Klaviyo never takes.
    s, _, d = fp.call("GET", "/klaviyo/api/accounts/", None,
                      {"Authorization": "Bearer kl-at", "revision": "2025-10-15",
                       "Accept": JSONAPI})
    assert s == 200, (s, d[:300])
    body = js(d)
    assert body["data"] and body["data"][0]["type"] == "account" and body["data"][0]["id"]


def test_hubspot_rejects_a_property_the_portal_does_not_have(fp):
    # HubSpot refuses a contact property the portal does not have: 400 VALIDATION_ERROR,
    # PROPERTY_DOESNT_EXIST. The fake accepted any name, so a workflow's free-form `properties`
    # with a typo passed every test and failed for real. (HubSpot CRM v3 property validation.)
    s, _, d = fp.call("POST", "/hubspot/crm/v3/objects/contacts",
                      {"properties": {"email": "dana@example.com",
                                      "favourite_colour_typo": "green"}},
                      {"Authorization": "Bearer hs-at", "Content-Type": "application/json"})
    assert s == 400, (s, d[:300])
    b = js(d)
    assert b["category"] == "VALIDATION_ERROR"
    assert any(e.get("code") == "PROPERTY_DOESNT_EXIST" for e in b.get("errors", [])), b


# =============================================================================================
# Pins: fake behaviour that matters and no other test exercises (these pass)

def test_pin_expire_refresh_token_revokes_it_but_not_the_access_token(fp):
    assert fp.expire("xero", refresh_token="xero-rt")["expired"] == 1
    s, e = token_call(fp, "xero", {"grant_type": "refresh_token", "refresh_token": "xero-rt"},
                      basic("xero-client", "xero-secret"))
    assert s == 400 and e["error"] == "invalid_grant"
    assert fp.stats()["tokens"]["xero"]["refresh_rejected"] == 1
    s, _, _ = fp.call("PUT", "/xero/api.xro/2.0/Invoices", xero_invoice(), xero_headers())
    assert s == 200


def test_pin_hubspot_introspection(fp):
    path = "/hubspot/oauth/2026-03/token/introspect"
    creds = {"client_id": "hs-client", "client_secret": "hs-secret"}

    def intro(form, query=""):
        s, _, d = fp.call("POST", path + query, urllib.parse.urlencode(form),
                          {"Content-Type": FORM})
        return s, js(d)

    s, b = intro(dict(creds, token="hs-at", token_type_hint="access_token"))
    assert s == 200 and b["active"] is True and b["hub_id"] == 62515
    assert b["scopes"] == ["oauth", "crm.objects.contacts.write"] and 0 < b["expires_in"] <= 1800
    # another app's token, an unknown one, an expired one: only {"active": false}
    assert intro(dict(creds, token="hs-other-at")) == (200, {"active": False})
    assert intro(dict(creds, token="nope")) == (200, {"active": False})
    fp.expire("hubspot", access_token="hs-at")
    assert intro(dict(creds, token="hs-at")) == (200, {"active": False})
    # parameters in the URL, a JSON body, a wrong secret: 400 in HubSpot's shape
    s, b = intro({"token": "hs-at"}, "?client_id=hs-client&client_secret=hs-secret")
    assert s == 400 and b["status"] == "BAD_REQUEST"
    s, _, d = fp.call("POST", path, dict(creds, token="hs-at"),
                      {"Content-Type": "application/json"})
    assert s == 400
    s, b = intro(dict(creds, client_secret="wrong", token="hs-at"))
    assert s == 400 and b["status"] == "BAD_CLIENT_SECRET"
    t = fp.stats()["tokens"]["hubspot"]
    assert t["introspected"] == 4 and t["introspect_rejected"] == 3


def test_pin_meta_short_lived_user_token_gives_a_page_token_that_dies_with_it(fp):
    fp.tokens("meta", code="mc", redirect_uri="https://app.example/cb", client_id="meta-app",
              client_secret="meta-secret", pages=[PAGE])
    q = urllib.parse.urlencode({"client_id": "meta-app", "client_secret": "meta-secret",
                                "redirect_uri": "https://app.example/cb", "code": "mc"})
    s, _, d = fp.call("GET", f"/meta/v25.0/oauth/access_token?{q}")
    short = js(d)
    assert s == 200 and short["expires_in"] == 3600
    s, _, d = fp.call("GET", "/meta/v25.0/me/accounts", None,
                      {"Authorization": f"Bearer {short['access_token']}"})
    page_tok = js(d)["data"][0]["access_token"]
    assert s == 200 and page_tok != "page-token"          # not the never-expiring one
    assert fp.stats()["tokens"]["meta"]["short_lived_page_tokens"] == 1
    assert meta_send(fp, token=page_tok)[0] == 200
    # a user token cannot send as the page
    s, _, b = meta_send(fp, token=short["access_token"])
    assert s == 400 and b["error"]["error_subcode"] == 33
    fp.advance_clock(3601)
    s, _, b = meta_send(fp, token=page_tok)
    assert b["error"]["code"] == 190 and b["error"]["error_subcode"] == 463
    assert meta_send(fp, token="page-token")[0] == 200           # the long-lived one lives on


def test_pin_twilio_api_key_is_bound_to_its_account(fp):
    form = urllib.parse.urlencode({"To": "+14155550123", "From": "+14155550100", "Body": "hi"})
    key = basic("SK" + "1" * 32, "key-secret")
    s, _, d = fp.call("POST", f"/twilio/2010-04-01/Accounts/{ACCOUNT}/Messages.json", form,
                      {"Authorization": key, "Content-Type": FORM})
    assert s == 201 and js(d)["account_sid"] == ACCOUNT
    s, h, d = fp.call("POST", f"/twilio/2010-04-01/Accounts/{OTHER_ACCOUNT}/Messages.json", form,
                      {"Authorization": key, "Content-Type": FORM})
    assert s == 401 and js(d)["code"] == 20003 and "www-authenticate" in h
    # the other account's own token is not valid for this account either
    s, _, _ = fp.call("POST", f"/twilio/2010-04-01/Accounts/{ACCOUNT}/Messages.json", form,
                      {"Authorization": basic(OTHER_ACCOUNT, "other-token"),
                       "Content-Type": FORM})
    assert s == 401
    assert fp.stats()["created"]["twilio"]["messages"] == 1


def test_pin_quickbooks_lost_answer_then_requestid_retry_replays(fp):
    fp.fault("quickbooks", path="salesreceipt", status=502, after=True)
    s, _, b = qbo_post(fp, query="?minorversion=75&requestid=run-7-node-2")
    assert s == 502 and "Fault" in b
    s, _, b = qbo_post(fp, query="?minorversion=75&requestid=run-7-node-2")
    assert s == 200 and b["SalesReceipt"]["Id"]
    st = fp.stats()
    assert st["created"]["quickbooks"]["salesreceipts"] == 1
    assert st["idempotency"]["quickbooks"]["replays"] == 1
    reqs = fp.requests("quickbooks")
    assert [r["replayed"] for r in reqs] == [False, True] and reqs[0]["fault"] is True


# =============================================================================================
# hookflow itself (the real engine's OAuth callback against the fakes)

@pytest.fixture(scope="module")
def api_stack(postgres):
    import test_api_connections as tac
    s = tac.ApiStack(postgres, tac.base_config())
    yield s
    s.stop()


def test_engine_hubspot_granted_scopes_come_from_the_token_answer(api_stack):
    # hookflow: HubSpot's token answer lists the granted scopes in "scopes" (an array) next to
    # "hub_id" and has no "scope" member; engine_oauth_parse_token read only "scope", and
    # find_account returns as soon as the answer has hub_id, before the introspection that would
    # have given scopes. So with the real HubSpot, granted_scopes were the *requested* catalog
    # scopes. Now the answer's "scopes" are read.
    # The answer is pinned with an after=True fault (the fake performs the code exchange, then
    # answers exactly this, as HubSpot does).
    import test_api_connections as tac
    stack = api_stack
    stack.fakes.reset()
    out, q = tac.start(stack, "hubspot", token=stack.sandbox_admin())
    tac.register_code(stack, "hubspot", "hs-code-real", q, tenants=["62515"],
                      access_token="hs-at-real", refresh_token="hs-rt-real",
                      scope="oauth crm.objects.contacts.read crm.objects.contacts.write")
    granted = ["oauth", "crm.objects.contacts.read", "crm.objects.contacts.write"]
    stack.fakes.fault(provider="hubspot", path=r"/token$", method="POST", status=200,
                      after=True, body={"token_type": "bearer", "refresh_token": "hs-rt-real",
                                        "hub_id": 62515, "scopes": granted,
                                        "access_token": "hs-at-real", "expires_in": 1800})
    status, _, body = tac.callback(stack, "hubspot", {"code": "hs-code-real",
                                                      "state": out["state"]})
    assert status == 200, body
    assert body["integration"]["account"] == "62515"
    rows = tac.connection(stack, stack.sandbox, "hubspot")
    assert [r[0] for r in rows] == ["62515"]
    assert rows[0][2] == granted, (
        f"granted_scopes stored {rows[0][2]}, HubSpot's token answer granted {granted}")
