"""iii-observability with the official SDKs: SDK logs, spans and metrics sent on /otel are stored,
queryable through the engine::* functions, joined with the engine's own invocation spans, and
bounded; `log` triggers fire by level; bad telemetry frames are dropped with rate-limited warnings."""

from __future__ import annotations

import json
import re
import sys
import time

import pytest
from websockets.sync.client import connect

from conftest import HERE, NODE_DIR, ChildWorker, wait_for, wait_for_functions

OBS_NODE = NODE_DIR / "fixtures" / "obs_worker.mjs"
OBS_PY = HERE / "fixtures" / "py_obs_worker.py"
# The SDKs' batch span processors wait 5 s by default; the tests do not.
FAST_OTEL = {"OTEL_BSP_SCHEDULE_DELAY": "100", "PYTHONUNBUFFERED": "1"}


def obs(**cfg) -> dict:
    """The `engine` marker's `level` is spliced into the iii-observability flow mapping, which is
    how these tests give that worker more keys without a conftest change."""
    extra = ", ".join(f"{k}: {v}" for k, v in cfg.items())
    return {"level": "info" + (", " + extra if extra else "")}


def call(client, fid, payload=None, timeout_ms=10000):
    return client.trigger({"function_id": fid, "payload": payload if payload is not None else {}, "timeout_ms": timeout_ms})


@pytest.fixture
def obs_node(session, engine):
    def spawn(name: str, env: dict | None = None) -> ChildWorker:
        ch = ChildWorker(["node", str(OBS_NODE), engine.url, name], f"obs node {name}", NODE_DIR, {**FAST_OTEL, **(env or {})})
        session.children.append(ch)
        ch.wait_ready()
        return ch

    return spawn


@pytest.fixture
def obs_py(session, engine):
    def spawn(name: str) -> ChildWorker:
        ch = ChildWorker([sys.executable, str(OBS_PY), engine.url, name], f"obs python {name}", HERE, FAST_OTEL)
        session.children.append(ch)
        ch.wait_ready()
        return ch

    return spawn


STORED_LOG_KEYS = {
    "timestamp_unix_nano", "observed_timestamp_unix_nano", "severity_number", "severity_text", "body",
    "attributes", "trace_id", "span_id", "resource", "service_name", "instrumentation_scope_name",
    "instrumentation_scope_version",
}


@pytest.mark.engine(**obs(exporter="memory"))
def test_node_logger_output_found_by_trace_id(engine, make_client, obs_node):
    obs_node("obs-logger")
    client = make_client("obs-client")
    mark = engine.mark()
    ids = call(client, "obsn::log", {"message": "order shipped", "level": "warn", "data": {"order": 7}})
    assert re.fullmatch(r"[0-9a-f]{32}", ids["trace_id"] or ""), ids

    def found():
        r = call(client, "engine::logs::list", {"trace_id": ids["trace_id"]})
        return r if r["total"] >= 1 else None

    res = wait_for(found, timeout=10, what="the Logger record in engine::logs::list")
    assert set(res) == {"logs", "total", "query", "timestamp"}
    assert res["query"] == {"trace_id": ids["trace_id"]}
    log = res["logs"][0]
    assert set(log) == STORED_LOG_KEYS
    assert log["body"] == "order shipped"
    assert log["severity_text"] == "WARN" and log["severity_number"] == 13
    assert log["trace_id"] == ids["trace_id"] and log["span_id"] == ids["span_id"]
    assert log["attributes"]["log.data"] == {"order": 7}
    assert log["service_name"] and log["resource"]["service.name"] == log["service_name"]
    # Printed on the engine's console with its service, level, trace id and attributes.
    wait_for(
        lambda: any("order shipped" in l and ids["trace_id"] in l and "WARN" in l.upper() for l in engine.lines_since(mark)),
        what="the SDK log line on the engine console",
    )
    line = next(l for l in engine.lines_since(mark) if "order shipped" in l)
    assert f"[{log['service_name']}]" in line and '"log.data":{"order":7}' in line, line
    # The caller sent no traceparent: the trace is the engine's own span for that invocation.
    roots = call(client, "engine::traces::list", {"trace_id": ids["trace_id"]})
    assert roots["total"] == 1 and roots["spans"][0]["name"] == "invoke obsn::log", roots
    # Filters: severity and paging.
    assert call(client, "engine::logs::list", {"trace_id": ids["trace_id"], "severity_min": 17})["total"] == 0
    assert call(client, "engine::logs::list", {"severity_text": "warn", "limit": 0})["logs"] == []


