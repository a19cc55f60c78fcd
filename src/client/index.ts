/**
 * fanout SDK: read files through a fanout cluster.
 *
 * ```ts
 * import { FanoutClient } from 'fanout/client';
 * const client = new FanoutClient({ endpoint: 'http://10.0.0.5:7450' });
 * const stream = await client.createReadStream('/models/llama.gguf');
 * ```
 */
export { FanoutClient, DEFAULT_ENDPOINT } from './client.js';
export type { FanoutClientOptions, ClusterInfo, StatResult, ReadOptions, ClusterStatus, SizedPageReader } from './client.js';
export { FanoutError, isFanoutError, type ErrorCode } from '../core/errors.js';
export type { FileInfo, DirEntry, Member, WorkerStatus } from '../core/types.js';
export { AdminClient, LOAD_DEADLINE_MS } from './admin.js';
export { ClusterSession, type ClusterSessionOptions, type SessionStats, type SessionReaderOptions } from './session.js';
export { sharedSession, openSessionCount } from './sessions.js';
export { BatchPageReader, type BatchPageReaderOptions } from './batchreader.js';
