import { z } from 'zod';
import { wallClock, type Clock } from '../../core/clock.js';
import { FanoutError } from '../../core/errors.js';
import { isDiskFull, readJsonState, writeFileAtomic, type CorruptStateFile } from '../statefile/index.js';

/**
 * What the operator said about pages beyond LRU: pinned pages are never evicted; pages with a
 * TTL are dropped when it runs out. Both apply to page keys given explicitly and, through
 * rules on a path prefix, to pages of that path stored later. Kept in one JSON file beside the
 * page store (written atomically), so a restart keeps it; a corrupt file is moved aside and the
 * worker starts without it rather than not at all.
 */
export interface PolicyRule {
  mount: string;
  /** Path inside the mount; "" = the whole mount. */
  prefix: string;
  pin?: boolean;
  ttlMs?: number;
}

const policyFileSchema = z.object({
  pins: z.array(z.string()).default([]),
  expiries: z.record(z.string(), z.number()).default({}),
  rules: z
    .array(z.object({ mount: z.string(), prefix: z.string(), pin: z.boolean().optional(), ttlMs: z.number().optional() }))
    .default([]),
});

type PolicyFile = z.infer<typeof policyFileSchema>;

export interface PagePolicyEvents {
  /** policy.json could not be parsed: it was moved aside and the worker runs without it. */
  onCorrupt?(report: CorruptStateFile): void;
}

type RuleTarget = { mount: string; prefix: string };

/** What one change touched, as it was before: restored if the change cannot be saved. */
interface Undo {
  pins: Map<string, boolean>;
  expiries: Map<string, number | undefined>;
  rule?: { target: RuleTarget; before: PolicyRule | undefined };
}

export class PagePolicy {
  private pins = new Set<string>();
  private expiries = new Map<string, number>();
  private rules: PolicyRule[] = [];
  private saving: Promise<void> = Promise.resolve();
  /** The write queued behind the one running, not started yet: changes made meanwhile join it. */
  private waiting: Promise<void> | undefined;

  constructor(
    private readonly file: string,
    private readonly clock: Clock = wallClock,
    private readonly events: PagePolicyEvents = {},
  ) {}

  async load(): Promise<void> {
    const data = await readJsonState(this.file, (value) => policyFileSchema.parse(value), {
      now: () => this.clock.now(),
      onCorrupt: (report) => this.events.onCorrupt?.(report),
    });
    if (!data) return;
    this.pins = new Set(data.pins);
    this.expiries = new Map(Object.entries(data.expiries));
    this.rules = data.rules;
  }

  isPinned(key: string): boolean {
    return this.pins.has(key);
  }

  pin(keys: string[], rule?: RuleTarget): Promise<void> {
    return this.change(keys, rule, () => {
      for (const key of keys) this.pins.add(key);
      if (rule) this.setRule({ ...rule, pin: true });
    });
  }

  unpin(keys: string[], rule?: RuleTarget): Promise<void> {
    return this.change(keys, rule, () => {
      for (const key of keys) this.pins.delete(key);
      if (rule) this.setRule({ ...rule, pin: false });
    });
  }

  /** Pages expire `ttlMs` from now (0 clears the TTL). */
  setTtl(keys: string[], ttlMs: number, rule?: RuleTarget): Promise<void> {
    return this.change(keys, rule, () => {
      const until = this.clock.now() + ttlMs;
      for (const key of keys) {
        if (ttlMs > 0) this.expiries.set(key, until);
        else this.expiries.delete(key);
      }
      if (rule) this.setRule({ ...rule, ttlMs: ttlMs > 0 ? ttlMs : undefined });
    });
  }

  /** Forgets keys (their pages were freed) and rules on exactly this prefix. */
  forget(keys: string[], rule?: RuleTarget): Promise<void> {
    return this.change(keys, rule, () => {
      for (const key of keys) {
        this.pins.delete(key);
        this.expiries.delete(key);
      }
      if (rule) this.rules = this.rules.filter((r) => r.mount !== rule.mount || r.prefix !== rule.prefix);
    });
  }

