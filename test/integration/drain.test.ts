import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { get, type IncomingMessage } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { waitFor } from '../harness/ports.js';
import { startCluster, type WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;
// Far more than loopback socket buffers hold: a paused reader keeps the response in flight.
const SIZE = 64 * MiB;

async function members(worker: WorkerProcess): Promise<string[]> {
  const body = (await (await fetch(`${worker.url}/v1/cluster`)).json()) as { members: { id: string }[] };
  return body.members.map((m) => m.id);
}

describe('draining a worker: SIGTERM', () => {
  let etcd: EtcdServer;
  let workers: WorkerProcess[];
  let root: string;
  let content: Buffer;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'fanout-drain-'));
    content = randomBytes(SIZE);
    await writeFile(join(root, 'big.bin'), content);
    etcd = await startEtcd();
    workers = await startCluster(2, { etcd: etcd.endpoint, mounts: { data: root }, pageSize: '1MiB' });
  });

  after(async () => {
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await etcd?.stop();
    await rm(root, { recursive: true, force: true });
  });

  test('the worker leaves the membership at once, but finishes the response in flight before it exits', async () => {
    const [leaving, staying] = workers as [WorkerProcess, WorkerProcess];
    const res = await new Promise<IncomingMessage>((resolve, reject) => get(`${leaving.url}/v1/data/data/big.bin`, resolve).once('error', reject));
    assert.equal(res.statusCode, 200);
    const chunks: Buffer[] = [];
    const first = await new Promise<Buffer>((resolve) => res.once('data', resolve));
    chunks.push(first);
    res.pause();
    const ended = new Promise<void>((resolve, reject) => {
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('end', resolve);
      res.once('error', reject);
      res.once('aborted', () => reject(new Error('response cut')));
    });

    const stopped = leaving.stop(); // SIGTERM
    await waitFor('the other worker to see it leave', async () => (await members(staying)).join() === staying.id);
    assert.ok(leaving.running, 'still running while its response is in flight');

    res.resume();
    await ended;
    const body = Buffer.concat(chunks);
    assert.equal(body.length, SIZE);
    assert.equal(createHash('sha256').update(body).digest('hex'), createHash('sha256').update(content).digest('hex'));
    await stopped;
    assert.equal(leaving.running, false);
  });
});
