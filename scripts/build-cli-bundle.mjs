#!/usr/bin/env node
// Bundles the modules of `fanout cat` and `fanout stat` (dist/src/cli/quick.js and what it
// loads) into one CommonJS file, dist/src/cli/bundle/quick.cjs, beside a list of its inputs
// with their sizes and modification times. bin/fanout.js runs the bundle when every input is
// unchanged since (src/cli/bundle.ts), else the modules themselves: a plain `tsc` leaves a stale
// bundle unused, never run. Why: Node 20 loads each ES module with several asynchronous file
// operations, and `fanout cat` loaded 42 of them; one CommonJS file halves the CLI's fixed cost
// over a bare `node` (docs/benchmarks.md). The bundle sits as deep under the package root as
// dist/src/lib/checksum, so paths the modules derive from their own URL stay right.
// Run after `tsc` (npm run build does both).
import { statSync, writeFileSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(root, 'dist/src/cli/bundle');
const entry = join(root, 'dist/src/cli/quick.js');

let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  process.stderr.write('build-cli-bundle: esbuild is not installed (a devDependency); the CLI runs unbundled\n');
  rmSync(outdir, { recursive: true, force: true });
  process.exit(0);
}

mkdirSync(outdir, { recursive: true });
// Written under temporary names and renamed: a `fanout cat` started while the bundle is rebuilt
// (tests run beside each other) sees the old files or the new ones, never half of one.
const tmp = `.tmp-${process.pid}`;
const shim = join(outdir, `import-meta-url${tmp}.js`);
// CommonJS has no import.meta: every module's import.meta.url becomes the bundle's own URL.
writeFileSync(shim, "export const importMetaUrl = require('node:url').pathToFileURL(__filename).href;\n");
const result = await esbuild.build({
  entryPoints: [entry],
  outfile: join(outdir, `quick.cjs${tmp}`),
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  packages: 'external', // undici, zod, the AWS SDK: loaded from node_modules, and only when used
  inject: [shim],
  define: { 'import.meta.url': 'importMetaUrl' },
  metafile: true,
  logLevel: 'warning',
});
rmSync(shim);
const inputs = Object.keys(result.metafile.inputs)
  .map((path) => resolve(process.cwd(), path))
  .filter((path) => path !== shim)
  .map((path) => {
    const info = statSync(path);
    return { path: relative(root, path), size: info.size, mtimeMs: info.mtimeMs };
  });
renameSync(join(outdir, `quick.cjs${tmp}`), join(outdir, 'quick.cjs'));
writeFileSync(join(outdir, `inputs.json${tmp}`), JSON.stringify({ inputs }) + '\n');
renameSync(join(outdir, `inputs.json${tmp}`), join(outdir, 'inputs.json'));
process.stdout.write(`build-cli-bundle: ${inputs.length} modules in ${relative(root, join(outdir, 'quick.cjs'))}\n`);
