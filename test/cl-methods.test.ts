// The continual-learning methods from the field (O-LoRA, RegLoRA, GeRe, Adapt-∞): each defining
// quantity recomputed here from its formula, plainly, and checked against the code; the hidden-state
// gradient the engine takes checked by finite differences; and every method through `kpig run`,
// stopped and resumed where an uninterrupted run ends.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tableFromIPC } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { diversifyAnswerStyles } from '../src/data/answer-style.js';
import { Model, packSequences } from '../src/model/model.js';
import { readSafetensors, toFloat32 } from '../src/model/safetensors.js';
import { trainingOf } from '../src/model/training.js';
import { coverageSelect, equalShares, histogramEntropy, kMeans, pruneRedundant, redundancy } from '../src/replay/adaptinf.js';
import { adapterProduct, largestEntries, normPenalty, orthogonalityPenalty, recordedEntryPenalty } from '../src/replay/adapters.js';
import { activationClasses, activationStats, marginLoss } from '../src/replay/gere.js';
import { mulberry32 } from '../src/random/rng.js';
import { killRunAt } from './support/kill.js';
import { ModelDir } from './support/models.js';
import { tinyRunInputs, writeGeneralSamples } from './support/run-inputs.js';
import { tinyTaskSet } from './support/tasks.js';

const rand = (n: number, seed: number, scale = 1) => {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);
};

