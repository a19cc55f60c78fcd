import { mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { StoredPage } from './types.js';

/** A page file's name: `<key>.<crc32>`, so the checksum survives a restart without an index. */
const PAGE_FILE = /^([0-9a-f]{16,128})\.([0-9a-f]{8})$/;

/** The pages found under `pagesDir` (one directory per key prefix), oldest first: the LRU order to rebuild. */
export async function scanPages(pagesDir: string): Promise<StoredPage[]> {
  const found: (StoredPage & { mtimeMs: number })[] = [];
  for (const shard of await readdir(pagesDir)) {
    const shardDir = join(pagesDir, shard);
    for (const name of await readdir(shardDir).catch(() => [] as string[])) {
      const match = PAGE_FILE.exec(name);
      const file = join(shardDir, name);
      if (!match) continue;
      const info = await stat(file).catch(() => undefined);
      if (!info?.isFile()) continue;
      found.push({ key: match[1]!, crc: parseInt(match[2]!, 16), size: info.size, file, mtimeMs: info.mtimeMs });
    }
  }
  found.sort((a, b) => a.mtimeMs - b.mtimeMs);
  return found.map(({ mtimeMs: _mtime, ...page }) => page);
}

/** Writes `data` to `tmp` and renames it to `file`: a failed write never leaves a partial page under a real name. */
export async function writePageFile(tmp: string, shardDir: string, file: string, data: Buffer, write: (file: string, data: Buffer) => Promise<void>): Promise<void> {
  try {
    await mkdir(shardDir, { recursive: true });
    await write(tmp, data);
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
}

/** Reads up to `size` bytes of `file` into `buffer`; the count read (short if the file is). */
export async function readFully(file: string, buffer: Buffer, size: number): Promise<number> {
  const handle = await open(file, 'r');
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
