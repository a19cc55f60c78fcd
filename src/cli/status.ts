import { formatBytes } from '../core/pages.js';
import { clientFor } from './cat.js';
import { plural, printJson, printTable, type GlobalOptions } from './output.js';
import { formatRate } from './progress.js';
import type { LineStatus } from '../core/types.js';

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
        m.reachable ? 'up' : `down (${m.error?.slice(0, 60)})`,
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

function ratio(hits: number, misses: number): string {
  return hits + misses === 0 ? '-' : `${((100 * hits) / (hits + misses)).toFixed(1)}%`;
}
