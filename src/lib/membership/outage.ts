import type { Clock } from '../../core/clock.js';
import type { MembershipLogger } from './types.js';
import { isEtcdFull } from './full.js';

/**
 * Whether etcd is unreachable (the member list may be out of date), and what the log says about
 * it: one warning when etcd is lost (whichever notices first: a failed round or a broken watch),
 * one info line when it answers again; retries in between log at debug only (by the caller).
 */
export class OutageState {
  private isStale = false;
  private staleSince = 0;

  constructor(
    private readonly clock: Clock,
    private readonly log: MembershipLogger,
    /** How many members the list holds now (for the log lines). */
    private readonly memberCount: () => number,
    private readonly onChange: (stale: boolean) => void,
  ) {}

  get stale(): boolean {
    return this.isStale;
  }

  set(stale: boolean, err?: unknown): void {
    if (stale === this.isStale) return;
    this.isStale = stale;
    if (stale) {
      this.staleSince = this.clock.now();
      // etcd out of space answers, and refuses: "unreachable" would send operators to the network.
      const what = isEtcdFull(err) ? 'etcd refuses writes (out of space)' : 'etcd unreachable';
      this.log.warn({ err: errorText(err), members: this.memberCount() }, `${what}; keeping the last known members, reads go on`);
    } else {
      const outageMs = this.clock.now() - this.staleSince;
      this.log.info({ members: this.memberCount(), outageMs }, 'etcd reachable again; members re-read');
    }
    this.onChange(stale);
  }
}

/** The message of an etcd/gRPC error, without its stack and metadata objects (one log line). */
export function errorText(err: unknown): string | undefined {
  if (err === undefined) return undefined;
  return err instanceof Error ? err.message : String(err);
}
