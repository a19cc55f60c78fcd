import type { Clock } from '../core/clock.js';
import { FanoutError } from '../core/errors.js';
import type { PageRef } from '../core/types.js';
import { sha256 } from '../lib/checksum/index.js';
import type { Ufs } from '../lib/ufs/index.js';
import { parseManifest, RESERVED_PREFIX, sourcePathOf } from '../release/manifest.js';

/** The optional `h` query parameter of a page request: the page's SHA-256 (content addressing). */
export function contentHashParam(query: URLSearchParams): string | undefined {
  const hash = query.get('h');
  if (hash === null) return undefined;
  if (!/^[0-9a-f]{64}$/.test(hash)) throw new FanoutError('INVALID_ARGUMENT', 'query parameter "h" must be a SHA-256 in lowercase hex');
  return hash;
}

/**
 * A page filled from the source under a content key is stored only if its bytes really have
 * that hash: otherwise one bad request (or a source changed in place) would poison the page
 * for every file and version that shares it. `known` is the hash the source computed over these
 * bytes as it read them, when it could.
 */
export function contentMatches(ref: PageRef, data: Buffer, known?: string): boolean {
  if (ref.hash === undefined) return true;
  return (known ?? sha256(data).toString('hex')) === ref.hash;
}

/** Least time between two reloads of a mount's release manifests (misses wait for the next one). */
const RELOAD_MS = 1000;
/** Manifests larger than this are not release manifests this worker will hold in memory. */
const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

interface MountReleases {
  /** `${path}\0${sourceVersion}` → page hashes, from every manifest read so far. */
  pages: Map<string, string[]>;
  /** Manifest files already read, by `${path}\0${version}`: a reload reads only new ones. */
  seen: Set<string>;
  lastLoad: number;
  loading: Promise<void> | undefined;
}

/**
 * Which content hashes a worker accepts in `h=`: only the page hashes of published releases,
 * for the file, version and page index the manifest names. The manifests are read from the
 * mount's own `.fanout-releases/` (where `fanout release publish` writes them, next to the
 * etcd record that points at them), cached, and re-read at most once a second when a request
 * names a page not seen yet, so a release just published is accepted on its first request and
 * a flood of made-up hashes costs one listing a second. A manifest in the source that etcd
 * does not (or no longer) list is still accepted here: the check is that the hash belongs to
 * a release manifest of that file, not that the release is current.
 */
export class PublishedPages {
  private readonly mounts = new Map<string, MountReleases>();

  constructor(
    private readonly ufs: (mount: string) => Ufs,
    private readonly clock: Clock,
  ) {}

  /** Resolves if `ref.hash` is page `ref.index` of `ref.path` at `ref.version` in a published manifest. */
  async check(ref: PageRef): Promise<void> {
    if (ref.hash === undefined) return;
    const releases = this.releases(ref.mount);
    if (this.matches(releases, ref)) return;
    await this.reload(ref.mount, releases);
    if (this.matches(releases, ref)) return;
    throw new FanoutError('INVALID_ARGUMENT', `h= names no page of /${ref.mount}/${ref.path} in a published release manifest`);
  }

  private matches(releases: MountReleases, ref: PageRef): boolean {
    return releases.pages.get(`${ref.path}\0${ref.version}`)?.[ref.index] === ref.hash;
  }

  private releases(mount: string): MountReleases {
    let releases = this.mounts.get(mount);
    if (!releases) this.mounts.set(mount, (releases = { pages: new Map(), seen: new Set(), lastLoad: -Infinity, loading: undefined }));
    return releases;
  }

  /** One reload at a time per mount, starting no sooner than RELOAD_MS after the last one. */
  private reload(mount: string, releases: MountReleases): Promise<void> {
    releases.loading ??= (async () => {
      const wait = releases.lastLoad + RELOAD_MS - this.clock.now();
      if (wait > 0) await this.clock.sleep(wait);
      try {
        await this.load(mount, releases);
      } finally {
        releases.lastLoad = this.clock.now();
        releases.loading = undefined;
      }
    })();
    return releases.loading;
  }

  private async load(mount: string, releases: MountReleases): Promise<void> {
    const ufs = this.ufs(mount);
    const names = await ufs.list(RESERVED_PREFIX).catch((err: unknown) => {
      if (err instanceof FanoutError && (err.code === 'NOT_FOUND' || err.code === 'NOT_LISTABLE')) return [];
      throw err;
    });
    for (const name of names.filter((e) => e.type === 'dir')) {
      for (const entry of await ufs.list(`${RESERVED_PREFIX}/${name.name}`)) {
        if (entry.type !== 'file' || !entry.name.endsWith('.json')) continue;
        const path = `${RESERVED_PREFIX}/${name.name}/${entry.name}`;
        const info = await ufs.stat(path);
        const id = `${path}\0${info.version}`;
        if (releases.seen.has(id) || info.size > MAX_MANIFEST_BYTES) continue;
        const chunks: Buffer[] = [];
        for await (const chunk of ufs.read(path, info.version, 0, info.size) as AsyncIterable<Buffer>) chunks.push(chunk);
        try {
          const manifest = parseManifest(Buffer.concat(chunks));
          for (const file of manifest.files) releases.pages.set(`${sourcePathOf(manifest, file)}\0${file.sourceVersion}`, file.pages);
          releases.seen.add(id);
        } catch {
          releases.seen.add(id); // not a manifest (or a broken one): it names no pages
        }
      }
    }
  }
}
