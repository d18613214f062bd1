"""RBAC listeners with the official Python SDK: header token auth, exposure, FORBIDDEN, hooks, prefixes,
middleware (engine-core.md §6). The Node suite (tests/system/node/rbac.test.mjs) covers every rule; this
checks the Python SDK's view of the same behaviour."""

from __future__ import annotations

import json

import pytest
from iii import IIIForbiddenError, IIIInvocationError
from websockets.sync.client import connect

from conftest import wait_for, wait_for_functions

RBAC = (
    "{auth_function_id: test::py::auth, on_function_registration_function_id: test::py::on-fn, "
    "expose_functions: ['match(\"public::*\")', {metadata: {tier: free}}]}"
)
LISTENERS = [{}, {"rbac": RBAC}, {"middleware_function_id": "test::py::middleware"}]


def call(client, fid, payload=None, **kw):
    return client.trigger({"function_id": fid, "payload": payload if payload is not None else {}, **kw})


def listed(client):
    return sorted(f["function_id"] for f in call(client, "engine::functions::list")["functions"])


def start_trusted(make_client):
    t = make_client("py-trusted")
    seen = {"auth": [], "fn": [], "mw": []}

    def auth(inp):
        seen["auth"].append(inp)
        token = inp["headers"].get("x-test-token")
        if token == "py-user":
            return {"allowed_functions": ["engine::functions::list"], "context": {"user": "py"}}
        if token == "py-prefixed":
            return {"function_registration_prefix": "py-prefix"}
        raise Exception("unknown token")

    def on_fn(inp):
        seen["fn"].append(inp)
        if inp["function_id"].startswith("deny::"):
            raise Exception("no")
        if inp["function_id"] == "tagme":
            return {"metadata": {"tier": "free"}}
        return {}

    def middleware(inp):
        seen["mw"].append(inp)
        if inp["function_id"] == "public::refused":
            raise Exception("middleware says no")
        return t.trigger({"function_id": inp["function_id"], "payload": {**inp["payload"], "via": "py-middleware"}})

    t.register_function("test::py::auth", auth)
    t.register_function("test::py::on-fn", on_fn)
    t.register_function("test::py::middleware", middleware)
    t.register_function("public::echo", lambda d: {"echo": d})
    t.register_function("private::secret", lambda d: "secret")
    t.register_function("svc::free", lambda d: "free", metadata={"tier": "free"})
    wait_for_functions(t, ["test::py::auth", "test::py::on-fn", "test::py::middleware", "public::echo", "svc::free"])
    return t, seen


@pytest.mark.engine(listeners=LISTENERS)
def test_python_sdk_on_an_rbac_listener(engine, make_client):
    t, seen = start_trusted(make_client)
    c = make_client("py-rbac", url=engine.url_for(1), headers={"x-test-token": "py-user"})
    assert any(a["headers"].get("x-test-token") == "py-user" and a["ip_address"] == "127.0.0.1" for a in seen["auth"])

    assert call(c, "public::echo", {"x": 1})["echo"]["x"] == 1
    assert call(c, "svc::free") == "free"
    with pytest.raises(IIIForbiddenError) as err:
        call(c, "private::secret")
    assert err.value.code == "FORBIDDEN"
    assert "private::secret" in str(err.value)
    assert listed(c) == ["public::echo", "svc::free"]
    call(c, "engine::log::info", {"message": "python rbac client"})

    # Registration hook: allowed, refused, metadata rewritten (which exposes it by the metadata rule).
    c.register_function("client::py", lambda d: {"py": d})
    c.register_function("deny::py", lambda d: 1)
    c.register_function("tagme", lambda d: "tagged")
    wait_for_functions(t, ["client::py", "tagme"])
    call(c, "engine::log::debug", {"message": "flush"})  # processed after the registrations
    assert "deny::py" not in listed(t)
    assert call(t, "client::py", 5) == {"py": 5}
    assert call(c, "tagme") == "tagged", "the hook's metadata exposes it"
    assert next(x for x in seen["fn"] if x["function_id"] == "client::py")["context"] == {"user": "py"}


