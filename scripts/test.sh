#!/usr/bin/env bash
# Fresh machine to full test run: dependencies, release and sanitizer builds, unit tests
# (ctest) for both, and the system tests (official Node and Python SDKs against the real
# binary) for both, then each fuzz target for 30 s (scripts/fuzz.sh; III_SKIP_FUZZ=1 skips
# it); first, clang-format over the C++ sources (scripts/check-format.sh). Prints a final "N passed, N failed" line over the suites.
#
# Everything runs, but not one thing after the other (docs/performance.md, "CI wall time"):
#  - the release build first builds what the tests run (iii, the unit test binaries);
#  - the ASan+UBSan build compiles at the lowest CPU priority (nice 19) while the release
#    unit and system tests run (they mostly wait on sockets and timers); the release
#    benchmarks and the fuzz build likewise while the sanitizer tests run; background builds
#    run one at a time, and their output is printed when they are waited for;
#  - ctest runs two tests at a time; the Node and Python system suites run side by side
#    (tests/system/run.sh); the fuzz targets run two at a time, 30 s each (scripts/fuzz.sh).
# III_SERIAL=1 runs every step one after the other, as before (for comparing timings).
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh || exit 1

SERIAL="${III_SERIAL:-0}"
CTEST_JOBS="${III_CTEST_JOBS:-$([ "$SERIAL" = 1 ] && echo 1 || echo 2)}"
LOGS="build/ci-logs"
mkdir -p "$LOGS"
T0=$SECONDS

passed=0
failed=0
timings=()
report() { # name rc seconds
  if [ "$2" -eq 0 ]; then
    passed=$((passed + 1))
    echo "=== $1: ok ($3 s)"
  else
    failed=$((failed + 1))
    echo "=== $1: FAILED ($3 s)"
  fi
  timings+=("$(printf '%6d s  %s' "$3" "$1")")
}
step() {
  local name="$1"
  shift
  echo "=== $name (at +$((SECONDS - T0)) s)"
  local t=$SECONDS
  "$@"
  report "$name" $? $((SECONDS - t))
}

# Background steps: started with `bg_start key name cmd...` at nice 19, output to a log file,
# printed and counted by `bg_wait key` (which waits for it). In serial mode, bg_start just runs it.
declare -A BG_PID BG_NAME BG_T
bg_start() {
  local key="$1" name="$2"
  shift 2
  if [ "$SERIAL" = 1 ]; then
    step "$name" "$@"
    return
  fi
  echo "=== $name: started in the background at nice 19 (at +$((SECONDS - T0)) s; output: $LOGS/$key.log)"
  BG_NAME[$key]="$name"
  BG_T[$key]=$SECONDS
  nice -n 19 flock "$LOGS/background.lock" "$@" >"$LOGS/$key.log" 2>&1 &
  BG_PID[$key]=$!
}
# The pids of a process and all its descendants.
process_tree() {
  echo "$1"
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do process_tree "$c"; done
}
bg_wait() {
  local key="$1"
  [ -n "${BG_PID[$key]:-}" ] || return 0
  local name="${BG_NAME[$key]}"
  echo "=== $name (waiting for it, at +$((SECONDS - T0)) s)"
  # No test runs beside the background builds now: back to normal priority (for what they start
  # from now on too), which matters on a machine shared with other work. Needs root; otherwise
  # they stay at 19, which on a machine of its own makes no difference.
  local p
  for p in "${BG_PID[@]}"; do
    # shellcheck disable=SC2046
    renice -n 0 -p $(process_tree "$p") >/dev/null 2>&1 || true
  done
  wait "${BG_PID[$key]}"
  local rc=$?
  cat "$LOGS/$key.log"
  report "$name" $rc $((SECONDS - BG_T[$key]))
  unset "BG_PID[$key]"
  return $rc
}

step "clang-format" ./scripts/check-format.sh
step "build release" ./scripts/build.sh release --target iii iii_unit_tests iii_sdk_tests

ASAN=1
[ "${III_SKIP_ASAN:-0}" = 1 ] && ASAN=0
FUZZ=1
[ "${III_SKIP_FUZZ:-0}" = 1 ] && FUZZ=0

[ "$ASAN" = 1 ] && bg_start build-asan "build asan" ./scripts/build.sh asan
# Without the sanitizer tests, these overlap the release tests instead.
if [ "$ASAN" = 0 ]; then
  bg_start build-bench "build release (benchmarks)" ./scripts/build.sh release
  [ "$FUZZ" = 1 ] && bg_start build-fuzz "build fuzz" ./scripts/build.sh fuzz
fi
step "unit tests (release)" ctest --preset release --timeout 120 -j "$CTEST_JOBS"
step "system tests (release)" env III_BIN="$PWD/build/release/iii" ./tests/system/run.sh

if [ "$ASAN" = 1 ]; then
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  bg_wait build-asan
  bg_start build-bench "build release (benchmarks)" ./scripts/build.sh release
  [ "$FUZZ" = 1 ] && bg_start build-fuzz "build fuzz" ./scripts/build.sh fuzz
  step "unit tests (asan+ubsan)" ctest --preset asan --timeout 300 -j "$CTEST_JOBS"
  step "system tests (asan+ubsan)" env III_BIN="$PWD/build/asan/iii" III_SANITIZED=1 ./tests/system/run.sh
fi

bg_wait build-bench
if [ "$FUZZ" = 1 ]; then
  bg_wait build-fuzz
  step "fuzz (30 s per target)" ./scripts/fuzz.sh 30
fi

echo "=== timings (wall clock; background steps overlap the steps after them)"
printf '%s\n' "${timings[@]}"
echo "total: $((SECONDS - T0)) s"
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
