// Connection lifecycle through the real engine: worker death mid-call, duplicate-registration failover,
// engine restart + SDK reconnect, graceful shutdown, idle liveness, several listeners, OTel socket.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  engineTest, newWorker, rejectionOf, sleep, startEngine, waitFor, waitForFunctions, waitForWorkerRow,
  withTimeout, workersNamed, UUID_RE,
} from './harness.mjs';

engineTest('worker SIGKILLed mid-call => caller gets invocation_stopped within 1 s', async (ctx) => {
  const child = ctx.child('slowpoke', 'slow');
  await child.waitLine(/^READY /);
  const caller = ctx.worker('kill-caller');
  await waitForFunctions(caller, ['slowpoke::hang']);
  assert.equal(await caller.trigger({ function_id: 'slowpoke::ping', payload: {} }), 'pong');

  const pending = caller.trigger({ function_id: 'slowpoke::hang', payload: { n: 1 }, timeoutMs: 5000 });
  const settled = pending.then(() => Date.now(), () => Date.now());
  const m = await child.waitLine(/^INVOKED (.*)$/);
  assert.equal(JSON.parse(m[1]).n, 1);
  const t0 = Date.now();
  child.kill('SIGKILL');
  const err = await rejectionOf(pending);
  const dt = (await settled) - t0;
  assert.equal(err.code, 'invocation_stopped', `expected invocation_stopped, got ${err.code}: ${err.message}`);
  assert.ok(dt < 1000, `caller learned about the dead worker after ${dt} ms (limit 1000 ms)`);

  // The dead worker's functions and its row are gone.
  const gone = await waitFor(async () => {
    try { await caller.trigger({ function_id: 'slowpoke::ping', payload: {}, timeoutMs: 2000 }); return null; } catch (e) { return e; }
  }, { timeoutMs: 3000, what: 'slowpoke::ping to disappear' });
  assert.equal(gone.code, 'function_not_found');
  await waitFor(async () => (await workersNamed(caller, 'slowpoke')).length === 0, { what: 'slowpoke row to disappear' });
});

engineTest('duplicate registration: newest registrant serves; when it leaves the other takes over', async (ctx) => {
  const caller = ctx.worker('dup-caller');
  const w1 = ctx.worker('dup-w1');
  w1.registerFunction('dup::f', async () => 'w1');
  await waitFor(async () => (await caller.trigger({ function_id: 'dup::f', payload: {} })) === 'w1', { what: 'w1 to serve dup::f' });

  const w2 = ctx.worker('dup-w2');
  w2.registerFunction('dup::f', async () => 'w2');
  await waitFor(async () => (await caller.trigger({ function_id: 'dup::f', payload: {} })) === 'w2', { what: 'w2 (newest) to serve dup::f' });
  for (let i = 0; i < 20; i++) assert.equal(await caller.trigger({ function_id: 'dup::f', payload: {} }), 'w2');

  await w2.shutdown();
  await waitFor(async () => (await workersNamed(caller, 'dup-w2')).length === 0, { what: 'dup-w2 to be gone' });
  for (let i = 0; i < 10; i++) {
    assert.equal(await caller.trigger({ function_id: 'dup::f', payload: {} }), 'w1',
      'after the newest registrant disconnected the remaining registrant must serve');
  }
  const list = await caller.trigger({ function_id: 'engine::functions::list', payload: {} });
  assert.equal(list.functions.filter((f) => f.function_id === 'dup::f').length, 1, 'listed once');

  await w1.shutdown();
  await waitFor(async () => (await workersNamed(caller, 'dup-w1')).length === 0, { what: 'dup-w1 to be gone' });
  const e = await rejectionOf(caller.trigger({ function_id: 'dup::f', payload: {} }));
  assert.equal(e.code, 'function_not_found', 'no registrant left');
});

engineTest('duplicate registration: the older registrant leaving does not remove the newest', async (ctx) => {
  const caller = ctx.worker('dup2-caller');
  const w1 = ctx.worker('dup2-w1');
  w1.registerFunction('dup2::f', async () => 'w1');
  await waitFor(async () => (await caller.trigger({ function_id: 'dup2::f', payload: {} })) === 'w1', { what: 'w1 to serve' });
  const w2 = ctx.worker('dup2-w2');
  w2.registerFunction('dup2::f', async () => 'w2');
  await waitFor(async () => (await caller.trigger({ function_id: 'dup2::f', payload: {} })) === 'w2', { what: 'w2 to serve' });
  await w1.shutdown();
  await waitFor(async () => (await workersNamed(caller, 'dup2-w1')).length === 0, { what: 'dup2-w1 to be gone' });
  for (let i = 0; i < 10; i++) assert.equal(await caller.trigger({ function_id: 'dup2::f', payload: {} }), 'w2');
});

