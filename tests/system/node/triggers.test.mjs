// Triggers, custom trigger types, condition functions, the engine event trigger types and services, driven by
// the official iii-sdk@0.11.6 (plus a raw `ws` client where the SDK hides the wire: the engine's
// `unregistertrigger` to a type owner is ignored by the SDK).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import WebSocket from 'ws';
import {
  engineTest, newWorker, rejectionOf, sleep, startEngine, waitFor, waitForFunctions, waitForWorkerRow, withTimeout, UUID_RE,
} from './harness.mjs';

// ---------------------------------------------------------------------------------------------------------
// helpers

async function listTriggers(w, includeInternal = false) {
  const payload = includeInternal ? { include_internal: true } : {};
  const res = await w.trigger({ function_id: 'engine::triggers::list', payload, timeoutMs: 3000 });
  assert.ok(Array.isArray(res?.triggers), `engine::triggers::list must return {triggers: [...]}, got ${JSON.stringify(res)}`);
  return res.triggers;
}

async function triggerRow(w, id, includeInternal = false) {
  return (await listTriggers(w, includeInternal)).find((t) => t.id === id);
}

async function listTypes(w, includeInternal = false) {
  const payload = includeInternal ? { include_internal: true } : {};
  const res = await w.trigger({ function_id: 'engine::trigger-types::list', payload, timeoutMs: 3000 });
  assert.ok(Array.isArray(res?.trigger_types), `engine::trigger-types::list must return {trigger_types: [...]}, got ${JSON.stringify(res)}`);
  return res.trigger_types;
}

async function listServices(w) {
  const res = await w.trigger({ function_id: 'engine::services::list', payload: {}, timeoutMs: 3000 });
  assert.ok(Array.isArray(res?.services), `engine::services::list must return {services: [...]}, got ${JSON.stringify(res)}`);
  return res.services;
}

/** Wait until the trigger `id` is listed with `state` (returns the row). */
function waitTriggerState(w, id, state, what = `trigger ${id} to be ${state}`) {
  return waitFor(async () => {
    const row = await triggerRow(w, id);
    return row?.state === state ? row : null;
  }, { what });
}

/** The trigger rows of `type`, waiting until there are exactly `n` of them. */
function waitTriggersOfType(w, type, n) {
  return waitFor(async () => {
    const rows = (await listTriggers(w)).filter((t) => t.trigger_type === type);
    return rows.length === n ? rows : null;
  }, { what: `${n} trigger(s) of type ${type} to be listed` });
}

/** A custom trigger-type handler that records the engine's registertrigger requests. */
function recordingHandler() {
  const seen = [];
  return {
    seen,
    handler: {
      async registerTrigger(cfg) { seen.push(cfg); },
      async unregisterTrigger() { /* never called by iii-sdk 0.11.6 */ },
    },
  };
}

/** Time given to the engine to (wrongly) do something we assert it does not do. */
const SETTLE_MS = 300;

/**
 * A raw worker connection speaking the protocol with `ws`, for what the SDK does not show (engine→owner
 * `unregistertrigger`, duplicate frames, `unregistertrigger` without `trigger_type`).
 */
class RawWorker {
  static async open(url) {
    const r = new RawWorker();
    r.inbox = [];
    r.waiters = [];
    r.ws = new WebSocket(url, { perMessageDeflate: false });
    r.ws.on('message', (data) => {
      const msg = JSON.parse(data.toString());
      r.inbox.push(msg);
      r.waiters = r.waiters.filter((fn) => !fn());
    });
    r.closed = new Promise((resolve) => r.ws.once('close', resolve));
    await withTimeout(new Promise((resolve, reject) => { r.ws.once('open', resolve); r.ws.once('error', reject); }),
      5000, 'raw websocket open');
    const first = await r.take((m) => true, 'workerregistered');
    assert.equal(first.type, 'workerregistered', `first frame must be workerregistered, got ${JSON.stringify(first)}`);
    r.workerId = first.worker_id;
    return r;
  }

  send(obj) { this.ws.send(JSON.stringify(obj)); }

  /** Remove and return the first received message matching `pred` (waits up to `timeoutMs`). */
  take(pred, what, timeoutMs = 5000) {
    const find = () => {
      const i = this.inbox.findIndex(pred);
      return i < 0 ? undefined : this.inbox.splice(i, 1)[0];
    };
    const now = find();
    if (now) return Promise.resolve(now);
    return withTimeout(new Promise((resolve) => {
      this.waiters.push(() => {
        const m = find();
        if (m) { resolve(m); return true; }
        return false;
      });
    }), timeoutMs, `raw worker: ${what}; inbox: ${JSON.stringify(this.inbox)}`);
  }

  /**
   * Fence: ping and wait for the pong. The engine writes to one connection in order, so every frame it queued
   * for us before handling the ping has arrived. Returns (and removes) everything received before the pong.
   */
  async fence() {
    this.send({ type: 'ping' });
    await this.take((m) => m.type === 'pong', 'pong');
    const got = this.inbox;
    this.inbox = [];
    return got;
  }

  async call(functionId, data) {
    const invocationId = randomUUID();
    this.send({ type: 'invokefunction', invocation_id: invocationId, function_id: functionId, data });
    const r = await this.take((m) => m.type === 'invocationresult' && m.invocation_id === invocationId, `result of ${functionId}`);
    if (r.error) throw new Error(`${functionId} failed: ${JSON.stringify(r.error)}`);
    return r.result;
  }

  async close() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(1000);
    await withTimeout(this.closed, 5000, 'raw websocket close');
  }
}

// ---------------------------------------------------------------------------------------------------------
// 1. Triggers: pending until their type appears, both connection orders, unregister, disconnect

