import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { FanoutError } from '../core/errors.js';
import { MAX_MANIFEST_BYTES, hashFile, manifestTotals, parseManifest, serializeManifest, sha256Hex, type Manifest } from './manifest.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function* chunked(data: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

test('hashFile hashes each page and the whole file, whatever the chunking', async () => {
  const data = randomBytes(10_000);
  const expected = { size: 10_000, sha256: sha(data), pages: [sha(data.subarray(0, 4096)), sha(data.subarray(4096, 8192)), sha(data.subarray(8192))] };
  for (const chunk of [1, 333, 4096, 5000, 20_000]) assert.deepEqual(await hashFile(chunked(data, chunk), 4096), expected);
  assert.deepEqual(await hashFile(chunked(Buffer.alloc(0), 1), 4096), { size: 0, sha256: sha(Buffer.alloc(0)), pages: [] });
});

function sample(): Manifest {
  const a = randomBytes(5000);
  return {
    schema: 1, name: 'llm', version: 'v1', createdAt: '2024-01-01T00:00:00.000Z', mount: 'data', prefix: 'llm/v1', pageSize: 4096,
    files: [
      { path: 'z.bin', size: 5000, sourceVersion: '5000-1', sha256: sha(a), pages: [sha(a.subarray(0, 4096)), sha(a.subarray(4096))] },
      { path: 'dir/empty', size: 0, sourceVersion: '0-1', sha256: sha(Buffer.alloc(0)), pages: [] },
    ],
  };
}

const invalid = (fn: () => unknown) => assert.throws(fn, (e: FanoutError) => e.code === 'MANIFEST_INVALID');

test('a manifest round-trips through its canonical bytes, files sorted by path', () => {
  const manifest = sample();
  const bytes = serializeManifest(manifest);
  const parsed = parseManifest(bytes, sha256Hex(bytes));
  assert.deepEqual(parsed.files.map((f) => f.path), ['dir/empty', 'z.bin']);
  assert.deepEqual(serializeManifest(parsed), bytes);
  assert.deepEqual(manifestTotals(parsed), { files: 2, bytes: 5000, pages: 2, uniquePages: 2 });
});

test('a manifest that differs from its published digest is refused', () => {
  const bytes = serializeManifest(sample());
  const tampered = Buffer.from(bytes.toString().replace('"v1"', '"v1" '));
  invalid(() => parseManifest(tampered, sha256Hex(bytes)));
});

test('invalid manifests are refused with MANIFEST_INVALID', () => {
  const m = sample();
  invalid(() => parseManifest('not json'));
  invalid(() => parseManifest(JSON.stringify({ ...m, schema: 2 })));
  invalid(() => parseManifest(JSON.stringify({ ...m, files: [{ ...m.files[0]!, path: '../etc/passwd' }] })));
  invalid(() => parseManifest(JSON.stringify({ ...m, files: [{ ...m.files[0]!, path: '/abs' }] })));
  invalid(() => parseManifest(JSON.stringify({ ...m, files: [{ ...m.files[0]!, pages: [m.files[0]!.pages[0]] }] })));
  invalid(() => parseManifest(JSON.stringify({ ...m, files: [m.files[0], m.files[0]] })));
  invalid(() => parseManifest(JSON.stringify({ ...m, files: [{ ...m.files[0]!, sha256: 'XYZ' }] })));
  invalid(() => parseManifest(JSON.stringify({ ...m, files: [m.files[0], { ...m.files[1]!, path: 'z.bin/inner' }] })));
  invalid(() => parseManifest(JSON.stringify({ ...m, extra: true })));
});

test('a path segment longer than a file name can be, and a manifest larger than a host reads, are refused', () => {
  const m = sample();
  const withPath = (path: string) => JSON.stringify({ ...m, files: [{ ...m.files[0]!, path }] });
  assert.equal(parseManifest(withPath(`dir/${'é'.repeat(127)}`)).files[0]!.path.length, 4 + 127); // 254 bytes
  invalid(() => parseManifest(withPath(`dir/${'é'.repeat(128)}`))); // 256 bytes
  invalid(() => parseManifest(withPath('x'.repeat(256))));
  const padded = Buffer.alloc(MAX_MANIFEST_BYTES + 1, ' ');
  serializeManifest(m).copy(padded);
  assert.throws(() => parseManifest(padded), (e: FanoutError) => e.code === 'MANIFEST_INVALID' && /larger than/.test(e.message));
});
