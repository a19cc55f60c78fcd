import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { waitFor } from '../harness/ports.js';
import { getOnNewConnection } from './helpers.js';
import { Origin } from '../harness/origin.js';
import { startS3Server } from '../harness/s3.js';
import { WorkerProcess, startCluster } from '../harness/workers.js';
import type { Member } from '../../src/core/types.js';
import { HashRing } from '../../src/lib/hashring/index.js';
import { pageKey } from '../../src/lib/pagekey/index.js';
import { hasPrlimit, lowestFreeFd, limitLeaving, setSoftNofile } from '../harness/fds.js';

/**
 * A worker that runs out of file descriptors (found by a fault hunt): it must answer what it can,
 * refuse the rest with a code a client can act on, keep no broken page, and recover by itself.
 */

const FILE = 16 * 1024;

/** Page files `pid` holds open: descriptors of files under `<dataDir>/pages` (not the data directory's lock). */
function pageFilesOpen(pid: number, dataDir: string): number {
  const dir = join(dataDir, 'pages');
  let count = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith(dir)) count++;
    } catch {
      // closed meanwhile
    }
  }
  return count;
}

/** Established TCP connections of `pid` to a loopback port `port`. */
function connectionsTo(pid: number, port: number): number {
  const remote = new Set<string>();
  for (const table of ['tcp', 'tcp6']) {
    for (const line of readFileSync(`/proc/${pid}/net/${table}`, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 9 && cols[3] === '01' && parseInt(cols[2]!.split(':')[1]!, 16) === port) remote.add(cols[9]!);
    }
  }
  let count = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
      if (inode && remote.has(inode)) count++;
    } catch {
      // closed meanwhile
    }
  }
  return count;
}

/**
 * A cold read of `path` (the worker's first request to its source: a new connection) while
 * `worker` has no fd left: OVERLOADED naming EMFILE, not the source's fault; then, with fds
 * again, the right bytes (nothing was cached as failed). `ready` checks the setup first.
 */
async function coldReadWithNoFdLeft(worker: WorkerProcess, path: string, data: Buffer, ready?: () => void): Promise<void> {
  const agent = new Agent({ connections: 1, pipelining: 1 });
  const ask = async (route: string) => {
    const res = await request(`${worker.url}${route}`, { dispatcher: agent });
    return { status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()), code: res.headers['x-fanout-error'] };
  };
  try {
    assert.equal((await ask('/healthz')).status, 200);
    ready?.();
    setSoftNofile(worker.pid!, lowestFreeFd(worker.pid!));
    const cold = await ask(path);
    setSoftNofile(worker.pid!, 1024);
    assert.equal(cold.status, 503, `${cold.status} ${cold.body}`);
    assert.equal(cold.code, 'OVERLOADED');
    assert.match(cold.body.toString(), /no file descriptor left \(EMFILE/);
    const again = await ask(path);
    assert.equal(again.status, 200, `${again.status} ${again.body}`);
    assert.ok(again.body.equals(data));
  } finally {
    await agent.close();
  }
}

