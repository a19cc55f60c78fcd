import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MAX_CACHE_FILES, cacheDirectory, loadBundle } from './codecache.cjs';
import { INTERRUPT_BUDGET } from './jit.cjs';

const codecacheModule = fileURLToPath(new URL('./codecache.cjs', import.meta.url));

/** A bundle that uses what require() gives a CommonJS file: require, exports, __dirname. */
function bundleText(answer: number): string {
  return `const { basename } = require('node:path');\nexports.answer = () => ${answer};\nexports.where = basename(__dirname) + '/' + basename(__filename);\n`;
}

function setup(): { dir: string; bundle: string; cache: string } {
  const dir = mkdtempSync(join(tmpdir(), 'fanout-codecache-'));
  const bundle = join(dir, 'quick.cjs');
  writeFileSync(bundle, bundleText(42));
  return { dir, bundle, cache: join(dir, 'cache') };
}

/** Loads the bundle in a fresh node (V8 accepts or refuses a cache at compile time), then saves. */
function run(bundle: string, cache: string, variant?: { name: string; v8Flags: string }): { cache: string; answer: number; where: string } {
  const script = `const { loadBundle } = require(${JSON.stringify(codecacheModule)});
    ${variant ? `require('node:v8').setFlagsFromString(${JSON.stringify(variant.v8Flags)});` : ''}
    const b = loadBundle(${JSON.stringify(bundle)}, ${JSON.stringify(cache)}, ${JSON.stringify(variant?.name ?? '')});
    const out = { cache: b.cache, answer: b.exports.answer(), where: b.exports.where };
    b.save();
    process.stdout.write(JSON.stringify(out));`;
  return JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 }));
}

const cacheFiles = (cache: string) => readdirSync(cache).filter((name) => name.endsWith('.v8'));

test('a bundle runs as require() would, and from its code cache after the first run', (t) => {
  const { dir, bundle, cache } = setup();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const first = run(bundle, cache);
  assert.deepEqual(first, { cache: 'none', answer: 42, where: `${dir.split('/').pop()}/quick.cjs` });
  assert.equal(cacheFiles(cache).length, 1, 'the first run wrote the cache');
  assert.equal(run(bundle, cache).cache, 'used');
  assert.equal(run(bundle, cache).answer, 42);
});

test('runs under other V8 flags keep a cache of their own: neither refuses and rewrites the other', (t) => {
  const { dir, bundle, cache } = setup();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const jit = { name: 'jit', v8Flags: `--interrupt-budget=${INTERRUPT_BUDGET}` };
  assert.equal(run(bundle, cache).cache, 'none');
  assert.equal(run(bundle, cache, jit).cache, 'none');
  assert.equal(cacheFiles(cache).length, 2);
  for (let i = 0; i < 2; i++) {
    assert.equal(run(bundle, cache).cache, 'used');
    assert.equal(run(bundle, cache, jit).cache, 'used');
  }
  // Both go when the bundle is rebuilt, each replaced by its own.
  const later = new Date(Date.now() + 5000);
  utimesSync(bundle, later, later);
  run(bundle, cache);
  run(bundle, cache, jit);
  assert.equal(cacheFiles(cache).length, 2);
});

test("writing one variant's cache leaves the other's in place", (t) => {
  const { dir, bundle, cache } = setup();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const jit = { name: 'jit', v8Flags: `--interrupt-budget=${INTERRUPT_BUDGET}` };
  assert.equal(run(bundle, cache, jit).cache, 'none'); // a cp first after a build…
  assert.equal(run(bundle, cache).cache, 'none'); // …then a cat, which writes the plain cache
  assert.equal(run(bundle, cache, jit).cache, 'used');
  assert.equal(run(bundle, cache).cache, 'used');
});

test('a rebuilt bundle never gets the old cache, and the old one is removed', (t) => {
  const { dir, bundle, cache } = setup();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  run(bundle, cache);
  const [old] = cacheFiles(cache);
  writeFileSync(bundle, bundleText(43)); // same length, other code
  const later = new Date(Date.now() + 5000);
  utimesSync(bundle, later, later);
  assert.deepEqual(run(bundle, cache), { cache: 'none', answer: 43, where: `${dir.split('/').pop()}/quick.cjs` });
  assert.equal(cacheFiles(cache).length, 1);
  assert.notEqual(cacheFiles(cache)[0], old);
  assert.equal(run(bundle, cache).cache, 'used');
});

