import type { Clock } from '../../core/clock.js';
import { FanoutError, abortError } from '../../core/errors.js';
import type { Member, PageRef } from '../../core/types.js';
import type { WorkerHealth } from './health.js';
import type { HedgePolicy } from './hedge.js';
import type { PageFetcher, PageProgress } from './pagefetcher.js';
import type { PageReporter } from './report.js';

/** What racing one page over its candidates needs of its reader. */
export interface RaceDeps {
  fetcher: PageFetcher;
  hedge: HedgePolicy;
  health: WorkerHealth;
  clock: Clock;
  reporter?: PageReporter;
  /** Page requests are preloads (PageRequestOptions.preload). */
  preload?: boolean;
  /** The page size pages are counted in (PageRequestOptions.pageSize). */
  pageSize?: number;
  /** A candidate failed with a worker fault (demote it; maybe refresh the members). */
  onFailure(member: Member, err: FanoutError): void;
}

/**
 * Errors that another worker would answer the same way: retrying elsewhere is pointless, and
 * the worker that reported them is not at fault. Source errors belong here: failing over would
 * only read the broken source again, and marking the worker down would punish the messenger.
 */
export const DEFINITIVE = new Set<string>([
  'NOT_FOUND',
  'SOURCE_CHANGED',
  'SOURCE_ERROR',
  'SOURCE_TRUNCATED',
  'SOURCE_UNVERSIONED',
  'RANGE_NOT_SATISFIABLE',
  'INVALID_PATH',
  'UNKNOWN_MOUNT',
  'ABORTED',
  'INVALID_ARGUMENT',
  'NOT_LISTABLE',
  'IS_A_DIRECTORY',
  'UNAUTHENTICATED',
  'FORBIDDEN',
  'TOO_MANY_ATTEMPTS',
]);

/**
 * Ends a page's hedge watch. One shared reason: abort() without one builds a DOMException with a
 * stack trace for every page, which showed in profiles of thousands of small pages.
 */
const WATCH_DONE = new FanoutError('ABORTED', 'page settled');
/** Why the other requests of a page stop once one has won (shared for the same reason). */
const LOST_RACE = new FanoutError('ABORTED', 'another request won');

/**
 * Asks candidates one after another until one answers. A request that makes no progress (no
 * headers, no chunk) for the hedge delay gets company from the next candidate, and the first
 * good answer wins; the silent worker is demoted. Hedges and retries are plain page requests:
 * a worker that does not hold the page relays it from its primary owner while that owner
 * answers its health check, and reads the source itself only when it does not, so a hedge
 * is not a second source read of a page whose owner is merely slow.
 */
