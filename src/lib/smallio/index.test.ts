import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { smallIo } from './index.js';

/** The jobs of one turn leave together, several to a pool thread: each still gets its own answer. */
describe('smallio, jobs of one turn run together', { skip: smallIo() ? false : 'the small-file addon is not built' }, () => {
  const io = smallIo()!;
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-smallio-'));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('many writes and reads asked for in one turn: each file gets its own bytes, each read its own file', async () => {
    const contents = Array.from({ length: 37 }, (_, i) => randomBytes(1000 + i * 97));
    const mtimes = await Promise.all(contents.map((data, i) => io.writeNew(join(dir, `w${i}.tmp`), join(dir, `w${i}`), data)));
    for (const [i, data] of contents.entries()) {
      const info = await stat(join(dir, `w${i}`));
      assert.deepEqual(await readFile(join(dir, `w${i}`)), data);
      assert.equal(mtimes[i], info.mtimeMs);
    }
    assert.ok((await readdir(dir)).every((name) => !name.endsWith('.tmp')), 'no temporary name left');
    const buffers = contents.map((data) => Buffer.alloc(data.length + 10));
    const counts = await Promise.all(buffers.map((into, i) => io.readFile(join(dir, `w${i}`), into)));
    for (const [i, data] of contents.entries()) {
      assert.equal(counts[i], data.length);
      assert.deepEqual(buffers[i]!.subarray(0, data.length), data);
    }
  });

  test('a job that fails in the middle of a turn fails alone, with its errno', async () => {
    const data = randomBytes(4096);
    const results = await Promise.allSettled([
      io.writeNew(join(dir, 'a.tmp'), join(dir, 'a'), data),
      io.writeNew(join(dir, 'missing', 'b.tmp'), join(dir, 'missing', 'b'), data),
      io.readFile(join(dir, 'nothing-here'), Buffer.alloc(10)),
      io.writeNew(join(dir, 'c.tmp'), join(dir, 'c'), data),
    ]);
    assert.deepEqual(
      results.map((r) => (r.status === 'fulfilled' ? 'ok' : (r.reason as NodeJS.ErrnoException).code)),
      ['ok', 'ENOENT', 'ENOENT', 'ok'],
    );
    assert.deepEqual(await readFile(join(dir, 'a')), data);
    assert.deepEqual(await readFile(join(dir, 'c')), data);
  });

  test('a read asked to hash gives the SHA-256 of exactly the bytes it read; a failed one gives none', async () => {
    const data = randomBytes(65536 + 123);
    await io.writeNew(join(dir, 'h.tmp'), join(dir, 'h'), data);
    const info = await stat(join(dir, 'h'));
    const expected = { size: info.size, mtimeMs: info.mtimeMs };
    const into = Buffer.alloc(40000);
    const result = await io.readInside(join(dir, 'h'), dir, 1000, into, expected, { sha256: true });
    assert.equal(result.code, 0);
    assert.deepEqual(into, data.subarray(1000, 41000));
    assert.equal('sha256' in result && result.sha256, createHash('sha256').update(data.subarray(1000, 41000)).digest('hex'));
    const plain = await io.readInside(join(dir, 'h'), dir, 0, Buffer.alloc(10), expected);
    assert.equal('sha256' in plain ? plain.sha256 : undefined, undefined, 'not asked, not hashed');
    const moved = await io.readInside(join(dir, 'h'), dir, 0, Buffer.alloc(10), { size: info.size + 1, mtimeMs: info.mtimeMs }, { sha256: true });
    assert.notEqual(moved.code, 0);
    assert.equal('sha256' in moved ? moved.sha256 : undefined, undefined);
  });

  test('jobs asked for in later turns, one by one, are run too', async () => {
    for (let i = 0; i < 5; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      const into = Buffer.alloc(8);
      assert.equal(await io.readFile(join(dir, 'a'), into), 8);
    }
  });
});
