/**
 * Loss terms a strategy contributes to training, through hooks the stage loop calls: the
 * sequences of each step (KPIG's IG hinge adds a masked pass), a gradient added before each
 * optimizer step (EWC's penalty), items made with the plan (LwF's old-model answers), and state
 * kept from one stage to the next (EWC's Fisher). The run supplies scoring, generation, gradients
 * and files through the contexts, so a user strategy adds a term without editing the stage loop:
 *
 *   const strategy: Strategy = { name: 'mine', plan: randomPlan, lossTerm: { name: 'l2', beforeOptimizer: (g) => … } };
 *
 * Formulas: docs/continual.md.
 */
import { readInstructions, type InstructionExample, type TrainingSequence } from '../data/instructions.js';
import { InputError, KpigIOError } from '../errors/index.js';
import { deriveSeed } from '../random/rng.js';
import { adapterProduct, largestEntries, normPenalty, orthogonalityPenalty, recordedEntryPenalty } from './adapters.js';
import { activationClasses, activationStats, marginLoss, type ActivationStats } from './gere.js';
import type { InstructionRecord } from '../data/taskset.js';
import type { Gradients } from '../train/trainer.js';
import type { MaskScheme, StrategyConfig } from './config.js';
import type { ItemScore, PlanItem } from './strategy.js';

/** What a loss term gets at each training step. */
export interface StepContext {
  stage: number;
  task: string;
  /** 0-based step in the stage. */
  step: number;
  config: StrategyConfig;
  /**
   * IG of items under the current weights, each instruction's key parts hidden by `scheme` (the
   * draws are functions of the seed, the stage and the step). Every rank of an MPI job gets every score.
   */
  scoreItems(items: PlanItem[], scheme: MaskScheme): Promise<ItemScore[]>;
  /** The instruction an item is trained with. */
  instruction(item: PlanItem): InstructionRecord;
  /**
   * The item's training sequence, weighted so that it adds its mean token cross-entropy × `scale`
   * to the step's loss; `instructionText` in place of its instruction (a masked one). Null when
   * it does not fit the length limit.
   */
  sequence(item: PlanItem, scale: number, instructionText?: string): TrainingSequence | null;
  /** The training sequence of an example outside the task set (GeRe's general samples), as `sequence` weighs one. */
  example(example: InstructionExample, scale: number): TrainingSequence | null;
}

/** The sequences of one step, and what the step log records of the term. */
export interface StepTerms {
  sequences: TrainingSequence[];
  /** Mean IG of the step's scored items (KPIG), for the log; null when none was scored. */
  ig: number | null;
}

/** What a loss term gets while the stage's plan is made. */
export interface PlanContext {
  stage: number;
  task: string;
  config: StrategyConfig;
  /** The stage's items of its own task. */
  current: PlanItem[];
  /** The current model's greedy answers to items' prompts (one line each; shared out over MPI ranks). */
  answers(items: PlanItem[]): Promise<string[]>;
}

/** The plan items of general samples: role `general`, the row number as instance id. */
export function generalItems(count: number): PlanItem[] {
  return Array.from({ length: count }, (_, i) => ({ task_id: GENERAL_TASK, instance_id: String(i), instruction_id: GENERAL_TASK, role: 'general' as const }));
}

/** The task id general samples carry in a plan (no task of a task set may be named so). */
export const GENERAL_TASK = '(general)';

/**
 * The LoRA adapters of a run that trains them (`train.mode: lora`), for strategies that train a new
 * adapter per task. A is (rank × in), B is (out × rank); the update is scale·B·A.
 */
export interface AdapterAccess {
  modules: ReadonlyArray<{ path: string; a: string; b: string; rank: number; in: number; out: number; scale: number }>;
  read(name: string): Float32Array;
  write(name: string, data: Float32Array): void;
  /** Folds the adapters into the base weights and starts fresh ones (A drawn from `seed`, B = 0). */
  restart(seed: number): void;
}

/**
 * What a loss term gets when a stage starts (fresh or resumed), before the stage's weights and
 * optimizer state are restored from an in-stage checkpoint: the model is as the previous stage
 * left it (the base model at stage 1).
 */
