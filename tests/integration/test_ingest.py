"""Integration: the real hookflow-ingest against the dev broker, read back from Kafka.

Covers the Ingest HTTP and Event envelope contracts of DESIGN.md and guarantee 1 (2xx means the
event is in Kafka): each platform's signature, handshake, batch splitting, stable ids, rejection
without producing, broker failure (503 + Retry-After, recovery), limits, operations endpoints,
secret rotation (SIGHUP) and clean shutdown (SIGTERM).
"""

import email.utils
import json
import os
import re
import signal
import time
import uuid

import pytest

import harness
import signing

PUBLIC = "https://hooks.example.com"
# The secrets are the platforms' published test-vector keys, so published vectors verify too.
SECRETS = {
    "xero/webhook_key": "OSd0eLlVIY9ZhViEqlDUh4+6n6M+Lo+eDaEJheJ6OCCgWwIz2D3JIAU6jPMipHRbgKTLz2uJ+xiACXGDBLrgdA==",
    "quickbooks/verifier_token": "b5771f19b12ddb4bcdb9f08bdc50bc63878a",
    "hubspot/client_secret": "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
    "klaviyo/webhook_secret": "mysecretmysecret1",
    "klaviyo/flow_secret": "flow-secret-for-tests",
    "twilio/auth_token": "12345abcdef",
    "meta/app_secret": "test_app_secret_key",
    "meta/verify_token": "verify-me-please",
}
TOPIC = {"accounting": "hookflow.webhooks.accounting",
         "marketing": "hookflow.webhooks.marketing-automation",
         "messaging": "hookflow.webhooks.messaging"}


class Ingest:
    def __init__(self, broker, secrets=SECRETS, env=None, name="ingest"):
        self.secrets_dir = harness.temp_dir("secrets")
        harness.write_secrets(self.secrets_dir, secrets)
        self.port = harness.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = {
            "HOOKFLOW_KAFKA_BROKERS": broker.bootstrap,
            "HOOKFLOW_SECRETS_DIR": self.secrets_dir,
            "HOOKFLOW_INGEST_LISTEN": f"127.0.0.1:{self.port}",
            "HOOKFLOW_PUBLIC_BASE_URL": PUBLIC,
            "HOOKFLOW_INGEST_THREADS": "2",
            "HOOKFLOW_CATALOG_DIR": os.path.join(harness.source_dir(), "schemas", "catalog"),
        }
        full_env.update(env or {})
        self.proc = harness.Proc([harness.bin("hookflow-ingest")], env=full_env, name=name)
        harness.wait_http(self.base + "/healthz", proc=self.proc)

    def post(self, provider, body, headers, path_suffix=""):
        return harness.http("POST", f"{self.base}/api/integrations/webhooks/{provider}"
                            f"{path_suffix}", body=body, headers=headers)

    def url(self, provider):
        return f"{PUBLIC}/api/integrations/webhooks/{provider}"


@pytest.fixture(scope="module")
def broker():
    b = harness.DevBroker(partitions=3).start()
    yield b
    assert b.stop() == 0, b.proc.tail()


@pytest.fixture(scope="module")
def ingest(broker):
    i = Ingest(broker)
    yield i
    code = i.proc.stop()
    assert code == 0, i.proc.tail()
    assert not i.proc.sanitizer_errors(), i.proc.tail(80)


def _envelope_validator():
    import jsonschema
    with open(os.path.join(harness.source_dir(), "schemas", "envelope.schema.json")) as f:
        return jsonschema.Draft202012Validator(json.load(f))


ENVELOPE = _envelope_validator()


def envelopes(broker, topic):
    """Every envelope on topic as (key, envelope), each checked against the envelope schema."""
    out = []
    for m in broker.consume_all(topic, idle=0.5):
        env = json.loads(m.value)
        ENVELOPE.validate(env)
        out.append((m.key.decode(), env))
    return out


def ids_on(broker, topic):
    return [e["id"] for _, e in envelopes(broker, topic)]


