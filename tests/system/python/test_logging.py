"""Engine logging: level/format from the config and the CLI, log output that cannot block the engine
(a stdout pipe nobody reads), shutdown flushing the logs, and rate-limited bad-frame warnings."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import termios
import threading
import time
import uuid
from pathlib import Path

import pytest
from websockets.sync.client import connect

from conftest import III_BIN, LISTEN_RE, _live_procs, config_yaml, wait_for

F_SETPIPE_SZ = 1031  # Linux fcntl: set a pipe's capacity
PIPE_BYTES = 4096


# ------------------------------------------------------------------------------------------------ helpers


class RawEngine:
    """An engine whose stdout is a pipe the test reads only when it chooses to."""

    def __init__(self, tmp: Path, yaml: str, args: list[str] = ()) -> None:
        self.config = tmp / "config.yaml"
        self.config.write_text(yaml)
        env = {**os.environ, "III_TELEMETRY_ENABLED": "false", "NO_COLOR": "1"}
        self.proc = subprocess.Popen(
            [str(III_BIN), "--config", str(self.config), *args],
            cwd=tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _live_procs.add(self.proc)
        self.out_fd = self.proc.stdout.fileno()
        fcntl.fcntl(self.out_fd, F_SETPIPE_SZ, PIPE_BYTES)  # fills after ~40 lines
        self.stderr = b""
        self._err_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._err_thread.start()
        self.head = b""  # stdout read before the pipe was left alone
        self.rest: list[str] = []  # stdout read by drain()
        self._drained_lines = threading.Condition()

    def _read_stderr(self) -> None:
        self.stderr = self.proc.stderr.read()

    def read_port(self, timeout: float = 10.0) -> int:
        """Reads stdout (unbuffered, so nothing past what is needed is consumed) up to the listening line."""
        deadline = time.monotonic() + timeout
        os.set_blocking(self.out_fd, False)
        try:
            while True:
                m = LISTEN_RE.search(self.head.decode("utf-8", "replace"))
                if m:
                    return int(m.group(1))
                assert time.monotonic() < deadline, f"no listening line; stdout so far: {self.head!r}"
                assert self.proc.poll() is None, f"engine exited: {self.proc.returncode} {self.stderr!r}"
                try:
                    chunk = os.read(self.out_fd, 4096)
                except BlockingIOError:
                    chunk = None
                if chunk:
                    self.head += chunk
                else:
                    threading.Event().wait(0.02)
        finally:
            os.set_blocking(self.out_fd, True)

    def pipe_fill(self) -> int:
        """Bytes waiting in the stdout pipe."""
        buf = bytearray(4)
        fcntl.ioctl(self.out_fd, termios.FIONREAD, buf)
        return int.from_bytes(buf, "little")

    def drain(self) -> None:
        """From now on, read stdout to the end in a thread."""

        def run() -> None:
            for raw in iter(self.proc.stdout.readline, b""):
                with self._drained_lines:
                    self.rest.append(raw.decode("utf-8", "replace").rstrip("\n"))
                    self._drained_lines.notify_all()

        self._drain_thread = threading.Thread(target=run, daemon=True)
        self._drain_thread.start()

    def wait_line(self, pattern: str, timeout: float = 10.0) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._drained_lines:
            while True:
                for line in self.rest:
                    m = rx.search(line)
                    if m:
                        return m
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no line matching {pattern!r}; tail: {[l[:160] for l in self.rest[-5:]]}"
                self._drained_lines.wait(remaining)

    def stop(self, timeout: float = 10.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            _live_procs.discard(self.proc)
            self._err_thread.join(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        _live_procs.discard(self.proc)


@pytest.fixture
def raw_engine():
    made: list[RawEngine] = []
    dirs: list[tempfile.TemporaryDirectory] = []

    def start(level: str = "trace", fmt: str = "text", args: list[str] = (), port: int = 0) -> RawEngine:
        d = tempfile.TemporaryDirectory(prefix="iii-sys-log-")
        dirs.append(d)
        yaml = config_yaml([{"port": port}], level).replace("format: text", f"format: {fmt}")
        e = RawEngine(Path(d.name), yaml, list(args))
        made.append(e)
        return e

    yield start
    for e in made:
        e.kill()
    for d in dirs:
        d.cleanup()


def ws_connect(port: int):
    ws = connect(f"ws://127.0.0.1:{port}/", max_size=None, open_timeout=5, proxy=None)
    first = json.loads(ws.recv(timeout=5))
    assert first["type"] == "workerregistered", first
    return ws, first["worker_id"]


def log_calls(ws, count: int, message: str, batch: int = 200) -> None:
    """`count` sync calls of engine::log::info, pipelined `batch` at a time; every one must be answered."""
    sent = 0
    while sent < count:
        n = min(batch, count - sent)
        ids = [str(uuid.uuid4()) for _ in range(n)]
        for inv in ids:
            ws.send(
                json.dumps(
                    {
                        "type": "invokefunction",
                        "invocation_id": inv,
                        "function_id": "engine::log::info",
                        "data": {"message": message},
                    }
                )
            )
        answered = set()
        while len(answered) < n:
            msg = json.loads(ws.recv(timeout=5))
            assert msg["type"] == "invocationresult" and "error" not in msg, msg
            answered.add(msg["invocation_id"])
        assert answered == set(ids)
        sent += n


def round_trip_s(ws) -> float:
    t0 = time.monotonic()
    ws.send(json.dumps({"type": "ping"}))
    assert json.loads(ws.recv(timeout=5)) == {"type": "pong"}
    return time.monotonic() - t0


# ------------------------------------------------------------------------------------------------ tests


def test_unread_stdout_never_stalls_the_engine(raw_engine):
    """The engine logs every call (engine::log::info, at trace level) into a 4 KiB stdout pipe nobody reads:
    10,000 lines, ~6 MB, about 1,500 times what the pipe holds and more than the log queue holds. Every call is
    still answered at once; when the pipe is read again, the number of dropped log lines is reported, and
    SIGTERM still flushes the logs and exits 0."""
    e = raw_engine(level="trace")
    port = e.read_port()
    ws, _ = ws_connect(port)
    message = "x" * 500

    t0 = time.monotonic()
    log_calls(ws, 10000, message)
    took = time.monotonic() - t0
    # Full: no room left for one more line (~570 bytes; a pipe write under 4 KiB is all or nothing).
    assert e.pipe_fill() > PIPE_BYTES - 570, f"the stdout pipe should be full, holds {e.pipe_fill()} bytes"
    # Still answering promptly, with the pipe full and the log queue overflowing.
    worst = max(round_trip_s(ws) for _ in range(20))
    assert worst < 1.0, f"a ping took {worst:.3f}s with stdout blocked"
    log_calls(ws, 200, message)
    assert e.proc.poll() is None
    assert took < 60, f"10,000 calls took {took:.1f}s"

    e.drain()
    m = e.wait_line(r"(\d+) log messages dropped")
    assert int(m.group(1)) > 10000 - 4096 - 100, m.group(0)  # beyond what the log queue holds
    # Logging works normally again once stdout is read.
    ws.send(json.dumps({"type": "invokefunction", "function_id": "engine::log::warn",
                        "data": {"message": "stdout is read again"}, "action": {"type": "void"}}))
    e.wait_line(r"\[warning\] .*stdout is read again")
    ws.close()

    assert e.stop() == 0, e.stderr
    e._drain_thread.join(5)
    assert e.rest[-1].endswith("engine stopped"), [l[:160] for l in e.rest[-5:]]
    assert b"log output blocked" not in e.stderr


def test_sigterm_with_stdout_still_blocked_exits_0(raw_engine):
    """Shutdown waits only a bounded time for the log output; with nobody reading it, the engine still exits 0
    and says on stderr that log lines were lost."""
    e = raw_engine(level="trace")
    port = e.read_port()
    ws, _ = ws_connect(port)
    log_calls(ws, 300, "y" * 1000)
    assert e.pipe_fill() > PIPE_BYTES - 1070
    ws.close()
    t0 = time.monotonic()
    assert e.stop(timeout=15) == 0, e.stderr
    assert time.monotonic() - t0 < 10
    assert b"log output blocked" in e.stderr, e.stderr


def test_bad_frames_from_one_connection_give_a_handful_of_lines(engine):
    """10,000 bad frames (invalid JSON, unknown types, bad fields) on one connection: the first 5 are logged,
    then at most one a second with the count suppressed, and the rest is counted when the connection closes."""
    mark = engine.mark()
    ws, worker_id = ws_connect(engine.port)
    frames = ["{not json", json.dumps({"type": "no_such_type"}), json.dumps({"type": "registerfunction", "id": 7})]
    for i in range(10000):
        ws.send(frames[i % 3])
    ws.send(json.dumps({"type": "ping"}))  # fence: every bad frame has been handled
    assert json.loads(ws.recv(timeout=30)) == {"type": "pong"}
    ws.close()

    summary = wait_for(
        lambda: next((l for l in engine.lines_since(mark) if f"worker {worker_id}: invalid messages:" in l), None),
        timeout=10,
        what="the suppressed-count line at disconnect",
    )
    mine = [l for l in engine.lines_since(mark) if f"worker {worker_id}" in l]
    assert 6 <= len(mine) <= 20, "\n".join(mine)  # 5 + one a second while the frames arrive + the summary
    total = 5
    for line in mine:
        m = re.search(r"\((\d+) more suppressed before this one\)", line)
        if m:
            total += int(m.group(1)) + 1
    total += int(re.search(r"(\d+) more suppressed$", summary).group(1))
    assert total == 10000, "\n".join(mine)


def _write_config(tmp_path: Path, observability: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(
        "workers:\n"
        "  - name: iii-worker-manager\n"
        "    config: { host: 127.0.0.1, port: 0 }\n"
        "  - name: iii-observability\n"
        "    config:\n" + observability
    )
    return p


@pytest.mark.parametrize(
    "observability, line, expected",
    [
        ("      level: loud\n", 6, "key 'level': invalid log level 'loud'"),
        ("      format: json\n      log_level: verbose\n", 7, "key 'log_level': invalid log level 'verbose'"),
        ("      level: info\n      format: pretty\n", 7, "key 'format': invalid log format 'pretty' (expected text or json)"),
    ],
)
def test_invalid_level_or_format_is_a_startup_error_naming_file_and_line(tmp_path, observability, line, expected):
    cfg = _write_config(tmp_path, observability)
    p = subprocess.run([str(III_BIN), "--config", str(cfg)], capture_output=True, text=True, timeout=15)
    assert p.returncode == 2, p
    assert f"{cfg}:{line}: worker 'iii-observability': {expected}" in p.stderr, p.stderr
    assert p.stdout == "", "nothing starts"


def test_invalid_cli_log_options_name_the_option(tmp_path):
    cfg = _write_config(tmp_path, "      level: info\n")
    for args, expected in ((["--log-level", "chatty"], "--log-level: invalid log level 'chatty'"),
                           (["--log-format", "xml"], "--log-format: invalid log format 'xml'")):
        p = subprocess.run([str(III_BIN), "--config", str(cfg), *args], capture_output=True, text=True, timeout=15)
        assert p.returncode == 2, p
        assert expected in p.stderr, p.stderr


def test_config_level_and_format_are_applied_and_the_cli_overrides_them(raw_engine):
    # Config: debug + json → JSON lines, debug lines included (a worker connecting is logged at debug).
    e = raw_engine(level="debug", fmt="json")
    port = e.read_port()
    e.drain()
    ws, worker_id = ws_connect(port)
    e.wait_line(f"worker {worker_id} connected")
    ws.close()
    assert e.stop() == 0
    e._drain_thread.join(5)
    lines = e.head.decode().splitlines() + e.rest
    records = [json.loads(l) for l in lines if l]
    assert {r["level"] for r in records} >= {"info", "debug"}
    assert records[-1]["msg"] == "engine stopped"

    # CLI overrides: warn + text. Nothing at info is printed (not even the listening line), so the port is
    # chosen here; a bad frame gives a warning, which must be the first line and in the text format.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    e = raw_engine(level="debug", fmt="json", args=["--log-level", "warn", "--log-format", "text"], port=port)
    e.drain()
    ws = wait_for(lambda: ws_connect(port)[0], timeout=10, what="the engine to accept connections")
    ws.send("{not json")
    e.wait_line(r"^\[[0-9-]+ [0-9:.]+\] \[warning\] worker .*: invalid")
    ws.close()
    assert e.stop() == 0
    e._drain_thread.join(5)
    assert all("[warning]" in l for l in e.rest), e.rest


def test_fatal_startup_error_reaches_stdout_before_exit(tmp_path):
    """A listener that cannot bind fails start-up: the error line is written out before the exit code 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "config.yaml"
        cfg.write_text(
            "workers:\n"
            "  - name: iii-worker-manager\n"
            f"    config: {{ host: 127.0.0.1, port: {port} }}\n"
            "  - name: iii-observability\n"
            "    config: { level: info, format: json }\n"
        )
        p = subprocess.run([str(III_BIN), "--config", str(cfg)], capture_output=True, text=True, timeout=15)
    assert p.returncode == 1, p
    last = json.loads(p.stdout.splitlines()[-1])
    assert last["level"] == "error" and "startup failed" in last["msg"], p.stdout
