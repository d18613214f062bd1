// iii-stream through the official iii-sdk@0.11.6 and raw `ws` clients: every stream::* function (results,
// ordering, absent vs null, deserialization errors), the client WebSocket server (join/leave, sync, create /
// update / delete / custom events, group and item subscriptions, two groups kept apart, the documented
// /stream/{name}/{group}/ path, malformed frames ignored), stream:join refusals and the auth_function context
// reaching stream:join / stream:leave, the `stream` trigger type (filters, condition function), custom streams
// registered with createStream (and the fallback to storage when their worker leaves), and durability of the
// file_based store across SIGKILL.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import WebSocket from 'ws';
import { IIIInvocationError } from 'iii-sdk';
import {
  engineTest, newWorker, rejectionOf, sleep, startEngine, waitFor, waitForFunctions, withTimeout,
} from './harness.mjs';

// ---------------------------------------------------------------------------------------------------------
// helpers

const q = (s) => JSON.stringify(s); // a YAML double-quoted scalar
const streamYaml = (extra = '') => `  - name: iii-stream\n    config: { host: 127.0.0.1, port: 0${extra} }`;
const STREAM_ENGINE = { extraYaml: streamYaml() };
const fileBasedYaml = (dir) =>
  streamYaml(`, adapter: { name: kv, config: { store_method: file_based, file_path: ${q(dir)} } }`);

const STREAM_FUNCTIONS = [
  'stream::set', 'stream::get', 'stream::delete', 'stream::list', 'stream::list_groups', 'stream::list_all',
  'stream::send', 'stream::update',
];
const DOC_URL = 'https://iii.dev/docs/workers/iii-state#error-codes';
/** Time given to the engine to (wrongly) do something we assert it does not do. */
const SETTLE_MS = 300;
const STREAM_LISTEN_RE = /iii-stream listening on ([0-9.]+):(\d+)/;

/** ws://127.0.0.1:<port> of the engine's iii-stream client server (read from its log line). */
async function streamUrl(engine) {
  const m = await waitFor(() => {
    for (const l of engine.lines) {
      const hit = STREAM_LISTEN_RE.exec(l);
      if (hit) return hit;
    }
    return null;
  }, { timeoutMs: 5000, what: "the 'iii-stream listening on host:port' log line" });
  assert.equal(m[1], '127.0.0.1', 'iii-stream binds the configured host');
  assert.notEqual(Number(m[2]), 0, 'port 0 is replaced by the bound port in the log line');
  return `ws://127.0.0.1:${m[2]}`;
}

function call(w, fid, payload) {
  return w.trigger({ function_id: fid, payload, timeoutMs: 5000 });
}

async function streamWorker(ctx, name) {
  const w = ctx.worker(name);
  await waitForFunctions(w, STREAM_FUNCTIONS);
  return w;
}

/** The call must fail with `deserialization_error` naming `fid`; returns the error. */
async function deserializationError(w, fid, payload) {
  const e = await rejectionOf(call(w, fid, payload), `${fid}(${JSON.stringify(payload)})`);
  assert.ok(e instanceof IIIInvocationError, `expected IIIInvocationError, got ${e}`);
  assert.equal(e.code, 'deserialization_error', `${fid}(${JSON.stringify(payload)}): ${e.message}`);
  const prefix = `deserialization_error: Failed to deserialize input for ${fid}: `;
  assert.ok(e.message.startsWith(prefix) && e.message.length > prefix.length,
    `message ${JSON.stringify(e.message)} must start with ${JSON.stringify(prefix)} and give a reason`);
  return e;
}

async function listTriggers(w) {
  const res = await w.trigger({ function_id: 'engine::triggers::list', payload: {}, timeoutMs: 3000 });
  return res.triggers;
}

/** Wait until the triggers of `fnIds` are listed; every one must have `state` (returns the rows). */
async function waitTriggerRows(w, fnIds, state = 'bound') {
  const rows = await waitFor(async () => {
    const all = await listTriggers(w);
    const mine = fnIds.map((f) => all.find((t) => t.function_id === f));
    return mine.every((r) => r && r.state !== 'pending') ? mine : null;
  }, { what: `triggers of ${fnIds.join(', ')} to leave the pending state` });
  for (const r of rows) assert.equal(r.state, state, `trigger row ${JSON.stringify(r)}`);
  return rows;
}

/** The wrapper every client and `stream` trigger receives (without the timestamp, checked separately). */
const wrap = (streamName, groupId, id, event) => ({ type: 'stream', streamName, groupId, id, event });

function assertWrapper(msg, expected, what) {
  assert.ok(msg && typeof msg === 'object', `${what}: expected a JSON object, got ${JSON.stringify(msg)}`);
  const { timestamp, ...rest } = msg;
  assert.ok(Number.isInteger(timestamp), `${what}: timestamp must be an integer (unix ms), got ${JSON.stringify(timestamp)}`);
  assert.ok(Math.abs(timestamp - Date.now()) < 60000, `${what}: timestamp ${timestamp} is not close to now (${Date.now()})`);
  assert.deepEqual(rest, expected, what);
}

