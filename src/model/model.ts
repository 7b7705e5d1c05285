/**
 * `Model`: a Hugging Face model folder loaded into the native engine, with its tokenizer.
 * Every heavy call runs on a worker thread and returns a Promise; the event loop stays free.
 */
import { availableParallelism } from 'node:os';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CancelledError, InputError, KpigIOError, fromNative } from '../errors/index.js';
import { loadAddon, type NativeIgColumns, type NativeModel, type NativeModelInfo, type PrefixCacheStats } from '../native/index.js';
import { loadTokenizer, type Tokenizer } from '../tokenizer/index.js';
import { countParameters, readModelConfig } from './config.js';
import { checkMemory } from './memory.js';

export type ModelInfo = NativeModelInfo;
export type { PrefixCacheStats };

/** Sequences packed back to back: sequence i is `tokens[offsets[i] .. offsets[i+1])`. */
export interface PackedSequences {
  tokens: Int32Array;
  offsets: Int32Array;
}

export interface LoadModelOptions {
  /** Worker threads for this model (default: every core available to the process). */
  threads?: number;
  /** Load the folder's tokenizer (default true; a folder without one is an error unless false), or use the one given. */
  tokenizer?: boolean | Tokenizer;
  /**
   * `cpu` (default) or `cuda`: IG scoring and hidden states on the GPU, everything else on the CPU.
   * Without a usable GPU (or a build without the CUDA backend) the model stays on the CPU and
   * `info.deviceNote` says why. The CUDA backend has not run on a GPU yet (README).
   */
  device?: 'cpu' | 'cuda';
}

export interface GenerateOptions {
  /** Most new tokens per prompt (default 64). */
  maxNewTokens?: number;
  /** Stop a sequence when its decoded text contains one of these; the text is cut before it. */
  stop?: string[];
  /** Token ids that end a sequence (default: the config's and tokenizer's EOS ids). */
  eosIds?: number[];
  /** Add the tokenizer's special tokens (BOS) to string prompts (default true). */
  addSpecialTokens?: boolean;
  /** Called on the main thread as tokens arrive: (prompt index, new token id). */
  onToken?: (index: number, token: number) => void;
  signal?: AbortSignal;
  /** Sampling temperature (default 0: greedy). Above 0, tokens are drawn from softmax(logits / temperature). */
  temperature?: number;
  /** Sample only among the k most likely tokens (default 0: all). */
  topK?: number;
  /** Sample only among the smallest set of tokens whose probability reaches p (default 1). */
  topP?: number;
  /** Seed of the draws: prompt i of a call draws from a stream of (seed, i, step), whatever else is in the batch (default 0). */
  seed?: number;
}

export type FinishReason = 'eos' | 'length' | 'stop' | 'context';

export interface Generation {
  /** New token ids (EOS excluded; with a stop string, up to the token that completed it). */
  tokens: number[];
  /** Decoded new text (without the stop string), when the model has a tokenizer. */
  text: string;
  finishReason: FinishReason;
}

const FINISH: FinishReason[] = ['eos', 'length', 'stop', 'context'];
const NATIVE = Symbol('native');

/**
 * Packs token sequences back to back, checking that every id is an integer.
 *
 * @example
 * const { tokens, offsets } = packSequences([[1, 2, 3], [4, 5]]); // offsets = [0, 3, 5]
 */
export function packSequences(sequences: ArrayLike<ArrayLike<number>>): PackedSequences {
  let total = 0;
  for (let s = 0; s < sequences.length; s++) total += sequences[s].length;
  const tokens = new Int32Array(total);
  const offsets = new Int32Array(sequences.length + 1);
  let at = 0;
  for (let s = 0; s < sequences.length; s++) {
    const seq = sequences[s];
    for (let t = 0; t < seq.length; t++) {
      const id = seq[t];
      if (!Number.isInteger(id) || id > 0x7fffffff || id < -0x80000000)
        throw new InputError(`token ${t} of sequence ${s} is ${id}, not an integer token id`);
      tokens[at++] = id;
    }
    offsets[s + 1] = at;
  }
  return { tokens, offsets };
}

function isPacked(x: unknown): x is PackedSequences {
  return typeof x === 'object' && x !== null && (x as PackedSequences).tokens instanceof Int32Array;
}

