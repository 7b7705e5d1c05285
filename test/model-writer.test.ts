import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { InputError, ModelConfigError, UnsupportedModelError } from '../src/errors/index.js';
import {
  countParameters,
  describeConfig,
  type ModelConfig,
  PRESETS,
  readModelConfig,
  resolveConfig,
} from '../src/model/config.js';
import { f32ToBf16, f32ToF16, readSafetensors, type StoredTensor, toFloat64 } from '../src/model/safetensors.js';
import { createRandomModel } from '../src/model/writer.js';
import { referenceLogits } from './support/reference-forward.js';
import { ORACLE_PATH, findOracle } from './support/oracle.js';

const oracle = findOracle();
const oracleMissing = 'skip' in oracle ? oracle.skip : null;
const python = 'python' in oracle ? oracle.python : '';
const referencePy = ORACLE_PATH;
if (oracleMissing) console.warn(`skipping the PyTorch cross-checks: ${oracleMissing}`);

/** Sequences like peers/examples/forward.json (ids below 512), plus a longer one for RoPE. */
const SEQUENCES = [
  [1, 15, 301, 42, 7, 99, 256, 3],
  [500, 2, 77],
  [9, 9, 9, 9, 120, 64, 33, 400, 18, 5, 211],
  Array.from({ length: 40 }, (_, i) => (i * 37 + 11) % 512),
];

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'kpig-writer-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function tensorsOf(dir: string): Promise<Map<string, StoredTensor>> {
  const index = join(dir, 'model.safetensors.index.json');
  const files = existsSync(index)
    ? [...new Set(Object.values((JSON.parse(await readFile(index, 'utf8')) as { weight_map: Record<string, string> }).weight_map))]
    : ['model.safetensors'];
  const all = new Map<string, StoredTensor>();
  for (const f of files) for (const [k, v] of (await readSafetensors(join(dir, f))).tensors) all.set(k, v);
  return all;
}

function shapesOf(tensors: Map<string, StoredTensor>): Record<string, number[]> {
  return Object.fromEntries([...tensors].map(([k, v]) => [k, v.shape]));
}

// The names and shapes HF's save_pretrained writes, spelled out by hand (not from parameterShapes).
function gpt2NanoNames(): Record<string, number[]> {
  const out: Record<string, number[]> = { 'transformer.wte.weight': [512, 64], 'transformer.wpe.weight': [128, 64] };
  for (const i of [0, 1]) {
    const p = `transformer.h.${i}.`;
    Object.assign(out, {
      [`${p}ln_1.weight`]: [64],
      [`${p}ln_1.bias`]: [64],
      [`${p}attn.c_attn.weight`]: [64, 192],
      [`${p}attn.c_attn.bias`]: [192],
      [`${p}attn.c_proj.weight`]: [64, 64],
      [`${p}attn.c_proj.bias`]: [64],
      [`${p}ln_2.weight`]: [64],
      [`${p}ln_2.bias`]: [64],
      [`${p}mlp.c_fc.weight`]: [64, 256],
      [`${p}mlp.c_fc.bias`]: [256],
      [`${p}mlp.c_proj.weight`]: [256, 64],
      [`${p}mlp.c_proj.bias`]: [64],
    });
  }
  return { ...out, 'transformer.ln_f.weight': [64], 'transformer.ln_f.bias': [64] };
}

