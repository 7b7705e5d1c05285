/**
 * Ingest of row-shaped data (JSONL, Arrow IPC, Parquet): one row per instance, with a field mapping
 * that says which field holds the task id, instruction, input, output(s), instance id, split and
 * explicit key parts. Rows of one task share one instruction (its seed); without a task field each
 * distinct instruction is a task of its own.
 */
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, extname } from 'node:path';
import { createInterface } from 'node:readline';
import { type Table } from 'apache-arrow';
import { arrowTableFromBytes, parquetRows } from '../io/arrow.js';
import { InputError, KpigIOError } from '../errors/index.js';
import { parseKeySpans } from '../keyparts/explicit.js';
import { parseJson } from './json.js';
import { detectLabelSet } from './labels.js';
import { splitTask } from './split.js';
import { seedInstruction, type ImportOptions } from './superni.js';
import type { KeySpan, Split, TaskSet } from './taskset.js';

/** Which field of a row holds each part. Unset entries use the default name when the data has it. */
export interface FieldMapping {
  /** Default `task_id`; without it, each distinct instruction is one task. */
  task?: string;
  /** Default `instruction`; required. */
  instruction?: string;
  /** Default `input`; may be absent (empty input). */
  input?: string;
  /** Default `output`, else `outputs`; a string or a list of accepted outputs; required. */
  output?: string;
  /** Default `instance_id`, else `id`; absent: the row number. */
  id?: string;
  /** Default `split` (`train` / `test`); absent: a seeded split. */
  split?: string;
  /** Default `key_spans`: offsets `{start, end, kind?}`, `[start, end]` pairs or key phrases. */
  keyParts?: string;
}

export interface RowImportOptions extends ImportOptions {
  fields?: FieldMapping;
  /** Task id when there is no task field and one instruction (default: the file name without extension). */
  taskId?: string;
}

type Row = Record<string, unknown>;

const DEFAULTS: Record<keyof FieldMapping, string[]> = {
  task: ['task_id'],
  instruction: ['instruction'],
  input: ['input'],
  output: ['output', 'outputs'],
  id: ['instance_id', 'id'],
  split: ['split'],
  keyParts: ['key_spans'],
};

/** Field name per part, decided from the available names; a mapped name that is missing is an error. */
function resolveFields(available: readonly string[], mapping: FieldMapping, where: string): Partial<Record<keyof FieldMapping, string>> {
  const out: Partial<Record<keyof FieldMapping, string>> = {};
  for (const part of Object.keys(DEFAULTS) as (keyof FieldMapping)[]) {
    const named = mapping[part];
    if (named !== undefined) {
      if (!available.includes(named))
        throw new InputError(`${where}: the field mapping names '${named}' for ${part}, but there is no such field (fields: ${available.join(', ') || 'none'})`);
      out[part] = named;
    } else {
      const found = DEFAULTS[part].find((n) => available.includes(n));
      if (found) out[part] = found;
    }
  }
  for (const part of ['instruction', 'output'] as const)
    if (!out[part]) throw new InputError(`${where}: no ${part} field (looked for ${DEFAULTS[part].map((n) => `'${n}'`).join(', ')}; map another with fields.${part}) (fields: ${available.join(', ') || 'none'})`);
  return out;
}

interface Parsed {
  task: string | null;
  instruction: string;
  input: string;
  outputs: string[];
  id: string | null;
  split: Split | null;
  keyParts: unknown;
  where: string;
}

