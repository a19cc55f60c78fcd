import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmod, cp, mkdir, mkdtemp, readFile, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { forceUnmount, isMounted } from '../harness/mount.js';
import { freePort, StopWaiting, waitFor } from '../harness/ports.js';
import { repoRoot } from '../harness/workers.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { ...options, maxBuffer: 16 * 1024 * 1024, timeout: 600_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout: stdout.toString(), stderr: stderr.toString() });
    });
  });
}

/** A long-running process of the quick start (serve, mount) with its output kept for failures. */
function start(args: string[], cwd: string): { proc: ChildProcess; log: () => string } {
  const proc = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout!.on('data', (c: Buffer) => (log += c.toString()));
  proc.stderr!.on('data', (c: Buffer) => (log += c.toString()));
  return { proc, log: () => log };
}

async function stop(proc: ChildProcess | undefined): Promise<void> {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  proc.kill('SIGTERM');
  await exited;
}

/**
 * The README's first command, `npm ci && npx fanout serve ./examples/data`, on a checkout with
 * no native build: the install step (package.json `prepare`) must leave every feature working,
 * `fanout mount` included. The checkout is a copy of this one without native/*\/build; its
 * TypeScript is copied compiled (tsc is not what is under test, and costs minutes here).
 */
describe('quick start: the install step leaves fanout mount working', () => {
  let app: string;
  let mnt: string;
  let serve: ReturnType<typeof start> | undefined;
  let mount: ReturnType<typeof start> | undefined;

  before(async () => {
    app = await mkdtemp(join(tmpdir(), 'fanout-quickstart-'));
    for (const entry of ['package.json', 'package-lock.json', 'bin', 'scripts', 'examples', 'dist']) await cp(join(repoRoot, entry), join(app, entry), { recursive: true });
    await cp(join(repoRoot, 'native'), join(app, 'native'), { recursive: true, filter: (src) => !/[/\\]build$/.test(src) });
    await symlink(await realpath(join(repoRoot, 'node_modules')), join(app, 'node_modules'));
    mnt = join(app, 'mnt');
    await mkdir(mnt);
  });

  after(async () => {
    await stop(mount?.proc);
    await forceUnmount(mnt);
    await stop(serve?.proc);
    await rm(app, { recursive: true, force: true });
  });

  test('the install step installs the system packages and builds both addons', async () => {
    assert.ok(!existsSync(join(app, 'native/fuse/build')), 'the copy starts with no native build');
    const { scripts } = JSON.parse(await readFile(join(app, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    const steps = scripts.prepare!.split('&&').map((s) => s.trim());
    assert.deepEqual(steps.slice(0, 2), ['bash scripts/install-system-deps.sh runtime', 'npm run build:native'], 'prepare installs system packages, then builds the addons');
    assert.match(steps[2]!, /^tsc /);
    const env = { ...process.env };
    delete env.FANOUT_REQUIRE_NATIVE; // what `npm ci` sees: the script itself decides what is required
    for (const step of steps.slice(0, 2)) {
      const out = await run('bash', ['-c', step], { cwd: app, env });
      assert.equal(out.code, 0, `${step}:\n${out.stdout}${out.stderr}`);
    }
    assert.ok(existsSync(join(app, 'native/fuse/build/Release/fanout_fuse.node')), 'the FUSE addon is built');
    assert.ok(existsSync(join(app, 'native/sendfile/build/Release/fanout_sendfile.node')), 'the sendfile addon is built');
  });

  test('a missing toolchain fails the build as root with apt-get, and is a note elsewhere', async () => {
    // A PATH with what build-native.sh runs, except pkg-config; `id` and `apt-get` are stand-ins.
    const tools = join(app, 'tools');
    await mkdir(tools);
    for (const tool of ['dirname', 'readlink', 'cat', 'make', 'python3', 'gcc', 'g++', 'npm', 'fusermount3']) {
      const found = await run('bash', ['-c', `command -v ${tool}`]);
      if (found.code === 0) await symlink(found.stdout.trim(), join(tools, tool));
    }
    await symlink(process.execPath, join(tools, 'node'));
    await writeFile(join(tools, 'id'), '#!/bin/bash\necho "$FAKE_UID"\n', { mode: 0o755 });
    await writeFile(join(tools, 'apt-get'), '#!/bin/bash\nexit 0\n', { mode: 0o755 });
    const build = (uid: number, extra: NodeJS.ProcessEnv = {}) => run('/bin/bash', ['scripts/build-native.sh'], { cwd: app, env: { PATH: tools, HOME: process.env.HOME, FAKE_UID: String(uid), ...extra } });

    const root = await build(0);
    assert.equal(root.code, 1, `as root with apt-get the quick start promises mount: ${root.stderr}`);
    assert.match(root.stderr, /fanout: pkg-config not found: skipping the FUSE addon; `fanout mount` will not work\./);
    assert.match(root.stderr, /install-system-deps\.sh runtime/);
    for (const [uid, extra] of [[1000, {}], [0, { FANOUT_SYSTEM_DEPS: 'skip' }]] as const) {
      const out = await build(uid, extra);
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stderr, /pkg-config not found: skipping the FUSE addon/);
    }
    const required = await build(1000, { FANOUT_REQUIRE_NATIVE: '1' });
    assert.equal(required.code, 1, 'FANOUT_REQUIRE_NATIVE=1 makes it an error for anyone (scripts/test.sh)');
  });

  test('fanout mount of the quick-start worker reads the example files', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    serve = start(['bin/fanout.js', 'serve', './examples/data', '--listen', `127.0.0.1:${port}`, '--s3-listen', 'off', '--data-dir', join(app, '.fanout')], app);
    await waitFor('fanout serve', async () => {
      if (serve!.proc.exitCode !== null) throw new StopWaiting(`fanout serve exited: ${serve!.log()}`);
      return (await fetch(`${url}/healthz`).catch(() => undefined))?.ok === true;
    }, 60_000);
    mount = start(['bin/fanout.js', 'mount', mnt, '--endpoint', url], app);
    await waitFor('fanout mount', async () => {
      if (mount!.proc.exitCode !== null) throw new StopWaiting(`fanout mount exited: ${mount!.log()}`);
      return mount!.log().includes('fanout: mounted') && (await isMounted(mnt));
    }, 60_000);
    for (const file of ['models/tiny-model.bin', 'models/config.json', 'README.txt']) {
      assert.deepEqual(await readFile(join(mnt, 'data', file)), await readFile(join(app, 'examples/data', file)), file);
    }
  });
});

/**
 * scripts/install-system-deps.sh decides with one dpkg-query what is missing, installs only that
 * as root with apt-get, and elsewhere prints the exact command and lets the install go on.
 * apt-get, dpkg-query and id are stand-ins here: the real ones would change this machine.
 */
describe('install-system-deps.sh', () => {
  let bin: string;
  let log: string;
  const script = join(repoRoot, 'scripts/install-system-deps.sh');
  const RUNTIME = ['fuse3', 'libfuse3-dev', 'zlib1g-dev', 'pkg-config', 'g++', 'make', 'python3'];

  before(async () => {
    bin = await mkdtemp(join(tmpdir(), 'fanout-deps-'));
    log = join(bin, 'calls.log');
    const stub = async (name: string, body: string) => {
      await writeFile(join(bin, name), `#!/bin/bash\n${body}\n`);
      await chmod(join(bin, name), 0o755);
    };
    // Answers like dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' for the packages in $FAKE_INSTALLED.
    await stub('dpkg-query', `echo "dpkg-query $*" >> "${log}"\nfor p in "$@"; do case "$p" in -*) ;; *) [[ " $FAKE_INSTALLED " == *" $p "* ]] && echo "$p ii "; esac; done; exit 0`);
    await stub('apt-get', `echo "apt-get $*" >> "${log}"`);
    await stub('id', `[ "$1" = -u ] && echo "$FAKE_UID" || /usr/bin/id "$@"`);
  });

  after(async () => {
    await rm(bin, { recursive: true, force: true });
  });

  async function deps(mode: string, installed: string[], uid: number, extra: NodeJS.ProcessEnv = {}): Promise<Run & { calls: string[] }> {
    await writeFile(log, '');
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${bin}:${process.env.PATH}`, FAKE_INSTALLED: installed.join(' '), FAKE_UID: String(uid) };
    delete env.FANOUT_SYSTEM_DEPS;
    Object.assign(env, extra);
    const out = await run('bash', [script, mode], { env });
    return { ...out, calls: (await readFile(log, 'utf8')).trim().split('\n').filter(Boolean) };
  }

  test('with everything installed it asks dpkg once and never runs apt-get', async () => {
    const out = await deps('runtime', RUNTIME, 0);
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stderr, '');
    assert.deepEqual(out.calls.map((c) => c.split(' ')[0]), ['dpkg-query']);
  });

  test('as root it installs exactly the missing packages', async () => {
    const out = await deps('runtime', ['fuse3', 'zlib1g-dev', 'pkg-config', 'make', 'python3'], 0);
    assert.equal(out.code, 0, out.stderr);
    const apt = out.calls.filter((c) => c.startsWith('apt-get'));
    assert.equal(apt.length, 2, out.calls.join('\n'));
    assert.match(apt[0]!, /^apt-get .*update/);
    assert.match(apt[1]!, / install -y -qq --no-install-recommends libfuse3-dev g\+\+$/);
  });

  test('as another user, or when told to skip, it prints the exact command and succeeds without installing', async () => {
    for (const [uid, extra] of [[1000, {}], [0, { FANOUT_SYSTEM_DEPS: 'skip' }]] as const) {
      const out = await deps('runtime', ['fuse3', 'zlib1g-dev', 'pkg-config', 'make', 'python3'], uid, extra);
      assert.equal(out.code, 0, out.stderr);
      assert.equal(out.stderr, 'fanout: missing system packages; install them with: sudo apt-get update && sudo apt-get install -y --no-install-recommends libfuse3-dev g++\n');
      assert.ok(!out.calls.some((c) => c.startsWith('apt-get')), out.calls.join('\n'));
    }
  });

  test('the test mode adds the test tools to the runtime packages', async () => {
    const out = await deps('all', RUNTIME, 1000);
    assert.equal(out.code, 0, out.stderr);
    for (const pkg of ['etcd-server', 'awscli', 'python3-boto3', 's3fs', 'rclone']) assert.match(out.stderr, new RegExp(` ${pkg}( |\\n)`));
    assert.doesNotMatch(out.stderr, /fuse3|libfuse3-dev/);
  });
});
