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
    expect(cfg).toMatchObject({ peft_type: 'LORA', r: 8, lora_alpha: 16, task_type: 'CAUSAL_LM', target_modules: ['all-linear'] });
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

describe('training: bad input', () => {
  it('an empty data set and a sequence whose weights do not match its tokens', async () => {
    const model = await Model.load(await tinyModel());
    const trainer = new Trainer(model, { mode: 'lora' });
    await expect(trainer.train([])).rejects.toBeInstanceOf(InputError);
    await expect(trainer.train([{ tokens: [1, 2, 3], weights: [1] }])).rejects.toThrow(/3 tokens but 1 weights/);
    expect(() => new Trainer(model, { mode: 'full', batchSize: 0 })).toThrow(/batchSize must be an integer ≥ 1/);
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
