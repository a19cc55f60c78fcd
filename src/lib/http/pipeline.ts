import type { IncomingMessage, ServerResponse } from 'node:http';

/** Requests a connection may have waiting behind the one being answered; one more closes it. */
export const MAX_PIPELINED = 16;

interface Line {
  busy: boolean;
  waiting: (() => void)[];
}

/** Each connection's requests, answered one after the other. */
const lines = new WeakMap<object, Line>();

/**
 * Runs `answer` for `req` once every earlier request on its connection has been answered (its
 * response closed). node:http hands the handler every pipelined request as soon as it is parsed,
 * and pauses reading a connection only when answers pile up unsent: requests whose answers wait
 * on something (a stat, a page fill, a response slot) were all taken in. Found by a fault hunt:
 * one connection that pipelined 33 range reads and never read an answer held every response slot
 * (others' reads stalled until its idle deadline), and 150,000 pipelined stats took the worker to
 * 1.4 GiB. Answers go out in order on a connection anyway. A connection with MAX_PIPELINED
 * requests already waiting is closed (false): no client of fanout pipelines that deep.
 */
export function inTurn(req: IncomingMessage, res: ServerResponse, answer: () => void): boolean {
  const socket = req.socket;
  const line = lineOf(socket);
  if (!line.busy) {
    start(line, socket, res, answer);
    return true;
  }
  if (line.waiting.length >= MAX_PIPELINED) {
    socket.destroy();
    return false;
  }
  line.waiting.push(() => start(line, socket, res, answer));
  return true;
}

function lineOf(socket: IncomingMessage['socket']): Line {
  let line = lines.get(socket);
  if (!line) {
    line = { busy: false, waiting: [] };
    lines.set(socket, line);
  }
  return line;
}

function start(line: Line, socket: IncomingMessage['socket'], res: ServerResponse, answer: () => void): void {
  line.busy = true;
  res.once('close', () => {
    line.busy = false;
    // A connection that died takes its waiting requests with it (closeIfOrphaned closes their responses).
    if (socket.destroyed) line.waiting.length = 0;
    line.waiting.shift()?.();
  });
  answer();
}
