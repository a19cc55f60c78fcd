import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { FanoutError } from '../../core/errors.js';
import type { Duplex } from 'node:stream';

/** The error body an API gives a request node:http could not parse. */
export interface UnparsableAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Answers requests node:http cannot parse (bytes outside the URL grammar, malformed headers,
 * a bad chunk) with the API's own error body (a stable code) instead of node's bare "400 Bad
 * Request", then closes the connection: a stream that failed to parse cannot be resynchronized.
 */
export function answerUnparsable(server: Server, render: (err: NodeJS.ErrnoException) => UnparsableAnswer): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // As node's own handler: nothing to say to a peer that is gone, or mid-way through a response.
    const started = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true;
    if (err.code === 'ECONNRESET' || !socket.writable || started) {
      socket.destroy();
      return;
    }
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      answerAndClose(socket, 'HTTP/1.1 408 Request Timeout\r\nconnection: close\r\n\r\n');
      return;
    }
    const { status, headers, body: text } = render(err);
    // A HEAD answer has no body, even an error's (the client would read it as garbage).
    const raw = (err as NodeJS.ErrnoException & { rawPacket?: Buffer }).rawPacket;
    const body = raw?.subarray(0, 5).toString('latin1') === 'HEAD ' ? '' : text;
    const lines = Object.entries({ ...headers, 'content-length': String(Buffer.byteLength(text)), connection: 'close' }).map(([k, v]) => `${k}: ${v}\r\n`);
    answerAndClose(socket, `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n${lines.join('')}\r\n${body}`);
  });
}

/** How long an answer to a request that cannot be served may take to leave before its connection is cut. */
const CLOSE_GRACE_MS = 1000;

/**
 * Sends `answer`, then closes the connection both ways. end() alone only half-closes it (node:http
 * servers allow half-open connections): a client that never closes its side kept the connection,
 * its request and its place under the connection cap (found by a fault hunt: four clients that
 * sent part of a head and stopped shut out everyone from a worker capped at four connections).
 */
function answerAndClose(socket: Duplex, answer: string): void {
  const cut = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
  cut.unref();
  socket.end(answer, () => {
    clearTimeout(cut);
    socket.destroy();
  });
}

/** Header sections past node's limit are a "too large" request, anything else a malformed one. */
export function isHeaderOverflow(err: NodeJS.ErrnoException): boolean {
  return err.code === 'HPE_HEADER_OVERFLOW';
}

/**
 * HTTP/1.1 requires a Host header (RFC 9112 §3.2). node's own check answers a bare 400 with no
 * error code, so the servers turn it off (requireHostHeader: false) and call this instead.
 */
export function checkHostHeader(req: IncomingMessage): void {
  if (req.httpVersion === '1.1' && req.headers.host === undefined) throw new FanoutError('INVALID_ARGUMENT', 'an HTTP/1.1 request needs a Host header');
}

/**
 * A body declared up to this size and left unread is read and dropped by node after the answer,
 * and its connection kept: the client, still sending it, then reads the answer. Four times the
 * largest body a route reads (an admin call's 16 MiB), so that a client a little over a limit is
 * told 413 REQUEST_TOO_LARGE; closing instead cut it mid-upload, and fetch said only "fetch
 * failed" (seen in disk.test.ts with an 18 MB pin body).
 */
const DRAINED_BODY = 64 * 1024 * 1024;

/**
 * Whether an answer that leaves the request's body unread should close the connection: node
 * would read and drop the rest once the answer is out, for as long as the client sends it (to
 * keep the connection): with `content-length: 1 TiB`, until requestTimeout, credentials or not.
 * Not for a body that has all arrived, or one declared at most DRAINED_BODY; a chunked one may
 * never end.
 */
export function bodyStillComing(req: IncomingMessage): boolean {
  if (req.complete) return false;
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const length = req.headers['content-length'];
  return length !== undefined && !(Number(length) <= DRAINED_BODY);
}

/**
 * Closes `res` when its connection dies before its turn: node:http never emits 'close' on a
 * pipelined response still queued behind an earlier one (it has no socket yet), so whatever
 * waits for it — a drain's count of requests in flight, a fill's reader, a flow's deadline —
 * would wait on. The request's own 'close' (the connection's end) is then the only sign.
 */
export function closeIfOrphaned(req: IncomingMessage, res: ServerResponse): void {
  req.once('close', () => {
    // A request destroyed before its body's end (a body over the limit) has no socket any more:
    // its connection is gone too. Reading through the null threw in this listener, and nothing
    // catches a listener's throw: the process died.
    const socket = req.socket as IncomingMessage['socket'] | null;
    if (!res.socket && (!socket || socket.destroyed) && !res.writableFinished) res.emit('close');
  });
}
