import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FanoutError } from '../../core/errors.js';
import type { FileInfo, Member, PageRef } from '../../core/types.js';
import { HashRing } from '../hashring/index.js';
import type { PageFetcher, PageRequestOptions } from './pagefetcher.js';
import { ClusterReader } from './reader.js';
import { ManualClock } from '../../core/clock.js';
import { pageKey } from '../../lib/pagekey/index.js';
import { ByteBudget } from '../transfer/index.js';

const PAGE = 16;
const members: Member[] = ['a', 'b', 'c', 'd'].map((id) => ({ id, url: `http://${id}`, capacity: 1 }));
const ring = new HashRing(members);
const file: FileInfo = { path: 'f.bin', size: PAGE * 10 + 5, mtimeMs: 0, version: 'v1' };
const content = Buffer.from(Array.from({ length: file.size }, (_, i) => i % 251));

interface Call {
  member: string;
  index: number;
  direct: boolean;
}

/** A fetcher whose behaviour per call is scripted by the test; pages come in two chunks. */
function fakeFetcher(behave: (call: Call, signal?: AbortSignal) => 'ok' | FanoutError | 'hang' = () => 'ok') {
  const calls: Call[] = [];
  let inflight = 0;
  let maxInflight = 0;
  const fetcher = {
    async fetch(member: Member, ref: PageRef, length: number, options: PageRequestOptions = {}): Promise<Buffer[]> {
      const call = { member: member.id, index: ref.index, direct: options.direct ?? false };
      calls.push(call);
      inflight++;
      maxInflight = Math.max(maxInflight, inflight);
      try {
        await new Promise((r) => setImmediate(r));
        const outcome = behave(call, options.signal);
        if (outcome === 'hang') {
          await new Promise((_, reject) => options.signal?.addEventListener('abort', () => reject(new FanoutError('ABORTED', 'aborted'))));
        }
        if (outcome instanceof FanoutError) throw outcome;
        const page = content.subarray(ref.index * PAGE, ref.index * PAGE + length);
        return [page.subarray(0, 5), page.subarray(5)];
      } finally {
        inflight--;
      }
    },
  } as unknown as PageFetcher;
  return { fetcher, calls, maxInflight: () => maxInflight };
}

async function readAll(reader: ClusterReader, start = 0, end = file.size): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of reader.chunks('m', file, start, end)) parts.push(chunk);
  return Buffer.concat(parts);
}

test('reads any byte range in order, with a bounded window of page fetches', async () => {
  const fake = fakeFetcher();
  const reader = new ClusterReader({ placement: () => ring, fetcher: fake.fetcher, pageSize: PAGE, concurrency: 3 });
  assert.deepEqual(await readAll(reader), content);
  assert.deepEqual(await readAll(reader, 7, 70), content.subarray(7, 70));
  assert.deepEqual(await readAll(reader, PAGE, PAGE * 2), content.subarray(PAGE, PAGE * 2));
  assert.deepEqual(await readAll(reader, 5, 5), Buffer.alloc(0));
  assert.ok(fake.maxInflight() <= 3, `at most 3 pages in flight, saw ${fake.maxInflight()}`);
  assert.throws(() => reader.read('m', file, 0, file.size + 1), (e: FanoutError) => e.code === 'RANGE_NOT_SATISFIABLE');
});

test('a failing worker is skipped: the next candidate is asked', async () => {
  const fake = fakeFetcher((call) => (call.member === 'b' ? new FanoutError('WORKER_UNAVAILABLE', 'refused') : 'ok'));
  const failures: string[] = [];
  const reader = new ClusterReader({
    placement: () => ring,
    fetcher: fake.fetcher,
    pageSize: PAGE,
    onWorkerFailure: (m) => failures.push(m.id),
  });
  assert.deepEqual(await readAll(reader), content);
  const retried = fake.calls.filter((c) => c.member !== 'b' && fake.calls.some((d) => d.member === 'b' && d.index === c.index));
  assert.ok(retried.length > 0, 'some pages belonged to b');
  // Once marked down, b is tried at most for the pages already in flight when it failed.
  assert.ok(failures.length >= 1);
  const before = fake.calls.length;
  await readAll(reader);
  assert.equal(fake.calls.slice(before).filter((c) => c.member === 'b').length, 0, 'b is skipped while down');
});