def meta_delivery(n=1, page="104877", text="hi"):
    tag = uuid.uuid4().hex[:8]
    return {"object": "page", "entry": [{"id": page, "time": 1700000000000, "messaging": [
        {"sender": {"id": f"psid{i}"}, "recipient": {"id": page}, "timestamp": 1700000000000 + i,
         "message": {"mid": f"m_{tag}_{i}", "text": text}} for i in range(n)]}]}


# ---------------------------------------------------------------------------------------------
# Per platform: accepted deliveries land on the right topic with the right key, id, event, account


def test_meta_batch_produces_one_envelope_per_event(broker, ingest):
    delivery = meta_delivery(3)
    body, headers = signing.meta(SECRETS["meta/app_secret"], delivery)
    status, _, resp = ingest.post("meta", body, headers)
    assert status == 200, resp
    mids = {f"meta:{m['message']['mid']}" for m in delivery["entry"][0]["messaging"]}
    got = [(k, e) for k, e in envelopes(broker, TOPIC["messaging"]) if e["id"] in mids]
    assert len(got) == 3
    for key, env in got:
        assert key == "meta:104877"
        assert env["provider"] == "meta" and env["event"] == "message"
        assert env["account"] == "104877"
        assert env["payload"]["recipient"]["id"] == "104877"
        assert env["received_at"].endswith("Z") and env["occurred_at"].startswith("2023-11-14T")


def test_meta_published_vector_accepted(broker, ingest):
    body = (b'{"object":"page","entry":[{"id":"PAGE_ID","time":1458692752478,"messaging":[{"sender":'
            b'{"id":"PSID"},"recipient":{"id":"PAGE_ID"},"timestamp":1458692752478,"message":'
            b'{"mid":"m_1","text":"hi"}}]}]}')
    sig = "sha256=b2859187bd7190c0e8660c8670967398d174071e618434675b47290f40e43aed"
    status, _, _ = ingest.post("meta", body, {"X-Hub-Signature-256": sig,
                                              "Content-Type": "application/json"})
    assert status == 200
    assert "meta:m_1" in ids_on(broker, TOPIC["messaging"])


def test_meta_handshake(ingest):
    q = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=verify-me-please"
    status, _, body = harness.http("GET", f"{ingest.base}/api/integrations/webhooks/meta?{q}")
    assert (status, body) == (200, b"1158201444")
    bad = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=nope"
    status, _, body = harness.http("GET", f"{ingest.base}/api/integrations/webhooks/meta?{bad}")
    assert status == 403 and b"1158201444" not in body


def test_xero_intent_to_receive(ingest, broker):
    before = len(ids_on(broker, TOPIC["accounting"]))
    body = b'{"events":[],"firstEventSequence": 0,"lastEventSequence": 0,"entropy": "S0m3r4Nd0mt3xt"}'
    good = {"x-xero-signature": "XeRCwNl/cf7Wwt8bUMCqvKF6V2eoosfmJrRLcBPSquQ="}
    t0 = time.monotonic()
    status, _, resp = ingest.post("xero", body, good)
    assert (status, resp) == (200, b"") and time.monotonic() - t0 < 5
    status, _, resp = ingest.post("xero", body, {"x-xero-signature": "AAAA" + good["x-xero-signature"][4:]})
    assert (status, resp) == (401, b"")
    assert len(ids_on(broker, TOPIC["accounting"])) == before


def test_xero_events(broker, ingest):
    rid = uuid.uuid4().hex[:12]
    delivery = {"events": [
        {"resourceUrl": f"https://api.xero.com/api.xro/2.0/Invoices/{rid}", "resourceId": rid,
         "eventDateUtc": "2026-11-27T10:00:00.000", "eventType": "CREATE", "eventCategory": "INVOICE",
         "tenantId": "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f", "tenantType": "ORGANISATION"}],
        "firstEventSequence": 1, "lastEventSequence": 1, "entropy": "x"}
    body, headers = signing.xero(SECRETS["xero/webhook_key"], delivery)
    status, _, resp = ingest.post("xero", body, headers)
    assert (status, resp) == (200, b"")
    got = [(k, e) for k, e in envelopes(broker, TOPIC["accounting"])
           if e["payload"].get("resourceId") == rid]
    assert len(got) == 1
    key, env = got[0]
    assert key == "xero:c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"
    assert env["event"] == "invoices.created" and env["native_type"] == "INVOICE.CREATE"
    assert env["account"] == "c2cc9b6e-9458-4c7d-93cc-f02b81b0594f"
    assert env["id"].startswith("xero:")


