import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, lstat, mkdir, mkdtemp, open, readFile, readdir, readlink, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SyncAgent, type SyncAgentOptions } from './agent.js';
import type { ReleaseFetcher } from './fetch.js';
import type { Manifest } from './manifest.js';
import { FanoutError } from '../core/errors.js';
import type { AgentState, ReleaseRegistry } from './registry.js';
import { procStat } from '../lib/procstat/index.js';

const PAGE = 1024;
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** Stand-ins for the registry (one channel) and the cluster (pages from memory), counting fetched pages. */
function world() {
  const versions = new Map<string, { manifest: Manifest; files: Record<string, Buffer> }>();
  let channel: string | null = null;
  const reports: AgentState[] = [];
  const registry = {
    getChannel: async () => (channel ? { record: { version: channel, history: [], updatedAt: '' }, modRevision: '1' } : null),
    getVersion: async (name: string, version: string) => ({ name, version, mount: 'data', prefix: '', manifest: 'm', manifestSha256: 'x', pageSize: PAGE, files: 0, bytes: 0, pages: 0, uniquePages: 0, createdAt: '' }),
    reportAgent: async (_name: string, state: AgentState) => void reports.push(state),
    claimAgent: async (_name: string, state: AgentState) => (reports.push(state), { claimed: true }),
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
    registry,
    reports,
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
    /** Points the channel at a version published before (a rollback). */
    rollBackTo(version: string) {
      channel = version;
    },
    agent: (dir: string, keep: number, onSwitch?: string, log: string[] = [], more: Partial<SyncAgentOptions> = {}) =>
      new SyncAgent({ name: 'app', channel: 'prod', dir, keep, onSwitch, registry: registry as unknown as ReleaseRegistry, fetcher: fetcher as unknown as ReleaseFetcher, log: (l) => log.push(l), ...more }),
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

/** Waits for a condition, polling; fails after 10 s. */
async function until(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Pids a hook wrote, one a line. */
const pidsIn = async (file: string) => (await readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean).map(Number);

/** Running and not a zombie (a killed agent's orphans are reaped by init, maybe late). */
const alive = (pid: number) => (procStat(pid)?.state ?? 'Z') !== 'Z';

/** The shell and a child of it write their pids, then hang: ending only the shell would leave the sleep. */
const hangingHook = (pids: string, ignoreTerm = false) => `${ignoreTerm ? "trap '' TERM; " : ''}echo $$ >> ${pids}; sleep 600 & echo $! >> ${pids}; wait`;

/** What a hook left when the test failed: the processes would outlive it. */
async function killAll(pids: string): Promise<void> {
  for (const pid of await pidsIn(pids)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

test('a hook that outlives --hook-timeout is ended with what it started, reported, and the next promotion is taken up', async () => {
  await withDir(async (dir) => {
    const w = world();
    const pids = join(dir, 'hook.pids');
    const log: string[] = [];
    // It ignores SIGTERM (and so does its sleep): only the SIGKILL after the grace ends it.
    const agent = w.agent(join(dir, 'releases'), 1, hangingHook(pids, true), log, { hookTimeoutMs: 300, hookGraceMs: 300, intervalMs: 50 });
    w.publish('v1', { 'a.bin': Buffer.alloc(3000, 1) });
    const stop = new AbortController();
    const running = agent.run(stop.signal);
    try {
      const reported = (version: string) => w.reports.some((r) => r.error === `on-switch hook timed out after 300 ms; the switch to ${version} stands`);
      await until('the timeout of the v1 hook reported', () => reported('v1'));
      const first = await pidsIn(pids);
      assert.equal(first.length, 2);
      await until('the v1 hook and its sleep gone', () => first.every((pid) => !alive(pid)));
      w.publish('v2', { 'a.bin': Buffer.alloc(3000, 2) });
      await until('v2 switched to and its hook timed out', () => reported('v2'));
      assert.equal(await agent.dir.currentVersion(), 'v2');
      const all = await pidsIn(pids);
      assert.equal(all.length, 4);
      await until('every hook process gone', () => all.every((pid) => !alive(pid)));
      assert.ok(log.some((l) => l.includes('on-switch hook timed out after 300 ms; the switch to v2 stands')), log.join('\n'));
    } finally {
      await killAll(pids);
      stop.abort();
      await running;
    }
  });
});

test('stopping the agent during a hanging hook ends the agent and the hook, which stays owed to the next start', async () => {
  await withDir(async (dir) => {
    const w = world();
    const pids = join(dir, 'hook.pids');
    // The default timeout (minutes): only the stop can end this hook.
    const agent = w.agent(join(dir, 'releases'), 1, hangingHook(pids), [], { hookGraceMs: 2000, heartbeatMs: 100 });
    w.publish('v1', { 'a.bin': Buffer.alloc(3000, 1) });
    const stop = new AbortController();
    const running = agent.run(stop.signal);
    try {
      await until('the hook started', async () => (await pidsIn(pids)).length === 2);
      const before = w.reports.length;
      await new Promise((r) => setTimeout(r, 700));
      // The host's record is renewed meanwhile (a 15 s lease), with what it last said: switching.
      const during = w.reports.slice(before);
      assert.ok(during.length >= 3, `${during.length} reports during the hook`);
      assert.ok(during.every((r) => r.phase === 'switching'));
      stop.abort();
      const stopped = await Promise.race([running.then(() => true), new Promise((r) => setTimeout(() => r(false), 5000))]);
      assert.ok(stopped, 'the agent stopped');
      await until('the hook and its sleep gone', async () => (await pidsIn(pids)).every((pid) => !alive(pid)));
      assert.deepEqual(await agent.dir.pendingHook(), { version: 'v1', previous: null });
      assert.equal(await agent.dir.currentVersion(), 'v1');
    } finally {
      await killAll(pids);
      stop.abort();
      await running;
    }
  });
});

test('sync --once renews the host record during a long hook, a pending one re-run included', async () => {
  await withDir(async (dir) => {
    const w = world();
    const releases = join(dir, 'releases');
    const agent = w.agent(releases, 1, 'sleep 0.8', [], { heartbeatMs: 100 });
    w.publish('v1', { 'a.bin': Buffer.alloc(3000, 1) });
    assert.equal(await agent.syncOnce(), 'v1');
    // staging, switching, then the renewals during the 0.8 s hook (the lease is 15 s: here 0.1 s), idle.
    const renewals = (from: number) => w.reports.slice(from).filter((r) => r.phase === 'switching').length - 1;
    assert.ok(renewals(0) >= 3, `${renewals(0)} renewals during the hook`);
    // What a kill during the hook leaves: the switch made, its hook owed. A new `--once` runs it.
    await agent.dir.setPendingHook({ version: 'v1', previous: null });
    const before = w.reports.length;
    assert.equal(await w.agent(releases, 1, 'sleep 0.8', [], { heartbeatMs: 100 }).syncOnce(), 'v1');
    assert.ok(renewals(before) >= 3, `${renewals(before)} renewals during the pending hook`);
    assert.equal(w.reports.at(-1)?.phase, 'idle');
  });
});

test('sync renews the host record during a long hook though the wall clock stepped back an hour meanwhile', async () => {
  await withDir(async (dir) => {
    const w = world();
    const agent = w.agent(join(dir, 'releases'), 1, 'sleep 0.8', [], { heartbeatMs: 100 });
    w.publish('v1', { 'a.bin': Buffer.alloc(3000, 1) });
    // The wall clock steps back an hour (an NTP step, a resumed VM) as the switch is reported, just
    // before the hook. Before, renewals were timed by Date.now(): none came for an hour, and the
    // host's record (a 15 s lease) dropped out of `release status` during any hook or download.
    const wallNow = Date.now;
    const reportAgent = w.registry.reportAgent;
    w.registry.reportAgent = async (name, state) => {
      if (state.phase === 'switching' && Date.now === wallNow) Date.now = () => wallNow() - 3_600_000;
      return reportAgent(name, state);
    };
    try {
      assert.equal(await agent.syncOnce(), 'v1');
    } finally {
      Date.now = wallNow;
    }
    const renewals = w.reports.filter((r) => r.phase === 'switching').length - 1;
    assert.ok(renewals >= 3, `${renewals} renewals during the 0.8 s hook (every 0.1 s)`);
  });
});

test('an agent whose host id another agent took (its record expired meanwhile) stops with HOST_IN_USE, from a heartbeat too', async () => {
  await withDir(async (dir) => {
    const w = world();
    const agent = w.agent(join(dir, 'releases'), 1, undefined, [], { heartbeatMs: 50, intervalMs: 60_000 });
    w.publish('v1', { 'a.bin': Buffer.alloc(3000, 1) });
    const stop = new AbortController();
    const running = agent.run(stop.signal);
    try {
      await until('v1 switched to', async () => (await agent.dir.currentVersion()) === 'v1' && w.reports.at(-1)?.phase === 'idle');
      // Idle now: only heartbeats report, and they are refused.
      w.registry.reportAgent = async () => {
        throw new FanoutError('HOST_IN_USE', 'host id h was taken by a live sync agent of /srv/b');
      };
      const ended = await Promise.race([running.then(() => 'returned', (err: FanoutError) => err.code), new Promise((r) => setTimeout(() => r('still running'), 3000))]);
      assert.equal(ended, 'HOST_IN_USE');
    } finally {
      stop.abort();
      await running.catch(() => {});
    }
  });
});


test('a version rolled back while it is staged is installed but never switched to: no hook runs for it', async () => {
  await withDir(async (dir) => {
    const w = world();
    const releases = join(dir, 'releases');
    w.publish('v1', { 'a.bin': Buffer.alloc(3000, 1) });
    const log: string[] = [];
    const agent = w.agent(releases, 2, hookLog(dir), log);
    await agent.syncOnce();
    w.publish('v2', { 'a.bin': Buffer.alloc(3000, 2) });
    // The rollback lands while v2's pages arrive.
    const pageChunks = w.fetcher.pageChunks;
    w.fetcher.pageChunks = async (manifest, file, index) => {
      if (manifest.version === 'v2') w.rollBackTo('v1');
      return pageChunks(manifest, file, index);
    };
    assert.equal(await agent.syncOnce(), 'v1');
    assert.deepEqual(await readFile(join(releases, 'current', 'a.bin')), Buffer.alloc(3000, 1));
    const hooks = (await readFile(join(dir, 'hook.log'), 'utf8')).trim().split('\n');
    assert.deepEqual(hooks.map((l) => l.split(' ')[0]), ['v1'], 'the hook ran for v1 once, never for v2');
    assert.ok(log.some((l) => /app@v2 installed but not switched to: prod moved to v1/.test(l)), log.join('\n'));
    assert.ok((await agent.dir.installed()).includes('v2'), 'v2 stays installed: a promotion back to it switches at once');
  });
});

test("what a killed agent left (another version's staging, parts) goes at the next agent's first round, even with nothing to switch", async () => {
  await withDir(async (dir) => {
    const w = world();
    const releases = join(dir, 'releases');
    w.publish('v1', { 'a.bin': Buffer.alloc(3000, 1) });
    await w.agent(releases, 1).syncOnce();
    // A round for v2 killed part-way, then the channel moved back to v1.
    await mkdir(join(releases, '.staging-v2', 'sub'), { recursive: true });
    await writeFile(join(releases, '.staging-v2', 'sub', 'big.bin'), Buffer.alloc(4096));
    await mkdir(join(releases, '.parts-v2'));
    assert.equal(await w.agent(releases, 1).syncOnce(), 'v1', 'a new agent (the restart), nothing to switch');
    const left = (await readdir(releases)).filter((name) => name.startsWith('.staging') || name.startsWith('.parts'));
    assert.deepEqual(left, [], 'the leftovers went');
  });
});

/** An agent that installed v1 (a.bin, sub/b.bin), then v2: current is v2, v1 is kept for a rollback. */
async function onV2KeepingV1(dir: string) {
  const w = world();
  const releases = join(dir, 'releases');
  const v1 = { 'a.bin': Buffer.alloc(3000, 1), 'sub/b.bin': Buffer.alloc(2000, 3) };
  w.publish('v1', v1);
  const log: string[] = [];
  const agent = w.agent(releases, 1, undefined, log);
  await agent.syncOnce();
  w.publish('v2', { 'a.bin': Buffer.alloc(3000, 2) });
  await agent.syncOnce();
  return { w, releases, v1, log, agent };
}

test('a rollback to a kept version whose files changed since they were verified stages it again: the switch gives the published bytes', async () => {
  await withDir(async (dir) => {
    const { w, releases, v1, log, agent } = await onV2KeepingV1(dir);
    // Another program edits one kept file in place and deletes another.
    await writeFile(join(agent.dir.versionDir('v1'), 'a.bin'), Buffer.alloc(3000, 9));
    await rm(join(agent.dir.versionDir('v1'), 'sub', 'b.bin'));
    w.rollBackTo('v1');
    assert.equal(await agent.syncOnce(), 'v1');
    assert.deepEqual(await readFile(join(releases, 'current', 'a.bin')), v1['a.bin']);
    assert.deepEqual(await readFile(join(releases, 'current', 'sub', 'b.bin')), v1['sub/b.bin']);
    assert.ok(log.some((l) => /app@v1: 2 installed file\(s\) changed since verified/.test(l)), log.join('\n'));
    // Untouched, a kept version is switched to as it is (no page fetched).
    w.rollBackTo('v2');
    const before = w.fetcher.fetched;
    assert.equal(await agent.syncOnce(), 'v2');
    assert.equal(w.fetcher.fetched, before, 'nothing fetched for an untouched kept version');
  });
});

test('a rollback to a kept version with an entry added to its tree stages it again before the switch: the hook runs once, on the manifest’s tree', async () => {
  await withDir(async (dir) => {
    const w = world();
    const releases = join(dir, 'releases');
    w.publish('v1', { 'a.bin': Buffer.alloc(3000, 1), 'sub/b.bin': Buffer.alloc(2000, 3) });
    const log: string[] = [];
    const agent = w.agent(releases, 1, hookLog(dir), log);
    await agent.syncOnce();
    w.publish('v2', { 'a.bin': Buffer.alloc(3000, 2) });
    await agent.syncOnce();
    // Another program adds a file and a directory to the kept version (its files untouched).
    await writeFile(join(agent.dir.versionDir('v1'), 'sub', 'extra.bin'), 'added');
    await mkdir(join(agent.dir.versionDir('v1'), 'scratch'));
    w.rollBackTo('v1');
    const fetched = w.fetcher.fetched;
    assert.equal(await agent.syncOnce(), 'v1');
    assert.deepEqual((await readdir(join(releases, 'current'), { recursive: true })).sort(), ['a.bin', 'sub', 'sub/b.bin'], 'the switch gave the manifest’s tree');
    assert.equal(w.fetcher.fetched, fetched, 'its files, untouched, are kept: nothing fetched');
    assert.ok(log.some((l) => /app@v1: .*scratch\/: not in the manifest.*; staging it again/.test(l)), log.join('\n'));
    // The next round finds nothing to repair: no second hook.
    await agent.syncOnce();
    const hooks = (await readFile(join(dir, 'hook.log'), 'utf8')).trim().split('\n').map((l) => l.trim());
    assert.deepEqual(hooks, ['v1', 'v2 v1 kept', 'v1 v2 kept'], 'one hook per switch, none for a repair');
  });
});

test('a rollback to a kept version with a directory replaced by a link to an outside copy stages it again: the switch gives a real directory', async () => {
  await withDir(async (dir) => {
    const { w, releases, v1, log, agent } = await onV2KeepingV1(dir);
    const outside = join(dir, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'b.bin'), v1['sub/b.bin']);
    await rm(join(agent.dir.versionDir('v1'), 'sub'), { recursive: true });
    await symlink(outside, join(agent.dir.versionDir('v1'), 'sub'));
    w.rollBackTo('v1');
    assert.equal(await agent.syncOnce(), 'v1');
    assert.ok((await lstat(join(releases, 'current', 'sub'))).isDirectory(), 'a real directory, not the link');
    assert.deepEqual(await readFile(join(releases, 'current', 'sub', 'b.bin')), v1['sub/b.bin']);
    assert.ok(log.some((l) => /app@v1: .*sub\/: not a directory.*; staging it again/.test(l)), log.join('\n'));
  });
});

test('a rollback to a kept version with one file edited reads again only that file, not the whole version', async () => {
  await withDir(async (dir) => {
    const w = world();
    const releases = join(dir, 'releases');
    w.publish('v1', { 'a.bin': Buffer.alloc(3000, 1), 'big.bin': Buffer.alloc(50_000, 5) });
    const log: string[] = [];
    const agent = w.agent(releases, 1, undefined, log);
    await agent.syncOnce();
    w.publish('v2', { 'a.bin': Buffer.alloc(3000, 2) });
    await agent.syncOnce();
    await writeFile(join(agent.dir.versionDir('v1'), 'a.bin'), Buffer.alloc(3000, 9));
    w.rollBackTo('v1');
    assert.equal(await agent.syncOnce(), 'v1');
    assert.deepEqual(await readFile(join(releases, 'current', 'big.bin')), Buffer.alloc(50_000, 5));
    const staged = log.filter((l) => l.startsWith('staged app@v1:')).at(-1);
    assert.match(staged ?? log.join('\n'), /50000 resumed, 3000 of them read again to verify/, 'the untouched file is kept on its stamp');
  });
});

/** What a reader of DIR/current sees: each file's bytes, or null where it cannot read one. */
async function readerView(releases: string, paths: string[]): Promise<Record<string, Buffer | null>> {
  const view: Record<string, Buffer | null> = {};
  for (const p of paths) view[p] = await readFile(join(releases, 'current', p)).catch(() => null);
  return view;
}

const damages: { what: string; path: string; reason: string; damage: (file: string) => Promise<void> }[] = [
  { what: 'deleted', path: 'sub/b.bin', reason: 'missing', damage: (file) => rm(file) },
  { what: 'truncated', path: 'a.bin', reason: 'size', damage: (file) => truncate(file, 100) },
  {
    what: 'edited in place (same size)',
    path: 'a.bin',
    reason: 'content',
    damage: async (file) => {
      const handle = await open(file, 'r+');
      await handle.write(Buffer.alloc(16, 7), 0, 16, 1000);
      await handle.close();
    },
  },
];

for (const { what, path, reason, damage } of damages) {
  test(`a file of the current version ${what} is reported as RELEASE_DAMAGED at the next round and repaired: current only ever points to a whole tree`, async () => {
    await withDir(async (dir) => {
      const w = world();
      const releases = join(dir, 'releases');
      const v1 = { 'a.bin': Buffer.alloc(3000, 1), 'sub/b.bin': Buffer.alloc(2000, 3), 'c.bin': Buffer.alloc(5000, 4) };
      const paths = Object.keys(v1);
      w.publish('v1', v1);
      const log: string[] = [];
      const agent = w.agent(releases, 1, hookLog(dir), log);
      await agent.syncOnce();
      await damage(join(agent.dir.versionDir('v1'), path));
      const damaged = await readerView(releases, paths);
      // While the repair is staged, readers see the tree as it was: damaged, nothing else changed.
      const pageChunks = w.fetcher.pageChunks;
      let checkedDuringStaging = 0;
      w.fetcher.pageChunks = async (manifest, file, index) => {
        assert.equal(await readlink(join(releases, 'current')), join('versions', 'v1'));
        assert.deepEqual(await readerView(releases, paths), damaged);
        checkedDuringStaging++;
        return pageChunks(manifest, file, index);
      };
      // Every tree `current` is pointed to is whole before it is, and after.
      const targets: string[] = [];
      const pointCurrentAt = agent.dir.pointCurrentAt.bind(agent.dir);
      agent.dir.pointCurrentAt = async (target) => {
        for (const p of paths) assert.deepEqual(await readFile(join(releases, target, p)), v1[p as keyof typeof v1], `${target}/${p} before the switch`);
        await pointCurrentAt(target);
        assert.deepEqual(await readerView(releases, paths), v1);
        targets.push(target);
      };
      assert.equal(await agent.syncOnce(), 'v1');
      assert.ok(checkedDuringStaging > 0, 'the damaged file was fetched again');
      assert.deepEqual(targets, [join('.repair-v1', 'v1'), join('versions', 'v1')]);
      assert.deepEqual(await readerView(releases, paths), v1);
      assert.equal(await readlink(join(releases, 'current')), join('versions', 'v1'));
      assert.deepEqual((await readdir(releases)).filter((n) => n.startsWith('.repair') || n.startsWith('.staging')), []);
      const message = `RELEASE_DAMAGED: 1 file(s) of v1 damaged (${path}: ${reason})`;
      assert.ok(w.reports.some((r) => r.phase === 'staging' && r.error === `${message}; repairing`), JSON.stringify(w.reports.map((r) => r.error)));
      assert.equal(w.reports.at(-1)?.phase, 'idle');
      assert.ok(w.reports.at(-1)?.error?.startsWith(`${message}; repaired at `), w.reports.at(-1)?.error ?? 'no error');
      assert.ok(log.some((l) => l.includes(`1 file(s) of v1 damaged (${path}: ${reason})`) && l.includes('repairing')), log.join('\n'));
      assert.deepEqual({ damaged: agent.health().damagedFiles, repairs: agent.health().repairs }, { damaged: 1, repairs: 1 });
      // The hook has the service reopen its files: FANOUT_PREVIOUS is the version itself.
      assert.deepEqual((await readFile(join(dir, 'hook.log'), 'utf8')).trim().split('\n'), ['v1  ', 'v1 v1 kept']);
      // The repaired tree is stamped: the next round reads nothing again and finds nothing.
      w.fetcher.pageChunks = pageChunks;
      const fetched = w.fetcher.fetched;
      await agent.syncOnce();
      assert.equal(w.fetcher.fetched, fetched);
      assert.equal(agent.health().damagedFiles, 1);
      assert.deepEqual(await agent.dir.changedFiles((await agent.dir.manifestOf('v1'))!), []);
    });
  });
}

test('with repair off (--no-repair), a damaged file of the current version is reported as an error and left as it is', async () => {
  await withDir(async (dir) => {
    const w = world();
    const releases = join(dir, 'releases');
    w.publish('v1', { 'a.bin': Buffer.alloc(3000, 1), 'b.bin': Buffer.alloc(2000, 3) });
    const log: string[] = [];
    const agent = w.agent(releases, 1, undefined, log, { repair: false });
    await agent.syncOnce();
    await truncate(join(releases, 'current', 'b.bin'), 10);
    const fetched = w.fetcher.fetched;
    // `--once` exits non-zero: the round leaves the version damaged.
    const leftDamaged = (err: unknown) => err instanceof FanoutError && err.code === 'RELEASE_DAMAGED' && err.message.endsWith('(b.bin: size) in ' + join(releases, 'current') + '; not repaired (--no-repair)');
    await assert.rejects(agent.syncOnce(), leftDamaged);
    assert.equal(w.fetcher.fetched, fetched);
    assert.equal((await readFile(join(releases, 'current', 'b.bin'))).length, 10);
    assert.deepEqual(
      { phase: w.reports.at(-1)?.phase, error: w.reports.at(-1)?.error },
      { phase: 'error', error: 'RELEASE_DAMAGED: 1 file(s) of v1 damaged (b.bin: size); not repaired (--no-repair)' },
    );
    // Counted once, however many rounds find it.
    await assert.rejects(agent.syncOnce(), leftDamaged);
    assert.equal(agent.health().damagedFiles, 1);
  });
});

test('a file of the current version touched but intact (chmod, rewritten with the same bytes) is not reported, and is stamped again', async () => {
  await withDir(async (dir) => {
    const w = world();
    const releases = join(dir, 'releases');
    const v1 = { 'a.bin': Buffer.alloc(3000, 1), 'b.bin': Buffer.alloc(2000, 3) };
    w.publish('v1', v1);
    const log: string[] = [];
    const agent = w.agent(releases, 1, undefined, log);
    await agent.syncOnce();
    await chmod(join(releases, 'current', 'a.bin'), 0o600);
    await writeFile(join(releases, 'current', 'b.bin'), v1['b.bin']);
    const manifest = (await agent.dir.manifestOf('v1'))!;
    assert.deepEqual((await agent.dir.changedFiles(manifest)).sort(), ['a.bin', 'b.bin']);
    const fetched = w.fetcher.fetched;
    assert.equal(await agent.syncOnce(), 'v1');
    assert.equal(w.fetcher.fetched, fetched);
    assert.deepEqual({ phase: w.reports.at(-1)?.phase, error: w.reports.at(-1)?.error }, { phase: 'idle', error: null });
    assert.ok(!log.some((l) => l.includes('damaged')), log.join('\n'));
    // Stamped again: a later rollback to v1 (or the next round) does not read them again.
    assert.deepEqual(await agent.dir.changedFiles(manifest), []);
    assert.equal(agent.health().damagedFiles, 0);
  });
});

test('a repair cut short after current moved to its copy is completed by the next round: current back on versions/V, whole, the hook run', async () => {
  await withDir(async (dir) => {
    const w = world();
    const releases = join(dir, 'releases');
    const v1 = { 'a.bin': Buffer.alloc(3000, 1), 'b.bin': Buffer.alloc(2000, 3) };
    w.publish('v1', v1);
    const agent = w.agent(releases, 1, hookLog(dir));
    await agent.syncOnce();
    await rm(join(releases, 'current', 'b.bin'));
    // The switch back to versions/v1 fails (what a kill there leaves).
    const pointCurrentAt = agent.dir.pointCurrentAt.bind(agent.dir);
    agent.dir.pointCurrentAt = async (target) => {
      if (target === join('versions', 'v1')) throw new Error('killed');
      await pointCurrentAt(target);
    };
    await assert.rejects(agent.syncOnce());
    assert.equal(await readlink(join(releases, 'current')), join('.repair-v1', 'v1'));
    assert.deepEqual(await readerView(releases, Object.keys(v1)), v1);
    const restarted = w.agent(releases, 1, hookLog(dir));
    assert.equal(await restarted.syncOnce(), 'v1');
    assert.equal(await readlink(join(releases, 'current')), join('versions', 'v1'));
    assert.deepEqual(await readerView(releases, Object.keys(v1)), v1);
    assert.ok(!(await readdir(releases)).some((n) => n.startsWith('.repair')));
    assert.deepEqual((await readFile(join(dir, 'hook.log'), 'utf8')).trim().split('\n'), ['v1  ', 'v1 v1 kept']);
    assert.deepEqual(await restarted.dir.changedFiles((await restarted.dir.manifestOf('v1'))!), []);
  });
});

test('a --dir remounted read-only (errors=remount-ro) fails a new version with INVALID_CONFIG naming what it cannot write; current stays whole', { skip: process.getuid?.() !== 0 ? 'needs root (a tmpfs mount)' : false }, async () => {
  await withDir(async (dir) => {
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir]);
    assert.equal(mounted.status, 0, String(mounted.stderr));
    try {
      const w = world();
      const releases = join(dir, 'releases');
      w.publish('v1', { 'a.bin': Buffer.alloc(3000, 1) });
      const agent = w.agent(releases, 1);
      await agent.syncOnce();
      assert.equal(spawnSync('mount', ['-o', 'remount,ro', dir]).status, 0);
      assert.equal(await agent.syncOnce(), 'v1', 'idle on its version, the host goes on');
      w.publish('v2', { 'a.bin': Buffer.alloc(3000, 2) });
      await assert.rejects(agent.syncOnce(), (err: FanoutError) => err.code === 'INVALID_CONFIG' && /cannot write .*\.parts-v2.*read-only file system/.test(err.message));
      assert.equal(await readlink(join(releases, 'current')), join('versions', 'v1'));
      assert.deepEqual(await readFile(join(releases, 'current', 'a.bin')), Buffer.alloc(3000, 1));
    } finally {
      spawnSync('umount', ['-l', dir]);
    }
  });
});
