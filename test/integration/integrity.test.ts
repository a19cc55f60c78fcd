import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pageKey } from '../../src/lib/pagekey/index.js';
import type { PageRef } from '../../src/core/types.js';
import { FanoutClient } from '../../src/client/index.js';
import { PageFetcher } from '../../src/lib/cluster/index.js';
import type { FanoutError } from '../../src/core/errors.js';
import { sendPath } from '../../src/lib/sendfile/index.js';
import { freePort, waitFor } from '../harness/ports.js';
import { WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;
const run = promisify(execFile);

/** The file of a stored page under a worker's data dir (`<key>.<crc32>`), if it holds it. */
async function pageFileOf(worker: WorkerProcess, key: string): Promise<string | undefined> {
  const shard = join(worker.dataDir, 'pages', key.slice(0, 2));
  const names = await readdir(shard).catch(() => [] as string[]);
  const name = names.find((n) => n.startsWith(`${key}.`));
  return name ? join(shard, name) : undefined;
}

/**
 * Flips bytes in the middle of a page file and puts its timestamps back (to the nanosecond,
 * with touch -r), as silent media corruption would: the worker sees the same mtime and size.
 * The corrupt copy is made beside the file and renamed over it, so a scrub running meanwhile
 * reads either the intact page or the corrupt one, never a half-written file (which it would
 * drop, and a later touch would then re-create as an empty file).
 */
async function corruptInPlace(file: string): Promise<void> {
  const corrupt = `${file}.corrupt`;
  const bytes = await readFile(file);
  for (let i = 0; i < 64; i++) bytes[1000 + i] = bytes[1000 + i]! ^ 0xff;
  await writeFile(corrupt, bytes);
  await run('touch', ['-r', file, corrupt]);
  await rename(corrupt, file);
}

/**
 * `count` workers over `dir` (1 MiB pages, static membership), started one after another: on a
 * loaded machine several starting at once can miss the harness's start deadline. Scrub off, so
 * that only a reader's report can find a corruption.
 */
async function startWorkers(dir: string, count: number): Promise<WorkerProcess[]> {
  const ports: number[] = [];
  for (let i = 0; i < count; i++) ports.push(await freePort());
  const members = ports.map((port, i) => ({ id: `w${i + 1}`, url: `http://127.0.0.1:${port}` }));
  const workers: WorkerProcess[] = [];
  for (const [i, port] of ports.entries()) {
    workers.push(await WorkerProcess.start({ id: members[i]!.id, mounts: { data: dir }, pageSize: '1MiB', scrub: { rate: 'off' }, membership: { static: members } }, port));
  }
  return workers;
}

async function readAll(url: string): Promise<Buffer> {
  const res = await fetch(url);
  assert.equal(res.status, 200);
  return Buffer.from(await res.arrayBuffer());
}

describe('the background scrub', () => {
  let dir: string;
  let worker: WorkerProcess;
  const data = randomBytes(3 * MiB + 777);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-scrub-'));
    await writeFile(join(dir, 'f.bin'), data);
    worker = await WorkerProcess.start({ id: 'w-scrub', mounts: { data: dir }, pageSize: '1MiB', scrub: { rate: '32MB/s' } });
  });
  after(async () => {
    await worker?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  test('finds a page corrupted on disk while the worker runs, drops it, and the next read refetches it', async () => {
    assert.ok((await readAll(`${worker.url}/v1/data/data/f.bin`)).equals(data));
    const { version } = (await (await fetch(`${worker.url}/v1/stat/data/f.bin`)).json()) as { version: string };
    const key = pageKey({ mount: 'data', path: 'f.bin', version, size: data.length, index: 1 }, MiB);
    const file = await pageFileOf(worker, key);
    assert.ok(file, 'page 1 is stored');
    await waitFor('the scrub to have read some pages', async () => ((await worker.metrics()).fanout_scrub_bytes_total ?? 0) > 0);
    await corruptInPlace(file);
    await waitFor('the scrub to find the corrupt page', async () => ((await worker.metrics()).fanout_scrub_corrupt_pages_total ?? 0) >= 1);
    const metrics = await worker.metrics();
    assert.equal(metrics.fanout_scrub_corrupt_pages_total, 1, 'only the corrupted page');
    assert.equal(await pageFileOf(worker, key), undefined, 'the corrupt page file is gone');
    assert.ok((await readAll(`${worker.url}/v1/data/data/f.bin`)).equals(data));
    await waitFor('page 1 to be stored again', async () => (await pageFileOf(worker, key)) !== undefined);
    const again = await readFile((await pageFileOf(worker, key))!);
    assert.ok(again.equals(data.subarray(MiB, 2 * MiB)), 'the refetched page has the right bytes');
  });
});

// A hit leaves by sendfile without being read on the worker (its file's mtime is unchanged since
// it was verified): only then can a reader be sent a corrupt page, and only the reader sees it.
describe('a reader that gets a corrupt page', { skip: sendPath() !== 'sendfile' && 'needs the sendfile addon' }, () => {
  let dir: string;
  let workers: WorkerProcess[];
  const data = randomBytes(4 * MiB + 99);
  let ref: PageRef;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-report-'));
    await writeFile(join(dir, 'f.bin'), data);
    workers = await startWorkers(dir, 3);
    const { version } = (await (await fetch(`${workers[0]!.url}/v1/stat/data/f.bin`)).json()) as { version: string };
    ref = { mount: 'data', path: 'f.bin', version, size: data.length, index: 2 };
  });
  after(async () => {
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await rm(dir, { recursive: true, force: true });
  });

  const readWithSdk = async () => {
    const client = new FanoutClient({ endpoint: workers[0]!.url });
    try {
      const stream = await client.createReadStream('/data/f.bin');
      const parts: Buffer[] = [];
      for await (const chunk of stream) parts.push(chunk as Buffer);
      return Buffer.concat(parts);
    } finally {
      await client.close();
    }
  };

  test('gets correct bytes, and the worker that sent it re-verifies, drops and refetches that page', async () => {
    assert.ok((await readWithSdk()).equals(data), 'first read (fills every page, then verified hits)');
    assert.ok((await readWithSdk()).equals(data), 'second read: hits sent by the kernel');
    const key = pageKey(ref, MiB);
    const holders = (await Promise.all(workers.map(async (w) => ((await pageFileOf(w, key)) ? w : undefined)))).filter((w) => w !== undefined);
    assert.equal(holders.length, 1, 'one worker holds page 2');
    const holder = holders[0]!;
    const failuresBefore = (await holder.metrics()).fanout_checksum_failures_total ?? 0;
    await corruptInPlace((await pageFileOf(holder, key))!);

    assert.ok((await readWithSdk()).equals(data), 'the reader got the right bytes from elsewhere');
    const text = await (await fetch(`${holder.url}/metrics`)).text();
    assert.match(text, /^fanout_page_reports_total\{result="corrupt"\} 1$/m);
    assert.equal((await holder.metrics()).fanout_checksum_failures_total, failuresBefore + 1);
    await waitFor('the page to be stored again on its owner', async () => (await pageFileOf(holder, key)) !== undefined);
    const stored = await readFile((await pageFileOf(holder, key))!);
    assert.ok(stored.equals(data.subarray(2 * MiB, 3 * MiB)), 'the refetched page has the right bytes');
    assert.ok((await readWithSdk()).equals(data));
  });

  test('a bogus report changes nothing: an intact page stays, an unknown page is absent, other methods are refused', async () => {
    const key = pageKey({ ...ref, index: 0 }, MiB);
    const holder = (await Promise.all(workers.map(async (w) => ((await pageFileOf(w, key)) ? w : undefined)))).find((w) => w !== undefined)!;
    const before = await holder.metrics();
    const report = (w: WorkerProcess, r: PageRef, method = 'POST') =>
      fetch(`${w.url}/v1/report/${r.mount}/${r.path}?v=${encodeURIComponent(r.version)}&size=${r.size}&i=${r.index}`, { method });

    const intact = await report(holder, { ...ref, index: 0 });
    assert.equal(intact.status, 200);
    assert.deepEqual(await intact.json(), { result: 'intact' });
    const unknown = await report(holder, { ...ref, version: 'made-up', index: 0 });
    assert.deepEqual(await unknown.json(), { result: 'absent' });
    const get = await report(holder, { ...ref, index: 0 }, 'GET');
    assert.equal(get.status, 400);
    assert.equal(((await get.json()) as { error: { code: string } }).error.code, 'INVALID_ARGUMENT');

    assert.ok(await pageFileOf(holder, key), 'the reported page is still stored');
    const after = await holder.metrics();
    assert.equal(after.fanout_checksum_failures_total ?? 0, before.fanout_checksum_failures_total ?? 0);
    assert.equal(after.fanout_store_pages, before.fanout_store_pages);
  });
});

