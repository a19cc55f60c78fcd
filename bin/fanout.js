#!/usr/bin/env node
import { main } from '../dist/src/cli/main.js';

// Exit once the command is done: idle keep-alive sockets must not hold a short command open.
main(process.argv).then(
  () => process.exit(process.exitCode ?? 0),
  (err) => {
    process.stderr.write(`fanout: ${err?.message ?? err}\n`);
    process.exit(1);
  },
);
