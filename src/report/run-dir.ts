/**
 * Reading a run directory (the layout the continual-run engine writes, docs/eval.md) into the
 * numbers a report shows. Whatever exists is read; whatever is absent is listed in `missing`, and
 * files that exist but cannot be used (unreadable, or predictions for another task set) in
 * `problems`, so an interrupted or failed run still gets a report of what it did.
 */
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { readTaskSet } from '../data/store.js';
import { KpigError, KpigIOError } from '../errors/index.js';
import { matrixMetrics, type MatrixMetrics } from '../eval/matrix.js';
import { pScore, vScore, type PScore, type TaskScores } from '../eval/metrics.js';
import { readPredictionFile, summarizeRows, type PredictionRow, type TaskSummary } from '../eval/predictions.js';
import { listening, type ProbeSummary } from '../pipeline/stage-eval.js';

/** One line of a stage's train.jsonl. */
export interface TrainStep {
  stage: number;
  step: number;
  loss: number;
  ig: number | null;
  lr: number;
  tokens: number;
  tokens_per_s: number;
}

/** Scores of one evaluation (the base model, or the model after a stage). */
export interface EvalScores {
  tasks: TaskSummary[];
  /** P-score on the held-out tasks, with the retention ratio against the base model when it was evaluated. */
  p: PScore;
  vHeldOut: TaskScores;
  vSeen: TaskScores;
  /** The listening probes (probe.json beside the predictions); null when the run has none. */
  probes: ProbeSummary[] | null;
  /** Mean probe follow share over the held-out and over the seen tasks (null without probes). */
  listeningHeldOut: number | null;
  listeningSeen: number | null;
}

export interface StageRecord {
  /** 1..T. */
  stage: number;
  /** The seen task this stage trains. */
  task_id: string | null;
  /** done.json was written: the stage finished. */
  complete: boolean;
  done: Record<string, unknown> | null;
  steps: TrainStep[];
  eval: EvalScores | null;
}

export interface RunStatus {
  state: string;
  stages_done: number | null;
  stages_total: number | null;
  error?: string;
}

export interface RunData {
  dir: string;
  name: string;
  strategy: string | null;
  config: Record<string, unknown> | null;
  environment: Record<string, unknown> | null;
  status: RunStatus | null;
  seen: string[];
  heldOut: string[];
  /** T, the number of stages the run was to have. */
  stagesTotal: number;
  base: EvalScores | null;
  stages: StageRecord[];
  /** Fingerprint of the task set of the run's predictions (the first file read). */
  fingerprint: string | null;
  /** Absent files, relative to `dir`, each with what its absence means. */
  missing: string[];
  /** Present but unusable files, and run-level failures. */
  problems: string[];
  /** The score behind the matrix. */
  metric: 'rouge_l';
  /** (T+1) × T: mean ROUGE-L of seen task j after stage t (row 0: base); null where not evaluated. */
  matrix: (number | null)[][];
  /** (T+1) × H: the same for the held-out tasks. */
  heldOutMatrix: (number | null)[][];
  /** k: stages 1..k all have an evaluation; the matrix metrics cover those. */
  evaluatedStages: number;
  /** Matrix metrics over stages 0..k and seen tasks 1..k; null when k = 0. */
  metrics: MatrixMetrics | null;
}

const stageDir = (t: number) => `stage-${String(t).padStart(2, '0')}`;

async function readJson(dir: string, rel: string, missing: string[], problems: string[], why: string): Promise<Record<string, unknown> | null> {
  const path = join(dir, rel);
  if (!existsSync(path)) {
    missing.push(`${rel} (${why})`);
    return null;
  }
  try {
    const v = JSON.parse(await readFile(path, 'utf8')) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (err) {
    problems.push(`${rel}: unreadable (${(err as Error).message})`);
    return null;
  }
}

async function readSteps(path: string, rel: string, problems: string[]): Promise<TrainStep[]> {
  const steps: TrainStep[] = [];
  const lines = (await readFile(path, 'utf8')).split('\n');
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      if (typeof o.step !== 'number' || typeof o.loss !== 'number') throw new Error('needs numeric step and loss');
      steps.push({
        stage: Number(o.stage),
        step: o.step,
        loss: o.loss,
        ig: typeof o.ig === 'number' ? o.ig : null,
        lr: Number(o.lr ?? NaN),
        tokens: Number(o.tokens ?? 0),
        tokens_per_s: Number(o.tokens_per_s ?? 0),
      });
    } catch (err) {
      problems.push(`${rel}:${i + 1}: bad line (${(err as Error).message})`);
    }
  });
  return steps;
}

