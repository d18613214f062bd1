"""iii-stream through the official Python iii-sdk==0.11.6 and raw ``websockets`` clients: every stream::* function
(with the SDK's pydantic stream models on the wire), the client WebSocket server (sync, create / update / delete /
custom events, two groups kept apart, item vs group subscriptions, the documented /stream/{name}/{group}/ path,
malformed frames ignored), a join refused by a Python ``stream:join`` handler and the ``auth_function`` context
reaching ``stream:join`` / ``stream:leave``, the ``stream`` trigger type with filters and a condition, a custom stream
served by a Python ``create_stream`` worker (and the fallback to storage when it leaves), and durability of the
``file_based`` store across SIGKILL."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from typing import Any

import pytest
from iii import IIIInvocationError, register_worker
from iii.stream import (
    IStream,
    StreamDeleteResult,
    StreamGetInput,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
    StreamSetResult,
    StreamUpdateInput,
    StreamUpdateResult,
    UpdateAppend,
    UpdateIncrement,
    UpdateMerge,
    UpdateRemove,
    UpdateSet,
)
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from conftest import _fast_options, _shutdown_client, wait_for, wait_for_functions

STREAM_YAML = "  - name: iii-stream\n    config: { host: 127.0.0.1, port: 0 }"


def stream_yaml(extra: str = "") -> str:
    return "  - name: iii-stream\n    config: { host: 127.0.0.1, port: 0" + extra + " }"


def file_based_yaml(path: str) -> str:
    return stream_yaml(f", adapter: {{ name: kv, config: {{ store_method: file_based, file_path: {json.dumps(path)} }} }}")


stream_engine = pytest.mark.engine(extra_yaml=STREAM_YAML)

STREAM_FUNCTIONS = [
    "stream::set", "stream::get", "stream::delete", "stream::list", "stream::list_groups", "stream::list_all",
    "stream::send", "stream::update",
]
DOC_URL = "https://iii.dev/docs/workers/iii-state#error-codes"
SETTLE = 0.3  # seconds given to the engine to (wrongly) do something we assert it does not do
STREAM_LISTEN_RE = re.compile(r"iii-stream listening on ([0-9.]+):(\d+)")
_MISSING = object()


def stream_url(engine) -> str:
    """ws://127.0.0.1:<port> of the engine's iii-stream client server (read from its log line)."""
    m = wait_for(lambda: STREAM_LISTEN_RE.search(engine.log()), timeout=5, what="the 'iii-stream listening on' line")
    assert m.group(1) == "127.0.0.1"
    assert int(m.group(2)) != 0
    return f"ws://127.0.0.1:{m.group(2)}"


def call(client, fid: str, payload: Any) -> Any:
    return client.trigger({"function_id": fid, "payload": payload, "timeout_ms": 5000})


def stream_client(make_client, name: str):
    c = make_client(name)
    wait_for_functions(c, STREAM_FUNCTIONS)
    return c


def deserialization_error(client, fid: str, payload: Any) -> IIIInvocationError:
    with pytest.raises(IIIInvocationError) as ei:
        call(client, fid, payload)
    err = ei.value
    assert err.code == "deserialization_error", f"{fid}({payload!r}): {err.code}: {err.message}"
    prefix = f"Failed to deserialize input for {fid}: "
    assert err.message.startswith(prefix) and len(err.message) > len(prefix), err.message
    return err


def trigger_rows(client) -> list[dict[str, Any]]:
    return client.trigger({"function_id": "engine::triggers::list", "payload": {}, "timeout_ms": 3000})["triggers"]


def wait_trigger_rows(client, fn_ids: list[str], state: str = "bound") -> list[dict[str, Any]]:
    def rows():
        all_rows = trigger_rows(client)
        mine = [next((t for t in all_rows if t["function_id"] == f), None) for f in fn_ids]
        return mine if all(r is not None and r["state"] != "pending" for r in mine) else None

    got = wait_for(rows, what=f"triggers of {fn_ids} to leave the pending state")
    for r in got:
        assert r["state"] == state, r
    return got


def wrap(stream: str, group: str, item: str | None, event: dict[str, Any]) -> dict[str, Any]:
    return {"type": "stream", "streamName": stream, "groupId": group, "id": item, "event": event}


