#!/usr/bin/env bash
# Sends one correctly signed demo delivery to the local stack started by deploy/local/run.sh.
#   deploy/local/send-demo-webhook.sh meta|xero|quickbooks   [ingest address, default 127.0.0.1:8080]
set -euo pipefail
cd "$(dirname "$0")/../.."
provider=${1:-meta}
addr=${2:-${HOOKFLOW_INGEST_LISTEN:-127.0.0.1:8080}}
secrets=${HOOKFLOW_STATE_DIR:-.hookflow}/secrets
now_ms=$(($(date +%s%N) / 1000000))
url="http://$addr/api/integrations/webhooks/$provider"

# The key the local stack made ($(cat) failing inside $(...) would sign with an empty one).
secret() {
  [ -f "$secrets/$1" ] || { echo "send-demo-webhook: $secrets/$1 not found: start deploy/local/run.sh first (same HOOKFLOW_STATE_DIR)" >&2; exit 1; }
  cat "$secrets/$1"
}

case "$provider" in
meta)
  key=$(secret meta/app_secret)
  body='{"object":"page","entry":[{"id":"104877","time":'$now_ms',"messaging":[{"sender":{"id":"6123"},"recipient":{"id":"104877"},"timestamp":'$now_ms',"message":{"mid":"m_demo_'$now_ms'","text":"Is my pickup ready?"}}]}]}'
  sig="sha256=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$key" -hex | sed 's/^.* //')"
  header="X-Hub-Signature-256: $sig" ;;
xero)
  key=$(secret xero/webhook_key)
  body='{"events":[{"resourceUrl":"https://api.xero.com/api.xro/2.0/Invoices/0f2b","resourceId":"0f2b","eventDateUtc":"2026-11-27T10:00:00.000","eventType":"CREATE","eventCategory":"INVOICE","tenantId":"c2cc9b6e-9458-4c7d-93cc-f02b81b0594f","tenantType":"ORGANISATION"}],"firstEventSequence":1,"lastEventSequence":1,"entropy":"demo"}'
  sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$key" -binary | base64)
  header="x-xero-signature: $sig" ;;
quickbooks)
  key=$(secret quickbooks/verifier_token)
  body='{"eventNotifications":[{"realmId":"9130","dataChangeEvent":{"entities":[{"name":"SalesReceipt","id":"'$now_ms'","operation":"Create","lastUpdated":"2026-11-27T10:00:00.000Z"}]}}]}'
  sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$key" -binary | base64)
  header="intuit-signature: $sig" ;;
*)
  echo "send-demo-webhook: provider must be meta, xero or quickbooks" >&2; exit 2 ;;
esac

# The answer is shown whatever it is; anything but 2xx exits 1.
out=$(curl -sS -i --max-time 30 -w '\n%{http_code}' -X POST "$url" -H 'Content-Type: application/json' \
  -H "$header" --data-binary "$body")
status=${out##*$'\n'}
printf '%s\n' "${out%$'\n'*}"
case "$status" in
2??) ;;
*) echo "send-demo-webhook: ingest answered $status" >&2; exit 1 ;;
esac
