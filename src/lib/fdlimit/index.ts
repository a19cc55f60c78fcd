import { readFileSync } from 'node:fs';

/**
 * The process's open-file limit (the soft RLIMIT_NOFILE: `ulimit -n`, systemd's LimitNOFILE), read
 * from /proc/self/limits; undefined where that cannot be read (another OS) or it is unlimited.
 * Node has no getrlimit. Read when asked: once at a worker's start, not on any request's path.
 */
export function openFileLimit(limitsFile = '/proc/self/limits'): number | undefined {
  let text: string;
  try {
    text = readFileSync(limitsFile, 'utf8');
  } catch {
    return undefined;
  }
  const soft = /^Max open files\s+(\d+)/m.exec(text)?.[1];
  return soft === undefined ? undefined : Number(soft);
}

/** Page files a store keeps open for sends by default, where the fd limit leaves room for them. */
export const KEPT_SEND_FILES = 256;

/**
 * Idle page files a store may keep open for sends under an fd limit of `limit`: at most a quarter
 * of it, so that connections, source reads and page writes keep the rest. Before, 256 were kept
 * whatever the limit: under `ulimit -n 256` (or 64, 128) warm reads filled the fd table with kept
 * page files, and the worker closed every new connection unanswered (libuv's accept on EMFILE)
 * until a restart.
 */
export function keptSendFilesFor(limit: number | undefined): number {
  if (limit === undefined) return KEPT_SEND_FILES;
  return Math.max(1, Math.min(KEPT_SEND_FILES, Math.floor(limit / 4)));
}

/**
 * What a worker's fds should allow: every connection its ports may hold at once
 * (limits.maxConnections each), the page files kept for sends, and some for source reads, page
 * writes and its own files. Below it, connections past the free fds are accepted and closed
 * unanswered by libuv (nothing else can be done without a descriptor), silently: hence a warning
 * at start that names the limit.
 */
export function fdLimitShortfall(limit: number | undefined, ports: number, maxConnections: number): { limit: number; wanted: number } | undefined {
  if (limit === undefined) return undefined;
  const wanted = ports * maxConnections + keptSendFilesFor(limit) + 128;
  return limit < wanted ? { limit, wanted } : undefined;
}