engineTest('duplicate registration failover when the serving process is SIGKILLed', async (ctx) => {
  const caller = ctx.worker('dupk-caller');
  const c1 = ctx.child('dupk-1', 'dup');
  await c1.waitLine(/^READY /);
  await waitFor(async () => (await caller.trigger({ function_id: 'dup::who', payload: {} })).who === 'dupk-1', { what: 'dupk-1 to serve' });
  const c2 = ctx.child('dupk-2', 'dup');
  await c2.waitLine(/^READY /);
  await waitFor(async () => (await caller.trigger({ function_id: 'dup::who', payload: {} })).who === 'dupk-2', { what: 'dupk-2 (newest) to serve' });

  c2.kill('SIGKILL');
  // During the transition a call may be cut off (invocation_stopped) but must never see function_not_found.
  const deadline = Date.now() + 3000;
  let served = null;
  while (Date.now() < deadline) {
    try {
      const r = await caller.trigger({ function_id: 'dup::who', payload: {}, timeoutMs: 2000 });
      if (r.who === 'dupk-1') { served = r; break; }
    } catch (e) {
      assert.notEqual(e.code, 'function_not_found', 'the function must not be lost while another registrant is alive');
    }
    await sleep(20);
  }
  assert.ok(served, 'dupk-1 never took over dup::who');
  await waitFor(async () => (await workersNamed(caller, 'dupk-2')).length === 0, { what: 'dupk-2 row to be gone' });
  for (let i = 0; i < 10; i++) assert.equal((await caller.trigger({ function_id: 'dup::who', payload: {} })).who, 'dupk-1');
});

test('engine restart on the same port: SDK workers reconnect, re-register and calls succeed', { timeout: 60000 }, async () => {
  const e1 = await startEngine();
  let e2 = null;
  const workers = [];
  try {
    const a = newWorker(e1.url, 'restart-a');
    workers.push(a);
    let generation = 0;
    a.registerFunction('rs::f', async (d) => ({ n: d.n, generation }));
    const b = newWorker(e1.url, 'restart-b');
    workers.push(b);
    await waitForFunctions(b, ['rs::f']);
    assert.deepEqual(await b.trigger({ function_id: 'rs::f', payload: { n: 1 } }), { n: 1, generation: 0 });
    const oldA = await waitForWorkerRow(b, 'restart-a');
    const oldB = await waitForWorkerRow(b, 'restart-b');

    const port = e1.port;
    await e1.stop(); // asserts exit code 0
    generation = 1;
    e2 = await startEngine({ listeners: [{ port }] });
    assert.equal(e2.port, port);

    const res = await waitFor(async () => b.trigger({ function_id: 'rs::f', payload: { n: 2 }, timeoutMs: 1000 }),
      { timeoutMs: 10000, intervalMs: 100, what: 'a call through the restarted engine to succeed' });
    assert.deepEqual(res, { n: 2, generation: 1 });
    const newA = await waitForWorkerRow(b, 'restart-a');
    const newB = await waitForWorkerRow(b, 'restart-b');
    assert.match(newA.id, UUID_RE);
    assert.notEqual(newA.id, oldA.id, 'a new connection gets a new worker id');
    assert.notEqual(newB.id, oldB.id);
    assert.equal(newA.pid, process.pid);
    assert.ok(newA.functions.includes('rs::f'));
    for (let i = 0; i < 5; i++) assert.equal((await b.trigger({ function_id: 'rs::f', payload: { n: i } })).n, i);
  } catch (err) {
    throw new Error(`${err.stack}\n--- engine 1 log ---\n${e1.logTail()}\n--- engine 2 log ---\n${e2?.logTail() ?? '(not started)'}`,
      { cause: err });
  } finally {
    await Promise.all(workers.map((w) => withTimeout(w.shutdown(), 10000, 'worker shutdown').catch(() => {})));
    if (e2) {
      assert.ok(e2.alive(), 'restarted engine must still be alive');
      await e2.stop();
    }
    e1.kill();
    e1.cleanup();
    e2?.kill();
    e2?.cleanup();
  }
});

