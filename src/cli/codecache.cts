// CommonJS (.cts → .cjs): bin/fanout.js loads it before any command, without Node's ES module loader.
import { closeSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, type Stats } from 'node:fs';
import Module from 'node:module';
import { homedir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { Script } from 'node:vm';

/**
 * Runs a CLI bundle (a CommonJS file) with V8's code cache of an earlier run of it. Node 20
 * compiles a required file from its text every time: for a 1-byte `fanout cat`, parsing the
 * bundle and compiling the functions the command calls was ≈ 7 ms of its ≈ 40 ms beyond Node's
 * own start (docs/benchmarks.md). The cache is written once a command has run (so it holds the
 * functions it compiled, not only the top level) and used by the next: the first command run
 * after a build decides what it holds.
 *
 * Where: `$FANOUT_CODE_CACHE`, else `$XDG_CACHE_HOME/fanout/v8`, else `~/.cache/fanout/v8`
 * (`FANOUT_CODE_CACHE=off` turns it off). A cache file is named after the bundle's path, size and
 * modification time and V8's version, so a rebuilt bundle or another Node never gets an old
 * one; V8 checks it too (its version, flags and the source's length) and rejects a mismatch, which
 * is then rewritten. Only a file owned by the user running the command is read: code compiled
 * from a cache is run as it is. Failing to read or write the cache never fails the command.
 */
export interface CachedBundle {
  exports: unknown;
  /** How the bundle was compiled: from a cache, without one, or with one V8 refused. */
  readonly cache: 'used' | 'none' | 'rejected' | 'off';
  /** Writes the cache if the bundle was compiled without a usable one (call once the command has run). */
  save(): void;
}

export function cacheDirectory(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const configured = env.FANOUT_CODE_CACHE;
  if (configured === 'off') return undefined;
  if (configured) return configured;
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, 'fanout', 'v8');
  try {
    return join(homedir(), '.cache', 'fanout', 'v8');
  } catch {
    return undefined; // no home directory (no HOME, no passwd entry): no cache
  }
}

/** Every bundle loadBundle() ran in this process (bin/fanout.js, and main.cjs for etcd3.cjs). */
const loaded: CachedBundle[] = [];

/** Writes the cache of every bundle this process loaded without a usable one: once a command has succeeded. */
export function saveCodeCaches(): void {
  for (const bundle of loaded) bundle.save();
}

/**
 * Loads `file` with its cache in `directory` (cacheDirectory(); undefined: no cache). `variant`
 * names the V8 flags the process runs under when they are not those of every run of the bundle
 * (`jit`: jit.cts's budget, which `cp` sets and `cat` does not): V8 refuses a cache made under
 * other flags, so runs of both would each rewrite the other's cache; each variant keeps its own.
 */
