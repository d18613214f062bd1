// iii-exec through the real engine: a pipeline of shell commands run in order, a failing step
// stopping it, a watched file change restarting it (old process groups killed), and no process
// (command or grandchild in its group) outliving the engine, neither after SIGTERM nor after kill -9.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { configYaml, startEngine, waitFor } from './harness.mjs';

/** True while `pid` exists and is not a zombie. */
function alive(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function execConfig(commands, watch = []) {
  const q = (s) => JSON.stringify(s);
  let y = '  - name: iii-exec\n    config:\n      exec:\n';
  for (const c of commands) y += `        - ${q(c)}\n`;
  if (watch.length) {
    y += '      watch:\n';
    for (const w of watch) y += `        - ${q(w)}\n`;
  }
  return configYaml({ extraYaml: y });
}

function tempProject() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iii-exec-'));
  fs.mkdirSync(path.join(dir, 'watched', 'deep'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'watched', 'deep', 'a.txt'), 'v1\n');
  // The last step: a shell with a background grandchild in its process group; it records
  // both pids in pids.<run number>.
  fs.writeFileSync(path.join(dir, 'last.sh'), [
    'n=$(wc -l < runs.log | tr -d " ")',
    'sleep 300 &',
    'echo "$$ $!" > "pids.$n.tmp" && mv "pids.$n.tmp" "pids.$n"',
    'wait',
    '',
  ].join('\n'));
  return dir;
}

async function readPids(dir, run) {
  const file = path.join(dir, `pids.${run}`);
  await waitFor(() => fs.existsSync(file), { timeoutMs: 10000, what: `${file} (run ${run} started)` });
  const pids = fs.readFileSync(file, 'utf8').trim().split(/\s+/).map(Number);
  assert.equal(pids.length, 2, `two pids in ${file}`);
  return pids;
}

test('exec: pipeline in order, restart on a watched change, nothing survives kill -9', { timeout: 30000 }, async () => {
  const dir = tempProject();
  const engine = await startEngine({
    dir,
    configText: execConfig(['echo run >> runs.log', 'sh ./last.sh'], ['watched/**/*.txt']),
  });
  try {
    const [sh1, gc1] = await readPids(dir, 1);
    assert.ok(alive(sh1) && alive(gc1), 'the last command and its background child run');
    assert.notEqual(sh1, process.pid);

    // A file no pattern matches, then a matching one: the restart names the matching one.
    fs.writeFileSync(path.join(dir, 'watched', 'notes.md'), 'ignored\n');
    fs.writeFileSync(path.join(dir, 'watched', 'deep', 'a.txt'), 'v2\n');
    const [sh2, gc2] = await readPids(dir, 2);
    assert.notEqual(sh2, sh1);
    await waitFor(() => !alive(sh1) && !alive(gc1), { timeoutMs: 3000, what: 'run 1 processes to be gone' });
    await waitFor(() => engine.lines.some((l) => /changed; restarting the pipeline/.test(l)),
      { what: 'the restart to be logged' });
    const restarts = engine.lines.filter((l) => /changed; restarting the pipeline/.test(l));
    assert.equal(restarts.length, 1, `one restart:\n${restarts.join('\n')}`);
    assert.match(restarts[0], /watched\/deep\/a\.txt/);
    assert.equal(fs.readFileSync(path.join(dir, 'runs.log'), 'utf8'), 'run\nrun\n', 'first step ran once per run');
    assert.ok(alive(sh2) && alive(gc2));

    engine.proc.kill('SIGKILL');
    await engine.exited;
    await waitFor(() => !alive(sh2) && !alive(gc2), {
      timeoutMs: 3000, what: `pipeline processes ${sh2}, ${gc2} to die with the engine`,
    });
  } finally {
    engine.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('exec: a failing step stops the pipeline; SIGTERM ends the running group and the engine exits 0', { timeout: 30000 }, async () => {
  const dir = tempProject();
  const engine = await startEngine({ dir, configText: execConfig(['echo run >> runs.log', 'sh ./last.sh']) });
  try {
    const [sh, gc] = await readPids(dir, 1);
    const res = await engine.stop();
    assert.equal(res.code, 0);
    assert.ok(!alive(sh) && !alive(gc), 'SIGTERM to the engine ends the pipeline processes');
  } finally {
    engine.kill();
  }

  const failing = await startEngine({
    dir,
    configText: execConfig(['exit 3', 'touch should-not-exist']),
  });
  try {
    await waitFor(() => failing.lines.some((l) => /'exit 3' failed \(exit code 3\); pipeline stopped/.test(l)),
      { what: 'the failure to be logged' });
    assert.ok(!fs.existsSync(path.join(dir, 'should-not-exist')), 'the step after a failure never runs');
    assert.ok(failing.alive(), 'a failed pipeline does not stop the engine');
    await failing.stop();
  } finally {
    failing.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('exec: config errors name the file and line', { timeout: 30000 }, async () => {
  for (const [extra, want] of [
    ['  - name: iii-exec\n    config:\n      watch: ["a/**"]\n', /key 'exec' is required/],
    ['  - name: iii-exec\n    config:\n      exec: "npm start"\n', /key 'exec' must be a list of strings/],
    ['  - name: iii-exec\n    config:\n      exec: ["true"]\n      watch: ["a/{b"]\n', /unbalanced/],
    ['  - name: iii-exec\n    config:\n      exec: ["true"]\n      wacth: ["a"]\n', /unknown key 'wacth'/],
  ]) {
    const e = await startEngine({ configText: configYaml({ extraYaml: extra }) }).then(
      () => null, (err) => err);
    assert.ok(e, `engine must refuse:\n${extra}`);
    assert.match(e.message, want);
    assert.match(e.message, /config\.yaml:\d+: worker 'iii-exec'/);
  }
});

test('exec: a command that ignores SIGTERM is SIGKILLed 3 s into the shutdown; the engine still exits 0', { timeout: 30000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iii-exec-'));
  // The command's own shell ignores SIGTERM (and so does its background child).
  const stubborn = 'trap "" TERM; sleep 300 & echo "$$ $!" > pids.tmp && mv pids.tmp pids.1; while :; do wait; done';
  const engine = await startEngine({ dir, configText: execConfig([stubborn]) });
  try {
    const [sh, gc] = await readPids(dir, 1);
    const res = await engine.stop();
    assert.equal(res.code, 0);
    assert.ok(res.durationMs >= 2800 && res.durationMs < 5000, `shutdown took ${res.durationMs} ms (3 s grace)`);
    assert.ok(!alive(sh) && !alive(gc), 'SIGKILL after the grace period ends them');
  } finally {
    engine.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
