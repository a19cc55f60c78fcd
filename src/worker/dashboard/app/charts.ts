/// <reference lib="dom" />
import type { Point } from './model.js';

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 600;
const HEIGHT = 120;
const LEFT = 4;
const TOP = 12;

export interface ChartData {
  points: Point[];
  /** A dashed line at this value (the budget); 0 or undefined: none. */
  limit?: number;
  /** The x axis spans [now - windowMs, now]. */
  now: number;
  windowMs: number;
  format: (value: number) => string;
}

function svgEl(tag: string, attributes: Record<string, string | number>): SVGElement {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

/**
 * Draws a line chart into `svg` (its children replaced: a chart is a few nodes). Gaps of more
 * than two intervals (no member answered) break the line instead of bridging it.
 */
export function drawChart(svg: SVGSVGElement, data: ChartData, intervalMs: number): void {
  const max = Math.max(1, ...data.points.map((p) => p.value), data.limit ?? 0) * 1.15;
  const x = (t: number) => LEFT + ((WIDTH - LEFT) * (t - (data.now - data.windowMs))) / data.windowMs;
  const y = (v: number) => HEIGHT - ((HEIGHT - TOP) * v) / max;
  svg.setAttribute('viewBox', `0 0 ${WIDTH} ${HEIGHT}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const nodes: SVGElement[] = [];
  for (const fraction of [0.25, 0.5, 0.75]) nodes.push(svgEl('line', { class: 'grid', x1: LEFT, x2: WIDTH, y1: y(max * fraction), y2: y(max * fraction) }));
  const segments: Point[][] = [];
  let current: Point[] = [];
  for (const point of data.points) {
    if (point.t < data.now - data.windowMs) continue;
    const last = current[current.length - 1];
    if (last && point.t - last.t > 2 * intervalMs) {
      segments.push(current);
      current = [];
    }
    current.push(point);
  }
  if (current.length > 0) segments.push(current);
  for (const segment of segments) {
    const line = segment.map((p) => `${x(p.t).toFixed(1)},${y(p.value).toFixed(1)}`).join(' ');
    const first = segment[0]!;
    const last = segment[segment.length - 1]!;
    nodes.push(svgEl('polygon', { class: 'area', points: `${x(first.t).toFixed(1)},${HEIGHT} ${line} ${x(last.t).toFixed(1)},${HEIGHT}` }));
    nodes.push(svgEl('polyline', { class: 'series', points: line, 'data-points': segment.length }));
  }
  if (data.limit) nodes.push(svgEl('line', { class: 'budget', x1: LEFT, x2: WIDTH, y1: y(data.limit), y2: y(data.limit) }));
  const label = (x: number, y: number, text: string, anchor = 'start') => {
    const node = svgEl('text', { x, y, 'text-anchor': anchor });
    node.textContent = text;
    nodes.push(node);
  };
  label(LEFT + 2, 10, data.format(max));
  label(LEFT + 2, HEIGHT - 3, `${Math.round(data.windowMs / 60_000)} min ago`);
  label(WIDTH - 2, HEIGHT - 3, 'now', 'end');
  svg.replaceChildren(...nodes);
}
