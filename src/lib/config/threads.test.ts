import { test } from 'node:test';
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { FanoutError } from '../../core/errors.js';
import { parseWorkerConfig } from './index.js';

test('threads defaults to the number of cores and takes a whole number from 1', () => {
  assert.equal(parseWorkerConfig({}).threads, availableParallelism());
  assert.equal(parseWorkerConfig({ threads: 3 }).threads, 3);
  for (const bad of [0, -1, 1.5, '2']) {
    assert.throws(() => parseWorkerConfig({ threads: bad }), (e: FanoutError) => e.code === 'INVALID_CONFIG' && /threads/.test(e.message));
  }
});
