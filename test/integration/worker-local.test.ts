import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fanout, fanoutJson, sha256 } from '../harness/cli.js';
import { WorkerProcess } from '../harness/workers.js';
import { waitFor } from '../harness/ports.js';
import { checksumPath } from '../../src/lib/checksum/index.js';
import { memoryPath } from '../../src/lib/memory/index.js';
import { sendPath } from '../../src/lib/sendfile/index.js';

const MiB = 1024 * 1024;

function rawRequest(base: string, path: string, init: RequestInit = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(base);
    const options = { hostname, port, path, method: init.method ?? 'GET', headers: init.headers as Record<string, string> };
    const req = httpRequest(options, (res) => {
      let body = '';
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end(init.body as string | undefined);
  });
}

/**
 * One worker over a local directory, driven through the real CLI and HTTP API: reads, caching,
 * restarts, corruption, source changes and every kind of bad input.
 */
describe('a worker over a local directory', () => {
  let source: string;
  let worker: WorkerProcess;
  let big: Buffer;
  const cli = (...args: string[]) => fanout([...args, '--endpoint', worker.url]);
  const json = <T>(...args: string[]) => fanoutJson<T>([...args, '--endpoint', worker.url]);
  const metric = async (name: string) => (await worker.metrics())[name] ?? 0;

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-src-'));
    big = randomBytes(9 * MiB + 12345);
    await mkdir(join(source, 'models/v1'), { recursive: true });
    await writeFile(join(source, 'models/v1/model.bin'), big);
    await writeFile(join(source, 'hello.txt'), 'hello fanout\n');
    await writeFile(join(source, 'empty.bin'), '');
    // No background scrub: it could find the page corrupted below first, and this file tests
    // what the read path does (the scrub has its own test in integrity.test.ts).
    worker = await WorkerProcess.start({ id: 'solo', mounts: { data: source }, pageSize: '1MiB', statTtl: '200ms', scrub: { rate: 'off' } });
  });

  after(async () => {
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
  });

  test('ls lists mounts and directories', async () => {
    const root = await json<{ name: string; type: string }[]>('ls', '/');
    assert.deepEqual(root, [{ name: 'data', type: 'dir', path: '/data' }]);
    const entries = await json<{ name: string; type: string; size?: number }[]>('ls', '/data/');
    assert.deepEqual(
      entries.map((e) => [e.name, e.type]),
      [['empty.bin', 'file'], ['hello.txt', 'file'], ['models', 'dir']],
    );
    const text = await cli('ls', '/data/models/v1/');
    assert.equal(text.code, 0);
    assert.match(text.stdout.toString(), /model\.bin/);
  });

  test('stat reports size and version', async () => {
    const info = await json<{ size: number; version: string; path: string }>('stat', '/data/models/v1/model.bin');
    assert.equal(info.size, big.length);
    assert.equal(info.path, '/data/models/v1/model.bin', 'the full fanout path, as cp --json gives');
    assert.ok(info.version);
  });

  test('cat returns the exact bytes, cold then warm, reading the source once', async () => {
    const before = await metric('fanout_source_bytes_total');
    const cold = await cli('cat', '/data/models/v1/model.bin');
    assert.equal(cold.code, 0, cold.stderr);
    assert.equal(sha256(cold.stdout), sha256(big));
    assert.equal((await metric('fanout_source_bytes_total')) - before, big.length);
    const hitsBefore = await metric('fanout_page_hits_total');
    const warm = await cli('cat', '/data/models/v1/model.bin');
    assert.equal(sha256(warm.stdout), sha256(big));
    assert.equal((await metric('fanout_source_bytes_total')) - before, big.length, 'warm read did not touch the source');
    assert.equal((await metric('fanout_page_hits_total')) - hitsBefore, 10);
  });

  test('cat --range returns the asked bytes', async () => {
    const out = await cli('cat', '/data/models/v1/model.bin', '--range', `${MiB - 10}-${2 * MiB + 9}`);
    assert.deepEqual(out.stdout, big.subarray(MiB - 10, 2 * MiB + 10));
    const suffix = await cli('cat', '/data/models/v1/model.bin', '--range', '-100');
    assert.deepEqual(suffix.stdout, big.subarray(big.length - 100));
  });

  test('cp writes the file whole under its name', async () => {
    const dest = await mkdtemp(join(tmpdir(), 'fanout-cp-'));
    try {
      const result = await cli('cp', '/data/models/v1/model.bin', dest);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(sha256(await readFile(join(dest, 'model.bin'))), sha256(big));
      assert.deepEqual(await readdir(dest), ['model.bin'], 'no temporary file left behind');
      const empty = await cli('cp', '/data/empty.bin', join(dest, 'e.bin'));
      assert.equal(empty.code, 0, empty.stderr);
      assert.equal((await readFile(join(dest, 'e.bin'))).length, 0);
    } finally {
      await rm(dest, { recursive: true, force: true });
    }
  });

  test('status shows the member, usage, hit ratio and source bytes', async () => {
    const status = await json<{ members: { id: string; reachable: boolean; used: number }[]; totals: { hitRatio: number; bytesFromSource: number } }>('status');
    assert.equal(status.members.length, 1);
    assert.equal(status.members[0]!.id, 'solo');
    assert.ok(status.members[0]!.reachable);
    assert.ok(status.members[0]!.used >= big.length);
    assert.ok(status.totals.hitRatio > 0);
    assert.ok(status.totals.bytesFromSource >= big.length);
  });

  test('/v1/status and /metrics name how this worker sends, checks and allocates (native or JS)', async () => {
    const status = (await (await fetch(`${worker.url}/v1/status`)).json()) as { sendPath?: string; checksumPath?: string; memoryPath?: string };
    // The worker runs on this machine with this checkout's addons, as this process does.
    assert.equal(status.memoryPath, memoryPath());
    assert.equal(status.checksumPath, checksumPath());
    assert.equal(status.sendPath, sendPath());
    const text = await (await fetch(`${worker.url}/metrics`)).text();
    assert.match(text, new RegExp(`^fanout_memory_path\\{path="${memoryPath()}"\\} 1$`, 'm'));
    assert.match(text, new RegExp(`^fanout_checksum_path\\{path="${checksumPath()}"\\} 1$`, 'm'));
    assert.match(text, new RegExp(`^fanout_send_path\\{path="${sendPath()}"\\} 1$`, 'm'));
  });

  test('HTTP range reads via /v1/data', async () => {
    const url = `${worker.url}/v1/data/data/models/v1/model.bin`;
    const res = await fetch(url, { headers: { range: 'bytes=100-199' } });
    assert.equal(res.status, 206);
    assert.equal(res.headers.get('content-range'), `bytes 100-199/${big.length}`);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), big.subarray(100, 200));
    const whole = await fetch(url);
    assert.equal(whole.status, 200);
    assert.equal(sha256(Buffer.from(await whole.arrayBuffer())), sha256(big));
    const head = await fetch(url, { method: 'HEAD' });
    assert.equal(head.headers.get('content-length'), String(big.length));
  });

  test('bad input gets a 4xx with a stable code', async () => {
    const cases: [string, RequestInit | undefined, number, string][] = [
      ['/v1/stat/nope/x', undefined, 404, 'UNKNOWN_MOUNT'],
      ['/v1/stat/data/missing.bin', undefined, 404, 'NOT_FOUND'],
      ['/v1/stat/data/models', undefined, 400, 'IS_A_DIRECTORY'],
      ['/v1/data/data/../../etc/passwd', undefined, 400, 'INVALID_PATH'],
      ['/v1/data/data/%2e%2e/%2e%2e/etc/passwd', undefined, 400, 'INVALID_PATH'],
      ['/v1/data/data/models%2f..%2f..%2fsecret', undefined, 400, 'INVALID_PATH'],
      ['/v1/data/data/a%00b', undefined, 400, 'INVALID_PATH'],
      ['/v1/data/data/%zz', undefined, 400, 'INVALID_PATH'],
      ['/v1/data/data/hello.txt', { headers: { range: 'bytes=abc' } }, 400, 'INVALID_RANGE'],
      ['/v1/data/data/hello.txt', { headers: { range: 'bytes=9-2' } }, 400, 'INVALID_RANGE'],
      ['/v1/data/data/hello.txt', { headers: { range: 'bytes=1000-' } }, 416, 'RANGE_NOT_SATISFIABLE'],
      [`/v1/data/data/${'a'.repeat(9000)}`, undefined, 413, 'REQUEST_TOO_LARGE'],
      ['/v1/page/data/hello.txt?v=x&size=13&i=5', undefined, 416, 'RANGE_NOT_SATISFIABLE'],
      ['/v1/page/data/hello.txt?v=x&size=-1&i=0', undefined, 400, 'INVALID_ARGUMENT'],
      ['/v1/page/data/hello.txt?size=13&i=0', undefined, 400, 'INVALID_ARGUMENT'],
      ['/v1/page/data/hello.txt?v=stale&size=13&i=0', undefined, 412, 'SOURCE_CHANGED'],
      ['/v1/data/data/hello.txt', { method: 'PUT', body: 'x' }, 400, 'INVALID_ARGUMENT'],
      ['/v1/nothing', undefined, 404, 'NOT_FOUND'],
    ];
    for (const [path, init, status, code] of cases) {
      // Raw requests: fetch() would normalize "../" away before it leaves the client.
      const res = await rawRequest(worker.url, path, init);
      const body = JSON.parse(res.body) as { error: { code: string; message: string } };
      assert.equal(res.status, status, `${path}: ${res.body}`);
      assert.equal(body.error.code, code, path);
      assert.ok(body.error.message.length > 0);
    }
    const missing = await cli('cat', '/data/missing.bin');
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /NOT_FOUND/);
    const badPath = await cli('stat', '/data/../x', '--json');
    assert.equal(JSON.parse(badPath.stdout.toString()).error.code, 'INVALID_PATH');
  });

  test('a page corrupted on disk is detected, not served, and refetched', async () => {
    await cli('cat', '/data/hello.txt');
    const pages = await readdir(join(worker.dataDir, 'pages'), { recursive: true });
    let corrupted = 0;
    for (const page of pages.filter((p) => /\.[0-9a-f]{8}$/.test(p))) {
      const file = join(worker.dataDir, 'pages', page);
      const data = await readFile(file);
      if (data.toString() === 'hello fanout\n') {
        await writeFile(file, 'HELLO FANOUT\n');
        corrupted++;
      }
    }
    assert.equal(corrupted, 1);
    const failuresBefore = await metric('fanout_checksum_failures_total');
    const sourceBefore = await metric('fanout_source_bytes_total');
    const out = await cli('cat', '/data/hello.txt');
    assert.equal(out.stdout.toString(), 'hello fanout\n');
    assert.equal((await metric('fanout_checksum_failures_total')) - failuresBefore, 1);
    assert.equal((await metric('fanout_source_bytes_total')) - sourceBefore, 13, 'refetched from the source');
  });

  test('a file replaced at the source is read as its new content only', async () => {
    const path = join(source, 'models/v1/swap.bin');
    const v1 = randomBytes(3 * MiB);
    await writeFile(path, v1);
    assert.equal(sha256((await cli('cat', '/data/models/v1/swap.bin')).stdout), sha256(v1));
    const v2 = randomBytes(3 * MiB + 7);
    await writeFile(path + '.tmp', v2);
    await rename(path + '.tmp', path);
    // The stat TTL (200 ms here) bounds how long readers may still see v1.
    await waitFor('the new version to be visible', async () => {
      const out = await cli('cat', '/data/models/v1/swap.bin');
      const hash = sha256(out.stdout);
      assert.ok(hash === sha256(v1) || hash === sha256(v2), 'never a mix of versions');
      return hash === sha256(v2);
    });
  });

  test('a restarted worker keeps its cache warm', async () => {
    await cli('cat', '/data/models/v1/model.bin');
    await worker.restart();
    const out = await cli('cat', '/data/models/v1/model.bin');
    assert.equal(sha256(out.stdout), sha256(big));
    assert.equal(await metric('fanout_source_bytes_total'), 0, 'no source reads after restart');
    assert.equal(await metric('fanout_page_hits_total'), 10);
  });
});

test('fanout serve runs a one-node cluster over a directory with no configuration', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-serve-'));
  await writeFile(join(dir, 'a.txt'), 'served\n');
  const { spawn } = await import('node:child_process');
  const { fanoutBin } = await import('../harness/workers.js');
  const { freePort } = await import('../harness/ports.js');
  const port = await freePort();
  const proc = spawn(process.execPath, [fanoutBin, 'serve', dir, '--listen', `127.0.0.1:${port}`, '--log-level', 'warn'], {
    cwd: dir,
    stdio: 'ignore',
  });
  try {
    const endpoint = `http://127.0.0.1:${port}`;
    await waitFor('fanout serve', async () => (await fetch(`${endpoint}/healthz`)).ok);
    const out = await fanout(['cat', '/data/a.txt'], { FANOUT_ENDPOINT: endpoint });
    assert.equal(out.stdout.toString(), 'served\n');
    assert.ok((await readdir(join(dir, '.fanout'))).includes('pages'), 'data dir defaults to ./.fanout');
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
    await rm(dir, { recursive: true, force: true });
  }
});
