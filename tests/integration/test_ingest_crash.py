"""Integration: guarantee 1 under a crash. hookflow-ingest is killed with SIGKILL while clients
post signed deliveries; every event that was answered 2xx must be in Kafka."""

import json
import threading
import time
import uuid

import harness
import signing
from test_ingest import SECRETS, Ingest, TOPIC


def test_kill_9_under_load_loses_no_acknowledged_event(make_devbroker):
    broker = make_devbroker(brokers=3, partitions=6)
    ingest = Ingest(broker, name="ingest-crash")
    acked, lock, stop = [], threading.Lock(), threading.Event()
    errors = {"refused": 0, "conn": 0}

    def client():
        while not stop.is_set():
            mid = "m_" + uuid.uuid4().hex
            delivery = {"object": "page", "entry": [{"id": "555", "time": 1, "messaging": [
                {"sender": {"id": "1"}, "recipient": {"id": "555"}, "timestamp": 1,
                 "message": {"mid": mid, "text": "load"}}]}]}
            body, headers = signing.meta(SECRETS["meta/app_secret"], delivery)
            try:
                status, _, _ = ingest.post("meta", body, headers)
            except OSError:
                with lock:
                    errors["conn"] += 1
                continue
            with lock:
                if status == 200:
                    acked.append("meta:" + mid)
                else:
                    errors["refused"] += 1

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    harness.wait_until(lambda: len(acked) >= 200, timeout=60, what="200 acknowledged deliveries")
    ingest.proc.kill()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) >= 200
    in_kafka = {json.loads(m.value)["id"] for m in broker.consume_all(TOPIC["messaging"], idle=1.0)}
    missing = [i for i in acked if i not in in_kafka]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged events are not in Kafka"
