import { EventEmitter } from 'node:events';
import { EtcdLeaseInvalidError, Range, type Etcd3 } from 'etcd3';
import { monotonicClock, type Clock } from '../../core/clock.js';
import { FanoutError } from '../../core/errors.js';
import type { Member } from '../../core/types.js';
import { LeaseSchedule } from './schedule.js';
import { silentLogger, type Membership, type MembershipLogger, type MembershipState, type MembershipStatus } from './types.js';
import type { EtcdConnection } from './client.js';
import { EtcdClientRenewal } from './renewal.js';
import { decodeMember, keepaliveOnce, openWatch, type PrefixWatch } from './rpc.js';
import { MemberRecords } from './records.js';
import { OutageState, errorText } from './outage.js';
import { WakeablePause } from './pause.js';
import { etcdFullError, isEtcdFull } from './full.js';

export interface EtcdMembershipOptions extends EtcdConnection {
  /** Key prefix of this cluster's member records. */
  prefix?: string;
  /** Registered under prefix + id with a lease, kept alive while running. */
  self?: Member;
  leaseTtlSeconds?: number;
  clock?: Clock;
  logger?: MembershipLogger;
  /** Deadline of each etcd request (and of a watch's or keepalive's answer); default 2 s: an unresponsive etcd must not stall the loop for long. */
  requestTimeoutMs?: number;
  /** start() rejects if the first registration and listing have not succeeded by then. */
  startTimeoutMs?: number;
}

export const DEFAULT_MEMBER_PREFIX = '/fanout/default/members/';

/**
 * Membership kept in etcd: each worker registers itself under a lease it keeps alive, and
 * everyone lists the prefix then watches it, so joins and departures (clean stop = revoke,
 * crash = lease expiry) reach every process within a TTL.
 *
 * One loop does all the talking to etcd, paced by a LeaseSchedule: grant or renew the lease
 * (or, without self, probe), then re-register and re-list if anything was missed. While etcd
 * is unreachable the last known list stays in place and `stale` is true; once it answers
 * again, a lease presumed expired is replaced by a new one, self is registered again and
 * the full list is re-read, so nothing depends on having seen every event.
 *
 * Events: 'change' (Member[]), 'stale' (boolean), 'registered' (leaseId), 'leaseLost' (reason).
 * The member list itself is MemberRecords, the outage state OutageState, the wait WakeablePause.
 */
export class EtcdMembership extends EventEmitter implements Membership {
  readonly prefix: string;
  private readonly self: Member | undefined;
  private readonly ttlSeconds: number;
  private readonly clock: Clock;
  private readonly log: MembershipLogger;
  private readonly requestTimeoutMs: number;
  private readonly startTimeoutMs: number;
  /** The etcd client, replaced after rounds with no answer (replaceClient). */
  private readonly clients: EtcdClientRenewal;
  private readonly connection: EtcdConnection;
  private readonly schedule: LeaseSchedule;
  private readonly records: MemberRecords;
  private readonly outage: OutageState;
  private readonly pauses: WakeablePause;
  private leaseId: string | undefined;
  private registered = false;
  /** Another worker's record holds self's id (another URL, a lease not ours): since when, and where. */
  private conflict: { since: number; url: string } | undefined;
  private needsResync = true;
  private synced = false;
  /** etcd refused a write of the last round for want of space (its NOSPACE alarm): the error, until a round passes. */
  private full: Error | undefined;
  private watch: PrefixWatch | undefined;
  private loop: Promise<void> | undefined;
  private stopping = false;
  /** Internal 'round' notifications for start(); kept off the public event names. */
  private readonly rounds = new EventEmitter();

