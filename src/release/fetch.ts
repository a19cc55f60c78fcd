import type { BatchPageReader, ClusterInfo, FanoutClient } from '../client/index.js';
import { FanoutError, isFanoutError } from '../core/errors.js';
import type { ClusterReader } from '../lib/cluster/index.js';
import { checkManifestSize, parseManifest, sourcePathOf, type Manifest, type ManifestFile } from './manifest.js';
import type { VersionRecord } from './registry.js';
import { sha256Of } from './stagepages.js';

/** Connections per worker for release pages (the stager's files in flight). */
const RELEASE_CONNECTIONS = 32;

/**
 * Reads release data through the cluster. Pages are asked for by content hash (`h=`), so they
 * are placed and cached by content: a page that two versions share is one page in the cluster,
 * fetched from the source once. Every page is checked against its SHA-256 before it is used.
 */
export class ReleaseFetcher {
  /** The cluster answer last asked for afresh because a manifest's page size was not its. */
  private checkedAnswer: ClusterInfo | undefined;
  /**
   * Over the client's session: its members, ring, pools and worker health, not a second set of
   * them. One per page size of the manifests read: a daemon outlives a change of the cluster's
   * pageSize, and the next release is published in the new one.
   */
  private readonly readers = new Map<number, { reader: ClusterReader; batches: BatchPageReader | undefined }>();

  /** `batches: false` reads every page by its own request (/v1/page), as before batches existed. */
  constructor(
    readonly client: FanoutClient,
    private readonly useBatches = true,
  ) {
    // Staging keeps dozens of small files in flight: as many connections, not a queue behind 8.
    client.session.wantConnections(RELEASE_CONNECTIONS);
  }

  async pageSize(): Promise<number> {
    return (await this.client.cluster()).pageSize;
  }