function llamaNanoNames(opts: { qkvBias: boolean; oBias: boolean; tied: boolean }): Record<string, number[]> {
  const out: Record<string, number[]> = { 'model.embed_tokens.weight': [512, 64] };
  for (const i of [0, 1]) {
    const p = `model.layers.${i}.`;
    Object.assign(out, {
      [`${p}input_layernorm.weight`]: [64],
      [`${p}self_attn.q_proj.weight`]: [64, 64],
      [`${p}self_attn.k_proj.weight`]: [32, 64],
      [`${p}self_attn.v_proj.weight`]: [32, 64],
      [`${p}self_attn.o_proj.weight`]: [64, 64],
      [`${p}post_attention_layernorm.weight`]: [64],
      [`${p}mlp.gate_proj.weight`]: [176, 64],
      [`${p}mlp.up_proj.weight`]: [176, 64],
      [`${p}mlp.down_proj.weight`]: [64, 176],
    });
    if (opts.qkvBias) {
      Object.assign(out, {
        [`${p}self_attn.q_proj.bias`]: [64],
        [`${p}self_attn.k_proj.bias`]: [32],
        [`${p}self_attn.v_proj.bias`]: [32],
      });
    }
    if (opts.oBias) out[`${p}self_attn.o_proj.bias`] = [64];
  }
  out['model.norm.weight'] = [64];
  if (!opts.tied) out['lm_head.weight'] = [512, 64];
  return out;
}

