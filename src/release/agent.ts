import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { FanoutError, descriptorShortage, outOfDescriptors } from '../core/errors.js';
import { currentOpenFileLimit } from '../lib/fdlimit/index.js';
import { TokenBucket } from '../lib/ratelimit/index.js';
import { isDiskFull, isNotWritable } from '../lib/statefile/index.js';
import type { ReleaseFetcher } from './fetch.js';
import { CurrentGuard } from './guard.js';
import { runHook } from './hook.js';
import { HostRecord } from './hostrecord.js';
import { ReleaseDir } from './install.js';
import { InstalledVersions } from './reissue.js';
import { endLeftoverHook, forgetRunningHook, recordRunningHook } from './runninghook.js';
import type { AgentState, ChannelWatch, ReleaseRegistry } from './registry.js';
import { checkDatacenter, resolveChannel, watchChannels, watchedChannels } from './scope.js';
import { stageVersion, type StageProgress } from './stage.js';

export interface SyncAgentOptions {
  name: string;
  channel: string;
  dir: string;
  /** Older versions kept besides the current one. */
  keep: number;
  /** Shell command run after each switch (FANOUT_RELEASE, FANOUT_VERSION, FANOUT_PREVIOUS, FANOUT_DIR set). */
  onSwitch?: string;
  /** A hook still running after this long is ended, with what it started (default 5 min). */
  hookTimeoutMs?: number;
  /** Between SIGTERM and SIGKILL of a hook being ended (default 5 s). */
  hookGraceMs?: number;
  registry: ReleaseRegistry;
  fetcher: ReleaseFetcher;
  /** Name this host reports under in `release status`. */
  host?: string;
  /** The host's datacenter: it follows `CHANNEL@DATACENTER` when that was moved after `CHANNEL` (scope.ts). */
  datacenter?: string;
  /**
   * Damaged files of the current version (checked every round) are fetched again and `current`
   * switched to the repaired tree (default true); false only reports them (`--no-repair`).
   */
  repair?: boolean;
  /** Cap on bytes/s fetched from the cluster while staging (0 or undefined: none). */
  rate?: number;
  /**
   * How often the channel is re-read although the watch said nothing: a safety net for a watch
   * that died silently (a half-open connection). Promotions arrive through the watch.
   */
  intervalMs?: number;
  /** How often the host's record is renewed (default 5 s; tests shorten it). */
  heartbeatMs?: number;
  log?: (line: string) => void;
}

/** What the agent's /metrics reports (see syncmetrics.ts). */
export interface AgentHealth {
  state: Readonly<AgentState>;
  /** Since when (ms since the epoch) the channel has pointed elsewhere than `current`; undefined when in sync. */
  behindSince: number | undefined;
  failedRounds: number;
  switches: number;
  /** Files of the current version found damaged (each counted once per version until repaired). */
  damagedFiles: number;
  /** Repairs of the current version completed. */
  repairs: number;
}

export const DEFAULT_INTERVAL_MS = 30_000;
export const DEFAULT_HOOK_TIMEOUT_MS = 5 * 60_000;
const HOOK_GRACE_MS = 5_000;
const MAX_BACKOFF_MS = 10_000;
/** etcd out of space is logged when it starts, then at most this often while it lasts. */
const FULL_LOG_EVERY_MS = 60_000;

/** Channel moves met in one round (each after a whole staging) before the round ends where it is. */
const MAX_MOVES_PER_ROUND = 3;

/**
 * The sync agent of one serving host: follows a channel, stages the version it points to,
 * verifies it, switches DIR/current atomically, runs the hook and prunes old versions. It
 * never touches `current` until a version is whole and verified; any failure (etcd down,
 * cluster unreachable, hash mismatch, disk full) is reported and retried, with the current
 * version left in place.
 */
