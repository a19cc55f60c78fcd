#!/usr/bin/env node
import { runQuick } from '../dist/src/cli/quick.js';

// `cat` and `stat` run without building the whole command line (src/cli/quick.ts); every other
// command line, and any of theirs the quick parser does not fully understand, goes to main().
// Exit once the command is done: idle keep-alive sockets must not hold a short command open.
runQuick(process.argv)
  .then(async (done) => done || (await import('../dist/src/cli/main.js')).main(process.argv))
  .then(
    () => process.exit(process.exitCode ?? 0),
    (err) => {
      process.stderr.write(`fanout: ${err?.message ?? err}\n`);
      process.exit(1);
    },
  );
