// Every config of the original starts: its own SDK-test configs (config-test.yaml,
// config-bridge*.yaml, unchanged), `config.yaml` examples of its docs, and the older module docs'
// `modules:` / `class:` form. Fixed ports are rewritten to free ones; everything else is as written.
// Each engine then does its job: a 0.11.6 worker calls state, stream and the HTTP server answers.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { FIXTURES, newWorker, startEngine, waitFor, waitForFunctions } from './harness.mjs';

const CONFIGS = path.join(FIXTURES, 'original-configs');
// Refusals that mean "this build lacks a worker another branch provides" (iii-http-functions and
// iii-bridge come with h-w16b, RBAC listeners with the RBAC branch); anything else fails.
const MISSING_FEATURE = /not available in this (engine )?build yet|not supported by this engine build yet|Adapter factory 'bridge' not found/;

async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

/** Replaces each fixed port (as a whole number) by a free one; returns {text, ports}. */
async function withFreePorts(text, fixed) {
  const ports = {};
  for (const p of fixed) {
    ports[p] = await freePort();
    text = text.replace(new RegExp(`\\b${p}\\b`, 'g'), String(ports[p]));
  }
  return { text, ports };
}

async function start(t, configText, listeners, dir) {
  try {
    return await startEngine({ configText, listeners: Array(listeners).fill({}), dir });
  } catch (e) {
    const m = MISSING_FEATURE.exec(e.message);
    if (m) {
      t.skip(`this build lacks a worker of the config (${m[0]}): ${e.message.split('\n').find((l) => MISSING_FEATURE.test(l))}`);
      return null;
    }
    throw e;
  }
}

async function checkWorks(engine, wmPort, { httpPort, stream = true, state = true } = {}) {
  const w = newWorker(`ws://127.0.0.1:${wmPort}`, 'config-check');
  try {
    const fns = [];
    if (state) fns.push('state::set', 'state::get');
    if (stream) fns.push('stream::set', 'stream::get');
    await waitForFunctions(w, fns);
    if (state) {
      await w.trigger({ function_id: 'state::set', payload: { scope: 'cfg', key: 'k', value: { v: 1 } } });
      assert.deepEqual(await w.trigger({ function_id: 'state::get', payload: { scope: 'cfg', key: 'k' } }), { v: 1 });
    }
    if (stream) {
      await w.trigger({ function_id: 'stream::set', payload: { stream_name: 's', group_id: 'g', item_id: 'i', data: { x: 2 } } });
      assert.deepEqual(await w.trigger({ function_id: 'stream::get', payload: { stream_name: 's', group_id: 'g', item_id: 'i' } }), { x: 2 });
    }
    if (httpPort) {
      w.registerFunction('cfg::hello', async () => ({ status_code: 200, body: { hello: 'config' } }));
      await w.registerTrigger({ type: 'http', function_id: 'cfg::hello', config: { api_path: '/cfg/hello', http_method: 'GET' } });
      const body = await waitFor(async () => {
        const r = await fetch(`http://127.0.0.1:${httpPort}/cfg/hello`);
        return r.status === 200 ? r.json() : null;
      }, { what: 'the HTTP route to answer' });
      assert.deepEqual(body, { hello: 'config' });
    }
  } finally {
    await w.shutdown();
  }
  assert.ok(engine.alive());
}

function tempDir() { return fs.mkdtempSync(path.join(os.tmpdir(), 'iii-cfg-')); }
function fixture(name) { return fs.readFileSync(path.join(CONFIGS, name), 'utf8'); }

test('docs: engine page example (http + file_based state)', { timeout: 30000 }, async (t) => {
  const { text, ports } = await withFreePorts(fixture('docs-engine.yaml'), [3111]);
  const wm = await freePort();
  const cfg = `${text}modules:\n  - name: iii-worker-manager\n    config: { host: 127.0.0.1, port: ${wm} }\n`;
  const engine = await start(t, cfg, 2, tempDir());
  if (!engine) return;
  try {
    await checkWorks(engine, wm, { httpPort: ports[3111], stream: false });
    await engine.stop();
  } finally { engine.kill(); }
});

