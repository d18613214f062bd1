// iii-http through the real engine with the official Node SDK (iii-sdk@0.11.6): routes bound to
// functions by `http` triggers, the request object, response rules, middleware, CORS, streamed
// bodies through channels (uploads, downloads, SSE), and route lifecycle.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { http } from 'iii-sdk';
import { engineTest, rejectionOf, sleep, waitFor, waitForFunctions } from './harness.mjs';

const httpYaml = (config = '{ host: 127.0.0.1, port: 0 }') =>
  `  - name: iii-http\n    config: ${config}\n`;

/** Base URL of the engine's iii-http listener (its "listening on" line follows the worker manager's). */
async function httpBase(ctx) {
  await waitFor(() => ctx.engine.ports.length >= 2, { what: 'iii-http listening' });
  return `http://127.0.0.1:${ctx.engine.ports[1]}`;
}

/** Registers fn + an http trigger and waits until the route answers something other than 404. */
async function route(iii, { id, path, method = 'GET', handler, config = {} }) {
  iii.registerFunction(id, handler);
  iii.registerTrigger({ type: 'http', function_id: id, config: { api_path: path, http_method: method, ...config } });
}

async function waitForRoute(base, path, method = 'GET', notStatus = 404) {
  return waitFor(async () => {
    const r = await fetch(base + path, { method });
    await r.arrayBuffer();
    return r.status !== notStatus ? r : null;
  }, { what: `${method} ${path} routed` });
}

