/** Types shared by every role. No I/O here. */

/** What a source (UFS) knows about one file: enough to name a version of its bytes. */
export interface FileInfo {
  /** Path inside the mount, without a leading slash ("models/a.bin"). */
  path: string;
  size: number;
  /** Milliseconds since the epoch. */
  mtimeMs: number;
  /** Opaque version: the ETag where the source has one, else "size-mtime". Pages belong to one version. */
  version: string;
}

export interface DirEntry {
  name: string;
  type: 'file' | 'dir';
  size?: number;
  mtimeMs?: number;
  version?: string;
}

export interface Member {
  id: string;
  /** Base URL of the worker's HTTP API, e.g. http://10.0.0.5:7450 */
  url: string;
  /** Cache capacity in bytes; weights the member's share of the ring. */
  capacity: number;
  /** The datacenter the worker runs in (config `datacenter`), when labelled. */
  datacenter?: string;
}

export interface PageRef {
  mount: string;
  path: string;
  version: string;
  /** Size of the whole file at that version: bounds the last page. */
  size: number;
  index: number;
  /**
   * SHA-256 of the page's content, when known (release manifests). The page is then keyed and
   * placed by content, so identical pages of different files or versions are stored once.
   */
  hash?: string;
}

/** One line as a worker sees it (bytes/s for rates, bytes for use and queues). */
export interface LineStatus {
  line: string;
  rate: number;
  preloadFloor: number;
  /** What this worker may read across the line now, and the part of it kept for preloads. */
  share: number;
  preloadMin: number;
  /**
   * lease: granted by the coordinator; fallback: no grant, rate ÷ members; starting: none yet;
   * out-of-ring: this worker is in no ring (its id held by another running worker), so no
   * coordinator counts it: it reads nothing across the line (share 0) until it is back.
   */
  mode: 'lease' | 'fallback' | 'starting' | 'out-of-ring';
  /** The member that leases the line's shares. */
  coordinator?: string;
  mounts: string[];
  used: { read: number; preload: number };
  queue: { read: { requests: number; bytes: number }; preload: { requests: number; bytes: number } };
}

/**
 * How a worker stands in its cluster's membership (lib/membership), part of its WorkerStatus.
 * - `static`: a fixed member list from configuration.
 * - `starting`: the first registration and listing are not done yet.
 * - `registered`: self's record is in etcd under its lease (an observer without self: listing).
 * - `registering`: the lease was lost (an outage, a revoke) and self is being registered again;
 *   the worker keeps counting itself meanwhile.
 * - `id-taken`: another running worker's record holds self's id (two workers given one id): this
 *   worker is in no ring, its own included, until that record goes (then it registers by itself).
 */
export type MembershipState = 'static' | 'starting' | 'registered' | 'registering' | 'id-taken';

/** A record under the member prefix that is not taken as a member. */
export interface IgnoredRecord {
  key: string;
  id: string;
  url: string;
  /** `no-lease`: no running worker keeps it alive (workers always register under a lease). */
  reason: 'no-lease';
}

export interface MembershipStatus {
  state: MembershipState;
  /** The backing store (etcd) is unreachable: the last known list serves. */
  stale: boolean;
  /** With `id-taken`: the URL of the worker whose record holds the id, and since when (ISO 8601). */
  heldBy?: { url: string; since: string };
  /** Records the member list leaves out, and why. */
  ignored: IgnoredRecord[];
}

export interface WorkerStatus {
  id: string;
  url: string;
  /** Effective capacity: the configured one, lowered to what the page store's disk can hold. */
  capacity: number;
  configuredCapacity?: number;
  /** What the page store's pages take on disk (their sizes in whole file-system blocks): what capacity counts. */
  used: number;
  /** Bytes of the pages themselves. */
  pageBytes?: number;
  pages: number;
  hits: number;
  misses: number;
  bytesServed: number;
  bytesFromSource: number;
  evictions: number;
  inflightSourceReads: number;
  /** This worker's share of each mount's cluster-wide source budget, bytes/s (0 = unlimited). */
  sourceRates: Record<string, number>;
  /** Each line this worker crosses: its cluster-wide rate, this worker's share, use and queue per class. */
  lines?: LineStatus[];
  /** How page hits leave on plain connections: by the kernel (sendfile) or through JS. */
  sendPath?: 'sendfile' | 'js';
  /** How page CRC32s are computed: native addon (vclmul with AVX-512, clmul, or table without carry-less multiply) or Node's zlib (js). */
  checksumPath?: 'vclmul' | 'clmul' | 'table' | 'js';
  /** How read buffers are allocated: in transparent huge pages by the native addon, or as ordinary Buffers (js). */
  memoryPath?: 'huge' | 'js';
  /** Cached pages the worker sends by the kernel at once, each on a thread of its own (config `threads`). */
  threads?: number;
  /** Config `datacenter`, when set. */
  datacenter?: string;
  /** Where the worker stands in the membership: registered, or out of the ring and why; records left out. */
  membership?: MembershipStatus;
}
