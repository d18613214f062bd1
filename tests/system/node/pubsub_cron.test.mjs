// iii-pubsub and iii-cron through the official iii-sdk@0.11.6: publish to 0, 1 and 3 subscribers, unsubscribing
// one of two, publish errors; an every-second cron trigger and its payload, a condition function that skips
// ticks, refused expressions (trigger state and error, engine log), and two engines sharing one file_based store
// firing each tick once.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { IIIInvocationError } from 'iii-sdk';
import { engineTest, newWorker, rejectionOf, sleep, startEngine, waitFor, withTimeout } from './harness.mjs';

const PUBSUB = '  - name: iii-pubsub\n    config: { adapter: { name: local } }';
const CRON = '  - name: iii-cron';
/** Time given to the engine to (wrongly) do something we assert it does not do. */
const SETTLE_MS = 300;
const SCHEDULED_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$/;
const ACTUAL_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?\+00:00$/;

function call(w, fid, payload) {
  return w.trigger({ function_id: fid, payload, timeoutMs: 5000 });
}

async function triggerRows(w, functionId) {
  const res = await call(w, 'engine::triggers::list', {});
  return res.triggers.filter((t) => t.function_id === functionId);
}

async function waitBound(w, functionId, n = 1) {
  return waitFor(async () => {
    const rows = await triggerRows(w, functionId);
    return rows.length === n && rows.every((r) => r.state === 'bound') ? rows : null;
  }, { what: `${n} bound trigger(s) of ${functionId}` });
}

function inbox() {
  const items = [];
  return { items, handler: async (data) => { items.push(data); return null; } };
}

// ---------------------------------------------------------------------------------------------------------
// pubsub

engineTest('publish reaches 0, 1 and 3 subscribers with the data verbatim', { extraYaml: PUBSUB }, async (ctx) => {
  const w = ctx.worker('ps-node');
  assert.equal(await call(w, 'publish', { topic: 'nobody', data: 1 }), null);
  const boxes = Object.fromEntries(['a', 'b', 'c', 'solo', 'other'].map((n) => [n, inbox()]));
  for (const [n, b] of Object.entries(boxes)) w.registerFunction(`psn::${n}`, b.handler);
  for (const n of ['a', 'b', 'c']) w.registerTrigger({ type: 'subscribe', function_id: `psn::${n}`, config: { topic: 'orders' } });
  w.registerTrigger({ type: 'subscribe', function_id: 'psn::solo', config: { topic: 'solo' } });
  w.registerTrigger({ type: 'subscribe', function_id: 'psn::other', config: { topic: 'other' } });
  for (const n of Object.keys(boxes)) await waitBound(w, `psn::${n}`);

  const message = { id: 7, items: [1, 'two', null], nested: { ok: true } };
  assert.equal(await call(w, 'publish', { topic: 'orders', data: message }), null);
  await waitFor(() => ['a', 'b', 'c'].every((n) => boxes[n].items.length === 1), { what: 'the three subscribers' });
  for (const n of ['a', 'b', 'c']) assert.deepEqual(boxes[n].items, [message]);

  await call(w, 'publish', { topic: 'solo', data: 'just one' });
  await waitFor(() => boxes.solo.items.length === 1, { what: 'the single subscriber' });
  assert.deepEqual(boxes.solo.items, ['just one']);

  await call(w, 'publish', { topic: 'other', data: 'fence' });
  await waitFor(() => boxes.other.items.length === 1, { what: 'the fence message' });
  assert.deepEqual(['a', 'b', 'c', 'solo', 'other'].map((n) => boxes[n].items.length), [1, 1, 1, 1, 1]);
});

engineTest('unsubscribing one of two subscribers keeps the other', { extraYaml: PUBSUB }, async (ctx) => {
  const w = ctx.worker('ps-node-unsub');
  const first = inbox();
  const second = inbox();
  w.registerFunction('psn::first', first.handler);
  w.registerFunction('psn::second', second.handler);
  const t1 = w.registerTrigger({ type: 'subscribe', function_id: 'psn::first', config: { topic: 'news' } });
  w.registerTrigger({ type: 'subscribe', function_id: 'psn::second', config: { topic: 'news' } });
  await waitBound(w, 'psn::first');
  await waitBound(w, 'psn::second');
  await call(w, 'publish', { topic: 'news', data: 1 });
  await waitFor(() => first.items.length === 1 && second.items.length === 1, { what: 'both subscribers' });

  t1.unregister();
  await waitFor(async () => (await triggerRows(w, 'psn::first')).length === 0, { what: 'the first subscription to go' });
  await call(w, 'publish', { topic: 'news', data: 2 });
  await waitFor(() => second.items.length === 2, { what: 'the remaining subscriber' });
  await sleep(SETTLE_MS);
  assert.deepEqual(first.items, [1], 'the unsubscribed function gets nothing more');
  assert.deepEqual(second.items, [1, 2]);
});

engineTest('publish without a topic is topic_not_set', { extraYaml: PUBSUB }, async (ctx) => {
  const w = ctx.worker('ps-node-errors');
  for (const payload of [{ data: 1 }, { topic: '', data: 1 }]) {
    const e = await rejectionOf(call(w, 'publish', payload), `publish(${JSON.stringify(payload)})`);
    assert.ok(e instanceof IIIInvocationError, String(e));
    assert.equal(e.code, 'topic_not_set');
    assert.equal(e.message, 'topic_not_set: Topic is not set');
  }
});

// ---------------------------------------------------------------------------------------------------------
// cron