test('errors every worker would repeat end the read at once', async () => {
  const fake = fakeFetcher(() => new FanoutError('SOURCE_CHANGED', 'changed'));
  const reader = new ClusterReader({ placement: () => ring, fetcher: fake.fetcher, pageSize: PAGE, concurrency: 1 });
  await assert.rejects(readAll(reader), (e: FanoutError) => e.code === 'SOURCE_CHANGED');
  assert.equal(fake.calls.length, 1, 'not retried elsewhere');
});

test('when every worker fails, the source fallback serves the page', async () => {
  const fake = fakeFetcher(() => new FanoutError('WORKER_UNAVAILABLE', 'down'));
  const fallbackPages: number[] = [];
  const reader = new ClusterReader({
    placement: () => ring,
    fetcher: fake.fetcher,
    pageSize: PAGE,
    sourceFallback: async (ref, start, length) => {
      fallbackPages.push(ref.index);
      return [content.subarray(start, start + length)];
    },
  });
  assert.deepEqual(await readAll(reader), content);
  assert.equal(fallbackPages.length, 11);
  const without = new ClusterReader({ placement: () => ring, fetcher: fake.fetcher, pageSize: PAGE });
  await assert.rejects(readAll(without), (e: FanoutError) => e.code === 'WORKER_UNAVAILABLE');
});

test('with replication, readers spread a page over its replicas', async () => {
  const fake = fakeFetcher();
  const firstAsked = new Set<string>();
  for (let i = 0; i < 40; i++) {
    const reader = new ClusterReader({ placement: () => ring, fetcher: fake.fetcher, pageSize: PAGE, replication: 3 });
    const before = fake.calls.length;
    await readAll(reader, 0, PAGE);
    firstAsked.add(fake.calls[before]!.member);
  }
  const replicas = ring.owners(
    (await import('../pagekey/index.js')).pageKey({ mount: 'm', path: file.path, version: file.version, size: file.size, index: 0 }, PAGE),
    3,
  );
  assert.deepEqual([...firstAsked].sort(), replicas.map((m) => m.id).sort());
});

test('a stalled worker is hedged: the next candidate answers, the stalled request is abandoned, the worker demoted', async () => {
  let hung = 0;
  let abandoned = 0;
  const stalled = ring.owners(pageKeyOf(0), 1)[0]!.id;
  const fake = fakeFetcher((call, signal) => {
    if (call.member === stalled) {
      if (signal?.aborted) return 'hang'; // already lost the race before it started
      hung++;
      signal?.addEventListener('abort', () => abandoned++);
      return 'hang';
    }
    return 'ok';
  });
  // On a manual clock, time moves only when every healthy request has answered: only the
  // stalled worker can look slow, however loaded the machine running the test is.
  const clock = new ManualClock();
  const reader = new ClusterReader({ placement: () => ring, fetcher: fake.fetcher, pageSize: PAGE, hedge: 500, concurrency: 1, clock });
  let done = false;
  const read = readAll(reader).finally(() => (done = true));
  while (!done) {
    await settle();
    if (!done) await clock.advance(500);
  }
  assert.deepEqual(await read, content);
  assert.equal(abandoned, hung, 'every hung request was aborted once the hedge won');
  assert.equal(reader.health.isDemoted(stalled), true, `${stalled} demoted`);
  // Once demoted, the stalled worker is asked after the others: not for every page it owns.
  const owned = Array.from({ length: 11 }, (_, i) => i).filter((i) => ring.owners(pageKeyOf(i), 1)[0]!.id === stalled).length;
  assert.ok(owned > 1, 'the stalled worker owns several pages');
  assert.equal(hung, 1, `asked ${hung} times for the ${owned} pages it owns`);
});