/** Central finite difference of f at x along every coordinate (float64 copies). */
function fd(f: (x: Float64Array) => number, x: Float32Array, h = 1e-4): Float64Array {
  const p = Float64Array.from(x);
  return Float64Array.from(p, (_, i) => {
    const a = Float64Array.from(p), b = Float64Array.from(p);
    a[i] += h;
    b[i] -= h;
    return (f(a) - f(b)) / (2 * h);
  });
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

describe('O-LoRA: the orthogonality penalty and the L2 term', () => {
  const r = 3, inDim = 7;
  const At = rand(r * inDim, 1);
  const earlier = [rand(r * inDim, 2), rand(2 * inDim, 3)];
  // Plain: ‖Aⱼ·Aₜᵀ‖²_F entry by entry, from the transposes.
  const plain = (a: ArrayLike<number>) => {
    let s = 0;
    for (const Aj of earlier)
      for (let p = 0; p < Aj.length / inDim; p++)
        for (let q = 0; q < r; q++) {
          let dot = 0;
          for (let k = 0; k < inDim; k++) dot += Aj[p * inDim + k] * a[q * inDim + k];
          s += dot * dot;
        }
    return s;
  };

  it('equals Σⱼ‖AⱼAₜᵀ‖² and its gradient equals finite differences', () => {
    const { loss, grad } = orthogonalityPenalty(At, earlier, r, inDim);
    expect(loss).toBeCloseTo(plain(At), 10);
    const num = fd(plain, At);
    expect(maxAbsDiff(grad, num)).toBeLessThan(1e-5 * Math.max(1, ...Array.from(num, Math.abs)));
    // Orthogonal rows give no penalty.
    const e1 = new Float32Array(inDim), e2 = new Float32Array(inDim);
    e1[0] = 1;
    e2[1] = 1;
    expect(orthogonalityPenalty(e1, [e2], 1, inDim).loss).toBe(0);
  });

  it('the L2 term is ‖θ‖ with gradient θ/‖θ‖ (finite differences), zero gradient at θ = 0', () => {
    const th = rand(11, 4);
    const { loss, grad } = normPenalty(th);
    expect(loss).toBeCloseTo(Math.hypot(...th), 6);
    expect(maxAbsDiff(grad, fd((x) => Math.hypot(...x), th))).toBeLessThan(1e-6);
    expect(Array.from(normPenalty(new Float32Array(3)).grad)).toEqual([0, 0, 0]);
  });
});

describe('RegLoRA: the recorded entries and the penalty on them', () => {
  const out = 5, r = 2, inDim = 6;
  const B = rand(out * r, 5), A = rand(r * inDim, 6);

  it('records the ⌊share·n⌋ largest |B·A| entries (a plain sort of the product)', () => {
    const d = adapterProduct(B, A, out, r, inDim);
    for (let i = 0; i < out; i++)
      for (let k = 0; k < inDim; k++) {
        let s = 0;
        for (let q = 0; q < r; q++) s += B[i * r + q] * A[q * inDim + k];
        expect(d[i * inDim + k]).toBeCloseTo(s, 6);
      }
    const idx = largestEntries(d, 0.2);
    expect(idx.length).toBe(Math.floor(0.2 * out * inDim));
    const ref = Array.from(d, (v, i) => [Math.abs(v), i]).sort((x, y) => y[0] - x[0]).slice(0, idx.length).map((x) => x[1]).sort((x, y) => x - y);
    expect(Array.from(idx)).toEqual(ref);
    expect(() => largestEntries(d, 0)).toThrow(/share/);
  });

  it('penalises the mean |ΔW| at the recorded entries; gradients equal finite differences', () => {
    const idx = Int32Array.of(0, 7, 7, 13, 29); // duplicates count twice, as concatenated records do
    const plain = (b: ArrayLike<number>, a: ArrayLike<number>) => {
      let s = 0;
      for (const id of idx) {
        const i = Math.floor(id / inDim), k = id % inDim;
        let v = 0;
        for (let q = 0; q < r; q++) v += b[q + i * r] * a[q * inDim + k];
        s += Math.abs(v);
      }
      return s / idx.length;
    };
    const p = recordedEntryPenalty(B, A, out, r, inDim, idx);
    expect(p.loss).toBeCloseTo(plain(B, A), 6);
    expect(maxAbsDiff(p.gradB, fd((b) => plain(b, A), B, 1e-5))).toBeLessThan(1e-4);
    expect(maxAbsDiff(p.gradA, fd((a) => plain(B, a), A, 1e-5))).toBeLessThan(1e-4);
    expect(recordedEntryPenalty(B, A, out, r, inDim, new Int32Array()).loss).toBe(0);
  });
});

describe('GeRe: thresholds, states and the margin loss', () => {
  const C = 4;
  const ref = [rand(3 * C, 7, 2), rand(5 * C, 8, 2)];

  it('μ and σ per unit over every position; states from μ ± σ; the TM loss and its gradient', () => {
    const stats = activationStats(ref, C);
    for (let c = 0; c < C; c++) {
      const xs = ref.flatMap((h) => Array.from({ length: h.length / C }, (_, t) => h[t * C + c]));
      const m = xs.reduce((a, b) => a + b, 0) / xs.length;
      expect(stats.mean[c]).toBeCloseTo(m, 5);
      expect(stats.std[c]).toBeCloseTo(Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / xs.length), 5);
    }
    const cls = activationClasses(ref[1], stats);
    cls.forEach((k, i) => {
      const c = i % C, v = ref[1][i];
      expect(k).toBe(v >= stats.mean[c] + stats.std[c] ? 1 : v <= stats.mean[c] - stats.std[c] ? -1 : 0);
    });
    expect(new Set(cls).size).toBeGreaterThan(1);
    // The current states: the reference moved; the plain TM loss entry by entry.
    const h = Float32Array.from(ref[1], (v, i) => v + Math.sin(i) * 1.3);
    const plainTerms = (x: ArrayLike<number>) =>
      Array.from(cls, (k, i) => {
        const c = i % C, lo = stats.mean[c] - stats.std[c], hi = stats.mean[c] + stats.std[c];
        return k < 0 ? Math.max(0, x[i] - lo) : k > 0 ? Math.max(0, hi - x[i]) : Math.max(0, x[i] - hi) + Math.max(0, lo - x[i]);
      });
    const terms = plainTerms(h);
    const count = terms.filter((v) => v > 0).length;
    expect(count).toBeGreaterThan(0);
    const { loss, grad } = marginLoss(h, cls, stats);
    expect(loss).toBeCloseTo(terms.reduce((a, b) => a + b, 0) / (count + 1e-8), 5);
    // The count of violations is held constant (as the paper's code detaches it).
    expect(maxAbsDiff(grad, fd((x) => plainTerms(x).reduce((a, b) => a + b, 0) / (count + 1e-8), h, 1e-4))).toBeLessThan(1e-3);
    // The reference itself violates nothing.
    expect(marginLoss(ref[1], cls, stats).loss).toBe(0);
  });
});

