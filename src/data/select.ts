/**
 * Which instruction an instance is shown with. A task has one seed and, after the diversity stage,
 * rewrites of it; training can use the seed only or spread the instances over all of them. The
 * pick for an instance is a hash of (seed, task, instance id), so it does not change when other
 * instances or tasks are added.
 */
import { createHash } from 'node:crypto';
import { InputError } from '../errors/index.js';
import type { InstanceRecord, InstructionOrigin, InstructionRecord, TaskSet } from './taskset.js';

export interface ChooseOptions {
  /** `seed`: always the seed (default); `any`: one of the seed and its rewrites, per instance. */
  policy?: 'seed' | 'any';
  /** With `any`, only these origins are eligible (default all). */
  origins?: readonly InstructionOrigin[];
  seed?: number;
}

/**
 * The instructions of each task, seeds first, in set order.
 *
 * @example
 * const byTask = instructionsByTask(set); byTask.get('task586_amazonfood_polarity_classification')![0].origin; // 'seed'
 */
export function instructionsByTask(set: TaskSet): Map<string, InstructionRecord[]> {
  const out = new Map<string, InstructionRecord[]>();
  for (const r of set.instructions) {
    if (!out.has(r.task_id)) out.set(r.task_id, []);
    out.get(r.task_id)!.push(r);
  }
  for (const list of out.values()) list.sort((a, b) => Number(b.origin === 'seed') - Number(a.origin === 'seed'));
  return out;
}

/**
 * The instruction to pair with `instance`. Pass `byTask` from {@link instructionsByTask} when
 * calling it for many instances.
 *
 * @throws InputError when the task has no (eligible) instruction
 * @example
 * const byTask = instructionsByTask(set);
 * const rows = set.instances.map((x) => ({ ...x, instruction: chooseInstruction(set, x, { policy: 'any', seed: 1 }, byTask) }));
 */
export function chooseInstruction(set: TaskSet, instance: InstanceRecord, options: ChooseOptions = {}, byTask = instructionsByTask(set)): InstructionRecord {
  const all = byTask.get(instance.task_id) ?? [];
  const policy = options.policy ?? 'seed';
  const eligible = policy === 'seed' ? all.filter((r) => r.origin === 'seed') : all.filter((r) => !options.origins || options.origins.includes(r.origin));
  if (eligible.length === 0) throw new InputError(`task '${instance.task_id}' has no ${policy === 'seed' ? 'seed' : 'eligible'} instruction`);
  if (eligible.length === 1) return eligible[0];
  const h = createHash('sha256').update(`${options.seed ?? 0}\u0000${instance.task_id}\u0000${instance.instance_id}`).digest().readUInt32BE(0);
  return eligible[h % eligible.length];
}