test('the hedge waits for the delay without progress (manual clock), then asks the next candidate', async () => {
  const clock = new ManualClock();
  const first = ring.owners(pageKeyOf(0), 1)[0]!.id;
  const fake = fakeFetcher((call) => (call.member === first ? 'hang' : 'ok'));
  const reader = new ClusterReader({ placement: () => ring, fetcher: fake.fetcher, pageSize: PAGE, hedge: 500, clock });
  const page = reader.fetchPage(refOf(0));
  await settle();
  assert.deepEqual(fake.calls.map((c) => c.member), [first]);
  await clock.advance(499);
  assert.equal(fake.calls.length, 1, 'no hedge before the delay');
  await clock.advance(1);
  await settle();
  assert.equal(fake.calls.length, 2, 'hedged after the delay');
  assert.notEqual(fake.calls[1]!.member, first);
  assert.deepEqual(Buffer.concat(await page), content.subarray(0, PAGE));
  assert.equal(reader.health.isDemoted(first), true);
});

test('a worker passed by with a speculative hedge is not demoted when its own answer wins', async () => {
  // On a loaded cluster the hedge goes to a worker that relays the page from this same owner: the
  // owner answers first, and demoting it would send its next pages through relays.
  const clock = new ManualClock();
  const first = ring.owners(pageKeyOf(0), 1)[0]!.id;
  let answerFirst: (() => void) | undefined;
  const calls: string[] = [];
  const fetcher = {
    fetch(member: Member, ref: PageRef, length: number, options: PageRequestOptions = {}): Promise<Buffer[]> {
      calls.push(member.id);
      const bytes = [content.subarray(ref.index * PAGE, ref.index * PAGE + length)];
      if (member.id === first) return new Promise((resolve) => (answerFirst = () => resolve(bytes)));
      return new Promise((_, reject) => options.signal?.addEventListener('abort', () => reject(options.signal!.reason)));
    },
  } as unknown as PageFetcher;
  const reader = new ClusterReader({ placement: () => ring, fetcher, pageSize: PAGE, hedge: 500, clock });
  const page = reader.fetchPage(refOf(0));
  await settle();
  await clock.advance(500);
  await settle();
  assert.equal(calls.length, 2, 'hedged after the delay');
  answerFirst!();
  assert.deepEqual(Buffer.concat(await page), content.subarray(0, PAGE));
  assert.equal(reader.health.isDemoted(first), false, 'its own answer won: slow, not passed by');
});

test('a request that keeps making progress is not hedged', async () => {
  const clock = new ManualClock();
  let progress: ((what: 'headers' | 'chunk') => void) | undefined;
  let finish: (() => void) | undefined;
  const calls: string[] = [];
  const fetcher = {
    fetch(member: Member, ref: PageRef, length: number, options: PageRequestOptions = {}): Promise<Buffer[]> {
      calls.push(member.id);
      progress = options.onProgress;
      return new Promise((resolve) => (finish = () => resolve([content.subarray(ref.index * PAGE, ref.index * PAGE + length)])));
    },
  } as unknown as PageFetcher;
  const reader = new ClusterReader({ placement: () => ring, fetcher, pageSize: PAGE, hedge: 500, clock });
  const page = reader.fetchPage(refOf(0));
  progress!('headers');
  for (let i = 0; i < 5; i++) {
    await clock.advance(400);
    progress!('chunk');
  }
  await clock.advance(400);
  assert.equal(calls.length, 1, 'a slow but moving transfer is left alone');
  finish!();
  await page;
});

test('hedging off: a stalled worker is waited for (deadlines end it)', async () => {
  const clock = new ManualClock();
  const fake = fakeFetcher(() => 'hang');
  const reader = new ClusterReader({ placement: () => ring, fetcher: fake.fetcher, pageSize: PAGE, hedge: 'off', clock });
  const controller = new AbortController();
  const page = reader.fetchPage(refOf(0), controller.signal);
  await settle();
  await clock.advance(60_000);
  assert.equal(fake.calls.length, 1);
  controller.abort();
  await assert.rejects(page, (e: FanoutError) => e.code === 'ABORTED');
});

