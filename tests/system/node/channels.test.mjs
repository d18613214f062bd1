// Data channels through the real engine (engine-core.md §5, sdk-wire.md §1.11): `engine::channels::create`,
// the `/ws/channels/{id}?key=..&dir=read|write` relay driven by the official Node SDK (ChannelWriter /
// ChannelReader, refs passed inside invocation payloads) and by raw `ws` sockets (frame types, close codes,
// HTTP status codes), ordering, writer-before-reader, backpressure and the engine's memory during a 1 GiB
// transfer between two worker processes.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import WebSocket from 'ws';
import {
  engineTest, rejectionOf, sleep, waitFor, waitForFunctions, withTimeout, UUID_RE,
} from './harness.mjs';
import { patternChunk, patternSha256 } from './fixtures/channel_pattern.mjs';

const MiB = 1024 * 1024;
const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');

// ---------------------------------------------------------------------------------------------------------
// helpers

// Memory bounds are properties of the release binary. Under AddressSanitizer (III_SANITIZED=1,
// set by scripts/test.sh for the asan run) RSS is dominated by the sanitizer's redzones and
// quarantine, so those runs check everything else (data integrity, order, close codes) and the
// release run of the same tests asserts the bounds.
const SANITIZED = process.env.III_SANITIZED === '1';
function assertMemoryBound(ok, message) {
  if (!SANITIZED) assert.ok(ok, message);
}