export interface StageStartContext {
  stage: number;
  config: StrategyConfig;
  /** The run's seed. */
  seed: number;
  /** Tensors a file of the previous stage's folder holds (written by `endStage`); null at stage 1. */
  previous(file: string): Promise<Map<string, Float32Array> | null>;
  /** Tensors a file (a path inside the stage folder) of an earlier stage holds; null when absent. `final/adapter_model.safetensors` is the adapter that stage trained. */
  earlier(stage: number, file: string): Promise<Map<string, Float32Array> | null>;
  /** The adapters, when the run trains LoRA; null in full fine-tuning. */
  adapters: AdapterAccess | null;
  /** The current model's final-normed hidden states over each example's training sequence (tokens × hidden); null for one that does not fit. */
  hiddenStates(examples: InstructionExample[]): Promise<Array<Float32Array | null>>;
  /** The model's hidden size. */
  hiddenSize: number;
}

/** What a loss term gets when a stage has trained (before its evaluation). */
export interface StageEndContext {
  stage: number;
  task: string;
  config: StrategyConfig;
  /** The stage's training instances of its task, as items with their instructions. */
  taskItems: PlanItem[];
  /**
   * Σ over `items` of the squared gradient of each one's mean token cross-entropy, per trainable
   * tensor (one backward pass per item; over MPI each rank takes a share and the sums are added).
   */
  squaredGradients(items: PlanItem[]): Promise<Map<string, Float64Array>>;
  /** The trainable tensors' weights now. */
  parameters(): Map<string, Float32Array>;
  /** The shape of a trainable tensor. */
  shapeOf(name: string): number[];
  /** Writes tensors into the stage's folder, atomically (rank 0 of an MPI job). */
  save(file: string, tensors: Map<string, { shape: number[]; data: Float32Array }>): Promise<void>;
  /** The adapters, when the run trains LoRA; null in full fine-tuning. */
  adapters: AdapterAccess | null;
}

/** A strategy's loss term: every hook is optional. */
export interface LossTerm {
  readonly name: string;
  /** Items trained besides the plan's, made with the plan (not at stage 1 unless the term says so). */
  planItems?(ctx: PlanContext): Promise<PlanItem[]>;
  startStage?(ctx: StageStartContext): Promise<void>;
  /** The sequences one step trains on for its items (default: each item's cross-entropy). */
  stepSequences?(items: PlanItem[], ctx: StepContext): Promise<StepTerms>;
  /** Adds to the summed gradients before every optimizer step. */
  beforeOptimizer?(gradients: Gradients): void | Promise<void>;
  endStage?(ctx: StageEndContext): Promise<void>;
}

/** Every item's cross-entropy sequence at weight 1: the plain objective. */
export function plainSequences(items: PlanItem[], ctx: StepContext): StepTerms {
  const sequences: TrainingSequence[] = [];
  for (const it of items) {
    const seq = ctx.sequence(it, 1);
    if (seq) sequences.push(seq);
  }
  return { sequences, ig: null };
}

/**
 * KPIG's objective (DESIGN.md §2): for an item whose instruction has key parts, its IG under the
 * current weights with the key parts hidden (`objectiveMask`); where IG < γ the item trains on
 * L = CE_full + λ·(γ − (CE_masked − CE_full)) = (1 + λ)·CE_full − λ·CE_masked + λγ, on the very
 * masked instruction the IG was measured with; otherwise on CE_full.
 */
export function kpigObjective(): LossTerm {
  return {
    name: 'kpig',
    async stepSequences(items, ctx) {
      const { lambda, gamma } = ctx.config;
      const scored = items.filter((x) => x.role !== 'lwf' && ctx.instruction(x).key_spans.length > 0);
      const igs = scored.length ? await ctx.scoreItems(scored, ctx.config.objectiveMask) : [];
      const scoreOf = new Map(scored.map((x, i) => [x, igs[i]]));
      const sequences: TrainingSequence[] = [];
      let sum = 0;
      for (const it of items) {
        const s = scoreOf.get(it);
        if (s !== undefined) sum += s.ig_ce;
        if (s !== undefined && s.ig_ce < gamma) {
          const full = ctx.sequence(it, 1 + lambda);
          const masked = ctx.sequence(it, -lambda, s.masked_instruction);
          if (full) sequences.push(full);
          if (full && masked) sequences.push(masked);
        } else {
          const seq = ctx.sequence(it, 1);
          if (seq) sequences.push(seq);
        }
      }
      return { sequences, ig: scored.length ? sum / scored.length : null };
    },
  };
}

/**
 * EWC (online): after each stage the diagonal empirical Fisher F = E[g²] over `fisherSamples`
 * instances of the task just learned is added to the earlier tasks', and the weights θ* are kept
 * (`ewc.safetensors` in the stage folder: fisher/<name>, anchor/<name>). Every later step adds
 * λ·F⊙(θ − θ*) to the gradients.
 */