describe('a worker out of file descriptors', { skip: !hasPrlimit() && 'needs Linux and util-linux prlimit' }, () => {
  let dir: string;
  const files = Array.from({ length: 150 }, () => randomBytes(FILE));

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-fds-'));
    await Promise.all(files.map((data, i) => writeFile(join(dir, `f${i}.bin`), data)));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('under ulimit -n 128, warm reads keep at most a quarter of the fds in page files, and 25 new connections at once are all answered', async () => {
    const worker = await WorkerProcess.start({ id: 'w-fds', mounts: { data: dir } }, undefined, { nofile: 128 });
    const agent = new Agent({ connections: 8 });
    try {
      const readEach = async () => {
        let next = 0;
        const statuses: number[] = [];
        await Promise.all(
          Array.from({ length: 8 }, async () => {
            for (let i = next++; i < files.length; i = next++) {
              const res = await request(`${worker.url}/v1/data/data/f${i}.bin`, { dispatcher: agent });
              const body = Buffer.from(await res.body.arrayBuffer());
              statuses.push(res.statusCode);
              if (res.statusCode === 200) assert.ok(body.equals(files[i]!), `f${i}.bin: wrong bytes`);
            }
          }),
        );
        return statuses;
      };
      const cold = await readEach();
      const warm = await readEach(); // sent from the page files, each kept open for the next send
      assert.deepEqual(cold.filter((s) => s !== 200), [], 'cold reads');
      assert.deepEqual(warm.filter((s) => s !== 200), [], 'warm reads');
      const pageFds = pageFilesOpen(worker.pid!, worker.dataDir);
      console.log(`# ulimit -n 128: ${pageFds} page files kept open after 150 warm pages, ${readdirSync(`/proc/${worker.pid}/fd`).length} fds in all`);
      // Before: 256 were kept whatever the limit, so the page files filled the fd table and every
      // new connection was closed unanswered (libuv accepts and closes it on EMFILE).
      assert.ok(pageFds <= 32, `${pageFds} page files kept open under a limit of 128`);
      await agent.close();
      // Pages sent last (their files kept): each of these costs the worker its socket's fd only.
      const answers = await Promise.all(Array.from({ length: 25 }, (_, i) => getOnNewConnection(`${worker.url}/v1/data/data/f${i + 125}.bin`)));
      for (const [i, answer] of answers.entries()) {
        assert.equal(answer.status, 200, `f${i + 125}.bin on a new connection: ${answer.status} ${answer.code}`);
        assert.ok(answer.body.equals(files[i + 125]!));
      }
      assert.ok(worker.running);
      // Said at start (before: nothing, and connections past the free fds are closed unanswered).
      assert.match(readFileSync(join(worker.dir, 'worker.log'), 'utf8'), /open-file limit \(ulimit -n, LimitNOFILE\) is 128, below the 1184 /);
    } finally {
      if (!agent.closed) await agent.close();
      await worker.destroy();
    }
  });

  test('a source open or a page file open that meets EMFILE is OVERLOADED (503), nothing is kept of it, and the file reads right once fds are free', async () => {
    const worker = await WorkerProcess.start({ id: 'w-emfile', mounts: { data: dir } });
    // One kept-alive connection, opened before the limit drops: the requests need no new fd to arrive.
    const agent = new Agent({ connections: 1, pipelining: 1 });
    const ask = async (path: string) => {
      const res = await request(`${worker.url}${path}`, { dispatcher: agent });
      return { status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()), code: res.headers['x-fanout-error'], retryAfter: res.headers['retry-after'] };
    };
    try {
      assert.equal((await ask('/healthz')).status, 200);
      const stored = await ask('/v1/data/data/f1.bin'); // stored, its file not yet opened for a send
      assert.equal(stored.status, 200);
      const pages = () => readdirSync(join(worker.dataDir, 'pages'), { recursive: true }).filter((n) => String(n).includes('.')).length;
      await waitFor('f1.bin stored', async () => pages() === 1); // written after its answer

      // Every fd number below the limit is in use: the worker's next open, whatever it is, fails with EMFILE.
      setSoftNofile(worker.pid!, lowestFreeFd(worker.pid!));
      const source = await ask('/v1/data/data/f0.bin');
      const page = await ask('/v1/data/data/f1.bin');
      setSoftNofile(worker.pid!, 1024);

      // Before: 502 SOURCE_ERROR "/data/f0.bin: EMFILE" (the source's fault, passed to the reader's
      // caller), and 500 INTERNAL "page store open failed: EMFILE".
      assert.equal(source.status, 503, `source open: ${source.status} ${source.body}`);
      assert.equal(source.code, 'OVERLOADED');
      assert.equal(source.retryAfter, '1');
      assert.match(source.body.toString(), /no file descriptor left \(EMFILE/);
      assert.equal(page.status, 503, `page file open: ${page.status} ${page.body}`);
      assert.equal(page.code, 'OVERLOADED');
      assert.match(page.body.toString(), /no file descriptor left \(EMFILE/);

      // Not taken as missing, not cached as failed, and the stored page was not dropped.
      const again = await ask('/v1/data/data/f0.bin');
      assert.equal(again.status, 200);
      assert.ok(again.body.equals(files[0]!));
      const hit = await ask('/v1/data/data/f1.bin');
      assert.equal(hit.status, 200);
      assert.ok(hit.body.equals(files[1]!));
      await waitFor('f0.bin stored beside f1.bin, which was kept', async () => pages() === 2);
      assert.ok(worker.running);
    } finally {
      await agent.close();
      await worker.destroy();
    }
  });

  test('with 8 fds left, a cold /v1/data read of 6 pages the worker owns is answered whole (no loopback connection to itself per page)', async () => {
    const big = randomBytes(5 * 1024 * 1024 + 100); // 6 pages of 1 MiB
    await writeFile(join(dir, 'big.bin'), big);
    // One fill at a time: a source fd and the fill's page file, whatever the window of pages ahead.
    const worker = await WorkerProcess.start({ id: 'w-own-fds', pageSize: 1024 * 1024, mounts: { data: dir }, limits: { fillsPerMount: 1 } });
    // One kept-alive connection, opened before the limit drops: the request needs no new fd to arrive.
    const agent = new Agent({ connections: 1, pipelining: 1 });
    try {
      const res = await request(`${worker.url}/healthz`, { dispatcher: agent });
      await res.body.dump();
      setSoftNofile(worker.pid!, limitLeaving(worker.pid!, 8));
      // A status of 0: the connection was cut (a page failed after the head was sent).
      const cold = await request(`${worker.url}/v1/data/data/big.bin`, { dispatcher: agent })
        .then(async (r) => ({ status: r.statusCode, body: Buffer.from(await r.body.arrayBuffer()) }))
        .catch((err: Error) => ({ status: 0, body: Buffer.from(err.message) }));
      setSoftNofile(worker.pid!, 1024);
      // Before: each page the worker's own range read fetched was a loopback request to its own
      // /v1/page, two fds each (its window of 6 pages at once: 12): the read failed.
      assert.equal(cold.status, 200, `${cold.status} ${cold.body.subarray(0, 300)}`);
      assert.ok(cold.body.equals(big), 'the bytes of the file');
      assert.ok(worker.running);
    } finally {
      await agent.close();
      await worker.destroy();
    }
  });

  test('a relay that has no fd left to reach the page owner answers OVERLOADED, and neither takes the owner for down nor reads the source instead', async () => {
    const [w1, w2] = await startCluster(2, { mounts: { data: dir } });
    const agent = new Agent({ connections: 1, pipelining: 1 });
    try {
      const { members } = (await (await fetch(`${w1!.url}/v1/cluster`)).json()) as { members: Member[] };
      const ring = new HashRing(members);
      const owner = async (i: number) => {
        const stat = (await (await fetch(`${w1!.url}/v1/stat/data/f${i}.bin`)).json()) as { version: string; size: number };
        return ring.owners(pageKey({ mount: 'data', path: `f${i}.bin`, version: stat.version, size: stat.size, index: 0 }, 4 * 1024 * 1024), 1)[0]!.id;
      };
      let file = 0;
      while ((await owner(file)) !== w2!.id) file++;
      const ask = async (path: string) => {
        const res = await request(`${w1!.url}${path}`, { dispatcher: agent });
        return { status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()), code: res.headers['x-fanout-error'] };
      };
      assert.equal((await ask('/healthz')).status, 200);

      setSoftNofile(w1!.pid!, lowestFreeFd(w1!.pid!));
      const relayed = await ask(`/v1/data/data/f${file}.bin`);
      setSoftNofile(w1!.pid!, 1024);

      // Before: 503 WORKER_UNAVAILABLE "worker w2 (…) failed: connect EMFILE", the owner taken for
      // down and the source read instead (fanout_relay_source_reads_total{reason="owner_unreachable"}).
      assert.equal(relayed.status, 503, `${relayed.status} ${relayed.body}`);
      assert.equal(relayed.code, 'OVERLOADED', relayed.body.toString());
      assert.match(relayed.body.toString(), /no file descriptor left \(EMFILE/);
      assert.equal((await w1!.metrics()).fanout_relay_source_reads_total ?? 0, 0);
      const again = await ask(`/v1/data/data/f${file}.bin`);
      assert.equal(again.status, 200);
      assert.ok(again.body.equals(files[file]!));
      assert.equal((await w1!.metrics()).fanout_relay_source_reads_total ?? 0, 0, 'the owner was asked, not taken for down');
    } finally {
      await agent.close();
      await Promise.all([w1!.destroy(), w2!.destroy()]);
    }
  });

  test('an HTTP source that cannot be connected to for want of an fd is OVERLOADED, not the source failing, and not cached as failed', async () => {
    const origin = await Origin.start();
    const data = randomBytes(FILE);
    await origin.put('h.bin', data);
    const worker = await WorkerProcess.start({ id: 'w-http-fds', mounts: { web: origin.url } });
    try {
      // Before: 502 SOURCE_ERROR "/web/h.bin: request failed (EMFILE: connect EMFILE …)".
      await coldReadWithNoFdLeft(worker, '/v1/data/web/h.bin', data); // the worker's first request to the origin: a new connection
    } finally {
      await worker.destroy();
      await origin.close();
    }
  });

  test('an S3 source that cannot be connected to for want of an fd is OVERLOADED, not the source failing, and not cached as failed', async () => {
    const s3 = await startS3Server();
    const data = randomBytes(FILE);
    await s3.bucket('fds');
    await s3.put('fds', 's.bin', data);
    const worker = await WorkerProcess.start({ id: 'w-s3-fds', mounts: { objects: 's3://fds' }, s3: s3.options });
    try {
      // Checked and right: the S3 source's mapping (src/lib/ufs/s3.ts) had no test of its own.
      await coldReadWithNoFdLeft(worker, '/v1/data/objects/s.bin', data, () => {
        // The worker holds no connection to the S3 server: its next request to it needs a new fd.
        assert.equal(connectionsTo(worker.pid!, Number(new URL(s3.endpoint).port)), 0);
      });
    } finally {
      await worker.destroy();
      await s3.stop();
    }
  });

  test('with no fd left, a warm read closes the idle page files kept for sends and is answered', async () => {
    const worker = await WorkerProcess.start({ id: 'w-shed', mounts: { data: dir } }, undefined, { nofile: 64 }); // keeps 16
    const agent = new Agent({ connections: 1, pipelining: 1 });
    const ask = async (i: number) => {
      const res = await request(`${worker.url}/v1/data/data/f${i}.bin`, { dispatcher: agent });
      return { status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()), code: res.headers['x-fanout-error'] };
    };
    try {
      for (let i = 0; i < 20; i++) assert.equal((await ask(i)).status, 200);
      const pages = () => readdirSync(join(worker.dataDir, 'pages'), { recursive: true }).filter((n) => String(n).includes('.')).length;
      await waitFor('20 pages stored', async () => pages() === 20);
      for (let i = 0; i < 16; i++) assert.equal((await ask(i)).status, 200); // their files kept open
      assert.equal(pageFilesOpen(worker.pid!, worker.dataDir), 16);

      setSoftNofile(worker.pid!, lowestFreeFd(worker.pid!));
      const warm = await ask(17); // stored, its file not kept: it needs an open
      setSoftNofile(worker.pid!, 64);
      // Before: 503 OVERLOADED while 16 idle page files held fds.
      assert.equal(warm.status, 200, `${warm.status} ${warm.body}`);
      assert.ok(warm.body.equals(files[17]!));
    } finally {
      await agent.close();
      await worker.destroy();
    }
  });
});
