#!/usr/bin/env bash
# Applies schemas/migrations to HOOKFLOW_DATABASE_URL with `hookflow-engine migrate` (what
# `npm run db:migrate` runs). Arguments pass through: npm run db:migrate -- --dir DIR
#   HOOKFLOW_ENGINE_BIN   the hookflow-engine binary to use; else the first one found in
#                         build/gcc, build/asan, build/dev, build/*; else build/gcc is built.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)

bin=${HOOKFLOW_ENGINE_BIN:-}
if [ -n "$bin" ]; then
  [ -x "$bin" ] || { echo "migrate.sh: HOOKFLOW_ENGINE_BIN=$bin is not an executable" >&2; exit 1; }
else
  for candidate in "$root"/build/gcc "$root"/build/asan "$root"/build/dev "$root"/build/*; do
    if [ -x "$candidate/hookflow-engine" ]; then
      bin=$candidate/hookflow-engine
      break
    fi
  done
fi
if [ -z "$bin" ]; then
  echo "migrate.sh: no hookflow-engine build found; building build/gcc" >&2
  if [ ! -f "$root/build/gcc/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$root/build/gcc" -DCMAKE_C_COMPILER=gcc \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >&2
  fi
  cmake --build "$root/build/gcc" --target hookflow-engine -j"$(nproc)" >&2
  bin=$root/build/gcc/hookflow-engine
fi

# The migrations of this checkout, whichever checkout the binary was built from.
export HOOKFLOW_MIGRATIONS_DIR=${HOOKFLOW_MIGRATIONS_DIR:-$root/schemas/migrations}
exec "$bin" migrate "$@"
