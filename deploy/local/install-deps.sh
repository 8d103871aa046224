#!/usr/bin/env bash
# Installs every Debian 12 package hookflow needs to build, run, test and benchmark.
# Idempotent and quick when everything is present; works as root without a TTY (uses sudo otherwise).
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang clang-format libclang-rt-14-dev git
  libevent-dev librdkafka-dev libpq-dev libyajl-dev libcurl4-openssl-dev libssl-dev libcmocka-dev libjemalloc-dev
  postgresql postgresql-client kcat curl procps iproute2 util-linux openssl
  python3 python3-pytest python3-confluent-kafka python3-psycopg2 python3-jsonschema python3-requests python3-yaml python3-cryptography python3-prometheus-client
  wrk nginx-light
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# `npm run db:migrate` is part of the deployment checklist; Debian's npm if none is present.
if ! command -v npm >/dev/null 2>&1; then
  missing+=(npm)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The nginx package starts a system nginx on port 80; hookflow's benchmark runs its own.
if [[ " ${missing[*]} " == *" nginx-light "* ]]; then
  $SUDO systemctl disable --now nginx >/dev/null 2>&1 || $SUDO service nginx stop >/dev/null 2>&1 || true
fi
exit 0