function isStream(x: unknown): x is { seen: string[]; held_out?: string[] } {
  return typeof x === 'object' && x !== null && Array.isArray((x as { seen?: unknown }).seen);
}

/** The run's stream: explicit in config.json, else in results.json, else looked up in the task set config.json names. */
async function resolveStream(dir: string, config: Record<string, unknown> | null, problems: string[]): Promise<{ seen: string[]; heldOut: string[] } | null> {
  const stream = config?.stream;
  if (isStream(stream)) return { seen: stream.seen.map(String), heldOut: (stream.held_out ?? []).map(String) };
  const resultsPath = join(dir, 'results.json');
  if (existsSync(resultsPath)) {
    try {
      const r = JSON.parse(await readFile(resultsPath, 'utf8')) as { seen?: unknown; held_out?: unknown };
      if (Array.isArray(r.seen)) return { seen: r.seen.map(String), heldOut: Array.isArray(r.held_out) ? r.held_out.map(String) : [] };
    } catch {
      // fall through to the task set
    }
  }
  if (typeof stream === 'string' && typeof config?.data === 'string') {
    const data = config.data;
    const candidates = isAbsolute(data) ? [data] : [resolve(data), resolve(dir, data), resolve(dir, '..', data)];
    for (const c of candidates) {
      if (!existsSync(c)) continue;
      try {
        const set = await readTaskSet(c);
        const s = set.streams.find((x) => x.name === stream);
        if (s) return { seen: s.seen, heldOut: s.held_out };
      } catch {
        // try the next place
      }
    }
    problems.push(`config.json names stream '${stream}' of task set '${data}', which could not be read from here; seen tasks are taken from the stages' done.json`);
  }
  return null;
}

function scoresOf(rows: PredictionRow[], seen: string[], heldOut: string[], base: PredictionRow[] | null, probes: ProbeSummary[] | null): EvalScores {
  return {
    tasks: summarizeRows(rows),
    p: pScore(rows, { tasks: heldOut, base: base ?? undefined }),
    vHeldOut: vScore(rows, { tasks: heldOut }),
    vSeen: vScore(rows, { tasks: seen }),
    probes,
    listeningHeldOut: listening(probes, heldOut),
    listeningSeen: listening(probes, seen),
  };
}

/** probe.json of an evaluation folder, when the run has listening probes. */
async function readProbes(dir: string, rel: string, problems: string[]): Promise<ProbeSummary[] | null> {
  const path = join(dir, rel);
  if (!existsSync(path)) return null;
  try {
    const v = JSON.parse(await readFile(path, 'utf8')) as { tasks?: unknown };
    if (!Array.isArray(v.tasks)) throw new Error('no tasks list');
    return v.tasks as ProbeSummary[];
  } catch (err) {
    problems.push(`${rel}: unreadable (${(err as Error).message}); left out`);
    return null;
  }
}

/**
 * Reads a run directory: config, environment, status, the base model's and every stage's
 * predictions (summarised per task), training logs, and builds the stage × task ROUGE-L matrix
 * and its metrics. Never throws for a partial run; see `missing` and `problems`.
 *
 * @throws KpigIOError when `dir` is not a folder
 * @example
 * const run = await readRun('runs/kpig-seed0');
 * if (run.missing.length) console.log('incomplete:', run.missing.join('; '));
 * console.log(run.metrics?.ap, run.metrics?.bwt);
 */
