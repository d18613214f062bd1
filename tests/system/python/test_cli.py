"""The `iii` command line: --version and `iii trigger` against a running engine."""

from __future__ import annotations

import json
import subprocess
import threading
import time

from conftest import III_BIN, UUID_RE, wait_for_functions


def run(args: list[str], timeout: float = 15.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(III_BIN), *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def parse_error(stderr: str) -> dict:
    idx = stderr.find("Error: ")
    assert idx >= 0, f"stderr must contain 'Error: {{...}}', got {stderr!r}"
    body = stderr[idx + len("Error: "):].strip()
    return json.JSONDecoder().raw_decode(body)[0]


def test_version():
    for flag in ("--version", "-v"):
        p = run([flag], timeout=5)
        assert p.returncode == 0, p
        assert p.stdout.strip() == "0.11.6", repr(p.stdout)


def _serve(make_client):
    calls: list[dict] = []
    lock = threading.Lock()
    client = make_client("cli-target")

    def echo(data):
        with lock:
            calls.append(data)
        return data

    def fail(data):
        raise ValueError("cli boom")

    def slow(data):
        time.sleep(3)
        return "late"

    client.register_function("cli::echo", echo)
    client.register_function("cli::fail", fail)
    client.register_function("cli::slow", slow)
    wait_for_functions(client, ["cli::echo", "cli::fail", "cli::slow"])
    return client, calls


def test_trigger_success_prints_result_json(engine, make_client):
    _, calls = _serve(make_client)
    payload = {"a": 1, "s": "ünï", "l": [1, None, True]}
    p = run(["trigger", "--function-id", "cli::echo", "--payload", json.dumps(payload),
             "--address", "127.0.0.1", "--port", str(engine.port)])
    assert p.returncode == 0, f"exit {p.returncode}\nstdout={p.stdout!r}\nstderr={p.stderr!r}"
    out = json.loads(p.stdout)
    assert {k: v for k, v in out.items() if k != "_caller_worker_id"} == payload
    assert UUID_RE.match(out["_caller_worker_id"]), out
    assert len(calls) == 1


def test_trigger_with_ws_url_address_and_timeout_flag(engine, make_client):
    _, calls = _serve(make_client)
    p = run(["trigger", "--function-id", "cli::echo", "--payload", '{"via":"url"}',
             "--address", f"ws://127.0.0.1:{engine.port}", "--timeout-ms", "5000"])
    assert p.returncode == 0, f"exit {p.returncode}\nstdout={p.stdout!r}\nstderr={p.stderr!r}"
    assert json.loads(p.stdout)["via"] == "url"
    # default payload is {}
    p = run(["trigger", "--function-id", "cli::echo", "--address", "127.0.0.1", "--port", str(engine.port)])
    assert p.returncode == 0, p.stderr
    assert set(json.loads(p.stdout)) == {"_caller_worker_id"}
    assert len(calls) == 2


def test_trigger_remote_error_exits_1(engine, make_client):
    _serve(make_client)
    p = run(["trigger", "--function-id", "cli::fail", "--payload", "{}", "--address", "127.0.0.1",
             "--port", str(engine.port)])
    assert p.returncode == 1, f"exit {p.returncode}\nstdout={p.stdout!r}\nstderr={p.stderr!r}"
    err = parse_error(p.stderr)
    assert err["code"] == "invocation_failed"
    assert err["message"] == "cli boom"
    assert "Traceback" in err["stacktrace"]
    assert p.stdout.strip() == ""


def test_trigger_unknown_function_exits_1(engine):
    p = run(["trigger", "--function-id", "cli::missing", "--payload", "{}", "--address", "127.0.0.1",
             "--port", str(engine.port)])
    assert p.returncode == 1, f"exit {p.returncode}\nstdout={p.stdout!r}\nstderr={p.stderr!r}"
    err = parse_error(p.stderr)
    assert err["code"] == "function_not_found"
    assert "cli::missing" in err["message"]


def test_trigger_bad_json_payload_fails_without_invoking(engine, make_client):
    _, calls = _serve(make_client)
    for bad in ("{not json", "", "{'single': 'quotes'}"):
        p = run(["trigger", "--function-id", "cli::echo", "--payload", bad, "--address", "127.0.0.1",
                 "--port", str(engine.port)], timeout=10)
        assert p.returncode != 0, f"payload {bad!r} must be rejected; stdout={p.stdout!r}"
        assert p.stdout.strip() == "", p.stdout
    time.sleep(0.2)
    assert calls == [], "the function must not be invoked with a bad payload"


def test_trigger_timeout(engine, make_client):
    _serve(make_client)
    t0 = time.monotonic()
    p = run(["trigger", "--function-id", "cli::slow", "--payload", "{}", "--timeout-ms", "500",
             "--address", "127.0.0.1", "--port", str(engine.port)], timeout=10)
    dt = time.monotonic() - t0
    assert p.returncode != 0, f"a timed-out trigger must fail; stdout={p.stdout!r}"
    assert dt < 2.5, f"--timeout-ms 500 took {dt:.2f}s"
