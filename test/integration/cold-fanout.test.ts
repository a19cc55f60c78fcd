import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { get, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { WorkerProcess } from '../harness/workers.js';
import { CHECKSUM_HEADER } from '../../src/lib/cluster/index.js';
import { sendPath } from '../../src/lib/sendfile/index.js';

const MiB = 1024 * 1024;
const PAGE = 16 * MiB;

/** Starts a worker with FANOUT_NO_SENDFILE set or not (the child takes the env at spawn). */
async function startWorker(id: string, js: boolean, dir: string): Promise<WorkerProcess> {
  const before = process.env.FANOUT_NO_SENDFILE;
  if (js) process.env.FANOUT_NO_SENDFILE = '1';
  else delete process.env.FANOUT_NO_SENDFILE;
  try {
    // A source capped at 20 MB/s: a fill takes most of a second, so readers join it in flight.
    return await WorkerProcess.start({ id, mounts: { data: dir }, pageSize: '16MiB', sourceRate: '20MB/s' });
  } finally {
    if (before === undefined) delete process.env.FANOUT_NO_SENDFILE;
    else process.env.FANOUT_NO_SENDFILE = before;
  }
}

/**
 * Reads a page response, taking `step` bytes every `everyMs` if asked (a client slower than the
 * fill, so the worker finishes it from the stored page), and returns the body with its checksum
 * (header on a hit, trailer on a fill).
 */
function readPage(url: string, slow?: { step: number; everyMs: number }): Promise<{ status: number; cache: string; body: Buffer; crc: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = get(url, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      const done = () => {
        const crc = (res.headers[CHECKSUM_HEADER] as string | undefined) ?? (res.trailers[CHECKSUM_HEADER] as string | undefined);
        resolve({ status: res.statusCode!, cache: String(res.headers['x-fanout-cache']), body: Buffer.concat(chunks), crc });
      };
      res.on('error', reject);
      res.on('end', done);
      if (!slow) {
        res.on('data', (c: Buffer) => chunks.push(c));
        return;
      }
      res.pause();
      const timer = setInterval(() => {
        let taken = 0;
        let chunk: Buffer | null;
        while (taken < slow.step && (chunk = res.read() as Buffer | null) !== null) {
          chunks.push(chunk);
          taken += chunk.length;
        }
        if (res.readableEnded || res.complete) {
          clearInterval(timer);
          res.resume();
          res.on('data', (c: Buffer) => chunks.push(c));
        }
      }, slow.everyMs);
      res.once('close', () => clearInterval(timer));
    });
    req.on('error', reject);
  });
}

async function metric(worker: WorkerProcess, name: string): Promise<number> {
  const text = await (await fetch(`${worker.url}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith(name))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

const paths = sendPath() === 'sendfile' ? (['sendfile', 'js'] as const) : (['js'] as const);

for (const path of paths) {
  describe(`a cold page streamed to many waiters (${path} path)`, () => {
    let dir: string;
    let worker: WorkerProcess;
    let n = 0;

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'fanout-coldfan-'));
      worker = await startWorker(`w-coldfan-${path}`, path === 'js', dir);
    });
    after(async () => {
      await worker?.destroy();
      await rm(dir, { recursive: true, force: true });
    });

    async function coldPage(): Promise<{ data: Buffer; url: string }> {
      const data = randomBytes(PAGE);
      const name = `page${n++}.bin`;
      await writeFile(join(dir, name), data);
      const info = (await (await fetch(`${worker.url}/v1/stat/data/${name}`)).json()) as { version: string; size: number };
      return { data, url: `${worker.url}/v1/page/data/${name}?v=${encodeURIComponent(info.version)}&size=${info.size}&i=0` };
    }

    test('eight readers arriving together get the same whole page from one source read', async () => {
      const { data, url } = await coldPage();
      const readsBefore = await metric(worker, 'fanout_source_reads_total');
      const results = await Promise.all(Array.from({ length: 8 }, () => readPage(url)));
      for (const r of results) {
        assert.equal(r.status, 200);
        assert.ok(r.body.equals(data), 'every reader gets the page bytes');
        assert.equal(r.crc, crc32(data).toString(16).padStart(8, '0'), 'with its checksum');
      }
      assert.ok(results.some((r) => r.cache === 'miss'), 'at least one reader was streamed the fill');
      assert.equal((await metric(worker, 'fanout_source_reads_total')) - readsBefore, 1, 'the source was read once');
    });

    test('a reader much slower than the fill gets every byte and the checksum trailer, finished from the stored page', async () => {
      const { data, url } = await coldPage();
      const fast = readPage(url);
      // 256 KiB every 40 ms: about 2.6 s for the page, far behind a fill from a local directory.
      const slow = readPage(url, { step: 256 * 1024, everyMs: 40 });
      const [f, s] = await Promise.all([fast, slow]);
      assert.ok(f.body.equals(data));
      assert.equal(s.status, 200);
      assert.equal(s.cache, 'miss', 'the slow reader joined the fill');
      assert.equal(s.body.length, data.length);
      assert.ok(s.body.equals(data), 'the slow reader gets the same bytes');
      assert.equal(s.crc, crc32(data).toString(16).padStart(8, '0'));
      // The connection still carries the next request (the response ended cleanly).
      const again = await readPage(url);
      assert.equal(again.cache, 'hit');
      assert.ok(again.body.equals(data));
    });
  });
}
