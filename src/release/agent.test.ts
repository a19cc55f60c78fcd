import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SyncAgent } from './agent.js';
import type { ReleaseFetcher } from './fetch.js';
import type { Manifest } from './manifest.js';
import type { ReleaseRegistry } from './registry.js';

const PAGE = 1024;
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** Stand-ins for the registry (one channel) and the cluster (pages from memory), counting fetched pages. */
function world() {
  const versions = new Map<string, { manifest: Manifest; files: Record<string, Buffer> }>();
  let channel: string | null = null;
  const registry = {
    getChannel: async () => (channel ? { record: { version: channel, history: [], updatedAt: '' }, modRevision: '1' } : null),
    getVersion: async (name: string, version: string) => ({ name, version, mount: 'data', prefix: '', manifest: 'm', manifestSha256: 'x', pageSize: PAGE, files: 0, bytes: 0, pages: 0, uniquePages: 0, createdAt: '' }),
    reportAgent: async () => {},
    watchChannel: async () => ({ broken: false, close() {} }),
  };
  const fetcher = {
    fetched: 0,
    release() {},
    manifest: async (record: { version: string }) => versions.get(record.version)!.manifest,
    async pageChunks(manifest: Manifest, file: { path: string }, index: number) {
      fetcher.fetched++;
      const data = versions.get(manifest.version)!.files[file.path]!;
      return [Buffer.from(data.subarray(index * PAGE, (index + 1) * PAGE))];
    },
  };
  return {
    fetcher,
    publish(version: string, files: Record<string, Buffer>) {
      const manifest: Manifest = {
        ...{ schema: 1, name: 'app', version, createdAt: new Date().toISOString(), mount: 'data', prefix: '', pageSize: PAGE },
        files: Object.entries(files).map(([path, data]) => ({
          ...{ path, size: data.length, sourceVersion: 'x', sha256: sha(data) },
          pages: Array.from({ length: Math.ceil(data.length / PAGE) }, (_, i) => sha(data.subarray(i * PAGE, (i + 1) * PAGE))),
        })),
      };
      versions.set(version, { manifest, files });
      channel = version;
    },
    agent: (dir: string, keep: number, onSwitch?: string, log: string[] = []) =>
      new SyncAgent({ name: 'app', channel: 'prod', dir, keep, onSwitch, registry: registry as unknown as ReleaseRegistry, fetcher: fetcher as unknown as ReleaseFetcher, log: (l) => log.push(l) }),
  };
}

async function withDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-agent-'));
  try {
    await run(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const hookLog = (dir: string) => `echo "$FANOUT_VERSION $FANOUT_PREVIOUS $(test -n "$FANOUT_PREVIOUS" && test -d "$FANOUT_DIR/versions/$FANOUT_PREVIOUS" && echo kept)" >> ${join(dir, 'hook.log')}`;

test('the hook runs before old versions are pruned, and a failed history write neither undoes the switch nor skips the hook', async () => {
  await withDir(async (dir) => {
    const w = world();
    const releases = join(dir, 'releases');
    w.publish('v1', { 'a.bin': Buffer.alloc(3000, 1) });
    await w.agent(releases, 0, hookLog(dir)).syncOnce();
    w.publish('v2', { 'a.bin': Buffer.alloc(3000, 2) });
    const log: string[] = [];
    const agent = w.agent(releases, 0, hookLog(dir), log);
    agent.dir.recordSwitch = () => Promise.reject(Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' }));
    assert.equal(await agent.syncOnce(), 'v2');
    assert.equal(await agent.dir.currentVersion(), 'v2');
    // The hook saw the previous version still on disk (keep 0 prunes it only afterwards).
    assert.deepEqual((await readFile(join(dir, 'hook.log'), 'utf8')).trim().split('\n'), ['v1  ', 'v2 v1 kept']);
    assert.deepEqual(await agent.dir.installed(), ['v2']);
    assert.ok(log.some((l) => /recording the switch after the switch to v2 failed: ENOSPC/.test(l)), log.join('\n'));
    assert.equal(await agent.dir.pendingHook(), undefined);
  });
});

test('a switch whose hook never ran (the agent was killed in between) has it run by the next round', async () => {
  await withDir(async (dir) => {
    const w = world();
    const releases = join(dir, 'releases');
    w.publish('v1', { 'a.bin': Buffer.alloc(3000, 1) });
    const agent = w.agent(releases, 1, hookLog(dir));
    await agent.syncOnce();
    // What a kill right after the rename of `current` leaves: the pending switch recorded, no hook run for it.
    w.publish('v2', { 'a.bin': Buffer.alloc(3000, 2) });
    const killed = w.agent(releases, 1);
    await killed.syncOnce();
    await killed.dir.setPendingHook({ version: 'v2', previous: 'v1' });
    assert.equal(await agent.syncOnce(), 'v2');
    assert.deepEqual((await readFile(join(dir, 'hook.log'), 'utf8')).trim().split('\n'), ['v1  ', 'v2 v1 kept']);
    assert.equal(await agent.dir.pendingHook(), undefined);
    await agent.syncOnce();
    assert.equal((await readFile(join(dir, 'hook.log'), 'utf8')).trim().split('\n').length, 2, 'run once');
  });
});

test('a kept version whose deletion was cut short (no manifest) is staged again before a rollback switches to it', async () => {
  await withDir(async (dir) => {
    const w = world();
    const releases = join(dir, 'releases');
    const v1 = { 'a.bin': Buffer.alloc(3000, 1), 'b.bin': Buffer.alloc(2000, 3) };
    w.publish('v1', v1);
    const agent = w.agent(releases, 1);
    await agent.syncOnce();
    w.publish('v2', { 'a.bin': Buffer.alloc(3000, 2) });
    await agent.syncOnce();
    // What prune leaves when killed part-way: the manifest gone first, some files still there.
    await rm(agent.dir.manifestFile('v1'));
    await rm(join(agent.dir.versionDir('v1'), 'b.bin'));
    w.publish('v1', v1);
    const before = w.fetcher.fetched;
    assert.equal(await agent.syncOnce(), 'v1');
    assert.ok(w.fetcher.fetched > before, 'v1 staged again');
    assert.deepEqual((await readdir(join(releases, 'current'))).sort(), ['a.bin', 'b.bin']);
    assert.deepEqual(await readFile(join(releases, 'current', 'b.bin')), v1['b.bin']);
  });
});
