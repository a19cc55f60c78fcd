import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { FanoutError } from '../../core/errors.js';
import { checkFileInfo, checkListing } from './fileanswers.js';

const notAnswer = (field: RegExp) => (err: FanoutError) => err.code === 'WORKER_UNAVAILABLE' && /not a fanout answer/.test(err.message) && field.test(err.message);

test('a stat answer needs a whole size from 0 to 2^53 - 1, a number mtime and a version (a size of -5 made cp write an empty file and exit 0)', () => {
  const good = { path: 'a.bin', size: 10, mtimeMs: 5, version: 'v1', extra: true };
  assert.deepEqual(checkFileInfo(good, '/v1/stat/data/a.bin'), { path: 'a.bin', size: 10, mtimeMs: 5, version: 'v1' });
  for (const size of [-5, null, 1.5, 2 ** 60, '10']) assert.throws(() => checkFileInfo({ ...good, size }, 'stat'), notAnswer(/at size/), String(size));
  assert.throws(() => checkFileInfo({ ...good, version: '' }, 'stat'), notAnswer(/at version/));
  assert.throws(() => checkFileInfo(null, 'stat'), notAnswer(/expected object/));
});

test('a listing names each entry by one path segment ("../x" made a tree copy write outside its target)', () => {
  const file = { name: 'a.bin', type: 'file', size: 1, mtimeMs: 2, version: 'v' };
  assert.deepEqual(checkListing({ entries: [file, { name: 'd', type: 'dir' }] }, 'list'), [file, { name: 'd', type: 'dir' }]);
  for (const name of ['..', '.', '', '../escaped.txt', 'a/b', 7]) {
    assert.throws(() => checkListing({ entries: [{ ...file, name }] }, 'list'), notAnswer(/entries\.0\.name/), JSON.stringify(name));
  }
  // Names no fanout path can hold are left out, as the worker leaves them out.
  assert.deepEqual(checkListing({ entries: [{ ...file, name: 'back\\slash' }, { ...file, name: 'nl\nx' }, file] }, 'list'), [file]);
  assert.throws(() => checkListing({ entries: [{ ...file, type: 'link' }] }, 'list'), notAnswer(/entries\.0\.type/));
  assert.throws(() => checkListing({ entries: [{ ...file, size: -1 }] }, 'list'), notAnswer(/entries\.0\.size/));
  assert.throws(() => checkListing({}, 'list'), notAnswer(/at entries/));
  assert.throws(() => checkListing(null, 'list'), notAnswer(/expected object/));
});
