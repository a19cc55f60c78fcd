import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pino } from 'pino';
import { ManualClock } from '../core/clock.js';
import { pageKey } from '../lib/pagekey/index.js';
import type { PageRef } from '../core/types.js';
import { WorkerMetrics } from '../lib/metrics/index.js';
import { DEFAULT_PEER_TIMEOUTS } from '../lib/cluster/index.js';
import { PageService } from './pageservice.js';
import { FakeResponse } from './fakeresponse.js';

const PAGE = 1024 * 1024;
const ref: PageRef = { mount: 'm', path: 'f', version: 'v1', size: 4 * PAGE, index: 0 };

/** What every service here shares: one worker, no peers, metrics nobody reads. */
const SINGLE_WORKER = {
  metrics: new WorkerMetrics({
    storeUsedBytes: () => 0,
    storeCapacityBytes: () => 0,
    storePages: () => 0,
    inflightSourceReads: () => 0,
    members: () => 1,
    sourceRates: () => ({}),
  }),
  pageSize: PAGE,
  selfId: 'w',
  placement: () => ({ owners: () => [], members: () => [] }),
  replication: 1,
  peers: { release() {}, timeouts: DEFAULT_PEER_TIMEOUTS } as never,
  logger: pino({ level: 'silent' }),
  signal: new AbortController().signal,
};

/** A service over a store that always has the page; two response slots. */
function service(clock: ManualClock): PageService {
  const data = Buffer.alloc(PAGE, 3);
  const store = {
    has: () => true,
    get: async () => ({ data, crc: 0, release: () => {} }),
  };
  return new PageService({
    store: store as never,
    ufs: () => {
      throw new Error('no source read expected');
    },
    budget: {} as never,
    ...SINGLE_WORKER,
    limits: { responseMemory: 2 * PAGE, clientIdle: 60_000, fillsPerMount: 8 },
    clock,
  });
}

const tick = () => new Promise((r) => setImmediate(r));

test('a client that leaves while queued for a response slot frees its place, and no slot leaks', async () => {
  const clock = new ManualClock();
  const pages = service(clock);
  assert.equal(pageKey(ref, PAGE).length > 0, true);
  const slow = [new FakeResponse(), new FakeResponse()];
  const serving = slow.map((res) => pages.serve(res as unknown as ServerResponse, ref).catch(() => {}));
  await tick();
  assert.equal(pages.responseSlots.held, 2, 'both slow clients hold a page');
  const queued = new FakeResponse();
  const waiting = pages.serve(queued as unknown as ServerResponse, ref).catch((e: { code?: string }) => e.code);
  await tick();
  assert.equal(pages.responseSlots.waiting, 1);
  queued.destroy();
  assert.equal(await waiting, 'ABORTED');
  assert.equal(pages.responseSlots.waiting, 0, 'the client that left is no longer queued');
  for (const res of slow) res.destroy();
  await Promise.all(serving);
  assert.equal(pages.responseSlots.held, 0, 'every slot is free once the clients are gone');
});

test('a slow client gives its page back after a while, so another client is served', async () => {
  const clock = new ManualClock();
  const pages = service(clock);
  const slow = [new FakeResponse(), new FakeResponse()];
  const serving = slow.map((res) => pages.serve(res as unknown as ServerResponse, ref).catch(() => {}));
  await tick();
  const other = new FakeResponse();
  const served = pages.serve(other as unknown as ServerResponse, ref);
  await tick();
  assert.equal(pages.responseSlots.waiting, 1);
  // The slow clients take one slice each: with someone waiting, they give their slots up.
  for (const res of slow) res.take();
  await tick();
  while (!other.ended) {
    other.take();
    await tick();
  }
  await served;
  while (other.take()) await tick();
  assert.equal(other.received, PAGE);
  for (const res of slow) res.destroy();
  await Promise.all(serving);
  assert.equal(pages.responseSlots.held, 0);
});

/** A service whose store is empty and whose source starts reads that never end (until abandoned). */
function coldService(fillsPerMount: number): { pages: PageService; started: () => number } {
  let started = 0;
  const source = {
    read: (_path: string, _version: string, _start: number, _length: number, signal?: AbortSignal) => {
      started++;
      return Readable.from(
        (async function* () {
          await new Promise((_resolve, reject) => signal?.addEventListener('abort', () => reject(signal.reason), { once: true }));
          yield Buffer.alloc(0);
        })(),
      );
    },
  };
  const pages = new PageService({
    store: { has: () => false, put: async () => {} } as never,
    ufs: () => source as never,
    budget: { take: async () => {} } as never,
    ...SINGLE_WORKER,
    limits: { responseMemory: 2 * PAGE, clientIdle: 60_000, fillsPerMount },
    clock: new ManualClock(),
  });
  return { pages, started: () => started };
}

async function sourceReadsInFlight(fileSize: number, requests: number): Promise<number> {
  const { pages, started } = coldService(1);
  const clients = Array.from({ length: requests }, () => new FakeResponse());
  const serving = clients.map((res, i) => pages.serve(res as unknown as ServerResponse, { mount: 'm', path: `f${i}`, version: 'v1', size: fileSize, index: 0 }).catch(() => {}));
  for (let i = 0; i < 5; i++) await tick();
  const inFlight = started();
  for (const res of clients) res.destroy();
  await Promise.all(serving);
  return inFlight;
}

test('a mount fill slot carries several small pages at once, but one whole page', async () => {
  assert.equal(await sourceReadsInFlight(PAGE, 4), 1, 'whole pages: fillsPerMount reads at a time');
  assert.equal(await sourceReadsInFlight(PAGE / 16, 20), 8, 'pages of 1/16 of a page: 8 per slot');
});
