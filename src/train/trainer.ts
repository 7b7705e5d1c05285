/**
 * The training loop: micro-batches of weighted sequences, gradient accumulation, AdamW with a
 * warm-up + decay schedule and global-norm clipping, progress events, cancellation, periodic
 * atomic checkpoints, and bit-identical resume (data order, dropout and optimizer state are all
 * functions of the seed and the step).
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { CancelledError, InputError } from '../errors/index.js';
import { SINGLE_PROCESS, type World } from '../dist/index.js';
import { type Model, packSequences } from '../model/model.js';
import { trainingOf } from '../model/training.js';
import type { TrainingSequence } from '../data/instructions.js';
import { addLora, loadCheckpoint, loraSettings, saveCheckpoint, type LoraSettings, type TrainerState } from './checkpoint.js';
import { mulberry32 } from '../random/rng.js';
import { learningRate, type ScheduleKind } from './schedule.js';

export interface TrainerOptions {
  /** 'full' trains every weight; 'lora' adds adapters and trains only them (default 'lora'). */
  mode?: 'full' | 'lora';
  lora?: Partial<LoraSettings>;
  lr?: number;
  weightDecay?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Clip the global gradient norm to this (0: off; default 1). */
  maxGradNorm?: number;
  schedule?: ScheduleKind;
  warmupSteps?: number;
  epochs?: number;
  /** Stop after this many optimizer steps (default: epochs × steps per epoch). */
  maxSteps?: number;
  /** Sequences per micro-batch (default 8). */
  batchSize?: number;
  /** Micro-batches per optimizer step (default 1). */
  gradAccum?: number;
  seed?: number;
  /** Where checkpoints go; none are written without it. */
  outDir?: string;
  /** Write a checkpoint every this many steps (and at the end) when outDir is set. */
  checkpointEvery?: number;
  /**
   * Data-parallel training (src/dist): each rank trains on its slice of every micro-batch (its
   * share of the sequences, in order), the gradients and losses are summed over the ranks before
   * every optimizer step, and only rank 0 writes checkpoints. The steps equal one process's on the
   * same global batch up to float rounding (LoRA dropout draws follow the packing, so they differ).
   * Default: one process.
   */
  world?: World;
}

export interface TrainProgress {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  lr: number;
  gradNorm: number;
  /** The step was skipped: NaN/Inf appeared in the loss or gradients; weights untouched. */
  skipped: boolean;
  /** Weighted tokens in the step (0: nothing to learn from). */
  weightedTokens: number;
  tokensPerSecond: number;
  elapsedSeconds: number;
  etaSeconds: number;
}

/** What one optimizer step did. */
export interface StepOutcome {
  loss: number;
  lr: number;
  gradNorm: number;
  /** NaN/Inf in the loss or gradients, or nothing weighted: no update, weights untouched. */
  skipped: boolean;
  weightedTokens: number;
}

/** Options of {@link Trainer.trainStep}. */
export interface StepOptions {
  /** Divide Σ w·NLL by this instead of Σ |w| (e.g. the number of samples when the weights already hold per-sample means). */
  normalizer?: number;
  /**
   * Runs after the gradients are accumulated (and summed over the ranks) and before the optimizer
   * update: a regulariser adds its gradient here (EWC's penalty).
   */
  beforeOptimizer?: (gradients: Gradients) => void | Promise<void>;
}

/** The trainable tensors' gradients during a step, for a regulariser to read and add to. */
export interface Gradients {
  /** Names of the trainable tensors. */
  names(): string[];
  /** A copy of a tensor's accumulated gradient. */
  read(name: string): Float32Array;
  /** A copy of a tensor's current weights. */
  param(name: string): Float32Array;
  /** Replaces a tensor's gradient. */
  write(name: string, gradient: Float32Array): void;
}

export interface TrainSummary {
  steps: number;
  losses: number[];
  skippedSteps: number[];
  checkpoints: string[];
}

