import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough, Readable } from 'node:stream';
import { FanoutError } from '../../core/errors.js';
import { readAll, rejectsWith } from '../../../test/harness/streams.js';
import { sourceStream } from './stream.js';

const mapError = (err: unknown) => new FanoutError('SOURCE_ERROR', String(err));

/** The rules every adapter's read shares: deadlines, byte counts, bodies torn down without crashing. */
describe('sourceStream', () => {
  test('a source that never opens fails with SOURCE_ERROR naming the first-byte deadline', async () => {
    const stream = sourceStream({ expected: 10, what: '/m/f', mapError, firstByteMs: 20, open: () => new Promise(() => {}) });
    await assert.rejects(readAll(stream), (err: FanoutError) => err.code === 'SOURCE_ERROR' && /sourceFirstByte/.test(err.message));
  });

  test('a body that stops sending fails with SOURCE_ERROR naming the idle deadline, and is destroyed', async () => {
    const body = new PassThrough();
    body.write(Buffer.alloc(5));
    const stream = sourceStream({ expected: 10, what: '/m/f', mapError, idleMs: 30, open: async () => ({ body }) });
    await assert.rejects(readAll(stream), (err: FanoutError) => err.code === 'SOURCE_ERROR' && /sourceIdle/.test(err.message));
    assert.ok(body.destroyed);
  });

  test('a consumer that stops reading is not the source stalling', async () => {
    const data = Buffer.alloc(4 * 1024 * 1024, 7);
    const stream = sourceStream({ expected: data.length, what: '/m/f', mapError, idleMs: 30, open: async () => ({ body: Readable.from([data.subarray(0, 2 * 1024 * 1024), data.subarray(2 * 1024 * 1024)]) }) });
    const chunks: Buffer[] = [];
    for await (const chunk of stream) {
      chunks.push(chunk as Buffer);
      await new Promise((r) => setTimeout(r, 80)); // longer than idleMs, with the source waiting on us
    }
    assert.equal(Buffer.concat(chunks).length, data.length);
  });

  test('a body that errors after the stream is destroyed does not crash the process', async () => {
    const body = new PassThrough();
    const stream = sourceStream({ expected: 10, what: '/m/f', mapError, open: async () => ({ body }) });
    stream.on('error', () => {});
    stream.resume();
    await new Promise((r) => setImmediate(r));
    stream.destroy(new FanoutError('ABORTED', 'gone'));
    body.emit('error', new Error('late socket error')); // would be an uncaught 'error' without a listener
    await new Promise((r) => setImmediate(r));
    assert.ok(stream.destroyed);
  });

  test('fewer bytes than expected is SOURCE_TRUNCATED; more is SOURCE_ERROR', async () => {
    await assert.rejects(readAll(sourceStream({ expected: 10, what: '/m/f', mapError, open: async () => ({ body: Readable.from([Buffer.alloc(4)]) }) })), rejectsWith('SOURCE_TRUNCATED'));
    await assert.rejects(readAll(sourceStream({ expected: 2, what: '/m/f', mapError, open: async () => ({ body: Readable.from([Buffer.alloc(4)]) }) })), rejectsWith('SOURCE_ERROR'));
  });
});
