// iii-queue's `rabbitmq` adapter against a real rabbitmq-server (started here on free ports; skipped when it
// is not installed): two engines on one broker share named queues and topic subscriptions, each message is
// handled once, retries then the DLQ, console functions (dlq_messages, redrive, discard, topic_stats); an
// engine killed while handling a message: another engine gets it; the broker killed and restarted mid-run:
// every acknowledged enqueue is delivered, and enqueues during the outage fail at once with a clear error.
// FIFO named queues (x-single-active-consumer, inline retries): enqueue order over two engines, also across
// retries and the DLQ and when the active engine is killed; a queue that exists without the argument gets a
// clear error while the other queues work.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TriggerAction } from 'iii-sdk';
import {
  newWorker, rejectionOf, sleep, startEngine, UUID_RE, waitFor, waitForFunctions, withTimeout,
} from './harness.mjs';
import { Rabbit, rabbitAvailable } from './rabbitmq.mjs';

const call = (w, fid, payload) => w.trigger({ function_id: fid, payload, timeoutMs: 10000 });
const enqueue = (w, queue, fid, payload) =>
  w.trigger({ function_id: fid, payload, action: TriggerAction.Enqueue({ queue }), timeoutMs: 10000 });

const engineYaml = (url, queues) => `  - name: iii-queue
    config:
      adapter: { name: rabbitmq, config: { amqp_url: "${url}", max_attempts: 2, prefetch_count: 4 } }
      queue_configs:
${queues}`;

