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
import type { TrainingSequence } from '../data/instructions.js';
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

/** What a loss term gets when a stage starts (fresh or resumed). */
export interface StageStartContext {
  stage: number;
  config: StrategyConfig;
  /** Tensors a file of the previous stage's folder holds (written by `endStage`); null at stage 1. */
  previous(file: string): Promise<Map<string, Float32Array> | null>;
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