test('docs: configure-engine development example', { timeout: 30000 }, async (t) => {
  const { text, ports } = await withFreePorts(fixture('docs-configure-engine-development.yaml'), [49134, 3111, 3112]);
  const engine = await start(t, text, 3, tempDir());
  if (!engine) return;
  try {
    await checkWorks(engine, ports[49134], { httpPort: ports[3111] });
    await engine.stop();
  } finally { engine.kill(); }
});

test('docs: the worker pages\' sample configurations', { timeout: 30000 }, async (t) => {
  const { text, ports } = await withFreePorts(fixture('docs-worker-samples.yaml'), [3111, 3112]);
  const wm = await freePort();
  const cfg = `${text}modules:\n  - name: iii-worker-manager\n    config: { host: 127.0.0.1, port: ${wm} }\n`;
  const engine = await start(t, cfg, 3, tempDir());
  if (!engine) return;
  try {
    await checkWorks(engine, wm, { httpPort: ports[3111] });
    await engine.stop();
  } finally { engine.kill(); }
});

test('legacy `modules:` / `class:` config (older module docs) starts with today\'s workers', { timeout: 30000 }, async (t) => {
  const { text, ports } = await withFreePorts(fixture('legacy-modules.yaml'), [3111, 3112]);
  const wm = await freePort();
  const cfg = `${text}workers:\n  - name: iii-worker-manager\n    config: { host: 127.0.0.1, port: ${wm} }\n`;
  const dir = tempDir();
  const engine = await start(t, cfg, 3, dir);
  if (!engine) return;
  try {
    await checkWorks(engine, wm, { httpPort: ports[3111] });
    await waitFor(() => fs.existsSync(path.join(dir, 'exec-ran.txt')), { what: 'the ExecModule command to run' });
    await engine.stop();
  } finally { engine.kill(); }
});

test('the original\'s config-test.yaml starts unchanged (needs iii-http-functions from h-w16b and RBAC)', { timeout: 30000 }, async (t) => {
  const { text, ports } = await withFreePorts(fixture('config-test.yaml'), [49199, 49135, 3112, 3199]);
  const engine = await start(t, text, 4, tempDir());
  if (!engine) return;
  try {
    await checkWorks(engine, ports[49199], { httpPort: ports[3199] });
    await engine.stop();
  } finally { engine.kill(); }
});

test('the original\'s config-bridge-backend.yaml + config-bridge.yaml: state and stream through the bridge (needs h-w16b)', { timeout: 30000 }, async (t) => {
  const fixed = [49198, 3113, 49197, 3114];
  const ports = {};
  for (const p of fixed) ports[p] = await freePort();
  const rewrite = (s) => fixed.reduce((acc, p) => acc.replace(new RegExp(`\\b${p}\\b`, 'g'), String(ports[p])), s);
  const backend = await start(t, rewrite(fixture('config-bridge-backend.yaml')), 2, tempDir());
  if (!backend) return;
  let bridged;
  try {
    bridged = await start(t, rewrite(fixture('config-bridge.yaml')), 2, tempDir());
    if (!bridged) return;
    await checkWorks(bridged, ports[49197]);
    // What the bridged engine wrote lives in the backend.
    const b = newWorker(`ws://127.0.0.1:${ports[49198]}`, 'backend-check');
    try {
      await waitForFunctions(b, ['state::get']);
      assert.deepEqual(await b.trigger({ function_id: 'state::get', payload: { scope: 'cfg', key: 'k' } }), { v: 1 });
      assert.deepEqual(await b.trigger({ function_id: 'stream::get', payload: { stream_name: 's', group_id: 'g', item_id: 'i' } }), { x: 2 });
    } finally { await b.shutdown(); }
    await bridged.stop();
    await backend.stop();
  } finally {
    bridged?.kill();
    backend.kill();
  }
});
