// Gradient parity with the independent PyTorch oracle (reference.py grad): the weighted NLL with
// negative and zero weights, full model and LoRA, every parameter within 1e-4 relative error; and
// one AdamW step against reference.py adamw.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Model, nativeOf, packSequences } from '../src/model/model.js';
import { readSafetensors, toFloat64, writeSafetensors } from '../src/model/safetensors.js';
import { findOracle, runOracle } from './support/oracle.js';

const oracle = findOracle();
if ('skip' in oracle) console.warn(`gradient parity SKIPPED: ${oracle.skip}`);

const SEQUENCES = [
  [1, 15, 301, 42, 7, 99, 256, 3, 88, 91, 12],
  [500, 2, 77, 18, 4],
  [9, 9, 120, 64, 33, 400, 18, 5, 211, 17, 88, 0, 511, 260, 41, 42],
];
// Per sequence, len − 1 weights (predicting token t+1 at t): negative, zero and positive.
const WEIGHTS = SEQUENCES.map((s, i) => Array.from({ length: s.length - 1 }, (_, t) => (t < 2 ? 0 : [0.5, -0.25, 1, 0, -2, 0.3][(t + i) % 6])));

/** Our weights array: one entry per token, the last of each sequence 0. */
function packedWeights(): Float32Array {
  const out: number[] = [];
  for (const w of WEIGHTS) out.push(...w, 0);
  return Float32Array.from(out);
}

function relErr(ours: Float32Array, ref: Float64Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < ref.length; i++) {
    diff = Math.max(diff, Math.abs(ours[i] - ref[i]));
    scale = Math.max(scale, Math.abs(ref[i]));
  }
  return scale === 0 ? diff : diff / scale;
}

const PRESETS = ['gpt2-nano', 'llama-nano', 'qwen2-nano'];

