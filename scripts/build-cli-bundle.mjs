#!/usr/bin/env node
// Bundles the CLI's modules into two CommonJS files beside lists of their inputs with their sizes
// and modification times: dist/src/cli/bundle/quick.cjs for `fanout cat` and `fanout stat`
// (dist/src/cli/quick.js and what it loads) and main.cjs for every other command
// (dist/src/cli/main.js; each command's modules stay behind a lazy require of the bundle). bin/fanout.js runs the bundle when every input is
// unchanged since (src/cli/bundle.ts), else the modules themselves: a plain `tsc` leaves a stale
// bundle unused, never run. Why: Node 20 loads each ES module with several asynchronous file
// operations, and `fanout cat` loaded 42 of them; one CommonJS file halves the CLI's fixed cost
// over a bare `node` (docs/benchmarks.md).
// A third bundle, etcd3.cjs, holds the etcd client with gRPC and protobufjs (about 150 CommonJS
// files in node_modules): main.cjs loads it in place of `require('etcd3')` while its inputs are
// unchanged (an `npm install` since makes it load node_modules again). Requiring etcd3 took
// 150–190 ms of every command that talks to etcd (`sync`, `release …`, `serve --etcd`), 95–120 ms
// from the bundle.
// Run after `tsc` (npm run build does both).
import { readFileSync, statSync, writeFileSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(root, 'dist/src/cli/bundle');

let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  process.stderr.write('build-cli-bundle: esbuild is not installed (a devDependency); the CLI runs unbundled\n');
  rmSync(outdir, { recursive: true, force: true });
  process.exit(0);
}

// CommonJS has no import.meta. Each module's import.meta.url becomes its own file's URL, found from
// the bundle's __dirname: addons, package.json and the dashboard's assets are found relative to
// the module that names them, at whatever depth it sits (src/cli, src/mount, src/worker/…).
const moduleUrls = {
  name: 'module-urls',
  setup(build) {
    build.onLoad({ filter: /\.js$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8');
      if (!text.includes('import.meta.url')) return undefined;
      const path = JSON.stringify(relative(outdir, args.path));
      const url = `require('node:url').pathToFileURL(require('node:path').join(__dirname, ${path})).href`;
      return { contents: text.replaceAll('import.meta.url', url), loader: 'js' };
    });
  },
};

// A package module's __dirname becomes its own directory, found from the bundle's: grpc-js and
// etcd3 read .proto files beside their code.
const packageDirs = {
  name: 'package-dirs',
  setup(build) {
    build.onLoad({ filter: /[\\/]node_modules[\\/].*\.js$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8');
      if (!/\b__dirname\b/.test(text)) return undefined;
      const dir = JSON.stringify(relative(outdir, dirname(args.path)));
      // Textual: one inside a comment or a string is rewritten too (in a string that usually breaks
      // the module's syntax, so the build fails rather than the bundle misbehaving).
      return { contents: text.replace(/\b__dirname\b/g, `require('node:path').join(__dirname, ${dir})`), loader: 'js' };
    });
  },
};

// In main.cjs, `etcd3` is etcd3.cjs when that bundle is fresh (src/cli/bundle.cts), run from its
// code cache as bin/fanout.js runs main.cjs (src/cli/codecache.cts), else the package.
const etcd3FromBundle = {
  name: 'etcd3-from-bundle',
  setup(build) {
    build.onResolve({ filter: /^etcd3$/ }, (args) => (args.namespace === 'etcd3-loader' ? { path: 'etcd3', external: true } : { path: 'etcd3', namespace: 'etcd3-loader' }));
    build.onLoad({ filter: /.*/, namespace: 'etcd3-loader' }, () => ({
      contents: [
        // Paths from the bundle's own directory, as everywhere in it: a tree moved after the build still loads.
        `const { join } = require('node:path');`,
        `const { freshBundle } = require(join(__dirname, ${JSON.stringify(relative(outdir, join(root, 'dist/src/cli/bundle.cjs')))}));`,
        `const { cacheDirectory, loadBundle } = require(join(__dirname, ${JSON.stringify(relative(outdir, join(root, 'dist/src/cli/codecache.cjs')))}));`,
        `const bundled = freshBundle(join(__dirname, ${JSON.stringify(relative(outdir, root))}), 'etcd3');`,
        `module.exports = bundled ? loadBundle(bundled, cacheDirectory()).exports : require('etcd3');`,
      ].join('\n'),
      resolveDir: root,
      loader: 'js',
    }));
  },
};

mkdirSync(outdir, { recursive: true });
await bundle('etcd3', { entry: join(root, 'node_modules/etcd3/lib/index.js'), packages: 'bundle', plugins: [packageDirs], extraInputs: ['node_modules/etcd3/proto/rpc.proto', 'node_modules/etcd3/proto/kv.proto', 'node_modules/etcd3/proto/auth.proto'] });
await bundle('quick');
await bundle('main', { plugins: [moduleUrls, etcd3FromBundle] });

/**
 * dist/src/cli/<name>.js (or `entry`) and the modules it loads → bundle/<name>.cjs and
 * <name>.inputs.json (with `extraInputs`, files it reads at run time).
 */
async function bundle(name, { entry = join(root, `dist/src/cli/${name}.js`), packages = 'external', plugins = [moduleUrls], extraInputs = [] } = {}) {
  // Written under temporary names and renamed: a `fanout cat` started while the bundle is rebuilt
  // (tests run beside each other) sees the old files or the new ones, never half of one.
  const tmp = `.tmp-${process.pid}`;
  const output = join(outdir, `${name}.cjs`);
  const result = await esbuild.build({
    entryPoints: [entry],
    outfile: `${output}${tmp}`,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    packages, // 'external' for the CLI's bundles: undici, zod, the AWS SDK… loaded from node_modules, and only when used
    plugins,
    // Minified, for V8 to read less on every start (the quick bundle 150 → 111 KB: its load with the
    // code cache 1.7 ms shorter of ≈ 8, a 1-byte `fanout cat`, medians of 12 alternated); function
    // and class names kept, for errors, stack traces and profiles.
    minify: true,
    keepNames: true,
    metafile: true,
    logLevel: 'warning',
  });
  const inputs = [...Object.keys(result.metafile.inputs).filter((path) => !path.startsWith('etcd3-loader:')), ...extraInputs.map((path) => join(root, path))]
    .map((path) => resolve(process.cwd(), path))
    .map((path) => {
      const info = statSync(path);
      return { path: relative(root, path), size: info.size, mtimeMs: info.mtimeMs };
    });
  renameSync(`${output}${tmp}`, output);
  const list = join(outdir, `${name}.inputs.json`);
  writeFileSync(`${list}${tmp}`, JSON.stringify({ inputs }) + '\n');
  renameSync(`${list}${tmp}`, list);
  process.stdout.write(`build-cli-bundle: ${inputs.length} modules in ${relative(root, output)}\n`);
}
