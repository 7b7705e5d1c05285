// Data-parallel training over MPI: `mpirun -np 2 kpig train` against one process on the same
// global batches (losses and weights within 1e-6 relative over 20 steps), resume across rank
// counts, and a failing rank ending the whole job instead of leaving the other one waiting; then
// whole continual runs (`mpirun -np 2 kpig run`: shared evaluation, IG scoring, EWC statistics and
// LwF answers) against one process, and runs stopped at one rank count and resumed at the other.
// Needs Open MPI's mpirun and an addon built with MPI (`apt-get install -y openmpi-bin
// libopenmpi-dev` before `npm install`); without them these tests say so and are skipped.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAddon } from '../src/native/index.js';
import { tableFromIPC } from 'apache-arrow';
import { readSafetensors, toFloat32 } from '../src/model/safetensors.js';
import { ModelDir } from './support/models.js';
import { tinyRunInputs, writeGeneralSamples } from './support/run-inputs.js';

const dirs = new ModelDir();
const root = mkdtempSync(join(tmpdir(), 'kpig-mpi-'));
afterAll(() => {
  dirs.cleanup();
  rmSync(root, { recursive: true, force: true });
});

const hasMpirun = spawnSync('mpirun', ['--version'], { encoding: 'utf8' }).status === 0;
const built = loadAddon().distInfo().built;
const why = !built ? 'the addon was built without MPI' : !hasMpirun ? 'mpirun is not installed' : '';
const title = why ? ` (skipped: ${why}; apt-get install -y openmpi-bin libopenmpi-dev, then rebuild)` : '';

// Shared memory between the ranks of this one machine, no network.
const MPI_ARGS = [
  ...(process.getuid?.() === 0 ? ['--allow-run-as-root'] : []),
  '--oversubscribe', '--mca', 'btl', 'self,vader', '--mca', 'btl_vader_single_copy_mechanism', 'none',
];
const cli = ['dist/cli/main.js'];
const kpig = (args: string[]) => spawnSync(process.execPath, [...cli, ...args], { encoding: 'utf8' });
const mpirun = (np: number, args: string[]) => spawnSync('mpirun', [...MPI_ARGS, '-np', String(np), process.execPath, ...cli, ...args], { encoding: 'utf8', timeout: 240_000 });

async function state(dir: string) {
  const losses: number[] = JSON.parse(await readFile(join(dir, 'trainer_state.json'), 'utf8')).losses;
  const weights = await readSafetensors(join(dir, 'model.safetensors'));
  return { losses, weights };
}

/** Largest relative loss difference, and largest per-tensor relative L2 difference of the weights. */
async function compare(a: string, b: string) {
  const x = await state(a), y = await state(b);
  expect(y.losses).toHaveLength(x.losses.length);
  const loss = Math.max(...x.losses.map((l, i) => Math.abs(l - y.losses[i]) / Math.abs(l)));
  let weights = 0;
  expect(x.weights.tensors.size).toBeGreaterThan(0);
  for (const [name, t] of x.weights.tensors) {
    expect(t.dtype).toBe('F32');
    const u = new Float32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 4);
    const o = y.weights.tensors.get(name)!;
    const v = new Float32Array(o.bytes.buffer, o.bytes.byteOffset, o.bytes.byteLength / 4);
    let num = 0, den = 0;
    for (let i = 0; i < u.length; i++) {
      num += (u[i] - v[i]) ** 2;
      den += u[i] ** 2;
    }
    weights = Math.max(weights, Math.sqrt(num / Math.max(den, 1e-30)));
  }
  return { loss, weights };
}

