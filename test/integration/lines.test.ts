import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pageKey } from '../../src/lib/pagekey/index.js';
import type { LineStatus, Member } from '../../src/core/types.js';
import { HashRing } from '../../src/lib/hashring/index.js';
import { startCluster, TEST_ADMIN_TOKEN, type WorkerProcess } from '../harness/workers.js';
import { waitFor } from '../harness/ports.js';
import { promtool } from '../harness/promtool.js';

const MiB = 1024 * 1024;
/** Status answers of the three workers taken as one snapshot of their shares when they all came within this (under one renewal). */
const SNAPSHOT_MS = 200;
const RATE = 4_000_000;
const FILE = 'big.bin';
const SIZE = 120 * MiB;

async function lineOf(worker: WorkerProcess): Promise<LineStatus> {
  const status = (await (await fetch(`${worker.url}/v1/status`)).json()) as { lines: LineStatus[] };
  return status.lines.find((l) => l.line === 'wan')!;
}

/** Bytes a worker read across the line, by class, from its Prometheus counter. */
async function lineBytes(worker: WorkerProcess, cls: 'read' | 'preload'): Promise<number> {
  const text = await (await fetch(`${worker.url}/metrics`)).text();
  const match = new RegExp(`^fanout_line_bytes_total\\{line="wan",class="${cls}"\\} (\\d+)`, 'm').exec(text);
  return match ? Number(match[1]) : 0;
}