def test_quickbooks_published_vector_and_redelivery_has_same_id(broker, ingest):
    body = (b'{"eventNotifications":[{"realmId":"1185883450","dataChangeEvent":{"entities":[{"name":'
            b'"Customer","id":"1","operation":"Create","lastUpdated":"2015-10-05T14:42:19-0700"}]}}]}')
    headers = {"intuit-signature": "JC2GUwciPmRBwEO7WvrRmKqu9tGOKL8FFallocTFi8Q=",
               "Content-Type": "application/json"}
    assert ingest.post("quickbooks", body, headers)[0] == 200
    assert ingest.post("quickbooks", body, headers)[0] == 200
    got = [e for k, e in envelopes(broker, TOPIC["accounting"]) if e["account"] == "1185883450"]
    assert len(got) == 2 and got[0]["id"] == got[1]["id"]
    assert got[0]["native_type"] == "Customer.Create"
    assert got[0]["occurred_at"] == "2015-10-05T21:42:19.000Z"
    assert ingest.post("quickbooks", body, {"intuit-signature": "1234"})[0] == 401


def test_quickbooks_cloudevents(broker, ingest):
    ce_id = str(uuid.uuid4())
    delivery = [{"specversion": "1.0", "id": ce_id, "source": "intuit.dsnBgb", "type":
                 "qbo.salesreceipt.created.v1", "datacontenttype": "application/json",
                 "time": "2026-11-27T10:00:00.000Z", "intuitentityid": "77",
                 "intuitaccountid": "310687", "data": {}}]
    body, headers = signing.quickbooks(SECRETS["quickbooks/verifier_token"], delivery)
    assert ingest.post("quickbooks", body, headers)[0] == 200
    got = [(k, e) for k, e in envelopes(broker, TOPIC["accounting"]) if e["id"] == f"quickbooks:{ce_id}"]
    assert len(got) == 1
    assert got[0][0] == "quickbooks:310687" and got[0][1]["event"] == "salesreceipt.create"


def test_hubspot_v3_and_stale_timestamp(broker, ingest):
    event_id = int(time.time() * 1000) % 10**9
    delivery = [{"objectId": 1246965, "eventId": event_id, "subscriptionId": 25, "portalId": 33,
                 "appId": 1160452, "occurredAt": 1462216307945, "subscriptionType": "contact.creation",
                 "attemptNumber": 0}]
    body, headers = signing.hubspot_v3(SECRETS["hubspot/client_secret"], ingest.url("hubspot"), delivery)
    status, _, resp = ingest.post("hubspot", body, headers)
    assert status == 200, resp
    got = [(k, e) for k, e in envelopes(broker, TOPIC["marketing"])
           if e["payload"].get("eventId") == event_id]
    assert len(got) == 1 and got[0][0] == "hubspot:33" and got[0][1]["event"] == "contact.created"
    stale = int(time.time() * 1000) - 6 * 60 * 1000
    body, headers = signing.hubspot_v3(SECRETS["hubspot/client_secret"], ingest.url("hubspot"),
                                       delivery, ts_ms=stale)
    status, _, resp = ingest.post("hubspot", body, headers)
    assert status == 401 and json.loads(resp)["error"] == "stale_timestamp"