describe('Adapt-∞: clusters, score choice, budget, CCS, pruning', () => {
  it('k-means finds well-separated groups', () => {
    const r = mulberry32(9);
    const centres = [
      [1, 0, 0],
      [0, 1, 0],
      [0, 0, 1],
    ];
    const feats = Array.from({ length: 60 }, (_, i) => Float32Array.from(centres[i % 3], (v) => v + (r() - 0.5) * 0.1));
    const a = kMeans(feats, 3, 1);
    for (let i = 0; i < 60; i++) expect(a[i]).toBe(a[i % 3]);
    expect(new Set(a).size).toBe(3);
  });

  it('histogram entropy of z-scores (a plain count), equal shares with redistribution', () => {
    const v = Array.from({ length: 200 }, (_, i) => Math.sin(i) * 3 + i / 50);
    const mean = v.reduce((a, b) => a + b, 0) / v.length, sd = Math.sqrt(v.reduce((a, x) => a + (x - mean) ** 2, 0) / v.length);
    const counts = new Map<number, number>();
    for (const x of v) {
      const b = Math.min(9, Math.max(0, Math.floor((((x - mean) / sd + 4) / 8) * 10)));
      counts.set(b, (counts.get(b) ?? 0) + 1);
    }
    const h = -[...counts.values()].reduce((a, c) => a + (c / v.length) * Math.log(c / v.length), 0);
    expect(histogramEntropy(v, 10)).toBeCloseTo(h, 10);
    expect(histogramEntropy([1, 1, 1], 10)).toBe(0);
    expect(equalShares([2, 10, 10], 12)).toEqual([2, 5, 5]);
    expect(equalShares([1, 1], 5)).toEqual([1, 1]);
    expect(equalShares([4, 4, 4], 7).reduce((a, b) => a + b, 0)).toBe(7);
  });

  it('CCS takes the budget across the score range, not only its low end', () => {
    const scores = Array.from({ length: 100 }, (_, i) => i);
    const picked = coverageSelect(scores, 20, 10, mulberry32(3));
    expect(picked).toHaveLength(20);
    expect(new Set(picked).size).toBe(20);
    // Outliers (lowest and highest 5%) are left out; every bin of the kept range gives its share.
    for (const i of picked) expect(i >= 5 && i < 95).toBe(true);
    for (let b = 0; b < 10; b++) expect(picked.filter((i) => Math.min(9, Math.floor(((i - 5) / 89) * 10)) === b).length).toBeGreaterThanOrEqual(1);
    expect(coverageSelect(scores, 200, 10, mulberry32(3))).toHaveLength(100);
  });

  it('pruning drops the most redundant items first (a plain max cosine to earlier items)', () => {
    const base = [Float32Array.of(1, 0), Float32Array.of(0, 1), Float32Array.of(1, 0.01), Float32Array.of(0.7, 0.7)];
    const red = redundancy(base);
    const cos = (a: Float32Array, b: Float32Array) => (a[0] * b[0] + a[1] * b[1]) / (Math.hypot(...a) * Math.hypot(...b));
    expect(red[0]).toBe(-1);
    expect(red[2]).toBeCloseTo(Math.max(cos(base[2], base[0]), cos(base[2], base[1])), 6);
    const keep = pruneRedundant(base, Int32Array.of(0, 0, 0, 0), 3);
    expect(keep).toEqual([true, true, false, true]); // the near-copy of item 0 goes
  });
});

