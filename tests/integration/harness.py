"""harness: runs hookflow's real processes, PostgreSQL and the dev broker for integration tests.

Every integration test is a pytest file run by ctest with the working directory tests/integration
and two environment variables:

    HOOKFLOW_SOURCE_DIR   the repository root
    HOOKFLOW_BUILD_DIR    the cmake build directory holding the executables

Run one by hand from tests/integration:

    HOOKFLOW_SOURCE_DIR=$PWD/../.. HOOKFLOW_BUILD_DIR=$PWD/../../build/asan \\
        /usr/bin/python3 -m pytest -q test_devbroker.py

The pieces (fixtures wrapping them are in conftest.py):

    bin(name)                      path of a built executable
    Proc(args, env=..., name=...)  a child process logging to a file; .stop() .kill() .log()
    Postgres()                     a throwaway PostgreSQL cluster (deploy/local/pg.sh);
                                   .url .fresh_db() .restart() .stop()
    DevBroker(partitions=..)       hookflow-devbroker; .bootstrap .ctl() .consume_all() .producer()
    free_port() wait_http() http() wait_until()

Nothing here defaults to a path in somebody's checkout: a missing HOOKFLOW_* variable is an error.
"""

import collections
import http.client as http_client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid

__all__ = [
    "HarnessError", "source_dir", "build_dir", "bin", "Proc", "Postgres", "DevBroker", "Message",
    "CATEGORIES", "free_port", "wait_until", "wait_http", "http", "all_procs", "kill_all",
    "temp_dir", "temp_root", "logs_dir", "cleanup_temp", "sanitizer_env",
]


class HarnessError(RuntimeError):
    """The test environment is not what the harness needs (missing binary, tool, variable)."""


def _env_dir(var):
    value = os.environ.get(var)
    if not value:
        raise HarnessError(
            f"{var} is not set: run the integration tests through ctest (tests/run.sh) or set "
            "HOOKFLOW_SOURCE_DIR=<repository root> and HOOKFLOW_BUILD_DIR=<cmake build dir>")
    if not os.path.isdir(value):
        raise HarnessError(f"{var}={value} is not a directory")
    return os.path.abspath(value)


def source_dir():
    """The repository root (HOOKFLOW_SOURCE_DIR)."""
    return _env_dir("HOOKFLOW_SOURCE_DIR")


def build_dir():
    """The cmake build directory holding the executables (HOOKFLOW_BUILD_DIR)."""
    return _env_dir("HOOKFLOW_BUILD_DIR")


def bin(name):  # noqa: A001 - the name the tests use
    """Path of the built executable `name` (e.g. "hookflow-devbroker") in HOOKFLOW_BUILD_DIR."""
    path = os.path.join(build_dir(), name)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise HarnessError(f"{path} is missing or not executable: build it first "
                           f"(cmake --build {build_dir()} --target {name})")
    return path


# One temporary root per test session for process logs and small files. Unix socket paths must
# stay under 108 bytes, so it lives directly in the system temp dir, not under pytest's tmp_path.
_temp_root = None
_temp_lock = threading.Lock()


def write_secrets(directory, secrets):
    """Writes {"<provider>/<name>": value} as HOOKFLOW_SECRETS_DIR files (one trailing newline,
    as `echo` leaves it)."""
    for path, value in secrets.items():
        full = os.path.join(directory, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(value + "\n")


def temp_dir(prefix="tmp"):
    """A new directory under this session's temporary root (removed by cleanup_temp())."""
    global _temp_root
    with _temp_lock:
        if _temp_root is None:
            _temp_root = tempfile.mkdtemp(prefix="hf-it-")
    return tempfile.mkdtemp(prefix=prefix + "-", dir=_temp_root)


def temp_root():
    """This session's temporary root, or None before the first temp_dir()."""
    return _temp_root


_logs_dir = None


def logs_dir():
    """The session's directory of process logs."""
    global _logs_dir
    if _logs_dir is None or not os.path.isdir(_logs_dir):
        _logs_dir = temp_dir("logs")
    return _logs_dir


def cleanup_temp(keep=False):
    """Removes the session's temporary root; with keep=True leaves it and returns its path."""
    global _temp_root
    root, _temp_root = _temp_root, None
    if root and not keep:
        shutil.rmtree(root, ignore_errors=True)
    return root


def sanitizer_env(env):
    """Fills the ASan/UBSan/LSan options ctest sets, for runs outside ctest; keeps existing ones."""
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    if "LSAN_OPTIONS" not in env and os.environ.get("HOOKFLOW_SOURCE_DIR"):
        supp = os.path.join(os.environ["HOOKFLOW_SOURCE_DIR"], "tests", "lsan.supp")
        if os.path.exists(supp):
            env["LSAN_OPTIONS"] = "suppressions=" + supp
    return env


_SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                      "WARNING: ThreadSanitizer", "ERROR: UndefinedBehaviorSanitizer")

