#!/bin/sh
":" //; case "$1" in cat|stat|ls|cp|sync) case "$NODE_OPTIONS" in *openssl-ca*|*system-ca*|*bundled-ca*) ;; *) if [ -n "$NODE_EXTRA_CA_CERTS" ]; then export FANOUT_NODE_EXTRA_CA_CERTS="$NODE_EXTRA_CA_CERTS"; unset NODE_EXTRA_CA_CERTS; fi ;; esac ;; esac
":" //; exec node "$0" "$@"
// The two lines above are run by sh, and are a string and a comment to Node. For the short
// commands, NODE_EXTRA_CA_CERTS is kept from Node's start: Node 20 parses that file and builds its
// whole root store before any module, ≈ 40 ms of a 1-byte `fanout cat` (measured), TLS or not.
// The variable is given back to child processes here, and this process's TLS clients add its
// file to Node's roots at their first https:// connection (src/lib/tls/client.ts, deferredTrust).
// A flag choosing another default store (NODE_OPTIONS) leaves it to Node.
const deferredExtraCa = process.env.FANOUT_NODE_EXTRA_CA_CERTS;
if (deferredExtraCa !== undefined) {
  delete process.env.FANOUT_NODE_EXTRA_CA_CERTS;
  process.env.NODE_EXTRA_CA_CERTS = deferredExtraCa;
  process[Symbol.for('fanout.deferredExtraCaCerts')] = deferredExtraCa; // lib/tls's DEFERRED_EXTRA_CA
}

// A worker's file system work runs in libuv's thread pool, sized once at its first use: 16 threads
// rather than libuv's 4, so that a hung network file system under a source, which may hold three
// quarters of them (src/lib/ufs/fsgate.ts), leaves the page store threads of its own.
if ((process.argv[2] === 'worker' || process.argv[2] === 'serve') && !process.env.UV_THREADPOOL_SIZE) process.env.UV_THREADPOOL_SIZE = '16';

// CommonJS (bin/package.json says so): an ES module entry starts Node's ES module loader, ≈ 10 ms
// of every `fanout cat` of a small file; the bundles below are CommonJS too.
const { join } = require('node:path');
const { freshBundle } = require('../dist/src/cli/bundle.cjs');
const { cacheDirectory, loadBundle, saveCodeCaches } = require('../dist/src/cli/codecache.cjs');
const { exitProcess } = require('../dist/src/cli/exit.cjs');

// `cat`, `stat`, `ls` and `cp` run without building the whole command line (src/cli/quick.ts); every other
// command line, and any of theirs the quick parser does not fully understand, goes to main().
// Each runs from its one-file bundle when it is up to date (src/cli/bundle.cts), else from the
// modules; a bundle runs from V8's code cache of its last run (src/cli/codecache.cts), written
// once a command has succeeded. Exit once the command is done: idle keep-alive sockets must not
// hold a short command open; with a watchdog, as Node's exit can hang (src/cli/exit.cts).
const root = join(__dirname, '..');
const load = (name, variant) => {
  const file = freshBundle(root, name);
  return file ? loadBundle(file, cacheDirectory(), variant).exports : import(`../dist/src/cli/${name}.js`);
};

// `cp` raises V8's tiering budget as main does (src/cli/jit.cts): it copies trees of small files
// too, where that pays (0.27–0.28 against 0.33–0.36 ms of CPU per file, measured); `cat`, `stat`
// and `ls` do not load node:v8 (≈ 3.5 ms). The quick bundle's code cache is kept per variant.
async function quick() {
  const command = process.argv[2];
  if (!['cat', 'stat', 'ls', 'cp'].includes(command)) return false; // quick.ts's isQuickName, asked before the bundle loads
  const tuned = command === 'cp' && require('../dist/src/cli/jit.cjs').tuneJit();
  return (await load('quick', tuned ? 'jit' : undefined)).runQuick(process.argv);
}

// Before main's code loads, V8's tiering is tuned (src/cli/jit.cts). Not for `cat`, `stat` and `ls`: a
// 1-byte `cat` would spend more loading node:v8 than the compiler would have cost it.
async function main() {
  require('../dist/src/cli/jit.cjs').tuneJit();
  return (await load('main')).main(process.argv);
}

quick()
  .then((done) => done || main())
  .then(
    () => {
      if (!process.exitCode) saveCodeCaches();
      exitProcess(process.exitCode ?? 0);
    },
    (err) => {
      process.stderr.write(`fanout: ${err?.message ?? err}\n`);
      exitProcess(1);
    },
  );
