"""iii-pubsub and iii-cron through the official Python iii-sdk==0.11.6: publish to 0, 1 and 3 subscribers,
unsubscribing one of two, publish errors, refused subscriptions; every-second cron ticks and their payload, a
condition function that skips ticks, refused expressions (trigger state, error and engine log), and two engines
sharing one file_based store firing each tick once."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import threading
from datetime import datetime
from typing import Any

import pytest
from iii import IIIInvocationError

from conftest import wait_for, wait_for_functions

PUBSUB = "  - name: iii-pubsub\n    config: { adapter: { name: local } }"
CRON = "  - name: iii-cron"
SETTLE = 0.3  # seconds given to the engine to (wrongly) deliver something we assert it does not

SCHEDULED_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")
ACTUAL_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?\+00:00$")

pubsub_engine = pytest.mark.engine(extra_yaml=PUBSUB)
cron_engine = pytest.mark.engine(extra_yaml=CRON)


def call(client, fid: str, payload: Any) -> Any:
    return client.trigger({"function_id": fid, "payload": payload, "timeout_ms": 5000})


def triggers(client) -> list[dict[str, Any]]:
    return call(client, "engine::triggers::list", {})["triggers"]


def trigger_rows(client, function_id: str) -> list[dict[str, Any]]:
    return [t for t in triggers(client) if t["function_id"] == function_id]


def wait_bound(client, function_id: str, n: int = 1) -> list[dict[str, Any]]:
    def ok():
        rows = trigger_rows(client, function_id)
        return rows if len(rows) == n and all(r["state"] == "bound" for r in rows) else None

    return wait_for(ok, what=f"{n} bound trigger(s) of {function_id}")


class Inbox:
    """Thread-safe record of what one function received."""

    def __init__(self, result: Any = None) -> None:
        self.items: list[Any] = []
        self.lock = threading.Lock()
        self.result = result

    def __call__(self, data: Any) -> Any:
        with self.lock:
            self.items.append(data)
        return self.result

    def snapshot(self) -> list[Any]:
        with self.lock:
            return list(self.items)

    def count(self) -> int:
        with self.lock:
            return len(self.items)


# ------------------------------------------------------------------------------------------------ pubsub


@pubsub_engine
def test_publish_to_zero_one_and_three_subscribers(make_client):
    c = make_client("ps-subscribers")
    assert call(c, "publish", {"topic": "nobody", "data": 1}) is None

    inboxes = {name: Inbox() for name in ("a", "b", "c", "solo", "other")}
    for name, inbox in inboxes.items():
        c.register_function(f"ps::{name}", inbox)
    for name in ("a", "b", "c"):
        c.register_trigger({"type": "subscribe", "function_id": f"ps::{name}", "config": {"topic": "orders"}})
    c.register_trigger({"type": "subscribe", "function_id": "ps::solo", "config": {"topic": "solo"}})
    c.register_trigger({"type": "subscribe", "function_id": "ps::other", "config": {"topic": "other"}})
    for name in inboxes:
        wait_bound(c, f"ps::{name}")

    message = {"id": 7, "items": [1, "two", None], "nested": {"ok": True}}
    assert call(c, "publish", {"topic": "orders", "data": message}) is None
    for name in ("a", "b", "c"):
        wait_for(lambda name=name: inboxes[name].count() == 1, what=f"ps::{name} to get the message")
        assert inboxes[name].snapshot() == [message], "each subscriber gets the data verbatim"

    assert call(c, "publish", {"topic": "solo", "data": "just one"}) is None
    wait_for(lambda: inboxes["solo"].count() == 1, what="the single subscriber")
    assert inboxes["solo"].snapshot() == ["just one"]

    # A fence on the unrelated topic: by the time it arrives, nothing else was delivered to it.
    assert call(c, "publish", {"topic": "other", "data": "fence"}) is None
    wait_for(lambda: inboxes["other"].count() == 1, what="the fence message")
    assert inboxes["other"].snapshot() == ["fence"]
    assert [inboxes[n].count() for n in ("a", "b", "c", "solo")] == [1, 1, 1, 1]


@pubsub_engine
def test_unsubscribing_one_of_two_keeps_the_other(make_client):
    c = make_client("ps-unsub")
    first, second = Inbox(), Inbox()
    c.register_function("ps::first", first)
    c.register_function("ps::second", second)
    t1 = c.register_trigger({"type": "subscribe", "function_id": "ps::first", "config": {"topic": "news"}})
    c.register_trigger({"type": "subscribe", "function_id": "ps::second", "config": {"topic": "news"}})
    wait_bound(c, "ps::first")
    wait_bound(c, "ps::second")

    call(c, "publish", {"topic": "news", "data": 1})
    wait_for(lambda: first.count() == 1 and second.count() == 1, what="both subscribers")

    t1.unregister()
    wait_for(lambda: not trigger_rows(c, "ps::first"), what="the first subscription to go")
    call(c, "publish", {"topic": "news", "data": 2})
    call(c, "publish", {"topic": "news", "data": 3})
    wait_for(lambda: second.count() == 3, what="the remaining subscriber to get both messages")
    assert sorted(second.snapshot()) == [1, 2, 3]
    threading.Event().wait(SETTLE)
    assert first.snapshot() == [1], "the unsubscribed function gets nothing more"


@pubsub_engine
def test_publish_errors_and_refused_subscriptions(engine, make_client):
    c = make_client("ps-errors")
    for payload in ({"data": 1}, {"topic": "", "data": 1}, {"topic": None}):
        with pytest.raises(IIIInvocationError) as ei:
            call(c, "publish", payload)
        assert (ei.value.code, ei.value.message) == ("topic_not_set", "Topic is not set"), payload
    with pytest.raises(IIIInvocationError) as ei:
        call(c, "publish", {"topic": 5})
    assert ei.value.code == "deserialization_error"

    mark = engine.mark()
    c.register_function("ps::bad", Inbox())
    c.register_trigger({"type": "subscribe", "function_id": "ps::bad", "config": {"topic": ""}})
    c.register_trigger({"type": "subscribe", "function_id": "ps::bad", "config": {}})
    rows = wait_for(
        lambda: (r := trigger_rows(c, "ps::bad")) and len(r) == 2 and all(x["state"] == "failed" for x in r) and r,
        what="both subscriptions to be refused",
    )
    for r in rows:
        assert r["error"].startswith("Topic is not set"), r
    wait_for(lambda: sum("refused: Topic is not set" in l for l in engine.lines_since(mark)) == 2,
             what="the refusals in the engine log")
    # The engine is fine: a good subscription still works.
    good = Inbox()
    c.register_function("ps::good", good)
    c.register_trigger({"type": "subscribe", "function_id": "ps::good", "config": {"topic": "t"}})
    wait_bound(c, "ps::good")
    call(c, "publish", {"topic": "t", "data": "ok"})
    wait_for(lambda: good.snapshot() == ["ok"], what="delivery after the refusals")


@pytest.mark.parametrize(
    "entry, message",
    [
        ("  - name: iii-pubsub\n    config:\n      adapter: { name: redis, config: { redis_url: 'http://h' } }",
         "config.yaml:8: worker 'iii-pubsub': adapter.config.redis_url: invalid redis_url 'http://h'"),
        ("  - name: iii-pubsub\n    config:\n      adapter:\n        name: kafka",
         "config.yaml:9: worker 'iii-pubsub': Adapter factory 'kafka' not found. Available: [local, redis]"),
        ("  - name: iii-cron\n    config:\n      adapter:\n        name: redis\n        config: { redis_url: 'redis://h:0' }",
         "config.yaml:10: worker 'iii-cron': adapter.config.redis_url: invalid redis_url 'redis://h:0'"),
        ("  - name: iii-cron\n    config:\n      adapter:\n        name: kv\n        config: { lock_ttl: 5 }",
         "config.yaml:10: worker 'iii-cron': unknown key 'lock_ttl'"),
    ],
)
def test_bad_adapter_config_names_file_and_line(entry, message):
    from conftest import III_BIN, config_yaml

    d = tempfile.mkdtemp(prefix="iii-sys-py-")
    try:
        path = f"{d}/config.yaml"
        with open(path, "w") as f:
            f.write(config_yaml(extra_yaml=entry))
        p = subprocess.run([str(III_BIN), "--config", path], cwd=d, capture_output=True, text=True, timeout=10)
        assert p.returncode == 2, f"exit {p.returncode}\nstdout={p.stdout!r}\nstderr={p.stderr!r}"
        assert f"{path.rsplit('/', 1)[0]}/{message}" in p.stderr, p.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ cron


def parse_time(s: str) -> datetime:
    return datetime.fromisoformat(s)


@cron_engine
def test_every_second_cron_with_its_payload(make_client):
    c = make_client("cron-every-second")
    ticks = Inbox()
    c.register_function("cron::tick", ticks)
    trig = c.register_trigger({"type": "cron", "function_id": "cron::tick", "config": {"expression": "* * * * * *"}})
    row = wait_bound(c, "cron::tick")[0]
    wait_for(lambda: ticks.count() >= 3, timeout=6, what="three ticks")
    trig.unregister()
    got = ticks.snapshot()
    for p in got:
        assert list(p.keys()) == ["trigger", "job_id", "scheduled_time", "actual_time"], p
        assert p["trigger"] == "cron"
        assert p["job_id"] == row["id"]
        assert SCHEDULED_RE.match(p["scheduled_time"]), p
        assert ACTUAL_RE.match(p["actual_time"]), p
        late = (parse_time(p["actual_time"]) - parse_time(p["scheduled_time"])).total_seconds()
        assert 0 <= late < 0.5, f"fired {late}s after its tick: {p}"
    seconds = [parse_time(p["scheduled_time"]) for p in got[:3]]
    assert [(b - a).total_seconds() for a, b in zip(seconds, seconds[1:])] == [1.0, 1.0], "one tick per second"


@cron_engine
def test_condition_function_skips_ticks(make_client):
    c = make_client("cron-condition")
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()

    def every_other(payload):
        with lock:
            seen.append(payload)
            return len(seen) % 2 == 0  # false on the 1st, 3rd, ... tick

    ticks = Inbox()
    c.register_function("cron::cond", every_other)
    c.register_function("cron::gated", ticks)
    c.register_trigger({
        "type": "cron",
        "function_id": "cron::gated",
        "config": {"expression": "* * * * * *", "condition_function_id": "cron::cond"},
    })
    wait_bound(c, "cron::gated")
    wait_for(lambda: ticks.count() >= 2, timeout=7, what="two ticks past the condition")
    with lock:
        conditions = list(seen)
    got = ticks.snapshot()
    # The condition saw every tick with the handler's payload; the handler only the even ones.
    assert conditions[0]["trigger"] == "cron"
    assert [p["scheduled_time"] for p in got[:2]] == [conditions[1]["scheduled_time"], conditions[3]["scheduled_time"]]
    assert got[0] == conditions[1]


@cron_engine
def test_invalid_expressions_are_refused(engine, make_client):
    c = make_client("cron-invalid")
    c.register_function("cron::never", Inbox())
    cases = {
        "": "Cron expression is required",
        "*/5 * * * *": "Invalid cron expression '*/5 * * * *': 5-field crontab expressions are not supported",
        "61 * * * * *": "Invalid cron expression '61 * * * * *': seconds: 61 is out of range (0-59)",
        "0 0 0 * * 0": "Invalid cron expression '0 0 0 * * 0': day-of-week: 0 is out of range (1-7, Sunday = 1)",
        "0 0 0 * * MON#2": "Invalid cron expression '0 0 0 * * MON#2': day-of-week: unknown name 'MON#2'",
        "@annually": "Invalid cron expression '@annually': unknown shorthand '@annually'",
    }
    mark = engine.mark()
    for expr in cases:
        c.register_trigger({"type": "cron", "function_id": "cron::never", "config": {"expression": expr}})
    c.register_trigger({"type": "cron", "function_id": "cron::never", "config": {}})
    rows = wait_for(lambda: (r := trigger_rows(c, "cron::never")) and len(r) == len(cases) + 1 and r,
                    what="every trigger to be listed")
    by_expr = {r["config"].get("expression", None): r for r in rows}
    assert by_expr[None]["state"] == "failed" and by_expr[None]["error"] == "Cron expression is required"
    for expr, message in cases.items():
        assert by_expr[expr]["state"] == "failed", by_expr[expr]
        assert by_expr[expr]["error"].startswith(message), by_expr[expr]
    wait_for(lambda: sum("refused: " in l for l in engine.lines_since(mark)) >= len(cases) + 1,
             what="a refusal line per trigger in the engine log")
    log = "\n".join(engine.lines_since(mark))
    assert "refused: Invalid cron expression '*/5 * * * *'" in log


@pytest.mark.engine(listeners=[{"invocation_timeout_ms": 1500}], extra_yaml=CRON)
def test_failing_and_hung_handlers_do_not_stop_the_job(engine, make_client):
    c = make_client("cron-hang")
    calls: list[dict[str, Any]] = []
    lock = threading.Lock()

    async def handler(payload):
        with lock:
            calls.append(payload)
            n = len(calls)
        if n == 1:
            raise RuntimeError("the first tick fails")
        if n == 2:
            await asyncio.sleep(2)  # hangs past the engine's 1.5 s deadline (ends before teardown)
        return None

    mark = engine.mark()
    c.register_function("cron::flaky", handler)
    c.register_trigger({"type": "cron", "function_id": "cron::flaky", "config": {"expression": "* * * * * *"}})
    wait_for(lambda: len(calls) >= 3, timeout=9, what="a tick after the failure and the hang")
    with lock:
        t = [parse_time(p["scheduled_time"]) for p in calls[:3]]
    assert (t[1] - t[0]).total_seconds() == 1.0, "a failed run does not delay the next tick"
    # The hung run overlapped the next tick, which is skipped; the engine deadline ended the run.
    assert 2.0 <= (t[2] - t[1]).total_seconds() <= 3.0, t
    wait_for(lambda: any("handler failed: timeout" in l for l in engine.lines_since(mark)), what="the timeout in the log")
    assert any("handler failed: invocation_failed" in l for l in engine.lines_since(mark))


def test_two_engines_on_one_file_based_store_fire_each_tick_once(start_engine, session):
    from iii import register_worker

    from conftest import _fast_options

    shared = tempfile.mkdtemp(prefix="iii-cron-shared-")
    try:
        cron = (
            "  - name: iii-cron\n"
            "    config: { adapter: { name: kv, config: "
            f"{{ store_method: file_based, file_path: {json.dumps(shared + '/locks.db')}, lock_ttl_ms: 30000 }} }} }}"
        )
        engines = [start_engine(extra_yaml=cron), start_engine(extra_yaml=cron)]
        calls: list[tuple[int, str]] = []
        lock = threading.Lock()
        clients = []
        for i, e in enumerate(engines):
            client = register_worker(e.url, _fast_options(f"cron-replica-{i}"))
            session.clients.append(client)

            def handler(payload, i=i):
                with lock:
                    calls.append((i, payload["scheduled_time"]))

            client.register_function("cron::replica", handler)
            client.register_trigger({"type": "cron", "function_id": "cron::replica", "config": {"expression": "* * * * * *"}})
            clients.append(client)
        for client in clients:
            wait_bound(client, "cron::replica")

        def distinct() -> int:
            with lock:
                return len({t for _, t in calls})

        wait_for(lambda: distinct() >= 5, timeout=9, what="five ticks")
        with lock:
            snapshot = list(calls)
        ticks = [t for _, t in snapshot]
        duplicated = {t for t in ticks if ticks.count(t) > 1}
        assert not duplicated, f"ticks fired by both engines: {sorted(duplicated)} in {snapshot}"
        assert len(ticks) >= 5
    finally:
        shutil.rmtree(shared, ignore_errors=True)
