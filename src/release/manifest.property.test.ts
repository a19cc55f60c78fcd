import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { manifestSchema, validManifest } from './manifest.js';

/**
 * validManifest (the fast check every sync runs) must give the schema's answer: whatever it
 * accepts the schema accepts, as the same object, and it accepts every manifest the schema does
 * (else valid manifests would only be slower). Manifests are built near the edge of every rule.
 */

/** Mostly a valid value, now and then one that breaks a rule. */
const mostly = <T, U>(valid: T[], invalid: U[]) =>
  fc.oneof({ weight: 12, arbitrary: fc.constantFrom(...valid) }, { weight: 1, arbitrary: fc.constantFrom(...invalid) });
const hex = mostly(['0'.repeat(64), 'a'.repeat(64), `${'f'.repeat(63)}0`], ['A'.repeat(64), 'a'.repeat(63), 'g'.repeat(64), '', 7]);
const segment = mostly(['a', 'b', 'c.bin', ' ', 'é', '..a'], ['.', '..', '', 'x\u0001', 'x\\y']);
const path = fc.oneof(
  { weight: 12, arbitrary: fc.array(segment, { minLength: 1, maxLength: 3 }).map((s) => s.join('/')) },
  { weight: 1, arbitrary: fc.constantFrom('/a', 'a/', 'a'.repeat(4097), 'a'.repeat(4096), 3, null) },
);
const PAGE = 4;
const file = fc
  .record({
    path,
    size: mostly([0, 1, 4, 5, 8, 9], [-1, 1.5, '4', 2 ** 60]),
    sourceVersion: mostly(['v1', 'x'.repeat(1024)], ['', 'x'.repeat(1025), 1]),
    sha256: hex,
    pagesOff: mostly([0], [-1, 1, 'not an array']),
    page: hex,
    extra: mostly([undefined], ['junk']),
    drop: mostly([undefined], ['sha256', 'pages', 'path']),
  })
  .map(({ pagesOff, page, extra, drop, ...f }) => {
    const count = typeof f.size === 'number' && f.size >= 0 ? Math.ceil(f.size / PAGE) : 1;
    const out: Record<string, unknown> = { ...f, pages: typeof pagesOff === 'string' ? pagesOff : Array.from({ length: Math.max(0, Math.min(count + pagesOff, 100)) }, () => page) };
    if (extra) out.extra = extra;
    if (drop) delete out[drop];
    return out;
  });
const manifest = fc
  .record({
    schema: mostly([1], [2, '1']),
    name: mostly(['app', 'a.b-c_d', 'a'.repeat(63)], ['App', '', '-x', 'a'.repeat(64)]),
    version: mostly(['v1', 'V1+build.2', 'x'.repeat(64)], ['', '.v', 'x'.repeat(65)]),
    createdAt: mostly(['2026-12-04T00:00:00Z', ''], [5]),
    mount: mostly(['src'], ['', null]),
    prefix: mostly(['', 'app/v1'], [0]),
    pageSize: mostly([PAGE], [0, -4, 4.5, '4']),
    files: fc.oneof({ weight: 12, arbitrary: fc.array(file, { maxLength: 6 }) }, { weight: 1, arbitrary: fc.constant({}) }),
    extra: mostly([undefined], [true]),
    drop: mostly([undefined], ['files', 'prefix']),
  })
  .map(({ extra, drop, ...m }) => {
    const out: Record<string, unknown> = extra ? { ...m, extra } : { ...m };
    if (drop) delete out[drop];
    return out;
  });

test('the fast manifest check and the schema agree on every manifest', () => {
  let accepted = 0;
  fc.assert(
    fc.property(manifest, (m) => {
      const json = JSON.parse(JSON.stringify(m)) as unknown;
      const schema = manifestSchema.safeParse(json);
      const fast = validManifest(json);
      assert.equal(fast !== undefined, schema.success, schema.success ? 'the schema accepts what the fast check refused' : `the fast check accepts what the schema refuses: ${schema.error.issues[0]?.message}`);
      if (schema.success) {
        accepted++;
        assert.deepEqual(fast, schema.data);
      }
    }),
    { numRuns: 3000 },
  );
  assert.ok(accepted > 50, `only ${accepted} valid manifests were generated: the test checks too little`);
});

test('files that are each other\'s directory, or listed twice, are refused by both', () => {
  const page = 'a'.repeat(64);
  const f = (path: string) => ({ path, size: 4, sourceVersion: 'v1', sha256: page, pages: [page] });
  const base = { schema: 1, name: 'app', version: 'v1', createdAt: '', mount: 'src', prefix: '', pageSize: PAGE };
  for (const files of [[f('a'), f('a/b')], [f('a/b/c'), f('a/b')], [f('x'), f('x')]]) {
    assert.equal(validManifest({ ...base, files }), undefined);
    assert.equal(manifestSchema.safeParse({ ...base, files }).success, false);
  }
  assert.ok(validManifest({ ...base, files: [f('a/b'), f('a/c'), f('ab')] }));
});