describe('presets and config.json', () => {
  it('has exactly the oracle presets with the README table values', () => {
    expect(Object.keys(PRESETS).sort()).toEqual(
      ['gpt2-nano', 'gpt2-small', 'gpt2-tiny', 'llama-nano', 'llama-tiny', 'qwen2-nano', 'smol-135m-like'].sort(),
    );
    const table = {
      'gpt2-nano': ['gpt2', 512, 128, 64, 2, 4, 4, 256, null, 1e-5, true],
      'gpt2-tiny': ['gpt2', 8192, 256, 256, 4, 4, 4, 1024, null, 1e-5, true],
      'gpt2-small': ['gpt2', 50257, 1024, 768, 12, 12, 12, 3072, null, 1e-5, true],
      'llama-nano': ['llama', 512, 128, 64, 2, 4, 2, 176, 1e4, 1e-5, false],
      'llama-tiny': ['llama', 8192, 256, 256, 4, 8, 4, 688, 1e4, 1e-5, false],
      'qwen2-nano': ['qwen2', 512, 128, 64, 2, 4, 2, 176, 1e4, 1e-6, true],
      'smol-135m-like': ['llama', 49152, 2048, 576, 30, 9, 3, 1536, 1e5, 1e-5, true],
    } as const;
    for (const [name, row] of Object.entries(table)) {
      const d = describeConfig(resolveConfig(name));
      expect([d.modelType, d.vocab, d.ctx, d.hidden, d.layers, d.heads, d.kvHeads, d.ffn, d.ropeTheta, d.eps, d.tied], name).toEqual([...row]);
    }
    expect(describeConfig(resolveConfig('qwen2-nano'))).toMatchObject({ qkvBias: true, oBias: false, headDim: 16 });
    expect(describeConfig(resolveConfig('llama-nano'))).toMatchObject({ qkvBias: false, oBias: false });
    expect(describeConfig(resolveConfig('smol-135m-like')).headDim).toBe(64);
  });

  it('counts parameters as the real models have them', () => {
    expect(countParameters(resolveConfig('gpt2-small'))).toBe(124_439_808);
    expect(countParameters(resolveConfig('smol-135m-like'))).toBe(134_515_008);
  });

  it('writes the HF fields of each family and derives the rest as HF does', () => {
    const gpt2 = resolveConfig('gpt2-nano');
    expect(gpt2).toMatchObject({
      model_type: 'gpt2',
      n_embd: 64,
      n_layer: 2,
      n_head: 4,
      n_positions: 128,
      n_inner: null,
      layer_norm_epsilon: 1e-5,
      activation_function: 'gelu_new',
      tie_word_embeddings: true,
      architectures: ['GPT2LMHeadModel'],
      bos_token_id: 511, // 50256 clamped into the small vocabulary
      eos_token_id: 511,
    });
    expect(gpt2.hidden_size).toBeUndefined();
    const qwen = resolveConfig('qwen2-nano');
    expect(qwen).toMatchObject({
      hidden_act: 'silu',
      head_dim: 16,
      num_key_value_heads: 2,
      max_window_layers: 2,
      attention_bias: true,
      bos_token_id: 511,
    });
    expect(resolveConfig('llama-nano')).toMatchObject({ bos_token_id: 1, eos_token_id: 2, rms_norm_eps: 1e-5, tie_word_embeddings: false });
    expect(resolveConfig('smol-135m-like')).toMatchObject({ bos_token_id: 0, eos_token_id: 0, rope_theta: 100000 });
    expect(resolveConfig(undefined, { model_type: 'llama', vocab_size: 100, hidden_size: 32, num_attention_heads: 2, num_hidden_layers: 1, intermediate_size: 8 }))
      .toMatchObject({ num_key_value_heads: 2, head_dim: 16 });
    const keys = Object.keys(qwen);
    expect(keys).toEqual([...keys].sort());
  });

  it('rejects bad configs with typed errors naming the field', () => {
    expect(() => resolveConfig('llama-huge')).toThrow(ModelConfigError);
    expect(() => resolveConfig('llama-huge')).toThrow(/unknown preset llama-huge; known presets: gpt2-nano, .*smol-135m-like/);
    expect(() => resolveConfig()).toThrow(/give a preset or a model_type/);
    expect(() => resolveConfig('llama-nano', { hidden_size: 66 })).toThrow(/hidden_size \(66\) is not divisible by num_attention_heads \(4\)/);
    // Every config is read by the engine's one validator (native/src/model/arch/): messages name the field.
    expect(() => resolveConfig('llama-nano', { num_key_value_heads: 3 })).toThrow(
      /field 'num_key_value_heads' \(3\) must divide num_attention_heads \(4\)/,
    );
    expect(() => resolveConfig('gpt2-nano', { n_embd: 66 })).toThrow(/field 'n_embd' \(66\) must be divisible by n_head \(4\)/);
    expect(() => resolveConfig('gpt2-nano', { n_layer: 0 })).toThrow(/field 'n_layer' must be ≥ 1, got 0/);
    expect(() => resolveConfig('llama-nano', { vocab_size: -5 })).toThrow(/field 'vocab_size' must be ≥ 1, got -5/);
    expect(() => resolveConfig('llama-nano', { intermediate_size: 1.5 })).toThrow(/field 'intermediate_size' must be an integer/);
    expect(() => resolveConfig('llama-nano', { head_dim: 15 })).toThrow(/field 'head_dim' \(15\) must be even/);
    expect(() => resolveConfig('llama-nano', { rms_norm_eps: 0 })).toThrow(/field 'rms_norm_eps' must be positive/);
    expect(() => resolveConfig('gpt2-nano', { model_type: 'llama' })).toThrow(ModelConfigError);
    expect(() => resolveConfig('llama-nano', { rope_scaling: { type: 'longrope', factor: 2 } })).toThrow(UnsupportedModelError);
    expect(resolveConfig('llama-nano', { rope_scaling: { type: 'linear', factor: 2 } }).rope_scaling).toEqual({ type: 'linear', factor: 2 });
    expect(() => resolveConfig('llama-nano', { hidden_act: 'gelu' })).toThrow(UnsupportedModelError);
    expect(() => resolveConfig('gpt2-nano', { activation_function: 'relu' })).toThrow(UnsupportedModelError);
    expect(() => resolveConfig(undefined, { model_type: 'bert' as ModelConfig['model_type'] })).toThrow(UnsupportedModelError);
    expect(() => describeConfig({ model_type: 'gpt2', vocab_size: 10, n_layer: 1, n_head: 1, n_positions: 8 })).toThrow(/field 'n_embd' is missing/);
  });

  it('reads config.json back and names the file on errors', async () => {
    const dir = join(root, 'cfg');
    await mkdir(dir);
    await writeFile(join(dir, 'config.json'), '{"model_type": "llama", "vocab_size": 10');
    await expect(readModelConfig(dir)).rejects.toThrow(/cfg.config\.json is not valid JSON/);
    await writeFile(join(dir, 'config.json'), JSON.stringify({ ...resolveConfig('llama-nano'), num_key_value_heads: 3 }));
    await expect(readModelConfig(dir)).rejects.toThrow(/cfg.config\.json: field 'num_key_value_heads' \(3\) must divide/);
  });
});

