import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../core/clock.js';
import type { Member } from '../../core/types.js';
import { OutageState } from './outage.js';
import { WakeablePause } from './pause.js';
import { MemberRecords } from './records.js';

const PREFIX = '/fanout/t/members/';
/** A record as a worker writes it: under a lease. */
const kv = (m: Member, lease = '7587') => ({ key: Buffer.from(PREFIX + m.id), value: Buffer.from(JSON.stringify(m)), lease });
const raw = (id: string, value: string) => ({ key: Buffer.from(PREFIX + id), value: Buffer.from(value), lease: '7587' });
const logger = () => {
  const lines: string[] = [];
  return { lines, log: { debug: () => undefined, info: (_: object, msg?: string) => lines.push(`info ${msg}`), warn: (_: object, msg?: string) => lines.push(`warn ${msg}`) } };
};

test('member records: a listing, puts and deletes publish a sorted list only when it changes; self always counts until stopping', () => {
  const self = { id: 'w2', url: 'http://w2', capacity: 0 };
  let stopping = false;
  const published: string[][] = [];
  const { lines, log } = logger();
  const records = new MemberRecords({ prefix: PREFIX, self, log, stopping: () => stopping, onChange: (list) => published.push(list.map((m) => m.id)) });
  records.replace([kv({ id: 'w3', url: 'http://w3', capacity: 1 }), kv({ id: 'w1', url: 'http://w1', capacity: 1 })]);
  assert.deepEqual(published, [['w1', 'w2', 'w3']]);
  records.put(kv({ id: 'w3', url: 'http://w3', capacity: 1 }));
  assert.equal(published.length, 1, 'the same record again changes nothing');
  records.put(raw('bad', '{not json'));
  assert.deepEqual(lines, ['warn ignoring a malformed member record']);
  assert.equal(records.delete(Buffer.from(PREFIX + 'w1')), 'w1');
  assert.deepEqual(published.at(-1), ['w2', 'w3']);
  stopping = true;
  records.delete(Buffer.from(PREFIX + 'w3'));
  assert.deepEqual(published.at(-1), [], 'a stopping worker no longer counts itself');
  assert.equal(records.count, 0);
});

test('member records: a malformed record overwriting a member drops it, as a listing would', () => {
  const { log } = logger();
  const published: string[][] = [];
  const records = new MemberRecords({ prefix: PREFIX, log, stopping: () => false, onChange: (list) => published.push(list.map((m) => m.id)) });
  records.replace([kv({ id: 'w1', url: 'http://w1', capacity: 1 }), kv({ id: 'w2', url: 'http://w2', capacity: 1 })]);
  records.put(raw('w2', 'garbage'));
  assert.deepEqual(published.at(-1), ['w1']);
  const listed = new MemberRecords({ prefix: PREFIX, log, stopping: () => false, onChange: () => undefined });
  listed.replace([kv({ id: 'w1', url: 'http://w1', capacity: 1 }), raw('w2', 'garbage')]);
  assert.deepEqual(listed.members().map((m) => m.id), ['w1'], 'the same as a fresh listing');
});

test('member records: a record without a lease is no member, listed as ignored and logged once per key until deleted', () => {
  const { lines, log } = logger();
  const published: string[][] = [];
  const records = new MemberRecords({ prefix: PREFIX, log, stopping: () => false, onChange: (list) => published.push(list.map((m) => m.id)) });
  const w1 = { id: 'w1', url: 'http://w1', capacity: 1 };
  // By hand: another id at w1's address (it would double w1's share of the ring), and a dead address.
  records.replace([kv(w1), kv({ id: 'w9', url: w1.url, capacity: 1 }, '0'), kv({ id: 'ghost', url: 'http://127.0.0.1:9', capacity: 1 }, '0')]);
  assert.deepEqual(published, [['w1']]);
  assert.deepEqual(records.ignored(), [
    { key: PREFIX + 'ghost', id: 'ghost', url: 'http://127.0.0.1:9', reason: 'no-lease' },
    { key: PREFIX + 'w9', id: 'w9', url: w1.url, reason: 'no-lease' },
  ]);
  const warnings = lines.filter((l) => l.includes('without a lease'));
  assert.equal(warnings.length, 2);
  // A re-listing (after an outage) and the same put again do not log again.
  records.replace([kv(w1), kv({ id: 'w9', url: w1.url, capacity: 1 }, '0'), kv({ id: 'ghost', url: 'http://127.0.0.1:9', capacity: 1 }, '0')]);
  records.put(kv({ id: 'w9', url: w1.url, capacity: 1 }, '0'));
  assert.equal(lines.filter((l) => l.includes('without a lease')).length, 2);
  // A leaseless put over a member drops it; the same id under a lease is a member again.
  records.put(kv(w1, '0'));
  assert.deepEqual(published.at(-1), []);
  records.put(kv(w1));
  assert.deepEqual(published.at(-1), ['w1']);
  records.delete(Buffer.from(PREFIX + 'w9'));
  assert.deepEqual(records.ignored().map((r) => r.id), ['ghost']);
});

test('member records: members of several ids at one URL (each under a lease) are kept, with one warning per URL while it lasts', () => {
  const { lines, log } = logger();
  const records = new MemberRecords({ prefix: PREFIX, log, stopping: () => false, onChange: () => undefined });
  const shared = () => lines.filter((l) => l.includes('several members have one URL')).length;
  records.replace([kv({ id: 'w1', url: 'http://w1', capacity: 1 }), kv({ id: 'w1b', url: 'http://w1', capacity: 1 })]);
  assert.deepEqual(records.members().map((m) => m.id), ['w1', 'w1b'], 'no telling which is the live one: both kept');
  assert.equal(shared(), 1);
  records.put(kv({ id: 'w2', url: 'http://w2', capacity: 1 }));
  assert.equal(shared(), 1, 'not again while it lasts');
  records.delete(Buffer.from(PREFIX + 'w1b'));
  records.put(kv({ id: 'w1b', url: 'http://w1', capacity: 1 }));
  assert.equal(shared(), 2, 'again once it came back');
});

test('outage state: one warning when etcd is lost, one info line when it is back, with the outage length', () => {
  const clock = new ManualClock(1000);
  const { lines, log } = logger();
  const events: boolean[] = [];
  const outage = new OutageState(clock, log, () => 3, (stale) => events.push(stale));
  outage.set(false);
  outage.set(true, new Error('unavailable'));
  outage.set(true, new Error('still unavailable'));
  assert.equal(outage.stale, true);
  outage.set(false);
  assert.deepEqual(events, [true, false]);
  assert.deepEqual(lines, ['warn etcd unreachable; keeping the last known members, reads go on', 'info etcd reachable again; members re-read']);
});

test('wakeable pause: a wake-up cuts the wait short, and one that comes before the wait is not lost', async () => {
  const clock = new ManualClock();
  const pause = new WakeablePause(clock);
  let done = false;
  const waiting = pause.pause(60_000).then(() => (done = true));
  await Promise.resolve();
  assert.equal(done, false);
  pause.wakeUp();
  await waiting;
  pause.wakeUp(); // before the next wait
  await pause.pause(60_000); // returns at once: the ManualClock never advances here
});
