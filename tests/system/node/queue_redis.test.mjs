// iii-queue's durable `redis` adapter (Redis Streams + consumer groups) against a real redis-server started
// here on a free port with an fsync'd append-only file: two engines share named queues and topic subscriptions
// (each message handled once), retries then the DLQ with the builtin adapter's counting, console functions;
// an engine killed while handling a message: another engine takes it after the visibility timeout; Redis
// killed and restarted: every acknowledged enqueue is delivered, and calls during the outage fail at once.
// FIFO queues: each message group in order and once across two engines, across retries and the DLQ, and
// across an engine killed mid-handler; a FIFO topic subscriber on two engines: the whole queue in order.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { TriggerAction } from 'iii-sdk';
import {
  newWorker, rejectionOf, sleep, startEngine, UUID_RE, waitFor, waitForFunctions, withTimeout,
} from './harness.mjs';
import { freePort } from './rabbitmq.mjs';

const REDIS = '/usr/bin/redis-server';
const call = (w, fid, payload) => w.trigger({ function_id: fid, payload, timeoutMs: 10000 });
const enqueue = (w, queue, fid, payload) =>
  w.trigger({ function_id: fid, payload, action: TriggerAction.Enqueue({ queue }), timeoutMs: 10000 });

class Redis {
  constructor() { this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iii-redis-q-')); }
  get url() { return `redis://127.0.0.1:${this.port}`; }
  async start() {
    this.port ??= await freePort();
    this.proc = spawn(REDIS, ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir,
      '--appendonly', 'yes', '--appendfsync', 'always', '--save', ''], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((r) => this.proc.once('exit', r));
    const ready = new Promise((resolve) => {
      this.proc.stdout.on('data', (d) => { if (/Ready to accept connections/.test(String(d))) resolve(); });
    });
    await withTimeout(ready, 15000, 'redis-server start');
    return this;
  }
  async kill() { this.proc.kill('SIGKILL'); await this.exited; }
  async stop() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) await this.kill();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

const engineYaml = (url, queues) => `  - name: iii-queue
    config:
      adapter: { name: redis, config: { redis_url: "${url}", max_attempts: 2, concurrency: 4, visibility_timeout_ms: 1500, poll_interval_ms: 50 } }
      queue_configs:
${queues}`;

describe('iii-queue redis adapter', { skip: !fs.existsSync(REDIS) && 'redis-server is not installed', timeout: 300000 }, () => {
  let redis;
  const engines = [];
  const workers = [];
  const start = async (queues, name) => {
    const e = await startEngine({ extraYaml: engineYaml(redis.url, queues) });
    engines.push(e);
    const w = newWorker(e.url, name);
    workers.push(w);
    return { e, w };
  };
  const closeAll = async () => {
    for (const w of workers.splice(0)) await withTimeout(w.shutdown(), 10000, 'shutdown').catch(() => {});
    for (const e of engines.splice(0)) e.kill();
  };
  before(async () => { redis = await new Redis().start(); });
  after(async () => {
    await closeAll();
    if (redis) await redis.stop();
  });

  test('two engines: each message handled once, retries then DLQ, redrive and discard, topics', async () => {
    const queues = '        jobs: { concurrency: 3, max_retries: 2, backoff_ms: 50 }\n';
    const a = await start(queues, 'rd-a');
    const b = await start(queues, 'rd-b');
    const seen = { a: [], b: [] };
    for (const [k, x] of [['a', a], ['b', b]]) {
      x.w.registerFunction('rd::work', async (d) => { seen[k].push(d.i); await sleep(20); return null; });
      x.w.registerFunction('rd::fail', async () => { seen[k].push('fail'); throw new Error('always fails'); });
      x.w.registerFunction('rd::sub', async (d) => { seen[k].push(`sub${d.n}`); return null; });
      await waitForFunctions(x.w, ['rd::work', 'rd::fail', 'rd::sub']);
    }
    const receipts = [];
    for (let i = 0; i < 40; i += 1) receipts.push(await enqueue(a.w, 'jobs', 'rd::work', { i }));
    for (const r of receipts) assert.match(r.messageReceiptId, UUID_RE);
    const work = () => [...seen.a, ...seen.b].filter((x) => typeof x === 'number');
    await waitFor(() => work().length >= 40, { timeoutMs: 20000, what: '40 deliveries' });
    await sleep(300);
    assert.deepEqual(work().sort((x, y) => x - y), Array.from({ length: 40 }, (_, i) => i), 'each message once');
    assert.ok(seen.a.some((x) => typeof x === 'number') && seen.b.some((x) => typeof x === 'number'),
      `both engines consume (a ${seen.a.length}, b ${seen.b.length})`);

    // max_retries 2 = two attempts in all (as the builtin adapter), then the DLQ.
    await enqueue(b.w, 'jobs', 'rd::fail', { bad: true });
    const fails = () => [...seen.a, ...seen.b].filter((x) => x === 'fail').length;
    const dead = await waitFor(async () => {
      const rows = await call(a.w, 'engine::queue::dlq_messages', { topic: 'jobs' });
      return rows.length === 1 && rows;
    }, { timeoutMs: 15000, what: 'the dead letter' });
    assert.equal(fails(), 2);
    assert.equal(dead[0].retries, 2);
    assert.deepEqual(dead[0].payload, { bad: true });
    assert.equal(dead[0].error, 'function call failed');
    assert.match(dead[0].id, UUID_RE);
    assert.deepEqual(await call(b.w, 'engine::queue::topic_stats', { topic: 'jobs' }),
      { depth: 0, consumer_count: 3, dlq_depth: 1, config: null });
    assert.deepEqual(await call(b.w, 'engine::queue::dlq_topics', {}),
      [{ topic: 'jobs', broker_type: 'function_queue', message_count: 1 }]);
    assert.deepEqual(await call(b.w, 'iii::queue::redrive', { queue: 'jobs' }), { queue: 'jobs', redriven: 1 });
    await waitFor(() => fails() === 4, { timeoutMs: 15000, what: 'two more attempts' });
    const again = await waitFor(async () => {
      const rows = await call(a.w, 'engine::queue::dlq_messages', { topic: 'jobs' });
      return rows.length === 1 && rows;
    }, { timeoutMs: 15000, what: 'the dead letter again' });
    assert.equal(again[0].id, dead[0].id);
    assert.equal((await call(a.w, 'iii::queue::discard_message', { queue: 'jobs', message_id: 'nope' })).redriven, 0);
    assert.equal((await call(a.w, 'iii::queue::discard_message', { queue: 'jobs', message_id: again[0].id })).redriven, 1);
    assert.deepEqual(await call(a.w, 'engine::queue::dlq_messages', { topic: 'jobs' }), []);

    // A topic subscribed by the same function on both engines: each publish handled once.
    for (const x of [a, b]) {
      x.w.registerTrigger({ type: 'durable:subscriber', function_id: 'rd::sub', config: { topic: 'orders' } });
    }
    await waitFor(async () => {
      const t = await call(a.w, 'engine::queue::list_topics', {});
      return t.some((r) => r.name === 'orders' && r.broker_type === 'redis' && r.subscriber_count === 1);
    }, { what: 'the subscription' });
    await sleep(300);
    for (let n = 0; n < 20; n += 1) assert.equal(await call(b.w, 'iii::durable::publish', { topic: 'orders', data: { n } }), null);
    const subs = () => [...seen.a, ...seen.b].filter((x) => typeof x === 'string' && x.startsWith('sub'));
    await waitFor(() => subs().length >= 20, { timeoutMs: 15000, what: '20 topic deliveries' });
    await sleep(300);
    assert.equal(new Set(subs()).size, 20);
    assert.equal(subs().length, 20);
    await closeAll();
  });

  test('an engine killed while handling a message: another engine takes it after the visibility timeout', async () => {
    const queues = '        slow: { concurrency: 1, max_retries: 3, backoff_ms: 50 }\n';
    const a = await start(queues, 'rd-kill-a');
    let gotA = 0;
    a.w.registerFunction('rd::slow', async () => { gotA += 1; await new Promise(() => {}); });
    await waitForFunctions(a.w, ['rd::slow']);
    await enqueue(a.w, 'slow', 'rd::slow', { job: 'x' });
    await waitFor(() => gotA === 1, { timeoutMs: 10000, what: 'engine A handling the message' });
    const b = await start(queues, 'rd-kill-b');
    const gotB = [];
    b.w.registerFunction('rd::slow', async (d) => { gotB.push(d); return null; });
    await waitForFunctions(b.w, ['rd::slow']);
    // A is alive and keeps its delivery fresh: B must not take it, even past the timeout.
    await sleep(2500);
    assert.equal(gotB.length, 0, 'B does not get it while A holds it');
    a.e.proc.kill('SIGKILL');
    await a.e.exited;
    await waitFor(() => gotB.length === 1, { timeoutMs: 15000, what: 'the message redelivered to B' });
    assert.deepEqual(gotB[0], { job: 'x' });
    await sleep(500);
    assert.equal(gotB.length, 1);
    await closeAll();
  });

  test('FIFO queue on two engines: each group in order and once, across retries and the DLQ', async () => {
    const queues = '        fifo: { type: fifo, message_group_field: grp, concurrency: 3, max_retries: 3, backoff_ms: 250 }\n';
    const a = await start(queues, 'fifo-a');
    const b = await start(queues, 'fifo-b');
    const events = []; // { grp, i, ok, at }
    const running = new Map();
    let overlap = null;
    let failD = true;
    const tries = new Map();
    for (const [k, x] of [['a', a], ['b', b]]) {
      x.w.registerFunction('fq::work', async (d) => {
        const key = `${d.grp}${d.i}`;
        if (running.get(d.grp)) overlap ??= `${key} on ${k} while ${running.get(d.grp)} runs`;
        running.set(d.grp, `${key}@${k}`);
        tries.set(key, (tries.get(key) ?? 0) + 1);
        await sleep(3);
        running.delete(d.grp);
        // r0 fails twice, then succeeds; d0 fails while failD holds.
        const fail = (key === 'r0' && tries.get(key) <= 2) || (key === 'd0' && failD);
        events.push({ grp: d.grp, i: d.i, ok: !fail, at: Date.now(), engine: k });
        if (fail) throw new Error(`${key} fails`);
        return null;
      });
      await waitForFunctions(x.w, ['fq::work']);
    }
    // Enqueued one after the other, alternately through both engines.
    let n = 0;
    const put = (grp, i) => enqueue((n++ % 2 ? b : a).w, 'fifo', 'fq::work', { grp, i });
    for (let i = 0; i < 5; i += 1) { await put('r', i); await put('d', i); }
    for (let i = 0; i < 30; i += 1) for (const g of ['x', 'y', 'z']) await put(g, i);
    const okOf = (g) => events.filter((e) => e.grp === g && e.ok).map((e) => e.i);
    await waitFor(() => ['x', 'y', 'z'].every((g) => okOf(g).length >= 30) && okOf('r').length >= 5
      && okOf('d').length >= 4, { timeoutMs: 30000, what: 'every group handled' });
    const dead = await waitFor(async () => {
      const rows = await call(a.w, 'engine::queue::dlq_messages', { topic: 'fifo' });
      return rows.length === 1 && rows;
    }, { timeoutMs: 10000, what: 'the dead letter' });
    await sleep(200);
    assert.equal(overlap, null, 'one message of a group at a time across both engines');
    const seq = (len) => Array.from({ length: len }, (_, i) => i);
    for (const g of ['x', 'y', 'z', 'r']) assert.deepEqual(okOf(g), seq(g === 'r' ? 5 : 30), `group ${g} in order, once`);
    assert.deepEqual(okOf('d'), [1, 2, 3, 4]);
    const all = (g) => events.filter((e) => e.grp === g).map((e) => `${e.i}${e.ok ? '' : '!'}`);
    assert.deepEqual(all('r'), ['0!', '0!', '0', '1', '2', '3', '4'], 'r1.. wait for r0 across its retries');
    assert.deepEqual(all('d'), ['0!', '0!', '0!', '1', '2', '3', '4'], 'd1.. run after d0 is dead-lettered');
    const r0 = events.filter((e) => e.grp === 'r' && e.i === 0);
    assert.ok(events.some((e) => e.grp !== 'r' && e.ok && e.at > r0[0].at && e.at < r0[2].at),
      'other groups proceed while r0 waits for its retries');
    assert.ok(events.some((e) => e.engine === 'a') && events.some((e) => e.engine === 'b'), 'both engines consume');
    assert.equal(dead[0].retries, 3);
    assert.deepEqual(dead[0].payload, { grp: 'd', i: 0 });
    assert.equal(dead[0].error, 'function call failed');
    assert.deepEqual(await call(b.w, 'engine::queue::topic_stats', { topic: 'fifo' }),
      { depth: 0, consumer_count: 3, dlq_depth: 1, config: null });
    assert.deepEqual(await call(b.w, 'engine::queue::dlq_topics', {}),
      [{ topic: 'fifo', broker_type: 'function_queue', message_count: 1 }]);

    // redrive_message: back at the tail of its group, after a message enqueued meanwhile.
    failD = false;
    await put('d', 5);
    await waitFor(() => okOf('d').length === 5, { what: 'd5' });
    assert.deepEqual(await call(a.w, 'iii::queue::redrive_message', { queue: 'fifo', message_id: dead[0].id }),
      { queue: 'fifo', message_id: dead[0].id, redriven: 1 });
    await waitFor(() => okOf('d').length === 6, { what: 'the redriven d0' });
    assert.deepEqual(okOf('d'), [1, 2, 3, 4, 5, 0]);
    assert.deepEqual(await call(a.w, 'engine::queue::dlq_messages', { topic: 'fifo' }), []);
    assert.deepEqual(await call(a.w, 'engine::queue::topic_stats', { topic: 'fifo' }),
      { depth: 0, consumer_count: 3, dlq_depth: 0, config: null });
    const e = await rejectionOf(enqueue(a.w, 'fifo', 'fq::work', { i: 1 }));
    assert.equal(e.code, 'enqueue_error');
    assert.match(e.message, /FIFO queue 'fifo' requires field 'grp' in data, but it was not found$/);
    await closeAll();
  });

  test('FIFO topic subscriber on two engines: the whole queue in order, across a retry', async () => {
    const q = '        unused: { concurrency: 1 }\n';
    const a = await start(q, 'fifo-topic-a');
    const b = await start(q, 'fifo-topic-b');
    const events = [];
    let busy = null;
    let overlap = null;
    let failed = false;
    for (const [k, x] of [['a', a], ['b', b]]) {
      x.w.registerFunction('ft::sub', async (d) => {
        if (busy !== null) overlap ??= `${d.n} on ${k} while ${busy} runs`;
        busy = d.n;
        await sleep(2);
        busy = null;
        if (d.n === 3 && !failed) {
          failed = true;
          events.push(`${d.n}!`);
          throw new Error('first attempt fails');
        }
        events.push(`${d.n}`);
        return null;
      });
      await waitForFunctions(x.w, ['ft::sub']);
      x.w.registerTrigger({
        type: 'durable:subscriber', function_id: 'ft::sub',
        config: { topic: 'ordered', queue_config: { type: 'fifo', backoffDelayMs: 100 } },
      });
    }
    await waitFor(async () => {
      const t = await call(b.w, 'engine::queue::list_topics', {});
      return t.some((r) => r.name === 'ordered' && r.subscriber_count === 1);
    }, { what: 'the subscriptions' });
    await sleep(300); // both engines' triggers bound (each registers the function as FIFO)
    for (let n = 0; n < 15; n += 1) {
      await call((n % 2 ? a : b).w, 'iii::durable::publish', { topic: 'ordered', data: { n } });
    }
    await waitFor(() => events.length >= 16, { timeoutMs: 15000, what: '15 deliveries and a retry' });
    await sleep(200);
    assert.equal(overlap, null, 'one message at a time across both engines');
    assert.deepEqual(events, ['0', '1', '2', '3!', '3', ...Array.from({ length: 11 }, (_, i) => `${i + 4}`)]);
    await closeAll();
  });

  test('FIFO: an engine killed while running a group head: the other takes the group over, in order', async () => {
    const queues = '        fk: { type: fifo, message_group_field: grp, concurrency: 2, max_retries: 3, backoff_ms: 50 }\n';
    const a = await start(queues, 'fifo-kill-a');
    const gotA = [];
    a.w.registerFunction('fk::work', async (d) => {
      gotA.push(`${d.grp}${d.i}`);
      if (d.grp === 'g') await new Promise(() => {});
      return null;
    });
    await waitForFunctions(a.w, ['fk::work']);
    for (let i = 0; i < 5; i += 1) await enqueue(a.w, 'fk', 'fk::work', { grp: 'g', i });
    for (let i = 0; i < 3; i += 1) await enqueue(a.w, 'fk', 'fk::work', { grp: 'h', i });
    await waitFor(() => gotA.includes('g0') && gotA.includes('h2'), { what: 'A running g0, h done' });
    const b = await start(queues, 'fifo-kill-b');
    const gotB = [];
    b.w.registerFunction('fk::work', async (d) => { gotB.push(`${d.grp}${d.i}`); return null; });
    await waitForFunctions(b.w, ['fk::work']);
    // A is alive and renews its lease: group g stays blocked behind g0, past the visibility timeout.
    await sleep(2000);
    assert.deepEqual(gotB, []);
    assert.deepEqual(gotA, ['g0', 'h0', 'h1', 'h2']);
    a.e.proc.kill('SIGKILL');
    await a.e.exited;
    await waitFor(() => gotB.length === 5, { timeoutMs: 15000, what: 'group g on B' });
    assert.deepEqual(gotB, ['g0', 'g1', 'g2', 'g3', 'g4']);
    assert.deepEqual(await call(b.w, 'engine::queue::topic_stats', { topic: 'fk' }),
      { depth: 0, consumer_count: 2, dlq_depth: 0, config: null });
    await closeAll();
  });

  test('Redis killed and restarted mid-run: nothing acknowledged is lost; calls fail fast meanwhile', async () => {
    const queues = '        durable: { concurrency: 4, max_retries: 5, backoff_ms: 50 }\n';
    const a = await start(queues, 'rd-restart');
    const done = new Set();
    a.w.registerFunction('rd::durable', async (d) => { await sleep(5); done.add(d.i); return null; });
    await waitForFunctions(a.w, ['rd::durable']);
    const acked = new Set();
    let stop = false;
    let failures = 0;
    const producer = (async () => {
      for (let i = 0; !stop; i += 1) {
        try {
          await enqueue(a.w, 'durable', 'rd::durable', { i });
          acked.add(i);
        } catch {
          failures += 1;
          await sleep(20);
        }
      }
    })();
    await waitFor(() => acked.size >= 100 && done.size >= 20, { timeoutMs: 20000, what: 'enqueues and deliveries' });
    await redis.kill();
    await sleep(500);
    const t0 = Date.now();
    const e = await rejectionOf(enqueue(a.w, 'durable', 'rd::durable', { i: -1 }));
    assert.equal(e.code, 'enqueue_error');
    assert.match(e.message, /Redis (is unavailable at|connection to) .*127\.0\.0\.1/);
    assert.ok(Date.now() - t0 < 1000, `failed in ${Date.now() - t0} ms`);
    const before = acked.size;
    await redis.start();
    await waitFor(() => acked.size >= before + 50, { timeoutMs: 30000, what: 'enqueues after the restart' });
    stop = true;
    await withTimeout(producer, 15000, 'producer');
    await waitFor(() => [...acked].every((i) => done.has(i)), { timeoutMs: 30000, what: 'every acknowledged message delivered' })
      .catch((err) => {
        throw new Error(`${err.message}; missing ${[...acked].filter((i) => !done.has(i)).slice(0, 20)}`);
      });
    assert.ok(failures > 0, 'some enqueues failed during the outage');
    assert.ok(!done.has(-1));
    await closeAll();
  });
});
