import { FanoutError } from '../../core/errors.js';
import type { Member } from '../../core/types.js';
import { sha256, sha512 } from '../checksum/index.js';

export interface HashRingOptions {
  /**
   * Absolute weighting: virtual nodes per GiB of capacity. When set, a member's vnode count
   * depends only on its own capacity, so adding a member never changes anyone else's vnodes
   * (strictly minimal movement even with mixed capacities). When unset, vnodes are weighted
   * relative to the mean capacity (`vnodesPerMember` for an average member), which keeps the
   * balance good whatever the absolute sizes are, at the cost of moving a few keys between
   * old members when a newcomer shifts the mean.
   */
  vnodesPerGiB?: number;
  /** Vnodes of a member of mean capacity, in relative mode. */
  vnodesPerMember?: number;
  /** Floor so a tiny member still gets a usable (if small) share and some spread. */
  minVnodes?: number;
  /** Ceiling so one huge member cannot make the ring enormous. */
  maxVnodes?: number;
}

/**
 * 1024 vnodes for an average member. A member's share is the sum of its arcs, whose relative
 * spread is about 1/sqrt(vnodes): 160–200 vnodes leave ±7–8 % per member, so the most loaded
 * of 16 members sits ~15 % above the mean (measured 1.148); 512 measured 1.11; 1024 gives ~1.06.
 * The ring stays small: 100 members = 10^5 points (1.2 MB), built in ~50 ms on a membership
 * change, searched in 17 steps.
 */
export const DEFAULT_VNODES_PER_MEMBER = 1024;
export const DEFAULT_MIN_VNODES = 16;
export const DEFAULT_MAX_VNODES = 8192;

const GiB = 1024 ** 3;
/**
 * Ring positions are 37-bit integers so that position × 2^16 + owner index is still exact in a
 * double (2^53): see the sort in the constructor. 2^37 slots leave ~0.04 expected collisions
 * among 10^5 vnodes, and collisions are ordered deterministically anyway.
 */
const POSITION_BITS = 37;
const POSITION_SHIFT = 48 - POSITION_BITS;
const OWNER_SPACE = 65536;
/** sha512 gives 64 bytes: ten 48-bit slices per digest, so building the ring hashes 10× less. */
const POSITIONS_PER_DIGEST = 10;

/**
 * Position of a key on the ring: the top 37 bits of its SHA-256. They fit exactly in a double,
 * so the ring is a Float64Array compared with plain `<` (no BigInt on the hot path). SHA-256
 * rather than a faster non-cryptographic hash because it is identical in every process and
 * language (lib/checksum: OpenSSL's, through native/checksum or node:crypto), and ~1 µs per 4 MiB
 * page is nothing next to moving the page.
 */
export function ringPosition(key: string): number {
  return Math.floor(sha256(key).readUIntBE(0, 6) / 2 ** POSITION_SHIFT);
}

/**
 * Consistent-hash ring with capacity-weighted virtual nodes. Every client and worker builds
 * the same ring from the same member list (order does not matter), so placement needs no
 * coordination. Immutable: build a new ring when membership changes.
 */
export class HashRing {
  private readonly list: Member[];
  /** Sorted vnode positions. */
  private readonly points: Float64Array;
  /** owner[i] = index into `list` of the member owning points[i]. */
  private readonly owner: Uint32Array;
  private readonly counts: Map<string, number>;
  /** Scratch for owners(): stamp[m] === epoch marks member m as already picked. */
  private readonly stamp: Uint32Array;
  private epoch = 0;

  constructor(members: readonly Member[], opts: HashRingOptions = {}) {
    // Sorting by id makes the ring independent of the order the list arrived in.
    this.list = [...members].map((m) => ({ ...m })).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    for (let i = 1; i < this.list.length; i++) {
      if (this.list[i]!.id === this.list[i - 1]!.id) {
        throw new FanoutError('INVALID_ARGUMENT', `duplicate member id "${this.list[i]!.id}" in ring`);
      }
    }
    this.counts = vnodeCounts(this.list, opts);
    this.stamp = new Uint32Array(this.list.length);

    // A lone member owns every key: owners() answers without a walk, so its vnodes are not
    // placed. A one-worker cluster is what `fanout cat` meets most, and placing 1,024 vnodes
    // (about 100 SHA-512 digests, OpenSSL's first use) was ~3 ms of its ~40 ms CPU.
    let total = 0;
    if (this.list.length > 1) for (const m of this.list) total += this.counts.get(m.id)!;
    const positions = new Float64Array(total);
    const owners = new Uint32Array(total);
    let at = 0;
    if (total > 0) this.list.forEach((m, index) => {
      const count = this.counts.get(m.id)!;
      for (let block = 0; block * POSITIONS_PER_DIGEST < count; block++) {
        // Vnode k of a member is always at the same place, whatever its count: raising or
        // lowering a member's weight adds or removes its last vnodes and moves nothing else.
        const digest = sha512(`${m.id}#${block}`);
        for (let j = 0; j < POSITIONS_PER_DIGEST && block * POSITIONS_PER_DIGEST + j < count; j++) {
          positions[at] = Math.floor(digest.readUIntBE(j * 6, 6) / 2 ** POSITION_SHIFT);
          owners[at] = index;
          at++;
        }
      }
    });

    // Sort by (position, owner) so even a collision orders the same everywhere. Packing both
    // into one exact double (37-bit position, 16-bit owner) lets Float64Array sort natively,
    // with no comparator calls or BigInts over 10^5 points.
    if (this.list.length > OWNER_SPACE) throw new FanoutError('INVALID_ARGUMENT', `a ring holds at most ${OWNER_SPACE} members`);
    const packed = new Float64Array(total);
    for (let i = 0; i < total; i++) packed[i] = positions[i]! * OWNER_SPACE + owners[i]!;
    packed.sort();
    this.points = new Float64Array(total);
    this.owner = new Uint32Array(total);
    for (let i = 0; i < total; i++) {
      const v = packed[i]!;
      const owner = v % OWNER_SPACE;
      this.owner[i] = owner;
      this.points[i] = (v - owner) / OWNER_SPACE;
    }
  }

