// RBAC listeners (engine-core.md §6): a trusted worker on a plain listener serves the auth function, the
// registration hooks and the middleware; official-SDK clients on the RBAC listener get what their
// AuthResult and the listener's expose_functions allow, and nothing else.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import WebSocket from 'ws';
import {
  engineTest, III_BIN, rejectionOf, runCommand, waitFor, waitForFunctions, withTimeout,
} from './harness.mjs';

// Listener 0: plain (trusted). Listener 1: RBAC. Listener 2: middleware only. Listener 3: RBAC with an
// Origin list and per-session limits.
export const RBAC_CONFIG = `workers:
  - name: iii-worker-manager
    config: { host: 127.0.0.1, port: 0 }
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      rbac:
        auth_function_id: test::rbac::auth
        expose_functions:
          - match("public::*")
          - metadata: { visibility: public, team: match("core-*") }
        on_function_registration_function_id: test::rbac::on-fn
        on_trigger_registration_function_id: test::rbac::on-trigger
        on_trigger_type_registration_function_id: test::rbac::on-tt
  - name: iii-worker-manager
    config: { host: 127.0.0.1, port: 0, middleware_function_id: test::rbac::middleware }
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      allowed_origins: ["http://good.example"]
      limits: { connections_per_ip: 2, invocations_per_second: 5, registrations: 2 }
      rbac:
        expose_functions: [match("public::*")]
  - name: iii-observability
    config: { level: info }
`;
export const RBAC_ENGINE = { configText: RBAC_CONFIG, listeners: [{}, {}, {}, {}] };

/** AuthResults by token (the header x-test-token, or the query parameter `token`). */
const SESSIONS = {
  user: {
    allowed_functions: ['engine::functions::list'],
    forbidden_functions: ['public::blocked'],
    allowed_trigger_types: ['trusted-tt'],
    context: { user: 'user' },
  },
  admin: { allowed_functions: ['private::granted', 'engine::functions::list'], context: { user: 'admin' } },
  prefixed: { function_registration_prefix: 'test-prefix', context: { user: 'prefixed' } },
  noreg: { allow_function_registration: false, context: { user: 'noreg' } },
  ttreg: { allow_trigger_type_registration: true, context: { user: 'ttreg' } },
};

/** The trusted side: auth function, hooks, middleware, public and private functions, a trigger type. */
export async function startTrusted(ctx) {
  const t = ctx.worker('rbac-trusted');
  const calls = { auth: [], fn: [], trigger: [], tt: [], middleware: [], triggers: [] };
  t.registerFunction('test::rbac::auth', async (input) => {
    calls.auth.push(input);
    const token = input.headers['x-test-token'] ?? input.query_params.token?.[0];
    if (token === 'bad') throw new Error('bad token');
    if (token === 'not-an-object') return 'nope';
    const s = SESSIONS[token];
    if (!s) throw new Error(`unknown token ${token}`);
    return s;
  });
  t.registerFunction('test::rbac::on-fn', async (input) => {
    calls.fn.push(input);
    if (input.function_id.startsWith('deny::')) throw new Error('denied by hook');
    if (input.function_id.startsWith('rename::')) {
      return { function_id: input.function_id.replace('rename::', 'renamed::'), description: 'rewritten' };
    }
    return {};
  });
  t.registerFunction('test::rbac::on-trigger', async (input) => {
    calls.trigger.push(input);
    if (input.config?.deny) throw new Error('trigger denied');
    return { config: { ...input.config, rewritten: true } };
  });
  t.registerFunction('test::rbac::on-tt', async (input) => {
    calls.tt.push(input);
    if (input.trigger_type_id.startsWith('deny')) return null; // not an object: dropped
    if (input.trigger_type_id === 'rename-tt') return { trigger_type_id: 'renamed-tt' };
    return {};
  });
  t.registerFunction('test::rbac::middleware', async (input) => {
    calls.middleware.push(input);
    if (input.function_id === 'public::refuse-me') throw new Error('refused by middleware');
    const payload = { ...input.payload, stamped_by: 'middleware', user: input.context };
    return t.trigger({ function_id: input.function_id, payload });
  });
  t.registerFunction('public::echo', async (d) => ({ echoed: d }));
  t.registerFunction('public::blocked', async () => 'should not run');
  t.registerFunction('private::secret', async () => 'secret');
  t.registerFunction('private::granted', async () => 'granted');
  t.registerFunction('svc::tagged', async () => 'tagged', { metadata: { visibility: 'public', team: 'core-api' } });
  t.registerFunction('svc::other-team', async () => 'x', { metadata: { visibility: 'public', team: 'edge' } });
  t.registerTriggerType({ id: 'trusted-tt', description: 'trusted type' }, {
    async registerTrigger(cfg) { calls.triggers.push(cfg); },
    async unregisterTrigger() {},
  });
  t.registerTriggerType({ id: 'trusted-tt2', description: 'another type' }, {
    async registerTrigger(cfg) { calls.triggers.push(cfg); },
    async unregisterTrigger() {},
  });
  await waitForFunctions(t, ['test::rbac::auth', 'test::rbac::on-fn', 'test::rbac::on-trigger',
    'test::rbac::on-tt', 'test::rbac::middleware', 'public::echo', 'svc::tagged']);
  return { t, calls };
}

