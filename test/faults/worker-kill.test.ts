import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, StopWaiting, waitFor } from '../harness/ports.js';
import { TEST_ADMIN_TOKEN, WorkerProcess, fanoutBin, testAuth } from '../harness/workers.js';
import { sha } from './helpers.js';
import { fanout } from '../harness/cli.js';

/**
 * A worker SIGKILLed (kill -9, the OOM killer) at bad moments and started again on the same data
 * directory: reads are right afterwards, the store's accounting matches its files, nothing the
 * kill left behind is served or kept, and what the operator said (pins, TTLs) still holds.
 */

const MiB = 1024 * 1024;
const auth = { authorization: `Bearer ${TEST_ADMIN_TOKEN}` };

async function admin(worker: WorkerProcess, route: string, body: unknown): Promise<Response> {
  return fetch(`${worker.url}/v1/admin/${route}`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify(body) });
}

async function readFileOf(worker: WorkerProcess, path: string): Promise<Buffer> {
  const res = await fetch(`${worker.url}/v1/data/data/${path}`);
  assert.equal(res.status, 200, `GET ${path}: ${res.status}`);
  return Buffer.from(await res.arrayBuffer());
}

async function status(worker: WorkerProcess): Promise<{ used: number; pageBytes: number; pages: number; capacity: number }> {
  return (await (await fetch(`${worker.url}/v1/status`)).json()) as { used: number; pageBytes: number; pages: number; capacity: number };
}

/** What files of these sizes take on disk, as the store counts them: whole blocks of the file system's (statfs) size. */
function inBlocks(dir: string, sizes: number[]): number {
  const block = Number(execFileSync('stat', ['-f', '-c', '%S', dir]).toString().trim());
  return sizes.reduce((sum, size) => sum + Math.ceil(size / block) * block, 0);
}

/** What the store's directories take on disk (pages/, tmp/ and the shards: st_blocks), as the store counts them. */
async function dirBlocks(dataDir: string): Promise<number> {
  const pages = join(dataDir, 'pages');
  const dirs = [pages, join(dataDir, 'tmp'), ...(await readdir(pages)).map((shard) => join(pages, shard))];
  let bytes = 0;
  for (const dir of dirs) bytes += (await stat(dir)).blocks * 512;
  return bytes;
}

async function pinned(url: string): Promise<number> {
  return ((await (await fetch(`${url}/v1/admin/policy`, { headers: auth })).json()) as { pinned: number }).pinned;
}

/** The page files under `data/pages`, with their sizes. */
async function pageFiles(dataDir: string): Promise<{ file: string; size: number }[]> {
  const pages = join(dataDir, 'pages');
  const out: { file: string; size: number }[] = [];
  for (const shard of await readdir(pages)) {
    for (const name of await readdir(join(pages, shard))) {
      const file = join(pages, shard, name);
      out.push({ file, size: (await stat(file)).size });
    }
  }
  return out;
}

