"""fakes: a small client for tests/fakes/fake_platforms.py (the fake Xero, QuickBooks Online,
HubSpot, Klaviyo, Twilio and Meta APIs).

    import sys, os
    sys.path.insert(0, os.path.join(os.environ["HOOKFLOW_SOURCE_DIR"], "tests", "fakes"))
    from fakes import FakePlatforms

    fp = FakePlatforms.start(log_dir)             # spawns the server, waits for its port
    fp.tokens("xero", access_token="at1", refresh_token="rt1", client_id="cid",
              client_secret="sec", tenants=["tenant-1"])
    env = dict(os.environ, **fp.env())           # HOOKFLOW_CONNECTOR_<ID>_BASE_URL/_TOKEN_URL
    ... run hookflow with env ...
    fp.requests("xero")                          # what the fake received, in order
    fp.stats()
    fp.stop()

Standard library only. See README.md for what each fake checks.
"""

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

__all__ = ["FakePlatforms", "FakeError", "PROVIDERS", "SCRIPT"]

PROVIDERS = ("xero", "quickbooks", "hubspot", "klaviyo", "twilio", "meta")
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_platforms.py")
META_VERSION = "v25.0"

# token endpoint path under each platform's prefix (Twilio has no OAuth)
_TOKEN_PATHS = {"xero": "/token", "quickbooks": "/token", "hubspot": "/token",
                "klaviyo": "/token", "meta": f"/{META_VERSION}/oauth/access_token"}


class FakeError(RuntimeError):
    """The fake could not be started or a control call failed."""