def check_wrapper(msg: Any, expected: dict[str, Any], what: str) -> None:
    assert isinstance(msg, dict), f"{what}: {msg!r}"
    rest = dict(msg)
    ts = rest.pop("timestamp", None)
    assert isinstance(ts, int) and not isinstance(ts, bool), f"{what}: timestamp must be an integer, got {ts!r}"
    assert abs(ts - time.time() * 1000) < 60000, f"{what}: timestamp {ts} is not close to now"
    assert rest == expected, f"{what}:\n got      {rest}\n expected {expected}"


class StreamClient:
    """A raw client of the iii-stream WebSocket server that checks every frame it receives."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.ws = connect(url, open_timeout=5, proxy=None, max_size=None, additional_headers=headers)

    def send(self, obj: Any) -> None:
        self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))

    def join(self, sub: str, stream: str, group: str, item: Any = _MISSING) -> None:
        data = {"subscriptionId": sub, "streamName": stream, "groupId": group}
        if item is not _MISSING:
            data["id"] = item
        self.send({"type": "join", "data": data})

    def leave(self, sub: str, stream: str, group: str) -> None:
        self.send({"type": "leave", "data": {"subscriptionId": sub, "streamName": stream, "groupId": group}})

    def recv(self, what: str, timeout: float = 3.0) -> dict[str, Any]:
        try:
            frame = self.ws.recv(timeout=timeout)
        except TimeoutError:
            raise AssertionError(f"{self.url}: no message within {timeout}s: {what}") from None
        assert isinstance(frame, str), f"{what}: engine frames must be text, got {frame!r}"
        return json.loads(frame)

    def expect(self, expected: dict[str, Any], what: str) -> dict[str, Any]:
        msg = self.recv(what)
        check_wrapper(msg, expected, what)
        return msg

    def expect_silence(self, seconds: float, what: str) -> None:
        try:
            frame = self.ws.recv(timeout=seconds)
        except TimeoutError:
            return
        raise AssertionError(f"{what}: expected no message, got {frame!r}")

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


@pytest.fixture
def ws_clients():
    opened: list[StreamClient] = []

    def open_client(url: str, headers: dict[str, str] | None = None) -> StreamClient:
        c = StreamClient(url, headers)
        opened.append(c)
        return c

    yield open_client
    for c in opened:
        c.close()


# ------------------------------------------------------------------------------------------------ functions


@stream_engine
def test_stream_functions_from_python(engine, make_client):
    c = stream_client(make_client, "py-stream")

    res = call(c, "stream::set", StreamSetInput(stream_name="py", group_id="g1", item_id="a", data={"x": [1, None, "é"]}).model_dump())
    assert res == {"old_value": None, "new_value": {"x": [1, None, "é"]}}
    assert StreamSetResult[dict].model_validate(res).new_value == {"x": [1, None, "é"]}
    assert call(c, "stream::set", {"stream_name": "py", "group_id": "g1", "item_id": "b", "data": "two"}) == {"old_value": None, "new_value": "two"}
    assert call(c, "stream::set", {"stream_name": "py", "group_id": "g1", "item_id": "a", "data": 3}) == {
        "old_value": {"x": [1, None, "é"]},
        "new_value": 3,
    }
    big = {"i64max": 2**63 - 1, "i64min": -(2**63), "f": 0.1}
    assert call(c, "stream::set", {"stream_name": "py", "group_id": "g0", "item_id": "big", "data": big})["new_value"] == big
    assert call(c, "stream::get", StreamGetInput(stream_name="py", group_id="g0", item_id="big").model_dump()) == big, "64-bit ints exact"
    assert call(c, "stream::get", {"stream_name": "py", "group_id": "g1", "item_id": "a"}) == 3
    assert call(c, "stream::get", {"stream_name": "py", "group_id": "g1", "item_id": "missing"}) is None
    assert call(c, "stream::list", StreamListInput(stream_name="py", group_id="g1").model_dump()) == [3, "two"], "insertion order"
    assert call(c, "stream::list", {"stream_name": "py", "group_id": "none"}) == []
    call(c, "stream::set", {"stream_name": "other", "group_id": "z", "item_id": "k", "data": True})
    assert call(c, "stream::list_groups", StreamListGroupsInput(stream_name="py").model_dump()) == ["g0", "g1"]
    assert call(c, "stream::list_all", {}) == {
        "stream": [{"id": "other", "groups": ["z"]}, {"id": "py", "groups": ["g0", "g1"]}],
        "count": 2,
    }
    assert call(c, "stream::delete", {"stream_name": "py", "group_id": "g1", "item_id": "b"}) == {"old_value": "two"}
    assert call(c, "stream::delete", {"stream_name": "py", "group_id": "g1", "item_id": "b"}) == {"old_value": None}
    assert call(c, "stream::delete", {"stream_name": "py", "group_id": "g0", "item_id": "big"}) == {"old_value": big}
    assert call(c, "stream::list_groups", {"stream_name": "py"}) == ["g1"], "a group whose last item was deleted is gone"
    assert call(c, "stream::send", {"stream_name": "py", "group_id": "g1", "type": "t", "data": {"d": 1}}) is None
    assert call(c, "stream::send", {"stream_name": "py", "group_id": "g1", "type": "t", "data": None, "id": "a"}) is None

    # update with the SDK's op models.
    upd = StreamUpdateInput(
        stream_name="py",
        group_id="u",
        item_id="k",
        ops=[
            UpdateSet(path="name", value="py"),
            UpdateIncrement(path="n", by=41),
            UpdateAppend(path="tags", value=1),
            UpdateMerge(value={"m": 1}),  # path None => root
            UpdateMerge(path=["deep", "er"], value={"z": True}),
            UpdateRemove(path="name"),
        ],
    ).model_dump()
    res = call(c, "stream::update", upd)
    assert res == {"old_value": None, "new_value": {"n": 41, "tags": [1], "m": 1, "deep": {"er": {"z": True}}}}
    res = call(c, "stream::update", {"stream_name": "py", "group_id": "u", "item_id": "k", "ops": [
        {"type": "append", "path": "n", "value": 1},
        {"type": "decrement", "path": "n", "by": 1},
    ]})
    typed = StreamUpdateResult[dict].model_validate(res)
    assert typed.new_value == {"n": 40, "tags": [1], "m": 1, "deep": {"er": {"z": True}}}
    assert [(e.op_index, e.code, e.message, e.doc_url) for e in typed.errors] == [
        (0, "append.type_mismatch", "Cannot append at path 'n': target is number, expected array, string, null, or missing field.", DOC_URL),
    ]
    assert call(c, "stream::update", {"stream_name": "py", "group_id": "u", "item_id": "e", "ops": []}) == {"old_value": None, "new_value": {}}

    # Bad input => deserialization_error; nothing applied.
    deserialization_error(c, "stream::set", {"stream_name": "py", "group_id": "g1", "item_id": "a"})
    deserialization_error(c, "stream::get", {"stream_name": "py", "group_id": "g1"})
    deserialization_error(c, "stream::delete", {"stream_name": "py", "item_id": "a"})
    deserialization_error(c, "stream::list", {"stream_name": 7, "group_id": "g1"})
    deserialization_error(c, "stream::list_groups", {})
    deserialization_error(c, "stream::list_all", None)  # the Python SDK omits `data` for None
    deserialization_error(c, "stream::send", {"stream_name": "py", "group_id": "g1", "data": 1})
    deserialization_error(c, "stream::update", {"stream_name": "py", "group_id": "u", "item_id": "k", "ops": [{"type": "increment", "path": "n", "by": 1.5}]})
    deserialization_error(c, "stream::update", {"stream_name": "py", "group_id": "u", "item_id": "k", "ops": [{"type": "nope"}]})
    assert call(c, "stream::get", {"stream_name": "py", "group_id": "u", "item_id": "k"})["n"] == 40
    assert call(c, "stream::get", {"stream_name": "py", "group_id": "g1", "item_id": "a"}) == 3


# ------------------------------------------------------------------------------------------------ client server


@stream_engine
def test_clients_groups_items_events_and_leave(engine, make_client, ws_clients):
    c = stream_client(make_client, "py-ws")
    url = stream_url(engine)
    S = "pylive"

    def set_(group: str, item: str, data: Any) -> Any:
        return call(c, "stream::set", {"stream_name": S, "group_id": group, "item_id": item, "data": data})

    def send(group: str, typ: str, data: Any, item: Any = _MISSING) -> Any:
        p = {"stream_name": S, "group_id": group, "type": typ, "data": data}
        if item is not _MISSING:
            p["id"] = item
        return call(c, "stream::send", p)

    set_("red", "r1", {"v": 1})
    red = ws_clients(url)
    blue = ws_clients(url)
    item = ws_clients(url)
    red.join("red", S, "red")
    red.expect(wrap(S, "red", None, {"type": "sync", "data": [{"v": 1}]}), "red: sync")
    blue.join("blue", S, "blue")
    blue.expect(wrap(S, "blue", None, {"type": "sync", "data": []}), "blue: sync")
    item.join("it", S, "red", "r1")
    item.expect(wrap(S, "red", "r1", {"type": "sync", "data": {"v": 1}}), "item: sync of r1")

    set_("red", "r1", {"v": 2})
    set_("red", "r2", "second")
    set_("blue", "b1", [1])
    send("red", "group-note", {"n": 1})
    send("red", "item-note", "to r1", "r1")
    call(c, "stream::update", {"stream_name": S, "group_id": "red", "item_id": "r1", "ops": [{"type": "increment", "path": "v", "by": 1}]})
    call(c, "stream::delete", {"stream_name": S, "group_id": "red", "item_id": "r1"})
    call(c, "stream::delete", {"stream_name": S, "group_id": "blue", "item_id": "nothing"})
    send("blue", "fence", "blue")
    send("red", "fence", "red+item", "r1")

    red.expect(wrap(S, "red", "r1", {"type": "update", "data": {"v": 2}}), "red: update r1")
    red.expect(wrap(S, "red", "r2", {"type": "create", "data": "second"}), "red: create r2")
    red.expect(wrap(S, "red", None, {"type": "event", "event": {"type": "group-note", "data": {"n": 1}}}), "red: group event")
    red.expect(wrap(S, "red", "r1", {"type": "event", "event": {"type": "item-note", "data": "to r1"}}), "red: item event")
    red.expect(wrap(S, "red", "r1", {"type": "update", "data": {"v": 3}}), "red: update by stream::update")
    red.expect(wrap(S, "red", "r1", {"type": "delete", "data": {"v": 3}}), "red: delete with the old value")
    red.expect(wrap(S, "red", "r1", {"type": "event", "event": {"type": "fence", "data": "red+item"}}), "red: fence")

    blue.expect(wrap(S, "blue", "b1", {"type": "create", "data": [1]}), "blue: only its own group (no delete of a missing item)")
    blue.expect(wrap(S, "blue", None, {"type": "event", "event": {"type": "fence", "data": "blue"}}), "blue: fence")

    item.expect(wrap(S, "red", "r1", {"type": "update", "data": {"v": 2}}), "item: update r1")
    item.expect(wrap(S, "red", "r1", {"type": "event", "event": {"type": "item-note", "data": "to r1"}}), "item: item event only")
    item.expect(wrap(S, "red", "r1", {"type": "update", "data": {"v": 3}}), "item: update")
    item.expect(wrap(S, "red", "r1", {"type": "delete", "data": {"v": 3}}), "item: delete")
    item.expect(wrap(S, "red", "r1", {"type": "event", "event": {"type": "fence", "data": "red+item"}}), "item: fence")

    # leave: red stops receiving red events; a new subscription of the same socket is the fence.
    red.leave("red", S, "red")
    red.join("green", S, "green")
    red.expect(wrap(S, "green", None, {"type": "sync", "data": []}), "red: sync of green")
    set_("red", "after", 1)
    set_("green", "g", 1)
    red.expect(wrap(S, "green", "g", {"type": "create", "data": 1}), "red: nothing from the left subscription")
    for name, cl in (("red", red), ("blue", blue), ("item", item)):
        cl.expect_silence(SETTLE if name == "red" else 0.05, f"{name} at the end")


@stream_engine
def test_clients_stream_path_and_malformed_frames(engine, make_client, ws_clients):
    c = stream_client(make_client, "py-path")
    url = stream_url(engine)
    call(c, "stream::set", {"stream_name": "chat", "group_id": "room", "item_id": "m1", "data": "hi"})

    p = ws_clients(f"{url}/stream/chat/room/")
    p.expect(wrap("chat", "room", None, {"type": "sync", "data": ["hi"]}), "the path joins the group at once")
    for bad in ["/stream/chat/", "/stream/chat/room/x/", "/elsewhere"]:
        with pytest.raises(InvalidStatus) as ei:
            connect(f"{url}{bad}", open_timeout=5, proxy=None)
        assert ei.value.response.status_code == 404, bad

    # Malformed frames on that connection: no reply, the connection stays open and usable.
    for frame in ["garbage", "", "{}", "[1]", '{"type": "join"}', '{"type": "join", "data": {"streamName": "chat"}}',
                  json.dumps({"type": "join", "data": {"subscriptionId": "x", "streamName": "chat", "groupId": 3}}),
                  json.dumps({"type": "wave", "data": {"subscriptionId": "x", "streamName": "chat", "groupId": "room"}}),
                  json.dumps({"type": "leave", "data": {"subscriptionId": "unknown", "streamName": "chat", "groupId": "room"}})]:
        p.send(frame)
    p.send(b"\xff\x00 binary junk")
    p.send(json.dumps({"type": "join", "data": {"subscriptionId": "bin", "streamName": "chat", "groupId": "other"}}).encode())
    p.expect(wrap("chat", "other", None, {"type": "sync", "data": []}), "the first reply after the junk is the binary join's sync")
    call(c, "stream::set", {"stream_name": "chat", "group_id": "room", "item_id": "m2", "data": "again"})
    p.expect(wrap("chat", "room", "m2", {"type": "create", "data": "again"}), "the auto-joined subscription still works")
    p.expect_silence(SETTLE, "after the malformed frames")


@pytest.mark.engine(extra_yaml=stream_yaml(', auth_function: "py::auth"'))
def test_join_refused_by_python_handler_and_auth_context(engine, make_client, ws_clients):
    c = stream_client(make_client, "py-auth")
    url = stream_url(engine)
    auth_inputs: list[dict[str, Any]] = []
    joins: list[dict[str, Any]] = []
    leaves: list[dict[str, Any]] = []
    lock = threading.Lock()

    def auth(req):
        with lock:
            auth_inputs.append(req)
        return {"context": {"user": req["headers"].get("x-user"), "q": req["query_params"]}}

    def on_join(ev):
        with lock:
            joins.append(ev)
        return {"unauthorized": ev["group_id"].startswith("private")}

    def on_leave(ev):
        with lock:
            leaves.append(ev)

    c.register_function("py::auth", auth)
    c.register_function("py::join", on_join)
    c.register_function("py::leave", on_leave)
    wait_for_functions(c, ["py::auth", "py::join", "py::leave"])
    c.register_trigger({"type": "stream:join", "function_id": "py::join", "config": {}})
    c.register_trigger({"type": "stream:leave", "function_id": "py::leave", "config": {}})
    wait_trigger_rows(c, ["py::join", "py::leave"])

    cl = ws_clients(f"{url}/?room=a&room=b", headers={"X-User": "bob"})
    assert len(auth_inputs) == 1
    req = auth_inputs[0]
    assert req["path"] == "/" and req["query_params"] == {"room": ["a", "b"]}
    assert req["headers"]["x-user"] == "bob"
    assert req["addr"] == "127.0.0.1:%d" % cl.ws.local_address[1]
    ctx = {"user": "bob", "q": {"room": ["a", "b"]}}

    cl.join("ok", "auth-s", "public")
    cl.expect(wrap("auth-s", "public", None, {"type": "sync", "data": []}), "allowed join")
    cl.join("no", "auth-s", "private-1", "it")
    cl.expect(wrap("auth-s", "private-1", "it", {"type": "unauthorized"}), "refused join")
    assert joins == [
        {"subscription_id": "ok", "stream_name": "auth-s", "group_id": "public", "id": None, "context": ctx},
        {"subscription_id": "no", "stream_name": "auth-s", "group_id": "private-1", "id": "it", "context": ctx},
    ]
    call(c, "stream::set", {"stream_name": "auth-s", "group_id": "private-1", "item_id": "it", "data": "secret"})
    call(c, "stream::set", {"stream_name": "auth-s", "group_id": "public", "item_id": "p", "data": "open"})
    cl.expect(wrap("auth-s", "public", "p", {"type": "create", "data": "open"}), "nothing from the refused subscription")

    cl.leave("ok", "auth-s", "public")
    wait_for(lambda: len(leaves) == 1, what="stream:leave after a leave message")
    assert leaves[0] == {"subscription_id": "ok", "stream_name": "auth-s", "group_id": "public", "id": None, "context": ctx}
    cl.join("again", "auth-s", "public", "p")
    cl.expect(wrap("auth-s", "public", "p", {"type": "sync", "data": "open"}), "item join")
    cl.close()
    wait_for(lambda: len(leaves) == 2, what="stream:leave on disconnect")
    time.sleep(SETTLE)
    assert leaves[1:] == [{"subscription_id": "again", "stream_name": "auth-s", "group_id": "public", "id": "p", "context": ctx}], (
        "only the subscription still held at the disconnect (not the refused or the left one)"
    )


# ------------------------------------------------------------------------------------------------ stream trigger


@stream_engine
def test_stream_trigger_filters_and_condition_in_python(engine, make_client):
    c = stream_client(make_client, "py-trig")
    seen: dict[str, list[dict[str, Any]]] = {"any": [], "grp": [], "itm": [], "cond": [], "none": []}
    cond_calls: list[dict[str, Any]] = []
    lock = threading.Lock()

    def recorder(name):
        def h(ev):
            with lock:
                seen[name].append(ev)
        return h

    def cond(ev):
        with lock:
            cond_calls.append(ev)
        return ev["event"]["type"] != "update"

    for name in seen:
        c.register_function(f"pyt::{name}", recorder(name))
    c.register_function("pyt::cond-fn", cond)
    wait_for_functions(c, [f"pyt::{n}" for n in seen] + ["pyt::cond-fn"])
    c.register_trigger({"type": "stream", "function_id": "pyt::any", "config": {"stream_name": "tk"}})
    c.register_trigger({"type": "stream", "function_id": "pyt::grp", "config": {"stream_name": "tk", "group_id": "a"}})
    c.register_trigger({"type": "stream", "function_id": "pyt::itm", "config": {"stream_name": "tk", "item_id": "i1"}})
    c.register_trigger({"type": "stream", "function_id": "pyt::cond", "config": {"stream_name": "tk", "condition_function_id": "pyt::cond-fn"}})
    c.register_trigger({"type": "stream", "function_id": "pyt::none", "config": {"stream_name": "tk", "group_id": "zzz"}})
    wait_trigger_rows(c, [f"pyt::{n}" for n in seen])

    steps = [
        ("stream::set", {"group_id": "a", "item_id": "i1", "data": 1}),
        ("stream::set", {"group_id": "b", "item_id": "i1", "data": 2}),
        ("stream::set", {"group_id": "a", "item_id": "i1", "data": 3}),
        ("stream::send", {"group_id": "a", "type": "ping", "data": None}),
        ("stream::delete", {"group_id": "b", "item_id": "i1"}),
        ("stream::set", {"group_id": "a", "item_id": "i2", "data": 4}),
    ]
    for n, (fid, payload) in enumerate(steps, start=1):
        call(c, fid, {"stream_name": "tk", **payload})
        wait_for(lambda: len(seen["any"]) == n, what=f"pyt::any to see event {n}")
    call(c, "stream::set", {"stream_name": "tk2", "group_id": "a", "item_id": "i1", "data": 0})  # other stream
    time.sleep(SETTLE)

    e = [
        wrap("tk", "a", "i1", {"type": "create", "data": 1}),
        wrap("tk", "b", "i1", {"type": "create", "data": 2}),
        wrap("tk", "a", "i1", {"type": "update", "data": 3}),
        wrap("tk", "a", None, {"type": "event", "event": {"type": "ping", "data": None}}),
        wrap("tk", "b", "i1", {"type": "delete", "data": 2}),
        wrap("tk", "a", "i2", {"type": "create", "data": 4}),
    ]
    expected = {
        "any": e,
        "grp": [e[0], e[2], e[3], e[5]],
        "itm": [e[0], e[1], e[2], e[4]],
        "cond": [e[0], e[1], e[3], e[4], e[5]],
        "none": [],
    }
    for name, want in expected.items():
        assert len(seen[name]) == len(want), f"pyt::{name}: {[x['event'] for x in seen[name]]}"
        for i, (got, exp) in enumerate(zip(seen[name], want)):
            check_wrapper(got, exp, f"pyt::{name} event {i}")
    assert len(cond_calls) == len(e)
    for i, (got, exp) in enumerate(zip(cond_calls, e)):
        check_wrapper(got, exp, f"condition input {i}")


# ------------------------------------------------------------------------------------------------ custom stream


class DictStream(IStream):
    """A custom stream kept in a dict, recording the typed inputs it receives."""

    def __init__(self) -> None:
        self.store: dict[tuple[str, str], Any] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def get(self, input):
        self.calls.append(("get", input.model_dump()))
        return self.store.get((input.group_id, input.item_id))

    async def set(self, input):
        self.calls.append(("set", input.model_dump()))
        if input.item_id == "no-result":
            return None
        old = self.store.get((input.group_id, input.item_id))
        self.store[(input.group_id, input.item_id)] = input.data
        return StreamSetResult(old_value=old, new_value=input.data)

    async def delete(self, input):
        self.calls.append(("delete", input.model_dump()))
        return StreamDeleteResult(old_value=self.store.pop((input.group_id, input.item_id), None))

    async def list(self, input):
        self.calls.append(("list", input.model_dump()))
        return [v for (g, _), v in self.store.items() if g == input.group_id]

    async def list_groups(self, input):
        self.calls.append(("list_groups", input.model_dump()))
        return sorted({g for g, _ in self.store}) + ["from-python"]

    async def update(self, input):  # not registered by create_stream
        raise AssertionError("stream::update(<name>) is never registered by the SDK")


@stream_engine
def test_custom_stream_from_python_and_fallback(engine, make_client, ws_clients):
    caller = stream_client(make_client, "py-cs-caller")
    url = stream_url(engine)
    owner = register_worker(engine.url, _fast_options("py-cs-owner"))
    owner_up = True
    try:
        impl = DictStream()
        owner.create_stream("pycust", impl)
        fns = [f"stream::{op}(pycust)" for op in ("get", "set", "delete", "list", "list_groups")]
        wait_for_functions(caller, fns)

        def cs(op: str, **payload: Any) -> Any:
            return call(caller, f"stream::{op}", {"stream_name": "pycust", **payload})

        impl.store[("g", "seed")] = {"seeded": True}
        sub = ws_clients(url)
        sub.join("s", "pycust", "g")
        sub.expect(wrap("pycust", "g", None, {"type": "sync", "data": [{"seeded": True}]}), "sync from the Python list")

        assert cs("set", group_id="g", item_id="a", data={"v": 1}) == {"old_value": None, "new_value": {"v": 1}}
        assert cs("set", group_id="g", item_id="a", data={"v": 2}) == {"old_value": {"v": 1}, "new_value": {"v": 2}}
        assert cs("get", group_id="g", item_id="a") == {"v": 2}
        assert cs("get", group_id="g", item_id="nope") is None
        assert cs("list", group_id="g") == [{"seeded": True}, {"v": 2}]
        assert cs("list_groups") == ["g", "from-python"]
        assert cs("delete", group_id="g", item_id="a") == {"old_value": {"v": 2}}
        with pytest.raises(IIIInvocationError) as ei:
            cs("set", group_id="g", item_id="no-result", data=0)
        no_result = ei.value
        assert no_result.code == "STREAM_SET_ERROR", no_result.message
        # update goes to storage (create_stream registers no update function).
        assert cs("update", group_id="g", item_id="u", ops=[{"type": "set", "path": "k", "value": 1}]) == {
            "old_value": None,
            "new_value": {"k": 1},
        }
        assert [(op, d) for op, d in impl.calls] == [
            ("list", {"stream_name": "pycust", "group_id": "g"}),
            ("set", {"stream_name": "pycust", "group_id": "g", "item_id": "a", "data": {"v": 1}}),
            ("set", {"stream_name": "pycust", "group_id": "g", "item_id": "a", "data": {"v": 2}}),
            ("get", {"stream_name": "pycust", "group_id": "g", "item_id": "a"}),
            ("get", {"stream_name": "pycust", "group_id": "g", "item_id": "nope"}),
            ("list", {"stream_name": "pycust", "group_id": "g"}),
            ("list_groups", {"stream_name": "pycust"}),
            ("delete", {"stream_name": "pycust", "group_id": "g", "item_id": "a"}),
            ("set", {"stream_name": "pycust", "group_id": "g", "item_id": "no-result", "data": 0}),
        ]
        sub.expect(wrap("pycust", "g", "a", {"type": "create", "data": {"v": 1}}), "custom create")
        sub.expect(wrap("pycust", "g", "a", {"type": "update", "data": {"v": 2}}), "custom update")
        sub.expect(wrap("pycust", "g", "a", {"type": "delete", "data": {"v": 2}}), "custom delete")
        sub.expect(wrap("pycust", "g", "u", {"type": "create", "data": {"k": 1}}), "update via storage")

        # The owner leaves: storage serves the stream again.
        errors: list[str] = []
        _shutdown_client(owner, errors)
        owner_up = False
        assert errors == []

        def gone() -> bool:
            have = {f["function_id"] for f in caller.trigger({"function_id": "engine::functions::list", "payload": {}, "timeout_ms": 3000})["functions"]}
            return not have.intersection(fns)

        wait_for(gone, what="the custom stream functions to be gone")
        n_calls = len(impl.calls)
        assert cs("get", group_id="g", item_id="u") == {"k": 1}
        assert cs("get", group_id="g", item_id="seed") is None
        assert cs("list", group_id="g") == [{"k": 1}]
        assert cs("list_groups") == ["g"]
        assert cs("set", group_id="g", item_id="no-result", data=7) == {"old_value": None, "new_value": 7}
        sub.expect(wrap("pycust", "g", "no-result", {"type": "create", "data": 7}), "storage create after the fallback")
        assert len(impl.calls) == n_calls
        sub.expect_silence(0.05, "custom subscriber")
        # Exact message (checked last): the reference wraps custom failures in "Failed to set value: ...".
        assert no_result.message == "Failed to set value: Function returned no result"
    finally:
        if owner_up:
            _shutdown_client(owner, [])


# ------------------------------------------------------------------------------------------------ durability


def test_file_based_stream_survives_sigkill(session, start_engine, tmp_path):
    store = tmp_path / "streams"
    yaml = file_based_yaml(str(store))

    def client_for(e, name):
        cl = register_worker(e.url, _fast_options(name))
        session.clients.append(cl)
        wait_for(lambda: cl.worker_id, timeout=5, what=f"{name} to register")
        wait_for_functions(cl, STREAM_FUNCTIONS)
        return cl

    e1 = start_engine(extra_yaml=yaml, dir=str(tmp_path))
    w1 = client_for(e1, "py-dur-writer")
    for i in range(30):
        call(w1, "stream::set", {"stream_name": "pd", "group_id": f"g{i % 2}", "item_id": f"i{i}", "data": {"i": i, "s": "✓" * (i % 4)}})
    call(w1, "stream::set", {"stream_name": "pd", "group_id": "g1", "item_id": "i1", "data": "changed"})
    call(w1, "stream::delete", {"stream_name": "pd", "group_id": "g0", "item_id": "i0"})
    call(w1, "stream::update", {"stream_name": "pd", "group_id": "g0", "item_id": "i2", "ops": [{"type": "increment", "path": "i", "by": 100}]})
    assert store.is_dir(), "file_path without a .db extension is a directory"
    e1.stop(signal.SIGKILL, expect_code=-signal.SIGKILL)  # right after the last acknowledged write
    errors: list[str] = []
    session.clients.remove(w1)
    _shutdown_client(w1, errors)
    assert errors == []

    e2 = start_engine(extra_yaml=yaml, dir=str(tmp_path))
    w2 = client_for(e2, "py-dur-reader")
    g0 = [{"i": i, "s": "✓" * (i % 4)} if i != 2 else {"i": 102, "s": "✓✓"} for i in range(2, 30, 2)]
    g1 = ["changed" if i == 1 else {"i": i, "s": "✓" * (i % 4)} for i in range(1, 30, 2)]
    assert call(w2, "stream::list", {"stream_name": "pd", "group_id": "g0"}) == g0
    assert call(w2, "stream::list", {"stream_name": "pd", "group_id": "g1"}) == g1
    assert call(w2, "stream::get", {"stream_name": "pd", "group_id": "g0", "item_id": "i0"}) is None
    assert call(w2, "stream::list_all", {}) == {"stream": [{"id": "pd", "groups": ["g0", "g1"]}], "count": 1}
    cl = StreamClient(stream_url(e2))
    try:
        cl.join("x", "pd", "g1", "i1")
        cl.expect(wrap("pd", "g1", "i1", {"type": "sync", "data": "changed"}), "item sync after the restart")
    finally:
        cl.close()
