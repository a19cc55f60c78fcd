import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fanout, fanoutJson } from '../harness/cli.js';
import { WorkerProcess } from '../harness/workers.js';

/** `fanout cp` of directories and multi-page files through a real worker. */
describe('fanout cp of a tree', () => {
  let source: string;
  let work: string;
  let worker: WorkerProcess;
  const files = new Map<string, Buffer>();

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-cp-src-'));
    work = await mkdtemp(join(tmpdir(), 'fanout-cp-out-'));
    for (let i = 0; i < 120; i++) files.set(`index/d${i % 6}/part-${i}.seg`, randomBytes(1 + ((i * 7919) % 70_000)));
    files.set('index/big/model.bin', randomBytes(3 * 1024 * 1024 + 333)); // several pages
    files.set('index/empty', Buffer.alloc(0));
    for (const [path, data] of files) {
      await mkdir(join(source, path, '..'), { recursive: true });
      await writeFile(join(source, path), data);
    }
    worker = await WorkerProcess.start({ id: 'cp', mounts: { data: source }, pageSize: '1MiB' });
  });

  after(async () => {
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  test('copies every file of a directory with its exact bytes, into DEST/NAME when DEST is a directory', async () => {
    const report = await fanoutJson<{ files: number; bytes: number; dest: string }>(['cp', '/data/index/', work, '--endpoint', worker.url]);
    const total = [...files.values()].reduce((s, d) => s + d.length, 0);
    assert.equal(report.files, files.size);
    assert.equal(report.bytes, total);
    assert.equal(report.dest, join(work, 'index'));
    for (const [path, data] of files) assert.deepEqual(await readFile(join(work, path)), data, path);
    const names = (await readdir(join(work, 'index'), { recursive: true })) as string[];
    assert.deepEqual(names.filter((n) => n.includes('.fanout-')), [], 'no temporary files left');
  });

  test('copies a directory to a new name, and a multi-page file page by page', async () => {
    const copy = join(work, 'renamed');
    const result = await fanout(['cp', '/data/index/big', copy, '--endpoint', worker.url]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(await readFile(join(copy, 'model.bin')), files.get('index/big/model.bin'));
    const single = join(work, 'model-copy.bin');
    assert.equal((await fanout(['cp', '/data/index/big/model.bin', single, '--endpoint', worker.url])).code, 0);
    assert.deepEqual(await readFile(single), files.get('index/big/model.bin'));
  });

  test('a copy into a missing parent directory fails with NOT_FOUND and writes nothing', async () => {
    const result = await fanout(['cp', '/data/index/', join(work, 'no/such/dir/x'), '--endpoint', worker.url]);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /NOT_FOUND/);
    await assert.rejects(readdir(join(work, 'no')));
  });
});
