#!/usr/bin/env bash
# Scale-out through Redis: `state::set` throughput and `stream::set` fan-out with 1, 2 and 4
# engines on one redis-server (started here on a free port, no persistence), as reported in
# docs/performance.md ("Several engines on one Redis").
#
#   bench/redis_runs.sh [BUILD_DIR] [OUT_FILE]   (defaults: build/release, /tmp/iii-redis.jsonl)
#
# Needs: BUILD_DIR/iii, BUILD_DIR/bench/state_bench, BUILD_DIR/bench/stream_fanout_bench.
# Environment: ENGINES ("1 2 4"), DURATION (5 s per measurement), SECTIONS ("floor state
# stream"; floor = the same state::set load on one engine with the in-memory kv adapter, and
# redis-benchmark's HSET on the same redis-server, for comparison),
# PORT (49800; engine i uses PORT+2i for workers and PORT+2i+1 for iii-stream), SUBSCRIBERS
# (100, spread round-robin over the engines' stream servers), CONCURRENCY (64 calls in flight
# per state client).
#
# The machine is shared, so besides the rates the script reports CPU time: every engine's and
# redis-server's user+system seconds over the run (from /proc/<pid>/stat), and that divided by
# the operations done, i.e. CPU microseconds per state::set or per delivered event. Each line of
# the log starts with the machine load (uptime) when the measurement started.
set -euo pipefail

BUILD=${1:-build/release}
OUT=${2:-/tmp/iii-redis.jsonl}
LOG=$OUT.log
ENGINES=${ENGINES:-1 2 4}
DURATION=${DURATION:-5}
SECTIONS=${SECTIONS:-floor state stream}
PORT=${PORT:-49800}
SUBSCRIBERS=${SUBSCRIBERS:-100}
CONCURRENCY=${CONCURRENCY:-64}
WORK=$(mktemp -d)
PIDS=()
REDIS_PID=

cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
  if [[ -n "$REDIS_PID" ]]; then
    kill -KILL "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=
  fi
}
trap 'cleanup; rm -rf "$WORK"' EXIT

RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_redis() {
  redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    --daemonize no --loglevel warning >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 200); do
    redis-cli -p "$RPORT" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "redis-server did not start" >&2
  exit 1
}

start_engines() {  # $1 = number of engines, $2 = adapter block (default: this Redis)
  local adapter=${2:-"{ name: redis, config: { redis_url: \"redis://127.0.0.1:$RPORT\" } }"}
  for i in $(seq 0 $(($1 - 1))); do
    local wp=$((PORT + 2 * i)) sp=$((PORT + 2 * i + 1))
    cat >"$WORK/cfg-$i.yaml" <<EOF
workers:
  - name: iii-worker-manager
    config: { host: 127.0.0.1, port: $wp }
  - name: iii-state
    config: { adapter: $adapter }
  - name: iii-stream
    config: { host: 127.0.0.1, port: $sp, adapter: $adapter }
EOF
    "$BUILD/iii" --config "$WORK/cfg-$i.yaml" >"$WORK/engine-$i.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 400); do
      grep -q "engine ready" "$WORK/engine-$i.log" 2>/dev/null && break
      sleep 0.05
    done
  done
}

cpu_ticks() {  # user+system clock ticks of the given pids, summed
  local t=0
  for p in "$@"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}

HZ=$(getconf CLK_TCK)

: >"$OUT"
: >"$LOG"
if [[ " $SECTIONS " == *" floor "* ]]; then
  start_redis
  echo "## $(uptime)  :: floor: redis-benchmark HSET, 64 connections" | tee -a "$LOG"
  redis-benchmark -p "$RPORT" -c 64 -n 200000 -t hset -q 2>&1 | tr '\r' '\n' | grep -v '^$' | tail -1 | tee -a "$LOG"
  start_engines 1 "{ name: kv, config: { store_method: in_memory } }"
  echo "## $(uptime)  :: floor: state::set, 1 engine, kv in_memory" | tee -a "$LOG"
  e0=$(cpu_ticks "${PIDS[@]}")
  "$BUILD/bench/state_bench" --url "ws://127.0.0.1:$PORT" --engine-pid "${PIDS[0]}" --label in-memory \
    --op set --concurrency "$CONCURRENCY" --duration-s "$DURATION" >"$WORK/floor.out" 2>&1 || true
  e1=$(cpu_ticks "${PIDS[@]}")
  tee -a "$LOG" <"$WORK/floor.out" | grep '^{' >>"$OUT" || true
  python3 - "$(( e1 - e0 ))" "$HZ" "$DURATION" "$WORK/floor.out" <<'PY' | tee -a "$LOG" | grep '^{' >>"$OUT"
import json, sys
eng, hz, duration = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
r = [json.loads(l) for l in open(sys.argv[4]) if l.startswith('{')][-1]
total = r['ops_per_s'] * (duration + 1)
out = {'bench': 'floor_state_set_in_memory', 'sets_per_s': round(r['ops_per_s']), 'engine_cpu_s': eng / hz,
       'engine_cpu_us_per_set': round(1e6 * eng / hz / total, 1)}
