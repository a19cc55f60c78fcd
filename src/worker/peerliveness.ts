import { systemClock, type Clock } from '../core/clock.js';
import { FanoutError } from '../core/errors.js';
import type { Member } from '../core/types.js';

/** How long a dead peer keeps being re-checked in the background before it is simply forgotten. */
const GIVE_UP_AFTER_MS = 10 * 60_000;

export interface PeerLivenessOptions {
  /** A relay quiet for this long makes the worker ask the owner's /healthz. */
  quietMs?: number;
  /** How often a peer that failed its health checks is checked again (it is skipped until it answers). */
  recheckMs?: number;
  /** Ends the background re-checks (the worker stopping). */
  signal?: AbortSignal;
  /** Health checks in a row that must fail (each bounded by the probe's own deadline) before giving up on the owner. */
  attempts?: number;
  clock?: Clock;
}

/** What a relay needs: a signal that fires when the owner is found dead, and a way to report progress. */
export interface RelayWatch {
  readonly signal: AbortSignal;
  /** True once the owner failed its health check (the abort was ours, not the caller's). */
  readonly ownerDead: boolean;
  progress(): void;
  stop(): void;
}

/**
 * Tells a page owner that is slow (its source is slow, it is busy) from one that is not running
 * (SIGSTOP, a hung host): a relay that has been quiet for a while asks the owner's /healthz,
 * which a live worker answers at once whatever its source does. A dead owner is skipped for a
 * while (the relaying worker reads the source itself); a live one keeps the cluster-wide single
 * flight, so a reader's hedge does not become a second source read.
 */
export class PeerLiveness {
  /** Peers that failed their health checks, each with the background loop that re-checks it. */
  private readonly dead = new Set<string>();
  private readonly quietMs: number;
  private readonly recheckMs: number;
  private readonly signal: AbortSignal | undefined;
  private readonly attempts: number;
  private readonly clock: Clock;

  constructor(
    private readonly probe: (member: Member) => Promise<boolean>,
    options: PeerLivenessOptions = {},
  ) {
    this.quietMs = options.quietMs ?? 1000;
    this.recheckMs = options.recheckMs ?? 1000;
    this.signal = options.signal;
    this.attempts = Math.max(1, options.attempts ?? 2);
    this.clock = options.clock ?? systemClock;
  }

  /** Failed its health checks and has not answered one since: relays skip it. */
  isKnownDead(member: Member): boolean {
    return this.dead.has(member.id);
  }

  /**
   * Skips `member` until a background check finds it answering again, so that relays never
   * wait on a stopped owner twice (waiting to find out costs seconds; checking in the
   * background costs one small request a second).
   */
  private markDead(member: Member): void {
    if (this.dead.has(member.id)) return;
    this.dead.add(member.id);
    const since = this.clock.now();
    void (async () => {
      // Bounded: a peer that left the cluster for good stops being checked after a while.
      while (!this.signal?.aborted && this.clock.now() - since < GIVE_UP_AFTER_MS) {
        await this.clock.sleep(this.recheckMs, this.signal).catch(() => {});
        if (this.signal?.aborted) break;
        if (await this.probe(member).catch(() => false)) break;
      }
      this.dead.delete(member.id);
    })();
  }

  /** Watches one relay from `member`; the returned signal also follows `parent`. */
  watch(member: Member, parent: AbortSignal): RelayWatch {
    const own = new AbortController();
    const stopped = new AbortController();
    let lastProgress = this.clock.now();
    let ownerDead = false;
    const loop = async () => {
      while (!stopped.signal.aborted) {
        const wait = lastProgress + this.quietMs - this.clock.now();
        if (wait > 0) {
          await this.clock.sleep(wait, stopped.signal).catch(() => {});
          continue;
        }
        // A loaded host can miss one check; a stopped one misses all of them.
        let alive = false;
        for (let i = 0; i < this.attempts && !alive && !stopped.signal.aborted; i++) alive = await this.probe(member).catch(() => false);
        if (stopped.signal.aborted) return;
        if (!alive) {
          this.markDead(member);
          ownerDead = true;
          own.abort(new FanoutError('WORKER_UNAVAILABLE', `page owner ${member.id} does not answer its health check`));
          return;
        }
        lastProgress = this.clock.now();
      }
    };
    void loop();
    return {
      signal: AbortSignal.any([parent, own.signal]),
      get ownerDead() {
        return ownerDead;
      },
      progress: () => void (lastProgress = this.clock.now()),
      stop: () => stopped.abort(),
    };
  }
}