engineTest('SIGTERM while a call is pending: caller gets invocation_stopped, engine exits 0', { manageEngine: false }, async (ctx) => {
  const callee = ctx.worker('gs-callee');
  let invoked = false;
  callee.registerFunction('gs::hang', async () => { invoked = true; return new Promise(() => {}); });
  const caller = ctx.worker('gs-caller');
  await waitForFunctions(caller, ['gs::hang']);
  const pending = caller.trigger({ function_id: 'gs::hang', payload: {}, timeoutMs: 5000 });
  const settledAt = pending.then(() => Date.now(), () => Date.now());
  await waitFor(() => invoked, { what: 'gs::hang to be invoked' });
  const t0 = Date.now();
  const stopped = ctx.engine.stop(); // SIGTERM; asserts exit code 0
  const err = await rejectionOf(pending);
  assert.equal(err.code, 'invocation_stopped', `got ${err.code}: ${err.message}`);
  assert.ok((await settledAt) - t0 < 2000, 'invocation_stopped must arrive promptly');
  const { durationMs } = await stopped;
  assert.ok(durationMs < 5000, `graceful shutdown took ${durationMs} ms`);
});

engineTest('SIGINT also shuts down gracefully with exit code 0', { manageEngine: false }, async (ctx) => {
  const w = ctx.worker('sigint-w');
  w.registerFunction('sigint::f', async () => 1);
  await waitForFunctions(w, ['sigint::f']);
  await ctx.engine.stop({ signal: 'SIGINT' });
});

engineTest('idle SDK workers are not dropped by the liveness check (WS pings answered)',
  { listeners: [{ idle_timeout_ms: 1000 }], timeout: 30000 }, async (ctx) => {
    const a = ctx.worker('idle-a');
    a.registerFunction('idle::f', async (d) => d.x * 3);
    const b = ctx.worker('idle-b');
    await waitForFunctions(b, ['idle::f']);
    const rowA = await waitForWorkerRow(b, 'idle-a');
    const rowB = await waitForWorkerRow(b, 'idle-b');
    await sleep(3500); // both workers stay silent for 3.5x idle_timeout_ms
    assert.equal(await b.trigger({ function_id: 'idle::f', payload: { x: 5 } }), 15);
    const rowA2 = await waitForWorkerRow(b, 'idle-a');
    const rowB2 = await waitForWorkerRow(b, 'idle-b');
    assert.equal(rowA2.id, rowA.id, 'idle worker a must not have been disconnected (its worker id changed)');
    assert.equal(rowB2.id, rowB.id, 'idle worker b must not have been disconnected (its worker id changed)');
  });

engineTest('several listeners share one registry', { listeners: [{}, {}] }, async (ctx) => {
  assert.equal(ctx.engine.ports.length, 2);
  assert.notEqual(ctx.engine.ports[0], ctx.engine.ports[1]);
  const a = ctx.worker('ml-a', { url: ctx.engine.urlFor(0) });
  a.registerFunction('ml::f', async (d) => ({ got: d.v, caller: d._caller_worker_id }));
  const b = ctx.worker('ml-b', { url: ctx.engine.urlFor(1) });
  await waitForFunctions(b, ['ml::f']);
  const r = await b.trigger({ function_id: 'ml::f', payload: { v: 'x' } });
  assert.equal(r.got, 'x');
  assert.equal(r.caller, b.workerId);
  b.registerFunction('ml::g', async () => 'from-b');
  await waitForFunctions(a, ['ml::g']);
  assert.equal(await a.trigger({ function_id: 'ml::g', payload: {} }), 'from-b');
  assert.ok((await workersNamed(a, 'ml-b')).length === 1, 'listener 0 sees the worker of listener 1');
});

engineTest('worker processes with OTel enabled (default) shut down promptly (/otel works)', async (ctx) => {
  const child = ctx.child('otel-child', 'echo');
  await child.waitLine(/^READY /);
  const caller = ctx.worker('otel-caller');
  await waitForFunctions(caller, ['node::echo']);
  for (let i = 0; i < 5; i++) assert.equal((await caller.trigger({ function_id: 'node::echo', payload: { i } })).i, i);
  const t0 = Date.now();
  child.kill('SIGTERM'); // the fixture calls iii.shutdown(), which flushes OTel over /otel first
  const res = await withTimeout(child.exited, 15000, 'otel child to exit');
  assert.deepEqual(res, { code: 0, signal: null }, `child output:\n${child.lines.join('\n')}`);
  assert.ok(Date.now() - t0 < 8000, `shutdown with OTel took ${Date.now() - t0} ms`);
  await waitFor(async () => (await workersNamed(caller, 'otel-child')).length === 0, { what: 'otel-child to be gone' });
});
