#!/usr/bin/env bash
# Write amplification of the iii-state stores (issue 18): fills a freshly started engine's
# store with N items of B bytes at concurrency 64 (store_rss_bench), then does 5,000 random
# gets, and records bytes written to disk per item (/proc/<pid>/io write_bytes of the engine,
# WAL checkpoints included), the store's size on disk, sets/s, get p99 and RSS, for in_memory
# and file_based.
#
#   bench/store_write_runs.sh [BIN_DIR] [OUT_FILE]   (defaults: build/release, /tmp/iii-store-write.jsonl)
#
# BIN_DIR holds `iii` and `bench/store_rss_bench` (or both directly). Environment: SIZES
# (default "300000:1024 300000:100"; 1M runs: "1000000:1024 1000000:100"), METHODS
# (default "in_memory file_based"), FSYNC (true), PORT (49700), STATE_DIR (/tmp/iii-bench-write),
# LABEL (free text added to each JSON line's label). Each log line starts with the machine load.
set -euo pipefail

BIN=${1:-build/release}
OUT=${2:-/tmp/iii-store-write.jsonl}
LOG=$OUT.log
SIZES=${SIZES:-300000:1024 300000:100}
METHODS=${METHODS:-in_memory file_based}
FSYNC=${FSYNC:-true}
PORT=${PORT:-49700}
STATE_DIR=${STATE_DIR:-/tmp/iii-bench-write}
LABEL=${LABEL:-}
URL=ws://127.0.0.1:$PORT
ENGINE=$BIN/iii
RSS_BENCH=$BIN/bench/store_rss_bench
[[ -x $RSS_BENCH ]] || RSS_BENCH=$BIN/store_rss_bench
WORK=$(mktemp -d)
ENGINE_PID=

stop_engine() {
  if [[ -n "$ENGINE_PID" ]]; then
    kill -TERM "$ENGINE_PID" 2>/dev/null || true
    wait "$ENGINE_PID" 2>/dev/null || true
    ENGINE_PID=
  fi
}
trap 'stop_engine; rm -rf "$WORK" "$STATE_DIR"' EXIT

start_engine() {  # $1 = in_memory | file_based
  cat >"$WORK/cfg.yaml" <<EOC
workers:
  - name: iii-worker-manager
    config: { host: 127.0.0.1, port: $PORT }
  - name: iii-state
    config:
      adapter: { name: kv, config: { store_method: $1, file_path: $STATE_DIR, fsync: $FSYNC } }
EOC
  "$ENGINE" --config "$WORK/cfg.yaml" >"$WORK/engine.log" 2>&1 &
  ENGINE_PID=$!
  for _ in $(seq 600); do
    grep -q "engine ready" "$WORK/engine.log" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "engine did not start:" >&2
  cat "$WORK/engine.log" >&2
  exit 1
}

touch "$OUT" "$LOG"
for size in $SIZES; do
  n=${size%%:*}
  bytes=${size##*:}
  for method in $METHODS; do
    rm -rf "$STATE_DIR"
    mkdir -p "$STATE_DIR"
    start_engine "$method"
    label="$method fill=$n value=$bytes fsync=$FSYNC $LABEL"
    echo "## $(uptime)  :: $label" | tee -a "$LOG"
    "$RSS_BENCH" --url "$URL" --engine-pid "$ENGINE_PID" --label "$label" --fill "$n" \
      --value-bytes "$bytes" --concurrency 64 --gets 5000 --data-dir "$STATE_DIR" \
      --sample-every $((n / 4)) | tee -a "$LOG" | grep '^{' >>"$OUT" || echo "(exit code $?)" | tee -a "$LOG"
    stop_engine
  done
done
echo "JSON lines in $OUT, full log in $LOG"
