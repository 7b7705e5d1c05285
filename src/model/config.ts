/**
 * Hugging Face `config.json` for the model families the engine runs: GPT-2, the LLaMA family
 * (LLaMA, Qwen2, Mistral) and Gemma. Holds the presets of the test models and the resolution of a
 * preset plus overrides into a complete HF config (what the model writer writes). Reading a
 * config.json (`describeConfig`) and the checkpoint's tensor names and shapes (`parameterShapes`)
 * come from the engine's architecture tables (native/src/model/arch/): one validator, one layout.
 *
 * Defaults are those of the transformers config classes (GPT2Config, LlamaConfig, Qwen2Config,
 * MistralConfig, GemmaConfig), so a resolved config reads back in `transformers` as the same model;
 * the presets are exactly those of `../shared/peers/reference.py`.
 */

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { KpigIOError, ModelConfigError, UnsupportedModelError, fromNative } from '../errors/index.js';
import { loadAddon, type NativeConfigInfo } from '../native/index.js';

/** The `model_type` values the engine implements. */
export type ModelType = 'gpt2' | 'llama' | 'qwen2' | 'mistral' | 'gemma';

/**
 * The architectures (block structures) of the engine: GPT-2 (LayerNorm, learned positions, GELU),
 * LLaMA (RMSNorm, RoPE, SwiGLU) and Gemma (LLaMA's with (1 + w) RMSNorm, GeGLU and √C embeddings).
 */
export type Arch = NativeConfigInfo['arch'];

/** A special-token id field as HF writes it: one id, several, or none. */
export type TokenIds = number | number[] | null;

/**
 * The fields of an HF `config.json` the engine reads. GPT-2 uses its own names (`n_embd`, `n_layer`,
 * ...); the LLaMA family uses `hidden_size`, `num_hidden_layers`, .... Any other HF field is kept as is.
 */
export interface ModelConfig {
  model_type: ModelType;
  vocab_size: number;
  architectures?: string[];
  tie_word_embeddings?: boolean;
  bos_token_id?: TokenIds;
  eos_token_id?: TokenIds;
  /** Storage dtype of the weights: 'float32', 'float16' or 'bfloat16' (HF v5 writes `dtype`). */
  torch_dtype?: string;
  // GPT-2
  n_embd?: number;
  n_layer?: number;
  n_head?: number;
  n_positions?: number;
  /** MLP width; null means 4 · n_embd. */
  n_inner?: number | null;
  layer_norm_epsilon?: number;
  activation_function?: string;
  scale_attn_by_inverse_layer_idx?: boolean;
  scale_attn_weights?: boolean;
  add_cross_attention?: boolean;
  // LLaMA family
  hidden_size?: number;
  num_hidden_layers?: number;
  num_attention_heads?: number;
  /** null or absent means num_attention_heads (no GQA). */
  num_key_value_heads?: number | null;
  intermediate_size?: number;
  /** null or absent means hidden_size / num_attention_heads. */
  head_dim?: number | null;
  max_position_embeddings?: number;
  rope_theta?: number;
  rope_scaling?: unknown;
  /** transformers 5: {rope_type, rope_theta, factor, …} in place of rope_theta and rope_scaling. */
  rope_parameters?: unknown;
  rms_norm_eps?: number;
  hidden_act?: string;
  /** LLaMA: biases on q, k, v and o_proj. Qwen2 always has q/k/v biases and never an o_proj bias. */
  attention_bias?: boolean;
  mlp_bias?: boolean;
  sliding_window?: number | null;
  use_sliding_window?: boolean;
  max_window_layers?: number | null;
  [key: string]: unknown;
}

/** HF config fields a caller may set over a preset; `model_type` may be left to the preset. */
export type ConfigOverrides = Partial<ModelConfig>;