_all_procs = []
_all_procs_lock = threading.Lock()


def all_procs():
    """Every Proc started in this interpreter, oldest first."""
    with _all_procs_lock:
        return list(_all_procs)


class Proc:
    """A child process whose stdout and stderr go to one log file.

    args: the command (list); env: extra variables on top of os.environ (None values remove a
    variable); name: a short label for logs and failure reports; cwd: working directory.
    The process runs in its own process group so kill() also takes its children.
    """

    def __init__(self, args, env=None, name=None, cwd=None, log_dir=None):
        self.args = [str(a) for a in args]
        self.name = name or os.path.basename(self.args[0])
        full_env = dict(os.environ)
        for k, v in (env or {}).items():
            if v is None:
                full_env.pop(k, None)
            else:
                full_env[k] = str(v)
        sanitizer_env(full_env)
        self.log_path = os.path.join(log_dir or logs_dir(),
                                     f"{self.name}-{uuid.uuid4().hex[:6]}.log")
        self._log_file = open(self.log_path, "wb")
        self.started_at = time.monotonic()
        self.ended_at = None
        self.returncode = None
        try:
            self.popen = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                          stdout=self._log_file, stderr=subprocess.STDOUT,
                                          env=full_env, cwd=cwd, start_new_session=True)
        except OSError:
            self._log_file.close()
            raise
        self.pid = self.popen.pid
        with _all_procs_lock:
            _all_procs.append(self)

    def __repr__(self):
        state = "running" if self.alive() else f"exited {self.returncode}"
        return f"<Proc {self.name} pid={self.pid} {state}>"

    def _reap(self, code):
        if self.returncode is None:
            self.returncode = code
            self.ended_at = time.monotonic()
            self._log_file.close()

    def poll(self):
        """The exit code, or None while running (negative: killed by that signal)."""
        code = self.popen.poll()
        if code is not None:
            self._reap(code)
        return self.returncode

    def alive(self):
        return self.poll() is None

    def wait(self, timeout=None):
        """Waits for exit and returns the code; raises subprocess.TimeoutExpired on timeout."""
        code = self.popen.wait(timeout)
        self._reap(code)
        return code

    def send_signal(self, sig):
        if self.alive():
            self.popen.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Sends sig and waits up to timeout s. Returns the exit code; a process that does not
        exit in time is killed with SIGKILL (so the code is then -9)."""
        if not self.alive():
            return self.returncode
        self.popen.send_signal(sig)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            with open(self.log_path, "ab") as f:
                f.write(f"\n[harness] no exit {timeout}s after signal {sig}; SIGKILL\n".encode())
            return self.kill()

    def kill(self):
        """SIGKILL to the whole process group; returns the exit code."""
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            return self.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a zombie that will not die
            return None

    def log(self):
        """Everything the process wrote so far (stdout and stderr), as text."""
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def tail(self, lines=40):
        return "\n".join(self.log().splitlines()[-lines:])

    def log_lines(self):
        return self.log().splitlines()

    def json_logs(self):
        """The log lines that are JSON objects (hookflow's default log format), parsed."""
        out = []
        for line in self.log_lines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def wait_for_log(self, pattern, timeout=20):
        """Waits until a log line matches the regex pattern; returns the match. Raises if the
        process exits or the time runs out first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_lines():
                m = rx.search(line)
                if m:
                    return m
            if not self.alive():
                raise AssertionError(f"{self.name} exited ({self.returncode}) before logging "
                                     f"/{pattern}/; log tail:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not log /{pattern}/ in {timeout}s; "
                                     f"log tail:\n{self.tail()}")
            time.sleep(0.05)

    def sanitizer_errors(self):
        """Log lines where ASan/LSan/UBSan reported a problem."""
        return [line for line in self.log_lines() if any(m in line for m in _SANITIZER_MARKERS)]


def kill_all(procs=None):
    """Kills every still-running Proc (default: all of them). Returns the ones it had to kill."""
    killed = []
    for p in (all_procs() if procs is None else procs):
        if p.alive():
            p.kill()
            killed.append(p)
    return killed


def wait_until(predicate, timeout=20, interval=0.05, what=None):
    """Calls predicate until it returns something truthy and returns that; raises AssertionError
    naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for "
                                 f"{what or getattr(predicate, '__name__', 'condition')}")
        time.sleep(interval)


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago (the kernel's pick for port 0). Prefer letting a
    server bind port 0 and reading it back where the server supports it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=30):
    """One HTTP request on a fresh connection (Connection: close).

    body: bytes, str (sent as UTF-8) or a dict/list (sent as JSON with Content-Type
    application/json unless headers say otherwise). Returns (status, headers, body bytes) with
    headers a dict of lower-cased names (repeated headers joined with ", ").
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url}")
    hdrs = {k: v for k, v in (headers or {}).items()}
    lower = {k.lower() for k in hdrs}
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        if "content-type" not in lower:
            hdrs["Content-Type"] = "application/json"
    elif isinstance(body, str):
        body = body.encode()
    if "connection" not in lower:
        hdrs["Connection"] = "close"
    conn_cls = (http_client.HTTPSConnection if parts.scheme == "https"
                else http_client.HTTPConnection)
    conn = conn_cls(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        out = {}
        for k, v in resp.getheaders():
            k = k.lower()
            out[k] = f"{out[k]}, {v}" if k in out else v
        return resp.status, out, data
    finally:
        conn.close()


def metrics(base, timeout=10):
    """GET base/metrics: its samples as {name{labels}: value}."""
    status, _, body = http("GET", base + "/metrics", timeout=timeout)
    assert status == 200, status
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_http(url, timeout=20, proc=None, ok=lambda status: status < 500):
    """Polls GET url until ok(status) (default: any answer below 500). Returns the status. If proc
    is given and exits first, fails at once with its log tail."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            status, _, _ = http("GET", url, timeout=2)
            if ok(status):
                return status
            last = f"status {status}"
        except (OSError, http_client.HTTPException) as e:
            last = repr(e)
        if proc is not None and not proc.alive():
            raise AssertionError(f"{proc.name} exited ({proc.returncode}) while waiting for "
                                 f"{url}; log tail:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not ready after {timeout}s (last: {last})")
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# PostgreSQL


