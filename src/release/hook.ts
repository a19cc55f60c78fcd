import { spawn } from 'node:child_process';

export interface HookRun {
  /** Shell command (`/bin/sh -c`). */
  command: string;
  env: NodeJS.ProcessEnv;
  /** A hook still running after this long is ended. */
  timeoutMs: number;
  /** Between SIGTERM and SIGKILL of the hook's process group. */
  graceMs: number;
  /** The agent stopping: the hook is ended the same way as on a timeout. */
  signal?: AbortSignal;
  /** Called with the hook's pid (its process group's id) once it runs; awaited before anything else. */
  onStart?: (pgid: number) => Promise<void>;
}

export type HookResult =
  | { ok: true }
  | { ok: false; reason: 'failed'; message: string }
  /** Ended by us: every process of its group is gone when this is returned. */
  | { ok: false; reason: 'timeout' | 'stopped'; message: string };

/** `sh -c GATED COMMAND`: reads "go" from stdin, then becomes `sh -c COMMAND` ($0). */
const GATED = 'read -r go && [ "$go" = go ] && exec /bin/sh -c "$0"';

/**
 * Runs an on-switch hook in a process group of its own (detached). A hook that hangs would
 * otherwise hold the agent for good, and signalling only the shell leaves what it started
 * (`sleep`, a service restart that never returns) running: on a timeout or when the agent
 * stops, the whole group gets SIGTERM, then SIGKILL after `graceMs` if any of it is left.
 * A hook that exits by itself keeps whatever it started in the background (a daemon it
 * launched is its business).
 */
export async function runHook(run: HookRun): Promise<HookResult> {
  if (run.signal?.aborted) return { ok: false, reason: 'stopped', message: 'not started: the agent is stopping' };
  // The shell waits on its stdin for "go" before it runs the hook (exec: same pid, same group), so
  // onStart (recording the group for a next start to end) is done before the hook does anything.
  // An agent killed before that closes the pipe: the shell reads EOF and exits without running it.
  const child = spawn('/bin/sh', ['-c', GATED, run.command], { stdio: ['pipe', 'inherit', 'inherit'], env: run.env, detached: true });
  child.stdin?.on('error', () => {}); // EPIPE: the shell is gone already (its exit is reported below)
  const exited = new Promise<{ code: number | null; sig: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, sig) => resolve({ code, sig })));
  const failedToStart = new Promise<Error>((resolve) => child.once('error', resolve));
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const ended = new Promise<'timeout' | 'stopped'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), run.timeoutMs);
    onAbort = () => resolve('stopped');
    run.signal?.addEventListener('abort', onAbort, { once: true });
  });
  try {
    if (child.pid !== undefined) await run.onStart?.(child.pid);
    // The hook's stdin is then at its end, as /dev/null would be.
    child.stdin?.end('go\n');
    const first = await Promise.race([exited, failedToStart, ended]);
    if (first instanceof Error) return { ok: false, reason: 'failed', message: `failed to start: ${first.message}` };
    if (typeof first === 'object') {
      return first.code === 0 ? { ok: true } : { ok: false, reason: 'failed', message: `exited with ${first.sig ?? first.code}` };
    }
    await endGroup(child.pid!, run.graceMs);
    await exited;
    return first === 'timeout'
      ? { ok: false, reason: 'timeout', message: `timed out after ${formatMs(run.timeoutMs)}` }
      : { ok: false, reason: 'stopped', message: 'stopped: the agent is stopping' };
  } finally {
    clearTimeout(timer);
    if (onAbort) run.signal?.removeEventListener('abort', onAbort);
  }
}

/** SIGTERM to the group, SIGKILL to whatever of it is left after the grace. */
export async function endGroup(pgid: number, graceMs: number): Promise<void> {
  signalGroup(pgid, 'SIGTERM');
  const deadline = performance.now() + graceMs;
  while (groupAlive(pgid) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (groupAlive(pgid)) signalGroup(pgid, 'SIGKILL');
}

function signalGroup(pgid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pgid, sig);
  } catch {
    // ESRCH: the group is already empty.
  }
}

export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function formatMs(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000} min` : ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}