describe('data-parallel training over MPI', () => {
  let model: string;
  let data: string;
  const train = (out: string, steps: number, extra: string[] = []) => [
    'train', model, '--data', data, '--out', out, '--full', '--batch-size', '8', '--lr', '1e-3', '--schedule', 'constant',
    '--checkpoint-every', '5', '--max-steps', String(steps), '--threads', '1', ...extra,
  ];
  beforeAll(async () => {
    model = await dirs.make({ preset: 'llama-nano', seed: 2, config: { vocab_size: 259 } });
    data = join(root, 'rows.jsonl');
    const words = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta'];
    writeFileSync(data, Array.from({ length: 160 }, (_, i) => JSON.stringify({ instruction: `Say word ${i % 7}.`, input: `item ${i}`, output: words[i % 7] })).join('\n') + '\n');
  });

  it(`2 ranks give one process's losses and weights within 1e-6 over 20 steps; rank 0 alone writes${title}`, { skip: Boolean(why), timeout: 300_000 }, async () => {
    const one = join(root, 'one'), two = join(root, 'two');
    expect(kpig(train(one, 20)).status).toBe(0);
    const r = mpirun(2, train(two, 20));
    expect(r.stderr).toContain('data-parallel over 2 ranks');
    expect(r.status).toBe(0);
    const d = await compare(join(one, 'checkpoint-20'), join(two, 'checkpoint-20'));
    expect(d.loss).toBeLessThan(1e-6);
    expect(d.weights).toBeLessThan(1e-6);
    // The ranks did not compute the same thing twice: the first step's loss is the whole batch's.
    const l1 = (await state(join(one, 'checkpoint-20'))).losses[0], l2 = (await state(join(two, 'checkpoint-20'))).losses[0];
    expect(Math.abs(l1 - l2) / l1).toBeLessThan(1e-12);
    expect((r.stdout + r.stderr).match(/model saved to/g)).toHaveLength(1);
  });

  it(`resume works across rank counts: 2 ranks then 1, and 1 then 2, end where one process ends${title}`, { skip: Boolean(why), timeout: 300_000 }, async () => {
    const ref = join(root, 'ref'), a = join(root, 'two-then-one'), b = join(root, 'one-then-two');
    expect(kpig(train(ref, 20)).status).toBe(0);
    expect(mpirun(2, train(a, 10)).status).toBe(0);
    let r = kpig([...train(a, 20), '--resume']);
    expect(r.stderr).toContain('resumed from');
    expect(r.status).toBe(0);
    expect(kpig(train(b, 10)).status).toBe(0);
    r = mpirun(2, [...train(b, 20), '--resume']);
    expect(r.stderr).toContain('resumed from');
    expect(r.status).toBe(0);
    for (const dir of [a, b]) {
      const d = await compare(join(ref, 'checkpoint-20'), join(dir, 'checkpoint-20'));
      expect(d.loss).toBeLessThan(1e-6);
      expect(d.weights).toBeLessThan(1e-6);
    }
  });

  it(`a rank that fails ends the job with its error instead of leaving the other rank waiting${title}`, { skip: Boolean(why), timeout: 120_000 }, () => {
    const busy = join(root, 'busy');
    expect(kpig(train(busy, 2)).status).toBe(0);
    // Rank 0 refuses the non-empty folder; rank 1 would wait in its first allreduce forever.
    const r = mpirun(2, train(busy, 2));
    expect(r.error).toBeUndefined(); // not killed by the timeout
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('is not empty');
  });

  it(`any command but train and run refuses to start as several ranks, before writing anything${title}`, { skip: Boolean(why), timeout: 120_000 }, () => {
    const out = join(root, 'score-under-mpi.arrow');
    const r = mpirun(2, ['score', model, '--data', join(root, 'no-such-input.arrow'), '--out', out]);
    expect(r.error).toBeUndefined();
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('kpig score was started as 2 MPI ranks, but only kpig train and kpig run run data-parallel');
    expect(existsSync(out)).toBe(false);
  });
});

