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
  intervalMs?: number;
}

/** Calls onGone once if the npm exec launcher goes away; returns a function that stops watching. */
export function followLauncher(onGone: () => void, options: LauncherWatchOptions = {}): () => void {
  const env = options.env ?? process.env;
  const parentPid = options.parentPid ?? (() => process.ppid);
  if (env.npm_command !== 'exec') return () => {};
  const parent = parentPid();
  const timer = setInterval(() => {
    if (parentPid() === parent) return;
    clearInterval(timer);
    onGone();
  }, options.intervalMs ?? 500);
  timer.unref(); // never what keeps the process alive
  return () => clearInterval(timer);
}
