import { readFile } from 'node:fs/promises';
import { FanoutError } from '../core/errors.js';
import type { ReleaseFetcher } from './fetch.js';
import type { ReleaseDir } from './install.js';
import { parseManifest, sha256Hex, type Manifest } from './manifest.js';
import type { VersionRecord } from './registry.js';

/**
 * Whether the version a host installed under a name is the one etcd now records under it. A
 * version is published once; but after etcd lost its data (restored from nothing, or from an older
 * snapshot) a name can be published again with another tree, and a host that compared names only
 * kept serving the old tree for good, reporting itself in sync (found by a fault hunt).
 *
 * The installed manifest (DIR/.manifests/V.json, the published bytes) is hashed, not the tree. A
 * digest that differs is not yet a conflict: the same files published again (another mount, a new
 * createdAt) are the same version. The answer is kept per (version, digest): idle rounds hash
 * nothing and fetch nothing.
 */
export class InstalledVersions {
  private known: { version: string; digest: string; conflict: FanoutError | undefined } | undefined;

  constructor(
    private readonly dir: ReleaseDir,
    private readonly fetcher: ReleaseFetcher,
  ) {}

  /** RELEASE_EXISTS if `record` names a version installed here with other files; nothing is changed. */
  async check(record: VersionRecord, signal?: AbortSignal): Promise<void> {
    const known = this.known;
    if (known?.version === record.version && known.digest === record.manifestSha256) {
      if (known.conflict) throw known.conflict;
      return;
    }
    const bytes = await readFile(this.dir.manifestFile(record.version)).catch(() => undefined);
    if (bytes === undefined) return; // not installed: staged from this record
    const installedDigest = sha256Hex(bytes);
    let conflict: FanoutError | undefined;
    if (installedDigest !== record.manifestSha256) {
      signal?.throwIfAborted();
      const published = await this.fetcher.manifest(record);
      if (!sameFiles(parseManifest(bytes), published)) conflict = reissued(record, installedDigest);
    }
    this.known = { version: record.version, digest: record.manifestSha256, conflict };
    if (conflict) throw conflict;
  }
}

function reissued(record: VersionRecord, installedDigest: string): FanoutError {
  return new FanoutError(
    'RELEASE_EXISTS',
    `${record.name}@${record.version} is published with manifest ${record.manifestSha256}, but this host installed ${record.version} with manifest ${installedDigest} ` +
      `and other files: the name was published again with another tree (etcd restored from nothing or from an older snapshot?). ` +
      `Nothing is switched or deleted here; publish the new tree under a new version name and promote that`,
  );
}

/** The same paths with the same contents (what a host serves), whatever the pages were read from. */
function sameFiles(a: Manifest, b: Manifest): boolean {
  if (a.files.length !== b.files.length) return false;
  const byPath = new Map(a.files.map((f) => [f.path, f]));
  return b.files.every((f) => {
    const mine = byPath.get(f.path);
    return mine !== undefined && mine.size === f.size && mine.sha256 === f.sha256;
  });
}
