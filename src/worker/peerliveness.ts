import { monotonicClock, type Clock } from '../core/clock.js';
import { FanoutError } from '../core/errors.js';
import type { Member } from '../core/types.js';
import type { PageProgress } from '../lib/cluster/index.js';

/** How long a dead peer keeps being re-checked in the background before it is simply forgotten. */
const GIVE_UP_AFTER_MS = 10 * 60_000;
/**
 * How long relays read the source instead of asking an owner that sent a page failing its
 * checksum. Its health check cannot clear it (it answers), so the skip simply ends: as long as a
 * reader's fault for a missed deadline (client/health.ts), one retry of the owner each 30 s.
 * It ends sooner when the owner confirms it dropped every such page (droppedCorrupt).
 */
export const CORRUPT_SKIP_MS = 30_000;

export interface PeerLivenessOptions {
  /** A relay quiet for this long (no byte from the owner on any relay) makes the worker ask the owner's /healthz. */
  quietMs?: number;
  /** How often a peer that failed its health checks is checked again (it is skipped until it answers). */
  recheckMs?: number;
  /** Ends the background re-checks (the worker stopping). */
  signal?: AbortSignal;
  /** Health checks in a row that must fail before giving up on an owner that answered fast so far. */
  attempts?: number;
  /** The same for an owner whose recent answers were slow (a loaded host): more misses are needed. */
  loadedAttempts?: number;
  /**
   * A relay that has had nothing of its page for this long (before the answer's head, then
   * between body chunks) while its owner answers health checks is stalled: it gives up on the
   * owner (see STALL_SHARE). Unset: a relay waits for the peer deadlines alone.
   */
  stall?: { firstByteMs: number; idleMs: number };
  /** Bounds of a health check's deadline, which is DEADLINE_FACTOR × the owner's recent answer time. */
  minDeadlineMs?: number;
  maxDeadlineMs?: number;
  clock?: Clock;
}

/** A health check's deadline is this many times the owner's recent (slow-biased) answer time. */
export const DEADLINE_FACTOR = 4;
/** An owner whose recent answers took this long is loaded: more missed checks are needed to give up on it. */
export const SLOW_ANSWER_MS = 250;

/**
 * The share of the peer deadlines after which a relay whose owner is alive but sends nothing of
 * its page gives up on the owner. A reader that hedged to this worker waits the same deadlines
 * (its idle timer starting as this relay's does): were the relay to wait them whole, it would
 * read the source a few ms after the reader had given up on it too. 30 s deadlines: 22.5 s.
 */
export const STALL_SHARE = 0.75;

/** What a relay needs: a signal that fires when the owner is found dead, and a way to report progress. */
export interface RelayWatch {
  readonly signal: AbortSignal;
  /** True once the owner failed its health check (the abort was ours, not the caller's). */
  readonly ownerDead: boolean;
  /** True once the relay gave up on an owner that answers its health check but sent nothing of this page (the abort was ours). */
  readonly stalled: boolean;
  /** Something of the page arrived: the answer's head ('headers'), a 102 ('filling'), or a body chunk (no argument). */
  progress(what?: PageProgress): void;
  stop(): void;
}

/**
 * Tells a page owner that is slow (its source is slow, it is busy, its CPU is starved) from one
 * that is not running (SIGSTOP, a hung host). An owner delivering bytes to this worker on any
 * relay, or answering a check, is alive. A relay that has heard nothing from its owner for a while
 * asks the owner's /healthz, with a deadline derived from how fast the owner answered lately, and
 * gives up only after several misses in a row (more for an owner that answered slowly lately; a
 * miss whose deadline fired late, this worker's own loop being starved, does not count). A dead
 * owner is skipped for a while (the relaying worker reads the source itself); a live one keeps
 * the cluster-wide single flight, so a reader's hedge does not become a second source read.
 */
