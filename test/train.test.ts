// Training end to end on tiny generated models: the loss falls and greedy outputs become right,
// LoRA adapters round-trip through PEFT files, a resumed run is bit-identical, and bad inputs are
// reported (skipped steps leave the weights untouched).
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tokenizeExample, type InstructionExample } from '../src/data/instructions.js';
import { CancelledError, InputError, ModelConfigError } from '../src/errors/index.js';
import { writeDirAtomic } from '../src/io/atomic.js';
import { Model, nativeOf, packSequences } from '../src/model/model.js';
import { loadAdapter, mergeLora, saveAdapter, saveModel } from '../src/train/checkpoint.js';
import { readSafetensors, toFloat32, writeSafetensors } from '../src/model/safetensors.js';
import { Trainer, latestCheckpoint } from '../src/train/trainer.js';
import { ModelDir } from './support/models.js';

const dirs = new ModelDir();
afterAll(() => dirs.cleanup());

const ANIMALS: InstructionExample[] = [
  ['cat', 'mammal'], ['eagle', 'bird'], ['shark', 'fish'], ['frog', 'amphibian'],
  ['dog', 'mammal'], ['owl', 'bird'], ['trout', 'fish'], ['newt', 'amphibian'],
].map(([input, output]) => ({ instruction: 'Name the class.', input, output }));

async function tinyModel(seed = 1): Promise<string> {
  return dirs.make({ preset: 'llama-nano', seed, config: { vocab_size: 259 } });
}

function sequences(model: Model) {
  return ANIMALS.map((ex) => tokenizeExample(model.tokenizer!, ex, model.info.maxPositions)!);
}

async function answers(model: Model): Promise<string[]> {
  const prompts = ANIMALS.map((ex) => `Definition: ${ex.instruction}\n\nInput: ${ex.input}\nOutput: `);
  return (await model.generate(prompts, { maxNewTokens: 12 })).map((g) => g.text);
}

describe('training', () => {
  it('learns a small task: the loss falls and greedy outputs become correct', async () => {
    const model = await Model.load(await tinyModel());
    const trainer = new Trainer(model, { mode: 'full', lr: 3e-3, epochs: 150, batchSize: 8, warmupSteps: 5, seed: 1 });
    const progress: number[] = [];
    const summary = await trainer.train(sequences(model), { onProgress: (p) => progress.push(p.loss) });
    expect(summary.steps).toBe(150);
    expect(progress).toHaveLength(150);
    expect(summary.losses.at(-1)!).toBeLessThan(0.1 * summary.losses[0]);
    expect(await answers(model)).toEqual(ANIMALS.map((e) => e.output));
    model.dispose();
  });

  it('LoRA: trains, saves as PEFT, reloads onto the base with identical outputs, and merges', async () => {
    const base = await tinyModel(2);
    const model = await Model.load(base);
    const trainer = new Trainer(model, { mode: 'lora', lora: { rank: 8, alpha: 16, targets: ['all-linear'] }, lr: 1e-2, epochs: 60, seed: 3 });
    const summary = await trainer.train(sequences(model));
    // The frozen random head of a tiny model caps how peaked its outputs can get (the final norm
    // fixes |h|, head entries are ~0.02), so LoRA alone lowers the loss only so far.
    expect(summary.losses.at(-1)!).toBeLessThan(0.85 * summary.losses[0]);
    const adapterDir = join(dirs.root, 'adapter');
    await saveAdapter(model, adapterDir);
    const cfg = JSON.parse(readFileSync(join(adapterDir, 'adapter_config.json'), 'utf8'));
    expect(cfg).toMatchObject({ peft_type: 'LORA', r: 8, lora_alpha: 16, task_type: 'CAUSAL_LM', target_modules: 'all-linear' });
    const probe = sequences(model).map((s) => s.tokens);
    const before = await model.logits(probe);
    const outputs = await answers(model);

    const reloaded = await Model.load(base);
    await loadAdapter(reloaded, adapterDir);
    const after = await reloaded.logits(probe);
    for (let i = 0; i < before.length; i++) expect(after[i]).toEqual(before[i]);
    expect(await answers(reloaded)).toEqual(outputs);

    mergeLora(reloaded);
    expect(nativeOf(reloaded).tensors().some((t) => t.name.includes('lora_'))).toBe(false);
    const merged = await reloaded.logits(probe);
    let worst = 0;
    for (let i = 0; i < merged.length; i++) for (let j = 0; j < merged[i].length; j++) worst = Math.max(worst, Math.abs(merged[i][j] - before[i][j]));
    expect(worst).toBeLessThan(1e-4);
    const mergedDir = join(dirs.root, 'merged');
    await saveModel(reloaded, mergedDir);
    const again = await Model.load(mergedDir);
    expect(await again.logits(probe)).toEqual(merged);
    for (const m of [model, reloaded, again]) m.dispose();
  });

  it.each(['full', 'lora'] as const)('%s: a resumed run gives bit-identical losses and weights', async (mode) => {
    const base = await tinyModel(4);
    const opts = { mode, lr: 5e-3, epochs: 3, batchSize: 3, gradAccum: 2, seed: 9, lora: { rank: 4, dropout: 0.1, targets: ['q_proj', 'down_proj'] } };
    const a = await Model.load(base);
    const full = await new Trainer(a, opts).train(sequences(a));

    const out = join(dirs.root, `resume-${mode}`);
    const b = await Model.load(base);
    // The same run, interrupted after its step-4 checkpoint.
    const stop = new AbortController();
    const first = new Trainer(b, { ...opts, outDir: out, checkpointEvery: 2 });
    const interrupted = first.train(sequences(b), { signal: stop.signal, onProgress: (p) => p.step === 4 && stop.abort() });
    await expect(interrupted).rejects.toBeInstanceOf(CancelledError);
    b.dispose();
    expect(readdirSync(out).filter((n) => n.startsWith('checkpoint-')).sort()).toEqual(['checkpoint-2', 'checkpoint-4']);
    const c = await Model.load(base);
    const resumed = new Trainer(c, { ...opts, outDir: out });
    await resumed.resume(latestCheckpoint(out)!);
    expect(resumed.step).toBe(4);
    const rest = await resumed.train(sequences(c));
    expect(rest.losses).toEqual(full.losses);
    const trainable = nativeOf(a).tensors().filter((t) => t.trainable);
    for (const t of trainable) expect(nativeOf(c).readTensor(t.name, 'param')).toEqual(nativeOf(a).readTensor(t.name, 'param'));
    a.dispose();
    c.dispose();
  });
});

