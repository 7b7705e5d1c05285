/**
 * The stage loop of a continual run. For each seen task t: plan the replay set with the strategy
 * (IG scoring, embeddings, old-model answers as needed), train on current + replay data with the
 * strategy's loss term, checkpoint, evaluate every seen and held-out task, and record it all in the
 * run directory. Every file is written atomically and every random draw is a function of the seed,
 * the stage and the step, so a killed run resumed from its last checkpoint ends with the same
 * numbers as an uninterrupted one.
 *
 * Run directory:
 *   config.json environment.json status.json results.json
 *   masking.json                           KPIG's masking schemes and the placeholder pool
 *   base/eval.arrow probe.arrow probe.json  the base model on every task; its listening probes
 *   stage-NN/plan.arrow ig.arrow           the stage's training items; KPIG's buffer scores
 *   stage-NN/train.jsonl                   one line per optimizer step
 *   stage-NN/checkpoint/                   latest in-stage checkpoint (removed when the stage ends)
 *   stage-NN/final/ ewc.safetensors        end-of-stage weights (+ AdamW state); EWC's Fisher
 *   stage-NN/eval.arrow probe.arrow probe.json  evaluation and listening probes after the stage
 *   stage-NN/done.json                     the stage's summary; written last
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { cp, mkdir, readFile, rm } from 'node:fs/promises';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Float64, Table, Utf8, tableToIPC, vectorFromArray } from 'apache-arrow';
import type { InstanceRecord, InstructionRecord, TaskSet } from '../data/taskset.js';
import { tokenizeExample, type InstructionExample, type TrainingSequence } from '../data/instructions.js';
import { promptTokens, resolvePromptTemplate, stopTokens, superniTemplate, templateFingerprint, type PromptTemplate } from '../template/index.js';
import { barrier, fromLead, gatherRows, gatherTexts, shareOf, SINGLE_PROCESS, type World } from '../dist/index.js';
import { CancelledError, InputError, KpigIOError } from '../errors/index.js';
import { readArrowTable } from '../io/arrow.js';
import { cleanTemps, writeFileAtomic, writeJsonAtomic } from '../io/atomic.js';
import { dataFingerprint, modelFingerprint } from '../io/fingerprint.js';
import { Model } from '../model/model.js';
import { readSafetensors, toFloat32, writeSafetensors } from '../model/safetensors.js';
import { deriveSeed, mulberry32, shuffled } from '../random/rng.js';
import { plainSequences, type AdapterAccess, type StageEndContext, type StepContext } from '../replay/loss-terms.js';
import { packSequences } from '../model/model.js';
import { trainingOf } from '../model/training.js';
import { builtinStrategy, type ItemScore, type PlanItem, type ReplayPlan, type Strategy, type StrategyContext } from '../replay/strategy.js';
import { ChatClient } from '../llm/client.js';
import { llmTags } from '../replay/insinfo.js';
import { counterfactualInstruction, keyValuePools, maskInstruction, pickPlaceholder, PLACEHOLDER_POOL } from '../scoring/mask.js';
import { scorePairs } from '../scoring/pairs.js';
import { saveCheckpoint, type TrainerState } from '../train/checkpoint.js';
import { learningRate } from '../train/schedule.js';
import { Trainer } from '../train/trainer.js';
import { checkRunInputs, resolveRunConfig, RunConfigError, type MaskScheme, type RunConfig } from './run-config.js';
import { evaluateProbes, evaluateStage, listening, readStageScores, type StageScores } from './stage-eval.js';
import { readTaskSet as loadTaskSet } from '../data/store.js';

export type RunEvent =
  | { type: 'start'; stages: number; resumedFrom: number | null }
  | { type: 'phase'; stage: number; phase: 'plan' | 'train' | 'eval'; detail?: string }
  | { type: 'step'; stage: number; task: string; step: number; totalSteps: number; loss: number; ig: number | null; tokensPerSecond: number; etaSeconds: number }
  | { type: 'eval-progress'; stage: number; done: number; total: number }
  | { type: 'stage'; stage: number; task: string; seconds: number; replay: number; trainItems: number; steps: number; meanLoss: number; seenRougeL: number; heldOutRougeL: number; heldOutVScore: number | null; heldOutListening: number | null; seenListening: number | null }
  | { type: 'skipped-long'; stage: number; task: string; count: number; limit: number }
  | { type: 'done'; runDir: string; seconds: number };

export interface RunOptions {
  /** Continue the run in `runDir` from its last completed step. */
  resume?: boolean;
  /** Start over in a non-empty run directory. */
  overwrite?: boolean;
  /** A strategy object instead of the config's built-in one (a user's own strategy). */
  strategy?: Strategy;
  signal?: AbortSignal;
  onEvent?: (e: RunEvent) => void;
  /** The task set itself, instead of reading the config's `data` folder (pipelines that hold it in memory). */
  taskSet?: TaskSet;
  /** Stop (as if killed) after this many optimizer steps in this process: for tests of resume. */
  stopAfterSteps?: number;
  /**
   * A run directory of the same base model, task set, tasks and evaluation settings whose base
   * evaluation (`base/`) is copied instead of computed again (the demo's strategies share one).
   */
  baseFrom?: string;
  /**
   * The ranks of an MPI job (`mpirun -np k kpig run`) to spread the run over (default: one
   * process). They share the evaluation, the IG scoring, the EWC statistics and every training
   * step (each rank takes its share of every batch; gradients are summed); rank 0 alone writes the
   * run directory and reports events. Every rank must call with the same config and options, and a
   * rank that fails must end the job (`exitJob`), since the others wait for it.
   */
  world?: World;
}

export interface RunResult {
  runDir: string;
  /** a[t][j]: ROUGE-L of task j (seen then held out) after stage t (t = 0: the base model). */
  matrix: number[][];
  tasks: string[];
  stages: StageScores[];
}

const pad = (t: number) => `stage-${String(t).padStart(2, '0')}`;