engineTest('trigger registered before its type exists: kept pending, bound and forwarded when the owner connects', async (ctx) => {
  const reg = ctx.worker('tr-registrant');
  reg.registerFunction('tr::handler', async (d) => d);
  const config = { interval: 5, nested: { list: [1, 'two', null], flag: true }, text: 'héllo ✓' };
  const metadata = { team: 'core', tier: 2 };
  reg.registerTrigger({ type: 'test.late', function_id: 'tr::handler', config, metadata });

  const [pending] = await waitTriggersOfType(reg, 'test.late', 1);
  assert.match(pending.id, UUID_RE, 'the id is the SDK-chosen UUID');
  assert.deepEqual(pending, {
    id: pending.id, trigger_type: 'test.late', function_id: 'tr::handler', config, metadata, state: 'pending',
  }, 'a trigger whose type is unknown is stored with state pending (no error key)');
  assert.ok(!(await listTypes(reg)).some((t) => t.id === 'test.late'), 'the type is not listed yet');

  const { seen, handler } = recordingHandler();
  const owner = ctx.worker('tr-owner');
  owner.registerTriggerType({ id: 'test.late', description: 'late owner' }, handler);
  await waitFor(() => seen.length >= 1, { what: 'the late owner to receive the stored trigger' });
  assert.deepEqual(seen, [{ id: pending.id, function_id: 'tr::handler', config, metadata }],
    'the owner gets exactly the stored trigger, once');

  const bound = await waitTriggerState(reg, pending.id, 'bound');
  assert.deepEqual(bound, { ...pending, state: 'bound' });
  assert.deepEqual((await listTypes(reg)).find((t) => t.id === 'test.late'), { id: 'test.late', description: 'late owner' });

  // The registering worker leaves: its trigger goes with it.
  await reg.shutdown();
  await waitFor(async () => !(await triggerRow(owner, pending.id)), { what: 'the trigger to be removed with its registrant' });
  assert.equal(seen.length, 1, 'no further registertrigger to the owner');
});

engineTest('type registered first: registerTrigger is forwarded at once; unregister by id removes it', async (ctx) => {
  const { seen, handler } = recordingHandler();
  const owner = ctx.worker('te-owner');
  const schemaCfg = { type: 'object', properties: { every_ms: { type: 'integer' } } };
  const schemaCall = { type: 'object', properties: { tick: { type: 'integer' } } };
  const ref = owner.registerTriggerType(
    { id: 'test.early', description: 'early owner', trigger_request_format: schemaCfg, call_request_format: schemaCall },
    handler,
  );
  const reg = ctx.worker('te-registrant');
  await waitFor(async () => (await listTypes(reg)).some((t) => t.id === 'test.early'), { what: 'test.early to be listed' });
  assert.deepEqual((await listTypes(reg)).find((t) => t.id === 'test.early'), {
    id: 'test.early', description: 'early owner', trigger_request_format: schemaCfg, call_request_format: schemaCall,
  });

  reg.registerFunction('te::a', async () => 'a');
  const t1 = reg.registerTrigger({ type: 'test.early', function_id: 'te::a', config: { every_ms: 10 } });
  // The owner registers a trigger of its own type through the TriggerTypeRef.
  ref.registerTrigger('te::b', { every_ms: 20 }, { origin: 'ref' });
  await waitFor(() => seen.length >= 2, { what: 'both triggers to reach the owner' });
  const byFn = new Map(seen.map((c) => [c.function_id, c]));
  assert.equal(seen.length, 2);
  assert.deepEqual(byFn.get('te::a'), { id: byFn.get('te::a').id, function_id: 'te::a', config: { every_ms: 10 }, metadata: undefined });
  assert.deepEqual(byFn.get('te::b'), { id: byFn.get('te::b').id, function_id: 'te::b', config: { every_ms: 20 }, metadata: { origin: 'ref' } });
  for (const c of seen) assert.match(c.id, UUID_RE);

  const rows = await waitTriggersOfType(reg, 'test.early', 2);
  for (const r of rows) assert.equal(r.state, 'bound', `row ${JSON.stringify(r)}`);
  assert.ok(!('metadata' in rows.find((r) => r.function_id === 'te::a')), 'metadata omitted when not given');

  t1.unregister();
  await waitFor(async () => !(await triggerRow(reg, byFn.get('te::a').id)), { what: 'unregistered trigger to disappear' });
  const left = await listTriggers(reg);
  assert.deepEqual(left.filter((r) => r.trigger_type === 'test.early').map((r) => r.id), [byFn.get('te::b').id],
    'only the unregistered id is removed');
});

engineTest('a trigger without config is stored with config {}; triggers on engine:: functions need include_internal', async (ctx) => {
  const w = ctx.worker('ti-worker');
  w.registerFunction('ti::f', async () => 1);
  w.registerTrigger({ type: 'test.noconfig', function_id: 'ti::f' });
  w.registerTrigger({ type: 'test.internal', function_id: 'engine::functions::list', config: { k: 1 } });
  const [row] = await waitTriggersOfType(w, 'test.noconfig', 1);
  assert.deepEqual(row.config, {}, 'an absent config (the SDKs omit it) is stored as an empty object');
  assert.equal(row.state, 'pending');

  const internal = await waitFor(async () => (await listTriggers(w, true)).find((t) => t.trigger_type === 'test.internal'),
    { what: 'the engine:: trigger with include_internal' });
  assert.equal(internal.function_id, 'engine::functions::list');
  assert.deepEqual(internal.config, { k: 1 });
  assert.ok(!(await listTriggers(w)).some((t) => t.trigger_type === 'test.internal'),
    'triggers whose function_id starts with engine:: are hidden by default');
  assert.ok(!(await listTriggers(w, false)).some((t) => t.function_id.startsWith('engine::')));
});

