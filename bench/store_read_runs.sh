#!/usr/bin/env bash
# Runs store_read_bench the way docs/performance.md reports it: an engine whose iii-stream
# store is file_based, a 100k-item cold group, get p99 alone and while another client lists it.
#
#   bench/store_read_runs.sh [BUILD_DIR] [OUT_FILE]   (defaults: build/release, /tmp/iii-store-read.jsonl)
#
# Environment: REPEAT (3) runs, each against a freshly started engine on the same store (the
# first run fills it); PORT (49710); STATE_DIR (/tmp/iii-bench-store-read); DURATION (5);
# ITEMS (100000); ITEM_BYTES (100).
set -euo pipefail
BUILD=${1:-build/release}
OUT=${2:-/tmp/iii-store-read.jsonl}
LOG=$OUT.log
REPEAT=${REPEAT:-3}
PORT=${PORT:-49710}
STATE_DIR=${STATE_DIR:-/tmp/iii-bench-store-read}
DURATION=${DURATION:-5}
ITEMS=${ITEMS:-100000}
ITEM_BYTES=${ITEM_BYTES:-100}
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
  - name: iii-stream
    config:
      host: 127.0.0.1
      port: $((PORT + 1))
      adapter: { name: kv, config: { store_method: file_based, file_path: $STATE_DIR } }
EOC

start_engine() {
  "$BUILD/iii" --config "$WORK/cfg.yaml" >"$WORK/engine.log" 2>&1 &
  ENGINE_PID=$!
  for _ in $(seq 400); do
    grep -q "engine ready" "$WORK/engine.log" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "engine did not start:" >&2
  cat "$WORK/engine.log" >&2
  exit 1
}

: >"$OUT"
: >"$LOG"
for rep in $(seq "$REPEAT"); do
  start_engine
  echo "## $(uptime)  :: run $rep" | tee -a "$LOG"
  "$BUILD/bench/store_read_bench" --url "ws://127.0.0.1:$PORT" --engine-pid "$ENGINE_PID" \
    --items "$ITEMS" --item-bytes "$ITEM_BYTES" --duration-s "$DURATION" --label "run$rep" |
    tee -a "$LOG" | grep '^{' >>"$OUT" || echo "(exit code $?)" | tee -a "$LOG"
  stop_engine
done
echo "JSON lines in $OUT, full log in $LOG"
