import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TEST_ADMIN_TOKEN, WorkerProcess } from '../harness/workers.js';
import { waitFor } from '../harness/ports.js';

const MiB = 1024 * 1024;
const isRoot = process.getuid?.() === 0;
const skip = isRoot ? false : 'needs root to mount a small tmpfs (mount -t tmpfs -o size=24m); run the suite as root';

/**
 * Every admin call of this file goes through here, so credentials (an admin token) can be added
 * in one place.
 */
async function admin(url: string, route: string, body: string): Promise<{ status: number; code?: string; message?: string; json: unknown }> {
  const res = await fetch(`${url}/v1/admin/${route}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${TEST_ADMIN_TOKEN}` }, body });
  const json = (await res.json().catch(() => undefined)) as { error?: { code: string; message: string } } | undefined;
  return { status: res.status, code: json?.error?.code, message: json?.error?.message, json };
}

async function mountTmpfs(size: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-tmpfs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  return dir;
}

async function unmountTmpfs(dir: string | undefined): Promise<void> {
  if (!dir) return;
  try {
    execFileSync('umount', [dir]);
  } catch {
    execFileSync('umount', ['-l', dir]);
  }
  await rm(dir, { recursive: true, force: true });
}

/** Writes until the file system answers ENOSPC: nothing is left for anyone. */
async function fillDisk(file: string): Promise<void> {
  const handle = await open(file, 'w');
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) await handle.write(chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    await handle.close();
  }
  // The last partial block: a byte at a time is too slow, halving chunks is enough.
  for (let size = 32 * 1024; size >= 1; size = Math.floor(size / 2)) {
    await writeFile(file, Buffer.alloc(size), { flag: 'a' }).catch(() => {});
  }
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

async function readAll(url: string, path: string, range?: [number, number]): Promise<Buffer> {
  const res = await fetch(`${url}/v1/data/${path}`, range ? { headers: { range: `bytes=${range[0]}-${range[1] - 1}` } } : {});
  assert.ok(res.ok, `GET ${path} answered ${res.status}: ${await res.clone().text().catch(() => '')}`);
  return Buffer.from(await res.arrayBuffer());
}

async function tempFiles(dataDir: string): Promise<string[]> {
  const tmp = (await readdir(join(dataDir, 'tmp')).catch(() => [] as string[])).map((f) => `tmp/${f}`);
  const top = (await readdir(dataDir)).filter((f) => f.endsWith('.tmp'));
  return [...tmp, ...top];
}

describe('a worker whose disk is smaller than its configured capacity', { skip }, () => {
  let disk: string | undefined;
  let source: string;
  let worker: WorkerProcess;
  let content: Buffer;
  const corrupt = '{"pins": ["00", "rules": [';

  before(async () => {
    disk = await mountTmpfs('24m');
    source = await mkdtemp(join(tmpdir(), 'fanout-src-'));
    content = randomBytes(64 * MiB); // 64 distinct 1 MiB pages, nearly 3× the disk
    await writeFile(join(source, 'big.bin'), content);
    // A policy file torn by a crash of an older version: the worker must start anyway.
    await mkdir(join(disk, 'data'));
    await writeFile(join(disk, 'data', 'policy.json'), corrupt);
    worker = await WorkerProcess.start({ id: 'small-disk', mounts: { data: source }, pageSize: '1MiB', capacity: '10GiB', dataDir: join(disk, 'data') });
  });

  after(async () => {
    await worker?.destroy();
    await unmountTmpfs(disk);
    if (source) await rm(source, { recursive: true, force: true });
  });

  test('a corrupt policy.json does not stop the worker: it is moved aside and named in the log', async () => {
    const names = await readdir(join(disk!, 'data'));
    const aside = names.filter((n) => /^policy\.json\.corrupt-\d{8}T\d{6}Z$/.test(n));
    assert.equal(aside.length, 1, `moved aside: ${names.join(', ')}`);
    assert.equal(await readFile(join(disk!, 'data', aside[0]!), 'utf8'), corrupt, 'kept as it was, for the operator');
    assert.ok(!names.includes('policy.json'), 'no policy.json until the next change');
    const log = await readFile(join(worker.dir, 'worker.log'), 'utf8');
    assert.ok(log.includes(join(disk!, 'data', 'policy.json')), 'the log names the corrupt file');
    const policy = (await (await fetch(`${worker.url}/v1/admin/policy`, { headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } })).json()) as { pinned: number };
    assert.equal(policy.pinned, 0);
  });

  test('the effective capacity is what the disk can hold, shown in /v1/status and /metrics', async () => {
    const status = (await (await fetch(`${worker.url}/v1/status`)).json()) as { capacity: number; configuredCapacity: number };
    assert.equal(status.configuredCapacity, 10 * 1024 * MiB);
    assert.ok(status.capacity <= 24 * MiB - 2.4 * MiB, `effective capacity ${status.capacity} leaves the reserve free`);
    assert.ok(status.capacity > 16 * MiB, `effective capacity ${status.capacity} uses most of the disk`);
    const metrics = await worker.metrics();
    assert.equal(metrics.fanout_store_capacity_bytes, status.capacity);
    assert.equal(metrics.fanout_store_configured_capacity_bytes, 10 * 1024 * MiB);
    assert.ok((metrics.fanout_store_disk_free_bytes ?? 0) > 0);
  });

  test('reading 64 MiB of distinct pages through a 24 MiB disk returns the right bytes and evicts', async () => {
    assert.equal(sha256(await readAll(worker.url, 'data/big.bin')), sha256(content), 'whole file');
    // Eight readers at once, each a different 8 MiB range, so page writes overlap.
    const ranges = Array.from({ length: 8 }, (_, i) => [i * 8 * MiB, (i + 1) * 8 * MiB] as [number, number]);
    const parts = await Promise.all(ranges.map((r) => readAll(worker.url, 'data/big.bin', r)));
    parts.forEach((part, i) => assert.ok(part.equals(content.subarray(ranges[i]![0], ranges[i]![1])), `range ${i}`));

    await waitFor('page writes to settle (no temp page files)', async () => (await tempFiles(join(disk!, 'data'))).length === 0);
    const metrics = await worker.metrics();
    assert.ok((metrics.fanout_evictions_total ?? 0) > 0, 'eviction happened');
    assert.ok(metrics.fanout_store_used_bytes! <= metrics.fanout_store_capacity_bytes!, 'the store stays within its effective capacity');
    assert.ok(metrics.fanout_store_used_bytes! > 0, 'pages are still cached');
    const fs = await statfs(disk!);
    assert.ok(fs.bavail > 0, 'the disk is not full');
    const failures = metrics.fanout_store_write_failures_total ?? 0;
    console.log(`# store write failures: ${failures}, evictions: ${metrics.fanout_evictions_total}, used ${metrics.fanout_store_used_bytes} of ${metrics.fanout_store_capacity_bytes}`);
    const errors = Object.entries(metrics).filter(([name]) => name === 'fanout_request_errors_total');
    assert.deepEqual(errors, [], 'no request failed');
  });

  test('admin bodies that are not the expected object are refused with 400 and a code', async () => {
    for (const route of ['pin', 'unpin', 'free', 'ttl', 'load']) {
      for (const body of ['null', '[]', '"x"', '{}', '', '{"keys": "aa"}', '{"keys": [1]}', '{"rule": {"mount": 1}}', 'not json']) {
        const res = await admin(worker.url, route, body);
        assert.equal(res.status, 400, `${route} ${JSON.stringify(body)} → ${res.status} ${res.message}`);
        assert.equal(res.code, 'INVALID_ARGUMENT');
        assert.ok(res.message && res.message.length > 10, `a message that says what is wrong: ${res.message}`);
      }
    }
    const ttl = await admin(worker.url, 'ttl', JSON.stringify({ rule: { mount: 'data', prefix: '' }, ttlMs: -5 }));
    assert.equal(ttl.status, 400);
    assert.match(ttl.message!, /ttlMs/);
    const load = await admin(worker.url, 'load', JSON.stringify({ pages: [{ mount: 'data', path: 'big.bin' }] }));
    assert.equal(load.status, 400);
    assert.match(load.message!, /pages\.0\.version/);
  });

  test('an admin body over the size limit is refused with 413', async () => {
    const huge = JSON.stringify({ keys: Array.from({ length: 420_000 }, (_, i) => i.toString(16).padStart(40, '0')) });
    const res = await admin(worker.url, 'pin', huge);
    assert.equal(res.status, 413);
    assert.equal(res.code, 'REQUEST_TOO_LARGE');
    assert.equal((await fetch(`${worker.url}/healthz`)).status, 200);
  });
});

