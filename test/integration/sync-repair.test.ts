import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, readdir, readlink, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { startCluster, type WorkerProcess } from '../harness/workers.js';
import { fanout, fanoutJson, sha256 } from '../harness/cli.js';
import { treeHashes } from '../harness/release.js';

const MiB = 1024 * 1024;

interface HostStatus {
  host: string;
  current: string | null;
  phase: string;
  error: string | null;
}

/**
 * The repair of the current version by the real CLI (`fanout sync --once`) against a real etcd
 * and worker: the unit tests of guard.ts and repair.ts use a fake registry and cluster.
 */
describe('the sync agent repairs damage to the current version: real CLI, etcd and worker', () => {
  let etcd: EtcdServer;
  let workers: WorkerProcess[];
  let root: string;
  let source: string;
  let common: string[];
  /** Path → the published bytes. */
  const files: Record<string, Buffer> = {
    'a.bin': randomBytes(2 * MiB + 5),
    'sub/b.bin': randomBytes(300 * 1024),
    'c.bin': randomBytes(MiB + 7),
    'small.txt': Buffer.from('a small file\n'),
  };

  const status = async (host: string) =>
    ((await fanoutJson(['release', 'status', 'rep', ...common])) as { agents: HostStatus[] }).agents.find((a) => a.host === host);
  const syncOnce = (dir: string, host: string, more: string[] = []) =>
    fanout(['sync', 'rep', '--channel', 'prod', '--once', '--dir', dir, '--host', host, ...more, ...common]);

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-sync-repair-'));
    source = join(root, 'source');
    for (const [path, data] of Object.entries(files)) {
      await mkdir(dirname(join(source, 'rep/v1', path)), { recursive: true });
      await writeFile(join(source, 'rep/v1', path), data);
    }
    etcd = await startEtcd();
    workers = await startCluster(1, { etcd: etcd.endpoint, mounts: { data: source }, pageSize: '1MiB' });
    common = ['--etcd', etcd.endpoint, '--endpoint', workers[0]!.url];
    await fanoutJson(['release', 'publish', 'rep', '/data/rep/v1/', '--version', 'v1', '--mount', `data=${source}`, ...common]);
    await fanoutJson(['release', 'promote', 'rep', 'v1', '--channel', 'prod', ...common]);
  });

  after(async () => {
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await etcd?.stop();
    await rm(root, { recursive: true, force: true });
  });

  test('a file deleted, one truncated and one edited in place (same size): `sync --once` reports RELEASE_DAMAGED, repairs them to the published bytes, current always whole, the hook run', async () => {
    const dir = join(root, 'host-a');
    const hookLog = join(root, 'hook-a.log');
    const hook = ['--on-switch', `echo "$FANOUT_VERSION $FANOUT_PREVIOUS" >> ${hookLog}`];
    const first = await syncOnce(dir, 'host-a', hook);
    assert.equal(first.code, 0, first.stderr);
    const published = await treeHashes(join(source, 'rep/v1'));
    assert.deepEqual(await treeHashes(join(dir, 'current')), published);

    await rm(join(dir, 'current/sub/b.bin'));
    await truncate(join(dir, 'current/a.bin'), 100);
    const handle = await open(join(dir, 'current/c.bin'), 'r+');
    await handle.write(Buffer.alloc(64, 7), 0, 64, 4096);
    await handle.close();
    const damaged: Record<string, string | null> = {};
    for (const path of Object.keys(files)) damaged[path] = await readFile(join(dir, 'current', path)).then(sha256, () => null);

    // Readers of current/ while the repair runs (paced: --rate) see the damaged tree or the
    // published one, file by file, never anything else (a missing file that was not deleted).
    let reading = true;
    const seen = new Map<string, Set<string>>();
    const reader = (async () => {
      while (reading) {
        for (const path of Object.keys(files)) {
          const got = await readFile(join(dir, 'current', path)).then(sha256, () => null);
          const view = got === published[path] ? 'published' : got === damaged[path] ? 'damaged' : `other: ${got}`;
          seen.set(path, (seen.get(path) ?? new Set()).add(view));
        }
      }
    })();
    const statuses: HostStatus[] = [];
    const watcher = (async () => {
      while (reading) {
        const s = await status('host-a').catch(() => undefined);
        if (s) statuses.push(s);
      }
    })();
    const repair = await syncOnce(dir, 'host-a', [...hook, '--rate', '1MiB']);
    reading = false;
    await Promise.all([reader, watcher]);

    assert.equal(repair.code, 0, repair.stderr);
    assert.match(repair.stderr, /3 file\(s\) of v1 damaged \(.*\) in .*; repairing/);
    assert.deepEqual(await treeHashes(join(dir, 'current')), published, 'the published bytes, sha256 against the source');
    assert.equal(await readlink(join(dir, 'current')), join('versions', 'v1'));
    assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('.repair') || n.startsWith('.staging') || n.startsWith('.parts')), []);
    for (const [path, views] of seen) assert.deepEqual([...views].filter((v) => v !== 'published' && v !== 'damaged'), [], `${path}: ${[...views].join(', ')}`);
    assert.ok(seen.get('a.bin')?.has('published'), 'a reader saw the repaired tree before the command ended');
    assert.equal((await readFile(hookLog, 'utf8')).trim(), 'v1 \nv1 v1', 'the hook ran after the switch, then after the repair');

    const damage = /^RELEASE_DAMAGED: 3 file\(s\) of v1 damaged \((.*)\)/;
    const named = (error: string | null) => (damage.exec(error ?? '')?.[1] ?? '').split(', ').sort();
    assert.deepEqual(named((await status('host-a'))?.error ?? null), ['a.bin: size', 'c.bin: content', 'sub/b.bin: missing']);
    const last = await status('host-a');
    assert.equal(last?.phase, 'idle');
    assert.match(last?.error ?? '', /; repaired at \d{4}-/);
    assert.ok(
      statuses.some((s) => s.phase === 'staging' && /^RELEASE_DAMAGED: .*; repairing$/.test(s.error ?? '')),
      `reported while repairing: ${JSON.stringify(statuses.map((s) => [s.phase, s.error]))}`,
    );

    // The next round finds the version whole: reported healthy, nothing fetched, no hook.
    const next = await syncOnce(dir, 'host-a', hook);
    assert.equal(next.code, 0, next.stderr);
    assert.doesNotMatch(next.stderr, /damaged/);
    assert.deepEqual(await status('host-a').then((s) => [s?.phase, s?.error]), ['idle', null]);
    assert.equal((await readFile(hookLog, 'utf8')).trim().split('\n').length, 2);
  });

  test('with --no-repair, damage is reported (RELEASE_DAMAGED, phase error) and left as it is; a later round without it repairs', async () => {
    const dir = join(root, 'host-b');
    assert.equal((await syncOnce(dir, 'host-b')).code, 0);
    await truncate(join(dir, 'current/a.bin'), 10);
    const kept = await syncOnce(dir, 'host-b', ['--no-repair']);
    assert.match(kept.stderr, /1 file\(s\) of v1 damaged \(a\.bin: size\) in .*; not repaired \(--no-repair\)/);
    assert.equal((await readFile(join(dir, 'current/a.bin'))).length, 10, 'left as it is');
    assert.deepEqual(await status('host-b').then((s) => [s?.phase, s?.error]), ['error', 'RELEASE_DAMAGED: 1 file(s) of v1 damaged (a.bin: size); not repaired (--no-repair)']);
    assert.notEqual(kept.code, 0, 'the round left the current version damaged');
    const repaired = await syncOnce(dir, 'host-b');
    assert.equal(repaired.code, 0, repaired.stderr);
    assert.deepEqual(await treeHashes(join(dir, 'current')), await treeHashes(join(source, 'rep/v1')));
  });

  test('a file and a directory added under current/ that the manifest does not list: reported as RELEASE_DAMAGED (kept with --no-repair), and a repair leaves exactly the manifest', async () => {
    const dir = join(root, 'host-c');
    const hookLog = join(root, 'hook-c.log');
    const hook = ['--on-switch', `echo "$FANOUT_VERSION $FANOUT_PREVIOUS" >> ${hookLog}`];
    assert.equal((await syncOnce(dir, 'host-c', hook)).code, 0);
    await writeFile(join(dir, 'current/extra.bin'), 'added by another program');
    await mkdir(join(dir, 'current/sub/scratch'), { recursive: true });
    await writeFile(join(dir, 'current/sub/scratch/notes.txt'), 'a user wrote here');
    const message = '2 file(s) of v1 damaged (extra.bin: not in the manifest, sub/scratch/: not in the manifest)';

    const kept = await syncOnce(dir, 'host-c', [...hook, '--no-repair']);
    assert.notEqual(kept.code, 0);
    assert.ok(kept.stderr.includes(`${message} in ${join(dir, 'current')}; not repaired (--no-repair)`), kept.stderr);
    assert.deepEqual(await status('host-c').then((s) => [s?.phase, s?.error]), ['error', `RELEASE_DAMAGED: ${message}; not repaired (--no-repair)`]);
    assert.equal(await readFile(join(dir, 'current/sub/scratch/notes.txt'), 'utf8'), 'a user wrote here', 'left as it is');

    const repaired = await syncOnce(dir, 'host-c', hook);
    assert.equal(repaired.code, 0, repaired.stderr);
    assert.ok(repaired.stderr.includes(`${message} in ${join(dir, 'current')}; repairing`), repaired.stderr);
    assert.deepEqual(await treeHashes(join(dir, 'current')), await treeHashes(join(source, 'rep/v1')), 'exactly the manifest: the added entries are gone');
    assert.match((await status('host-c'))?.error ?? '', new RegExp(`^RELEASE_DAMAGED: ${message.replace(/[()]/g, '\\$&')}; repaired at `));
    assert.equal((await readFile(hookLog, 'utf8')).trim(), 'v1 \nv1 v1');
    const next = await syncOnce(dir, 'host-c', hook);
    assert.equal(next.code, 0, next.stderr);
    assert.deepEqual(await status('host-c').then((s) => [s?.phase, s?.error]), ['idle', null]);
  });
});
