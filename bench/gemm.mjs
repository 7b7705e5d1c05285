#!/usr/bin/env node
// The float32 GEMM alone on the bench models' projection shapes (M = 2048 rows = 8 × 256 tokens;
// y = x·Wᵀ as the forward pass calls it), as a share of the FMA peak measured in the same run by the
// peers' fma_peak.c: the AVX2 class (KPIG_ISA=avx2 against its 256-bit line) and the machine's own
// path (against its widest line). --layouts adds the backward pass's products (dx = dy·W and the
// weight gradient dyᵀ·x, M summed). Rounds alternate peak and GEMM runs; medians over --rounds.
//   node bench/gemm.mjs [--threads 2] [--rounds 3] [--classes avx2,native] [--layouts fwd,dx,dw]
// Needs the C++ build (build/kpig_bench_gemm, made by `npm install`).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { cpuDescription, fmaPeak, median, repoRoot } from './common.mjs';

const { values: opt } = parseArgs({
  options: { threads: { type: 'string', default: '2' }, rounds: { type: 'string', default: '3' }, classes: { type: 'string', default: 'avx2,native' }, layouts: { type: 'string', default: 'fwd' } },
});
const exe = join(repoRoot, 'build', 'kpig_bench_gemm');
if (!existsSync(exe)) throw new Error(`${exe} is missing: build the C++ targets (npx cmake-js compile)`);
const threads = Number(opt.threads);
const SHAPES = {
  'gpt2-small': ['2304:768', '768:768', '3072:768', '768:3072'],
  'smol-135m-like': ['960:576', '576:576', '3072:576', '576:1536'],
};
console.log(JSON.stringify({ ...cpuDescription(), threads }));
for (const cls of opt.classes.split(',')) {
  const peaks = [], runs = [];
  let isa = null;
  for (let r = 0; r < Number(opt.rounds); r++) {
    peaks.push(fmaPeak(threads, cls));
    const env = { ...process.env };
    if (cls === 'avx2') env.KPIG_ISA = 'avx2';
    else delete env.KPIG_ISA;
    const shapes = Object.values(SHAPES).flat().join(',');
    const out = spawnSync(exe, [String(threads), '5', '2048', shapes, opt.layouts], { encoding: 'utf8', env });
    if (out.status !== 0) throw new Error(`kpig_bench_gemm failed: ${out.stderr}`);
    const lines = out.stdout.trim().split('\n').map((l) => JSON.parse(l));
    isa = lines[0].isa;
    runs.push(lines);
  }
  const peak = median(peaks);
  for (const [model, shapes] of Object.entries(SHAPES))
    for (const shape of shapes)
      for (const layout of opt.layouts.split(',')) {
        const [N, K] = shape.split(':').map(Number);
        const pick = (lines) => lines.find((l) => l.N === N && l.K === K && l.layout === layout);
        const g = median(runs.map((lines) => pick(lines).gflops));
        // Share per round (peak and GEMM of the same round), then the median.
        const shares = runs.map((lines, r) => pick(lines).gflops / peaks[r]);
        console.log(JSON.stringify({ class: cls, isa, model, layout, M: 2048, N, K, gflops: g, fma_peak_gflops: peak, share_of_peak: +median(shares).toFixed(3) }));
      }
}
