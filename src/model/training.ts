/**
 * The training surface of a loaded model: its trainable tensors by name (Hugging Face names for
 * base weights, PEFT names for LoRA adapters), their gradients and AdamW moments, the gradient
 * accumulation of one packed batch, the optimizer step, LoRA adapters and the gradient allreduce
 * of data-parallel jobs. `src/train/` builds the Trainer and checkpoints on it; nothing above the
 * model layer touches the engine handle.
 */
import type { NativeAdamWOptions, NativeLoraOptions, NativeTensorInfo, NativeTensorKind } from '../native/index.js';
import { type Model, nativeOf, type PackedSequences } from './model.js';

export type TensorInfo = NativeTensorInfo;
export type TensorKind = NativeTensorKind;
export type LoraOptions = NativeLoraOptions;
export type AdamWOptions = NativeAdamWOptions;

export class ModelTraining {
  readonly #model: Model;

  constructor(model: Model) {
    this.#model = model;
  }

  get #nat() {
    return nativeOf(this.#model);
  }

  /** Every tensor: name, shape, and whether it trains now. */
  tensors(): TensorInfo[] {
    return this.#nat.tensors();
  }

  /** A copy of a tensor's parameter, gradient or AdamW moment. */
  read(name: string, kind: TensorKind): Float32Array {
    return this.#nat.readTensor(name, kind);
  }

  write(name: string, kind: TensorKind, data: Float32Array): void {
    this.#nat.writeTensor(name, kind, data);
  }

  /** Gradients for every base weight (full fine-tuning). */
  enableFullTraining(): void {
    this.#nat.trainFull();
  }

  /** Adds LoRA adapters; returns the module paths that got one. */
  addLora(options: LoraOptions): string[] {
    return this.#nat.loraAdd(options);
  }

  /** Folds the adapters into the base weights and removes them. */
  mergeLora(): void {
    this.#nat.loraMerge();
  }

  zeroGrad(): void {
    this.#nat.zeroGrad();
  }

  /**
   * Adds the gradient of Σ weights·NLL over a packed batch (weights[t] weighs predicting token
   * t + 1); `seed` draws LoRA dropout.
   */
  accumulate(
    batch: PackedSequences,
    weights: Float32Array,
    seed: number,
    wantNll = false,
    hiddenGrad?: Float32Array,
  ): Promise<{ loss: number; nWeighted: number; nll?: Float32Array }> {
    return this.#nat.trainAccumulate(batch.tokens, batch.offsets, weights, seed, wantNll, hiddenGrad ?? null);
  }

  /**
   * The final-normed hidden states of every position of a packed batch (tokens × hidden,
   * row-major): what a loss on hidden states reads and `accumulate`'s `hiddenGrad` is the gradient of.
   */
  hiddenStates(batch: PackedSequences): Promise<Float32Array> {
    return this.#nat.hiddenStates(batch.tokens, batch.offsets);
  }

  /** One AdamW step over the accumulated gradients (clipped by global norm), then zero gradients. */
  optimizerStep(options: AdamWOptions): Promise<{ gradNorm: number; skipped: boolean; step: number }> {
    return this.#nat.optimizerStep(options);
  }

  optimizerSteps(): number {
    return this.#nat.optimizerSteps();
  }

  setOptimizerSteps(steps: number): void {
    this.#nat.setOptimizerSteps(steps);
  }

  /** Every gradient summed over the ranks of an MPI job (one process: nothing). */
  allreduceGrads(): Promise<void> {
    return this.#nat.allreduceGrads();
  }
}

const surfaces = new WeakMap<Model, ModelTraining>();

/**
 * The training surface of `model` (one per model).
 *
 * @example
 * const t = trainingOf(model);
 * t.enableFullTraining();
 * for (const x of t.tensors().filter((x) => x.trainable)) console.log(x.name, x.shape);
 */
export function trainingOf(model: Model): ModelTraining {
  let t = surfaces.get(model);
  if (!t) surfaces.set(model, (t = new ModelTraining(model)));
  return t;
}