describe.skipIf('skip' in oracle)('gradients against reference.py', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kpig-grad-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const python = 'python' in oracle ? oracle.python : '';
  const input = join(dir, 'grad.json');
  writeFileSync(input, JSON.stringify({ sequences: SEQUENCES, weights: WEIGHTS }));

  it.each(PRESETS)('%s: full model, every parameter', async (preset) => {
    const modelDir = join(dir, `${preset}-full`);
    runOracle(python, ['make-model', '--preset', preset, '--seed', '3', '--norm-init', 'jitter', '--out', modelDir]);
    const out = join(modelDir, 'grad.safetensors');
    runOracle(python, ['grad', '--model', modelDir, '--input', input, '--out', out]);
    const ref = (await readSafetensors(out)).tensors;
    const model = await Model.load(modelDir, { tokenizer: false });
    const nat = nativeOf(model);
    nat.trainFull();
    const { tokens, offsets } = packSequences(SEQUENCES);
    const r = await nat.trainAccumulate(tokens, offsets, packedWeights(), 0, false);
    expect(Math.abs(r.loss - toFloat64(ref.get('loss')!)[0])).toBeLessThan(1e-4);
    const names = nat.tensors().map((t) => t.name);
    expect(new Set(names)).toEqual(new Set([...ref.keys()].filter((k) => k !== 'loss')));
    let worst = 0;
    for (const name of names) {
      const e = relErr(nat.readTensor(name, 'grad'), toFloat64(ref.get(name)!));
      worst = Math.max(worst, e);
      expect(e, name).toBeLessThanOrEqual(1e-4);
    }
    console.log(`${preset} full: worst relative gradient error ${worst.toExponential(2)} over ${names.length} tensors`);
    model.dispose();
  });

  it.each([
    ['gpt2-nano', 'c_attn,mlp.c_proj'],
    ['llama-nano', 'q_proj,v_proj,down_proj,gate_proj'],
    ['qwen2-nano', 'k_proj,o_proj,up_proj'],
  ])('%s: LoRA on %s', async (preset, targets) => {
    const modelDir = join(dir, `${preset}-lora`);
    runOracle(python, ['make-model', '--preset', preset, '--seed', '4', '--out', modelDir]);
    const out = join(modelDir, 'grad.safetensors');
    runOracle(python, ['grad', '--model', modelDir, '--input', input, '--out', out, '--lora-rank', '4', '--lora-alpha', '8', '--lora-targets', targets, '--lora-seed', '1']);
    const ref = (await readSafetensors(out)).tensors;
    const model = await Model.load(modelDir, { tokenizer: false });
    const nat = nativeOf(model);
    nat.loraAdd({ rank: 4, alpha: 8, targets: targets.split(',') });
    const lora = nat.tensors().filter((t) => t.name.includes('lora_'));
    expect(lora.length).toBeGreaterThan(0);
    for (const t of lora) nat.writeTensor(t.name, 'param', Float32Array.from(toFloat64(ref.get(`weights/${t.name}`)!)));
    expect(nat.tensors().filter((t) => t.trainable).map((t) => t.name)).toEqual(lora.map((t) => t.name));
    const { tokens, offsets } = packSequences(SEQUENCES);
    const r = await nat.trainAccumulate(tokens, offsets, packedWeights(), 0, false);
    expect(Math.abs(r.loss - toFloat64(ref.get('loss')!)[0])).toBeLessThan(1e-4);
    const refGrads = [...ref.keys()].filter((k) => k.includes('lora_') && !k.startsWith('weights/'));
    expect(new Set(lora.map((t) => t.name))).toEqual(new Set(refGrads));
    for (const t of lora) expect(relErr(nat.readTensor(t.name, 'grad'), toFloat64(ref.get(t.name)!)), t.name).toBeLessThanOrEqual(1e-4);
    model.dispose();
  });

  it('AdamW: two chained steps match reference.py adamw', async () => {
    const modelDir = join(dir, 'adamw');
    runOracle(python, ['make-model', '--preset', 'llama-nano', '--seed', '5', '--out', modelDir]);
    const model = await Model.load(modelDir, { tokenizer: false });
    const nat = nativeOf(model);
    nat.trainFull();
    const { tokens, offsets } = packSequences(SEQUENCES);
    const opts = { lr: 1e-2, beta1: 0.8, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, decayAll: true };
    // Our gradients of the current parameters, written for the oracle, then one step on each side.
    let params = join(modelDir, 'model.safetensors');
    let state: string | undefined;
    for (let step = 1; step <= 2; step++) {
      await nat.trainAccumulate(tokens, offsets, packedWeights(), 0, false);
      const grads: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
      for (const t of nat.tensors()) grads[t.name] = { dtype: 'F32', shape: t.shape, data: nat.readTensor(t.name, 'grad') };
      const gradFile = join(dir, `g${step}.safetensors`);
      await writeSafetensors(gradFile, grads);
      const outFile = join(dir, `step${step}.safetensors`);
      runOracle(python, [
        'adamw', '--params', params, '--grads', gradFile, ...(state ? ['--state', state] : []),
        '--lr', '1e-2', '--beta1', '0.8', '--beta2', '0.95', '--eps', '1e-8', '--weight-decay', '0.1', '--step', String(step), '--out', outFile, '--dtype', 'float32',
      ]);
      const r = await nat.optimizerStep(opts);
      expect(r.step).toBe(step);
      const ref = (await readSafetensors(outFile)).tensors;
      for (const t of nat.tensors()) {
        const ours = nat.readTensor(t.name, 'param');
        const theirs = toFloat64(ref.get(t.name)!);
        let worst = 0;
        for (let i = 0; i < ours.length; i++) worst = Math.max(worst, Math.abs(ours[i] - theirs[i]));
        expect(worst, `${t.name} after step ${step}`).toBeLessThan(2e-6);
        expect(relErr(nat.readTensor(t.name, 'exp_avg_sq'), toFloat64(ref.get(`exp_avg_sq/${t.name}`)!))).toBeLessThan(1e-5);
      }
      params = outFile;
      state = outFile;
    }
    model.dispose();
  });
});
