import type { EtcdClientRenewal } from '../lib/membership/renewal.js';
import { FanoutError } from '../core/errors.js';
import { EtcdError, EtcdJsonClient, type Compare } from '../lib/etcdjson/index.js';
import { DEFAULT_ETCD_TIMEOUT_MS, type EtcdConnection } from '../lib/membership/connection.js';
import { etcdFullError, isEtcdFull } from '../lib/membership/full.js';
import { describeHolder, isOwnRecord } from './machine.js';
import { checkReleaseName, checkVersion } from './manifest.js';
import { readRecord, recordOrUndefined } from './records.js';

/**
 * The release index in etcd:
 *   /fanout/releases/NAME/versions/V   VersionRecord (created once, never changed)
 *   /fanout/releases/NAME/channels/C   ChannelRecord (moved by compare-and-swap transactions)
 *   /fanout/releases/NAME/agents/HOST  AgentState (under a lease: gone when the agent is)
 * The manifests themselves are kept in the source; etcd holds their digests.
 * Reads and writes go through etcd's JSON gateway (lib/etcdjson: no gRPC to load in a one-shot
 * command); a watch, which only a following sync agent asks for, through etcd3, loaded then.
 */
export const RELEASES_PREFIX = '/fanout/releases/';
const HISTORY_LIMIT = 20;
/** etcd's answer to a put under (or a renewal of) a lease that expired. */
const GRPC_NOT_FOUND = 5;
/** Reads and guarded writes of the host record before giving up (two agents starting at once take two). */
const CLAIM_ATTEMPTS = 5;

export interface VersionRecord {
  name: string;
  version: string;
  mount: string;
  prefix: string;
  /** Path of the manifest inside the mount. */
  manifest: string;
  manifestSha256: string;
  pageSize: number;
  files: number;
  bytes: number;
  pages: number;
  uniquePages: number;
  createdAt: string;
}

export interface ChannelRecord {
  version: string;
  /** Versions the channel pointed to before, most recent first (what rollback returns to). */
  history: string[];
  updatedAt: string;
}

export interface AgentState {
  host: string;
  /** The channel the agent was told to follow (`prod`). */
  channel: string;
  /** `sync --datacenter`; absent for hosts without one. */
  datacenter?: string;
  /** The key it follows now: `prod`, or `prod@DC` when that one was moved last (scope.ts). */
  following?: string;
  dir: string;
  /** Which machine (machine.ts): two with one hostname and one directory path are two agents. Absent from earlier versions' records. */
  machine?: string;
  current: string | null;
  target: string | null;
  phase: 'idle' | 'staging' | 'switching' | 'error';
  bytesDone: number;
  bytesTotal: number;
  /** Of bytesDone: copied from versions already on this host, and fetched from the cluster. */
  bytesLocal: number;
  bytesFetched: number;
  error: string | null;
  updatedAt: string;
}

/** A watch on one channel; `broken` once it stopped delivering (then close it and open another). */
export interface ChannelWatch {
  readonly broken: boolean;
  close(): void;
}

export class ReleaseRegistry {
  private readonly kv: EtcdJsonClient;
  /** The gRPC client of the watches, made at the first one, and replaced as the membership's is. */
  private watcher: Promise<{ clients: EtcdClientRenewal; openWatch: typeof import('../lib/membership/rpc.js').openWatch }> | undefined;
  /** Watches in a row that etcd did not confirm (or that failed otherwise). */
  private failedWatches = 0;
  /** The lease this agent's state is reported under, once granted. */
  private lease: string | undefined;

  readonly endpoints: string[];

