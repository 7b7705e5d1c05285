/**
 * Evaluation inside a run: the current model on every seen and held-out task's test split, the
 * predictions written as Arrow (the format of `kpig eval`), and the per-task summary the stage
 * loop and the score matrix use.
 */
import type { TaskSet } from '../data/taskset.js';
import { evaluateModel } from '../eval/evaluate.js';
import { readPredictions, summarizeTasks, taskSetFingerprint, writePredictions, type TaskSummary } from '../eval/predictions.js';
import type { Model } from '../model/model.js';
import type { RunConfig } from './config.js';

export interface StageScores {
  tasks: TaskSummary[];
}

/**
 * Evaluates `model` on `tasks`, writes the predictions to `out` and returns the per-task summary.
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
): Promise<StageScores> {
  const rows = await evaluateModel(model, set, {
    tasks,
    split: 'test',
    maxInstancesPerTask: config.eval.maxInstancesPerTask,
    maxNewTokens: config.eval.maxNewTokens,
    batchSize: config.eval.batchSize,
    signal,
    onProgress,
  });
  await writePredictions(out, rows, { fingerprint: taskSetFingerprint(set) });
  return { tasks: summarizeTasks(rows, set) };
}

/** The per-task summary of a stored evaluation. */
export async function readStageScores(path: string, set: TaskSet): Promise<StageScores> {
  const rows = await readPredictions(path);
  return { tasks: summarizeTasks(rows, set) };
}
