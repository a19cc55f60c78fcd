import { FanoutError } from '../core/errors.js';
import type { AgentState, ReleaseRegistry } from './registry.js';
import { checkDatacenter, parseChannel, promoteChannel, scopedChannel } from './scope.js';

/**
 * A staged rollout as one command: promote `CHANNEL@CANARY`, wait until every host of the canary
 * datacenter that follows CHANNEL reports the version switched, then the next waves: each
 * `--then` datacenter in turn (`CHANNEL@DC`), and with `--rest` CHANNEL itself (every host, the
 * last move wins: scope.ts). A host of the wave that fails on the new version (its agent reports
 * an error while targeting it: hash mismatch, disk full, hook failed) stops the rollout with
 * ROLLOUT_FAILED and no later wave is promoted; so does a wave not done within the timeout
 * (ROLLOUT_TIMEOUT). The waves already promoted stay promoted: roll them back per scope.
 * Once the canary is promoted, etcd unavailable (a stall of seconds: a leader election, a stopped
 * member) is waited out, each wave's reads and promotion tried again at every poll until --timeout.
 */

export type RolloutRegistry = Pick<ReleaseRegistry, 'promote' | 'getChannel' | 'getVersion' | 'listAgents'>;

export interface RolloutOptions {
  registry: RolloutRegistry;
  name: string;
  /** The plain channel (`prod`). */
  channel: string;
  version: string;
  canary: string;
  then?: string[];
  /** After the datacenter waves, promote the plain channel: every host. */
  rest?: boolean;
  /** How long one wave may take to switch. */
  timeoutMs: number;
  /** Between reads of the hosts' reports. */
  pollMs?: number;
  /** Injected for tests: now in ms, and a wait. */
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  signal?: AbortSignal;
  onEvent?: (event: RolloutEvent) => void;
}

export type RolloutEvent =
  | { event: 'promoted'; wave: string; channel: string; previous: string | null; version: string }
  | { event: 'waiting'; wave: string; hosts: number; switched: number; staging: number; failed: number }
  | { event: 'switched'; wave: string; hosts: number }
  | { event: 'skipped'; wave: string; reason: string }
  /** Hosts' reports could not be read (etcd down); the wave keeps polling until its timeout. */
  | { event: 'etcd-unavailable'; wave: string; error: string };

export interface WaveResult {
  wave: string;
  channel: string;
  previous: string | null;
  hosts: string[];
}

export const DEFAULT_POLL_MS = 1000;

/** Runs the waves; resolves with what each one promoted and waited for, or throws (ROLLOUT_*). */
export async function rollout(opts: RolloutOptions): Promise<WaveResult[]> {
  const { registry, name, version } = opts;
  if (parseChannel(opts.channel).datacenter !== undefined) throw new FanoutError('INVALID_ARGUMENT', `a rollout moves a plain channel (prod), not ${opts.channel}`);
  const waves = [opts.canary, ...(opts.then ?? [])];
  waves.forEach(checkDatacenter);
  if (new Set(waves).size !== waves.length) throw new FanoutError('INVALID_ARGUMENT', `a datacenter is named twice in the rollout: ${waves.join(', ')}`);
  await registry.getVersion(name, version); // RELEASE_NOT_FOUND before anything moves
  // No canary host means nothing would be tested: refuse before promoting anything.
  if (inWave(await registry.listAgents(name), opts.channel, opts.canary).length === 0) {
    throw new FanoutError('ROLLOUT_FAILED', `no sync agent of datacenter ${opts.canary} follows ${name}/${opts.channel}: nothing to canary (nothing was promoted)`);
  }
  const results: WaveResult[] = [];
  for (const datacenter of waves) results.push(await runWave(opts, datacenter, scopedChannel(opts.channel, datacenter), results));
  if (opts.rest) results.push(await runWave(opts, undefined, opts.channel, results));
  return results;
}

/** Hosts of a wave: those following `channel`, of `datacenter` (undefined: of every datacenter). */
function inWave(agents: AgentState[], channel: string, datacenter: string | undefined): AgentState[] {
  return agents.filter((a) => a.channel === channel && (datacenter === undefined || a.datacenter === datacenter));
}

