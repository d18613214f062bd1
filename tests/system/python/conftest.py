"""Shared fixtures for the Python system tests.

Every test gets a fresh REAL engine process (``$III_BIN``, default ``build/release/iii``) started with a temporary
config on a free port. At teardown the engine must still be alive; it is stopped with SIGTERM and must exit 0.
SDK workers are created with the official ``iii-sdk==0.11.6`` and always shut down; subprocess workers are always
killed. The engine's log tail is attached to failing test reports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent.parent
NODE_DIR = HERE.parent / "node"
NODE_WORKER = NODE_DIR / "fixtures" / "worker.mjs"
PY_WORKER = HERE / "fixtures" / "py_worker.py"
III_BIN = Path(os.environ.get("III_BIN") or (REPO_ROOT / "build" / "release" / "iii")).resolve()

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
LISTEN_RE = re.compile(r"listening on [0-9.]+:(\d+)")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

_live_procs: set[subprocess.Popen] = set()


def _kill_all() -> None:
    for p in list(_live_procs):
        try:
            p.kill()
        except Exception:
            pass


import atexit  # noqa: E402

atexit.register(_kill_all)


def wait_for(fn: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``fn`` until it returns a truthy value (returned) or ``timeout`` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last_val: Any = None
    while True:
        try:
            last_val = fn()
            if last_val:
                return last_val
        except Exception as e:  # noqa: BLE001
            last_exc = e
        if time.monotonic() > deadline:
            detail = f"last error: {last_exc!r}" if last_exc else f"last value: {last_val!r}"
            raise AssertionError(f"timed out after {timeout}s waiting for {what} ({detail})")
        time.sleep(interval)


def config_yaml(listeners: list[dict[str, Any]] | None = None, level: str = "info", extra_yaml: str = "") -> str:
    listeners = listeners if listeners is not None else [{}]
    out = ["workers:"]
    for listener in listeners:
        cfg = {"host": "127.0.0.1", "port": 0, "idle_timeout_ms": 60000, "max_message_bytes": 67108864, **listener}
        out.append("  - name: iii-worker-manager")
        out.append("    config: { " + ", ".join(f"{k}: {v}" for k, v in cfg.items()) + " }")
    out.append("  - name: iii-observability")
    out.append(f"    config: {{ level: {level}, format: text }}")
    if extra_yaml:
        out.append(extra_yaml.rstrip("\n"))
    return "\n".join(out) + "\n"


class Engine:
    def __init__(
        self,
        listeners: list[dict[str, Any]] | None = None,
        level: str = "info",
        extra_yaml: str = "",
        dir: str | None = None,
    ) -> None:
        """``extra_yaml``: more worker entries appended to the config; ``dir``: run in this (caller-owned,
        not removed) directory instead of a fresh temporary one, e.g. to restart on the same storage."""
        self.listeners = listeners if listeners is not None else [{}]
        self.level = level
        self.extra_yaml = extra_yaml
        self.own_dir = dir is None
        self.dir = dir
        self.lines: list[str] = []
        self.ports: list[int] = []
        self.proc: subprocess.Popen | None = None
        self.stopped = False
        self._ready = threading.Event()
        self._lock = threading.Lock()

    # -- properties
    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def url_for(self, i: int) -> str:
        return f"ws://127.0.0.1:{self.ports[i]}"

    def log(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def log_tail(self, n: int = 80) -> str:
        with self._lock:
            return "\n".join(self.lines[-n:])

    def mark(self) -> int:
        with self._lock:
            return len(self.lines)

    def lines_since(self, mark: int) -> list[str]:
        with self._lock:
            return self.lines[mark:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- lifecycle
    def _reader(self, stream, prefix: str, parse: bool) -> None:
        for raw in iter(stream.readline, b""):
            line = ANSI_RE.sub("", raw.decode("utf-8", "replace").rstrip("\n"))
            with self._lock:
                self.lines.append(prefix + line)
                if parse:
                    m = LISTEN_RE.search(line)
                    if m:
                        self.ports.append(int(m.group(1)))
                        if len(self.ports) == len(self.listeners):
                            self._ready.set()
        stream.close()

    def start(self) -> "Engine":
        if not III_BIN.exists():
            raise RuntimeError(f"engine binary not found at {III_BIN} (build it, or set III_BIN)")
        if self.own_dir:
            self.dir = tempfile.mkdtemp(prefix="iii-sys-py-")
        self.config_path = Path(self.dir) / "config.yaml"
        self.config_path.write_text(config_yaml(self.listeners, self.level, self.extra_yaml))
        env = {**os.environ, "III_TELEMETRY_ENABLED": "false", "NO_COLOR": "1"}
        self.proc = subprocess.Popen(
            [str(III_BIN), "--config", str(self.config_path)],
            cwd=self.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _live_procs.add(self.proc)
        threading.Thread(target=self._reader, args=(self.proc.stdout, "", True), daemon=True).start()
        threading.Thread(target=self._reader, args=(self.proc.stderr, "[stderr] ", False), daemon=True).start()
        deadline = time.monotonic() + 10
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                why = (
                    f"engine exited early with {self.proc.returncode}"
                    if self.proc.poll() is not None
                    else f"no 'listening on host:port' line for {len(self.listeners)} listener(s) on stdout within 10 s"
                )
                self.kill()
                time.sleep(0.1)
                raise RuntimeError(f"{why}\nconfig:\n{self.config_path.read_text()}\nlog:\n{self.log()}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0, expect_code: int | None = 0) -> float:
        """Signal the engine and wait; asserts exit code 0 by default. Returns seconds taken."""
        assert self.proc is not None
        self.stopped = True
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"engine did not exit within {timeout}s after signal {sig}\nlog:\n{self.log_tail()}")
        finally:
            _live_procs.discard(self.proc)
        if expect_code is not None:
            assert code == expect_code, f"engine exit code {code} (expected {expect_code})\nlog:\n{self.log_tail()}"
        return time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait(5)
            except Exception:
                pass
            _live_procs.discard(self.proc)


class ChildWorker:
    """A worker in a separate process (Node or Python fixture) that prints READY {...} when usable."""

    def __init__(self, args: list[str], label: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.label = label
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            args,
            cwd=str(cwd),
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        _live_procs.add(self.proc)
        threading.Thread(target=self._reader, daemon=True).start()
        self.info: dict[str, Any] = {}

    def _reader(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()

    def wait_line(self, pattern: str, timeout: float = 15.0) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and seen == len(self.lines)):
                    raise AssertionError(
                        f"{self.label}: no line matching {pattern!r} within {timeout}s "
                        f"(exit={self.proc.poll()})\noutput:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(min(remaining, 0.1))

    def wait_ready(self, timeout: float = 15.0) -> dict[str, Any]:
        m = self.wait_line(r"^READY (.*)$", timeout)
        self.info = json.loads(m.group(1))
        return self.info

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is not None:
                _live_procs.discard(self.proc)


@dataclass
class Session:
    """Per-test bag of resources, cleaned up by the fixture."""

    engines: list[Engine] = field(default_factory=list)
    clients: list[Any] = field(default_factory=list)
    children: list[ChildWorker] = field(default_factory=list)


def _fast_options(name: str, **kw: Any):
    from iii import InitOptions, ReconnectionConfig

    opts = dict(
        worker_name=name,
        invocation_timeout_ms=10000,
        reconnection_config=ReconnectionConfig(
            initial_delay_ms=100, max_delay_ms=400, backoff_multiplier=1.5, jitter_factor=0.1, max_retries=-1
        ),
        # OTel state in the Python SDK is process-global and initialised once; keep it off in-process.
        # The subprocess Python workers run with OTel on (and so exercise /otel).
        otel={"enabled": False},
    )
    opts.update(kw)
    return InitOptions(**opts)


def _shutdown_client(client: Any, errors: list[str]) -> None:
    done = threading.Event()

    def run() -> None:
        try:
            client.shutdown()
        except Exception as e:  # noqa: BLE001
            errors.append(f"shutdown of {client!r} raised {e!r}")
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    if not done.wait(10):
        errors.append("iii-sdk shutdown() did not finish within 10 s")


@pytest.fixture
def session(request):
    s = Session()
    request.node._iii_session = s
    yield s
    errors: list[str] = []
    for c in s.clients:
        _shutdown_client(c, errors)
    for ch in s.children:
        ch.kill(signal.SIGKILL)
        try:
            ch.wait_exit(5)
        except Exception:
            pass
    for e in s.engines:
        if e.proc is None:  # never started (start() raised before Popen)
            continue
        if e.stopped:
            e.kill()
            continue
        if not e.alive():
            errors.append(f"engine is not alive at the end of the test (exit {e.proc.poll()})\nlog:\n{e.log_tail()}")
            e.kill()
            continue
        try:
            e.stop()
        except AssertionError as err:
            errors.append(str(err))
        finally:
            e.kill()
    for e in s.engines:
        if getattr(e, "dir", None) and e.own_dir:
            shutil.rmtree(e.dir, ignore_errors=True)
    if errors:
        pytest.fail("teardown problems:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture
def start_engine(session):
    def start(
        listeners: list[dict[str, Any]] | None = None, level: str = "info", extra_yaml: str = "", dir: str | None = None
    ) -> Engine:
        e = Engine(listeners, level, extra_yaml, dir)
        session.engines.append(e)
        return e.start()

    return start


@pytest.fixture
def engine(request, start_engine) -> Engine:
    marker = request.node.get_closest_marker("engine")
    kwargs = dict(marker.kwargs) if marker else {}
    return start_engine(**kwargs)


@pytest.fixture
def make_client(session, engine):
    """make_client(name, url=None, **InitOptions overrides) -> connected iii-sdk client (shut down at teardown)."""
    from iii import register_worker

    def make(name: str, url: str | None = None, **kw: Any):
        client = register_worker(url or engine.url, _fast_options(name, **kw))
        session.clients.append(client)
        assert client.get_connection_state() == "connected", f"{name} did not connect"
        wait_for(lambda: client.worker_id, timeout=5, what=f"{name} to receive workerregistered")
        return client

    return make


@pytest.fixture
def node_worker(session, engine):
    """node_worker(name, role, url=None) -> ChildWorker running tests/system/node/fixtures/worker.mjs (READY)."""

    def spawn(name: str, role: str, url: str | None = None, wait: bool = True) -> ChildWorker:
        if not (NODE_DIR / "node_modules" / "iii-sdk").exists():
            raise RuntimeError("tests/system/node/node_modules missing: run npm ci in tests/system/node")
        ch = ChildWorker(["node", str(NODE_WORKER), url or engine.url, name, role], f"node worker {name}", NODE_DIR)
        session.children.append(ch)
        if wait:
            ch.wait_ready()
        return ch

    return spawn


@pytest.fixture
def py_worker(session, engine):
    """py_worker(name, role, url=None) -> ChildWorker running fixtures/py_worker.py (READY)."""

    def spawn(name: str, role: str, url: str | None = None, wait: bool = True) -> ChildWorker:
        ch = ChildWorker(
            [sys.executable, str(PY_WORKER), url or engine.url, name, role],
            f"python worker {name}",
            HERE,
            env={"PYTHONUNBUFFERED": "1"},
        )
        session.children.append(ch)
        if wait:
            ch.wait_ready()
        return ch

    return spawn


# ------------------------------------------------------------------------------------------------ SDK helpers


def list_functions(client, include_internal: bool = False) -> list[dict[str, Any]]:
    res = client.trigger(
        {"function_id": "engine::functions::list", "payload": {"include_internal": include_internal}, "timeout_ms": 3000}
    )
    return res["functions"]


def wait_for_functions(client, ids: list[str], timeout: float = 5.0) -> None:
    def ok() -> bool:
        have = {f["function_id"] for f in list_functions(client)}
        return all(i in have for i in ids)

    wait_for(ok, timeout=timeout, what=f"functions {ids} to be listed")


def workers_named(client, name: str) -> list[dict[str, Any]]:
    res = client.trigger({"function_id": "engine::workers::list", "payload": {}, "timeout_ms": 3000})
    return [w for w in res["workers"] if w.get("name") == name]


def wait_worker_row(client, name: str, timeout: float = 5.0) -> dict[str, Any]:
    def one():
        rows = workers_named(client, name)
        return rows[0] if len(rows) == 1 else None

    return wait_for(one, timeout=timeout, what=f"exactly one worker row named {name}")


def pytest_configure(config):
    config.addinivalue_line("markers", "engine(listeners=..., level=..., extra_yaml=...): engine config for the `engine` fixture")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        s = getattr(item, "_iii_session", None)
        if s:
            for i, e in enumerate(s.engines):
                report.sections.append((f"engine {i} log (tail)", e.log_tail(120)))
            for ch in s.children:
                report.sections.append((f"{ch.label} output", "\n".join(ch.lines[-60:])))
