import { EventEmitter } from 'node:events';
import { FanoutError } from '../../core/errors.js';
import type { Member } from '../../core/types.js';
import { sortMembers, type Membership, type MembershipState, type MembershipStatus } from './types.js';

/** A fixed member list (from configuration): never stale, never changes. */
export class StaticMembership extends EventEmitter implements Membership {
  private readonly list: Member[];
  readonly stale = false;

  constructor(members: readonly Member[]) {
    super();
    const ids = new Set<string>();
    for (const m of members) {
      if (ids.has(m.id)) throw new FanoutError('INVALID_CONFIG', `member id "${m.id}" appears twice`);
      ids.add(m.id);
    }
    this.list = sortMembers(members);
  }

  async start(): Promise<void> {}

  members(): Member[] {
    return this.list.map((m) => ({ ...m }));
  }

  status(): MembershipStatus {
    return { state: this.state(), stale: false, ignored: [] };
  }

  state(): MembershipState {
    return 'static';
  }

  async stop(): Promise<void> {}
}
