import { FanoutError, abortError } from '../../core/errors.js';
import type { SourceDeadlines } from './types.js';

/**
 * Defaults a user need not tune: 5 s to connect is generous on any network a cache sits on,
 * and 30 s without the first byte or without progress means a source that is down, not slow
 * (an S3 GET of a cold object answers in well under a second). A whole listing gets 10 minutes:
 * S3 lists 1,000 keys a page in well under a second, so a million-object directory lists in a
 * few minutes.
 */
export const DEFAULT_DEADLINES: SourceDeadlines = { connectMs: 5_000, firstByteMs: 30_000, idleMs: 30_000, listMs: 600_000 };

/**
 * Bytes a streaming body must deliver within each idle window. Resetting the window on any
 * chunk would let a source trickling one byte a second hold a fill (and its slot) for days;
 * 64 KiB per window is ~2 KiB/s at the default 30 s, far below any usable source.
 */
export const IDLE_PROGRESS_BYTES = 64 * 1024;

export function resolveDeadlines(partial: Partial<SourceDeadlines> = {}): SourceDeadlines {
  return {
    connectMs: partial.connectMs ?? DEFAULT_DEADLINES.connectMs,
    firstByteMs: partial.firstByteMs ?? DEFAULT_DEADLINES.firstByteMs,
    idleMs: partial.idleMs ?? DEFAULT_DEADLINES.idleMs,
    listMs: partial.listMs ?? DEFAULT_DEADLINES.listMs,
  };
}

export function timedOut(what: string, phase: 'connect' | 'firstByte' | 'idle', ms: number): FanoutError {
  const text = {
    connect: `the source could not be connected to within ${ms} ms (timeouts.sourceConnect)`,
    firstByte: `the source gave no answer within ${ms} ms (timeouts.sourceFirstByte)`,
    idle: `the source stalled: less than ${IDLE_PROGRESS_BYTES} bytes in ${ms} ms (timeouts.sourceIdle)`,
  }[phase];
  return new FanoutError('SOURCE_ERROR', `${what}: ${text}`);
}

/**
 * A signal that aborts when `signal` does or when `ms` pass (reason: a SOURCE_ERROR naming the
 * deadline), for one stat/list call. `done()` clears the timer; call it in a finally.
 */
export function deadlineSignal(
  ms: number,
  what: string,
  signal?: AbortSignal,
): { signal: AbortSignal; done: () => void } {
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal?.reason);
  if (signal?.aborted) controller.abort(signal.reason);
  else signal?.addEventListener('abort', onAbort, { once: true });
  const timer = ms > 0 ? setTimeout(() => controller.abort(timedOut(what, 'firstByte', ms)), ms) : undefined;
  timer?.unref?.();
  return {
    signal: controller.signal,
    done: () => {
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    },
  };
}

/**
 * Runs `fn` under a deadline: its signal aborts when the caller's does or when `ms` pass. A
 * timeout surfaces as the SOURCE_ERROR reason even if `fn` rejects with some abort error of its
 * own (each backend words aborts differently).
 */
export async function withDeadline<T>(ms: number, what: string, signal: AbortSignal | undefined, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const deadline = deadlineSignal(ms, what, signal);
  try {
    return await fn(deadline.signal);
  } catch (err) {
    const reason = deadline.signal.reason;
    if (deadline.signal.aborted && reason instanceof FanoutError && !signal?.aborted) throw reason;
    throw err;
  } finally {
    deadline.done();
  }
}

/**
 * `work`, or its deadline or the caller's abort, whichever comes first: for calls that cannot be
 * cancelled (withDeadline waits for its call to honour the signal). A call that loses goes on in
 * its pool thread (a hung network file system cannot be cancelled) and its result is dropped.
 */
export function raceDeadline<T>(work: Promise<T>, ms: number, what: string, signal?: AbortSignal): Promise<T> {
  if (signal?.aborted) {
    work.catch(() => {});
    return Promise.reject(abortError(signal));
  }
  if (ms <= 0 && !signal) return work;
  return new Promise<T>((resolve, reject) => {
    const timer = ms > 0 ? setTimeout(() => settle(() => reject(timedOut(what, 'firstByte', ms))), ms) : undefined;
    const onAbort = () => settle(() => reject(abortError(signal)));
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      fn();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    work.then(
      (value) => settle(() => resolve(value)),
      (err) => settle(() => reject(err)),
    );
  });
}
