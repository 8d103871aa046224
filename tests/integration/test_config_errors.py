"""Integration: every executable refuses a bad HOOKFLOW_* value at start with exactly one clear
line on stderr naming the variable, exits non-zero, and leaks nothing (the binaries run under
ASan/LSan here)."""

import os
import subprocess

import pytest

import harness

CASES = [
    (["hookflow-ingest"], {"HOOKFLOW_INGEST_THREADS": "lots"},
     'hookflow-ingest: HOOKFLOW_INGEST_THREADS="lots" is not a whole number'),
    (["hookflow-ingest"], {"HOOKFLOW_INGEST_ACK_TIMEOUT_MS": "10"},
     "hookflow-ingest: HOOKFLOW_INGEST_ACK_TIMEOUT_MS=10 is out of range (50..60000)"),
    (["hookflow-ingest"], {"HOOKFLOW_KAFKA_ACKS": "1"},
     "hookflow-ingest: HOOKFLOW_KAFKA_ACKS cannot be set: hookflow's delivery guarantees depend "
     "on acks"),
    (["hookflow-ingest"], {"HOOKFLOW_INGEST_LINGER_MS": "1e3"},
     'hookflow-ingest: HOOKFLOW_INGEST_LINGER_MS="1e3" is not a decimal number (e.g. 0.5)'),
    (["hookflow-ingest"], {"HOOKFLOW_LOG_FORMAT": "xml"},
     'hookflow-ingest: HOOKFLOW_LOG_FORMAT="xml" is not one of json|text'),
    (["hookflow-engine", "work"], {"HOOKFLOW_DATABASE_URL": "postgresql://x/y",
                                   "HOOKFLOW_WORKER_LEASE_MS": "5"},
     "hookflow-engine: work: HOOKFLOW_WORKER_LEASE_MS=5 is out of range (1000..3600000)"),
    (["hookflow-engine", "work"], {"HOOKFLOW_DATABASE_URL": None},
     None),
    (["hookflow-engine", "serve"], {"HOOKFLOW_DATABASE_URL": "postgresql://x/y",
                                    "HOOKFLOW_API_LISTEN": "nowhere"},
     None),
    (["hookflow-engine", "migrate"], {"HOOKFLOW_DATABASE_URL": None}, None),
]


@pytest.mark.parametrize("args,env,expected", CASES)
def test_bad_setting_is_one_clear_line(args, env, expected):
    full = dict(os.environ)
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    out = subprocess.run([harness.bin(args[0]), *args[1:]], capture_output=True, text=True,
                         timeout=60, env=full)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(args[0] + ":")
    if expected:
        assert lines[0] == expected
    else:
        names = [k for k in env] + ["HOOKFLOW_DATABASE_URL"]
        assert any(n in lines[0] for n in names), lines[0]
