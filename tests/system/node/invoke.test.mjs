// Invocation semantics through the real engine with the official Node SDK (iii-sdk@0.11.6).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { IIIInvocationError, TriggerAction } from 'iii-sdk';
import {
  engineTest, rejectionOf, sleep, waitFor, waitForFunctions, waitForWorkerRow, UUID_RE,
} from './harness.mjs';

engineTest('sync call returns the handler result and injects _caller_worker_id', async (ctx) => {
  const callee = ctx.worker('inv-callee');
  callee.registerFunction('inv::greet', async (data) => ({ greeting: `hello ${data.name}`, seen: data }));
  const caller = ctx.worker('inv-caller');
  await waitForFunctions(caller, ['inv::greet']);

  const res = await caller.trigger({ function_id: 'inv::greet', payload: { name: 'Ada', n: 7 } });
  assert.equal(res.greeting, 'hello Ada');
  assert.equal(res.seen.name, 'Ada');
  assert.equal(res.seen.n, 7);
  assert.match(res.seen._caller_worker_id, UUID_RE);
  assert.deepEqual(Object.keys(res.seen).sort(), ['_caller_worker_id', 'n', 'name']);

  // The injected id is the caller's id as the engine lists it (and as the SDK learned it from workerregistered).
  const row = await waitForWorkerRow(caller, 'inv-caller');
  assert.equal(res.seen._caller_worker_id, row.id);
  assert.equal(res.seen._caller_worker_id, caller.workerId);
  const calleeRow = await waitForWorkerRow(caller, 'inv-callee');
  assert.notEqual(calleeRow.id, row.id);

  // A spoofed _caller_worker_id in the payload is overwritten by the engine.
  const spoof = await caller.trigger({ function_id: 'inv::greet', payload: { name: 'x', _caller_worker_id: 'spoofed' } });
  assert.equal(spoof.seen._caller_worker_id, row.id);
});

engineTest('non-object payloads pass through untouched; absent result stays absent, null stays null', async (ctx) => {
  const callee = ctx.worker('inv-shapes');
  callee.registerFunction('inv::echo', async (data) => data);
  callee.registerFunction('inv::undef', async () => undefined);
  callee.registerFunction('inv::null', async () => null);
  callee.registerFunction('inv::false', async () => false);
  callee.registerFunction('inv::zero', async () => 0);
  const caller = ctx.worker('inv-shapes-caller');
  await waitForFunctions(caller, ['inv::echo', 'inv::undef', 'inv::null', 'inv::false', 'inv::zero']);

  for (const payload of [[1, 2, { a: null }], 'a string', 42, 3.5, true, false, null, [], '']) {
    const res = await caller.trigger({ function_id: 'inv::echo', payload });
    assert.deepEqual(res, payload, `payload ${JSON.stringify(payload)} must round-trip unchanged`);
  }
  const nested = { unicode: 'ünïcødé ✓ 😀 \u0000 "quoted" \\ back', deep: { a: [1, { b: [null, true] }] }, empty: {} };
  const res = await caller.trigger({ function_id: 'inv::echo', payload: nested });
  const { _caller_worker_id: cw, ...rest } = res;
  assert.match(cw, UUID_RE);
  assert.deepEqual(rest, nested);

  const undef = await caller.trigger({ function_id: 'inv::undef', payload: {} });
  assert.equal(undef, undefined, 'a handler returning undefined must resolve the caller with undefined (result absent)');
  const nul = await caller.trigger({ function_id: 'inv::null', payload: {} });
  assert.equal(nul, null, 'a handler returning null must resolve the caller with null');
  assert.equal(await caller.trigger({ function_id: 'inv::false', payload: {} }), false);
  assert.equal(await caller.trigger({ function_id: 'inv::zero', payload: {} }), 0);
});

