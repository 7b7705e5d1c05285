/**
 * Replay strategies behind one small interface: at the start of stage t a strategy looks at the
 * tasks trained so far and returns the replay set (`plan`), and may add a loss term to training
 * (the KPIG objective, EWC, LwF: loss-terms.ts). The run engine supplies scoring, embedding and generation
 * through the context, so a strategy is plain data logic and a user can add their own.
 */
import type { InstanceRecord, InstructionRecord, TaskSet } from '../data/taskset.js';
import { InputError } from '../errors/index.js';
import { deriveSeed, mulberry32, sampleWithoutReplacement } from '../random/rng.js';
import type { StrategyConfig } from './config.js';
import { insclAllocation, kpigAllocation, lowestIndices, stratifiedLowest } from './allocate.js';
import { insInfo, offlineTags } from './insinfo.js';
import { coverageSelect, equalShares, histogramEntropy, kMeans, pruneRedundant } from './adaptinf.js';
import { ewcPenalty, generalReplay, kpigObjective, lwfDistillation, oLoraPenalty, regLoraPenalty, type LossTerm } from './loss-terms.js';
import { cosineCost, emd } from './ot.js';

/** One training example of a stage: an instance of a task, asked with one of its instructions. */
export interface PlanItem {
  task_id: string;
  instance_id: string;
  instruction_id: string;
  /**
   * `current`: the stage's task; `replay`: an earlier task; `lwf`: the old model's own answer;
   * `general`: a general sample (GeRe), outside the task set (`instance_id` is its row number).
   */
  role: 'current' | 'replay' | 'lwf' | 'general';
  /** The target, when it is not the instance's first output (LwF's old-model answers). */
  target?: string;
}

/** Per previous task: what the strategy measured and how many replay slots it gave. */
export interface TaskAllocation {
  task_id: string;
  count: number;
  /** KPIG: the task IG; InsCL: the Wasserstein distance to the current task. */
  score: number | null;
}

/** Scores of one buffer item (KPIG), kept in the run directory as `ig.arrow`. */
export interface ItemScore {
  task_id: string;
  instance_id: string;
  instruction_id: string;
  ig_ce: number;
  ig_kl: number;
  ig_js: number;
  ce_full: number;
  ce_masked: number;
  /** Response tokens the means are over. */
  n_tokens: number;
  /** The instruction as the masked pass read it (placeholder or counterfactual values). */
  masked_instruction: string;
}

export interface ReplayPlan {
  replay: PlanItem[];
  allocation: TaskAllocation[];
  scores?: ItemScore[];
  /** The softmax temperature KPIG used, for the record. */
  tau?: number;
  /** What the strategy keeps for later stages (`stage-NN/strategy-state.json`; Adapt-∞: the pruned pool items). */
  state?: Record<string, unknown>;
}

/** What the engine gives a strategy at the start of a stage. */
export interface StrategyContext {
  /** 1-based stage number; stage t trains `task`. */
  stage: number;
  task: string;
  /** Tasks trained in stages 1..t−1, in order. */
  previous: readonly string[];
  set: TaskSet;
  config: StrategyConfig;
  seed: number;
  /** Train instances of a task that may be replayed (capped at `config.bufferSize`). */
  buffer(task: string): InstanceRecord[];
  /** The instruction an instance is asked with (seed or a diversity variant). */
  instructionFor(task: string, instanceId: string): InstructionRecord;
  /** All instructions of a task that training uses, with the share of instances using each. */
  instructionShares(task: string): Array<{ instruction: InstructionRecord; share: number }>;
  /** IG of items under the current model. */
  scoreItems(items: PlanItem[]): Promise<ItemScore[]>;
  /** Mean-pooled embeddings of instruction texts under the current model. */
  embed(texts: string[]): Promise<Float32Array[]>;
  /** InsCL tags of an instruction (offline by default; an LLM annotator when configured). */
  tags?(instruction: InstructionRecord): Promise<string[]>;
  /** Mean-pooled final hidden states of items' training sequences (prompt and response) under the current model. */
  embedItems?(items: PlanItem[]): Promise<Float32Array[]>;
  /** The `state` the previous stage's plan kept; null at stage 1 or when it kept none. */
  previousState?(): Promise<Record<string, unknown> | null>;
}

