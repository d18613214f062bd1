"""Triggers, custom trigger types, condition functions, event trigger types and services through the official
Python iii-sdk==0.11.6 (and a Node trigger-type owner process for the cross-language owner restart)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from iii import TriggerConfig, TriggerHandler

from conftest import UUID_RE, wait_for, wait_for_functions, wait_worker_row

SETTLE = 0.3  # seconds given to the engine to (wrongly) do something we assert it does not do


def call(client, fid, payload=None, **kw):
    return client.trigger({"function_id": fid, "payload": payload if payload is not None else {}, "timeout_ms": 3000, **kw})


def list_triggers(client, include_internal: bool = False) -> list[dict[str, Any]]:
    res = call(client, "engine::triggers::list", {"include_internal": include_internal})
    assert isinstance(res.get("triggers"), list), res
    return res["triggers"]


def list_types(client, include_internal: bool = False) -> list[dict[str, Any]]:
    res = call(client, "engine::trigger-types::list", {"include_internal": include_internal})
    assert isinstance(res.get("trigger_types"), list), res
    return res["trigger_types"]


def triggers_of(client, trigger_type: str) -> list[dict[str, Any]]:
    return [t for t in list_triggers(client) if t["trigger_type"] == trigger_type]


def wait_state(client, trigger_id: str, state: str) -> dict[str, Any]:
    def ok():
        rows = [t for t in list_triggers(client) if t["id"] == trigger_id]
        return rows[0] if rows and rows[0]["state"] == state else None

    return wait_for(ok, what=f"trigger {trigger_id} to be {state}")


def stop_client(session, client) -> None:
    """Shut a client down inside the test (the session must not shut it down a second time)."""
    session.clients.remove(client)
    client.shutdown()


class Recorder(TriggerHandler):
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    async def register_trigger(self, config: TriggerConfig) -> None:
        with self.lock:
            self.seen.append(config.model_dump())

    async def unregister_trigger(self, config: TriggerConfig) -> None:  # never called by iii-sdk 0.11.6
        pass

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.seen)


# ------------------------------------------------------------------------------------------------ custom types


def test_python_custom_type_pending_bind_unregister_type_and_rebind(engine, make_client):
    reg = make_client("pytr-registrant")
    reg.register_function("pytr::h", lambda d: d)
    trig = reg.register_trigger(
        {"type": "test.py-type", "function_id": "pytr::h", "config": {"a": 1, "l": [None, "x"]}, "metadata": {"m": "x"}}
    )
    row = wait_for(lambda: (triggers_of(reg, "test.py-type") or [None])[0], what="the pending trigger to be listed")
    assert UUID_RE.match(row["id"])
    assert row == {
        "id": row["id"],
        "trigger_type": "test.py-type",
        "function_id": "pytr::h",
        "config": {"a": 1, "l": [None, "x"]},
        "metadata": {"m": "x"},
        "state": "pending",
    }

    owner = make_client("pytr-owner")
    rec = Recorder()
    owner.register_trigger_type({"id": "test.py-type", "description": "python owner"}, rec)
    wait_for(lambda: rec.snapshot(), what="the stored trigger to reach the Python owner")
    assert rec.snapshot() == [
        {"id": row["id"], "function_id": "pytr::h", "config": {"a": 1, "l": [None, "x"]}, "metadata": {"m": "x"}}
    ]
    wait_state(reg, row["id"], "bound")
    assert {"id": "test.py-type", "description": "python owner"} in list_types(reg)

    # unregister_trigger_type (Python sends only {type, id}): the connection survives, the trigger waits.
    owner_id = owner.worker_id
    mark = engine.mark()
    owner.unregister_trigger_type({"id": "test.py-type", "description": "python owner"})
    wait_for(lambda: all(t["id"] != "test.py-type" for t in list_types(reg)), what="test.py-type to disappear")
    assert wait_state(reg, row["id"], "pending")["config"] == {"a": 1, "l": [None, "x"]}
    assert owner.get_connection_state() == "connected"
    assert owner.worker_id == owner_id, "the owner did not reconnect"
    assert call(owner, "pytr::h", {"q": 1})["q"] == 1, "the owner's connection still works"
    assert wait_worker_row(reg, "pytr-owner")["id"] == owner_id
    bad = [line for line in engine.lines_since(mark) if "invalid" in line.lower() or "decode" in line.lower()]
    assert bad == [], "unregistertriggertype must be understood"

    # The type comes back on the same connection: the stored trigger is replayed.
    rec2 = Recorder()
    owner.register_trigger_type({"id": "test.py-type", "description": "python owner again"}, rec2)
    wait_for(lambda: rec2.snapshot(), what="the stored trigger to be replayed")
    assert [c["id"] for c in rec2.snapshot()] == [row["id"]]
    wait_state(reg, row["id"], "bound")

    # unregister() by id removes it.
    trig.unregister()
    wait_for(lambda: not triggers_of(reg, "test.py-type"), what="the trigger to be removed")


def test_python_trigger_without_config_and_removal_on_disconnect(session, engine, make_client):
    owner = make_client("pync-owner")
    rec = Recorder()
    owner.register_trigger_type({"id": "test.py-noconfig", "description": "d"}, rec)
    reg = make_client("pync-registrant")
    wait_for(lambda: any(t["id"] == "test.py-noconfig" for t in list_types(reg)), what="type listed")
    reg.register_trigger({"type": "test.py-noconfig", "function_id": "pync::h"})  # config None => absent on the wire
    wait_for(lambda: rec.snapshot(), what="the trigger to reach the owner")
    [seen] = rec.snapshot()
    assert seen["function_id"] == "pync::h"
    assert seen["config"] == {}, "an absent config is forwarded as {}"
    assert seen["metadata"] is None
    [row] = triggers_of(owner, "test.py-noconfig")
    assert row == {"id": seen["id"], "trigger_type": "test.py-noconfig", "function_id": "pync::h", "config": {}, "state": "bound"}

    stop_client(session, reg)
    wait_for(lambda: not triggers_of(owner, "test.py-noconfig"), what="the trigger to go with its registrant")


def test_trigger_replayed_to_restarted_node_owner_and_fired_into_python(engine, make_client, node_worker):
    reg = make_client("pyk-registrant")
    fired: list[dict[str, Any]] = []
    lock = threading.Lock()

    def handler(d):
        with lock:
            fired.append(d)
        return None

    reg.register_function("pyk::h", handler)
    reg.register_trigger({"type": "test.child-type", "function_id": "pyk::h", "config": {"n": 7}})
    row = wait_for(lambda: (triggers_of(reg, "test.child-type") or [None])[0], what="trigger listed")
    assert row["state"] == "pending", "registered before the Node owner exists"

    def registered(child):
        return [json.loads(line[len("REGISTERTRIGGER "):]) for line in child.lines if line.startswith("REGISTERTRIGGER ")]

    def fired_by(name):
        with lock:
            return [f for f in fired if f.get("fired_by") == name]

    owner1 = node_worker("pyk-owner-1", "trigger-owner")
    wait_for(lambda: registered(owner1), what="the Node owner to receive the stored trigger")
    assert registered(owner1) == [{"id": row["id"], "function_id": "pyk::h", "config": {"n": 7}}]
    wait_for(lambda: fired_by("pyk-owner-1"), what="the Node owner to fire the Python function")
    assert fired_by("pyk-owner-1")[0] == {
        "fired_by": "pyk-owner-1",
        "trigger_id": row["id"],
        "config": {"n": 7},
        "_caller_worker_id": owner1.info["worker_id"],
    }
    wait_state(reg, row["id"], "bound")

    owner1.kill()  # SIGKILL
    wait_for(lambda: all(t["id"] != "test.child-type" for t in list_types(reg)), what="the type to go with its owner")
    wait_state(reg, row["id"], "pending")

    owner2 = node_worker("pyk-owner-2", "trigger-owner")
    wait_for(lambda: registered(owner2), what="the stored trigger to be replayed to the new owner")
    assert registered(owner2) == [{"id": row["id"], "function_id": "pyk::h", "config": {"n": 7}}]
    wait_for(lambda: fired_by("pyk-owner-2"), what="the new owner to fire it")
    wait_state(reg, row["id"], "bound")


def test_python_cannot_register_builtin_trigger_types(engine, make_client):
    w = make_client("pyb-hijacker")
    rec = Recorder()
    mark = engine.mark()
    for tid in ("http", "cron", "engine::workers-available"):
        w.register_trigger_type({"id": tid, "description": f"hijacked {tid}"}, rec)
    w.register_function("pyb::h", lambda d: None)
    w.register_trigger({"type": "cron", "function_id": "pyb::h", "config": {"expression": "* * * * * *"}})
    row = wait_for(lambda: (triggers_of(w, "cron") or [None])[0], what="the cron trigger to be listed")
    assert row["state"] == "pending", "cron triggers wait for the iii-cron worker"
    assert rec.snapshot() == [], "a built-in type is never forwarded to a worker"
    # The engine's log reaches the test through a reader thread: wait for the lines, which can
    # trail the trigger listing (they did under ASan).
    def refused() -> list[str]:
        return [line for line in engine.lines_since(mark) if "refused" in line]

    def names_all(lines: list[str]) -> bool:
        return all(any(f"'{tid}'" in line for line in lines)
                   for tid in ("http", "cron", "engine::workers-available"))

    wait_for(lambda: names_all(refused()), what="a 'refused' line for each built-in type")
    lines = refused()
    for tid in ("http", "cron", "engine::workers-available"):
        assert any(f"'{tid}'" in line for line in lines), f"a 'refused' line names {tid}: {lines}"
    types = list_types(w, include_internal=True)
    assert not [t for t in types if t["description"].startswith("hijacked")], types
    assert {"engine::functions-available", "engine::workers-available"} <= {t["id"] for t in types}


# ------------------------------------------------------------------------------------------------ conditions


def test_python_condition_functions_on_functions_available(engine, make_client):
    obs = make_client("pyc-observer")
    calls: dict[str, list[Any]] = {"none": [], "false": [], "true": [], "cond_none": [], "cond_false": []}
    lock = threading.Lock()

    def recorder(key, ret=None):
        def fn(d):
            with lock:
                calls[key].append((time.monotonic(), d))
            return ret

        return fn

    obs.register_function("pyc::cond_none", recorder("cond_none", None))  # Python omits `result` for None
    obs.register_function("pyc::cond_false", recorder("cond_false", False))
    obs.register_function("pyc::cond_true", lambda d: True)
    obs.register_function("pyc::h_none", recorder("none"))
    obs.register_function("pyc::h_false", recorder("false"))
    obs.register_function("pyc::h_true", recorder("true"))
    for name in ("none", "false", "true"):
        obs.register_trigger(
            {
                "type": "engine::functions-available",
                "function_id": f"pyc::h_{name}",
                "config": {"condition_function_id": f"pyc::cond_{name}"},
            }
        )
    wait_for(
        lambda: len([t for t in triggers_of(obs, "engine::functions-available") if t["state"] == "bound"]) == 3,
        what="the three triggers bound",
    )
    time.sleep(SETTLE)
    with lock:
        for v in calls.values():
            v.clear()

    other = make_client("pyc-other")
    t0 = time.monotonic()
    other.register_function("pyc::new", lambda d: 1)

    def seen_new(key):
        with lock:
            return [(t, d) for t, d in calls[key] if any(f["function_id"] == "pyc::new" for f in d["functions"])]

    wait_for(lambda: seen_new("none") and seen_new("true") and seen_new("cond_false"), timeout=3,
             what="the handlers and conditions to see pyc::new")
    at, payload = seen_new("none")[0]
    assert at - t0 < 1.5, f"functions-available fired {at - t0:.2f}s after the change (must be prompt)"
    assert payload["event"] == "functions_changed"
    assert set(payload) == {"event", "functions"}
    ids = {f["function_id"] for f in payload["functions"]}
    assert {"pyc::new", "engine::functions::list", "pyc::h_none"} <= ids
    cond_payload = seen_new("cond_none")[0][1]
    assert cond_payload == payload, "the condition gets the same payload as the handler"
    time.sleep(SETTLE)
    with lock:
        assert calls["false"] == [], "condition returned False: handler skipped"
    assert len(seen_new("none")) == 1, "one event per change"
