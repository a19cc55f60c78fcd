/// <reference lib="dom" />
import { KeyedRows, setCell, setProgress } from './dom.js';
import { bytes, count, percent, rate } from './format.js';
import type { ClusterModel, MemberState } from './model.js';

const COLUMNS = ['id', 'health', 'capacity', 'used', 'pages', 'hitRatio', 'served', 'fills', 'url'];

/** The members table: one keyed row per member; a member's row changes only where its figures did. */
export class MembersView {
  private readonly rows: KeyedRows;

  constructor(body: HTMLTableSectionElement) {
    this.rows = new KeyedRows(body, COLUMNS, 'data-member');
  }

  render(model: ClusterModel): void {
    this.rows.update(model.ordered(), (m) => m.id, (cells, m, row) => fill(cells, m, row, m.id === model.self));
  }
}

function fill(cells: Record<string, HTMLTableCellElement>, m: MemberState, row: HTMLTableRowElement, self: boolean): void {
  row.className = m.health;
  setCell(cells.id!, self ? `${m.id} (this page)` : m.id, { value: m.id });
  setCell(cells.health!, m.health, { className: `health-${m.health}`, title: m.error ?? '' });
  const s = m.health === 'up' ? m.status : undefined;
  if (!s) {
    for (const field of ['capacity', 'used', 'pages', 'hitRatio', 'served', 'fills']) setCell(cells[field]!, '-', { value: '' });
  } else {
    const limited = s.configuredCapacity !== undefined && s.configuredCapacity > s.capacity;
    setCell(cells.capacity!, bytes(s.capacity) + (limited ? ' (disk)' : ''), { value: s.capacity, className: 'num', title: limited ? `configured ${bytes(s.configuredCapacity!)}, lowered to what the disk holds` : '' });
    setProgress(cells.used!, s.used, s.capacity, bytes(s.used));
    cells.used!.dataset.value = String(s.used);
    setCell(cells.pages!, count(s.pages), { value: s.pages, className: 'num' });
    setCell(cells.hitRatio!, percent(s.hits, s.hits + s.misses), { value: s.hits + s.misses > 0 ? s.hits / (s.hits + s.misses) : '', className: 'num', title: `${count(s.hits)} hits, ${count(s.misses)} misses` });
    const last = latest(m);
    setCell(cells.served!, last ? rate(last.served / Math.max(0.001, last.ms / 1000)) : '-', { className: 'num' });
    setCell(cells.fills!, count(s.inflightSourceReads), { value: s.inflightSourceReads, className: 'num' });
  }
  // A down member says why, in words: a stopped process, a lease that expired, a deadline.
  setCell(cells.url!, m.health === 'down' && m.error ? `${m.url}: ${m.error}` : m.url, { className: 'muted' });
}

function latest(m: MemberState) {
  let best;
  for (const sample of m.samples.values()) if (!best || sample.t > best.t) best = sample;
  return best;
}
