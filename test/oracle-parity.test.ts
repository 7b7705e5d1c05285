// Parity of the native forward pass with the independent PyTorch oracle (reference.py): models
// made by the oracle itself (so our loader reads files we did not write), logits compared in float64.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Model } from '../src/model/model.js';
import { readSafetensors, toFloat64 } from '../src/model/safetensors.js';
import { findOracle, runOracle } from './support/oracle.js';

const oracle = findOracle();
if ('skip' in oracle) console.warn(`oracle parity SKIPPED: ${oracle.skip}`);

const SEQUENCES = [
  [1, 15, 301, 42, 7, 99, 256, 3],
  [500, 2, 77],
  [9, 9, 9, 9, 120, 64, 33, 400, 18, 5, 211, 17, 88, 0, 511, 260, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50],
  [7],
];

interface Case {
  name: string;
  args: string[];
  tol: number;
}

const CASES: Case[] = [
  { name: 'gpt2-nano f32', args: ['--preset', 'gpt2-nano', '--norm-init', 'jitter'], tol: 1e-4 },
  { name: 'gpt2-nano bf16', args: ['--preset', 'gpt2-nano', '--weights-dtype', 'bf16'], tol: 2e-2 },
  { name: 'gpt2-nano bare names, untied, f16', args: ['--preset', 'gpt2-nano', '--gpt2-names', 'bare', '--config-json', '{"tie_word_embeddings": false}', '--weights-dtype', 'f16'], tol: 1e-4 },
  { name: 'llama-nano f32', args: ['--preset', 'llama-nano', '--norm-init', 'jitter'], tol: 1e-4 },
  { name: 'llama-nano bf16', args: ['--preset', 'llama-nano', '--weights-dtype', 'bf16'], tol: 2e-2 },
  { name: 'qwen2-nano f32', args: ['--preset', 'qwen2-nano', '--norm-init', 'jitter'], tol: 1e-4 },
  { name: 'qwen2-nano bf16', args: ['--preset', 'qwen2-nano', '--weights-dtype', 'bf16'], tol: 2e-2 },
  {
    name: 'GQA 4 query heads per kv head f32',
    args: ['--preset', 'llama-nano', '--norm-init', 'jitter', '--config-json', '{"num_attention_heads": 8, "num_key_value_heads": 2}'],
    tol: 1e-4,
  },
  {
    name: 'GQA 4 query heads per kv head bf16',
    args: ['--preset', 'llama-nano', '--weights-dtype', 'bf16', '--config-json', '{"num_attention_heads": 8, "num_key_value_heads": 2}'],
    tol: 2e-2,
  },
  {
    name: 'llama with attention_bias (q/k/v/o biases) f32',
    args: ['--preset', 'llama-nano', '--config-json', '{"model_type": "llama", "attention_bias": true, "tie_word_embeddings": true}'],
    tol: 1e-4,
  },
];

describe.skipIf('skip' in oracle)('forward parity with the PyTorch oracle', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kpig-oracle-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const python = 'python' in oracle ? oracle.python : '';
  const input = join(dir, 'forward.json');
  writeFileSync(input, JSON.stringify({ sequences: SEQUENCES }));

  it.each(CASES)('$name: max |logit difference| within tolerance', async ({ name, args, tol }) => {
    const modelDir = join(dir, name.replace(/[^a-z0-9]+/gi, '_'));
    runOracle(python, ['make-model', ...args, '--seed', '7', '--out', modelDir]);
    const out = join(modelDir, 'logits.safetensors');
    runOracle(python, ['forward', '--model', modelDir, '--input', input, '--out', out, '--dtype', 'float64']);
    const ref = toFloat64((await readSafetensors(out)).tensors.get('logits')!);
    const model = await Model.load(modelDir, { tokenizer: false });
    const ours = await model.logits(SEQUENCES);
    const V = model.info.vocabSize;
    let worst = 0;
    let row = 0;
    for (const seq of ours) {
      expect(seq.length % V).toBe(0);
      for (let i = 0; i < seq.length; i++) worst = Math.max(worst, Math.abs(seq[i] - ref[row * V + i]));
      row += seq.length / V;
    }
    expect(row * V).toBe(ref.length);
    console.log(`${name}: max |Δlogit| = ${worst.toExponential(2)} (tolerance ${tol})`);
    expect(worst).toBeLessThanOrEqual(tol);
    model.dispose();
  });
});
