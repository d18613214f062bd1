// iii-queue through the official iii-sdk@0.11.6: enqueue with TriggerAction.Enqueue to standard and FIFO
// queues (receipts, raw payloads, concurrency limit, order within groups and parallel groups), enqueue errors,
// retries then DLQ then redrive through the console functions, topic fan-out with `durable:subscriber`
// triggers (the subscriber's maxRetries), and the file_based store: every acknowledged message delivered after
// `kill -9`, and a SIGTERM that lets the handlers in flight finish and keeps the rest for the next start.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { TriggerAction } from 'iii-sdk';
import {
  engineTest, newWorker, rejectionOf, sleep, startEngine, UUID_RE, waitFor, waitForFunctions, withTimeout,
} from './harness.mjs';

const queueYaml = (queues, adapter = '{ name: builtin, config: { store_method: in_memory } }') =>
  `  - name: iii-queue\n    config:\n      adapter: ${adapter}\n      queue_configs:\n${queues}`;
const QUEUES = queueYaml(
  '        jobs: { concurrency: 5, max_retries: 2, backoff_ms: 50 }\n'
  + '        fifo: { type: fifo, message_group_field: user, concurrency: 3 }\n',
);
const ENGINE = { extraYaml: QUEUES };

const call = (w, fid, payload) => w.trigger({ function_id: fid, payload, timeoutMs: 5000 });
const enqueue = (w, queue, fid, payload) =>
  w.trigger({ function_id: fid, payload, action: TriggerAction.Enqueue({ queue }) });

function recorder({ delayMs = 0, fail = false } = {}) {
  const r = { calls: [], running: 0, maxRunning: 0 };
  r.fn = async (data) => {
    r.calls.push(data);
    r.running += 1;
    r.maxRunning = Math.max(r.maxRunning, r.running);
    try {
      if (delayMs) await sleep(delayMs);
      if (fail) throw new Error('handler failed');
      return { ok: true };
    } finally {
      r.running -= 1;
    }
  };
  return r;
}

engineTest('enqueue to a standard queue: receipt at once, raw payload delivered, at most `concurrency` at once', ENGINE, async (ctx) => {
  const w = ctx.worker('nq-std');
  const rec = recorder({ delayMs: 40 });
  w.registerFunction('nq::work', rec.fn);
  await waitForFunctions(w, ['nq::work']);
  const receipts = await Promise.all(Array.from({ length: 30 }, (_, i) => enqueue(w, 'jobs', 'nq::work', { i })));
  for (const r of receipts) assert.match(r.messageReceiptId, UUID_RE);
  assert.equal(new Set(receipts.map((r) => r.messageReceiptId)).size, 30);
  await waitFor(() => rec.calls.length === 30, { timeoutMs: 10000, what: '30 deliveries' });
  assert.deepEqual(rec.calls.map((d) => d.i).sort((a, b) => a - b), Array.from({ length: 30 }, (_, i) => i));
  assert.equal(rec.maxRunning, 5);
});

engineTest('FIFO queue: order within each group, groups in parallel up to `concurrency`', ENGINE, async (ctx) => {
  const w = ctx.worker('nq-fifo');
  const rec = recorder({ delayMs: 30 });
  w.registerFunction('nq::fifo', rec.fn);
  await waitForFunctions(w, ['nq::fifo']);
  for (let i = 0; i < 8; i += 1) {
    for (const user of ['u1', 'u2', 'u3', 'u4']) await enqueue(w, 'fifo', 'nq::fifo', { user, i });
  }
  await waitFor(() => rec.calls.length === 32, { timeoutMs: 15000, what: '32 deliveries' });
  for (const user of ['u1', 'u2', 'u3', 'u4']) {
    assert.deepEqual(rec.calls.filter((d) => d.user === user).map((d) => d.i), [0, 1, 2, 3, 4, 5, 6, 7]);
  }
  assert.equal(rec.maxRunning, 3);
  const e = await rejectionOf(enqueue(w, 'fifo', 'nq::fifo', { i: 1 }));
  assert.equal(e.code, 'enqueue_error');
  assert.ok(e.message.endsWith("FIFO queue 'fifo' requires field 'user' in data, but it was not found"), e.message);
  const e2 = await rejectionOf(enqueue(w, 'missing', 'nq::fifo', {}));
  assert.equal(e2.code, 'enqueue_error');
  assert.ok(e2.message.endsWith("Queue 'missing' not found"), e2.message);
});

engineTest('failing handler: retried, dead-lettered, listed, redriven, discarded', ENGINE, async (ctx) => {
  const w = ctx.worker('nq-dlq');
  const rec = recorder({ fail: true });
  w.registerFunction('nq::fail', rec.fn);
  await waitForFunctions(w, ['nq::fail']);
  await enqueue(w, 'jobs', 'nq::fail', { bad: true });
  const dead = await waitFor(async () => {
    const rows = await call(w, 'engine::queue::dlq_messages', { topic: 'jobs' });
    return rows.length === 1 && rows;
  }, { what: 'the dead letter' });
  assert.equal(rec.calls.length, 2); // max_retries 2 = two attempts in all
  assert.equal(dead[0].retries, 2);
  assert.deepEqual(await call(w, 'iii::queue::redrive', { queue: 'jobs' }), { queue: 'jobs', redriven: 1 });
  await waitFor(() => rec.calls.length === 4, { what: 'two more attempts' });
  const again = await waitFor(async () => {
    const rows = await call(w, 'engine::queue::dlq_messages', { topic: 'jobs' });
    return rows.length === 1 && rows;
  }, { what: 'the dead letter again' });
  const res = await call(w, 'iii::queue::discard_message', { queue: 'jobs', message_id: again[0].id });
  assert.equal(res.redriven, 1);
  assert.deepEqual(await call(w, 'engine::queue::dlq_messages', { topic: 'jobs' }), []);
});

