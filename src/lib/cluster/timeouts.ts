import { MAX_INTERIM_WAIT_MS, WINDOW_PROGRESS_BYTES } from '../leanhttp/index.js';

/**
 * Deadlines for a request to a worker. Each bounds one phase, so a slow transfer that still
 * moves (about 1 KiB/s at the default idleMs) is never cut, while a worker that stopped
 * (SIGSTOP, a hung disk, a dead host whose packets vanish) or trickles is given up on in
 * bounded time. Hedging usually passes such a worker long before.
 */
export interface PeerTimeouts {
  /** Opening the TCP (and TLS) connection. */
  connectMs: number;
  /** From sending the request to the response headers (a miss waits for the source's first byte). */
  firstByteMs: number;
  /**
   * One window of the body: it must bring WINDOW_PROGRESS_BYTES (32 KiB) in each (windows
   * in which our reader held the body do not count), on either page transport.
   */
  idleMs: number;
  /**
   * How long after the request a worker's `102 Processing` heads (it is filling the page) may
   * keep it waiting for the answer's head: each 102 restarts firstByteMs, within this bound.
   * Default MAX_INTERIM_WAIT_MS (10 min); a worker's relays use `timeouts.peerFilling`.
   */
  fillingMs?: number;
}

/**
 * Generous by design: a page that misses waits for a fill slot and the source's first byte
 * before its headers leave, and a rate-limited source may pause a stream for seconds.
 */
export const DEFAULT_PEER_TIMEOUTS: PeerTimeouts = { connectMs: 5_000, firstByteMs: 30_000, idleMs: 30_000 };

/** "did not answer within 30000 ms (first byte)" for undici's and the lean page client's timeout codes; undefined otherwise. */
export function describeTimeout(code: string | undefined, timeouts: PeerTimeouts): string | undefined {
  switch (code) {
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'FANOUT_CONNECT_TIMEOUT':
      return `timed out: no connection within ${timeouts.connectMs} ms (connect timeout)`;
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'FANOUT_FIRST_BYTE_TIMEOUT':
      return `timed out: no response within ${timeouts.firstByteMs} ms (first-byte timeout)`;
    case 'FANOUT_INTERIM_TIMEOUT':
      return `timed out: it answered only 102 Processing (filling the page) for ${timeouts.fillingMs ?? MAX_INTERIM_WAIT_MS} ms, no page (filling timeout)`;
    case 'UND_ERR_BODY_TIMEOUT':
      return `timed out: the body stalled for ${timeouts.idleMs} ms (idle timeout)`;
    case 'FANOUT_IDLE_TIMEOUT':
      return `timed out: the body brought less than ${WINDOW_PROGRESS_BYTES / 1024} KiB in ${timeouts.idleMs} ms (idle timeout)`;
    default:
      return undefined;
  }
}

/** Whether an error's cause is one of the transports' deadlines (connect, first byte, idle). */
export function missedDeadline(err: unknown): boolean {
  const code = (err as { cause?: { code?: unknown } } | undefined)?.cause?.code;
  return typeof code === 'string' && describeTimeout(code, DEFAULT_PEER_TIMEOUTS) !== undefined;
}
