import type { PageSpool } from '../lib/pagestore/index.js';
import type { PageFill } from '../lib/transfer/index.js';

/** What a reader following a fill's file may send next (see FillFile.until). */
export type FollowStep =
  /** Bytes on the file up to here (more than the reader's offset). */
  | { kind: 'bytes'; end: number }
  /**
   * The file cannot be written (disk full, I/O error): the rest comes from the fill's buffer, on
   * which this reader was given a hold (release it with fill.release()).
   */
  | { kind: 'broken' };

/**
 * A fill's page written to a file as it arrives (a PageSpool), so that its waiters are sent the
 * bytes from that file by the kernel instead of each being written the bytes by JS: one copy
 * into the page cache per byte, then sendfile to every socket. Appends take what arrived since
 * the last one, one write at a time (a slow disk coalesces them). The fill's buffer is held
 * until every append is done (the appends read it).
 *
 * When the fill completes and every byte is on the file, the page service commits the spool as
 * the stored page (a rename: no second write). A fill that fails discards it; a spool that
 * cannot be written (ENOSPC) is dropped and the page is put() from the buffer as before.
 */
export class FillFile {
  private spool: PageSpool | undefined;
  private state: 'idle' | 'opening' | 'writing' | 'written' | 'broken' | 'failed' = 'idle';
  private appending = false;
  private taken = false;
  private readonly waiting = new Set<{ want: number; wake: () => void }>();
  /** Followers now (each given a hold on the buffer if the file breaks). */
  private readonly followers = new Set<Follower>();
  /** Resolves once the spool is settled by the fill's end or is known to be useless. */
  readonly ended: Promise<void>;
  private endNow!: () => void;

  /**
   * `open` makes the file; it is called at the fill's first byte, so fills queued for a slot
   * take no room in the store and make no file.
   */
  constructor(
    readonly fill: PageFill,
    private readonly open: () => Promise<PageSpool | undefined>,
  ) {
    this.ended = new Promise((resolve) => (this.endNow = resolve));
    fill.hold();
    const onProgress = () => void this.pump();
    fill.on('progress', onProgress);
    void fill.settled.then(() => {
      fill.off('progress', onProgress);
      if (!fill.done) this.discardWritten();
    });
  }

  /** Every byte of the page is on the file. */
  get complete(): boolean {
    return this.state === 'written';
  }

  /**
   * Whether a new waiter can follow this fill by the file: the file is usable so far and not yet
   * handed to the store (whose commit may close it once its followers are done).
   */
  get followable(): boolean {
    return !this.taken && (this.state === 'idle' || this.state === 'opening' || this.state === 'writing' || this.state === 'written');
  }

  /** The spool, for the page service to commit or discard once the fill is whole (see take()). */
  async take(): Promise<PageSpool | undefined> {
    await this.ended;
    this.taken = true;
    return this.state === 'written' ? this.spool : undefined;
  }

  /**
   * A reader follows the file: its descriptor stays open (through the spool's rename or an
   * eviction) until the follower is closed. Undefined if the file is not usable.
   */
  follow(): Follower | undefined {
    if (!this.followable) return undefined;
    const follower = new Follower(this);
    this.followers.add(follower);
    // The descriptor is referenced now (or as soon as the file is open): a commit or a discard
    // meanwhile must not close it under this follower.
    if (this.spool) follower.attach(this.spool);
    return follower;
  }

  /** @internal Follower.close() */
  unfollow(follower: Follower): void {
    this.followers.delete(follower);
  }

  /**
   * Waits until the file holds at least `min` bytes past `from` (or the whole page), and says up
   * to where; throws the fill's error if it failed, or the abort if `signal` fired first.
   */
  async until(from: number, min: number, signal: AbortSignal): Promise<FollowStep> {
    const length = this.fill.length;
    const want = Math.min(length, from + Math.max(1, min));
    while (true) {
      if (this.fill.error) throw this.fill.error;
      if (this.state === 'broken') return { kind: 'broken' };
      const written = this.spool?.written ?? 0;
      if (written >= want) return { kind: 'bytes', end: written };
      await this.changed(signal, want);
    }
  }

