import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readlinkSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { startCluster, type WorkerProcess } from '../harness/workers.js';
import { fanoutJson } from '../harness/cli.js';
import { waitFor } from '../harness/ports.js';
import { SyncProcess, currentVersion, treeHashes } from '../harness/release.js';
import { hasPrlimit, lowestFreeFd, setSoftNofile } from '../harness/fds.js';

/**
 * A sync agent out of file descriptors while a release of many small files is promoted (found by
 * a fault hunt): the round fails with a code that says so, nothing is half installed, the agent
 * stays up, leaks no fd and installs the release once fds are free.
 */

/** What `pid` has open other than sockets (files, pipes), by fd and target. */
function filesOf(pid: number): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (!target.startsWith('socket:')) out.push(`${fd} ${target}`);
    } catch {
      // closed meanwhile
    }
  }
  return out.sort();
}

/** filesOf(pid) once two looks 300 ms apart agree: the agent between rounds, nothing open for a moment. */
async function settledFilesOf(pid: number): Promise<string[]> {
  let last = filesOf(pid);
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 300));
    const now = filesOf(pid);
    if (JSON.stringify(now) === JSON.stringify(last)) return now;
    last = now;
  }
  return last;
}

describe('the sync agent out of file descriptors', { skip: !hasPrlimit() && 'needs Linux and util-linux prlimit' }, () => {
  let etcd: EtcdServer;
  let workers: WorkerProcess[];
  let root: string;
  let source: string;
  let common: string[];

  const tree = async (version: string, files: number) => {
    for (let d = 0; d < 4; d++) {
      await mkdir(join(source, `app/${version}/d${d}`), { recursive: true });
      await Promise.all(Array.from({ length: files / 4 }, (_, i) => writeFile(join(source, `app/${version}/d${d}/f${i}.bin`), randomBytes(1000 + i))));
    }
  };

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-sync-fds-'));
    source = join(root, 'source');
    await tree('v1', 40);
    await tree('v2', 400);
    etcd = await startEtcd();
    workers = await startCluster(1, { etcd: etcd.endpoint, mounts: { data: source } });
    common = ['--etcd', etcd.endpoint, '--endpoint', workers[0]!.url];
    for (const version of ['v1', 'v2']) await fanoutJson(['release', 'publish', 'app', `/data/app/${version}/`, '--version', version, '--mount', `data=${source}`, ...common]);
    await fanoutJson(['release', 'promote', 'app', 'v1', '--channel', 'prod', ...common]);
  });

  after(async () => {
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await etcd?.stop();
    await rm(root, { recursive: true, force: true });
  });

  test('a round that meets EMFILE fails as OVERLOADED, leaves current and the state files as they were, and the next round with fds free installs the release', async () => {
    const dir = join(root, 'agent');
    const logFile = join(root, 'agent.log');
    const agent = SyncProcess.start(['app', '--channel', 'prod', '--host', 'fds', '--interval', '1h', ...common], dir, logFile);
    const log = () => readFile(logFile, 'utf8').catch(() => '');
    try {
      await waitFor('v1 installed', async () => (await currentVersion(dir)) === 'v1', 60_000);
      const pid = agent.proc.pid!;
      await waitFor('v1 recorded', async () => (await readFile(join(dir, '.history.json'), 'utf8').catch(() => '')).includes('v1'), 60_000);
      const history = await readFile(join(dir, '.history.json'), 'utf8');
      const files = await settledFilesOf(pid);

      setSoftNofile(pid, lowestFreeFd(pid)); // every fd number below the limit in use: its next open fails with EMFILE
      await fanoutJson(['release', 'promote', 'app', 'v2', '--channel', 'prod', ...common]);
      await waitFor('a round failed', async () => /sync app\/prod: \w+: .*EMFILE/.test(await log()), 60_000);
      const failed = (await log()).split('\n').find((line) => /EMFILE/.test(line))!;
      assert.equal(await currentVersion(dir), 'v1');
      assert.equal(agent.proc.exitCode, null, 'the agent is up');
      assert.deepEqual(await readdir(join(dir, 'versions')), ['v1'], 'nothing of v2 installed');
      assert.equal(await readFile(join(dir, '.history.json'), 'utf8'), history);
      setSoftNofile(pid, 1024);

      // Before: "INTERNAL: EMFILE: too many open files, scandir '…/agent'" (as for a bug in fanout).
      assert.match(failed, /sync app\/prod: OVERLOADED: this sync agent has no file descriptor left \(EMFILE: its open-file limit, ulimit -n or LimitNOFILE, is \d+\); the round is tried again \(.*EMFILE.*\) \(current stays v1\)/, failed);

      await waitFor('v2 installed once fds are free', async () => (await currentVersion(dir)) === 'v2', 60_000);
      const want = await treeHashes(join(source, 'app/v2'));
      assert.deepEqual(await treeHashes(join(dir, 'current')), want);
      assert.equal(Object.keys(want).length, 400);
      assert.deepEqual((await readdir(dir)).filter((name) => /^\.(staging|parts)-/.test(name)), [], 'no staging left');
      JSON.parse(await readFile(join(dir, '.history.json'), 'utf8'));
      assert.deepEqual(await settledFilesOf(pid), files, 'no file or pipe left open');
    } finally {
      await agent.kill();
    }
  });
});