for (const code of ['SOURCE_ERROR', 'SOURCE_TRUNCATED', 'SOURCE_CHANGED', 'SOURCE_UNVERSIONED', 'NOT_FOUND'] as const) {
  test(`${code} from a worker reaches the caller with its code; the worker is not demoted and no other worker is asked`, async () => {
    const fake = fakeFetcher(() => new FanoutError(code, 'the source said no'));
    const failures: string[] = [];
    let fallbacks = 0;
    const reader = new ClusterReader({
      placement: () => ring,
      fetcher: fake.fetcher,
      pageSize: PAGE,
      concurrency: 1,
      onWorkerFailure: (m) => failures.push(m.id),
      sourceFallback: async () => (fallbacks++, []),
    });
    await assert.rejects(reader.fetchPage(refOf(0)), (e: FanoutError) => e.code === code);
    assert.equal(fake.calls.length, 1, 'not re-read through another worker');
    assert.equal(fallbacks, 0, 'not re-read from the source by the client');
    assert.deepEqual(failures, []);
    assert.equal(reader.health.isDemoted(fake.calls[0]!.member), false);
  });
}

test('an overloaded worker is passed over and demoted, not marked down', async () => {
  const first = ring.owners(pageKeyOf(0), 1)[0]!.id;
  const fake = fakeFetcher((call) => (call.member === first ? new FanoutError('OVERLOADED', 'busy') : 'ok'));
  const reader = new ClusterReader({ placement: () => ring, fetcher: fake.fetcher, pageSize: PAGE });
  assert.deepEqual(Buffer.concat(await reader.fetchPage(refOf(0))), content.subarray(0, PAGE));
  assert.equal(reader.health.isDemoted(first), true);
  assert.equal(reader.health.isDown(first), false);
});

function refOf(index: number): PageRef {
  return { mount: 'm', path: file.path, version: file.version, size: file.size, index };
}

function pageKeyOf(index: number): string {
  return pageKey(refOf(index), PAGE);
}

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

test('a page that fails its checksum is reported to the worker that sent it, and the next worker is asked only after the report', async () => {
  const events: string[] = [];
  let reported: PageRef | undefined;
  const fake = fakeFetcher((call) => {
    events.push(`fetch ${call.member}`);
    return events.length === 1 ? new FanoutError('CHECKSUM_MISMATCH', 'bad page') : 'ok';
  });
  const reporter = {
    async report(member: Member, ref: PageRef) {
      events.push(`report ${member.id} start`);
      reported = ref;
      await new Promise((r) => setTimeout(r, 20));
      events.push(`report ${member.id} done`);
      return undefined;
    },
  };
  const reader = new ClusterReader({ placement: () => ring, fetcher: fake.fetcher, pageSize: PAGE, reporter });
  const ref: PageRef = { mount: 'm', path: file.path, version: file.version, size: file.size, index: 3 };
  const page = Buffer.concat(await reader.fetchPage(ref));
  assert.deepEqual(page, content.subarray(3 * PAGE, 4 * PAGE));
  const first = events[0]!.split(' ')[1];
  assert.deepEqual(events.slice(0, 3), [`fetch ${first}`, `report ${first} start`, `report ${first} done`]);
  assert.match(events[3]!, /^fetch /);
  assert.notEqual(events[3], `fetch ${first}`);
  assert.deepEqual(reported, ref);
});

test('failures other than a bad checksum are not reported', async () => {
  const reports: string[] = [];
  let calls = 0;
  const fake = fakeFetcher(() => (++calls === 1 ? new FanoutError('WORKER_UNAVAILABLE', 'reset') : 'ok'));
  const reader = new ClusterReader({ placement: () => ring, fetcher: fake.fetcher, pageSize: PAGE, reporter: { report: async (m) => void reports.push(m.id) } });
  await readAll(reader, 0, PAGE);
  assert.equal(calls, 2);
  assert.deepEqual(reports, []);
});

test('pages() yields one array of chunks per page, in order, sliced to the range', async () => {
  const reader = new ClusterReader({ placement: () => ring, fetcher: fakeFetcher().fetcher, pageSize: PAGE, concurrency: 3 });
  const pages: Buffer[][] = [];
  for await (const page of reader.pages('m', file, 7, PAGE * 3 + 2)) pages.push(page);
  assert.deepEqual(
    pages.map((p) => Buffer.concat(p)),
    [content.subarray(7, PAGE), content.subarray(PAGE, PAGE * 2), content.subarray(PAGE * 2, PAGE * 3), content.subarray(PAGE * 3, PAGE * 3 + 2)],
  );
  assert.ok(pages.every((p) => p.every((chunk) => chunk.length > 0)), 'no empty chunks');
});