export function ewcPenalty(): LossTerm {
  let fisher: Map<string, Float32Array> | null = null;
  let anchor: Map<string, Float32Array> | null = null;
  let lambda = 0;
  const FILE = 'ewc.safetensors';
  return {
    name: 'ewc',
    async startStage(ctx) {
      lambda = ctx.config.ewcLambda;
      const kept = await ctx.previous(FILE);
      fisher = anchor = null;
      if (!kept) return;
      fisher = new Map();
      anchor = new Map();
      for (const [name, t] of kept) {
        if (name.startsWith('fisher/')) fisher.set(name.slice(7), t);
        else if (name.startsWith('anchor/')) anchor.set(name.slice(7), t);
      }
    },
    beforeOptimizer(g) {
      if (!fisher || !anchor) return;
      for (const [name, f] of fisher) {
        const a = anchor.get(name)!;
        const p = g.param(name);
        const grad = g.read(name);
        for (let i = 0; i < grad.length; i++) grad[i] += lambda * f[i] * (p[i] - a[i]);
        g.write(name, grad);
      }
    },
    async endStage(ctx) {
      const items = ctx.taskItems.slice(0, ctx.config.fisherSamples);
      const sums = await ctx.squaredGradients(items);
      const out = new Map<string, { shape: number[]; data: Float32Array }>();
      for (const [name, sum] of sums) {
        const before = fisher?.get(name);
        const f = new Float32Array(sum.length);
        for (let i = 0; i < f.length; i++) f[i] = (before ? before[i] : 0) + sum[i] / items.length;
        out.set(`fisher/${name}`, { shape: ctx.shapeOf(name), data: f });
      }
      for (const [name, p] of ctx.parameters()) out.set(`anchor/${name}`, { shape: ctx.shapeOf(name), data: p });
      await ctx.save(FILE, out);
    },
  };
}

/**
 * LwF for a generative model (sequence-level distillation): from stage 2 on, the old model's own
 * greedy answers to the new task's prompts are trained alongside, at weight `lwfLambda`.
 */
export function lwfDistillation(): LossTerm {
  return {
    name: 'lwf',
    async planItems(ctx) {
      if (ctx.stage < 2) return [];
      const cur = ctx.current.filter((x) => x.task_id === ctx.task);
      const answers = await ctx.answers(cur);
      const out: PlanItem[] = [];
      cur.forEach((x, i) => {
        if (answers[i]) out.push({ ...x, role: 'lwf', target: answers[i] });
      });
      return out;
    },
    async stepSequences(items, ctx) {
      const sequences: TrainingSequence[] = [];
      for (const it of items) {
        const seq = ctx.sequence(it, it.role === 'lwf' ? ctx.config.lwfLambda : 1);
        if (seq) sequences.push(seq);
      }
      return { sequences, ig: null };
    },
  };
}

function adaptersOf(ctx: { adapters: AdapterAccess | null }, strategy: string): AdapterAccess {
  if (!ctx.adapters) throw new InputError(`strategy ${strategy} trains a new LoRA adapter per task: set train.mode: lora`);
  return ctx.adapters;
}

/**
 * A new adapter per task: at the start of stage t every adapter trained before it is in the base
 * weights (W = W₀ + Σ_{j<t} scale·Bⱼ·Aⱼ) and a fresh one trains. Each stage's adapter is its
 * `final/adapter_model.safetensors`; in a fresh process (a resume) the earlier ones are folded in
 * again from those files, in order, so the weights are those of an uninterrupted run.
 */
function adapterPerTask(): {
  start(ctx: StageStartContext, strategy: string): Promise<AdapterAccess>;
  /** The adapter stage j trained (read once per process). */
  trained(ctx: StageStartContext, j: number): Promise<Map<string, Float32Array>>;
} {
  let folded = 0; // tasks whose adapters are in the base weights in this process
  const read = new Map<number, Map<string, Float32Array>>();
  const trained = async (ctx: StageStartContext, j: number) => {
    let w = read.get(j);
    if (!w) {
      const got = await ctx.earlier(j, 'final/adapter_model.safetensors');
      if (!got) throw new KpigIOError(`stage ${j} kept no adapter (final/adapter_model.safetensors) to fold into the base weights`);
      read.set(j, (w = got));
    }
    return w;
  };
  return {
    trained,
    async start(ctx, strategy) {
      const ad = adaptersOf(ctx, strategy);
      for (let j = folded + 1; j < ctx.stage; j++) {
        const w = await trained(ctx, j);
        for (const m of ad.modules)
          for (const name of [m.a, m.b]) {
            const t = w.get(name);
            if (!t) throw new KpigIOError(`stage ${j}'s adapter has no tensor ${name}`);
            ad.write(name, t);
          }
        ad.restart(deriveSeed(ctx.seed, 'task-adapter', j + 1));
      }
      folded = Math.max(folded, ctx.stage - 1);
      return ad;
    },
  };
}