function parseRow(row: Row, f: Partial<Record<keyof FieldMapping, string>>, where: string): Parsed {
  const str = (part: keyof FieldMapping, required: boolean): string | null => {
    const name = f[part];
    const v = name === undefined ? undefined : row[name];
    if (v === undefined || v === null) {
      if (required) throw new InputError(`${where}: field '${name}' (${part}) is missing`);
      return null;
    }
    if (typeof v === 'number' || typeof v === 'bigint') return String(v);
    if (typeof v !== 'string') throw new InputError(`${where}: field '${name}' (${part}) must be a string, got ${Array.isArray(v) ? 'a list' : typeof v}`);
    return v;
  };
  const outName = f.output!;
  const out = row[outName];
  let outputs: string[];
  if (typeof out === 'string') outputs = [out];
  else if (Array.isArray(out) && out.length > 0 && out.every((o) => typeof o === 'string')) outputs = out as string[];
  else throw new InputError(`${where}: field '${outName}' (output) must be a string or a non-empty list of strings, got ${JSON.stringify(out)?.slice(0, 60) ?? 'nothing'}`);
  const split = str('split', false);
  if (split !== null && split !== 'train' && split !== 'test') throw new InputError(`${where}: field '${f.split}' (split) must be 'train' or 'test', got '${split}'`);
  return {
    task: str('task', f.task !== undefined),
    instruction: str('instruction', true)!,
    input: str('input', false) ?? '',
    outputs,
    id: str('id', false),
    split: split as Split | null,
    keyParts: f.keyParts ? row[f.keyParts] : undefined,
    where,
  };
}

/** Builds a task set from parsed rows, grouped into tasks. */
function assemble(rows: Parsed[], source: string, file: string, options: RowImportOptions): TaskSet {
  if (rows.length === 0) throw new InputError(`${file}: no rows`);
  const base = options.taskId ?? basename(file, extname(file));
  const byInstruction = new Map<string, string>();
  if (rows.some((r) => r.task === null)) {
    const distinct = [...new Set(rows.map((r) => r.instruction))];
    distinct.forEach((text, k) => byInstruction.set(text, distinct.length === 1 ? base : `${base}-${k}`));
  }
  const groups = new Map<string, Parsed[]>();
  for (const r of rows) {
    const id = r.task ?? byInstruction.get(r.instruction)!;
    if (!groups.has(id)) groups.set(id, []);
    groups.get(id)!.push(r);
  }
  const set: TaskSet = { tasks: [], instructions: [], instances: [], streams: [] };
  for (const [taskId, group] of groups) {
    const other = group.find((r) => r.instruction !== group[0].instruction);
    if (other) throw new InputError(`${other.where}: task '${taskId}' has another instruction than at ${group[0].where}; give each instruction its own task id`);
    const ids = group.map((r, i) => r.id ?? String(i));
    const seen = new Map<string, string>();
    group.forEach((r, i) => {
      if (seen.has(ids[i])) throw new InputError(`${r.where}: instance id '${ids[i]}' of task '${taskId}' repeats ${seen.get(ids[i])}`);
      seen.set(ids[i], r.where);
    });
    const given = group.filter((r) => r.split !== null).length;
    if (given > 0 && given < group.length) throw new InputError(`${group.find((r) => r.split === null)!.where}: the split field is missing here but set on other rows of task '${taskId}'`);
    const seed = seedInstruction(taskId, group[0].instruction, options.keyParts);
    if (group[0].keyParts !== undefined && group[0].keyParts !== null) {
      const spans: KeySpan[] = parseKeySpans(group[0].keyParts, group[0].instruction, group[0].where);
      Object.assign(seed, { key_spans: spans, key_source: 'explicit' });
    }
    const labelSet = detectLabelSet(seed.text, { outputs: group.flatMap((r) => r.outputs), minCoverage: options.labelCoverage });
    set.tasks.push({ task_id: taskId, kind: labelSet ? 'classification' : 'generation', label_set: labelSet, source, categories: [] });
    set.instructions.push(seed);
    for (const { index, split } of splitTask(taskId, ids, options)) {
      const r = group[index];
      set.instances.push({ task_id: taskId, instance_id: ids[index], split: r.split ?? split, input: r.input, outputs: r.outputs });
    }
  }
  set.streams = options.streams ?? [{ name: 'default', seen: [...groups.keys()], held_out: [] }];
  return set;
}

