// Several engines on one real redis-server (started here on a free port): the `redis` adapters of iii-state,
// iii-stream (data and Pub/Sub delivery to stream clients of every engine), iii-pubsub and iii-cron (each tick
// once across engines), the key layout an original engine shares, and Redis killed and restarted mid-run
// (nothing acknowledged lost, calls during the outage failing fast, subscriptions restored).
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import WebSocket from 'ws';
import { newWorker, sleep, startEngine, waitFor, withTimeout } from './harness.mjs';

// ---------------------------------------------------------------------------------------------------------
// redis-server

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}

class RedisServer {
  static async start({ durable = false } = {}) {
    const r = new RedisServer();
    r.port = await freePort();
    r.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iii-sys-redis-'));
    r.durable = durable;
    await r.spawn();
    return r;
  }

  get url() { return `redis://127.0.0.1:${this.port}`; }

  async spawn() {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--save', '',
      '--daemonize', 'no', '--loglevel', 'warning'];
    // Every acknowledged write on disk before the reply: what "nothing acknowledged lost" needs from Redis.
    if (this.durable) args.push('--appendonly', 'yes', '--appendfsync', 'always');
    else args.push('--appendonly', 'no');
    this.proc = spawn('redis-server', args, { stdio: 'ignore' });
    this.exited = new Promise((resolve) => this.proc.once('exit', resolve));
    await waitFor(() => canConnect(this.port), { timeoutMs: 10000, what: `redis-server on port ${this.port}` });
  }

  async kill() {
    this.proc.kill('SIGKILL');
    await this.exited;
  }

  cli(...args) {
    return execFileSync('redis-cli', ['-p', String(this.port), '--raw', ...args], { encoding: 'utf8' }).replace(/\n$/, '');
  }

  async stop() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) await this.kill();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------
// engines on one Redis

const STREAM_LISTEN_RE = /iii-stream listening on ([0-9.]+):(\d+)/;

function redisYaml(url) {
  const adapter = `adapter: { name: redis, config: { redis_url: "${url}" } }`;
  return [
    `  - name: iii-state\n    config: { ${adapter} }`,
    `  - name: iii-stream\n    config: { host: 127.0.0.1, port: 0, ${adapter} }`,
    `  - name: iii-pubsub\n    config: { ${adapter} }`,
    `  - name: iii-cron\n    config: { ${adapter} }`,
  ].join('\n');
}

async function streamUrl(engine) {
  const m = await waitFor(() => engine.lines.map((l) => STREAM_LISTEN_RE.exec(l)).find(Boolean),
    { timeoutMs: 5000, what: 'the iii-stream listening line' });
  return `ws://127.0.0.1:${m[2]}`;
}

/** Starts `n` engines on `redis`, each with one SDK worker; everything is stopped by the returned cleanup. */
async function cluster(redis, n) {
  const engines = [];
  const workers = [];
  for (let i = 0; i < n; i++) {
    const e = await startEngine({ extraYaml: redisYaml(redis.url) });
    engines.push(e);
    workers.push(newWorker(e.url, `redis-node-${i}`));
  }
  const cleanup = async () => {
    for (const w of workers) await w.shutdown().catch(() => {});
    for (const e of engines) {
      const alive = e.alive();
      await e.stop().catch((err) => { if (alive) throw err; });
      e.cleanup();
    }
  };
  return { engines, workers, cleanup };
}

function call(w, fid, payload, timeoutMs = 5000) {
  return w.trigger({ function_id: fid, payload, timeoutMs });
}

class StreamClient {
  static async open(url) {
    const c = new StreamClient();
    c.inbox = [];
    c.waiters = [];
    c.ws = new WebSocket(url, { perMessageDeflate: false });
    c.ws.on('message', (data) => {
      c.inbox.push(JSON.parse(data.toString()));
      c.waiters = c.waiters.filter((fn) => !fn());
    });
    await withTimeout(new Promise((resolve, reject) => { c.ws.once('open', resolve); c.ws.once('error', reject); }),
      5000, `stream client ${url}`);
    return c;
  }

  join(subscriptionId, streamName, groupId, id) {
    const data = { subscriptionId, streamName, groupId };
    if (id !== undefined) data.id = id;
    this.ws.send(JSON.stringify({ type: 'join', data }));
  }

  next(what, timeoutMs = 5000) {
    if (this.inbox.length) return Promise.resolve(this.inbox.shift());
    return withTimeout(new Promise((resolve) => {
      this.waiters.push(() => {
        if (!this.inbox.length) return false;
        resolve(this.inbox.shift());
        return true;
      });
    }), timeoutMs, what);
  }