print(f"floor: state::set in memory, 1 engine: {out['sets_per_s']} sets/s, engine CPU {out['engine_cpu_us_per_set']} us/set")
print(json.dumps(out))
PY
  cleanup
fi
for n in $ENGINES; do
  if [[ " $SECTIONS " == *" state "* ]]; then
    start_redis
    start_engines "$n"
    echo "## $(uptime)  :: state::set, $n engine(s)" | tee -a "$LOG"
    e0=$(cpu_ticks "${PIDS[@]}")
    r0=$(cpu_ticks "$REDIS_PID")
    benches=()
    for i in $(seq 0 $((n - 1))); do
      "$BUILD/bench/state_bench" --url "ws://127.0.0.1:$((PORT + 2 * i))" --engine-pid "${PIDS[$i]}" \
        --label "redis-$n-engines-client-$i" --op set --concurrency "$CONCURRENCY" \
        --duration-s "$DURATION" >"$WORK/state-$i.out" 2>&1 &
      benches+=($!)
    done
    for b in "${benches[@]}"; do wait "$b" || true; done
    e1=$(cpu_ticks "${PIDS[@]}")
    r1=$(cpu_ticks "$REDIS_PID")
    cat "$WORK"/state-*.out | tee -a "$LOG" | grep '^{' >>"$OUT" || true
    python3 - "$n" "$DURATION" "$(( e1 - e0 ))" "$(( r1 - r0 ))" "$HZ" "$WORK" <<'PY' | tee -a "$LOG" | grep '^{' >>"$OUT"
import glob, json, sys
n, duration, eng, red, hz, work = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
rows = [json.loads(l) for f in glob.glob(work + '/state-*.out') for l in open(f) if l.startswith('{')]
ops = sum(r['ops'] for r in rows)
rate = sum(r['ops_per_s'] for r in rows)
# The CPU window spans the bench processes' warm-up too: per-op figures use every op they sent,
# approximated as rate * (duration + 1 s warm-up).
total = rate * (duration + 1)
out = {'bench': 'redis_state_set', 'engines': n, 'sets_per_s': round(rate), 'errors': sum(r['errors'] for r in rows),
       'engine_cpu_s': eng / hz, 'redis_cpu_s': red / hz,
       'engine_cpu_us_per_set': round(1e6 * eng / hz / total, 1) if total else None,
       'redis_cpu_us_per_set': round(1e6 * red / hz / total, 1) if total else None}
print(f"state::set through Redis, {n} engine(s): {out['sets_per_s']} sets/s, engine CPU {out['engine_cpu_us_per_set']} us/set, redis CPU {out['redis_cpu_us_per_set']} us/set")
print(json.dumps(out))
PY
    rm -f "$WORK"/state-*.out
    cleanup
  fi
  if [[ " $SECTIONS " == *" stream "* ]]; then
    start_redis
    start_engines "$n"
    urls=""
    for i in $(seq 0 $((n - 1))); do urls="${urls:+$urls,}ws://127.0.0.1:$((PORT + 2 * i + 1))/"; done
    echo "## $(uptime)  :: stream::set fan-out, $n engine(s), $SUBSCRIBERS subscribers" | tee -a "$LOG"
    e0=$(cpu_ticks "${PIDS[@]}")
    r0=$(cpu_ticks "$REDIS_PID")
    "$BUILD/bench/stream_fanout_bench" --url "ws://127.0.0.1:$PORT" --stream-url "$urls" \
      --engine-pid "${PIDS[0]}" --subscribers "$SUBSCRIBERS" --inflight 64 \
      --duration-s "$DURATION" >"$WORK/stream.out" 2>&1 || true
    e1=$(cpu_ticks "${PIDS[@]}")
    r1=$(cpu_ticks "$REDIS_PID")
    tee -a "$LOG" <"$WORK/stream.out" | grep '^{' >>"$OUT" || true
    python3 - "$n" "$(( e1 - e0 ))" "$(( r1 - r0 ))" "$HZ" "$WORK/stream.out" <<'PY' | tee -a "$LOG" | grep '^{' >>"$OUT"
import json, sys
n, eng, red, hz = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(l) for l in open(sys.argv[5]) if l.startswith('{')]
r = rows[-1] if rows else {}
ev = r.get('events_per_s', 0)
sets = r.get('sets_per_s', 0)
out = {'bench': 'redis_stream_fanout', 'engines': n, 'subscribers': r.get('subscribers'), 'events_per_s': ev,
       'sets_per_s': sets, 'p50_us': r.get('p50_us'), 'p99_us': r.get('p99_us'),
       'engine_cpu_s': eng / hz, 'redis_cpu_s': red / hz}
print(f"stream fan-out through Redis, {n} engine(s): {ev} events/s ({sets} sets/s), engines {eng / hz:.2f} CPU-s, redis {red / hz:.2f} CPU-s")
print(json.dumps(out))
PY
    cleanup
  fi
done
echo "JSON lines in $OUT, full log in $LOG"
