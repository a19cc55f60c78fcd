import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { readFile, readdir, readlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fanoutBin } from './workers.js';

/** SHA-256 of every file under a directory (following the `current` symlink), by relative path. */
export async function treeHashes(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const visit = async (dir: string, rel: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (rel === '' && entry.name === '.fanout-releases') continue;
      const path = join(dir, entry.name);
      const relPath = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) await visit(path, relPath);
      else out[relPath] = createHash('sha256').update(await readFile(path)).digest('hex');
    }
  };
  await visit(root, '');
  return out;
}

export async function currentVersion(dir: string): Promise<string | null> {
  return readlink(join(dir, 'current')).then(basename, () => null);
}

/** A `fanout sync` agent process following a channel. */
export class SyncProcess {
  private exited: Promise<number | null>;
  constructor(
    readonly proc: ChildProcess,
    readonly dir: string,
  ) {
    this.exited = new Promise((r) => proc.once('exit', (code) => r(code)));
  }

  static start(args: string[], dir: string, logFile: string): SyncProcess {
    const proc = spawn(process.execPath, [fanoutBin, 'sync', ...args, '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    const log = createWriteStream(logFile, { flags: 'a' });
    proc.stdout!.pipe(log);
    proc.stderr!.pipe(log);
    return new SyncProcess(proc, dir);
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    await this.exited;
  }
}