describe('iii-queue rabbitmq adapter', { skip: !rabbitAvailable() && 'rabbitmq-server is not installed', timeout: 600000 }, () => {
  let rabbit;
  const engines = [];
  const workers = [];
  const start = async (queues, name) => {
    const e = await startEngine({ extraYaml: engineYaml(rabbit.url, queues) });
    engines.push(e);
    const w = newWorker(e.url, name);
    workers.push(w);
    return { e, w };
  };
  const closeAll = async () => {
    for (const w of workers.splice(0)) await withTimeout(w.shutdown(), 10000, 'shutdown').catch(() => {});
    for (const e of engines.splice(0)) e.kill();
  };

  before(async () => {
    rabbit = await new Rabbit().start();
    console.log(`# rabbitmq-server booted in ${rabbit.bootMs} ms`);
  });
  after(async () => {
    await closeAll();
    if (rabbit) await rabbit.stop();
  });

  test('two engines: each message handled once, retries then DLQ, redrive and discard, topics', async () => {
    const queues = '        jobs: { concurrency: 3, max_retries: 1, backoff_ms: 50 }\n';
    const a = await start(queues, 'rq-a');
    const b = await start(queues, 'rq-b');
    const seen = { a: [], b: [] };
    for (const [k, x] of [['a', a], ['b', b]]) {
      x.w.registerFunction('rq::work', async (d) => { seen[k].push(d.i); await sleep(20); return null; });
      x.w.registerFunction('rq::fail', async () => { seen[k].push('fail'); throw new Error('always fails'); });
      x.w.registerFunction('rq::sub', async (d) => { seen[k].push(`sub${d.n}`); return null; });
      await waitForFunctions(x.w, ['rq::work', 'rq::fail', 'rq::sub']);
    }
    const receipts = [];
    for (let i = 0; i < 40; i += 1) receipts.push(await enqueue(a.w, 'jobs', 'rq::work', { i }));
    for (const r of receipts) assert.match(r.messageReceiptId, UUID_RE);
    const work = () => [...seen.a, ...seen.b].filter((x) => typeof x === 'number');
    await waitFor(() => work().length >= 40, { timeoutMs: 20000, what: '40 deliveries' });
    await sleep(300);
    assert.deepEqual(work().sort((x, y) => x - y), Array.from({ length: 40 }, (_, i) => i), 'each message once');
    assert.ok(seen.a.some((x) => typeof x === 'number') && seen.b.some((x) => typeof x === 'number'),
      `both engines consume (a ${seen.a.length}, b ${seen.b.length})`);

    // A failing message: max_retries 1 → 2 attempts (the original's rabbitmq semantics), then the DLQ.
    await enqueue(b.w, 'jobs', 'rq::fail', { bad: true });
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
    const stats = await call(b.w, 'engine::queue::topic_stats', { topic: 'jobs' });
    assert.deepEqual(stats, { depth: 0, consumer_count: 3, dlq_depth: 1, config: null });
    assert.deepEqual(await call(b.w, 'engine::queue::dlq_topics', {}),
      [{ topic: 'jobs', broker_type: 'function_queue', message_count: 1 }]);
    assert.deepEqual(await call(b.w, 'iii::queue::redrive', { queue: 'jobs' }), { queue: 'jobs', redriven: 1 });
    await waitFor(() => fails() === 4, { timeoutMs: 15000, what: 'two more attempts' });
    const again = await waitFor(async () => {
      const rows = await call(a.w, 'engine::queue::dlq_messages', { topic: 'jobs' });
      return rows.length === 1 && rows;
    }, { timeoutMs: 15000, what: 'the dead letter again' });
    assert.equal(again[0].id, dead[0].id);
    const none = await call(a.w, 'iii::queue::discard_message', { queue: 'jobs', message_id: 'nope' });
    assert.equal(none.redriven, 0);
    const res = await call(a.w, 'iii::queue::discard_message', { queue: 'jobs', message_id: again[0].id });
    assert.equal(res.redriven, 1);
    assert.deepEqual(await call(a.w, 'engine::queue::dlq_messages', { topic: 'jobs' }), []);

    // A topic subscribed by the same function on both engines: each publish handled once.
    for (const x of [a, b]) {
      x.w.registerTrigger({ type: 'durable:subscriber', function_id: 'rq::sub', config: { topic: 'orders' } });
    }
    await waitFor(async () => {
      const t = await call(a.w, 'engine::queue::list_topics', {});
      return t.some((r) => r.name === 'orders' && r.broker_type === 'rabbitmq' && r.subscriber_count === 1);
    }, { what: 'the subscription' });
    // Let both consumers attach before publishing (a fanout drops messages with no queue bound).
    await sleep(500);
    for (let n = 0; n < 20; n += 1) assert.equal(await call(b.w, 'iii::durable::publish', { topic: 'orders', data: { n } }), null);
    const subs = () => [...seen.a, ...seen.b].filter((x) => typeof x === 'string' && x.startsWith('sub'));
    await waitFor(() => subs().length >= 20, { timeoutMs: 15000, what: '20 topic deliveries' });
    await sleep(300);
    assert.equal(new Set(subs()).size, 20);
    assert.equal(subs().length, 20);
    await closeAll();
  });

  test('an engine killed while handling a message: another engine handles it', async () => {
    const queues = '        slow: { concurrency: 1, max_retries: 3, backoff_ms: 50 }\n';
    const a = await start(queues, 'rq-kill-a');
    let gotA = 0;
    a.w.registerFunction('rq::slow', async () => { gotA += 1; await new Promise(() => {}); });
    await waitForFunctions(a.w, ['rq::slow']);
    const { messageReceiptId } = await enqueue(a.w, 'slow', 'rq::slow', { job: 'x' });
    assert.match(messageReceiptId, UUID_RE);
    await waitFor(() => gotA === 1, { timeoutMs: 10000, what: 'engine A handling the message' });
    const b = await start(queues, 'rq-kill-b');
    const gotB = [];
    b.w.registerFunction('rq::slow', async (d) => { gotB.push(d); return null; });
    await waitForFunctions(b.w, ['rq::slow']);
    await sleep(300);
    assert.equal(gotB.length, 0, 'B does not get it while A holds it');
    a.e.proc.kill('SIGKILL');
    await a.e.exited;
    await waitFor(() => gotB.length === 1, { timeoutMs: 15000, what: 'the message redelivered to B' });
    assert.deepEqual(gotB[0], { job: 'x' });
    await closeAll();
  });

  // FIFO named queues: x-single-active-consumer (one engine consumes at a time) and inline retries.
  const fifoWorker = (x, k, calls, behaviour) => {
    x.w.registerFunction('fifo::work', async (d) => {
      calls.push({ eng: k, i: d.i, g: d.g });
      return behaviour(d, k);
    });
  };

  test('FIFO named queue over two engines: enqueue order, retries in place, then the DLQ', async () => {
    const queues = '        ordered: { type: fifo, message_group_field: g, max_retries: 2, backoff_ms: 100, concurrency: 4 }\n';
    const a = await start(queues, 'fifo-a');
    const b = await start(queues, 'fifo-b');
    const calls = [];
    const tries = new Map();
    let running = 0;
    let maxRunning = 0;
    const behaviour = async (d) => {
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      try {
        await sleep(10);
        const n = (tries.get(d.i) ?? 0) + 1;
        tries.set(d.i, n);
        if (d.always) throw new Error('always fails');
        if (n <= (d.failTimes ?? 0)) throw new Error(`fails on try ${n}`);
        return null;
      } finally {
        running -= 1;
      }
    };
    for (const [k, x] of [['a', a], ['b', b]]) {
      fifoWorker(x, k, calls, behaviour);
      await waitForFunctions(x.w, ['fifo::work']);
    }
    const groups = ['g1', 'g2', 'g3'];
    for (let i = 0; i < 12; i += 1) {
      const data = { i, g: groups[i % 3] };
      if (i === 4) data.failTimes = 2;
      if (i === 8) data.always = true;
      const { messageReceiptId } = await enqueue(i % 2 ? b.w : a.w, 'ordered', 'fifo::work', data);
      assert.match(messageReceiptId, UUID_RE);
    }
    // 0..11, message 4 three times (fails twice, then succeeds), message 8 three times (dead-lettered).
    const expected = [0, 1, 2, 3, 4, 4, 4, 5, 6, 7, 8, 8, 8, 9, 10, 11];
    await waitFor(() => calls.length >= expected.length, { timeoutMs: 20000, what: `${expected.length} calls` })
      .catch((e) => { throw new Error(`${e.message}; got ${JSON.stringify(calls.map((c) => c.i))}`); });
    await sleep(300);
    assert.deepEqual(calls.map((c) => c.i), expected, 'handled in enqueue order, retries in place');
    assert.equal(new Set(calls.map((c) => c.eng)).size, 1, 'one engine (the active consumer) handles all');
    assert.equal(maxRunning, 1, 'one at a time');
    const dead = await waitFor(async () => {
      const rows = await call(a.w, 'engine::queue::dlq_messages', { topic: 'ordered' });
      return rows.length === 1 && rows;
    }, { timeoutMs: 10000, what: 'the dead letter' });
    assert.deepEqual(dead[0].payload, { i: 8, g: 'g3', always: true });
    assert.equal(dead[0].retries, 3);
    assert.equal(dead[0].error, 'function call failed');
    const stats = await call(b.w, 'engine::queue::topic_stats', { topic: 'ordered' });
    assert.equal(stats.depth, 0);
    assert.equal(stats.dlq_depth, 1);
    await closeAll();
  });

  test('FIFO named queue: the active engine killed mid-handler, the other goes on in order', async () => {
    const queues = '        ordkill: { type: fifo, message_group_field: g, max_retries: 2, backoff_ms: 100 }\n';
    const a = await start(queues, 'fifo-kill-a');
    const b = await start(queues, 'fifo-kill-b');
    const calls = [];
    const behaviour = async (d) => {
      if (d.i === 3 && calls.filter((c) => c.i === 3).length === 1) await new Promise(() => {}); // hangs
      return null;
    };
    const byName = { a, b };
    for (const [k, x] of Object.entries(byName)) {
      fifoWorker(x, k, calls, behaviour);
      await waitForFunctions(x.w, ['fifo::work']);
    }
    for (let i = 0; i < 8; i += 1) {
      await enqueue(i % 2 ? b.w : a.w, 'ordkill', 'fifo::work', { i, g: i % 2 ? 'x' : 'y' });
    }
    await waitFor(() => calls.some((c) => c.i === 3), { timeoutMs: 10000, what: 'message 3 handled' });
    await sleep(300);
    assert.deepEqual(calls.map((c) => c.i), [0, 1, 2, 3], 'nothing passes the message in hand');
    const first = calls[0].eng;
    assert.ok(calls.every((c) => c.eng === first));
    byName[first].e.proc.kill('SIGKILL');
    await byName[first].e.exited;
    await waitFor(() => calls.length >= 9, { timeoutMs: 15000, what: 'the rest on the other engine' })
      .catch((e) => { throw new Error(`${e.message}; got ${JSON.stringify(calls)}`); });
    await sleep(300);
    assert.deepEqual(calls.map((c) => c.i), [0, 1, 2, 3, 3, 4, 5, 6, 7]);
    assert.ok(calls.slice(4).every((c) => c.eng !== first), 'the other engine took over');
    await closeAll();
  });

  test('a queue declared before it became FIFO: a clear error for it, the other queues work; deleted, it is declared again', async () => {
    const plain = '        legacy: { concurrency: 2 }\n';
    const old = await start(plain, 'fifo-legacy-old');
    old.w.registerFunction('fifo::legacy', async () => null);
    await waitForFunctions(old.w, ['fifo::legacy']);
    await enqueue(old.w, 'legacy', 'fifo::legacy', { g: 'x' });
    await closeAll();
    const queues = '        legacy: { type: fifo, message_group_field: g }\n'
      + '        fresh: { type: fifo, message_group_field: g }\n';
    const x = await start(queues, 'fifo-legacy-new');
    const got = [];
    x.w.registerFunction('fifo::fresh', async (d) => { got.push(d.n); return null; });
    await waitForFunctions(x.w, ['fifo::fresh']);
    const err = await rejectionOf(enqueue(x.w, 'legacy', 'fifo::fresh', { g: 'x' }));
    assert.equal(err.code, 'enqueue_error');
    assert.match(err.message, /queue 'iii\.__fn_queue::legacy\.queue' exists on the broker with other arguments \(a FIFO queue is declared with x-single-active-consumer: true\): delete it/);
    assert.match(err.message, /PRECONDITION_FAILED/);
    for (let n = 0; n < 3; n += 1) await enqueue(x.w, 'fresh', 'fifo::fresh', { g: 'y', n });
    await waitFor(() => got.length === 3, { timeoutMs: 10000, what: 'the other FIFO queue consumed' });
    assert.deepEqual(got, [0, 1, 2]);
    const e = engines[0];
    assert.ok(e.alive());
    assert.match(e.log(), /cannot consume iii\.__fn_queue::legacy\.queue: queue 'iii\.__fn_queue::legacy\.queue' exists on the broker/);
    // Deleted: declared again as a FIFO queue by the next enqueue and by the consumer.
    await rabbit.ctl('delete_queue', 'iii.__fn_queue::legacy.queue');
    await enqueue(x.w, 'legacy', 'fifo::fresh', { g: 'x', n: 99 });
    await waitFor(() => got.includes(99), { timeoutMs: 10000, what: 'the FIFO queue declared again and consumed' });
    await closeAll();
  });

  test('broker killed and restarted mid-run: nothing acknowledged is lost; calls fail fast meanwhile', async () => {
    const queues = '        durable: { concurrency: 4, max_retries: 3, backoff_ms: 50 }\n'
      + '        fifo1: { type: fifo, message_group_field: g, max_retries: 3, backoff_ms: 1000 }\n';
    const a = await start(queues, 'rq-restart');
    const done = new Set();
    a.w.registerFunction('rq::durable', async (d) => { await sleep(5); done.add(d.i); return null; });
    // A FIFO message waiting for its next attempt when the broker goes: the broker has it back, so the
    // engine drops its copy instead of running it again; the redelivered one runs after the restart.
    const fifoCalls = [];
    a.w.registerFunction('rq::fifo1', async () => {
      fifoCalls.push(Date.now());
      if (fifoCalls.length === 1) throw new Error('first attempt fails');
      return null;
    });
    await waitForFunctions(a.w, ['rq::durable', 'rq::fifo1']);
    const acked = new Set();
    let stop = false;
    let failures = 0;
    const producer = (async () => {
      for (let i = 0; !stop; i += 1) {
        try {
          await enqueue(a.w, 'durable', 'rq::durable', { i });
          acked.add(i);
        } catch {
          failures += 1;
          await sleep(20);
        }
      }
    })();
    await waitFor(() => acked.size >= 100 && done.size >= 20, { timeoutMs: 20000, what: 'enqueues and deliveries' });
    await enqueue(a.w, 'fifo1', 'rq::fifo1', { g: 'x' });
    await waitFor(() => fifoCalls.length === 1, { timeoutMs: 10000, what: 'the FIFO message failing once' });
    await rabbit.kill(); // its next attempt (1 s) falls in the outage
    // During the outage: a clear error, at once.
    await sleep(1500);
    const t0 = Date.now();
    const e = await rejectionOf(enqueue(a.w, 'durable', 'rq::durable', { i: -1 }));
    const ms = Date.now() - t0;
    assert.equal(e.code, 'enqueue_error');
    assert.match(e.message, /RabbitMQ is unavailable at amqp:\/\/127\.0\.0\.1:\d+/);
    assert.ok(ms < 1000, `failed in ${ms} ms`);
    const t1 = Date.now();
    const pe = await rejectionOf(call(a.w, 'iii::durable::publish', { topic: 't', data: 1 }));
    assert.equal(pe.code, 'publish_failed');
    assert.ok(Date.now() - t1 < 1000);
    const before = acked.size;
    const restartedAt = Date.now();
    await rabbit.start();
    console.log(`# rabbitmq-server restarted in ${rabbit.bootMs} ms`);
    await waitFor(() => acked.size >= before + 50, { timeoutMs: 30000, what: 'enqueues after the restart' });
    stop = true;
    await withTimeout(producer, 15000, 'producer');
    await waitFor(() => [...acked].every((i) => done.has(i)), { timeoutMs: 60000, what: 'every acknowledged message delivered' })
      .catch((err) => {
        throw new Error(`${err.message}; missing ${[...acked].filter((i) => !done.has(i)).slice(0, 20)}`);
      });
    assert.ok(failures > 0, 'some enqueues failed during the outage');
    assert.ok(!done.has(-1));
    await waitFor(() => fifoCalls.length >= 2, { timeoutMs: 15000, what: 'the FIFO message redelivered' });
    assert.equal(fifoCalls.length, 2, 'the held FIFO copy was not run again');
    assert.ok(fifoCalls[1] >= restartedAt, 'the redelivered FIFO message ran after the restart');
    await closeAll();
  });
});
