/// <reference lib="dom" />
/**
 * Small DOM helpers. Tables keep one row per key and touch a cell only when its text changes,
 * so a refresh of a hundred members rewrites a few cells, not the table.
 */

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: { className?: string; text?: string } = {}, ...children: Node[]): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.className) node.className = props.className;
  if (props.text !== undefined) node.textContent = props.text;
  for (const child of children) node.appendChild(child);
  return node;
}

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (!node) throw new Error(`the page has no #${id}`);
  return node as T;
}

/** Sets a cell's text (and its raw value and class, for tests and styles) only when they changed. */
export function setCell(cell: HTMLElement, text: string, options: { value?: number | string; className?: string; title?: string } = {}): void {
  if (cell.textContent !== text) cell.textContent = text;
  if (options.value !== undefined && cell.dataset.value !== String(options.value)) cell.dataset.value = String(options.value);
  if (options.className !== undefined && cell.className !== options.className) cell.className = options.className;
  if (options.title !== undefined && cell.title !== options.title) cell.title = options.title;
}

/** A progress bar with its percentage beside it. */
export function setProgress(cell: HTMLElement, done: number, total: number, label: string): void {
  let bar = cell.querySelector<HTMLElement>('.bar > span');
  let text = cell.querySelector<HTMLElement>('.label');
  if (!bar || !text) {
    cell.textContent = '';
    const outer = el('span', { className: 'bar' }, (bar = el('span')));
    cell.append(outer, (text = el('span', { className: 'label' })));
  }
  const width = `${total > 0 ? Math.min(100, (100 * done) / total).toFixed(1) : 0}%`;
  if (bar.style.width !== width) bar.style.width = width;
  if (text.textContent !== label) text.textContent = label;
  cell.dataset.value = String(total > 0 ? done / total : 0);
}

/**
 * The rows of a table body, one per key, in the order given. Rows of keys no longer given are
 * removed; new ones are made with `create`, existing ones only moved when the order changed.
 */
export class KeyedRows {
  private readonly rows = new Map<string, HTMLTableRowElement>();

  constructor(
    private readonly body: HTMLTableSectionElement,
    private readonly columns: string[],
    private readonly keyAttribute: string,
  ) {}

  update<T>(items: T[], key: (item: T) => string, fill: (cells: Record<string, HTMLTableCellElement>, item: T, row: HTMLTableRowElement) => void): void {
    const wanted = new Set<string>();
    let previous: HTMLTableRowElement | null = null;
    for (const item of items) {
      const id = key(item);
      wanted.add(id);
      let row = this.rows.get(id);
      if (!row) {
        row = document.createElement('tr');
        row.setAttribute(this.keyAttribute, id);
        for (const column of this.columns) {
          const cell = document.createElement('td');
          cell.dataset.field = column;
          row.appendChild(cell);
        }
        this.rows.set(id, row);
      }
      const expectedPosition: ChildNode | null = previous ? previous.nextSibling : this.body.firstChild;
      if (expectedPosition !== row) this.body.insertBefore(row, expectedPosition);
      const cells: Record<string, HTMLTableCellElement> = {};
      for (const cell of Array.from(row.cells)) cells[cell.dataset.field!] = cell;
      fill(cells, item, row);
      previous = row;
    }
    for (const [id, row] of this.rows) {
      if (wanted.has(id)) continue;
      row.remove();
      this.rows.delete(id);
    }
  }
}
