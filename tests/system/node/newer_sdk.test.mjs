// Workers built with a newer official SDK (iii-sdk 0.22.1, installed as `iii-sdk-next`) beside
// 0.11.6 ones: calls both ways, caller `metadata` on invokefunction reaching the handler, and the
// `reattach` frame after a reconnect taking over the old connection's registrations and the call
// it was executing (the old connection is made half-open by a TCP proxy, so only reattach can
// tell the engine that it is gone).
import assert from 'node:assert/strict';
import net from 'node:net';
import { registerWorker as registerNextWorker } from 'iii-sdk-next';
import {
  FAST_RECONNECT, engineTest, waitFor, waitForFunctions, withTimeout, workersNamed,
} from './harness.mjs';

function nextWorker(url, name) {
  return registerNextWorker(url, {
    workerName: name,
    invocationTimeoutMs: 10000,
    reconnectionConfig: FAST_RECONNECT,
    otel: { enabled: false },
    enableMetricsReporting: false,
  });
}

/** A TCP proxy in front of the engine whose client sides can be cut while the engine sides stay open. */
async function startProxy(enginePort) {
  const pairs = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(enginePort, '127.0.0.1');
    const pair = { client, upstream };
    pairs.push(pair);
    client.on('error', () => {});
    upstream.on('error', () => {});
    client.pipe(upstream, { end: false });
    upstream.pipe(client);
    client.once('close', () => { if (!pair.cut) upstream.destroy(); });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `ws://127.0.0.1:${server.address().port}`,
    pairs,
    /**
     * Drop the worker's side only: the engine still sees an open, silent connection. Resolves
     * with the first bytes the engine sends on it afterwards.
     */
    cut(pair) {
      pair.cut = true;
      pair.upstream.unpipe(pair.client);
      pair.client.destroy();
      const first = new Promise((r) => pair.upstream.once('data', r));
      pair.upstream.resume();  // unpipe paused it
      return first;
    },
    close() { for (const p of pairs) { p.client.destroy(); p.upstream.destroy(); } server.close(); },
  };
}

engineTest('newer SDK (0.22.1) and 0.11.6 workers call each other; caller metadata reaches the handler', async (ctx) => {
  const old = ctx.worker('old-sdk');
  const next = nextWorker(ctx.url, 'next-sdk');
  ctx.defer(() => next.shutdown());
  const seen = [];
  next.registerFunction('next::echo', async (input, metadata) => { seen.push(metadata); return { got: input.v }; });
  old.registerFunction('old::echo', async (input) => ({ got: input.v }));
  await waitForFunctions(old, ['next::echo', 'old::echo']);

  assert.deepEqual(await old.trigger({ function_id: 'next::echo', payload: { v: 1 } }), { got: 1 });
  assert.deepEqual(await next.trigger({ function_id: 'old::echo', payload: { v: 2 } }), { got: 2 });
  assert.deepEqual(
    await next.trigger({ function_id: 'next::echo', payload: { v: 3 }, metadata: { tenant: 't1', n: [1, 2] } }),
    { got: 3 });
  assert.deepEqual(seen.at(-1), { tenant: 't1', n: [1, 2] }, 'caller metadata is forwarded to the executor');
  assert.equal(seen[0], undefined, 'no metadata when the caller sent none');
  const rows = await waitFor(async () => {
    const r = await workersNamed(old, 'next-sdk');
    return r.length === 1 && r[0].version ? r : null;
  }, { what: 'the 0.22 worker row with its metadata' });
  assert.equal(rows[0].runtime, 'node');
  assert.equal(rows[0].version, '0.22.1');
  assert.ok(!/invalid|unknown message/i.test(ctx.engine.log()), `no protocol complaints:\n${ctx.engine.logTail()}`);
});