describe('a line budget shared by three workers', () => {
  let source: string;
  let workers: WorkerProcess[];
  let members: Member[];
  let version: string;
  const byId = (id: string) => workers.find((w) => w.id === id)!;

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-lines-'));
    await writeFile(join(source, FILE), randomBytes(SIZE));
    workers = await startCluster(3, {
      lines: { wan: { rate: RATE, preloadFloor: RATE / 8 } },
      mounts: { data: { uri: source, line: 'wan' } },
      pageSize: '1MiB',
    });
    members = ((await (await fetch(`${workers[0]!.url}/v1/cluster`)).json()) as { members: Member[] }).members;
    version = ((await (await fetch(`${workers[0]!.url}/v1/stat/data/${FILE}`)).json()) as { version: string }).version;
  });

  after(async () => {
    await Promise.all((workers ?? []).map((w) => w.destroy()));
    await rm(source, { recursive: true, force: true });
  });

  /** Pages of the file whose owner (the one worker that reads them from the source) is `id`. */
  function pagesOwnedBy(id: string): number[] {
    const ring = new HashRing(members);
    const out: number[] = [];
    for (let i = 0; i < SIZE / MiB; i++) {
      const key = pageKey({ mount: 'data', path: FILE, version, size: SIZE, index: i }, MiB);
      if (ring.owners(key, 1)[0]!.id === id) out.push(i);
    }
    return out;
  }

  /** Pages read by an earlier test: cached, so reading them again crosses no line. */
  const cached = new Set<number>();
  const uncachedPagesOf = (id: string) => pagesOwnedBy(id).filter((i) => !cached.has(i));

  /** Reads pages at their owner, all at once (each one a source read there, paced by the line). */
  function readPages(id: string, pages: number[], headers: Record<string, string> = {}): Promise<void[]> {
    const url = byId(id).url;
    for (const i of pages) cached.add(i);
    return Promise.all(
      pages.map(async (i) => {
        const res = await fetch(`${url}/v1/page/data/${FILE}?v=${encodeURIComponent(version)}&size=${SIZE}&i=${i}`, { headers });
        assert.equal(res.status, 200);
        assert.equal((await res.arrayBuffer()).byteLength, MiB);
      }),
    );
  }

  test('every worker renews its share from the same coordinator; idle, the line is split evenly', async () => {
    await waitFor('every worker to hold a lease', async () => (await Promise.all(workers.map(lineOf))).every((l) => l.mode === 'lease'));
    const lines = await Promise.all(workers.map(lineOf));
    assert.equal(new Set(lines.map((l) => l.coordinator)).size, 1);
    assert.ok(lines.every((l) => l.rate === RATE && l.mounts.includes('data')));
    await waitFor('idle shares to settle at a third each', async () => (await Promise.all(workers.map(lineOf))).every((l) => Math.abs(l.share - RATE / 3) < 1));
  });

  test('one busy worker gets most of the line while the others idle, and the cluster stays under the rate', async () => {
    const busy = members[0]!.id;
    const pages = pagesOwnedBy(busy).slice(0, 8);
    assert.ok(pages.length >= 6, 'the file has enough pages owned by one worker');
    const before = await Promise.all(workers.map((w) => lineBytes(w, 'read')));
    const started = Date.now();
    const reading = readPages(busy, pages);
    let sawMost = false;
    let worstSum = 0;
    await waitFor('the busy worker to hold most of the line', async () => {
      const asked = Date.now();
      const lines = await Promise.all(workers.map(lineOf));
      // The three answers are one snapshot only if they came close together: a share moves in two
      // renewals 250 ms apart (the holder lowered, then the asker raised), so answers further
      // apart can show the holder before and the asker after (seen once on a loaded CI run: 4/3
      // of the rate, the busy worker at 2/3 beside two idle ones still at 1/3).
      if (Date.now() - asked < SNAPSHOT_MS) worstSum = Math.max(worstSum, lines.reduce((s, l) => s + l.share, 0));
      const mine = lines[workers.indexOf(byId(busy))]!;
      sawMost = mine.share >= 0.85 * RATE && mine.queue.read.requests > 0;
      return sawMost;
    });
    await reading;
    const seconds = (Date.now() - started) / 1000;
    const after = await Promise.all(workers.map((w) => lineBytes(w, 'read')));
    const read = after.map((b, i) => b - before[i]!);
    assert.equal(read[workers.indexOf(byId(busy))], pages.length * MiB, 'the owner read each page across the line once');
    assert.equal(read.reduce((a, b) => a + b, 0), pages.length * MiB, 'nobody else crossed the line');
    assert.ok(worstSum <= RATE + 1, `leased shares never added up above the rate (${worstSum})`);
    // An upper bound only (a slow machine reads less, never more): the burst allowance is 2% + 16 KiB a worker.
    assert.ok(read.reduce((a, b) => a + b, 0) <= RATE * 1.05 * seconds + 3 * 64 * 1024 + RATE, 'the cluster kept to the line');
  });

  test('two busy workers split the line; a preload on a third gets no more than its floor while reads wait', async () => {
    // The ring's split of 120 pages over three members changes with the file's version (new each
    // run) and can be uneven, and the previous test cached 8 pages of one of them: the two readers
    // are the members with the most uncached pages, the preload goes to the third.
    const uncachedCount = new Map(members.map((m) => [m.id, uncachedPagesOf(m.id).length]));
    const [a, b, c] = [...uncachedCount.keys()].sort((x, y) => uncachedCount.get(y)! - uncachedCount.get(x)!) as [string, string, string];
    // 10 MiB each at about half of 4 MB/s: a window of seconds in which to see the split, even
    // when a loaded machine answers the status polls slowly.
    const aPages = uncachedPagesOf(a).slice(0, 10);
    const bPages = uncachedPagesOf(b).slice(0, 10);
    const cPages = uncachedPagesOf(c).slice(0, 4);
    assert.ok(aPages.length === 10 && bPages.length === 10 && cPages.length === 4, `enough uncached pages at each owner (${[...uncachedCount.values()].join(', ')})`);
    const preloadBefore = await lineBytes(byId(c), 'preload');
    const reading = Promise.all([readPages(a, aPages), readPages(b, bPages), readPages(c, cPages, { 'x-fanout-class': 'preload' })]);
    await waitFor('both readers to hold about half the line', async () => {
      const lines = await Promise.all(workers.map(lineOf));
      const [la, lb, lc] = [a, b, c].map((id) => lines[workers.indexOf(byId(id))]!);
      // The preload has its floor (an eighth of the line) and no more while reads wait.
      return la.share >= 0.35 * RATE && lb.share >= 0.35 * RATE && lc.queue.preload.requests > 0 && lc.share <= RATE / 8 + 1 && lc.preloadMin > 0;
    });
    await reading;
    assert.equal((await lineBytes(byId(c), 'preload')) - preloadBefore, cPages.length * MiB, 'the preload finished, counted as a preload');
  });

  test('the line metrics pass promtool', async () => {
    const text = await (await fetch(`${workers[0]!.url}/metrics`, { headers: { authorization: `Bearer ${TEST_ADMIN_TOKEN}` } })).text();
    for (const name of ['fanout_line_rate_bytes_per_second', 'fanout_line_share_bytes_per_second', 'fanout_line_queue_bytes', 'fanout_line_queue_requests', 'fanout_line_bytes_total', 'fanout_line_fallback']) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'));
    }
    const result = await promtool(['check', 'metrics'], text);
    assert.equal(result.code, 0, result.output);
  });
});
