import type { PageFill } from '../../lib/transfer/index.js';
import type { LoadProgress } from '../admin.js';

/** Fills and loads in flight on one worker, as the dashboard shows them. */
export interface Activity {
  fills: { count: number; listed: FillRow[] };
  loads: LoadRow[];
}

export interface FillRow {
  mount: string;
  path: string;
  index: number;
  from: 'source' | 'peer';
  length: number;
  received: number;
}

export interface LoadRow {
  startedAt: string;
  pages: number;
  pagesDone: number;
  failed: number;
  bytesLoaded: number;
  bytesTotal: number;
  rate: number;
}

/** A worker can have thousands of fills queued; the page shows the furthest along. */
export const MAX_LISTED_FILLS = 50;

export function describeActivity(fills: PageFill[], loads: LoadProgress[]): Activity {
  const rows: FillRow[] = [];
  for (const fill of fills) {
    if (!fill.origin) continue; // fills started outside the page service (none today) have no name to show
    rows.push({ ...fill.origin, length: fill.length, received: fill.received });
  }
  rows.sort((a, b) => b.received / Math.max(1, b.length) - a.received / Math.max(1, a.length));
  return {
    fills: { count: fills.length, listed: rows.slice(0, MAX_LISTED_FILLS) },
    loads: loads.map(({ startedAt, pages, bytesTotal, rate, result }) => ({
      startedAt,
      pages,
      pagesDone: result.present + result.loaded + result.failed.length,
      failed: result.failed.length,
      bytesLoaded: result.bytesLoaded,
      bytesTotal,
      rate,
    })),
  };
}