engineTest('params, query, headers and JSON body reach the handler; status, headers and body come back', { extraYaml: httpYaml() }, async (ctx) => {
  const base = await httpBase(ctx);
  const w = ctx.worker('http-basic');
  let seen;
  await route(w, {
    id: 'http::users::update', path: '/users/:id', method: 'POST',
    handler: async (req) => {
      seen = req;
      return { status_code: 201, headers: { 'X-Custom': 'yes' }, body: { id: req.path_params.id, got: req.body } };
    },
  });
  await waitForRoute(base, '/users/1', 'POST', 404);
  const res = await fetch(`${base}/users/42?a=1&b=two+words&a=3`, {
    method: 'POST', headers: { 'content-type': 'application/json', 'X-Trace': 'T1' }, body: JSON.stringify({ n: 5 }),
  });
  assert.equal(res.status, 201);
  assert.equal(res.headers.get('x-custom'), 'yes');
  assert.match(res.headers.get('content-type'), /application\/json/);
  assert.ok(res.headers.get('x-request-id'), 'every response carries a request id');
  assert.deepEqual(await res.json(), { id: '42', got: { n: 5 } });
  assert.equal(seen.method, 'POST');
  assert.equal(seen.path, '/users/:id', 'path is the registered template');
  assert.deepEqual(seen.path_params, { id: '42' });
  assert.deepEqual(seen.query_params, { a: '3', b: 'two words' });
  assert.equal(seen.headers['x-trace'], 'T1');
  assert.deepEqual(seen.trigger, { type: 'http', path: '/users/:id', method: 'POST' });

  // Invalid JSON: body null (the original's rule), the call still happens.
  const bad = await fetch(`${base}/users/7`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{nope' });
  assert.equal(bad.status, 201);
  assert.deepEqual(await bad.json(), { id: '7', got: null });
});

engineTest('404 and 405 say what went wrong; GET answers HEAD', { extraYaml: httpYaml() }, async (ctx) => {
  const base = await httpBase(ctx);
  const w = ctx.worker('http-codes');
  await route(w, { id: 'http::codes::get', path: '/thing', handler: async () => ({ body: { ok: true } }) });
  await waitForRoute(base, '/thing');
  const nf = await fetch(`${base}/nothing/here`);
  assert.equal(nf.status, 404);
  assert.match((await nf.json()).error, /no route for \/nothing\/here/);
  const na = await fetch(`${base}/thing`, { method: 'DELETE' });
  assert.equal(na.status, 405);
  assert.match(na.headers.get('allow'), /GET/);
  assert.match((await na.json()).error, /DELETE is not allowed/);
  const head = await fetch(`${base}/thing`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal((await head.text()), '');
});

engineTest('condition false is 422, handler errors are 500 with error_id, a silent handler is 504', {
  extraYaml: httpYaml('{ host: 127.0.0.1, port: 0, default_timeout: 700 }'),
}, async (ctx) => {
  const base = await httpBase(ctx);
  const w = ctx.worker('http-errors');
  w.registerFunction('http::cond', async (req) => req.query_params.allow === 'yes');
  await route(w, { id: 'http::guarded', path: '/guarded', handler: async () => ({ body: 'in' }), config: { condition_function_id: 'http::cond' } });
  await route(w, { id: 'http::boom', path: '/boom', handler: async () => { throw new Error('kaboom'); } });
  await route(w, { id: 'http::silent', path: '/silent', handler: () => new Promise(() => {}) });
  await waitForRoute(base, '/boom');
  const skipped = await fetch(`${base}/guarded?allow=no`);
  assert.equal(skipped.status, 422);
  assert.deepEqual(await skipped.json(), { error: 'Request condition not met', skipped: true });
  const allowed = await fetch(`${base}/guarded?allow=yes`);
  assert.equal(allowed.status, 200);
  assert.equal(await allowed.json(), 'in');
  const boom = await fetch(`${base}/boom`);
  assert.equal(boom.status, 500);
  const body = await boom.json();
  assert.match(body.error, /kaboom/);
  assert.match(body.error_id, /^[0-9a-f]+$/);
  const t0 = Date.now();
  const silent = await fetch(`${base}/silent`);
  assert.equal(silent.status, 504);
  assert.ok(Date.now() - t0 < 5000);
  assert.match((await silent.json()).error, /700 ms/);
});

engineTest('global and per-route middleware continue or respond', {
  extraYaml: httpYaml('{ host: 127.0.0.1, port: 0, middleware: [{ function_id: "mw::global", phase: preHandler, priority: 1 }] }'),
}, async (ctx) => {
  const base = await httpBase(ctx);
  const w = ctx.worker('http-mw');
  const calls = [];
  w.registerFunction('mw::global', async (input) => {
    calls.push(['global', input.phase, input.request.method, Object.keys(input).sort().join(',')]);
    if (input.request.headers['x-block'] === '1') {
      return { action: 'respond', response: { status_code: 403, body: { blocked: true } } };
    }
    return { action: 'continue' };
  });
  w.registerFunction('mw::route', async (input) => {
    calls.push(['route', input.request.path_params.id]);
    return input.request.query_params.deny ? { action: 'respond', response: { status_code: 401, body: 'no' } } : { action: 'continue' };
  });
  await route(w, { id: 'http::mw::target', path: '/mw/:id', handler: async () => ({ body: 'handler' }), config: { middleware_function_ids: ['mw::route'] } });
  await waitForFunctions(w, ['mw::global', 'mw::route', 'http::mw::target']);
  await waitForRoute(base, '/mw/1');
  calls.length = 0;
  const ok = await fetch(`${base}/mw/5`);
  assert.equal(await ok.json(), 'handler');
  assert.deepEqual(calls, [['global', 'preHandler', 'GET', 'context,phase,request'], ['route', '5']]);
  const blocked = await fetch(`${base}/mw/5`, { headers: { 'x-block': '1' } });
  assert.equal(blocked.status, 403);
  assert.deepEqual(await blocked.json(), { blocked: true });
  const denied = await fetch(`${base}/mw/5?deny=1`);
  assert.equal(denied.status, 401);
  assert.equal(await denied.json(), 'no');
});

engineTest('CORS: permissive by default, configured origins and methods when set', {
  extraYaml: httpYaml('{ host: 127.0.0.1, port: 0, cors: { allowed_origins: ["https://app.test"], allowed_methods: [GET, POST] } }'),
}, async (ctx) => {
  const base = await httpBase(ctx);
  const w = ctx.worker('http-cors');
  await route(w, { id: 'http::cors', path: '/cors', method: 'POST', handler: async () => ({ body: 1 }) });
  await waitForRoute(base, '/cors', 'POST');
  const pre = await fetch(`${base}/cors`, {
    method: 'OPTIONS', headers: { origin: 'https://app.test', 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-a' },
  });
  assert.equal(pre.status, 200);
  assert.equal(pre.headers.get('access-control-allow-origin'), 'https://app.test');
  assert.equal(pre.headers.get('access-control-allow-methods'), 'GET,POST');
  assert.equal(pre.headers.get('access-control-allow-headers'), 'x-a');
  const other = await fetch(`${base}/cors`, { method: 'OPTIONS', headers: { origin: 'https://evil.test', 'access-control-request-method': 'POST' } });
  assert.equal(other.headers.get('access-control-allow-origin'), null);
  const real = await fetch(`${base}/cors`, { method: 'POST', headers: { origin: 'https://app.test' } });
  assert.equal(real.headers.get('access-control-allow-origin'), 'https://app.test');
});

engineTest('binary, urlencoded and multipart bodies stream into the request channel', { extraYaml: httpYaml() }, async (ctx) => {
  const base = await httpBase(ctx);
  const w = ctx.worker('http-upload');
  await route(w, {
    id: 'http::upload', path: '/upload', method: 'POST',
    handler: async (req) => {
      const bytes = await req.request_body.readAll();
      return { body: { body: req.body, length: bytes.length, sha: crypto.createHash('sha256').update(bytes).digest('hex'), text: bytes.length < 1000 ? bytes.toString() : null } };
    },
  });
  await waitForRoute(base, '/upload', 'POST');
  const blob = crypto.randomBytes(3 * 1024 * 1024 + 17);
  const up = await fetch(`${base}/upload`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: blob });
  assert.equal(up.status, 200);
  const r = await up.json();
  assert.equal(r.body, null);
  assert.equal(r.length, blob.length);
  assert.equal(r.sha, crypto.createHash('sha256').update(blob).digest('hex'));
  const form = await (await fetch(`${base}/upload`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1&b=x+y' })).json();
  assert.equal(form.text, 'a=1&b=x+y');
  const fd = new FormData();
  fd.append('field', 'value');
  fd.append('file', new Blob(['file-content']), 'f.txt');
  const multi = await (await fetch(`${base}/upload`, { method: 'POST', body: fd })).json();
  assert.match(multi.text, /name="field"\r\n\r\nvalue/);
  assert.match(multi.text, /filename="f.txt"[\s\S]*file-content/);
});

engineTest('downloads and Server-Sent Events stream from the response channel', { extraYaml: httpYaml() }, async (ctx) => {
  const base = await httpBase(ctx);
  const w = ctx.worker('http-stream');
  const big = crypto.randomBytes(2 * 1024 * 1024);
  w.registerFunction('http::download', http(async (_req, res) => {
    res.status(202);
    res.headers({ 'content-type': 'application/octet-stream', 'x-file': 'big.bin' });
    // Wait for the stream to flush before closing (close() drops what the stream still holds).
    await new Promise((resolve) => res.stream.end(big, resolve));
    res.close();
  }));
  w.registerTrigger({ type: 'http', function_id: 'http::download', config: { api_path: '/download' } });
  w.registerFunction('http::sse', http(async (_req, res) => {
    res.headers({ 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    for (let i = 0; i < 3; i++) {
      await new Promise((resolve) => res.stream.write(`data: event ${i}\n\n`, resolve));
      await sleep(100);
    }
    res.close();
  }));
  w.registerTrigger({ type: 'http', function_id: 'http::sse', config: { api_path: '/events' } });
  await waitForRoute(base, '/download');
  const dl = await fetch(`${base}/download`);
  assert.equal(dl.status, 202);
  assert.equal(dl.headers.get('x-file'), 'big.bin');
  const got = Buffer.from(await dl.arrayBuffer());
  assert.equal(got.length, big.length);
  assert.ok(got.equals(big));

  const sse = await fetch(`${base}/events`);
  assert.equal(sse.headers.get('content-type'), 'text/event-stream');
  const reader = sse.body.getReader();
  const arrivals = [];
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += Buffer.from(value).toString();
    arrivals.push(Date.now());
  }
  assert.equal(text, 'data: event 0\n\ndata: event 1\n\ndata: event 2\n\n');
  assert.ok(arrivals.length >= 2, 'events arrive as they are written, not all at the end');
});

engineTest('routes go with their worker, survive a rolling deploy, and conflicting parameter names are refused', { extraYaml: httpYaml() }, async (ctx) => {
  const base = await httpBase(ctx);
  assert.equal((await fetch(`${base}/health`)).status, 404);
  const v1 = ctx.worker('http-v1');
  await route(v1, { id: 'http::health::v1', path: '/health', handler: async () => ({ body: 'v1' }) });
  await waitForRoute(base, '/health');
  assert.equal(await (await fetch(`${base}/health`)).json(), 'v1');
  // Rolling deploy: v2 registers the same route; v1 leaves; v2 keeps serving.
  const v2 = ctx.worker('http-v2');
  await route(v2, { id: 'http::health::v2', path: '/health', handler: async () => ({ body: 'v2' }) });
  await waitFor(async () => (await (await fetch(`${base}/health`)).json()) === 'v2', { what: 'v2 serving' });
  await v1.shutdown();
  for (let i = 0; i < 5; i++) assert.equal(await (await fetch(`${base}/health`)).json(), 'v2');
  // Conflicting parameter names: refused, visible as a failed trigger, no crash.
  await route(v2, { id: 'http::u1', path: '/u/:id', handler: async (r) => ({ body: r.path_params }) });
  await route(v2, { id: 'http::u2', path: '/u/:userId/x', handler: async () => ({ body: 2 }) });
  const failed = await waitFor(async () => {
    const { triggers } = await v2.trigger({ function_id: 'engine::triggers::list', payload: {} });
    return triggers.find((t) => t.function_id === 'http::u2' && t.state === 'failed');
  }, { what: 'the conflicting route refused' });
  assert.match(failed.error, /:userId.*:id/);
  assert.deepEqual(await (await fetch(`${base}/u/9`)).json(), { id: '9' });
  // The last worker goes: every route goes at once.
  await v2.shutdown();
  await waitFor(async () => (await fetch(`${base}/health`)).status === 404, { what: 'route removed' });
  assert.ok(ctx.engine.alive());
});

engineTest('bad input: oversized bodies, garbage requests and a client leaving mid-response', {
  extraYaml: httpYaml('{ host: 127.0.0.1, port: 0, body_limit_bytes: 1024 }'),
}, async (ctx) => {
  const base = await httpBase(ctx);
  const w = ctx.worker('http-bad');
  await route(w, { id: 'http::json', path: '/json', method: 'POST', handler: async (req) => ({ body: req.body }) });
  await route(w, { id: 'http::bin', path: '/bin', method: 'POST', handler: async (req) => ({ body: (await req.request_body.readAll()).length }) });
  await waitForRoute(base, '/json', 'POST');
  const big = await fetch(`${base}/json`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ x: 'y'.repeat(5000) }) });
  assert.equal(big.status, 413);
  const bigBin = await fetch(`${base}/bin`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.alloc(5000) });
  assert.equal(bigBin.status, 413);
  const small = await fetch(`${base}/bin`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.alloc(100) });
  assert.equal(await small.json(), 100);
  // A garbage request line and an aborted request leave the engine serving.
  const net = await import('node:net');
  await new Promise((resolve) => {
    const s = net.connect(Number(base.split(':')[2]), '127.0.0.1', () => s.end('NOT HTTP AT ALL\r\n\r\n'));
    s.on('close', resolve);
    s.on('error', resolve);
    s.resume();
  });
  const ac = new AbortController();
  const aborted = fetch(`${base}/json`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}', signal: ac.signal });
  ac.abort();
  await rejectionOf(aborted);
  const after = await fetch(`${base}/json`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"ok":1}' });
  assert.deepEqual(await after.json(), { ok: 1 });
});
