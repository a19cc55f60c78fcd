import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, rename, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { removeAbandonedTemps } from '../statefile/tempfiles.cjs';

/**
 * The admin token of `fanout serve`, handed to the CLI and SDK of the same local user without
 * any configuration. serve makes a fresh random token at each start and writes it, readable by
 * its user only (0600, in a 0700 directory), to
 *   $XDG_CONFIG_HOME/fanout/tokens/<host>_<port>   (default ~/.config/fanout/tokens/)
 * one file per address it can be reached at, with a loopback address (127.0.0.1, localhost,
 * ::1, or a wildcard listen) spelled `loopback`, and to <dataDir>/admin.token for scripts.
 * A client with no token configured looks up the file of the address it talks to, so it works
 * from any directory; another user cannot read the file and gets 401.
 */

export interface PublishedToken {
  token: string;
  /** serve's process: a file left by a process that is gone is ignored (a stale file of a killed serve). */
  pid: number;
}

export function newAdminToken(): string {
  return randomBytes(32).toString('base64url');
}

/** The directory of published tokens for this user. */
export function tokenDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || join(homedir(), '.config');
  return join(base, 'fanout', 'tokens');
}

/** The file name for an address: `loopback_7450`, `cache-1.example_7450`. */
export function endpointKey(url: string): string {
  const parsed = new URL(url);
  const host = parsed.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const port = parsed.port || (parsed.protocol === 'https:' ? '443' : '80');
  const name = isLoopbackOrWildcard(host) ? 'loopback' : host.replace(/[^a-z0-9.-]/g, '_');
  return `${name}_${port}`;
}

function isLoopbackOrWildcard(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '::' || host === '0.0.0.0' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Writes the token for each address (atomically, 0600); returns the files, for unpublish. */
export async function publishToken(urls: string[], token: string, env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  const dir = tokenDir(env);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const content = JSON.stringify({ token, pid: process.pid } satisfies PublishedToken) + '\n';
  const files = [...new Set(urls.map((u) => join(dir, endpointKey(u))))];
  for (const file of files) await writePrivate(file, content);
  return files;
}

/** <dataDir>/admin.token (0600): the token as plain text, for FANOUT_TOKEN=$(cat …). */
export async function writeDataDirToken(dataDir: string, token: string): Promise<string> {
  const file = join(dataDir, 'admin.token');
  await writePrivate(file, token + '\n');
  return file;
}

/** Removes published files that still hold this token (a newer serve on the same port keeps its own). */
export async function unpublishToken(files: string[], token: string): Promise<void> {
  for (const file of files) {
    const current = await readFile(file, 'utf8').then(parsePublished, () => undefined);
    if (current?.token === token) await unlink(file).catch(() => {});
  }
}

/**
 * The token `fanout serve` published for this address, if a live serve of this user did.
 * Synchronous and small: it is read when a request's headers are built.
 */
export function publishedTokenFor(url: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  let text: string;
  try {
    text = readFileSync(join(tokenDir(env), endpointKey(url)), 'utf8');
  } catch {
    return undefined;
  }
  const published = parsePublished(text);
  return published && processAlive(published.pid) ? published.token : undefined;
}

function parsePublished(text: string): PublishedToken | undefined {
  try {
    const value = JSON.parse(text) as Partial<PublishedToken>;
    return typeof value.token === 'string' && Number.isSafeInteger(value.pid) ? { token: value.token, pid: value.pid! } : undefined;
  } catch {
    return undefined;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A fresh temp file (O_EXCL: never a file or symlink someone placed at a guessable name, whose
 * mode or target would be kept), then renamed over `file`.
 */
async function writePrivate(file: string, content: string): Promise<void> {
  // A serve killed between the write and the rename left its temp (a dead token) for good: each
  // start removes those of `file` older than a minute (a write takes milliseconds), judged by age
  // since another serve may be writing its own now.
  const prefix = `${basename(file)}.`;
  removeAbandonedTemps(dirname(file), (name) => name.startsWith(prefix) && /^\d+\.[0-9a-f]{12}\.tmp$/.test(name.slice(prefix.length)));
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, content, { mode: 0o600, flag: 'wx' });
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
