import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { FanoutClient } from '../client/index.js';
import { FanoutError } from '../core/errors.js';
import { ReleaseFetcher } from './fetch.js';
import { manifestOf } from './manifest.testkit.js';

/**
 * A client whose session's answer gives `pageSize` until asked afresh, which gives `freshPageSize`
 * (the workers restarted with another pageSize since): every page asked for by hash is refused
 * for its size, as every worker of the new size refuses it. Byte reads give `data`.
 */
function fakeClient(data: Buffer, pageSize: number, freshPageSize: number) {
  const calls = { byHash: 0, byRange: [] as [number, number][], fresh: 0 };
  let answer = { pageSize };
  const reader = {
    fetchPage: async () => {
      calls.byHash++;
      throw new FanoutError('PAGE_SIZE_MISMATCH', `this worker's pages are ${freshPageSize} bytes, the request counts pages of ${pageSize}`);
    },
  };
  const client = {
    session: { wantConnections() {}, reader: () => reader, batchReader: () => reader },
    async cluster(force = false) {
      if (force) {
        calls.fresh++;
        answer = { pageSize: freshPageSize };
      }
      return answer;
    },
    async *readPages(_file: unknown, opts: { start: number; end: number }) {
      calls.byRange.push([opts.start, opts.end]);
      yield [data.subarray(opts.start, opts.end)];
    },
  };
  return { client: client as unknown as FanoutClient, calls };
}

test('a page refused for its size while the session still gave the manifest\'s is read by range once the cluster\'s size is another', async () => {
  const data = randomBytes(3 * 4096 + 10);
  const manifest = manifestOf({ 'a.bin': data }, 'v1', 4096);
  const file = manifest.files[0]!;
  const { client, calls } = fakeClient(data, 4096, 8192);
  const fetcher = new ReleaseFetcher(client);
  // Before, the refusal ended the page (and the round that staged it): PAGE_SIZE_MISMATCH.
  assert.ok((await fetcher.page(manifest, file, 1)).equals(data.subarray(4096, 8192)));
  assert.deepEqual(calls.byRange, [[4096, 8192]]);
  assert.equal(calls.fresh, 1);
  // The next pages go by range at once: the answer asked for gave the new size.
  assert.ok((await fetcher.page(manifest, file, 3)).equals(data.subarray(3 * 4096)));
  assert.equal(calls.byHash, 1);
});

test('a page refused for its size while the cluster\'s answer, asked again, still gives the manifest\'s fails with the refusal', async () => {
  const data = randomBytes(2 * 4096);
  const manifest = manifestOf({ 'a.bin': data }, 'v1', 4096);
  // Workers of two sizes, the cluster's answer from one of the manifest's: theirs are the words.
  const { client, calls } = fakeClient(data, 4096, 4096);
  const fetcher = new ReleaseFetcher(client);
  await assert.rejects(fetcher.page(manifest, manifest.files[0]!, 0), (err: FanoutError) => err.code === 'PAGE_SIZE_MISMATCH');
  assert.deepEqual(calls.byRange, []);
});

test('bytes read by range are checked against the manifest\'s hash', async () => {
  const data = randomBytes(2 * 4096);
  const manifest = manifestOf({ 'a.bin': data }, 'v1', 4096);
  const other = Buffer.from(data);
  other[5000] ^= 1;
  const { client } = fakeClient(other, 4096, 8192);
  const fetcher = new ReleaseFetcher(client);
  await assert.rejects(fetcher.page(manifest, manifest.files[0]!, 1), (err: FanoutError) => err.code === 'HASH_MISMATCH');
});
