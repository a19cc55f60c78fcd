import type { Clock } from '../../core/clock.js';
import { FanoutError } from '../../core/errors.js';

/** How many refused credentials one client address may give (auth.attempts in the config). */
export interface AttemptLimits {
  /** Refused credentials per address and window; 0 turns the limit off. */
  max: number;
  /** The window, in ms, counted from the address's first refusal in it. */
  window: number;
  /** Addresses remembered at most; beyond it the oldest is forgotten. */
  clients: number;
}

export const DEFAULT_ATTEMPT_LIMITS: AttemptLimits = { max: 20, window: 60_000, clients: 10_000 };

/** Where a throttled attempt was refused, for the metric. */
export type AttemptServer = 'api' | 'dashboard' | 'gateway';

/**
 * Where a request comes from: its socket, read only when a credential is checked (a socket's
 * first read of remoteAddress is a getpeername call; requests without credentials never pay it).
 */
export interface ClientAddress {
  readonly remoteAddress?: string | undefined;
}

interface Tally {
  /** When the window of this address began (its first refusal in it). */
  first: number;
  refused: number;
}

/**
 * Refused credentials per client address: after `max` of them within `window`, every credential
 * from that address is refused unchecked until the window ends, so tokens and S3 secrets cannot be
 * guessed as fast as a client sends (~1,500 guesses/s on one worker before). Only refusals of an
 * unknown credential count: requests that succeed, give none, or come from a peer (HMAC-proven) are
 * never counted, and an address that never failed is never slowed. The table holds at most
 * `clients` addresses, the oldest dropped, so its memory is bounded whatever an attacker does.
 *
 * The warm path (`retryAfter` on every credentialed request) is a size check while no address
 * has failed and one Map lookup by the socket's address string otherwise: no allocation.
 */
export class FailedAttempts {
  private readonly tallies = new Map<string, Tally>();
  /** Told of each attempt refused because its address is throttled (the metric). */
  onThrottled: (server: AttemptServer) => void = () => {};

  constructor(
    readonly limits: AttemptLimits,
    private readonly clock: Clock,
  ) {}

  /** Addresses remembered now (for tests and the bound). */
  get size(): number {
    return this.tallies.size;
  }

  /** ms until `client` may try a credential again; 0 when it may now. */
  retryAfter(client: ClientAddress | null | undefined): number {
    if (this.tallies.size === 0 || client == null) return 0;
    const from = client.remoteAddress;
    if (from === undefined) return 0;
    const tally = this.tallies.get(from);
    if (tally === undefined || tally.refused < this.limits.max) return 0;
    const left = tally.first + this.limits.window - this.clock.now();
    if (left > 0) return left;
    this.tallies.delete(from);
    return 0;
  }

  /** Throws TOO_MANY_ATTEMPTS (counted) while `client` is throttled. */
  check(client: ClientAddress | undefined, server: AttemptServer): void {
    const wait = this.retryAfter(client);
    if (wait > 0) throw this.throttled(client!.remoteAddress!, wait, server);
  }

  /** The refusal of a throttled attempt, counted; its `retryAfterSeconds` for the Retry-After header. */
  throttled(from: string, waitMs: number, server: AttemptServer): ThrottledError {
    this.onThrottled(server);
    return new ThrottledError(from, Math.max(1, Math.ceil(waitMs / 1000)), this.limits);
  }

  /** Notes a refused credential from `client`. */
  failed(client: ClientAddress | null | undefined): void {
    const from = client?.remoteAddress;
    if (from === undefined || this.limits.max === 0) return;
    const now = this.clock.now();
    const tally = this.tallies.get(from);
    if (tally !== undefined && now - tally.first < this.limits.window) {
      tally.refused++;
      return;
    }
    // A new window goes to the end of the insertion order, so the first key is the oldest.
    if (tally !== undefined) this.tallies.delete(from);
    else if (this.tallies.size >= this.limits.clients) this.tallies.delete(this.tallies.keys().next().value as string);
    this.tallies.set(from, { first: now, refused: 1 });
  }
}

/** TOO_MANY_ATTEMPTS, with the seconds a client should wait (Retry-After). */
export class ThrottledError extends FanoutError {
  constructor(
    from: string,
    readonly retryAfterSeconds: number,
    limits: AttemptLimits,
  ) {
    super(
      'TOO_MANY_ATTEMPTS',
      `${limits.max} refused credentials from ${from} within ${limits.window / 1000} s (auth.attempts): credentials from this address are refused unchecked; try again in ${retryAfterSeconds} s`,
    );
  }
}
