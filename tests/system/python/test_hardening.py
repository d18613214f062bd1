"""Core hardening through the real binary: engine-side deadlines, JSON nesting limits, trigger
ownership, and config validation of the new keys."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
from iii import IIIInvocationError
from websockets.sync.client import connect

from conftest import III_BIN, wait_for, wait_for_functions

# ------------------------------------------------------------------------------------------------ helpers


def raw(url: str):
    ws = connect(url, max_size=None, open_timeout=5, proxy=None)
    first = json.loads(ws.recv(timeout=3))
    assert first["type"] == "workerregistered", first
    return ws, first["worker_id"]


def recv_json(ws, timeout: float = 3.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def send_json(ws, obj) -> None:
    ws.send(json.dumps(obj))


def register(ws, fid: str, **extra) -> None:
    send_json(ws, {"type": "registerfunction", "id": fid, **extra})
    send_json(ws, {"type": "ping"})  # fence: the registration is processed before the pong
    assert recv_json(ws) == {"type": "pong"}


def invoke(ws, fid: str, data, inv: str | None = None) -> str:
    inv = inv or str(uuid.uuid4())
    send_json(ws, {"type": "invokefunction", "invocation_id": inv, "function_id": fid, "data": data})
    return inv


def nested(depth: int):
    v = 1
    for _ in range(depth):
        v = [v]
    return v


def depth_of(v) -> int:
    d = 0
    while isinstance(v, list):
        d += 1
        v = v[0]
    return d


# ------------------------------------------------------------------------------------------------ deadlines


@pytest.mark.engine(listeners=[{"invocation_timeout_ms": 400}])
def test_hung_function_is_answered_timeout_by_the_engine(engine, make_client):
    executor, _ = raw(engine.url)
    register(executor, "hang::forever")
    client = make_client("deadline-caller")
    t0 = time.monotonic()
    with pytest.raises(IIIInvocationError) as exc:
        client.trigger({"function_id": "hang::forever", "payload": {"x": 1}})
    elapsed = time.monotonic() - t0
    assert exc.value.code == "timeout", exc.value
    assert "hang::forever" in str(exc.value) and "400 ms" in str(exc.value), str(exc.value)
    assert 0.35 <= elapsed < 5, elapsed  # the engine's 400 ms, not the SDK's own 10-30 s
    # The executor did get the call; its late answer is dropped without disturbing anyone.
    call = recv_json(executor)
    assert call["type"] == "invokefunction" and call["function_id"] == "hang::forever"
    send_json(executor, {"type": "invocationresult", "invocation_id": call["invocation_id"],
                         "function_id": "hang::forever", "result": "late"})
    wait_for(lambda: any("timed out after 400 ms" in line for line in engine.lines), what="timeout warning")
    # The engine still routes normally afterwards.
    register(executor, "fast::fn")
    caller, _ = raw(engine.url)
    inv = invoke(caller, "fast::fn", 1)
    fwd = recv_json(executor)
    send_json(executor, {"type": "invocationresult", "invocation_id": fwd["invocation_id"],
                         "function_id": "fast::fn", "result": 2})
    res = recv_json(caller)
    assert res["invocation_id"] == inv and res["result"] == 2


def test_function_metadata_timeout_bounds_one_function(engine):
    executor, _ = raw(engine.url)
    register(executor, "meta::quick", metadata={"timeout_ms": 200})
    register(executor, "meta::default")
    caller, _ = raw(engine.url)
    t0 = time.monotonic()
    inv_default = invoke(caller, "meta::default", {})
    inv_quick = invoke(caller, "meta::quick", {})
    res = recv_json(caller, timeout=5)
    assert res["invocation_id"] == inv_quick, res
    assert res["error"]["code"] == "timeout", res
    assert "200 ms" in res["error"]["message"]
    assert time.monotonic() - t0 < 3
    # The other call is still pending under the engine-wide default (300 s): answer it.
    seen = [recv_json(executor), recv_json(executor)]
    other = next(m for m in seen if m["function_id"] == "meta::default")
    send_json(executor, {"type": "invocationresult", "invocation_id": other["invocation_id"],
                         "function_id": "meta::default", "result": "ok"})
    res = recv_json(caller)
    assert res["invocation_id"] == inv_default and res["result"] == "ok"


def test_internal_callers_such_as_trigger_conditions_get_the_same_deadline(start_engine):
    """An internal caller (a trigger's condition function) is bounded too: a hung condition does
    not leave the trigger's event pending for ever."""
    engine = start_engine(listeners=[{"invocation_timeout_ms": 300}],
                          extra_yaml="  - name: iii-state\n    config: {}\n")
    worker, _ = raw(engine.url)
    register(worker, "cond::hang")
    register(worker, "cond::handler")
    send_json(worker, {"type": "registertrigger", "id": "t-cond", "trigger_type": "state",
                       "function_id": "cond::handler",
                       "config": {"scope": "s", "condition_function_id": "cond::hang"}})
    caller, _ = raw(engine.url)
    inv = invoke(caller, "state::set", {"scope": "s", "key": "k", "value": 1})
    assert recv_json(caller)["invocation_id"] == inv
    cond = recv_json(worker)
    assert cond["function_id"] == "cond::hang"
    wait_for(lambda: any("Invocation of cond::hang timed out after 300 ms" in line for line in engine.lines),
             timeout=5, what="the condition's timeout")
    wait_for(lambda: any("condition cond::hang failed (timeout" in line for line in engine.lines),
             timeout=5, what="the trigger reporting its condition failed")


def test_invocation_timeout_must_agree_across_listeners(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "workers:\n"
        "  - name: iii-worker-manager\n"
        "    config: { host: 127.0.0.1, port: 0, invocation_timeout_ms: 1000 }\n"
        "  - name: iii-worker-manager\n"
        "    config: { host: 127.0.0.1, port: 0, invocation_timeout_ms: 2000 }\n"
    )
    r = subprocess.run([str(III_BIN), "--config", str(cfg)], capture_output=True, text=True, timeout=15,
                       stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert r.returncode == 2, r
    out = r.stdout + r.stderr
    assert "config.yaml:5" in out and "invocation_timeout_ms" in out and "engine-wide" in out, out


def test_invocation_timeout_must_be_a_number(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("workers:\n  - name: iii-worker-manager\n    config:\n      invocation_timeout_ms: soon\n")
    r = subprocess.run([str(III_BIN), "--config", str(cfg)], capture_output=True, text=True, timeout=15,
                       stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert r.returncode == 2, r
    assert "config.yaml:4" in r.stderr + r.stdout and "must be an integer" in r.stderr + r.stdout, r


# ------------------------------------------------------------------------------------------------ JSON depth


def test_payloads_nested_128_levels_round_trip_and_deeper_is_a_clear_error(engine, make_client):
    server = make_client("deep-server")
    server.register_function("deep::echo", lambda data: data)
    client = make_client("deep-client")
    wait_for_functions(client, ["deep::echo"])
    echoed = client.trigger({"function_id": "deep::echo", "payload": nested(128)})
    assert depth_of(echoed) == 128
    with pytest.raises(IIIInvocationError) as exc:
        client.trigger({"function_id": "deep::echo", "payload": nested(300)})
    assert exc.value.code == "invalid_message"
    assert "128" in str(exc.value)
    # Absurd depth from a raw client: answered, connection still usable.
    ws, _ = raw(engine.url)
    inv = str(uuid.uuid4())
    ws.send('{"type":"invokefunction","invocation_id":"' + inv + '","function_id":"deep::echo","data":'
            + "[" * 200000 + "]" * 200000 + "}")
    res = recv_json(ws, timeout=10)
    assert res["invocation_id"] == inv and res["error"]["code"] == "invalid_message"
    send_json(ws, {"type": "ping"})
    assert recv_json(ws) == {"type": "pong"}


# ------------------------------------------------------------------------------------------------ ownership


def test_only_the_registering_worker_can_replace_or_remove_its_trigger(engine):
    type_owner, _ = raw(engine.url)
    send_json(type_owner, {"type": "registertriggertype", "id": "own.type", "description": "d"})
    owner, owner_id = raw(engine.url)
    other, _ = raw(engine.url)
    send_json(owner, {"type": "registertrigger", "id": "own-1", "trigger_type": "own.type",
                      "function_id": "owner::fn", "config": {"v": 1}})
    assert recv_json(type_owner)["type"] == "registertrigger"
    # Another worker tries to rebind the id to its own function, then to remove it.
    send_json(other, {"type": "registertrigger", "id": "own-1", "trigger_type": "own.type",
                      "function_id": "thief::fn", "config": {"v": 2}})
    refusal = recv_json(other)
    assert refusal["type"] == "triggerregistrationresult" and refusal["id"] == "own-1", refusal
    assert refusal["error"]["code"] == "forbidden" and owner_id in refusal["error"]["message"], refusal
    send_json(other, {"type": "unregistertrigger", "id": "own-1"})
    send_json(other, {"type": "ping"})
    assert recv_json(other) == {"type": "pong"}
    lister, _ = raw(engine.url)
    inv = invoke(lister, "engine::triggers::list", {})
    res = recv_json(lister)
    assert res["invocation_id"] == inv
    mine = [t for t in res["result"]["triggers"] if t["id"] == "own-1"]
    assert len(mine) == 1 and mine[0]["function_id"] == "owner::fn" and mine[0]["config"] == {"v": 1}, mine
    # The type owner saw nothing of the refused attempts.
    send_json(type_owner, {"type": "ping"})
    assert recv_json(type_owner) == {"type": "pong"}
    # The owner itself can remove it.
    send_json(owner, {"type": "unregistertrigger", "id": "own-1"})
    assert recv_json(type_owner) == {"type": "unregistertrigger", "id": "own-1", "trigger_type": "own.type"}


@pytest.mark.engine(extra_yaml="  - name: iii-stream\n    config: { host: 127.0.0.1, port: 0 }\n")
def test_bad_stream_client_messages_are_rate_limited(engine):
    import re

    def stream_port():
        for line in engine.lines:
            m = re.search(r"iii-stream listening on [0-9.]+:(\d+)", line)
            if m:
                return int(m.group(1))
        return None

    port = wait_for(stream_port, what="iii-stream listening")
    ws = connect(f"ws://127.0.0.1:{port}", max_size=None, open_timeout=5, proxy=None)
    mark = engine.mark()
    for i in range(3000):
        ws.send("not json" if i % 2 else '{"type":"teleport"}')
    ws.close()
    wait_for(lambda: any("more suppressed" in line for line in engine.lines_since(mark)), what="summary line")
    lines = [line for line in engine.lines_since(mark) if "iii-stream: client" in line]
    assert 2 <= len(lines) <= 20, lines
    counted = 0
    for line in lines:
        m = re.search(r"(\d+) more suppressed", line)
        if not m:
            counted += 1  # one message, logged
        elif "before this one" in line:
            counted += 1 + int(m.group(1))  # this one, and those suppressed before it
        else:
            counted += int(m.group(1))  # the summary when the client leaves
    assert counted == 3000, (counted, lines)
