#!/usr/bin/env bash
# The one test command: installs dependencies, checks the gcc build is warning-free, builds with
# clang + ASan + UBSan + -Werror and runs every ctest (labels unit, integration, fuzz), then the
# ingest and engine suites again against the optimised gcc build (jemalloc, as shipped).
#   tests/run.sh              everything
#   tests/run.sh -L unit      pass extra arguments to ctest (e.g. -L unit, -R devbroker)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash deploy/local/install-deps.sh

jobs=$(nproc)
echo "== clang-format (.clang-format at the root)"
# Every C file of the tree: git's list (a git that cannot read the checkout, e.g. "dubious
# ownership", must not make the check pass on no files), else the files on disk.
if ! sources=$(git ls-files '*.c' '*.h' 2>/dev/null) || [ -z "$sources" ]; then
  sources=$(find common engine ingest deploy tests -name '*.[ch]' -not -path '*/build/*' | sort)
fi
unformatted=$(echo "$sources" | while read -r f; do
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || echo "$f"; done)
if [ -n "$unformatted" ]; then
  echo "not clang-formatted (run: clang-format -i <file>):" >&2
  echo "$unformatted" >&2
  exit 1
fi

echo "== gcc build (-Werror)"
cmake -S . -B build/gcc -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DHOOKFLOW_WERROR=ON -DHOOKFLOW_TESTS=ON >/dev/null
cmake --build build/gcc -j"$jobs"

echo "== clang build (ASan + UBSan, -Werror)"
cmake -S . -B build/asan -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
  -DHOOKFLOW_ASAN=ON -DHOOKFLOW_UBSAN=ON -DHOOKFLOW_WERROR=ON -DHOOKFLOW_TESTS=ON >/dev/null
cmake --build build/asan -j"$jobs"

echo "== ctest"
cd build/asan
ctest --output-on-failure --timeout 900 -j"$jobs" "$@"

# The executables as they ship (optimised, jemalloc) also serve the ingest and engine suites.
if [ $# -eq 0 ]; then
  echo "== ctest (release build: ingest and engine suites)"
  cd "$root/build/gcc"
  ctest --output-on-failure --timeout 900 -j"$jobs" -R 'integration\.test_(ingest|engine)'
fi
