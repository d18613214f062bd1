"""Raw WebSocket / TCP tests of the worker protocol: framing, bad input, limits, liveness, paths."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import time
import uuid

import pytest
from concurrent.futures import ThreadPoolExecutor

from iii import IIIInvocationError
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from conftest import UUID_RE, wait_for, wait_for_functions, workers_named

# ------------------------------------------------------------------------------------------------ helpers


def raw(url: str, path: str = "/", expect_registered: bool = True, **kw):
    """Open a raw WebSocket; returns (ws, worker_id). The first frame must be workerregistered."""
    ws = connect(url + path, max_size=None, open_timeout=5, proxy=None, **kw)
    if not expect_registered:
        return ws, None
    first = ws.recv(timeout=3)
    assert isinstance(first, str), f"engine->worker frames must be text, got {type(first)}"
    msg = json.loads(first)
    assert msg.get("type") == "workerregistered", f"first frame must be workerregistered, got {msg}"
    # reattach_token: for newer SDKs' `reattach` after a reconnect (older SDKs ignore it).
    assert set(msg) == {"type", "worker_id", "reattach_token"}, msg
    assert UUID_RE.match(msg["worker_id"]), msg
    assert UUID_RE.match(msg["reattach_token"]) and msg["reattach_token"] != msg["worker_id"], msg
    return ws, msg["worker_id"]


def recv_json(ws, timeout: float = 3.0) -> dict:
    frame = ws.recv(timeout=timeout)
    assert isinstance(frame, str), f"engine->worker frames must be text frames, got binary {frame[:80]!r}"
    return json.loads(frame)


def send_json(ws, obj) -> None:
    ws.send(json.dumps(obj))


def expect_pong(ws, what: str = "") -> None:
    """Fence: the very next frame after our ping must be the pong (so nothing else was sent before it)."""
    send_json(ws, {"type": "ping"})
    msg = recv_json(ws)
    assert msg == {"type": "pong"}, f"expected only a pong {what}, got {msg}"


def expect_silence(ws, seconds: float) -> None:
    try:
        frame = ws.recv(timeout=seconds)
    except TimeoutError:
        return
    raise AssertionError(f"expected no frame, got {frame!r}")


def sdk_call(client, fid, payload=None, **kw):
    return client.trigger({"function_id": fid, "payload": payload if payload is not None else {}, **kw})


# ------------------------------------------------------------------------------------------------ basics


def test_workerregistered_first_then_ping_pong(engine):
    ws1, id1 = raw(engine.url)
    ws2, id2 = raw(engine.url)
    assert id1 != id2, "every connection gets its own worker id"
    expect_pong(ws1)
    expect_pong(ws2)
    send_json(ws1, {"type": "pong"})  # ignored
    expect_pong(ws1, "after a worker-sent pong")
    send_json(ws1, {"type": "workerregistered", "worker_id": str(uuid.uuid4())})  # ignored if a worker sends it
    expect_pong(ws1, "after a worker-sent workerregistered")
    pong = ws1.ping(b"abc")
    assert pong.wait(3), "WebSocket Ping must be answered with a Pong"
    ws1.close()
    ws2.close()


def test_binary_json_frames_are_accepted(engine):
    ws, wid = raw(engine.url)
    ws.send(b'{"type":"ping"}')
    frame = ws.recv(timeout=3)
    assert isinstance(frame, str), "the reply to a binary frame is still a text frame"
    assert json.loads(frame) == {"type": "pong"}
    inv = str(uuid.uuid4())
    ws.send(json.dumps({"type": "invokefunction", "invocation_id": inv, "function_id": "engine::workers::list",
                        "data": {"worker_id": wid}}).encode())
    msg = recv_json(ws)
    assert msg["type"] == "invocationresult" and msg["invocation_id"] == inv, msg
    assert "error" not in msg, msg
    assert [w["id"] for w in msg["result"]["workers"]] == [wid]
    ws.close()


# ------------------------------------------------------------------------------------------------ bad input

BAD_FRAMES = [
    "not json at all",
    '{"type":',
    "{}",
    '{"no_type": 1}',
    '{"type": "frobnicate"}',
    '{"type": "REGISTERFUNCTION", "id": "x::upper"}',
    "[1, 2, 3]",
    '"a string"',
    "42",
    "null",
    '{"type": "registerfunction"}',
    '{"type": "registerfunction", "id": 42}',
    '{"type": "registerfunction", "id": ["a"]}',
    '{"type": "unregisterfunction"}',
    '{"type": "invokefunction", "function_id": 7, "data": {}}',
    '{"type": "invokefunction", "data": {}}',
    '{"type": "invocationresult", "invocation_id": "not-a-uuid", "function_id": "x"}',
    '{"type": "invocationresult", "function_id": "x", "result": 1}',
    '{"type": "invocationresult", "invocation_id": "%s", "function_id": "x", "error": {"code": "only-code"}}'
    % uuid.uuid4(),
    '{"type": "registertrigger", "id": "t1"}',
    '{"type": "unregistertriggertype", "id": "whatever"}',
    '{"type": "registerworker", "name": "docs-only"}',
]


def test_malformed_frames_get_no_reply_and_connection_stays_open(engine, make_client):
    ws, wid = raw(engine.url)
    mark = engine.mark()
    for frame in BAD_FRAMES:
        ws.send(frame)
        expect_pong(ws, f"after bad frame {frame!r}")
    for frame in [b"\x00\x01\xff\xfe", b"", "", "   \n\t "]:
        ws.send(frame)
        expect_pong(ws, f"after bad frame {frame!r}")

    # Malformed input is logged as a warning.
    wait_for(
        lambda: any("warn" in line.lower() for line in engine.lines_since(mark)),
        timeout=3,
        what="a warning in the engine log about malformed input",
    )
    # Nothing got registered by the broken registerfunction frames, and the connection is fully usable.
    client = make_client("raw-bad-observer")
    ids = {f["function_id"] for f in sdk_call(client, "engine::functions::list", {"include_internal": True})["functions"]}
    assert "x::upper" not in ids
    assert not any(i in ids for i in ("42", "['a']", "a"))
    send_json(ws, {"type": "registerfunction", "id": "rawbad::f"})
    wait_for_functions(client, ["rawbad::f"])
    expect_pong(ws)
    ws.close()


INVALID_INVOKES = [
    # (frame, invocation id that must be echoed)
    ({"type": "invokefunction", "invocation_id": "not-a-uuid", "function_id": "engine::functions::list", "data": {}},
     "not-a-uuid"),
    ({"type": "invokefunction", "invocation_id": "12345", "function_id": "engine::functions::list", "data": {}},
     "12345"),
    ({"type": "invokefunction", "invocation_id": "U2", "function_id": 123, "data": {}}, None),
    ({"type": "invokefunction", "invocation_id": "U3", "data": {}}, None),  # no function_id
    ({"type": "invokefunction", "invocation_id": "U4", "function_id": "engine::functions::list", "data": {},
      "action": {"type": "bogus"}}, None),
    ({"type": "invokefunction", "invocation_id": "U5", "function_id": "engine::functions::list", "data": {},
      "action": {"type": "enqueue"}}, None),  # enqueue without queue
    ({"type": "invokefunction", "invocation_id": "U6", "function_id": "engine::functions::list", "data": {},
      "action": "void"}, None),
]


@pytest.mark.parametrize("case", range(len(INVALID_INVOKES)))
def test_invalid_invokefunction_with_readable_id_gets_invalid_message(engine, case):
    frame, echoed = INVALID_INVOKES[case]
    frame = dict(frame)
    if echoed is None:  # placeholders U1.. become real UUIDs
        echoed = str(uuid.uuid4())
        frame["invocation_id"] = echoed
    ws, _ = raw(engine.url)
    send_json(ws, frame)
    msg = recv_json(ws)
    assert msg.get("type") == "invocationresult", msg
    assert msg.get("invocation_id") == echoed, f"the invocation id must be echoed: {msg}"
    assert isinstance(msg.get("error"), dict), msg
    assert msg["error"].get("code") == "invalid_message", msg
    assert isinstance(msg["error"].get("message"), str) and msg["error"]["message"], msg
    assert "result" not in msg, msg
    expect_pong(ws, "after the invalid_message result")
    # and the connection still works for a valid call
    inv = str(uuid.uuid4())
    send_json(ws, {"type": "invokefunction", "invocation_id": inv, "function_id": "engine::functions::list", "data": {}})
    ok = recv_json(ws)
    assert ok["invocation_id"] == inv and "functions" in ok["result"], ok
    ws.close()


def test_void_invalid_and_unknown_get_no_reply(engine):
    ws, _ = raw(engine.url)
    # void call to an unknown function with an invocation id: never a reply
    send_json(ws, {"type": "invokefunction", "invocation_id": str(uuid.uuid4()), "function_id": "nope::void",
                   "data": {}, "action": {"type": "void"}})
    # invokefunction without invocation id and without action behaves like void: no reply either
    send_json(ws, {"type": "invokefunction", "function_id": "nope::noid", "data": {}})
    expect_pong(ws)
    expect_silence(ws, 0.4)
    # a late/unknown invocationresult is ignored
    send_json(ws, {"type": "invocationresult", "invocation_id": str(uuid.uuid4()), "function_id": "x", "result": 1})
    expect_pong(ws, "after a stray invocationresult")
    ws.close()


def test_invokefunction_without_data_is_treated_as_null(engine):
    """Deliberate difference (docs/compat.md): the Python SDK omits `data` for a None payload."""
    ex, _ = raw(engine.url)
    caller, _ = raw(engine.url)
    send_json(ex, {"type": "registerfunction", "id": "nodata::fn"})
    expect_pong(ex)
    inv = str(uuid.uuid4())
    send_json(caller, {"type": "invokefunction", "invocation_id": inv, "function_id": "nodata::fn"})
    req = recv_json(ex)
    assert req["function_id"] == "nodata::fn"
    assert "data" in req and req["data"] is None, f"absent data must arrive as null: {req}"
    send_json(ex, {"type": "invocationresult", "invocation_id": req["invocation_id"], "function_id": "nodata::fn",
                   "result": "got none"})
    res = recv_json(caller)
    assert res["invocation_id"] == inv and res["result"] == "got none", res
    ex.close()
    caller.close()


# ------------------------------------------------------------------------------------------------ routing


def test_raw_routing_result_and_error_passthrough(engine):
    ex, ex_id = raw(engine.url)
    caller, caller_id = raw(engine.url)
    send_json(ex, {"type": "registerfunction", "id": "raw::fn", "description": "raw executor"})
    expect_pong(ex)  # registration processed (messages of one connection are handled in order)

    def roundtrip(reply: dict, data=None):
        inv = str(uuid.uuid4())
        send_json(caller, {"type": "invokefunction", "invocation_id": inv, "function_id": "raw::fn",
                           "data": data if data is not None else {"k": 1}})
        req = recv_json(ex)
        assert req["type"] == "invokefunction", req
        assert req["function_id"] == "raw::fn"
        assert UUID_RE.match(req["invocation_id"]), req
        assert "action" not in req, f"engine->worker invokefunction never carries action: {req}"
        send_json(ex, {"type": "invocationresult", "invocation_id": req["invocation_id"], "function_id": "raw::fn",
                       **reply})
        res = recv_json(caller)
        assert res["type"] == "invocationresult", res
        assert res["invocation_id"] == inv, res
        assert res["function_id"] == "raw::fn", res
        return req, res

    req, res = roundtrip({"result": {"r": 2}})
    assert req["data"] == {"k": 1, "_caller_worker_id": caller_id}
    assert res["result"] == {"r": 2} and "error" not in res

    _, res = roundtrip({"result": None})
    assert "result" in res and res["result"] is None, f"null result must stay null: {res}"
    assert "error" not in res

    _, res = roundtrip({})
    assert "result" not in res, f"absent result must stay absent: {res}"
    assert "error" not in res

    _, res = roundtrip({"result": [1, "x", None]}, data=[1, 2])
    assert res["result"] == [1, "x", None]

    req, res = roundtrip({"error": {"code": "my_code", "message": "custom message", "stacktrace": "line1\nline2"}},
                         data="plain")
    assert req["data"] == "plain", "non-object payloads are not touched"
    assert res["error"] == {"code": "my_code", "message": "custom message", "stacktrace": "line1\nline2"}
    assert "result" not in res

    _, res = roundtrip({"error": {"code": "E2", "message": "no stack"}})
    assert res["error"] == {"code": "E2", "message": "no stack"}, "absent stacktrace must stay absent"

    # void with an invocation id: the executor runs it, the caller hears nothing
    send_json(caller, {"type": "invokefunction", "invocation_id": str(uuid.uuid4()), "function_id": "raw::fn",
                       "data": {"v": 1}, "action": {"type": "void"}})
    req = recv_json(ex)
    assert req["data"] == {"v": 1, "_caller_worker_id": caller_id}
    if req.get("invocation_id"):
        send_json(ex, {"type": "invocationresult", "invocation_id": req["invocation_id"], "function_id": "raw::fn",
                       "result": "discarded"})
    expect_pong(caller, "after a void call (no invocationresult may be sent)")
    expect_silence(caller, 0.3)

    # executor disconnects while a call is pending -> invocation_stopped
    inv = str(uuid.uuid4())
    send_json(caller, {"type": "invokefunction", "invocation_id": inv, "function_id": "raw::fn", "data": {}})
    recv_json(ex)
    t0 = time.monotonic()
    ex.close()
    res = recv_json(caller)
    assert res["invocation_id"] == inv and res["error"]["code"] == "invocation_stopped", res
    assert time.monotonic() - t0 < 1.0
    # and the function is gone
    inv = str(uuid.uuid4())
    send_json(caller, {"type": "invokefunction", "invocation_id": inv, "function_id": "raw::fn", "data": {}})
    res = recv_json(caller)
    assert res["error"]["code"] == "function_not_found", res
    assert "raw::fn" in res["error"]["message"]
    caller.close()


def test_raw_worker_listing_and_metadata(engine, make_client):
    observer = make_client("raw-list-observer")
    ws, wid = raw(engine.url)
    # Without a reported pid a raw connection is not listed ...
    all_rows = sdk_call(observer, "engine::workers::list")["workers"]
    assert wid not in [w["id"] for w in all_rows]
    # ... except when asked for by id
    one = sdk_call(observer, "engine::workers::list", {"worker_id": wid})["workers"]
    assert [w["id"] for w in one] == [wid]
    send_json(ws, {"type": "invokefunction", "function_id": "engine::workers::register", "action": {"type": "void"},
                   "data": {"runtime": "rawtest", "version": "9.9.9", "name": "raw-meta", "os": "plan9",
                            "pid": 424242, "telemetry": {"language": "xx"}}})
    expect_pong(ws, "engine::workers::register via void must not reply")
    row = wait_for(lambda: (workers_named(observer, "raw-meta") or [None])[0], what="raw-meta row")
    assert row["id"] == wid
    assert row["runtime"] == "rawtest"
    assert row["version"] == "9.9.9"
    assert row["pid"] == 424242
    assert row["os"] == "plan9"
    # a sync register answers {success: true}
    inv = str(uuid.uuid4())
    send_json(ws, {"type": "invokefunction", "invocation_id": inv, "function_id": "engine::workers::register",
                   "data": {"runtime": "rawtest", "name": "raw-meta-2", "pid": 424243}})
    res = recv_json(ws)
    assert res["invocation_id"] == inv and res["result"] == {"success": True}, res
    ws.close()
    wait_for(lambda: not workers_named(observer, "raw-meta-2"), what="raw-meta-2 row to go away on close")


def test_only_the_executing_connection_can_complete_an_invocation(engine):
    ex, _ = raw(engine.url)
    caller, _ = raw(engine.url)
    intruder, _ = raw(engine.url)
    send_json(ex, {"type": "registerfunction", "id": "own::fn"})
    expect_pong(ex)
    inv = str(uuid.uuid4())
    send_json(caller, {"type": "invokefunction", "invocation_id": inv, "function_id": "own::fn", "data": {}})
    req = recv_json(ex)
    # Another connection answers with the executor's invocation id (and with the caller's id): ignored.
    for fake_id in {req["invocation_id"], inv}:
        send_json(intruder, {"type": "invocationresult", "invocation_id": fake_id, "function_id": "own::fn",
                             "result": "forged"})
    expect_pong(intruder)
    expect_silence(caller, 0.3)
    send_json(ex, {"type": "invocationresult", "invocation_id": req["invocation_id"], "function_id": "own::fn",
                   "result": "genuine"})
    res = recv_json(caller)
    assert res["invocation_id"] == inv and res["result"] == "genuine", res
    for w in (ex, caller, intruder):
        w.close()


def test_reused_invocation_id_does_not_collide(engine):
    ex, _ = raw(engine.url)
    caller, _ = raw(engine.url)
    send_json(ex, {"type": "registerfunction", "id": "reuse::fn"})
    expect_pong(ex)
    inv = str(uuid.uuid4())
    for n in (1, 2):
        send_json(caller, {"type": "invokefunction", "invocation_id": inv, "function_id": "reuse::fn", "data": {"n": n}})
    r1, r2 = recv_json(ex), recv_json(ex)
    assert r1["invocation_id"] != r2["invocation_id"], "two in-flight calls must not share an id at the executor"
    # answer in reverse order
    for r in (r2, r1):
        send_json(ex, {"type": "invocationresult", "invocation_id": r["invocation_id"], "function_id": "reuse::fn",
                       "result": {"n": r["data"]["n"]}})
    got = [recv_json(caller), recv_json(caller)]
    assert [g["invocation_id"] for g in got] == [inv, inv], got
    assert sorted(g["result"]["n"] for g in got) == [1, 2], got
    ex.close()
    caller.close()


def test_builtin_function_ids_cannot_be_taken_over(engine, make_client):
    ws, _ = raw(engine.url)
    send_json(ws, {"type": "registerfunction", "id": "engine::functions::list"})
    send_json(ws, {"type": "registerfunction", "id": "engine::workers::list"})
    expect_pong(ws)
    client = make_client("builtin-guard")
    res = sdk_call(client, "engine::functions::list")
    assert "functions" in res
    assert "workers" in sdk_call(client, "engine::workers::list")
    expect_silence(ws, 0.3)  # the raw worker was never asked to execute them
    ws.close()


# ------------------------------------------------------------------------------------------------ telemetry frames

OTLP_BODY = json.dumps({"resourceSpans": []}).encode()


def test_otlp_prefixed_binary_frames_accepted_on_root(engine):
    ws, _ = raw(engine.url)
    for prefix in (b"OTLP", b"MTRC", b"LOGS"):
        ws.send(prefix + OTLP_BODY)
        expect_pong(ws, f"after a {prefix!r} frame on /")
    ws.close()


def test_otel_path_accepts_telemetry_frames(engine, make_client):
    observer = make_client("otel-observer")
    before = {w["id"] for w in sdk_call(observer, "engine::workers::list")["workers"]}
    ws, _ = raw(engine.url, "/otel", expect_registered=False)
    expect_silence(ws, 0.3)  # no workerregistered on /otel
    for prefix in (b"OTLP", b"MTRC", b"LOGS"):
        ws.send(prefix + OTLP_BODY)
    ws.send(b"JUNKbinary")
    ws.send("text frames are ignored on /otel")
    assert ws.ping(b"x").wait(3), "/otel must answer WebSocket pings"
    expect_silence(ws, 0.3)
    assert ws.protocol.state.name == "OPEN"
    after = {w["id"] for w in sdk_call(observer, "engine::workers::list")["workers"]}
    assert after == before, "/otel connections do not create workers"
    ws.close()


# ------------------------------------------------------------------------------------------------ HTTP level


def http_upgrade_status(port: int, path: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\r\n", 1)[0].decode("latin-1")


def test_unknown_path_is_http_404(engine):
    for path in ("/nope", "/ws", "/otel/extra", "/api/v1"):
        status = http_upgrade_status(engine.port, path)
        assert status.startswith("HTTP/1.1 404"), f"{path}: {status!r}"
    with pytest.raises(InvalidStatus) as ei:
        connect(engine.url + "/definitely-not-here", open_timeout=3, proxy=None)
    assert ei.value.response.status_code == 404
    # known paths still upgrade
    assert http_upgrade_status(engine.port, "/").startswith("HTTP/1.1 101")
    assert http_upgrade_status(engine.port, "/otel").startswith("HTTP/1.1 101")
    assert http_upgrade_status(engine.port, "/?token=abc&x=1").startswith("HTTP/1.1 101")


# ------------------------------------------------------------------------------------------------ limits


@pytest.mark.engine(listeners=[{"max_message_bytes": 1048576}])
def test_oversized_message_closed_with_1009_others_unaffected(engine, make_client):
    serving = make_client("big-serving")
    serving.register_function("limit::f", lambda d: {"echo": d["v"]})
    caller = make_client("big-caller")
    wait_for_functions(caller, ["limit::f"])

    # Positive control: a message just under the limit is fine.
    ws, _ = raw(engine.url)
    pad = "x" * (1_000_000)
    send_json(ws, {"type": "ping", "pad": pad})
    assert recv_json(ws) == {"type": "pong"}

    # One frame over the limit.
    over = '{"type":"ping","pad":"' + "y" * (1_048_576 + 1024) + '"}'
    ws.send(over)
    with pytest.raises(ConnectionClosed) as ei:
        while True:
            ws.recv(timeout=5)
    assert ei.value.rcvd is not None, f"engine closed without a close frame: {ei.value!r}"
    assert ei.value.rcvd.code == 1009, f"close code {ei.value.rcvd.code}"

    # A fragmented message whose total exceeds the limit.
    ws2, _ = raw(engine.url)
    ws2.send(["z" * 400_000, "z" * 400_000, "z" * 400_000])
    with pytest.raises(ConnectionClosed) as ei2:
        while True:
            ws2.recv(timeout=5)
    assert ei2.value.rcvd is not None and ei2.value.rcvd.code == 1009, repr(ei2.value)

    # Other workers are unaffected.
    for i in range(5):
        assert sdk_call(caller, "limit::f", {"v": i}) == {"echo": i}
    ws3, _ = raw(engine.url)
    expect_pong(ws3)
    ws3.close()


# ------------------------------------------------------------------------------------------------ liveness


def _read_frames(buf: bytes):
    """Parse unmasked server frames; returns (frames, rest). frame = (opcode, payload)."""
    frames = []
    while True:
        if len(buf) < 2:
            return frames, buf
        b0, b1 = buf[0], buf[1]
        n = b1 & 0x7F
        off = 2
        if n == 126:
            if len(buf) < 4:
                return frames, buf
            n = struct.unpack(">H", buf[2:4])[0]
            off = 4
        elif n == 127:
            if len(buf) < 10:
                return frames, buf
            n = struct.unpack(">Q", buf[2:10])[0]
            off = 10
        if b1 & 0x80:
            raise AssertionError("server frames must not be masked")
        if len(buf) < off + n:
            return frames, buf
        frames.append((b0 & 0x0F, buf[off:off + n]))
        buf = buf[off + n:]


@pytest.mark.engine(listeners=[{"idle_timeout_ms": 1000}])
def test_half_open_client_is_closed_after_idle_timeout(engine, make_client):
    keeper = make_client("idle-keeper")  # an SDK worker on the same listener must survive
    keeper.register_function("idle::alive", lambda d: "yes")
    key = base64.b64encode(os.urandom(16)).decode()
    s = socket.create_connection(("127.0.0.1", engine.port), timeout=5)
    s.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{engine.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, "connection closed during the handshake"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    t0 = time.monotonic()
    assert head.startswith(b"HTTP/1.1 101"), head
    # One masked text frame registering a function, then silence forever.
    body = json.dumps({"type": "registerfunction", "id": "halfopen::fn"}).encode()
    mask = os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(body)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(body)))
    wait_for_functions(keeper, ["halfopen::fn"])
    pending = ThreadPoolExecutor(1)
    fut = pending.submit(sdk_call, keeper, "halfopen::fn", {}, timeout_ms=8000)
    accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    assert b"sec-websocket-accept: " + accept.lower() in head.lower(), head

    # Never write anything again (no pong, no close reply); just watch what the engine does.
    frames = []
    buf = rest
    close_at = None
    eof_at = None
    s.settimeout(0.05)
    while time.monotonic() - t0 < 6.0:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            eof_at = time.monotonic()
            break
        if not chunk:
            eof_at = time.monotonic()
            break
        buf += chunk
        got, buf = _read_frames(buf)
        for op, payload in got:
            frames.append((op, payload))
            if op == 0x8 and close_at is None:
                close_at = time.monotonic()
    s.close()
    ops = [op for op, _ in frames]
    assert ops and ops[0] == 0x1 and json.loads(frames[0][1])["type"] == "workerregistered", frames[:3]
    assert 0x9 in ops, f"the engine must send WebSocket Ping frames before giving up (opcodes seen: {ops})"
    assert eof_at is not None, f"half-open connection still open {time.monotonic() - t0:.1f}s after upgrade (opcodes {ops})"
    closed_at = close_at if close_at is not None else eof_at
    assert closed_at - t0 >= 0.8, f"closed too early: {closed_at - t0:.3f}s after upgrade with idle_timeout_ms=1000"
    assert closed_at - t0 <= 3.0, f"closed too late: {closed_at - t0:.3f}s after upgrade with idle_timeout_ms=1000"
    assert eof_at - t0 <= 5.0, f"TCP connection dropped only {eof_at - t0:.3f}s after upgrade"

    # The call pending on the half-open worker was stopped when the engine gave up on it.
    with pytest.raises(IIIInvocationError) as ei:
        fut.result(timeout=5)
    pending.shutdown()
    assert ei.value.code == "invocation_stopped", f"{ei.value.code}: {ei.value.message}"

    # The SDK worker on the same listener (which answers pings) is still connected and serving.
    observer = make_client("idle-observer")
    assert sdk_call(observer, "idle::alive") == "yes"
    assert workers_named(observer, "idle-keeper")[0]["id"] == keeper.worker_id