describe('SEFE answer-style diversification (data layer)', () => {
  it('converts ⌊ratio·n⌋ training instances per task, split over the styles, each answered correctly', () => {
    const set = tinyTaskSet();
    const { set: out, report } = diversifyAnswerStyles(set, { ratio: 0.5, seed: 2 });
    const byKey = (xs: typeof set.instances) => new Map(xs.map((x) => [`${x.task_id}/${x.instance_id}`, x]));
    const before = byKey(set.instances), after = byKey(out.instances);
    expect(after.size).toBe(before.size);
    expect(report.tasks.reduce((a, t) => a + t.converted.yesno, 0)).toBeGreaterThan(0);
    expect(report.tasks.reduce((a, t) => a + t.converted.choice, 0)).toBeGreaterThan(0);
    for (const task of set.tasks) {
      const train = set.instances.filter((x) => x.task_id === task.task_id && x.split === 'train');
      const changed = train.filter((x) => after.get(`${x.task_id}/${x.instance_id}`)!.input !== x.input);
      const rec = report.tasks.find((t) => t.task_id === task.task_id)!;
      expect(changed.length + rec.unconvertible).toBe(Math.floor(0.5 * train.length));
      expect(Math.abs(rec.converted.yesno - rec.converted.choice)).toBeLessThanOrEqual(1 + rec.unconvertible);
      for (const x of changed) {
        const y = after.get(`${x.task_id}/${x.instance_id}`)!;
        const gold = x.outputs[0];
        const yn = /Is the answer "([^"]*)"\? Answer yes or no\.$/.exec(y.input);
        if (yn) expect(y.outputs).toEqual([yn[1] === gold ? 'yes' : 'no']);
        else {
          const options = [...y.input.matchAll(/^\(([A-D])\) (.*)$/gm)].map((m) => [m[1], m[2]]);
          expect(options.length).toBeGreaterThanOrEqual(2);
          expect(options.filter(([, t]) => t === gold)).toHaveLength(1);
          expect(y.outputs).toEqual([options.find(([, t]) => t === gold)![0]]);
        }
        expect(y.input.startsWith(x.input)).toBe(true);
      }
    }
    // Test and probe instances stay as they were; the draw is a function of the seed.
    for (const x of set.instances.filter((x) => x.split !== 'train')) expect(after.get(`${x.task_id}/${x.instance_id}`)).toEqual(x);
    expect(diversifyAnswerStyles(set, { ratio: 0.5, seed: 2 }).set).toEqual(out);
    expect(() => diversifyAnswerStyles(set, { ratio: 1.5 })).toThrow(/ratio/);
  });
});

const dirs = new ModelDir();
afterAll(() => dirs.cleanup());

describe('a loss on the final hidden states reaches the weights (finite differences)', () => {
  it('trainAccumulate with a hidden-state gradient gives ∂(Σ c·h)/∂θ', async () => {
    const dir = await dirs.make({ preset: 'llama-nano', seed: 5, config: { vocab_size: 259 } });
    const model = await Model.load(dir, { threads: 1 });
    try {
      const t = trainingOf(model);
      t.enableFullTraining();
      const packed = packSequences([[5, 9, 33, 70, 2], [8, 4, 100]]);
      const C = model.info.hiddenSize;
      const c = rand(packed.tokens.length * C, 11);
      const objective = async () => {
        const h = await t.hiddenStates(packed);
        let s = 0;
        for (let i = 0; i < h.length; i++) s += c[i] * h[i];
        return s;
      };
      t.zeroGrad();
      await t.accumulate(packed, new Float32Array(packed.tokens.length), 0, false, c);
      const name = 'model.layers.0.mlp.down_proj.weight';
      const g = t.read(name, 'grad');
      const w = t.read(name, 'param');
      for (const i of [0, 17, 123]) {
        const h = 1e-2;
        const plus = Float32Array.from(w);
        plus[i] += h;
        t.write(name, 'param', plus);
        const fp = await objective();
        const minus = Float32Array.from(w);
        minus[i] -= h;
        t.write(name, 'param', minus);
        const fm = await objective();
        t.write(name, 'param', w);
        expect(Math.abs(g[i] - (fp - fm) / (2 * h))).toBeLessThan(2e-3 * Math.max(1, Math.abs(g[i])));
      }
    } finally {
      model.dispose();
    }
  });
});

