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
# (A run.sh just killed with -9 may leave a short-lived child holding the lock for a moment.)
exec 9>"$state/run.lock"
if ! flock -w 3 9; then
  echo "hookflow: the local stack is already running from this checkout (see $state/run.pid)" >&2
  exit 1
fi
echo $$ >"$state/run.pid"

# Services a run.sh killed with -9 left behind (they would hold the ports): each is recorded as
# "pid start-time" and stopped only when that very process is still there (pids are reused).
# (Field 22 of /proc/PID/stat, counted after the command name, which may hold spaces.)
start_time() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}' || true; }
if [ -f "$state/services" ]; then
  while read -r pid started; do
    if [ -n "$pid" ] && [ "$(start_time "$pid")" = "$started" ]; then
      echo "hookflow: stopping service $pid left running by an earlier run" >&2
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if [ "$(start_time "$pid")" = "$started" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
  done <"$state/services"
fi
: >"$state/services"

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
# Records the service just started in the background ($!).
started() {
  pids+=("$1")
  echo "$1 $(start_time "$1")" >>"$state/services"
}

# Waits up to 10 s for a service to answer its /healthz; gives up at once when it exits, with the
# last line of its log (e.g. the port it could not listen on).
wait_healthy() {
  local name=$1 url=$2 pid=$3 log=$4
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    curl -fs --max-time 1 "$url" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "hookflow: $name did not start: $(tail -n 1 "$log" 2>/dev/null) (see $log)" >&2
  exit 1
}

cleanup() {
  trap - EXIT INT TERM
  echo
  echo "== stopping"
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  bash deploy/local/pg.sh stop "$state/pg" || true
  rm -f "$state/run.pid" "$state/services"
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
# 9>&- on every service: none may hold the stack's lock (a run.sh killed with -9 could never be
# started again while one of them lives on).
"$bin/hookflow-devbroker" --bootstrap-file "$state/kafka.bootstrap" --control "$state/kafka.ctl" \
  >"$state/devbroker.log" 2>&1 9>&- &
started $!
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
  >"$state/fakes.log" 2>&1 9>&- &
started $!
for _ in $(seq 1 100); do [ -s "$state/fakes.port" ] && break; sleep 0.1; done
[ -s "$state/fakes.port" ] || { echo "the platform stand-ins did not start; see $state/fakes.log" >&2; exit 1; }
fakes="http://127.0.0.1:$(cat "$state/fakes.port")"
# The demo's Twilio account and token (deploy/local/demo.json) are known to the stand-in.
curl -fsS --max-time 10 -X POST "$fakes/_control/tokens" -H 'Content-Type: application/json' \
  -d '{"provider":"twilio","account_sid":"AC0123456789abcdef0123456789abcdef","auth_token":"demo-twilio-auth-token"}' >/dev/null
connector_env=()
for p in xero quickbooks hubspot klaviyo twilio meta; do
  P=$(echo "$p" | tr a-z A-Z)
  connector_env+=("HOOKFLOW_CONNECTOR_${P}_BASE_URL=$fakes/$p")
  # Token refreshes and OAuth code exchanges go to the stand-ins too (Twilio has no OAuth).
  case "$p" in
  twilio) ;;
  meta) connector_env+=("HOOKFLOW_CONNECTOR_META_TOKEN_URL=$fakes/meta/v25.0/oauth/access_token") ;;
  *) connector_env+=("HOOKFLOW_CONNECTOR_${P}_TOKEN_URL=$fakes/$p/token") ;;
  esac
done

echo "== demo tenant and workflow"
HOOKFLOW_DATABASE_URL="$db_url" HOOKFLOW_SECRETS_DIR="$secrets" \
  "$bin/hookflow-engine" apply deploy/local/demo.json