  /** Every call has a deadline of `timeoutMs` (default 3 s); a watch must be confirmed within it. */
  constructor(
    private readonly connection: EtcdConnection,
    private readonly timeoutMs = DEFAULT_ETCD_TIMEOUT_MS,
  ) {
    this.endpoints = connection.endpoints;
    if (this.endpoints.length === 0 || this.endpoints.some((e) => !/^https?:\/\//.test(e))) {
      throw new FanoutError('INVALID_ARGUMENT', 'etcd endpoints are required (--etcd http://HOST:2379 or FANOUT_ETCD)');
    }
    this.kv = new EtcdJsonClient(connection, timeoutMs);
  }

  /** Closes the connections. The agent's lease is left to expire: its state drops out of `release status` within the TTL. */
  async close(): Promise<void> {
    this.kv.close();
    const watcher = this.watcher;
    this.watcher = undefined;
    if (watcher) (await watcher.catch(() => undefined))?.clients.close();
  }

  /** Records a new version; RELEASE_EXISTS if it was published before. */
  async createVersion(record: VersionRecord): Promise<void> {
    const key = versionKey(record.name, record.version);
    const result = await this.call(`publish ${record.name}@${record.version}`, () =>
      this.kv.putIf([{ key, target: 'CREATE', result: 'EQUAL', revision: '0' }], key, JSON.stringify(record)),
    );
    if (!result) throw new FanoutError('RELEASE_EXISTS', `release ${record.name} version ${record.version} is already published`);
  }

  async getVersion(name: string, version: string): Promise<VersionRecord> {
    checkReleaseName(name);
    checkVersion(version);
    const kv = await this.call('read a version', () => this.kv.get(versionKey(name, version)));
    if (kv === null) throw new FanoutError('RELEASE_NOT_FOUND', `release ${name} has no version ${version}`);
    return readRecord('version', kv.key, kv.value);
  }

  async listVersions(name: string): Promise<VersionRecord[]> {
    checkReleaseName(name);
    const all = await this.call('list versions', () => this.kv.getPrefix(`${RELEASES_PREFIX}${name}/versions/`));
    return all
      .map((kv) => readRecord('version', kv.key, kv.value))
      .sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : 0));
  }

  async listChannels(name: string): Promise<Record<string, ChannelRecord>> {
    return Object.fromEntries(Object.entries(await this.channelStates(name)).map(([k, v]) => [k, v.record]));
  }

  /** Every channel with its mod revision: what orders `prod` against `prod@dc-b` (scope.ts). */
  async channelStates(name: string): Promise<Record<string, { record: ChannelRecord; modRevision: string }>> {
    checkReleaseName(name);
    const prefix = `${RELEASES_PREFIX}${name}/channels/`;
    const all = await this.call('list channels', () => this.kv.getPrefix(prefix));
    return Object.fromEntries(all.map((kv) => [kv.key.slice(prefix.length), { record: readRecord('channel', kv.key, kv.value), modRevision: kv.modRevision }]));
  }

  /** The channel's record and its modification revision (for compare-and-swap), or null. */
  async getChannel(name: string, channel: string): Promise<{ record: ChannelRecord; modRevision: string } | null> {
    checkReleaseName(name);
    checkChannel(channel);
    const kv = await this.call('read a channel', () => this.kv.get(channelKey(name, channel)));
    if (!kv) return null;
    return { record: readRecord('channel', kv.key, kv.value), modRevision: kv.modRevision };
  }

  /**
   * Calls `onEvent('change')` whenever the channel is written or deleted, and
   * `onEvent('broken')` once if the watch stops (etcd down, stream ended, compaction). Uses a
   * raw watch stream, as the membership does: etcd3's Watcher reconnects with timers of its
   * own that can outlive close(); here the caller decides when to watch again.
   * It reports changes from the moment it resolves: read the channel after that, not before,
   * and no promotion falls in between.
   */
  async watchChannel(name: string, channel: string, onEvent: (event: 'change' | 'broken', err?: Error) => void): Promise<ChannelWatch> {
    checkReleaseName(name);
    checkChannel(channel);
    let broken = false;
    const watch = await this.call('watch a channel', async () => {
      const { clients, openWatch } = await this.watchClient();
      return this.countWatch(clients, openWatch(clients.client, {
        key: Buffer.from(channelKey(name, channel)),
        range_end: Buffer.alloc(0), // empty: this one key, not a range
        startRevision: 0n, // 0: from now on
        timeoutMs: this.timeoutMs,
        onPut: () => onEvent('change'),
        onDelete: () => onEvent('change'),
        onBroken: (err) => {
          broken = true;
          onEvent('broken', err);
        },
      }));
    });
    return {
      get broken() {
        return broken;
      },
      close: () => watch.close(),
    };
  }

  /**
   * Points a channel at `version` if, at the moment of writing, it still is what we read
   * (and `expect`, when given, is its current version): two promotions racing from the same
   * state cannot both win. The version must exist. A channel created here starts its history
   * with `seedHistory` (a new `prod@dc-b` inherits what `prod` pointed to, so it can roll back).
   */
  async promote(name: string, channel: string, version: string, expect?: string, seedHistory: string[] = []): Promise<{ previous: string | null; record: ChannelRecord }> {
    await this.getVersion(name, version);
    const current = await this.getChannel(name, channel);
    const currentVersion = current?.record.version ?? null;
    if (expect !== undefined && expect !== (currentVersion ?? '')) {
      throw new FanoutError('PROMOTION_CONFLICT', `channel ${channel} of ${name} is at ${currentVersion ?? '(none)'}, not ${expect}`);
    }
    const history = (current ? [current.record.version, ...current.record.history] : seedHistory).filter((v) => v !== version).slice(0, HISTORY_LIMIT);
    const record: ChannelRecord = { version, history, updatedAt: new Date().toISOString() };
    await this.swapChannel(name, channel, current?.modRevision, record, version);
    return { previous: currentVersion, record };
  }

  /** Moves the channel back to the version it pointed to before the current one. */
  async rollback(name: string, channel: string): Promise<{ from: string; to: string }> {
    const current = await this.getChannel(name, channel);
    if (!current) throw new FanoutError('CHANNEL_NOT_FOUND', `release ${name} has no channel ${channel}`);
    const [to, ...rest] = current.record.history;
    if (!to) throw new FanoutError('INVALID_ARGUMENT', `channel ${channel} of ${name} has no earlier version to roll back to`);
    await this.getVersion(name, to);
    const record: ChannelRecord = { version: to, history: rest, updatedAt: new Date().toISOString() };
    await this.swapChannel(name, channel, current.modRevision, record, to);
    return { from: current.record.version, to };
  }

  /**
   * Takes the host's record for this agent: writes `state` if there is no record, or if the one
   * there is of the same directory on the same machine (this agent's own, from before a restart).
   * A record of another directory, or of another machine with the same hostname, is another
   * agent's with the same host id: it is left alone and returned, with its mod revision (a live
   * agent rewrites it every few seconds, a dead one's goes with its lease).
   */
  async claimAgent(name: string, state: AgentState, ttlSeconds = 15): Promise<{ claimed: true } | { claimed: false; holder: AgentState; modRevision: string }> {
    const key = agentKey(name, state.host);
    const value = JSON.stringify(state);
    return this.call('claim the host record', async () => {
      // Each miss means the record was written between our read and our write: read it again.
      for (let attempt = 1; ; attempt++) {
        const kv = await this.kv.get(key);
        const holder = kv ? recordOrUndefined('agent', kv.key, kv.value) : undefined;
        if (kv && holder && !isOwnRecord(holder, state)) return { claimed: false, holder, modRevision: kv.modRevision };
        const unchanged: Compare = kv ? { key, target: 'MOD', result: 'EQUAL', revision: kv.modRevision } : { key, target: 'CREATE', result: 'EQUAL', revision: '0' };
        const lease = (this.lease ??= await this.kv.grantLease(ttlSeconds));
        try {
          if (await this.kv.putIf([unchanged], key, value, lease)) return { claimed: true };
        } catch (err) {
          // A lease granted by an earlier try that expired since (etcd away longer than the TTL).
          if (!(err instanceof EtcdError && err.grpcCode === GRPC_NOT_FOUND)) throw err;
          this.lease = undefined;
        }
        if (attempt >= CLAIM_ATTEMPTS) throw new Error(`the host record kept changing over ${CLAIM_ATTEMPTS} tries`);
      }
    });
  }

  /** Publishes this agent's state under a lease, so hosts that die drop out of `release status`. */
  async reportAgent(name: string, state: AgentState, ttlSeconds = 15): Promise<void> {
    const key = agentKey(name, state.host);
    const value = JSON.stringify(state);
    await this.call('report agent state', async () => {
      const held = this.lease;
      const lease = held ?? (this.lease = await this.kv.grantLease(ttlSeconds));
      try {
        await this.kv.put(key, value, lease);
        // A lease granted just now has its whole TTL; one held from before is renewed with each report.
        if (held && (await this.kv.keepAlive(lease)) <= 0) throw new EtcdError('the agent lease expired', GRPC_NOT_FOUND);
      } catch (err) {
        // etcd out of space refuses the put but still renews leases: the record stays (with the
        // state written last) while this agent lives. Dropped, the lease ran out within its TTL and
        // every host left `release status` and the rollouts' lists, as if all had died.
        if (held && isEtcdFull(err)) {
          await this.kv.keepAlive(held).catch(() => 0);
          throw err;
        }
        this.lease = undefined;
        if (!(held && err instanceof EtcdError && err.grpcCode === GRPC_NOT_FOUND)) throw err;
        // Expired (the host was away longer than the TTL): a new lease, and the state written again
        // under it, unless another agent took the host id meanwhile (its record is never overwritten).
        const claim = await this.claimAgent(name, state, ttlSeconds);
        if (!claim.claimed) {
          throw new FanoutError('HOST_IN_USE', `host id ${state.host} was taken by ${describeHolder(claim.holder, state)} while this agent's record had expired: give each agent a host id of its own with --host`);
        }
      }
    });
  }

  async listAgents(name: string): Promise<AgentState[]> {
    checkReleaseName(name);
    const all = await this.call('list agents', () => this.kv.getPrefix(`${RELEASES_PREFIX}${name}/agents/`));
    return all
      .map((kv) => readRecord('agent', kv.key, kv.value))
      .sort((a, b) => (a.host < b.host ? -1 : 1));
  }

  /**
   * Every key under the release prefix in one read (versions, channels, agents of every
   * release): what a dashboard summarizes, at the cost of one etcd call however many hosts.
   */
  async snapshot(): Promise<Record<string, string>> {
    const all = await this.call('read the release index', () => this.kv.getPrefix(RELEASES_PREFIX));
    return Object.fromEntries(all.map((kv) => [kv.key, kv.value]));
  }

  private async swapChannel(name: string, channel: string, modRevision: string | undefined, record: ChannelRecord, version: string): Promise<void> {
    const key = channelKey(name, channel);
    const unchanged: Compare = modRevision === undefined ? { key, target: 'CREATE', result: 'EQUAL', revision: '0' } : { key, target: 'MOD', result: 'EQUAL', revision: modRevision };
    const versionExists: Compare = { key: versionKey(name, version), target: 'CREATE', result: 'GREATER', revision: '0' };
    const swapped = await this.call(`move channel ${channel}`, () => this.kv.putIf([unchanged, versionExists], key, JSON.stringify(record)));
    if (!swapped) {
      throw new FanoutError('PROMOTION_CONFLICT', `channel ${channel} of ${name} changed while promoting to ${version}; read it again and retry`);
    }
  }

  /** The gRPC client for watches (etcd3 and gRPC loaded at the first). */
  private watchClient() {
    this.watcher ??= Promise.all([import('../lib/membership/renewal.js'), import('../lib/membership/rpc.js')]).then(([{ EtcdClientRenewal }, { openWatch }]) => ({
      clients: new EtcdClientRenewal(this.connection, this.timeoutMs),
      openWatch,
    }));
    return this.watcher;
  }

  /**
   * A watch opened, or not: a second one in a row etcd did not answer gets the next one a new
   * client. Left to the first, an agent cut from etcd for 90 s went on failing every round until
   * the kernel retransmitted on its old connection, 34 s after the link returned (EtcdClientRenewal).
   */
  private async countWatch<T>(clients: EtcdClientRenewal, opening: Promise<T>): Promise<T> {
    try {
      const watch = await opening;
      this.failedWatches = 0;
      return watch;
    } catch (err) {
      if (clients.noAnswer(err, ++this.failedWatches)) clients.replace();
      throw err;
    }
  }

  /** Runs an etcd call, turning connection failures into ETCD_UNAVAILABLE, and etcd's refusal of a write for want of space into ETCD_FULL. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof FanoutError) throw err;
      if (isEtcdFull(err)) throw etcdFullError(this.endpoints, what, err);
      throw new FanoutError('ETCD_UNAVAILABLE', `etcd (${this.endpoints.join(',')}) unavailable: cannot ${what}: ${(err as Error).message}`, { cause: err });
    }
  }
}

export function versionKey(name: string, version: string): string {
  return `${RELEASES_PREFIX}${name}/versions/${version}`;
}

export function agentKey(name: string, host: string): string {
  return `${RELEASES_PREFIX}${name}/agents/${encodeURIComponent(host)}`;
}

export function channelKey(name: string, channel: string): string {
  return `${RELEASES_PREFIX}${name}/channels/${channel}`;
}

/** `prod`, or `prod@dc-b` for the hosts of one datacenter (see scope.ts). */
export function checkChannel(channel: string): void {
  if (!/^[a-z0-9][a-z0-9._-]{0,62}(@[a-z0-9][a-z0-9._-]{0,62})?$/.test(channel)) throw new FanoutError('INVALID_ARGUMENT', `invalid channel name "${channel}" (NAME or NAME@DATACENTER)`);
}