def test_klaviyo_system_webhook(broker, ingest):
    ext = uuid.uuid4().hex
    delivery = {"data": [{"external_id": ext, "topic": "event:klaviyo.email_delivered",
                          "payload": {"id": ext}}],
                "meta": {"klaviyo_account_id": "ABC123", "klaviyo_webhook_id": "01KP49",
                         "timestamp": "2026-11-27T10:00:00+00:00"}}
    body, headers = signing.klaviyo(SECRETS["klaviyo/webhook_secret"], delivery, "01KP49")
    status, _, resp = ingest.post("klaviyo", body, headers)
    assert status == 200, resp
    got = [(k, e) for k, e in envelopes(broker, TOPIC["marketing"]) if e["id"] == f"klaviyo:{ext}"]
    assert len(got) == 1 and got[0][0] == "klaviyo:ABC123" and got[0][1]["event"] == "message.delivered"
    body, headers = signing.klaviyo(SECRETS["klaviyo/webhook_secret"], delivery, "01KP49",
                                    when=time.time() - 3600)
    assert ingest.post("klaviyo", body, headers)[0] == 401
    body, headers = signing.klaviyo(SECRETS["klaviyo/webhook_secret"], delivery, "OTHER")
    assert ingest.post("klaviyo", body, headers)[0] == 401


def test_twilio_inbound_gets_twiml(broker, ingest):
    sid = "SM" + uuid.uuid4().hex
    params = {"MessageSid": sid, "AccountSid": "AC" + "1" * 32, "From": "+14155550100",
              "To": "+14155550199", "Body": "Where is my driver?", "NumMedia": "0"}
    body, headers = signing.twilio_form(SECRETS["twilio/auth_token"], ingest.url("twilio"), params)
    status, hdrs, resp = ingest.post("twilio", body, headers)
    assert status == 200 and b"<Response/>" in resp and hdrs["content-type"].startswith("text/xml")
    got = [(k, e) for k, e in envelopes(broker, TOPIC["messaging"]) if e["id"] == f"twilio:{sid}"]
    assert len(got) == 1
    assert got[0][0] == "twilio:AC" + "1" * 32 and got[0][1]["event"] == "message.received"
    assert got[0][1]["payload"]["Body"] == "Where is my driver?"


def test_twilio_without_public_base_url_signs_over_the_host_and_port_called(broker):
    # Without HOOKFLOW_PUBLIC_BASE_URL the URL is http:// + the Host header as sent, port
    # included (the platform signed the port it called).
    i = Ingest(broker, env={"HOOKFLOW_PUBLIC_BASE_URL": ""}, name="ingest-no-public-url")
    try:
        sid = "SM" + uuid.uuid4().hex
        params = {"MessageSid": sid, "AccountSid": "AC" + "2" * 32, "From": "+14155550100",
                  "To": "+14155550199", "Body": "port check", "NumMedia": "0"}
        url = f"http://127.0.0.1:{i.port}/api/integrations/webhooks/twilio"
        body, headers = signing.twilio_form(SECRETS["twilio/auth_token"], url, params)
        status, _, resp = i.post("twilio", body, headers)
        assert status == 200, resp
        # Signed over the URL without the port: refused.
        body, headers = signing.twilio_form(SECRETS["twilio/auth_token"],
                                            "http://127.0.0.1/api/integrations/webhooks/twilio",
                                            dict(params, MessageSid=sid + "x"))
        assert i.post("twilio", body, headers)[0] == 401
    finally:
        assert i.proc.stop() == 0, i.proc.tail()


# ---------------------------------------------------------------------------------------------
# Rejections produce nothing


@pytest.mark.parametrize("case", ["tampered", "wrong_key", "missing_header"])
def test_rejected_deliveries_produce_nothing(broker, ingest, case):
    delivery = meta_delivery(1)
    body, headers = signing.meta(SECRETS["meta/app_secret"] if case != "wrong_key" else "other",
                                 delivery)
    if case == "tampered":
        body = body.replace(b'"hi"', b'"hI"')
    if case == "missing_header":
        del headers["X-Hub-Signature-256"]
    status, hdrs, resp = ingest.post("meta", body, headers)
    assert status == 401
    err = json.loads(resp)
    assert err["error"] in ("bad_signature", "missing_signature") and "detail" in err
    mid = f"meta:{delivery['entry'][0]['messaging'][0]['message']['mid']}"
    assert mid not in ids_on(broker, TOPIC["messaging"])