// A worker asked for a page it does not own relays it from the owner (a client whose ring is
// older, a hedged read). The owner sends a hit by sendfile without reading it, so a page corrupted
// on its disk leaves it unchecked; the relay is the only one to see the checksum fail.
describe('a relay that gets a corrupt page from its owner', { skip: sendPath() !== 'sendfile' && 'needs the sendfile addon' }, () => {
  let dir: string;
  let workers: WorkerProcess[];
  const data = randomBytes(4 * MiB + 99);
  let version: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-relay-report-'));
    await writeFile(join(dir, 'f.bin'), data);
    workers = await startWorkers(dir, 2);
    ({ version } = (await (await fetch(`${workers[0]!.url}/v1/stat/data/f.bin`)).json()) as { version: string });
  });
  after(async () => {
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await rm(dir, { recursive: true, force: true });
  });

  /** A plain page request (no peer credential, so a non-owner relays it): status and bytes, or undefined if cut. */
  const getPage = async (w: WorkerProcess, index: number): Promise<{ status: number; bytes: Buffer | undefined }> => {
    const res = await fetch(`${w.url}/v1/page/data/f.bin?v=${encodeURIComponent(version)}&size=${data.length}&i=${index}`);
    try {
      return { status: res.status, bytes: Buffer.from(await res.arrayBuffer()) };
    } catch {
      return { status: res.status, bytes: undefined };
    }
  };

  test('reports it: the owner re-verifies, drops and refetches the page, and then sends its right bytes itself', async () => {
    assert.ok((await readAll(`${workers[0]!.url}/v1/data/data/f.bin`)).equals(data), 'first read fills every page on its owner');
    assert.ok((await readAll(`${workers[1]!.url}/v1/data/data/f.bin`)).equals(data), 'second read: verified hits');
    // A page owned by one worker and relayed by the other.
    let index = -1;
    let owner: WorkerProcess | undefined;
    for (let i = 0; i < 5 && !owner; i++) {
      const key = pageKey({ mount: 'data', path: 'f.bin', version, size: data.length, index: i }, MiB);
      for (const w of workers) if (await pageFileOf(w, key)) [index, owner] = [i, w];
    }
    assert.ok(owner, 'a worker holds a page of the file');
    const relay = workers.find((w) => w !== owner)!;
    const key = pageKey({ mount: 'data', path: 'f.bin', version, size: data.length, index }, MiB);
    const right = data.subarray(index * MiB, Math.min(data.length, (index + 1) * MiB));
    assert.ok((await getPage(owner, index)).bytes?.equals(right), 'the owner sends the page by sendfile once checked');
    const failuresBefore = (await owner.metrics()).fanout_checksum_failures_total ?? 0;
    await corruptInPlace((await pageFileOf(owner, key))!);
    const unchecked = await getPage(owner, index);
    assert.ok(unchecked.bytes !== undefined && !unchecked.bytes.equals(right), 'the owner sends its corrupt copy unchecked');

    // Read as a reader does (length, checksum and error trailers checked): the relay's answer
    // fails or gives the right bytes (it reads the source, checked against the owner's bytes).
    const fetcher = new PageFetcher();
    try {
      const ref = { mount: 'data', path: 'f.bin', version, size: data.length, index };
      const relayed = await fetcher.fetch({ id: relay.id, url: relay.url, capacity: 1 }, ref, right.length).then(
        (chunks) => ({ bytes: Buffer.concat(chunks) }),
        (err: FanoutError) => ({ err }),
      );
      if ('bytes' in relayed) assert.ok(relayed.bytes.equals(right), 'never the owner\'s bytes');
      else assert.equal(relayed.err.code, 'CHECKSUM_MISMATCH', relayed.err.message);
    } finally {
      await fetcher.close();
    }
    assert.equal((await relay.metrics()).fanout_relay_source_reads_total, 1, 'the relay read the source once, for the corrupt page');

    await waitFor('the owner to have a report of the corrupt page', async () => /^fanout_page_reports_total\{result="corrupt"\} 1$/m.test(await (await fetch(`${owner!.url}/metrics`)).text()));
    assert.equal((await owner.metrics()).fanout_checksum_failures_total, failuresBefore + 1, 'the owner dropped its copy');
    assert.ok((await getPage(owner, index)).bytes?.equals(right), 'the owner itself now sends the right bytes (refetched from the source)');
    await waitFor('the page to be stored again on its owner', async () => (await pageFileOf(owner!, key)) !== undefined);
    assert.ok((await readFile((await pageFileOf(owner, key))!)).equals(right), 'the refetched page has the right bytes');
    assert.ok((await readAll(`${relay.url}/v1/data/data/f.bin`)).equals(data));
  });
});

