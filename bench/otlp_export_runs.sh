#!/usr/bin/env bash
# What OTLP export costs the engine: invoke_bench (concurrency 1 and 64, 100 B) against an engine
# whose iii-observability `exporter` is `memory` (no export), `both` with a local OTLP/HTTP
# receiver that answers 200 to everything (every engine span of every call is exported), and
# `both` with an endpoint where nothing listens (the collector is down). Reports the engine's CPU
# time per call (all its threads, the exporter's included; from /proc schedstat) next to the
# latency, since CPU depends far less on the other load of this machine than wall-clock time.
#
#   bench/otlp_export_runs.sh [BUILD_DIR] [OUT_FILE]   (defaults: build/release, /tmp/iii-otlp-export.jsonl)
#
# Environment: REPEAT (3), PORT (49760), DURATION (5).
set -euo pipefail
BUILD=${1:-build/release}
OUT=${2:-/tmp/iii-otlp-export.jsonl}
REPEAT=${REPEAT:-3}
PORT=${PORT:-49760}
DURATION=${DURATION:-5}
RECV_PORT=$((PORT + 1))
DEAD_PORT=$((PORT + 2))
WORK=$(mktemp -d)
ENGINE_PID=
RECV_PID=

stop_engine() {
  if [[ -n "$ENGINE_PID" ]]; then
    kill -TERM "$ENGINE_PID" 2>/dev/null || true
    wait "$ENGINE_PID" 2>/dev/null || true
    ENGINE_PID=
  fi
}
cleanup() {
  stop_engine
  [[ -n "$RECV_PID" ]] && kill "$RECV_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The receiver: reads each body, counts spans, answers 200 (keep-alive).
cat >"$WORK/recv.py" <<'EOP'
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
count = {"requests": 0, "bytes": 0}
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        count["requests"] += 1; count["bytes"] += n
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"{}")
    def do_GET(self):
        body = json.dumps(count).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOP
python3 "$WORK/recv.py" "$RECV_PORT" &
RECV_PID=$!

run() {  # name, exporter keys
  local name=$1 keys=$2
  cat >"$WORK/cfg.yaml" <<EOC
workers:
  - name: iii-worker-manager
    config: { host: 127.0.0.1, port: $PORT }
  - name: iii-observability
    config: { level: warn, $keys }
EOC
  "$BUILD/iii" --config "$WORK/cfg.yaml" >"$WORK/engine.log" 2>&1 &
  ENGINE_PID=$!
  for _ in $(seq 400); do
    (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
    sleep 0.05
  done
  "$BUILD/bench/invoke_bench" --url "ws://127.0.0.1:$PORT" --concurrency 1,64 --payload-bytes 100 \
    --duration-s "$DURATION" --engine-pid "$ENGINE_PID" | grep '^{' |
    sed "s/^{/{\"config\":\"$name\",/" | tee -a "$OUT"
  stop_engine
}

: >"$OUT"
for i in $(seq "$REPEAT"); do
  run memory "exporter: memory"
  run otlp "exporter: both, endpoint: 'http://127.0.0.1:$RECV_PORT'"
  run collector-down "exporter: both, endpoint: 'http://127.0.0.1:$DEAD_PORT'"
done
echo "receiver: $(python3 -c "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:$RECV_PORT/').read().decode())")"
