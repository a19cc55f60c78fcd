import { abortError } from '../core/errors.js';

/**
 * `promise`, or ABORTED as soon as `signal` aborts (the promise goes on; its result is the
 * caller's to dispose of). How a request the kernel interrupted stops waiting: the fetch it
 * waits on may serve other requests (a listing, a page), so it is not cancelled.
 */
export function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(abortError(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