describe('a worker killed while filling pages, restarted on its data directory', () => {
  let source: string;
  let worker: WorkerProcess;
  const files = new Map<string, Buffer>();

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-kill-src-'));
    // Large files of many pages and small ones of less than a page, more than the capacity together.
    for (let i = 0; i < 3; i++) files.set(`big-${i}.bin`, randomBytes(12 * MiB + 4321 * i));
    for (let i = 0; i < 40; i++) files.set(`small/s-${i}.bin`, randomBytes(1000 + 7919 * i));
    await mkdir(join(source, 'small'));
    for (const [name, data] of files) await writeFile(join(source, name), data);
    // Pages over 1 MiB are written to a temp file as they arrive (spools), smaller ones at once.
    worker = await WorkerProcess.start({ id: 'killed', mounts: { data: source }, pageSize: '2MiB', capacity: '24MiB' });
  });

  after(async () => {
    await worker?.destroy();
    if (source) await rm(source, { recursive: true, force: true });
  });

  test('after kills mid-fill, reads are right and the store counts exactly the page files it holds, within its capacity', async (t) => {
    for (let round = 0; round < 3; round++) {
      const before = await status(worker);
      const reads = [...files.keys()].map((name) => fetch(`${worker.url}/v1/data/data/${name}`).then((r) => r.arrayBuffer()).catch(() => undefined));
      // Pages stored (and, past the first round, evicted) while others are in flight: the kill comes.
      const deadline = Date.now() + 20_000;
      while ((await status(worker)).used === before.used && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      await worker.kill();
      await Promise.all(reads);
      t.diagnostic(`round ${round}: ${(await readdir(join(worker.dataDir, 'tmp'))).length} temp files left by the kill`);
      await worker.launch();
      assert.deepEqual(await readdir(join(worker.dataDir, 'tmp')), [], 'the temp files of the fills the kill cut are gone');
      const onDisk = await pageFiles(worker.dataDir);
      const after = await status(worker);
      assert.equal(after.pages, onDisk.length, `round ${round}: pages counted`);
      assert.equal(after.pageBytes, onDisk.reduce((sum, f) => sum + f.size, 0), `round ${round}: bytes counted`);
      assert.equal(after.used, inBlocks(worker.dataDir, onDisk.map((f) => f.size)) + (await dirBlocks(worker.dataDir)), `round ${round}: blocks counted, the store's directories with them`);
      for (const [name, data] of files) assert.equal(sha(await readFileOf(worker, name)), sha(data), `round ${round}: ${name}`);
      const filled = await status(worker);
      assert.ok(filled.used <= filled.capacity, `round ${round}: ${filled.used} bytes held in a capacity of ${filled.capacity}`);
    }
  });

  test('a page file truncated, one emptied and a leftover temp file are never served: the pages are read again', async () => {
    const name = 'big-1.bin';
    assert.equal(sha(await readFileOf(worker, name)), sha(files.get(name)!));
    await worker.kill();
    const onDisk = (await pageFiles(worker.dataDir)).filter((f) => f.size === 2 * MiB);
    assert.ok(onDisk.length >= 2, `${onDisk.length} whole pages on disk`);
    await truncate(onDisk[0]!.file, MiB); // a power cut before the data reached the disk
    await truncate(onDisk[1]!.file, 0);
    await writeFile(join(worker.dataDir, 'tmp', `${'ab'.repeat(20)}.4242.0`), randomBytes(1000));
    await worker.launch();
    assert.deepEqual(await readdir(join(worker.dataDir, 'tmp')), []);
    for (const [file, data] of files) assert.equal(sha(await readFileOf(worker, file)), sha(data), file);
    const held = await pageFiles(worker.dataDir);
    assert.ok(held.every((f) => f.size > 0), 'the emptied page was dropped');
    // The dropped pages are no longer counted. The read's last page may be stored (its file
    // renamed into place, then indexed) just after its last byte was sent: the two agree once it is.
    let seen = '';
    await waitFor('the store to count exactly the page files on disk', async () => {
      const files = await pageFiles(worker.dataDir);
      const now = await status(worker);
      const blocks = inBlocks(worker.dataDir, files.map((f) => f.size)) + (await dirBlocks(worker.dataDir));
      seen = `status ${now.pageBytes} bytes / ${now.used} in blocks, files and directories ${files.reduce((sum, f) => sum + f.size, 0)} / ${blocks}`;
      return now.pageBytes === files.reduce((sum, f) => sum + f.size, 0) && now.used === blocks;
    }, 30_000).catch((err: Error) => assert.fail(`${err.message}: ${seen}`));
  });
});

/*
 * Pages stored under a pin rule (`fanout pin /data/`): the rule pins each page when it is stored,
 * by key, and a restart does not know which path a stored page came from. Before, the pin was
 * saved after the page's file was in place: a worker killed in between came back with the page
 * stored and unpinned, for good (3 of 15 stored pages of a pinned file after a kill mid-read).
 * The window is a few milliseconds; here policy.json cannot be written while the file is read
 * (a directory stands at its name), which holds every such save back until the kill.
 */