engineTest('void call: caller resolves immediately, handler runs exactly once (side channel)', async (ctx) => {
  const callee = ctx.worker('void-callee');
  const seen = [];
  let release;
  const gate = new Promise((r) => { release = r; });
  callee.registerFunction('void::record', async (data) => {
    seen.push(data);
    await gate; // a slow handler: the void caller must not wait for it
    return { recorded: true };
  });
  callee.registerFunction('void::seen', async () => seen);
  const caller = ctx.worker('void-caller');
  await waitForFunctions(caller, ['void::record', 'void::seen']);

  const t0 = Date.now();
  const r = await caller.trigger({ function_id: 'void::record', payload: { tag: 'v1' }, action: TriggerAction.Void() });
  assert.equal(r, undefined);
  assert.ok(Date.now() - t0 < 1000);

  const got = await waitFor(async () => {
    const s = await caller.trigger({ function_id: 'void::seen', payload: {} });
    return s.length >= 1 ? s : null;
  }, { timeoutMs: 3000, what: 'the void handler to run' });
  release();
  assert.equal(got[0].tag, 'v1');
  assert.equal(got[0]._caller_worker_id, caller.workerId, 'void calls get _caller_worker_id too');
  await sleep(300);
  const after = await caller.trigger({ function_id: 'void::seen', payload: {} });
  assert.equal(after.length, 1, 'void handler must run exactly once');

  // Void to an unknown function: nothing comes back, nothing breaks.
  await caller.trigger({ function_id: 'void::missing', payload: {}, action: TriggerAction.Void() });
  await sleep(200);
  assert.deepEqual((await caller.trigger({ function_id: 'void::seen', payload: {} })).length, 1);
});

engineTest('handler errors pass through unchanged (code, message, stacktrace)', async (ctx) => {
  const callee = ctx.worker('err-callee');
  callee.registerFunction('err::throw', async (data) => { throw new Error(`kaboom ${data.n}`); });
  callee.registerFunction('err::throw_string', async () => { throw 'just a string'; }); // eslint-disable-line no-throw-literal
  callee.registerFunction('err::type', async () => { const o = undefined; return o.missing; });
  const caller = ctx.worker('err-caller');
  await waitForFunctions(caller, ['err::throw', 'err::throw_string', 'err::type']);

  const e1 = await rejectionOf(caller.trigger({ function_id: 'err::throw', payload: { n: 42 } }));
  assert.ok(e1 instanceof IIIInvocationError, `expected IIIInvocationError, got ${e1}`);
  assert.equal(e1.code, 'invocation_failed');
  assert.equal(e1.message, 'invocation_failed: kaboom 42');
  assert.equal(e1.function_id, 'err::throw');
  assert.equal(typeof e1.stacktrace, 'string');
  assert.match(e1.stacktrace, /^Error: kaboom 42\n\s+at /, 'the JS stack of the remote handler must arrive intact');

  const e2 = await rejectionOf(caller.trigger({ function_id: 'err::throw_string', payload: {} }));
  assert.equal(e2.code, 'invocation_failed');
  assert.equal(e2.message, 'invocation_failed: just a string');
  assert.equal(e2.stacktrace, undefined, 'an absent stacktrace must stay absent');

  const e3 = await rejectionOf(caller.trigger({ function_id: 'err::type', payload: {} }));
  assert.equal(e3.code, 'invocation_failed');
  assert.match(e3.message, /^invocation_failed: Cannot read properties of undefined/);
  assert.match(e3.stacktrace, /^TypeError: /);
});

engineTest('unknown function => function_not_found; unregister => function_not_found', async (ctx) => {
  const callee = ctx.worker('nf-callee');
  const ref = callee.registerFunction('nf::temp', async () => 'here');
  const caller = ctx.worker('nf-caller');
  await waitForFunctions(caller, ['nf::temp']);

  const e = await rejectionOf(caller.trigger({ function_id: 'nf::does-not-exist', payload: { a: 1 } }));
  assert.ok(e instanceof IIIInvocationError);
  assert.equal(e.code, 'function_not_found');
  assert.ok(e.message.includes('nf::does-not-exist'), `message should name the function: ${e.message}`);
  assert.equal(e.function_id, 'nf::does-not-exist');

  assert.equal(await caller.trigger({ function_id: 'nf::temp', payload: {} }), 'here');
  ref.unregister();
  const e2 = await waitFor(async () => {
    try {
      await caller.trigger({ function_id: 'nf::temp', payload: {} });
      return null;
    } catch (err) {
      return err;
    }
  }, { timeoutMs: 3000, what: 'nf::temp to become unknown after unregister' });
  assert.equal(e2.code, 'function_not_found');
});