class FakePlatforms:
    """A running fake_platforms server (started by start() or attached by attach())."""

    def __init__(self, host, port, proc=None, log_path=None):
        self.host = host
        self.port = port
        self.proc = proc
        self.log_path = log_path

    # ---- lifecycle -----------------------------------------------------------------------

    @classmethod
    def start(cls, log_dir=None, host="127.0.0.1", port=0, timeout=20, python=None,
              extra_args=()):
        """Spawns fake_platforms.py as a subprocess (logging to <log_dir>/fake_platforms*.log)
        and waits until it answers."""
        log_dir = log_dir or tempfile.mkdtemp(prefix="hookflow-fakes-")
        os.makedirs(log_dir, exist_ok=True)
        fd, log_path = tempfile.mkstemp(prefix="fake_platforms-", suffix=".log", dir=log_dir)
        os.close(fd)
        port_file = log_path[:-4] + ".port"
        args = [python or sys.executable, SCRIPT, "--host", host, "--port", str(port),
                "--port-file", port_file, *extra_args]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        self = cls(host, None, proc=proc, log_path=log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise FakeError(f"fake_platforms exited with {proc.returncode}:\n{self.log_tail()}")
            try:
                with open(port_file) as f:
                    text = f.read().strip()
                if text:
                    self.port = int(text)
                    break
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.02)
        if self.port is None:
            self.kill()
            raise FakeError(f"fake_platforms wrote no port within {timeout}s:\n{self.log_tail()}")
        while time.monotonic() < deadline:
            try:
                if self._call("GET", "/_control/health")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        self.kill()
        raise FakeError(f"fake_platforms did not answer within {timeout}s:\n{self.log_tail()}")

    @classmethod
    def attach(cls, host, port):
        """A client for a fake already running at host:port (e.g. started by a benchmark)."""
        return cls(host, int(port))

    def stop(self, timeout=10):
        """SIGTERM, wait; returns the exit code (0 expected), or None when attached."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def alive(self):
        return self.proc is None or self.proc.poll() is None

    def log(self):
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, lines=40):
        return "\n".join(self.log().splitlines()[-lines:])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- URLs ----------------------------------------------------------------------------

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def base_url(self, provider):
        """What HOOKFLOW_CONNECTOR_<ID>_BASE_URL should be: the connector appends the
        platform's real path (e.g. /api.xro/2.0/Invoices) to it."""
        _check(provider)
        return f"{self.url}/{provider}"

    def token_url(self, provider):
        """The OAuth token endpoint (None for Twilio, which has no OAuth)."""
        _check(provider)
        tail = _TOKEN_PATHS.get(provider)
        return None if tail is None else f"{self.url}/{provider}{tail}"

    def env(self, providers=PROVIDERS):
        """HOOKFLOW_CONNECTOR_<ID>_BASE_URL and _TOKEN_URL for every provider."""
        out = {}
        for p in providers:
            out[f"HOOKFLOW_CONNECTOR_{p.upper()}_BASE_URL"] = self.base_url(p)
            t = self.token_url(p)
            if t:
                out[f"HOOKFLOW_CONNECTOR_{p.upper()}_TOKEN_URL"] = t
        return out

    # ---- control API ---------------------------------------------------------------------

    def tokens(self, provider=None, **spec):
        """Registers credentials, e.g. tokens("xero", access_token=..., refresh_token=...,
        client_id=..., client_secret=..., tenants=[...]); or tokens([spec, spec...])."""
        if isinstance(provider, (list, tuple)):
            body = list(provider)
        else:
            body = dict(spec, provider=provider) if provider else spec
        return self._control("POST", "/_control/tokens", body)

    def fault(self, provider=None, path=None, method=None, status=None, count=1, **more):
        """The next `count` matching requests get `status` (with `body`, `retry_after`,
        `headers`), or are delayed (`delay_ms`), or dropped (`drop=True`); `after=True`
        processes the request first and then answers with the fault."""
        spec = dict(more, provider=provider, path=path, method=method, status=status, count=count)
        spec = {k: v for k, v in spec.items() if v is not None}
        return self._control("POST", "/_control/faults", spec)

    def faults(self):
        return self._control("GET", "/_control/faults")["faults"]

    def clear_faults(self):
        return self._control("DELETE", "/_control/faults")

    def expire(self, provider, access_token=None, refresh_token=None):
        """Expires one access token (or all of the provider's), or revokes a refresh token."""
        body = {"provider": provider}
        if access_token:
            body["access_token"] = access_token
        if refresh_token:
            body["refresh_token"] = refresh_token
        return self._control("POST", "/_control/expire", body)

    def advance_clock(self, seconds):
        """Moves the fake's clock forward (token expiry) without sleeping."""
        return self._control("POST", "/_control/clock", {"advance": seconds})

    def requests(self, provider=None, path=None, method=None, since=0):
        """Every request the fake received (oldest first), optionally filtered; each a dict with
        seq, time, provider, method, path, query, headers (lower-case names), body, json, form,
        endpoint, status, fault, dropped, response."""
        q = {k: v for k, v in (("provider", provider), ("path", path), ("method", method),
                               ("since", since or None)) if v}
        return self._control("GET", "/_control/requests" + ("?" + urllib.parse.urlencode(q)
                                                            if q else ""))

    def stats(self):
        return self._control("GET", "/_control/stats")

    def objects(self, provider=None):
        """What the fake created (invoices, contacts, messages...), per provider."""
        r = self._control("GET", "/_control/objects" + (f"?provider={provider}" if provider else ""))
        return r[provider] if provider else r

    def reset(self):
        return self._control("POST", "/_control/reset", {})

    # ---- plain HTTP (for tests calling the fake directly) --------------------------------

    def call(self, method, path, body=None, headers=None, timeout=30):
        """(status, headers dict (lower-case), body bytes). body: bytes, str, or a dict/list
        sent as JSON (Content-Type not added: pass it in headers)."""
        return self._call(method, path, body, headers, timeout)

    def _call(self, method, path, body=None, headers=None, timeout=30):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def _control(self, method, path, body=None):
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        status, _, data = self._call(method, path, body, hdrs)
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        if status != 200:
            reason = parsed.get("fake_reason") if isinstance(parsed, dict) else data[:500]
            raise FakeError(f"{method} {path} -> {status}: {reason}")
        return parsed


def _check(provider):
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}")
