import { FanoutClient } from '../client/index.js';
import { FanoutError } from '../core/errors.js';
import { parseSize } from '../core/pages.js';
import type { AgentHealth } from '../release/agent.js';
import { followLauncher } from './launcher.js';
import { printJson, type GlobalOptions } from './output.js';

export interface SyncFlags extends GlobalOptions {
  channel: string;
  dir: string;
  keep?: string;
  onSwitch?: string;
  hookTimeout?: string;
  once?: boolean;
  /** false with --no-repair. */
  repair?: boolean;
  interval?: string;
  host?: string;
  datacenter?: string;
  rate?: string;
  etcd?: string;
  /** host:port to serve /metrics on (follow mode only). */
  metrics?: string;
}

/**
 * `fanout sync NAME --channel C --dir DIR`: the agent on a serving host. Runs until stopped
 * (SIGINT/SIGTERM), or with --once does one round and exits (0 when DIR/current is the
 * channel's version).
 */
export async function sync(name: string, flags: SyncFlags): Promise<void> {
  const keep = Number(flags.keep ?? 1);
  if (!Number.isInteger(keep) || keep < 0) throw new FanoutError('INVALID_ARGUMENT', '--keep must be a whole number ≥ 0');
  const intervalMs = flags.interval ? parseDuration(flags.interval) : undefined;
  const hookTimeoutMs = flags.hookTimeout ? parseDuration(flags.hookTimeout) : undefined;
  if (hookTimeoutMs !== undefined && hookTimeoutMs <= 0) throw new FanoutError('INVALID_ARGUMENT', '--hook-timeout must be longer than 0');
  const { ReleaseRegistry, etcdConnection } = await import('../release/registry.js');
  const { ReleaseFetcher } = await import('../release/fetch.js');
  const { SyncAgent } = await import('../release/agent.js');
  const registry = new ReleaseRegistry(etcdConnection(flags));
  const client = new FanoutClient({ endpoint: flags.endpoint, ca: flags.ca });
  const fetcher = new ReleaseFetcher(client);
  const log = (line: string) => process.stderr.write(`fanout sync: ${line}\n`);
  const agent = new SyncAgent({ name, channel: flags.channel, dir: flags.dir, keep, onSwitch: flags.onSwitch, hookTimeoutMs, registry, fetcher, host: flags.host, datacenter: flags.datacenter, intervalMs, log, repair: flags.repair !== false, rate: flags.rate ? parseSize(flags.rate) : undefined });
  const stop = new AbortController();
  const onSignal = (signal: string) => {
    log(`${signal}, stopping (the current version stays)`);
    stop.abort(new FanoutError('ABORTED', signal));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const stopFollowing = followLauncher(() => onSignal('launcher (npm exec) gone'));
  let unlock: (() => Promise<void>) | undefined;
  try {
    unlock = await agent.dir.lock();
    if (flags.once) {
      const current = await agent.syncOnce(stop.signal);
      if (flags.json) printJson({ name, channel: flags.channel, following: agent.health().state.following, dir: agent.dir.dir, current });
      else process.stdout.write(`${agent.dir.current} → ${current}\n`);
    } else {
      log(`following ${name}/${flags.channel}${flags.datacenter ? ` (or ${flags.channel}@${flags.datacenter}, whichever moved last)` : ''} into ${agent.dir.dir}`);
      const metrics = flags.metrics ? await serveSyncMetrics(flags.metrics, agent, { release: name, channel: flags.channel, ...(flags.datacenter ? { datacenter: flags.datacenter } : {}) }) : undefined;
      if (metrics) log(`metrics on ${metrics.url}/metrics`);
      try {
        await agent.run(stop.signal);
      } finally {
        await metrics?.close();
      }
    }
  } finally {
    await unlock?.();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    stopFollowing();
    await fetcher.close();
    await client.close();
    await registry.close();
  }
}

async function serveSyncMetrics(listen: string, agent: { health(): AgentHealth }, labels: { release: string; channel: string; datacenter?: string }) {
  const { syncMetricsRegistry, serveMetrics } = await import('../release/syncmetrics.js');
  return serveMetrics(listen, syncMetricsRegistry(() => agent.health(), labels));
}

export function parseDuration(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!match) throw new FanoutError('INVALID_ARGUMENT', `invalid duration "${text}" (examples: 500ms, 2s, 1h)`);
  return Math.round(Number(match[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] ?? 'ms']!);
}
