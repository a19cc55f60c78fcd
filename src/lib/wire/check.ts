import { FanoutError } from '../../core/errors.js';

/*
 * Small checks of the JSON answers the SDK builds on (/v1/cluster, stat, list), without zod:
 * every `fanout cat` and `stat` checks them, and loading zod took ≈40 ms of a CLI's fixed cost
 * (clusterinfo.ts). A failed check is an Invalid naming the field; checkedAnswer turns it into
 * WORKER_UNAVAILABLE, as parseAnswer does for zod's.
 */

/**
 * The most members a cluster answer may name: each costs the SDK a ring of 1024 points, and a
 * foreign or broken server naming 50,000 took a `fanout cat` to 2.3 GB. The schema (schemas.ts) says the same.
 */
export const MAX_MEMBERS = 4096;

export type Check = (value: unknown, at: string) => void;

export class Invalid extends Error {
  constructor(
    readonly at: string,
    message: string,
  ) {
    super(message);
  }
}

export const fail = (at: string, message: string): never => {
  throw new Invalid(at, message);
};
export const isString: Check = (v, at) => typeof v === 'string' || fail(at, 'expected string');
export const isNonEmptyString: Check = (v, at) => (isString(v, at), (v as string).length >= 1 || fail(at, 'expected a non-empty string'));
export const isNumber: Check = (v, at) => (typeof v === 'number' && Number.isFinite(v)) || fail(at, 'expected number');
export const isNonNegative: Check = (v, at) => (isNumber(v, at), (v as number) >= 0 || fail(at, 'expected a number >= 0'));
export const isPositiveInt: Check = (v, at) => (isNumber(v, at), (Number.isInteger(v) && (v as number) > 0) || fail(at, 'expected a positive integer'));
/** A byte count or offset: a whole number from 0 to 2^53 − 1. */
export const isByteCount: Check = (v, at) => Number.isSafeInteger(v) && (v as number) >= 0 || fail(at, 'expected a whole number of bytes >= 0');
export const isBoolean: Check = (v, at) => typeof v === 'boolean' || fail(at, 'expected boolean');
export const isObject = (v: unknown, at: string): Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : fail(at, 'expected object');
export const arrayOf = <T>(v: unknown, at: string, item: (value: unknown, at: string) => T): T[] =>
  Array.isArray(v) ? v.map((x, i) => item(x, at ? `${at}.${i}` : String(i))) : fail(at, 'expected array');
export const optional = (check: Check): Check => (v, at) => v === undefined || check(v, at);

/** `check()`'s result; a failed check is WORKER_UNAVAILABLE naming `what` (the route) and the field. */
export function checkedAnswer<T>(what: string, check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (!(err instanceof Invalid)) throw err;
    const where = err.at ? ` at ${err.at}` : '';
    throw new FanoutError('WORKER_UNAVAILABLE', `${what}: not a fanout answer (${err.message}${where})`);
  }
}
