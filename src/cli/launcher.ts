/**
 * `npx fanout serve` runs node under `npm exec` and a shell. `kill $!` stops only npm: the shell
 * goes with it but node is re-parented and would keep serving (and holding its ports) with no
 * one left to stop it. A daemon started by npm exec therefore follows its launcher: when its
 * parent process changes, it stops as on SIGTERM. Started any other way (systemd, a shell,
 * nohup) it never watches, so a detached `fanout serve &` keeps running after its shell exits.
 */
export interface LauncherWatchOptions {
  env?: NodeJS.ProcessEnv;
  parentPid?: () => number;
  /** The launcher's pid. Default: this process's parent when the module loaded (see below). */
  launcherPid?: number;
  intervalMs?: number;
}

/**
 * The parent when the CLI loaded this module, before the daemon starts: a launcher killed while
 * the daemon was still starting (listening, publishing its token) is noticed too, instead of the
 * orphaned daemon taking its new parent for the launcher.
 */
const parentAtLoad = process.ppid;

/** Calls onGone once if the npm exec launcher goes away; returns a function that stops watching. */
export function followLauncher(onGone: () => void, options: LauncherWatchOptions = {}): () => void {
  const env = options.env ?? process.env;
  const parentPid = options.parentPid ?? (() => process.ppid);
  if (env.npm_command !== 'exec') return () => {};
  const launcher = options.launcherPid ?? (options.parentPid ? parentPid() : parentAtLoad);
  let gone = false;
  const check = () => {
    if (gone || parentPid() === launcher) return;
    gone = true;
    clearInterval(timer);
    onGone();
  };
  const timer = setInterval(check, options.intervalMs ?? 500);
  timer.unref(); // never what keeps the process alive
  setImmediate(check); // already gone while the daemon started
  return () => {
    gone = true;
    clearInterval(timer);
  };
}