/** A raw client of the iii-stream WebSocket server that checks every frame it receives. */
class StreamClient {
  static async open(url, { headers } = {}) {
    const c = new StreamClient();
    c.url = url;
    c.inbox = [];
    c.waiters = [];
    c.protocolErrors = [];
    c.closeInfo = null;
    c.ws = new WebSocket(url, { perMessageDeflate: false, headers });
    c.ws.on('message', (data, isBinary) => {
      if (isBinary) c.protocolErrors.push(`binary frame from the engine: ${data.toString()}`);
      let msg;
      try {
        msg = JSON.parse(data.toString());
      } catch {
        c.protocolErrors.push(`non-JSON frame from the engine: ${data.toString()}`);
        return;
      }
      c.inbox.push(msg);
      c.waiters = c.waiters.filter((fn) => !fn());
    });
    c.closed = new Promise((resolve) => c.ws.once('close', (code, reason) => {
      c.closeInfo = { code, reason: reason.toString() };
      c.waiters = c.waiters.filter((fn) => !fn());
      resolve(c.closeInfo);
    }));
    await withTimeout(new Promise((resolve, reject) => {
      c.ws.once('open', resolve);
      c.ws.once('error', reject);
      c.ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode} instead of an upgrade`)));
    }), 5000, `stream client connect to ${url}`);
    return c;
  }

  send(obj) { this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj)); }

  join(subscriptionId, streamName, groupId, id) {
    const data = { subscriptionId, streamName, groupId };
    if (id !== undefined) data.id = id;
    this.send({ type: 'join', data });
  }

  leave(subscriptionId, streamName, groupId, id) {
    const data = { subscriptionId, streamName, groupId };
    if (id !== undefined) data.id = id;
    this.send({ type: 'leave', data });
  }

  /** The next message (waits up to `timeoutMs`). */
  next(what, timeoutMs = 3000) {
    if (this.inbox.length) return Promise.resolve(this.inbox.shift());
    return withTimeout(new Promise((resolve, reject) => {
      this.waiters.push(() => {
        if (this.inbox.length) { resolve(this.inbox.shift()); return true; }
        if (this.closeInfo) { reject(new Error(`${what}: connection closed ${JSON.stringify(this.closeInfo)}`)); return true; }
        return false;
      });
    }), timeoutMs, `${this.url}: ${what}`);
  }

  /** The next message must be exactly this wrapper. */
  async expect(expected, what) {
    const msg = await this.next(what);
    assertWrapper(msg, expected, what);
    return msg;
  }

  async expectSilence(ms, what) {
    await sleep(ms);
    assert.deepEqual(this.inbox, [], `${what}: expected no message`);
  }

  assertClean() {
    assert.deepEqual(this.protocolErrors, [], 'every frame from the engine is a JSON text frame');
    assert.deepEqual(this.inbox, [], 'no unexpected message is left over');
  }

  get open() { return this.ws.readyState === WebSocket.OPEN; }

  async close() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(1000);
    await withTimeout(this.closed, 5000, 'stream client close');
  }
}

/** Opens clients and closes them after the test. */
function clientsFor(ctx) {
  const opened = [];
  ctx.defer(async () => { for (const c of opened) await c.close().catch(() => {}); });
  return async (url, opts) => {
    const c = await StreamClient.open(url, opts);
    opened.push(c);
    return c;
  };
}

/** Resolves with the HTTP status the stream server answers (ws upgrade attempt) for `url`. */
function upgradeStatus(url) {
  return withTimeout(new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.once('unexpected-response', (_req, res) => { resolve(res.statusCode); res.resume(); ws.terminate(); });
    ws.once('open', () => { ws.close(); resolve(101); });
    ws.once('error', (e) => reject(e));
  }), 5000, `upgrade attempt on ${url}`);
}

// ---------------------------------------------------------------------------------------------------------
// functions

engineTest('stream::set / get / delete / list / list_groups / list_all / send: results, order, absent vs null', STREAM_ENGINE, async (ctx) => {
  const w = await streamWorker(ctx, 'st-fn');
  const S = 'fn-s';
  const set = (group_id, item_id, data, stream_name = S) => call(w, 'stream::set', { stream_name, group_id, item_id, data });
  const get = (group_id, item_id, stream_name = S) => call(w, 'stream::get', { stream_name, group_id, item_id });
  const del = (group_id, item_id) => call(w, 'stream::delete', { stream_name: S, group_id, item_id });
  const list = (group_id, stream_name = S) => call(w, 'stream::list', { stream_name, group_id });
  const groups = (stream_name = S) => call(w, 'stream::list_groups', { stream_name });

  // set: explicit old_value null for a new item, the previous value otherwise; any JSON value.
  assert.deepEqual(await set('g1', 'a', { n: 1 }), { old_value: null, new_value: { n: 1 } });
  assert.deepEqual(await set('g1', 'b', 'text'), { old_value: null, new_value: 'text' });
  assert.deepEqual(await set('g1', 'c', [1, { deep: [true, null] }]), { old_value: null, new_value: [1, { deep: [true, null] }] });
  assert.deepEqual(await set('g1', 'd', 0), { old_value: null, new_value: 0 });
  assert.deepEqual(await set('g1', 'a', { n: 2 }), { old_value: { n: 1 }, new_value: { n: 2 } });
  const unicode = { s: 'ünïcødé ✓ 😀 "q" \\ \u0000', big: 2 ** 53 - 1, neg: -1.5 };
  assert.deepEqual(await set('g2', 'u', unicode), { old_value: null, new_value: unicode });
  assert.deepEqual(await set('g0', 'only', true), { old_value: null, new_value: true });
  assert.deepEqual(await set('x', 'k', 'v', 'fn-t'), { old_value: null, new_value: 'v' });

  // get: the value; a missing item / group / stream => absent result (undefined, not null).
  assert.deepEqual(await get('g1', 'a'), { n: 2 });
  assert.equal(await get('g1', 'b'), 'text');
  assert.strictEqual(await get('g1', 'd'), 0);
  assert.deepEqual(await get('g2', 'u'), unicode);
  assert.strictEqual(await get('g1', 'missing'), undefined, 'a missing item is an absent result');
  assert.strictEqual(await get('nope', 'a'), undefined, 'a missing group is an absent result');
  assert.strictEqual(await get('g1', 'a', 'no-such-stream'), undefined, 'a missing stream is an absent result');
  assert.strictEqual(await get('g1', 'a', 'fn-t'), undefined, 'streams are separate');

  // list: values only, insertion order; overwriting keeps the position.
  assert.deepEqual(await list('g1'), [{ n: 2 }, 'text', [1, { deep: [true, null] }], 0]);
  assert.deepEqual(await list('nope'), [], 'an unknown group lists as []');
  assert.deepEqual(await list('x', 'fn-t'), ['v']);

  // list_groups: sorted group ids of that stream only.
  assert.deepEqual(await groups(), ['g0', 'g1', 'g2']);
  assert.deepEqual(await groups('fn-t'), ['x']);
  assert.deepEqual(await groups('no-such-stream'), []);

  // list_all: every stream with its groups, sorted by id, and the count of streams.
  assert.deepEqual(await call(w, 'stream::list_all', {}), {
    stream: [{ id: 'fn-s', groups: ['g0', 'g1', 'g2'] }, { id: 'fn-t', groups: ['x'] }],
    count: 2,
  });

  // delete: {old_value}; a missing item => {old_value: null}; the last item's group disappears.
  assert.deepEqual(await del('g1', 'b'), { old_value: 'text' });
  assert.deepEqual(await del('g1', 'b'), { old_value: null }, 'deleting a missing item');
  assert.deepEqual(await del('nope', 'b'), { old_value: null }, 'deleting from a missing group');
  assert.strictEqual(await get('g1', 'b'), undefined);
  assert.deepEqual(await list('g1'), [{ n: 2 }, [1, { deep: [true, null] }], 0]);
  assert.deepEqual(await set('g1', 'b', 'back'), { old_value: null, new_value: 'back' });
  assert.deepEqual(await list('g1'), [{ n: 2 }, [1, { deep: [true, null] }], 0, 'back'], 'a re-created item goes last');
  assert.deepEqual(await del('g0', 'only'), { old_value: true });
  assert.deepEqual(await groups(), ['g1', 'g2'], 'a group whose last item was deleted is gone');
  assert.deepEqual(await call(w, 'stream::list_all', {}), {
    stream: [{ id: 'fn-s', groups: ['g1', 'g2'] }, { id: 'fn-t', groups: ['x'] }],
    count: 2,
  });

  // send: absent result, nothing stored.
  assert.strictEqual(await call(w, 'stream::send', { stream_name: S, group_id: 'g9', type: 'ping', data: { p: 1 } }), undefined);
  assert.strictEqual(await call(w, 'stream::send', { stream_name: S, group_id: 'g1', type: 'ping', data: null, id: 'a' }), undefined);
  assert.deepEqual(await groups(), ['g1', 'g2'], 'send stores nothing');
  assert.deepEqual(await get('g1', 'a'), { n: 2 });
});

engineTest('stream::update: ops per modules.md §2, errors per op, empty ops create {}', STREAM_ENGINE, async (ctx) => {
  const w = await streamWorker(ctx, 'st-upd');
  const S = 'upd';
  const update = (item_id, ops, group_id = 'g') => call(w, 'stream::update', { stream_name: S, group_id, item_id, ops });

  const r1 = await update('u', [
    { type: 'set', path: 'name', value: 'x' },
    { type: 'increment', path: 'count', by: 2 },
    { type: 'append', path: 'tags', value: 'a' },
    { type: 'append', path: 'tags', value: 'b' },
    { type: 'append', path: 'nums', value: 1 },
    { type: 'append', path: 'nums', value: [2] },
    { type: 'merge', path: ['meta', 'inner'], value: { k: 1 } },
    { type: 'set', path: 'a.b', value: 'literal key' },
    { type: 'remove', path: 'gone' },
  ]);
  const v1 = { name: 'x', count: 2, tags: 'ab', nums: [1, [2]], meta: { inner: { k: 1 } }, 'a.b': 'literal key' };
  assert.deepEqual(r1, { old_value: null, new_value: v1 }, 'no `errors` key when every op applied');
  assert.deepEqual(await call(w, 'stream::get', { stream_name: S, group_id: 'g', item_id: 'u' }), v1);

  // A failing op is skipped and recorded; later ops still apply; the value is written back.
  const r2 = await update('u', [
    { type: 'increment', path: 'name', by: 1 },
    { type: 'decrement', path: 'count', by: 5 },
    { type: 'merge', path: 'meta', value: { more: true } },
    { type: 'merge', path: ['__proto__'], value: { x: 1 } },
    { type: 'remove', path: 'a.b' },
  ]);
  const v2 = { name: 'x', count: -3, tags: 'ab', nums: [1, [2]], meta: { inner: { k: 1 }, more: true } };
  assert.deepEqual(r2, {
    old_value: v1,
    new_value: v2,
    errors: [
      { op_index: 0, code: 'increment.not_number', message: "Expected number at path 'name', got string.", doc_url: DOC_URL },
      { op_index: 3, code: 'merge.path.proto_polluted', message: "Path segment '__proto__' is not allowed (prototype pollution).", doc_url: DOC_URL },
    ],
  });
  assert.deepEqual(await call(w, 'stream::get', { stream_name: S, group_id: 'g', item_id: 'u' }), v2);

  // Root ops on a missing item.
  assert.deepEqual(await update('n', [{ type: 'increment', path: '', by: 7 }]), { old_value: null, new_value: 7 });
  assert.deepEqual(await update('n', [{ type: 'decrement', path: '', by: 10 }]), { old_value: 7, new_value: -3 });
  assert.deepEqual(await update('s', [{ type: 'append', path: '', value: 'ab' }, { type: 'append', path: '', value: 'cd' }]),
    { old_value: null, new_value: 'abcd' });
  assert.deepEqual(await update('r', [{ type: 'set', path: '', value: [1] }, { type: 'remove', path: '' }]),
    { old_value: null, new_value: null });
  // Empty ops on a missing item create {}.
  assert.deepEqual(await update('e', []), { old_value: null, new_value: {} });
  assert.deepEqual(await call(w, 'stream::list', { stream_name: S, group_id: 'g' }), [v2, -3, 'abcd', null, {}]);

  // A malformed op rejects the whole request; nothing is applied.
  for (const ops of [
    [{ type: 'set', path: 'name', value: 'y' }, { type: 'bogus', path: 'x' }],
    [{ type: 'increment', path: 'count', by: 1.5 }],
    [{ type: 'set', path: 5, value: 1 }],
    [{ type: 'merge', path: 'x' }],
    { type: 'set', path: 'x', value: 1 },
  ]) {
    await deserializationError(w, 'stream::update', { stream_name: S, group_id: 'g', item_id: 'u', ops });
  }
  assert.deepEqual(await call(w, 'stream::get', { stream_name: S, group_id: 'g', item_id: 'u' }), v2, 'no malformed update applied');
});

engineTest('bad input to every stream function => deserialization_error, nothing stored', STREAM_ENGINE, async (ctx) => {
  const w = await streamWorker(ctx, 'st-bad');
  const base = { stream_name: 'bad', group_id: 'g', item_id: 'i' };
  const cases = [
    ['stream::set', { stream_name: 'bad', group_id: 'g', item_id: 'i' }], // data missing
    ['stream::set', { ...base, stream_name: 5, data: 1 }],
    ['stream::set', { group_id: 'g', item_id: 'i', data: 1 }],
    ['stream::set', null],
    ['stream::set', 'a string'],
    ['stream::get', { stream_name: 'bad', group_id: 'g' }],
    ['stream::get', { ...base, item_id: 7 }],
    ['stream::get', null],
    ['stream::delete', { stream_name: 'bad', item_id: 'i' }],
    ['stream::delete', [1, 2]],
    ['stream::list', { stream_name: 'bad' }],
    ['stream::list', { stream_name: 'bad', group_id: null }],
    ['stream::list_groups', {}],
    ['stream::list_groups', { stream_name: ['bad'] }],
    ['stream::list_all', null],
    ['stream::list_all', 42],
    ['stream::send', { stream_name: 'bad', group_id: 'g', data: 1 }], // type missing
    ['stream::send', { stream_name: 'bad', group_id: 'g', type: 'x' }], // data missing
    ['stream::send', { stream_name: 'bad', group_id: 'g', type: 'x', data: 1, id: 5 }],
    ['stream::update', { ...base }], // ops missing
    ['stream::update', { ...base, ops: null }],
  ];
  for (const [fid, payload] of cases) await deserializationError(w, fid, payload);
  assert.deepEqual(await call(w, 'stream::list_all', {}), { stream: [], count: 0 }, 'nothing was stored');
});

// ---------------------------------------------------------------------------------------------------------
// client WebSocket server

engineTest('clients: sync on join; create / update / delete / custom events; two groups kept apart; item subscriptions; leave', STREAM_ENGINE, async (ctx) => {
  const w = await streamWorker(ctx, 'st-ws');
  const url = await streamUrl(ctx.engine);
  const client = clientsFor(ctx);
  const S = 'live';
  const set = (group_id, item_id, data) => call(w, 'stream::set', { stream_name: S, group_id, item_id, data });
  const send = (group_id, type, data, id) => call(w, 'stream::send', { stream_name: S, group_id, type, data, ...(id === undefined ? {} : { id }) });

  await set('g1', 'x', { v: 0 });
  await set('g1', 'y', { v: 1 });

  const A = await client(url); // group g1
  const B = await client(url); // group g2
  const C = await client(url); // item g1/x (+ an item that does not exist)
  A.join('a1', S, 'g1');
  await A.expect(wrap(S, 'g1', null, { type: 'sync', data: [{ v: 0 }, { v: 1 }] }), 'A: sync of g1 (array, insertion order)');
  B.join('b1', S, 'g2');
  await B.expect(wrap(S, 'g2', null, { type: 'sync', data: [] }), 'B: sync of the empty group g2');
  C.join('c1', S, 'g1', 'x');
  await C.expect(wrap(S, 'g1', 'x', { type: 'sync', data: { v: 0 } }), 'C: item sync of g1/x');
  C.join('c2', S, 'g1', 'ghost');
  await C.expect(wrap(S, 'g1', 'ghost', { type: 'sync', data: null }), 'C: item sync of a missing item is null');
  C.join('c3', S, 'g1', null);
  await C.expect(wrap(S, 'g1', null, { type: 'sync', data: [{ v: 0 }, { v: 1 }] }), 'C: id null is a group subscription');
  C.leave('c3', S, 'g1');
  C.leave('c2', S, 'g1', 'ghost');

  await set('g1', 'x', { v: 10 });
  await set('g1', 'z', { v: 2 });
  await set('g2', 'q', 'q');
  assert.strictEqual(await send('g1', 'ping', { p: 1 }), undefined);
  await send('g1', 'poke', 5, 'x');
  assert.deepEqual(await call(w, 'stream::update', { stream_name: S, group_id: 'g1', item_id: 'x', ops: [{ type: 'increment', path: 'v', by: 1 }] }),
    { old_value: { v: 10 }, new_value: { v: 11 } });
  assert.deepEqual(await call(w, 'stream::delete', { stream_name: S, group_id: 'g1', item_id: 'x' }), { old_value: { v: 11 } });
  assert.deepEqual(await call(w, 'stream::delete', { stream_name: S, group_id: 'g1', item_id: 'x' }), { old_value: null });
  await call(w, 'stream::set', { stream_name: 'other', group_id: 'g1', item_id: 'x', data: 'elsewhere' }); // same ids, other stream
  // Fences: the last event each client must get (events to one connection arrive in order).
  await send('g1', 'fence', 'A');
  await send('g2', 'fence', 'B');
  await send('g1', 'fence', 'C', 'x');

  await A.expect(wrap(S, 'g1', 'x', { type: 'update', data: { v: 10 } }), 'A: update of x');
  await A.expect(wrap(S, 'g1', 'z', { type: 'create', data: { v: 2 } }), 'A: create of z');
  await A.expect(wrap(S, 'g1', null, { type: 'event', event: { type: 'ping', data: { p: 1 } } }), 'A: group event');
  await A.expect(wrap(S, 'g1', 'x', { type: 'event', event: { type: 'poke', data: 5 } }), 'A: item event');
  await A.expect(wrap(S, 'g1', 'x', { type: 'update', data: { v: 11 } }), 'A: update (stream::update) of x');
  await A.expect(wrap(S, 'g1', 'x', { type: 'delete', data: { v: 11 } }), 'A: delete of x carries the old value; deleting a missing item sends nothing');
  await A.expect(wrap(S, 'g1', null, { type: 'event', event: { type: 'fence', data: 'A' } }), 'A: fence');
  await A.expect(wrap(S, 'g1', 'x', { type: 'event', event: { type: 'fence', data: 'C' } }), 'A: item events reach group subscribers');

  await B.expect(wrap(S, 'g2', 'q', { type: 'create', data: 'q' }), 'B: only its own group g2');
  await B.expect(wrap(S, 'g2', null, { type: 'event', event: { type: 'fence', data: 'B' } }), 'B: fence');

  await C.expect(wrap(S, 'g1', 'x', { type: 'update', data: { v: 10 } }), 'C: update of its item');
  await C.expect(wrap(S, 'g1', 'x', { type: 'event', event: { type: 'poke', data: 5 } }), 'C: event sent to its item (no group events)');
  await C.expect(wrap(S, 'g1', 'x', { type: 'update', data: { v: 11 } }), 'C: update of its item');
  await C.expect(wrap(S, 'g1', 'x', { type: 'delete', data: { v: 11 } }), 'C: delete of its item');
  await C.expect(wrap(S, 'g1', 'x', { type: 'event', event: { type: 'fence', data: 'C' } }), 'C: fence');

  // Two subscriptions of one socket matching the same event => one frame per subscription; re-joining with
  // the same subscriptionId replaces the subscription (no third copy).
  const D = await client(url);
  D.join('d1', S, 'g3');
  await D.expect(wrap(S, 'g3', null, { type: 'sync', data: [] }), 'D: sync d1');
  D.join('d2', S, 'g3');
  await D.expect(wrap(S, 'g3', null, { type: 'sync', data: [] }), 'D: sync d2');
  D.join('d2', S, 'g3');
  await D.expect(wrap(S, 'g3', null, { type: 'sync', data: [] }), 'D: sync of d2 joined again');
  await set('g3', 'k', 1);
  await D.expect(wrap(S, 'g3', 'k', { type: 'create', data: 1 }), 'D: first copy');
  await D.expect(wrap(S, 'g3', 'k', { type: 'create', data: 1 }), 'D: second copy');

  // leave: no more events for that subscription (the other one still gets them).
  D.leave('d1', S, 'g3');
  A.leave('a1', S, 'g1');
  A.join('a2', S, 'g4'); // a fence group for A
  await A.expect(wrap(S, 'g4', null, { type: 'sync', data: [] }), 'A: sync of g4');
  await set('g1', 'after-leave', 1);
  await set('g3', 'k', 2);
  await set('g4', 'f', 'fence');
  await A.expect(wrap(S, 'g4', 'f', { type: 'create', data: 'fence' }), 'A: nothing from g1 after leave, then the g4 fence');
  await D.expect(wrap(S, 'g3', 'k', { type: 'update', data: 2 }), 'D: one copy after leaving d1');

  await send('g1', 'last', 1, 'x'); // reaches C (item x) only
  await C.expect(wrap(S, 'g1', 'x', { type: 'event', event: { type: 'last', data: 1 } }), 'C: last');
  for (const [n, c] of Object.entries({ A, B, C, D })) {
    await c.expectSilence(n === 'A' ? SETTLE_MS : 0, `${n} at the end`);
    c.assertClean();
    assert.ok(c.open, `${n} is still connected`);
  }
});

engineTest('clients: ws://host:port/stream/{stream}/{group}/ joins that group at once; other paths are 404', STREAM_ENGINE, async (ctx) => {
  const w = await streamWorker(ctx, 'st-path');
  const url = await streamUrl(ctx.engine);
  const client = clientsFor(ctx);
  await call(w, 'stream::set', { stream_name: 'docs', group_id: 'room-1', item_id: 'm1', data: { text: 'hello' } });

  const P = await client(`${url}/stream/docs/room-1/`);
  await P.expect(wrap('docs', 'room-1', null, { type: 'sync', data: [{ text: 'hello' }] }), 'sync sent without any join message');
  const P2 = await client(`${url}/stream/docs/room-2`); // no trailing slash
  await P2.expect(wrap('docs', 'room-2', null, { type: 'sync', data: [] }), 'sync for the path without a trailing slash');

  await call(w, 'stream::set', { stream_name: 'docs', group_id: 'room-1', item_id: 'm2', data: { text: 'again' } });
  await call(w, 'stream::set', { stream_name: 'docs', group_id: 'room-2', item_id: 'm9', data: 9 });
  await P.expect(wrap('docs', 'room-1', 'm2', { type: 'create', data: { text: 'again' } }), 'P: event of its group');
  await P2.expect(wrap('docs', 'room-2', 'm9', { type: 'create', data: 9 }), 'P2: event of its group only');

  // The connection also takes join messages for more subscriptions.
  P.join('extra', 'docs', 'room-2');
  await P.expect(wrap('docs', 'room-2', null, { type: 'sync', data: [9] }), 'P: sync of an extra join');

  for (const bad of ['/stream/docs/', '/stream/docs', '/stream/', '/stream/a/b/c/', '/stream//g/', '/nope', '/stream/docs//']) {
    assert.equal(await upgradeStatus(`${url}${bad}`), 404, `upgrade on ${bad}`);
  }
  const plain = await withTimeout(fetch(`${url.replace('ws:', 'http:')}/`), 5000, 'plain GET /');
  await plain.arrayBuffer();
  assert.equal(plain.status, 426, 'a plain GET / asks for an upgrade');
  for (const c of [P, P2]) { await c.expectSilence(0, 'path client'); c.assertClean(); }
});

engineTest('clients: malformed frames are ignored and the connection stays usable', STREAM_ENGINE, async (ctx) => {
  const w = await streamWorker(ctx, 'st-mal');
  const url = await streamUrl(ctx.engine);
  const client = clientsFor(ctx);
  const M = await client(url);
  const valid = { subscriptionId: 's', streamName: 'mal', groupId: 'g' };
  const frames = [
    'not json at all',
    '',
    '   ',
    '{"type":',
    '[]',
    '42',
    'null',
    '{}',
    '{"type": 5, "data": {}}',
    '{"data": {"subscriptionId": "s", "streamName": "mal", "groupId": "g"}}',
    '{"type": "join"}',
    '{"type": "join", "data": "x"}',
    JSON.stringify({ type: 'join', data: { subscriptionId: 's', streamName: 'mal' } }),
    JSON.stringify({ type: 'join', data: { ...valid, subscriptionId: 1 } }),
    JSON.stringify({ type: 'join', data: { ...valid, groupId: ['g'] } }),
    JSON.stringify({ type: 'join', data: { ...valid, id: 5 } }),
    JSON.stringify({ type: 'subscribe', data: valid }),
    JSON.stringify({ type: 'JOIN', data: valid }),
    JSON.stringify({ type: 'leave', data: { ...valid, subscriptionId: 'never-joined' } }),
    JSON.stringify({ type: 'leave' }),
  ];
  for (const f of frames) M.ws.send(f);
  M.ws.send(Buffer.from('\xff\xfe not utf8', 'latin1'), { binary: true });
  // A binary frame holding a valid join is understood.
  M.ws.send(Buffer.from(JSON.stringify({ type: 'join', data: valid })), { binary: true });
  await M.expect(wrap('mal', 'g', null, { type: 'sync', data: [] }), 'the first reply after all the malformed frames is the sync of the binary join');
  await call(w, 'stream::set', { stream_name: 'mal', group_id: 'g', item_id: 'i', data: 1 });
  await M.expect(wrap('mal', 'g', 'i', { type: 'create', data: 1 }), 'the subscription works');
  await M.expectSilence(SETTLE_MS, 'after the malformed frames');
  M.assertClean();
  assert.ok(M.open, 'the connection stays open');
  assert.ok(ctx.engine.log().includes('iii-stream: client'), 'malformed frames are logged');
});

engineTest('stream:join refuses a join; auth_function context reaches stream:join and stream:leave; leave on disconnect',
  { extraYaml: streamYaml(`, auth_function: ${q('auth::stream')}`) }, async (ctx) => {
    const w = await streamWorker(ctx, 'st-auth');
    const url = await streamUrl(ctx.engine);
    const client = clientsFor(ctx);
    const S = 'guarded';
    const authInputs = [];
    const joins = [];
    const leaves = [];
    w.registerFunction('auth::stream', async (input) => {
      authInputs.push(input);
      if (input.headers['x-fail']) throw new Error('auth exploded');
      if (input.headers['x-nocontext']) return { other: 1 };
      return { context: { user: input.headers['x-user'] ?? null, token: input.query_params.token ?? null } };
    });
    w.registerFunction('hooks::join', async (ev) => {
      joins.push(ev);
      return ev.group_id === 'secret' ? { unauthorized: true } : { unauthorized: false };
    });
    w.registerFunction('hooks::leave', async (ev) => { leaves.push(ev); return { ignored: true }; });
    await waitForFunctions(w, ['auth::stream', 'hooks::join', 'hooks::leave']);
    w.registerTrigger({ type: 'stream:join', function_id: 'hooks::join', config: {} });
    w.registerTrigger({ type: 'stream:leave', function_id: 'hooks::leave', config: {} });
    await waitTriggerRows(w, ['hooks::join', 'hooks::leave']);

    const A = await client(`${url}/?token=abc&token=d%20f&flag=&=skipped`, { headers: { 'X-User': 'alice', 'X-Multi': 'v1' } });
    assert.equal(authInputs.length, 1, 'the auth function runs once, during the upgrade');
    const ai = authInputs[0];
    assert.deepEqual(Object.keys(ai).sort(), ['addr', 'headers', 'path', 'query_params']);
    assert.equal(ai.path, '/');
    assert.deepEqual(ai.query_params, { token: ['abc', 'd%20f'], flag: [''] }, 'query values are not decoded; empty keys skipped');
    assert.equal(ai.headers['x-user'], 'alice', 'header names are lower-case');
    assert.equal(ai.headers['x-multi'], 'v1');
    assert.equal(ai.headers.upgrade.toLowerCase(), 'websocket');
    assert.equal(ai.headers.host, url.slice('ws://'.length));
    assert.equal(ai.addr, `127.0.0.1:${A.ws._socket.localPort}`, 'addr is the client ip:port');
    const ctxA = { user: 'alice', token: ['abc', 'd%20f'] };

    A.join('s-pub', S, 'pub');
    await A.expect(wrap(S, 'pub', null, { type: 'sync', data: [] }), 'A: an allowed join is synced');
    assert.deepEqual(joins, [{ subscription_id: 's-pub', stream_name: S, group_id: 'pub', id: null, context: ctxA }]);
    A.join('s-secret', S, 'secret', 'item1');
    await A.expect(wrap(S, 'secret', 'item1', { type: 'unauthorized' }), 'A: a refused join is answered unauthorized');
    assert.deepEqual(joins[1], { subscription_id: 's-secret', stream_name: S, group_id: 'secret', id: 'item1', context: ctxA });
    A.join('s-p', S, 'pub', 'p');
    await A.expect(wrap(S, 'pub', 'p', { type: 'sync', data: null }), 'A: item join');
    assert.equal(joins.length, 3);

    // The refused subscription gets nothing.
    await call(w, 'stream::set', { stream_name: S, group_id: 'secret', item_id: 'item1', data: 'hidden' });
    await call(w, 'stream::set', { stream_name: S, group_id: 'pub', item_id: 'p', data: 1 });
    await A.expect(wrap(S, 'pub', 'p', { type: 'create', data: 1 }), 'A: group copy (nothing from the refused join before it)');
    await A.expect(wrap(S, 'pub', 'p', { type: 'create', data: 1 }), 'A: item copy');

    // leave: fires stream:leave with the same shape and context, then the subscription is gone.
    A.leave('s-pub', S, 'pub');
    await waitFor(() => leaves.length === 1, { what: 'the stream:leave trigger after a leave message' });
    assert.deepEqual(leaves[0], { subscription_id: 's-pub', stream_name: S, group_id: 'pub', id: null, context: ctxA });
    await call(w, 'stream::set', { stream_name: S, group_id: 'pub', item_id: 'other', data: 2 });
    await call(w, 'stream::set', { stream_name: S, group_id: 'pub', item_id: 'p', data: 3 });
    await A.expect(wrap(S, 'pub', 'p', { type: 'update', data: 3 }), 'A: only the item subscription is left');
    await A.expectSilence(SETTLE_MS, 'A after leave');
    A.assertClean();

    // A second client: the auth function throws => accepted with context null; a result without
    // `context` => context null too.
    const B = await client(url, { headers: { 'X-Fail': '1' } });
    B.join('b', S, 'pub');
    await B.expect(wrap(S, 'pub', null, { type: 'sync', data: [3, 2] }), 'B: joined although the auth function failed');
    assert.deepEqual(joins.at(-1), { subscription_id: 'b', stream_name: S, group_id: 'pub', id: null, context: null });
    const C = await client(`${url}/?x=1`, { headers: { 'X-NoContext': '1' } });
    C.join('c', S, 'secret');
    await C.expect(wrap(S, 'secret', null, { type: 'unauthorized' }), 'C: refused');
    assert.deepEqual(joins.at(-1), { subscription_id: 'c', stream_name: S, group_id: 'secret', id: null, context: null });
    assert.equal(authInputs.length, 3);
    assert.deepEqual(authInputs[2].query_params, { x: ['1'] });

    // Disconnect: stream:leave for each subscription the client still holds (not the left one, not the
    // refused one), with its context.
    await A.close();
    await waitFor(() => leaves.length >= 2, { what: 'the stream:leave trigger after the disconnect' });
    await sleep(SETTLE_MS);
    assert.deepEqual(leaves.slice(1), [{ subscription_id: 's-p', stream_name: S, group_id: 'pub', id: 'p', context: ctxA }]);
    await C.close();
    await sleep(SETTLE_MS);
    assert.equal(leaves.length, 2, 'a client whose only join was refused fires no stream:leave');
    await B.close();
    await waitFor(() => leaves.length === 3, { what: 'the leave of B' });
    assert.deepEqual(leaves[2], { subscription_id: 'b', stream_name: S, group_id: 'pub', id: null, context: null });
  });

// ---------------------------------------------------------------------------------------------------------
// the `stream` trigger type

engineTest('stream trigger: stream / group / item filters, condition function, payload = the client wrapper', STREAM_ENGINE, async (ctx) => {
  const w = await streamWorker(ctx, 'st-trig');
  const S = 'orders';
  const seen = { all: [], eu: [], o1: [], cond: [], other: [], empty: [] };
  const condCalls = [];
  for (const k of Object.keys(seen)) w.registerFunction(`trig::${k}`, async (ev) => { seen[k].push(ev); });
  w.registerFunction('trig::creates-only', async (ev) => { condCalls.push(ev); return ev.event.type === 'create'; });
  w.registerFunction('trig::bad', async () => {});
  await waitForFunctions(w, [...Object.keys(seen).map((k) => `trig::${k}`), 'trig::creates-only', 'trig::bad']);
  w.registerTrigger({ type: 'stream', function_id: 'trig::all', config: { stream_name: S } });
  w.registerTrigger({ type: 'stream', function_id: 'trig::eu', config: { stream_name: S, group_id: 'eu' } });
  w.registerTrigger({ type: 'stream', function_id: 'trig::o1', config: { stream_name: S, group_id: 'eu', item_id: 'o1' } });
  w.registerTrigger({ type: 'stream', function_id: 'trig::cond', config: { stream_name: S, condition_function_id: 'trig::creates-only' } });
  w.registerTrigger({ type: 'stream', function_id: 'trig::other', config: { stream_name: 'other' } });
  w.registerTrigger({ type: 'stream', function_id: 'trig::empty', config: { stream_name: S, group_id: '', item_id: '' } });
  w.registerTrigger({ type: 'stream', function_id: 'trig::bad', config: { group_id: 'eu' } });
  await waitTriggerRows(w, ['trig::all', 'trig::eu', 'trig::o1', 'trig::cond', 'trig::other', 'trig::empty']);
  const [bad] = await waitTriggerRows(w, ['trig::bad'], 'failed');
  assert.match(bad.error, /stream_name/, `a stream trigger without stream_name is refused: ${JSON.stringify(bad)}`);

  // Each step waits for `trig::all` (which sees everything) so the order of events is fixed.
  let n = 0;
  const step = async (what, p) => {
    await p;
    n += 1;
    await waitFor(() => seen.all.length === n, { what: `trig::all to see ${what}` });
  };
  await step('create o1', call(w, 'stream::set', { stream_name: S, group_id: 'eu', item_id: 'o1', data: { qty: 1 } }));
  await step('create o2', call(w, 'stream::set', { stream_name: S, group_id: 'us', item_id: 'o2', data: { qty: 2 } }));
  await step('update o1', call(w, 'stream::update', { stream_name: S, group_id: 'eu', item_id: 'o1', ops: [{ type: 'increment', path: 'qty', by: 1 }] }));
  await step('group event', call(w, 'stream::send', { stream_name: S, group_id: 'eu', type: 'note', data: 'hi' }));
  await step('item event', call(w, 'stream::send', { stream_name: S, group_id: 'eu', type: 'note', data: 'o1!', id: 'o1' }));
  await step('delete o1', call(w, 'stream::delete', { stream_name: S, group_id: 'eu', item_id: 'o1' }));
  await call(w, 'stream::delete', { stream_name: S, group_id: 'eu', item_id: 'o1' }); // missing: no event
  await call(w, 'stream::set', { stream_name: 'orders2', group_id: 'eu', item_id: 'o1', data: 0 }); // other stream
  await step('create o3', call(w, 'stream::set', { stream_name: S, group_id: 'eu', item_id: 'o3', data: null }));
  await sleep(SETTLE_MS);

  const e = {
    createO1: wrap(S, 'eu', 'o1', { type: 'create', data: { qty: 1 } }),
    createO2: wrap(S, 'us', 'o2', { type: 'create', data: { qty: 2 } }),
    updateO1: wrap(S, 'eu', 'o1', { type: 'update', data: { qty: 2 } }),
    groupEvent: wrap(S, 'eu', null, { type: 'event', event: { type: 'note', data: 'hi' } }),
    itemEvent: wrap(S, 'eu', 'o1', { type: 'event', event: { type: 'note', data: 'o1!' } }),
    deleteO1: wrap(S, 'eu', 'o1', { type: 'delete', data: { qty: 2 } }),
    createO3: wrap(S, 'eu', 'o3', { type: 'create', data: null }),
  };
  const all = [e.createO1, e.createO2, e.updateO1, e.groupEvent, e.itemEvent, e.deleteO1, e.createO3];
  const expected = {
    all,
    empty: all,
    eu: [e.createO1, e.updateO1, e.groupEvent, e.itemEvent, e.deleteO1, e.createO3],
    o1: [e.createO1, e.updateO1, e.itemEvent, e.deleteO1],
    cond: [e.createO1, e.createO2, e.createO3],
    other: [],
  };
  for (const [k, want] of Object.entries(expected)) {
    assert.equal(seen[k].length, want.length, `trig::${k} saw ${JSON.stringify(seen[k].map((x) => x.event))}`);
    seen[k].forEach((got, i) => assertWrapper(got, want[i], `trig::${k} event ${i}`));
  }
  assert.equal(condCalls.length, all.length, 'the condition function sees every event of the stream');
  condCalls.forEach((got, i) => assertWrapper(got, all[i], `condition input ${i}`));
  assert.deepEqual(seen.all.map((x) => x.timestamp), condCalls.map((x) => x.timestamp),
    'the condition gets the very payload the handler gets');
});

// ---------------------------------------------------------------------------------------------------------
// custom streams (createStream)

engineTest('createStream: stream::* on that stream is served by the worker; storage again once it leaves', STREAM_ENGINE, async (ctx) => {
  const caller = await streamWorker(ctx, 'st-cs-caller');
  const url = await streamUrl(ctx.engine);
  const client = clientsFor(ctx);
  const owner = newWorker(ctx.engine.url, 'st-cs-owner');
  let ownerUp = true;
  ctx.defer(async () => { if (ownerUp) await withTimeout(owner.shutdown(), 10000, 'owner shutdown'); });

  const store = new Map(); // "group/item" -> value
  const calls = []; // [op, input] as received by the custom functions
  const key = (i) => `${i.group_id}/${i.item_id}`;
  owner.createStream('cust', {
    async get(input) { calls.push(['get', input]); return store.get(key(input)); },
    async set(input) {
      calls.push(['set', input]);
      if (input.item_id === 'no-result') return null;
      if (input.item_id === 'throws') throw new Error('custom set refused');
      const old = store.has(key(input)) ? store.get(key(input)) : null;
      store.set(key(input), input.data);
      return { old_value: old, new_value: input.data };
    },
    async delete(input) {
      calls.push(['delete', input]);
      const old = store.has(key(input)) ? store.get(key(input)) : null;
      store.delete(key(input));
      return { old_value: old };
    },
    async list(input) {
      calls.push(['list', input]);
      return [...store.entries()].filter(([k]) => k.startsWith(`${input.group_id}/`)).map(([, v]) => v);
    },
    async listGroups(input) { calls.push(['list_groups', input]); return ['custom-b', 'custom-a']; },
  });
  const CUSTOM_FNS = ['get', 'set', 'delete', 'list', 'list_groups'].map((op) => `stream::${op}(cust)`);
  await waitForFunctions(caller, CUSTOM_FNS);
  /** The custom calls since `from`, as [op, group_id, item_id?, data?] (the exact inputs are checked at the end). */
  const opsSince = (from) => calls.slice(from).map(([op, i]) => [op, i.stream_name, i.group_id, i.item_id, i.data]);

  store.set('g/pre', { pre: true });
  const sub = await client(url);
  sub.join('cs', 'cust', 'g');
  await sub.expect(wrap('cust', 'g', null, { type: 'sync', data: [{ pre: true }] }), 'the join sync comes from the custom list');
  assert.deepEqual(opsSince(0), [['list', 'cust', 'g', undefined, undefined]]);

  const cs = (op, payload) => call(caller, `stream::${op}`, { stream_name: 'cust', ...payload });
  assert.deepEqual(await cs('set', { group_id: 'g', item_id: 'a', data: { v: 1 } }), { old_value: null, new_value: { v: 1 } });
  assert.deepEqual(await cs('set', { group_id: 'g', item_id: 'a', data: { v: 2 } }), { old_value: { v: 1 }, new_value: { v: 2 } });
  assert.deepEqual(await cs('get', { group_id: 'g', item_id: 'a' }), { v: 2 });
  assert.strictEqual(await cs('get', { group_id: 'g', item_id: 'zz' }), undefined, 'the custom get returned nothing');
  assert.deepEqual(await cs('list', { group_id: 'g' }), [{ pre: true }, { v: 2 }]);
  assert.deepEqual(await cs('list_groups', {}), ['custom-b', 'custom-a'], 'list_groups is returned verbatim');
  assert.deepEqual(await cs('delete', { group_id: 'g', item_id: 'a' }), { old_value: { v: 2 } });
  assert.deepEqual(await cs('delete', { group_id: 'g', item_id: 'a' }), { old_value: null });
  assert.deepEqual(opsSince(1), [
    ['set', 'cust', 'g', 'a', { v: 1 }],
    ['set', 'cust', 'g', 'a', { v: 2 }],
    ['get', 'cust', 'g', 'a', undefined],
    ['get', 'cust', 'g', 'zz', undefined],
    ['list', 'cust', 'g', undefined, undefined],
    ['list_groups', 'cust', undefined, undefined, undefined],
    ['delete', 'cust', 'g', 'a', undefined],
    ['delete', 'cust', 'g', 'a', undefined],
  ]);

  // Custom set failures (messages checked at the end).
  const e1 = await rejectionOf(cs('set', { group_id: 'g', item_id: 'no-result', data: 1 }), 'set with a null custom result');
  assert.equal(e1.code, 'STREAM_SET_ERROR', e1.message);
  const e2 = await rejectionOf(cs('set', { group_id: 'g', item_id: 'throws', data: 1 }), 'set with a throwing custom function');
  assert.equal(e2.code, 'STREAM_SET_ERROR', e2.message);

  // update, send and list_all never go to the custom functions: update uses storage.
  assert.deepEqual(await cs('update', { group_id: 'g', item_id: 'u', ops: [{ type: 'set', path: 'x', value: 1 }] }),
    { old_value: null, new_value: { x: 1 } });
  assert.strictEqual(await cs('send', { group_id: 'g', type: 'hello', data: 'custom' }), undefined);
  assert.deepEqual(await call(caller, 'stream::list_all', {}), { stream: [{ id: 'cust', groups: ['g'] }], count: 1 },
    'list_all reads storage (where only the update wrote)');
  assert.deepEqual(opsSince(9), [['set', 'cust', 'g', 'no-result', 1], ['set', 'cust', 'g', 'throws', 1]],
    'update, send and list_all do not call the custom functions');

  // Subscribers saw the events of the successful custom writes, the update and the send.
  await sub.expect(wrap('cust', 'g', 'a', { type: 'create', data: { v: 1 } }), 'custom create');
  await sub.expect(wrap('cust', 'g', 'a', { type: 'update', data: { v: 2 } }), 'custom update');
  await sub.expect(wrap('cust', 'g', 'a', { type: 'delete', data: { v: 2 } }), 'custom delete (the second delete found nothing)');
  await sub.expect(wrap('cust', 'g', 'u', { type: 'create', data: { x: 1 } }), 'update through storage');
  await sub.expect(wrap('cust', 'g', null, { type: 'event', event: { type: 'hello', data: 'custom' } }), 'send');

  // The owner leaves: every operation on the stream falls back to storage.
  await withTimeout(owner.shutdown(), 10000, 'owner shutdown');
  ownerUp = false;
  await waitFor(async () => {
    const res = await caller.trigger({ function_id: 'engine::functions::list', payload: {}, timeoutMs: 2000 });
    return !res.functions.some((f) => CUSTOM_FNS.includes(f.function_id));
  }, { what: 'the custom stream functions to be gone' });
  const before = calls.length;
  assert.deepEqual(await cs('get', { group_id: 'g', item_id: 'u' }), { x: 1 }, 'get reads storage');
  assert.strictEqual(await cs('get', { group_id: 'g', item_id: 'pre' }), undefined, 'the custom data is not in storage');
  assert.deepEqual(await cs('list', { group_id: 'g' }), [{ x: 1 }]);
  assert.deepEqual(await cs('list_groups', {}), ['g']);
  assert.deepEqual(await cs('set', { group_id: 'g', item_id: 'no-result', data: 5 }), { old_value: null, new_value: 5 });
  assert.deepEqual(await cs('delete', { group_id: 'g', item_id: 'u' }), { old_value: { x: 1 } });
  assert.deepEqual(await cs('list', { group_id: 'g' }), [5]);
  await sub.expect(wrap('cust', 'g', 'no-result', { type: 'create', data: 5 }), 'storage create after the fallback');
  await sub.expect(wrap('cust', 'g', 'u', { type: 'delete', data: { x: 1 } }), 'storage delete after the fallback');
  const late = await client(url);
  late.join('late', 'cust', 'g');
  await late.expect(wrap('cust', 'g', null, { type: 'sync', data: [5] }), 'the join sync now comes from storage');
  assert.equal(calls.length, before, 'no custom function is called after its worker left');
  for (const c of [sub, late]) { await c.expectSilence(0, 'custom subscribers'); c.assertClean(); }

  // Exact shapes (modules.md §1.3/§1.4; the reference re-serialises its typed input and wraps every custom
  // failure in "Failed to set value: ...").
  assert.equal(e1.message, 'STREAM_SET_ERROR: Failed to set value: Function returned no result');
  assert.ok(e2.message.startsWith('STREAM_SET_ERROR: Failed to set value: Failed to invoke function: ') && e2.message.includes('custom set refused'),
    e2.message);
  assert.deepEqual(calls, [
    ['list', { stream_name: 'cust', group_id: 'g' }],
    ['set', { stream_name: 'cust', group_id: 'g', item_id: 'a', data: { v: 1 } }],
    ['set', { stream_name: 'cust', group_id: 'g', item_id: 'a', data: { v: 2 } }],
    ['get', { stream_name: 'cust', group_id: 'g', item_id: 'a' }],
    ['get', { stream_name: 'cust', group_id: 'g', item_id: 'zz' }],
    ['list', { stream_name: 'cust', group_id: 'g' }],
    ['list_groups', { stream_name: 'cust' }],
    ['delete', { stream_name: 'cust', group_id: 'g', item_id: 'a' }],
    ['delete', { stream_name: 'cust', group_id: 'g', item_id: 'a' }],
    ['set', { stream_name: 'cust', group_id: 'g', item_id: 'no-result', data: 1 }],
    ['set', { stream_name: 'cust', group_id: 'g', item_id: 'throws', data: 1 }],
  ], 'the custom functions get the typed input ({stream_name, group_id, item_id?, data?}) and nothing else');
});

engineTest('a worker-registered stream::update(<name>) serves stream::update on that stream', STREAM_ENGINE, async (ctx) => {
  const w = await streamWorker(ctx, 'st-cu');
  const url = await streamUrl(ctx.engine);
  const client = clientsFor(ctx);
  const inputs = [];
  w.registerFunction('stream::update(cu)', async (input) => {
    inputs.push(input);
    return { old_value: { n: 1 }, new_value: { n: 2 }, errors: [] };
  });
  await waitForFunctions(w, ['stream::update(cu)']);
  const sub = await client(url);
  sub.join('u', 'cu', 'g');
  await sub.expect(wrap('cu', 'g', null, { type: 'sync', data: [] }), 'sync from storage (no custom list)');
  const ops = [{ type: 'increment', path: 'n', by: 1 }];
  const res = await call(w, 'stream::update', { stream_name: 'cu', group_id: 'g', item_id: 'i', ops });
  await sub.expect(wrap('cu', 'g', 'i', { type: 'update', data: { n: 2 } }), 'update event from the custom result');
  assert.strictEqual(await call(w, 'stream::get', { stream_name: 'cu', group_id: 'g', item_id: 'i' }), undefined, 'storage untouched');
  assert.equal(inputs.length, 1);
  assert.deepEqual([inputs[0].stream_name, inputs[0].group_id, inputs[0].item_id, inputs[0].ops], ['cu', 'g', 'i', ops]);
  sub.assertClean();
  // Exact shapes: the result is an UpdateResult (empty `errors` omitted); the input is the typed one.
  assert.deepEqual(res, { old_value: { n: 1 }, new_value: { n: 2 } }, 'the custom result as an update result (empty errors omitted)');
  assert.deepEqual(inputs, [{ stream_name: 'cu', group_id: 'g', item_id: 'i', ops }], 'the custom update gets the typed input');
});

// ---------------------------------------------------------------------------------------------------------
// durability

test('file_based: stream items survive SIGKILL of the engine', { timeout: 60000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iii-sys-stream-'));
  const yaml = fileBasedYaml(path.join(dir, 'streams'));
  const engines = [];
  const workers = [];
  const boot = async (name) => {
    const engine = await startEngine({ dir, extraYaml: yaml });
    engines.push(engine);
    const w = newWorker(engine.url, name);
    workers.push(w);
    await waitForFunctions(w, STREAM_FUNCTIONS);
    return { engine, w };
  };
  try {
    const a = await boot('st-dur-writer');
    const N = 50;
    for (let i = 0; i < N; i++) {
      await call(a.w, 'stream::set', { stream_name: 'dur', group_id: `g${i % 3}`, item_id: `i${i}`, data: { i, text: `item ${i} ✓` } });
    }
    await call(a.w, 'stream::set', { stream_name: 'dur', group_id: 'g0', item_id: 'i0', data: 'overwritten' });
    await call(a.w, 'stream::delete', { stream_name: 'dur', group_id: 'g1', item_id: 'i1' });
    await call(a.w, 'stream::update', { stream_name: 'dur', group_id: 'g2', item_id: 'i2', ops: [{ type: 'set', path: 'extra', value: [1, 2] }] });
    await call(a.w, 'stream::set', { stream_name: 'other', group_id: 'solo', item_id: 'x', data: null });
    await call(a.w, 'stream::set', { stream_name: 'gone', group_id: 'g', item_id: 'x', data: 1 });
    await call(a.w, 'stream::delete', { stream_name: 'gone', group_id: 'g', item_id: 'x' });
    assert.ok(fs.existsSync(path.join(dir, 'streams')), 'the configured store directory exists');

    a.engine.proc.kill('SIGKILL'); // right after the last acknowledged write
    const res = await withTimeout(a.engine.exited, 5000, 'the engine to die from SIGKILL');
    assert.equal(res.signal, 'SIGKILL');
    await withTimeout(a.w.shutdown(), 10000, 'writer shutdown');
    workers.length = 0;

    const b = await boot('st-dur-reader');
    const expectedGroup = (g) => {
      const out = [];
      for (let i = 0; i < N; i++) {
        if (i % 3 !== g || i === 1) continue;
        if (i === 0) out.push('overwritten');
        else if (i === 2) out.push({ i, text: `item ${i} ✓`, extra: [1, 2] });
        else out.push({ i, text: `item ${i} ✓` });
      }
      return out;
    };
    for (const g of [0, 1, 2]) {
      assert.deepEqual(await call(b.w, 'stream::list', { stream_name: 'dur', group_id: `g${g}` }), expectedGroup(g),
        `group g${g} after the restart (same values, same order)`);
    }
    assert.equal(await call(b.w, 'stream::get', { stream_name: 'dur', group_id: 'g0', item_id: 'i0' }), 'overwritten');
    assert.strictEqual(await call(b.w, 'stream::get', { stream_name: 'dur', group_id: 'g1', item_id: 'i1' }), undefined);
    assert.strictEqual(await call(b.w, 'stream::get', { stream_name: 'other', group_id: 'solo', item_id: 'x' }), null,
      'a stored null is null, not absent');
    assert.deepEqual(await call(b.w, 'stream::list_groups', { stream_name: 'dur' }), ['g0', 'g1', 'g2']);
    assert.deepEqual(await call(b.w, 'stream::list_all', {}), {
      stream: [{ id: 'dur', groups: ['g0', 'g1', 'g2'] }, { id: 'other', groups: ['solo'] }], count: 2,
    });
    // Clients see the restored data too, and writes continue (old_value from before the restart).
    const c = await StreamClient.open(await streamUrl(b.engine));
    try {
      c.join('s', 'dur', 'g2', 'i2');
      await c.expect(wrap('dur', 'g2', 'i2', { type: 'sync', data: { i: 2, text: 'item 2 ✓', extra: [1, 2] } }), 'item sync after the restart');
      assert.deepEqual(await call(b.w, 'stream::set', { stream_name: 'dur', group_id: 'g2', item_id: 'i2', data: 'new' }),
        { old_value: { i: 2, text: 'item 2 ✓', extra: [1, 2] }, new_value: 'new' });
      await c.expect(wrap('dur', 'g2', 'i2', { type: 'update', data: 'new' }), 'update after the restart');
      c.assertClean();
    } finally {
      await c.close();
    }
    await withTimeout(b.w.shutdown(), 10000, 'reader shutdown');
    workers.length = 0;
    await b.engine.stop();
  } catch (e) {
    e.message += `\n--- engine logs ---\n${engines.map((en, i) => `[engine ${i}]\n${en.logTail(40)}`).join('\n')}`;
    throw e;
  } finally {
    for (const w of workers) await withTimeout(w.shutdown(), 10000, 'worker shutdown').catch(() => {});
    for (const en of engines) en.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
