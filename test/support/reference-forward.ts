/**
 * A plain, slow reference forward pass for tests: float64 throughout, one sequence at a time, loops
 * only. It reads a model folder as HF writes it (config.json + model.safetensors, or shards with
 * model.safetensors.index.json) and follows the HF semantics in ../shared/peers/README.md.
 *
 * Shape legend: T = tokens, C = hidden, V = vocab, F = MLP width, H = query heads, K = kv heads,
 * D = head dim. Activations are row-major Float64Arrays.
 */

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { InputError, ModelWeightsError } from '../../src/errors/index.js';
import { describeConfig, type ModelShape, parameterShapes, readModelConfig } from '../../src/model/config.js';
import { readSafetensors, type StoredTensor, toFloat64 } from '../../src/model/safetensors.js';

/** A loaded model: its normalised config and every parameter as float64 under its canonical HF name. */
export interface ReferenceModel {
  shape: ModelShape;
  params: Map<string, Float64Array>;
}

/**
 * Loads a model folder: single-file or sharded weights, `transformer.`-prefixed or bare GPT-2 names;
 * GPT-2's causal-mask buffers and LLaMA's inv_freq are ignored, as is `lm_head.weight` in a tied model.
 *
 * @example
 * const model = await loadReferenceModel('out/llama-nano');
 */
export async function loadReferenceModel(modelDir: string): Promise<ReferenceModel> {
  const cfg = await readModelConfig(modelDir);
  const shape = describeConfig(cfg);
  const stored = await readWeights(modelDir);
  const bare = shape.arch === 'gpt2' && ![...stored.keys()].some((k) => k.startsWith('transformer.'));
  const params = new Map<string, Float64Array>();
  const used = new Set<string>();
  for (const spec of parameterShapes(cfg)) {
    const fileName = bare && spec.name.startsWith('transformer.') ? spec.name.slice('transformer.'.length) : spec.name;
    const tensor = stored.get(fileName);
    if (!tensor) throw new ModelWeightsError(`${modelDir}: missing tensor ${fileName}`);
    if (tensor.shape.join(',') !== spec.shape.join(',')) {
      throw new ModelWeightsError(
        `${modelDir}: ${fileName} has shape [${tensor.shape.join(', ')}], expected [${spec.shape.join(', ')}]`,
      );
    }
    params.set(spec.name, toFloat64(tensor));
    used.add(fileName);
  }
  const ignored = ['.attn.bias', '.attn.masked_bias', '.rotary_emb.inv_freq'];
  for (const key of stored.keys()) {
    if (used.has(key) || ignored.some((s) => key.endsWith(s)) || (key === 'lm_head.weight' && shape.tied)) continue;
    throw new ModelWeightsError(`${modelDir}: unexpected tensor ${key}`);
  }
  return { shape, params };
}

/**
 * Logits of each sequence, independently and causally, positions from 0: one (T, V) row-major
 * Float64Array per sequence, row t predicting token t + 1.
 *
 * @example
 * const [logits] = await referenceLogits('out/gpt2-nano', [[1, 15, 301]]);
 * logits.length; // 3 * 512
 */
export async function referenceLogits(modelDir: string, sequences: number[][]): Promise<Float64Array[]> {
  const model = await loadReferenceModel(modelDir);
  return sequences.map((seq) => referenceForward(model, seq));
}

/**
 * (T, V) logits of one sequence.
 *
 * @example
 * const logits = referenceForward(await loadReferenceModel('out/qwen2-nano'), [9, 9, 120]);
 */
export function referenceForward(model: ReferenceModel, tokens: number[]): Float64Array {
  const s = model.shape;
  if (tokens.length === 0) throw new InputError('empty sequence');
  for (const id of tokens) {
    if (!Number.isInteger(id) || id < 0 || id >= s.vocab) {
      throw new InputError(`token id ${id} outside [0, ${s.vocab})`);
    }
  }
  if (s.arch === 'gpt2' && tokens.length > s.ctx) {
    throw new InputError(`sequence of ${tokens.length} tokens exceeds n_positions ${s.ctx}`);
  }
  const hidden = s.arch === 'gpt2' ? gpt2Hidden(model, tokens) : llamaHidden(model, tokens); // (T, C)
  const embedding = s.arch === 'gpt2' ? 'transformer.wte' : 'model.embed_tokens';
  return linear(model, s.tied ? embedding : 'lm_head', hidden, tokens.length, s.hidden, s.vocab); // (T, V)
}

/**
 * (T, C) final-normed hidden states of one sequence (the input of the LM head).
 *
 * @example
 * const h = referenceHidden(await loadReferenceModel('out/llama-nano'), [1, 2, 3]);
 */
export function referenceHidden(model: ReferenceModel, tokens: number[]): Float64Array {
  return model.shape.arch === 'gpt2' ? gpt2Hidden(model, tokens) : llamaHidden(model, tokens);
}

