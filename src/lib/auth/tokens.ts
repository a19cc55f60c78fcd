import { createHash, timingSafeEqual } from 'node:crypto';
import { FanoutError } from '../../core/errors.js';

/** What a token may do: `read` data, or also `admin` (load, pin, unpin, free, ttl, policy). */
export type Role = 'read' | 'admin';

export interface TokenEntry {
  token: string;
  role: Role;
}

/** Shortest token accepted: a guessable token is no better than none. */
export const MIN_TOKEN_LENGTH = 16;

/**
 * What a token may be made of: it travels in an Authorization header, whose parser (bearerToken)
 * takes one run of printable characters without spaces; any other token could never authenticate.
 */
export const TOKEN_TEXT = /^[\x21-\x7e]+$/;

/**
 * Compares two secrets in time that depends on neither their content nor their lengths:
 * both are hashed to fixed-length digests first, so timingSafeEqual never sees a length
 * difference and an attacker learns nothing from how long a refusal took.
 */
export function constantTimeEqual(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

function digest(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest();
}

/** The token of an `Authorization: Bearer TOKEN` header, if that is what it holds. */
export function bearerToken(header: string | string[] | undefined): string | undefined {
  if (typeof header !== 'string') return undefined;
  const match = /^\s*Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

/** The tokens a worker accepts and the role each one carries. */
export class TokenTable {
  private readonly entries: { digest: Buffer; role: Role }[];

  constructor(tokens: readonly TokenEntry[]) {
    // One token, one role. Taking the stronger of two made a read token listed again as admin
    // (or exported as FANOUT_TOKEN beside a worker, see env.ts) an admin token without a word.
    const first = new Map<string, number>();
    tokens.forEach((t, i) => {
      const j = first.get(t.token);
      if (j === undefined) first.set(t.token, i);
      else if (tokens[j]!.role !== t.role) {
        throw new FanoutError('INVALID_CONFIG', `auth.tokens.${j} and auth.tokens.${i} are the same token with two roles (${tokens[j]!.role} and ${t.role}): give each token one role`);
      }
    });
    this.entries = tokens.map((t) => ({ digest: digest(t.token), role: t.role }));
  }

  get hasAdmin(): boolean {
    return this.entries.some((e) => e.role === 'admin');
  }

  /**
   * The role of a presented token, or undefined for an unknown one. Every entry is compared
   * whatever matched, so the time taken does not say which entry (if any) it was; a token
   * listed twice has one role (the constructor refuses two).
   */
  roleOf(token: string): Role | undefined {
    const presented = digest(token);
    let role: Role | undefined;
    for (const entry of this.entries) {
      if (timingSafeEqual(presented, entry.digest)) role = entry.role;
    }
    return role;
  }
}

/** Whether a role may make a call that needs `need`. */
export function allows(role: Role, need: Role): boolean {
  return role === 'admin' || need === 'read';
}
