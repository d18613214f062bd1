"""Python SDK specifics against the real engine: listings, reconnect after restart, shutdown, liveness."""

from __future__ import annotations

import os
import platform
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from iii import FunctionInfo, IIIInvocationError

from conftest import UUID_RE, wait_for, wait_for_functions, wait_worker_row, workers_named


def call(client, fid, payload=None, **kw):
    return client.trigger({"function_id": fid, "payload": payload if payload is not None else {}, **kw})


def test_workers_list_rows_for_python_and_node(engine, make_client, node_worker):
    py = make_client("wl-python")
    py.register_function("wlpy::a", lambda d: 1, description="python a", metadata={"k": "v"})
    node = node_worker("wl-node-child", "echo")
    wait_for_functions(py, ["wlpy::a", "node::echo"])

    res = call(py, "engine::workers::list")
    assert isinstance(res["workers"], list)
    assert isinstance(res["timestamp"], int) and abs(res["timestamp"] - time.time() * 1000) < 60000

    row = wait_worker_row(py, "wl-python")
    assert row["id"] == py.worker_id
    assert UUID_RE.match(row["id"])
    assert row["runtime"] == "python"
    assert row["version"] == "0.11.6"
    assert row["pid"] == os.getpid()
    assert row["os"] == f"{platform.system()} {platform.release()} ({platform.machine()})"
    assert row["status"] == "connected"
    assert row["functions"] == ["wlpy::a"]
    assert row["function_count"] == 1

    nrow = wait_worker_row(py, "wl-node-child")
    assert nrow["runtime"] == "node"
    assert nrow["pid"] == node.proc.pid
    assert nrow["id"] == node.info["worker_id"]
    assert nrow["version"] == "0.11.6"
    assert "node::echo" in nrow["functions"]


def test_functions_list_parses_as_sdk_function_info(engine, make_client):
    py = make_client("fl-python")
    py.register_function(
        "flpy::described",
        lambda d: d,
        description="desc",
        metadata={"owner": "tests", "n": 2},
        request_format={"type": "object"},
        response_format={"type": "object"},
    )
    py.register_function("flpy::plain", lambda d: d)
    wait_for_functions(py, ["flpy::described", "flpy::plain"])
    rows = call(py, "engine::functions::list")["functions"]
    infos = {f["function_id"]: FunctionInfo(**f) for f in rows}  # how SDK users consume this list
    d = infos["flpy::described"]
    assert d.description == "desc"
    assert d.metadata == {"owner": "tests", "n": 2}
    raw = next(f for f in rows if f["function_id"] == "flpy::described")
    assert raw["request_format"] == {"type": "object"}
    assert raw["response_format"] == {"type": "object"}
    plain = next(f for f in rows if f["function_id"] == "flpy::plain")
    assert plain == {"function_id": "flpy::plain", "description": None, "request_format": None,
                     "response_format": None, "metadata": None}
    assert not any(f["function_id"].startswith("engine::") for f in rows)
    internal = {f["function_id"] for f in call(py, "engine::functions::list", {"include_internal": True})["functions"]}
    assert {"engine::functions::list", "engine::workers::list", "engine::workers::register"} <= internal


def test_python_sdk_reconnects_after_engine_restart(engine, start_engine, make_client):
    py = make_client("restart-py")
    generation = {"n": 0}
    py.register_function("rspy::f", lambda d: {"gen": generation["n"], "x": d["x"]})
    caller = make_client("restart-py-caller")
    wait_for_functions(caller, ["rspy::f"])
    assert call(caller, "rspy::f", {"x": 1}) == {"gen": 0, "x": 1}
    old_id = py.worker_id

    port = engine.port
    engine.stop()  # SIGTERM, exit code 0 asserted
    generation["n"] = 1
    e2 = start_engine(listeners=[{"port": port}])
    assert e2.port == port

    res = wait_for(lambda: call(caller, "rspy::f", {"x": 2}, timeout_ms=1000), timeout=10, interval=0.1,
                   what="a call through the restarted engine")
    assert res == {"gen": 1, "x": 2}
    wait_for(lambda: py.worker_id and py.worker_id != old_id, what="a new worker id after reconnect")
    row = wait_worker_row(caller, "restart-py")
    assert row["id"] == py.worker_id
    assert row["functions"] == ["rspy::f"]


def test_sigterm_with_pending_python_call(engine, make_client):
    callee = make_client("gs-py-callee")
    started = threading.Event()

    def hang(_data):
        started.set()
        time.sleep(30)

    callee.register_function("gspy::hang", hang)
    caller = make_client("gs-py-caller")
    wait_for_functions(caller, ["gspy::hang"])
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(call, caller, "gspy::hang", {}, timeout_ms=15000)
        assert started.wait(5)
        t0 = time.monotonic()
        errors: list[BaseException] = []

        def do_stop():
            try:
                engine.stop()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        stop = threading.Thread(target=do_stop)
        stop.start()
        with pytest.raises(IIIInvocationError) as ei:
            fut.result(timeout=10)
        dt = time.monotonic() - t0
        stop.join(15)
    assert not errors, errors
    assert ei.value.code == "invocation_stopped", f"{ei.value.code}: {ei.value.message}"
    assert dt < 2.0, f"invocation_stopped after {dt:.2f}s"


@pytest.mark.engine(listeners=[{"idle_timeout_ms": 1000}])
def test_idle_python_worker_stays_connected(engine, make_client):
    py = make_client("idle-py")
    py.register_function("idlepy::f", lambda d: d["x"] + 1)
    caller = make_client("idle-py-caller")
    wait_for_functions(caller, ["idlepy::f"])
    ids = (py.worker_id, caller.worker_id)
    time.sleep(3.5)
    assert call(caller, "idlepy::f", {"x": 41}) == 42
    assert (py.worker_id, caller.worker_id) == ids, "idle Python workers were disconnected (worker id changed)"
    assert py.get_connection_state() == "connected"
    assert workers_named(caller, "idle-py")[0]["id"] == ids[0]


def test_python_subprocess_worker_shuts_down_cleanly_with_otel(engine, make_client, py_worker):
    child = py_worker("otel-py-child", "echo")
    caller = make_client("otel-py-caller")
    wait_for_functions(caller, ["py::echo"])
    assert call(caller, "py::echo", {"z": 1})["z"] == 1
    t0 = time.monotonic()
    child.kill(signal.SIGTERM)
    code = child.wait_exit(15)
    assert code == 0, "\n".join(child.lines)
    assert time.monotonic() - t0 < 8
    wait_for(lambda: not workers_named(caller, "otel-py-child"), what="otel-py-child row to go away")


def test_python_none_payload_reaches_handler_as_none(engine, make_client):
    """The Python SDK omits `data` when the payload is None; the call must still work."""
    py = make_client("none-payload")
    seen = []

    def f(data):
        seen.append(data)
        return {"got": data}

    py.register_function("nonepy::f", f)
    wait_for_functions(py, ["nonepy::f"])
    res = py.trigger({"function_id": "nonepy::f", "payload": None})
    assert res == {"got": None}
    assert seen == [None]
