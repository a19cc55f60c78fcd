import { FanoutError } from '../core/errors.js';
import type { ReleaseFlags } from './release.js';
import { parseDuration } from './sync.js';

export interface RolloutFlags extends ReleaseFlags {
  channel?: string;
  canary: string;
  then?: string;
  rest?: boolean;
  timeout?: string;
}

/**
 * `fanout release rollout NAME VERSION --canary DC [--then DC,DC | --rest] [--timeout 30m]`:
 * promotes CHANNEL@CANARY, waits for its hosts to switch, then the next waves (see
 * release/rollout.ts). Prints one line per step, NDJSON events with --json; exits non-zero with
 * ROLLOUT_FAILED / ROLLOUT_TIMEOUT when a wave does not make it (later waves untouched).
 */
export async function rolloutCommand(name: string, version: string, flags: RolloutFlags): Promise<void> {
  const then = flags.then ? flags.then.split(',').map((s) => s.trim()).filter(Boolean) : [];
  if (then.length === 0 && !flags.rest) process.stderr.write('fanout release rollout: neither --then nor --rest: only the canary is promoted\n');
  const timeoutMs = parseDuration(flags.timeout ?? '30m');
  if (timeoutMs <= 0) throw new FanoutError('INVALID_ARGUMENT', '--timeout must be positive');
  const { ReleaseRegistry, etcdConnection } = await import('../release/registry.js');
  const { rollout } = await import('../release/rollout.js');
  const registry = new ReleaseRegistry(etcdConnection(flags));
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once('SIGINT', onSignal);
  let lastWaiting = '';
  try {
    const waves = await rollout({
      registry,
      name,
      version,
      channel: flags.channel ?? 'prod',
      canary: flags.canary,
      then,
      rest: flags.rest === true,
      timeoutMs,
      signal: stop.signal,
      onEvent: (e) => {
        if (flags.json) return void process.stdout.write(JSON.stringify(e) + '\n');
        if (e.event === 'promoted') process.stdout.write(`${e.wave}: ${e.channel} ${e.previous ?? '(none)'} → ${e.version}\n`);
        else if (e.event === 'switched') process.stdout.write(`${e.wave}: all ${e.hosts} host(s) switched\n`);
        else if (e.event === 'skipped') process.stdout.write(`${e.wave}: ${e.reason}\n`);
        else if (e.event === 'etcd-unavailable') process.stderr.write(`${e.wave}: ${e.error}; trying again at every poll until the timeout\n`);
        else {
          // One line per change, not one per poll.
          const line = `${e.wave}: ${e.switched}/${e.hosts} switched, ${e.staging} staging`;
          if (line !== lastWaiting) process.stdout.write(`${line}\n`);
          lastWaiting = line;
        }
      },
    });
    // NDJSON: the events, then this report, one object per line.
    if (flags.json) process.stdout.write(JSON.stringify({ event: 'done', name, version, waves }) + '\n');
    else process.stdout.write(`rollout of ${name}@${version} done: ${waves.map((w) => w.wave).join(' → ')}\n`);
  } finally {
    process.off('SIGINT', onSignal);
    await registry.close();
  }
}
