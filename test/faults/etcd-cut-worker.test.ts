import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { connectsOf, NetLab } from '../harness/netns.js';
import { freePort, waitFor } from '../harness/ports.js';
import { WorkerProcess, waitForRings } from '../harness/workers.js';

const MiB = 1024 * 1024;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

interface ClusterView {
  members: { id: string }[];
  stale: boolean;
  membership: { state: string };
}

async function view(worker: WorkerProcess): Promise<ClusterView> {
  return (await (await fetch(`${worker.url}/v1/cluster`)).json()) as ClusterView;
}

const ids = (v: ClusterView) => v.members.map((m) => m.id).sort().join(',');

/**
 * A worker cut from etcd only (a firewall between it and etcd; etcd still reached by the others,
 * the worker still reached by clients and peers), on a real network: etcd and three workers each
 * in a network namespace; the packets between w3 and etcd vanish both ways (no refusal, no reset:
 * its gRPC connection goes silent and new connects hang). Its lease (3 s) expires, the others drop
 * it from their rings; it keeps serving with the last members it knew, saying they are stale; when
 * the link returns it registers again and is back in every ring without a restart.
 */
const skip = NetLab.unavailable();
describe('a worker cut from etcd only (network namespaces)', { skip }, () => {
  let lab: NetLab;
  let etcd: EtcdServer;
  let source: string;
  const workers: WorkerProcess[] = [];

  before(async () => {
    lab = NetLab.create();
    source = await mkdtemp(join(tmpdir(), 'fanout-etcd-cut-'));
    etcd = await startEtcd({ host: { namespace: (lab.addHost('etcd'), lab.namespace('etcd')), address: lab.address('etcd') } });
    const membership = { etcd: { endpoints: [etcd.endpoint], leaseTtlSeconds: 3 } };
    for (const id of ['w1', 'w2', 'w3']) {
      const address = lab.addHost(id);
      const config = { id, mounts: { data: source }, pageSize: '1MiB', membership, timeouts: { peerConnect: '2s', peerFirstByte: '4s', peerIdle: '4s' } };
      workers.push(await WorkerProcess.start(config, await freePort(), { host: { namespace: lab.namespace(id), address } }));
    }
    await waitForRings(workers, 'all workers to see each other');
  });

  after(async () => {
    await Promise.all(workers.map((w) => w.destroy()));
    await etcd?.stop();
    lab?.destroy();
    if (source) await rm(source, { recursive: true, force: true });
  });

  /** w3's TCP connections to etcd that the kernel is retransmitting on (a SYN or data), with their backoff count. */
  function kernelRetrying(): { state: string; backoff: number }[] {
    const { hostname, port } = new URL(etcd.endpoint);
    const out = lab.inHost('w3', 'ss', '-Htnoi', 'dst', `${hostname}:${port}`);
    // One socket a line, its details on the indented line after it.
    return out.split(/\n(?=\S)/).flatMap((socket) => {
      const backoff = /\bbackoff:(\d+)/.exec(socket);
      return backoff ? [{ state: socket.split(/\s/)[0]!, backoff: Number(backoff[1]) }] : [];
    });
  }

  async function readThrough(worker: WorkerProcess, name: string): Promise<Buffer> {
    const response = await fetch(`${worker.url}/v1/data/data/${name}`);
    assert.equal(response.status, 200);
    return Buffer.from(await response.arrayBuffer());
  }

  test('its lease expires, the others drop it; it serves on, says its members are stale, and is back in every ring when the link returns', { timeout: 240_000 }, async (t) => {
    const [w1, w2, w3] = workers as [WorkerProcess, WorkerProcess, WorkerProcess];
    const body = randomBytes(16 * MiB);
    await writeFile(join(source, 'f.bin'), body);
    assert.equal(sha256(await readThrough(w1, 'f.bin')), sha256(body));

    lab.separate('w3', 'etcd');
    let started = Date.now();
    await waitFor('w1 and w2 to drop w3 from their rings', async () => ids(await view(w1)) === 'w1,w2' && ids(await view(w2)) === 'w1,w2', 60_000);
    t.diagnostic(`w3 left the others' rings ${Date.now() - started} ms after the cut`);
    await waitFor('w3 to say its members are stale', async () => (await view(w3)).stale, 30_000);
    const cut = await view(w3);
    t.diagnostic(`w3 while cut: members ${ids(cut)}, stale ${cut.stale}, membership ${JSON.stringify(cut.membership)}`);

    assert.equal(sha256(await readThrough(w3, 'f.bin')), sha256(body), 'a read through the cut worker');
    assert.equal(sha256(await readThrough(w1, 'f.bin')), sha256(body), 'a read through a worker that dropped it');

    // The cut lasts long enough for the kernel's timers to space their retries (SYN and data
    // retransmissions double: 1, 2, 4 … s): a connection left to them this long retries next
    // up to 32 s on, whenever the link comes back.
    // Meanwhile its membership replaces its etcd client round after round: each one's connect
    // must end with it, not stay in the kernel's SYN retries (127 s each; 5 at once were seen).
    const { hostname, port } = new URL(etcd.endpoint);
    let connects = 0;
    for (let waited = 0; waited < 40_000; waited += 5_000) {
      await new Promise((r) => setTimeout(r, 5_000));
      connects = Math.max(connects, connectsOf(w3.pid!, hostname, Number(port)));
    }
    t.diagnostic(`w3's connects to etcd pending during the cut: at most ${connects} (looked every 5 s)`);
    assert.ok(connects <= 1, `w3 had ${connects} connects to etcd pending at once (one endpoint): replaced clients must not leave theirs in the kernel`);
    const left = kernelRetrying();
    t.diagnostic(`w3's connections to etcd after 40 s cut: ${left.map((c) => `${c.state} backoff ${c.backoff}`).join(', ') || 'none'}`);
    lab.reconnect('w3', 'etcd');
    started = Date.now();
    // Back without a restart is what is asserted; how soon is measured (the diagnostic below, and
    // docs/reliability.md): ≈ 1 s with a new connection each failed round, 10–46 s when the
    // reconnect was left to the kernel's SYN retries. The bound only ends a wait that went wrong.
    await waitForRings(workers, 'w3 back in every ring, without a restart', 90_000);
    t.diagnostic(`w3 back in every ring ${Date.now() - started} ms after the link returned`);
    // Its own view was the stale one all along (3 members): it must also learn it is current.
    await waitFor('w3 to say its members are current again', async () => !(await view(w3)).stale, 60_000);
    t.diagnostic(`w3 current again ${Date.now() - started} ms after the link returned`);
    assert.ok(workers.every((w) => w.running), 'no worker restarted or died');
    assert.equal(sha256(await readThrough(w3, 'f.bin')), sha256(body));
  });
});
