/**
 * A lean HTTP/1.1 response parser for one request at a time (no pipelining). It exists for the
 * page transport: undici's parser copies every body byte into WASM memory and then into a new
 * Buffer, which was the largest single CPU cost of a client. Here body bytes are never copied:
 * each body chunk handed on is a view of the buffer the socket read into. Only the head and
 * chunk-size lines are copied (small, bounded).
 *
 * Fed with execute(chunk) as the socket reads and with end() at EOF. Throws ResponseParseError
 * for anything malformed; the connection is then not to be reused.
 */

export interface ResponseHead {
  statusCode: number;
  /** Lower-cased names; a repeated header's values joined with ", " (set-cookie is never sent to us). */
  headers: Record<string, string>;
  /** The server keeps the connection open after this response. */
  keepAlive: boolean;
}

export interface ParserEvents {
  onHead(head: ResponseHead): void;
  /** An informational (1xx) head before the real one: 102 is a worker saying the page is being filled. */
  onInformational?(statusCode: number): void;
  /** A view of the socket's buffer; valid as long as the caller keeps it (nothing reuses it). */
  onBody(chunk: Buffer): void;
  /** The response ended; `trailers` holds the chunked trailers (empty otherwise). */
  onComplete(trailers: Record<string, string>): void;
}

export class ResponseParseError extends Error {
  readonly code = 'FANOUT_HTTP_PARSE';

  /** `cut`: the connection ended before the response did (a truncated body, not a malformed one). */
  constructor(
    message: string,
    readonly cut = false,
  ) {
    super(message);
  }
}

/** Status line, headers and trailers together: as undici's default, a peer cannot make us hold more. */
export const MAX_HEAD_BYTES = 16 * 1024;
/** A chunk-size line with its extensions. */
const MAX_CHUNK_LINE = 1024;
/** 13 hex digits reach 2^52: more would not be a safe integer (and no page is that big). */
const MAX_CHUNK_DIGITS = 13;

const enum State {
  Head,
  Length,
  UntilClose,
  ChunkLine,
  ChunkData,
  ChunkDataEnd,
  Trailers,
  Done,
}

const CRLF = Buffer.from('\r\n');
const CRLFCRLF = Buffer.from('\r\n\r\n');

export class ResponseParser {
  private state = State.Head;
  /** Bytes of a head, chunk line or trailer block not yet complete (a few KiB at most). */
  private pending: Buffer | undefined;
  private remaining = 0;
  private keepAlive = false;
  private sawBytes = false;
  /** Bytes that arrived after the response ended: the connection cannot be trusted again. */
  extraBytes = 0;

  constructor(private readonly events: ParserEvents) {}

  get done(): boolean {
    return this.state === State.Done;
  }

  /** Whether any byte of a response arrived (a reused connection closed before that may be retried). */
  get started(): boolean {
    return this.sawBytes;
  }

  execute(chunk: Buffer): void {
    if (chunk.length > 0) this.sawBytes = true;
    let at = 0;
    while (at < chunk.length) {
      switch (this.state) {
        case State.Head:
          at = this.head(chunk, at);
          break;
        case State.Length: {
          const take = Math.min(this.remaining, chunk.length - at);
          this.remaining -= take;
          this.events.onBody(at === 0 && take === chunk.length ? chunk : chunk.subarray(at, at + take));
          at += take;
          if (this.remaining === 0) this.complete({});
          break;
        }
        case State.UntilClose:
          this.events.onBody(at === 0 ? chunk : chunk.subarray(at));
          at = chunk.length;
          break;
        case State.ChunkLine:
          at = this.chunkLine(chunk, at);
          break;
        case State.ChunkData: {
          const take = Math.min(this.remaining, chunk.length - at);
          this.remaining -= take;
          this.events.onBody(at === 0 && take === chunk.length ? chunk : chunk.subarray(at, at + take));
          at += take;
          if (this.remaining === 0) this.state = State.ChunkDataEnd;
          break;
        }
        case State.ChunkDataEnd:
          at = this.chunkDataEnd(chunk, at);
          break;
        case State.Trailers:
          at = this.trailers(chunk, at);
          break;
        case State.Done:
          this.extraBytes += chunk.length - at;
          return;
      }
    }
  }

