import { closeSync, openSync, readFileSync, readSync } from 'node:fs';

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
  return softLimitIn(text);
}

/** The soft open-file limit a limits file's text gives; undefined when unlimited or absent. */
function softLimitIn(text: string): number | undefined {
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

/**
 * What a `fanout mount` process's fds should allow: Node's own (≈25 at start, measured), one
 * /dev/fuse clone per FUSE thread, and per member the page connections (8), the stat/list ones
 * (16) and the health probes (2) it may open at once. Below it, a read that needs a new
 * connection fails with EMFILE ("Too many open files").
 */
export function mountFdLimitShortfall(limit: number | undefined, threads: number, members: number): { limit: number; wanted: number } | undefined {
  if (limit === undefined) return undefined;
  const wanted = 64 + threads + Math.max(1, members) * 26;
  return limit < wanted ? { limit, wanted } : undefined;
}

/**
 * The process's open-file limit as it is now (prlimit may change it while the process runs),
 * read from a descriptor of /proc/self/limits opened beforehand: when the limit is reached, a
 * fresh open of that file fails with EMFILE too. Costs one fd; read on error paths only.
 */
export class OpenFileLimitProbe {
  private fd: number | undefined;
  private readonly buffer = Buffer.alloc(4096);

  constructor(private readonly limitsFile = '/proc/self/limits') {
    try {
      this.fd = openSync(limitsFile, 'r');
    } catch {
      this.fd = undefined;
    }
  }

  read(): number | undefined {
    if (this.fd === undefined) return openFileLimit(this.limitsFile);
    try {
      const n = readSync(this.fd, this.buffer, 0, this.buffer.length, 0);
      return softLimitIn(this.buffer.toString('utf8', 0, n));
    } catch {
      return undefined;
    }
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

let processProbe: OpenFileLimitProbe | undefined;

/**
 * The open-file limit of this process as it is now, through one descriptor of /proc/self/limits
 * kept open for the process's life (opened at the first call: make it before fds can run out, at
 * start). For error messages: a process out of fds can still name its limit.
 */
export function currentOpenFileLimit(): number | undefined {
  processProbe ??= new OpenFileLimitProbe();
  return processProbe.read();
}
