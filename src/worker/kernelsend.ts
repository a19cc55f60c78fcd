import type { ServerResponse } from 'node:http';
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

/**
 * Answers with a stored page sent by sendfile(2) off the JS thread: Node writes and flushes the
 * head (content-length and checksum), the body goes from the page file straight to the socket
 * once Node's queue on it is empty, then the response is ended without a body of Node's own, so
 * node:http counts it finished and the connection carries the next keep-alive request. A send
 * that fails part-way (reset, client idle past `idleMs`) destroys that connection only: the
 * reader sees a short body, never a wrong one.
 */
export async function sendPageFile(res: ServerResponse, page: PageFile, idleMs: number): Promise<void> {
  res.writeHead(200, {
    'content-type': 'application/octet-stream',
    'content-length': page.size,
    [CHECKSUM_HEADER]: page.crc.toString(16).padStart(8, '0'),
    'x-fanout-cache': 'hit',
  });
  res.flushHeaders();
  const socket = res.socket as Socket;
  try {
    await sendFileTo(socket, page.fd, 0, page.size, { idleMs });
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
    socket.write(`${length.toString(16)}\r\n`);
    await sendFileTo(socket, page.fd, from, length, { idleMs });
    socket.write('\r\n');
  } catch (err) {
    socket.destroy();
    throw err;
  }
}
