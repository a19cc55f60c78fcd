import type { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** Ports this process handed out: two ports freed one after the other can be the same number. */
const handedOut = new Set<number>();

/**
 * Where test ports are picked: below the kernel's ephemeral range (ip_local_port_range), where
 * bind(0) and every outgoing connection take theirs. A port picked by asking for port 0 was
 * free a moment ago, but on a busy machine a client socket of another test could take it before
 * the server meant to listen on it does (the likeliest cause of a worker's start failing once on
 * a CI machine; it never failed here).
 * Undefined when the range leaves no room below it.
 */
function quietRange(): { from: number; to: number } | undefined {
  try {
    const ephemeralFrom = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    const from = 10_000;
    if (ephemeralFrom - from >= 5_000) return { from, to: ephemeralFrom };
  } catch {
    // not Linux: the kernel's choice below
  }
  return undefined;
}

const range = quietRange();

/** Binds `port` (0: the kernel's choice) on loopback and frees it; the port, or undefined if taken. */
function tryPort(port: number): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' || err.code === 'EACCES' ? resolve(undefined) : reject(err)));
    server.listen(port, '127.0.0.1', () => {
      const bound = (server.address() as { port: number }).port;
      server.close(() => resolve(bound));
    });
  });
}

/**
 * A loopback port that was free a moment ago and that this process has not handed out before:
 * a random one below the ephemeral range where there is room, else one the kernel picks.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const candidate = range ? range.from + Math.floor(Math.random() * (range.to - range.from)) : 0;
    const port = await tryPort(candidate);
    if (port !== undefined && !handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('no free loopback port found in 200 attempts');
}

/**
 * Thrown by a waitFor check that knows the wait is vain (the process it waits for has exited):
 * it ends the wait with its own message. Any other error of a check counts as "not yet" (a
 * connection refused while a server starts).
 */
export class StopWaiting extends Error {}

/** Polls `check` until it resolves true, or fails after `timeoutMs` with `what` in the message. */
export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (
      await check().catch((err: unknown) => {
        if (err instanceof StopWaiting) throw err;
        return false;
      })
    )
      return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/**
 * Resolves once `check()` holds, re-checked on each `event` of `emitter`. No timing is asserted:
 * the wait is bounded (20 s) only so that the label says what never happened.
 */
export function untilEvent(emitter: EventEmitter, event: string, check: () => boolean, label: string): Promise<void> {
  if (check()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, onEvent);
      reject(new Error(`timed out waiting for: ${label}`));
    }, 20_000);
    const onEvent = () => {
      if (!check()) return;
      clearTimeout(timer);
      emitter.off(event, onEvent);
      resolve();
    };
    emitter.on(event, onEvent);
  });
}
