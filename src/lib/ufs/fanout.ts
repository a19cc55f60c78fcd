import { Readable } from 'node:stream';
import { FanoutError, isFanoutError, type ErrorCode } from '../../core/errors.js';
import { pageSpan } from '../../core/pages.js';
import type { DirEntry, FileInfo, PageRef } from '../../core/types.js';
import { connectRemote, type RemoteCluster } from './fanout-client.js';
import type { SourceOptions, Ufs } from './types.js';

/** Where a fanout:// URI points: any of its workers, a mount of that cluster, a prefix inside it. */
export interface FanoutSourceAddress {
  endpoints: string[];
  mount: string;
  prefix: string;
}

/**
 * fanout://HOST:PORT[,HOST:PORT…]/MOUNT[/PREFIX], or fanouts:// for a remote that serves HTTPS.
 * More than one address lets the source survive a remote worker that is down.
 */
export function parseFanoutUri(uri: string): FanoutSourceAddress {
  const match = /^(fanouts?):\/\/([^/?#]+)\/([^/?#]+)(?:\/([^?#]*))?$/i.exec(uri);
  const fail = (why: string) => new FanoutError('INVALID_CONFIG', `invalid fanout source ${uri}: ${why} (use fanout://HOST:PORT[,HOST:PORT…]/MOUNT[/PREFIX])`);
  if (!match) throw fail('no mount named');
  const scheme = match[1]!.toLowerCase() === 'fanouts' ? 'https' : 'http';
  const endpoints = match[2]!.split(',').map((hostPort) => {
    if (!/^(\[[0-9a-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/i.test(hostPort)) throw fail(`"${hostPort}" is not HOST:PORT`);
    return `${scheme}://${hostPort}`;
  });
  let mount: string;
  let prefix: string;
  try {
    mount = decodeURIComponent(match[3]!);
    prefix = decodeURIComponent(match[4] ?? '').replace(/\/+$/, '');
  } catch (err) {
    throw new FanoutError('INVALID_CONFIG', `invalid fanout source ${uri}: malformed percent-encoding`, { cause: err });
  }
  if (prefix.split('/').some((s) => s === '.' || s === '..')) throw fail('"." and ".." are not allowed in the prefix');
  return { endpoints, mount, prefix };
}

/**
 * Codes a remote answer keeps: they mean the same for this cluster's readers (NOT_LISTABLE: an
 * HTTP origin behind the remote; INVALID_ARGUMENT: a request the remote refuses is refused here
 * too). Others become SOURCE_ERROR.
 */
const KEPT: ReadonlySet<ErrorCode> = new Set(['NOT_LISTABLE', 'INVALID_ARGUMENT', 'NOT_FOUND', 'NOT_A_DIRECTORY', 'IS_A_DIRECTORY', 'SOURCE_CHANGED', 'SOURCE_TRUNCATED', 'SOURCE_UNVERSIONED', 'INVALID_CONFIG']);

/** Sizes of file versions recently stat'ed, for range reads (which name a version, not its size). */
const KNOWN_SIZES = 4096;

/**
 * Another fanout cluster as the source of this one. Versions are the remote's (the same file has
 * the same version in both clusters), reads go through the remote's page protocol and are
 * checked against the remote's page checksums, and a page of a release (`h=`) is asked for by
 * its content hash, so a page shared by two releases crosses the line once. With equal page
 * sizes (refused otherwise at start: checkRemote) local page i is remote page i.
 */
export class FanoutUfs implements Ufs {
  readonly address: FanoutSourceAddress;
  private readonly remote: RemoteCluster;
  private readonly sizes = new Map<string, number>();
  private readonly label: string;
  private known: string[] = [];

  constructor(
    readonly uri: string,
    private readonly options: SourceOptions = {},
    remote?: RemoteCluster,
  ) {
    this.address = parseFanoutUri(uri);
    this.label = options.label ?? uri;
    this.remote = remote ?? connectRemote(this.address.endpoints, options.cluster ?? {}, options.deadlines ?? {});
  }

  /**
   * Refuses a remote that is this cluster (directly or down a chain of fanout sources), lacks the
   * mount, or uses another page size (INVALID_CONFIG). Returns the clusters this source reads
   * through, for this cluster's own /v1/cluster. Unreachable: WORKER_UNAVAILABLE, for the caller to judge.
   */
  async checkRemote(force = true): Promise<string[]> {
    const info = await this.remote.info(force);
    const chain = this.chainOf(info);
    if (!info.mounts.includes(this.address.mount)) {
      throw new FanoutError('INVALID_CONFIG', `source ${this.uri} of ${this.label}: the remote cluster has no mount "${this.address.mount}" (it has: ${info.mounts.join(', ') || 'none'})`);
    }
    const local = this.options.cluster?.pageSize;
    if (local !== undefined && info.pageSize !== local) {
      throw new FanoutError('INVALID_CONFIG', `source ${this.uri} of ${this.label}: the remote cluster's page size is ${info.pageSize} bytes, this cluster's ${local}; set pageSize to ${info.pageSize} so that each page crosses whole and checked`);
    }
    return chain;
  }

  /**
   * The clusters behind this source as last seen (empty until the remote answered): never waits
   * for the remote, so this cluster's own /v1/cluster answers while the remote is down.
   */
  upstream(): string[] {
    return this.known;
  }

  /** The remote and the clusters it reads through; INVALID_CONFIG if this cluster is among them. */
  private chainOf(info: { clusterId?: string; upstream?: string[] }): string[] {
    const self = this.options.cluster?.clusterId;
    const chain = [...(info.clusterId ? [info.clusterId] : []), ...(info.upstream ?? [])];
    this.known = chain;
    if (self !== undefined && chain.includes(self)) {
      const how = info.clusterId === self ? 'it is this cluster' : 'it reads this cluster through its own sources';
      throw new FanoutError('INVALID_CONFIG', `source ${this.uri} of ${this.label} is a loop: ${how} (cluster id ${self})`);
    }
    return chain;
  }

  async stat(path: string): Promise<FileInfo> {
    await this.guardLoop(path);
    const info = await this.call(() => this.remote.stat(this.remotePath(path)), path);
    this.remember(path, info.version, info.size);
    return { path, size: info.size, mtimeMs: info.mtimeMs, version: info.version };
  }

  async list(dir: string): Promise<DirEntry[]> {
    await this.guardLoop(dir);
    const entries = await this.call(() => this.remote.list(this.remotePath(dir)), dir);
    return entries.map(({ name, type, size, mtimeMs, version }) => ({ name, type, size, mtimeMs, version }));
  }

  read(path: string, version: string, offset: number, length: number, signal?: AbortSignal): Readable {
    return Readable.from(this.rangeChunks(path, version, offset, length, signal), { objectMode: false });
  }

  async *readPage(ref: PageRef, pageSize: number, signal?: AbortSignal): AsyncIterable<Buffer> {
    const info = await this.call(() => this.remote.info(), ref.path);
    if (info.pageSize === pageSize) {
      await this.guardLoop(ref.path);
      this.remember(ref.path, ref.version, ref.size);
      const page = await this.page(ref.path, ref.version, ref.size, ref.index, ref.hash, pageSize, signal).catch((err: unknown) => this.refusedForPageSize(err, ref.path, pageSize));
      if (page) {
        yield* page;
        return;
      }
    }
    // Refused at start; a remote whose page size changed since is still read correctly, by range.
    const { start, end } = pageSpan(ref.index, ref.size, pageSize);
    yield* this.rangeChunks(ref.path, ref.version, start, end - start, signal);
  }

  async close(): Promise<void> {
    await this.remote.close();
  }

  /** Bytes [offset, offset+length) from the remote pages that hold them, each page checked whole. */
  private async *rangeChunks(path: string, version: string, offset: number, length: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
    const size = await this.sizeOf(path, version);
    let { pageSize } = await this.call(() => this.remote.info(), path);
    await this.guardLoop(path);
    if (offset + length > size) throw new FanoutError('SOURCE_TRUNCATED', `${this.label}/${path} has ${size} bytes at version ${version}, ${offset + length} asked for`);
    let at = offset;
    while (at < offset + length) {
      const index = Math.floor(at / pageSize);
      const pageStart = index * pageSize;
      let skip = at - pageStart;
      const want = Math.min(offset + length, pageStart + pageSize) - at;
      let left = want;
      const page = await this.page(path, version, size, index, undefined, pageSize, signal).catch((err: unknown) => this.refusedForPageSize(err, path, pageSize));
      if (!page) {
        // The remote's page size changed: the range goes on from `at` in its new pages.
        pageSize = (await this.call(() => this.remote.info(), path)).pageSize;
        continue;
      }
      for (const chunk of page) {
        if (skip >= chunk.length) {
          skip -= chunk.length;
          continue;
        }
        const piece = chunk.subarray(skip, Math.min(chunk.length, skip + left));
        skip = 0;
        left -= piece.length;
        if (piece.length > 0) yield piece;
        if (left === 0) break;
      }
      at += want;
    }
  }

  private page(path: string, version: string, size: number, index: number, hash: string | undefined, pageSize: number, signal?: AbortSignal): Promise<Buffer[]> {
    const file = { path: this.remoteFilePath(path), version, size, mtimeMs: 0 };
    return this.call(() => this.remote.page(this.address.mount, file, index, hash, pageSize, signal), path, signal);
  }

  /**
   * A page asked for in `pageSize` failed with `err`. Resolves (undefined) when the remote refused
   * it for its page size and its facts, asked now, give another one (its workers restarted with
   * another pageSize): the caller reads on in the new size. Rethrows `err` otherwise.
   */
  private async refusedForPageSize(err: unknown, path: string, pageSize: number): Promise<undefined> {
    const cause = err instanceof FanoutError && err.code === 'SOURCE_ERROR' ? (err as { cause?: unknown }).cause : err;
    if (!isFanoutError(cause, 'PAGE_SIZE_MISMATCH')) throw err;
    const info = await this.call(() => this.remote.info(true), path);
    if (info.pageSize === pageSize) throw err;
    return undefined;
  }

  /** A loop that closed after start (a remote re-configured) fails reads instead of circling. */
  private async guardLoop(path: string): Promise<void> {
    await this.call(async () => this.chainOf(await this.remote.info()), path);
  }

  /** The size of a version: from a recent stat, else asked now (another version now: SOURCE_CHANGED). */
  private async sizeOf(path: string, version: string): Promise<number> {
    const known = this.sizes.get(`${path}\0${version}`);
    if (known !== undefined) return known;
    const info = await this.stat(path);
    if (info.version !== version) throw new FanoutError('SOURCE_CHANGED', `${this.label}/${path} changed at its source (version ${version} is gone)`);
    return info.size;
  }

  private remember(path: string, version: string, size: number): void {
    const key = `${path}\0${version}`;
    this.sizes.delete(key);
    this.sizes.set(key, size);
    if (this.sizes.size > KNOWN_SIZES) this.sizes.delete(this.sizes.keys().next().value!);
  }

  /** "/MOUNT/PREFIX/PATH" in the remote cluster. */
  private remotePath(path: string): string {
    return `/${this.address.mount}/${this.remoteFilePath(path)}`;
  }

  private remoteFilePath(path: string): string {
    return [this.address.prefix, path].filter((s) => s !== '').join('/');
  }

  /** Translates the remote's answers into source errors at this edge (see KEPT). */
  private async call<T>(op: () => Promise<T>, path: string, signal?: AbortSignal): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (signal?.aborted) throw new FanoutError('ABORTED', 'source read aborted', { cause: err });
      if (err instanceof FanoutError && KEPT.has(err.code)) throw err;
      const message = err instanceof Error ? err.message : String(err);
      throw new FanoutError('SOURCE_ERROR', `reading ${this.label}/${path} from the remote cluster ${this.uri} failed: ${message}`, { cause: err });
    }
  }
}
