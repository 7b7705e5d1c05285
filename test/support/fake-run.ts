/**
 * A small run directory in the layout the continual-run engine writes (config.json,
 * environment.json, status.json, base/eval.arrow, stage-NN/{train.jsonl, eval.arrow, done.json}),
 * with predictions chosen so every score is known by hand: on task k after stage t the first
 * correct[t][k] test instances are answered right, the next invalid[t][k] with a word outside
 * the label set, and the rest with the wrong label (ROUGE-L 0 between any two labels of tinyTaskSet).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TaskSet } from '../../src/data/taskset.js';
import { scorePrediction, taskSetFingerprint, writePredictions, type PredictionRow } from '../../src/eval/predictions.js';

export interface FakeRunOptions {
  set: TaskSet;
  /** (T+1) rows (base, stage 1..T) × tasks of the stream (seen then held-out): right answers. */
  correct: number[][];
  /** Same shape: answers outside the label set (default none). */
  invalid?: number[][];
  /** Stages whose files are complete (default: all T). */
  stagesDone?: number;
  /** Also write stage-(stagesDone+1)/train.jsonl without eval.arrow and done.json, as a killed stage leaves it. */
  partialStage?: boolean;
  /** Optimizer steps per stage (default 6). */
  steps?: number;
  /** Log IG per step (default true). */
  ig?: boolean;
  name?: string;
  strategy?: string;
  /** Write the predictions with this fingerprint instead of the set's. */
  fingerprint?: string;
  /** Leave out the base model's evaluation. */
  noBase?: boolean;
}

const pad = (t: number) => `stage-${String(t).padStart(2, '0')}`;

/** Prediction rows of one evaluation, by the scheme in the file comment. */
export function fakeRows(set: TaskSet, tasks: string[], correct: number[], invalid: number[]): PredictionRow[] {
  const rows: PredictionRow[] = [];
  tasks.forEach((task, k) => {
    const labels = set.tasks.find((t) => t.task_id === task)!.label_set!;
    const insts = set.instances.filter((r) => r.task_id === task && r.split === 'test');
    insts.forEach((inst, i) => {
      const right = inst.outputs[0];
      const prediction = i < correct[k] ? right : i < correct[k] + invalid[k] ? 'banana split' : labels.find((l) => l !== right)!;
      rows.push({ task_id: task, instance_id: inst.instance_id, prediction, references: inst.outputs, ...scorePrediction(prediction, inst.outputs, labels) });
    });
  });
  return rows;
}

/**
 * Writes the fake run into `dir` and returns the stream's seen and held-out tasks.
 *
 * @example
 * await writeFakeRun('/tmp/run', { set: tinyTaskSet(), correct: [[1, 0, 1, 2], [4, 1, 0, 2], [3, 4, 1, 3], [2, 3, 4, 2]] });
 */
export async function writeFakeRun(dir: string, o: FakeRunOptions): Promise<{ seen: string[]; held_out: string[] }> {
  const stream = o.set.streams[0];
  const tasks = [...stream.seen, ...stream.held_out];
  const T = stream.seen.length;
  const done = o.stagesDone ?? T;
  const invalid = o.invalid ?? o.correct.map((r) => r.map(() => 0));
  const fingerprint = o.fingerprint ?? taskSetFingerprint(o.set);
  const steps = o.steps ?? 6;
  await mkdir(dir, { recursive: true });
  const json = (rel: string, v: unknown) => writeFile(join(dir, rel), `${JSON.stringify(v, null, 2)}\n`);
  await json('config.json', { name: o.name ?? 'fake', strategy: { name: o.strategy ?? 'kpig', m: 2 }, stream: { seen: stream.seen, held_out: stream.held_out }, seed: 7 });
  await json('environment.json', { kpig_version: '0.1.0', node: 'v20.0.0', cpu: 'test cpu', threads: 2, seed: 7 });
  await json('status.json', { state: done === T ? 'done' : 'running', stages_done: done, stages_total: T });
  if (!o.noBase) {
    await mkdir(join(dir, 'base'), { recursive: true });
    await writePredictions(join(dir, 'base', 'eval.arrow'), fakeRows(o.set, tasks, o.correct[0], invalid[0]), { fingerprint });
  }
  const trainLog = (t: number) =>
    Array.from({ length: steps }, (_, s) => JSON.stringify({ stage: t, step: s + 1, loss: 2 / (t + s + 1), ig: o.ig === false ? null : 0.1 * t + 0.01 * s, lr: 1e-3, tokens: 100, tokens_per_s: 500 })).join('\n') + '\n';
  for (let t = 1; t <= Math.min(T, done + (o.partialStage ? 1 : 0)); t++) {
    await mkdir(join(dir, pad(t)), { recursive: true });
    await writeFile(join(dir, pad(t), 'train.jsonl'), trainLog(t));
    if (t > done) break;
    await writePredictions(join(dir, pad(t), 'eval.arrow'), fakeRows(o.set, tasks, o.correct[t], invalid[t]), { fingerprint });
    await json(join(pad(t), 'done.json'), { stage: t, task: stream.seen[t - 1], seconds: 1.5 * t });
  }
  return { seen: stream.seen, held_out: stream.held_out };
}
