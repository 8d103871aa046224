#!/usr/bin/env bash
# Prints a bearer token for the local stack's Engine API: user alice@example.com, an admin of the
# demo tenant's "main" branch (deploy/local/demo.json), valid for an hour.
#   TOKEN=$(deploy/local/demo-token.sh); curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8081/api/workflows
set -euo pipefail
cd "$(dirname "$0")/../.."
state=${HOOKFLOW_STATE_DIR:-.hookflow}
key_file="$state/secrets/api/jwt_key"
[ -f "$key_file" ] || { echo "demo-token: $key_file not found: start deploy/local/run.sh first" >&2; exit 1; }
tenant=$(psql "$(cat "$state/pg/url")" -tAc "SELECT id FROM tenants WHERE slug = 'demo-laundry'")
[ -n "$tenant" ] || { echo "demo-token: the demo tenant is not in the database" >&2; exit 1; }
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
exp=$(( $(date +%s) + 3600 ))
claims=$(printf '{"sub":"alice@example.com","tenant":"%s","branch":"main","exp":%d}' "$tenant" "$exp" | b64url)
sig=$(printf '%s.%s' "$header" "$claims" | openssl dgst -sha256 -hmac "$(cat "$key_file")" -binary | b64url)
echo "$header.$claims.$sig"
