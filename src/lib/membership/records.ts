import type { Member } from '../../core/types.js';
import { decodeMember } from './rpc.js';
import { sameMembers, sortMembers, type MembershipLogger } from './types.js';

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
 */
export class MemberRecords {
  private list: Member[] = [];
  private byId = new Map<string, Member>();

  constructor(private readonly opts: MemberRecordsOptions) {}

  get count(): number {
    return this.list.length;
  }

  members(): Member[] {
    return this.list.map((m) => ({ ...m }));
  }

  /** A full listing replaces whatever was known. */
  replace(kvs: Iterable<{ key: Buffer; value: Buffer }>): void {
    const members = new Map<string, Member>();
    for (const kv of kvs) {
      const member = this.decode(kv.key, kv.value);
      if (member) members.set(member.id, member);
    }
    this.byId = members;
    this.publish();
  }

  put(key: Buffer, value: Buffer): void {
    const member = this.decode(key, value);
    // A malformed record replaces the member it overwrote, as a listing would drop it: kept,
    // the old entry would stay in this process's ring only, after its worker is gone too.
    if (member) this.byId.set(member.id, member);
    else this.byId.delete(key.toString().slice(this.opts.prefix.length));
    this.publish();
  }

  /** Removes the record under `key`; returns the member id it named. */
  delete(key: Buffer): string {
    const id = key.toString().slice(this.opts.prefix.length);
    this.byId.delete(id);
    this.publish();
    return id;
  }

  private decode(key: Buffer, value: Buffer): Member | undefined {
    const member = decodeMember(this.opts.prefix, key, value);
    if (!member) this.opts.log.warn({ key: key.toString() }, 'ignoring a malformed member record');
    return member;
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
    this.opts.onChange(this.members());
  }
}
