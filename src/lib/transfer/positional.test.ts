import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FanoutError } from '../../core/errors.js';
import { ByteBudget } from './bytebudget.js';
import { copyPagesAt } from './positional.js';

const PAGE = 1000;

/** A reader whose pages complete when the test says so (here: last page first). */
function controlledReader(data: Buffer) {
  const pending = new Map<number, () => void>();
  const asked: number[] = [];
  return {
    asked,
    pending,
    fetch: (index: number, signal: AbortSignal) =>
      new Promise<Buffer[]>((resolve, reject) => {
        asked.push(index);
        const page = data.subarray(index * PAGE, Math.min(data.length, (index + 1) * PAGE));
        // Two chunks per page, as pages arrive from the network.
        pending.set(index, () => resolve([page.subarray(0, 300), page.subarray(300)]));
        signal.addEventListener('abort', () => reject(signal.reason), { once: true });
      }),
  };
}

const tick = () => new Promise((r) => setImmediate(r));
/** Waits for a condition (real file writes finish on the thread pool), for at most 10 s. */
async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !condition(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(condition(), 'condition not reached within 10 s');
}

test('pages completing in reverse order are each written at their offset as they arrive, giving the exact bytes', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fanout-positional-'));
  const data = randomBytes(4 * PAGE + 123);
  const reader = controlledReader(data);
  const file = join(dir, 'out');
  const handle = await open(file, 'w');
  const written: number[] = [];
  const ordered: number[] = [];
  try {
    const copy = copyPagesAt({
      target: handle,
      pages: 5,
      pageSize: PAGE,
      pageLength: (i) => Math.min(PAGE, data.length - i * PAGE),
      window: 5,
      fetch: reader.fetch,
      onWritten: (i) => written.push(i),
      inOrder: (i) => ordered.push(i),
    });
    await tick();
    assert.deepEqual(reader.asked, [0, 1, 2, 3, 4]);
    for (const index of [4, 3, 2, 1]) {
      reader.pending.get(index)!();
      await until(() => written.includes(index));
    }
    // Written as they came, though page 0 has not arrived: no page waited for it.
    assert.deepEqual(written, [4, 3, 2, 1]);
    assert.deepEqual(ordered, []);
    reader.pending.get(0)!();
    await copy;
    assert.deepEqual(written, [4, 3, 2, 1, 0]);
    assert.deepEqual(ordered, [0, 1, 2, 3, 4]);
  } finally {
    await handle.close();
  }
  assert.deepEqual(await readFile(file), data);
  await rm(dir, { recursive: true, force: true });
});

test('the window bounds pages in flight: a slow first page holds back new fetches, not writes', async () => {
  const data = randomBytes(6 * PAGE);
  const reader = controlledReader(data);
  const writes: number[] = [];
  const target = { writev: async (buffers: Buffer[], position: number) => (writes.push(position / PAGE), { bytesWritten: buffers.reduce((s, b) => s + b.length, 0) }) };
  const copy = copyPagesAt({ target, pages: 6, pageSize: PAGE, pageLength: () => PAGE, window: 2, fetch: reader.fetch, inOrder: () => {} });
  await tick();
  assert.deepEqual(reader.asked, [0, 1]);
  reader.pending.get(1)!();
  await until(() => writes.length === 1);
  assert.deepEqual(writes, [1]);
  assert.deepEqual(reader.asked, [0, 1], 'page 1 is written but waits for the digest, so it still counts');
  reader.pending.get(0)!();
  await until(() => reader.asked.length === 4);
  assert.deepEqual(reader.asked, [0, 1, 2, 3]);
  for (const i of [3, 2, 5, 4]) {
    await until(() => reader.pending.has(i));
    reader.pending.get(i)!();
  }
  await copy;
  assert.deepEqual(writes.sort(), [0, 1, 2, 3, 4, 5]);
});

