import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { WorkerStatus } from '../../core/types.js';
import type { HistorySample } from './history.js';
import { ClusterModel, WINDOW_MS } from './app/model.js';
import type { RelayedMember } from './index.js';

const member = (id: string) => ({ id, url: `http://${id}:7450`, capacity: 100 });
const cluster = (ids: string[]) => ({ members: ids.map(member), mounts: ['models'], stale: false, self: ids[0]! });

function status(id: string, patch: Partial<WorkerStatus> = {}): WorkerStatus {
  return { id, url: '', capacity: 100, used: 10, pages: 2, hits: 3, misses: 1, bytesServed: 0, bytesFromSource: 0, evictions: 0, inflightSourceReads: 0, sourceRates: { models: 50 }, ...patch };
}

function sample(t: number, sourceBytes: number, served = 0): HistorySample {
  return { t, ms: 5_000, hits: 0, misses: 0, served, source: { models: sourceBytes }, budget: { models: 50 }, fills: 0, used: 0 };
}

function answer(id: string, samples: HistorySample[], patch: Partial<WorkerStatus> = {}): RelayedMember {
  return { reachable: true, status: status(id, patch), activity: { fills: { count: 0, listed: [] }, loads: [] }, history: { intervalMs: 5_000, samples } };
}

describe("the page's cluster model", () => {
  test("members' samples add up per time; rates are per second; the budget is the sum of the shares", () => {
    const model = new ClusterModel();
    model.updateCluster(cluster(['a', 'b']), 100_000);
    model.applyMember('a', answer('a', [sample(90_000, 5_000), sample(95_000, 10_000)]), 100_000);
    model.applyMember('b', answer('b', [sample(95_000, 40_000, 5_000)]), 100_000);
    assert.deepEqual(model.sourceSeries('models'), [{ t: 90_000, value: 1_000 }, { t: 95_000, value: 10_000 }]);
    model.applyMember('a', answer('a', [sample(100_000, 50_000)]), 100_000);
    assert.equal(model.sourceSeries('models').length, 2, 'a time only some members have sampled is not drawn yet');
    model.applyMember('b', answer('b', [sample(100_000, 50_000)]), 100_000);
    assert.deepEqual(model.sourceSeries('models').at(-1), { t: 100_000, value: 20_000 });
    assert.deepEqual(model.servedSeries().slice(0, 2), [{ t: 90_000, value: 0 }, { t: 95_000, value: 1_000 }]);
    assert.equal(model.budget('models'), 100);
    assert.equal(model.since('a'), 100_000);
    assert.deepEqual(model.totals(), { up: 2, total: 2, capacity: 200, used: 20, pages: 4, hits: 6, misses: 2 });
  });

  test('an unlimited share makes the budget unlimited (0)', () => {
    const model = new ClusterModel();
    model.updateCluster(cluster(['a', 'b']), 0);
    model.applyMember('a', answer('a', []), 0);
    model.applyMember('b', answer('b', [], { sourceRates: { models: 0 } }), 0);
    assert.equal(model.budget('models'), 0);
  });

  test('a member that does not answer is down; one that left the membership stays listed as down for the window', () => {
    const model = new ClusterModel();
    model.updateCluster(cluster(['a', 'b', 'c']), 0);
    model.applyMember('a', answer('a', []), 0);
    model.applyMember('b', { reachable: false, error: { code: 'WORKER_UNAVAILABLE', message: 'no answer within 2500 ms' } }, 0);
    model.applyMember('c', answer('c', []), 0);
    assert.equal(model.members.get('b')!.health, 'down');
    assert.equal(model.members.get('b')!.error, 'no answer within 2500 ms');
    assert.deepEqual(model.ordered().map((m) => m.id), ['b', 'a', 'c'], 'down members first: they need a look');
    assert.deepEqual(model.liveIds(), ['a', 'c', 'b'], 'members that answered are asked first');
    model.updateCluster(cluster(['a', 'b']), 1_000);
    assert.equal(model.members.get('c')!.health, 'down');
    assert.match(model.members.get('c')!.error!, /left the membership/);
    assert.deepEqual(model.liveIds(), ['a', 'b'], 'a member that left is not asked');
    model.updateCluster(cluster(['a', 'b']), WINDOW_MS + 2_000);
    assert.equal(model.members.has('c'), false, 'forgotten after the window');
  });

  test('a busy relay (OVERLOADED) changes nothing about the member', () => {
    const model = new ClusterModel();
    model.updateCluster(cluster(['a']), 0);
    model.applyMember('a', answer('a', []), 0);
    model.applyMember('a', { reachable: false, error: { code: 'OVERLOADED', message: '32 member requests already in flight' } }, 1);
    assert.equal(model.members.get('a')!.health, 'up');
  });

  test('samples older than the window are dropped', () => {
    const model = new ClusterModel();
    model.updateCluster(cluster(['a']), 0);
    model.applyMember('a', answer('a', [sample(1_000, 1), sample(WINDOW_MS + 10_000, 1)]), WINDOW_MS + 10_000);
    assert.deepEqual([...model.members.get('a')!.samples.keys()], [WINDOW_MS + 10_000]);
  });
});
