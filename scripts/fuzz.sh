#!/usr/bin/env bash
# Builds the libFuzzer targets (the `fuzz` preset: clang, ASan + UBSan) and runs each one for
# a bounded time (default 60 s; first argument) on a temporary copy of its seed corpus in
# fuzz/corpus/<name>/, so the repository's corpus never grows. Prints one line per target and
# exits non-zero if any target crashed, leaked, hit a sanitizer report or a failed check; the
# input that did it is kept as build/fuzz/crash-<name>-*, its log as build/fuzz/<name>.log.
# III_FUZZ_TARGETS="codec config" runs only those targets; III_FUZZ_JOBS=1 runs them one at a time.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
if ! command -v clang++ >/dev/null || ! dpkg-query -W -f='${Status}' libclang-rt-14-dev 2>/dev/null |
  grep -q "install ok installed"; then
  echo "fuzz: installing clang and the libFuzzer runtime"
  $SUDO apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      clang libclang-rt-14-dev || exit 1
fi

./scripts/build.sh fuzz >/dev/null || {
  echo "fuzz: build failed (./scripts/build.sh fuzz)"
  exit 1
}

targets=(${III_FUZZ_TARGETS:-codec frame_parser config update_ops})
out="build/fuzz"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"

# One target per core at a time (III_FUZZ_JOBS, default nproc): each fuzzer is one process on
# one core, so two at once on two cores each still get the full `seconds` of a core.
fuzz_one() {
  local t="$1" corpus="$work/$1"
  mkdir -p "$corpus"
  cp fuzz/corpus/"$t"/* "$corpus"/
  rm -f "$out/$t"-crash-* "$out/$t"-leak-* "$out/$t"-timeout-* "$out/$t"-oom-*
  local start rc runs cov
  start=$(date +%s)
  "$out/${t}_fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -print_final_stats=1 -artifact_prefix="$out/$t-" \
    "$corpus" >"$out/$t.log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/$t.log" | grep -o '[0-9]*$')
  cov=$(grep -o 'cov: [0-9]*' "$out/$t.log" | tail -1 | grep -o '[0-9]*$')
  if [ "$rc" -eq 0 ]; then
    echo "fuzz $t: ok, ${runs:-?} runs in $(($(date +%s) - start)) s, coverage ${cov:-?}"
  else
    echo "fuzz $t: FAILED (exit $rc): $(grep -m1 -E 'ERROR|SUMMARY|_fuzz: ' "$out/$t.log")"
    echo "  log: $out/$t.log; input: $(ls "$out/$t"-{crash,leak,timeout,oom}-* 2>/dev/null | tr '\n' ' ')"
  fi
  return "$rc"
}

jobs_max="${III_FUZZ_JOBS:-$(nproc)}"
declare -A pid_of
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs_max" ]; then
    wait -n
    running=$((running - 1))
  fi
  fuzz_one "$t" >"$work/$t.result" &
  pid_of[$t]=$!
  running=$((running + 1))
done
failed=0
for t in "${targets[@]}"; do
  wait "${pid_of[$t]}" || failed=1
  cat "$work/$t.result"
done
exit "$failed"
