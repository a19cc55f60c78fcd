import type { Clock } from '../../core/clock.js';

/**
 * The membership loop's wait between rounds, which an event can cut short (a watch broke, our
 * record was deleted, stop). A wake-up that comes while the loop is not waiting is kept for
 * its next wait, so none is lost between deciding to wait and waiting.
 */
export class WakeablePause {
  private pausing: AbortController | undefined;
  private wakeRequested = false;

  constructor(private readonly clock: Clock) {}

  /** Waits `ms`, or less if woken. */
  async pause(ms: number): Promise<void> {
    if (this.wakeRequested) {
      this.wakeRequested = false;
      return;
    }
    const controller = new AbortController();
    this.pausing = controller;
    const woken = new Promise<void>((resolve) => controller.signal.addEventListener('abort', () => resolve(), { once: true }));
    // The race also covers clocks whose sleep ignores the signal (ManualClock).
    await Promise.race([this.clock.sleep(ms, controller.signal).catch(() => undefined), woken]);
    this.pausing = undefined;
    this.wakeRequested = false;
  }

  wakeUp(): void {
    if (this.pausing) this.pausing.abort();
    else this.wakeRequested = true;
  }
}
