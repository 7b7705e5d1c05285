/**
 * Prediction tables: one row per evaluated instance (task_id, instance_id, prediction, references,
 * valid, rouge_l, exact_match), stored as an Arrow IPC file whose schema metadata names the kind,
 * the schema version and the fingerprint of the task set the predictions were made for. The
 * per-task summary every report and score matrix is built from lives here too.
 */
import { createHash } from 'node:crypto';
import { Bool, Field, Float64, List, RecordBatch, Schema, Struct, Table, Utf8, makeData, tableToIPC, vectorFromArray, type DataType } from 'apache-arrow';
import type { TaskSet } from '../data/taskset.js';
import { InputError } from '../errors/index.js';
import { outputFormat, readArrowTable } from '../io/arrow.js';
import { writeFileAtomic } from '../io/atomic.js';
import { writeParquetTable } from '../io/parquet.js';
import { exactMatch, isValidOutput } from './metrics.js';
import { constantAnswerRate } from './stats.js';
import { rougeL } from './rouge.js';

export const PREDICTIONS_SCHEMA_VERSION = 1;

/** One evaluated instance. Scores are in [0, 1]. */
export interface PredictionRow {
  task_id: string;
  instance_id: string;
  prediction: string;
  references: string[];
  /** Inside the task's label set; null when the task has no label set. */
  valid: boolean | null;
  rouge_l: number;
  exact_match: number;
}

/** What a prediction file says about itself. */
export interface PredictionMeta {
  /** {@link taskSetFingerprint} of the task set the predictions were made for. */
  fingerprint: string;
  /** Free-form provenance (model folder, split, ...), stored as `kpig.<key>` metadata entries. */
  extra?: Record<string, string>;
}

const COLUMNS: [string, DataType, boolean][] = [
  ['task_id', new Utf8(), false],
  ['instance_id', new Utf8(), false],
  ['prediction', new Utf8(), false],
  ['references', new List(new Field('item', new Utf8(), false)), false],
  ['valid', new Bool(), true],
  ['rouge_l', new Float64(), false],
  ['exact_match', new Float64(), false],
];

/**
 * Identity of a task set's content: sha256 (hex) over a versioned text with one line per task
 * (task_id and label set) and one per instance (task_id, instance_id, split, reference outputs),
 * each a JSON array, lines sorted by code unit. Instruction texts and streams are left out: they
 * do not change what a prediction is scored against.
 *
 * @example
 * const fp = taskSetFingerprint(await readTaskSet('data/dev')); // '3f5a…' (64 hex digits)
 */
export function taskSetFingerprint(set: TaskSet): string {
  const lines: string[] = [];
  for (const t of set.tasks) lines.push(JSON.stringify(['task', t.task_id, t.label_set]));
  for (const r of set.instances) lines.push(JSON.stringify(['instance', r.task_id, r.instance_id, r.split, r.outputs]));
  lines.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return createHash('sha256').update(`kpig-taskset-fingerprint-v1\n${lines.join('\n')}\n`).digest('hex');
}

/**
 * The metric fields of a prediction: ROUGE-L and exact match against `references`, and validity
 * against the task's label set (null without one).
 *
 * @example
 * scorePrediction('Yes.', ['yes'], ['yes', 'no']); // { valid: true, rouge_l: 1, exact_match: 1 }
 */
export function scorePrediction(prediction: string, references: readonly string[], labelSet: readonly string[] | null): Pick<PredictionRow, 'valid' | 'rouge_l' | 'exact_match'> {
  return {
    valid: labelSet && labelSet.length > 0 ? isValidOutput(prediction, labelSet) : null,
    rouge_l: rougeL(prediction, references),
    exact_match: exactMatch(prediction, references),
  };
}

/**
 * Writes prediction rows as an Arrow IPC file (or Parquet, for a name ending in `.parquet`), atomically.
 *
 * @example
 * await writePredictions('out/eval.arrow', rows, { fingerprint: taskSetFingerprint(set) });
 */
export async function writePredictions(path: string, rows: readonly PredictionRow[], meta: PredictionMeta): Promise<void> {
  if (!/^[0-9a-f]{64}$/.test(meta.fingerprint)) throw new InputError(`writePredictions: fingerprint must be 64 hex digits (taskSetFingerprint), got '${meta.fingerprint}'`);
  const metadata = new Map<string, string>([
    ['kpig.kind', 'predictions'],
    ['kpig.schema_version', String(PREDICTIONS_SCHEMA_VERSION)],
    ['kpig.taskset_fingerprint', meta.fingerprint],
  ]);
  for (const [k, v] of Object.entries(meta.extra ?? {})) metadata.set(`kpig.${k}`, v);
  const fields = COLUMNS.map(([name, type, nullable]) => new Field(name, type, nullable));
  const children = COLUMNS.map(([name, type]) => vectorFromArray(rows.map((r) => r[name as keyof PredictionRow]) as unknown[], type).data[0]);
  const schema = new Schema(fields, metadata);
  const data = makeData({ type: new Struct(fields), length: rows.length, nullCount: 0, children });
  const table = new Table(schema, [new RecordBatch(schema, data)]);
  if (outputFormat(path) === 'parquet') await writeParquetTable(path, table);
  else await writeFileAtomic(path, tableToIPC(table, 'file'));
}

/**
 * Reads a prediction file with its metadata, checking kind, schema version and columns.
 *
 * @throws KpigIOError when the file cannot be read
 * @throws InputError when it is not a kpig prediction table
 * @example
 * const { rows, meta } = await readPredictionFile('run/stage-01/eval.arrow');
 */
