import type { ListObjectsV2CommandOutput } from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import { FanoutError } from '../../core/errors.js';

/**
 * Entries one listing may gather from an S3 server (keys and common prefixes, every page
 * together): a directory of a million objects is far past any index or checkpoint directory,
 * and its entries (~200 bytes each in memory) stay well under a worker's memory.
 */
export const DEFAULT_MAX_LIST_ENTRIES = 1_000_000;
/**
 * Characters of names and versions a listing may keep, per entry it may gather: S3 keys run to
 * 1,024 bytes, but a directory's names average far fewer. Without it a server could fill each
 * 16 MiB page with a few long names, and a million entries would be gigabytes.
 */
export const LIST_CHARS_PER_ENTRY = 256;

/**
 * Bounds one whole listing. Each page is bounded already (its first-byte deadline, 16 MiB of
 * XML), but a server that hands out a fresh continuation token with every page was followed for
 * ever: the worker's listing grew without end and its caller never got an answer. A listing
 * ends with SOURCE_ERROR once it has gathered `maxEntries` entries (an empty page counts as one,
 * so pages of nothing end too) or has run `deadlineMs` (the signal aborts the page in flight).
 */
export class ListingBudget {
  private entries = 0;
  private pages = 0;
  private chars = 0;
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly onAbort: () => void;

  constructor(
    private readonly what: string,
    private readonly maxEntries: number,
    deadlineMs: number,
    private readonly caller?: AbortSignal,
  ) {
    this.onAbort = () => this.controller.abort(caller?.reason);
    if (caller?.aborted) this.controller.abort(caller.reason);
    else caller?.addEventListener('abort', this.onAbort, { once: true });
    if (deadlineMs > 0) {
      this.timer = setTimeout(() => this.controller.abort(this.tooLong(deadlineMs)), deadlineMs);
      this.timer.unref?.();
    }
  }

  /** Aborts when the caller's signal does or when the whole listing's deadline passes (its reason: the SOURCE_ERROR). */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Counts one page of `count` entries, keeping `chars` characters of names and versions; throws SOURCE_ERROR past a bound. */
  charge(count: number, chars: number): void {
    this.pages++;
    this.entries += Math.max(1, count);
    this.chars += chars;
    const maxChars = this.maxEntries * LIST_CHARS_PER_ENTRY;
    if (this.maxEntries > 0 && this.chars > maxChars) {
      throw new FanoutError(
        'SOURCE_ERROR',
        `${this.what}: the S3 server's listing holds more than ${maxChars} characters of names (${this.entries} entries, ${this.pages} pages; ` +
          `${LIST_CHARS_PER_ENTRY} a name on average for limits.sourceListEntries ${this.maxEntries}): raise that limit for a directory of names this long`,
      );
    }
    if (this.maxEntries > 0 && this.entries > this.maxEntries) {
      throw new FanoutError(
        'SOURCE_ERROR',
        `${this.what}: the S3 server's listing goes on past ${this.maxEntries} entries (${this.pages} pages, each with a new continuation token); ` +
          `fanout stops there (limits.sourceListEntries): raise it for a directory that large, or list a sub-directory`,
      );
    }
  }

  done(): void {
    if (this.timer) clearTimeout(this.timer);
    this.caller?.removeEventListener('abort', this.onAbort);
  }

  private tooLong(ms: number): FanoutError {
    return new FanoutError(
      'SOURCE_ERROR',
      `${this.what}: the S3 server's listing did not end within ${ms} ms (timeouts.sourceList; ${this.pages} pages, ${this.entries} entries so far)`,
    );
  }
}

/**
 * The token of the listing's next page, or undefined after the last. A server whose listing
 * never ends is refused rather than followed: a token it gave before (a loop) kept a worker
 * asking for the same page thousands of times a second, its listing growing without bound, and
 * "truncated" with no token to go on would pass a part of the directory off as all of it.
 * Tokens are remembered by digest: a server's tokens may be as long as a page (16 MiB), and a
 * listing remembers one per page.
 */
export function nextPageToken(out: ListObjectsV2CommandOutput, seen: Set<string>, what: string): string | undefined {
  if (!out.IsTruncated) return undefined;
  const token = out.NextContinuationToken;
  if (!token) {
    throw new FanoutError('SOURCE_ERROR', `${what}: the S3 server says its listing is truncated but gives no NextContinuationToken to go on`);
  }
  const digest = createHash('sha256').update(token).digest('base64');
  if (seen.has(digest)) {
    throw new FanoutError('SOURCE_ERROR', `${what}: the S3 server's listing loops (continuation token ${JSON.stringify(token.slice(0, 80))} came back after ${seen.size} pages)`);
  }
  seen.add(digest);
  return token;
}
