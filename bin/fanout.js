#!/usr/bin/env node
import { main } from '../dist/src/cli/main.js';

main(process.argv).catch((err) => {
  process.stderr.write(`fanout: ${err?.message ?? err}\n`);
  process.exit(1);
});
