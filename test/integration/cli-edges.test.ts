import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { fanout } from '../harness/cli.js';
import { crc32 } from '../../src/lib/checksum/index.js';
import { CHECKSUM_HEADER } from '../../src/lib/cluster/index.js';
import { freePort, waitFor } from '../harness/ports.js';
import { TEST_ADMIN_TOKEN, WorkerProcess, fanoutBin } from '../harness/workers.js';

const MiB = 1024 * 1024;
const run = promisify(execFile);
const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '../../..');

/** The first-day rough edges of the CLI and the HTTP API, against a real worker. */
describe('CLI and API edges', () => {
  let source: string;
  let work: string;
  let worker: WorkerProcess;
  let gatewayUrl: string;
  let big: Buffer;
  const cli = (...args: string[]) => fanout([...args, '--endpoint', worker.url], { FANOUT_TOKEN: TEST_ADMIN_TOKEN });
  const json = async (...args: string[]) => {
    const out = await cli(...args, '--json');
    assert.equal(out.code, 0, `fanout ${args.join(' ')}: ${out.stdout}${out.stderr}`);
    const text = out.stdout.toString().trim();
    return JSON.parse(args[0] === 'load' ? text.split('\n').pop()! : text); // load prints NDJSON: the report is last
  };

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-edges-src-'));
    work = await mkdtemp(join(tmpdir(), 'fanout-edges-work-'));
    big = randomBytes(2 * MiB + 7);
    await mkdir(join(source, 'nested'), { recursive: true });
    await writeFile(join(source, 'big.bin'), big);
    await writeFile(join(source, 'nested/a.txt'), 'nested a\n');
    const s3Port = await freePort();
    gatewayUrl = `http://127.0.0.1:${s3Port}`;
    worker = await WorkerProcess.start({
      id: 'edges',
      mounts: { data: source },
      pageSize: '1MiB',
      gateway: { listen: `127.0.0.1:${s3Port}`, anonymous: true },
    });
  });

  after(async () => {
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  /**
   * Makes a FIFO at `fifo`, reads it in a process of its own, and runs `fanout cp SOURCE DEST`: a
   * copy that replaced the FIFO would leave the reader waiting, so it is then stopped.
   */
  const copyThroughFifo = async (fifo: string, source: string, dest: string) => {
    await run('mkfifo', [fifo]);
    const reader = spawn('cat', [fifo], { stdio: ['ignore', 'pipe', 'inherit'] });
    const parts: Buffer[] = [];
    reader.stdout.on('data', (chunk: Buffer) => parts.push(chunk));
    const closed = new Promise((resolve) => reader.once('close', resolve));
    const out = await cli('cp', source, dest);
    const stillFifo = (await lstat(fifo)).isFIFO();
    if (!stillFifo || out.code !== 0) reader.kill(); // nobody would open its writing end
    await closed;
    return { out, stillFifo, read: Buffer.concat(parts) };
  };

  test('cp PATH - writes the file to stdout and creates no file named "-"', async () => {
    const out = await fanout(['cp', '/data/big.bin', '-', '--endpoint', worker.url]);
    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual(out.stdout, big);
    assert.ok(!(await readdir(process.cwd())).includes('-'));
  });

  test('cp into a FIFO writes the bytes through it, in order, and leaves the FIFO in place', async () => {
    const fifo = join(work, 'pipe');
    const { out, stillFifo, read } = await copyThroughFifo(fifo, '/data/big.bin', fifo);
    assert.ok(stillFifo, 'still a FIFO, not a file renamed over it');
    assert.equal(out.code, 0, out.stderr.toString());
    assert.deepEqual(read, big);
    assert.deepEqual((await readdir(work)).filter((n) => n.includes('fanout')), [], 'no temporary left');
    await rm(fifo);
  });

  test('cp into a device node (a null device of its own) writes into it and never replaces it', async (t) => {
    const device = join(work, 'null');
    try {
      await run('mknod', ['-m', '666', device, 'c', '1', '3']);
    } catch {
      return t.skip('mknod needs root');
    }
    const out = await cli('cp', '/data/big.bin', device);
    assert.equal(out.code, 0, out.stderr.toString());
    const after = await lstat(device);
    assert.ok(after.isCharacterDevice(), 'still the device, not a file renamed over it');
    assert.equal(after.size, 0);
    await rm(device);
  });

  test('cp of a tree writes into a FIFO and a device already at two files\' places, and replaces neither', async (t) => {
    const dest = join(work, 'tree');
    await mkdir(join(dest, 'data/nested'), { recursive: true });
    const device = join(dest, 'data/nested/a.txt');
    try {
      await run('mknod', ['-m', '666', device, 'c', '1', '3']);
    } catch {
      return t.skip('mknod needs root');
    }
    const fifo = join(dest, 'data/big.bin');
    const { out, stillFifo, read } = await copyThroughFifo(fifo, '/data', dest);
    assert.equal(out.code, 0, out.stderr.toString());
    assert.ok(stillFifo, 'still a FIFO, not a file renamed over it');
    assert.deepEqual(read, big);
    const deviceAfter = await lstat(device);
    assert.ok(deviceAfter.isCharacterDevice(), 'still the device, not a file renamed over it');
    assert.equal(deviceAfter.size, 0);
    const left = [...(await readdir(join(dest, 'data'))), ...(await readdir(join(dest, 'data/nested')))];
    assert.deepEqual(left.filter((n) => n.includes('fanout')), [], 'no temporary left');
    await rm(dest, { recursive: true });
  });

  test('cat --range 5-1 says the range is reversed', async () => {
    const out = await cli('cat', '/data/big.bin', '--range', '5-1');
    assert.equal(out.code, 1);
    assert.match(out.stderr, /INVALID_RANGE: .*reversed/);
    assert.equal(out.stdout.length, 0);
  });

  test('--endpoint notaurl is INVALID_ARGUMENT naming the endpoint', async () => {
    const out = await fanout(['stat', '/data/big.bin', '--endpoint', 'notaurl', '--json']);
    assert.equal(out.code, 1);
    const { error } = JSON.parse(out.stdout.toString()) as { error: { code: string; message: string } };
    assert.equal(error.code, 'INVALID_ARGUMENT');
    assert.match(error.message, /"notaurl" is not a worker URL/);
  });

  test('cp into a missing directory is NOT_FOUND naming the directory, and leaves nothing behind', async () => {
    const missing = join(work, 'no/such/dir');
    const out = await cli('cp', '/data/nested/a.txt', join(missing, 'a.txt'));
    assert.equal(out.code, 1);
    assert.match(out.stderr, new RegExp(`^fanout: NOT_FOUND: destination directory ${missing} does not exist`));
    assert.doesNotMatch(out.stderr, /ENOENT/);
    const notDir = join(work, 'plain-file');
    await writeFile(notDir, 'x');
    const under = await cli('cp', '/data/nested/a.txt', join(notDir, 'a.txt'));
    assert.match(under.stderr, /NOT_A_DIRECTORY: destination .*plain-file is not a directory/);
    assert.deepEqual(await readdir(work), ['plain-file']);
  });

  test('status says "1 member"', async () => {
    const out = await cli('status');
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout.toString(), /\n1 member, /);
  });

  test('--json names files by their full fanout path in ls, stat, cp and load', async () => {
    const listed = (await json('ls', '/data/nested/')) as { name: string; path: string }[];
    assert.deepEqual(listed.map((e) => [e.name, e.path]), [['a.txt', '/data/nested/a.txt']]);
    const root = (await json('ls', '/')) as { path: string }[];
    assert.deepEqual(root.map((e) => e.path), ['/data']);
    assert.equal((await json('stat', '/data/big.bin')).path, '/data/big.bin');
    assert.equal((await json('stat', 'data/nested/a.txt')).path, '/data/nested/a.txt');
    assert.equal((await json('cp', '/data/nested/a.txt', work)).path, '/data/nested/a.txt');
    assert.equal(await readFile(join(work, 'a.txt'), 'utf8'), 'nested a\n');
    const load = (await json('load', '/data/nested/')) as { event: string; path: string };
    assert.equal(load.event, 'done');
    assert.equal(load.path, '/data/nested');
  });

  test('a multi-range request gets the whole file with 200 from /v1/data, as from the S3 gateway', async () => {
    const range = { range: 'bytes=0-1,5-9' };
    const viaApi = await fetch(`${worker.url}/v1/data/data/big.bin`, { headers: range });
    const viaS3 = await fetch(`${gatewayUrl}/data/big.bin`, { headers: range });
    assert.equal(viaS3.status, 200);
    assert.equal(viaApi.status, viaS3.status);
    assert.equal(viaApi.headers.get('content-range'), null);
    assert.deepEqual(Buffer.from(await viaApi.arrayBuffer()), big);
    assert.deepEqual(Buffer.from(await viaS3.arrayBuffer()), big);
    const single = await fetch(`${worker.url}/v1/data/data/big.bin`, { headers: { range: 'bytes=5-9' } });
    assert.equal(single.status, 206, 'a single range is still served as one');
    assert.deepEqual(Buffer.from(await single.arrayBuffer()), big.subarray(5, 10));
  });

  test('an anonymous GET from the gateway cannot choose the response headers (no page served as text/html)', async () => {
    const res = await fetch(`${gatewayUrl}/data/nested/a.txt?response-content-type=text%2Fhtml&response-content-disposition=inline`);
    assert.equal(res.status, 400);
    assert.match(await res.text(), /<Code>InvalidRequest<\/Code>.*anonymous/s);
    const plain = await fetch(`${gatewayUrl}/data/nested/a.txt`);
    assert.equal(plain.status, 200);
    assert.equal(plain.headers.get('content-type'), 'application/octet-stream');
    assert.equal(await plain.text(), 'nested a\n');
  });

  test('an HTTP/1.0 reader of a page not yet cached gets its bytes whole, with their length and checksum in the head', async () => {
    const bytes = randomBytes(300 * 1024 + 5);
    await writeFile(join(source, 'fresh10.bin'), bytes);
    const info = (await (await fetch(`${worker.url}/v1/stat/data/fresh10.bin`)).json()) as { version: string; size: number };
    const page = `/v1/page/data/fresh10.bin?v=${encodeURIComponent(info.version)}&size=${info.size}&i=0`;
    // Node's client speaks HTTP/1.1 only: the request by hand, the answer read to the close.
    const socket = connect(Number(new URL(worker.url).port), '127.0.0.1');
    socket.write(`GET ${page} HTTP/1.0\r\nhost: localhost\r\n\r\n`);
    const parts: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => parts.push(chunk));
    await once(socket, 'close');
    const answer = Buffer.concat(parts);
    const split = answer.indexOf('\r\n\r\n');
    const head = answer.subarray(0, split).toString('latin1');
    assert.match(head, /^HTTP\/1\.1 200 /);
    assert.match(head, /\r\nx-fanout-cache: miss\r\n/i);
    assert.match(head, new RegExp(`\\r\\ncontent-length: ${bytes.length}\\r\\n`, 'i'));
    assert.match(head, new RegExp(`\\r\\n${CHECKSUM_HEADER}: ${crc32(bytes).toString(16).padStart(8, '0')}\\r\\n`, 'i'));
    assert.deepEqual(answer.subarray(split + 4), bytes);
  });

  test('fanout --version prints the version in package.json', async () => {
    const { version } = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const out = await fanout([flag]);
      assert.equal(out.code, 0, out.stderr);
      assert.equal(out.stdout.toString().trim(), version);
    }
  });
});

