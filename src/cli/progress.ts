import { createRequire } from 'node:module';
import type { SingleBar } from 'cli-progress';

/**
 * cli-progress and the packages it loads, required when a bar is drawn: a `fanout cp` whose
 * stderr is not a terminal (scripts, serving hosts) never draws one, and loading them cost it
 * ≈ 5 ms of its start (20 files).
 */
const cliProgress = (): typeof import('cli-progress') => createRequire(import.meta.url)('cli-progress') as typeof import('cli-progress');

/**
 * The progress of a long copy on a terminal: "[████░░░░] 42% | 1.25/3.00 GiB | 312.4 MiB/s | ETA 0:06",
 * then a final line once it is done. Both sizes use the unit of the total, so the two numbers read
 * against each other ("512 KiB/2.0 GiB" does not). The rate is measured over the last few seconds,
 * so the ETA follows a copy that speeds up as pages come out of the cache.
 */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** The binary unit a size is best read in: the largest whose value is at least 1. */
function unitFor(bytes: number): number {
  let unit = 0;
  while (bytes >= 1024 ** (unit + 1) && unit < UNITS.length - 1) unit++;
  return unit;
}

function inUnit(bytes: number, unit: number): string {
  return unit === 0 ? String(Math.round(bytes)) : (bytes / 1024 ** unit).toFixed(2);
}

/** "1.25/3.00 GiB": done and total in the total's unit. */
export function formatProgressSizes(done: number, total: number): string {
  const unit = unitFor(total);
  return `${inUnit(done, unit)}/${inUnit(total, unit)} ${UNITS[unit]}`;
}

/** "3.00 GiB", "512 B". */
export function formatSize(bytes: number): string {
  const unit = unitFor(bytes);
  return `${inUnit(bytes, unit)} ${UNITS[unit]}`;
}

/** "312.4 MiB/s"; "--" before anything was measured. */
export function formatRate(bytesPerSecond: number | undefined): string {
  if (bytesPerSecond === undefined || !Number.isFinite(bytesPerSecond)) return '-- B/s';
  const unit = unitFor(bytesPerSecond);
  return `${unit === 0 ? Math.round(bytesPerSecond) : (bytesPerSecond / 1024 ** unit).toFixed(1)} ${UNITS[unit]}/s`;
}

/** "0:06", "1:02:03"; "--:--" when unknown. */
export function formatEta(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.ceil(seconds);
  const [h, m, sec] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  const two = (n: number) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
}

/** "2.71 s", "1:02:03" past a minute. */
export function formatDuration(seconds: number): string {
  return seconds < 60 ? `${seconds.toFixed(2)} s` : formatEta(seconds);
}

/** Bytes per second over a sliding window of samples (time from an injected clock). */
export class RateMeter {
  private readonly samples: { at: number; bytes: number }[] = [];

  constructor(
    private readonly now: () => number,
    private readonly windowMs = 3000,
  ) {
    this.samples.push({ at: now(), bytes: 0 });
  }

  /** Records that `bytes` have been done in all. */
  record(bytes: number): void {
    const at = this.now();
    this.samples.push({ at, bytes });
    // Keep one sample older than the window, so the rate always spans at least the window.
    while (this.samples.length > 2 && this.samples[1]!.at <= at - this.windowMs) this.samples.shift();
  }

  /** The recent rate, or undefined until time has passed. */
  rate(): number | undefined {
    const first = this.samples[0]!;
    const last = this.samples[this.samples.length - 1]!;
    const ms = last.at - first.at;
    return ms > 0 ? ((last.bytes - first.bytes) * 1000) / ms : undefined;
  }
}

/** Seconds left at `rate` bytes/s, or undefined when the rate is not known yet. */
export function etaSeconds(done: number, total: number, rate: number | undefined): number | undefined {
  if (done >= total) return 0;
  return rate && rate > 0 ? (total - done) / rate : undefined;
}

/** The last line of a copy: what, how much, how long, how fast. */
export function doneLine(bytes: number, seconds: number, dest: string): string {
  const rate = seconds > 0 ? bytes / seconds : undefined;
  return `done: copied ${formatSize(bytes)} to ${dest} in ${formatDuration(seconds)} (${formatRate(rate)})`;
}

/** A progress bar on a terminal stream (stderr), redrawn at most 10 times a second (cp, load). */
export class CopyProgress {
  private readonly bar: SingleBar;
  private readonly meter: RateMeter;

  /** `suffix`: more of the line after the ETA, e.g. " | {pages} pages", filled by update()'s `extra`. */
  constructor(
    private readonly total: number,
    stream: NodeJS.WriteStream,
    options: { now?: () => number; suffix?: string; extra?: Record<string, string | number> } = {},
  ) {
    this.meter = new RateMeter(options.now ?? Date.now);
    const { Presets, SingleBar } = cliProgress();
    this.bar = new SingleBar(
      { format: ` {bar} {percentage}% | {sizes} | {rate} | ETA {remaining}${options.suffix ?? ''}`, hideCursor: true, stream, fps: 10 },
      Presets.shades_classic,
    );
    // An empty file is done at once: cli-progress would show NaN% for 0/0.
    this.bar.start(Math.max(total, 1), 0, { ...this.payload(0), ...options.extra });
  }

  update(done: number, extra: Record<string, string | number> = {}): void {
    this.meter.record(done);
    this.bar.update(Math.min(done, Math.max(this.total, 1)), { ...this.payload(done), ...extra });
  }

  /** Draws the full bar one last time and leaves the line. */
  finish(done: number, extra: Record<string, string | number> = {}): void {
    this.bar.update(Math.max(this.total, 1), { ...this.payload(done), ...extra, remaining: 'done' });
    this.bar.stop();
  }

  /** Leaves the line where it was (a failed copy). */
  abort(): void {
    this.bar.stop();
  }

  private payload(done: number): { sizes: string; rate: string; remaining: string } {
    const rate = this.meter.rate();
    return { sizes: formatProgressSizes(done, this.total), rate: formatRate(rate), remaining: formatEta(etaSeconds(done, this.total, rate)) };
  }
}
