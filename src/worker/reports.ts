import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { FanoutError } from '../core/errors.js';
import { pageKey } from '../lib/pagekey/index.js';
import type { PageRef } from '../core/types.js';
import type { WorkerMetrics } from '../lib/metrics/index.js';
import type { PageStore } from '../lib/pagestore/index.js';
import { Semaphore } from '../lib/transfer/index.js';
import { contentHashParam } from './content.js';
import { intParam, routePath, sendJson } from './http.js';

/** Route of a reader's report: POST /v1/report/MOUNT/PATH?v=VERSION&size=SIZE&i=INDEX[&h=SHA256] (see lib/cluster/report.ts). */
export const REPORT_PREFIX = '/v1/report';
/** Pages re-verified at once for reports, and reports that may wait for them. */
const VERIFYING = 2;
const QUEUED = 64;

/**
 * Reports of pages that failed a reader's checksum. The reader has already gone to another
 * worker; here the page is re-read and checked (never dropped on the reporter's word alone),
 * dropped if this worker's copy is corrupt, so its next read refetches it, and counted
 * (fanout_page_reports_total by result). A report costs at most one page read, like a page
 * request, under its own small concurrency bound; it reads no source and needs no stat: a
 * made-up page names a key this store does not hold.
 */
export class PageReports {
  private readonly slots = new Semaphore(VERIFYING);

  constructor(
    private readonly deps: { store: PageStore; metrics: WorkerMetrics; pageSize: number; logger: Logger },
  ) {}

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      throw new FanoutError('INVALID_ARGUMENT', `method ${req.method} is not supported on ${REPORT_PREFIX}; reports are POSTed`);
    }
    const ref = reportedPage(req);
    if (this.slots.waiting >= QUEUED) throw new FanoutError('OVERLOADED', 'too many page reports waiting; retry shortly');
    const gone = new AbortController();
    res.once('close', () => gone.abort(new FanoutError('ABORTED', 'client went away')));
    const release = await this.slots.acquire(gone.signal);
    let result;
    try {
      result = await this.deps.store.verify(pageKey(ref, this.deps.pageSize));
    } finally {
      release();
    }
    this.deps.metrics.pageReports.labels(result).inc();
    if (result === 'corrupt') {
      this.deps.logger.warn({ mount: ref.mount, path: ref.path, page: ref.index }, 'a reader reported a page that failed its checksum: the stored copy is corrupt, dropped, and will be refetched');
    }
    sendJson(res, 200, { result });
  }
}

function reportedPage(req: IncomingMessage): PageRef {
  const { target, query } = routePath(req, REPORT_PREFIX);
  if (!target.mount || !target.path) throw new FanoutError('INVALID_ARGUMENT', 'a report names a page of a file: /v1/report/MOUNT/PATH?v&size&i');
  const version = query.get('v');
  if (!version || version.length > 1024) throw new FanoutError('INVALID_ARGUMENT', 'query parameter "v" (file version) is required');
  return { mount: target.mount, path: target.path, version, size: intParam(query, 'size'), index: intParam(query, 'i'), hash: contentHashParam(query) };
}
