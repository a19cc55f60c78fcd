import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../harness/ports.js';
import { fanoutBin, WorkerProcess } from '../harness/workers.js';

/**
 * `fanout cp` stopped by Ctrl-C or SIGTERM part-way: the temporary file beside the target goes
 * (it was left for good: its name carries the pid), and the process still ends by the signal.
 */
describe('fanout cp interrupted', () => {
  let source: string;
  let dest: string;
  let worker: WorkerProcess;

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-cpint-src-'));
    dest = await mkdtemp(join(tmpdir(), 'fanout-cpint-dst-'));
    await writeFile(join(source, 'big.bin'), randomBytes(24 * 1024 * 1024));
    // A slow source: the copy is still running when the signal comes.
    worker = await WorkerProcess.start({ id: 'cpint', mounts: { data: source }, pageSize: '1MiB', sourceRate: '2MB/s' });
  });

  after(async () => {
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
    await rm(dest, { recursive: true, force: true });
  });

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    test(`${signal} part-way leaves no temporary file and ends the process by ${signal}`, async () => {
      const target = join(dest, `copy-${signal}.bin`);
      const proc = spawn(process.execPath, [fanoutBin, 'cp', '/data/big.bin', target, '--endpoint', worker.url, '--no-progress'], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      proc.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, sig) => resolve({ code, signal: sig })));
      await waitFor('the copy to write its temporary file', async () => (await readdir(dest)).some((name) => name.includes(`copy-${signal}.bin`) && name.endsWith('.tmp')), 60_000);
      proc.kill(signal);
      const end = await ended;
      assert.equal(end.signal, signal, `exit ${end.code}: ${stderr}`);
      assert.deepEqual((await readdir(dest)).filter((name) => name.includes(`copy-${signal}.bin`)), []);
    });
  }
});