class Postgres:
    """A throwaway PostgreSQL cluster run by deploy/local/pg.sh in a temporary directory.

    .url is the URL of its "hookflow" database. As root pg.sh runs the server as the postgres
    user and hands it the directory; cleanup() (root can remove it) deletes it.
    """

    def __init__(self, directory=None):
        self.dir = directory or tempfile.mkdtemp(prefix="hf-pg-")
        self.url = None
        self._script = os.path.join(source_dir(), "deploy", "local", "pg.sh")
        if not os.path.exists(self._script):
            raise HarnessError(f"{self._script} not found")

    def _pg(self, *args, timeout=120):
        r = subprocess.run(["bash", self._script, *args, self.dir], capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode != 0:
            raise HarnessError(f"pg.sh {' '.join(args)} failed ({r.returncode}): "
                               f"{r.stderr.strip() or r.stdout.strip()}")
        return r.stdout

    def start(self):
        """Starts the server (initialising the directory the first time); returns .url."""
        out = [line for line in self._pg("start").splitlines() if line.strip()]
        if not out or not out[-1].startswith("postgresql://"):
            raise HarnessError(f"pg.sh start printed no URL: {out!r}")
        self.url = out[-1].strip()
        return self.url

    def stop(self):
        """Fast shutdown (connections are cut). start() or restart() brings it back."""
        self._pg("stop")

    def restart(self):
        """Stops and starts the server; pg.sh keeps the same port when it is still free. Returns
        .url (compare it with the old one if you keep URLs from fresh_db())."""
        self.stop()
        return self.start()

    def running(self):
        return subprocess.run(["bash", self._script, "status", self.dir],
                              capture_output=True).returncode == 0

    def url_for(self, dbname):
        """The URL of database dbname on this server."""
        parts = urllib.parse.urlsplit(self.url)
        return urllib.parse.urlunsplit(parts._replace(path="/" + dbname))

    def connect(self, url=None, autocommit=True):
        """A psycopg2 connection (autocommit by default) to url, default .url."""
        import psycopg2
        conn = psycopg2.connect(url or self.url)
        conn.autocommit = autocommit
        return conn

    def fresh_db(self, prefix="t"):
        """Creates a new empty database with a random name; returns its URL."""
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,30}", prefix):
            raise ValueError(f"bad database name prefix {prefix!r}")
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        conn = self.connect(self.url_for("postgres"))
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url_for(name)

    def log(self):
        try:
            with open(os.path.join(self.dir, "postgres.log"), encoding="utf-8",
                      errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def cleanup(self):
        """Stops the server and removes its directory."""
        try:
            self.stop()
        except (HarnessError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Dev broker

Message = collections.namedtuple("Message",
                                 "topic partition offset key value headers timestamp")
Message.__doc__ = ("A consumed Kafka message: key/value bytes (or None), headers a list of "
                   "(name, bytes) pairs, timestamp in ms.")

CATEGORIES = ("accounting", "marketing-automation", "messaging")


class DevBroker:
    """hookflow-devbroker running in the background (see deploy/local/README.md).

    brokers/partitions/replication/topic_prefix map to the command-line options; env adds
    environment variables. start() returns once the bootstrap file is written.
    """

    def __init__(self, brokers=3, partitions=6, replication=None, topic_prefix="hookflow",
                 env=None, extra_args=(), name="devbroker"):
        self.brokers = brokers
        self.partitions = partitions
        self.replication = replication if replication is not None else min(3, brokers)
        self.topic_prefix = topic_prefix
        self.env = dict(env or {})
        self.extra_args = list(extra_args)
        self.name = name
        self.dir = None
        self.bootstrap_file = None
        self.control_path = None
        self.bootstrap = None
        self.proc = None

    @property
    def topics(self):
        """The four topics the broker creates at start."""
        return [self.topic(c) for c in CATEGORIES] + [f"{self.topic_prefix}.deadletter"]

    def topic(self, category):
        """<prefix>.webhooks.<category>, or <prefix>.deadletter for "deadletter"."""
        if category == "deadletter":
            return f"{self.topic_prefix}.deadletter"
        return f"{self.topic_prefix}.webhooks.{category}"

    def start(self, timeout=30):
        self.dir = temp_dir("devbroker")
        self.bootstrap_file = os.path.join(self.dir, "bootstrap")
        self.control_path = self.bootstrap_file + ".ctl"
        args = [bin("hookflow-devbroker"), "--brokers", self.brokers, "--partitions",
                self.partitions, "--replication", self.replication, "--topic-prefix",
                self.topic_prefix, "--bootstrap-file", self.bootstrap_file, *self.extra_args]
        self.proc = Proc(args, env=self.env, name=self.name)

        def ready():
            if not self.proc.alive():
                raise AssertionError(f"devbroker exited ({self.proc.returncode}) during start; "
                                     f"log:\n{self.proc.tail()}")
            try:
                with open(self.bootstrap_file) as f:
                    text = f.read()
            except FileNotFoundError:
                return None
            return text.strip() if text.endswith("\n") else None

        try:
            self.bootstrap = wait_until(ready, timeout, what="devbroker bootstrap file")
        except AssertionError as e:
            if self.proc.alive():
                raise AssertionError(f"{e}; devbroker log:\n{self.proc.tail()}") from None
            raise
        return self

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Stops the broker; returns its exit code."""
        return self.proc.stop(sig, timeout) if self.proc else None

    def kill(self):
        return self.proc.kill() if self.proc else None

    def ctl(self, command, timeout=30):
        """Sends one control command over the unix socket; returns the reply line ("ok ...",
        "error: ...") without the newline."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.control_path)
            s.sendall(command.encode() + b"\n")
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        if not buf:
            raise AssertionError(f"devbroker closed the control connection without replying to "
                                 f"{command!r}")
        return buf.split(b"\n", 1)[0].decode()

    def ctl_ok(self, command, timeout=30):
        """ctl() that fails the test unless the reply is ok; returns the text after "ok"."""
        reply = self.ctl(command, timeout)
        if reply != "ok" and not reply.startswith("ok "):
            raise AssertionError(f"devbroker {command!r} -> {reply!r}")
        return reply[3:]

    def kafka_config(self, config=None, **props):
        """A confluent_kafka configuration dict for this broker: bootstrap.servers, then config
        (a dict of librdkafka properties), then props with underscores read as dots
        (session_timeout_ms=6000 is session.timeout.ms)."""
        conf = {"bootstrap.servers": self.bootstrap}
        conf.update(config or {})
        conf.update({k.replace("_", "."): v for k, v in props.items()})
        return conf

    def producer(self, config=None, **props):
        """A confluent_kafka Producer for this broker, acks=all and idempotent unless config or
        props (as in kafka_config) say otherwise."""
        from confluent_kafka import Producer
        conf = {"acks": "all", "enable.idempotence": True}
        conf.update(config or {})
        return Producer(self.kafka_config(conf, **props))

    def consumer(self, group_id=None, config=None, **props):
        """A confluent_kafka Consumer for this broker in group group_id (default: a new random
        group), with session.timeout.ms=6000 so that the mock's rebalances take seconds, not
        45 s, and auto.offset.reset=earliest; config/props as in kafka_config."""
        from confluent_kafka import Consumer
        conf = {"group.id": group_id or f"harness-{uuid.uuid4().hex[:8]}",
                "session.timeout.ms": 6000, "auto.offset.reset": "earliest"}
        conf.update(config or {})
        return Consumer(self.kafka_config(conf, **props))

    def produce_sync(self, topic, value, key=None, headers=None, timeout=30, config=None):
        """Produces one message with producer(config) and waits for its delivery report; returns
        the delivered confluent_kafka Message, raises AssertionError with the error otherwise."""
        p = self.producer(config)
        result = {}

        def on_delivery(err, msg):
            result["err"], result["msg"] = err, msg

        p.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
        p.flush(timeout)
        if "err" not in result:
            raise AssertionError(f"no delivery report for {topic} in {timeout}s")
        if result["err"] is not None:
            raise AssertionError(f"delivery to {topic} failed: {result['err']}")
        return result["msg"]

    def consume_all(self, topic, timeout=30, idle=1.0, config=None):
        """Reads topic from the beginning of every partition until each partition has reached
        the end it had when the call started and nothing new arrived for `idle` seconds (or
        `timeout` passed). Returns Message tuples ordered by (partition, offset)."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
        base = {"bootstrap.servers": self.bootstrap,
                "group.id": f"harness-{uuid.uuid4().hex[:8]}",
                "session.timeout.ms": 6000,
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "auto.offset.reset": "earliest"}
        base.update(config or {})
        c = Consumer(base)
        out = []
        try:
            md = c.list_topics(topic, timeout=10)
            tmd = md.topics.get(topic)
            if tmd is None or tmd.error is not None:
                raise AssertionError(f"topic {topic} not available: "
                                     f"{tmd.error if tmd else 'missing'}")
            parts = sorted(tmd.partitions)
            ends = {}
            for p in parts:
                _, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                ends[p] = hi
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
            next_offset = {p: 0 for p in parts}
            deadline = time.monotonic() + timeout
            last_msg = time.monotonic()
            while time.monotonic() < deadline:
                msg = c.poll(0.1)
                if msg is None:
                    caught_up = all(next_offset[p] >= ends[p] for p in parts)
                    if caught_up and time.monotonic() - last_msg >= idle:
                        break
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"consuming {topic}: {msg.error()}")
                last_msg = time.monotonic()
                next_offset[msg.partition()] = msg.offset() + 1
                out.append(Message(msg.topic(), msg.partition(), msg.offset(), msg.key(),
                                   msg.value(), list(msg.headers() or []),
                                   msg.timestamp()[1]))
        finally:
            c.close()
        out.sort(key=lambda m: (m.partition, m.offset))
        return out


class TimedLog:
    """A test's own log, from any thread: lines stamped with the seconds since it began, printed
    at once (pytest -s) and kept for the failure message."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.lines = []
        self.lock = threading.Lock()

    def __call__(self, msg):
        line = f"[{time.monotonic() - self.t0:6.2f}s] {msg}"
        with self.lock:
            self.lines.append(line)
        print(line, flush=True)

    def text(self):
        with self.lock:
            return "\n".join(self.lines)


def paced(items, seconds):
    """Yields the items spread evenly over `seconds` (the i-th at i * seconds / len(items) after
    the first), as a sender keeping a schedule; a late one goes at once."""
    t0 = time.monotonic()
    gap = seconds / max(len(items), 1)
    for i, item in enumerate(items):
        wait = t0 + i * gap - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        yield item
