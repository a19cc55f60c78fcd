import { FanoutError } from '../core/errors.js';
import type { ChannelRecord, ChannelWatch, ReleaseRegistry } from './registry.js';

/**
 * Channels scoped to a datacenter. `prod` is for every host; `prod@dc-b` is for the hosts of
 * dc-b only. A host of dc-b that follows `prod` reads both and takes the one moved last (the
 * higher etcd mod revision), so:
 *   - promoting or rolling back `prod` reaches every datacenter (it becomes the newest move);
 *   - promoting or rolling back `prod@dc-b` reaches dc-b only, until `prod` moves again.
 * The order comes from etcd's revisions, not from clocks: promoters on different machines can
 * disagree about the time, never about the revision order.
 */

/** "prod@dc-b" → { base: "prod", datacenter: "dc-b" }; "prod" → { base: "prod" }. */
export function parseChannel(channel: string): { base: string; datacenter?: string } {
  const at = channel.indexOf('@');
  if (at < 0) return { base: channel };
  return { base: channel.slice(0, at), datacenter: channel.slice(at + 1) };
}

export function scopedChannel(base: string, datacenter?: string): string {
  return datacenter ? `${base}@${datacenter}` : base;
}

/** The channel named by `--channel C[@DC]` and `--datacenter DC` together (they must agree). */
export function channelOf(channel: string, datacenter?: string): string {
  const parsed = parseChannel(channel);
  if (datacenter === undefined || datacenter === '') return channel;
  if (parsed.datacenter !== undefined && parsed.datacenter !== datacenter) {
    throw new FanoutError('INVALID_ARGUMENT', `--channel ${channel} names datacenter ${parsed.datacenter}, --datacenter says ${datacenter}`);
  }
  return scopedChannel(parsed.base, datacenter);
}

/** A channel as read from etcd, with the revision that orders moves. */
export interface ChannelState {
  record: ChannelRecord;
  modRevision: string;
}

/** The channel a host follows and the record it points to; null when neither exists. */
export interface FollowedChannel {
  /** The key actually followed: `prod` or `prod@dc-b`. */
  channel: string;
  record: ChannelRecord;
}

/** Of C and C@DC (either may be missing), the one moved last. */
export function pickFollowed(base: string, datacenter: string | undefined, plain: ChannelState | null | undefined, scoped: ChannelState | null | undefined): FollowedChannel | null {
  if (scoped && (!plain || BigInt(scoped.modRevision) > BigInt(plain.modRevision))) return { channel: scopedChannel(base, datacenter), record: scoped.record };
  return plain ? { channel: base, record: plain.record } : null;
}

/** Reads C (and C@DC when the host has a datacenter) and says which one the host follows. */
export async function resolveChannel(registry: Pick<ReleaseRegistry, 'getChannel'>, name: string, channel: string, datacenter?: string): Promise<FollowedChannel | null> {
  const { base, datacenter: named } = parseChannel(channel);
  // An agent told to follow prod@dc-b explicitly follows exactly that channel.
  if (named !== undefined) {
    const only = await registry.getChannel(name, channel);
    return only ? { channel, record: only.record } : null;
  }
  const [plain, scoped] = await Promise.all([registry.getChannel(name, base), datacenter ? registry.getChannel(name, scopedChannel(base, datacenter)) : null]);
  return pickFollowed(base, datacenter, plain, scoped);
}

/** The version each datacenter's hosts of `base` follow, from every channel of a release with its revision. */
export function followedVersion(channels: Record<string, ChannelState>, base: string, datacenter: string | undefined): FollowedChannel | null {
  return pickFollowed(base, datacenter, channels[base], datacenter ? channels[scopedChannel(base, datacenter)] : undefined);
}

/** The keys an agent watches: C, and C@DC when it has a datacenter (and follows a plain channel). */
export function watchedChannels(channel: string, datacenter?: string): string[] {
  const { datacenter: named } = parseChannel(channel);
  return named === undefined && datacenter ? [channel, scopedChannel(channel, datacenter)] : [channel];
}

/** One watch over several channel keys: any change fires, and it is broken as soon as one is. */
export async function watchChannels(
  registry: Pick<ReleaseRegistry, 'watchChannel'>,
  name: string,
  channels: string[],
  onEvent: (event: 'change' | 'broken', err?: Error) => void,
): Promise<ChannelWatch> {
  const watches: ChannelWatch[] = [];
  try {
    for (const channel of channels) watches.push(await registry.watchChannel(name, channel, onEvent));
  } catch (err) {
    for (const w of watches) w.close();
    throw err;
  }
  return {
    get broken() {
      return watches.some((w) => w.broken);
    },
    close: () => watches.forEach((w) => w.close()),
  };
}

/**
 * Promotes a channel; a scoped channel created by this promotion inherits the history of the
 * plain one (what its hosts followed until now), so that rolling the datacenter back returns it
 * to where it was.
 */
export async function promoteChannel(
  registry: Pick<ReleaseRegistry, 'promote' | 'getChannel'>,
  name: string,
  channel: string,
  version: string,
  expect?: string,
): Promise<{ previous: string | null; record: ChannelRecord }> {
  const { base, datacenter } = parseChannel(channel);
  let seed: string[] = [];
  if (datacenter !== undefined && !(await registry.getChannel(name, channel))) {
    const plain = await registry.getChannel(name, base);
    if (plain) seed = [plain.record.version, ...plain.record.history];
  }
  return registry.promote(name, channel, version, expect, seed);
}

/** The same names as the worker's `datacenter` config key. */
export function checkDatacenter(datacenter: string): void {
  if (!/^[a-z0-9][a-z0-9._-]{0,62}$/.test(datacenter)) throw new FanoutError('INVALID_ARGUMENT', `invalid datacenter "${datacenter}" (1–63 of a-z 0-9 . _ -, e.g. dc-a)`);
}