/** VmRSS of `pid` in bytes. */
function rssBytes(pid) {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, `no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/** Samples the RSS of `pid` every `intervalMs` until stop() (returns {start, min, max, last, samples}). */
function rssSampler(pid, intervalMs = 100) {
  const start = rssBytes(pid);
  const s = { start, min: start, max: start, last: start, samples: 1 };
  const timer = setInterval(() => {
    try {
      const v = rssBytes(pid);
      s.min = Math.min(s.min, v);
      s.max = Math.max(s.max, v);
      s.last = v;
      s.samples++;
    } catch { /* process gone: the test notices elsewhere */ }
  }, intervalMs);
  return { stats: s, stop() { clearInterval(timer); return s; } };
}

const mb = (n) => (n / 1e6).toFixed(1);

function channelUrl(base, id, key, dir) {
  const q = [];
  if (key !== undefined) q.push(`key=${encodeURIComponent(key)}`);
  if (dir !== undefined) q.push(`dir=${dir}`);
  return `${base}/ws/channels/${id}${q.length ? `?${q.join('&')}` : ''}`;
}

/**
 * Try a raw WebSocket upgrade. Resolves {status: 101, ws} when upgraded, or {status, body} when the server
 * answered with a plain HTTP response (ws 'unexpected-response').
 */
function tryUpgrade(url, timeoutMs = 5000) {
  return withTimeout(new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.once('open', () => resolve({ status: 101, ws }));
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => { req.destroy(); resolve({ status: res.statusCode, body }); });
    });
    ws.once('error', reject);
  }), timeoutMs, `WebSocket upgrade of ${url}`);
}

/** A raw socket on a channel: records every frame {binary, data} and the close {code, reason}. */
class RawEnd {
  constructor(url, { paused = false } = {}) {
    this.url = url;
    this.frames = [];
    this.keepFrames = true; // false: only count bytes / call onFrame (for big transfers)
    this.bytes = 0;
    this.ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 256 * MiB });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => { if (paused) this.ws.pause(); resolve(); });
      this.ws.once('unexpected-response', (req, res) => {
        req.destroy();
        reject(new Error(`upgrade of ${url} refused with HTTP ${res.statusCode}`));
      });
      this.ws.once('error', reject);
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() }));
    });
    this.errors = [];
    this.ws.on('error', (e) => this.errors.push(e));
    this.ws.on('message', (data, isBinary) => {
      if (this.keepFrames) this.frames.push({ binary: isBinary, data });
      this.bytes += data.length;
      if (this.onFrame) this.onFrame(data, isBinary);
    });
  }

  /** Send and wait until the frame is handed to the kernel. */
  send(data, binary) {
    return new Promise((resolve, reject) => {
      this.ws.send(data, { binary }, (err) => (err ? reject(err) : resolve()));
    });
  }

  waitClosed(timeoutMs = 5000, what = 'close') {
    return withTimeout(this.closed, timeoutMs, `${what} of ${this.url}`);
  }

  kill() { try { this.ws.terminate(); } catch { /* gone */ } }
}

/** In-process consumer used by worker functions: reads a ChannelReader to the end. */
async function readChannel(reader, { keepData = false } = {}) {
  const texts = [];
  const kept = [];
  const h = crypto.createHash('sha256');
  let bytes = 0;
  reader.onMessage((m) => texts.push(m));
  reader.stream.on('error', () => {}); // surfaces through the iterator below
  try {
    for await (const chunk of reader.stream) {
      h.update(chunk);
      bytes += chunk.length;
      if (keepData) kept.push(chunk);
    }
  } catch (e) {
    return { ok: false, error: e?.message ?? String(e), bytes, texts };
  }
  const out = { ok: true, bytes, sha256: h.digest('hex'), texts };
  if (keepData) out.data = Buffer.concat(kept).toString('base64');
  return out;
}

/** A late 'error' on a channel stream (after the promise that reports it settled) must not crash the runner. */
const guarded = new WeakSet();
function guard(stream) {
  if (guarded.has(stream)) return;
  guarded.add(stream);
  stream.on('error', () => {});
}

/** Write through a ChannelWriter's stream and wait for the write callback (rejects on error/close first). */
function writeChunk(stream, buf) {
  guard(stream);
  return withTimeout(new Promise((resolve, reject) => {
    const onClose = () => { cleanup(); reject(new Error('channel writer closed before the write completed')); };
    const onError = (e) => { cleanup(); reject(e); };
    const cleanup = () => { stream.off('close', onClose); stream.off('error', onError); };
    stream.once('close', onClose);
    stream.once('error', onError);
    stream.write(buf, (err) => { cleanup(); if (err) reject(err); else resolve(); });
  }), 20000, 'channel write');
}

function endWriter(stream, timeoutMs = 10000) {
  guard(stream);
  return withTimeout(new Promise((resolve, reject) => {
    stream.once('error', reject);
    stream.once('close', resolve);
    stream.end();
  }), timeoutMs, 'channel writer end + close');
}

/**
 * Wait until a raw writer is blocked by backpressure: its unsent byte count is non-zero and stops changing.
 * Fails at once if the engine closes the writer socket meanwhile (a paused writer must stay connected).
 */
async function waitBlocked(writer, timeoutMs, intervalMs = 300) {
  const deadline = Date.now() + timeoutMs;
  let last = -1;
  for (;;) {
    if (writer.ws.readyState !== WebSocket.OPEN) {
      const c = await writer.waitClosed(1000).catch(() => null);
      throw new Error(`the engine closed the writer while it was waiting for buffer space (close ${JSON.stringify(c)}; ` +
        `errors: ${writer.errors.map((e) => e.message).join(', ')})`);
    }
    const b = writer.ws.bufferedAmount;
    if (b === last && b > 0) return b;
    last = b;
    if (Date.now() > deadline) throw new Error(`writer not blocked by backpressure within ${timeoutMs} ms (unsent ${b} bytes)`);
    await sleep(intervalMs);
  }
}

/** Wait until every frame promise settled and the socket's userland buffer is empty. */
async function drainSends(raw, timeoutMs = 10000) {
  await waitFor(() => raw.ws.bufferedAmount === 0, { timeoutMs, intervalMs: 10, what: 'writer socket to flush' });
}

// ---------------------------------------------------------------------------------------------------------
// engine::channels::create

engineTest('engine::channels::create returns a writer and a reader ref sharing one id and key', async (ctx) => {
  const w = ctx.worker('chan-create');
  const res = await w.trigger({ function_id: 'engine::channels::create', payload: {} });
  assert.deepEqual(Object.keys(res).sort(), ['reader', 'writer']);
  assert.deepEqual(Object.keys(res.writer).sort(), ['access_key', 'channel_id', 'direction']);
  assert.deepEqual(Object.keys(res.reader).sort(), ['access_key', 'channel_id', 'direction']);
  assert.equal(res.writer.direction, 'write');
  assert.equal(res.reader.direction, 'read');
  assert.match(res.writer.channel_id, UUID_RE);
  assert.match(res.writer.access_key, UUID_RE);
  assert.equal(res.reader.channel_id, res.writer.channel_id);
  assert.equal(res.reader.access_key, res.writer.access_key);
  assert.notEqual(res.writer.access_key, res.writer.channel_id);

  // Every call makes a new channel.
  const again = await w.trigger({ function_id: 'engine::channels::create', payload: {} });
  assert.notEqual(again.writer.channel_id, res.writer.channel_id);
  assert.notEqual(again.writer.access_key, res.writer.access_key);

  // The SDK helper (buffer_size key absent) and explicit null (what the Python SDK sends) both work.
  const ch = await w.createChannel();
  assert.match(ch.writerRef.channel_id, UUID_RE);
  assert.equal(ch.readerRef.channel_id, ch.writerRef.channel_id);
  const withNull = await w.trigger({ function_id: 'engine::channels::create', payload: { buffer_size: null } });
  assert.match(withNull.writer.channel_id, UUID_RE);
});

engineTest('engine::channels::create validates buffer_size (integers only; out-of-range values are clamped)', async (ctx) => {
  const w = ctx.worker('chan-bufsize');
  for (const bad of ['x', '64', 1.5, true, [], { n: 1 }]) {
    const e = await rejectionOf(w.trigger({ function_id: 'engine::channels::create', payload: { buffer_size: bad } }),
      `buffer_size ${JSON.stringify(bad)}`);
    assert.equal(e.code, 'deserialization_error',
      `buffer_size ${JSON.stringify(bad)}: expected deserialization_error, got ${e.code}: ${e.message}`);
  }
  // Clamped, not refused: each of these channels works end to end.
  for (const size of [100000, 1024, 1, 0, -5, 2 ** 40]) {
    const ch = await w.trigger({ function_id: 'engine::channels::create', payload: { buffer_size: size } });
    assert.match(ch.writer.channel_id, UUID_RE, `buffer_size ${size}`);
    const writer = new RawEnd(channelUrl(ctx.url, ch.writer.channel_id, ch.writer.access_key, 'write'));
    const reader = new RawEnd(channelUrl(ctx.url, ch.reader.channel_id, ch.reader.access_key, 'read'));
    await writer.opened;
    await reader.opened;
    for (let i = 0; i < 20; i++) await writer.send(Buffer.from([i, size & 0xff]), true);
    await writer.send(`done ${size}`, false);
    writer.ws.close(1000);
    const c = await reader.waitClosed(5000, `reader of buffer_size=${size} channel`);
    assert.equal(c.code, 1000);
    assert.equal(reader.frames.length, 21, `buffer_size ${size}: frames delivered`);
    reader.frames.slice(0, 20).forEach((f, i) => {
      assert.equal(f.binary, true);
      assert.deepEqual([...f.data], [i, size & 0xff]);
    });
    assert.equal(reader.frames[20].binary, false);
    assert.equal(reader.frames[20].data.toString(), `done ${size}`);
    await writer.waitClosed();
  }
});

engineTest('buffer_size 100000 is clamped: 300,000 small frames with no reader keep the engine memory flat', { timeout: 90000 }, async (ctx) => {
  // Unclamped, the engine would keep ~100,000 frames of 160 B (16 MB, right at the byte bound); clamped to
  // 1024 it buffers at most 1024 frames (160 KB) and then stops reading the writer's socket (the rest waits
  // in kernel/client buffers).
  const w = ctx.worker('chan-clamp');
  const ch = await w.trigger({ function_id: 'engine::channels::create', payload: { buffer_size: 100000 } });
  const pid = ctx.engine.proc.pid;
  const before = rssBytes(pid);
  const writer = new RawEnd(channelUrl(ctx.url, ch.writer.channel_id, ch.writer.access_key, 'write'));
  await writer.opened;
  const N = 300000;
  const FRAME = 160;
  const frame = Buffer.alloc(FRAME, 7);
  for (let i = 0; i < N; i++) writer.ws.send(frame, { binary: true });
  await waitBlocked(writer, 15000, 500);
  const during = rssBytes(pid);
  console.log(`# clamp: engine RSS before ${mb(before)} MB, with ${N} x ${FRAME} B frames pending ${mb(during)} MB ` +
    `(writer still has ${mb(writer.ws.bufferedAmount)} MB unsent)`);
  assertMemoryBound(during - before < 12 * MiB,
    `engine RSS grew by ${mb(during - before)} MB with a buffer_size=100000 channel and no reader`);

  // Everything still arrives once a reader connects.
  const reader = new RawEnd(channelUrl(ctx.url, ch.reader.channel_id, ch.reader.access_key, 'read'));
  await reader.opened;
  await waitFor(() => reader.frames.length === N, { timeoutMs: 30000, what: `${N} frames at the reader` });
  writer.ws.close(1000);
  const c = await reader.waitClosed(5000);
  assert.equal(c.code, 1000);
  assert.equal(reader.frames.length, N);
  assert.ok(reader.frames.every((f) => f.binary && f.data.length === FRAME));
});

