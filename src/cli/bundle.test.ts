import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freshBundle } from './bundle.cjs';

async function packageWithBundle(): Promise<{ root: string; module: string }> {
  const root = await mkdtemp(join(tmpdir(), 'fanout-bundle-'));
  await mkdir(join(root, 'dist/src/cli/bundle'), { recursive: true });
  const module = join(root, 'dist/src/cli/quick.js');
  await writeFile(module, 'export {};\n');
  await writeFile(join(root, 'dist/src/cli/bundle/quick.cjs'), '');
  const info = await stat(module);
  await writeFile(join(root, 'dist/src/cli/bundle/quick.inputs.json'), JSON.stringify({ inputs: [{ path: 'dist/src/cli/quick.js', size: info.size, mtimeMs: info.mtimeMs }] }));
  return { root, module };
}

test('the bundle is used while every module it was built from is unchanged', async (t) => {
  const { root } = await packageWithBundle();
  t.after(() => rm(root, { recursive: true, force: true }));
  assert.equal(freshBundle(root, 'quick'), join(root, 'dist/src/cli/bundle/quick.cjs'));
});

test('a module rebuilt, edited or removed since the bundle was built makes it stale: the modules run instead', async (t) => {
  const { root, module } = await packageWithBundle();
  t.after(() => rm(root, { recursive: true, force: true }));
  const later = new Date(Date.now() + 5000);
  await utimes(module, later, later); // tsc rewrote it, same bytes
  assert.equal(freshBundle(root, 'quick'), undefined);
  await writeFile(module, 'export const edited = 1;\n');
  assert.equal(freshBundle(root, 'quick'), undefined);
  await rm(module);
  assert.equal(freshBundle(root, 'quick'), undefined);
});

test('no bundle, or an unreadable list of its inputs, means the modules', async (t) => {
  const { root } = await packageWithBundle();
  t.after(() => rm(root, { recursive: true, force: true }));
  await writeFile(join(root, 'dist/src/cli/bundle/quick.inputs.json'), '{ not json');
  assert.equal(freshBundle(root, 'quick'), undefined);
  await writeFile(join(root, 'dist/src/cli/bundle/quick.inputs.json'), JSON.stringify({ inputs: [] }));
  assert.equal(freshBundle(root, 'quick'), undefined);
  assert.equal(freshBundle(join(root, 'nowhere'), 'quick'), undefined);
});

test("each bundle is checked against its own inputs: a stale `main` leaves `quick` in use", async (t) => {
  const { root } = await packageWithBundle();
  t.after(() => rm(root, { recursive: true, force: true }));
  assert.equal(freshBundle(root, 'main'), undefined); // never built
  const module = join(root, 'dist/src/cli/main.js');
  await writeFile(module, 'export {};\n');
  await writeFile(join(root, 'dist/src/cli/bundle/main.cjs'), '');
  const info = await stat(module);
  await writeFile(join(root, 'dist/src/cli/bundle/main.inputs.json'), JSON.stringify({ inputs: [{ path: 'dist/src/cli/main.js', size: info.size, mtimeMs: info.mtimeMs }] }));
  assert.equal(freshBundle(root, 'main'), join(root, 'dist/src/cli/bundle/main.cjs'));
  await writeFile(module, 'export const edited = 1;\n');
  assert.equal(freshBundle(root, 'main'), undefined);
  assert.equal(freshBundle(root, 'quick'), join(root, 'dist/src/cli/bundle/quick.cjs'));
});
