import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { HeadObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { join } from 'node:path';
import { forceUnmount, sh } from '../harness/mount.js';
import { freePort, StopWaiting, waitFor } from '../harness/ports.js';
import { WorkerProcess } from '../harness/workers.js';

const KEY = { accessKeyId: 'FSCLIENTKEY', secretAccessKey: 'fs-client-secret' };
/** The time of the source's directory "empty": what its marker and the clients must show. */
const EMPTY_TIME = new Date('2024-03-01T10:00:00Z');

/** True when something of FUSE type `fsType` is mounted at `mountpoint`. */
async function mountedAs(mountpoint: string, fsType: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((line) => line.split(' ')[4] === mountpoint && line.includes(` - ${fsType} `));
}

/** `ls -l` rows of a directory, by name: the type and permission column ("drwxr-x---"). */
async function lsModes(dir: string): Promise<Map<string, string>> {
  const ls = await sh('ls', ['-l', dir]);
  assert.equal(ls.code, 0, `ls -l ${dir}: ${ls.stderr}`);
  const rows = ls.stdout.toString().trim().split('\n').slice(1); // "total N" first
  return new Map(rows.map((row) => [row.split(/\s+/).pop()!, row.split(/\s+/)[0]!]));
}

/**
 * Filesystem-shaped S3 clients through the gateway: s3fs and rclone mounts (real FUSE) and
 * rclone's listing commands. An empty directory of the source has no key under it, so these
 * clients learn it exists only from its marker "dir/" (HEAD) and the listings.
 */
describe('S3 gateway with s3fs and rclone: empty directories', () => {
  let source: string;
  let work: string;
  let worker: WorkerProcess;
  let endpoint: string;
  let rcloneConfig: string;
  const mounts: { mountpoint: string; proc: ChildProcess }[] = [];

  const rclone = (...args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      // rclone's S3 backend fails on the AWS_CA_BUNDLE some machines set (LoadCustomCABundleError).
      const env: NodeJS.ProcessEnv = { ...process.env, RCLONE_CONFIG: rcloneConfig };
      delete env.AWS_CA_BUNDLE;
      const proc = spawn('rclone', [...args, '--contimeout', '10s', '--timeout', '30s'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let [stdout, stderr] = ['', ''];
      proc.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      proc.once('error', (err) => resolve({ code: -1, stdout, stderr: String(err) }));
      proc.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });

  /** Starts a FUSE client in the foreground and waits until its mount appears. */
  async function mountWith(cmd: string, args: string[], mountpoint: string, fsType: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
    await mkdir(mountpoint, { recursive: true });
    const proc = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    proc.stdout!.on('data', (c: Buffer) => (log += c.toString()));
    proc.stderr!.on('data', (c: Buffer) => (log += c.toString()));
    proc.once('error', (err) => (log += String(err)));
    mounts.push({ mountpoint, proc });
    await waitFor(`${cmd} mount at ${mountpoint}`, async () => {
      if (proc.exitCode !== null) throw new StopWaiting(`${cmd} exited with ${proc.exitCode}: ${log}`);
      return mountedAs(mountpoint, fsType);
    });
  }

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-fsc-src-'));
    work = await mkdtemp(join(tmpdir(), 'fanout-fsc-'));
    await mkdir(join(source, 'empty'));
    await mkdir(join(source, 'full/sub-empty'), { recursive: true });
    await writeFile(join(source, 'full/a.txt'), 'a in full\n');
    await writeFile(join(source, 'top.txt'), 'top\n');
    await utimes(join(source, 'empty'), EMPTY_TIME, EMPTY_TIME);
    const port = await freePort();
    endpoint = `http://127.0.0.1:${port}`;
    worker = await WorkerProcess.start({ id: 'fsc', mounts: { data: source }, gateway: { listen: `127.0.0.1:${port}`, credentials: [KEY] } });
    rcloneConfig = join(work, 'rclone.conf');
    await writeFile(
      rcloneConfig,
      ['[fo]', 'type = s3', 'provider = Other', `endpoint = ${endpoint}`, `access_key_id = ${KEY.accessKeyId}`, `secret_access_key = ${KEY.secretAccessKey}`, 'force_path_style = true', ''].join('\n'),
    );
  });

  after(async () => {
    for (const { mountpoint, proc } of mounts) {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      await waitFor(`${mountpoint} unmounted`, async () => proc.exitCode !== null || proc.signalCode !== null, 10_000).catch(() => {});
      if (await mountedAs(mountpoint, 'fuse.s3fs').catch(() => false)) await sh('fusermount3', ['-u', '-z', mountpoint]);
      if (await mountedAs(mountpoint, 'fuse.rclone').catch(() => false)) await sh('fusermount3', ['-u', '-z', mountpoint]);
      await forceUnmount(mountpoint);
    }
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  test('s3fs shows an empty directory as a directory, enters it and lists it', async () => {
    const passwd = join(work, 's3fs-passwd');
    await writeFile(passwd, `${KEY.accessKeyId}:${KEY.secretAccessKey}\n`, { mode: 0o600 });
    const mnt = join(work, 's3fs');
    // -f: foreground, so the test owns the process; its own caches off so every probe reaches the gateway.
    await mountWith('s3fs', ['data', mnt, '-f', '-o', `url=${endpoint}`, '-o', 'use_path_request_style', '-o', `passwd_file=${passwd}`, '-o', 'ro', '-o', 'stat_cache_expire=1'], mnt, 'fuse.s3fs');

    const root = await lsModes(mnt);
    assert.deepEqual([...root.keys()].sort(), ['empty', 'full', 'top.txt']);
    assert.match(root.get('empty')!, /^d[rwx-]{9}$/, `ls -l shows "empty" as a directory, not ??????????: ${root.get('empty')}`);
    assert.match(root.get('full')!, /^d/);
    assert.match(root.get('top.txt')!, /^-/);
    assert.ok((await stat(join(mnt, 'empty'))).isDirectory());
    assert.equal((await stat(join(mnt, 'empty'))).mtime.toISOString(), EMPTY_TIME.toISOString(), 'the directory\'s own time, not 1970');
    assert.deepEqual(await readdir(join(mnt, 'empty')), []);
    const entered = await sh('sh', ['-c', 'cd "$1" && pwd', 'sh', join(mnt, 'empty')]);
    assert.equal(entered.code, 0, `cd into the empty directory: ${entered.stderr}`);
    assert.equal(entered.stdout.toString().trim(), join(mnt, 'empty'));
    const full = await lsModes(join(mnt, 'full'));
    assert.match(full.get('sub-empty')!, /^d/);
    assert.equal(await readFile(join(mnt, 'full/a.txt'), 'utf8'), 'a in full\n');
    await assert.rejects(stat(join(mnt, 'missing')), { code: 'ENOENT' });
  });

  test('rclone lists an empty directory as a directory, lists into it and copies it', async () => {
    const lsd = await rclone('lsd', 'fo:data');
    assert.equal(lsd.code, 0, lsd.stderr);
    assert.deepEqual(lsd.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/).pop()), ['empty', 'full']);
    const inside = await rclone('lsjson', 'fo:data/empty');
    assert.equal(inside.code, 0, inside.stderr);
    assert.deepEqual(JSON.parse(inside.stdout), []);
    const full = await rclone('lsjson', 'fo:data/full');
    assert.equal(full.code, 0, full.stderr);
    const entries = (JSON.parse(full.stdout) as { Name: string; IsDir: boolean }[]).map((e) => [e.Name, e.IsDir]);
    assert.deepEqual(entries, [['a.txt', false], ['sub-empty', true]]);
    const dest = join(work, 'rclone-copy');
    const copy = await rclone('copy', '--create-empty-src-dirs', 'fo:data', dest);
    assert.equal(copy.code, 0, copy.stderr);
    assert.ok((await stat(join(dest, 'empty'))).isDirectory());
    assert.ok((await stat(join(dest, 'full/sub-empty'))).isDirectory());
    assert.equal(await readFile(join(dest, 'full/a.txt'), 'utf8'), 'a in full\n');
  });

  test('an rclone mount shows an empty directory as a directory and enters it', async () => {
    const mnt = join(work, 'rclone');
    const env: NodeJS.ProcessEnv = { ...process.env, RCLONE_CONFIG: rcloneConfig };
    delete env.AWS_CA_BUNDLE;
    await mountWith('rclone', ['mount', 'fo:data', mnt, '--read-only', '--dir-cache-time', '1s', '--contimeout', '10s', '--timeout', '30s'], mnt, 'fuse.rclone', env);
    const root = await lsModes(mnt);
    assert.match(root.get('empty') ?? '', /^d/);
    assert.deepEqual(await readdir(join(mnt, 'empty')), []);
    const entered = await sh('sh', ['-c', 'cd "$1" && pwd', 'sh', join(mnt, 'empty')]);
    assert.equal(entered.code, 0, `cd into the empty directory: ${entered.stderr}`);
    assert.equal(entered.stdout.toString().trim(), join(mnt, 'empty'));
  });

  test('HEAD of "dir/" is a zero-byte directory marker, "dir" and "dir_$folder$" are no objects, and listings hold empty directories', async () => {
    const client = new S3Client({ endpoint, region: 'us-east-1', credentials: KEY, forcePathStyle: true, maxAttempts: 1 });
    try {
      for (const key of ['empty/', 'full/', 'full/sub-empty/']) {
        const head = await client.send(new HeadObjectCommand({ Bucket: 'data', Key: key }));
        assert.equal(head.ContentType, 'application/x-directory', key);
        assert.equal(head.ContentLength, 0, key);
        assert.ok(head.LastModified!.getTime() > Date.UTC(2000, 0, 1), `${key}: ${head.LastModified?.toISOString()}`);
      }
      assert.equal((await client.send(new HeadObjectCommand({ Bucket: 'data', Key: 'empty/' }))).LastModified?.toISOString(), EMPTY_TIME.toISOString());
      for (const key of ['empty', 'empty_$folder$', 'top.txt/', 'missing/', 'empty//']) {
        await assert.rejects(client.send(new HeadObjectCommand({ Bucket: 'data', Key: key })), (err: { $metadata?: { httpStatusCode?: number } }) => err.$metadata?.httpStatusCode === 404, key);
      }
      const flat = await client.send(new ListObjectsV2Command({ Bucket: 'data' }));
      assert.deepEqual(flat.Contents?.map((o) => o.Key), ['empty/', 'full/a.txt', 'full/sub-empty/', 'top.txt']);
      assert.equal(flat.Contents?.[0]?.LastModified?.toISOString(), EMPTY_TIME.toISOString());
      const byLevel = await client.send(new ListObjectsV2Command({ Bucket: 'data', Delimiter: '/' }));
      assert.deepEqual(byLevel.Contents?.map((o) => o.Key), ['top.txt']);
      assert.deepEqual(byLevel.CommonPrefixes?.map((p) => p.Prefix), ['empty/', 'full/']);
    } finally {
      client.destroy();
    }
  });
});
