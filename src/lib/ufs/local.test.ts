import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rename, rm, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalUfs } from './local.js';
import { releaseSourceChunk } from './chunks.js';
import { ManualClock } from '../../core/clock.js';
import { readAll, rejectsWith, sha } from '../../../test/harness/streams.js';

const MiB = 1024 * 1024;

/** `dir`/a and `dir`/b, each with a file (fa.txt, fb.txt) and a link to the other (a/x → ../b, b/y → ../a): a loop between siblings. */
async function siblingLoop(dir: string): Promise<void> {
  await mkdir(join(dir, 'a'), { recursive: true });
  await mkdir(join(dir, 'b'));
  await writeFile(join(dir, 'a/fa.txt'), 'a');
  await writeFile(join(dir, 'b/fb.txt'), 'b');
  await symlink('../b', join(dir, 'a/x'));
  await symlink('../a', join(dir, 'b/y'));
}

describe('LocalUfs', () => {
  let base: string;
  let root: string;
  let ufs: LocalUfs;
  const big = randomBytes(5 * MiB + 17);

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'fanout-local-ufs-'));
    root = join(base, 'root');
    await mkdir(join(root, 'models', 'v1'), { recursive: true });
    await writeFile(join(root, 'big.bin'), big);
    await writeFile(join(root, 'models', 'b.txt'), 'bee');
    await writeFile(join(root, 'models', 'a.txt'), 'a');
    await writeFile(join(root, 'empty'), '');
    await writeFile(join(base, 'secret.txt'), 'outside the root');
    await mkdir(join(base, 'outside-dir'));
    await symlink(join(base, 'secret.txt'), join(root, 'models', 'escape.txt'));
    await symlink(join(base, 'outside-dir'), join(root, 'escape-dir'));
    await symlink('a.txt', join(root, 'models', 'alias.txt'));
    await symlink('v1', join(root, 'models', 'current'));
    await symlink('missing', join(root, 'models', 'dangling'));
    ufs = new LocalUfs(root);
  });

  after(async () => {
    await rm(base, { recursive: true, force: true });
  });

  test('stat gives size, mtime and a size-mtime version', async () => {
    const info = await ufs.stat('big.bin');
    assert.equal(info.path, 'big.bin');
    assert.equal(info.size, big.length);
    assert.equal(info.version, `${big.length}-${info.mtimeMs}`);
    assert.equal((await ufs.stat('empty')).size, 0);
    assert.equal((await ufs.stat('models/alias.txt')).size, 1);
  });

  test('stat errors carry stable codes', async () => {
    await assert.rejects(ufs.stat('nope'), rejectsWith('NOT_FOUND'));
    await assert.rejects(ufs.stat('models'), rejectsWith('IS_A_DIRECTORY'));
    await assert.rejects(ufs.stat(''), rejectsWith('IS_A_DIRECTORY'));
    await assert.rejects(ufs.stat('models/a.txt/x'), rejectsWith('NOT_A_DIRECTORY'));
    await assert.rejects(ufs.stat('../secret.txt'), rejectsWith('INVALID_PATH'));
    await assert.rejects(ufs.stat('models//a.txt'), rejectsWith('INVALID_PATH'));
    await assert.rejects(ufs.stat('models/dangling'), rejectsWith('NOT_FOUND'));
    await assert.rejects(new LocalUfs(join(base, 'no-such-root')).stat('x'), rejectsWith('NOT_FOUND'));
  });

  test('symlinks that leave the root are not followed', async () => {
    await assert.rejects(ufs.stat('models/escape.txt'), rejectsWith('INVALID_PATH'));
    await assert.rejects(ufs.list('escape-dir'), rejectsWith('INVALID_PATH'));
    await assert.rejects(readAll(ufs.read('models/escape.txt', '16-0', 0, 16)), rejectsWith('INVALID_PATH'));
    const names = (await ufs.list('models')).map((e) => e.name);
    assert.ok(!names.includes('escape.txt') && !names.includes('dangling'));
    assert.ok(!(await ufs.list('')).some((e) => e.name === 'escape-dir'));
  });

  test('links back to the directory itself or one above it are left out of listings', async () => {
    await mkdir(join(root, 'loopdir/sub'), { recursive: true });
    await writeFile(join(root, 'loopdir/file.txt'), 'x');
    await symlink('../loopdir', join(root, 'loopdir/self'));
    await symlink('.', join(root, 'loopdir/dot'));
    await symlink('../..', join(root, 'loopdir/sub/up'));
    await symlink('../file.txt', join(root, 'loopdir/sub/file-link'));
    try {
      assert.deepEqual((await ufs.list('loopdir')).map((e) => e.name), ['file.txt', 'sub']);
      assert.deepEqual((await ufs.list('loopdir/sub')).map((e) => e.name), ['file-link']);
      // A path through them is no key either (find -L from the root never prints it), by any call.
      await assert.rejects(ufs.list('loopdir/self'), rejectsWith('NOT_FOUND'));
      await assert.rejects(ufs.list('loopdir/sub/up/loopdir'), rejectsWith('NOT_FOUND'));
      await assert.rejects(ufs.stat('loopdir/self'), rejectsWith('NOT_FOUND'));
      await assert.rejects(ufs.stat('loopdir/dot/file.txt'), rejectsWith('NOT_FOUND'));
      await assert.rejects(ufs.stat('loopdir/sub/up/loopdir/file.txt'), rejectsWith('NOT_FOUND'));
      await assert.rejects(ufs.stat('loopdir'), rejectsWith('IS_A_DIRECTORY'));
      assert.equal((await ufs.stat('loopdir/sub/file-link')).size, 1);
    } finally {
      await rm(join(root, 'loopdir'), { recursive: true });
    }
  });

  test('loops through other directories are left out where they close, as find -L does; files read by the names the walk gives, not round the loop', async () => {
    await siblingLoop(join(root, 'loops/sib'));
    // A real directory can close a loop too, once a link has led below it: a/x/z/c is b/c again.
    await mkdir(join(root, 'loops/deep/a'), { recursive: true });
    await mkdir(join(root, 'loops/deep/b/c'), { recursive: true });
    await writeFile(join(root, 'loops/deep/b/c/f.txt'), 'f');
    await writeFile(join(root, 'loops/deep/b/g.txt'), 'g');
    await symlink('../b/c', join(root, 'loops/deep/a/x'));
    await symlink('..', join(root, 'loops/deep/b/c/z'));
    const walk = async (dir: string): Promise<string[]> => {
      const paths: string[] = [];
      for (const e of await ufs.list(dir)) paths.push(...(e.type === 'dir' ? [`${dir}/${e.name}/`, ...(await walk(`${dir}/${e.name}`))] : [`${dir}/${e.name}`]));
      return paths;
    };
    try {
      // What `find -L loops` prints, less the loops it reports (sib/a/x/y, sib/b/y/x, deep/a/x/z/c, deep/b/c/z).
      assert.deepEqual((await walk('loops')).sort(), [
        'loops/deep/', 'loops/deep/a/', 'loops/deep/a/x/', 'loops/deep/a/x/f.txt', 'loops/deep/a/x/z/', 'loops/deep/a/x/z/g.txt',
        'loops/deep/b/', 'loops/deep/b/c/', 'loops/deep/b/c/f.txt', 'loops/deep/b/g.txt',
        'loops/sib/', 'loops/sib/a/', 'loops/sib/a/fa.txt', 'loops/sib/a/x/', 'loops/sib/a/x/fb.txt',
        'loops/sib/b/', 'loops/sib/b/fb.txt', 'loops/sib/b/y/', 'loops/sib/b/y/fa.txt',
      ]);
      // The names the walk gave read through the links; a name round the loop is not there.
      assert.equal(await readAll(ufs.read('loops/sib/a/x/fb.txt', (await ufs.stat('loops/sib/a/x/fb.txt')).version, 0, 1)).then(String), 'b');
      await assert.rejects(ufs.stat('loops/sib/a/x/y/x/fb.txt'), rejectsWith('NOT_FOUND'));
      await assert.rejects(ufs.stat('loops/deep/a/x/z/c/f.txt'), rejectsWith('NOT_FOUND'));
    } finally {
      await rm(join(root, 'loops'), { recursive: true });
    }
  });

  test('a prefix that goes round a loop lists nothing and names no file, however deep it starts', async () => {
    await siblingLoop(join(root, 'inloop'));
    try {
      assert.deepEqual((await ufs.list('inloop/a/x')).map((e) => e.name), ['fb.txt']);
      for (const prefix of ['inloop/a/x/y', 'inloop/a/x/y/x', 'inloop/a/x/y/x/y', 'inloop/b/y/x']) {
        await assert.rejects(ufs.list(prefix), rejectsWith('NOT_FOUND'), prefix);
        await assert.rejects(ufs.stat(prefix), rejectsWith('NOT_FOUND'), prefix);
      }
      await assert.rejects(ufs.stat('inloop/a/x/y/x/y/fa.txt'), rejectsWith('NOT_FOUND'));
      await assert.rejects(ufs.stat('inloop/b/y/x/fb.txt'), rejectsWith('NOT_FOUND'));
      assert.equal((await ufs.stat('inloop/b/y/fa.txt')).size, 1);
    } finally {
      await rm(join(root, 'inloop'), { recursive: true });
    }
  });

  test('a bind mount of a directory inside itself is a loop as find -L sees it: left out, and no path through it', async (t) => {
    // bind/a/again shows bind itself: other real paths, the same dev and inode.
    await mkdir(join(root, 'bind/a/again'), { recursive: true });
    await mkdir(join(root, 'bind/b'));
    await writeFile(join(root, 'bind/b/f.txt'), 'f');
    const target = join(root, 'bind/a/again');
    // Directory keys are kept a second: one asked before the mount is not trusted longer than that.
    const clock = new ManualClock(1_000_000);
    const keeping = new LocalUfs(root, { clock });
    assert.deepEqual(await keeping.list('bind/a/again'), []);
    try {
      try {
        execFileSync('mount', ['--bind', join(root, 'bind'), target], { stdio: 'pipe' });
      } catch (err) {
        const why = String((err as { stderr?: Buffer }).stderr ?? err).trim();
        if (/permission denied|must be superuser|not permitted|EPERM|No such file or directory.*mount|ENOENT/i.test(why)) return t.skip(`mount --bind is not permitted here: ${why}`);
        throw err;
      }
      try {
        const walk = async (dir: string): Promise<string[]> => {
          const paths: string[] = [];
          for (const e of await ufs.list(dir)) paths.push(...(e.type === 'dir' ? [`${dir}/${e.name}/`, ...(await walk(`${dir}/${e.name}`))] : [`${dir}/${e.name}`]));
          return paths;
        };
        // find -L bind: "File system loop detected; 'bind/a/again' is part of the same file system loop as 'bind'".
        assert.deepEqual((await walk('bind')).sort(), ['bind/a/', 'bind/b/', 'bind/b/f.txt']);
        await assert.rejects(ufs.list('bind/a/again'), rejectsWith('NOT_FOUND'));
        await assert.rejects(ufs.list('bind/a/again/b'), rejectsWith('NOT_FOUND'));
        await assert.rejects(ufs.stat('bind/a/again/b/f.txt'), rejectsWith('NOT_FOUND'));
        await assert.rejects(ufs.stat('bind/a/again'), rejectsWith('NOT_FOUND'));
        assert.equal((await ufs.stat('bind/b/f.txt')).size, 1);
        await clock.advance(1000);
        await assert.rejects(keeping.list('bind/a/again'), rejectsWith('NOT_FOUND'));
      } finally {
        // A busy mount is detached all the same (lazy): the directory's removal must not run through it.
        try {
          execFileSync('umount', [target], { stdio: 'pipe' });
        } catch {
          execFileSync('umount', ['-l', target], { stdio: 'pipe' });
        }
      }
    } finally {
      await rm(join(root, 'bind'), { recursive: true });
    }
  });

  test('list gives one level, sorted, with types and file versions', async () => {
    const entries = await ufs.list('models');
    assert.deepEqual(
      entries.map((e) => [e.name, e.type]),
      [
        ['a.txt', 'file'],
        ['alias.txt', 'file'],
        ['b.txt', 'file'],
        ['current', 'dir'],
        ['v1', 'dir'],
      ],
    );
    // Directories carry their time, through a link too (S3 clients date "dir/" markers with it).
    const v1Time = new Date('2024-03-01T10:00:00Z');
    await utimes(join(root, 'models/v1'), v1Time, v1Time);
    const dated = await ufs.list('models');
    assert.equal(dated.find((e) => e.name === 'v1')!.mtimeMs, v1Time.getTime());
    assert.equal(dated.find((e) => e.name === 'current')!.mtimeMs, v1Time.getTime());
    const b = entries.find((e) => e.name === 'b.txt')!;
    assert.equal(b.size, 3);
    assert.equal(b.version, (await ufs.stat('models/b.txt')).version);
    assert.deepEqual(
      (await ufs.list('')).map((e) => e.name),
      ['big.bin', 'empty', 'models'],
    );
    assert.deepEqual(await ufs.list('models/v1'), []);
    await assert.rejects(ufs.list('models/a.txt'), rejectsWith('NOT_A_DIRECTORY'));
    await assert.rejects(ufs.list('nope'), rejectsWith('NOT_FOUND'));
  });

  test('read returns exactly the bytes of each range', async () => {
    const { version } = await ufs.stat('big.bin');
    const ranges: [number, number][] = [
      [0, big.length],
      [0, 1],
      [big.length - 1, 1],
      [MiB - 1, 2],
      [123_457, 3 * MiB + 5],
      [4 * MiB, big.length - 4 * MiB],
      [10, 0],
    ];
    for (const [offset, length] of ranges) {
      const got = await readAll(ufs.read('big.bin', version, offset, length));
      assert.equal(got.length, length, `length of [${offset}, +${length})`);
      assert.equal(sha(got), sha(big.subarray(offset, offset + length)), `bytes of [${offset}, +${length})`);
    }
    assert.equal((await readAll(ufs.read('empty', (await ufs.stat('empty')).version, 0, 0))).length, 0);
  });

  test('read buffers given back once copied are read into again, never under another reader', async () => {
    const { version } = await ufs.stat('big.bin');
    // Reads at once that copy and give back every chunk, as a fill does: the buffers go round.
    await Promise.all(
      [0, 3, 1, 2, 0].map(async (part) => {
        const offset = part * MiB + part;
        const into = Buffer.alloc(2 * MiB + 3);
        let at = 0;
        for await (const chunk of ufs.read('big.bin', version, offset, into.length) as AsyncIterable<Buffer>) {
          chunk.copy(into, at);
          at += chunk.length;
          releaseSourceChunk(chunk);
        }
        assert.equal(sha(into.subarray(0, at)), sha(big.subarray(offset, offset + into.length)), `part ${part}`);
      }),
    );
  });

  test('read refuses bad ranges', async () => {
    const { version } = await ufs.stat('big.bin');
    await assert.rejects(readAll(ufs.read('big.bin', version, big.length - 10, 20)), rejectsWith('SOURCE_TRUNCATED'));
    await assert.rejects(readAll(ufs.read('big.bin', version, big.length, 1)), rejectsWith('RANGE_NOT_SATISFIABLE'));
    await assert.rejects(readAll(ufs.read('big.bin', version, -1, 1)), rejectsWith('INVALID_RANGE'));
    await assert.rejects(readAll(ufs.read('models', version, 0, 1)), rejectsWith('IS_A_DIRECTORY'));
    await assert.rejects(readAll(ufs.read('nope', version, 0, 1)), rejectsWith('NOT_FOUND'));
  });

  test('read of a replaced file is SOURCE_CHANGED, never the new bytes', async () => {
    const path = join(root, 'replaced.bin');
    await writeFile(path, 'version one');
    await utimes(path, 1_000_000, 1_000_000);
    const old = await ufs.stat('replaced.bin');
    // Same size, new content, atomically renamed over the old file.
    await writeFile(`${path}.tmp`, 'version two');
    await utimes(`${path}.tmp`, 2_000_000, 2_000_000);
    await rename(`${path}.tmp`, path);
    await assert.rejects(readAll(ufs.read('replaced.bin', old.version, 0, 11)), rejectsWith('SOURCE_CHANGED'));
    const now = await ufs.stat('replaced.bin');
    assert.notEqual(now.version, old.version);
    assert.equal((await readAll(ufs.read('replaced.bin', now.version, 0, 11))).toString(), 'version two');
  });

  test('a file modified in place during a read ends in SOURCE_CHANGED', async () => {
    const path = join(root, 'inplace.bin');
    await writeFile(path, randomBytes(8 * MiB));
    const { version } = await ufs.stat('inplace.bin');
    const stream = ufs.read('inplace.bin', version, 0, 8 * MiB);
    let first = true;
    await assert.rejects(
      (async () => {
        for await (const _chunk of stream) {
          if (first) await utimes(path, 3_000_000, 3_000_000);
          first = false;
        }
      })(),
      rejectsWith('SOURCE_CHANGED'),
    );
  });

  test('a file truncated during a read ends in SOURCE_TRUNCATED', async () => {
    const path = join(root, 'shrinks.bin');
    await writeFile(path, randomBytes(8 * MiB));
    const { version } = await ufs.stat('shrinks.bin');
    const stream = ufs.read('shrinks.bin', version, 0, 8 * MiB);
    let first = true;
    await assert.rejects(
      (async () => {
        for await (const _chunk of stream) {
          if (first) await truncate(path, MiB);
          first = false;
        }
      })(),
      rejectsWith('SOURCE_TRUNCATED'),
    );
  });

  test('an aborted read errors with ABORTED; an early stop is clean', async () => {
    const { version } = await ufs.stat('big.bin');
    const ac = new AbortController();
    const stream = ufs.read('big.bin', version, 0, big.length, ac.signal);
    await assert.rejects(
      (async () => {
        for await (const _chunk of stream) ac.abort();
      })(),
      rejectsWith('ABORTED'),
    );
    const already = AbortSignal.abort();
    await assert.rejects(readAll(ufs.read('big.bin', version, 0, 10, already)), rejectsWith('ABORTED'));
    for await (const _chunk of ufs.read('big.bin', version, 0, big.length)) break;
    // Still readable afterwards: nothing leaked or locked.
    assert.equal((await readAll(ufs.read('big.bin', version, 0, 100))).length, 100);
  });

  test('reads never open what lies outside the root, nor block on a FIFO inside it', async () => {
    // Opening a FIFO for reading blocks until a writer comes: a read that opened it would hang here.
    execFileSync('mkfifo', [join(base, 'outside.fifo'), join(root, 'inside.fifo')]);
    await symlink(join(base, 'outside.fifo'), join(root, 'to-fifo'));
    try {
      await assert.rejects(readAll(ufs.read('to-fifo', '0-0', 0, 1)), rejectsWith('INVALID_PATH'));
      await assert.rejects(readAll(ufs.read('inside.fifo', '0-0', 0, 1)), rejectsWith('NOT_FOUND'));
    } finally {
      for (const f of [join(root, 'to-fifo'), join(root, 'inside.fifo'), join(base, 'outside.fifo')]) await rm(f, { force: true });
    }
  });
});
