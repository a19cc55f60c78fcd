import type { Clock } from '../../core/clock.js';
import { FanoutError } from '../../core/errors.js';
import type { EtcdConnection } from '../../lib/membership/index.js';
import { summarizeReleases, type ReleaseOverview } from '../../release/overview.js';
import type { ReleaseRegistry } from '../../release/registry.js';

/** What `/v1/releases` answers. */
export type ReleasesAnswer =
  | { available: true; releases: ReleaseOverview[]; readAt: number }
  | { available: false; reason: string; error?: { code: string; message: string } };

/** Open dashboards share one etcd read per this long. */
const FRESH_MS = 2_000;
/** Deadline of that read. */
const ETCD_TIMEOUT_MS = 3_000;

/**
 * The releases as the worker can read them: from the etcd its membership uses (the release
 * index lives there too). Read-only, cached for a couple of seconds with one read in flight,
 * so a hundred open dashboards cost etcd one range read every two seconds.
 */
export class ReleaseView {
  private registry: ReleaseRegistry | undefined;
  /** `at`: the wall time shown as readAt; `fetchedAt`: performance.now(), for freshness (a wall clock step would keep it an hour). */
  private cached: { at: number; fetchedAt: number; index: Record<string, string> } | undefined;
  private inflight: Promise<Record<string, string>> | undefined;
  private closed = false;

  constructor(
    private readonly connection: EtcdConnection | undefined,
    private readonly clock: Clock,
  ) {}

  async answer(hostsOf?: string): Promise<ReleasesAnswer> {
    if (!this.connection) return { available: false, reason: 'releases live in etcd; this worker has no etcd (membership.etcd)' };
    try {
      const index = await this.index();
      return { available: true, releases: summarizeReleases(index, hostsOf), readAt: this.cached?.at ?? this.clock.now() };
    } catch (err) {
      const error = err instanceof FanoutError ? err : new FanoutError('ETCD_UNAVAILABLE', (err as Error).message);
      return { available: false, reason: 'etcd unreachable', error: error.toJSON() };
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.registry?.close();
    this.registry = undefined;
  }

  private async index(): Promise<Record<string, string>> {
    if (this.cached && performance.now() - this.cached.fetchedAt < FRESH_MS) return this.cached.index;
    this.inflight ??= this.read().finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  private async read(): Promise<Record<string, string>> {
    if (this.closed) throw new FanoutError('ABORTED', 'worker stopping');
    // Loaded on first use: a worker nobody opens a dashboard on never dials etcd a second time.
    if (!this.registry) {
      const { ReleaseRegistry } = await import('../../release/registry.js');
      this.registry = new ReleaseRegistry(this.connection!, ETCD_TIMEOUT_MS);
    }
    const index = await this.registry.snapshot();
    this.cached = { at: this.clock.now(), fetchedAt: performance.now(), index };
    return index;
  }
}
