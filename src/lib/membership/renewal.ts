import { GRPCDeadlineExceededError, type Etcd3 } from 'etcd3';
import { createEtcdClient, type EtcdConnection } from './client.js';
import { EtcdNoAnswerError } from './rpc.js';

/**
 * An etcd client that is replaced by a new one once a second exchange in a row got no answer: the
 * membership's (EtcdMembership) and the release watches' (ReleaseRegistry).
 *
 * gRPC has no connect deadline and no keepalive here, so once packets to etcd vanish (a firewall, a
 * cut link; not a refusal) its connection stays silent until the kernel gives up on it (~15 min of
 * retransmissions), and its reconnect waits on the kernel's SYN retries (up to 64 s apart, 127 s in
 * all): measured, a worker cut from etcd for 90 s was back in the rings 46 s after the link
 * returned, and a sync agent cut from etcd for 90 s followed a promotion made as the link returned
 * 34 s later (its watch waited on the old connection's next retransmission). A new client at each
 * such failure keeps every connection attempt at most an exchange old, so the first exchange after
 * the link returns reaches etcd; closing the old one ends the connect it left pending
 * (connects.ts), rather than leaving it to the kernel.
 */
export class EtcdClientRenewal {
  private current: Etcd3;

  constructor(
    private readonly connection: EtcdConnection,
    private readonly timeoutMs: number,
  ) {
    this.current = createEtcdClient(connection, timeoutMs);
  }

  get client(): Etcd3 {
    return this.current;
  }

  /**
   * Whether the client should be replaced after `err`, the failure of the `inARow`-th exchange in
   * a row: a second one with no answer (a deadline, or a stream etcd never answered). One is not
   * enough: a busy etcd may miss a deadline now and then.
   */
  noAnswer(err: unknown, inARow: number): boolean {
    return inARow >= 2 && (err instanceof GRPCDeadlineExceededError || err instanceof EtcdNoAnswerError);
  }

  /** Closes the client (ending its pending connects) and makes a new one, with connections of its own. */
  replace(): void {
    this.current.close();
    this.current = createEtcdClient(this.connection, this.timeoutMs);
  }

  close(): void {
    this.current.close();
  }
}
