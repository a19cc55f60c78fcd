// Line budget on loopback: 3 workers share one line (default 16 MB/s); one worker reads pages
// it owns, then a second joins in. Reports the busy worker's part of the line (a static split
// would give it 1/3), and the highest 1-second sum of bytes across the line seen by sampling
// every worker's fanout_line_bytes_total every 100 ms (goal ≤ 1.05 × rate).
//   node bench/lines.mjs [rateBytesPerSecond] [pagesPerReader]
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCluster } from '../dist/test/harness/workers.js';
import { waitFor } from '../dist/test/harness/ports.js';
import { HashRing } from '../dist/src/lib/hashring/index.js';
import { pageKey } from '../dist/src/lib/pagekey/index.js';

const RATE = Number(process.argv[2] ?? 16_000_000);
const PAGES = Number(process.argv[3] ?? 24);
const MiB = 1024 * 1024;
const SIZE = 128 * MiB;
const source = await mkdtemp(join(tmpdir(), 'fanout-bench-lines-'));
await writeFile(join(source, 'f.bin'), randomBytes(SIZE));
const workers = await startCluster(3, { lines: { wan: { rate: RATE } }, mounts: { data: { uri: source, line: 'wan' } }, pageSize: '1MiB' });
try {
  const status = async (w) => (await (await fetch(`${w.url}/v1/status`)).json()).lines[0];
  await waitFor('leases', async () => (await Promise.all(workers.map(status))).every((l) => l.mode === 'lease'));
  const members = (await (await fetch(`${workers[0].url}/v1/cluster`)).json()).members;
  const { version } = await (await fetch(`${workers[0].url}/v1/stat/data/f.bin`)).json();
  const ring = new HashRing(members);
  const owned = (id) => [...Array(SIZE / MiB).keys()].filter((i) => ring.owners(pageKey({ mount: 'data', path: 'f.bin', version, size: SIZE, index: i }, MiB), 1)[0].id === id);
  const read = (w, pages) =>
    Promise.all(pages.map(async (i) => (await fetch(`${w.url}/v1/page/data/f.bin?v=${encodeURIComponent(version)}&size=${SIZE}&i=${i}`)).arrayBuffer()));
  const bytes = async (w) => {
    const text = await (await fetch(`${w.url}/metrics`)).text();
    return [...text.matchAll(/^fanout_line_bytes_total\{[^}]*\} (\d+)/gm)].reduce((s, m) => s + Number(m[1]), 0);
  };
  const samples = [];
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      samples.push({ t: performance.now(), b: (await Promise.all(workers.map(bytes))).reduce((a, b) => a + b, 0) });
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const byId = (id) => workers.find((w) => w.id === id);
  const [a, b] = members.map((m) => m.id);
  let t0 = performance.now();
  await read(byId(a), owned(a).slice(0, PAGES));
  const alone = (PAGES * MiB) / ((performance.now() - t0) / 1000);
  t0 = performance.now();
  await Promise.all([read(byId(a), owned(a).slice(PAGES, 2 * PAGES)), read(byId(b), owned(b).slice(0, PAGES))]);
  const two = (2 * PAGES * MiB) / ((performance.now() - t0) / 1000);
  sampling = false;
  await sampler;
  let worst = 0;
  for (const s of samples) {
    const before = samples.filter((x) => x.t <= s.t - 1000).at(-1);
    if (before && s.t - before.t <= 1150) worst = Math.max(worst, ((s.b - before.b) * 1000) / (s.t - before.t));
  }
  console.log(JSON.stringify({ rate: RATE, pages: PAGES, oneBusyRateRatio: +(alone / RATE).toFixed(3), twoBusyRateRatio: +(two / RATE).toFixed(3), highestSecondRatio: +(worst / RATE).toFixed(3), staticSplitWouldBe: 0.333, loadavg: (await import('node:fs')).readFileSync('/proc/loadavg', 'utf8').trim() }));
} finally {
  await Promise.all(workers.map((w) => w.destroy()));
  await rm(source, { recursive: true, force: true });
}
