#!/usr/bin/env node
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

// `cat` and `stat` run without building the whole command line (src/cli/quick.ts); every other
// command line, and any of theirs the quick parser does not fully understand, goes to main().
// Each runs from its one-file bundle when it is up to date (src/cli/bundle.ts), else from the
// modules. Exit once the command is done: idle keep-alive sockets must not hold a short command open.
const { freshBundle } = await import('../dist/src/cli/bundle.js');
const root = fileURLToPath(new URL('..', import.meta.url));
const load = (name) => {
  const bundle = freshBundle(root, name);
  return bundle ? createRequire(import.meta.url)(bundle) : import(`../dist/src/cli/${name}.js`);
};

async function quick() {
  if (process.argv[2] !== 'cat' && process.argv[2] !== 'stat') return false;
  return (await load('quick')).runQuick(process.argv);
}

// Before main's code loads, V8's tiering is tuned (src/cli/jit.ts). Not on the quick path: a
// 1-byte `cat` would spend more loading node:v8 than the compiler would have cost it.
async function main() {
  (await import('../dist/src/cli/jit.js')).tuneJit();
  return (await load('main')).main(process.argv);
}

quick()
  .then((done) => done || main())
  .then(
    () => process.exit(process.exitCode ?? 0),
    (err) => {
      process.stderr.write(`fanout: ${err?.message ?? err}\n`);
      process.exit(1);
    },
  );
