#!/usr/bin/env bash
# iii-queue through an external broker, for docs/performance.md: enqueue -> handler throughput,
# latency and CPU per message (engine and broker) at concurrency 1 and 64, with the `rabbitmq`
# adapter against a private rabbitmq-server and the `redis` adapter against a private
# redis-server (append-only file, `appendfsync always`, then `everysec`), and the builtin
# in_memory adapter in the same run as the floor (no broker). The machine is shared: compare CPU per message, and see the load line.
# Then FIFO through Redis (`appendfsync everysec`): the standard c64 queue, and a FIFO queue
# (`concurrency: 8` groups per engine, 64 enqueues in flight) with 8 groups and with 1 group,
# on one engine and on two engines sharing the Redis (both consume).
#   [SKIP_RABBITMQ=1] [ONLY_FIFO=1] bench/queue_broker_runs.sh [build/release] [duration-s]
set -euo pipefail
BUILD=${1:-build/release}
DURATION=${2:-5}
WORK=$(mktemp -d)
RPID=""
PID=""
PID2=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  [ -n "$PID2" ] && kill "$PID2" 2>/dev/null || true
  if [ -n "$RPID" ]; then
    kill -9 -- "-$RPID" 2>/dev/null || true
    wait "$RPID" 2>/dev/null || true
    sleep 0.5  # epmd refuses -kill while the dead node is still registered
  fi
  [ -n "${EPMD_PORT:-}" ] && epmd -port "$EPMD_PORT" -kill >/dev/null 2>&1 || true
  [ -n "${REDIS_PID:-}" ] && kill -9 "$REDIS_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "load: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"

boot_rabbitmq() {
  # A private rabbitmq-server (no plugins, data in $WORK).
  AMQP_PORT=$(free_port)
  EPMD_PORT=$(free_port)
  echo '[].' >"$WORK/enabled_plugins"
  (
    cd "$WORK"
    export HOME="$WORK" RABBITMQ_NODE_PORT="$AMQP_PORT" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
      RABBITMQ_DIST_PORT="$(free_port)" ERL_EPMD_PORT="$EPMD_PORT" \
      RABBITMQ_NODENAME="iii_bench_$$@localhost" RABBITMQ_MNESIA_BASE="$WORK/mnesia" \
      RABBITMQ_LOG_BASE="$WORK/log" RABBITMQ_ENABLED_PLUGINS_FILE="$WORK/enabled_plugins" \
      RABBITMQ_CONFIG_FILE="$WORK/rabbitmq" RABBITMQ_PID_FILE="$WORK/rabbit.pid" RABBITMQ_LOGS=-
    exec setsid /usr/lib/rabbitmq/bin/rabbitmq-server >"$WORK/rabbit.log" 2>&1
  ) &
  RPID=$!
  for _ in $(seq 900); do grep -q "Server startup complete" "$WORK/rabbit.log" 2>/dev/null && break; sleep 0.2; done
  grep -q "Server startup complete" "$WORK/rabbit.log" || { tail -20 "$WORK/rabbit.log"; exit 1; }
  BEAM=$(pgrep -s "$RPID" beam.smp | head -1)
}

