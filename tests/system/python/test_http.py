"""iii-http with the official Python SDK: routes, the request object, response rules, bodies
streamed through the request and response channels, and route lifecycle."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request

import pytest
from iii import http

from conftest import wait_for

HTTP_YAML = "  - name: iii-http\n    config: { host: 127.0.0.1, port: 0, default_timeout: 5000 }\n"


def base_url(engine) -> str:
    wait_for(lambda: len(engine.ports) >= 2, what="iii-http listening")
    return f"http://127.0.0.1:{engine.ports[1]}"


def request(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_routed(url: str, method: str = "GET") -> None:
    wait_for(lambda: request(url, method)[0] != 404, what=f"{method} {url} routed")


@pytest.mark.engine(extra_yaml=HTTP_YAML)
def test_request_object_and_response_rules(engine, make_client):
    base = base_url(engine)
    c = make_client("py-http")
    seen = {}

    def handler(req):
        seen.update(req)
        return {"status_code": 202, "headers": ["X-From: python"],
                "body": {"id": req["path_params"]["id"], "body": req["body"]}}

    c.register_function("pyhttp::item", handler)
    c.register_trigger({"type": "http", "function_id": "pyhttp::item",
                        "config": {"api_path": "/items/:id", "http_method": "PUT"}})
    wait_routed(base + "/items/1", "PUT")
    status, headers, body = request(base + "/items/abc?x=1&y=%C3%A9", "PUT", b'{"v": [1, 2]}',
                                    {"Content-Type": "application/json", "X-Api-Key": "k"})
    assert status == 202
    assert headers["X-From"] == "python"
    assert json.loads(body) == {"id": "abc", "body": {"v": [1, 2]}}
    assert seen["path"] == "/items/:id" and seen["method"] == "PUT"
    assert seen["query_params"] == {"x": "1", "y": "é"}
    assert seen["headers"]["x-api-key"] == "k"
    assert {"request_body", "response"} <= set(seen)
    # The SDK turns the channel refs into live channel ends.
    assert type(seen["request_body"]).__name__ == "ChannelReader"
    assert type(seen["response"]).__name__ == "ChannelWriter"
    status, _, body = request(base + "/items/abc", "GET")
    assert status == 405 and "not allowed" in json.loads(body)["error"]
    status, _, body = request(base + "/nope")
    assert status == 404 and "no route" in json.loads(body)["error"]


@pytest.mark.engine(extra_yaml=HTTP_YAML)
def test_upload_and_download_through_channels(engine, make_client):
    base = base_url(engine)
    c = make_client("py-http-stream")

    async def upload(req):
        data = await req["request_body"].read_all()
        return {"body": {"size": len(data), "sha": hashlib.sha256(data).hexdigest()}}

    async def download(req, res):
        await res.status(201)
        await res.headers({"content-type": "application/octet-stream"})
        await res.writer.write(b"chunk-1;")
        await res.writer.write(b"chunk-2")
        await res.writer.close_async()

    c.register_function("pyhttp::upload", upload)
    c.register_trigger({"type": "http", "function_id": "pyhttp::upload",
                        "config": {"api_path": "/upload", "http_method": "POST"}})
    c.register_function("pyhttp::download", http(download))
    c.register_trigger({"type": "http", "function_id": "pyhttp::download", "config": {"api_path": "/download"}})
    wait_routed(base + "/upload", "POST")
    wait_routed(base + "/download")
    blob = os.urandom(1024 * 1024 + 3)
    status, _, body = request(base + "/upload", "POST", blob, {"Content-Type": "application/octet-stream"})
    assert status == 200, body
    assert json.loads(body) == {"size": len(blob), "sha": hashlib.sha256(blob).hexdigest()}
    status, headers, body = request(base + "/download")
    assert status == 201
    assert headers["content-type"] == "application/octet-stream"
    assert body == b"chunk-1;chunk-2"


@pytest.mark.engine(extra_yaml=HTTP_YAML)
def test_health_route_follows_its_worker(engine, make_client, session):
    base = base_url(engine)
    assert request(base + "/health")[0] == 404
    c = make_client("py-health")
    c.register_function("pyhttp::health", lambda req: {"body": {"ok": True}})
    c.register_trigger({"type": "http", "function_id": "pyhttp::health", "config": {"api_path": "health"}})
    wait_routed(base + "/health")
    assert request(base + "/health")[:1] == (200,)
    session.clients.remove(c)  # shut down here, not again at teardown
    c.shutdown()
    wait_for(lambda: request(base + "/health")[0] == 404, what="route gone with its worker")


@pytest.mark.engine(extra_yaml="  - name: iii-http\n    config: { host: 127.0.0.1, port: 0, header_timeout_ms: 300 }\n")
def test_slow_oversized_and_garbage_requests(engine, make_client):
    import socket
    import time

    base = base_url(engine)
    port = engine.ports[1]
    c = make_client("py-http-bad")
    c.register_function("pyhttp::ok", lambda req: {"body": "ok"})
    c.register_trigger({"type": "http", "function_id": "pyhttp::ok", "config": {"api_path": "/ok"}})
    wait_routed(base + "/ok")

    def exchange(raw: bytes, wait: float = 0.0) -> bytes:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(raw)
        if wait:
            time.sleep(wait)
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        s.close()
        return data

    # Slowloris: headers never finish; the header deadline answers 408 (or closes).
    t0 = time.monotonic()
    slow = exchange(b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert time.monotonic() - t0 < 3
    assert slow == b"" or slow.startswith(b"HTTP/1.1 408"), slow[:80]
    # Oversized headers: 431.
    big = exchange(b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 431"), big[:80]
    # A request line that is not HTTP: 400 or closed, never a crash.
    garbage = exchange(b"\x00\x01\x02 garbage\r\n\r\n")
    assert garbage == b"" or garbage.startswith(b"HTTP/1.1 400"), garbage[:80]
    # Pipelined keep-alive requests are answered in order on one connection.
    two = exchange(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert two.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 404" in two, two[:200]
    assert request(base + "/ok")[0] == 200


@pytest.mark.engine(extra_yaml=HTTP_YAML)
def test_shutdown_finishes_requests_in_flight(engine, make_client):
    import signal
    import threading
    import time

    base = base_url(engine)
    c = make_client("py-http-slow")

    def slow(req):
        time.sleep(1.0)
        return {"body": "finished"}

    c.register_function("pyhttp::slow", slow)
    c.register_trigger({"type": "http", "function_id": "pyhttp::slow", "config": {"api_path": "/slow"}})
    wait_for(lambda: any("http" == t.get("trigger_type") and t.get("state") == "bound"
                         for t in c.trigger({"function_id": "engine::triggers::list", "payload": {}})["triggers"]),
             what="route bound")
    result = {}
    t = threading.Thread(target=lambda: result.update(r=request(base + "/slow")))
    t.start()
    time.sleep(0.3)  # the request is in the handler
    engine.proc.send_signal(signal.SIGTERM)
    t.join(10)
    assert result["r"][0] == 200 and json.loads(result["r"][2]) == "finished", result
    assert engine.proc.wait(10) == 0
    engine.stopped = True
