/**
 * `evaluateModel`: batched greedy generation on the test (or train) instances of chosen tasks,
 * scored per instance. Generation stops at the first newline or EOS because every SuperNI
 * reference output is a single line; the prediction is the generated text before the stop, with
 * surrounding whitespace removed.
 */
import type { InstanceRecord, Split, TaskRecord, TaskSet } from '../data/taskset.js';
import { gatherTexts, SINGLE_PROCESS, type World } from '../dist/index.js';
import { CancelledError, InputError } from '../errors/index.js';
import type { Model } from '../model/model.js';
import { promptTokens, stopTokens, superniTemplate, type PromptTemplate } from '../template/index.js';
import { scorePrediction, type PredictionRow } from './predictions.js';

export interface EvaluateOptions {
  /** Tasks to evaluate, in this order (default: every task of the set). */
  tasks?: string[];
  /** Which instances (default 'test'; 'probe': the counterfactual listening probes). */
  split?: Split;
  /** At most this many instances per task, the first ones in set order (default: all). */
  maxInstancesPerTask?: number;
  /** Most generated tokens per instance (default 64). */
  maxNewTokens?: number;
  /** Prompts per generation call (default 8). */
  batchSize?: number;
  /**
   * The instruction shown for a task's instances that are not bound to an instruction of their
   * own (`instruction_id`); default: the text of its `<task_id>/seed` instruction.
   */
  instructionFor?: (task: TaskRecord) => string;
  /** The prompt template (default: the SuperNI prompt); a chat template's end-of-turn token also ends generation. */
  template?: PromptTemplate;
  signal?: AbortSignal;
  /** Called after every batch with instances done and the total (under MPI: this rank's share, scaled to the total). */
  onProgress?: (done: number, total: number) => void;
  /**
   * The ranks of an MPI job to spread the generation over: rank r answers batches r, r + k, …
   * (the batches one process would make), and every rank gets every answer back. Default: one process.
   */
  world?: World;
}

function positiveInt(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v < 1) throw new InputError(`evaluateModel: ${name} must be a positive integer, got ${v}`);
  return v;
}

/** The last `n` tokens of a prompt, still opening with BOS when it did. */
function keepTail(prompt: number[], n: number, bos: number | null): number[] {
  if (bos !== null && prompt[0] === bos && n > 1) return [bos, ...prompt.slice(prompt.length - n + 1)];
  return prompt.slice(prompt.length - n);
}

/**
 * Generates an answer for every selected instance with the prompt template (default: the SuperNI
 * prompt, `renderPrompt({instruction, input, output: ''})`) and scores it: ROUGE-L and exact match
 * against the instance's outputs, validity against the task's label set. Rows come back task by
 * task in instance order. Prompts longer than the model's context (less the generated tokens)
 * keep their last tokens, where the input and "Output:" are.
 *
 * @throws InputError for an unknown task, a task without a seed instruction (and no
 *   `instructionFor`), or a task with no instance in the split
 * @throws CancelledError when `signal` aborts
 * @example
 * const rows = await evaluateModel(model, set, { tasks: stream.held_out, maxInstancesPerTask: 100 });
 * await writePredictions('eval.arrow', rows, { fingerprint: taskSetFingerprint(set) });
 */
