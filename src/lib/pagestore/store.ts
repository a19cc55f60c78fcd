import { mkdir, open, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { FanoutError } from '../../core/errors.js';
import { BufferPool } from './bufferpool.js';
import { LruIndex, type Watermarks } from './lru.js';

/**
 * Pages on local disk, one file each, named `<key>.<crc32>` so the checksum survives a restart
 * without a separate index: on start the directory is scanned and the LRU order rebuilt from
 * modification times. Writes go to tmp/ and are renamed into place, so a crash or a failed
 * source read never leaves a partial page under a real name.
 */
export interface PageStoreOptions {
  dir: string;
  capacity: number;
  watermarks?: Watermarks;
  pageSize: number;
  /** False for pages that must stay (pinned): eviction skips them. */
  canEvict?: (key: string) => boolean;
}

interface StoredPage {
  key: string;
  size: number;
  crc: number;
  file: string;
}

export interface VerifiedPage {
  data: Buffer;
  crc: number;
  /** Gives the buffer back to the pool once the caller has finished sending it. */
  release(): void;
}

export interface PageStoreEvents {
  onEvict?(count: number, bytes: number): void;
  onCorrupt?(key: string): void;
}

const PAGE_FILE = /^([0-9a-f]{16,128})\.([0-9a-f]{8})$/;

export class PageStore {
  private readonly index: LruIndex<StoredPage>;
  private readonly pagesDir: string;
  private readonly tmpDir: string;
  private readonly pool: BufferPool;
  private tmpCounter = 0;
  evictions = 0;
  corruptions = 0;

  constructor(
    private readonly options: PageStoreOptions,
    private readonly events: PageStoreEvents = {},
  ) {
    this.index = new LruIndex(options.capacity, options.watermarks ?? { high: 0.95, low: 0.85 });
    this.pagesDir = join(options.dir, 'pages');
    this.tmpDir = join(options.dir, 'tmp');
    this.pool = new BufferPool(options.pageSize);
  }

  get used(): number {
    return this.index.used;
  }

  get pageCount(): number {
    return this.index.size;
  }

  get capacity(): number {
    return this.index.capacity;
  }

  /** Creates the directories, drops leftovers of interrupted writes, and reloads the index. */
  async open(): Promise<void> {
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { recursive: true });
    await mkdir(this.pagesDir, { recursive: true });
    const found: (StoredPage & { mtimeMs: number })[] = [];
    for (const shard of await readdir(this.pagesDir)) {
      const shardDir = join(this.pagesDir, shard);
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
    for (const { mtimeMs: _mtime, ...page } of found) this.index.add(page);
    await this.evictIfNeeded(0);
  }

  has(key: string): boolean {
    return this.index.peek(key) !== undefined;
  }

  /**
   * Reads a page into a pooled buffer and verifies its checksum before anyone sees it. A page
   * that fails verification is deleted and reported as missing, so the caller refetches it.
   */
  async get(key: string): Promise<VerifiedPage | undefined> {
    const entry = this.index.touch(key);
    if (!entry) return undefined;
    const buffer = this.pool.acquire(entry.size);
    let release = () => this.pool.release(buffer);
    try {
      const bytesRead = await readFully(entry.file, buffer, entry.size);
      const data = buffer.subarray(0, entry.size);
      if (bytesRead !== entry.size || crc32(data) !== entry.crc) {
        release();
        await this.dropCorrupt(entry);
        return undefined;
      }
      return { data, crc: entry.crc, release };
    } catch (err) {
      release();
      release = () => {};
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.index.remove(key);
        return undefined;
      }
      throw new FanoutError('INTERNAL', `page store read failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Stores a complete, already verified page. */
  async put(key: string, data: Buffer, crc: number): Promise<void> {
    if (this.index.peek(key)) return;
    if (data.length > this.index.capacity) {
      throw new FanoutError('STORE_FULL', `page of ${data.length} bytes exceeds store capacity`);
    }
    const name = `${key}.${crc.toString(16).padStart(8, '0')}`;
    const shardDir = join(this.pagesDir, key.slice(0, 2));
    const file = join(shardDir, name);
    const tmp = join(this.tmpDir, `${key}.${process.pid}.${this.tmpCounter++}`);
    await mkdir(shardDir, { recursive: true });
    try {
      await writeFile(tmp, data);
      await rename(tmp, file);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw new FanoutError('INTERNAL', `page store write failed: ${(err as Error).message}`, { cause: err });
    }
    await this.evictIfNeeded(data.length);
    this.index.add({ key, size: data.length, crc, file });
  }

  async delete(key: string): Promise<boolean> {
    const entry = this.index.remove(key);
    if (!entry) return false;
    await unlink(entry.file).catch(() => {});
    return true;
  }

  /** Location of a page's file, for tests and tools that inspect the store. */
  fileOf(key: string): string | undefined {
    return this.index.peek(key)?.file;
  }

  keys(): string[] {
    return [...this.index.keys()];
  }

  private async evictIfNeeded(extra: number): Promise<void> {
    const canEvict = this.options.canEvict;
    const victims = this.index.evict(extra, canEvict ? (entry) => canEvict(entry.key) : undefined);
    if (victims.length === 0) return;
    let bytes = 0;
    for (const victim of victims) {
      bytes += victim.size;
      await unlink(victim.file).catch(() => {});
    }
    this.evictions += victims.length;
    this.events.onEvict?.(victims.length, bytes);
  }

  private async dropCorrupt(entry: StoredPage): Promise<void> {
    this.index.remove(entry.key);
    this.corruptions++;
    this.events.onCorrupt?.(entry.key);
    await unlink(entry.file).catch(() => {});
  }
}

async function readFully(file: string, buffer: Buffer, size: number): Promise<number> {
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