listen=${HOOKFLOW_INGEST_LISTEN:-127.0.0.1:8080}
echo "== hookflow-ingest"
HOOKFLOW_KAFKA_BROKERS="$brokers" HOOKFLOW_SECRETS_DIR="$secrets" HOOKFLOW_INGEST_LISTEN="$listen" \
HOOKFLOW_PUBLIC_BASE_URL="${HOOKFLOW_PUBLIC_BASE_URL:-http://$listen}" \
HOOKFLOW_LOG_FORMAT="${HOOKFLOW_LOG_FORMAT:-text}" \
  "$bin/hookflow-ingest" >"$state/ingest.log" 2>&1 9>&- &
started $!
wait_healthy ingest "http://$listen/healthz" $! "$state/ingest.log"

worker_listen=${HOOKFLOW_WORKER_LISTEN:-127.0.0.1:8082}
echo "== hookflow-engine worker"
env "${connector_env[@]}" HOOKFLOW_KAFKA_BROKERS="$brokers" HOOKFLOW_DATABASE_URL="$db_url" \
  HOOKFLOW_SECRETS_DIR="$secrets" HOOKFLOW_WORKER_LISTEN="$worker_listen" \
  HOOKFLOW_KAFKA_SESSION_TIMEOUT_MS=6000 HOOKFLOW_LOG_FORMAT="${HOOKFLOW_LOG_FORMAT:-text}" \
  "$bin/hookflow-engine" work >"$state/worker.log" 2>&1 9>&- &
started $!
wait_healthy "the worker" "http://$worker_listen/healthz" $! "$state/worker.log"

api_listen=${HOOKFLOW_API_LISTEN:-127.0.0.1:8081}
echo "== hookflow-engine serve"
env "${connector_env[@]}" HOOKFLOW_DATABASE_URL="$db_url" HOOKFLOW_SECRETS_DIR="$secrets" \
  HOOKFLOW_API_LISTEN="$api_listen" HOOKFLOW_API_PUBLIC_URL="http://$api_listen" \
  HOOKFLOW_LOG_FORMAT="${HOOKFLOW_LOG_FORMAT:-text}" \
  "$bin/hookflow-engine" serve >"$state/api.log" 2>&1 9>&- &
started $!
wait_healthy "the API" "http://$api_listen/healthz" $! "$state/api.log"

# The commands below as they are typed in another shell for this very stack.
state_env=""
[ "$state" = "$root/.hookflow" ] || state_env="HOOKFLOW_STATE_DIR=$(printf '%q' "$state") "
demo_addr=""
[ "$listen" = 127.0.0.1:8080 ] || demo_addr=" $listen"
cat <<INFO

hookflow is running.
  webhooks    http://$listen/api/integrations/webhooks/{xero,quickbooks,hubspot,klaviyo,twilio,meta}
  health      http://$listen/healthz   http://$listen/readyz   http://$listen/metrics
  worker      http://$worker_listen/healthz   http://$worker_listen/readyz   http://$worker_listen/metrics
  engine API  http://$api_listen/api/...  (token: ${state_env}deploy/local/demo-token.sh)
  platforms   $fakes  (local stand-ins; requests they received: $fakes/_control/requests)
  PostgreSQL  $db_url
  Kafka       $brokers   (kcat -L -b $brokers)
  secrets     $secrets
  logs        $state/*.log

Try it: a signed Meta Messenger message mentioning a pickup runs the demo workflow
"Pickup confirmation" (deploy/local/demo.json), which texts the staff through Twilio:
  ${state_env}deploy/local/send-demo-webhook.sh meta$demo_addr
  kcat -C -b $brokers -t hookflow.webhooks.messaging -e -q        # the envelope in Kafka
  psql $db_url -c "select status, event_id, finished_at from runs order by created_at desc limit 5"
  curl -s $fakes/_control/requests?provider=twilio                # the call the run made

The Engine API as the demo tenant's admin:
  TOKEN=\$(${state_env}deploy/local/demo-token.sh)
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
  sleep 1 9>&- &
  wait $! || true
done