  /** The connection reached EOF: a body delimited by the close ends here; anything else was cut. */
  end(): void {
    if (this.state === State.UntilClose) return this.complete({});
    if (this.state === State.Done) return;
    throw new ResponseParseError(this.started ? 'connection closed in the middle of the response' : 'connection closed before the response', true);
  }

  /** Collects `pending` + chunk[at..] up to `terminator`; returns the line block and where it ends in chunk, or undefined (all kept). */
  private collect(chunk: Buffer, at: number, terminator: Buffer, limit: number, what: string): { block: Buffer; next: number } | undefined {
    const prior = this.pending?.length ?? 0;
    // Search from a few bytes back so a terminator split across reads is found.
    const joined = prior === 0 ? chunk.subarray(at) : Buffer.concat([this.pending!, chunk.subarray(at)]);
    const from = Math.max(0, prior - terminator.length + 1);
    const found = joined.indexOf(terminator, from);
    if (found === -1 || found + terminator.length > limit) {
      if (joined.length > limit || found !== -1) throw new ResponseParseError(`${what} larger than ${limit} bytes`);
      this.pending = prior === 0 ? Buffer.from(joined) : joined; // a copy: the socket's buffer may be a reused one
      return undefined;
    }
    this.pending = undefined;
    return { block: joined.subarray(0, found), next: at + found + terminator.length - prior };
  }

