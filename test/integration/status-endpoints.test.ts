import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fanout } from '../harness/cli.js';
import { startCluster, type WorkerProcess } from '../harness/workers.js';

/**
 * `fanout status --endpoint URL` where URL is no member's address but reaches a member: a load
 * balancer or a Kubernetes Service in front of the workers, or a member's other name. Found by
 * a fault hunt: besides the members, the endpoint was asked for its status once more (to learn
 * whether it is a worker in no ring), although its member list answer comes from a worker of
 * the ring, and that second answer was dropped.
 */
describe('fanout status through an endpoint that is no member', () => {
  let source: string;
  let workers: WorkerProcess[];
  let proxy: Server;
  let proxyUrl: string;
  const seen: string[] = [];

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-status-ep-'));
    await writeFile(join(source, 'f.bin'), 'x');
    workers = await startCluster(2, { mounts: { data: source } });
    const target = new URL(workers[0]!.url);
    // A plain forwarding proxy that notes every request it passes on.
    proxy = createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      const up = request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode!, answer.headers);
        answer.pipe(res);
      });
      up.once('error', () => res.destroy());
      req.pipe(up);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  });

  after(async () => {
    proxy?.closeAllConnections();
    await new Promise((r) => proxy?.close(r));
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await rm(source, { recursive: true, force: true });
  });

  test('asks it for the member list only: the members are asked for their status, it is not', async () => {
    const cli = await fanout(['status', '--endpoint', proxyUrl]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout.toString(), /2 members/);
    assert.deepEqual(seen, ['GET /v1/cluster'], 'what the endpoint was asked');
  });
});