engineTest('tiny frames: 16 full channels of 1-byte frames keep the engine memory flat (the bound is not only bytes)', { timeout: 60000 }, async (ctx) => {
  // 16 channels x 1024 one-byte frames = 16 KiB of payload. Whatever the per-frame bookkeeping, holding them
  // must not cost the engine tens of MB: a writer must not be able to pin far more memory than the channel
  // bounds (buffer_size messages, 16 MiB) by sending tiny frames.
  const w = ctx.worker('chan-tiny');
  const pid = ctx.engine.proc.pid;
  const vmData = () => Number(/^VmData:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
  const before = rssBytes(pid);
  const dataBefore = vmData();
  const chans = [];
  for (let c = 0; c < 16; c++) {
    const ch = await w.createChannel(1024);
    const writer = new RawEnd(channelUrl(ctx.url, ch.writerRef.channel_id, ch.writerRef.access_key, 'write'));
    await writer.opened;
    for (let i = 0; i < 1100; i++) writer.ws.send(Buffer.from([i & 0xff]), { binary: true });
    chans.push({ ch, writer });
  }
  await Promise.all(chans.map(({ writer }) => drainSends(writer)));
  await sleep(1000);
  const grown = rssBytes(pid) - before;
  const dataGrown = vmData() - dataBefore;
  console.log(`# tiny frames: 16 x 1024 one-byte frames buffered => engine RSS +${mb(grown)} MB, VmData +${mb(dataGrown)} MB`);
  assertMemoryBound(grown < 32 * MiB,
    `engine RSS grew by ${mb(grown)} MB (VmData by ${mb(dataGrown)} MB) to hold 16 x 1024 one-byte frames (16 KiB of payload)`);

  // And all of it is delivered.
  const readers = chans.map(({ ch }) => new RawEnd(channelUrl(ctx.url, ch.readerRef.channel_id, ch.readerRef.access_key, 'read')));
  await Promise.all(readers.map((r) => r.opened));
  chans.forEach(({ writer }) => writer.ws.close(1000));
  const closes = await Promise.all(readers.map((r) => r.waitClosed(10000)));
  readers.forEach((r, c) => {
    assert.equal(closes[c].code, 1000);
    assert.equal(r.frames.length, 1100, `channel ${c} frames`);
    assert.ok(r.frames.every((f, i) => f.data.length === 1 && f.data[0] === (i & 0xff)), `channel ${c} content`);
  });
});

// ---------------------------------------------------------------------------------------------------------
// SDK: refs passed between workers

engineTest('two workers: binary data with interleaved text messages arrive in order and byte-exact', async (ctx) => {
  const consumer = ctx.worker('chan-consumer');
  consumer.registerFunction('chan::consume', async (data) => {
    assert.equal(typeof data.reader?.onMessage, 'function', 'the SDK must turn the read ref into a ChannelReader');
    const got = await readChannel(data.reader, { keepData: true });
    return { ...got, tag: data.tag };
  });
  const producer = ctx.worker('chan-producer');
  await waitForFunctions(producer, ['chan::consume']);

  const ch = await producer.createChannel();
  const call = producer.trigger({
    function_id: 'chan::consume', payload: { reader: ch.readerRef, tag: 'interleaved' }, timeoutMs: 30000,
  });
  call.catch(() => {}); // awaited below; a failing write must not leave an unhandled rejection behind

  // Sizes that are below, equal to, and above the SDK's 64 KiB frame size, and not multiples of it.
  const sizes = [1, 100, 65536, 65537, 100000, 3 * 65536 + 17, 1 * MiB, 7, 250000, 2 * MiB + 3];
  const texts = [];
  const chunks = [];
  for (let i = 0; i < sizes.length; i++) {
    const buf = crypto.randomBytes(sizes[i]);
    chunks.push(buf);
    await writeChunk(ch.writer.stream, buf);
    const text = i % 3 === 0
      ? JSON.stringify({ type: 'progress', i, bytes: chunks.reduce((a, b) => a + b.length, 0) })
      : `text #${i} ünïcødé ✓ 😀`;
    texts.push(text);
    ch.writer.sendMessage(text);
  }
  ch.writer.sendMessage('last text before end');
  texts.push('last text before end');
  await endWriter(ch.writer.stream);

  const res = await withTimeout(call, 30000, 'chan::consume result');
  assert.equal(res.ok, true, `reader failed: ${res.error}`);
  assert.equal(res.tag, 'interleaved');
  assert.deepEqual(res.texts, texts, 'text messages must arrive complete and in order');
  const expected = Buffer.concat(chunks);
  assert.equal(res.bytes, expected.length);
  assert.equal(res.sha256, sha256(expected));
  assert.ok(Buffer.from(res.data, 'base64').equals(expected), 'binary data must arrive byte-exact');

  // A finished channel is gone: its refs no longer open anything.
  for (const dir of ['read', 'write']) {
    const r = await tryUpgrade(channelUrl(ctx.url, ch.readerRef.channel_id, ch.readerRef.access_key, dir));
    if (r.ws) r.ws.terminate();
    assert.equal(r.status, 404, `${dir} on a finished channel: HTTP ${r.status}`);
  }
});

engineTest('raw frames: order and text/binary type are preserved exactly; the reader is closed with 1000', async (ctx) => {
  const w = ctx.worker('chan-raw');
  const ch = await w.createChannel();
  const reader = new RawEnd(channelUrl(ctx.url, ch.readerRef.channel_id, ch.readerRef.access_key, 'read'));
  await reader.opened; // reader first this time
  const writer = new RawEnd(channelUrl(ctx.url, ch.writerRef.channel_id, ch.writerRef.access_key, 'write'));
  await writer.opened;

  // The engine ignores what a reader sends: it is not relayed anywhere and does not disturb the channel.
  await reader.send('a reader frame the engine must ignore', false);
  await reader.send(Buffer.from([9, 9, 9]), true);
  const writerGot = [];
  writer.ws.on('message', (d) => writerGot.push(d));

  const sent = [];
  for (let i = 0; i < 200; i++) {
    const binary = i % 3 !== 1;
    const data = binary ? crypto.randomBytes(1 + ((i * 7919) % 20000)) : `t${i}:${'x'.repeat(i % 17)}`;
    sent.push({ binary, data: binary ? data : Buffer.from(data) });
    writer.ws.send(data, { binary });
  }
  sent.push({ binary: false, data: Buffer.from('') });
  writer.ws.send('', { binary: false }); // an empty text frame is still a frame
  sent.push({ binary: true, data: Buffer.alloc(0) });
  writer.ws.send(Buffer.alloc(0), { binary: true });
  sent.push({ binary: true, data: crypto.randomBytes(5 * MiB) }); // bigger than the SDK's 64 KiB frames
  writer.ws.send(sent.at(-1).data, { binary: true });
  await drainSends(writer);
  writer.ws.close(1000, 'done');
  const rc = await reader.waitClosed(10000, 'reader close after the writer closed');
  assert.equal(rc.code, 1000, `reader close code ${rc.code} (expected 1000 after the writer finished)`);
  const wc = await writer.waitClosed();
  assert.equal(wc.code, 1000, 'the engine answers the writer\'s close handshake');

  assert.deepEqual(writerGot, [], 'nothing is ever sent to a writer');
  assert.equal(reader.frames.length, sent.length, 'every frame is relayed as its own frame');
  sent.forEach((s, i) => {
    const got = reader.frames[i];
    assert.equal(got.binary, s.binary, `frame ${i}: type (binary=${s.binary})`);
    assert.ok(Buffer.from(got.data).equals(s.data), `frame ${i}: content`);
  });
});

engineTest('writer writes everything and closes before the reader connects: reader gets all data, then end', async (ctx) => {
  const producer = ctx.worker('chan-early-producer');
  const consumer = ctx.worker('chan-late-consumer');
  consumer.registerFunction('chan::late_consume', async (data) => readChannel(data.reader));
  await waitForFunctions(producer, ['chan::late_consume']);

  // (a) SDK writer: 3 MiB + texts, fully closed before anyone reads.
  const ch = await producer.createChannel();
  const chunks = [];
  for (let i = 0; i < 3; i++) {
    chunks.push(crypto.randomBytes(MiB));
    await writeChunk(ch.writer.stream, chunks[i]);
    ch.writer.sendMessage(`after chunk ${i}`);
  }
  await endWriter(ch.writer.stream); // resolves once the writer socket is closed
  await sleep(200);
  const res = await producer.trigger({ function_id: 'chan::late_consume', payload: { reader: ch.readerRef }, timeoutMs: 20000 });
  assert.equal(res.ok, true, `late reader failed: ${res.error}`);
  assert.deepEqual(res.texts, ['after chunk 0', 'after chunk 1', 'after chunk 2']);
  assert.equal(res.bytes, 3 * MiB);
  assert.equal(res.sha256, sha256(Buffer.concat(chunks)));

  // (b) Raw writer: exact frames and the 1000 close for a reader that arrives after the writer left.
  const ch2 = await producer.createChannel(); // 64 slots: all 8 frames fit, so the writer can finish alone
  const writer = new RawEnd(channelUrl(ctx.url, ch2.writerRef.channel_id, ch2.writerRef.access_key, 'write'));
  await writer.opened;
  const frames = [];
  for (let i = 0; i < 8; i++) {
    const binary = i % 2 === 0;
    const data = binary ? crypto.randomBytes(1000 + i) : `m${i}`;
    frames.push({ binary, data: Buffer.from(data) });
    await writer.send(data, binary);
  }
  writer.ws.close(1000);
  const wc = await writer.waitClosed(5000, 'writer close handshake with no reader connected');
  assert.equal(wc.code, 1000);
  await sleep(100);
  const reader = new RawEnd(channelUrl(ctx.url, ch2.readerRef.channel_id, ch2.readerRef.access_key, 'read'));
  await reader.opened;
  const rc = await reader.waitClosed(5000, 'late reader close');
  assert.equal(rc.code, 1000);
  assert.equal(reader.frames.length, frames.length);
  frames.forEach((f, i) => {
    assert.equal(reader.frames[i].binary, f.binary, `frame ${i} type`);
    assert.ok(Buffer.from(reader.frames[i].data).equals(f.data), `frame ${i} content`);
  });
});

engineTest('writer blocked on a full buffer with no reader yet: closes after the reader drains it', async (ctx) => {
  // More frames than buffer_size before the reader exists: the writer must be paused (not fail), then
  // everything flows once the reader connects, and the writer's close still ends the reader.
  const w = ctx.worker('chan-full');
  const ch = await w.createChannel(4);
  const writer = new RawEnd(channelUrl(ctx.url, ch.writerRef.channel_id, ch.writerRef.access_key, 'write'));
  await writer.opened;
  const frames = [];
  for (let i = 0; i < 64; i++) {
    const data = crypto.randomBytes(32 * 1024);
    frames.push(data);
    writer.ws.send(data, { binary: true });
  }
  writer.ws.close(1000);
  await sleep(300);
  assert.equal(writer.ws.readyState, WebSocket.CLOSING, 'the writer cannot finish while its frames wait for space');
  const reader = new RawEnd(channelUrl(ctx.url, ch.readerRef.channel_id, ch.readerRef.access_key, 'read'));
  await reader.opened;
  const rc = await reader.waitClosed(10000);
  assert.equal(rc.code, 1000);
  assert.equal(reader.frames.length, 64);
  frames.forEach((f, i) => assert.ok(Buffer.from(reader.frames[i].data).equals(f), `frame ${i}`));
  const wc = await writer.waitClosed(5000);
  assert.equal(wc.code, 1000);
});

// ---------------------------------------------------------------------------------------------------------
// Refusals: HTTP status codes before the upgrade

engineTest('channel endpoint refusals: wrong key / unknown id 404, bad query 400, second reader or writer 409', async (ctx) => {
  const w = ctx.worker('chan-refuse');
  const ch = await w.createChannel();
  const { channel_id: id, access_key: key } = ch.readerRef;

  const expect = async (url, status, body, what) => {
    const r = await tryUpgrade(url);
    if (r.ws) r.ws.terminate();
    assert.equal(r.status, status, `${what}: HTTP ${r.status} (expected ${status}) for ${url}`);
    if (body !== undefined) {
      assert.equal(r.body.trimEnd(), body, `${what}: response body`);
    }
  };

  await expect(channelUrl(ctx.url, id, crypto.randomUUID(), 'read'), 404, 'Channel not found', 'wrong key (read)');
  await expect(channelUrl(ctx.url, id, crypto.randomUUID(), 'write'), 404, 'Channel not found', 'wrong key (write)');
  await expect(channelUrl(ctx.url, crypto.randomUUID(), key, 'read'), 404, 'Channel not found', 'unknown id');
  await expect(channelUrl(ctx.url, 'not-a-uuid', key, 'write'), 404, 'Channel not found', 'malformed id');
  await expect(channelUrl(ctx.url, id, key, 'sideways'), 400, undefined, 'bad dir');
  await expect(channelUrl(ctx.url, id, key, 'READ'), 400, undefined, 'upper-case dir');
  await expect(channelUrl(ctx.url, id, undefined, 'read'), 400, undefined, 'missing key');
  await expect(channelUrl(ctx.url, id, key, undefined), 400, undefined, 'missing dir');
  await expect(channelUrl(ctx.url, id, '', 'read'), 400, undefined, 'empty key');

  // None of the refusals consumed a side: the real reader and writer still connect, once each.
  const reader = new RawEnd(channelUrl(ctx.url, id, key, 'read'));
  await reader.opened;
  await expect(channelUrl(ctx.url, id, key, 'read'), 409, undefined, 'second reader');
  const writer = new RawEnd(channelUrl(ctx.url, id, key, 'write'));
  await writer.opened;
  await expect(channelUrl(ctx.url, id, key, 'write'), 409, undefined, 'second writer');
  await expect(channelUrl(ctx.url, id, crypto.randomUUID(), 'read'), 404, 'Channel not found', 'wrong key on a busy channel');

  // ...and the channel is unaffected by the refused connections.
  await writer.send('still works', false);
  await writer.send(Buffer.from([1, 2, 3]), true);
  writer.ws.close(1000);
  const rc = await reader.waitClosed();
  assert.equal(rc.code, 1000);
  assert.deepEqual(reader.frames.map((f) => [f.binary, Buffer.from(f.data).toString('hex')]),
    [[false, Buffer.from('still works').toString('hex')], [true, '010203']]);
});

engineTest('SDK reader and writer with a wrong access key fail instead of hanging', async (ctx) => {
  const consumer = ctx.worker('chan-badkey-consumer');
  consumer.registerFunction('chan::badkey_read', async (data) => readChannel(data.reader));
  consumer.registerFunction('chan::badkey_write', async (data) => {
    try {
      await writeChunk(data.writer.stream, Buffer.from('nope'));
      return { ok: true };
    } catch (e) {
      return { ok: false, error: e?.message ?? String(e) };
    }
  });
  const caller = ctx.worker('chan-badkey-caller');
  await waitForFunctions(caller, ['chan::badkey_read', 'chan::badkey_write']);
  const ch = await caller.createChannel();
  const badKey = crypto.randomUUID();

  const r = await caller.trigger({
    function_id: 'chan::badkey_read',
    payload: { reader: { ...ch.readerRef, access_key: badKey } },
    timeoutMs: 10000,
  });
  assert.equal(r.ok, false, 'a reader with the wrong key must fail');
  assert.match(r.error, /404/, `reader error: ${r.error}`);

  const wr = await caller.trigger({
    function_id: 'chan::badkey_write',
    payload: { writer: { ...ch.writerRef, access_key: badKey } },
    timeoutMs: 10000,
  });
  assert.equal(wr.ok, false, 'a writer with the wrong key must fail');
  assert.match(wr.error, /404/, `writer error: ${wr.error}`);

  // The real channel is untouched by the failed attempts.
  const reader = new RawEnd(channelUrl(ctx.url, ch.readerRef.channel_id, ch.readerRef.access_key, 'read'));
  await reader.opened;
  const writer = new RawEnd(channelUrl(ctx.url, ch.writerRef.channel_id, ch.writerRef.access_key, 'write'));
  await writer.opened;
  writer.ws.close(1000);
  assert.equal((await reader.waitClosed()).code, 1000);
});

engineTest('channels work on every worker-manager listener (create on one, connect on the other)', {
  listeners: [{}, {}],
}, async (ctx) => {
  const w = ctx.worker('chan-multi');
  const ch = await w.createChannel();
  const writer = new RawEnd(channelUrl(ctx.engine.urlFor(1), ch.writerRef.channel_id, ch.writerRef.access_key, 'write'));
  const reader = new RawEnd(channelUrl(ctx.engine.urlFor(0), ch.readerRef.channel_id, ch.readerRef.access_key, 'read'));
  await writer.opened;
  await reader.opened;
  await writer.send('across listeners', false);
  writer.ws.close(1000);
  assert.equal((await reader.waitClosed()).code, 1000);
  assert.equal(reader.frames.length, 1);
  assert.equal(reader.frames[0].data.toString(), 'across listeners');

  // A second-listener SDK worker reads a channel created through the first.
  const other = ctx.worker('chan-multi-2', { url: ctx.engine.urlFor(1) });
  other.registerFunction('chan::multi_read', async (data) => readChannel(data.reader));
  await waitForFunctions(w, ['chan::multi_read']);
  const ch2 = await w.createChannel();
  const call = w.trigger({ function_id: 'chan::multi_read', payload: { reader: ch2.readerRef }, timeoutMs: 10000 });
  call.catch(() => {}); // awaited below
  const payload = crypto.randomBytes(300000);
  await writeChunk(ch2.writer.stream, payload);
  await endWriter(ch2.writer.stream);
  const res = await call;
  assert.equal(res.ok, true, res.error);
  assert.equal(res.sha256, sha256(payload));
});

// ---------------------------------------------------------------------------------------------------------
// Reader leaves / backpressure

engineTest('reader disconnects => the writer is closed with 1001 and the channel is gone', async (ctx) => {
  const w = ctx.worker('chan-reader-gone');
  for (const how of ['close', 'terminate']) {
    const ch = await w.createChannel();
    const writer = new RawEnd(channelUrl(ctx.url, ch.writerRef.channel_id, ch.writerRef.access_key, 'write'));
    const reader = new RawEnd(channelUrl(ctx.url, ch.readerRef.channel_id, ch.readerRef.access_key, 'read'));
    await writer.opened;
    await reader.opened;
    await writer.send('hello', false);
    await waitFor(() => reader.frames.length === 1, { what: 'first frame at the reader' });
    if (how === 'close') reader.ws.close(1000);
    else reader.ws.terminate();
    const wc = await writer.waitClosed(3000, `writer close after the reader's ${how}`);
    assert.equal(wc.code, 1001, `writer close code after reader ${how}: ${wc.code} (expected 1001 going away)`);
    const r = await tryUpgrade(channelUrl(ctx.url, ch.readerRef.channel_id, ch.readerRef.access_key, 'read'));
    if (r.ws) r.ws.terminate();
    assert.equal(r.status, 404, `channel must be removed after its reader left (reader ${how})`);
  }
});

engineTest('reader leaves while the writer is paused on a full buffer => writer closed with 1001', async (ctx) => {
  const w = ctx.worker('chan-reader-gone-full');
  const ch = await w.createChannel(2);
  const reader = new RawEnd(channelUrl(ctx.url, ch.readerRef.channel_id, ch.readerRef.access_key, 'read'), { paused: true });
  await reader.opened;
  const writer = new RawEnd(channelUrl(ctx.url, ch.writerRef.channel_id, ch.writerRef.access_key, 'write'));
  await writer.opened;
  const big = crypto.randomBytes(MiB);
  for (let i = 0; i < 64; i++) writer.ws.send(big, { binary: true });
  // Wait until the engine stopped taking data (the paused reader's and the buffer's space are used up).
  await waitBlocked(writer, 10000);
  reader.ws.terminate();
  const wc = await writer.waitClosed(3000, 'writer close after the reader left');
  assert.equal(wc.code, 1001);
});

engineTest('backpressure: a stalled reader stops the engine reading the writer; memory stays flat; data intact', { timeout: 90000 }, async (ctx) => {
  const w = ctx.worker('chan-bp');
  const ch = await w.createChannel(1024); // max slots: the 16 MiB byte bound is what limits 1 MiB frames
  const pid = ctx.engine.proc.pid;
  const reader = new RawEnd(channelUrl(ctx.url, ch.readerRef.channel_id, ch.readerRef.access_key, 'read'), { paused: true });
  await reader.opened;
  const writer = new RawEnd(channelUrl(ctx.url, ch.writerRef.channel_id, ch.writerRef.access_key, 'write'));
  await writer.opened;
  const sampler = rssSampler(pid);

  const FRAMES = 256;
  const FRAME = MiB;
  const h = crypto.createHash('sha256');
  for (let i = 0; i < FRAMES; i++) {
    const buf = patternChunk(7, i, FRAME);
    h.update(buf);
    writer.ws.send(buf, { binary: true });
  }
  const expectedSha = h.digest('hex');
  await waitBlocked(writer, 15000, 500);
  const accepted = FRAMES * FRAME - writer.ws.bufferedAmount;
  const stalled = sampler.stats.max;
  console.log(`# backpressure: stalled after the engine accepted ${mb(accepted)} MB of ${mb(FRAMES * FRAME)} MB; ` +
    `engine RSS start ${mb(sampler.stats.start)} MB, max while stalled ${mb(stalled)} MB`);
  // 16 MiB in the channel + one frame in flight + kernel socket buffers on both hops.
  assert.ok(accepted < 64 * MiB, `the engine kept reading a writer whose reader is stalled (${mb(accepted)} MB accepted)`);
  assertMemoryBound(stalled - sampler.stats.start < 64 * MiB,
    `engine RSS grew by ${mb(stalled - sampler.stats.start)} MB while the reader was stalled`);

  // Resume the reader: everything arrives intact, then the writer's close ends the stream.
  const rh = crypto.createHash('sha256');
  let got = 0;
  reader.keepFrames = false; // do not keep 256 MiB in this process
  reader.onFrame = (data) => { rh.update(data); got += data.length; };
  reader.ws.resume();
  await waitFor(() => got === FRAMES * FRAME, { timeoutMs: 30000, what: 'all data at the reader' });
  writer.ws.close(1000);
  assert.equal((await reader.waitClosed(5000)).code, 1000);
  const s = sampler.stop();
  console.log(`# backpressure: engine RSS min ${mb(s.min)} MB, max ${mb(s.max)} MB over ${s.samples} samples`);
  assert.equal(rh.digest('hex'), expectedSha, 'data must arrive intact after backpressure');
  assertMemoryBound(s.max - s.start < 64 * MiB, `engine RSS grew by ${mb(s.max - s.start)} MB`);
});

// ---------------------------------------------------------------------------------------------------------
// 1 GiB between two worker processes

engineTest('1 GiB from one worker process to another through a channel: intact, engine RSS bounded', { timeout: 110000 }, async (ctx) => {
  const TOTAL = 1024 * MiB;
  const CHUNK = MiB;
  const SEED = 20240611;
  const wProc = ctx.child('bigw', 'channels');
  const rProc = ctx.child('bigr', 'channels');
  await Promise.all([wProc.waitLine(/^READY /), rProc.waitLine(/^READY /)]);
  const main = ctx.worker('chan-big-main');
  await waitForFunctions(main, ['bigw::produce', 'bigr::consume']);
  const ch = await main.createChannel();
  const pid = ctx.engine.proc.pid;

  const sampler = rssSampler(pid, 100);
  const t0 = Date.now();
  const reading = main.trigger({ function_id: 'bigr::consume', payload: { reader: ch.readerRef }, timeoutMs: 100000 });
  const writing = main.trigger({
    function_id: 'bigw::produce',
    payload: { writer: ch.writerRef, total_bytes: TOTAL, chunk_bytes: CHUNK, seed: SEED },
    timeoutMs: 100000,
  });
  reading.catch(() => {}); // awaited below
  const w = await writing;
  // A failed writer would leave the reader waiting for an end of stream: report the writer's failure first.
  assert.equal(w.ok, true, `writer failed after ${w.bytes} bytes: ${w.error}`);
  const r = await withTimeout(reading, 30000, 'reader to finish after the writer closed');
  const secs = (Date.now() - t0) / 1000;
  const s = sampler.stop();
  console.log(`# 1 GiB: ${(TOTAL / 1e6 / secs).toFixed(0)} MB/s (${secs.toFixed(1)} s; writer ${w.ms} ms, reader ${r.ms} ms, ` +
    `${r.chunks} reader chunks); engine RSS start ${mb(s.start)} MB, min ${mb(s.min)} MB, max ${mb(s.max)} MB, ` +
    `end ${mb(s.last)} MB (${s.samples} samples)`);

  assert.equal(r.ok, true, `reader failed: ${r.error}`);
  assert.equal(w.bytes, TOTAL);
  assert.equal(r.bytes, TOTAL, 'reader byte count');
  assert.equal(r.sha256, w.sha256, 'reader SHA-256 must equal the writer\'s');
  assert.deepEqual(r.texts, []);
  assert.ok(s.samples >= Math.floor(secs * 5), `RSS sampled only ${s.samples} times in ${secs.toFixed(1)} s`);
  assertMemoryBound(s.max - s.start < 100 * 1e6,
    `engine RSS grew by ${mb(s.max - s.start)} MB during the transfer (limit 100 MB)`);
  // Independent check that the writer really sent the agreed pattern.
  assert.equal(w.sha256, patternSha256(SEED, TOTAL, CHUNK), 'writer SHA-256 vs the expected pattern');
});

// ---------------------------------------------------------------------------------------------------------
// Many channels, empty channel, frame limit, shutdown

engineTest('50 concurrent channels do not mix data; an empty channel just ends', async (ctx) => {
  const w = ctx.worker('chan-many');
  const N = 50;
  const chans = await Promise.all(Array.from({ length: N }, () => w.createChannel()));
  const ends = chans.map((ch, i) => {
    const writer = new RawEnd(channelUrl(ctx.url, ch.writerRef.channel_id, ch.writerRef.access_key, 'write'));
    const reader = new RawEnd(channelUrl(ctx.url, ch.readerRef.channel_id, ch.readerRef.access_key, 'read'));
    const frames = Array.from({ length: 20 }, (_, k) => (k % 2
      ? `channel ${i} text ${k}`
      : Buffer.concat([Buffer.from(`c${i}f${k}:`), crypto.randomBytes(100 + ((i * 31 + k) % 5000))])));
    return { writer, reader, frames };
  });
  await Promise.all(ends.flatMap((e) => [e.writer.opened, e.reader.opened]));
  await Promise.all(ends.map(async (e) => {
    for (const f of e.frames) await e.writer.send(f, typeof f !== 'string');
    e.writer.ws.close(1000);
  }));
  const closes = await Promise.all(ends.map((e) => e.reader.waitClosed(10000)));
  ends.forEach((e, i) => {
    assert.equal(closes[i].code, 1000, `channel ${i} close code`);
    assert.equal(e.reader.frames.length, e.frames.length, `channel ${i} frame count`);
    e.frames.forEach((f, k) => {
      const got = e.reader.frames[k];
      assert.equal(got.binary, typeof f !== 'string', `channel ${i} frame ${k} type`);
      assert.ok(Buffer.from(got.data).equals(Buffer.from(f)), `channel ${i} frame ${k} content`);
    });
  });

  // Writer closes without sending anything: the reader sees a clean, empty end of stream.
  const ch = await w.createChannel();
  const reader = new RawEnd(channelUrl(ctx.url, ch.readerRef.channel_id, ch.readerRef.access_key, 'read'));
  await reader.opened;
  const writer = new RawEnd(channelUrl(ctx.url, ch.writerRef.channel_id, ch.writerRef.access_key, 'write'));
  await writer.opened;
  writer.ws.close(1000);
  assert.equal((await reader.waitClosed()).code, 1000);
  assert.equal(reader.frames.length, 0);
});

engineTest('a channel frame above max_message_bytes closes the writer with 1009', {
  listeners: [{ max_message_bytes: 1048576 }],
}, async (ctx) => {
  const w = ctx.worker('chan-limit');
  const ch = await w.createChannel();
  const reader = new RawEnd(channelUrl(ctx.url, ch.readerRef.channel_id, ch.readerRef.access_key, 'read'));
  await reader.opened;
  const writer = new RawEnd(channelUrl(ctx.url, ch.writerRef.channel_id, ch.writerRef.access_key, 'write'));
  await writer.opened;
  const ok = crypto.randomBytes(MiB); // exactly the limit: accepted
  await writer.send(ok, true);
  await waitFor(() => reader.frames.length === 1, { what: 'the 1 MiB frame at the reader' });
  assert.ok(Buffer.from(reader.frames[0].data).equals(ok));
  writer.ws.send(crypto.randomBytes(MiB + 1), { binary: true });
  const wc = await writer.waitClosed(5000, 'writer close after an oversized frame');
  assert.equal(wc.code, 1009, `writer close code ${wc.code} (expected 1009 message too big)`);
  // The reader is not left hanging: its stream ends.
  await reader.waitClosed(5000, 'reader close after the writer was refused');
  assert.equal(reader.frames.length, 1, 'the oversized frame is not relayed');
});

engineTest('SIGTERM with open channels (active, paused and half-connected): sockets closed, engine exits 0', {
  manageEngine: false,
}, async (ctx) => {
  const w = ctx.worker('chan-shutdown');
  // idle but fully connected
  const a = await w.createChannel();
  const aw = new RawEnd(channelUrl(ctx.url, a.writerRef.channel_id, a.writerRef.access_key, 'write'));
  const ar = new RawEnd(channelUrl(ctx.url, a.readerRef.channel_id, a.readerRef.access_key, 'read'));
  // writer paused on a full buffer, no reader
  const b = await w.createChannel(1);
  const bw = new RawEnd(channelUrl(ctx.url, b.writerRef.channel_id, b.writerRef.access_key, 'write'));
  // reader waiting for a writer that never comes
  const c = await w.createChannel();
  const cr = new RawEnd(channelUrl(ctx.url, c.readerRef.channel_id, c.readerRef.access_key, 'read'));
  await Promise.all([aw.opened, ar.opened, bw.opened, cr.opened]);
  await aw.send('x', false);
  await waitFor(() => ar.frames.length === 1, { what: 'frame on channel a' });
  for (let i = 0; i < 32; i++) bw.ws.send(crypto.randomBytes(MiB), { binary: true });
  await sleep(300);

  const { durationMs } = await ctx.engine.stop({ timeoutMs: 10000 }); // asserts exit code 0
  assert.ok(durationMs < 5000, `shutdown with open channels took ${durationMs} ms`);
  for (const [name, end] of [['a writer', aw], ['a reader', ar], ['b writer (paused)', bw], ['c reader', cr]]) {
    await end.waitClosed(3000, `${name} socket after engine shutdown`);
  }
});
