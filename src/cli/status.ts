import { formatBytes } from '../core/pages.js';
import { clientFor } from './cat.js';
import { plural, printJson, printTable, type GlobalOptions } from './output.js';
import { formatRate } from './progress.js';
import type { LineStatus, MembershipState } from '../core/types.js';
import type { ClusterStatus } from '../client/index.js';

export async function status(options: GlobalOptions): Promise<void> {
  const client = clientFor(options);
  try {
    const report = await client.status();
    if (options.json) return printJson(report);
    const { totals } = report;
    printTable([
      ['MEMBER', 'URL', 'STATE', 'CAPACITY', 'USED', 'PAGES', 'HIT RATIO', 'FROM SOURCE'],
      ...report.members.map((m) => [
        m.id,
        m.url,
        m.reachable ? upState(m.membership?.state) : `down (${m.error?.slice(0, 60)})`,
        formatBytes(m.capacity ?? 0),
        m.reachable ? formatBytes(m.used ?? 0) : '-',
        m.reachable ? String(m.pages ?? 0) : '-',
        m.reachable ? ratio(m.hits ?? 0, m.misses ?? 0) : '-',
        m.reachable ? formatBytes(m.bytesFromSource ?? 0) : '-',
      ]),
    ]);
    process.stdout.write(
      `\n${plural(report.members.length, 'member')}${report.stale ? ' (membership store unreachable: last known list)' : ''}, ` +
        `used ${formatBytes(totals.used)} of ${formatBytes(totals.capacity)}, hit ratio ${ratio(totals.hits, totals.misses)}, ` +
        `${formatBytes(totals.bytesFromSource)} read from sources, ${formatBytes(totals.bytesServed)} served\n`,
    );
    for (const w of report.outOfRing) process.stdout.write(`\n${outOfRingLine(w)}\n`);
    if (report.ignoredRecords.length > 0) {
      process.stdout.write(`\nmember records left out of the ring (no lease: no running worker keeps them; remove each with the command given):\n`);
      printTable([['KEY', 'URL', 'REMOVE WITH'], ...report.ignoredRecords.map((r) => [r.key, r.url, `etcdctl del ${r.key}`])]);
    }
    const lines = report.members.flatMap((m) => (m.reachable ? ((m as { lines?: LineStatus[] }).lines ?? []).map((l) => ({ member: m.id, ...l })) : []));
    if (lines.length > 0) {
      process.stdout.write('\n');
      printTable([
        ['LINE', 'RATE', 'MEMBER', 'SHARE', 'MODE', 'READ', 'PRELOAD', 'WAITING READS', 'WAITING PRELOADS'],
        ...lines.map((l) => [
          l.line,
          formatRate(l.rate),
          l.member + (l.coordinator === l.member ? ' (coordinator)' : ''),
          formatRate(l.share),
          l.mode,
          formatBytes(l.used.read),
          formatBytes(l.used.preload),
          `${l.queue.read.requests} (${formatBytes(l.queue.read.bytes)})`,
          `${l.queue.preload.requests} (${formatBytes(l.queue.preload.bytes)})`,
        ]),
      ]);
    }
  } finally {
    await client.close();
  }
}

/** A member that answers: 'up', or what it is doing about its registration when that is not settled. */
function upState(state: MembershipState | undefined): string {
  return state === undefined || state === 'registered' || state === 'static' ? 'up' : `up (${state})`;
}

function outOfRingLine(w: ClusterStatus['outOfRing'][number]): string {
  const m = w.membership!;
  if (m.state === 'id-taken') {
    const holder = m.heldBy ? ` by the worker at ${m.heldBy.url} since ${m.heldBy.since}` : ' by another worker';
    return `worker ${w.id} at ${w.url} is in no ring: its id is held${holder} (give each worker its own id; it takes the id once that worker stops)`;
  }
  return `worker ${w.id} at ${w.url} is in no ring: ${m.state}`;
}

function ratio(hits: number, misses: number): string {
  return hits + misses === 0 ? '-' : `${((100 * hits) / (hits + misses)).toFixed(1)}%`;
}
