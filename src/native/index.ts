/**
 * Loads the native addon (`kpig.node`) and describes its raw interface. Everything above this file
 * talks to the engine through these types; nothing else touches the addon directly.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AddonLoadError } from '../errors/index.js';

/** The engine's reading of a config.json (`parseConfig`, and the first part of `NativeModel.info()`). */
export interface NativeConfigInfo {
  modelType: string;
  /** The architecture (native/src/model/arch/) that read it. */
  arch: 'gpt2' | 'llama' | 'gemma';
  /** How the family computes: its norm, MLP activation, positions and embedding scale. */
  norm: 'layernorm' | 'rmsnorm' | 'rmsnorm_plus_one';
  activation: 'gelu_tanh' | 'swiglu' | 'geglu_tanh';
  learnedPositions: boolean;
  embedScale: boolean;
  scaleAttnByLayer: boolean;
  /** PEFT's default LoRA target modules of the family. */
  loraTargets: string[];
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  maxPositions: number;
  ropeTheta: number;
  /** RoPE variant as config.json asks: default, linear, dynamic or llama3. */
  ropeType: string;
  normEps: number;
  tiedEmbeddings: boolean;
  qkvBias: boolean;
  oBias: boolean;
  bosId: number;
  eosIds: number[];
  configDtype: string;
}

/** What `NativeModel.info()` returns: the parsed config plus what the engine loaded. */
export interface NativeModelInfo extends NativeConfigInfo {
  numParams: number;
  weightsDtype: string;
  weightsFileBytes: number;
  memoryBytes: number;
  files: string[];
  notes: string[];
  /** Where IG scoring and hidden states run: 'cpu', or the device's name ('cuda:0 NVIDIA H100 …'). */
  device: string;
  /** Why a device asked for is not used (which library or call failed); empty otherwise. */
  deviceNote: string;
  /**
   * How fp32 matmuls run here: 'amx' (AMX tiles, each operand split exactly into three bf16 pieces
   * and the six products that carry fp32 precision accumulated in fp32: fp32 accuracy; used from 384
   * rows on, the FMA kernels below that), 'avx512', 'avx2' or 'scalar'. KPIG_ISA=avx512|avx2|scalar
   * picks a lower one.
   */
  isa: string;
  /**
   * How bf16 matmuls run here: 'amx' (AMX tiles), 'avx512_bf16' (`vdpbf16ps`) or 'emulated'
   * (rounded inputs, fp32 kernel). KPIG_BF16_ISA=avx512_bf16|emulated picks a lower one.
   */
  bf16Isa: string;
  threads: number;
}

export interface NativeGenerateResult {
  tokens: Int32Array;
  offsets: Int32Array;
  /** Per sequence: 0 = EOS, 1 = max new tokens, 2 = stopped by the caller, 3 = context full. */
  finish: Uint8Array;
}

export interface NativeTensorInfo {
  name: string;
  shape: number[];
  trainable: boolean;
}

export type NativeTensorKind = 'param' | 'grad' | 'exp_avg' | 'exp_avg_sq';

export interface NativeLoraOptions {
  rank: number;
  alpha: number;
  dropout?: number;
  targets?: string[];
  seed?: number;
}

export interface NativeAdamWOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  maxGradNorm?: number;
  decayAll?: boolean;
}

/** Paired IG scores, one Float64Array per quantity (one entry per pair). */
export interface NativeIgColumns {
  ceFull: Float64Array;
  ceMasked: Float64Array;
  igCe: Float64Array;
  igKl: Float64Array;
  igJs: Float64Array;
  entropyFull: Float64Array;
  entropyMasked: Float64Array;
  nTokens: Float64Array;
  sharedPrefix: Float64Array;
  positionsComputed: Float64Array;
  /** Per-token values of all pairs concatenated (Σ responseLens entries), with perToken. */
  tokNllFull?: Float32Array;
  tokNllMasked?: Float32Array;
  tokKl?: Float32Array;
  tokJs?: Float32Array;
  tokEntropyFull?: Float32Array;
  tokEntropyMasked?: Float32Array;
}

/** Counters of a model's prefix cache since it was loaded (Model.prefixCacheStats()). */
export interface PrefixCacheStats {
  /** Sequences planned with the cache on. */
  sequences: number;
  /** ...that started after a prefix shared with another sequence of the call or stored. */
  hits: number;
  /** ...whose prefix came from the store (an earlier call). */
  storeHits: number;
  /** Tokens of those sequences. */
  tokens: number;
  /** ...that were not computed because their prefix was shared. */
  tokensReused: number;
  /** Stored prefixes now, their bytes, and entries evicted so far. */
  entries: number;
  bytes: number;
  evictions: number;
}

