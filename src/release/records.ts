import { z } from 'zod';
import { FanoutError } from '../core/errors.js';
import type { AgentState, ChannelRecord, VersionRecord } from './registry.js';

/**
 * The release index's records as read back from etcd, checked before use: etcd holds whatever
 * anyone put there (`etcdctl put`, a restore, a bug), and a record of another shape made
 * `release status`, `rollback` and `list` fail for the whole release with a bare TypeError
 * (found by a fault hunt). Fields added by later versions pass through.
 */
const count = z.number().int().nonnegative();

const versionSchema = z
  .object({
    name: z.string(),
    version: z.string(),
    mount: z.string(),
    prefix: z.string(),
    manifest: z.string(),
    manifestSha256: z.string(),
    pageSize: count,
    files: count,
    bytes: count,
    pages: count,
    uniquePages: count,
    createdAt: z.string(),
  })
  .passthrough();

const channelSchema = z.object({ version: z.string(), history: z.array(z.string()), updatedAt: z.string() }).passthrough();

const agentSchema = z
  .object({
    host: z.string(),
    channel: z.string(),
    dir: z.string(),
    current: z.string().nullable(),
    target: z.string().nullable(),
    phase: z.enum(['idle', 'staging', 'switching', 'error']),
    bytesDone: z.number(),
    bytesTotal: z.number(),
    bytesLocal: z.number(),
    bytesFetched: z.number(),
    error: z.string().nullable(),
    updatedAt: z.string(),
  })
  .passthrough();

const schemas = { version: versionSchema, channel: channelSchema, agent: agentSchema };
type Kind = keyof typeof schemas;
type RecordOf<K extends Kind> = K extends 'version' ? VersionRecord : K extends 'channel' ? ChannelRecord : AgentState;

/** The record stored at `key`, or RECORD_INVALID naming the key and what is wrong (and how to mend it). */
export function readRecord<K extends Kind>(kind: K, key: string, value: string): RecordOf<K> {
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch {
    throw invalid(kind, key, 'not JSON');
  }
  const parsed = schemas[kind].safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw invalid(kind, key, `${issue.path.join('.') || 'the record'}: ${issue.message}`);
  }
  return parsed.data as unknown as RecordOf<K>;
}

/** The record, or undefined if it is not one (for summaries that go on without it). */
export function recordOrUndefined<K extends Kind>(kind: K, key: string, value: string): RecordOf<K> | undefined {
  try {
    return readRecord(kind, key, value);
  } catch {
    return undefined;
  }
}

function invalid(kind: Kind, key: string, why: string): FanoutError {
  return new FanoutError('RECORD_INVALID', `the ${kind} record at ${key} in etcd is not one fanout wrote (${why}); put a valid one back or delete it (etcdctl del ${key})`);
}
