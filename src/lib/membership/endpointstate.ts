import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { removeAbandonedTemps, writeNewTemp } from '../statefile/tempfiles.cjs';
import { debugEtcd, MOST_COOL_DOWN_MS, type SavedPreference } from './endpoints.js';

/**
 * What the etcd clients of a process learned about their endpoints, kept for the next process:
 * each `fanout release …` is a process of its own, and one whose first endpoint hung paid that
 * endpoint's whole deadline (3 s) every time. Per set of endpoints: the one that answered last,
 * and those cooling down (wall-clock end, silences in a row): never more. It is a hint: a missing,
 * corrupt, foreign (another user's, another format) or unwritable file is ignored, which
 * `NODE_DEBUG=fanout` reports.
 *
 * Where: `$FANOUT_ETCD_STATE` (a file), else `$XDG_CACHE_HOME/fanout/etcd-endpoints.json`, else
 * `~/.cache/fanout/etcd-endpoints.json`; `FANOUT_ETCD_STATE=off` turns it off (as the code cache,
 * src/cli/codecache.cts).
 */
export function endpointStatePath(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const configured = env.FANOUT_ETCD_STATE;
  if (configured === 'off') return undefined;
  if (configured) return configured;
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, 'fanout', FILE_NAME);
  try {
    return join(homedir(), '.cache', 'fanout', FILE_NAME);
  } catch {
    return undefined; // no home directory: nothing kept
  }
}

const FILE_NAME = 'etcd-endpoints.json';
/** The file's format; a file of another is ignored (and replaced at the next write). */
const FORMAT = 1;
/** Endpoint sets kept, the most recently saved: a user rarely talks to more etcd clusters than this. */
export const MAX_SETS = 16;
/** How long a set's preferred endpoint is kept after it was saved (its cool-downs end long before). */
export const KEEP_PREFERRED_MS = 24 * 60 * 60 * 1000;
/** Larger is not a file this module wrote (16 sets of a few endpoints are ≈ 4 KB). */
const MAX_FILE_BYTES = 256 * 1024;
/**
 * How long an ended cool-down's silences are kept: a command that finds the member silent again
 * within this time cools it down for longer (60 s, 120, 240), as one long-running process does;
 * later, a silence counts as the first again.
 */
export const SILENCES_KEPT_MS = 10 * 60 * 1000;
/** Beyond 3 the cool-down is at its most already; a larger count is as good as this. */
const MAX_SILENCES = 16;

interface SavedSet {
  /** The endpoint asked first (normalized). */
  preferred?: string;
  /** Wall-clock time of the save: the oldest sets go first. */
  savedAt: number;
  /**
   * Endpoints cooling down, or whose cool-down ended less than SILENCES_KEPT_MS ago (normalized):
   * until when (wall clock), and after how many silences in a row.
   */
  cooling: Record<string, { until: number; silences: number }>;
}

/** An endpoint as written in the file: the URL's origin (`http://127.0.0.1:2379`), else the text trimmed. */
export function normalizeEndpoint(endpoint: string): string {
  try {
    const { origin } = new URL(endpoint);
    if (origin !== 'null') return origin;
  } catch {
    // not a URL (etcd3 also takes host:port)
  }
  return endpoint.trim().toLowerCase();
}

/** A set's key: its endpoints normalized and sorted, so `--etcd c,b,a` finds what `a,b,c` learned. */
function setKey(endpoints: readonly string[]): string {
  return endpoints.map(normalizeEndpoint).sort().join(',');
}

/**
 * The state file of one process. Read at the first load() (a command that never talks to etcd never
 * reads it); written by save(), which the preference calls only when a cool-down starts or ends or
 * another endpoint answered. Written synchronously, to a temp file renamed over the old one: a
 * reader sees a whole file, two processes saving at once leave one of theirs (last writer wins),
 * and a command that exits right after its last request (the CLI ends with process.exit) does not
 * cut a write in flight. No fsync: a file torn by a crash is ignored like any corrupt one.
 */
export class EndpointStateFile {
  private sets: Map<string, SavedSet> | undefined;

  constructor(
    readonly path: string | undefined,
    private readonly now: () => number = Date.now,
  ) {}

  /** What earlier processes saved for `endpoints` (by their index here): cool-downs clamped to MOST_COOL_DOWN_MS from now. */
  load(endpoints: readonly string[]): SavedPreference | undefined {
    this.sets ??= this.read();
    const set = this.sets.get(setKey(endpoints));
    if (!set) return undefined;
    const names = endpoints.map(normalizeEndpoint);
    const now = this.now();
    const preferred = set.preferred === undefined ? -1 : names.indexOf(set.preferred);
    const saved: SavedPreference = {
      ...(preferred >= 0 ? { preferred } : {}),
      coolUntil: names.map((name) => set.cooling[name]?.until ?? 0),
      silences: names.map((name) => set.cooling[name]?.silences ?? 0),
    };
    saved.coolUntil.forEach((until, i) => {
      if (until > now) debugEtcd('etcd %s gave no answer to an earlier command: asked last for %d s more', endpoints[i], Math.ceil((until - now) / 1000));
    });
    return saved;
  }