// ---------------------------------------------------------------------------------------------------------
// 2. Owner restarts: stored triggers are replayed to the new owner

engineTest('type owner process SIGKILLed: triggers wait (pending) and are replayed to the next owner, which fires them', async (ctx) => {
  const reg = ctx.worker('tk-registrant');
  const fired = [];
  reg.registerFunction('tk::handler', async (d) => { fired.push(d); return null; });
  const owner1 = ctx.child('tk-owner-1', 'trigger-owner');
  await owner1.waitLine(/^READY /);
  await waitFor(async () => (await listTypes(reg)).some((t) => t.id === 'test.child-type'), { what: 'test.child-type listed' });

  reg.registerTrigger({ type: 'test.child-type', function_id: 'tk::handler', config: { n: 1 } });
  reg.registerTrigger({ type: 'test.child-type', function_id: 'tk::handler', config: { n: 2 } });
  const rows = await waitTriggersOfType(reg, 'test.child-type', 2);
  const ids = rows.map((r) => r.id).sort();
  const regLines = (child) => child.lines.filter((l) => l.startsWith('REGISTERTRIGGER ')).map((l) => JSON.parse(l.slice(16)));
  await waitFor(() => regLines(owner1).length >= 2, { what: 'owner 1 to receive both triggers' });
  assert.deepEqual(regLines(owner1).map((c) => c.id).sort(), ids);
  await waitFor(() => fired.filter((f) => f.fired_by === 'tk-owner-1').length >= 2, { what: 'owner 1 to fire both triggers' });
  for (const r of await listTriggers(reg)) if (r.trigger_type === 'test.child-type') assert.equal(r.state, 'bound');

  owner1.kill('SIGKILL');
  await waitFor(async () => !(await listTypes(reg)).some((t) => t.id === 'test.child-type'),
    { what: 'the type to disappear with its owner' });
  const waiting = await waitTriggersOfType(reg, 'test.child-type', 2);
  for (const r of waiting) assert.equal(r.state, 'pending', `after the owner died: ${JSON.stringify(r)}`);

  const owner2 = ctx.child('tk-owner-2', 'trigger-owner');
  await owner2.waitLine(/^READY /);
  await waitFor(() => regLines(owner2).length >= 2, { what: 'owner 2 to receive the stored triggers' });
  const replayed = regLines(owner2);
  assert.equal(replayed.length, 2, `owner 2 got: ${JSON.stringify(replayed)}`);
  assert.deepEqual(replayed.map((c) => c.id).sort(), ids, 'same trigger ids are replayed');
  assert.deepEqual(replayed.map((c) => c.config.n).sort(), [1, 2], 'with their config');
  for (const c of replayed) assert.equal(c.function_id, 'tk::handler');
  await waitFor(() => fired.filter((f) => f.fired_by === 'tk-owner-2').length >= 2, { what: 'owner 2 to fire both' });
  for (const id of ids) await waitTriggerState(reg, id, 'bound');
});

