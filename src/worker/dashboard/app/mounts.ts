/// <reference lib="dom" />
import { drawChart } from './charts.js';
import { byId, el } from './dom.js';
import { rate } from './format.js';
import { WINDOW_MS, type ClusterModel, type Point } from './model.js';

interface ChartBox {
  box: HTMLElement;
  now: HTMLElement;
  limit: HTMLElement;
  /** The line the mount crosses: name, leased shares, what waits per class. */
  line: HTMLElement;
  svg: SVGSVGElement;
}

/**
 * One chart per mount (source bytes/s against the budget), one per named line (bytes/s across it
 * against its rate), and one of bytes served.
 */
export class MountsView {
  private readonly charts = new Map<string, ChartBox>();

  render(model: ClusterModel, now: number, intervalMs: number): void {
    const container = byId('mounts');
    const lines = model.namedLines();
    const wanted = [...model.mounts.map((m) => `source:${m}`), ...lines.map((l) => `line:${l.name}`), 'served'];
    for (const key of wanted) {
      if (!this.charts.has(key)) {
        const box = this.makeBox(key);
        container.appendChild(box.box);
        this.charts.set(key, box);
      }
    }
    for (const [key, box] of this.charts) {
      if (!wanted.includes(key)) {
        box.box.remove();
        this.charts.delete(key);
      }
    }
    for (const mount of model.mounts) {
      const budget = model.budget(mount);
      const box = this.charts.get(`source:${mount}`)!;
      this.draw(box, model.sourceSeries(mount), budget, now, intervalMs);
      const line = model.line(mount);
      box.line.textContent = line
        ? `line ${line.name}: leased ${rate(line.shares)} of ${rate(line.rate)}, waiting ${line.waitingReads} reads, ${line.waitingPreloads} preloads`
        : '';
      box.line.dataset.line = line?.name ?? '';
    }
    for (const line of lines) {
      const box = this.charts.get(`line:${line.name}`)!;
      box.line.textContent = `mounts: ${line.mounts.map((m) => `/${m}`).join(', ')}`;
      this.draw(box, model.lineSeries(line.mounts), line.rate, now, intervalMs);
    }
    this.draw(this.charts.get('served')!, model.servedSeries(), undefined, now, intervalMs);
  }

  private draw(box: ChartBox, points: Point[], budget: number | undefined, now: number, intervalMs: number): void {
    const last = points[points.length - 1];
    const current = last && now - last.t <= 3 * intervalMs ? last.value : undefined;
    box.now.textContent = current === undefined ? 'now: -' : `now: ${rate(current)}`;
    box.now.dataset.value = current === undefined ? '' : String(current);
    if (budget !== undefined) {
      box.limit.textContent = budget === 0 ? 'budget: unlimited' : `budget: ${rate(budget)}`;
      box.limit.dataset.value = String(budget);
    }
    drawChart(box.svg, { points, limit: budget, now, windowMs: WINDOW_MS, format: rate }, intervalMs);
  }

  private makeBox(key: string): ChartBox {
    const title = key === 'served' ? 'served to readers' : key.startsWith('line:') ? `line ${key.slice('line:'.length)}` : `/${key.slice('source:'.length)} source`;
    const now = el('span', { className: 'now' });
    const limit = el('span', { className: 'limit muted' });
    const line = el('span', { className: 'line muted' });
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    const box = el('div', { className: 'chart' }, el('div', { className: 'title' }, el('strong', { text: title }), now, limit, line), svg);
    box.dataset.chart = key;
    return { box, now, limit, line, svg };
  }
}
