import { Readable } from 'node:stream';
import type { TokenBucket } from './bucket.js';

/**
 * Passes chunks through once the bucket has paid for them. Each chunk is charged before it
 * is yielded, so a consumer never holds bytes the budget has not allowed yet. Back-pressure
 * is natural: nothing more is read from `source` while a chunk waits for tokens. Leaving the
 * loop early (consumer stops, abort, error) returns `source`'s iterator, which destroys a
 * stream source.
 */
export async function* throttled(
  source: AsyncIterable<Buffer>,
  bucket: TokenBucket,
  signal?: AbortSignal,
): AsyncGenerator<Buffer, void, undefined> {
  for await (const chunk of source) {
    await bucket.take(chunk.length, signal);
    yield chunk;
  }
}

/** Stream flavour of throttled(): a Readable of Buffers charged against `bucket`. */
export function throttle(stream: Readable, bucket: TokenBucket, signal?: AbortSignal): Readable {
  // objectMode false: the result is an ordinary byte stream, pipeable to sockets and files.
  return Readable.from(throttled(stream, bucket, signal), { objectMode: false });
}
