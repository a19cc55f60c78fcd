import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { freePort, StopWaiting, waitFor } from '../harness/ports.js';
import { fanoutBin, repoRoot } from '../harness/workers.js';

const unitsDir = join(repoRoot, 'examples/systemd');
const UNITS = ['fanout-worker.service', 'fanout-sync.service'];
/** What the units' ExecStart= runs in production; the test puts this checkout's node and CLI there. */
const INSTALLED_CLI = '/usr/bin/node /opt/fanout/bin/fanout.js';

const hasAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;
const noAnalyze = hasAnalyze ? false : 'systemd-analyze is not installed (Debian package systemd): units not verified';

/** `Key=value` lines of a unit file, by key (a key may repeat). */
function directives(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (match) out.set(match[1]!, [...(out.get(match[1]!) ?? []), match[2]!]);
  }
  return out;
}

/** Copies of the units whose ExecStart runs this checkout (verify checks that the command exists). */
async function localUnits(): Promise<{ dir: string; files: string[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-units-'));
  const files: string[] = [];
  for (const unit of UNITS) {
    const text = await readFile(join(unitsDir, unit), 'utf8');
    assert.ok(text.includes(`ExecStart=${INSTALLED_CLI} `), `${unit} runs ${INSTALLED_CLI}`);
    await writeFile(join(dir, unit), text.replaceAll(INSTALLED_CLI, `${process.execPath} ${fanoutBin}`));
    files.push(join(dir, unit));
  }
  return { dir, files };
}

function analyze(args: string[]): { code: number | null; output: string } {
  const result = spawnSync('systemd-analyze', args, { encoding: 'utf8' });
  return { code: result.status, output: `${result.stdout}${result.stderr}` };
}

describe('systemd units (examples/systemd)', () => {
  test('the worker and sync agent units pass systemd-analyze verify with no warnings', { skip: noAnalyze }, async () => {
    const { dir, files } = await localUnits();
    try {
      assert.deepEqual(analyze(['verify', ...files]), { code: 0, output: '' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('both units are hardened: exposure level OK or better (systemd-analyze security)', { skip: noAnalyze }, async () => {
    const { dir, files } = await localUnits();
    try {
      for (const file of files) {
        const { output } = analyze(['security', '--offline=yes', '--no-pager', file]);
        const level = /Overall exposure level for \S+: ([\d.]+)/.exec(output);
        assert.ok(level, output.slice(-500));
        assert.ok(Number(level[1]) <= 4, `${file}: exposure ${level[1]}`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('the units restart on failure, stop gracefully, raise the file limit and write only their own paths', async () => {
    const worker = directives(await readFile(join(unitsDir, 'fanout-worker.service'), 'utf8'));
    const sync = directives(await readFile(join(unitsDir, 'fanout-sync.service'), 'utf8'));
    for (const unit of [worker, sync]) {
      assert.deepEqual(unit.get('Restart'), ['on-failure']);
      assert.deepEqual(unit.get('NoNewPrivileges'), ['yes']);
      assert.deepEqual(unit.get('ProtectSystem'), ['strict']);
      assert.deepEqual(unit.get('KillSignal'), ['SIGTERM']);
      assert.ok(Number(unit.get('LimitNOFILE')?.[0]) >= 16384);
      assert.ok(unit.get('TimeoutStopSec')?.[0]);
    }
    // The worker writes the dataDir of the example config; the agent the parent of its release dir.
    const config = parseYaml(await readFile(join(repoRoot, 'examples/worker.yaml'), 'utf8')) as { dataDir: string };
    assert.ok(worker.get('ReadWritePaths')!.join(' ').split(/\s+/).includes(config.dataDir));
    const env = await readFile(join(unitsDir, 'sync.env.example'), 'utf8');
    const releaseDir = /^FANOUT_RELEASE_DIR=(.+)$/m.exec(env)![1]!;
    assert.ok(sync.get('ReadWritePaths')!.some((p) => releaseDir.startsWith(`${p}/`)), `${releaseDir} is writable`);
  });

  test("the worker unit's ExecStart starts a worker that SIGTERM stops cleanly within TimeoutStopSec", async () => {
    const unit = directives(await readFile(join(unitsDir, 'fanout-worker.service'), 'utf8'));
    const stopSeconds = Number(/^(\d+)s$/.exec(unit.get('TimeoutStopSec')![0]!)![1]);
    // node is this test's own; the rest of the command line is the unit's, with the CLI of this checkout.
    const args = unit.get('ExecStart')![0]!.replace(INSTALLED_CLI, fanoutBin).split(/\s+/);
    const dir = await mkdtemp(join(tmpdir(), 'fanout-unit-run-'));
    await mkdir(join(dir, 'source'));
    await writeFile(join(dir, 'source/a.txt'), 'hello\n');
    const port = await freePort();
    const configFile = join(dir, 'worker.yaml');
    await writeFile(configFile, JSON.stringify({ listen: `127.0.0.1:${port}`, dataDir: join(dir, 'data'), mounts: { data: join(dir, 'source') }, logLevel: 'warn' }));
    const argv = args.map((a) => (a === '/etc/fanout/worker.yaml' ? configFile : a));
    assert.ok(argv.includes(configFile), 'ExecStart passes --config /etc/fanout/worker.yaml');
    const proc = spawn(process.execPath, argv, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, FANOUT_TOKEN: 'unit-test-admin-token-000' } });
    let stderr = '';
    proc.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    try {
      await waitFor('the worker started by ExecStart', async () => {
        if (proc.exitCode !== null) throw new StopWaiting(`the worker exited with ${proc.exitCode}: ${stderr}`);
        return (await fetch(`http://127.0.0.1:${port}/v1/data/data/a.txt`)).ok;
      });
      proc.kill('SIGTERM');
      const stopped = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), stopSeconds * 1000))]);
      assert.equal(stopped, 0, `exit code 0 before systemd would SIGKILL it; stderr: ${stderr}`);
    } finally {
      proc.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
