import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LineStatus } from '../../src/core/types.js';
import { PeerCredential } from '../../src/lib/auth/index.js';
import { renewQuery } from '../../src/worker/lineclient.js';
import { startEtcd, type EtcdServer } from '../harness/etcd.js';
import { startIdTwin, statusOf } from '../harness/idtwin.js';
import { waitFor } from '../harness/ports.js';
import { TEST_CLUSTER_SECRET, WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;
const RATE = 2_000_000;
const PAGES = 24;
/** Status answers of the two workers are one snapshot of their shares when both came within this (under one renewal). */
const SNAPSHOT_MS = 200;

async function lineOf(url: string): Promise<LineStatus> {
  return (await statusOf(url)).lines!.find((l) => l.line === 'wan')!;
}

/** Bytes a worker read across the line (both classes), from its Prometheus counter. */
async function lineBytes(w: WorkerProcess): Promise<number> {
  const text = await (await fetch(`${w.url}/metrics`)).text();
  let sum = 0;
  for (const m of text.matchAll(/^fanout_line_bytes_total\{line="wan",class="[a-z]+"\} (\d+)/gm)) sum += Number(m[1]);
  return sum;
}

/**
 * Two worker processes given one id, over real etcd, sharing a line: the first lost its lease in
 * a pause and the second registered meanwhile (membership `id-taken` on the first). Found by
 * reading the code, then measured here: the first still took itself for the coordinator of its
 * id's lines, so it granted itself the whole rate while the holder of the id granted it again.
 */
describe('a line crossed by a worker whose id another running worker took', () => {
  let etcd: EtcdServer;
  let source: string;
  let first: WorkerProcess | undefined;
  let second: WorkerProcess | undefined;
  const size = PAGES * MiB;

  before(async () => {
    etcd = await startEtcd();
    source = await mkdtemp(join(tmpdir(), 'fanout-twin-line-'));
    await writeFile(join(source, 'big.bin'), randomBytes(size));
  });

  after(async () => {
    first?.resume();
    await Promise.all([first, second].map((w) => w?.destroy()));
    await etcd?.stop();
    await rm(source, { recursive: true, force: true });
  });

  test('takes no share of the line, coordinates none, and the cluster keeps to the rate', { timeout: 180_000 }, async () => {
    const config = {
      id: 'twin',
      pageSize: '1MiB',
      lines: { wan: { rate: RATE, preloadFloor: RATE / 8 } },
      mounts: { data: { uri: source, line: 'wan' } },
      membership: { etcd: { endpoints: [etcd.endpoint], leaseTtlSeconds: 3 } },
    };
    first = await WorkerProcess.start(config);
    await waitFor('the first to hold a lease of the line', async () => (await lineOf(first!.url)).mode === 'lease');

    second = await startIdTwin(first, config, etcd.endpoint);
    await waitFor('the second to hold a lease of the line', async () => (await lineOf(second!.url)).mode === 'lease');

    // Shares: the holder of the id is the line's only member, so it may hold the whole rate; the
    // first is counted by no coordinator, so any share it applied would come on top of that.
    await waitFor('the first to stand down from the line', async () => (await lineOf(first!.url)).mode === 'out-of-ring');
    let worst = 0;
    for (let i = 0; i < 10; i++) {
      const asked = Date.now();
      const [a, b]: LineStatus[] = await Promise.all([lineOf(first.url), lineOf(second.url)]);
      if (Date.now() - asked < SNAPSHOT_MS) worst = Math.max(worst, a.share + b.share);
      assert.equal(a.share, 0, `the first applies no share: ${JSON.stringify(a)}`);
    }
    assert.ok(worst <= RATE + 1, `shares applied by the two processes add up to ${worst}, above the line's ${RATE}`);

    // A peer whose ring still lists the first at the id asks it to coordinate the line, or to
    // read the source for it: both refused, so the peer renews at the holder and reads itself.
    const peer = new PeerCredential(TEST_CLUSTER_SECRET).headers();
    const renewal = await fetch(`${first.url}${renewQuery('wan', { member: 'w9', seq: 1, epoch: 'e', demand: { read: RATE, preload: 0 }, applied: 0 })}`, { headers: peer });
    assert.equal(renewal.status, 503, await renewal.clone().text());
    assert.equal(((await renewal.json()) as { error: { code: string } }).error.code, 'WORKER_UNAVAILABLE');
    const { version } = (await (await fetch(`${second.url}/v1/stat/data/big.bin`)).json()) as { version: string };
    const pageUrl = (w: WorkerProcess, i: number) => `${w.url}/v1/page/data/big.bin?v=${encodeURIComponent(version)}&size=${size}&i=${i}`;
    const refused = await fetch(pageUrl(first, 0), { headers: { 'x-fanout-direct': '1', ...peer } });
    assert.equal(refused.status, 503, await refused.clone().text());
    assert.equal(((await refused.json()) as { error: { code: string } }).error.code, 'WORKER_UNAVAILABLE');

    // Bytes: half the pages read through the first (relayed to the holder), half asked of the
    // holder directly, all at once: each page crosses the line once, within the rate.
    const read = (w: WorkerProcess, i: number, headers: Record<string, string>) =>
      fetch(pageUrl(w, i), { headers }).then(async (res) => {
        assert.equal(res.status, 200, await res.clone().text());
        return (await res.arrayBuffer()).byteLength;
      });
    const before = await Promise.all([first, second].map(lineBytes));
    const started = Date.now();
    const half = PAGES / 2;
    const got = await Promise.all([
      ...Array.from({ length: half }, (_, i) => read(first!, i, {})),
      ...Array.from({ length: half }, (_, i) => read(second!, half + i, { 'x-fanout-direct': '1', ...peer })),
    ]);
    const seconds = (Date.now() - started) / 1000;
    assert.ok(got.every((n) => n === MiB));
    const crossed = (await Promise.all([first, second].map(lineBytes))).map((b, i) => b - before[i]!);
    const total = crossed[0]! + crossed[1]!;
    console.log(`line bytes: first ${crossed[0]}, second ${crossed[1]} in ${seconds.toFixed(2)} s: ${Math.round(total / seconds)} B/s against a rate of ${RATE}`);
    assert.equal(crossed[0], 0, 'the first read nothing across the line');
    assert.equal(total, PAGES * MiB, 'each page crossed the line once');
    // An upper bound only (a slow machine reads less, never more): burst allowance as in lines.test.ts.
    assert.ok(total <= RATE * 1.05 * seconds + 2 * 64 * 1024 + RATE, `the two processes read ${total} bytes in ${seconds.toFixed(2)} s across a line of ${RATE} B/s`);

    // The holder stops: the first takes its id back and with it a share of the line.
    await second.stop();
    await waitFor('the first to hold a lease again', async () => {
      const line = await lineOf(first!.url);
      return line.mode === 'lease' && line.share > 0;
    });
  });
});
