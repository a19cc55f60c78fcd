import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { addonPath, optionalAddon } from './index.js';

const CHECKSUM = addonPath('checksum', 'fanout_checksum');

test('an addon that is not built, or switched off, is undefined (the caller takes its JS path)', () => {
  assert.equal(optionalAddon(addonPath('checksum', 'no_such_addon')), undefined);
  assert.equal(optionalAddon(CHECKSUM, true), undefined);
});

test('an addon is loaded once per process, and works', { skip: !existsSync(CHECKSUM) && 'native/checksum is not built' }, async () => {
  const first = optionalAddon<{ crc32(data: Buffer, crc?: number): number }>(CHECKSUM);
  assert.ok(first);
  assert.equal(first.crc32(Buffer.from('123456789')), 0xcbf43926); // CRC-32's check value
  assert.equal(optionalAddon(CHECKSUM), first);
  // A second copy of the module (as a second bundle holds) gets the same exports, not a second init.
  const copy = (await import(`./index.js?copy=${Date.now()}`)) as typeof import('./index.js');
  assert.notEqual(copy.optionalAddon, optionalAddon);
  assert.equal(copy.optionalAddon(CHECKSUM), first);
});

test('a file that is not an addon is undefined, not a throw', () => {
  assert.equal(optionalAddon(new URL(import.meta.url).pathname), undefined);
});
