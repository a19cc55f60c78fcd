/// <reference lib="dom" />
import type { ReleaseOverview } from '../../../release/overview.js';
import type { AgentState } from '../../../release/registry.js';
import type { ReleasesAnswer } from '../releases.js';
import { byId, el, KeyedRows, setCell, setProgress } from './dom.js';
import { bytes, count, percent, plural } from './format.js';

interface Card {
  root: HTMLElement;
  summary: HTMLElement;
  channels: KeyedRows;
  versions: KeyedRows;
  groups: KeyedRows;
  errors: HTMLUListElement;
  details: HTMLDetailsElement;
  hostsLabel: HTMLElement;
  hosts: KeyedRows;
}

function table(columns: string[], key: string): { table: HTMLTableElement; rows: KeyedRows } {
  const head = el('tr');
  for (const c of columns) head.appendChild(el('th', { text: c }));
  const body = el('tbody');
  const t = el('table', {}, el('thead', {}, head), body);
  return { table: t, rows: new KeyedRows(body, columns, key) };
}

/**
 * One card per release: channels, recent versions, and the rollout summarized (host counts per
 * channel, version and phase, errors listed). The full host list is a collapsed section,
 * fetched only while open.
 */
export class ReleasesView {
  private readonly cards = new Map<string, Card>();

  /** `onOpen`: a host list was opened (fetch it now rather than at the next refresh). */
  constructor(private readonly onOpen: () => void) {}

  /** The release whose full host list is open (asked for with ?hosts=). */
  openHostList(): string | undefined {
    for (const [name, card] of this.cards) if (card.details.open) return name;
    return undefined;
  }

  render(answer: ReleasesAnswer): void {
    const note = byId('releases-note');
    const container = byId('releases');
    if (!answer.available) {
      note.textContent = answer.error ? `(${answer.reason}: ${answer.error.message})` : `(${answer.reason})`;
      return;
    }
    note.textContent = answer.releases.length === 0 ? '(none published)' : '';
    const names = new Set(answer.releases.map((r) => r.name));
    for (const [name, card] of this.cards) {
      if (names.has(name)) continue;
      card.root.remove();
      this.cards.delete(name);
    }
    for (const release of answer.releases) {
      let card = this.cards.get(release.name);
      if (!card) {
        card = makeCard(release.name, this.onOpen);
        container.appendChild(card.root);
        this.cards.set(release.name, card);
      }
      fillCard(card, release);
    }
  }
}

function makeCard(name: string, onOpen: () => void): Card {
  const channels = table(['channel', 'version', 'previous', 'updated'], 'data-channel');
  const versions = table(['version', 'created', 'files', 'size', 'channels'], 'data-version');
  const groups = table(['datacenter', 'channel', 'current', 'target', 'phase', 'hosts'], 'data-group');
  const hosts = table(['host', 'datacenter', 'channel', 'current', 'target', 'phase', 'progress', 'error'], 'data-host');
  const summary = el('p', { className: 'rollout' });
  const errors = el('ul', { className: 'errors' });
  const hostsLabel = el('summary');
  const details = el('details', {}, hostsLabel, el('div', { className: 'scroll' }, hosts.table));
  details.addEventListener('toggle', () => {
    if (details.open) onOpen();
  });
  const root = el(
    'div',
    { className: 'release' },
    el('h3', { text: name }),
    el('div', { className: 'cols' }, el('div', {}, el('h3', { text: 'Channels', className: 'muted' }), channels.table), el('div', {}, el('h3', { text: 'Recent versions', className: 'muted' }), versions.table)),
    el('h3', { text: 'Rollout', className: 'muted' }),
    summary,
    groups.table,
    errors,
    details,
  );
  root.dataset.release = name;
  return { root, summary, channels: channels.rows, versions: versions.rows, groups: groups.rows, errors, details, hostsLabel, hosts: hosts.rows };
}

function fillCard(card: Card, release: ReleaseOverview): void {
  const channels = Object.entries(release.channels).sort(([a], [b]) => (a < b ? -1 : 1));
  card.channels.update(channels, ([c]) => c, (cells, [c, record]) => {
    setCell(cells.channel!, c);
    setCell(cells.version!, record.version, { value: record.version });
    setCell(cells.previous!, record.history[0] ?? '-');
    setCell(cells.updated!, record.updatedAt.replace('T', ' ').slice(0, 19));
  });
  const onChannels = (v: string) => channels.filter(([, r]) => r.version === v).map(([c]) => c).join(', ');
  card.versions.update([...release.versions].reverse(), (v) => v.version, (cells, v) => {
    setCell(cells.version!, v.version);
    setCell(cells.created!, v.createdAt.replace('T', ' ').slice(0, 19));
    setCell(cells.files!, count(v.files), { className: 'num' });
    setCell(cells.size!, bytes(v.bytes), { value: v.bytes, className: 'num' });
    setCell(cells.channels!, onChannels(v.version));
  });
  const h = release.hosts;
  const staging = h.staging.hosts > 0 ? `, ${count(h.staging.hosts)} staging (${percent(h.staging.bytesDone, h.staging.bytesTotal)} of ${bytes(h.staging.bytesTotal)})` : '';
  const summary = `${plural(h.total, 'host')}: ${count(h.onChannelVersion)} on their channel's version${staging}, ${plural(h.errorCount, 'error')}`;
  if (card.summary.textContent !== summary) card.summary.textContent = summary;
  card.summary.dataset.total = String(h.total);
  card.summary.dataset.staging = String(h.staging.hosts);
  card.groups.update(h.groups, (g) => JSON.stringify([g.datacenter, g.channel, g.current, g.target, g.phase]), (cells, g) => {
    setCell(cells.datacenter!, g.datacenter || '-');
    setCell(cells.channel!, g.channel);
    setCell(cells.current!, g.current ?? '-');
    setCell(cells.target!, g.target ?? '-');
    setCell(cells.phase!, g.phase, { className: `phase-${g.phase}` });
    setCell(cells.hosts!, count(g.hosts), { value: g.hosts, className: 'num' });
  });
  const errors = h.errors.map((e) => `${e.host} (${e.channel} → ${e.target ?? '-'}): ${e.error}`);
  if (h.errorCount > h.errors.length) errors.push(`… and ${count(h.errorCount - h.errors.length)} more`);
  const text = errors.join('\n');
  if (card.errors.dataset.text !== text) {
    card.errors.dataset.text = text;
    card.errors.replaceChildren(...errors.map((line) => el('li', { text: line })));
  }
  const label = `all ${plural(h.total, 'host')}`;
  if (card.hostsLabel.textContent !== label) card.hostsLabel.textContent = label;
  if (release.hostList) card.hosts.update(release.hostList, (a) => a.host, fillHost);
}

function fillHost(cells: Record<string, HTMLTableCellElement>, a: AgentState): void {
  setCell(cells.host!, a.host);
  setCell(cells.datacenter!, a.datacenter ?? '-');
  setCell(cells.channel!, a.following ?? a.channel);
  setCell(cells.current!, a.current ?? '-');
  setCell(cells.target!, a.target ?? '-');
  setCell(cells.phase!, a.phase, { className: `phase-${a.phase}` });
  if (a.phase === 'staging' && a.bytesTotal > 0) setProgress(cells.progress!, a.bytesDone, a.bytesTotal, `${percent(a.bytesDone, a.bytesTotal)} (${bytes(a.bytesLocal)} local)`);
  else setCell(cells.progress!, '-', { value: '' });
  setCell(cells.error!, a.error ?? '', { className: a.error ? 'phase-error' : '' });
}
