#!/usr/bin/env bash
# Runs http_bench (and invoke_bench at concurrency 1) the way docs/performance.md ("iii-http")
# reports them, against one or more engine binaries, alternating between them so that the
# machine's drift hits each alike. Every http_bench run starts its own engine.
#
#   bench/http_runs.sh [BUILD_DIR] [OUT_FILE] [ENGINE_BINARY...]
#     defaults: build/release, /tmp/iii-http-bench.jsonl, BUILD_DIR/iii
#
# E.g. before/after an engine change: copy the old binary to /tmp/iii-before first, then
#   bench/http_runs.sh build/release /tmp/http.jsonl /tmp/iii-before build/release/iii
#
# Environment: REPEAT (2) rounds over the binaries; DURATION (2) seconds per measurement;
# BATCHES (200) batches in the Nagle measurement; PORT (49760) for invoke_bench's engine.
set -euo pipefail
BUILD=${1:-build/release}
OUT=${2:-/tmp/iii-http-bench.jsonl}
shift 2 || shift $#
BINARIES=("$@")
[[ ${#BINARIES[@]} -gt 0 ]] || BINARIES=("$BUILD/iii")
LOG=$OUT.log
REPEAT=${REPEAT:-2}
DURATION=${DURATION:-2}
BATCHES=${BATCHES:-200}
PORT=${PORT:-49760}
WORK=$(mktemp -d)
ENGINE_PID=

stop_engine() {
  if [[ -n "$ENGINE_PID" ]]; then
    kill -TERM "$ENGINE_PID" 2>/dev/null || true
    wait "$ENGINE_PID" 2>/dev/null || true
    ENGINE_PID=
  fi
}
trap 'stop_engine; rm -rf "$WORK"' EXIT

cat >"$WORK/cfg.yaml" <<EOC
workers:
  - name: iii-worker-manager
    config: { host: 127.0.0.1, port: $PORT }
EOC

: >"$OUT"
: >"$LOG"
for rep in $(seq "$REPEAT"); do
  for bin in "${BINARIES[@]}"; do
    label="$bin#$rep"
    echo "## $(uptime)  :: http_bench $label" | tee -a "$LOG"
    "$BUILD/bench/http_bench" --binary "$bin" --label "$label" --duration-s "$DURATION" \
      --batches "$BATCHES" | tee -a "$LOG" | grep '^{' >>"$OUT" || echo "(exit code $?)" | tee -a "$LOG"

    "$bin" --config "$WORK/cfg.yaml" >"$WORK/engine.log" 2>&1 &
    ENGINE_PID=$!
    for _ in $(seq 400); do
      grep -q "listening on" "$WORK/engine.log" 2>/dev/null && break
      sleep 0.05
    done
    echo "## $(uptime)  :: invoke_bench $label" | tee -a "$LOG"
    "$BUILD/bench/invoke_bench" --url "ws://127.0.0.1:$PORT" --engine-pid "$ENGINE_PID" \
      --concurrency 1 --payload-bytes 100 --duration-s 5 | tee -a "$LOG" |
      grep '^{' | sed "s|^{|{\"label\":\"$label\",|" >>"$OUT" || echo "(exit code $?)" | tee -a "$LOG"
    stop_engine
  done
done
echo "JSON lines in $OUT, full log in $LOG"
