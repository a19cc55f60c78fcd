import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ManualClock } from '../core/clock.js';
import type { Member } from '../core/types.js';
import { FanoutError } from '../core/errors.js';
import { HashRing } from '../lib/hashring/index.js';
import type { TrafficClass } from '../lib/lines/index.js';
import { SourceBudget } from './sourcebudget.js';

/**
 * Whole-cluster simulations of one line on a ManualClock: workers renew their shares through a
 * simulated network (delays, lost requests), read in both classes, come and go, and the
 * coordinator moves with the ring. What they admit is recorded and checked over every 1 s window.
 */

const RATE = 8_000_000;
const CHUNK = 64 * 1024;
const STEP_MS = 5;
const member = (id: string): Member => ({ id, url: `http://${id}`, capacity: 1 });

type Mode = 'idle' | 'read' | 'preload' | 'both';
interface Node {
  budget: SourceBudget;
  stop: AbortController;
  mode: Mode;
  admitted: { at: number; n: number; cls: TrafficClass }[];
}

interface Net {
  /** One-way delay of a renewal (ms). */
  delayMs: number;
  /** One in `dropEvery` renewals is lost (0: none). */
  dropEvery: number;
}

class SimCluster {
  readonly clock = new ManualClock(1_000_000);
  readonly nodes = new Map<string, Node>();
  private ring = new HashRing([]);
  private asks = 0;

  constructor(private readonly net: Net) {}

  join(id: string, mode: Mode): void {
    const stop = new AbortController();
    const budget = new SourceBudget({
      lines: { wan: { rate: RATE, preloadFloor: RATE / 10 } },
      mountLines: { models: 'wan' },
      workerRate: 0,
      clock: this.clock,
      self: id,
      coordinatorOf: (line) => this.ring.owners(`line:${line}`, 1)[0],
      members: () => this.ring.members().map((m) => m.id),
      askPeer: (coordinator, line, req, signal) => this.send(coordinator.id, () => this.nodes.get(coordinator.id)?.budget.renew(line, req), signal),
    });
    const node: Node = { budget, stop, mode, admitted: [] };
    this.nodes.set(id, node);
    this.ring = new HashRing([...this.nodes.keys()].map(member));
    budget.start(stop.signal);
    for (const cls of ['read', 'preload'] as const) void this.consume(node, cls);
  }

  leave(id: string): void {
    const node = this.nodes.get(id);
    if (!node) return;
    node.stop.abort(new FanoutError('ABORTED', 'left'));
    this.nodes.delete(id);
    this.ring = new HashRing([...this.nodes.keys()].map(member));
    this.left.push(node);
  }

  readonly left: Node[] = [];

  async run(ms: number): Promise<void> {
    for (let t = 0; t < ms; t += STEP_MS) await this.clock.advance(STEP_MS);
  }

  /** Every admitted chunk of every worker that ever ran. */
  all(): { at: number; n: number; cls: TrafficClass }[] {
    return [...this.nodes.values(), ...this.left].flatMap((n) => n.admitted).sort((a, b) => a.at - b.at);
  }

  /** The most bytes admitted in any 1 s window. */
  worstSecond(): number {
    const events = this.all();
    let worst = 0;
    let sum = 0;
    let tail = 0;
    for (const e of events) {
      sum += e.n;
      while (events[tail]!.at <= e.at - 1000) sum -= events[tail++]!.n;
      worst = Math.max(worst, sum);
    }
    return worst;
  }

  bytes(id: string, from: number, to: number, cls?: TrafficClass): number {
    const node = this.nodes.get(id)!;
    return node.admitted.filter((e) => e.at > from && e.at <= to && (!cls || e.cls === cls)).reduce((s, e) => s + e.n, 0);
  }

  private async send<T>(to: string, answer: () => T, signal: AbortSignal): Promise<T> {
    const lost = this.net.dropEvery > 0 && ++this.asks % this.net.dropEvery === 0;
    await this.clock.sleep(this.net.delayMs);
    if (lost || !this.nodes.has(to)) return new Promise<T>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }));
    const result = answer(); // throws WORKER_UNAVAILABLE when `to` is not the coordinator in its own view
    await this.clock.sleep(this.net.delayMs);
    return result;
  }

  private async consume(node: Node, cls: TrafficClass): Promise<void> {
    while (!node.stop.signal.aborted) {
      const wants = node.mode === 'both' || node.mode === cls;
      if (!wants) {
        await this.clock.sleep(STEP_MS);
        continue;
      }
      try {
        await node.budget.take('models', CHUNK, node.stop.signal, cls);
      } catch {
        return;
      }
      node.admitted.push({ at: this.clock.now(), n: CHUNK, cls });
    }
  }
}

