import { stat as fsStat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { FanoutError } from '../core/errors.js';
import { parseFanoutPath } from '../core/paths.js';
import { formatBytes } from '../core/pages.js';
import { CopyProgress, doneLine } from './progress.js';
import { cat, clientFor } from './cat.js';
import { fanoutPath, printJson, printTable, type GlobalOptions } from './output.js';

/** ls and cp: thin wrappers over the SDK (stat and cat, which must start fast, are in cat.ts). */

export async function ls(path: string, options: GlobalOptions): Promise<void> {
  const client = clientFor(options);
  try {
    const entries = await client.list(path);
    if (options.json) return printJson(entries.map((e) => ({ ...e, path: entryPath(path, e.name) })));
    printTable(
      entries.map((e) => [
        e.type === 'dir' ? 'dir' : 'file',
        e.type === 'dir' ? '-' : formatBytes(e.size ?? 0),
        e.mtimeMs ? new Date(e.mtimeMs).toISOString() : '-',
        e.type === 'dir' ? `${e.name}/` : e.name,
      ]),
    );
  } finally {
    await client.close();
  }
}

/** An ls entry's full fanout path (ls --json entries keep their bare `name` too). */
function entryPath(dir: string, name: string): string {
  const target = parseFanoutPath(dir);
  return target.mount ? fanoutPath(target.mount, target.path ? `${target.path}/${name}` : name) : fanoutPath(name, '');
}

/**
 * Copies a file, or a directory tree (like cp -r), out of the cluster. Each page is written at
 * its offset as it arrives; each file goes to a temporary name beside its target and is renamed
 * when complete and whole, so a failed copy never leaves a truncated file behind (an existing
 * device or FIFO at the target is written into, in order, instead). A tree's
 * files are copied many at once (small files cost round trips, not bytes).
 */
export async function cp(path: string, dest: string, options: GlobalOptions & { progress?: boolean }): Promise<void> {
  if (dest === '-') return cat(path, options); // `cp PATH -` is the Unix way of saying stdout
  const { copyFileInto, copyFileTo, copyTreeTo, listTree } = await import('./copy.js');
  const client = clientFor(options);
  const showBar = options.progress !== false && !options.json && process.stderr.isTTY;
  let bar: CopyProgress | undefined;
  const started = performance.now();
  let copied = 0;
  const onBytes = (bytes: number) => {
    copied += bytes;
    bar?.update(copied);
  };
  // Ctrl-C or SIGTERM stops the copy the way a failure does (temporaries removed, writes
  // ended), then ends the process by that signal. Killed at once, it left a partial temporary
  // file behind for good (its name carries the pid). A second signal kills at once.
  const interrupted = new AbortController();
  let signalled: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    signalled = signal;
    interrupted.abort(new FanoutError('ABORTED', `interrupted (${signal})`));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const { signal } = interrupted;
  try {
    // The members and page size beside the stat, not after it (as cat does); the cluster's
    // failure is the stat's to report (same endpoints), so it is only awaited afterwards.
    const cluster = client.cluster();
    cluster.catch(() => {});
    const file = await client.stat(path).catch((err: unknown) => {
      if (err instanceof FanoutError && err.code === 'IS_A_DIRECTORY') return undefined;
      throw err;
    });
    const { pageSize } = await cluster;
    const destInfo = await fsStat(dest).catch(() => undefined);
    const destIsDir = destInfo?.isDirectory() === true;
    if (!file) {
      const tree = await listTree(client, path, { signal });
      const source = parseFanoutPath(path);
      const name = basename(source.path.replace(/\/+$/, '')) || source.mount;
      const target = destIsDir ? join(dest, name) : dest;
      await requireDirectory(dirname(target));
      const bytes = tree.files.reduce((sum, f) => sum + f.file.size, 0);
      if (showBar) bar = new CopyProgress(bytes, process.stderr);
      await copyTreeTo(client, tree, target, pageSize, { onBytes, signal });
      bar?.finish(copied);
      bar = undefined;
      const seconds = (performance.now() - started) / 1000;
      if (options.json) printJson({ path, dest: target, files: tree.files.length, bytes: copied, seconds });
      else process.stderr.write(`${doneLine(copied, seconds, target)} (${tree.files.length} files)\n`);
      return;
    }
    const target = destIsDir ? join(dest, basename(file.path)) : dest;
    await requireDirectory(dirname(target));
    if (showBar) bar = new CopyProgress(file.size, process.stderr);
    // A device or FIFO at the target is written into, never replaced (cp(1) does the same).
    const targetInfo = destIsDir ? await fsStat(target).catch(() => undefined) : destInfo;
    const special = targetInfo !== undefined && !targetInfo.isFile() && !targetInfo.isDirectory();
    await (special ? copyFileInto(client, file, target, { onBytes, signal }) : copyFileTo(client, file, target, pageSize, { onBytes, signal }));
    bar?.finish(copied);
    bar = undefined;
    const seconds = (performance.now() - started) / 1000;
    if (options.json) printJson({ path: fanoutPath(file.mount, file.path), dest: target, bytes: copied, seconds, version: file.version });
    else process.stderr.write(doneLine(copied, seconds, target) + '\n');
  } finally {
    bar?.abort();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await client.close();
    // Cleaned up: now the signal's own end (exit status 128 + its number, as a shell expects).
    if (signalled) process.kill(process.pid, signalled);
  }
}

/** A missing destination directory is the user's to fix: say which one, with a fanout code. */
async function requireDirectory(dir: string): Promise<void> {
  const info = await fsStat(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
    throw new FanoutError('INVALID_ARGUMENT', `cannot use destination directory ${dir}: ${err.message}`);
  });
  if (!info) throw new FanoutError('NOT_FOUND', `destination directory ${dir} does not exist`);
  if (!info.isDirectory()) throw new FanoutError('NOT_A_DIRECTORY', `destination ${dir} is not a directory`);
}
