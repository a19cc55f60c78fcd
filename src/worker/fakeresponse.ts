import { Writable } from 'node:stream';

/** For unit tests of response writers: no socket, the test decides when the client reads. */
/** A response whose client takes bytes only when the test says so. */
export class FakeResponse extends Writable {
  private pending: (() => void)[] = [];
  received = 0;
  headers: Record<string, unknown> | undefined;
  ended = false;

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error) => void): void {
    this.pending.push(() => {
      this.received += chunk.length;
      done();
    });
  }

  /** The client takes the oldest queued write. */
  take(): boolean {
    const next = this.pending.shift();
    next?.();
    return next !== undefined;
  }

  writeHead(_status: number, headers: Record<string, unknown>): this {
    this.headers = headers;
    return this;
  }

  addTrailers(): void {}

  override end(...args: unknown[]): this {
    this.ended = true;
    return super.end(...(args as []));
  }
}