/** True when nothing listens on the port any more (a listener on it can be opened again). */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

test('killing the npm wrapper of a backgrounded `npx fanout serve` stops the server and frees both ports', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-npx-'));
  await mkdir(join(dir, 'src'));
  await writeFile(join(dir, 'src/a.txt'), 'served by npx\n');
  const [port, s3Port] = [await freePort(), await freePort()];
  // What `npx fanout serve &` starts: npm exec (npm_command=exec) → a shell → node. The wrapper
  // is played by a shell that does not exec node (so node is its child, as under npm); running
  // the real npx here would re-run the package's `prepare` and rebuild dist/ under the other
  // tests' feet.
  const env = { ...process.env, npm_command: 'exec', FANOUT_DATA_DIR: join(dir, 'data'), XDG_CONFIG_HOME: join(dir, 'config') };
  const serve = [process.execPath, fanoutBin, 'serve', join(dir, 'src'), '--listen', `127.0.0.1:${port}`, '--s3-listen', `127.0.0.1:${s3Port}`, '--log-level', 'warn'];
  const wrapper = spawn('sh', ['-c', `${serve.map((a) => `'${a}'`).join(' ')}; exit $?`], { env, stdio: 'ignore' });
  const exited = new Promise((resolve) => wrapper.once('exit', resolve));
  try {
    await waitFor('fanout serve under a wrapper', async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).ok, 60_000);
    assert.ok(!(await portFree(s3Port)), 'the S3 gateway listens too');
    wrapper.kill('SIGKILL'); // the wrapper goes; node is re-parented, as after `kill $!` of npx
    await exited;
    // The server process itself must go (its ports with it). Checked by process, not by port:
    // a concurrent test may be handed a freed port number at once.
    await waitFor('the server to exit after its wrapper is gone', async () => (await serversOf(dir)).length === 0, 60_000);
  } finally {
    wrapper.kill('SIGKILL');
    await killServersOf(dir); // on failure, the orphaned server must not outlive the test
    await rm(dir, { recursive: true, force: true });
  }
});

/** The processes whose command line names `dir` (this test's unique temporary directory). */
async function serversOf(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(dir)) pids.push(Number(pid));
  }
  return pids;
}

/** Kills the processes whose command line names `dir`. */
async function killServersOf(dir: string): Promise<void> {
  for (const pid of await serversOf(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
