import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { FanoutError } from '../core/errors.js';
import { CHECKSUM_HEADER, ERROR_TRAILER } from '../lib/cluster/index.js';
import { sendFileTo } from '../lib/sendfile/index.js';
import type { PageFill } from '../lib/transfer/index.js';
import type { Follower } from './fillfile.js';
import type { ResponseFlow } from './flow.js';
import { failAfterHead, readsTrailers, type PageSendDeps } from './pagesend.js';
import { takeHead } from './kernelsend.js';

/**
 * Bytes a follower waits for before its next send (unless the page is complete): each send is a
 * chunk head written by Node, a round trip to a send thread and a sendfile, so a follower close
 * behind a fill must not send every few KiB that arrive. A follower further behind sends all
 * there is in one chunk.
 */
export const FOLLOW_CHUNK = 256 * 1024;

/**
 * Streams a fill to one reader from the fill's file (FillFile) by the kernel: the body is
 * chunked, each chunk's size line written by Node, its bytes by sendfile(2) on the addon's send
 * threads from what the file holds past what this reader has; the checksum follows as a
 * trailer. No page buffer is held for the reader and nothing is queued in user space but chunk
 * heads: a reader that stalls holds the file's descriptor, and is cut after clientIdle.
 *
 * A fill that fails ends the body early with its code as a trailer, or cuts a client that reads
 * no trailers (as the JS path does). If the file cannot be written (disk full), the rest is
 * written from the fill's buffer by JS.
 */
export async function followFillByKernel(
  deps: PageSendDeps,
  res: ServerResponse,
  fill: PageFill,
  follower: Follower,
  flow: ResponseFlow,
  signal: AbortSignal,
): Promise<void> {
  fill.enter();
  const socket = res.socket as Socket;
  let sent = 0;
  let headed = false;
  /** A chunk was sent by the kernel and its closing CRLF is not written yet (it leads the next write). */
  let open = false;
  /** The response head, taken from node:http and not yet sent (it leads the first chunk). */
  let head = '';
  /** What the next write must start with (the head not yet sent, the last chunk's CRLF), now written. */
  const pending = () => {
    const text = `${head}${open ? '\r\n' : ''}`;
    head = '';
    open = false;
    return text;
  };
  try {
    let step = await follower.until(0, FOLLOW_CHUNK, signal);
    headed = true;
    res.writeHead(200, { 'content-type': 'application/octet-stream', trailer: `${CHECKSUM_HEADER}, ${ERROR_TRAILER}`, 'x-fanout-cache': 'miss' });
    // The chunk framing below is ours: only on a body node:http chunks (the caller checked HTTP/1.1).
    if (!res.chunkedEncoding) throw new FanoutError('INTERNAL', 'a followed fill needs a chunked body');
    // The response head leaves with the first chunk's size line and bytes, each later size line
    // (after the previous chunk's CRLF) with its chunk's bytes: one write per chunk, by the kernel.
    head = takeHead(res)?.toString('latin1') ?? '';
    while (step.kind === 'bytes' && step.end > sent) {
      const length = step.end - sent;
      try {
        const line = Buffer.from(`${pending()}${length.toString(16)}\r\n`, 'latin1');
        open = true;
        await sendFileTo(socket, follower.fd(), sent, length, { idleMs: deps.clientIdle, head: line });
      } catch (err) {
        // Part of a chunk may be out: the connection cannot carry anything sensible any more.
        socket.destroy();
        throw err;
      }
      sent = step.end;
      if (sent === fill.length) break;
      step = await follower.until(sent, FOLLOW_CHUNK, signal);
    }
    // What no chunk took: the head (when no chunk went by the kernel) and the last chunk's CRLF.
    let rest = pending();
    if (sent < fill.length) {
      if (rest) socket.write(rest, 'latin1');
      rest = '';
      await writeRestFromBuffer(fill, sent, flow, signal);
    }
    deps.metrics.bytesServed.inc(fill.length);
    res.addTrailers({ [CHECKSUM_HEADER]: fill.crc.toString(16).padStart(8, '0') });
    // The last chunk's CRLF, the last-chunk line and the trailer leave in one write.
    socket.cork();
    if (rest) socket.write(rest, 'latin1');
    res.end();
    socket.uncork();
  } catch (err) {
    if (!headed || signal.aborted || socket.destroyed) throw err;
    deps.metrics.bytesServed.inc(sent);
    // A client that does not read trailers is cut before the last chunk (failAfterHead).
    if (!readsTrailers(res)) return void socket.destroy();
    const rest = pending();
    if (rest) socket.write(rest, 'latin1');
    failAfterHead(res, err);
  } finally {
    follower.close();
    fill.leave();
  }
}

/**
 * The fill's file broke under this reader (its follower holds the buffer now): the rest, from
 * `from`, as copies written by JS while the fill goes on.
 */
async function writeRestFromBuffer(fill: PageFill, from: number, flow: ResponseFlow, signal: AbortSignal): Promise<void> {
  let offset = from;
  for await (const view of fill.chunks(signal, from)) {
    let at = 0;
    while (at < view.length) {
      at = flow.write(view, at, view.length);
      if (at < view.length) await flow.room();
    }
    offset += view.length;
  }
  if (offset !== fill.length) throw new FanoutError('INTERNAL', `fill ended after ${offset} of ${fill.length} bytes`);
}
