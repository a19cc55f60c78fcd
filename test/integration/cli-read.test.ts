import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { open, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fanout } from '../harness/cli.js';
import { freePort } from '../harness/ports.js';
import { TEST_ADMIN_TOKEN, WorkerProcess, fanoutBin } from '../harness/workers.js';

const MiB = 1024 * 1024;

/** Runs `fanout ARGS` with its stdout going to `stdout` (a file descriptor); resolves with exit code and stderr. */
function fanoutInto(stdout: number | 'pipe', args: string[], env: Record<string, string>, onStdout?: (proc: ReturnType<typeof spawn>) => void): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [...(env.NODE_IMPORT ? ['--import', env.NODE_IMPORT] : []), fanoutBin, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', stdout, 'pipe'] });
    let stderr = '';
    proc.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    onStdout?.(proc);
    proc.once('error', reject);
    proc.once('close', (code) => resolve({ code: code ?? -1, stderr }));
  });
}

/** `fanout cat` and `fanout stat` against a real worker: the bytes, the sinks, the errors, and what they load. */
describe('fanout cat and stat', () => {
  let source: string;
  let work: string;
  let worker: WorkerProcess;
  let big: Buffer;
  const env = () => ({ FANOUT_TOKEN: TEST_ADMIN_TOKEN, FANOUT_ENDPOINT: worker.url });

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-cat-src-'));
    work = await mkdtemp(join(tmpdir(), 'fanout-cat-work-'));
    big = randomBytes(5 * MiB + 7); // six 1 MiB pages, the last one short
    await writeFile(join(source, 'big.bin'), big);
    await writeFile(join(source, 'one.bin'), 'x');
    worker = await WorkerProcess.start({ id: 'cat', mounts: { data: source }, pageSize: '1MiB' });
  });

  after(async () => {
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  test('cat into a pipe read slowly gets every byte in order (backpressure, not buffering)', async () => {
    const parts: Buffer[] = [];
    const result = await fanoutInto('pipe', ['cat', '/data/big.bin'], env(), (proc) => {
      // Read a chunk, then nothing for a while: the writer must wait for the pipe, not give up or drop bytes.
      proc.stdout!.once('data', (chunk: Buffer) => {
        parts.push(chunk);
        proc.stdout!.pause();
        setTimeout(() => proc.stdout!.on('data', (c: Buffer) => parts.push(c)).resume(), 500);
      });
    });
    assert.equal(result.code, 0, result.stderr);
    assert.ok(Buffer.concat(parts).equals(big), 'the bytes of big.bin');
  });

  test('cat into a file gets every byte, and --range across pages exactly its slice', async () => {
    for (const [args, expected] of [
      [['cat', '/data/big.bin'], big],
      [['cat', '/data/big.bin', '--range', `${MiB - 3}-${3 * MiB + 2}`], big.subarray(MiB - 3, 3 * MiB + 3)],
      [['cat', '/data/one.bin'], Buffer.from('x')],
    ] as const) {
      const path = join(work, 'out.bin');
      const handle = await open(path, 'w');
      const result = await fanoutInto(handle.fd, [...args], env()).finally(() => handle.close());
      assert.equal(result.code, 0, result.stderr);
      assert.ok((await readFile(path)).equals(expected), `fanout ${args.join(' ')}`);
    }
  });

  test('cat into /dev/null succeeds', async () => {
    const handle = await open('/dev/null', 'w');
    const result = await fanoutInto(handle.fd, ['cat', '/data/big.bin'], env()).finally(() => handle.close());
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, '');
  });

  test('cat into a pipe whose reader goes away early exits 0 without an error (`fanout cat x | head`)', async () => {
    const result = await fanoutInto('pipe', ['cat', '/data/big.bin'], env(), (proc) => {
      proc.stdout!.once('data', () => proc.stdout!.destroy());
    });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, '');
  });

  test('cat and stat of a missing file fail with NOT_FOUND and exit code 1', async () => {
    for (const command of ['cat', 'stat']) {
      const out = await fanout([command, '/data/missing.bin'], env());
      assert.equal(out.code, 1);
      assert.match(out.stderr, /^fanout: NOT_FOUND: /);
      assert.equal(out.stdout.length, 0);
    }
  });

  test('cat with no worker at the endpoint fails with WORKER_UNAVAILABLE naming the endpoint', async () => {
    const endpoint = `http://127.0.0.1:${await freePort()}`;
    const out = await fanout(['cat', '/data/one.bin', '--endpoint', endpoint], env());
    assert.equal(out.code, 1);
    assert.match(out.stderr, new RegExp(`WORKER_UNAVAILABLE: cannot reach fanout at ${endpoint}: connect ECONNREFUSED`));
  });

  test('stat --json and cat of a 1-byte file answer as before', async () => {
    const stat = await fanout(['stat', '/data/one.bin', '--json'], env());
    assert.equal(stat.code, 0, stat.stderr);
    const info = JSON.parse(stat.stdout.toString()) as { path: string; size: number; version: string };
    assert.equal(info.path, '/data/one.bin');
    assert.equal(info.size, 1);
    const cat = await fanout(['cat', '/data/one.bin'], env());
    assert.equal(cat.stdout.toString(), 'x');
  });

  test('--help, stat and cat load only what they use: no progress bar, AWS SDK, etcd, pino, yaml or undici; stat and cat no commander or zod either', async () => {
    // An --import hook records every module resolved (ESM) and every CommonJS module loaded.
    const hooks = join(work, 'hooks.mjs');
    const register = join(work, 'register.mjs');
    await writeFile(
      hooks,
      `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context);
  appendFileSync(process.env.MODULE_LOG, result.url + '\\n');
  return result;
}\n`,
    );
    await writeFile(
      register,
      `import { register, createRequire } from 'node:module';
import { appendFileSync } from 'node:fs';
register(${JSON.stringify(`file://${hooks}`)});
const cache = createRequire(import.meta.url).cache;
process.on('exit', () => appendFileSync(process.env.MODULE_LOG, Object.keys(cache).join('\\n') + '\\n'));\n`,
    );
    const loaded = async (args: string[]) => {
      const log = join(work, `modules-${args[0]}.log`);
      await writeFile(log, '');
      const handle = await open('/dev/null', 'w');
      const result = await fanoutInto(handle.fd, args, { ...env(), MODULE_LOG: log, NODE_IMPORT: `file://${register}` }).finally(() => handle.close());
      assert.equal(result.code, 0, result.stderr);
      return (await readFile(log, 'utf8')).split('\n');
    };
    const heavy = ['cli-progress', '@aws-sdk', 'etcd3', 'pino', 'yaml', 'prom-client'];
    const packages = (lines: string[]) => new Set(lines.filter((l) => l.includes('node_modules/')).map((l) => /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(l)![1]!));
    const statLines = await loaded(['stat', '/data/one.bin']);
    const catLines = await loaded(['cat', '/data/one.bin']);
    const help = packages(await loaded(['--help']));
    const stat = packages(statLines);
    const cat = packages(catLines);
    assert.ok(help.has('commander'), 'the hook saw the packages loaded');
    // Their modules, or the one-file bundle of them when it is up to date (see the next test).
    for (const lines of [statLines, catLines]) assert.ok(lines.some((l) => l.endsWith('/dist/src/cli/cat.js') || l.endsWith('/dist/src/cli/bundle/quick.cjs')), 'the hook saw the modules of stat and cat');
    const has = (set: Set<string>, name: string) => set.has(name) || [...set].some((p) => p.startsWith(`${name}/`));
    for (const name of [...heavy, 'undici', 'zod']) assert.ok(!has(help, name), `--help loaded ${name}`);
    // The quick parser (cli/quick.ts) runs them without commander; the SDK's read path checks /v1/cluster without zod.
    for (const name of [...heavy, 'undici', 'commander', 'zod']) {
      assert.ok(!has(stat, name), `stat loaded ${name}`);
      assert.ok(!has(cat, name), `cat loaded ${name}`);
    }
  });
  test('once bundled, cat and stat run from the one-file bundle with the same bytes, answers and errors as the modules', async () => {
    const root = join(fanoutBin, '../..');
    const build = await new Promise<{ code: number; out: string }>((resolve, reject) => {
      const proc = spawn(process.execPath, [join(root, 'scripts/build-cli-bundle.mjs')], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      proc.stdout.on('data', (c: Buffer) => (out += c.toString()));
      proc.stderr.on('data', (c: Buffer) => (out += c.toString()));
      proc.once('error', reject);
      proc.once('close', (code) => resolve({ code: code ?? -1, out }));
    });
    assert.equal(build.code, 0, build.out);
    assert.match(build.out, /modules in dist\/src\/cli\/bundle\/quick\.cjs/, 'esbuild (a devDependency) built the bundle');
    const register = join(work, 'bundle-register.mjs');
    await writeFile(
      register,
      `import { createRequire } from 'node:module';
import { appendFileSync } from 'node:fs';
const cache = createRequire(import.meta.url).cache;
process.on('exit', () => appendFileSync(process.env.MODULE_LOG, Object.keys(cache).join('\\n') + '\\n'));\n`,
    );
    const run = async (args: string[]) => {
      const log = join(work, `bundle-${args[0]}.log`);
      const outFile = join(work, `bundle-${args[0]}.out`);
      await writeFile(log, '');
      const handle = await open(outFile, 'w');
      const result = await fanoutInto(handle.fd, args, { ...env(), MODULE_LOG: log, NODE_IMPORT: `file://${register}` }).finally(() => handle.close());
      return { ...result, stdout: await readFile(outFile), bundled: (await readFile(log, 'utf8')).includes('/dist/src/cli/bundle/quick.cjs') };
    };
    const cat = await run(['cat', '/data/big.bin', '--range', '1000-3145727']);
    assert.equal(cat.code, 0, cat.stderr);
    assert.ok(cat.bundled, 'cat ran from the bundle');
    assert.ok(cat.stdout.equals(big.subarray(1000, 3 * MiB)), 'the bytes of the range');
    const stat = await run(['stat', '/data/one.bin', '--json']);
    assert.equal(stat.code, 0, stat.stderr);
    assert.ok(stat.bundled, 'stat ran from the bundle');
    assert.deepEqual(JSON.parse(stat.stdout.toString()), { ...JSON.parse(stat.stdout.toString()), path: '/data/one.bin', size: 1 });
    const missing = await run(['cat', '/data/nothing-here']);
    assert.equal(missing.code, 1);
    assert.ok(missing.bundled);
    assert.match(missing.stderr, /^fanout: NOT_FOUND: /);
  });
});
