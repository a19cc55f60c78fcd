import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { ManualClock } from '../../core/clock.js';
import { BufferReclaimer } from './reclaim.js';

const MiB = 1024 * 1024;

/** Buffers outside the heap: `live` in use, `garbage` unreferenced until a collection frees it. */
function fakeHeap(start = 10 * MiB) {
  const heap = { live: start, garbage: 0, collections: 0 };
  return {
    heap,
    measure: () => heap.live + heap.garbage,
    collect: () => {
      heap.collections++;
      heap.garbage = 0;
    },
  };
}

function reclaimer(clock: ManualClock, fake: ReturnType<typeof fakeHeap>) {
  return new BufferReclaimer({ clock, measure: fake.measure, collect: fake.collect, slackBytes: 32 * MiB, floorBytes: 64 * MiB });
}

describe('BufferReclaimer', () => {
  it('collects once buffers grew past the slack, and not before', () => {
    const clock = new ManualClock();
    const fake = fakeHeap();
    const r = reclaimer(clock, fake);
    fake.heap.garbage = 20 * MiB;
    assert.equal(r.check(), false);
    fake.heap.garbage = 40 * MiB;
    assert.equal(r.check(), true);
    assert.equal(fake.heap.collections, 1);
  });

  it('does not collect again for buffers that are really in use', async () => {
    const clock = new ManualClock();
    const fake = fakeHeap();
    const r = reclaimer(clock, fake);
    fake.heap.live = 50 * MiB; // below the floor: only growth counts
    assert.equal(r.check(), true);
    assert.equal(r.check(), false); // reads what the collection left: 50 MiB live
    for (let i = 0; i < 100; i++) {
      await clock.advance(1000);
      assert.equal(r.check(), false);
    }
    assert.equal(fake.heap.collections, 1);
  });

  it('collects buffers that became garbage without the figure moving (responses let their pages go)', async () => {
    const clock = new ManualClock();
    const fake = fakeHeap();
    const r = reclaimer(clock, fake);
    fake.heap.live = 200 * MiB; // a burst: pages held by responses
    assert.equal(r.check(), true);
    assert.equal(r.check(), false);
    // The responses end: the same bytes are now garbage; nothing new is allocated.
    fake.heap.live = 20 * MiB;
    fake.heap.garbage = 180 * MiB;
    await clock.advance(1000);
    assert.equal(r.check(), false, 'not at once: the figure did not move');
    await clock.advance(5000);
    assert.equal(r.check(), true);
    assert.equal(fake.measure(), 20 * MiB);
  });

  it('waits longer between collections that free nothing (an idle worker with full pools)', async () => {
    const clock = new ManualClock();
    const fake = fakeHeap(100 * MiB); // pools above the floor, all in use
    const r = reclaimer(clock, fake);
    const at: number[] = [];
    for (let s = 1; s <= 60; s++) {
      await clock.advance(1000);
      if (r.check()) at.push(s);
    }
    assert.deepEqual(at.slice(0, 3), [5, 15, 25], 'after 5 s, then 10 s apart');
    assert.ok(at.length <= 6, `${at.length} collections in 60 s`);
  });

  it('stops checking when its signal aborts', async () => {
    const clock = new ManualClock();
    const fake = fakeHeap();
    const r = new BufferReclaimer({ clock, measure: fake.measure, collect: fake.collect, everyMs: 1000 });
    const stop = new AbortController();
    const running = r.run(stop.signal);
    fake.heap.garbage = 100 * MiB;
    await clock.advance(1000);
    assert.equal(fake.heap.collections, 1);
    stop.abort();
    await clock.advance(1000);
    fake.heap.garbage = 100 * MiB;
    await clock.advance(5000);
    assert.equal(fake.heap.collections, 1);
    void running;
  });
});
