#!/usr/bin/env bash
# Runs the system tests (real engine binary + official iii-sdk 0.11.6 for Node and Python).
#   III_BIN=/path/to/iii tests/system/run.sh        (default: build/release/iii)
#   SYSTEM_TESTS=node|python tests/system/run.sh    (run one suite only)
# Exits non-zero if any suite fails; prints each runner's summary.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export III_BIN="${III_BIN:-$ROOT/build/release/iii}"
case "$III_BIN" in /*) ;; *) III_BIN="$PWD/$III_BIN" ;; esac
if [ ! -x "$III_BIN" ]; then
  echo "run.sh: engine binary not found or not executable: $III_BIN" >&2
  exit 2
fi
SUITES="${SYSTEM_TESTS:-node python}"

# Dependencies (pinned): npm ci from the lockfile, pip from requirements.txt.
if [[ " $SUITES " == *" node "* || " $SUITES " == *" python "* ]]; then
  # the Python suite spawns Node workers too
  if [ ! -f "$HERE/node/node_modules/iii-sdk/package.json" ] || [ ! -f "$HERE/node/node_modules/iii-sdk-next/package.json" ]; then
    (cd "$HERE/node" && npm ci --no-audit --no-fund --loglevel=error) || { echo "run.sh: npm ci failed" >&2; exit 2; }
  fi
fi
if [[ " $SUITES " == *" python "* ]]; then
  if ! python3 -c 'import iii, pytest, pytest_timeout, websockets, opentelemetry.proto' 2>/dev/null; then
    python3 -m pip install -q --disable-pip-version-check -r "$HERE/python/requirements.txt" \
      || { echo "run.sh: pip install failed" >&2; exit 2; }
  fi
fi

echo "run.sh: engine $III_BIN ($("$III_BIN" --version 2>/dev/null || echo '?'))"
rc=0
node_rc=-; py_rc=-
t0=$SECONDS
if [[ " $SUITES " == *" node "* ]]; then
  echo "================ node system tests (node --test) ================"
  (cd "$HERE/node" && node --test --test-concurrency=1 --test-timeout=120000 --test-force-exit \
      --test-reporter=spec ./*.test.mjs)
  node_rc=$?
  [ "$node_rc" = 0 ] || rc=1
fi
t1=$SECONDS
if [[ " $SUITES " == *" python "* ]]; then
  echo "================ python system tests (pytest) ================"
  (cd "$HERE/python" && python3 -m pytest -q --tb=short)
  py_rc=$?
  [ "$py_rc" = 0 ] || rc=1
fi
t2=$SECONDS
echo "================ system tests summary ================"
echo "node suite:   exit $node_rc ($((t1 - t0)) s)"
echo "python suite: exit $py_rc ($((t2 - t1)) s)"
exit $rc
