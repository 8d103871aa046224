#!/usr/bin/env bash
# Runs the hookflow stack on this machine: PostgreSQL (migrated, data kept in .hookflow/pg), the
# Kafka-protocol dev broker, and hookflow-ingest. Ctrl-C or SIGTERM stops all of it cleanly.
#   deploy/local/run.sh            build, start, print where everything listens, wait
#   HOOKFLOW_INGEST_LISTEN=127.0.0.1:9090 deploy/local/run.sh   another port
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
state="$root/.hookflow"
mkdir -p "$state"

# One stack per checkout: a second run says so instead of fighting the first over ports and data.
exec 9>"$state/run.lock"
if ! flock -n 9; then
  echo "hookflow: the local stack is already running from this checkout (see $state/run.pid)" >&2
  exit 1
fi
echo $$ >"$state/run.pid"

bash deploy/local/install-deps.sh

echo "== building"
cmake -S . -B build/local -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHOOKFLOW_TESTS=OFF >/dev/null
cmake --build build/local -j"$(nproc)" >/dev/null
bin="$root/build/local"

pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "== stopping"
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  bash deploy/local/pg.sh stop "$state/pg" || true
  rm -f "$state/run.pid"
  echo "stopped"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

echo "== PostgreSQL"
db_url=$(bash deploy/local/pg.sh start "$state/pg")
HOOKFLOW_DATABASE_URL="$db_url" "$bin/hookflow-engine" migrate

echo "== dev broker"
rm -f "$state/kafka.bootstrap"
"$bin/hookflow-devbroker" --bootstrap-file "$state/kafka.bootstrap" --control "$state/kafka.ctl" \
  >"$state/devbroker.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$state/kafka.bootstrap" ] && break; sleep 0.1; done
[ -s "$state/kafka.bootstrap" ] || { echo "dev broker did not start; see $state/devbroker.log" >&2; exit 1; }
brokers=$(cat "$state/kafka.bootstrap")

# Demo secrets, made once: random values, never printed, kept out of git (.hookflow/ is ignored).
secrets="$state/secrets"
if [ ! -d "$secrets" ]; then
  for f in xero/webhook_key quickbooks/verifier_token hubspot/client_secret klaviyo/webhook_secret \
           klaviyo/flow_secret twilio/auth_token meta/app_secret meta/verify_token; do
    mkdir -p "$secrets/$(dirname "$f")"
    head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$secrets/$f"
  done
  chmod -R go-rwx "$secrets"
fi

listen=${HOOKFLOW_INGEST_LISTEN:-127.0.0.1:8080}
echo "== hookflow-ingest"
HOOKFLOW_KAFKA_BROKERS="$brokers" HOOKFLOW_SECRETS_DIR="$secrets" HOOKFLOW_INGEST_LISTEN="$listen" \
HOOKFLOW_PUBLIC_BASE_URL="${HOOKFLOW_PUBLIC_BASE_URL:-http://$listen}" \
HOOKFLOW_LOG_FORMAT="${HOOKFLOW_LOG_FORMAT:-text}" \
  "$bin/hookflow-ingest" >"$state/ingest.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://$listen/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://$listen/healthz" >/dev/null || { echo "ingest did not start; see $state/ingest.log" >&2; exit 1; }

cat <<INFO

hookflow is running.
  webhooks    http://$listen/api/integrations/webhooks/{xero,quickbooks,hubspot,klaviyo,twilio,meta}
  health      http://$listen/healthz   http://$listen/readyz   http://$listen/metrics
  PostgreSQL  $db_url
  Kafka       $brokers   (kcat -L -b $brokers)
  secrets     $secrets
  logs        $state/*.log

Try it (a signed Meta Messenger delivery):
  deploy/local/send-demo-webhook.sh meta
  kcat -C -b $brokers -t hookflow.webhooks.messaging -e -q

Ctrl-C stops everything.
INFO

# Wait for a signal, or for any service to die.
while true; do
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "a service exited unexpectedly; see $state/*.log" >&2
      exit 1
    fi
  done
  sleep 1 &
  wait $! || true
done
