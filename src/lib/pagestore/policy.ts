import { readFile, rename, writeFile } from 'node:fs/promises';
import { systemClock, type Clock } from '../../core/clock.js';

/**
 * What the operator said about pages beyond LRU: pinned pages are never evicted; pages with a
 * TTL are dropped when it runs out. Both apply to page keys given explicitly and, through
 * rules on a path prefix, to pages of that path stored later. Kept in one JSON file beside the
 * page store (temp + rename), so a restart keeps it.
 */
export interface PolicyRule {
  mount: string;
  /** Path inside the mount; "" = the whole mount. */
  prefix: string;
  pin?: boolean;
  ttlMs?: number;
}

interface PolicyFile {
  pins: string[];
  expiries: Record<string, number>;
  rules: PolicyRule[];
}

export class PagePolicy {
  private pins = new Set<string>();
  private expiries = new Map<string, number>();
  private rules: PolicyRule[] = [];
  private saving: Promise<void> = Promise.resolve();

  constructor(
    private readonly file: string,
    private readonly clock: Clock = systemClock,
  ) {}

  async load(): Promise<void> {
    try {
      const data = JSON.parse(await readFile(this.file, 'utf8')) as PolicyFile;
      this.pins = new Set(data.pins ?? []);
      this.expiries = new Map(Object.entries(data.expiries ?? {}));
      this.rules = data.rules ?? [];
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  isPinned(key: string): boolean {
    return this.pins.has(key);
  }

  pin(keys: string[], rule?: { mount: string; prefix: string }): Promise<void> {
    for (const key of keys) this.pins.add(key);
    if (rule) this.setRule({ ...rule, pin: true });
    return this.save();
  }

  unpin(keys: string[], rule?: { mount: string; prefix: string }): Promise<void> {
    for (const key of keys) this.pins.delete(key);
    if (rule) this.setRule({ ...rule, pin: false });
    return this.save();
  }

  /** Pages expire `ttlMs` from now (0 clears the TTL). */
  setTtl(keys: string[], ttlMs: number, rule?: { mount: string; prefix: string }): Promise<void> {
    const until = this.clock.now() + ttlMs;
    for (const key of keys) {
      if (ttlMs > 0) this.expiries.set(key, until);
      else this.expiries.delete(key);
    }
    if (rule) this.setRule({ ...rule, ttlMs: ttlMs > 0 ? ttlMs : undefined });
    return this.save();
  }

  /** Forgets keys (their pages were freed) and rules on exactly this prefix. */
  forget(keys: string[], rule?: { mount: string; prefix: string }): Promise<void> {
    for (const key of keys) {
      this.pins.delete(key);
      this.expiries.delete(key);
    }
    if (rule) this.rules = this.rules.filter((r) => r.mount !== rule.mount || r.prefix !== rule.prefix);
    return this.save();
  }

  /** Applies path rules to a page just stored. */
  onStored(key: string, mount: string, path: string): void {
    let changed = false;
    for (const rule of this.rules) {
      if (rule.mount !== mount || !covers(rule.prefix, path)) continue;
      if (rule.pin && !this.pins.has(key)) {
        this.pins.add(key);
        changed = true;
      }
      if (rule.ttlMs) {
        this.expiries.set(key, this.clock.now() + rule.ttlMs);
        changed = true;
      }
    }
    if (changed) void this.save().catch(() => {});
  }

  /** Keys whose TTL has run out. */
  expired(): string[] {
    const now = this.clock.now();
    return [...this.expiries].filter(([, until]) => until <= now).map(([key]) => key);
  }

  summary(): { pinned: number; withTtl: number; rules: PolicyRule[] } {
    return { pinned: this.pins.size, withTtl: this.expiries.size, rules: this.rules.map((r) => ({ ...r })) };
  }

  private setRule(rule: PolicyRule): void {
    const existing = this.rules.find((r) => r.mount === rule.mount && r.prefix === rule.prefix);
    const merged = { ...existing, ...rule };
    if ('ttlMs' in rule && rule.ttlMs === undefined) delete merged.ttlMs;
    this.rules = this.rules.filter((r) => r !== existing);
    if (merged.pin || merged.ttlMs) this.rules.push(merged);
  }

  /** Writes are chained: the file always ends with the latest state. */
  private save(): Promise<void> {
    const data: PolicyFile = { pins: [...this.pins], expiries: Object.fromEntries(this.expiries), rules: this.rules };
    this.saving = this.saving.then(async () => {
      const tmp = `${this.file}.tmp`;
      await writeFile(tmp, JSON.stringify(data));
      await rename(tmp, this.file);
    });
    return this.saving;
  }
}

function covers(prefix: string, path: string): boolean {
  return prefix === '' || path === prefix || path.startsWith(prefix.endsWith('/') ? prefix : `${prefix}/`);
}
