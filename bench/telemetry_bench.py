#!/usr/bin/env python3
"""Telemetry ingestion cost (iii-observability).

1. Invoke round trip with ingestion on vs off while an SDK-like client ships spans: the same
   engine binary started with `iii-observability` `enabled: true` (exporter memory: frames are
   parsed and stored, and the engine makes its own span per invocation) and `enabled: false`
   (frames are read and dropped, no engine spans); `invoke_bench` (C++ SDK) measures the round
   trip while a shipper sends OTLP span frames on /otel at a fixed rate. Runs alternate on/off.
   `--exporter otlp` (the spec's default) exports everything towards a collector that is down.
   Reported: p50/p99, calls/s, and CPU time per call of the engine's event-loop thread and of
   the whole engine (CPU figures depend far less on the other load of the machine).
2. Ingestion rate: frames of 512 spans sent as fast as possible; spans/s until the engine has
   stored them all (engine::health::check), and engine CPU per span.

    bench/telemetry_bench.py --binary build/release/iii --invoke-bench build/release/bench/invoke_bench
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
import uuid

from websockets.sync.client import connect

TICK = os.sysconf("SC_CLK_TCK")


def span_frame(n: int, seed: int) -> bytes:
    trace = f"{seed:032x}"
    spans = [
        {
            "traceId": trace,
            "spanId": f"{i + 1:016x}",
            "parentSpanId": "" if i == 0 else f"{1:016x}",
            "name": f"call bench::fn{i % 10}",
            "kind": 2,
            "startTimeUnixNano": str(1_700_000_000_000_000_000 + i),
            "endTimeUnixNano": str(1_700_000_000_000_100_000 + i),
            "attributes": [{"key": "function_id", "value": {"stringValue": f"bench::fn{i % 10}"}},
                           {"key": "n", "value": {"intValue": i}}],
            "status": {"code": 1},
            "events": [],
            "links": [],
        }
        for i in range(n)
    ]
    body = {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "bench-node"}},
        {"key": "telemetry.sdk.language", "value": {"stringValue": "nodejs"}}]},
        "scopeSpans": [{"scope": {"name": "bench"}, "spans": spans}]}]}
    return b"OTLP" + json.dumps(body, separators=(",", ":")).encode()


class Engine:
    def __init__(self, binary: str, enabled: bool, exporter: str = "memory") -> None:
        self.dir = tempfile.mkdtemp(prefix="iii-telemetry-bench-")
        cfg = os.path.join(self.dir, "config.yaml")
        with open(cfg, "w") as f:
            f.write(
                "workers:\n"
                "  - name: iii-worker-manager\n"
                "    config: { host: 127.0.0.1, port: 0 }\n"
                "  - name: iii-observability\n"
                f"    config: {{ enabled: {str(enabled).lower()}, exporter: {exporter}, level: warn,"
                " endpoint: 'http://127.0.0.1:9',"
                " logs_console_output: false, memory_max_spans: 10000 }\n"
            )
        # level warn: the "listening on" line is info, so read the port from /proc instead.
        self.proc = subprocess.Popen([binary, "--config", cfg], cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env={**os.environ, "III_TELEMETRY_ENABLED": "false"})
        self.port = self._port()
        self.url = f"ws://127.0.0.1:{self.port}"

    def _port(self) -> int:
        inodes = set()
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
                    link = os.readlink(f"/proc/{self.proc.pid}/fd/{fd}")
                    m = re.match(r"socket:\[(\d+)\]", link)
                    if m:
                        inodes.add(m.group(1))
                with open("/proc/net/tcp") as f:
                    for line in f.readlines()[1:]:
                        parts = line.split()
                        if parts[3] == "0A" and parts[9] in inodes:  # LISTEN
                            return int(parts[1].split(":")[1], 16)
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        raise RuntimeError("engine did not listen")

    def cpu(self) -> tuple[float, float]:
        """(event-loop thread, whole process) CPU seconds."""
        def stat(path: str) -> float:
            with open(path) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / TICK

        main = stat(f"/proc/{self.proc.pid}/task/{self.proc.pid}/stat")
        return main, stat(f"/proc/{self.proc.pid}/stat")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def invoke(url: str, fid: str, data: dict) -> dict:
    with connect(url, max_size=None) as ws:
        json.loads(ws.recv())  # workerregistered
        inv = str(uuid.uuid4())
        ws.send(json.dumps({"type": "invokefunction", "invocation_id": inv, "function_id": fid, "data": data}))
        while True:
            m = json.loads(ws.recv(10))
            if m.get("type") == "invocationresult" and m.get("invocation_id") == inv:
                return m.get("result")


def shipper(url: str, frames_per_s: float, spans_per_frame: int, stop: threading.Event, sent: list) -> None:
    if frames_per_s <= 0:
        return
    frame = span_frame(spans_per_frame, 7)
    with connect(url + "/otel", max_size=None) as ws:
        nxt = time.monotonic()
        while not stop.is_set():
            ws.send(frame)
            sent[0] += spans_per_frame
            nxt += 1 / frames_per_s
            stop.wait(max(0, nxt - time.monotonic()))


def round_trip(args, enabled: bool) -> list[dict]:
    eng = Engine(args.binary, enabled, args.exporter)
    stop = threading.Event()
    sent = [0]
    t = threading.Thread(target=shipper, args=(eng.url, args.frames_per_s, args.spans_per_frame, stop, sent))
    t.start()
    out = []
    try:
        time.sleep(0.5)
        for c in args.concurrency:
            main0, all0 = eng.cpu()
            r = subprocess.run([args.invoke_bench, "--url", eng.url, "--concurrency", str(c), "--payload-bytes", "100",
                                "--duration-s", str(args.duration_s), "--warmup-s", "0.5"],
                               capture_output=True, text=True, timeout=120)
            main1, all1 = eng.cpu()
            row = next(json.loads(l) for l in r.stdout.splitlines() if l.startswith("{"))
            calls = row["calls"] * (args.duration_s + 0.5) / args.duration_s  # warm-up calls too (approx.)
            row.update(enabled=enabled, concurrency=c, main_cpu_us_per_call=(main1 - main0) * 1e6 / calls,
                       engine_cpu_us_per_call=(all1 - all0) * 1e6 / calls)
            out.append(row)
    finally:
        stop.set()
        t.join()
        eng.stop()
    return out


def ingestion_rate(args) -> dict:
    eng = Engine(args.binary, True)
    try:
        frame = span_frame(512, 9)
        main0, all0 = eng.cpu()
        t0 = time.monotonic()
        with connect(eng.url + "/otel", max_size=None) as ws:
            for _ in range(args.flood_frames):
                ws.send(frame)
        total = 512 * args.flood_frames
        while True:
            h = invoke(eng.url, "engine::health::check", {})
            if h["components"]["spans"]["details"]["received"] >= total:
                break
            time.sleep(0.02)
        wall = time.monotonic() - t0
        main1, all1 = eng.cpu()
        return {"bench": "telemetry_ingest", "spans": total, "frame_bytes": len(frame), "wall_s": round(wall, 3),
                "spans_per_s_wall": round(total / wall), "engine_cpu_us_per_span": round((all1 - all0) * 1e6 / total, 3),
                "main_thread_cpu_us_per_span": round((main1 - main0) * 1e6 / total, 3),
                "spans_per_engine_cpu_s": round(total / max(all1 - all0, 1e-9))}
    finally:
        eng.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--binary", required=True)
    p.add_argument("--invoke-bench", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration-s", type=float, default=4)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    p.add_argument("--frames-per-s", type=float, default=20)
    p.add_argument("--spans-per-frame", type=int, default=100)
    p.add_argument("--flood-frames", type=int, default=200)
    # otlp: the spec's default; the endpoint is a port where nothing listens (a collector that
    # is down: every record is queued for export and dropped).
    p.add_argument("--exporter", choices=["memory", "otlp", "both"], default="memory")
    args = p.parse_args()
    args.binary = os.path.abspath(args.binary)
    args.invoke_bench = os.path.abspath(args.invoke_bench)
    rows = []
    for r in range(args.rounds):
        for enabled in (True, False) if r % 2 == 0 else (False, True):
            for row in round_trip(args, enabled):
                rows.append(row)
                print(json.dumps(row), flush=True)
    for c in args.concurrency:
        for key in ("p50_us", "p99_us", "calls_per_s", "main_cpu_us_per_call", "engine_cpu_us_per_call"):
            on = statistics.median(x[key] for x in rows if x["enabled"] and x["concurrency"] == c)
            off = statistics.median(x[key] for x in rows if not x["enabled"] and x["concurrency"] == c)
            print(f"c={c} {key}: on {on:.2f}  off {off:.2f}  ({(on / off - 1) * 100:+.1f} %)")
    print(json.dumps(ingestion_rate(args)))


if __name__ == "__main__":
    main()
