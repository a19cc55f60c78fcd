import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, request, type Server } from 'node:http';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sha256 } from '../harness/cli.js';
import { freePort } from '../harness/ports.js';
import { forceUnmount, MountProcess, sh } from '../harness/mount.js';
import { WorkerProcess } from '../harness/workers.js';

const DIRS = 3;
const FILES_PER_DIR = 40;

/**
 * A loopback HTTP proxy in front of the worker that notes every request's method and path: the
 * worker advertises the proxy's URL, so everything the mount asks of the cluster passes here.
 */
async function requestLog(target: () => string): Promise<{ server: Server; url: string; seen: string[] }> {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const upstream = request(`${target()}${req.url}`, { method: req.method, headers: req.headers, timeout: 30_000 }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
      answer.on('error', () => res.destroy());
    });
    upstream.on('timeout', () => upstream.destroy(new Error('upstream timed out')));
    upstream.on('error', () => (res.headersSent ? res.destroy() : res.writeHead(502).end()));
    req.pipe(upstream);
    req.on('error', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

/** A tree of small files read cold through `fanout mount`, as `cat` of a search index does. */
describe('fanout mount: a tree of small files', () => {
  let source: string;
  let work: string;
  let mnt: string;
  let worker: WorkerProcess;
  let mount: MountProcess;
  let log: Awaited<ReturnType<typeof requestLog>>;
  const expected = new Map<string, string>();

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-mount-small-src-'));
    work = await mkdtemp(join(tmpdir(), 'fanout-mount-small-'));
    mnt = join(work, 'mnt');
    await mkdir(mnt);
    for (let d = 0; d < DIRS; d++) {
      await mkdir(join(source, 'index', `d${d}`), { recursive: true });
      for (let f = 0; f < FILES_PER_DIR; f++) {
        const name = `index/d${d}/seg${String(f).padStart(3, '0')}.bin`;
        const bytes = randomBytes(1000 + ((d * FILES_PER_DIR + f) * 997) % 30_000);
        await writeFile(join(source, name), bytes);
        expected.set(`./${name.slice('index/'.length)}`, sha256(bytes));
      }
    }
    const port = await freePort();
    log = await requestLog(() => `http://127.0.0.1:${port}`);
    worker = await WorkerProcess.start({ id: 'small', mounts: { data: source }, pageSize: '1MiB', advertiseUrl: log.url }, port);
    // A TTL longer than the test: what the addon holds stays valid for the second pass.
    mount = await MountProcess.start(mnt, worker.url, '--ttl', '60s');
  });

  after(async () => {
    await mount?.signal('SIGTERM');
    await forceUnmount(mnt);
    await worker?.destroy();
    log?.server.close();
    log?.server.closeAllConnections();
    await rm(source, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  test('reading every file in listing order gives the source bytes, the pages carried by batch requests', async () => {
    const before = log.seen.length;
    const sums = await sh('sh', ['-c', 'find . -type f -print0 | xargs -0 -n 1000 sha256sum'], { cwd: join(mnt, 'data/index') });
    assert.equal(sums.code, 0, sums.stderr);
    const got = new Map(
      sums.stdout
        .toString()
        .trim()
        .split('\n')
        .map((line) => line.split(/\s+/))
        .map(([sum, path]) => [path!, sum!]),
    );
    assert.deepEqual(got, expected);

    const requests = log.seen.slice(before);
    const batches = requests.filter((r) => r.startsWith('POST /v1/pages')).length;
    const single = requests.filter((r) => r.startsWith('GET /v1/page/')).length;
    const files = DIRS * FILES_PER_DIR;
    assert.ok(batches > 0, `no batch request among ${requests.length}`);
    // Each file is one page: asked for one by one they would take a request each.
    assert.ok(batches + single <= files / 2, `${batches} batch and ${single} single page requests for ${files} files`);
  });

  test('files fetched ahead are then opened, read and released by the addon alone, with the right bytes', async (t) => {
    // A second pass over the tree: the first one's directory prefetch handed its files down.
    const sums = await sh('sh', ['-c', 'find . -type f -print0 | xargs -0 -n 1000 sha256sum'], { cwd: join(mnt, 'data/index') });
    assert.equal(sums.code, 0, sums.stderr);
    const lines = sums.stdout.toString().trim().split('\n').map((line) => line.split(/\s+/));
    assert.deepEqual(new Map(lines.map(([sum, path]) => [path!, sum!])), expected);

    await mount.signal('SIGTERM'); // the mount logs what the addon answered as it unmounts
    const line = mount.log.split('\n').find((l) => l.includes('"held"'));
    assert.ok(line, `no held-files line in the mount's log:\n${mount.log}`);
    const held = (JSON.parse(line) as { held: { open: number; read: number; release: number; held: number } }).held;
    t.diagnostic(`addon answers: ${JSON.stringify(held)}`);
    const files = DIRS * FILES_PER_DIR;
    // All but the first files of each directory (before the walk is seen) are fetched ahead.
    assert.ok(held.held >= files - 3 * DIRS, `${held.held} of ${files} files handed down`);
    assert.ok(held.open >= files - 3 * DIRS, `${held.open} opens answered by the addon over two passes of ${files} files`);
    assert.ok(held.read > 0, 'no read answered by the addon');
    // The kernel sends RELEASE in the background after close(2) returns: the last one or two may
    // still be queued when the unmount comes, and then never arrive (seen once in four runs on a
    // loaded machine: 217 opens, 216 releases). More missing would be releases answered elsewhere.
    assert.ok(held.release <= held.open && held.open - held.release <= 2, `${held.release} releases answered by the addon for its ${held.open} opens`);
  });

  test('with a short TTL, names looked up again after their kernel entries expired are answered by the addon too', async (t) => {
    // Whether a name is looked up again while its handed-down copy is still valid depends on when
    // the kernel's entries and the stat answers expire relative to each other, which the load can
    // shift: a round is a fresh mount, and some round within a few must see such lookups.
    const lookups: number[] = [];
    for (let round = 0; round < 4 && !lookups.some((n) => n > 0); round++) {
      const short = join(work, `short-${round}`);
      await mkdir(short, { recursive: true });
      const other = await MountProcess.start(short, worker.url, '--ttl', '1s');
      try {
        const dir = join(short, 'data/index');
        // The names are listed once; the second pass opens them by name without listing again
        // (a listing would give the kernel fresh entries, and it would need no lookup).
        const list = join(work, `short-${round}.list`);
        assert.equal((await sh('sh', ['-c', `find . -type f -print0 > ${list}`], { cwd: dir })).code, 0);
        await new Promise((r) => setTimeout(r, 1500)); // the kernel's entries from the listing expire
        const sums = await sh('sh', ['-c', `xargs -0 -n 1000 sha256sum < ${list}`], { cwd: dir });
        assert.equal(sums.code, 0, sums.stderr);
        const lines = sums.stdout.toString().trim().split('\n').map((line) => line.split(/\s+/));
        assert.deepEqual(new Map(lines.map(([sum, path]) => [path!, sum!])), expected);
      } finally {
        await other.signal('SIGTERM');
        await forceUnmount(short);
      }
      const line = other.log.split('\n').find((l) => l.includes('"held"'));
      assert.ok(line, `no held-files line in the mount's log:\n${other.log}`);
      const held = (JSON.parse(line) as { held: { lookup: number; open: number } }).held;
      t.diagnostic(`round ${round}, addon answers: ${JSON.stringify(held)}`);
      lookups.push(held.lookup);
    }
    assert.ok(lookups.some((n) => n > 0), `no lookup answered by the addon in ${lookups.length} rounds`);
  });
});
