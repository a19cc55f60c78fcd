import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkerProcess } from '../harness/workers.js';
import { assertFailed, get, stat } from './helpers.js';

/** Errors name what the user asked for (the mount path), never the server's directory. */
describe('source error messages over a local directory', () => {
  let source: string;
  let worker: WorkerProcess;

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-msg-src-'));
    await writeFile(join(source, 'present.bin'), 'x');
    worker = await WorkerProcess.start({ id: 'messages', mounts: { data: source } });
  });
  after(async () => {
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
  });

  test('a missing file is "/data/missing.bin does not exist", without the source directory', async () => {
    for (const answer of [await stat(worker, '/data/missing.bin'), await get(`${worker.url}/v1/data/data/missing.bin`)]) {
      assertFailed(answer, 'NOT_FOUND');
      assert.equal(answer.message, '/data/missing.bin does not exist');
      assert.ok(!answer.message!.includes(source), answer.message);
    }
  });

  test('a directory read as a file names the mount path', async () => {
    const answer = await stat(worker, '/data/present.bin/below');
    assert.ok(answer.status >= 400);
    assert.ok(!answer.message!.includes(source) && !answer.message!.includes('//'), answer.message);
  });
});
