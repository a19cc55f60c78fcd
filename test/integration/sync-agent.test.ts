import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { startCluster, type WorkerProcess } from '../harness/workers.js';
import { waitFor } from '../harness/ports.js';
import { fanout, fanoutJson } from '../harness/cli.js';
import { SyncProcess, currentVersion, fanoutOnAnotherMachine } from '../harness/release.js';
import { procStat } from '../../src/lib/procstat/index.js';

/** Running and not a zombie (a killed agent's orphans are reaped by init, maybe late). */
const alive = (pid: number) => (procStat(pid)?.state ?? 'Z') !== 'Z';

const pidsIn = async (file: string) => (await readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean).map(Number);

/** What a test that failed left running: hook processes would outlive it. */
async function killAll(pids: number[]): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

describe('the sync agent on a host: hooks left by a kill, one host record per agent', () => {
  let etcd: EtcdServer;
  let workers: WorkerProcess[];
  let root: string;
  let common: string[];

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-sync-agent-'));
    const source = join(root, 'source');
    await mkdir(join(source, 'app/v1'), { recursive: true });
    await writeFile(join(source, 'app/v1/a.txt'), 'v1\n');
    etcd = await startEtcd();
    workers = await startCluster(1, { etcd: etcd.endpoint, mounts: { data: source } });
    common = ['--etcd', etcd.endpoint, '--endpoint', workers[0]!.url];
    await fanoutJson(['release', 'publish', 'app', '/data/app/v1/', '--version', 'v1', '--mount', `data=${source}`, ...common]);
    await fanoutJson(['release', 'promote', 'app', 'v1', '--channel', 'prod', ...common]);
  });

  after(async () => {
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await etcd?.stop();
    await rm(root, { recursive: true, force: true });
  });

  test('a hook left running by a SIGKILLed agent is ended by the next start before the owed hook runs again', async () => {
    const dir = join(root, 'killed-hook');
    const pids = join(root, 'hook.pids');
    // The shell and what it started write their pids, then hang: only the whole group's end stops both.
    const hanging = `echo $$ >> ${pids}; sleep 600 & echo $! >> ${pids}; wait`;
    const agent = SyncProcess.start(['app', '--channel', 'prod', '--host', 'killed-hook', '--on-switch', hanging, ...common], dir, join(root, 'killed-hook.log'));
    let first: number[] = [];
    try {
      await waitFor('the hook started', async () => (await pidsIn(pids)).length === 2, 30_000);
      first = await pidsIn(pids);
      await agent.kill('SIGKILL');
      assert.ok(first.every(alive), 'a SIGKILL of the agent leaves the hook running');
      // The owed hook, run again, notes which of the first hook's processes it saw alive.
      const seen = join(root, 'seen');
      const check = `for p in ${first.join(' ')}; do s=$(cut -d' ' -f3 /proc/$p/stat 2>/dev/null); echo "$p \${s:-gone}"; done > ${seen}`;
      const again = await fanout(['sync', 'app', '--channel', 'prod', '--once', '--dir', dir, '--host', 'killed-hook', '--on-switch', check, ...common]);
      assert.equal(again.code, 0, again.stderr);
      const states = (await readFile(seen, 'utf8')).trim().split('\n').map((line) => line.split(' ')[1]);
      assert.ok(states.every((s) => s === 'gone' || s === 'Z'), `the first hook's processes when the second ran: ${states.join(', ')}`);
      assert.match(again.stderr, new RegExp(`ended the on-switch hook for v1 left running by an earlier agent \\(process group ${first[0]}\\)`));
      assert.ok(first.every((pid) => !alive(pid)));
      await assert.rejects(stat(join(dir, '.hook-running.json')), 'forgotten once ended');
      assert.equal(await currentVersion(dir), 'v1');
    } finally {
      await killAll(first);
      await agent.kill();
    }
  });

  test('two agents on one host for two directories, no --host: the second stops with HOST_IN_USE and the first keeps its record', async () => {
    const first = join(root, 'service-a');
    const second = join(root, 'service-b');
    const agent = SyncProcess.start(['app', '--channel', 'prod', '--interval', '1s', ...common], first, join(root, 'service-a.log'));
    const mine = async () => ((await fanoutJson(['release', 'status', 'app', ...common])) as { agents: { host: string; dir: string }[] }).agents.filter((a) => a.host === hostname());
    try {
      await waitFor('the first agent on v1 and listed', async () => (await currentVersion(first)) === 'v1' && (await mine()).length === 1, 30_000);
      const refused = await fanout(['sync', 'app', '--channel', 'prod', '--once', '--dir', second, '--json', ...common]);
      assert.notEqual(refused.code, 0);
      const error = (JSON.parse(refused.stdout.toString()) as { error: { code: string; message: string } }).error;
      assert.equal(error.code, 'HOST_IN_USE');
      assert.ok(error.message.includes(`live sync agent of ${first}`) && error.message.includes('--host'), error.message);
      assert.equal(await currentVersion(second), null, 'nothing synced');
      // Read a few times: before, the one record flipped between the two directories.
      for (let i = 0; i < 3; i++) {
        assert.deepEqual((await mine()).map((a) => a.dir), [first]);
        await new Promise((r) => setTimeout(r, 500));
      }
      const named = await fanout(['sync', 'app', '--channel', 'prod', '--once', '--dir', second, '--host', `${hostname()}-b`, ...common]);
      assert.equal(named.code, 0, named.stderr);
      // The same directory restarted (its agent killed): its own record is taken over at once, not after the lease.
      await agent.kill('SIGKILL');
      const started = Date.now();
      const restarted = await fanout(['sync', 'app', '--channel', 'prod', '--once', '--dir', first, ...common]);
      assert.equal(restarted.code, 0, restarted.stderr);
      assert.ok(Date.now() - started < 10_000, `restart took ${Date.now() - started} ms`);
    } finally {
      await agent.kill();
    }
  });

  test(
    'two machines with one hostname (a cloned VM) syncing the same directory path: the second stops with HOST_IN_USE naming another machine, and takes the record once the first is dead',
    { skip: process.getuid?.() !== 0 && 'needs root: the second machine is a mount namespace (unshare -m) with identity files of its own' },
    async () => {
      const dir = join(root, 'cloned');
      const agent = SyncProcess.start(['app', '--channel', 'prod', '--interval', '1s', ...common], dir, join(root, 'cloned.log'));
      const records = async () =>
        ((await fanoutJson(['release', 'status', 'app', ...common])) as { agents: { host: string; dir: string; machine?: string }[] }).agents.filter((a) => a.host === hostname());
      // The second machine's own disk at the same path.
      const clonesDisk = join(root, 'clone-disk');
      try {
        await waitFor('the first agent on v1 and listed', async () => (await currentVersion(dir)) === 'v1' && (await records()).length === 1, 30_000);
        const [first] = await records();
        assert.ok(first?.machine, `the first machine's record names it: ${JSON.stringify(first)}`);
        const refused = await fanoutOnAnotherMachine(['sync', 'app', '--channel', 'prod', '--once', '--dir', dir, '--json', ...common], dir, clonesDisk);
        assert.notEqual(refused.code, 0, `the clone synced: ${refused.stderr}`);
        const error = (JSON.parse(refused.stdout.toString()) as { error: { code: string; message: string } }).error;
        assert.equal(error.code, 'HOST_IN_USE');
        assert.ok(error.message.includes(`live sync agent of ${dir} on another machine`) && error.message.includes('--host'), error.message);
        assert.equal(await currentVersion(clonesDisk), null, 'nothing synced on the clone');
        // Read a few times: before, the one record flipped between the two machines.
        for (let i = 0; i < 3; i++) {
          assert.deepEqual((await records()).map((a) => [a.dir, a.machine]), [[dir, first!.machine]]);
          await new Promise((r) => setTimeout(r, 500));
        }
        // The first machine's agent dies: its record goes with its lease, and the clone takes it then.
        await agent.kill('SIGKILL');
        const started = Date.now();
        const taken = await fanoutOnAnotherMachine(['sync', 'app', '--channel', 'prod', '--once', '--dir', dir, ...common], dir, clonesDisk);
        assert.equal(taken.code, 0, taken.stderr);
        assert.ok(Date.now() - started < 25_000, `took ${Date.now() - started} ms`);
        assert.equal(await currentVersion(clonesDisk), 'v1');
        const [record] = await records();
        assert.ok(record && record.machine !== first!.machine, `the clone's record: ${JSON.stringify(record)}`);
      } finally {
        await agent.kill();
      }
    },
  );
});
