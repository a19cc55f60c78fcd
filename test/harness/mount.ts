import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { fanoutBin } from './workers.js';
import { StopWaiting, waitFor } from './ports.js';

/** A real `fanout mount` process, as a user would start it. */
export class MountProcess {
  log = '';
  private readonly exited: Promise<number | null>;

  private constructor(
    readonly mountpoint: string,
    private readonly proc: ChildProcess,
  ) {
    proc.stdout!.on('data', (chunk: Buffer) => (this.log += chunk.toString()));
    proc.stderr!.on('data', (chunk: Buffer) => (this.log += chunk.toString()));
    this.exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
  }

  static async start(mountpoint: string, endpoint: string, ...flags: string[]): Promise<MountProcess> {
    return MountProcess.startUnder(undefined, mountpoint, endpoint, ...flags);
  }

  /** A mount started under `prlimit --nofile=N:N` (its open-file limit), as `ulimit -n N` would. */
  static async startUnder(nofile: number | undefined, mountpoint: string, endpoint: string, ...flags: string[]): Promise<MountProcess> {
    const args = [fanoutBin, 'mount', mountpoint, '--endpoint', endpoint, ...flags];
    const proc =
      nofile === undefined
        ? spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
        : spawn('prlimit', [`--nofile=${nofile}:${nofile}`, '--', process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    return MountProcess.started(mountpoint, proc);
  }

  /** A mount started inside a cgroup (v1 memory group directory: its memory limit), as in a container; the pid stays the mount's. */
  static async startInCgroup(cgroup: string, mountpoint: string, endpoint: string, ...flags: string[]): Promise<MountProcess> {
    const args = [fanoutBin, 'mount', mountpoint, '--endpoint', endpoint, ...flags];
    const proc = spawn('sh', ['-c', `echo $$ > '${cgroup}/cgroup.procs' && exec "$0" "$@"`, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    return MountProcess.started(mountpoint, proc);
  }

  private static async started(mountpoint: string, proc: ChildProcess): Promise<MountProcess> {
    const mount = new MountProcess(mountpoint, proc);
    try {
      await waitFor(
        `fanout mount at ${mountpoint}`,
        async () => {
          if (proc.exitCode !== null) throw new StopWaiting(`fanout mount exited with ${proc.exitCode}: ${mount.log}`);
          return mount.log.includes('fanout: mounted') && (await isMounted(mountpoint));
        },
        60_000,
      );
    } catch (err) {
      // Not left behind: a mount process that never came up would keep the test process alive.
      await mount.signal('SIGKILL');
      await forceUnmount(mountpoint);
      throw err;
    }
    return mount;
  }

  /** False once the process has exited. */
  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /** SIGSTOP: the process freezes, and every call into its file system waits, as on a hung NFS server. */
  pause(): void {
    this.proc.kill('SIGSTOP');
  }

  /** SIGCONT: a paused process goes on. */
  resume(): void {
    this.proc.kill('SIGCONT');
  }

  /** Sends a signal and waits for the process to exit; returns its exit code (null if killed). */
  async signal(signal: NodeJS.Signals): Promise<number | null> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    return this.exited;
  }
}

/** True when `mountpoint` is a fanout FUSE mount (alive or stale) in this mount namespace. */
export async function isMounted(mountpoint: string): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((line) => line.split(' ')[4] === mountpoint && line.includes(' - fuse.fanout '));
}

/** Detaches whatever is mounted at `mountpoint` (cleanup; never fails). */
export async function forceUnmount(mountpoint: string): Promise<void> {
  if (!(await isMounted(mountpoint))) return;
  await new Promise((resolve) => execFile('fusermount3', ['-u', '-z', mountpoint], () => resolve(undefined)));
}

/** A test's end: the mount stopped (and unmounted if it did not), the worker destroyed, the temp dirs removed. */
export async function stopMountAndWorker(mount: MountProcess | undefined, worker: { destroy(): Promise<void> } | undefined, mountpoint: string, ...dirs: string[]): Promise<void> {
  await mount?.signal('SIGTERM');
  await forceUnmount(mountpoint);
  await worker?.destroy();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
}

export interface Run {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs a real command (sha256sum, dd, python3…) and captures its output; never rejects. */
export function sh(cmd: string, args: string[], options: { cwd?: string } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { encoding: 'buffer', maxBuffer: 256 * 1024 * 1024, ...options }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
      resolve({ code, stdout, stderr: stderr.toString() });
    });
  });
}
