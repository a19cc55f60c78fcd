import type { Clock } from '../../core/clock.js';
import { FanoutError } from '../../core/errors.js';
import { LatencyTracker } from './latency.js';

/**
 * When to ask a second worker for a page the first has not delivered: 'auto' derives the delay
 * from recently observed times to first byte, a number fixes it (ms), 'off' never hedges.
 */
export type HedgeSetting = 'auto' | 'off' | number;

export const DEFAULT_HEDGE: HedgeSetting = 'auto';

export interface HedgePolicyOptions {
  /** Delay = multiplier × recent p95 time to first byte… */
  multiplier?: number;
  /** …but never less than this (a page served in a few ms must not be asked for twice)… */
  floorMs?: number;
  /** …nor more than this, so that a stalled worker is passed by even when pages are slow. */
  ceilingMs?: number;
  /** Before enough pages were timed. */
  initialMs?: number;
  /** Speculative hedges allowed per page fetched (the extra load hedging may add)… */
  budgetRatio?: number;
  /** …and in a burst. */
  budgetBurst?: number;
}

export const HEDGE_DEFAULTS = {
  multiplier: 3,
  floorMs: 100,
  ceilingMs: 5_000,
  initialMs: 1_000,
  budgetRatio: 0.1,
  budgetBurst: 10,
} as const;

/**
 * Decides the hedge delay and whether a hedge may go out. Speculative hedges are budgeted (a
 * fraction of page fetches plus a burst) so that a uniformly slow cluster is not sent every
 * page twice; a hedge away from a worker already known to be slow is failover, not speculation,
 * and is not counted.
 */
export class HedgePolicy {
  readonly firstByte: LatencyTracker;
  private readonly settings: Required<HedgePolicyOptions>;
  private tokens: number;

  constructor(
    readonly setting: HedgeSetting,
    clock: Clock,
    options: HedgePolicyOptions = {},
  ) {
    this.settings = { ...HEDGE_DEFAULTS, ...options };
    this.tokens = this.settings.budgetBurst;
    this.firstByte = new LatencyTracker(clock);
  }

  /** ms to wait for progress before hedging, or undefined when hedging is off. */
  delayMs(): number | undefined {
    if (this.setting === 'off') return undefined;
    if (typeof this.setting === 'number') return this.setting;
    const { multiplier, floorMs, ceilingMs, initialMs } = this.settings;
    const p95 = this.firstByte.quantile(0.95);
    if (p95 === undefined) return initialMs;
    return Math.min(ceilingMs, Math.max(floorMs, Math.ceil(multiplier * p95)));
  }

  /** A page request got its response headers after `ms`. */
  observeFirstByte(ms: number): void {
    this.firstByte.record(ms);
  }

  /** A page fetch started: it earns a share of a hedge. */
  onFetch(): void {
    this.tokens = Math.min(this.settings.budgetBurst, this.tokens + this.settings.budgetRatio);
  }

  /** May a hedge go out now? `failover` hedges (away from a worker known to be slow) are free. */
  tryHedge(failover: boolean): boolean {
    if (failover) return true;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** Parses `--hedge` / the `hedge` option: "auto", "off" (or "0"), or a delay in ms ("250", "250ms", "1s"). */
export function parseHedge(value: string | number | undefined, fallback: HedgeSetting = DEFAULT_HEDGE): HedgeSetting {
  if (value === undefined || value === '') return fallback;
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw invalidHedge(String(value));
    return value === 0 ? 'off' : value;
  }
  const text = value.trim().toLowerCase();
  if (text === 'auto' || text === 'off') return text;
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s)?$/.exec(text);
  if (!match) throw invalidHedge(value);
  const ms = Math.round(Number(match[1]) * (match[2] === 's' ? 1000 : 1));
  return ms === 0 ? 'off' : ms;
}

function invalidHedge(value: string): FanoutError {
  return new FanoutError('INVALID_ARGUMENT', `invalid hedge "${value}": use auto, off, or a delay such as 200 or 200ms`);
}
