/**
 * The task set: every artefact of the data layer in one in-memory shape, stored on disk as a folder
 * of Arrow IPC files (`tasks.arrow`, `instructions.arrow`, `instances.arrow`, `streams.arrow`)
 * readable by pandas, polars and DuckDB. Schema version {@link TASKSET_SCHEMA_VERSION}; the
 * column-level documentation is in docs/data.md.
 */

export const TASKSET_SCHEMA_VERSION = 2;

/** Schema versions this build reads; version 1 has no `instruction_id` / `probe_of` instance columns. */
export const TASKSET_READABLE_VERSIONS: readonly number[] = [1, 2];

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
  /**
   * The closed output space of this instruction when it is not the task's: a task whose label
   * words vary per instruction records each instruction's own labels here (the task's `label_set`
   * is then their union). Absent or null: the task's `label_set`.
   */
  label_set?: string[] | null;
}

/**
 * `train` and `test` as usual; `probe`: counterfactual listening probes, each a test instance asked
 * with an instruction whose key parts were given other valid values (see docs/eval.md).
 */
export type Split = 'train' | 'test' | 'probe';

export interface InstanceRecord {
  task_id: string;
  /** Unique within its task. */
  instance_id: string;
  split: Split;
  input: string;
  /** Every accepted output; the first is the training target. */
  outputs: string[];
  /**
   * The instruction whose key values this instance's outputs answer (a task whose key parts vary
   * per instance); it and its rewrites are the only instructions the instance may be asked with.
   * Absent or null: any instruction of the task answers it.
   */
  instruction_id?: string | null;
  /** A `probe` instance: the id of the test instance of the same task whose instruction it changes. */
  probe_of?: string | null;
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