  private head(chunk: Buffer, at: number): number {
    const got = this.collect(chunk, at, CRLFCRLF, MAX_HEAD_BYTES, 'response head');
    if (!got) return chunk.length;
    const lines = got.block.toString('latin1').split('\r\n');
    const status = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: .*)?$/.exec(lines[0]!);
    if (!status) throw new ResponseParseError(`bad status line: ${JSON.stringify(lines[0]!.slice(0, 80))}`);
    const statusCode = Number(status[2]);
    const headers = parseFields(lines.slice(1), 'header');
    if (statusCode < 200) {
      if (statusCode === 101) throw new ResponseParseError('unexpected protocol switch');
      this.events.onInformational?.(statusCode);
      return got.next; // 100/102/103: informational, the real head follows
    }
    const connection = (headers['connection'] ?? '').toLowerCase();
    this.keepAlive = status[1] === '1' ? !/\bclose\b/.test(connection) : /\bkeep-alive\b/.test(connection);
    // The framing is checked before the head is handed on: a response with a bad one is refused whole.
    const te = headers['transfer-encoding'];
    const cl = headers['content-length'];
    let next: State;
    if (statusCode === 204 || statusCode === 304) {
      next = State.Done;
    } else if (te !== undefined) {
      if (!/(?:^|,)\s*chunked\s*$/i.test(te)) throw new ResponseParseError(`unsupported transfer-encoding ${JSON.stringify(te)}`);
      // Both framings at once is how responses are smuggled: chunked wins, the connection is not reused.
      if (cl !== undefined) this.keepAlive = false;
      next = State.ChunkLine;
    } else if (cl !== undefined) {
      if (!/^\d{1,15}$/.test(cl)) throw new ResponseParseError(`bad content-length ${JSON.stringify(cl.slice(0, 40))}`);
      this.remaining = Number(cl);
      next = this.remaining === 0 ? State.Done : State.Length;
    } else {
      this.keepAlive = false;
      next = State.UntilClose;
    }
    this.events.onHead({ statusCode, headers, keepAlive: this.keepAlive });
    if (next === State.Done) this.complete({});
    else this.state = next;
    return got.next;
  }

  private chunkLine(chunk: Buffer, at: number): number {
    const got = this.collect(chunk, at, CRLF, MAX_CHUNK_LINE, 'chunk-size line');
    if (!got) return chunk.length;
    const line = got.block.toString('latin1');
    const semi = line.indexOf(';');
    const digits = (semi === -1 ? line : line.slice(0, semi)).trim();
    if (digits.length === 0 || digits.length > MAX_CHUNK_DIGITS || !/^[0-9a-fA-F]+$/.test(digits)) {
      throw new ResponseParseError(`bad chunk size ${JSON.stringify(line.slice(0, 40))}`);
    }
    this.remaining = parseInt(digits, 16);
    this.state = this.remaining === 0 ? State.Trailers : State.ChunkData;
    return got.next;
  }

  private chunkDataEnd(chunk: Buffer, at: number): number {
    // The CRLF after a chunk's data, possibly split across reads.
    const prior = this.pending?.length ?? 0;
    const need = 2 - prior;
    const part = chunk.subarray(at, at + need);
    const seen = prior === 0 ? part : Buffer.concat([this.pending!, part]);
    if (seen.length < 2) {
      if (seen[0] !== 0x0d) throw new ResponseParseError('chunk data not followed by CRLF');
      this.pending = Buffer.from(seen);
      return chunk.length;
    }
    if (seen[0] !== 0x0d || seen[1] !== 0x0a) throw new ResponseParseError('chunk data not followed by CRLF');
    this.pending = undefined;
    this.state = State.ChunkLine;
    return at + part.length;
  }

  private trailers(chunk: Buffer, at: number): number {
    // No trailers: the empty line alone. Otherwise lines up to an empty one.
    const prior = this.pending?.length ?? 0;
    const joined = prior === 0 ? chunk.subarray(at) : Buffer.concat([this.pending!, chunk.subarray(at)]);
    if (joined.length >= 2 && joined[0] === 0x0d && joined[1] === 0x0a) {
      this.pending = undefined;
      this.complete({});
      return at + 2 - prior;
    }
    if (joined.length < 2) {
      if (joined.length === 1 && joined[0] !== 0x0d && !isTokenByte(joined[0]!)) throw new ResponseParseError('bad trailer');
      this.pending = Buffer.from(joined);
      return chunk.length;
    }
    this.pending = undefined;
    const got = this.collect(joined, 0, CRLFCRLF, MAX_HEAD_BYTES, 'trailer block');
    if (!got) return chunk.length;
    this.complete(parseFields(got.block.toString('latin1').split('\r\n'), 'trailer'));
    return at + got.next - prior;
  }

  private complete(trailers: Record<string, string>): void {
    this.state = State.Done;
    this.events.onComplete(trailers);
  }

  /** Whether the connection may carry another request once this response is complete. */
  get reusable(): boolean {
    return this.state === State.Done && this.keepAlive && this.extraBytes === 0;
  }
}

/**
 * Fields that have one value: a repeat is dropped and the first kept, as node:http and undici's
 * readers (the first of the list) take them. Joined like a list ("a, b"), a repeated ETag was a
 * version no stat had seen, and every read of the file failed as changed.
 */
const SINGLE_FIELDS = new Set(['etag', 'last-modified', 'content-range', 'content-type', 'location', 'age', 'expires', 'retry-after']);

function parseFields(lines: string[], what: string): Record<string, string> {
  // A Map, then own properties: a field named "constructor" or "__proto__" is a field like any other.
  const fields = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw new ResponseParseError(`bad ${what} line ${JSON.stringify(line.slice(0, 80))}`);
    const name = line.slice(0, colon);
    // No obsolete line folding, no space before the colon: both are ways to hide a header.
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) throw new ResponseParseError(`bad ${what} name ${JSON.stringify(name.slice(0, 80))}`);
    const key = name.toLowerCase();
    const value = line.slice(colon + 1).trim();
    const prior = fields.get(key);
    if (prior === undefined) fields.set(key, value);
    else if (SINGLE_FIELDS.has(key)) continue;
    else if (key === 'content-length') {
      if (prior !== value) throw new ResponseParseError('conflicting content-length headers');
    } else fields.set(key, `${prior}, ${value}`);
  }
  return Object.fromEntries(fields);
}

function isTokenByte(byte: number): boolean {
  return /[!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(String.fromCharCode(byte));
}