def test_signed_but_malformed_is_400(ingest):
    body, headers = signing.meta(SECRETS["meta/app_secret"], b'{"object":"page","entry":[')
    status, _, resp = ingest.post("meta", body, headers)
    assert status == 400 and json.loads(resp)["error"] == "malformed"


def test_routing_errors(ingest):
    status, _, resp = ingest.post("shopify", b"{}", {})
    assert status == 404 and json.loads(resp)["error"] == "unknown_provider"
    status, hdrs, resp = harness.http("GET", f"{ingest.base}/api/integrations/webhooks/xero")
    assert status == 405 and json.loads(resp or b'{"error":"x"}') is not None
    status, hdrs, resp = harness.http("PUT", f"{ingest.base}/api/integrations/webhooks/meta", body=b"{}")
    assert status == 405 and json.loads(resp)["error"] == "method_not_allowed"
    status, _, resp = harness.http("GET", f"{ingest.base}/nope")
    assert status == 404 and json.loads(resp)["error"] == "not_found"


def test_body_over_limit_is_413(ingest, broker):
    # Just over the limit: read, refused with the JSON error, nothing produced.
    body = b'{"x":"' + b"a" * (1024 * 1024 - 7) + b'"}'
    assert len(body) == 1024 * 1024 + 1
    status, _, resp = ingest.post("meta", body, {"X-Hub-Signature-256": "sha256=00"})
    assert status == 413 and json.loads(resp)["error"] == "payload_too_large"
    # Far over the limit: answered as soon as the headers announce it, before the body is sent.
    import socket
    with socket.create_connection(("127.0.0.1", ingest.port), timeout=10) as s:
        s.sendall(b"POST /api/integrations/webhooks/meta HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nX-Hub-Signature-256: sha256=00\r\n"
                  b"Content-Length: %d\r\n\r\n{" % (3 * 1024 * 1024))
        reply = b""
        while b"\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    # At the limit exactly, the body is read and verified (and fails verification: 401).
    body = b'{"x":"' + b"a" * (1024 * 1024 - 8) + b'"}'
    assert len(body) == 1024 * 1024
    status, _, _ = ingest.post("meta", body, {"X-Hub-Signature-256": "sha256=00"})
    assert status == 401


def test_health_ready_and_metrics(ingest):
    body, headers = signing.meta("not-the-secret", meta_delivery(1))
    assert ingest.post("meta", body, headers)[0] == 401
    status, hdrs, _ = harness.http("GET", f"{ingest.base}/healthz")
    assert status == 200
    # One Date header (made once a second, not by libevent per reply), in the HTTP format.
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT", hdrs["date"])
    sent = email.utils.parsedate_to_datetime(hdrs["date"]).timestamp()
    assert abs(sent - time.time()) < 5
    assert harness.wait_http(f"{ingest.base}/readyz", ok=lambda s: s == 200) == 200
    status, hdrs, body = harness.http("GET", f"{ingest.base}/metrics")
    text = body.decode()
    assert status == 200
    assert 'hookflow_ingest_deliveries_received_total{provider="meta"}' in text
    assert 'hookflow_ingest_deliveries_rejected_total{provider="meta",reason="bad_signature"}' in text
    assert "hookflow_ingest_produce_latency_seconds_bucket" in text
    assert "hookflow_ingest_in_flight" in text and "hookflow_ingest_kafka_queue_depth" in text


def test_logs_never_contain_secrets_or_signatures(ingest):
    body, headers = signing.meta("wrong-secret", meta_delivery(1))
    ingest.post("meta", body, headers)
    log = ingest.proc.log()
    for value in SECRETS.values():
        assert value not in log
    assert headers["X-Hub-Signature-256"][7:] not in log
    assert any(line.get("event") == "webhook.rejected" and line.get("request_id")
               for line in ingest.proc.json_logs())


