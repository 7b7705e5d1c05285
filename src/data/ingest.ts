/**
 * One entry point for every input format, chosen by the path: a folder of SuperNI task files, a
 * task-set folder written by kpig, a JSONL, Arrow IPC or Parquet file of rows; and a readable
 * summary of a task set (what `kpig data show` prints).
 */
import { stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { InputError, KpigIOError } from '../errors/index.js';
import { importArrow, importJsonl, importParquet, type RowImportOptions } from './rows.js';
import { readTaskSet } from './store.js';
import { importSuperNI } from './superni.js';
import type { TaskSet } from './taskset.js';

export type DataFormat = 'superni' | 'taskset' | 'jsonl' | 'arrow' | 'parquet';

/**
 * The format of `path`: a folder holding `tasks.arrow` is a task set, any other folder SuperNI;
 * files go by extension.
 *
 * @throws InputError for an unknown extension; KpigIOError when the path does not exist
 * @example
 * await detectFormat('../shared/data/superni-dev'); // 'superni'
 */
export async function detectFormat(path: string): Promise<DataFormat> {
  const st = await stat(path).catch((err: Error) => {
    throw new KpigIOError(`cannot read ${path}: ${err.message}`, { cause: err });
  });
  if (st.isDirectory()) return (await stat(join(path, 'tasks.arrow')).catch(() => null)) ? 'taskset' : 'superni';
  const ext = extname(path).toLowerCase();
  if (ext === '.jsonl' || ext === '.ndjson') return 'jsonl';
  if (ext === '.arrow' || ext === '.feather' || ext === '.ipc' || ext === '.arrows') return 'arrow';
  if (ext === '.parquet' || ext === '.pq') return 'parquet';
  throw new InputError(`${path}: unknown data format '${ext}' (use a SuperNI folder, .jsonl, .arrow or .parquet)`);
}

/**
 * Imports any supported input into a task set (see {@link detectFormat}); `options.format` overrides
 * the detection.
 *
 * @example
 * const set = await importData('rows.parquet', { fields: { instruction: 'prompt' }, testFraction: 0.2, seed: 1 });
 */
export async function importData(path: string, options: RowImportOptions & { format?: DataFormat } = {}): Promise<TaskSet> {
  const format = options.format ?? (await detectFormat(path));
  switch (format) {
    case 'superni':
      return importSuperNI(path, options);
    case 'taskset':
      return readTaskSet(path);
    case 'jsonl':
      return importJsonl(path, options);
    case 'arrow':
      return importArrow(path, options);
    case 'parquet':
      return importParquet(path, options);
  }
}

/** Counts and label spaces of one task, as {@link summarizeTaskSet} reports them. */
export interface TaskSummary {
  task_id: string;
  kind: string;
  source: string;
  train: number;
  test: number;
  instructions: number;
  label_set: string[] | null;
  /** The key parts of the seed instruction, as text. */
  key_parts: { kind: string; text: string }[];
}

/**
 * Per-task counts, label sets and seed key parts of a task set.
 *
 * @example
 * for (const t of summarizeTaskSet(set)) console.log(t.task_id, t.train, t.test, t.label_set);
 */
export function summarizeTaskSet(set: TaskSet): TaskSummary[] {
  return set.tasks.map((t) => {
    const inst = set.instances.filter((x) => x.task_id === t.task_id);
    const instructions = set.instructions.filter((r) => r.task_id === t.task_id);
    const seed = instructions.find((r) => r.origin === 'seed');
    return {
      task_id: t.task_id,
      kind: t.kind,
      source: t.source,
      train: inst.filter((x) => x.split === 'train').length,
      test: inst.filter((x) => x.split === 'test').length,
      instructions: instructions.length,
      label_set: t.label_set,
      key_parts: seed ? seed.key_spans.map((s) => ({ kind: s.kind ?? 'other', text: seed.text.slice(s.start, s.end) })) : [],
    };
  });
}