def flatten_chain(node: dict) -> list[dict]:
    """The spans along the single path root → leaf (each level must have exactly one child)."""
    out = [node]
    while node["children"]:
        assert len(node["children"]) == 1, json.dumps(node, indent=1)[:3000]
        node = node["children"][0]
        out.append(node)
    return out


@pytest.mark.engine(**obs(exporter="memory"))
def test_node_python_node_chain_is_one_trace_tree(engine, make_client, obs_node, obs_py):
    obs_node("obs-n1")
    obs_py("obs-p1")
    client = make_client("obs-chain-client")
    wait_for_functions(client, ["obsn::call", "obsp::middle", "obsn::leaf"])
    res = call(client, "obsn::call", {"target": "obsp::middle", "payload": {"target": "obsn::leaf"}})
    trace_id = res["trace_id"]
    assert trace_id and res["result"]["trace_id"] == trace_id, res

    def tree():
        t = call(client, "engine::traces::tree", {"trace_id": trace_id})
        if len(t["roots"]) != 1:
            return None
        chain = flatten_chain(t["roots"][0])
        return chain if len(chain) == 6 else None

    chain = wait_for(tree, timeout=15, what="six spans in one chain (engine/node/engine/python/engine/node)")
    engine_spans = chain[0::2]
    sdk_spans = chain[1::2]
    assert [s["name"] for s in engine_spans] == ["invoke obsn::call", "invoke obsp::middle", "invoke obsn::leaf"]
    assert all(s["service_name"] == "iii" for s in engine_spans)
    assert chain[0]["parent_span_id"] is None
    for parent, child in zip(chain, chain[1:]):
        assert child["parent_span_id"] == parent["span_id"]
        assert child["trace_id"] == trace_id
    assert sdk_spans[1]["span_id"] == res["span_id"], "the Python handler's span"
    assert sdk_spans[2]["span_id"] == res["result"]["span_id"], "the Node leaf handler's span"
    assert "python" in json.dumps(sdk_spans[1]).lower() or sdk_spans[1]["service_name"] != sdk_spans[0]["service_name"]
    for s in chain:
        assert s["status"] in ("ok", "unset"), s
        assert s["end_time_unix_nano"] >= s["start_time_unix_nano"]
    # One root in the list for this trace; the SDK spans are not roots.
    lst = call(client, "engine::traces::list", {"trace_id": trace_id})
    assert lst["total"] == 1 and lst["spans"][0]["span_id"] == chain[0]["span_id"]
    assert set(lst) == {"spans", "total", "offset", "limit"}
    found = call(client, "engine::traces::list", {"name": "leaf", "search_all_spans": True, "trace_id": trace_id})
    assert found["total"] == 1


