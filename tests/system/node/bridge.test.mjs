// iii-bridge and the `bridge` adapters: two real engines, the second connected to the first as a
// worker. Calls both ways (forward / expose / bridge.invoke), a restart of the remote engine
// (the bridge reconnects and registers its exposed functions again), and iii-state / iii-stream
// served by the remote engine through `adapter: {name: bridge}`.
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import WebSocket from 'ws';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  III_BIN, configYaml, engineTest, newWorker, rejectionOf, runCommand, startEngine, waitFor, waitForFunctions, withTimeout,
} from './harness.mjs';

const bridgeYaml = (port, extra = '') => `  - name: iii-bridge
    config:
      url: ws://127.0.0.1:${port}
      service_id: bridge-svc
      service_name: bridge-b
      expose:
        - local_function: b::greet
          remote_function: remote::b::greet
        - local_function: b::plain
      forward:
        - local_function: b::double
          remote_function: a::double
          timeout_ms: 5000
${extra}`;

/** Starts engine B (bridged to `a`) and returns it; the caller stops it. */
async function startBridged(a, extraYaml) {
  return startEngine({ extraYaml: extraYaml(a.port) });
}

async function stopQuietly(engine, workers = []) {
  await Promise.all(workers.map((w) => withTimeout(w.shutdown(), 10000, 'worker shutdown').catch(() => {})));
  await engine.stop();
  engine.cleanup();
}

