/**
 * The task set: every artefact of the data layer in one in-memory shape, stored on disk as a folder
 * of Arrow IPC files (`tasks.arrow`, `instructions.arrow`, `instances.arrow`, `streams.arrow`)
 * readable by pandas, polars and DuckDB. Schema version {@link TASKSET_SCHEMA_VERSION}; the
 * column-level documentation is in docs/data.md.
 */

export const TASKSET_SCHEMA_VERSION = 1;

/** Character offsets into an instruction text, `start` inclusive, `end` exclusive (UTF-16 units). */
export interface KeySpan {
  start: number;
  end: number;
  /** What the span decides: `label` (a label word / option), `format`, `length`, `entity`, `other`. */
  kind?: KeySpanKind;
}

export type KeySpanKind = 'label' | 'format' | 'length' | 'entity' | 'other';

export type TaskKind = 'classification' | 'generation';

/** A demonstration shipped with a task (SuperNI's `Positive Examples`). */
export interface TaskExample {
  input: string;
  output: string;
  explanation: string;
}

export interface TaskRecord {
  task_id: string;
  kind: TaskKind;
  /** The closed output space the instruction defines (label words, options), or null if open. */
  label_set: string[] | null;
  /** Where the task came from (`superni`, `jsonl`, `arrow`, `parquet`, `synth`). */
  source: string;
  categories: string[];
  /**
   * Demonstrations from the source (SuperNI `Positive Examples`); absent when there are none. They
   * fix the casing of detected labels and feed the concretizing rewrite.
   */
  examples?: TaskExample[];
}

/** Where an instruction text came from: the seed, or one of the diversity rewrites. */
export type InstructionOrigin = 'seed' | 'concretizing' | 'reasoning' | 'constraint' | 'breadth';

/** How the key spans of an instruction were found. */
export type KeySource = 'explicit' | 'heuristic' | 'llm' | 'none';

export interface InstructionRecord {
  task_id: string;
  /** Unique within the task set; a seed's id is `<task_id>/seed`, a rewrite `<task_id>/<origin>-<n>`. */
  instruction_id: string;
  text: string;
  key_spans: KeySpan[];
  origin: InstructionOrigin;
  key_source: KeySource;
  /** The instruction this one was rewritten from (null for a seed). */
  parent_id: string | null;
}

export type Split = 'train' | 'test';

export interface InstanceRecord {
  task_id: string;
  /** Unique within its task. */
  instance_id: string;
  split: Split;
  input: string;
  /** Every accepted output; the first is the training target. */
  outputs: string[];
}

/** An ordered stream of seen tasks and a set of held-out tasks. */
export interface TaskStream {
  name: string;
  seen: string[];
  held_out: string[];
}

export interface TaskSet {
  tasks: TaskRecord[];
  instructions: InstructionRecord[];
  instances: InstanceRecord[];
  streams: TaskStream[];
}
