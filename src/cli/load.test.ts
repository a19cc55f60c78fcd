import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PageRef } from '../core/types.js';
import { adminTimeoutMs, batchBytes, batchesOf, loadDeadlineMs } from './load.js';

const KiB = 1024;
const MiB = 1024 * KiB;

function fileOf(size: number, pageSize: number): PageRef[] {
  return Array.from({ length: Math.ceil(size / pageSize) }, (_, index) => ({ mount: 'd4', path: 'big.bin', version: 'v', size, index }));
}

function plan(size: number, pageSize: number, rate: number) {
  return batchesOf(fileOf(size, pageSize), pageSize, batchBytes(pageSize, rate)).map((batch) => {
    const bytes = batch.reduce((sum, ref) => sum + Math.min(pageSize, ref.size - ref.index * pageSize), 0);
    return { pages: batch.length, bytes, deadlineMs: loadDeadlineMs(bytes, rate) };
  });
}

test('a paced load call never holds more bytes than its deadline lets the rate bring', () => {
  // The field case: 64 MiB of 4 MiB pages at 64 KiB/s took one 16-page call past its 600 s deadline.
  for (const pageSize of [1 * MiB, 4 * MiB, 64 * MiB]) {
    for (const rate of [64 * KiB, 100_000, 1 * MiB, 200 * MiB]) {
      const batches = plan(64 * MiB, pageSize, rate);
      assert.equal(batches.reduce((sum, b) => sum + b.pages, 0), Math.ceil((64 * MiB) / pageSize), 'every page is in one batch');
      for (const b of batches) {
        const secondsAtRate = b.bytes / rate;
        assert.ok(secondsAtRate * 1000 * 1.5 <= b.deadlineMs, `${b.bytes} B at ${rate} B/s (${secondsAtRate} s) against ${b.deadlineMs} ms`);
      }
    }
  }
});

test('a paced load call is about a minute of work, one page at least; unpaced calls keep 16 pages', () => {
  assert.deepEqual(plan(64 * MiB, 4 * MiB, 64 * KiB).map((b) => b.pages), Array(16).fill(1));
  assert.deepEqual(plan(64 * MiB, 1 * MiB, 1 * MiB).map((b) => b.pages), [16, 16, 16, 16]);
  assert.deepEqual(plan(64 * MiB, 1 * MiB, 256 * KiB).map((b) => b.pages), Array(4).fill(15).concat([4]));
  assert.deepEqual(plan(64 * MiB, 4 * MiB, 0).map((b) => b.pages), [16]);
  assert.equal(loadDeadlineMs(64 * MiB, 0), 600_000, 'unpaced: the usual deadline');
  assert.equal(loadDeadlineMs(64 * MiB, 64 * KiB), 2048_000, 'one 64 MiB page at 64 KiB/s: twice its 1024 s');
});

test('--admin-timeout takes the config duration syntax; absent leaves the defaults; 0 and nonsense are refused', () => {
  assert.equal(adminTimeoutMs({}), undefined);
  assert.equal(adminTimeoutMs({ adminTimeout: '5s' }), 5000);
  assert.equal(adminTimeoutMs({ adminTimeout: '250ms' }), 250);
  assert.equal(adminTimeoutMs({ adminTimeout: '2m' }), 120_000);
  assert.throws(() => adminTimeoutMs({ adminTimeout: '0' }), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && /more than 0/.test(e.message));
  assert.throws(() => adminTimeoutMs({ adminTimeout: 'soon' }), (e: Error & { code?: string }) => e.code === 'INVALID_ARGUMENT' && /--admin-timeout: invalid duration "soon"/.test(e.message));
  assert.throws(() => adminTimeoutMs({ adminTimeout: '30d' }), /invalid duration/);
  assert.throws(() => adminTimeoutMs({ adminTimeout: '999h' }), /about 24 days/);
});

test('--admin-timeout replaces a load call\'s usual 10 min; a paced call still gets twice its bytes at the rate', () => {
  assert.equal(loadDeadlineMs(16 * MiB, 0, 5000), 5000);
  assert.equal(loadDeadlineMs(MiB, 200 * MiB, 5000), 5000);
  assert.equal(loadDeadlineMs(4 * MiB, 64 * KiB, 5000), 128_000);
  assert.equal(loadDeadlineMs(16 * MiB, 0), 600_000);
});
