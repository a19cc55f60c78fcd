// Releases in the two-datacenter lab: etcd on DC-A's control host, publishing from DC-A (the
// publisher reads the origin's directory directly, as it runs beside the producer), promoting a
// channel, and DC-B's client hosts syncing it through DC-B's cluster (`fanout sync --once`).
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

export class LabReleases {
  constructor(lab, { bin, work, originDir }) {
    Object.assign(this, { lab, bin, work, originDir });
    this.etcdUrl = `http://${lab.addr('ctl')}:2379`;
  }

  /** etcd on the control host; waits until it is healthy. */
  async startEtcd() {
    const peer = `http://${this.lab.addr('ctl')}:2380`;
    const dir = join(this.work, 'etcd');
    await mkdir(dir, { recursive: true });
    const args = ['--name', 'lab', '--data-dir', join(dir, 'data'), '--listen-client-urls', this.etcdUrl, '--advertise-client-urls', this.etcdUrl,
      '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `lab=${peer}`,
      '--heartbeat-interval', '10', '--election-timeout', '100', '--logger', 'zap', '--log-level', 'error'];
    const log = join(dir, 'etcd.log');
    const proc = this.lab.start('ctl', process.env.ETCD_BINARY ?? '/usr/bin/etcd', args, log);
    await this.lab.waitHttp('ctl', `${this.etcdUrl}/health`, { proc, log });
  }

  fanout(host, args) {
    return this.lab.run(host, 'node', [this.bin, ...args, '--etcd', this.etcdUrl]);
  }

  /** Publishes /data/PREFIX/ as NAME@VERSION; `endpoint`: a DC-A worker (page size check). */
  publish(name, prefix, version, endpoint) {
    return this.fanout('ctl', ['release', 'publish', name, `/data/${prefix}/`, '--version', version, '--mount', `data=${this.originDir}`, '--endpoint', endpoint, '--json']);
  }

  promote(name, version, channel, expect) {
    return this.fanout('ctl', ['release', 'promote', name, version, '--channel', channel, ...(expect ? ['--expect', expect] : []), '--json']);
  }

  /** Every client host runs one sync round into its own dir, through DC-B's worker `endpoint(i)`; all finish before a failure is thrown. */
  async syncAll(name, channel, clients, dirOf, endpoint) {
    const results = await Promise.allSettled(
      clients.map(async (host, i) => {
        await mkdir(dirOf(i), { recursive: true });
        await this.fanout(host, ['sync', name, '--channel', channel, '--once', '--keep', '1', '--dir', dirOf(i), '--host', host, '--endpoint', endpoint(i)]);
      }),
    );
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  }
}
