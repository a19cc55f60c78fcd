import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { WriteFailureReason } from '../pagestore/types.js';
import { sendPath, sendThreads } from '../sendfile/index.js';
import { checksumPath } from '../checksum/index.js';
import { memoryPath } from '../memory/index.js';
import type { MembershipState, MembershipStatus } from '../../core/types.js';

/** Every membership state, each exported (0 or 1), so an alert on one needs no `or vector(0)`. */
const MEMBERSHIP_STATES: readonly MembershipState[] = ['static', 'starting', 'registered', 'registering', 'id-taken'];

/**
 * A worker's Prometheus metrics. Each worker has its own registry so that several workers in
 * one process (tests, `fanout serve`) do not share counters. Gauges that mirror state owned
 * elsewhere (store usage, in-flight reads) are read at scrape time through `collect`.
 */
export interface GaugeSources {
  /** Config `datacenter`: exported as fanout_worker_info{datacenter} to join other series on. */
  datacenter?: string;
  /** What the page store's pages take on disk (whole file-system blocks): what capacity counts. */
  storeUsedBytes(): number;
  /** Bytes of the pages themselves. */
  storePageBytes?(): number;
  /** The effective capacity: configured, lowered to what the disk can hold. */
  storeCapacityBytes(): number;
  storeConfiguredCapacityBytes?(): number;
  /** Free bytes on the page store's file system at the last check. */
  storeDiskFreeBytes?(): number | undefined;
  storePages(): number;
  inflightSourceReads(): number;
  members(): number;
  /** This worker's share of each mount's cluster-wide source budget (bytes/s, 0 = unlimited). */
  sourceRates(): Record<string, number>;
  /** True while the membership store (etcd) is unreachable and the member list may be out of date. */
  membershipStale?(): boolean;
  /** Where this worker stands in the membership, and the records it leaves out. */
  membershipStatus?(): MembershipStatus;
  /** The lines this worker crosses (lib/lines): rate, this worker's share, queues per class. */
  lines?(): LineGaugeSource[];
}

/** What the line gauges read of one line at scrape time. */
export interface LineGaugeSource {
  line: string;
  rate: number;
  share: number;
  preloadMin: number;
  mode: string;
  queue: Record<'read' | 'preload', { requests: number; bytes: number }>;
}

/**
 * prom-client's default gauges that end in `_total`, which Prometheus reserves for counters
 * (`promtool check metrics` warns). Each is the sum of its by-type sibling without the suffix
 * (e.g. `sum(fanout_nodejs_active_handles)`), so dropping them loses nothing.
 */
const REDUNDANT_DEFAULT_GAUGES = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];
/** Default metrics keep their usual names under our prefix: fanout_process_cpu_seconds_total, fanout_nodejs_eventloop_lag_p99_seconds. */
const DEFAULT_PREFIX = 'fanout_';

