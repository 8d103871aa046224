#!/usr/bin/env bash
# Benchmark: one hookflow-engine worker turning events into succeeded runs (one action node
# against a local fake that answers at once: nginx), PostgreSQL with fsync on.
#   tests/bench/engine.sh [events=20000] [rate=1000] [seconds=20]
# Phase 1: `events` envelopes already in Kafka -> runs/s of one worker.
# Phase 2: signed webhooks through hookflow-ingest at `rate`/s for `seconds` -> latency from
#          webhook accepted (envelope received_at) to run succeeded (finished_at).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/install-deps.sh
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DHOOKFLOW_TESTS=OFF >/dev/null
cmake --build build/bench -j"$(nproc)" >/dev/null
export HOOKFLOW_SOURCE_DIR=$(pwd) HOOKFLOW_BUILD_DIR=$(pwd)/build/bench
exec /usr/bin/python3 tests/bench/engine_bench.py "$@"