  close() { this.ws.terminate(); }
}

/** A test with a fresh redis-server (stopped afterwards). */
function redisTest(name, opts, fn) {
  test(name, { timeout: 60000 }, async () => {
    const redis = await RedisServer.start(opts);
    try {
      await fn(redis);
    } finally {
      await redis.stop();
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// iii-state

redisTest('state: written on engine A, read, updated, listed and deleted on engine B; the original key layout', {}, async (redis) => {
  const { workers: [a, b], cleanup } = await cluster(redis, 2);
  try {
    await waitFor(async () => (await call(a, 'engine::functions::list', {})).functions.some((f) => f.function_id === 'state::set'));
    const set = await call(a, 'state::set', { scope: 'users', key: 'u1', value: { name: 'Ada', n: 1, tags: [] } });
    assert.deepEqual(set, { old_value: null, new_value: { name: 'Ada', n: 1, tags: [] } });
    assert.deepEqual(await call(b, 'state::get', { scope: 'users', key: 'u1' }), { name: 'Ada', n: 1, tags: [] });
    // The original's layout: HASH state:<scope>, field = key, value = compact JSON text.
    assert.equal(redis.cli('TYPE', 'state:users'), 'hash');
    assert.equal(redis.cli('HGET', 'state:users', 'u1'), '{"name":"Ada","n":1,"tags":[]}');

    const upd = await call(b, 'state::update', {
      scope: 'users', key: 'u1',
      ops: [{ type: 'increment', path: 'n', by: 41 }, { type: 'append', path: 'tags', value: 'x' }, { type: 'set', path: 'n.x', value: 1 }],
    });
    assert.deepEqual(upd.old_value, { name: 'Ada', n: 1, tags: [] });
    assert.deepEqual(upd.new_value, { name: 'Ada', n: 42, tags: ['x'], 'n.x': 1 });
    assert.equal(upd.errors, undefined);
    assert.deepEqual(await call(a, 'state::get', { scope: 'users', key: 'u1' }), upd.new_value);

    // Concurrent updates from both engines on one key: none is lost (compare-and-set in Redis).
    await call(a, 'state::set', { scope: 'counters', key: 'c', value: { n: 0 } });
    await Promise.all(Array.from({ length: 100 }, (_, i) =>
      call(i % 2 ? a : b, 'state::update', { scope: 'counters', key: 'c', ops: [{ type: 'increment', path: 'n', by: 1 }] })));
    assert.deepEqual(await call(b, 'state::get', { scope: 'counters', key: 'c' }), { n: 100 });

    await call(a, 'state::set', { scope: 'users', key: 'u2', value: 'two' });
    const list = await call(b, 'state::list', { scope: 'users' });
    assert.equal(list.length, 2);
    assert.ok(list.some((v) => v === 'two'));
    assert.deepEqual(await call(b, 'state::list_groups', {}), { groups: ['counters', 'users'] });
    assert.deepEqual(await call(b, 'state::delete', { scope: 'users', key: 'u2' }), 'two');
    assert.equal(await call(a, 'state::get', { scope: 'users', key: 'u2' }), undefined);
    assert.equal(await call(a, 'state::delete', { scope: 'users', key: 'u2' }), undefined);

    // A value written by another program in the original's layout is read as JSON.
    redis.cli('HSET', 'state:shared', 'k', '{"from": "original"}');
    assert.deepEqual(await call(a, 'state::get', { scope: 'shared', key: 'k' }), { from: 'original' });
    // One that is not JSON is an error for that key, not a crash; the list skips it.
    redis.cli('HSET', 'state:shared', 'bad', 'not json');
    await assert.rejects(call(a, 'state::get', { scope: 'shared', key: 'bad' }), /GET_ERROR.*not valid JSON/);
    assert.deepEqual(await call(a, 'state::list', { scope: 'shared' }), [{ from: 'original' }]);
  } finally {
    await cleanup();
  }
});

// ---------------------------------------------------------------------------------------------------------
// iii-stream

redisTest('stream: a client on engine B receives the writes and events made on engine A', {}, async (redis) => {
  const { engines: [ea, eb], workers: [a, b], cleanup } = await cluster(redis, 2);
  const clients = [];
  try {
    await call(a, 'stream::set', { stream_name: 'chat', group_id: 'room', item_id: 'm0', data: { text: 'before' } });
    const onB = await StreamClient.open(await streamUrl(eb));
    const onA = await StreamClient.open(await streamUrl(ea));
    clients.push(onB, onA);
    onB.join('s1', 'chat', 'room');
    const sync = await onB.next('sync on B');
    assert.deepEqual(sync.event, { type: 'sync', data: [{ text: 'before' }] });
    onA.join('s2', 'chat', 'room', 'm1');
    assert.deepEqual((await onA.next('sync on A')).event, { type: 'sync', data: null });

    await call(a, 'stream::set', { stream_name: 'chat', group_id: 'room', item_id: 'm1', data: { text: 'hi' } });
    for (const [c, where] of [[onB, 'B'], [onA, 'A']]) {
      const ev = await c.next(`create on ${where}`);
      assert.equal(ev.type, 'stream');
      assert.equal(ev.streamName, 'chat');
      assert.equal(ev.groupId, 'room');
      assert.equal(ev.id, 'm1');
      assert.deepEqual(ev.event, { type: 'create', data: { text: 'hi' } });
    }
    await call(b, 'stream::update', { stream_name: 'chat', group_id: 'room', item_id: 'm1', ops: [{ type: 'set', path: 'seen', value: true }] });
    assert.deepEqual((await onB.next('update on B')).event, { type: 'update', data: { text: 'hi', seen: true } });
    assert.deepEqual((await onA.next('update on A')).event, { type: 'update', data: { text: 'hi', seen: true } });

    // A group-wide custom event reaches B's group subscription only (A's is item-level).
    assert.equal(await call(a, 'stream::send', { stream_name: 'chat', group_id: 'room', type: 'typing', data: { who: 'ada' } }), undefined);
    assert.deepEqual((await onB.next('event on B')).event, { type: 'event', event: { type: 'typing', data: { who: 'ada' } } });
    await call(a, 'stream::delete', { stream_name: 'chat', group_id: 'room', item_id: 'm1' });
    assert.deepEqual((await onB.next('delete on B')).event, { type: 'delete', data: { text: 'hi', seen: true } });
    assert.deepEqual((await onA.next('delete on A')).event, { type: 'delete', data: { text: 'hi', seen: true } });

    assert.equal(redis.cli('HGET', 'stream:chat:room', 'm0'), '{"text":"before"}');
    assert.deepEqual(await call(b, 'stream::list_groups', { stream_name: 'chat' }), ['room']);
    assert.deepEqual(await call(b, 'stream::list_all', {}), { stream: [{ id: 'chat', groups: ['room'] }], count: 1 });
    // Garbage on the events channel (another program) is ignored; delivery goes on.
    redis.cli('PUBLISH', 'stream::events', 'garbage');
    redis.cli('PUBLISH', 'stream::events', '{"streamName":1}');
    await call(a, 'stream::send', { stream_name: 'chat', group_id: 'room', type: 'after-garbage', data: null });
    assert.equal((await onB.next('event after garbage')).event.event.type, 'after-garbage');
    await sleep(200);
    assert.deepEqual(onB.inbox, [], 'each event is delivered once per subscription');
    assert.deepEqual(onA.inbox, []);
  } finally {
    for (const c of clients) c.close();
    await cleanup();
  }
});

// ---------------------------------------------------------------------------------------------------------
// iii-pubsub

redisTest('pubsub: a publish on engine A reaches the subscribers on engines B and C (and A)', {}, async (redis) => {
  const { workers, cleanup } = await cluster(redis, 3);
  try {
    const got = workers.map(() => []);
    workers.forEach((w, i) => {
      w.registerFunction(`ps::on${i}`, async (data) => { got[i].push(data); return null; });
      w.registerTrigger({ type: 'subscribe', function_id: `ps::on${i}`, config: { topic: 'orders' } });
    });
    // A second trigger on the same topic in one engine gets the messages too.
    const extra = [];
    workers[1].registerFunction('ps::extra', async (data) => { extra.push(data); return null; });
    workers[1].registerTrigger({ type: 'subscribe', function_id: 'ps::extra', config: { topic: 'orders' } });
    // Publish until every engine has subscribed (Redis Pub/Sub has no backlog).
    await waitFor(async () => {
      await call(workers[0], 'publish', { topic: 'orders', data: 'warm-up' });
      await sleep(50);
      return got.every((g) => g.includes('warm-up')) && extra.includes('warm-up');
    }, { timeoutMs: 10000, what: 'every subscription in place' });
    for (const g of got) g.length = 0;
    extra.length = 0;

    const message = { id: 7, items: [1, 'two', null], nested: { ok: true } };
    assert.equal(await call(workers[0], 'publish', { topic: 'orders', data: message }), null);
    await waitFor(() => got.every((g) => g.length === 1) && extra.length === 1, { what: 'delivery to 3 engines' });
    for (const g of got) assert.deepEqual(g, [message]);
    assert.deepEqual(extra, [message]);
    await sleep(200);
    assert.ok(got.every((g) => g.length === 1), 'delivered once per subscription');
    // The original's wire format: PUBLISH <topic> <JSON of data>; text that is not JSON arrives as a string.
    assert.equal(redis.cli('PUBLISH', 'orders', '{"from":"cli"}'), '3');
    redis.cli('PUBLISH', 'orders', 'plain text');
    await waitFor(() => got.every((g) => g.length === 3), { what: 'messages published by redis-cli' });
    for (const g of got) assert.deepEqual(g.slice(1), [{ from: 'cli' }, 'plain text']);
  } finally {
    await cleanup();
  }
});

// ---------------------------------------------------------------------------------------------------------
// iii-cron

redisTest('cron: three engines with the same every-second job fire each tick once', {}, async (redis) => {
  const { workers, cleanup } = await cluster(redis, 3);
  try {
    const fired = []; // [engine index, scheduled_time]
    workers.forEach((w, i) => {
      w.registerFunction('cron::job', async (p) => { fired.push([i, p.scheduled_time]); return null; });
      w.registerTrigger({ type: 'cron', function_id: 'cron::job', config: { expression: '* * * * * *' } });
    });
    await waitFor(() => new Set(fired.map(([, t]) => t)).size >= 4, { timeoutMs: 10000, what: '4 ticks' });
    await sleep(300);
    const byTick = new Map();
    for (const [i, t] of fired) byTick.set(t, [...(byTick.get(t) ?? []), i]);
    for (const [t, engines] of byTick) assert.equal(engines.length, 1, `tick ${t} fired on engines ${engines}`);
    assert.ok(redis.cli('KEYS', 'cron_lock:*').split('\n').length >= 1, 'the lock keys live in Redis');
  } finally {
    await cleanup();
  }
});

// ---------------------------------------------------------------------------------------------------------
// Redis outage

redisTest('Redis killed and restarted mid-run: calls fail fast meanwhile, nothing acknowledged is lost, stream and pubsub subscriptions come back', { durable: true }, async (redis) => {
  const { engines: [, eb], workers: [a, b], cleanup } = await cluster(redis, 2);
  const clients = [];
  try {
    const onB = await StreamClient.open(await streamUrl(eb));
    clients.push(onB);
    onB.join('s', 'live', 'g');
    await onB.next('sync');
    const heard = [];
    b.registerFunction('ps::heard', async (d) => { heard.push(d); return null; });
    b.registerTrigger({ type: 'subscribe', function_id: 'ps::heard', config: { topic: 'after' } });

    // A writer that keeps going through the outage, remembering what was acknowledged.
    const acked = new Map();
    const failures = [];
    let stop = false;
    let i = 0;
    const writer = (async () => {
      while (!stop) {
        const key = `k${i++}`;
        const t0 = Date.now();
        try {
          await call(a, 'state::set', { scope: 'outage', key, value: { i } }, 5000);
          acked.set(key, i);
        } catch (e) {
          failures.push({ ms: Date.now() - t0, message: e.message });
          await sleep(20);
        }
      }
    })();
    await waitFor(() => acked.size >= 50, { what: '50 acknowledged writes' });
    await redis.kill();
    await waitFor(() => failures.length >= 5, { timeoutMs: 5000, what: 'calls failing during the outage' });
    for (const f of failures) {
      assert.ok(f.ms < 1000, `a call during the outage took ${f.ms} ms`);
      assert.match(f.message, /SET_ERROR.*Redis/, f.message);
    }
    await redis.spawn(); // same port, same data directory (append-only file)
    const ackedBefore = acked.size;
    await waitFor(() => acked.size >= ackedBefore + 20, { timeoutMs: 10000, what: 'writes succeeding again' });
    stop = true;
    await writer;

    for (const [key, v] of acked)
      assert.deepEqual(await call(b, 'state::get', { scope: 'outage', key }), { i: v }, `acknowledged ${key}`);
    assert.equal(Number(redis.cli('HLEN', 'state:outage')) >= acked.size, true);

    // The stream and pubsub subscriptions of engine B were restored.
    await waitFor(async () => {
      await call(a, 'stream::send', { stream_name: 'live', group_id: 'g', type: 'ping', data: 1 });
      await call(a, 'publish', { topic: 'after', data: 'x' });
      await sleep(50);
      return onB.inbox.length > 0 && heard.length > 0;
    }, { timeoutMs: 10000, what: 'stream and pubsub delivery after the restart' });
    assert.deepEqual(onB.inbox[0].event, { type: 'event', event: { type: 'ping', data: 1 } });
  } finally {
    for (const c of clients) c.close();
    await cleanup();
  }
});
