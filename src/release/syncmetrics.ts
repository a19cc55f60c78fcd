import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { FanoutError } from '../core/errors.js';
import { listenHttp } from '../lib/http/index.js';
import { parseListen } from '../lib/config/index.js';
import type { AgentHealth } from './agent.js';

const PHASES = ['idle', 'staging', 'switching', 'error'] as const;

/**
 * The sync agent's Prometheus metrics, read from the agent at scrape time. A rollout is stuck
 * when hosts stay behind their channel (`fanout_sync_behind_seconds`) or keep failing
 * (`fanout_sync_phase{phase="error"}`); examples/monitoring/ alerts on both.
 */
/** `labels` go on every series; with `datacenter` (sync --datacenter), alerts can group stuck hosts by datacenter. */
export function syncMetricsRegistry(health: () => AgentHealth, labels: { release: string; channel: string; datacenter?: string }): Registry {
  const registry = new Registry();
  registry.setDefaultLabels(labels);
  const gauge = (name: string, help: string, read: (h: AgentHealth) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read(health()));
      },
    });
  gauge('fanout_sync_behind', "Whether the channel points to a version other than this host's current one (1: a switch is due)", (h) => (h.behindSince === undefined ? 0 : 1));
  gauge('fanout_sync_behind_seconds', 'How long this host has been behind its channel (0 when in sync)', (h) =>
    h.behindSince === undefined ? 0 : Math.max(0, (performance.now() - h.behindSince) / 1000),
  );
  gauge('fanout_sync_staged_bytes', 'Bytes of the target version staged so far', (h) => h.state.bytesDone);
  gauge('fanout_sync_target_bytes', 'Size of the target version being staged (0 when none)', (h) => h.state.bytesTotal);
  new Gauge({
    name: 'fanout_sync_phase',
    help: 'What the agent is doing: 1 for the current phase (idle, staging, switching, error)',
    labelNames: ['phase'],
    registers: [registry],
    collect() {
      const { phase } = health().state;
      for (const p of PHASES) this.labels(p).set(p === phase ? 1 : 0);
    },
  });
  const counter = (name: string, help: string, read: (h: AgentHealth) => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        // The agent owns the count; a counter is only ever reset here to be set to it again.
        this.reset();
        this.inc(read(health()));
      },
    });
  counter('fanout_sync_failed_rounds_total', 'Sync rounds that failed (etcd or the cluster unreachable, hash mismatch, disk full…)', (h) => h.failedRounds);
  counter('fanout_sync_switches_total', 'Switches of DIR/current to a new version', (h) => h.switches);
  counter('fanout_sync_damaged_files_total', 'Files of the current version found deleted, truncated or changed since verified, and entries added that its manifest does not list (RELEASE_DAMAGED)', (h) => h.damagedFiles);
  counter('fanout_sync_repairs_total', 'Repairs of the current version: damaged files fetched again and DIR/current switched to the whole tree', (h) => h.repairs);
  collectDefaultMetrics({ register: registry, prefix: 'fanout_sync_' });
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(`fanout_sync_${name}`); // gauges named like counters; sums of their by-type siblings
  }
  return registry;
}

/**
 * Serves GET /metrics of a registry on `listen` (host:port) and nothing else. Small bounds:
 * a scraper is one client, so a few connections and short deadlines are plenty.
 */
export async function serveMetrics(listen: string, registry: Registry): Promise<{ url: string; close(): Promise<void> }> {
  const { host, port } = parseListen(listen);
  const server: Server = createServer((req, res) => {
    res.on('error', () => {});
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics here\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`),
    );
  });
  server.maxConnections = 16;
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  server.keepAliveTimeout = 5_000;
  let url: string;
  try {
    url = await listenHttp(server, host, port);
  } catch (err) {
    throw new FanoutError('INVALID_ARGUMENT', `cannot serve metrics on ${listen}: ${(err as Error).message}`);
  }
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
