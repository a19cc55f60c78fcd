// What the built worker config accepts, so the two-datacenter lab runs on builds with and
// without the line budgets (`lines:` + a mount's `line:`) and datacenter labels (`datacenter:`),
// and says which it used rather than failing: without `lines`, the mount's `sourceRate` (the
// cluster-wide budget split statically over the members) stands in for the line budget.
import { join } from 'node:path';
import { root } from '../common.mjs';

const base = { id: 'w1', listen: '127.0.0.1:7450', dataDir: '/nonexistent', membership: { static: [{ id: 'w1', url: 'http://127.0.0.1:7450' }] } };

export async function configSupport() {
  const { parseWorkerConfig } = await import(join(root, 'dist/src/lib/config/index.js'));
  const accepts = (extra) => {
    try {
      parseWorkerConfig({ ...base, ...extra });
      return true;
    } catch {
      return false;
    }
  };
  return {
    lines: accepts({ lines: { 'dc-a': { rate: '100MB/s' } }, mounts: { data: { uri: 'http://127.0.0.1:8080/', line: 'dc-a' } } }),
    datacenter: accepts({ datacenter: 'dc-a', mounts: { data: 'http://127.0.0.1:8080/' } }),
  };
}

/** "100MB/s", "1GiB/s", "800Mbit/s" → bytes/s (the same rules as netlab-dc.sh). */
export function parseRate(text) {
  const m = /^([\d.]+)\s*([kmgt]?)(i?)(bit|b|byte)?(\/s)?$/i.exec(String(text).trim());
  if (!m) throw new Error(`bad rate ${text}`);
  const n = Number(m[1]) * ((m[3] ? 1024 : 1000) ** ' kmgt'.indexOf((m[2] || ' ').toLowerCase()));
  return /^bit$/i.test(m[4] ?? '') || m[4] === 'b' ? n / 8 : n;
}
