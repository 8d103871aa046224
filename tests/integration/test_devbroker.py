"""test_devbroker: hookflow-devbroker (the local stack's Kafka-protocol broker) through its real
binary: options, topics, produce/consume, fault injection over the control socket, shutdown."""

import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient

import harness


def run_devbroker(*args, env=None, timeout=30):
    full_env = harness.sanitizer_env(dict(os.environ))
    full_env.update(env or {})
    return subprocess.run([harness.bin("hookflow-devbroker"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def project_version():
    with open(os.path.join(harness.source_dir(), "CMakeLists.txt")) as f:
        m = re.search(r"project\(hookflow\s+VERSION\s+([0-9.]+)", f.read())
    assert m, "no project VERSION in CMakeLists.txt"
    return m.group(1)


def cluster_metadata(bootstrap):
    """Metadata from a fresh AdminClient (so nothing is cached from an earlier call)."""
    return AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15)


def kcat_metadata(bootstrap):
    """{topic: {partition: {"leader": id, "replicas": [ids]}}} and the broker ids, from kcat."""
    r = subprocess.run(["kcat", "-L", "-J", "-b", bootstrap], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    topics = {t["topic"]: {p["partition"]: {"leader": p["leader"],
                                            "replicas": [x["id"] for x in p["replicas"]]}
                           for p in t["partitions"]}
              for t in doc["topics"]}
    return topics, sorted(b["id"] for b in doc["brokers"])


def ready_line(db):
    """The devbroker's one "ready" log line, parsed (it follows the bootstrap file closely)."""
    db.proc.wait_for_log(r'"event":"ready"', timeout=10)
    ready = [line for line in db.proc.json_logs() if line.get("event") == "ready"]
    assert len(ready) == 1, db.proc.log()
    return ready[0]


class Deliveries:
    """Collects delivery reports: .reports is a list of (err, value, partition, offset)."""

    def __init__(self):
        self.reports = []

    def __call__(self, err, msg):
        self.reports.append((err, msg.value(), msg.partition(), msg.offset()))


def produce_one(producer, topic, value, timeout=30, key=None):
    """Produces one message; returns (err, seconds until its delivery report)."""
    d = Deliveries()
    t0 = time.monotonic()
    producer.produce(topic, value=value, key=key, on_delivery=d)
    producer.flush(timeout)
    assert len(d.reports) == 1, f"no delivery report for {value!r} within {timeout}s"
    return d.reports[0][0], time.monotonic() - t0


NO_RETRY = {"enable.idempotence": False, "retries": 0, "acks": "all"}


# ---------------------------------------------------------------------------------- options

def test_version_prints_name_and_project_version():
    r = run_devbroker("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"hookflow-devbroker {project_version()}\n"
    assert r.stderr == ""


def test_help_documents_options_and_control_commands():
    r = run_devbroker("--help")
    assert r.returncode == 0
    for word in ("--brokers", "--partitions", "--replication", "--topic-prefix",
                 "--bootstrap-file", "--control", "broker down", "rtt", "errors", "leader",
                 "clear", "topics", "ping", " ctl "):
        assert word in r.stdout, f"--help does not mention {word!r}"


@pytest.mark.parametrize("args", [
    ["--bogus"],
    ["--brokers"],
    ["--brokers", "0"],
    ["--brokers", "three"],
    ["--partitions", "0"],
    ["--partitions", "6x"],
    ["--replication", "4", "--brokers", "3"],
    ["--topic-prefix", "bad/prefix"],
    ["--topic-prefix", ""],
    ["stray-argument"],
])
def test_bad_option_exits_2_with_one_line(args):
    r = run_devbroker(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("hookflow-devbroker: ") and len(lines[0]) > 25
    assert r.stdout == ""


def test_bad_environment_exits_2_naming_the_variable():
    r = run_devbroker("--brokers", "1", env={"HOOKFLOW_LOG_LEVEL": "loud"})
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1
    assert "HOOKFLOW_LOG_LEVEL" in r.stderr


# ----------------------------------------------------------------------------------- topics

@pytest.mark.parametrize("brokers,partitions,replication", [
    (3, 6, None),  # the defaults
    (2, 5, None),  # replication defaults to min(3, brokers) = 2
    (1, 3, None),
    (4, 7, 2),
])
def test_topics_exist_with_configured_layout(make_devbroker, brokers, partitions, replication):
    db = make_devbroker(brokers=brokers, partitions=partitions, replication=replication)
    asked = replication or min(3, brokers)
    # librdkafka 2.0.2's mock ignores the replication factor and always uses min(3, brokers);
    # the devbroker reports what the cluster really does and warns when that differs.
    ready = ready_line(db)
    want_replicas = int(ready["replication"])
    assert want_replicas in (asked, min(3, brokers))
    warned = any(line.get("event") == "replication" for line in db.proc.json_logs())
    assert warned == (want_replicas != asked)
    assert db.topics == ["hookflow.webhooks.accounting",
                         "hookflow.webhooks.marketing-automation",
                         "hookflow.webhooks.messaging", "hookflow.deadletter"]

    md = cluster_metadata(db.bootstrap)
    assert sorted(md.brokers) == list(range(1, brokers + 1))
    assert set(md.topics) == set(db.topics)
    for name in db.topics:
        t = md.topics[name]
        assert t.error is None, (name, t.error)
        assert sorted(t.partitions) == list(range(partitions)), name
        for p in t.partitions.values():
            assert len(p.replicas) == want_replicas, (name, p.id, p.replicas)
            assert p.leader in p.replicas

    topics, broker_ids = kcat_metadata(db.bootstrap)
    assert broker_ids == list(range(1, brokers + 1))
    assert set(topics) == set(db.topics)
    for name in db.topics:
        assert sorted(topics[name]) == list(range(partitions)), name
        assert all(len(p["replicas"]) == want_replicas for p in topics[name].values())

    assert db.ctl("topics") == "ok " + ",".join(sorted(db.topics))


def test_topic_prefix_option_and_environment(make_devbroker, spawn):
    db = make_devbroker(brokers=1, partitions=2, topic_prefix="acme-dev")
    assert set(cluster_metadata(db.bootstrap).topics) == {
        "acme-dev.webhooks.accounting", "acme-dev.webhooks.marketing-automation",
        "acme-dev.webhooks.messaging", "acme-dev.deadletter"}

    # Without --topic-prefix the prefix comes from HOOKFLOW_TOPIC_PREFIX.
    d = harness.temp_dir("prefix-env")
    bootstrap_file = os.path.join(d, "bs")
    p = spawn([harness.bin("hookflow-devbroker"), "--brokers", "1", "--partitions", "2",
               "--bootstrap-file", bootstrap_file], env={"HOOKFLOW_TOPIC_PREFIX": "fromenv"})
    harness.wait_until(lambda: os.path.exists(bootstrap_file) or not p.alive(), 20,
                       what="bootstrap file")
    assert p.alive(), p.tail()
    with open(bootstrap_file) as f:
        bootstrap = f.read().strip()
    assert {t for t in cluster_metadata(bootstrap).topics} == {
        "fromenv.webhooks.accounting", "fromenv.webhooks.marketing-automation",
        "fromenv.webhooks.messaging", "fromenv.deadletter"}
    assert p.stop() == 0, p.tail()


def test_ready_line_and_bootstrap_file(devbroker):
    with open(devbroker.bootstrap_file) as f:
        content = f.read()
    assert re.fullmatch(r"127\.0\.0\.1:\d+(,127\.0\.0\.1:\d+){2}\n", content), content
    ready = ready_line(devbroker)
    assert ready["bootstrap"] == content.strip()
    assert (ready["brokers"], ready["partitions"], ready["replication"]) == ("3", "6", "3")
    assert ready["control"] == devbroker.control_path


def test_unknown_topic_is_auto_created(devbroker):
    devbroker.produce_sync("scratch.auto-created", b"x")
    t = cluster_metadata(devbroker.bootstrap).topics["scratch.auto-created"]
    assert t.error is None
    assert len(t.partitions) == 4  # the mock cluster's default, documented in the README
    assert "scratch.auto-created" in devbroker.ctl_ok("topics").split(",")


# ---------------------------------------------------------------------------- produce/consume

def test_idempotent_acks_all_round_trip(devbroker):
    topic = devbroker.topic("accounting")
    producer = devbroker.producer({"linger.ms": 5})  # acks=all, enable.idempotence=true
    d = Deliveries()
    sent = {}
    for i in range(300):
        key = f"xero:tenant-{i % 5}".encode()
        value = json.dumps({"n": i, "key": key.decode()}).encode()
        headers = [("provider", b"xero"), ("seq", str(i).encode())]
        sent[value] = (key, headers)
        producer.produce(topic, value=value, key=key, headers=headers, on_delivery=d)
    assert producer.flush(30) == 0
    assert len(d.reports) == 300
    assert [r for r in d.reports if r[0] is not None] == []

    msgs = devbroker.consume_all(topic)
    assert len(msgs) == 300
    assert {m.value for m in msgs} == set(sent)
    assert {(m.partition, m.offset) for m in msgs} == {(r[2], r[3]) for r in d.reports}
    for m in msgs:
        key, headers = sent[m.value]
        assert m.key == key
        assert m.headers == headers
    # One key, one partition, and its messages in the order they were produced.
    by_key = {}
    for m in msgs:
        by_key.setdefault(m.key, []).append(m)
    for key, ms in by_key.items():
        assert len({m.partition for m in ms}) == 1, key
        ns = [json.loads(m.value)["n"] for m in sorted(ms, key=lambda m: m.offset)]
        assert ns == sorted(ns), key
    # The other topics stayed empty.
    assert devbroker.consume_all(devbroker.topic("messaging"), idle=0.3) == []


def test_retention_is_about_5_mib_per_partition(make_devbroker):
    """Documents the mock's retention (README): 5 MiB of record batches per partition."""
    db = make_devbroker(brokers=1, partitions=1)
    topic = db.topic("deadletter")
    producer = db.producer({"compression.type": "none", "linger.ms": 0})
    value = b"r" * 4096
    for _ in range(1800):  # ~7 MiB
        producer.produce(topic, value=value)
        producer.poll(0)
    assert producer.flush(60) == 0
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer(db.kafka_config(group_id="wm"))
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        c.close()
    assert hi == 1800
    assert lo > 0, "nothing was dropped: the mock retention changed, update the README"
    retained_mib = (hi - lo) * 4096 / (1 << 20)
    assert 4.0 <= retained_mib <= 5.0, retained_mib
    assert len(db.consume_all(topic)) == hi - lo


def test_consumer_group_rebalances_in_seconds_with_short_session_timeout(devbroker):
    """The README's advice: with session.timeout.ms=6000 the mock's group coordinator assigns
    a first member after ~3 s and rebalances for a second one in ~5 s (45 s with the default)."""
    topic = devbroker.topic("messaging")
    producer = devbroker.producer()
    for i in range(60):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0

    first = devbroker.consumer("engine-intake")
    second = None
    try:
        first.subscribe([topic])
        seen = {}
        t0 = time.monotonic()
        while not first.assignment():
            assert time.monotonic() - t0 < 10, "first member got no assignment in 10 s"
            first.poll(0.1)
        assert len(first.assignment()) == 6

        second = devbroker.consumer("engine-intake")
        second.subscribe([topic])
        t0 = time.monotonic()
        while not (first.assignment() and second.assignment()):
            assert time.monotonic() - t0 < 15, "rebalance for a second member took over 15 s"
            for c in (first, second):
                m = c.poll(0.1)
                if m is not None and not m.error():
                    seen[m.value()] = m.partition()
        owned = [tp.partition for tp in first.assignment()] + \
                [tp.partition for tp in second.assignment()]
        assert sorted(owned) == list(range(6))

        t0 = time.monotonic()
        while len(seen) < 60 and time.monotonic() - t0 < 20:
            for c in (first, second):
                m = c.poll(0.1)
                if m is not None and not m.error():
                    seen[m.value()] = m.partition()
        assert set(seen) == {f"v{i}".encode() for i in range(60)}
    finally:
        first.close()
        if second is not None:
            second.close()


# --------------------------------------------------------------------------- fault injection

def test_all_brokers_down_fails_delivery_then_up_recovers(devbroker):
    topic = devbroker.topic("messaging")
    producer = devbroker.producer({"message.timeout.ms": 3000, "reconnect.backoff.ms": 50,
                                   "reconnect.backoff.max.ms": 500})
    err, _ = produce_one(producer, topic, b"before")
    assert err is None, err

    for broker in (1, 2, 3):
        assert devbroker.ctl(f"broker down {broker}") == "ok"
    err, took = produce_one(producer, topic, b"during", timeout=20)
    assert err is not None, "produce succeeded with every broker down"
    assert err.code() == KafkaError._MSG_TIMED_OUT, err
    assert 2.5 <= took < 15, took

    for broker in (1, 2, 3):
        assert devbroker.ctl(f"broker up {broker}") == "ok"
    err, _ = produce_one(producer, topic, b"after", timeout=20)
    assert err is None, err

    values = [m.value for m in devbroker.consume_all(topic)]
    assert sorted(values) == [b"after", b"before"]


def test_injected_produce_errors_are_real_and_retried_by_idempotent_producer(devbroker):
    topic = devbroker.topic("accounting")

    # A producer that may not retry sees an injected error as it is.
    assert devbroker.ctl("errors Produce 1 NOT_ENOUGH_REPLICAS") == "ok"
    err, _ = produce_one(devbroker.producer(NO_RETRY), topic, b"not-retried")
    assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS, err

    # The idempotent producer retries through three of them and writes the message once.
    assert devbroker.ctl("errors Produce 3 NOT_ENOUGH_REPLICAS") == "ok"
    err, _ = produce_one(devbroker.producer(), topic, b"payload")
    assert err is None, err

    # It used up all three: the next non-retrying produce goes straight through.
    err, _ = produce_one(devbroker.producer(NO_RETRY), topic, b"probe")
    assert err is None, err

    values = sorted(m.value for m in devbroker.consume_all(topic))
    assert values == [b"payload", b"probe"]


def test_rtt_adds_latency_and_clear_removes_every_fault(devbroker):
    # The mock can stall a request for up to 1 s when another connection closes at the same
    # moment (README), so the thresholds leave that much slack.
    topic = devbroker.topic("marketing-automation")
    warm = devbroker.producer(NO_RETRY, message_timeout_ms=20000)
    err, _ = produce_one(warm, topic, b"warm-up")
    assert err is None, err
    assert devbroker.ctl("rtt all 2500") == "ok"
    err, took = produce_one(warm, topic, b"slow")
    assert err is None, err
    assert took >= 2.5, took

    assert devbroker.ctl("errors Produce 5 NOT_ENOUGH_REPLICAS") == "ok"
    assert devbroker.ctl("errors Metadata 2 _TRANSPORT") == "ok"
    assert devbroker.ctl("broker down all") == "ok"
    assert devbroker.ctl("clear") == "ok"

    # A producer that may not retry gets through at once: no error left, no latency, brokers up.
    err, took = produce_one(devbroker.producer(NO_RETRY, message_timeout_ms=10000), topic,
                            b"fast")
    assert err is None, err
    assert took < 2.0, took


def test_leader_command_moves_partition_leadership(devbroker):
    topic = devbroker.topic("messaging")
    for leader in (2, 3, 1):
        assert devbroker.ctl(f"leader {topic} 0 {leader}") == "ok"
        assert cluster_metadata(devbroker.bootstrap).topics[topic].partitions[0].leader == leader
    # Producing still works after a leader change.
    devbroker.produce_sync(topic, b"after-move")
    assert [m.value for m in devbroker.consume_all(topic)] == [b"after-move"]


# ---------------------------------------------------------------------------- control channel

@pytest.mark.parametrize("command", [
    "bogus",
    "",
    "broker",
    "broker sideways 1",
    "broker down 4",
    "broker down 0",
    "broker up x",
    "rtt 1",
    "rtt 1 -5",
    "rtt 1 fast",
    "errors Produce 3",
    "errors Nope 1 NOT_ENOUGH_REPLICAS",
    "errors Produce 0 NOT_ENOUGH_REPLICAS",
    "errors Produce 1 NO_SUCH_ERROR",
    "leader no.such.topic 0 1",
    "leader hookflow.deadletter 0 9",
    "leader hookflow.deadletter 99 1",
    "leader hookflow.deadletter x 1",
    "ping extra",
])
def test_bad_control_command_gets_error_and_changes_nothing(devbroker, command):
    reply = devbroker.ctl(command)
    assert reply.startswith("error: ") and len(reply) > len("error: ") + 3, reply
    assert devbroker.ctl("ping") == "ok"
    assert devbroker.ctl("topics") == "ok " + ",".join(sorted(devbroker.topics))
    devbroker.produce_sync(devbroker.topic("accounting"), b"still-works", config=NO_RETRY)


def test_control_serves_several_clients(devbroker):
    # A client that sent half a command does not block the others.
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.settimeout(10)
    idle.connect(devbroker.control_path)
    idle.sendall(b"pi")
    for _ in range(25):
        assert devbroker.ctl("ping") == "ok"
    # Several commands on one connection get one reply line each, in order.
    idle.sendall(b"ng\nbogus\ntopics\n")
    buf = b""
    while buf.count(b"\n") < 3:
        chunk = idle.recv(4096)
        assert chunk, buf
        buf += chunk
    idle.close()
    lines = buf.decode().splitlines()
    assert lines[0] == "ok"
    assert lines[1].startswith("error: ")
    assert lines[2] == "ok " + ",".join(sorted(devbroker.topics))


def test_ctl_client_mode(devbroker):
    r = run_devbroker("ctl", devbroker.control_path, "ping")
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
    r = run_devbroker("ctl", devbroker.control_path, "errors", "Produce", "1", "REQUEST_TIMED_OUT")
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
    r = run_devbroker("ctl", devbroker.control_path, "broker", "down", "42")
    assert r.returncode == 1 and r.stdout.startswith("error: "), r
    r = run_devbroker("ctl", os.path.join(devbroker.dir, "no-such.ctl"), "ping")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and r.stdout == ""
    r = run_devbroker("ctl", devbroker.control_path)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1


def test_second_devbroker_refuses_a_live_control_socket(devbroker):
    r = run_devbroker("--brokers", "1", "--bootstrap-file",
                      os.path.join(devbroker.dir, "other"), "--control", devbroker.control_path)
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) == 1 and "in use" in r.stderr, r.stderr
    assert devbroker.ctl("ping") == "ok"


# ---------------------------------------------------------------------------------- shutdown

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_0_and_removes_files(make_devbroker, sig):
    db = make_devbroker(brokers=2, partitions=2)
    # A connected client must not hold up the shutdown.
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(db.control_path)
    assert os.path.exists(db.bootstrap_file) and os.path.exists(db.control_path)
    db.produce_sync(db.topic("accounting"), b"some state to free")
    try:
        assert db.stop(sig, timeout=15) == 0, db.proc.tail()
    finally:
        client.close()
    assert not os.path.exists(db.bootstrap_file)
    assert not os.path.exists(db.control_path)
    assert db.proc.sanitizer_errors() == [], db.proc.log()
    assert any(line.get("event") == "stopping" for line in db.proc.json_logs())


# ------------------------------------------------------------------ review: options, control

def test_unknown_short_option_in_a_group_is_named():
    # `-xy` is reported as unknown option "-x" (getopt does not advance optind inside a group of
    # short options: argv[optind - 1] named the executable).
    r = run_devbroker("-xy")
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert "-x" in r.stderr and harness.bin("hookflow-devbroker") not in r.stderr, r.stderr


def test_long_option_without_value_is_named():
    # For a long option getopt's optopt is the option's code, not a letter: the message names
    # "--control" (it printed "-" and a control character).
    r = run_devbroker("--control")
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert "--control" in r.stderr, r.stderr
    assert not any(ord(ch) < 0x20 for ch in r.stderr.rstrip("\n")), repr(r.stderr)


def test_empty_control_path_is_refused():
    # `--control ""` is refused with one line and exit 2 like `--bootstrap-file ""` (bind() of an
    # empty sun_path lands in Linux's abstract namespace: no reachable control socket).
    d = harness.temp_dir("ctl-empty")
    p = harness.Proc([harness.bin("hookflow-devbroker"), "--brokers", "1", "--partitions", "1",
                      "--bootstrap-file", os.path.join(d, "bootstrap"), "--control", ""],
                     name="devbroker-empty-ctl")
    try:
        try:
            code = p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("--control \"\" was accepted; the broker is running: " + p.tail())
        assert code == 2
        assert len(p.log_lines()) == 1, p.log()
    finally:
        p.stop(signal.SIGTERM, timeout=15)


def test_unterminated_command_of_a_client_that_hung_up_is_not_run(devbroker):
    # A client that closes its connection after part of a line (it crashed, or was killed
    # between two writes) does not get the fragment run: nobody could read the reply, and here
    # "broker down all" took every broker down. A half-closed client, which can still read, does
    # get its last line run.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(devbroker.control_path)
    s.sendall(b"broker down all")
    s.close()
    try:
        devbroker.proc.wait_for_log(r'"command":"broker down all"', timeout=3)
        ran = True
    except AssertionError:
        ran = False
    try:
        assert devbroker.ctl("ping") == "ok"
        assert not ran, "the fragment of a closed connection was run: " + devbroker.proc.tail(3)
    finally:
        devbroker.ctl("clear")


def test_overlong_and_blank_lines_get_one_error_and_the_broker_keeps_serving(devbroker):
    def exchange(data):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(devbroker.control_path)
            s.sendall(data)
            buf = b""
            while b"\n" not in buf:  # the first reply line
                try:
                    chunk = s.recv(4096)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                buf += chunk
            return buf

    reply = exchange(b"x" * 5000 + b"\n")
    assert reply.startswith(b"error: ") and reply.count(b"\n") == 1, reply[:200]
    reply = exchange(b"ping " + b"y" * 1100 + b"\nping\n")  # the connection is closed after it
    assert reply == b"error: line too long\n", reply[:200]
    for blank in (b"\n", b"   \t \r\n"):
        assert exchange(blank).startswith(b"error: "), blank
    assert exchange(b"ping\r\n") == b"ok\n"
    assert devbroker.ctl("ping") == "ok"
    devbroker.produce_sync(devbroker.topic("accounting"), b"still-works", config=NO_RETRY)


def test_too_many_control_clients_get_one_error_line_then_slots_free_up(devbroker):
    idle = []
    try:
        for _ in range(16):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(devbroker.control_path)
            idle.append(s)
        # The broker accepts them as it polls; the next client is one too many. (It may close
        # before the client writes, so the client only reads.)
        def turned_away():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(devbroker.control_path)
                try:
                    return s.recv(4096)
                except (socket.timeout, ConnectionResetError):
                    return None
        reply = harness.wait_until(turned_away, timeout=10, what="the 17th client turned away")
        assert reply == b"error: too many control connections\n"
    finally:
        for s in idle:
            s.close()
    harness.wait_until(lambda: devbroker.ctl("ping") == "ok", timeout=10,
                       what="a free slot after the idle clients left")
