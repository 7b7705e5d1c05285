#!/usr/bin/env node
// One full-fine-tuning step (forward + backward + AdamW) on B = 8 sequences of T = 256 tokens with
// positive weights on the last 96 (the response), side by side with the tuned PyTorch peer
// (torch_kpig.py --task train) in the same run. Prints tokens/s, the ratio to PyTorch and the
// share of the machine's fp32 matmul floor.
// With --bf16: our bf16 matmul mode (fp32 master weights) against PyTorch's bf16 autocast.
// --class avx2 measures the AVX2 + FMA class on any machine (kernels and peer limited to AVX2).
//   node bench/train-step.mjs [--models gpt2-small,smol-135m-like] [--threads 2] [--reps 5] [--rounds 3] [--class native|avx2] [--bf16]
import { parseArgs } from 'node:util';
import { Model, nativeOf, packSequences } from '../dist/model/model.js';
import { benchModel, cpuClass, cpuDescription, fmaPeak, forwardMatmulFlops, median, rng, timed, torchPeer } from './common.mjs';

const { values: opt } = parseArgs({
  options: {
    models: { type: 'string', default: 'gpt2-small,smol-135m-like' },
    threads: { type: 'string', default: '2' },
    reps: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
    class: { type: 'string', default: 'native' },
    'no-peer': { type: 'boolean', default: false },
    bf16: { type: 'boolean', default: false },
  },
});
const threads = Number(opt.threads);
const B = 8, T = 256, R = 96;
// The matmul floor: matmul FLOPs at the fp32 FMA peak measured in this run (this machine, these threads).
const { torchArgs } = cpuClass(opt.class);
const peakGflops = fmaPeak(threads, opt.class);
console.log(JSON.stringify({ ...cpuDescription(), class: opt.class, fp32_fma_peak_gflops: peakGflops, threads }));

/** Matmul FLOPs of forward + backward (3× forward), head on the R response-predicting rows, every
 *  layer on all T rows (what the peer computes; kpig runs the last layer's tail on the R rows only,
 *  so its share is of the same count). */
const trainFlops = (info) => 3 * B * forwardMatmulFlops(info, T, R);

for (const preset of opt.models.split(',')) {
  const model = await Model.load(await benchModel(preset), { threads, tokenizer: false });
  const nat = nativeOf(model);
  nat.trainFull();
  if (opt.bf16) model.setMatmulPrecision('bf16');
  const next = rng(7);
  const seqs = Array.from({ length: B }, () => Array.from({ length: T }, () => next(model.info.vocabSize)));
  const { tokens, offsets } = packSequences(seqs);
  const weights = new Float32Array(B * T);
  let sum = 0;
  for (let s = 0; s < B; s++)
    for (let t = T - 1 - R; t < T - 1; t++) sum += weights[s * T + t] = 0.5 + next(1000) / 1000;
  for (let i = 0; i < weights.length; i++) weights[i] /= sum;
  const step = async () => {
    await nat.trainAccumulate(tokens, offsets, weights, 0, false);
    await nat.optimizerStep({ lr: 3e-4, weightDecay: 0.1 });
  };
  // Rounds alternate kpig and the peer; the ratio is the median of the per-round ratios.
  const rounds = Number(opt.rounds);
  const ours = [], torchSec = [], ratios = [];
  let torch = null;
  for (let r = 0; r < rounds; r++) {
    const t = (await timed(step, { warmup: r === 0 ? 1 : 0, reps: Number(opt.reps) })).median;
    ours.push(t);
    if (opt['no-peer']) continue;
    torch = torchPeer(['--model', preset, '--task', 'train', '--threads', String(threads), '--reps', opt.reps, ...torchArgs, ...(opt.bf16 ? ['--bf16'] : [])]);
    torchSec.push(torch.sec_median);
    ratios.push(torch.sec_median / t);
  }
  const oursMedian = median(ours);
  const flops = trainFlops(model.info);
  const line = {
    model: preset,
    threads,
    rounds,
    precision: opt.bf16 ? `bf16 matmuls (${model.info.bf16Isa}), fp32 master weights` : `fp32 (${model.info.isa})`,
    kpig_sec: +oursMedian.toFixed(3),
    kpig_tokens_per_s: Math.round((B * T) / oursMedian),
    matmul_gflop: +(flops / 1e9).toFixed(1),
    kpig_gflops: +(flops / 1e9 / oursMedian).toFixed(1),
    kpig_floor_share: peakGflops ? +(flops / (peakGflops * 1e9) / oursMedian).toFixed(3) : null,
  };
  model.dispose();
  if (!opt['no-peer']) {
    const torchMedian = median(torchSec);
    line.torch_sec = +torchMedian.toFixed(3);
    line.torch_tokens_per_s = Math.round((B * T) / torchMedian);
    line.torch_floor_share = peakGflops ? +(flops / (peakGflops * 1e9) / torchMedian).toFixed(3) : null;
    line.torch_peak_rss_mb = torch.peak_rss_MB;
    line.speedup_vs_torch = +median(ratios).toFixed(3);
    line.speedup_vs_torch_per_round = ratios.map((x) => +x.toFixed(3));
  }
  console.log(JSON.stringify(line));
}
