// A private rabbitmq-server for the tests: free ports (AMQP, distribution, epmd), its own node
// name, data and logs in a temp dir, no plugins. kill() is SIGKILL of the whole process group;
// start() again on the same dir brings back the durable queues and persistent messages.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { sleep } from './harness.mjs';

export const RABBITMQ_SERVER = process.env.RABBITMQ_SERVER ?? '/usr/lib/rabbitmq/bin/rabbitmq-server';
export const rabbitAvailable = () => fs.existsSync(RABBITMQ_SERVER);

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const canConnect = (port) => new Promise((resolve) => {
  const sock = net.connect(port, '127.0.0.1');
  sock.once('connect', () => { sock.destroy(); resolve(true); });
  sock.once('error', () => resolve(false));
});

const live = new Set();
process.on('exit', () => {
  for (const r of live) r.killSync();
});

export class Rabbit {
  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iii-rabbit-'));
    fs.writeFileSync(path.join(this.dir, 'enabled_plugins'), '[].\n');
    this.lines = [];
  }

  get url() { return `amqp://guest:guest@127.0.0.1:${this.port}`; }

  async start({ timeoutMs = 180000 } = {}) {
    if (!this.port) {
      this.port = await freePort();
      this.distPort = await freePort();
      this.epmdPort = await freePort();
      this.node = `iii_test_${process.pid}_${this.port}@localhost`;
    }
    const env = {
      ...process.env,
      HOME: this.dir,
      RABBITMQ_NODE_PORT: String(this.port),
      RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
      RABBITMQ_DIST_PORT: String(this.distPort),
      ERL_EPMD_PORT: String(this.epmdPort),
      RABBITMQ_NODENAME: this.node,
      RABBITMQ_MNESIA_BASE: path.join(this.dir, 'mnesia'),
      RABBITMQ_LOG_BASE: path.join(this.dir, 'log'),
      RABBITMQ_ENABLED_PLUGINS_FILE: path.join(this.dir, 'enabled_plugins'),
      RABBITMQ_CONFIG_FILE: path.join(this.dir, 'rabbitmq'),
      RABBITMQ_PID_FILE: path.join(this.dir, 'pid'),
      RABBITMQ_LOGS: '-',
    };
    this.env = env;
    this.proc = spawn(RABBITMQ_SERVER, [], { cwd: this.dir, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(this);
    const keep = (d) => {
      this.lines.push(...String(d).split('\n'));
      if (this.lines.length > 400) this.lines.splice(0, this.lines.length - 400);
    };
    this.proc.stdout.on('data', keep);
    this.proc.stderr.on('data', keep);
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })));
    const t0 = Date.now();
    let gone = false;
    this.exited.then(() => { gone = true; });
    while (!(await canConnect(this.port))) {
      if (gone) throw new Error(`rabbitmq-server exited during start-up:\n${this.lines.slice(-40).join('\n')}`);
      if (Date.now() - t0 > timeoutMs) {
        this.killSync();
        throw new Error(`rabbitmq-server did not listen on ${this.port} within ${timeoutMs} ms:\n${this.lines.slice(-40).join('\n')}`);
      }
      await sleep(200);
    }
    // The listener opens at the end of the boot; give the last boot step a moment.
    await this.waitLine(/Server startup complete/, 30000).catch(() => {});
    this.bootMs = Date.now() - t0;
    return this;
  }

  async waitLine(re, timeoutMs) {
    const t0 = Date.now();
    while (Date.now() - t0 < timeoutMs) {
      if (this.lines.some((l) => re.test(l))) return;
      await sleep(100);
    }
    throw new Error(`no line ${re}`);
  }

  /** rabbitmqctl against this broker (e.g. `ctl('delete_queue', name)`); resolves with its stdout. */
  async ctl(...args) {
    const bin = path.join(path.dirname(RABBITMQ_SERVER), 'rabbitmqctl');
    return new Promise((resolve, reject) => {
      const p = spawn(bin, ['-n', this.node, ...args], { cwd: this.dir, env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout.on('data', (d) => { out += d; });
      p.stderr.on('data', (d) => { out += d; });
      p.once('error', reject);
      p.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`rabbitmqctl ${args.join(' ')}: exit ${code}: ${out}`))));
    });
  }

  killSync() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      try { process.kill(-this.proc.pid, 'SIGKILL'); } catch { /* gone */ }
    }
  }

  /** SIGKILL the broker (its whole process group) and wait until its port is closed. */
  async kill() {
    this.killSync();
    await this.exited;
    this.lines = [];
    while (await canConnect(this.port)) await sleep(50);
  }

  async stop() {
    await this.kill();
    live.delete(this);
    // The epmd daemon the broker started on our private port (it refuses -kill while the dead
    // node is still registered).
    await sleep(500);
    await new Promise((resolve) => {
      const p = spawn('epmd', ['-port', String(this.epmdPort), '-kill'], { stdio: 'ignore' });
      p.once('exit', resolve);
      p.once('error', resolve);
    });
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
