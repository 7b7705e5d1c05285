/**
 * Ingest of Super-NaturalInstructions task files (`task*.json`: `Definition`, `Positive Examples`,
 * `Instances` with `output` as a list of accepted answers) into a task set. Each file is one task;
 * its Definition becomes the seed instruction, with heuristic key parts, and its label set is
 * detected from the Definition and the outputs.
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { InputError, KpigIOError } from '../errors/index.js';
import { extractKeyParts } from '../keyparts/heuristic.js';
import { parseJson } from './json.js';
import { detectLabelSet } from './labels.js';
import { splitTask, type SplitOptions } from './split.js';
import type { InstanceRecord, InstructionRecord, TaskExample, TaskRecord, TaskSet, TaskStream } from './taskset.js';

export interface ImportOptions extends SplitOptions {
  /** How seed key parts are found: the heuristic extractor (default) or not at all. */
  keyParts?: 'heuristic' | 'none';
  /** Share of outputs a detected label set must cover (see detectLabelSet; default 0.9). */
  labelCoverage?: number;
  /** Streams to store; default: the folder's manifest.json `sequence` / `held_out`, else every task in name order. */
  streams?: TaskStream[];
}

/** Where a SuperNI folder's task files are: the folder itself or its `tasks/` subfolder. */
async function taskFiles(dir: string): Promise<string[]> {
  const list = async (d: string) => (await readdir(d)).filter((n) => /^task.*\.json$/i.test(n)).sort().map((n) => join(d, n));
  let files: string[];
  try {
    files = await list(dir);
    if (files.length === 0 && (await stat(join(dir, 'tasks')).catch(() => null))?.isDirectory()) files = await list(join(dir, 'tasks'));
  } catch (err) {
    throw new KpigIOError(`cannot read the folder ${dir}: ${(err as Error).message}`, { cause: err });
  }
  if (files.length === 0) throw new InputError(`${dir}: no task*.json files (looked in the folder and in its tasks/ subfolder)`);
  return files;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function stringList(value: unknown, where: string): string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) throw new InputError(`${where} must be a list of strings, got ${JSON.stringify(value)?.slice(0, 80)}`);
  return value as string[];
}

/** One parsed SuperNI task file, before splitting. */
export interface SuperNITask {
  task: TaskRecord;
  definition: string;
  instances: { id: string; input: string; outputs: string[] }[];
}

/**
 * Parses one SuperNI task file. The task id is the file name without `.json`.
 *
 * @throws InputError naming the file (and line:column, or instance) for malformed JSON, a missing
 *   or empty `Definition`, no `Instances`, an instance whose `output` is not a non-empty list of strings
 * @example
 * const { task, definition, instances } = await readSuperNITask('tasks/task586_amazonfood_polarity_classification.json');
 */
export async function readSuperNITask(path: string, options: { labelCoverage?: number } = {}): Promise<SuperNITask> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new KpigIOError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  const json = parseJson(text, path);
  if (!isRecord(json)) throw new InputError(`${path}: a SuperNI task file must hold a JSON object`);
  const taskId = basename(path).replace(/\.json$/i, '');
  const rawDef = json.Definition;
  if (rawDef === undefined) throw new InputError(`${path}: no 'Definition' field (the task's instruction)`);
  const definition = (typeof rawDef === 'string' ? rawDef : stringList(rawDef, `${path}: 'Definition'`).join('\n')).trim();
  if (!definition) throw new InputError(`${path}: 'Definition' is empty`);
  const rawInstances = json.Instances;
  if (!Array.isArray(rawInstances)) throw new InputError(`${path}: 'Instances' must be a list, got ${rawInstances === undefined ? 'nothing' : typeof rawInstances}`);
  if (rawInstances.length === 0) throw new InputError(`${path}: the task is empty ('Instances' has no entries)`);
  const seen = new Set<string>();
  const instances = rawInstances.map((inst, i) => {
    const where = `${path}: Instances[${i}]`;
    if (!isRecord(inst)) throw new InputError(`${where} must be an object`);
    const id = inst.id === undefined ? `${taskId}-${i}` : String(inst.id);
    const at = `${where} (id ${id})`;
    if (seen.has(id)) throw new InputError(`${at}: duplicate id`);
    seen.add(id);
    if (typeof inst.input !== 'string') throw new InputError(`${at}: 'input' must be a string`);
    if (!Array.isArray(inst.output)) throw new InputError(`${at}: 'output' must be a list of accepted outputs, got ${JSON.stringify(inst.output)?.slice(0, 60) ?? 'nothing'}`);
    const outputs = stringList(inst.output, `${at}: 'output'`);
    if (outputs.length === 0) throw new InputError(`${at}: 'output' is an empty list`);
    return { id, input: inst.input, outputs };
  });
  const examples: TaskExample[] = [];
  const rawExamples = json['Positive Examples'] ?? [];
  if (!Array.isArray(rawExamples)) throw new InputError(`${path}: 'Positive Examples' must be a list`);
  rawExamples.forEach((e, i) => {
    const where = `${path}: Positive Examples[${i}]`;
    if (!isRecord(e) || typeof e.input !== 'string') throw new InputError(`${where} must be an object with a string 'input'`);
    const out = Array.isArray(e.output) ? e.output[0] : e.output;
    if (typeof out !== 'string') throw new InputError(`${where}: 'output' must be a string`);
    examples.push({ input: e.input, output: out, explanation: typeof e.explanation === 'string' ? e.explanation : '' });
  });
  const outputs = [...examples.map((e) => e.output), ...instances.flatMap((x) => x.outputs)];
  const labelSet = detectLabelSet(definition, { outputs, minCoverage: options.labelCoverage });
  const task: TaskRecord = {
    task_id: taskId,
    kind: labelSet ? 'classification' : 'generation',
    label_set: labelSet,
    source: 'superni',
    categories: json.Categories === undefined ? [] : stringList(json.Categories, `${path}: 'Categories'`),
  };
  if (examples.length) task.examples = examples;
  return { task, definition, instances };
}

