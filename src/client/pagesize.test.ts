import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutError, isFanoutError } from '../core/errors.js';
import type { FileInfo } from '../core/types.js';
import { FollowedPageSize, followingPages } from './pagesize.js';

const data = Buffer.from(Array.from({ length: 100 }, (_, i) => i));
const file: FileInfo = { path: 'f.bin', size: data.length, mtimeMs: 0, version: 'v1' };
const refusal = (own: number, asked: number) => new FanoutError('PAGE_SIZE_MISMATCH', `this worker's pages are ${own} bytes, the request counts pages of ${asked}`);

/** Workers of page size `workers`: a reader of another size is refused at its `refusedAt`-th page; `answers`: the cluster's page size, asked in turn. */
function cluster(sizes: { workers: number; answers: number[]; refusedAt?: number }) {
  const reads: { pageSize: number; start: number }[] = [];
  const changes: [number, number][] = [];
  const size = new FollowedPageSize(10, {
    clusterPageSize: async () => sizes.answers.shift(),
    changed: (from, to) => void changes.push([from, to]),
  });
  const readerOf = (pageSize: number) => ({
    async *pages(_mount: string, _file: FileInfo, start: number, end: number): AsyncGenerator<Buffer[]> {
      reads.push({ pageSize, start });
      let served = 0;
      for (let at = start; at < end; ) {
        if (pageSize !== sizes.workers && served === (sizes.refusedAt ?? 0)) throw refusal(sizes.workers, pageSize);
        const next = Math.min(end, (Math.floor(at / pageSize) + 1) * pageSize);
        yield [data.subarray(at, next)];
        served++;
        at = next;
      }
    },
  });
  return { size, readerOf, reads, changes };
}

async function read(c: ReturnType<typeof cluster>, start: number, end: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const page of followingPages(c.size, c.readerOf, 'data', file, start, end)) parts.push(...page);
  return Buffer.concat(parts);
}

test('a read refused half-way once the cluster’s page size changed goes on from its byte in the new size', async () => {
  const c = cluster({ workers: 25, answers: [25], refusedAt: 3 });
  assert.deepEqual(await read(c, 5, 97), data.subarray(5, 97));
  // Pages [5,10) [10,20) [20,30) of 10, then from byte 30 in pages of 25: no byte twice, none skipped.
  assert.deepEqual(c.reads, [{ pageSize: 10, start: 5 }, { pageSize: 25, start: 30 }]);
  assert.deepEqual(c.changes, [[10, 25]]);
  assert.equal(c.size.pageSize, 25);
});

test('a refusal while the cluster still gives the read’s size, asked again, fails the read with the worker’s words', async () => {
  const c = cluster({ workers: 25, answers: [10, 10] });
  await assert.rejects(read(c, 0, 100), (err) => isFanoutError(err, 'PAGE_SIZE_MISMATCH') && /pages are 25/.test((err as Error).message));
  assert.deepEqual(c.changes, []);
  assert.equal(c.size.pageSize, 10);
});

test('other failures are not looked into', async () => {
  const size = new FollowedPageSize(10, { clusterPageSize: async () => assert.fail('not asked'), changed: () => assert.fail('no change') });
  const failing = () => ({
    async *pages(): AsyncGenerator<Buffer[]> {
      throw new FanoutError('WORKER_UNAVAILABLE', 'down');
    },
  });
  await assert.rejects(followingPages(size, failing, 'data', file, 0, 100).next(), (err) => isFanoutError(err, 'WORKER_UNAVAILABLE'));
});
