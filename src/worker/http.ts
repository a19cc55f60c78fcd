import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { FanoutError } from '../core/errors.js';
import { decodeUrlPath, parseFanoutPath, type FanoutPath } from '../core/paths.js';

/** Small HTTP helpers for the worker's API: JSON answers, error bodies, ranges. */

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Every error leaves as `{"error":{"code","message"}}` with the code's HTTP status. */
export function sendError(res: ServerResponse, err: unknown, extraHeaders: Record<string, string> = {}): FanoutError {
  const error = toFanoutError(err);
  if (res.headersSent) {
    // Mid-body: the only honest signal left is to cut the connection so the reader sees a
    // truncated response instead of a short one that looks complete.
    res.destroy(error);
    return error;
  }
  const text = JSON.stringify({ error: error.toJSON() });
  res.writeHead(error.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'x-fanout-error': error.code,
    ...extraHeaders,
  });
  res.end(text);
  return error;
}

export function toFanoutError(err: unknown): FanoutError {
  if (err instanceof FanoutError) return err;
  return new FanoutError('INTERNAL', (err as Error)?.message ?? String(err), { cause: err });
}

/** Splits "/v1/page/models/a%20b.bin?x=1" after its route prefix into a validated path and query. */
export function routePath(req: IncomingMessage, prefix: string): { target: FanoutPath; query: URLSearchParams; rawPath: string } {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const rawPath = (q === -1 ? url : url.slice(0, q)).slice(prefix.length);
  const query = new URLSearchParams(q === -1 ? '' : url.slice(q + 1));
  const decoded = decodeUrlPath(rawPath);
  return { target: parseFanoutPath('/' + decoded), query, rawPath };
}

export interface ByteRange {
  start: number;
  /** Exclusive. */
  end: number;
}

/**
 * Parses a single-range "Range: bytes=…" header against a file size. Returns undefined when
 * there is no Range header. Malformed → INVALID_RANGE (400); outside the file →
 * RANGE_NOT_SATISFIABLE (416).
 */
export function parseRange(header: string | undefined, size: number): ByteRange | undefined {
  if (header === undefined) return undefined;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === '' && match[2] === '')) {
    throw new FanoutError('INVALID_RANGE', `malformed or multiple Range "${header.slice(0, 100)}": expected bytes=START-END, START- or -SUFFIX`);
  }
  if (match[1] === '') {
    const suffix = Number(match[2]);
    if (suffix === 0) throw unsatisfiable(header, size);
    return { start: Math.max(0, size - suffix), end: size };
  }
  const start = Number(match[1]);
  const last = match[2] === '' ? size - 1 : Number(match[2]);
  if (match[2] !== '' && last < start) throw new FanoutError('INVALID_RANGE', `Range "${header}" ends before it starts`);
  if (start >= size) throw unsatisfiable(header, size);
  return { start, end: Math.min(last, size - 1) + 1 };
}

function unsatisfiable(header: string, size: number): FanoutError {
  return new FanoutError('RANGE_NOT_SATISFIABLE', `Range "${header}" is outside a file of ${size} bytes`);
}

export function intParam(query: URLSearchParams, name: string, max = Number.MAX_SAFE_INTEGER): number {
  const raw = query.get(name);
  if (raw === null || !/^\d{1,16}$/.test(raw) || Number(raw) > max) {
    throw new FanoutError('INVALID_ARGUMENT', `query parameter "${name}" must be a non-negative integer`);
  }
  return Number(raw);
}

/**
 * Writes an async sequence of chunks as a response body with backpressure. The status line is
 * written only once the first chunk (or the end) is known, so an error before any byte gets a
 * proper status instead of a cut connection. Returns false if the reader went away.
 */
export async function sendChunks(
  res: ServerResponse,
  chunks: AsyncGenerator<Buffer>,
  writeHead: () => void,
  beforeEnd: () => void = () => {},
): Promise<boolean> {
  const gone = new AbortController();
  const onClose = () => gone.abort();
  res.once('close', onClose);
  try {
    let next = await chunks.next();
    writeHead();
    while (!next.done) {
      if (!res.write(next.value)) await once(res, 'drain', { signal: gone.signal });
      next = await chunks.next();
    }
    beforeEnd();
    res.end();
    return true;
  } catch (err) {
    if (gone.signal.aborted || res.destroyed) return false;
    throw err;
  } finally {
    res.off('close', onClose);
    await chunks.return(undefined).catch(() => {});
  }
}