/**
 * The seed instruction record of a task, with heuristic key parts unless switched off.
 *
 * @example
 * seedInstruction('t1', 'Answer "yes" or "no".').key_spans; // [{ start: 7, end: 20, kind: 'label' }]
 */
export function seedInstruction(taskId: string, text: string, keyParts: 'heuristic' | 'none' = 'heuristic'): InstructionRecord {
  const spans = keyParts === 'heuristic' ? extractKeyParts(text).spans : [];
  return {
    task_id: taskId,
    instruction_id: `${taskId}/seed`,
    text,
    key_spans: spans,
    origin: 'seed',
    key_source: keyParts === 'heuristic' && spans.length > 0 ? 'heuristic' : 'none',
    parent_id: null,
  };
}

async function manifestStreams(dir: string, taskIds: Set<string>): Promise<TaskStream[] | null> {
  const path = join(dir, 'manifest.json');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return null;
  }
  const m = parseJson(text, path);
  if (!isRecord(m) || !Array.isArray(m.sequence)) return null;
  const seen = stringList(m.sequence, `${path}: 'sequence'`);
  const heldOut = m.held_out === undefined ? [] : stringList(m.held_out, `${path}: 'held_out'`);
  const unknown = [...seen, ...heldOut].filter((t) => !taskIds.has(t));
  if (unknown.length) throw new InputError(`${path}: the stream names task(s) with no task file: ${unknown.join(', ')}`);
  return [{ name: typeof m.set === 'string' ? m.set : 'default', seen, held_out: heldOut }];
}

/**
 * Imports a folder of SuperNI task files (`task*.json`, in the folder or its `tasks/` subfolder)
 * into a task set: one task, one seed instruction and its instances per file, split train/test per
 * task with a seed, optionally capped. A `manifest.json` beside the files with `sequence` and
 * `held_out` task lists becomes the task stream.
 *
 * @throws InputError naming the file and position of the first bad file, field or instance
 * @example
 * const set = await importSuperNI('../shared/data/superni-dev', { seed: 0, testSize: 100 });
 * await writeTaskSet('data/dev', set);
 */
export async function importSuperNI(dir: string, options: ImportOptions = {}): Promise<TaskSet> {
  const set: TaskSet = { tasks: [], instructions: [], instances: [], streams: [] };
  for (const file of await taskFiles(dir)) {
    const { task, definition, instances } = await readSuperNITask(file, options);
    set.tasks.push(task);
    set.instructions.push(seedInstruction(task.task_id, definition, options.keyParts));
    for (const { index, split } of splitTask(task.task_id, instances.map((x) => x.id), options)) {
      const x = instances[index];
      set.instances.push({ task_id: task.task_id, instance_id: x.id, split, input: x.input, outputs: x.outputs } satisfies InstanceRecord);
    }
  }
  const ids = new Set(set.tasks.map((t) => t.task_id));
  set.streams = options.streams ?? (await manifestStreams(dir, ids)) ?? [{ name: 'default', seen: [...ids], held_out: [] }];
  return set;
}
