import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FanoutError } from '../../core/errors.js';
import { smallIo } from '../smallio/index.js';
import { LocalUfs } from './local.js';

/** The small whole read of a directory source (one thread-pool job): the rules of LocalUfs.read. */
describe('LocalUfs.readInto, small whole reads in one step', { skip: smallIo() ? false : 'the small-file addon is not built' }, () => {
  let base: string;
  let root: string;
  let ufs: LocalUfs;
  const data = randomBytes(65_536 + 13);

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'fanout-local-small-'));
    root = join(base, 'root');
    await mkdir(join(root, 'd'), { recursive: true });
    await writeFile(join(root, 'd', 'f.bin'), data);
    await writeFile(join(base, 'secret.bin'), data);
    await symlink(join(base, 'secret.bin'), join(root, 'd', 'escape.bin'));
    execFileSync('mkfifo', [join(root, 'd', 'pipe')]);
    ufs = new LocalUfs(root, { label: '/data' });
  });

  after(async () => {
    await rm(base, { recursive: true, force: true });
  });

  const codeOf = async (work: Promise<unknown>): Promise<string> => {
    try {
      await work;
      return 'resolved';
    } catch (err) {
      assert.ok(err instanceof FanoutError, String(err));
      return err.code;
    }
  };

  test('reads a range of the file at its version into the buffer given', async () => {
    const { version, size } = await ufs.stat('d/f.bin');
    const into = Buffer.alloc(1000);
    await ufs.readInto!('d/f.bin', version, size, 500, into);
    assert.ok(into.equals(data.subarray(500, 1500)));
    const whole = Buffer.alloc(size);
    await ufs.readInto!('d/f.bin', version, size, 0, whole);
    assert.ok(whole.equals(data));
  });

  test('a file at another version fails with SOURCE_CHANGED and nothing is read into the buffer', async () => {
    const { version, size } = await ufs.stat('d/f.bin');
    const file = join(root, 'd', 'g.bin');
    await writeFile(file, data);
    const old = await ufs.stat('d/g.bin');
    await utimes(file, new Date(), new Date(Date.now() + 5000));
    const into = Buffer.alloc(size, 0xee);
    assert.equal(await codeOf(ufs.readInto!('d/g.bin', old.version, size, 0, into)), 'SOURCE_CHANGED');
    assert.ok(into.every((b) => b === 0xee), 'no byte of another version lands in the buffer');
    assert.equal(await codeOf(ufs.readInto!('d/f.bin', 'not-a-version', size, 0, into)), 'SOURCE_CHANGED');
    assert.equal(await codeOf(ufs.readInto!('d/f.bin', version, size, 0, into)), 'resolved');
  });

  test('a size that is not the file\'s at that version is INVALID_ARGUMENT, another version still SOURCE_CHANGED', async () => {
    const { version, size } = await ufs.stat('d/f.bin');
    assert.equal(await codeOf(ufs.readInto!('d/f.bin', version, size + 1, 0, Buffer.alloc(size + 1))), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(ufs.readInto!('d/f.bin', `${size + 1}-1`, size + 1, 0, Buffer.alloc(size + 1))), 'SOURCE_CHANGED');
  });

  test('missing files, directories, FIFOs and links out of the root fail with the codes of read, without blocking', async () => {
    const into = Buffer.alloc(10);
    assert.equal(await codeOf(ufs.readInto!('d/missing.bin', '10-1', 10, 0, into)), 'NOT_FOUND');
    assert.equal(await codeOf(ufs.readInto!('d', '10-1', 10, 0, into)), 'IS_A_DIRECTORY');
    assert.equal(await codeOf(ufs.readInto!('d/pipe', '10-1', 10, 0, into)), 'NOT_FOUND');
    const secret = await new LocalUfs(base).stat('secret.bin');
    assert.equal(await codeOf(ufs.readInto!('d/escape.bin', secret.version, secret.size, 0, Buffer.alloc(10))), 'INVALID_PATH');
    assert.equal(await codeOf(ufs.readInto!('../secret.bin', secret.version, secret.size, 0, into)), 'INVALID_PATH');
  });

  test('an aborted read rejects with ABORTED', async () => {
    const { version, size } = await ufs.stat('d/f.bin');
    const controller = new AbortController();
    controller.abort();
    assert.equal(await codeOf(ufs.readInto!('d/f.bin', version, size, 0, Buffer.alloc(size), controller.signal)), 'ABORTED');
  });
});