engineTest('newer SDK reconnecting with reattach takes over the half-open old connection', async (ctx) => {
  const proxy = await startProxy(ctx.engine.port);
  ctx.defer(() => proxy.close());
  const caller = ctx.worker('reattach-caller');
  const next = nextWorker(proxy.url, 'reattach-next');
  ctx.defer(() => next.shutdown());
  let release;
  const gate = new Promise((r) => { release = r; });
  let calls = 0;
  next.registerFunction('next::slow', async (input) => { calls += 1; await gate; return { done: input.n }; });
  next.registerFunction('next::fast', async () => 'fast');
  await waitForFunctions(caller, ['next::slow', 'next::fast']);
  const before = await waitFor(async () => {
    const r = await workersNamed(caller, 'reattach-next');
    return r.length === 1 ? r[0] : null;
  }, { what: 'one reattach-next row' });

  // A call in flight on the old connection, then the worker loses that connection. The engine
  // sees nothing (half-open), so without reattach the call could only time out.
  const pending = caller.trigger({ function_id: 'next::slow', payload: { n: 7 }, timeoutMs: 8000 });
  pending.catch(() => {});  // awaited below; a failure before that must not surface as unhandled
  await waitFor(() => calls === 1, { what: 'the slow handler to start' });
  assert.equal(proxy.pairs.length, 1, 'the worker connection goes through the proxy');
  const [oldPair] = proxy.pairs;
  const mark = ctx.engine.lines.length;
  const sentAfterCut = proxy.cut(oldPair);

  const frame = await withTimeout(sentAfterCut, 5000, 'the engine to close the retired connection');
  assert.equal(frame[0], 0x88, 'the engine sends a WebSocket Close on the retired connection');
  // The log line travels through a pipe; it may arrive after the Close frame.
  await waitFor(() => ctx.engine.linesSince(mark).some((l) => /reattached as/.test(l)),
    { what: 'the reattach to be logged' });
  release();
  assert.deepEqual(await pending, { done: 7 }, 'the result sent on the new connection reaches the caller');

  const after = await waitFor(async () => {
    const r = await workersNamed(caller, 'reattach-next');
    return r.length === 1 && r[0].id !== before.id ? r[0] : null;
  }, { what: 'exactly one reattach-next row, the new connection' });
  assert.notEqual(after.id, before.id);
  assert.equal(await caller.trigger({ function_id: 'next::fast', payload: {} }), 'fast');
  const list = await caller.trigger({ function_id: 'engine::functions::list', payload: {} });
  assert.equal(list.functions.filter((f) => f.function_id === 'next::fast').length, 1);
});

engineTest('reattach with a wrong token is refused and changes nothing', async (ctx) => {
  const { default: WebSocket } = await import('ws');
  const victim = ctx.worker('victim');
  victim.registerFunction('victim::f', async () => 'victim');
  await waitForFunctions(victim, ['victim::f']);
  const row = (await workersNamed(victim, 'victim'))[0];
  const ws = new WebSocket(ctx.url);
  ctx.defer(() => ws.close());
  const first = await new Promise((resolve, reject) => {
    ws.once('message', (d) => resolve(JSON.parse(d.toString())));
    ws.once('error', reject);
  });
  assert.equal(first.type, 'workerregistered');
  assert.match(first.reattach_token, /^[0-9a-f-]{36}$/, 'the engine hands out a reattach token');
  const mark = ctx.engine.lines.length;
  ws.send(JSON.stringify({ type: 'reattach', previous_worker_id: row.id, reattach_token: first.reattach_token }));
  ws.send(JSON.stringify({ type: 'reattach', previous_worker_id: row.id }));
  await waitFor(() => ctx.engine.linesSince(mark).filter((l) => /reattach to .* refused/.test(l)).length === 2,
    { what: 'both attempts refused' });
  assert.equal(await victim.trigger({ function_id: 'victim::f', payload: {} }), 'victim');
  assert.equal((await workersNamed(victim, 'victim'))[0].id, row.id);
});
