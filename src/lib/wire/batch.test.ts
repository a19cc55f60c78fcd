import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FanoutError } from '../../core/errors.js';
import { BATCH_LIMITS, FRAME_HEAD, FRAME_KIND, FrameReader, endFrame, errorFrame, frameHead, type BatchFrame } from './batch.js';
import { batchRequestSchema } from './schemas.js';

type Item = { kind: 'page'; data: Buffer } | { kind: 'error'; code: 'NOT_FOUND' | 'SOURCE_CHANGED' | 'OVERLOADED' };

/** The bytes a worker sends for these items, answered in `order`. */
function encode(items: Item[], order: number[]): Buffer {
  const parts: Buffer[] = [];
  for (const i of order) {
    const item = items[i]!;
    if (item.kind === 'page') parts.push(frameHead(i, FRAME_KIND.page, item.data), item.data);
    else parts.push(...errorFrame(i, new FanoutError(item.code, `item ${i}`)));
  }
  parts.push(endFrame(items.length));
  return Buffer.concat(parts);
}

/** Feeds the bytes cut at the given points; returns the frames and whether the answer completed. */
function decode(items: number, bytes: Buffer, cuts: number[]): { frames: BatchFrame[]; complete: boolean } {
  const reader = new FrameReader(items);
  const frames: BatchFrame[] = [];
  let at = 0;
  for (const cut of [...cuts.filter((c) => c > 0 && c < bytes.length)].sort((a, b) => a - b).concat(bytes.length)) {
    frames.push(...reader.push(bytes.subarray(at, cut)));
    at = cut;
  }
  return { frames, complete: reader.complete };
}

const itemArb: fc.Arbitrary<Item> = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map((a) => ({ kind: 'page' as const, data: Buffer.from(a) })),
  fc.constantFrom('NOT_FOUND' as const, 'SOURCE_CHANGED' as const, 'OVERLOADED' as const).map((code) => ({ kind: 'error' as const, code })),
);

const malformed = (err: unknown) => err instanceof FanoutError && err.code === 'WORKER_UNAVAILABLE' && /malformed batch response/.test(err.message);

