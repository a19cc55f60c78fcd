import { read } from 'node:fs';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { addonPath, optionalAddon } from '../addons/index.js';
import { constants as os } from 'node:os';
import { FanoutError } from '../../core/errors.js';
import { BufferPool } from '../pagestore/bufferpool.js';

/**
 * Sends a span of an open file to a socket: by the kernel (sendfile(2) on the addon's send
 * threads, native/sendfile) when the addon is built, else through JS (fs.read into a reused buffer
 * and socket.write, one chunk in flight). The path is chosen once, at first use, and shown as
 * `sendPath` in /v1/status and the fanout_send_path metric. FANOUT_NO_SENDFILE=1 forces JS.
 * TLS sockets always take the JS path: the kernel cannot encrypt.
 */
export type SendPath = 'sendfile' | 'js';

interface SendfileAddon {
  /**
   * Returns the number of the socket's duplicate the send writes to (for shutdown), or SENT_NOW
   * when a small send of cached bytes went out at once (the callback is then never called).
   */
  sendFile(socketFd: number, fileFd: number, offset: number, length: number, idleMs: number, callback: (errno: number, sent: number) => void, head?: Buffer): number;
  /** sendFile for several spans in a row, as one send: [fd, offset, length, …] (at most 1,024 spans). No SENT_NOW. */
  sendFiles(socketFd: number, spans: number[], idleMs: number, callback: (errno: number, sent: number) => void, head?: Buffer): number;
  /** Ends a running send at once (call only before its callback ran). */
  shutdown(dupFd: number): void;
  /** How many sends run at once, each on a send thread of the addon's own (started lazily). */
  setThreads(n: number): number;
  threads(): SendThreads;
}

/** The addon's send threads: wanted, alive, inside sendfile now, rounds waiting for one. */
export interface SendThreads {
  target: number;
  running: number;
  busy: number;
  queued: number;
}

/** sendFile's answer when it sent everything at once (native/sendfile: SENT_NOW). */
const SENT_NOW = -1;

export const SENDFILE_ADDON_PATH = addonPath('sendfile', 'fanout_sendfile');

let chosen: { path: SendPath; addon?: SendfileAddon } | undefined;

function choose(): { path: SendPath; addon?: SendfileAddon } {
  if (chosen) return chosen;
  const addon = optionalAddon<SendfileAddon>(SENDFILE_ADDON_PATH, process.env.FANOUT_NO_SENDFILE === '1' || process.platform !== 'linux');
  return (chosen = addon ? { path: 'sendfile', addon } : { path: 'js' });
}

/** How this process sends file spans (for plain sockets). */
export function sendPath(): SendPath {
  return choose().path;
}

/**
 * How many kernel sends run at once in this process (the worker's `threads`): each runs on a
 * thread of the addon's own, so with the JS thread a worker uses up to n + 1 cores. A no-op on the
 * JS path, which sends from the JS thread.
 */
export function setSendThreads(n: number): void {
  choose().addon?.setThreads(n);
}

/** The send threads now, or undefined on the JS path. */
export function sendThreads(): SendThreads | undefined {
  return choose().addon?.threads();
}

/** Whether `socket` can be given to the kernel: a plain TCP socket with a descriptor. */
export function kernelCanSend(socket: Socket): boolean {
  return choose().path === 'sendfile' && !(socket instanceof TLSSocket) && socketFd(socket) >= 0;
}

export interface SendOptions {
  /** A client that takes no byte for this long fails the send (ETIMEDOUT). */
  idleMs: number;
  /** Forces a path (tests); by default the chosen one, JS for TLS sockets. */
  path?: SendPath;
  /**
   * Bytes sent right before the span (a response head, a chunk's size line; at most 64 KiB). The
   * kernel path sends them from the send thread in the same segments as the span's first bytes:
   * one write and one wake-up of the reader fewer than writing them through Node first.
   */
  head?: Buffer;
}

/** The longest `head` the kernel path takes (native/sendfile: MAX_HEAD). */
export const MAX_SEND_HEAD = 64 * 1024;