test('a caller that stops reading pages() early aborts the page fetches still in flight', async () => {
  const aborted: number[] = [];
  const fake = fakeFetcher((call, signal) => {
    if (call.index === 0) return 'ok';
    if (signal?.aborted) aborted.push(call.index); // given up before this fake got to run
    else signal?.addEventListener('abort', () => aborted.push(call.index));
    return 'hang';
  });
  const reader = new ClusterReader({ placement: () => ring, fetcher: fake.fetcher, pageSize: PAGE, concurrency: 3, hedge: 'off' });
  for await (const page of reader.pages('m', file, 0, file.size)) {
    assert.deepEqual(Buffer.concat(page), content.subarray(0, PAGE));
    break;
  }
  await waitUntil(() => aborted.length === 3);
  assert.deepEqual(aborted.sort(), [1, 2, 3], 'the window (pages 1–3) was given up');
});

test('an aborted signal ends pages() with ABORTED', async () => {
  const reader = new ClusterReader({ placement: () => ring, fetcher: fakeFetcher(() => 'hang').fetcher, pageSize: PAGE, hedge: 'off' });
  const controller = new AbortController();
  const reading = (async () => {
    for await (const _ of reader.pages('m', file, 0, file.size, controller.signal));
  })();
  controller.abort(new FanoutError('ABORTED', 'caller gave up'));
  await assert.rejects(reading, (e: FanoutError) => e.code === 'ABORTED');
});

/** Polls a condition for at most 5 s (fetch callbacks settle over a few event-loop turns). */
async function waitUntil(check: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(check(), 'condition not met within 5 s');
}

test('a page refused for its page size by some candidates and unreachable at the others fails with PAGE_SIZE_MISMATCH, whatever the order', async () => {
  // Mid-way through a rolling restart to another pageSize: the restarted workers refuse the
  // reader's size, the one restarting cannot be reached. The reader follows a change of the
  // cluster's page size only on PAGE_SIZE_MISMATCH (client/pagesize.ts); before, the last
  // candidate's error won, and a read failed WORKER_UNAVAILABLE when the unreachable came last.
  // Three members, as in test/integration/rolling-page-size.test.ts: every member is a candidate.
  const three = new HashRing(members.slice(0, 3));
  const owners = three.owners(pageKey(refOf(0), PAGE), 3).map((m) => m.id);
  for (const down of owners) {
    const fake = fakeFetcher((call) => (call.member === down ? new FanoutError('WORKER_UNAVAILABLE', 'connect ECONNREFUSED') : new FanoutError('PAGE_SIZE_MISMATCH', `this worker's pages are ${2 * PAGE} bytes`)));
    const reader = new ClusterReader({ placement: () => three, fetcher: fake.fetcher, pageSize: PAGE, hedge: 'off' });
    await assert.rejects(reader.fetchPage(refOf(0)), (e: FanoutError) => e.code === 'PAGE_SIZE_MISMATCH', `${down} down of ${owners.join(', ')}`);
    assert.equal(fake.calls.length, 3, 'every candidate asked');
  }
  // Every candidate unreachable: still WORKER_UNAVAILABLE.
  const fake = fakeFetcher(() => new FanoutError('WORKER_UNAVAILABLE', 'connect ECONNREFUSED'));
  const reader = new ClusterReader({ placement: () => three, fetcher: fake.fetcher, pageSize: PAGE, hedge: 'off' });
  await assert.rejects(reader.fetchPage(refOf(0)), (e: FanoutError) => e.code === 'WORKER_UNAVAILABLE');
});