/** What the property allows: 5% over the rate in any second, plus one chunk per worker in debt. */
function allowed(workers: number): number {
  return RATE * 1.05 + workers * CHUNK;
}

test('one busy worker gets most of the line within about a second, and gives it back when another gets busy', async () => {
  const sim = new SimCluster({ delayMs: 2, dropEvery: 0 });
  for (const id of ['a', 'b', 'c']) sim.join(id, 'idle');
  await sim.run(500);
  sim.nodes.get('a')!.mode = 'read';
  const start = sim.clock.now();
  await sim.run(3000);
  const aSecond = sim.bytes('a', start + 1000, start + 2000);
  assert.ok(aSecond >= 0.9 * RATE, `the busy worker read ${aSecond} bytes in its second second (line ${RATE})`);
  sim.nodes.get('b')!.mode = 'read';
  const both = sim.clock.now();
  await sim.run(3000);
  const a = sim.bytes('a', both + 1500, both + 2500);
  const b = sim.bytes('b', both + 1500, both + 2500);
  assert.ok(Math.abs(a - b) <= 0.1 * RATE, `two busy workers split the line: ${a} / ${b}`);
  assert.ok(a + b >= 0.9 * RATE, `and use all of it: ${a + b}`);
  assert.ok(sim.worstSecond() <= allowed(3), `worst second ${sim.worstSecond()}`);
  for (const n of sim.nodes.values()) n.stop.abort();
});

test('waiting reads go before preloads cluster-wide, and preloads keep their floor', async () => {
  const sim = new SimCluster({ delayMs: 2, dropEvery: 0 });
  sim.join('reader', 'read');
  sim.join('loader', 'preload');
  sim.join('both', 'both');
  await sim.run(3000);
  const from = sim.clock.now() - 1000;
  const to = sim.clock.now();
  const preload = sim.bytes('loader', from, to, 'preload') + sim.bytes('both', from, to, 'preload');
  const read = sim.bytes('reader', from, to, 'read') + sim.bytes('both', from, to, 'read');
  assert.ok(preload >= 0.08 * RATE, `preloads keep about their floor (a tenth): ${preload}`);
  assert.ok(preload <= 0.2 * RATE, `but no more while reads wait: ${preload}`);
  assert.ok(read >= 0.75 * RATE, `reads take the rest: ${read}`);
  for (const n of sim.nodes.values()) n.stop.abort();
});

test('the cluster never exceeds the line by more than 5% in any second, while shares move and members come and go', async () => {
  const modes: Mode[] = ['idle', 'read', 'preload', 'both'];
  const step = fc.oneof(
    fc.record({ kind: fc.constant('mode' as const), who: fc.nat(5), mode: fc.constantFrom(...modes) }),
    fc.record({ kind: fc.constant('join' as const), who: fc.nat(5), mode: fc.constantFrom(...modes) }),
    fc.record({ kind: fc.constant('leave' as const), who: fc.nat(5) }),
  );
  const scenario = fc.record({
    delayMs: fc.integer({ min: 0, max: 150 }),
    dropEvery: fc.constantFrom(0, 3, 7),
    start: fc.array(fc.constantFrom(...modes), { minLength: 1, maxLength: 4 }),
    steps: fc.array(step, { minLength: 3, maxLength: 8 }),
  });
  await fc.assert(
    fc.asyncProperty(scenario, async ({ delayMs, dropEvery, start, steps }) => {
      const sim = new SimCluster({ delayMs, dropEvery });
      start.forEach((mode, i) => sim.join(`w${i}`, mode));
      let most = sim.nodes.size;
      await sim.run(700);
      for (const s of steps) {
        const id = `w${s.who}`;
        if (s.kind === 'mode' && sim.nodes.has(id)) sim.nodes.get(id)!.mode = s.mode;
        if (s.kind === 'join' && !sim.nodes.has(id)) sim.join(id, s.mode);
        if (s.kind === 'leave' && sim.nodes.size > 1) sim.leave(id);
        most = Math.max(most, sim.nodes.size);
        await sim.run(700);
      }
      for (const n of sim.nodes.values()) n.stop.abort();
      const worst = sim.worstSecond();
      assert.ok(worst <= allowed(most), `worst second ${worst} > ${allowed(most)} (rate ${RATE})`);
    }),
    { numRuns: Number(process.env.LINES_RUNS ?? 25), seed: Number(process.env.LINES_SEED ?? 11) },
  );
});