describe('PEFT adapter variants', () => {
  /** A random adapter on q_proj and v_proj written as PEFT does, with per-module ranks. */
  async function writeAdapter(dir: string, model: Model, cfg: Record<string, unknown>, rankOf: (module: string) => number) {
    const { mkdirSync } = await import('node:fs');
    mkdirSync(dir, { recursive: true });
    const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
    const i = model.info;
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5) * 0.2;
    for (let l = 0; l < i.numLayers; l++)
      for (const [proj, out] of [['q_proj', i.numHeads * i.headDim], ['v_proj', i.numKvHeads * i.headDim]] as const) {
        const module = `model.layers.${l}.self_attn.${proj}`;
        const r = rankOf(module);
        tensors[`base_model.model.${module}.lora_A.weight`] = { dtype: 'F32', shape: [r, i.hiddenSize], data: Float32Array.from({ length: r * i.hiddenSize }, rnd) };
        tensors[`base_model.model.${module}.lora_B.weight`] = { dtype: 'F32', shape: [out, r], data: Float32Array.from({ length: out * r }, rnd) };
      }
    await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj', 'v_proj'], bias: 'none', ...cfg }));
    return tensors;
  }

  /** The reference: W + s·B·A computed here in float64 and written as a plain model folder. */
  async function handMerged(base: string, dir: string, adapter: Record<string, { shape: number[]; data: Float32Array }>, scaleOf: (module: string, r: number) => number) {
    const { cpSync } = await import('node:fs');
    cpSync(base, dir, { recursive: true });
    const st = await readSafetensors(join(base, 'model.safetensors'));
    const out: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
    for (const [name, t] of st.tensors) out[name] = { dtype: 'F32', shape: t.shape, data: toFloat32(t) };
    for (const key of Object.keys(adapter).filter((k) => k.endsWith('.lora_A.weight'))) {
      const module = key.replace('base_model.model.', '').replace('.lora_A.weight', '');
      const A = adapter[key], B = adapter[key.replace('lora_A', 'lora_B')];
      const [r, inF] = A.shape, outF = B.shape[0];
      const W = out[`${module}.weight`];
      const s = scaleOf(module, r);
      for (let o = 0; o < outF; o++)
        for (let c = 0; c < inF; c++) {
          let acc = 0;
          for (let k = 0; k < r; k++) acc += B.data[o * r + k] * A.data[k * inF + c];
          W.data[o * inF + c] += s * acc;
        }
    }
    await writeSafetensors(join(dir, 'model.safetensors'), out, { format: 'pt' });
  }

  const maxDiff = (a: Float32Array[], b: Float32Array[]) => a.reduce((m, x, i) => x.reduce((mm, v, j) => Math.max(mm, Math.abs(v - b[i][j])), m), 0);

  it('rsLoRA, rank_pattern and alpha_pattern give the logits of the hand-merged weights', async () => {
    const base = await tinyModel(5);
    const probe = [[1, 40, 41, 42, 43, 44], [1, 50, 60, 70]];
    const cases: { name: string; cfg: Record<string, unknown>; rankOf: (m: string) => number; scaleOf: (m: string, r: number) => number }[] = [
      { name: 'plain', cfg: {}, rankOf: () => 4, scaleOf: (_m, r) => 8 / r },
      { name: 'rslora', cfg: { use_rslora: true }, rankOf: () => 4, scaleOf: (_m, r) => 8 / Math.sqrt(r) },
      {
        name: 'patterns',
        cfg: { rank_pattern: { 'model.layers.0.self_attn.q_proj': 2 }, alpha_pattern: { v_proj: 3 } },
        rankOf: (m) => (m === 'model.layers.0.self_attn.q_proj' ? 2 : 4),
        scaleOf: (m, r) => (m.endsWith('v_proj') ? 3 : 8) / r,
      },
      {
        name: 'rslora+patterns',
        cfg: { use_rslora: true, rank_pattern: { 'layers.1.self_attn.v_proj': 6 }, alpha_pattern: { 'layers.0.self_attn.q_proj': 20 } },
        rankOf: (m) => (m === 'model.layers.1.self_attn.v_proj' ? 6 : 4),
        scaleOf: (m, r) => (m === 'model.layers.0.self_attn.q_proj' ? 20 : 8) / Math.sqrt(r),
      },
    ];
    for (const c of cases) {
      const m = await Model.load(base);
      const adapterDir = join(dirs.root, `peft-${c.name}`);
      const adapter = await writeAdapter(adapterDir, m, c.cfg, c.rankOf);
      await loadAdapter(m, adapterDir);
      const refDir = join(dirs.root, `peft-${c.name}-merged`);
      await handMerged(base, refDir, adapter, c.scaleOf);
      const ref = await Model.load(refDir);
      const plain = await Model.load(base);
      const [got, want, none] = [await m.logits(probe), await ref.logits(probe), await plain.logits(probe)];
      expect(maxDiff(got, want), c.name).toBeLessThan(1e-4);
      // The adapter does change the logits: a wrong scale could not pass by being small.
      expect(maxDiff(none, want), c.name).toBeGreaterThan(1e-2);
      for (const x of [m, ref, plain]) x.dispose();
    }
  });

  it('refuses DoRA, regex targets and options it does not implement, by name', async () => {
    const base = await tinyModel(5);
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ use_dora: true }, /DoRA adapters \(use_dora: true\) are not supported/],
      [{ target_modules: '.*\\.(q|v)_proj' }, /target_modules as a regular expression \(".*"\) is not supported/],
      [{ layers_to_transform: [0] }, /layers_to_transform \[0\] is not supported/],
      [{ bias: 'all' }, /bias "all" is not supported/],
      [{ rank_pattern: { q_proj: 2.5 } }, /rank_pattern\["q_proj"\] must be a positive integer/],
    ];
    for (const [cfg, message] of bad) {
      const m = await Model.load(base);
      const dir = join(dirs.root, `peft-bad-${Object.keys(cfg)[0]}`);
      await writeAdapter(dir, m, cfg, () => 4);
      await expect(loadAdapter(m, dir)).rejects.toThrow(message);
      m.dispose();
    }
  });
});

