import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { CHECKSUM_ADDON_PATH, checksumPath, crc32, crc32Js } from './index.js';

// Lengths around the addon's 16- and 64-byte folding steps, and a whole 4 MiB page plus a tail.
const lengths = [1, 15, 16, 17, 63, 64, 65, 79, 80, 127, 128, 129, 1000, 4096, 4 * 1024 * 1024 + 7];

test('the chosen checksum gives zlib CRC32 values for every length and running value', () => {
  for (const n of lengths) {
    const data = randomBytes(n);
    for (const start of [0, 0xdeadbeef]) assert.equal(crc32(data, start), zlibCrc32(data, start), `length ${n}, start ${start}`);
  }
});

test('a CRC computed chunk by chunk (unaligned chunks) equals the CRC of the whole', () => {
  const data = randomBytes(3 * 1024 * 1024 + 5);
  let running = 0;
  for (let at = 0; at < data.length; at += 100_003) running = crc32(data.subarray(at, at + 100_003), running);
  assert.equal(running, zlibCrc32(data));
  assert.equal(crc32(data.subarray(3, 70_003)), zlibCrc32(data.subarray(3, 70_003)));
});

test('an empty chunk leaves a running CRC unchanged, natively and in JS', () => {
  const empty = Buffer.alloc(0);
  assert.equal(crc32(empty, 0x12345678), 0x12345678);
  assert.equal(crc32Js(empty, 0x12345678), 0x12345678);
  assert.equal(crc32(new Uint8Array(0)), 0);
});

test('the addon is used where it is built, and a corrupt byte changes the CRC', () => {
  assert.equal(checksumPath() === 'js', !existsSync(CHECKSUM_ADDON_PATH) || process.env.FANOUT_NO_NATIVE_CHECKSUM === '1');
  const page = randomBytes(1024 * 1024);
  const good = crc32(page);
  page[777_777] ^= 1;
  assert.notEqual(crc32(page), good);
});
