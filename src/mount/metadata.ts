import type { FanoutClient, StatResult } from '../client/index.js';
import type { Clock } from '../core/clock.js';
import { isFanoutError } from '../core/errors.js';
import type { DirEntry } from '../core/types.js';
import { TtlCache } from '../lib/ttlcache/index.js';

/** What getattr and lookup need to know about a path. */
export interface Attributes {
  isDir: boolean;
  size: number;
  mtimeMs: number;
  /** A file's version (none for a directory). */
  version?: string;
}

/** The part of the SDK the mount's metadata needs (a fake in unit tests). */
export type MetadataSource = Pick<FanoutClient, 'stat' | 'list'>;

/**
 * Stat and list answers for the mount, reused for `ttlMs` (on top of the workers' own stat
 * TTL), so `ls -l`, `find` and the kernel's lookups do not cost a request each. A listing
 * also seeds the stat cache with its files, so `ls -l` of a directory is one request.
 */
export class Metadata {
  private readonly stats: TtlCache<StatResult>;
  private readonly lists: TtlCache<DirEntry[]>;

  constructor(
    private readonly client: MetadataSource,
    ttlMs: number,
    clock: Clock,
  ) {
    this.stats = new TtlCache(ttlMs, clock);
    this.lists = new TtlCache(ttlMs, clock);
  }

  /** A file at its current version (what a reader opened now must read). */
  stat(path: string): Promise<StatResult> {
    return this.stats.get(path, () => this.client.stat('/' + path));
  }

  /**
   * How much longer the stat answer for `path` is reused, if it is at `version` (ms; 0 if none
   * is cached or it names another version): how long a copy of that version may be served.
   */
  async statValidMs(path: string, version: string): Promise<number> {
    const ms = this.stats.remainingMs(path);
    if (ms <= 0) return 0;
    const current = await this.stats.get(path, () => this.client.stat('/' + path)).catch(() => undefined);
    return current?.version === version ? ms : 0;
  }

  /**
   * Forgets what is known of `path` and its directory's listing: a read found the file at
   * another version (SOURCE_CHANGED), so the next open asks again and gets the new one (ESTALE,
   * then a fresh lookup) instead of the dead version for the rest of the TTL (found by a fault
   * hunt: 100+ opens in a row of a growing file failed with EIO).
   */
  forget(path: string): void {
    this.stats.invalidate(path);
    const slash = path.lastIndexOf('/');
    this.lists.invalidate(slash === -1 ? '' : path.slice(0, slash));
  }

  /** One directory level; "" lists the cluster's mounts. */
  list(path: string): Promise<DirEntry[]> {
    return this.lists.get(path, async () => {
      const entries = mountable(await this.client.list('/' + path));
      const [mount, ...rest] = path.split('/');
      for (const entry of entries) {
        if (entry.type === 'file' && path !== '' && entry.version !== undefined && entry.size !== undefined && entry.mtimeMs !== undefined) {
          const inner = [...rest, entry.name].join('/');
          this.stats.set(`${path}/${entry.name}`, { mount: mount!, path: inner, size: entry.size, mtimeMs: entry.mtimeMs, version: entry.version });
        }
      }
      return entries;
    });
  }

  /**
   * Attributes of `name` in directory `parent`, or undefined if there is no such entry. Found
   * in the parent's listing; sources that cannot list (HTTP) are asked for the path itself.
   */
  async lookup(parent: string, name: string): Promise<Attributes | undefined> {
    const path = parent === '' ? name : `${parent}/${name}`;
    let entries: DirEntry[] | undefined;
    try {
      entries = await this.list(parent);
    } catch (err) {
      if (!isFanoutError(err, 'NOT_LISTABLE')) throw err;
    }
    if (entries) {
      const entry = entries.find((e) => e.name === name);
      if (!entry) return undefined;
      if (entry.type === 'dir') return { isDir: true, size: 0, mtimeMs: entry.mtimeMs ?? 0 };
    }
    return this.attributes(path);
  }

  /** Current attributes of a path known to exist (getattr). */
  async attributes(path: string): Promise<Attributes | undefined> {
    try {
      const file = await this.stat(path);
      return { isDir: false, size: file.size, mtimeMs: file.mtimeMs, version: file.version };
    } catch (err) {
      if (isFanoutError(err, 'IS_A_DIRECTORY')) return { isDir: true, size: 0, mtimeMs: 0 };
      if (isFanoutError(err, 'NOT_FOUND') || isFanoutError(err, 'UNKNOWN_MOUNT') || isFanoutError(err, 'INVALID_PATH')) return undefined;
      throw err;
    }
  }
}

/** The longest name a Linux directory entry holds (NAME_MAX), in bytes. */
const NAME_MAX = 255;

/**
 * The entries a directory of the mount can show: names of at most NAME_MAX bytes, each once (the
 * first). A longer name (an S3 key's segment may be 1,024 bytes) made the kernel refuse the whole
 * listing, so `ls` of the directory failed with EIO; a name listed twice showed twice, and a name
 * both a file and a directory answered a read with ENOTDIR (found by a fault hunt). Such files
 * stay readable with `fanout cat` and the S3 gateway.
 */
function mountable(entries: DirEntry[]): DirEntry[] {
  const seen = new Set<string>();
  return entries.filter((entry) => {
    if (seen.has(entry.name) || Buffer.byteLength(entry.name) > NAME_MAX) return false;
    seen.add(entry.name);
    return true;
  });
}