/** A config reduced to what the forward pass needs, in one vocabulary for both families. */
export interface ModelShape {
  modelType: ModelType;
  arch: Arch;
  vocab: number;
  /** Context length: GPT-2's `n_positions` (a hard limit); LLaMA's `max_position_embeddings` (not one). */
  ctx: number;
  /** C */
  hidden: number;
  layers: number;
  /** H, query heads */
  heads: number;
  /** K, key/value heads; query head h reads kv head floor(h / (H / K)). */
  kvHeads: number;
  /** D */
  headDim: number;
  /** F, MLP inner width */
  ffn: number;
  tied: boolean;
  qkvBias: boolean;
  oBias: boolean;
  /** RoPE base θ; null for GPT-2, which has learned positions. */
  ropeTheta: number | null;
  /** RoPE variant (default, linear, dynamic, llama3); null for GPT-2. The engine reads the same fields the same way. */
  ropeType: RopeType | null;
  /** layer_norm_epsilon (GPT-2) or rms_norm_eps (LLaMA family). */
  eps: number;
  /** GPT-2's scale_attn_by_inverse_layer_idx: scores of layer i are further divided by i + 1. */
  scaleAttnByLayer: boolean;
  /** Mistral's sliding window (query i sees keys j with i − j < W); null for full causal attention. */
  slidingWindow: number | null;
  /** How the architecture computes (the engine's traits). */
  norm: NativeConfigInfo['norm'];
  activation: NativeConfigInfo['activation'];
  /** Token embeddings are multiplied by √hidden (Gemma). */
  embedScale: boolean;
}

/** The kind of a parameter, which decides its random init. */
export type ParameterKind = 'matrix' | 'bias' | 'norm';

/** One parameter: its name in an HF checkpoint, its shape in the file's layout, and its kind. */
export interface ParameterSpec {
  name: string;
  shape: number[];
  kind: ParameterKind;
}

const GPT2_DEFAULTS: ModelConfig = {
  activation_function: 'gelu_new',
  architectures: ['GPT2LMHeadModel'],
  attn_pdrop: 0.1,
  bos_token_id: 50256,
  embd_pdrop: 0.1,
  eos_token_id: 50256,
  initializer_range: 0.02,
  layer_norm_epsilon: 1e-5,
  model_type: 'gpt2',
  n_embd: 768,
  n_head: 12,
  n_inner: null,
  n_layer: 12,
  n_positions: 1024,
  reorder_and_upcast_attn: false,
  resid_pdrop: 0.1,
  scale_attn_by_inverse_layer_idx: false,
  scale_attn_weights: true,
  tie_word_embeddings: true,
  torch_dtype: 'float32',
  use_cache: true,
  vocab_size: 50257,
};

const LLAMA_DEFAULTS: ModelConfig = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0,
  bos_token_id: 1,
  eos_token_id: 2,
  head_dim: null,
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 11008,
  max_position_embeddings: 2048,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: null,
  pretraining_tp: 1,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 10000,
  tie_word_embeddings: false,
  torch_dtype: 'float32',
  use_cache: true,
  vocab_size: 32000,
};