export interface Strategy {
  readonly name: string;
  plan(ctx: StrategyContext): Promise<ReplayPlan>;
  /**
   * What the strategy adds to training (loss-terms.ts): KPIG's IG hinge, EWC's penalty, LwF's
   * distillation, or a user's own term. One object per run: a term may keep state between stages.
   */
  readonly lossTerm?: LossTerm;
  /** Multitask: every seen task's data is trained again at each stage. */
  readonly joint?: boolean;
}

function itemsOf(ctx: StrategyContext, task: string, instances: InstanceRecord[]): PlanItem[] {
  return instances.map((x) => ({ task_id: task, instance_id: x.instance_id, instruction_id: ctx.instructionFor(task, x.instance_id).instruction_id, role: 'replay' }));
}

/** `m` instances per previous task, uniformly without replacement (seeded per stage and task). */
export async function randomPlan(ctx: StrategyContext, perTask = ctx.config.m): Promise<ReplayPlan> {
  const replay: PlanItem[] = [];
  const allocation: TaskAllocation[] = [];
  for (const task of ctx.previous) {
    const picked = sampleWithoutReplacement(ctx.buffer(task), perTask, mulberry32(deriveSeed(ctx.seed, 'random-replay', ctx.stage, task)));
    replay.push(...itemsOf(ctx, task, picked));
    allocation.push({ task_id: task, count: picked.length, score: null });
  }
  return { replay, allocation };
}

/** An item's IG on the configured divergence and scale: per response token, or summed over the response. */
export function igOf(s: ItemScore, config: Pick<StrategyConfig, 'ig' | 'igLevel'>): number {
  const perToken = config.ig === 'ce' ? s.ig_ce : config.ig === 'kl' ? s.ig_kl : s.ig_js;
  return config.igLevel === 'sequence' ? perToken * s.n_tokens : perToken;
}

/**
 * The gold class of an instance for stratified selection: the position of its answer in its
 * instruction's label set (so per-instance label words of one meaning form one class), else the
 * answer text itself.
 */
export function goldClass(instance: InstanceRecord, instruction: InstructionRecord, task: TaskSet['tasks'][number] | undefined): string {
  const labels = instruction.label_set ?? task?.label_set ?? null;
  const answer = instance.outputs[0] ?? '';
  const at = labels ? labels.indexOf(answer) : -1;
  return at >= 0 ? `label:${at}` : `answer:${answer}`;
}

/**
 * KPIG replay (DESIGN.md §1): score every buffer item of every previous task with the current
 * model; task IG = mean item IG (`igLevel`: per token or per response); budget m·(t−1) split by
 * `n_k ∝ exp(−IG_k/τ)` with τ ≥ `tauFloor` and every task at least `minShare` of an equal share;
 * within task k the `n_k` items with the lowest IG, overall or per gold class (`selection`).
 */
export async function kpigPlan(ctx: StrategyContext): Promise<ReplayPlan> {
  if (ctx.previous.length === 0) return { replay: [], allocation: [] };
  const buffers = ctx.previous.map((task) => itemsOf(ctx, task, ctx.buffer(task)));
  const scores = await ctx.scoreItems(buffers.flat());
  const perTask: ItemScore[][] = [];
  let at = 0;
  for (const b of buffers) {
    perTask.push(scores.slice(at, at + b.length));
    at += b.length;
  }
  const taskIg = perTask.map((s) => (s.length ? s.reduce((a, x) => a + igOf(x, ctx.config), 0) / s.length : 0));
  const budget = ctx.config.m * ctx.previous.length;
  const { counts, tau } = kpigAllocation(taskIg, budget, {
    tau: ctx.config.tau ?? undefined,
    tauFloor: ctx.config.tauFloor,
    minShare: ctx.config.minShare / ctx.previous.length,
    caps: buffers.map((b) => b.length),
  });
  const replay: PlanItem[] = [];
  const taskById = new Map(ctx.set.tasks.map((t) => [t.task_id, t]));
  ctx.previous.forEach((task, k) => {
    const igs = perTask[k].map((s) => igOf(s, ctx.config));
    let picked: number[];
    if (ctx.config.selection === 'stratified') {
      const instances = ctx.buffer(task);
      const classes = instances.map((x, i) => goldClass(x, ctx.instructionFor(task, x.instance_id), taskById.get(task)));
      picked = stratifiedLowest(igs, classes, counts[k]);
    } else picked = lowestIndices(igs, counts[k]);
    for (const i of picked) replay.push(buffers[k][i]);
  });
  return {
    replay,
    allocation: ctx.previous.map((task, k) => ({ task_id: task, count: counts[k], score: taskIg[k] })),
    scores,
    tau,
  };
}