engineTest('enqueue action without a queue worker => enqueue_error, function not invoked', async (ctx) => {
  const callee = ctx.worker('enq-callee');
  let calls = 0;
  callee.registerFunction('enq::job', async () => { calls += 1; return 'ran'; });
  const caller = ctx.worker('enq-caller');
  await waitForFunctions(caller, ['enq::job']);
  const e = await rejectionOf(caller.trigger({
    function_id: 'enq::job', payload: { x: 1 }, action: TriggerAction.Enqueue({ queue: 'jobs' }),
  }));
  assert.equal(e.code, 'enqueue_error');
  assert.equal(typeof e.message, 'string');
  await sleep(200);
  assert.equal(calls, 0);
  // and the connection is still fine
  assert.equal(await caller.trigger({ function_id: 'enq::job', payload: {} }), 'ran');
});

engineTest('a worker can call its own function and chain calls through the engine', async (ctx) => {
  const a = ctx.worker('chain-a');
  const b = ctx.worker('chain-b');
  a.registerFunction('chain::inner', async (d) => ({ inner: d.v * 2 }));
  b.registerFunction('chain::outer', async (d) => {
    const r = await b.trigger({ function_id: 'chain::inner', payload: { v: d.v + 1 } });
    return { outer: r.inner + 1 };
  });
  await waitForFunctions(a, ['chain::inner', 'chain::outer']);
  assert.deepEqual(await a.trigger({ function_id: 'chain::outer', payload: { v: 10 } }), { outer: 23 });
  assert.deepEqual(await a.trigger({ function_id: 'chain::inner', payload: { v: 1 } }), { inner: 2 });
});

engineTest('1,000 concurrent calls all complete with the right results', { timeout: 60000 }, async (ctx) => {
  const callee = ctx.worker('conc-callee');
  callee.registerFunction('conc::square', async (d) => {
    if (d.i % 3 === 0) await sleep(d.i % 7);
    return { i: d.i, sq: d.i * d.i, tag: d.tag };
  });
  const caller = ctx.worker('conc-caller');
  await waitForFunctions(caller, ['conc::square']);
  const t0 = Date.now();
  const N = 1000;
  const results = await Promise.all(Array.from({ length: N }, (_, i) =>
    caller.trigger({ function_id: 'conc::square', payload: { i, tag: `t${i}` }, timeoutMs: 20000 })));
  const ms = Date.now() - t0;
  assert.equal(results.length, N);
  results.forEach((r, i) => assert.deepEqual(r, { i, sq: i * i, tag: `t${i}` }));
  assert.ok(ms < 20000, `1000 calls took ${ms} ms`);
});

engineTest('1 MiB and 16 MiB payloads round-trip intact', { timeout: 60000 }, async (ctx) => {
  const callee = ctx.worker('big-callee');
  callee.registerFunction('big::echo', async (d) => ({ blob: d.blob, len: d.blob.length, sha: d.sha }));
  const caller = ctx.worker('big-caller');
  await waitForFunctions(caller, ['big::echo']);
  for (const size of [1 << 20, 16 << 20]) {
    // base64 of random bytes, plus some multi-byte characters so escaping/UTF-8 handling is exercised.
    const tail = 'ü€😀"\\\n';
    const blob = crypto.randomBytes(((size - tail.length) * 3) / 4 | 0).toString('base64') + tail;
    const sha = crypto.createHash('sha256').update(blob).digest('hex');
    const t0 = Date.now();
    const res = await caller.trigger({ function_id: 'big::echo', payload: { blob, sha }, timeoutMs: 30000 });
    assert.equal(res.len, blob.length, `size ${size}: length seen by the callee`);
    assert.equal(res.sha, sha);
    assert.equal(crypto.createHash('sha256').update(res.blob).digest('hex'), sha, `size ${size}: content differs`);
    assert.ok(Date.now() - t0 < 20000, `size ${size} took ${Date.now() - t0} ms`);
  }
});
