"""iii-state through the official Python iii-sdk==0.11.6: every state function, the update ops (including the exact
64-bit integer edges that JavaScript cannot express), the SDK's ``iii.state`` / ``iii.stream`` pydantic models on the
wire, the ``state`` trigger type with Python handlers and condition functions, and durability of the ``file_based``
(SQLite) store across SIGKILL and SIGTERM (plus ``in_memory`` forgetting everything on restart)."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from iii import IIIInvocationError, register_worker
from iii.state import (
    DeleteResult,
    StateDeleteInput,
    StateEventData,
    StateEventType,
    StateGetInput,
    StateListInput,
    StateSetInput,
    StateSetResult,
    StateUpdateInput,
    StateUpdateResult,
)
from iii.stream import (
    StreamUpdateResult,
    UpdateAppend,
    UpdateDecrement,
    UpdateIncrement,
    UpdateMerge,
    UpdateRemove,
    UpdateSet,
)

from conftest import _fast_options, _shutdown_client, wait_for, wait_for_functions

IN_MEMORY = "  - name: iii-state\n    config: { adapter: { name: kv, config: { store_method: in_memory } } }"


def file_based(path: str) -> str:
    return (
        "  - name: iii-state\n"
        f"    config: {{ adapter: {{ name: kv, config: {{ store_method: file_based, file_path: {json.dumps(path)} }} }} }}"
    )


DOC_URL = "https://iii.dev/docs/workers/iii-state#error-codes"
SETTLE = 0.3  # seconds given to the engine to (wrongly) do something we assert it does not do
STATE_FUNCTIONS = ["state::set", "state::get", "state::delete", "state::update", "state::list", "state::list_groups"]
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
U64_MAX = 2**64 - 1

state_engine = pytest.mark.engine(extra_yaml=IN_MEMORY)


def call(client, fid: str, payload: Any) -> Any:
    return client.trigger({"function_id": fid, "payload": payload, "timeout_ms": 5000})


def op_error(index: int, code: str, message: str) -> dict[str, Any]:
    return {"op_index": index, "code": code, "message": message, "doc_url": DOC_URL}


def deserialization_error(client, fid: str, payload: Any, detail: str | None = None) -> IIIInvocationError:
    with pytest.raises(IIIInvocationError) as ei:
        call(client, fid, payload)
    err = ei.value
    assert err.code == "deserialization_error", f"{fid}({payload!r}): {err.code}: {err.message}"
    prefix = f"Failed to deserialize input for {fid}: "
    assert err.message.startswith(prefix), err.message
    if detail is not None:
        assert err.message[len(prefix):] == detail
    return err


def state_client(make_client, name: str):
    c = make_client(name)
    wait_for_functions(c, STATE_FUNCTIONS)
    return c


# ------------------------------------------------------------------------------------------------ functions


@state_engine
def test_state_functions_from_python(engine, make_client):
    c = state_client(make_client, "py-state")

    assert call(c, "state::set", {"scope": "py", "key": "a", "value": {"x": [1, None, "é"]}}) == {
        "old_value": None,
        "new_value": {"x": [1, None, "é"]},
    }
    assert call(c, "state::get", {"scope": "py", "key": "a"}) == {"x": [1, None, "é"]}
    assert call(c, "state::set", {"scope": "py", "key": "a", "value": 2}) == {"old_value": {"x": [1, None, "é"]}, "new_value": 2}
    assert call(c, "state::set", {"scope": "py", "key": "b", "data": "alias"}) == {"old_value": None, "new_value": "alias"}
    assert call(c, "state::get", {"scope": "py", "key": "b"}) == "alias"
    assert call(c, "state::get", {"scope": "py", "key": "missing"}) is None, "a missing key: absent result -> None"
    big = {"i64max": I64_MAX, "i64min": I64_MIN, "u64max": U64_MAX, "f": 0.1, "t": True}
    assert call(c, "state::set", {"scope": "py", "key": "big", "value": big})["new_value"] == big
    assert call(c, "state::get", {"scope": "py", "key": "big"}) == big, "64-bit integers round-trip exactly"

    assert call(c, "state::list", {"scope": "py"}) == [2, "alias", big]
    assert call(c, "state::list", {"scope": "nothing-here"}) == []
    call(c, "state::set", {"scope": "another", "key": "k", "value": 1})
    assert call(c, "state::list_groups", {}) == {"groups": ["another", "py"]}

    assert call(c, "state::delete", {"scope": "py", "key": "b"}) == "alias", "delete returns the deleted value"
    assert call(c, "state::delete", {"scope": "py", "key": "b"}) is None, "deleting a missing key succeeds (absent)"
    assert call(c, "state::get", {"scope": "py", "key": "b"}) is None
    assert call(c, "state::list", {"scope": "py"}) == [2, big]
    call(c, "state::delete", {"scope": "another", "key": "k"})
    assert call(c, "state::list_groups", {}) == {"groups": ["py"]}

    # Bad input: deserialization_error with the serde-style reason.
    deserialization_error(c, "state::set", {"scope": "py", "key": "k"}, "missing field `value`")
    deserialization_error(c, "state::get", {"scope": "py"})
    deserialization_error(c, "state::delete", {"key": "k"})
    deserialization_error(c, "state::list", {"scope": 7})
    deserialization_error(c, "state::update", {"scope": "py", "key": "k"}, "missing field `ops`")
    deserialization_error(c, "state::list_groups", None)  # the Python SDK omits `data` for None
    assert call(c, "state::get", {"scope": "py", "key": "k"}) is None


@state_engine
def test_python_sdk_state_models_on_the_wire(engine, make_client):
    """The SDK's pydantic inputs serialise to what the engine accepts, and its result/event models parse the replies."""
    c = state_client(make_client, "py-models")

    res = call(c, "state::set", StateSetInput(scope="m", key="k", value={"a": 1, "tags": []}).model_dump())
    parsed = StateSetResult[dict].model_validate(res)
    assert parsed.old_value is None and parsed.new_value == {"a": 1, "tags": []}
    assert call(c, "state::get", StateGetInput(scope="m", key="k").model_dump()) == {"a": 1, "tags": []}

    upd = StateUpdateInput(
        scope="m",
        key="k",
        ops=[
            UpdateSet(path="name", value="py"),
            UpdateIncrement(path="a", by=41),
            UpdateDecrement(path="b", by=2),
            UpdateAppend(path="tags", value="x"),
            UpdateMerge(value={"m": 1}),  # path None is sent as "path": null => root
            UpdateMerge(path=["deep", "er"], value={"z": True}),
            UpdateRemove(path="name"),
        ],
    ).model_dump()
    assert upd["ops"][4] == {"type": "merge", "path": None, "value": {"m": 1}}, upd
    res = call(c, "state::update", upd)
    assert res == {
        "old_value": {"a": 1, "tags": []},
        "new_value": {"a": 42, "tags": ["x"], "b": -2, "m": 1, "deep": {"er": {"z": True}}},
    }
    assert "errors" not in res
    parsed_u = StateUpdateResult[dict].model_validate(res)
    assert parsed_u.new_value["a"] == 42

    # errors parse into the SDK's UpdateOpError model.
    res = call(c, "state::update", {"scope": "m", "key": "k", "ops": [UpdateMerge(value=[1]).model_dump(), UpdateAppend(path="a", value=1).model_dump()]})
    typed = StreamUpdateResult[dict].model_validate(res)
    assert [(e.op_index, e.code, e.message, e.doc_url) for e in typed.errors] == [
        (0, "merge.value.not_an_object", "Merge value must be a JSON object", DOC_URL),
        (1, "append.type_mismatch", "Cannot append at path 'a': target is number, expected array, string, null, or missing field.", DOC_URL),
    ]

    # The SDK models allow a float `by`; the engine requires an integer and rejects the whole request.
    deserialization_error(
        c, "state::update", StateUpdateInput(scope="m", key="k", ops=[UpdateIncrement(path="a", by=1.5)]).model_dump(),
        "invalid type: floating point `1.5`, expected i64",
    )
    assert call(c, "state::get", {"scope": "m", "key": "k"})["a"] == 42

    assert call(c, "state::list", StateListInput(scope="m").model_dump()) == [call(c, "state::get", {"scope": "m", "key": "k"})]
    deleted = call(c, "state::delete", StateDeleteInput(scope="m", key="k").model_dump())
    assert deleted["a"] == 42, "delete returns the bare deleted value (not {old_value})"
    assert DeleteResult.model_validate({"old_value": deleted}).old_value == deleted


