// Shared harness for the Node system tests: starts the REAL engine binary with a temporary config,
// drives it with the official iii-sdk@0.11.6, and always cleans up (SIGTERM => exit code 0 is asserted).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { registerWorker } from 'iii-sdk';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..', '..', '..');
export const III_BIN = process.env.III_BIN
  ? path.resolve(process.env.III_BIN)
  : path.join(REPO_ROOT, 'build', 'release', 'iii');
export const FIXTURES = path.join(HERE, 'fixtures');

export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const LISTEN_RE = /listening on [0-9.]+:(\d+)/;
// eslint-disable-next-line no-control-regex
const ANSI_RE = /\x1b\[[0-9;]*[A-Za-z]/g;

// ---------------------------------------------------------------------------------------------------------
// Process bookkeeping: every child we spawn is killed when this process goes away, whatever happens.
const liveChildren = new Set();
function track(child) {
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  return child;
}
function killAll() {
  for (const c of liveChildren) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => { killAll(); process.exit(130); });
}

// Keep the SDK's routine chatter out of the test output (set III_TEST_VERBOSE=1 to see it).
if (!process.env.III_TEST_VERBOSE) {
  const NOISE = /^\[(iii|OTel)\] (Worker registered with ID|Worker metrics disabled|OpenTelemetry is disabled|Reconnecting in)/;
  for (const level of ['log', 'info', 'debug', 'warn']) {
    const orig = console[level].bind(console);
    console[level] = (...args) => {
      if (typeof args[0] === 'string' && NOISE.test(args[0])) return;
      orig(...args);
    };
  }
  const origError = console.error.bind(console);
  console.error = (...args) => {
    // expected while an engine is down (restart / shutdown tests)
    if (args[0] === '[iii] WebSocket error' && args[1]?.code === 'ECONNREFUSED') return;
    origError(...args);
  };
}