/** `curl -sS -o /dev/null URL` (a client that reads no trailers): its exit status, HTTP status and bytes taken. */
function runCurl(url: string): Promise<{ status: number; http: number; bytes: number }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', url], (err, stdout) => {
      const [http, bytes] = stdout.trim().split(' ').map(Number);
      resolve({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, http: http ?? 0, bytes: bytes ?? 0 });
    });
  });
}

// Plain HTTP clients (curl, fetch) read no trailers: a relay that has sent an owner's page before
// finding it fails its checksum must not end that answer as a whole page. And once the owner has
// dropped the corrupt copy on the relay's report, the relay asks it again at once.
describe('plain clients of a relay whose owner sends a corrupt page', { skip: sendPath() !== 'sendfile' && 'needs the sendfile addon' }, () => {
  let dir: string;
  let workers: WorkerProcess[];
  const data = randomBytes(24 * MiB + 99);
  let version: string;
  /** Three pages stored on one worker (the owner), none on the others. */
  let owner: WorkerProcess;
  let owned: number[];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-relay-plain-'));
    await writeFile(join(dir, 'f.bin'), data);
    workers = await startWorkers(dir, 3);
    ({ version } = (await (await fetch(`${workers[0]!.url}/v1/stat/data/f.bin`)).json()) as { version: string });
    assert.ok((await readAll(`${workers[0]!.url}/v1/data/data/f.bin`)).equals(data), 'first read fills every page on its owner');
    assert.ok((await readAll(`${workers[1]!.url}/v1/data/data/f.bin`)).equals(data), 'second read: verified hits');
    const pages = Math.ceil(data.length / MiB);
    const byOwner = new Map<WorkerProcess, number[]>();
    for (let i = 0; i < pages; i++) {
      const key = pageKey({ mount: 'data', path: 'f.bin', version, size: data.length, index: i }, MiB);
      for (const w of workers) if (await pageFileOf(w, key)) byOwner.set(w, [...(byOwner.get(w) ?? []), i]);
    }
    [owner, owned] = [...byOwner].sort((a, b) => b[1].length - a[1].length)[0]!;
    assert.ok(owned.length >= 3, 'a worker owns three pages of the file');
  });
  after(async () => {
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await rm(dir, { recursive: true, force: true });
  });

  const pageUrl = (w: WorkerProcess, index: number) => `${w.url}/v1/page/data/f.bin?v=${encodeURIComponent(version)}&size=${data.length}&i=${index}`;
  const right = (index: number) => data.subarray(index * MiB, Math.min(data.length, (index + 1) * MiB));
  const key = (index: number) => pageKey({ mount: 'data', path: 'f.bin', version, size: data.length, index }, MiB);

  test('curl and fetch of /v1/page through the relay fail instead of taking the owner\'s corrupt bytes for the page', async () => {
    const [relayA, relayB] = workers.filter((w) => w !== owner) as [WorkerProcess, WorkerProcess];
    const [first, second] = owned as [number, number];
    await corruptInPlace((await pageFileOf(owner, key(first)))!);
    await corruptInPlace((await pageFileOf(owner, key(second)))!);

    // Each relay meets the owner's corrupt page first (it then skips the owner or asks it again).
    const res = await fetch(pageUrl(relayA, first));
    const body = await res.arrayBuffer().then(
      (b) => Buffer.from(b),
      () => undefined,
    );
    // Before: 200 and the owner's corrupt bytes, read whole (the error only in a trailer).
    assert.ok(res.status !== 200 || body === undefined || body.equals(right(first)), `fetch: HTTP ${res.status} and a whole body of ${body?.length} bytes that are not the page's`);

    const curl = await runCurl(pageUrl(relayB, second));
    // Before: curl exited 0 with HTTP 200 and 1 MiB of the owner's corrupt bytes.
    assert.notEqual(curl.status, 0, `curl exits non-zero (HTTP ${curl.http}, ${curl.bytes} bytes)`);
    assert.equal(curl.status, 18, 'curl: transfer closed with outstanding read data remaining');

    // A reader that reads trailers still gets the failure's code (integrity's relay test above).
    for (const w of [relayA, relayB]) assert.equal((await fetch(`${w.url}/healthz`)).status, 200);
  });

  test('once the owner has dropped the corrupt page it was told of, the relay asks it again at once instead of reading the source for 30 s', async () => {
    const relay = workers.find((w) => w !== owner)!;
    const [, , third] = owned as [number, number, number];
    await waitFor('the owner to have dropped both corrupt pages', async () => /^fanout_page_reports_total\{result="corrupt"\} 2$/m.test(await (await fetch(`${owner.url}/metrics`)).text()));
    // The relay reads the owner's answer to its report as soon as the owner counted it.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const before = (await relay.metrics()).fanout_relay_source_reads_total ?? 0;
    const res = await fetch(pageUrl(relay, third));
    assert.equal(res.status, 200);
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(right(third)));
    // Before: +1, `reason="owner_corrupt"`: the owner was skipped for 30 s although it had dropped the page.
    assert.equal((await relay.metrics()).fanout_relay_source_reads_total ?? 0, before, 'the relay did not read the source: it asked the owner');
  });
});