/** An official Node SDK worker on the RBAC listener authenticating with `token` in a header. */
function client(ctx, name, token, { listener = 1, query = '' } = {}) {
  return ctx.worker(name, {
    url: ctx.engine.urlFor(listener) + query,
    options: token ? { headers: { 'x-test-token': token } } : {},
  });
}

/** Resolves once every message `w` sent before has been processed (the engine handles them in order). */
async function flushed(w) {
  await w.trigger({ function_id: 'engine::log::debug', payload: { message: 'rbac test flush' } });
}

async function listed(w) {
  const r = await w.trigger({ function_id: 'engine::functions::list', payload: {} });
  return r.functions.map((f) => f.function_id).sort();
}

/** Opens a raw WebSocket; resolves {ws, frames, closed} (closed resolves {code, reason}). */
function rawConnect(url, headers = {}) {
  const ws = new WebSocket(url, { perMessageDeflate: false, headers });
  const frames = [];
  const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
  const opened = new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode })));
    ws.once('error', reject);
  });
  ws.on('message', (d) => frames.push(JSON.parse(String(d))));
  return { ws, frames, closed, opened };
}

engineTest('auth function: headers, query params and ip reach it; its context follows the session', RBAC_ENGINE, async (ctx) => {
  const { calls } = await startTrusted(ctx);
  const c = client(ctx, 'rbac-user', 'user', { query: '/?token=ignored&a=1&a=2&flag' });
  assert.deepEqual(await c.trigger({ function_id: 'public::echo', payload: { x: 1 } }),
    { echoed: { x: 1, _caller_worker_id: c.workerId } });
  const auth = calls.auth.find((a) => a.headers['x-test-token'] === 'user');
  assert.ok(auth, 'the auth function saw the header');
  assert.equal(auth.ip_address, '127.0.0.1');
  assert.deepEqual(auth.query_params, { token: ['ignored'], a: ['1', '2'], flag: [''] });
  assert.ok(auth.headers.host, 'all upgrade headers are passed, names lower-case');

  // Query-string credentials (what browsers use).
  const q = client(ctx, 'rbac-query', null, { query: '/?token=admin' });
  assert.equal(await q.trigger({ function_id: 'private::granted', payload: {} }), 'granted');
});

engineTest('a refusing or failing auth function closes the connection with AUTH_ERROR', RBAC_ENGINE, async (ctx) => {
  await startTrusted(ctx);
  for (const [token, why] of [['bad', 'bad token'], ['not-an-object', 'AuthResult'], ['unknown', 'unknown token']]) {
    const c = rawConnect(ctx.engine.urlFor(1), { 'x-test-token': token });
    await c.opened;
    const { code, reason } = await withTimeout(c.closed, 5000, `close for token ${token}`);
    assert.equal(code, 1008);
    assert.match(reason, /^AUTH_ERROR/);
    assert.equal(c.frames.length, 1, `only the error frame: ${JSON.stringify(c.frames)}`);
    assert.equal(c.frames[0].type, 'error');
    assert.equal(c.frames[0].error.code, 'AUTH_ERROR');
    assert.ok(c.frames[0].error.message.includes(why), c.frames[0].error.message);
  }
  // A good token gets workerregistered first, and messages sent before the AuthResult are kept.
  const ok = rawConnect(ctx.engine.urlFor(1), { 'x-test-token': 'user' });
  await ok.opened;
  ok.ws.send(JSON.stringify({ type: 'invokefunction', invocation_id: '00000000-0000-4000-8000-000000000001', function_id: 'public::echo', data: 5 }));
  await waitFor(() => ok.frames.length >= 2, { what: 'workerregistered and the result' });
  assert.equal(ok.frames[0].type, 'workerregistered');
  assert.deepEqual(ok.frames[1].result, { echoed: 5 });
  ok.ws.close();
});