engineTest('topic fan-out to two functions; the subscriber maxRetries is honoured', ENGINE, async (ctx) => {
  const w = ctx.worker('nq-topic');
  const a = recorder();
  const b = recorder({ fail: true });
  w.registerFunction('nt::a', a.fn);
  w.registerFunction('nt::b', b.fn);
  await waitForFunctions(w, ['nt::a', 'nt::b']);
  w.registerTrigger({ type: 'durable:subscriber', function_id: 'nt::a', config: { topic: 'orders' } });
  w.registerTrigger({
    type: 'durable:subscriber', function_id: 'nt::b',
    config: { topic: 'orders', queue_config: { maxRetries: 4, backoffDelayMs: 20 } },
  });
  await waitFor(async () => {
    const res = await call(w, 'engine::queue::list_topics', {});
    return res.some((t) => t.name === 'orders' && t.subscriber_count === 2);
  }, { what: 'two subscribers' });
  assert.equal(await call(w, 'iii::durable::publish', { topic: 'orders', data: { id: 1 } }), null);
  await waitFor(() => a.calls.length === 1 && b.calls.length === 4, { timeoutMs: 10000, what: 'a once, b four times' });
  const stats = await waitFor(async () => {
    const s = await call(w, 'engine::queue::topic_stats', { topic: 'orders' });
    return s.dlq_depth === 1 && s;
  }, { what: 'b dead-lettered' });
  assert.deepEqual(stats, { depth: 0, consumer_count: 2, dlq_depth: 1, config: null });
  await sleep(200);
  assert.equal(a.calls.length, 1);
  assert.equal(b.calls.length, 4);
});

test('file_based: every acknowledged message survives kill -9 and SIGTERM keeps what was not handled', { timeout: 120000 }, async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'iii-queue-node-'));
  const extraYaml = queueYaml(
    '        jobs: { concurrency: 4, max_retries: 5, backoff_ms: 20 }\n',
    `{ name: builtin, config: { store_method: file_based, file_path: ${JSON.stringify(path.join(root, 'q'))} } }`,
  );
  const engines = [];
  const workers = [];
  const start = async () => {
    const dir = fs.mkdtempSync(path.join(root, 'run-'));
    const e = await startEngine({ extraYaml, dir });
    engines.push(e);
    const w = newWorker(e.url, `nq-durable-${engines.length}`);
    workers.push(w);
    return { e, w };
  };
  try {
    // 1: a stream of enqueues and slow handler runs, then SIGKILL.
    const one = await start();
    const done = new Set();
    one.w.registerFunction('nq::durable', async (d) => { await sleep(20); done.add(d.i); return null; });
    await waitForFunctions(one.w, ['nq::durable']);
    const acked = new Set();
    let stop = false;
    const producer = (async () => {
      for (let i = 0; !stop; i += 1) {
        try {
          await enqueue(one.w, 'jobs', 'nq::durable', { i });
          acked.add(i);
        } catch { return; }
      }
    })();
    await waitFor(() => acked.size >= 200 && done.size >= 20, { timeoutMs: 20000, what: 'enqueues and handler runs' });
    one.e.proc.kill('SIGKILL');
    await one.e.exited;
    stop = true;
    await withTimeout(producer, 10000, 'producer');
    await withTimeout(one.w.shutdown(), 10000, 'shutdown');

    // 2: restart on the same store; a slow handler; SIGTERM while messages are still queued.
    const two = await start();
    const doneTwo = new Set();
    two.w.registerFunction('nq::durable', async (d) => { await sleep(100); doneTwo.add(d.i); return null; });
    await waitFor(() => doneTwo.size >= 4, { timeoutMs: 20000, what: 'deliveries after the restart' });
    const stopped = await two.e.stop();
    assert.ok(stopped.durationMs < 6000);
    await withTimeout(two.w.shutdown(), 10000, 'shutdown');

    // 3: the rest is delivered.
    const three = await start();
    const doneThree = new Set();
    three.w.registerFunction('nq::durable', async (d) => { doneThree.add(d.i); return null; });
    await waitFor(() => [...acked].every((i) => done.has(i) || doneTwo.has(i) || doneThree.has(i)),
      { timeoutMs: 30000, what: 'every acknowledged message delivered' });
    // What finished before the SIGTERM is not delivered again.
    for (const i of doneTwo) assert.ok(!doneThree.has(i), `message ${i} delivered again after it succeeded`);
    await three.e.stop();
  } finally {
    for (const w of workers) await withTimeout(w.shutdown(), 10000, 'shutdown').catch(() => {});
    for (const e of engines) e.kill();
    fs.rmSync(root, { recursive: true, force: true });
  }
});
