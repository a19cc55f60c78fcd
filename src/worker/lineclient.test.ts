import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRenewQuery, renewQuery } from './lineclient.js';

const base = { member: 'w1', seq: 3, epoch: 'e', demand: { read: 10, preload: 2 }, applied: 5 };

test("a renewal's query carries the worker's configured line rate, and one without it (an older build) still parses", () => {
  assert.deepEqual(parseRenewQuery(renewQuery('wan', { ...base, rate: 2_000_000 })), { line: 'wan', req: { ...base, rate: 2_000_000 } });
  assert.deepEqual(parseRenewQuery(renewQuery('wan', base)), { line: 'wan', req: base });
  assert.throws(() => parseRenewQuery(`${renewQuery('wan', base)}&rate=-1`), /INVALID_ARGUMENT|must be a number/);
});