  /**
   * The members responsible for `key`, in preference order: walking clockwise from the key's
   * position, each member the first time one of its vnodes is met. The first is the primary;
   * asking for more than the replication factor yields the fallbacks to try next. `n` is
   * capped at the member count; an empty ring yields [].
   */
  owners(key: string, n: number): Member[] {
    const want = Math.min(Math.max(0, Math.floor(n)), this.list.length);
    if (want === 0) return [];
    if (this.list.length === 1) return [this.list[0]!];
    const points = this.points;
    const size = points.length;
    const start = lowerBound(points, ringPosition(key));

    const result: Member[] = [];
    if (want === 1) {
      result.push(this.list[this.owner[start === size ? 0 : start]!]!);
      return result;
    }
    // A fresh epoch instead of clearing the stamp array keeps owners() allocation-free apart
    // from the result.
    this.epoch = (this.epoch + 1) >>> 0;
    if (this.epoch === 0) {
      this.stamp.fill(0);
      this.epoch = 1;
    }
    for (let step = 0; step < size && result.length < want; step++) {
      let i = start + step;
      if (i >= size) i -= size;
      const m = this.owner[i]!;
      if (this.stamp[m] !== this.epoch) {
        this.stamp[m] = this.epoch;
        result.push(this.list[m]!);
      }
    }
    return result;
  }

  /** Members sorted by id (copies: the ring's own list cannot be changed through them). */
  members(): Member[] {
    return this.list.map((m) => ({ ...m }));
  }

  /** Number of virtual nodes a member holds (0 if absent): for diagnostics and tests. */
  vnodes(memberId: string): number {
    return this.counts.get(memberId) ?? 0;
  }

  get size(): number {
    return this.list.length;
  }
}

/** First index whose position is >= target (size if none: the walk wraps to 0). */
function lowerBound(points: Float64Array, target: number): number {
  let lo = 0;
  let hi = points.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (points[mid]! < target) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function vnodeCounts(members: readonly Member[], opts: HashRingOptions): Map<string, number> {
  const min = opts.minVnodes ?? DEFAULT_MIN_VNODES;
  const max = opts.maxVnodes ?? DEFAULT_MAX_VNODES;
  const perMember = opts.vnodesPerMember ?? DEFAULT_VNODES_PER_MEMBER;
  if (!(min >= 1 && max >= min && perMember >= 1)) {
    throw new FanoutError('INVALID_ARGUMENT', `invalid vnode bounds min=${min} max=${max} perMember=${perMember}`);
  }
  if (opts.vnodesPerGiB !== undefined && !(opts.vnodesPerGiB > 0)) {
    throw new FanoutError('INVALID_ARGUMENT', `vnodesPerGiB must be positive, got ${opts.vnodesPerGiB}`);
  }
  // A capacity that is missing, zero or nonsense counts as average: an unconfigured worker
  // should take a normal share, not vanish from the ring or swamp it.
  const known = members.map((m) => m.capacity).filter((c) => Number.isFinite(c) && c > 0);
  const mean = known.length > 0 ? known.reduce((a, b) => a + b, 0) / known.length : 1;
  const counts = new Map<string, number>();
  for (const m of members) {
    const capacity = Number.isFinite(m.capacity) && m.capacity > 0 ? m.capacity : mean;
    const raw = opts.vnodesPerGiB !== undefined ? (capacity / GiB) * opts.vnodesPerGiB : (perMember * capacity) / mean;
    counts.set(m.id, Math.min(max, Math.max(min, Math.round(raw))));
  }
  return counts;
}
