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
  // More slabs than one region holds, written with their own pattern each.
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

test('the regions are 2 MiB-aligned and advised for huge pages (THPeligible) where THP is on', { skip: !built || !thpOn() }, () => {
  // A fresh process, so its 8 MiB regions are the only 8 MiB mappings advised for huge pages.
  const script = `import('${new URL('./index.js', import.meta.url).href}').then((m) => { const b = m.slabBuffer(1 << 20); b.fill(1); process.stdout.write(require('fs').readFileSync('/proc/self/smaps', 'utf8')); })`;
  const out = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', maxBuffer: 64 * MiB });
  assert.equal(out.status, 0, out.stderr);
  const regions = out.stdout.split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/).filter((vma) => {
    const [start, end] = vma.split(' ')[0]!.split('-').map((hex) => BigInt(`0x${hex}`));
    return end! - start! === BigInt(8 * MiB) && start! % BigInt(2 * MiB) === 0n && /^VmFlags:.* hg/m.test(vma);
  });
  assert.ok(regions.length >= 1, 'no 2 MiB-aligned 8 MiB mapping advised for huge pages');
  assert.match(regions[0]!, /^THPeligible:\s+1$/m);
});

function thpOn(): boolean {
  try {
    return !/\[never\]/.test(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'));
  } catch {
    return false;
  }
}

