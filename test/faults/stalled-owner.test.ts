import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Member } from '../../src/core/types.js';
import { HashRing } from '../../src/lib/hashring/index.js';
import { pageKey } from '../../src/lib/pagekey/index.js';
import { freePort } from '../harness/ports.js';
import { WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;
// Enough pages that one surely has w3 then w2 in ring order, whatever version the file gets (each
// page has it with odds 1/6: with 24 pages, none had it in ≈ 1.3% of runs; with 48, 0.02%).
const PAGES = 48;
const NAME = 'stalled.bin';

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * A page owner that is up but stuck: it answers /healthz at once, and sends the head and the first
 * quarter of every page asked of it (the right bytes), then nothing more. Workers w1 and w2 are
 * real; the fake w3 owns about a third of the file's pages. A read through w1 hedges such a page
 * to w2, which relays it from w3 and stalls with it: w2 must give up on w3 and read the source
 * before w1's own deadline for w2 passes (both wait the same peer deadlines), or the read fails.
 */
describe('a page owner that answers its health check but stalls mid-page', () => {
  let source: string;
  let data: Buffer;
  let fake: Server;
  const held = new Set<ServerResponse>();
  const workers: WorkerProcess[] = [];

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-stalled-owner-'));
    data = randomBytes(PAGES * MiB);
    await writeFile(join(source, NAME), data);
    fake = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://fake');
      if (url.pathname === '/healthz') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      if (!url.pathname.startsWith('/v1/page/')) return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"NOT_FOUND","message":"fake"}}');
      const start = Number(url.searchParams.get('i')) * MiB;
      const length = Math.min(MiB, Number(url.searchParams.get('size')) - start);
      held.add(res);
      res.on('close', () => held.delete(res));
      res.writeHead(200, { 'content-length': length });
      res.write(data.subarray(start, start + length / 4));
    });
    const fakePort = await freePort();
    await new Promise<void>((resolve) => fake.listen(fakePort, '127.0.0.1', resolve));
    const ports = [await freePort(), await freePort()];
    const members = [
      { id: 'w1', url: `http://127.0.0.1:${ports[0]}` },
      { id: 'w2', url: `http://127.0.0.1:${ports[1]}` },
      { id: 'w3', url: `http://127.0.0.1:${fakePort}` },
    ];
    for (const [i, id] of ['w1', 'w2'].entries()) {
      const config = { id, mounts: { data: source }, pageSize: '1MiB', membership: { static: members }, timeouts: { peerFirstByte: '4s', peerIdle: '4s' } };
      workers.push(await WorkerProcess.start(config, ports[i]));
    }
  });

  after(async () => {
    await Promise.all(workers.map((worker) => worker.destroy()));
    for (const res of held) res.destroy();
    fake?.closeAllConnections();
    await new Promise((resolve) => fake?.close(resolve));
    await rm(source, { recursive: true, force: true });
  });

  async function relaySourceReads(worker: WorkerProcess, reason: string): Promise<number> {
    const text = await (await fetch(`${worker.url}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`fanout_relay_source_reads_total{reason="${reason}"}`));
    return line === undefined ? 0 : Number(line.split(' ').pop());
  }

  test('a read through another worker gives the file: the relay reads the source before the reader gives up on it', async () => {
    const [w1, w2] = workers as [WorkerProcess, WorkerProcess];
    const stat = (await (await fetch(`${w1.url}/v1/stat/data/${NAME}`)).json()) as { version: string; size: number };
    const { members } = (await (await fetch(`${w1.url}/v1/cluster`)).json()) as { members: Member[] };
    const ring = new HashRing(members);
    const owners = Array.from({ length: PAGES }, (_, index) => ring.owners(pageKey({ mount: 'data', path: NAME, version: stat.version, size: stat.size, index }, MiB), 3).map((m) => m.id));
    assert.ok(
      owners.some((order) => order[0] === 'w3' && order[1] === 'w2'),
      'some page is owned by the stalled member with w2 next in ring order (w1 relays it through w2)',
    );
    const response = await fetch(`${w1.url}/v1/data/data/${NAME}`);
    assert.equal(response.status, 200);
    const read = Buffer.from(await response.arrayBuffer());
    assert.equal(read.length, data.length, 'the whole file, not a cut answer');
    assert.equal(sha256(read), sha256(data));
    const stalledReads = (await relaySourceReads(w1, 'owner_stalled')) + (await relaySourceReads(w2, 'owner_stalled'));
    assert.ok(stalledReads > 0, 'relays gave up on the stalled owner and read the source');
  });
});