def test_a_flood_of_rejections_is_counted_in_full_and_logged_once_a_second(broker):
    i = Ingest(broker, name="ingest-flood")
    body, headers = signing.meta("wrong-secret", meta_delivery(1))
    codes = [i.post("meta", body, headers)[0] for _ in range(40)]
    time.sleep(1.2)
    codes.append(i.post("meta", body, headers)[0])
    assert codes == [401] * 41
    _, _, metrics = harness.http("GET", f"{i.base}/metrics")
    assert 'hookflow_ingest_deliveries_rejected_total{provider="meta",reason="bad_signature"} 41' \
        in metrics.decode()
    lines = [line for line in i.proc.json_logs() if line.get("event") == "webhook.rejected"
             and line.get("reason") == "bad_signature"]
    # Each line says how many went unlogged before it: together they account for every one.
    assert 2 <= len(lines) < 41
    assert len(lines) + sum(int(line["suppressed"]) for line in lines) == 41
    assert i.proc.stop() == 0


# ---------------------------------------------------------------------------------------------
# Missing secrets, rotation, shutdown


def test_missing_secret_is_503_never_accepted(broker):
    only_meta = {"meta/app_secret": SECRETS["meta/app_secret"]}
    i = Ingest(broker, secrets=only_meta, name="ingest-nosecrets")
    body, headers = signing.xero("anything", {"events": [], "entropy": "x"})
    status, hdrs, _ = i.post("xero", body, headers)
    assert status == 503 and "retry-after" in hdrs
    assert i.proc.stop() == 0


def test_sighup_rotation_accepts_previous_key(broker):
    i = Ingest(broker, name="ingest-rotate")
    delivery = meta_delivery(1)
    old = SECRETS["meta/app_secret"]
    harness.write_secrets(i.secrets_dir, {"meta/app_secret": "brand-new-secret", "meta/app_secret.previous": old})
    i.proc.send_signal(signal.SIGHUP)
    i.proc.wait_for_log("secrets.reloaded")
    for secret in ("brand-new-secret", old):
        body, headers = signing.meta(secret, meta_delivery(1))
        assert i.post("meta", body, headers)[0] == 200
    body, headers = signing.meta("never-configured", delivery)
    assert i.post("meta", body, headers)[0] == 401
    assert i.proc.stop() == 0


# ---------------------------------------------------------------------------------------------
# Kafka failure: 503 with Retry-After, nothing answered 2xx that is not in Kafka, recovery


def test_broker_down_gives_503_and_recovers(make_devbroker):
    broker = make_devbroker(brokers=1, partitions=3, replication=1)
    i = Ingest(broker, env={"HOOKFLOW_INGEST_ACK_TIMEOUT_MS": "1000"}, name="ingest-faults")
    ok_ids, refused = [], 0
    body, headers = signing.meta(SECRETS["meta/app_secret"], meta_delivery(1))
    assert i.post("meta", body, headers)[0] == 200
    broker.ctl_ok("broker down 1")
    harness.wait_http(f"{i.base}/readyz", ok=lambda s: s == 503, timeout=30)
    for _ in range(5):
        d = meta_delivery(1)
        body, headers = signing.meta(SECRETS["meta/app_secret"], d)
        status, hdrs, resp = i.post("meta", body, headers)
        if status == 200:
            ok_ids.append(f"meta:{d['entry'][0]['messaging'][0]['message']['mid']}")
        else:
            assert status == 503 and hdrs.get("retry-after") and json.loads(resp)["error"]
            refused += 1
    assert refused == 5
    broker.ctl_ok("broker up 1")
    harness.wait_http(f"{i.base}/readyz", ok=lambda s: s == 200, timeout=60)
    d = meta_delivery(1)
    body, headers = signing.meta(SECRETS["meta/app_secret"], d)
    status = harness.wait_until(lambda: i.post("meta", body, headers)[0] == 200, timeout=60,
                                interval=0.5, what="a 200 after the broker came back")
    assert status
    ok_ids.append(f"meta:{d['entry'][0]['messaging'][0]['message']['mid']}")
    in_kafka = set(ids_on(broker, TOPIC["messaging"]))
    assert set(ok_ids) <= in_kafka
    assert i.proc.stop() == 0


