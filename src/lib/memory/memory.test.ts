import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { MAX_SLAB_BYTES, MEMORY_ADDON_PATH, memoryPath, slabBuffer } from './index.js';

const MiB = 1024 * 1024;
const built = existsSync(MEMORY_ADDON_PATH) && process.env.FANOUT_NO_NATIVE_MEMORY !== '1';

test('the addon is used where it is built (and not with FANOUT_NO_NATIVE_MEMORY=1)', () => {
  assert.equal(memoryPath(), built ? 'huge' : 'js');
  const script = `import('${new URL('./index.js', import.meta.url).href}').then((m) => process.stdout.write(m.memoryPath()))`;
  const forced = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, FANOUT_NO_NATIVE_MEMORY: '1' }, encoding: 'utf8' });
  assert.equal(forced.stdout, 'js');
});

test('slabs are separate memory of the asked size, and stay intact while others are collected', async () => {
  // More slabs than one shared huge page holds, written with their own pattern each.
  const kept: Buffer[] = [];
  for (let i = 0; i < 20; i++) {
    const slab = slabBuffer(MiB);
    assert.equal(slab.length, MiB);
    slab.fill(i);
    if (i % 3 === 0) kept.push(slab); // the others become garbage, their regions with them
  }
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 40; i++) slabBuffer(MiB).fill(0xff);
    (globalThis as { gc?: () => void }).gc?.();
    await new Promise((resolve) => setImmediate(resolve)); // finalizers run on the JS thread
  }
  kept.forEach((slab, k) => assert.ok(slab.every((byte) => byte === k * 3), `slab ${k * 3} was overwritten`));
});

test('sizes the addon cannot carve are allocated as usual', () => {
  assert.equal(slabBuffer(MAX_SLAB_BYTES + 1).length, MAX_SLAB_BYTES + 1);
  assert.equal(slabBuffer(MAX_SLAB_BYTES).length, MAX_SLAB_BYTES);
  assert.equal(slabBuffer(1).length, 1);
});

test('slabs are in 2 MiB-aligned mappings advised for huge pages (THPeligible) where THP is on', { skip: !built || !thpOn() }, () => {
  // A fresh process: a 1 MiB slab shares a 2 MiB mapping, a 4 MiB one (a worker's fill buffer) has its own.
  const script = `import('${new URL('./index.js', import.meta.url).href}').then((m) => { m.slabBuffer(1 << 20).fill(1); m.slabBuffer(4 << 20).fill(1); process.stdout.write(require('fs').readFileSync('/proc/self/smaps', 'utf8')); })`;
  const out = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', maxBuffer: 64 * MiB });
  assert.equal(out.status, 0, out.stderr);
  const advised = out.stdout.split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/).filter((vma) => /^VmFlags:.* hg/m.test(vma));
  const sizes = advised.map((vma) => {
    const [start, end] = vma.split(' ')[0]!.split('-').map((hex) => BigInt(`0x${hex}`));
    assert.equal(start! % BigInt(2 * MiB), 0n, 'aligned to a huge page');
    assert.match(vma, /^THPeligible:\s+1$/m);
    return Number(end! - start!) / MiB;
  });
  assert.ok(sizes.includes(2) && sizes.includes(4), `mappings advised for huge pages: ${sizes.join(', ')} MiB`);
});

test('a slab kept alive holds at most its own huge page: 30 kept among 3,000 made and dropped stay near 30 × 2 MiB', { skip: !built }, () => {
  const script = `import('${new URL('./index.js', import.meta.url).href}').then(async (m) => {
    const keep = [];
    const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
    const before = rss();
    for (let i = 0; i < 3000; i++) {
      const b = m.slabBuffer(1 << 20);
      b.fill(1);
      if (i % 100 === 0) keep.push(b);
      if (i % 10 === 0) await new Promise((r) => setImmediate(r)); // finalizers run between turns
    }
    for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setImmediate(r)); }
    process.stdout.write(String((rss() - before) / 2 ** 20));
  })`;
  const out = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' });
  assert.equal(out.status, 0, out.stderr);
  const grownMiB = Number(out.stdout);
  assert.ok(grownMiB < 30 * 2 + 40, `resident memory grew by ${grownMiB} MiB for 30 slabs kept`);
});

function thpOn(): boolean {
  try {
    return !/\[never\]/.test(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'));
  } catch {
    return false;
  }
}


test('containerShare and containerCutNote: an eighth of a container limit, nothing outside one', async () => {
  const { containerCutNote, containerShare } = await import('./container.js');
  const MiB = 1024 * 1024;
  assert.equal(containerShare(96 * MiB, undefined), 96 * MiB);
  assert.equal(containerShare(96 * MiB, 256 * MiB), 32 * MiB);
  assert.equal(containerShare(16 * MiB, 256 * MiB), 16 * MiB);
  assert.equal(containerCutNote('--read-memory', 16 * MiB, 256 * MiB), undefined);
  assert.equal(containerCutNote('--read-memory', 96 * MiB, undefined), undefined);
  assert.match(containerCutNote('--read-memory', 96 * MiB, 256 * MiB) ?? '', /^--read-memory of 100663296 bytes is cut to 33554432, an eighth of this container's memory limit \(268435456 bytes\)/);
});
