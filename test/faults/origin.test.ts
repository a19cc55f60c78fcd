import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fanout } from '../harness/cli.js';
import { Origin } from '../harness/origin.js';
import { WorkerProcess } from '../harness/workers.js';
import { assertAlive, assertFailed, get, page, sha, stat } from './helpers.js';

const MiB = 1024 * 1024;

/**
 * A worker process whose mounts are a misbehaving HTTP origin. For every fault: the worker
 * stays up, the read fails with the code that names the fault (or succeeds with the right
 * bytes), and nothing wrong is cached: once the origin behaves again, reads return its bytes.
 */
describe('a worker over a misbehaving HTTP origin', () => {
  let origin: Origin;
  let worker: WorkerProcess;
  const size = 3 * MiB + 12345;
  const pageBytes = (i: number, of: Buffer) => of.subarray(i * MiB, Math.min(size, (i + 1) * MiB));
  let files = 0;
  /** A new file for each test: nothing an earlier test cached can answer for it. */
  async function fresh(): Promise<{ name: string; data: Buffer; path: string }> {
    const name = `f${++files}.bin`;
    const data = randomBytes(size);
    await origin.put(name, data);
    return { name, data, path: `/web/${name}` };
  }

  before(async () => {
    origin = await Origin.start();
    worker = await WorkerProcess.start({
      id: 'faults',
      pageSize: '1MiB',
      statTtl: 0,
      mounts: { web: origin.url, loose: { uri: origin.url, versioning: 'weak' } },
      // Short deadlines so that hangs end quickly; nothing below asserts how long anything took.
      timeouts: { sourceConnect: '3s', sourceFirstByte: '3s', sourceIdle: '3s' },
    });
  });

  after(async () => {
    // Source faults are request failures: none may surface as an internal error or an uncaught one.
    const log = worker ? await readFile(join(worker.dir, 'worker.log'), 'utf8') : '';
    await worker?.destroy();
    assert.doesNotMatch(log, /uncaught|unhandled|"INTERNAL"/i, log.slice(0, 2000));
    await origin?.close();
  });

  afterEach(async () => {
    origin.normal();
    await assertAlive(worker);
  });

  async function version(mountPath: string): Promise<string> {
    const answer = await stat(worker, mountPath);
    assert.equal(answer.status, 200, answer.message);
    return answer.info!.version;
  }

  /** Every page of the file through /v1/data: the bytes the origin now serves. */
  async function assertReadsCorrectly(mountPath: string, expected: Buffer): Promise<void> {
    const answer = await get(`${worker.url}/v1/data${mountPath}`);
    assert.equal(answer.status, 200, answer.message);
    assert.equal(sha(answer.body), sha(expected));
  }

  test('a page asked at a bogus version from an origin that ignores If-Match is SOURCE_CHANGED, and the worker stays up', async () => {
    const { name, data, path } = await fresh();
    origin.behave({ ignoresIfMatch: true });
    const answer = await page(worker, path, 'bogus', size, 0);
    assertFailed(answer, 'SOURCE_CHANGED');
    await assertAlive(worker);
    origin.normal();
    await assertReadsCorrectly(path, data);
  });

  test('an origin that ignores Range fails ranged reads with SOURCE_ERROR, never wrong bytes', async () => {
    const { name, data, path } = await fresh();
    origin.behave({ ignoresRange: true });
    const answer = await get(`${worker.url}/v1/data${path}`, { range: `bytes=${2 * MiB}-${2 * MiB + 100}` });
    assertFailed(answer, 'SOURCE_ERROR');
    assert.match(answer.message ?? '', /ignores Range/);
    const direct = await page(worker, path, await version(path), size, 1);
    assertFailed(direct, 'SOURCE_ERROR');
    await assertAlive(worker);
    origin.normal();
    const again = await get(`${worker.url}/v1/data${path}`, { range: `bytes=${2 * MiB}-${2 * MiB + 100}` });
    assert.equal(again.status, 206);
    assert.equal(sha(again.body), sha(data.subarray(2 * MiB, 2 * MiB + 101)));
  });

  test('a strict mount refuses a file without ETag with SOURCE_UNVERSIONED naming the mount path and the option', async () => {
    const { name, data, path } = await fresh();
    origin.behave({ etag: 'none' });
    const answer = await stat(worker, path);
    assertFailed(answer, 'SOURCE_UNVERSIONED');
    assert.ok(answer.message!.startsWith(`${path}: `), answer.message);
    assert.match(answer.message!, /versioning: weak/);
    assert.doesNotMatch(answer.message!, /127\.0\.0\.1|\/\/web/);
    // A client that has a size-mtime version from elsewhere is refused as well: no read under it.
    const weakVersion = `${size}-${Date.parse(new Date(Math.floor(Date.now() / 1000) * 1000).toUTCString())}`;
    assertFailed(await page(worker, path, weakVersion, size, 0), 'SOURCE_UNVERSIONED');
    origin.behave({ etag: 'weak' });
    assertFailed(await stat(worker, path), 'SOURCE_UNVERSIONED');
    await assertAlive(worker);
  });

  test('a file replaced mid-read with same size and Last-Modified: a strict mount never mixes versions', async () => {
    const { name, data, path } = await fresh();
    const v1 = await version(path);
    const first = await page(worker, path, v1, size, 0);
    assert.equal(sha(first.body), sha(pageBytes(0, data)));
    const next = randomBytes(size);
    await origin.replace(name, next);
    // Pages of v1 not yet cached can no longer be read: the origin's ETag changed.
    assertFailed(await page(worker, path, v1, size, 1), 'SOURCE_CHANGED');
    const v2 = await version(path);
    assert.notEqual(v2, v1);
    assert.equal(sha((await page(worker, path, v2, size, 1)).body), sha(pageBytes(1, next)));
    assert.equal(sha((await page(worker, path, v2, size, 0)).body), sha(pageBytes(0, next)));
    await assertReadsCorrectly(path, next);
  });

  test('a file replaced during one whole-file read on a strict mount: the read fails or returns one version, never a mix', async () => {
    const { name, data, path } = await fresh();
    const next = randomBytes(size);
    origin.behave({ replaceAfter: { bytes: MiB + 1, data: next } }, name);
    const answer = await get(`${worker.url}/v1/data${path}`);
    if (answer.status === 200 && !answer.cut) {
      assert.ok([sha(data), sha(next)].includes(sha(answer.body)), 'the bytes are those of one version');
    }
    await assertAlive(worker);
    origin.normal();
    await assertReadsCorrectly(path, next);
  });

  test('weak versioning reads an origin without ETag by size and Last-Modified (the documented risk: a same-second replacement is not seen)', async () => {
    const { name, data, path } = await fresh();
    origin.behave({ etag: 'none' });
    const v1 = await version(`/loose/${name}`);
    assert.match(v1, /^\d+-\d+$/);
    assert.equal(sha((await page(worker, `/loose/${name}`, v1, size, 0)).body), sha(pageBytes(0, data)));
    const next = randomBytes(size);
    await origin.replace(name, next);
    assert.equal(await version(`/loose/${name}`), v1, 'same size, same Last-Modified second: the same weak version');
    // This is the risk a weak mount accepts: page 1 comes from the new bytes under the old version.
    assert.equal(sha((await page(worker, `/loose/${name}`, v1, size, 1)).body), sha(pageBytes(1, next)));
  });

  test('an origin answering 5xx fails reads with SOURCE_ERROR, and nothing is cached', async () => {
    const { name, data, path } = await fresh();
    const v = await version(path);
    origin.behave({ status: 503 });
    const answer = await page(worker, path, v, size, 2);
    assertFailed(answer, 'SOURCE_ERROR');
    assert.match(answer.message!, /HTTP 503/);
    assertFailed(await stat(worker, path), 'SOURCE_ERROR');
    origin.normal();
    assert.equal(sha((await page(worker, path, v, size, 2)).body), sha(pageBytes(2, data)));
  });

  test('an origin that gzips answers a client allows (a compressing proxy): fanout asks for identity and serves the file as stored', async () => {
    const { data, path } = await fresh();
    origin.behave({ compresses: true });
    const answer = await stat(worker, path);
    assert.equal(answer.status, 200, answer.message);
    assert.equal(answer.info!.size, size, 'the size of the file, not of its gzipped form');
    await assertReadsCorrectly(path, data);
    const part = await get(`${worker.url}/v1/data${path}`, { range: `bytes=${2 * MiB}-${2 * MiB + 100}` });
    assert.equal(sha(part.body), sha(data.subarray(2 * MiB, 2 * MiB + 101)));
    assert.ok(origin.counters.log.filter((r) => r.path === path.slice('/web/'.length)).every((r) => r.acceptEncoding === 'identity'));
  });

  test('a proxy that gzips answers against Accept-Encoding: identity fails reads with SOURCE_ERROR naming the coding and the fix, not SOURCE_CHANGED', async () => {
    const { data, path } = await fresh();
    origin.behave({ compresses: 'ignoring-identity' });
    const v = await version(path);
    const whole = await get(`${worker.url}/v1/data${path}`);
    assertFailed(whole, 'SOURCE_ERROR');
    assert.match(whole.message ?? '', /^\/web\/f\d+\.bin: the source answered a range read with Content-Encoding: gzip although fanout asked for the file as stored \(Accept-Encoding: identity\)/);
    assert.match(whole.message ?? '', /Turn its compression off/);
    const one = await page(worker, path, v, size, 2);
    assertFailed(one, 'SOURCE_ERROR');
    assert.match(one.message ?? '', /Content-Encoding: gzip/);
    await assertAlive(worker);
    origin.normal();
    await assertReadsCorrectly(path, data);
  });

  test('a file stored compressed (Content-Encoding: gzip on HEAD and GET alike, as a .tar.gz is served) is read as stored', async () => {
    const { name, data, path } = await fresh();
    origin.behave({ storedCoding: 'gzip' }, name);
    const answer = await stat(worker, path);
    assert.equal(answer.status, 200, answer.message);
    assert.equal(answer.info!.size, size);
    await assertReadsCorrectly(path, data);
    assert.equal(sha((await page(worker, path, answer.info!.version, size, 3)).body), sha(pageBytes(3, data)));
  });

  test('a file whose HEAD says Content-Length: 0 (a handler that skips the body for HEAD) is served whole, not as an empty file', async () => {
    const { name, data, path } = await fresh();
    origin.behave({ headSaysEmpty: true }, name);
    const answer = await stat(worker, path);
    assert.equal(answer.info?.size, size, answer.message);
    await assertReadsCorrectly(path, data);
  });

  /** GET requests the origin received for these paths (a stat's HEADs are not page reads). */
  const getsFor = (...paths: string[]) => origin.counters.log.filter((r) => r.method === 'GET' && paths.includes(r.path)).length;

  test('pages of a file behind a permanent redirect cost one request each once the first page found the target', async () => {
    const { name, data } = await fresh();
    const moved = `moved-${name}`;
    origin.behave({ redirect: { to: name, status: 301 } }, moved);
    const path = `/web/${moved}`;
    const v = await version(path);
    const before = getsFor(moved, name);
    for (let i = 0; i < 4; i++) assert.equal(sha((await page(worker, path, v, size, i)).body), sha(pageBytes(i, data)), `page ${i}`);
    // The first page: the redirect, then its target; every later page: the target alone (before: 3 a page, 12).
    assert.equal(getsFor(moved, name) - before, 2 + 3);
  });

  test('an origin answering 416 to a range inside the file fails reads with SOURCE_ERROR, not "past the end", and nothing is cached', async () => {
    const { data, path } = await fresh();
    const v = await version(path);
    origin.behave({ refusesRange: true });
    // Each of these asked for bytes the file has: 416 would tell the client its own request was wrong.
    const whole = await get(`${worker.url}/v1/data${path}`);
    assertFailed(whole, 'SOURCE_ERROR');
    assert.match(whole.message ?? '', /refused bytes 0-1048575 \(HTTP 416\)/);
    assertFailed(await get(`${worker.url}/v1/data${path}`, { range: `bytes=${2 * MiB}-${2 * MiB + 100}` }), 'SOURCE_ERROR');
    assertFailed(await page(worker, path, v, size, 1), 'SOURCE_ERROR');
    await assertAlive(worker);
    origin.normal();
    await assertReadsCorrectly(path, data);
  });

  test('`fanout cp` of a file whose last page the origin cannot read exits with SOURCE_ERROR and leaves no file', async () => {
    const { path } = await fresh();
    const dir = await mkdtemp(join(tmpdir(), 'fanout-cp-tail-'));
    try {
      // The whole window (every page) is asked at once: the tail fails while earlier pages land.
      origin.behave({ failFrom: { offset: 3 * MiB, status: 500 } });
      const out = await fanout(['cp', path, join(dir, 'copy.bin'), '--endpoint', worker.url]);
      assert.equal(out.code, 1, out.stderr);
      assert.match(out.stderr, /^fanout: SOURCE_ERROR: /m);
      assert.deepEqual(await readdir(dir), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('an origin that cuts the body fails the read (SOURCE_TRUNCATED at the source), and nothing is cached', async () => {
    const { name, data, path } = await fresh();
    const v = await version(path);
    origin.behave({ truncateAfter: 1000 });
    assertFailed(await page(worker, path, v, size, 1), 'SOURCE_TRUNCATED');
    // Headers then FIN at once: undici may see the close before it hands out the response, so
    // the cut is reported with the headers (SOURCE_ERROR) or after them (SOURCE_TRUNCATED).
    origin.behave({ truncateAfter: 0 });
    const cutAtOnce = await page(worker, path, v, size, 1);
    assert.ok(['SOURCE_TRUNCATED', 'SOURCE_ERROR'].includes(cutAtOnce.code!), `got ${cutAtOnce.code}: ${cutAtOnce.message}`);
    await assertAlive(worker);
    origin.normal();
    assert.equal(sha((await page(worker, path, v, size, 1)).body), sha(pageBytes(1, data)));
    await assertReadsCorrectly(path, data);
  });

  test('an origin that resets the connection fails the read with SOURCE_ERROR, and nothing is cached', async () => {
    const { name, data, path } = await fresh();
    const v = await version(path);
    origin.behave({ resetAfter: 0 });
    const answer = await page(worker, path, v, size, 3);
    assertFailed(answer, 'SOURCE_ERROR');
    origin.behave({ resetAfter: 5000 });
    // A reset after some of the body is a failed read either way; its code was SOURCE_TRUNCATED
    // (the connection seen closed) once in a loaded CI run, SOURCE_ERROR in every other: not
    // root-caused (the note says so), so both are taken here, and what matters is checked
    // below: nothing of it was cached.
    assertFailed(await page(worker, path, v, size, 3), ['SOURCE_ERROR', 'SOURCE_TRUNCATED']);
    origin.normal();
    assert.equal(sha((await page(worker, path, v, size, 3)).body), sha(pageBytes(3, data)));
  });

  test('an origin that never answers fails reads and stats with SOURCE_ERROR after the first-byte deadline', async () => {
    const { name, data, path } = await fresh();
    const v = await version(path);
    origin.behave({ hang: 'nothing' });
    const answer = await page(worker, path, v, size, 0);
    assertFailed(answer, 'SOURCE_ERROR');
    assert.match(answer.message!, /sourceFirstByte/);
    const statAnswer = await stat(worker, path);
    assertFailed(statAnswer, 'SOURCE_ERROR');
    assert.match(statAnswer.message!, /sourceFirstByte/);
    await assertAlive(worker);
    origin.normal();
    assert.equal(sha((await page(worker, path, v, size, 0)).body), sha(pageBytes(0, data)));
  });

  test('an origin that sends headers then nothing fails the read with SOURCE_ERROR after the deadline', async () => {
    const { name, data, path } = await fresh();
    const v = await version(path);
    origin.behave({ hang: 'headers' });
    const answer = await page(worker, path, v, size, 2);
    assertFailed(answer, 'SOURCE_ERROR');
    assert.match(answer.message!, /timeouts\.source/);
    origin.normal();
    assert.equal(sha((await page(worker, path, v, size, 2)).body), sha(pageBytes(2, data)));
  });

  test('an origin trickling bytes fails the read with SOURCE_ERROR (stalled) and the worker stays up', async () => {
    const { name, data, path } = await fresh();
    const v = await version(path);
    origin.behave({ bytesPerSecond: 2000 });
    const answer = await page(worker, path, v, size, 3);
    assertFailed(answer, 'SOURCE_ERROR');
    await assertAlive(worker);
    origin.normal();
    assert.equal(sha((await page(worker, path, v, size, 3)).body), sha(pageBytes(3, data)));
  });

  test('a missing file is NOT_FOUND naming the mount path, not the origin', async () => {
    const answer = await stat(worker, '/web/missing.bin');
    assertFailed(answer, 'NOT_FOUND');
    assert.match(answer.message!, /^\/web\/missing\.bin/);
    assert.doesNotMatch(answer.message!, /127\.0\.0\.1|\/\/web/);
  });
});