  /**
   * Applies path rules to a page about to be stored, and saves them before it is: the caller
   * stores the page only once this resolves, and not at all if it throws (the change is undone,
   * DISK_FULL or INTERNAL as for pin()). Rules apply when a page is stored, and a restart does not
   * know the paths of stored pages: a pin or TTL saved after the page's file (as before) was lost
   * by a worker killed in between, and the page stayed unpinned for good (3 of 15 pages of a
   * pinned file after a kill mid-read, found by a fault hunt).
   */
  async onStoring(key: string, mount: string, path: string): Promise<void> {
    if (this.rules.length === 0) return; // the common case, on every fill: nothing to match
    const matching = this.rules.filter((rule) => rule.mount === mount && covers(rule.prefix, path));
    const pin = matching.some((rule) => rule.pin) && !this.pins.has(key);
    const ttlMs = matching.filter((rule) => rule.ttlMs).at(-1)?.ttlMs; // the last rule's, as rules are applied in turn
    if (!pin && !ttlMs) return; // no write for pages no rule covers
    await this.change([key], undefined, () => {
      if (pin) this.pins.add(key);
      if (ttlMs) this.expiries.set(key, this.clock.now() + ttlMs);
    });
  }

  /** Keys whose TTL has run out. */
  expired(): string[] {
    const now = this.clock.now();
    return [...this.expiries].filter(([, until]) => until <= now).map(([key]) => key);
  }

  summary(): { pinned: number; withTtl: number; rules: PolicyRule[] } {
    return { pinned: this.pins.size, withTtl: this.expiries.size, rules: this.rules.map((r) => ({ ...r })) };
  }

  /**
   * Applies a change and saves it. If the file cannot be written (disk full), the change is
   * undone in memory, so the caller's error means "not done" rather than "done until restart".
   */
  private async change(keys: string[], rule: RuleTarget | undefined, apply: () => void): Promise<void> {
    const undo: Undo = { pins: new Map(), expiries: new Map() };
    for (const key of keys) {
      undo.pins.set(key, this.pins.has(key));
      undo.expiries.set(key, this.expiries.get(key));
    }
    if (rule) undo.rule = { target: rule, before: this.findRule(rule) };
    apply();
    try {
      await this.save();
    } catch (err) {
      this.revert(undo);
      // The errno code, not the message: messages carry server paths, and this reaches clients.
      const code = (err as NodeJS.ErrnoException).code ?? 'unknown error';
      if (isDiskFull(err)) throw new FanoutError('DISK_FULL', `the worker's disk is full (${code}): the page policy could not be saved, the change was not applied`, { cause: err });
      throw new FanoutError('INTERNAL', `the page policy could not be saved (${code}): the change was not applied`, { cause: err });
    }
  }

  private revert(undo: Undo): void {
    for (const [key, pinned] of undo.pins) {
      if (pinned) this.pins.add(key);
      else this.pins.delete(key);
    }
    for (const [key, until] of undo.expiries) {
      if (until === undefined) this.expiries.delete(key);
      else this.expiries.set(key, until);
    }
    if (undo.rule) {
      const { target, before } = undo.rule;
      this.rules = this.rules.filter((r) => r.mount !== target.mount || r.prefix !== target.prefix);
      if (before) this.rules.push(before);
    }
  }

  private findRule(target: RuleTarget): PolicyRule | undefined {
    const found = this.rules.find((r) => r.mount === target.mount && r.prefix === target.prefix);
    return found && { ...found };
  }

  private setRule(rule: PolicyRule): void {
    const existing = this.rules.find((r) => r.mount === rule.mount && r.prefix === rule.prefix);
    const merged = { ...existing, ...rule };
    if ('ttlMs' in rule && rule.ttlMs === undefined) delete merged.ttlMs;
    this.rules = this.rules.filter((r) => r !== existing);
    if (merged.pin || merged.ttlMs) this.rules.push(merged);
  }

  /**
   * Writes are chained, and each writes the state as it is when its turn comes: the file ends
   * with the latest state, and a write that failed is made good by the next one. A change made
   * while a write waits for its turn joins that write (pages filled at once, each waiting for its
   * pin to be saved before it is stored, share one write instead of queueing one each).
   */
  private save(): Promise<void> {
    if (this.waiting) return this.waiting;
    const next = this.saving.then(() => {
      this.waiting = undefined;
      const data: PolicyFile = { pins: [...this.pins], expiries: Object.fromEntries(this.expiries), rules: this.rules };
      return writeFileAtomic(this.file, JSON.stringify(data));
    });
    this.waiting = next;
    this.saving = next.catch(() => {});
    return next;
  }
}

function covers(prefix: string, path: string): boolean {
  return prefix === '' || path === prefix || path.startsWith(prefix.endsWith('/') ? prefix : `${prefix}/`);
}
