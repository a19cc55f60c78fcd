import { Etcd3 } from 'etcd3';
import type { WorkerConfigInput } from '../../src/lib/config/index.js';
import type { WorkerStatus } from '../../src/core/types.js';
import { waitFor } from './ports.js';
import { WorkerProcess } from './workers.js';

/** Where workers of the default cluster register in etcd. */
export const MEMBERS_PREFIX = '/fanout/default/members/';

export async function statusOf(url: string): Promise<WorkerStatus> {
  return (await (await fetch(`${url}/v1/status`)).json()) as WorkerStatus;
}

/**
 * A second worker of `config`'s id starts while `first` (running that config) is frozen and its
 * lease gone (revoked here rather than waited out): the second registers the id, and `first`,
 * thawed, finds it held. Resolves with the second once `first` says so (membership `id-taken`).
 */
export async function startIdTwin(first: WorkerProcess, config: WorkerConfigInput & { id: string }, etcdEndpoint: string): Promise<WorkerProcess> {
  const key = MEMBERS_PREFIX + config.id;
  first.pause();
  const client = new Etcd3({ hosts: etcdEndpoint });
  let second: WorkerProcess | undefined;
  try {
    const [record] = (await client.get(key).exec()).kvs;
    await client.leaseClient.leaseRevoke({ ID: record!.lease });
    second = await WorkerProcess.start(config);
    // A worker answers /healthz before it registers: wait for the second's record itself.
    await waitFor('the second to register', async () => JSON.parse((await client.get(key).string()) ?? '{}').url === second!.url);
    client.close();
    first.resume();
    await waitFor('the first to find its id held', async () => (await statusOf(first.url)).membership?.state === 'id-taken');
    return second;
  } catch (err) {
    client.close();
    first.resume();
    await second?.destroy();
    throw err;
  }
}