@pytest.mark.engine(**obs(exporter="memory"))
def test_log_triggers_by_level(engine, make_client, obs_node):
    client = make_client("obs-trig")
    got: dict[str, list] = {"error": [], "all": []}
    client.register_function("obs::on_error", lambda d: got["error"].append(d))
    client.register_function("obs::on_all", lambda d: got["all"].append(d))
    client.register_trigger({"type": "log", "function_id": "obs::on_error", "config": {"level": "error"}})
    client.register_trigger({"type": "log", "function_id": "obs::on_all"})
    wait_for(
        lambda: sum(t["trigger_type"] == "log" for t in call(client, "engine::triggers::list", {"include_internal": True})["triggers"]) == 2,
        what="two log triggers",
    )
    assert call(client, "engine::log::error", {"message": "disk full", "data": {"disk": "/dev/sda"}}) is None
    call(client, "engine::log::info", {"message": "all good", "service_name": "billing"})
    wait_for(lambda: len(got["all"]) == 2 and len(got["error"]) == 1, what="log trigger invocations")
    err = got["error"][0]
    assert set(err) - {"_caller_worker_id"} == STORED_LOG_KEYS
    assert err["body"] == "disk full" and err["severity_text"] == "ERROR" and err["severity_number"] == 17
    assert err["attributes"] == {"disk": "/dev/sda"}
    assert err["service_name"] == "unknown" and err["instrumentation_scope_name"] == "iii"
    assert [g["body"] for g in got["all"]] == ["disk full", "all good"]
    assert got["all"][1]["service_name"] == "billing" and got["all"][1]["severity_number"] == 9
    # SDK LOGS frames fire them too.
    obs_node("obs-trig-node")
    call(client, "obsn::log", {"message": "sdk error", "level": "error"})
    wait_for(lambda: any(g["body"] == "sdk error" for g in got["error"]), timeout=10, what="SDK error log trigger")
    wait_for(lambda: any(g["body"] == "sdk error" for g in got["all"]), what="SDK log on the `all` trigger")
    assert not any(g["body"] == "all good" for g in got["error"])


@pytest.mark.engine(**obs(exporter="memory"))
def test_worker_metrics_in_workers_list(engine, make_client, obs_node):
    node = obs_node("obs-metrics", {"OBS_METRICS_INTERVAL_MS": "300"})
    client = make_client("obs-metrics-client")

    def row():
        rows = call(client, "engine::workers::list", {"worker_id": node.info["worker_id"]})["workers"]
        m = rows[0]["latest_metrics"] if rows else None
        return m if m and m.get("memory_rss", 0) > 0 else None

    m = wait_for(row, timeout=10, what="latest_metrics from the Node worker's MTRC frames")
    assert m["memory_heap_used"] > 0 and "cpu_percent" in m and "uptime_seconds" in m and m["timestamp_ms"] > 0
    sdk = call(client, "engine::metrics::list", {"metric_name": "iii.worker.memory.rss"})
    assert sdk["sdk_metrics"] and sdk["sdk_metrics"][0]["metric_type"] == "gauge"
    pt = sdk["sdk_metrics"][0]["data_points"][0]
    assert pt["attributes"]["worker.id"] == node.info["worker_id"] and pt["value"] > 0
    em = sdk["engine_metrics"]
    assert em["invocations"]["total"] >= 1 and em["workers"]["active"] >= 2 and em["workers"]["spawns"] >= 2
    assert em["invocations"]["by_function"]["engine::workers::list"]["success"] >= 1
    assert em["performance"]["max_duration_ms"] >= em["performance"]["p50_duration_ms"] >= 0
    agg = call(client, "engine::metrics::list", {"metric_name": "iii.worker.memory.rss", "aggregate_interval": 60})
    assert agg["aggregated_metrics"][0]["count"] >= 1 and agg["query"]["aggregate_interval"] == 60
    roll = call(client, "engine::rollups::list", {"metric_name": "iii.worker.memory.rss", "level": 0})
    assert roll["rollups"] and roll["rollups"][0]["max"] > 0