/** `done`: the waves promoted before this one. */
async function runWave(opts: RolloutOptions, datacenter: string | undefined, channel: string, done: readonly WaveResult[]): Promise<WaveResult> {
  const { registry, name, version } = opts;
  const wave = datacenter ?? 'rest';
  const now = opts.now ?? Date.now;
  const sleep = opts.sleep ?? defaultSleep;
  const outage: Outage = { told: false };
  // Once a wave is promoted, an etcd stall before the next one's promotion must not end the
  // rollout half done (as it must not while a wave waits, below): its reads and its promotion are
  // made again at each poll until the timeout. Before the first, failing at once leaves nothing
  // to undo (and a wrong --etcd is told at once, not after --timeout).
  const promoted = done.map((w) => w.wave).join(', ');
  const stillDownBefore: Progress = { still: `still after ${Math.round(opts.timeoutMs / 1000)} s, before promoting ${wave}`, done: `${promoted} promoted, ${wave} and later waves were not` };
  const beforeDeadline = now() + opts.timeoutMs;
  const patiently = <T>(call: () => Promise<T>) => (done.length === 0 ? call() : untilEtcdAnswers(opts, wave, beforeDeadline, outage, stillDownBefore, call));
  const beforeAgents = await patiently(() => registry.listAgents(name));
  // A promotion made again after ETCD_UNAVAILABLE may find its first try applied (a request etcd
  // took and never answered): it would then report the version itself as the one it replaced.
  const prior = done.length === 0 ? undefined : ((await patiently(() => registry.getChannel(name, channel)))?.record.version ?? null);
  let attempts = 0;
  const promotion = await patiently(() => (attempts++, promoteChannel(registry, name, channel, version)));
  const previous = attempts > 1 && prior !== undefined ? prior : promotion.previous;
  // A host's report counts for this wave only once it changed after the promotion: an error
  // left from an earlier attempt must not fail the rollout before the agent tried again.
  const before = new Map(inWave(beforeAgents, opts.channel, datacenter).map((a) => [a.host, a.updatedAt]));
  opts.onEvent?.({ event: 'promoted', wave, channel, previous, version });
  const deadline = now() + opts.timeoutMs;
  const stillDownAfter: Progress = { still: `still at the end of ${wave}'s ${Math.round(opts.timeoutMs / 1000)} s timeout`, done: `${wave} was promoted, later waves were not` };
  for (;;) {
    // The wave is promoted already: an etcd stall of seconds (a leader election, a stopped
    // member) must not end a rollout given minutes. Read again at the next poll until the timeout.
    const agents = await untilEtcdAnswers(opts, wave, deadline, outage, stillDownAfter, () => registry.listAgents(name));
    const hosts = inWave(agents, opts.channel, datacenter);
    if (hosts.length === 0) {
      // Hosts that were there and are gone (cut off, stopped) prove nothing: never pass a wave
      // on their absence. Only a wave that never had hosts is skipped.
      if (before.size > 0 || datacenter === opts.canary) {
        throw new FanoutError('ROLLOUT_FAILED', `every host of ${wave} dropped out of ${name} while switching to ${version} (cut off or stopped); later waves were not promoted`);
      }
      opts.onEvent?.({ event: 'skipped', wave, reason: `no sync agent follows ${opts.channel}${datacenter ? ` in ${datacenter}` : ''}` });
      return { wave, channel, previous, hosts: [] };
    }
    const failed = hosts.filter((a) => a.phase === 'error' && a.target === version && a.updatedAt !== before.get(a.host));
    if (failed.length > 0) {
      const list = failed.slice(0, 5).map((a) => `${a.host}: ${a.error ?? 'error'}`).join('; ');
      throw new FanoutError('ROLLOUT_FAILED', `${failed.length} host(s) of ${wave} failed on ${name}@${version} (${list}); later waves were not promoted`);
    }
    // A host of the wave that dropped out (its agent killed, its record's lease run out) has not
    // switched: the wave waits for it to come back, and times out naming it. Counting only the
    // hosts still listed passed a canary wave whose one host died while staging.
    const listed = new Set(hosts.map((a) => a.host));
    const gone = [...before.keys()].filter((host) => !listed.has(host));
    const total = hosts.length + gone.length;
    const switched = hosts.filter((a) => a.current === version && a.phase !== 'error').length;
    const staging = hosts.filter((a) => a.phase === 'staging' || a.phase === 'switching').length;
    if (switched === total) {
      opts.onEvent?.({ event: 'switched', wave, hosts: hosts.length });
      return { wave, channel, previous, hosts: hosts.map((a) => a.host) };
    }
    opts.onEvent?.({ event: 'waiting', wave, hosts: total, switched, staging, failed: 0 });
    if (now() >= deadline) {
      const dropped = gone.length === 0 ? '' : ` (dropped out: ${gone.slice(0, 5).join(', ')}${gone.length > 5 ? ', …' : ''})`;
      throw new FanoutError('ROLLOUT_TIMEOUT', `${total - switched} of ${total} host(s) of ${wave} not on ${name}@${version} after ${Math.round(opts.timeoutMs / 1000)} s${dropped}; later waves were not promoted`);
    }
    await sleep(Math.min(opts.pollMs ?? DEFAULT_POLL_MS, Math.max(0, deadline - now())));
  }
}

function defaultSleep(ms: number): Promise<void> {
  return new Promise<void>((r) => setTimeout(r, ms));
}

/** Whether the current etcd outage was told (once per outage, not at every poll). */
interface Outage {
  told: boolean;
}

/** Where a rollout stands, for an error that ends it: how long etcd was waited for, and what was promoted and what was not. */
interface Progress {
  still: string;
  done: string;
}

/**
 * `call`, made again at each poll while etcd is unavailable (told once per outage) until
 * `deadline`; still unavailable then: ETCD_UNAVAILABLE saying what was promoted and what was not.
 * etcd out of space (ETCD_FULL) ends it at once, saying the same: no promotion is taken until an
 * operator frees space, so waiting out the timeout would only delay the news.
 */
async function untilEtcdAnswers<T>(opts: RolloutOptions, wave: string, deadline: number, outage: Outage, progress: Progress, call: () => Promise<T>): Promise<T> {
  const now = opts.now ?? Date.now;
  const sleep = opts.sleep ?? defaultSleep;
  for (;;) {
    if (opts.signal?.aborted) throw new FanoutError('ABORTED', `rollout of ${opts.name}@${opts.version} stopped while waiting for ${wave}`);
    try {
      const answer = await call();
      outage.told = false;
      return answer;
    } catch (err) {
      if (err instanceof FanoutError && err.code === 'ETCD_FULL') throw new FanoutError('ETCD_FULL', `${err.message} (${progress.done})`, { cause: err });
      if (!(err instanceof FanoutError) || err.code !== 'ETCD_UNAVAILABLE') throw err;
      if (now() >= deadline) throw new FanoutError('ETCD_UNAVAILABLE', `${err.message} (${progress.still}; ${progress.done})`, { cause: err });
      if (!outage.told) opts.onEvent?.({ event: 'etcd-unavailable', wave, error: err.message });
      outage.told = true;
      await sleep(Math.min(opts.pollMs ?? DEFAULT_POLL_MS, Math.max(0, deadline - now())));
    }
  }
}