function packageVersion(): string {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
  return (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
}

/** The stream of a run: explicit, or a named stream of the task set; checked against the set. */
export function resolveStream(config: RunConfig, set: TaskSet): { seen: string[]; held_out: string[] } {
  let stream: { seen: string[]; held_out: string[] };
  if (typeof config.stream === 'string') {
    const named = config.stream === 'default' ? set.streams[0] : set.streams.find((s) => s.name === config.stream);
    if (!named)
      throw new RunConfigError('stream', `the task set has no stream '${config.stream}' (streams: ${set.streams.map((s) => s.name).join(', ') || 'none'})`);
    stream = { seen: [...named.seen], held_out: [...named.held_out] };
  } else stream = config.stream;
  const known = new Set(set.tasks.map((t) => t.task_id));
  for (const t of [...stream.seen, ...stream.held_out]) if (!known.has(t)) throw new RunConfigError('stream', `task '${t}' is not in the task set ${config.data}`);
  const both = stream.seen.filter((t) => stream.held_out.includes(t));
  if (both.length) throw new RunConfigError('stream', `task '${both[0]}' is both seen and held out`);
  const dup = stream.seen.find((t, i) => stream.seen.indexOf(t) !== i);
  if (dup) throw new RunConfigError('stream.seen', `task '${dup}' appears twice`);
  for (const t of stream.seen)
    if (!set.instances.some((x) => x.task_id === t && x.split === 'train')) throw new RunConfigError('stream.seen', `task '${t}' has no training instances`);
  for (const t of [...stream.seen, ...stream.held_out])
    if (!set.instructions.some((x) => x.task_id === t && x.origin === 'seed')) throw new RunConfigError('stream', `task '${t}' has no seed instruction`);
  return stream;
}

function planTable(items: PlanItem[]): Table {
  return new Table({
    task_id: vectorFromArray(items.map((x) => x.task_id), new Utf8()),
    instance_id: vectorFromArray(items.map((x) => x.instance_id), new Utf8()),
    instruction_id: vectorFromArray(items.map((x) => x.instruction_id), new Utf8()),
    role: vectorFromArray(items.map((x) => x.role), new Utf8()),
    target: vectorFromArray(items.map((x) => x.target ?? null), new Utf8()),
  });
}

async function readPlan(path: string): Promise<PlanItem[]> {
  const t = await readArrowTable(path);
  const col = (n: string) => t.getChild(n)!;
  return Array.from({ length: t.numRows }, (_, i) => {
    const item: PlanItem = { task_id: col('task_id').get(i), instance_id: col('instance_id').get(i), instruction_id: col('instruction_id').get(i), role: col('role').get(i) };
    const target = col('target').get(i);
    if (target !== null) item.target = target;
    return item;
  });
}

function scoresTable(scores: ItemScore[]): Table {
  const f = (get: (s: ItemScore) => number) => vectorFromArray(scores.map(get), new Float64());
  return new Table({
    task_id: vectorFromArray(scores.map((s) => s.task_id), new Utf8()),
    instance_id: vectorFromArray(scores.map((s) => s.instance_id), new Utf8()),
    instruction_id: vectorFromArray(scores.map((s) => s.instruction_id), new Utf8()),
    ig_ce: f((s) => s.ig_ce),
    ig_kl: f((s) => s.ig_kl),
    ig_js: f((s) => s.ig_js),
    ce_full: f((s) => s.ce_full),
    ce_masked: f((s) => s.ce_masked),
    n_tokens: f((s) => s.n_tokens),
    masked_instruction: vectorFromArray(scores.map((s) => s.masked_instruction), new Utf8()),
  });
}

/** Tokens kept free for a masked instruction longer than its full one. */
const LENGTH_MARGIN = 16;

/** The run record of the length policy: what was left out for being too long. */
async function writeLengthRecord(runDir: string, state: RunState, limit: number): Promise<void> {
  const skipped = Object.fromEntries([...state.tooLong].map(([task, ids]) => [task, { count: ids.length, instance_ids: ids.slice(0, 20) }]));
  await writeJsonAtomic(join(runDir, 'length.json'), {
    limit_tokens: limit,
    margin_tokens: LENGTH_MARGIN,
    policy: 'training instances longer than the limit with some instruction they may get are skipped; evaluation prompts keep their last tokens',
    skipped,
  });
}

/** A sequence whose weights give the per-sample mean token CE times `scale` (prompt weights 0). */
function sampleSequence(model: Model, template: PromptTemplate, instruction: string, input: string, output: string, maxLength: number, scale: number): TrainingSequence | null {
  const seq = tokenizeExample(model.tokenizer!, { instruction, input, output }, maxLength, template);
  if (!seq) return null;
  const n = seq.weights.reduce((a, w) => a + (w !== 0 ? 1 : 0), 0);
  return { tokens: seq.tokens, weights: seq.weights.map((w) => (w * scale) / n) };
}

class RunState {
  readonly instances = new Map<string, InstanceRecord>();
  readonly instructionsByTask = new Map<string, InstructionRecord[]>();
  readonly instructionById = new Map<string, InstructionRecord>();
  readonly #rewrites = new Map<string, InstructionRecord[]>();
  readonly #stageInstances = new Map<string, InstanceRecord[]>();
  /** Other values of a key part, for counterfactual masking. */
  readonly keyValues: (task: string, kind: string | undefined) => string[];

  /** Training instances left out of a task because they do not fit the length limit (the run's length policy). */
  readonly tooLong = new Map<string, string[]>();
  /**
   * True when an instance fits the length limit with the longest of the instructions it may be
   * trained or scored with; set by the run once the tokenizer is known (default: everything fits).
   */
  fits: (x: InstanceRecord, instructions: InstructionRecord[]) => boolean = () => true;
  /** The run's prompt template (config.template), set once the model is loaded. */
  template: PromptTemplate = superniTemplate();

  /** True on the rank that writes the run directory (the only one outside MPI). */
  get lead(): boolean {
    return this.world.rank === 0;
  }

  constructor(
    readonly config: RunConfig,
    readonly set: TaskSet,
    readonly useVariants: boolean,
    /** The ranks of the run; rank 0 writes the run directory. */
    readonly world: World = SINGLE_PROCESS,
  ) {
    for (const x of set.instances) this.instances.set(`${x.task_id}\u0000${x.instance_id}`, x);
    for (const ins of set.instructions) {
      this.instructionById.set(ins.instruction_id, ins);
      const list = this.instructionsByTask.get(ins.task_id) ?? [];
      list.push(ins);
      this.instructionsByTask.set(ins.task_id, list);
      if (ins.parent_id !== null) this.#rewrites.set(ins.parent_id, [...(this.#rewrites.get(ins.parent_id) ?? []), ins]);
    }
    // Key values come from the seed instructions: a rewrite's spans are the seed's values plus what it added.
    this.keyValues = keyValuePools(set.instructions.filter((i) => i.origin === 'seed'));
  }

  instance(task: string, id: string): InstanceRecord {
    const x = this.instances.get(`${task}\u0000${id}`);
    if (!x) throw new InputError(`task '${task}' has no instance '${id}'`);
    return x;
  }

  /** Instructions training uses for a task: the seed, plus the rewrites when diversity is on. */
  trainingInstructions(task: string): InstructionRecord[] {
    const all = this.instructionsByTask.get(task) ?? [];
    const seed = all.filter((x) => x.origin === 'seed');
    return this.useVariants ? [...seed, ...all.filter((x) => x.origin !== 'seed')] : seed;
  }

  /**
   * The instruction an instance is trained and scored with: an instance bound to an instruction
   * takes it or one of its rewrites, any other instance one of its task's training instructions,
   * chosen by a hash of the seed and the instance.
   */
  instructionFor(task: string, instanceId: string): InstructionRecord {
    const list = this.instructionsOf(this.instance(task, instanceId));
    return list[deriveSeed(this.config.seed, 'instruction', task, instanceId) % list.length];
  }

  /** Every instruction an instance may be trained or scored with. */
  instructionsOf(x: InstanceRecord): InstructionRecord[] {
    const own = x.instruction_id != null ? this.instructionById.get(x.instruction_id) : undefined;
    return own ? (this.useVariants ? [own, ...(this.#rewrites.get(own.instruction_id) ?? [])] : [own]) : this.trainingInstructions(x.task_id);
  }

  /**
   * The instruction with its key parts hidden by `scheme`; `labels` make the draw of a
   * placeholder or of counterfactual values a function of the seed (and of the stage and step
   * for the objective), so a resumed run draws the same.
   */
  masked(ins: InstructionRecord, scheme: MaskScheme, ...labels: Array<string | number>): string {
    const seed = this.config.seed;
    if (scheme === 'fixed') return maskInstruction(ins.text, ins.key_spans);
    if (scheme === 'counterfactual') {
      // Only the spans that hold a key value change; a span a rewrite added (a constraint
      // sentence) stays as it is, since no other value of it exists.
      const values = ins.key_spans.filter((k) => this.keyValues(ins.task_id, k.kind).includes(ins.text.slice(k.start, k.end)));
      const sorted = [...values].sort((a, b) => a.start - b.start);
      const rnd = mulberry32(deriveSeed(seed, 'counterfactual', ins.instruction_id, ...labels));
      const cf = values.length ? counterfactualInstruction(ins.text, values, (i, text) => this.keyValues(ins.task_id, sorted[i].kind).filter((v) => v !== text), rnd) : null;
      // A key part with no other value anywhere in the set falls back to a placeholder.
      if (cf !== null) return cf;
    }
    return maskInstruction(ins.text, ins.key_spans, 'replace', pickPlaceholder(seed, ins.instruction_id, ...labels));
  }

  /** The current task's training instances of a stage (a seeded subset when capped); the same array on every call. */
  stageInstances(task: string): InstanceRecord[] {
    let picked = this.#stageInstances.get(task);
    if (!picked) {
      const candidates = this.set.instances.filter((x) => x.task_id === task && x.split === 'train');
      // The length policy: an instance longer than the limit with some instruction it may get is
      // left out of training, replay and scoring, and counted (length.json), rather than stopping the run.
      const all: InstanceRecord[] = [];
      const long: string[] = [];
      for (const x of candidates) {
        if (this.fits(x, this.instructionsOf(x))) all.push(x);
        else long.push(x.instance_id);
      }
      if (long.length) this.tooLong.set(task, long);
      const cap = this.config.train.maxInstances;
      picked = cap === 0 || all.length <= cap ? all : shuffled(all, mulberry32(deriveSeed(this.config.seed, 'stage-instances', task))).slice(0, cap);
      this.#stageInstances.set(task, picked);
    }
    return picked;
  }

  buffer(task: string): InstanceRecord[] {
    const all = this.stageInstances(task);
    const cap = this.config.strategy.bufferSize;
    return cap === 0 || all.length <= cap ? all : all.slice(0, cap);
  }
}

/**
 * Runs (or resumes) a continual run into `runDir`.
 *
 * @example
 * const result = await runContinual(loadRunConfig('runs/kpig.yaml'), 'runs/kpig-1', { onEvent: console.log });
 * console.log(result.matrix);
 */
export async function runContinual(config: RunConfig, runDir: string, options: RunOptions = {}): Promise<RunResult> {
  const t0 = Date.now();
  const world = options.world ?? SINGLE_PROCESS;
  const lead = world.rank === 0;
  const emit = (lead && options.onEvent) || (() => {});
  checkRunInputs(config, { needData: !options.taskSet });
  const set = options.taskSet ?? (await loadTaskSet(config.data));
  const stream = resolveStream(config, set);
  const strategy = options.strategy ?? builtinStrategy(config.strategy);

  // The run directory: fresh, or resumed with the same config (rank 0 prepares it, the others wait).
  if (lead) await prepareRunDir(runDir, config, options, world);
  barrier(world);
  const state = new RunState(config, set, config.strategy.diversity, world);
  const T = stream.seen.length;
  const tasks = [...stream.seen, ...stream.held_out];

  const model = await Model.load(config.model, { threads: config.threads || undefined, device: config.device });
  if (model.info.deviceNote && lead) console.error(`kpig: ${model.info.deviceNote}`);
  if (!model.tokenizer) throw new RunConfigError('model', `${config.model} has no tokenizer`);
  state.template = await resolvePromptTemplate(config.template, config.model);
  const lengthLimit = Math.min(config.train.maxLength, model.info.maxPositions);
  // An instance fits when it does with the longest instruction it may get: instruction lengths are
  // counted once each, then one example per instance is tokenised.
  const instructionTokens = new Map<string, number>();
  const tokensOf = (ins: InstructionRecord) => {
    let n = instructionTokens.get(ins.instruction_id);
    if (n === undefined) instructionTokens.set(ins.instruction_id, (n = model.tokenizer!.encode(ins.text).length));
    return n;
  };
  state.fits = (x, instructions) => {
    const longest = instructions.reduce<InstructionRecord | null>((a, ins) => (a === null || tokensOf(ins) > tokensOf(a) ? ins : a), null);
    const seq = tokenizeExample(model.tokenizer!, { instruction: longest?.text ?? '', input: x.input, output: x.outputs[0] ?? '' }, Infinity, state.template);
    // The masked instruction may be a little longer than the full one (a placeholder or another key
    // value); an example that tokenises to nothing (an empty response) is left to training, which skips it.
    return seq === null || seq.tokens.length + LENGTH_MARGIN <= lengthLimit;
  };
  try {
    const trainer = new Trainer(model, {
      mode: config.train.mode,
      lora: { rank: config.train.loraRank, alpha: config.train.loraAlpha, ...(config.train.loraTargets ? { targets: config.train.loraTargets } : {}) },
      lr: config.train.lr,
      batchSize: config.train.batchSize,
      seed: config.seed,
      world,
    });
    const term = strategy.lossTerm;

    // Where to pick up: the last finished stage, and a checkpoint inside the next one. Where rank 0
    // finds the run is where every rank picks it up.
    let firstStage = 1;
    for (let t = 1; t <= T; t++) if (existsSync(join(runDir, pad(t), 'done.json'))) firstStage = t + 1;
    const hasBase = existsSync(join(runDir, 'base', 'done.json'));
    const copyBase = !hasBase && options.baseFrom !== undefined && existsSync(join(options.baseFrom, 'base', 'done.json'));
    const where = fromLead(world, [firstStage, Number(hasBase), Number(copyBase), Number(existsSync(join(runDir, pad(firstStage), 'checkpoint')))]);
    const startStage = where[0];
    if (startStage > 1) await trainer.resume(join(runDir, pad(startStage - 1), 'final'));
    emit({ type: 'start', stages: T, resumedFrom: startStage > 1 || where[3] > 0 ? startStage : null });
    if (lead) await writeJsonAtomic(join(runDir, 'status.json'), { state: 'running', stages_done: startStage - 1, stages_total: T });

    const stages: StageScores[] = [];
    if (where[2] > 0 && lead) await cp(join(options.baseFrom!, 'base'), join(runDir, 'base'), { recursive: true });
    const baseDone = where[1] > 0 || where[2] > 0;
    if (!baseDone) {
      emit({ type: 'phase', stage: 0, phase: 'eval', detail: 'base model' });
      if (lead) await mkdir(join(runDir, 'base'), { recursive: true });
      await evaluateStage(model, state.set, tasks, config, join(runDir, 'base', 'eval.arrow'), (done, total) => emit({ type: 'eval-progress', stage: 0, done, total }), options.signal, state.template, world);
      await evaluateProbes(model, state.set, tasks, config, join(runDir, 'base', 'probe.arrow'), options.signal, state.template, world);
      if (lead) await writeJsonAtomic(join(runDir, 'base', 'done.json'), { stage: 0 });
    }
    let stepsThisProcess = 0;
    for (let t = startStage; t <= T; t++) {
      const stageDir = join(runDir, pad(t));
      if (lead) await mkdir(stageDir, { recursive: true });
      const planPath = join(stageDir, 'plan.arrow');
      const ckptDir = join(stageDir, 'checkpoint');
      // Rank 0 says what this stage already has; what it wrote before (the last stage's weights and
      // EWC statistics) is there for every rank after this point.
      const [hasPlan, resumeInStage] = fromLead(world, [Number(existsSync(planPath)), Number(existsSync(ckptDir))]).map((v) => v > 0);
      const task = stream.seen[t - 1];
      const previous = stream.seen.slice(0, t - 1);
      const ts = Date.now();

      // 1. The plan: read back when this stage already made it (resume), else made now.
      let items: PlanItem[];
      if (hasPlan) items = await readPlan(planPath);
      else {
        emit({ type: 'phase', stage: t, phase: 'plan' });
        items = await makePlan(t, task, previous, state, strategy, model, stageDir, options.signal);
        if (lead) await writeFileAtomic(planPath, tableToIPC(planTable(items), 'file'));
        if (world.size > 1) {
          // Every rank trains on rank 0's plan (an LLM tagger, for one, is asked on rank 0 only).
          barrier(world);
          if (!lead) items = await readPlan(planPath);
        }
      }

      // 2. Training, from the in-stage checkpoint when there is one.
      // The loss term starts the stage on the weights the previous stage left (a new adapter, a
      // reference of the base model), then an in-stage checkpoint restores where training was.
      await term?.startStage?.({
        stage: t,
        config: config.strategy,
        seed: config.seed,
        previous: async (file) => (t > 1 ? readTensorFile(join(runDir, pad(t - 1), file)) : null),
        earlier: async (j, file) => {
          const path = join(runDir, pad(j), file);
          return j >= 1 && j < t && existsSync(path) ? readTensorFile(path) : null;
        },
        adapters: adapterAccess(trainer, config),
        hiddenStates: (examples) => exampleHiddenStates(model, state, examples),
        hiddenSize: model.info.hiddenSize,
      });
      let stepInStage = 0;
      if (resumeInStage) {
        await trainer.resume(ckptDir);
        stepInStage = (JSON.parse(await readFile(join(ckptDir, 'trainer_state.json'), 'utf8')) as { stageStep?: number }).stageStep ?? 0;
      } else {
        trainer.resetOptimizer(); // a fresh AdamW state for every stage
      }
      emit({ type: 'phase', stage: t, phase: 'train' });
      const trained = await trainStage({
        t,
        task,
        items,
        state,
        model,
        trainer,
        strategy,
        stageDir,
        startStep: stepInStage,
        emit,
        signal: options.signal,
        budget: options.stopAfterSteps === undefined ? Infinity : options.stopAfterSteps - stepsThisProcess,
      });
      stepsThisProcess += trained.stepsRun;
      if (trained.interrupted) throw new CancelledError(`the run stopped after ${stepsThisProcess} steps in stage ${t}; resume it with --resume`);

      // 3. End of stage: weights, what the loss term keeps (EWC's Fisher), evaluation, then done.json.
      if (lead) await saveCheckpoint(model, join(stageDir, 'final'), stageState(trainer, config, trained.totalSteps, trained.totalSteps, items.length));
      if (term?.endStage) await term.endStage(stageEndContext(t, task, stageDir, state, model, trainer));
      if (lead) await rm(ckptDir, { recursive: true, force: true });
      emit({ type: 'phase', stage: t, phase: 'eval' });
      const scores = await evaluateStage(model, state.set, tasks, config, join(stageDir, 'eval.arrow'), (done, total) => emit({ type: 'eval-progress', stage: t, done, total }), options.signal, state.template, world);
      const probes = await evaluateProbes(model, state.set, tasks, config, join(stageDir, 'probe.arrow'), options.signal, state.template, world);
      const seconds = (Date.now() - ts) / 1000;
      const seenNow = stream.seen.slice(0, t);
      const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);
      const byTask = new Map(scores.tasks.map((s) => [s.task_id, s]));
      const heldV = stream.held_out.map((h) => byTask.get(h)?.v_score).filter((v): v is number => v !== null && v !== undefined);
      const summary = {
        stage: t,
        task,
        seconds,
        replay: items.filter((x) => x.role !== 'current').length,
        trainItems: items.length,
        steps: trained.totalSteps,
        meanLoss: mean(trained.losses),
        seenRougeL: mean(seenNow.map((s) => byTask.get(s)?.rouge_l ?? 0)),
        heldOutRougeL: mean(stream.held_out.map((s) => byTask.get(s)?.rouge_l ?? 0)),
        heldOutVScore: heldV.length ? mean(heldV) : null,
        heldOutListening: listening(probes?.tasks ?? null, stream.held_out),
        seenListening: listening(probes?.tasks ?? null, seenNow),
      };
      const long = state.tooLong.get(stream.seen[t - 1]);
      if (long) emit({ type: 'skipped-long', stage: t, task: stream.seen[t - 1], count: long.length, limit: lengthLimit });
      if (lead) {
        await writeLengthRecord(runDir, state, lengthLimit);
        await writeJsonAtomic(join(stageDir, 'done.json'), summary);
        await writeJsonAtomic(join(runDir, 'status.json'), { state: t === T ? 'done' : 'running', stages_done: t, stages_total: T });
      }
      emit({ type: 'stage', ...summary });
    }
    barrier(world);
    for (let t = 1; t <= T; t++) stages.push(await readStageScores(join(runDir, pad(t), 'eval.arrow'), set));
    const base = await readStageScores(join(runDir, 'base', 'eval.arrow'), set);
    const matrix = [base, ...stages].map((s) => tasks.map((task) => s.tasks.find((x) => x.task_id === task)?.rouge_l ?? 0));
    if (lead) await writeJsonAtomic(join(runDir, 'results.json'), { metric: 'rouge_l', tasks, seen: stream.seen, held_out: stream.held_out, matrix });
    emit({ type: 'done', runDir, seconds: (Date.now() - t0) / 1000 });
    return { runDir, matrix, tasks, stages: [base, ...stages] };
  } catch (err) {
    if (!(err instanceof CancelledError) && lead) {
      try {
        await writeJsonAtomic(join(runDir, 'status.json'), { state: 'failed', error: (err as Error).message });
      } catch {
        // the original error matters more than a status file that could not be written
      }
    }
    throw err;
  } finally {
    model.dispose();
  }
}

/** Fingerprints of what a run reads: the model folder, the task-set files and the prompt template. */
interface RunInputs {
  model: string;
  data: string;
  /** Absent in runs started before templates were configurable (then: superni). */
  template?: string;
  /** GeRe's general samples file, when the strategy has one. */
  general?: string;
}

/** What a template writes around probe parts (a file's or a model's template may change under the same name). */
async function runTemplateFingerprint(config: RunConfig): Promise<string> {
  return config.template === 'superni' ? 'superni' : templateFingerprint(await resolvePromptTemplate(config.template, config.model));
}

async function runInputs(config: RunConfig, options: RunOptions): Promise<RunInputs> {
  let data = 'in-memory task set';
  if (!options.taskSet) {
    const hash = createHash('sha256');
    const files = statSync(config.data).isDirectory() ? readdirSync(config.data).filter((f) => f.endsWith('.arrow')).sort().map((f) => join(config.data, f)) : [config.data];
    for (const f of files) hash.update(`${f}:${await dataFingerprint(f)}`);
    data = hash.digest('hex');
  }
  const general = config.strategy.generalData ? await dataFingerprint(config.strategy.generalData) : undefined;
  return { model: await modelFingerprint(config.model), data, template: await runTemplateFingerprint(config), ...(general ? { general } : {}) };
}

async function prepareRunDir(runDir: string, config: RunConfig, options: RunOptions, world: World): Promise<void> {
  const cfgPath = join(runDir, 'config.json');
  if (options.resume) {
    if (!existsSync(cfgPath)) throw new InputError(`${runDir} is not a run directory (no config.json) to resume`);
    // Read through the config reader, so fields added since the run started take their defaults.
    const before = resolveRunConfig(JSON.parse(readFileSync(cfgPath, 'utf8')), { where: cfgPath });
    if (JSON.stringify(before) !== JSON.stringify(config))
      throw new InputError(`${runDir}: the config differs from the one the run started with; resume with the run's own config.json`);
    // The same paths may hold other files by now: a resumed run must see the model and data it started with.
    const inputsPath = join(runDir, 'inputs.json');
    if (existsSync(inputsPath)) {
      const was = JSON.parse(readFileSync(inputsPath, 'utf8')) as RunInputs;
      const now = await runInputs(config, options);
      was.template ??= 'superni';
      const diff = (['model', 'data', 'template'] as const).filter((k) => was[k] !== now[k]);
      if (diff.length)
        throw new InputError(`${runDir}: the ${diff.map((k) => `${k} (${config[k]})`).join(' and ')} changed since the run started; it would not continue the same run`);
      if (was.general !== now.general)
        throw new InputError(`${runDir}: the general samples (${config.strategy.generalData}) changed since the run started; it would not continue the same run`);
    }
    for (const dir of [runDir, ...readdirSync(runDir).filter((d) => d.startsWith('stage-')).map((d) => join(runDir, d))]) await cleanTemps(dir);
    return;
  }
  if (existsSync(runDir) && readdirSync(runDir).length > 0) {
    if (!options.overwrite) throw new KpigIOError(`${runDir} is not empty: resume it with --resume, or pass --force to start over`);
    await rm(runDir, { recursive: true, force: true });
  }
  await mkdir(runDir, { recursive: true });
  await writeJsonAtomic(cfgPath, config);
  await writeJsonAtomic(join(runDir, 'inputs.json'), await runInputs(config, options));
  await writeJsonAtomic(join(runDir, 'masking.json'), {
    replay: config.strategy.replayMask,
    objective: config.strategy.objectiveMask,
    placeholder_pool: PLACEHOLDER_POOL,
    fixed_placeholder: '[MASK]',
    draws: 'placeholder and counterfactual values: functions of (seed, instruction_id, instance_id[, stage, step])',
    seed: config.seed,
  });
  await writeJsonAtomic(join(runDir, 'environment.json'), {
    kpig_version: packageVersion(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    cpu: cpus()[0]?.model ?? 'unknown',
    threads: config.threads || cpus().length,
    seed: config.seed,
    device: config.device,
    ranks: world.size,
    transport: world.transport,
    effective_batch: config.train.batchSize,
    started: new Date().toISOString(),
  });
}

function stageState(trainer: Trainer, config: RunConfig, stageStep: number, totalSteps: number, dataSize: number): TrainerState & { stageStep: number } {
  return { version: 1, step: trainer.step, totalSteps, seed: config.seed, mode: config.train.mode, lora: trainer.lora, dataSize, losses: [], stageStep };
}

async function makePlan(t: number, task: string, previous: string[], state: RunState, strategy: Strategy, model: Model, stageDir: string, signal?: AbortSignal): Promise<PlanItem[]> {
  const config = state.config;
  const current: PlanItem[] = [];
  const seen = strategy.joint ? [...previous, task] : [task];
  for (const k of seen)
    for (const x of state.stageInstances(k))
      current.push({ task_id: k, instance_id: x.instance_id, instruction_id: state.instructionFor(k, x.instance_id).instruction_id, role: 'current' });
  const ctx: StrategyContext = {
    stage: t,
    task,
    previous,
    set: state.set,
    config: config.strategy,
    seed: config.seed,
    buffer: (k) => state.buffer(k),
    instructionFor: (k, id) => state.instructionFor(k, id),
    instructionShares: (k) => {
      const list = state.trainingInstructions(k);
      const counts = new Map<string, number>();
      const xs = state.stageInstances(k);
      for (const x of xs) {
        const id = state.instructionFor(k, x.instance_id).instruction_id;
        counts.set(id, (counts.get(id) ?? 0) + 1);
      }
      return list.filter((ins) => counts.has(ins.instruction_id)).map((ins) => ({ instruction: ins, share: counts.get(ins.instruction_id)! / xs.length }));
    },
    scoreItems: (items) => scoreItems(model, state, items, config.strategy.replayMask, (it) => ['replay', it.instance_id], signal),
    embed: (texts) => model.embed(texts.map((x) => model.tokenizer!.encode(x, { addSpecialTokens: true }))),
    embedItems: async (items) => {
      const out: Float32Array[] = [];
      for (let i = 0; i < items.length; i += 16) {
        const seqs = items.slice(i, i + 16).map((it) => {
          const x = state.instance(it.task_id, it.instance_id);
          const ins = state.instructionById.get(it.instruction_id)!;
          return tokenizeExample(model.tokenizer!, { instruction: ins.text, input: x.input, output: it.target ?? x.outputs[0] }, Infinity, state.template)?.tokens ?? promptFor(model, state, it);
        });
        out.push(...(await model.embed(seqs)));
      }
      return out;
    },
    previousState: async () => {
      const path = join(dirname(stageDir), pad(t - 1), 'strategy-state.json');
      return t > 1 && existsSync(path) ? (JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>) : null;
    },
    // Under MPI the endpoint is asked by rank 0 only: the other ranks' plans are replaced by its plan.
    tags: config.strategy.tagger === 'llm' ? (state.lead ? llmTagger(join(dirname(stageDir), 'llm-cache')) : async () => []) : undefined,
  };
  const plan: ReplayPlan = previous.length || strategy.joint ? await strategy.plan(ctx) : { replay: [], allocation: [] };
  if (state.lead) {
    if (plan.scores) await writeFileAtomic(join(stageDir, 'ig.arrow'), tableToIPC(scoresTable(plan.scores), 'file'));
    await writeJsonAtomic(join(stageDir, 'allocation.json'), { allocation: plan.allocation, tau: plan.tau ?? null });
    if (plan.state) await writeJsonAtomic(join(stageDir, 'strategy-state.json'), plan.state);
  }
  const items = [...current, ...plan.replay];
  if (strategy.lossTerm?.planItems)
    items.push(...(await strategy.lossTerm.planItems({ stage: t, task, config: config.strategy, current, answers: (xs) => answersOf(model, state, xs, signal) })));
  return items;
}

/** InsCL tags from the endpoint in KPIG_LLM_* (cached in the run directory, so a resumed run asks nothing). */
function llmTagger(cacheDir: string): (ins: InstructionRecord) => Promise<string[]> {
  const client = new ChatClient({ cacheDir });
  return (ins) => llmTags(client, ins.text);
}

/** The current model's greedy one-line answers to items' prompts; under MPI each rank answers its share and every rank gets every answer. */
async function answersOf(model: Model, state: RunState, items: PlanItem[], signal?: AbortSignal): Promise<string[]> {
  const prompts = items.map((x) => promptFor(model, state, x));
  const eosIds = stopTokens(model.tokenizer!, state.template, model.info.eosIds);
  const [from, to] = shareOf(state.world, prompts.length);
  const gens = await model.generate(prompts.slice(from, to), { maxNewTokens: state.config.eval.maxNewTokens, stop: ['\n'], eosIds, signal });
  return gatherTexts(state.world, prompts.map((_, i) => (i >= from && i < to ? (gens[i - from].text ?? '').trim() : null)));
}

function promptFor(model: Model, state: RunState, item: PlanItem): number[] {
  const x = state.instance(item.task_id, item.instance_id);
  const ins = state.instructionById.get(item.instruction_id)!;
  return promptTokens(model.tokenizer!, state.template, { instruction: ins.text, input: x.input });
}

/**
 * IG scores of `items` under the current weights. Under MPI each rank scores a contiguous share
 * of the items and every rank gets every score back.
 */
async function scoreItems(model: Model, state: RunState, items: PlanItem[], scheme: MaskScheme, labels: (it: PlanItem) => Array<string | number>, signal?: AbortSignal): Promise<ItemScore[]> {
  const tok = model.tokenizer!;
  // The masked instructions are drawn for every item on every rank (a function of the seed and the labels).
  const maskedText = items.map((it) => state.masked(state.instructionById.get(it.instruction_id)!, scheme, ...labels(it)));
  const [from, to] = shareOf(state.world, items.length);
  const WIDTH = 6;
  const rows = new Float64Array(items.length * WIDTH);
  const batch = 32;
  for (let i = from; i < to; i += batch) {
    if (signal?.aborted) throw new CancelledError('scoring was cancelled');
    const end = Math.min(to, i + batch);
    const pairs = items.slice(i, end).map((it, k) => {
      const x = state.instance(it.task_id, it.instance_id);
      const ins = state.instructionById.get(it.instruction_id)!;
      const full = tokenizeExample(tok, { instruction: ins.text, input: x.input, output: x.outputs[0] }, Infinity, state.template)!;
      const masked = tokenizeExample(tok, { instruction: maskedText[i + k], input: x.input, output: x.outputs[0] }, Infinity, state.template)!;
      const responseLen = full.weights.filter((w) => w !== 0).length;
      return { full: full.tokens, masked: masked.tokens, responseLen };
    });
    const scores = await scorePairs(model, pairs);
    scores.forEach((sc, k) => rows.set([sc.igCe, sc.igKl, sc.igJs, sc.ceFull, sc.ceMasked, sc.nTokens], (i + k) * WIDTH));
  }
  const all = gatherRows(state.world, rows);
  return items.map((it, i) => {
    const r = all.subarray(i * WIDTH, (i + 1) * WIDTH);
    return {
      task_id: it.task_id,
      instance_id: it.instance_id,
      instruction_id: it.instruction_id,
      ig_ce: r[0],
      ig_kl: r[1],
      ig_js: r[2],
      ce_full: r[3],
      ce_masked: r[4],
      n_tokens: r[5],
      masked_instruction: maskedText[i],
    };
  });
}

/** The run's LoRA adapters for a loss term (null in full fine-tuning). */
function adapterAccess(trainer: Trainer, config: RunConfig): AdapterAccess | null {
  if (config.train.mode !== 'lora' || !trainer.lora) return null;
  const SUFFIX = '.lora_A.weight';
  const shapes = new Map(trainer.trainableTensors().map((x) => [x.name, x.shape]));
  const modules = [...shapes.keys()]
    .filter((n) => n.endsWith(SUFFIX))
    .map((a) => {
      const path = a.slice(0, -SUFFIX.length);
      const b = `${path}.lora_B.weight`;
      const [rank, inDim] = shapes.get(a)!;
      const out = shapes.get(b)![0];
      return { path, a, b, rank, in: inDim, out, scale: trainer.lora!.alpha / trainer.lora!.rank };
    });
  return {
    modules,
    read: (name) => trainer.readParam(name),
    write: (name, data) => trainer.writeParam(name, data),
    restart: (seed) => trainer.restartLora(seed),
  };
}

/** The final hidden states of examples' training sequences (null for one that does not fit), a few at a time. */
async function exampleHiddenStates(model: Model, state: RunState, examples: InstructionExample[]): Promise<Array<Float32Array | null>> {
  const C = model.info.hiddenSize;
  const seqs = examples.map((ex) => sampleSequence(model, state.template, ex.instruction, ex.input, ex.output, state.config.train.maxLength, 1));
  const out: Array<Float32Array | null> = seqs.map(() => null);
  const BATCH = 16;
  for (let i = 0; i < seqs.length; i += BATCH) {
    const idx = seqs.map((q, k) => k).slice(i, i + BATCH).filter((k) => seqs[k] !== null);
    if (!idx.length) continue;
    const packed = packSequences(idx.map((k) => seqs[k]!.tokens));
    const h = await trainingOf(model).hiddenStates(packed);
    idx.forEach((k, j) => (out[k] = h.slice(packed.offsets[j] * C, packed.offsets[j + 1] * C)));
  }
  return out;
}

/** Tensors of a safetensors file as float32 (what a loss term kept from a stage). */
async function readTensorFile(path: string): Promise<Map<string, Float32Array>> {
  const st = await readSafetensors(path);
  return new Map([...st.tensors].map(([name, t]) => [name, toFloat32(t)]));
}

/** What a loss term gets at the end of stage t: squared gradients shared out over the ranks, and lead-only writes. */
function stageEndContext(t: number, task: string, stageDir: string, state: RunState, model: Model, trainer: Trainer): StageEndContext {
  const config = state.config;
  let shapes: Map<string, number[]> | undefined;
  return {
    stage: t,
    task,
    config: config.strategy,
    taskItems: state.stageInstances(task).map((x) => ({ task_id: task, instance_id: x.instance_id, instruction_id: state.instructionFor(task, x.instance_id).instruction_id, role: 'current' as const })),
    squaredGradients: async (items) => {
      const [from, to] = shareOf(state.world, items.length);
      const seqs: TrainingSequence[] = [];
      for (const it of items.slice(from, to)) {
        const x = state.instance(it.task_id, it.instance_id);
        const ins = state.instructionById.get(it.instruction_id)!;
        const seq = sampleSequence(model, state.template, ins.text, x.input, it.target ?? x.outputs[0], config.train.maxLength, 1);
        if (seq) seqs.push(seq);
      }
      const mine = await trainer.squaredGradients(seqs);
      return new Map([...mine].map(([name, sum]) => [name, gatherRows(state.world, sum)]));
    },
    parameters: () => trainer.parameters(),
    shapeOf: (name) => {
      shapes ??= new Map(trainer.trainableTensors().map((x) => [x.name, x.shape]));
      const shape = shapes.get(name);
      if (!shape) throw new InputError(`no trainable tensor named '${name}'`);
      return shape;
    },
    adapters: adapterAccess(trainer, config),
    save: async (file, tensors) => {
      if (!state.lead) return;
      const out: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
      for (const [name, t] of tensors) out[name] = { dtype: 'F32', ...t };
      await writeSafetensors(join(stageDir, file), out);
    },
  };
}

interface StageTraining {
  t: number;
  task: string;
  items: PlanItem[];
  state: RunState;
  model: Model;
  trainer: Trainer;
  strategy: Strategy;
  stageDir: string;
  startStep: number;
  emit: (e: RunEvent) => void;
  signal?: AbortSignal;
  budget: number;
}

async function trainStage(s: StageTraining): Promise<{ totalSteps: number; losses: number[]; stepsRun: number; interrupted: boolean }> {
  const { config } = s.state;
  const tc = config.train;
  const term = s.strategy.lossTerm;
  const bs = tc.batchSize;
  const perEpoch = Math.ceil(s.items.length / bs);
  const totalSteps = perEpoch * tc.epochs;
  const logPath = join(s.stageDir, 'train.jsonl');
  // The log keeps exactly the steps the checkpoint covers; later lines were lost with the process.
  let log: string[] = [];
  if (existsSync(logPath)) log = (await readFile(logPath, 'utf8')).split('\n').filter(Boolean).slice(0, s.startStep);
  const losses = log.map((l) => (JSON.parse(l) as { loss: number }).loss);
  const t0 = Date.now();
  let tokens = 0;
  let stepsRun = 0;
  let order: number[] = [];
  let orderEpoch = -1;
  for (let step = s.startStep; step < totalSteps; step++) {
    if (s.signal?.aborted) throw new CancelledError(`the run was cancelled in stage ${s.t} at step ${step}`);
    if (stepsRun >= s.budget) return { totalSteps, losses, stepsRun, interrupted: true };
    const epoch = Math.floor(step / perEpoch);
    if (epoch !== orderEpoch) {
      order = shuffled(
        s.items.map((_, i) => i),
        mulberry32(deriveSeed(config.seed, 'order', s.t, epoch)),
      );
      orderEpoch = epoch;
    }
    const picked = order.slice((step % perEpoch) * bs, (step % perEpoch + 1) * bs).map((i) => s.items[i]);
    // The loss term says what the step trains on (KPIG's hinge needs each item's IG under the current weights).
    const ctx: StepContext = {
      stage: s.t,
      task: s.task,
      step,
      config: config.strategy,
      scoreItems: (items, scheme) => scoreItems(s.model, s.state, items, scheme, (it) => ['objective', it.instance_id, s.t, step], s.signal),
      instruction: (it) => s.state.instructionById.get(it.instruction_id)!,
      sequence: (it, scale, instructionText) => {
        const x = s.state.instance(it.task_id, it.instance_id);
        const text = instructionText ?? s.state.instructionById.get(it.instruction_id)!.text;
        return sampleSequence(s.model, s.state.template, text, x.input, it.target ?? x.outputs[0], tc.maxLength, scale);
      },
      example: (ex, scale) => sampleSequence(s.model, s.state.template, ex.instruction, ex.input, ex.output, tc.maxLength, scale),
    };
    const { sequences: seqs, ig } = term?.stepSequences ? await term.stepSequences(picked, ctx) : plainSequences(picked, ctx);
    const lr = learningRate(step, { lr: tc.lr, totalSteps, warmupSteps: tc.warmupSteps, schedule: tc.schedule });
    const r = await s.trainer.trainStep(seqs, lr, s.signal, {
      normalizer: picked.length,
      beforeOptimizer: term?.beforeOptimizer ? (g) => term.beforeOptimizer!(g) : undefined,
    });
    stepsRun++;
    const stepTokens = seqs.reduce((a, q) => a + q.tokens.length, 0);
    tokens += stepTokens;
    losses.push(r.loss);
    const sec = (Date.now() - t0) / 1000;
    const entry = { stage: s.t, step: step + 1, loss: r.loss, ig, lr, tokens: stepTokens, tokens_per_s: sec > 0 ? tokens / sec : 0 };
    log.push(JSON.stringify(entry));
    s.emit({ type: 'step', stage: s.t, task: s.task, step: step + 1, totalSteps, loss: r.loss, ig: entry.ig, tokensPerSecond: entry.tokens_per_s, etaSeconds: (sec / stepsRun) * (totalSteps - step - 1) });
    if (tc.checkpointEvery > 0 && (step + 1) % tc.checkpointEvery === 0 && step + 1 < totalSteps && s.state.lead) {
      await writeFileAtomic(logPath, log.join('\n') + '\n');
      await saveCheckpoint(s.model, join(s.stageDir, 'checkpoint'), stageState(s.trainer, config, step + 1, totalSteps, s.items.length));
    }
  }
  if (s.state.lead) await writeFileAtomic(logPath, log.join('\n') + (log.length ? '\n' : ''));
  return { totalSteps, losses, stepsRun, interrupted: false };
}
