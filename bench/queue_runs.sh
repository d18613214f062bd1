#!/usr/bin/env bash
# iii-queue figures for docs/performance.md: enqueue -> handler throughput and latency at
# concurrency 1 and 64 (in_memory and file_based), bytes written per message, and the engine's
# RSS with 1,000,000 queued 1 KiB messages (file_based).
#   bench/queue_runs.sh [build/release] [messages]
set -euo pipefail
BUILD=${1:-build/release}
MESSAGES=${2:-1000000}
WORK=$(mktemp -d)
trap 'kill ${PID:-} 2>/dev/null || true; rm -rf "$WORK"' EXIT

start() {  # $1 = store config
  cat >"$WORK/config.yaml" <<YAML
workers:
  - name: iii-worker-manager
    config: { host: 127.0.0.1, port: 49731 }
  - name: iii-observability
    config: { level: warn }
  - name: iii-queue
    config:
      adapter: { name: builtin, config: $1 }
      queue_configs:
        c1: { concurrency: 1 }
        c64: { concurrency: 64 }
        deep: { concurrency: 1 }
YAML
  (cd "$WORK" && exec "$OLDPWD/$BUILD/iii" --config "$WORK/config.yaml" >"$WORK/engine.log" 2>&1) &
  PID=$!
  for _ in $(seq 100); do grep -q "engine ready" "$WORK/engine.log" 2>/dev/null && break; sleep 0.1; done
}
stop() { kill "$PID"; wait "$PID" || true; rm -rf "$WORK/q"; }

run_flow() {  # $1 = label, $2 = store config
  start "$2"
  "$BUILD/bench/queue_bench" --url ws://127.0.0.1:49731 --mode flow --queues c1,c64 \
    --engine-pid "$PID" --label "$1"
  stop
}
run_flow in_memory "{ store_method: in_memory }"
run_flow file_based "{ store_method: file_based, file_path: $WORK/q }"
run_flow file_based_nofsync "{ store_method: file_based, fsync: false, file_path: $WORK/q }"
start "{ store_method: file_based, file_path: $WORK/q }"
"$BUILD/bench/queue_bench" --url ws://127.0.0.1:49731 --mode fill --queues deep \
  --messages "$MESSAGES" --engine-pid "$PID" --label file_based
du -sh "$WORK/q"
stop