export class PeerLiveness {
  // Deaths and checks are keyed by peerKey (id and URL): a worker restarted under its id at
  // another address is checked there, not skipped for GIVE_UP_AFTER_MS because its old address
  // stays silent. What was heard from an id (bytes, answer times) is the same worker's either way.
  /** Peers that failed their health checks, each with the background loop that re-checks it. */
  private readonly dead = new Set<string>();
  /**
   * Peers that sent a page failing its checksum: when relays may ask it again, and how many such
   * pages it has not yet confirmed dropping.
   */
  private readonly corrupt = new Map<string, { until: number; unconfirmed: number }>();
  /** When each peer last sent us a byte or answered a check. */
  private readonly heard = new Map<string, number>();
  /** Each peer's recent health-check answer time, biased to the slow ones (rises at once, decays slowly). */
  private readonly answerMs = new Map<string, number>();
  /** The health check of each peer in flight, shared by every relay from it. */
  private readonly checking = new Map<string, Promise<'alive' | 'missed' | 'late'>>();
  private readonly quietMs: number;
  private readonly recheckMs: number;
  private readonly signal: AbortSignal | undefined;
  private readonly attempts: number;
  private readonly loadedAttempts: number;
  private readonly minDeadlineMs: number;
  private readonly maxDeadlineMs: number;
  private readonly stall: { firstByteMs: number; idleMs: number } | undefined;
  private readonly clock: Clock;

  constructor(
    private readonly probe: (member: Member, deadlineMs: number) => Promise<boolean>,
    options: PeerLivenessOptions = {},
  ) {
    this.quietMs = options.quietMs ?? 1000;
    this.recheckMs = options.recheckMs ?? 1000;
    this.signal = options.signal;
    this.attempts = Math.max(1, options.attempts ?? 2);
    this.loadedAttempts = Math.max(this.attempts, options.loadedAttempts ?? this.attempts * 2);
    this.minDeadlineMs = options.minDeadlineMs ?? 2000;
    this.maxDeadlineMs = Math.max(this.minDeadlineMs, options.maxDeadlineMs ?? 10_000);
    this.stall = options.stall;
    this.clock = options.clock ?? monotonicClock;
  }

  /** Failed its health checks and has not answered one since: relays skip it. */
  isKnownDead(member: Member): boolean {
    return this.dead.has(peerKey(member));
  }

  /**
   * `member` sent a page that failed its checksum (or more bytes than the page has): a flipped bit
   * on its path, its memory, a bug. Relays read the source instead of asking it for CORRUPT_SKIP_MS.
   */
  sentCorrupt(member: Member): void {
    const now = this.clock.now();
    for (const [key, skip] of this.corrupt) if (skip.until <= now) this.corrupt.delete(key);
    const unconfirmed = (this.corrupt.get(peerKey(member))?.unconfirmed ?? 0) + 1;
    this.corrupt.set(peerKey(member), { until: now + CORRUPT_SKIP_MS, unconfirmed });
  }

  /**
   * `member` answered the report of a page it sent failing its checksum: its stored copy was
   * corrupt and it has dropped it, so it fills that page afresh. Once it has confirmed this for
   * every such page since the skip began, relays ask it again at once: the fault was a copy on
   * its disk, now gone. Before, relays read the source for the whole CORRUPT_SKIP_MS instead of
   * asking an owner that had already dropped the page (found by a fault hunt). An owner whose copy
   * was intact (the bytes broke on the way, in its memory, or it lies) stays skipped.
   */
  droppedCorrupt(member: Member): void {
    const skip = this.corrupt.get(peerKey(member));
    if (!skip) return;
    skip.unconfirmed--;
    if (skip.unconfirmed <= 0) this.corrupt.delete(peerKey(member));
  }

  /** Sent a page failing its checksum within CORRUPT_SKIP_MS (and has not confirmed dropping it): relays skip it. */
  isDistrusted(member: Member): boolean {
    const skip = this.corrupt.get(peerKey(member));
    if (skip === undefined) return false;
    if (skip.until > this.clock.now()) return true;
    this.corrupt.delete(peerKey(member));
    return false;
  }

  /** The deadline of the next health check of `member`. */
  deadlineFor(member: Member): number {
    const recent = this.answerMs.get(member.id) ?? 0;
    return Math.min(this.maxDeadlineMs, Math.max(this.minDeadlineMs, Math.ceil(DEADLINE_FACTOR * recent)));
  }

  /** Missed checks in a row after which `member` is taken for dead. */
  attemptsFor(member: Member): number {
    return (this.answerMs.get(member.id) ?? 0) >= SLOW_ANSWER_MS ? this.loadedAttempts : this.attempts;
  }

  /** `member` sent a byte or answered: alive now. */
  private heardFrom(member: Member): void {
    this.heard.set(member.id, this.clock.now());
  }

  /**
   * One health check. Returns 'alive', 'missed', or 'late': no answer, but the deadline fired
   * long after it was due (this process was starved, so the owner may have answered unread).
   */
  private check(member: Member): Promise<'alive' | 'missed' | 'late'> {
    // One check at a time per peer, whatever the number of relays from it: each relay probing on
    // its own queued 20 probes behind the probe client's two connections to a busy owner, so the
    // later ones missed their deadline and a live owner was taken for dead.
    let running = this.checking.get(peerKey(member));
    if (!running) {
      running = this.checkOnce(member).finally(() => this.checking.delete(peerKey(member)));
      this.checking.set(peerKey(member), running);
    }
    return running;
  }

