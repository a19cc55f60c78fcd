import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ReleaseFetcher } from './fetch.js';
import type { ReleaseDir } from './install.js';
import { serializeManifest, sha256Hex, type Manifest } from './manifest.js';
import { manifestOf } from './manifest.testkit.js';
import type { VersionRecord } from './registry.js';
import { InstalledVersions } from './reissue.js';

function recordOf(manifest: Manifest): VersionRecord {
  return { name: 'app', version: manifest.version, mount: manifest.mount, prefix: '', manifest: 'm', manifestSha256: sha256Hex(serializeManifest(manifest)), pageSize: manifest.pageSize, files: 1, bytes: 1, pages: 1, uniquePages: 1, createdAt: manifest.createdAt };
}

/** A host that installed `installed` as v1, and a cluster serving `published`; counts manifest fetches. */
async function host(installed: Manifest | undefined, published: Manifest) {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-reissue-'));
  const file = join(dir, 'v1.json');
  if (installed) await writeFile(file, serializeManifest(installed));
  const fetched = { count: 0 };
  const fetcher = { manifest: async () => (fetched.count++, published) } as unknown as ReleaseFetcher;
  const versions = new InstalledVersions({ manifestFile: () => file } as unknown as ReleaseDir, fetcher);
  return { versions, fetched, done: () => rm(dir, { recursive: true, force: true }) };
}

test('the version installed under the name (same manifest digest): accepted without a fetch', async () => {
  const m = manifestOf({ 'a.txt': Buffer.from('old\n') });
  const h = await host(m, m);
  await h.versions.check(recordOf(m));
  assert.equal(h.fetched.count, 0);
  await h.done();
});

test('the same files published again under the name (another mount, another createdAt): accepted, fetched once', async () => {
  const installed = manifestOf({ 'a.txt': Buffer.from('old\n') });
  const again = { ...manifestOf({ 'a.txt': Buffer.from('old\n') }), mount: 'other', createdAt: '2030-01-01T00:00:00.000Z' };
  const h = await host(installed, again);
  await h.versions.check(recordOf(again));
  await h.versions.check(recordOf(again));
  assert.equal(h.fetched.count, 1);
  await h.done();
});

test('other files published under the name: RELEASE_EXISTS naming both digests, each round, fetched once', async () => {
  const installed = manifestOf({ 'a.txt': Buffer.from('old\n') });
  const other = manifestOf({ 'a.txt': Buffer.from('new\n') });
  const h = await host(installed, other);
  const conflict = (err: Error & { code?: string }) =>
    err.code === 'RELEASE_EXISTS' && err.message.includes(recordOf(other).manifestSha256) && err.message.includes(recordOf(installed).manifestSha256);
  await assert.rejects(h.versions.check(recordOf(other)), conflict);
  await assert.rejects(h.versions.check(recordOf(other)), conflict);
  assert.equal(h.fetched.count, 1);
  await h.done();
});

test('a version not installed here: nothing to compare, no fetch', async () => {
  const m = manifestOf({ 'a.txt': Buffer.from('new\n') });
  const h = await host(undefined, m);
  await h.versions.check(recordOf(m));
  assert.equal(h.fetched.count, 0);
  await h.done();
});
