/**
 * Evaluation inside a run: the current model on every seen and held-out task's test split, the
 * predictions written as Arrow (the format of `kpig eval`), and the per-task summary the stage
 * loop and the score matrix use.
 */
import type { TaskSet } from '../data/taskset.js';
import { SINGLE_PROCESS, type World } from '../dist/index.js';
import { InputError } from '../errors/index.js';
import { evaluateModel } from '../eval/evaluate.js';
import type { PromptTemplate } from '../template/index.js';
import { exactMatch } from '../eval/metrics.js';
import { readPredictions, summarizeTasks, taskSetFingerprint, writePredictions, type PredictionRow, type TaskSummary } from '../eval/predictions.js';
import { writeJsonAtomic } from '../io/atomic.js';
import type { Model } from '../model/model.js';
import type { RunConfig } from './run-config.js';

export interface StageScores {
  tasks: TaskSummary[];
}

/**
 * Evaluates `model` on `tasks`, writes the predictions to `out` and returns the per-task summary.
 * Under MPI (`world`) the ranks share the generation and rank 0 writes.
 *
 * @example
 * const s = await evaluateStage(model, set, ['t1', 't2'], config, 'run/stage-01/eval.arrow');
 */
export async function evaluateStage(
  model: Model,
  set: TaskSet,
  tasks: string[],
  config: RunConfig,
  out: string,
  onProgress?: (done: number, total: number) => void,
  signal?: AbortSignal,
  template?: PromptTemplate,
  world: World = SINGLE_PROCESS,
): Promise<StageScores> {
  const rows = await evaluateModel(model, set, {
    world,
    tasks,
    split: 'test',
    maxInstancesPerTask: config.eval.maxInstancesPerTask,
    maxNewTokens: config.eval.maxNewTokens,
    batchSize: config.eval.batchSize,
    template,
    signal,
    onProgress,
  });
  if (world.rank === 0) await writePredictions(out, rows, { fingerprint: taskSetFingerprint(set) });
  return { tasks: summarizeTasks(rows, set) };
}

/** The per-task summary of a stored evaluation. */
export async function readStageScores(path: string, set: TaskSet): Promise<StageScores> {
  const rows = await readPredictions(path);
  return { tasks: summarizeTasks(rows, set) };
}

/** The listening probe of one task (docs/eval.md): how often the answer follows the instruction given. */
export interface ProbeSummary {
  task_id: string;
  /** Probes asked. */
  n: number;
  /** Share of answers equal to the answer of the probe's own (changed) instruction. */
  follow: number;
  /** Share of answers equal to the answer of the original test instance's instruction: the key parts were not read. */
  stale: number;
}

export interface ProbeScores {
  tasks: ProbeSummary[];
}

/**
 * The listening probe: the `probe` instances of `tasks` (each a test input asked with other key
 * values) are answered by greedy generation; an answer *follows* when it exact-matches the
 * probe's own output and is *stale* when it exact-matches the output of the test instance it
 * changes (`probe_of`), i.e. the model answered the instruction it was trained on rather than the
 * one it was given. Writes the predictions to `out` (.arrow) and the summary next to it (.json);
 * returns null without writing when none of the tasks has probes.
 *
 * @example
 * const p = await evaluateProbes(model, set, stream.held_out, config, 'run/stage-01/probe.arrow');
 */
export async function evaluateProbes(
  model: Model,
  set: TaskSet,
  tasks: string[],
  config: RunConfig,
  out: string,
  signal?: AbortSignal,
  template?: PromptTemplate,
  world: World = SINGLE_PROCESS,
): Promise<ProbeScores | null> {
  const withProbes = tasks.filter((t) => set.instances.some((x) => x.task_id === t && x.split === 'probe'));
  if (withProbes.length === 0) return null;
  const rows = await evaluateModel(model, set, {
    tasks: withProbes,
    split: 'probe',
    world,
    maxInstancesPerTask: config.eval.maxInstancesPerTask,
    maxNewTokens: config.eval.maxNewTokens,
    batchSize: config.eval.batchSize,
    template,
    signal,
  });
  const scores = probeScores(rows, set);
  if (world.rank === 0) {
    await writePredictions(out, rows, { fingerprint: taskSetFingerprint(set) });
    await writeJsonAtomic(out.replace(/\.arrow$/, '.json'), scores);
  }
  return scores;
}

/**
 * Follow and stale shares per task of probe predictions.
 *
 * @throws InputError when a row is not a probe of `set`
 * @example
 * const { tasks } = probeScores(await readPredictions('run/stage-02/probe.arrow'), set);
 */
export function probeScores(rows: readonly PredictionRow[], set: TaskSet): ProbeScores {
  const byKey = new Map(set.instances.map((x) => [`${x.task_id}\u0000${x.instance_id}`, x]));
  const groups = new Map<string, { n: number; follow: number; stale: number }>();
  for (const r of rows) {
    const probe = byKey.get(`${r.task_id}\u0000${r.instance_id}`);
    if (!probe || probe.split !== 'probe' || probe.probe_of == null) throw new InputError(`probe prediction for '${r.task_id}/${r.instance_id}', which is not a probe of the task set`);
    const original = byKey.get(`${r.task_id}\u0000${probe.probe_of}`)!;
    const g = groups.get(r.task_id) ?? { n: 0, follow: 0, stale: 0 };
    g.n++;
    g.follow += exactMatch(r.prediction, probe.outputs);
    g.stale += exactMatch(r.prediction, original.outputs);
    groups.set(r.task_id, g);
  }
  return { tasks: [...groups].map(([task_id, g]) => ({ task_id, n: g.n, follow: g.follow / g.n, stale: g.stale / g.n })) };
}

/**
 * Listening over `tasks`: the mean follow share of their probes (macro average; null when none of
 * them has probes).
 *
 * @example
 * listening(probeScores(rows, set).tasks, stream.held_out); // 0.42
 */
export function listening(probes: readonly ProbeSummary[] | null, tasks: readonly string[]): number | null {
  const xs = (probes ?? []).filter((p) => tasks.includes(p.task_id)).map((p) => p.follow);
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null;
}