export function racePage(deps: RaceDeps, first: Member[], ref: PageRef, length: number, signal?: AbortSignal, spares?: () => Member[]): Promise<Buffer[]> {
  const hedge = deps.hedge;
  // Grows by one of `spares` for each refusal of the page size (below).
  const candidates = first.slice();
  let spareList: Member[] | undefined;
  hedge.onFetch();
  return new Promise((resolve, reject) => {
    const inflight = new Map<AbortController, Member>();
    // Requests whose worker said the page is being filled (102): alive, and a hedge elsewhere
    // would only join the same cluster-wide fill, so they are neither hedged nor held against it.
    const filling = new Set<AbortController>();
    // Made only once the watch sleeps: most pages end before their first hedge delay, or have no
    // second candidate to hedge to (one worker), and an abort() per page builds and dispatches an
    // Event, which showed in profiles of a one-shot `fanout cat` (bench/block-receive.mjs).
    let stopWatch: AbortController | undefined;
    let next = 0;
    let settled = false;
    let lastError: FanoutError | undefined;
    let lastProgress = deps.clock.now();
    // Workers passed by with a speculative hedge: demoted only if a request to another worker wins.
    let passedBy: Member[] | undefined;
    const finish = (fn: () => void) => {
      settled = true;
      stopWatch?.abort(WATCH_DONE);
      signal?.removeEventListener('abort', onAbort);
      for (const controller of inflight.keys()) controller.abort(LOST_RACE);
      fn();
    };
    const onAbort = () => finish(() => reject(abortError(signal)));
    const launch = (): boolean => {
      if (settled || next >= candidates.length) return false;
      const member = candidates[next]!;
      next++;
      const controller = new AbortController();
      inflight.set(controller, member);
      const startedAt = deps.clock.now();
      lastProgress = startedAt;
      const onProgress = (what: PageProgress) => {
        const now = deps.clock.now();
        if (what === 'filling') filling.add(controller);
        // A filled page's first byte waits for the source: it says nothing of the worker's speed.
        else if (what === 'headers' && !filling.has(controller)) hedge.observeFirstByte(now - startedAt);
        lastProgress = now;
      };
      deps.fetcher.fetch(member, ref, length, { signal: controller.signal, onProgress, preload: deps.preload, pageSize: deps.pageSize }).then(
        (page) => {
          inflight.delete(controller); // the winner's request is over: nothing of it to abort
          if (settled) return;
          if (passedBy && !passedBy.includes(member)) for (const slow of passedBy) deps.health.slow(slow.id);
          finish(() => resolve(page));
        },
        (err: unknown) => {
          inflight.delete(controller);
          filling.delete(controller);
          if (settled) return;
          const error = err instanceof FanoutError ? err : new FanoutError('INTERNAL', String(err));
          if (DEFINITIVE.has(error.code)) return finish(() => reject(error));
          // A worker's refusal of the page size is kept over a later worker that could not be
          // reached, which says nothing of the page: a reader follows a change of the cluster's
          // page size only on PAGE_SIZE_MISMATCH (client/pagesize.ts). Mid-way through a rolling
          // restart to another pageSize, a page's candidates are the restarted workers (refusing)
          // and the one restarting, tried last once it failed: the read failed WORKER_UNAVAILABLE
          // "connect ECONNREFUSED" (SDK) or EIO (mount) instead of going on in the new size.
          if (!(error.code === 'WORKER_UNAVAILABLE' && lastError?.code === 'PAGE_SIZE_MISMATCH')) lastError = error;
          // A refusal of the page size costs no attempt: the next member of the ring is asked
          // too. Mid-way through a rolling restart of more workers than a page has candidates
          // (3), all of a page's may have the other size while members of the reader's are up
          // and would relay it; the page failed PAGE_SIZE_MISMATCH, and the read with it when
          // the cluster's answer still gave the reader's size (client/pagesize.ts).
          if (error.code === 'PAGE_SIZE_MISMATCH' && spares) {
            spareList ??= spares().filter((m) => !candidates.some((c) => c.id === m.id));
            const spare = spareList.shift();
            if (spare) candidates.push(spare);
          }
          deps.onFailure(member, error);
          const next = () => {
            if (!settled && !launch() && inflight.size === 0) finish(() => reject(lastError));
          };
          const reporter = deps.reporter;
          if (error.code === 'CHECKSUM_MISMATCH' && reporter) void reporter.report(member, ref).then(next, next);
          else next();
        },
      );
      return true;
    };
    // Hedges: wakes when the in-flight requests could have gone quiet for the hedge delay.
    const watch = async () => {
      while (!settled && next < candidates.length) {
        const delay = hedge.delayMs();
        if (delay === undefined) return;
        const wait = lastProgress + delay - deps.clock.now();
        if (wait > 0) {
          stopWatch ??= new AbortController();
          await deps.clock.sleep(wait, stopWatch.signal).catch(() => {});
          continue;
        }
        if (inflight.size === 0) {
          // Nothing in flight: a report of a bad page is on its way, and the next worker is asked after it.
          lastProgress = deps.clock.now();
          continue;
        }
        const silent = [...inflight].filter(([controller]) => !filling.has(controller)).map(([, member]) => member);
        if (silent.length === 0) {
          lastProgress = deps.clock.now();
          continue;
        }
        // Passing a worker that failed (unreachable, a deadline passed), for one that did not, is
        // failover: free. Otherwise the hedge is speculative and budgeted, so a uniformly slow
        // cluster is not asked for every page twice. Merely slow workers are not failed over for
        // free: on a saturated cluster every worker is slow in turn, and free hedges, each sent to
        // a worker that relays the page from its owner, doubled the work (the lab's cold and warm
        // runs took twice as long with hedging on as with it off).
        const failover = silent.every((m) => deps.health.isDown(m.id)) && candidates.slice(next).some((m) => !deps.health.isDemoted(m.id));
        const hedged = hedge.tryHedge(failover);
        lastProgress = deps.clock.now();
        if (!hedged) continue;
        // Passed-by workers are demoted, so that this reader's next pages go elsewhere first: at
        // once on failover; on a speculative hedge only once another worker's answer wins (a hedge
        // to a worker that relays the page from this same owner ends after the owner's own answer
        // on a loaded cluster, and demoting the owner then would send its next pages through relays).
        if (failover) for (const member of silent) deps.health.slow(member.id);
        else passedBy = [...(passedBy ?? []), ...silent];
        launch();
      }
    };
    if (signal?.aborted) return reject(abortError(signal));
    signal?.addEventListener('abort', onAbort, { once: true });
    launch();
    void watch();
  });
}