engineTest('expose_functions by glob and metadata, forbidden_functions, allowed_functions; list is filtered', RBAC_ENGINE, async (ctx) => {
  await startTrusted(ctx);
  const c = client(ctx, 'rbac-user', 'user');
  assert.equal((await c.trigger({ function_id: 'public::echo', payload: 1 })).echoed, 1);
  assert.equal(await c.trigger({ function_id: 'svc::tagged', payload: {} }), 'tagged');
  for (const [id, hint] of [['private::secret', 'add to rbac.expose_functions'],
    ['svc::other-team', 'add to rbac.expose_functions'],
    ['public::blocked', 'remove from rbac.forbidden_functions'],
    ['private::granted', 'add to rbac.expose_functions'],
    ['no::such::function', 'add to rbac.expose_functions'],
    ['engine::workers::list', 'add to rbac.expose_functions']]) {
    const e = await rejectionOf(c.trigger({ function_id: id, payload: {} }), id);
    assert.equal(e.code, 'FORBIDDEN', `${id}: ${e.message}`);
    assert.ok(e.message.includes(`function '${id}' not allowed (${hint})`), e.message);
  }
  assert.deepEqual(await listed(c), ['public::echo', 'svc::tagged']);
  const internal = (await c.trigger({ function_id: 'engine::functions::list', payload: { include_internal: true } }))
    .functions.map((f) => f.function_id);
  for (const id of ['engine::channels::create', 'engine::workers::register', 'engine::log::info',
    'engine::functions::list', 'public::echo', 'svc::tagged']) assert.ok(internal.includes(id), id);
  for (const id of internal) {
    assert.ok(['public::echo', 'svc::tagged', 'engine::functions::list'].includes(id) ||
      /^engine::(channels::create|workers::register|log::\w+|baggage::\w+)$/.test(id), `${id} is listed`);
  }
  assert.ok(!internal.some((id) => id.startsWith('test::rbac::')));

  const admin = client(ctx, 'rbac-admin', 'admin');
  assert.equal(await admin.trigger({ function_id: 'private::granted', payload: {} }), 'granted');
  assert.deepEqual(await listed(admin), ['private::granted', 'public::blocked', 'public::echo', 'svc::tagged']);
  // A void call that is refused is still answered, with a fresh invocation id.
  const raw = rawConnect(ctx.engine.urlFor(1), { 'x-test-token': 'user' });
  await raw.opened;
  raw.ws.send(JSON.stringify({ type: 'invokefunction', function_id: 'private::secret', data: {}, action: { type: 'void' } }));
  await waitFor(() => raw.frames.length >= 2, { what: 'the FORBIDDEN answer to a void call' });
  assert.equal(raw.frames[1].type, 'invocationresult');
  assert.equal(raw.frames[1].error.code, 'FORBIDDEN');
  assert.match(raw.frames[1].invocation_id, /^[0-9a-f-]{36}$/);
  raw.ws.close();
});

engineTest('the infrastructure functions stay callable on an RBAC listener', RBAC_ENGINE, async (ctx) => {
  const { t } = await startTrusted(ctx);
  const c = client(ctx, 'rbac-infra', 'user');
  await c.trigger({ function_id: 'engine::log::info', payload: { message: 'from an rbac client' } });
  const ch = await c.trigger({ function_id: 'engine::channels::create', payload: {} });
  assert.equal(ch.writer.direction, 'write');
  // engine::workers::register (sent by the SDK on connect) went through: the row has the name.
  await waitFor(async () => {
    const r = await t.trigger({ function_id: 'engine::workers::list', payload: {} });
    return r.workers.some((w) => w.name === 'rbac-infra');
  }, { what: 'the rbac client row with its name' });
});

