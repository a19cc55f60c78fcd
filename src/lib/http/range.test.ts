import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isFanoutError } from '../../core/errors.js';
import { parseRange } from './index.js';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return isFanoutError(err) ? err.code : 'not a FanoutError';
  }
  return undefined;
}

test('a suffix range of an empty file is unsatisfiable (it was a 206 "bytes 0--1/0")', () => {
  assert.equal(code(() => parseRange('bytes=-5', 0)), 'RANGE_NOT_SATISFIABLE');
  assert.equal(code(() => parseRange('bytes=-9007199254740991', 0)), 'RANGE_NOT_SATISFIABLE');
  assert.equal(code(() => parseRange('bytes=0-', 0)), 'RANGE_NOT_SATISFIABLE');
});

test('single ranges: suffix, open-ended, clamped past the end; malformed and reversed ones are INVALID_RANGE', () => {
  assert.deepEqual(parseRange('bytes=-5', 3), { start: 0, end: 3 });
  assert.deepEqual(parseRange('bytes=-2', 10), { start: 8, end: 10 });
  assert.deepEqual(parseRange('bytes=4-', 10), { start: 4, end: 10 });
  assert.deepEqual(parseRange('bytes=4-99999999999999999999', 10), { start: 4, end: 10 });
  assert.equal(parseRange(undefined, 10), undefined);
  assert.equal(code(() => parseRange('bytes=-0', 10)), 'RANGE_NOT_SATISFIABLE');
  assert.equal(code(() => parseRange('bytes=10-', 10)), 'RANGE_NOT_SATISFIABLE');
  assert.equal(code(() => parseRange('bytes=5-4', 10)), 'INVALID_RANGE');
  assert.equal(code(() => parseRange('bytes=0-1,3-4', 10)), 'INVALID_RANGE');
  assert.equal(code(() => parseRange('bytes=', 10)), 'INVALID_RANGE');
});

test('the range unit is case-insensitive, and a header in another unit is ignored (RFC 9110 §14.1, §14.2)', () => {
  assert.deepEqual(parseRange('Bytes=0-1', 10), { start: 0, end: 2 });
  assert.deepEqual(parseRange('BYTES=-3', 10), { start: 7, end: 10 });
  assert.equal(parseRange('items=0-1', 10), undefined);
  assert.equal(code(() => parseRange('0-1', 10)), 'INVALID_RANGE', 'no unit at all is malformed, not another unit');
});