test('a refusal of the page size costs no attempt: a member of the reader\'s size beyond the page\'s three candidates is asked, and serves it', async () => {
  // Mid-way through a rolling restart of four workers or more: the page's three candidates have
  // the other size (or are down), the fourth has the reader's and relays it. Before, the page
  // failed PAGE_SIZE_MISMATCH after three candidates.
  const [x, y, z, spare] = ring.owners(pageKey(refOf(0), PAGE), 4).map((m) => m.id);
  const fake = fakeFetcher((call) => (call.member === spare ? 'ok' : call.member === z ? new FanoutError('WORKER_UNAVAILABLE', 'connect ECONNREFUSED') : new FanoutError('PAGE_SIZE_MISMATCH', `this worker's pages are ${2 * PAGE} bytes`)));
  const reader = new ClusterReader({ placement: () => ring, fetcher: fake.fetcher, pageSize: PAGE, hedge: 'off' });
  assert.deepEqual(Buffer.concat(await reader.fetchPage(refOf(0))), content.subarray(0, PAGE));
  assert.deepEqual(fake.calls.map((c) => c.member), [x, y, z, spare]);
  // A worker that cannot be reached still uses up an attempt: three candidates, then the error.
  const down = fakeFetcher((call) => (call.member === spare ? 'ok' : new FanoutError('WORKER_UNAVAILABLE', 'connect ECONNREFUSED')));
  const other = new ClusterReader({ placement: () => ring, fetcher: down.fetcher, pageSize: PAGE, hedge: 'off' });
  await assert.rejects(other.fetchPage(refOf(0)), (e: FanoutError) => e.code === 'WORKER_UNAVAILABLE');
  assert.equal(down.calls.length, 3);
});

test('reads at once fetch the pages they wait for within the shared demand room, not one page each', async () => {
  const fake = fakeFetcher();
  const demand = new ByteBudget(4 * PAGE);
  const ahead = new ByteBudget(PAGE);
  const reader = new ClusterReader({ placement: () => ring, fetcher: fake.fetcher, pageSize: PAGE, concurrency: 3, ahead, demand, hedge: 'off' });
  // Whole pages only, so that the room's bytes are a count of pages.
  const whole: FileInfo = { ...file, size: PAGE * 10 };
  const readWhole = async () => {
    const parts: Buffer[] = [];
    for await (const chunk of reader.chunks('m', whole, 0, whole.size)) parts.push(chunk);
    return Buffer.concat(parts);
  };
  const reads = await Promise.all(Array.from({ length: 40 }, readWhole));
  for (const bytes of reads) assert.deepEqual(bytes, content.subarray(0, whole.size));
  // Before: 40 (each read's first page needed no room) or more.
  assert.ok(fake.maxInflight() <= 4 + 1, `${fake.maxInflight()} page fetches in flight`);
  assert.equal(demand.inUse, 0);
  assert.equal(ahead.inUse, 0);
});

test('the demand room never waits on a consumer: streams read one after the other, zipped in lockstep, or one held half-read', async () => {
  // One page of demand room and two of read-ahead: every stream started, then left unread,
  // while the program reads the others.
  const demand = new ByteBudget(PAGE);
  const ahead = new ByteBudget(2 * PAGE);
  const reader = new ClusterReader({ placement: () => ring, fetcher: fakeFetcher().fetcher, pageSize: PAGE, concurrency: 3, ahead, demand });
  const open = () => reader.chunks('m', file, 0, file.size)[Symbol.asyncIterator]();
  const rest = async (it: AsyncIterator<Buffer>, parts: Buffer[] = []) => {
    for (let r = await it.next(); !r.done; r = await it.next()) parts.push(r.value);
    return Buffer.concat(parts);
  };
  // Ten streams, each given its first chunk (so each has fetched ahead and holds room), then read one after the other.
  const streams = Array.from({ length: 10 }, open);
  const firsts = await Promise.all(streams.map((it) => it.next()));
  for (const [i, it] of streams.entries()) assert.deepEqual(await rest(it, [firsts[i]!.value as Buffer]), content);
  // Two streams zipped chunk by chunk, a third held half-read meanwhile.
  const held = open();
  const heldParts: Buffer[] = [];
  for (let i = 0; i < 8; i++) heldParts.push((await held.next()).value as Buffer);
  const [a, b] = [open(), open()];
  const [pa, pb]: Buffer[][] = [[], []];
  for (;;) {
    const [ra, rb] = [await a.next(), await b.next()];
    if (ra.done || rb.done) break;
    pa.push(ra.value);
    pb.push(rb.value);
  }
  assert.deepEqual(Buffer.concat(pa), content);
  assert.deepEqual(Buffer.concat(pb), content);
  assert.deepEqual(await rest(held, heldParts), content);
  assert.equal(demand.inUse, 0);
  assert.equal(ahead.inUse, 0);
});
