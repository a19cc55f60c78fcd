import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import { ResponseFlow } from './flow.js';
import { FakeResponse } from './fakeresponse.js';

const tick = () => new Promise((r) => setImmediate(r));

test('a flow queues at most its allowance for a client that does not read', () => {
  const res = new FakeResponse();
  const flow = new ResponseFlow(res, { clock: new ManualClock(), idleMs: 1000, allowance: 128 * 1024 });
  const page = Buffer.alloc(1024 * 1024, 7);
  const stopped = flow.write(page, 0, page.length);
  assert.equal(stopped, 128 * 1024);
  assert.equal(res.writableLength, 128 * 1024);
  assert.ok(flow.full);
});

test('a client that takes nothing for idleMs is cut, and the writer waiting on it fails', async () => {
  const clock = new ManualClock();
  const res = new FakeResponse();
  res.on('error', () => {});
  const flow = new ResponseFlow(res, { clock, idleMs: 1000, allowance: 64 * 1024 });
  flow.write(Buffer.alloc(256 * 1024), 0, 256 * 1024);
  const waiting = flow.room().then(
    () => 'resolved',
    (e: { code?: string }) => e.code,
  );
  await clock.advance(999);
  assert.equal(res.destroyed, false);
  await clock.advance(1);
  assert.equal(await waiting, 'ABORTED');
  assert.equal(res.destroyed, true);
});

test('a client that keeps taking bytes is not cut, however slowly', async () => {
  const clock = new ManualClock();
  const res = new FakeResponse();
  const flow = new ResponseFlow(res, { clock, idleMs: 1000, allowance: 64 * 1024 });
  const page = Buffer.alloc(256 * 1024, 1);
  let at = flow.write(page, 0, page.length);
  while (at < page.length) {
    const waiting = flow.room();
    await clock.advance(900);
    assert.ok(res.take());
    await waiting;
    at = flow.write(page, at, page.length);
  }
  while (res.take()) await tick();
  assert.equal(res.destroyed, false);
  assert.equal(res.received, page.length);
});

test('a client that went away gives no room: the writer stops instead of reading its next page', async () => {
  const res = new FakeResponse();
  res.on('error', () => {});
  const flow = new ResponseFlow(res, { clock: new ManualClock(), idleMs: 60_000, allowance: 1024 * 1024 });
  const page = Buffer.alloc(256 * 1024, 3);
  assert.equal(flow.write(page, 0, page.length), page.length);
  // A reset: the socket is destroyed at once, its 'close' comes only later (and a write queued
  // before may even report success in between, as node's sockets do).
  res.destroy(new Error('connection reset'));
  assert.equal(flow.write(page, 0, page.length), 0, 'nothing more is queued');
  await assert.rejects(flow.room(), (e: { code?: string }) => e.code === 'ABORTED');
});
