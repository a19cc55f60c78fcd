import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { CHECKSUM_HEADER } from '../lib/cluster/index.js';
import type { PageFile } from '../lib/pagestore/index.js';
import { kernelCanSend, sendFileTo } from '../lib/sendfile/index.js';

/**
 * Whether a page hit on `res` can leave by the kernel: the sendfile path is on, the response is
 * the one its (plain TCP) connection is writing now, and it has a body. TLS, HEAD and responses
 * without a socket (in-process callers) take the JS path.
 */
export function kernelSendable(res: ServerResponse): boolean {
  const socket = res.socket as Socket | null;
  return !!socket && res.req?.method !== 'HEAD' && !res.headersSent && kernelCanSend(socket);
}

/** The head of a page answered whole, its length and checksum known: a hit, or an HTTP/1.0 reader's miss. */
export function wholePageHead(size: number, crc: number, cache: 'hit' | 'miss'): OutgoingHttpHeaders {
  return { 'content-type': 'application/octet-stream', 'content-length': size, [CHECKSUM_HEADER]: crc.toString(16).padStart(8, '0'), 'x-fanout-cache': cache };
}

/** What node:http keeps of a response's head (OutgoingMessage, the same since Node 0.x). */
interface HeadState {
  _header?: unknown;
  _headerSent?: unknown;
}

/**
 * The head node:http built for `res` (writeHead, or the headers set so far), taken to leave with
 * the body's first bytes by the kernel (sendFileTo's `head`): node:http counts it sent and never
 * writes it itself. Undefined if it has left already, or if this Node keeps it elsewhere (then
 * it is flushed through Node, as before: one write more, nothing else changes).
 */
export function takeHead(res: ServerResponse): Buffer | undefined {
  const state = res as unknown as HeadState;
  if (res.headersSent && state._headerSent === true) return undefined;
  if (!res.headersSent) res.writeHead(res.statusCode);
  if (typeof state._header !== 'string' || state._headerSent !== false) {
    res.flushHeaders();
    return undefined;
  }
  state._headerSent = true;
  // node:http writes the head as latin1 (header values are byte strings).
  return Buffer.from(state._header, 'latin1');
}

/**
 * Answers with a stored page sent by sendfile(2) off the JS thread: the head (content-length and
 * checksum) built by Node leaves from the send thread with the first bytes of the page file
 * (takeHead), once Node's queue on the socket is empty; then the response is ended without a
 * body of Node's own, so node:http counts it finished and the connection carries the next
 * keep-alive request. A send that fails part-way (reset, client idle past `idleMs`) destroys
 * that connection only: the reader sees a short body, never a wrong one.
 */
export async function sendPageFile(res: ServerResponse, page: PageFile, idleMs: number): Promise<void> {
  res.writeHead(200, wholePageHead(page.size, page.crc, 'hit'));
  const head = takeHead(res);
  const socket = res.socket as Socket;
  try {
    await sendFileTo(socket, page.fd, 0, page.size, { idleMs, head });
  } catch (err) {
    socket.destroy();
    throw err;
  }
  res.end();
}

/**
 * Whether the rest of a chunked response (a fill streamed to a waiter, headers long gone) can be
 * finished from the page file by the kernel: a plain TCP connection writing this response, with
 * chunked framing (which lets the rest go as one chunk whose size line we write ourselves).
 */
export function kernelCanFinishChunked(res: ServerResponse): boolean {
  const socket = res.socket as Socket | null;
  return !!socket && res.req?.method !== 'HEAD' && res.headersSent && res.chunkedEncoding && !res.writableEnded && kernelCanSend(socket);
}

/**
 * Sends `page[from, size)` as one chunk of `res`'s chunked body by sendfile(2): the chunk's size
 * line goes after whatever Node queued, the bytes from the file once that is with the kernel, then
 * the chunk's end; the caller then ends the response (its trailer) through Node as usual. A send
 * that fails part-way destroys the connection: the reader sees a cut body, never a wrong one.
 */
export async function sendPageFileChunk(res: ServerResponse, page: PageFile, from: number, idleMs: number): Promise<void> {
  const socket = res.socket as Socket;
  const length = page.size - from;
  if (length <= 0) return;
  try {
    // The response's head too, should no byte of the body have gone out before.
    const head = takeHead(res)?.toString('latin1') ?? '';
    await sendFileTo(socket, page.fd, from, length, { idleMs, head: Buffer.from(`${head}${length.toString(16)}\r\n`, 'latin1') });
    socket.write('\r\n');
  } catch (err) {
    socket.destroy();
    throw err;
  }
}
