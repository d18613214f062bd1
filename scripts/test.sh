#!/usr/bin/env bash
# Fresh machine to full test run: dependencies, release and sanitizer builds, unit tests
# (ctest) for both, and the system tests (official Node and Python SDKs against the real
# binary) for both, then each fuzz target for 30 s (scripts/fuzz.sh; III_SKIP_FUZZ=1 skips
# it); first, clang-format over the C++ sources (scripts/check-format.sh). Prints a final "N passed, N failed" line over the suites.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh || exit 1

passed=0
failed=0
step() {
  local name="$1"
  shift
  echo "=== $name"
  if "$@"; then
    passed=$((passed + 1))
    echo "=== $name: ok"
  else
    failed=$((failed + 1))
    echo "=== $name: FAILED"
  fi
}

step "clang-format" ./scripts/check-format.sh
step "build release" ./scripts/build.sh release
step "unit tests (release)" ctest --preset release --timeout 120
step "system tests (release)" env III_BIN="$PWD/build/release/iii" ./tests/system/run.sh

if [ "${III_SKIP_ASAN:-0}" != 1 ]; then
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  step "build asan" ./scripts/build.sh asan
  step "unit tests (asan+ubsan)" ctest --preset asan --timeout 300
  step "system tests (asan+ubsan)" env III_BIN="$PWD/build/asan/iii" III_SANITIZED=1 ./tests/system/run.sh
fi

if [ "${III_SKIP_FUZZ:-0}" != 1 ]; then
  step "fuzz (30 s per target)" ./scripts/fuzz.sh 30
fi

echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
