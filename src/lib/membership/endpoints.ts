import { channel } from 'node:diagnostics_channel';
import { debuglog } from 'node:util';
import { wallClock, type Clock } from '../../core/clock.js';

/**
 * Published when an etcd endpoint gave no answer within a request's deadline (a hung or
 * SIGSTOPped member: TCP accepted, nothing back): `{ endpoint, coolDownMs }`. Each one is a
 * request that waited out its whole deadline.
 */
export const noAnswerChannel = channel('fanout:etcd:no-answer');

export interface NoAnswerMessage {
  endpoint: string;
  /** How long the endpoint is now asked only when no other answers. */
  coolDownMs: number;
}

/**
 * `NODE_DEBUG=fanout`: what a command learned about its etcd endpoints, on stderr (as undici's
 * `NODE_DEBUG=undici`). A command that took seconds against a healthy-looking etcd names the member
 * it waited on here.
 */
export const debugEtcd = debuglog('fanout');

/** First cool-down of an endpoint that gave no answer; doubled at each further one, up to the most. */
export const FIRST_COOL_DOWN_MS = 30_000;
export const MOST_COOL_DOWN_MS = 240_000;

/** An EndpointPreference's state by endpoint index: kept between processes (lib/membership/endpointstate.ts). */
export interface SavedPreference {
  preferred?: number;
  /** Wall-clock (Date.now) end of each endpoint's last cool-down, ended or not; 0: none. */
  coolUntil: number[];
  /** Silences in a row of each endpoint, which the next cool-down doubles from. */
  silences: number[];
}

/**
 * Which etcd endpoint a client asks, shared by the gRPC client (membership, watches) and the JSON
 * one (release index). The one that answered last is asked first, so a dead endpoint costs one
 * failure, not one per request. One that gave no answer within the deadline also cools down
 * (30 s, then 60, 120, 240 while it stays silent): until then it is asked only after every other
 * endpoint, so a later failure of the preferred endpoint moves on to one that is likely to answer
 * instead of paying the hung one's deadline again; it is still asked when no other answers.
 * A fast failure (refused, reset) moves on without a cool-down: asking it again costs nothing.
 * A process keeps one per endpoint list (sharedEndpointPreference), and `onChange` is told when a
 * cool-down starts or ends or another endpoint answered, so that the next process starts from it
 * (endpointstate.ts): rare events, never one per request.
 */
export class EndpointPreference {
  private preferred = 0;
  /** The endpoint that answered last (or the saved preferred one): `preferred` may be a guess since. */
  private lastAnswered = 0;
  private readonly coolUntil: number[];
  private readonly silences: number[];
  private readonly onChange: (() => void) | undefined;

  constructor(
    private readonly endpoints: readonly string[],
    // Wall time: cool-down ends are saved for the next process (endpointstate.ts, bounded there).
    private readonly clock: Clock = wallClock,
    options: { saved?: SavedPreference; onChange?: () => void } = {},
  ) {
    const { saved } = options;
    this.coolUntil = endpoints.map((_, i) => saved?.coolUntil[i] ?? 0);
    this.silences = endpoints.map((_, i) => saved?.silences[i] ?? 0);
    if (saved?.preferred !== undefined && saved.preferred < endpoints.length) this.preferred = this.lastAnswered = saved.preferred;
    this.onChange = options.onChange;
  }

  /** The endpoint the next request or stream goes to (index into the configured endpoints). */
  get current(): number {
    return this.attempts()[0]!;
  }

  /**
   * One round of endpoints for a request, each once: the preferred one, then the others in the
   * configured order, those cooling down last (the soonest to end its cool-down first).
   */
  attempts(): number[] {
    const now = this.clock.now();
    const round = this.endpoints.map((_, i) => (this.preferred + i) % this.endpoints.length);
    const ready = round.filter((i) => this.coolUntil[i]! <= now);
    const cooling = round.filter((i) => this.coolUntil[i]! > now).sort((a, b) => this.coolUntil[a]! - this.coolUntil[b]!);
    return [...ready, ...cooling];
  }

  /** Endpoint `index` answered: it is asked first from now on, and its cool-down is over. */
  answered(index: number): void {
    // Silences ended by this answer are news too: the file would otherwise keep counting them.
    const changed = index !== this.lastAnswered || this.coolUntil[index]! > this.clock.now() || this.silences[index]! > 0;
    this.preferred = index;
    this.lastAnswered = index;
    this.coolUntil[index] = 0;
    this.silences[index] = 0;
    if (changed) this.onChange?.();
  }

  /**
   * A request or stream on endpoint `index` failed; `noAnswer`: by its deadline. If it was the
   * preferred endpoint, the next in `attempts()` is. A failure on an endpoint already left changes
   * no preference (calls in flight fail one after another), but a silence still cools it down.
   */
  failed(index: number, noAnswer: boolean): void {
    if (noAnswer) this.coolDown(index);
    if (index === this.preferred) this.preferred = this.attempts().filter((i) => i !== index)[0] ?? index;
    // A move away on a fast failure is a guess until the next endpoint answers (then answered() says).
    if (noAnswer) this.onChange?.();
  }

  /**
   * What a later process would want to know: the preferred endpoint, and each endpoint's last
   * cool-down (wall-clock end, past or not) with its silences in a row. An ended cool-down is
   * given too: the file keeps it a while (endpointstate.ts), so a member still silent when a later
   * command asks it cools down for longer, as it would have in this process.
   */
  saved(): SavedPreference {
    return { preferred: this.preferred, coolUntil: [...this.coolUntil], silences: [...this.silences] };
  }

  private coolDown(index: number): void {
    const coolDownMs = Math.min(FIRST_COOL_DOWN_MS * 2 ** this.silences[index]!, MOST_COOL_DOWN_MS);
    this.silences[index]! += 1;
    this.coolUntil[index] = this.clock.now() + coolDownMs;
    debugEtcd('etcd %s gave no answer within the deadline: asked last for %d s', this.endpoints[index], coolDownMs / 1000);
    if (noAnswerChannel.hasSubscribers) noAnswerChannel.publish({ endpoint: this.endpoints[index]!, coolDownMs } satisfies NoAnswerMessage);
  }
}