/**
 * The engine handle with typed errors: every method's errors, thrown or rejected, come out as the
 * classes of `errors/` instead of the addon's plain errors with a `code`.
 */
function typedErrors<T extends object>(handle: T): T {
  return new Proxy(handle, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        try {
          const out = (value as (...a: unknown[]) => unknown).apply(target, args);
          return out instanceof Promise ? out.catch((err: unknown) => Promise.reject(fromNative(err))) : out;
        } catch (err) {
          throw fromNative(err);
        }
      };
    },
  });
}

export class Model {
  /** The folder the model was loaded from. */
  readonly dir: string;
  /** Architecture, sizes, parameter count, dtype and memory, as the engine loaded them. */
  readonly info: ModelInfo;
  /** The folder's tokenizer (null when loaded with `tokenizer: false`). */
  readonly tokenizer: Tokenizer | null;
  #native: NativeModel | null;

  private constructor(dir: string, nat: NativeModel, tokenizer: Tokenizer | null) {
    this.dir = dir;
    this.#native = typedErrors(nat);
    this.info = this.#native.info();
    this.tokenizer = tokenizer;
  }

  /**
   * Loads a Hugging Face model folder: `config.json` + `model.safetensors` (or a sharded
   * checkpoint with `model.safetensors.index.json`), F32/F16/BF16, and its tokenizer.
   *
   * @example
   * const model = await Model.load('./models/llama-nano');
   * console.log(model.info.numParams);
   */
  static async load(dir: string, options: LoadModelOptions = {}): Promise<Model> {
    if (!existsSync(dir)) throw new KpigIOError(`model folder '${dir}' does not exist`);
    if (!existsSync(join(dir, 'config.json')))
      throw new KpigIOError(`'${dir}' is not a Hugging Face model folder: it has no config.json`);
    const threads = options.threads ?? 0;
    if (!Number.isInteger(threads) || threads < 0) throw new InputError(`threads must be a non-negative integer, got ${threads}`);
    const cores = availableParallelism();
    if (threads > cores) throw new InputError(`threads ${threads} is more than the ${cores} cores this process may use; give at most ${cores} (0 = all)`);
    const tokenizer = options.tokenizer === false ? null : typeof options.tokenizer === 'object' ? options.tokenizer : await loadTokenizer(dir);
    // The engine keeps float32 weights: say so before it allocates more than the machine has.
    let params: number | null = null;
    try {
      params = countParameters(await readModelConfig(dir));
    } catch {
      // A config TypeScript cannot size is left to the engine, which names what is wrong with it.
    }
    if (params !== null) checkMemory(params * 4, `loading ${dir} (${params.toLocaleString('en-US')} parameters as float32)`);
    const device = options.device ?? 'cpu';
    if (device !== 'cpu' && device !== 'cuda') throw new InputError(`device must be cpu or cuda, got '${String(device)}'`);
    const nat = await typedErrors(loadAddon()).loadModel(dir, threads, device);
    const model = new Model(dir, nat, tokenizer);
    if (tokenizer && tokenizer.vocabSize > model.info.vocabSize)
      model.info.notes.push(
        `the tokenizer has ${tokenizer.vocabSize} ids but the model only ${model.info.vocabSize}: ids beyond that are rejected`,
      );
    return model;
  }

  #handle(): NativeModel {
    if (!this.#native) throw new InputError('the model was disposed');
    return this.#native;
  }

  /** @internal */
  [NATIVE](): NativeModel {
    return this.#handle();
  }

  /**
   * Logits of every position of every sequence (each causal, positions from 0), one
   * `(length × vocabSize)` row-major Float32Array per sequence; row t predicts token t+1.
   *
   * @example
   * const [logits] = await model.logits([[1, 2, 3]]);
   * const lastRow = logits.subarray(2 * model.info.vocabSize, 3 * model.info.vocabSize);
   */
  async logits(sequences: ArrayLike<ArrayLike<number>> | PackedSequences): Promise<Float32Array[]> {
    const packed = isPacked(sequences) ? sequences : packSequences(sequences);
    const flat = await this.#handle().forward(packed.tokens, packed.offsets, null);
    const V = this.info.vocabSize;
    const out: Float32Array[] = [];
    for (let s = 0; s + 1 < packed.offsets.length; s++) out.push(flat.subarray(packed.offsets[s] * V, packed.offsets[s + 1] * V));
    return out;
  }