/**
 * Sends `file[offset, offset + length)` to `socket` after whatever Node has queued on it.
 * Resolves once every byte is with the kernel; rejects with ABORTED (peer gone, reset, idle past
 * `idleMs`) or INTERNAL (the file is shorter). The socket is not destroyed here: the caller
 * decides (a failed response must not be followed by another on that connection).
 */
export async function sendFileTo(socket: Socket, fd: number, offset: number, length: number, options: SendOptions): Promise<void> {
  const path = options.path ?? (kernelCanSend(socket) ? 'sendfile' : 'js');
  let head = options.head?.length ? options.head : undefined;
  if (head && (path === 'js' || head.length > MAX_SEND_HEAD)) {
    await writeChunk(socket, head, options.idleMs);
    head = undefined;
  }
  if (length === 0 && !head) return;
  if (path === 'sendfile') return sendByKernel(socket, fd, offset, length, options.idleMs, head);
  return sendByJs(socket, fd, offset, length, options.idleMs);
}

/** A span of an open file: bytes [offset, offset + length) of `fd`. */
export interface FileSpan {
  fd: number;
  offset: number;
  length: number;
}

/** The most spans one sendFilesTo() call takes (native/sendfile: MAX_SPANS). */
export const MAX_SEND_SPANS = 1024;

/**
 * sendFileTo() for several spans in a row (the local pages of one response). The kernel path
 * sends them as one send: each span follows the one before on the send thread, with no wake-up of
 * the JS thread or of a send thread in between. Rejects as sendFileTo() does; INTERNAL names the
 * span whose file ended early.
 */
export async function sendFilesTo(socket: Socket, spans: FileSpan[], options: SendOptions): Promise<void> {
  if (spans.length === 0 || spans.length > MAX_SEND_SPANS) throw new FanoutError('INVALID_ARGUMENT', `1 to ${MAX_SEND_SPANS} spans per send (${spans.length} given)`);
  const path = options.path ?? (kernelCanSend(socket) ? 'sendfile' : 'js');
  if (spans.length <= 1 || path === 'js') {
    let head = options.head;
    for (const span of spans) {
      await sendFileTo(socket, span.fd, span.offset, span.length, { ...options, path, head });
      head = undefined;
    }
    return;
  }
  let head = options.head?.length ? options.head : undefined;
  if (head && head.length > MAX_SEND_HEAD) {
    await writeChunk(socket, head, options.idleMs);
    head = undefined;
  }
  const flat = spans.flatMap((s) => [s.fd, s.offset, s.length]);
  const total = spans.reduce((sum, s) => sum + s.length, 0);
  await kernelSend(socket, options.idleMs, total, (addon, sock, done) => addon.sendFiles(sock, flat, options.idleMs, done, head), (sent) => {
    let before = 0;
    for (const [i, span] of spans.entries()) {
      if (sent < before + span.length) return `span ${i + 1} of ${spans.length} (file ended after ${sent - before} of ${span.length} bytes)`;
      before += span.length;
    }
    return `file ended after ${sent} of ${total} bytes`;
  });
}

function socketFd(socket: Socket): number {
  const handle = (socket as unknown as { _handle?: { fd?: number } })._handle;
  return typeof handle?.fd === 'number' ? handle.fd : -1;
}

/** Resolves when everything Node queued on the socket is with the kernel (writes are ordered). */
function drained(socket: Socket, idleMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.destroyed) return reject(gone('the connection closed'));
    const timer = setTimeout(() => reject(gone(`the client took no byte for ${idleMs} ms`)), idleMs);
    socket.write(EMPTY, (err) => {
      clearTimeout(timer);
      if (err) reject(gone(err.message));
      else resolve();
    });
  });
}

const EMPTY = Buffer.alloc(0);

function sendByKernel(socket: Socket, fd: number, offset: number, length: number, idleMs: number, head: Buffer | undefined): Promise<void> {
  return kernelSend(socket, idleMs, length, (addon, sock, done) => addon.sendFile(sock, fd, offset, length, idleMs, done, head), (sent) => `file ended after ${sent} of ${length} bytes`);
}

