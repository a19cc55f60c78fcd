import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FanoutClient, type FanoutError } from '../../src/client/index.js';
import { startCluster, type WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;

/**
 * An HTTP origin with strong validators that serves `good.bin` whole and cuts every range of
 * `cut.bin` after a quarter of it (the connection is destroyed mid-body).
 */
function origin(files: Record<string, Buffer>) {
  const rangeGets: Record<string, number> = {};
  const server = createServer((req, res) => {
    const name = (req.url ?? '/').slice(1);
    const body = files[name];
    if (!body) {
      res.writeHead(404).end();
      return;
    }
    const headers = { etag: `"${name}-1"`, 'last-modified': new Date(0).toUTCString(), 'accept-ranges': 'bytes' };
    const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (req.method === 'HEAD' || !range) {
      res.writeHead(200, { ...headers, 'content-length': body.length });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    rangeGets[name] = (rangeGets[name] ?? 0) + 1;
    const start = Number(range[1]);
    const end = Math.min(Number(range[2]), body.length - 1);
    res.writeHead(206, { ...headers, 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${body.length}` });
    const slice = body.subarray(start, end + 1);
    if (name === 'cut.bin') res.write(slice.subarray(0, slice.length >> 2), () => setTimeout(() => res.destroy(), 20));
    else res.end(slice);
  });
  return { server, rangeGets };
}

describe('a source that cuts the body mid-page', () => {
  let workers: WorkerProcess[];
  let http: ReturnType<typeof origin>;
  const files = { 'good.bin': randomBytes(3 * MiB), 'cut.bin': randomBytes(MiB) };

  before(async () => {
    http = origin(files);
    await new Promise<void>((r) => http.server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(http.server.address() as AddressInfo).port}`;
    workers = await startCluster(3, { mounts: { web: url }, pageSize: '1MiB' });
  });

  after(async () => {
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    http?.server.closeAllConnections();
    await new Promise((r) => (http?.server as Server | undefined)?.close(r) ?? r(undefined));
  });

  test('the reader gets the source error with its code, no other worker re-reads the source, the cluster keeps serving', async () => {
    const client = new FanoutClient({ endpoint: workers[0]!.url });
    try {
      const read = async (path: string) => {
        const chunks: Buffer[] = [];
        for await (const chunk of (await client.createReadStream(path)) as AsyncIterable<Buffer>) chunks.push(chunk);
        return Buffer.concat(chunks);
      };
      await assert.rejects(read('/web/cut.bin'), (e: FanoutError) => {
        assert.ok(e.code === 'SOURCE_ERROR' || e.code === 'SOURCE_TRUNCATED', `${e.code}: ${e.message}`);
        return true;
      });
      assert.equal(http.rangeGets['cut.bin'], 1, 'the broken page was read from the source once: no failover to another worker');
      assert.deepEqual(await read('/web/good.bin'), files['good.bin']);
      for (const worker of workers) assert.equal((await fetch(`${worker.url}/healthz`)).status, 200);
    } finally {
      await client.close();
    }
  });
});