engineTest('function registration: hook allows, refuses, rewrites; prefix; allow_function_registration', RBAC_ENGINE, async (ctx) => {
  const { t, calls } = await startTrusted(ctx);
  const c = client(ctx, 'rbac-reg', 'user');
  c.registerFunction('client::fn', async (d) => ({ from: 'client', d }), { metadata: { m: 1 } });
  c.registerFunction('deny::fn', async () => 'x');
  c.registerFunction('rename::fn', async () => 'x');
  await flushed(c);
  const ids = (await t.trigger({ function_id: 'engine::functions::list', payload: {} })).functions;
  const byId = Object.fromEntries(ids.map((f) => [f.function_id, f]));
  assert.ok(byId['client::fn'], 'allowed by the hook');
  assert.ok(!byId['deny::fn'], 'refused by the hook');
  assert.ok(!byId['rename::fn'] && byId['renamed::fn'], 'rewritten by the hook');
  assert.equal(byId['renamed::fn'].description, 'rewritten');
  const hookCall = calls.fn.find((x) => x.function_id === 'client::fn');
  assert.deepEqual(hookCall.metadata, { m: 1 });
  assert.deepEqual(hookCall.context, { user: 'user' });
  assert.deepEqual((await t.trigger({ function_id: 'client::fn', payload: 7 })).d, 7);

  const p = client(ctx, 'rbac-prefixed', 'prefixed');
  const ref = p.registerFunction('prefixed-echo', async (d) => ({ prefixed: d }));
  await waitForFunctions(t, ['test-prefix::prefixed-echo']);
  assert.deepEqual(await t.trigger({ function_id: 'test-prefix::prefixed-echo', payload: 3 }), { prefixed: 3 });
  ref.unregister();
  await waitFor(async () => !(await t.trigger({ function_id: 'engine::functions::list', payload: {} }))
    .functions.some((f) => f.function_id === 'test-prefix::prefixed-echo'), { what: 'prefixed id to be unregistered' });

  const n = client(ctx, 'rbac-noreg', 'noreg');
  n.registerFunction('noreg::fn', async () => 'x');
  await flushed(n);
  assert.ok(!(await t.trigger({ function_id: 'engine::functions::list', payload: {} }))
    .functions.some((f) => f.function_id === 'noreg::fn'), 'allow_function_registration: false');
  assert.ok(!calls.fn.some((x) => x.function_id === 'noreg::fn'), 'the hook is not even asked');
});

engineTest('trigger and trigger-type registration: allowed types, hooks refuse and rewrite', RBAC_ENGINE, async (ctx) => {
  const { t, calls } = await startTrusted(ctx);
  const c = client(ctx, 'rbac-trig', 'user');
  c.registerFunction('client::handler', async () => 'h');
  c.registerTrigger({ type: 'trusted-tt', function_id: 'client::handler', config: { n: 1 } });
  c.registerTrigger({ type: 'trusted-tt', function_id: 'client::handler', config: { n: 2, deny: true } });
  c.registerTrigger({ type: 'trusted-tt2', function_id: 'client::handler', config: { n: 3 } });
  c.registerTriggerType({ id: 'user-tt', description: 'not granted' }, { async registerTrigger() {}, async unregisterTrigger() {} });
  await flushed(c);
  await waitFor(() => calls.triggers.length >= 1, { what: 'the trusted type owner to get the trigger' });
  assert.deepEqual(calls.triggers.map((x) => x.config), [{ n: 1, rewritten: true }]);
  const hook = calls.trigger.find((x) => x.config.n === 1);
  assert.equal(hook.trigger_type, 'trusted-tt');
  assert.equal(hook.function_id, 'client::handler');
  assert.deepEqual(hook.context, { user: 'user' });
  assert.ok(!calls.trigger.some((x) => x.config.n === 3), 'allowed_trigger_types is checked before the hook');
  const types = async () => (await t.trigger({ function_id: 'engine::trigger-types::list', payload: {} }))
    .trigger_types.map((x) => x.id);
  assert.ok(!(await types()).includes('user-tt'), 'trigger type registration needs allow_trigger_type_registration');

  const tt = client(ctx, 'rbac-tt', 'ttreg');
  const h = { async registerTrigger() {}, async unregisterTrigger() {} };
  tt.registerTriggerType({ id: 'client-tt', description: 'ok' }, h);
  tt.registerTriggerType({ id: 'deny-tt', description: 'no' }, h);
  tt.registerTriggerType({ id: 'rename-tt', description: 'renamed' }, h);
  await flushed(tt);
  const now = await types();
  assert.ok(now.includes('client-tt'));
  assert.ok(!now.includes('deny-tt'));
  assert.ok(now.includes('renamed-tt') && !now.includes('rename-tt'));
  assert.deepEqual(calls.tt.find((x) => x.trigger_type_id === 'client-tt'),
    { trigger_type_id: 'client-tt', description: 'ok', context: { user: 'ttreg' } });
});