  /**
   * Teacher-forced log-probabilities: for each sequence, `log p(x[t+1] | x[0..t])` for t < length−1.
   * The LM head is streamed, so no `tokens × vocab` array is ever held.
   *
   * @example
   * const [lp] = await model.logprobs([[5, 6, 7, 8]]); // 3 values
   */
  async logprobs(sequences: ArrayLike<ArrayLike<number>> | PackedSequences): Promise<Float32Array[]> {
    const packed = isPacked(sequences) ? sequences : packSequences(sequences);
    const { tokens, offsets } = packed;
    const targets = new Int32Array(tokens.length).fill(-1);
    for (let s = 0; s + 1 < offsets.length; s++)
      for (let t = offsets[s]; t < offsets[s + 1] - 1; t++) targets[t] = tokens[t + 1];
    const flat = await this.#handle().forward(tokens, offsets, targets);
    const out: Float32Array[] = [];
    for (let s = 0; s + 1 < offsets.length; s++) out.push(flat.subarray(offsets[s], Math.max(offsets[s], offsets[s + 1] - 1)));
    return out;
  }

  /**
   * One embedding per sequence: the mean over its positions of the final-normed hidden states (what
   * Hugging Face returns as `last_hidden_state`), `hiddenSize` floats each. InsCL compares
   * instructions with these.
   *
   * @example
   * const [a, b] = await model.embed([tok.encode('Classify the review.'), tok.encode('Answer yes or no.')]);
   */
  async embed(sequences: ArrayLike<ArrayLike<number>> | PackedSequences): Promise<Float32Array[]> {
    const packed = isPacked(sequences) ? sequences : packSequences(sequences);
    const flat = await this.#handle().embed(packed.tokens, packed.offsets);
    const C = this.info.hiddenSize;
    const out: Float32Array[] = [];
    for (let s = 0; s + 1 < packed.offsets.length; s++) out.push(flat.subarray(s * C, (s + 1) * C));
    return out;
  }

  /**
   * Batched decoding with a KV cache, greedy or sampled (temperature, top-k, top-p, seed). Prompts are strings (encoded with the model's
   * tokenizer) or token ids. Stops per prompt on EOS, a stop string, `maxNewTokens` or a full context.
   *
   * @example
   * const [g] = await model.generate(['Definition: answer yes or no. Output:'], { maxNewTokens: 8, stop: ['\n'] });
   * console.log(g.text, g.finishReason);
   */
  async generate(prompts: Array<string | ArrayLike<number>>, options: GenerateOptions = {}): Promise<Generation[]> {
    const maxNewTokens = options.maxNewTokens ?? 64;
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new InputError(`maxNewTokens must be a non-negative integer, got ${maxNewTokens}`);
    const { temperature = 0, topK = 0, topP = 1, seed = 0 } = options;
    if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new InputError(`temperature must be a finite number ≥ 0, got ${temperature}`);
    if (!Number.isInteger(topK) || topK < 0) throw new InputError(`topK must be a non-negative integer, got ${topK}`);
    if (!(topP > 0 && topP <= 1)) throw new InputError(`topP must be in (0, 1], got ${topP}`);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new InputError(`seed must be a non-negative integer, got ${seed}`);
    if (prompts.length === 0) return [];
    const tok = this.tokenizer;
    const stops = (options.stop ?? []).filter((s) => s.length > 0);
    if (stops.length > 0 && !tok) throw new InputError('stop strings need a tokenizer; load the model with one');
    const seqs = prompts.map((p, i) => {
      if (typeof p !== 'string') return p;
      if (!tok) throw new InputError(`prompt ${i} is a string but the model has no tokenizer`);
      return tok.encode(p, { addSpecialTokens: options.addSpecialTokens ?? true });
    });
    const packed = packSequences(seqs);
    const S = seqs.length;
    const eos = options.eosIds ?? [...new Set([...this.info.eosIds, ...(tok?.eosIds ?? [])])];
    const control = new Uint8Array(S + 1);
    const produced: number[][] = seqs.map(() => []);
    const onStep = (step: Int32Array) => {
      for (let s = 0; s < S; s++) {
        if (step[s] < 0) continue;
        produced[s].push(step[s]);
        options.onToken?.(s, step[s]);
        if (stops.length && !control[s] && firstStop(tok!.decode(produced[s]), stops) >= 0) control[s] = 1;
      }
    };
    const abort = () => {
      control[S] = 1;
    };
    if (options.signal?.aborted) throw new CancelledError('generation was cancelled before it started');
    options.signal?.addEventListener('abort', abort);
    let res;
    try {
      res = await this.#handle().generate(packed.tokens, packed.offsets, { maxNewTokens, eosIds: Int32Array.from(eos), temperature, topK, topP, seed }, control, onStep);
    } finally {
      options.signal?.removeEventListener('abort', abort);
    }
    const out: Generation[] = [];
    for (let s = 0; s < S; s++) {
      let tokens = Array.from(res.tokens.subarray(res.offsets[s], res.offsets[s + 1]));
      let finishReason = FINISH[res.finish[s]];
      let text = tok ? tok.decode(tokens) : '';
      if (stops.length && tok) {
        const cut = firstStop(text, stops);
        if (cut >= 0) {
          // Keep the shortest token prefix whose text contains the stop string.
          let n = 1;
          while (n < tokens.length && firstStop(tok.decode(tokens.slice(0, n)), stops) < 0) n++;
          tokens = tokens.slice(0, n);
          text = text.slice(0, cut);
          finishReason = 'stop';
        }
      }
      out.push({ tokens, text, finishReason });
    }
    return out;
  }