@pytest.mark.engine(listeners=LISTENERS)
def test_python_prefix_and_refused_auth(engine, make_client):
    t, _ = start_trusted(make_client)
    p = make_client("py-prefixed", url=engine.url_for(1), headers={"x-test-token": "py-prefixed"})
    p.register_function("echo", lambda d: {"prefixed": d})
    wait_for_functions(t, ["py-prefix::echo"])
    assert call(t, "py-prefix::echo", 2) == {"prefixed": 2}
    assert "echo" not in listed(t)

    # A bad token never gets a worker id (the SDK keeps retrying; the engine closes each attempt).
    from iii import register_worker

    from conftest import _fast_options

    bad = register_worker(engine.url_for(1), _fast_options("py-bad", headers={"x-test-token": "nope"}))
    try:
        wait_for(lambda: "AUTH_ERROR" in engine.log() or "refused by auth function" in engine.log(), what="refusal")
        assert not bad.worker_id
    finally:
        bad.shutdown()


@pytest.mark.engine(listeners=LISTENERS)
def test_python_middleware_changes_and_refuses(engine, make_client):
    start_trusted(make_client)
    m = make_client("py-mw", url=engine.url_for(2))
    assert call(m, "public::echo", {"a": 1})["echo"]["via"] == "py-middleware"
    with pytest.raises(IIIInvocationError) as err:
        call(m, "public::refused")
    assert "middleware says no" in str(err.value)


def log_frame(body: str) -> bytes:
    rec = {"body": {"stringValue": body}, "timeUnixNano": 1700000000000000000}
    return b"LOGS" + json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [rec]}]}]}).encode()


# engine-core.md §9: `/otel` runs the listener's auth handshake. A refused telemetry socket stays
# open and its frames are dropped (the SDKs send no credentials there; closing it would make them
# reconnect, and re-run the auth function, forever): nothing unauthenticated reaches the store.
@pytest.mark.engine(listeners=[{}, {"rbac": "{auth_function_id: test::py::otel-auth}"}],
                    level="info, exporter: memory")
def test_otel_on_an_rbac_listener_runs_the_auth_function(engine, make_client):
    owner = make_client("py-otel-auth")
    seen = []

    def auth(inp):
        seen.append(inp)
        if inp["query_params"].get("token") == ["ok"]:
            return {}
        raise Exception("no token")

    owner.register_function("test::py::otel-auth", auth)
    wait_for_functions(owner, ["test::py::otel-auth"])

    def bodies():
        return [l["body"] for l in call(owner, "engine::logs::list", {"limit": 100})["logs"]]

    with connect(engine.url_for(1) + "/otel") as refused, connect(engine.url_for(1) + "/otel?token=ok") as admitted:
        # Sent at once: frames that arrive while the auth function runs wait for its answer.
        refused.send(log_frame("unauthenticated 1"))
        admitted.send(log_frame("authenticated 1"))
        wait_for(lambda: "authenticated 1" in bodies(), timeout=10, what="the admitted socket's log")
        wait_for(lambda: len(seen) == 2, timeout=10, what="the auth function for both sockets")
        refused.send(log_frame("unauthenticated 2"))
        admitted.send(log_frame("authenticated 2"))
        wait_for(lambda: "authenticated 2" in bodies(), timeout=10, what="the second admitted log")
        refused.ping().wait(5)  # still open
    assert not [b for b in bodies() if b.startswith("unauthenticated")], bodies()
    assert sorted(tuple(s["query_params"].get("token", [])) for s in seen) == [(), ("ok",)]
    # `/otel` on the listener without a policy needs nothing.
    with connect(engine.url + "/otel") as open_socket:
        open_socket.send(log_frame("no policy"))
        wait_for(lambda: "no policy" in bodies(), timeout=10, what="the log on the open listener")
    assert engine.alive()
