import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fanoutBin, TEST_ADMIN_TOKEN, WorkerProcess } from '../harness/workers.js';

const MiB = 1024 * 1024;

/** Runs a shell command line in a real pseudo-terminal (util-linux `script`) and returns what the terminal received. */
function inTerminal(commandLine: string): Promise<{ code: number; screen: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn('script', ['-qfec', commandLine, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let screen = '';
    proc.stdout.on('data', (c: Buffer) => (screen += c.toString()));
    proc.stderr.on('data', (c: Buffer) => (screen += c.toString()));
    proc.once('error', reject);
    proc.once('close', (code) => resolve({ code: code ?? -1, screen }));
  });
}

/** The frames a terminal showed: text between carriage returns and cursor moves, escapes removed. */
function frames(screen: string): string[] {
  return screen
    // eslint-disable-next-line no-control-regex
    .split(/\r|\n|\x1b\[1G/)
    // eslint-disable-next-line no-control-regex
    .map((f) => f.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]/g, '').trim())
    .filter(Boolean);
}

const BAR = /(\d+)% \| ([\d.]+)\/([\d.]+) (B|KiB|MiB|GiB) \| (.+?) \| ETA (\S+)$/;

/** `fanout cp` on a terminal, against a real worker whose source is slowed so the copy takes seconds. */
describe('fanout cp progress on a terminal', () => {
  let source: string;
  let work: string;
  let worker: WorkerProcess;
  const data = randomBytes(12 * MiB + 7);

  before(async () => {
    source = await mkdtemp(join(tmpdir(), 'fanout-progress-src-'));
    work = await mkdtemp(join(tmpdir(), 'fanout-progress-'));
    await writeFile(join(source, 'big.bin'), data);
    await writeFile(join(source, 'preload.bin'), randomBytes(40 * MiB));
    // 4 MB/s from the source: about three seconds of copy, so the bar draws many frames. The
    // preload mount is faster: `load` reports once per 16 pages, so it needs more of them.
    worker = await WorkerProcess.start({
      id: 'progress',
      mounts: { data: { uri: source, sourceRate: '4MB/s' }, preload: { uri: source, sourceRate: '16MB/s' } },
      pageSize: '1MiB',
    });
  });

  after(async () => {
    await worker?.destroy();
    await rm(source, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  test('the bar shows both sizes in one unit, a rate and an ETA, then a final line with size, time and rate', async () => {
    const dest = join(work, 'big.bin');
    const { code, screen } = await inTerminal(`stty cols 160; exec ${process.execPath} ${fanoutBin} cp /data/big.bin ${dest} --endpoint ${worker.url}`);
    assert.equal(code, 0, screen);
    assert.deepEqual(await readFile(dest), data);

    const shown = frames(screen);
    const bars = shown.map((f) => BAR.exec(f)).filter((m): m is RegExpExecArray => m !== null);
    assert.ok(bars.length >= 2, `progress frames on the terminal:\n${shown.join('\n')}`);
    for (const [frame, , done, total, unit] of bars) {
      assert.equal(unit, 'MiB', `both sizes in the total's unit: ${frame}`);
      assert.equal(total, '12.00', frame);
      assert.ok(Number(done) <= 12, frame);
    }
    const midway = bars.filter(([, percent, , , , rate, eta]) => Number(percent) > 0 && Number(percent) < 100 && /^[\d.]+ (B|KiB|MiB)\/s$/.test(rate!) && /^\d+:\d\d$/.test(eta!));
    assert.ok(midway.length > 0, `a frame during the copy shows a rate and an ETA:\n${bars.map((b) => b[0]).join('\n')}`);
    const last = bars[bars.length - 1]!;
    assert.equal(last[1], '100', last[0]);
    assert.equal(last[2], '12.00', last[0]);
    assert.equal(last[6], 'done', last[0]);
    const final = shown[shown.length - 1]!;
    assert.match(final, new RegExp(`^done: copied 12\\.00 MiB to ${dest.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} in [\\d.]+ s \\([\\d.]+ (KiB|MiB)/s\\)$`));
  });

  test('fanout load shows the same bar: sizes in one unit, a rate and an ETA, then done', async () => {
    const { code, screen } = await inTerminal(`stty cols 160; FANOUT_TOKEN=${TEST_ADMIN_TOKEN} exec ${process.execPath} ${fanoutBin} load /preload/preload.bin --endpoint ${worker.url}`);
    assert.equal(code, 0, screen);
    const shown = frames(screen);
    const bars = shown.map((f) => /^(.*) \| (\d+) pages$/.exec(f)).filter((m): m is RegExpExecArray => m !== null).map((m) => BAR.exec(m[1]!)).filter((m): m is RegExpExecArray => m !== null);
    assert.ok(bars.length >= 2, `progress frames on the terminal:\n${shown.join('\n')}`);
    for (const [frame, , , total, unit] of bars) assert.deepEqual([total, unit], ['40.00', 'MiB'], frame);
    assert.ok(
      bars.some(([, percent, , , , rate, eta]) => Number(percent) > 0 && Number(percent) < 100 && /\/s$/.test(rate!) && /^\d+:\d\d$/.test(eta!)),
      `a frame during the load shows a rate and an ETA:\n${bars.map((b) => b[0]).join('\n')}`,
    );
    assert.equal(bars[bars.length - 1]![6], 'done');
    assert.match(screen, /loaded 40 pages \(40\.0 MiB\) × 1: 40 fetched/);
  });

  test('without a terminal there is no bar, only the final line', async () => {
    const dest = join(work, 'piped.bin');
    const proc = spawn(process.execPath, [fanoutBin, 'cp', '/data/big.bin', dest, '--endpoint', worker.url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((resolve) => proc.once('close', resolve));
    assert.equal(code, 0, stderr);
    assert.doesNotMatch(stderr, /%|\x1b/); // eslint-disable-line no-control-regex
    assert.match(stderr, /^done: copied 12\.00 MiB to .*piped\.bin in [\d.]+ s \([\d.]+ (B|KiB|MiB|GiB)\/s\)\n$/);
  });
});