// ---------------------------------------------------------------------------------------------------------
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolve with `promise`, or reject after `ms` with a descriptive error. */
export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Poll `fn` until it returns a truthy value (returned) or `timeoutMs` passes (throws, with last error). */
export async function waitFor(fn, { timeoutMs = 5000, intervalMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastErr;
  let lastVal;
  for (;;) {
    try {
      lastVal = await fn();
      if (lastVal) return lastVal;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      const detail = lastErr ? ` (last error: ${lastErr.message})` : ` (last value: ${JSON.stringify(lastVal)})`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await sleep(intervalMs);
  }
}

/** Await a promise that must reject; returns the rejection reason. */
export async function rejectionOf(promise, what = 'promise') {
  try {
    const v = await promise;
    throw new assert.AssertionError({ message: `${what} resolved (${JSON.stringify(v)}) but was expected to reject` });
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    return e;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Engine config + process

export function configYaml({ listeners = [{}], level = 'info', format = 'text', extraYaml = '' } = {}) {
  const lines = ['workers:'];
  for (const l of listeners) {
    const c = {
      host: '127.0.0.1',
      port: 0,
      idle_timeout_ms: 60000,
      max_message_bytes: 67108864,
      ...l,
    };
    lines.push('  - name: iii-worker-manager');
    lines.push(`    config: { ${Object.entries(c).map(([k, v]) => `${k}: ${v}`).join(', ')} }`);
  }
  lines.push('  - name: iii-observability');
  lines.push(`    config: { level: ${level}, format: ${format} }`);
  if (extraYaml) lines.push(extraYaml);
  return lines.join('\n') + '\n';
}

export class Engine {
  constructor(opts) {
    this.opts = opts;
    this.lines = [];
    this.ports = [];
    this.exit = null; // {code, signal}
  }

  get port() { return this.ports[0]; }
  get url() { return `ws://127.0.0.1:${this.port}`; }
  urlFor(i) { return `ws://127.0.0.1:${this.ports[i]}`; }
  log() { return this.lines.join('\n'); }
  logTail(n = 80) { return this.lines.slice(-n).join('\n'); }
  alive() { return this.exit === null && this.proc.exitCode === null && this.proc.signalCode === null; }

  async start() {
    if (!fs.existsSync(III_BIN)) {
      throw new Error(`engine binary not found at ${III_BIN} (build it, or set III_BIN)`);
    }
    this.dir = this.opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'iii-sys-node-'));
    this.configPath = path.join(this.dir, 'config.yaml');
    fs.writeFileSync(this.configPath, this.opts.configText ?? configYaml(this.opts));
    const nListeners = (this.opts.listeners ?? [{}]).length;
    this.ports = [];
    this.exit = null;
    this.startedAt = Date.now();
    this.proc = track(spawn(III_BIN, ['--config', this.configPath], {
      cwd: this.dir,
      env: { ...process.env, III_TELEMETRY_ENABLED: 'false', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    }));
    this.exited = new Promise((resolve) => {
      this.proc.once('exit', (code, signal) => { this.exit = { code, signal }; resolve(this.exit); });
    });
    const portsReady = new Promise((resolve) => {
      readline.createInterface({ input: this.proc.stdout }).on('line', (raw) => {
        const line = raw.replace(ANSI_RE, '');
        this.lines.push(line);
        const m = LISTEN_RE.exec(line);
        if (m) {
          this.ports.push(Number(m[1]));
          if (this.ports.length === nListeners) resolve();
        }
      });
    });
    readline.createInterface({ input: this.proc.stderr }).on('line', (raw) => {
      this.lines.push(`[stderr] ${raw.replace(ANSI_RE, '')}`);
    });
    const outcome = await Promise.race([
      portsReady.then(() => 'ready'),
      this.exited.then(() => 'exited'),
      sleep(10000).then(() => 'timeout'),
    ]);
    if (outcome !== 'ready') {
      const why = outcome === 'exited'
        ? `engine exited early (${JSON.stringify(this.exit)})`
        : `no 'listening on host:port' line for all ${nListeners} listener(s) on stdout within 10 s`;
      this.kill();
      throw new Error(`${why}\nconfig:\n${fs.readFileSync(this.configPath, 'utf8')}\nlog:\n${this.log()}`);
    }
    return this;
  }

  /** Send a signal and wait for exit; asserts a clean exit (code 0) unless told otherwise. */
  async stop({ signal = 'SIGTERM', timeoutMs = 10000, expectCode = 0 } = {}) {
    if (this.exit === null) this.proc.kill(signal);
    const t0 = Date.now();
    const res = await Promise.race([this.exited, sleep(timeoutMs).then(() => null)]);
    if (res === null) {
      this.kill();
      await this.exited;
      throw new Error(`engine did not exit within ${timeoutMs} ms after ${signal}\nlog:\n${this.logTail()}`);
    }
    if (expectCode !== null) {
      assert.equal(res.signal, null, `engine died from signal ${res.signal} after ${signal}\nlog:\n${this.logTail()}`);
      assert.equal(res.code, expectCode, `engine exit code after ${signal}\nlog:\n${this.logTail()}`);
    }
    return { ...res, durationMs: Date.now() - t0 };
  }

  kill() {
    try { this.proc.kill('SIGKILL'); } catch { /* gone */ }
  }

  /** Remove the temporary config directory (only one we created). */
  cleanup() {
    if (this.dir && !this.opts.dir) fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** Lines logged after `mark` (a value of `this.lines.length` taken earlier). */
  linesSince(mark) { return this.lines.slice(mark); }
}

export async function startEngine(opts = {}) {
  return new Engine(opts).start();
}

// ---------------------------------------------------------------------------------------------------------
// SDK workers

export const FAST_RECONNECT = {
  initialDelayMs: 100,
  maxDelayMs: 400,
  backoffMultiplier: 1.5,
  jitterFactor: 0.1,
  maxRetries: -1,
};

/**
 * registerWorker with test defaults: fast reconnects, a 10 s invocation timeout, and OTel off (OTel state in
 * the Node SDK is process-global and leaks a reconnecting socket per registerWorker; OTel is exercised by
 * the subprocess workers and by one dedicated test instead).
 */
export function newWorker(url, name, options = {}) {
  return registerWorker(url, {
    workerName: name,
    invocationTimeoutMs: 10000,
    reconnectionConfig: FAST_RECONNECT,
    otel: { enabled: false },
    ...options,
  });
}

/** Wait until the engine lists `ids` (as seen by `iii`'s connection). */
export async function waitForFunctions(iii, ids, timeoutMs = 5000) {
  return waitFor(async () => {
    const res = await iii.trigger({ function_id: 'engine::functions::list', payload: {}, timeoutMs: 2000 });
    const have = new Set(res.functions.map((f) => f.function_id));
    return ids.every((id) => have.has(id));
  }, { timeoutMs, what: `functions ${ids.join(', ')} to be listed` });
}

/** engine::workers::list rows whose name is `name`. */
export async function workersNamed(iii, name) {
  const res = await iii.trigger({ function_id: 'engine::workers::list', payload: {}, timeoutMs: 3000 });
  return res.workers.filter((w) => w.name === name);
}

export async function waitForWorkerRow(iii, name, timeoutMs = 5000) {
  return waitFor(async () => {
    const rows = await workersNamed(iii, name);
    return rows.length === 1 ? rows[0] : null;
  }, { timeoutMs, what: `exactly one worker row named ${name}` });
}

// ---------------------------------------------------------------------------------------------------------
// Subprocess workers (fixtures/worker.mjs): a real separate process we can SIGKILL.

export class ChildWorker {
  constructor(proc, label) {
    this.proc = proc;
    this.label = label;
    this.lines = [];
    this.waiters = [];
    this.exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    readline.createInterface({ input: proc.stdout }).on('line', (line) => {
      this.lines.push(line);
      this.waiters = this.waiters.filter((w) => !w(line));
    });
    readline.createInterface({ input: proc.stderr }).on('line', (line) => this.lines.push(`[stderr] ${line}`));
  }

  /** Wait for a stdout line matching `re`; resolves with the match. */
  waitLine(re, timeoutMs = 10000) {
    for (const l of this.lines) {
      const m = re.exec(l);
      if (m) return Promise.resolve(m);
    }
    return withTimeout(new Promise((resolve) => {
      this.waiters.push((line) => {
        const m = re.exec(line);
        if (m) { resolve(m); return true; }
        return false;
      });
    }), timeoutMs, `${this.label}: line ${re}\noutput so far:\n${this.lines.join('\n')}`);
  }

  kill(sig = 'SIGKILL') { try { this.proc.kill(sig); } catch { /* gone */ } }
}

export function spawnNodeWorker(url, name, role, extraEnv = {}) {
  const proc = track(spawn(process.execPath, [path.join(FIXTURES, 'worker.mjs'), url, name, role], {
    cwd: HERE,
    env: { ...process.env, ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  }));
  return new ChildWorker(proc, `node worker ${name} (${role})`);
}

export function spawnProcess(cmd, args, opts = {}) {
  return track(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts }));
}

/** Run a command to completion (bounded); resolves {code, signal, stdout, stderr, ms}. */
export function runCommand(cmd, args, { timeoutMs = 15000, ...opts } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const p = spawnProcess(cmd, args, opts);
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not finish within ${timeoutMs} ms\nstdout:${stdout}\nstderr:${stderr}`));
    }, timeoutMs);
    p.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

// ---------------------------------------------------------------------------------------------------------
// The test wrapper: one fresh engine per test, workers shut down and the engine stopped (exit 0) afterwards.

/**
 * engineTest(name, [engineOpts], fn) — fn receives ctx:
 *   ctx.engine       the Engine
 *   ctx.url          ws URL of the first listener
 *   ctx.worker(name, opts?)  an SDK worker that is shut down after the test
 *   ctx.child(name, role, env?) a subprocess worker (killed after the test)
 *   ctx.defer(fn)    extra cleanup
 * engineOpts.manageEngine=false leaves stopping to the test (it must stop it itself).
 */
export function engineTest(name, engineOpts, fn) {
  if (typeof engineOpts === 'function') { fn = engineOpts; engineOpts = {}; }
  const { timeout = 60000, manageEngine = true, ...opts } = engineOpts;
  test(name, { timeout }, async () => {
    const engine = await startEngine(opts);
    const workers = [];
    const children = [];
    const deferred = [];
    const ctx = {
      engine,
      get url() { return engine.url; },
      worker(wname, wopts = {}) {
        const w = newWorker(wopts.url ?? engine.url, wname, wopts.options ?? {});
        workers.push({ w, name: wname });
        return w;
      },
      child(cname, role, env = {}, url = engine.url) {
        const c = spawnNodeWorker(url, cname, role, env);
        children.push(c);
        return c;
      },
      defer(f) { deferred.push(f); },
    };
    const errors = [];
    try {
      await fn(ctx);
    } catch (e) {
      errors.push(e);
    }
    // Cleanup; every failure here is reported too.
    for (const f of deferred.reverse()) {
      try { await f(); } catch (e) { errors.push(e); }
    }
    const shutdowns = workers.map(({ w, name: wn }) =>
      withTimeout(w.shutdown(), 10000, `iii-sdk shutdown() of worker ${wn}`).catch((e) => errors.push(e)));
    await Promise.all(shutdowns);
    for (const c of children) c.kill('SIGKILL');
    if (manageEngine) {
      if (!engine.alive()) {
        errors.push(new Error(`engine is not alive at the end of the test: ${JSON.stringify(engine.exit)}`));
      } else {
        try { await engine.stop(); } catch (e) { errors.push(e); }
      }
    }
    engine.kill();
    engine.cleanup();
    if (errors.length) {
      const text = errors.map((e, i) => `${i ? 'also: ' : ''}${e?.stack ?? e}`).join('\n');
      const err = new Error(`${text}\n--- engine log (tail) ---\n${engine.logTail()}`);
      throw err;
    }
  });
}