/**
 * Imports a JSONL file (one JSON object per line, one row per instance) with a field mapping.
 *
 * @throws InputError naming file:line(:column) for invalid JSON, a row that is not an object, a
 *   mapped field the row lacks, a value of the wrong type, or no rows at all
 * @example
 * const set = await importJsonl('data/rows.jsonl', { fields: { instruction: 'prompt', output: 'completion', task: 'source' } });
 */
export async function importJsonl(path: string, options: RowImportOptions = {}): Promise<TaskSet> {
  const rows: Parsed[] = [];
  let fields: Partial<Record<keyof FieldMapping, string>> | null = null;
  let lineNo = 0;
  try {
    const lines = createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity });
    for await (const line of lines) {
      lineNo++;
      if (!line.trim()) continue;
      const where = `${path}:${lineNo}`;
      const obj = parseJson(line, path, lineNo);
      if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new InputError(`${where}: each line must be a JSON object`);
      const names = Object.keys(obj);
      // The first row fixes which defaults apply; every later row is held to the same fields.
      fields ??= resolveFields(names, options.fields ?? {}, where);
      // Optional parts (input, id, split, key parts) may be left out of a row; required ones may not.
      for (const [part, name] of Object.entries(options.fields ?? {}))
        if (name !== undefined && ['task', 'instruction', 'output'].includes(part) && !(name in obj)) throw new InputError(`${where}: the field mapping names '${name}' for ${part}, but this row has no such field (fields: ${names.join(', ')})`);
      rows.push(parseRow(obj as Row, fields, where));
    }
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw new KpigIOError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  return assemble(rows, 'jsonl', path, options);
}

/** Plain JS values of an Arrow cell (lists to arrays). */
function plain(value: unknown): unknown {
  if (value !== null && typeof value === 'object' && 'toArray' in value && typeof (value as { toArray: unknown }).toArray === 'function')
    return Array.from((value as { toArray(): ArrayLike<unknown> }).toArray(), plain);
  if (value !== null && typeof value === 'object' && 'toJSON' in value) return (value as { toJSON(): unknown }).toJSON();
  return value;
}

async function readBytes(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new KpigIOError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

function importObjects(objects: Row[], columns: string[], source: string, path: string, options: RowImportOptions): TaskSet {
  const fields = resolveFields(columns, options.fields ?? {}, path);
  return assemble(
    objects.map((o, i) => parseRow(o, fields, `${path} row ${i}`)),
    source,
    path,
    options,
  );
}

/**
 * Imports an Arrow IPC file (file or stream format) of instance rows with a field mapping.
 *
 * @throws InputError when the file is not Arrow, a mapped column is missing, or a value has the wrong type
 * @example
 * const set = await importArrow('data/rows.arrow', { fields: { output: 'answers' } });
 */
export async function importArrow(path: string, options: RowImportOptions = {}): Promise<TaskSet> {
  const table: Table = arrowTableFromBytes(await readBytes(path), path);
  const columns = table.schema.fields.map((f) => f.name);
  const objects: Row[] = [];
  for (let i = 0; i < table.numRows; i++) {
    const row: Row = {};
    for (const c of columns) row[c] = plain(table.getChild(c)!.get(i));
    objects.push(row);
  }
  return importObjects(objects, columns, 'arrow', path, options);
}

/**
 * Imports a Parquet file of instance rows with a field mapping (read with hyparquet).
 *
 * @throws InputError when the file is not Parquet, a mapped column is missing, or a value has the wrong type
 * @example
 * const set = await importParquet('data/train-00000.parquet', { fields: { instruction: 'definition', output: 'targets' } });
 */
export async function importParquet(path: string, options: RowImportOptions = {}): Promise<TaskSet> {
  const objects = (await parquetRows(await readBytes(path), path)) as Row[];
  if (objects.length === 0) throw new InputError(`${path}: no rows`);
  const columns = Object.keys(objects[0]);
  return importObjects(objects, columns, 'parquet', path, options);
}
