// CommonJS (.cts → .cjs): bin/fanout.js loads it before any command, and Node's ES module
// loader, which an ES module would start, costs a 1-byte `fanout cat` ≈ 10 ms.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A one-file bundle of the CLI (scripts/build-cli-bundle.mjs): `quick` for `fanout cat`/`stat`,
 * `main` for every other command, `etcd3` for the etcd client (main.cjs loads it), if it was built
 * from the modules as they are now. Each input's size and modification time are compared with
 * those recorded when it was built: after a `tsc` without the bundle step, or any edit of a
 * module it holds, the modules are run instead — a stale bundle is never run. About 60 stat
 * calls for `quick`, about 200 for `main`, about 160 for `etcd3`: about a millisecond each.
 */
export function freshBundle(root: string, name: 'quick' | 'main' | 'etcd3'): string | undefined {
  const dir = join(root, 'dist/src/cli/bundle');
  try {
    const { inputs } = JSON.parse(readFileSync(join(dir, `${name}.inputs.json`), 'utf8')) as { inputs: { path: string; size: number; mtimeMs: number }[] };
    if (!Array.isArray(inputs) || inputs.length === 0) return undefined;
    for (const input of inputs) {
      const info = statSync(join(root, input.path), { throwIfNoEntry: false });
      if (!info || info.size !== input.size || info.mtimeMs !== input.mtimeMs) return undefined;
    }
    return join(dir, `${name}.cjs`);
  } catch {
    return undefined; // no bundle (no esbuild, never built) or an unreadable list: the modules
  }
}