describe('a worker killed while storing pages of a pinned path', () => {
  let source: string;
  let worker: WorkerProcess;
  const content = randomBytes(16 * MiB);

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-kill-pin-'));
    await writeFile(join(source, 'model.bin'), content);
    worker = await WorkerProcess.start({ id: 'killed-pins', mounts: { data: source }, pageSize: '1MiB', capacity: '1GiB' });
  });

  after(async () => {
    await worker?.destroy();
    if (source) await rm(source, { recursive: true, force: true });
  });

  test('every page it holds after the restart is pinned', async () => {
    assert.equal((await admin(worker, 'pin', { rule: { mount: 'data', prefix: '' } })).status, 200);
    const policyFile = join(worker.dataDir, 'policy.json');
    const saved = await readFile(policyFile, 'utf8');
    await rm(policyFile);
    await mkdir(join(policyFile, 'held'), { recursive: true });

    assert.equal(sha(await readFileOf(worker, 'model.bin')), sha(content), 'read while pins cannot be saved');
    await worker.kill();
    await rm(policyFile, { recursive: true });
    await writeFile(policyFile, saved);
    await worker.launch();
    const held = (await status(worker)).pages;
    assert.equal(await pinned(worker.url), held, `${held} pages held after the restart, all under the pin rule`);

    // Once the policy can be saved again, the pages are stored, each pinned before it is.
    assert.equal(sha(await readFileOf(worker, 'model.bin')), sha(content));
    assert.equal((await status(worker)).pages, 16);
    await worker.kill();
    await worker.launch();
    assert.equal((await status(worker)).pages, 16);
    assert.equal(await pinned(worker.url), 16);
    assert.equal(sha(await readFileOf(worker, 'model.bin')), sha(content));
  });
});

/*
 * A worker that is PID 1 of its PID namespace (the command of a container), killed while writing
 * policy.json, and started again: PID 1 again. Before, the temp file the killed process left under
 * that pid (`.policy.json.1.0.tmp`, its first write) counted as the new process's own: it was kept,
 * and the new process's first write of that very name failed, `fanout pin` answering 500 INTERNAL
 * "the page policy could not be saved (EEXIST)". The kill mid-write is stood for by the file it leaves.
 */
const canUnshare = (() => {
  try {
    execFileSync('unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe('a worker that is PID 1 of its container, killed while writing policy.json', { skip: canUnshare ? false : 'needs unshare --pid (root)' }, () => {
  let dir: string;
  let url: string;
  let configFile: string;
  let proc: ChildProcess | undefined;

  async function startAsPid1(): Promise<void> {
    // --kill-child: a SIGKILL of unshare kills the worker too (PID 1: its whole namespace).
    const child = spawn('unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', process.execPath, fanoutBin, 'worker', '--config', configFile], { stdio: 'ignore' });
    proc = child;
    await waitFor('the worker in its PID namespace', async () => {
      if (child.exitCode !== null) throw new StopWaiting(`exited with ${child.exitCode}`);
      return (await fetch(`${url}/healthz`)).ok;
    }, 60_000);
  }

  async function killPid1(): Promise<void> {
    const child = proc;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    // The namespace's PID 1 goes with unshare; its port is free once it has.
    await waitFor('the killed worker to be gone', async () => !(await fetch(`${url}/healthz`).then(() => true, () => false)));
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fanout-kill-pid1-'));
    await mkdir(join(dir, 'src'));
    await writeFile(join(dir, 'src', 'a.bin'), randomBytes(1000));
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    configFile = join(dir, 'worker.yaml');
    await writeFile(configFile, JSON.stringify({ id: 'pid1', listen: `127.0.0.1:${port}`, dataDir: join(dir, 'data'), logLevel: 'warn', auth: testAuth, mounts: { data: join(dir, 'src') } }));
  });

  after(async () => {
    await killPid1();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('the restarted worker removes the temp file and saves its policy', async () => {
    await startAsPid1();
    await killPid1();
    await writeFile(join(dir, 'data', '.policy.json.1.0.tmp'), '{"pins": ["ab'); // cut by the kill
    await startAsPid1();
    const res = await fetch(`${url}/v1/admin/pin`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth }, body: JSON.stringify({ keys: ['ab'.repeat(20)] }) });
    assert.equal(res.status, 200, await res.text());
    assert.deepEqual((await readdir(join(dir, 'data'))).sort(), ['.worker.lock', '.worker.lock.flock', 'pages', 'policy.json', 'tmp']);
    await killPid1();
    await startAsPid1();
    assert.equal(await pinned(url), 1);
  });

  /*
   * Two containers on one host directory, each worker PID 1 of its own namespace: the old and the
   * new pod of a rolling update, or one unit deployed twice. The first's lock names pid 1, which
   * in the second's namespace is the second itself (another start time): before, the second took
   * the lock for a dead worker's, cleared the first's tmp/ and ran beside it on one store.
   */
  test('a second worker in another PID namespace on the same data directory stops with DIR_IN_USE', async () => {
    await killPid1(); // the test before leaves its worker running
    await startAsPid1();
    const fill = join(dir, 'data', 'tmp', `${'ef'.repeat(20)}.4242.0`); // stands for a fill in flight
    await writeFile(fill, randomBytes(1000));
    const port = await freePort();
    const secondConfig = join(dir, 'second.yaml');
    await writeFile(secondConfig, JSON.stringify({ id: 'pid1-b', listen: `127.0.0.1:${port}`, dataDir: join(dir, 'data'), logLevel: 'warn', auth: testAuth, mounts: { data: join(dir, 'src') } }));
    const second = spawn('unshare', ['--pid', '--fork', '--kill-child', '--mount-proc', process.execPath, fanoutBin, 'worker', '--config', secondConfig], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    second.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => second.once('exit', (code) => resolve(code)));
    try {
      // It either stops (the fix) or comes up beside the first (before): whichever comes first.
      const outcome = await Promise.race([exited.then((code) => ({ code })), waitFor('the second worker to stop or serve', async () => (await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false)), 60_000).then(() => 'serving' as const)]);
      assert.notEqual(outcome, 'serving', 'the second worker serves on the first one\'s data directory');
      assert.equal((outcome as { code: number | null }).code, 1, stderr);
      assert.match(stderr, /DIR_IN_USE: .* another running worker \(pid 1\)/);
      assert.deepEqual(await readdir(join(dir, 'data', 'tmp')), [`${'ef'.repeat(20)}.4242.0`], 'the first worker\'s temp file is left alone');
      assert.equal((await fetch(`${url}/v1/data/data/a.bin`)).status, 200);
    } finally {
      if (second.exitCode === null && second.signalCode === null) {
        second.kill('SIGKILL');
        await exited;
      }
      await rm(fill, { force: true });
    }
  });
});

