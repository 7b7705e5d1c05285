/**
 * A task set on disk: a folder of four Arrow IPC files (`tasks.arrow`, `instructions.arrow`,
 * `instances.arrow`, `streams.arrow`), each carrying the schema version in its Arrow schema
 * metadata (`kpig.schema_version`). Only plain Arrow types are used (utf8, int32, list, struct), so
 * pandas (`pyarrow.feather.read_table`), polars (`pl.read_ipc`) and DuckDB read the files as they
 * are. The column-level documentation is docs/data.md.
 */
import { join } from 'node:path';
import {
  Field,
  Int32,
  List,
  RecordBatch,
  Schema,
  Struct,
  Table,
  Utf8,
  makeData,
  tableToIPC,
  vectorFromArray,
  type DataType,
  type Vector,
} from 'apache-arrow';
import { InputError } from '../errors/index.js';
import { readArrowTable } from '../io/arrow.js';
import { writeDirAtomic, writeFileAtomic } from '../io/atomic.js';
import {
  TASKSET_READABLE_VERSIONS,
  TASKSET_SCHEMA_VERSION,
  type InstanceRecord,
  type InstructionRecord,
  type KeySpan,
  type TaskExample,
  type TaskRecord,
  type TaskSet,
  type TaskStream,
} from './taskset.js';
import { validateTaskSet } from './validate.js';

/** The file of each table inside a task-set folder. */
export const TASKSET_FILES = {
  tasks: 'tasks.arrow',
  instructions: 'instructions.arrow',
  instances: 'instances.arrow',
  streams: 'streams.arrow',
} as const;

type TableName = keyof typeof TASKSET_FILES;

const utf8 = () => new Utf8();
const listOf = (type: DataType, nullable = false) => new List(new Field('item', type, nullable));
const KEY_SPAN = new Struct([new Field('start', new Int32(), false), new Field('end', new Int32(), false), new Field('kind', new Utf8(), true)]);
const EXAMPLE = new Struct([new Field('input', utf8(), false), new Field('output', utf8(), false), new Field('explanation', utf8(), false)]);

/** Column name → Arrow type and nullability, per table: the version-1 schema. */
const COLUMNS: Record<TableName, [string, DataType, boolean][]> = {
  tasks: [
    ['task_id', utf8(), false],
    ['kind', utf8(), false],
    ['label_set', listOf(utf8()), true],
    ['source', utf8(), false],
    ['categories', listOf(utf8()), false],
    ['examples', listOf(EXAMPLE), false],
  ],
  instructions: [
    ['task_id', utf8(), false],
    ['instruction_id', utf8(), false],
    ['text', utf8(), false],
    ['key_spans', listOf(KEY_SPAN), false],
    ['origin', utf8(), false],
    ['key_source', utf8(), false],
    ['parent_id', utf8(), true],
    ['label_set', listOf(utf8()), true],
  ],
  instances: [
    ['task_id', utf8(), false],
    ['instance_id', utf8(), false],
    ['split', utf8(), false],
    ['input', utf8(), false],
    ['outputs', listOf(utf8()), false],
    ['instruction_id', utf8(), true],
    ['probe_of', utf8(), true],
  ],
  streams: [
    ['name', utf8(), false],
    ['seen', listOf(utf8()), false],
    ['held_out', listOf(utf8()), false],
  ],
};

/** Columns that version 2 added; a version-1 table lacks them and reads them as null. */
const V2_COLUMNS = ['instruction_id', 'probe_of', 'label_set'];

function metadata(table: TableName): Map<string, string> {
  return new Map([
    ['kpig.schema', `taskset/${table}`],
    ['kpig.schema_version', String(TASKSET_SCHEMA_VERSION)],
  ]);
}

function toArrow(table: TableName, rows: Record<string, unknown>[]): Table {
  const fields = COLUMNS[table].map(([name, type, nullable]) => new Field(name, type, nullable));
  const vectors: Vector[] = COLUMNS[table].map(([name, type]) => vectorFromArray(rows.map((r) => r[name]) as unknown[], type));
  const schema = new Schema(fields, metadata(table));
  const data = makeData({ type: new Struct(fields), length: rows.length, nullCount: 0, children: vectors.map((v) => v.data[0]) });
  return new Table(schema, [new RecordBatch(schema, data)]);
}

/**
 * Writes `set` as a task-set folder at `dir`, atomically: the four files appear together or not at
 * all. The set is validated first. An existing non-empty folder is replaced only with `overwrite`.
 *
 * @throws InputError when the set is inconsistent or `dir` is taken
 * @throws KpigIOError when the files cannot be written
 * @example
 * await writeTaskSet('data/dev', set, { overwrite: true });
 */
