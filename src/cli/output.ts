import { FanoutError } from '../core/errors.js';
import type { HedgeSetting } from '../lib/cluster/index.js';

/** How commands print: JSON for machines (--json), aligned text for people. */
export interface GlobalOptions {
  endpoint?: string;
  /** CA bundle (PEM file) for https:// workers; FANOUT_CA. */
  ca?: string;
  json?: boolean;
  /** --hedge, on commands that read pages (cat, cp, mount). */
  hedge?: HedgeSetting;
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export function printTable(rows: string[][]): void {
  if (rows.length === 0) return;
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((r) => (r[col] ?? '').length)));
  for (const row of rows) {
    process.stdout.write(row.map((cell, col) => (col === row.length - 1 ? cell : cell.padEnd(widths[col]!))).join('  ') + '\n');
  }
}

/** Prints an error the way the user asked for and returns the process exit code. */
export function reportError(err: unknown, json: boolean): number {
  const error = err instanceof FanoutError ? err : undefined;
  const code = error?.code ?? (err as { code?: string })?.code ?? 'INTERNAL';
  const message = (err as Error)?.message ?? String(err);
  if (json) process.stdout.write(JSON.stringify({ error: { code, message } }) + '\n');
  else process.stderr.write(`fanout: ${code}: ${message}\n`);
  return 1;
}

/** "1 member", "3 members": counts in sentences read as English. */
export function plural(count: number, noun: string): string {
  return `${count} ${count === 1 ? noun : `${noun}s`}`;
}

/**
 * The one form every --json answer names files and directories by: /MOUNT/PATH, no trailing
 * slash ("/data/nested/a.txt", "/data/nested", "/data"), the form every command takes as input.
 */
export function fanoutPath(mount: string, path: string): string {
  return path ? `/${mount}/${path.replace(/\/+$/, '')}` : `/${mount}`;
}
