import type { Clock } from '../../core/clock.js';
import { readCa } from '../../lib/tls/index.js';
import type { Worker } from '../worker.js';
import { Dashboard } from './index.js';

/** The worker's dashboard, given read-only views of the worker's parts (its composition, in one place). */
export function dashboardFor(worker: Worker, clock: Clock): Dashboard {
  const { config, metrics } = worker;
  const etcd = config.membership.etcd;
  return new Dashboard({
    clock,
    selfId: config.id,
    members: () => worker.members(),
    status: () => worker.status(),
    counters: async () => {
      const source: Record<string, number> = {};
      for (const { labels, value } of (await metrics.bytesFromSource.get()).values) {
        const mount = String(labels.mount ?? '');
        source[mount] = (source[mount] ?? 0) + value;
      }
      for (const mount of worker.mountNames()) source[mount] ??= 0;
      const [hits, misses, served] = await Promise.all([metrics.value(metrics.hits), metrics.value(metrics.misses), metrics.value(metrics.bytesServed)]);
      return { hits, misses, served, source };
    },
    budgets: () => worker.sourceBudget.rates(),
    used: () => worker.store.used,
    fills: () => worker.pages.flights.list(),
    loads: () => worker.admin.loads(),
    gate: worker.gate,
    secure: config.tls !== undefined,
    etcd: etcd && { endpoints: etcd.endpoints, tls: etcd.tls, auth: etcd.auth },
    ca: readCa(config.tls?.ca, 'INVALID_CONFIG'),
    onRefusedToken: () => metrics.requestErrors.labels('UNAUTHENTICATED').inc(),
  });
}