  constructor(opts: EtcdMembershipOptions) {
    super();
    if (opts.endpoints.length === 0) throw new FanoutError('INVALID_CONFIG', 'etcd membership needs at least one endpoint');
    this.prefix = opts.prefix ?? DEFAULT_MEMBER_PREFIX;
    this.self = opts.self ? { ...opts.self } : undefined;
    this.ttlSeconds = opts.leaseTtlSeconds ?? 10;
    this.clock = opts.clock ?? monotonicClock;
    this.log = opts.logger ?? silentLogger;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 2000;
    this.startTimeoutMs = opts.startTimeoutMs ?? 10_000;
    if (!Number.isInteger(this.ttlSeconds) || this.ttlSeconds < 1) {
      throw new FanoutError('INVALID_CONFIG', `leaseTtlSeconds must be a whole number ≥ 1, got ${this.ttlSeconds}`);
    }
    this.schedule = new LeaseSchedule({ ttlMs: this.ttlSeconds * 1000, clock: this.clock });
    // Every unary call gets this deadline; the watch and keepalive streams get our own timers.
    this.connection = { endpoints: opts.endpoints, tls: opts.tls, auth: opts.auth };
    this.clients = new EtcdClientRenewal(this.connection, this.requestTimeoutMs);
    this.records = new MemberRecords({ prefix: this.prefix, self: this.self, log: this.log, stopping: () => this.stopping, onChange: (list) => this.emit('change', list) });
    this.outage = new OutageState(this.clock, this.log, () => this.records.count, (stale) => this.emit('stale', stale));
    this.pauses = new WakeablePause(this.clock);
  }

  private get client(): Etcd3 {
    return this.clients.client;
  }

  get stale(): boolean {
    return this.outage.stale;
  }

  /** The lease self is registered under, if any (diagnostics, tests). */
  get lease(): string | undefined {
    return this.leaseId;
  }

  members(): Member[] {
    return this.records.members();
  }

  status(): MembershipStatus {
    const { conflict } = this;
    const status: MembershipStatus = { state: this.state(), stale: this.stale, ignored: this.records.ignored() };
    if (conflict) status.heldBy = { url: conflict.url, since: new Date(conflict.since).toISOString() };
    return status;
  }

  state(): MembershipState {
    return this.conflict ? 'id-taken' : !this.synced ? 'starting' : !this.self || this.registered ? 'registered' : 'registering';
  }

  /** Resolves once self is registered (if given) and the list was read; the loop then keeps running. */
  async start(): Promise<void> {
    if (this.loop) return;
    this.loop = this.run();
    const deadline = this.clock.now() + this.startTimeoutMs;
    while (!this.synced || this.conflict) {
      if (this.stopping) throw new FanoutError('ABORTED', 'membership stopped while starting');
      const { conflict } = this;
      // A record of a worker that died keeps its id until its lease expires: wait that long (and
      // a little); one still there after is kept alive by a running worker with the same id.
      if (conflict && this.clock.now() >= conflict.since + this.ttlSeconds * 1000 + 2000) {
        await this.stop({ deregister: true });
        throw new FanoutError('INVALID_CONFIG', `worker id ${this.self!.id} is already registered by a running worker at ${conflict.url}: give each worker its own id`);
      }
      if (!conflict && this.clock.now() >= deadline) {
        const { full } = this;
        await this.stop({ deregister: false });
        // etcd answered, and refused: saying "no answer" sent operators looking at the network.
        if (full) throw etcdFullError(this.connection.endpoints, `register worker ${this.self?.id} (tried for ${this.startTimeoutMs} ms)`, full);
        throw new FanoutError('WORKER_UNAVAILABLE', `etcd membership: no answer from etcd within ${this.startTimeoutMs} ms`);
      }
      await this.nextRound();
    }
  }

  /** Resolves after the loop's next round (success or failure) or its end. */
  private nextRound(): Promise<void> {
    return new Promise<void>((resolve) => this.rounds.once('round', resolve));
  }