describe('a worker whose disk is completely full', { skip }, () => {
  let disk: string | undefined;
  let source: string;
  let worker: WorkerProcess;
  let content: Buffer;

  before(async () => {
    disk = await mountTmpfs('8m');
    source = await mkdtemp(join(tmpdir(), 'fanout-src-'));
    content = randomBytes(4 * MiB);
    await writeFile(join(source, 'f.bin'), content);
    worker = await WorkerProcess.start({ id: 'full-disk', mounts: { data: source }, pageSize: '1MiB', capacity: '10GiB', dataDir: join(disk, 'data') });
    await fillDisk(join(disk, 'filler'));
  });

  after(async () => {
    await worker?.destroy();
    await unmountTmpfs(disk);
    if (source) await rm(source, { recursive: true, force: true });
  });

  test('pin answers 507 DISK_FULL, is not applied, and leaves no temp file', async () => {
    const res = await admin(worker.url, 'pin', JSON.stringify({ keys: ['ab'.repeat(20)], rule: { mount: 'data', prefix: 'models' } }));
    assert.equal(res.status, 507, `${res.status} ${res.message}`);
    assert.equal(res.code, 'DISK_FULL');
    assert.match(res.message!, /full/);
    assert.deepEqual(await tempFiles(join(disk!, 'data')), []);
    const names = await readdir(join(disk!, 'data'));
    assert.ok(!names.some((n) => n.includes('policy.json')), `no policy file, whole or partial: ${names.join(', ')}`);
    const policy = (await (await fetch(`${worker.url}/v1/admin/policy`, { headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } })).json()) as { pinned: number; rules: unknown[] };
    assert.deepEqual([policy.pinned, policy.rules], [0, []], 'the refused pin is not in force');
  });

  test('reads still return the right bytes, uncached, and the failures are counted', async () => {
    assert.equal(sha256(await readAll(worker.url, 'data/f.bin')), sha256(content));
    await waitFor('the write failures to be counted', async () => ((await worker.metrics()).fanout_store_write_failures_total ?? 0) > 0);
    const metrics = await worker.metrics();
    assert.equal(metrics.fanout_store_used_bytes, 0);
    assert.deepEqual(await tempFiles(join(disk!, 'data')), []);
    assert.equal(sha256(await readAll(worker.url, 'data/f.bin')), sha256(content), 'again, from the source');
    assert.equal((await fetch(`${worker.url}/healthz`)).status, 200);
  });

  test('a worker killed and started again on the full disk starts (no room for its data directory lock) and reads right', async () => {
    await worker.kill();
    await worker.launch();
    assert.equal(sha256(await readAll(worker.url, 'data/f.bin')), sha256(content));
  });
});