describe('createRandomModel', () => {
  it.each([
    ['gpt2-nano', gpt2NanoNames()],
    ['llama-nano', llamaNanoNames({ qkvBias: false, oBias: false, tied: false })],
    ['qwen2-nano', llamaNanoNames({ qkvBias: true, oBias: false, tied: true })],
  ])('writes %s with HF names, shapes, metadata and config', async (preset, names) => {
    const dir = join(root, `names-${preset}`);
    const made = await createRandomModel(dir, { preset, seed: 5, dtype: 'f32' });
    expect(made.files).toEqual(['config.json', 'model.safetensors']);
    expect((await readdir(dir)).sort()).toEqual(['config.json', 'model.safetensors']);
    const file = await readSafetensors(join(dir, 'model.safetensors'));
    expect(file.metadata).toEqual({ format: 'pt' });
    expect(shapesOf(file.tensors)).toEqual(names);
    expect([...file.tensors.values()].every((t) => t.dtype === 'F32')).toBe(true);
    const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as ModelConfig;
    expect(cfg).toEqual(resolveConfig(preset));
    expect(cfg.torch_dtype).toBe('float32');
    expect(made.parameters).toBe(countParameters(cfg));
  });

  it('writes LLaMA attention_bias as biases on q, k, v and o, and an untied GPT-2 with lm_head', async () => {
    const llama = join(root, 'llama-bias');
    await createRandomModel(llama, { preset: 'llama-nano', config: { attention_bias: true, tie_word_embeddings: true }, seed: 1 });
    expect(shapesOf(await tensorsOf(llama))).toEqual(llamaNanoNames({ qkvBias: true, oBias: true, tied: true }));
    const gpt2 = join(root, 'gpt2-untied');
    await createRandomModel(gpt2, { preset: 'gpt2-nano', config: { tie_word_embeddings: false }, seed: 1 });
    expect(shapesOf(await tensorsOf(gpt2))).toEqual({ ...gpt2NanoNames(), 'lm_head.weight': [512, 64] });
  });

  it('writes bare GPT-2 names on request', async () => {
    const dir = join(root, 'gpt2-bare');
    await createRandomModel(dir, { preset: 'gpt2-nano', seed: 1, gpt2Names: 'bare' });
    const names = Object.keys(shapesOf(await tensorsOf(dir))).sort();
    expect(names).toEqual(Object.keys(gpt2NanoNames()).map((n) => n.replace(/^transformer\./, '')).sort());
  });

  it('draws N(0, 0.02²) matrices and biases, and norms of 1 or 1 + N(0, 0.1²)', async () => {
    const ones = join(root, 'init-ones');
    const jitter = join(root, 'init-jitter');
    await createRandomModel(ones, { preset: 'llama-tiny', seed: 3 });
    await createRandomModel(jitter, { preset: 'gpt2-nano', seed: 3, normInit: 'jitter' });
    const stats = (values: Float64Array): [number, number] => {
      const mean = values.reduce((a, v) => a + v, 0) / values.length;
      return [mean, Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / values.length)];
    };
    const tiny = await tensorsOf(ones);
    const [mean, std] = stats(toFloat64(tiny.get('model.embed_tokens.weight')!)); // 2M draws
    expect(Math.abs(mean)).toBeLessThan(1e-4);
    expect(std).toBeGreaterThan(0.0199);
    expect(std).toBeLessThan(0.0201);
    for (const [name, t] of tiny) if (name.endsWith('norm.weight')) expect(toFloat64(t).every((v) => v === 1), name).toBe(true);

    const nano = await tensorsOf(jitter);
    const norms = [...nano].filter(([n]) => /ln_[12f]\.weight$/.test(n)).flatMap(([, t]) => [...toFloat64(t)]);
    const [normMean, normStd] = stats(Float64Array.from(norms));
    expect(norms.length).toBe(320);
    expect(Math.abs(normMean - 1)).toBeLessThan(0.02);
    expect(normStd).toBeGreaterThan(0.085);
    expect(normStd).toBeLessThan(0.115);
    const biases = [...nano].filter(([n]) => n.endsWith('.bias')).flatMap(([, t]) => [...toFloat64(t)]);
    expect(biases.every((v) => v !== 0)).toBe(true);
    expect(stats(Float64Array.from(biases))[1]).toBeGreaterThan(0.018);
    expect(stats(Float64Array.from(biases))[1]).toBeLessThan(0.022);
  });

  it('stores f16 and bf16 as the f32 draws rounded, with torch_dtype to match', async () => {
    const f32 = await tensorsOf(await made('dt-f32', 'f32'));
    for (const dtype of ['f16', 'bf16'] as const) {
      const dir = await made(`dt-${dtype}`, dtype);
      const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as ModelConfig;
      expect(cfg.torch_dtype).toBe(dtype === 'f16' ? 'float16' : 'bfloat16');
      const encode = dtype === 'f16' ? f32ToF16 : f32ToBf16;
      for (const [name, t] of await tensorsOf(dir)) {
        expect(t.dtype).toBe(dtype.toUpperCase());
        const bits = new Uint16Array(t.bytes.slice().buffer);
        const expected = Uint16Array.from(toFloat64(f32.get(name)!), encode);
        expect(bits, name).toEqual(expected);
      }
    }
    async function made(name: string, dtype: 'f32' | 'f16' | 'bf16'): Promise<string> {
      const dir = join(root, name);
      await createRandomModel(dir, { preset: 'qwen2-nano', seed: 9, dtype, normInit: 'jitter' });
      return dir;
    }
  });

  it('is deterministic in the seed', async () => {
    const write = async (name: string, seed: number): Promise<Buffer> => {
      await createRandomModel(join(root, name), { preset: 'llama-nano', seed, normInit: 'jitter' });
      return readFile(join(root, name, 'model.safetensors'));
    };
    const a = await write('seed-a', 42);
    const b = await write('seed-b', 42);
    const c = await write('seed-c', 43);
    const big = await write('seed-big', 2 ** 40 + 42); // the high half of the seed counts too
    expect(a.equals(b)).toBe(true);
    expect(a.equals(c)).toBe(false);
    expect(a.equals(big)).toBe(false);
    expect(await readFile(join(root, 'seed-a', 'config.json'), 'utf8')).toBe(await readFile(join(root, 'seed-b', 'config.json'), 'utf8'));
  });

  it('writes HF shards with a valid index, holding the same tensors as one file', async () => {
    const single = join(root, 'shard-1');
    const sharded = join(root, 'shard-3');
    await createRandomModel(single, { preset: 'llama-nano', seed: 4 });
    const made = await createRandomModel(sharded, { preset: 'llama-nano', seed: 4, shards: 3 });
    const files = ['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors'];
    expect(made.files).toEqual(['config.json', ...files, 'model.safetensors.index.json']);
    expect((await readdir(sharded)).sort()).toEqual(['config.json', ...files, 'model.safetensors.index.json']);

    const index = JSON.parse(await readFile(join(sharded, 'model.safetensors.index.json'), 'utf8')) as {
      metadata: { total_size: number };
      weight_map: Record<string, string>;
    };
    const one = (await readSafetensors(join(single, 'model.safetensors'))).tensors;
    expect(Object.keys(index.weight_map).sort()).toEqual([...one.keys()].sort());
    expect(Object.keys(index.weight_map)).toEqual(Object.keys(index.weight_map).sort());
    expect(index.metadata.total_size).toBe([...one.values()].reduce((n, t) => n + t.bytes.byteLength, 0));
    for (const file of files) {
      const shard = await readSafetensors(join(sharded, file));
      expect(shard.metadata).toEqual({ format: 'pt' });
      expect(shard.tensors.size).toBeGreaterThan(0);
      for (const [name, t] of shard.tensors) {
        expect(index.weight_map[name]).toBe(file);
        expect(Buffer.from(t.bytes).equals(Buffer.from(one.get(name)!.bytes)), name).toBe(true);
      }
    }
    expect(await referenceLogits(sharded, SEQUENCES)).toEqual(await referenceLogits(single, SEQUENCES));
  });

  it('can give every tensor its own shard, and refuses more shards than tensors', async () => {
    const dir = join(root, 'shard-all');
    const made = await createRandomModel(dir, { preset: 'gpt2-nano', seed: 1, shards: 28 });
    expect(made.files.length).toBe(30);
    await expect(createRandomModel(join(root, 'shard-too-many'), { preset: 'gpt2-nano', seed: 1, shards: 29 })).rejects.toThrow(InputError);
  });

  it('refuses to overwrite a non-empty folder unless asked, and leaves no temporary folders', async () => {
    const parent = join(root, 'ow');
    const dir = join(parent, 'model');
    await mkdir(dir, { recursive: true }); // an empty folder may be filled
    await createRandomModel(dir, { preset: 'gpt2-nano', seed: 1 });
    const first = await readFile(join(dir, 'model.safetensors'));
    const err = await createRandomModel(dir, { preset: 'gpt2-nano', seed: 2 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/model exists and is not empty; pass overwrite: true/);
    expect((await readFile(join(dir, 'model.safetensors'))).equals(first)).toBe(true);

    await createRandomModel(dir, { preset: 'llama-nano', seed: 2, shards: 2, overwrite: true });
    expect((await readdir(dir)).sort()).toEqual([
      'config.json',
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
      'model.safetensors.index.json',
    ]);
    expect(await readdir(parent)).toEqual(['model']);

    await writeFile(join(parent, 'file'), 'x');
    await expect(createRandomModel(join(parent, 'file'), { preset: 'gpt2-nano', seed: 1, overwrite: true })).rejects.toThrow(/is not a folder/);
    await expect(createRandomModel(join(parent, 'x'), { preset: 'nope', seed: 1 })).rejects.toThrow(ModelConfigError);
    await expect(createRandomModel(join(parent, 'x'), { preset: 'gpt2-nano', seed: -1 })).rejects.toThrow(InputError);
    expect((await readdir(parent)).sort()).toEqual(['file', 'model']);
  });
});