  /** The manifest of a published version, read through the cluster and checked against its etcd digest. */
  async manifest(record: VersionRecord): Promise<Manifest> {
    const stream = await this.client.createReadStream(`/${record.mount}/${record.manifest}`);
    const chunks: Buffer[] = [];
    let bytes = 0;
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      bytes += chunk.length;
      checkManifestSize(bytes); // before the whole of an oversized file is held in memory
      chunks.push(chunk);
    }
    const manifest = parseManifest(Buffer.concat(chunks), record.manifestSha256);
    if (manifest.name !== record.name || manifest.version !== record.version) {
      throw new FanoutError('MANIFEST_INVALID', `manifest at ${record.manifest} names ${manifest.name}@${manifest.version}, not ${record.name}@${record.version}`);
    }
    return manifest;
  }

  /** Page `index` of a release file, verified against the manifest's hash, in one buffer. */
  async page(manifest: Manifest, file: ManifestFile, index: number, signal?: AbortSignal): Promise<Buffer> {
    const chunks = await this.pageChunks(manifest, file, index, signal);
    return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
  }

  /** The same page as the chunks it arrived in (a writer with pwritev needs no copy into one buffer). */
  async pageChunks(manifest: Manifest, file: ManifestFile, index: number, signal?: AbortSignal): Promise<Buffer[]> {
    const readers = await this.readersFor(manifest);
    if (!readers) return this.byRange(manifest, file, index, signal);
    try {
      return await this.byHash(readers, manifest, file, index, signal);
    } catch (err) {
      // Refused for its page size by every worker asked: the workers restarted with another
      // pageSize while the session's answer still gave the manifest's (a rolling restart whose
      // last worker of the old size stopped under a staging). Asked again: if the cluster's page
      // size is another now, the page is read by range, as the next pages will be. Before, the
      // round failed `PAGE_SIZE_MISMATCH … every worker of a cluster needs the same pageSize`
      // (its files half written thrown away) and only the next round, whose manifest read
      // followed the new size, staged the release.
      if (!isFanoutError(err, 'PAGE_SIZE_MISMATCH')) throw err;
      const info = await this.client.cluster(true);
      this.checkedAnswer = info;
      if (info.pageSize === manifest.pageSize) throw err; // workers of two sizes: theirs are the words
      return this.byRange(manifest, file, index, signal);
    }
  }

  /** Page `index` asked for by its content hash, in the manifest's page size. */
  private async byHash(readers: { reader: ClusterReader; batches: BatchPageReader | undefined }, manifest: Manifest, file: ManifestFile, index: number, signal?: AbortSignal): Promise<Buffer[]> {
    const hash = file.pages[index]!;
    const ref = { mount: manifest.mount, path: sourcePathOf(manifest, file), version: file.sourceVersion, size: file.size, index, hash };
    const { reader, batches } = readers;
    // Small pages travel many to a round trip; a batched page with the wrong content is asked for again alone.
    let chunks = await (batches ?? reader).fetchPage(ref, signal);
    let actual = sha256Of(chunks);
    if (actual !== hash && batches) {
      chunks = await reader.fetchPage(ref, signal);
      actual = sha256Of(chunks);
    }
    if (actual !== hash) {
      throw new FanoutError('HASH_MISMATCH', `page ${index} of ${file.path} has SHA-256 ${actual.slice(0, 16)}…, the manifest says ${hash.slice(0, 16)}…`);
    }
    return chunks;
  }

  /**
   * Page `index` of a release published in another page size than the cluster's now (its workers
   * restarted with another pageSize since): its bytes read by range from the source file at its
   * version, in the cluster's pages, then checked against the manifest's hash as any page. In one
   * buffer of its own: nothing of it goes back to the receive slabs (release() leaves it alone).
   */
  private async byRange(manifest: Manifest, file: ManifestFile, index: number, signal?: AbortSignal): Promise<Buffer[]> {
    const start = index * manifest.pageSize;
    const end = Math.min(file.size, start + manifest.pageSize);
    const source = { mount: manifest.mount, path: sourcePathOf(manifest, file), version: file.sourceVersion, size: file.size, mtimeMs: 0 };
    const chunks: Buffer[] = [];
    for await (const page of this.client.readPages(source, { start, end, signal })) chunks.push(...page);
    const bytes = Buffer.concat(chunks);
    const actual = sha256Of([bytes]);
    if (actual !== file.pages[index]) {
      throw new FanoutError('HASH_MISMATCH', `page ${index} of ${file.path} (by range) has SHA-256 ${actual.slice(0, 16)}…, the manifest says ${file.pages[index]!.slice(0, 16)}…`);
    }
    return [bytes];
  }

  /**
   * Gives back a page's chunks from pageChunks() once they are written out and nothing reads
   * them again: the memory they were received in is read into again instead of fresh memory
   * faulting in (lib/leanhttp/slabs.ts). Chunks of any other origin are left alone.
   */
  release(chunks: Buffer[]): void {
    this.client.releasePage(chunks);
  }

  /** Nothing of its own to close: the pools are the session's, closed with the client. */
  async close(): Promise<void> {}

  /** Readers of the manifest's page size, or undefined when the cluster's is another now (its pages are read by range). */
  private async readersFor(manifest: Manifest): Promise<{ reader: ClusterReader; batches: BatchPageReader | undefined } | undefined> {
    let info = await this.client.cluster();
    // The session's answer may be older than the workers' restart with another pageSize: asked
    // again before going by range, once per answer (not once per page of an old release).
    if (info.pageSize !== manifest.pageSize && info !== this.checkedAnswer) {
      info = await this.client.cluster(true);
      this.checkedAnswer = info;
    }
    if (info.pageSize !== manifest.pageSize) return undefined;
    let readers = this.readers.get(manifest.pageSize);
    if (!readers) {
      const reader = this.client.session.reader({
        pageSize: manifest.pageSize,
        concurrency: 1,
        maxWorkerAttempts: 3,
        // Release pages are preloads (sync prefetch, `fanout load --release`): lines serve client reads first.
        preload: true,
      });
      readers = { reader, batches: this.useBatches ? this.client.session.batchReader(reader, { pageSize: manifest.pageSize, preload: true }) : undefined };
      this.readers.set(manifest.pageSize, readers);
    }
    return readers;
  }
}
