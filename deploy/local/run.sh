#!/usr/bin/env bash
# Runs the hookflow stack on this machine: PostgreSQL (migrated, data kept in .hookflow/pg), the
# Kafka-protocol dev broker, hookflow-ingest, one hookflow-engine worker, and local stand-ins for
# the six platforms' APIs (tests/fakes) so the seeded demo workflow runs end to end without
# calling any real platform. Ctrl-C or SIGTERM stops all of it cleanly.
#   deploy/local/run.sh            build, start, print where everything listens, wait
#   HOOKFLOW_INGEST_LISTEN=127.0.0.1:9090 deploy/local/run.sh   another port
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
# HOOKFLOW_STATE_DIR moves the stack's data (tests use a throwaway one); HOOKFLOW_LOCAL_BIN runs
# already-built executables instead of building build/local.
state=${HOOKFLOW_STATE_DIR:-$root/.hookflow}
mkdir -p "$state"
state=$(cd "$state" && pwd)

# One stack per checkout: a second run says so instead of fighting the first over ports and data.
exec 9>"$state/run.lock"
if ! flock -n 9; then
  echo "hookflow: the local stack is already running from this checkout (see $state/run.pid)" >&2
  exit 1
fi
echo $$ >"$state/run.pid"

bash deploy/local/install-deps.sh

if [ -n "${HOOKFLOW_LOCAL_BIN:-}" ]; then
  bin=$(cd "$HOOKFLOW_LOCAL_BIN" && pwd)
else
  echo "== building"
  cmake -S . -B build/local -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHOOKFLOW_TESTS=OFF >/dev/null
  cmake --build build/local -j"$(nproc)" >/dev/null
  bin="$root/build/local"
fi

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
# 9>&-: the PostgreSQL server outlives this script (pg.sh reuses it next time) and must not hold
# the stack's lock, or a run.sh killed with -9 could never be started again.
db_url=$(bash deploy/local/pg.sh start "$state/pg" 9>&-)
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
for f in xero/webhook_key quickbooks/verifier_token hubspot/client_secret klaviyo/webhook_secret \
         klaviyo/flow_secret twilio/auth_token meta/app_secret meta/verify_token \
         xero/client_id xero/client_secret hubspot/client_id engine/token_key api/jwt_key; do
  if [ ! -f "$secrets/$f" ]; then
    mkdir -p "$secrets/$(dirname "$f")"
    if [ "$f" = engine/token_key ] || [ "$f" = api/jwt_key ]; then
      head -c 32 /dev/urandom | base64 >"$secrets/$f"
    else
      head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$secrets/$f"
    fi
  fi
done
chmod -R go-rwx "$secrets"

echo "== local platform stand-ins"
rm -f "$state/fakes.port"
/usr/bin/python3 tests/fakes/fake_platforms.py --port 0 --port-file "$state/fakes.port" \
  >"$state/fakes.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$state/fakes.port" ] && break; sleep 0.1; done
fakes="http://127.0.0.1:$(cat "$state/fakes.port")"
# The demo's Twilio account and token (deploy/local/demo.json) are known to the stand-in.
curl -fsS -X POST "$fakes/_control/tokens" -H 'Content-Type: application/json' \
  -d '{"provider":"twilio","account_sid":"AC0123456789abcdef0123456789abcdef","auth_token":"demo-twilio-auth-token"}' >/dev/null
connector_env=()
for p in xero quickbooks hubspot klaviyo twilio meta; do
  P=$(echo "$p" | tr a-z A-Z)
  connector_env+=("HOOKFLOW_CONNECTOR_${P}_BASE_URL=$fakes/$p")
done

echo "== demo tenant and workflow"
HOOKFLOW_DATABASE_URL="$db_url" HOOKFLOW_SECRETS_DIR="$secrets" \
  "$bin/hookflow-engine" apply deploy/local/demo.json

listen=${HOOKFLOW_INGEST_LISTEN:-127.0.0.1:8080}
echo "== hookflow-ingest"
HOOKFLOW_KAFKA_BROKERS="$brokers" HOOKFLOW_SECRETS_DIR="$secrets" HOOKFLOW_INGEST_LISTEN="$listen" \
HOOKFLOW_PUBLIC_BASE_URL="${HOOKFLOW_PUBLIC_BASE_URL:-http://$listen}" \
HOOKFLOW_LOG_FORMAT="${HOOKFLOW_LOG_FORMAT:-text}" \
  "$bin/hookflow-ingest" >"$state/ingest.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://$listen/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://$listen/healthz" >/dev/null || { echo "ingest did not start; see $state/ingest.log" >&2; exit 1; }

worker_listen=${HOOKFLOW_WORKER_LISTEN:-127.0.0.1:8082}
echo "== hookflow-engine worker"
env "${connector_env[@]}" HOOKFLOW_KAFKA_BROKERS="$brokers" HOOKFLOW_DATABASE_URL="$db_url" \
  HOOKFLOW_SECRETS_DIR="$secrets" HOOKFLOW_WORKER_LISTEN="$worker_listen" \
  HOOKFLOW_KAFKA_SESSION_TIMEOUT_MS=6000 HOOKFLOW_LOG_FORMAT="${HOOKFLOW_LOG_FORMAT:-text}" \
  "$bin/hookflow-engine" work >"$state/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://$worker_listen/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://$worker_listen/healthz" >/dev/null || { echo "worker did not start; see $state/worker.log" >&2; exit 1; }

api_listen=${HOOKFLOW_API_LISTEN:-127.0.0.1:8081}
echo "== hookflow-engine serve"
env "${connector_env[@]}" HOOKFLOW_DATABASE_URL="$db_url" HOOKFLOW_SECRETS_DIR="$secrets" \
  HOOKFLOW_API_LISTEN="$api_listen" HOOKFLOW_API_PUBLIC_URL="http://$api_listen" \
  HOOKFLOW_LOG_FORMAT="${HOOKFLOW_LOG_FORMAT:-text}" \
  "$bin/hookflow-engine" serve >"$state/api.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://$api_listen/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://$api_listen/healthz" >/dev/null || { echo "the API did not start; see $state/api.log" >&2; exit 1; }

cat <<INFO

hookflow is running.
  webhooks    http://$listen/api/integrations/webhooks/{xero,quickbooks,hubspot,klaviyo,twilio,meta}
  health      http://$listen/healthz   http://$listen/readyz   http://$listen/metrics
  worker      http://$worker_listen/healthz   http://$worker_listen/readyz   http://$worker_listen/metrics
  engine API  http://$api_listen/api/...  (token: deploy/local/demo-token.sh)
  platforms   $fakes  (local stand-ins; requests they received: $fakes/_control/requests)
  PostgreSQL  $db_url
  Kafka       $brokers   (kcat -L -b $brokers)
  secrets     $secrets
  logs        $state/*.log

Try it: a signed Meta Messenger message mentioning a pickup runs the demo workflow
"Pickup confirmation" (deploy/local/demo.json), which texts the staff through Twilio:
  deploy/local/send-demo-webhook.sh meta
  kcat -C -b $brokers -t hookflow.webhooks.messaging -e -q        # the envelope in Kafka
  psql $db_url -c "select status, event_id, finished_at from runs order by created_at desc limit 5"
  curl -s $fakes/_control/requests?provider=twilio                # the call the run made

The Engine API as the demo tenant's admin:
  TOKEN=\$(deploy/local/demo-token.sh)
  curl -s -H "Authorization: Bearer \$TOKEN" http://$api_listen/api/workflows
  curl -s -H "Authorization: Bearer \$TOKEN" http://$api_listen/api/workflows/catalog

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
