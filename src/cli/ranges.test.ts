import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutError } from '../core/errors.js';
import { parseRangeOption } from './ranges.js';

const failsWith = (text: string, size: number, code: string, message: RegExp) =>
  assert.throws(() => parseRangeOption(text, size), (err: unknown) => err instanceof FanoutError && err.code === code && message.test(err.message));

test('--range START-END, START- and -SUFFIX select inclusive byte ranges', () => {
  assert.deepEqual(parseRangeOption('1-5', 100), { start: 1, end: 6 });
  assert.deepEqual(parseRangeOption('90-', 100), { start: 90, end: 100 });
  assert.deepEqual(parseRangeOption('-10', 100), { start: 90, end: 100 });
  assert.deepEqual(parseRangeOption('3-3', 100), { start: 3, end: 4 });
  assert.deepEqual(parseRangeOption('50-500', 100), { start: 50, end: 100 });
});

test('a reversed --range is INVALID_RANGE saying it is reversed, not that it is outside the file', () => {
  failsWith('5-1', 100, 'INVALID_RANGE', /reversed/);
  failsWith('5-1', 3, 'INVALID_RANGE', /reversed/);
});

test('a --range past the end of the file is RANGE_NOT_SATISFIABLE', () => {
  failsWith('100-', 100, 'RANGE_NOT_SATISFIABLE', /outside a file of 100 bytes/);
});

test('a malformed --range is INVALID_RANGE', () => {
  failsWith('abc', 100, 'INVALID_RANGE', /expected START-END/);
  failsWith('-', 100, 'INVALID_RANGE', /expected START-END/);
});
