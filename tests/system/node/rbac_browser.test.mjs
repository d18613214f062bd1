// A real browser on an RBAC listener: headless Chromium (Debian's `chromium`, scripts/install-deps.sh) loads
// fixtures/browser_worker.html from a server run by this test. The page speaks the worker protocol with the
// browser's own WebSocket (token in the query string), registers a function that a Node worker calls, calls a
// Node function, is refused a forbidden one and a listener that does not allow its Origin, and subscribes to a
// stream group with its token in Sec-WebSocket-Protocol. Every step is POSTed back here and checked.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  engineTest, FIXTURES, spawnProcess, waitFor, waitForFunctions, withTimeout,
} from './harness.mjs';

const CHROMIUM = ['chromium', 'chromium-browser'].find((c) => spawnSync('which', [c]).status === 0);

const CONFIG = `workers:
  - name: iii-worker-manager
    config: { host: 127.0.0.1, port: 0 }
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      allowed_origins: [ORIGIN]
      rbac:
        auth_function_id: test::browser::auth
        expose_functions: [match("node::*")]
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: 0
      allowed_origins: ["http://some-other-site.example"]
      rbac:
        auth_function_id: test::browser::auth
  - name: iii-observability
    config: { level: info }
  - name: iii-stream
    config: { host: 127.0.0.1, port: 0, auth_function: test::browser::stream-auth }
`;

/** Serves the page and collects the steps it reports. */
async function pageServer() {
  const reports = [];
  const waiters = [];
  const html = fs.readFileSync(path.join(FIXTURES, 'browser_worker.html'));
  const server = http.createServer((req, res) => {
    if (req.method === 'POST' && req.url === '/report') {
      let body = '';
      req.on('data', (d) => { body += d; });
      req.on('end', () => {
        reports.push(JSON.parse(body));
        waiters.splice(0).forEach((w) => w());
        res.writeHead(204).end();
      });
      return;
    }
    if (req.url.startsWith('/page')) {
      res.writeHead(200, { 'content-type': 'text/html' }).end(html);
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const origin = `http://127.0.0.1:${server.address().port}`;
  const step = (name, ms = 15000) => withTimeout(new Promise((resolve) => {
    const check = () => {
      const failed = reports.find((r) => r.step === 'failed');
      const hit = reports.find((r) => r.step === name) ?? failed;
      if (hit) resolve(hit); else waiters.push(check);
    };
    check();
  }), ms, `the page to report '${name}' (reports so far: ${JSON.stringify(reports)})`);
  return { server, origin, step, reports };
}

if (!CHROMIUM) {
  test('headless Chromium drives the RBAC listener and the stream server',
    { skip: 'chromium is not installed (scripts/install-deps.sh installs it)' }, () => {});
} else {
  // The config needs the page's origin, so the page server starts before the engine.
  const page = await pageServer();
  engineTest('headless Chromium drives the RBAC listener and the stream server',
    { configText: CONFIG.replace('ORIGIN', JSON.stringify(page.origin)), listeners: [{}, {}, {}], timeout: 90000 },
    async (ctx) => {
      ctx.defer(() => new Promise((r) => page.server.close(r)));
      const streamLine = await waitFor(() => ctx.engine.lines.map((l) => /iii-stream listening on [0-9.]+:(\d+)/.exec(l)).find(Boolean),
        { what: 'the iii-stream port' });
      const node = ctx.worker('browser-peer');
      const authInputs = [];
      const streamAuth = [];
      node.registerFunction('test::browser::auth', async (input) => {
        authInputs.push(input);
        if (input.query_params.token?.[0] !== 'browser-token') throw new Error('bad token');
        return { allowed_functions: [], context: { who: 'browser' } };
      });
      node.registerFunction('test::browser::stream-auth', async (input) => {
        streamAuth.push(input);
        if (input.headers.authorization !== 'stream-secret') return { allowed: false };
        return { context: { who: 'stream-browser' } };
      });
      node.registerFunction('node::add', async (d) => ({ sum: d.a + d.b }));
      node.registerFunction('private::secret', async () => 'secret');
      await waitForFunctions(node, ['test::browser::auth', 'test::browser::stream-auth', 'node::add']);

      const config = {
        rbacUrl: ctx.engine.urlFor(1),
        otherOriginUrl: ctx.engine.urlFor(2),
        streamUrl: `ws://127.0.0.1:${streamLine[1]}`,
        token: 'browser-token',
        streamToken: 'stream-secret',
      };
      const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'iii-chromium-'));
      ctx.defer(() => fs.rmSync(profile, { recursive: true, force: true }));
      const browser = spawnProcess(CHROMIUM, [
        '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
        '--disable-extensions', '--disable-background-networking', `--user-data-dir=${profile}`,
        `${page.origin}/page?config=${encodeURIComponent(JSON.stringify(config))}`,
      ], { detached: true }); // its own process group: Chromium's helper processes go with it
      let browserLog = '';
      browser.stderr.on('data', (d) => { browserLog += d; });
      // Deferred after the profile's removal, so it runs before it: every Chromium process must be gone
      // first, or a helper still writing into the profile makes the removal fail (ENOTEMPTY, seen once).
      ctx.defer(async () => {
        const groupAlive = () => { try { process.kill(-browser.pid, 0); return true; } catch { return false; } };
        try { process.kill(-browser.pid, 'SIGKILL'); } catch { /* already gone */ }
        await new Promise((r) => (browser.exitCode !== null || browser.signalCode !== null ? r() : browser.once('exit', r)));
        await waitFor(() => !groupAlive(), { timeoutMs: 10000, intervalMs: 20, what: 'every Chromium process to exit' });
      });
      const step = async (name) => {
        const r = await page.step(name, 30000).catch((e) => { throw new Error(`${e.message}\nchromium:\n${browserLog.slice(-3000)}`); });
        assert.notEqual(r.step, 'failed', `the page failed: ${r.error}`);
        return r;
      };

      const connected = await step('connected');
      assert.match(connected.workerId, /^[0-9a-f-]{36}$/);
      const auth = authInputs.find((a) => a.query_params.token?.[0] === 'browser-token');
      assert.equal(auth.headers.origin, page.origin, 'the auth function sees the page origin');
      assert.match(auth.headers['user-agent'], /Chrome/);

      await step('registered');
      await waitForFunctions(node, ['browser::greet']);
      const greeting = await node.trigger({ function_id: 'browser::greet', payload: { name: 'node' } });
      assert.deepEqual(greeting, { greeting: 'hello node', from: 'chromium' });
      assert.equal((await step('greeted')).input.name, 'node');

      assert.deepEqual((await step('called')).result, { sum: 5 });
      const forbidden = (await step('forbidden')).error;
      assert.equal(forbidden.code, 'FORBIDDEN');
      assert.match(forbidden.message, /private::secret/);

      const other = await step('other-origin');
      assert.equal(other.refused, true, 'a listener that does not allow the page origin refuses it');

      const joined = await step('stream-joined');
      assert.equal(joined.protocol, 'Authorization', 'the selected subprotocol reached the browser');
      assert.deepEqual(joined.sync, { type: 'sync', data: [] });
      assert.equal(joined.refusedBad, true, 'a wrong stream token is refused at upgrade time');
      assert.ok(streamAuth.some((a) => a.headers.authorization === 'stream-secret'), 'the token reached auth_function');
      await node.trigger({ function_id: 'stream::set', payload: { stream_name: 'room', group_id: 'lobby', item_id: 'm1', data: { text: 'hi' } } });
      assert.deepEqual((await step('stream-event')).event, { type: 'create', data: { text: 'hi' } });
      await step('done');
    });
}