describe('batch page frames', () => {
  test('every page and error comes back whole, in any order and however the stream is cut', () => {
    fc.assert(
      fc.property(
        fc.array(itemArb, { minLength: 1, maxLength: 20 }).chain((items) =>
          fc.tuple(fc.constant(items), fc.shuffledSubarray([...items.keys()], { minLength: items.length, maxLength: items.length }), fc.array(fc.nat(8000), { maxLength: 12 })),
        ),
        ([items, order, cuts]) => {
          const { frames, complete } = decode(items.length, encode(items, order), cuts);
          assert.ok(complete);
          assert.deepEqual(
            frames.map((f) => f.index),
            order,
          );
          for (const frame of frames) {
            const item = items[frame.index]!;
            if (item.kind === 'page') {
              assert.equal(frame.kind, 'page');
              assert.ok(frame.kind === 'page' && frame.data.equals(item.data));
            } else {
              assert.ok(frame.kind === 'error' && frame.error.code === item.code);
            }
          }
        },
      ),
    );
  });

  test('an answer cut anywhere before its end frame is never complete', () => {
    fc.assert(
      fc.property(fc.array(itemArb, { minLength: 1, maxLength: 8 }), fc.nat(), (items, at) => {
        const bytes = encode(
          items,
          items.map((_, i) => i),
        );
        const cut = at % bytes.length;
        const reader = new FrameReader(items.length);
        reader.push(bytes.subarray(0, cut));
        assert.equal(reader.complete, false);
      }),
    );
  });

  test('a page whose bytes changed on the way fails its checksum alone; the others arrive', () => {
    const items: Item[] = [
      { kind: 'page', data: Buffer.alloc(100, 1) },
      { kind: 'page', data: Buffer.alloc(100, 2) },
      { kind: 'page', data: Buffer.alloc(100, 3) },
    ];
    const bytes = encode(items, [0, 1, 2]);
    bytes[FRAME_HEAD + 100 + FRAME_HEAD + 50]! ^= 0xff; // inside item 1's payload
    const { frames, complete } = decode(3, bytes, []);
    assert.ok(complete);
    assert.deepEqual(
      frames.map((f) => (f.kind === 'page' ? 'page' : f.error.code)),
      ['page', 'CHECKSUM_MISMATCH', 'page'],
    );
  });

  test('hostile frame heads are refused before any payload is kept', () => {
    const bad = (mutate: (head: Buffer) => void, items = 2) => {
      const head = frameHead(0, FRAME_KIND.page, Buffer.alloc(10));
      mutate(head);
      return () => new FrameReader(items).push(head);
    };
    assert.throws(bad((h) => h.writeUInt32BE(2, 0)), malformed, 'an index outside the request');
    assert.throws(bad((h) => h.writeUInt8(7, 4)), malformed, 'an unknown kind');
    assert.throws(bad((h) => h.writeUInt8(1, 6)), malformed, 'non-zero padding');
    assert.throws(bad((h) => h.writeUInt32BE(BATCH_LIMITS.maxItemBytes + 1, 8)), malformed, 'a page over the item limit');
    assert.throws(bad((h) => (h.writeUInt8(FRAME_KIND.error, 4), h.writeUInt32BE(BATCH_LIMITS.maxErrorBytes + 1, 8))), malformed, 'an error over its limit');
    // The same item twice, an early end frame, bytes after the end.
    const page = Buffer.alloc(4);
    const twice = Buffer.concat([frameHead(0, FRAME_KIND.page, page), page, frameHead(0, FRAME_KIND.page, page), page]);
    assert.throws(() => new FrameReader(2).push(twice), malformed);
    assert.throws(() => new FrameReader(2).push(Buffer.concat([frameHead(0, FRAME_KIND.page, page), page, endFrame(2)])), malformed);
    assert.throws(() => new FrameReader(1).push(Buffer.concat([frameHead(0, FRAME_KIND.page, page), page, endFrame(1), Buffer.alloc(1)])), malformed);
  });

  test('random bytes never crash the reader: they are frames, or a malformed answer', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.integer({ min: 1, max: 4 }), (bytes, items) => {
        try {
          new FrameReader(items).push(Buffer.from(bytes));
        } catch (err) {
          assert.ok(malformed(err), String(err));
        }
      }),
    );
  });

  test('an error frame with an unknown code or broken JSON becomes INTERNAL, not a crash', () => {
    const payload = Buffer.from('{"code":"NO_SUCH_CODE","message":"x"}');
    const junk = Buffer.from('not json');
    const bytes = Buffer.concat([frameHead(0, FRAME_KIND.error, payload), payload, frameHead(1, FRAME_KIND.error, junk), junk, endFrame(2)]);
    const { frames } = decode(2, bytes, [3, 20]);
    assert.deepEqual(
      frames.map((f) => f.kind === 'error' && f.error.code),
      ['INTERNAL', 'INTERNAL'],
    );
  });

  test('a request lists 1 to maxItems pages', () => {
    const ref = { mount: 'data', path: 'a', version: 'v', size: 1, index: 0 };
    assert.ok(batchRequestSchema.safeParse({ items: [ref] }).success);
    assert.ok(!batchRequestSchema.safeParse({ items: [] }).success);
    assert.ok(!batchRequestSchema.safeParse({ items: Array(BATCH_LIMITS.maxItems + 1).fill(ref) }).success);
  });
});

test('a page that arrives in several chunks is handed on as views of them, checked across them', () => {
  const page = Buffer.from(Array.from({ length: 200 }, (_, i) => i));
  const bytes = encode([{ kind: 'page', data: page }], [0]);
  const cut = FRAME_HEAD + 70;
  const first = bytes.subarray(0, cut);
  const second = Buffer.from(bytes.subarray(cut));
  const reader = new FrameReader(1);
  const frames = [...reader.push(first), ...reader.push(second)];
  const frame = frames.at(-1)!;
  assert.ok(frame.kind === 'page');
  assert.equal(frame.chunks.length, 2);
  assert.equal(frame.chunks[1]!.buffer, second.buffer, 'a view of the chunk received, not a copy');
  assert.ok(Buffer.concat(frame.chunks).equals(page) && frame.data.equals(page));

  second[5] = second[5]! ^ 1;
  const corrupt = new FrameReader(1);
  const got = [...corrupt.push(first), ...corrupt.push(second)];
  assert.ok(got[0]!.kind === 'error' && got[0]!.error.code === 'CHECKSUM_MISMATCH');
});
