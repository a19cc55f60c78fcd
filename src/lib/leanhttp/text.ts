import type { LeanResponse } from './connection.js';
import type { SlabPool } from './slabs.js';

/**
 * The whole body of a small answer (JSON) as text. Its chunks are views of the connections' read
 * slabs: each is given back to `slabs` once the text is made, so the slab is read into again.
 * A body over `maxBytes` ends the response and rejects.
 */
export async function bodyText(response: LeanResponse, slabs: SlabPool, maxBytes = Number.POSITIVE_INFINITY): Promise<string> {
  const parts: Buffer[] = [];
  let bytes = 0;
  try {
    for await (const chunk of response.body) {
      parts.push(chunk);
      bytes += chunk.length;
      if (bytes > maxBytes) {
        response.destroy();
        throw new RangeError(`an answer of more than ${maxBytes} bytes`);
      }
    }
    return Buffer.concat(parts).toString('utf8');
  } finally {
    for (const chunk of parts) slabs.release(chunk);
  }
}
