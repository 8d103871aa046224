"""signing: sign webhook deliveries exactly as each platform does, for tests and benchmarks.

Each function returns (body bytes, headers dict) ready to POST. The algorithms follow the
platforms' published schemes (see docs/providers.md); the unit tests pin them to the published
vectors.
"""

import base64
import email.utils
import hashlib
import hmac
import json
import time
import urllib.parse


def _b64_hmac(key, msg, alg=hashlib.sha256):
    return base64.b64encode(hmac.new(key.encode(), msg, alg).digest()).decode()


def _body(payload):
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, separators=(",", ":")).encode()


def xero(key, payload):
    body = _body(payload)
    return body, {"Content-Type": "application/json", "x-xero-signature": _b64_hmac(key, body)}


def quickbooks(verifier, payload):
    body = _body(payload)
    return body, {"Content-Type": "application/json", "intuit-signature": _b64_hmac(verifier, body)}


def hubspot_v1(secret, payload):
    body = _body(payload)
    sig = hashlib.sha256(secret.encode() + body).hexdigest()
    return body, {"Content-Type": "application/json", "X-HubSpot-Signature": sig,
                  "X-HubSpot-Signature-Version": "v1"}


def hubspot_v3(secret, url, payload, ts_ms=None, method="POST"):
    body = _body(payload)
    ts = str(int(time.time() * 1000) if ts_ms is None else ts_ms)
    sig = _b64_hmac(secret, method.encode() + url.encode() + body + ts.encode())
    return body, {"Content-Type": "application/json", "X-HubSpot-Signature-v3": sig,
                  "X-HubSpot-Request-Timestamp": ts}


def klaviyo(secret, payload, webhook_id, when=None):
    body = _body(payload)
    ts = email.utils.formatdate(time.time() if when is None else when, usegmt=True)
    sig = hmac.new(secret.encode(), body + ts.encode(), hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "Klaviyo-Signature": sig,
                  "Klaviyo-Timestamp": ts, "Klaviyo-Webhook-Id": webhook_id}


def twilio_form(token, url, params):
    """params: dict name -> value. Returns a form-encoded body and the signature headers."""
    data = url + "".join(k + params[k] for k in sorted(params))
    sig = _b64_hmac(token, data.encode(), hashlib.sha1)
    body = urllib.parse.urlencode(params).encode()
    return body, {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sig}


def meta(secret, payload):
    body = _body(payload)
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + sig}