engineTest('an every-second cron trigger fires with the payload of the original', { extraYaml: CRON }, async (ctx) => {
  const w = ctx.worker('cron-node');
  const ticks = inbox();
  w.registerFunction('cronn::tick', ticks.handler);
  const trig = w.registerTrigger({ type: 'cron', function_id: 'cronn::tick', config: { expression: '* * * * * *' } });
  const [row] = await waitBound(w, 'cronn::tick');
  await waitFor(() => ticks.items.length >= 3, { timeoutMs: 6000, what: 'three ticks' });
  trig.unregister();
  for (const p of ticks.items) {
    assert.deepEqual(Object.keys(p), ['trigger', 'job_id', 'scheduled_time', 'actual_time']);
    assert.equal(p.trigger, 'cron');
    assert.equal(p.job_id, row.id);
    assert.match(p.scheduled_time, SCHEDULED_RE);
    assert.match(p.actual_time, ACTUAL_RE);
    const late = Date.parse(p.actual_time) - Date.parse(p.scheduled_time);
    assert.ok(late >= 0 && late < 500, `fired ${late} ms after its tick: ${JSON.stringify(p)}`);
  }
  const times = ticks.items.slice(0, 3).map((p) => Date.parse(p.scheduled_time));
  assert.deepEqual([times[1] - times[0], times[2] - times[1]], [1000, 1000], 'one tick per second');
});

engineTest('a condition function returning false skips the tick', { extraYaml: CRON }, async (ctx) => {
  const w = ctx.worker('cron-node-cond');
  const seen = [];
  const ticks = inbox();
  w.registerFunction('cronn::cond', async (p) => { seen.push(p); return seen.length % 2 === 0; });
  w.registerFunction('cronn::gated', ticks.handler);
  w.registerTrigger({
    type: 'cron', function_id: 'cronn::gated', config: { expression: '* * * * * *', condition_function_id: 'cronn::cond' },
  });
  await waitBound(w, 'cronn::gated');
  await waitFor(() => ticks.items.length >= 2, { timeoutMs: 7000, what: 'two ticks past the condition' });
  assert.deepEqual(ticks.items.slice(0, 2).map((p) => p.scheduled_time), [seen[1].scheduled_time, seen[3].scheduled_time]);
  assert.deepEqual(ticks.items[0], seen[1], 'the handler gets the payload the condition saw');
});

engineTest('invalid cron expressions are refused with the reason', { extraYaml: CRON }, async (ctx) => {
  const w = ctx.worker('cron-node-invalid');
  w.registerFunction('cronn::never', async () => null);
  const cases = {
    '': 'Cron expression is required',
    '0 */5 * * *': "Invalid cron expression '0 */5 * * *': 5-field crontab expressions are not supported",
    '* * * * * * * *': "Invalid cron expression '* * * * * * * *': expected 6 or 7 fields",
    '0 0 0 * * 8': "Invalid cron expression '0 0 0 * * 8': day-of-week: 8 is out of range (1-7, Sunday = 1)",
    '0 0 0 * FOO *': "Invalid cron expression '0 0 0 * FOO *': month: unknown name 'FOO'",
  };
  const mark = ctx.engine.lines.length;
  for (const expression of Object.keys(cases)) {
    w.registerTrigger({ type: 'cron', function_id: 'cronn::never', config: { expression } });
  }
  const rows = await waitFor(async () => {
    const r = await triggerRows(w, 'cronn::never');
    return r.length === Object.keys(cases).length ? r : null;
  }, { what: 'every trigger to be listed' });
  for (const [expression, message] of Object.entries(cases)) {
    const row = rows.find((r) => r.config.expression === expression);
    assert.equal(row.state, 'failed', JSON.stringify(row));
    assert.ok(row.error.startsWith(message), `${JSON.stringify(row.error)} starts with ${JSON.stringify(message)}`);
  }
  await waitFor(() => ctx.engine.linesSince(mark).filter((l) => l.includes('refused: ')).length >= Object.keys(cases).length,
    { what: 'a refusal line per trigger in the engine log' });
});

test('two engines on one file_based store fire each tick once', { timeout: 60000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iii-cron-node-'));
  const cron = `  - name: iii-cron\n    config: { adapter: { name: kv, config: { store_method: file_based, file_path: ${JSON.stringify(path.join(dir, 'locks.db'))} } } }`;
  const engines = [];
  const workers = [];
  try {
    engines.push(await startEngine({ extraYaml: cron }), await startEngine({ extraYaml: cron }));
    const calls = [];
    for (const [i, e] of engines.entries()) {
      const w = newWorker(e.url, `cron-node-replica-${i}`);
      workers.push(w);
      w.registerFunction('cronn::replica', async (p) => { calls.push([i, p.scheduled_time]); return null; });
      w.registerTrigger({ type: 'cron', function_id: 'cronn::replica', config: { expression: '* * * * * *' } });
    }
    for (const w of workers) await waitBound(w, 'cronn::replica');
    await waitFor(() => new Set(calls.map(([, t]) => t)).size >= 5, { timeoutMs: 9000, what: 'five ticks' });
    const ticks = calls.map(([, t]) => t);
    const twice = [...new Set(ticks.filter((t, i) => ticks.indexOf(t) !== i))];
    assert.deepEqual(twice, [], `ticks fired by both engines in ${JSON.stringify(calls)}`);
  } finally {
    await Promise.all(workers.map((w) => withTimeout(w.shutdown(), 10000, 'worker shutdown').catch(() => {})));
    for (const e of engines) {
      try { await e.stop(); } finally { e.kill(); e.cleanup(); }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
