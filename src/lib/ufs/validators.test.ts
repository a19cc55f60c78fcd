import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http';
import { checkRangeAnswer, describeVersion, refusedRange, type RangeAsk } from './validators.js';

const lastModified = 'Tue, 02 Jan 2024 03:04:05 GMT';
const mtime = Date.parse(lastModified);
const ask = (over: Partial<RangeAsk> = {}): RangeAsk => ({ offset: 100, length: 50, version: 'v1', versioning: 'strict', what: '/web/f.bin', label: '/web', ...over });
const range = (over: IncomingHttpHeaders = {}): IncomingHttpHeaders => ({
  etag: '"v1"',
  'last-modified': lastModified,
  'content-range': 'bytes 100-149/1000',
  'content-length': '50',
  ...over,
});
const code = (err: ReturnType<typeof checkRangeAnswer>) => err?.code ?? null;

describe('range answer validators', () => {
  test('a 206 with the asked range of the asked version passes', () => {
    assert.equal(checkRangeAnswer(206, range(), ask()), null);
    assert.equal(checkRangeAnswer(206, range(), ask({ knownSize: 1000 })), null);
  });

  test('the range unit in any case is a byte range (RFC 9110: units are case-insensitive)', () => {
    assert.equal(checkRangeAnswer(206, range({ 'content-range': 'Bytes 100-149/1000' }), ask()), null);
    assert.equal(checkRangeAnswer(206, range({ 'content-range': 'BYTES 100-149/1000' }), ask({ knownSize: 1000 })), null);
  });

  test('another ETag is SOURCE_CHANGED', () => {
    assert.equal(code(checkRangeAnswer(206, range({ etag: '"v2"' }), ask())), 'SOURCE_CHANGED');
  });

  test('the same ETag with another total size than the version had is SOURCE_CHANGED', () => {
    assert.equal(code(checkRangeAnswer(206, range({ 'content-range': 'bytes 100-149/2000' }), ask({ knownSize: 1000 }))), 'SOURCE_CHANGED');
  });

  test('strict: no ETag or a weak ETag is SOURCE_UNVERSIONED, naming the mount and the option', () => {
    const err = checkRangeAnswer(206, range({ etag: undefined }), ask());
    assert.equal(code(err), 'SOURCE_UNVERSIONED');
    assert.match(err!.message, /^\/web\/f\.bin: .*versioning: weak.* on mount \/web/);
    assert.equal(code(checkRangeAnswer(206, range({ etag: 'W/"v1"' }), ask())), 'SOURCE_UNVERSIONED');
  });

  test('weak: size and Last-Modified are the version; either differing is SOURCE_CHANGED', () => {
    const version = `1000-${mtime}`;
    const weak = ask({ versioning: 'weak', version });
    assert.equal(checkRangeAnswer(206, range({ etag: undefined }), weak), null);
    assert.equal(code(checkRangeAnswer(206, range({ etag: undefined, 'last-modified': 'Tue, 02 Jan 2024 03:04:06 GMT' }), weak)), 'SOURCE_CHANGED');
    assert.equal(code(checkRangeAnswer(206, range({ etag: undefined, 'content-range': 'bytes 100-149/1001' }), weak)), 'SOURCE_CHANGED');
  });

  test('a 200 to a range request is SOURCE_ERROR unless it is exactly the whole range asked', () => {
    const whole = { etag: '"v1"', 'last-modified': lastModified, 'content-length': '1000' };
    const err = checkRangeAnswer(200, whole, ask());
    assert.equal(code(err), 'SOURCE_ERROR');
    assert.match(err!.message, /ignores Range/);
    assert.equal(code(checkRangeAnswer(200, whole, ask({ offset: 0, length: 10 }))), 'SOURCE_ERROR');
    assert.equal(checkRangeAnswer(200, whole, ask({ offset: 0, length: 1000 })), null);
    // A 200 of another version is a change first, not a Range problem.
    assert.equal(code(checkRangeAnswer(200, { ...whole, etag: '"v2"' }, ask())), 'SOURCE_CHANGED');
  });

  test('another range, a wrong Content-Length or no total is SOURCE_ERROR', () => {
    assert.equal(code(checkRangeAnswer(206, range({ 'content-range': 'bytes 0-49/1000' }), ask())), 'SOURCE_ERROR');
    assert.equal(code(checkRangeAnswer(206, range({ 'content-range': 'bytes 100-148/1000' }), ask())), 'SOURCE_ERROR');
    assert.equal(code(checkRangeAnswer(206, range({ 'content-length': '49' }), ask())), 'SOURCE_ERROR');
    assert.equal(code(checkRangeAnswer(206, range({ 'content-range': 'bytes 100-149/*' }), ask())), 'SOURCE_ERROR');
  });

  test('a range past the end of the same version is SOURCE_TRUNCATED', () => {
    assert.equal(code(checkRangeAnswer(206, range({ 'content-range': 'bytes 100-119/120', 'content-length': '20' }), ask())), 'SOURCE_TRUNCATED');
  });

  test('describeVersion: strong ETag unquoted, else size-mtime', () => {
    assert.deepEqual(describeVersion({ etag: '"abc"', 'last-modified': lastModified }, 5), { size: 5, mtimeMs: mtime, version: 'abc', strong: true });
    assert.deepEqual(describeVersion({ etag: 'W/"abc"', 'last-modified': lastModified }, 5), { size: 5, mtimeMs: mtime, version: `5-${mtime}`, strong: false });
    assert.equal(describeVersion({}, 5).version, '5-0');
  });

  test('a 416 to a read: past the end the caller asked is RANGE_NOT_SATISFIABLE; inside the version it is a changed file or a faulty source', () => {
    // offset 100 of a version the stat saw at 1000 bytes
    assert.equal(refusedRange(1000, ask({ knownSize: 1000 })).code, 'SOURCE_ERROR');
    assert.equal(refusedRange(undefined, ask({ knownSize: 1000 })).code, 'SOURCE_ERROR');
    assert.equal(refusedRange(80, ask({ knownSize: 1000 })).code, 'SOURCE_CHANGED');
    assert.equal(refusedRange(1000, ask({ offset: 1000, knownSize: 1000 })).code, 'RANGE_NOT_SATISFIABLE');
    assert.equal(refusedRange(80, ask()).code, 'RANGE_NOT_SATISFIABLE');
    assert.equal(refusedRange(undefined, ask()).code, 'RANGE_NOT_SATISFIABLE');
    // No stat to go by, but the answer itself says the file has the bytes asked for.
    assert.equal(refusedRange(1000, ask()).code, 'SOURCE_ERROR');
  });
});
