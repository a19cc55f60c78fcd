import { FanoutError, isFanoutError } from '../core/errors.js';
import type { Ufs } from '../lib/ufs/index.js';
import {
  RESERVED_PREFIX,
  checkReleaseName,
  checkVersion,
  manifestLocation,
  manifestTotals,
  parseManifest,
  serializeManifest,
  sha256Hex,
  type Manifest,
} from './manifest.js';
import { hashFiles } from './publishhash.js';
import { unpublishableError, walkTree } from './publishwalk.js';
import type { ReleaseRegistry, VersionRecord } from './registry.js';

export interface PublishOptions {
  name: string;
  version?: string;
  mount: string;
  /** Directory inside the mount ("" = its root). */
  prefix: string;
  pageSize: number;
  /** The mount's source, opened directly: publishing hashes every byte once and writes the manifest. */
  ufs: Ufs;
  registry: ReleaseRegistry;
  /** Files streamed and hashed in parallel (small files have their own, larger number). */
  concurrency?: number;
  onProgress?: (done: { files: number; bytes: number; totalFiles: number; totalBytes: number }) => void;
  signal?: AbortSignal;
}

/**
 * Publishes a release: lists every file under the prefix, refuses the tree if the listing left
 * out anything a release would then silently lack (UNPUBLISHABLE_ENTRIES), hashes each file (per
 * page and whole) at the version it is at, stores the manifest in the source under the reserved
 * prefix (an exclusive create: never overwritten), then indexes it in etcd. Either step finding
 * the version already there fails with RELEASE_EXISTS; a manifest left in the source by a
 * publish that died before indexing is adopted if it describes the same bytes.
 */
export async function publishRelease(opts: PublishOptions): Promise<VersionRecord> {
  checkReleaseName(opts.name);
  const version = opts.version ?? defaultVersion();
  checkVersion(version);
  const prefix = opts.prefix.replace(/^\/+|\/+$/g, '');
  if (prefix === RESERVED_PREFIX || prefix.startsWith(`${RESERVED_PREFIX}/`)) {
    throw new FanoutError('INVALID_ARGUMENT', `${RESERVED_PREFIX}/ holds manifests and cannot be published`);
  }
  if (!opts.ufs.writeExclusive) throw new FanoutError('INVALID_ARGUMENT', `the source of mount ${opts.mount} is read-only (HTTP): manifests cannot be stored there`);
  await opts.registry.getVersion(opts.name, version).then(
    () => {
      throw new FanoutError('RELEASE_EXISTS', `release ${opts.name} version ${version} is already published`);
    },
    (err) => {
      if (!isFanoutError(err, 'RELEASE_NOT_FOUND')) throw err;
    },
  );

  const { files: infos, unpublishable } = await walkTree(opts.ufs, prefix, opts.signal);
  if (unpublishable.length > 0) throw unpublishableError(`/${opts.mount}`, prefix, unpublishable);
  if (infos.length === 0) throw new FanoutError('NOT_FOUND', `no files under /${opts.mount}/${prefix}`);
  const totalBytes = infos.reduce((sum, f) => sum + f.size, 0);
  let doneFiles = 0;
  let doneBytes = 0;
  const hashes = await hashFiles(opts.ufs, infos, {
    pageSize: opts.pageSize,
    concurrency: opts.concurrency,
    signal: opts.signal,
    onFile: (info) => {
      doneFiles++;
      doneBytes += info.size;
      opts.onProgress?.({ files: doneFiles, bytes: doneBytes, totalFiles: infos.length, totalBytes });
    },
  });
  const files = infos.map((info, i) => ({
    path: prefix ? info.path.slice(prefix.length + 1) : info.path,
    size: hashes[i]!.size,
    sourceVersion: info.version,
    sha256: hashes[i]!.sha256,
    pages: hashes[i]!.pages,
  }));

  const manifest: Manifest = {
    schema: 1,
    name: opts.name,
    version,
    createdAt: new Date().toISOString(),
    mount: opts.mount,
    prefix,
    pageSize: opts.pageSize,
    files,
  };
  let bytes = serializeManifest(manifest);
  parseManifest(bytes); // never store what a reader would refuse
  const location = manifestLocation(opts.name, version);
  try {
    await opts.ufs.writeExclusive(location, bytes, opts.signal);
  } catch (err) {
    if (!isFanoutError(err, 'ALREADY_EXISTS')) throw err;
    bytes = await adoptExisting(opts.ufs, location, manifest);
  }
  const stored = parseManifest(bytes);
  const totals = manifestTotals(stored);
  const record: VersionRecord = {
    name: opts.name,
    version,
    mount: opts.mount,
    prefix,
    manifest: location,
    manifestSha256: sha256Hex(bytes),
    pageSize: opts.pageSize,
    files: totals.files,
    bytes: totals.bytes,
    pages: totals.pages,
    uniquePages: totals.uniquePages,
    createdAt: stored.createdAt,
  };
  await opts.registry.createVersion(record);
  return record;
}

/** A manifest already in the source: fine only if it describes exactly the files just hashed. */
async function adoptExisting(ufs: Ufs, location: string, fresh: Manifest): Promise<Buffer> {
  const info = await ufs.stat(location);
  const chunks: Buffer[] = [];
  for await (const chunk of ufs.read(location, info.version, 0, info.size) as AsyncIterable<Buffer>) chunks.push(chunk);
  const bytes = Buffer.concat(chunks);
  let existing: Manifest;
  try {
    existing = parseManifest(bytes);
  } catch {
    throw new FanoutError('RELEASE_EXISTS', `a different manifest is already stored at ${location}`);
  }
  const same = serializeManifest({ ...existing, createdAt: '' }).equals(serializeManifest({ ...fresh, createdAt: '' }));
  if (!same) throw new FanoutError('RELEASE_EXISTS', `release ${fresh.name} version ${fresh.version} already has a different manifest in the source (${location})`);
  return bytes;
}

function defaultVersion(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}
