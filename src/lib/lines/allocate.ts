/**
 * How one line's rate is divided between the workers that read across it. Pure arithmetic: the
 * coordinator (coordinator.ts) calls it with the demands it last heard, so the split is tested
 * without clocks or sockets.
 */

/** What a worker wants of a line, per class, in bytes/s. Infinity: it has requests waiting (as much as it can get). */
export interface ClassDemand {
  read: number;
  preload: number;
}

/** A worker's part of a line: `rate` in all, of which `preloadMin` is kept for its preloads when they wait. */
export interface Share {
  rate: number;
  preloadMin: number;
}

/**
 * Max-min fair division ("water filling") of `pool` between demands: every demand at or below
 * the fair level is met in full, the others share the rest equally. Nothing is left over unless
 * every demand is met. Keys keep their order; the result is in bytes/s.
 */
export function maxMinFair(pool: number, demands: ReadonlyMap<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const id of demands.keys()) out.set(id, 0);
  let left = Math.max(0, pool);
  // Smallest demands first: each one either fits under an equal split of what is left, or
  // every remaining demand is at least as large and they all get that equal split.
  const order = [...demands.entries()].filter(([, d]) => d > 0).sort((a, b) => a[1] - b[1]);
  for (let i = 0; i < order.length; i++) {
    const [id, demand] = order[i]!;
    const equal = left / (order.length - i);
    const given = Math.min(demand, equal);
    out.set(id, given);
    left -= given;
  }
  return out;
}

/**
 * Divides `rate` between workers in two classes. Reads a client waits for come first: they share
 * the rate max-min fairly, less what preloads are guaranteed (`preloadFloor`, cluster-wide, and
 * only as much of it as preloads want). Preloads take the floor plus whatever reads leave. What
 * nobody asked for is split equally between all workers, so a worker whose next read arrives
 * before its next renewal does not start from zero.
 */
export function allocateLine(rate: number, preloadFloor: number, demands: ReadonlyMap<string, ClassDemand>): Map<string, Share> {
  const preloadWants = new Map([...demands].map(([id, d]) => [id, d.preload]));
  const readWants = new Map([...demands].map(([id, d]) => [id, d.read]));
  const wantedPreload = sum(preloadWants.values());
  const floor = Math.min(Math.max(0, preloadFloor), rate, wantedPreload);
  const reads = maxMinFair(rate - floor, readWants);
  const afterReads = rate - sum(reads.values());
  // The floor is part of what preloads divide, so a worker's preloadMin is its part of the floor.
  const floorParts = maxMinFair(floor, preloadWants);
  const preloads = maxMinFair(afterReads, preloadWants);
  const spare = rate - sum(reads.values()) - sum(preloads.values());
  const idleParts = maxMinFair(spare, new Map([...demands.keys()].map((id) => [id, Infinity])));
  const out = new Map<string, Share>();
  for (const id of demands.keys()) {
    const total = reads.get(id)! + preloads.get(id)! + idleParts.get(id)!;
    out.set(id, { rate: total, preloadMin: Math.min(total, floorParts.get(id)!) });
  }
  return out;
}

function sum(values: Iterable<number>): number {
  let total = 0;
  for (const v of values) total += v;
  return total;
}
