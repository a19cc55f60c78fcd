import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { contentKey, pageKey } from './index.js';

const MiB = 1024 * 1024;

test('page keys differ by version and index, and are stable', () => {
  const ref = { mount: 'm', path: 'a/b.bin', version: 'v1', size: 100, index: 0 };
  assert.equal(pageKey(ref, MiB), pageKey({ ...ref }, MiB));
  assert.notEqual(pageKey(ref, MiB), pageKey({ ...ref, version: 'v2' }, MiB));
  assert.notEqual(pageKey(ref, MiB), pageKey({ ...ref, index: 1 }, MiB));
  assert.match(pageKey(ref, MiB), /^[0-9a-f]{40}$/);
});

test('a page key is the first 160 bits of the SHA-256 of its fields, as every earlier worker and client computed it', () => {
  // The key names page files on disk and places pages on the ring: a store written before must still be found.
  fc.assert(
    fc.property(fc.string(), fc.string(), fc.string(), fc.nat(), fc.nat(), fc.integer({ min: 1, max: 64 }), (mount, path, version, size, index, pages) => {
      const pageSize = pages * MiB;
      const expected = createHash('sha256').update(`${mount}\0${path}\0${version}\0${size}\0${pageSize}\0${index}`).digest('hex').slice(0, 40);
      assert.equal(pageKey({ mount, path, version, size, index }, pageSize), expected);
    }),
  );
});

test('a page known by its content hash is keyed by the hash; anything else is refused', () => {
  const hash = 'a'.repeat(64);
  assert.equal(pageKey({ mount: 'm', path: 'p', version: 'v', size: 1, index: 0, hash }, MiB), hash);
  assert.throws(() => contentKey('A'.repeat(64)), /64 lowercase hex/);
  assert.throws(() => contentKey('ab'), /64 lowercase hex/);
});

test('keys asked again, after many others pushed them out of the recent ones, are the same digest', () => {
  const ref = (index: number) => ({ mount: 'm', path: 'a/b.bin', version: 'v1', size: 1e12, index });
  const expected = (index: number) => createHash('sha256').update(`m\0a/b.bin\0v1\0${1e12}\0${MiB}\0${index}`).digest('hex').slice(0, 40);
  for (let round = 0; round < 2; round++) {
    for (let index = 0; index < 3000; index++) assert.equal(pageKey(ref(index), MiB), expected(index), `round ${round}, page ${index}`);
  }
});
