// iii-http-functions: functions registered with an `invocation` block are served by HTTPS calls
// from the engine. A local HTTPS server with a CA made by this test (openssl CLI) stands in for
// the remote function; the engine trusts the CA through SSL_CERT_FILE (OpenSSL's default paths).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { describe, before, after } from 'node:test';
import dns from 'node:dns/promises';
import { engineTest, rejectionOf, waitForFunctions, waitFor, withTimeout } from './harness.mjs';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iii-hf-'));
const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });

function makePki() {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=iii test CA');
  openssl('req', ...ec, '-keyout', 'srv.key', '-out', 'srv.csr', '-subj', '/CN=localhost');
  fs.writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  openssl('x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'srv.pem', '-days', '2', '-extfile', 'ext.cnf');
  // A certificate for another name, from the same CA: the host name check must refuse it.
  openssl('req', ...ec, '-keyout', 'other.key', '-out', 'other.csr', '-subj', '/CN=other.test');
  fs.writeFileSync(path.join(dir, 'ext2.cnf'), 'subjectAltName=DNS:other.test\n');
  openssl('x509', '-req', '-in', 'other.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'other.pem', '-days', '2', '-extfile', 'ext2.cnf');
}

const SECRET = 'hmac-secret-' + crypto.randomUUID();
const TOKEN = 'bearer-' + crypto.randomUUID();
const APIKEY = 'key-' + crypto.randomUUID();
process.env.III_TEST_HF_SECRET = SECRET;
process.env.III_TEST_HF_TOKEN = TOKEN;
process.env.III_TEST_HF_APIKEY = APIKEY;

const seen = []; // every request the server got: {path, method, headers, body}
let waiters = [];
/** Resolves with the next request (from now on) whose path is `pathname`. */
function nextRequest(pathname) {
  return new Promise((resolve) => waiters.push((r) => (r.path === pathname ? (resolve(r), true) : false)));
}
const sockets = new Set();
let server;
let wrongServer;
let base;
let wrongBase;

function listen(srv) {
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve(srv.address().port)));
}

function handler(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks);
    const url = new URL(req.url, 'https://x');
    const rec = { path: url.pathname, method: req.method, headers: req.headers, body: raw.toString(), socket: req.socket };
    seen.push(rec);
    waiters = waiters.filter((w) => !w(rec));
    const json = (status, v) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(v)); };
    switch (url.pathname) {
      case '/hmac': {
        const ts = req.headers['x-iii-timestamp'];
        const expected = 'sha256=' + crypto.createHmac('sha256', SECRET)
          .update(`${ts}:${raw.toString('base64')}`).digest('hex');
        if (req.headers['x-iii-signature'] !== expected) return json(401, { error: { code: 'bad_signature', message: 'signature mismatch' } });
        return json(200, { verified: 'hmac', got: JSON.parse(raw.toString()) });
      }
      case '/bearer':
        if (req.headers.authorization !== `Bearer ${TOKEN}`) return json(401, { error: { code: 'bad_token', message: 'no' } });
        return json(200, { verified: 'bearer', method: req.method });
      case '/apikey':
        if (req.headers['x-api-key'] !== APIKEY) return json(401, { error: { code: 'bad_key', message: 'no' } });
        return json(200, { verified: 'api_key', custom: req.headers['x-custom'] });
      case '/error': return json(422, { error: { code: 'E_REMOTE', message: 'remote said no' } });
      case '/plain500': res.writeHead(500); return res.end('boom');
      case '/empty': res.writeHead(204); return res.end();
      case '/notjson': res.writeHead(200, { 'content-type': 'text/plain' }); return res.end('hello');
      case '/redirect': res.writeHead(302, { location: '/hmac' }); return res.end();
      case '/slow': return setTimeout(() => json(200, { late: true }), 3000);
      case '/echo': return json(200, { n: JSON.parse(raw.toString()).n });
      default: return json(404, {});
    }
  });
}

