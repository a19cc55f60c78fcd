import type { Etcd3, IWatchResponse } from 'etcd3';
import type { Member } from '../../core/types.js';
import { endpointAnswered, endpointUnanswered, preferredEndpoint } from './client.js';

/**
 * etcd gave no answer in time to a stream (a watch's confirmation, a keepalive): nothing failed
 * locally, the connection just went silent (a hung etcd, or packets lost on the way).
 */
export class EtcdNoAnswerError extends Error {}

export interface PrefixWatchOptions {
  key: Buffer;
  range_end: Buffer;
  /** First revision to report: the listing's revision + 1, so nothing falls between the two. */
  startRevision: bigint;
  /** How long etcd may take to confirm the watch. */
  timeoutMs: number;
  /** `lease`: the record's lease id as etcd sends it ('0': none). */
  onPut(key: Buffer, value: Buffer, lease: string): void;
  onDelete(key: Buffer): void;
  /** The watch stopped delivering (stream error, end, compaction): re-list and watch again. */
  onBroken(err: Error): void;
}

export interface PrefixWatch {
  close(): void;
}

/**
 * A single watch on one raw etcd3 watch stream. etcd3's own Watcher reconnects by itself with
 * its own timers, which would race with our re-listing after an outage and can keep timers
 * alive after close; here a broken watch is simply reported once, and the membership loop
 * decides when to list and watch again.
 *
 * Resolves when etcd confirms the watch; rejects if it does not within `timeoutMs`.
 */
export async function openWatch(client: Etcd3, opts: PrefixWatchOptions): Promise<PrefixWatch> {
  const endpoint = preferredEndpoint(client);
  const stream = await client.watchClient.watch();
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    // end() before cancel(): etcd3 treats an error on a still-writable stream as a host
    // failure and resets every connection to that host, including calls in flight.
    stream.end();
    stream.cancel();
  };

  return new Promise<PrefixWatch>((resolve, reject) => {
    let created = false;
    const fail = (err: Error) => {
      if (closed) return;
      close();
      clearTimeout(timer);
      if (created) opts.onBroken(err);
      else reject(err);
    };
    const timer = setTimeout(() => {
      endpointUnanswered(client, endpoint);
      fail(new EtcdNoAnswerError(`etcd did not confirm the watch within ${opts.timeoutMs} ms`));
    }, opts.timeoutMs);

    stream.on('data', (res: IWatchResponse) => {
      if (closed) return;
      if (res.canceled || (res.compact_revision && res.compact_revision !== '0')) {
        return fail(new Error(`etcd canceled the watch: ${res.cancel_reason || `compacted at ${res.compact_revision}`}`));
      }
      if (res.created && !created) {
        created = true;
        clearTimeout(timer);
        endpointAnswered(client, endpoint);
        resolve({ close });
      }
      for (const event of res.events ?? []) {
        if (event.type === 'Put') opts.onPut(event.kv.key, event.kv.value, String(event.kv.lease));
        else if (event.type === 'Delete') opts.onDelete(event.kv.key);
      }
    });
    stream.on('error', (err: Error) => fail(err));
    stream.on('end', () => fail(new Error('etcd watch stream ended')));
    stream.write({
      create_request: {
        key: opts.key,
        range_end: opts.range_end,
        start_revision: opts.startRevision.toString(),
      },
    });
  });
}

/**
 * One keepalive on a short-lived stream, returning the TTL etcd restarted (0: the lease is
 * gone). etcd3's Lease class runs its own keepalive timers; doing single renewals here keeps
 * the timing decisions in LeaseSchedule, where they are tested.
 */
export async function keepaliveOnce(client: Etcd3, leaseId: string, timeoutMs: number): Promise<number> {
  const endpoint = preferredEndpoint(client);
  const stream = await client.leaseClient.leaseKeepAlive();
  let timer: NodeJS.Timeout | undefined;
  try {
    return await new Promise<number>((resolve, reject) => {
      stream.on('data', (res) => {
        endpointAnswered(client, endpoint);
        resolve(Number(res.TTL));
      });
      stream.on('error', (err) => reject(err));
      stream.on('end', () => reject(new Error('lease keepalive stream ended')));
      timer = setTimeout(() => {
        endpointUnanswered(client, endpoint);
        reject(new EtcdNoAnswerError(`lease keepalive got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      stream.write({ ID: leaseId });
    });
  } finally {
    clearTimeout(timer);
    // A half-close lets etcd end the call cleanly (no cancel error, no connection reset).
    stream.end();
  }
}

/** A member record as written by EtcdMembership (JSON of Member under prefix + id); undefined if malformed. */
export function decodeMember(prefix: string, key: Buffer, value: Buffer): Member | undefined {
  const id = key.toString().slice(prefix.length);
  try {
    const m = JSON.parse(value.toString()) as Partial<Member>;
    if (m.id !== id || typeof m.url !== 'string') return undefined;
    // Unknown capacity stays 0; the ring counts that as average.
    const member: Member = { id, url: m.url, capacity: typeof m.capacity === 'number' && Number.isFinite(m.capacity) ? m.capacity : 0 };
    if (typeof m.datacenter === 'string' && m.datacenter) member.datacenter = m.datacenter;
    return member;
  } catch {
    return undefined;
  }
}