@pytest.mark.engine(**obs(exporter="memory", logs_max_count=3, memory_max_spans=4, logs_retention_seconds=1))
def test_retention_and_max_counts(engine, make_client):
    client = make_client("obs-bounds")
    client.register_function("obs::noop", lambda d: "ok")
    wait_for_functions(client, ["obs::noop"])
    for i in range(5):
        call(client, "engine::log::info", {"message": f"m{i}"})
    res = call(client, "engine::logs::list", {})
    assert res["total"] == 3 and [l["body"] for l in res["logs"]] == ["m2", "m3", "m4"]
    for _ in range(6):
        call(client, "obs::noop", {})
    spans = call(client, "engine::traces::list", {"include_internal": True})
    assert spans["total"] == 4, spans
    health = call(client, "engine::health::check", {})
    assert health["status"] == "healthy" and health["components"]["spans"]["details"]["count"] == 4
    assert health["components"]["logs"]["details"]["evicted"] >= 2
    # Retention: 1 s.
    wait_for(lambda: call(client, "engine::logs::list", {})["total"] == 0, timeout=5, what="logs to expire")
    assert call(client, "engine::traces::clear", {}) == {"success": True}
    assert call(client, "engine::traces::list", {})["total"] == 0
    assert call(client, "engine::logs::clear", {}) == {"success": True}


def test_defaults_and_bad_input(engine, make_client):
    client = make_client("obs-defaults")
    # The original's default exporter is otlp: no in-memory spans.
    from iii import IIIInvocationError

    with pytest.raises(IIIInvocationError) as e:
        call(client, "engine::traces::list", {})
    assert e.value.code == "memory_exporter_not_enabled"
    with pytest.raises(IIIInvocationError) as e:
        call(client, "engine::logs::list", {"limit": "ten"})
    assert e.value.code == "deserialization_error" and "engine::logs::list" in str(e.value)
    with pytest.raises(IIIInvocationError) as e:
        call(client, "engine::log::info", {"data": {}})
    assert e.value.code == "deserialization_error"
    health = call(client, "engine::health::check", {})
    assert set(health) == {"status", "components", "timestamp", "version"}
    assert health["components"]["spans"]["status"] == "disabled"
    assert health["components"]["logs"]["status"] == "healthy"
    rules = call(client, "engine::sampling::rules", {})
    assert rules["traces"] == {"default_ratio": 1.0, "rules": [], "parent_based": False}
    assert rules["logs"] == {"sampling_ratio": 1.0}
    assert call(client, "engine::baggage::get_all", {}) == {"baggage": {}}
    assert call(client, "engine::baggage::get", {"key": "user"}) == {"value": None}


@pytest.mark.engine(**obs(exporter="memory"))
def test_bad_frames_dropped_with_rate_limited_warnings(engine, make_client):
    client = make_client("obs-bad")
    mark = engine.mark()
    good_log = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "survivor"},
                                                                  "timeUnixNano": 1700000000000000000}]}]}]}
    huge = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": f"{i + 1:016x}", "name": "s",
         "startTimeUnixNano": str(i), "endTimeUnixNano": i + 1} for i in range(110_000)]}]}]}
    bad = [
        b"XXXX{}", b"OTLP{not json", b"LOGS[1,2]", b"MTRC\xff\xfe", b"OTLP",
        b'OTLP{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"abc","spanId":"1"}]}]}]}',
        b'LOGS{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"yesterday"}]}]}]}',
        b'MTRC{"resourceMetrics":{"a":1}}',
    ] * 10
    with connect(engine.url + "/otel", max_size=None) as ws:
        for f in bad:
            ws.send(f)
        ws.send(b"OTLP" + json.dumps(huge, separators=(",", ":")).encode())
        ws.send(b"LOGS" + json.dumps(good_log).encode())
        ws.send("text frames are ignored")

        def survivor():
            return call(client, "engine::logs::list", {})["total"] >= 1

        wait_for(survivor, timeout=20, what="the good frame after the bad ones")
    logs = call(client, "engine::logs::list", {})["logs"]
    assert [l["body"] for l in logs] == ["survivor"]
    # The 110,000-span frame kept at most 100,000 records, bounded again by memory_max_spans.
    assert call(client, "engine::health::check", {})["components"]["spans"]["details"]["count"] <= 1000
    warnings = [l for l in engine.lines_since(mark) if "iii-observability" in l]
    assert 1 <= len(warnings) <= 10, "\n".join(warnings)
    assert engine.alive()