  /**
   * Stops the loop and the watch, revokes the lease (deleting the registration at once, so
   * others need not wait a TTL), and closes the client. `deregister: false` leaves the lease to
   * expire, as a crash would (used by tests).
   */
  async stop(opts: { deregister?: boolean } = {}): Promise<void> {
    if (this.stopping) return this.loop?.then(() => undefined);
    this.stopping = true;
    this.wakeUp();
    await this.loop;
    this.watch?.close();
    this.watch = undefined;
    if (opts.deregister !== false && this.leaseId !== undefined) {
      try {
        await this.client.leaseClient.leaseRevoke({ ID: this.leaseId });
      } catch (err) {
        this.log.warn({ err: errorText(err), lease: this.leaseId }, 'could not revoke lease; the registration will expire with it');
      }
      this.schedule.released();
    }
    this.client.close();
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      if (this.schedule.checkExpiry() && this.self) this.leaseLost('expired');
      const step = this.schedule.next();
      const wait = step.at - this.clock.now();
      // A live lease whose record is missing (deleted by someone, or the put failed after a
      // grant) is fixed at once rather than at the next renewal, unless we are backing off.
      const urgent = !!this.self && this.leaseId !== undefined && !this.registered && !this.conflict && this.schedule.failures === 0;
      if (wait > 0 && !urgent) {
        await this.pauses.pause(wait);
        continue; // re-decide: time passed, the lease may have expired, a watch may have broken
      }
      await this.round(step.action);
      this.rounds.emit('round');
    }
    this.rounds.emit('round');
  }

  /** One exchange with etcd: keep the lease (or probe), register, and re-list if needed. */
  private async round(action: 'grant' | 'renew'): Promise<void> {
    const sentAt = this.clock.now();
    try {
      if (!this.self) {
        // Without a lease to keep, a cheap count-only read tells whether etcd is there.
        await this.client.kv.range({ ...this.prefixRange(), count_only: true });
        this.schedule.granted(sentAt);
      } else if (action === 'grant' || this.leaseId === undefined) {
        const res = await this.client.leaseClient.leaseGrant({ TTL: this.ttlSeconds });
        this.leaseId = res.ID;
        this.registered = false;
        this.schedule.granted(sentAt, Number(res.TTL) * 1000);
      } else {
        const ttl = await keepaliveOnce(this.client, this.leaseId, this.requestTimeoutMs);
        if (ttl <= 0) throw new EtcdLeaseInvalidError(this.leaseId);
        this.schedule.renewed(sentAt, ttl * 1000);
      }
      if (this.self && !this.registered) await this.register(this.self, this.leaseId!);
      if (this.needsResync) await this.resync();
      if (this.full) this.log.info({}, 'etcd takes writes again (its space alarm is over); registered');
      this.full = undefined;
      this.outage.set(false);
      this.synced = true;
    } catch (err) {
      if (this.stopping) return;
      if (err instanceof EtcdLeaseInvalidError) {
        // etcd answered: the lease is gone (expired while we were away, or revoked). Not an
        // outage: get a new one right away.
        this.schedule.lost();
        this.leaseLost('revoked');
        return;
      }
      this.schedule.failed();
      this.needsResync = true;
      if (isEtcdFull(err)) this.noteFull(err as Error);
      else this.full = undefined;
      if (this.clients.noAnswer(err, this.schedule.failures)) this.replaceClient();
      if (this.outage.stale) this.log.debug({ err: errorText(err), failures: this.schedule.failures }, 'etcd still unreachable');
      this.outage.set(true, err);
    }
  }

  /** A second round in a row got no answer: a new client, with connections of its own (EtcdClientRenewal says why). */
  private replaceClient(): void {
    this.watch?.close();
    this.watch = undefined;
    this.clients.replace();
  }

  /**
   * Writes self's record under the lease, unless another worker's holds the id: a record of
   * another URL under a lease not ours (two workers configured with one id; each overwriting
   * the other would hide one from every ring, and both would read the same pages from the
   * source). Then nothing is written, `conflict` says who, and the next round asks again (a
   * dead worker's record goes with its lease; start() gives up on a live one).
   */
  private async register(self: Member, lease: string): Promise<void> {
    const key = Buffer.from(this.prefix + self.id);
    const value = Buffer.from(JSON.stringify(self));
    const answer = await this.client.kv.txn({
      compare: [{ key, target: 'Version', result: 'Equal', version: 0 }],
      success: [{ request_put: { key, value, lease } }],
      failure: [{ request_range: { key } }],
    });
    if (!answer.succeeded) {
      const held = answer.responses[0]?.response_range?.kvs[0];
      const holder = held ? decodeMember(this.prefix, held.key, held.value) : undefined;
      // A record under no lease is no running worker's (workers always register under one):
      // written by hand, it is overwritten rather than waited for, as it would never expire.
      const leased = held !== undefined && String(held.lease) !== '0';
      if (held && leased && String(held.lease) !== String(lease) && holder && holder.url !== self.url) {
        if (!this.conflict) {
          this.conflict = { since: this.clock.now(), url: holder.url };
          this.log.warn({ id: self.id, url: self.url, holder: holder.url }, 'another worker is registered with this id at another address; this one stays out of the ring until that record goes (its /readyz answers 503 meanwhile)');
        }
        return;
      }
      // Self's own record (this lease, or this address from before a restart): written again.
      await this.client.kv.put({ key, value, lease });
    }
    this.conflict = undefined;
    this.registered = true;
    this.log.info({ id: self.id, lease }, 'registered in etcd');
    this.emit('registered', lease);
  }

  /** Lists the prefix and watches from the listing's revision on, so no change falls between. */
  private async resync(): Promise<void> {
    this.watch?.close();
    this.watch = undefined;
    const res = await this.client.kv.range(this.prefixRange());
    this.records.replace(res.kvs);
    this.watch = await openWatch(this.client, {
      ...this.prefixRange(),
      startRevision: BigInt(res.header.revision) + 1n,
      timeoutMs: this.requestTimeoutMs,
      onPut: (key, value, lease) => {
        this.records.put({ key, value, lease });
        // Our record overwritten by someone else (a hand edit, a script): write it again next
        // round, as after a delete; left alone, it would name another address or none for good.
        if (this.overwritesSelf(key, value, lease) && !this.stopping) {
          this.registered = false;
          this.wakeUp();
        }
      },
      onDelete: (key) => {
        const id = this.records.delete(key);
        // Someone deleted our record while the lease lives: write it again next round.
        if (this.self && id === this.self.id && !this.stopping) {
          this.registered = false;
          this.wakeUp();
        }
      },
      onBroken: (err) => {
        if (this.stopping) return;
        this.log.debug({ err: errorText(err) }, 'etcd watch broke; will re-list');
        this.schedule.failed();
        this.needsResync = true;
        this.outage.set(true, err);
        this.wakeUp();
      },
    });
    this.needsResync = false;
  }

  /** A put on self's key that is not self's record under self's lease. */
  private overwritesSelf(key: Buffer, value: Buffer, lease: string): boolean {
    if (!this.self || !this.registered || key.toString() !== this.prefix + this.self.id) return false;
    return value.toString() !== JSON.stringify(this.self) || lease !== String(this.leaseId);
  }

  /**
   * etcd answered a grant or a registration with its NOSPACE refusal. Running workers keep their
   * leases through it (renewals are served); this one (new, restarted, or its record deleted)
   * stays out of the rings until an operator frees space: said once, with what to do, rather than
   * only "etcd unreachable".
   */
  private noteFull(err: Error): void {
    if (!this.full) this.log.warn({ err: etcdFullError(this.connection.endpoints, 'register this worker', err).message }, 'etcd is out of space: this worker is not registered until it takes writes again');
    this.full = err;
  }

  private leaseLost(reason: 'expired' | 'revoked'): void {
    this.log.warn({ lease: this.leaseId, reason }, 'etcd lease lost; will register again under a new lease');
    this.leaseId = undefined;
    this.registered = false;
    this.emit('leaseLost', reason);
  }

  private prefixRange(): { key: Buffer; range_end: Buffer } {
    const range = Range.prefix(this.prefix);
    return { key: range.start, range_end: range.end };
  }

  /** Cuts the loop's current wait short (watch broke, record deleted, stop). */
  private wakeUp(): void {
    this.pauses.wakeUp();
  }
}
