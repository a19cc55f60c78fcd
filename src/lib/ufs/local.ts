import { constants, existsSync, type BigIntStats, type Dirent, type Stats } from 'node:fs';
import { link, mkdir, open, readdir, readlink, realpath, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { FanoutError, abortError, outOfDescriptors } from '../../core/errors.js';
import type { DirEntry, FileInfo } from '../../core/types.js';
import { iterableBody, sourceStream, type SourceBody } from './stream.js';
import { LOCAL_CHUNK, localChunks } from './chunks.js';
import { raceDeadline, resolveDeadlines } from './deadlines.js';
import type { ListOptions, SkippedEntry, SourceDeadlines, SourceOptions, Ufs } from './types.js';
import { printableName, withoutUndecodable } from './localnames.js';
import { writeNewSynced } from '../statefile/index.js';
import { changed, checkPath, checkRange, isAbortLike, sizeMtimeVersion } from './util.js';
import { readInsideRoot } from './localsmall.js';
import { sourceFsGate, TurnBatches, type FsGate } from './fsgate.js';
import { smallIo, WORKS_PER_TURN } from '../smallio/index.js';
import { TtlCache } from '../ttlcache/index.js';
import { monotonicClock, type Clock } from '../../core/clock.js';

/** 1 MiB reads: the default 64 KiB halves throughput when piped to HTTP (measured here). */
/** stat() calls in flight while listing a directory: enough to hide latency of a network fs. */
const LIST_CONCURRENCY = 32;
/** How long a directory's (dev, ino) is reused by the loop checks: half the worker's default stat TTL. */
const DIR_KEY_TTL_MS = 1000;
/**
 * Where the real path of an open file can be read (Linux): a page read locates the file first
 * and checks where it landed, one readlink instead of realpath()'s readlink per path component
 * (the largest single cost in the worker's profile of 2,000 small files).
 */
const FD_PATHS = existsSync('/proc/self/fd') ? '/proc/self/fd' : undefined;
/** Never blocks on a FIFO or takes a terminal, whatever a path inside the source points to. */
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY;
/** Linux's O_PATH (Node does not export it): an fd naming a file without opening it. */
const O_PATH = 0o10000000;

export function localVersion(st: Stats): string {
  return sizeMtimeVersion(st.size, st.mtimeMs);
}

/**
 * A directory on a local or shared (NFS, CephFS...) filesystem. Symlinks inside the root are
 * followed, but nothing outside the root's real path is ever read or listed.
 *
 * Its keys are what `find -L` prints from the root: a directory met again on the way down (the
 * same st_dev and st_ino as one above it, whether a symlink or a bind mount leads back) closes a
 * loop and is left out, and so is every path through it. stat() and list() of such a path answer
 * NOT_FOUND, as for any other name that is no key: an S3 client that GETs or lists a key it was
 * never shown gets what a bucket would say, and a file is not cached once more for each turn
 * round the loop (a/x/y/x/y/… gives ~2^40 names before the kernel's 40 links). read() takes a
 * version, which stat() or a listing gave, and does not look again.
 */
export class LocalUfs implements Ufs {
  readonly rootDir: string;
  private realRoot: Promise<string> | null = null;
  /**
   * Keys of directories on the way down, kept DIR_KEY_TTL_MS: every stat() of a file below the
   * root checks the directories above it (a sync's page requests each stat their file). Asked
   * anew each time, 20,000 uncached stat() of files 2 deep, 16 at a time, took 3.98 s of CPU
   * against 2.48 s before the check (median of 5); kept, 2.32 s against 2.30 s. A loop made
   * within that time may be missed for as long, as the worker's stat cache keeps an old answer;
   * a loop is only ever reported on fresh keys (goesRound).
   */
  private readonly dirKeys: TtlCache<string>;
  private readonly label: string | undefined;
  private readonly deadlines: SourceDeadlines;
  /** This source's share of the thread pool (fsgate.ts): a hung file system here leaves threads to the others. */
  private readonly calls: FsGate = sourceFsGate.child();
  /** Small whole reads in one thread-pool job (localsmall.ts), where the addon and /proc are there. */
  readonly readInto?: (path: string, version: string, size: number, offset: number, into: Buffer, signal?: AbortSignal, options?: { sha256?: boolean }) => Promise<string | undefined>;

  /** `source.label`: the mount path errors name instead of the server's directory; `clock` times the kept directory keys. */
  constructor(rootDir: string, source: SourceOptions & { clock?: Clock } = {}) {
    this.rootDir = resolve(rootDir);
    this.dirKeys = new TtlCache<string>(DIR_KEY_TTL_MS, source.clock ?? monotonicClock, 10_000);
    this.label = source.label?.replace(/\/+$/, '');
    this.deadlines = resolveDeadlines(source.deadlines);
    const io = FD_PATHS ? smallIo() : undefined;
    if (io) {
      const calls = new TurnBatches(this.calls, WORKS_PER_TURN);
      this.readInto = async (path, version, size, offset, into, signal, options) => {
        checkPath(path);
        const root = await this.root();
        const what = this.describe(path);
        return readInsideRoot(io, { path: path ? join(root, path) : root, realRoot: root, what, version, size, offset, into, signal, deadlineMs: this.deadlines.firstByteMs, sha256: options?.sha256, calls });
      };
    }
  }

  async stat(path: string, signal?: AbortSignal): Promise<FileInfo> {
    if (signal?.aborted) throw abortError(signal);
    // A hung network file system cannot be cancelled, but the caller is answered (SOURCE_ERROR).
    return this.calls.run(this.describe(path), this.deadlines.firstByteMs, signal, () => this.statNow(path));
  }

  private async statNow(path: string): Promise<FileInfo> {
    const real = await this.resolve(path);
    const st = await stat(real).catch((err) => {
      throw mapFsError(err, this.describe(path));
    });
    // A file right below the root has no directory to meet twice.
    if (path.includes('/') || (path !== '' && st.isDirectory())) {
      let loops: boolean;
      try {
        loops = await this.goesRound(parentOf(path), st.isDirectory() ? await dirKey(real, st) : undefined);
      } catch (err) {
        throw mapFsError(err, this.describe(path));
      }
      if (loops) throw roundLoop(this.describe(path));
    }
    if (st.isDirectory()) throw new FanoutError('IS_A_DIRECTORY', `${this.describe(path)} is a directory`);
    if (!st.isFile()) throw new FanoutError('NOT_FOUND', `${this.describe(path)} is not a regular file`);
    return { path, size: st.size, mtimeMs: Math.floor(st.mtimeMs), version: localVersion(st) };
  }

  async list(dir: string, signal?: AbortSignal, options?: ListOptions): Promise<DirEntry[]> {
    if (signal?.aborted) throw abortError(signal);
    // Each call through the source's threads (fsgate.ts), the whole within one deadline.
    const what = this.describe(dir);
    const ms = this.deadlines.firstByteMs;
    const skipped = options?.onSkipped ?? (() => {});
    return raceDeadline(this.listNow(dir, (call) => this.calls.run(what, ms, signal, call), skipped, signal), ms, what, signal);
  }

  private async listNow(dir: string, gated: <T>(call: () => Promise<T>) => Promise<T>, skipped: (entry: SkippedEntry) => void, signal?: AbortSignal): Promise<DirEntry[]> {
    const { real, dirents, chain, undecodable } = await gated(async () => {
      const real = await this.resolve(dir);
      // The keys of the directories on the way down, beside the readdir: a bind mount leads back
      // without a link, so no cheaper sign says when a loop is possible. Entries' keys come from
      // the stats that give their times.
      const [named, chain] = await Promise.all([readdir(real, { withFileTypes: true }).then((all) => withoutUndecodable(real, all)), this.dirChain(dir)]).catch((err) => {
        throw mapFsError(err, this.describe(dir));
      });
      return { real, chain, ...named };
    });
    for (const name of undecodable) skipped({ name: printableName(name), reason: 'not-utf8' });
    // A repeat among kept keys is confirmed with fresh ones (goesRound's rule) before the listing is refused.
    if (repeats(chain)) {
      const fresh = await this.dirChain(dir, true).catch((err) => {
        throw mapFsError(err, this.describe(dir));
      });
      if (repeats(fresh)) throw roundLoop(this.describe(dir));
    }
    const entries: DirEntry[] = [];
    const keys = new Set(chain);
    // A match with a kept key is confirmed with fresh ones (goesRound), once per listing.
    let fresh: Promise<Set<string>> | undefined;
    const loops = { onChain: async (key: string) => keys.has(key) && (await (fresh ??= this.dirChain(dir, true).then((c) => new Set(c)))).has(key) };
    let next = 0;
    const worker = async () => {
      while (next < dirents.length) {
        if (signal?.aborted) throw abortError(signal);
        const dirent = dirents[next++]!;
        const entry = await gated(() => this.entry(real, dirent, loops, skipped));
        if (entry) entries.push(entry);
      }
    };
    await Promise.all(Array.from({ length: Math.min(LIST_CONCURRENCY, dirents.length) }, worker));
    // Code-point order, not localeCompare: every host must sort the same way.
    return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  read(path: string, version: string, offset: number, length: number, signal?: AbortSignal): Readable {
    const what = this.describe(path);
    return sourceStream({
      expected: length,
      what,
      signal,
      mapError: (err) => mapFsError(err, what),
      // A hung network file system (NFS, CephFS) cannot be cancelled, but the read fails (its thread stays taken until the file system answers: fsgate.ts).
      firstByteMs: this.deadlines.firstByteMs,
      idleMs: this.deadlines.idleMs,
      open: async (opening) => {
        checkRange(offset, length);
        // A slot of the source's threads for the read's whole life (opened, read, closed).
        const release = await this.calls.acquire(what, this.deadlines.firstByteMs, opening);
        let handle: FileHandle;
        try {
          handle = await this.openInside(path);
        } catch (err) {
          release();
          throw err;
        }
        try {
          // The version is checked on the open fd, so the bytes below are of that very file.
          const st = await handle.stat();
          if (st.isDirectory()) throw new FanoutError('IS_A_DIRECTORY', `${what} is a directory`);
          if (!st.isFile()) throw new FanoutError('NOT_FOUND', `${what} is not a regular file`);
          if (localVersion(st) !== version) throw changed(what, version, localVersion(st));
          if (length > 0 && offset >= st.size) {
            throw new FanoutError('RANGE_NOT_SATISFIABLE', `${what}: offset ${offset} is past its ${st.size} bytes`);
          }
        } catch (err) {
          await handle.close().finally(release);
          throw err;
        }
        const body = length === 0 ? null : readLent(handle, offset, length);
        return {
          body,
          // A file rewritten in place keeps its fd: only a second fstat after the last byte
          // tells that the bytes read may mix two versions.
          finish: async () => {
            const now = localVersion(await handle.stat());
            if (now !== version) throw changed(`${what} (modified while being read)`, version, now);
          },
          close: () => handle.close().finally(release),
        };
      },
    });
  }

  /** Temp file beside the target, then link(): atomic, and fails with EEXIST if the name is taken. */
  async writeExclusive(path: string, data: Buffer, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) throw abortError(signal);
    checkPath(path);
    if (path === '') throw new FanoutError('IS_A_DIRECTORY', 'cannot write the source root');
    const root = await this.root();
    const target = join(root, path);
    const tmp = join(dirname(target), `.${process.pid}.${Date.now()}.${Math.random().toString(36).slice(2)}.tmp`);
    try {
      await mkdir(dirname(target), { recursive: true });
      if (!isInside(root, await realpath(dirname(target)))) throw new FanoutError('INVALID_PATH', `${this.describe(path)} resolves outside the source root`);
      await writeNewSynced(tmp, data);
      await link(tmp, target);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new FanoutError('ALREADY_EXISTS', `${this.describe(path)} already exists`);
      throw mapFsError(err, this.describe(path));
    } finally {
      await unlink(tmp).catch(() => {});
    }
  }

  private describe(path: string): string {
    return this.label !== undefined ? `${this.label}/${path}` : `file ${join(this.rootDir, path)}`;
  }

  private root(): Promise<string> {
    // Resolved once: a root that is itself a symlink (a release "current" link) is pinned to the
    // target it had when first used, like an open directory would be. Failures are retried.
    this.realRoot ??= realpath(this.rootDir).catch((err) => {
      this.realRoot = null;
      throw mapFsError(err, this.label !== undefined ? `the source of ${this.label}` : `source root ${this.rootDir}`);
    });
    return this.realRoot;
  }

  /**
   * Opens `path` for reading, following symlinks only as far as the real root. With /proc (Linux),
   * the path is first opened with O_PATH, which opens nothing (no device or FIFO is touched), the
   * real path of that fd is checked, and the file is then opened through the fd itself: nothing
   * can be swapped between the check and the read, and nothing outside the root is ever opened.
   * Without /proc, the path is resolved first and opened with O_NOFOLLOW.
   */
  private async openInside(path: string): Promise<FileHandle> {
    if (!FD_PATHS) return open(await this.resolve(path), constants.O_RDONLY | constants.O_NOFOLLOW);
    checkPath(path);
    const root = await this.root();
    const located = await open(path ? join(root, path) : root, O_PATH).catch((err) => {
      throw mapFsError(err, this.describe(path));
    });
    try {
      const real = await readlink(`${FD_PATHS}/${located.fd}`);
      if (!isInside(root, real)) throw new FanoutError('INVALID_PATH', `${this.describe(path)} resolves outside the source root`);
      return await open(`${FD_PATHS}/${located.fd}`, OPEN_FLAGS);
    } catch (err) {
      throw mapFsError(err, this.describe(path));
    } finally {
      await located.close();
    }
  }

  /** The real path of `path`, which must lie inside the real root. */
  private async resolve(path: string): Promise<string> {
    checkPath(path);
    const root = await this.root();
    const real = await realpath(path ? join(root, path) : root).catch((err) => {
      throw mapFsError(err, this.describe(path));
    });
    if (!isInside(root, real)) {
      throw new FanoutError('INVALID_PATH', `${this.describe(path)} resolves outside the source root`);
    }
    return real;
  }

  /**
   * Whether the directories from the root down to `dir`, and `own` (the key of a directory right
   * below it) if given, pass one directory twice. Only fresh keys say yes: a kept one may name an
   * inode freed and given to another directory since.
   */
  private async goesRound(dir: string, own?: string): Promise<boolean> {
    const round = (chain: string[]) => repeats(chain) || (own !== undefined && chain.includes(own));
    return round(await this.dirChain(dir)) && round(await this.dirChain(dir, true));
  }

  /** The keys of the (real) root, of `dir` and of every directory between them, in parallel: where a walk down to `dir` has been. */
  private async dirChain(dir: string, fresh = false): Promise<string[]> {
    const root = await this.root();
    const parts = dir ? dir.split('/') : [];
    const paths = [root, ...parts.map((_, i) => join(root, ...parts.slice(0, i + 1)))];
    const load = (p: string) => stat(p).then((st) => dirKey(p, st));
    if (!fresh) return Promise.all(paths.map((p) => this.dirKeys.get(p, () => load(p))));
    const keys = await Promise.all(paths.map(load));
    paths.forEach((p, i) => this.dirKeys.set(p, keys[i]!));
    return keys;
  }

  /**
   * One listing entry; null for what stat() would refuse (escaping or broken links, devices),
   * told to `skipped`, and for loops and names deleted meanwhile, which are not.
   */
  private async entry(dirReal: string, dirent: Dirent, loops: { onChain(key: string): Promise<boolean> }, skipped: (entry: SkippedEntry) => void): Promise<DirEntry | null> {
    const name = dirent.name;
    const skip = (reason: SkippedEntry['reason']) => (skipped({ name, reason }), null);
    if (!dirent.isDirectory() && !dirent.isFile() && !dirent.isSymbolicLink()) return skip('special-file');
    let target = join(dirReal, name);
    try {
      if (dirent.isSymbolicLink()) {
        target = await realpath(target);
        if (!isInside(await this.root(), target)) return skip('link-outside');
      }
      const st = await stat(target);
      if (st.isDirectory()) {
        // As find -L: a directory already on the way down here (same dev and ino) is a loop ("a/x ->
        // ../b" beside "b/y -> ../a", a link to the directory itself, a bind mount of a directory
        // above): entered, every recursive walk (the S3 gateway's listing, cp) would list its tree
        // again at each turn. Left out, as are the paths through it (class comment). The stat
        // above gives the key: no call of its own unless the number may be rounded.
        if (await loops.onChain(await dirKey(target, st))) return null;
        // Its time is what S3 clients show for its marker "dir/" (s3fs's ls -l), one stat per directory.
        return { name, type: 'dir', mtimeMs: Math.floor(st.mtimeMs) };
      }
      if (!st.isFile()) return skip('special-file');
      return { name, type: 'file', size: st.size, mtimeMs: Math.floor(st.mtimeMs), version: localVersion(st) };
    } catch (err) {
      // Deleted between readdir and stat, or a dangling link: not part of the listing.
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR') return dirent.isSymbolicLink() ? skip('dangling-link') : null;
      throw mapFsError(err, this.label !== undefined ? `${this.label}/${target.slice(this.rootDir.length + 1)}` : `file ${target}`);
    }
  }
}

/**
 * A directory's (st_dev, st_ino), what find -L and GNU tools tell a directory by (a bind mount
 * gives one directory several real paths). Taken from `st` when its numbers are exact, else from
 * a bigint stat (inode numbers above 2^53: CephFS, some NFS servers).
 */
async function dirKey(path: string, st?: Stats): Promise<string> {
  if (st && Number.isSafeInteger(st.dev) && Number.isSafeInteger(st.ino)) return `${st.dev}:${st.ino}`;
  const exact: BigIntStats = await stat(path, { bigint: true });
  return `${exact.dev}:${exact.ino}`;
}

function repeats(chain: string[]): boolean {
  return new Set(chain).size !== chain.length;
}

/** A path that passes one directory twice: no key (class comment), as a name that is not there. */
function roundLoop(what: string): FanoutError {
  return new FanoutError('NOT_FOUND', `${what} does not exist: its path goes round a directory loop`);
}

function parentOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

function isInside(root: string, real: string): boolean {
  return real === root || real.startsWith(root.endsWith(sep) ? root : root + sep);
}

export function mapFsError(err: unknown, what: string): FanoutError {
  if (err instanceof FanoutError) return err;
  if (isAbortLike(err)) return new FanoutError('ABORTED', `${what}: aborted`, { cause: err });
  const code = (err as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ENOENT':
      return new FanoutError('NOT_FOUND', `${what} does not exist`, { cause: err });
    case 'EISDIR':
      return new FanoutError('IS_A_DIRECTORY', `${what} is a directory`, { cause: err });
    case 'ENOTDIR':
      return new FanoutError('NOT_A_DIRECTORY', `${what}: not a directory`, { cause: err });
    case 'ELOOP':
      return new FanoutError('INVALID_PATH', `${what}: too many symlinks or a symlink where none is allowed`, {
        cause: err,
      });
    case 'ENAMETOOLONG':
      // A name no file on this filesystem can have is the client's error, not the source's
      // (as a 5xx, S3 clients would retry it as ServiceUnavailable).
      return new FanoutError('INVALID_PATH', `${what}: a name in the path is too long`, { cause: err });
    case 'EACCES':
    case 'EPERM':
      return new FanoutError('SOURCE_ERROR', `${what}: permission denied`, { cause: err });
    case 'EMFILE':
    case 'ENFILE':
      // The worker's fd limit, not the source: no reason to fail the read as the source's.
      return outOfDescriptors(err, what)!;
    default:
      // The code, not the message: fs messages carry the server's real path.
      return new FanoutError('SOURCE_ERROR', `${what}: ${code ?? 'read failed'}`, { cause: err });
  }
}

/**
 * `length` bytes of the open file from `offset`, read 1 MiB at a time into buffers lent by
 * localChunks (a fill gives each back once copied): no fresh memory per read, where a read
 * stream allocates 1 MiB per read. Ends early at EOF (SourceStream reports the truncation); the
 * caller closes the handle.
 */
function readLent(handle: FileHandle, offset: number, length: number): SourceBody {
  let stopped = false;
  async function* chunks(): AsyncGenerator<Buffer> {
    let at = 0;
    while (at < length && !stopped) {
      const buffer = localChunks.take();
      let bytesRead: number;
      try {
        ({ bytesRead } = await handle.read(buffer, 0, Math.min(LOCAL_CHUNK, length - at), offset + at));
      } catch (err) {
        localChunks.putBack(buffer);
        throw err;
      }
      if (bytesRead === 0) {
        localChunks.putBack(buffer);
        return;
      }
      at += bytesRead;
      yield localChunks.lend(buffer, bytesRead);
    }
  }
  return iterableBody(chunks(), () => (stopped = true));
}