/**
 * Runs one send of the addon (`start` queues it and returns the socket duplicate's number, or
 * SENT_NOW) and maps its outcome: ENODATA → INTERNAL with `ended(sent)`'s words, others → ABORTED.
 */
async function kernelSend(
  socket: Socket,
  idleMs: number,
  length: number,
  start: (addon: SendfileAddon, sock: number, done: (errno: number, sent: number) => void) => number,
  ended: (sent: number) => string,
): Promise<void> {
  const { addon } = choose();
  if (!addon) throw new FanoutError('INTERNAL', 'the sendfile addon is not loaded');
  // Node's queue is usually empty already (the head went to the kernel as it was written): then
  // no empty write, callback and deadline timer per send.
  if (socket.writableLength > 0) await drained(socket, idleMs);
  const sock = socketFd(socket);
  if (sock < 0 || socket.destroyed) throw gone('the connection closed');
  let running = true;
  let dup = -1;
  // Node closing the socket (reset seen, worker stopping) ends the send now, not at the idle deadline.
  const stop = () => running && dup >= 0 && addon.shutdown(dup);
  const { errno, sent } = await new Promise<{ errno: number; sent: number }>((resolve, reject) => {
    try {
      dup = start(addon, sock, (errno, sent) => {
        running = false;
        resolve({ errno, sent });
      });
    } catch (err) {
      running = false;
      return reject(gone((err as Error).message));
    }
    if (dup === SENT_NOW) {
      running = false;
      return resolve({ errno: 0, sent: length });
    }
    socket.once('close', stop);
  }).finally(() => socket.off('close', stop));
  if (errno === 0) return;
  if (errno === os.errno.ENODATA) throw new FanoutError('INTERNAL', ended(sent));
  const name = Object.entries(os.errno).find(([, n]) => n === errno)?.[0] ?? `errno ${errno}`;
  throw gone(errno === os.errno.ETIMEDOUT ? `the client took no byte for ${idleMs} ms (${sent} of ${length} sent)` : `${name} after ${sent} of ${length} bytes`);
}

/** Chunk of the JS path: large enough for few syscalls, small enough to pool. */
const CHUNK = 256 * 1024;
const chunks = new BufferPool(CHUNK, 64);

async function sendByJs(socket: Socket, fd: number, offset: number, length: number, idleMs: number): Promise<void> {
  const buffer = chunks.acquire();
  let release = true;
  try {
    let done = 0;
    while (done < length) {
      const want = Math.min(CHUNK, length - done);
      const n = await new Promise<number>((resolve, reject) => read(fd, buffer, 0, want, offset + done, (err, n) => (err ? reject(err) : resolve(n))));
      if (n === 0) throw new FanoutError('INTERNAL', `file ended after ${done} of ${length} bytes`);
      // One chunk in flight, reused once the socket is done with it: memory stays one chunk per send.
      await writeChunk(socket, buffer.subarray(0, n), idleMs, () => (release = false));
      done += n;
    }
  } finally {
    if (release) chunks.release(buffer);
  }
}

/**
 * Writes `data` and resolves once the socket is done with it; rejects with ABORTED if the
 * connection fails or takes no byte for `idleMs`, after calling `abandoned` (the socket may still
 * hold `data`, which must not be reused).
 */
function writeChunk(socket: Socket, data: Buffer, idleMs: number, abandoned: () => void = () => {}): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (socket.destroyed) return reject(gone('the connection closed'));
    const timer = setTimeout(() => {
      abandoned();
      reject(gone(`the client took no byte for ${idleMs} ms`));
    }, idleMs);
    socket.write(data, (err) => {
      clearTimeout(timer);
      if (err) {
        abandoned();
        reject(gone(err.message));
      } else resolve();
    });
  });
}

function gone(why: string): FanoutError {
  return new FanoutError('ABORTED', `client went away: ${why}`);
}