  /**
   * Matmul precision of every later call: 'bf16' rounds both matmul inputs to bfloat16 and
   * accumulates in float32 (AMX tiles or AVX512_BF16 where the CPU has them; see `info.bf16Isa`), with weights,
   * activations and optimizer state in float32 (mixed precision); 'fp32' (default) is exact float32.
   *
   * @example
   * model.setMatmulPrecision('bf16');
   */
  setMatmulPrecision(precision: 'fp32' | 'bf16'): void {
    this.#handle().setMatmulPrecision(precision);
  }

  /**
   * The prefix cache of scoring and generation: sequences of one call that start with the same
   * tokens (every instance of a task under one instruction, and the masked variants of that
   * instruction) compute that prefix once, and up to `maxBytes` of prefix keys and values are kept
   * between calls, least recently used dropped first. 0 turns it off. Default 256 MiB. Results
   * equal the unshared computation up to float32 rounding; the cache is emptied whenever the
   * weights or the matmul precision change.
   *
   * @example
   * model.setPrefixCache(512 * 2 ** 20);
   */
  setPrefixCache(maxBytes: number): void {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) throw new InputError(`the prefix cache size must be a whole number of bytes ≥ 0, got ${maxBytes}`);
    this.#handle().setPrefixCache(maxBytes);
  }

  /**
   * Drops every stored prefix (the size limit stays), so the next call's results do not depend on
   * what earlier calls left in the store. `kpig score` does this at every chunk, which makes a
   * chunk's scores the same whether or not the chunks before it were scored (sharded scoring).
   */
  clearPrefixCache(): void {
    this.#handle().clearPrefixCache();
  }

  /** Counters of the prefix cache since the model was loaded: hit rate = hits / sequences. */
  prefixCacheStats(): PrefixCacheStats {
    return this.#handle().prefixCacheStats();
  }

  /**
   * Information-gain columns of full/masked pairs (src/scoring/pairs.ts builds on it): pair i is
   * full sequence i and masked sequence i, sharing their last `responseLens[i]` tokens.
   */
  async igColumns(full: PackedSequences, masked: PackedSequences, responseLens: Int32Array, perToken = false): Promise<NativeIgColumns> {
    return this.#handle().scoreIg(full.tokens, full.offsets, masked.tokens, masked.offsets, responseLens, perToken);
  }

  /** Frees the engine's copy of the weights; calls already running finish first. */
  dispose(): void {
    this.#native?.dispose();
    this.#native = null;
  }
}

/**
 * The engine handle behind a model, for the training and scoring layers of this package; its
 * errors are typed as `Model`'s own are.
 * @internal
 */
export function nativeOf(model: Model): NativeModel {
  return model[NATIVE]();
}

function firstStop(text: string, stops: string[]): number {
  let best = -1;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && (best < 0 || i < best)) best = i;
  }
  return best;
}
