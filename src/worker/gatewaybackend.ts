import type { Clock } from '../core/clock.js';
import type { ClusterReader } from '../lib/cluster/index.js';
import type { GatewayBackend } from '../gateway/index.js';
import type { FileInfoService } from './fileinfo.js';
import { returnSlice } from './flow.js';
import { localSpansFor, type LocalSpanDeps } from './localspans.js';
import type { PageService } from './pageservice.js';
import { pagedChunks, sendRange } from './rangesend.js';
import { DATA_WINDOW } from './routes.js';

export interface GatewayBackendDeps {
  mountNames(): string[];
  files: FileInfoService;
  reader: ClusterReader;
  pages: Pick<PageService, 'responseSlots' | 'flow'>;
  localSpans: LocalSpanDeps;
  /** Gives a page chunk back to the fetcher's memory once it is written. */
  release(chunk: Buffer): void;
  pageSize: number;
  clock: Clock;
}

/**
 * The S3 gateway's view of its worker: the same stat/list caches as the HTTP API, reads through
 * the worker's cluster reader, and stored pages sent by the kernel as /v1/data sends them.
 */
export function gatewayBackend(deps: GatewayBackendDeps): GatewayBackend {
  const { files, reader, pages, pageSize, clock, release } = deps;
  return {
    mountNames: () => deps.mountNames(),
    stat: async (mount, path) => files.stat({ mount, path }),
    list: (mount, dir, signal) => files.listDir({ mount, path: dir }, signal),
    read: (mount, file, start, end, signal) => pagedChunks({ reader, slots: pages.responseSlots, pageSize, clock, signal, release }, mount, file, start, end),
    written: (chunk) => returnSlice(chunk) || release(chunk),
    clientIdleMs: deps.localSpans.clientIdle,
    send: async (res, mount, file, start, end, signal, writeHead) => {
      const local = localSpansFor(res, deps.localSpans, signal);
      if (!local) return false;
      const flow = pages.flow(res);
      await sendRange(res, { reader, slots: pages.responseSlots, flow, pageSize, window: DATA_WINDOW, signal, release, local }, mount, file, start, end, writeHead);
      return true;
    },
  };
}
