import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { FILES_ADDON_PATH, WholeFileWriter, syncFileSystem, wholeFilePath, type WholeFilePath } from './index.js';

// The JS path always; the native one too when the addon loads (not with FANOUT_NO_NATIVE_FILES=1).
const paths: WholeFilePath[] = wholeFilePath() === 'native' ? ['native', 'js'] : ['js'];
const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});
async function scratch(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-wholefiles-'));
  dirs.push(dir);
  return dir;
}

test('the addon is chosen when it is built', () => {
  assert.equal(wholeFilePath(), existsSync(FILES_ADDON_PATH) && process.env.FANOUT_NO_NATIVE_FILES !== '1' ? 'native' : 'js');
});

test('the native and JS writers give the same files: chunks in order, empty files, in place or renamed from a temporary name', async () => {
  const contents = [randomBytes(65536), randomBytes(100_001), Buffer.alloc(0), randomBytes(7)];
  const trees: Record<string, Buffer[]> = {};
  for (const path of paths) {
    const dir = await scratch();
    const writer = new WholeFileWriter({ path, maxFiles: 3 });
    await Promise.all(
      contents.map((data, i) => {
        // Split into uneven chunks, an empty one among them.
        const chunks = [data.subarray(0, 1000), Buffer.alloc(0), data.subarray(1000, 50_000), data.subarray(50_000)];
        return writer.write({ path: join(dir, `f${i}`), tmp: i % 2 === 0 ? join(dir, `.f${i}.tmp`) : undefined, chunks });
      }),
    );
    assert.deepEqual((await readdir(dir)).sort(), ['f0', 'f1', 'f2', 'f3'], `${path}: no temporary name is left`);
    trees[path] = await Promise.all(contents.map((_, i) => readFile(join(dir, `f${i}`))));
    for (let i = 0; i < contents.length; i++) assert.ok(trees[path]![i]!.equals(contents[i]!), `${path}: file ${i}`);
    const mode = (await stat(join(dir, 'f0'))).mode & 0o777;
    assert.equal(mode, 0o666 & ~process.umask(), `${path}: created with mode 0666 less the umask`);
  }
});

test('many files queued at once are all written, over several jobs, with fdatasync asked for', async () => {
  for (const path of paths) {
    const dir = await scratch();
    const writer = new WholeFileWriter({ path, maxFiles: 16, maxBytes: 64 * 1024, datasync: true });
    const files = Array.from({ length: 100 }, (_, i) => ({ path: join(dir, `f${i}`), tmp: join(dir, `.t${i}`), chunks: [randomBytes(4096 + i)] }));
    await Promise.all(files.map((f) => writer.write(f)));
    // Queued in one turn: 16 files (or 64 KiB) to a job, not a job per file.
    const { jobs, files: written } = writer.stats();
    assert.equal(written, 100);
    assert.ok(jobs >= 7 && jobs <= 14, `${path}: ${jobs} jobs for 100 files of ≈ 4 KiB, 64 KiB a job`);
    for (const f of files) assert.ok((await readFile(f.path)).equals(f.chunks[0]!), `${path}: ${f.path}`);
    assert.equal((await readdir(dir)).length, 100);
  }
});

test('an existing file fails an exclusive write with EEXIST and keeps its bytes; the other files of the job are written', async () => {
  for (const path of paths) {
    const dir = await scratch();
    await writeFile(join(dir, 'taken'), 'old');
    const writer = new WholeFileWriter({ path, exclusive: true });
    const [taken, free] = await Promise.allSettled([
      writer.write({ path: join(dir, 'taken'), chunks: [Buffer.from('new')] }),
      writer.write({ path: join(dir, 'free'), chunks: [Buffer.from('new')] }),
    ]);
    assert.equal(taken.status, 'rejected');
    const err = (taken as PromiseRejectedResult).reason as NodeJS.ErrnoException;
    assert.equal(err.code, 'EEXIST', `${path}`);
    assert.equal(err.syscall, 'open');
    assert.equal(err.path, join(dir, 'taken'));
    assert.equal(free.status, 'fulfilled');
    assert.equal(await readFile(join(dir, 'taken'), 'utf8'), 'old');
    assert.equal(await readFile(join(dir, 'free'), 'utf8'), 'new');
  }
});

test('a path component that is a file fails that file with ENOTDIR', async () => {
  for (const path of paths) {
    const dir = await scratch();
    await writeFile(join(dir, 'plain'), 'x');
    const writer = new WholeFileWriter({ path });
    await assert.rejects(writer.write({ path: join(dir, 'plain/child'), tmp: join(dir, 'plain/.child.tmp'), chunks: [Buffer.from('y')] }), (err: NodeJS.ErrnoException) => {
      assert.equal(err.code, 'ENOTDIR', path);
      assert.equal(err.syscall, 'open');
      return true;
    });
  }
});

test('a full device fails the write with ENOSPC (/dev/full)', { skip: !existsSync('/dev/full') }, async () => {
  for (const path of paths) {
    const writer = new WholeFileWriter({ path });
    await assert.rejects(writer.write({ path: '/dev/full', chunks: [randomBytes(10_000)] }), (err: NodeJS.ErrnoException) => {
      assert.equal(err.code, 'ENOSPC', path);
      assert.equal(err.syscall, 'write');
      return true;
    });
  }
});

test('a rename that fails (a directory with files at the final name) reports rename and removes the temporary name', async () => {
  for (const path of paths) {
    const dir = await scratch();
    await mkdir(join(dir, 'busy'));
    await writeFile(join(dir, 'busy/inside'), 'x');
    const writer = new WholeFileWriter({ path });
    await assert.rejects(writer.write({ path: join(dir, 'busy'), tmp: join(dir, '.busy.tmp'), chunks: [Buffer.from('y')] }), (err: NodeJS.ErrnoException) => {
      assert.ok(err.code === 'EISDIR' || err.code === 'ENOTEMPTY', `${path}: ${err.code}`);
      assert.equal(err.syscall, 'rename');
      return true;
    });
    assert.deepEqual((await readdir(dir)).sort(), ['busy'], `${path}: the temporary name is gone`);
  }
});

test('syncfs of a file system runs natively when the addon loads, and a missing path is ENOENT', async () => {
  const dir = await scratch();
  await writeFile(join(dir, 'a'), 'a');
  assert.equal(await syncFileSystem(dir), wholeFilePath() === 'native');
  if (wholeFilePath() === 'native') {
    await assert.rejects(syncFileSystem(join(dir, 'missing')), (err: NodeJS.ErrnoException) => err.code === 'ENOENT' && err.syscall === 'syncfs');
  }
});