export async function readRun(dir: string): Promise<RunData> {
  try {
    if (!(await stat(dir)).isDirectory()) throw new Error('not a folder');
  } catch (err) {
    throw new KpigIOError(`run directory ${dir}: ${(err as Error).message}`, { cause: err });
  }
  const missing: string[] = [];
  const problems: string[] = [];
  const config = await readJson(dir, 'config.json', missing, problems, 'the run config: name, strategy and stream unknown');
  const environment = await readJson(dir, 'environment.json', missing, problems, 'versions and machine unknown');
  const statusRaw = await readJson(dir, 'status.json', missing, problems, 'run state unknown');
  const status: RunStatus | null = statusRaw
    ? {
        state: String(statusRaw.state ?? 'unknown'),
        stages_done: typeof statusRaw.stages_done === 'number' ? statusRaw.stages_done : null,
        stages_total: typeof statusRaw.stages_total === 'number' ? statusRaw.stages_total : null,
        ...(typeof statusRaw.error === 'string' ? { error: statusRaw.error } : {}),
      }
    : null;
  if (status?.state === 'failed') problems.push(`the run failed${status.error ? `: ${status.error}` : ''}`);

  const stream = await resolveStream(dir, config, problems);
  let T = status?.stages_total ?? stream?.seen.length ?? 0;
  if (T === 0) while (existsSync(join(dir, stageDir(T + 1)))) T++;
  const seen = stream?.seen ?? [];
  const heldOut = stream?.heldOut ?? [];

  let fingerprint: string | null = null;
  let fingerprintFile = '';
  const loadRows = async (rel: string, why: string): Promise<PredictionRow[] | null> => {
    const path = join(dir, rel);
    if (!existsSync(path)) {
      missing.push(`${rel} (${why})`);
      return null;
    }
    try {
      const { rows, meta } = await readPredictionFile(path);
      if (fingerprint === null) {
        fingerprint = meta.fingerprint;
        fingerprintFile = rel;
      } else if (meta.fingerprint !== fingerprint) {
        problems.push(`${rel}: predictions for another task set than ${fingerprintFile} (fingerprint ${meta.fingerprint.slice(0, 12)}… vs ${fingerprint.slice(0, 12)}…); left out`);
        return null;
      }
      return rows;
    } catch (err) {
      if (!(err instanceof KpigError)) throw err;
      problems.push(`${rel}: ${err.message.replace(`${path}: `, '')}; left out`);
      return null;
    }
  };

  const baseRows = await loadRows(join('base', 'eval.arrow'), 'the base model was not evaluated: no stage-0 row, no FWT vs base, no P retention');
  const stages: StageRecord[] = [];
  for (let t = 1; t <= T; t++) {
    const sd = stageDir(t);
    const plannedTask = seen[t - 1] ?? null;
    if (!existsSync(join(dir, sd))) {
      missing.push(`${sd}/ (stage ${t} of ${T}${plannedTask ? `, task ${plannedTask}` : ''}: not started)`);
      stages.push({ stage: t, task_id: plannedTask, complete: false, done: null, steps: [], eval: null });
      continue;
    }
    const done = await readJson(dir, join(sd, 'done.json'), missing, problems, `stage ${t} did not finish`);
    const trainPath = join(dir, sd, 'train.jsonl');
    let steps: TrainStep[] = [];
    if (existsSync(trainPath)) steps = await readSteps(trainPath, join(sd, 'train.jsonl'), problems);
    else missing.push(`${join(sd, 'train.jsonl')} (no training log for stage ${t})`);
    const rows = await loadRows(join(sd, 'eval.arrow'), `stage ${t} was not evaluated`);
    const doneTask = done && typeof (done.task_id ?? done.task) === 'string' ? String(done.task_id ?? done.task) : null;
    if (plannedTask && doneTask && plannedTask !== doneTask) problems.push(`${sd}/done.json: trained task ${doneTask}, but the stream puts ${plannedTask} at stage ${t}`);
    stages.push({
      stage: t,
      task_id: plannedTask ?? doneTask,
      complete: done !== null,
      done,
      steps,
      eval: rows ? scoresOf(rows, seen, heldOut, baseRows, await readProbes(dir, join(sd, 'probe.json'), problems)) : null,
    });
  }
  const seenTasks = seen.length ? seen : stages.map((s) => s.task_id ?? `stage ${s.stage}`);
  const base = baseRows ? scoresOf(baseRows, seenTasks, heldOut, null, await readProbes(dir, join('base', 'probe.json'), problems)) : null;

  const rowOf = (e: EvalScores | null, tasks: string[]) => {
    const by = new Map(e?.tasks.map((s) => [s.task_id, s.rouge_l]) ?? []);
    return tasks.map((t) => (by.has(t) ? by.get(t)! : null));
  };
  const evals = [base, ...stages.map((s) => s.eval)];
  const matrix = evals.map((e) => rowOf(e, seenTasks));
  const heldOutMatrix = evals.map((e) => rowOf(e, heldOut));
  let k = 0;
  while (k < stages.length && stages[k].eval) k++;
  const metrics = k > 0 ? matrixMetrics(matrix.slice(0, k + 1).map((r) => r.slice(0, k))) : null;
  const strategy = config && typeof config.strategy === 'object' && config.strategy !== null ? String((config.strategy as { name?: unknown }).name ?? '') || null : null;
  return {
    dir,
    name: typeof config?.name === 'string' ? config.name : resolve(dir).split(/[\\/]/).pop()!,
    strategy,
    config,
    environment,
    status,
    seen: seenTasks,
    heldOut,
    stagesTotal: T,
    base,
    stages,
    fingerprint,
    missing,
    problems,
    metric: 'rouge_l',
    matrix,
    heldOutMatrix,
    evaluatedStages: k,
    metrics,
  };
}