/**
 * O-LoRA (Wang et al., 2023): a new LoRA per task, earlier ones frozen (folded into the base
 * weights, which is their sum at inference), and before every update the gradient of
 * λ₁·Σ_modules Σ_{j<t} ‖Aⱼ·Aₜᵀ‖²_F + λ₂·Σ_modules (‖Aₜ‖ + ‖Bₜ‖). `fixed` overrides the config's
 * weights (SeqLoRA: both 0, a new adapter per task and nothing else).
 */
export function oLoraPenalty(fixed?: { lambda1: number; lambda2: number }): LossTerm {
  const adapters = adapterPerTask();
  let ad: AdapterAccess | null = null;
  let earlierA = new Map<string, Float32Array[]>();
  let l1 = 0, l2 = 0;
  return {
    name: fixed ? 'seqlora' : 'olora',
    async startStage(ctx) {
      ad = await adapters.start(ctx, fixed ? 'seqlora' : 'olora');
      l1 = fixed?.lambda1 ?? ctx.config.oloraLambda1;
      l2 = fixed?.lambda2 ?? ctx.config.oloraLambda2;
      earlierA = new Map(ad.modules.map((m) => [m.a, []]));
      for (let j = 1; j < ctx.stage; j++) {
        const w = await adapters.trained(ctx, j);
        for (const m of ad.modules) earlierA.get(m.a)!.push(w.get(m.a)!);
      }
    },
    beforeOptimizer(g) {
      if (!ad) return;
      for (const m of ad.modules) {
        const A = g.param(m.a);
        const gA = g.read(m.a);
        if (l1 > 0 && earlierA.get(m.a)!.length) {
          const o = orthogonalityPenalty(A, earlierA.get(m.a)!, m.rank, m.in);
          for (let i = 0; i < gA.length; i++) gA[i] += l1 * o.grad[i];
        }
        if (l2 > 0) {
          const n = normPenalty(A);
          for (let i = 0; i < gA.length; i++) gA[i] += l2 * n.grad[i];
          const B = g.param(m.b), gB = g.read(m.b), nb = normPenalty(B);
          for (let i = 0; i < gB.length; i++) gB[i] += l2 * nb.grad[i];
          g.write(m.b, gB);
        }
        g.write(m.a, gA);
      }
    },
  };
}

/**
 * RegLoRA (SEFE, Chen et al., 2025): a new LoRA per task, folded into the base weights after it;
 * at the end of each task the ⌊share·n⌋ largest |B·A| entries of each matrix are recorded
 * (`reglora.safetensors`: the flat indices per module), and later tasks add the gradient of
 * λ/M·Σ_modules mean_{recorded (i,k)} |(Bₜ·Aₜ)ᵢₖ| (M modules; every earlier task's indices, concatenated).
 */
export function regLoraPenalty(): LossTerm {
  const adapters = adapterPerTask();
  const FILE = 'reglora.safetensors';
  let ad: AdapterAccess | null = null;
  let recorded = new Map<string, Int32Array>();
  let lambda = 0;
  return {
    name: 'reglora',
    async startStage(ctx) {
      ad = await adapters.start(ctx, 'reglora');
      lambda = ctx.config.regloraLambda;
      const lists = new Map<string, number[]>(ad.modules.map((m) => [m.path, []]));
      for (let j = 1; j < ctx.stage; j++) {
        const w = await ctx.earlier(j, FILE);
        if (!w) throw new KpigIOError(`stage ${j} kept no RegLoRA record (${FILE})`);
        for (const m of ad.modules) for (const v of w.get(m.path) ?? []) lists.get(m.path)!.push(v);
      }
      recorded = new Map([...lists].map(([k, v]) => [k, Int32Array.from(v)]));
    },
    beforeOptimizer(g) {
      if (!ad || lambda === 0) return;
      const c = lambda / ad.modules.length;
      for (const m of ad.modules) {
        const idx = recorded.get(m.path)!;
        if (!idx.length) continue;
        const p = recordedEntryPenalty(g.param(m.b), g.param(m.a), m.out, m.rank, m.in, idx);
        const gA = g.read(m.a), gB = g.read(m.b);
        for (let i = 0; i < gA.length; i++) gA[i] += c * p.gradA[i];
        for (let i = 0; i < gB.length; i++) gB[i] += c * p.gradB[i];
        g.write(m.a, gA);
        g.write(m.b, gB);
      }
    },
    async endStage(ctx) {
      const a = adaptersOf(ctx, 'reglora');
      const out = new Map<string, { shape: number[]; data: Float32Array }>();
      for (const m of a.modules) {
        if (m.out * m.in > 2 ** 24) throw new InputError(`reglora: ${m.path} has more than 2^24 entries; its indices would not be exact in float32`);
        const idx = largestEntries(adapterProduct(a.read(m.b), a.read(m.a), m.out, m.rank, m.in), ctx.config.regloraShare);
        out.set(m.path, { shape: [idx.length], data: Float32Array.from(idx) });
      }
      await ctx.save(FILE, out);
    },
  };
}

