import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, readdir, readlink, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fanout, type CliResult } from './cli.js';
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

  /** `namespace`: run in that network namespace (a NetLab host's); `ip netns exec` execs node, so the pid stays the agent's. */
  static start(args: string[], dir: string, logFile: string, namespace?: string): SyncProcess {
    const command = [...(namespace === undefined ? [] : ['ip', 'netns', 'exec', namespace]), process.execPath, fanoutBin, 'sync', ...args, '--dir', dir];
    const proc = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
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

/**
 * What tells one machine from another: each replaced by a file of its own in the namespace of
 * fanoutOnAnotherMachine(). All of them, whichever the code reads first: another machine
 * differs in each (and a fresh Debian container may have no machine-id file at all).
 */
const MACHINE_IDENTITY_FILES = ['/etc/machine-id', '/var/lib/dbus/machine-id', '/proc/sys/kernel/random/boot_id'];

/**
 * Runs `fanout ARGS` as a second machine with the same hostname would (a cloned VM): in a
 * private mount namespace (unshare -m, root) where the machine's identity files are other
 * files, and `dir` is another directory (`ownDir`: that machine's own disk at the same path).
 */
export async function fanoutOnAnotherMachine(args: string[], dir: string, ownDir: string): Promise<CliResult> {
  const other = join(ownDir, '..', `${basename(ownDir)}.identity`);
  await mkdir(other, { recursive: true });
  await mkdir(ownDir, { recursive: true });
  await mkdir(dir, { recursive: true });
  const binds: string[] = [];
  for (const file of MACHINE_IDENTITY_FILES) {
    if (!(await stat(file).then(() => true, () => false))) continue;
    const copy = join(other, basename(file));
    // A machine-id is 32 hex digits, a boot id a UUID: random ones of the same form.
    const id = randomUUID();
    await writeFile(copy, `${file.endsWith('boot_id') ? id : id.replaceAll('-', '')}\n`);
    binds.push(`mount --bind ${shellQuoted(copy)} ${file}`);
  }
  binds.push(`mount --bind ${shellQuoted(ownDir)} ${shellQuoted(dir)}`);
  return fanout(args, {}, ['unshare', '-m', 'sh', '-ec', `${binds.join('; ')}; exec "$@"`, 'sh']);
}

const shellQuoted = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
