/// <reference lib="dom" />
/** The page's calls to the worker that served it: every one with a deadline. */

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Server time minus browser time (ms), from the last answer's Date header: charts use the workers' clock. */
export let serverOffsetMs = 0;

export async function getJson<T>(path: string, timeoutMs: number): Promise<T> {
  let res: Response;
  try {
    res = await fetch(path, { signal: AbortSignal.timeout(timeoutMs), credentials: 'same-origin', cache: 'no-store' });
  } catch (err) {
    const timedOut = (err as Error).name === 'TimeoutError';
    throw new ApiError(0, timedOut ? 'TIMEOUT' : 'NETWORK', timedOut ? `no answer within ${timeoutMs} ms` : (err as Error).message);
  }
  const date = Date.parse(res.headers.get('date') ?? '');
  // Date has whole seconds: ignore offsets below that, or the chart's right edge jitters.
  if (Number.isFinite(date) && Math.abs(date - Date.now()) > 1500) serverOffsetMs = date - Date.now();
  const body = (await res.json().catch(() => undefined)) as (T & { error?: { code: string; message: string } }) | undefined;
  if (!res.ok || body === undefined) {
    throw new ApiError(res.status, body?.error?.code ?? `HTTP ${res.status}`, body?.error?.message ?? res.statusText);
  }
  return body;
}

/** Runs `work` over `items` with at most `limit` at once; each item's outcome goes to `work` itself. */
export async function forEachLimited<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await work(item).catch(() => {});
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}