describe('every method through kpig run, stopped and resumed', () => {
  let model: string;
  let data: string;
  let general: string;
  beforeAll(async () => {
    ({ model, data } = await tinyRunInputs(dirs));
    general = writeGeneralSamples(dirs.root);
  });

  const kpig = (args: string[]) => spawnSync(process.execPath, ['dist/cli/main.js', ...args], { encoding: 'utf8' });
  const configFor = (strategy: Record<string, unknown>, mode: 'full' | 'lora') => {
    const path = join(dirs.root, `${strategy.name}.json`);
    writeFileSync(
      path,
      JSON.stringify({
        model,
        data,
        stream: 'main',
        strategy: { m: 3, ...strategy },
        train: { batchSize: 4, lr: 3e-3, checkpointEvery: 1, maxLength: 128, mode, loraRank: 2, loraAlpha: 4 },
        eval: { maxInstancesPerTask: 2, maxNewTokens: 4, batchSize: 8 },
        seed: 1,
        threads: 1,
      }),
    );
    return path;
  };
  const losses = (dir: string, t: number) => readFileSync(join(dir, `stage-0${t}`, 'train.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).loss as number);
  const tensors = async (path: string) => new Map([...(await readSafetensors(path)).tensors].map(([n, t]) => [n, toFloat32(t)]));

  const cases: Array<[string, Record<string, unknown>, 'full' | 'lora']> = [
    ['olora', { name: 'olora', oloraLambda1: 5, oloraLambda2: 0.01 }, 'lora'],
    ['reglora', { name: 'reglora', regloraShare: 0.05 }, 'lora'],
    ['gere', { name: 'gere', generalSamples: 2 }, 'full'],
    ['adaptinf', { name: 'adaptinf', adaptClusters: 2, adaptBins: 4, adaptPoolFactor: 1 }, 'full'],
  ];

  it.each(cases)('%s runs end to end and a run killed mid-stage 2 (SIGKILL) resumes to the same end', async (name, strategy, mode) => {
    const s = name === 'gere' ? { ...strategy, generalData: general } : strategy;
    const cfg = configFor(s, mode);
    const whole = join(dirs.root, `${name}-whole`), stopped = join(dirs.root, `${name}-stopped`);
    let r = kpig(['run', cfg, '--out', whole, '--quiet']);
    expect(r.status, r.stderr).toBe(0);
    await killRunAt(cfg, stopped, 2, 2);
    expect(existsSync(join(stopped, 'stage-02', 'checkpoint'))).toBe(true);
    expect(existsSync(join(stopped, 'stage-02', 'done.json'))).toBe(false);
    r = kpig(['run', '--resume', stopped, '--quiet']);
    expect(r.status, r.stderr).toBe(0);
    expect(readFileSync(join(stopped, 'results.json'), 'utf8')).toBe(readFileSync(join(whole, 'results.json'), 'utf8'));
    for (let t = 1; t <= 3; t++) expect(losses(stopped, t)).toEqual(losses(whole, t));
    for (let t = 1; t <= 3; t++) for (const l of losses(whole, t)) expect(Number.isFinite(l)).toBe(true);

    if (name === 'olora' || name === 'reglora') {
      // A new adapter per task: stage 2 starts from a fresh one (B = 0), and its penalty saw the earlier A.
      const a1 = await tensors(join(whole, 'stage-01', 'final', 'adapter_model.safetensors'));
      const a2 = await tensors(join(whole, 'stage-02', 'final', 'adapter_model.safetensors'));
      const nameA = [...a1.keys()].find((k) => k.endsWith('lora_A.weight'))!;
      expect(maxAbsDiff(a1.get(nameA)!, a2.get(nameA)!)).toBeGreaterThan(1e-3);
    }
    if (name === 'olora') {
      // The overlap of task 2's A with task 1's is smaller with the penalty than without it.
      const plainCfg = configFor({ name: 'olora', oloraLambda1: 0 }, 'lora');
      const plain = join(dirs.root, 'olora-plain');
      expect(kpig(['run', plainCfg, '--out', plain, '--quiet']).status).toBe(0);
      const overlap = async (dir: string) => {
        const a1 = await tensors(join(dir, 'stage-01', 'final', 'adapter_model.safetensors'));
        const a2 = await tensors(join(dir, 'stage-02', 'final', 'adapter_model.safetensors'));
        let s = 0;
        for (const [k, v] of a1) if (k.endsWith('lora_A.weight')) s += orthogonalityPenalty(a2.get(k)!, [v], 2, v.length / 2).loss;
        return s;
      };
      expect(await overlap(whole)).toBeLessThan(await overlap(plain));
    }
    if (name === 'reglora') {
      const rec = await tensors(join(whole, 'stage-01', 'reglora.safetensors'));
      const ad = await tensors(join(whole, 'stage-01', 'final', 'adapter_model.safetensors'));
      for (const [path, idx] of rec) {
        const A = ad.get(`${path}.lora_A.weight`)!, B = ad.get(`${path}.lora_B.weight`)!;
        const inDim = A.length / 2, out = B.length / 2;
        expect(Array.from(idx)).toEqual(Array.from(largestEntries(adapterProduct(B, A, out, 2, inDim), 0.05)));
      }
      // The penalty holds task 2's update down at task 1's recorded entries: against the same run
      // without it (seqlora), the mean |B₂·A₂| there is smaller.
      const control = join(dirs.root, 'reglora-control');
      expect(kpig(['run', configFor({ name: 'seqlora' }, 'lora'), '--out', control, '--quiet']).status).toBe(0);
      const atRecorded = async (dir: string) => {
        const a2 = await tensors(join(dir, 'stage-02', 'final', 'adapter_model.safetensors'));
        let sum = 0, n = 0;
        for (const [path, idx] of rec) {
          const A = a2.get(`${path}.lora_A.weight`)!, B = a2.get(`${path}.lora_B.weight`)!;
          const d = adapterProduct(B, A, B.length / 2, 2, A.length / 2);
          for (const i of idx) (sum += Math.abs(d[i])), n++;
        }
        return sum / n;
      };
      const [held, free] = [await atRecorded(whole), await atRecorded(control)];
      console.log(`reglora: mean |ΔW₂| at recorded entries ${held} vs ${free} without the penalty`);
      expect(held).toBeLessThan(0.5 * free);
    }
    if (name === 'gere') {
      const plan = tableFromIPC(readFileSync(join(whole, 'stage-03', 'plan.arrow'))).toArray().map((x) => x.toJSON());
      expect(plan.filter((x) => x.role === 'general').map((x) => x.instance_id)).toEqual(['0', '1']);
      const ref = await tensors(join(whole, 'stage-01', 'gere.safetensors'));
      expect(ref.get('lengths')!.length).toBe(2);
      // The base model violates no state of its own: the first step's loss is the cross-entropy alone
      // (as without the constraint); later steps add the constraint.
      const off = join(dirs.root, 'gere-off');
      expect(kpig(['run', configFor({ ...s, gereWeight: 0 }, 'full'), '--out', off, '--quiet']).status).toBe(0);
      expect(losses(whole, 1)[0]).toBeCloseTo(losses(off, 1)[0], 6);
      expect(losses(whole, 2)[0]).not.toBeCloseTo(losses(off, 2)[0], 3);
      // A resume refuses general samples that changed since the run started; a missing file is refused up front.
      const g2 = join(dirs.root, 'general-2.jsonl');
      writeFileSync(g2, readFileSync(general));
      const cfg2 = configFor({ ...s, generalData: g2 }, 'full');
      const part = join(dirs.root, 'gere-part');
      expect(kpig(['run', cfg2, '--out', part, '--quiet', '--stop-after', '1']).status).toBe(0);
      writeFileSync(g2, readFileSync(general, 'utf8').replace('answer 0', 'answer zero'));
      const again = kpig(['run', '--resume', part, '--quiet']);
      expect(again.status).toBe(1);
      expect(again.stderr).toMatch(/the general samples \(.*general-2\.jsonl\) changed since the run started/);
      const missing = kpig(['run', configFor({ ...s, generalData: join(dirs.root, 'nope.jsonl') }, 'full'), '--out', join(dirs.root, 'never3')]);
      expect(missing.status).toBe(1);
      expect(missing.stderr).toMatch(/strategy\.generalData: no file of general samples at .*nope\.jsonl/);
    }
    if (name === 'adaptinf') {
      const st = JSON.parse(readFileSync(join(whole, 'stage-03', 'strategy-state.json'), 'utf8'));
      expect(st.kept).toBeLessThanOrEqual(2 * 3);
      const s2 = JSON.parse(readFileSync(join(whole, 'stage-02', 'strategy-state.json'), 'utf8'));
      // Pruned items stay out of later pools.
      expect(st.pool).toBe(s2.kept + 8);
      const plan = tableFromIPC(readFileSync(join(whole, 'stage-03', 'plan.arrow'))).toArray().map((x) => x.toJSON());
      const pruned = new Set(s2.pruned as string[]);
      const replay = plan.filter((x) => x.role === 'replay');
      expect(replay).toHaveLength(6);
      for (const x of replay) expect(pruned.has(`${x.task_id}\u0000${x.instance_id}`)).toBe(false);
    }
  });

  it('refuses adapter strategies without LoRA, and gere without general samples', () => {
    let r = kpig(['run', configFor({ name: 'olora' }, 'full'), '--out', join(dirs.root, 'never1')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/train\.mode: strategy olora trains a new LoRA adapter per task/);
    r = kpig(['run', configFor({ name: 'gere' }, 'full'), '--out', join(dirs.root, 'never2')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/strategy\.generalData/);
  });
});
