import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../../core/clock.js';
import { admit, cancelled, refusal, waitForBytes, WakeTimer, type Waiter } from './waiters.js';

test('a wake timer that was replaced never fires, even on a clock whose sleep ignores the abort', async () => {
  const clock = new ManualClock();
  const timer = new WakeTimer(clock);
  const woke: string[] = [] as string[];
  timer.set(10, () => woke.push('first'));
  timer.set(20.2, () => woke.push('second'));
  await clock.advance(15);
  assert.deepEqual([...woke], []);
  await clock.advance(6); // 21 ms: 20.2 rounded up
  assert.deepEqual([...woke], ['second']);
  timer.set(5, () => woke.push('cleared'));
  timer.clear();
  await clock.advance(10);
  assert.deepEqual([...woke], ['second']);
});

test('waiters resolve when admitted, reject with ABORTED when their signal fires, and bad requests are refused', async () => {
  const queue: Waiter[] = [];
  const controller = new AbortController();
  const admitted = waitForBytes(5, undefined, (w) => queue.push(w), () => assert.fail('no signal'));
  const aborted = waitForBytes(7, controller.signal, (w) => queue.push(w), (w) => {
    queue.splice(queue.indexOf(w), 1);
    cancelled(w);
  });
  assert.deepEqual(queue.map((w) => w.n), [5, 7]);
  controller.abort();
  await assert.rejects(aborted, { code: 'ABORTED' });
  admit(queue.shift()!);
  await admitted;
  assert.equal(queue.length, 0);
  await assert.rejects(refusal(-1, undefined)!, { code: 'INVALID_ARGUMENT' });
  await assert.rejects(refusal(1, AbortSignal.abort())!, { code: 'ABORTED' });
  assert.equal(refusal(1, undefined), undefined);
});
