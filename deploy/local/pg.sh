#!/usr/bin/env bash
# Runs a PostgreSQL 15 cluster in a folder the caller owns, as an unprivileged user.
#   pg.sh start DIR [PORT]   initialise DIR if new, start, create database "hookflow";
#                            prints the connection URL (also written to DIR/url)
#   pg.sh stop DIR           fast shutdown
#   pg.sh status DIR         exit 0 if running
# initdb refuses root, so as root the cluster runs as the "postgres" system user.
set -euo pipefail

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: pg.sh start|stop|status DIR [PORT]" >&2; exit 2; }

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bindir/initdb" ] || { echo "pg.sh: PostgreSQL server binaries not found (run deploy/local/install-deps.sh)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

want_port=${3:-}
if [ -n "$want_port" ] && { ! [[ "$want_port" =~ ^[0-9]{4,5}$ ]] || [ "$want_port" -lt 1024 ] \
    || [ "$want_port" -gt 65535 ]; }; then
  echo "pg.sh: PORT must be a number in 1024..65535, not \"$want_port\"" >&2; exit 2
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# As root the server runs as "postgres", which must reach the cluster through every folder above
# it: a checkout in a private home (/root is 0700 on Debian) is out of its reach, so the cluster
# then lives in /var/lib/hookflow/pg-<hash of DIR>, named in DIR/location; DIR keeps url and port.
pgdir=$dir
if [ "$(id -u)" -eq 0 ]; then
  if [ -f "$dir/location" ]; then
    pgdir=$(cat "$dir/location")
  elif [ "$cmd" = start ]; then
    chown postgres: "$dir"; chmod 755 "$dir"
    if ! runuser -u postgres -- sh -c 'cd "$1" && test -w .' _ "$dir" 2>/dev/null; then
      pgdir=/var/lib/hookflow/pg-$(printf '%s' "$dir" | sha256sum | cut -c1-16)
      mkdir -p "$pgdir"
      chown postgres: "$pgdir"; chmod 700 "$pgdir"
      echo "$pgdir" >"$dir/location"
    fi
  fi
fi
data="$pgdir/data"

case "$cmd" in
start)
  if [ ! -f "$data/PG_VERSION" ]; then
    as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  if as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    port=$(cat "$dir/port")
  else
    port=$want_port
    if [ -z "$port" ] && [ -f "$dir/port" ]; then port=$(cat "$dir/port"); fi
    if ! [[ "$port" =~ ^[0-9]+$ ]] || ss -ltn "sport = :$port" | grep -q LISTEN; then
      port=$(free_port)
    fi
    as_owner "$bindir/pg_ctl" -D "$data" -l "$pgdir/postgres.log" -w -t 60 \
      -o "-p $port -k '$pgdir' -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null \
      || { tail -n 20 "$pgdir/postgres.log" >&2; exit 1; }
    echo "$port" >"$dir/port"
  fi
  if ! as_owner "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname='hookflow'" | grep -q 1; then
    as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres hookflow
  fi
  url="postgresql://postgres@127.0.0.1:$port/hookflow"
  echo "$url" >"$dir/url"
  echo "$url"
  ;;
stop)
  if [ -f "$data/PG_VERSION" ]; then
    as_owner "$bindir/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  ;;
status)
  as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1
  ;;
*)
  echo "usage: pg.sh start|stop|status DIR [PORT]" >&2; exit 2 ;;
esac