  /**
   * Resolves once the file holds `want` bytes or the fill's state changed: a follower is not woken
   * by every append of a few KiB that it would not send yet (8 waiters × every source chunk).
   */
  private changed(signal: AbortSignal, want: number): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const onAbort = () => {
        this.waiting.delete(entry);
        reject(signal.reason);
      };
      const entry = {
        want,
        wake: () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      this.waiting.add(entry);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Wakes the followers whose bytes are there, or all of them (`all`: the fill's state changed). */
  private notify(all = false): void {
    const written = this.spool?.written ?? 0;
    for (const entry of this.waiting) {
      if (!all && written < entry.want && !this.fill.error) continue;
      this.waiting.delete(entry);
      entry.wake();
    }
  }

  private opened(spool: PageSpool | undefined): void {
    if (this.state !== 'opening') return void spool?.settle(true);
    this.spool = spool;
    if (!spool) return this.end('broken');
    for (const follower of this.followers) follower.attach(spool);
    this.state = 'writing';
    void this.pump();
  }

  /** Appends what arrived since the last append, until the page is on the file or the fill fails. */
  private async pump(): Promise<void> {
    if (this.state === 'idle') {
      if (this.fill.error) return this.end('failed');
      if (this.fill.received === 0 && !this.fill.done) return;
      this.state = 'opening';
      this.open().then(
        (spool) => this.opened(spool),
        () => this.opened(undefined),
      );
      return;
    }
    if (this.appending || this.state !== 'writing') return;
    this.appending = true;
    try {
      const spool = this.spool!;
      while (this.state === 'writing') {
        if (this.fill.error) return this.end('failed');
        const arrived = this.fill.received;
        if (spool.written === this.fill.length) return this.end('written');
        if (arrived <= spool.written) return;
        await spool.append(this.fill.buffer.subarray(spool.written, arrived));
        this.notify();
      }
    } catch {
      this.end('broken');
    } finally {
      this.appending = false;
    }
  }

  /**
   * A fill that failed after its last byte reached the file (the source's version re-checked
   * after the read, a reader abandoning the fill, a peer's trailer) is never committed, so no one
   * take()s its spool: it is discarded here (temp file removed, room given back, descriptor
   * closed once its followers let go). Left alone it stayed open until GC, and on disk.
   */
  private discardWritten(): void {
    if (this.taken || this.state !== 'written') return;
    this.taken = true;
    void this.spool?.settle(true);
    // Followers hold their own reference to it; take() has nothing to give any more.
    this.spool = undefined;
  }

  private end(state: 'written' | 'broken' | 'failed'): void {
    if (this.state === 'written' || this.state === 'broken' || this.state === 'failed') return;
    this.state = state;
    // Followers switch to the buffer: each gets a hold on it now, before the fill lets it go.
    if (state === 'broken') for (const follower of this.followers) follower.holdBuffer();
    if (state !== 'written') void this.spool?.settle(true);
    this.fill.release();
    this.notify(true);
    this.endNow();
  }
}

/**
 * One reader following a fill's file: holds the file's descriptor open from its first send to
 * close(), and, if the file broke under it, a hold on the fill's buffer it continues from.
 */
export class Follower {
  private spoolRef: { fd: number; unref: () => void } | undefined;
  private holding = false;
  private closed = false;

  constructor(private readonly file: FillFile) {}

  /** @internal the file is open: keep its descriptor open until close(). */
  attach(spool: PageSpool): void {
    if (this.closed || this.spoolRef) return;
    this.spoolRef = { fd: spool.fd, unref: spool.ref() };
  }

  /** The file's descriptor (call once until() gave bytes: the file is open then). */
  fd(): number {
    if (!this.spoolRef) throw new Error('the fill file is not open');
    return this.spoolRef.fd;
  }

  until(from: number, min: number, signal: AbortSignal): Promise<FollowStep> {
    return this.file.until(from, min, signal);
  }

  /** @internal the file broke: the rest comes from the buffer, kept for this follower. */
  holdBuffer(): void {
    if (this.closed || this.holding) return;
    this.holding = true;
    this.file.fill.hold();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.file.unfollow(this);
    this.spoolRef?.unref();
    if (this.holding) this.file.fill.release();
  }
}
