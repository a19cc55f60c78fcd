import { createWriteStream } from 'node:fs';
import { rename, stat as fsStat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { SingleBar, Presets } from 'cli-progress';
import { FanoutError } from '../core/errors.js';
import { parseFanoutPath } from '../core/paths.js';
import { formatBytes } from '../core/pages.js';
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
 * Copies a file out of the cluster. Written to a temporary name beside the destination and
 * renamed when complete and whole, so a failed copy never leaves a truncated file behind.
 */
export async function cp(path: string, dest: string, options: GlobalOptions & { progress?: boolean }): Promise<void> {
  if (dest === '-') return cat(path, options); // `cp PATH -` is the Unix way of saying stdout
  const client = clientFor(options);
  const file = await client.stat(path);
  const target = (await fsStat(dest).catch(() => undefined))?.isDirectory() ? join(dest, basename(file.path)) : dest;
  await requireDirectory(dirname(target));
  const tmp = join(dirname(target), `.${basename(target)}.fanout-${process.pid}.tmp`);
  const showBar = options.progress !== false && !options.json && process.stderr.isTTY;
  const bar = showBar ? new SingleBar({ format: ' {bar} {percentage}% | {done}/{total} | {speed}', hideCursor: true }, Presets.shades_classic) : undefined;
  const started = Date.now();
  let copied = 0;
  bar?.start(file.size, 0, { done: formatBytes(0), total: formatBytes(file.size), speed: '' });
  const progress = new Transform({
    transform(chunk: Buffer, _enc, callback) {
      copied += chunk.length;
      const seconds = (Date.now() - started) / 1000;
      bar?.update(copied, { done: formatBytes(copied), speed: seconds > 0 ? `${formatBytes(copied / seconds)}/s` : '' });
      callback(null, chunk);
    },
  });
  try {
    const stream = await client.readFile(file);
    await pipeline(stream, progress, createWriteStream(tmp, { highWaterMark: 4 * 1024 * 1024 }));
    await rename(tmp, target);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  } finally {
    bar?.stop();
    await client.close();
  }
  const seconds = (Date.now() - started) / 1000;
  if (options.json) printJson({ path: fanoutPath(file.mount, file.path), dest: target, bytes: copied, seconds, version: file.version });
  else if (!showBar) process.stderr.write(`copied ${formatBytes(copied)} to ${target} in ${seconds.toFixed(2)} s\n`);
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