  /** Records `preference` as the state of `endpoints`, beside the other sets in the file now. */
  save(endpoints: readonly string[], preference: SavedPreference): void {
    if (this.path === undefined) return;
    const now = this.now();
    const names = endpoints.map(normalizeEndpoint);
    const cooling: SavedSet['cooling'] = {};
    preference.coolUntil.forEach((until, i) => {
      const silences = preference.silences[i] ?? 0;
      if (until > now) cooling[names[i]!] = { until, silences: Math.max(silences, 1) };
      else if (silences > 0 && until > now - SILENCES_KEPT_MS) cooling[names[i]!] = { until, silences };
    });
    // Read again: other processes may have saved other sets since this one started.
    const sets = this.read();
    const key = setKey(endpoints);
    sets.delete(key);
    sets.set(key, { ...(preference.preferred !== undefined ? { preferred: names[preference.preferred] } : {}), savedAt: now, cooling });
    const kept = [...sets].sort(([, a], [, b]) => b.savedAt - a.savedAt).slice(0, MAX_SETS);
    try {
      writeReplacing(this.path, JSON.stringify({ format: FORMAT, sets: Object.fromEntries(kept) }));
    } catch (err) {
      debugEtcd('etcd endpoint state %s not written: %s', this.path, (err as Error).message);
    }
  }

  /** The sets in the file, expired entries dropped and times clamped; empty when there is no usable file. */
  private read(): Map<string, SavedSet> {
    const sets = new Map<string, SavedSet>();
    if (this.path === undefined) return sets;
    let value: unknown;
    try {
      const text = readOwnFile(this.path);
      if (text === undefined) return sets;
      value = JSON.parse(text);
    } catch (err) {
      debugEtcd('etcd endpoint state %s ignored: %s', this.path, (err as Error).message);
      return sets;
    }
    const file = value as { format?: unknown; sets?: unknown } | null;
    if (file?.format !== FORMAT || !isObject(file.sets)) {
      debugEtcd('etcd endpoint state %s ignored: not a format %d file', this.path, FORMAT);
      return sets;
    }
    const now = this.now();
    for (const [key, raw] of Object.entries(file.sets)) {
      const set = validSet(raw, now);
      if (set) sets.set(key, set);
    }
    return sets;
  }
}

/**
 * `raw` as a set if it is one and not expired; a cool-down ending more than MOST_COOL_DOWN_MS from
 * now (a clock moved, a hand edit) ends then, and one that ended SILENCES_KEPT_MS ago is dropped.
 */
function validSet(raw: unknown, now: number): SavedSet | undefined {
  if (!isObject(raw) || !isTime(raw.savedAt) || !isObject(raw.cooling)) return undefined;
  const savedAt = Math.min(raw.savedAt, now);
  if (savedAt <= now - KEEP_PREFERRED_MS) return undefined;
  const cooling: SavedSet['cooling'] = {};
  for (const [endpoint, entry] of Object.entries(raw.cooling)) {
    if (!isObject(entry) || !isTime(entry.until) || entry.until <= now - SILENCES_KEPT_MS) continue;
    const silences = Number.isInteger(entry.silences) && (entry.silences as number) > 0 ? Math.min(entry.silences as number, MAX_SILENCES) : 1;
    cooling[endpoint] = { until: Math.min(entry.until, now + MOST_COOL_DOWN_MS), silences };
  }
  return { ...(typeof raw.preferred === 'string' ? { preferred: raw.preferred } : {}), savedAt, cooling };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isTime(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0;
}

/** The file's text if it exists and belongs to this user (another's could steer our requests); undefined if missing. */
function readOwnFile(path: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const info = fstatSync(fd);
    if (process.getuid !== undefined && info.uid !== process.getuid()) throw new Error('owned by another user');
    if (!info.isFile() || info.size > MAX_FILE_BYTES) throw new Error(`not a file of at most ${MAX_FILE_BYTES} bytes`);
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/**
 * A temp file beside `path`, renamed over it (directory 0700 and file 0600, as the user's other
 * caches). Temp files an earlier process left behind (killed between its write and its rename)
 * are removed first.
 */
function writeReplacing(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tempPrefix = `${basename(path)}.`;
  removeAbandonedTemps(dirname(path), (name) => name.startsWith(tempPrefix) && /^\d+\.tmp$/.test(name.slice(tempPrefix.length)));
  const temp = `${path}.${process.pid}.tmp`;
  try {
    writeNewTemp(temp, text, 0o600);
    renameSync(temp, path);
  } catch (err) {
    try {
      unlinkSync(temp);
    } catch {
      // never made
    }
    throw err;
  }
}