/**
 * GeRe (Zhang et al., 2025): the first `generalSamples` rows of `generalData` are trained at every
 * stage next to the task data, each with its cross-entropy plus w·TM, the threshold-based margin
 * loss on its final-normed hidden states against the states the base model gave it (gere.ts). The
 * thresholds and states are computed at stage 1's start and kept in `stage-01/gere.safetensors`.
 */
export function generalReplay(): LossTerm {
  const FILE = 'gere.safetensors';
  let examples: InstructionExample[] | null = null;
  let stats: ActivationStats | null = null;
  let classes: Array<Int8Array | null> = [];
  let weight = 0;
  const load = async (config: StrategyConfig): Promise<InstructionExample[]> => {
    if (!examples) {
      if (!config.generalData) throw new InputError('gere: strategy.generalData names no file of general samples');
      const rows = await readInstructions(config.generalData);
      if (rows.length === 0) throw new InputError(`gere: ${config.generalData} holds no rows`);
      examples = rows.slice(0, config.generalSamples);
    }
    return examples;
  };
  return {
    name: 'gere',
    async planItems(ctx) {
      return generalItems((await load(ctx.config)).length);
    },
    async startStage(ctx) {
      const ex = await load(ctx.config);
      weight = ctx.config.gereWeight;
      const C = ctx.hiddenSize;
      if (ctx.stage === 1) {
        const states = await ctx.hiddenStates(ex);
        const present = states.filter((h): h is Float32Array => h !== null);
        if (!present.length) throw new InputError('gere: no general sample fits the length limit');
        stats = activationStats(present, C);
        classes = states.map((h) => (h ? activationClasses(h, stats!) : null));
        return;
      }
      const kept = await ctx.earlier(1, FILE);
      if (!kept) throw new KpigIOError(`stage 1 kept no GeRe reference (${FILE})`);
      stats = { mean: kept.get('mean')!, std: kept.get('std')! };
      const lengths = kept.get('lengths')!, all = kept.get('classes')!;
      let at = 0;
      classes = Array.from(lengths, (n) => {
        if (n < 0) return null;
        const c = Int8Array.from(all.subarray(at, at + n * C));
        at += n * C;
        return c;
      });
    },
    async stepSequences(items, ctx) {
      const sequences: TrainingSequence[] = [];
      for (const it of items) {
        if (it.role !== 'general') {
          const seq = ctx.sequence(it, 1);
          if (seq) sequences.push(seq);
          continue;
        }
        const i = Number(it.instance_id);
        const seq = examples && classes[i] ? ctx.example(examples[i], 1) : null;
        if (!seq) continue;
        const ref = classes[i]!;
        seq.hidden = (h) => {
          const r = marginLoss(h, ref, stats!);
          for (let k = 0; k < r.grad.length; k++) r.grad[k] *= weight;
          return { loss: weight * r.loss, grad: r.grad };
        };
        sequences.push(seq);
      }
      return { sequences, ig: null };
    },
    async endStage(ctx) {
      if (ctx.stage !== 1 || !stats) return;
      const lengths = Float32Array.from(classes, (c) => (c ? c.length / stats!.mean.length : -1));
      const all = new Float32Array(classes.reduce((a, c) => a + (c?.length ?? 0), 0));
      let at = 0;
      for (const c of classes)
        if (c) {
          all.set(c, at);
          at += c.length;
        }
      await ctx.save(
        FILE,
        new Map([
          ['mean', { shape: [stats.mean.length], data: stats.mean }],
          ['std', { shape: [stats.std.length], data: stats.std }],
          ['lengths', { shape: [lengths.length], data: lengths }],
          ['classes', { shape: [all.length], data: all }],
        ]),
      );
    },
  };
}