export interface NativeModel {
  info(): NativeModelInfo;
  trainFull(): void;
  loraAdd(options: NativeLoraOptions): string[];
  loraMerge(): void;
  trainAccumulate(
    tokens: Int32Array,
    offsets: Int32Array,
    weights: Float32Array,
    seed: number,
    wantNll: boolean,
    /** (T × C) gradient of a further loss on the final-normed hidden states, added before the backward pass. */
    hiddenGrad?: Float32Array | null,
  ): Promise<{ loss: number; nWeighted: number; nll?: Float32Array }>;
  optimizerStep(options: NativeAdamWOptions): Promise<{ gradNorm: number; skipped: boolean; step: number }>;
  zeroGrad(): void;
  /** Every gradient ← Σ over the ranks of an MPI job (data-parallel training); one rank: nothing. */
  allreduceGrads(): Promise<void>;
  optimizerSteps(): number;
  setOptimizerSteps(steps: number): void;
  tensors(): NativeTensorInfo[];
  readTensor(name: string, kind: NativeTensorKind): Float32Array;
  writeTensor(name: string, kind: NativeTensorKind, data: Float32Array): void;
  setMatmulPrecision(precision: 'fp32' | 'bf16'): void;
  /** Prefix cache size in bytes (0: off). */
  setPrefixCache(maxBytes: number): void;
  /** Drops every stored prefix; the size limit stays. */
  clearPrefixCache(): void;
  prefixCacheStats(): PrefixCacheStats;
  scoreIg(
    fullTokens: Int32Array,
    fullOffsets: Int32Array,
    maskedTokens: Int32Array,
    maskedOffsets: Int32Array,
    responseLens: Int32Array,
    perToken: boolean,
  ): Promise<NativeIgColumns>;
  forward(tokens: Int32Array, offsets: Int32Array, targets: Int32Array | null): Promise<Float32Array>;
  embed(tokens: Int32Array, offsets: Int32Array): Promise<Float32Array>;
  /** (T × C) final-normed hidden states of every position (no LoRA dropout). */
  hiddenStates(tokens: Int32Array, offsets: Int32Array): Promise<Float32Array>;
  generate(
    tokens: Int32Array,
    offsets: Int32Array,
    options: { maxNewTokens: number; eosIds?: Int32Array; temperature?: number; topK?: number; topP?: number; seed?: number },
    control: Uint8Array,
    onStep?: (step: Int32Array) => void,
  ): Promise<NativeGenerateResult>;
  dispose(): void;
}

/** The processes of a data-parallel job as the addon sees them. */
export interface NativeCommInfo {
  /** Compiled with MPI. */
  built: boolean;
  /** MPI started in this process. */
  active: boolean;
  rank: number;
  size: number;
  /** The MPI library (e.g. "Open MPI v4.1.4"), when built with one. */
  library: string;
}

export interface NativeAddon {
  loadModel(dir: string, threads: number, device?: 'cpu' | 'cuda'): Promise<NativeModel>;
  /** Whether this build has the CUDA backend compiled in (nvcc was found when it was built). */
  cudaBuilt?: boolean;
  /** The engine's reading of a config.json's text; throws as loading would (`where` names it). */
  parseConfig(text: string, where?: string): NativeConfigInfo;
  /** The parameter tensors of a checkpoint with this config.json: names and shapes as in the file, in the engine's order. */
  checkpointLayout(text: string, where?: string): Array<{ name: string; shape: number[] }>;
  abiVersion: number;
  /** Starts MPI in a process an MPI launcher started; throws E_UNSUPPORTED when built without MPI. */
  distInit(): NativeCommInfo;
  distInfo(): NativeCommInfo;
  /** The array summed over the ranks, in place (every rank calls it with the same length). */
  distAllreduceSum(values: Float64Array): Float64Array;
  /** Ends every rank of the job with `code` (MPI_Abort); returns only without an active MPI. */
  distAbort(code: number): void;
}

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

let cached: NativeAddon | undefined;

/** Where the addon is looked for: `$KPIG_ADDON`, then the cmake-js / node-gyp output folders. */
export function addonCandidates(): string[] {
  return [
    ...(process.env.KPIG_ADDON ? [resolve(process.env.KPIG_ADDON)] : []),
    resolve(packageRoot, 'build', 'Release', 'kpig.node'),
    resolve(packageRoot, 'build', 'Debug', 'kpig.node'),
  ];
}

/**
 * Returns the native addon, loading it on first use from {@link addonCandidates}.
 *
 * @example
 * const addon = loadAddon();
 * const model = await addon.loadModel('./my-model', 0);
 */
export function loadAddon(): NativeAddon {
  cached ??= loadAddonFrom(addonCandidates());
  return cached;
}

/**
 * Loads the first of `candidates` that loads; otherwise throws an {@link AddonLoadError} that lists
 * every path tried with the reason it failed, and how to build the addon.
 *
 * @example
 * const addon = loadAddonFrom(['/opt/kpig/kpig.node']);
 */
export function loadAddonFrom(candidates: string[]): NativeAddon {
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  for (const path of candidates) {
    if (!existsSync(path)) {
      tried.push(`${path}: not found`);
      continue;
    }
    try {
      return require(path) as NativeAddon;
    } catch (err) {
      tried.push(`${path}: ${(err as Error).message}`);
    }
  }
  throw new AddonLoadError(
    `the kpig native addon could not be loaded. Tried:\n  ${tried.join('\n  ')}\n` +
      `Build it from the package folder (${packageRoot}) with \`npx cmake-js compile\` (needs cmake ≥ 3.15 and a ` +
      `C++17 compiler) or \`npx node-gyp rebuild\`, or point KPIG_ADDON at a built kpig.node.`,
  );
}