start() {  # $1 = adapter block
  cat >"$WORK/config.yaml" <<YAML
workers:
  - name: iii-worker-manager
    config: { host: 127.0.0.1, port: 0 }
  - name: iii-observability
    config: { level: warn }
  - name: iii-queue
    config:
      adapter: $1
      queue_configs:
        c1: { concurrency: 1 }
        c64: { concurrency: 64 }
        f64: { type: fifo, message_group_field: g, concurrency: 8 }
YAML
  (cd "$WORK" && exec "$OLDPWD/$BUILD/iii" --config "$WORK/config.yaml" --log-level info >"$WORK/engine.log" 2>&1) &
  PID=$!
  for _ in $(seq 100); do grep -q "listening on" "$WORK/engine.log" 2>/dev/null && break; sleep 0.1; done
  PORT=$(grep -o "listening on 127.0.0.1:[0-9]*" "$WORK/engine.log" | head -1 | cut -d: -f2)
}
stop() { kill "$PID"; wait "$PID" || true; PID=""; }
start2() {  # a second engine with the same config (same broker)
  (cd "$WORK" && exec "$OLDPWD/$BUILD/iii" --config "$WORK/config.yaml" --log-level info >"$WORK/engine2.log" 2>&1) &
  PID2=$!
  for _ in $(seq 100); do grep -q "listening on" "$WORK/engine2.log" 2>/dev/null && break; sleep 0.1; done
  PORT2=$(grep -o "listening on 127.0.0.1:[0-9]*" "$WORK/engine2.log" | head -1 | cut -d: -f2)
}
stop2() { kill "$PID2"; wait "$PID2" || true; PID2=""; }
start_redis() {  # $1 = appendfsync
  REDIS_PORT=$(free_port)
  mkdir -p "$WORK/redis-$1"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis-$1" --appendonly yes \
    --appendfsync "$1" --save "" >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 100); do grep -q "Ready to accept" "$WORK/redis.log" && break; sleep 0.1; done
}
stop_redis() { kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true; REDIS_PID=""; }

if [ "${ONLY_FIFO:-0}" != 1 ]; then
start "{ name: builtin, config: { store_method: in_memory } }"
"$BUILD/bench/queue_bench" --url "ws://127.0.0.1:$PORT" --mode flow --queues c1,c64 \
  --duration-s "$DURATION" --engine-pid "$PID" --label builtin_in_memory
stop

if [ "${SKIP_RABBITMQ:-0}" != 1 ]; then  # its boot takes 15 to 60 s on a loaded machine
  boot_rabbitmq
  start "{ name: rabbitmq, config: { amqp_url: \"amqp://guest:guest@127.0.0.1:$AMQP_PORT\" } }"
  for _ in $(seq 100); do grep -q "connected to RabbitMQ" "$WORK/engine.log" && break; sleep 0.1; done
  "$BUILD/bench/queue_bench" --url "ws://127.0.0.1:$PORT" --mode flow --queues c1,c64 \
    --duration-s "$DURATION" --engine-pid "$PID" --broker-pid "$BEAM" --label rabbitmq
  stop
fi

for fsync in always everysec; do
  start_redis "$fsync"
  start "{ name: redis, config: { redis_url: \"redis://127.0.0.1:$REDIS_PORT\" } }"
  "$BUILD/bench/queue_bench" --url "ws://127.0.0.1:$PORT" --mode flow --queues c1,c64 \
    --duration-s "$DURATION" --engine-pid "$PID" --broker-pid "$REDIS_PID" --label "redis_$fsync"
  stop
  stop_redis
done
fi

start_redis everysec
REDIS_CFG="{ name: redis, config: { redis_url: \"redis://127.0.0.1:$REDIS_PORT\" } }"
start "$REDIS_CFG"
"$BUILD/bench/queue_bench" --url "ws://127.0.0.1:$PORT" --mode flow --queues c64 --closed 1 \
  --duration-s "$DURATION" --engine-pid "$PID" --broker-pid "$REDIS_PID" --label "redis_std_1engine"
for g in 8 1; do
  "$BUILD/bench/queue_bench" --url "ws://127.0.0.1:$PORT" --mode flow --queues f64 --groups "$g" --closed 1 \
    --duration-s "$DURATION" --engine-pid "$PID" --broker-pid "$REDIS_PID" --label "redis_fifo_${g}groups_1engine"
done
start2
for g in 8 1; do
  "$BUILD/bench/queue_bench" --url "ws://127.0.0.1:$PORT" --also-url "ws://127.0.0.1:$PORT2" --mode flow \
    --queues f64 --groups "$g" --closed 1 --duration-s "$DURATION" --engine-pid "$PID" --also-pid "$PID2" \
    --broker-pid "$REDIS_PID" --label "redis_fifo_${g}groups_2engines"
done
stop2
stop
stop_redis
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
