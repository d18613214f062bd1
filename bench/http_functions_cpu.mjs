// Engine CPU per call of an HTTP-invoked function (iii-http-functions), against the same call
// served by a WebSocket worker (the floor), measured from /proc/<pid>/stat (utime + stime) so
// the figure does not depend on how loaded the machine is. Sequential calls from one caller.
//   III_BIN=build/release/iii node bench/http_functions_cpu.mjs [calls]
// Needs the Node test dependencies (tests/system/node/node_modules) and the openssl CLI.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { startEngine, newWorker, waitForFunctions } from '../tests/system/node/harness.mjs';

const N = Number(process.argv[2] ?? 2000);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iii-hfb-'));
const ssl = (...a) => execFileSync('openssl', a, { cwd: dir, stdio: 'pipe' });
const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
ssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=bench CA');
ssl('req', ...ec, '-keyout', 's.key', '-out', 's.csr', '-subj', '/CN=localhost');
fs.writeFileSync(path.join(dir, 'x.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
ssl('x509', '-req', '-in', 's.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 's.pem', '-days', '1', '-extfile', 'x.cnf');
process.env.SSL_CERT_FILE = path.join(dir, 'ca.pem');

const handler = (req, res) => {
  const c = [];
  req.on('data', (d) => c.push(d));
  req.on('end', () => { res.writeHead(200, { 'content-type': 'application/json' }); res.end(Buffer.concat(c)); });
};
const listen = (s) => new Promise((r) => s.listen(0, '127.0.0.1', () => r(s.address().port)));
const plain = http.createServer(handler);
const tls = https.createServer({ key: fs.readFileSync(path.join(dir, 's.key')), cert: fs.readFileSync(path.join(dir, 's.pem')) }, handler);
const pPort = await listen(plain);
const tPort = await listen(tls);

const engine = await startEngine({
  extraYaml: `  - name: iii-http-functions
    config: { security: { url_allowlist: ['*'], block_private_ips: false, require_https: false } }`,
});
const ticks = () => {
  const f = fs.readFileSync(`/proc/${engine.proc.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]);
};
const hz = Number(execFileSync('getconf', ['CLK_TCK']).toString());
const owner = newWorker(engine.url, 'owner');
owner.registerFunction('b::http', { url: `http://127.0.0.1:${pPort}/echo` });
owner.registerFunction('b::https', { url: `https://localhost:${tPort}/echo` });
owner.registerFunction('b::ws', async (d) => d);
const caller = newWorker(engine.url, 'caller');
await waitForFunctions(caller, ['b::http', 'b::https', 'b::ws']);

const payload = { order: 42, items: ['a', 'b', 'c'], note: 'x'.repeat(200) };
for (const fid of ['b::ws', 'b::http', 'b::https']) {
  for (let i = 0; i < 200; i++) await caller.trigger({ function_id: fid, payload }); // warm-up
  const t0 = ticks();
  const w0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) await caller.trigger({ function_id: fid, payload });
  const wall = Number(process.hrtime.bigint() - w0) / 1e6;
  const cpuUs = ((ticks() - t0) / hz) * 1e6;
  console.log(`${fid.padEnd(8)} ${N} calls: engine CPU ${(cpuUs / N).toFixed(1)} us/call, wall ${(wall * 1000 / N).toFixed(0)} us/call (loaded machine)`);
}
await owner.shutdown();
await caller.shutdown();
await engine.stop();
engine.cleanup();
plain.close();
tls.close();
fs.rmSync(dir, { recursive: true, force: true });
process.exit(0);
