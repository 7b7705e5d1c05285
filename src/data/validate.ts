/**
 * Consistency checks of a task set, run before it is written and after it is read: ids are unique,
 * every row names a known task, key spans lie inside their text without overlapping, splits and
 * origins are known values, streams name known tasks. The first problem found is thrown, with the
 * table, row and field in the message.
 */
import { InputError } from '../errors/index.js';
import type { InstructionOrigin, KeySource, KeySpanKind, Split, TaskKind, TaskSet } from './taskset.js';

export const TASK_KINDS: readonly TaskKind[] = ['classification', 'generation'];
export const ORIGINS: readonly InstructionOrigin[] = ['seed', 'concretizing', 'reasoning', 'constraint', 'breadth'];
export const KEY_SOURCES: readonly KeySource[] = ['explicit', 'heuristic', 'llm', 'none'];
export const SPLITS: readonly Split[] = ['train', 'test', 'probe'];
export const SPAN_KINDS: readonly KeySpanKind[] = ['label', 'format', 'length', 'entity', 'other'];

function oneOf<T extends string>(value: unknown, allowed: readonly T[], where: string): void {
  if (!allowed.includes(value as T)) throw new InputError(`${where}: ${JSON.stringify(value)} is not one of ${allowed.join(', ')}`);
}

/**
 * Throws an {@link InputError} naming the first inconsistency in `set`; returns nothing when the
 * set is sound. `source` prefixes every message (a folder or file name).
 *
 * @example
 * validateTaskSet(set, 'data/dev'); // InputError: data/dev: instances row 3: unknown task_id 'task9'
 */
export function validateTaskSet(set: TaskSet, source = 'task set'): void {
  const taskIds = new Set<string>();
  set.tasks.forEach((t, i) => {
    const where = `${source}: tasks row ${i}`;
    if (!t.task_id) throw new InputError(`${where}: task_id is empty`);
    if (taskIds.has(t.task_id)) throw new InputError(`${where}: duplicate task_id '${t.task_id}'`);
    taskIds.add(t.task_id);
    oneOf(t.kind, TASK_KINDS, `${where} (${t.task_id}) field kind`);
    if (t.label_set !== null && (!Array.isArray(t.label_set) || t.label_set.length === 0))
      throw new InputError(`${where} (${t.task_id}): label_set must be null or a non-empty list`);
  });
  const known = (id: string, where: string) => {
    if (!taskIds.has(id)) throw new InputError(`${where}: unknown task_id '${id}'`);
  };
  const instructionIds = new Set<string>();
  set.instructions.forEach((r, i) => {
    const where = `${source}: instructions row ${i} (${r.instruction_id})`;
    known(r.task_id, where);
    if (instructionIds.has(r.instruction_id)) throw new InputError(`${where}: duplicate instruction_id`);
    instructionIds.add(r.instruction_id);
    oneOf(r.origin, ORIGINS, `${where} field origin`);
    oneOf(r.key_source, KEY_SOURCES, `${where} field key_source`);
    if ((r.origin === 'seed') !== (r.parent_id === null))
      throw new InputError(`${where}: a seed has no parent_id and a rewrite must have one (origin ${r.origin}, parent_id ${r.parent_id})`);
    if (r.label_set != null && (!Array.isArray(r.label_set) || r.label_set.length === 0))
      throw new InputError(`${where}: label_set must be absent, null or a non-empty list`);
    const sorted = [...r.key_spans].sort((a, b) => a.start - b.start);
    sorted.forEach((s, k) => {
      if (!Number.isInteger(s.start) || !Number.isInteger(s.end) || s.start < 0 || s.end > r.text.length || s.start >= s.end)
        throw new InputError(`${where}: key span [${s.start}, ${s.end}) is not inside the text (length ${r.text.length})`);
      if (k > 0 && s.start < sorted[k - 1].end) throw new InputError(`${where}: key spans [${sorted[k - 1].start}, ${sorted[k - 1].end}) and [${s.start}, ${s.end}) overlap`);
      if (s.kind !== undefined) oneOf(s.kind, SPAN_KINDS, `${where} key span kind`);
    });
  });
  for (const r of set.instructions)
    if (r.parent_id !== null && !instructionIds.has(r.parent_id))
      throw new InputError(`${source}: instruction ${r.instruction_id}: parent_id '${r.parent_id}' is not in the set`);
  const instructionTask = new Map(set.instructions.map((r) => [r.instruction_id, r.task_id]));
  const instanceIds = new Set<string>();
  set.instances.forEach((r, i) => {
    const where = `${source}: instances row ${i} (${r.task_id}/${r.instance_id})`;
    known(r.task_id, where);
    const key = `${r.task_id}\u0000${r.instance_id}`;
    if (instanceIds.has(key)) throw new InputError(`${where}: duplicate instance_id within its task`);
    instanceIds.add(key);
    oneOf(r.split, SPLITS, `${where} field split`);
    if (!Array.isArray(r.outputs) || r.outputs.length === 0) throw new InputError(`${where}: outputs must be a non-empty list`);
    if (r.instruction_id != null) {
      const ins = instructionTask.get(r.instruction_id);
      if (ins === undefined) throw new InputError(`${where}: instruction_id '${r.instruction_id}' is not in the set`);
      if (ins !== r.task_id) throw new InputError(`${where}: instruction_id '${r.instruction_id}' belongs to task '${ins}'`);
    }
    if ((r.split === 'probe') !== (r.probe_of != null))
      throw new InputError(`${where}: a probe instance names the test instance it changes (probe_of) and only a probe does (split ${r.split}, probe_of ${r.probe_of ?? null})`);
  });
  for (const r of set.instances)
    if (r.probe_of != null && !instanceIds.has(`${r.task_id}\u0000${r.probe_of}`))
      throw new InputError(`${source}: probe ${r.task_id}/${r.instance_id}: probe_of '${r.probe_of}' is not an instance of its task`);
  set.streams.forEach((s, i) => {
    const where = `${source}: streams row ${i} (${s.name})`;
    for (const id of [...s.seen, ...s.held_out]) known(id, where);
    const overlap = s.seen.filter((id) => s.held_out.includes(id));
    if (overlap.length) throw new InputError(`${where}: task(s) both seen and held out: ${overlap.join(', ')}`);
  });
}
