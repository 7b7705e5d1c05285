/**
 * The settings of a replay strategy and of its loss term: the `strategy` section of a run config
 * (src/pipeline/run-config.ts validates it), with the defaults a run takes.
 */

export const MASK_SCHEMES = ['fixed', 'pool', 'counterfactual'] as const;
export type MaskScheme = (typeof MASK_SCHEMES)[number];

export const STRATEGY_NAMES = ['none', 'random', 'multitask', 'kpig', 'inscl', 'ewc', 'lwf', 'seqlora', 'olora', 'reglora', 'gere', 'adaptinf'] as const;

/** Strategies that train a new LoRA adapter per task (they need `train.mode: lora`). */
export const ADAPTER_STRATEGIES: readonly StrategyName[] = ['seqlora', 'olora', 'reglora'];
export type StrategyName = (typeof STRATEGY_NAMES)[number];

export interface StrategyConfig {
  name: StrategyName;
  /** Replay instances per finished task: the stage-t budget is m·(t−1) (random, kpig, inscl). */
  m: number;
  /** KPIG: softmax temperature of the allocation; null = std of the task IGs. */
  tau: number | null;
  /** KPIG objective weight λ and hinge margin γ. */
  lambda: number;
  gamma: number;
  /** Which IG ranks tasks and instances (KPIG). */
  ig: 'ce' | 'kl' | 'js';
  /** KPIG: IG per response token (`token`, DESIGN.md's reading) or summed over the response (`sequence`) for allocation and selection. */
  igLevel: 'token' | 'sequence';
  /** KPIG: within a task, the lowest-IG items overall (`lowest`) or per gold class with quotas by class share (`stratified`). */
  selection: 'lowest' | 'stratified';
  /**
   * KPIG: how the key parts are hidden for the replay signal and for the objective: one fixed
   * `[MASK]` (`fixed`), a placeholder drawn per item from a seeded pool (`pool`), or other valid
   * values of the same key part (`counterfactual`).
   */
  replayMask: MaskScheme;
  objectiveMask: MaskScheme;
  /** KPIG: the allocation temperature is at least this (nats, on the `igLevel` scale). */
  tauFloor: number;
  /** KPIG: every previous task keeps at least this fraction of an equal share of the budget (0–1). */
  minShare: number;
  /** Train on the instruction rewrites of the task set too (every strategy alike). */
  diversity: boolean;
  /** KPIG ablations. */
  igReplay: boolean;
  igObjective: boolean;
  /** Buffer instances per previous task that are scored / embedded (0 = all train instances). */
  bufferSize: number;
  /** EWC: penalty weight and the instances whose squared gradients estimate the Fisher diagonal. */
  ewcLambda: number;
  fisherSamples: number;
  /** LwF: weight of the old model's own answers on the new task's prompts. */
  lwfLambda: number;
  /** InsCL: where instruction tags come from (`llm`: the OpenAI-compatible endpoint of KPIG_LLM_* env). */
  tagger: 'offline' | 'llm';
  /** O-LoRA: weight λ₁ of the orthogonality penalty Σⱼ‖Aⱼ·Aₜᵀ‖² and λ₂ of the L2 term ‖Aₜ‖ + ‖Bₜ‖ on the new adapter. */
  oloraLambda1: number;
  oloraLambda2: number;
  /** RegLoRA: share of each matrix's entries of ΔW = B·A recorded per task (the largest |ΔW|), and the penalty weight λ. */
  regloraShare: number;
  regloraLambda: number;
  /** GeRe: the general samples (a JSONL/Arrow/Parquet file of instruction, input, output rows), how many to replay, and the weight of the activation constraint. */
  generalData: string | null;
  generalSamples: number;
  gereWeight: number;
  /** Adapt-∞: pseudo-task clusters, score-histogram bins, and the pool kept after pruning as a multiple of the stage's replay budget (0: no pruning). */
  adaptClusters: number;
  adaptBins: number;
  adaptPoolFactor: number;
}

/** What a strategy takes for every field its config leaves out. */
export const DEFAULT_STRATEGY: Omit<StrategyConfig, 'name'> = {
  m: 200,
  tau: null,
  lambda: 0.1,
  gamma: 0.5,
  ig: 'ce',
  igLevel: 'sequence',
  selection: 'stratified',
  replayMask: 'counterfactual',
  objectiveMask: 'counterfactual',
  tauFloor: 0.5,
  minShare: 0.5,
  diversity: true,
  igReplay: true,
  igObjective: true,
  bufferSize: 0,
  ewcLambda: 1000,
  fisherSamples: 32,
  lwfLambda: 0.5,
  tagger: 'offline',
  oloraLambda1: 0.5,
  oloraLambda2: 0,
  regloraShare: 0.02,
  regloraLambda: 2500,
  generalData: null,
  generalSamples: 1000,
  gereWeight: 100,
  adaptClusters: 10,
  adaptBins: 50,
  adaptPoolFactor: 4,
};