export class WorkerMetrics {
  readonly registry = new Registry();
  readonly hits = new Counter({ name: 'fanout_page_hits_total', help: 'Page reads served from the page store', registers: [this.registry] });
  readonly misses = new Counter({ name: 'fanout_page_misses_total', help: 'Page reads that had to wait for the source', registers: [this.registry] });
  readonly bytesServed = new Counter({ name: 'fanout_bytes_served_total', help: 'Page bytes sent to readers', registers: [this.registry] });
  readonly bytesFromSource = new Counter({
    name: 'fanout_source_bytes_total',
    help: 'Bytes read from sources (UFS)',
    labelNames: ['mount'],
    registers: [this.registry],
  });
  readonly peerBytes = new Counter({
    name: 'fanout_peer_bytes_total',
    help: 'Page bytes this worker received from the page owner instead of the source',
    registers: [this.registry],
  });
  readonly relaySourceReads = new Counter({
    name: 'fanout_relay_source_reads_total',
    help: 'Pages a relaying worker read from the source itself because the page owner was taken for down, sent a page failing its checksum, or refused our page size (a second source read of the page)',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly fillSends = new Counter({
    name: 'fanout_fill_sends_total',
    help: 'Responses streamed from a page fill in flight, by path: kernel (sendfile from the file the fill is written to) or js (written from the fill buffer: TLS, HEAD, no sendfile addon, a fill file that could not be written)',
    labelNames: ['path'],
    registers: [this.registry],
  });
  readonly sourceReads = new Counter({ name: 'fanout_source_reads_total', help: 'Page reads started against sources', registers: [this.registry] });
  readonly evictions = new Counter({ name: 'fanout_evictions_total', help: 'Pages evicted from the page store', registers: [this.registry] });
  readonly checksumFailures = new Counter({
    name: 'fanout_checksum_failures_total',
    help: 'Stored pages that failed checksum verification and were dropped',
    registers: [this.registry],
  });
  readonly scrubBytes = new Counter({ name: 'fanout_scrub_bytes_total', help: 'Bytes of stored pages re-read and checked by the background scrub', registers: [this.registry] });
  readonly scrubCorruptPages = new Counter({
    name: 'fanout_scrub_corrupt_pages_total',
    help: 'Stored pages the background scrub found corrupt and dropped (refetched on their next read)',
    registers: [this.registry],
  });
  readonly pageReports = new Counter({
    name: 'fanout_page_reports_total',
    help: 'Pages readers reported as failing their checksum, by what re-verifying the stored page found (corrupt: dropped; intact; absent: not stored here)',
    labelNames: ['result'],
    registers: [this.registry],
  });
  readonly storeWriteFailures = new Counter({
    name: 'fanout_store_write_failures_total',
    help: 'Page writes to the store that failed, by reason (disk_full, no_room, io_error); the page was served uncached unless a retry after eviction stored it',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly lineBytes = new Counter({
    name: 'fanout_line_bytes_total',
    help: 'Bytes this worker read across a line, by traffic class (read: a client waits; preload: fanout load, sync prefetch)',
    labelNames: ['line', 'class'],
    registers: [this.registry],
  });
  readonly lineGrantsCapped = new Counter({
    name: 'fanout_line_grants_capped_total',
    help: "Lease grants of a line past this worker's own configuration, applied capped, by bound (rate: above the line's rate as this worker is configured; leaseMs: longer than two of its leases). Non-zero: workers configured with different lines, or a peer granting what it should not",
    labelNames: ['line', 'bound'],
    registers: [this.registry],
  });
  readonly authThrottled = new Counter({
    name: 'fanout_auth_throttled_total',
    help: 'Credentials refused unchecked because their client address gave too many refused ones within auth.attempts.window, by server (api, dashboard, gateway)',
    labelNames: ['server'],
    registers: [this.registry],
  });
  readonly requestErrors = new Counter({
    name: 'fanout_request_errors_total',
    help: 'Requests answered with an error, by code',
    labelNames: ['code'],
    registers: [this.registry],
  });

  constructor(sources: GaugeSources) {
    // Zero from the start, so that increase() sees the first failure and an alert needs no `or vector(0)`.
    for (const reason of ['disk_full', 'no_room', 'io_error'] satisfies WriteFailureReason[]) this.storeWriteFailures.inc({ reason }, 0);
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.set(read());
        },
      });
    gauge('fanout_store_used_bytes', "Bytes the page store's pages take on disk (whole file-system blocks): what capacity counts", sources.storeUsedBytes);
    const { storePageBytes } = sources;
    if (storePageBytes) gauge('fanout_store_page_bytes', "Bytes of the page store's pages (less than they take on disk)", storePageBytes);
    gauge('fanout_store_capacity_bytes', 'Effective page store capacity: the configured one, lowered to what the disk can hold', sources.storeCapacityBytes);
    const { storeConfiguredCapacityBytes, storeDiskFreeBytes } = sources;
    if (storeConfiguredCapacityBytes) gauge('fanout_store_configured_capacity_bytes', 'Page store capacity as configured', storeConfiguredCapacityBytes);
    if (storeDiskFreeBytes) gauge('fanout_store_disk_free_bytes', "Free bytes on the page store's file system (last check)", () => storeDiskFreeBytes() ?? 0);
    gauge('fanout_store_pages', 'Pages held in the page store', sources.storePages);
    gauge('fanout_source_reads_inflight', 'Source reads in progress (single-flight fills)', sources.inflightSourceReads);
    gauge('fanout_members', 'Cluster members this worker knows of', sources.members);
    const { datacenter } = sources;
    new Gauge({
      name: 'fanout_worker_info',
      help: 'Always 1; labels describe the worker (datacenter: config datacenter, "" when unset), to group other series by datacenter',
      labelNames: ['datacenter'],
      registers: [this.registry],
      collect() {
        this.labels(datacenter ?? '').set(1);
      },
    });
    new Gauge({
      name: 'fanout_source_rate_limit_bytes_per_second',
      help: "This worker's share of a mount's cluster-wide source budget, bytes/s (0 = unlimited)",
      labelNames: ['mount'],
      registers: [this.registry],
      collect() {
        for (const [mount, rate] of Object.entries(sources.sourceRates())) this.labels(mount).set(rate);
      },
    });
    const { lines } = sources;
    if (lines) {
      const lineGauge = (name: string, help: string, labelNames: string[], set: (g: Gauge, l: LineGaugeSource) => void) =>
        new Gauge({
          name,
          help,
          labelNames,
          registers: [this.registry],
          collect() {
            this.reset();
            for (const l of lines()) set(this, l);
          },
        });
      lineGauge('fanout_line_rate_bytes_per_second', "A line's rate for the whole cluster, bytes/s", ['line'], (g, l) => g.labels(l.line).set(l.rate));
      lineGauge('fanout_line_share_bytes_per_second', "This worker's share of a line now (leased by the line's coordinator), bytes/s", ['line'], (g, l) => g.labels(l.line).set(l.share));
      lineGauge('fanout_line_preload_min_bytes_per_second', "The part of this worker's share kept for its preloads when they wait, bytes/s", ['line'], (g, l) => g.labels(l.line).set(l.preloadMin));
      lineGauge('fanout_line_fallback', 'Whether this worker holds no lease of a line and reads at the safe share (rate ÷ members): 1 on fallback', ['line'], (g, l) =>
        g.labels(l.line).set(l.mode === 'lease' ? 0 : 1),
      );
      lineGauge('fanout_line_queue_bytes', 'Bytes waiting for a share of a line on this worker, by traffic class', ['line', 'class'], (g, l) => {
        for (const cls of ['read', 'preload'] as const) g.labels(l.line, cls).set(l.queue[cls].bytes);
      });
      lineGauge('fanout_line_queue_requests', 'Reads waiting for a share of a line on this worker, by traffic class', ['line', 'class'], (g, l) => {
        for (const cls of ['read', 'preload'] as const) g.labels(l.line, cls).set(l.queue[cls].requests);
      });
    }
    const { membershipStale, membershipStatus } = sources;
    if (membershipStale) gauge('fanout_membership_stale', 'Whether the membership store (etcd) is unreachable: 1 while the last known member list is served, possibly out of date', () => (membershipStale() ? 1 : 0));
    if (membershipStatus) {
      new Gauge({
        name: 'fanout_membership_state',
        help: 'Where this worker stands in the membership: 1 for its state (registered; id-taken: another running worker holds its id and this one is in no ring; see docs/operations.md)',
        labelNames: ['state'],
        registers: [this.registry],
        collect() {
          const { state } = membershipStatus();
          for (const s of MEMBERSHIP_STATES) this.labels(s).set(s === state ? 1 : 0);
        },
      });
      gauge('fanout_membership_ignored_records', 'Records under the member prefix left out of the ring (no lease: written by hand, no running worker keeps them); /v1/status lists them', () => membershipStatus().ignored.length);
    }
    // Which way a job is done in this process (native addon or its pure-JS fallback): 1 for the way in use.
    const wayGauge = (name: string, help: string, way: () => string) =>
      new Gauge({
        name,
        help,
        labelNames: ['path'],
        registers: [this.registry],
        collect() {
          this.labels(way()).set(1);
        },
      });
    wayGauge('fanout_send_path', 'How page hits leave on plain connections: 1 for the path in use (sendfile: by the kernel; js: read and written by JS)', sendPath);
    wayGauge(
      'fanout_checksum_path',
      'How page CRC32s are computed: 1 for the way in use (vclmul: native addon with AVX-512 carry-less multiply; clmul: with 128-bit carry-less multiply; table: native addon without it; js: Node zlib)',
      checksumPath,
    );
    wayGauge('fanout_memory_path', 'How read buffers are allocated: 1 for the way in use (huge: native addon, transparent huge pages; js: Buffer.allocUnsafeSlow)', memoryPath);
    new Gauge({
      name: 'fanout_send_threads',
      help: 'Kernel send threads (sendfile path): target (config threads), busy (inside sendfile now), queued (sends waiting for a thread)',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        const threads = sendThreads();
        if (!threads) return;
        this.labels('target').set(threads.target);
        this.labels('busy').set(threads.busy);
        this.labels('queued').set(threads.queued);
      },
    });
    collectDefaultMetrics({ register: this.registry, prefix: DEFAULT_PREFIX });
    for (const name of REDUNDANT_DEFAULT_GAUGES) this.registry.removeSingleMetric(DEFAULT_PREFIX + name);
  }

  async value(counter: Counter<string>): Promise<number> {
    const { values } = await counter.get();
    return values.reduce((sum, v) => sum + v.value, 0);
  }
}