describe('reference forward', () => {
  it('is causal: a prefix gives the same logits as the full sequence', async () => {
    for (const preset of ['gpt2-nano', 'llama-nano', 'qwen2-nano']) {
      const dir = join(root, `causal-${preset}`);
      await createRandomModel(dir, { preset, seed: 2, normInit: 'jitter' });
      const seq = SEQUENCES[2]!;
      const [full, prefix] = await referenceLogits(dir, [seq, seq.slice(0, 5)]);
      expect(full!.subarray(0, prefix!.length)).toEqual(prefix);
      expect(full!.every(Number.isFinite)).toBe(true);
    }
  });

  it('treats Mistral as LLaMA without biases, and refuses a window shorter than the context (the engine has none)', async () => {
    const sizes = { ...PRESETS['llama-nano'], model_type: 'mistral' as const };
    const llama = join(root, 'mistral-as-llama');
    const full = join(root, 'mistral-window-4096');
    await createRandomModel(llama, { preset: 'llama-nano', seed: 6 });
    await createRandomModel(full, { config: sizes, seed: 6 });
    const seq = SEQUENCES[0]!;
    const [a] = await referenceLogits(llama, [seq]);
    const [b] = await referenceLogits(full, [seq]);
    expect(b).toEqual(a);
    await expect(createRandomModel(join(root, 'mistral-window-3'), { config: { ...sizes, sliding_window: 3 }, seed: 6 })).rejects.toThrow(/sliding_window 3 is shorter than the context/);
  });

  it('rejects out-of-range tokens and over-long GPT-2 sequences', async () => {
    const dir = join(root, 'causal-gpt2-nano');
    await expect(referenceLogits(dir, [[512]])).rejects.toThrow(InputError);
    await expect(referenceLogits(dir, [new Array<number>(129).fill(1)])).rejects.toThrow(/exceeds n_positions 128/);
  });
});

