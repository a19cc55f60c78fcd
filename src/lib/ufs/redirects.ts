import type { IncomingHttpHeaders } from 'node:http';
import { header } from './validators.js';

/** Files whose redirect target is remembered at once (least recently used first out). */
export const REMEMBERED_REDIRECTS = 4096;
/** A longer target (a signed URL with a long policy, a hostile Location) is followed but not kept: 4,096 of them stay under 32 MiB. */
const MAX_TARGET_CHARS = 8192;

/**
 * How long a redirect answer may be reused, as RFC 9111 tells a private cache: its explicit
 * freshness (Cache-Control max-age, else Expires − Date) when it gives one; otherwise 301 and 308
 * for good (heuristically cacheable, RFC 9110 15.4.2/15.4.9) and 302, 303, 307 not at all (the
 * client "ought to continue to use the target URI for future requests"). `no-store` and
 * `no-cache` forbid reuse. Returns ms from now, Infinity for "until it fails", 0 for "not".
 */
export function redirectLifetime(status: number, headers: IncomingHttpHeaders, now: number): number {
  const cacheControl = (header(headers, 'cache-control') ?? '').toLowerCase();
  const directives = new Map(
    cacheControl
      .split(',')
      .map((d) => d.trim())
      .filter(Boolean)
      .map((d) => {
        const [name, value = ''] = d.split('=', 2) as [string, string?];
        return [name.trim(), value.trim().replace(/^"(.*)"$/, '$1')] as const;
      }),
  );
  if (directives.has('no-store') || directives.has('no-cache')) return 0;
  const maxAge = directives.get('max-age');
  if (maxAge !== undefined) return /^\d+$/.test(maxAge) ? Number(maxAge) * 1000 : 0;
  const expires = header(headers, 'expires');
  if (expires !== undefined) {
    const at = Date.parse(expires);
    // An invalid Expires (often "0" or "-1") means "already expired" (RFC 9111 5.3).
    if (Number.isNaN(at)) return 0;
    const date = Date.parse(header(headers, 'date') ?? '');
    return Math.max(0, at - (Number.isNaN(date) ? now : date));
  }
  return status === 301 || status === 308 ? Infinity : 0;
}

interface Remembered {
  version: string;
  target: string;
  /** performance.now() past which it is asked again; Infinity for a permanent redirect. */
  until: number;
}

/**
 * Where each file of an HTTP source was last redirected to, so that a page read asks the target
 * at once: following the redirect for every page cost three requests a page (found by a fault
 * hunt). Kept per file and version (a new version is redirected afresh), for as long as HTTP lets
 * the redirect be reused, and dropped by the caller as soon as the target fails.
 */
export class RedirectMemory {
  private readonly entries = new Map<string, Remembered>();

  constructor(
    private readonly max = REMEMBERED_REDIRECTS,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** The remembered target of `path` at `version`, if it may still be used. */
  target(path: string, version: string): URL | undefined {
    const entry = this.entries.get(path);
    if (!entry) return undefined;
    if (entry.version !== version || this.now() >= entry.until) {
      this.entries.delete(path);
      return undefined;
    }
    // Most recently used last: the first key is the one to drop when full.
    this.entries.delete(path);
    this.entries.set(path, entry);
    return new URL(entry.target);
  }

  /** Keeps `target` for `lifetimeMs` (redirectLifetime of every hop that led there, the shortest). */
  remember(path: string, version: string, target: URL, lifetimeMs: number): void {
    this.entries.delete(path);
    if (lifetimeMs <= 0 || target.href.length > MAX_TARGET_CHARS) return;
    this.entries.set(path, { version, target: target.href, until: this.now() + lifetimeMs });
    if (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value!);
  }

  forget(path: string): void {
    this.entries.delete(path);
  }

  get size(): number {
    return this.entries.size;
  }
}