export async function evaluateModel(model: Model, set: TaskSet, options: EvaluateOptions = {}): Promise<PredictionRow[]> {
  const split = options.split ?? 'test';
  if (split !== 'test' && split !== 'train' && split !== 'probe') throw new InputError(`evaluateModel: split must be 'test', 'train' or 'probe', got '${String(split)}'`);
  const maxNewTokens = options.maxNewTokens ?? 64;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new InputError(`evaluateModel: maxNewTokens must be a positive integer, got ${maxNewTokens}`);
  const batchSize = positiveInt('batchSize', options.batchSize, 8);
  const cap = options.maxInstancesPerTask === undefined ? Infinity : positiveInt('maxInstancesPerTask', options.maxInstancesPerTask, 1);
  const tok = model.tokenizer;
  if (!tok) throw new InputError('evaluateModel: the model has no tokenizer; load it with one');

  const template = options.template ?? superniTemplate();
  const eosIds = stopTokens(tok, template, model.info.eosIds);
  const taskById = new Map(set.tasks.map((t) => [t.task_id, t]));
  const taskIds = options.tasks ?? set.tasks.map((t) => t.task_id);
  const unknown = taskIds.filter((t) => !taskById.has(t));
  if (unknown.length) throw new InputError(`evaluateModel: unknown task(s) ${unknown.join(', ')} (the task set has ${set.tasks.length} tasks)`);
  const seeds = new Map(set.instructions.filter((i) => i.origin === 'seed' && i.instruction_id === `${i.task_id}/seed`).map((i) => [i.task_id, i.text]));
  const instructionById = new Map(set.instructions.map((i) => [i.instruction_id, i]));
  const byTask = new Map<string, InstanceRecord[]>(taskIds.map((t) => [t, []]));
  for (const r of set.instances) {
    const list = byTask.get(r.task_id);
    if (list && r.split === split && list.length < cap) list.push(r);
  }
  const empty = taskIds.filter((t) => byTask.get(t)!.length === 0);
  if (empty.length) throw new InputError(`evaluateModel: task(s) ${empty.join(', ')} have no '${split}' instances; every evaluated task needs at least one`);

  interface Job {
    task: TaskRecord;
    inst: InstanceRecord;
    prompt: number[];
    labelSet: string[] | null;
  }
  const budget = model.info.maxPositions - maxNewTokens;
  if (budget < 1) throw new InputError(`evaluateModel: maxNewTokens ${maxNewTokens} leaves no room for a prompt in the model's context of ${model.info.maxPositions}`);
  const jobs: Job[] = [];
  for (const id of taskIds) {
    const task = taskById.get(id)!;
    let taskInstruction: string | undefined;
    const fallback = () => {
      if (taskInstruction !== undefined) return taskInstruction;
      if (options.instructionFor) return (taskInstruction = options.instructionFor(task));
      const seed = seeds.get(id);
      if (seed === undefined) throw new InputError(`evaluateModel: task '${id}' has no seed instruction '${id}/seed'; pass instructionFor`);
      return (taskInstruction = seed);
    };
    for (const inst of byTask.get(id)!) {
      // An instance bound to an instruction is asked with it: its output answers that instruction's key values.
      const own = inst.instruction_id != null ? instructionById.get(inst.instruction_id) : undefined;
      const instruction = own ? own.text : fallback();
      const prompt = promptTokens(tok, template, { instruction, input: inst.input });
      jobs.push({ task, inst, prompt: prompt.length > budget ? keepTail(prompt, budget, tok.bosId) : prompt, labelSet: own?.label_set ?? task.label_set });
    }
  }

  // Batches keep a task's prompts together (they share its instruction, which the prefix cache
  // computes once), by prompt length inside a task; rows go back in job order.
  const taskOrder = new Map(taskIds.map((t, i) => [t, i]));
  const order = jobs
    .map((_, i) => i)
    .sort((x, y) => taskOrder.get(jobs[x].task.task_id)! - taskOrder.get(jobs[y].task.task_id)! || jobs[x].prompt.length - jobs[y].prompt.length || x - y);
  const world = options.world ?? SINGLE_PROCESS;
  const mine: number[] = [];
  for (let b = 0, n = 0; b < order.length; b += batchSize, n++) if (n % world.size === world.rank) mine.push(b);
  const share = mine.reduce((a, b) => a + Math.min(batchSize, order.length - b), 0);
  const answered = new Array<string | null>(jobs.length).fill(null);
  let done = 0;
  for (const b of mine) {
    if (options.signal?.aborted) throw new CancelledError(`evaluation was cancelled after ${done} of ${share} instances`);
    const batch = order.slice(b, b + batchSize);
    const gens = await model.generate(
      batch.map((i) => jobs[i].prompt),
      { maxNewTokens, stop: ['\n'], eosIds, signal: options.signal },
    );
    batch.forEach((i, k) => (answered[i] = gens[k].text.trim()));
    done += batch.length;
    options.onProgress?.(share === jobs.length ? done : Math.round((done / share) * jobs.length), jobs.length);
  }
  const texts = gatherTexts(world, answered);
  return jobs.map((j, i) => ({
    task_id: j.task.task_id,
    instance_id: j.inst.instance_id,
    prediction: texts[i],
    references: [...j.inst.outputs],
    ...scorePrediction(texts[i], j.inst.outputs, j.labelSet),
  }));
}
