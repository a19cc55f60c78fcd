#!/usr/bin/env node
// The cost of a sync agent's damage check per round (damage.ts: every file of the current version
// lstat'ed against its stamp, and the tree's directories checked for entries the manifest does
// not list), with nothing damaged: the common case, paid every round. A release of FILES files of
// 4 KiB in DIRS directories is installed in a temp directory, then checkInstalled runs RUNS times;
// the median is printed. With --base DIST (another build's dist/) both run interleaved on the
// same tree (A, B, A, B…), so the load of a shared machine falls on both alike.
// A base from before stamp format 2 (filestamp.ts) does not trust this build's stamps, nor this
// build its: each would hash every file every run; compare builds of one stamp format.
//
//   node bench/damage-check.mjs [--files 2000] [--dirs 20] [--runs 15] [--base OTHER/dist]
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs, median, root } from './common.mjs';

const args = benchArgs({ files: '2000', dirs: '20', runs: '15' });
const FILES = Number(args.files);
const DIRS = Number(args.dirs);
const RUNS = Number(args.runs);
const load = async (dist) => ({
  damage: await import(join(dist, 'src/release/damage.js')),
  install: await import(join(dist, 'src/release/install.js')),
  stage: await import(join(dist, 'src/release/stage.js')),
  testkit: await import(join(dist, 'src/release/manifest.testkit.js')),
});
const builds = [{ name: 'this', ...(await load(join(root, 'dist'))) }, ...(args.base ? [{ name: 'base', ...(await load(args.base)) }] : [])];

const dirRoot = await mkdtemp(join(tmpdir(), 'fanout-damage-bench-'));
try {
  const files = {};
  for (let i = 0; i < FILES; i++) files[`d${i % DIRS}/f${i}.bin`] = randomBytes(4096);
  const { install, stage, testkit } = builds[0];
  const manifest = testkit.manifestOf(files, 'v1');
  const dir = new install.ReleaseDir(dirRoot);
  await dir.init();
  const fetcher = { release() {}, pageChunks: async (_m, file) => [files[file.path]] };
  // This boot's id: an install stamps only files staging stamped as it verified them.
  await stage.stageVersion({ manifest, dir, fetcher });
  await dir.install(manifest);
  const times = Object.fromEntries(builds.map((b) => [b.name, []]));
  for (let run = 0; run < RUNS; run++) {
    for (const build of builds) {
      const d = new build.install.ReleaseDir(dirRoot);
      const started = process.hrtime.bigint();
      const check = await build.damage.checkInstalled(d, manifest);
      times[build.name].push(Number(process.hrtime.bigint() - started) / 1e6);
      if (check.damaged.length + check.touched.length > 0 && run > 0) throw new Error(`${build.name}: the check found ${JSON.stringify(check).slice(0, 200)}`);
    }
  }
  // The alternative to directory stamps: list every directory of the tree each round.
  const listing = [];
  for (let run = 0; run < RUNS; run++) {
    const started = process.hrtime.bigint();
    for (let d = 0; d < DIRS; d++) readdirSync(join(dir.versionDir('v1'), `d${d}`), { withFileTypes: true });
    listing.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  console.log(`listing every directory instead: median ${median(listing).toFixed(1)} ms`);
  for (const [name, ts] of Object.entries(times)) console.log(`${name}: ${FILES} files in ${DIRS} directories: check median ${median(ts).toFixed(1)} ms (min ${Math.min(...ts).toFixed(1)}, max ${Math.max(...ts).toFixed(1)}, ${RUNS} runs)`);
} finally {
  await rm(dirRoot, { recursive: true, force: true });
}
