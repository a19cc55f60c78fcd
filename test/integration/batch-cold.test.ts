import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, stat, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PageRef } from '../../src/core/types.js';
import { sizeMtimeVersion } from '../../src/lib/ufs/util.js';
import { FrameReader, ROUTES, type BatchFrame } from '../../src/lib/wire/index.js';
import { TEST_ADMIN_TOKEN, WorkerProcess } from '../harness/workers.js';

const auth = { authorization: `Bearer ${TEST_ADMIN_TOKEN}` };

/**
 * Cold small pages of a directory source filled inside one batch, on a real worker: with the
 * small-file addon (one thread-pool job per page, no stat first) and without it (Node's fs,
 * FANOUT_NO_SMALLIO=1), each item must get what GET /v1/page would give it, and only whole pages
 * of the right version and size may be kept.
 */
for (const variant of ['small-file addon', 'fs path (FANOUT_NO_SMALLIO=1)'] as const) {
  describe(`a batch of cold small pages, ${variant}`, () => {
    let base: string;
    let source: string;
    let worker: WorkerProcess;
    const files = new Map<string, Buffer>();

    before(async () => {
      base = await mkdtemp(join(tmpdir(), 'fanout-batch-cold-'));
      source = join(base, 'src');
      await mkdir(join(source, 'idx'), { recursive: true });
      for (let i = 0; i < 24; i++) files.set(`idx/f${i}.seg`, randomBytes(1000 + i * 2731));
      for (const [path, data] of files) await writeFile(join(source, path), data);
      await writeFile(join(base, 'outside.seg'), randomBytes(100));
      await symlink(join(base, 'outside.seg'), join(source, 'idx', 'escape.seg'));
      execFileSync('mkfifo', [join(source, 'idx', 'pipe.seg')]);
      const saved = process.env.FANOUT_NO_SMALLIO;
      if (variant !== 'small-file addon') process.env.FANOUT_NO_SMALLIO = '1';
      try {
        worker = await WorkerProcess.start({ id: 'w1', mounts: { data: source }, pageSize: '1MiB' });
      } finally {
        if (saved === undefined) delete process.env.FANOUT_NO_SMALLIO;
        else process.env.FANOUT_NO_SMALLIO = saved;
      }
    });

    after(async () => {
      await worker?.destroy();
      await rm(base, { recursive: true, force: true });
    });

    /** The ref a client would build from what it saw of the file on disk. */
    const refOf = async (path: string): Promise<PageRef> => {
      const st = await stat(join(source, path));
      return { mount: 'data', path, version: sizeMtimeVersion(st.size, st.mtimeMs), size: st.size, index: 0 };
    };

    async function postBatch(refs: PageRef[]): Promise<BatchFrame[]> {
      const res = await fetch(`${worker.url}${ROUTES.pages}`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify({ items: refs }) });
      assert.equal(res.status, 200);
      const reader = new FrameReader(refs.length);
      const frames = reader.push(Buffer.from(await res.arrayBuffer()));
      assert.ok(reader.complete, 'the answer ends with its end frame');
      return frames.sort((a, b) => a.index - b.index);
    }

    const codeOf = (frame: BatchFrame | undefined) => (frame?.kind === 'error' ? frame.error.code : frame?.kind);

    test('every item gets its own answer: pages, a file changed since it was seen, one gone, a FIFO, a link out of the root, a wrong size', async () => {
      const good = [...files.keys()].slice(0, 20);
      const refs = await Promise.all(good.map(refOf));
      // Changed after the client learned its version: same size, another mtime (and other bytes).
      const changedPath = 'idx/f20.seg';
      const changedRef = await refOf(changedPath);
      const fresh = randomBytes(files.get(changedPath)!.length);
      await writeFile(join(source, changedPath), fresh);
      await utimes(join(source, changedPath), new Date(), new Date(Date.now() + 10_000));
      // Gone after the client saw it.
      const goneRef = await refOf('idx/f21.seg');
      await unlink(join(source, 'idx/f21.seg'));
      const wrongSize = { ...(await refOf('idx/f22.seg')) };
      wrongSize.size += 1;
      const outside = await stat(join(base, 'outside.seg'));
      const items: PageRef[] = [
        ...refs.slice(0, 7),
        changedRef,
        ...refs.slice(7, 13),
        goneRef,
        { mount: 'data', path: 'idx/pipe.seg', version: '10-1', size: 10, index: 0 },
        ...refs.slice(13),
        { mount: 'data', path: 'idx/escape.seg', version: sizeMtimeVersion(outside.size, outside.mtimeMs), size: outside.size, index: 0 },
        wrongSize,
      ];
      const frames = await postBatch(items);
      assert.equal(frames.length, items.length);
      const byPath = new Map(items.map((ref, i) => [ref.path, frames[i]]));
      for (const path of good) {
        const frame = byPath.get(path);
        assert.ok(frame?.kind === 'page' && frame.data.equals(files.get(path)!), `${path}: ${JSON.stringify(frame)}`);
      }
      assert.equal(codeOf(byPath.get(changedPath)), 'SOURCE_CHANGED');
      assert.equal(codeOf(byPath.get('idx/f21.seg')), 'NOT_FOUND');
      assert.equal(codeOf(byPath.get('idx/pipe.seg')), 'NOT_FOUND');
      assert.equal(codeOf(byPath.get('idx/escape.seg')), 'INVALID_PATH');
      assert.equal(codeOf(byPath.get('idx/f22.seg')), 'INVALID_ARGUMENT');

      // Nothing was kept under the stale version or the wrong size: asked again, the same refusal
      // (a stored page would be served without asking the source).
      const again = await postBatch([changedRef, wrongSize, refs[0]!]);
      assert.equal(codeOf(again[0]), 'SOURCE_CHANGED');
      assert.equal(codeOf(again[1]), 'INVALID_ARGUMENT');
      assert.ok(again[2]?.kind === 'page' && again[2].data.equals(files.get(good[0]!)!));
      // The file at its new version is read as such.
      const [now] = await postBatch([await refOf(changedPath)]);
      assert.ok(now?.kind === 'page' && now.data.equals(fresh));
    });

    test('the pages filled in a batch are stored whole and served warm with the same bytes, by batch and by /v1/page', async () => {
      const paths = [...files.keys()].slice(0, 20);
      const refs = await Promise.all(paths.map(refOf));
      const metrics = await worker.metrics();
      const frames = await postBatch(refs);
      frames.forEach((frame, i) => assert.ok(frame.kind === 'page' && frame.data.equals(files.get(paths[i]!)!), paths[i]));
      const after = await worker.metrics();
      // Filled by the previous test: every one a hit now, no source read.
      assert.equal((after.fanout_source_reads_total ?? 0) - (metrics.fanout_source_reads_total ?? 0), 0);
      for (const ref of refs.slice(0, 3)) {
        const res = await fetch(`${worker.url}/v1/page/data/${ref.path}?v=${encodeURIComponent(ref.version)}&size=${ref.size}&i=0`, { headers: auth });
        assert.equal(res.status, 200);
        assert.ok(Buffer.from(await res.arrayBuffer()).equals(files.get(ref.path)!));
      }
    });
  });
}