export async function readPredictionFile(path: string): Promise<{ rows: PredictionRow[]; meta: PredictionMeta }> {
  const table = await readArrowTable(path);
  const md = table.schema.metadata;
  if (md.get('kpig.kind') !== 'predictions') throw new InputError(`${path}: not a kpig prediction table (kpig.kind is ${md.get('kpig.kind') ?? 'missing'})`);
  const version = Number(md.get('kpig.schema_version'));
  if (version !== PREDICTIONS_SCHEMA_VERSION) throw new InputError(`${path}: prediction schema version ${md.get('kpig.schema_version')}; this build reads version ${PREDICTIONS_SCHEMA_VERSION}`);
  const fingerprint = md.get('kpig.taskset_fingerprint');
  if (!fingerprint) throw new InputError(`${path}: no kpig.taskset_fingerprint in the schema metadata`);
  const names = table.schema.fields.map((f) => f.name);
  const missing = COLUMNS.map(([c]) => c).filter((c) => !names.includes(c));
  if (missing.length) throw new InputError(`${path}: missing column(s) ${missing.join(', ')} (columns: ${names.join(', ')})`);
  const col = (name: string) => table.getChild(name)!;
  const [task, inst, pred, refs, valid, rouge, em] = COLUMNS.map(([c]) => col(c));
  const rows: PredictionRow[] = [];
  for (let i = 0; i < table.numRows; i++) {
    const r = refs.get(i) as { toArray(): string[] } | null;
    rows.push({
      task_id: task.get(i) as string,
      instance_id: inst.get(i) as string,
      prediction: pred.get(i) as string,
      references: r ? Array.from(r.toArray()) : [],
      valid: (valid.get(i) as boolean | null) ?? null,
      rouge_l: rouge.get(i) as number,
      exact_match: em.get(i) as number,
    });
  }
  const extra: Record<string, string> = {};
  for (const [k, v] of md) if (k.startsWith('kpig.') && !['kpig.kind', 'kpig.schema_version', 'kpig.taskset_fingerprint'].includes(k)) extra[k.slice(5)] = v;
  return { rows, meta: { fingerprint, extra } };
}

/**
 * Reads the rows of a prediction file. With `expect` (a task set or its fingerprint) a file made
 * for another task set is rejected.
 *
 * @throws InputError when the file is not a prediction table or its fingerprint differs from `expect`
 * @example
 * const rows = await readPredictions('preds.arrow', { expect: set });
 */
export async function readPredictions(path: string, options: { expect?: TaskSet | string } = {}): Promise<PredictionRow[]> {
  const { rows, meta } = await readPredictionFile(path);
  if (options.expect !== undefined) {
    const want = typeof options.expect === 'string' ? options.expect : taskSetFingerprint(options.expect);
    if (want !== meta.fingerprint)
      throw new InputError(`${path}: the predictions were made for another task set (fingerprint ${meta.fingerprint.slice(0, 12)}…, this task set is ${want.slice(0, 12)}…)`);
  }
  return rows;
}

/** Means of one task's rows. */
export interface TaskSummary {
  task_id: string;
  /** Rows (instances) of the task. */
  n: number;
  /** Mean ROUGE-L. */
  rouge_l: number;
  /** Mean exact match. */
  exact_match: number;
  /** Share of valid outputs; null for a task without a label set. */
  v_score: number | null;
  /** Share of the most frequent answer: 1 when the model gave every instance the same answer. */
  constant_rate: number;
}

function summary(task_id: string, g: readonly PredictionRow[]): TaskSummary {
  const mean = (f: (r: PredictionRow) => number) => g.reduce((s, r) => s + f(r), 0) / g.length;
  const judged = g.filter((r) => r.valid !== null);
  return {
    task_id,
    n: g.length,
    rouge_l: mean((r) => r.rouge_l),
    exact_match: mean((r) => r.exact_match),
    v_score: judged.length ? judged.filter((r) => r.valid).length / judged.length : null,
    constant_rate: constantAnswerRate(g.map((r) => r.prediction)),
  };
}

/**
 * Per-task means of prediction rows, in the order of `set.tasks`, for the tasks that have rows.
 * Every row must name a task and an instance of `set`, so rows from another task set are caught.
 *
 * @throws InputError when a row names a task or instance that `set` does not have
 * @example
 * for (const s of summarizeTasks(rows, set)) console.log(s.task_id, s.rouge_l, s.v_score);
 */
export function summarizeTasks(rows: readonly PredictionRow[], set: TaskSet): TaskSummary[] {
  const instances = new Set(set.instances.map((r) => `${r.task_id}\u0000${r.instance_id}`));
  const groups = new Map<string, PredictionRow[]>(set.tasks.map((t) => [t.task_id, []]));
  for (const r of rows) {
    const g = groups.get(r.task_id);
    if (!g) throw new InputError(`prediction for task '${r.task_id}', which the task set does not have: the predictions belong to another task set`);
    if (!instances.has(`${r.task_id}\u0000${r.instance_id}`))
      throw new InputError(`prediction for instance '${r.instance_id}' of task '${r.task_id}', which the task set does not have: the predictions belong to another task set`);
    g.push(r);
  }
  return [...groups].filter(([, g]) => g.length > 0).map(([task, g]) => summary(task, g));
}

/**
 * Per-task means of prediction rows without a task set to check them against (as a run report
 * reads them), in the order tasks first appear.
 *
 * @example
 * const byTask = summarizeRows(await readPredictions('run/base/eval.arrow'));
 */
export function summarizeRows(rows: readonly PredictionRow[]): TaskSummary[] {
  const groups = new Map<string, PredictionRow[]>();
  for (const r of rows) {
    let g = groups.get(r.task_id);
    if (!g) groups.set(r.task_id, (g = []));
    g.push(r);
  }
  return [...groups].map(([task, g]) => summary(task, g));
}