@state_engine
def test_update_ops_64_bit_edges_and_representative_errors(engine, make_client):
    c = state_client(make_client, "py-ops")

    def upd(key: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return call(c, "state::update", {"scope": "ops", "key": key, "ops": ops})

    # i64 -> u64 promotion and checked arithmetic.
    assert upd("m1", [{"type": "decrement", "path": "", "by": I64_MIN}]) == {"old_value": None, "new_value": 2**63}, (
        "decrement by i64::MIN on a missing item gives |i64::MIN|"
    )
    assert upd("m2", [{"type": "decrement", "path": "v", "by": I64_MIN}])["new_value"] == {"v": 2**63}
    call(c, "state::set", {"scope": "ops", "key": "n", "value": {"max": I64_MAX, "min": I64_MIN, "umax": U64_MAX, "f": 1.25}})
    res = upd("n", [
        {"type": "increment", "path": "max", "by": 1},       # i64::MAX + 1 fits u64
        {"type": "increment", "path": "umax", "by": 1},      # overflow
        {"type": "decrement", "path": "min", "by": 1},       # overflow
        {"type": "increment", "path": "f", "by": I64_MAX},   # float arithmetic
        {"type": "decrement", "path": "umax", "by": 1},
    ])
    assert res["new_value"] == {"max": 2**63, "min": I64_MIN, "umax": U64_MAX - 1, "f": 1.25 + float(I64_MAX)}
    assert [(e["op_index"], e["code"]) for e in res["errors"]] == [(1, "increment.not_number"), (2, "decrement.not_number")]
    for e in res["errors"]:
        assert e["doc_url"] == DOC_URL
        assert f"'{['max', 'umax', 'min'][e['op_index']]}'" in e["message"], e
    deserialization_error(c, "state::update", {"scope": "ops", "key": "n", "ops": [{"type": "increment", "path": "x", "by": 2**63}]},
                          "invalid value: integer `9223372036854775808`, expected i64")

    # Representative error records with their exact messages (modules.md §2.5); later ops still apply.
    call(c, "state::set", {"scope": "ops", "key": "obj", "value": {"s": "str", "n": 1}})
    res = upd("obj", [
        {"type": "increment", "path": "s", "by": 1},
        {"type": "merge", "path": ["a"] * 33, "value": {}},
        {"type": "merge", "value": {"prototype": 1}},
        {"type": "append", "path": "s", "value": 1},
        {"type": "set", "path": "x" * 300, "value": 1},
        {"type": "remove", "path": "n"},
        {"type": "append", "path": "s", "value": "!"},
    ])
    assert res == {
        "old_value": {"s": "str", "n": 1},
        "new_value": {"s": "str!"},
        "errors": [
            op_error(0, "increment.not_number", "Expected number at path 's', got string."),
            op_error(1, "merge.path.too_deep", "Path depth 33 exceeds maximum of 32"),
            op_error(2, "merge.value.proto_polluted", 'Merge value top-level key "prototype" is a prototype-pollution sink'),
            op_error(3, "append.type_mismatch", "Expected string append value at path 's', got number."),
            op_error(4, "set.path.segment_too_long", "Path segment of 300 bytes exceeds maximum of 256"),
        ],
    }
    call(c, "state::set", {"scope": "ops", "key": "list", "value": [1]})
    assert upd("list", [
        {"type": "remove", "path": "k"},
        {"type": "increment", "path": "k", "by": 1},
        {"type": "append", "path": "", "value": 2},
    ]) == {
        "old_value": [1],
        "new_value": [1, 2],
        "errors": [
            op_error(0, "remove.target_not_object", "Cannot remove at path 'k': target is array, expected object."),
            op_error(1, "increment.target_not_object", "Cannot increment at path 'k': target is array, expected object."),
        ],
    }
    deep: Any = 1
    for _ in range(17):
        deep = {"d": deep}
    assert upd("deep", [{"type": "merge", "value": deep}, {"type": "merge", "value": deep["d"]}]) == {
        "old_value": None,
        "new_value": deep["d"],
        "errors": [op_error(0, "merge.value.too_deep", "Merge value JSON nesting depth 17 exceeds maximum of 16")],
    }
    assert upd("empty", []) == {"old_value": None, "new_value": {}}
    assert call(c, "state::get", {"scope": "ops", "key": "empty"}) == {}


# ------------------------------------------------------------------------------------------------ trigger


@state_engine
def test_state_trigger_with_python_handlers_and_condition(engine, make_client):
    c = state_client(make_client, "py-trig")
    lock = threading.Lock()
    seen: dict[str, list[dict[str, Any]]] = {"scope": [], "key": [], "cond": []}
    cond_calls: list[dict[str, Any]] = []

    def recorder(name: str):
        def handler(data: Any) -> None:
            with lock:
                seen[name].append(data)
        return handler

    def condition(data: Any) -> bool:
        with lock:
            cond_calls.append(data)
        return data.get("new_value") != "skip"

    for name in seen:
        c.register_function(f"pyst::{name}", recorder(name))
    c.register_function("pyst::condition", condition)
    wait_for_functions(c, [f"pyst::{n}" for n in seen] + ["pyst::condition"])
    c.register_trigger({"type": "state", "function_id": "pyst::scope", "config": {"scope": "inv"}})
    c.register_trigger({"type": "state", "function_id": "pyst::key", "config": {"scope": "inv", "key": "k1"}})
    c.register_trigger({"type": "state", "function_id": "pyst::cond",
                        "config": {"scope": "inv", "condition_function_id": "pyst::condition"}})

    def bound() -> bool:
        rows = [t for t in call(c, "engine::triggers::list", {})["triggers"] if t["trigger_type"] == "state"]
        return len(rows) == 3 and all(r["state"] == "bound" for r in rows)

    wait_for(bound, what="3 bound state triggers")

    def ev(event_type: str, key: str, old: Any, new: Any) -> dict[str, Any]:
        return {"type": "state", "event_type": event_type, "scope": "inv", "key": key, "old_value": old, "new_value": new}

    expected: dict[str, list[dict[str, Any]]] = {"scope": [], "key": [], "cond": []}
    cond_expected: list[dict[str, Any]] = []

    def step(what: str, op, event: dict[str, Any], targets: list[str]) -> None:
        op()
        for t in targets:
            expected[t].append(event)
        cond_expected.append(event)

        def arrived() -> bool:
            with lock:
                return all(len(seen[t]) >= len(expected[t]) for t in seen) and len(cond_calls) >= len(cond_expected)

        wait_for(arrived, timeout=3, what=f"events after {what}")
        with lock:
            assert seen == expected, f"after {what}"
            assert cond_calls == cond_expected, f"condition calls after {what}"

    step("set k1", lambda: call(c, "state::set", {"scope": "inv", "key": "k1", "value": 1}),
         ev("state:created", "k1", None, 1), ["scope", "key", "cond"])
    step("update k1", lambda: call(c, "state::update", {"scope": "inv", "key": "k1", "ops": [{"type": "increment", "path": "", "by": 2}]}),
         ev("state:updated", "k1", 1, 3), ["scope", "key", "cond"])
    step("set k2 (condition false)", lambda: call(c, "state::set", {"scope": "inv", "key": "k2", "value": "skip"}),
         ev("state:created", "k2", None, "skip"), ["scope"])
    step("delete k1", lambda: call(c, "state::delete", {"scope": "inv", "key": "k1"}),
         ev("state:deleted", "k1", 3, None), ["scope", "key", "cond"])

    # Deleting missing keys and writes to other scopes fire nothing here.
    call(c, "state::delete", {"scope": "inv", "key": "k1"})
    call(c, "state::delete", {"scope": "inv", "key": "never"})
    call(c, "state::set", {"scope": "elsewhere", "key": "k1", "value": 1})
    time.sleep(SETTLE)
    with lock:
        assert seen == expected, "no event for deleting a missing key or for another scope"
        assert cond_calls == cond_expected

    # The payloads are valid SDK StateEventData models.
    events = [StateEventData.model_validate(e) for e in seen["scope"]]
    assert [e.event_type for e in events] == [StateEventType.CREATED, StateEventType.UPDATED, StateEventType.CREATED, StateEventType.DELETED]
    assert events[-1].old_value == 3 and events[-1].new_value is None


# ------------------------------------------------------------------------------------------------ durability

N = 200


def value_for(i: int) -> dict[str, Any]:
    return {"i": i, "big": I64_MAX - i, "s": f"v{i} ✓" * (i % 5), "nested": {"a": [i, None, True]}}


def start_client(session, url: str, name: str):
    client = register_worker(url, _fast_options(name))
    session.clients.append(client)
    wait_for(lambda: client.worker_id, timeout=5, what=f"{name} to receive workerregistered")
    wait_for_functions(client, STATE_FUNCTIONS)
    return client


def stop_client(session, client) -> None:
    session.clients.remove(client)
    errors: list[str] = []
    _shutdown_client(client, errors)
    assert not errors, errors


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_file_based_writes_survive_engine_restart(session, start_engine, tmp_path, how):
    yaml = file_based(str(tmp_path / "state.db"))
    e1 = start_engine(extra_yaml=yaml, dir=str(tmp_path))
    w1 = start_client(session, e1.url, f"py-dur-writer-{how}")

    for i in range(N // 2):
        assert call(w1, "state::set", {"scope": "pydur", "key": f"k{i}", "value": value_for(i)}) == {
            "old_value": None, "new_value": value_for(i)}
    with ThreadPoolExecutor(16) as pool:
        acks = list(pool.map(lambda i: call(w1, "state::set", {"scope": "pydur", "key": f"k{i}", "value": value_for(i)}),
                             range(N // 2, N)))
    assert [a["new_value"] for a in acks] == [value_for(i) for i in range(N // 2, N)]
    for i in range(0, N, 7):
        assert call(w1, "state::delete", {"scope": "pydur", "key": f"k{i}"}) == value_for(i)
    assert call(w1, "state::update", {"scope": "pydur", "key": "k1", "ops": [{"type": "set", "path": "i", "value": -1}]})["new_value"]["i"] == -1
    assert (tmp_path / "state.db").exists()

    if how == "SIGKILL":
        e1.stop(signal.SIGKILL, expect_code=None)
        assert e1.proc.returncode == -signal.SIGKILL
    else:
        e1.stop(signal.SIGTERM)  # asserts exit code 0
    stop_client(session, w1)

    e2 = start_engine(extra_yaml=yaml, dir=str(tmp_path))
    w2 = start_client(session, e2.url, f"py-dur-reader-{how}")

    def expected(i: int) -> Any:
        return {**value_for(i), "i": -1} if i == 1 else value_for(i)

    survivors = [i for i in range(N) if i % 7 != 0]
    listed = call(w2, "state::list", {"scope": "pydur"})
    first = [i for i in survivors if i < N // 2]
    assert listed[:len(first)] == [expected(i) for i in first], "the sequential writes, in order"
    # The second half was written 16 at a time: it may have reached the engine in any order.
    assert sorted(listed[len(first):], key=lambda v: v["i"]) == [expected(i) for i in survivors if i >= N // 2], \
        "every acknowledged concurrent write, once"
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda i: call(w2, "state::get", {"scope": "pydur", "key": f"k{i}"}), range(N)))
    for i in range(N):
        assert got[i] == (None if i % 7 == 0 else expected(i)), f"k{i}"
    assert call(w2, "state::list_groups", {}) == {"groups": ["pydur"]}


def test_in_memory_state_is_gone_after_restart(session, start_engine, tmp_path):
    e1 = start_engine(extra_yaml=IN_MEMORY, dir=str(tmp_path))
    w1 = start_client(session, e1.url, "py-mem-writer")
    for i in range(10):
        call(w1, "state::set", {"scope": "pymem", "key": f"k{i}", "value": i})
    assert len(call(w1, "state::list", {"scope": "pymem"})) == 10
    e1.stop()
    stop_client(session, w1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"], "in_memory writes no files"

    e2 = start_engine(extra_yaml=IN_MEMORY, dir=str(tmp_path))
    w2 = start_client(session, e2.url, "py-mem-reader")
    assert call(w2, "state::get", {"scope": "pymem", "key": "k1"}) is None
    assert call(w2, "state::list", {"scope": "pymem"}) == []
    assert call(w2, "state::list_groups", {}) == {"groups": []}
