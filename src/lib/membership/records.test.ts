import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../core/clock.js';
import type { Member } from '../../core/types.js';
import { OutageState } from './outage.js';
import { WakeablePause } from './pause.js';
import { MemberRecords } from './records.js';

const PREFIX = '/fanout/t/members/';
const kv = (m: Member) => ({ key: Buffer.from(PREFIX + m.id), value: Buffer.from(JSON.stringify(m)) });
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
  records.put(Buffer.from(PREFIX + 'w3'), Buffer.from(JSON.stringify({ id: 'w3', url: 'http://w3', capacity: 1 })));
  assert.equal(published.length, 1, 'the same record again changes nothing');
  records.put(Buffer.from(PREFIX + 'bad'), Buffer.from('{not json'));
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
  records.put(Buffer.from(PREFIX + 'w2'), Buffer.from('garbage'));
  assert.deepEqual(published.at(-1), ['w1']);
  const listed = new MemberRecords({ prefix: PREFIX, log, stopping: () => false, onChange: () => undefined });
  listed.replace([kv({ id: 'w1', url: 'http://w1', capacity: 1 }), { key: Buffer.from(PREFIX + 'w2'), value: Buffer.from('garbage') }]);
  assert.deepEqual(listed.members().map((m) => m.id), ['w1'], 'the same as a fresh listing');
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