/*
 * A second worker on a running worker's data directory (a unit started twice, a second `fanout
 * serve` over one --data-dir). Before, it opened the store, which clears tmp/ (the first one's
 * fills in flight), even when it then failed to listen; on another port both ran, each evicting
 * and rewriting policy.json unseen by the other.
 */
describe('one worker per data directory', () => {
  let source: string;
  let first: WorkerProcess | undefined;
  let second: WorkerProcess | undefined;

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-lock-src-'));
    await writeFile(join(source, 'f.bin'), randomBytes(3 * MiB));
    first = await WorkerProcess.start({ id: 'first', mounts: { data: source }, pageSize: '1MiB' });
  });

  after(async () => {
    await second?.destroy();
    await first?.destroy();
    if (source) await rm(source, { recursive: true, force: true });
  });

  test('a second worker on the same data directory stops at start with DIR_IN_USE and touches nothing; once the first is killed, the next start takes the directory over', async () => {
    const fill = join(first!.dataDir, 'tmp', `${'cd'.repeat(20)}.4242.0`); // stands for a fill in flight
    await writeFile(fill, randomBytes(1000));
    const config = join(source, '..', `${source.split('/').pop()}-second.json`);
    await writeFile(config, JSON.stringify({ id: 'second', listen: `127.0.0.1:${await freePort()}`, dataDir: first!.dataDir, mounts: { data: source }, pageSize: '1MiB', auth: testAuth }));
    const refused = await fanout(['worker', '--config', config]);
    await rm(config, { force: true });
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, new RegExp(`DIR_IN_USE: .* another running worker \\(pid ${first!.pid}\\)`));
    assert.deepEqual(await readdir(join(first!.dataDir, 'tmp')), [`${'cd'.repeat(20)}.4242.0`], 'the first worker\'s temp file is left alone');
    assert.equal((await fetch(`${first!.url}/v1/data/data/f.bin`)).status, 200);
    // Killed, the first leaves its lock behind: a dead process's lock is taken over.
    await first!.kill();
    second = await WorkerProcess.start({ id: 'second', mounts: { data: source }, pageSize: '1MiB', dataDir: first!.dataDir });
    assert.equal((await fetch(`${second.url}/v1/data/data/f.bin`)).status, 200);
  });
});