export class SyncAgent {
  readonly dir: ReleaseDir;
  /**
   * The last prune failed, or none ran since this agent started: idle rounds prune. True at
   * start, so what a killed agent left (a half-deleted version, another version's staging) goes
   * even if the channel never moves again (found by a fault hunt: leftovers kept a disk full).
   */
  private pruneOwed = true;
  /** A hook left running by an earlier agent of the directory was looked for (and ended). */
  private leftoverHookChecked = false;
  /** The host's record in `release status`; its state is this.state. */
  private readonly record: HostRecord;
  private readonly state: AgentState;
  private failures = 0;
  private watch: ChannelWatch | undefined;
  /** A round is due now (the watch fired or broke), whatever the schedule says. */
  private checkNow = false;
  /** Ends the current pause early (set while pausing). */
  private wakePause: (() => void) | undefined;
  private behindSince: number | undefined;
  private failedRounds = 0;
  private switches = 0;
  /** Damage to the current version, found each round and repaired (guard.ts). */
  private readonly guard: CurrentGuard;
  /** Whether a version installed here is the one etcd records under its name (reissue.ts). */
  private readonly installed: InstalledVersions;
  /**
   * When etcd out of space was last logged; undefined when no such outage is under way. An idle
   * agent retries every few seconds, and logged ETCD_FULL at each (found by a fault hunt: 6 lines
   * in 20 s); now once per outage, at most once a minute, and its end.
   */
  private fullLoggedAt: number | undefined;

  constructor(private readonly opts: SyncAgentOptions) {
    if (opts.datacenter !== undefined) checkDatacenter(opts.datacenter);
    currentOpenFileLimit(); // its descriptor opened now: a round out of fds still names the limit
    this.dir = new ReleaseDir(
      resolve(opts.dir),
      ({ file, movedTo }) => opts.log?.(`state file ${file} is corrupt: moved aside to ${movedTo ?? '(could not move)'}; continuing without it`),
      (line) => opts.log?.(`${opts.name}: ${line}`),
    );
    this.state = {
      host: opts.host ?? hostname(),
      channel: opts.channel,
      ...(opts.datacenter ? { datacenter: opts.datacenter } : {}),
      following: opts.channel,
      dir: this.dir.dir,
      current: null,
      target: null,
      phase: 'idle',
      bytesDone: 0,
      bytesTotal: 0,
      bytesLocal: 0,
      bytesFetched: 0,
      error: null,
      updatedAt: new Date().toISOString(),
    };
    this.record = new HostRecord({ registry: opts.registry, name: opts.name, hostGiven: opts.host !== undefined, heartbeatMs: opts.heartbeatMs }, this.state);
    this.guard = new CurrentGuard({
      name: opts.name,
      dir: this.dir,
      registry: opts.registry,
      fetcher: opts.fetcher,
      repair: opts.repair ?? true,
      hook: opts.onSwitch !== undefined,
      log: opts.log,
      limiter: () => this.limiter(),
      report: (patch, must) => this.report(patch, must),
      progress: (p) => this.progress(p),
      afterSwitch: (version, previous, signal) => this.afterSwitch(version, previous, signal),
    });
    this.installed = new InstalledVersions(this.dir, opts.fetcher);
  }

  health(): AgentHealth {
    const { behindSince, failedRounds, switches } = this;
    return { state: { ...this.state }, behindSince, failedRounds, switches, damagedFiles: this.guard.damagedFiles, repairs: this.guard.repairs };
  }

  /**
   * Follows the channel until aborted. An etcd watch on the channel starts a round as soon as
   * it is moved; the channel is also re-read every `intervalMs` in case the watch died
   * silently. After a failure (etcd down…) rounds are retried with backoff, and each one first
   * opens a new watch, then re-reads the channel, so nothing promoted meanwhile is missed.
   */
  async run(signal: AbortSignal): Promise<void> {
    let nextRound = 0;
    try {
      while (!signal.aborted) {
        if (this.checkNow || performance.now() >= nextRound) {
          this.checkNow = false;
          nextRound = performance.now() + (await this.record.beating(() => this.round(signal)));
        } else {
          await this.report({}, false); // heartbeat only: renews the lease, reads nothing
        }
        await this.pause(Math.min(nextRound - performance.now(), this.record.heartbeatMs), signal);
      }
    } finally {
      this.closeWatch();
    }
  }