export async function writeTaskSet(dir: string, set: TaskSet, options: { overwrite?: boolean } = {}): Promise<void> {
  validateTaskSet(set, dir);
  const tables: Record<TableName, Table> = {
    tasks: toArrow(
      'tasks',
      set.tasks.map((t) => ({ ...t, examples: t.examples ?? [] })),
    ),
    instructions: toArrow(
      'instructions',
      set.instructions.map((r) => ({ ...r, label_set: r.label_set ?? null, key_spans: r.key_spans.map((s) => ({ start: s.start, end: s.end, kind: s.kind ?? null })) })),
    ),
    instances: toArrow(
      'instances',
      set.instances.map((r) => ({ ...r, instruction_id: r.instruction_id ?? null, probe_of: r.probe_of ?? null })),
    ),
    streams: toArrow('streams', set.streams as unknown as Record<string, unknown>[]),
  };
  await writeDirAtomic(
    dir,
    async (tmp) => {
      for (const name of Object.keys(tables) as TableName[]) await writeFileAtomic(join(tmp, TASKSET_FILES[name]), tableToIPC(tables[name], 'file'));
    },
    { overwrite: options.overwrite },
  );
}

async function readTable(dir: string, name: TableName): Promise<Table> {
  const path = join(dir, TASKSET_FILES[name]);
  const table = await readArrowTable(path);
  const version = table.schema.metadata.get('kpig.schema_version');
  if (version === undefined) throw new InputError(`${path}: no kpig.schema_version in the Arrow schema metadata; not a kpig task-set table`);
  if (!TASKSET_READABLE_VERSIONS.includes(Number(version)))
    throw new InputError(`${path}: task-set schema version ${version}; this build reads versions ${TASKSET_READABLE_VERSIONS.join(', ')}`);
  const names = table.schema.fields.map((f) => f.name);
  const missing = COLUMNS[name]
    .map(([c]) => c)
    .filter((c) => !names.includes(c) && !(Number(version) === 1 && V2_COLUMNS.includes(c)));
  if (missing.length) throw new InputError(`${path}: missing column(s) ${missing.join(', ')} (columns: ${names.join(', ')})`);
  return table;
}

/** Plain JS values of an Arrow cell: lists become arrays, structs objects. */
function plain(value: unknown): unknown {
  if (value === null || value === undefined) return null;
  if (typeof value === 'object' && value !== null && 'toJSON' in value && typeof (value as { toJSON: unknown }).toJSON === 'function') {
    const json = (value as { toJSON(): unknown }).toJSON();
    return Array.isArray(json) ? json.map(plain) : json;
  }
  return value;
}

function rowsOf(table: Table): Record<string, unknown>[] {
  const cols = table.schema.fields.map((f) => [f.name, table.getChild(f.name)!] as const);
  const rows: Record<string, unknown>[] = [];
  for (let i = 0; i < table.numRows; i++) {
    const row: Record<string, unknown> = {};
    for (const [name, col] of cols) row[name] = plain(col.get(i));
    rows.push(row);
  }
  return rows;
}

/**
 * Reads a task-set folder written by {@link writeTaskSet} (or by any tool that writes the same
 * columns and schema metadata) and validates it.
 *
 * @throws KpigIOError when a file is missing or unreadable
 * @throws InputError when a file is not Arrow, has another schema version, lacks columns, or the
 *   set is inconsistent
 * @example
 * const set = await readTaskSet('data/dev');
 * console.log(set.tasks.length, set.instances.filter((r) => r.split === 'test').length);
 */
export async function readTaskSet(dir: string): Promise<TaskSet> {
  // One table after the other, so that a folder with several bad files always reports the same one.
  const tables: Record<string, unknown>[][] = [];
  for (const n of ['tasks', 'instructions', 'instances', 'streams'] as const) tables.push(rowsOf(await readTable(dir, n)));
  const [tasks, instructions, instances, streams] = tables;
  const set: TaskSet = {
    tasks: tasks.map((r) => {
      const t: TaskRecord = {
        task_id: r.task_id as string,
        kind: r.kind as TaskRecord['kind'],
        label_set: (r.label_set as string[] | null) ?? null,
        source: r.source as string,
        categories: (r.categories as string[]) ?? [],
      };
      const examples = (r.examples as TaskExample[] | null) ?? [];
      if (examples.length) t.examples = examples.map((e) => ({ input: e.input, output: e.output, explanation: e.explanation }));
      return t;
    }),
    instructions: instructions.map(
      (r): InstructionRecord => ({
        task_id: r.task_id as string,
        instruction_id: r.instruction_id as string,
        text: r.text as string,
        key_spans: ((r.key_spans as { start: number; end: number; kind: string | null }[]) ?? []).map((s) => {
          const span: KeySpan = { start: s.start, end: s.end };
          if (s.kind !== null) span.kind = s.kind as KeySpan['kind'];
          return span;
        }),
        origin: r.origin as InstructionRecord['origin'],
        key_source: r.key_source as InstructionRecord['key_source'],
        parent_id: (r.parent_id as string | null) ?? null,
        ...(r.label_set != null ? { label_set: r.label_set as string[] } : {}),
      }),
    ),
    instances: instances.map(
      (r): InstanceRecord => ({
        task_id: r.task_id as string,
        instance_id: r.instance_id as string,
        split: r.split as InstanceRecord['split'],
        input: r.input as string,
        outputs: r.outputs as string[],
        ...(r.instruction_id != null ? { instruction_id: r.instruction_id as string } : {}),
        ...(r.probe_of != null ? { probe_of: r.probe_of as string } : {}),
      }),
    ),
    streams: streams.map((r): TaskStream => ({ name: r.name as string, seen: r.seen as string[], held_out: r.held_out as string[] })),
  };
  validateTaskSet(set, dir);
  return set;
}
