"""Data channels across languages through the real engine: the official Python iii-sdk==0.11.6
(``create_channel``, ``ChannelWriter`` / ``ChannelReader``, refs resolved in handler input) talking to a Node worker
process (tests/system/node/fixtures/worker.mjs, role ``channels``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

import pytest
from iii import IIIInvocationError

from conftest import UUID_RE, wait_for_functions

MiB = 1024 * 1024


def call(client, fid, payload=None, timeout_ms: int = 20000):
    return client.trigger({"function_id": fid, "payload": payload if payload is not None else {}, "timeout_ms": timeout_ms})


async def write_all(writer, items: list[str | bytes]) -> None:
    """Send text (str) and binary (bytes) items in order through a Python ChannelWriter, then close it."""
    for item in items:
        if isinstance(item, str):
            await writer.send_message_async(item)
        else:
            await writer.write(item)
    await writer.close_async()


async def read_all(reader) -> tuple[list[str], bytes]:
    texts: list[str] = []
    reader.on_message(texts.append)
    data = await reader.read_all()
    return texts, data


def test_create_channel_refs(engine, make_client):
    py = make_client("pych-refs")
    ch = py.create_channel()  # sends {"buffer_size": null}
    assert UUID_RE.match(ch.writer_ref.channel_id)
    assert UUID_RE.match(ch.writer_ref.access_key)
    assert ch.writer_ref.direction == "write"
    assert ch.reader_ref.direction == "read"
    assert ch.reader_ref.channel_id == ch.writer_ref.channel_id
    assert ch.reader_ref.access_key == ch.writer_ref.access_key
    big = py.create_channel(100000)  # clamped, not refused
    assert UUID_RE.match(big.writer_ref.channel_id)
    assert big.writer_ref.channel_id != ch.writer_ref.channel_id
    for bad in ("x", 2.5, True):
        with pytest.raises(IIIInvocationError) as ei:
            call(py, "engine::channels::create", {"buffer_size": bad})
        assert ei.value.code == "deserialization_error", f"buffer_size {bad!r}: {ei.value}"


def test_python_writer_node_reader_and_node_writer_python_reader(engine, make_client, node_worker):
    """Python creates two channels; Node reads the first (texts + binary) and echoes into the second."""
    node_worker("pych-node", "channels")
    py = make_client("pych-py")
    wait_for_functions(py, ["pych-node::echo"])
    ch_in = py.create_channel()
    ch_out = py.create_channel()

    blob1 = os.urandom(200_000)  # > 64 KiB: several frames
    blob2 = os.urandom(65_536)
    items: list[str | bytes] = [
        "hello from python",
        blob1,
        json.dumps({"type": "meta", "n": 2, "s": "ünïcødé ✓"}),
        blob2,
        "bye",
    ]
    sent_texts = [i for i in items if isinstance(i, str)]
    sent_bytes = b"".join(i for i in items if isinstance(i, bytes))

    async def scenario():
        # The refs go inside the payload as-is (the SDK serialises them); Node turns them into a reader/writer.
        echo = asyncio.create_task(
            asyncio.to_thread(
                call, py, "pych-node::echo", {"input": ch_in.reader_ref, "output": ch_out.writer_ref}, 30000
            )
        )
        await asyncio.wait_for(write_all(ch_in.writer, items), 20)
        texts, data = await asyncio.wait_for(read_all(ch_out.reader), 20)
        res = await asyncio.wait_for(echo, 30)
        return res, texts, data

    res, texts, data = asyncio.run(scenario())
    assert res["ok"] is True, res
    # What Node read from Python.
    assert res["texts"] == sent_texts
    assert res["bytes"] == len(sent_bytes)
    assert res["sha256"] == hashlib.sha256(sent_bytes).hexdigest()
    # What Python read back from Node.
    assert texts == [f"echo:{t}" for t in sent_texts]
    assert data == sent_bytes


def test_node_creates_channel_python_handler_reads(engine, make_client, node_worker):
    """Node creates the channel and passes the read ref to a Python function: the SDK hands it a ChannelReader."""
    py = make_client("pych-consumer")

    async def consume(data):
        reader = data["reader"]
        assert type(reader).__name__ == "ChannelReader", type(reader)
        texts: list[str] = []
        reader.on_message(texts.append)
        h = hashlib.sha256()
        n = 0
        async for chunk in reader:
            h.update(chunk)
            n += len(chunk)
        return {"texts": texts, "bytes": n, "sha256": h.hexdigest()}

    py.register_function("pych::consume", consume)
    node_worker("pych-sender", "channels")
    wait_for_functions(py, ["pych::consume", "pych-sender::send_to"])
    texts = [f"note {i}" for i in range(5)]
    res = call(
        py,
        "pych-sender::send_to",
        {"target": "pych::consume", "total_bytes": 3 * MiB + 123, "chunk_bytes": 256 * 1024, "seed": 5, "texts": texts},
        timeout_ms=60000,
    )
    assert res["ok"] is True, res
    assert res["sent"]["bytes"] == 3 * MiB + 123
    got = res["result"]
    assert got["texts"] == texts
    assert got["bytes"] == 3 * MiB + 123
    assert got["sha256"] == res["sent"]["sha256"]


def test_python_writer_32mib_to_node(engine, make_client, node_worker):
    """A bigger Python -> Node transfer: the Python writer is paced by the engine's backpressure, data intact."""
    node_worker("pych-big", "channels")
    py = make_client("pych-big-py")
    wait_for_functions(py, ["pych-big::consume"])
    ch = py.create_channel(16)
    h = hashlib.sha256()
    total = 32 * MiB

    async def scenario():
        consume = asyncio.create_task(
            asyncio.to_thread(call, py, "pych-big::consume", {"reader": ch.reader_ref}, 30000)
        )
        chunk = os.urandom(MiB)
        for i in range(total // MiB):
            piece = chunk[i:] + chunk[:i]  # distinct content per MiB
            h.update(piece)
            await asyncio.wait_for(ch.writer.write(piece), 20)
        await ch.writer.close_async()
        return await asyncio.wait_for(consume, 35)

    res = asyncio.run(scenario())
    assert res["ok"] is True, res
    assert res["bytes"] == total
    assert res["sha256"] == h.hexdigest()
    assert res["texts"] == []