async function readWeights(modelDir: string): Promise<Map<string, StoredTensor>> {
  let files = ['model.safetensors'];
  try {
    const index = JSON.parse(await readFile(join(modelDir, 'model.safetensors.index.json'), 'utf8')) as {
      weight_map: Record<string, string>;
    };
    files = [...new Set(Object.values(index.weight_map))].sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const all = new Map<string, StoredTensor>();
  for (const file of files) {
    for (const [name, t] of (await readSafetensors(join(modelDir, file))).tensors) all.set(name, t);
  }
  return all;
}

function p(model: ReferenceModel, name: string): Float64Array {
  const t = model.params.get(name);
  if (!t) throw new ModelWeightsError(`no parameter ${name}`);
  return t;
}

function gpt2Hidden(model: ReferenceModel, tokens: number[]): Float64Array {
  const s = model.shape;
  const T = tokens.length;
  const C = s.hidden;
  const wte = p(model, 'transformer.wte.weight'); // (V, C)
  const wpe = p(model, 'transformer.wpe.weight'); // (P, C)
  let x: Float64Array = new Float64Array(T * C); // (T, C)
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < C; c++) x[t * C + c] = wte[tokens[t]! * C + c]! + wpe[t * C + c]!;
  }
  for (let i = 0; i < s.layers; i++) {
    const pre = `transformer.h.${i}.`;
    let h = layerNorm(x, T, C, p(model, `${pre}ln_1.weight`), p(model, `${pre}ln_1.bias`), s.eps);
    const qkv = conv1d(model, `${pre}attn.c_attn`, h, T, C, 3 * C); // (T, 3C)
    const q = new Float64Array(T * C);
    const k = new Float64Array(T * C);
    const v = new Float64Array(T * C);
    for (let t = 0; t < T; t++) {
      for (let c = 0; c < C; c++) {
        q[t * C + c] = qkv[t * 3 * C + c]!;
        k[t * C + c] = qkv[t * 3 * C + C + c]!;
        v[t * C + c] = qkv[t * 3 * C + 2 * C + c]!;
      }
    }
    const scale = 1 / Math.sqrt(s.headDim) / (s.scaleAttnByLayer ? i + 1 : 1);
    const a = attention(q, k, v, T, s.heads, s.heads, s.headDim, scale, null); // (T, C)
    x = add(x, conv1d(model, `${pre}attn.c_proj`, a, T, C, C));
    h = layerNorm(x, T, C, p(model, `${pre}ln_2.weight`), p(model, `${pre}ln_2.bias`), s.eps);
    const up = conv1d(model, `${pre}mlp.c_fc`, h, T, C, s.ffn); // (T, F)
    for (let j = 0; j < up.length; j++) up[j] = geluNew(up[j]!);
    x = add(x, conv1d(model, `${pre}mlp.c_proj`, up, T, s.ffn, C));
  }
  return layerNorm(x, T, C, p(model, 'transformer.ln_f.weight'), p(model, 'transformer.ln_f.bias'), s.eps);
}

function llamaHidden(model: ReferenceModel, tokens: number[]): Float64Array {
  const s = model.shape;
  const T = tokens.length;
  const C = s.hidden;
  const { heads: H, kvHeads: K, headDim: D } = s;
  const emb = p(model, 'model.embed_tokens.weight'); // (V, C)
  let x: Float64Array = new Float64Array(T * C); // (T, C)
  for (let t = 0; t < T; t++) for (let c = 0; c < C; c++) x[t * C + c] = emb[tokens[t]! * C + c]!;
  for (let i = 0; i < s.layers; i++) {
    const pre = `model.layers.${i}.`;
    let h = rmsNorm(x, T, C, p(model, `${pre}input_layernorm.weight`), s.eps);
    const q = linear(model, `${pre}self_attn.q_proj`, h, T, C, H * D); // (T, H·D)
    const k = linear(model, `${pre}self_attn.k_proj`, h, T, C, K * D); // (T, K·D)
    const v = linear(model, `${pre}self_attn.v_proj`, h, T, C, K * D); // (T, K·D)
    rope(q, T, H, D, s.ropeTheta!);
    rope(k, T, K, D, s.ropeTheta!);
    const a = attention(q, k, v, T, H, K, D, 1 / Math.sqrt(D), s.slidingWindow); // (T, H·D)
    x = add(x, linear(model, `${pre}self_attn.o_proj`, a, T, H * D, C));
    h = rmsNorm(x, T, C, p(model, `${pre}post_attention_layernorm.weight`), s.eps);
    const gate = linear(model, `${pre}mlp.gate_proj`, h, T, C, s.ffn); // (T, F)
    const up = linear(model, `${pre}mlp.up_proj`, h, T, C, s.ffn); // (T, F)
    for (let j = 0; j < gate.length; j++) gate[j] = silu(gate[j]!) * up[j]!;
    x = add(x, linear(model, `${pre}mlp.down_proj`, gate, T, s.ffn, C));
  }
  return rmsNorm(x, T, C, p(model, 'model.norm.weight'), s.eps);
}

