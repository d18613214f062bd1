// engine::functions::list and engine::workers::list as seen by the official Node SDK.
import assert from 'node:assert/strict';
import os from 'node:os';
import {
  engineTest, rejectionOf, waitFor, waitForFunctions, waitForWorkerRow, workersNamed, UUID_RE,
} from './harness.mjs';

engineTest('engine::functions::list shape, include_internal, and removal on disconnect', async (ctx) => {
  const a = ctx.worker('intro-a');
  const requestFormat = { type: 'object', properties: { x: { type: 'number' } }, required: ['x'] };
  const responseFormat = { type: 'string', description: 'the answer' };
  a.registerFunction('intro::described', async () => 'ok', {
    description: 'a described function',
    request_format: requestFormat,
    response_format: responseFormat,
    metadata: { team: 'core', tier: 1, tags: ['a', 'b'] },
  });
  a.registerFunction('intro::bare', async () => 'ok');
  const b = ctx.worker('intro-b');
  await waitForFunctions(b, ['intro::described', 'intro::bare']);

  const res = await b.trigger({ function_id: 'engine::functions::list', payload: {} });
  assert.ok(Array.isArray(res.functions), 'result.functions must be an array');
  const byId = new Map(res.functions.map((f) => [f.function_id, f]));
  assert.deepEqual(byId.get('intro::described'), {
    function_id: 'intro::described',
    description: 'a described function',
    request_format: requestFormat,
    response_format: responseFormat,
    metadata: { team: 'core', tier: 1, tags: ['a', 'b'] },
  });
  assert.deepEqual(byId.get('intro::bare'), {
    function_id: 'intro::bare', description: null, request_format: null, response_format: null, metadata: null,
  });
  assert.equal(res.functions.filter((f) => f.function_id.startsWith('engine::')).length, 0,
    'engine::* functions are hidden without include_internal');
  assert.equal(byId.size, res.functions.length, 'no duplicate rows');

  const all = await b.trigger({ function_id: 'engine::functions::list', payload: { include_internal: true } });
  const allIds = new Set(all.functions.map((f) => f.function_id));
  for (const id of ['engine::functions::list', 'engine::workers::list', 'engine::workers::register', 'intro::bare']) {
    assert.ok(allIds.has(id), `include_internal:true must list ${id}`);
  }
  for (const f of all.functions) {
    assert.deepEqual(Object.keys(f).sort(), ['description', 'function_id', 'metadata', 'request_format', 'response_format'],
      `row ${f.function_id} has the documented keys`);
  }

  await a.shutdown();
  await waitFor(async () => {
    const r = await b.trigger({ function_id: 'engine::functions::list', payload: {} });
    return !r.functions.some((f) => f.function_id.startsWith('intro::'));
  }, { what: 'intro::* to be removed after its worker disconnected' });
});

engineTest('engine::workers::list shape for a Node SDK worker', async (ctx) => {
  const a = ctx.worker('wl-node');
  a.registerFunction('wl::one', async () => 1);
  a.registerFunction('wl::two', async () => 2);
  const b = ctx.worker('wl-observer');
  await waitForFunctions(b, ['wl::one', 'wl::two']);
  const row = await waitForWorkerRow(b, 'wl-node');

  const res = await b.trigger({ function_id: 'engine::workers::list', payload: {} });
  assert.ok(Array.isArray(res.workers));
  assert.equal(typeof res.timestamp, 'number');
  assert.ok(Math.abs(res.timestamp - Date.now()) < 60000, `timestamp ${res.timestamp} should be epoch ms`);

  assert.match(row.id, UUID_RE);
  assert.equal(row.id, a.workerId, 'row id equals the worker_id sent in workerregistered');
  assert.equal(row.name, 'wl-node');
  assert.equal(row.runtime, 'node');
  assert.equal(row.version, '0.11.6');
  assert.equal(row.pid, process.pid);
  assert.equal(row.os, `${os.platform()} ${os.release()} (${os.arch()})`);
  assert.equal(row.status, 'connected');
  assert.equal(row.internal, false);
  assert.deepEqual([...row.functions].sort(), ['wl::one', 'wl::two']);
  assert.equal(row.function_count, 2);
  assert.equal(typeof row.connected_at_ms, 'number');
  assert.ok(row.connected_at_ms <= Date.now() + 1000 && row.connected_at_ms > Date.now() - 60000);
  assert.equal(typeof row.active_invocations, 'number');

  // Filter by worker_id.
  const one = await b.trigger({ function_id: 'engine::workers::list', payload: { worker_id: row.id } });
  assert.equal(one.workers.length, 1);
  assert.equal(one.workers[0].id, row.id);

  // Gone after shutdown.
  await a.shutdown();
  await waitFor(async () => (await workersNamed(b, 'wl-node')).length === 0, { what: 'wl-node row to disappear' });
});

engineTest('engine::workers::list lists in-process workers (spec §4.2)', async (ctx) => {
  const b = ctx.worker('wl-inproc');
  await waitForWorkerRow(b, 'wl-inproc');
  const res = await b.trigger({ function_id: 'engine::workers::list', payload: {} });
  const engineRows = res.workers.filter((w) => w.runtime === 'engine');
  const wm = engineRows.find((w) => w.id === 'iii-worker-manager');
  assert.ok(wm, `an in-process row with id iii-worker-manager and runtime "engine" is expected; got ${JSON.stringify(res.workers.map((w) => [w.id, w.name, w.runtime]))}`);
  assert.equal(wm.status, 'available');
  assert.equal(wm.version, '0.11.6');
  assert.equal(wm.isolation, 'in-process');
});

engineTest('built-in functions reject bad input with deserialization_error', async (ctx) => {
  const b = ctx.worker('builtin-bad');
  const e = await rejectionOf(b.trigger({ function_id: 'engine::functions::list', payload: { include_internal: 'yes please' } }));
  assert.equal(e.code, 'deserialization_error');
  // still usable
  const ok = await b.trigger({ function_id: 'engine::functions::list', payload: { include_internal: true } });
  assert.ok(ok.functions.length > 0);
});