describe('iii-bridge', () => {
  engineTest('forward, expose and bridge.invoke call across two engines, both ways', async (ctx) => {
    const a = ctx.engine; // the remote engine
    const wa = ctx.worker('worker-a');
    const recorded = [];
    let recordedNotify;
    const recordedOnce = new Promise((r) => { recordedNotify = r; });
    wa.registerFunction('a::double', async (d) => ({ doubled: d.x * 2 }));
    wa.registerFunction('a::fail', async () => { throw new Error('a failed'); });
    wa.registerFunction('a::record', async (d) => { recorded.push(d); recordedNotify(d); return null; });
    await waitForFunctions(wa, ['a::double', 'a::record']);

    const b = await startBridged(a, (port) => bridgeYaml(port));
    const wb = newWorker(b.url, 'worker-b');
    try {
      wb.registerFunction('b::greet', async (d) => ({ hello: d.name }));
      wb.registerFunction('b::plain', async () => 'plain');
      // B -> A: a forwarded function, and bridge.invoke with any remote id.
      await waitForFunctions(wb, ['b::double', 'bridge.invoke', 'bridge.invoke_async']);
      assert.deepEqual(await wb.trigger({ function_id: 'b::double', payload: { x: 21 } }), { doubled: 42 });
      assert.deepEqual(await wb.trigger({ function_id: 'bridge.invoke', payload: { function_id: 'a::double', data: { x: 2 } } }), { doubled: 4 });
      const e = await rejectionOf(wb.trigger({ function_id: 'bridge.invoke', payload: { function_id: 'a::fail', data: {} } }));
      assert.equal(e.code, 'bridge_error');
      assert.match(e.message, /a failed/);
      const nf = await rejectionOf(wb.trigger({ function_id: 'bridge.invoke', payload: { function_id: 'a::missing' } }));
      assert.equal(nf.code, 'bridge_error');
      assert.match(nf.message, /function_not_found/);
      const bad = await rejectionOf(wb.trigger({ function_id: 'bridge.invoke', payload: { data: 1 } }));
      assert.equal(bad.code, 'deserialization_error');
      assert.match(bad.message, /^deserialization_error: Failed to parse invoke input: /);
      assert.equal(await wb.trigger({ function_id: 'bridge.invoke_async', payload: { function_id: 'a::record', data: { n: 7 } } }), null);
      assert.equal((await withTimeout(recordedOnce, 5000, 'invoke_async reaching a::record')).n, 7);

      // A -> B: exposed functions (renamed, and under their own id).
      await waitForFunctions(wa, ['remote::b::greet', 'b::plain'], 10000);
      assert.deepEqual(await wa.trigger({ function_id: 'remote::b::greet', payload: { name: 'ann' } }), { hello: 'ann' });
      assert.equal(await wa.trigger({ function_id: 'b::plain', payload: {} }), 'plain');
      // The bridge is a worker of A, named after service_name.
      const rows = await wa.trigger({ function_id: 'engine::workers::list', payload: {} });
      assert.ok(rows.workers.some((w) => w.name === 'bridge-b'), JSON.stringify(rows.workers.map((w) => w.name)));
      // ... and registered its service there.
      const svcs = await wa.trigger({ function_id: 'engine::services::list', payload: {} });
      assert.ok(svcs.services.some((x) => x.id === 'bridge-svc' && x.name === 'bridge-b'), JSON.stringify(svcs));
    } finally {
      await stopQuietly(b, [wb]);
    }
  });

  engineTest('the bridge survives a restart of the remote engine and registers its functions again', { manageEngine: false }, async (ctx) => {
    let a = ctx.engine;
    const port = a.port;
    const b = await startBridged(a, (p) => bridgeYaml(p));
    const wb = newWorker(b.url, 'worker-b');
    let wa = newWorker(a.url, 'worker-a');
    try {
      wb.registerFunction('b::greet', async (d) => ({ hello: d.name }));
      wa.registerFunction('a::double', async (d) => ({ doubled: d.x * 2 }));
      await waitForFunctions(wa, ['remote::b::greet'], 10000);
      assert.deepEqual(await wa.trigger({ function_id: 'remote::b::greet', payload: { name: 'x' } }), { hello: 'x' });

      await wa.shutdown();
      await a.stop();
      a.cleanup();
      // While A is down, forwarded calls fail (they do not hang B).
      const down = await rejectionOf(wb.trigger({ function_id: 'bridge.invoke', payload: { function_id: 'a::double', data: { x: 1 }, timeout_ms: 500 } }));
      assert.equal(down.code, 'bridge_error');

      a = await startEngine({ configText: configYaml({ listeners: [{ port }] }) });
      wa = newWorker(a.url, 'worker-a2');
      wa.registerFunction('a::double', async (d) => ({ doubled: d.x * 3 }));
      await waitForFunctions(wa, ['remote::b::greet'], 15000);
      assert.deepEqual(await wa.trigger({ function_id: 'remote::b::greet', payload: { name: 'again' } }), { hello: 'again' });
      await waitFor(async () => {
        const r = await wb.trigger({ function_id: 'b::double', payload: { x: 2 }, timeoutMs: 2000 }).catch(() => null);
        return r?.doubled === 6;
      }, { timeoutMs: 10000, what: 'forwarded call reaching the restarted engine' });
    } finally {
      await stopQuietly(b, [wb]);
      await wa.shutdown().catch(() => {});
      await a.stop();
      a.cleanup();
    }
  });

  engineTest('iii-state and iii-stream through the bridge adapter are served by the remote engine', {
    extraYaml: '  - name: iii-stream\n    config: { host: 127.0.0.1, port: 0 }\n  - name: iii-state\n  - name: iii-pubsub',
  }, async (ctx) => {
    const a = ctx.engine;
    const wa = ctx.worker('worker-a');
    const b = await startBridged(a, (port) => `  - name: iii-state
    config:
      adapter:
        name: bridge
        config:
          bridge_url: ws://127.0.0.1:${port}
  - name: iii-stream
    config:
      host: 127.0.0.1
      port: 0
      adapter:
        name: bridge
        config:
          bridge_url: ws://127.0.0.1:${port}
`);
    const wb = newWorker(b.url, 'worker-b');
    try {
      // A `state` trigger on B fires for writes made through B.
      const events = [];
      let notify;
      const gotEvent = new Promise((r) => { notify = r; });
      wb.registerFunction('b::on-state', async (ev) => { events.push(ev); notify(ev); return null; });
      wb.registerTrigger({ type: 'state', function_id: 'b::on-state', config: { scope: 'bridged' } });

      const set = await withTimeout(waitFor(() => wb.trigger({ function_id: 'state::set', payload: { scope: 'bridged', key: 'k', value: { v: 1 } }, timeoutMs: 2000 }).catch(() => null),
        { timeoutMs: 10000, what: 'state::set through the bridge' }), 12000, 'state::set');
      assert.deepEqual(set, { old_value: null, new_value: { v: 1 } });
      // Stored on A.
      assert.deepEqual(await wa.trigger({ function_id: 'state::get', payload: { scope: 'bridged', key: 'k' } }), { v: 1 });
      const ev = await withTimeout(gotEvent, 5000, 'state trigger on B');
      assert.equal(ev.event_type, 'state:created');
      assert.deepEqual(ev.new_value, { v: 1 });
      // A's writes are read through B.
      await wa.trigger({ function_id: 'state::set', payload: { scope: 'bridged', key: 'k2', value: 2 } });
      assert.equal(await wb.trigger({ function_id: 'state::get', payload: { scope: 'bridged', key: 'k2' } }), 2);
      const upd = await wb.trigger({ function_id: 'state::update', payload: { scope: 'bridged', key: 'k2', ops: [{ type: 'increment', path: '', by: 3 }] } });
      assert.equal(upd.new_value, 5);
      assert.deepEqual((await wb.trigger({ function_id: 'state::list', payload: { scope: 'bridged' } })).sort(), [5, { v: 1 }].sort());
      assert.ok((await wb.trigger({ function_id: 'state::list_groups', payload: {} })).groups.includes('bridged'));
      assert.deepEqual(await wb.trigger({ function_id: 'state::delete', payload: { scope: 'bridged', key: 'k2' } }), 5);
      assert.equal(await wa.trigger({ function_id: 'state::get', payload: { scope: 'bridged', key: 'k2' } }), undefined);

      // Streams: items set through B live on A, and A's items are read through B.
      const sset = await wb.trigger({ function_id: 'stream::set', payload: { stream_name: 's', group_id: 'g', item_id: 'i1', data: { n: 1 } } });
      assert.deepEqual(sset, { old_value: null, new_value: { n: 1 } });
      assert.deepEqual(await wa.trigger({ function_id: 'stream::get', payload: { stream_name: 's', group_id: 'g', item_id: 'i1' } }), { n: 1 });
      await wa.trigger({ function_id: 'stream::set', payload: { stream_name: 's', group_id: 'g', item_id: 'i2', data: { n: 2 } } });
      const items = await wb.trigger({ function_id: 'stream::list', payload: { stream_name: 's', group_id: 'g' } });
      assert.deepEqual(items.map((x) => x.n).sort(), [1, 2]);
      assert.deepEqual(await wb.trigger({ function_id: 'stream::list_groups', payload: { stream_name: 's' } }), ['g']);
      assert.deepEqual(await wb.trigger({ function_id: 'stream::delete', payload: { stream_name: 's', group_id: 'g', item_id: 'i1' } }), { old_value: { n: 1 } });
      assert.equal(await wa.trigger({ function_id: 'stream::get', payload: { stream_name: 's', group_id: 'g', item_id: 'i1' } }), undefined);

      // B's stream clients: the join's sync lists A's items, and a change made through B comes
      // back to them through A's pubsub (topic stream.events).
      const port = await waitFor(() => b.lines.map((l) => /iii-stream listening on [0-9.]+:(\d+)/.exec(l)).find(Boolean)?.[1],
        { what: "B's iii-stream port" });
      const ws = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false });
      const inbox = [];
      let wake = () => {};
      ws.on('message', (d) => { inbox.push(JSON.parse(d.toString())); wake(); });
      const next = (what) => withTimeout(new Promise((resolve) => {
        const take = () => {
          if (!inbox.length) return false;
          wake = () => {};
          resolve(inbox.shift());
          return true;
        };
        if (!take()) wake = take;
      }), 5000, what);
      await withTimeout(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); }), 5000, 'stream client');
      try {
        ws.send(JSON.stringify({ type: 'join', data: { subscriptionId: 'sub1', streamName: 's', groupId: 'g' } }));
        const sync = await next('sync on join');
        assert.equal(sync.event.type, 'sync');
        assert.deepEqual(sync.event.data.map((x) => x.n), [2]);
        await wb.trigger({ function_id: 'stream::set', payload: { stream_name: 's', group_id: 'g', item_id: 'i3', data: { n: 3 } } });
        const ev = await next('create event through the remote pubsub');
        assert.equal(ev.streamName, 's');
        assert.equal(ev.id, 'i3');
        assert.deepEqual(ev.event, { type: 'create', data: { n: 3 } });
      } finally {
        ws.close();
      }
    } finally {
      await stopQuietly(b, [wb]);
    }
  });

  engineTest('iii-queue durable topics through the bridge adapter: publish and subscribers served by the remote engine', {
    extraYaml: '  - name: iii-queue',
  }, async (ctx) => {
    const a = ctx.engine;
    const wa = ctx.worker('worker-a');
    const b = await startBridged(a, (port) => `  - name: iii-queue
    config:
      adapter:
        name: bridge
        config:
          bridge_url: ws://127.0.0.1:${port}
`);
    const wb = newWorker(b.url, 'worker-b');
    try {
      const got = [];
      let wake = () => {};
      wb.registerFunction('b::sub', async (d) => { got.push(d); wake(); return null; });
      wb.registerFunction('b::only-even', async (d) => d.n % 2 === 0);
      wb.registerFunction('b::even', async (d) => { got.push({ even: d.n }); wake(); return null; });
      wb.registerTrigger({ type: 'durable:subscriber', function_id: 'b::sub', config: { topic: 'bt' } });
      wb.registerTrigger({ type: 'durable:subscriber', function_id: 'b::even', config: { topic: 'bt', condition_function_id: 'b::only-even' } });
      const gotMatching = (pred, what) => withTimeout(new Promise((resolve) => {
        const check = () => { const hit = got.find(pred); if (hit) { wake = () => {}; resolve(hit); } };
        wake = check;
        check();
      }), 10000, what);
      // Both subscriptions reach A as triggers on functions the bridge exposes there.
      await waitFor(async () => {
        const res = await wa.trigger({ function_id: 'engine::triggers::list', payload: {} });
        return res.triggers.filter((t) => t.trigger_type === 'durable:subscriber' && t.function_id.startsWith('iii::durable::bridge::sub::')).length === 2;
      }, { timeoutMs: 10000, what: 'remote durable:subscriber triggers on A' });

      assert.equal(await wb.trigger({ function_id: 'iii::durable::publish', payload: { topic: 'bt', data: { n: 1 } } }), null);
      assert.deepEqual(await gotMatching((x) => x.n === 1, 'message published through B'), { n: 1 });
      await wa.trigger({ function_id: 'iii::durable::publish', payload: { topic: 'bt', data: { n: 2 } } });
      assert.deepEqual(await gotMatching((x) => x.n === 2, 'message published on A'), { n: 2 });
      assert.deepEqual(await gotMatching((x) => x.even === 2, 'conditioned subscriber, even message'), { even: 2 });
      assert.ok(!got.some((x) => x.even === 1), 'the condition function (run on B) skipped the odd message');
      const topics = await wb.trigger({ function_id: 'engine::queue::list_topics', payload: {} });
      assert.ok(Array.isArray(topics), JSON.stringify(topics));
      const e = await rejectionOf(wb.trigger({ function_id: 'b::sub', payload: {}, action: { type: 'enqueue', queue: 'q' } }));
      assert.equal(e.code, 'enqueue_error');
    } finally {
      await stopQuietly(b, [wb]);
    }
  });
});