def test_produce_errors_are_retried_transparently(make_devbroker):
    broker = make_devbroker(brokers=3, partitions=3)
    i = Ingest(broker, name="ingest-retry")
    broker.ctl_ok("errors Produce 3 NOT_ENOUGH_REPLICAS")
    d = meta_delivery(2)
    body, headers = signing.meta(SECRETS["meta/app_secret"], d)
    assert i.post("meta", body, headers)[0] == 200
    got = ids_on(broker, TOPIC["messaging"])
    for m in d["entry"][0]["messaging"]:
        assert got.count(f"meta:{m['message']['mid']}") == 1
    assert i.proc.stop() == 0


def test_port_in_use_fails_start_up_with_one_line(broker, ingest):
    import subprocess
    out = subprocess.run([harness.bin("hookflow-ingest")], capture_output=True, text=True,
                         timeout=30, env=dict(os.environ, HOOKFLOW_KAFKA_BROKERS=broker.bootstrap,
                                              HOOKFLOW_INGEST_LISTEN=f"127.0.0.1:{ingest.port}"))
    assert out.returncode == 1
    lines = [l for l in out.stderr.splitlines() if l.startswith("hookflow-ingest:")]
    assert lines == [f"hookflow-ingest: cannot listen on 127.0.0.1:{ingest.port}: Address already in use"]


def test_bad_configuration_exits_with_one_clear_line():
    import subprocess
    out = subprocess.run([harness.bin("hookflow-ingest")], capture_output=True, text=True,
                         timeout=30, env=dict(os.environ, HOOKFLOW_INGEST_THREADS="lots"))
    assert out.returncode == 1
    assert out.stderr.strip() == 'hookflow-ingest: HOOKFLOW_INGEST_THREADS="lots" is not a whole number'


def test_sigterm_drains_and_exits_zero(broker):
    i = Ingest(broker, name="ingest-term")
    body, headers = signing.meta(SECRETS["meta/app_secret"], meta_delivery(1))
    assert i.post("meta", body, headers)[0] == 200
    assert i.proc.stop(signal.SIGTERM, timeout=20) == 0
    assert "ingest.stopped" in i.proc.log()


# ---------------------------------------------------------------------------------------------
# Connection limit and slow clients


def test_connection_limit_pauses_accepting(broker):
    import socket
    i = Ingest(broker, env={"HOOKFLOW_INGEST_THREADS": "1", "HOOKFLOW_INGEST_MAX_CONNECTIONS": "2"},
               name="ingest-connlimit")
    idle = [socket.create_connection(("127.0.0.1", i.port)) for _ in range(2)]
    time.sleep(0.3)
    # The limit is reached: a third client is accepted by the kernel but not served.
    with pytest.raises(OSError):
        harness.http("GET", f"{i.base}/healthz", timeout=1.0)
    idle[0].close()
    # One closed: the waiting and new clients are served again.
    status, _, _ = harness.http("GET", f"{i.base}/healthz", timeout=5)
    assert status == 200
    idle[1].close()
    assert i.proc.stop() == 0
    assert "http.connection_limit" in i.proc.log()


def test_slow_client_is_cut_off(broker):
    import socket
    i = Ingest(broker, env={"HOOKFLOW_INGEST_CLIENT_TIMEOUT_MS": "1000"}, name="ingest-slow")
    slow = socket.create_connection(("127.0.0.1", i.port))
    slow.sendall(b"POST /api/integrations/webhooks/meta HTTP/1.1\r\nHost: x\r\n")
    slow.settimeout(15)
    t0 = time.monotonic()
    data = slow.recv(4096)
    waited = time.monotonic() - t0
    assert data == b"" or data.startswith(b"HTTP/1.1 4"), data[:100]
    assert 0.8 <= waited <= 6, waited
    slow.close()
    assert i.proc.stop() == 0
