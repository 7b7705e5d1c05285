#!/usr/bin/env node
// Data-parallel training on this machine: full fine-tuning steps (global batch B = 8 sequences of
// T = 256 tokens, loss on the last 96) in one process with 2 threads, against `mpirun -np 2` with
// 1 thread per rank on the same global batches. Prints seconds per step and samples/s of each, and
// the cost of the gradient allreduce per step (timed alone, the same call the trainer makes).
//   node bench/dp-train.mjs [--preset gpt2-small] [--steps 4] [--ranks 2]
// Needs Open MPI's mpirun and an addon built with MPI.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Model, nativeOf } from '../dist/model/model.js';
import { Trainer } from '../dist/train/trainer.js';
import { worldFromEnv } from '../dist/dist/index.js';
import { benchModel, cpuDescription, median, rng } from './common.mjs';

const { values: opt } = parseArgs({
  options: {
    preset: { type: 'string', default: 'gpt2-small' },
    steps: { type: 'string', default: '4' },
    ranks: { type: 'string', default: '2' },
    threads: { type: 'string' },
    child: { type: 'boolean', default: false },
  },
});
const B = 8, T = 256, R = 96;

if (opt.child) {
  const world = worldFromEnv();
  const model = await Model.load(await benchModel(opt.preset), { threads: Number(opt.threads), tokenizer: false });
  const trainer = new Trainer(model, { mode: 'full', batchSize: B, world, lr: 1e-4 });
  const next = rng(7);
  const batch = () =>
    Array.from({ length: B }, () => ({
      tokens: Array.from({ length: T }, () => next(model.info.vocabSize)),
      weights: Array.from({ length: T }, (_, t) => (t >= T - 1 - R && t < T - 1 ? 1 : 0)),
    }));
  const steps = Number(opt.steps), times = [];
  for (let s = 0; s <= steps; s++) {
    const data = batch();
    const t0 = process.hrtime.bigint();
    await trainer.trainStep(data, 1e-4);
    if (s > 0) times.push(Number(process.hrtime.bigint() - t0) / 1e9); // step 0 warms up
  }
  const reduce = [];
  for (let i = 0; i < 3; i++) {
    const t0 = process.hrtime.bigint();
    await world.allreduceGrads(nativeOf(model));
    reduce.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  const params = nativeOf(model).tensors().reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
  if (world.rank === 0)
    console.log(JSON.stringify({ ranks: world.size, threads_per_rank: Number(opt.threads), transport: world.transport, params, sec_per_step: +median(times).toFixed(3), samples_per_s: +(B / median(times)).toFixed(2), allreduce_sec: +median(reduce).toFixed(3) }));
  model.dispose();
} else {
  const self = fileURLToPath(import.meta.url);
  const args = ['--child', '--preset', opt.preset, '--steps', opt.steps];
  console.log(JSON.stringify({ ...cpuDescription(), preset: opt.preset, global_batch: `${B} x ${T}` }));
  const one = spawnSync(process.execPath, [self, ...args, '--threads', '2'], { encoding: 'utf8' });
  if (one.status !== 0) throw new Error(one.stderr);
  const single = JSON.parse(one.stdout.trim().split('\n').pop());
  console.log(JSON.stringify(single));
  const root = process.getuid?.() === 0 ? ['--allow-run-as-root'] : [];
  const k = Number(opt.ranks);
  const mpi = spawnSync('mpirun', [...root, '--oversubscribe', '--mca', 'btl', 'self,vader', '--mca', 'btl_vader_single_copy_mechanism', 'none', '-np', String(k), process.execPath, self, ...args, '--threads', '1'], { encoding: 'utf8' });
  if (mpi.status !== 0) throw new Error(mpi.stderr);
  const dp = JSON.parse(mpi.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop());
  console.log(JSON.stringify({ ...dp, vs_one_process: +(single.sec_per_step / dp.sec_per_step).toFixed(3), allreduce_share_of_step: +(dp.allreduce_sec / dp.sec_per_step).toFixed(3) }));
}