before(async () => {
  makePki();
  process.env.SSL_CERT_FILE = path.join(dir, 'ca.pem');
  server = https.createServer({ key: fs.readFileSync(path.join(dir, 'srv.key')), cert: fs.readFileSync(path.join(dir, 'srv.pem')) }, handler);
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  base = `https://localhost:${await listen(server)}`;
  wrongServer = https.createServer({ key: fs.readFileSync(path.join(dir, 'other.key')), cert: fs.readFileSync(path.join(dir, 'other.pem')) }, handler);
  wrongBase = `https://localhost:${await listen(wrongServer)}`;
});

after(() => {
  for (const s of sockets) s.destroy();
  server?.close();
  wrongServer?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const relaxed = `  - name: iii-http-functions
    config:
      security:
        url_allowlist: [localhost, 127.0.0.1]
        block_private_ips: false
        require_https: true
`;

const fnList = async (iii) => (await iii.trigger({ function_id: 'engine::functions::list', payload: {} })).functions.map((f) => f.function_id);

describe('iii-http-functions', () => {
  engineTest('each auth kind reaches the HTTPS server with the spec headers; results and errors map', { extraYaml: relaxed }, async (ctx) => {
    const owner = ctx.worker('hf-owner');
    owner.registerFunction('hf::hmac', { url: `${base}/hmac`, auth: { type: 'hmac', secret_key: 'III_TEST_HF_SECRET' } });
    owner.registerFunction('hf::bearer', { url: `${base}/bearer`, method: 'PUT', auth: { type: 'bearer', token_key: 'III_TEST_HF_TOKEN' } });
    owner.registerFunction('hf::apikey', { url: `${base}/apikey`, headers: { 'x-custom': 'c1' }, auth: { type: 'api_key', header: 'x-api-key', value_key: 'III_TEST_HF_APIKEY' } });
    owner.registerFunction('hf::error', { url: `${base}/error` });
    owner.registerFunction('hf::plain500', { url: `${base}/plain500` });
    owner.registerFunction('hf::empty', { url: `${base}/empty` });
    owner.registerFunction('hf::notjson', { url: `${base}/notjson` });
    owner.registerFunction('hf::redirect', { url: `${base}/redirect` });
    owner.registerFunction('hf::wrongcert', { url: `${wrongBase}/hmac` });
    const caller = ctx.worker('hf-caller');
    const ids = ['hf::hmac', 'hf::bearer', 'hf::apikey', 'hf::error', 'hf::plain500', 'hf::empty', 'hf::notjson', 'hf::redirect', 'hf::wrongcert'];
    await waitForFunctions(caller, ids);

    const before = seen.length;
    const r = await caller.trigger({ function_id: 'hf::hmac', payload: { order: 7, note: 'héllo' } });
    assert.equal(r.verified, 'hmac');
    assert.equal(r.got.order, 7);
    assert.equal(r.got.note, 'héllo');
    const req = seen[before];
    assert.equal(req.method, 'POST');
    assert.equal(req.headers['content-type'], 'application/json');
    assert.equal(req.headers['x-iii-function-path'], 'hf::hmac');
    assert.match(req.headers['x-iii-invocation-id'], /^[0-9a-f-]{36}$/);
    assert.ok(Math.abs(Number(req.headers['x-iii-timestamp']) - Date.now() / 1000) < 60);
    assert.equal(req.headers.traceparent, undefined);

    assert.deepEqual(await caller.trigger({ function_id: 'hf::bearer', payload: {} }), { verified: 'bearer', method: 'PUT' });
    assert.deepEqual(await caller.trigger({ function_id: 'hf::apikey', payload: {} }), { verified: 'api_key', custom: 'c1' });

    const e1 = await rejectionOf(caller.trigger({ function_id: 'hf::error', payload: {} }));
    assert.equal(e1.code, 'E_REMOTE');
    assert.equal(e1.message, 'E_REMOTE: remote said no');
    const e2 = await rejectionOf(caller.trigger({ function_id: 'hf::plain500', payload: {} }));
    assert.equal(e2.code, 'http_error');
    assert.equal(e2.message, 'http_error: HTTP 500');
    assert.equal(await caller.trigger({ function_id: 'hf::empty', payload: {} }), null); // null stays null here (docs/compat.md)
    const e3 = await rejectionOf(caller.trigger({ function_id: 'hf::notjson', payload: {} }));
    assert.equal(e3.code, 'invalid_response');
    // Redirects are not followed: the 302 itself is the answer.
    const hmacCalls = seen.filter((s) => s.path === '/hmac').length;
    const e4 = await rejectionOf(caller.trigger({ function_id: 'hf::redirect', payload: {} }));
    assert.equal(e4.code, 'http_error');
    assert.equal(e4.message, 'http_error: HTTP 302');
    assert.equal(seen.filter((s) => s.path === '/hmac').length, hmacCalls);
    // Certificate verification is on: a certificate for another name is refused.
    const e5 = await rejectionOf(caller.trigger({ function_id: 'hf::wrongcert', payload: {} }));
    assert.equal(e5.code, 'http_request_failed');
    assert.match(e5.message, /certificate verify failed|TLS/i);
    assert.equal(seen.filter((s) => s.path === '/hmac').length, hmacCalls);

    // Void calls reach the server too.
    const voidReq = nextRequest('/hmac');
    await caller.trigger({ function_id: 'hf::hmac', payload: { v: 1 }, action: { type: 'void' } });
    assert.equal(JSON.parse((await withTimeout(voidReq, 5000, 'void call reaching the server')).body).v, 1);
  });

  engineTest('connections are reused, timeouts fail the call, the functions go with their worker, and a queue can target them', {
    extraYaml: relaxed + `  - name: iii-queue
    config:
      queue_configs:
        hfq: { max_retries: 1, concurrency: 1 }
`,
  }, async (ctx) => {
    const owner = ctx.worker('hf-owner');
    owner.registerFunction('hf::echo', { url: `${base}/echo` });
    owner.registerFunction('hf::slow', { url: `${base}/slow`, timeout_ms: 300 });
    const caller = ctx.worker('hf-caller');
    await waitForFunctions(caller, ['hf::echo', 'hf::slow']);

    const first = seen.length;
    for (let n = 0; n < 5; n++) assert.deepEqual(await caller.trigger({ function_id: 'hf::echo', payload: { n } }), { n });
    const sockets5 = new Set(seen.slice(first).map((s) => s.socket));
    assert.equal(sockets5.size, 1, 'five sequential calls to one host share one kept-alive connection');

    const t0 = Date.now();
    const e = await rejectionOf(caller.trigger({ function_id: 'hf::slow', payload: {} }));
    assert.equal(e.code, 'http_request_failed');
    assert.match(e.message, /timed out after 300 ms/);
    assert.ok(Date.now() - t0 < 2500, `timed out in ${Date.now() - t0} ms`);

    // A queue consumer invokes an HTTP function like any other.
    const queued = nextRequest('/echo');
    const receipt = await caller.trigger({ function_id: 'hf::echo', payload: { n: 42 }, action: { type: 'enqueue', queue: 'hfq' } });
    assert.ok(receipt.messageReceiptId);
    assert.equal(JSON.parse((await withTimeout(queued, 5000, 'queued call reaching the server')).body).n, 42);

    assert.ok((await fnList(caller)).includes('hf::echo'));
    await owner.shutdown();
    await waitFor(async () => !(await fnList(caller)).includes('hf::echo'), { what: 'hf::echo to leave with its worker' });
  });

  engineTest('default security: https only, private addresses refused (IPv4-mapped IPv6 included), allowlist, missing secrets', {
    extraYaml: `  - name: iii-http-functions
    config:
      security:
        url_allowlist: ['*.example.com', localhost, '127.0.0.1', '[::ffff:169.254.169.254]', '[::ffff:a9fe:a9fe]', '169.254.169.254', '[::1]', '127.1']
`,
  }, async (ctx) => {
    const mark = ctx.engine.lines.length;
    const owner = ctx.worker('hf-owner');
    const refused = {
      'hf::plain': 'http://api.example.com/x',
      'hf::notlisted': 'https://evil.test/x',
      'hf::loop': 'https://127.0.0.1:9/x',
      'hf::short': 'https://127.1/x',
      'hf::meta': 'https://169.254.169.254/latest/meta-data',
      'hf::mapped': 'https://[::ffff:169.254.169.254]/latest/meta-data',
      'hf::mappedhex': 'https://[::ffff:a9fe:a9fe]/latest/meta-data',
      'hf::v6loop': 'https://[::1]:9/',
      'hf::localhost': `${base}/echo`,
    };
    for (const [id, url] of Object.entries(refused)) owner.registerFunction(id, { url });
    owner.registerFunction('hf::nosecret', { url: 'https://api.example.com/x', auth: { type: 'hmac', secret_key: 'III_TEST_HF_UNSET_VAR' } });
    owner.registerFunction('hf::ok', { url: 'https://api.example.com/x' });
    const caller = ctx.worker('hf-caller');
    await waitForFunctions(caller, ['hf::ok']);
    const listed = await fnList(caller);
    for (const id of [...Object.keys(refused), 'hf::nosecret']) assert.ok(!listed.includes(id), `${id} must not be registered`);
    // The refusals are logged before fnList answers, but the log pipe may be read a little later.
    await waitFor(() => ctx.engine.linesSince(mark).some((l) => l.includes('hf::nosecret')), { intervalMs: 10, what: 'the refusals in the log' });
    const log = ctx.engine.linesSince(mark).join('\n');
    assert.match(log, /hf::plain.*HTTPS is required/);
    assert.match(log, /hf::notlisted.*URL not in allowlist/);
    for (const id of ['hf::loop', 'hf::short', 'hf::meta', 'hf::mapped', 'hf::mappedhex', 'hf::v6loop', 'hf::localhost'])
      assert.match(log, new RegExp(`${id}.*Private IP blocked`));
    assert.match(log, /hf::nosecret.*secret_not_found/);
    const e = await rejectionOf(caller.trigger({ function_id: 'hf::mapped', payload: {} }));
    assert.equal(e.code, 'function_not_found');
  });

  // A host name is not resolved at registration; every call checks every address it resolves to
  // before connecting. This machine's own name resolves to a private address on test machines.
  engineTest('a host name resolving to a private address is refused at call time', {
    extraYaml: `  - name: iii-http-functions
    config:
      security:
        require_https: false
`,
  }, async (ctx) => {
    const host = os.hostname();
    const addrs = await dns.lookup(host, { all: true }).catch(() => []);
    const isPrivate = (a) => /^(127\.|10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|169\.254\.|::1$|f[cd]|fe[89ab])/i.test(a);
    if (!addrs.length || !addrs.some((a) => isPrivate(a.address)) || host === 'localhost') return;
    const owner = ctx.worker('hf-owner');
    const port = new URL(base).port;
    owner.registerFunction('hf::byname', { url: `http://${host}:${port}/echo` });
    const caller = ctx.worker('hf-caller');
    await waitForFunctions(caller, ['hf::byname']);
    const n = seen.length;
    const e = await rejectionOf(caller.trigger({ function_id: 'hf::byname', payload: { n: 1 } }));
    assert.equal(e.code, 'url_validation_failed');
    assert.equal(e.message, 'url_validation_failed: Private IP blocked');
    assert.equal(seen.length, n, 'nothing was sent');
  });
});