test('bad iii-bridge, bridge adapter and iii-http-functions configs fail at start-up naming file, line and key', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iii-bridge-cfg-'));
  try {
    const cases = [
      ['  - name: iii-bridge\n    config:\n      url: ws://127.0.0.1:1\n      exposee: []\n', /:9:.*exposee/],
      ['  - name: iii-bridge\n    config:\n      forward:\n        - local_function: a\n', /:9:.*remote_function/],
      ['  - name: iii-bridge\n    config:\n      url: wss://example.com\n', /:8:.*ws:\/\//],
      ['  - name: iii-state\n    config:\n      adapter:\n        name: bridge\n        config: { bridge_url: ws://x:1, nope: 1 }\n', /:10:.*nope/],
      ['  - name: iii-queue\n    config:\n      queue_configs: { q: { max_retries: 1 } }\n      adapter: { name: bridge }\n', /:8:.*queue_configs/],
      ['  - name: iii-http-functions\n    config:\n      security:\n        allowlist: [x]\n', /:9:.*allowlist/],
      ['  - name: iii-http-functions\n    config:\n      security:\n        require_https: maybe\n', /:9:.*require_https/],
    ];
    for (const [yaml, re] of cases) {
      const file = path.join(dir, 'config.yaml');
      fs.writeFileSync(file, configYaml({ extraYaml: yaml }));
      const r = await runCommand(III_BIN, ['--config', file], { cwd: dir, timeoutMs: 10000 });
      assert.equal(r.code, 2, `exit code for:\n${yaml}\n${r.stdout}${r.stderr}`);
      assert.match(r.stdout + r.stderr, re, yaml);
      assert.match(r.stdout + r.stderr, /config\.yaml:\d+:/, yaml);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
