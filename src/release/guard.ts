import { FanoutError } from '../core/errors.js';
import { checkInstalled, describeDamage } from './damage.js';
import type { ReleaseFetcher } from './fetch.js';
import type { ReleaseDir } from './install.js';
import type { Manifest } from './manifest.js';
import type { AgentState, ReleaseRegistry } from './registry.js';
import { finishRepair, repairCurrent } from './repair.js';
import type { StageProgress } from './stage.js';

/** What the guard uses of its agent: the directory, the cluster, and how the agent reports and ends a switch. */
export interface GuardDeps {
  name: string;
  dir: ReleaseDir;
  registry: ReleaseRegistry;
  fetcher: ReleaseFetcher;
  /** Damaged files are fetched again (default); false only reports them (`--no-repair`). */
  repair: boolean;
  /** An `--on-switch` hook is set: a repair owes it, as a switch does. */
  hook: boolean;
  /** A host's download budget for the files a repair fetches. */
  limiter(): { take(bytes: number, signal?: AbortSignal): Promise<void> } | undefined;
  report(patch: Partial<AgentState>, must: boolean): Promise<void>;
  progress(p: StageProgress): Promise<void>;
  /** The history, the hook and the prune after `current` moved (SyncAgent.afterSwitch); returns the hook's failure. */
  afterSwitch(version: string, previous: string, signal?: AbortSignal): Promise<string | null>;
  log?: (line: string) => void;
}

/** What a round reports of the current version: `failed` when damage is left in place. */
export interface GuardVerdict {
  error: string | null;
  failed: boolean;
}

/**
 * The sync agent's watch over the version it serves: each round the current version's files are
 * checked against their stamps (damage.ts) and damaged ones repaired without readers of
 * `current` ever seeing a partial tree (repair.ts). Before, damage while a host was idle (a file
 * deleted, truncated, edited through `current/`) was neither seen nor mended (found by a fault hunt).
 */
export class CurrentGuard {
  /** Files of the current version found damaged (each counted once per version until repaired). */
  damagedFiles = 0;
  /** Repairs completed. */
  repairs = 0;
  /** Damaged paths already counted (a repair that fails is tried again each round). */
  private readonly counted = new Set<string>();
  /** What the last repair found: reported until the next switch, so that it is seen. */
  private repairedNote: string | null = null;
  /** Damage the last check found and left in place (`--no-repair`), described; null when there is none. */
  unrepaired: string | null = null;
  /** The current version's manifest, read once: a version's manifest never changes. */
  private manifest: Manifest | undefined;

  constructor(private readonly deps: GuardDeps) {}

  /** At a round's start: a repair cut short (killed) may have left `current` on its copy; moved back. */
  async finishCutRepair(current: string | null): Promise<void> {
    const manifest = current ? await this.manifestOf(current) : undefined;
    if (manifest) await finishRepair(this.deps.dir, manifest);
  }

  /** `current` moved to another version: what was found of the last one is no longer news. */
  switched(): void {
    this.repairedNote = null;
    this.unrepaired = null;
    this.counted.clear();
  }

  /** Checks the current version, repairs it unless told not to. A failed repair throws, as a failed staging. */
  async check(version: string, signal?: AbortSignal): Promise<GuardVerdict> {
    const { dir, log } = this.deps;
    this.unrepaired = null;
    const manifest = await this.manifestOf(version);
    if (!manifest) return { error: this.repairedNote, failed: false };
    const { damaged } = await checkInstalled(dir, manifest);
    if (damaged.length === 0) {
      this.counted.clear();
      return { error: this.repairedNote, failed: false };
    }
    const fresh = damaged.filter((d) => !this.counted.has(d.path));
    fresh.forEach((d) => this.counted.add(d.path));
    this.damagedFiles += fresh.length;
    const what = describeDamage(version, damaged);
    log?.(`${this.deps.name}: ${what} in ${dir.current}; ${this.deps.repair ? 'repairing' : 'not repaired (--no-repair)'}`);
    if (!this.deps.repair) {
      this.unrepaired = `${what} in ${dir.current}; not repaired (--no-repair)`;
      return { error: `RELEASE_DAMAGED: ${what}; not repaired (--no-repair)`, failed: true };
    }
    const progress = await this.repair(version, what, signal);
    this.repairs++;
    this.counted.clear();
    this.repairedNote = `RELEASE_DAMAGED: ${what}; repaired at ${new Date().toISOString()}`;
    log?.(`repaired ${this.deps.name}@${version}: ${progress.bytesFetched} bytes fetched, ${progress.bytesLocal} copied locally; ${dir.current} switched to the repaired tree`);
    // The service still holds the damaged files open: the hook has it reopen them.
    const hookError = await this.deps.afterSwitch(version, version, signal);
    return { error: hookError ?? this.repairedNote, failed: hookError !== null };
  }

  private async repair(version: string, what: string, signal?: AbortSignal): Promise<StageProgress> {
    const { dir, registry, fetcher } = this.deps;
    await this.deps.report({ phase: 'staging', error: `RELEASE_DAMAGED: ${what}; repairing`, bytesDone: 0, bytesTotal: 0, bytesLocal: 0, bytesFetched: 0 }, true);
    const record = await registry.getVersion(this.deps.name, version);
    // Written before `current` moves, as for a switch: a kill before the hook ran has the next round run it.
    if (this.deps.hook) await dir.setPendingHook({ version, previous: version });
    return repairCurrent({
      dir,
      manifest: await fetcher.manifest(record),
      fetcher,
      limiter: this.deps.limiter(),
      signal,
      onProgress: (p) => void this.deps.progress(p),
    }).catch((err: unknown) => {
      // The hook stays owed: the repair may have failed after `current` moved to its copy.
      throw err instanceof FanoutError ? new FanoutError(err.code, `repairing ${what}: ${err.message}`, { cause: err }) : err;
    });
  }

  private async manifestOf(version: string): Promise<Manifest | undefined> {
    if (this.manifest?.version !== version) this.manifest = await this.deps.dir.manifestOf(version);
    return this.manifest;
  }
}
