import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fanoutJson } from '../harness/cli.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { connectsOf, NetLab } from '../harness/netns.js';
import { freePort, waitFor } from '../harness/ports.js';
import { SyncProcess, currentVersion } from '../harness/release.js';
import { WorkerProcess } from '../harness/workers.js';

/**
 * A sync agent cut from etcd for 90 s, on a real network (found by a fault hunt): etcd, a
 * worker and the agent each in a network namespace; the packets between the agent and etcd vanish
 * both ways (no refusal, no reset: its gRPC watch connection goes silent, new connects hang in the
 * kernel's SYN retries, spaced further and further apart). When the link returns, a version
 * promoted then must be followed without a restart; meanwhile the agent leaves no pile of connects
 * to etcd in the kernel.
 *
 * separate(), not cut(): cut() drops the agent's packets in its own host's queue, which its TCP
 * takes for local congestion and retries without backing off (the agent followed 0.6 s after the
 * link returned, before the fix); dropped past the host, as by a firewall or a dead link, the
 * retries back off, further apart the longer the cut.
 */
const skip = NetLab.unavailable();
describe('a sync agent cut from etcd (network namespaces)', { skip }, () => {
  let lab: NetLab;
  let etcd: EtcdServer;
  let worker: WorkerProcess;
  let root: string;
  let source: string;
  let common: string[];

  before(async () => {
    lab = NetLab.create();
    root = await mkdtemp(join(tmpdir(), 'fanout-etcd-cut-agent-'));
    source = join(root, 'source');
    for (const version of ['v1', 'v2']) {
      await mkdir(join(source, 'app', version), { recursive: true });
      for (let i = 0; i < 4; i++) await writeFile(join(source, 'app', version, `f${i}.bin`), randomBytes(64 * 1024));
    }
    etcd = await startEtcd({ host: { namespace: (lab.addHost('etcd'), lab.namespace('etcd')), address: lab.address('etcd') } });
    const address = lab.addHost('w1');
    const membership = { etcd: { endpoints: [etcd.endpoint], leaseTtlSeconds: 3 } };
    worker = await WorkerProcess.start({ id: 'w1', mounts: { data: source }, pageSize: '1MiB', membership }, await freePort(), { host: { namespace: lab.namespace('w1'), address } });
    lab.addHost('agent');
    common = ['--etcd', etcd.endpoint, '--endpoint', worker.url];
    for (const version of ['v1', 'v2']) await fanoutJson(['release', 'publish', 'app', `/data/app/${version}/`, '--version', version, '--mount', `data=${source}`, ...common]);
    await fanoutJson(['release', 'promote', 'app', 'v1', '--channel', 'prod', ...common]);
  });

  after(async () => {
    await worker?.destroy();
    await etcd?.stop();
    lab?.destroy();
    if (root) await rm(root, { recursive: true, force: true });
  });

  test('follows a version promoted after the link returns, without a restart, and leaves at most one connect to etcd pending per client while cut', { timeout: 300_000 }, async (t) => {
    const dir = join(root, 'agent');
    // Re-read every 5 s: the first round of the cut (which writes on the watch's connection, from
    // then on retransmitted) comes within seconds of the cut, not anywhere in a 30 s interval.
    const agent = SyncProcess.start(['app', '--channel', 'prod', '--host', 'a1', '--interval', '5s', ...common], dir, join(root, 'agent.log'), lab.namespace('agent'));
    try {
      await waitFor('v1 installed', async () => (await currentVersion(dir)) === 'v1', 60_000);

      lab.separate('agent', 'etcd');
      // 90 s: the agent's rounds fail (its reads time out, its watch is not confirmed) and back
      // off; the kernel's retransmissions on the watch's connection are by then tens of seconds
      // apart (13 s seen in `ss` after 60 s).
      const { hostname, port } = new URL(etcd.endpoint);
      let most = 0;
      for (let waited = 0; waited < 90_000; waited += 5_000) {
        await new Promise((r) => setTimeout(r, 5_000));
        most = Math.max(most, connectsOf(agent.proc.pid!, hostname, Number(port)));
      }
      t.diagnostic(`the agent's connects to etcd pending during the cut: at most ${most} (looked every 5 s)`);
      lab.reconnect('agent', 'etcd');

      await fanoutJson(['release', 'promote', 'app', 'v2', '--channel', 'prod', ...common]);
      const promoted = Date.now();
      // Following without a restart is what is asserted; how soon is measured (the diagnostic, and
      // docs/reliability.md). The bound only ends a wait that went wrong.
      await waitFor('the agent to switch to v2, promoted after the link returned', async () => (await currentVersion(dir)) === 'v2', 90_000);
      t.diagnostic(`the agent switched to v2 ${Date.now() - promoted} ms after its promotion (made as the link returned)`);
      assert.equal(agent.proc.exitCode, null, 'the agent kept running');
      // One gRPC connect (the watch's client, replaced clients' ended: connects.ts) and one of the
      // JSON client's calls, which its own connect deadline ends. Without the tracker each
      // replaced gRPC client left its connect (a worker: 5 after a 40 s cut).
      assert.ok(most <= 2, `the agent had ${most} connects to etcd pending at once (one endpoint): replaced clients must not leave theirs in the kernel`);
    } finally {
      await agent.kill();
    }
  });
});
