import type { ServerResponse } from 'node:http';
import { HEADERS } from '../lib/wire/index.js';

/** How often a reader waiting for a page being filled is told so (well inside its 30 s first-byte deadline). */
export const FILLING_NOTICE_MS = 5_000;

/**
 * A reader that asked is told now, and again every FILLING_NOTICE_MS until the headers leave,
 * that its page is being filled (its first byte may wait for a fill slot and the source
 * budget): it neither hedges a page whose fill another worker would only relay, nor gives up
 * on a worker that is alive but queued (each 102 restarts its first-byte deadline).
 * Returns the function that stops the notices.
 */
export function tellFilling(res: ServerResponse): () => void {
  const req = res.req;
  if (req?.headers[HEADERS.progress] !== '1' || req.httpVersionMajor !== 1 || req.httpVersionMinor < 1) return () => {};
  const tell = () => {
    if (res.headersSent || res.writableEnded || res.destroyed) return clearInterval(timer);
    res.writeProcessing();
  };
  const timer = setInterval(tell, FILLING_NOTICE_MS).unref();
  tell();
  return () => clearInterval(timer);
}
