import type { S3Client } from '@aws-sdk/client-s3';
import { Readable, Transform } from 'node:stream';

/*
 * The AWS SDK reads every answer it parses (a listing, an error) into memory whole before it
 * looks at it, with no limit: a server that answered a 500 with a 400 MB error body grew a worker
 * by 700 MiB in the 3 s before the first-byte deadline (found by a fault hunt), and a faster one
 * would take it all. Answers the SDK parses are cut off past these sizes; object bytes (a
 * GetObject's 200/206 body), which fanout streams, are not touched.
 */
/** S3's error documents are under 1 KiB; a proxy's HTML error page a few KiB. */
export const MAX_S3_ERROR_BYTES = 1024 * 1024;
/** A ListObjectsV2 page holds at most 1,000 keys of up to 1,024 bytes: ~1.5 MB, more with XML escapes. */
export const MAX_S3_PARSED_BYTES = 16 * 1024 * 1024;

/** What the limit throws; S3Ufs.mapError turns it into SOURCE_ERROR (the SDK appends hints to other errors' messages). */
export class S3AnswerTooLarge extends Error {
  readonly code = 'FANOUT_S3_ANSWER_TOO_LARGE';
  constructor(
    readonly statusCode: number,
    readonly limit: number,
  ) {
    super(tooLarge(statusCode, limit));
  }

  /** The message without what the SDK appends to an error's message on its way out. */
  get reason(): string {
    return tooLarge(this.statusCode, this.limit);
  }
}

function tooLarge(statusCode: number, limit: number): string {
  return `the S3 server's answer (HTTP ${statusCode}) is larger than ${limit} bytes, more than an S3 server sends`;
}

interface RawResponse {
  statusCode: number;
  body?: unknown;
}

/** Adds the limit to a client's answers (once per client: a second call replaces the first). */
export function boundS3Answers(client: S3Client): void {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const out = await next(args);
      const response = out.response as RawResponse;
      const streamed = context.commandName === 'GetObjectCommand' && response.statusCode >= 200 && response.statusCode < 300;
      if (!streamed && response.body instanceof Readable) {
        const limit = response.statusCode >= 300 ? MAX_S3_ERROR_BYTES : MAX_S3_PARSED_BYTES;
        response.body = capped(response.body, limit, response.statusCode);
      }
      return out;
    },
    // Low priority in the deserialize step: inside the SDK's deserializer, so it sees the raw answer first.
    { step: 'deserialize', priority: 'low', name: 'fanoutBoundedAnswers', override: true },
  );
}

/** The body, failing with S3AnswerTooLarge (and the connection torn down) once it passes `limit` bytes. */
function capped(body: Readable, limit: number, statusCode: number): Readable {
  let seen = 0;
  const out = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      if (seen <= limit) return callback(null, chunk);
      body.unpipe(out);
      body.destroy();
      callback(new S3AnswerTooLarge(statusCode, limit));
    },
  });
  body.on('error', (err) => out.destroy(err));
  return body.pipe(out);
}
