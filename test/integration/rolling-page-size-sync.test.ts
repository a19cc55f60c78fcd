import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fanoutJson } from '../harness/cli.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { waitFor } from '../harness/ports.js';
import { SyncProcess, currentVersion, treeHashes } from '../harness/release.js';
import { restartWithPageSize, startCluster, waitForRings, type WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;

/**
 * A running `fanout sync` (no --once) follows a channel while the cluster's three workers (etcd)
 * are restarted one by one from 1 MiB to 2 MiB pages. Releases published before the roll (their
 * manifests count in 1 MiB pages) are promoted in the middle of it: while the cluster holds both
 * sizes and one worker is down, one staged across the stop of the last worker of the old size,
 * and one while it is down (every page of the old size is refused or unreachable). One published
 * after the roll (2 MiB) is promoted after it, then one published before. A second agent, idle
 * through the roll, is given one of each size after it. The agents must switch to each with the
 * release's bytes, never install other bytes, and fail no round (a failed round is retried by the
 * agent itself, but says `PAGE_SIZE_MISMATCH … every worker of a cluster needs the same pageSize`
 * to an operator watching). Before (src/release/fetch.ts), the staging across the stop failed its
 * round so, and the next one staged the release.
 */
describe('a rolling restart of 3 workers from 1 MiB to 2 MiB pages under a running sync agent', () => {
  let root: string;
  let source: string;
  let etcd: EtcdServer;
  let workers: WorkerProcess[] = [];
  let common: string[];
  let agent: SyncProcess;
  // A second host's agent, on a channel nothing is promoted on during the roll.
  let idle: SyncProcess;
  const host = (name = 'host') => join(root, name);
  const log = (name = 'host') => join(root, `${name}.log`);
  /** The sha256 of every file of each version, by version. */
  const expected: Record<string, Record<string, string>> = {};

  async function publish(version: string, bigSize: number): Promise<void> {
    const dir = join(source, 'app', version);
    await mkdir(join(dir, 'sub'), { recursive: true });
    await writeFile(join(dir, 'model.bin'), randomBytes(bigSize));
    await writeFile(join(dir, 'sub/index.bin'), randomBytes(2 * MiB + 31));
    await writeFile(join(dir, 'small.txt'), `${version}\n`);
    expected[version] = await treeHashes(dir);
    await fanoutJson(['release', 'publish', 'app', `/data/app/${version}/`, '--version', version, '--mount', `data=${source}`, ...common]);
  }

  const promote = (version: string, channel = 'prod') => fanoutJson(['release', 'promote', 'app', version, '--channel', channel, ...common]);

  async function onVersion(version: string, name = 'host'): Promise<void> {
    try {
      await waitFor(`the agent of ${name} on ${version}`, async () => (await currentVersion(host(name))) === version, 45_000);
    } catch (err) {
      const text = await readFile(log(name), 'utf8').catch(() => '');
      throw new Error(`${(err as Error).message}; the agent's log:\n${text.split('\n').slice(-15).join('\n')}`);
    }
  }

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-roll-sync-'));
    source = join(root, 'source');
    await mkdir(source);
    etcd = await startEtcd();
    workers = await startCluster(3, { etcd: etcd.endpoint, mounts: { data: source }, pageSize: '1MiB' });
    // The agent's endpoint is the worker restarted last: the cluster's answers it is given say
    // 1 MiB until then, and that worker is down while the last release of the old size is staged.
    common = ['--etcd', etcd.endpoint, '--endpoint', workers[2]!.url];
    await publish('v1', 6 * MiB + 5);
    await promote('v1');
    await promote('v1', 'canary');
    // Published before the roll, in 1 MiB pages: promoted during it, and after it.
    await publish('mid', 9 * MiB + 4321);
    await publish('late', 7 * MiB + 999);
    await publish('pre', 3 * MiB + 77);
    await publish('big', 24 * MiB + 3);
  });

  after(async () => {
    await agent?.kill();
    await idle?.kill();
    await Promise.all(workers.map((w) => w.destroy()));
    await etcd?.stop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  test('the agent stages each release promoted during and after the roll with its bytes, and never installs other bytes', { timeout: 180_000 }, async () => {
    agent = SyncProcess.start(['app', '--channel', 'prod', '--host', 'host-a', '--interval', '1s', '--rate', '4MiB', ...common], host(), log());
    idle = SyncProcess.start(['app', '--channel', 'canary', '--host', 'host-b', '--interval', '1s', ...common], host('idle'), log('idle'));
    await onVersion('v1');
    await onVersion('v1', 'idle');
    assert.deepEqual(await treeHashes(join(host(), 'current')), expected.v1);
    assert.deepEqual(await treeHashes(join(host('idle'), 'current')), expected.v1);

    // Every version `current` is seen on, its tree checked (the link read again after hashing: a
    // switch meanwhile makes that look meaningless, not wrong).
    const seen: string[] = [];
    const wrong: string[] = [];
    let watching = true;
    const watch = (async () => {
      while (watching) {
        const link = await readlink(join(host(), 'current')).catch(() => undefined);
        if (link) {
          const version = link.split('/').pop()!;
          const hashes = await treeHashes(resolve(host(), link)).catch(() => undefined);
          if (hashes && (await readlink(join(host(), 'current')).catch(() => undefined)) === link) {
            if (seen.at(-1) !== version) seen.push(version);
            if (JSON.stringify(hashes) !== JSON.stringify(expected[version])) wrong.push(`${version}: ${JSON.stringify(hashes)}`);
          }
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();

    try {
      const [w1, w2, w3] = workers as [WorkerProcess, WorkerProcess, WorkerProcess];
      const back = (w: WorkerProcess) => waitForRings(workers, `${w.id} back in every ring`, 30_000);
      await restartWithPageSize(w1, '2MiB');
      await back(w1);
      // w1 at 2 MiB, w3 at 1 MiB, w2 down: a release of 1 MiB pages promoted and staged meanwhile.
      await restartWithPageSize(w2, '2MiB', async () => {
        await promote('mid');
        await onVersion('mid');
      });
      await back(w2);
      // A release of 1 MiB pages staged across the stop of the last worker of that size: its
      // first pages from the cluster of both sizes, the rest with no worker serving a 1 MiB page.
      // At 4 MiB/s (--rate), 24 MiB take six seconds: w3 stops once the first pages are written.
      await promote('big');
      await waitFor('the staging of big under way', async () => (await readdir(join(host(), '.parts-big')).catch(() => [])).length > 0, 30_000);
      // w1 and w2 at 2 MiB, w3 (the last of 1 MiB) down: no worker serves a 1 MiB page.
      await restartWithPageSize(w3, '2MiB', async () => {
        assert.notEqual(await currentVersion(host()), 'big', 'the staging of big still under way when w3 stopped');
        await onVersion('big');
        await promote('late');
        await onVersion('late');
      });
      await back(w3);

      // After the roll: a release published in 2 MiB pages.
      await publish('v2', 5 * MiB + 99);
      await promote('v2');
      await onVersion('v2');
      // And one published before the roll (1 MiB), the whole cluster at 2 MiB.
      await promote('pre');
      await onVersion('pre');
      // The agent idle through the roll (its session's facts from before it): a release of the
      // old size, then one of the new.
      await promote('pre', 'canary');
      await onVersion('pre', 'idle');
      assert.deepEqual(await treeHashes(join(host('idle'), 'current')), expected.pre);
      await promote('v2', 'canary');
      await onVersion('v2', 'idle');
      assert.deepEqual(await treeHashes(join(host('idle'), 'current')), expected.v2);
    } finally {
      watching = false;
      await watch;
    }

    for (const version of ['mid', 'big', 'late', 'v2', 'pre']) assert.ok(seen.includes(version), `current seen on ${version}: ${seen.join(' → ')}`);
    assert.deepEqual(wrong, [], 'current held other bytes than its release');
    assert.deepEqual(await treeHashes(join(host(), 'current')), expected.pre);
    const text = (await readFile(log(), 'utf8')) + (await readFile(log('idle'), 'utf8'));
    const failedRounds = text.split('\n').filter((line) => /current stays/.test(line));
    console.log(`versions: ${seen.join(' → ')}; failed rounds: ${failedRounds.length}\n${failedRounds.join('\n')}`);
    // A roll needs no operator: no round of the agent failed.
    assert.deepEqual(failedRounds, [], 'rounds of the agent failed during the roll');
  });
});