test('engine restart: the SDKs replay the same trigger id, the engine keeps one row and the owner gets it again', { timeout: 60000 }, async () => {
  const e1 = await startEngine();
  let e2 = null;
  const workers = [];
  try {
    const { seen, handler } = recordingHandler();
    const owner = newWorker(e1.url, 'rr-owner');
    workers.push(owner);
    owner.registerTriggerType({ id: 'test.restart', description: 'survives restarts' }, handler);
    const reg = newWorker(e1.url, 'rr-registrant');
    workers.push(reg);
    reg.registerFunction('rr::h', async () => 'ok');
    reg.registerTrigger({ type: 'test.restart', function_id: 'rr::h', config: { c: 1 } });
    await waitFor(() => seen.length >= 1, { what: 'owner to receive the trigger' });
    const id = seen[0].id;
    await waitTriggerState(reg, id, 'bound');

    const port = e1.port;
    await e1.stop();
    e2 = await startEngine({ listeners: [{ port }] });
    // Both workers reconnect in whatever order; the trigger must end up stored once, bound, and forwarded again.
    await waitFor(() => seen.length >= 2, { timeoutMs: 10000, what: 'the replayed trigger to reach the owner again' });
    const row = await waitFor(async () => {
      const rows = (await listTriggers(reg)).filter((t) => t.trigger_type === 'test.restart');
      return rows.length === 1 && rows[0].state === 'bound' ? rows[0] : null;
    }, { timeoutMs: 10000, what: 'one bound test.restart trigger after the restart' });
    assert.equal(row.id, id, 'the SDK re-registers under the same id');
    assert.deepEqual(row.config, { c: 1 });
    await sleep(SETTLE_MS);
    assert.equal(seen.length, 2, `owner got the trigger once per connection: ${JSON.stringify(seen)}`);
    assert.deepEqual(seen[1], seen[0]);
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

// ---------------------------------------------------------------------------------------------------------
// 3. unregistertriggertype

engineTest('unregisterTriggerType: type removed, triggers stay pending, connection intact, type can come back', async (ctx) => {
  const first = recordingHandler();
  const owner = ctx.worker('tu-owner');
  const ref = owner.registerTriggerType({ id: 'test.unreg', description: 'to be removed' }, first.handler);
  const reg = ctx.worker('tu-registrant');
  reg.registerFunction('tu::h', async () => 1);
  reg.registerTrigger({ type: 'test.unreg', function_id: 'tu::h', config: { a: 1 } });
  await waitFor(() => first.seen.length >= 1, { what: 'the trigger to reach the owner' });
  const id = first.seen[0].id;
  await waitTriggerState(reg, id, 'bound');
  const ownerRow = await waitForWorkerRow(reg, 'tu-owner');

  // A worker that does not own the type cannot remove it.
  reg.unregisterTriggerType({ id: 'test.unreg', description: 'not mine' });
  await waitForFunctions(reg, ['tu::h']); // round trip on reg's connection: the engine has handled the message
  assert.ok((await listTypes(reg)).some((t) => t.id === 'test.unreg'), 'a non-owner unregistertriggertype is ignored');
  assert.equal((await triggerRow(reg, id)).state, 'bound');

  const mark = ctx.engine.lines.length;
  ref.unregister(); // sends unregistertriggertype {id, description}
  await waitFor(async () => !(await listTypes(reg)).some((t) => t.id === 'test.unreg'), { what: 'test.unreg to disappear' });
  const row = await waitTriggerState(reg, id, 'pending', 'the trigger to stay stored as pending');
  assert.deepEqual(row.config, { a: 1 });

  // The owner's connection is intact: same worker row/id, and it can still call the engine.
  assert.equal((await owner.trigger({ function_id: 'engine::functions::list', payload: {} })).functions.some((f) => f.function_id === 'tu::h'), true);
  const rowAfter = await waitForWorkerRow(reg, 'tu-owner');
  assert.equal(rowAfter.id, ownerRow.id, 'the owner did not reconnect');
  assert.equal(owner.workerId, ownerRow.id);
  const bad = ctx.engine.linesSince(mark).filter((l) => /invalid|decode|parse/i.test(l));
  assert.deepEqual(bad, [], 'unregistertriggertype must be understood, not logged as invalid');

  // The same connection registers the type again: the stored trigger is bound and forwarded again.
  const second = recordingHandler();
  owner.registerTriggerType({ id: 'test.unreg', description: 'back again' }, second.handler);
  await waitFor(() => second.seen.length >= 1, { what: 'the stored trigger to be replayed' });
  assert.deepEqual(second.seen, [{ id, function_id: 'tu::h', config: { a: 1 }, metadata: undefined }]);
  await waitTriggerState(reg, id, 'bound');
  assert.deepEqual((await listTypes(reg)).find((t) => t.id === 'test.unreg'), { id: 'test.unreg', description: 'back again' });

  // And the direct ISdk.unregisterTriggerType form works the same way.
  owner.unregisterTriggerType({ id: 'test.unreg', description: 'back again' });
  await waitFor(async () => !(await listTypes(reg)).some((t) => t.id === 'test.unreg'), { what: 'test.unreg to disappear again' });
  await waitTriggerState(reg, id, 'pending');
  assert.equal(await owner.trigger({ function_id: 'tu::h', payload: {} }), 1, 'owner connection still works');
});

// ---------------------------------------------------------------------------------------------------------
// 4. Built-in trigger types are reserved

engineTest('built-in trigger type ids cannot be taken over by a worker', async (ctx) => {
  const w = ctx.worker('tb-hijacker');
  const { seen, handler } = recordingHandler();
  const reserved = ['http', 'cron', 'state', 'stream', 'subscribe', 'engine::functions-available', 'engine::workers-available'];
  const mark = ctx.engine.lines.length;
  for (const id of reserved) w.registerTriggerType({ id, description: `hijacked ${id}` }, handler);
  const events = [];
  w.registerFunction('tb::http', async () => 'no');
  w.registerFunction('tb::fa', async (d) => { events.push(d); return null; });
  w.registerTrigger({ type: 'http', function_id: 'tb::http', config: { api_path: 'hijack', http_method: 'GET' } });
  w.registerTrigger({ type: 'engine::functions-available', function_id: 'tb::fa' });
  const httpRow = (await waitTriggersOfType(w, 'http', 1))[0];
  // Same-connection round trip: a registertrigger forwarded to w would have been handled before this result.
  const faRow = await waitTriggerState(w, (await waitTriggersOfType(w, 'engine::functions-available', 1))[0].id, 'bound');
  assert.equal(httpRow.state, 'pending', 'an http trigger waits for the iii-http worker');
  assert.equal(faRow.function_id, 'tb::fa');
  assert.deepEqual(seen, [], 'the would-be owner never receives registertrigger for a built-in type');

  // The engine's log reaches the test through its stdout pipe, and the lines can trail the trigger
  // listing's WebSocket answer when the machine is busy: wait for them (the asserts below say which is missing).
  const refused = () => ctx.engine.linesSince(mark).filter((l) => l.includes('refused'));
  const names = (lines, id) => lines.some((l) => l.includes(`'${id}'`) || l.includes(` ${id} `) || l.includes(`"${id}"`));
  await waitFor(() => reserved.every((id) => names(refused(), id)), { what: "a 'refused' log line for each built-in type" })
    .catch(() => {});
  const refusedLines = refused();
  for (const id of reserved) {
    assert.ok(names(refusedLines, id), `a 'refused' log line names ${id}; got:\n${refusedLines.join('\n')}`);
  }

  const all = await listTypes(w, true);
  const ids = all.map((t) => t.id);
  assert.equal(new Set(ids).size, ids.length, 'no duplicate type rows');
  for (const id of ['http', 'cron', 'state', 'stream', 'subscribe']) {
    assert.ok(!all.some((t) => t.id === id && t.description === `hijacked ${id}`), `${id} is not worker-owned`);
  }
  for (const id of ['engine::functions-available', 'engine::workers-available']) {
    const row = all.find((t) => t.id === id);
    assert.ok(row, `include_internal lists ${id}`);
    assert.notEqual(row.description, `hijacked ${id}`, `${id} keeps the built-in description`);
  }
  const visible = await listTypes(w);
  assert.ok(!visible.some((t) => t.id.startsWith('engine::')), 'engine:: types hidden without include_internal');
  assert.ok(all.length >= visible.length);

  // The engine's own functions-available type still fires to the trigger bound above.
  const other = ctx.worker('tb-other');
  other.registerFunction('tb::new', async () => 1);
  const ev = await waitFor(() => events.find((e) => e.functions.some((f) => f.function_id === 'tb::new')),
    { what: 'the built-in engine::functions-available to fire' });
  assert.equal(ev.event, 'functions_changed');
  assert.deepEqual(seen, []);
});

// ---------------------------------------------------------------------------------------------------------
// 5. Condition functions (exercised through engine::workers-available)

engineTest('condition functions: false skips, true/null/absent/"false"/0 run, a throwing condition skips', async (ctx) => {
  const obs = ctx.worker('tc-observer');
  const variants = {
    true: async () => true,
    false: async () => false,
    null: async () => null,
    absent: async () => undefined,
    false_string: async () => 'false',
    zero: async () => 0,
    object: async () => ({ run: false }),
    throws: async () => { throw new Error('condition exploded'); },
    connect_only: async (d) => d.event === 'worker_connected',
  };
  const conditionCalls = {};
  const handlerCalls = {};
  for (const [name, fn] of Object.entries(variants)) {
    conditionCalls[name] = [];
    handlerCalls[name] = [];
    obs.registerFunction(`tc::cond_${name}`, async (d) => { conditionCalls[name].push(d); return fn(d); });
    obs.registerFunction(`tc::h_${name}`, async (d) => { handlerCalls[name].push(d); return null; });
  }
  // The trigger type is built in; these triggers bind at once.
  for (const name of Object.keys(variants)) {
    obs.registerTrigger({
      type: 'engine::workers-available',
      function_id: `tc::h_${name}`,
      config: { condition_function_id: `tc::cond_${name}` },
    });
  }
  await waitFor(async () => {
    const rows = (await listTriggers(obs)).filter((t) => t.trigger_type === 'engine::workers-available');
    return rows.length === Object.keys(variants).length && rows.every((r) => r.state === 'bound');
  }, { what: 'all condition triggers bound' });

  const mark = ctx.engine.lines.length;
  const subject = ctx.worker('tc-subject');
  subject.registerFunction('tc::subject', async () => 1);
  await waitForFunctions(obs, ['tc::subject']);
  const sid = subject.workerId;
  assert.match(sid, UUID_RE);
  const about = (calls, event) => calls.filter((d) => d.worker_id === sid && d.event === event);

  // Every condition sees the connect event with exactly the trigger payload.
  await waitFor(() => Object.values(conditionCalls).every((c) => about(c, 'worker_connected').length === 1),
    { what: 'every condition to be called with the connect event' });
  for (const [name, calls] of Object.entries(conditionCalls)) {
    assert.deepEqual(about(calls, 'worker_connected')[0], { event: 'worker_connected', worker_id: sid },
      `condition ${name} gets the same payload as the handler`);
  }
  const runs = ['true', 'null', 'absent', 'false_string', 'zero', 'object', 'connect_only'];
  await waitFor(() => runs.every((n) => about(handlerCalls[n], 'worker_connected').length === 1),
    { what: `handlers ${runs.join(', ')} to run for the connect event` });
  for (const n of runs) {
    assert.deepEqual(about(handlerCalls[n], 'worker_connected')[0], { event: 'worker_connected', worker_id: sid },
      `handler ${n} receives the event payload unchanged`);
  }

  // Disconnect: connect_only's condition sees it and says false.
  await subject.shutdown();
  await waitFor(() => about(conditionCalls.connect_only, 'worker_disconnected').length === 1
      && about(handlerCalls.true, 'worker_disconnected').length === 1,
  { what: 'the disconnect event to reach the conditions' });
  await sleep(SETTLE_MS);
  assert.deepEqual(handlerCalls.false, [], 'a condition returning false skips the handler');
  assert.deepEqual(handlerCalls.throws, [], 'a condition that throws skips the handler');
  assert.deepEqual(handlerCalls.connect_only.filter((d) => d.event !== 'worker_connected'), [],
    'connect_only handler sees only connect events');
  assert.equal(about(handlerCalls.connect_only, 'worker_connected').length, 1);
  assert.ok(about(conditionCalls.throws, 'worker_connected').length === 1, 'the throwing condition was called');
  // The log line arrives through the engine's stdout pipe, on its own schedule: wait for it.
  const whyLines = () => ctx.engine.linesSince(mark).filter((l) => l.includes('tc::cond_throws'));
  await waitFor(() => whyLines().some((l) => l.includes('condition exploded')), { what: 'the log line for the throwing condition' })
    .catch(() => {});
  const why = whyLines();
  assert.ok(why.some((l) => l.includes('condition exploded')),
    `the engine logs why the throwing condition skipped the handler; lines naming it:\n${why.join('\n')}`);
});

engineTest('a condition naming a missing function skips the handler', async (ctx) => {
  const obs = ctx.worker('tm-observer');
  const calls = [];
  obs.registerFunction('tm::h', async (d) => { calls.push(d); return null; });
  obs.registerFunction('tm::sentinel', async (d) => { calls.push({ sentinel: d }); return null; });
  obs.registerTrigger({ type: 'engine::workers-available', function_id: 'tm::h', config: { condition_function_id: 'tm::nope' } });
  obs.registerTrigger({ type: 'engine::workers-available', function_id: 'tm::sentinel' });
  await waitFor(async () => (await listTriggers(obs)).filter((t) => t.state === 'bound').length === 2, { what: 'bound' });
  const subject = ctx.worker('tm-subject');
  subject.registerFunction('tm::s', async () => 1);
  await waitForFunctions(obs, ['tm::s']);
  const sid = subject.workerId;
  await waitFor(() => calls.some((c) => c.sentinel?.worker_id === sid), { what: 'the sentinel to see the subject' });
  await sleep(SETTLE_MS);
  assert.deepEqual(calls.filter((c) => !c.sentinel), [], 'handler skipped: its condition function does not exist');
});

// ---------------------------------------------------------------------------------------------------------
// 6. Event trigger types

engineTest('engine::workers-available: connect, metadata update and disconnect events', async (ctx) => {
  const obs = ctx.worker('tw-observer');
  const events = [];
  obs.registerFunction('tw::h', async (d) => { events.push(d); return null; });
  obs.registerTrigger({ type: 'engine::workers-available', function_id: 'tw::h' });
  await waitFor(async () => (await listTriggers(obs)).some((t) => t.function_id === 'tw::h' && t.state === 'bound'), { what: 'bound' });

  const subject = ctx.worker('tw-subject');
  subject.registerFunction('tw::s', async () => 1);
  await waitForWorkerRow(obs, 'tw-subject'); // the SDK's engine::workers::register has been handled
  const sid = subject.workerId;
  await waitFor(() => events.some((e) => e.worker_id === sid && e.event === 'worker_metadata_updated'),
    { what: 'worker_metadata_updated for the subject' });
  await subject.shutdown();
  await waitFor(() => events.some((e) => e.worker_id === sid && e.event === 'worker_disconnected'),
    { what: 'worker_disconnected for the subject' });
  const mine = events.filter((e) => e.worker_id === sid);
  assert.deepEqual(mine, [
    { event: 'worker_connected', worker_id: sid },
    { event: 'worker_metadata_updated', worker_id: sid },
    { event: 'worker_disconnected', worker_id: sid },
  ], 'one event each, in order, with exactly {event, worker_id}');
});

engineTest('engine::functions-available: fired promptly and once per change of the function set', async (ctx) => {
  const obs = ctx.worker('tf-observer');
  const events = [];
  obs.registerFunction('tf::h', async (d) => { events.push({ at: Date.now(), d }); return null; });
  obs.registerTrigger({ type: 'engine::functions-available', function_id: 'tf::h' });
  await waitFor(async () => (await listTriggers(obs)).some((t) => t.function_id === 'tf::h' && t.state === 'bound'), { what: 'bound' });
  await sleep(SETTLE_MS);
  events.length = 0;

  const ids = (e) => new Set(e.d.functions.map((f) => f.function_id));
  async function expectOneEvent(what, change, check) {
    const before = events.length;
    const t0 = Date.now();
    await change();
    await waitFor(() => events.length > before, { timeoutMs: 3000, what: `an event after ${what}` });
    const dt = events[before].at - t0;
    assert.ok(dt < 1500, `event after ${what} took ${dt} ms (must be prompt, not a 5 s poll)`);
    await sleep(SETTLE_MS);
    assert.equal(events.length, before + 1, `exactly one event after ${what}; got ${events.length - before}`);
    const e = events[before].d;
    assert.deepEqual(Object.keys(e).sort(), ['event', 'functions']);
    assert.equal(e.event, 'functions_changed');
    check(ids(events[before]), e);
  }

  // 1. an SDK worker registers a function
  const other = ctx.worker('tf-other');
  let ref;
  await expectOneEvent('registerFunction', async () => {
    ref = other.registerFunction('tf::new', async () => 1, { description: 'new one', metadata: { v: 1 } });
  }, (set, e) => {
    assert.ok(set.has('tf::new'));
    assert.ok(set.has('tf::h'));
    assert.ok(set.has('engine::functions::list'), 'engine:: functions are included');
    for (const f of e.functions) {
      assert.deepEqual(Object.keys(f).sort(), ['description', 'function_id', 'metadata', 'request_format', 'response_format'],
        `row ${JSON.stringify(f)}`);
    }
    assert.deepEqual(e.functions.find((f) => f.function_id === 'tf::new'), {
      function_id: 'tf::new', description: 'new one', request_format: null, response_format: null, metadata: { v: 1 },
    });
  });

  // 2. raw worker: two functions, then a metadata-only re-registration (no event)
  const raw = await RawWorker.open(ctx.url);
  ctx.defer(() => raw.close());
  await expectOneEvent('a raw registerfunction', async () => {
    raw.send({ type: 'registerfunction', id: 'tf::raw1', metadata: { v: 1 } });
  }, (set) => assert.ok(set.has('tf::raw1')));
  await expectOneEvent('a second raw registerfunction', async () => {
    raw.send({ type: 'registerfunction', id: 'tf::raw2' });
  }, (set) => assert.ok(set.has('tf::raw1') && set.has('tf::raw2')));
  const before = events.length;
  raw.send({ type: 'registerfunction', id: 'tf::raw1', metadata: { v: 2 }, description: 'updated' });
  await raw.fence();
  await waitFor(async () => (await obs.trigger({ function_id: 'engine::functions::list', payload: {} }))
    .functions.find((f) => f.function_id === 'tf::raw1')?.metadata?.v === 2, { what: 'the metadata update to apply' });
  await sleep(SETTLE_MS);
  assert.equal(events.length, before, 'a metadata-only re-registration does not fire functions-available');

  // A second registrant of an existing id, and that registrant leaving again, do not change the set of ids.
  const dup = await RawWorker.open(ctx.url);
  ctx.defer(() => dup.close());
  dup.send({ type: 'registerfunction', id: 'tf::raw1' });
  await dup.fence();
  await dup.close();
  await waitFor(async () => (await obs.trigger({ function_id: 'engine::workers::list', payload: { worker_id: dup.workerId } }))
    .workers.length === 0, { what: 'the duplicate registrant to be gone' });
  await sleep(SETTLE_MS);
  assert.equal(events.length, before, 'no event when the set of function ids did not change (duplicate registrant came and went)');

  // 3. unregister
  await expectOneEvent('unregisterFunction', async () => { ref.unregister(); },
    (set) => { assert.ok(!set.has('tf::new')); assert.ok(set.has('tf::raw1')); });

  // 4. a worker with two functions disconnects: one change, one event
  await expectOneEvent('a worker disconnect', async () => { await raw.close(); },
    (set) => { assert.ok(!set.has('tf::raw1')); assert.ok(!set.has('tf::raw2')); });
});

// ---------------------------------------------------------------------------------------------------------
// 7. The engine's side of the custom-type protocol, seen by a raw owner

engineTest('raw owner: registertrigger/unregistertrigger forwarding, idempotent re-registration, changed config, disconnect', async (ctx) => {
  const owner = await RawWorker.open(ctx.url);
  ctx.defer(() => owner.close());
  owner.send({ type: 'registertriggertype', id: 'test.raw', description: 'raw owner' });
  const regA = await RawWorker.open(ctx.url);
  ctx.defer(() => regA.close());
  await waitFor(async () => (await regA.call('engine::trigger-types::list', {})).trigger_types.some((t) => t.id === 'test.raw'),
    { what: 'test.raw listed' });

  const id1 = randomUUID();
  const reg1 = { type: 'registertrigger', id: id1, trigger_type: 'test.raw', function_id: 'raw::h', config: { a: 1 }, metadata: { m: true } };
  regA.send(reg1);
  regA.send(reg1); // identical re-registration (what an SDK replay looks like)
  await regA.call('engine::triggers::list', {}); // regA's frames are handled
  let got = await owner.fence();
  assert.deepEqual(got, [{ type: 'registertrigger', id: id1, trigger_type: 'test.raw', function_id: 'raw::h', config: { a: 1 }, metadata: { m: true } }],
    'the owner is asked once, with exactly the trigger fields');
  owner.send({ type: 'triggerregistrationresult', id: id1, trigger_type: 'test.raw', function_id: 'raw::h' });
  let rows = (await regA.call('engine::triggers::list', {})).triggers.filter((t) => t.trigger_type === 'test.raw');
  assert.deepEqual(rows, [{ id: id1, trigger_type: 'test.raw', function_id: 'raw::h', config: { a: 1 }, metadata: { m: true }, state: 'bound' }]);

  // Same id, new config: the owner learns about the replacement; one row with the new config.
  regA.send({ ...reg1, config: { a: 2 } });
  await regA.call('engine::triggers::list', {});
  got = await owner.fence();
  assert.deepEqual(got.at(-1), { type: 'registertrigger', id: id1, trigger_type: 'test.raw', function_id: 'raw::h', config: { a: 2 }, metadata: { m: true } },
    `the new config is forwarded last; got ${JSON.stringify(got)}`);
  assert.ok(got.length === 1 || (got.length === 2 && got[0].type === 'unregistertrigger' && got[0].id === id1),
    `at most an unregistertrigger of the old binding before it; got ${JSON.stringify(got)}`);
  rows = (await regA.call('engine::triggers::list', {})).triggers.filter((t) => t.trigger_type === 'test.raw');
  assert.equal(rows.length, 1);
  assert.deepEqual(rows[0].config, { a: 2 });

  // Unregister by id only (trigger_type is optional on the wire).
  regA.send({ type: 'unregistertrigger', id: id1 });
  await regA.call('engine::triggers::list', {});
  got = await owner.fence();
  assert.deepEqual(got, [{ type: 'unregistertrigger', id: id1, trigger_type: 'test.raw' }]);
  rows = (await regA.call('engine::triggers::list', {})).triggers.filter((t) => t.trigger_type === 'test.raw');
  assert.deepEqual(rows, []);
  regA.send({ type: 'unregistertrigger', id: id1, trigger_type: 'test.raw' }); // unknown id now: ignored
  await regA.call('engine::triggers::list', {});
  assert.deepEqual(await owner.fence(), [], 'unregistering an unknown id sends nothing');

  // The registrant disconnects: its trigger is removed and the owner told.
  const id2 = randomUUID();
  regA.send({ type: 'registertrigger', id: id2, trigger_type: 'test.raw', function_id: 'raw::h2' });
  await regA.call('engine::triggers::list', {});
  got = await owner.fence();
  assert.equal(got.length, 1);
  assert.equal(got[0].type, 'registertrigger');
  assert.equal(got[0].id, id2);
  assert.deepEqual(got[0].config, {}, `an absent config is forwarded as {}: ${JSON.stringify(got[0])}`);
  await regA.close();
  const obs = await RawWorker.open(ctx.url);
  ctx.defer(() => obs.close());
  await waitFor(async () => !(await obs.call('engine::triggers::list', {})).triggers.some((t) => t.id === id2),
    { what: 'the disconnected registrant\'s trigger to be removed' });
  got = await owner.fence();
  assert.deepEqual(got, [{ type: 'unregistertrigger', id: id2, trigger_type: 'test.raw' }]);

  // unregistertriggertype as the Node SDK sends it (id + description); the raw owner's socket stays usable.
  owner.send({ type: 'unregistertriggertype', id: 'test.raw', description: 'raw owner' });
  await owner.fence();
  assert.ok(!(await owner.call('engine::trigger-types::list', {})).trigger_types.some((t) => t.id === 'test.raw'));
});

// ---------------------------------------------------------------------------------------------------------
// 8. Services

engineTest('registerService: listed with defaults, replaced by id, removed when the worker disconnects', async (ctx) => {
  const w = ctx.worker('sv-worker');
  w.registerService({ id: 'svc.root' }); // before the socket opens: sent by the on-open replay
  const obs = ctx.worker('sv-observer');
  await waitFor(async () => (await listServices(obs)).some((s) => s.id === 'svc.root'), { what: 'svc.root listed' });
  await waitFor(() => w.workerId, { what: 'sv-worker to get its worker id' });
  assert.match(w.workerId, UUID_RE);
  w.registerService({ id: 'svc.child', name: 'Child', description: 'a child service', parent_service_id: 'svc.root' });
  await waitFor(async () => (await listServices(obs)).some((s) => s.id === 'svc.child'), { what: 'svc.child listed' });

  let rows = (await listServices(obs)).filter((s) => s.id.startsWith('svc.'));
  const byId = new Map(rows.map((s) => [s.id, s]));
  assert.equal(rows.length, 2);
  assert.deepEqual(byId.get('svc.root'), { id: 'svc.root', name: 'svc.root', description: null, parent_service_id: null, worker_id: w.workerId },
    'name defaults to the id');
  assert.deepEqual(byId.get('svc.child'), {
    id: 'svc.child', name: 'Child', description: 'a child service', parent_service_id: 'svc.root', worker_id: w.workerId,
  });

  w.registerService({ id: 'svc.root', name: 'Root v2' });
  await waitFor(async () => (await listServices(obs)).find((s) => s.id === 'svc.root')?.name === 'Root v2', { what: 'svc.root replaced' });
  rows = (await listServices(obs)).filter((s) => s.id === 'svc.root');
  assert.equal(rows.length, 1, 're-registration replaces, no duplicate row');

  await w.shutdown();
  await waitFor(async () => !(await listServices(obs)).some((s) => s.id.startsWith('svc.')), { what: 'services removed with their worker' });
});

engineTest('raw: the same trigger id re-registered from a new connection survives the old connection closing', async (ctx) => {
  // What an SDK reconnect looks like when the engine has not yet noticed that the old socket is gone.
  const owner = await RawWorker.open(ctx.url);
  ctx.defer(() => owner.close());
  owner.send({ type: 'registertriggertype', id: 'test.adopt', description: 'adopt' });
  await owner.fence();
  const oldConn = await RawWorker.open(ctx.url);
  ctx.defer(() => oldConn.close());
  const newConn = await RawWorker.open(ctx.url);
  ctx.defer(() => newConn.close());
  const id = randomUUID();
  const msg = { type: 'registertrigger', id, trigger_type: 'test.adopt', function_id: 'adopt::h', config: { k: 'v' } };
  oldConn.send(msg);
  await oldConn.call('engine::triggers::list', {});
  newConn.send(msg);
  await newConn.call('engine::triggers::list', {});
  const got = await owner.fence();
  assert.equal(got.filter((m) => m.type === 'registertrigger' && m.id === id).length >= 1, true, JSON.stringify(got));
  assert.deepEqual(got.filter((m) => m.type === 'unregistertrigger'), [], 'nothing is unregistered by the replay');

  await oldConn.close();
  // A round trip on a live connection after the close has been processed: newConn sees the trigger still there.
  await waitFor(async () => (await newConn.call('engine::workers::list', { worker_id: oldConn.workerId })).workers.length === 0,
    { what: 'the old connection to be gone' });
  const rows = (await newConn.call('engine::triggers::list', {})).triggers.filter((t) => t.id === id);
  assert.deepEqual(rows, [{ id, trigger_type: 'test.adopt', function_id: 'adopt::h', config: { k: 'v' }, state: 'bound' }],
    'the trigger now belongs to the new connection and stays');
  assert.deepEqual((await owner.fence()).filter((m) => m.type === 'unregistertrigger'), [], 'the owner is not told to drop it');

  await newConn.close();
  await waitFor(async () => !(await owner.call('engine::triggers::list', {})).triggers.some((t) => t.id === id),
    { what: 'the trigger to go with its new registrant' });
  assert.deepEqual(await owner.fence(), [{ type: 'unregistertrigger', id, trigger_type: 'test.adopt' }]);
});

engineTest('the trigger/service listing functions reject bad input with deserialization_error', async (ctx) => {
  const w = ctx.worker('bad-input');
  for (const [fn, payload] of [
    ['engine::triggers::list', { include_internal: 'yes' }],
    ['engine::triggers::list', [1, 2]],
    ['engine::trigger-types::list', { include_internal: 1 }],
    ['engine::trigger-types::list', 'text'],
    ['engine::services::list', 42],
  ]) {
    const e = await rejectionOf(w.trigger({ function_id: fn, payload }), `${fn} ${JSON.stringify(payload)}`);
    assert.equal(e.code, 'deserialization_error', `${fn} ${JSON.stringify(payload)}: ${e.message}`);
  }
  // null / {} / an injected _caller_worker_id are fine
  assert.ok(Array.isArray((await w.trigger({ function_id: 'engine::triggers::list', payload: null })).triggers));
  assert.ok(Array.isArray((await w.trigger({ function_id: 'engine::trigger-types::list', payload: { include_internal: null } })).trigger_types));
  assert.ok(Array.isArray((await w.trigger({ function_id: 'engine::services::list', payload: { extra: 1 } })).services));
});
