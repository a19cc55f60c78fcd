import { lstat, mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { constants } from 'node:fs';
import { join } from 'node:path';
import { smallIo, type SmallIo } from '../smallio/index.js';
import type { StoredPage } from './types.js';
import { writeFully } from '../writepiece/index.js';

/** A page file's name: `<key>.<crc32>`, so the checksum survives a restart without an index. */
const PAGE_FILE = /^([0-9a-f]{16,128})\.([0-9a-f]{8})$/;

/**
 * The pages found under `pagesDir` (one directory per key prefix), least recently read or
 * written first (their mtimes, which reads keep up to date: readmarks.ts): the LRU order to rebuild.
 */
export async function scanPages(pagesDir: string, dirs?: KnownDirs): Promise<Omit<StoredPage, 'footprint'>[]> {
  const found: (Omit<StoredPage, 'footprint'> & { markedAt: number })[] = [];
  for (const shard of await readdir(pagesDir)) {
    const shardDir = join(pagesDir, shard);
    await dirs?.add(shardDir);
    // A shard's files are stat'ed at once, not one after another: each stat is a thread-pool
    // hand-off of microseconds of work, and the worker answers nothing until the scan ends.
    // 100,000 pages took 4.6–8.9 s one by one, 2.8–3.5 s this way (a loaded 2-core machine).
    const names = await readdir(shardDir).catch(() => [] as string[]);
    await Promise.all(
      names.map(async (name) => {
        const match = PAGE_FILE.exec(name);
        if (!match) return;
        const file = join(shardDir, name);
        const info = await lstat(file).catch(() => undefined);
        if (!info) return;
        if (!info.isFile()) {
          // A directory, link or FIFO at a page's name (put there while the worker was down): the
          // page's next store, a rename onto that name, would fail for good (EISDIR), so the page
          // was served uncached for ever. Removed as a running store removes it (store.ts).
          await rm(file, { recursive: true, force: true }).catch(() => {});
          return;
        }
        found.push({ key: match[1]!, crc: parseInt(match[2]!, 16), size: info.size, file, markedAt: info.mtimeMs });
      }),
    );
  }
  found.sort((a, b) => a.markedAt - b.markedAt);
  return found;
}

/** Where a page lives: `<pagesDir>/<first two key characters>/<key>.<crc32>`. */
export function pagePath(pagesDir: string, key: string, crc: number): { shardDir: string; file: string } {
  const shardDir = join(pagesDir, key.slice(0, 2));
  return { shardDir, file: join(shardDir, `${key}.${crc.toString(16).padStart(8, '0')}`) };
}

/** The directories a store knows exist (a Set will do where nothing counts them: StoreDirs). */
export interface KnownDirs {
  has(dir: string): boolean;
  add(dir: string): unknown;
}

/**
 * The store's directories known to exist (pages/, tmp/ and the shards), each counted once in
 * what the store takes on disk, from its stat: a directory takes blocks as a file does (4 KiB on
 * ext4, for up to about 48 page names), ≈ 1% of a store of a few MiB, and the store's `used` did
 * not count them. A directory is stat'ed once, when found at open or made, not per page: one that
 * grows with its entries is counted at its size when first seen (and again at the next open).
 */
export class StoreDirs implements KnownDirs {
  private readonly known = new Set<string>();

  constructor(private readonly counted: (bytes: number) => void) {}

  has(dir: string): boolean {
    return this.known.has(dir);
  }

  /** A directory found or made: counted, once, if it is one. */
  async add(dir: string): Promise<void> {
    if (this.known.has(dir)) return;
    this.known.add(dir);
    const info = await stat(dir).catch(() => undefined);
    if (info?.isDirectory()) this.counted(info.blocks * 512);
    else this.known.delete(dir); // not there (yet): ensureShard makes it when a page needs it
  }
}

/** Makes a shard directory unless `shards` already knows it exists: a mkdir per stored page was a syscall per small file. */
export async function ensureShard(shardDir: string, shards: KnownDirs): Promise<void> {
  if (shards.has(shardDir)) return;
  await mkdir(shardDir, { recursive: true });
  await shards.add(shardDir);
}

/**
 * Writes `data` to `tmp` and renames it to `file`: a failed write never leaves a partial page
 * under a real name. Returns the file's mtime, read on the written file (a rename keeps it).
 * `shards` holds the shard directories known to exist: a mkdir per stored page was a syscall per
 * small file. `write` replaces the write itself (tests inject failures).
 */
export async function writePageFile(
  tmp: string,
  shardDir: string,
  file: string,
  data: Buffer,
  shards: KnownDirs,
  write?: (file: string, data: Buffer) => Promise<void>,
): Promise<number | undefined> {
  const io = write ? undefined : smallIo();
  if (io) return writeInOneJob(io, tmp, shardDir, file, data, shards);
  try {
    await ensureShard(shardDir, shards);
    let writtenAt: number | undefined;
    if (write) {
      await write(tmp, data);
      writtenAt = (await stat(tmp).catch(() => undefined))?.mtimeMs;
    } else writtenAt = await writeAndStat(tmp, data);
    await rename(tmp, file).catch(async (err) => {
      // The shard directory was removed behind the store's back: make it again, once.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await mkdir(shardDir, { recursive: true });
      await rename(tmp, file);
    });
    return writtenAt;
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}

/**
 * The same in one thread-pool job (native/smallio: open, write, fstat, close, rename), instead of
 * five hand-offs through the event loop; the job removes the temp file on any failure.
 */
async function writeInOneJob(io: SmallIo, tmp: string, shardDir: string, file: string, data: Buffer, shards: KnownDirs): Promise<number> {
  await ensureShard(shardDir, shards);
  try {
    return await io.writeNew(tmp, file, data);
  } catch (err) {
    // The shard directory was removed behind the store's back: make it again, once.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || (err as NodeJS.ErrnoException).syscall !== 'rename') throw err;
    await mkdir(shardDir, { recursive: true });
    return io.writeNew(tmp, file, data);
  }
}

/** Writes a new file and returns its mtime from the open fd (one fstat, no path lookup). */
async function writeAndStat(file: string, data: Buffer): Promise<number> {
  const handle = await open(file, 'w');
  try {
    await writeFully(handle, data, 0);
    return (await handle.stat()).mtimeMs;
  } finally {
    await handle.close();
  }
}

/**
 * How page files are opened for reading: never through a symlink (ELOOP), and a FIFO put in a
 * page's place reads as empty instead of blocking a pool thread until a writer comes; either way
 * the store drops the page as corrupt (native/smallio's read_file opens them the same way).
 */
export const PAGE_FILE_READ = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW;

/**
 * Errors of a page file's read that say something other than a page file sits at its name (a
 * directory, a symlink, a FIFO (ESPIPE), a device): the page is dropped as corrupt, as a checksum failure is.
 */
export function isNotAPageFile(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'EISDIR' || code === 'ELOOP' || code === 'ENXIO' || code === 'EINVAL' || code === 'ENOTDIR' || code === 'ESPIPE';
}

/** Reads up to `size` bytes of `file` into `buffer`; the count read (short if the file is). */
export async function readFully(file: string, buffer: Buffer, size: number): Promise<number> {
  // One thread-pool job (open, read, close) instead of three hand-offs: a warm batch item's read.
  const io = smallIo();
  if (io) return io.readFile(file, buffer.subarray(0, size));
  const handle = await open(file, PAGE_FILE_READ);
  try {
    let offset = 0;
    while (offset < size) {
      const { bytesRead } = await handle.read(buffer, offset, size - offset, offset);
      if (bytesRead === 0) break;
      offset += bytesRead;
    }
    return offset;
  } finally {
    await handle.close();
  }
}
