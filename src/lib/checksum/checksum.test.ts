import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { createRequire } from 'node:module';
import { CHECKSUM_ADDON_PATH, checksumPath, crc32, crc32Js, digestJs, sha256, sha512 } from './index.js';

// Lengths around the addon's 16-, 64- and (AVX-512) 256-byte folding steps, and a whole 4 MiB page plus a tail.
const lengths = [1, 15, 16, 17, 63, 64, 65, 79, 80, 127, 128, 129, 255, 256, 257, 271, 272, 320, 336, 511, 512, 513, 1000, 4096, 4 * 1024 * 1024 + 7];

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

test('the addon\'s 128-bit path (FANOUT_CRC32_NO_AVX512=1) gives the same values as its 512-bit one', () => {
  if (!existsSync(CHECKSUM_ADDON_PATH)) return;
  // The path is chosen when the addon loads, so the other one runs in a child process.
  const script = `const a = require(${JSON.stringify(CHECKSUM_ADDON_PATH)}); const z = require('node:zlib');
    const b = require('node:crypto').randomBytes(70000); let bad = 0;
    for (const n of ${JSON.stringify(lengths.filter((n) => n < 70000))}) for (const off of [0, 1, 5]) if (a.crc32(b.subarray(off, off + n), 7) !== z.crc32(b.subarray(off, off + n), 7)) bad++;
    process.stdout.write(a.kind() + ' ' + bad);`;
  const child = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, FANOUT_CRC32_NO_AVX512: '1' }, encoding: 'utf8', timeout: 30_000 });
  assert.equal(child.status, 0, child.stderr);
  const [kind, bad] = child.stdout.split(' ');
  assert.notEqual(kind, 'vclmul');
  assert.equal(bad, '0');
});

test('SHA-256 and SHA-512 (native where built, else node:crypto) equal node:crypto for strings and bytes', () => {
  fc.assert(
    fc.property(fc.oneof(fc.string({ unit: 'grapheme' }), fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a))), (data) => {
      assert.deepEqual(sha256(data), createHash('sha256').update(data).digest());
      assert.deepEqual(sha512(data), createHash('sha512').update(data).digest());
      const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
      assert.deepEqual(digestJs('sha256', bytes), sha256(data));
    }),
  );
});

test("the addon's digest refuses what it cannot hash; without the addon a process hashes through node:crypto", () => {
  if (existsSync(CHECKSUM_ADDON_PATH)) {
    const addon = createRequire(import.meta.url)(CHECKSUM_ADDON_PATH) as { digest?: (name: string, data: unknown) => Buffer };
    assert.ok(addon.digest, 'this Node exports OpenSSL\'s SHA256 and SHA512');
    assert.throws(() => addon.digest!('md5', Buffer.from('x')), /sha256 or sha512/);
    assert.throws(() => addon.digest!('sha256', 'not a buffer'), /Buffer/);
  }
  const script = `import(${JSON.stringify(new URL('./index.js', import.meta.url).href)}).then((m) => process.stdout.write(m.checksumPath() + ' ' + m.sha256('abc').toString('hex')));`;
  const child = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, FANOUT_NO_NATIVE_CHECKSUM: '1' }, encoding: 'utf8', timeout: 30_000 });
  assert.equal(child.status, 0, child.stderr);
  assert.equal(child.stdout, `js ${createHash('sha256').update('abc').digest('hex')}`);
});
