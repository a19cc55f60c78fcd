import type { Member } from '../../core/types.js';
import { decodeMember } from './rpc.js';
import { sameMembers, sortMembers, type IgnoredRecord, type MembershipLogger } from './types.js';

/** A record as etcd gives it: `lease` is its lease id ('0': none). */
export interface RecordKv {
  key: Buffer;
  value: Buffer;
  lease: string;
}

export interface MemberRecordsOptions {
  /** Key prefix of the cluster's member records. */
  prefix: string;
  /** This process's own record, if it registers one. */
  self?: Member;
  log: MembershipLogger;
  /** True once the membership is stopping: self no longer counts itself. */
  stopping: () => boolean;
  /** Called with the new list (a copy) whenever it changes. */
  onChange: (members: Member[]) => void;
}

/**
 * The member records read from etcd (a listing, then the watch's puts and deletes) and the
 * sorted list made from them, published only when it changes.
 *
 * A record under no lease is not a member: workers always register under a lease, so such a
 * record is no running worker's. Written by hand or by a script, it would never expire: with a
 * live worker's URL it doubled that worker's share of every ring, with a dead URL it was a
 * member every read of its pages failed on, for good (found by a fault hunt). It is listed in
 * `ignored` and logged once, with the command that removes it.
 */
export class MemberRecords {
  private list: Member[] = [];
  private byId = new Map<string, Member>();
  private ignoredByKey = new Map<string, IgnoredRecord>();
  /** URLs of more than one member at the last publish (warned about once). */
  private sharedUrls = new Set<string>();

  constructor(private readonly opts: MemberRecordsOptions) {}

  get count(): number {
    return this.list.length;
  }

  members(): Member[] {
    return this.list.map((m) => ({ ...m }));
  }

  /** Records under the prefix that are not taken as members (sorted by key). */
  ignored(): IgnoredRecord[] {
    return [...this.ignoredByKey.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)).map((r) => ({ ...r }));
  }

  /** A full listing replaces whatever was known. */
  replace(kvs: Iterable<RecordKv>): void {
    const members = new Map<string, Member>();
    const before = this.ignoredByKey;
    this.ignoredByKey = new Map();
    for (const kv of kvs) {
      const member = this.decode(kv, before);
      if (member) members.set(member.id, member);
    }
    this.byId = members;
    this.publish();
  }

  put(kv: RecordKv): void {
    const member = this.decode(kv, this.ignoredByKey);
    // A malformed or leaseless record replaces the member it overwrote, as a listing would drop
    // it: kept, the old entry would stay in this process's ring only, after its worker is gone too.
    if (member) this.byId.set(member.id, member);
    else this.byId.delete(this.idOf(kv.key));
    this.publish();
  }

  /** Removes the record under `key`; returns the member id it named. */
  delete(key: Buffer): string {
    const id = this.idOf(key);
    this.byId.delete(id);
    this.ignoredByKey.delete(key.toString());
    this.publish();
    return id;
  }

  private idOf(key: Buffer): string {
    return key.toString().slice(this.opts.prefix.length);
  }

  /** The member a record names, or undefined (logged; a leaseless one also kept in `ignored`). */
  private decode(kv: RecordKv, ignoredBefore: ReadonlyMap<string, IgnoredRecord>): Member | undefined {
    const key = kv.key.toString();
    const warned = ignoredBefore.has(key);
    this.ignoredByKey.delete(key);
    const member = decodeMember(this.opts.prefix, kv.key, kv.value);
    if (!member) {
      this.opts.log.warn({ key }, 'ignoring a malformed member record');
      return undefined;
    }
    if (kv.lease !== '0') return member;
    this.ignoredByKey.set(key, { key, id: member.id, url: member.url, reason: 'no-lease' });
    // Once per key, not at every listing; self's own key is written back at once (EtcdMembership).
    if (!warned && member.id !== this.opts.self?.id) {
      this.opts.log.warn({ key, url: member.url, remove: `etcdctl del ${key}` }, 'ignoring a member record without a lease: no running worker keeps it (workers register under a lease); remove it');
    }
    return undefined;
  }

  /**
   * A worker always counts itself: its record can be missing from etcd for a while (its lease
   * expired under load and it is registering again, or etcd went away just then), but a worker
   * that runs is alive, and without itself in the ring it would answer every read with 503.
   */
  private publish(): void {
    const { self } = this.opts;
    const own = self && !this.opts.stopping() && !this.byId.has(self.id) ? [self] : [];
    const next = sortMembers([...this.byId.values(), ...own]);
    if (sameMembers(next, this.list)) return;
    this.list = next;
    this.warnSharedUrls();
    this.opts.onChange(this.members());
  }

  /**
   * Members under several ids at one URL, each under a lease, are kept: from here there is no
   * telling which id the process at that URL runs. Briefly, it is a worker restarted under a new
   * id whose old record waits for its lease; for good, several processes advertise one URL
   * (`advertiseUrl` left at a loopback address on every host?), which no ring can mend. One
   * warning per URL while it lasts.
   */
  private warnSharedUrls(): void {
    const ids = new Map<string, string[]>();
    for (const m of this.list) ids.set(m.url, [...(ids.get(m.url) ?? []), m.id]);
    const shared = new Set([...ids].filter(([, of]) => of.length > 1).map(([url]) => url));
    for (const url of shared) {
      if (!this.sharedUrls.has(url)) this.opts.log.warn({ url, ids: ids.get(url) }, 'several members have one URL: a worker restarted under a new id (the old record goes with its lease), or several workers advertise the same address');
    }
    this.sharedUrls = shared;
  }
}
