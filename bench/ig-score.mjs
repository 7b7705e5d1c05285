#!/usr/bin/env node
// Information-gain scoring of B = 8 pairs of T = 256 tokens (instruction 64 with three key-part
// spans of 3–8 tokens replaced by a mask id, input 96, response 96), as ../shared/peers/torch_kpig.py
// --task ig builds them, side by side with that tuned PyTorch peer in the same run. Prints samples/s,
// the ratio, the share of the fp32 matmul floor and peak memory.
// With --ort-modules <node_modules holding onnxruntime-node>, the onnxruntime-node peer runs too and
// the ratio is taken against the faster peer.
// --class avx2 measures the AVX2 + FMA class on any machine (kernels and peers limited to AVX2).
//   node bench/ig-score.mjs [--models gpt2-small,smol-135m-like] [--threads 2] [--reps 5] [--rounds 3] [--class native|avx2] [--bf16] [--ort-modules DIR]
import { parseArgs } from 'node:util';
import { Model } from '../dist/model/model.js';
import { scorePairs } from '../dist/scoring/pairs.js';
import { benchModel, cpuClass, cpuDescription, fmaPeak, forwardMatmulFlops, median, ortPeer, rng, timed, torchPeer } from './common.mjs';

const { values: opt } = parseArgs({
  options: {
    models: { type: 'string', default: 'gpt2-small,smol-135m-like' },
    threads: { type: 'string', default: '2' },
    reps: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
    class: { type: 'string', default: 'native' },
    'no-peer': { type: 'boolean', default: false },
    bf16: { type: 'boolean', default: false },
    'ort-modules': { type: 'string' },
  },
});
const threads = Number(opt.threads);
const B = 8, L_INSTR = 64, L_INPUT = 96, R = 96, T = L_INSTR + L_INPUT + R;
const { torchArgs } = cpuClass(opt.class);
const peakGflops = fmaPeak(threads, opt.class);
console.log(JSON.stringify({ ...cpuDescription(), class: opt.class, fp32_fma_peak_gflops: peakGflops, threads }));

/** Matmul FLOPs of what the peer computes: two full forward passes, head on the R predicting rows. */
const igFlops = (info) => 2 * B * forwardMatmulFlops(info, T, R);

for (const preset of opt.models.split(',')) {
  const model = await Model.load(await benchModel(preset), { threads, tokenizer: false });
  const V = model.info.vocabSize;
  const next = rng(11);
  const pairs = Array.from({ length: B }, () => {
    const full = Array.from({ length: T }, () => next(V - 1));
    const masked = [...full];
    for (let s = 0; s < 3; s++) {
      const len = 3 + next(6), start = next(L_INSTR - len);
      for (let t = start; t < start + len; t++) masked[t] = V - 1;
    }
    return { full, masked, responseLen: R };
  });
  // The bf16 mode's deviation from fp32 on the same pairs.
  let deviation = null;
  if (opt.bf16) {
    const fp32 = await scorePairs(model, pairs);
    model.setMatmulPrecision('bf16');
    const bf16 = await scorePairs(model, pairs);
    const worst = (k) => Math.max(...fp32.map((s, i) => Math.abs(s[k] - bf16[i][k])));
    deviation = { ig_ce: +worst('igCe').toExponential(2), ig_kl: +worst('igKl').toExponential(2), ig_js: +worst('igJs').toExponential(2), ce_full: +worst('ceFull').toExponential(2) };
  }
  let shared = 0;
  const run = async () => {
    const s = await scorePairs(model, pairs);
    shared = s.reduce((a, x) => a + x.sharedPrefix, 0) / B;
  };
  // Rounds alternate kpig and the peers, so a ratio compares runs minutes apart at most; the
  // reported ratios are the medians of the per-round ratios (this machine's speed drifts).
  const flops = igFlops(model.info);
  const rounds = Number(opt.rounds);
  const ours = [], torchSec = [], ortSec = [], torchRatio = [], ortRatio = [], fasterRatio = [];
  let torch = null, ort = null;
  const withOrt = !opt['no-peer'] && opt['ort-modules'] && !opt.bf16 && opt.class === 'native';
  for (let r = 0; r < rounds; r++) {
    const t = (await timed(run, { warmup: r === 0 ? 1 : 0, reps: Number(opt.reps) })).median;
    ours.push(t);
    if (opt['no-peer']) continue;
    torch = torchPeer(['--model', preset, '--task', 'ig', '--threads', String(threads), '--reps', opt.reps, ...torchArgs, ...(opt.bf16 ? ['--bf16'] : [])]);
    torchSec.push(torch.sec_median);
    torchRatio.push(torch.sec_median / t);
    let fastest = torch.sec_median;
    // onnxruntime picks its kernels from the CPU alone, so it runs in the native class only.
    if (withOrt) {
      ort = ortPeer(preset, threads, Number(opt.reps), opt['ort-modules']);
      ortSec.push(ort.sec_median);
      ortRatio.push(ort.sec_median / t);
      fastest = Math.min(fastest, ort.sec_median);
    }
    fasterRatio.push(fastest / t);
  }
  const oursMedian = median(ours);
  const line = {
    model: preset,
    threads,
    rounds,
    precision: opt.bf16 ? `bf16 matmuls (${model.info.bf16Isa})` : `fp32 (${model.info.isa})`,
    kpig_sec: +oursMedian.toFixed(3),
    kpig_samples_per_s: +(B / oursMedian).toFixed(2),
    mean_shared_prefix: shared,
    kpig_floor_share: peakGflops ? +(flops / (peakGflops * 1e9) / oursMedian).toFixed(3) : null,
    kpig_peak_rss_mb: Math.round(process.resourceUsage().maxRSS / 1024),
    ...(deviation ? { bf16_max_abs_deviation_from_fp32: deviation } : {}),
  };
  model.dispose();
  if (!opt['no-peer']) {
    const torchMedian = median(torchSec);
    line.torch_sec = +torchMedian.toFixed(3);
    line.torch_samples_per_s = +(B / torchMedian).toFixed(2);
    line.torch_floor_share = peakGflops ? +(flops / (peakGflops * 1e9) / torchMedian).toFixed(3) : null;
    line.torch_peak_rss_mb = torch.peak_rss_MB;
    line.speedup_vs_torch = +median(torchRatio).toFixed(3);
    if (withOrt) {
      line.ort_sec = +median(ortSec).toFixed(3);
      line.ort_samples_per_s = +(B / median(ortSec)).toFixed(2);
      line.ort_peak_rss_mb = ort.peak_rss_MB;
      line.speedup_vs_ort = +median(ortRatio).toFixed(3);
    }
    line.speedup_vs_faster_peer = +median(fasterRatio).toFixed(3);
    line.speedup_vs_faster_peer_per_round = fasterRatio.map((x) => +x.toFixed(3));
  }
  console.log(JSON.stringify(line));
}
