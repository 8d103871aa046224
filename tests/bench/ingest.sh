#!/usr/bin/env bash
# Benchmark: hookflow-ingest accepting correctly signed 1 KB Meta deliveries (each one produced
# to the dev broker with acks=all before its 200), against nginx answering a static 200 under the
# same wrk load on the same machine. Prints requests/s of both, the ratio, ingest's latency
# percentiles and its peak RSS, and, for scale, what ingest's HTTP layer alone answers (GET
# /healthz: libevent's evhttp doing no work).
# It also prints the CPU time per request of each process (ingest, the dev broker, nginx, wrk).
#   tests/bench/ingest.sh [duration_s=15] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
duration=${1:-15}
conns=${2:-64}
bash deploy/local/install-deps.sh
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DHOOKFLOW_TESTS=OFF >/dev/null
cmake --build build/bench -j"$(nproc)" >/dev/null
bin="$root/build/bench"
work=$(mktemp -d /tmp/hf-bench-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The same 1 KB signed body for every request (ingest's cost does not depend on the id).
secret="bench-app-secret"
mkdir -p "$work/secrets/meta"
printf '%s' "$secret" >"$work/secrets/meta/app_secret"
pad=$(head -c 2000 /dev/zero | tr '\0' 'x' | head -c 820)
body='{"object":"page","entry":[{"id":"104877","time":1700000000000,"messaging":[{"sender":{"id":"6123"},"recipient":{"id":"104877"},"timestamp":1700000000000,"message":{"mid":"m_bench","text":"'$pad'"}}]}]}'
sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$secret" -hex | sed 's/^.* //')
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = [[$body]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Hub-Signature-256"] = "sha256=$sig"
LUA
echo "body bytes: ${#body}"

"$bin/hookflow-devbroker" --bootstrap-file "$work/bootstrap" --partitions 6 >"$work/devbroker.log" 2>&1 &
devbroker_pid=$!
pids+=($devbroker_pid)
for _ in $(seq 1 100); do [ -s "$work/bootstrap" ] && break; sleep 0.1; done
iport=$(free_port)
HOOKFLOW_KAFKA_BROKERS=$(cat "$work/bootstrap") HOOKFLOW_SECRETS_DIR="$work/secrets" \
HOOKFLOW_INGEST_LISTEN="127.0.0.1:$iport" HOOKFLOW_LOG_LEVEL=warn HOOKFLOW_INGEST_THREADS=2 \
  "$bin/hookflow-ingest" >"$work/ingest.log" 2>&1 &
ingest_pid=$!
pids+=($ingest_pid)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$iport/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$iport/api/integrations/webhooks/meta" \
  -H 'Content-Type: application/json' -H "X-Hub-Signature-256: sha256=$sig" --data-binary "$body")
[ "$code" = 200 ] || { echo "ingest answered $code to the signed body"; cat "$work/ingest.log"; exit 1; }

nport=$(free_port)
cat >"$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx-body;
  server { listen 127.0.0.1:$nport; location / { return 200 "ok"; } }
}
NGINX
nginx -c "$work/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
pids+=($nginx_pid)
sleep 0.5

# CPU time per request of every process on the two cores (user + kernel, from /proc), so the
# figures say where a request's time goes: ingest's own threads (event loops, delivery reports)
# and its librdkafka threads, the
# dev broker, nginx, and wrk itself.
cat >"$work/cpu.py" <<'PY'
import json, os, sys
def parent(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]
    except OSError:
        return None
def ticks(pid):
    """{thread class: clock ticks} of a process and its children (nginx's workers)."""
    out = {}
    pids = [pid] + [p for p in os.listdir("/proc") if p.isdigit() and parent(p) == pid]
    for p in pids:
        for t in os.listdir(f"/proc/{p}/task"):
            try:
                s = open(f"/proc/{p}/task/{t}/stat").read()
            except OSError:
                continue
            comm, rest = s[s.index("(") + 1:s.rindex(")")], s[s.rindex(")") + 2:].split()
            cls = "librdkafka threads" if comm.startswith("rdk:") else "own threads"
            out[cls] = out.get(cls, 0) + int(rest[11]) + int(rest[12])
    return out
if sys.argv[1] == "snap":  # snap FILE NAME=PID...
    json.dump({a.split("=")[0]: ticks(a.split("=")[1]) for a in sys.argv[3:]}, open(sys.argv[2], "w"))
else:  # diff BEFORE AFTER WRK_TIME_FILE WRK_OUTPUT NAME...
    a, b = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
    hz = os.sysconf("SC_CLK_TCK")
    n = next(int(l.split()[0]) for l in open(sys.argv[5]) if "requests in" in l)
    us = lambda t: t * 1e6 / hz / n
    parts = []
    for name in sys.argv[6:]:
        for cls, t in sorted(b[name].items()):
            parts.append((f"{name} {cls}" if name == "ingest" else name, us(t - a[name].get(cls, 0))))
    u, s = (float(x) for x in open(sys.argv[4]).read().split()[-2:])
    parts.append(("wrk", (u + s) * 1e6 / n))
    print("  CPU us/request: " + ", ".join(f"{k} {v:.1f}" for k, v in parts if v >= 0.05) +
          f"; total {sum(v for _, v in parts):.1f}")
PY
# run_wrk NAME URL [wrk options]: wrk's output in $work/NAME.out, the CPU each process spent.
run_wrk() {
  local name=$1 url=$2
  shift 2
  /usr/bin/python3 "$work/cpu.py" snap "$work/$name.before" "${watched[@]}"
  /usr/bin/time -f '%U %S' -o "$work/$name.wrktime" \
    wrk -t2 -c"$conns" -d"${duration}s" --latency "$@" "$url" | tee "$work/$name.out"
  /usr/bin/python3 "$work/cpu.py" snap "$work/$name.after" "${watched[@]}"
  /usr/bin/python3 "$work/cpu.py" diff "$work/$name.before" "$work/$name.after" \
    "$work/$name.wrktime" "$work/$name.out" "${watched[@]%%=*}" | tee "$work/$name.cpu"
}
watched=("ingest=$ingest_pid" "devbroker=$devbroker_pid" "nginx=$nginx_pid")
# nginx runs before and after ingest and the ratio uses their mean, so a shared machine that
# speeds up or slows down during the run does not tilt it.
echo "== nginx static 200"
run_wrk nginx "http://127.0.0.1:$nport/" -s "$work/post.lua"
echo "== hookflow-ingest (verify + produce acks=all + answer)"
run_wrk ingest "http://127.0.0.1:$iport/api/integrations/webhooks/meta" -s "$work/post.lua"
echo "== nginx static 200 again"
run_wrk nginx2 "http://127.0.0.1:$nport/" -s "$work/post.lua"

echo "== hookflow-ingest GET /healthz (its HTTP layer alone, for scale)"
run_wrk healthz "http://127.0.0.1:$iport/healthz"

rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
p() { awk -v q="$2" '$1 == q {print $2}' "$1"; }
non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/ingest.out")
rss_kb=$(awk '/VmHWM/ {print $2}' /proc/$ingest_pid/status)
n1=$(rps "$work/nginx.out"); n2=$(rps "$work/nginx2.out"); i=$(rps "$work/ingest.out")
n=$(awk -v a="$n1" -v b="$n2" 'BEGIN { printf "%.2f", (a + b) / 2 }')
echo
echo "== results (wrk -t2 -c$conns -d${duration}s, 1 KB signed deliveries, $(nproc) cores)"
echo "nginx static 200:      $n req/s (mean of $n1 before and $n2 after)"
echo "hookflow-ingest:       $i req/s  (non-2xx: ${non2xx:-0})"
awk -v i="$i" -v n="$n" 'BEGIN { printf "ratio ingest/nginx:    %.2f (target >= 0.50)\n", i / n }'
h=$(rps "$work/healthz.out")
awk -v h="$h" -v n="$n" 'BEGIN { printf "ingest GET /healthz:   %s req/s = %.2f of nginx (libevent evhttp with no work: the ceiling)\n", h, h / n }'
echo "ingest latency:        p50 $(p "$work/ingest.out" 50%)  p90 $(p "$work/ingest.out" 90%)  p99 $(p "$work/ingest.out" 99%)  (target p99 < 10ms)"
echo "ingest peak RSS:       $((rss_kb / 1024)) MB (target < 64 MB)"
echo "CPU per request (user + kernel, us; the two cores are shared by all of them):"
for r in nginx ingest nginx2 healthz; do printf '  %-8s%s\n' "$r" "$(sed 's/^  CPU us\/request://' "$work/$r.cpu")"; done
