#!/usr/bin/env node
// Peak memory of the LM-head loss + gradients for 4096 tokens × vocab 50257 (gpt2-small's head):
// the engine's fused streaming kernel against a naive full-logits implementation, in the same run,
// each in its own process. Also checks both give the same loss and gradients (checksum).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './common.mjs';

const exe = join(repoRoot, 'build', 'kpig_bench_ce');
if (!existsSync(exe)) throw new Error(`${exe} not found: build with \`npx cmake-js compile\``);
const run = (mode) => {
  const r = spawnSync(exe, [mode, ...process.argv.slice(2)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${exe} ${mode} failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
};
const fused = run('fused');
const naive = run('naive');
console.log(JSON.stringify(fused));
console.log(JSON.stringify(naive));
const ratio = fused.head_mb / naive.head_mb;
console.log(
  `head memory: fused ${fused.head_mb.toFixed(1)} MB vs naive ${naive.head_mb.toFixed(1)} MB = ${(100 * ratio).toFixed(1)}% ` +
    `(target ≤ 10%); loss ${fused.loss.toFixed(6)} vs ${naive.loss.toFixed(6)}; gradient checksum ${fused.checksum.toPrecision(6)} vs ${naive.checksum.toPrecision(6)}`,
);
if (Math.abs(fused.loss - naive.loss) > 1e-4 || Math.abs(fused.checksum - naive.checksum) > 1e-3 * Math.max(1, Math.abs(naive.checksum)))
  throw new Error('fused and naive results differ');
