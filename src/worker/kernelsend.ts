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