const QWEN2_DEFAULTS: ModelConfig = {
  architectures: ['Qwen2ForCausalLM'],
  attention_bias: true,
  attention_dropout: 0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  head_dim: null,
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 22016,
  max_position_embeddings: 32768,
  max_window_layers: null,
  model_type: 'qwen2',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: null,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 10000,
  sliding_window: null,
  tie_word_embeddings: false,
  torch_dtype: 'float32',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

const MISTRAL_DEFAULTS: ModelConfig = {
  architectures: ['MistralForCausalLM'],
  attention_dropout: 0,
  bos_token_id: 1,
  eos_token_id: 2,
  head_dim: null,
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 131072,
  model_type: 'mistral',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  sliding_window: 4096,
  tie_word_embeddings: false,
  torch_dtype: 'float32',
  use_cache: true,
  vocab_size: 32000,
};

const GEMMA_DEFAULTS: ModelConfig = {
  architectures: ['GemmaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0,
  bos_token_id: 2,
  eos_token_id: 1,
  head_dim: 256,
  hidden_act: 'gelu_pytorch_tanh',
  hidden_size: 3072,
  initializer_range: 0.02,
  intermediate_size: 24576,
  max_position_embeddings: 8192,
  model_type: 'gemma',
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 16,
  pad_token_id: 0,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  tie_word_embeddings: true,
  torch_dtype: 'float32',
  use_cache: true,
  vocab_size: 256000,
};

const DEFAULTS: Readonly<Record<ModelType, ModelConfig>> = {
  gpt2: GPT2_DEFAULTS,
  llama: LLAMA_DEFAULTS,
  qwen2: QWEN2_DEFAULTS,
  mistral: MISTRAL_DEFAULTS,
  gemma: GEMMA_DEFAULTS,
};

const ARCH_OF: Readonly<Record<ModelType, Arch>> = { gpt2: 'gpt2', llama: 'llama', qwen2: 'llama', mistral: 'llama', gemma: 'gemma' };

const NANO_LLAMA: ConfigOverrides = {
  vocab_size: 512,
  hidden_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  intermediate_size: 176,
  rope_theta: 10000,
  max_position_embeddings: 128,
  rms_norm_eps: 1e-5,
};

/** The test-model presets: exactly those of reference.py, as (model_type, fields over HF's defaults). */
export const PRESETS = {
  'gpt2-nano': { model_type: 'gpt2', vocab_size: 512, n_positions: 128, n_embd: 64, n_layer: 2, n_head: 4 },
  'gpt2-tiny': { model_type: 'gpt2', vocab_size: 8192, n_positions: 256, n_embd: 256, n_layer: 4, n_head: 4 },
  'gpt2-small': { model_type: 'gpt2', vocab_size: 50257, n_positions: 1024, n_embd: 768, n_layer: 12, n_head: 12 },
  'llama-nano': { model_type: 'llama', ...NANO_LLAMA },
  'llama-tiny': {
    model_type: 'llama',
    vocab_size: 8192,
    hidden_size: 256,
    num_hidden_layers: 4,
    num_attention_heads: 8,
    num_key_value_heads: 4,
    intermediate_size: 688,
    rope_theta: 10000,
    max_position_embeddings: 256,
    rms_norm_eps: 1e-5,
  },
  'qwen2-nano': {
    model_type: 'qwen2',
    ...NANO_LLAMA,
    attention_bias: true,
    tie_word_embeddings: true,
    rms_norm_eps: 1e-6,
  },
  'smol-135m-like': {
    model_type: 'llama',
    vocab_size: 49152,
    hidden_size: 576,
    num_hidden_layers: 30,
    num_attention_heads: 9,
    num_key_value_heads: 3,
    intermediate_size: 1536,
    rope_theta: 100000,
    max_position_embeddings: 2048,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: true,
    bos_token_id: 0,
    eos_token_id: 0,
  },
} as const satisfies Record<string, ConfigOverrides & { model_type: ModelType }>;

/** The name of a preset. */
export type PresetName = keyof typeof PRESETS;

/**
 * Whether `name` is a known preset.
 *
 * @example
 * isPresetName('llama-nano'); // true
 */
export function isPresetName(name: string): name is PresetName {
  return Object.hasOwn(PRESETS, name);
}

/**
 * A complete, validated HF config.json object (keys sorted) from an optional preset plus overrides.
 * Fields: HF's defaults for the model_type, then the preset, then `overrides`; then the derived
 * fields as HF fills them (LLaMA family: `num_key_value_heads`, `head_dim`; Qwen2:
 * `max_window_layers`), and special-token ids that fall outside a small vocabulary are clamped to
 * `vocab_size − 1`. GPT-2 keeps `n_inner: null` (= 4 · n_embd) as HF does.
 *
 * @throws ModelConfigError on an unknown preset (listing the known ones), a missing model_type, or
 *   an inconsistent field (named in the message); UnsupportedModelError on features the engine lacks.
 * @example
 * const cfg = resolveConfig('llama-nano', { num_hidden_layers: 4, torch_dtype: 'bfloat16' });
 * cfg.head_dim; // 16
 */
export function resolveConfig(preset?: string, overrides: ConfigOverrides = {}): ModelConfig {
  let presetFields: ConfigOverrides = {};
  if (preset !== undefined) {
    if (!isPresetName(preset)) {
      throw new ModelConfigError(`unknown preset ${preset}; known presets: ${Object.keys(PRESETS).join(', ')}`);
    }
    presetFields = PRESETS[preset];
  }
  const modelType = overrides.model_type ?? presetFields.model_type;
  if (modelType === undefined) {
    throw new ModelConfigError(`give a preset or a model_type (${Object.keys(DEFAULTS).join(', ')})`);
  }
  if (!isModelType(modelType)) throw unsupportedModelType(modelType);
  if (presetFields.model_type !== undefined && ARCH_OF[presetFields.model_type] !== ARCH_OF[modelType]) {
    throw new ModelConfigError(
      `model_type ${modelType} does not fit preset ${preset}, which is a ${presetFields.model_type} model`,
    );
  }

  const cfg: ModelConfig = { ...DEFAULTS[modelType], ...presetFields, ...overrides, model_type: modelType };
  if (modelType !== 'gpt2') {
    // Validate before deriving, so that a bad size is reported under its own name.
    const heads = positiveInt(cfg, 'num_attention_heads');
    if (cfg.head_dim == null && positiveInt(cfg, 'hidden_size') % heads !== 0) {
      throw new ModelConfigError(
        `hidden_size (${cfg.hidden_size}) is not divisible by num_attention_heads (${heads}); set head_dim`,
      );
    }
    cfg.num_key_value_heads ??= heads;
    cfg.head_dim ??= positiveInt(cfg, 'hidden_size') / heads;
  }
  if (modelType === 'qwen2') cfg.max_window_layers ??= cfg.num_hidden_layers ?? null;
  for (const key of ['bos_token_id', 'eos_token_id'] as const) {
    const id = cfg[key];
    if (typeof id === 'number' && typeof cfg.vocab_size === 'number' && id >= cfg.vocab_size) {
      cfg[key] = cfg.vocab_size - 1;
    }
  }
  describeConfig(cfg);
  return sortKeys(cfg);
}

/**
 * Validates any HF config (a resolved one or a config.json from the Hub) and reduces it to a
 * {@link ModelShape}. Missing optional fields take HF's class defaults; size fields are required.
 *
 * @throws ModelConfigError naming the bad field; UnsupportedModelError for a model_type or option
 *   the engine does not implement (RoPE variants other than default, linear, dynamic and llama3, mlp_bias, Qwen2 sliding windows, cross attention,
 *   activations other than gelu_new / silu).
 * @example
 * describeConfig(resolveConfig('qwen2-nano'));
 * // { modelType: 'qwen2', arch: 'llama', vocab: 512, ctx: 128, hidden: 64, layers: 2, heads: 4,
 * //   kvHeads: 2, headDim: 16, ffn: 176, tied: true, qkvBias: true, oBias: false, ropeTheta: 10000,
 * //   eps: 1e-6, scaleAttnByLayer: false, slidingWindow: null }
 */
export function describeConfig(cfg: ModelConfig, where = 'config.json'): ModelShape {
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) {
    throw new ModelConfigError('config is not a JSON object');
  }
  let c: NativeConfigInfo;
  try {
    c = loadAddon().parseConfig(JSON.stringify(cfg), where);
  } catch (err) {
    throw fromNative(err);
  }
  const rope = !c.learnedPositions;
  return {
    modelType: c.modelType as ModelType,
    arch: c.arch,
    vocab: c.vocabSize,
    ctx: c.maxPositions,
    hidden: c.hiddenSize,
    layers: c.numLayers,
    heads: c.numHeads,
    kvHeads: c.numKvHeads,
    headDim: c.headDim,
    ffn: c.intermediateSize,
    tied: c.tiedEmbeddings,
    qkvBias: c.qkvBias,
    oBias: c.oBias,
    ropeTheta: rope ? c.ropeTheta : null,
    ropeType: rope ? (c.ropeType as RopeType) : null,
    eps: c.normEps,
    scaleAttnByLayer: c.scaleAttnByLayer,
    // The engine accepts only windows at least as long as the context, which change nothing.
    slidingWindow: c.modelType === 'mistral' && typeof cfg.sliding_window === 'number' ? cfg.sliding_window : null,
    norm: c.norm,
    activation: c.activation,
    embedScale: c.embedScale,
  };
}

/**
 * The model's parameters in the engine's order (block by block: norm, attention, norm, MLP), with the
 * names and layouts HF checkpoints use, from the engine's architecture tables.
 * GPT-2 (`transformer.` prefix) stores Conv1D weights as (in, out), y = x·W + b, with c_attn's output
 * laid out [q | k | v]; the LLaMA family stores nn.Linear weights as (out, in), y = x·Wᵀ + b.
 * `lm_head.weight` (V, C) appears only when the embeddings are untied.
 *
 * @example
 * parameterShapes(resolveConfig('llama-nano'))[1];
 * // { name: 'model.layers.0.input_layernorm.weight', shape: [64], kind: 'norm' }
 */
export function parameterShapes(cfg: ModelConfig): ParameterSpec[] {
  // The engine reads (and checks) the config as loading would, then lists its checkpoint's tensors.
  let layout: Array<{ name: string; shape: number[] }>;
  try {
    layout = loadAddon().checkpointLayout(JSON.stringify(cfg));
  } catch (err) {
    throw fromNative(err);
  }
  return layout.map(({ name, shape }) => ({ name, shape, kind: shape.length === 2 ? 'matrix' : name.endsWith('.bias') ? 'bias' : 'norm' }));
}

/**
 * Number of stored parameters (a tied embedding counted once).
 *
 * @example
 * countParameters(resolveConfig('gpt2-small')); // 124439808
 */
export function countParameters(cfg: ModelConfig): number {
  return parameterShapes(cfg).reduce((n, p) => n + p.shape.reduce((a, d) => a * d, 1), 0);
}

/**
 * Reads and validates `<modelDir>/config.json`.
 *
 * @throws KpigIOError when the file can't be read; ModelConfigError when it isn't a valid config.
 * @example
 * const cfg = await readModelConfig('out/llama-nano');
 * describeConfig(cfg).layers; // 2
 */
export async function readModelConfig(modelDir: string): Promise<ModelConfig> {
  const path = join(modelDir, 'config.json');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new KpigIOError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  let cfg: ModelConfig;
  try {
    cfg = JSON.parse(text) as ModelConfig;
  } catch (err) {
    throw new ModelConfigError(`${path} is not valid JSON (${(err as Error).message})`, { cause: err });
  }
  describeConfig(cfg, path);
  return cfg;
}

function isModelType(value: unknown): value is ModelType {
  return typeof value === 'string' && Object.hasOwn(DEFAULTS, value);
}

function unsupportedModelType(value: unknown): UnsupportedModelError {
  return new UnsupportedModelError(`model_type ${JSON.stringify(value)} is not supported (${Object.keys(DEFAULTS).join(', ')} are)`);
}

function positiveInt(cfg: ModelConfig, key: string): number {
  const value = cfg[key];
  if (value === undefined || value === null) throw new ModelConfigError(`missing field ${key}`);
  if (!Number.isSafeInteger(value) || (value as number) <= 0) {
    throw new ModelConfigError(`${key} must be a positive integer, not ${JSON.stringify(value)}`);
  }
  return value as number;
}

/** The RoPE variants the engine implements (native/src/model/config.cpp reads them). */
export const ROPE_TYPES = ['default', 'linear', 'dynamic', 'llama3', 'yarn'] as const;
export type RopeType = (typeof ROPE_TYPES)[number];

function sortKeys(cfg: ModelConfig): ModelConfig {
  const entries = Object.entries(cfg).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return Object.fromEntries(entries) as ModelConfig;
}