engineTest('middleware: every call from its listener goes through it; it can change or refuse', RBAC_ENGINE, async (ctx) => {
  const { calls } = await startTrusted(ctx);
  const m = ctx.worker('mw-client', { url: ctx.engine.urlFor(2) });
  const r = await m.trigger({ function_id: 'public::echo', payload: { v: 1 } });
  assert.equal(r.echoed.v, 1);
  assert.equal(r.echoed.stamped_by, 'middleware', 'the middleware changed the payload');
  const seen = calls.middleware.find((x) => x.function_id === 'public::echo');
  assert.deepEqual(seen.payload, { v: 1 }, 'the middleware gets the payload as sent');
  assert.equal(seen.action, null);
  assert.deepEqual(seen.context, {});
  const e = await rejectionOf(m.trigger({ function_id: 'public::refuse-me', payload: {} }));
  assert.match(e.message, /refused by middleware/);
  // engine::* calls bypass it.
  const before = calls.middleware.length;
  await m.trigger({ function_id: 'engine::functions::list', payload: {} });
  assert.equal(calls.middleware.length, before);
  // Calls from other listeners never see it.
  const plain = ctx.worker('plain-client');
  assert.equal((await plain.trigger({ function_id: 'public::echo', payload: { v: 2 } })).echoed.stamped_by, undefined);
});

engineTest('allowed_origins and per-session limits (RATE_LIMITED)', RBAC_ENGINE, async (ctx) => {
  const { t } = await startTrusted(ctx);
  const url = ctx.engine.urlFor(3);
  const bad = rawConnect(url, { Origin: 'http://evil.example' });
  const e = await rejectionOf(bad.opened);
  assert.equal(e.status, 403);
  const none = rawConnect(url);
  assert.equal((await rejectionOf(none.opened)).status, 403, 'no Origin is refused when a list is set');

  const good = ctx.worker('origin-ok', { url, options: { headers: { Origin: 'http://good.example' } } });
  assert.equal((await good.trigger({ function_id: 'public::echo', payload: 1 })).echoed, 1);
  // invocations_per_second: 5 (the SDK's own engine::workers::register may have used one).
  const results = await Promise.allSettled(Array.from({ length: 20 }, () =>
    good.trigger({ function_id: 'public::echo', payload: 2 })));
  const limited = results.filter((r) => r.status === 'rejected');
  assert.ok(limited.length >= 10, `${limited.length} of 20 calls were limited`);
  for (const r of limited) assert.equal(r.reason.code, 'RATE_LIMITED');

  // connections_per_ip: 2 (origin-ok holds one).
  const second = rawConnect(url, { Origin: 'http://good.example' });
  await second.opened;
  await waitFor(() => second.frames.length === 1, { what: 'workerregistered' });
  const third = rawConnect(url, { Origin: 'http://good.example' });
  await third.opened;
  const closed = await withTimeout(third.closed, 5000, 'third connection closed');
  assert.equal(closed.code, 1008);
  assert.equal(third.frames[0].error.code, 'RATE_LIMITED');

  // registrations: 2 per session.
  const reg = (id) => second.ws.send(JSON.stringify({ type: 'registerfunction', id }));
  reg('lim::a'); reg('lim::b'); reg('lim::c');
  second.ws.send(JSON.stringify({ type: 'invokefunction', invocation_id: '00000000-0000-4000-8000-000000000002', function_id: 'engine::log::info', data: { message: 'x' } }));
  await waitFor(() => second.frames.some((f) => f.type === 'invocationresult'), { what: 'flush' });
  const fns = (await t.trigger({ function_id: 'engine::functions::list', payload: {} })).functions.map((f) => f.function_id);
  second.ws.close();
  assert.ok(fns.includes('lim::a') && fns.includes('lim::b'));
  assert.ok(!fns.includes('lim::c'), 'the third registration is over the limit');
});

