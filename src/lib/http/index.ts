import { once } from 'node:events';
import type { Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server as TlsServer } from 'node:tls';
import { FanoutError } from '../../core/errors.js';

/** HTTP serving helpers shared by the worker's API and the S3 gateway: byte ranges and streamed bodies. */

export { answerUnparsable, bodyStillComing, checkHostHeader, closeIfOrphaned, isHeaderOverflow, type UnparsableAnswer } from './clienterror.js';
export { inTurn, MAX_PIPELINED } from './pipeline.js';

export interface ByteRange {
  start: number;
  /** Exclusive. */
  end: number;
}

/**
 * Parses a single-range "Range: bytes=…" header against a file size. Returns undefined when
 * there is no Range header, or when it names a unit other than bytes (RFC 9110 §14.2: such a
 * header is ignored; unit names are case-insensitive, so "Bytes=0-1" is a byte range).
 * Malformed → INVALID_RANGE (400: §14.2 lets a server reject an invalid range set, and a
 * client's mistake is better told than answered with the whole file); outside the file →
 * RANGE_NOT_SATISFIABLE (416).
 */
export function parseRange(header: string | undefined, size: number): ByteRange | undefined {
  if (header === undefined) return undefined;
  const text = header.trim();
  const unit = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+)=/.exec(text);
  if (unit && unit[1]!.toLowerCase() !== 'bytes') return undefined;
  const match = /^bytes=(\d*)-(\d*)$/i.exec(text);
  if (!match || (match[1] === '' && match[2] === '')) {
    throw new FanoutError('INVALID_RANGE', `malformed or multiple Range "${header.slice(0, 100)}": expected bytes=START-END, START- or -SUFFIX`);
  }
  if (match[1] === '') {
    const suffix = Number(match[2]);
    // An empty file has no last N bytes (RFC 9110 §14.1.2): answering 206 "bytes 0--1/0" is wrong.
    if (suffix === 0 || size === 0) throw unsatisfiable(header, size);
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

/**
 * Writes an async sequence of chunks as a response body with backpressure. The status line is
 * written only once the first chunk (or the end) is known, so an error before any byte gets a
 * proper status instead of a cut connection. Returns false if the reader went away (or was cut
 * off, idle past `idleMs`).
 */
export async function sendChunks(
  res: ServerResponse,
  chunks: AsyncGenerator<Buffer>,
  writeHead: () => void,
  beforeEnd: () => void = () => {},
  /** Called once each chunk has been handed to the OS (or the write failed): its buffer may be reused. */
  written?: (chunk: Buffer) => void,
  /** A reader that takes no byte for this long is cut off (its connection destroyed): it holds a slot and memory. */
  idleMs?: number,
): Promise<boolean> {
  const gone = new AbortController();
  const onClose = () => gone.abort();
  res.once('close', onClose);
  try {
    let next = await chunks.next();
    writeHead();
    while (!next.done) {
      const chunk = next.value;
      const flowing = written ? res.write(chunk, () => written(chunk)) : res.write(chunk);
      if (!flowing) {
        // destroy() closes the response, which ends the wait below through `gone`.
        const idle = idleMs === undefined ? undefined : setTimeout(() => res.destroy(), idleMs);
        try {
          await once(res, 'drain', { signal: gone.signal });
        } finally {
          clearTimeout(idle);
        }
      }
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

/**
 * Starts `server` on host:port (port 0 = any free one) and returns the URL it is reachable at:
 * https:// for an HTTPS server (node:https), http:// otherwise.
 */
export async function listenHttp(server: Server | TlsServer, host: string, port: number): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const scheme = server instanceof TlsServer ? 'https' : 'http';
  return `${scheme}://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
}
export { ConnectionCap, type ServerLimits } from './connections.js';
export { foreignHostRefusal, isLoopbackAddress, isLoopbackHost, listensOnLoopbackOnly } from './loopback.js';
