"""Cross-language invocation through the real engine: official Python SDK <-> official Node SDK."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from iii import IIIInvocationError, TriggerAction

from conftest import UUID_RE, wait_for, wait_for_functions, wait_worker_row


def call(client, fid, payload=None, **kw):
    return client.trigger({"function_id": fid, "payload": payload if payload is not None else {}, **kw})


def test_python_calls_node_sync(engine, make_client, node_worker):
    node = node_worker("xl-node", "echo")
    py = make_client("xl-py")
    wait_for_functions(py, ["node::echo"])
    res = call(py, "node::echo", {"a": 1, "s": "ünïcødé ✓ 😀", "nested": {"l": [1, None, True]}})
    assert res["a"] == 1
    assert res["s"] == "ünïcødé ✓ 😀"
    assert res["nested"] == {"l": [1, None, True]}
    assert UUID_RE.match(res["_caller_worker_id"])
    assert res["_caller_worker_id"] == py.worker_id
    assert res["_caller_worker_id"] == wait_worker_row(py, "xl-py")["id"]
    assert set(res) == {"a", "s", "nested", "_caller_worker_id"}
    # non-object payloads are not touched
    assert call(py, "node::echo", [1, "two", None]) == [1, "two", None]
    assert call(py, "node::echo", "just text") == "just text"
    assert call(py, "node::echo", 12.5) == 12.5
    node_row = wait_worker_row(py, "xl-node")
    assert node_row["id"] == node.info["worker_id"]


def test_node_calls_python_sync(engine, make_client, node_worker):
    py = make_client("xl-py-callee")

    def add(data):  # sync handler: the SDK runs it in a thread
        return {"sum": data["a"] + data["b"], "caller": data.get("_caller_worker_id")}

    py.register_function("py::add", add)
    node = node_worker("xl-node-caller", "echo")
    wait_for_functions(py, ["py::add", "node::call"])
    res = call(py, "node::call", {"target": "py::add", "payload": {"a": 2, "b": 40}})
    assert res["ok"] is True, res
    assert res["result"]["sum"] == 42
    # _caller_worker_id seen by Python is the Node worker's id, as listed by the engine.
    assert res["result"]["caller"] == node.info["worker_id"]
    row = wait_worker_row(py, "xl-node-caller")
    assert row["id"] == node.info["worker_id"]
    assert row["runtime"] == "node"
    assert row["pid"] == node.proc.pid


def test_void_calls_both_directions(engine, make_client, node_worker):
    py = make_client("xl-void-py")
    got: list[dict] = []
    event = threading.Event()

    def record(data):
        got.append(data)
        event.set()
        return {"ok": True}

    py.register_function("py::record", record)
    node = node_worker("xl-void-node", "echo")
    wait_for_functions(py, ["py::record", "node::record"])

    # Python -> Node, void: returns None at once; the Node handler runs (checked through node::records).
    t0 = time.monotonic()
    assert call(py, "node::record", {"tag": "from-py"}, action=TriggerAction.Void()) is None
    assert time.monotonic() - t0 < 1.0
    recs = wait_for(lambda: call(py, "node::records") or None, timeout=3, what="node::record to run")
    assert len(recs) == 1
    assert recs[0]["tag"] == "from-py"
    assert recs[0]["_caller_worker_id"] == py.worker_id

    # Node -> Python, void.
    res = call(py, "node::call", {"target": "py::record", "payload": {"tag": "from-node"}, "void": True})
    assert res == {"ok": True, "void": True, "resolved": "undefined"}
    assert event.wait(3), "py::record was not invoked by the void call from Node"
    assert got[0]["tag"] == "from-node"
    assert got[0]["_caller_worker_id"] == node.info["worker_id"]
    time.sleep(0.3)
    assert len(got) == 1, "void handler must run exactly once"
    assert len(call(py, "node::records")) == 1


def test_errors_pass_through_both_directions(engine, make_client, node_worker):
    py = make_client("xl-err-py")

    def boom(data):
        raise ValueError(f"py boom {data['n']}")

    py.register_function("py::boom", boom)
    node_worker("xl-err-node", "echo")
    wait_for_functions(py, ["py::boom", "node::throw", "node::call"])

    # Node handler throws -> Python caller
    with pytest.raises(IIIInvocationError) as ei:
        call(py, "node::throw", {"message": "from node 7"})
    err = ei.value
    assert err.code == "invocation_failed"
    assert err.message == "from node 7"
    assert err.function_id == "node::throw"
    assert err.stacktrace is not None and err.stacktrace.startswith("Error: from node 7\n")
    assert "\n    at " in err.stacktrace

    # Node throws a non-Error: no stacktrace at all
    with pytest.raises(IIIInvocationError) as ei2:
        call(py, "node::throw_string", {"message": "only words"})
    assert ei2.value.code == "invocation_failed"
    assert ei2.value.message == "only words"
    assert ei2.value.stacktrace is None

    # Python handler raises -> Node caller
    res = call(py, "node::call", {"target": "py::boom", "payload": {"n": 3}})
    assert res["ok"] is False, res
    assert res["name"] == "IIIInvocationError"
    assert res["code"] == "invocation_failed"
    assert res["message"] == "invocation_failed: py boom 3"
    assert res["function_id"] == "py::boom"
    assert "Traceback (most recent call last)" in res["stacktrace"]
    assert "ValueError: py boom 3" in res["stacktrace"]


def test_function_not_found_both_directions(engine, make_client, node_worker):
    py = make_client("xl-nf-py")
    node_worker("xl-nf-node", "echo")
    wait_for_functions(py, ["node::call"])
    with pytest.raises(IIIInvocationError) as ei:
        call(py, "nope::missing", {"x": 1})
    assert ei.value.code == "function_not_found"
    assert "nope::missing" in ei.value.message
    res = call(py, "node::call", {"target": "nope::missing2", "payload": {}})
    assert res["ok"] is False
    assert res["code"] == "function_not_found"
    assert "nope::missing2" in res["message"]


def test_python_absent_result_reaches_node_as_undefined(engine, make_client, node_worker):
    py = make_client("xl-none-py")

    def nothing(_data):
        return None  # the Python SDK omits `result` entirely

    py.register_function("py::nothing", nothing)
    node_worker("xl-none-node", "echo")
    wait_for_functions(py, ["py::nothing", "node::call"])
    res = call(py, "node::call", {"target": "py::nothing", "payload": {}})
    assert res["ok"] is True
    assert res["result_is_undefined"] is True, f"an absent result must stay absent: {res}"
    # and Node's explicit null / undefined both reach Python as None
    assert call(py, "node::null") is None
    assert call(py, "node::nothing") is None


def test_large_payload_cross_language(engine, make_client, node_worker):
    """~900 KB each way (the Python SDK refuses incoming frames over 1 MiB)."""
    py = make_client("xl-big-py")

    def echo(data):
        return data

    py.register_function("py::echo", echo)
    node_worker("xl-big-node", "echo")
    wait_for_functions(py, ["py::echo", "node::echo", "node::call"])
    blob = ("0123456789abcdef" * 56_250) + "ü€😀"  # 900,003 characters
    res = call(py, "node::echo", {"blob": blob})
    assert res["blob"] == blob
    res2 = call(py, "node::call", {"target": "py::echo", "payload": {"blob": blob[:400_000]}})
    assert res2["ok"] is True
    assert res2["result"]["blob"] == blob[:400_000]


@pytest.mark.parametrize("lang", ["python", "node"])
def test_worker_killed_mid_call_gives_invocation_stopped(engine, make_client, node_worker, py_worker, lang):
    spawn = py_worker if lang == "python" else node_worker
    name = f"kill{lang}"
    child = spawn(name, "slow")
    caller = make_client(f"kill-caller-{lang}")
    wait_for_functions(caller, [f"{name}::hang"])
    assert call(caller, f"{name}::ping") == "pong"

    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(call, caller, f"{name}::hang", {"n": 5}, timeout_ms=15000)
        child.wait_line(r"^INVOKED ")
        t0 = time.monotonic()
        child.kill(signal.SIGKILL)
        with pytest.raises(IIIInvocationError) as ei:
            fut.result(timeout=10)
        dt = time.monotonic() - t0
    assert ei.value.code == "invocation_stopped", f"{ei.value.code}: {ei.value.message}"
    assert dt < 1.0, f"caller learned about the dead {lang} worker after {dt:.3f}s (limit 1 s)"

    def ping_gone():
        try:
            call(caller, f"{name}::ping", timeout_ms=2000)
            return None
        except IIIInvocationError as e:
            return e

    gone = wait_for(ping_gone, timeout=3, what=f"{name}::ping to disappear")
    assert gone.code == "function_not_found"


def test_killed_worker_cross_language_failover(engine, make_client, node_worker, py_worker):
    """Python and Node processes both register dup::who; the newest serves; SIGKILL it => the other serves."""
    caller = make_client("dupx-caller")
    first = py_worker("dupx-py", "dup")
    wait_for(lambda: call(caller, "dup::who")["who"] == "dupx-py", what="python registrant to serve")
    second = node_worker("dupx-node", "dup")
    wait_for(lambda: call(caller, "dup::who")["who"] == "dupx-node", what="newest (node) registrant to serve")
    for _ in range(5):
        assert call(caller, "dup::who")["who"] == "dupx-node"
    second.kill(signal.SIGKILL)
    deadline = time.monotonic() + 3
    served = None
    while time.monotonic() < deadline:
        try:
            r = call(caller, "dup::who", timeout_ms=2000)
            if r["who"] == "dupx-py":
                served = r
                break
        except IIIInvocationError as e:
            assert e.code != "function_not_found", "dup::who lost although the python registrant is alive"
        time.sleep(0.02)
    assert served is not None, "the python registrant never took over"
    assert served["pid"] == first.info["pid"]


def test_concurrent_calls_python_to_node(engine, make_client, node_worker):
    py = make_client("xl-conc-py")
    node_worker("xl-conc-node", "echo")
    wait_for_functions(py, ["node::sleep", "node::echo"])
    n = 300

    def one(i):
        if i % 2:
            return call(py, "node::sleep", {"ms": i % 20, "tag": i}, timeout_ms=20000)["tag"]
        return call(py, "node::echo", {"i": i}, timeout_ms=20000)["i"]

    t0 = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(n)))
    assert results == list(range(n))
    assert time.monotonic() - t0 < 20