/** The order of the examples in one epoch: a seeded Fisher–Yates shuffle. */
function epochOrder(n: number, seed: number, epoch: number): number[] {
  const rnd = mulberry32(seed * 1000003 + epoch * 7919 + 1);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/** Latest `checkpoint-<step>` folder in `outDir`, or null. */
export function latestCheckpoint(outDir: string): string | null {
  let best = -1;
  try {
    for (const name of readdirSync(outDir)) {
      const m = /^checkpoint-(\d+)$/.exec(name);
      if (m && Number(m[1]) > best) best = Number(m[1]);
    }
  } catch {
    return null;
  }
  return best < 0 ? null : join(outDir, `checkpoint-${best}`);
}

export class Trainer {
  readonly model: Model;
  /** The ranks this trainer's steps are spread over (one process unless options.world). */
  readonly world: World;
  readonly options: Required<Omit<TrainerOptions, 'lora' | 'outDir' | 'maxSteps' | 'world'>> & Pick<TrainerOptions, 'outDir' | 'maxSteps'>;
  readonly lora?: LoraSettings;
  #step = 0;
  #losses: number[] = [];
  #queue: Promise<unknown> = Promise.resolve();

  /**
   * Prepares the model for training: full fine-tuning, or LoRA adapters added with `options.lora`.
   *
   * @example
   * const trainer = new Trainer(model, { mode: 'lora', lora: { rank: 8 }, lr: 2e-4, epochs: 3, outDir: 'out' });
   * const summary = await trainer.train(sequences, { onProgress: (p) => console.log(p.step, p.loss) });
   */
  constructor(model: Model, options: TrainerOptions = {}) {
    this.model = model;
    const mode = options.mode ?? 'lora';
    this.options = {
      mode,
      lr: options.lr ?? (mode === 'lora' ? 2e-4 : 5e-5),
      weightDecay: options.weightDecay ?? 0,
      beta1: options.beta1 ?? 0.9,
      beta2: options.beta2 ?? 0.999,
      eps: options.eps ?? 1e-8,
      maxGradNorm: options.maxGradNorm ?? 1,
      schedule: options.schedule ?? 'cosine',
      warmupSteps: options.warmupSteps ?? 0,
      epochs: options.epochs ?? 1,
      batchSize: options.batchSize ?? 8,
      gradAccum: options.gradAccum ?? 1,
      seed: options.seed ?? 0,
      checkpointEvery: options.checkpointEvery ?? 0,
      outDir: options.outDir,
      maxSteps: options.maxSteps,
    };
    this.world = options.world ?? SINGLE_PROCESS;
    const o = this.options;
    for (const [k, v] of Object.entries({ batchSize: o.batchSize, gradAccum: o.gradAccum, epochs: o.epochs }))
      if (!Number.isInteger(v) || v < 1) throw new InputError(`${k} must be an integer ≥ 1, got ${v}`);
    if (!(o.lr > 0)) throw new InputError(`lr must be > 0, got ${o.lr}`);
    if (o.maxSteps !== undefined && (!Number.isInteger(o.maxSteps) || o.maxSteps < 1)) throw new InputError(`maxSteps must be an integer ≥ 1`);
    if (mode === 'full') {
      trainingOf(model).enableFullTraining();
    } else {
      this.lora = loraSettings(model);
      if (!this.lora) {
        this.lora = {
          rank: options.lora?.rank ?? 8,
          alpha: options.lora?.alpha ?? 16,
          dropout: options.lora?.dropout ?? 0,
          targets: options.lora?.targets ?? [...model.info.loraTargets],
        };
        addLora(model, this.lora, o.seed);
      }
    }
  }

  /** Optimizer steps taken so far (continues from a resumed checkpoint). */
  get step(): number {
    return this.#step;
  }

  /** The trainable tensors (names and shapes): LoRA adapters, or every base weight in full mode. */
  trainableTensors(): Array<{ name: string; shape: number[] }> {
    return trainingOf(this.model).tensors().filter((t) => t.trainable).map(({ name, shape }) => ({ name, shape }));
  }

  /** A copy of the current weights of every trainable tensor. */
  parameters(): Map<string, Float32Array> {
    const t = trainingOf(this.model);
    return new Map(this.trainableTensors().map(({ name }) => [name, t.read(name, 'param')]));
  }

  /** A copy of one tensor's weights (a base weight or an adapter, by name). */
  readParam(name: string): Float32Array {
    return trainingOf(this.model).read(name, 'param');
  }

  /** Overwrites one tensor's weights. */
  writeParam(name: string, data: Float32Array): void {
    trainingOf(this.model).write(name, 'param', data);
  }

  /**
   * Folds the LoRA adapters into the base weights (W += α/r·B·A) and adds fresh ones with the same
   * settings (A drawn from `seed`, B = 0) and a zero optimizer state: a new adapter for a new task.
   *
   * @example
   * trainer.restartLora(deriveSeed(seed, 'task-adapter', 2));
   */
  restartLora(seed: number): void {
    if (!this.lora) throw new InputError('restartLora: this trainer does not train LoRA adapters');
    const t = trainingOf(this.model);
    t.mergeLora();
    t.addLora({ ...this.lora, seed });
  }

  /**
   * A fresh AdamW state: both moments zero and the bias correction restarted (the step count of
   * `step` is the trainer's and stays).
   *
   * @example
   * trainer.resetOptimizer(); // a new stage starts its optimizer afresh
   */
  resetOptimizer(): void {
    const t = trainingOf(this.model);
    for (const { name, shape } of this.trainableTensors()) {
      const zeros = new Float32Array(shape.reduce((a, b) => a * b, 1));
      t.write(name, 'exp_avg', zeros);
      t.write(name, 'exp_avg_sq', zeros);
    }
    t.setOptimizerSteps(0);
  }

  /**
   * Σ over `sequences` of each one's squared gradient, per trainable tensor (one backward pass per
   * sequence, e.g. for the diagonal empirical Fisher). Gradients are zero afterwards; the weights
   * and the optimizer are untouched. Each rank sums the sequences it is given (no allreduce).
   */
  async squaredGradients(sequences: TrainingSequence[]): Promise<Map<string, Float64Array>> {
    const t = trainingOf(this.model);
    const trainable = this.trainableTensors();
    const sums = new Map(trainable.map(({ name, shape }) => [name, new Float64Array(shape.reduce((a, b) => a * b, 1))]));
    t.zeroGrad();
    for (const seq of sequences) {
      await t.accumulate(packSequences([seq.tokens]), Float32Array.from(seq.weights), 0);
      for (const { name } of trainable) {
        const g = t.read(name, 'grad');
        const f = sums.get(name)!;
        for (let i = 0; i < g.length; i++) f[i] += g[i] * g[i];
      }
      t.zeroGrad();
    }
    return sums;
  }

  #gradients(): Gradients {
    const t = trainingOf(this.model);
    return {
      names: () => this.trainableTensors().map((x) => x.name),
      read: (name) => t.read(name, 'grad'),
      param: (name) => t.read(name, 'param'),
      write: (name, g) => t.write(name, 'grad', g),
    };
  }

  /**
   * Restores weights, AdamW state and the step from a checkpoint of a run with the same settings.
   *
   * @example
   * await trainer.resume(latestCheckpoint('out')!);
   */
  async resume(dir: string): Promise<void> {
    const state = await loadCheckpoint(this.model, dir);
    if (state.mode !== this.options.mode) throw new InputError(`${dir} is a ${state.mode} checkpoint, this trainer does ${this.options.mode} training`);
    if (state.seed !== this.options.seed) throw new InputError(`${dir} was trained with seed ${state.seed}, this trainer has seed ${this.options.seed}`);
    this.#step = state.step;
    this.#losses = state.losses;
  }

  /**
   * Trains on weighted sequences (weights[t] weighs the prediction of tokens[t+1]; the loss of a
   * step is Σ w·NLL / Σ |w| over its micro-batches). Resolves with the summary; rejects with
   * CancelledError when `signal` aborts (the last checkpoint stays valid).
   */
  async train(
    data: TrainingSequence[],
    hooks: { onProgress?: (p: TrainProgress) => void; signal?: AbortSignal } = {},
  ): Promise<TrainSummary> {
    return this.#exclusive(() => this.#train(data, hooks));
  }

  /**
   * Runs `work` after every call already queued on this trainer: `train` and `trainStep` never
   * overlap, so two steps started at once are two optimizer steps on successive weights, not one
   * step with both gradients merged.
   */
  #exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(work);
    this.#queue = run.catch(() => undefined); // a failed call does not block the next
    return run;
  }

  async #train(data: TrainingSequence[], hooks: { onProgress?: (p: TrainProgress) => void; signal?: AbortSignal }): Promise<TrainSummary> {
    const o = this.options;
    if (data.length === 0) throw new InputError('no training sequences (the data is empty, or every row was too long)');
    const perStep = o.batchSize * o.gradAccum;
    const stepsPerEpoch = Math.ceil(data.length / perStep);
    const totalSteps = Math.min(o.maxSteps ?? Infinity, stepsPerEpoch * o.epochs);
    const checkpoints: string[] = [];
    const skippedSteps: number[] = [];
    const t0 = Date.now();
    let tokensSeen = 0;
    const startStep = this.#step;
    let order: number[] = [];
    let orderEpoch = -1;
    for (let step = this.#step; step < totalSteps; step++) {
      const epoch = Math.floor(step / stepsPerEpoch);
      if (epoch !== orderEpoch) {
        order = epochOrder(data.length, o.seed, epoch);
        orderEpoch = epoch;
      }
      const within = step % stepsPerEpoch;
      const picked = order.slice(within * perStep, (within + 1) * perStep).map((i) => data[i]);
      const lr = learningRate(step, { lr: o.lr, totalSteps, warmupSteps: o.warmupSteps, schedule: o.schedule });
      const r = await this.#step_(picked, lr, step, hooks.signal);
      tokensSeen += r.tokens;
      const { loss, gradNorm, skipped, weightedTokens } = r;
      if (skipped) skippedSteps.push(step);
      this.#losses.push(loss);
      this.#step = step + 1;
      const elapsed = (Date.now() - t0) / 1000;
      const done = this.#step - startStep;
      hooks.onProgress?.({
        step: this.#step,
        totalSteps,
        epoch,
        loss,
        lr,
        gradNorm,
        skipped,
        weightedTokens,
        tokensPerSecond: elapsed > 0 ? tokensSeen / elapsed : 0,
        elapsedSeconds: elapsed,
        etaSeconds: done > 0 ? (elapsed / done) * (totalSteps - this.#step) : 0,
      });
      const last = this.#step === totalSteps;
      if (o.outDir && ((o.checkpointEvery > 0 && this.#step % o.checkpointEvery === 0) || last)) {
        const dir = join(o.outDir, `checkpoint-${this.#step}`);
        // Every rank holds the same weights and optimizer state: rank 0 writes them.
        if (this.world.rank === 0) await saveCheckpoint(this.model, dir, this.#state(totalSteps, data.length));
        checkpoints.push(dir);
      }
    }
    return { steps: this.#step, losses: [...this.#losses], skippedSteps, checkpoints };
  }

  /**
   * One optimizer step on `sequences` at learning rate `lr` (micro-batches of `batchSize`, loss
   * Σ w·NLL / Σ |w|), for pipelines that run their own loop. Advances the step counter.
   *
   * @example
   * const r = await trainer.trainStep(batch, 1e-4);
   * if (r.skipped) console.warn('non-finite gradients: step skipped');
   */
  async trainStep(sequences: TrainingSequence[], lr: number, signal?: AbortSignal, options: StepOptions = {}): Promise<StepOutcome> {
    if (!(lr >= 0)) throw new InputError(`lr must be ≥ 0, got ${lr}`);
    if (options.normalizer !== undefined && !(options.normalizer > 0)) throw new InputError(`normalizer must be > 0, got ${options.normalizer}`);
    return this.#exclusive(async () => {
      const r = await this.#step_(sequences, lr, this.#step, signal, options);
      this.#losses.push(r.loss);
      this.#step++;
      return r;
    });
  }

  async #step_(picked: TrainingSequence[], lr: number, step: number, signal?: AbortSignal, options: StepOptions = {}): Promise<StepOutcome & { tokens: number }> {
    const o = this.options;
    const nat = trainingOf(this.model);
    let norm = 0;
    let weightedTokens = 0;
    for (const ex of picked)
      for (const w of ex.weights) {
        norm += Math.abs(w);
        if (w !== 0) weightedTokens++;
      }
    if (norm > 0 && options.normalizer !== undefined) norm = options.normalizer;
    let loss = 0;
    let tokens = 0;
    const micros = Math.ceil(picked.length / o.batchSize);
    const { rank, size } = this.world;
    for (let micro = 0; micro < micros; micro++) {
      if (signal?.aborted) throw new CancelledError(`training was cancelled at step ${step}`);
      const all = picked.slice(micro * o.batchSize, (micro + 1) * o.batchSize);
      if (norm === 0) break;
      // This rank's share of the micro-batch: sequences [⌊r·n/k⌋, ⌊(r+1)·n/k⌋).
      const seqs = size === 1 ? all : all.slice(Math.floor((rank * all.length) / size), Math.floor(((rank + 1) * all.length) / size));
      if (seqs.length === 0) continue;
      const packed = packSequences(seqs.map((s) => s.tokens));
      const weights = new Float32Array(packed.tokens.length);
      let at = 0;
      for (const s of seqs) {
        if (s.weights.length !== s.tokens.length) throw new InputError(`a training sequence has ${s.tokens.length} tokens but ${s.weights.length} weights`);
        for (const w of s.weights) weights[at++] = w / norm;
      }
      // Sequences with a loss on their hidden states: their states first (a forward pass over them
      // alone), then each one's gradient joins the backward pass at its rows.
      let hiddenGrad: Float32Array | undefined;
      const withHidden = seqs.flatMap((s, i) => (s.hidden ? [i] : []));
      if (withHidden.length) {
        const C = this.model.info.hiddenSize;
        const own = packSequences(withHidden.map((i) => seqs[i].tokens));
        const states = await nat.hiddenStates(own);
        hiddenGrad = new Float32Array(packed.tokens.length * C);
        withHidden.forEach((i, j) => {
          const h = seqs[i].hidden!(states.subarray(own.offsets[j] * C, own.offsets[j + 1] * C));
          const from = packed.offsets[i] * C, n = (packed.offsets[i + 1] - packed.offsets[i]) * C;
          if (h.grad.length !== n) throw new InputError(`a hidden-state loss returned ${h.grad.length} gradient entries for ${n} states`);
          for (let k = 0; k < n; k++) hiddenGrad![from + k] = h.grad[k] / norm;
          loss += h.loss / norm;
        });
      }
      const r = await nat.accumulate(packed, weights, o.seed * 1000003 + step * 131 + micro, false, hiddenGrad);
      loss += r.loss;
      tokens += packed.tokens.length;
    }
    if (norm === 0) {
      nat.zeroGrad();
      return { loss, lr, gradNorm: 0, skipped: true, weightedTokens, tokens };
    }
    if (size > 1) {
      await this.world.allreduceGrads(nat);
      [loss, tokens] = this.world.allreduceSum([loss, tokens]);
    }
    await options.beforeOptimizer?.(this.#gradients());
    const r = await nat.optimizerStep({ lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: o.weightDecay, maxGradNorm: o.maxGradNorm });
    return { loss, lr, gradNorm: r.gradNorm, skipped: r.skipped || !Number.isFinite(loss), weightedTokens, tokens };
  }

  #state(totalSteps: number, dataSize: number): TrainerState {
    return {
      version: 1,
      step: this.#step,
      totalSteps,
      seed: this.options.seed,
      mode: this.options.mode,
      lora: this.lora,
      dataSize,
      losses: [...this.#losses],
    };
  }
}