/** --etcd URL[,URL] or FANOUT_ETCD. */
export function etcdEndpoints(flag?: string): string[] {
  const value = flag ?? process.env.FANOUT_ETCD;
  if (!value) throw new FanoutError('INVALID_ARGUMENT', 'this command needs etcd: --etcd http://HOST:2379 or FANOUT_ETCD');
  return value.split(',').map((s) => s.trim()).filter(Boolean);
}

export interface EtcdFlags {
  etcd?: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
}

/**
 * How release commands reach etcd: --etcd (FANOUT_ETCD), --etcd-ca/--etcd-cert/--etcd-key
 * (FANOUT_ETCD_CA/_CERT/_KEY), and a password only from the environment (FANOUT_ETCD_USER,
 * FANOUT_ETCD_PASSWORD), never from a flag that `ps` would show.
 */
export function etcdConnection(flags: EtcdFlags, env: NodeJS.ProcessEnv = process.env): EtcdConnection {
  const endpoints = etcdEndpoints(flags.etcd ?? env.FANOUT_ETCD ?? '');
  const ca = flags.etcdCa ?? env.FANOUT_ETCD_CA;
  const cert = flags.etcdCert ?? env.FANOUT_ETCD_CERT;
  const key = flags.etcdKey ?? env.FANOUT_ETCD_KEY;
  if ((cert === undefined) !== (key === undefined)) throw new FanoutError('INVALID_ARGUMENT', 'an etcd client certificate needs both --etcd-cert and --etcd-key');
  if (cert && !ca) throw new FanoutError('INVALID_ARGUMENT', 'an etcd client certificate needs --etcd-ca (the CA of the etcd server)');
  const user = env.FANOUT_ETCD_USER;
  return {
    endpoints,
    tls: ca ? { ca, cert, key } : undefined,
    auth: user ? { username: user, password: env.FANOUT_ETCD_PASSWORD ?? '' } : undefined,
  };
}
