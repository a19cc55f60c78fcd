import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent } from 'undici';
import { FanoutError } from '../core/errors.js';
import type { Member, PageRef } from '../core/types.js';
import { FRAME_KIND, batchRequestSchema, endFrame, errorFrame, frameHead } from '../lib/wire/index.js';
import { BatchPageReader } from './batchreader.js';

/** The bytes of the page of a file named "fN": N repeated, N+1 bytes long. */
const bytesOf = (ref: PageRef) => Buffer.alloc(ref.size, Number(ref.path.slice(1)) % 256);
const refOf = (n: number): PageRef => ({ mount: 'm', path: `f${n}`, version: 'v', size: n + 1, index: 0 });

/** A tiny worker speaking only POST /v1/pages, answering items in reverse order after `delayMs`. */
describe('the SDK batch reader', () => {
  let server: Server;
  let member: Member;
  const dispatcher = new Agent();
  const seen = { batches: [] as number[], inflight: 0, maxInflight: 0 };

  before(async () => {
    server = createServer((req, res) => {
      const body: Buffer[] = [];
      req.on('data', (c: Buffer) => body.push(c));
      req.on('end', () => {
        const { items } = batchRequestSchema.parse(JSON.parse(Buffer.concat(body).toString()));
        seen.batches.push(items.length);
        seen.maxInflight = Math.max(seen.maxInflight, ++seen.inflight);
        setTimeout(() => {
          seen.inflight--;
          res.writeHead(200);
          items.forEach((ref, i) => {
            const at = items.length - 1 - i;
            const item = items[at]!;
            if (item.path === 'f13') res.write(Buffer.concat(errorFrame(at, new FanoutError('NOT_FOUND', 'no f13'))));
            else {
              const data = bytesOf(item);
              res.write(Buffer.concat([frameHead(at, FRAME_KIND.page, data), data]));
            }
          });
          res.end(endFrame(items.length));
        }, 20);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    member = { id: 'w', url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, capacity: 1 };
  });

  after(async () => {
    await dispatcher.close();
    await new Promise((resolve) => server.close(resolve));
  });

  const reader = (fallback: (ref: PageRef) => Promise<Buffer[]> = () => Promise.reject(new Error('no fallback expected'))) =>
    new BatchPageReader({ pageSize: 1 << 20, owners: () => [member], headers: () => ({}), dispatcher: () => dispatcher, fallback, maxItems: 16, batchesPerWorker: 2 });

  test('many pages asked for at once leave in bounded batches, a bounded number at a time, and each gets its own bytes', async () => {
    seen.batches = [];
    seen.maxInflight = 0;
    const r = reader();
    const refs = Array.from({ length: 100 }, (_, i) => refOf(i)).filter((ref) => ref.path !== 'f13');
    const pages = await Promise.all(refs.map((ref) => r.fetchPage(ref)));
    pages.forEach((page, i) => assert.ok(Buffer.concat(page).equals(bytesOf(refs[i]!))));
    assert.ok(seen.batches.every((n) => n <= 16), `batch sizes ${seen.batches.join(',')}`);
    assert.equal(
      seen.batches.reduce((s, n) => s + n, 0),
      refs.length,
    );
    assert.ok(seen.maxInflight <= 2, `at most 2 batches in flight, saw ${seen.maxInflight}`);
    assert.deepEqual(r.stats(), { batches: seen.batches.length, batched: refs.length, fallbacks: 0 });
  });

  test('an item the worker answers NOT_FOUND fails alone, without a per-page retry', async () => {
    let fallbacks = 0;
    const r = reader(() => (fallbacks++, Promise.reject(new Error('unexpected'))));
    const results = await Promise.allSettled([12, 13, 14].map((n) => r.fetchPage(refOf(n))));
    assert.equal(results[0]!.status, 'fulfilled');
    assert.ok(results[1]!.status === 'rejected' && (results[1]!.reason as FanoutError).code === 'NOT_FOUND');
    assert.equal(results[2]!.status, 'fulfilled');
    assert.equal(fallbacks, 0);
  });

  test('a caller that aborts is answered at once; the pages of the others still arrive', async () => {
    const r = reader();
    const stop = new AbortController();
    const left = r.fetchPage(refOf(40), stop.signal);
    const stays = r.fetchPage(refOf(41));
    stop.abort();
    await assert.rejects(left, { code: 'ABORTED' });
    assert.ok(Buffer.concat(await stays).equals(bytesOf(refOf(41))));
  });

  test('pages too big for a batch go by the per-page path', async () => {
    const big: PageRef = { mount: 'm', path: 'f1', version: 'v', size: 2 << 20, index: 0 };
    const r = new BatchPageReader({ pageSize: 4 << 20, owners: () => [member], headers: () => ({}), dispatcher: () => dispatcher, fallback: async () => [Buffer.from('per-page')] });
    assert.equal(Buffer.concat(await r.fetchPage(big)).toString(), 'per-page');
    assert.equal(r.stats().batches, 0);
  });
});
