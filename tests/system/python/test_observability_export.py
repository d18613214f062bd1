"""iii-observability, export side: OTLP/HTTP export to a real receiver, the Prometheus endpoint, trace sampling and
alerts, against the real engine and the official Python SDK.

The OTLP receiver is a small ``http.server`` started by the test. It decodes every request body with the official
OpenTelemetry protobuf definitions (``opentelemetry-proto``, pinned in requirements.txt): OTLP/JSON is parsed
strictly into ``ExportTraceServiceRequest`` / ``ExportMetricsServiceRequest`` / ``ExportLogsServiceRequest``
(unknown fields are errors), after turning the hex trace/span ids of the OTLP/JSON mapping into the base64 that
protobuf's generic JSON mapping uses for bytes, as collectors do. The https variants serve it over TLS (Python's
``ssl``) with a certificate from a CA the test makes with the ``openssl`` CLI; the engine trusts that CA through
``SSL_CERT_FILE`` (OpenSSL's default verify paths).
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import conftest
from conftest import HERE, ChildWorker, wait_for

OTEL_WORKER = HERE / "fixtures" / "otel_worker.py"
MESSAGES = {
    "/v1/traces": ExportTraceServiceRequest,
    "/v1/metrics": ExportMetricsServiceRequest,
    "/v1/logs": ExportLogsServiceRequest,
}
ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def _hex_ids_to_base64(v: Any) -> Any:
    if isinstance(v, dict):
        return {
            k: (base64.b64encode(bytes.fromhex(x)).decode() if k in ID_KEYS and isinstance(x, str) else _hex_ids_to_base64(x))
            for k, x in v.items()
        }
    if isinstance(v, list):
        return [_hex_ids_to_base64(x) for x in v]
    return v


class OtlpReceiver:
    """OTLP/HTTP JSON receiver: every POST is decoded with the official protobuf messages and kept."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.tls_errors: list[str] = []  # failed TLS handshakes (e.g. the engine refused our certificate)
        self.requests: list[tuple[str, str, Any]] = []  # (path, content-type, decoded message or raw JSON)
        self.errors: list[str] = []
        self.hooks: list[dict] = []  # POST /hook bodies (alert webhooks)
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ctype = self.headers.get("Content-Type", "")
                status = 200
                with outer.lock:
                    if self.path == "/hook":
                        outer.hooks.append(json.loads(body))
                    elif self.path in MESSAGES:
                        try:
                            raw = json.loads(body)
                            msg = json_format.Parse(json.dumps(_hex_ids_to_base64(raw)), MESSAGES[self.path]())
                            outer.requests.append((self.path, ctype, msg))
                        except Exception as e:  # noqa: BLE001
                            outer.errors.append(f"{self.path}: {e!r}: {body[:300]!r}")
                            status = 400
                    else:
                        status = 404
                out = b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        class Server(ThreadingHTTPServer):
            def finish_request(self, request, client_address):  # in the connection's thread
                if outer.tls is not None:
                    try:
                        request = outer.tls.wrap_socket(request, server_side=True)
                    except (ssl.SSLError, OSError) as e:
                        with outer.lock:
                            outer.tls_errors.append(repr(e))
                        return
                super().finish_request(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        if self.tls is not None:  # by name: SNI and the host name check are exercised
            return f"https://localhost:{self.server.server_address[1]}"
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def messages(self, path: str) -> list[Any]:
        with self.lock:
            return [m for p, _, m in self.requests if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca.pem (the CA the engine trusts) with srv.pem/srv.key for localhost and 127.0.0.1; rogue.pem/rogue.key for
    the same names from another CA, which nothing trusts."""
    d = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for ca, leaf in (("ca", "srv"), ("rogue-ca", "rogue")):
        openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN=iii {ca}")
        openssl("req", *ec, "-keyout", f"{leaf}.key", "-out", f"{leaf}.csr", "-subj", "/CN=localhost")
        openssl("x509", "-req", "-in", f"{leaf}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
                "-out", f"{leaf}.pem", "-days", "2", "-extfile", "ext.cnf")
    return d


def tls(cert: str):
    """Decorator: the test's receiver serves https with ``<cert>.pem`` (``srv``: trusted, ``rogue``: not)."""

    def deco(fn):
        fn.tls_cert = cert
        return fn

    return deco


@pytest.fixture
def receiver(request, monkeypatch):
    ctx = None
    cert = getattr(request.function, "tls_cert", None)
    if cert:
        d = request.getfixturevalue("pki")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(d / f"{cert}.pem", d / f"{cert}.key")
        monkeypatch.setenv("SSL_CERT_FILE", str(d / "ca.pem"))  # the engine's trust store: our CA only
    r = OtlpReceiver(ctx)
    yield r
    r.close()


def obs(config: str):
    """Decorator: the iii-observability config keys of the test's engine (see the ``engine`` fixture)."""

    def deco(fn):
        fn.obs_config = config
        return fn

    return deco


def dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def engine(request, receiver, start_engine, monkeypatch):
    """The engine of each test (overrides conftest's): its iii-observability entry gets the config keys given by the
    test's ``@obs(...)`` (a YAML flow-mapping body; ``{receiver}`` is the OTLP receiver's URL, ``{dead}`` a port
    nothing listens on)."""
    obs = getattr(request.function, "obs_config", "").format(receiver=receiver.url, dead=dead_port())

    def config_yaml(listeners, level="info", extra=""):
        out = ["workers:"]
        for listener in listeners:
            cfg = {"host": "127.0.0.1", "port": 0, "idle_timeout_ms": 60000, **listener}
            out.append("  - name: iii-worker-manager")
            out.append("    config: { " + ", ".join(f"{k}: {v}" for k, v in cfg.items()) + " }")
        out.append("  - name: iii-observability")
        out.append(f"    config: {{ level: {level}, format: text, {obs} }}")
        if extra:
            out.append(extra.rstrip("\n"))
        return "\n".join(out) + "\n"

    monkeypatch.setattr(conftest, "config_yaml", config_yaml)
    return start_engine()


def otel_worker(session, engine, name: str, service: str) -> ChildWorker:
    ch = ChildWorker(
        [sys.executable, str(OTEL_WORKER), engine.url, name, service],
        f"otel worker {name}",
        HERE,
        env={"PYTHONUNBUFFERED": "1", "OTEL_BSP_SCHEDULE_DELAY": "200"},
    )
    session.children.append(ch)
    ch.wait_ready()
    return ch


def call(client, fid, payload=None):
    return client.trigger({"function_id": fid, "payload": payload if payload is not None else {}})


def attrs(resource) -> dict[str, str]:
    return {a.key: a.value.string_value for a in resource.attributes}


def metrics_port(engine) -> int:
    m = wait_for(lambda: re.search(r"metrics listening on [0-9.]+:(\d+)", engine.log()), timeout=5,
                 what="the metrics listener")
    return int(m.group(1))


def http_get(url: str, method: str = "GET") -> tuple[int, str, str]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def scrape(port: int) -> dict[str, float]:
    """Prometheus text → {'name{labels}': value}; every line must be a comment or a sample."""
    status, ctype, text = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_:][a-z0-9_:]* ", line), line
            continue
        m = re.match(r'^([a-z_:][a-z0-9_:]*(?:\{[^}]*\})?) (\S+)$', line)
        assert m, f"not a sample line: {line!r}"
        out[m.group(1)] = float(m.group(2))
    return out


# ---------------------------------------------------------------------------------------------------------------


@obs("exporter: both, endpoint: '{receiver}', service_name: iii-export-test")
def test_otlp_export_reaches_a_real_receiver(receiver, engine, session, make_client):
    worker = otel_worker(session, engine, "otel-exp", "otel-export-svc")
    py = make_client("otel-exp-caller")
    results = [call(py, "otel-exp::work", {"tag": f"t{i}"}) for i in range(3)]
    trace_ids = {r["trace_id"] for r in results}
    assert all(t and len(t) == 32 for t in trace_ids), results

    def spans_of_worker():
        out = []
        for msg in receiver.messages("/v1/traces"):
            for rs in msg.resource_spans:
                if attrs(rs.resource).get("service.name") != "otel-export-svc":
                    continue
                for ss in rs.scope_spans:
                    out.extend(ss.spans)
        return out

    spans = wait_for(lambda: [s for s in spans_of_worker() if s.trace_id.hex() in trace_ids], timeout=10,
                     what="the worker's spans at the receiver")
    assert {s.trace_id.hex() for s in spans} == trace_ids
    for s in spans:
        assert len(s.span_id) == 8
        assert s.start_time_unix_nano > 1_600_000_000 * 10**9
        assert s.end_time_unix_nano >= s.start_time_unix_nano

    # The engine's own span of each call (compact records converted on the exporter's thread),
    # under the engine's service, in the same traces, parent of the worker's span.
    def engine_spans():
        out = []
        for msg in receiver.messages("/v1/traces"):
            for rs in msg.resource_spans:
                if attrs(rs.resource).get("service.name") != "iii-export-test":
                    continue
                for ss in rs.scope_spans:
                    out.extend(s for s in ss.spans if s.name == "invoke otel-exp::work")
        return out

    eng = wait_for(lambda: len({s.trace_id.hex() for s in engine_spans()} & trace_ids) == 3 and engine_spans(),
                   timeout=10, what="the engine's spans at the receiver")
    eng = [s for s in eng if s.trace_id.hex() in trace_ids]
    assert all(s.kind == 1 and s.status.code == 1 and len(s.span_id) == 8 for s in eng), eng
    worker_parents = {s.parent_span_id for s in spans}
    assert {s.span_id for s in eng} <= worker_parents

    def logs_of_worker():
        out = []
        for msg in receiver.messages("/v1/logs"):
            for rl in msg.resource_logs:
                for sl in rl.scope_logs:
                    for lr in sl.log_records:
                        if lr.body.string_value.startswith("otel work "):
                            out.append((attrs(rl.resource), lr))
        return out

    logs = wait_for(lambda: len(logs_of_worker()) >= 3 and logs_of_worker(), timeout=10,
                    what="the worker's log records at the receiver")
    for res, lr in logs:
        assert res.get("service.name") == "otel-export-svc"
        assert lr.trace_id.hex() in trace_ids  # joined to the spans by trace id
        assert lr.severity_text.upper().startswith("INFO")
        assert lr.time_unix_nano > 0
        assert "log.data" in {a.key for a in lr.attributes}
    assert {lr.body.string_value for _, lr in logs} >= {"otel work t0", "otel work t1", "otel work t2"}

    def metrics_of_worker():
        out = []
        for msg in receiver.messages("/v1/metrics"):
            for rm in msg.resource_metrics:
                if attrs(rm.resource).get("service.name") != "otel-export-svc":
                    continue
                for sm in rm.scope_metrics:
                    out.extend(sm.metrics)
        return out

    metrics = wait_for(metrics_of_worker, timeout=10, what="the worker's metrics at the receiver")
    calls = wait_for(lambda: [m for m in metrics_of_worker() if m.name == "otel.work.calls"
                              and m.sum.data_points and m.sum.data_points[0].as_double >= 3], timeout=10,
                     what="the worker's counter with all 3 calls at the receiver")
    m = calls[-1]
    assert m.sum.is_monotonic and m.sum.aggregation_temporality == 2  # cumulative
    assert {a.key: a.value.string_value for a in m.sum.data_points[0].attributes} == {"worker": "otel-exp"}
    assert m.sum.data_points[0].time_unix_nano > 0

    # Every request was a valid OTLP/JSON message, sent as application/json.
    assert receiver.errors == []
    with receiver.lock:
        assert all(ctype == "application/json" for _, ctype, _ in receiver.requests)
    assert worker.proc.poll() is None


# Nothing listens on the endpoint: exports fail and are dropped; routing goes on at full speed.
@obs("exporter: both, endpoint: 'http://127.0.0.1:{dead}', metrics_port: 0, metrics_host: 127.0.0.1")
def test_collector_down_never_blocks_routing(engine, make_client):
    callee = make_client("down-callee")
    callee.register_function("down::echo", lambda d: d)
    caller = make_client("down-caller")
    wait_for(lambda: call(caller, "down::echo", {"i": -1}) == {"i": -1, "_caller_worker_id": caller.worker_id},
             timeout=5, what="down::echo")
    t0 = time.monotonic()
    for i in range(200):
        assert call(caller, "down::echo", {"i": i})["i"] == i
    assert time.monotonic() - t0 < 10
    port = metrics_port(engine)
    m = wait_for(lambda: (lambda x: x if x.get('iii_otlp_export_requests_failed_total{signal="traces"}', 0) > 0
                          else None)(scrape(port)), timeout=10, what="a failed export to be counted")
    assert m['iii_invocations_total{function="down::echo",outcome="success"}'] >= 201
    assert engine.alive()


@obs("exporter: memory, metrics_port: 0, metrics_host: 127.0.0.1")
def test_prometheus_endpoint(engine, make_client):
    port = metrics_port(engine)
    callee = make_client("prom-callee")
    callee.register_function("prom::ok", lambda d: {"ok": True})

    def fail(_d):
        raise ValueError("prom boom")

    callee.register_function("prom::fail", fail)
    caller = make_client("prom-caller")
    wait_for(lambda: call(caller, "prom::ok") == {"ok": True}, timeout=5, what="prom::ok")
    for _ in range(4):
        call(caller, "prom::ok")
    with pytest.raises(Exception):
        call(caller, "prom::fail")
    m = scrape(port)
    assert m['iii_invocations_total{function="prom::ok",outcome="success"}'] == 5
    assert m['iii_invocations_total{function="prom::fail",outcome="error"}'] == 1
    assert m['iii_invocations_all_total{outcome="error"}'] >= 1
    assert m["iii_workers_active"] >= 2
    assert m['iii_invocation_duration_milliseconds{quantile="0.99"}'] >= 0
    assert m['iii_telemetry_stored_records{kind="logs"}'] >= 0
    assert m['iii_telemetry_stored_bytes{kind="spans"}'] >= 0
    assert m["process_resident_memory_bytes"] > 1_000_000
    assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    assert http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200
    assert http_get(f"http://127.0.0.1:{port}/nope")[0] == 404
    assert http_get(f"http://127.0.0.1:{port}/metrics", method="POST")[0] == 405


@obs("exporter: memory, sampling_ratio: 0.0, "
                 "sampling: {{ parent_based: false, rules: [ {{ service: 'sampled-in*', rate: 1.0 }} ] }}")
def test_trace_sampling_rules(engine, session, make_client):
    py = make_client("sampling-caller")
    rules = call(py, "engine::sampling::rules")
    assert rules["traces"]["default_ratio"] == 0.0
    assert rules["traces"]["parent_based"] is False
    assert rules["traces"]["rules"] == [{"operation": None, "service": "sampled-in*", "rate": 1.0}]
    assert rules["logs"]["sampling_ratio"] == 1.0
    otel_worker(session, engine, "otel-in", "sampled-in-svc")
    otel_worker(session, engine, "otel-out", "sampled-out-svc")
    kept = [call(py, "otel-in::work", {"tag": f"s{i}"})["trace_id"] for i in range(4)]
    dropped = [call(py, "otel-out::work", {"tag": f"s{i}"})["trace_id"] for i in range(4)]
    assert not set(kept) & set(dropped)

    def tree(trace_id):
        return call(py, "engine::traces::tree", {"trace_id": trace_id})["roots"]

    def flatten(nodes):
        for n in nodes:
            yield n
            yield from flatten(n.get("children", []))

    # The engine's own span of each call (service "iii") falls under the default 0.0; the SDK's span is kept by
    # the rule when its service matches (it stays in the store without its parent, as a root of the tree).
    got = wait_for(lambda: all(tree(t) for t in kept) and [list(flatten(tree(t))) for t in kept], timeout=10,
                   what="the sampled-in worker's spans in the store")
    for spans in got:
        assert [s["service_name"] for s in spans] == ["sampled-in-svc"], spans
    # Every span has arrived (8 engine spans, 8 SDK spans) before absence is checked.
    wait_for(lambda: call(py, "engine::health::check")["components"]["spans"]["details"]["received"] >= 16,
             timeout=10, what="all 16 spans to reach the engine")
    for t in dropped:
        assert tree(t) == [], t
    health = call(py, "engine::health::check")
    assert health["components"]["spans"]["details"]["count"] == len(kept)


ALERT = ("{{{{ name: {name}, metric: iii.invocations.error, threshold: 0, operator: '>', window_seconds: 60, "
         "cooldown_seconds: {cooldown}, action: {action} }}}}")
ALERTS = ", ".join([
    ALERT.format(name="to-function", cooldown=3600, action="{{ type: function, path: 'alerts::sink' }}"),
    ALERT.format(name="to-webhook", cooldown=3600, action="{{ type: webhook, url: '{receiver}/hook' }}"),
    ALERT.format(name="to-log", cooldown=3600, action="{{ type: log }}"),
    ALERT.format(name="no-cooldown", cooldown=0, action="{{ type: log }}"),
])


@obs("exporter: memory, alerts: [ " + ALERTS + " ]")
def test_alerts_fire_their_actions(receiver, engine, make_client):
    sink_got: list[dict] = []
    callee = make_client("alerts-callee")
    callee.register_function("alerts::sink", lambda d: sink_got.append(d) or {"ok": True})

    def fail(_d):
        raise ValueError("alert me")

    callee.register_function("alerts::fail", fail)
    caller = make_client("alerts-caller")
    listed = call(caller, "engine::alerts::list")["alerts"]
    assert [a["name"] for a in listed] == ["to-function", "to-webhook", "to-log", "no-cooldown"]
    assert listed[0]["action"] == {"type": "function", "path": "alerts::sink"}
    assert listed[1]["action"] == {"type": "webhook", "url": f"{receiver.url}/hook"}
    assert listed[0]["state"]["trigger_count"] == 0
    # Nothing failed yet: evaluating fires nothing.
    res = call(caller, "engine::alerts::evaluate")
    assert res["triggered"] == [] and res["evaluated"] == 4
    wait_for(lambda: any(f["function_id"] == "alerts::fail" for f in call(caller, "engine::functions::list")["functions"]),
             timeout=5, what="alerts::fail")
    with pytest.raises(Exception):
        call(caller, "alerts::fail")
    # The alerts fire by themselves (evaluated every second) ...
    wait_for(lambda: sink_got, timeout=5, what="the function action")
    assert sink_got[0]["name"] == "to-function" and sink_got[0]["threshold"] == 0
    assert sink_got[0]["metric"] == "iii.invocations.error" and sink_got[0]["value"] >= 1
    wait_for(lambda: receiver.hooks, timeout=5, what="the webhook action")
    assert receiver.hooks[0]["name"] == "to-webhook" and receiver.hooks[0]["operator"] == ">"
    wait_for(lambda: "alert 'to-log'" in engine.log(), timeout=5, what="the log action")
    # ... and on demand: the rules cooling down stay quiet, the one without a cooldown fires again.
    fired = call(caller, "engine::alerts::evaluate")["triggered"]
    assert [a["name"] for a in fired] == ["no-cooldown"]
    assert fired[0]["value"] >= 1
    listed = {a["name"]: a for a in call(caller, "engine::alerts::list")["alerts"]}
    assert listed["to-webhook"]["state"]["trigger_count"] == 1
    assert listed["to-webhook"]["state"]["firing"] is True
    assert listed["no-cooldown"]["state"]["trigger_count"] >= 2
    assert len(sink_got) == 1 and len(receiver.hooks) == 1


@obs("exporter: memory, logs_console_output: false, logs_max_count: 1000, logs_max_bytes: 20000")
def test_stores_are_bounded_by_bytes(engine, make_client):
    py = make_client("bytes-caller")
    for i in range(100):
        assert call(py, "engine::log::info", {"message": f"{i:04d} " + "x" * 1000}) is None
    health = call(py, "engine::health::check")
    mem = health["components"]["otel"]["details"]["memory"]["logs"]
    logs = health["components"]["logs"]["details"]
    assert mem["max_bytes"] == 20000
    assert 0 < logs["bytes"] <= 20000 and mem["bytes"] == logs["bytes"]
    assert logs["count"] < 100 and logs["evicted"] == 100 - logs["count"]
    # The newest records are the ones kept.
    listed = call(py, "engine::logs::list", {"limit": 1000})["logs"]
    assert len(listed) == logs["count"]
    assert {entry["body"][:4] for entry in listed} == {f"{i:04d}" for i in range(100 - logs["count"], 100)}


def engine_spans_at(receiver, service: str, fn: str) -> list:
    out = []
    for msg in receiver.messages("/v1/traces"):
        for rs in msg.resource_spans:
            if attrs(rs.resource).get("service.name") == service:
                for ss in rs.scope_spans:
                    out.extend(s for s in ss.spans if s.name == f"invoke {fn}")
    return out


# https endpoint (SaaS collectors): the engine verifies the collector's certificate against its trust store
# (SSL_CERT_FILE here), sends SNI and checks the host name; webhooks go over the same client.
@tls("srv")
@obs("exporter: both, endpoint: '{receiver}', service_name: iii-tls-test, "
     "alerts: [ {{ name: tls-hook, metric: iii.invocations.total, threshold: 0, action: "
     "{{ type: webhook, url: '{receiver}/hook' }} }} ]")
def test_otlp_export_over_https(receiver, engine, make_client):
    assert receiver.url.startswith("https://localhost:")
    callee = make_client("tls-callee")
    callee.register_function("tls::echo", lambda d: d)
    caller = make_client("tls-caller")
    call(caller, "engine::alerts::evaluate")  # the counter's baseline, before the calls below
    wait_for(lambda: call(caller, "tls::echo", {"i": 0})["i"] == 0, timeout=5, what="tls::echo")
    for i in range(1, 3):
        assert call(caller, "tls::echo", {"i": i})["i"] == i
    spans = wait_for(lambda: len(engine_spans_at(receiver, "iii-tls-test", "tls::echo")) >= 3
                     and engine_spans_at(receiver, "iii-tls-test", "tls::echo"), timeout=10,
                     what="the engine's spans at the https receiver")
    assert all(len(s.trace_id) == 16 and len(s.span_id) == 8 for s in spans)
    hook = wait_for(lambda: receiver.hooks, timeout=5, what="the https webhook")
    assert hook[0]["name"] == "tls-hook"
    assert receiver.errors == [] and receiver.tls_errors == []
    # Counted once the collector's answer is read (just after the receiver has the spans).
    export = wait_for(lambda: (lambda e: e if e["traces"]["exported"] >= 3 else None)(
        call(caller, "engine::health::check")["components"]["otel"]["details"]["export"]), timeout=5,
        what="the exported spans counted in engine::health::check")
    assert export["endpoint"] == receiver.url and export["traces"]["failed_requests"] == 0


# The collector's certificate is not signed by a CA the engine trusts: nothing is sent, the failures are counted
# in engine::health::check, and routing does not wait for them.
@tls("rogue")
@obs("exporter: both, endpoint: '{receiver}'")
def test_untrusted_https_collector_gets_nothing(receiver, engine, make_client):
    callee = make_client("rogue-callee")
    callee.register_function("rogue::echo", lambda d: d)
    caller = make_client("rogue-caller")
    wait_for(lambda: call(caller, "rogue::echo", {"i": -1})["i"] == -1, timeout=5, what="rogue::echo")
    t0 = time.monotonic()
    for i in range(100):
        assert call(caller, "rogue::echo", {"i": i})["i"] == i
    assert time.monotonic() - t0 < 10

    def traces_export():
        return call(caller, "engine::health::check")["components"]["otel"]["details"]["export"]["traces"]

    st = wait_for(lambda: (lambda t: t if t["failed_requests"] > 0 else None)(traces_export()), timeout=10,
                  what="a failed https export in engine::health::check")
    assert st["exported"] == 0
    wait_for(lambda: receiver.tls_errors, timeout=5, what="the refused handshake at the receiver")
    assert receiver.requests == [] and receiver.errors == []
    assert re.search(r"OTLP export of \w+ to https://localhost:\d+ failed: .*certificate verify failed", engine.log())
    assert engine.alive()