test('a corrupt cache is refused by V8, the bundle still runs, and the cache is written anew', (t) => {
  const { dir, bundle, cache } = setup();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  run(bundle, cache);
  const [name] = cacheFiles(cache);
  writeFileSync(join(cache, name!), Buffer.alloc(4096, 0x5a));
  assert.deepEqual(run(bundle, cache), { cache: 'rejected', answer: 42, where: `${dir.split('/').pop()}/quick.cjs` });
  assert.equal(run(bundle, cache).cache, 'used');
});

test("a cache file owned by another user is never read", { skip: process.getuid?.() !== 0 && 'needs root to give a file away' }, (t) => {
  const { dir, bundle, cache } = setup();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  run(bundle, cache);
  const [name] = cacheFiles(cache);
  chownSync(join(cache, name!), 65534, 65534);
  assert.equal(run(bundle, cache).cache, 'none');
});

test('FANOUT_CODE_CACHE chooses the directory or turns the cache off; XDG_CACHE_HOME is honoured', (t) => {
  assert.equal(cacheDirectory({ FANOUT_CODE_CACHE: 'off' }), undefined);
  assert.equal(cacheDirectory({ FANOUT_CODE_CACHE: '/var/cache/x' }), '/var/cache/x');
  assert.equal(cacheDirectory({ XDG_CACHE_HOME: '/home/u/.xdg' }), '/home/u/.xdg/fanout/v8');
  const { dir, bundle } = setup();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const loaded = loadBundle(bundle, undefined);
  assert.equal(loaded.cache, 'off');
  assert.equal((loaded.exports as { answer: () => number }).answer(), 42);
  loaded.save();
  assert.deepEqual(readdirSync(dir), ['quick.cjs'], 'nothing written');
});

test('the directory keeps the newest caches, at most MAX_CACHE_FILES, whatever installs left behind', (t) => {
  const { dir, bundle, cache } = setup();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(cache);
  // Caches of installs that are gone, the oldest first.
  const stale = Array.from({ length: MAX_CACHE_FILES + 5 }, (_, i) => `quick-${String(i).padStart(8, '0')}-1-1-v8.v8`);
  stale.forEach((name, i) => {
    writeFileSync(join(cache, name), 'x');
    const when = new Date(Date.UTC(2026, 0, 1) + i * 60_000);
    utimesSync(join(cache, name), when, when);
  });
  writeFileSync(join(cache, 'notes.txt'), 'not a cache');
  run(bundle, cache);
  const left = cacheFiles(cache);
  assert.equal(left.length, MAX_CACHE_FILES);
  assert.ok(stale.slice(-(MAX_CACHE_FILES - 1)).every((name) => left.includes(name)), 'the newest stale ones stay');
  assert.ok(!left.includes(stale[0]!), 'the oldest went');
  assert.ok(readdirSync(cache).includes('notes.txt'), 'other files are left alone');
  assert.equal(run(bundle, cache).cache, 'used', 'and the new one is used');
});

test("a cache's temp file left by a command killed mid-write is removed by the next write, not one still being written", (t) => {
  const { dir, bundle, cache } = setup();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(cache);
  const abandoned = 'quick-00000001-1-1-v8.v8.4242.tmp';
  const writing = 'quick-00000002-1-1-v8.v8.4343.tmp';
  writeFileSync(join(cache, abandoned), 'half a cache');
  const longAgo = new Date(Date.now() - 10 * 60_000);
  utimesSync(join(cache, abandoned), longAgo, longAgo);
  writeFileSync(join(cache, writing), 'being written right now');
  writeFileSync(join(cache, 'notes.tmp'), 'not a cache');
  utimesSync(join(cache, 'notes.tmp'), longAgo, longAgo);
  run(bundle, cache);
  const left = readdirSync(cache);
  assert.ok(!left.includes(abandoned), 'the abandoned temp file went');
  assert.ok(left.includes(writing), "a fresh one (another command's write in progress) stays");
  assert.ok(left.includes('notes.tmp'), 'other files are left alone');
});

test('a link planted at the temp name is replaced, never written through', (t) => {
  const { dir, bundle, cache } = setup();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  loadBundle(bundle, cache).save(); // in this process: its temp name is known
  const [name] = cacheFiles(cache);
  assert.ok(name, 'a cache was written');
  unlinkSync(join(cache, name));
  const victim = join(dir, 'victim');
  writeFileSync(victim, 'precious');
  symlinkSync(victim, join(cache, `${name}.${process.pid}.tmp`));
  loadBundle(bundle, cache).save();
  assert.equal(readFileSync(victim, 'utf8'), 'precious');
  assert.deepEqual(readdirSync(cache), [name], 'the cache was written, the link gone');
});