describe('a continual run (kpig run) over MPI', () => {
  let config: (name: string, strategy: Record<string, unknown>, train?: Record<string, unknown>) => string;
  beforeAll(async () => {
    const { model, data } = await tinyRunInputs(dirs, root);
    const general = writeGeneralSamples(root);
    config = (name, strategy, train = {}) => {
      if (strategy.name === 'gere') strategy = { generalData: general, ...strategy };
      const path = join(root, `${name}.json`);
      writeFileSync(path, JSON.stringify({
        model, data, stream: 'main',
        strategy: { m: 3, fisherSamples: 5, ...strategy },
        train: { batchSize: 4, lr: 3e-3, checkpointEvery: 1, maxLength: 128, ...train },
        eval: { maxInstancesPerTask: 3, maxNewTokens: 4, batchSize: 2 },
        seed: 1, threads: 1,
      }));
      return path;
    };
  });

  const steps = async (dir: string) => {
    const out: number[] = [];
    for (let t = 1; t <= 3; t++)
      for (const l of (await readFile(join(dir, `stage-0${t}`, 'train.jsonl'), 'utf8')).trim().split('\n')) out.push(JSON.parse(l).loss);
    return out;
  };
  const maxRel = (a: number[], b: number[]) => Math.max(...a.map((x, i) => Math.abs(x - b[i]) / Math.max(Math.abs(x), 1e-12)));
  /** Largest relative L2 difference over the tensors of two safetensors files. */
  const tensorsDiffer = async (a: string, b: string) => {
    const x = await readSafetensors(a), y = await readSafetensors(b);
    expect([...y.tensors.keys()].sort()).toEqual([...x.tensors.keys()].sort());
    let worst = 0;
    for (const [name, t] of x.tensors) {
      const u = toFloat32(t), v = toFloat32(y.tensors.get(name)!);
      let num = 0, den = 0;
      for (let i = 0; i < u.length; i++) {
        num += (u[i] - v[i]) ** 2;
        den += u[i] ** 2;
      }
      worst = Math.max(worst, Math.sqrt(num / Math.max(den, 1e-30)));
    }
    return worst;
  };
  const finalWeights = (dir: string, t: number) => join(dir, `stage-0${t}`, 'final', 'model.safetensors');
  const results = async (dir: string) => JSON.parse(await readFile(join(dir, 'results.json'), 'utf8')).matrix as number[][];
  const table = (dir: string, file: string) => tableFromIPC(readFileSync(join(dir, file))).toArray().map((r) => JSON.parse(JSON.stringify(r.toJSON())) as Record<string, unknown>);

  it.each([
    ['kpig', { name: 'kpig' }],
    ['ewc', { name: 'ewc' }],
    ['lwf', { name: 'lwf' }],
    ['gere', { name: 'gere' }],
    ['adaptinf', { name: 'adaptinf', adaptClusters: 2, adaptBins: 4, adaptPoolFactor: 1 }],
  ])(`%s: 2 ranks give one process's plans, losses, weights and scores; rank 0 alone writes and reports${title}`, { skip: Boolean(why), timeout: 600_000 }, async (name, strategy) => {
    const cfg = config(name, strategy);
    const one = join(root, `${name}-one`), two = join(root, `${name}-two`);
    const a = kpig(['run', cfg, '--out', one]);
    expect(a.stderr).toContain('done');
    expect(a.status).toBe(0);
    const b = mpirun(2, ['run', cfg, '--out', two]);
    expect(b.stderr).toContain('data-parallel over 2 ranks');
    expect(b.status).toBe(0);
    expect(b.stderr.match(/kpig run: done/g)).toHaveLength(1);
    expect(b.stderr.match(/^stage 2\/3/gm)).toHaveLength(1);
    // The same loss at every step of every stage (a rank's missing or doubled share moves the first
    // step's loss by far more), and the same weights after the first stage.
    const l1 = await steps(one), l2 = await steps(two);
    expect(l2).toHaveLength(l1.length);
    expect(maxRel(l1, l2)).toBeLessThan(1e-6);
    expect(await tensorsDiffer(finalWeights(one, 1), finalWeights(two, 1))).toBeLessThan(1e-6);
    // Later stages start AdamW afresh, whose first update is lr·g/(|g| + ε): for the few weights
    // whose gradient is below ε the float rounding of the summed gradients (1e-7 relative) moves
    // the update by up to lr·1e-2. The final weights agree to ~1e-4 (docs/cluster.md).
    expect(await tensorsDiffer(finalWeights(one, 3), finalWeights(two, 3))).toBeLessThan(1e-3);
    for (let t = 1; t <= 3; t++) expect(table(two, `stage-0${t}/plan.arrow`)).toEqual(table(one, `stage-0${t}/plan.arrow`));
    // Evaluation and probes were shared out and gathered back: the same predictions, in the same order.
    expect(await results(two)).toEqual(await results(one));
    for (const f of ['base/eval.arrow', 'stage-03/eval.arrow']) expect(table(two, f)).toEqual(table(one, f));
    if (name === 'kpig') {
      // The replay scores of stage 2 (under stage 1's weights, which agree), and the per-step IG of its objective.
      const s1 = table(one, 'stage-02/ig.arrow') as Array<{ ig_ce: number; masked_instruction: string }>, s2 = table(two, 'stage-02/ig.arrow') as typeof s1;
      expect(s1.length).toBeGreaterThan(0);
      expect(s2.map((x) => x.masked_instruction)).toEqual(s1.map((x) => x.masked_instruction));
      expect(Math.max(...s1.map((x, i) => Math.abs(x.ig_ce - s2[i].ig_ce)))).toBeLessThan(1e-6);
      const igs = async (dir: string) => (await readFile(join(dir, 'stage-02', 'train.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l).ig as number);
      const i1 = await igs(one), i2 = await igs(two);
      expect(Math.max(...i1.map((x, i) => Math.abs(x - i2[i])))).toBeLessThan(1e-5);
    }
    if (name === 'ewc') expect(await tensorsDiffer(join(one, 'stage-02', 'ewc.safetensors'), join(two, 'stage-02', 'ewc.safetensors'))).toBeLessThan(1e-5);
    if (name === 'lwf') expect(table(two, 'stage-03/plan.arrow').some((x) => (x as { role: string }).role === 'lwf')).toBe(true);
    // GeRe's reference states (every rank computes them) and its hidden-state loss (each rank on its share).
    if (name === 'gere') expect(await tensorsDiffer(join(one, 'stage-01', 'gere.safetensors'), join(two, 'stage-01', 'gere.safetensors'))).toBe(0);
    if (name === 'adaptinf') expect(await readFile(join(two, 'stage-03', 'strategy-state.json'), 'utf8')).toBe(await readFile(join(one, 'stage-03', 'strategy-state.json'), 'utf8'));
    const env = JSON.parse(await readFile(join(two, 'environment.json'), 'utf8'));
    expect(env.ranks).toBe(2);
  });

  it(`olora (a new adapter per task, folded into the base weights): 2 ranks give one process's losses, adapters and scores${title}`, { skip: Boolean(why), timeout: 600_000 }, async () => {
    const cfg = config('olora', { name: 'olora', oloraLambda2: 0.01 }, { mode: 'lora', loraRank: 2, loraAlpha: 4 });
    const one = join(root, 'olora-one'), two = join(root, 'olora-two');
    expect(kpig(['run', cfg, '--out', one]).status).toBe(0);
    expect(mpirun(2, ['run', cfg, '--out', two]).status).toBe(0);
    expect(maxRel(await steps(one), await steps(two))).toBeLessThan(1e-6);
    expect(await tensorsDiffer(join(one, 'stage-02', 'final', 'adapter_model.safetensors'), join(two, 'stage-02', 'final', 'adapter_model.safetensors'))).toBeLessThan(1e-3);
    expect(await results(two)).toEqual(await results(one));
  });

  it(`a run stopped at 1 rank resumes at 2, and one stopped at 2 resumes at 1, ending where one process ends${title}`, { skip: Boolean(why), timeout: 600_000 }, async () => {
    const cfg = config('kpig-resume', { name: 'kpig' });
    const ref = join(root, 'kpig-one');
    if (!existsSync(join(ref, 'results.json'))) expect(kpig(['run', cfg, '--out', ref]).status).toBe(0);
    const a = join(root, 'resume-1-2'), b = join(root, 'resume-2-1');
    // 8 current items and 3 replayed per earlier task, at batch 4: stages of 2, 3 and 4 steps.
    let r = kpig(['run', cfg, '--out', a, '--stop-after', '6']);
    expect(r.stderr).toContain('stopped after 6 steps');
    expect(r.status).toBe(0);
    expect(existsSync(join(a, 'stage-03', 'checkpoint'))).toBe(true);
    r = mpirun(2, ['run', '--resume', a]);
    expect(r.stderr).toContain('resuming at stage 3');
    expect(r.status).toBe(0);
    r = mpirun(2, ['run', cfg, '--out', b, '--stop-after', '3']);
    expect(r.stderr.match(/stopped after 3 steps/g)).toHaveLength(1);
    expect(r.status).toBe(0);
    r = kpig(['run', '--resume', b]);
    expect(r.stderr).toContain('resuming at stage 2');
    expect(r.status).toBe(0);
    for (const dir of [a, b]) {
      expect(maxRel(await steps(ref), await steps(dir))).toBeLessThan(1e-6);
      expect(await tensorsDiffer(finalWeights(ref, 3), finalWeights(dir, 3))).toBeLessThan(1e-3);
      expect(await results(dir)).toEqual(await results(ref));
    }
  });
});