describe.skipIf(oracleMissing !== null)('against reference.py (PyTorch, float64)', () => {
  const run = promisify(execFile);

  it('resolves every preset to the same config.json', async () => {
    const script = [
      'import sys, json',
      'sys.path.insert(0, sys.argv[1])',
      'import reference as r',
      'print(json.dumps({p: r.build_config(preset=p) for p in r.PRESETS}))',
    ].join('\n');
    const { stdout } = await run(python, ['-c', script, dirname(referencePy)]);
    const theirs = JSON.parse(stdout) as Record<string, ModelConfig>;
    expect(Object.keys(theirs).sort()).toEqual(Object.keys(PRESETS).sort());
    for (const [preset, cfg] of Object.entries(theirs)) expect(resolveConfig(preset), preset).toEqual(cfg);
  });

  const cases: [string, Parameters<typeof createRandomModel>[1]][] = [
    ['gpt2-nano', { preset: 'gpt2-nano', seed: 7, normInit: 'jitter' }],
    ['llama-nano', { preset: 'llama-nano', seed: 7, normInit: 'jitter' }],
    ['qwen2-nano', { preset: 'qwen2-nano', seed: 7, normInit: 'jitter' }],
    ['qwen2-nano bf16, 2 shards', { preset: 'qwen2-nano', seed: 8, normInit: 'jitter', dtype: 'bf16', shards: 2 }],
    ['llama with o_proj bias, tied', { preset: 'llama-nano', seed: 7, normInit: 'jitter', config: { attention_bias: true, tie_word_embeddings: true } }],
    [
      'gpt2 untied, scaled by layer, bare names, f16',
      { preset: 'gpt2-nano', seed: 7, normInit: 'jitter', dtype: 'f16', gpt2Names: 'bare', config: { tie_word_embeddings: false, scale_attn_by_inverse_layer_idx: true } },
    ],
  ];
  it.each(cases)('%s: referenceLogits matches reference.py forward within 1e-9', async (name, options) => {
    const dir = join(root, `oracle-${name.replace(/\W+/g, '-')}`);
    await createRandomModel(dir, options);
    const input = join(dir, 'forward.json');
    const output = join(dir, 'logits.safetensors');
    await writeFile(input, JSON.stringify({ sequences: SEQUENCES }));
    await run(python, [referencePy, 'forward', '--model', dir, '--input', input, '--out', output]);
    const { tensors } = await readSafetensors(output);
    const logits = toFloat64(tensors.get('logits')!);
    const offsets = toFloat64(tensors.get('offsets')!);
    expect(tensors.get('logits')!.dtype).toBe('F64');

    const ours = await referenceLogits(dir, SEQUENCES);
    const V = 512;
    let worst = 0;
    ours.forEach((rows, i) => {
      const theirs = logits.subarray(offsets[i]! * V, offsets[i + 1]! * V);
      expect(rows.length).toBe(theirs.length);
      rows.forEach((v, j) => {
        worst = Math.max(worst, Math.abs(v - theirs[j]!) / Math.max(1, Math.abs(theirs[j]!)));
      });
    });
    expect(worst).toBeLessThan(1e-9);
  });
});
