/// <reference lib="dom" />
import type { FillRow, LoadRow } from '../activity.js';
import { byId, KeyedRows, setCell, setProgress } from './dom.js';
import { bytes, count, rate } from './format.js';
import type { ClusterModel } from './model.js';

/** Rows shown of each list; the counts above them give the rest. */
const MAX_ROWS = 12;

/** Fills and loads in flight across the members, furthest along first. */
export class FlightsView {
  private readonly fills = new KeyedRows(byId('fills').querySelector('tbody')!, ['member', 'page', 'from', 'progress'], 'data-fill');
  private readonly loads = new KeyedRows(byId('loads').querySelector('tbody')!, ['member', 'pages', 'bytes', 'rate', 'failed'], 'data-load');

  render(model: ClusterModel): void {
    const fills: (FillRow & { member: string })[] = [];
    const loads: (LoadRow & { member: string; key: string })[] = [];
    let fillCount = 0;
    for (const m of model.members.values()) {
      if (m.health !== 'up' || !m.activity) continue;
      fillCount += m.activity.fills.count;
      for (const f of m.activity.fills.listed) fills.push({ ...f, member: m.id });
      m.activity.loads.forEach((l, i) => loads.push({ ...l, member: m.id, key: `${m.id}/${l.startedAt}/${i}` }));
    }
    fills.sort((a, b) => b.received / Math.max(1, b.length) - a.received / Math.max(1, a.length));
    byId('fills-count').textContent = `(${count(fillCount)})`;
    byId('loads-count').textContent = `(${count(loads.length)})`;
    this.fills.update(fills.slice(0, MAX_ROWS), (f) => `${f.member}/${f.mount}/${f.path}#${f.index}`, (cells, f) => {
      setCell(cells.member!, f.member);
      setCell(cells.page!, `/${f.mount}/${f.path} #${f.index}`);
      setCell(cells.from!, f.from);
      setProgress(cells.progress!, f.received, f.length, `${bytes(f.received)} / ${bytes(f.length)}`);
    });
    this.loads.update(loads.slice(0, MAX_ROWS), (l) => l.key, (cells, l) => {
      setCell(cells.member!, l.member);
      setProgress(cells.pages!, l.pagesDone, l.pages, `${count(l.pagesDone)} / ${count(l.pages)}`);
      setCell(cells.bytes!, `${bytes(l.bytesLoaded)} / ${bytes(l.bytesTotal)}`);
      setCell(cells.rate!, l.rate > 0 ? rate(l.rate) : 'unlimited');
      setCell(cells.failed!, count(l.failed), { className: l.failed > 0 ? 'phase-error' : '' });
    });
  }
}
