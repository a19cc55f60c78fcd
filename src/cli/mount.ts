import { pino, destination } from 'pino';
import { followLauncher } from './launcher.js';
import type { GlobalOptions } from './output.js';

export interface MountFlags extends GlobalOptions {
  ttl?: string;
  readahead?: string;
  cache?: string;
  readMemory?: string;
  kernelReadahead?: string;
  allowOther?: boolean;
  directIo?: boolean;
  threads?: string;
  logLevel?: string;
}

/**
 * `fanout mount MOUNTPOINT`: serves the FUSE filesystem until SIGINT/SIGTERM (or an outside
 * unmount), then unmounts.
 */
export async function mount(mountpoint: string, flags: MountFlags): Promise<void> {
  // Loaded here: the addon and the mount code are of no use to the other commands.
  const { mountFanout } = await import('../mount/index.js');
  const log = pino({ level: flags.logLevel ?? 'info', base: { mount: mountpoint } }, destination({ fd: 2, sync: true }));
  const mounted = await mountFanout(
    mountpoint,
    {
      endpoint: flags.endpoint,
      ca: flags.ca,
      ttl: flags.ttl,
      readahead: flags.readahead,
      cache: flags.cache,
      readMemory: flags.readMemory,
      kernelReadahead: flags.kernelReadahead,
      allowOther: flags.allowOther,
      directIo: flags.directIo,
      threads: flags.threads,
      hedge: flags.hedge,
    },
    log,
  );
  process.stderr.write(`fanout: mounted ${flags.endpoint} at ${mounted.mountpoint} (read-only); Ctrl-C or SIGTERM unmounts\n`);
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];
  let onSignal: (signal: NodeJS.Signals) => void = () => {};
  const signalled = new Promise<NodeJS.Signals>((resolve) => (onSignal = resolve));
  for (const signal of signals) process.once(signal, onSignal);
  const stopFollowing = followLauncher(() => onSignal('SIGTERM')); // `npx fanout mount … &` then kill $!
  const signal = await Promise.race([signalled, mounted.closed.then(() => undefined)]);
  process.stderr.write(signal ? `fanout: ${signal}, unmounting ${mounted.mountpoint}\n` : `fanout: ${mounted.mountpoint} was unmounted, exiting\n`);
  await mounted.unmount();
  for (const signal of signals) process.removeListener(signal, onSignal);
  stopFollowing();
}
