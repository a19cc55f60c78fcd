import type { Dispatcher } from 'undici';
import { undici } from '../http/undici.js';
import { ProgressWindow, TransportError } from '../leanhttp/index.js';

type Handler = Dispatcher.DispatchHandlers;
type FloorHandlerClass = new (idleMs: number, handler: Handler) => Handler;
/** What undici's DecoratorHandler forwards to the handler it wraps (of it, what the floor needs). */
interface Forwarding {
  onConnect(abort: (err?: Error) => void): void;
  onHeaders(statusCode: number, headers: Buffer[], resume: () => void, statusText: string): boolean;
  onData(chunk: Buffer): boolean;
  onComplete(trailers: string[] | null): void;
  onError(err: Error): void;
}

/**
 * The lean client's progress floor (leanhttp/window.ts) for the undici page transport, as an
 * interceptor on its pools: each idleMs window of a body must bring WINDOW_PROGRESS_BYTES unless
 * the reader held the body. undici's own bodyTimeout restarts on every chunk: a worker sending a
 * byte every 20 s held a page read for ever. A body given up fails with the lean client's code
 * (FANOUT_IDLE_TIMEOUT), so callers read one error whatever the transport.
 */
export function progressFloor(idleMs: number): Dispatcher.DispatcherComposeInterceptor {
  return (dispatch) => (options, handler) => dispatch(options, new (floorHandlerClass())(idleMs, handler));
}

let floorHandler: FloorHandlerClass | undefined;

/** Made at first use: undici is loaded only when the undici transport is chosen (http/undici.ts). */
function floorHandlerClass(): FloorHandlerClass {
  if (floorHandler) return floorHandler;
  // undici's typings declare the decorator without its methods; it forwards every one of them.
  const Decorator = undici().DecoratorHandler as unknown as new (handler: Handler) => Forwarding;
  return (floorHandler = class FloorHandler extends Decorator {
    private abort: ((err?: Error) => void) | undefined;
    private window: ProgressWindow | undefined;

    constructor(
      private readonly idleMs: number,
      handler: Handler,
    ) {
      super(handler);
    }

    override onConnect(abort: (err?: Error) => void): void {
      this.abort = abort;
      super.onConnect(abort);
    }

    override onHeaders(statusCode: number, headers: Buffer[], resume: () => void, statusText: string): boolean {
      // 1xx heads (a worker's 102 while it fills the page) come before the body's head.
      if (statusCode < 200) return super.onHeaders(statusCode, headers, resume, statusText);
      this.window?.stop();
      const window = (this.window = new ProgressWindow(this.idleMs, (why) => this.abort?.(new TransportError('FANOUT_IDLE_TIMEOUT', why))));
      window.start();
      // The body's reader asks for more through `resume`, after its queue was full (onData's false).
      const resumed = () => {
        window.resume();
        resume();
      };
      return super.onHeaders(statusCode, headers, resumed, statusText);
    }

    override onData(chunk: Buffer): boolean {
      this.window?.arrived(chunk.length);
      const more = super.onData(chunk);
      if (!more) this.window?.pause();
      return more;
    }

    override onComplete(trailers: string[] | null): void {
      this.window?.stop();
      super.onComplete(trailers);
    }

    override onError(err: Error): void {
      this.window?.stop();
      super.onError(err);
    }
  });
}
