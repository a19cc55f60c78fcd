#!/usr/bin/env node
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

// `cat` and `stat` run without building the whole command line (src/cli/quick.ts), from the
// one-file bundle of their modules when it is up to date (src/cli/bundle.ts); every other
// command line, and any of theirs the quick parser does not fully understand, goes to main().
// Exit once the command is done: idle keep-alive sockets must not hold a short command open.
async function quick() {
  if (process.argv[2] !== 'cat' && process.argv[2] !== 'stat') return false;
  const { freshBundle } = await import('../dist/src/cli/bundle.js');
  const bundle = freshBundle(fileURLToPath(new URL('..', import.meta.url)));
  const { runQuick } = bundle ? createRequire(import.meta.url)(bundle) : await import('../dist/src/cli/quick.js');
  return runQuick(process.argv);
}

quick()
  .then(async (done) => done || (await import('../dist/src/cli/main.js')).main(process.argv))
  .then(
    () => process.exit(process.exitCode ?? 0),
    (err) => {
      process.stderr.write(`fanout: ${err?.message ?? err}\n`);
      process.exit(1);
    },
  );