test('a failed page cancels the others and no write is running when the error arrives', async () => {
  const data = randomBytes(4 * PAGE);
  let writing = 0;
  let writesAfterFailure = 0;
  let failed = false;
  const target = {
    writev: async (buffers: Buffer[]) => {
      writing++;
      await new Promise((r) => setTimeout(r, 5));
      writing--;
      if (failed) writesAfterFailure++;
      return { bytesWritten: buffers.reduce((s, b) => s + b.length, 0) };
    },
  };
  const cancelled: number[] = [];
  const fetch = async (index: number, signal: AbortSignal) => {
    if (index === 2) throw new FanoutError('HASH_MISMATCH', 'page 2 is corrupt');
    if (index === 3) {
      await new Promise((_, reject) => signal.addEventListener('abort', () => (cancelled.push(3), reject(signal.reason)), { once: true }));
    }
    return [data.subarray(index * PAGE, (index + 1) * PAGE)];
  };
  await assert.rejects(
    copyPagesAt({ target, pages: 4, pageSize: PAGE, pageLength: () => PAGE, window: 4, fetch }).finally(() => {
      failed = true;
      assert.equal(writing, 0);
    }),
    (err: unknown) => err instanceof FanoutError && err.code === 'HASH_MISMATCH',
  );
  assert.deepEqual(cancelled, [3]);
  assert.equal(writesAfterFailure, 0);
});

for (const inOrder of [false, true]) {
  test(`the last page failing just after another completes is reported, never lost or left hanging (inOrder: ${inOrder})`, async () => {
    const data = randomBytes(2 * PAGE);
    const target = { writev: async (buffers: Buffer[]) => ({ bytesWritten: buffers.reduce((s, b) => s + b.length, 0) }) };
    // Page 1 fails 0..12 microtasks after page 0 is written: some of these land while the copy
    // loop is between two waits, which is where a failure used to go unseen.
    for (let delay = 0; delay <= 12; delay++) {
      let firstWritten!: () => void;
      const written = new Promise<void>((resolve) => (firstWritten = resolve));
      const fetch = async (index: number) => {
        if (index === 0) return [data.subarray(0, PAGE)];
        await written;
        for (let i = 0; i < delay; i++) await Promise.resolve();
        throw new FanoutError('SOURCE_ERROR', 'origin cannot read the tail');
      };
      const copy = copyPagesAt({
        target,
        pages: 2,
        pageSize: PAGE,
        pageLength: () => PAGE,
        window: 2,
        fetch,
        onWritten: (i) => i === 0 && firstWritten(),
        ...(inOrder ? { inOrder: () => {} } : {}),
      });
      let timer: NodeJS.Timeout | undefined;
      const hung = new Promise<string>((resolve) => (timer = setTimeout(() => resolve('hung'), 5000)));
      const outcome = await Promise.race([copy.then(() => 'resolved', (err: unknown) => (err instanceof FanoutError ? err.code : String(err))), hung]);
      clearTimeout(timer);
      assert.equal(outcome, 'SOURCE_ERROR', `page 1 failing ${delay} microtasks after page 0`);
    }
  });
}

test('a byte budget shared by two copies never has more bytes in flight than its size', async () => {
  const budget = new ByteBudget(3 * PAGE);
  let peak = 0;
  const data = randomBytes(8 * PAGE);
  const fetch = async (index: number) => {
    peak = Math.max(peak, budget.inUse);
    await new Promise((r) => setTimeout(r, 1 + (index % 3)));
    return [data.subarray(index * PAGE, (index + 1) * PAGE)];
  };
  const sink = () => ({ writev: async (buffers: Buffer[]) => ({ bytesWritten: buffers.reduce((s, b) => s + b.length, 0) }) });
  await Promise.all([0, 1].map(() => copyPagesAt({ target: sink(), pages: 8, pageSize: PAGE, pageLength: () => PAGE, window: 4, fetch, budget })));
  assert.ok(peak <= 3 * PAGE, `peak ${peak}`);
  assert.equal(peak, 3 * PAGE);
  assert.equal(budget.inUse, 0);
});

test('a budget waiter that aborts takes nothing, and a request larger than the budget runs alone', async () => {
  const budget = new ByteBudget(100);
  const a = await budget.acquire(60);
  const leaving = new AbortController();
  const left = budget.acquire(60, leaving.signal);
  const small = budget.acquire(30);
  leaving.abort();
  await assert.rejects(left);
  const b = await small; // was queued behind the one that left
  assert.equal(budget.inUse, 90);
  a();
  b();
  const huge = await budget.acquire(500);
  assert.equal(budget.inUse, 100);
  huge();
  huge();
  assert.equal(budget.inUse, 0);
});
