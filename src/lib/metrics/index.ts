import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { sendPath } from '../sendfile/index.js';

/**
 * A worker's Prometheus metrics. Each worker has its own registry so that several workers in
 * one process (tests, `fanout serve`) do not share counters. Gauges that mirror state owned
 * elsewhere (store usage, in-flight reads) are read at scrape time through `collect`.
 */
export interface GaugeSources {
  storeUsedBytes(): number;
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
}

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
  readonly requestErrors = new Counter({
    name: 'fanout_request_errors_total',
    help: 'Requests answered with an error, by code',
    labelNames: ['code'],
    registers: [this.registry],
  });

  constructor(sources: GaugeSources) {
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.set(read());
        },
      });
    gauge('fanout_store_used_bytes', 'Bytes held in the page store', sources.storeUsedBytes);
    gauge('fanout_store_capacity_bytes', 'Effective page store capacity: the configured one, lowered to what the disk can hold', sources.storeCapacityBytes);
    const { storeConfiguredCapacityBytes, storeDiskFreeBytes } = sources;
    if (storeConfiguredCapacityBytes) gauge('fanout_store_configured_capacity_bytes', 'Page store capacity as configured', storeConfiguredCapacityBytes);
    if (storeDiskFreeBytes) gauge('fanout_store_disk_free_bytes', "Free bytes on the page store's file system (last check)", () => storeDiskFreeBytes() ?? 0);
    gauge('fanout_store_pages', 'Pages held in the page store', sources.storePages);
    gauge('fanout_source_reads_inflight', 'Source reads in progress (single-flight fills)', sources.inflightSourceReads);
    gauge('fanout_members', 'Cluster members this worker knows of', sources.members);
    new Gauge({
      name: 'fanout_source_rate_limit_bytes',
      help: "This worker's share of a mount's cluster-wide source budget, bytes/s (0 = unlimited)",
      labelNames: ['mount'],
      registers: [this.registry],
      collect() {
        for (const [mount, rate] of Object.entries(sources.sourceRates())) this.labels(mount).set(rate);
      },
    });
    new Gauge({
      name: 'fanout_send_path',
      help: 'How page hits leave on plain connections: 1 for the path in use (sendfile: by the kernel; js: read and written by JS)',
      labelNames: ['path'],
      registers: [this.registry],
      collect() {
        this.labels(sendPath()).set(1);
      },
    });
    collectDefaultMetrics({ register: this.registry, prefix: 'fanout_process_' });
  }

  async value(counter: Counter<string>): Promise<number> {
    const { values } = await counter.get();
    return values.reduce((sum, v) => sum + v.value, 0);
  }
}
