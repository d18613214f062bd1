#!/usr/bin/env bash
# Engine instructions per invoke round trip with iii-observability on vs off, counted by
# callgrind (deterministic, unaffected by the machine's other load). The engine runs under
# valgrind; invoke_bench (C++ SDK, concurrency 1, 100-byte payload) drives it for N seconds.
#
#   bench/telemetry_callgrind.sh [build dir (build/release)] [seconds (8)]
#
# Modes: off; on with `exporter: memory`; on with `exporter: both` towards an endpoint where
# nothing listens (every engine span is queued for export; the exporter thread's work is not
# counted). Prints, per mode, the engine-thread instructions per call spent under WsSession::on_read
# (read → decode → route → encode → send, both frames of a call) and in the engine-span flush.
set -euo pipefail
BUILD=$(cd "${1:-build/release}" && pwd)
SECS=${2:-8}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
for spec in false:memory true:memory true:both; do
  mode=${spec%%:*}
  exporter=${spec##*:}
  cat > "$DIR/cfg.yaml" <<YAML
workers:
  - name: iii-worker-manager
    config: { host: 127.0.0.1, port: 0 }
  - name: iii-observability
    config: { enabled: $mode, exporter: $exporter, endpoint: 'http://127.0.0.1:9', level: info, logs_console_output: false, memory_max_spans: 10000 }
YAML
  valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.out" "$BUILD/iii" --config "$DIR/cfg.yaml" \
    > "$DIR/log.txt" 2>&1 &
  vpid=$!
  port=
  for _ in $(seq 1 300); do
    port=$(grep -o "listening on 127.0.0.1:[0-9]*" "$DIR/log.txt" | head -1 | cut -d: -f2 || true)
    [ -n "$port" ] && break
    sleep 0.2
  done
  "$BUILD/bench/invoke_bench" --url "ws://127.0.0.1:$port" --concurrency 1 --payload-bytes 100 \
    --duration-s "$SECS" --warmup-s 0 > /dev/null
  kill -TERM "$vpid"
  wait "$vpid" || true
  ann=$(callgrind_annotate --inclusive=yes "$DIR/cg.out" 2>/dev/null)
  frames=$(grep -oE "=> .*Engine::on_frame\(unsigned long, std::basic_string_view<char, std::char_traits<char> >\) \(([0-9,]+)x\)" <<<"$ann" |
    head -1 | grep -oE "\(([0-9,]+)x\)" | tr -d '(),x')
  on_read=$(grep -E "^ *[0-9,]+ \(.*WsSession::on_read\(" <<<"$ann" | head -1 | awk '{print $1}' | tr -d ,)
  flush=$(grep -E "^ *[0-9,]+ \(.*flush_engine_spans\(" <<<"$ann" | head -1 | awk '{print $1}' | tr -d , || true)
  total=$(grep -E "PROGRAM TOTALS" <<<"$ann" | head -1 | awk '{print $1}' | tr -d ,)
  calls=$((frames / 2))
  echo "{\"bench\":\"telemetry_callgrind\",\"enabled\":$mode,\"exporter\":\"$exporter\",\"calls\":$calls,\"on_read_ir_per_call\":$((on_read / calls)),\"flush_ir_per_call\":$(( ${flush:-0} / calls )),\"process_ir_per_call\":$((total / calls))}"
done
