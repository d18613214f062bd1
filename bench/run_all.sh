#!/usr/bin/env bash
# Runs every engine benchmark the way docs/performance.md reports them, against a freshly
# started engine per measurement, and collects the JSON lines in one file.
#
#   bench/run_all.sh [BUILD_DIR] [OUT_FILE]     (defaults: build/bench, /tmp/iii-bench.jsonl)
#
# The JSON lines go to OUT_FILE, the human-readable output of every tool to OUT_FILE.log.
#
# Build first:
#   cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIII_BUILD_TESTS=OFF
#   ninja -C build/bench iii invoke_bench idle_workers channel_bench fanout_bench startup_bench \
#     loopback_floor
#
# REPEAT (default 3) sets how often each measurement is repeated; docs/performance.md reports
# the median of the repetitions. PORT (default 49600) is the engine's listener port.
set -euo pipefail

BUILD=${1:-build/bench}
OUT=${2:-/tmp/iii-bench.jsonl}
LOG=$OUT.log
REPEAT=${REPEAT:-3}
PORT=${PORT:-49600}
URL=ws://127.0.0.1:$PORT
WORK=$(mktemp -d)
trap 'stop_engine; rm -rf "$WORK"' EXIT

cat >"$WORK/cfg.yaml" <<EOF
workers:
  - name: iii-worker-manager
    config: { host: 127.0.0.1, port: $PORT }
EOF

ENGINE_PID=
start_engine() {
  "$BUILD/iii" --config "$WORK/cfg.yaml" >"$WORK/engine.log" 2>&1 &
  ENGINE_PID=$!
  for _ in $(seq 200); do
    grep -q "listening on" "$WORK/engine.log" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "engine did not start:" >&2
  cat "$WORK/engine.log" >&2
  exit 1
}
stop_engine() {
  if [[ -n "${ENGINE_PID}" ]]; then
    kill -TERM "$ENGINE_PID" 2>/dev/null || true
    wait "$ENGINE_PID" 2>/dev/null || true
    ENGINE_PID=
  fi
}
note() {
  local load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "== $* (load $load)" | tee -a "$LOG" >&2
  echo "{\"note\":\"$*\",\"loadavg\":\"$load\"}" >>"$OUT"
}

: >"$OUT"
: >"$LOG"
echo "{\"machine\":{\"nproc\":$(nproc),\"cpu\":\"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')\",\"kernel\":\"$(uname -r)\"}}" >>"$OUT"

for r in $(seq "$REPEAT"); do
  # The same paths with no engine at all: this machine's floors for the figures below.
  note "loopback floor run $r"
  "$BUILD/bench/loopback_floor" --mode rtt,relay,copy,fanout | tee -a "$LOG" | grep '^{' >>"$OUT" || true

  note "invoke run $r"
  start_engine
  "$BUILD/bench/invoke_bench" --url "$URL" --concurrency 1,64 --payload-bytes 100,1048576 \
    --duration-s 5 --warmup-s 1 --engine-pid "$ENGINE_PID" | tee -a "$LOG" | grep '^{' >>"$OUT" || true
  stop_engine

  note "idle workers run $r"
  start_engine
  sleep 0.5
  "$BUILD/bench/idle_workers" --url "$URL" --count 1000 --engine-pid "$ENGINE_PID" --hold-s 1 |
    tee -a "$LOG" | sed -n 's/.*delta \(-\?[0-9]*\) KiB, \([0-9.]*\) KiB per connection.*/{"bench":"idle_workers","count":1000,"delta_kib":\1,"kib_per_conn":\2}/p' >>"$OUT" || true
  stop_engine

  note "channel run $r"
  start_engine
  "$BUILD/bench/channel_bench" --url "$URL" --bytes 1073741824 --engine-pid "$ENGINE_PID" \
    --timeout-s 30 2>&1 | tee -a "$LOG" | grep '^{' >>"$OUT" || true
  stop_engine

  note "fanout run $r"
  start_engine
  "$BUILD/bench/fanout_bench" --url "$URL" --fanout 1,128 --rounds 200 --engine-pid "$ENGINE_PID" | tee -a "$LOG" |
    grep '^{' >>"$OUT" || true
  stop_engine
done

note "startup"
"$BUILD/bench/startup_bench" --binary "$BUILD/iii" --config "$WORK/cfg.yaml" --runs 20 |
  tee -a "$LOG" | grep '^{' >>"$OUT" || true

echo "results in $OUT and $LOG" >&2