/**
 * InsCL replay: W_j = exact Wasserstein distance (cost 1 − cos of instruction embeddings,
 * instance-share weights) between the current task's instructions and task j's; α = m·(t−1) slots
 * split as α_j = W_j/ΣW·α; within task j each slot picks an instruction with probability ∝ InsInfo
 * (offline tags over the pool of previous instructions) and an instance uniformly without replacement.
 */
export async function insclPlan(ctx: StrategyContext): Promise<ReplayPlan> {
  if (ctx.previous.length === 0) return { replay: [], allocation: [] };
  const sharesOf = (task: string) => ctx.instructionShares(task);
  const cur = sharesOf(ctx.task);
  const curEmb = await ctx.embed(cur.map((c) => c.instruction.text));
  const distances: number[] = [];
  const prevShares = ctx.previous.map(sharesOf);
  for (const shares of prevShares) {
    const emb = await ctx.embed(shares.map((s) => s.instruction.text));
    distances.push(emd(cur.map((c) => c.share), shares.map((s) => s.share), cosineCost(curEmb, emb)));
  }
  const buffers = ctx.previous.map((task) => ctx.buffer(task));
  const alpha = ctx.config.m * ctx.previous.length;
  const counts = insclAllocation(distances, alpha, buffers.map((b) => b.length));
  const pool = prevShares.flat().map((s) => s.instruction);
  const tags: string[][] = [];
  for (const ins of pool) tags.push(ctx.tags ? await ctx.tags(ins) : offlineTags(ins.text, ins.key_spans));
  const info = insInfo(tags);
  const infoOf = new Map(pool.map((ins, i) => [ins.instruction_id, info[i]]));
  const replay: PlanItem[] = [];
  ctx.previous.forEach((task, k) => {
    const rnd = mulberry32(deriveSeed(ctx.seed, 'inscl-replay', ctx.stage, task));
    const instances = sampleWithoutReplacement(buffers[k], counts[k], rnd);
    const ins = prevShares[k].map((s) => s.instruction);
    const w = ins.map((x) => infoOf.get(x.instruction_id) ?? 0);
    const total = w.reduce((a, b) => a + b, 0);
    for (const x of instances) {
      let pick = 0;
      if (total > 0) {
        let r = rnd() * total;
        while (pick < w.length - 1 && r >= w[pick]) r -= w[pick++];
      } else pick = Math.floor(rnd() * ins.length);
      replay.push({ task_id: task, instance_id: x.instance_id, instruction_id: ins[pick].instruction_id, role: 'replay' });
    }
  });
  return { replay, allocation: ctx.previous.map((task, k) => ({ task_id: task, count: counts[k], score: distances[k] })) };
}

/** The scoring functions Adapt-∞ chooses from per cluster: log-perplexity of the response, and IG (the text analogue of its image-grounding score). */
export const ADAPT_SCORES = { perplexity: (s: ItemScore) => s.ce_full, ig: (s: ItemScore) => s.ig_ce } as const;

/**
 * Adapt-∞-style selection (docs/continual.md): the pool is every buffer item of the earlier tasks
 * not pruned at an earlier stage; features are the current model's mean hidden states of each
 * item's training sequence; k-means makes `adaptClusters` pseudo-tasks; per cluster the score
 * (log-perplexity or IG) with the most entropic histogram is used; the budget m·(t−1) is split
 * equally over the clusters and CCS picks inside each; then the pool is pruned to
 * `adaptPoolFactor`·budget items, dropping the most redundant ones per cluster, for good.
 */
