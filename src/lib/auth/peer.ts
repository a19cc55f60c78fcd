import { createHmac } from 'node:crypto';
import { HEADERS } from '../wire/index.js';
import { constantTimeEqual } from './tokens.js';

/** The credential a worker sends to its peers (page fills, direct reads). */
export const PEER_HEADER = HEADERS.peer;

/**
 * Proof of membership derived from the cluster secret. What travels is an HMAC of a fixed
 * label, not the secret itself, so the secret never appears in a request, a proxy log or a
 * packet capture, and changing the label (a new protocol version) invalidates old proofs.
 */
export class PeerCredential {
  private readonly proof: string;

  constructor(secret: string) {
    this.proof = createHmac('sha256', secret).update('fanout-peer-v1').digest('hex');
  }

  headers(): Record<string, string> {
    return { [PEER_HEADER]: this.proof };
  }

  verify(presented: string | string[] | undefined): boolean {
    return typeof presented === 'string' && constantTimeEqual(presented, this.proof);
  }
}
