// The client module alone: the SDK's index also loads the admin client (and zod with it).
import { FanoutClient } from '../client/client.js';
import { joinFanoutPath } from '../core/paths.js';
import { formatBytes } from '../core/pages.js';
import { parseRangeOption } from './ranges.js';
import { fanoutPath, printJson, printTable, type GlobalOptions } from './output.js';
import { writePagesToStdout } from './stdout.js';

/**
 * stat and cat: the commands scripts and serving hosts run many times, so this module loads
 * only the SDK's read path (no progress bar, no admin client) and asks for what the first byte
 * needs — the file's version and the members — at the same time.
 */

export function clientFor(options: GlobalOptions): FanoutClient {
  return new FanoutClient({ endpoint: options.endpoint, ca: options.ca, hedge: options.hedge });
}

export async function stat(path: string, options: GlobalOptions): Promise<void> {
  const client = clientFor(options);
  try {
    const info = await client.stat(path);
    if (options.json) return printJson({ ...info, path: fanoutPath(info.mount, info.path) });
    printTable([
      ['path', joinFanoutPath(info.mount, info.path)],
      ['size', `${info.size} (${formatBytes(info.size)})`],
      ['modified', new Date(info.mtimeMs).toISOString()],
      ['version', info.version],
    ]);
  } finally {
    await client.close();
  }
}

export async function cat(path: string, options: GlobalOptions & { range?: string }): Promise<void> {
  const client = clientFor(options);
  try {
    // The member list is needed before the first page: fetched beside the stat, not after it.
    // Its failure is the stat's to report (same endpoints), so it is only awaited afterwards.
    const members = client.cluster();
    members.catch(() => {});
    const file = await client.stat(path);
    await members;
    const range = options.range ? parseRangeOption(options.range, file.size) : undefined;
    await writePagesToStdout(client.readPages(file, range ?? {}), (page) => client.releasePage(page)); // `fanout cat x | head` is fine: EPIPE ends it quietly
  } finally {
    await client.close();
  }
}