  private async checkOnce(member: Member): Promise<'alive' | 'missed' | 'late'> {
    const deadline = this.deadlineFor(member);
    const started = this.clock.now();
    const ok = await this.probe(member, deadline).catch(() => false);
    const took = this.clock.now() - started;
    if (ok) {
      const before = this.answerMs.get(member.id) ?? 0;
      this.answerMs.set(member.id, Math.max(took, before * 0.8 + took * 0.2));
      this.heardFrom(member);
      return 'alive';
    }
    return took > deadline * 1.5 ? 'late' : 'missed';
  }

  /**
   * Skips `member` until a background check finds it answering again, so that relays never
   * wait on a stopped owner twice (waiting to find out costs seconds; checking in the
   * background costs one small request a second).
   */
  private markDead(member: Member): void {
    if (this.dead.has(peerKey(member))) return;
    this.dead.add(peerKey(member));
    const since = this.clock.now();
    void (async () => {
      // Bounded: a peer that left the cluster for good stops being checked after a while.
      while (!this.signal?.aborted && this.clock.now() - since < GIVE_UP_AFTER_MS) {
        await this.clock.sleep(this.recheckMs, this.signal).catch(() => {});
        if (this.signal?.aborted) break;
        if ((await this.check(member)) === 'alive') break;
      }
      this.dead.delete(peerKey(member));
    })();
  }

  /** Watches one relay from `member`; the returned signal also follows `parent`. */
  watch(member: Member, parent: AbortSignal): RelayWatch {
    const own = new AbortController();
    const stopped = new AbortController();
    let lastProgress = this.clock.now();
    let ownerDead = false;
    // The stall deadline counts this relay's own page only (lastProgress is also moved on by a
    // health check's answer, and the owner's bytes on other relays say nothing of this one).
    let pageProgress = lastProgress;
    let answered = false;
    let stalled = false;
    const stallAt = () => (this.stall ? pageProgress + STALL_SHARE * (answered ? this.stall.idleMs : this.stall.firstByteMs) : Infinity);
    // Bytes from the owner on any relay count: a busy owner sends some pages while others queue.
    const lastHeard = () => Math.max(lastProgress, this.heard.get(member.id) ?? -Infinity);
    const loop = async () => {
      while (!stopped.signal.aborted) {
        const now = this.clock.now();
        if (now >= stallAt()) {
          stalled = true;
          own.abort(new FanoutError('WORKER_UNAVAILABLE', `page owner ${member.id} (${member.url}) answers its health check but sent nothing of the page for ${now - pageProgress} ms`));
          return;
        }
        const wait = Math.min(lastHeard() + this.quietMs, stallAt()) - now;
        if (wait > 0) {
          await this.clock.sleep(wait, stopped.signal).catch(() => {});
          continue;
        }
        // A loaded host can miss a check or two; a stopped one misses all of them.
        let misses = 0;
        let late = 0;
        let alive = false;
        const since = this.clock.now();
        while (!alive && !stopped.signal.aborted && misses < this.attemptsFor(member) && late < LATE_CHECKS_MAX) {
          const outcome = await this.check(member);
          if (outcome === 'alive' || lastHeard() > since) alive = true;
          else if (outcome === 'late') late++;
          else misses++;
        }
        if (stopped.signal.aborted) return;
        if (!alive) {
          this.markDead(member);
          ownerDead = true;
          own.abort(new FanoutError('WORKER_UNAVAILABLE', `page owner ${member.id} (${member.url}) does not answer its health check`));
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
      get stalled() {
        return stalled;
      },
      progress: (what) => {
        lastProgress = pageProgress = this.clock.now();
        if (what !== 'filling') answered = true;
        this.heardFrom(member);
      },
      stop: () => stopped.abort(STOPPED),
    };
  }
}

/** Checks whose deadline fired late (this process starved) that may be ignored in one round before giving up anyway. */
const LATE_CHECKS_MAX = 3;
/** Why a watch's loop ends (its relay ended): a constant, not a DOMException with a stack per relay. */
const STOPPED = new Error('relay ended');

/** A peer as the liveness maps know it: its id at its address. */
function peerKey(member: Member): string {
  return `${member.id} ${member.url}`;
}
