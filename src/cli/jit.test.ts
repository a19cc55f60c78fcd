import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { tuneJit } from './jit.cjs';

const jitModule = fileURLToPath(new URL('./jit.cjs', import.meta.url));

/**
 * Whether a small function is optimized after `calls` calls, in a fresh node, with or without
 * tuneJit first. Optimization is synchronous there (--no-concurrent-recompilation), so the answer
 * depends on the counts, not on timing: V8's default optimizes this one within 200–400 calls, the
 * raised budget within 3,000–4,000 (measured on Node 20).
 */
function optimizedAfter(calls: number, tuned: boolean): boolean {
  const script = `
    ${tuned ? `(await import(${JSON.stringify(jitModule)})).tuneJit();` : ''}
    function work(a, b) { let s = 0; for (let i = 0; i < 8; i++) s += (a * i) ^ b; return s; }
    let sum = 0;
    for (let i = 0; i < ${calls}; i++) sum += work(i, 7);
    process.stdout.write(String((%GetOptimizationStatus(work) & 16) !== 0));`;
  const out = execFileSync(process.execPath, ['--allow-natives-syntax', '--no-concurrent-recompilation', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  return out === 'true';
}

test('tuneJit raises the budget V8 spends before optimizing a function', { skip: !/^11\./.test(process.versions.v8) && 'measured on V8 11 (Node 20) only' }, () => {
  assert.equal(optimizedAfter(1200, false), true, "V8's default optimizes a function called 1,200 times");
  assert.equal(optimizedAfter(1200, true), false, 'after tuneJit the same function is not optimized yet');
  assert.equal(optimizedAfter(20_000, true), true, 'and it is once it stays hot');
});

test('another V8 keeps its defaults: the budget was measured on V8 11 only', () => {
  assert.equal(tuneJit('12.4.254.21-node.33'), false);
  assert.equal(tuneJit('13.6.233.10-node.18'), false);
});
