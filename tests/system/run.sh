#!/usr/bin/env bash
# Runs the system tests (real engine binary + official iii-sdk 0.11.6 for Node and Python).
#   III_BIN=/path/to/iii tests/system/run.sh        (default: build/release/iii)
#   SYSTEM_TESTS=node|python tests/system/run.sh    (run one suite only)
#   SYSTEM_TESTS_SERIAL=1 tests/system/run.sh       (the suites one after the other, not side by side)
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

run_node() {
  echo "================ node system tests (node --test) ================"
  cd "$HERE/node" && node --test --test-concurrency=1 --test-timeout=120000 --test-force-exit \
    --test-reporter=spec ./*.test.mjs
}
run_python() {
  echo "================ python system tests (pytest) ================"
  cd "$HERE/python" && python3 -m pytest -q --tb=short
}

# The two suites run side by side (SYSTEM_TESTS_SERIAL=1: one after the other). Every test starts
# its own engines, brokers and temp dirs on free ports, so they share nothing. Each suite's output
# goes to its own file and is printed whole as soon as that suite ends, so they never interleave.
rc=0
node_rc=-
py_rc=-
node_s=-
py_s=-
t0=$SECONDS
if [ "${SYSTEM_TESTS_SERIAL:-0}" = 1 ]; then
  if [[ " $SUITES " == *" node "* ]]; then
    (run_node)
    node_rc=$?
    node_s=$((SECONDS - t0))
  fi
  t1=$SECONDS
  if [[ " $SUITES " == *" python "* ]]; then
    (run_python)
    py_rc=$?
    py_s=$((SECONDS - t1))
  fi
else
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
  node_pid=
  py_pid=
  if [[ " $SUITES " == *" node "* ]]; then
    (
      run_node >"$out/node.log" 2>&1
      echo $? >"$out/node.rc"
      echo $((SECONDS - t0)) >"$out/node.s"
    ) &
    node_pid=$!
  fi
  if [[ " $SUITES " == *" python "* ]]; then
    (
      run_python >"$out/python.log" 2>&1
      echo $? >"$out/python.rc"
      echo $((SECONDS - t0)) >"$out/python.s"
    ) &
    py_pid=$!
  fi
  echo "run.sh: ${node_pid:+node suite (pid $node_pid) }${py_pid:+python suite (pid $py_pid) }running side by side; each one's output follows when it ends"
  pending="$node_pid $py_pid"
  while [ -n "${pending// /}" ]; do
    # shellcheck disable=SC2086
    wait -n $pending 2>/dev/null
    left=""
    for p in $pending; do
      if kill -0 "$p" 2>/dev/null; then
        left="$left $p"
      elif [ "$p" = "$node_pid" ]; then
        cat "$out/node.log"
      else
        cat "$out/python.log"
      fi
    done
    pending="$left"
  done
  if [ -n "$node_pid" ]; then
    node_rc=$(cat "$out/node.rc" 2>/dev/null || echo 1)
    node_s=$(cat "$out/node.s" 2>/dev/null || echo '?')
  fi
  if [ -n "$py_pid" ]; then
    py_rc=$(cat "$out/python.rc" 2>/dev/null || echo 1)
    py_s=$(cat "$out/python.s" 2>/dev/null || echo '?')
  fi
fi
[ "$node_rc" = - ] || [ "$node_rc" = 0 ] || rc=1
[ "$py_rc" = - ] || [ "$py_rc" = 0 ] || rc=1
echo "================ system tests summary ================"
echo "node suite:   exit $node_rc ($node_s s)"
echo "python suite: exit $py_rc ($py_s s)"
echo "both:         $((SECONDS - t0)) s wall clock"
exit $rc
