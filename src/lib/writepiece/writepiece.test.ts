import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import { mkdtemp, open, readFile, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeAllSync } from '../../cli/stdout.js';
import { writePageFile } from '../pagestore/pagefiles.js';
import { PageSpool } from '../pagestore/spool.js';
import { copyPagesAt } from '../transfer/positional.js';
import { WholeFileWriter, wholeFilePath, type WholeFilePath } from '../wholefiles/index.js';
import { WRITE_PIECE, leadingPiece, pieceOf } from './index.js';

// Write syscalls of this process so far, every thread's (the thread pool's writes too).
const canCount = existsSync('/proc/self/io');
const writeCalls = () => Number(/^syscw:\s+(\d+)/m.exec(readFileSync('/proc/self/io', 'utf8'))?.[1]);
async function writesDuring(run: () => unknown): Promise<number> {
  const before = writeCalls();
  await run();
  return writeCalls() - before;
}

// Sixteen pieces and a bit: at least 17 write calls in pieces, where one write(2) per page made a
// handful (libuv also writes to an eventfd when a thread-pool job is done: a few per file).
const data = randomBytes(16 * WRITE_PIECE + 12_345);
const PIECES = 17;
const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});
async function scratch(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-writepiece-'));
  dirs.push(dir);
  return dir;
}

test('leadingPiece: whole chunks while they fit, then the leading part of the next; views, never empty', () => {
  const a = Buffer.alloc(300_000, 1);
  const b = Buffer.alloc(700_000, 2);
  const c = Buffer.alloc(100_000, 3);
  const piece = leadingPiece([a, b, c]);
  assert.equal(piece.length, 3);
  assert.equal(piece[0], a);
  assert.equal(piece[1], b);
  assert.equal(piece[2]!.length, WRITE_PIECE - 1_000_000);
  assert.equal(piece[2]!.buffer, c.buffer, 'a view of the chunk, not a copy');
  const big = Buffer.alloc(3 * WRITE_PIECE);
  assert.deepEqual(leadingPiece([big]).map((x) => x.length), [WRITE_PIECE]);
  assert.deepEqual(leadingPiece([Buffer.alloc(10)]).map((x) => x.length), [10]);
  assert.equal(pieceOf(5), 5);
  assert.equal(pieceOf(WRITE_PIECE + 1), WRITE_PIECE);
});

test('a page spool appends a big arrival in pieces, the bytes intact', { skip: !canCount && 'no /proc/self/io' }, async () => {
  const dir = await scratch();
  const handle = await open(join(dir, 'spool'), 'w+');
  const spool = new PageSpool(handle, join(dir, 'spool'), 'k', data.length, () => {});
  assert.ok((await writesDuring(() => spool.append(data))) >= PIECES);
  assert.equal(spool.written, data.length);
  await spool.settle(false);
  assert.ok((await readFile(join(dir, 'spool'))).equals(data));
});

test('a stored page is written in pieces, by the addon (when built) and by JS', { skip: !canCount && 'no /proc/self/io' }, async () => {
  const dir = await scratch();
  // This process's path: the small-file addon where it is built, else JS.
  const file = join(dir, 'page');
  assert.ok((await writesDuring(() => writePageFile(join(dir, 'tmp'), dir, file, data, new Set([dir])))) >= PIECES);
  assert.ok((await readFile(file)).equals(data));
  // The JS path, in a process that does not load the addon.
  const script = `
    import { readFileSync } from 'node:fs';
    import { writePageFile } from ${JSON.stringify(new URL('../pagestore/pagefiles.js', import.meta.url).href)};
    const calls = () => Number(/^syscw:\\s+(\\d+)/m.exec(readFileSync('/proc/self/io', 'utf8'))[1]);
    const data = readFileSync(${JSON.stringify(file)});
    const before = calls();
    await writePageFile(${JSON.stringify(join(dir, 'tmp2'))}, ${JSON.stringify(dir)}, ${JSON.stringify(join(dir, 'page2'))}, data, new Set([${JSON.stringify(dir)}]));
    process.stdout.write(String(calls() - before));`;
  const writes = Number(execFileSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, FANOUT_NO_SMALLIO: '1' }, encoding: 'utf8' }));
  assert.ok(writes >= PIECES, `JS path: ${writes} writes`);
  assert.ok((await readFile(join(dir, 'page2'))).equals(data));
});

test('a page copied to its offset is written in pieces', { skip: !canCount && 'no /proc/self/io' }, async () => {
  const dir = await scratch();
  const handle = await open(join(dir, 'copy'), 'w');
  try {
    const writes = await writesDuring(() =>
      copyPagesAt({ target: handle, pages: 1, pageSize: data.length, pageLength: () => data.length, window: 1, fetch: async () => [data.subarray(0, 1000), data.subarray(1000)] }),
    );
    assert.ok(writes >= PIECES, `${writes} writes`);
  } finally {
    await handle.close();
  }
  assert.ok((await readFile(join(dir, 'copy'))).equals(data));
});

const wholePaths: WholeFilePath[] = wholeFilePath() === 'native' ? ['native', 'js'] : ['js'];
for (const path of wholePaths) {
  test(`a whole file is written in pieces (${path})`, { skip: !canCount && 'no /proc/self/io' }, async () => {
    const dir = await scratch();
    const writer = new WholeFileWriter({ path, maxFiles: 1 });
    // Chunks around a piece's edge: small ones, one bigger than a piece.
    const chunks = [data.subarray(0, 10), data.subarray(10, WRITE_PIECE + 20), data.subarray(WRITE_PIECE + 20)];
    const writes = await writesDuring(() => writer.write({ path: join(dir, 'whole'), chunks }));
    assert.ok(writes >= PIECES, `${writes} writes`);
    assert.ok((await readFile(join(dir, 'whole'))).equals(data));
  });
}

test('standard output into a file is written in pieces', { skip: !canCount && 'no /proc/self/io' }, async () => {
  const dir = await scratch();
  const fd = openSync(join(dir, 'out'), 'w');
  try {
    assert.ok((await writesDuring(() => writeAllSync(fd, [data]))) >= PIECES);
  } finally {
    closeSync(fd);
  }
  assert.ok((await readFile(join(dir, 'out'))).equals(data));
});

test('a page spool whose append fails tells the store, and rejects', async () => {
  const full = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  const handle = { fd: -1, write: async () => Promise.reject(full), close: async () => {} };
  const told: Error[] = [];
  const spool = new PageSpool(handle as unknown as FileHandle, '/nonexistent/spool', 'k', 10, () => {}, (err) => told.push(err));
  await assert.rejects(spool.append(Buffer.alloc(10)), (err: Error) => err === full);
  assert.deepEqual(told, [full]);
  assert.equal(spool.written, 0);
});