export function loadBundle(file: string, directory: string | undefined, variant = ''): CachedBundle {
  // Read and described through one descriptor: the cache's name is that of the text compiled,
  // even if the bundle is rebuilt meanwhile (V8 alone would take a cache of another text of the
  // same length).
  const fd = openSync(file, 'r');
  let source: string;
  let info: Stats;
  try {
    info = fstatSync(fd);
    source = readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
  const prefix = cachePrefix(file, variant);
  const cacheFile = directory === undefined ? undefined : join(directory, cacheName(prefix, info));
  const cachedData = cacheFile === undefined ? undefined : readOwnFile(cacheFile);
  const script = new Script(Module.wrap(source), { filename: file, cachedData });
  const cache = cacheFile === undefined ? 'off' : cachedData === undefined ? 'none' : script.cachedDataRejected ? 'rejected' : 'used';
  // As require() would run it: module, exports, a require resolving from the bundle's directory,
  // and an entry in require.cache (a later require() of the file gets this module).
  const module = new Module(file);
  module.filename = file;
  require.cache[file] = module;
  const run = script.runInThisContext() as (exports: unknown, require: NodeJS.Require, module: Module, filename: string, dirname: string) => void;
  try {
    run.call(module.exports, module.exports, Module.createRequire(file), module, file, dirname(file));
  } catch (err) {
    delete require.cache[file]; // as require() does for a module that threw
    throw err;
  }
  module.loaded = true;
  let saved = false;
  const bundle: CachedBundle = {
    exports: module.exports,
    cache,
    save() {
      if (saved || cacheFile === undefined || cache === 'used') return;
      saved = true;
      writeCache(cacheFile, prefix, script.createCachedData());
    },
  };
  loaded.push(bundle);
  return bundle;
}

/** `<prefix><size>-<mtime>-<V8 version>.v8`: one per build of one bundle (and variant). */
function cacheName(prefix: string, info: Stats): string {
  return `${prefix}${info.size}-${Math.round(info.mtimeMs)}-${process.versions.v8}.v8`;
}

/**
 * `<bundle>-<hash of its path>-<variant or "plain">-`: what the caches of one bundle's builds
 * share. The variant is always named, so that no variant's prefix begins another's (writeCache
 * removes what starts with it).
 */
function cachePrefix(file: string, variant: string): string {
  return `${basename(file, '.cjs')}-${fnv1a(file)}-${variant || 'plain'}-`;
}

/** 32-bit FNV-1a of a string's UTF-16 units, in hex: tells apart bundles of two installs. */
function fnv1a(text: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  return (hash >>> 0).toString(16).padStart(8, '0');
}

/** The file's bytes if it exists and belongs to this user (checked on the open file); undefined otherwise. */
function readOwnFile(path: string): Buffer | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    if (process.getuid !== undefined && fstatSync(fd).uid !== process.getuid()) return undefined;
    return readFileSync(fd);
  } catch {
    return undefined; // none yet (ENOENT) or unreadable: compiled from the text
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Caches kept at most in the directory: installs come and go (a checkout per CI run, say) and
 * leave theirs behind; past this many the oldest go. Three bundles per install, ≈ 0.2–0.3 MB each.
 */
export const MAX_CACHE_FILES = 30;

/** A cache's temp file (`<name>.v8.<pid>.tmp`): one left by a command killed mid-write is removed once abandoned. */
const ABANDONED_CACHE_TEMP = /\.v8\.\d+\.tmp$/;

/**
 * Written to a temporary name and renamed (commands run beside each other); then the caches of
 * the bundle's earlier builds (same `prefix`) are removed, and the oldest beyond MAX_CACHE_FILES.
 */
function writeCache(path: string, prefix: string, data: Buffer): void {
  const directory = dirname(path);
  try {
    mkdirSync(directory, { recursive: true, mode: 0o700 });
    // Required here, not at the top: every command loads this module, few write a cache.
    const { removeAbandonedTemps, writeNewTemp } = require('../lib/statefile/tempfiles.cjs') as typeof import('../lib/statefile/tempfiles.cjs');
    const temp = `${path}.${process.pid}.tmp`;
    writeNewTemp(temp, data, 0o600);
    renameSync(temp, path);
    // One listing for both sweeps: temp files left by killed processes, and other builds' caches.
    const names = readdirSync(directory);
    removeAbandonedTemps(directory, (name) => ABANDONED_CACHE_TEMP.test(name), { names });
    const others = names.filter((name) => name.endsWith('.v8') && name !== basename(path));
    const kept: { name: string; mtimeMs: number }[] = [];
    for (const name of others) {
      if (name.startsWith(prefix)) unlinkSync(join(directory, name));
      else kept.push({ name, mtimeMs: statSync(join(directory, name)).mtimeMs });
    }
    kept.sort((a, b) => b.mtimeMs - a.mtimeMs);
    for (const { name } of kept.slice(MAX_CACHE_FILES - 1)) unlinkSync(join(directory, name));
  } catch {
    // a read-only home, a full disk, another command pruning first: the next command compiles from the text
  }
}