test('bad rbac / limits / allowed_origins config is refused with file, line and key', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iii-sys-rbac-'));
  try {
    const cases = [
      ['rbac: { expose_functions: ["public::*"] }', 'must be match("pattern")'],
      ['rbac: { expose_functions: [{ nometa: 1 }] }', 'rbac.expose_functions items'],
      ['rbac: { auth_function: x }', "unknown key 'auth_function'"],
      ['rbac: [1]', "'rbac' must be a mapping"],
      ['limits: { per_ip: 1 }', "unknown key 'per_ip'"],
      ['allowed_origins: "*"', 'allowed_origins'],
      ['middleware_function_id: ""', 'middleware_function_id'],
    ];
    for (const [cfg, needle] of cases) {
      const file = path.join(dir, 'bad.yaml');
      fs.writeFileSync(file, `workers:\n  - name: iii-worker-manager\n    config: { port: 0, ${cfg} }\n`);
      const r = await runCommand(III_BIN, ['--config', file], { timeoutMs: 10000, cwd: dir });
      const out = r.stdout + r.stderr;
      assert.equal(r.code, 2, `${cfg}: exit code\n${out}`);
      assert.ok(out.includes(needle) && out.includes('bad.yaml:'), `${cfg}: message\n${out}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

engineTest('iii-stream: Sec-WebSocket-Protocol "Authorization, <token>" is selected and reaches auth_function; {allowed:false} refuses',
  { extraYaml: '  - name: iii-stream\n    config: { host: 127.0.0.1, port: 0, auth_function: test::stream::auth }' }, async (ctx) => {
    const w = ctx.worker('stream-auth');
    const inputs = [];
    w.registerFunction('test::stream::auth', async (input) => {
      inputs.push(input);
      return input.headers.authorization === 'good-token' ? { context: { ok: true } } : { allowed: false };
    });
    await waitForFunctions(w, ['test::stream::auth']);
    const m = await waitFor(() => ctx.engine.lines.map((l) => /iii-stream listening on [0-9.]+:(\d+)/.exec(l)).find(Boolean),
      { what: 'the iii-stream port' });
    const url = `ws://127.0.0.1:${m[1]}`;
    const open = (protocols, headers = {}) => new Promise((resolve, reject) => {
      const ws = new WebSocket(url, protocols, { perMessageDeflate: false, headers });
      ws.once('open', () => resolve(ws));
      ws.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode })));
      ws.once('error', reject);
    });
    const ok = await open(['Authorization', 'good-token']);
    assert.equal(ok.protocol, 'Authorization', 'the subprotocol is selected in the answer');
    assert.equal(inputs.at(-1).headers.authorization, 'good-token');
    assert.match(inputs.at(-1).headers['sec-websocket-protocol'], /^Authorization, *good-token$/);
    ok.close();
    assert.equal((await rejectionOf(open(['Authorization', 'bad-token']))).status, 401);
    // An Authorization header wins over the subprotocol token; the subprotocol is still selected.
    const both = await open(['Authorization', 'bad-token'], { Authorization: 'good-token' });
    assert.equal(both.protocol, 'Authorization');
    both.close();
    // Without the pair: no subprotocol, and the auth function decides as before.
    assert.equal((await rejectionOf(open([]))).status, 401);
    const plain = await open([], { Authorization: 'good-token' });
    assert.equal(plain.protocol, '');
    plain.close();
  });