/** GPT-2 Conv1D `module`: y (T, out) = x (T, in) · W (in, out) + b. */
function conv1d(
  model: ReferenceModel,
  module: string,
  x: Float64Array,
  T: number,
  nIn: number,
  nOut: number,
): Float64Array {
  const w = p(model, `${module}.weight`);
  const b = p(model, `${module}.bias`);
  const y = new Float64Array(T * nOut);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < nOut; o++) {
      let acc = b[o]!;
      for (let j = 0; j < nIn; j++) acc += x[t * nIn + j]! * w[j * nOut + o]!;
      y[t * nOut + o] = acc;
    }
  }
  return y;
}

/** nn.Linear `module`: y (T, out) = x (T, in) · Wᵀ + b with W (out, in); the bias is optional. */
function linear(
  model: ReferenceModel,
  module: string,
  x: Float64Array,
  T: number,
  nIn: number,
  nOut: number,
): Float64Array {
  const w = p(model, `${module}.weight`);
  const b = model.params.get(`${module}.bias`);
  const y = new Float64Array(T * nOut);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < nOut; o++) {
      let acc = b ? b[o]! : 0;
      for (let j = 0; j < nIn; j++) acc += x[t * nIn + j]! * w[o * nIn + j]!;
      y[t * nOut + o] = acc;
    }
  }
  return y;
}

function add(a: Float64Array, b: Float64Array): Float64Array {
  return a.map((v, i) => v + b[i]!);
}

/** (x − mean) / sqrt(var + eps) · w + b per row, var biased (divides by C). */
function layerNorm(x: Float64Array, T: number, C: number, w: Float64Array, b: Float64Array, eps: number): Float64Array {
  const y = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    let mean = 0;
    for (let c = 0; c < C; c++) mean += x[t * C + c]!;
    mean /= C;
    let variance = 0;
    for (let c = 0; c < C; c++) variance += (x[t * C + c]! - mean) ** 2;
    variance /= C;
    const inv = 1 / Math.sqrt(variance + eps);
    for (let c = 0; c < C; c++) y[t * C + c] = (x[t * C + c]! - mean) * inv * w[c]! + b[c]!;
  }
  return y;
}

/** x · rsqrt(mean(x²) + eps) · w per row. */
function rmsNorm(x: Float64Array, T: number, C: number, w: Float64Array, eps: number): Float64Array {
  const y = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    let ms = 0;
    for (let c = 0; c < C; c++) ms += x[t * C + c]! ** 2;
    const inv = 1 / Math.sqrt(ms / C + eps);
    for (let c = 0; c < C; c++) y[t * C + c] = x[t * C + c]! * inv * w[c]!;
  }
  return y;
}

/** 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))) */
function geluNew(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
}

function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/**
 * HF's non-interleaved RoPE, in place on x (T, heads·D): dims i and i + D/2 rotate together by
 * angle pos · θ^(−2i/D): x'_i = x_i·cos − x_{i+D/2}·sin, x'_{i+D/2} = x_{i+D/2}·cos + x_i·sin.
 */
function rope(x: Float64Array, T: number, heads: number, D: number, theta: number): void {
  const half = D / 2;
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const angle = t * (1 / theta ** ((2 * i) / D));
      const cos = Math.cos(angle);
      const sin = Math.sin(angle);
      for (let h = 0; h < heads; h++) {
        const base = t * heads * D + h * D;
        const a = x[base + i]!;
        const b = x[base + i + half]!;
        x[base + i] = a * cos - b * sin;
        x[base + i + half] = b * cos + a * sin;
      }
    }
  }
}

/**
 * Causal softmax attention: q (T, H·D), k and v (T, K·D) → (T, H·D), heads side by side. Query head h
 * reads kv head floor(h / (H / K)), as HF's repeat_kv. With a sliding window W, query i sees keys j
 * with i − W < j ≤ i.
 */
function attention(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  T: number,
  H: number,
  K: number,
  D: number,
  scale: number,
  window: number | null,
): Float64Array {
  const out = new Float64Array(T * H * D);
  const group = H / K;
  const scores = new Float64Array(T);
  for (let h = 0; h < H; h++) {
    const kv = Math.floor(h / group);
    for (let i = 0; i < T; i++) {
      const first = window === null ? 0 : Math.max(0, i - window + 1);
      let max = -Infinity;
      for (let j = first; j <= i; j++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[i * H * D + h * D + d]! * k[j * K * D + kv * D + d]!;
        scores[j] = dot * scale;
        max = Math.max(max, scores[j]!);
      }
      let sum = 0;
      for (let j = first; j <= i; j++) {
        scores[j] = Math.exp(scores[j]! - max);
        sum += scores[j]!;
      }
      for (let d = 0; d < D; d++) {
        let acc = 0;
        for (let j = first; j <= i; j++) acc += scores[j]! * v[j * K * D + kv * D + d]!;
        out[i * H * D + h * D + d] = acc / sum;
      }
    }
  }
  return out;
}