  /** Watch (if not watching), then sync. Returns how long to wait before the next round. */
  private async round(signal: AbortSignal): Promise<number> {
    try {
      if (!this.watch || this.watch.broken) {
        this.closeWatch();
        // Named in the error if etcd is down; a failure of its own is the round's, reported.
        this.state.current = await this.dir.currentVersion().catch(async (err: unknown) => {
          throw await this.failed(err);
        });
        // Watch first, read second (sync): a promotion in between still fires the watch.
        // A host with a datacenter watches CHANNEL and CHANNEL@DATACENTER: either may move it.
        const channels = watchedChannels(this.opts.channel, this.opts.datacenter);
        this.watch = await watchChannels(this.opts.registry, this.opts.name, channels, (event, err) => {
          if (event === 'broken') this.opts.log?.(`watch on ${this.opts.name}/${this.opts.channel} broke (${err?.message}); re-reading the channel`);
          this.wake();
        }).catch(async (err) => {
          throw await this.failed(err);
        });
      }
      await this.sync(signal);
      this.failures = 0;
      if (this.fullLoggedAt !== undefined) this.opts.log?.(`sync ${this.opts.name}/${this.opts.channel}: etcd takes writes again (its space alarm is over)`);
      this.fullLoggedAt = undefined;
      return this.opts.intervalMs ?? DEFAULT_INTERVAL_MS;
    } catch (err) {
      // Another agent's host id: retrying would not change it, and this agent must not report under it.
      if (err instanceof FanoutError && err.code === 'HOST_IN_USE') throw err;
      // etcd down: drop the watch (it may be half-open) so the next round opens a fresh one.
      if (err instanceof FanoutError && err.code === 'ETCD_UNAVAILABLE') this.closeWatch();
      this.failures++;
      // Jittered, so hosts do not all come back to etcd at the same instant after an outage.
      return Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(this.failures - 1, 5)) * (0.75 + Math.random() / 4);
    }
  }

  private closeWatch(): void {
    this.watch?.close();
    this.watch = undefined;
  }

  /** Starts a round now: ends the current pause, or the next one if none is under way. */
  private wake(): void {
    this.checkNow = true;
    this.wakePause?.();
  }

  /** Waits `ms`, or less if woken or aborted. The timer and listener are gone when it returns. */
  private pause(ms: number, signal: AbortSignal): Promise<void> {
    if (this.checkNow || signal.aborted || ms <= 0) return Promise.resolve();
    return new Promise((done) => {
      const end = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', end);
        this.wakePause = undefined;
        done();
      };
      const timer = setTimeout(end, ms);
      signal.addEventListener('abort', end, { once: true });
      this.wakePause = end;
    });
  }

  /**
   * One round (`sync --once`): read the channel; if it points elsewhere than `current`, stage,
   * verify, switch. Returns the version `current` points to afterwards. Throws (after reporting)
   * on failure, and with RELEASE_DAMAGED when damage to the current version is left in place.
   * The host's record is renewed during it, as during a round of `run`.
   */
  async syncOnce(signal?: AbortSignal): Promise<string | null> {
    const current = await this.record.beating(() => this.sync(signal));
    // Damage left in place (--no-repair) is the round's outcome: reported (phase error), and
    // told by `--once`'s exit status, which a check run from cron or a probe reads. Before, it
    // exited 0 as if the version were whole.
    if (this.guard.unrepaired) throw new FanoutError('RELEASE_DAMAGED', this.guard.unrepaired);
    return current;
  }

  private async sync(signal?: AbortSignal, moves = 0): Promise<string | null> {
    try {
      // Inside the try: a directory that cannot be set up (read-only, `current` not a link) is a
      // failed round, logged and reported, not an error only `--once` would show.
      await this.dir.init();
      this.state.current = await this.dir.currentVersion();
      await this.guard.finishCutRepair(this.state.current);
      if (!this.record.isClaimed) await this.record.claim(signal);
      if (!this.leftoverHookChecked) await this.endLeftoverHook();
      const followed = await resolveChannel(this.opts.registry, this.opts.name, this.opts.channel, this.opts.datacenter);
      if (!followed) throw new FanoutError('CHANNEL_NOT_FOUND', `release ${this.opts.name} has no channel ${watchedChannels(this.opts.channel, this.opts.datacenter).join(' or ')}`);
      const target = followed.record.version;
      this.state.target = target;
      this.state.following = followed.channel;
      this.noteBehind();
      if (target === this.state.current) {
        // A switch made by a round that died before its hook ran (killed, crashed).
        const pending = this.opts.onSwitch ? await this.dir.pendingHook() : undefined;
        // "switching" while it runs, as after a switch: renewed by the heartbeat, and a rollout
        // does not count the host as switched before its hook ended.
        // The same name is not always the same version (etcd restored, the name published again).
        await this.installed.check(await this.opts.registry.getVersion(this.opts.name, target), signal);
        if (pending?.version === target) await this.report({ phase: 'switching', error: null }, true);
        const hookError = pending?.version === target ? await this.afterSwitch(pending.version, pending.previous, signal) : null;
        const damage = await this.guard.check(target, signal);
        if (this.pruneOwed) await this.pruneOld();
        await this.report({ phase: hookError || damage.failed ? 'error' : 'idle', error: hookError ?? damage.error }, true);
        return target;
      }
      if (await this.bringUp(target, signal)) return target;
    } catch (err) {
      throw await this.failed(err);
    }
    // The channel moved while the version was staged (a rollback, a newer promotion): that
    // version was installed but not switched to. The round goes on to where the channel is now.
    if (moves < MAX_MOVES_PER_ROUND) return this.sync(signal, moves + 1);
    await this.report({ phase: 'idle', error: null }, true);
    return this.state.current;
  }

  /** Logs and reports a failed round; returns the error as a FanoutError. */
  private async failed(err: unknown): Promise<FanoutError> {
    // A round that met EMFILE/ENFILE, wherever (a staged file's open, a scan of --dir, a
    // connection): the agent at its open-file limit, OVERLOADED, tried again next round. Before,
    // it was INTERNAL "EMFILE: too many open files, scandir …", as if fanout had a bug, and named
    // no limit. The wording is every fanout process's (outOfDescriptors), with the agent's next step.
    const shortage = descriptorShortage(err)
      ? outOfDescriptors(err, '', { who: 'this sync agent', limit: currentOpenFileLimit(), then: `the round is tried again (${(err as Error).message})` })
      : undefined;
    const error = shortage
      ? shortage
      : err instanceof FanoutError
        ? err
        : isDiskFull(err)
          ? new FanoutError('DISK_FULL', `no space left in ${this.dir.dir}: ${(err as Error).message}`, { cause: err })
          : isNotWritable(err)
            ? new FanoutError('INVALID_CONFIG', `cannot write in ${this.dir.dir} (--dir): ${(err as Error).message}`, { cause: err })
            : new FanoutError('INTERNAL', (err as Error).message, { cause: err });
    this.failedRounds++;
    if (this.quietFull(error)) return this.reportFailure(error);
    this.opts.log?.(`sync ${this.opts.name}/${this.opts.channel}: ${error.code}: ${error.message} (current stays ${this.state.current ?? 'none'})`);
    return this.reportFailure(error);
  }

  private async reportFailure(error: FanoutError): Promise<FanoutError> {
    await this.report({ phase: 'error', error: `${error.code}: ${error.message}` }, true).catch(() => {});
    return error;
  }

  /** Whether `error` is etcd out of space already logged less than a minute ago (this outage). */
  private quietFull(error: FanoutError): boolean {
    if (error.code !== 'ETCD_FULL') return false;
    const now = performance.now();
    if (this.fullLoggedAt !== undefined && now - this.fullLoggedAt < FULL_LOG_EVERY_MS) return true;
    this.fullLoggedAt = now;
    return false;
  }

  /**
   * Stages (unless installed), installs and switches to `target`. Returns false, without switching,
   * when the channel no longer points to `target` once it is installed: staging takes minutes, and
   * a version rolled back meanwhile must not go live (found by a fault hunt: a host staging v2
   * during a rollback to v1 switched to v2 and ran its hook, then back to v1 at the next round).
   */
  private async bringUp(target: string, signal?: AbortSignal): Promise<boolean> {
    const record = await this.opts.registry.getVersion(this.opts.name, target);
    // A kept version under a name published again with other files is not switched to (reissue.ts).
    await this.installed.check(record, signal);
    const kept = (await this.dir.installed()).includes(target) ? await this.dir.manifestOf(target) : undefined;
    // A kept version (a rollback) is switched to as it is only if its files are as verified:
    // identical files are hard links across versions, so a write through current/ (or another
    // program's) changes them too (found by a fault hunt: a rollback switched to a version with a
    // file deleted and another edited).
    // Its directories too: an entry the manifest does not list goes with the staging (keepStaged).
    const { files: changedFiles, extra, notDirectories } = kept ? await this.dir.changedEntries(kept) : { files: [], extra: [], notDirectories: [] };
    // A directory replaced by a link counts as an entry not in the manifest (staging removes it).
    extra.push(...notDirectories);
    const changed = [...changedFiles, ...extra.map((path) => `${path}: ${notDirectories.includes(path) ? 'not a directory' : 'not in the manifest'}`)];
    if (changed.length > 0) {
      const what = [changedFiles.length > 0 ? `${changedFiles.length} installed file(s) changed since verified` : '', extra.length > 0 ? `${extra.length} entr(y/ies) not in the manifest` : ''].filter(Boolean).join(', ');
      this.opts.log?.(`${this.opts.name}@${target}: ${what} (${changed.slice(0, 3).join(', ')}${changed.length > 3 ? ', …' : ''}); staging it again`);
      await this.dir.returnToStaging(target);
    }
    if (!kept || changed.length > 0) {
      // Room first: other versions' staging (a round that moved on, or was killed) goes, and a
      // tree of this version left without its manifest is staged from, not fetched again.
      await this.dir.dropOtherStaging(target);
      await this.dir.reclaimUnfinished(target);
      const manifest = await this.opts.fetcher.manifest(record);
      await this.report({ phase: 'staging', error: null, bytesDone: 0, bytesTotal: record.bytes, bytesLocal: 0, bytesFetched: 0 }, true);
      const started = Date.now();
      const progress = await stageVersion({
        manifest,
        dir: this.dir,
        fetcher: this.opts.fetcher,
        limiter: this.limiter(),
        signal,
        onProgress: (p) => void this.progress(p),
      });
      this.opts.log?.(
        `staged ${this.opts.name}@${target}: ${progress.bytesTotal} bytes in ${((Date.now() - started) / 1000).toFixed(2)} s ` +
          `(${progress.bytesLocal} copied locally, ${progress.bytesFetched} from the cluster, ${progress.bytesResumed} resumed, ${progress.bytesRehashed} of them read again to verify)`,
      );
      await this.report({ phase: 'switching' }, true);
      await this.dir.install(manifest);
      const followed = await resolveChannel(this.opts.registry, this.opts.name, this.opts.channel, this.opts.datacenter);
      const now = followed?.record.version;
      if (now !== target) {
        this.opts.log?.(`${this.opts.name}@${target} installed but not switched to: ${followed ? `${followed.channel} moved to ${now}` : 'the channel is gone'} while it was staged`);
        return false;
      }
    }
    const previous = this.state.current;
    if (this.opts.onSwitch) await this.dir.setPendingHook({ version: target, previous });
    await this.dir.switchTo(target).catch(async (err: unknown) => {
      await this.dir.setPendingHook(undefined).catch(() => {}); // no switch, so no hook owed
      throw err;
    });
    this.state.current = target;
    this.switches++;
    this.guard.switched();
    this.noteBehind();
    this.opts.log?.(`switched ${this.dir.current} to ${target}${previous ? ` (was ${previous})` : ''}`);
    const hookError = await this.afterSwitch(target, previous, signal);
    await this.report({ phase: hookError ? 'error' : 'idle', error: hookError }, true);
    return true;
  }

  /**
   * What follows a switch, which stands whatever fails here: the history, the hook, then the
   * pruning of old versions (after the hook, so the service has moved off a version before it is
   * deleted). Returns the hook's failure; other failures are logged and retried by later rounds.
   * A hook ended because the agent stops stays pending (the next start runs it again) and nothing
   * is pruned: the service may not have moved off the old version yet.
   */
  private async afterSwitch(target: string, previous: string | null, signal?: AbortSignal): Promise<string | null> {
    const warn = (what: string) => (err: unknown) => void this.opts.log?.(`sync ${this.opts.name}: ${what} after the switch to ${target} failed: ${(err as Error).message}`);
    await this.dir.recordSwitch(target, previous).catch(warn('recording the switch'));
    let hookError: string | null = null;
    if (this.opts.onSwitch) {
      const hook = await runHook({
        command: this.opts.onSwitch,
        env: { ...process.env, FANOUT_RELEASE: this.opts.name, FANOUT_VERSION: target, FANOUT_PREVIOUS: previous ?? '', FANOUT_DIR: this.dir.dir },
        timeoutMs: this.opts.hookTimeoutMs ?? DEFAULT_HOOK_TIMEOUT_MS,
        graceMs: this.opts.hookGraceMs ?? HOOK_GRACE_MS,
        signal,
        // For the next start to end it if this agent is SIGKILLed; a failed write costs only that.
        onStart: (pgid) => recordRunningHook(this.dir.dir, pgid, target).catch(warn('recording the running hook')),
      });
      await forgetRunningHook(this.dir.dir).catch(warn('forgetting the ended hook'));
      if (!hook.ok) {
        hookError = `on-switch hook ${hook.message}; the switch to ${target} stands`;
        this.opts.log?.(`sync ${this.opts.name}: ${hookError}`);
      }
      if (!hook.ok && hook.reason === 'stopped') return `${hookError} (the hook runs again at the next start)`;
      await this.dir.setPendingHook(undefined).catch(warn('clearing the pending hook'));
    }
    await this.pruneOld();
    return hookError;
  }

  /**
   * Before any hook runs: a hook an earlier agent left running when it was killed (SIGKILL,
   * OOM) is ended, so that the switch it was run for, still owed, does not run it twice at once.
   */
  private async endLeftoverHook(): Promise<void> {
    const ended = await endLeftoverHook(this.dir.dir, this.opts.hookGraceMs ?? HOOK_GRACE_MS, ({ file, movedTo }) =>
      this.opts.log?.(`state file ${file} is corrupt: moved aside to ${movedTo ?? '(could not move)'}; continuing without it`),
    );
    this.leftoverHookChecked = true;
    if (ended) this.opts.log?.(`sync ${this.opts.name}: ${ended}`);
  }

  /** Deletes versions beyond `keep`; a failure is logged and the next idle round tries again. */
  private async pruneOld(): Promise<void> {
    try {
      const removed = await this.dir.prune(this.opts.keep);
      this.pruneOwed = false;
      if (removed.length > 0) this.opts.log?.(`removed old versions: ${removed.join(', ')}`);
    } catch (err) {
      this.pruneOwed = true;
      this.opts.log?.(`sync ${this.opts.name}: pruning old versions failed (tried again next round): ${(err as Error).message}`);
    }
  }

  /** Starts (or ends) the time this host lags its channel: what a stuck rollout alert watches. */
  private noteBehind(): void {
    const behind = this.state.target !== null && this.state.target !== this.state.current;
    this.behindSince = behind ? (this.behindSince ?? performance.now()) : undefined;
  }

  /** The host's download budget (--rate) for one staging or repair. */
  private limiter(): TokenBucket | undefined {
    return this.opts.rate ? new TokenBucket({ rate: this.opts.rate, burst: Math.max(1, Math.floor(this.opts.rate / 8)) }) : undefined;
  }

  private async progress(p: StageProgress): Promise<void> {
    Object.assign(this.state, { bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, bytesLocal: p.bytesLocal, bytesFetched: p.bytesFetched });
    await this.record.reportProgress();
  }

  /** Reports state to etcd; `must` makes an etcd failure an error, otherwise it is skipped. */
  private report(patch: Partial<AgentState>, must: boolean): Promise<void> {
    return this.record.report(patch, must);
  }
}