describe('training: bad input', () => {
  it('two trainStep calls started together are two steps in turn, as if awaited one after the other', async () => {
    const dir = await tinyModel(3);
    const data = sequences(await Model.load(dir));
    const [a, b] = [data.slice(0, 4), data.slice(4)];
    const together = await Model.load(dir), inTurn = await Model.load(dir);
    const t1 = new Trainer(together, { mode: 'full', lr: 1e-2, batchSize: 4, seed: 1 });
    const t2 = new Trainer(inTurn, { mode: 'full', lr: 1e-2, batchSize: 4, seed: 1 });
    const [ra, rb] = await Promise.all([t1.trainStep(a, 1e-2), t1.trainStep(b, 1e-2)]);
    const sa = await t2.trainStep(a, 1e-2);
    const sb = await t2.trainStep(b, 1e-2);
    expect([t1.step, t2.step]).toEqual([2, 2]);
    // The second step's loss is computed on the weights the first step left: the same as in turn.
    expect([ra.loss, rb.loss]).toEqual([sa.loss, sb.loss]);
    const probe = [data[0].tokens];
    expect(await together.logits(probe)).toEqual(await inTurn.logits(probe));
    together.dispose();
    inTurn.dispose();
  });

  it('an empty data set and a sequence whose weights do not match its tokens', async () => {
    const model = await Model.load(await tinyModel());
    const trainer = new Trainer(model, { mode: 'lora' });
    await expect(trainer.train([])).rejects.toBeInstanceOf(InputError);
    await expect(trainer.train([{ tokens: [1, 2, 3], weights: [1] }])).rejects.toThrow(/3 tokens but 1 weights/);
    expect(() => new Trainer(model, { mode: 'full', batchSize: 0 })).toThrow(/batchSize must be an integer ≥ 1/);
    model.dispose();
  });

  it('engine errors through the trainer and LoRA are typed errors, not the addon\'s plain ones', async () => {
    const model = await Model.load(await tinyModel());
    let err: unknown;
    try {
      new Trainer(model, { mode: 'lora', lora: { targets: ['nope'] } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/LoRA target 'nope' matches no module/);
    const trainer = new Trainer(model, { mode: 'full', weightDecay: -1, maxSteps: 1 });
    await expect(trainer.train(sequences(model))).rejects.toBeInstanceOf(InputError);
    // Straight through the handle too: a bad tensor name.
    expect(() => nativeOf(model).readTensor('no.such.tensor', 'value')).toThrow(InputError);
    model.dispose();
  });

  it('all weights zero: the step is skipped and reported, the weights untouched', async () => {
    const model = await Model.load(await tinyModel());
    const trainer = new Trainer(model, { mode: 'full', maxSteps: 1 });
    const nat = nativeOf(model);
    const before = nat.readTensor('model.norm.weight', 'param');
    const seen: boolean[] = [];
    await trainer.train([{ tokens: [1, 2, 3, 4], weights: [0, 0, 0, 0] }], { onProgress: (p) => seen.push(p.skipped && p.weightedTokens === 0) });
    expect(seen).toEqual([true]);
    expect(nat.readTensor('model.norm.weight', 'param')).toEqual(before);
    model.dispose();
  });

  it('Inf in the gradients: the optimizer step is skipped, the weights untouched', async () => {
    const model = await Model.load(await tinyModel());
    const nat = nativeOf(model);
    nat.trainFull();
    const names = nat.tensors().map((t) => t.name);
    const before = names.map((n) => nat.readTensor(n, 'param'));
    const { tokens, offsets } = packSequences([[1, 2, 3, 4, 5]]);
    await nat.trainAccumulate(tokens, offsets, Float32Array.from([3e38, 3e38, 3e38, 3e38, 0]), 0, false);
    const step = await nat.optimizerStep({ lr: 1e-3 });
    expect(step.skipped).toBe(true);
    expect(step.step).toBe(0);
    names.forEach((n, i) => expect(nat.readTensor(n, 'param')).toEqual(before[i]));
    // The gradients were cleared: a normal step afterwards works.
    await nat.trainAccumulate(tokens, offsets, Float32Array.from([0.25, 0.25, 0.25, 0.25, 0]), 0, false);
    expect((await nat.optimizerStep({ lr: 1e-3 })).skipped).toBe(false);
    model.dispose();
  });

  it('weights at the last position, NaN weights and training without trainable tensors', async () => {
    const model = await Model.load(await tinyModel());
    const nat = nativeOf(model);
    const { tokens, offsets } = packSequences([[1, 2, 3]]);
    await expect(nat.trainAccumulate(tokens, offsets, Float32Array.from([1, 1, 0]), 0, false)).rejects.toThrow(/nothing to train/);
    nat.trainFull();
    await expect(nat.trainAccumulate(tokens, offsets, Float32Array.from([1, 1, 1]), 0, false)).rejects.toThrow(/last position/);
    await expect(nat.trainAccumulate(tokens, offsets, Float32Array.from([NaN, 1, 0]), 0, false)).rejects.toThrow(/not finite/);
    model.dispose();
  });

  it('a LoRA adapter whose config does not fit its tensors or the model', async () => {
    const base = await tinyModel(5);
    const model = await Model.load(base);
    new Trainer(model, { mode: 'lora', lora: { rank: 4, targets: ['q_proj'] } });
    const dir = join(dirs.root, 'bad-adapter');
    await saveAdapter(model, dir);
    const cfgPath = join(dir, 'adapter_config.json');
    const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
    writeFileSync(cfgPath, JSON.stringify({ ...cfg, r: 8 }));
    await expect(loadAdapter(await Model.load(base), dir)).rejects.toThrow(ModelConfigError);
    await expect(loadAdapter(await Model.load(base), dir)).rejects.toThrow(/has shape \[4, 64\], the config implies \[8, 64\]/);
    writeFileSync(cfgPath, JSON.stringify({ ...cfg, target_modules: ['c_attn'] }));
    await expect(loadAdapter(await Model.load(base), dir)).rejects.toThrow(/does not fit this model: LoRA target 'c_attn' matches no module/);
    model.dispose();
  });

  it('an interrupted checkpoint write leaves no folder and keeps the previous one', async () => {
    const out = join(dirs.root, 'interrupted');
    await writeDirAtomic(join(out, 'checkpoint-1'), async (tmp) => writeFileSync(join(tmp, 'trainer_state.json'), '{"step":1}'));
    const fail = writeDirAtomic(
      join(out, 'checkpoint-1'),
      async (tmp) => {
        writeFileSync(join(tmp, 'trainer_state.json'), '{"step":');
        throw new Error('disk full');
      },
      { overwrite: true },
    );
    await expect(fail).rejects.toThrow('disk full');
    expect(readFileSync(join(out, 'checkpoint-1', 'trainer_state.json'), 'utf8')).toBe('{"step":1}');
    expect(readdirSync(out)).toEqual(['checkpoint-1']);
    expect(existsSync(join(out, 'checkpoint-2'))).toBe(false);
  });
});

describe('bf16 matmuls', () => {
  it('give the fp32 loss and gradients within bf16 rounding, and train', async () => {
    const dir = await dirs.make({ preset: 'qwen2-nano', seed: 12, normInit: 'jitter' });
    const runs = [];
    for (const precision of ['fp32', 'bf16'] as const) {
      const model = await Model.load(dir);
      model.setMatmulPrecision(precision);
      const nat = nativeOf(model);
      nat.trainFull();
      const seqs = [[256, 5, 9, 100, 33, 7, 81, 2, 44], [256, 70, 71, 72, 73]];
      const { tokens, offsets } = packSequences(seqs);
      const w = Float32Array.from([0, 0.2, 0.2, -0.1, 0.3, 0.2, 0.1, 0.2, 0, 0, 0.5, 0.5, 0.5, 0]);
      const r = await nat.trainAccumulate(tokens, offsets, w, 0, false);
      runs.push({ loss: r.loss, grad: nat.readTensor('model.layers.1.mlp.down_proj.weight', 'grad'), emb: nat.readTensor('model.embed_tokens.weight', 'grad') });
      model.dispose();
    }
    const [fp32, bf16] = runs;
    expect(Math.abs(bf16.loss - fp32.loss) / Math.abs(fp32.loss)).toBeLessThan(1e-2);
    expect(bf16.loss).not.toBe(fp32.loss); // the rounding really happened
    for (const key of ['grad', 'emb'] as const) {
      let num = 0, den = 0;
      for (let i = 0; i < fp32[key].length; i++) {
        num += (bf16[key][i] - fp32[key][i]) ** 2;
        den += fp32[key][i] ** 2;
      }
      expect(Math.sqrt(num / den)).toBeLessThan(3e-2);
    }
    const model = await Model.load(await tinyModel(7));
    model.setMatmulPrecision('bf16');
    const summary = await new Trainer(model, { mode: 'full', lr: 3e-3, epochs: 60, seed: 1 }).train(sequences(model));
    expect(summary.losses.at(-1)!).toBeLessThan(0.3 * summary.losses[0]);
    model.dispose();
  });
});