export async function adaptInfPlan(ctx: StrategyContext): Promise<ReplayPlan> {
  if (ctx.previous.length === 0) return { replay: [], allocation: [] };
  if (!ctx.embedItems) throw new InputError('adaptinf needs item embeddings from the run (StrategyContext.embedItems)');
  const keyOf = (x: PlanItem) => `${x.task_id}\u0000${x.instance_id}`;
  const before = ctx.previousState ? await ctx.previousState() : null;
  const pruned = new Set(Array.isArray(before?.pruned) ? (before.pruned as string[]) : []);
  const pool = ctx.previous.flatMap((task) => itemsOf(ctx, task, ctx.buffer(task))).filter((x) => !pruned.has(keyOf(x)));
  const features = await ctx.embedItems(pool);
  const clusters = kMeans(features, ctx.config.adaptClusters, deriveSeed(ctx.seed, 'adaptinf-kmeans', ctx.stage));
  const scores = await ctx.scoreItems(pool);
  const k = clusters.reduce((a, c) => Math.max(a, c + 1), 0);
  const members: number[][] = Array.from({ length: k }, () => []);
  clusters.forEach((c, i) => members[c].push(i));
  const budget = ctx.config.m * ctx.previous.length;
  const quota = equalShares(members.map((m) => m.length), budget);
  const picked: number[] = [];
  const clusterRecord = members.map((m, c) => {
    const options = Object.entries(ADAPT_SCORES).map(([name, f]) => ({ name, values: m.map((i) => f(scores[i])) }));
    const entropies = options.map((o) => histogramEntropy(o.values, ctx.config.adaptBins));
    const best = entropies.indexOf(Math.max(...entropies));
    const chosen = coverageSelect(options[best].values, quota[c], ctx.config.adaptBins, mulberry32(deriveSeed(ctx.seed, 'adaptinf-ccs', ctx.stage, c)));
    picked.push(...chosen.map((j) => m[j]));
    return { size: m.length, score: options[best].name, entropy: entropies[best], selected: chosen.length };
  });
  picked.sort((a, b) => a - b);
  const replay = picked.map((i) => pool[i]);
  const cap = ctx.config.adaptPoolFactor * budget;
  const keep = cap > 0 ? pruneRedundant(features, clusters, cap) : pool.map(() => true);
  const nowPruned = [...pruned, ...pool.filter((_, i) => !keep[i]).map(keyOf)];
  return {
    replay,
    allocation: ctx.previous.map((task) => ({ task_id: task, count: replay.filter((x) => x.task_id === task).length, score: null })),
    scores,
    state: { pruned: nowPruned, pool: pool.length, kept: keep.filter(Boolean).length, clusters: clusterRecord },
  };
}

const noReplay = async (ctx: StrategyContext): Promise<ReplayPlan> => ({ replay: [], allocation: ctx.previous.map((t) => ({ task_id: t, count: 0, score: null })) });

/**
 * The built-in strategy a config names (`none`, `random`, `multitask`, `kpig`, `inscl`, `ewc`,
 * `lwf`, `seqlora`, `olora`, `reglora`, `gere`, `adaptinf`), with KPIG's ablation switches applied.
 *
 * @example
 * const s = builtinStrategy({ ...config.strategy, name: 'kpig' });
 */
export function builtinStrategy(config: StrategyConfig): Strategy {
  switch (config.name) {
    case 'none':
      return { name: 'none', plan: noReplay };
    case 'random':
      return { name: 'random', plan: (ctx) => randomPlan(ctx) };
    case 'multitask':
      return { name: 'multitask', plan: noReplay, joint: true };
    case 'kpig':
      return {
        name: 'kpig',
        plan: (ctx) => (config.igReplay ? kpigPlan(ctx) : randomPlan(ctx)),
        lossTerm: config.igObjective ? kpigObjective() : undefined,
      };
    case 'inscl':
      return { name: 'inscl', plan: insclPlan };
    case 'ewc':
      return { name: 'ewc', plan: noReplay, lossTerm: ewcPenalty() };
    case 'lwf':
      return { name: 'lwf', plan: noReplay, lossTerm: lwfDistillation() };
    case 'seqlora':
      return { name: 'seqlora', plan: noReplay, lossTerm: oLoraPenalty({ lambda1: 0, lambda2: 0 }) };
    case 'olora':
      return { name: 'olora', plan: noReplay, lossTerm: oLoraPenalty() };
    case 'reglora':
      return { name: 'reglora', plan: noReplay, lossTerm: regLoraPenalty() };
    case 'gere':
      return { name: 'gere', plan: noReplay, lossTerm: generalReplay() };
    case 'adaptinf':
      return { name: 'adaptinf', plan: adaptInfPlan };
    default:
      throw new InputError(`unknown strategy '${(config as { name: string }).name}'`);
  }
}
