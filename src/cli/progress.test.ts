import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../core/clock.js';
import { doneLine, etaSeconds, formatEta, formatProgressSizes, formatRate, RateMeter } from './progress.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

describe('copy progress', () => {
  test('both sizes are shown in the unit of the total', () => {
    assert.equal(formatProgressSizes(512 * KiB, 2 * GiB), '0.00/2.00 GiB');
    assert.equal(formatProgressSizes(1.25 * GiB, 3 * GiB), '1.25/3.00 GiB');
    assert.equal(formatProgressSizes(300 * KiB, 12 * MiB + 7), '0.29/12.00 MiB');
    assert.equal(formatProgressSizes(10, 900), '10/900 B');
    assert.equal(formatProgressSizes(0, 0), '0/0 B');
  });

  test('the rate follows the last seconds, and the ETA follows the rate', async () => {
    const clock = new ManualClock(1_000);
    const meter = new RateMeter(() => clock.now(), 3000);
    assert.equal(meter.rate(), undefined, 'no rate before time passes');
    assert.equal(formatEta(etaSeconds(0, 100 * MiB, meter.rate())), '--:--');
    // 10 s at 1 MiB/s, then 3 s at 10 MiB/s: the rate shown is the recent one.
    let done = 0;
    for (let s = 0; s < 10; s++) {
      await clock.advance(1000);
      meter.record((done += MiB));
    }
    assert.equal(meter.rate(), MiB);
    for (let s = 0; s < 3; s++) {
      await clock.advance(1000);
      meter.record((done += 10 * MiB));
    }
    assert.equal(meter.rate(), 10 * MiB);
    assert.equal(formatRate(meter.rate()), '10.0 MiB/s');
    assert.equal(formatEta(etaSeconds(done, done + 420 * MiB, meter.rate())), '0:42');
    assert.equal(formatEta(etaSeconds(done, done + 3723 * 10 * MiB, meter.rate())), '1:02:03');
    assert.equal(formatEta(etaSeconds(done, done, meter.rate())), '0:00');
  });

  test('the final line says done, the size, the time and the rate', () => {
    assert.equal(doneLine(3 * GiB, 12, '/tmp/model.bin'), 'done: copied 3.00 GiB to /tmp/model.bin in 12.00 s (256.0 MiB/s)');
    assert.equal(doneLine(0, 0, 'x'), 'done: copied 0 B to x in 0.00 s (-- B/s)');
    assert.equal(formatRate(512), '512 B/s');
  });
});
